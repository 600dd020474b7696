//! Loading what a delivery's sender signed, so its signature can be checked again later.
//!
//! An auditor's question "is this stored delivery exactly what the sender signed?" is answered
//! by re-running the source's verification over the stored raw body and signature headers. The
//! read decrypts the payload, so it is audited (`delivery_reverified`) like any other read.

use rusqlite::TransactionBehavior;

use super::Store;
use crate::store::payload::decode_body;
use crate::store::types::Requester;
use crate::store::StoreError;

pub use crate::store::maintenance::StoredRequest;

/// Decrypt delivery `id`'s raw body and signature headers; the read is audited.
pub fn load_stored_request(
    store: &Store,
    id: &str,
    who: &Requester,
) -> Result<StoredRequest, StoreError> {
    let mut conn = store.connection()?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let opened = super::sealed::open_delivery(&tx, store.keyring(), id)?;
    let (source, stored) = (opened.source, opened.stored);
    let audit = crate::store::maintenance::reverified_record(id, &source, who);
    crate::audit::append(&tx, store.keyring(), &audit)?;
    tx.commit()?;
    super::audit::mirror(store, &conn);
    Ok(StoredRequest {
        source,
        body: decode_body(&stored.body_b64)?,
        headers: stored.signature_headers,
        received_at: stored.event.received_at,
    })
}
