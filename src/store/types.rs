//! The storage vocabulary: the plain types the [`super::Storage`] trait speaks, shared by every
//! backend and by the code above it. Nothing here knows SQLite or PostgreSQL, HTTP or dispatch.

use std::collections::HashMap;

/// A reply to a real-time request, as given to the sender and kept with its delivery so a
/// retry gets the same answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: String,
    /// Body.
    pub body: String,
    /// Whether this is the route's fallback (for the audit record and metrics).
    pub fallback: bool,
}

/// The route plan's ordering, as data for claiming: for a `(source, handler)`, the handlers of
/// the same routes that must be done before it runs (their outputs are its `app_data`). Dispatch
/// builds it from its routes when the plan changes; storage only looks it up, so it never calls
/// back into dispatch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Predecessors {
    /// source → handler → handlers that must finish first. Nested so a lookup by `&str` needs
    /// no allocation.
    by_source: HashMap<String, HashMap<String, Vec<String>>>,
}

impl Predecessors {
    /// No ordering: every job may run as soon as it is due.
    pub fn none() -> Self {
        Self::default()
    }

    /// Record that `handler` of `source` runs only after `before` are done. An empty `before`
    /// records nothing.
    pub fn insert(&mut self, source: &str, handler: &str, before: Vec<String>) {
        if before.is_empty() {
            return;
        }
        self.by_source
            .entry(source.to_owned())
            .or_default()
            .insert(handler.to_owned(), before);
    }

    /// The handlers that must be done before `handler` of `source` runs; empty when none.
    pub fn before(&self, source: &str, handler: &str) -> &[String] {
        self.by_source
            .get(source)
            .and_then(|h| h.get(handler))
            .map_or(&[], Vec::as_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::Predecessors;

    #[test]
    fn predecessors_lookup() {
        let mut p = Predecessors::none();
        assert!(p.before("s", "b").is_empty());
        p.insert("s", "b", vec!["a".to_owned()]);
        p.insert("s", "a", Vec::new());
        assert_eq!(p.before("s", "b"), ["a".to_owned()]);
        assert!(p.before("s", "a").is_empty());
        assert!(p.before("other", "b").is_empty());
    }
}
