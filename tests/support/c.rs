//! Compiling C programs against the library and running them: under
//! AddressSanitizer + UBSan (+ LeakSanitizer where it works) or valgrind, and
//! checking what they report.

use super::{Scratch, lib_dir, note, out_dir, root};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The C compiler: `$CC`, or `cc`.
pub fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// The C++ compiler: `$CXX`, or `g++`.
pub fn cxx() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "g++".into())
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

/// The warnings every C program in the tests is held to (as the Makefile's `C_WARN`).
pub const C_WARN: &[&str] = &[
    "-std=c99",
    "-D_GNU_SOURCE",
    "-Wall",
    "-Wextra",
    "-Wpedantic",
    "-Werror",
];

/// Compiles `srcs` (C99, `-Wall -Wextra -Wpedantic -Werror`) into `out`, linked as
/// `link`; `sanitize` adds `-fsanitize=address,undefined`. Panics with the
/// compiler's output on failure.
pub fn compile_c(srcs: &[&Path], out: &Path, link: Link, sanitize: bool, extra: &[&str]) {
    let mut cmd = Command::new(cc());
    cmd.args(C_WARN).args(["-g", "-O1"]);
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

/// Builds the C test program `tests/c/<name>.c` (into a [`Scratch`] file:
/// keep it while the program is in use), linked against the shared library;
/// `sanitize` as for [`compile_c`].
pub fn build_c_test(name: &str, sanitize: bool, extra: &[&str]) -> Scratch {
    let exe_name = if sanitize {
        format!("{name}_asan")
    } else {
        name.to_string()
    };
    let exe = Scratch::new(&out_dir(name), &exe_name);
    let src = root().join("tests").join("c").join(format!("{name}.c"));
    compile_c(&[&src], exe.path(), Link::Shared, sanitize, extra);
    exe
}

/// True when `valgrind` is on PATH.
pub fn have_valgrind() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| super::have_tool("valgrind"))
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

/// True when valgrind is here to run `what`; see [`tool_or_skip`](super::tool_or_skip).
pub fn valgrind_or_skip(what: &str) -> bool {
    super::tool_or_skip(have_valgrind(), "valgrind", what)
}

/// True when LeakSanitizer works here, probed once per test binary with a
/// program that leaks on purpose. It does not run under ptrace (strace, gdb,
/// some sandboxes): the probe then fails with "LeakSanitizer does not work
/// under ptrace" or "LeakSanitizer has encountered a fatal error".
pub fn lsan_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| {
        let dir = out_dir("lsan-probe");
        let src = Scratch::new(&dir, "probe.c");
        let exe = Scratch::new(&dir, "probe");
        std::fs::write(
            src.path(),
            "#include <stdlib.h>\n\
             int main(void) { void *volatile p = malloc(16); p = NULL; (void)p; return 0; }\n",
        )
        .unwrap();
        let o = Command::new(cc())
            .args(["-g", "-O1", "-fsanitize=address"])
            .arg(src.path())
            .arg("-o")
            .arg(exe.path())
            .output()
            .expect("run the C compiler");
        super::assert_success("compiling the LeakSanitizer probe", &o);
        let o = Command::new(exe.path())
            .env("ASAN_OPTIONS", "detect_leaks=1")
            .output()
            .expect("run the LeakSanitizer probe");
        let err = String::from_utf8_lossy(&o.stderr);
        if err.contains("detected memory leaks") {
            return true;
        }
        if !err.contains("LeakSanitizer") && !o.status.success() {
            panic!("the ASan probe failed ({}):\n{err}", o.status);
        }
        note(&format!(
            "LeakSanitizer cannot run here (ptrace?); ASan runs use detect_leaks=0, \
             valgrind still checks leaks. Probe ({}) said: {}",
            o.status,
            err.lines()
                .find(|l| l.contains("LeakSanitizer"))
                .unwrap_or("no leak report")
        ));
        false
    })
}

/// Sets what a program built with `sanitize` (or the C++ equivalent) needs to
/// run: every report is fatal, with its own exit status (86 ASan, 87 UBSan)
/// and a stack; leaks are checked when LeakSanitizer works here (see
/// [`lsan_works`]); the library is found in [`lib_dir`].
pub fn sanitizer_env(cmd: &mut Command) -> &mut Command {
    let leaks = if lsan_works() { 1 } else { 0 };
    cmd.env(
        "ASAN_OPTIONS",
        format!(
            "detect_leaks={leaks}:halt_on_error=1:abort_on_error=0:exitcode=86:\
             strict_string_checks=1"
        ),
    )
    .env(
        "UBSAN_OPTIONS",
        "print_stacktrace=1:halt_on_error=1:exitcode=87",
    )
    .env("LD_LIBRARY_PATH", lib_dir())
}

/// What the sanitizers write to stderr when they report.
pub const SANITIZER_MARKERS: &[&str] = &["AddressSanitizer", "LeakSanitizer", "runtime error:"];

/// Panics if a sanitizer reported anything on `stderr`.
pub fn assert_sanitizer_clean(what: &str, stderr: &str) {
    for marker in SANITIZER_MARKERS {
        assert!(
            !stderr.contains(marker),
            "{what}: sanitizer report ({marker}):\n{stderr}"
        );
    }
}

/// Asserts a run of a C (or C++) test program passed and returns its summary
/// line: exit 0, a "N passed, 0 failed" line with N at least `min_tests`, and
/// nothing on stderr from a sanitizer or a panic in the library.
pub fn assert_c_tests_passed(what: &str, o: &Output, min_tests: u32) -> String {
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    print!("{what}:\n{out}");
    let summary = out.lines().find(|l| l.ends_with(" passed, 0 failed"));
    assert!(
        o.status.success() && summary.is_some(),
        "{what} failed ({}):\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        o.status
    );
    let summary = summary.unwrap().to_string();
    let passed: u32 = summary.split(' ').next().unwrap().parse().unwrap();
    assert!(
        passed >= min_tests,
        "{what}: only {passed} tests ran: {summary}"
    );
    assert_sanitizer_clean(what, &err);
    assert!(!err.contains("panicked"), "{what}: a panic:\n{err}");
    summary
}
