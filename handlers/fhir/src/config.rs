//! `kind = "fhir"` keys.

use std::path::PathBuf;

use serde::Deserialize;

/// The adapter's config: the `[[handlers]]` table minus `name`, `kind`, `phi`, `baa`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FhirConfig {
    /// The FHIR R4 base URL (`https://ehr.example.org/fhir/R4`): `https://`, or plain `http://`
    /// to a loopback host only.
    pub base_url: String,
    /// What to write for each event, in this order: `Communication`, `Task`, `Appointment`,
    /// `AppointmentResponse`, `DocumentReference`. `["Communication"]` by default.
    #[serde(default = "default_resources")]
    pub resources: Vec<ResourceKind>,
    /// The `identifier.system` of every resource wardhook writes; the value is
    /// `<delivery id>:<handler>:<resource>`, so a retry finds what an earlier attempt made.
    #[serde(default = "default_identifier_system")]
    pub identifier_system: String,
    /// Send several resources as one `transaction` Bundle (all or nothing); `true` by default.
    #[serde(default = "default_true")]
    pub transaction: bool,
    /// How wardhook authenticates to the FHIR server.
    pub auth: AuthConfig,
    /// Patient matching by phone (and name/birth date when the event has them); none when absent.
    pub patient: Option<PatientConfig>,
    /// The `Communication` written for the call.
    #[serde(default)]
    pub communication: CommunicationConfig,
    /// The `Task` (callback request).
    #[serde(default)]
    pub task: TaskConfig,
    /// The `Appointment` (status `proposed`).
    #[serde(default)]
    pub appointment: TemplateOnly,
    /// The `AppointmentResponse` (the caller's answer to an appointment).
    #[serde(default)]
    pub appointment_response: AppointmentResponseConfig,
    /// The `DocumentReference` (transcript or summary as an attachment).
    #[serde(default)]
    pub document_reference: DocumentConfig,
    /// Seconds per request (token fetch included); 15 by default.
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
    /// Hosts (names, IP addresses or CIDR ranges) the handler may reach besides `base_url`'s
    /// and a configured `auth.token_url`'s: e.g. the authorization server a
    /// `.well-known/smart-configuration` names. Private ranges only when listed.
    #[serde(default)]
    pub allow_hosts: Vec<String>,
    /// Extra CA certificates (PEM) to trust, for an EHR whose certificate a private CA issued.
    /// The public roots stay trusted; certificate verification cannot be turned off.
    pub ca_file: Option<PathBuf>,
}

/// A resource type the adapter can write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum ResourceKind {
    /// The call itself.
    Communication,
    /// A callback / follow-up request.
    Task,
    /// A scheduling request (status `proposed`).
    Appointment,
    /// The caller's answer to an appointment: the `Appointment` written for the same event, or
    /// one the template references.
    AppointmentResponse,
    /// The transcript or summary as a document.
    DocumentReference,
}

impl ResourceKind {
    /// The FHIR resource type name.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::Communication => "Communication",
            Self::Task => "Task",
            Self::Appointment => "Appointment",
            Self::AppointmentResponse => "AppointmentResponse",
            Self::DocumentReference => "DocumentReference",
        }
    }

    /// The config table and `app_data` key: `communication`, `task`, `appointment`,
    /// `appointment_response`, `document_reference`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Communication => "communication",
            Self::Task => "task",
            Self::Appointment => "appointment",
            Self::AppointmentResponse => "appointment_response",
            Self::DocumentReference => "document_reference",
        }
    }
}

/// Authentication to the FHIR server.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// SMART Backend Services: client credentials with a `private_key_jwt` assertion.
    Smart {
        /// The client id the EHR assigned when wardhook's public key was registered.
        client_id: String,
        /// `env:`/`file:` reference to the PKCS#8 PEM private key (`wardhook keys smart`
        /// writes one): EC P-384 signs ES384, RSA signs RS384.
        private_key: String,
        /// The key id registered with the EHR; by default the key's RFC 7638 thumbprint, which
        /// is what `wardhook keys smart` prints as `kid`.
        kid: Option<String>,
        /// The token endpoint; by default read from `<base_url>/.well-known/smart-configuration`.
        token_url: Option<String>,
        /// Scopes to request; by default `system/<Type>.c` for each resource written (and
        /// `system/Patient.rs` / `.c` for matching).
        scope: Option<String>,
    },
    /// A fixed bearer token.
    Bearer {
        /// `env:`/`file:` reference to the token.
        token: String,
    },
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        username: String,
        /// `env:`/`file:` reference to the password.
        password: String,
    },
    /// No authentication (a FHIR server on loopback behind its own gateway; tests).
    None,
}

/// Patient matching.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientConfig {
    /// What to do when no patient matches (or the event has no phone number).
    #[serde(default = "default_when_none")]
    pub when_none: NoMatch,
    /// What to do when several patients match: `skip` or `unmatched` (never a guess).
    #[serde(default = "default_when_several")]
    pub when_several: NoMatch,
}

/// What to do without exactly one matching patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoMatch {
    /// Write nothing; the attempt succeeds with `skipped` in `app_data`.
    Skip,
    /// Write the resources without a patient, tagged `urn:wardhook:patient-match|unmatched`.
    Unmatched,
    /// Create a Patient from the caller's phone and name (only for `when_none`).
    Create,
}

/// `[handlers.communication]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommunicationConfig {
    /// A JSON template for the whole resource, replacing the default.
    pub template: Option<String>,
    /// Attach `data.transcript` as a `contentAttachment` (PHI: needs `phi = "full"`).
    #[serde(default)]
    pub transcript: bool,
}

/// `[handlers.task]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    /// A JSON template for the whole resource, replacing the default.
    pub template: Option<String>,
    /// `Task.owner`, a reference such as `Practitioner/123` or `Organization/front-desk`.
    pub owner: Option<String>,
    /// Due within this many hours of the event (`Task.restriction.period.end`), 1 to 8760.
    pub due_within_hours: Option<u32>,
}

/// A table with only a template.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateOnly {
    /// A JSON template for the whole resource, replacing the default.
    pub template: Option<String>,
}

/// `[handlers.appointment_response]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppointmentResponseConfig {
    /// A JSON template for the whole resource, replacing the default. Without `Appointment` in
    /// `resources` it must set `appointment.reference` (`Appointment/{{ data.appointment_id }}`).
    pub template: Option<String>,
    /// `AppointmentResponse.participantStatus` unless the template sets it; `tentative` by
    /// default (the caller asked, no time is agreed yet).
    pub participant_status: Option<ParticipantStatus>,
}

/// FHIR's `ParticipationStatus` codes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParticipantStatus {
    /// `accepted`.
    Accepted,
    /// `declined`.
    Declined,
    /// `tentative`.
    #[default]
    Tentative,
    /// `needs-action`.
    NeedsAction,
}

impl ParticipantStatus {
    /// The FHIR code.
    pub fn code(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Declined => "declined",
            Self::Tentative => "tentative",
            Self::NeedsAction => "needs-action",
        }
    }
}

/// `[handlers.document_reference]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentConfig {
    /// A JSON template for the resource (without `content`), replacing the default.
    pub template: Option<String>,
    /// What the document holds: `transcript` (default) or `summary`.
    #[serde(default)]
    pub content: DocumentContent,
    /// Also attach the artifacts the route's `capture` step stored for the delivery (call
    /// recordings, transcripts), one `content` entry each: `contentType`, base64 `data`,
    /// `size` and `hash` (the SHA-1 of the data, base64, as FHIR's `Attachment.hash` defines).
    /// Off by default; the content is PHI, so it needs `phi = "full"`.
    #[serde(default)]
    pub artifacts: bool,
    /// The largest artifact attached, in bytes: 10 MiB by default, at most 100 MiB. A larger
    /// one fails the attempt permanently (it is never sent short).
    #[serde(default = "default_max_artifact_bytes")]
    pub max_artifact_bytes: u64,
}

impl Default for DocumentConfig {
    fn default() -> Self {
        Self {
            template: None,
            content: DocumentContent::default(),
            artifacts: false,
            max_artifact_bytes: default_max_artifact_bytes(),
        }
    }
}

/// The most `max_artifact_bytes` may be: base64 in a JSON body grows it by a third.
pub const MAX_ARTIFACT_BYTES: u64 = 100 * 1024 * 1024;

fn default_max_artifact_bytes() -> u64 {
    10 * 1024 * 1024
}

/// The text a `DocumentReference` carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentContent {
    /// `data.transcript`.
    #[default]
    Transcript,
    /// `data.ai_summary` (or `data.summary`).
    Summary,
}

fn default_resources() -> Vec<ResourceKind> {
    vec![ResourceKind::Communication]
}

fn default_identifier_system() -> String {
    "urn:wardhook:event".to_owned()
}

fn default_true() -> bool {
    true
}

fn default_timeout() -> u64 {
    15
}

fn default_when_none() -> NoMatch {
    NoMatch::Unmatched
}

fn default_when_several() -> NoMatch {
    NoMatch::Unmatched
}
