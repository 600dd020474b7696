//! Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:" + ts + ":" + body)>`
//! with `X-Slack-Request-Timestamp`.

use super::timestamped::{Form, Name, TimestampedHmac};
use super::util::Algorithm;
use crate::secret::Secret;

/// The Slack scheme with these signing secrets.
pub(crate) fn scheme(keys: Vec<Secret>) -> TimestampedHmac {
    TimestampedHmac {
        keys,
        form: Form::v0(
            Name {
                checked: "x-slack-request-timestamp",
                sent: "X-Slack-Request-Timestamp",
            },
            Name {
                checked: "x-slack-signature",
                sent: "X-Slack-Signature",
            },
        ),
        algorithm: Algorithm::Sha256,
    }
}
