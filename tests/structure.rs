//! The layering of DESIGN.md "Structure", checked on the source itself: run with
//! `cargo test --test structure`.
//!
//! Every `.rs` file under `src/` is read, comments and string literals are blanked out, and each
//! `crate::…` path (grouped `use crate::{a, b::c}` included) and each `super::…` path that
//! climbs to the crate root becomes an edge between top-level modules (`src/store/**` is
//! `store`). Code under `#[cfg(test)]` (inline test modules and `#[cfg(test)] mod x;` files) is
//! left out, as `cargo modules` leaves it out by default: a test may set up its fixtures with
//! any module without making the product depend on it. The rules:
//!
//! - no import cycle between top-level modules;
//! - `store` imports nothing from `listener`, `dispatch` or `admin`;
//! - `config` imports no stage's runtime (`audit`, `crypto`, `dispatch`, `listener`, `store`,
//!   `verify`, `admin`, `app`, `tls`);
//! - a `handlers/*` crate depends on no workspace crate but the SDK, and the SDK on none.
//!
//! The cycle rule is checked twice: once with the edges the store rule forbids set aside (so a
//! broken store rule does not hide other cycles), once on the full graph with the store rule.
//! A failure names the file and line of each offending path.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where an edge was seen: file and line.
type Evidence = Vec<String>;
/// from → to → where.
type Graph = BTreeMap<String, BTreeMap<String, Evidence>>;

/// Stage runtimes `config` must not import.
const CONFIG_MUST_NOT_IMPORT: &[&str] = &[
    "audit", "crypto", "dispatch", "listener", "store", "verify", "admin", "app", "tls",
];

/// What `store` must not import.
const STORE_MUST_NOT_IMPORT: &[&str] = &["listener", "dispatch", "admin"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------------------------------------
// Reading Rust source
// ---------------------------------------------------------------------------------------------

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `src` with comments and the contents of string, byte-string, raw-string and char literals
/// replaced by spaces (newlines kept, so line numbers stay true). Lifetimes are kept.
fn blank_comments_and_literals(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        // A literal may follow a `b` prefix (b"…", br"…", b'…'), not any other identifier.
        let prev_ident = i > 0
            && is_ident(chars[i - 1])
            && !(chars[i - 1] == 'b' && (i < 2 || !is_ident(chars[i - 2])));
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && !prev_ident && matches!(next, Some('"') | Some('#')) && {
            // r"…" or r#…#"…"#…#
            let mut j = i + 1;
            while chars.get(j) == Some(&'#') {
                j += 1;
            }
            chars.get(j) == Some(&'"')
        } {
            let mut hashes = 0;
            i += 1;
            out.push(' ');
            while chars[i] == '#' {
                hashes += 1;
                i += 1;
                out.push(' ');
            }
            i += 1; // opening quote
            out.push(' ');
            while i < chars.len() {
                if chars[i] == '"' && (0..hashes).all(|h| chars.get(i + 1 + h) == Some(&'#')) {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() {
                match chars[i] {
                    '\\' => {
                        out.push(' ');
                        if let Some(&e) = chars.get(i + 1) {
                            out.push(blank(e));
                        }
                        i += 2;
                    }
                    '"' => {
                        out.push(' ');
                        i += 1;
                        break;
                    }
                    other => {
                        out.push(blank(other));
                        i += 1;
                    }
                }
            }
        } else if c == '\'' && !prev_ident {
            // A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a, 'static).
            if next == Some('\\') {
                let mut j = i + 3;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                for _ in i..=j.min(chars.len() - 1) {
                    out.push(' ');
                }
                i = j + 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                out.push_str("   ");
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Index just past the bracket that closes the one at `open` (`{`/`}`, `[`/`]`, `(`/`)`).
fn close_of(chars: &[char], open: usize) -> usize {
    let (o, c) = match chars[open] {
        '{' => ('{', '}'),
        '[' => ('[', ']'),
        _ => ('(', ')'),
    };
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        if chars[i] == o {
            depth += 1;
        } else if chars[i] == c {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    chars.len()
}

/// Blank every item under `#[cfg(test)]` in already-cleaned source; returns the cleaned text and
/// the names of `#[cfg(test)] mod name;` declarations (test-only files).
fn blank_test_items(clean: &str) -> (String, Vec<String>) {
    const ATTR: &str = "#[cfg(test)]";
    let mut chars: Vec<char> = clean.chars().collect();
    let mut test_mods = Vec::new();
    let mut from = 0;
    loop {
        let text: String = chars.iter().collect();
        let Some(at) = text[byte_index(&text, from)..].find(ATTR) else {
            break;
        };
        let start = from + text[byte_index(&text, from)..][..at].chars().count();
        let mut i = start + ATTR.chars().count();
        // Further attributes of the same item.
        loop {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if chars.get(i) == Some(&'#') && chars.get(i + 1) == Some(&'[') {
                i = close_of(&chars, i + 1);
            } else {
                break;
            }
        }
        let item_start = i;
        while i < chars.len() && chars[i] != ';' && chars[i] != '{' {
            if matches!(chars[i], '(' | '[') {
                i = close_of(&chars, i);
            } else {
                i += 1;
            }
        }
        let end = if chars.get(i) == Some(&';') {
            let head: String = chars[item_start..i].iter().collect();
            let words: Vec<&str> = head.split_whitespace().collect();
            if let Some(pos) = words.iter().position(|w| *w == "mod") {
                if let Some(name) = words.get(pos + 1) {
                    test_mods.push((*name).to_owned());
                }
            }
            i + 1
        } else if i < chars.len() {
            close_of(&chars, i)
        } else {
            chars.len()
        };
        for c in &mut chars[start..end] {
            if *c != '\n' {
                *c = ' ';
            }
        }
        from = end;
    }
    (chars.into_iter().collect(), test_mods)
}

fn byte_index(s: &str, char_index: usize) -> usize {
    s.char_indices().nth(char_index).map_or(s.len(), |(b, _)| b)
}

/// The first identifier of each entry of a `{…}` group starting at `open`, at its top level.
fn group_heads(chars: &[char], open: usize) -> Vec<String> {
    let end = close_of(chars, open);
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut expect_head = true;
    let mut i = open + 1;
    while i < end.saturating_sub(1) {
        let c = chars[i];
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => expect_head = true,
            _ if expect_head && depth == 0 && is_ident(c) => {
                let mut j = i;
                while j < chars.len() && is_ident(chars[j]) {
                    j += 1;
                }
                heads.push(chars[i..j].iter().collect());
                expect_head = false;
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    heads
}

/// The module targets of a path continuing at `i` (just after `crate::`, or after the `super::`
/// chain that reached the root): one identifier, or each head of a `{…}` group.
fn targets_at(chars: &[char], mut i: usize) -> Vec<String> {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    if chars.get(i) == Some(&'{') {
        // `crate::{self, …}` names the root itself, not a module.
        return group_heads(chars, i)
            .into_iter()
            .filter(|h| h != "self")
            .collect();
    }
    let mut j = i;
    while j < chars.len() && is_ident(chars[j]) {
        j += 1;
    }
    if j > i {
        vec![chars[i..j].iter().collect()]
    } else {
        Vec::new()
    }
}

/// Top-level modules named by `crate::…` and root-reaching `super::…` paths in cleaned source
/// of a file whose module path is `module` (`["store", "sqlite", "jobs"]`), with line numbers.
fn referenced_tops(clean: &str, module: &[String]) -> Vec<(String, usize)> {
    let chars: Vec<char> = clean.chars().collect();
    let line_at = |i: usize| chars[..i].iter().filter(|c| **c == '\n').count() + 1;
    let starts_path = |i: usize| {
        // Not the tail of a longer identifier (`foo_crate::`) or of a path (`a::crate`).
        i == 0
            || !(is_ident(chars[i - 1]) || (i >= 2 && chars[i - 1] == ':' && chars[i - 2] == ':'))
    };
    let word_at = |i: usize, w: &str| {
        let w: Vec<char> = w.chars().collect();
        chars.len() >= i + w.len() && chars[i..i + w.len()] == w[..]
    };
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if word_at(i, "crate::") && (starts_path(i) || (i > 0 && chars[i - 1] == '$')) {
            for t in targets_at(&chars, i + "crate::".len()) {
                found.push((t, line_at(i)));
            }
            i += "crate::".len();
        } else if word_at(i, "super::") && starts_path(i) {
            let mut j = i;
            let mut ups = 0;
            while word_at(j, "super::") {
                ups += 1;
                j += "super::".len();
            }
            if ups == module.len() {
                for t in targets_at(&chars, j) {
                    found.push((t, line_at(i)));
                }
            }
            i = j;
        } else {
            i += 1;
        }
    }
    found
}

/// A file's module path below the crate root: `src/a.rs` and `src/a/mod.rs` → `[a]`,
/// `src/a/b.rs` → `[a, b]`.
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap_or_default();
    if last != "mod.rs" {
        parts.push(last.trim_end_matches(".rs").to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The import graph between the top-level modules of the crate whose sources are in `src`.
fn module_graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let rel_of = |p: &Path| p.strip_prefix(src).unwrap().to_path_buf();
    // Top-level modules: src/x.rs and src/x/ (the crate roots and binaries are not modules).
    let tops: BTreeSet<String> = files
        .iter()
        .filter_map(|p| module_path(&rel_of(p)).first().cloned())
        .filter(|t| !matches!(t.as_str(), "lib" | "main" | "bin"))
        .collect();
    let mut cleaned = BTreeMap::new();
    let mut test_only: BTreeSet<Vec<String>> = BTreeSet::new();
    for path in &files {
        let module = module_path(&rel_of(path));
        let text = std::fs::read_to_string(path).unwrap();
        let (clean, test_mods) = blank_test_items(&blank_comments_and_literals(&text));
        for name in test_mods {
            let mut m = module.clone();
            if matches!(m.as_slice(), [one] if one == "lib" || one == "main") {
                m.clear();
            }
            m.push(name);
            test_only.insert(m);
        }
        cleaned.insert(path.clone(), (module, clean));
    }
    let mut graph = Graph::new();
    for (path, (module, clean)) in &cleaned {
        let Some(top) = module.first() else { continue };
        if !tops.contains(top) || test_only.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        for (target, line) in referenced_tops(clean, module) {
            if &target != top && tops.contains(&target) {
                graph
                    .entry(top.clone())
                    .or_default()
                    .entry(target.clone())
                    .or_default()
                    .push(format!(
                        "{}:{line} (crate::{target})",
                        rel_of(path).display()
                    ));
            }
        }
    }
    graph
}

/// Strongly connected components with more than one module (each one a cycle), via Tarjan.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.graph.get(v) {
            for w in targets.keys() {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = graph
        .iter()
        .flat_map(|(k, v)| std::iter::once(k.as_str()).chain(v.keys().map(String::as_str)))
        .collect();
    for v in nodes {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// The edges `from → to` for `to` in `forbidden`, with where they are.
fn forbidden_edges(graph: &Graph, from: &str, forbidden: &[&str]) -> Vec<String> {
    graph
        .get(from)
        .into_iter()
        .flatten()
        .filter(|(to, _)| forbidden.contains(&to.as_str()))
        .map(|(to, at)| format!("{from} → {to}: {}", at.join(", ")))
        .collect()
}

fn describe_cycles(graph: &Graph, found: &[Vec<String>]) -> String {
    let mut text = String::new();
    for component in found {
        text.push_str(&format!("cycle among {}:\n", component.join(", ")));
        for a in component {
            for (b, at) in graph.get(a).into_iter().flatten() {
                if component.contains(b) {
                    text.push_str(&format!("  {a} → {b}: {}\n", at.join(", ")));
                }
            }
        }
    }
    text
}

// ---------------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------------

/// No cycle once the store's forbidden edges (the next test's subject) are set aside: every
/// other cycle is caught here.
#[test]
fn no_import_cycle_between_top_level_modules_besides_the_store_rule() {
    let mut graph = module_graph(&root().join("src"));
    if let Some(store) = graph.get_mut("store") {
        store.retain(|to, _| !STORE_MUST_NOT_IMPORT.contains(&to.as_str()));
    }
    let found = cycles(&graph);
    assert!(found.is_empty(), "{}", describe_cycles(&graph, &found));
}

/// Storage knows nothing of HTTP, dispatch or the console. With the test above, this makes the
/// whole "no import cycle" rule (checked again here on the full graph).
#[test]
fn store_imports_nothing_from_listener_dispatch_or_admin() {
    let graph = module_graph(&root().join("src"));
    let bad = forbidden_edges(&graph, "store", STORE_MUST_NOT_IMPORT);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let found = cycles(&graph);
    assert!(found.is_empty(), "{}", describe_cycles(&graph, &found));
}

#[test]
fn config_imports_no_stage_runtime() {
    let graph = module_graph(&root().join("src"));
    let bad = forbidden_edges(&graph, "config", CONFIG_MUST_NOT_IMPORT);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The workspace's package names, and the folder of each.
fn workspace_packages() -> BTreeMap<String, PathBuf> {
    let mut packages = BTreeMap::new();
    let mut manifests = vec![root().join("Cargo.toml")];
    for entry in std::fs::read_dir(root().join("handlers")).unwrap() {
        let manifest = entry.unwrap().path().join("Cargo.toml");
        if manifest.is_file() {
            manifests.push(manifest);
        }
    }
    for manifest in manifests {
        let table: toml::Table = std::fs::read_to_string(&manifest).unwrap().parse().unwrap();
        if let Some(name) = table
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
        {
            packages.insert(name.to_owned(), manifest.parent().unwrap().to_path_buf());
        }
    }
    packages
}

/// Every dependency of a manifest (normal, dev, build, and per-target), as the package it
/// names and its `path`, if any.
fn dependencies(manifest: &toml::Table) -> Vec<(String, Option<String>)> {
    let mut tables: Vec<&toml::Table> = Vec::new();
    let kinds = ["dependencies", "dev-dependencies", "build-dependencies"];
    for kind in kinds {
        if let Some(t) = manifest.get(kind).and_then(|t| t.as_table()) {
            tables.push(t);
        }
    }
    if let Some(targets) = manifest.get("target").and_then(|t| t.as_table()) {
        for target in targets.values().filter_map(|t| t.as_table()) {
            for kind in kinds {
                if let Some(t) = target.get(kind).and_then(|t| t.as_table()) {
                    tables.push(t);
                }
            }
        }
    }
    let workspace: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let shared = workspace
        .get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(|d| d.as_table())
        .cloned()
        .unwrap_or_default();
    let mut out = Vec::new();
    for table in tables {
        for (key, spec) in table {
            let spec = match spec.get("workspace").and_then(|w| w.as_bool()) {
                Some(true) => shared.get(key).cloned().unwrap_or_else(|| spec.clone()),
                _ => spec.clone(),
            };
            let package = spec
                .get("package")
                .and_then(|p| p.as_str())
                .unwrap_or(key)
                .to_owned();
            let path = spec.get("path").and_then(|p| p.as_str()).map(str::to_owned);
            out.push((package, path));
        }
    }
    out
}

#[test]
fn handler_crates_depend_on_no_workspace_crate_but_the_sdk() {
    let packages = workspace_packages();
    let sdk_dir = root().join("handlers").join("sdk");
    let mut bad = Vec::new();
    let mut checked = 0;
    for (name, dir) in &packages {
        if !dir.starts_with(root().join("handlers")) {
            continue;
        }
        checked += 1;
        let manifest: toml::Table = std::fs::read_to_string(dir.join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
        let is_sdk = dir == &sdk_dir;
        for (dep, path) in dependencies(&manifest) {
            let target = path
                .as_deref()
                .map(|p| dir.join(p))
                .and_then(|p| p.canonicalize().ok());
            let in_workspace = packages.contains_key(&dep)
                || target
                    .as_ref()
                    .is_some_and(|t| t.starts_with(root().canonicalize().unwrap()));
            let is_the_sdk = target.as_ref().map_or(dep == "wardhook-sdk", |t| {
                sdk_dir.canonicalize().is_ok_and(|s| *t == s)
            });
            if in_workspace && (is_sdk || !is_the_sdk) {
                bad.push(format!("{name} depends on {dep}"));
            }
        }
    }
    assert!(checked >= 2, "no handler crates found under handlers/");
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// The reader itself, on small inputs
// ---------------------------------------------------------------------------------------------

fn tops_of(src: &str, module: &[&str]) -> BTreeSet<String> {
    let module: Vec<String> = module.iter().map(|s| (*s).to_owned()).collect();
    let (clean, _) = blank_test_items(&blank_comments_and_literals(src));
    referenced_tops(&clean, &module)
        .into_iter()
        .map(|(t, _)| t)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_reader_sees_plain_grouped_nested_and_inline_paths() {
    let src = r#"
use crate::audit::Mirror;
use crate::{config::Config, store::{Store, StoreError}, self};
use crate::{
    crypto,
    verify::{self, Verdict},
};
fn f() { let _ = crate::metrics::render(&[]); g::<crate::tls::CertSlot>(); }
"#;
    assert_eq!(
        tops_of(src, &["listener"]),
        set(&["audit", "config", "store", "crypto", "verify", "metrics", "tls"])
    );
}

#[test]
fn the_reader_ignores_comments_strings_and_test_code() {
    let src = r####"
//! Uses [`crate::admin`] in a doc link only.
/* crate::dispatch in a block comment /* nested crate::app */ */
const A: &str = "crate::listener::X";
const B: &str = r#"crate::store "quoted" "#;
const C: char = '"'; const D: char = '\'';
fn life<'a>(x: &'a str) -> &'a str { x }
#[cfg(test)]
mod tests {
    use crate::verify::Verdict;
    fn f() { let s = "}"; }
}
#[cfg(test)]
#[allow(unused)]
use crate::crypto::Keyring;
#[cfg(test)]
mod more_tests;
use crate::config::Config;
"####;
    assert_eq!(tops_of(src, &["x"]), set(&["config"]));
    let (_, test_mods) = blank_test_items(&blank_comments_and_literals(src));
    assert_eq!(test_mods, vec!["more_tests".to_owned()]);
}

#[test]
fn the_reader_follows_super_to_the_crate_root_only() {
    let src = "use super::config::Config;\nuse super::super::{store, audit::Action};\n";
    // In src/cli.rs, `super::` is the crate root.
    assert_eq!(tops_of(src, &["cli"]), set(&["config"]));
    // In src/cli/doctor.rs, `super::` is cli and `super::super::` the root.
    assert_eq!(tops_of(src, &["cli", "doctor"]), set(&["store", "audit"]));
    // Not paths: `$crate::` in a macro counts, `other_crate::` and `a::crate::` do not.
    assert_eq!(
        tops_of(
            "m!($crate::fsutil::x); other_crate::y; a::crate::z;",
            &["q"]
        ),
        set(&["fsutil"])
    );
}

#[test]
fn cycles_are_found_however_long() {
    let mut graph = Graph::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("e", "d")] {
        graph
            .entry(a.to_owned())
            .or_default()
            .insert(b.to_owned(), vec![]);
    }
    assert_eq!(
        cycles(&graph),
        vec![vec!["a".to_owned(), "b".to_owned(), "c".to_owned()]]
    );
    graph.get_mut("c").unwrap().remove("a");
    assert!(cycles(&graph).is_empty());
}
