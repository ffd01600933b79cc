use super::*;

const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const K3: &str = "3333333333333333333333333333333333333333333333333333333333333333";

fn good() -> String {
    format!(
        r#"
[node]
identity = "/var/lib/bauxite/identity.key"
listen = "0.0.0.0:51820"
virtual_ip = "100.64.0.1/10"
cipher = "aes-256-gcm"
metrics_listen = "127.0.0.1:9100"
keepalive_secs = 2
rekey_timeout_secs = 1

[[peers]]
name = "b"
static_public = "{K1}"
signing_public = "{K2}"
virtual_ip = "100.64.0.2"
endpoint = "10.0.0.2:51820"

[[peers]]
name = "c"
static_public = "{K2}"
signing_public = "{K3}"
virtual_ip = "100.64.0.3"
"#
    )
}

fn parse(text: &str) -> Result<RunConfig, ConfigError> {
    RunConfig::parse(text, Path::new("c.toml"))
}

#[test]
fn parses_node_and_peers() {
    let c = parse(&good()).unwrap();
    assert_eq!(c.virtual_ip, Ipv4Addr::new(100, 64, 0, 1));
    assert_eq!(c.prefix, 10);
    assert_eq!(c.cipher, CipherSuite::Aes256Gcm);
    assert_eq!(c.tun_name, "bauxite0");
    assert_eq!(c.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
    assert_eq!(c.timers.keepalive_timeout, Duration::from_secs(2));
    assert_eq!(c.timers.rekey_timeout, Duration::from_secs(1));
    assert_eq!(c.peers.len(), 2);
    assert_eq!(c.peers[0].endpoint, Some("10.0.0.2:51820".parse().unwrap()));
    assert_eq!(c.peers[1].endpoint, None);
    assert_eq!(c.peers[1].static_public, [0x22; 32]);
}

#[test]
fn bulk_pacing_defaults_on_and_zero_turns_it_off() {
    assert_eq!(
        parse(&good()).unwrap().bulk_target,
        Some(DEFAULT_BULK_TARGET)
    );
    let with =
        |line: &str| good().replace("keepalive_secs = 2", &format!("keepalive_secs = 2\n{line}"));
    let off = parse(&with("bulk_target_delay_us = 0")).unwrap();
    assert_eq!(off.bulk_target, None);
    let lte = parse(&with("bulk_target_delay_us = 25000")).unwrap();
    assert_eq!(lte.bulk_target, Some(Duration::from_millis(25)));
}

#[test]
fn the_bulk_controller_is_chosen_by_name() {
    use bauxite_conduit::node::BulkController;
    let with =
        |line: &str| good().replace("keepalive_secs = 2", &format!("keepalive_secs = 2\n{line}"));
    assert_eq!(
        parse(&good()).unwrap().bulk_controller,
        BulkController::Auto,
        "chosen by what the paths show, by default"
    );
    let auto = parse(&with("bulk_controller = \"auto\"")).unwrap();
    assert_eq!(auto.bulk_controller, BulkController::Auto);
    let rate = parse(&with("bulk_controller = \"rate\"")).unwrap();
    assert_eq!(rate.bulk_controller, BulkController::Rate);
    let adaptive = parse(&with("bulk_controller = \"adaptive\"")).unwrap();
    assert_eq!(adaptive.bulk_controller, BulkController::Adaptive);
    let err = parse(&with("bulk_controller = \"bbr\"")).unwrap_err();
    assert!(
        err.to_string()
            .contains("\"auto\", \"rate\" or \"adaptive\""),
        "{err}"
    );
}

#[test]
fn realtime_priority_defaults_to_fifo_10_and_is_checked() {
    let with =
        |line: &str| good().replace("keepalive_secs = 2", &format!("keepalive_secs = 2\n{line}"));
    assert_eq!(
        parse(&good()).unwrap().realtime_priority,
        crate::realtime::DEFAULT_PRIORITY
    );
    assert_eq!(
        parse(&with("realtime_priority = 0"))
            .unwrap()
            .realtime_priority,
        0
    );
    assert_eq!(
        parse(&with("realtime_priority = 99"))
            .unwrap()
            .realtime_priority,
        99
    );
    let err = parse(&with("realtime_priority = 100"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("node.realtime_priority") && err.contains("1-99"),
        "{err}"
    );
    assert!(parse(&with("realtime_priority = -1")).is_err());
}

#[test]
fn precheck_sections_may_sit_beside_node() {
    let text = format!(
        "{}\n[state_root]\nroot = \"/var/lib/bauxite\"\n[transport]\ncert_file = \"/a\"\nkey_file = \"/b\"\nca_file = \"/c\"\n",
        good()
    );
    assert!(parse(&text).is_ok());
    assert!(crate::config::Config::parse(&text, Path::new("c.toml")).is_ok());
}

#[test]
fn missing_node_section_is_named() {
    let e = parse("[state_root]\nroot = \"/x\"\n").unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::MissingSection {
                section: "node",
                ..
            }
        ),
        "{e}"
    );
}

fn assert_peer_key(text: &str, index: usize, key: &str) {
    match parse(text) {
        Err(ConfigError::Peer {
            index: i, key: k, ..
        }) if i == index && k == key => {}
        other => panic!("expected peers[{index}].{key} error, got {other:?}"),
    }
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("0.0.0.0:51820", "0.0.0.0", "node.listen"),
        ("100.64.0.1/10", "100.64.0.1", "node.virtual_ip"),
        ("aes-256-gcm", "rot13", "node.cipher"),
        (
            "keepalive_secs = 2",
            "keepalive_secs = 0",
            "node.keepalive_secs",
        ),
        (
            "/var/lib/bauxite/identity.key",
            "identity.key",
            "node.identity",
        ),
        ("127.0.0.1:9100", "localhost", "node.metrics_listen"),
    ];
    for (from, to, key) in cases {
        let e = parse(&good().replacen(from, to, 1)).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Invalid { key: k, .. } if *k == key),
            "{from} -> {to}: {e}"
        );
        assert!(e.to_string().contains(key), "{e}");
    }
}

#[test]
fn bad_peers_name_entry_and_key() {
    let g = good();
    assert_peer_key(&g.replacen(K1, "abc", 1), 0, "static_public");
    assert_peer_key(
        &g.replacen(&format!("\"{K3}\""), "\"12\"", 1),
        1,
        "signing_public",
    );
    assert_peer_key(&g.replacen("100.64.0.3", "10.0.0.3", 1), 1, "virtual_ip");
    assert_peer_key(&g.replacen("100.64.0.3", "100.64.0.2", 1), 1, "virtual_ip");
    assert_peer_key(
        &g.replacen("100.64.0.2\"", "100.64.0.1\"", 1),
        0,
        "virtual_ip",
    );
    assert_peer_key(&g.replacen("name = \"c\"", "name = \"b\"", 1), 1, "name");
    assert_peer_key(&g.replacen("10.0.0.2:51820", "nowhere", 1), 0, "endpoint");
    let same_key = g.replacen(
        &format!("static_public = \"{K2}\""),
        &format!("static_public = \"{K1}\""),
        1,
    );
    assert_peer_key(&same_key, 1, "static_public");
    let e = parse(&g.replacen(K1, "abc", 1)).unwrap_err();
    assert!(e.to_string().contains("peers[0].static_public"), "{e}");
}

#[test]
fn unknown_keys_are_refused() {
    let e = parse(&good().replacen("cipher", "ciper", 1)).unwrap_err();
    assert!(e.to_string().contains("ciper"), "{e}");
}

#[test]
fn hub_url_must_be_https_with_a_port() {
    let with_hub = |url: &str| {
        format!(
            "{}\n[hub]\nurl = \"{url}\"\ncerts_dir = \"/var/lib/bauxite/certs\"\n",
            good()
        )
    };
    let hub = parse(&with_hub("https://hub.example:7443/"))
        .unwrap()
        .hub
        .unwrap();
    assert_eq!(hub.url, "https://hub.example:7443/");
    assert_eq!(hub.urls, ["https://hub.example:7443/"]);
    for bad in [
        "http://hub.example:7443",
        "hub.example:7443",
        "https://hub.example",
    ] {
        let e = parse(&with_hub(bad)).unwrap_err().to_string();
        assert!(e.contains("hub.url"), "{bad}: {e}");
        assert!(e.contains("https://"), "{bad}: the fix is named: {e}");
    }
}

#[test]
fn hub_replicas_follow_the_main_url_once_each_and_are_checked_alike() {
    let with_urls = |urls: &str| {
        format!(
            "{}\n[hub]\nurl = \"https://a.example:7443\"\nurls = [{urls}]\ncerts_dir = \"/var/lib/bauxite/certs\"\n",
            good()
        )
    };
    let hub = parse(&with_urls(
        r#""https://b.example:7443", "https://a.example:7443", "https://c.example:7443""#,
    ))
    .unwrap()
    .hub
    .unwrap();
    assert_eq!(hub.url, "https://a.example:7443");
    assert_eq!(
        hub.urls,
        [
            "https://a.example:7443",
            "https://b.example:7443",
            "https://c.example:7443"
        ]
    );
    let e = parse(&with_urls(r#""http://b.example:7443""#))
        .unwrap_err()
        .to_string();
    assert!(e.contains("hub.urls") && e.contains("https://"), "{e}");
}

#[test]
fn device_defaults_to_auto_and_names_the_key_when_wrong() {
    assert_eq!(parse(&good()).unwrap().device, DeviceKind::Auto);
    for (word, kind) in [("memory", DeviceKind::Memory), ("none", DeviceKind::None)] {
        let text = good().replace("cipher = ", &format!("device = \"{word}\"\ncipher = "));
        assert_eq!(parse(&text).unwrap().device, kind);
    }
    let text = good().replace("cipher = ", "device = \"tap\"\ncipher = ");
    match parse(&text) {
        Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "node.device"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn turn_servers_are_checked_and_name_their_key() {
    let with = |entry: &str| format!("{}\n[[turn]]\n{entry}\n", good());
    let ok = parse(&with(
        "url = \"turn:203.0.113.5:3478\"\nusername = \"r1\"\npassword_file = \"/var/lib/bauxite/turn.pw\"",
    ))
    .unwrap();
    assert_eq!(
        ok.turn,
        [crate::config::StaticTurn {
            url: "turn:203.0.113.5:3478".into(),
            username: "r1".into(),
            password_file: "/var/lib/bauxite/turn.pw".into(),
        }]
    );
    assert!(parse(&good()).unwrap().turn.is_empty(), "none by default");
    for (entry, key) in [
        (
            "url = \"turns:h:5349\"\nusername = \"r\"\npassword_file = \"/p\"",
            "turn.url",
        ),
        (
            "url = \"turn:h\"\nusername = \"r\"\npassword_file = \"/p\"",
            "turn.url",
        ),
        (
            "url = \"turn:h:3478?transport=tcp\"\nusername = \"r\"\npassword_file = \"/p\"",
            "turn.url",
        ),
        (
            "url = \"turn:h:3478\"\nusername = \" \"\npassword_file = \"/p\"",
            "turn.username",
        ),
        (
            "url = \"turn:h:3478\"\nusername = \"r\"\npassword_file = \"p\"",
            "turn.password_file",
        ),
    ] {
        match parse(&with(entry)) {
            Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{entry}"),
            other => panic!("{entry}: {other:?}"),
        }
    }
    let unknown =
        with("url = \"turn:h:3478\"\nusername = \"r\"\npassword_file = \"/p\"\npassword = \"x\"");
    assert!(parse(&unknown).is_err(), "no inline password");
}

#[test]
fn bonding_defaults_off_and_peers_take_more_addresses() {
    use bauxite_conduit::path::Bonding;
    assert_eq!(parse(&good()).unwrap().bonding, Bonding::Off);
    let with =
        |line: &str| good().replace("keepalive_secs = 2", &format!("keepalive_secs = 2\n{line}"));
    assert_eq!(
        parse(&with("bonding = \"critical\"")).unwrap().bonding,
        Bonding::Critical
    );
    assert_eq!(
        parse(&with("bonding = \"all\"")).unwrap().bonding,
        Bonding::All
    );
    let Err(ConfigError::Invalid { key, reason }) = parse(&with("bonding = \"both\"")) else {
        panic!("an unknown mode is refused");
    };
    assert_eq!(key, "node.bonding");
    assert!(reason.contains("\"critical\""), "{reason}");
    let two = good().replace(
        "endpoint = \"10.0.0.2:51820\"",
        "endpoint = \"10.0.0.2:51820\"\ncandidates = [\"10.9.0.2:51820\"]",
    );
    let c = parse(&two).unwrap();
    assert_eq!(
        c.peers[0].candidates,
        vec!["10.9.0.2:51820".parse().unwrap()]
    );
    assert_eq!(c.peers[0].dial_order().len(), 2);
    let bad = good().replace(
        "endpoint = \"10.0.0.2:51820\"",
        "endpoint = \"10.0.0.2:51820\"\ncandidates = [\"uplink-2\"]",
    );
    assert!(parse(&bad).is_err(), "a candidate must be IP:port");
}

#[test]
fn bulk_repair_is_on_unless_turned_off() {
    assert!(parse(&good()).unwrap().bulk_repair);
    let off = good().replace("cipher = ", "bulk_repair = false\ncipher = ");
    assert!(!parse(&off).unwrap().bulk_repair);
    let bad = good().replace("cipher = ", "bulk_repair = \"no\"\ncipher = ");
    let e = parse(&bad).unwrap_err();
    assert!(e.to_string().contains("bulk_repair"), "{e}");
}

#[test]
fn ice_is_on_unless_turned_off() {
    assert!(parse(&good()).unwrap().ice);
    let off = good().replace("cipher = ", "ice = false\ncipher = ");
    assert!(!parse(&off).unwrap().ice);
}
