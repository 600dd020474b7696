//! A handler's outbound side in one value: the client with wardhook's rules and the allowlist
//! every request of it passes, token fetches included.

use super::egress::{Egress, EgressRefused, SendError};
use crate::HandlerError;

/// An adapter's error type that can say why a request got no answer. Implement it once per
/// adapter; [`Outbound::send`] then classifies every failure the same way everywhere.
pub trait SendFailure: From<EgressRefused> {
    /// Connecting, sending or reading failed talking to `host` (`timed_out`: it was the
    /// request's timeout). Retryable.
    fn network(host: &str, timed_out: bool) -> Self;
}

impl From<EgressRefused> for HandlerError {
    /// The allowlist refused the destination: retrying reaches the same host.
    fn from(refused: EgressRefused) -> Self {
        HandlerError::permanent(refused.to_string())
    }
}

impl SendFailure for HandlerError {
    fn network(host: &str, timed_out: bool) -> Self {
        HandlerError::network(host, timed_out)
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
    /// adapter's permanent egress error, anything else about the connection its network error
    /// naming `host`.
    pub async fn send<E: SendFailure>(
        &self,
        request: reqwest::RequestBuilder,
        host: &str,
    ) -> Result<reqwest::Response, E> {
        self.egress.send(request).await.map_err(|e| match e {
            SendError::Refused(refused) => E::from(refused),
            SendError::Network { timed_out } => E::network(host, timed_out),
        })
    }
}
