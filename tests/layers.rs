//! The layer table of docs/ARCHITECTURE.md ("Layers") holds: every `crate::`
//! path in every file under `src/` (a `use` line, expanded, or a path in the
//! code; comments and doc comments excluded) names a module the file's row
//! allows. A file no row covers fails too, so the table keeps up with the tree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The rows: module path (a directory ending in `/`, or a file) → the paths
/// it may use (`sys`, `sys::Errno`, ...).
fn table() -> BTreeMap<String, Vec<String>> {
    let doc = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let start = doc.find("## Layers").expect("a Layers section");
    let section = &doc[start..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    let mut rows = BTreeMap::new();
    for line in section[..end].lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // | # | module | what | may use |
        if cells.len() < 6 || !cells[2].starts_with("`src/") {
            continue;
        }
        let module = cells[2].trim_matches('`').to_owned();
        let allowed = cells[4]
            .split(',')
            .map(|a| a.trim().trim_matches('`').to_owned())
            .filter(|a| !a.is_empty())
            .collect();
        rows.insert(module, allowed);
    }
    assert!(rows.len() > 8, "the table was not found: {rows:?}");
    rows
}

/// The row that covers `file` (relative, `src/...`): the file itself, else the
/// longest directory row containing it.
fn row_for<'a>(rows: &'a BTreeMap<String, Vec<String>>, file: &str) -> Option<&'a Vec<String>> {
    if let Some(r) = rows.get(file) {
        return Some(r);
    }
    rows.iter()
        .filter(|(m, _)| m.ends_with('/') && file.starts_with(m.as_str()))
        .max_by_key(|(m, _)| m.len())
        .map(|(_, r)| r)
}

/// The source without comments (line comments, doc comments, block comments)
/// and string literals, so that only code remains.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap()];
        let base = join(prefix, head);
        let mut depth = 0;
        let mut last = 0;
        for (i, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&base, &inner[last..i], out);
                    last = i + 1;
                }
                _ => {}
            }
        }
        expand(&base, &inner[last..], out);
    } else if !tree.is_empty() {
        let name = tree.split(" as ").next().unwrap().trim();
        // `self` in a group names the group's own module.
        let path = if name == "self" {
            prefix.to_owned()
        } else {
            join(prefix, name)
        };
        out.push(path);
    }
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_owned(),
        (_, true) => a.to_owned(),
        _ => format!("{a}::{b}"),
    }
}

/// Every `crate::...` path the code of `src` uses, without the `crate::`.
fn crate_paths(src: &str) -> Vec<String> {
    let code = code_only(src);
    let mut paths = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        // Not part of a longer identifier (`$crate::`, `my_crate::`).
        let before = rest[..i].chars().last();
        let after = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
            rest = after;
            continue;
        }
        let tree: String = if rest[..i].trim_end().ends_with("use") {
            after[..after.find(';').unwrap()].to_owned()
        } else {
            after
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect()
        };
        expand("", tree.trim_end_matches(':'), &mut paths);
        rest = after;
    }
    paths
}

fn allowed(path: &str, rules: &[String]) -> bool {
    rules
        .iter()
        .any(|r| path == r || path.starts_with(&format!("{r}::")))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_crate_path_is_allowed_by_the_layer_table() {
    let rows = table();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    files.sort();
    let mut problems = Vec::new();
    for f in &files {
        let rel = f
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let Some(rules) = row_for(&rows, &rel) else {
            problems.push(format!("{rel}: no row of the layer table covers it"));
            continue;
        };
        let src = std::fs::read_to_string(f).unwrap();
        for p in crate_paths(&src) {
            // A module may always use itself (`crate::trace::trace` in trace.rs).
            let own = rel
                .trim_start_matches("src/")
                .trim_end_matches(".rs")
                .trim_end_matches("/mod")
                .replace('/', "::");
            if p == own || p.starts_with(&format!("{own}::")) {
                continue;
            }
            if !allowed(&p, rules) {
                problems.push(format!("{rel}: crate::{p} (may use: {rules:?})"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "paths the layer table (docs/ARCHITECTURE.md, Layers) does not allow:\n{}",
        problems.join("\n")
    );
}

/// The checker itself: it expands groups, sees inline paths, skips comments,
/// and would have caught the imports the table once failed to stop.
#[test]
fn the_checker_sees_what_it_must() {
    let src = "use crate::sys::{self, Errno, socket::{accept, peer_addr}};\n\
               // crate::poller::in_a_comment\n\
               fn f() { crate::poller::ms_round_up(1); let s = \"crate::x\"; }\n";
    let mut got = crate_paths(src);
    got.sort();
    assert_eq!(
        got,
        [
            "poller::ms_round_up",
            "sys",
            "sys::Errno",
            "sys::socket::accept",
            "sys::socket::peer_addr"
        ]
    );
    let echo_rules: Vec<String> = ["stream", "event_loop", "sys::Errno", "sys::Result"]
        .map(String::from)
        .to_vec();
    // The four breaks of the old table, each refused:
    assert!(!allowed("sys::socket::tcp_listen", &echo_rules));
    assert!(!allowed("sys::monotonic_ns", &echo_rules));
    assert!(!allowed("poller::ms_round_up", &echo_rules));
    let ffi_conn: Vec<String> = ["stream", "event_loop", "sys"].map(String::from).to_vec();
    assert!(!allowed("echo::resolve", &ffi_conn));
    let ffi_loop: Vec<String> = ["event_loop", "sys"].map(String::from).to_vec();
    assert!(!allowed("stream::TcpContext", &ffi_loop));
    assert!(allowed("sys::Errno", &echo_rules));
}
