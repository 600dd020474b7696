//! Each PostgreSQL node's JSONL mirror and signed checkpoints, as on SQLite.
//!
//! A node mirrors its own chain (the records it commits) into its own `[audit] dir`, with the
//! same [`Mirror`] and the same protocol as SQLite (`audit/mirror.rs`): under the mirror's file
//! lock, append every committed record after the mirror's last line, and sign a checkpoint of
//! the last mirrored record every N records and at start and stop. Because a node's appends
//! serialise on its head row, once a record of the node has committed every earlier one of its
//! chain has too, which is what the protocol needs.
//!
//! The server mirrors from a background task, woken after each successful store operation (any
//! of which may have appended records), so intake never waits for the files; a
//! wake coalesces with any already pending, and a periodic tick catches up after a failure.
//! Offline commands on the node's host catch up right after their own appends. Truncating a
//! node's newest records in the database then leaves a mirror and a signed checkpoint naming
//! records the database no longer has, which `audit verify` on that node reports.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::audit_chain::PgChain;
use super::{Inner, PgStore};
use crate::audit::Mirror;
use crate::store::StoreError;

/// How often the mirror task catches up even without a wake (after a failed step).
const TICK: Duration = Duration::from_secs(5);

/// A node's mirror and the signal that wakes its task.
pub(super) struct NodeMirror {
    mirror: Arc<Mirror>,
    wake: Arc<Notify>,
}

impl NodeMirror {
    pub(super) fn new(mirror: Arc<Mirror>) -> Self {
        Self {
            mirror,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Ask the task to catch up (cheap; wakes coalesce).
    pub(super) fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The running mirror task of a store; [`MirrorTask::stop`] ends it and waits for the step in
/// flight, so nothing writes the mirror afterwards.
#[derive(Debug)]
pub struct MirrorTask {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl MirrorTask {
    /// Stop the task and wait until its current catch-up (if any) has finished writing.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Start the mirror task of `store`, if it has a mirror. The task holds the store weakly and
/// ends once every clone of the store is gone or when stopped.
pub(super) fn start(store: &PgStore) -> Option<MirrorTask> {
    let m = store.inner.mirror.as_ref()?;
    let wake = Arc::clone(&m.wake);
    let weak: Weak<Inner> = Arc::downgrade(&store.inner);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        loop {
            if *stopped.borrow() {
                return;
            }
            let Some(inner) = weak.upgrade() else { return };
            let store = PgStore { inner };
            if let Err(e) = catch_up(&store).await {
                tracing::warn!(error = %e, "audit mirror catch-up failed; retrying");
            }
            drop(store);
            tokio::select! {
                _ = tokio::time::timeout(TICK, wake.notified()) => {}
                _ = stopped.changed() => return,
            }
        }
    });
    Some(MirrorTask { stop, task })
}

/// Copy this node's committed records not yet in its mirror.
pub(super) async fn catch_up(store: &PgStore) -> Result<(), StoreError> {
    let Some(m) = &store.inner.mirror else {
        return Ok(());
    };
    catch_up_into(store, Arc::clone(&m.mirror)).await
}

/// Copy this node's committed records not yet in `mirror`.
pub(super) async fn catch_up_into(store: &PgStore, mirror: Arc<Mirror>) -> Result<(), StoreError> {
    let chain = PgChain::new(store, store.node_id(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || mirror.catch_up(&chain).map(|_| ()))
        .await
        .map_err(|_| StoreError::Unavailable("audit mirror task failed"))?
        .map_err(StoreError::from)
}

/// Catch up, then sign a checkpoint of the last mirrored record now (at start and stop), so
/// truncating the newest records is detectable even when fewer than a checkpoint interval were
/// written.
pub(super) async fn checkpoint_now(store: &PgStore) -> Result<(), StoreError> {
    let Some(m) = &store.inner.mirror else {
        return Ok(());
    };
    let mirror = Arc::clone(&m.mirror);
    let chain = PgChain::new(store, store.node_id(), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || {
        mirror.catch_up(&chain)?;
        mirror.checkpoint_now(&chain).map(|_| ())
    })
    .await
    .map_err(|_| StoreError::Unavailable("audit checkpoint task failed"))?
    .map_err(StoreError::from)
}
