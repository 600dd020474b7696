//! Console sign-in through a real OpenID provider: the certified `oidc-provider` package under
//! Node (`tests/oidc/`, installed by `.ci/run` into `/opt/wardhook-test-node/oidc`, or wherever
//! `WARDHOOK_TEST_OIDC_DIR` points), started on loopback over TLS with a certificate from its
//! own CA, which the console trusts through `[admin.oidc] ca_file`. The browser signs in on the
//! provider's real login page; on both backends: a mapped user lands on the console with the
//! mapped role (an auditor cannot retry), signs out, signs in again and is signed out after the
//! idle time, and the audit trail names `oidc:<user>`; a user whose groups map to no role is
//! refused; a `state` that is not the browser's is refused; an ID token that has already
//! expired (the provider's clock set back) is refused. A flood of sign-in starts discovers the
//! provider once (the provider counts the discovery documents it serves), and against an
//! unreachable provider makes one attempt, then none until the back-off has passed. Refused
//! callbacks count as failed sign-ins of their address (a user refused for having no role does
//! not), and a refused address gets "too many" on the start, the callback and the token sign-in
//! alike, without a request to the provider. Without Node
//! or the package the tests say so and pass — except under `CI`, where that is a failure.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use wiremock::MockServer;

use crate::admin::{admin_url, audit_rows, console_client, console_options, ConsoleApp, Db};
use crate::browser::Browser;
use crate::helpers::*;
use crate::postgres::PgTestDb;

const DEFAULT_DIR: &str = "/opt/wardhook-test-node/oidc";
const CLIENT_ID: &str = "wardhook-console";
const CLIENT_SECRET: &str = "a-test-client-secret-of-some-length";

/// Where `oidc-provider` is installed; `None` (a skip, or a failure under CI) without it.
fn provider_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var("WARDHOOK_TEST_OIDC_DIR").unwrap_or(DEFAULT_DIR.into()));
    let node = Command::new("node").arg("--version").output().is_ok();
    if node
        && dir
            .join("node_modules/oidc-provider/package.json")
            .is_file()
    {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "node or oidc-provider is missing at {}; .ci/run installs it with npm ci",
        dir.display()
    );
    eprintln!(
        "SKIPPED: node or oidc-provider is not installed at {} (npm ci --prefix <dir> with \
         tests/oidc/package*.json); the OpenID Connect sign-in tests did not run",
        dir.display()
    );
    None
}

/// The provider process, killed when dropped.
struct Provider {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
    ca_file: PathBuf,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Provider {
    /// Start the provider for a console on `admin_port`; its clock shifted by `offset_secs`.
    fn start(install: &Path, admin_port: u16, offset_secs: i64) -> Self {
        // ES modules resolve packages from the script's own folder: the script runs from the
        // installation, copied there under a name of its own (no other test's half-written file).
        let script = install.join(format!("provider-{}-{admin_port}.mjs", std::process::id()));
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc/provider.mjs"),
            &script,
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = wardhook::certs::DevCa::generate().unwrap();
        let cert = ca.issue_server(&["localhost"], 2).unwrap();
        let ca_file = dir.path().join("provider-ca.crt");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), &cert.cert_pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), &cert.key_pem).unwrap();
        let mut child = Command::new("node")
            .arg(&script)
            .env("OIDC_PORT", "0")
            .env("OIDC_CERT", dir.path().join("cert.pem"))
            .env("OIDC_KEY", dir.path().join("key.pem"))
            .env("OIDC_CLIENT_ID", CLIENT_ID)
            .env("OIDC_CLIENT_SECRET", CLIENT_SECRET)
            .env(
                "OIDC_REDIRECT_URI",
                format!("https://localhost:{admin_port}/login/oidc/callback"),
            )
            .env(
                "OIDC_ACCOUNTS",
                r#"{"carol": ["staff", "wardhook-auditors"], "dave": ["front-desk"]}"#,
            )
            .env("OIDC_CLOCK_OFFSET_SECS", offset_secs.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        while !line.starts_with("listening ") {
            line.clear();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the OpenID provider exited before listening"
            );
        }
        let port = line.trim()["listening ".len()..].parse().unwrap();
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let _ = std::fs::remove_file(&script);
        Self {
            child,
            port,
            _dir: dir,
            ca_file,
        }
    }
}

impl Provider {
    /// How many discovery documents the provider has served so far.
    async fn discoveries(&self) -> u64 {
        let ca = std::fs::read(&self.ca_file).unwrap();
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let url = format!("https://localhost:{}/test/discoveries", self.port);
        let text = client.get(url).send().await.unwrap().text().await.unwrap();
        text.trim().parse().expect("a count")
    }
}

/// `GET path` on the console: the status and the page.
async fn get_page(client: &reqwest::Client, app: &ConsoleApp, path: &str) -> (u16, String) {
    let res = client.get(admin_url(app, path)).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// `GET /login/oidc` `n` times at once, then `n / 4` times one after another; the statuses.
async fn start_sign_ins(app: &ConsoleApp, n: usize) -> Vec<u16> {
    let client = console_client(app);
    let url = admin_url(app, "/login/oidc");
    let at_once = (0..n).map(|_| {
        let (client, url) = (client.clone(), url.clone());
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    });
    let mut statuses = futures_util::future::join_all(at_once).await;
    for _ in 0..n / 4 {
        statuses.push(client.get(&url).send().await.unwrap().status().as_u16());
    }
    statuses
}

/// A console on `db` signing in through a provider whose clock is `offset_secs` off; `None`
/// when the provider or PostgreSQL is not available (skips).
async fn console_with_provider(
    db: Db,
    offset_secs: i64,
    idle: &str,
) -> Option<(ConsoleApp, Provider, MockServer)> {
    let install = provider_dir()?;
    let admin_port = free_port();
    let provider = Provider::start(&install, admin_port, offset_secs);
    let crm = MockServer::start().await;
    let admin = format!(
        r#"idle_timeout = "{idle}"

[admin.oidc]
issuer = "https://localhost:{p}"
client_id = "{CLIENT_ID}"
client_secret = "file:oidc.secret"
redirect_url = "https://localhost:{admin_port}/login/oidc/callback"
ca_file = "{ca}"
label = "Clinic account"
roles = [
  {{ group = "wardhook-admins", role = "admin" }},
  {{ group = "wardhook-auditors", role = "auditor" }},
]
"#,
        p = provider.port,
        ca = provider.ca_file.display(),
    );
    let opts = console_options("demo", "crm", &crm.uri(), &admin);
    let (fixture, pg) = match db {
        Db::Sqlite => (write_fixture(&opts), None),
        Db::Postgres => {
            let pg = PgTestDb::create().await?;
            (pg.fixture("node-a", opts, None), Some(pg))
        }
    };
    std::fs::write(fixture.dir.path().join("oidc.secret"), CLIENT_SECRET).unwrap();
    let text = std::fs::read_to_string(&fixture.config_path).unwrap();
    let text = text.replacen(
        "[admin]\nlisten = \"127.0.0.1:0\"",
        &format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\""),
        1,
    );
    std::fs::write(&fixture.config_path, text).unwrap();
    let app = spawn_from_fixture(fixture).await;
    assert_eq!(app.admin_port, admin_port);
    Some((ConsoleApp { app, pg }, provider, crm))
}

/// Click the sign-in button and sign in as `login` on the provider's own pages (its login form,
/// then its consent page when it asks), until the browser is back at the console.
async fn sign_in_at_provider(b: &Browser, app: &ConsoleApp, login: &str) -> String {
    b.goto(&admin_url(app, "/login")).await;
    b.click("#sign-in-oidc").await;
    let page = b.wait_for("name=\"login\"").await;
    assert!(page.contains("Sign-in"), "the provider's login page");
    b.type_into("input[name=\"login\"]", login).await;
    b.type_into("input[name=\"password\"]", "any").await;
    b.click("button[type=\"submit\"]").await;
    back_at_console(b, app).await
}

/// Confirm the provider's consent page if it shows, then wait for the console's answer.
async fn back_at_console(b: &Browser, app: &ConsoleApp) -> String {
    let console = format!("https://localhost:{}/", app.admin_port);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let url = b.url().await;
        let page = b.source().await;
        if url.starts_with(&console)
            && (page.contains("<h1>Overview</h1>") || page.contains("class=\"notice bad\""))
        {
            return page;
        }
        if url.starts_with(&console) && page.contains("id=\"continue\"") {
            b.click("#continue").await;
        }
        if !url.starts_with(&console) && page.contains("name=\"prompt\" value=\"consent\"") {
            b.click("button[type=\"submit\"]").await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never came back to the console: {url} {page}"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn detail(row: &(String, String, String)) -> Value {
    serde_json::from_str(&row.2).unwrap()
}

async fn a_mapped_user_signs_in_through_the_provider_on(db: Db) {
    let Some((app, _provider, _crm)) = console_with_provider(db, 0, "4s").await else {
        return;
    };
    let Some(mut b) = Browser::open().await else {
        return;
    };
    b.backend = db;
    b.goto(&admin_url(&app, "/login")).await;
    let page = b.wait_for("id=\"sign-in-oidc\"").await;
    assert!(page.contains("Sign in with Clinic account"), "{page}");
    assert!(page.contains("id=\"token\""), "tokens stay");
    b.axe("sign-in with the identity provider").await;
    b.screenshot("sign-in-oidc").await;

    let page = sign_in_at_provider(&b, &app, "carol").await;
    assert!(
        page.contains("Signed in as <strong>carol</strong> (auditor)"),
        "{page}"
    );
    b.axe("overview after the provider's sign-in").await;
    // The mapped role holds: an auditor may read the audit log and may not retry.
    assert!(
        !page.contains("href=\"/bulk\""),
        "no bulk actions for an auditor"
    );
    b.goto(&admin_url(&app, "/bulk")).await;
    let page = b.wait_for("Not allowed").await;
    assert!(!page.contains("bulk-preview"), "{page}");
    b.goto(&admin_url(&app, "/audit")).await;
    b.wait_for("<h1>Audit").await;
    b.click("header form button").await;
    b.wait_for("Admin token").await;

    // Again (the provider remembers the user), then idle: signed out like a token session.
    b.click("#sign-in-oidc").await;
    let page = back_at_console(&b, &app).await;
    assert!(
        page.contains("Signed in as <strong>carol</strong>"),
        "{page}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    b.goto(&admin_url(&app, "/deliveries")).await;
    assert!(b.url().await.ends_with("/login?expired=1"));
    b.close().await;

    let signed_in = audit_rows(&app, "console_signed_in").await;
    assert_eq!(signed_in.len(), 2, "{signed_in:?}");
    assert_eq!(signed_in[0].0, "oidc:carol");
    assert_eq!(signed_in[0].1, "success");
    assert_eq!(detail(&signed_in[0])["result"], "auditor");
    let text = format!("{signed_in:?}");
    assert!(!text.contains("eyJ"), "no token in the trail: {text}");
    let signed_out = audit_rows(&app, "console_signed_out").await;
    assert_eq!(signed_out.len(), 1);
    assert_eq!(signed_out[0].0, "oidc:carol");
    let denied = audit_rows(&app, "access_denied").await;
    assert!(
        denied
            .iter()
            .any(|r| r.0 == "oidc:carol" && detail(r)["reason"] == "insufficient_role"),
        "the refused bulk page names the user: {denied:?}"
    );

    // A user whose groups map to no role is refused, with a page and a record.
    let Some(mut b) = Browser::open().await else {
        return;
    };
    b.backend = db;
    let page = sign_in_at_provider(&b, &app, "dave").await;
    assert!(
        page.contains("none of your groups is given a console role"),
        "{page}"
    );
    assert!(!page.contains("Signed in as"));
    b.axe("refused sign-in").await;
    b.goto(&admin_url(&app, "/")).await;
    assert!(b.url().await.ends_with("/login"), "no session");
    b.close().await;
    let denied = audit_rows(&app, "access_denied").await;
    assert!(
        denied.iter().any(|r| r.0 == "oidc:dave"
            && r.1 == "denied"
            && detail(r)["reason"] == "oidc_no_role"),
        "{denied:?}"
    );
    assert!(audit_rows(&app, "console_signed_in")
        .await
        .iter()
        .all(|r| r.0 != "oidc:dave"));

    // A state that is not the one this browser left with is refused.
    let client = console_client(&app);
    let started = client
        .get(admin_url(&app, "/login/oidc"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 303);
    let to_provider = started.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        to_provider.contains("code_challenge_method=S256"),
        "{to_provider}"
    );
    assert!(to_provider.contains("nonce="), "{to_provider}");
    let cookie = set_cookie_pair(&started);
    let refused = client
        .get(admin_url(
            &app,
            "/login/oidc/callback?code=anything&state=not-the-state",
        ))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused
        .headers()
        .get_all("set-cookie")
        .iter()
        .all(|c| !c.to_str().unwrap().starts_with("wardhook_session=")));
    let denied = audit_rows(&app, "access_denied").await;
    assert!(
        denied
            .iter()
            .any(|r| r.0 == "system" && detail(r)["reason"] == "oidc_state_mismatch"),
        "{denied:?}"
    );
}

async fn an_expired_id_token_is_refused_on(db: Db) {
    // The provider's clock is two hours behind: the hour-long ID tokens it issues expired an
    // hour before the console sees them.
    let Some((app, _provider, _crm)) = console_with_provider(db, -7200, "15m").await else {
        return;
    };
    let Some(mut b) = Browser::open().await else {
        return;
    };
    b.backend = db;
    let page = sign_in_at_provider(&b, &app, "carol").await;
    assert!(page.contains("had already expired"), "{page}");
    assert!(!page.contains("Signed in as"));
    b.goto(&admin_url(&app, "/")).await;
    assert!(b.url().await.ends_with("/login"), "no session");
    b.close().await;
    let denied = audit_rows(&app, "access_denied").await;
    assert!(
        denied
            .iter()
            .any(|r| detail(r)["reason"] == "oidc_id_token_expired"),
        "{denied:?}"
    );
    assert!(audit_rows(&app, "console_signed_in").await.is_empty());
}

async fn a_flood_of_sign_in_starts_discovers_the_provider_once_on(db: Db) {
    let Some((app, provider, _crm)) = console_with_provider(db, 0, "15m").await else {
        return;
    };
    assert_eq!(
        provider.discoveries().await,
        0,
        "nothing discovered before a sign-in"
    );
    let statuses = start_sign_ins(&app, 40).await;
    assert_eq!(statuses.len(), 50);
    assert!(statuses.iter().all(|s| *s == 303), "{statuses:?}");
    assert_eq!(
        provider.discoveries().await,
        1,
        "fifty starts, one discovery"
    );

    // A full sign-in still works: its start uses the kept metadata, its finish discovers afresh.
    let Some(mut b) = Browser::open().await else {
        return;
    };
    b.backend = db;
    let page = sign_in_at_provider(&b, &app, "carol").await;
    assert!(
        page.contains("Signed in as <strong>carol</strong>"),
        "{page}"
    );
    b.close().await;
    assert_eq!(
        provider.discoveries().await,
        2,
        "the finish discovered once"
    );
}

async fn an_unreachable_provider_is_tried_once_then_left_alone_for_a_while_on(db: Db) {
    // The provider's address accepts connections and closes them at once: every discovery
    // fails, and each attempt is one accepted connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(stream);
        }
    });
    let crm = MockServer::start().await;
    let admin = format!(
        r#"[admin.oidc]
issuer = "https://localhost:{port}"
client_id = "{CLIENT_ID}"
client_secret = "file:demo.secret"
redirect_url = "https://localhost:9443/login/oidc/callback"
roles = [{{ group = "wardhook-admins", role = "admin" }}]
"#
    );
    let opts = console_options("demo", "crm", &crm.uri(), &admin);
    let Some(app) = crate::admin::console_app_with(db, opts).await else {
        return;
    };
    let attempts_now = || attempts.load(std::sync::atomic::Ordering::SeqCst);
    let statuses = start_sign_ins(&app, 40).await;
    assert!(statuses.iter().all(|s| *s == 502), "{statuses:?}");
    assert_eq!(attempts_now(), 1, "one attempt for fifty starts");
    let (status, page) = get_page(&console_client(&app), &app, "/login/oidc").await;
    assert_eq!(status, 502);
    assert!(page.contains("cannot be reached"), "{page}");
    assert_eq!(attempts_now(), 1, "none within the back-off");
    tokio::time::sleep(wardhook::admin::oidc::DISCOVERY_BACKOFF + Duration::from_millis(500)).await;
    let statuses = start_sign_ins(&app, 8).await;
    assert!(statuses.iter().all(|s| *s == 502), "{statuses:?}");
    assert_eq!(attempts_now(), 2, "one more attempt after the back-off");
}

/// Start a sign-in with `client`: the browser binding's cookie and the `state` sent along.
async fn started_sign_in(client: &reqwest::Client, app: &ConsoleApp) -> (String, String) {
    let started = client
        .get(admin_url(app, "/login/oidc"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 303);
    let location = url::Url::parse(started.headers()["location"].to_str().unwrap()).unwrap();
    let state = location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .expect("a state");
    (set_cookie_pair(&started), state)
}

/// `GET /login/oidc/callback?<query>` with `cookie`, if any: the status and the page.
async fn callback(
    client: &reqwest::Client,
    app: &ConsoleApp,
    cookie: Option<&str>,
    query: &str,
) -> (u16, String) {
    let mut req = client.get(admin_url(app, &format!("/login/oidc/callback?{query}")));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn refused_callbacks_count_as_failed_sign_ins_on(db: Db) {
    use wardhook::admin::auth::MAX_LOGIN_FAILURES;
    let Some((app, provider, _crm)) = console_with_provider(db, 0, "15m").await else {
        return;
    };
    let client = console_client(&app);
    // Refused callbacks, one short of the limit: no sign-in pending in this browser, a wrong
    // state, the provider's refusal.
    let (cookie, _) = started_sign_in(&client, &app).await;
    let refusals = [
        (None, "code=made-up&state=made-up"),
        (Some(cookie.as_str()), "code=made-up&state=not-the-state"),
        (None, "error=access_denied&state=x"),
        (None, "state=x"),
    ];
    assert_eq!(refusals.len() as u32, MAX_LOGIN_FAILURES - 1);
    for (cookie, query) in refusals {
        let (status, page) = callback(&client, &app, cookie, query).await;
        assert_eq!(status, 401, "{query}: {page}");
    }
    // A user the provider signed in whose groups map to no role is refused, not counted: the
    // next made-up callback is still only the limit's last failure.
    let Some(mut b) = Browser::open().await else {
        return;
    };
    b.backend = db;
    let page = sign_in_at_provider(&b, &app, "dave").await;
    assert!(page.contains("none of your groups"), "{page}");
    b.close().await;
    let (pending, state) = started_sign_in(&client, &app).await;
    let (status, _) = callback(&client, &app, None, "code=made-up&state=made-up").await;
    assert_eq!(status, 401, "dave's refusal was not counted");

    // Now the address is refused for a while: on the start, on the callback (even one that
    // carries a genuine pending sign-in and its state, which would otherwise reach the
    // provider) and on the token sign-in alike, with no request to the provider.
    let discoveries = provider.discoveries().await;
    let (status, page) = get_page(&client, &app, "/login/oidc").await;
    assert_eq!(status, 429);
    assert!(
        page.contains("Too many failed sign-ins. Try again in"),
        "{page}"
    );
    let query = format!("code=x&state={state}");
    let (status, page) = callback(&client, &app, Some(&pending), &query).await;
    assert_eq!(
        (status, page.contains("Too many failed sign-ins")),
        (429, true)
    );
    let token_form = client
        .post(admin_url(&app, "/login"))
        .form(&[("token", "wardhook_tk000000000000_nothing")])
        .send()
        .await
        .unwrap();
    assert_eq!(token_form.status(), 429);
    assert!(token_form.headers().contains_key("retry-after"));
    let page = token_form.text().await.unwrap();
    assert!(
        page.contains("Too many failed sign-ins. Try again in"),
        "{page}"
    );
    assert_eq!(
        provider.discoveries().await,
        discoveries,
        "nothing asked of the provider"
    );
    let denied = audit_rows(&app, "access_denied").await;
    for reason in [
        "oidc_not_pending",
        "oidc_state_mismatch",
        "oidc_provider_refused",
        "oidc_no_role",
    ] {
        assert!(
            denied.iter().any(|r| detail(r)["reason"] == reason),
            "{reason}: {denied:?}"
        );
    }
}

crate::on_both_backends! {
    refused_callbacks_count_as_failed_sign_ins_on =>
        refused_callbacks_count_as_failed_sign_ins,
        refused_callbacks_count_as_failed_sign_ins_on_postgres;
    a_flood_of_sign_in_starts_discovers_the_provider_once_on =>
        a_flood_of_sign_in_starts_discovers_the_provider_once,
        a_flood_of_sign_in_starts_discovers_the_provider_once_on_postgres;
    an_unreachable_provider_is_tried_once_then_left_alone_for_a_while_on =>
        an_unreachable_provider_is_tried_once_then_left_alone_for_a_while,
        an_unreachable_provider_is_tried_once_then_left_alone_for_a_while_on_postgres;
    a_mapped_user_signs_in_through_the_provider_on =>
        a_mapped_user_signs_in_through_the_provider,
        a_mapped_user_signs_in_through_the_provider_on_postgres;
    an_expired_id_token_is_refused_on =>
        an_expired_id_token_is_refused, an_expired_id_token_is_refused_on_postgres;
}
