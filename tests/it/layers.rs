//! The import direction of `src/` (issue 19): a module imports only from its own layer or
//! below. Layers, bottom to top, as the crate map in `src/lib.rs` names them: domain →
//! ports → adapters → core → edge. Each module of the crate has a layer in [`LAYERS`] (the
//! longest matching prefix of its path wins); every `crate::…` path in a file is an import
//! of that module.
//!
//! No module imports upward today, and [`KNOWN`] is empty. It exists for an exception a
//! change must make knowingly, one line per (importing module, imported module): an upward
//! import not in it fails the test, and so does a listed one that no longer occurs.
//!
//! Within a layer imports may run either way, but no cycle may run between top-level modules
//! (`src/<name>.rs` with its folder): a cycle, if any, stays inside one folder, where it is
//! one unit of the design.
//!
//! Needs no service: it reads the source files.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Layers, bottom (0) to top.
const NAMES: [&str; 5] = ["domain", "ports", "adapters", "core", "edge"];

/// Each module's layer, by module path prefix.
const LAYERS: &[(&str, usize)] = &[
    // Domain: plain Rust types and rules.
    ("job", 0),
    ("batch", 0),
    ("progress", 0),
    ("pricing", 0),
    ("principal", 0),
    ("paging", 0),
    ("structured", 0),
    ("redact", 0),
    // Ports: the interfaces the core needs.
    ("store", 1),
    ("store::models", 2),
    ("store::schema", 2),
    ("queue", 1),
    ("events", 1),
    ("events::archive", 0),
    ("events::event", 0),
    ("provider", 1),
    // Adapters: the backends behind the ports.
    ("store::postgres", 2),
    ("store::sqlite", 2),
    ("store::single", 2),
    ("queue::redis", 2),
    ("queue::memory", 2),
    ("events::redis", 2),
    ("events::memory", 2),
    ("provider::openai", 2),
    ("provider::sim", 2),
    ("redis", 2),
    ("ratelimit", 2),
    // Core: what the service does.
    ("jobs", 3),
    ("worker", 3),
    ("streaming", 3),
    ("admin", 3),
    ("reconciler", 3),
    ("audit", 3),
    ("health", 3),
    ("shutdown", 3),
    ("trace", 3),
    ("metrics", 3),
    // Edge: wire, transport, wiring.
    ("api", 4),
    ("auth", 4),
    ("server", 4),
    ("http", 4),
    ("cli", 4),
    ("app", 4),
    ("config", 4),
    ("error", 4),
    ("proto", 4),
    ("telemetry", 4),
    ("main", 4),
    ("lib", 4),
];

/// Upward imports still in the code, as "importing module -> imported module" (both by
/// their layer's prefix in [`LAYERS`]). Remove a line when its import is gone.
const KNOWN: &[&str] = &[];

fn layer(module: &str) -> Option<(&'static str, usize)> {
    LAYERS
        .iter()
        .filter(|(prefix, _)| {
            module == *prefix
                || module
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with("::"))
        })
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(prefix, l)| (*prefix, *l))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `a::b`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("a file under src/");
    rel.with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("::")
}

/// The module paths a file names after `crate::`: `crate::a::b::C` gives `a::b`, and a
/// grouped `use crate::{a, b::c}` gives `a` and `b::c`.
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            for item in split_top(&group[..end]) {
                found.insert(path_modules(item.trim()));
            }
        } else {
            found.insert(path_modules(rest));
        }
    }
    found.retain(|m| !m.is_empty());
    found
}

/// The leading lower-case segments of a path (`a::b::C::d` → `a::b`; a function's name may
/// end it, `a::f()` → `a::f`, which the longest-prefix lookup of [`layer`] ignores).
fn path_modules(path: &str) -> String {
    let mut segments = Vec::new();
    let mut rest = path;
    loop {
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let segment = &rest[..len];
        if segment.is_empty() || !segment.starts_with(|c: char| c.is_ascii_lowercase()) {
            break;
        }
        segments.push(segment);
        match rest[len..].strip_prefix("::") {
            Some(next) if !next.starts_with('{') => rest = next,
            _ => break,
        }
    }
    segments.join("::")
}

fn matching_brace(text: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    text.len()
}

fn split_top(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[test]
fn no_module_imports_from_a_layer_above_its_own_beyond_the_known_list() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut unmapped = BTreeSet::new();
    let mut upward = BTreeSet::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some((from, from_layer)) = layer(&module) else {
            unmapped.insert(module);
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for target in imports(&text) {
            let Some((to, to_layer)) = layer(&target) else {
                unmapped.insert(target);
                continue;
            };
            if to_layer > from_layer {
                upward.insert(format!("{from} -> {to}"));
            }
        }
    }
    assert!(
        unmapped.is_empty(),
        "modules without a layer in LAYERS (add them): {unmapped:?}"
    );
    let known: BTreeSet<String> = KNOWN.iter().map(|s| (*s).to_owned()).collect();
    let new: Vec<String> = upward
        .difference(&known)
        .map(|s| {
            let (from, to) = s.split_once(" -> ").unwrap_or((s, ""));
            let name = |m: &str| layer(m).map_or("?", |(_, l)| NAMES[l]);
            format!("{s} ({} imports {})", name(from), name(to))
        })
        .collect();
    let gone: Vec<&String> = known.difference(&upward).collect();
    assert!(
        new.is_empty(),
        "upward imports (a lower layer naming a higher one):\n  {}",
        new.join("\n  ")
    );
    assert!(
        gone.is_empty(),
        "imports in KNOWN that no longer occur (delete their lines): {gone:?}"
    );
}

/// The top-level modules `from` reaches through `edges`.
fn reachable(from: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![from.to_owned()];
    while let Some(next) = todo.pop() {
        for to in edges.get(&next).into_iter().flatten() {
            if seen.insert(to.clone()) {
                todo.push(to.clone());
            }
        }
    }
    seen
}

#[test]
fn no_import_cycle_runs_between_top_level_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let top = |module: &str| module.split("::").next().unwrap_or_default().to_owned();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let from = top(&module_of(&src, file));
        if from == "lib" || from == "main" {
            continue; // they declare the modules, they do not use them as a layer does
        }
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for target in imports(&text) {
            let to = top(&target);
            if to != from {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    assert!(
        edges.len() > 20,
        "found only {} importing modules",
        edges.len()
    );
    let closing: Vec<String> = edges
        .iter()
        .flat_map(|(from, tos)| tos.iter().map(move |to| (from, to)))
        .filter(|(from, to)| reachable(to, &edges).contains(*from))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(
        closing.is_empty(),
        "imports on a cycle between top-level modules (each a -> b where b reaches a):\n  {}",
        closing.join("\n  ")
    );
}

#[test]
fn the_import_scan_reads_paths_groups_and_nested_groups() {
    let found = imports(
        "use crate::{job::{Job, JobId}, store::Error};\n\
         // crate::commented::Out\n\
         fn f() { crate::events::redis::append(); let _ = crate::Proto; }\n\
         use crate::api::validate::{self, filters};",
    );
    let want: BTreeSet<String> = ["job", "store", "events::redis::append", "api::validate"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(found, want);
    assert_eq!(layer("store::sqlite::rows"), Some(("store::sqlite", 2)));
    assert_eq!(layer("storefront"), None);
}
