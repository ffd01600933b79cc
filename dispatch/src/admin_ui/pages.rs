//! The UI's HTTP shell: routes, cookies, the clock and the OS RNG. Every page needs a live
//! session; every POST carries the session's CSRF token (the login form a per-form one,
//! double-submitted in a cookie).

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Query, Request, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::session::{SessionSeed, csrf_matches};
use super::{AdminUi, lock, password, views};
use crate::audit::page::{self as audit_page, Newer};
use crate::clock::{UnixTime, os_random};
use crate::hub::{Caller, NewToken};
use crate::policy_review;

const SESSION_COOKIE: &str = "bx_session";
const LOGIN_COOKIE: &str = "bx_login";

type Ui = State<Arc<AdminUi>>;

/// The UI's routes over `ui`.
pub fn router(ui: Arc<AdminUi>) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/nodes") }))
        .route("/style.css", get(style))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/nodes", get(nodes))
        .route("/topology", get(topology))
        .route("/tokens", get(tokens).post(create_token))
        .route("/policy", get(policy).post(set_policy))
        .route("/audit", get(audit))
        .route("/rollouts", get(rollouts))
        // The admin RPC decodes at most this much: a policy the UI accepts fits it too.
        .layer(DefaultBodyLimit::max(crate::server::MAX_MESSAGE_BYTES))
        .layer(middleware::from_fn(guard))
        .with_state(ui)
}

/// Refuses requests for another host name (DNS rebinding: a web page whose name resolves
/// to 127.0.0.1 must not reach the UI) and adds the security headers to every answer.
async fn guard(request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let loopback = name == "localhost"
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let mut response = if loopback {
        next.run(request).await
    } else {
        (
            StatusCode::MISDIRECTED_REQUEST,
            "the admin UI answers only to localhost and loopback addresses\n",
        )
            .into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("templates/style.css"),
    )
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn random32() -> crate::Result<[u8; 32]> {
    let mut bytes = [0u8; 32];
    os_random(&mut bytes)?;
    Ok(bytes)
}

fn internal(e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin UI request failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("hub error: {e}\n"),
    )
        .into_response()
}

fn render(ui: &AdminUi, status: StatusCode, name: &str, ctx: minijinja::Value) -> Response {
    match ui.templates.get_template(name).and_then(|t| t.render(ctx)) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => internal(&e),
    }
}

fn forbidden(ui: &AdminUi, csrf: &str) -> Response {
    tracing::warn!("admin UI POST refused: missing or wrong CSRF token");
    render(
        ui,
        StatusCode::FORBIDDEN,
        "message.html",
        minijinja::context! {
            csrf,
            heading => "Refused",
            message => "This form is stale or did not come from this page (CSRF token missing or wrong). Reload the page and try again.",
        },
    )
}

/// A request with a live session; others are redirected to the login page.
struct Authed {
    token: String,
    csrf: String,
}

impl FromRequestParts<Arc<AdminUi>> for Authed {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        ui: &Arc<AdminUi>,
    ) -> Result<Self, Self::Rejection> {
        let to_login = || Redirect::to("/login").into_response();
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(to_login)?;
        let csrf = lock(&ui.sessions)
            .check(&token, UnixTime::now())
            .ok_or_else(to_login)?;
        Ok(Self { token, csrf })
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
}

fn login_form(ui: &AdminUi, status: StatusCode, error: &str) -> Response {
    let csrf = match random32() {
        Ok(bytes) => hex::encode(bytes),
        Err(e) => return internal(&e),
    };
    let mut response = render(
        ui,
        status,
        "login.html",
        minijinja::context! { login_csrf => &csrf, error, page => "login" },
    );
    let value = format!("{LOGIN_COOKIE}={csrf}; Path=/login; HttpOnly; SameSite=Strict");
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn login_page(State(ui): Ui) -> Response {
    login_form(&ui, StatusCode::OK, "")
}

async fn login(State(ui): Ui, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let expected = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if !csrf_matches(&expected, &form.csrf) {
        return forbidden(&ui, "");
    }
    let now = UnixTime::now();
    if let Err(wait) = lock(&ui.limiter).allow(now) {
        tracing::warn!(wait, "admin UI login refused: too many failures");
        return login_form(
            &ui,
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many failed logins; try again in {wait} s."),
        );
    }
    let phc = ui.phc.clone();
    let password = form.password;
    // argon2 takes tens of milliseconds of CPU: off the async workers.
    let ok = tokio::task::spawn_blocking(move || password::verify(&phc, &password))
        .await
        .unwrap_or(false);
    let hub = &ui.hub;
    if !ok {
        lock(&ui.limiter).failed(now);
        tracing::warn!("admin UI login failed: wrong password");
        if let Err(e) = hub.audit_event(
            now,
            Caller::AdminUi,
            "admin-ui.login-failed",
            "wrong password".into(),
        ) {
            return internal(&e);
        }
        return login_form(&ui, StatusCode::UNAUTHORIZED, "Wrong password.");
    }
    lock(&ui.limiter).succeeded();
    let seed = match (random32(), random32()) {
        (Ok(token), Ok(csrf)) => SessionSeed { token, csrf },
        (Err(e), _) | (_, Err(e)) => return internal(&e),
    };
    let session = lock(&ui.sessions).create(now, seed);
    if let Err(e) = hub.audit_event(now, Caller::AdminUi, "admin-ui.login", "logged in".into()) {
        lock(&ui.sessions).end(&session.token);
        return internal(&e);
    }
    tracing::info!("admin UI login");
    let mut response = Redirect::to("/nodes").into_response();
    let cookies = [
        format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
            session.token,
            super::session::ABSOLUTE_SECS
        ),
        format!("{LOGIN_COOKIE}=; Path=/login; HttpOnly; SameSite=Strict; Max-Age=0"),
    ];
    for c in cookies {
        if let Ok(value) = HeaderValue::from_str(&c) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

async fn logout(State(ui): Ui, authed: Authed, Form(form): Form<CsrfForm>) -> Response {
    if !csrf_matches(&authed.csrf, &form.csrf) {
        return forbidden(&ui, &authed.csrf);
    }
    lock(&ui.sessions).end(&authed.token);
    if let Err(e) = ui.hub.audit_event(
        UnixTime::now(),
        Caller::AdminUi,
        "admin-ui.logout",
        "logged out".into(),
    ) {
        return internal(&e);
    }
    let mut response = Redirect::to("/login").into_response();
    let clear = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    if let Ok(value) = HeaderValue::from_str(&clear) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn nodes(State(ui): Ui, authed: Authed) -> Response {
    let (rows, online) = views::nodes(&ui.hub, UnixTime::now());
    let topology_version = ui.hub.subscribe_topology().borrow().version();
    render(
        &ui,
        StatusCode::OK,
        "nodes.html",
        minijinja::context! {
            csrf => authed.csrf, page => "nodes", nodes => rows, online,
            online_secs => views::ONLINE_SECS, cidr => ui.hub.cidr().to_string(), topology_version,
        },
    )
}

async fn rollouts(State(ui): Ui, authed: Authed) -> Response {
    let rows = super::rollouts::rollouts(ui.hub.update_view());
    render(
        &ui,
        StatusCode::OK,
        "rollouts.html",
        minijinja::context! { csrf => authed.csrf, page => "rollouts", rollouts => rows },
    )
}

async fn topology(State(ui): Ui, authed: Authed) -> Response {
    let (version, peers) = views::topology(&ui.hub);
    render(
        &ui,
        StatusCode::OK,
        "topology.html",
        minijinja::context! {
            csrf => authed.csrf, page => "topology", version, peers,
            policy_version => ui.hub.policy().version,
        },
    )
}

/// A token shown once, right after creation.
#[derive(serde::Serialize)]
struct Created {
    id: String,
    token: String,
}

fn tokens_page(
    ui: &AdminUi,
    status: StatusCode,
    csrf: &str,
    created: Option<Created>,
    error: &str,
) -> Response {
    match views::tokens(&ui.hub, UnixTime::now()) {
        Ok(tokens) => render(
            ui,
            status,
            "tokens.html",
            minijinja::context! { csrf, page => "tokens", tokens, created, error },
        ),
        Err(e) => internal(&e),
    }
}

async fn tokens(State(ui): Ui, authed: Authed) -> Response {
    tokens_page(&ui, StatusCode::OK, &authed.csrf, None, "")
}

#[derive(Deserialize)]
struct TokenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    ttl_minutes: String,
    #[serde(default)]
    uses: String,
}

async fn create_token(State(ui): Ui, authed: Authed, Form(form): Form<TokenForm>) -> Response {
    if !csrf_matches(&authed.csrf, &form.csrf) {
        return forbidden(&ui, &authed.csrf);
    }
    let bad = |what: &str| {
        tokens_page(
            &ui,
            StatusCode::UNPROCESSABLE_ENTITY,
            &authed.csrf,
            None,
            what,
        )
    };
    let Ok(minutes) = form.ttl_minutes.trim().parse::<u64>() else {
        return bad("Valid for: a whole number of minutes.");
    };
    let Ok(uses) = form.uses.trim().parse::<u32>() else {
        return bad("Uses: a whole number, at least 1.");
    };
    let mut id = [0u8; 8];
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    if let Err(e) = os_random(&mut id).and_then(|()| os_random(secret.as_mut())) {
        return internal(&e);
    }
    let new = NewToken {
        ttl_secs: minutes.saturating_mul(60),
        uses,
        name: form.name.trim().to_owned(),
        id,
        secret,
    };
    match ui.hub.create_token(UnixTime::now(), Caller::AdminUi, new) {
        Ok((token, record)) => {
            tracing::info!(token = %record.id, name = %record.name, uses = record.uses_total, "token created (admin UI)");
            let created = Created {
                id: record.id.to_string(),
                token: token.to_string(),
            };
            tokens_page(&ui, StatusCode::OK, &authed.csrf, Some(created), "")
        }
        Err(e @ (crate::Error::InvalidArgument { .. } | crate::Error::Conflict(_))) => {
            bad(&e.to_string())
        }
        Err(e) => internal(&e),
    }
}

fn node_names(ui: &AdminUi) -> policy_review::NodeNames {
    ui.hub
        .nodes()
        .into_iter()
        .filter(|n| n.revoked_at.is_none())
        .map(|n| (n.id, n.name))
        .collect()
}

/// The current policy as the editor shows it (pretty-printed).
fn current_json(ui: &AdminUi) -> String {
    let doc = ui.hub.policy();
    if doc.version == 0 {
        return "{}".into();
    }
    serde_json::from_str::<serde_json::Value>(&doc.json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| doc.json.clone())
}

async fn policy(State(ui): Ui, authed: Authed) -> Response {
    let version = ui.hub.policy().version;
    render(
        &ui,
        StatusCode::OK,
        "policy.html",
        minijinja::context! { csrf => authed.csrf, page => "policy", version, json => current_json(&ui) },
    )
}

#[derive(Deserialize)]
struct PolicyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    json: String,
}

async fn set_policy(State(ui): Ui, authed: Authed, Form(form): Form<PolicyForm>) -> Response {
    if !csrf_matches(&authed.csrf, &form.csrf) {
        return forbidden(&ui, &authed.csrf);
    }
    let current = ui.hub.policy();
    let page = |status, error: String, saved: String, warnings: Vec<String>, change: String| {
        let version = ui.hub.policy().version;
        render(
            &ui,
            status,
            "policy.html",
            minijinja::context! {
                csrf => &authed.csrf, page => "policy", version, json => &form.json,
                error, saved, warnings, change,
            },
        )
    };
    // The same checks as `policy set`: parse and validate, lint against the mesh's nodes,
    // show the change; then the same Hub call as the admin RPC stores and audits it.
    let policy = match policy_review::parse(form.json.as_bytes()) {
        Ok(policy) => policy,
        Err(e) => {
            let error = format!("Invalid policy, nothing was saved: {e}");
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                error,
                String::new(),
                Vec::new(),
                String::new(),
            );
        }
    };
    let names = node_names(&ui);
    let warnings: Vec<String> = policy_review::warnings(&policy, &names)
        .iter()
        .map(ToString::to_string)
        .collect();
    let before = match current.version {
        0 => None,
        _ => policy_review::parse(current.json.as_bytes()).ok(),
    };
    let change = policy_review::diff(before.as_ref(), &policy);
    let summary = policy_review::render("the edited policy", current.version, &change, &names);
    if change.unchanged && current.version > 0 {
        let saved = format!("No change: version {} kept.", current.version);
        return page(StatusCode::OK, String::new(), saved, warnings, summary);
    }
    let json = match serde_json::to_string(&policy) {
        Ok(json) => json,
        Err(e) => return internal(&e),
    };
    match ui.hub.set_policy(UnixTime::now(), Caller::AdminUi, &json) {
        Ok(record) => {
            tracing::info!(version = record.version, "policy set (admin UI)");
            let saved = format!(
                "Policy version {} saved and sent to the nodes.",
                record.version
            );
            page(StatusCode::OK, String::new(), saved, warnings, summary)
        }
        Err(e @ crate::Error::InvalidPolicy(_)) => page(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Invalid policy, nothing was saved: {e}"),
            String::new(),
            warnings,
            String::new(),
        ),
        Err(e) => internal(&e),
    }
}

/// `/audit?before=N&limit=L`: the page of the `L` entries before index `N` (the newest
/// without `before`; `L` defaults to 500, at most 2000).
#[derive(Deserialize)]
struct AuditQuery {
    before: Option<u64>,
    limit: Option<usize>,
}

async fn audit(
    State(ui): Ui,
    authed: Authed,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Response {
    let bad_request = |message: String| {
        render(
            &ui,
            StatusCode::BAD_REQUEST,
            "message.html",
            minijinja::context! { csrf => authed.csrf.clone(), heading => "Bad page", message },
        )
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => {
            return bad_request(format!(
                "{e}: `before` and `limit` are entry counts; open /audit for the newest entries."
            ));
        }
    };
    let limit = query.limit.unwrap_or(0);
    let view = match views::audit(&ui.hub, query.before, limit) {
        Ok(view) => view,
        Err(e @ crate::Error::AuditCursor(_)) => {
            return bad_request(format!("{e} (open /audit for the newest entries)."));
        }
        Err(e) => return internal(&e),
    };
    let (verified, head, problem) = match view.verified {
        Ok(head) => (true, head, String::new()),
        Err(problem) => (false, String::new(), problem),
    };
    // Links keep an explicit page size; the default one stays out of the address.
    let size = query
        .limit
        .map(|l| format!("limit={}", audit_page::limit(l)));
    let link = |before: Option<u64>| {
        let params: Vec<String> = before
            .map(|b| format!("before={b}"))
            .into_iter()
            .chain(size.clone())
            .collect();
        if params.is_empty() {
            "/audit".to_owned()
        } else {
            format!("/audit?{}", params.join("&"))
        }
    };
    let older = view.older.map(|b| link(Some(b)));
    let newer = view.newer.map(|n| match n {
        Newer::Newest => link(None),
        Newer::Before(b) => link(Some(b)),
    });
    let (first, last) = match (view.rows.last(), view.rows.first()) {
        (Some(oldest), Some(newest)) => (oldest.index, newest.index),
        _ => (0, 0),
    };
    render(
        &ui,
        StatusCode::OK,
        "audit.html",
        minijinja::context! {
            csrf => authed.csrf, page => "audit", verified, head, problem,
            count => view.count, shown => view.rows.len(), entries => view.rows,
            first, last, older, newer,
        },
    )
}
