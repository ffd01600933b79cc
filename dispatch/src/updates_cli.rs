//! The `package` and `update` commands of `bauxite-dispatch`, and the `nodes list` table.
//!
//! `package keys sign-root` and `generate-root` touch only local files, so they run on
//! the offline machine that holds the root key; everything else calls the running hub.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use bauxite_dispatch::clock::os_random;
use bauxite_dispatch::pki::files;
use bauxite_dispatch_api::proto::admin::{self as proto, create_package_request};
use bauxite_forge::tuf::repo::{RoleKey, sign_root};
use tonic::transport::Channel;

use clap::Subcommand;

mod tables;
pub(crate) use tables::nodes as nodes_table;

type Admin = proto::admin_service_client::AdminServiceClient<Channel>;

#[derive(Subcommand)]
pub(crate) enum PackageCommand {
    /// Build a package (chunk index, TUF targets) and publish it.
    Create {
        /// The firmware image file (read by the hub, which keeps a copy).
        #[arg(long, conflicts_with_all = ["virtual_size", "seed"], required_unless_present = "virtual_size")]
        image: Option<PathBuf>,
        /// Version: one to four dot-separated numbers, e.g. 2.0.0.
        #[arg(long)]
        version: String,
        /// Package name (the TUF target is NAME/VERSION.img).
        #[arg(long, default_value = "firmware")]
        name: String,
        /// A deterministic virtual image of this size instead of a file (e.g. 3GiB),
        /// generated chunk by chunk, never stored.
        #[arg(long, value_parser = parse_size, requires = "seed")]
        virtual_size: Option<u64>,
        /// Seed of the virtual image.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// List packages.
    List,
    /// Remove a package from the signed metadata (nodes stop accepting it).
    Revoke {
        /// Package name.
        name: String,
        /// Version.
        version: String,
    },
    /// The update repository's root key, kept offline (docs/updates.md, "Key ceremony").
    #[command(subcommand)]
    Keys(KeysCommand),
}

// The variant names are the command names the documentation gives (`export-root`, ...).
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Write the unsigned next root to OUT (from the running hub).
    ExportRoot {
        /// Where to write it.
        out: PathBuf,
        /// Replace the root keys with these public key files (rotation; repeat for more).
        #[arg(long = "root-key")]
        root_keys: Vec<PathBuf>,
        /// Signatures the new root keys require.
        #[arg(long, default_value_t = 1)]
        threshold: u32,
    },
    /// Add ROOT_KEY's signature to the root file FILE (offline; needs no hub).
    SignRoot {
        /// The root private key file.
        #[arg(long)]
        key: PathBuf,
        /// The exported root file, signed in place.
        file: PathBuf,
    },
    /// Publish a root signed offline (to the running hub).
    ImportRoot {
        /// The signed root file.
        file: PathBuf,
    },
    /// Make a new root key (offline; needs no hub): OUT (0600) and OUT.pub.
    GenerateRoot {
        /// The private key file to create.
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub(crate) enum UpdateCommand {
    /// Assign a package version (or a rollback) to nodes.
    Deploy {
        /// Package name.
        name: String,
        /// Version.
        version: String,
        /// Node IDs (repeat for more).
        #[arg(long = "node", required_unless_present = "all")]
        nodes: Vec<String>,
        /// Every active node.
        #[arg(long, conflicts_with = "nodes")]
        all: bool,
        /// Roll back to the previous version instead.
        #[arg(long)]
        rollback: bool,
    },
    /// Every node's assignment and last reported state.
    Status,
}

/// Parses `3GiB`, `512MiB`, `100MB`, `4096` (bytes).
fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 3GiB, 512MiB, 1000000"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{text:?}: unit must be B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

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
                tables::size(p.length),
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
            print!("{}", tables::packages(&packages));
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
            print!("{}", tables::updates(&nodes));
        }
    }
    Ok(())
}
