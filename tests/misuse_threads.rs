//! Misuse beyond NULL (issue 6), answered with codes: a freed loop or stopped
//! server used again, `_free`/`_stop` twice, and calls from a thread that does
//! not own a running loop. Through the exported functions, as C calls them.
//!
//! What is caught, precisely (README "API conventions", docs/ARCHITECTURE.md):
//! handles are generation-checked slots, so a freed handle used again is
//! `-EINVAL` for certain, however many objects were made since, and no freed
//! memory is read. A call on a loop while another thread is inside a call on
//! it (`_poll`/`_run` or any other) is `-EBUSY`.

use ::epoll_loop::ffi::*;
use std::ffi::{c_int, c_void};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

const EINVAL: c_int = -libc::EINVAL;
const EBUSY: c_int = -libc::EBUSY;

fn new_loop() -> *mut epoll_loop {
    let mut lp = std::ptr::null_mut();
    // SAFETY: `lp` is a valid out-pointer.
    assert_eq!(unsafe { epoll_loop_new(&mut lp) }, 0);
    lp
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    assert_eq!(
        unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) },
        0
    );
    // SAFETY: two new descriptors that only we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

static CALLS: AtomicU32 = AtomicU32::new(0);

unsafe extern "C" fn io_cb(_lp: *mut epoll_loop, _fd: c_int, _ev: u32, _ud: *mut c_void) {
    CALLS.fetch_add(1, Ordering::Relaxed);
}

unsafe extern "C" fn timer_cb(_lp: *mut epoll_loop, _id: u64, _ud: *mut c_void) {
    CALLS.fetch_add(1, Ordering::Relaxed);
}

unsafe extern "C" fn post_cb(_lp: *mut epoll_loop, _ud: *mut c_void) {
    CALLS.fetch_add(1, Ordering::Relaxed);
}

unsafe extern "C" fn signal_cb(_lp: *mut epoll_loop, _signo: c_int, _ud: *mut c_void) {}

/// A timer callback that records that the loop is running (its user data is an
/// `AtomicBool`).
unsafe extern "C" fn mark_running(_lp: *mut epoll_loop, _id: u64, ud: *mut c_void) {
    // SAFETY: registered with a pointer to an `AtomicBool` that outlives the loop.
    unsafe { &*ud.cast::<AtomicBool>() }.store(true, Ordering::SeqCst);
}

/// Every function that takes the loop, called on `lp`; returns their codes in
/// a fixed order (the thread-safe ones last), with a label each.
///
/// # Safety
/// `lp` is a live loop or one freed a handle (checked without touching freed memory).
unsafe fn every_call(lp: *mut epoll_loop, fd: c_int) -> Vec<(&'static str, c_int)> {
    let mut id = 0u64;
    let mut st = epoll_loop_stats::default();
    let mut srv: *mut echo_server = std::ptr::null_mut();
    let mut cfg = zeroed_config();
    // SAFETY: valid, writable config.
    unsafe { echo_server_config_init(&mut cfg) };
    cfg.port = 0;
    let null = std::ptr::null_mut();
    // SAFETY: per the contract of this function; other pointers are valid.
    unsafe {
        vec![
            ("fileno", epoll_loop_fileno(lp)),
            (
                "register",
                epoll_loop_register(lp, fd, EPOLL_LOOP_IN, Some(io_cb), null),
            ),
            ("modify", epoll_loop_modify(lp, fd, EPOLL_LOOP_IN)),
            ("unregister", epoll_loop_unregister(lp, fd)),
            ("poll", epoll_loop_poll(lp, 0)),
            ("run", epoll_loop_run(lp)),
            (
                "timer_start",
                epoll_loop_timer_start(lp, 1000, 0, Some(timer_cb), null, &mut id),
            ),
            ("timer_stop", epoll_loop_timer_stop(lp, 1)),
            ("get_stats", epoll_loop_get_stats(lp, &mut st)),
            (
                "signal_start",
                epoll_loop_signal_start(lp, libc::SIGUSR1, Some(signal_cb), null),
            ),
            ("signal_stop", epoll_loop_signal_stop(lp, libc::SIGUSR1)),
            ("echo_server_attach", echo_server_attach(lp, &cfg, &mut srv)),
            ("free", epoll_loop_free(lp)),
            // Thread-safe ones.
            ("stop", epoll_loop_stop(lp)),
            ("wake", epoll_loop_wake(lp)),
            ("post", epoll_loop_post(lp, Some(post_cb), null)),
        ]
    }
}

fn zeroed_config() -> echo_server_config {
    // SAFETY: every field is an integer, a raw pointer or an Option of a function
    // pointer, all valid when zero.
    unsafe { std::mem::zeroed() }
}

// ---------------------------------------------------------------------------
// Freed handles
// ---------------------------------------------------------------------------

#[test]
fn a_freed_loop_answers_einval_to_every_call_and_free_twice_is_einval() {
    let (r, _w) = pipe();
    let lp = new_loop();
    // Give it state to drop: a registration, a timer, a pending post.
    // SAFETY: live loop; static callbacks.
    unsafe {
        assert_eq!(
            epoll_loop_register(
                lp,
                r.as_raw_fd(),
                EPOLL_LOOP_IN,
                Some(io_cb),
                std::ptr::null_mut()
            ),
            0
        );
        assert_eq!(
            epoll_loop_timer_start(
                lp,
                1000,
                0,
                Some(timer_cb),
                std::ptr::null_mut(),
                std::ptr::null_mut()
            ),
            0
        );
        assert_eq!(epoll_loop_post(lp, Some(post_cb), std::ptr::null_mut()), 0);
        assert_eq!(epoll_loop_free(lp), 0);
    }
    let before = CALLS.load(Ordering::Relaxed);
    // SAFETY: freed just now, so a handle (checked without touching freed memory).
    let codes = unsafe { every_call(lp, r.as_raw_fd()) };
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
    let mut cfg = zeroed_config();
    // SAFETY: valid, writable config.
    unsafe { echo_server_config_init(&mut cfg) };
    cfg.port = 0;
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
    let mut cfg = zeroed_config();
    // SAFETY: valid, writable config.
    unsafe { echo_server_config_init(&mut cfg) };
    cfg.port = 0;
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

// ---------------------------------------------------------------------------
// Another thread while the loop runs
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct LoopPtr(*mut epoll_loop);
// SAFETY: the test hands the pointer to another thread on purpose: the library
// must refuse (or, for stop/wake/post, serve) such calls.
unsafe impl Send for LoopPtr {}

impl LoopPtr {
    fn get(self) -> *mut epoll_loop {
        self.0
    }
}

#[test]
fn calls_from_another_thread_while_the_loop_runs_are_ebusy() {
    let (r, _w) = pipe();
    let (r2, _w2) = pipe();
    let lp = new_loop();
    let running = Box::new(AtomicBool::new(false));
    let running_ptr: *const AtomicBool = &*running;
    // SAFETY: live loop; `running` outlives it.
    unsafe {
        assert_eq!(
            epoll_loop_register(
                lp,
                r.as_raw_fd(),
                EPOLL_LOOP_IN,
                Some(io_cb),
                std::ptr::null_mut()
            ),
            0
        );
        assert_eq!(
            epoll_loop_timer_start(
                lp,
                0,
                0,
                Some(mark_running),
                running_ptr.cast_mut().cast(),
                std::ptr::null_mut()
            ),
            0
        );
    }
    let owner = LoopPtr(lp);
    let runner = thread::spawn(move || {
        // SAFETY: the loop is live until this thread is joined.
        unsafe { epoll_loop_run(owner.get()) }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the loop never ran");
        thread::yield_now();
    }
    // The runner is inside epoll_loop_run now (blocked in epoll_wait).
    // SAFETY: live loop; every call but stop/wake/post must be refused.
    let codes = unsafe { every_call(lp, r2.as_raw_fd()) };
    for (name, rc) in &codes {
        match *name {
            "stop" | "wake" | "post" => assert_eq!(*rc, 0, "{name} is thread-safe"),
            _ => assert_eq!(*rc, EBUSY, "{name} from another thread while the loop runs"),
        }
    }
    let rc = runner.join().expect("runner");
    assert_eq!(rc, 1, "run returned because of the stop");

    // Not running any more: the loop may move to this thread.
    // SAFETY: live loop, no other thread uses it now.
    unsafe {
        assert_eq!(
            epoll_loop_register(
                lp,
                r2.as_raw_fd(),
                EPOLL_LOOP_IN,
                Some(io_cb),
                std::ptr::null_mut()
            ),
            0
        );
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
    let nested_ptr: *const AtomicBool = &*nested;
    // SAFETY: live loop; `nested` outlives it.
    unsafe {
        assert_eq!(
            epoll_loop_register(
                lp,
                r.as_raw_fd(),
                EPOLL_LOOP_IN,
                Some(io_cb),
                std::ptr::null_mut()
            ),
            0
        );
        assert_eq!(
            epoll_loop_timer_start(
                lp,
                0,
                0,
                Some(nested_poll),
                nested_ptr.cast_mut().cast(),
                std::ptr::null_mut()
            ),
            0
        );
    }
    let owner = LoopPtr(lp);
    let runner = thread::spawn(move || {
        // SAFETY: the loop is live until this thread is joined.
        unsafe { epoll_loop_run(owner.get()) }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while !nested.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the callback never ran");
        thread::yield_now();
    }
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

/// The owner check must cost nothing measurable: time a cheap call (no
/// syscall) on the owning thread and report it. A generous bound only catches
/// an accidental lock or syscall on the path.
#[test]
fn the_owner_check_is_cheap() {
    let lp = new_loop();
    let mut st = epoll_loop_stats::default();
    let n = 200_000;
    let t0 = Instant::now();
    for _ in 0..n {
        // SAFETY: live loop on this thread.
        assert_eq!(unsafe { epoll_loop_get_stats(lp, &mut st) }, 0);
    }
    let per_call = t0.elapsed() / n;
    println!(
        "epoll_loop_get_stats: {per_call:?} per call (with the live, poison and owner checks)"
    );
    assert!(per_call < Duration::from_micros(5), "{per_call:?} per call");
    // SAFETY: live loop.
    assert_eq!(unsafe { epoll_loop_free(lp) }, 0);
}
