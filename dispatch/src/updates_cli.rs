//! The `package` and `update` commands of `bauxite-dispatch`, and the `nodes list` table.
//!
//! `package keys sign-root` and `generate-root` touch only local files, so they run on
//! the offline machine that holds the root key; everything else calls the running hub.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bauxite_dispatch::clock::{UnixTime, os_random};
use bauxite_dispatch::pki::files;
use bauxite_dispatch_api::proto::admin::{self as proto, create_package_request};
use bauxite_forge::tuf::repo::{RoleKey, sign_root};
use tonic::transport::Channel;

use super::{KeysCommand, PackageCommand, UpdateCommand};

type Admin = proto::admin_service_client::AdminServiceClient<Channel>;

/// Largest root file read (a root with many keys is a few KiB).
const MAX_ROOT_FILE: u64 = 1 << 20;

/// Runs the key commands that need no hub; `None` for the others.
pub(crate) fn offline_keys(command: &KeysCommand) -> Result<Option<ExitCode>> {
    match command {
        KeysCommand::SignRoot { key, file } => {
            let root = files::read_capped(file, MAX_ROOT_FILE)?;
            let signed = sign_root(&root, key)
                .with_context(|| format!("signing {} with {}", file.display(), key.display()))?;
            files::write_atomic(file, &signed, 0o644)?;
            let id = RoleKey::load(key)?.key_id();
            println!("signed {} with root key {id}", file.display());
            Ok(Some(ExitCode::SUCCESS))
        }
        KeysCommand::GenerateRoot { out } => {
            let mut seed = zeroize::Zeroizing::new([0u8; 32]);
            os_random(seed.as_mut())?;
            let key = RoleKey::from_seed(*seed);
            key.write(out, false)?;
            let public = out.with_extension("pub");
            key.write_public(&public, false)?;
            println!(
                "root key {} written to {} (0600) and its public half to {}",
                key.key_id(),
                out.display(),
                public.display()
            );
            Ok(Some(ExitCode::SUCCESS))
        }
        KeysCommand::ExportRoot { .. } | KeysCommand::ImportRoot { .. } => Ok(None),
    }
}

/// The raw Ed25519 public key in a key file (private or public-only).
fn public_key(path: &Path) -> Result<Vec<u8>> {
    let text = files::read_text(path)?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a key file", path.display()))?;
    let hex_key = doc
        .pointer("/keyval/public")
        .and_then(serde_json::Value::as_str)
        .with_context(|| format!("{} has no keyval.public", path.display()))?;
    let key = hex::decode(hex_key)
        .with_context(|| format!("{}: public key is not hex", path.display()))?;
    if key.len() != 32 {
        bail!("{}: not an Ed25519 public key (32 bytes)", path.display());
    }
    Ok(key)
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", bytes as f64 / f64::from(1u32 << 30))
    } else {
        format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
    }
}

/// `package ...` against the running hub.
pub(crate) async fn run(admin: &mut Admin, command: &PackageCommand) -> Result<()> {
    match command {
        PackageCommand::Create {
            image,
            version,
            name,
            virtual_size,
            seed,
        } => {
            let image = match (image, virtual_size, seed) {
                (Some(path), _, _) => {
                    let path = std::fs::canonicalize(path)
                        .with_context(|| format!("image {}", path.display()))?;
                    create_package_request::Image::Path(path.display().to_string())
                }
                (None, Some(size), Some(seed)) => {
                    create_package_request::Image::Virtual(proto::VirtualImage {
                        size: *size,
                        seed: *seed,
                    })
                }
                _ => bail!("give --image FILE, or --virtual-size SIZE --seed N"),
            };
            let request = proto::CreatePackageRequest {
                name: name.clone(),
                version: version.clone(),
                image: Some(image),
            };
            let started = bauxite_conduit::io::clock::now();
            let p = admin.create_package(request).await?.into_inner();
            println!(
                "package {} {} created: {} ({} bytes, {} chunks, {}), index {} in {:.1} s",
                p.name,
                p.version,
                size(p.length),
                p.length,
                p.chunk_count,
                p.kind,
                p.index_digest,
                started.elapsed().as_secs_f64()
            );
        }
        PackageCommand::List => {
            let packages = admin
                .list_packages(proto::ListPackagesRequest {})
                .await?
                .into_inner()
                .packages;
            println!(
                "{:<20}  {:<10}  {:<8}  {:>12}  {:>8}  {:<8}  {:<20}  INDEX",
                "NAME", "VERSION", "KIND", "SIZE", "CHUNKS", "STATE", "CREATED"
            );
            for p in packages {
                let state = if p.revoked { "revoked" } else { "active" };
                println!(
                    "{:<20}  {:<10}  {:<8}  {:>12}  {:>8}  {state:<8}  {:<20}  {}",
                    p.name,
                    p.version,
                    p.kind,
                    size(p.length),
                    p.chunk_count,
                    UnixTime(p.created_at_unix),
                    p.index_digest.get(..16).unwrap_or(&p.index_digest)
                );
            }
        }
        PackageCommand::Revoke { name, version } => {
            admin
                .revoke_package(proto::RevokePackageRequest {
                    name: name.clone(),
                    version: version.clone(),
                })
                .await?;
            println!("revoked {name} {version}: its targets are gone from the signed metadata");
        }
        PackageCommand::Keys(KeysCommand::ExportRoot {
            out,
            root_keys,
            threshold,
        }) => {
            let root_keys = root_keys
                .iter()
                .map(|p| public_key(p))
                .collect::<Result<Vec<_>>>()?;
            let rotating = !root_keys.is_empty();
            let root = admin
                .export_root(proto::ExportRootRequest {
                    root_keys,
                    threshold: *threshold,
                })
                .await?
                .into_inner();
            files::write_atomic(out, &root.json, 0o644)?;
            println!(
                "next root written to {}{}; sign it with `bauxite-dispatch package keys sign-root --key ROOT_KEY {}` on the offline machine{}, then `package keys import-root`",
                out.display(),
                if rotating { " (new root keys)" } else { "" },
                out.display(),
                if rotating {
                    " with the old and the new keys"
                } else {
                    ""
                },
            );
        }
        PackageCommand::Keys(KeysCommand::ImportRoot { file }) => {
            let json = files::read_capped(file, MAX_ROOT_FILE)?;
            let done = admin
                .import_root(proto::RootMetadata { json })
                .await?
                .into_inner();
            println!("root version {} published", done.version);
        }
        PackageCommand::Keys(_) => bail!("this key command runs without a hub"),
    }
    Ok(())
}

/// `update ...` against the running hub.
pub(crate) async fn update(admin: &mut Admin, command: &UpdateCommand) -> Result<()> {
    match command {
        UpdateCommand::Deploy {
            name,
            version,
            nodes,
            all,
            rollback,
        } => {
            let changed = admin
                .deploy_update(proto::DeployUpdateRequest {
                    name: name.clone(),
                    version: version.clone(),
                    node_ids: nodes.clone(),
                    all: *all,
                    rollback: *rollback,
                })
                .await?
                .into_inner()
                .node_ids;
            let what = if *rollback { "rollback" } else { "install" };
            println!(
                "{what} {name} {version} assigned to {} node(s)",
                changed.len()
            );
            for id in changed {
                println!("  {id}");
            }
        }
        UpdateCommand::Status => {
            let nodes = admin
                .list_updates(proto::ListUpdatesRequest {})
                .await?
                .into_inner()
                .nodes;
            println!(
                "{:<32}  {:<16}  {:>4}  {:<10}  {:<26}  {:>7}  {:<10}  REPORTED",
                "ID", "NAME", "SEQ", "VERSION", "STATE", "DONE", "ACTIVE"
            );
            for n in nodes {
                println!(
                    "{:<32}  {:<16}  {:>4}  {:<10}  {:<26}  {:>7}  {:<10}  {}",
                    n.node_id,
                    n.name,
                    n.sequence,
                    n.version,
                    if n.state.is_empty() { "-" } else { &n.state },
                    percent(n.chunks_done, n.chunks_total),
                    n.active_version,
                    if n.reported_at_unix == 0 {
                        "-".to_owned()
                    } else {
                        UnixTime(n.reported_at_unix).to_string()
                    }
                );
            }
        }
    }
    Ok(())
}

fn percent(done: u64, total: u64) -> String {
    if total == 0 {
        "-".to_owned()
    } else {
        format!("{:.1}%", done as f64 * 100.0 / total as f64)
    }
}

/// `nodes list`: every node, the hub's own marked, with its update state.
pub(crate) fn nodes_table(nodes: &[proto::NodeInfo], updates: &[proto::NodeUpdate]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32}  {:<15}  {:<8}  {:<20}  {:<30}  NAME",
        "ID", "VIRTUAL IP", "STATE", "JOINED", "UPDATE"
    );
    for n in nodes {
        let state = match (n.hub, n.revoked) {
            (true, _) => "hub",
            (false, true) => "revoked",
            (false, false) => "active",
        };
        let update = updates
            .iter()
            .find(|u| u.node_id == n.node_id && u.sequence > 0)
            .map_or("-".to_owned(), |u| {
                let state = if u.state.is_empty() {
                    "assigned"
                } else {
                    &u.state
                };
                format!("{} {state}", u.version)
            });
        let _ = writeln!(
            out,
            "{:<32}  {:<15}  {state:<8}  {:<20}  {update:<30}  {}",
            n.node_id,
            n.virtual_ip,
            UnixTime(n.joined_at_unix),
            n.name
        );
    }
    out
}
