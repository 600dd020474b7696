//! Minimum necessary, enforced where handlers are built.
//!
//! Each `[[handlers]]` table may say `phi = "full"` (requires `baa = true`: the destination is
//! covered by a business associate agreement) or `phi = "none"` (the default). For a
//! `phi = "none"` handler, [`wardhook_sdk::BuildContext::template`] rejects any template that
//! references a PHI field (naming the field and the handler), and [`guard`] wraps the built
//! handler so it is only ever handed a redacted event and no earlier handlers' outputs. The
//! classification itself (which fields are PHI, the allowlist of operational `data` keys) lives
//! in [`wardhook_sdk::phi`], so handler crates and their tests apply the same rules.

use std::sync::Arc;

use wardhook_sdk::phi::{take_phi_settings, MinimumNecessary};
use wardhook_sdk::{ConfigProblem, Handler};

pub use wardhook_sdk::phi::{is_safe_data_key, phi_field, redact, PhiLevel, SAFE_DATA_KEYS};

/// Take `phi` and `baa` out of a handler's settings and check them (`phi = "full"` needs
/// `baa = true`).
pub fn handler_phi(settings: &mut toml::Table) -> Result<PhiLevel, Vec<ConfigProblem>> {
    take_phi_settings(settings)
}

/// Wrap a built handler according to its level: `phi = "none"` handlers see redacted events.
pub fn guard(handler: Arc<dyn Handler>, level: PhiLevel) -> Arc<dyn Handler> {
    MinimumNecessary::guard(handler, level)
}
