//! Load generator for wardhook's intake path.
//!
//! Two modes, so the cost of each layer can be told apart:
//! - `http`: distinct, correctly signed NextPhone events over N keep-alive TLS connections
//!   (one HTTP/1.1 client per connection) to a running server, for a bounded count or duration;
//!   reports accepted deliveries/s and p50/p99 ack latency, and — given `--server-pid` — the
//!   server's CPU time per accepted delivery.
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
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let tck = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(100);
    Some((utime + stime) * 1_000_000 / tck)
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
        } => {
            run_http(
                url,
                secret_file,
                ca,
                connections,
                requests,
                seconds,
                server_pid,
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
