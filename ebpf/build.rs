//! Compiles `bpf/classifier.c` with clang (`-O2 -g -target bpf`) into `OUT_DIR`, where the
//! loader embeds it with `include_bytes!`.
//!
//! Without clang the build fails and names the fix: the edge binary is useless on a robot
//! without its classifier object, and a feature flag that silently drops it would make
//! "the kernel path fell back" a build accident rather than a runtime fact.

use std::env;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

const SOURCE: &str = "bpf/classifier.c";

fn main() -> ExitCode {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=BAUXITE_CLANG");
    let clang = env::var("BAUXITE_CLANG").unwrap_or_else(|_| "clang".to_string());
    let Some(out_dir) = env::var_os("OUT_DIR").map(PathBuf::from) else {
        eprintln!("bauxite-ebpf build: OUT_DIR is not set; build through cargo");
        return ExitCode::FAILURE;
    };
    let object = out_dir.join("classifier.bpf.o");

    // <linux/bpf.h> includes <asm/types.h>, which Debian keeps under the host's multiarch
    // directory; the bpf target has no multiarch of its own.
    let mut args: Vec<String> = vec![
        "-O2".into(),
        "-g".into(),
        "-target".into(),
        "bpf".into(),
        "-Wall".into(),
        "-Werror".into(),
    ];
    if let Ok(output) = Command::new(&clang).arg("-print-multiarch").output() {
        let multiarch = String::from_utf8_lossy(&output.stdout).trim().to_string();
        if output.status.success() && !multiarch.is_empty() {
            args.push(format!("-I/usr/include/{multiarch}"));
        }
    }
    args.extend(["-c".into(), SOURCE.into(), "-o".into()]);

    let status = Command::new(&clang).args(&args).arg(&object).status();
    match status {
        Ok(status) if status.success() => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!(
                "bauxite-ebpf build: `{clang} {} {}` failed ({status}). The BPF headers \
                 come from Debian's libbpf-dev and linux-libc-dev: run `sudo bash \
                 scripts/setup.sh`.",
                args.join(" "),
                object.display()
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!(
                "bauxite-ebpf build: cannot run `{clang}` ({error}). The kernel lane \
                 classifier is C compiled with clang at build time: run `sudo bash \
                 scripts/setup.sh` (installs clang and libbpf-dev), or point BAUXITE_CLANG \
                 at a clang with the bpf target."
            );
            ExitCode::FAILURE
        }
    }
}
