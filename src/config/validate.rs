//! Turning a [`ConfigFile`] into a [`Config`], collecting every problem on the way.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use super::file::{ConfigFile, SourceSection};
use super::{
    parse_duration, AuditSettings, CacheSettings, Config, ConfigError, DispatchSettings, LogFormat,
    LogSettings, Preset, Problem, RateLimit, RealtimeSettings, Route, ServerSettings, Source,
    SourceName, Transport, VerifierSpec,
};
use crate::certs::TlsError;
use crate::filter::Filter;
use crate::secret::{MasterKey, Secret, SecretRef};
use wardhook_sdk::template::{Escape, Template};

/// Default replay window for signed timestamps.
const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Collects problems with their key paths.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

pub(super) fn load(path: &Path, base: &Path) -> Result<Config, ConfigError> {
    let fail = |problems| ConfigError {
        file: path.to_owned(),
        problems,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        fail(vec![Problem {
            path: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        fail(vec![Problem {
            path: String::new(),
            message: "config file is not UTF-8".into(),
        }])
    })?;
    let mut parsed: ConfigFile = toml::from_str(text).map_err(|e| fail(vec![toml_problem(&e)]))?;
    rebase(&mut parsed, base);
    let mut problems = Problems::default();
    let config = check(parsed, path, base, &bytes, &mut problems);
    match config {
        Some(c) if problems.0.is_empty() => Ok(c),
        _ => Err(fail(problems.0)),
    }
}

/// For offline commands (`audit`, `deliveries`, `backup`, …): the file's shape, the paths and the
/// master key, without resolving sender secrets or loading certificates that an auditor's
/// shell may not have.
pub(super) fn load_offline(path: &Path, base: &Path) -> Result<super::OfflineConfig, ConfigError> {
    let fail = |problems| ConfigError {
        file: path.to_owned(),
        problems,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(vec![Problem {
            path: String::new(),
            message: format!("cannot read config file: {e}"),
        }])
    })?;
    let mut parsed: ConfigFile = toml::from_str(&text).map_err(|e| fail(vec![toml_problem(&e)]))?;
    rebase(&mut parsed, base);
    let master_key = MasterKey::load(&parsed.keys.master_key_file).map_err(|e| {
        fail(vec![Problem {
            path: "keys.master_key_file".into(),
            message: e.to_string(),
        }])
    })?;
    let mut problems = Vec::new();
    let storage_backend = super::storage::check_backend(&parsed.storage, base, &mut |p, m| {
        problems.push(Problem {
            path: p.to_owned(),
            message: m,
        })
    });
    let storage_backend = match storage_backend {
        Some(b) if problems.is_empty() => b,
        _ => return Err(fail(problems)),
    };
    Ok(super::OfflineConfig {
        storage_backend,
        storage_path: parsed.storage.path,
        master_key_file: parsed.keys.master_key_file,
        master_key,
        audit: AuditSettings {
            dir: parsed.audit.dir,
            retention_days: parsed.audit.retention_days,
        },
    })
}

/// A TOML syntax or shape error as one problem; toml's message already names the key and line.
fn toml_problem(e: &toml::de::Error) -> Problem {
    let message = e.message().trim().to_owned();
    let location = e.span().map(|s| s.start).unwrap_or(0);
    Problem {
        path: String::new(),
        message: format!("invalid TOML at byte {location}: {message}"),
    }
}

fn parse_addr(text: &str, path: &str, problems: &mut Problems) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(
                path,
                format!("{text:?} is not an address:port such as 0.0.0.0:8443"),
            );
            None
        }
    }
}

fn parse_nets(items: &[String], path: &str, problems: &mut Problems) -> Vec<IpNet> {
    let mut nets = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match item
            .parse::<IpNet>()
            .or_else(|_| item.parse::<std::net::IpAddr>().map(IpNet::from))
        {
            Ok(n) => nets.push(n),
            Err(_) => problems.push(
                format!("{path}[{i}]"),
                format!("{item:?} is not an IP address or CIDR network"),
            ),
        }
    }
    nets
}

/// Make every relative path relative to `base` (the working directory in production).
fn rebase(file: &mut ConfigFile, base: &Path) {
    let fix = |p: &mut PathBuf| {
        if p.is_relative() && base != Path::new(".") {
            *p = base.join(&*p);
        }
    };
    if let Some(tls) = &mut file.server.tls {
        fix(&mut tls.cert);
        fix(&mut tls.key);
        if let Some(ca) = &mut tls.client_ca {
            fix(ca);
        }
    }
    fix(&mut file.storage.path);
    fix(&mut file.keys.master_key_file);
    fix(&mut file.audit.dir);
    if let Some(dir) = &mut file.log.dir {
        fix(dir);
    }
}

fn resolve_secret(text: &str, path: &str, base: &Path, problems: &mut Problems) -> Option<Secret> {
    let resolved = SecretRef::parse(text).and_then(|r| Secret::resolve(&r, base));
    match resolved {
        Ok(s) => Some(s),
        Err(e) => {
            problems.push(path, e.to_string());
            None
        }
    }
}

fn check(
    file: ConfigFile,
    path: &Path,
    base: &Path,
    bytes: &[u8],
    problems: &mut Problems,
) -> Option<Config> {
    let server = check_server(&file, problems);
    let master_key = match MasterKey::load(&file.keys.master_key_file) {
        Ok(k) => Some(k),
        Err(e) => {
            problems.push("keys.master_key_file", e.to_string());
            None
        }
    };
    let admin_listen = parse_addr(&file.admin.listen, "admin.listen", problems);
    let admin_client_ca = file.admin.client_ca.as_ref().map(|ca| {
        let full = if ca.is_relative() {
            base.join(ca)
        } else {
            ca.clone()
        };
        if let Err(e) = std::fs::read(&full) {
            problems.push(
                "admin.client_ca",
                format!("cannot read {}: {e}", full.display()),
            );
        }
        full
    });
    check_admin_transport(
        &file,
        server.as_ref(),
        admin_listen,
        admin_client_ca.as_deref(),
        problems,
    );
    if file.storage.max_size_mb == Some(0) {
        problems.push("storage.max_size_mb", "must be at least 1");
    }
    let phone_country = match file.storage.phone_country.as_deref() {
        None => Some(None),
        Some(text) => match super::PhoneCountry::parse(text) {
            Ok(c) => Some(Some(c)),
            Err(e) => {
                problems.push("storage.phone_country", e.to_string());
                None
            }
        },
    };
    let storage_backend =
        super::storage::check_backend(&file.storage, base, &mut |p, m| problems.push(p, m));
    let admin_idle = match super::parse_duration(&file.admin.idle_timeout) {
        Ok(d) if d >= Duration::from_secs(1) => Some(d),
        Ok(_) => {
            problems.push("admin.idle_timeout", "must be at least 1s");
            None
        }
        Err(e) => {
            problems.push("admin.idle_timeout", e);
            None
        }
    };
    let admin_lifetime = check_session_lifetime(&file.admin.session_lifetime, admin_idle, problems);
    let admin_oidc = file
        .admin
        .oidc
        .as_ref()
        .map(|o| super::oidc::check(o, base, &mut |p, m| problems.push(p, m)).ok_or(()));
    let log = check_log(&file, problems);
    let traces =
        super::telemetry::check_traces(file.traces.as_ref(), base, &mut |p, m| problems.push(p, m));
    if file.audit.retention_days < 365 {
        problems.push(
            "audit.retention_days",
            "must be at least 365; HIPAA documentation is kept six years (2196 days, the default)",
        );
    } else if file.audit.retention_days > 36_500 {
        // The cut-off is computed as `now - retention`: bounded like every duration.
        problems.push("audit.retention_days", "must be at most 36500 (100 years)");
    }
    let trusted = server
        .as_ref()
        .map(|s| s.trusted_proxies.clone())
        .unwrap_or_default();
    let default_body = file.server.max_body_bytes;
    let mut names = HashSet::new();
    let mut sources = Vec::new();
    for (i, s) in file.sources.iter().enumerate() {
        let at = format!("sources[{i}]");
        if !names.insert(s.name.clone()) {
            problems.push(
                format!("{at}.name"),
                format!("source {:?} is defined more than once", s.name),
            );
        }
        if let Some(src) = check_source(s, &at, &trusted, default_body, base, problems) {
            sources.push(src);
        }
    }

    let dispatch = check_dispatch(&file, problems);
    let audit_forward = file.audit_forward.as_ref().and_then(|section| {
        super::audit_forward::check(section, base, &mut |p, m| problems.push(p, m))
    });
    let mut handler_names = HashSet::new();
    for (i, h) in file.handlers.iter().enumerate() {
        if h.name.is_empty() {
            problems.push(format!("handlers[{i}].name"), "must not be empty");
        } else if !handler_names.insert(h.name.clone()) {
            problems.push(
                format!("handlers[{i}].name"),
                format!("handler {:?} is defined more than once", h.name),
            );
        }
    }
    let mut routes = Vec::new();
    for (i, r) in file.routes.iter().enumerate() {
        if !names.contains(&r.source) {
            problems.push(
                format!("routes[{i}].source"),
                format!("no source is named {:?}", r.source),
            );
        }
        if r.handlers.is_empty() {
            problems.push(
                format!("routes[{i}].handlers"),
                "a route needs at least one handler",
            );
        }
        let captures = file
            .artifacts
            .as_ref()
            .is_some_and(|a| a.sources.iter().any(|s| s.source == r.source));
        for (j, h) in r.handlers.iter().enumerate() {
            // The built-in capture step, for a source with `[[artifacts.sources]]`.
            if h == wardhook_sdk::artifacts::CAPTURE_STEP && captures && j == 0 {
                continue;
            }
            if !handler_names.contains(h) {
                problems.push(
                    format!("routes[{i}].handlers[{j}]"),
                    format!("no handler is named {h:?}"),
                );
            }
        }
        for (j, pattern) in r.events.iter().enumerate() {
            // Event types are identifiers (normalize quarantines anything else), so a pattern
            // with other characters could never match: say so instead of routing nothing.
            let valid = !pattern.is_empty()
                && pattern.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'.' | b'_' | b'-' | b':' | b'/' | b'~' | b'*')
                });
            if !valid {
                problems.push(
                    format!("routes[{i}].events[{j}]"),
                    "an event pattern is letters, digits and . _ - : / ~ with * as a wildcard",
                );
            }
        }
        if let Some(Err(e)) = r.when.as_deref().map(Filter::compile) {
            problems.push(format!("routes[{i}].when"), e.to_string());
        }
        let retry_schedule = r
            .retry_schedule
            .as_ref()
            .and_then(|s| parse_schedule(s, &format!("routes[{i}].retry_schedule"), problems));
        let preset = file
            .sources
            .iter()
            .find(|s| s.name == r.source)
            .map(|s| s.preset.as_str());
        let realtime = check_realtime(r, preset, &format!("routes[{i}]"), problems);
        routes.push(Route {
            source: r.source.clone(),
            events: r.events.clone(),
            when: r.when.clone(),
            handlers: r.handlers.clone(),
            retry_schedule,
            realtime,
        });
    }

    let relay = file.relay.as_ref().map(|r| {
        super::relay::check_inside(r, base, &mut |p: &str, m: String| problems.push(p, m))
    });
    let relay_server = file.relay_server.as_ref().map(|r| {
        super::relay::check_server(r, base, &mut |p: &str, m: String| problems.push(p, m))
    });
    let artifacts = match &file.artifacts {
        None => None,
        Some(section) => {
            let sources: Vec<(String, String)> = file
                .sources
                .iter()
                .map(|s| (s.name.clone(), s.preset.clone()))
                .collect();
            let checked =
                super::artifacts::check(section, &sources, base, &mut |p, m| problems.push(p, m));
            Some(checked?)
        }
    };
    let alerts = {
        let source_names: Vec<String> = file.sources.iter().map(|s| s.name.clone()).collect();
        let handler_names: Vec<String> = file.handlers.iter().map(|h| h.name.clone()).collect();
        super::alerts::check(&file.alerts, &source_names, &handler_names, &mut |p, m| {
            problems.push(p, m)
        })
    };
    Some(Config {
        path: path.to_owned(),
        sha256: hex::encode(Sha256::digest(bytes)),
        server: server?,
        storage_path: check_storage(&file.storage.path, problems)?,
        storage_max_size_mb: file.storage.max_size_mb,
        phone_country: phone_country?,
        storage_backend: storage_backend?,
        master_key_file: file.keys.master_key_file.clone(),
        master_key: master_key?,
        audit: AuditSettings {
            dir: file.audit.dir.clone(),
            retention_days: file.audit.retention_days,
        },
        admin_listen: admin_listen?,
        admin: super::AdminSettings {
            enabled: file.admin.enabled,
            idle_timeout: admin_idle?,
            session_lifetime: admin_lifetime?,
            client_ca: admin_client_ca,
            oidc: admin_oidc.transpose().ok()?,
        },
        log: log?,
        sources,
        handlers: file.handlers.clone(),
        base: base.to_owned(),
        routes,
        dispatch: dispatch?,
        audit_forward,
        relay: relay.map(|r| r.ok_or(())).transpose().ok()?,
        relay_server: relay_server.map(|r| r.ok_or(())).transpose().ok()?,
        traces,
        artifacts,
        alerts: alerts?,
    })
}

/// Check a route's real-time settings; `None` for ordinary (async) routes.
fn check_realtime(
    r: &super::file::RouteSection,
    preset: Option<&str>,
    at: &str,
    problems: &mut Problems,
) -> Option<RealtimeSettings> {
    let compile_respond =
        |t: &str| Template::compile(t, Escape::JsonString).map_err(|e| e.to_string());
    let compile_key = |t: &str| Template::compile(t, Escape::None).map_err(|e| e.to_string());
    let realtime = match r.mode.as_deref() {
        None | Some("async") => false,
        Some("realtime") => true,
        Some(other) => {
            problems.push(
                format!("{at}.mode"),
                format!("{other:?} is not one of \"async\", \"realtime\""),
            );
            return None;
        }
    };
    let realtime_only = [
        ("respond", r.respond.is_some()),
        ("fallback", r.fallback.is_some()),
        ("deadline_ms", r.deadline_ms.is_some()),
        ("cache", r.cache.is_some()),
    ];
    if !realtime {
        for (key, set) in realtime_only {
            if set {
                problems.push(format!("{at}.{key}"), "only for mode = \"realtime\" routes");
            }
        }
        return None;
    }
    let respond = match r.respond.as_deref() {
        None => {
            problems.push(
                format!("{at}.respond"),
                "a real-time route needs a reply template",
            );
            None
        }
        Some(t) => match compile_respond(t) {
            Ok(tpl) => {
                if !r.baa {
                    for var in tpl.variables() {
                        if let Some(field) = wardhook_sdk::phi::phi_field(var) {
                            problems.push(
                                format!("{at}.respond"),
                                format!("uses PHI field {field}, but the sender is not covered by a BAA (set baa = true on the route only if it is)"),
                            );
                        }
                    }
                }
                Some(t.to_owned())
            }
            Err(e) => {
                problems.push(format!("{at}.respond"), e);
                None
            }
        },
    };
    // Where a sender documents a reply that means "carry on as configured", it is the default
    // fallback: Retell's inbound-call webhook takes an empty `call_inbound` object.
    let fallback = r.fallback.clone().or_else(|| match preset {
        Some("retell") => Some(r#"{"call_inbound": {}}"#.to_owned()),
        _ => None,
    });
    if fallback.is_none() {
        problems.push(
            format!("{at}.fallback"),
            "a real-time route needs a fallback reply for when a handler fails or is late",
        );
    }
    let deadline = r
        .deadline_ms
        .map_or(super::DEFAULT_REALTIME_DEADLINE, Duration::from_millis);
    if deadline.is_zero() || deadline > Duration::from_secs(10) {
        problems.push(
            format!("{at}.deadline_ms"),
            "must be between 1 and 10000 (and below the sender's own timeout)",
        );
    }
    let cache = r.cache.as_ref().and_then(|c| match compile_key(&c.key) {
        Ok(_) if c.ttl_secs > 30 * 86_400 => {
            // An entry's expiry is `now + ttl`: bounded before that addition.
            problems.push(
                format!("{at}.cache.ttl_secs"),
                "must be at most 2592000 (30 days)",
            );
            None
        }
        Ok(_) if c.ttl_secs > 0 && c.max_entries > 0 => Some(CacheSettings {
            key: c.key.clone(),
            ttl: Duration::from_secs(c.ttl_secs),
            max_entries: c.max_entries,
        }),
        Ok(_) => {
            problems.push(
                format!("{at}.cache"),
                "ttl_secs and max_entries must be at least 1",
            );
            None
        }
        Err(e) => {
            problems.push(format!("{at}.cache.key"), e);
            None
        }
    });
    Some(RealtimeSettings {
        respond: respond?,
        status: r.respond_status.unwrap_or(200),
        content_type: r
            .content_type
            .clone()
            .unwrap_or_else(|| "application/json".to_owned()),
        deadline,
        fallback: fallback?,
        fallback_status: r.fallback_status.unwrap_or(200),
        cache,
    })
}

fn parse_schedule(items: &[String], path: &str, problems: &mut Problems) -> Option<Vec<Duration>> {
    if items.is_empty() {
        problems.push(
            path,
            "needs at least one delay (the first attempt's, usually \"0s\")",
        );
        return None;
    }
    let mut out = Vec::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match parse_duration(item) {
            Ok(d) => out.push(d),
            Err(e) => {
                problems.push(format!("{path}[{i}]"), e);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

fn check_dispatch(file: &ConfigFile, problems: &mut Problems) -> Option<DispatchSettings> {
    let d = &file.dispatch;
    let time_zone = match crate::filter::parse_time_zone(&d.time_zone) {
        Ok(tz) => Some(tz),
        Err(e) => {
            problems.push("dispatch.time_zone", e);
            None
        }
    };
    // dispatch.workers = 0 is allowed: intake only (another process or a test drives dispatch).
    if d.max_concurrency_per_handler == 0 {
        problems.push(
            "dispatch.max_concurrency_per_handler",
            "must be greater than 0",
        );
    }
    if d.handler_timeout_secs == 0 || d.handler_timeout_secs > 3600 {
        problems.push(
            "dispatch.handler_timeout_secs",
            "must be between 1 and 3600 seconds",
        );
    }
    if d.circuit_failures == 0 {
        problems.push("dispatch.circuit_failures", "must be greater than 0");
    }
    if d.circuit_open_secs == 0 || d.circuit_open_secs > 86_400 {
        problems.push(
            "dispatch.circuit_open_secs",
            "must be between 1 and 86400 seconds",
        );
    }
    let retry_schedule = parse_schedule(&d.retry_schedule, "dispatch.retry_schedule", problems);
    Some(DispatchSettings {
        workers: d.workers,
        time_zone: time_zone?,
        retry_schedule: retry_schedule?,
        handler_timeout: Duration::from_secs(d.handler_timeout_secs),
        max_concurrency_per_handler: d.max_concurrency_per_handler,
        circuit_failures: d.circuit_failures,
        circuit_open: Duration::from_secs(d.circuit_open_secs),
    })
}

/// The message for plain HTTP off loopback, shared by both listeners.
const PLAIN_OFF_LOOPBACK: &str =
    "plain HTTP is only allowed on a loopback address (127.0.0.1 or ::1)";

/// The admin listener speaks what the senders' listener speaks: TLS with the senders'
/// certificate, or plain HTTP when `server.plain_http = true`. Plain HTTP must stay on loopback
/// here too, and a client CA needs TLS: either combination is refused rather than served
/// without the protection the operator asked for.
fn check_admin_transport(
    file: &ConfigFile,
    server: Option<&ServerSettings>,
    listen: Option<SocketAddr>,
    client_ca: Option<&Path>,
    problems: &mut Problems,
) {
    if !file.admin.enabled {
        return;
    }
    if file.server.plain_http {
        if listen.is_some_and(|a| !a.ip().is_loopback()) {
            problems.push(
                "admin.listen",
                format!(
                    "{PLAIN_OFF_LOOPBACK}; with server.plain_http = true the admin console is \
                     plain HTTP too (set admin.listen to a loopback address, or use server.tls)"
                ),
            );
        }
        if client_ca.is_some() {
            problems.push(
                "admin.client_ca",
                "client certificates need TLS, but with server.plain_http = true the admin \
                 console is plain HTTP (configure server.tls, or remove admin.client_ca)",
            );
        }
        return;
    }
    // With TLS, the CA must load as the listener will load it (an unreadable file is already
    // reported).
    let readable = client_ca.filter(|ca| std::fs::metadata(ca).is_ok());
    if let (Some(ca), Some(Transport::Tls(t))) = (readable, server.map(|s| &s.transport)) {
        if let Err(e @ TlsError::ClientCa { .. }) =
            crate::certs::check_server_material(&t.cert, &t.key, Some(ca))
        {
            problems.push("admin.client_ca", e.to_string());
        }
    }
}

/// The longest `admin.session_lifetime` accepted: a console session that outlives a month
/// defeats the point of ending busy sessions.
const MAX_SESSION_LIFETIME: Duration = Duration::from_secs(30 * 86_400);

/// `admin.session_lifetime`: at least 1s, at most [`MAX_SESSION_LIFETIME`], and not shorter
/// than the idle time (which would then never matter — most likely a unit typed wrong).
fn check_session_lifetime(
    text: &str,
    idle: Option<Duration>,
    problems: &mut Problems,
) -> Option<Duration> {
    let path = "admin.session_lifetime";
    let problem = match super::parse_duration(text) {
        Ok(d) if d < Duration::from_secs(1) => "must be at least 1s".to_owned(),
        Ok(d) if d > MAX_SESSION_LIFETIME => "must be at most 30d".to_owned(),
        Ok(d) if idle.is_some_and(|idle| d < idle) => {
            "must not be shorter than admin.idle_timeout".to_owned()
        }
        Ok(d) => return Some(d),
        Err(e) => e,
    };
    problems.push(path, problem);
    None
}

fn check_server(file: &ConfigFile, problems: &mut Problems) -> Option<ServerSettings> {
    let s = &file.server;
    let listen = parse_addr(&s.listen, "server.listen", problems);
    let transport = match (&s.tls, s.plain_http) {
        (Some(_), true) => {
            problems.push(
                "server.plain_http",
                "set either server.tls or plain_http = true, not both",
            );
            None
        }
        (None, false) => {
            problems.push(
                "server.tls",
                "missing: wardhook terminates TLS itself (set plain_http = true only behind a local proxy)",
            );
            None
        }
        (None, true) => {
            if listen.is_some_and(|a| !a.ip().is_loopback()) {
                problems.push("server.plain_http", PLAIN_OFF_LOOPBACK);
                None
            } else {
                Some(Transport::PlainLoopback)
            }
        }
        (Some(t), false) => {
            let settings = super::TlsSettings {
                cert: t.cert.clone(),
                key: t.key.clone(),
                client_ca: t.client_ca.clone(),
            };
            let checked = crate::certs::check_server_material(
                &settings.cert,
                &settings.key,
                settings.client_ca.as_deref(),
            );
            match checked {
                Ok(()) => Some(Transport::Tls(settings)),
                Err(e) => {
                    problems.push(format!("server.tls.{}", e.key()), e.to_string());
                    None
                }
            }
        }
    };
    if s.max_body_bytes == 0 {
        problems.push("server.max_body_bytes", "must be greater than 0");
    }
    for (key, v) in [
        ("server.client_timeout_secs", s.client_timeout_secs),
        ("server.keep_alive_secs", s.keep_alive_secs),
        (
            "server.tls_handshake_timeout_secs",
            s.tls_handshake_timeout_secs,
        ),
        ("server.shutdown_timeout_secs", s.shutdown_timeout_secs),
    ] {
        if v == 0 || v > 3600 {
            problems.push(key, "must be between 1 and 3600 seconds");
        }
    }
    if s.max_connections == 0 {
        problems.push("server.max_connections", "must be greater than 0");
    }
    if s.workers == Some(0) {
        problems.push("server.workers", "must be greater than 0");
    }
    let trusted_proxies = parse_nets(&s.trusted_proxies, "server.trusted_proxies", problems);
    let rejected_rate_limit = match &s.rejected_rate_limit {
        None => Some(super::DEFAULT_REJECTED_RATE_LIMIT),
        Some(r) => check_rate_limit(r, "server.rejected_rate_limit", problems),
    };
    Some(ServerSettings {
        listen: listen?,
        transport: transport?,
        client_timeout: Duration::from_secs(s.client_timeout_secs),
        keep_alive: Duration::from_secs(s.keep_alive_secs),
        tls_handshake_timeout: Duration::from_secs(s.tls_handshake_timeout_secs),
        max_connections: s.max_connections,
        shutdown_timeout: Duration::from_secs(s.shutdown_timeout_secs),
        workers: s.workers,
        trusted_proxies,
        rejected_rate_limit: rejected_rate_limit?,
    })
}

fn check_rate_limit(
    r: &super::file::RateLimitSection,
    path: &str,
    problems: &mut Problems,
) -> Option<RateLimit> {
    if !(r.per_second.is_finite() && r.per_second > 0.0) || r.burst == 0 {
        problems.push(
            path,
            "per_second must be a positive number and burst at least 1",
        );
        None
    } else {
        Some(RateLimit {
            per_second: r.per_second,
            burst: r.burst,
        })
    }
}

fn check_storage(path: &Path, problems: &mut Problems) -> Option<PathBuf> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if dir.exists() && !dir.is_dir() {
        problems.push("storage.path", format!("{} is not a folder", dir.display()));
        return None;
    }
    if path.is_dir() {
        problems.push(
            "storage.path",
            format!("{} is a folder; name the database file", path.display()),
        );
        return None;
    }
    Some(path.to_owned())
}

fn check_log(file: &ConfigFile, problems: &mut Problems) -> Option<LogSettings> {
    let format = match file.log.format.as_str() {
        "pretty" => Some(LogFormat::Pretty),
        "json" => Some(LogFormat::Json),
        other => {
            problems.push(
                "log.format",
                format!("{other:?} is not one of \"pretty\", \"json\""),
            );
            None
        }
    };
    if tracing_subscriber::EnvFilter::builder()
        .parse(&file.log.level)
        .is_err()
    {
        problems.push(
            "log.level",
            format!(
                "{:?} is not a valid filter such as \"info\"",
                file.log.level
            ),
        );
    }
    Some(LogSettings {
        format: format?,
        level: file.log.level.clone(),
        dir: file.log.dir.clone(),
    })
}

fn check_source(
    s: &SourceSection,
    at: &str,
    trusted_proxies: &[IpNet],
    default_body: usize,
    base: &Path,
    problems: &mut Problems,
) -> Option<Source> {
    let name = match SourceName::parse(&s.name) {
        Ok(n) => Some(n),
        Err(why) => {
            problems.push(format!("{at}.name"), format!("{:?} {why}", s.name));
            None
        }
    };
    let preset = Preset::parse(&s.preset);
    if preset.is_none() {
        problems.push(
            format!("{at}.preset"),
            format!(
                "unknown preset {:?}; known: {}",
                s.preset,
                Preset::NAMES.join(", ")
            ),
        );
    }
    let before = problems.0.len();
    let secrets: Vec<Secret> = s
        .secrets
        .iter()
        .enumerate()
        .filter_map(|(i, r)| resolve_secret(&r.0, &format!("{at}.secrets[{i}]"), base, problems))
        .collect();
    let token = s
        .token
        .as_ref()
        .and_then(|r| resolve_secret(&r.0, &format!("{at}.token"), base, problems));
    let secrets_ok = problems.0.len() == before;
    let allow_ips = parse_nets(&s.allow_ips, &format!("{at}.allow_ips"), problems);
    let public_url = s
        .public_url
        .as_ref()
        .and_then(|u| match url::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "https" | "http") => Some(url),
            _ => {
                problems.push(
                    format!("{at}.public_url"),
                    format!("{u:?} is not an absolute http(s) URL"),
                );
                None
            }
        });
    if s.max_body_bytes == Some(0) {
        problems.push(format!("{at}.max_body_bytes"), "must be greater than 0");
    }
    let rate_limit = s
        .rate_limit
        .as_ref()
        .and_then(|r| check_rate_limit(r, &format!("{at}.rate_limit"), problems));
    let name = name?;
    let preset = preset?;
    if !secrets_ok {
        // The verifier would only repeat "needs a secret" for references already reported.
        return None;
    }
    let spec = VerifierSpec {
        source: name.as_str().to_owned(),
        preset,
        secrets,
        token,
        tolerance: s
            .tolerance_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TOLERANCE),
        public_url,
        allow_ips,
        trusted_proxies: trusted_proxies.to_vec(),
        scheme: s.scheme.clone().unwrap_or_default(),
    };
    Some(Source {
        name,
        preset: s.preset.clone(),
        spec,
        max_body_bytes: s.max_body_bytes.unwrap_or(default_body),
        rate_limit,
    })
}
