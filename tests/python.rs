//! The Python binding (`c-examples/python/epoll_loop.py`): its unittest suite,
//! `tests/python/test_epoll_loop.py` (doctests of the module included), runs
//! against the library cargo just built, found through `EPOLL_LOOP_LIB`.

mod support;

use std::process::Command;
use support::{assert_success, have_tool, lib_dir, readme_blocks, root, tool_or_skip};

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

fn have_python() -> bool {
    tool_or_skip(
        have_tool(&python()),
        "python3",
        "the Python binding's tests",
    )
}

/// `python3 -X dev ARGS` with the binding importable and the built library named.
fn python_cmd() -> Command {
    let mut cmd = Command::new(python());
    // -X dev: ResourceWarnings (unclosed sockets) and unraisable exceptions
    // (a callback exception ctypes would have swallowed) get printed.
    cmd.args(["-X", "dev"])
        .current_dir(root())
        .env("EPOLL_LOOP_LIB", lib_dir().join("libepoll_loop.so"))
        .env("PYTHONPATH", root().join("c-examples/python"))
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

#[test]
fn python_binding_unittests_pass() {
    if !have_python() {
        return;
    }
    let o = python_cmd()
        .args(["-m", "unittest", "-v"])
        .arg(root().join("tests/python/test_epoll_loop.py"))
        .output()
        .expect("run python3 -m unittest");
    let stderr = String::from_utf8_lossy(&o.stderr);
    let stdout = String::from_utf8_lossy(&o.stdout);
    let report = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    assert!(
        o.status.success(),
        "unittest failed ({}):\n{report}",
        o.status
    );
    // "Ran 36 tests in 0.5s", then "OK" or "OK (skipped=1)".
    let ran: u32 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Ran ")?.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no \"Ran N tests\" line:\n{report}"));
    assert!(ran >= 30, "only {ran} Python tests ran:\n{report}");
    let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
    assert!(
        last.is_some_and(|l| l.starts_with("OK")),
        "unittest did not end with OK:\n{report}"
    );
    for bad in ["ResourceWarning", "Exception ignored"] {
        assert!(
            !stderr.contains(bad),
            "{bad} in the Python output:\n{report}"
        );
    }
    let skipped = stderr.lines().filter(|l| l.ends_with("skipped")).count();
    println!("python: ran {ran} tests, {skipped} skipped");
}

#[test]
fn readme_python_example_runs() {
    if !have_python() {
        return;
    }
    let blocks = readme_blocks("python");
    assert_eq!(blocks.len(), 1, "README.md should have one ```python block");
    let o = python_cmd()
        .arg("-c")
        .arg(&blocks[0])
        .output()
        .expect("run python3");
    assert_success("the README's Python example", &o);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "b'hello'\n");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.is_empty(),
        "the README's Python example wrote to stderr:\n{stderr}"
    );
}
