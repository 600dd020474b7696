//! Reading the receiver's acknowledgement: `MSA-1` (the code) and `MSA-2` (the control id it
//! acknowledges).
//!
//! Original mode answers `AA`/`AE`/`AR`, enhanced mode's commit ACK `CA`/`CE`/`CR`; both families
//! are understood whichever mode was asked for, since receivers differ. Accept → done,
//! error → retry, reject → permanent. An ACK for another control id is an error: it proves
//! nothing about this message.

/// What the receiver said about the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    /// `AA` or `CA`.
    Accept(&'static str),
    /// `AE` or `CE`.
    Error(&'static str),
    /// `AR` or `CR`.
    Reject(&'static str),
}

/// A parsed ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// `MSA-1`.
    pub code: AckCode,
    /// `MSA-2`, as written (escaped form).
    pub control_id: String,
}

/// Parse the content of one MLLP block as an ACK; `None` when it is not one.
pub fn parse(block: &[u8]) -> Option<Ack> {
    let text = std::str::from_utf8(block).ok()?;
    let text = text.trim_start_matches(|c: char| c.is_ascii_whitespace());
    if !text.starts_with("MSH") {
        return None;
    }
    let separator = text[3..].chars().next()?;
    if separator.is_ascii_alphanumeric() || separator.is_ascii_control() {
        return None;
    }
    let msa = text
        .split(['\r', '\n'])
        .find(|s| s.starts_with("MSA") && s[3..].starts_with(separator))?;
    let mut fields = msa.split(separator).skip(1);
    let code = match fields.next()?.trim() {
        "AA" => AckCode::Accept("AA"),
        "CA" => AckCode::Accept("CA"),
        "AE" => AckCode::Error("AE"),
        "CE" => AckCode::Error("CE"),
        "AR" => AckCode::Reject("AR"),
        "CR" => AckCode::Reject("CR"),
        _ => return None,
    };
    let control_id = fields.next().unwrap_or_default().trim().to_owned();
    Some(Ack { code, control_id })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_of_both_modes_and_the_control_id_are_read() {
        let ack = parse(
            b"MSH|^~\\&|EHR|X|WARDHOOK|Y|20261122||ACK^T02^ACK|1|P|2.5.1\rMSA|AE|dlv_1:ehr|bad\r",
        )
        .expect("ack");
        assert_eq!(ack.code, AckCode::Error("AE"));
        assert_eq!(ack.control_id, "dlv_1:ehr");
        for (code, want) in [
            ("AA", AckCode::Accept("AA")),
            ("CA", AckCode::Accept("CA")),
            ("CE", AckCode::Error("CE")),
            ("AR", AckCode::Reject("AR")),
            ("CR", AckCode::Reject("CR")),
        ] {
            let raw = format!("MSH|^~\\&|A|B|C|D|1||ACK|2|P|2.5.1\nMSA|{code}|k");
            assert_eq!(parse(raw.as_bytes()).map(|a| a.code), Some(want), "{code}");
        }
    }

    #[test]
    fn anything_else_is_not_an_ack() {
        for raw in [
            &b""[..],
            b"hello",
            b"MSH|^~\\&|A\rPID|1",
            b"MSH|^~\\&|A\rMSA|OK|k",
            b"MSH\xff",
            b"\xff\xfe",
        ] {
            assert_eq!(parse(raw), None, "{raw:?}");
        }
    }
}
