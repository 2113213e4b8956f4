//! The size limits of `src/` (issue 19): no file over [`MAX_FILE_LINES`] lines, no function
//! over [`MAX_FN_LINES`] lines.
//!
//! Nothing is over the limits today, and [`KNOWN_FILES`] and [`KNOWN_FNS`] are empty. They
//! exist for an exception a change must make knowingly: an offender not listed fails the
//! test, and so does a listed one that is no longer over the limit (delete its line). The
//! median file length is printed (run with `--nocapture`), not asserted.
//!
//! Functions are found by a simple heuristic, not a parser (see [`functions`]): a line that
//! starts, at any indentation, with optional `pub`/`pub(…)`, `const`, `async`, `unsafe`, then
//! `fn name`, opens a function; it runs to the first line after it that starts with `}` at
//! the same indentation (rustfmt's layout). A declaration without a body (ending in `;`
//! before any `{`) is no function; a one-line function counts 1.
//!
//! Needs no service: it reads the source files.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Most lines a file under `src/` may have.
const MAX_FILE_LINES: usize = 400;
/// Most lines a function may have, from its `fn` line to its closing brace.
const MAX_FN_LINES: usize = 80;

/// Files allowed over [`MAX_FILE_LINES`], by their path under `src/` (none).
const KNOWN_FILES: &[&str] = &[];

/// Functions allowed over [`MAX_FN_LINES`], as "path under `src/`: name" (none).
const KNOWN_FNS: &[&str] = &[];

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

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The name of the function a line opens, if it opens one (see the module doc).
fn opens_fn(line: &str) -> Option<&str> {
    let mut rest = line.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix("pub(") {
            rest = after.split_once(')')?.1.trim_start();
        } else if let Some(after) = ["pub ", "const ", "async ", "unsafe "]
            .iter()
            .find_map(|m| rest.strip_prefix(m))
        {
            rest = after.trim_start();
        } else {
            break;
        }
    }
    let rest = rest.strip_prefix("fn ")?;
    let len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (len > 0).then(|| &rest[..len])
}

/// Each function of `text` with its length in lines, in order.
fn functions(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = opens_fn(line) else { continue };
        // The signature ends at the first `{` (a body) or `;` (a declaration).
        let Some(open) =
            (i..lines.len()).find(|&j| lines[j].contains('{') || lines[j].ends_with(';'))
        else {
            continue;
        };
        if !lines[open].contains('{') {
            continue;
        }
        if open == i && line.trim_end().ends_with('}') {
            found.push((name.to_owned(), 1));
            continue;
        }
        let at = indent(line);
        let close = (i + 1..lines.len())
            .find(|&j| indent(lines[j]) == at && lines[j].trim_start().starts_with('}'));
        if let Some(close) = close {
            found.push((name.to_owned(), close - i + 1));
        }
    }
    found
}

/// What is over the limits: files as "path (lines)", functions as "path: name (lines)";
/// and every file's length.
struct Offenders {
    files: BTreeSet<String>,
    fns: BTreeSet<String>,
    lengths: Vec<usize>,
    details: Vec<String>,
}

fn scan() -> Offenders {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut o = Offenders {
        files: BTreeSet::new(),
        fns: BTreeSet::new(),
        lengths: Vec::new(),
        details: Vec::new(),
    };
    for file in &files {
        let rel = file.strip_prefix(&src).expect("a file under src/");
        let rel = rel.to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(file).expect("a readable source file");
        let lines = text.lines().count();
        o.lengths.push(lines);
        if lines > MAX_FILE_LINES {
            o.files.insert(rel.clone());
            o.details.push(format!("{rel}: {lines} lines"));
        }
        for (name, len) in functions(&text) {
            if len > MAX_FN_LINES {
                o.fns.insert(format!("{rel}: {name}"));
                o.details.push(format!("{rel}: fn {name}: {len} lines"));
            }
        }
    }
    o
}

/// Fails listing what is over the limit and not known, and what is known and no longer over.
fn check(what: &str, found: &BTreeSet<String>, known: &[&str], details: &[String]) {
    let known: BTreeSet<String> = known.iter().map(|s| (*s).to_owned()).collect();
    let new: Vec<&String> = found.difference(&known).collect();
    let gone: Vec<&String> = known.difference(found).collect();
    assert!(
        new.is_empty(),
        "{what} over the limit (split them):\n  {}\n(all offenders:\n  {})",
        new.iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        details.join("\n  ")
    );
    assert!(
        gone.is_empty(),
        "{what} in the known list that are no longer over the limit (delete their lines): {gone:?}"
    );
}

#[test]
fn no_source_file_is_over_400_lines_beyond_the_known_list() {
    let o = scan();
    let mut lengths = o.lengths.clone();
    lengths.sort_unstable();
    println!(
        "{} source files; median {} lines; longest {} lines",
        lengths.len(),
        lengths[lengths.len() / 2],
        lengths.last().copied().unwrap_or(0)
    );
    check("files", &o.files, KNOWN_FILES, &o.details);
}

#[test]
fn no_function_is_over_80_lines_beyond_the_known_list() {
    let o = scan();
    check("functions", &o.fns, KNOWN_FNS, &o.details);
}

#[test]
fn the_function_scan_finds_bodies_and_skips_declarations() {
    let text = "\
pub(crate) async fn a(
    x: u8,
) -> u8 {
    x
}
impl T {
    fn b() -> u8 { 1 }
    pub(in crate::w) const fn c() {
        let s = S {
            x: 1,
        };
    }
}
trait U {
    fn d(&self) -> u8;
}
// fn e() {}
";
    assert_eq!(
        functions(text),
        vec![
            ("a".to_owned(), 5),
            ("b".to_owned(), 1),
            ("c".to_owned(), 5)
        ]
    );
}
