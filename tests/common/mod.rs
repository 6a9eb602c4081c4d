//! Helpers shared by the integration tests: where the built library is, and how to
//! compile and run C programs against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
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

/// How a C program is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// Against `libepoll_loop.so` (found at run time through the `.so.0` soname link, via rpath).
    Shared,
    /// Against `libepoll_loop.a` plus the libraries Rust's std needs.
    Static,
}

/// Extra libraries a static link needs (`rustc --print native-static-libs`).
pub const STATIC_LIBS: &[&str] = &[
    "-lgcc_s",
    "-lutil",
    "-lrt",
    "-lpthread",
    "-lm",
    "-ldl",
    "-lc",
];

/// Compiles `srcs` (C99, `-Wall -Wextra -Wpedantic -Werror`) into `out`, linked as
/// `link`; `sanitize` adds `-fsanitize=address,undefined`. Panics with the
/// compiler's output on failure.
pub fn compile_c(srcs: &[&Path], out: &Path, link: Link, sanitize: bool, extra: &[&str]) {
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.args([
        "-std=c99",
        "-D_GNU_SOURCE",
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        "-Werror",
        "-g",
        "-O1",
    ]);
    cmd.arg("-I").arg(root().join("include"));
    if sanitize {
        cmd.args([
            "-fsanitize=address,undefined",
            "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all",
        ]);
    }
    cmd.args(srcs).args(extra).arg("-o").arg(out);
    match link {
        Link::Shared => {
            cmd.arg("-L").arg(lib_dir()).arg("-lepoll_loop");
            cmd.arg(format!("-Wl,-rpath,{}", lib_dir().display()));
            cmd.arg("-lpthread");
        }
        Link::Static => {
            cmd.arg(lib_dir().join("libepoll_loop.a")).args(STATIC_LIBS);
        }
    }
    let o = cmd.output().expect("run the C compiler");
    assert!(
        o.status.success(),
        "compiling {:?} failed:\n{}",
        srcs,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// True when `valgrind` is on PATH.
pub fn have_valgrind() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        Command::new("valgrind")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Runs `exe` under valgrind memcheck (errors make it exit 99; definite leaks count as errors).
pub fn valgrind_cmd(exe: &Path) -> Command {
    let mut c = Command::new("valgrind");
    c.args([
        "--quiet",
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--show-leak-kinds=definite",
    ]);
    c.arg(exe);
    c
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

/// True when LeakSanitizer works here. It does not run under ptrace (strace,
/// gdb, some sandboxes): a trivial ASan program then fails with
/// "LeakSanitizer does not work under ptrace" or "LeakSanitizer has
/// encountered a fatal error". Probed once per test binary.
pub fn lsan_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let dir = out_dir("lsan-probe");
        let src = Scratch::new(&dir, "probe.c");
        let exe = Scratch::new(&dir, "probe");
        std::fs::write(src.path(), "int main(void) { return 0; }\n").unwrap();
        let o = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()))
            .arg("-fsanitize=address")
            .arg(src.path())
            .arg("-o")
            .arg(exe.path())
            .output()
            .expect("run the C compiler");
        assert_success("compiling the LeakSanitizer probe", &o);
        let o = Command::new(exe.path())
            .env("ASAN_OPTIONS", "detect_leaks=1")
            .output()
            .expect("run the LeakSanitizer probe");
        let err = String::from_utf8_lossy(&o.stderr);
        if o.status.success() {
            true
        } else if err.contains("LeakSanitizer") {
            note(&format!(
                "LeakSanitizer cannot run here (ptrace?); ASan runs use detect_leaks=0, \
                 valgrind still checks leaks. Probe said: {}",
                err.lines()
                    .find(|l| l.contains("LeakSanitizer"))
                    .unwrap_or("")
            ));
            false
        } else {
            panic!("the ASan probe failed ({}):\n{err}", o.status);
        }
    })
}

/// Sets the sanitizer options for running a program built with `sanitize`:
/// every report is fatal and shows a stack; leaks are checked when
/// LeakSanitizer works here (see [`lsan_works`]).
pub fn sanitizer_env(cmd: &mut Command) -> &mut Command {
    let leaks = if lsan_works() { 1 } else { 0 };
    cmd.env(
        "ASAN_OPTIONS",
        format!("detect_leaks={leaks}:abort_on_error=0:exitcode=86:strict_string_checks=1"),
    )
    .env(
        "UBSAN_OPTIONS",
        "print_stacktrace=1:halt_on_error=1:exitcode=87",
    )
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

// ---------------------------------------------------------------------------
// Child processes

/// Bytes a child wrote to one of its pipes so far.
pub type Captured = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

/// Collects everything a pipe delivers, in a thread, until EOF.
pub fn collect<R: std::io::Read + Send + 'static>(
    mut r: R,
) -> (Captured, std::thread::JoinHandle<()>) {
    let bytes = Captured::default();
    let b = bytes.clone();
    let h = std::thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => b.lock().unwrap().extend_from_slice(&buf[..n]),
            }
        }
    });
    (bytes, h)
}

/// What was captured so far, as text.
pub fn snapshot(c: &Captured) -> String {
    String::from_utf8_lossy(&c.lock().unwrap()).into_owned()
}

/// Waits for `child` at most `limit`; `None` if it is still running then.
pub fn wait_timeout(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Sends `sig` to `pid` (a child of this process, not yet reaped).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) takes plain integers; `pid` is our own child, not yet reaped.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}
