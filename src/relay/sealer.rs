//! The relay's [`Handoff`]: seal a verified delivery to the inside node's public key and commit
//! it to the buffer, keyed for retries by a blind index under the relay's own key.

use std::sync::Arc;

use crate::crypto::Keyring;
use crate::listener::handoff::{Handoff, HandoffError, HandoffFuture, HandoffOutcome, Handover};
use crate::store::relay_buffer::{BufferError, Buffered, NewSealed, RelayBuffer};

use super::record;
use super::seal::PublicKey;

/// Blind-index domain of the relay's dedup keys (the relay's own keyring, not the inside's).
const DEDUP_DOMAIN: &str = "relay_dedup";

/// Seals and buffers verified deliveries.
#[derive(Debug)]
pub struct Sealer {
    public: PublicKey,
    keyring: Keyring,
    buffer: Arc<dyn RelayBuffer>,
}

impl Sealer {
    /// Seal to `public`, index retries under `keyring` (the relay's), commit to `buffer`.
    pub fn new(public: PublicKey, keyring: Keyring, buffer: Arc<dyn RelayBuffer>) -> Self {
        Self {
            public,
            keyring,
            buffer,
        }
    }

    async fn seal_and_put(&self, d: Handover) -> Result<HandoffOutcome, HandoffError> {
        let id = uuid::Uuid::now_v7().hyphenated().to_string();
        let plaintext = record::encode(&id, &d.input, d.received_at);
        let sealed = self.public.seal(&id, &plaintext).map_err(|e| {
            tracing::error!(error = %e, "cannot seal a delivery");
            HandoffError::Unavailable
        })?;
        drop(plaintext);
        // Scoped per source, as the inside node's dedup is.
        let mut material = d.input.source().as_bytes().to_vec();
        material.push(0);
        material.extend_from_slice(&d.dedup.index_material());
        let dedup_index = self.keyring.blind_index(DEDUP_DOMAIN, &material);
        let new = NewSealed {
            id,
            received_at: d.received_at,
            source: d.input.source().to_owned(),
            remote_addr: d.input.client_ip(),
            key_id: sealed.key_id,
            enc: sealed.enc,
            ciphertext: sealed.ciphertext,
            dedup_index,
        };
        drop(d);
        match self.buffer.put(new).await {
            Ok(Buffered::Stored(id)) => Ok(HandoffOutcome::Accepted(id)),
            Ok(Buffered::Duplicate(id)) => Ok(HandoffOutcome::Duplicate(id)),
            Err(BufferError::Full) => Err(HandoffError::Full),
            Err(BufferError::Store(e)) => {
                tracing::error!(error = %e, "relay buffer cannot commit");
                Err(HandoffError::Unavailable)
            }
        }
    }
}

impl Handoff for Sealer {
    fn hand_off(&self, delivery: Handover) -> HandoffFuture<'_> {
        Box::pin(self.seal_and_put(delivery))
    }
}
