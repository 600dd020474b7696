//! Building one HL7 v2.5.1 message: the `MSH` (and `EVN`) segments written by code from the
//! config, then the body segments rendered from templates against the escaped event.
//!
//! A body segment template renders one segment. A template that renders empty is left out, so
//! `{% if data.transcript is defined %}OBX|…{% endif %}` is an optional segment. A rendered
//! segment that does not start with a segment id, that is an `MSH`, or that holds a segment break
//! or an MLLP framing byte is refused: values are escaped before rendering, so only the template
//! text itself can do that, and it is a configuration error.

use wardhook_sdk::chrono::{DateTime, Utc};
use wardhook_sdk::template::{Template, Vars};

use crate::error::Hl7Error;
use crate::escape::is_single_segment;

/// The HL7 version written to `MSH-12`.
pub const VERSION: &str = "2.5.1";

/// The message types with default segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// `MDM^T02`: original document notification and content (the call summary and, where
    /// allowed, the transcript).
    MdmT02,
    /// `SIU^S12`: notification of a new appointment booking (an appointment request).
    SiuS12,
    /// `ADT^A08`: update patient information (demographics).
    AdtA08,
}

impl MessageType {
    /// Parse `MDM^T02`, `SIU^S12` or `ADT^A08`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "MDM^T02" => Some(Self::MdmT02),
            "SIU^S12" => Some(Self::SiuS12),
            "ADT^A08" => Some(Self::AdtA08),
            _ => None,
        }
    }

    /// `MSH-9`: message code, trigger event and message structure.
    pub fn msh9(self) -> &'static str {
        match self {
            Self::MdmT02 => "MDM^T02^MDM_T02",
            Self::SiuS12 => "SIU^S12^SIU_S12",
            // A08 shares the ADT_A01 structure (v2.5.1 chapter 3).
            Self::AdtA08 => "ADT^A08^ADT_A01",
        }
    }

    /// `EVN-1` for the types whose structure has an `EVN` segment.
    fn evn_code(self) -> Option<&'static str> {
        match self {
            Self::MdmT02 => Some("T02"),
            Self::AdtA08 => Some("A08"),
            Self::SiuS12 => None,
        }
    }

    /// The default body segments (after `MSH` and `EVN`). `transcript` adds the transcript
    /// `OBX` to `MDM^T02`.
    pub fn default_segments(self, transcript: bool) -> Vec<&'static str> {
        match self {
            Self::MdmT02 => {
                let mut s = vec![PID, PV1, TXA, OBX_SUMMARY];
                if transcript {
                    s.push(OBX_TRANSCRIPT);
                }
                s
            }
            Self::SiuS12 => vec![SCH, NTE_SUMMARY, PID, RGS],
            Self::AdtA08 => vec![PID, PV1],
        }
    }
}

/// `PID`: PID-3 the caller's number as an identifier assigned by WARDHOOK, PID-5 the name
/// (last word as family name, the rest as given names), PID-13 phone and e-mail.
pub const PID: &str = "PID|1||{{ caller.phone | default('') }}^^^WARDHOOK^PT||\
{%- set n = caller.name | default('') | split | list -%}\
{{ n | last | default('') }}^{{ n[:-1] | join(' ') }}||||||||\
{{ caller.phone | default('') }}^PRN^PH\
{%- if caller.email is defined %}~^NET^Internet^{{ caller.email }}{% endif %}";
/// `PV1`: an outpatient encounter without further detail.
pub const PV1: &str = "PV1|1|O";
/// `TXA`: a consultation note (`CN`) in text, document number = the delivery, status documented.
pub const TXA: &str = "TXA|1|CN|TX|||||||||{{ delivery_id }}^WARDHOOK|||||DO";
/// `OBX`: the AI summary (`data.ai_summary`, else `data.summary`).
pub const OBX_SUMMARY: &str = "OBX|1|TX|SUMMARY^Call summary^L||\
{{ data.ai_summary | default(data.summary | default('')) }}||||||F";
/// `OBX`: the transcript; PHI, so only in a `phi = "full"` handler.
pub const OBX_TRANSCRIPT: &str =
    "OBX|2|TX|TRANSCRIPT^Call transcript^L||{{ data.transcript | default('') }}||||||F";
/// `SCH`: placer appointment id = the delivery; event reason "requested by phone"; status
/// pending.
pub const SCH: &str =
    "SCH|{{ delivery_id }}^WARDHOOK|||||REQUEST^Appointment requested by phone^L|\
^{{ data.appointment_reason | default('') }}||||||||||||||||||Pending";
/// `NTE`: the AI summary as a note on the request.
pub const NTE_SUMMARY: &str = "NTE|1||{{ data.ai_summary | default(data.summary | default('')) }}";
/// `RGS`: one resource group, added.
pub const RGS: &str = "RGS|1|A";

/// The sender and receiver names and processing settings of `MSH`.
#[derive(Debug, Clone)]
pub struct Header {
    /// `MSH-3`.
    pub sending_application: String,
    /// `MSH-4`.
    pub sending_facility: String,
    /// `MSH-5`.
    pub receiving_application: String,
    /// `MSH-6`.
    pub receiving_facility: String,
    /// `MSH-11`: `P`, `T` or `D`.
    pub processing_id: String,
    /// Enhanced acknowledgement mode: `MSH-15 = AL`, `MSH-16 = NE` (commit ACK only).
    pub enhanced: bool,
    /// The message type.
    pub message_type: MessageType,
}

/// `time` as an HL7 `DTM` in UTC: `YYYYMMDDHHMMSS+0000`.
pub fn hl7_time(time: DateTime<Utc>) -> String {
    time.format("%Y%m%d%H%M%S+0000").to_string()
}

/// One compiled body segment template and its key path.
#[derive(Debug, Clone)]
pub struct SegmentTemplate {
    /// `segments[2]`, or `message` for a default segment.
    pub key: String,
    /// The compiled template.
    pub template: Template,
}

impl Header {
    /// The `MSH` segment. `control_id` is already escaped.
    pub fn msh(&self, control_id: &str, now: DateTime<Utc>) -> String {
        let (accept, application) = if self.enhanced {
            ("AL", "NE")
        } else {
            ("", "")
        };
        format!(
            "MSH|^~\\&|{}|{}|{}|{}|{}||{}|{}|{}|{VERSION}|||{accept}|{application}||UNICODE UTF-8",
            self.sending_application,
            self.sending_facility,
            self.receiving_application,
            self.receiving_facility,
            hl7_time(now),
            self.message_type.msh9(),
            control_id,
            self.processing_id,
        )
    }

    /// The whole message: `MSH`, `EVN` (where the type has one), then the rendered body
    /// segments, each ended by a carriage return.
    pub fn message(
        &self,
        control_id: &str,
        now: DateTime<Utc>,
        occurred: DateTime<Utc>,
        segments: &[SegmentTemplate],
        vars: &Vars,
    ) -> Result<String, Hl7Error> {
        let mut out = self.msh(control_id, now);
        out.push('\r');
        if let Some(code) = self.message_type.evn_code() {
            out.push_str(&format!("EVN|{code}|{}\r", hl7_time(occurred)));
        }
        for s in segments {
            let rendered = s
                .template
                .render(vars)
                .map_err(|source| Hl7Error::Template {
                    key: s.key.clone(),
                    source,
                })?;
            let rendered = rendered.trim_end_matches(['\r', '\n']);
            if rendered.trim().is_empty() {
                continue;
            }
            check_segment(rendered).map_err(|reason| Hl7Error::Segment {
                key: s.key.clone(),
                reason,
            })?;
            out.push_str(rendered);
            out.push('\r');
        }
        Ok(out)
    }
}

/// A rendered body segment: a three-character id, then `|` or nothing; one line; not `MSH`.
fn check_segment(segment: &str) -> Result<(), &'static str> {
    if !is_single_segment(segment) {
        return Err("the template produced a line break or an MLLP framing character");
    }
    let id = segment.get(..3).unwrap_or_default();
    let valid_id = id.len() == 3
        && id.starts_with(|c: char| c.is_ascii_uppercase())
        && id
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
    if !valid_id || !(segment.len() == 3 || segment[3..].starts_with('|')) {
        return Err("a segment must start with a three-character segment id and `|`");
    }
    if matches!(id, "MSH" | "BHS" | "FHS") {
        return Err("header segments are written by the handler, not by templates");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardhook_sdk::template::Escape;

    fn compile(key: &str, source: &str) -> SegmentTemplate {
        SegmentTemplate {
            key: key.into(),
            template: Template::compile(source, Escape::None).expect("compiles"),
        }
    }

    fn header(message_type: MessageType, enhanced: bool) -> Header {
        Header {
            sending_application: "WARDHOOK".into(),
            sending_facility: "NORTHSIDE".into(),
            receiving_application: "EHR".into(),
            receiving_facility: "NORTHSIDE".into(),
            processing_id: "P".into(),
            enhanced,
            message_type,
        }
    }

    fn vars(json: &str) -> Vars {
        let event = crate::escape::escape_event(
            &wardhook_sdk::serde_json::from_str::<wardhook_sdk::Event>(json).expect("event"),
        );
        Vars::new(
            &event,
            &wardhook_sdk::AppData::new(),
            DateTime::UNIX_EPOCH,
            wardhook_sdk::template::Tz::UTC,
        )
    }

    const EVENT: &str = r#"{"delivery_id": "dlv_1", "source": "nextphone", "event_type": "call.ended",
        "call_id": "c1", "occurred_at": null, "received_at": "2026-11-22T15:00:00Z",
        "caller": {"phone": "+15550100", "name": "Dana Q Smith", "email": null},
        "data": {"summary": "Wants a cleaning", "transcript": "Hi.\nI need a cleaning."}}"#;

    #[test]
    fn msh_names_version_type_control_id_and_ack_mode() {
        let now = DateTime::from_timestamp(1_795_359_600, 0).expect("ts");
        assert_eq!(
            header(MessageType::MdmT02, false).msh("dlv_1:ehr", now),
            "MSH|^~\\&|WARDHOOK|NORTHSIDE|EHR|NORTHSIDE|20261122150000+0000||MDM^T02^MDM_T02|dlv_1:ehr|P|2.5.1||||||UNICODE UTF-8"
        );
        assert!(header(MessageType::AdtA08, true)
            .msh("x", now)
            .contains("|ADT^A08^ADT_A01|x|P|2.5.1|||AL|NE||UNICODE UTF-8"));
    }

    #[test]
    fn default_mdm_message_has_escaped_values_in_their_fields() {
        let h = header(MessageType::MdmT02, false);
        let segments: Vec<SegmentTemplate> = MessageType::MdmT02
            .default_segments(true)
            .into_iter()
            .map(|s| compile("message", s))
            .collect();
        let now = DateTime::from_timestamp(1_795_359_600, 0).expect("ts");
        let msg = h
            .message("dlv_1:ehr", now, now, &segments, &vars(EVENT))
            .expect("renders");
        let lines: Vec<&str> = msg.split('\r').collect();
        assert_eq!(lines[1], "EVN|T02|20261122150000+0000");
        assert_eq!(
            lines[2],
            "PID|1||+15550100^^^WARDHOOK^PT||Smith^Dana Q||||||||+15550100^PRN^PH"
        );
        assert_eq!(lines[3], "PV1|1|O");
        assert_eq!(lines[4], "TXA|1|CN|TX|||||||||dlv_1^WARDHOOK|||||DO");
        assert_eq!(
            lines[5],
            "OBX|1|TX|SUMMARY^Call summary^L||Wants a cleaning||||||F"
        );
        assert_eq!(
            lines[6],
            "OBX|2|TX|TRANSCRIPT^Call transcript^L||Hi.\\X0A\\I need a cleaning.||||||F"
        );
        assert_eq!(lines[7], "", "every segment ends with a carriage return");
        assert_eq!(lines.len(), 8);
    }

    #[test]
    fn templates_cannot_add_segments_or_headers() {
        let h = header(MessageType::AdtA08, false);
        let now = DateTime::UNIX_EPOCH;
        for (source, why) in [
            ("PID|1\nPV1|1", "line break"),
            ("MSH|^~\\&|X", "header"),
            ("pid|1", "segment id"),
            ("PIDX|1", "segment id"),
        ] {
            let err = h
                .message(
                    "c",
                    now,
                    now,
                    &[compile("segments[0]", source)],
                    &vars(EVENT),
                )
                .expect_err(why);
            assert!(
                matches!(&err, Hl7Error::Segment { key, .. } if key == "segments[0]"),
                "{why}: {err}"
            );
        }
        let msg = h
            .message(
                "c",
                now,
                now,
                &[compile(
                    "segments[0]",
                    "{% if data.nothing is defined %}ZXX|1{% endif %}",
                )],
                &vars(EVENT),
            )
            .expect("empty segment skipped");
        assert_eq!(msg.split('\r').count(), 3, "MSH, EVN and the end");
    }

    #[test]
    fn siu_defaults_render_without_optional_fields() {
        let h = header(MessageType::SiuS12, false);
        let segments: Vec<SegmentTemplate> = MessageType::SiuS12
            .default_segments(false)
            .into_iter()
            .map(|s| compile("message", s))
            .collect();
        let now = DateTime::UNIX_EPOCH;
        let msg = h
            .message(
                "c",
                now,
                now,
                &segments,
                &vars(
                    r#"{"delivery_id": "d", "source": "s", "event_type": "e", "call_id": null,
                    "occurred_at": null, "received_at": "2026-11-22T15:00:00Z",
                    "caller": {"phone": null, "name": null, "email": "a@b.example"}, "data": {}}"#,
                ),
            )
            .expect("renders");
        let lines: Vec<&str> = msg.split('\r').collect();
        assert!(
            lines[1].starts_with("SCH|d^WARDHOOK|||||REQUEST"),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with("|Pending"), "{}", lines[1]);
        assert_eq!(lines[2], "NTE|1||");
        assert_eq!(
            lines[3],
            "PID|1||^^^WARDHOOK^PT||^||||||||^PRN^PH~^NET^Internet^a@b.example"
        );
        assert_eq!(lines[4], "RGS|1|A");
    }
}
