//! Misuse of the loop's C API answered with codes, never a crash (README "API conventions",
//! docs/ARCHITECTURE.md "The C boundary"), through the exported functions exactly as C would call them.
//!
//! fd numbers that must be closed and stay closed are "private" numbers near the
//! top of the fd table (see [`private_fd`]): tests run in parallel threads and the
//! kernel hands out the lowest free number, so no other test is given them.

mod support;

use ::epoll_loop::ffi::*;
use std::cell::Cell;
use std::ffi::{CStr, c_int, c_void};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use support::fd::pipe;
use support::ffi::{Loop, ud};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

#[derive(Default)]
struct Hits {
    count: Cell<u32>,
}

unsafe extern "C" fn count_io(_lp: *mut epoll_loop, _fd: c_int, _ev: u32, p: *mut c_void) {
    // SAFETY: every registration of this callback passes a `&Hits` that outlives it.
    let h = unsafe { &*p.cast::<Hits>() };
    h.count.set(h.count.get() + 1);
}

unsafe extern "C" fn count_timer(_lp: *mut epoll_loop, _id: u64, p: *mut c_void) {
    // SAFETY: every timer with this callback passes a `&Hits` that outlives it.
    let h = unsafe { &*p.cast::<Hits>() };
    h.count.set(h.count.get() + 1);
}

fn write1(fd: &OwnedFd) {
    // SAFETY: writes one byte from a static buffer.
    let n = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    assert_eq!(n, 1);
}

fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads descriptor flags; any number is acceptable.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

fn nofile_limit() -> RawFd {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    rl.rlim_cur.min(i32::MAX as u64) as RawFd
}

/// A descriptor number reserved for one test (`slot` 0..31), see the module docs.
fn private_fd(slot: i32) -> RawFd {
    let top = nofile_limit().min(4096);
    assert!(top >= 512, "RLIMIT_NOFILE too small for these tests");
    top - 1 - slot
}

fn msg(code: c_int) -> String {
    let p = epoll_loop_strerror(code);
    assert!(!p.is_null());
    // SAFETY: epoll_loop_strerror returns a static NUL-terminated string.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------
// NULL
// ---------------------------------------------------------------------------

#[test]
fn null_loop_is_einval_for_every_function_and_free_null_is_a_no_op() {
    let null = std::ptr::null_mut::<epoll_loop>();
    let hits = Hits::default();
    let (r, _w) = pipe();
    let einval = -libc::EINVAL;
    let mut id = 77u64;
    let mut st = epoll_loop_stats {
        iterations: 5,
        ..Default::default()
    };
    // SAFETY: every call gets a NULL loop, which the API must reject without
    // touching anything; the other pointers are valid.
    unsafe {
        assert_eq!(epoll_loop_free(null), 0, "free(NULL) is a no-op");
        assert_eq!(epoll_loop_fileno(null), einval, "fileno");
        assert_eq!(
            epoll_loop_register(
                null,
                r.as_raw_fd(),
                EPOLL_LOOP_IN,
                Some(count_io),
                ud(&hits)
            ),
            einval,
            "register"
        );
        assert_eq!(
            epoll_loop_modify(null, r.as_raw_fd(), EPOLL_LOOP_IN),
            einval,
            "modify"
        );
        assert_eq!(
            epoll_loop_unregister(null, r.as_raw_fd()),
            einval,
            "unregister"
        );
        assert_eq!(epoll_loop_poll(null, 0), einval, "poll");
        assert_eq!(epoll_loop_run(null), einval, "run");
        assert_eq!(epoll_loop_stop(null), einval, "stop");
        assert_eq!(epoll_loop_wake(null), einval, "wake");
        assert_eq!(
            epoll_loop_timer_start(null, 0, 0, Some(count_timer), ud(&hits), &mut id),
            einval,
            "timer_start"
        );
        assert_eq!(epoll_loop_timer_stop(null, 1), einval, "timer_stop");
        assert_eq!(epoll_loop_get_stats(null, &mut st), einval, "get_stats");
    }
    assert_eq!(id, 77, "*out_id untouched on failure");
    assert_eq!(st.iterations, 5, "*out untouched on failure");
    assert_eq!(hits.count.get(), 0);
}

#[test]
fn null_out_pointers_are_einval() {
    // SAFETY: NULL out-pointer, which the API must reject.
    let rc = unsafe { epoll_loop_new(std::ptr::null_mut()) };
    assert_eq!(rc, -libc::EINVAL);

    // from_fd with NULL `out`: refused, and the epoll fd stays the caller's.
    // SAFETY: plain syscall with a valid flag.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epfd >= 0);
    // SAFETY: epoll_create1 returned a new descriptor that only we own.
    let epfd = unsafe { OwnedFd::from_raw_fd(epfd) };
    // SAFETY: `epfd` is open; the NULL out-pointer must be rejected first.
    let rc = unsafe { epoll_loop_from_fd(epfd.as_raw_fd(), std::ptr::null_mut()) };
    assert_eq!(rc, -libc::EINVAL);
    assert!(
        fd_is_open(epfd.as_raw_fd()),
        "the epoll fd is still open and ours"
    );

    let hits = Hits::default();
    let lp = Loop::new();
    // SAFETY: live loop, NULL `out`.
    let rc = unsafe { epoll_loop_get_stats(lp.ptr(), std::ptr::null_mut()) };
    assert_eq!(rc, -libc::EINVAL, "get_stats(loop, NULL)");

    // timer_start's `out_id` may be NULL: documented as optional.
    // SAFETY: live loop; `hits` outlives it; NULL out_id is allowed.
    let rc = unsafe {
        epoll_loop_timer_start(
            lp.ptr(),
            60_000,
            0,
            Some(count_timer),
            ud(&hits),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "timer_start with out_id NULL");
    assert_eq!(lp.stats().timers_pending, 1);
}

#[test]
fn null_callbacks_are_einval() {
    let hits = Hits::default();
    let (r, _w) = pipe();
    let lp = Loop::new();
    // SAFETY: live loop; a NULL callback must be rejected.
    let rc =
        unsafe { epoll_loop_register(lp.ptr(), r.as_raw_fd(), EPOLL_LOOP_IN, None, ud(&hits)) };
    assert_eq!(rc, -libc::EINVAL, "register with cb NULL");
    let mut id = 77u64;
    // SAFETY: live loop; a NULL callback must be rejected; `id` is writable.
    let rc = unsafe { epoll_loop_timer_start(lp.ptr(), 0, 0, None, ud(&hits), &mut id) };
    assert_eq!(rc, -libc::EINVAL, "timer_start with cb NULL");
    assert_eq!(id, 77, "*out_id untouched on failure");
    let st = lp.stats();
    assert_eq!((st.registered, st.timers_pending), (0, 0));
    // Nothing was half-registered: the fd can still be registered properly.
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &hits),
        0
    );
    // A NULL user_data is legal (the callback decides what it means).
    // SAFETY: live loop; `count_timer` is never reached (the timer is stopped).
    let rc = unsafe {
        epoll_loop_timer_start(
            lp.ptr(),
            60_000,
            0,
            Some(count_timer),
            std::ptr::null_mut(),
            &mut id,
        )
    };
    assert_eq!(rc, 0);
    assert_eq!(lp.timer_stop(id), 0);
}

// ---------------------------------------------------------------------------
// bad fds and flags
// ---------------------------------------------------------------------------

#[test]
fn negative_fd_is_ebadf() {
    let hits = Hits::default();
    let lp = Loop::new();
    for fd in [-1, -2, c_int::MIN] {
        assert_eq!(
            lp.register(fd, EPOLL_LOOP_IN, count_io, &hits),
            -libc::EBADF,
            "register({fd})"
        );
        assert_eq!(lp.modify(fd, EPOLL_LOOP_IN), -libc::EBADF, "modify({fd})");
        assert_eq!(lp.unregister(fd), -libc::EBADF, "unregister({fd})");
    }
    assert_eq!(lp.stats().registered, 0);
}

#[test]
fn closed_fd_is_ebadf() {
    let hits = Hits::default();
    let lp = Loop::new();
    // A number that is not open (private to this test), and one that cannot be.
    let closed = private_fd(0);
    assert!(!fd_is_open(closed));
    assert_eq!(
        lp.register(closed, EPOLL_LOOP_IN, count_io, &hits),
        -libc::EBADF
    );
    let beyond = nofile_limit();
    assert_eq!(
        lp.register(beyond, EPOLL_LOOP_IN, count_io, &hits),
        -libc::EBADF
    );
    assert_eq!(lp.stats().registered, 0);

    // modify of an fd closed since it was registered.
    let (r, _w) = pipe();
    let num = private_fd(1);
    assert!(!fd_is_open(num));
    // SAFETY: `num` is free and private to this test, so dup3 closes nothing.
    let got = unsafe { libc::dup3(r.as_raw_fd(), num, libc::O_CLOEXEC) };
    assert_eq!(got, num);
    drop(r);
    // SAFETY: dup3 created `num`; only we own it.
    let moved = unsafe { OwnedFd::from_raw_fd(num) };
    assert_eq!(lp.register(num, EPOLL_LOOP_IN, count_io, &hits), 0);
    drop(moved);
    assert_eq!(
        lp.modify(num, EPOLL_LOOP_OUT),
        -libc::EBADF,
        "modify after close"
    );
    assert_eq!(
        lp.unregister(num),
        0,
        "unregister after close still frees the slot"
    );
    assert_eq!(lp.stats().registered, 0);
}

#[test]
fn unknown_event_bits_are_einval() {
    let hits = Hits::default();
    let (r, w) = pipe();
    let lp = Loop::new();
    let fd = r.as_raw_fd();
    let unknown = [
        1u32 << 20,
        libc::EPOLLWAKEUP as u32, // a real epoll bit, but not part of this API
        0x40,                     // EPOLLRDNORM
        u32::MAX,
    ];
    for bits in unknown {
        assert_eq!(
            lp.register(fd, EPOLL_LOOP_IN | bits, count_io, &hits),
            -libc::EINVAL,
            "register with {bits:#x}"
        );
    }
    assert_eq!(lp.stats().registered, 0);

    assert_eq!(lp.register(fd, EPOLL_LOOP_IN, count_io, &hits), 0);
    for bits in unknown {
        assert_eq!(
            lp.modify(fd, EPOLL_LOOP_IN | bits),
            -libc::EINVAL,
            "modify with {bits:#x}"
        );
    }
    // The registration is unchanged and works.
    write1(&w);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(hits.count.get(), 1);
}

#[test]
fn regular_file_and_directory_are_eperm() {
    let hits = Hits::default();
    let root = env!("CARGO_MANIFEST_DIR");
    let file = File::open(format!("{root}/Cargo.toml")).expect("open Cargo.toml");
    let dir = File::open(root).expect("open the crate directory");
    let lp = Loop::new();
    assert_eq!(
        lp.register(file.as_raw_fd(), EPOLL_LOOP_IN, count_io, &hits),
        -libc::EPERM,
        "regular file"
    );
    assert_eq!(
        lp.register(dir.as_raw_fd(), EPOLL_LOOP_IN, count_io, &hits),
        -libc::EPERM,
        "directory"
    );
    assert_eq!(lp.stats().registered, 0);
    assert_eq!(lp.unregister(file.as_raw_fd()), -libc::ENOENT);
}

#[test]
fn register_twice_is_eexist() {
    let first = Hits::default();
    let second = Hits::default();
    let (r, w) = pipe();
    let lp = Loop::new();
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &first),
        0
    );
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &second),
        -libc::EEXIST
    );
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_OUT, count_io, &second),
        -libc::EEXIST,
        "other events too"
    );
    assert_eq!(lp.stats().registered, 1);
    // The first registration is intact.
    write1(&w);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!((first.count.get(), second.count.get()), (1, 0));

    // Still registered as far as the loop knows, even after the fd was closed and
    // its number reused by a file the kernel set has never seen: the caller must
    // unregister first (which succeeds and frees the slot), then register again.
    let num = private_fd(3);
    assert!(!fd_is_open(num));
    // SAFETY: `num` is free and private to this test, so dup3 closes nothing.
    let got = unsafe { libc::dup3(r.as_raw_fd(), num, libc::O_CLOEXEC) };
    assert_eq!(got, num);
    // SAFETY: dup3 created `num`; only we own it.
    let old = unsafe { OwnedFd::from_raw_fd(num) };
    assert_eq!(lp.register(num, EPOLL_LOOP_IN, count_io, &first), 0);
    drop(old);
    let (r2, w2) = pipe();
    // SAFETY: `num` is free again and private to this test.
    let got = unsafe { libc::dup3(r2.as_raw_fd(), num, libc::O_CLOEXEC) };
    assert_eq!(got, num);
    // SAFETY: dup3 created `num`; only we own it.
    let reused = unsafe { OwnedFd::from_raw_fd(num) };
    assert_eq!(
        lp.register(num, EPOLL_LOOP_IN, count_io, &second),
        -libc::EEXIST
    );
    assert_eq!(lp.stats().registered, 2);
    assert_eq!(lp.unregister(num), 0);
    assert_eq!(lp.register(num, EPOLL_LOOP_IN, count_io, &second), 0);
    assert_eq!(lp.stats().registered, 2);
    write1(&w2);
    drop(r2);
    assert_eq!(lp.poll(1000), 2, "the first pipe (unread) and the new one");
    assert_eq!((first.count.get(), second.count.get()), (2, 1));
    assert_eq!(lp.unregister(num), 0);
    drop(reused);
}

#[test]
fn modify_or_unregister_unknown_fd_is_enoent() {
    let hits = Hits::default();
    let (r, _w) = pipe();
    let lp = Loop::new();
    let fd = r.as_raw_fd();
    assert_eq!(
        lp.modify(fd, EPOLL_LOOP_IN),
        -libc::ENOENT,
        "never registered"
    );
    assert_eq!(lp.unregister(fd), -libc::ENOENT, "never registered");
    assert_eq!(
        lp.modify(private_fd(2), EPOLL_LOOP_IN),
        -libc::ENOENT,
        "not open either"
    );
    assert_eq!(lp.unregister(private_fd(2)), -libc::ENOENT);
    assert_eq!(lp.register(fd, EPOLL_LOOP_IN, count_io, &hits), 0);
    assert_eq!(lp.unregister(fd), 0);
    assert_eq!(lp.unregister(fd), -libc::ENOENT, "already unregistered");
    assert_eq!(
        lp.modify(fd, EPOLL_LOOP_IN),
        -libc::ENOENT,
        "already unregistered"
    );
    // Registered on another loop is not registered on this one.
    let other = Loop::new();
    assert_eq!(other.register(fd, EPOLL_LOOP_IN, count_io, &hits), 0);
    assert_eq!(lp.unregister(fd), -libc::ENOENT);
    assert_eq!(other.unregister(fd), 0);
}

#[test]
fn poll_timeout_below_minus_one_is_einval() {
    let bound = Hits::default();
    let lp = Loop::new();
    // Bounds the test if a bad timeout were taken for "wait forever": this timer
    // would end that wait (and the assertions below would fail).
    let id = lp.timer_start(10_000, 0, count_timer, &bound);
    for t in [-2, -1000, c_int::MIN] {
        let t0 = std::time::Instant::now();
        assert_eq!(lp.poll(t), -libc::EINVAL, "poll({t})");
        // A hang bound only, below the timer's 10 s.
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    }
    assert_eq!(lp.stats().iterations, 0, "refused before waiting");
    assert_eq!(bound.count.get(), 0);
    assert_eq!(lp.poll(0), 0, "the loop still works");
    assert_eq!(lp.timer_stop(id), 0);
}

#[test]
fn stale_timer_ids_are_enoent() {
    let hits = Hits::default();
    let lp = Loop::new();
    assert_eq!(lp.timer_stop(0), -libc::ENOENT, "0 is never an id");
    assert_eq!(lp.timer_stop(1), -libc::ENOENT, "not issued yet");
    assert_eq!(lp.timer_stop(u64::MAX), -libc::ENOENT);
    let fired = lp.timer_start(0, 0, count_timer, &hits);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(lp.timer_stop(fired), -libc::ENOENT, "a fired one-shot");
    let stopped = lp.timer_start(60_000, 0, count_timer, &hits);
    assert_eq!(lp.timer_stop(stopped), 0);
    assert_eq!(lp.timer_stop(stopped), -libc::ENOENT, "stopped twice");
    // An id from another loop means nothing here.
    let other = Loop::new();
    let foreign = other.timer_start(60_000, 0, count_timer, &hits);
    let mine = lp.timer_start(60_000, 0, count_timer, &hits);
    assert_ne!(foreign, mine);
    assert_eq!(lp.timer_stop(foreign + 100), -libc::ENOENT);
    assert_eq!(lp.timer_stop(mine), 0);
    assert_eq!(other.timer_stop(foreign), 0);
}

#[test]
fn strerror_names_each_code() {
    assert_eq!(msg(0), "success");
    let named = [
        (libc::EINVAL, "EINVAL"),
        (libc::EBADF, "EBADF"),
        (libc::ENOENT, "ENOENT"),
        (libc::EEXIST, "EEXIST"),
        (libc::EBUSY, "EBUSY"),
        (libc::EPERM, "EPERM"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EMFILE, "EMFILE"),
        (libc::ENOTRECOVERABLE, "ENOTRECOVERABLE"),
    ];
    for (code, name) in named {
        let m = msg(-code);
        assert!(m.contains(name), "strerror(-{name}) = {m:?}");
        assert_eq!(msg(code), m, "the positive spelling gives the same message");
    }
    assert_eq!(msg(-99_999), "unknown error");
    assert_eq!(msg(c_int::MAX), "unknown error");
}

// ---------------------------------------------------------------------------
// the panic boundary
// ---------------------------------------------------------------------------

#[test]
fn a_panic_inside_the_library_poisons_the_loop_which_can_still_be_freed() {
    let hits = Hits::default();
    let (r, _w) = pipe();
    let mut ptr = std::ptr::null_mut();
    // SAFETY: `ptr` is a valid out-pointer.
    assert_eq!(unsafe { epoll_loop_new(&mut ptr) }, 0);
    let fd = r.as_raw_fd();
    let mut id = 0u64;
    // SAFETY: live loop; `hits` outlives it; `id` is writable.
    unsafe {
        assert_eq!(
            epoll_loop_register(ptr, fd, EPOLL_LOOP_IN, Some(count_io), ud(&hits)),
            0
        );
        assert_eq!(
            epoll_loop_timer_start(ptr, 60_000, 0, Some(count_timer), ud(&hits), &mut id),
            0
        );
    }

    // SAFETY: `ptr` is a live loop.
    unsafe { ::epoll_loop::ffi::event_loop::testing::panic_on_next_call(ptr) };
    let poisoned = -libc::ENOTRECOVERABLE;
    // SAFETY: live (poisoned) loop, valid arguments: the panic is caught inside.
    let rc = unsafe { epoll_loop_poll(ptr, 0) };
    assert_eq!(rc, poisoned, "the call that panicked");

    let mut st = epoll_loop_stats {
        iterations: 5,
        ..Default::default()
    };
    let mut id2 = 77u64;
    // SAFETY: a live (poisoned) loop with valid arguments; every call must refuse.
    unsafe {
        assert_eq!(epoll_loop_poll(ptr, 0), poisoned, "poll");
        assert_eq!(epoll_loop_fileno(ptr), poisoned, "fileno");
        assert_eq!(
            epoll_loop_register(
                ptr,
                _w.as_raw_fd(),
                EPOLL_LOOP_OUT,
                Some(count_io),
                ud(&hits)
            ),
            poisoned,
            "register"
        );
        assert_eq!(
            epoll_loop_modify(ptr, fd, EPOLL_LOOP_OUT),
            poisoned,
            "modify"
        );
        assert_eq!(epoll_loop_unregister(ptr, fd), poisoned, "unregister");
        assert_eq!(epoll_loop_run(ptr), poisoned, "run");
        assert_eq!(
            epoll_loop_timer_start(ptr, 0, 0, Some(count_timer), ud(&hits), &mut id2),
            poisoned,
            "timer_start"
        );
        assert_eq!(epoll_loop_timer_stop(ptr, id), poisoned, "timer_stop");
        assert_eq!(epoll_loop_get_stats(ptr, &mut st), poisoned, "get_stats");
        assert_eq!(epoll_loop_stop(ptr), poisoned, "stop");
        assert_eq!(epoll_loop_wake(ptr), poisoned, "wake");
        // Still refused after all that.
        assert_eq!(epoll_loop_poll(ptr, 0), poisoned, "poll, again");
    }
    assert_eq!(id2, 77, "*out_id untouched");
    assert_eq!(st.iterations, 5, "*out untouched");
    assert_eq!(hits.count.get(), 0, "no callback ran");
    assert!(msg(poisoned).contains("ENOTRECOVERABLE"));

    // SAFETY: `ptr` is a live (poisoned) loop; it is not used after this.
    let rc = unsafe { epoll_loop_free(ptr) };
    assert_eq!(rc, 0, "a poisoned loop can be freed");
    // The registered fd was not closed by free.
    assert!(fd_is_open(fd));
}

#[test]
fn a_panic_poisons_only_its_own_loop() {
    let hits = Hits::default();
    let (r, w) = pipe();
    let healthy = Loop::new();
    let sick = Loop::new();
    assert_eq!(
        healthy.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &hits),
        0
    );
    // SAFETY: `sick` is a live loop.
    unsafe { ::epoll_loop::ffi::event_loop::testing::panic_on_next_call(sick.ptr()) };
    assert_eq!(sick.timer_stop(1), -libc::ENOTRECOVERABLE);
    assert_eq!(sick.poll(0), -libc::ENOTRECOVERABLE);
    write1(&w);
    assert_eq!(healthy.poll(1000), 1, "another loop is unaffected");
    assert_eq!(hits.count.get(), 1);
    // `sick` is freed by its Drop, which asserts 0.
}

// ---------------------------------------------------------------------------
// signals
// ---------------------------------------------------------------------------

fn blocked_here(signo: c_int) -> bool {
    // SAFETY: a NULL new set only reads the calling thread's mask into `cur`.
    let mut cur: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut cur) },
        0
    );
    // SAFETY: `cur` is an initialised set.
    unsafe { libc::sigismember(&cur, signo) == 1 }
}

#[test]
fn blocking_sigkill_or_sigstop_is_einval() {
    // Nothing can block them (the kernel drops them from any mask silently),
    // so a 0 would promise what cannot happen.
    std::thread::spawn(|| {
        for s in [libc::SIGKILL, libc::SIGSTOP] {
            assert_eq!(epoll_loop_signal_block(s), -libc::EINVAL, "signal {s}");
            assert!(!blocked_here(s));
        }
        assert_eq!(epoll_loop_signal_block(0), -libc::EINVAL);
        assert_eq!(epoll_loop_signal_block(-1), -libc::EINVAL);
        assert_eq!(epoll_loop_signal_block(1000), -libc::EINVAL);
        // A signal that can be blocked still is (in this thread only).
        assert_eq!(epoll_loop_signal_block(libc::SIGUSR2), 0);
        assert!(blocked_here(libc::SIGUSR2));
    })
    .join()
    .unwrap();
}
