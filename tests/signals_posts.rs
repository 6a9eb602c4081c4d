//! Signals and cross-thread posting (`epoll_loop_signal_*`, `epoll_loop_post`),
//! proved through the exported C ABI: posts from 8 Rust threads to a loop this
//! test polls; and `tests/c/signals_posts_test.c` run under ASan + UBSan (and
//! LeakSanitizer where it works): posts from pthreads, and SIGUSR1 sent by
//! this process to a C program that blocked it in `main` before anything else
//! (the blocking rule cannot hold in this many-threaded test binary). The
//! signal calls' misuse codes are checked there too; the message of
//! `EPOLL_LOOP_ENOTBLOCKED` in `tests/errors.rs`.
//!
//! Every wait is bounded: `epoll_loop_poll` with finite timeouts until a
//! condition or a deadline; the C program gives up after 120 s (alarm).

mod support;

use ::epoll_loop::ffi::*;
use std::cell::{Cell, RefCell};
use std::ffi::c_void;
use std::process::Command;
use std::sync::{Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use support::Scratch;
use support::c::{assert_c_tests_passed, assert_sanitizer_clean, build_c_test, sanitizer_env};
use support::ffi::Loop;
use support::process::{Running, output_within};

// ---------------------------------------------------------------------------
// Posting from threads
// ---------------------------------------------------------------------------

/// What the posted callbacks record (touched on the loop thread only).
struct PostState {
    loop_thread: thread::ThreadId,
    next: RefCell<Vec<u32>>,
    out_of_order: Cell<u32>,
    wrong_thread: Cell<u32>,
    ran: Cell<u32>,
}

/// One posted item: boxed by the posting thread, freed by the callback.
struct Item {
    state: *const PostState,
    thread: usize,
    seq: u32,
}

unsafe extern "C" fn post_cb(_lp: *mut epoll_loop, ud: *mut c_void) {
    // SAFETY: `ud` is a `Box<Item>` leaked by the posting thread, run once.
    let item = unsafe { Box::from_raw(ud.cast::<Item>()) };
    // SAFETY: the state outlives the loop and is only touched on this thread.
    let st = unsafe { &*item.state };
    if thread::current().id() != st.loop_thread {
        st.wrong_thread.set(st.wrong_thread.get() + 1);
    }
    let mut next = st.next.borrow_mut();
    if item.seq != next[item.thread] {
        st.out_of_order.set(st.out_of_order.get() + 1);
    }
    next[item.thread] = item.seq + 1;
    st.ran.set(st.ran.get() + 1);
}

/// Raw pointers handed to the posting threads.
#[derive(Clone, Copy)]
struct PostTarget {
    lp: *mut epoll_loop,
    state: *const PostState,
}
// SAFETY: the threads only pass `lp` to epoll_loop_post (documented thread-safe
// while the loop lives; it is freed after they are joined) and carry `state`
// inside items without dereferencing it.
unsafe impl Send for PostTarget {}

/// 8 threads post 10 000 numbered items each while the test thread polls: all
/// run, in posting order per thread, on the loop thread, and every run counts
/// as a callback in `epoll_loop_poll`'s return value.
#[test]
fn posts_from_8_threads_all_run_in_order_on_the_loop_thread() {
    const THREADS: usize = 8;
    const PER: u32 = 10_000;
    let st = PostState {
        loop_thread: thread::current().id(),
        next: RefCell::new(vec![0; THREADS]),
        out_of_order: Cell::new(0),
        wrong_thread: Cell::new(0),
        ran: Cell::new(0),
    };
    let lp = Loop::new();
    // SAFETY: a live loop; NULL callbacks / loops are answered with -EINVAL.
    unsafe {
        assert_eq!(
            epoll_loop_post(lp.ptr(), None, std::ptr::null_mut()),
            -libc::EINVAL
        );
        assert_eq!(
            epoll_loop_post(std::ptr::null_mut(), Some(post_cb), std::ptr::null_mut()),
            -libc::EINVAL
        );
    }
    let target = PostTarget {
        lp: lp.ptr(),
        state: &st,
    };
    let barrier = Barrier::new(THREADS + 1);
    let t0 = Instant::now();
    let mut callbacks = 0i64;
    let mut iterations = 0u32;
    thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    let target = target;
                    barrier.wait();
                    let mut failed = 0;
                    for seq in 0..PER {
                        let item = Box::into_raw(Box::new(Item {
                            state: target.state,
                            thread: t,
                            seq,
                        }));
                        // SAFETY: the loop is alive until after this scope; `item` is
                        // handed to the callback, which frees it.
                        let rc = unsafe { epoll_loop_post(target.lp, Some(post_cb), item.cast()) };
                        if rc != 0 {
                            failed += 1;
                            // SAFETY: not posted: still ours.
                            drop(unsafe { Box::from_raw(item) });
                        }
                    }
                    failed
                })
            })
            .collect();
        barrier.wait();
        let deadline = Instant::now() + Duration::from_secs(60);
        while st.ran.get() < THREADS as u32 * PER && Instant::now() < deadline {
            callbacks += i64::from(lp.poll_ok(100));
            iterations += 1;
        }
        for h in handles {
            assert_eq!(h.join().unwrap(), 0, "failed posts");
        }
    });
    let took = t0.elapsed();
    println!(
        "{} posts from {THREADS} threads ran in {took:?} over {iterations} loop iterations",
        st.ran.get()
    );
    assert_eq!(st.ran.get(), THREADS as u32 * PER);
    assert_eq!(
        callbacks,
        i64::from(st.ran.get()),
        "each post counts as a callback"
    );
    assert_eq!(st.wrong_thread.get(), 0, "a post ran off the loop thread");
    assert_eq!(
        st.out_of_order.get(),
        0,
        "posts from one thread out of order"
    );
    assert_eq!(*st.next.borrow(), vec![PER; THREADS]);
    // Nothing left: a further poll runs no callback.
    assert_eq!(lp.poll_ok(0), 0);
}

// ---------------------------------------------------------------------------
// The C program: posts and signals under the sanitizers
// ---------------------------------------------------------------------------

/// `tests/c/signals_posts_test.c`, built once with ASan + UBSan against the `.so`.
fn signals_posts_exe() -> &'static std::path::Path {
    static EXE: OnceLock<Scratch> = OnceLock::new();
    EXE.get_or_init(|| build_c_test("signals_posts_test", true, &[]))
        .path()
}

fn signals_posts_cmd(mode: &str) -> Command {
    let mut cmd = Command::new(signals_posts_exe());
    cmd.arg(mode);
    sanitizer_env(&mut cmd);
    cmd
}

/// Posts from 8 pthreads (10 000 each) in C under ASan/UBSan/LSan.
#[test]
fn c_posts_from_pthreads_pass_under_sanitizers() {
    let o = output_within(&mut signals_posts_cmd("posts"), Duration::from_secs(120));
    assert_c_tests_passed("signals_posts_test posts", &o, 1);
}

/// Signals through the loop: the C program blocks SIGUSR1 in `main` before
/// anything else (the blocking rule: in every thread), watches it, prints its
/// pid; this test sends SIGUSR1 three times, each after the previous one was
/// reported (standard signals do not queue), and the program's callback counts
/// them, then checks `_signal_stop` (-ENOENT the second time) and the misuse
/// codes (an unblocked signal: `EPOLL_LOOP_ENOTBLOCKED`; SIGKILL, SIGSTOP, bad
/// numbers, NULL: -EINVAL; twice: -EEXIST).
#[test]
fn signals_from_another_process_reach_the_loop_callback() {
    let mut child = Running::spawn(
        "signals_posts_test signals",
        &mut signals_posts_cmd("signals"),
    );
    let ready = child.wait_for_line(Duration::from_secs(30), 0);
    let pid: u32 = ready
        .strip_prefix("ready pid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {ready}"));
    assert_eq!(pid, child.pid);
    let t0 = Instant::now();
    for i in 1..=3 {
        let sent = Instant::now();
        child.signal(libc::SIGUSR1);
        let line = child.wait_for_line(Duration::from_secs(30), i);
        assert_eq!(line, format!("signal {} count {i}", libc::SIGUSR1));
        println!(
            "SIGUSR1 #{i}: reported by the loop callback after {:?}",
            sent.elapsed()
        );
    }
    let o = child.wait(Duration::from_secs(30));
    println!("3 signals delivered in {:?}", t0.elapsed());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "signals_posts_test signals: {}\n{err}",
        o.status
    );
    assert_sanitizer_clean("signals_posts_test signals", &err);
    for marker in ["check failed", "returned"] {
        assert!(!err.contains(marker), "signals_posts_test signals:\n{err}");
    }
}
