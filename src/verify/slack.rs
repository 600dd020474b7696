//! Slack: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:" + ts + ":" + body)>`
//! with `X-Slack-Request-Timestamp`.

use super::generic::Part;
use super::timestamped::{Form, Name, TimestampedHmac};
use super::util::{Algorithm, Encoding};
use crate::secret::Secret;

/// The Slack scheme with these signing secrets.
pub(crate) fn scheme(keys: Vec<Secret>) -> TimestampedHmac {
    TimestampedHmac {
        keys,
        form: Form::headers(
            Name {
                checked: "x-slack-request-timestamp",
                sent: "X-Slack-Request-Timestamp",
            },
            Name {
                checked: "x-slack-signature",
                sent: "X-Slack-Signature",
            },
            "v0=",
            vec![
                Part::Literal("v0:".into()),
                Part::Timestamp,
                Part::Literal(":".into()),
                Part::Body,
            ],
            Encoding::Hex,
        ),
        algorithm: Algorithm::Sha256,
    }
}
