//! `[artifacts]`: capturing the call recordings and transcripts senders only link to.
//!
//! ```toml
//! [artifacts]
//! dir = "data/artifacts"          # encrypted files, 0600 in a 0700 folder
//! max_bytes = 104857600           # per artifact (100 MiB)
//! timeout_secs = 300              # per download
//!
//! [[artifacts.sources]]
//! source = "twilio-recordings"
//! # fields = ["RecordingUrl"]     # default from the source's preset
//! allow_hosts = ["api.twilio.com"]
//! auth = { type = "basic", username = "env:TWILIO_ACCOUNT_SID", password = "env:TWILIO_AUTH_TOKEN" }
//! # content_types = ["audio/x-wav", "audio/wav", "audio/mpeg"]
//! # delete_at_vendor = false      # DELETE the recording at the vendor after a verified capture
//! ```
//!
//! A route asks for the capture by naming the built-in step `capture` first in its `handlers`.
//! Hosts come from this list only (never from the event), secrets are references, and every
//! problem is reported with its key path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::secret::{Secret, SecretRef, SecretRefText};

/// Default cap per artifact: 100 MiB (an hour of 8 kHz 16-bit mono WAV is about 58 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 100 * 1024 * 1024;
/// Content types accepted unless a source lists its own.
pub const DEFAULT_CONTENT_TYPES: &[&str] = &[
    "audio/x-wav",
    "audio/wav",
    "audio/wave",
    "audio/mpeg",
    "audio/mp3",
    "text/plain",
    "application/json",
];

/// The event fields (dotted paths under `data`) that hold artifact URLs, per preset.
pub fn default_fields(preset: &str) -> &'static [&'static str] {
    match preset {
        "twilio" => &["RecordingUrl"],
        "phoneshield" => &["recording_url", "transcription_url"],
        "retell" => &["recording_url"],
        "vapi" => &["artifact.recordingUrl", "recordingUrl"],
        _ => &[],
    }
}

/// `[artifacts]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsSection {
    /// Folder for the encrypted files.
    pub dir: PathBuf,
    /// Cap per artifact, bytes.
    pub max_bytes: Option<u64>,
    /// Seconds one download may take.
    pub timeout_secs: Option<u64>,
    /// Per-source capture settings.
    #[serde(default)]
    pub sources: Vec<CaptureSection>,
}

/// `[[artifacts.sources]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSection {
    /// The `[[sources]]` name.
    pub source: String,
    /// Dotted paths under the event's `data` holding URLs; default from the preset.
    pub fields: Option<Vec<String>>,
    /// Hosts downloads may go to (names, addresses or CIDR ranges).
    pub allow_hosts: Vec<String>,
    /// Accepted content types (without parameters).
    pub content_types: Option<Vec<String>>,
    /// Credentials for the download.
    pub auth: Option<AuthSection>,
    /// Extra CA certificates (PEM) to trust for the vendor.
    pub ca_file: Option<PathBuf>,
    /// Delete the artifact at the vendor after a verified capture.
    #[serde(default)]
    pub delete_at_vendor: bool,
}

/// `auth = { type = … }` as written.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthSection {
    /// HTTP basic (Twilio: account SID and auth token).
    Basic {
        /// User name reference.
        username: SecretRefText,
        /// Password reference.
        password: SecretRefText,
    },
    /// `Authorization: Bearer`.
    Bearer {
        /// Token reference.
        token: SecretRefText,
    },
}

/// Checked `[artifacts]`.
#[derive(Debug, Clone)]
pub struct ArtifactsSettings {
    /// Folder for the encrypted files (absolute or relative to the working directory).
    pub dir: PathBuf,
    /// Cap per artifact, bytes.
    pub max_bytes: u64,
    /// Time limit per download.
    pub timeout: Duration,
    /// Per-source settings.
    pub sources: Vec<CaptureSource>,
}

impl ArtifactsSettings {
    /// The settings of `source`, if it captures.
    pub fn source(&self, source: &str) -> Option<&CaptureSource> {
        self.sources.iter().find(|s| s.source == source)
    }
}

/// Checked `[[artifacts.sources]]`.
#[derive(Debug, Clone)]
pub struct CaptureSource {
    /// The source name.
    pub source: String,
    /// Dotted paths under `data`.
    pub fields: Vec<String>,
    /// Allowed hosts.
    pub allow_hosts: Vec<String>,
    /// Accepted content types, lower case.
    pub content_types: Vec<String>,
    /// Resolved credentials.
    pub auth: Option<CaptureAuth>,
    /// Extra CA file.
    pub ca_file: Option<PathBuf>,
    /// Delete at the vendor after capture.
    pub delete_at_vendor: bool,
}

/// Resolved download credentials. Never printed.
#[derive(Clone)]
pub enum CaptureAuth {
    /// HTTP basic.
    Basic {
        /// User name.
        username: Secret,
        /// Password.
        password: Secret,
    },
    /// Bearer token.
    Bearer {
        /// Token.
        token: Secret,
    },
}

impl std::fmt::Debug for CaptureAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { .. } => f.write_str("Basic(redacted)"),
            Self::Bearer { .. } => f.write_str("Bearer(redacted)"),
        }
    }
}

fn valid_field(f: &str) -> bool {
    !f.is_empty()
        && f.len() <= 64
        && f.starts_with(|c: char| c.is_ascii_alphabetic())
        && f.split('.').all(|part| {
            !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Check `[artifacts]` against the sources (`(name, preset)`); every problem goes to
/// `problem(path, message)`.
pub(super) fn check(
    section: &ArtifactsSection,
    sources: &[(String, String)],
    base: &Path,
    problem: &mut dyn FnMut(String, String),
) -> Option<ArtifactsSettings> {
    let mut ok = true;
    let mut fail = |p: String, m: String| {
        ok = false;
        problem(p, m);
    };
    let max_bytes = section.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    if max_bytes == 0 {
        fail("artifacts.max_bytes".into(), "must be at least 1".into());
    }
    let timeout_secs = section.timeout_secs.unwrap_or(300);
    if timeout_secs == 0 || timeout_secs > 3600 {
        fail(
            "artifacts.timeout_secs".into(),
            "must be between 1 and 3600".into(),
        );
    }
    let mut out = Vec::new();
    for (i, s) in section.sources.iter().enumerate() {
        let at = format!("artifacts.sources[{i}]");
        let Some((_, preset)) = sources.iter().find(|(n, _)| *n == s.source) else {
            fail(
                format!("{at}.source"),
                format!("no source is named {:?}", s.source),
            );
            continue;
        };
        if out.iter().any(|o: &CaptureSource| o.source == s.source) {
            fail(
                format!("{at}.source"),
                "this source already has capture settings".into(),
            );
        }
        let fields: Vec<String> = match &s.fields {
            Some(f) => f.clone(),
            None => default_fields(preset)
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
        };
        if fields.is_empty() {
            fail(
                format!("{at}.fields"),
                format!("preset {preset:?} has no default artifact fields; list them"),
            );
        }
        for (j, f) in fields.iter().enumerate() {
            if !valid_field(f) {
                fail(
                    format!("{at}.fields[{j}]"),
                    "a field is a dotted path of letters, digits and _ under `data`".into(),
                );
            }
        }
        if s.allow_hosts.is_empty() {
            fail(
                format!("{at}.allow_hosts"),
                "list the vendor hosts downloads may go to".into(),
            );
        }
        let mut resolve = |key: &str, r: &SecretRefText| -> Option<Secret> {
            match SecretRef::parse(&r.0)
                .map_err(|e| e.to_string())
                .and_then(|r| Secret::resolve(&r, base).map_err(|e| e.to_string()))
            {
                Ok(s) => Some(s),
                Err(e) => {
                    fail(format!("{at}.auth.{key}"), e);
                    None
                }
            }
        };
        let auth = match &s.auth {
            None => None,
            Some(AuthSection::Basic { username, password }) => {
                match (resolve("username", username), resolve("password", password)) {
                    (Some(username), Some(password)) => {
                        Some(CaptureAuth::Basic { username, password })
                    }
                    _ => None,
                }
            }
            Some(AuthSection::Bearer { token }) => {
                resolve("token", token).map(|token| CaptureAuth::Bearer { token })
            }
        };
        let content_types = s
            .content_types
            .clone()
            .unwrap_or_else(|| {
                DEFAULT_CONTENT_TYPES
                    .iter()
                    .map(|t| (*t).to_owned())
                    .collect()
            })
            .into_iter()
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        out.push(CaptureSource {
            source: s.source.clone(),
            fields,
            allow_hosts: s.allow_hosts.clone(),
            content_types,
            auth,
            ca_file: s.ca_file.as_ref().map(|p| base.join(p)),
            delete_at_vendor: s.delete_at_vendor,
        });
    }
    ok.then(|| ArtifactsSettings {
        dir: base.join(&section.dir),
        max_bytes,
        timeout: Duration::from_secs(timeout_secs),
        sources: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_src: &str) -> ArtifactsSection {
        toml::from_str(toml_src).expect("toml")
    }

    fn sources() -> Vec<(String, String)> {
        vec![
            ("twilio".into(), "twilio".into()),
            ("custom".into(), "generic".into()),
        ]
    }

    #[test]
    fn presets_give_default_fields_and_every_problem_has_its_key_path() {
        let ok = section(
            r#"
            dir = "art"
            [[sources]]
            source = "twilio"
            allow_hosts = ["api.twilio.com"]
            "#,
        );
        let mut problems = Vec::new();
        let settings = check(&ok, &sources(), Path::new("/base"), &mut |p, m| {
            problems.push((p, m))
        })
        .expect("valid");
        assert!(problems.is_empty());
        assert_eq!(settings.dir, Path::new("/base/art"));
        assert_eq!(settings.sources[0].fields, ["RecordingUrl"]);
        assert!(!settings.sources[0].delete_at_vendor, "off by default");

        let bad = section(
            r#"
            dir = "art"
            max_bytes = 0
            [[sources]]
            source = "nobody"
            allow_hosts = ["x"]
            [[sources]]
            source = "custom"
            allow_hosts = []
            [[sources]]
            source = "twilio"
            fields = ["Recording Url"]
            allow_hosts = ["api.twilio.com"]
            auth = { type = "basic", username = "env:WARDHOOK_ARTIFACT_TEST_UNSET", password = "plain" }
            "#,
        );
        let mut problems = Vec::new();
        assert!(check(&bad, &sources(), Path::new("/base"), &mut |p, m| {
            problems.push((p, m))
        })
        .is_none());
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        for expected in [
            "artifacts.max_bytes",
            "artifacts.sources[0].source",
            "artifacts.sources[1].fields",
            "artifacts.sources[1].allow_hosts",
            "artifacts.sources[2].fields[0]",
            "artifacts.sources[2].auth.username",
            "artifacts.sources[2].auth.password",
        ] {
            assert!(
                paths.contains(&expected),
                "{expected} missing from {paths:?}"
            );
        }
    }
}
