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
//! `{"end": true, "count": N}` (N: the deliveries). Between the deliveries and the end, an
//! export may add records of its own ([`ArchiveExtras`]): `emergency-export --with-artifacts`
//! adds each exported delivery's captured artifacts as an `{"artifact": {…metadata}}` record
//! followed by `{"artifact_part": id, "data_b64": …}` records of its decrypted content.
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

/// A sink for records an export adds after its deliveries.
pub type ArchiveRecords<'a> = &'a mut dyn FnMut(&serde_json::Value) -> Result<(), StoreError>;

/// What an export adds after its deliveries: called once with the ids of the deliveries
/// written and a sink for more records; returns how many items it added. Backend-neutral, so
/// the store need not know what the items are (the CLI adds the deliveries' artifacts).
pub type ArchiveExtras<'a> =
    &'a mut dyn FnMut(&[String], ArchiveRecords<'_>) -> Result<u64, StoreError>;

/// What an export produced.
#[derive(Debug)]
pub struct EmergencyExport {
    /// Deliveries written.
    pub count: u64,
    /// Items the export's [`ArchiveExtras`] added (artifacts), 0 without.
    pub extras: u64,
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
    /// The deliveries written, for [`ArchiveExtras`].
    delivery_ids: Vec<String>,
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
            delivery_ids: Vec::new(),
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
        self.delivery_ids.push(event.delivery_id.clone());
        Ok(u64::try_from(self.delivery_ids.len()).unwrap_or(u64::MAX))
    }

    /// Let `extras` append its records after the deliveries; returns how many items it added.
    pub(crate) fn add_extras(&mut self, extras: ArchiveExtras<'_>) -> Result<u64, StoreError> {
        let ids = std::mem::take(&mut self.delivery_ids);
        let added = {
            let mut sink = |doc: &serde_json::Value| -> Result<(), StoreError> {
                let bytes = Zeroizing::new(
                    serde_json::to_vec(doc)
                        .map_err(|_| StoreError::Corrupt("record is not serializable"))?,
                );
                seal(&self.cipher, self.index, &bytes, self.out)?;
                self.index += 1;
                Ok(())
            };
            extras(&ids, &mut sink)?
        };
        self.delivery_ids = ids;
        Ok(added)
    }

    /// Write the end marker; the event count and the archive key (base64). Hand the key out
    /// only once the `emergency_access` record ([`access_record`]) has committed.
    pub(crate) fn finish(self) -> Result<(u64, Zeroizing<String>), StoreError> {
        let count = u64::try_from(self.delivery_ids.len()).unwrap_or(u64::MAX);
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
    /// An artifact written out does not have the SHA-256 recorded at capture.
    #[error("artifact {0} does not match the SHA-256 recorded at capture")]
    ArtifactMismatch(String),
    /// Reading or writing failed.
    #[error("cannot read or write: {0}")]
    Io(#[from] std::io::Error),
}

/// What an opened archive held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenedArchive {
    /// Deliveries (events).
    pub deliveries: u64,
    /// Artifacts.
    pub artifacts: u64,
}

/// The largest record an archive may declare (an event, or a part of an artifact, is far
/// smaller): a corrupt length cannot make the reader allocate gigabytes.
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Decrypt an archive to JSON lines (header first, one event per line); checks the end marker,
/// so a truncated archive is an error, not a shorter export. Returns the number of deliveries.
pub fn open_archive(
    key_b64: &str,
    input: &mut dyn Read,
    out: &mut dyn Write,
) -> Result<u64, ArchiveError> {
    open_archive_into(key_b64, input, out, None).map(|o| o.deliveries)
}

/// An artifact being written out of an archive.
struct ArtifactOut {
    id: String,
    sha256: String,
    file: std::fs::File,
    hasher: Sha256,
}

impl ArtifactOut {
    /// Close the file and compare its SHA-256 with the one recorded at capture.
    fn finish(self) -> Result<(), ArchiveError> {
        self.file.sync_all()?;
        if hex::encode(self.hasher.finalize()) != self.sha256 {
            return Err(ArchiveError::ArtifactMismatch(self.id));
        }
        Ok(())
    }
}

/// An artifact id from an archive, checked before it names a file.
fn artifact_id(doc: &serde_json::Value) -> Option<&str> {
    doc.as_str().filter(|id| {
        id.starts_with("art_")
            && id.len() <= 64
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    })
}

/// [`open_archive`], and with `artifacts_dir` the artifacts' content written to new owner-only
/// files `<dir>/<id><ext>` (each checked against its recorded SHA-256) instead of base64 lines;
/// their metadata lines are still written to `out`.
pub fn open_archive_into(
    key_b64: &str,
    input: &mut dyn Read,
    out: &mut dyn Write,
    artifacts_dir: Option<&std::path::Path>,
) -> Result<OpenedArchive, ArchiveError> {
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
    let mut opened = OpenedArchive::default();
    let mut current: Option<ArtifactOut> = None;
    loop {
        let mut len = [0u8; 4];
        if input.read_exact(&mut len).is_err() {
            return Err(ArchiveError::Corrupt(index));
        }
        let mut nonce = [0u8; 12];
        input
            .read_exact(&mut nonce)
            .map_err(|_| ArchiveError::Corrupt(index))?;
        let len = usize::try_from(u32::from_be_bytes(len)).unwrap_or(usize::MAX);
        if len > MAX_RECORD {
            return Err(ArchiveError::Corrupt(index));
        }
        let mut ct = vec![0u8; len];
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
            if let Some(a) = current.take() {
                a.finish()?;
            }
            if doc.get("count").and_then(serde_json::Value::as_u64) != Some(opened.deliveries) {
                return Err(ArchiveError::Corrupt(index));
            }
            return Ok(opened);
        }
        if let Some(meta) = doc.get("artifact") {
            if let Some(a) = current.take() {
                a.finish()?;
            }
            opened.artifacts += 1;
            if let Some(dir) = artifacts_dir {
                let id = artifact_id(&meta["id"]).ok_or(ArchiveError::Corrupt(index))?;
                let ext = crate::store::artifacts::file_extension(
                    meta["type"].as_str().unwrap_or_default(),
                );
                let path = dir.join(format!("{id}{ext}"));
                current = Some(ArtifactOut {
                    id: id.to_owned(),
                    sha256: meta["sha256"].as_str().unwrap_or_default().to_owned(),
                    file: crate::fsutil::create_new_private(&path)?,
                    hasher: Sha256::new(),
                });
            }
        } else if let (Some(part), Some(dir_out)) = (doc.get("artifact_part"), current.as_mut()) {
            if artifact_id(part) != Some(dir_out.id.as_str()) {
                return Err(ArchiveError::Corrupt(index));
            }
            let data = Zeroizing::new(
                STANDARD
                    .decode(doc["data_b64"].as_str().unwrap_or_default())
                    .map_err(|_| ArchiveError::Corrupt(index))?,
            );
            dir_out.hasher.update(&data[..]);
            dir_out.file.write_all(&data)?;
            index += 1;
            continue;
        } else if doc.get("artifact_part").is_some() && artifacts_dir.is_some() {
            // A part with no artifact record before it.
            return Err(ArchiveError::Corrupt(index));
        } else if doc.get("artifact_part").is_none() && index > 0 {
            opened.deliveries += 1;
        }
        out.write_all(&plain)?;
        out.write_all(b"\n")?;
        index += 1;
    }
}
