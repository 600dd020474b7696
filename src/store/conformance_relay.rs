//! The relay buffer's contract (`store::relay_buffer`), run against both backends like
//! [`super::conformance`]: order, dedup within the window, the size cap, hand-over and its
//! removal, the audit records, the size count across a restart, and the pull cursor's order
//! under concurrent puts.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::conformance::{both_backends, Harness};
use super::postgres::{PgRelayBuffer, PgStore};
use super::relay_buffer::{BufferError, Buffered, NewSealed, RelayBuffer, RelayBufferSettings};
use super::sqlite::tests::keyring;
use super::sqlite::SqliteRelayBuffer;
use super::{Store, StoreOptions};

const HOUR: Duration = Duration::from_secs(3600);

/// A sealed delivery of `size` ciphertext bytes (32 + `size` sealed bytes).
pub(super) fn sealed(id: &str, dedup: &str, size: usize) -> NewSealed {
    NewSealed {
        id: id.to_owned(),
        received_at: Utc::now(),
        source: "demo".into(),
        remote_addr: std::net::IpAddr::from([127, 0, 0, 1]),
        key_id: "0011223344556677".into(),
        enc: vec![1; 32],
        ciphertext: vec![2; size],
        dedup_index: dedup.to_owned(),
    }
}

fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

impl Harness {
    /// The relay's buffer on this database, as the relay opens it beside its store.
    async fn relay_buffer(
        &self,
        max_bytes: u64,
        dedup_window: Duration,
        wake: Arc<tokio::sync::Notify>,
    ) -> Arc<dyn RelayBuffer> {
        let settings = RelayBufferSettings {
            max_bytes,
            dedup_window,
            wake,
        };
        match self {
            Self::Sqlite { path, .. } => {
                drop(Store::open(path, keyring(), StoreOptions::default()).expect("open store"));
                Arc::new(
                    SqliteRelayBuffer::open(path, keyring(), None, settings).expect("open buffer"),
                )
            }
            Self::Postgres { db } => {
                let store = PgStore::open(&db.settings("relay"), keyring())
                    .await
                    .expect("open store");
                Arc::new(PgRelayBuffer::new(store, settings))
            }
        }
    }

    /// The audit actions in chain order (one relay node, so one chain).
    async fn audit_actions(&self) -> Vec<String> {
        const SQL: &str = "SELECT action FROM audit_log ORDER BY seq";
        match self {
            Self::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open");
                let mut stmt = conn.prepare(SQL).expect("prepare");
                let actions = stmt
                    .query_map([], |r| r.get(0))
                    .expect("query")
                    .collect::<Result<Vec<String>, _>>()
                    .expect("rows");
                actions
            }
            Self::Postgres { db } => db
                .client()
                .await
                .query(SQL, &[])
                .await
                .expect("query")
                .iter()
                .map(|r| r.get(0))
                .collect(),
        }
    }
}

async fn records_are_served_in_order_deduplicated_capped_and_deleted_on_ack_with_audit(h: Harness) {
    let buffer = h.relay_buffer(3 * 132, HOUR, Arc::default()).await;
    let (a, b) = (new_id(), new_id());
    assert_eq!(
        buffer.put(sealed(&a, "d1", 100)).await.expect("a"),
        Buffered::Stored(a.clone())
    );
    assert_eq!(
        buffer.put(sealed(&b, "d2", 100)).await.expect("b"),
        Buffered::Stored(b.clone())
    );
    // A retry (same dedup index, new relay id) gets the first id and stores nothing.
    assert_eq!(
        buffer
            .put(sealed(&new_id(), "d1", 100))
            .await
            .expect("retry"),
        Buffered::Duplicate(a.clone())
    );
    // Past the cap: refused, nothing stored, and the refused delivery is not remembered as
    // received (its later retry is stored once there is room).
    let big = new_id();
    assert!(matches!(
        buffer.put(sealed(&big, "d3", 300)).await,
        Err(BufferError::Full)
    ));
    let rows = buffer.batch_after(0, 10).await.expect("batch");
    assert_eq!(
        rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        [a.as_str(), b.as_str()]
    );
    assert!(rows[0].seq < rows[1].seq);
    assert_eq!(rows[0].enc, vec![1; 32]);
    assert_eq!(rows[0].ciphertext, vec![2; 100]);
    assert_eq!(rows[0].key_id, "0011223344556677");
    assert_eq!(
        buffer
            .batch_after(rows[0].seq, 10)
            .await
            .expect("after")
            .len(),
        1
    );
    assert_eq!(buffer.batch_after(0, 1).await.expect("max").len(), 1);
    let backlog = buffer.backlog().await.expect("backlog");
    assert_eq!((backlog.records, backlog.bytes), (2, 264));
    assert!(backlog.oldest.is_some_and(|t| t <= Utc::now()));

    // Hand-over: acknowledged records are deleted; unknown and repeated ones are ignored.
    let puller = crate::store::relay_buffer::Puller {
        cert_sha256: crate::audit::Digest::from_bytes(&[7; 32]).expect("digest"),
        cert_cn: crate::audit::Code::parse("inside-node").ok(),
    };
    assert_eq!(
        buffer
            .ack(vec![rows[0].seq, 999_999], Some(puller.clone()))
            .await
            .expect("ack"),
        1
    );
    assert_eq!(
        buffer.ack(vec![rows[0].seq], None).await.expect("again"),
        0,
        "repeatable"
    );
    let left = buffer.batch_after(0, 10).await.expect("left");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id, b);
    // Room again after the hand-over; the retry after `Full` is stored.
    assert_eq!(
        buffer.put(sealed(&big, "d3", 100)).await.expect("room"),
        Buffered::Stored(big.clone())
    );
    // Within the window the dedup index outlives the hand-over.
    assert_eq!(
        buffer
            .put(sealed(&new_id(), "d1", 100))
            .await
            .expect("late"),
        Buffered::Duplicate(a.clone())
    );
    assert_eq!(
        h.audit_actions().await,
        [
            "relay_buffered",
            "relay_buffered",
            "delivery_duplicate",
            "relay_handed_over",
            "relay_buffered",
            "delivery_duplicate",
        ]
    );
    // The hand-over names the puller's certificate; nothing names more than ids and sizes.
    assert_eq!(
        h.count(&format!(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'relay_handed_over'
             AND detail LIKE '%{}%' AND detail LIKE '%inside-node%' AND delivery_id = '{a}'",
            hex::encode([7; 32])
        ))
        .await,
        1
    );
    assert_eq!(
        h.count(
            "SELECT COUNT(*) FROM audit_log WHERE action = 'relay_buffered' AND source = 'demo'"
        )
        .await,
        3
    );
    assert_eq!(h.verify_audit().await, Ok(6));
}

async fn an_expired_dedup_index_is_purged_on_acknowledgement(h: Harness) {
    let buffer = h.relay_buffer(10_000, Duration::ZERO, Arc::default()).await;
    let first = new_id();
    buffer.put(sealed(&first, "d1", 10)).await.expect("first");
    let rows = buffer.batch_after(0, 10).await.expect("batch");
    assert_eq!(buffer.ack(vec![rows[0].seq], None).await.expect("ack"), 1);
    assert_eq!(h.count("SELECT COUNT(*) FROM relay_dedup").await, 0);
    // Past the window a retry is a new relay record (the inside node deduplicates it).
    let again = new_id();
    assert_eq!(
        buffer.put(sealed(&again, "d1", 10)).await.expect("again"),
        Buffered::Stored(again)
    );
}

async fn the_size_count_survives_a_restart(h: Harness) {
    {
        let buffer = h.relay_buffer(200, HOUR, Arc::default()).await;
        buffer.put(sealed(&new_id(), "d1", 100)).await.expect("r1");
    }
    let buffer = h.relay_buffer(200, HOUR, Arc::default()).await;
    assert!(matches!(
        buffer.put(sealed(&new_id(), "d2", 100)).await,
        Err(BufferError::Full)
    ));
    let rows = buffer.batch_after(0, 10).await.expect("batch");
    buffer.ack(vec![rows[0].seq], None).await.expect("ack");
    assert!(buffer.put(sealed(&new_id(), "d2", 100)).await.is_ok());
}

async fn concurrent_puts_keep_the_cursor_in_commit_order_and_store_a_retry_once(h: Harness) {
    let wake = Arc::new(tokio::sync::Notify::new());
    let buffer = h.relay_buffer(1 << 20, HOUR, wake.clone()).await;
    let woken = wake.notified();
    tokio::pin!(woken);
    woken.as_mut().enable();
    let puts = (0..40).map(|i| {
        let buffer = buffer.clone();
        // Every fourth put is a retry of the one before it, racing it.
        let dedup = format!("d{}", i - i % 2 * usize::from(i % 4 == 1));
        tokio::spawn(async move { buffer.put(sealed(&new_id(), &dedup, 10)).await })
    });
    // Meanwhile a puller reads with a moving cursor: it must see every record exactly once.
    let reader = {
        let buffer = buffer.clone();
        tokio::spawn(async move {
            let (mut cursor, mut seen) = (0, Vec::new());
            for _ in 0..200 {
                for row in buffer.batch_after(cursor, 7).await.expect("batch") {
                    cursor = row.seq;
                    seen.push(row.id);
                }
                tokio::task::yield_now().await;
            }
            (cursor, seen)
        })
    };
    let mut stored = Vec::new();
    let mut duplicates = 0;
    for put in futures_util::future::join_all(puts).await {
        match put.expect("task").expect("put") {
            Buffered::Stored(id) => stored.push(id),
            Buffered::Duplicate(_) => duplicates += 1,
        }
    }
    tokio::time::timeout(Duration::from_secs(1), woken)
        .await
        .expect("long polls are woken by a stored record");
    assert_eq!((stored.len(), duplicates), (30, 10));
    let (cursor, mut seen) = reader.await.expect("reader");
    for row in buffer.batch_after(cursor, 100).await.expect("rest") {
        seen.push(row.id);
    }
    let (mut seen_sorted, mut stored_sorted) = (seen.clone(), stored.clone());
    seen_sorted.sort();
    stored_sorted.sort();
    assert_eq!(
        seen_sorted, stored_sorted,
        "a moving cursor sees every record exactly once"
    );
    assert_eq!(h.verify_audit().await, Ok(40));
}

both_backends!(
    records_are_served_in_order_deduplicated_capped_and_deleted_on_ack_with_audit,
    an_expired_dedup_index_is_purged_on_acknowledgement,
    the_size_count_survives_a_restart,
    concurrent_puts_keep_the_cursor_in_commit_order_and_store_a_retry_once,
);
