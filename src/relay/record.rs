//! What a sealed record holds: everything the inside node's intake needs from a delivery the
//! relay verified — the raw body, the headers the verifier used (for `deliveries reverify`),
//! the sender's ids and timestamps, the client address and the relay's receipt time — as JSON,
//! sealed as one HPKE ciphertext. Only the inside node ever sees this plaintext after the
//! relay's memory.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::normalize::{Envelope, IntakeInput};

/// Format version inside the ciphertext.
const VERSION: u32 = 1;

/// Why a record's plaintext was refused after it opened (a relay of another version, or a
/// bug; never the content).
#[derive(Debug, thiserror::Error)]
#[error("sealed record is not a wardhook relay record v1: {0}")]
pub struct RecordError(&'static str);

#[derive(Serialize, Deserialize)]
struct Plain {
    v: u32,
    relay_id: String,
    received_at: DateTime<Utc>,
    source: String,
    preset: String,
    #[serde(with = "b64")]
    body: Vec<u8>,
    content_type: Option<String>,
    key_index: usize,
    sender_delivery_id: Option<String>,
    signed_at: Option<DateTime<Utc>>,
    signature_headers: Vec<(String, String)>,
    client_ip: IpAddr,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// The plaintext of the record `relay_id` (zeroized on drop).
pub fn encode(
    relay_id: &str,
    input: &IntakeInput,
    received_at: DateTime<Utc>,
) -> Zeroizing<Vec<u8>> {
    let plain = Plain {
        v: VERSION,
        relay_id: relay_id.to_owned(),
        received_at,
        source: input.source.clone(),
        preset: input.envelope.preset_name().to_owned(),
        body: input.body.clone(),
        content_type: input.content_type.clone(),
        key_index: input.key_index,
        sender_delivery_id: input.sender_delivery_id.clone(),
        signed_at: input.signed_at,
        signature_headers: input.signature_headers.clone(),
        client_ip: input.client_ip,
    };
    let bytes = serde_json::to_vec(&plain).unwrap_or_default();
    let Plain { body, .. } = plain;
    drop(Zeroizing::new(body));
    Zeroizing::new(bytes)
}

/// The intake input and receipt time of an opened record; `relay_id` must be the id it was
/// served under (also bound as the seal's associated data).
pub fn decode(
    relay_id: &str,
    plaintext: &[u8],
) -> Result<(IntakeInput, DateTime<Utc>), RecordError> {
    let plain: Plain =
        serde_json::from_slice(plaintext).map_err(|_| RecordError("not the expected JSON"))?;
    if plain.v != VERSION {
        return Err(RecordError("unknown version"));
    }
    if plain.relay_id != relay_id {
        return Err(RecordError("served under another id"));
    }
    Ok((
        IntakeInput {
            source: plain.source,
            envelope: Envelope::for_preset_name(&plain.preset),
            body: plain.body,
            content_type: plain.content_type,
            key_index: plain.key_index,
            sender_delivery_id: plain.sender_delivery_id,
            signed_at: plain.signed_at,
            signature_headers: plain.signature_headers,
            client_ip: plain.client_ip,
        },
        plain.received_at,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_record_round_trips_every_field_intake_needs() {
        let mut input = IntakeInput::for_test("demo", Envelope::Telnyx, br#"{"data":{}}"#)
            .with_sender_delivery_id("evt-1");
        input.signature_headers = vec![("telnyx-timestamp".into(), "1700000000".into())];
        let at = Utc::now();
        let bytes = encode("r-1", &input, at);
        let (back, received) = decode("r-1", &bytes).unwrap();
        assert_eq!(received, at);
        assert_eq!(back.source, "demo");
        assert_eq!(back.envelope, Envelope::Telnyx);
        assert_eq!(back.body, input.body);
        assert_eq!(back.sender_delivery_id.as_deref(), Some("evt-1"));
        assert_eq!(back.signature_headers, input.signature_headers);
        assert!(decode("r-2", &bytes).is_err(), "served under another id");
    }
}
