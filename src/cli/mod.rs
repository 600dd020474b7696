//! The `wardhook` command line: the binary's edge, where errors become one line and an exit
//! code. Every command takes `--config PATH` (default `config/wardhook.toml`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::app::{shutdown_signal, Application};
use crate::config::{Config, DEFAULT_CONFIG_PATH};
use crate::crypto::MasterKey;
use crate::{certs, dev, telemetry};

pub mod artifacts;
pub mod audit;
pub mod dlq;
pub mod doctor;
pub mod intake;
mod operate;
pub mod relay;
pub mod reverify;
pub mod send;
pub mod smart_keys;
pub mod storage;

/// wardhook: a self-hosted webhook receiver for clinics.
#[derive(Debug, Parser)]
#[command(name = "wardhook", version, about, propagate_version = true)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the receiver until SIGTERM or Ctrl-C.
    Serve {
        /// Ignore --config and serve a generated development setup from data/dev/ (NOT for
        /// production).
        #[arg(long)]
        dev: bool,
    },
    /// Check the config and print every problem with its key path.
    CheckConfig,
    /// Write a new random master key (32 bytes, base64, mode 0600). Never overwrites.
    Keygen {
        /// Where to write it; default: keys.master_key_file of the config, else data/master.key.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
    },
    /// Print the headers `--source`'s sender would send for the body on stdin.
    Sign {
        /// The source name.
        #[arg(long)]
        source: String,
        /// The URL the sender posts to (default: the source's public_url, else this server).
        #[arg(long)]
        url: Option<String>,
        /// Ed25519 private key file, for presets that sign asymmetrically.
        #[arg(long, value_name = "PATH")]
        signing_key: Option<PathBuf>,
    },
    /// Sign the preset's sample event for `--source` and post it to the running server.
    SendTest {
        /// The source name.
        #[arg(long)]
        source: String,
        /// CA certificate to trust for the server (e.g. data/dev/certs/dev-ca.crt).
        #[arg(long, value_name = "PATH")]
        ca: Option<PathBuf>,
        /// Ed25519 private key file, for presets that sign asymmetrically.
        #[arg(long, value_name = "PATH")]
        signing_key: Option<PathBuf>,
    },
    /// Break-glass access: decrypt deliveries received in a time range into an encrypted archive,
    /// offline, with the master key file; prints the archive key once. Audited.
    EmergencyExport {
        /// Why (kept inside the encrypted archive; its SHA-256 goes into the audit record).
        #[arg(long)]
        reason: String,
        /// Received at or after (RFC 3339 or YYYY-MM-DD, UTC).
        #[arg(long)]
        since: String,
        /// Received before (RFC 3339 or YYYY-MM-DD, UTC); default now.
        #[arg(long)]
        until: Option<String>,
        /// The archive file to create (must not exist).
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
        /// Also put the exported deliveries' captured artifacts (recordings, transcripts) into
        /// the archive, decrypted; each is a `payload_read` audit record.
        #[arg(long)]
        with_artifacts: bool,
    },
    /// Decrypt an emergency archive to JSON lines on stdout.
    EmergencyOpen {
        /// The archive file.
        archive: PathBuf,
        /// File holding the archive key printed by emergency-export (not on the command line,
        /// where other users could see it).
        #[arg(long, value_name = "PATH")]
        key_file: PathBuf,
        /// Write the archive's artifacts into this folder as new owner-only files
        /// (`<id>.wav`, …), each checked against its recorded SHA-256, instead of base64 lines.
        #[arg(long, value_name = "DIR")]
        artifacts_dir: Option<PathBuf>,
    },
    /// Ask the running server to re-read its config, certificates and secrets (SIGHUP).
    Reload,
    /// Check key permissions, certificate expiry, disk space, database integrity, the audit
    /// chain and backups past retention, and say what to fix. Exits non-zero when a check fails.
    Doctor {
        /// Payload retention to judge backups against, e.g. `90d` (default: the retention the
        /// latest `purge` applied).
        #[arg(long, value_name = "DURATION")]
        retention: Option<String>,
    },
    /// Dead letters: jobs that failed permanently or ran out of attempts.
    Dlq {
        /// Which.
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Captured call recordings and transcripts (see docs/ARTIFACTS.md).
    Artifacts {
        /// Which.
        #[command(subcommand)]
        command: artifacts::ArtifactsCommand,
    },
    /// Deliveries on the database.
    Deliveries {
        /// Which.
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Authentic deliveries that could not be parsed, kept encrypted.
    Quarantine {
        /// Which.
        #[command(subcommand)]
        command: QuarantineCommand,
    },
    /// Payload encryption keys.
    Keys {
        /// Which.
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Delete payloads past retention and destroy their period keys (crypto-shredding in this
    /// database; backups taken earlier keep their copy: see `backup`); audit records and
    /// delivery metadata stay. Works in chunks of at most 500 rows, so the server keeps taking
    /// deliveries meanwhile; shows progress on long runs.
    Purge {
        /// Retention, e.g. `90d`, `12w`, `720h`.
        #[arg(long, value_name = "DURATION")]
        older_than: String,
    },
    /// Copy the database with SQLite's online backup (the master key is never copied). Writes
    /// `PATH.manifest.json` (0600) listing the periods the copy holds, and a `backup_taken`
    /// audit record naming the path and its oldest and newest period: a later purge does not
    /// reach the copy, so delete it once its oldest period is past retention (doctor warns).
    Backup {
        /// The backup file to create (must not exist).
        #[arg(long, value_name = "PATH")]
        to: PathBuf,
    },
    /// Verify, search and export the audit log (works offline, on the database).
    Audit {
        /// Which.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Certificate helpers.
    Certs {
        /// Which.
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Admin console tokens (API, dashboard, /metrics).
    Tokens {
        /// Which.
        #[command(subcommand)]
        command: crate::admin::cli::TokensCommand,
    },
    /// The DMZ relay (docs/RELAY.md): without a subcommand, run it with `--config` (a config
    /// with `[relay_server]` and never the inside private key); `relay keygen` makes the inside
    /// node's key pair.
    #[command(args_conflicts_with_subcommands = true)]
    Relay {
        /// Which (none: run the relay).
        #[command(subcommand)]
        command: Option<relay::RelayCommand>,
    },
}

/// Filters shared by `audit search` and `audit export`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditFilterArgs {
    /// Records at or after (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long)]
    pub since: Option<String>,
    /// Records before (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long)]
    pub until: Option<String>,
    /// The sender's call id (turned into its blind index; never stored or printed).
    #[arg(long)]
    pub call_id: Option<String>,
    /// A delivery id.
    #[arg(long)]
    pub delivery_id: Option<String>,
    /// A source name.
    #[arg(long)]
    pub source: Option<String>,
    /// An action, e.g. `payload_read` (see docs/AUDIT.md).
    #[arg(long)]
    pub action: Option<String>,
    /// An actor, e.g. `alice` or `cli_user:alice`.
    #[arg(long)]
    pub actor: Option<String>,
}

impl From<AuditFilterArgs> for audit::SearchArgs {
    fn from(a: AuditFilterArgs) -> Self {
        Self {
            since: a.since,
            until: a.until,
            call_id: a.call_id,
            delivery_id: a.delivery_id,
            source: a.source,
            action: a.action,
            actor: a.actor,
        }
    }
}

/// `wardhook audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain in the database and the JSONL mirror against the signed checkpoints;
    /// exits 3 naming the first bad sequence number.
    Verify {
        /// Check only the database, not the JSONL mirror.
        #[arg(long)]
        skip_mirror: bool,
        /// Accept a mirror whose oldest files were rotated away (it starts after sequence 1).
        #[arg(long)]
        allow_partial_mirror: bool,
    },
    /// Print matching records, one per line.
    Search {
        #[command(flatten)]
        filter: AuditFilterArgs,
    },
    /// Export matching records for a SIEM or an auditor.
    Export {
        /// `jsonl`, `csv` or `fhir` (a FHIR R4 Bundle of AuditEvent resources).
        #[arg(long, default_value = "jsonl")]
        format: String,
        /// Output file, or `-` for stdout.
        #[arg(long, default_value = "-")]
        out: PathBuf,
        #[command(flatten)]
        filter: AuditFilterArgs,
    },
}

/// Filters of `dlq list` and `dlq retry --all`.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqFilterArgs {
    /// Only this handler.
    #[arg(long)]
    pub handler: Option<String>,
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
}

impl From<DlqFilterArgs> for crate::store::jobs::DeadFilter {
    fn from(a: DlqFilterArgs) -> Self {
        Self {
            handler: a.handler,
            source: a.source,
            job_id: None,
            limit: 0,
        }
    }
}

/// `wardhook dlq …`
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters (metadata only).
    List {
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// At most this many (newest first).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// `table` or `json`.
        #[arg(long, default_value = "table")]
        format: String,
    },
    /// Show one dead letter and its attempts.
    Show {
        /// The job id from `dlq list`.
        job: i64,
    },
    /// Put dead letters back in the queue with a fresh retry schedule.
    Retry {
        /// The job id from `dlq list`.
        job: Option<i64>,
        /// Every dead letter matching the filters.
        #[arg(long, conflicts_with = "job")]
        all: bool,
        #[command(flatten)]
        filter: DlqFilterArgs,
    },
}

/// Filters of `deliveries list` and `quarantine list`.
#[derive(Debug, Clone, clap::Args)]
pub struct ListArgs {
    /// Only this source.
    #[arg(long)]
    pub source: Option<String>,
    /// Received at or after (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long)]
    pub since: Option<String>,
    /// Received before (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this status (`accepted`, `purged`; `quarantined` for quarantine).
    #[arg(long)]
    pub status: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// `table` or `json`.
    #[arg(long, default_value = "table")]
    pub format: String,
}

impl ListArgs {
    fn split(self) -> anyhow::Result<(crate::store::admin::ListFilter, intake::OutputFormat)> {
        let format = self
            .format
            .parse()
            .map_err(|_| anyhow::anyhow!("--format must be table or json"))?;
        let filter = crate::store::admin::ListFilter {
            source: self.source,
            since: self.since.as_deref().map(intake::parse_time).transpose()?,
            until: self.until.as_deref().map(intake::parse_time).transpose()?,
            status: self.status,
            limit: self.limit,
        };
        Ok((filter, format))
    }
}

/// `wardhook quarantine …`
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List quarantined deliveries (metadata and reason only).
    List {
        #[command(flatten)]
        args: ListArgs,
    },
    /// Decrypt and print one quarantined body (the read is audited).
    Show {
        /// The quarantine id (from the 400 answer or `quarantine list`).
        id: String,
    },
}

/// `wardhook keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// New data keys for new writes; re-encrypt older rows in the background, with progress.
    /// Resumable: run it again after an interruption.
    Rotate,
    /// A key pair for SMART Backend Services (the fhir handler): writes the private key
    /// (ES384, PKCS#8 PEM, mode 0600; never overwrites) and prints the public JWKS to register
    /// with the EHR.
    Smart {
        /// Where to write the private key.
        #[arg(long, value_name = "PATH")]
        out: PathBuf,
    },
    /// Print the public JWKS of an existing SMART key, to register it again.
    SmartJwks {
        /// The private key file.
        #[arg(long, value_name = "PATH")]
        key: PathBuf,
        /// The kid the handler is configured with (default: the key's thumbprint).
        #[arg(long)]
        kid: Option<String>,
    },
}

/// `wardhook deliveries …`
#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// List deliveries (metadata only: id, source, event type, received, status).
    List {
        #[command(flatten)]
        args: ListArgs,
    },
    /// Decrypt and print one delivery's event (the read is audited with your user name).
    Show {
        /// The delivery id.
        id: String,
    },
    /// Check again that a stored delivery is exactly what its sender signed. Exits 0 when the
    /// stored body and signature verify, 3 when they do not (altered, or the signing secret is
    /// no longer configured), 4 when the source's scheme signs nothing about the body that was
    /// kept (bearer token, password, API key): not re-verifiable, which is not tampering.
    Reverify {
        /// The delivery id.
        id: String,
    },
    /// Index the caller's phone of deliveries stored before "find a call" by phone existed, so
    /// a search by phone finds them too. Runs beside the server; resumable (a rerun reads only
    /// deliveries still without an index, including every one whose event names no number).
    IndexPhones {
        /// Deliveries decrypted per batch; each batch's indexes are one short transaction.
        #[arg(long, default_value_t = crate::store::phone_backfill::DEFAULT_BATCH as u64,
              value_parser = clap::value_parser!(u64)
                  .range(1..=crate::store::phone_backfill::MAX_BATCH as u64))]
        batch: u64,
    },
    /// Run a delivery's handlers again (all, or one with --handler).
    Replay {
        /// The delivery id.
        id: String,
        /// Only this handler (created if the delivery never had a job for it).
        #[arg(long)]
        handler: Option<String>,
    },
}

/// Exit code of `audit verify` when the log has been tampered with, and of `deliveries
/// reverify` when a stored delivery does not verify.
pub const EXIT_AUDIT_TAMPERED: u8 = 3;

/// Exit code of `deliveries reverify` when the source's scheme leaves nothing to check again
/// (a token, password or API key proves who sent a delivery, not what it held).
pub const EXIT_NOT_REVERIFIABLE: u8 = 4;

/// `wardhook certs …`
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Generate a development CA and a localhost server certificate (NOT for production).
    Dev {
        /// Folder to write dev-ca.crt, server.crt and server.key into.
        #[arg(long, value_name = "DIR", default_value = "certs")]
        dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Parse arguments, run, and turn the result into an exit code with a one-line reason.
pub fn main() -> ExitCode {
    crate::telemetry::install_panic_hook();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wardhook: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One function per command; this only dispatches.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let config = cli.config.as_path();
    match cli.command {
        Command::Serve { dev } => serve(config, dev),
        Command::CheckConfig => Ok(check_config(config)),
        Command::EmergencyExport {
            reason,
            since,
            until,
            out,
            with_artifacts,
        } => operate::emergency_export(
            config,
            &reason,
            (&since, until.as_deref()),
            &out,
            with_artifacts,
        ),
        Command::EmergencyOpen {
            archive,
            key_file,
            artifacts_dir,
        } => operate::emergency_open(&archive, &key_file, artifacts_dir.as_deref()),
        Command::Sign {
            source,
            url,
            signing_key,
        } => sign(config, &source, url.as_deref(), signing_key.as_deref()),
        Command::SendTest {
            source,
            ca,
            signing_key,
        } => send_test(config, &source, ca.as_deref(), signing_key.as_deref()),
        Command::Reload => reload(config),
        Command::Keygen { out } => keygen(config, out),
        Command::Audit { command } => run_audit(config, command),
        Command::Dlq { command } => run_dlq(config, command),
        Command::Deliveries { command } => run_deliveries(config, command),
        Command::Artifacts { command } => artifacts::run(config, command),
        Command::Quarantine { command } => operate::quarantine(config, command),
        Command::Keys { command } => operate::keys(config, command),
        Command::Purge { older_than } => operate::purge(config, &older_than),
        Command::Backup { to } => operate::backup(config, &to),
        Command::Doctor { retention } => operate::doctor(config, retention.as_deref()),
        Command::Tokens { command } => tokens(config, command),
        Command::Certs {
            command: CertsCommand::Dev { dir, force },
        } => certs_dev(&dir, force),
        Command::Relay { command } => relay::run(config, command),
    }
}

/// `sign`: print the signature header the source's sender would send for stdin's body.
fn sign(
    config: &Path,
    source: &str,
    url: Option<&str>,
    signing_key: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let config = crate::app::load_checked(config)?;
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
        .context("cannot read the body from stdin")?;
    let signed = send::sign(&config, source, &body, url, signing_key)?;
    send::print_signed(&signed, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

/// `send-test`: sign the preset's sample event and post it to the running server.
fn send_test(
    config: &Path,
    source: &str,
    ca: Option<&Path>,
    signing_key: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let config = crate::app::load_checked(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let status = runtime.block_on(send::send_test(
        &config,
        source,
        ca,
        signing_key,
        &mut std::io::stdout(),
    ))?;
    Ok(if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `reload`: SIGHUP the server whose pid file sits beside the configured database.
fn reload(config: &Path) -> anyhow::Result<ExitCode> {
    let pid_file = pid_file_for(config)?;
    let pid = std::fs::read_to_string(&pid_file).with_context(|| {
        format!(
            "no running server found ({} unreadable)",
            pid_file.display()
        )
    })?;
    let pid = pid.trim();
    anyhow::ensure!(
        !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()),
        "{} does not hold a process id",
        pid_file.display()
    );
    let status = std::process::Command::new("kill")
        .args(["-HUP", pid])
        .status()
        .context("cannot run kill")?;
    anyhow::ensure!(status.success(), "no wardhook process {pid} to signal");
    println!("asked wardhook (pid {pid}) to reload; the outcome is in its log and the audit trail");
    Ok(ExitCode::SUCCESS)
}

/// `keygen`: a new master key file, never overwriting one.
fn keygen(config: &Path, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path = out.unwrap_or_else(|| default_key_path(config));
    MasterKey::generate_file(&path)?;
    println!(
        "wrote a new master key to {} (mode 0600); back it up apart from the database",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `tokens …`: the console's API tokens, on either backend.
fn tokens(config: &Path, command: crate::admin::cli::TokensCommand) -> anyhow::Result<ExitCode> {
    let store = storage::OfflineStore::open(config)?;
    store.block_on(|s| {
        Box::pin(async move {
            let mut out = std::io::stdout();
            crate::admin::cli::run(s.console(), command, &mut out).await
        })
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `certs dev`: development certificates (not for production).
fn certs_dev(dir: &Path, force: bool) -> anyhow::Result<ExitCode> {
    let paths = certs::write_dev_certs(dir, force)?;
    println!(
        "wrote DEV certificates (not for production): {}, {}, {}",
        paths.ca.display(),
        paths.cert.display(),
        paths.key.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Open the configured SQLite file (which must exist), mirroring audit records as the server
/// does.
fn open_sqlite(offline: &crate::config::OfflineConfig) -> anyhow::Result<crate::store::Store> {
    anyhow::ensure!(
        offline.storage_path.exists(),
        "no database at {}",
        offline.storage_path.display()
    );
    let keyring = crate::crypto::Keyring::from_master(&offline.master_key);
    let mirror = crate::audit::Mirror::new(&offline.audit.dir)?;
    Ok(crate::store::Store::open(
        &offline.storage_path,
        keyring,
        crate::store::StoreOptions {
            audit_mirror: Some(std::sync::Arc::new(mirror)),
            ..crate::store::StoreOptions::default()
        },
    )?)
}

fn run_dlq(config: &Path, command: DlqCommand) -> anyhow::Result<ExitCode> {
    let store = storage::OfflineStore::open(config)?;
    let mut out = std::io::stdout().lock();
    match command {
        DlqCommand::List {
            filter,
            limit,
            format,
        } => {
            let (filter, json) = dlq_list_args(filter, limit, &format)?;
            let rows = store.run(|s| s.list_dead(filter))?;
            dlq::print_dead(&rows, json, &mut out)?;
        }
        DlqCommand::Retry { job, all, filter } => {
            let filter = dlq::retry_filter(job, all, filter.into())?;
            let who = crate::store::admin::Requester::cli_user();
            let n = store.run(|s| s.retry_dead(filter, who))?;
            dlq::print_retried(n, &mut out)?;
        }
        DlqCommand::Show { job } => {
            let filter = crate::store::jobs::DeadFilter {
                job_id: Some(job),
                ..Default::default()
            };
            let dead = store
                .run(|s| s.list_dead(filter))?
                .pop()
                .ok_or(dlq::DlqError::NotFound(job))?;
            let attempts = store.run(|s| s.job_attempts(job))?;
            dlq::print_dead_letter(&dead, &attempts, &mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `dlq list`'s filter and whether to print JSON.
fn dlq_list_args(
    filter: DlqFilterArgs,
    limit: usize,
    format: &str,
) -> anyhow::Result<(crate::store::jobs::DeadFilter, bool)> {
    let json = match format {
        "json" => true,
        "table" => false,
        _ => anyhow::bail!("--format must be table or json"),
    };
    let mut filter: crate::store::jobs::DeadFilter = filter.into();
    filter.limit = limit;
    Ok((filter, json))
}

fn run_deliveries(config: &Path, command: DeliveriesCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let who = crate::store::admin::Requester::cli_user();
    let shared = || storage::OfflineStore::open(config);
    match command {
        DeliveriesCommand::Replay { id, handler } => {
            let n = shared()?.run(|s| s.replay(id.clone(), handler, who))?;
            dlq::print_replayed(n, &id, &mut out)?;
        }
        DeliveriesCommand::List { args } => {
            let (filter, format) = args.split()?;
            let rows = shared()?.run(|s| s.list_deliveries(filter))?;
            intake::print_deliveries(&rows, format, &mut out)?;
        }
        DeliveriesCommand::Show { id } => {
            let event = shared()?.run(|s| s.show_delivery(id, who))?;
            intake::print_event(&event, &mut out)?;
        }
        DeliveriesCommand::IndexPhones { batch } => {
            let store = storage::open_maintenance(config)?;
            let batch = usize::try_from(batch).unwrap_or(usize::MAX);
            intake::index_phones(store.as_ref(), batch, &mut out)?;
        }
        DeliveriesCommand::Reverify { id } => {
            let store = storage::open_maintenance(config)?;
            let full = crate::app::load_checked(config)?;
            match reverify::reverify(&full, store.as_ref(), &id, &mut out)? {
                reverify::Reverified::NotAuthentic { .. } => {
                    return Ok(ExitCode::from(EXIT_AUDIT_TAMPERED))
                }
                reverify::Reverified::NotReverifiable { .. } => {
                    return Ok(ExitCode::from(EXIT_NOT_REVERIFIABLE))
                }
                reverify::Reverified::Authentic { .. } => {}
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_audit(config: &Path, command: AuditCommand) -> anyhow::Result<ExitCode> {
    let store = storage::open_maintenance(config)?;
    let stdout = std::io::stdout();
    match command {
        AuditCommand::Verify {
            skip_mirror,
            allow_partial_mirror,
        } => {
            let options = crate::store::maintenance::VerifyOptions {
                audit_dir: None,
                skip_mirror,
                allow_partial_mirror,
            };
            match store.audit_verify(options, &mut stdout.lock())? {
                crate::store::maintenance::AuditVerdict::Intact(_) => Ok(ExitCode::SUCCESS),
                crate::store::maintenance::AuditVerdict::Tampered(reason) => {
                    eprintln!("wardhook: error: {reason}");
                    Ok(ExitCode::from(EXIT_AUDIT_TAMPERED))
                }
            }
        }
        AuditCommand::Search { filter } => {
            store.audit_search(&filter.into(), &mut stdout.lock())?;
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Export {
            format,
            out,
            filter,
        } => {
            let format: audit::ExportFormat = format
                .parse()
                .map_err(|_| anyhow::anyhow!("--format must be jsonl, csv or fhir"))?;
            let args = filter.into();
            let mut stderr = std::io::stderr();
            let n = if out.as_os_str() == "-" {
                store.audit_export(format, &args, &mut stdout.lock(), &mut stderr)?
            } else {
                // Audit records: owner-only, like every file holding them.
                let mut file = crate::fsutil::create_new_private(&out).with_context(|| {
                    format!("cannot create {} (it must not exist)", out.display())
                })?;
                store.audit_export(format, &args, &mut file, &mut stderr)?
            };
            eprintln!("exported {n} record{}", plural(n as usize));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// keygen's default target: the config's `keys.master_key_file` when the file parses that far.
fn default_key_path(config: &Path) -> PathBuf {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| {
            t.get("keys")?
                .get("master_key_file")?
                .as_str()
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("data/master.key"))
}

/// The pid file lives beside the database, so `reload` finds the server serving that data.
fn pid_file_for(config: &Path) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", config.display()))?;
    let db = table
        .get("storage")
        .and_then(|s| s.get("path"))
        .and_then(|p| p.as_str())
        .unwrap_or("data/wardhook.db");
    Ok(pid_file_of(Path::new(db)))
}

fn pid_file_of(db: &Path) -> PathBuf {
    db.with_extension("pid")
}

fn check_config(path: &Path) -> ExitCode {
    // The same builders as `serve`: a file that passes here starts.
    let checked =
        Config::load(path).and_then(|c| crate::app::build_stages(&c).map(|stages| (c, stages)));
    match checked {
        Ok((c, stages)) => {
            for (_, warning) in crate::app::startup_warnings(&c, &stages.plan) {
                println!("warning: {warning}");
            }
            println!(
                "{}: ok ({} source{}, {} handler{}, {} route{})",
                path.display(),
                c.sources.len(),
                plural(c.sources.len()),
                c.handlers.len(),
                plural(c.handlers.len()),
                c.routes.len(),
                plural(c.routes.len()),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            for p in &e.problems {
                println!("{p}");
            }
            eprintln!(
                "wardhook: error: {} has {} problem{}",
                path.display(),
                e.problems.len(),
                plural(e.problems.len())
            );
            ExitCode::FAILURE
        }
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn serve(config_path: &Path, dev: bool) -> anyhow::Result<ExitCode> {
    let config_path = if dev {
        eprintln!("{}", dev::BANNER);
        dev::prepare(Path::new(dev::DEV_DIR)).context("cannot prepare the dev setup")?
    } else {
        config_path.to_owned()
    };
    let config = Config::load(&config_path)?;
    if config.relay_server.is_some() {
        anyhow::bail!(
            "{} has [relay_server]: it is a DMZ relay's config; start it with `wardhook relay`",
            config_path.display()
        );
    }
    run_server(config_path, config, dev)
}

/// Serve a loaded config until SIGTERM (`serve`, and `relay` after its own checks).
fn run_server(config_path: PathBuf, config: Config, dev: bool) -> anyhow::Result<ExitCode> {
    let _log = telemetry::init(&config.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let pid_file = pid_file_of(&config.storage_path);
    runtime.block_on(async move {
        let app = Application::build(config).await?;
        if let Err(e) =
            crate::fsutil::write_private(&pid_file, format!("{}\n", std::process::id()).as_bytes())
        {
            tracing::warn!(error = %e, file = %pid_file.display(), "cannot write pid file; `wardhook reload` will not find this server");
        }
        let reloader = app.reloader();
        let reload_path = config_path.clone();
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                tracing::warn!("cannot listen for SIGHUP; reload disabled");
                return;
            };
            while hup.recv().await.is_some() {
                match reloader.reload_audited(&reload_path).await {
                    Ok(report) => tracing::info!(
                        config_sha256 = %report.config_sha256,
                        sources = report.sources,
                        routes = report.routes,
                        certificate_reloaded = report.certificate_reloaded,
                        needs_restart = ?report.needs_restart,
                        "config reloaded"
                    ),
                    Err(e) => tracing::error!(
                        error = %e,
                        "reload refused; the previous config stays in force"
                    ),
                }
            }
        });
        tracing::info!(
            port = app.port(),
            tls = app.is_tls(),
            relay_pull_port = app.relay_pull_port(),
            config = %config_path.display(),
            "wardhook listening"
        );
        if dev {
            eprintln!(
                "dev server: https://127.0.0.1:{}/hooks/demo  (trust {}/certs/dev-ca.crt)",
                app.port(),
                dev::DEV_DIR
            );
        }
        app.run_until(shutdown_signal()).await?;
        let _ = std::fs::remove_file(&pid_file);
        tracing::info!("wardhook stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command, DeliveriesCommand};

    /// `deliveries index-phones --batch` takes 1 to `MAX_BATCH`, 256 when not given.
    #[test]
    fn index_phones_takes_a_bounded_batch() {
        let batch = |extra: &[&str]| {
            let args = [&["wardhook", "deliveries", "index-phones"][..], extra].concat();
            match Cli::try_parse_from(args).map(|cli| cli.command) {
                Ok(Command::Deliveries {
                    command: DeliveriesCommand::IndexPhones { batch },
                }) => Ok(batch),
                Ok(other) => panic!("{other:?}"),
                Err(e) => Err(e.kind()),
            }
        };
        assert_eq!(batch(&[]), Ok(256));
        assert_eq!(batch(&["--batch", "5000"]), Ok(5000));
        for refused in ["0", "5001", "-1", "many"] {
            assert!(batch(&["--batch", refused]).is_err(), "{refused}");
        }
    }
}
