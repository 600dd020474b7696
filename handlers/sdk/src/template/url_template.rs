//! URL templates: a value substituted into a path segment stays inside that segment.
//!
//! Percent-encoding values is not enough on its own. The URL standard (and so `url::Url`,
//! reqwest, and most servers) treats a segment that is `.` or `..` — or `%2e`, `.%2E`,
//! `%2e%2e`, any case — as a *dot segment* and removes it together with its parent, so
//! `https://crm/api/patients/{{ data.id }}/notes` with the id `..` used to be sent to
//! `/api/notes`. No encoding of a dot survives that rule, so the template is taken apart
//! instead:
//!
//! - the scheme and host (`https://crm.internal:8443`) are literal text from the config —
//!   a placeholder there is refused at compile time, so no event can choose where a request
//!   goes;
//! - the path is split at every `/` outside template tags, and each segment is compiled on its
//!   own; a rendered segment that holds a value and comes out empty, `.` or `..` (percent-encoded
//!   or not) is refused, so the request never leaves for another resource;
//! - every value is percent-encoded as a URL component (`/`, `?`, `#`, `\`, `%`, spaces and
//!   non-ASCII included; `| safe` does not turn this off), so it can add neither segments nor
//!   query parameters; the query after `?` is rendered the same way;
//! - the path is then set on the fixed origin, and the result must have exactly the configured
//!   number of segments.
//!
//! A fragment (`#…`) is never sent over HTTP, so a URL template cannot have one.

use std::collections::BTreeSet;

use url::Url;

use super::{find_tag_open, rewrite_sender_syntax, Escape, Template, TemplateError, Vars};

/// A compiled URL template: fixed origin, one template per path segment, the query.
#[derive(Debug, Clone)]
pub struct UrlTemplate {
    /// `scheme://host[:port]/`, from the config, never rendered.
    origin: Url,
    /// The path's segments, in order.
    segments: Vec<Segment>,
    /// The query text after `?`, values encoded as components.
    query: Option<Template>,
    /// Every variable any part reads.
    variables: BTreeSet<String>,
}

/// One path segment of a URL template.
#[derive(Debug, Clone)]
enum Segment {
    /// Text without placeholders, as written in the config.
    Literal(String),
    /// A segment with at least one placeholder.
    Templated(Template),
}

impl UrlTemplate {
    /// Compile `source` (after the sender-habit rewrites, so `[caller_number]` counts as a
    /// placeholder too). Refuses a placeholder in the scheme or host, a fragment, a backslash
    /// or a dot segment in the literal path, and a `{% %}` block that spans segments.
    pub fn compile(source: &str) -> Result<Self, TemplateError> {
        let source = rewrite_sender_syntax(source);
        let inside = tag_mask(&source);
        let outside = |i: usize| !inside[i];

        let Some(scheme_end) = source.find("://") else {
            return Err(shape(
                "must start with a literal scheme and host: https://host/path",
            ));
        };
        let after_scheme = scheme_end + 3;
        let authority_end = source[after_scheme..]
            .find(['/', '?', '#'])
            .map_or(source.len(), |i| after_scheme + i);
        let origin_text = &source[..authority_end];
        if origin_text.contains('{') || origin_text.contains('}') {
            return Err(shape(
                "the scheme and host must be literal text from the config: no placeholders \
                 before the path (an event must not choose where the request goes)",
            ));
        }
        let origin = Url::parse(origin_text)
            .ok()
            .filter(|u| u.has_host() && !u.cannot_be_a_base())
            .ok_or_else(|| shape("the scheme and host do not form a URL"))?;

        // The path runs to the first `?` or `#` outside a tag.
        let rest_start = authority_end;
        let path_end = (rest_start..source.len())
            .find(|&i| outside(i) && matches!(source.as_bytes()[i], b'?' | b'#'))
            .unwrap_or(source.len());
        if (path_end..source.len()).any(|i| outside(i) && source.as_bytes()[i] == b'#') {
            return Err(shape(
                "a URL template cannot have a fragment (`#…` is never sent)",
            ));
        }
        if (rest_start..path_end).any(|i| outside(i) && source.as_bytes()[i] == b'\\') {
            return Err(shape(
                "a backslash in the path is read as `/`; write `/` or percent-encode it",
            ));
        }

        let mut segments = Vec::new();
        let mut variables = BTreeSet::new();
        if path_end > rest_start {
            // The path starts with `/` (the authority ended at the first one).
            let ends = (rest_start + 1..path_end)
                .filter(|&i| outside(i) && source.as_bytes()[i] == b'/')
                .chain([path_end]);
            let mut start = rest_start + 1;
            for i in ends {
                let text = &source[start..i];
                let position = segments.len() + 1;
                if find_tag_open(text).is_none() {
                    // An empty literal segment (`a//b`, a trailing `/`) is the config's choice.
                    if dot_segment(text).is_some_and(|s| s != "empty") {
                        return Err(shape(&format!(
                            "path segment {position} is `.` or `..`; write the path it means"
                        )));
                    }
                    segments.push(Segment::Literal(text.to_owned()));
                } else {
                    let template = Template::compile_rewritten(text, Escape::UrlComponent)
                        .map_err(|e| in_segment(position, e))?;
                    variables.extend(template.variables().map(str::to_owned));
                    segments.push(Segment::Templated(template));
                }
                start = i + 1;
            }
        }
        let query = if path_end < source.len() {
            let template =
                Template::compile_rewritten(&source[path_end + 1..], Escape::UrlComponent)?;
            variables.extend(template.variables().map(str::to_owned));
            Some(template)
        } else {
            None
        };
        Ok(Self {
            origin,
            segments,
            query,
            variables,
        })
    }

    /// `scheme://host[:port]/`: where every request of this template goes.
    pub fn origin(&self) -> &Url {
        &self.origin
    }

    /// The number of path segments every rendered URL has.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The variables the template reads, as dotted paths.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(String::as_str)
    }

    /// Render for one event. [`TemplateError::PathSegment`] when a segment holding a value
    /// would come out empty, `.` or `..`.
    pub fn render(&self, vars: &Vars) -> Result<Url, TemplateError> {
        let mut path = String::new();
        for (i, segment) in self.segments.iter().enumerate() {
            path.push('/');
            match segment {
                Segment::Literal(text) => path.push_str(text),
                Segment::Templated(template) => {
                    let text = template.render(vars)?;
                    if let Some(shape) = dot_segment(&text) {
                        return Err(TemplateError::PathSegment {
                            position: i + 1,
                            shape,
                        });
                    }
                    path.push_str(&text);
                }
            }
        }
        let mut url = self.origin.clone();
        url.set_path(if path.is_empty() { "/" } else { &path });
        if let Some(query) = &self.query {
            url.set_query(Some(&query.render(vars)?));
        }
        // Belt and braces: whatever the parser made of it, the segments are the configured ones.
        let rendered = url.path_segments().map_or(0, Iterator::count);
        if rendered != self.segments.len().max(1) {
            return Err(TemplateError::Render {
                reason: "the rendered URL does not have the configured path segments".into(),
            });
        }
        Ok(url)
    }
}

/// `Some("empty" | "`.`" | "`..`")` when `segment` is one the URL standard would drop or use
/// to climb: empty, or `.`/`..` with any dot written as `%2e`/`%2E`.
fn dot_segment(segment: &str) -> Option<&'static str> {
    let decoded = segment.replace("%2e", ".").replace("%2E", ".");
    match decoded.as_str() {
        "" => Some("empty"),
        "." => Some("`.`"),
        ".." => Some("`..`"),
        _ => None,
    }
}

/// For each byte of `text`, whether it is inside a `{{ }}`, `{% %}` or `{# #}` tag (an
/// unterminated tag runs to the end; the compiler reports it).
fn tag_mask(text: &str) -> Vec<bool> {
    let mut mask = vec![false; text.len()];
    let mut pos = 0;
    while let Some(open) = find_tag_open(&text[pos..]) {
        let start = pos + open;
        let close = match &text[start..start + 2] {
            "{{" => "}}",
            "{%" => "%}",
            _ => "#}",
        };
        let end = text[start + 2..]
            .find(close)
            .map_or(text.len(), |e| start + 2 + e + 2);
        mask[start..end].iter_mut().for_each(|m| *m = true);
        pos = end;
    }
    mask
}

fn shape(reason: &str) -> TemplateError {
    TemplateError::UrlShape {
        reason: reason.to_owned(),
    }
}

fn in_segment(position: usize, e: TemplateError) -> TemplateError {
    match e {
        TemplateError::Syntax { reason } => TemplateError::Syntax {
            reason: format!(
                "path segment {position}: {reason} (a {{% %}} block cannot span path segments)"
            ),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Caller, Event};

    fn vars(id: &str) -> Vars {
        let event = Event {
            delivery_id: "dlv_1".into(),
            source: "s".into(),
            event_type: "call.ended".into(),
            call_id: Some("call_42".into()),
            occurred_at: None,
            received_at: chrono::Utc::now(),
            caller: Caller::default(),
            data: serde_json::json!({ "id": id }),
        };
        Vars::new(
            &event,
            &serde_json::Map::new(),
            chrono::Utc::now(),
            chrono_tz::Tz::UTC,
        )
    }

    fn decoded_segments(url: &Url) -> Vec<String> {
        url.path_segments()
            .expect("segments")
            .map(percent_decode)
            .collect()
    }

    fn percent_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn a_value_stays_inside_its_path_segment_whatever_it_is() {
        let t = UrlTemplate::compile("https://crm.example/api/patients/{{ data.id }}/notes?x=1")
            .expect("compiles");
        assert_eq!(t.segment_count(), 4);
        for id in [
            "...",
            "/",
            "../..",
            "%2e%2e",
            "%2E.",
            ".%2e",
            "?a=b",
            "#top",
            "\\..\\admin",
            "a/../../b",
            "ünï cødé ☎",
            " ",
            "x.y",
            "@evil.example",
            "//evil.example/x",
        ] {
            let url = t.render(&vars(id)).expect(id);
            assert_eq!(url.host_str(), Some("crm.example"), "{id:?}");
            assert_eq!(
                decoded_segments(&url),
                ["api", "patients", id, "notes"],
                "{id:?} → {url}"
            );
            assert_eq!(url.query(), Some("x=1"), "{id:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_value_keeps_the_configured_segments_or_is_refused(id in "\\PC*|[./%2eE]{0,4}") {
            let t = UrlTemplate::compile("https://crm.example/api/patients/{{ data.id }}/notes")
                .expect("compiles");
            match t.render(&vars(&id)) {
                Ok(url) => {
                    proptest::prop_assert_eq!(url.host_str(), Some("crm.example"));
                    proptest::prop_assert_eq!(
                        decoded_segments(&url),
                        vec!["api".to_owned(), "patients".to_owned(), id.clone(), "notes".to_owned()]
                    );
                }
                Err(TemplateError::PathSegment { position: 3, .. }) => {
                    proptest::prop_assert!(matches!(id.as_str(), "" | "." | ".."), "{:?}", id);
                }
                Err(e) => proptest::prop_assert!(false, "{:?}: {}", id, e),
            }
        }
    }

    #[test]
    fn a_segment_a_value_makes_empty_or_a_dot_segment_is_refused() {
        let t = UrlTemplate::compile("https://crm.example/api/patients/{{ data.id }}/notes")
            .expect("compiles");
        for (id, shape) in [("", "empty"), (".", "`.`"), ("..", "`..`")] {
            let err = t.render(&vars(id)).expect_err(id);
            assert_eq!(
                err,
                TemplateError::PathSegment { position: 3, shape },
                "{id:?}"
            );
        }
        // Two values together make the segment, and a literal `%2e` beside a value counts too.
        let t = UrlTemplate::compile("https://crm.example/{{ data.id }}{{ data.id }}/x")
            .expect("compiles");
        assert!(matches!(
            t.render(&vars(".")),
            Err(TemplateError::PathSegment { position: 1, .. })
        ));
        let t = UrlTemplate::compile("https://crm.example/%2e{{ data.id }}/x").expect("compiles");
        assert!(matches!(
            t.render(&vars(".")),
            Err(TemplateError::PathSegment { position: 1, .. })
        ));
    }

    #[test]
    fn query_values_are_encoded_as_components() {
        let t = UrlTemplate::compile("https://crm.example/x?id={{ data.id }}&k=v").expect("ok");
        let url = t.render(&vars("1&k=evil#frag")).expect("renders");
        assert_eq!(url.query(), Some("id=1%26k%3Devil%23frag&k=v"));
        assert_eq!(url.fragment(), None);
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            pairs,
            [
                ("id".to_owned(), "1&k=evil#frag".to_owned()),
                ("k".to_owned(), "v".to_owned())
            ]
        );
    }

    #[test]
    fn safe_does_not_turn_encoding_off_in_a_url() {
        let t = UrlTemplate::compile("https://crm.example/a/{{ data.id | safe }}/b").expect("ok");
        let url = t.render(&vars("../../admin")).expect("renders");
        assert_eq!(url.path(), "/a/..%2F..%2Fadmin/b");
    }

    #[test]
    fn the_scheme_and_host_cannot_be_templated() {
        for source in [
            "{{ data.url }}/notes",
            "https://{{ data.host }}/notes",
            "https://crm{{ data.x }}.example/notes",
            "https://crm.example:{{ data.port }}/notes",
            "https://[caller_number]/notes",
            "{{ data.scheme }}://crm.example/notes",
            "https://crm.example{{ data.path }}",
        ] {
            let err = UrlTemplate::compile(source).expect_err(source);
            assert!(
                matches!(err, TemplateError::UrlShape { .. }),
                "{source}: {err:?}"
            );
        }
    }

    #[test]
    fn literal_shapes_that_would_move_the_request_are_refused() {
        for source in [
            "https://crm.example/a/../b",
            "https://crm.example/a/%2E%2e/b",
            "https://crm.example/a\\b",
            "https://crm.example/a#frag",
            "crm.example/a",
            "https:///a",
        ] {
            assert!(UrlTemplate::compile(source).is_err(), "{source}");
        }
        // A `/` inside a tag is not a segment boundary.
        let t = UrlTemplate::compile("https://crm.example/{{ data.id ~ '/' }}/x").expect("ok");
        assert_eq!(t.segment_count(), 2);
        assert_eq!(
            decoded_segments(&t.render(&vars("a")).expect("renders")),
            ["a/", "x"]
        );
        // A block spanning segments is a syntax error naming the segment.
        let err = UrlTemplate::compile("https://crm.example/{% if data.id %}a/b{% endif %}")
            .expect_err("spans");
        assert!(err.to_string().contains("path segment 1"), "{err}");
    }

    #[test]
    fn a_template_without_a_path_renders_the_origin() {
        let t = UrlTemplate::compile("https://crm.example:8443").expect("ok");
        assert_eq!(t.segment_count(), 0);
        assert_eq!(
            t.render(&vars("x")).expect("renders").as_str(),
            "https://crm.example:8443/"
        );
        let t = UrlTemplate::compile("https://[::1]:8443/a/").expect("ok");
        assert_eq!(
            t.render(&vars("x")).expect("renders").as_str(),
            "https://[::1]:8443/a/"
        );
    }
}
