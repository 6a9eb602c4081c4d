//! The C contract as only a C program can check it (`tests/c/contract_test.c`),
//! run under AddressSanitizer + UBSan + LeakSanitizer and under valgrind:
//! stale handles of every type are `-EINVAL` for certain; `epoll_loop_free`
//! delivers `on_close` to every open connection and runs every queued post;
//! two threads racing `echo_server_stop` get one 0 and one `-EINVAL`; stop and
//! free re-entered from the log callback are refused; no log line after stop
//! returned; a forked child cannot disturb the parent's loop or server.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;
use support::c::{assert_c_tests_passed, build_c_test, sanitizer_env};
use support::c::{valgrind_cmd, valgrind_or_skip};
use support::process::output_within;
use support::{Scratch, lib_dir};

/// `contract_test.c` built with ASan + UBSan (`true`) or plain (`false`, for valgrind).
fn exe(sanitize: bool) -> &'static Path {
    static ASAN: OnceLock<Scratch> = OnceLock::new();
    static PLAIN: OnceLock<Scratch> = OnceLock::new();
    let cell = if sanitize { &ASAN } else { &PLAIN };
    cell.get_or_init(|| build_c_test("contract_test", sanitize, &["-pthread"]))
        .path()
}

/// A run is bounded: the program gives up after 120 s itself (alarm).
const LIMIT: Duration = Duration::from_secs(180);

fn run_asan(mode: &str) {
    let mut cmd = Command::new(exe(true));
    cmd.arg(mode);
    sanitizer_env(&mut cmd);
    assert_c_tests_passed(
        &format!("contract_test {mode} (ASan)"),
        &output_within(&mut cmd, LIMIT),
        1,
    );
}

fn run_valgrind(mode: &str) {
    if !valgrind_or_skip(&format!("contract_test {mode} under valgrind")) {
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
    let o = output_within(cmd.arg(mode).env("LD_LIBRARY_PATH", lib_dir()), LIMIT);
    assert_c_tests_passed(&format!("contract_test {mode} (valgrind)"), &o, 1);
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
