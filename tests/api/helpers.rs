//! `spawn_app()` and friends: a real wardhook on an ephemeral loopback port with a generated
//! certificate, a temp folder for its data, and clients that trust it.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use wardhook::app::Application;
use wardhook::certs::DevCa;
use wardhook::config::Config;
use wardhook::crypto::MasterKey;

/// The demo source's signing secret in every spawned app.
pub const DEMO_SECRET: &str = "test_secret_for_the_demo_source";

/// What a test can vary about the spawned app.
#[derive(Debug, Default, Clone)]
pub struct AppOptions {
    /// Extra TOML appended to `[server]`.
    pub server_extra: String,
    /// Replaces the default `[[sources]]` (one `demo` nextphone source).
    pub sources: Option<String>,
    /// Require client certificates issued by the test CA.
    pub mtls: bool,
    /// Serve plain HTTP on loopback instead of TLS.
    pub plain_http: bool,
    /// Extra top-level TOML appended at the end (e.g. `[log]`, `[[handlers]]`).
    pub extra: String,
    /// Extra keys for `[admin]` (whose `listen` is always port 0 on loopback).
    pub admin: String,
    /// Extra TOML appended to `[storage]` (e.g. `backend = "postgres"` and its section).
    pub storage: String,
}

/// A running app.
pub struct TestApp {
    pub port: u16,
    /// The admin console's port (API, dashboard, /metrics).
    pub admin_port: u16,
    pub dir: TempDir,
    pub ca: DevCa,
    pub ca_pem: String,
    pub config_path: PathBuf,
    pub reloader: wardhook::app::Reloader,
    pub dispatcher: std::sync::Arc<wardhook::dispatch::worker::Dispatcher>,
    handle: actix_web::dev::ServerHandle,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp").field("port", &self.port).finish()
    }
}

/// A temp folder with certificates, a master key and a demo secret, and a config naming them.
pub struct Fixture {
    pub dir: TempDir,
    pub ca: DevCa,
    pub config_path: PathBuf,
}

pub fn write_fixture(opts: &AppOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = DevCa::generate().unwrap();
    let server = ca
        .issue_server(&["localhost", "127.0.0.1", "::1"], 30)
        .unwrap();
    std::fs::write(d.join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(d.join("server.crt"), &server.cert_pem).unwrap();
    wardhook::certs::write_file(&d.join("server.key"), server.key_pem.as_bytes(), 0o600).unwrap();
    MasterKey::generate_file(&d.join("master.key")).unwrap();
    std::fs::write(d.join("demo.secret"), DEMO_SECRET).unwrap();
    let transport = if opts.plain_http {
        "plain_http = true".to_owned()
    } else if opts.mtls {
        r#"tls = { cert = "server.crt", key = "server.key", client_ca = "ca.crt" }"#.to_owned()
    } else {
        r#"tls = { cert = "server.crt", key = "server.key" }"#.to_owned()
    };
    let sources = opts.sources.clone().unwrap_or_else(|| {
        r#"
[[sources]]
name = "demo"
preset = "nextphone"
secrets = ["file:demo.secret"]
"#
        .to_owned()
    });
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
{transport}
workers = 2
shutdown_timeout_secs = 5
{extra}

[storage]
path = "{d}/data/wardhook.db"
{storage}

[keys]
master_key_file = "master.key"

[audit]
dir = "{d}/data/audit"

[admin]
listen = "127.0.0.1:0"
{admin}
{sources}
{tail}
"#,
        extra = opts.server_extra,
        tail = opts.extra,
        admin = opts.admin,
        storage = opts.storage,
        d = d.display(),
    );
    let config_path = d.join("wardhook.toml");
    std::fs::write(&config_path, text).unwrap();
    Fixture {
        dir,
        ca,
        config_path,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

pub async fn spawn_app_with(opts: AppOptions) -> TestApp {
    spawn_from_fixture(write_fixture(&opts)).await
}

/// Start an app on a fixture the test has adjusted (extra files, edited config).
pub async fn spawn_from_fixture(fixture: Fixture) -> TestApp {
    let Fixture {
        dir,
        ca,
        config_path,
    } = fixture;
    let config = Config::load_with_base(&config_path, dir.path())
        .unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let app = Application::build_with_base(config, dir.path())
        .await
        .unwrap();
    let port = app.port();
    let admin_port = app.admin_port().unwrap_or(0);
    let handle = app.handle();
    let reloader = app.reloader();
    let dispatcher = app.dispatcher();
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        port,
        admin_port,
        ca_pem: ca.cert_pem(),
        ca,
        dir,
        config_path,
        reloader,
        dispatcher,
        handle,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.port)
    }

    /// A reqwest client that trusts the test CA.
    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    }

    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop accepting; the runtime ends with the test anyway.
        drop(self.handle.stop(false));
    }
}

/// HMAC-SHA256 hex, as NextPhone signs.
pub fn nextphone_signature(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A rustls client configuration trusting `ca_pem`, limited to `versions`.
pub fn client_tls_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
    client_cert: Option<(&str, &str)>,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// Open a TLS connection to the app on loopback.
pub async fn tls_connect(
    port: u16,
    config: rustls::ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// Path of the built `wardhook` binary.
pub fn wardhook_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_wardhook"))
}

/// Start the real binary on the fixture (whose config must log JSON) and return it with the
/// port it bound.
/// A `wardhook serve` child process, killed when dropped so a failing test leaves no server
/// running behind it.
pub struct ServerProcess(Child);

impl ServerProcess {
    /// Spawn `command` (a `wardhook serve …`), killed when the value is dropped.
    pub fn spawn(command: &mut Command) -> Self {
        Self(command.spawn().unwrap())
    }
}

impl std::ops::Deref for ServerProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ServerProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

pub fn start_server(fixture: &Fixture) -> (ServerProcess, u16) {
    let mut serve = Command::new(wardhook_bin());
    serve.args(["serve", "--config"]).arg(&fixture.config_path);
    start_server_command(fixture, serve)
}

/// Like [`start_server`], started by `serve` (e.g. a shell that sets a umask, then execs).
pub fn start_server_command(fixture: &Fixture, serve: Command) -> (ServerProcess, u16) {
    let (child, ports) = spawn_logging_ports(fixture, serve);
    loop {
        if let ("port", port) = ports.recv_timeout(Duration::from_secs(20)).unwrap() {
            return (child, port);
        }
    }
}

/// Like [`start_server`], for a config whose admin console is enabled: also returns the port
/// the console bound.
pub fn start_server_with_console(fixture: &Fixture) -> (ServerProcess, u16, u16) {
    let mut serve = Command::new(wardhook_bin());
    serve.args(["serve", "--config"]).arg(&fixture.config_path);
    let (child, ports) = spawn_logging_ports(fixture, serve);
    let (mut port, mut admin_port) = (None, None);
    while port.is_none() || admin_port.is_none() {
        match ports.recv_timeout(Duration::from_secs(20)).unwrap() {
            ("port", p) => port = Some(p),
            (_, p) => admin_port = Some(p),
        }
    }
    (child, port.unwrap(), admin_port.unwrap())
}

/// Spawn `serve` and report each port its JSON log names (`port`, `admin_port`).
fn spawn_logging_ports(
    fixture: &Fixture,
    mut serve: Command,
) -> (
    ServerProcess,
    std::sync::mpsc::Receiver<(&'static str, u16)>,
) {
    let mut child = serve
        .current_dir(fixture.dir.path())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                for key in ["port", "admin_port"] {
                    if let Some(port) = v["fields"][key].as_u64() {
                        let _ = port_tx.send((key, port as u16));
                    }
                }
            }
        }
    });
    (ServerProcess(child), port_rx)
}

/// Post `body` to the `demo` source signed with [`DEMO_SECRET`]; assert 200 and return the
/// delivery id.
pub async fn deliver(app: &TestApp, body: &str) -> String {
    let res = app
        .client()
        .post(app.url("/hooks/demo"))
        .header(
            "X-NextPhone-Signature",
            nextphone_signature(DEMO_SECRET, body.as_bytes()),
        )
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    v["delivery_id"].as_str().unwrap().to_owned()
}

/// Post `body` to the `demo` source on `port`, signed with [`DEMO_SECRET`], whatever the
/// answer (load tests count what they get).
pub async fn post_demo(
    http: &reqwest::Client,
    port: u16,
    body: String,
) -> reqwest::Result<reqwest::Response> {
    let signature = nextphone_signature(DEMO_SECRET, body.as_bytes());
    http.post(format!("https://localhost:{port}/hooks/demo"))
        .header("X-NextPhone-Signature", signature)
        .body(body)
        .send()
        .await
}

/// Run `wardhook <args> --config <fixture's config>` in the fixture's folder; its stdout. Fails
/// the test, with the command's stderr, if it fails.
pub fn fixture_cli(fixture: &Fixture, args: &[&str]) -> String {
    let out = cli_in(&fixture.config_path, fixture.dir.path(), args);
    String::from_utf8(out.stdout).unwrap()
}

/// Run `command` to its end; its output. Fails the test, with the command's stderr, if it
/// fails.
pub fn output_of_success(command: &mut Command) -> std::process::Output {
    let out = command.output().expect("the command runs");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run `wardhook <args> --config <config>` in `dir`; its output. Fails the test, with the
/// command's stderr, if it fails.
pub fn cli_in(config: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    let out = Command::new(wardhook_bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `name=value` part of a response's (first) `Set-Cookie` header, to send back as `Cookie`.
pub fn set_cookie_pair(res: &reqwest::Response) -> String {
    res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// A destination (a CRM) that answers `first` to its first `times` POSTs and `then` to every
/// later one: a handler failing, then recovering.
pub async fn destination_answering(first: u16, times: u64, then: u16) -> wiremock::MockServer {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(first))
        .up_to_n_times(times)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(then))
        .mount(&server)
        .await;
    server
}

/// A free loopback port: bound and released at once, for a server (or a fixture's redirect
/// URL) that must know its port before it starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A new console token made with `wardhook tokens create` against the fixture's config: the
/// token text (printed once, first line).
pub fn fixture_token(fixture: &Fixture, name: &str, role: &str) -> String {
    fixture_cli(
        fixture,
        &["tokens", "create", "--name", name, "--role", role],
    )
    .lines()
    .next()
    .unwrap()
    .trim()
    .to_owned()
}

/// `wardhook audit verify --config <config>` run in `cwd` passes (its output is the failure's).
pub fn assert_audit_verifies(config: &std::path::Path, cwd: &std::path::Path) {
    let verified = std::process::Command::new(wardhook_bin())
        .args(["audit", "verify", "--config"])
        .arg(config)
        .current_dir(cwd)
        .output()
        .expect("run audit verify");
    assert!(
        verified.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
}

/// `<stem>.crt` and `<stem>.key` (`0600`, as the server requires of key files) of `issued`.
pub fn write_cert_and_key(stem: &std::path::Path, issued: &wardhook::certs::IssuedCert) {
    std::fs::write(stem.with_extension("crt"), &issued.cert_pem).expect("write the certificate");
    wardhook::certs::write_file(
        &stem.with_extension("key"),
        issued.key_pem.as_bytes(),
        0o600,
    )
    .expect("write the key");
}
