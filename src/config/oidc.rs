//! `[admin.oidc]`: console sign-in through the clinic's OpenID provider.
//!
//! ```toml
//! [admin.oidc]
//! issuer = "https://login.clinic.example/realms/clinic"   # https only; discovery from here
//! client_id = "wardhook-console"
//! client_secret = "env:WARDHOOK_OIDC_CLIENT_SECRET"      # a secret reference, like every secret
//! redirect_url = "https://wardhook.clinic.example:9443/login/oidc/callback"
//! # scopes = ["openid", "profile", "groups"]            # the default
//! # groups_claim = "groups"                             # the ID token claim holding groups/roles
//! # ca_file = "/etc/wardhook/clinic-ca.pem"             # the provider's CA, if not a public one
//! # label = "Clinic account"                            # the sign-in button says "Sign in with …"
//! roles = [
//!   { group = "wardhook-admins", role = "admin" },
//!   { group = "front-desk-it", role = "operator" },
//!   { group = "compliance", role = "auditor" },
//! ]
//! ```
//!
//! The role list is ordered: the first entry whose group the user has decides the role, so the
//! outcome never depends on the order the provider lists groups in. A user with none of the
//! groups is refused; there is no default role. Roles stay text here (`admin`, `operator`,
//! `auditor`, checked): config imports no stage runtime, the console turns them into its roles.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::{Secret, SecretRef, SecretRefText};

/// The path the console serves the provider's redirect on; `redirect_url` must end in it.
pub const CALLBACK_PATH: &str = "/login/oidc/callback";

/// The roles a group may map to (the admin tokens' roles).
pub const ROLES: &[&str] = &["admin", "operator", "auditor"];

/// `[admin.oidc]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The provider's issuer URL (https).
    pub issuer: String,
    /// This console's client id at the provider.
    pub client_id: String,
    /// Its client secret, as a reference (`env:`, `file:`).
    pub client_secret: SecretRefText,
    /// Where the provider sends the browser back: `https://<console>/login/oidc/callback`.
    pub redirect_url: String,
    /// Scopes asked for; must include `openid`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID token claim carrying the user's groups or roles.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// PEM CA certificates to trust for the provider (a clinic's internal CA).
    pub ca_file: Option<PathBuf>,
    /// What the sign-in button names the provider.
    #[serde(default = "default_label")]
    pub label: String,
    /// Group → role, first match wins.
    pub roles: Vec<RoleMapSection>,
}

/// One `{ group = …, role = … }` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleMapSection {
    /// A value of the groups claim.
    pub group: String,
    /// `admin`, `operator` or `auditor`.
    pub role: String,
}

fn default_scopes() -> Vec<String> {
    ["openid", "profile", "groups"].map(str::to_owned).to_vec()
}

fn default_groups_claim() -> String {
    "groups".to_owned()
}

fn default_label() -> String {
    "your organisation's account".to_owned()
}

/// Checked `[admin.oidc]`.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    /// Issuer URL (https), exactly as written: discovery compares it with the provider's
    /// `issuer` character for character, so it is not normalised.
    pub issuer: String,
    /// Client id.
    pub client_id: String,
    /// Client secret (zeroized on drop, never printed).
    pub client_secret: Secret,
    /// Redirect URL registered at the provider, exactly as written.
    pub redirect_url: String,
    /// Scopes, `openid` first.
    pub scopes: Vec<String>,
    /// The groups claim's name.
    pub groups_claim: String,
    /// Extra trusted CA file for the provider, absolute.
    pub ca_file: Option<PathBuf>,
    /// The button's provider name.
    pub label: String,
    /// Group → role text (one of [`ROLES`]), in order.
    pub roles: Vec<(String, String)>,
}

impl OidcSettings {
    /// The role of the first mapping entry whose group is in `groups`, if any.
    pub fn role_for<'a>(&'a self, groups: &[String]) -> Option<&'a str> {
        self.roles
            .iter()
            .find(|(g, _)| groups.iter().any(|have| have == g))
            .map(|(_, r)| r.as_str())
    }
}

/// Check `[admin.oidc]`; every problem goes to `fail` with its key path.
pub fn check(
    section: &OidcSection,
    base: &Path,
    fail: &mut dyn FnMut(String, String),
) -> Option<OidcSettings> {
    let at = |k: &str| format!("admin.oidc.{k}");
    let mut ok = true;
    let mut bad = |k: &str, m: String, ok: &mut bool| {
        fail(at(k), m);
        *ok = false;
    };
    let issuer = match url::Url::parse(&section.issuer) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() => Some(section.issuer.clone()),
        Ok(_) => {
            bad(
                "issuer",
                "must be an https URL (the provider's issuer, as its discovery document states it)"
                    .into(),
                &mut ok,
            );
            None
        }
        Err(e) => {
            bad("issuer", format!("not a URL: {e}"), &mut ok);
            None
        }
    };
    let redirect_url = match url::Url::parse(&section.redirect_url) {
        Ok(ref u) if u.scheme() != "https" => {
            bad(
                "redirect_url",
                "must be an https URL (the console's address)".into(),
                &mut ok,
            );
            None
        }
        Ok(u) if u.path() != CALLBACK_PATH || u.query().is_some() || u.fragment().is_some() => {
            bad(
                "redirect_url",
                format!("must be the console's address with the path {CALLBACK_PATH}"),
                &mut ok,
            );
            None
        }
        Ok(_) => Some(section.redirect_url.clone()),
        Err(e) => {
            bad("redirect_url", format!("not a URL: {e}"), &mut ok);
            None
        }
    };
    if section.client_id.trim().is_empty() {
        bad("client_id", "must not be empty".into(), &mut ok);
    }
    let client_secret =
        match SecretRef::parse(&section.client_secret.0).and_then(|r| Secret::resolve(&r, base)) {
            Ok(s) => Some(s),
            Err(e) => {
                bad("client_secret", e.to_string(), &mut ok);
                None
            }
        };
    if !section.scopes.iter().any(|s| s == "openid") {
        bad("scopes", "must include \"openid\"".into(), &mut ok);
    }
    if let Some(i) = section
        .scopes
        .iter()
        .position(|s| s.is_empty() || s.contains(char::is_whitespace))
    {
        bad(
            &format!("scopes[{i}]"),
            "a scope is one word".into(),
            &mut ok,
        );
    }
    if section.groups_claim.trim().is_empty() {
        bad("groups_claim", "must not be empty".into(), &mut ok);
    }
    let ca_file = section.ca_file.as_ref().map(|p| base.join(p));
    if let Some(ca) = &ca_file {
        match std::fs::read(ca) {
            Ok(pem) if reqwest::Certificate::from_pem_bundle(&pem).is_ok_and(|c| !c.is_empty()) => {
            }
            Ok(_) => bad(
                "ca_file",
                format!("{} holds no PEM certificate", ca.display()),
                &mut ok,
            ),
            Err(e) => bad(
                "ca_file",
                format!("cannot read {}: {e}", ca.display()),
                &mut ok,
            ),
        }
    }
    if section.roles.is_empty() {
        bad(
            "roles",
            "map at least one group to a role; users with no mapped group are refused".into(),
            &mut ok,
        );
    }
    for (i, m) in section.roles.iter().enumerate() {
        if m.group.is_empty() {
            bad(
                &format!("roles[{i}].group"),
                "must not be empty".into(),
                &mut ok,
            );
        }
        if !ROLES.contains(&m.role.as_str()) {
            bad(
                &format!("roles[{i}].role"),
                format!("must be one of {}", ROLES.join(", ")),
                &mut ok,
            );
        }
    }
    let mut scopes = vec!["openid".to_owned()];
    scopes.extend(section.scopes.iter().filter(|s| *s != "openid").cloned());
    if !ok {
        return None;
    }
    Some(OidcSettings {
        issuer: issuer?,
        client_id: section.client_id.trim().to_owned(),
        client_secret: client_secret?,
        redirect_url: redirect_url?,
        scopes,
        groups_claim: section.groups_claim.clone(),
        ca_file,
        label: section.label.clone(),
        roles: section
            .roles
            .iter()
            .map(|m| (m.group.clone(), m.role.clone()))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(issuer: &str, redirect: &str, roles: &[(&str, &str)]) -> OidcSection {
        OidcSection {
            issuer: issuer.into(),
            client_id: "console".into(),
            client_secret: SecretRefText("file:oidc.secret".into()),
            redirect_url: redirect.into(),
            scopes: default_scopes(),
            groups_claim: default_groups_claim(),
            ca_file: None,
            label: default_label(),
            roles: roles
                .iter()
                .map(|(g, r)| RoleMapSection {
                    group: (*g).into(),
                    role: (*r).into(),
                })
                .collect(),
        }
    }

    fn problems(s: &OidcSection) -> (Option<OidcSettings>, Vec<String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("oidc.secret"), "s3cret").expect("secret");
        let mut found = Vec::new();
        let out = check(s, dir.path(), &mut |k, m| found.push(format!("{k}: {m}")));
        (out, found)
    }

    const OK_REDIRECT: &str = "https://console.example:9443/login/oidc/callback";

    #[test]
    fn a_complete_section_is_accepted_with_openid_first() {
        let (out, found) = problems(&section(
            "https://idp.example/realms/clinic",
            OK_REDIRECT,
            &[("admins", "admin")],
        ));
        assert!(found.is_empty(), "{found:?}");
        let out = out.expect("settings");
        assert_eq!(out.scopes[0], "openid");
        assert_eq!(
            out.issuer, "https://idp.example/realms/clinic",
            "not normalised"
        );
        assert_eq!(out.client_secret.expose(), b"s3cret");
    }

    #[test]
    fn plain_http_wrong_paths_unknown_roles_and_no_roles_are_refused_with_their_keys() {
        let (out, found) = problems(&section(
            "http://idp.example",
            "https://console.example/elsewhere",
            &[("admins", "root")],
        ));
        assert!(out.is_none());
        let text = found.join("\n");
        assert!(
            text.contains("admin.oidc.issuer: must be an https URL"),
            "{text}"
        );
        assert!(
            text.contains("admin.oidc.redirect_url: must be the console's address"),
            "{text}"
        );
        assert!(
            text.contains("admin.oidc.roles[0].role: must be one of"),
            "{text}"
        );
        let (_, found) = problems(&section(
            "https://idp.example",
            "http://c.example/login/oidc/callback",
            &[],
        ));
        let text = found.join("\n");
        assert!(
            text.contains("admin.oidc.redirect_url: must be an https URL"),
            "{text}"
        );
        assert!(
            text.contains("admin.oidc.roles: map at least one group"),
            "{text}"
        );
    }

    #[test]
    fn the_first_listed_group_decides_the_role_and_no_group_means_no_role() {
        let (out, _) = problems(&section(
            "https://idp.example",
            OK_REDIRECT,
            &[("admins", "admin"), ("staff", "auditor")],
        ));
        let out = out.expect("settings");
        let groups = |g: &[&str]| g.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(out.role_for(&groups(&["staff", "admins"])), Some("admin"));
        assert_eq!(out.role_for(&groups(&["staff"])), Some("auditor"));
        assert_eq!(out.role_for(&groups(&["front-desk"])), None);
        assert_eq!(out.role_for(&[]), None);
    }
}
