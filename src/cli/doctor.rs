//! `wardhook doctor`: checks an installation and says what to fix.
//!
//! The checks read the config file with `toml` directly (only the paths they need), so doctor
//! still runs when the config is otherwise invalid — `wardhook check-config` is the tool for
//! the config's meaning. Each check prints one line, `OK`, `WARN` or `FAIL`, and, unless it is
//! OK, a `fix:` line. Nothing is modified and no secret is printed.
//!
//! | check | FAIL | WARN |
//! | --- | --- | --- |
//! | `keys.master_key_file` | missing, unreadable, group/world-accessible, not 32 bytes of base64 | in the database's folder (a backup of that folder would hold both) |
//! | `server.tls.cert` | unreadable, no certificate, expired, not yet valid | fewer than 30 days left |
//! | `server.tls.key` | missing, world-accessible | group-accessible |
//! | `storage.path` (disk) | under 256 MiB or 2 % free | under 1 GiB or 10 % free |
//! | `storage.path` (database) | `PRAGMA integrity_check` is not `ok`, cannot be opened | not created yet, group/world-accessible |
//! | `audit` | the audit chain, its checkpoints or the JSONL mirror do not verify under the master key | not checked (no key, no database, no audit log yet) |
//! | `backups` | — | a backup named by a `backup_taken` record still exists and holds a period past retention (`--retention`, else the retention the latest `purge` applied) |
//!
//! Relative paths are resolved against the current folder, as `wardhook serve` does: run
//! doctor from the service's working directory (`/var/lib/wardhook` in `deploy/`).

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use zeroize::Zeroizing;

/// Default path of the database when `storage.path` is not set (as in the config module).
const DEFAULT_STORAGE_PATH: &str = "data/wardhook.db";

/// Default `[audit] dir` (as in the config module).
const DEFAULT_AUDIT_DIR: &str = "data/audit";

/// Where systemd puts `LoadCredential=` files for the packaged unit.
const CREDENTIALS_PREFIX: &str = "/run/credentials/";

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// Works now, needs attention soon.
    Warn,
    /// Broken, or wardhook would refuse to start.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, named by its config key (`keys.master_key_file`, …).
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// One line: what was found.
    pub message: String,
    /// One line: what to do about it (absent when OK).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, message: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            message: message.into(),
            fix: None,
        }
    }

    fn warn(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoctorReport {
    /// The checks.
    pub checks: Vec<Check>,
}

impl DoctorReport {
    /// The worst status of any check (`Ok` for an empty report).
    pub fn worst(&self) -> Status {
        self.checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Ok)
    }

    /// True when no check failed (warnings allowed): the exit status should be 0.
    pub fn passed(&self) -> bool {
        self.worst() != Status::Fail
    }

    /// The checks named `name`.
    pub fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Check> + 'a {
        self.checks.iter().filter(move |c| c.name == name)
    }
}

/// Doctor could not write its report.
#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    /// Writing to the output failed.
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// Thresholds; [`Default`] is what `wardhook doctor` uses.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// The time certificates are judged at.
    pub now: DateTime<Utc>,
    /// Warn when a certificate has fewer days left than this.
    pub cert_warn_days: i64,
    /// Warn below this many free bytes on the storage volume…
    pub disk_warn_bytes: u64,
    /// …or below this share free (percent).
    pub disk_warn_percent: u64,
    /// Fail below this many free bytes…
    pub disk_fail_bytes: u64,
    /// …or below this share free (percent).
    pub disk_fail_percent: u64,
    /// Payload retention that backups are judged against; `None`: the retention the latest
    /// `purge` applied (the time of its record minus its cutoff).
    pub retention: Option<chrono::Duration>,
}

impl Default for DoctorOptions {
    fn default() -> Self {
        Self {
            now: Utc::now(),
            cert_warn_days: 30,
            disk_warn_bytes: 1 << 30,
            disk_warn_percent: 10,
            disk_fail_bytes: 256 << 20,
            disk_fail_percent: 2,
            retention: None,
        }
    }
}

/// Run every check for the config at `config_path`, print the report to `out`, return it.
///
/// Map [`DoctorReport::passed`] to the exit status (0 when no check failed).
pub fn run_doctor(config_path: &Path, out: &mut impl Write) -> Result<DoctorReport, DoctorError> {
    run_doctor_with(config_path, &DoctorOptions::default(), out)
}

/// [`run_doctor`] with explicit thresholds and clock.
pub fn run_doctor_with(
    config_path: &Path,
    options: &DoctorOptions,
    out: &mut impl Write,
) -> Result<DoctorReport, DoctorError> {
    let report = DoctorReport {
        checks: collect(config_path, options),
    };
    writeln!(out, "wardhook doctor: {}", config_path.display())?;
    for c in &report.checks {
        writeln!(out, "{:<4}  {:<24} {}", c.status, c.name, c.message)?;
        if let Some(fix) = &c.fix {
            writeln!(out, "      {:<24} fix: {fix}", "")?;
        }
    }
    let count = |s| report.checks.iter().filter(|c| c.status == s).count();
    writeln!(
        out,
        "{} ok, {} warning(s), {} failure(s); the config's meaning is checked by `wardhook check-config`",
        count(Status::Ok),
        count(Status::Warn),
        count(Status::Fail)
    )?;
    Ok(report)
}

/// The paths doctor needs, read leniently from the config file.
#[derive(Debug, Default)]
struct Paths {
    master_key: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    plain_http: bool,
    storage: PathBuf,
    audit_dir: PathBuf,
}

fn read_paths(config_path: &Path) -> Result<Paths, Check> {
    let text = std::fs::read_to_string(config_path).map_err(|e| {
        Check::fail(
            "config",
            format!("cannot read {}: {e}", config_path.display()),
            "pass --config PATH with the file the service uses (/etc/wardhook/wardhook.toml in deploy/)",
        )
    })?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Check::fail(
            "config",
            format!(
                "{} is not valid TOML: {}",
                config_path.display(),
                e.message()
            ),
            "fix the syntax; `wardhook check-config` shows the line",
        )
    })?;
    let get = |section: &str, key: &str| -> Option<PathBuf> {
        table
            .get(section)?
            .get(key)?
            .as_str()
            .map(|s| absolute(Path::new(s)))
    };
    let tls = table.get("server").and_then(|s| s.get("tls"));
    let tls_path =
        |key: &str| -> Option<PathBuf> { tls?.get(key)?.as_str().map(|s| absolute(Path::new(s))) };
    Ok(Paths {
        master_key: get("keys", "master_key_file"),
        tls_cert: tls_path("cert"),
        tls_key: tls_path("key"),
        plain_http: table
            .get("server")
            .and_then(|s| s.get("plain_http"))
            .and_then(toml::Value::as_bool)
            .unwrap_or(false),
        storage: get("storage", "path")
            .unwrap_or_else(|| absolute(Path::new(DEFAULT_STORAGE_PATH))),
        audit_dir: get("audit", "dir").unwrap_or_else(|| absolute(Path::new(DEFAULT_AUDIT_DIR))),
    })
}

/// `path` against the current folder, for messages that name the file actually checked.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

fn collect(config_path: &Path, options: &DoctorOptions) -> Vec<Check> {
    let paths = match read_paths(config_path) {
        Ok(p) => p,
        Err(check) => return vec![check],
    };
    let mut checks = vec![Check::ok(
        "config",
        format!("{} parses as TOML", config_path.display()),
    )];
    let key_checks = check_master_key(&paths);
    let key_usable = key_checks.iter().all(|c| c.status != Status::Fail);
    checks.extend(key_checks);
    checks.extend(check_tls(&paths, options));
    checks.push(check_disk(&paths.storage, options));
    let db_checks = check_database(&paths.storage);
    let db_usable = db_checks.iter().all(|c| c.status == Status::Ok);
    checks.extend(db_checks);
    checks.push(check_audit(&paths, key_usable, db_usable));
    checks.push(check_backups(&paths.storage, options));
    checks.push(check_sender_clocks(&paths.storage));
    checks
}

/// Skew past which a sender's clock is worth fixing before it meets the replay window (300 s
/// by default).
const CLOCK_SKEW_WARN_MS: i64 = 60_000;

fn check_sender_clocks(storage: &Path) -> Check {
    const NAME: &str = "senders' clocks";
    let dir = storage
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(stats) = crate::listener::clock::read(dir) else {
        return Check::ok(
            NAME,
            "no signed timestamps recorded yet (written by the running server every minute)",
        );
    };
    let drifting: Vec<String> = stats
        .iter()
        .filter(|(_, s)| s.max_abs_ms >= CLOCK_SKEW_WARN_MS)
        .map(|(source, s)| {
            format!(
                "{source} up to {} s (latest {} s)",
                s.max_abs_ms / 1000,
                s.last_ms / 1000
            )
        })
        .collect();
    if drifting.is_empty() {
        let worst = stats.values().map(|s| s.max_abs_ms).max().unwrap_or(0);
        Check::ok(
            NAME,
            format!(
                "{} source(s) with signed timestamps; largest skew {} ms",
                stats.len(),
                worst
            ),
        )
    } else {
        Check::warn(
            NAME,
            format!("clock skew seen: {}", drifting.join(", ")),
            "ask the sender to fix its clock (NTP), or check this host's: `timedatectl status`; past the source's tolerance_secs its deliveries are refused as stale",
        )
    }
}

fn credentials_hint(path: &Path) -> &'static str {
    if path.starts_with(CREDENTIALS_PREFIX) {
        " (this path exists only inside the running service: check the LoadCredential= source file, e.g. /etc/wardhook/credentials/, instead)"
    } else {
        ""
    }
}

/// Owner-only: no bits for group or others.
fn mode_open_to_others(mode: u32) -> bool {
    mode & 0o077 != 0
}

fn check_master_key(paths: &Paths) -> Vec<Check> {
    const NAME: &str = "keys.master_key_file";
    let Some(path) = &paths.master_key else {
        return vec![Check::fail(
            NAME,
            "not set in the config",
            "run `wardhook keygen --out PATH` and set keys.master_key_file = \"PATH\"",
        )];
    };
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            return vec![Check::fail(
                NAME,
                format!("{shown}: {e}{}", credentials_hint(path)),
                "restore the key from its custody copy, or for a new installation run `wardhook keygen`",
            )]
        }
    };
    if !meta.is_file() {
        return vec![Check::fail(
            NAME,
            format!("{shown} is not a regular file"),
            "point keys.master_key_file at the key file written by `wardhook keygen`",
        )];
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode_open_to_others(mode) {
        return vec![Check::fail(
            NAME,
            format!("{shown} has mode {mode:04o}: readable beyond its owner; wardhook refuses it"),
            format!("chmod 600 {shown} (and chown it to the service user)"),
        )];
    }
    let mut checks = Vec::new();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let text = Zeroizing::new(text);
            let len = STANDARD
                .decode(text.trim())
                .map(|bytes| Zeroizing::new(bytes).len());
            if len.ok() != Some(32) {
                return vec![Check::fail(
                    NAME,
                    format!("{shown} does not hold 32 bytes of base64"),
                    "restore the key from its custody copy; never edit it by hand",
                )];
            }
        }
        Err(e) => {
            return vec![Check::fail(
                NAME,
                format!("{shown} cannot be read by this user: {e}"),
                "run doctor as the service user (sudo -u wardhook wardhook doctor …) or as root",
            )]
        }
    }
    checks.push(Check::ok(
        NAME,
        format!(
            "{shown}: mode {mode:04o}, owner uid {}, 32-byte key",
            meta.uid()
        ),
    ));
    let db_dir = paths.storage.parent().map(absolute);
    let key_dir = path.parent().map(absolute);
    if let (Some(db_dir), Some(key_dir)) = (db_dir, key_dir) {
        if key_dir.starts_with(&db_dir) {
            checks.push(Check::warn(
                NAME,
                format!(
                    "the key is inside the database's folder {}: a copy of that folder holds both the data and its key",
                    db_dir.display()
                ),
                "keep the master key apart from the data and from its backups (e.g. /etc/wardhook/credentials/ via LoadCredential=)",
            ));
        }
    }
    checks
}

fn check_tls(paths: &Paths, options: &DoctorOptions) -> Vec<Check> {
    const CERT: &str = "server.tls.cert";
    const KEY: &str = "server.tls.key";
    let Some(cert_path) = &paths.tls_cert else {
        return vec![if paths.plain_http {
            Check::ok(
                CERT,
                "not set: server.plain_http = true (TLS ends at a proxy on this host)",
            )
        } else {
            Check::fail(
                CERT,
                "not set in the config",
                "set server.tls = { cert = \"…\", key = \"…\" } to PEM files from the clinic's CA or ACME",
            )
        }];
    };
    let mut checks = vec![check_certificate(cert_path, options)];
    checks.push(match &paths.tls_key {
        None => Check::fail(
            KEY,
            "not set in the config",
            "set server.tls.key to the certificate's private key (PEM)",
        ),
        Some(key) => match std::fs::metadata(key) {
            Err(e) => Check::fail(
                KEY,
                format!("{}: {e}", key.display()),
                "install the private key that belongs to server.tls.cert",
            ),
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o007 != 0 {
                    Check::fail(
                        KEY,
                        format!(
                            "{} has mode {mode:04o}: readable by any user",
                            key.display()
                        ),
                        format!("chmod 600 {} (owner: the service user)", key.display()),
                    )
                } else if mode & 0o070 != 0 {
                    Check::warn(
                        KEY,
                        format!(
                            "{} has mode {mode:04o}: readable by its group",
                            key.display()
                        ),
                        format!(
                            "chmod 600 {} unless the group is only the service user",
                            key.display()
                        ),
                    )
                } else {
                    Check::ok(KEY, format!("{}: mode {mode:04o}", key.display()))
                }
            }
        },
    });
    checks
}

fn check_certificate(path: &Path, options: &DoctorOptions) -> Check {
    const NAME: &str = "server.tls.cert";
    let shown = path.display();
    let pem = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("{shown}: {e}"),
                "install the server certificate (PEM, leaf first, then intermediates)",
            )
        }
    };
    let mut leaf: Option<(String, i64, i64)> = None;
    let mut earliest_chain_expiry: Option<(String, i64)> = None;
    for (i, block) in x509_parser::pem::Pem::iter_from_buffer(&pem).enumerate() {
        let parsed = block.map_err(|e| e.to_string()).and_then(|b| {
            if b.label != "CERTIFICATE" {
                return Ok(None);
            }
            b.parse_x509()
                .map(|c| {
                    Some((
                        c.subject().to_string(),
                        c.validity().not_before.timestamp(),
                        c.validity().not_after.timestamp(),
                    ))
                })
                .map_err(|e| e.to_string())
        });
        match parsed {
            Ok(None) => {}
            Ok(Some(cert)) => {
                if leaf.is_none() {
                    leaf = Some(cert);
                } else if earliest_chain_expiry
                    .as_ref()
                    .is_none_or(|(_, t)| cert.2 < *t)
                {
                    earliest_chain_expiry = Some((cert.0, cert.2));
                }
            }
            Err(e) => {
                return Check::fail(
                    NAME,
                    format!("{shown}: PEM block {} is not a certificate: {e}", i + 1),
                    "replace the file with the PEM certificate chain from the CA",
                )
            }
        }
    }
    let Some((subject, not_before, not_after)) = leaf else {
        return Check::fail(
            NAME,
            format!("{shown} holds no PEM certificate"),
            "install the server certificate (PEM, leaf first, then intermediates)",
        );
    };
    let now = options.now.timestamp();
    let expiry = DateTime::from_timestamp(not_after, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| not_after.to_string());
    let renew = "renew the certificate (ACME client or the clinic's CA), install it, then `systemctl reload wardhook`";
    if now < not_before {
        return Check::fail(
            NAME,
            format!("{subject}: not valid before {not_before} (unix time); is the clock right?"),
            "check the host clock (timedatectl) or the certificate's dates",
        );
    }
    if now > not_after {
        return Check::fail(NAME, format!("{subject}: expired on {expiry}"), renew);
    }
    let days_left = (not_after - now) / 86_400;
    if days_left < options.cert_warn_days {
        return Check::warn(
            NAME,
            format!("{subject}: expires in {days_left} day(s), on {expiry}"),
            renew,
        );
    }
    if let Some((issuer, chain_expiry)) = earliest_chain_expiry {
        let chain_days = (chain_expiry - now) / 86_400;
        if chain_days < options.cert_warn_days {
            return Check::warn(
                NAME,
                format!("chain certificate {issuer} expires in {chain_days} day(s)"),
                "get the current intermediate certificate from the CA and append it to the file",
            );
        }
    }
    Check::ok(
        NAME,
        format!("{subject}: {days_left} days left (until {expiry})"),
    )
}

/// The nearest existing folder at or above `path`'s folder (the database may not exist yet).
fn existing_dir(path: &Path) -> Option<PathBuf> {
    let mut dir = path.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        if d.is_dir() {
            return Some(d);
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    None
}

// `c_ulong` and `fsblkcnt_t` are u64 here but u32 on 32-bit targets: keep the conversions.
#[allow(clippy::useless_conversion)]
fn check_disk(storage: &Path, options: &DoctorOptions) -> Check {
    const NAME: &str = "storage.path (disk)";
    let Some(dir) = existing_dir(storage) else {
        return Check::fail(
            NAME,
            format!("no folder of {} exists", storage.display()),
            "create the data folder (install -d -m 0700 -o wardhook -g wardhook /var/lib/wardhook)",
        );
    };
    let stat = match nix::sys::statvfs::statvfs(&dir) {
        Ok(s) => s,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot stat the file system of {}: {e}", dir.display()),
                "check the mount of the data folder",
            )
        }
    };
    let unit = u64::from(stat.fragment_size());
    let free = u64::from(stat.blocks_available()).saturating_mul(unit);
    let total = u64::from(stat.blocks()).saturating_mul(unit);
    let percent = free.saturating_mul(100).checked_div(total).unwrap_or(0);
    let message = format!(
        "{} free of {} ({percent} %) on the volume of {}",
        human_bytes(free),
        human_bytes(total),
        dir.display()
    );
    let fix = "free space or grow the volume: when storage cannot commit, senders get 503 and retry, but nothing new is stored";
    if free < options.disk_fail_bytes || percent < options.disk_fail_percent {
        Check::fail(NAME, message, fix)
    } else if free < options.disk_warn_bytes || percent < options.disk_warn_percent {
        Check::warn(NAME, message, fix)
    } else {
        Check::ok(NAME, message)
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 10 * 1024 && unit + 1 < UNITS.len() {
        value /= 1024;
        unit += 1;
    }
    format!("{value} {}", UNITS[unit])
}

fn check_database(storage: &Path) -> Vec<Check> {
    const NAME: &str = "storage.path (database)";
    let shown = storage.display();
    let meta = match std::fs::metadata(storage) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return vec![Check::warn(
                NAME,
                format!("{shown} does not exist yet"),
                "it is created by the first `wardhook serve`; if deliveries were expected, check storage.path and the working directory",
            )]
        }
        Err(e) => {
            return vec![Check::fail(
                NAME,
                format!("{shown}: {e}"),
                "run doctor as the service user or as root",
            )]
        }
    };
    let mut checks = Vec::new();
    let mode = meta.permissions().mode() & 0o777;
    if mode_open_to_others(mode) {
        checks.push(Check::warn(
            NAME,
            format!("{shown} has mode {mode:04o}"),
            format!("chmod 600 {shown}; the service's UMask=0077 keeps new files private"),
        ));
    }
    if let Some(dir) = storage.parent() {
        if let Ok(dmeta) = std::fs::metadata(dir) {
            let dmode = dmeta.permissions().mode() & 0o777;
            if mode_open_to_others(dmode) {
                checks.push(Check::warn(
                    NAME,
                    format!("folder {} has mode {dmode:04o}", dir.display()),
                    format!("chmod 700 {}", dir.display()),
                ));
            }
        }
    }
    checks.push(integrity_check(storage));
    checks
}

fn check_audit(paths: &Paths, key_usable: bool, db_usable: bool) -> Check {
    const NAME: &str = "audit";
    let not_checked = |why: &str| {
        Check::warn(
            NAME,
            format!("audit chain not checked: {why}"),
            "fix the checks above, then run doctor again (or `wardhook audit verify`)",
        )
    };
    let Some(key_path) = paths.master_key.as_deref().filter(|_| key_usable) else {
        return not_checked("the master key is not usable");
    };
    if !db_usable {
        return not_checked("the database is missing or not healthy");
    }
    use rusqlite::OpenFlags;
    let conn = match rusqlite::Connection::open_with_flags(
        &paths.storage,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(e) => return not_checked(&e.to_string()),
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    let has_log = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_log'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or(0)
        > 0;
    if !has_log {
        return not_checked(
            "the database has no audit log yet (created by the first `wardhook serve`)",
        );
    }
    let keyring = match crate::crypto::MasterKey::load(key_path) {
        Ok(master) => crate::crypto::Keyring::from_master(&master),
        Err(e) => return not_checked(&e.to_string()),
    };
    let skip_mirror = !paths.audit_dir.is_dir();
    let mut sink = Vec::new();
    match crate::audit::commands::verify(
        &conn,
        &keyring,
        &paths.audit_dir,
        skip_mirror,
        true,
        &mut sink,
    ) {
        Ok(summary) => {
            let db = &summary.database;
            // Warnings (e.g. no checkpoint file yet) do not make the chain wrong: shown as a note.
            let note = db
                .warnings
                .iter()
                .chain(summary.mirror.iter().flat_map(|m| m.warnings.iter()))
                .next()
                .map(|w| format!(" (note: {w})"))
                .unwrap_or_default();
            let head = db
                .last_seq
                .map_or_else(|| "empty".to_owned(), |seq| format!("head at sequence {seq}"));
            let mirror = match &summary.mirror {
                Some(_) => format!("mirror in {} agrees", paths.audit_dir.display()),
                None => format!("no mirror at {}", paths.audit_dir.display()),
            };
            Check::ok(
                NAME,
                format!(
                    "chain verifies: {} record(s), {head}, {} checkpoint(s) matched; {mirror}{note}",
                    db.records, db.checkpoints_matched
                ),
            )
        }
        Err(crate::audit::AuditError::VerifyFailed {
            seq,
            problem,
            location,
        }) => Check::fail(
            NAME,
            format!("audit chain broken at sequence {seq} in {location}: {problem}"),
            "treat as a security incident: preserve the database and the audit folder as they are, run `wardhook audit verify` for details, compare with the shipped mirror copy; a wrong master key also fails here",
        ),
        Err(e) => Check::fail(
            NAME,
            format!("audit chain could not be verified: {e}"),
            "run `wardhook audit verify` for details",
        ),
    }
}

/// One `backup_taken` record: where the copy went and the start of its oldest period.
struct RecordedBackup {
    path: PathBuf,
    oldest_period: Option<DateTime<Utc>>,
}

/// How many backups to name in one line.
const BACKUPS_NAMED: usize = 5;

/// Backups still on disk that hold periods past retention. The audit trail is the list of
/// backups (each `backup_taken` record names its path and oldest period); a backup keeps every
/// period it holds readable with the master key, whatever `purge` did since.
fn check_backups(storage: &Path, options: &DoctorOptions) -> Check {
    const NAME: &str = "backups";
    use rusqlite::OpenFlags;
    let Ok(conn) = rusqlite::Connection::open_with_flags(
        storage,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) else {
        return Check::ok(NAME, "no database, so no backups recorded");
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    let details = |action: &str, limit: i64| -> Vec<(String, serde_json::Value)> {
        conn.prepare(
            "SELECT ts, detail FROM audit_log WHERE action = ?1 ORDER BY seq DESC LIMIT ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_map(rusqlite::params![action, limit], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(ts, d)| Some((ts, serde_json::from_str(&d).ok()?)))
        .collect()
    };
    let unix = |v: &serde_json::Value| v.as_i64().and_then(|t| DateTime::from_timestamp(t, 0));
    let recorded: Vec<RecordedBackup> = details("backup_taken", i64::MAX)
        .into_iter()
        .filter_map(|(_, d)| {
            Some(RecordedBackup {
                path: PathBuf::from(d["path"].as_str()?),
                oldest_period: unix(&d["oldest_period_unix"]),
            })
        })
        .collect();
    let present: Vec<&RecordedBackup> = recorded.iter().filter(|b| b.path.exists()).collect();
    if present.is_empty() {
        return Check::ok(
            NAME,
            format!(
                "{} backup(s) recorded in the audit trail, none still at its recorded path",
                recorded.len()
            ),
        );
    }
    // The retention the latest purge applied: the time of its record minus its cutoff.
    let from_purge = || {
        details("purged", 1).into_iter().find_map(|(ts, d)| {
            let at = DateTime::parse_from_rfc3339(&ts).ok()?.with_timezone(&Utc);
            Some(at - unix(&d["cutoff_unix"])?)
        })
    };
    let Some(retention) = options.retention.or_else(from_purge) else {
        return Check::ok(
            NAME,
            format!(
                "{} backup(s) on disk; not judged against retention: no purge recorded yet (pass --retention)",
                present.len()
            ),
        );
    };
    let cutoff = options.now - retention;
    // A period (UTC day) is past retention once it has ended before the cutoff, as purge judges.
    let past: Vec<String> = present
        .iter()
        .filter(|b| {
            b.oldest_period
                .is_some_and(|start| start + chrono::Duration::days(1) <= cutoff)
        })
        .map(|b| {
            format!(
                "{} (oldest period {})",
                b.path.display(),
                b.oldest_period
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_default()
            )
        })
        .collect();
    let days = retention.num_days();
    if past.is_empty() {
        return Check::ok(
            NAME,
            format!(
                "{} backup(s) on disk; none holds a period past the {days}-day retention",
                present.len()
            ),
        );
    }
    let more = past.len().saturating_sub(BACKUPS_NAMED);
    let mut named = past
        .iter()
        .take(BACKUPS_NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if more > 0 {
        named.push_str(&format!(" and {more} more"));
    }
    Check::warn(
        NAME,
        format!(
            "{} backup(s) hold periods past the {days}-day retention and still decrypt them with the master key: {named}",
            past.len()
        ),
        "purge does not reach backups: destroy these copies and their .manifest.json (shred, or per the media-disposal policy) wherever they were copied; if your policy keeps backups longer, run doctor with --retention <policy>",
    )
}

fn integrity_check(storage: &Path) -> Check {
    const NAME: &str = "storage.path (database)";
    use rusqlite::OpenFlags;
    let shown = storage.display();
    let fix_open = "run doctor as the service user (it must reach the database's -wal/-shm files), or stop the service and retry";
    let conn = match rusqlite::Connection::open_with_flags(
        storage,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(e) => return Check::fail(NAME, format!("cannot open {shown}: {e}"), fix_open),
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    let rows: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA integrity_check(20)")
        .and_then(|mut stmt| stmt.query_map([], |row| row.get::<_, String>(0))?.collect());
    match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => {
            Check::ok(NAME, format!("{shown}: PRAGMA integrity_check ok"))
        }
        Ok(rows) => Check::fail(
            NAME,
            format!(
                "{shown}: PRAGMA integrity_check reports {} problem(s), first: {}",
                rows.len(),
                rows.first().map(String::as_str).unwrap_or("(none)")
            ),
            "stop the service, keep the damaged file aside, restore the latest backup (deploy/INSTALL.md, restore) and let senders retry",
        ),
        Err(e) => Check::fail(
            NAME,
            format!("{shown}: integrity check could not run: {e}"),
            if matches!(&e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::NotADatabase)
            {
                "storage.path does not point at a wardhook database"
            } else {
                fix_open
            },
        ),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::certs::{write_file, DevCa};
    use crate::crypto::{Keyring, MasterKey};
    use crate::store::{Store, StoreOptions};

    /// A complete installation in a temporary folder: keys apart from data, certificate for
    /// `cert_days`, database with one table.
    struct Setup {
        _dir: tempfile::TempDir,
        config: PathBuf,
        key: PathBuf,
    }

    fn setup(cert_days: i64) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["keys", "certs", "data"] {
            std::fs::create_dir(root.join(sub)).unwrap();
            std::fs::set_permissions(root.join(sub), std::fs::Permissions::from_mode(0o700))
                .unwrap();
        }
        let key = root.join("keys/master.key");
        let master = MasterKey::generate_file(&key).unwrap();
        let issued = DevCa::generate()
            .unwrap()
            .issue_server(&["localhost"], cert_days)
            .unwrap();
        write_file(
            &root.join("certs/server.crt"),
            issued.cert_pem.as_bytes(),
            0o644,
        )
        .unwrap();
        write_file(
            &root.join("certs/server.key"),
            issued.key_pem.as_bytes(),
            0o600,
        )
        .unwrap();
        let db = root.join("data/wardhook.db");
        let store =
            Store::open(&db, Keyring::from_master(&master), StoreOptions::default()).unwrap();
        drop(store);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = root.join("wardhook.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:8443\"\n\
                 tls = {{ cert = \"{r}/certs/server.crt\", key = \"{r}/certs/server.key\" }}\n\
                 [storage]\npath = \"{r}/data/wardhook.db\"\n\
                 [keys]\nmaster_key_file = \"{r}/keys/master.key\"\n\
                 [audit]\ndir = \"{r}/data/audit\"\n\
                 [bogus]\nunknown = true\n",
                r = root.display()
            ),
        )
        .unwrap();
        Setup {
            _dir: dir,
            config,
            key,
        }
    }

    /// Default thresholds, except that the test machine's free disk space cannot fail a test.
    fn options() -> DoctorOptions {
        DoctorOptions {
            disk_warn_bytes: 0,
            disk_warn_percent: 0,
            disk_fail_bytes: 0,
            disk_fail_percent: 0,
            ..DoctorOptions::default()
        }
    }

    fn run(config: &Path) -> (DoctorReport, String) {
        let mut out = Vec::new();
        let report = run_doctor_with(config, &options(), &mut out).unwrap();
        (report, String::from_utf8(out).unwrap())
    }

    fn status(report: &DoctorReport, name: &str) -> Status {
        report.named(name).map(|c| c.status).max().unwrap()
    }

    #[test]
    fn healthy_setup_passes_every_check() {
        let s = setup(365);
        let (report, text) = run(&s.config);
        assert_eq!(report.worst(), Status::Ok, "{text}");
        assert!(report.passed());
        for name in [
            "config",
            "keys.master_key_file",
            "server.tls.cert",
            "server.tls.key",
            "storage.path (disk)",
            "storage.path (database)",
            "audit",
        ] {
            assert_eq!(status(&report, name), Status::Ok, "{name}: {text}");
        }
        assert!(text.contains("PRAGMA integrity_check ok"), "{text}");
        assert!(!text.contains("fix:"), "{text}");
    }

    #[test]
    fn world_readable_key_file_fails_with_a_fix() {
        let s = setup(365);
        std::fs::set_permissions(&s.key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (report, text) = run(&s.config);
        assert_eq!(
            status(&report, "keys.master_key_file"),
            Status::Fail,
            "{text}"
        );
        assert!(!report.passed());
        assert!(text.contains("mode 0644"), "{text}");
        assert!(text.contains("chmod 600"), "{text}");
    }

    #[test]
    fn certificate_expiring_in_ten_days_is_flagged() {
        let s = setup(10);
        let (report, text) = run(&s.config);
        let cert = report.named("server.tls.cert").next().unwrap();
        assert_eq!(cert.status, Status::Warn, "{text}");
        assert!(cert.message.contains("expires in"), "{text}");
        assert!(
            cert.fix.as_deref().unwrap().contains("systemctl reload"),
            "{text}"
        );
        // A warning does not fail the run.
        assert!(report.passed());
    }

    #[test]
    fn expired_certificate_fails() {
        let s = setup(365);
        let later = DoctorOptions {
            now: Utc::now() + chrono::Duration::days(400),
            ..options()
        };
        let report = run_doctor_with(&s.config, &later, &mut Vec::new()).unwrap();
        assert_eq!(status(&report, "server.tls.cert"), Status::Fail);
    }

    #[test]
    fn corrupt_database_fails_integrity_check() {
        let s = setup(365);
        let db = s.config.parent().unwrap().join("data/wardhook.db");
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        // A database with a few pages of rows, then garbage over the middle of page 2.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "PRAGMA page_size = 4096; CREATE TABLE t (x TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO t SELECT printf('%0100d', i) FROM n;",
        )
        .unwrap();
        drop(conn);
        let mut bytes = std::fs::read(&db).unwrap();
        assert!(bytes.len() > 3 * 4096);
        bytes[4096 + 8..4096 + 1024].fill(0xA5);
        std::fs::write(&db, &bytes).unwrap();
        let (report, text) = run(&s.config);
        assert_eq!(
            status(&report, "storage.path (database)"),
            Status::Fail,
            "{text}"
        );
        assert!(text.contains("integrity"), "{text}");
        // The audit chain is not checked on a damaged database.
        assert_eq!(status(&report, "audit"), Status::Warn, "{text}");
    }

    #[test]
    fn key_next_to_the_database_is_a_warning() {
        let s = setup(365);
        let root = s.config.parent().unwrap();
        let moved = root.join("data/master.key");
        std::fs::rename(&s.key, &moved).unwrap();
        let text = std::fs::read_to_string(&s.config)
            .unwrap()
            .replace("keys/master.key", "data/master.key");
        std::fs::write(&s.config, text).unwrap();
        let (report, out) = run(&s.config);
        assert_eq!(
            status(&report, "keys.master_key_file"),
            Status::Warn,
            "{out}"
        );
    }

    #[test]
    fn unreadable_or_broken_config_is_one_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (report, _) = run(&dir.path().join("missing.toml"));
        assert_eq!(report.checks.len(), 1);
        assert_eq!(report.worst(), Status::Fail);
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "[server\nlisten = ").unwrap();
        let (report, text) = run(&bad);
        assert_eq!(report.checks[0].name, "config");
        assert_eq!(report.worst(), Status::Fail, "{text}");
    }

    #[test]
    fn tiny_disk_threshold_fails() {
        let s = setup(365);
        let strict = DoctorOptions {
            disk_fail_bytes: u64::MAX,
            ..options()
        };
        let report = run_doctor_with(&s.config, &strict, &mut Vec::new()).unwrap();
        assert_eq!(status(&report, "storage.path (disk)"), Status::Fail);
    }

    #[tokio::test]
    async fn audit_chain_verifies_under_its_key_and_fails_under_another() {
        use crate::normalize::{normalize, Envelope, IntakeInput};
        use crate::store::JobSpec;
        let s = setup(365);
        let root = s.config.parent().unwrap().to_path_buf();
        let master = MasterKey::load(&s.key).unwrap();
        let store = Store::open(
            &root.join("data/wardhook.db"),
            Keyring::from_master(&master),
            StoreOptions::default(),
        )
        .unwrap();
        let input = IntakeInput::for_test(
            "nextphone",
            Envelope::NextPhone,
            br#"{"event":"call.ended","data":{"call_id":"c1","caller":{"name":"Zqx Doe"}}}"#,
        );
        let n = normalize(&input, Utc::now()).unwrap();
        store
            .intake(input, n, vec![JobSpec::new("crm")])
            .await
            .unwrap();

        let (report, text) = run(&s.config);
        let audit = report.named("audit").next().unwrap();
        assert_eq!(audit.status, Status::Ok, "{text}");
        assert!(!audit.message.contains("0 record(s)"), "{text}");
        assert!(!text.contains("Zqx"), "doctor prints no payload: {text}");

        // The same database under a different master key (a wrong key restored) fails.
        std::fs::remove_file(&s.key).unwrap();
        MasterKey::generate_file(&s.key).unwrap();
        let (report, text) = run(&s.config);
        assert_eq!(status(&report, "audit"), Status::Fail, "{text}");
        drop(store);
    }
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn a_drifting_sender_clock_is_flagged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tracker = crate::listener::clock::SkewTracker::default();
        let now = Utc::now();
        tracker.record("steady", now, now);
        tracker.record("drifty", now + chrono::Duration::seconds(95), now);
        tracker.write(dir.path()).expect("write");
        let check = check_sender_clocks(&dir.path().join("wardhook.db"));
        assert_eq!(check.status, Status::Warn, "{}", check.message);
        assert!(
            check.message.contains("drifty up to 95 s"),
            "{}",
            check.message
        );
        assert!(!check.message.contains("steady"));
    }
}
