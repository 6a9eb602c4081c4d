//! The loop's dispatch rules (docs/ARCHITECTURE.md, "Dispatch rules"), proved through the
//! exported C ABI exactly as a C program would use it: raw loop pointers,
//! `unsafe extern "C"` callbacks, `user_data` pointing at test state.
//!
//! Conventions of this file:
//! - Callbacks never panic (a panic cannot unwind out of an `extern "C"` fn, it
//!   would abort the whole test binary). They record what they saw in `Cell`s and
//!   the test asserts once `epoll_loop_poll`/`_run` has returned.
//! - Every wait is bounded: finite poll timeouts, and every `poll(-1)`/`run()` has
//!   both a guaranteed wake-up and a [`Watchdog`] that ends it after a few seconds.
//! - fd numbers a test must control (reuse of a number, close before unregister)
//!   are "private" numbers near the top of the fd table (see [`private_fd`]): the
//!   tests run in parallel threads and the kernel hands out the lowest free number,
//!   so no other test can be given these, and `dup3` onto them never closes a
//!   descriptor that belongs to another test.

mod support;

use ::epoll_loop::ffi::*;
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, mpsc};
use std::thread;
use std::time::{Duration, Instant};
use support::fd::{pipe, try_pipe};
use support::ffi::{Loop, SendPtr, ud};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Ends a `poll(-1)` or `run()` that hangs because of a bug. After `limit` it
/// calls `epoll_loop_stop` and `epoll_loop_wake` and interrupts the loop's thread
/// with SIGUSR2 every 50 ms (the interrupted `epoll_wait` then sees the stop
/// request, even if the library's wake is broken); if the wait still has not
/// ended 5 s later, it aborts the test binary rather than hang.
/// Create it on the thread that drives the loop, after the [`Loop`] (so it is
/// joined before the loop is freed).
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<thread::JoinHandle<bool>>,
}

extern "C" fn on_sigusr2(_: c_int) {}

/// Installs a no-op SIGUSR2 handler without `SA_RESTART`, once. Only the
/// watchdog sends SIGUSR2, and only to a test thread stuck in a wait.
fn install_sigusr2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: an all-zero sigaction is a valid value to fill in.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_sigusr2 as extern "C" fn(c_int) as usize;
        // SAFETY: `sa.sa_mask` is a valid sigset_t to initialise.
        unsafe { libc::sigemptyset(&mut sa.sa_mask) };
        // SAFETY: installs a handler that does nothing (async-signal-safe).
        let rc = unsafe { libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "sigaction(SIGUSR2)");
    });
}

impl Watchdog {
    fn new(lp: &Loop<'_>, limit: Duration) -> Watchdog {
        install_sigusr2();
        let p = SendPtr(lp.ptr());
        // SAFETY: pthread_self has no preconditions.
        let driver = unsafe { libc::pthread_self() };
        let (tx, rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            if rx.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
                return false;
            }
            let give_up = Instant::now() + Duration::from_secs(5);
            while Instant::now() < give_up {
                // SAFETY: the loop and its driving thread stay alive until this
                // thread is joined (Drop); stop and wake are thread-safe.
                unsafe {
                    epoll_loop_stop(p.get());
                    epoll_loop_wake(p.get());
                    libc::pthread_kill(driver, libc::SIGUSR2);
                }
                if rx.recv_timeout(Duration::from_millis(50))
                    != Err(mpsc::RecvTimeoutError::Timeout)
                {
                    return true;
                }
            }
            eprintln!(
                "watchdog: a wait did not end {limit:?} + 5 s after it should have; aborting"
            );
            std::process::abort();
        });
        Watchdog {
            done: Some(tx),
            thread: Some(thread),
        }
    }

    /// Stops the watchdog; true if it had to intervene.
    fn finish(&mut self) -> bool {
        drop(self.done.take());
        self.thread
            .take()
            .map(|t| t.join().expect("watchdog thread"))
            .unwrap_or(false)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let fired = self.finish();
        if !thread::panicking() {
            assert!(
                !fired,
                "the watchdog had to end a wait that should have ended"
            );
        }
    }
}

/// What an fd or timer callback saw.
#[derive(Default)]
struct Hits {
    count: Cell<u32>,
    last_fd: Cell<RawFd>,
    last_events: Cell<u32>,
    last_id: Cell<u64>,
}

/// # Safety
/// `p` is the `user_data` of a registration whose state is a live `T`.
unsafe fn state<'a, T>(p: *mut c_void) -> &'a T {
    // SAFETY: guaranteed by the caller.
    unsafe { &*p.cast::<T>() }
}

/// Counts fd events into a [`Hits`].
unsafe extern "C" fn count_io(_lp: *mut epoll_loop, fd: c_int, events: u32, p: *mut c_void) {
    // SAFETY: every registration of this callback passes a `&Hits` that outlives it.
    let h = unsafe { state::<Hits>(p) };
    h.count.set(h.count.get() + 1);
    h.last_fd.set(fd);
    h.last_events.set(events);
}

/// Counts timer firings into a [`Hits`].
unsafe extern "C" fn count_timer(_lp: *mut epoll_loop, id: u64, p: *mut c_void) {
    // SAFETY: every timer with this callback passes a `&Hits` that outlives it.
    let h = unsafe { state::<Hits>(p) };
    h.count.set(h.count.get() + 1);
    h.last_id.set(id);
}

/// A non-blocking, close-on-exec eventfd with counter 0 (writable, not readable).
fn eventfd() -> OwnedFd {
    // SAFETY: plain syscall with valid flags.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0, "eventfd");
    // SAFETY: eventfd returned a new descriptor that only we own.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn write_bytes(fd: &OwnedFd, n: usize) {
    let buf = vec![b'x'; n];
    // SAFETY: `buf` is valid for `n` bytes.
    let w = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), n) };
    assert_eq!(w, n as isize, "write");
}

fn eventfd_add(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of a valid u64.
    let w = unsafe { libc::write(fd.as_raw_fd(), (&raw const one).cast(), 8) };
    assert_eq!(w, 8, "eventfd write");
}

/// Reads a non-blocking fd until it is empty; returns the bytes read. Never panics.
fn drain(fd: RawFd) -> usize {
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is valid for its length.
        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if r <= 0 {
            return total;
        }
        total += r as usize;
    }
}

/// Bytes waiting to be read in a pipe (`FIONREAD`).
fn pending(fd: &OwnedFd) -> c_int {
    let mut n: c_int = 0;
    // SAFETY: FIONREAD writes one int to `n`.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD");
    n
}

fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads descriptor flags; any number is acceptable.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// A descriptor number reserved for one test (`slot` 0..31): near the top of a
/// fd table no test fills, so no parallel test is ever given it.
fn private_fd(slot: i32) -> RawFd {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) }, 0);
    let top = rl.rlim_cur.min(4096) as RawFd;
    assert!(top >= 512, "RLIMIT_NOFILE too small for these tests");
    top - 1 - slot
}

/// Moves `fd` to the number `target` (which must be free). Never panics.
fn try_move_to(fd: OwnedFd, target: RawFd) -> Option<OwnedFd> {
    if fd_is_open(target) {
        return None;
    }
    // SAFETY: `target` is free (checked above, and reserved for the calling test),
    // so dup3 closes nothing; `fd` is open.
    if unsafe { libc::dup3(fd.as_raw_fd(), target, libc::O_CLOEXEC) } != target {
        return None;
    }
    // SAFETY: dup3 just created `target`; only we own it.
    Some(unsafe { OwnedFd::from_raw_fd(target) })
}

fn move_to(fd: OwnedFd, target: RawFd) -> OwnedFd {
    try_move_to(fd, target).expect("dup3 onto a private fd number")
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// ---------------------------------------------------------------------------
// timeout_ms
// ---------------------------------------------------------------------------

#[test]
fn poll_timeout_zero_returns_at_once() {
    let hits = Hits::default();
    let far = Hits::default();
    let (r, w) = pipe();
    let lp = Loop::new();
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &hits),
        0
    );
    // A far timer must not make poll(0) wait either.
    lp.timer_start(60_000, 0, count_timer, &far);

    let t0 = Instant::now();
    for _ in 0..20 {
        assert_eq!(lp.poll(0), 0, "nothing is ready");
    }
    let spent = t0.elapsed();
    // Bounds for a hang (a wait for the 60 s timer, or forever), not for speed:
    // a loaded machine may take a while.
    assert!(
        spent < Duration::from_secs(2),
        "20 x poll(0) took {spent:?}: poll(0) must not block"
    );

    write_bytes(&w, 1);
    let t0 = Instant::now();
    assert_eq!(lp.poll(0), 1, "a ready fd is dispatched by poll(0)");
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(hits.count.get(), 1);
    assert_eq!(far.count.get(), 0);
    assert_eq!(lp.stats().iterations, 21);
}

#[test]
fn poll_timeout_n_waits_at_least_n_ms_and_not_much_more() {
    let hits = Hits::default();
    let far = Hits::default();
    let near = Hits::default();
    let (r, _w) = pipe();
    let lp = Loop::new();
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &hits),
        0
    );
    lp.timer_start(60_000, 0, count_timer, &far);

    for n in [20, 100, 150] {
        let t0 = Instant::now();
        assert_eq!(lp.poll(n), 0, "timeout with nothing ready returns 0");
        let e = t0.elapsed();
        assert!(
            e >= Duration::from_millis(n as u64),
            "poll({n}) returned after only {e:?}"
        );
        // Generous: only a wait for the 60 s timer (or forever) exceeds it.
        assert!(
            e < Duration::from_millis(n as u64 + 2000),
            "poll({n}) returned after {e:?}: far too late"
        );
    }
    assert_eq!(hits.count.get() + far.count.get(), 0);

    // A timer due sooner than the timeout shortens the wait, and runs in that
    // poll: 40 ms, where waiting out the timeout would take 20 s.
    let id = lp.timer_start(40, 0, count_timer, &near);
    let t0 = Instant::now();
    assert_eq!(lp.poll(20_000), 1, "the due timer ran in this poll");
    let e = t0.elapsed();
    assert!(e >= Duration::from_millis(40), "timer ran early: {e:?}");
    assert!(
        e < Duration::from_secs(5),
        "timer ran late: {e:?}: the 20 s timeout was not shortened"
    );
    assert_eq!(near.count.get(), 1);
    assert_eq!(near.last_id.get(), id);
}

#[test]
fn poll_forever_blocks_until_another_thread_makes_an_fd_ready() {
    let hits = Hits::default();
    let (r, w) = pipe();
    let lp = Loop::new();
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &hits),
        0
    );
    let _wd = Watchdog::new(&lp, Duration::from_secs(5));

    let t0 = Instant::now();
    let rc = thread::scope(|s| {
        s.spawn(|| {
            thread::sleep(Duration::from_millis(100));
            write_bytes(&w, 1);
        });
        lp.poll(-1)
    });
    let e = t0.elapsed();
    assert_eq!(rc, 1, "the fd callback ran");
    assert_eq!(hits.count.get(), 1);
    assert_eq!(hits.last_fd.get(), r.as_raw_fd());
    assert_ne!(hits.last_events.get() & EPOLL_LOOP_IN, 0);
    assert!(
        e >= Duration::from_millis(100),
        "poll(-1) returned after {e:?}, before the write"
    );
    // Below the 5 s watchdog, above any plausible delay of a 100 ms sleep.
    assert!(e < Duration::from_secs(4), "poll(-1) took {e:?}");
}

#[test]
fn poll_forever_returns_when_a_timer_is_due() {
    let hits = Hits::default();
    let lp = Loop::new();
    let id = lp.timer_start(60, 0, count_timer, &hits);
    let _wd = Watchdog::new(&lp, Duration::from_secs(5));

    let t0 = Instant::now();
    assert_eq!(lp.poll(-1), 1, "poll(-1) waits for the timer and runs it");
    let e = t0.elapsed();
    assert!(e >= Duration::from_millis(60), "timer ran early: {e:?}");
    // Below the 5 s watchdog: a missed timer shows as a hang, not as lateness.
    assert!(e < Duration::from_secs(4), "timer ran late: {e:?}");
    assert_eq!(hits.count.get(), 1);
    assert_eq!(hits.last_id.get(), id);
}

static SIGUSR1_SEEN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn on_sigusr1(_: c_int) {
    SIGUSR1_SEEN.fetch_add(1, Ordering::SeqCst);
}

/// The only test that touches signals: a no-op SIGUSR1 handler installed without
/// `SA_RESTART` (process-wide, but no other test uses SIGUSR1), and signals sent
/// with `pthread_kill` to this test's thread only.
#[test]
fn eintr_is_retried_with_the_remaining_time() {
    // SAFETY: an all-zero sigaction is a valid value to fill in.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = on_sigusr1 as extern "C" fn(c_int) as usize;
    sa.sa_flags = 0; // no SA_RESTART: epoll_wait fails with EINTR
    // SAFETY: `sa.sa_mask` is a valid sigset_t to initialise.
    unsafe { libc::sigemptyset(&mut sa.sa_mask) };
    // SAFETY: installs an async-signal-safe handler (one atomic add). It stays
    // installed after the test: a late signal then stays harmless.
    let rc = unsafe { libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "sigaction");

    let hits = Hits::default();
    let (r, _w) = pipe();
    let lp = Loop::new();
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &hits),
        0
    );

    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let start = Barrier::new(2);
    let before = SIGUSR1_SEEN.load(Ordering::SeqCst);
    // poll(1000), interrupted every 100 ms up to 800 ms. Retrying with the full
    // timeout would end at least 1000 ms after the last signal that came
    // before the return; retrying with the remaining time ends ~200 ms
    // earlier than that, which leaves 800 ms for a slow wake-up on a loaded
    // machine (nothing is assumed about absolute times).
    const TIMEOUT: Duration = Duration::from_millis(1000);
    let (rc, t0, end, seen_at_return, sends) = thread::scope(|s| {
        let sender = s.spawn(|| {
            start.wait();
            let t0 = Instant::now();
            let mut sends = Vec::new();
            for k in 1..=8u32 {
                let at = t0 + Duration::from_millis(100) * k;
                thread::sleep(at.saturating_duration_since(Instant::now()));
                sends.push(Instant::now());
                // SAFETY: `me` is the test thread, alive until this thread is joined.
                assert_eq!(unsafe { libc::pthread_kill(me, libc::SIGUSR1) }, 0);
            }
            sends
        });
        start.wait();
        let t0 = Instant::now();
        let rc = lp.poll(TIMEOUT.as_millis() as c_int);
        let end = Instant::now();
        let seen = SIGUSR1_SEEN.load(Ordering::SeqCst) - before;
        (rc, t0, end, seen, sender.join().unwrap())
    });
    let elapsed = end - t0;
    assert_eq!(sends.len(), 8);
    assert!(
        seen_at_return >= 3,
        "only {seen_at_return} signals interrupted the poll; the test proves nothing"
    );
    assert_eq!(
        rc, 0,
        "EINTR is retried, not returned, and the timeout gives 0"
    );
    assert!(
        elapsed >= TIMEOUT,
        "poll(1000) returned early after {} ms",
        ms(elapsed)
    );
    let last = *sends
        .iter()
        .filter(|&&t| t < end)
        .max()
        .expect("signals were seen, so some were sent before the return");
    assert!(
        end < last + TIMEOUT,
        "poll(1000) returned {} ms after the last signal before it (sent {} ms in): \
         retried with the full timeout, not the remaining time",
        ms(end - last),
        ms(last.saturating_duration_since(t0))
    );
    assert_eq!(hits.count.get(), 0);
    assert_eq!(lp.stats().iterations, 1, "one poll, one iteration");
}

// ---------------------------------------------------------------------------
// timers in the same poll
// ---------------------------------------------------------------------------

/// Records the order in which an fd and a timer callback ran.
#[derive(Default)]
struct Order {
    next: Cell<u32>,
    fd_at: Cell<u32>,
    timer_at: Cell<u32>,
}

unsafe extern "C" fn order_io(_lp: *mut epoll_loop, fd: c_int, _ev: u32, p: *mut c_void) {
    // SAFETY: registered with a `&Order` that outlives the loop.
    let o = unsafe { state::<Order>(p) };
    o.next.set(o.next.get() + 1);
    o.fd_at.set(o.next.get());
    drain(fd);
}

unsafe extern "C" fn order_timer(_lp: *mut epoll_loop, _id: u64, p: *mut c_void) {
    // SAFETY: started with a `&Order` that outlives the loop.
    let o = unsafe { state::<Order>(p) };
    o.next.set(o.next.get() + 1);
    o.timer_at.set(o.next.get());
}

#[test]
fn due_timers_run_in_the_same_poll_and_are_counted_with_fd_callbacks() {
    let order = Order::default();
    let (r, w) = pipe();
    let lp = Loop::new();
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, order_io, &order),
        0
    );
    lp.timer_start(0, 0, order_timer, &order);
    write_bytes(&w, 1);
    thread::sleep(Duration::from_millis(2));

    assert_eq!(lp.poll(1000), 2, "one fd callback + one timer callback");
    assert_eq!(order.fd_at.get(), 1, "fd callbacks run first");
    assert_eq!(order.timer_at.get(), 2, "then the due timers");
    let st = lp.stats();
    assert_eq!(st.callbacks, 2);
    assert_eq!(st.timers_fired, 1);
    assert_eq!(st.iterations, 1);
    assert_eq!(lp.poll(0), 0, "nothing left");
}

// ---------------------------------------------------------------------------
// what callbacks may do
// ---------------------------------------------------------------------------

/// State of [`juggle`]: on its first call it registers `new_fd`, modifies
/// `modify_fd` from IN to OUT and unregisters its own fd.
struct Juggler {
    new_fd: RawFd,
    modify_fd: RawFd,
    new_hits: Hits,
    mod_hits: Hits,
    calls: Cell<u32>,
    rcs: Cell<[c_int; 3]>,
}

unsafe extern "C" fn juggle(lp: *mut epoll_loop, fd: c_int, _ev: u32, p: *mut c_void) {
    // SAFETY: registered with a `&Juggler` that outlives the loop.
    let j = unsafe { state::<Juggler>(p) };
    j.calls.set(j.calls.get() + 1);
    if j.calls.get() > 1 {
        return;
    }
    // SAFETY: `lp` is the live loop dispatching this callback; the user_data of the
    // new registrations (fields of `j`) live as long as `j`.
    let rcs = unsafe {
        [
            epoll_loop_register(lp, j.new_fd, EPOLL_LOOP_IN, Some(count_io), ud(&j.new_hits)),
            epoll_loop_modify(lp, j.modify_fd, EPOLL_LOOP_OUT),
            epoll_loop_unregister(lp, fd),
        ]
    };
    j.rcs.set(rcs);
}

#[test]
fn callback_can_register_modify_and_unregister_fds_including_its_own() {
    let (a_r, a_w) = pipe();
    let (c_r, c_w) = pipe();
    let e = eventfd();
    let j = Juggler {
        new_fd: c_r.as_raw_fd(),
        modify_fd: e.as_raw_fd(),
        new_hits: Hits::default(),
        mod_hits: Hits::default(),
        calls: Cell::new(0),
        rcs: Cell::new([-1; 3]),
    };
    let lp = Loop::new();
    assert_eq!(lp.register(a_r.as_raw_fd(), EPOLL_LOOP_IN, juggle, &j), 0);
    // An eventfd with counter 0: never readable, always writable.
    assert_eq!(
        lp.register(e.as_raw_fd(), EPOLL_LOOP_IN, count_io, &j.mod_hits),
        0
    );
    write_bytes(&a_w, 1);
    write_bytes(&c_w, 1);

    assert_eq!(lp.poll(1000), 1, "only A was registered and ready");
    assert_eq!(
        j.rcs.get(),
        [0, 0, 0],
        "register, modify, unregister(own fd)"
    );
    assert_eq!(lp.stats().registered, 2, "A left, C joined, E stayed");

    // Next poll: C (registered by the callback) is readable, E (modified to OUT) is writable.
    assert_eq!(lp.poll(1000), 2);
    assert_eq!(j.new_hits.count.get(), 1);
    assert_eq!(j.new_hits.last_fd.get(), c_r.as_raw_fd());
    assert_eq!(j.mod_hits.count.get(), 1);
    assert_ne!(j.mod_hits.last_events.get() & EPOLL_LOOP_OUT, 0);

    // A still holds unread data, but it is no longer registered.
    assert_eq!(pending(&a_r), 1);
    assert_eq!(lp.unregister(a_r.as_raw_fd()), -libc::ENOENT);
    assert_eq!(lp.unregister(c_r.as_raw_fd()), 0);
    assert_eq!(lp.unregister(e.as_raw_fd()), 0);
    assert_eq!(lp.poll(50), 0);
    assert_eq!(
        j.calls.get(),
        1,
        "no callback for the fd it unregistered itself"
    );
}

/// State of [`flip_own`]: switches its own registration from OUT to IN.
#[derive(Default)]
struct Flip {
    hits: Hits,
    rc: Cell<c_int>,
}

unsafe extern "C" fn flip_own(lp: *mut epoll_loop, fd: c_int, ev: u32, p: *mut c_void) {
    // SAFETY: registered with a `&Flip` that outlives the loop.
    let f = unsafe { state::<Flip>(p) };
    f.hits.count.set(f.hits.count.get() + 1);
    f.hits.last_events.set(ev);
    if ev & EPOLL_LOOP_OUT != 0 {
        // SAFETY: `lp` is the live loop dispatching this callback.
        f.rc.set(unsafe { epoll_loop_modify(lp, fd, EPOLL_LOOP_IN) });
    } else {
        drain(fd);
    }
}

#[test]
fn callback_can_modify_its_own_registration() {
    let e = eventfd();
    let f = Flip {
        rc: Cell::new(-1),
        ..Flip::default()
    };
    let lp = Loop::new();
    assert_eq!(lp.register(e.as_raw_fd(), EPOLL_LOOP_OUT, flip_own, &f), 0);
    assert_eq!(lp.poll(1000), 1, "writable");
    assert_eq!(f.rc.get(), 0);
    assert_eq!(lp.poll(50), 0, "now watching IN only, and the counter is 0");
    eventfd_add(&e);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(
        f.hits.last_events.get() & (EPOLL_LOOP_IN | EPOLL_LOOP_OUT),
        EPOLL_LOOP_IN
    );
    assert_eq!(f.hits.count.get(), 2);
}

/// State of [`timer_juggle_io`]: an fd callback that starts one timer and stops another.
#[derive(Default)]
struct TimerJuggle {
    victim: Cell<u64>,
    stop_rc: Cell<c_int>,
    start_rc: Cell<c_int>,
    started: Cell<u64>,
    later: Hits,
}

unsafe extern "C" fn timer_juggle_io(lp: *mut epoll_loop, fd: c_int, _ev: u32, p: *mut c_void) {
    // SAFETY: registered with a `&TimerJuggle` that outlives the loop.
    let t = unsafe { state::<TimerJuggle>(p) };
    drain(fd);
    let mut id = 0;
    // SAFETY: `lp` is the live loop dispatching this callback; `t.later` outlives it.
    let rc = unsafe { epoll_loop_timer_start(lp, 0, 0, Some(count_timer), ud(&t.later), &mut id) };
    t.start_rc.set(rc);
    t.started.set(id);
    // SAFETY: as above.
    let rc = unsafe { epoll_loop_timer_stop(lp, t.victim.get()) };
    t.stop_rc.set(rc);
}

#[test]
fn fd_callback_can_start_and_stop_timers() {
    let tj = TimerJuggle::default();
    let victim_hits = Hits::default();
    let (r, w) = pipe();
    let lp = Loop::new();
    let victim = lp.timer_start(30, 0, count_timer, &victim_hits);
    tj.victim.set(victim);
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, timer_juggle_io, &tj),
        0
    );
    write_bytes(&w, 1);
    assert!(lp.poll(1000) >= 1);
    assert_eq!(tj.start_rc.get(), 0);
    assert_eq!(
        tj.stop_rc.get(),
        0,
        "the callback stopped the pending timer"
    );
    assert!(tj.started.get() > victim);

    lp.poll_until("the later timer", Duration::from_secs(2), || {
        tj.later.count.get() == 1
    });
    assert_eq!(tj.later.last_id.get(), tj.started.get());
    // Past the victim's deadline: it never fires.
    thread::sleep(Duration::from_millis(60));
    assert_eq!(lp.poll(0), 0);
    assert_eq!(victim_hits.count.get(), 0);
    assert_eq!(lp.timer_stop(victim), -libc::ENOENT);
    assert_eq!(lp.stats().timers_pending, 0);
}

/// State of [`chain_timer`]: a timer callback that starts a timer with `after_ms` 0.
#[derive(Default)]
struct Chain {
    hits: Hits,
    child: Hits,
    child_id: Cell<u64>,
    rc: Cell<c_int>,
}

unsafe extern "C" fn chain_timer(lp: *mut epoll_loop, _id: u64, p: *mut c_void) {
    // SAFETY: started with a `&Chain` that outlives the loop.
    let c = unsafe { state::<Chain>(p) };
    c.hits.count.set(c.hits.count.get() + 1);
    let mut id = 0;
    // SAFETY: `lp` is the live loop dispatching this callback; `c.child` outlives it.
    let rc = unsafe { epoll_loop_timer_start(lp, 0, 0, Some(count_timer), ud(&c.child), &mut id) };
    c.rc.set(rc);
    c.child_id.set(id);
}

/// State of [`mutual_timer`]: whichever of two due timers runs first stops the other.
#[derive(Default)]
struct Mutual {
    ids: Cell<[u64; 2]>,
    ran: Cell<u32>,
    stop_rc: Cell<c_int>,
}

unsafe extern "C" fn mutual_timer(lp: *mut epoll_loop, id: u64, p: *mut c_void) {
    // SAFETY: started with a `&Mutual` that outlives the loop.
    let m = unsafe { state::<Mutual>(p) };
    m.ran.set(m.ran.get() + 1);
    let [a, b] = m.ids.get();
    let other = if id == a { b } else { a };
    // SAFETY: `lp` is the live loop dispatching this callback.
    m.stop_rc.set(unsafe { epoll_loop_timer_stop(lp, other) });
}

#[test]
fn timer_callback_can_start_and_stop_timers() {
    // Started from a timer callback: runs in a later poll at the earliest.
    let chain = Chain::default();
    let m = Mutual::default();
    let lp = Loop::new();
    lp.timer_start(0, 0, chain_timer, &chain);
    assert_eq!(lp.poll(1000), 1, "the child timer waits for the next poll");
    assert_eq!(chain.rc.get(), 0);
    assert_eq!(chain.child.count.get(), 0);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(chain.child.count.get(), 1);
    assert_eq!(chain.child.last_id.get(), chain.child_id.get());

    // Two due timers: whichever runs first stops the other, which then never runs.
    let a = lp.timer_start(0, 0, mutual_timer, &m);
    let b = lp.timer_start(0, 0, mutual_timer, &m);
    m.ids.set([a, b]);
    thread::sleep(Duration::from_millis(2));
    assert_eq!(lp.poll(1000), 1, "the stopped timer did not run");
    assert_eq!(m.ran.get(), 1);
    assert_eq!(m.stop_rc.get(), 0);
    assert_eq!(lp.poll(20), 0);
    assert_eq!(m.ran.get(), 1);
    assert_eq!(lp.stats().timers_pending, 0);
}

/// State of [`stopper_io`]/[`stopper_timer`]: stops the loop on call `at`.
#[derive(Default)]
struct Stopper {
    calls: Cell<u32>,
    at: u32,
    rc: Cell<c_int>,
}

unsafe extern "C" fn stopper_io(lp: *mut epoll_loop, fd: c_int, _ev: u32, p: *mut c_void) {
    // SAFETY: registered with a `&Stopper` that outlives the loop.
    let s = unsafe { state::<Stopper>(p) };
    drain(fd);
    s.calls.set(s.calls.get() + 1);
    // SAFETY: `lp` is the live loop dispatching this callback.
    s.rc.set(unsafe { epoll_loop_stop(lp) });
}

unsafe extern "C" fn stopper_timer(lp: *mut epoll_loop, _id: u64, p: *mut c_void) {
    // SAFETY: started with a `&Stopper` that outlives the loop.
    let s = unsafe { state::<Stopper>(p) };
    s.calls.set(s.calls.get() + 1);
    if s.calls.get() == s.at {
        // SAFETY: `lp` is the live loop dispatching this callback.
        s.rc.set(unsafe { epoll_loop_stop(lp) });
    }
}

#[test]
fn stop_inside_a_callback_makes_run_return_1() {
    let s = Stopper {
        rc: Cell::new(-1),
        ..Stopper::default()
    };
    let t = Stopper {
        at: 3,
        rc: Cell::new(-1),
        ..Stopper::default()
    };
    let (r, w) = pipe();
    let lp = Loop::new();
    let _wd = Watchdog::new(&lp, Duration::from_secs(5));
    assert_eq!(lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, stopper_io, &s), 0);
    write_bytes(&w, 1);
    assert_eq!(lp.run(), 1, "stopped from the fd callback");
    assert_eq!(s.calls.get(), 1);
    assert_eq!(s.rc.get(), 0);
    assert_eq!(lp.unregister(r.as_raw_fd()), 0);

    // From a repeating timer's callback, on its third run.
    let id = lp.timer_start(5, 5, stopper_timer, &t);
    assert_eq!(lp.run(), 1, "stopped from the timer callback");
    assert_eq!(t.calls.get(), 3);
    assert_eq!(t.rc.get(), 0);
    assert_eq!(lp.timer_stop(id), 0, "the repeating timer is still pending");
    assert_eq!(lp.run(), 0, "the stop request was used once; nothing left");
}

// ---------------------------------------------------------------------------
// no stale dispatch
// ---------------------------------------------------------------------------

/// State of [`kill_other`]: the first callback to run unregisters the other fd.
struct Killer {
    fds: [RawFd; 2],
    calls: Cell<u32>,
    first: Cell<RawFd>,
    rc: Cell<c_int>,
}

unsafe extern "C" fn kill_other(lp: *mut epoll_loop, fd: c_int, _ev: u32, p: *mut c_void) {
    // SAFETY: registered with a `&Killer` that outlives the loop.
    let k = unsafe { state::<Killer>(p) };
    k.calls.set(k.calls.get() + 1);
    if k.calls.get() == 1 {
        k.first.set(fd);
        let other = if fd == k.fds[0] { k.fds[1] } else { k.fds[0] };
        // SAFETY: `lp` is the live loop dispatching this callback.
        k.rc.set(unsafe { epoll_loop_unregister(lp, other) });
    }
}

#[test]
fn no_event_for_a_registration_removed_earlier_in_the_batch() {
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    let k = Killer {
        fds: [r1.as_raw_fd(), r2.as_raw_fd()],
        calls: Cell::new(0),
        first: Cell::new(-1),
        rc: Cell::new(-1),
    };
    let lp = Loop::new();
    assert_eq!(
        lp.register(r1.as_raw_fd(), EPOLL_LOOP_IN, kill_other, &k),
        0
    );
    assert_eq!(
        lp.register(r2.as_raw_fd(), EPOLL_LOOP_IN, kill_other, &k),
        0
    );
    write_bytes(&w1, 1);
    write_bytes(&w2, 1);

    assert_eq!(
        lp.poll(1000),
        1,
        "the second event was for a removed registration"
    );
    assert_eq!(k.calls.get(), 1);
    assert_eq!(k.rc.get(), 0);
    let st = lp.stats();
    assert_eq!(st.events, 2, "both events arrived in one batch");
    assert_eq!(st.callbacks, 1);
    assert_eq!(st.registered, 1);
    // The survivor still works (level-triggered, data unread).
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(k.calls.get(), 2);
}

/// State of [`reuse_cb`]: the first callback to run unregisters and closes the
/// other fd, puts a new (not ready) pipe at the same number and registers it
/// with [`count_io`] on `new_hits`.
struct Reuser {
    nums: [RawFd; 2],
    reads: [Cell<Option<OwnedFd>>; 2],
    old_calls: Cell<u32>,
    victim: Cell<RawFd>,
    new_read: Cell<Option<OwnedFd>>,
    new_write: Cell<Option<OwnedFd>>,
    new_hits: Hits,
    rcs: Cell<[c_int; 3]>,
}

unsafe extern "C" fn reuse_cb(lp: *mut epoll_loop, fd: c_int, _ev: u32, p: *mut c_void) {
    // SAFETY: registered with a `&Reuser` that outlives the loop.
    let s = unsafe { state::<Reuser>(p) };
    s.old_calls.set(s.old_calls.get() + 1);
    if s.old_calls.get() != 1 {
        return;
    }
    let vi = if fd == s.nums[0] { 1 } else { 0 };
    let victim = s.nums[vi];
    s.victim.set(victim);
    // SAFETY: `lp` is the live loop dispatching this callback.
    let unreg = unsafe { epoll_loop_unregister(lp, victim) };
    // Close it: the number is free now (and private to this test).
    drop(s.reads[vi].take());
    let open_after_close = c_int::from(fd_is_open(victim));
    // A new pipe whose read end gets the victim's number; nothing is written to it.
    let reg = match try_pipe().and_then(|(r, w)| Some((try_move_to(r, victim)?, w))) {
        Some((r, w)) => {
            s.new_read.set(Some(r));
            s.new_write.set(Some(w));
            // SAFETY: `lp` is live; `s.new_hits` outlives the loop.
            unsafe {
                epoll_loop_register(lp, victim, EPOLL_LOOP_IN, Some(count_io), ud(&s.new_hits))
            }
        }
        None => -10_000,
    };
    s.rcs.set([unreg, open_after_close, reg]);
}

#[test]
fn no_stale_event_reaches_a_new_registration_on_a_reused_fd_number() {
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    let r1 = move_to(r1, private_fd(0));
    let r2 = move_to(r2, private_fd(1));
    let nums = [r1.as_raw_fd(), r2.as_raw_fd()];
    let s = Reuser {
        nums,
        reads: [Cell::new(Some(r1)), Cell::new(Some(r2))],
        old_calls: Cell::new(0),
        victim: Cell::new(-1),
        new_read: Cell::new(None),
        new_write: Cell::new(None),
        new_hits: Hits::default(),
        rcs: Cell::new([-1; 3]),
    };
    let lp = Loop::new();
    assert_eq!(lp.register(nums[0], EPOLL_LOOP_IN, reuse_cb, &s), 0);
    assert_eq!(lp.register(nums[1], EPOLL_LOOP_IN, reuse_cb, &s), 0);
    write_bytes(&w1, 1);
    write_bytes(&w2, 1);

    assert_eq!(lp.poll(1000), 1, "only the first callback ran");
    assert_eq!(
        s.rcs.get(),
        [0, 0, 0],
        "unregister ok, number closed, new fd registered on the same number"
    );
    assert_eq!(
        s.old_calls.get(),
        1,
        "the old callback did not get the victim's event"
    );
    assert_eq!(
        s.new_hits.count.get(),
        0,
        "the batch's event for the old fd reached the new registration"
    );
    let st = lp.stats();
    assert_eq!(
        st.events, 2,
        "the victim's event was in the batch (and dropped)"
    );
    assert_eq!(st.registered, 2);

    // The new registration is live and gets its own (real) events.
    let victim = s.victim.get();
    let new_write = s.new_write.take().expect("new pipe");
    let survivor = if victim == nums[0] { nums[1] } else { nums[0] };
    assert_eq!(lp.unregister(survivor), 0);
    assert_eq!(lp.poll(50), 0, "the new fd is not ready");
    write_bytes(&new_write, 1);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(s.new_hits.count.get(), 1);
    assert_eq!(s.new_hits.last_fd.get(), victim);
    assert_eq!(s.old_calls.get(), 1);
    assert_eq!(lp.unregister(victim), 0);
}

#[test]
fn unregister_after_close_succeeds_and_frees_the_slot() {
    let hits = Hits::default();
    let lp = Loop::new();
    let num = private_fd(2);

    // Closed, number still free: unregister succeeds.
    let (r, _w) = pipe();
    let r = move_to(r, num);
    assert_eq!(lp.register(num, EPOLL_LOOP_IN, count_io, &hits), 0);
    drop(r);
    assert!(!fd_is_open(num));
    assert_eq!(lp.unregister(num), 0, "unregister of a closed fd");
    assert_eq!(lp.stats().registered, 0, "the slot was freed");
    assert_eq!(lp.unregister(num), -libc::ENOENT, "and it is gone");

    // A new fd with that number registers and works.
    let (r2, w2) = pipe();
    let r2 = move_to(r2, num);
    assert_eq!(lp.register(num, EPOLL_LOOP_IN, count_io, &hits), 0);
    assert_eq!(lp.stats().registered, 1);
    write_bytes(&w2, 1);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(hits.count.get(), 1);
    assert_eq!(hits.last_fd.get(), num);

    // Closed and the number already reused by an fd this loop never saw.
    drop(r2);
    let (r3, w3) = pipe();
    let r3 = move_to(r3, num);
    assert_eq!(
        lp.unregister(num),
        0,
        "unregister after close + reuse of the number"
    );
    assert_eq!(lp.stats().registered, 0);
    assert_eq!(lp.register(num, EPOLL_LOOP_IN, count_io, &hits), 0);
    assert_eq!(lp.stats().registered, 1);
    write_bytes(&w3, 1);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(hits.count.get(), 2);
    assert_eq!(lp.unregister(num), 0);
    drop(r3);
}

/// Opens what a closed registration's number may be reused by that epoll
/// cannot watch at all (`EPOLL_CTL_*` answers `EPERM` for it).
fn unpollable_files() -> Vec<(&'static str, OwnedFd)> {
    let open = |path: &str, flags: c_int| {
        let c = std::ffi::CString::new(path).unwrap();
        // SAFETY: a NUL-terminated path; the result is checked.
        let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
        assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
        // SAFETY: open returned a new descriptor only we own.
        unsafe { OwnedFd::from_raw_fd(fd) }
    };
    let root = env!("CARGO_MANIFEST_DIR");
    vec![
        (
            "a regular file",
            open(&format!("{root}/Cargo.toml"), libc::O_RDONLY),
        ),
        ("/dev/null", open("/dev/null", libc::O_RDWR)),
        (
            "a directory",
            open(root, libc::O_RDONLY | libc::O_DIRECTORY),
        ),
    ]
}

#[test]
fn unregister_frees_the_slot_when_the_number_was_reused_by_a_file_epoll_cannot_watch() {
    let hits = Hits::default();
    let lp = Loop::new();
    let _wd = Watchdog::new(&lp, Duration::from_secs(10));
    let num = private_fd(4);
    for (what, file) in unpollable_files() {
        for events in [EPOLL_LOOP_IN, EPOLL_LOOP_IN | EPOLL_LOOP_EXCLUSIVE] {
            let (r, _w) = pipe();
            let r = move_to(r, num);
            assert_eq!(lp.register(num, events, count_io, &hits), 0);
            drop(r);
            let reused = move_to(file.try_clone().unwrap(), num);
            assert_eq!(
                lp.register(num, EPOLL_LOOP_IN, count_io, &hits),
                -libc::EEXIST,
                "{what}: still registered as far as the loop knows"
            );
            // modify: MOD (or DEL + ADD for EXCLUSIVE) is refused by the kernel;
            // nothing changes, and unregister frees the slot below.
            let rc = lp.modify(num, events | EPOLL_LOOP_OUT);
            assert_eq!(rc, -libc::EPERM, "{what}, {events:#x}: modify");
            assert_eq!(
                lp.stats().registered,
                1,
                "{what}: a failed modify changes nothing"
            );

            assert_eq!(lp.unregister(num), 0, "{what}, {events:#x}: unregister");
            assert_eq!(lp.stats().registered, 0, "{what}: the slot was freed");
            assert_eq!(lp.unregister(num), -libc::ENOENT, "{what}: and it is gone");
            let t0 = Instant::now();
            assert_eq!(lp.run(), 0, "{what}: run is idle");
            assert!(t0.elapsed() < Duration::from_secs(2));
            assert_eq!(
                lp.register(num, EPOLL_LOOP_IN, count_io, &hits),
                -libc::EPERM,
                "{what}: the kernel refuses the file itself"
            );
            drop(reused);

            // The number is a pipe again: it registers and delivers.
            let (r2, w2) = pipe();
            let r2 = move_to(r2, num);
            let before = hits.count.get();
            assert_eq!(
                lp.register(num, events, count_io, &hits),
                0,
                "{what}: again"
            );
            write_bytes(&w2, 1);
            assert_eq!(lp.poll(1000), 1, "{what}: the new pipe is watched");
            assert_eq!(hits.count.get(), before + 1);
            assert_eq!(hits.last_fd.get(), num);
            assert_eq!(lp.unregister(num), 0);
            drop(r2);
        }
    }
    assert_eq!(lp.stats().registered, 0);
}

// ---------------------------------------------------------------------------
// trigger modes and flags
// ---------------------------------------------------------------------------

#[test]
fn level_triggered_by_default() {
    let hits = Hits::default();
    let (r, w) = pipe();
    let lp = Loop::new();
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &hits),
        0
    );
    write_bytes(&w, 2);
    for i in 1..=3 {
        assert_eq!(lp.poll(1000), 1, "unread data is reported again (poll {i})");
    }
    assert_eq!(hits.count.get(), 3);
    assert_eq!(pending(&r), 2);
}

#[test]
fn edge_triggered_unread_data_gives_no_second_callback() {
    let hits = Hits::default();
    let (r, w) = pipe();
    let lp = Loop::new();
    assert_eq!(
        lp.register(
            r.as_raw_fd(),
            EPOLL_LOOP_IN | EPOLL_LOOP_ET,
            count_io,
            &hits
        ),
        0
    );
    write_bytes(&w, 2);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(lp.poll(50), 0, "no new edge: no second callback");
    assert_eq!(lp.poll(0), 0);
    assert_eq!(hits.count.get(), 1);
    assert_eq!(pending(&r), 2, "the data is still unread");
    // New data is a new edge.
    write_bytes(&w, 1);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(hits.count.get(), 2);
    assert_eq!(lp.poll(50), 0);
}

#[test]
fn oneshot_fires_once_until_modify_rearms_it() {
    let hits = Hits::default();
    let (r, w) = pipe();
    let lp = Loop::new();
    let ev = EPOLL_LOOP_IN | EPOLL_LOOP_ONESHOT;
    assert_eq!(lp.register(r.as_raw_fd(), ev, count_io, &hits), 0);
    write_bytes(&w, 1);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(lp.poll(50), 0, "disabled after one event");
    write_bytes(&w, 1);
    assert_eq!(lp.poll(50), 0, "still disabled, even with new data");
    assert_eq!(lp.stats().registered, 1, "but still registered");
    assert_eq!(hits.count.get(), 1);

    assert_eq!(lp.modify(r.as_raw_fd(), ev), 0, "re-arm");
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(hits.count.get(), 2);
    assert_eq!(lp.poll(50), 0);
    assert_eq!(lp.unregister(r.as_raw_fd()), 0);
}

#[test]
fn exclusive_registers_and_modify_switches_the_mask() {
    let hits = Hits::default();
    let e = eventfd(); // counter 0: writable, not readable
    let lp = Loop::new();
    let fd = e.as_raw_fd();
    assert_eq!(
        lp.register(fd, EPOLL_LOOP_IN | EPOLL_LOOP_EXCLUSIVE, count_io, &hits),
        0
    );
    assert_eq!(lp.poll(50), 0, "not readable yet");
    eventfd_add(&e);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(
        hits.last_events.get() & (EPOLL_LOOP_IN | EPOLL_LOOP_OUT),
        EPOLL_LOOP_IN
    );
    drain(fd);
    assert_eq!(lp.poll(50), 0, "drained");

    // IN|EXCLUSIVE -> OUT|EXCLUSIVE (the kernel refuses MOD: DEL + ADD inside).
    assert_eq!(lp.modify(fd, EPOLL_LOOP_OUT | EPOLL_LOOP_EXCLUSIVE), 0);
    assert_eq!(lp.poll(1000), 1, "an eventfd is always writable");
    assert_eq!(
        hits.last_events.get() & (EPOLL_LOOP_IN | EPOLL_LOOP_OUT),
        EPOLL_LOOP_OUT
    );
    assert_eq!(hits.count.get(), 2);

    // And out of EXCLUSIVE, back to plain IN.
    assert_eq!(lp.modify(fd, EPOLL_LOOP_IN), 0);
    assert_eq!(lp.poll(50), 0, "IN only, counter 0");
    eventfd_add(&e);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(
        hits.last_events.get() & (EPOLL_LOOP_IN | EPOLL_LOOP_OUT),
        EPOLL_LOOP_IN
    );
    assert_eq!(lp.stats().registered, 1);
    assert_eq!(lp.unregister(fd), 0);
}

#[test]
fn exclusive_with_oneshot_is_refused_and_the_old_registration_survives() {
    let hits = Hits::default();
    let other = Hits::default();
    let e = eventfd();
    let (r, _w) = pipe();
    let lp = Loop::new();
    let fd = e.as_raw_fd();
    let bad = EPOLL_LOOP_IN | EPOLL_LOOP_EXCLUSIVE | EPOLL_LOOP_ONESHOT;

    // register: refused, nothing registered.
    assert_eq!(
        lp.register(r.as_raw_fd(), bad, count_io, &other),
        -libc::EINVAL
    );
    assert_eq!(lp.stats().registered, 0);
    assert_eq!(lp.unregister(r.as_raw_fd()), -libc::ENOENT);

    // modify: refused, the old registration (IN|EXCLUSIVE) is back and works.
    assert_eq!(
        lp.register(fd, EPOLL_LOOP_IN | EPOLL_LOOP_EXCLUSIVE, count_io, &hits),
        0
    );
    assert_eq!(lp.modify(fd, bad), -libc::EINVAL);
    assert_eq!(lp.stats().registered, 1);
    eventfd_add(&e);
    assert_eq!(lp.poll(1000), 1, "the old registration still delivers");
    assert_eq!(
        hits.last_events.get() & (EPOLL_LOOP_IN | EPOLL_LOOP_OUT),
        EPOLL_LOOP_IN
    );
    assert_eq!(lp.poll(1000), 1, "still level-triggered, not one-shot");
    assert_eq!(hits.count.get(), 2);
    // It is still in the kernel set: a DEL + ADD modify works on it.
    assert_eq!(lp.modify(fd, EPOLL_LOOP_OUT | EPOLL_LOOP_EXCLUSIVE), 0);
    drain(fd);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(
        hits.last_events.get() & (EPOLL_LOOP_IN | EPOLL_LOOP_OUT),
        EPOLL_LOOP_OUT
    );
    assert_eq!(lp.unregister(fd), 0);
}

// ---------------------------------------------------------------------------
// timers
// ---------------------------------------------------------------------------

#[test]
fn timer_ids_are_never_reused() {
    let hits = Hits::default();
    let lp = Loop::new();
    let mut last = 0;
    for i in 0..300u64 {
        let id = lp.timer_start(60_000 + i, 0, count_timer, &hits);
        assert!(id > last, "id {id} after {last}");
        if i == 0 {
            assert_eq!(id, 1, "ids start at 1");
        }
        last = id;
        if i % 3 != 0 {
            assert_eq!(lp.timer_stop(id), 0);
        }
    }
    assert_eq!(lp.stats().timers_pending, 100);
    // Fired timers do not give their ids back either.
    let a = lp.timer_start(0, 0, count_timer, &hits);
    assert!(a > last);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(hits.last_id.get(), a);
    let b = lp.timer_start(0, 0, count_timer, &hits);
    assert!(b > a, "id {b} after the fired {a}");
}

#[test]
fn stopping_a_fired_one_shot_or_an_unknown_timer_gives_enoent() {
    let hits = Hits::default();
    let lp = Loop::new();
    let id = lp.timer_start(0, 0, count_timer, &hits);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(hits.count.get(), 1);
    assert_eq!(lp.timer_stop(id), -libc::ENOENT, "a fired one-shot timer");
    assert_eq!(lp.timer_stop(id + 1000), -libc::ENOENT, "never issued");
    assert_eq!(lp.timer_stop(0), -libc::ENOENT, "0 is never an id");
    let p = lp.timer_start(60_000, 0, count_timer, &hits);
    assert_eq!(lp.timer_stop(p), 0);
    assert_eq!(lp.timer_stop(p), -libc::ENOENT, "already stopped");
    assert_eq!(lp.stats().timers_pending, 0);
}

/// State of [`self_stopping_timer`]: stops its own (repeating) timer on call `at`.
#[derive(Default)]
struct SelfStop {
    calls: Cell<u32>,
    at: u32,
    rc: Cell<c_int>,
    times: Cell<[Option<Instant>; 8]>,
}

unsafe extern "C" fn self_stopping_timer(lp: *mut epoll_loop, id: u64, p: *mut c_void) {
    // SAFETY: started with a `&SelfStop` that outlives the loop.
    let s = unsafe { state::<SelfStop>(p) };
    let n = s.calls.get();
    let mut times = s.times.get();
    if let Some(slot) = times.get_mut(n as usize) {
        *slot = Some(Instant::now());
    }
    s.times.set(times);
    s.calls.set(n + 1);
    if n + 1 == s.at {
        // SAFETY: `lp` is the live loop dispatching this callback.
        s.rc.set(unsafe { epoll_loop_timer_stop(lp, id) });
    }
}

#[test]
fn repeating_timer_fires_repeatedly_and_can_stop_itself() {
    let s = SelfStop {
        at: 4,
        rc: Cell::new(-1),
        ..SelfStop::default()
    };
    let lp = Loop::new();
    let _wd = Watchdog::new(&lp, Duration::from_secs(5));
    let t0 = Instant::now();
    let id = lp.timer_start(10, 20, self_stopping_timer, &s);
    lp.poll_until("4 runs", Duration::from_secs(3), || s.calls.get() >= 4);
    assert_eq!(s.calls.get(), 4);
    assert_eq!(s.rc.get(), 0, "the timer stopped itself");
    let times = s.times.get();
    let first = times[0].expect("first run");
    assert!(first - t0 >= Duration::from_millis(10));
    for k in 1..4 {
        let gap = times[k].unwrap() - times[k - 1].unwrap();
        assert!(gap >= Duration::from_millis(20), "run {k} after {gap:?}");
    }
    assert_eq!(lp.stats().timers_pending, 0);
    assert_eq!(lp.timer_stop(id), -libc::ENOENT);
    // Three more periods: it never runs again.
    assert_eq!(lp.poll(70), 0);
    assert_eq!(s.calls.get(), 4);
    assert_eq!(lp.run(), 0, "nothing left");
}

// ---------------------------------------------------------------------------
// re-entrancy
// ---------------------------------------------------------------------------

/// What `_free`, `_poll` and `_run` returned from inside a callback.
#[derive(Default)]
struct Busy {
    calls: Cell<u32>,
    rcs: Cell<[c_int; 3]>,
}

fn try_reenter(lp: *mut epoll_loop, b: &Busy) {
    b.calls.set(b.calls.get() + 1);
    // SAFETY: `lp` is the live loop dispatching the calling callback; each call is
    // documented to refuse (-EBUSY) rather than act from inside a callback.
    let rcs = unsafe {
        [
            epoll_loop_free(lp),
            epoll_loop_poll(lp, 0),
            epoll_loop_run(lp),
        ]
    };
    b.rcs.set(rcs);
}

unsafe extern "C" fn busy_io(lp: *mut epoll_loop, fd: c_int, _ev: u32, p: *mut c_void) {
    drain(fd);
    // SAFETY: registered with a `&Busy` that outlives the loop.
    try_reenter(lp, unsafe { state::<Busy>(p) });
}

unsafe extern "C" fn busy_timer(lp: *mut epoll_loop, _id: u64, p: *mut c_void) {
    // SAFETY: started with a `&Busy` that outlives the loop.
    try_reenter(lp, unsafe { state::<Busy>(p) });
}

/// What `_run` returned from inside the last timer's callback, on a loop with
/// nothing else left: first as is, then with a stop request pending.
#[derive(Default)]
struct BusyIdle {
    rcs: Cell<[c_int; 2]>,
}

unsafe extern "C" fn busy_idle_timer(lp: *mut epoll_loop, _id: u64, p: *mut c_void) {
    // SAFETY: started with a `&BusyIdle` that outlives the loop.
    let b = unsafe { state::<BusyIdle>(p) };
    // SAFETY: `lp` is the live loop dispatching this callback.
    let rcs = unsafe {
        let idle = epoll_loop_run(lp);
        epoll_loop_stop(lp);
        [idle, epoll_loop_run(lp)]
    };
    b.rcs.set(rcs);
}

#[test]
fn free_poll_and_run_inside_a_callback_return_ebusy() {
    let from_fd = Busy::default();
    let from_timer = Busy::default();
    let after = Hits::default();
    let idle = BusyIdle::default();
    let (r, w) = pipe();
    let lp = Loop::new();
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, busy_io, &from_fd),
        0
    );
    lp.timer_start(0, 0, busy_timer, &from_timer);
    write_bytes(&w, 1);
    thread::sleep(Duration::from_millis(2));
    assert_eq!(lp.poll(1000), 2);
    let busy = -libc::EBUSY;
    assert_eq!(
        from_fd.rcs.get(),
        [busy; 3],
        "free, poll, run from an fd callback"
    );
    assert_eq!(from_timer.rcs.get(), [busy; 3], "from a timer callback");

    // The loop was neither freed nor disturbed: it still works.
    assert_eq!(lp.poll(0), 0);
    write_bytes(&w, 1);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(from_fd.calls.get(), 2);
    lp.timer_start(0, 0, count_timer, &after);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(after.count.get(), 1);
    assert_eq!(lp.unregister(r.as_raw_fd()), 0);
    assert_eq!(lp.run(), 0);

    // Even when the loop looks idle (its last timer is running) or a stop is
    // pending, run() from a callback is refused rather than returning 0 or 1;
    // the refused run does not consume the stop, the poll around it does.
    let _wd = Watchdog::new(&lp, Duration::from_secs(5));
    lp.timer_start(0, 0, busy_idle_timer, &idle);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(idle.rcs.get(), [busy; 2], "run() inside the last callback");
    assert_eq!(
        lp.run(),
        0,
        "the stop requested in the callback was consumed by the poll that ran it"
    );
}

// ---------------------------------------------------------------------------
// stop, wake, run
// ---------------------------------------------------------------------------

#[test]
fn wake_from_another_thread_makes_a_blocked_poll_forever_return_0() {
    let hits = Hits::default();
    let (r, _w) = pipe();
    let lp = Loop::new();
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &hits),
        0
    );
    let _wd = Watchdog::new(&lp, Duration::from_secs(5));
    let p = SendPtr(lp.ptr());

    let t0 = Instant::now();
    let (rc, returned, woke_at) = thread::scope(|s| {
        let waker = s.spawn(move || {
            thread::sleep(Duration::from_millis(100));
            let at = Instant::now();
            // SAFETY: the loop outlives this scoped thread; wake is thread-safe.
            assert_eq!(unsafe { epoll_loop_wake(p.get()) }, 0);
            at
        });
        let rc = lp.poll(-1);
        let returned = Instant::now();
        (rc, returned, waker.join().unwrap())
    });
    let e = returned - t0;
    assert_eq!(rc, 0, "woken: no callback ran");
    assert!(returned >= woke_at, "poll returned before the wake");
    assert!(e >= Duration::from_millis(100));
    // Below the 5 s watchdog, whose wake would also give 0.
    assert!(e < Duration::from_secs(4), "poll(-1) took {e:?}");
    assert_eq!(hits.count.get(), 0);
    assert_eq!(
        lp.stats().events,
        0,
        "the internal waker is not an fd event"
    );
    assert_eq!(lp.poll(30), 0, "the wake was consumed");
}

#[test]
fn wakes_are_coalesced() {
    let lp = Loop::new();
    for _ in 0..5 {
        assert_eq!(lp.wake(), 0);
    }
    let t0 = Instant::now();
    assert_eq!(lp.poll(20_000), 0, "woken");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "not woken: poll waited {:?} of its 20 s",
        t0.elapsed()
    );
    let t0 = Instant::now();
    assert_eq!(lp.poll(60), 0);
    assert!(
        t0.elapsed() >= Duration::from_millis(60),
        "five wakes were coalesced into one"
    );
}

/// State of [`tick`]: counts the runs of a repeating timer.
#[derive(Default)]
struct Ticks {
    n: AtomicUsize,
}

unsafe extern "C" fn tick(_lp: *mut epoll_loop, _id: u64, p: *mut c_void) {
    // SAFETY: started with a `&Ticks` that outlives the loop.
    let t = unsafe { state::<Ticks>(p) };
    t.n.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn stop_from_another_thread_ends_a_busy_run_with_1() {
    let ticks = Ticks::default();
    let lp = Loop::new();
    let id = lp.timer_start(5, 5, tick, &ticks);
    let _wd = Watchdog::new(&lp, Duration::from_secs(5));
    let p = SendPtr(lp.ptr());

    let t0 = Instant::now();
    let rc = thread::scope(|s| {
        s.spawn(move || {
            thread::sleep(Duration::from_millis(150));
            // SAFETY: the loop outlives this scoped thread; stop is thread-safe.
            assert_eq!(unsafe { epoll_loop_stop(p.get()) }, 0);
        });
        lp.run()
    });
    let e = t0.elapsed();
    assert_eq!(rc, 1, "run() ends with 1 when stopped");
    assert!(
        e >= Duration::from_millis(150),
        "run returned before the stop: {e:?}"
    );
    // Below the 5 s watchdog.
    assert!(
        e < Duration::from_secs(4),
        "run took {e:?} to notice the stop"
    );
    let n = ticks.n.load(Ordering::Relaxed);
    assert!(n >= 5, "the repeating timer kept the loop busy ({n} runs)");
    assert_eq!(lp.stats().timers_pending, 1, "stop does not touch timers");
    assert_eq!(lp.timer_stop(id), 0);
}

#[test]
fn stop_before_run_is_remembered_and_used_once() {
    let hits = Hits::default();
    let lp = Loop::new();
    let id = lp.timer_start(60_000, 0, count_timer, &hits);
    assert_eq!(lp.stop(), 0);
    assert_eq!(lp.stop(), 0);
    let t0 = Instant::now();
    assert_eq!(lp.run(), 1, "a stop requested before run ends it at once");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "run waited {:?} (for the 60 s timer?)",
        t0.elapsed()
    );
    assert_eq!(lp.timer_stop(id), 0);
    assert_eq!(
        lp.run(),
        0,
        "the request was used; nothing left to wait for"
    );
}

/// libuv's rule: a pending stop is consumed at the end of each `_poll` and
/// `_run`; `_poll` with a stop pending does not block.
#[test]
fn a_stop_is_consumed_by_the_next_poll_or_run_never_later() {
    let hits = Hits::default();
    let far = Hits::default();
    let s = Stopper {
        at: 1,
        rc: Cell::new(-1),
        ..Stopper::default()
    };
    let lp = Loop::new();
    let _wd = Watchdog::new(&lp, Duration::from_secs(10));
    let far_id = lp.timer_start(60_000, 0, count_timer, &far);

    // A stop while idle: poll(-1) does not wait for the 60 s timer.
    assert_eq!(lp.stop(), 0);
    let t0 = Instant::now();
    assert_eq!(lp.poll(-1), 0, "a pending stop: poll does not block");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    // That poll consumed it: a run with a pending timer waits for the timer.
    let t0 = Instant::now();
    lp.timer_start(50, 0, stopper_timer, &s);
    assert_eq!(lp.run(), 1, "stopped by the timer, not by the old stop");
    assert_eq!(s.calls.get(), 1, "run did not return at once");
    assert!(t0.elapsed() >= Duration::from_millis(50));

    // A stop from a callback inside poll is consumed by that poll.
    let t = Stopper {
        at: 1,
        rc: Cell::new(-1),
        ..Stopper::default()
    };
    lp.timer_start(0, 0, stopper_timer, &t);
    assert_eq!(lp.poll(-1), 1);
    assert_eq!(t.rc.get(), 0);
    lp.timer_start(30, 0, count_timer, &hits);
    let t0 = Instant::now();
    assert_eq!(lp.timer_stop(far_id), 0);
    assert_eq!(lp.run(), 0, "no stop left over: run goes until idle");
    assert_eq!(hits.count.get(), 1);
    assert!(t0.elapsed() >= Duration::from_millis(30));

    // A stop during run still ends it with 1 (and is consumed by it).
    let u = Stopper {
        at: 2,
        rc: Cell::new(-1),
        ..Stopper::default()
    };
    let id = lp.timer_start(5, 5, stopper_timer, &u);
    assert_eq!(lp.run(), 1);
    assert_eq!(u.calls.get(), 2);
    assert_eq!(lp.timer_stop(id), 0);
    assert_eq!(lp.run(), 0, "consumed by the run that returned 1");
    assert_eq!(far.count.get(), 0);
}

/// A stop from another thread wakes a `_poll(-1)` blocked with nothing else
/// to do, and that poll consumes it (a later `_run` is not ended by it).
#[test]
fn a_stop_from_another_thread_wakes_a_blocked_poll_which_consumes_it() {
    let far = Hits::default();
    let hits = Hits::default();
    let lp = Loop::new();
    let _wd = Watchdog::new(&lp, Duration::from_secs(10));
    let far_id = lp.timer_start(60_000, 0, count_timer, &far);
    let p = SendPtr(lp.ptr());
    let t0 = Instant::now();
    let stopper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        // SAFETY: the loop outlives this thread (joined below); stop is thread-safe.
        unsafe { epoll_loop_stop(p.get()) }
    });
    assert_eq!(lp.poll(-1), 0, "woken by the stop, no callback ran");
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(stopper.join().unwrap(), 0);
    lp.timer_start(30, 0, count_timer, &hits);
    assert_eq!(lp.timer_stop(far_id), 0);
    assert_eq!(lp.run(), 0, "the stop was consumed by the poll it woke");
    assert_eq!(hits.count.get(), 1);
}

/// State of [`unregister_self`]: unregisters its own fd.
#[derive(Default)]
struct Once {
    calls: Cell<u32>,
    rc: Cell<c_int>,
}

unsafe extern "C" fn unregister_self(lp: *mut epoll_loop, fd: c_int, _ev: u32, p: *mut c_void) {
    // SAFETY: registered with a `&Once` that outlives the loop.
    let o = unsafe { state::<Once>(p) };
    o.calls.set(o.calls.get() + 1);
    // SAFETY: `lp` is the live loop dispatching this callback.
    o.rc.set(unsafe { epoll_loop_unregister(lp, fd) });
}

#[test]
fn run_returns_0_when_nothing_is_left() {
    let hits = Hits::default();
    let once = Once {
        rc: Cell::new(-1),
        ..Once::default()
    };
    let (r, w) = pipe();
    let lp = Loop::new();
    let _wd = Watchdog::new(&lp, Duration::from_secs(5));

    let t0 = Instant::now();
    assert_eq!(lp.run(), 0, "nothing registered, no timer");
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "below the 5 s watchdog"
    );

    // After the last (one-shot) timer fired.
    let t0 = Instant::now();
    lp.timer_start(30, 0, count_timer, &hits);
    assert_eq!(lp.run(), 0);
    assert_eq!(hits.count.get(), 1);
    assert!(t0.elapsed() >= Duration::from_millis(30));

    // After the last fd unregistered itself.
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, unregister_self, &once),
        0
    );
    write_bytes(&w, 1);
    assert_eq!(lp.run(), 0);
    assert_eq!(once.calls.get(), 1);
    assert_eq!(once.rc.get(), 0);
    let st = lp.stats();
    assert_eq!((st.registered, st.timers_pending), (0, 0));
}

// ---------------------------------------------------------------------------
// statistics
// ---------------------------------------------------------------------------

/// How long `slow_io` and `slow_timer` sleep.
const SLOW: Duration = Duration::from_millis(20);

unsafe extern "C" fn slow_io(_lp: *mut epoll_loop, fd: c_int, _ev: u32, p: *mut c_void) {
    thread::sleep(SLOW);
    drain(fd);
    // SAFETY: registered with a `&Hits` that outlives the loop.
    let h = unsafe { state::<Hits>(p) };
    h.count.set(h.count.get() + 1);
}

unsafe extern "C" fn slow_timer(_lp: *mut epoll_loop, id: u64, p: *mut c_void) {
    thread::sleep(SLOW);
    // SAFETY: started with a `&Hits` that outlives the loop.
    let h = unsafe { state::<Hits>(p) };
    h.count.set(h.count.get() + 1);
    h.last_id.set(id);
}

#[test]
fn stats_count_iterations_events_callbacks_timers_and_time() {
    let fast = Hits::default();
    let slow = Hits::default();
    let timer = Hits::default();
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    let lp = Loop::new();
    assert_eq!(
        lp.stats(),
        epoll_loop_stats::default(),
        "a new loop counts nothing"
    );

    assert_eq!(lp.poll(0), 0);
    let st = lp.stats();
    assert_eq!(st.iterations, 1);
    assert_eq!((st.events, st.callbacks, st.timers_fired), (0, 0, 0));

    assert_eq!(
        lp.register(r1.as_raw_fd(), EPOLL_LOOP_IN, count_io, &fast),
        0
    );
    assert_eq!(
        lp.register(r2.as_raw_fd(), EPOLL_LOOP_IN, slow_io, &slow),
        0
    );
    lp.timer_start(0, 0, slow_timer, &timer);
    let far = lp.timer_start(60_000, 0, count_timer, &timer);
    let st = lp.stats();
    assert_eq!((st.registered, st.timers_pending), (2, 2));

    write_bytes(&w1, 1);
    write_bytes(&w2, 1);
    thread::sleep(Duration::from_millis(2));
    let t0 = Instant::now();
    assert_eq!(lp.poll(1000), 3);
    let poll_ns = t0.elapsed().as_nanos() as u64;
    let st = lp.stats();
    assert_eq!(st.iterations, 2);
    assert_eq!(st.events, 2);
    assert_eq!(st.callbacks, 3, "fd and timer callbacks alike");
    assert_eq!(st.timers_fired, 1);
    assert_eq!(st.timers_pending, 1, "the one-shot timer is gone");
    assert_eq!(st.registered, 2);
    // Two callbacks slept SLOW each (an fd's and a timer's), one did not.
    let slow_ns = SLOW.as_nanos() as u64;
    assert!(
        st.slowest_callback_ns >= slow_ns,
        "slowest callback {} ns, but one slept {slow_ns} ns",
        st.slowest_callback_ns
    );
    assert!(
        st.callback_ns >= st.slowest_callback_ns + slow_ns,
        "callback_ns {} is not the sum: the slowest ({} ns) and another slept {slow_ns} ns",
        st.callback_ns,
        st.slowest_callback_ns
    );
    // Measured inside poll, so within poll's own time: catches callbacks timed
    // from the start of the dispatch rather than one by one.
    assert!(
        st.callback_ns <= poll_ns,
        "{} ns in callbacks, but poll took {poll_ns} ns",
        st.callback_ns
    );
    assert_eq!(
        (fast.count.get(), slow.count.get(), timer.count.get()),
        (1, 1, 1)
    );

    // A wake is an iteration but not an event.
    assert_eq!(lp.wake(), 0);
    let t0 = Instant::now();
    assert_eq!(lp.poll(1000), 1, "the fast pipe is still unread");
    let poll2_ns = t0.elapsed().as_nanos() as u64;
    let st2 = lp.stats();
    assert_eq!(st2.iterations, 3);
    assert_eq!(st2.events, 3);
    assert_eq!(st2.callbacks, 4);
    assert_eq!(st2.timers_fired, 1);
    // One cheap callback: it adds at most this poll's time, and it raises the
    // slowest only if it really took longer, which it cannot have if the
    // whole poll took less than the old slowest.
    let added = st2.callback_ns - st.callback_ns;
    assert!(
        added <= poll2_ns,
        "callback_ns grew by {added} ns in a poll of {poll2_ns} ns"
    );
    if poll2_ns < st.slowest_callback_ns {
        assert_eq!(
            st2.slowest_callback_ns, st.slowest_callback_ns,
            "a cheap callback in a {poll2_ns} ns poll changed the slowest"
        );
    } else {
        assert!(
            st2.slowest_callback_ns == st.slowest_callback_ns
                || st2.slowest_callback_ns <= poll2_ns,
            "slowest {} ns after a {poll2_ns} ns poll (was {} ns)",
            st2.slowest_callback_ns,
            st.slowest_callback_ns
        );
    }
    drain(r1.as_raw_fd());
    assert_eq!(lp.wake(), 0);
    assert_eq!(lp.poll(1000), 0);
    let st3 = lp.stats();
    assert_eq!((st3.iterations, st3.events, st3.callbacks), (4, 3, 4));

    assert_eq!(lp.unregister(r1.as_raw_fd()), 0);
    assert_eq!(lp.timer_stop(far), 0);
    let st = lp.stats();
    assert_eq!((st.registered, st.timers_pending), (1, 0));
    assert_eq!(lp.unregister(r2.as_raw_fd()), 0);
    assert_eq!(lp.stats().registered, 0);
}

// ---------------------------------------------------------------------------
// from_fd and fileno
// ---------------------------------------------------------------------------

#[test]
fn from_fd_adopts_an_epoll_descriptor() {
    // SAFETY: plain syscall with a valid flag.
    let epfd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epfd >= 0, "epoll_create1");
    let mut out = std::ptr::null_mut();
    // SAFETY: `epfd` is ours to give away; `out` is writable.
    let rc = unsafe { epoll_loop_from_fd(epfd, &mut out) };
    assert_eq!(rc, 0, "from_fd of an epoll descriptor");
    let hits = Hits::default();
    let (r, w) = pipe();
    let lp = Loop::from_raw(out); // owns epfd now; frees (and closes) it on drop
    assert_eq!(lp.fileno(), epfd, "the adopted descriptor is the loop's");
    assert_eq!(
        lp.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &hits),
        0
    );
    write_bytes(&w, 1);
    assert_eq!(lp.poll(1000), 1);
    assert_eq!(hits.last_fd.get(), r.as_raw_fd());
    // Its waker works too.
    drain(r.as_raw_fd());
    assert_eq!(lp.wake(), 0);
    let t0 = Instant::now();
    assert_eq!(lp.poll(20_000), 0);
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "not woken: poll waited {:?} of its 20 s",
        t0.elapsed()
    );
    assert_eq!(lp.unregister(r.as_raw_fd()), 0);
}

#[test]
fn from_fd_refuses_a_pipe_and_leaves_it_open() {
    let (r, w) = pipe();
    let sentinel = std::ptr::dangling_mut::<epoll_loop>();
    let mut out = sentinel;
    // SAFETY: `r` is open; on failure the library must leave it to us.
    let rc = unsafe { epoll_loop_from_fd(r.as_raw_fd(), &mut out) };
    assert_eq!(rc, -libc::EINVAL, "a pipe is not an epoll descriptor");
    assert_eq!(out, sentinel, "*out is written only on success");
    assert!(fd_is_open(r.as_raw_fd()), "the pipe was closed");
    write_bytes(&w, 3);
    assert_eq!(drain(r.as_raw_fd()), 3, "and it is still the same pipe");
}

#[test]
fn from_fd_of_a_negative_or_closed_fd_is_ebadf() {
    let mut out = std::ptr::null_mut();
    // SAFETY: `out` is writable; -1 is never a descriptor.
    let rc = unsafe { epoll_loop_from_fd(-1, &mut out) };
    assert_eq!(rc, -libc::EBADF);
    // SAFETY: as above.
    let rc = unsafe { epoll_loop_from_fd(c_int::MIN, &mut out) };
    assert_eq!(rc, -libc::EBADF);
    let closed = private_fd(3);
    assert!(!fd_is_open(closed));
    // SAFETY: `closed` is a free number private to this test.
    let rc = unsafe { epoll_loop_from_fd(closed, &mut out) };
    assert_eq!(rc, -libc::EBADF);
    assert!(out.is_null());
}

/// State of [`nest_io`]: the outer loop's callback polls the inner loop.
struct Nest {
    inner: *mut epoll_loop,
    calls: Cell<u32>,
    inner_rc: Cell<c_int>,
}

unsafe extern "C" fn nest_io(_lp: *mut epoll_loop, _fd: c_int, _ev: u32, p: *mut c_void) {
    // SAFETY: registered with a `&Nest` that outlives the outer loop.
    let n = unsafe { state::<Nest>(p) };
    n.calls.set(n.calls.get() + 1);
    // SAFETY: `n.inner` is a live loop, different from the dispatching one, driven
    // by this same thread.
    n.inner_rc.set(unsafe { epoll_loop_poll(n.inner, 0) });
}

fn readable_now(fd: RawFd, timeout_ms: c_int) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    assert!(rc >= 0, "poll(2)");
    rc == 1 && p.revents & libc::POLLIN != 0
}

#[test]
fn fileno_is_readable_when_events_are_pending_so_loops_nest() {
    let inner_hits = Hits::default();
    let (r, w) = pipe();
    let inner = Loop::new();
    assert_eq!(
        inner.register(r.as_raw_fd(), EPOLL_LOOP_IN, count_io, &inner_hits),
        0
    );
    let efd = inner.fileno();
    assert!(efd >= 0);
    assert!(!readable_now(efd, 0), "nothing pending yet");
    write_bytes(&w, 1);
    assert!(
        readable_now(efd, 1000),
        "a ready fd makes the epoll fd readable"
    );

    // Nest: the outer loop watches the inner one's fileno.
    let nest = Nest {
        inner: inner.ptr(),
        calls: Cell::new(0),
        inner_rc: Cell::new(-1),
    };
    let outer = Loop::new();
    assert_eq!(outer.register(efd, EPOLL_LOOP_IN, nest_io, &nest), 0);
    assert_eq!(outer.poll(1000), 1);
    assert_eq!(nest.calls.get(), 1);
    assert_eq!(
        nest.inner_rc.get(),
        1,
        "the inner loop dispatched from the outer callback"
    );
    assert_eq!(inner_hits.count.get(), 1);
    assert_eq!(inner_hits.last_fd.get(), r.as_raw_fd());

    drain(r.as_raw_fd());
    assert!(!readable_now(efd, 0), "drained: nothing pending");
    assert_eq!(outer.poll(50), 0);
    // A wake of the inner loop shows through too.
    assert_eq!(inner.wake(), 0);
    assert!(readable_now(efd, 1000));
    assert_eq!(outer.poll(1000), 1);
    assert_eq!(nest.inner_rc.get(), 0, "woken, no callback");
    assert_eq!(outer.unregister(efd), 0);
}
