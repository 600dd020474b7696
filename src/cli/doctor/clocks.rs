//! `doctor`'s check of the senders' clocks, from the skew the running server records.

use std::path::Path;

use super::Check;

/// Skew past which a sender's clock is worth fixing before it meets the replay window (300 s
/// by default).
const CLOCK_SKEW_WARN_MS: i64 = 60_000;

pub(super) fn check_sender_clocks(storage: &Path) -> Check {
    const NAME: &str = "senders' clocks";
    let dir = storage
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let Ok(stats) = crate::listener::clock::read(dir) else {
        return Check::ok(
            NAME,
            "no signed timestamps recorded yet (written by the running server every minute)",
        );
    };
    let drifting: Vec<String> = stats
        .iter()
        .filter(|(_, s)| s.max_abs_ms >= CLOCK_SKEW_WARN_MS)
        .map(|(source, s)| {
            format!(
                "{source} up to {} s (latest {} s)",
                s.max_abs_ms / 1000,
                s.last_ms / 1000
            )
        })
        .collect();
    if drifting.is_empty() {
        let worst = stats.values().map(|s| s.max_abs_ms).max().unwrap_or(0);
        Check::ok(
            NAME,
            format!(
                "{} source(s) with signed timestamps; largest skew {} ms",
                stats.len(),
                worst
            ),
        )
    } else {
        Check::warn(
            NAME,
            format!("clock skew seen: {}", drifting.join(", ")),
            "ask the sender to fix its clock (NTP), or check this host's: `timedatectl status`; past the source's tolerance_secs its deliveries are refused as stale",
        )
    }
}
