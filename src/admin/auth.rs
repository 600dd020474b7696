//! Who is calling the admin listener, and whether they may do what they ask.
//!
//! Two ways in, one identity: the API takes `Authorization: Bearer <token>` on every call; the
//! dashboard exchanges a token once for a session cookie (HttpOnly, Secure, SameSite=Strict)
//! whose session ends after the configured idle time — and, however busy, at the end of its
//! configured lifetime, so a stolen or forgotten session cannot be kept alive for ever by
//! activity (its own or an attacker's) — and carries a per-session CSRF token
//! that every state-changing form must echo. Failed sign-ins are counted per client address and
//! refused for a while past a threshold; each failure is an `access_denied` audit record.
//! A console user may instead sign in through the clinic's OpenID provider (`oidc`): the
//! session that follows is the same kind of session, only its identity differs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use rand::RngCore;
use subtle::ConstantTimeEq;

use super::Role;
use crate::audit::Actor;
use crate::store::Requester;

/// How a caller proved who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An admin token, by id (audit actor `admin_token:<id>`).
    Token(String),
    /// A console user signed in through the clinic's OpenID provider, by their user name there
    /// (audit actor `oidc:<user>`).
    Oidc(String),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Who, and how they signed in.
    pub identity: Identity,
    /// Token name or provider user name, for display.
    pub name: String,
    /// Role.
    pub role: Role,
}

impl Principal {
    /// The audit actor of everything this caller causes.
    pub fn actor(&self) -> Actor {
        match &self.identity {
            Identity::Token(id) => Actor::admin_token(id),
            Identity::Oidc(user) => Actor::oidc(user),
        }
        .unwrap_or(Actor::System)
    }

    /// The same caller as the store's requester (its records carry the same actor).
    pub fn requester(&self) -> Requester {
        match &self.identity {
            Identity::Token(id) => Requester::admin_token(id),
            Identity::Oidc(user) => Requester::oidc(user),
        }
    }

    /// The token id, when the caller signed in with a token (revocation ends its sessions).
    pub fn token_id(&self) -> Option<&str> {
        match &self.identity {
            Identity::Token(id) => Some(id),
            Identity::Oidc(_) => None,
        }
    }
}

/// What a caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Metadata: deliveries, jobs, attempts, dead letters, quarantine, health, config, metrics.
    ReadMetadata,
    /// Decrypt and show a payload (audited as `payload_read`).
    RevealPayload,
    /// Replay deliveries and retry dead letters.
    Requeue,
    /// Search, verify and export the audit log.
    ReadAudit,
}

impl Role {
    /// The permission table: operators fix deliveries, auditors read the audit trail, admins
    /// do both. Only operators and admins ever see decrypted data.
    pub fn allows(self, p: Permission) -> bool {
        matches!(
            (self, p),
            (Self::Admin, _)
                | (_, Permission::ReadMetadata)
                | (
                    Self::Operator,
                    Permission::RevealPayload | Permission::Requeue
                )
                | (Self::Auditor, Permission::ReadAudit)
        )
    }
}

/// A signed-in dashboard session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who.
    pub principal: Principal,
    /// Echoed by every state-changing form.
    pub csrf: String,
    started: Instant,
    last_seen: Instant,
    /// The unresolved console alerts, read when the session's request was let in; every
    /// page's banner shows them.
    pub alerts: Vec<crate::store::alerts::Alert>,
}

/// Dashboard sessions, in memory: a restart signs everyone out, which is what an on-prem
/// console wants (no session secrets on disk).
#[derive(Debug)]
pub struct Sessions {
    idle: Duration,
    lifetime: Duration,
    map: Mutex<HashMap<String, Session>>,
}

/// Why a session cookie was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// No cookie or an unknown one.
    None,
    /// It ended after the idle time.
    Expired,
    /// It reached its lifetime, however busy it was.
    LifetimeOver,
}

fn random_token(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl Sessions {
    /// Sessions ending after `idle` without a request, and `lifetime` after they began.
    pub fn new(idle: Duration, lifetime: Duration) -> Self {
        Self {
            idle,
            lifetime,
            map: Mutex::default(),
        }
    }

    /// The idle time.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// The absolute lifetime.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Why `s` is over now, if it is.
    fn over(&self, s: &Session) -> Option<SessionState> {
        if s.last_seen.elapsed() >= self.idle {
            Some(SessionState::Expired)
        } else if s.started.elapsed() >= self.lifetime {
            Some(SessionState::LifetimeOver)
        } else {
            None
        }
    }

    /// Start a session; returns its cookie value.
    pub fn create(&self, principal: Principal) -> String {
        let id = random_token(32);
        let now = Instant::now();
        let session = Session {
            principal,
            csrf: random_token(24),
            started: now,
            last_seen: now,
            alerts: Vec::new(),
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, s| self.over(s).is_none());
        map.insert(id.clone(), session);
        id
    }

    /// The session for `cookie`, touched (its idle clock restarts; its lifetime does not).
    pub fn touch(&self, cookie: &str) -> Result<Session, SessionState> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get_mut(cookie).ok_or(SessionState::None)?;
        if let Some(over) = self.over(s) {
            map.remove(cookie);
            return Err(over);
        }
        s.last_seen = Instant::now();
        Ok(s.clone())
    }

    /// End a session.
    pub fn remove(&self, cookie: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cookie);
    }
}

/// Constant-time comparison of a submitted CSRF token with the session's.
pub fn csrf_matches(session: &Session, submitted: &str) -> bool {
    !submitted.is_empty() && bool::from(session.csrf.as_bytes().ct_eq(submitted.as_bytes()))
}

/// Failed sign-ins allowed per client address within [`LOGIN_WINDOW`].
pub const MAX_LOGIN_FAILURES: u32 = 5;
/// The window failed sign-ins are counted over, and how long a client is then refused.
pub const LOGIN_WINDOW: Duration = Duration::from_secs(300);

/// Failed sign-ins per client address.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    map: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl LoginLimiter {
    /// Seconds to wait if `ip` is refused now.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&ip) {
            Some((n, start)) if *n >= MAX_LOGIN_FAILURES && start.elapsed() < LOGIN_WINDOW => {
                Some((LOGIN_WINDOW - start.elapsed()).as_secs().max(1))
            }
            _ => None,
        }
    }

    /// Count a failure; returns the failures in the current window.
    pub fn fail(&self, ip: IpAddr) -> u32 {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 10_000 {
            map.retain(|_, (_, start)| start.elapsed() < LOGIN_WINDOW);
        }
        let e = map.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= LOGIN_WINDOW {
            *e = (0, Instant::now());
        }
        e.0 += 1;
        e.0
    }

    /// A successful sign-in clears the count.
    pub fn succeed(&self, ip: IpAddr) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ip);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_operators_and_admins_may_reveal_and_only_auditors_and_admins_read_audit() {
        assert!(Role::Operator.allows(Permission::RevealPayload));
        assert!(Role::Admin.allows(Permission::RevealPayload));
        assert!(!Role::Auditor.allows(Permission::RevealPayload));
        assert!(!Role::Auditor.allows(Permission::Requeue));
        assert!(Role::Auditor.allows(Permission::ReadAudit));
        assert!(!Role::Operator.allows(Permission::ReadAudit));
    }

    fn principal(identity: Identity) -> Principal {
        Principal {
            identity,
            name: "a".into(),
            role: Role::Admin,
        }
    }

    #[test]
    fn sessions_end_after_the_idle_time() {
        let s = Sessions::new(Duration::from_millis(50), Duration::from_secs(3600));
        let id = s.create(principal(Identity::Token("tk0000000000".into())));
        assert!(s.touch(&id).is_ok());
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.touch(&id).err(), Some(SessionState::Expired));
        assert_eq!(s.touch(&id).err(), Some(SessionState::None));
    }

    #[test]
    fn a_busy_session_ends_at_its_lifetime_whatever_its_identity() {
        let lifetime = Duration::from_millis(300);
        let s = Sessions::new(Duration::from_millis(100), lifetime);
        let token = s.create(principal(Identity::Token("tk0000000000".into())));
        let oidc = s.create(principal(Identity::Oidc("carol".into())));
        let began = Instant::now();
        // Used every 20 ms: never idle, yet over once the lifetime has passed.
        while began.elapsed() + Duration::from_millis(40) < lifetime {
            assert!(s.touch(&token).is_ok());
            assert!(s.touch(&oidc).is_ok());
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(60));
        for id in [&token, &oidc] {
            assert_eq!(s.touch(id).err(), Some(SessionState::LifetimeOver));
            assert_eq!(s.touch(id).err(), Some(SessionState::None), "removed");
        }
        // A new sign-in starts a new lifetime.
        let again = s.create(principal(Identity::Oidc("carol".into())));
        assert!(s.touch(&again).is_ok());
    }

    #[test]
    fn a_client_is_refused_after_too_many_failures() {
        let l = LoginLimiter::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..MAX_LOGIN_FAILURES {
            assert!(l.blocked(ip).is_none());
            l.fail(ip);
        }
        assert!(l.blocked(ip).is_some());
    }
}
