//! Packages through the real binary: create (file and virtual), list, revoke; the
//! metadata fetched with GetMetadata verifies with forge's TUF client from the root in
//! ProvisionResponse; revoked packages leave the signed targets; names cannot escape the
//! repository; every action is audited.

use bauxite_dispatch_api::Refusal;
use bauxite_dispatch_api::proto::admin::{ListPackagesRequest, admin_service_client};
use bauxite_dispatch_api::proto::node::GetFileRequest;
use bauxite_forge::chunk::ChunkIndex;
use bauxite_forge::image::{ChunkSource, FileImage, VirtualImage};
use bauxite_forge::tuf::Refusal as TufRefusal;

use crate::common::{HubProc, within};
use crate::tuf_grpc::fetch_firmware;

/// A file image of `len` pseudo-random bytes.
fn image_file(path: &std::path::Path, len: usize) {
    let mut bytes = vec![0u8; len];
    blake3::Hasher::new_derive_key("dispatch test image")
        .finalize_xof()
        .fill(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_are_created_listed_revoked_and_verify_with_tuf() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let file = tmp.path().join("fw.bin");
    image_file(&file, 200_000);
    let file_arg = file.to_str().unwrap();

    let out = hub.admin_ok(&[
        "package",
        "create",
        "--image",
        file_arg,
        "--version",
        "1.0.0",
        "--name",
        "robot-fw",
    ]);
    assert!(out.contains("package robot-fw 1.0.0 created"), "{out}");
    assert!(out.contains("200000 bytes, 4 chunks, file"), "{out}");
    let out = hub.admin_ok(&[
        "package",
        "create",
        "--virtual-size",
        "3MiB",
        "--seed",
        "5",
        "--version",
        "2.0.0",
        "--name",
        "robot-fw",
    ]);
    assert!(out.contains("3145728 bytes, 48 chunks, virtual"), "{out}");
    // A name and version name one image for ever; versions are dotted numbers.
    for (args, why) in [
        (
            vec![
                "--virtual-size",
                "1MiB",
                "--seed",
                "1",
                "--version",
                "2.0.0",
                "--name",
                "robot-fw",
            ],
            "exists already",
        ),
        (
            vec![
                "--virtual-size",
                "1MiB",
                "--seed",
                "1",
                "--version",
                "2.0-rc1",
                "--name",
                "robot-fw",
            ],
            "dot-separated numbers",
        ),
        (
            vec![
                "--virtual-size",
                "1MiB",
                "--seed",
                "1",
                "--version",
                "3.0.0",
                "--name",
                "../up",
            ],
            "segment",
        ),
    ] {
        let mut all = vec!["package", "create"];
        all.extend(args);
        let out = hub.cli(&all);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{stderr}");
    }
    let list = hub.admin_ok(&["package", "list"]);
    assert_eq!(
        list.lines().filter(|l| l.starts_with("robot-fw")).count(),
        2,
        "{list}"
    );

    // A node gets the root in ProvisionResponse and verifies everything from it.
    let (joined, client) = hub.node(1).await;
    assert!(!joined.update_root.is_empty());
    let root = std::fs::read(hub.dir.join("updates/repo/metadata/root.json")).unwrap();
    assert_eq!(
        joined.update_root, root,
        "the published root.json, byte for byte"
    );
    let trust = tmp.path().join("node-tuf");
    let (fw, index) = fetch_firmware(
        &client,
        trust.clone(),
        joined.update_root.clone(),
        "robot-fw/1.0.0.img",
    )
    .await
    .unwrap();
    let expected = ChunkIndex::build(&FileImage::open(&file).unwrap()).unwrap();
    assert_eq!(index, expected.emit());
    assert_eq!(fw.info.version, "1.0.0");
    assert_eq!(fw.image.length, 200_000);
    let (fw2, index2) = fetch_firmware(
        &client,
        trust.clone(),
        joined.update_root.clone(),
        "robot-fw/2.0.0.img",
    )
    .await
    .unwrap();
    let virt = VirtualImage::new(5, 3 << 20).unwrap();
    assert_eq!(index2, ChunkIndex::build(&virt).unwrap().emit());
    assert_eq!(fw2.image.length, virt.len());
    // The hub keeps its own copy of a file package, named by its index digest.
    let copy = hub
        .dir
        .join(format!("updates/images/{}.img", expected.digest()));
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(&file).unwrap());

    // Revoked: gone from the signed targets (the other version stays).
    let out = hub.admin_ok(&["package", "revoke", "robot-fw", "1.0.0"]);
    assert!(out.contains("revoked robot-fw 1.0.0"), "{out}");
    assert!(!copy.exists(), "a revoked package's image copy is deleted");
    let err = fetch_firmware(
        &client,
        trust.clone(),
        joined.update_root.clone(),
        "robot-fw/1.0.0.img",
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            bauxite_forge::Error::TufRefused(TufRefusal::TargetNotFound { .. })
        ),
        "{err}"
    );
    fetch_firmware(
        &client,
        trust,
        joined.update_root.clone(),
        "robot-fw/2.0.0.img",
    )
    .await
    .unwrap();
    let list = hub.admin_ok(&["package", "list"]);
    let line = list.lines().find(|l| l.contains("1.0.0")).unwrap();
    assert!(line.contains("revoked"), "{list}");

    // Names that try to leave the repository, and images, are not published.
    let mut updates = client.updates();
    for name in [
        "../keys/targets.key",
        "../../hub.db",
        "/etc/passwd",
        "robot-fw/../../../keys/targets.key",
        &format!("../../images/{}.img", expected.digest()),
    ] {
        let status = updates
            .get_target(GetFileRequest {
                name: name.to_owned(),
                max_length: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{name}");
    }
    for name in [
        "../keys/timestamp.key",
        "root",
        "../repo/metadata/root.json",
    ] {
        let status = updates
            .get_metadata(GetFileRequest {
                name: name.to_owned(),
                max_length: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::NotFound, "{name}");
    }
    // `max_length` bounds what is sent.
    let mut stream = updates
        .get_metadata(GetFileRequest {
            name: "root.json".into(),
            max_length: 100,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(piece) = within(stream.message()).await.unwrap() {
        got.extend(piece.data);
    }
    assert_eq!(got, root[..100]);

    // Nodes may not manage packages.
    let mut as_node = admin_service_client::AdminServiceClient::new(client.channel());
    let refused = as_node
        .list_packages(ListPackagesRequest {})
        .await
        .unwrap_err();
    assert_eq!(Refusal::from_status(&refused), Some(Refusal::AdminOnly));

    let audit = hub.admin_ok(&["audit", "show"]);
    assert_eq!(audit.matches("package.create").count(), 2, "{audit}");
    assert_eq!(audit.matches("package.revoke").count(), 1, "{audit}");
    assert!(hub.admin_ok(&["audit", "verify"]).contains("OK"));
    hub.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3gib_virtual_package_builds_while_the_hub_answers_in_constant_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let hub = HubProc::start(&tmp.path().join("hub"));
    let mut create = std::process::Command::new(crate::common::BIN)
        .arg("--data-dir")
        .arg(&hub.dir)
        .args([
            "package",
            "create",
            "--virtual-size",
            "3GiB",
            "--seed",
            "1",
            "--version",
            "3.0.0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // While the hub streams 3 GiB through its hashes, its other calls are answered.
    let (joined, client) = hub.node(1).await;
    hub.admin_ok(&["nodes", "list"]);
    hub.token(&[]);
    // The same name and version again, while the first is being built: refused at once,
    // never a second build that could overwrite or unpublish the first one's targets.
    let twice = hub.cli(&[
        "package",
        "create",
        "--virtual-size",
        "1MiB",
        "--seed",
        "2",
        "--version",
        "3.0.0",
    ]);
    assert!(!twice.status.success());
    assert!(String::from_utf8_lossy(&twice.stderr).contains("exists already"));
    assert!(
        create.try_wait().unwrap().is_none(),
        "the package was still being built while those calls were answered"
    );
    let started = std::time::Instant::now();
    while create.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "package create hung"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = create.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3221225472 bytes, 49152 chunks, virtual"),
        "{stdout}"
    );
    eprintln!("{stdout}");
    let (fw, index) = fetch_firmware(
        &client,
        tmp.path().join("tuf"),
        joined.update_root,
        "firmware/3.0.0.img",
    )
    .await
    .unwrap();
    assert_eq!(fw.info.chunk_count, 49_152);
    assert_eq!(index.len(), 49_152 * 32);
    let status = std::fs::read_to_string(format!("/proc/{}/status", hub.pid())).unwrap();
    let hwm: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    eprintln!("hub peak RSS after building a 3 GiB package: {hwm} KiB");
    assert!(hwm < 64 * 1024, "{hwm} KiB");
    hub.stop();
}
