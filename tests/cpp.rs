//! The C++ wrapper (`c-examples/cpp/epoll_loop.hpp`): the example and the
//! wrapper's own test program are built with `g++ -std=c++17 -Wall -Wextra
//! -Wpedantic -Werror` against the shared library and run under ASan+UBSan; the
//! header also compiles alone and as C++20.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::c::{assert_c_tests_passed, cxx, sanitizer_env};
use support::{Scratch, assert_success, lib_dir, out_dir, readme_blocks, root};

const CXX_FLAGS: &[&str] = &["-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];

fn cpp_dir() -> PathBuf {
    root().join("c-examples").join("cpp")
}

/// Compiles `src` with the wrapper's include path into `out`, linked against
/// the shared library, with ASan+UBSan.
fn build_sanitized(src: &Path, out: &Path) {
    let mut cmd = Command::new(cxx());
    cmd.args(CXX_FLAGS)
        .args(["-g", "-O1", "-fno-omit-frame-pointer"])
        .args(["-fsanitize=address,undefined", "-fno-sanitize-recover=all"])
        .arg("-I")
        .arg(root().join("include"))
        .arg("-I")
        .arg(cpp_dir())
        .arg(src)
        .arg("-o")
        .arg(out)
        .arg("-L")
        .arg(lib_dir())
        .arg("-lepoll_loop")
        .arg(format!("-Wl,-rpath,{}", lib_dir().display()))
        .arg("-lpthread");
    let o = cmd.output().expect("run the C++ compiler");
    assert!(
        o.status.success(),
        "compiling {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn run_sanitized(what: &str, exe: &Path) -> Output {
    let mut cmd = Command::new(exe);
    sanitizer_env(&mut cmd);
    let o = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert_success(what, &o);
    o
}

#[test]
fn example_builds_with_werror_and_runs_under_asan() {
    let exe = Scratch::new(&out_dir("cpp"), "example");
    build_sanitized(&cpp_dir().join("example.cpp"), exe.path());
    let o = run_sanitized("c-examples/cpp/example.cpp", exe.path());
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    let expect_prefix = [
        format!("epoll_loop {}", env!("CARGO_PKG_VERSION")),
        "socketpair: tick tick tick (3 ticks, run returned idle)".into(),
        "echo: \"hello, echo\" on port ".into(),
        "error: epoll_loop_register: File exists (errno 17, EEXIST: yes)".into(),
        "callback exception: from a callback".into(),
        "ok".into(),
    ];
    assert_eq!(lines.len(), expect_prefix.len(), "example output:\n{out}");
    for (line, want) in lines.iter().zip(&expect_prefix) {
        assert!(
            line.starts_with(want.as_str()),
            "expected a line starting {want:?}, got {line:?}; output:\n{out}"
        );
    }
    assert!(
        lines[2].ends_with("(11 bytes in, 11 out)"),
        "echo stats: {}",
        lines[2]
    );
}

#[test]
fn wrapper_test_passes_under_asan() {
    let exe = Scratch::new(&out_dir("cpp"), "wrapper_test");
    build_sanitized(
        &root().join("tests").join("cpp").join("wrapper_test.cpp"),
        exe.path(),
    );
    let o = run_sanitized("tests/cpp/wrapper_test.cpp", exe.path());
    assert_c_tests_passed("tests/cpp/wrapper_test.cpp", &o, 30);
}

#[test]
fn header_compiles_alone_as_cxx17_and_cxx20() {
    for std in ["-std=c++17", "-std=c++20"] {
        let o = Command::new(cxx())
            .args([std, "-Wall", "-Wextra", "-Wpedantic", "-Werror"])
            .args(["-Wshadow", "-Wconversion", "-Wsign-conversion"])
            .args(["-fsyntax-only", "-x", "c++"])
            .arg("-I")
            .arg(root().join("include"))
            .arg(cpp_dir().join("epoll_loop.hpp"))
            .output()
            .expect("run the C++ compiler");
        assert_success(&format!("epoll_loop.hpp alone ({std})"), &o);
    }
}

#[test]
fn readme_cpp_example_builds_and_runs() {
    let blocks = readme_blocks("cpp");
    assert_eq!(blocks.len(), 1, "README.md should have one ```cpp block");
    let dir = out_dir("cpp");
    let src = Scratch::new(&dir, "readme.cpp");
    let exe = Scratch::new(&dir, "readme");
    std::fs::write(src.path(), &blocks[0]).unwrap();
    build_sanitized(src.path(), exe.path());
    let o = run_sanitized("the README's C++ example", exe.path());
    assert_eq!(String::from_utf8_lossy(&o.stdout), "3 ticks\n");
}
