//! Helpers shared by the integration tests. Each test binary says `mod support;`
//! and uses what it needs:
//!
//! - here: where the repository and the built library are, scratch files,
//!   notes past the output capture, tools present or skipped, the README's
//!   code blocks, comparing large byte strings;
//! - [`c`]: compiling C programs against the library, running them under the
//!   sanitizers or valgrind, and checking their reports;
//! - [`process`]: child processes (captured output, start-line port, bounded
//!   waits, signals), a process's CPU time and memory;
//! - [`fd`]: pipes, fd counts, `RLIMIT_NOFILE`;
//! - [`net`]: TCP clients on 127.0.0.1 (timeouts, resets, one echo);
//! - [`ffi`]: the C ABI as a test drives it (an owned loop, pointers for other
//!   threads, every loop call at once);
//! - [`echo`]: an echo server started through the C ABI;
//! - [`rng`]: a seeded generator for payloads, the seed printed for replay.
#![allow(dead_code)]

pub mod c;
pub mod echo;
pub mod fd;
pub mod ffi;
pub mod net;
pub mod process;
pub mod rng;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The directory holding the `libepoll_loop.{so,a}` that this very test run was
/// built with: `<profile>/deps`, next to the test binary. (`cargo test` rebuilds
/// the library there but does not always copy it up to `<profile>/`, so the
/// profile directory can hold a stale library.) Also makes sure the
/// `libepoll_loop.so.0` soname link exists there.
pub fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().to_path_buf();
        assert!(
            dir.join("libepoll_loop.so").exists(),
            "no libepoll_loop.so in {}",
            dir.display()
        );
        assert!(
            dir.join("libepoll_loop.a").exists(),
            "no libepoll_loop.a in {}",
            dir.display()
        );
        let link = dir.join("libepoll_loop.so.0");
        if std::fs::read_link(&link).ok() != Some(PathBuf::from("libepoll_loop.so")) {
            let tmp = dir.join(format!("libepoll_loop.so.0.tmp{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink("libepoll_loop.so", &tmp).unwrap();
            std::fs::rename(&tmp, &link).unwrap();
        }
        dir
    })
}

/// A scratch directory for this test binary's build products.
pub fn out_dir(name: &str) -> PathBuf {
    let d = lib_dir().join("c-tests").join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Asserts a finished process exited 0, printing its output otherwise.
pub fn assert_success(what: &str, o: &Output) {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Asserts two byte strings are equal without printing megabytes: on a
/// difference, the lengths and where they first differ.
pub fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes, want {}; first difference at byte {first}",
        got.len(),
        want.len()
    );
}

/// True when `tool --version` runs.
pub fn have_tool(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Passes `have` (is `tool` here?) on. Without the tool: fails under CI, which
/// must run `what` (`.ci/run` installs the tools), and otherwise notes that
/// `what` was skipped.
pub fn tool_or_skip(have: bool, tool: &str, what: &str) -> bool {
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is not installed, but CI must run {what} (.ci/run installs it)"
        );
        note(&format!("skipped {what}: {tool} not found"));
    }
    have
}

/// Writes a line to the real stderr, past the test harness's output capture, so
/// that notes such as a skipped check show up in a normal `cargo test` run.
pub fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "note: {msg}");
}

/// A per-process path for a build product `name` in `dir` (`x.c` becomes `x.<pid>.c`): test binaries of
/// several concurrent `cargo test` runs share the target directory, and one
/// must not overwrite (or run) a file another is writing. Removed on drop
/// unless the thread is panicking (then it is left for a post-mortem).
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(dir: &Path, name: &str) -> Scratch {
        let pid = std::process::id();
        let file = match name.rsplit_once('.') {
            Some((stem, ext)) => format!("{stem}.{pid}.{ext}"),
            None => format!("{name}.{pid}"),
        };
        Scratch(dir.join(file))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// The README's fenced code blocks of language `lang` (```` ```lang ````), in order.
pub fn readme_blocks(lang: &str) -> Vec<String> {
    let md = std::fs::read_to_string(root().join("README.md")).expect("read README.md");
    let fence = format!("```{lang}");
    let mut blocks = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_end()) {
            (None, l) if l == fence => cur = Some(String::new()),
            (Some(_), "```") => blocks.push(cur.take().unwrap()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            _ => {}
        }
    }
    blocks
}
