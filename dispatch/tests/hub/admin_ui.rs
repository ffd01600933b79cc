//! The admin web UI end to end: a real hub with `--admin-ui-listen`, a real headless
//! Chromium driven through `chromedriver` (WebDriver) with fantoccini. Logs in (a wrong
//! password is refused), creates a join token and joins a node with it, edits the policy
//! (an invalid one changes nothing; a valid one is saved and audited), shows the path types
//! a node reported and a rollout with its phase, pages through the audit log (older and
//! newer links), views every page and screenshots it (checked not blank). Raw HTTP
//! checks: no session redirects to login, a POST without the CSRF token is refused, a
//! foreign Host is refused.
//!
//! Skipped, with a `SKIPPED` line, only when chromium or chromedriver is not installed
//! (scripts/setup.sh installs both).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bauxite_dispatch_api::proto::node::{Metric, ReportMetricsRequest, UpdateStateReport};
use bauxite_dispatch_api::token::JoinToken;
use fantoccini::{Client, ClientBuilder, Locator};

use crate::common::{BIN, DEADLINE, HubProc, within};

const PASSWORD: &str = "correct horse battery staple";

fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

/// `chromedriver` on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(program: &Path) -> Driver {
        // chromedriver takes a port number, not a socket: pick a free one and release it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let start = Instant::now();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromedriver did not start within {DEADLINE:?}"));
            if line.contains("started successfully") {
                break;
            }
        }
        Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One raw HTTP/1.1 request; returns the status code and the whole response text.
fn http(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let addr = base.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    s.write_all(request.as_bytes()).unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// Decodes a PNG screenshot and requires a real page: a sizeable image, several colours
/// and luminance variance well above a blank (or single-colour) page's zero.
fn check_not_blank(png_bytes: &[u8], what: &str) -> (u32, u32, f64) {
    let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    assert_eq!(info.bit_depth, png::BitDepth::Eight, "{what}");
    let pixels = &buf[..info.buffer_size()];
    let mut colours = std::collections::HashSet::new();
    let (mut sum, mut sum2, mut n) = (0f64, 0f64, 0f64);
    for px in pixels.chunks_exact(channels) {
        let luma = if channels >= 3 {
            0.299 * f64::from(px[0]) + 0.587 * f64::from(px[1]) + 0.114 * f64::from(px[2])
        } else {
            f64::from(px[0])
        };
        sum += luma;
        sum2 += luma * luma;
        n += 1.0;
        if colours.len() < 64 {
            colours.insert(px[..channels.min(3)].to_vec());
        }
    }
    let mean = sum / n;
    let variance = sum2 / n - mean * mean;
    assert!(
        info.width >= 800 && info.height >= 600,
        "{what}: {}x{}",
        info.width,
        info.height
    );
    assert!(colours.len() >= 8, "{what}: only {} colours", colours.len());
    assert!(
        variance > 100.0,
        "{what}: luminance variance {variance:.1} (blank page?)"
    );
    (info.width, info.height, variance)
}

async fn screenshot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, &png).unwrap();
    let (w, h, var) = check_not_blank(&png, name);
    eprintln!(
        "screenshot {} ({w}x{h}, luminance variance {var:.0})",
        path.display()
    );
}

async fn text_of(c: &Client, css: &str) -> String {
    match c
        .wait()
        .at_most(DEADLINE)
        .for_element(Locator::Css(css))
        .await
    {
        Ok(element) => element.text().await.unwrap(),
        Err(e) => {
            let url = c.current_url().await;
            let source = c.source().await.unwrap_or_default();
            panic!("no {css} on {url:?}: {e}\n{source}")
        }
    }
}

/// The indices in the audit table, in page order (newest first).
async fn audit_rows(c: &Client) -> Vec<u64> {
    text_of(c, "#audit")
        .await
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The entry count the audit page's verification line states.
async fn audit_count(c: &Client) -> u64 {
    let text = text_of(c, "#verify").await;
    text.split("verified: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no entry count in {text:?}"))
}

async fn path_of(c: &Client) -> String {
    c.current_url().await.unwrap().path().to_owned()
}

async fn fill(c: &Client, css: &str, text: &str) {
    let field = c.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Clicks a form's submit button and waits (bounded) for the answer page: the old
/// document's root element goes stale once the browser replaced it.
async fn submit(c: &Client, css: &str) {
    let old = c.find(Locator::Css("html")).await.unwrap();
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let start = Instant::now();
    while old.tag_name().await.is_ok() {
        assert!(
            start.elapsed() < DEADLINE,
            "no new page after clicking {css}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn set_password(dir: &Path) {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["admin-password", "set"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{PASSWORD}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.join("admin-ui.passwd");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains(PASSWORD));
}

#[test]
fn the_ui_refuses_non_loopback_addresses_and_a_missing_password() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    let serve = |ui: &str| {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(&dir)
            .args(["serve", "--listen", "127.0.0.1:0", "--admin-ui-listen", ui])
            .output()
            .unwrap()
    };
    let out = serve("127.0.0.1:0");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("admin-password set"), "{err}");
    set_password(&dir);
    let out = serve("0.0.0.0:0");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");
}

/// The value of `name=` in the response's `Set-Cookie` headers.
fn set_cookie(response: &str, name: &str) -> Option<String> {
    response
        .lines()
        .filter_map(|l| l.strip_prefix("set-cookie: "))
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap_or_default().to_owned())
}

#[test]
fn logins_need_the_form_token_and_are_rate_limited() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    set_password(&dir);
    let hub = HubProc::start_with(&dir, &["--admin-ui-listen", "127.0.0.1:0"]);
    let ui = hub.admin_ui.clone().unwrap();

    let (status, page) = http(&ui, "GET", "/login", &[], "");
    assert_eq!(status, 200);
    for header in [
        "content-security-policy: default-src 'none'",
        "x-frame-options: DENY",
        "cache-control: no-store",
    ] {
        assert!(page.contains(header), "{header} missing:\n{page}");
    }
    let token = set_cookie(&page, "bx_login").expect("login form cookie");
    assert!(page.contains(&format!(r#"name="csrf" value="{token}""#)));
    let cookie = format!("bx_login={token}");
    let form = |password: &str| format!("csrf={token}&password={}", password.replace(' ', "+"));
    let headers = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    // Without the cookie (a cross-site form) the right password is refused.
    let (status, _) = http(
        &ui,
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        &form(PASSWORD),
    );
    assert_eq!(status, 403);
    for attempt in 0..5 {
        let (status, text) = http(&ui, "POST", "/login", &headers, &form("wrong password"));
        assert_eq!(status, 401, "attempt {attempt}: {text}");
        assert!(set_cookie(&text, "bx_session").is_none());
    }
    // Five failures within a minute: even the right password waits.
    let (status, text) = http(&ui, "POST", "/login", &headers, &form(PASSWORD));
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("Too many failed logins") && set_cookie(&text, "bx_session").is_none());
    let audit = hub.admin_ok(&["audit", "show"]);
    assert_eq!(audit.matches("admin-ui.login-failed").count(), 5, "{audit}");
    assert!(!audit.contains("admin-ui.login "), "{audit}");
    hub.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_ui_works_in_headless_chromium() {
    let (Some(chromium), Some(chromedriver)) = (on_path("chromium"), on_path("chromedriver"))
    else {
        eprintln!(
            "SKIPPED: chromium and chromedriver are not installed (scripts/setup.sh installs them)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("hub");
    set_password(&dir);
    let hub = HubProc::start_with(&dir, &["--admin-ui-listen", "127.0.0.1:0"]);
    let ui = hub
        .admin_ui
        .clone()
        .expect("the hub printed the admin UI address");
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("admin-ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();

    // Without a session every page redirects to the login page.
    for page in [
        "/nodes",
        "/tokens",
        "/policy",
        "/audit",
        "/topology",
        "/rollouts",
    ] {
        let (status, text) = http(&ui, "GET", page, &[], "");
        assert_eq!(status, 303, "{page}: {text}");
        assert!(text.contains("location: /login"), "{page}: {text}");
    }
    // A page whose host name resolves to 127.0.0.1 (DNS rebinding) is not answered.
    let (status, _) = http(&ui, "GET", "/login", &[("X-Probe", "1")], "");
    assert_eq!(status, 200);
    let addr = ui.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(b"GET /login HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 421"), "{text}");

    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display()),
            ],
        },
    }))
    .unwrap();
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let c = within(
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url),
    )
    .await
    .unwrap();

    // Login: a page behind the session goes to /login; a wrong password is refused.
    within(c.goto(&format!("{ui}/nodes"))).await.unwrap();
    assert_eq!(path_of(&c).await, "/login");
    screenshot(&c, &shots, "login").await;
    fill(&c, "#password", "not the password").await;
    submit(&c, "#login").await;
    assert!(text_of(&c, "#error").await.contains("Wrong password"));
    assert_eq!(path_of(&c).await, "/login");
    fill(&c, "#password", PASSWORD).await;
    submit(&c, "#login").await;
    assert_eq!(text_of(&c, "h1").await, "Nodes");
    assert_eq!(path_of(&c).await, "/nodes");

    // The session cookie is HttpOnly and SameSite=Strict; with it but without the CSRF
    // token a POST is refused and changes nothing.
    let cookies = c.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|k| k.name() == "bx_session")
        .expect("session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    let cookie = format!("bx_session={}", session.value());
    let form = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let (status, text) = http(
        &ui,
        "POST",
        "/tokens",
        &form,
        "name=csrf-less&ttl_minutes=5&uses=1",
    );
    assert_eq!(status, 403, "{text}");
    let (status, _) = http(
        &ui,
        "POST",
        "/tokens",
        &form,
        "csrf=00ff&name=forged&ttl_minutes=5&uses=1",
    );
    assert_eq!(status, 403);
    let (status, text) = http(&ui, "GET", "/tokens", &[("Cookie", cookie.as_str())], "");
    assert_eq!(status, 200);
    assert!(
        !text.contains("csrf-less") && !text.contains("forged"),
        "a refused POST created a token"
    );
    let (status, _) = http(&ui, "POST", "/policy", &form, "json=%7B%7D");
    assert_eq!(status, 403);

    // A join token: shown once, listed by the hub, and good for a real join.
    within(c.goto(&format!("{ui}/tokens"))).await.unwrap();
    fill(&c, "#token-name", "robot-7").await;
    fill(&c, "#token-uses", "2").await;
    submit(&c, "#create-token").await;
    let token_text = text_of(&c, "#new-token").await;
    let token = JoinToken::parse(token_text.trim()).expect("the page shows a valid join token");
    let token_id = token.id.to_string();
    let table = text_of(&c, "#tokens").await;
    assert!(
        table.contains(&token_id) && table.contains("robot-7") && table.contains("2 / 2"),
        "{table}"
    );
    screenshot(&c, &shots, "tokens").await;
    // Reloading does not show the token again: the hub keeps only its hash.
    within(c.goto(&format!("{ui}/tokens"))).await.unwrap();
    let source = c.source().await.unwrap();
    assert!(
        !source.contains(token_text.trim()),
        "the token was shown twice"
    );
    assert!(source.contains(&token_id));
    let joined = within(hub.join(&token, 7)).await.unwrap();
    let node =
        bauxite_dispatch_api::client::HubClient::connect_mtls(&hub.addr, &joined.credentials)
            .await
            .unwrap();
    // As `bauxite run` reports them: counters, and how many peers it reaches on each path.
    let metric = |name: &str, value: f64| Metric {
        name: name.into(),
        value,
    };
    node.metrics()
        .report_metrics(ReportMetricsRequest {
            metrics: vec![
                metric("tx_packets", 4242.0),
                metric("paths_direct", 2.0),
                metric("paths_turn", 0.0),
                metric("paths_hub", 1.0),
                metric("paths_none", 0.0),
            ],
        })
        .await
        .unwrap();

    // Nodes: the joined robot, online, with its reported metric.
    within(c.goto(&format!("{ui}/nodes"))).await.unwrap();
    let nodes = text_of(&c, "#nodes").await;
    assert!(
        nodes.contains("robot-7") && nodes.contains("online") && nodes.contains("tx_packets 4242"),
        "{nodes}"
    );
    assert!(nodes.contains(&joined.virtual_ip.to_string()), "{nodes}");
    let path_type = text_of(&c, "#nodes tbody tr.status-online td.path-type").await;
    assert_eq!(
        path_type, "direct 2, hub 1",
        "the path types the node reported"
    );
    screenshot(&c, &shots, "nodes").await;

    // Rollouts: a package deployed to the node, which reports its progress.
    hub.admin_ok(&[
        "package",
        "create",
        "--virtual-size",
        "1MiB",
        "--seed",
        "3",
        "--version",
        "2.0.0",
        "--name",
        "firmware",
    ]);
    let node_id = joined.node_id.to_string();
    hub.admin_ok(&["update", "deploy", "firmware", "2.0.0", "--node", &node_id]);
    within(c.goto(&format!("{ui}/rollouts"))).await.unwrap();
    let rollouts = text_of(&c, "#rollouts").await;
    assert!(
        rollouts.contains("firmware 2.0.0") && rollouts.contains("assigned"),
        "{rollouts}"
    );
    node.updates()
        .report_update_state(UpdateStateReport {
            sequence: 1,
            target: "firmware-2.0.0".into(),
            version: "2.0.0".into(),
            state: "PENDING_VALIDATION".into(),
            ..UpdateStateReport::default()
        })
        .await
        .unwrap();
    within(c.goto(&format!("{ui}/rollouts"))).await.unwrap();
    let rollouts = text_of(&c, "#rollouts").await;
    assert!(
        rollouts.contains("in progress") && rollouts.contains("PENDING_VALIDATION 1"),
        "{rollouts}"
    );
    screenshot(&c, &shots, "rollouts").await;
    within(c.goto(&format!("{ui}/topology"))).await.unwrap();
    let topo = text_of(&c, "#topology").await;
    assert!(topo.contains("robot-7"), "{topo}");
    screenshot(&c, &shots, "topology").await;

    // Policy: an invalid document shows the validation error and sets nothing.
    within(c.goto(&format!("{ui}/policy"))).await.unwrap();
    fill(
        &c,
        "#policy-json",
        r#"{"rules": [{"protocol": "tcp", "ports": "99999"}]}"#,
    )
    .await;
    submit(&c, "#save-policy").await;
    let error = text_of(&c, "#error").await;
    assert!(
        error.contains("Invalid policy, nothing was saved"),
        "{error}"
    );
    screenshot(&c, &shots, "policy-invalid").await;
    assert!(hub.admin_ok(&["policy", "show"]).contains("no policy set"));
    // A valid one is saved through the hub and pushed (version 1).
    let valid = r#"{"rules": [{"protocol": "icmp"}, {"protocol": "tcp", "ports": "22"}]}"#;
    fill(&c, "#policy-json", valid).await;
    submit(&c, "#save-policy").await;
    let saved = text_of(&c, "#saved").await;
    assert!(saved.contains("Policy version 1 saved"), "{saved}");
    // The same lint as `policy set`: tcp 22 with no reply rule.
    let warning = text_of(&c, ".warning").await;
    assert!(
        warning.contains("no rule lets their replies back"),
        "{warning}"
    );
    assert!(
        text_of(&c, "#change")
            .await
            .contains(r#"+ {"protocol":"icmp"}"#)
    );
    let shown = hub.admin_ok(&["policy", "show"]);
    assert!(
        shown.starts_with("# version 1") && shown.contains("icmp"),
        "{shown}"
    );
    screenshot(&c, &shots, "policy").await;

    // Audit: verified, with the UI's actions under its own actor.
    within(c.goto(&format!("{ui}/audit"))).await.unwrap();
    assert!(text_of(&c, "#verify").await.contains("Hash chain verified"));
    let audit = text_of(&c, "#audit").await;
    for action in [
        "admin-ui.login-failed",
        "admin-ui.login",
        "token.create",
        "policy.set",
    ] {
        assert!(
            audit
                .lines()
                .any(|l| l.contains(action) && l.contains("admin:web-ui")),
            "{action} by admin:web-ui missing:\n{audit}"
        );
    }
    assert!(audit.contains(&token_id));
    screenshot(&c, &shots, "audit").await;
    let cli_audit = hub.admin_ok(&["audit", "verify"]);
    assert!(cli_audit.contains("audit log OK"), "{cli_audit}");

    // Paging: with 5 entries a page and more than two pages of log, the newest page links
    // to older entries only, the next one back again; a cursor past the end is refused.
    for i in 0..10 {
        hub.token(&["--name", &format!("paging-{i}")]);
    }
    within(c.goto(&format!("{ui}/audit?limit=5")))
        .await
        .unwrap();
    let count = audit_count(&c).await;
    assert!(count > 10, "{count} entries");
    let newest: Vec<u64> = (count - 5..count).rev().collect();
    assert_eq!(audit_rows(&c).await, newest);
    assert!(text_of(&c, "#verify").await.contains("Hash chain verified"));
    assert!(
        c.find(Locator::Css("#newer")).await.is_err(),
        "the newest page has no newer link"
    );
    submit(&c, "#older").await;
    let older: Vec<u64> = (count - 10..count - 5).rev().collect();
    assert_eq!(audit_rows(&c).await, older);
    assert!(text_of(&c, "#range").await.contains(&format!("of {count}")));
    assert!(text_of(&c, "#verify").await.contains("Hash chain verified"));
    screenshot(&c, &shots, "audit-older").await;
    submit(&c, "#newer").await;
    assert_eq!(audit_rows(&c).await, newest);
    within(c.goto(&format!("{ui}/audit?before={}", count + 1)))
        .await
        .unwrap();
    assert!(text_of(&c, "#error").await.contains("outside the log"));

    // Logout ends the session: the old cookie no longer opens a page.
    submit(&c, "button[type=submit]").await;
    assert_eq!(text_of(&c, "h1").await, "Log in");
    let (status, _) = http(&ui, "GET", "/nodes", &[("Cookie", cookie.as_str())], "");
    assert_eq!(status, 303);

    c.close().await.unwrap();
    drop(driver);
    hub.stop();
    eprintln!("screenshots in {}", shots.display());
}
