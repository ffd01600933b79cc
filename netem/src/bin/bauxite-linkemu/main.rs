//! `bauxite-linkemu`: the link model on the wall clock, between two network namespaces.
//!
//! It creates two TUN devices in its own namespace, moves each into one side's namespace
//! (`ip link set … netns …`) and gives it its address there: side A's packets to side B
//! come out of A's device into this process, go through the model and are written into
//! B's device on time, and back. Any IP traffic passes (UDP, ICMP, TCP). The devices
//! belong to this process: they vanish when it exits, wherever they are.

mod cli;
mod forward;

use std::io::Write as _;
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    let args = cli::Args::parse();
    let profile = args.profile()?;
    let open = |name: &str| {
        tun_rs::DeviceBuilder::new()
            .name(name)
            .mtu(args.dev_mtu)
            .build_sync()
            .with_context(|| format!("creating TUN device {name} (root or CAP_NET_ADMIN needed)"))
    };
    let devices = [open(&args.dev_a)?, open(&args.dev_b)?];
    for (dev, ns, addr) in [
        (&args.dev_a, &args.netns_a, &args.addr_a),
        (&args.dev_b, &args.netns_b, &args.addr_b),
    ] {
        place(dev, ns.as_deref(), addr.as_deref())?;
    }
    for d in &devices {
        d.set_nonblocking(true).context("non-blocking TUN")?;
    }
    eprintln!("bauxite-linkemu: {}", cli::describe(&profile));
    let mut emu =
        forward::Forwarder::new(profile, args.seed, args.slots, usize::from(args.dev_mtu));
    let stats = emu.run(&devices, !args.no_stdin, || {
        // The profile's clock starts now; the harness may start sending once it reads this.
        let mut out = std::io::stdout().lock();
        writeln!(out, "ready").and_then(|()| out.flush())
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{stats}")?;
    out.flush()?;
    Ok(())
}

/// Moves `dev` into `ns` (if given), gives it `addr` (if given) and brings it up.
fn place(dev: &str, ns: Option<&str>, addr: Option<&str>) -> anyhow::Result<()> {
    let mut prefix: Vec<&str> = Vec::new();
    if let Some(ns) = ns {
        ip(&["link", "set", dev, "netns", ns])?;
        prefix = vec!["-n", ns];
    }
    let with = |rest: &[&str]| {
        let mut all = prefix.clone();
        all.extend_from_slice(rest);
        ip(&all)
    };
    if let Some(addr) = addr {
        with(&["addr", "add", addr, "dev", dev])?;
    }
    with(&["link", "set", dev, "up"])
}

/// Runs `ip` with `args` (no shell).
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
