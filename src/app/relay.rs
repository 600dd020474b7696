//! Wiring of the DMZ relay (`[relay_server]`: the sealing handoff, its buffer and the pull
//! listener) and of the inside node's puller (`[relay]`). See `crate::relay`.

use std::sync::Arc;

use actix_web::web;

use super::AppError;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::listener::handoff::Handoff;
use crate::listener::AppState;
use crate::relay::pull_api::{self, PullServer};
use crate::relay::seal::PublicKey;
use crate::relay::sealer::Sealer;
use crate::relay::RelayError;
use crate::store::open::{OpenedStorage, StoreSettings};
use crate::store::relay_buffer::RelayBufferSettings;

/// The relay's parts: what the listener hands verified deliveries to, and the pull listener.
pub(super) struct RelayParts {
    pub handoff: Arc<dyn Handoff>,
    pub pull: PullServer,
}

/// On a relay (`[relay_server]` set), open the sealed buffer in the relay's own storage (the
/// SQLite file or PostgreSQL database `opened` is, whose audit chain it shares) and bind the
/// pull listener. `None` for an ordinary node.
pub(super) fn build_relay_server(
    config: &Config,
    opened: &OpenedStorage,
) -> Result<Option<RelayParts>, AppError> {
    let Some(settings) = &config.relay_server else {
        return Ok(None);
    };
    let public = PublicKey::from_bytes(&settings.public_key).map_err(RelayError::from)?;
    let wake = Arc::new(tokio::sync::Notify::new());
    let buffer = opened
        .relay_buffer(
            &StoreSettings::of(config),
            Keyring::from_master(&config.master_key),
            RelayBufferSettings {
                max_bytes: settings.max_buffer_bytes,
                dedup_window: settings.dedup_window,
                wake: wake.clone(),
            },
        )
        .map_err(RelayError::from)?;
    let pull = pull_api::serve(settings, buffer.clone(), wake)?;
    tracing::info!(pull_port = pull.port, key_id = %public.id(), "relay: sealing to the inside node's key");
    let handoff: Arc<dyn Handoff> = Arc::new(Sealer::new(
        public,
        Keyring::from_master(&config.master_key),
        buffer,
    ));
    Ok(Some(RelayParts { handoff, pull }))
}

/// On an inside node with `[relay]`, the puller (started by `run`).
pub(super) fn build_puller(
    config: &Config,
    state: &web::Data<AppState>,
) -> Result<Option<crate::relay::puller::Puller>, AppError> {
    config
        .relay
        .as_ref()
        .map(|s| crate::relay::puller::Puller::new(s, state.clone()))
        .transpose()
        .map_err(AppError::Relay)
}
