//! Patient matching: find the one Patient a call is about, or say clearly that there is none.
//!
//! The search is `Patient?telecom=phone|<caller.phone>`, narrowed by `name` (the last word of
//! the caller's name, which FHIR matches against any name part) and `birthdate` when the event
//! has them, with `_count=2`: one match is referenced; none or several follow the handler's
//! `when_none` / `when_several`. Several matches are never resolved by picking one.

use reqwest::Method;
use serde_json::{json, Value};
use wardhook_sdk::{Context, Event};

use crate::config::NoMatch;
use crate::error::FhirError;
use crate::{resources, search_escape, Fhir, Write};

/// `[handlers.patient]`, checked.
#[derive(Debug)]
pub(crate) struct PatientMatching {
    pub(crate) when_none: NoMatch,
    pub(crate) when_several: NoMatch,
}

/// The result of matching.
#[derive(Debug)]
pub(crate) enum PatientLink {
    /// Matching is not configured.
    NotMatched,
    /// Exactly one Patient: `Patient/<id>`.
    One(String),
    /// Write nothing (`skip`); why: `none`, `several` or `no phone`.
    Skip(&'static str),
    /// Write without a patient, tagged `unmatched`.
    Unmatched(&'static str),
    /// Create a Patient from the caller's details.
    Create,
}

impl PatientLink {
    pub(crate) fn reference(&self) -> Option<&str> {
        match self {
            Self::One(r) => Some(r),
            _ => None,
        }
    }

    pub(crate) fn unmatched_reason(&self) -> Option<&'static str> {
        match self {
            Self::Unmatched(why) => Some(why),
            _ => None,
        }
    }

    pub(crate) fn is_skip(&self) -> bool {
        matches!(self, Self::Skip(_))
    }

    pub(crate) fn is_create(&self) -> bool {
        matches!(self, Self::Create)
    }

    /// The `app_data` entry `patient`.
    pub(crate) fn summary(&self) -> Option<Value> {
        match self {
            Self::NotMatched => None,
            Self::One(r) => Some(json!({"match": "one", "reference": r})),
            Self::Skip(why) | Self::Unmatched(why) => {
                Some(json!({"match": why, "reference": Value::Null}))
            }
            Self::Create => Some(json!({"match": "created", "reference": Value::Null})),
        }
    }

    /// The Patient to create conditionally, for [`PatientLink::Create`].
    pub(crate) fn new_patient(&self, fhir: &Fhir, event: &Event, ctx: &Context) -> Option<Write> {
        if !self.is_create() {
            return None;
        }
        let phone = caller_phone(event)?;
        let mut patient = json!({
            "resourceType": "Patient",
            "telecom": [{"system": "phone", "value": phone}],
            "meta": {"tag": [{"system": resources::MATCH_TAG_SYSTEM, "code": "created",
                              "display": "Created from a phone call; confirm identity"}]},
        });
        if let Some(name) = event
            .caller
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
        {
            patient["name"] = json!([{"text": name}]);
        }
        if let Some(bd) = birthdate(&event.data) {
            patient["birthDate"] = json!(bd);
        }
        let value = fhir.identifier_value(ctx, "patient");
        resources::add_identifier(&mut patient, &fhir.identifier_system, &value);
        Some(Write {
            key: "patient",
            type_name: "Patient",
            condition: fhir.condition(&value),
            resource: patient,
            document_content: None,
        })
    }
}

fn caller_phone(event: &Event) -> Option<&str> {
    event
        .caller
        .phone
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// A birth date the sender gave, when it is a plain `YYYY-MM-DD`.
fn birthdate(data: &Value) -> Option<&str> {
    let custom = data.get("custom_fields");
    ["birthdate", "birth_date", "date_of_birth", "dob"]
        .iter()
        .find_map(|k| {
            data.get(*k)
                .or_else(|| custom.and_then(|c| c.get(*k)))
                .and_then(Value::as_str)
        })
        .filter(|d| {
            let b = d.as_bytes();
            b.len() == 10
                && b[4] == b'-'
                && b[7] == b'-'
                && b.iter()
                    .enumerate()
                    .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        })
}

impl PatientMatching {
    fn without_single(&self, several: bool, why: &'static str, can_create: bool) -> PatientLink {
        let rule = if several {
            self.when_several
        } else {
            self.when_none
        };
        match rule {
            NoMatch::Skip => PatientLink::Skip(why),
            NoMatch::Create if can_create && !several => PatientLink::Create,
            NoMatch::Unmatched | NoMatch::Create => PatientLink::Unmatched(why),
        }
    }

    /// Search for the caller's Patient.
    pub(crate) async fn find(
        &self,
        fhir: &Fhir,
        event: &Event,
        ctx: &Context,
    ) -> Result<PatientLink, FhirError> {
        let Some(phone) = caller_phone(event) else {
            return Ok(self.without_single(false, "no phone", false));
        };
        let mut url = fhir.url("Patient")?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("telecom", &format!("phone|{}", search_escape(phone)));
            if let Some(last) = event
                .caller
                .name
                .as_deref()
                .and_then(|n| n.split_whitespace().last())
            {
                q.append_pair("name", &search_escape(last));
            }
            if let Some(bd) = birthdate(&event.data) {
                q.append_pair("birthdate", bd);
            }
            q.append_pair("_count", "2");
        }
        let answer = fhir.send(Method::GET, url, None, None, ctx).await?;
        if answer.body.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(fhir.bad("Patient search did not return a Bundle"));
        }
        let matches: Vec<&Value> = answer
            .body
            .get("entry")
            .and_then(Value::as_array)
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| {
                        let mode = e.pointer("/search/mode").and_then(Value::as_str);
                        mode.is_none() || mode == Some("match")
                    })
                    .filter_map(|e| e.get("resource"))
                    .filter(|r| r.get("resourceType").and_then(Value::as_str) == Some("Patient"))
                    .collect()
            })
            .unwrap_or_default();
        let total = answer
            .body
            .get("total")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let count = (matches.len() as u64).max(total);
        match (count, matches.first()) {
            (1, Some(patient)) => {
                let id = patient
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| crate::is_fhir_id(id))
                    .ok_or_else(|| fhir.bad("matching Patient without a valid id"))?;
                Ok(PatientLink::One(format!("Patient/{id}")))
            }
            (0, _) => Ok(self.without_single(false, "none", true)),
            _ => Ok(self.without_single(true, "several", false)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_dates_are_used_as_birthdates() {
        assert_eq!(birthdate(&json!({"dob": "1980-02-29"})), Some("1980-02-29"));
        assert_eq!(
            birthdate(&json!({"custom_fields": {"date_of_birth": "1980-02-29"}})),
            Some("1980-02-29")
        );
        assert_eq!(birthdate(&json!({"dob": "29/02/1980"})), None);
        assert_eq!(birthdate(&json!({"dob": "1980-02-29&x=1"})), None);
    }

    #[test]
    fn several_matches_never_create() {
        let m = PatientMatching {
            when_none: NoMatch::Create,
            when_several: NoMatch::Unmatched,
        };
        assert!(matches!(
            m.without_single(true, "several", false),
            PatientLink::Unmatched("several")
        ));
        assert!(matches!(
            m.without_single(false, "none", true),
            PatientLink::Create
        ));
        assert!(matches!(
            m.without_single(false, "no phone", false),
            PatientLink::Unmatched("no phone")
        ));
    }
}
