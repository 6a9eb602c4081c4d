//! Signals on a loop, for C: `epoll_loop_signal_block`, `_start`, `_stop`.

use super::event_loop::{epoll_loop, with_loop};
use super::guard::{boundary, code};
use crate::event_loop::EventLoop;
use crate::sys::{self, Errno};
use std::ffi::{c_int, c_void};
use std::rc::Rc;

/// Called on the loop thread when a watched signal arrives (`signo`).
pub type epoll_loop_signal_cb =
    Option<unsafe extern "C" fn(r#loop: *mut epoll_loop, signo: c_int, user_data: *mut c_void)>;

/// Blocks `signo` in the calling thread, so that it can be received through
/// `epoll_loop_signal_start` instead of its default action.
///
/// The blocking rule: a signal watched by a loop must be blocked in every thread
/// of the process, or the kernel may deliver it to a thread that has it
/// unblocked (running its handler or default action, e.g. terminating). Call this
/// in the main thread before starting other threads (they inherit the mask).
/// Returns: 0.
/// Errors: `-EINVAL` (not a valid signal number, or `SIGKILL`/`SIGSTOP`, which
/// nothing can block).
/// Ownership: nothing.
/// Thread safety: affects only the calling thread.
#[unsafe(no_mangle)]
pub extern "C" fn epoll_loop_signal_block(signo: c_int) -> c_int {
    boundary(|| code(sys::signal::block(signo).map(|()| 0)))
}

/// Calls `cb(loop, signo, user_data)` on the loop thread each time `signo`
/// arrives (through a signalfd; several signals share one per loop). A watched
/// signal keeps `epoll_loop_run` running, like a registered fd.
///
/// Only one loop in the process should watch a given signal: each arrival is
/// read by one of them.
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed, `cb` NULL, `signo` invalid or
/// `SIGKILL`/`SIGSTOP`), `EPOLL_LOOP_ENOTBLOCKED` (`signo` is not blocked in the
/// calling thread: block it with `epoll_loop_signal_block` first, in every
/// thread), `-EEXIST` (already watched on this loop), `-EMFILE`, `-ENOMEM`,
/// `-ENOTRECOVERABLE`.
/// Ownership: the caller keeps owning `user_data`.
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_signal_start(
    r#loop: *mut epoll_loop,
    signo: c_int,
    cb: epoll_loop_signal_cb,
    user_data: *mut c_void,
) -> c_int {
    with_loop(r#loop, false, |st, _| {
        let f = cb.ok_or(Errno::EINVAL)?;
        let lp = r#loop;
        st.core()
            .signal_start(
                signo,
                Rc::new(move |_: &EventLoop, s: i32| {
                    // SAFETY: the caller's callback with its own loop and user data.
                    unsafe { f(lp, s, user_data) }
                }),
            )
            .map(|()| 0)
    })
}

/// Stops watching `signo` on this loop (the signal stays blocked).
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed), `-ENOENT` (not watched here),
/// `-ENOTRECOVERABLE`.
/// Ownership: the loop drops `user_data` without calling anything.
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_signal_stop(r#loop: *mut epoll_loop, signo: c_int) -> c_int {
    with_loop(r#loop, false, |st, _| {
        st.core().signal_stop(signo).map(|()| 0)
    })
}
