//! The thread-safe calls (`epoll_loop_stop`, `_wake`, `_post`) hammered from 8
//! threads while the loop runs and timers fire: every post runs
//! exactly once and on the loop thread, nothing crashes, the loop exits when
//! asked. Through the exported functions, as C calls them. Bounded in time:
//! each hammering thread stops after `HAMMER` or `POSTS` posts.

mod support;

use ::epoll_loop::ffi::*;
use std::ffi::{c_int, c_void};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};
use support::fd::pipe;
use support::ffi::{SendPtr, new_loop, start_timer, watch_readable};

const THREADS: usize = 8;
/// Posts per hammering thread (at most).
const POSTS: usize = 100_000;
/// How long the threads hammer (at most).
const HAMMER: Duration = Duration::from_secs(3);

/// One counter per post: how often it ran.
static RUNS: OnceLock<Vec<AtomicU8>> = OnceLock::new();
/// The loop thread (`pthread_self`), to check where posts run.
static LOOP_THREAD: AtomicUsize = AtomicUsize::new(0);
static WRONG_THREAD: AtomicUsize = AtomicUsize::new(0);
static TIMER_FIRES: AtomicU64 = AtomicU64::new(0);

fn me() -> usize {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() as usize }
}

unsafe extern "C" fn on_post(_lp: *mut epoll_loop, ud: *mut c_void) {
    let id = ud as usize;
    RUNS.get().unwrap()[id].fetch_add(1, Ordering::Relaxed);
    if me() != LOOP_THREAD.load(Ordering::Relaxed) {
        WRONG_THREAD.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe extern "C" fn on_timer(_lp: *mut epoll_loop, _id: u64, _ud: *mut c_void) {
    TIMER_FIRES.fetch_add(1, Ordering::Relaxed);
}

unsafe extern "C" fn on_readable(_lp: *mut epoll_loop, _fd: c_int, _ev: u32, _ud: *mut c_void) {}

#[test]
fn stop_wake_and_post_from_eight_threads_while_timers_fire() {
    RUNS.get_or_init(|| (0..THREADS * POSTS).map(|_| AtomicU8::new(0)).collect());
    LOOP_THREAD.store(me(), Ordering::Relaxed);
    let lp = new_loop();
    // Only the thread-safe calls (stop, wake, post) go through it from other threads.
    let shared = SendPtr(lp);

    // Keep `run` busy: a registered pipe and timers (1 ms repeating, and
    // one-shots started as we go).
    let (r, _w) = pipe();
    assert_eq!(watch_readable(lp, r.as_raw_fd(), on_readable), 0);
    // SAFETY: NULL user data, which `on_timer` ignores.
    let rc = unsafe { start_timer(lp, 1, 1, on_timer, std::ptr::null_mut()) };
    assert_eq!(rc, 0);

    let posted = Arc::new(AtomicUsize::new(0));
    let stops = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(THREADS + 1));
    let t0 = Instant::now();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (posted, stops, start) = (posted.clone(), stops.clone(), start.clone());
            thread::spawn(move || {
                let lp = shared;
                let mut rng = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                let mut mine = 0usize;
                let (mut wakes, mut my_stops) = (0u64, 0u64);
                start.wait();
                let end = Instant::now() + HAMMER;
                while mine < POSTS && Instant::now() < end {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    match rng % 16 {
                        0 => {
                            // SAFETY: the loop is live until every thread is joined.
                            assert_eq!(unsafe { epoll_loop_stop(lp.get()) }, 0);
                            my_stops += 1;
                        }
                        1..=4 => {
                            // SAFETY: as above.
                            assert_eq!(unsafe { epoll_loop_wake(lp.get()) }, 0);
                            wakes += 1;
                        }
                        _ => {
                            let id = t * POSTS + mine;
                            // SAFETY: as above; the user data is an integer, not a pointer.
                            let rc = unsafe {
                                epoll_loop_post(lp.get(), Some(on_post), id as *mut c_void)
                            };
                            assert_eq!(rc, 0);
                            mine += 1;
                        }
                    }
                    if rng % 64 == 0 {
                        thread::yield_now();
                    }
                }
                posted.fetch_add(mine, Ordering::SeqCst);
                stops.fetch_add(my_stops as usize, Ordering::SeqCst);
                (mine, wakes)
            })
        })
        .collect();

    // A watcher stops the loop for good once the hammering is over.
    let d2 = done.clone();
    let watcher = thread::spawn(move || {
        let per_thread: Vec<(usize, u64)> = handles
            .into_iter()
            .map(|h| h.join().expect("hammering thread"))
            .collect();
        d2.store(true, Ordering::SeqCst);
        // SAFETY: the loop is live until the watcher is joined.
        assert_eq!(unsafe { epoll_loop_stop(shared.get()) }, 0);
        per_thread
    });

    // The loop thread: run until stopped, over and over, until the hammering
    // is over; meanwhile start one-shot timers from here.
    start.wait();
    let mut runs_stopped = 0usize;
    let mut oneshots = 0u64;
    while !done.load(Ordering::SeqCst) {
        // SAFETY: live loop, driven by this thread only.
        unsafe {
            let mut id = 0;
            assert_eq!(
                epoll_loop_timer_start(lp, 0, 0, Some(on_timer), std::ptr::null_mut(), &mut id),
                0
            );
            oneshots += 1;
            let rc = epoll_loop_run(lp);
            assert_eq!(rc, 1, "run returns only when stopped");
            runs_stopped += 1;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the loop did not keep up"
        );
    }
    let per_thread = watcher.join().expect("watcher");

    // Run what is still queued: every post exactly once.
    let total = posted.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(10);
    let ran = || {
        RUNS.get()
            .unwrap()
            .iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed)))
            .sum::<u64>()
    };
    while ran() < total as u64 {
        assert!(
            Instant::now() < deadline,
            "posts lost: {} of {total} ran",
            ran()
        );
        // SAFETY: live loop on its thread.
        assert!(unsafe { epoll_loop_poll(lp, 10) } >= 0);
    }
    for (t, &(mine, _)) in per_thread.iter().enumerate() {
        for i in 0..POSTS {
            let n = RUNS.get().unwrap()[t * POSTS + i].load(Ordering::Relaxed);
            let want = u8::from(i < mine);
            assert_eq!(n, want, "post {i} of thread {t} ran {n} times");
        }
    }
    assert_eq!(
        WRONG_THREAD.load(Ordering::Relaxed),
        0,
        "a post ran on another thread"
    );

    // The loop exits when asked: a stop from another thread while run blocks.
    let asked = Arc::new(AtomicU64::new(0));
    let a2 = asked.clone();
    let stopper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        a2.store(t0.elapsed().as_micros() as u64, Ordering::SeqCst);
        // SAFETY: live loop.
        assert_eq!(unsafe { epoll_loop_stop(shared.get()) }, 0);
    });
    // SAFETY: live loop on its thread.
    assert_eq!(unsafe { epoll_loop_run(lp) }, 1);
    let exit_latency_us =
        (t0.elapsed().as_micros() as u64).saturating_sub(asked.load(Ordering::SeqCst));
    stopper.join().unwrap();
    // Microseconds normally; a bound for a missed wake-up, not for speed.
    assert!(
        exit_latency_us < 5_000_000,
        "run took {exit_latency_us} us to return after stop"
    );

    let mut st = epoll_loop_stats::default();
    // SAFETY: live loop, writable stats.
    assert_eq!(unsafe { epoll_loop_get_stats(lp, &mut st) }, 0);
    let fires = TIMER_FIRES.load(Ordering::Relaxed);
    assert!(
        fires >= oneshots,
        "timers fired {fires} times, one-shots alone {oneshots}"
    );
    let wakes: u64 = per_thread.iter().map(|p| p.1).sum();
    println!(
        "{THREADS} threads for {:?}: {total} posts (each ran once), {wakes} wakes, {} stops; \
         run returned 1 {runs_stopped} times; {fires} timer callbacks ({oneshots} one-shots); \
         {} iterations; run returned {exit_latency_us} us after a final stop",
        t0.elapsed(),
        stops.load(Ordering::SeqCst),
        st.iterations
    );
    assert!(total > 0);
    // SAFETY: live loop; no other thread uses it any more.
    assert_eq!(unsafe { epoll_loop_free(lp) }, 0);
    drop(r);
}
