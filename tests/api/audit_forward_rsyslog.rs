//! Debian's rsyslog as a TLS syslog collector on loopback, for the audit forwarding tests:
//! its own config file, pid file, work folder and output file in a temp folder, `imtcp` with
//! the GnuTLS stream driver (octet-counted RFC 5425 framing is what imtcp reads), `omfile`
//! writing each message's raw text on a line. Started in the foreground (`-n`) on an
//! unprivileged port, stopped with SIGTERM (rsyslog writes what it received, then exits).
#![allow(clippy::unwrap_used)]

use std::io::ErrorKind;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::free_port;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// Whether rsyslogd and its GnuTLS driver are installed. Under CI a missing one is a failure
/// (`.ci/run` installs `rsyslog` and `rsyslog-gnutls`); elsewhere the test says it skipped.
pub fn available() -> bool {
    let driver = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .any(|d| Path::new(d).join("rsyslog/lmnsd_gtls.so").exists());
    let ok = Path::new(RSYSLOGD).exists() && driver;
    if !ok {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "the audit forwarding tests need rsyslog and rsyslog-gnutls (apt-get install rsyslog rsyslog-gnutls)"
        );
        eprintln!("SKIPPED: rsyslogd with the gtls driver is not installed");
    }
    ok
}

/// Whether rsyslog's PostgreSQL output (`ompgsql`, package `rsyslog-pgsql`) is installed, for
/// [`Rsyslog::store_in_postgres`]. Under CI a missing one is a failure (`.ci/run` installs it).
pub fn pgsql_available() -> bool {
    let ok = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib",
    ]
    .iter()
    .any(|d| Path::new(d).join("rsyslog/ompgsql.so").exists());
    if !ok {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "this audit forwarding test needs rsyslog-pgsql (apt-get install rsyslog-pgsql)"
        );
        eprintln!("SKIPPED: rsyslog's ompgsql module is not installed");
    }
    ok
}

/// One rsyslogd listening with TLS on 127.0.0.1.
pub struct Rsyslog {
    child: Option<Child>,
    dir: PathBuf,
    /// Its TCP port (kept across restarts).
    pub port: u16,
}

impl Rsyslog {
    /// Write the config into `dir` with the server certificate and key (PEM) and the CA that
    /// issued them; not started yet.
    pub fn new(dir: &Path, cert_pem: &str, key_pem: &str, ca_pem: &str) -> Self {
        std::fs::create_dir_all(dir.join("work")).unwrap();
        std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
        std::fs::write(dir.join("server.crt"), cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), key_pem).unwrap();
        let port = free_port();
        let d = dir.display();
        let conf = format!(
            r#"global(
  workDirectory="{d}/work"
  maxMessageSize="64k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="{d}/ca.crt"
  defaultNetstreamDriverCertFile="{d}/server.crt"
  defaultNetstreamDriverKeyFile="{d}/server.key"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{port}")
template(name="raw" type="string" string="%rawmsg%\n")
action(type="omfile" file="{d}/out.log" template="raw")
"#
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).unwrap();
        Self {
            child: None,
            dir: dir.to_owned(),
            port,
        }
    }

    /// Make the collector require a client certificate that chains to its CA and names
    /// `permitted_peer` (imtcp `x509/name`: the subjectAltName DNS names, else the common
    /// name). Call before [`Rsyslog::start`].
    pub fn require_client_certificate(&self, permitted_peer: &str) {
        let path = self.dir.join("rsyslog.conf");
        let conf = std::fs::read_to_string(&path).unwrap();
        let anon = r#"streamDriver.authMode="anon""#;
        assert!(conf.contains(anon));
        let conf = conf.replace(
            anon,
            &format!(r#"streamDriver.authMode="x509/name" permittedPeer=["{permitted_peer}"]"#),
        );
        std::fs::write(path, conf).unwrap();
    }

    /// Also store every message in the PostgreSQL database at `conninfo` with rsyslog's
    /// `ompgsql`, one row per record keyed by the `node` and `seq` parameters the message
    /// carries: a repeat of a record the collector already stored is discarded
    /// (`ON CONFLICT DO NOTHING`), so the table holds what the collector wrote, each record
    /// once, rows numbered in the order rsyslog wrote them. Needs [`COLLECTED_TABLE`] created
    /// first. Call before [`Rsyslog::start`].
    pub fn store_in_postgres(&self, conninfo: &str) {
        let path = self.dir.join("rsyslog.conf");
        let mut conf = std::fs::read_to_string(&path).unwrap();
        conf.push_str(&format!(
            r#"module(load="ompgsql")
template(name="collected-row" type="list" option.stdsql="on") {{
  constant(value="INSERT INTO collected (node, seq, msg) VALUES ('")
  property(name="rawmsg" regex.expression=" node=.([-A-Za-z0-9_.]*)" regex.type="ERE" regex.submatch="1" regex.nomatchmode="BLANK")
  constant(value="', '")
  property(name="rawmsg" regex.expression=" seq=.([0-9]+)" regex.type="ERE" regex.submatch="1" regex.nomatchmode="ZERO")
  constant(value="', '")
  property(name="rawmsg")
  constant(value="') ON CONFLICT (node, seq) DO NOTHING")
}}
action(type="ompgsql" conninfo="{conninfo}" template="collected-row")
"#
        ));
        std::fs::write(path, conf).unwrap();
    }

    /// What rsyslogd wrote on its stderr so far (its own error messages).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
    }

    /// Start rsyslogd and wait until it accepts connections.
    pub fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("rsyslogd.stderr"))
            .unwrap();
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            match TcpStream::connect(("127.0.0.1", self.port)) {
                Ok(_) => return,
                Err(e) if Instant::now() > deadline => panic!(
                    "rsyslogd did not listen on {}: {e}; its stderr: {}",
                    self.port,
                    std::fs::read_to_string(self.dir.join("rsyslogd.stderr")).unwrap_or_default()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// SIGTERM and wait: rsyslog writes what it has received, then exits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message written so far, one per line.
    pub fn messages(&self) -> Vec<String> {
        match std::fs::read_to_string(self.dir.join("out.log")) {
            Ok(text) => text.lines().map(str::to_owned).collect(),
            Err(e) if e.kind() == ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read rsyslog output: {e}"),
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The collector's table for [`Rsyslog::store_in_postgres`]: the key is the record's identity
/// (`node` is empty for SQLite's single chain), `id` the order of writing.
pub const COLLECTED_TABLE: &str = "CREATE TABLE collected (
    id bigserial PRIMARY KEY,
    node text NOT NULL,
    seq bigint NOT NULL,
    msg text NOT NULL,
    UNIQUE (node, seq)
)";

/// The `seq` structured-data parameter of a forwarded message.
pub fn seq_of(message: &str) -> u64 {
    let start = message.find(" seq=\"").expect("seq parameter") + 6;
    let end = start + message[start..].find('"').unwrap();
    message[start..end].parse().unwrap()
}
