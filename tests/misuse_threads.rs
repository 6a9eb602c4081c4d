//! Misuse from threads, answered with codes: calls from a thread that does not
//! own a running loop. Through the exported functions, as C calls them.
//!
//! What is caught, precisely (README "API conventions", docs/ARCHITECTURE.md):
//! a call on a loop while another thread is inside a call on it (`_poll`/`_run`
//! or any other) is `-EBUSY`; a refused call leaves the owner mark as it was;
//! and the owner check costs no system call. Freed and stale handles:
//! `tests/handles.rs`.

mod support;

use ::epoll_loop::ffi::*;
use std::ffi::{c_int, c_void};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use support::fd::pipe;
use support::ffi::{SendPtr, count_io, every_loop_call};
use support::ffi::{TimerFn, mark_running, new_loop, start_timer, watch_readable};

const EBUSY: c_int = -libc::EBUSY;

// ---------------------------------------------------------------------------
// Another thread while the loop runs
// ---------------------------------------------------------------------------

/// Runs `lp` on a new thread: a registered pipe (`fd`) keeps `epoll_loop_run`
/// waiting, and a timer calls `cb` with `flag` at once; returns when `flag` is
/// set (`what` ran), with the runner, which returns `_run`'s code.
fn run_on_another_thread(
    lp: *mut epoll_loop,
    fd: c_int,
    cb: TimerFn,
    flag: &AtomicBool,
    what: &str,
) -> thread::JoinHandle<c_int> {
    assert_eq!(watch_readable(lp, fd, count_io), 0);
    // SAFETY: `cb` sets the `AtomicBool` it is given; the test keeps `flag`
    // alive until after the loop is freed.
    let rc = unsafe { start_timer(lp, 0, 0, cb, std::ptr::from_ref(flag).cast_mut().cast()) };
    assert_eq!(rc, 0);
    let owner = SendPtr(lp);
    let runner = thread::spawn(move || {
        // SAFETY: the loop is live until this thread is joined.
        unsafe { epoll_loop_run(owner.get()) }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !flag.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "{what} never ran");
        thread::yield_now();
    }
    runner
}

#[test]
fn calls_from_another_thread_while_the_loop_runs_are_ebusy() {
    let (r, _w) = pipe();
    let (r2, _w2) = pipe();
    let lp = new_loop();
    let running = Box::new(AtomicBool::new(false));
    let runner = run_on_another_thread(lp, r.as_raw_fd(), mark_running, &running, "the loop");
    // The runner is inside epoll_loop_run now (blocked in epoll_wait).
    // SAFETY: live loop; every call but stop/wake/post must be refused.
    let codes = unsafe { every_loop_call(lp, r2.as_raw_fd()) };
    for (name, rc) in &codes {
        match *name {
            "stop" | "wake" | "post" => assert_eq!(*rc, 0, "{name} is thread-safe"),
            _ => assert_eq!(*rc, EBUSY, "{name} from another thread while the loop runs"),
        }
    }
    let rc = runner.join().expect("runner");
    assert_eq!(rc, 1, "run returned because of the stop");

    // Not running any more: the loop may move to this thread.
    assert_eq!(watch_readable(lp, r2.as_raw_fd(), count_io), 0);
    // SAFETY: live loop, no other thread uses it now.
    unsafe {
        assert!(epoll_loop_poll(lp, 0) >= 0, "the posted function runs here");
        let mut st = epoll_loop_stats::default();
        assert_eq!(epoll_loop_get_stats(lp, &mut st), 0);
        assert_eq!(st.registered, 2, "the refused register left nothing");
        assert_eq!(epoll_loop_free(lp), 0);
    }
    drop(running);
}

/// The mark survives a refused nested poll from a callback (it restores the
/// same thread, not "nobody").
unsafe extern "C" fn nested_poll(lp: *mut epoll_loop, _id: u64, ud: *mut c_void) {
    // SAFETY: `lp` is the running loop; `ud` the test's flag.
    unsafe {
        assert_eq!(epoll_loop_poll(lp, 0), EBUSY);
        &*ud.cast::<AtomicBool>()
    }
    .store(true, Ordering::SeqCst);
}

#[test]
fn a_refused_nested_poll_keeps_the_owner_mark() {
    let (r, _w) = pipe();
    let lp = new_loop();
    let nested = Box::new(AtomicBool::new(false));
    let runner = run_on_another_thread(lp, r.as_raw_fd(), nested_poll, &nested, "the callback");
    thread::sleep(Duration::from_millis(20));
    let mut st = epoll_loop_stats::default();
    // SAFETY: live loop, run by the other thread.
    unsafe {
        assert_eq!(epoll_loop_get_stats(lp, &mut st), EBUSY);
        assert_eq!(epoll_loop_stop(lp), 0);
    }
    assert_eq!(runner.join().unwrap(), 1);
    // SAFETY: live loop, no longer running.
    assert_eq!(unsafe { epoll_loop_free(lp) }, 0);
    drop(nested);
}

/// The per-call checks (live, poison, owner thread) make no system call, on
/// every path: a loop not running, a call inside its own callback (the owner
/// compare runs), and a refused call from another thread while it runs.
///
/// Counted, not timed: a timing bound loose enough for a loaded machine would
/// pass with a syscall on the path (in a debug build one `get_stats` costs about
/// as much as a `getppid`). `tests/c/owner_check_syscalls.c` makes 1000 calls
/// per section between two `getppid()` markers, under valgrind's syscall trace
/// (or strace when valgrind is missing); a control section of 1000
/// `epoll_loop_modify` calls must show at least 1000, so a trace the parser
/// misreads cannot pass. Under valgrind a vDSO call (`clock_gettime`) is a
/// system call too, so a clock read on the path fails this as well. Speed is
/// measured in `bench/`.
#[test]
fn the_owner_check_makes_no_syscall() {
    let src = support::root().join("tests/c/owner_check_syscalls.c");
    let exe = support::Scratch::new(&support::out_dir("misuse-threads"), "owner_check_syscalls");
    support::c::compile_c(&[&src], exe.path(), support::c::Link::Shared, false, &[]);
    let Some((tool, calls)) = trace_syscalls(exe.path()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "neither valgrind nor a working strace, but CI must run this check (.ci/run installs valgrind)"
        );
        support::note(
            "skipped the_owner_check_makes_no_syscall: neither valgrind nor strace works here",
        );
        return;
    };

    // Per thread: the syscalls between each pair of getppid markers.
    let mut sections: Vec<(u64, Vec<usize>)> = Vec::new(); // (tid, counts)
    let mut open: std::collections::HashMap<u64, usize> = Default::default();
    for (tid, name) in &calls {
        if name == "getppid" {
            match open.remove(tid) {
                Some(n) => match sections.iter_mut().find(|(t, _)| t == tid) {
                    Some((_, counts)) => counts.push(n),
                    None => sections.push((*tid, vec![n])),
                },
                None => {
                    open.insert(*tid, 0);
                }
            }
        } else if let Some(n) = open.get_mut(tid) {
            *n += 1;
        }
    }
    assert!(
        open.is_empty(),
        "{tool}: an unpaired getppid marker: {calls:?}"
    );
    println!("{tool}: syscalls per section, by thread: {sections:?}");
    assert_eq!(
        sections.len(),
        2,
        "{tool}: expected the main thread and one other: {sections:?}"
    );
    let main = &sections[0].1;
    let other = &sections[1].1;
    assert_eq!(
        main.len(),
        3,
        "{tool}: main thread: idle, callback, control"
    );
    assert_eq!(other.len(), 1, "{tool}: other thread: busy");
    assert!(
        main[2] >= 1000,
        "{tool}: the control section (1000 epoll_loop_modify) shows {} syscalls: the trace is misread",
        main[2]
    );
    assert_eq!(
        (main[0], main[1], other[0]),
        (0, 0, 0),
        "{tool}: syscalls in 1000 epoll_loop_get_stats calls (idle, in a callback, refused from another thread)"
    );
}

/// Runs `exe` (which must print "ok") under valgrind's syscall trace, or under
/// strace when valgrind is not installed, and returns the tool's name and
/// every system call made, in order, as (thread id, name); each call once,
/// however the tool splits a blocking one. None when neither tool works.
fn trace_syscalls(exe: &std::path::Path) -> Option<(&'static str, Vec<(u64, String)>)> {
    use std::process::Command;
    if support::c::have_valgrind() {
        let o = Command::new("valgrind")
            .args(["--tool=none", "--trace-syscalls=yes"])
            .arg(exe)
            .output()
            .expect("run valgrind");
        support::assert_success("owner_check_syscalls under valgrind", &o);
        assert_eq!(String::from_utf8_lossy(&o.stdout), "ok\n");
        // "SYSCALL[pid,tid](nr) sys_name (...) --> ..."; a blocking call has a
        // second line "SYSCALL[pid,tid](nr) ... [async] --> ...", not counted.
        let calls = String::from_utf8_lossy(&o.stderr)
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("SYSCALL[")?;
                let (ids, call) = rest.split_once("](").expect("SYSCALL[pid,tid](nr)");
                let tid = ids.split(',').nth(1).and_then(|t| t.parse().ok());
                let call = call.split_once(") ").map_or("", |(_, c)| c);
                if call.starts_with("...") {
                    return None;
                }
                let name = call.split([' ', '(']).next().unwrap_or("");
                let name = name.strip_prefix("sys_").unwrap_or(name);
                Some((tid.expect("a thread id"), name.to_string()))
            })
            .collect();
        return Some(("valgrind", calls));
    }
    let log = support::Scratch::new(&support::out_dir("misuse-threads"), "strace.log");
    let o = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(log.path())
        .arg(exe)
        .output()
        .ok()?;
    if !o.status.success() || o.stdout != b"ok\n" {
        // Not installed (spawn failed above), or ptrace is not allowed here.
        support::note(&format!(
            "strace did not run the test program ({}): {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
        return None;
    }
    // "tid name(args) = result"; a blocking call is "tid name(args <unfinished
    // ...>" then "tid <... name resumed>...", counted once; signals ("---")
    // and exits ("+++") are no calls.
    let text = std::fs::read_to_string(log.path()).expect("read the strace log");
    let calls = text
        .lines()
        .filter_map(|line| {
            let (tid, call) = line.split_once(' ')?;
            let call = call.trim_start();
            if call.starts_with("<...") || call.starts_with("---") || call.starts_with("+++") {
                return None;
            }
            let (name, _) = call.split_once('(')?;
            Some((tid.parse().expect("a thread id"), name.to_string()))
        })
        .collect();
    Some(("strace", calls))
}
