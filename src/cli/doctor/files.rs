//! `doctor`'s checks of files: the master key, the TLS certificate and key, free disk space.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::Zeroizing;

use chrono::DateTime;

use super::{absolute, Check, DoctorOptions, Paths, CREDENTIALS_PREFIX};

fn credentials_hint(path: &Path) -> &'static str {
    if path.starts_with(CREDENTIALS_PREFIX) {
        " (this path exists only inside the running service: check the LoadCredential= source file, e.g. /etc/wardhook/credentials/, instead)"
    } else {
        ""
    }
}

/// Owner-only: no bits for group or others.
pub(super) fn mode_open_to_others(mode: u32) -> bool {
    mode & 0o077 != 0
}

pub(super) fn check_master_key(paths: &Paths) -> Vec<Check> {
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

pub(super) fn check_tls(paths: &Paths, options: &DoctorOptions) -> Vec<Check> {
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
pub(super) fn check_disk(storage: &Path, options: &DoctorOptions) -> Check {
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
