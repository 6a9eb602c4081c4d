//! Races and re-entrancy at the C boundary, through the exported functions as C
//! calls them. A plain `cargo test` runs them too, but some of what they check
//! (a data race, a leak, a double free that happens not to crash) only shows
//! reliably under the sanitizers: `make sanitize` runs this file with the
//! library built with `-Zsanitizer=address` (LeakSanitizer on) and with
//! `-Zsanitizer=thread`.
//!
//! Four of them failed before C handles became generation-checked slots:
//! racing stops both freed the server (a plain run aborts); a stop from the
//! log callback on the server's thread raced with another thread's stop and
//! freed it twice (TSan, and ASan now and then); every call through the object
//! header wrote a `Cell`, a data race between threads calling
//! `echo_server_port`/`_get_stats` (TSan); an attached server whose loop was
//! freed first was never released (LSan). A reproducer for a bug not fixed yet
//! can be marked `#[ignore = "reason"]` and run with `cargo test --test
//! sanitize_races -- --ignored NAME` or `make sanitize SANITIZE_ARGS='--ignored NAME'`.

mod support;

use ::epoll_loop::ffi::*;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};
use support::echo::config;
use support::ffi::{SendPtr, new_loop, poll_until};
use support::net::connect;

const EINVAL: c_int = -libc::EINVAL;
const EDEADLK: c_int = -libc::EDEADLK;

/// How long any wait in these tests may take before it fails.
const PATIENCE: Duration = Duration::from_secs(20);

fn start(cfg: &echo_server_config) -> *mut echo_server {
    let mut srv = std::ptr::null_mut();
    // SAFETY: a valid config and out-pointer.
    assert_eq!(unsafe { echo_server_start(cfg, &mut srv) }, 0);
    srv
}

fn port(srv: *const echo_server) -> u16 {
    // SAFETY: a live server.
    let p = unsafe { echo_server_port(srv) };
    assert!(p > 0, "echo_server_port: {p}");
    p as u16
}

/// A start line for `n` threads, tighter than a `Barrier` (whose last arrival
/// runs on while the others are still being woken): each one announces itself
/// and spins until all have. Returns the order of arrival (0 first). Bounded
/// by [`PATIENCE`].
fn spin_start(ready: &AtomicUsize, n: usize) -> usize {
    let me = ready.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + PATIENCE;
    while ready.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "the other threads never arrived");
        std::hint::spin_loop();
    }
    me
}

/// Spins `n` times (some 20 ns each).
fn spin(n: usize) {
    for _ in 0..n {
        std::hint::spin_loop();
    }
}

// ---------------------------------------------------------------------------
// echo_server_stop from two threads at once
// ---------------------------------------------------------------------------

/// `echo_server_stop` may be called from any thread, and stopping twice is
/// `-EINVAL`: so two threads stopping one server at the same moment must get
/// exactly one 0 and one `-EINVAL`, every time, with nothing freed twice.
#[test]
fn two_threads_stopping_one_server_get_one_success_and_one_einval() {
    const ROUNDS: usize = 300;
    let cfg = config();
    for round in 0..ROUNDS {
        let srv = SendPtr(start(&cfg));
        let ready = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..2 {
            let (ready, tx) = (ready.clone(), tx.clone());
            thread::spawn(move || {
                // Left alone, one of the two would always be ahead by about
                // the same 50-200 ns, longer than the race window: one of
                // them waits a little, a different amount each round, so
                // that over the rounds the two calls meet at every offset
                // from about -350 to +350 ns.
                let me = spin_start(&ready, 2);
                let k = round % 32;
                spin(if (k < 16) == (me == 0) { k % 16 } else { 0 });
                // SAFETY: a server from echo_server_start; the second stop is
                // the documented "stopped twice" misuse.
                let _ = tx.send(unsafe { echo_server_stop(srv.get()) });
            });
        }
        // Through a channel with a deadline: a stop that hangs must fail the
        // test rather than block it.
        let mut codes: Vec<c_int> = (0..2)
            .map(|_| {
                rx.recv_timeout(PATIENCE)
                    .unwrap_or_else(|e| panic!("round {round}: a racing stop hung ({e})"))
            })
            .collect();
        codes.sort_unstable();
        assert_eq!(
            codes,
            vec![EINVAL, 0],
            "round {round}: two racing stops must give one 0 and one -EINVAL"
        );
    }
}

// ---------------------------------------------------------------------------
// echo_server_stop from the server's own log callback
// ---------------------------------------------------------------------------

/// What the re-entering log callback works with: the server to stop, the line
/// that triggers the stop, whether it stops once (then disarms) or at every
/// such line, and the codes its calls got.
struct Reenter {
    srv: AtomicPtr<echo_server>,
    trigger: &'static str,
    armed: AtomicBool,
    repeat: bool,
    codes: Mutex<Vec<c_int>>,
}

impl Reenter {
    fn new(trigger: &'static str) -> Reenter {
        Reenter {
            srv: AtomicPtr::new(std::ptr::null_mut()),
            trigger,
            armed: AtomicBool::new(false),
            repeat: false,
            codes: Mutex::new(Vec::new()),
        }
    }

    fn codes(&self) -> Vec<c_int> {
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// An `echo_server_log_fn` that, once armed, calls `echo_server_stop` on its
/// own server when a line containing the trigger arrives (once, or every time
/// with `repeat`).
unsafe extern "C" fn stop_from_log(_level: c_int, message: *const c_char, ud: *mut c_void) {
    // SAFETY: `ud` is the test's `Reenter`, which outlives the server; the
    // message is a NUL-terminated line valid during the call.
    let (r, msg) = unsafe { (&*ud.cast::<Reenter>(), CStr::from_ptr(message)) };
    if !msg.to_string_lossy().contains(r.trigger) || !r.armed.swap(r.repeat, Ordering::SeqCst) {
        return;
    }
    // SAFETY: the server the test stored (live, or being stopped: that is the
    // re-entrancy this test is about).
    let rc = unsafe { echo_server_stop(r.srv.load(Ordering::SeqCst)) };
    r.codes
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(rc);
}

fn with_reenter(cfg: &mut echo_server_config, r: &Reenter) {
    cfg.log = Some(stop_from_log);
    cfg.log_user_data = std::ptr::from_ref(r).cast_mut().cast();
    cfg.log_level = EPOLL_LOOP_LOG_DEBUG;
}

/// An attached server stopped from its own log callback while the loop
/// dispatches, at each line a client's life logs (`trigger`: "new connection"
/// inside the accept callback, "received data" inside the read callback,
/// "client close" inside the close callback): allowed by the contract ("inside
/// its callbacks too"). The stop returns 0, the server is gone (stopping it
/// again is `-EINVAL`), the client is closed and the loop goes on.
fn stop_from_the_log_callback_during_dispatch(trigger: &'static str) {
    let r = Box::new(Reenter::new(trigger));
    let mut cfg = config();
    with_reenter(&mut cfg, &r);
    let lp = new_loop();
    let mut srv = std::ptr::null_mut();
    // SAFETY: a live loop, a valid config and out-pointer.
    assert_eq!(unsafe { echo_server_attach(lp, &cfg, &mut srv) }, 0);
    r.srv.store(srv, Ordering::SeqCst);
    r.armed.store(true, Ordering::SeqCst);
    let mut client = connect(port(srv));
    client.write_all(b"x").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    poll_until(lp, "the log callback's stop", PATIENCE, || {
        !r.codes().is_empty()
    });
    assert_eq!(r.codes(), vec![0], "{trigger}: stop from the log callback");
    // SAFETY: the server was stopped: the documented "stopped twice" misuse.
    assert_eq!(unsafe { echo_server_stop(srv) }, EINVAL, "{trigger}");
    // The client is closed (EOF, possibly after the echo, or a reset) once the
    // loop has run the flush.
    client
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    let mut buf = [0u8; 16];
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{trigger}: expected the connection to close, got {e}"),
        }
        assert!(Instant::now() < deadline, "{trigger}: never closed");
        // SAFETY: a live loop on its own thread.
        assert!(unsafe { epoll_loop_poll(lp, 10) } >= 0);
    }
    // SAFETY: a live loop on its own thread.
    assert_eq!(unsafe { epoll_loop_free(lp) }, 0);
}

#[test]
fn attached_server_stopped_from_its_log_callback_in_the_accept_callback() {
    stop_from_the_log_callback_during_dispatch("new connection");
}

#[test]
fn attached_server_stopped_from_its_log_callback_in_the_read_callback() {
    stop_from_the_log_callback_during_dispatch("received data");
}

#[test]
fn attached_server_stopped_from_its_log_callback_in_the_close_callback() {
    stop_from_the_log_callback_during_dispatch("client close");
}

/// A started server whose log callback (on the server's thread) calls
/// `echo_server_stop` on its own server at every "received data" line, while
/// a client keeps sending and the test thread stops the server: the
/// callback's calls are refused (`-EDEADLK` before the stop, `-EINVAL` once it
/// began), the test thread's stop returns 0, and nothing is freed twice.
#[test]
fn started_server_stop_from_its_log_callback_while_another_thread_stops_it() {
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let mut r = Box::new(Reenter::new("received data"));
        r.repeat = true;
        let mut cfg = config();
        with_reenter(&mut cfg, &r);
        let srv = start(&cfg);
        r.srv.store(srv, Ordering::SeqCst);
        let client = connect(port(srv));
        r.armed.store(true, Ordering::SeqCst);
        // The client sends until the stop begins (a server that is still
        // being sent to keeps echoing until its 2 s flush deadline), and reads
        // every echo (so the flush does not wait for a full socket buffer).
        let quiet = Arc::new(AtomicBool::new(false));
        let mut writer = client.try_clone().unwrap();
        let q = quiet.clone();
        let sender = thread::spawn(move || {
            while !q.load(Ordering::SeqCst) && writer.write_all(&[b'x'; 64]).is_ok() {}
        });
        let mut reader = client;
        let (first_echo, echoed) = std::sync::mpsc::channel();
        let drainer = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut first = Some(first_echo);
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
        });
        // The first echo comes after the first "received data" line, so the
        // log callback has started calling stop. (Waiting through the socket,
        // not through `r.codes`, whose lock would order the callback's calls
        // before this thread's stop for ThreadSanitizer and hide the race.)
        echoed
            .recv_timeout(PATIENCE)
            .unwrap_or_else(|e| panic!("round {round}: no echo ({e})"));
        quiet.store(true, Ordering::SeqCst);
        // SAFETY: a live server from echo_server_start, stopped from this
        // thread while its own thread calls stop from the log callback.
        let rc = unsafe { echo_server_stop(srv) };
        assert_eq!(rc, 0, "round {round}: the test thread's stop");
        let codes = r.codes();
        assert!(!codes.is_empty(), "round {round}: the callback never ran");
        for c in codes {
            assert!(
                c == EDEADLK || c == EINVAL,
                "round {round}: the log callback's stop got {c}"
            );
        }
        // The client's writes ended; the server closed the connection.
        sender.join().unwrap();
        drainer.join().unwrap();
    }
}

// ---------------------------------------------------------------------------
// Calls documented as "any thread" on one handle from several threads
// ---------------------------------------------------------------------------

/// `echo_server_port` and `echo_server_get_stats` may be called from any
/// thread on a started server: four threads calling them at once on one
/// server all get the right answers, and (under TSan) race on nothing.
#[test]
fn port_and_stats_from_four_threads_on_one_started_server() {
    const THREADS: usize = 4;
    const CALLS: usize = 2000;
    let srv = start(&config());
    let want = port(srv);
    let ok = Arc::new(AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let p = SendPtr(srv);
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (ok, barrier) = (ok.clone(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..CALLS {
                    let mut st = echo_server_stats::default();
                    // SAFETY: a live server, documented callable from any thread.
                    let (port, rc) = unsafe {
                        (
                            echo_server_port(p.get()),
                            echo_server_get_stats(p.get(), &mut st),
                        )
                    };
                    if port == c_int::from(want) && rc == 0 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(ok.load(Ordering::Relaxed), THREADS * CALLS);
    // SAFETY: a live server from echo_server_start.
    assert_eq!(unsafe { echo_server_stop(srv) }, 0);
}

// ---------------------------------------------------------------------------
// Leaks
// ---------------------------------------------------------------------------

/// Freeing the loop before stopping its attached server ends the server;
/// `echo_server_stop` then only releases the handle (0, and `-EINVAL` the
/// second time). Nothing may leak: the loop's free closes the listening socket
/// (a connect is refused; checked here), and the server's memory is released
/// (only LeakSanitizer sees that: `make sanitize`).
#[test]
fn attached_server_whose_loop_was_freed_first_leaks_nothing() {
    let lp = new_loop();
    let mut srv = std::ptr::null_mut();
    // SAFETY: a live loop, a valid config and out-pointer.
    assert_eq!(unsafe { echo_server_attach(lp, &config(), &mut srv) }, 0);
    let p = port(srv);
    // SAFETY: the loop first, then its attached server: stop releases it.
    unsafe {
        assert_eq!(epoll_loop_free(lp), 0);
        assert_eq!(echo_server_stop(srv), 0, "releases the handle");
        assert_eq!(echo_server_stop(srv), EINVAL, "stop twice");
    }
    let r = TcpStream::connect(("127.0.0.1", p));
    assert!(
        matches!(&r, Err(e) if e.kind() == ErrorKind::ConnectionRefused),
        "port {p} should be closed once the loop and the server are gone: {r:?}"
    );
}
