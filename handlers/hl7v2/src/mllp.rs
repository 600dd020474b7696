//! MLLP (the Minimal Lower Layer Protocol, HL7 v2 appendix C) over TCP, TLS by default: one
//! message is `0x0B` + message + `0x1C 0x0D`, answered by one ACK block on the same connection.
//!
//! Connections are kept per destination (one handler has one destination) and reused while
//! idle for less than `idle_secs`, up to `max_idle_connections`. A connection is given back only
//! after a clean exchange: a timeout, a malformed answer or an ACK for another message leaves the
//! stream in an unknown state, so it is closed. A reused connection that turns out to have been
//! closed by the receiver (end of stream or reset before any answer byte) is replaced by a fresh
//! one once; the message is sent again with the same `MSH-10`, which lets the receiver
//! recognise a repeat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::Hl7Error;

/// Start of block.
pub const START_BLOCK: u8 = 0x0b;
/// End of block, followed by [`CARRIAGE_RETURN`].
pub const END_BLOCK: u8 = 0x1c;
/// The last byte of a frame.
pub const CARRIAGE_RETURN: u8 = 0x0d;
/// The largest ACK block read; a longer answer is malformed (an ACK is a few hundred bytes).
pub const MAX_ACK_BYTES: usize = 64 * 1024;

/// `message` in an MLLP frame.
pub fn frame(message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(message.as_bytes());
    out.push(END_BLOCK);
    out.push(CARRIAGE_RETURN);
    out
}

/// A byte stream to the receiver, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A block's content and whether bytes followed it, or why there is none.
type BlockRead = Result<(Vec<u8>, bool), ReadFailure>;

/// Why reading a block failed.
#[derive(Debug, PartialEq, Eq)]
enum ReadFailure {
    /// End of stream or a reset; `empty` when not one byte of an answer had arrived.
    Closed { empty: bool },
    /// Bytes that are not an MLLP block, or more than [`MAX_ACK_BYTES`].
    Malformed,
}

/// Read one block's content. Whitespace before the start byte is tolerated; anything else
/// before it, or a block without its end, is malformed. Returns the content and whether bytes
/// followed the block (the stream is then out of step and not reused).
async fn read_block<R: AsyncRead + Unpin>(r: &mut R) -> BlockRead {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let mut started = false;
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => {
                return Err(ReadFailure::Closed {
                    empty: buf.is_empty() && !started,
                })
            }
            Ok(n) => n,
        };
        let mut bytes = &chunk[..n];
        if !started {
            let skip = bytes.iter().take_while(|b| b.is_ascii_whitespace()).count();
            bytes = &bytes[skip..];
            match bytes.first() {
                None => continue,
                Some(&START_BLOCK) => {
                    started = true;
                    bytes = &bytes[1..];
                }
                Some(_) => return Err(ReadFailure::Malformed),
            }
        }
        buf.extend_from_slice(bytes);
        if let Some(end) = buf
            .windows(2)
            .position(|w| w == [END_BLOCK, CARRIAGE_RETURN])
        {
            let trailing = buf.len() > end + 2;
            buf.truncate(end);
            return Ok((buf, trailing));
        }
        if buf.len() > MAX_ACK_BYTES + 2 {
            return Err(ReadFailure::Malformed);
        }
    }
}

/// Limits of one destination's connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For TCP connect and the TLS handshake together.
    pub connect_timeout: Duration,
    /// From the first byte sent until the whole ACK has arrived.
    pub ack_timeout: Duration,
    /// How long an idle connection is kept for reuse; zero: never reused.
    pub idle: Duration,
    /// How many idle connections are kept.
    pub max_idle: usize,
}

/// The connections to one destination.
pub struct Destination {
    host: String,
    port: u16,
    label: String,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    limits: Limits,
    idle: Mutex<Vec<(Box<dyn Io>, Instant)>>,
    /// Whether the plaintext warning was logged by this destination's first connection.
    warned: AtomicBool,
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Destination")
            .field("destination", &self.label)
            .field("tls", &self.tls.is_some())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Destination {
    /// `host:port`, with TLS when `tls` is given.
    pub fn new(
        host: String,
        port: u16,
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
        limits: Limits,
    ) -> Self {
        let label = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Self {
            host,
            port,
            label,
            tls,
            limits,
            idle: Mutex::new(Vec::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// `host:port`, for reasons and audit records.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether messages go without TLS (`tls = false`).
    pub fn is_plaintext(&self) -> bool {
        self.tls.is_none()
    }

    /// Send one framed message and hand the ACK block's content to `read_ack`. `budget` caps
    /// both timeouts (the invocation's deadline). The connection is kept for reuse only when
    /// `read_ack` understood the answer as an ACK for this message (whatever its code).
    pub async fn exchange<T>(
        &self,
        framed: &[u8],
        budget: Duration,
        read_ack: impl FnOnce(&[u8]) -> Result<T, Hl7Error>,
    ) -> Result<T, Hl7Error> {
        let deadline = Instant::now() + budget;
        let mut pooled = self.take_idle();
        let (conn, block, trailing) = loop {
            let reused = pooled.is_some();
            let mut conn = match pooled.take() {
                Some(c) => c,
                None => self.connect(deadline).await?,
            };
            let left = deadline
                .saturating_duration_since(Instant::now())
                .min(self.limits.ack_timeout);
            let result = tokio::time::timeout(left, async {
                if conn.write_all(framed).await.is_err() || conn.flush().await.is_err() {
                    return Err(ReadFailure::Closed { empty: true });
                }
                read_block(&mut conn).await
            })
            .await;
            let destination = self.label.clone();
            match result {
                Ok(Ok((block, trailing))) => break (conn, block, trailing),
                // The receiver had closed the idle connection: once more on a fresh one.
                Ok(Err(ReadFailure::Closed { empty: true })) if reused => continue,
                Ok(Err(ReadFailure::Closed { .. })) => return Err(Hl7Error::Io { destination }),
                Ok(Err(ReadFailure::Malformed)) => {
                    return Err(Hl7Error::MalformedAck { destination })
                }
                Err(_) => return Err(Hl7Error::AckTimeout { destination }),
            }
        };
        let result = read_ack(&block);
        let in_step = !matches!(
            result,
            Err(Hl7Error::MalformedAck { .. } | Hl7Error::ControlIdMismatch { .. })
        );
        if in_step && !trailing {
            self.put_idle(conn);
        }
        result
    }

    fn take_idle(&self) -> Option<Box<dyn Io>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < self.limits.idle {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, conn: Box<dyn Io>) {
        if self.limits.idle.is_zero() || self.limits.max_idle == 0 {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|(_, since)| since.elapsed() < self.limits.idle);
        if idle.len() < self.limits.max_idle {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self, deadline: Instant) -> Result<Box<dyn Io>, Hl7Error> {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(self.limits.connect_timeout);
        let connect_error = |timed_out| Hl7Error::Connect {
            destination: self.label.clone(),
            timed_out,
        };
        let attempt = async {
            let tcp = TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(|_| connect_error(false))?;
            let _ = tcp.set_nodelay(true);
            match &self.tls {
                None => {
                    // Handlers are built before logging starts at start-up: the first
                    // connection says it again, where the operator sees it.
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        warn_plaintext(&self.label);
                    }
                    Ok(Box::new(tcp) as Box<dyn Io>)
                }
                Some((config, name)) => {
                    let connector = tokio_rustls::TlsConnector::from(Arc::clone(config));
                    match connector.connect(name.clone(), tcp).await {
                        Ok(stream) => Ok(Box::new(stream) as Box<dyn Io>),
                        Err(e) if is_certificate_failure(&e) => Err(Hl7Error::Certificate {
                            destination: self.label.clone(),
                        }),
                        Err(_) => Err(connect_error(false)),
                    }
                }
            }
        };
        tokio::time::timeout(left, attempt)
            .await
            .unwrap_or_else(|_| Err(connect_error(true)))
    }
}

/// The warning for `tls = false`: `serve` logs it at start-up (through
/// `Handler::startup_warnings`), `check-config` prints it, and the destination logs it again on
/// its first connection.
pub fn plaintext_warning(destination: &str) -> String {
    format!(
        "hl7v2 handler sends to {destination} over plaintext MLLP (tls = false): patient data \
         crosses the private network unencrypted"
    )
}

/// Log [`plaintext_warning`].
pub fn warn_plaintext(destination: &str) {
    tracing::warn!(destination, "{}", plaintext_warning(destination));
}

/// A handshake that failed on a certificate: ours refused (bad/unknown/required certificate
/// alerts) or theirs not trusted.
fn is_certificate_failure(e: &std::io::Error) -> bool {
    use rustls::AlertDescription as A;
    let Some(inner) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return false;
    };
    match inner {
        rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented => true,
        rustls::Error::AlertReceived(alert) => matches!(
            alert,
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_wraps_the_message_in_start_and_end_bytes() {
        assert_eq!(frame("MSH|x\r"), b"\x0bMSH|x\r\x1c\x0d");
    }

    #[tokio::test]
    async fn blocks_are_read_whole_and_bounded() {
        let cases: &[(&[u8], BlockRead)] = &[
            (b"\x0bMSA\x1c\x0d", Ok((b"MSA".to_vec(), false))),
            (b"\r\n\x0bMSA\x1c\x0d", Ok((b"MSA".to_vec(), false))),
            (b"\x0bMSA\x1c\x0d\x0bMORE", Ok((b"MSA".to_vec(), true))),
            (b"", Err(ReadFailure::Closed { empty: true })),
            (b"\x0bMSA", Err(ReadFailure::Closed { empty: false })),
            (b"HTTP/1.1 400", Err(ReadFailure::Malformed)),
        ];
        for (input, want) in cases {
            let mut r: &[u8] = input;
            assert_eq!(&read_block(&mut r).await, want, "{input:?}");
        }
        let mut huge = vec![START_BLOCK];
        huge.resize(MAX_ACK_BYTES + 10, b'x');
        let mut r: &[u8] = &huge;
        assert_eq!(read_block(&mut r).await, Err(ReadFailure::Malformed));
    }
}
