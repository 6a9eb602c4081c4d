//! The C contract as only a C program can check it (`tests/c/contract_test.c`),
//! run under AddressSanitizer + UBSan + LeakSanitizer and under valgrind:
//! stale handles of every type are `-EINVAL` for certain; `epoll_loop_free`
//! delivers `on_close` to every open connection and runs every queued post;
//! two threads racing `echo_server_stop` get one 0 and one `-EINVAL`; stop and
//! free re-entered from the log callback are refused; no log line after stop
//! returned; a forked child cannot disturb the parent's loop or server.

mod common;

use common::{Link, Scratch, compile_c, have_valgrind, lib_dir, note, out_dir, root};
use common::{sanitizer_env, valgrind_cmd};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `contract_test.c` built with ASan + UBSan (`true`) or plain (`false`, for valgrind).
fn exe(sanitize: bool) -> &'static Path {
    static ASAN: OnceLock<Scratch> = OnceLock::new();
    static PLAIN: OnceLock<Scratch> = OnceLock::new();
    let cell = if sanitize { &ASAN } else { &PLAIN };
    cell.get_or_init(|| {
        let name = if sanitize {
            "contract_test_asan"
        } else {
            "contract_test"
        };
        let exe = Scratch::new(&out_dir("contract"), name);
        let src = root().join("tests").join("c").join("contract_test.c");
        compile_c(&[&src], exe.path(), Link::Shared, sanitize, &["-pthread"]);
        exe
    })
    .path()
}

/// Asserts a run passed: exit 0, "N passed, 0 failed", no sanitizer report.
fn check(what: &str, o: &Output) {
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success() && out.contains(" passed, 0 failed"),
        "{what} failed ({}):\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
        o.status
    );
    for marker in [
        "AddressSanitizer",
        "LeakSanitizer",
        "runtime error:",
        "panicked",
    ] {
        assert!(!err.contains(marker), "{what}: report:\n{err}");
    }
}

fn run_asan(mode: &str) {
    let mut cmd = Command::new(exe(true));
    cmd.arg(mode).env("LD_LIBRARY_PATH", lib_dir());
    sanitizer_env(&mut cmd);
    check(
        &format!("contract_test {mode} (ASan)"),
        &cmd.output().unwrap(),
    );
}

fn run_valgrind(mode: &str) {
    if !have_valgrind() {
        note("valgrind not found: contract_test runs under ASan only");
        return;
    }
    let mut cmd = if mode == "fork" {
        // A forked child of a threaded process loses the other threads'
        // memory by construction, and valgrind checks the child's leaks too:
        // check memory errors only (they fail the child, so the parent's check).
        let mut c = Command::new("valgrind");
        c.args(["--quiet", "--error-exitcode=99", "--leak-check=no"])
            .arg(exe(false));
        c
    } else {
        valgrind_cmd(exe(false))
    };
    let o = cmd
        .arg(mode)
        .env("LD_LIBRARY_PATH", lib_dir())
        .output()
        .unwrap();
    check(&format!("contract_test {mode} (valgrind)"), &o);
}

#[test]
fn stale_handles_are_einval_for_certain_under_asan() {
    run_asan("handles");
}

#[test]
fn stale_handles_read_no_freed_memory_under_valgrind() {
    run_valgrind("handles");
}

#[test]
fn free_tells_every_connection_and_runs_every_post_under_lsan() {
    run_asan("teardown");
}

#[test]
fn free_tells_every_connection_under_valgrind() {
    run_valgrind("teardown");
}

#[test]
fn servers_stopped_from_racing_threads_and_log_callbacks_under_asan() {
    run_asan("servers");
}

#[test]
fn servers_stopped_from_racing_threads_and_log_callbacks_under_valgrind() {
    run_valgrind("servers");
}

#[test]
fn a_forked_child_cannot_disturb_the_parent_under_asan() {
    run_asan("fork");
}

#[test]
fn a_forked_child_cannot_disturb_the_parent_under_valgrind() {
    run_valgrind("fork");
}
