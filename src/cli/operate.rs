//! The operator commands on the stored data, one function each: `emergency-export|open`,
//! `quarantine`, `keys`, `purge`, `backup`, `doctor`. Each opens the store through
//! [`super::storage`] (the [`crate::store::Storage`] or [`crate::store::Maintenance`] of
//! whichever backend the config names) and prints what it did.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

use super::{doctor, intake, smart_keys, storage, KeysCommand, QuarantineCommand};
use crate::config::Config;
use crate::store::admin::{PurgeProgress, Requester};

/// `emergency-export`: decrypt a time range into an archive under a key printed once; with
/// `with_artifacts`, the deliveries' captured artifacts too.
pub(super) fn emergency_export(
    config: &Path,
    reason: &str,
    (since, until): (&str, Option<&str>),
    out: &Path,
    with_artifacts: bool,
) -> anyhow::Result<ExitCode> {
    let store = storage::open_maintenance(config)?;
    let since = intake::parse_time(since)?;
    let until = until
        .map(intake::parse_time)
        .transpose()?
        .unwrap_or_else(chrono::Utc::now);
    // Opened before the archive file is created, so a config without `[artifacts]` leaves
    // nothing behind.
    let artifacts = if with_artifacts {
        Some(super::artifacts::ArchiveArtifacts::open(config)?)
    } else {
        None
    };
    let mut file = crate::fsutil::create_new_private(out)
        .with_context(|| format!("cannot create {} (it must not exist)", out.display()))?;
    let mut extras = artifacts.as_ref().map(|a| {
        move |ids: &[String], sink: crate::store::archive::ArchiveRecords<'_>| a.append(ids, sink)
    });
    let report = store.emergency_export(
        since,
        until,
        reason,
        &Requester::cli_user(),
        &mut std::io::BufWriter::new(&mut file),
        &mut |n| {
            if n % 10_000 == 0 {
                eprintln!("emergency-export: {n} deliveries written…");
            }
        },
        extras
            .as_mut()
            .map(|f| f as crate::store::archive::ArchiveExtras<'_>),
    )?;
    file.sync_all()?;
    eprintln!(
        "wrote {} deliveries{} to {} ({} in range already purged); this access is in the audit log",
        report.count,
        if with_artifacts {
            format!(" and {} artifacts", report.extras)
        } else {
            String::new()
        },
        out.display(),
        report.purged
    );
    eprintln!("archive key (shown once, not stored anywhere; keep it apart from the archive):");
    println!("{}", report.archive_key_b64.as_str());
    Ok(ExitCode::SUCCESS)
}

/// `emergency-open`: decrypt an archive to JSON lines on stdout; with `artifacts_dir`, the
/// artifacts into files there.
pub(super) fn emergency_open(
    archive: &Path,
    key_file: &Path,
    artifacts_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let key = zeroize::Zeroizing::new(
        std::fs::read_to_string(key_file)
            .with_context(|| format!("cannot read {}", key_file.display()))?,
    );
    let mut input = std::io::BufReader::new(
        std::fs::File::open(archive)
            .with_context(|| format!("cannot open {}", archive.display()))?,
    );
    if let Some(dir) = artifacts_dir {
        crate::fsutil::create_private_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let opened = crate::store::archive::open_archive_into(
        &key,
        &mut input,
        &mut std::io::stdout().lock(),
        artifacts_dir,
    )?;
    eprintln!(
        "{} deliveries, {} artifacts",
        opened.deliveries, opened.artifacts
    );
    Ok(ExitCode::SUCCESS)
}

/// `quarantine list|show`.
pub(super) fn quarantine(config: &Path, command: QuarantineCommand) -> anyhow::Result<ExitCode> {
    let store = storage::OfflineStore::open(config)?;
    let mut out = std::io::stdout().lock();
    match command {
        QuarantineCommand::List { args } => {
            let (filter, format) = args.split()?;
            let rows = store.run(|s| s.list_quarantine(filter))?;
            intake::print_quarantine(&rows, format, &mut out)?;
        }
        QuarantineCommand::Show { id } => {
            let who = Requester::cli_user();
            let entry = store.run(|s| s.show_quarantine(id, who))?;
            intake::print_quarantine_entry(&entry, &mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `keys smart|smart-jwks|rotate`.
pub(super) fn keys(config: &Path, command: KeysCommand) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match command {
        KeysCommand::Smart { out: dir } => smart_keys::generate(&dir, &mut out)?,
        KeysCommand::SmartJwks { key, kid } => smart_keys::print_jwks(&key, kid, &mut out)?,
        KeysCommand::Rotate => {
            let store = storage::open_maintenance(config)?;
            intake::keys_rotate(store.as_ref(), &mut out)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `purge --older-than`.
pub(super) fn purge(config: &Path, older_than: &str) -> anyhow::Result<ExitCode> {
    let age = intake::parse_duration(older_than)?;
    let store = storage::OfflineStore::open(config)?;
    let cutoff = chrono::Utc::now() - age;
    let who = Requester::cli_user();
    let mut shown = intake::Tenths::new("purge", "rows", 5_000);
    let progress = Box::new(move |p: PurgeProgress| {
        shown.update(p.done, p.total);
    });
    let report = store.run(|s| s.purge_with_progress(cutoff, who, progress))?;
    intake::print_purge(cutoff, &report, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

/// `backup --to`: SQLite's online copy, or PostgreSQL's documented procedure.
pub(super) fn backup(config: &Path, to: &Path) -> anyhow::Result<ExitCode> {
    let offline = Config::load_offline(config)?;
    let store = storage::open_maintenance(config)?;
    intake::backup(
        store.as_ref(),
        to,
        Some(&offline.master_key_file),
        &mut std::io::stdout().lock(),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// `doctor`: exit 0 unless a check failed.
pub(super) fn doctor(config: &Path, retention: Option<&str>) -> anyhow::Result<ExitCode> {
    let options = doctor::DoctorOptions {
        retention: retention.map(intake::parse_duration).transpose()?,
        ..doctor::DoctorOptions::default()
    };
    let report = doctor::run_doctor_with(config, &options, &mut std::io::stdout().lock())?;
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
