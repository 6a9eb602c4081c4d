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

/// The cargo profile directory holding `libepoll_loop.{so,a}` (target/debug for
/// `cargo test`), found from this test binary's own path (`<dir>/deps/<test>`).
/// Also makes sure the `libepoll_loop.so.0` soname link exists there.
pub fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        assert!(dir.join("libepoll_loop.so").exists(), "no libepoll_loop.so in {}", dir.display());
        assert!(dir.join("libepoll_loop.a").exists(), "no libepoll_loop.a in {}", dir.display());
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
pub const STATIC_LIBS: &[&str] = &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// Compiles `srcs` (C99, `-Wall -Wextra -Wpedantic -Werror`) into `out`, linked as
/// `link`; `sanitize` adds `-fsanitize=address,undefined`. Panics with the
/// compiler's output on failure.
pub fn compile_c(srcs: &[&Path], out: &Path, link: Link, sanitize: bool, extra: &[&str]) {
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.args(["-std=c99", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-g", "-O1"]);
    cmd.arg("-I").arg(root().join("include"));
    if sanitize {
        cmd.args(["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"]);
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
    assert!(o.status.success(), "compiling {:?} failed:\n{}", srcs, String::from_utf8_lossy(&o.stderr));
}

/// True when `valgrind` is on PATH.
pub fn have_valgrind() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success()))
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
