//! Emergency access (HIPAA 164.312(a)(2)(ii)): decrypt a time range of deliveries, offline, with
//! the master key file, into an archive that is itself encrypted.
//!
//! The archive key is random, printed once to the person running the command and never stored,
//! so the archive on a USB stick is useless without the note taken at the time. The export writes
//! one `emergency_access` audit record naming who ran it, how many deliveries it covers, and the
//! SHA-256 of the stated reason (the reason text itself goes into the encrypted archive, because
//! free text may name a patient).
//!
//! Archive format: the line `wardhook-emergency-archive v1\n`, then for every record a 4-byte
//! big-endian length, a 12-byte nonce and the AES-256-GCM ciphertext of one JSON document; AAD
//! is `wardhook-emergency v1 #<index>`, so records cannot be reordered or dropped unnoticed.
//! Record 0 is the header `{reason, created_at, count_hint}`; the last record is
//! `{"end": true, "count": N}`.
//!
//! This file is the backend-neutral part (the archive format, its writer and reader, the audit
//! record); each backend reads its deliveries its own way and hands the events to
//! [`ArchiveWriter`] (`store/sqlite/emergency.rs`, `store/postgres/offline.rs`).

use std::io::{Read, Write};

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::audit::{Action, Actor, AuditRecord, DetailKey, Digest, Outcome};
use crate::store::types::Requester;
use crate::store::StoreError;

/// First line of every archive.
pub const MAGIC: &[u8] = b"wardhook-emergency-archive v1\n";

/// What an export produced.
#[derive(Debug)]
pub struct EmergencyExport {
    /// Deliveries written.
    pub count: u64,
    /// Deliveries in range whose payload was already purged (not exportable).
    pub purged: u64,
    /// The archive key, base64; shown once, never stored.
    pub archive_key_b64: Zeroizing<String>,
}

fn aad(index: u64) -> Vec<u8> {
    format!("wardhook-emergency v1 #{index}").into_bytes()
}

fn seal(
    cipher: &Aes256Gcm,
    index: u64,
    plain: &[u8],
    out: &mut dyn Write,
) -> Result<(), StoreError> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let ct = cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plain,
                aad: &aad(index),
            },
        )
        .map_err(|_| StoreError::Corrupt("archive encryption failed"))?;
    let len = u32::try_from(ct.len()).map_err(|_| StoreError::Corrupt("record too large"))?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(&nonce)?;
    out.write_all(&ct)?;
    Ok(())
}

/// Writes an archive: the header record at creation, one record per event, the end marker at
/// [`ArchiveWriter::finish`]. Backend-neutral: each store reads its deliveries its own way and
/// hands the events here.
pub(crate) struct ArchiveWriter<'o> {
    out: &'o mut dyn Write,
    cipher: Aes256Gcm,
    key_bytes: Zeroizing<[u8; 32]>,
    /// Index of the next record (0 is the header).
    index: u64,
}

impl<'o> ArchiveWriter<'o> {
    /// Check the reason, draw the archive key and write the magic line and the header.
    pub(crate) fn start(
        out: &'o mut dyn Write,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
        reason: &str,
        who: &Requester,
    ) -> Result<Self, StoreError> {
        if reason.trim().len() < 10 {
            return Err(StoreError::InvalidArgument(
                "--reason must say why (at least 10 characters); it is kept in the archive".into(),
            ));
        }
        let mut key_bytes = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut *key_bytes);
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&*key_bytes));
        out.write_all(MAGIC)?;
        let header = serde_json::json!({
            "reason": reason,
            "created_at": Utc::now().to_rfc3339(),
            "since": since.to_rfc3339(),
            "until": until.to_rfc3339(),
            "by": who.user,
        });
        seal(&cipher, 0, header.to_string().as_bytes(), out)?;
        Ok(Self {
            out,
            cipher,
            key_bytes,
            index: 1,
        })
    }

    /// Append one delivery's event; returns how many events the archive holds now.
    pub(crate) fn push(&mut self, event: &wardhook_sdk::Event) -> Result<u64, StoreError> {
        let doc = Zeroizing::new(
            serde_json::to_vec(event)
                .map_err(|_| StoreError::Corrupt("event is not serializable"))?,
        );
        seal(&self.cipher, self.index, &doc, self.out)?;
        self.index += 1;
        Ok(self.index - 1)
    }

    /// Write the end marker; the event count and the archive key (base64). Hand the key out
    /// only once the `emergency_access` record ([`access_record`]) has committed.
    pub(crate) fn finish(self) -> Result<(u64, Zeroizing<String>), StoreError> {
        let count = self.index - 1;
        let end = serde_json::json!({ "end": true, "count": count });
        seal(
            &self.cipher,
            self.index,
            end.to_string().as_bytes(),
            self.out,
        )?;
        self.out.flush()?;
        Ok((count, Zeroizing::new(STANDARD.encode(*self.key_bytes))))
    }
}

/// The `emergency_access` record of an export: who, how many, the SHA-256 of the reason (the
/// text itself is only in the encrypted archive) and the start of the range.
pub(crate) fn access_record(
    who: &Requester,
    count: u64,
    reason: &str,
    since: DateTime<Utc>,
) -> AuditRecord {
    let mut audit = AuditRecord::new(
        Actor::cli_user(&who.user).unwrap_or(Actor::System),
        Action::EmergencyAccess,
        Outcome::Success,
    );
    audit
        .detail
        .insert(DetailKey::Count, i64::try_from(count).unwrap_or(i64::MAX));
    if let Ok(d) = Digest::parse(&hex::encode(Sha256::digest(reason.as_bytes()))) {
        audit.detail.insert(DetailKey::Sha256, d);
    }
    audit
        .detail
        .insert(DetailKey::CutoffUnix, since.timestamp());
    audit
}

/// Why an archive could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not an archive of this format.
    #[error("not a wardhook emergency archive")]
    NotAnArchive,
    /// The key is not 32 bytes of base64.
    #[error("the archive key must be the base64 text printed by emergency-export")]
    BadKey,
    /// Wrong key, or the file was altered, truncated or reordered.
    #[error("record {0} does not decrypt: wrong key, or the archive was altered or truncated")]
    Corrupt(u64),
    /// Reading or writing failed.
    #[error("cannot read or write: {0}")]
    Io(#[from] std::io::Error),
}

/// Decrypt an archive to JSON lines (header first, one event per line); checks the end marker,
/// so a truncated archive is an error, not a shorter export.
pub fn open_archive(
    key_b64: &str,
    input: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<u64, ArchiveError> {
    let key = Zeroizing::new(
        STANDARD
            .decode(key_b64.trim())
            .map_err(|_| ArchiveError::BadKey)?,
    );
    if key.len() != 32 {
        return Err(ArchiveError::BadKey);
    }
    let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key));
    let mut magic = vec![0u8; MAGIC.len()];
    input
        .read_exact(&mut magic)
        .map_err(|_| ArchiveError::NotAnArchive)?;
    if magic != MAGIC {
        return Err(ArchiveError::NotAnArchive);
    }
    let mut index = 0u64;
    loop {
        let mut len = [0u8; 4];
        if input.read_exact(&mut len).is_err() {
            return Err(ArchiveError::Corrupt(index));
        }
        let mut nonce = [0u8; 12];
        input
            .read_exact(&mut nonce)
            .map_err(|_| ArchiveError::Corrupt(index))?;
        let mut ct = vec![0u8; u32::from_be_bytes(len) as usize];
        input
            .read_exact(&mut ct)
            .map_err(|_| ArchiveError::Corrupt(index))?;
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: &ct,
                        aad: &aad(index),
                    },
                )
                .map_err(|_| ArchiveError::Corrupt(index))?,
        );
        let doc: serde_json::Value =
            serde_json::from_slice(&plain).map_err(|_| ArchiveError::Corrupt(index))?;
        if doc.get("end").and_then(|e| e.as_bool()) == Some(true) {
            return Ok(index.saturating_sub(1));
        }
        out.write_all(&plain)?;
        out.write_all(b"\n")?;
        index += 1;
    }
}
