//! Building a handler from its `[[handlers]]` table: the typed config, the factory trait that
//! turns it into a running handler, and problems reported with key paths.
//!
//! A factory is registered by one line in wardhook's registry (`"http" =>
//! build_handler::<HttpFactory>(…)`). Before calling it, the registry takes out the keys every
//! kind shares (`name`, `kind`, `phi`, `baa`); the factory sees only its own keys, and its config
//! type uses `#[serde(deny_unknown_fields)]` so a typo is a problem, not a silently ignored key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::phi::{phi_field, PhiLevel};
use crate::secret::{SecretRef, SecretValue};
use crate::template::{Escape, Template, UrlTemplate};
use crate::Handler;

/// One thing wrong with a handler's config. `path` is relative to the handler's table
/// (`auth.token`); the registry prefixes `handlers[3].`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Key path inside the handler's table; empty for the table itself.
    pub path: String,
    /// What is wrong, without secret values or payload data.
    pub message: String,
}

impl ConfigProblem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl ConfigProblem {
    /// The catch-all a factory returns when [`Problems::check`] passed but a value it needs is
    /// still missing (it should not happen: every `None` comes with a problem).
    pub fn incomplete() -> Vec<ConfigProblem> {
        vec![ConfigProblem::new("", "incomplete configuration")]
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// What a factory knows about the handler it builds besides its own config.
#[derive(Debug, Clone)]
pub struct BuildContext {
    name: String,
    phi: PhiLevel,
    base_dir: PathBuf,
}

impl BuildContext {
    /// The context for the handler `name`, allowed `phi`, whose config file lives in `base_dir`.
    pub fn new(name: impl Into<String>, phi: PhiLevel, base_dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            phi,
            base_dir: base_dir.into(),
        }
    }

    /// The configured handler name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the handler may receive.
    pub fn phi(&self) -> PhiLevel {
        self.phi
    }

    /// The config file's folder: relative paths (CA files, programs) are taken from here.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// `path` made absolute against [`Self::base_dir`].
    pub fn resolve_path(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// Resolve a secret reference found at `key_path`.
    pub fn secret(
        &self,
        key_path: &str,
        reference: &SecretRef,
    ) -> Result<SecretValue, ConfigProblem> {
        reference
            .resolve(&self.base_dir)
            .map_err(|e| ConfigProblem::new(key_path, e.to_string()))
    }

    /// Parse and resolve a secret reference written as a plain string at `key_path` (for
    /// config types where serde cannot report the path, such as internally tagged enums).
    pub fn secret_str(
        &self,
        key_path: &str,
        reference: &str,
    ) -> Result<SecretValue, ConfigProblem> {
        let parsed =
            SecretRef::parse(reference).map_err(|e| ConfigProblem::new(key_path, e.to_string()))?;
        self.secret(key_path, &parsed)
    }

    /// Compile the template found at `key_path`, enforcing minimum necessary: for a
    /// `phi = "none"` handler a reference to a PHI field is a problem naming the field and the
    /// handler.
    pub fn template(
        &self,
        key_path: &str,
        source: &str,
        escape: Escape,
    ) -> Result<Template, ConfigProblem> {
        let template = Template::compile(source, escape)
            .map_err(|e| ConfigProblem::new(key_path, e.to_string()))?;
        self.check_phi(key_path, template.variables())?;
        Ok(template)
    }

    /// Compile the URL template found at `key_path` (see [`UrlTemplate`]: literal scheme and
    /// host, values kept inside their path segment) with the same minimum-necessary rule as
    /// [`Self::template`].
    pub fn url_template(&self, key_path: &str, source: &str) -> Result<UrlTemplate, ConfigProblem> {
        let template = UrlTemplate::compile(source)
            .map_err(|e| ConfigProblem::new(key_path, e.to_string()))?;
        self.check_phi(key_path, template.variables())?;
        Ok(template)
    }

    /// The minimum-necessary rule for any list of referenced variables (templates, or fields an
    /// adapter reads directly).
    pub fn check_phi<'a>(
        &self,
        key_path: &str,
        variables: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), ConfigProblem> {
        if self.phi == PhiLevel::Full {
            return Ok(());
        }
        for var in variables {
            if let Some(field) = phi_field(var) {
                return Err(ConfigProblem::new(
                    key_path,
                    format!(
                        "handler {:?} has phi = \"none\" but references the PHI field `{field}`; \
                         remove it, or set phi = \"full\" with baa = true for a destination \
                         covered by a business associate agreement",
                        self.name
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Builds one kind of handler from its typed config.
pub trait HandlerFactory {
    /// The kind's config: the `[[handlers]]` table minus the shared keys. Use
    /// `#[serde(deny_unknown_fields)]`.
    type Config: DeserializeOwned;

    /// Turn a parsed config into a handler: resolve secrets, compile templates (through
    /// [`BuildContext::template`], which applies the PHI rule), open files. Report every
    /// problem found, not just the first.
    fn build(
        config: Self::Config,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>>;
}

/// Parse `settings` into `F::Config` and build the handler. Deserialization problems carry the
/// key path (`auth.token`, `headers.X-Api-Key`).
pub fn build_handler<F: HandlerFactory>(
    settings: toml::Table,
    ctx: &BuildContext,
) -> Result<Arc<dyn Handler>, Vec<ConfigProblem>> {
    let config: F::Config = parse_config(settings)?;
    F::build(config, ctx)
}

/// Deserialize a typed config from a TOML table, reporting the failing key path.
pub fn parse_config<T: DeserializeOwned>(settings: toml::Table) -> Result<T, Vec<ConfigProblem>> {
    serde_path_to_error::deserialize(toml::Value::Table(settings)).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        // toml appends its own location lines; the key path already says where.
        let message = e.into_inner().to_string();
        let message = message.lines().next().unwrap_or_default().trim().to_owned();
        vec![ConfigProblem::new(path, message)]
    })
}

/// Collects problems while building, so a factory reports all of them at once.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigProblem>);

impl Problems {
    /// No problems yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep the value or remember the problem.
    pub fn take<T>(&mut self, result: Result<T, ConfigProblem>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(p) => {
                self.0.push(p);
                None
            }
        }
    }

    /// Keep the value or remember every problem (for builders that report several at once,
    /// such as [`crate::http::Egress::new`]).
    pub fn take_all<T>(&mut self, result: Result<T, Vec<ConfigProblem>>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(list) => {
                self.0.extend(list);
                None
            }
        }
    }

    /// Remember a problem.
    pub fn push(&mut self, problem: ConfigProblem) {
        self.0.push(problem);
    }

    /// A number of seconds at `key` that must lie in `min..=max` (a timeout, an idle time):
    /// outside, a problem "must be {min} to {max}". The value is clamped into the range, so
    /// the caller can keep building and report every other problem too.
    pub fn seconds(&mut self, key: &str, value: u64, min: u64, max: u64) -> Duration {
        if value < min || value > max {
            self.0
                .push(ConfigProblem::new(key, format!("must be {min} to {max}")));
        }
        Duration::from_secs(value.clamp(min, max))
    }

    /// [`Problems::seconds`] for a request timeout: 1 to 300 seconds, as every bundled
    /// adapter that calls an API accepts.
    pub fn timeout_secs(&mut self, key: &str, value: u64) -> Duration {
        self.seconds(key, value, 1, 300)
    }

    /// The size limit of a handler that attaches the delivery's captured artifacts when
    /// `enabled` (at `enabled_key`), `None` when it does not. Recordings and transcripts are
    /// PHI, so only a `phi = "full"` handler may turn it on; `max_bytes` (at `max_key`) must be
    /// 1 to `ceiling`.
    pub fn artifact_limit(
        &mut self,
        ctx: &BuildContext,
        (enabled_key, enabled): (&str, bool),
        (max_key, max_bytes): (&str, u64),
        ceiling: u64,
    ) -> Option<u64> {
        if enabled && ctx.phi() == PhiLevel::None {
            self.push(ConfigProblem::new(
                enabled_key,
                format!(
                    "handler {:?} has phi = \"none\": recordings and transcripts are PHI (set \
                     phi = \"full\" with baa = true for a destination covered by a business \
                     associate agreement)",
                    ctx.name()
                ),
            ));
        }
        if !(1..=ceiling).contains(&max_bytes) {
            self.push(ConfigProblem::new(
                max_key,
                format!("must be 1 to {ceiling}"),
            ));
        }
        enabled.then_some(max_bytes)
    }

    /// `Err` with every problem so far, or `Ok(())`: call before assembling the handler from
    /// the values [`Problems::take`] kept (all `Some` when this is `Ok`).
    pub fn check(self) -> Result<(), Vec<ConfigProblem>> {
        self.finish(|| ())
    }

    /// `Err` with every problem, or `Ok(value)` when there were none.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, Vec<ConfigProblem>> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(self.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        url: String,
        auth: Auth,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Auth {
        token: SecretRef,
    }

    #[test]
    fn parse_problems_name_the_key_path() {
        let table: toml::Table =
            toml::from_str("url = \"x\"\nauth = { token = \"plain\" }").expect("toml");
        let problems = parse_config::<Cfg>(table).expect_err("literal secret");
        assert_eq!(problems[0].path, "auth.token");
        assert!(
            problems[0].message.contains("env:NAME"),
            "{}",
            problems[0].message
        );

        let table: toml::Table =
            toml::from_str("url = \"x\"\nurll = 1\nauth = { token = \"env:X\" }").expect("toml");
        let problems = parse_config::<Cfg>(table).expect_err("typo");
        assert!(
            problems[0].message.contains("unknown field `urll`"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn seconds_out_of_range_are_a_problem_naming_the_key_and_range() {
        let mut p = Problems::new();
        assert_eq!(p.timeout_secs("timeout_secs", 30), Duration::from_secs(30));
        assert_eq!(p.seconds("idle_secs", 0, 0, 3600), Duration::ZERO);
        assert!(p.0.is_empty());
        assert_eq!(p.timeout_secs("timeout_secs", 0), Duration::from_secs(1));
        assert_eq!(
            p.timeout_secs("timeout_secs", 301),
            Duration::from_secs(300)
        );
        assert_eq!(
            p.0,
            vec![
                ConfigProblem::new("timeout_secs", "must be 1 to 300"),
                ConfigProblem::new("timeout_secs", "must be 1 to 300"),
            ]
        );
        let taken: Option<u8> = p.take_all(Err(vec![
            ConfigProblem::new("a[0]", "x"),
            ConfigProblem::new("a[1]", "y"),
        ]));
        assert!(taken.is_none());
        assert_eq!(p.check().expect_err("problems").len(), 4);
    }

    #[test]
    fn phi_none_handler_cannot_reference_phi_fields() {
        let ctx = BuildContext::new("slack", PhiLevel::None, ".");
        let err = ctx
            .template(
                "body",
                r#"{"text": "call from {{ caller.phone }}"}"#,
                Escape::JsonString,
            )
            .expect_err("phi");
        assert_eq!(err.path, "body");
        assert!(err.message.contains("`caller.phone`"), "{}", err.message);
        assert!(err.message.contains("\"slack\""), "{}", err.message);
        ctx.template(
            "body",
            r#"{"text": "{{ event_type }} ({{ data.duration_seconds }} s)"}"#,
            Escape::JsonString,
        )
        .expect("no phi");
        let full = BuildContext::new("crm", PhiLevel::Full, ".");
        full.template("body", "{{ caller.phone }}", Escape::None)
            .expect("full may");
    }
}
