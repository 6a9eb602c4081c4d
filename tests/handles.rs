//! Stale handles and double frees, answered with codes: a freed loop or a
//! stopped server used again, `_free`/`_stop` twice, a server attached to a
//! loop freed first. Through the exported functions, as C calls them.
//!
//! What is caught, precisely (README "API conventions", docs/ARCHITECTURE.md):
//! handles are generation-checked slots, so a freed handle used again is
//! `-EINVAL` for certain, however many objects were made since, and no freed
//! memory is read. The same for connection and listener handles, from C:
//! `tests/contract.rs`. Calls from another thread: `tests/misuse_threads.rs`.

mod support;

use ::epoll_loop::ffi::*;
use std::ffi::c_int;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use support::echo::config;
use support::fd::pipe;
use support::ffi::{CALLS, count_io, count_post, count_timer, every_loop_call, new_loop};
use support::ffi::{start_timer, watch_readable};

const EINVAL: c_int = -libc::EINVAL;

// ---------------------------------------------------------------------------
// Freed handles
// ---------------------------------------------------------------------------

#[test]
fn a_freed_loop_answers_einval_to_every_call_and_free_twice_is_einval() {
    let (r, _w) = pipe();
    let lp = new_loop();
    // Give it state to drop: a registration, a timer, a pending post.
    assert_eq!(watch_readable(lp, r.as_raw_fd(), count_io), 0);
    // SAFETY: live loop; static callbacks that ignore their NULL user data.
    unsafe {
        assert_eq!(
            start_timer(lp, 1000, 0, count_timer, std::ptr::null_mut()),
            0
        );
        assert_eq!(
            epoll_loop_post(lp, Some(count_post), std::ptr::null_mut()),
            0
        );
        assert_eq!(epoll_loop_free(lp), 0);
    }
    let before = CALLS.load(Ordering::Relaxed);
    // SAFETY: freed just now, so a handle (checked without touching freed memory).
    let codes = unsafe { every_loop_call(lp, r.as_raw_fd()) };
    for (name, rc) in &codes {
        assert_eq!(*rc, EINVAL, "{name} on a freed loop");
    }
    assert_eq!(CALLS.load(Ordering::Relaxed), before, "no callback ran");
    // SAFETY: as above.
    assert_eq!(unsafe { epoll_loop_free(lp) }, EINVAL, "free twice");
}

#[test]
fn freed_loops_stay_recognised_however_many_come_after() {
    let loops: Vec<_> = (0..1000).map(|_| new_loop()).collect();
    for &lp in &loops {
        // SAFETY: live loop.
        assert_eq!(unsafe { epoll_loop_free(lp) }, 0);
    }
    for &lp in &loops {
        // SAFETY: handles are checked without touching freed memory.
        unsafe {
            assert_eq!(epoll_loop_poll(lp, 0), EINVAL);
            assert_eq!(epoll_loop_stop(lp), EINVAL);
            assert_eq!(epoll_loop_free(lp), EINVAL);
        }
    }
}

#[test]
fn a_stopped_server_answers_einval_and_stop_twice_is_einval() {
    let cfg = config();
    let mut srv = std::ptr::null_mut();
    // SAFETY: valid config and out-pointer.
    assert_eq!(unsafe { echo_server_start(&cfg, &mut srv) }, 0);
    // SAFETY: live server.
    assert!(unsafe { echo_server_port(srv) } > 0);
    // SAFETY: live server, stopped once.
    assert_eq!(unsafe { echo_server_stop(srv) }, 0);
    let mut st = echo_server_stats::default();
    // SAFETY: a stopped server, a handle (checked without touching freed memory).
    unsafe {
        assert_eq!(echo_server_port(srv), EINVAL, "port");
        assert_eq!(echo_server_get_stats(srv, &mut st), EINVAL, "get_stats");
        assert_eq!(echo_server_stop(srv), EINVAL, "stop twice");
    }

    // An attached server: stopped, then stopped again; its loop lives on.
    let lp = new_loop();
    let mut att = std::ptr::null_mut();
    // SAFETY: live loop, valid config and out-pointer.
    unsafe {
        assert_eq!(echo_server_attach(lp, &cfg, &mut att), 0);
        assert_eq!(echo_server_stop(att), 0);
        assert_eq!(echo_server_stop(att), EINVAL, "stop twice (attached)");
        assert_eq!(echo_server_port(att), EINVAL);
        assert!(epoll_loop_poll(lp, 0) >= 0, "the loop is unharmed");
        assert_eq!(epoll_loop_free(lp), 0);
    }
}

#[test]
fn a_server_attached_to_a_freed_loop_is_released_by_stop_without_touching_a_new_loop() {
    let cfg = config();
    let lp = new_loop();
    let mut att = std::ptr::null_mut();
    // SAFETY: live loop; then the loop is freed first, which ends the server.
    unsafe {
        assert_eq!(echo_server_attach(lp, &cfg, &mut att), 0);
        assert_eq!(epoll_loop_free(lp), 0);
        // A new loop now: the stop must not reach it through the old one.
        let other = new_loop();
        assert_ne!(other, lp);
        let mut st = epoll_loop_stats::default();
        assert_eq!(echo_server_stop(att), 0, "releases the handle only");
        assert_eq!(echo_server_stop(att), EINVAL, "stop twice");
        assert_eq!(epoll_loop_get_stats(other, &mut st), 0);
        assert_eq!((st.registered, st.timers_pending), (0, 0));
        assert_eq!(epoll_loop_free(other), 0);
    }
}
