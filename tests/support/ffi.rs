//! The loop's C ABI as the tests drive it: a loop owned by the test, raw
//! pointers handed to other threads, user data, and every call on a loop at
//! once (for the misuse tests).

use ::epoll_loop::ffi::*;
use std::ffi::{c_int, c_void};
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub type IoFn = unsafe extern "C" fn(*mut epoll_loop, c_int, u32, *mut c_void);
pub type TimerFn = unsafe extern "C" fn(*mut epoll_loop, u64, *mut c_void);

/// `user_data` for a callback whose state is `t`.
pub fn ud<T>(t: &T) -> *mut c_void {
    std::ptr::from_ref(t).cast_mut().cast()
}

/// `epoll_loop_new`, which must work: the raw handle, for tests that free it
/// themselves (or use it after).
pub fn new_loop() -> *mut epoll_loop {
    let mut ptr = std::ptr::null_mut();
    // SAFETY: `ptr` is a valid, writable out-pointer.
    let rc = unsafe { epoll_loop_new(&mut ptr) };
    assert_eq!(rc, 0, "epoll_loop_new");
    assert!(!ptr.is_null());
    ptr
}

/// Polls `lp` (on its own thread, 10 ms at a time, each poll succeeding) until
/// `done()`; fails after `limit`.
pub fn poll_until(
    lp: *mut epoll_loop,
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        // SAFETY: a live loop (the caller's), polled on its own thread.
        let rc = unsafe { epoll_loop_poll(lp, 10) };
        assert!(rc >= 0, "epoll_loop_poll: {rc}");
    }
}

/// `epoll_loop_register(lp, fd, EPOLL_LOOP_IN, cb, NULL)`: its code. Safe for
/// any `lp`: the library checks handles (a stale one is -EINVAL).
pub fn watch_readable(lp: *mut epoll_loop, fd: RawFd, cb: IoFn) -> c_int {
    // SAFETY: a handle the library checks; a static callback with NULL user data.
    unsafe { epoll_loop_register(lp, fd, EPOLL_LOOP_IN, Some(cb), std::ptr::null_mut()) }
}

/// `epoll_loop_timer_start(lp, after_ms, repeat_ms, cb, ud, NULL)`: its code.
///
/// # Safety
/// `ud` is what `cb` expects, valid for as long as the timer may fire.
pub unsafe fn start_timer(
    lp: *mut epoll_loop,
    after_ms: u64,
    repeat_ms: u64,
    cb: TimerFn,
    ud: *mut c_void,
) -> c_int {
    // SAFETY: a handle the library checks; `ud` per the caller.
    unsafe { epoll_loop_timer_start(lp, after_ms, repeat_ms, Some(cb), ud, std::ptr::null_mut()) }
}

/// A loop owned by the test, freed (and the result checked) on drop. `'s` is the
/// lifetime of the state the registered callbacks point at: it must outlive the
/// loop (declare that state before the loop).
pub struct Loop<'s> {
    ptr: *mut epoll_loop,
    _state: PhantomData<&'s ()>,
}

impl<'s> Loop<'s> {
    pub fn new() -> Self {
        Loop::from_raw(new_loop())
    }

    /// Takes ownership of a live loop (one made by `epoll_loop_from_fd`, say).
    pub fn from_raw(ptr: *mut epoll_loop) -> Self {
        assert!(!ptr.is_null());
        Loop {
            ptr,
            _state: PhantomData,
        }
    }

    pub fn ptr(&self) -> *mut epoll_loop {
        self.ptr
    }

    pub fn register<T>(&self, fd: RawFd, events: u32, cb: IoFn, state: &'s T) -> c_int {
        // SAFETY: `self.ptr` is a live loop; `state` outlives the loop (`'s`).
        unsafe { epoll_loop_register(self.ptr, fd, events, Some(cb), ud(state)) }
    }

    pub fn modify(&self, fd: RawFd, events: u32) -> c_int {
        // SAFETY: `self.ptr` is a live loop.
        unsafe { epoll_loop_modify(self.ptr, fd, events) }
    }

    pub fn unregister(&self, fd: RawFd) -> c_int {
        // SAFETY: `self.ptr` is a live loop.
        unsafe { epoll_loop_unregister(self.ptr, fd) }
    }

    /// `epoll_loop_poll`: its code, whatever it is.
    pub fn poll(&self, timeout_ms: c_int) -> c_int {
        // SAFETY: `self.ptr` is a live loop, driven by this thread only.
        unsafe { epoll_loop_poll(self.ptr, timeout_ms) }
    }

    /// `epoll_loop_poll`, which must succeed: the number of callbacks run.
    pub fn poll_ok(&self, timeout_ms: c_int) -> c_int {
        let rc = self.poll(timeout_ms);
        assert!(rc >= 0, "epoll_loop_poll: {rc}");
        rc
    }

    pub fn run(&self) -> c_int {
        // SAFETY: `self.ptr` is a live loop, driven by this thread only.
        unsafe { epoll_loop_run(self.ptr) }
    }

    pub fn stop(&self) -> c_int {
        // SAFETY: `self.ptr` is a live loop.
        unsafe { epoll_loop_stop(self.ptr) }
    }

    pub fn wake(&self) -> c_int {
        // SAFETY: `self.ptr` is a live loop.
        unsafe { epoll_loop_wake(self.ptr) }
    }

    pub fn fileno(&self) -> c_int {
        // SAFETY: `self.ptr` is a live loop.
        unsafe { epoll_loop_fileno(self.ptr) }
    }

    /// Starts a timer; returns its id (asserting success).
    pub fn timer_start<T>(&self, after_ms: u64, repeat_ms: u64, cb: TimerFn, state: &'s T) -> u64 {
        let mut id = 0;
        // SAFETY: `self.ptr` is a live loop; `state` outlives the loop; `id` is writable.
        let rc = unsafe {
            epoll_loop_timer_start(self.ptr, after_ms, repeat_ms, Some(cb), ud(state), &mut id)
        };
        assert_eq!(rc, 0, "epoll_loop_timer_start");
        assert_ne!(id, 0, "timer ids start at 1");
        id
    }

    pub fn timer_stop(&self, id: u64) -> c_int {
        // SAFETY: `self.ptr` is a live loop.
        unsafe { epoll_loop_timer_stop(self.ptr, id) }
    }

    pub fn stats(&self) -> epoll_loop_stats {
        let mut st = epoll_loop_stats::default();
        // SAFETY: `self.ptr` is a live loop; `st` is writable.
        let rc = unsafe { epoll_loop_get_stats(self.ptr, &mut st) };
        assert_eq!(rc, 0, "epoll_loop_get_stats");
        st
    }

    /// [`poll_until`] on this loop.
    pub fn poll_until(&self, what: &str, limit: Duration, done: impl FnMut() -> bool) {
        poll_until(self.ptr, what, limit, done);
    }

    /// Polls for `d` (to show that nothing more happens).
    pub fn poll_for(&self, d: Duration) {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            self.poll_ok(10);
        }
    }
}

impl Drop for Loop<'_> {
    fn drop(&mut self) {
        // SAFETY: `self.ptr` is a live loop that nothing else frees; no callback
        // is running and no thread is calling stop/wake on it any more (tests
        // join their helper threads before the loop is dropped).
        let rc = unsafe { epoll_loop_free(self.ptr) };
        if !std::thread::panicking() {
            assert_eq!(rc, 0, "epoll_loop_free");
        }
    }
}

/// A raw pointer handed to other threads on purpose: the tests call the
/// library from several threads, which is what they check. Reached through
/// [`SendPtr::get`] so that closures capture the whole wrapper.
pub struct SendPtr<T>(pub *mut T);

impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: the pointee is only touched through the library's functions: the ones
// documented as callable from any thread, and the ones whose refusal from
// another thread a test checks.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: as above.
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    pub fn get(self) -> *mut T {
        self.0
    }
}

/// How often [`count_io`], [`count_timer`] and [`count_post`] ran.
pub static CALLS: AtomicU32 = AtomicU32::new(0);

pub unsafe extern "C" fn count_io(_lp: *mut epoll_loop, _fd: c_int, _ev: u32, _ud: *mut c_void) {
    CALLS.fetch_add(1, Ordering::Relaxed);
}

pub unsafe extern "C" fn count_timer(_lp: *mut epoll_loop, _id: u64, _ud: *mut c_void) {
    CALLS.fetch_add(1, Ordering::Relaxed);
}

pub unsafe extern "C" fn count_post(_lp: *mut epoll_loop, _ud: *mut c_void) {
    CALLS.fetch_add(1, Ordering::Relaxed);
}

unsafe extern "C" fn ignore_signal(_lp: *mut epoll_loop, _signo: c_int, _ud: *mut c_void) {}

/// A timer callback that records that the loop is running (its user data is an
/// `AtomicBool`).
pub unsafe extern "C" fn mark_running(_lp: *mut epoll_loop, _id: u64, ud: *mut c_void) {
    // SAFETY: registered with a pointer to an `AtomicBool` that outlives the loop.
    unsafe { &*ud.cast::<AtomicBool>() }.store(true, Ordering::SeqCst);
}

/// Every function that takes the loop, called on `lp` (`fd` for the fd calls);
/// returns their codes in a fixed order (the thread-safe ones last), with a
/// label each.
///
/// # Safety
/// `lp` is a live loop or one freed a handle (checked without touching freed memory).
pub unsafe fn every_loop_call(lp: *mut epoll_loop, fd: c_int) -> Vec<(&'static str, c_int)> {
    let mut id = 0u64;
    let mut st = epoll_loop_stats::default();
    let mut srv: *mut echo_server = std::ptr::null_mut();
    let cfg = super::echo::config();
    let null = std::ptr::null_mut();
    // SAFETY: per the contract of this function; other pointers are valid.
    unsafe {
        vec![
            ("fileno", epoll_loop_fileno(lp)),
            (
                "register",
                epoll_loop_register(lp, fd, EPOLL_LOOP_IN, Some(count_io), null),
            ),
            ("modify", epoll_loop_modify(lp, fd, EPOLL_LOOP_IN)),
            ("unregister", epoll_loop_unregister(lp, fd)),
            ("poll", epoll_loop_poll(lp, 0)),
            ("run", epoll_loop_run(lp)),
            (
                "timer_start",
                epoll_loop_timer_start(lp, 1000, 0, Some(count_timer), null, &mut id),
            ),
            ("timer_stop", epoll_loop_timer_stop(lp, 1)),
            ("get_stats", epoll_loop_get_stats(lp, &mut st)),
            (
                "signal_start",
                epoll_loop_signal_start(lp, libc::SIGUSR1, Some(ignore_signal), null),
            ),
            ("signal_stop", epoll_loop_signal_stop(lp, libc::SIGUSR1)),
            ("echo_server_attach", echo_server_attach(lp, &cfg, &mut srv)),
            ("free", epoll_loop_free(lp)),
            // Thread-safe ones.
            ("stop", epoll_loop_stop(lp)),
            ("wake", epoll_loop_wake(lp)),
            ("post", epoll_loop_post(lp, Some(count_post), null)),
        ]
    }
}
