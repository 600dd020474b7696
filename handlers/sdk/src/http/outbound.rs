//! A handler's outbound side in one value: the client with wardhook's rules and the allowlist
//! every request of it passes, token fetches included.

use super::egress::{Egress, EgressRefused, SendError};
use crate::HandlerError;

/// Connecting, sending or reading failed talking to `host`: worth a retry. Adapters keep it
/// as their network variant (`Network(#[from] Unreachable)`, `#[error(transparent)]`), so the
/// message is the same everywhere and names the host only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} talking to {host}", if *.timed_out { "timeout" } else { "network error" })]
pub struct Unreachable {
    /// The host (from the config, never from an event).
    pub host: String,
    /// Whether it was the request's timeout.
    pub timed_out: bool,
}

impl Unreachable {
    /// `host` could not be reached or read; `error` says whether it was the timeout.
    pub fn new(host: &str, error: &reqwest::Error) -> Self {
        Self {
            host: host.to_owned(),
            timed_out: error.is_timeout(),
        }
    }
}

impl From<EgressRefused> for HandlerError {
    /// The allowlist refused the destination: retrying reaches the same host.
    fn from(refused: EgressRefused) -> Self {
        HandlerError::permanent(refused.to_string())
    }
}

impl From<Unreachable> for HandlerError {
    fn from(e: Unreachable) -> Self {
        HandlerError::network(&e.host, e.timed_out)
    }
}

/// The client and the allowlist of one handler. Build it with [`super::outbound`].
#[derive(Debug, Clone)]
pub struct Outbound {
    egress: Egress,
    client: reqwest::Client,
}

impl Outbound {
    /// `client` must come from `egress` ([`Egress::client`], [`Egress::client_builder`]), so
    /// that the allowlist also sits in its resolver.
    pub fn new(egress: Egress, client: reqwest::Client) -> Self {
        Self { egress, client }
    }

    /// The client, to build requests on.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// The allowlist.
    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    /// Send `request` through the allowlist ([`Egress::send`]): a refusal becomes the
    /// adapter's (permanent) egress error, anything else about the connection its
    /// [`Unreachable`] naming `host`.
    pub async fn send<E: From<EgressRefused> + From<Unreachable>>(
        &self,
        request: reqwest::RequestBuilder,
        host: &str,
    ) -> Result<reqwest::Response, E> {
        self.egress.send(request).await.map_err(|e| match e {
            SendError::Refused(refused) => E::from(refused),
            SendError::Network { timed_out } => E::from(Unreachable {
                host: host.to_owned(),
                timed_out,
            }),
        })
    }
}
