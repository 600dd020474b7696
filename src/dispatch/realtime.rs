//! Real-time routes: answer the phone system while the call is still ringing.
//!
//! Some senders wait for our reply and use it mid-call (caller lookup during call setup, tool
//! calls, inbound-call webhooks). A route with `mode = "realtime"` runs its handlers inline, in
//! order, with `app_data` chaining, under one deadline, and renders its `respond` template from
//! the event and the handlers' outputs. Any failure — a handler error, a template error, the
//! deadline — yields the route's `fallback` reply instead, on time: a CRM outage never blocks a
//! call. The delivery itself is stored and deduplicated like any other, and the reply is stored
//! with it so a retried request gets the same answer.
//!
//! A per-route lookup cache keeps the handlers' outputs for a configured key (e.g. the caller's
//! phone number), so a repeat caller is answered without an outbound request. Keys are kept only
//! as HMACs and values only sealed (AES-256-GCM), both under a key that lives in memory for the
//! life of the process, because the outputs of a CRM lookup are PHI.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, KeyInit, OsRng};
use aes_gcm::{AeadCore, Aes256Gcm, Key, Nonce};
use chrono::Utc;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use wardhook_sdk::template::{Escape, Template, Tz, Vars};
use wardhook_sdk::{AppData, Event, Handler};
use zeroize::Zeroizing;

/// Default time budget from request to reply.
pub const DEFAULT_DEADLINE: Duration = crate::config::DEFAULT_REALTIME_DEADLINE;

/// A checked real-time route.
#[derive(Debug)]
pub struct Realtime {
    /// Renders the reply body.
    pub respond: Template,
    /// Status of a computed reply.
    pub status: u16,
    /// Content type of both replies.
    pub content_type: String,
    /// Budget from request to reply.
    pub deadline: Duration,
    /// Body of the fallback reply.
    pub fallback: String,
    /// Status of the fallback reply.
    pub fallback_status: u16,
    /// The lookup cache, if configured.
    pub cache: Option<LookupCache>,
}

/// A reply to a real-time request (storage keeps it with the delivery, so the type is storage
/// vocabulary).
pub use crate::store::Reply;

impl Realtime {
    /// The fallback reply.
    pub fn fallback_reply(&self) -> Reply {
        Reply {
            status: self.fallback_status,
            content_type: self.content_type.clone(),
            body: self.fallback.clone(),
            fallback: true,
        }
    }

    /// Run `handlers` for `event` within `budget` and render the reply; the fallback on any
    /// failure. Never takes longer than `budget` (plus scheduling noise).
    pub async fn answer(
        &self,
        handlers: &[Arc<dyn Handler>],
        event: &Event,
        budget: Duration,
        time_zone: Tz,
    ) -> Answer {
        let deadline = Instant::now() + budget;
        let work = async {
            let cache_key = match &self.cache {
                Some(cache) => Some(cache.key_for(event, time_zone)?),
                None => None,
            };
            let cached = match (&self.cache, &cache_key) {
                (Some(cache), Some(key)) => cache.get(key),
                _ => None,
            };
            let app_data = match cached {
                Some(app_data) => app_data,
                None => {
                    let mut app_data = AppData::new();
                    for handler in handlers {
                        let outcome = super::invoke_at(
                            &**handler,
                            event,
                            1,
                            app_data.clone(),
                            deadline,
                            Utc::now(),
                            time_zone,
                        )
                        .await
                        .map_err(|e| e.to_string())?;
                        app_data.insert(handler.name().to_owned(), outcome.app_data_entry());
                    }
                    if let (Some(cache), Some(key)) = (&self.cache, &cache_key) {
                        cache.put(key, &app_data);
                    }
                    app_data
                }
            };
            let vars = Vars::new(event, &app_data, Utc::now(), time_zone);
            let body = self.respond.render(&vars).map_err(|e| e.to_string())?;
            Ok::<_, String>((body, app_data))
        };
        match tokio::time::timeout(budget, work).await {
            Ok(Ok((body, outputs))) => Answer {
                reply: Reply {
                    status: self.status,
                    content_type: self.content_type.clone(),
                    body,
                    fallback: false,
                },
                outputs: Some(outputs),
            },
            Ok(Err(reason)) => {
                tracing::warn!(reason = %reason, "real-time route fell back");
                self.fallback_answer()
            }
            Err(_) => {
                tracing::warn!(
                    budget_ms = budget.as_millis() as u64,
                    "real-time route missed its deadline; fallback sent"
                );
                self.fallback_answer()
            }
        }
    }

    fn fallback_answer(&self) -> Answer {
        Answer {
            reply: self.fallback_reply(),
            outputs: None,
        }
    }
}

/// What a real-time route's run gave: the reply for the sender and, when it was computed, the
/// handlers' output entries by handler name (fresh or from the lookup cache), from which a
/// handler's `caller_phone_from` can index the call under the caller's number.
#[derive(Debug)]
pub struct Answer {
    /// The reply to send.
    pub reply: Reply,
    /// The handlers' outputs; `None` for a fallback.
    pub outputs: Option<AppData>,
}

/// One cache entry: expiry, nonce and sealed outputs.
type Entry = (Instant, Vec<u8>, Vec<u8>);
/// Entries by key HMAC, and the keys in insertion order (oldest dropped first).
type Entries = (HashMap<[u8; 32], Entry>, VecDeque<[u8; 32]>);

/// A TTL- and size-bounded cache of handler outputs per lookup key.
pub struct LookupCache {
    key_template: Template,
    ttl: Duration,
    max_entries: usize,
    mac_key: Zeroizing<[u8; 32]>,
    cipher: Aes256Gcm,
    entries: Mutex<Entries>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for LookupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LookupCache")
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

impl LookupCache {
    /// A cache keyed by `key_template` rendered over the event.
    pub fn new(key_template: Template, ttl: Duration, max_entries: usize) -> Self {
        let mut mac_key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut *mac_key);
        let mut enc = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut *enc);
        Self {
            key_template,
            ttl,
            max_entries: max_entries.max(1),
            mac_key,
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&*enc)),
            entries: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// (hits, misses) since start.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    fn key_for(&self, event: &Event, tz: Tz) -> Result<[u8; 32], String> {
        let vars = Vars::new(event, &AppData::new(), Utc::now(), tz);
        let text = Zeroizing::new(
            self.key_template
                .render(&vars)
                .map_err(|e| format!("cache key: {e}"))?,
        );
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&*self.mac_key)
            .map_err(|_| "cache key length".to_owned())?;
        mac.update(text.as_bytes());
        Ok(mac.finalize().into_bytes().into())
    }

    fn get(&self, key: &[u8; 32]) -> Option<AppData> {
        let found = {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries
                .0
                .get(key)
                .filter(|(expires, _, _)| *expires > Instant::now())
                .map(|(_, n, c)| (n.clone(), c.clone()))
        };
        let Some((nonce, ct)) = found else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            crate::metrics::realtime_cache(false);
            return None;
        };
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(Nonce::from_slice(&nonce), ct.as_slice())
                .ok()?,
        );
        let value: AppData = serde_json::from_slice(&plain).ok()?;
        self.hits.fetch_add(1, Ordering::Relaxed);
        crate::metrics::realtime_cache(true);
        Some(value)
    }

    fn put(&self, key: &[u8; 32], app_data: &AppData) {
        let Ok(plain) = serde_json::to_vec(app_data).map(Zeroizing::new) else {
            return;
        };
        // The thread's CSPRNG, as `crypto::aead::seal` does: no system call per reply.
        let nonce = Aes256Gcm::generate_nonce(&mut rand::thread_rng());
        let Ok(ct) = self.cipher.encrypt(&nonce, plain.as_slice()) else {
            return;
        };
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (map, order) = &mut *guard;
        if map
            .insert(*key, (Instant::now() + self.ttl, nonce.to_vec(), ct))
            .is_none()
        {
            order.push_back(*key);
        }
        while map.len() > self.max_entries {
            match order.pop_front() {
                Some(old) => {
                    map.remove(&old);
                }
                None => break,
            }
        }
    }
}

/// Compile a route's `respond` template (values JSON-escaped).
pub fn compile_respond(source: &str) -> Result<Template, String> {
    Template::compile(source, Escape::JsonString).map_err(|e| e.to_string())
}

/// Compile a cache key template.
pub fn compile_key(source: &str) -> Result<Template, String> {
    Template::compile(source, Escape::None).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wardhook_sdk::{Context, HandlerError, Outcome};

    #[derive(Debug)]
    struct Panicking;

    #[wardhook_sdk::async_trait]
    impl Handler for Panicking {
        fn name(&self) -> &str {
            "panicky-realtime-test"
        }
        async fn handle(&self, _: &Event, _: &mut Context) -> Result<Outcome, HandlerError> {
            panic!("caller +1 555 0100 said something");
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_the_sender_the_fallback_on_time() {
        let route = Realtime {
            respond: compile_respond(r#"{"name": "{{ app_data.lookup.data.name }}"}"#)
                .expect("respond"),
            status: 200,
            content_type: "application/json".into(),
            deadline: DEFAULT_DEADLINE,
            fallback: r#"{"name": null}"#.into(),
            fallback_status: 200,
            cache: None,
        };
        let event = Event {
            delivery_id: "dlv_rt".into(),
            source: "s".into(),
            event_type: "call.started".into(),
            call_id: None,
            occurred_at: None,
            received_at: Utc::now(),
            caller: wardhook_sdk::Caller::default(),
            data: serde_json::json!({}),
        };
        let handlers: Vec<Arc<dyn Handler>> = vec![Arc::new(Panicking)];
        let started = Instant::now();
        let answer = route
            .answer(&handlers, &event, Duration::from_secs(2), Tz::UTC)
            .await;
        assert_eq!(answer.reply, route.fallback_reply());
        assert!(answer.outputs.is_none(), "a fallback names no outputs");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
