//! Load generator for wardhook's intake path.
//!
//! Two modes, so the cost of each layer can be told apart:
//! - `http`: distinct, correctly signed NextPhone events over N keep-alive TLS connections
//!   (one HTTP/1.1 client per connection) to a running server, for a bounded count or duration;
//!   reports accepted deliveries/s and p50/p99 ack latency, and — given `--server-pid` — the
//!   server's CPU time per accepted delivery; with `--threads` as well, that CPU split by the
//!   server's threads, grouped by name (writer, checkpointer, HTTP workers, …), per delivery.
//! - `store`: the same events through verify → normalize → `Store::intake` in-process (no TLS,
//!   no HTTP), with N concurrent tasks; `--max-batch 1` gives one fsync'd transaction per
//!   request, the baseline that group commit is compared with.
//!
//! Every event has a fresh call id, so nothing is deduplicated away.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use wardhook::crypto::{Keyring, MasterKey};
use wardhook::normalize::{normalize, IntakeInput};
use wardhook::secret::Secret;
use wardhook::store::{IntakeOutcome, JobSpec, Store, StoreOptions};
use wardhook::verify::{
    Preset, SchemeOptions, SourceVerifier, UnverifiedRequest, Verdict, VerifierSpec,
};

#[derive(Debug, Parser)]
#[command(
    name = "wardhook-loadgen",
    about = "Load generator for wardhook intake"
)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Signed NextPhone events over keep-alive TLS to a running server.
    Http {
        /// The hook URL, e.g. https://127.0.0.1:8443/hooks/demo. Repeat it for several nodes
        /// (connections are spread round-robin over them).
        #[arg(long, required = true)]
        url: Vec<String>,
        /// File holding the source's signing secret (one trailing newline ignored).
        #[arg(long)]
        secret_file: PathBuf,
        /// PEM CA certificate to trust (the dev CA); default: the system roots.
        #[arg(long)]
        ca: Option<PathBuf>,
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 16)]
        connections: usize,
        /// Stop after this many requests in total.
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        /// Or after this many seconds, whichever comes first.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// The server's process id, to report its CPU time per accepted delivery. Repeat it for
        /// several nodes (their CPU times are added).
        #[arg(long)]
        server_pid: Vec<u32>,
        /// With `--server-pid`: also print the server's CPU per accepted delivery by thread
        /// group (from `/proc/PID/task/*/stat`: the SQLite writer, the checkpointer, the HTTP
        /// workers, the runtime, the log writer, …).
        #[arg(long, requires = "server_pid")]
        threads: bool,
    },
    /// Verify → normalize → Store::intake in-process, without TLS or HTTP.
    Store {
        /// Database file to create (must not exist).
        #[arg(long)]
        db: PathBuf,
        /// Concurrent intake tasks.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Requests in total.
        #[arg(long, default_value_t = 20_000)]
        requests: u64,
        /// Largest group-commit batch; 1 = one transaction (one fsync) per request.
        #[arg(long, default_value_t = 512)]
        max_batch: usize,
    },
}

fn body(worker: usize, seq: u64) -> Vec<u8> {
    format!(
        r#"{{"event":"call.ended","timestamp":"2026-11-22T10:00:00Z","data":{{"call_id":"load-{worker}-{seq}-{}","caller":{{"phone":"+15551234567","name":"Load Test","email":"load@example.org"}},"call_type":"quote_request","duration_seconds":180,"transcript":"Caller asked for a quote for a kitchen remodel and gave a budget and a timeline.","ai_summary":"Quote request, kitchen remodel.","custom_fields":{{"service_type":"remodeling","budget":"$15,000-$20,000"}}}}}}"#,
        std::process::id()
    )
    .into_bytes()
}

fn sign(secret: &[u8], body: &[u8]) -> anyhow::Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).context("HMAC key")?;
    mac.update(body);
    Ok(format!(
        "sha256={}",
        hex::encode(mac.finalize().into_bytes())
    ))
}

/// Latency percentiles in microseconds.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// CPU time (user + system) of a process, from /proc, in microseconds.
fn cpu_micros(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let (_, ticks) = parse_stat(&stat)?;
    Some(ticks * 1_000_000 / clock_ticks())
}

/// Clock ticks per second of `/proc` CPU times.
fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100)
}

/// The name and CPU ticks (user + system) of one `/proc/.../stat` line.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_owned();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// The thread group a server thread's name (`comm`, at most 15 bytes) belongs to.
fn thread_group(comm: &str) -> String {
    if comm == "wardhook" {
        return "main".to_owned();
    }
    // actix names its workers "actix-server worker N" and its accept loop "actix-server
    // acceptor"; tokio's threads are "tokio-runtime-worker" or "tokio-rt-worker" by version.
    let known: [(&str, &str); 10] = [
        ("wardhook-store", "writer (wardhook-store-writer)"),
        ("wardhook-mirror", "audit mirror (wardhook-mirror)"),
        ("wardhook-ckpt", "checkpointer (wardhook-ckpt)"),
        ("wardhook-log", "log writer (wardhook-log*)"),
        ("actix-server w", "HTTP workers (actix-server worker)"),
        ("actix-server a", "TLS acceptor (actix-server acceptor)"),
        ("actix-rt", "HTTP workers (actix-rt)"),
        ("tokio-r", "tokio runtime (dispatch, committers)"),
        ("tracing-append", "log writer (tracing-appender)"),
        ("OpenTelemetry", "trace exporter (OpenTelemetry)"),
    ];
    known
        .iter()
        .find(|(prefix, _)| comm.starts_with(prefix))
        .map(|(_, group)| (*group).to_owned())
        .unwrap_or_else(|| {
            comm.trim_end_matches(|c: char| c.is_ascii_digit())
                .to_owned()
        })
}

/// CPU ticks of every live thread of the server processes, by thread id.
fn thread_ticks(pids: &[u32]) -> std::collections::HashMap<(u32, u32), (String, u64)> {
    let mut out = std::collections::HashMap::new();
    for &pid in pids {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for entry in dir.flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            if let Some(stat) = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                out.insert((pid, tid), stat);
            }
        }
    }
    out
}

/// CPU per thread group over the run, in microseconds, largest first. A thread started during
/// the run counts from zero; one that ended during it is missing (its CPU is in the process
/// total only), which the report says when the groups do not add up.
fn thread_cpu_delta(
    before: &std::collections::HashMap<(u32, u32), (String, u64)>,
    after: &std::collections::HashMap<(u32, u32), (String, u64)>,
) -> Vec<(String, usize, u64)> {
    let tck = clock_ticks();
    let mut groups: std::collections::BTreeMap<String, (usize, u64)> = Default::default();
    for (key, (comm, ticks)) in after {
        let start = before.get(key).map_or(0, |(_, t)| *t);
        let entry = groups.entry(thread_group(comm)).or_default();
        entry.0 += 1;
        entry.1 += ticks.saturating_sub(start);
    }
    let mut out: Vec<_> = groups
        .into_iter()
        .map(|(g, (n, ticks))| (g, n, ticks * 1_000_000 / tck))
        .collect();
    out.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
    out
}

/// Summed CPU time of the server processes; `None` without pids or if one cannot be read.
fn cpu_of(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| cpu_micros(p)).sum()
}

struct Report {
    label: String,
    sent: u64,
    accepted: u64,
    failed: u64,
    elapsed: Duration,
    latencies: Vec<u64>,
    cpu_us: Option<u64>,
    /// (thread group, threads, CPU µs) with `--threads`.
    threads: Vec<(String, usize, u64)>,
}

impl Report {
    fn print(mut self) {
        self.latencies.sort_unstable();
        let secs = self.elapsed.as_secs_f64();
        println!("{}", self.label);
        println!(
            "  sent {}  accepted {}  failed {}  in {:.2} s",
            self.sent, self.accepted, self.failed, secs
        );
        println!("  accepted/s {:.0}", self.accepted as f64 / secs);
        println!(
            "  ack latency p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            percentile(&self.latencies, 0.50) as f64 / 1000.0,
            percentile(&self.latencies, 0.99) as f64 / 1000.0,
            self.latencies.last().copied().unwrap_or(0) as f64 / 1000.0
        );
        if let (Some(cpu), true) = (self.cpu_us, self.accepted > 0) {
            println!(
                "  CPU {:.0} µs per accepted delivery ({:.2} s CPU)",
                cpu as f64 / self.accepted as f64,
                cpu as f64 / 1e6
            );
        }
        let per = |us: u64| us as f64 / self.accepted.max(1) as f64;
        if !self.threads.is_empty() {
            println!("  server CPU by thread group:");
            for (group, n, us) in &self.threads {
                println!(
                    "    {:<40} {:>3} thread{} {:>8.0} µs/delivery",
                    group,
                    n,
                    if *n == 1 { " " } else { "s" },
                    per(*us)
                );
            }
            let counted: u64 = self.threads.iter().map(|t| t.2).sum();
            if let Some(cpu) = self.cpu_us {
                if cpu > counted {
                    println!(
                        "    {:<40}         {:>8.0} µs/delivery",
                        "(threads ended during the run)",
                        per(cpu - counted)
                    );
                }
            }
        }
        // One machine-readable line for scripts (benches/intake.sh).
        let writer = self
            .threads
            .iter()
            .find(|t| t.0.starts_with("writer"))
            .map(|t| format!("{:.1}", per(t.2)))
            .unwrap_or_else(|| "-".to_owned());
        println!(
            "summary accepted_per_s={:.0} p99_ms={:.2} failed={} server_cpu_us={} writer_cpu_us={writer}",
            self.accepted as f64 / secs,
            percentile(&self.latencies, 0.99) as f64 / 1000.0,
            self.failed,
            self.cpu_us
                .map(|c| format!("{:.1}", per(c)))
                .unwrap_or_else(|| "-".to_owned()),
        );
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_http(
    urls: Vec<String>,
    secret_file: PathBuf,
    ca: Option<PathBuf>,
    connections: usize,
    requests: u64,
    seconds: u64,
    server_pids: Vec<u32>,
    threads: bool,
) -> anyhow::Result<Report> {
    let mut secret = std::fs::read(&secret_file)
        .with_context(|| format!("reading {}", secret_file.display()))?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
    }
    let secret = Arc::new(secret);
    let ca_cert = match &ca {
        Some(p) => Some(reqwest::Certificate::from_pem(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )?),
        None => None,
    };
    let issued = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let threads_before = threads.then(|| thread_ticks(&server_pids));
    let cpu_before = cpu_of(&server_pids);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..connections.max(1) {
        // One client per connection: each keeps exactly one keep-alive TLS connection.
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .http1_only()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30));
        if let Some(c) = &ca_cert {
            builder = builder.add_root_certificate(c.clone());
        }
        let client = builder.build()?;
        let url = urls[worker % urls.len()].clone();
        let (secret, issued) = (Arc::clone(&secret), Arc::clone(&issued));
        tasks.push(tokio::spawn(async move {
            let (mut accepted, mut failed, mut lat) = (0u64, 0u64, Vec::new());
            let mut seq = 0u64;
            while issued.fetch_add(1, Ordering::Relaxed) < requests && Instant::now() < deadline {
                seq += 1;
                let body = body(worker, seq);
                let signature = match sign(&secret, &body) {
                    Ok(s) => s,
                    Err(_) => break,
                };
                let t = Instant::now();
                let res = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("x-nextphone-signature", signature)
                    .body(body)
                    .send()
                    .await;
                let ok = match res {
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        status.is_success() && text.contains("\"accepted\"")
                    }
                    Err(_) => false,
                };
                lat.push(t.elapsed().as_micros() as u64);
                if ok {
                    accepted += 1;
                } else {
                    failed += 1;
                }
            }
            (accepted, failed, lat)
        }));
    }
    let mut report = Report {
        label: format!("http: {connections} connections -> {}", urls.join(", ")),
        sent: 0,
        accepted: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        cpu_us: None,
        threads: Vec::new(),
    };
    for t in tasks {
        let (a, f, l) = t.await?;
        report.accepted += a;
        report.failed += f;
        report.latencies.extend(l);
    }
    report.elapsed = start.elapsed();
    report.sent = report.accepted + report.failed;
    report.cpu_us = match (cpu_before, cpu_of(&server_pids)) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    if let Some(before) = threads_before {
        report.threads = thread_cpu_delta(&before, &thread_ticks(&server_pids));
    }
    Ok(report)
}

async fn run_store(
    db: PathBuf,
    concurrency: usize,
    requests: u64,
    max_batch: usize,
) -> anyhow::Result<Report> {
    if db.exists() {
        bail!("{} exists; give a new file", db.display());
    }
    let keyring = Keyring::from_master(&MasterKey::generate());
    let store = Store::open(
        &db,
        keyring,
        StoreOptions {
            max_batch,
            ..StoreOptions::default()
        },
    )?;
    let secret = b"loadgen-secret".to_vec();
    let verifier = Arc::new(
        SourceVerifier::new(VerifierSpec {
            source: "demo".into(),
            preset: Preset::NextPhone,
            secrets: vec![Secret::new(secret.clone())],
            token: None,
            tolerance: VerifierSpec::DEFAULT_TOLERANCE,
            public_url: None,
            allow_ips: Vec::new(),
            trusted_proxies: Vec::new(),
            scheme: SchemeOptions::default(),
        })
        .map_err(|p| anyhow::anyhow!("verifier spec: {p:?}"))?,
    );
    let secret = Arc::new(secret);
    let issued = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_micros(std::process::id());
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency.max(1) {
        let (store, verifier, secret, issued) = (
            store.clone(),
            Arc::clone(&verifier),
            Arc::clone(&secret),
            Arc::clone(&issued),
        );
        tasks.push(tokio::spawn(async move {
            let (mut accepted, mut failed, mut lat) = (0u64, 0u64, Vec::new());
            let mut seq = 0u64;
            while issued.fetch_add(1, Ordering::Relaxed) < requests {
                seq += 1;
                let body = body(worker, seq);
                let t = Instant::now();
                let ok = intake_once(&store, &verifier, &secret, &body).await;
                lat.push(t.elapsed().as_micros() as u64);
                if ok {
                    accepted += 1;
                } else {
                    failed += 1;
                }
            }
            (accepted, failed, lat)
        }));
    }
    let mut report = Report {
        label: format!(
            "store: {concurrency} concurrent intakes, max_batch {max_batch}, db {}",
            db.display()
        ),
        sent: 0,
        accepted: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        cpu_us: None,
        threads: Vec::new(),
    };
    for t in tasks {
        let (a, f, l) = t.await?;
        report.accepted += a;
        report.failed += f;
        report.latencies.extend(l);
    }
    report.elapsed = start.elapsed();
    report.sent = report.accepted + report.failed;
    report.cpu_us = match (cpu_before, cpu_micros(std::process::id())) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    Ok(report)
}

/// One delivery through the same steps the server runs after reading the body.
async fn intake_once(store: &Store, verifier: &SourceVerifier, secret: &[u8], body: &[u8]) -> bool {
    let Ok(signature) = sign(secret, body) else {
        return false;
    };
    let mut headers = actix_web::http::header::HeaderMap::new();
    let (Ok(sig), Ok(ct)) = (
        actix_web::http::header::HeaderValue::from_str(&signature),
        actix_web::http::header::HeaderValue::from_str("application/json"),
    ) else {
        return false;
    };
    headers.insert(
        actix_web::http::header::HeaderName::from_static("x-nextphone-signature"),
        sig,
    );
    headers.insert(actix_web::http::header::CONTENT_TYPE, ct);
    let req = UnverifiedRequest {
        method: "POST",
        path_and_query: "/hooks/demo",
        headers: &headers,
        body,
        peer_ip: std::net::IpAddr::from([127, 0, 0, 1]),
    };
    let now = chrono::Utc::now();
    let Ok(Verdict::Verified(delivery)) = verifier.verify(&req, now) else {
        return false;
    };
    let input = IntakeInput::from_verified(&delivery);
    let Ok(mut normalized) = normalize(&input, now) else {
        return false;
    };
    matches!(
        store
            .intake(input, &mut normalized, vec![JobSpec::new("crm")])
            .await,
        Ok(IntakeOutcome::Accepted { .. })
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let report = match args.mode {
        Mode::Http {
            url,
            secret_file,
            ca,
            connections,
            requests,
            seconds,
            server_pid,
            threads,
        } => {
            run_http(
                url,
                secret_file,
                ca,
                connections,
                requests,
                seconds,
                server_pid,
                threads,
            )
            .await?
        }
        Mode::Store {
            db,
            concurrency,
            requests,
            max_batch,
        } => run_store(db, concurrency, requests, max_batch).await?,
    };
    report.print();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{parse_stat, thread_group};

    #[test]
    fn a_stat_line_gives_the_thread_name_and_its_user_plus_system_ticks() {
        // A name may hold spaces and parentheses: fields are counted after the last ')'.
        let line = "4242 (actix-rt|sy (x)) S 1 2 3 4 5 6 7 8 9 10 120 30 0 0 20 0 9 0 100";
        assert_eq!(parse_stat(line), Some(("actix-rt|sy (x)".to_owned(), 150)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn server_threads_are_grouped_by_what_they_do() {
        assert!(thread_group("wardhook-store-").starts_with("writer"));
        assert!(thread_group("wardhook-ckpt").starts_with("checkpointer"));
        assert!(thread_group("wardhook-mirror").starts_with("audit mirror"));
        assert!(thread_group("actix-rt|system").starts_with("HTTP workers"));
        assert!(thread_group("actix-server wo").starts_with("HTTP workers"));
        assert!(thread_group("actix-server ac").starts_with("TLS acceptor"));
        assert!(thread_group("tokio-runtime-w").starts_with("tokio runtime"));
        assert!(thread_group("tokio-rt-worker").starts_with("tokio runtime"));
        assert_eq!(thread_group("wardhook"), "main");
        assert!(thread_group("wardhook-logfile").starts_with("log writer"));
        assert_eq!(thread_group("pool-12"), "pool-");
    }
}
