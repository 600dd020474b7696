//! The relay's pull listener: the inside node's only door, on its own port, mutual TLS with a
//! client certificate from `relay_server.pull_tls.client_ca` (rustls refuses the handshake
//! without one).
//!
//! - `GET /relay/v1/records?after=SEQ&max=N&wait=SECS`: up to `N` sealed records after the
//!   cursor `SEQ`, oldest first; when there are none, the request waits up to `SECS` for one
//!   (long poll). The answer also says how much waits and since when (the inside node's
//!   backlog metrics).
//! - `POST /relay/v1/ack` `{"seqs":[…]}`: the inside node has committed these; the relay deletes
//!   them (`secure_delete`) with a `relay_handed_over` audit record each, naming the client
//!   certificate that acknowledged (SHA-256 fingerprint and subject CN, read from the TLS
//!   session when the connection opens). Repeating an acknowledgement is harmless.
//!
//! Records never leave in any other way, and only as ciphertext.

use std::any::Any;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::dev::{Extensions, Server};
use actix_web::rt::net::TcpStream;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest as _, Sha256};
use x509_parser::prelude::{FromDer as _, X509Certificate};

use super::RelayError;
use crate::audit::{Code, Digest};
use crate::config::relay::{RelayServerSettings, MAX_BATCH};
use crate::store::relay_buffer::{Backlog, Puller, RelayBuffer, SealedRow};

/// Longest a pull may wait for new records.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Most acknowledgements in one request.
pub const MAX_ACK: usize = MAX_BATCH;

/// One sealed record on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireRecord {
    /// The cursor position.
    pub seq: i64,
    /// The relay id (the seal's associated data).
    pub id: String,
    /// When the relay received it.
    pub received_at: DateTime<Utc>,
    /// Key id of the public key it is sealed to.
    pub key_id: String,
    /// HPKE encapsulated key, base64.
    pub enc: String,
    /// HPKE ciphertext, base64.
    pub ciphertext: String,
}

/// What waits at the relay, with a batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WireBacklog {
    /// Records not yet acknowledged.
    pub records: u64,
    /// Their sealed size in bytes.
    pub bytes: u64,
    /// The oldest one's receipt time.
    pub oldest_received_at: Option<DateTime<Utc>>,
}

/// `GET /relay/v1/records`'s answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Batch {
    /// The records, oldest first.
    pub records: Vec<WireRecord>,
    /// The backlog when the batch was read.
    pub backlog: WireBacklog,
}

/// `POST /relay/v1/ack`'s body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack {
    /// The acknowledged records' cursor positions.
    pub seqs: Vec<i64>,
}

#[derive(Debug, Deserialize)]
struct BatchQuery {
    after: Option<i64>,
    max: Option<usize>,
    wait: Option<u64>,
}

struct PullState {
    buffer: Arc<dyn RelayBuffer>,
    wake: Arc<tokio::sync::Notify>,
}

impl From<SealedRow> for WireRecord {
    fn from(r: SealedRow) -> Self {
        let b64 = base64::engine::general_purpose::STANDARD;
        Self {
            seq: r.seq,
            id: r.id,
            received_at: r.received_at,
            key_id: r.key_id,
            enc: b64.encode(&r.enc),
            ciphertext: b64.encode(&r.ciphertext),
        }
    }
}

impl From<Backlog> for WireBacklog {
    fn from(b: Backlog) -> Self {
        Self {
            records: b.records,
            bytes: b.bytes,
            oldest_received_at: b.oldest,
        }
    }
}

/// The pull listener, bound and serving (await `server` to run it).
pub struct PullServer {
    /// The bound port.
    pub port: u16,
    /// The actix server.
    pub server: Server,
}

impl std::fmt::Debug for PullServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullServer")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// Bind `settings.pull_listen` with mutual TLS and serve `buffer`; `wake` is notified when
/// records are stored.
pub fn serve(
    settings: &RelayServerSettings,
    buffer: Arc<dyn RelayBuffer>,
    wake: Arc<tokio::sync::Notify>,
) -> Result<PullServer, RelayError> {
    if settings.pull_tls.client_ca.is_none() {
        return Err(RelayError::Tls(
            "relay_server.pull_tls.client_ca is required".into(),
        ));
    }
    let (tls, _slot) = crate::tls::server_config(&settings.pull_tls)
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    let listener = TcpListener::bind(settings.pull_listen)
        .map_err(|e| RelayError::Listen(format!("{}: {e}", settings.pull_listen)))?;
    let port = listener
        .local_addr()
        .map_err(|e| RelayError::Listen(e.to_string()))?
        .port();
    let state = web::Data::new(PullState { buffer, wake });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(web::JsonConfig::default().limit(64 * 1024))
            .route("/relay/v1/records", web::get().to(records))
            .route("/relay/v1/ack", web::post().to(ack))
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }),
            )
    })
    .on_connect(note_puller)
    .workers(2)
    .client_request_timeout(Duration::from_secs(10))
    .tls_handshake_timeout(Duration::from_secs(5))
    .shutdown_timeout(5)
    .listen_rustls_0_23(listener, tls)
    .map_err(|e| RelayError::Listen(e.to_string()))?
    .run();
    Ok(PullServer { port, server })
}

/// Remember, per connection, which client certificate opened it, so acknowledgements on that
/// connection can name it in the audit chain. rustls has already verified the chain against
/// `client_ca` by now; this only identifies the leaf.
fn note_puller(conn: &dyn Any, ext: &mut Extensions) {
    let Some(tls) = conn.downcast_ref::<TlsStream<TcpStream>>() else {
        return;
    };
    let (_, session) = tls.get_ref();
    if let Some(leaf) = session.peer_certificates().and_then(|c| c.first()) {
        if let Some(puller) = puller_of(leaf.as_ref()) {
            ext.insert(puller);
        }
    }
}

/// The PHI-free identity of a client certificate (DER): its SHA-256 fingerprint and, when it
/// passes [`Code`]'s identifier rules, its subject CN. `None` only if the digest cannot be
/// formed, which SHA-256 output always can.
pub fn puller_of(der: &[u8]) -> Option<Puller> {
    let cert_sha256 = Digest::from_bytes(&Sha256::digest(der)).ok()?;
    let cert_cn = X509Certificate::from_der(der).ok().and_then(|(_, cert)| {
        let cn = cert.subject().iter_common_name().next()?;
        Code::parse(cn.as_str().ok()?).ok()
    });
    Some(Puller {
        cert_sha256,
        cert_cn,
    })
}

fn unavailable(e: &crate::store::StoreError) -> HttpResponse {
    tracing::error!(error = %e, "relay buffer read failed");
    HttpResponse::ServiceUnavailable()
        .insert_header(("Retry-After", "5"))
        .json(json!({ "error": "relay buffer unavailable" }))
}

async fn records(state: web::Data<PullState>, q: web::Query<BatchQuery>) -> HttpResponse {
    let after = q.after.unwrap_or(0).max(0);
    let max = q.max.unwrap_or(100).clamp(1, MAX_BATCH);
    let wait = Duration::from_secs(q.wait.unwrap_or(0)).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        // Registered before the read, so a record stored between the read and the wait wakes
        // this request.
        let notified = state.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let rows = match state.buffer.batch_after(after, max).await {
            Ok(rows) => rows,
            Err(e) => return unavailable(&e),
        };
        if !rows.is_empty() || tokio::time::Instant::now() >= deadline {
            let backlog = match state.buffer.backlog().await {
                Ok(b) => b,
                Err(e) => return unavailable(&e),
            };
            return HttpResponse::Ok().json(Batch {
                records: rows.into_iter().map(WireRecord::from).collect(),
                backlog: backlog.into(),
            });
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

async fn ack(state: web::Data<PullState>, req: HttpRequest, body: web::Json<Ack>) -> HttpResponse {
    let seqs = body.into_inner().seqs;
    if seqs.len() > MAX_ACK {
        return HttpResponse::BadRequest()
            .json(json!({ "error": format!("at most {MAX_ACK} acknowledgements per request") }));
    }
    let puller = req.conn_data::<Puller>().cloned();
    match state.buffer.ack(seqs, puller).await {
        Ok(deleted) => HttpResponse::Ok().json(json!({ "deleted": deleted })),
        Err(e) => unavailable(&e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use base64::Engine as _;

    use super::*;
    use crate::certs::DevCa;

    fn der(pem: &str) -> Vec<u8> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap()
    }

    #[test]
    fn a_puller_is_named_by_fingerprint_and_a_cn_that_is_an_identifier_only() {
        let ca = DevCa::generate().unwrap();
        let machine = der(&ca.issue_client("inside-node").unwrap().cert_pem);
        let p = puller_of(&machine).unwrap();
        assert_eq!(
            p.cert_sha256.as_str(),
            hex::encode(Sha256::digest(&machine))
        );
        assert_eq!(p.cert_cn.unwrap().as_str(), "inside-node");
        // A CN outside the identifier rules (here: with a space) stays out of the audit chain;
        // the fingerprint still names the certificate.
        let person = der(&ca.issue_client("Jane Doe").unwrap().cert_pem);
        let p = puller_of(&person).unwrap();
        assert!(p.cert_cn.is_none());
        assert_ne!(
            p.cert_sha256.as_str(),
            hex::encode(Sha256::digest(&machine))
        );
    }
}
