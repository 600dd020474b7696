//! The forwarding loop: [`Forwarder::try_forward_batch`] sends one batch (or finds nothing to
//! send) and returns; [`spawn`] runs it in a loop that survives failed and panicking steps,
//! waits `poll_interval` when idle and backs off exponentially while the collector is away.
//! Tests call `try_forward_batch` directly instead of sleeping.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

use super::message::{frame, render};
use super::{ForwardError, ForwardStore};
use crate::audit::{ChainRow, StoredRecord};
use crate::config::audit_forward::{AuditForwardSettings, StartAt};

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Nothing new after the cursor.
    Idle,
    /// This many records were sent and confirmed; the cursor moved past them.
    Sent(u64),
}

/// One configured forwarding target, ready to send.
pub struct Forwarder {
    settings: AuditForwardSettings,
    store: Arc<dyn ForwardStore>,
    connector: TlsConnector,
    server_name: ServerName<'static>,
    prepared: AtomicBool,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("name", &self.settings.name)
            .field("address", &self.address())
            .finish_non_exhaustive()
    }
}

/// Run blocking store work off the async executor (the PostgreSQL chain blocks on the runtime,
/// SQLite blocks on the file).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ForwardError> + Send + 'static,
) -> Result<T, ForwardError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|_| ForwardError::Panicked)?
}

impl Forwarder {
    /// A forwarder for `settings` over `store`'s chain. Loads the TLS material (fails on a bad
    /// CA file or client key); connects only when there is something to send.
    pub fn new(
        settings: AuditForwardSettings,
        store: Arc<dyn ForwardStore>,
    ) -> Result<Self, ForwardError> {
        let (config, server_name) = super::tls::client_config(&settings)?;
        Ok(Self {
            settings,
            store,
            connector: TlsConnector::from(config),
            server_name,
            prepared: AtomicBool::new(false),
        })
    }

    fn address(&self) -> String {
        if self.settings.host.contains(':') {
            format!("[{}]:{}", self.settings.host, self.settings.port)
        } else {
            format!("{}:{}", self.settings.host, self.settings.port)
        }
    }

    /// The cursor, the chain head and up to `batch_max` records after the cursor. Starts a new
    /// cursor per `start_at`, and pulls a cursor that is ahead of the chain (a database restored
    /// from an older backup) back to the head, so records written from then on are sent.
    async fn pending(&self) -> Result<(u64, u64, Vec<ChainRow>), ForwardError> {
        let store = Arc::clone(&self.store);
        let name = self.settings.name.clone();
        let start_at = self.settings.start_at;
        let batch = self.settings.batch_max;
        let prepare = !self.prepared.load(Ordering::Relaxed);
        let found = blocking(move || {
            if prepare {
                store.prepare_cursor()?;
            }
            let head = store.head()?.map_or(0, |(seq, _, _)| seq);
            let mut cursor = match store.cursor(&name)? {
                Some(c) => c,
                None => {
                    let start = match start_at {
                        StartAt::Oldest => 0,
                        StartAt::Next => head,
                    };
                    store.set_cursor(&name, start)?;
                    start
                }
            };
            if cursor > head {
                tracing::warn!(
                    target_name = %name,
                    cursor,
                    head,
                    "audit forwarding cursor is ahead of the audit log (restored database?); continuing from the log's head"
                );
                store.set_cursor(&name, head)?;
                cursor = head;
            }
            let rows = if cursor < head {
                store.rows_after(cursor, batch)?
            } else {
                Vec::new()
            };
            Ok((cursor, head, rows))
        })
        .await?;
        self.prepared.store(true, Ordering::Relaxed);
        Ok(found)
    }

    /// Send what is after the cursor, at most `batch_max` records on one connection, and move
    /// the cursor once the collector confirmed them. Never blocks intake: it only reads the
    /// chain and writes its own cursor row.
    pub async fn try_forward_batch(&self) -> Result<BatchOutcome, ForwardError> {
        let name = self.settings.name.as_str();
        let (cursor, head, rows) = self.pending().await?;
        crate::metrics::audit_forward_backlog(name, head.saturating_sub(cursor));
        if rows.is_empty() {
            return Ok(BatchOutcome::Idle);
        }
        let records: Vec<StoredRecord> = rows
            .into_iter()
            .map_while(|row| match row {
                ChainRow::Record(r) => Some(*r),
                ChainRow::Malformed => None,
            })
            .collect();
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Err(ForwardError::Unreadable(cursor));
        };
        if first.seq > cursor.saturating_add(1) {
            tracing::warn!(
                target_name = %name,
                from = cursor + 1,
                through = first.seq - 1,
                "audit records were purged by retention before they were forwarded"
            );
        }
        let (first_seq, last_seq) = (first.seq, last.seq);
        let node = self.store.node();
        let mut payload = Vec::with_capacity(records.len() * 1024);
        for r in &records {
            payload.extend(frame(&render(r, node.as_deref(), &self.settings)));
        }
        self.send(&payload).await?;
        let store = Arc::clone(&self.store);
        let owned = name.to_owned();
        blocking(move || Ok(store.set_cursor(&owned, last_seq)?)).await?;
        let n = records.len() as u64;
        crate::metrics::audit_forward_sent(name, n);
        crate::metrics::audit_forward_backlog(name, head.saturating_sub(last_seq));
        crate::metrics::audit_forward_last_success(name, chrono::Utc::now().timestamp());
        tracing::debug!(target_name = %name, first_seq, last_seq, "audit records forwarded");
        Ok(BatchOutcome::Sent(n))
    }

    /// Connect, send `payload`, close our side and wait for the collector to close its own:
    /// the batch's confirmation (see the module docs of `forward`).
    async fn send(&self, payload: &[u8]) -> Result<(), ForwardError> {
        let address = self.address();
        let s = &self.settings;
        let tcp = timeout(
            s.connect_timeout,
            TcpStream::connect((s.host.as_str(), s.port)),
        )
        .await
        .map_err(|_| ForwardError::Timeout("connecting to the collector"))?
        .map_err(|source| ForwardError::Connect {
            address: address.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let mut tls = timeout(
            s.connect_timeout,
            self.connector.connect(self.server_name.clone(), tcp),
        )
        .await
        .map_err(|_| ForwardError::Timeout("in the TLS handshake"))?
        .map_err(|source| ForwardError::Tls {
            address: address.clone(),
            source,
        })?;
        let exchange = async {
            tls.write_all(payload).await?;
            tls.flush().await?;
            // close_notify, then FIN: everything before it is what the collector must read.
            tls.shutdown().await?;
            let mut buf = [0u8; 1024];
            loop {
                match tls.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    // Syslog collectors send nothing; ignore anything they do.
                    Ok(_) => continue,
                    // A FIN without the collector's close_notify still means it read up to our
                    // close (with unread data left it would have reset the connection).
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        };
        timeout(s.io_timeout, exchange)
            .await
            .map_err(|_| ForwardError::Timeout("waiting for the collector to take the batch"))?
            .map_err(|source| ForwardError::Send { address, source })
    }
}

/// The next wait after a failure: doubling from one second up to `max`.
fn next_backoff(previous: Option<Duration>, max: Duration) -> Duration {
    previous
        .map_or(Duration::from_secs(1), |d| d.saturating_mul(2))
        .min(max)
}

/// How long a running step may go on after the stop signal before it is abandoned (its batch
/// stays unconfirmed and is sent again after the restart).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Start the forwarding loop; it ends when `stop` turns true. Each step runs as its own task,
/// so a panic fails that step (logged and counted) and the loop goes on.
pub fn spawn(forwarder: Forwarder, mut stop: watch::Receiver<bool>) -> JoinHandle<()> {
    let forwarder = Arc::new(forwarder);
    tokio::spawn(async move {
        let name = forwarder.settings.name.clone();
        tracing::info!(
            target_name = %name,
            address = %forwarder.address(),
            "audit forwarding started"
        );
        let mut backoff: Option<Duration> = None;
        loop {
            if *stop.borrow() {
                break;
            }
            let f = Arc::clone(&forwarder);
            let mut step = tokio::spawn(async move { f.try_forward_batch().await });
            let joined = tokio::select! {
                r = &mut step => r,
                _ = stop.changed() => {
                    match timeout(STOP_GRACE, &mut step).await {
                        Ok(r) => r,
                        Err(_) => {
                            step.abort();
                            tracing::info!(target_name = %name, "audit forwarding stopped mid-batch; the batch is sent again at the next start");
                            return;
                        }
                    }
                }
            };
            let result = joined.unwrap_or(Err(ForwardError::Panicked));
            let wait = match result {
                Ok(BatchOutcome::Sent(_)) => {
                    backoff = None;
                    continue;
                }
                Ok(BatchOutcome::Idle) => {
                    backoff = None;
                    forwarder.settings.poll_interval
                }
                Err(e) => {
                    crate::metrics::audit_forward_error(&name, e.reason());
                    let wait = next_backoff(backoff, forwarder.settings.max_backoff);
                    backoff = Some(wait);
                    tracing::warn!(
                        target_name = %name,
                        error = %e,
                        retry_in_ms = wait.as_millis() as u64,
                        "audit forwarding failed; records wait in the audit log"
                    );
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => {}
            }
        }
        // The server's last records (its stop record among them) go out now if the collector
        // is there, within the grace period; otherwise at the next start.
        if let Ok(Err(e)) = timeout(STOP_GRACE, forwarder.try_forward_batch()).await {
            crate::metrics::audit_forward_error(&name, e.reason());
            tracing::warn!(target_name = %name, error = %e, "audit forwarding at stop failed; the records wait for the next start");
        }
        tracing::info!(target_name = %name, "audit forwarding stopped");
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_the_maximum() {
        let max = Duration::from_secs(10);
        let mut d = None;
        let mut seen = Vec::new();
        for _ in 0..6 {
            let next = next_backoff(d, max);
            seen.push(next.as_secs());
            d = Some(next);
        }
        assert_eq!(seen, [1, 2, 4, 8, 10, 10]);
    }
}
