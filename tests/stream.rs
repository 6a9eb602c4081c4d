//! The stream layer (`epoll_loop_tcp_*`, `epoll_loop_conn_*`, `epoll_loop_listener_*`),
//! proved through the exported C ABI as a C program would use it: raw handles,
//! `unsafe extern "C"` callbacks, `user_data` pointing at test state. Plus
//! `tests/c/stream_test.c` run under ASan + UBSan (and LeakSanitizer where it
//! works): the stream layer from C. Signals and posts: `tests/signals_posts.rs`.
//!
//! Conventions of this file:
//! - Callbacks never panic (a panic cannot unwind out of an `extern "C"` fn).
//!   They record what happened in a [`Rec`], including failed checks made inside
//!   callbacks ("problems"), and the test asserts after polling.
//! - Every wait is bounded: `epoll_loop_poll` with finite timeouts until a
//!   condition or a deadline; peers use socket timeouts.
//! - Only 127.0.0.1 and port 0 (or a port just closed, for "refused").

mod support;

use ::epoll_loop::ffi::*;
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, c_char, c_int, c_void};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use support::Scratch;
use support::c::{assert_c_tests_passed, build_c_test, sanitizer_env};
use support::ffi::Loop;
use support::process::output_within;

// ---------------------------------------------------------------------------
// What the callbacks saw
// ---------------------------------------------------------------------------

/// One callback, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Open,
    Data(usize),
    /// `on_data(NULL, 0)`: the peer's EOF on a half-open connection.
    Eof,
    Drain,
    Close(c_int),
}

/// Runs after a callback was recorded; may call into the library.
type Hook = Box<dyn FnMut(&Rec, *mut epoll_loop_conn, Ev)>;

/// The state one connection's (or one listener's accepted connections')
/// callbacks point at through `user_data`.
struct Rec {
    events: RefCell<Vec<Ev>>,
    data: RefCell<Vec<u8>>,
    /// The handle, from `on_open` (or set by the test after connect).
    conn: Cell<*mut epoll_loop_conn>,
    /// Checks that failed inside callbacks.
    problems: RefCell<Vec<String>>,
    hook: RefCell<Option<Hook>>,
    /// Write back what arrives.
    echo: Cell<bool>,
    closed_at: Cell<Option<Instant>>,
    /// When the last `on_data` with bytes ran.
    data_at: Cell<Option<Instant>>,
}

impl Rec {
    fn new() -> Rec {
        Rec {
            events: RefCell::default(),
            data: RefCell::default(),
            conn: Cell::new(std::ptr::null_mut()),
            problems: RefCell::default(),
            hook: RefCell::new(None),
            echo: Cell::new(false),
            closed_at: Cell::new(None),
            data_at: Cell::new(None),
        }
    }

    fn with_hook(h: impl FnMut(&Rec, *mut epoll_loop_conn, Ev) + 'static) -> Rec {
        let r = Rec::new();
        *r.hook.borrow_mut() = Some(Box::new(h));
        r
    }

    fn ud(&self) -> *mut c_void {
        std::ptr::from_ref(self).cast_mut().cast()
    }

    fn check(&self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.problems.borrow_mut().push(what());
        }
    }

    /// Checks that `rc == want`, recording a problem otherwise.
    fn expect_rc(&self, what: &str, rc: c_int, want: c_int) {
        self.check(rc == want, || {
            format!("{what} returned {rc}, expected {want}")
        });
    }

    fn record(&self, c: *mut epoll_loop_conn, ev: Ev) {
        self.events.borrow_mut().push(ev);
        let hook = self.hook.borrow_mut().take();
        if let Some(mut h) = hook {
            h(self, c, ev);
            *self.hook.borrow_mut() = Some(h);
        }
    }

    fn events(&self) -> Vec<Ev> {
        self.events.borrow().clone()
    }

    /// The events with each run of `Data` collapsed into one `Data(total)`.
    fn shape(&self) -> Vec<Ev> {
        let mut out: Vec<Ev> = Vec::new();
        for &e in self.events.borrow().iter() {
            match (out.last_mut(), e) {
                (Some(Ev::Data(n)), Ev::Data(m)) => *n += m,
                _ => out.push(e),
            }
        }
        out
    }

    fn count(&self, f: impl Fn(&Ev) -> bool) -> usize {
        self.events.borrow().iter().filter(|e| f(e)).count()
    }

    fn opened(&self) -> bool {
        self.count(|e| *e == Ev::Open) > 0
    }

    fn closed(&self) -> bool {
        self.count(|e| matches!(e, Ev::Close(_))) > 0
    }

    fn close_codes(&self) -> Vec<c_int> {
        self.events
            .borrow()
            .iter()
            .filter_map(|e| match e {
                Ev::Close(c) => Some(*c),
                _ => None,
            })
            .collect()
    }

    fn data(&self) -> Vec<u8> {
        self.data.borrow().clone()
    }

    /// The lifecycle rules, for one connection: `on_open` at most once and
    /// first; `on_close` at most once and last; without `on_open`, nothing but
    /// `on_close`. Also no problems recorded inside callbacks.
    fn assert_lifecycle(&self, name: &str) {
        let ev = self.events();
        let problems = self.problems.borrow();
        assert!(problems.is_empty(), "{name}: {problems:#?}\nevents: {ev:?}");
        let opens = self.count(|e| *e == Ev::Open);
        let closes = self.count(|e| matches!(e, Ev::Close(_)));
        assert!(opens <= 1, "{name}: on_open {opens} times: {ev:?}");
        assert!(closes <= 1, "{name}: on_close {closes} times: {ev:?}");
        if opens == 1 {
            assert_eq!(ev[0], Ev::Open, "{name}: a callback before on_open: {ev:?}");
        } else {
            assert!(
                ev.iter().all(|e| matches!(e, Ev::Close(_))),
                "{name}: callbacks without on_open: {ev:?}"
            );
        }
        if closes == 1 {
            assert!(
                matches!(ev.last(), Some(Ev::Close(_))),
                "{name}: a callback after on_close: {ev:?}"
            );
        }
    }
}

/// The `Rec` behind a callback's `user_data`.
///
/// # Safety
/// `ud` is a `Rec` that outlives the loop (every test passes one).
unsafe fn rec<'a>(ud: *mut c_void) -> &'a Rec {
    // SAFETY: per the contract, `ud` points at a live `Rec`.
    unsafe { &*ud.cast::<Rec>() }
}

unsafe extern "C" fn cb_open(c: *mut epoll_loop_conn, ud: *mut c_void) {
    // SAFETY: every test passes a `Rec` that outlives its loop as user data.
    let r = unsafe { rec(ud) };
    r.conn.set(c);
    r.record(c, Ev::Open);
}

unsafe extern "C" fn cb_data(
    c: *mut epoll_loop_conn,
    data: *const u8,
    len: usize,
    ud: *mut c_void,
) {
    // SAFETY: every test passes a `Rec` that outlives its loop as user data.
    let r = unsafe { rec(ud) };
    if data.is_null() {
        r.check(len == 0, || format!("EOF report with len {len}"));
        r.record(c, Ev::Eof);
        return;
    }
    // SAFETY: the library passes `len` readable bytes at `data`, valid during the call.
    let bytes = unsafe { std::slice::from_raw_parts(data, len) };
    r.data.borrow_mut().extend_from_slice(bytes);
    r.data_at.set(Some(Instant::now()));
    if r.echo.get() {
        r.expect_rc("echo write", write(c, bytes), 0);
    }
    r.record(c, Ev::Data(len));
}

unsafe extern "C" fn cb_drain(c: *mut epoll_loop_conn, ud: *mut c_void) {
    // SAFETY: every test passes a `Rec` that outlives its loop as user data.
    let r = unsafe { rec(ud) };
    r.record(c, Ev::Drain);
}

unsafe extern "C" fn cb_close(c: *mut epoll_loop_conn, error: c_int, ud: *mut c_void) {
    // SAFETY: every test passes a `Rec` that outlives its loop as user data.
    let r = unsafe { rec(ud) };
    // The handle is still valid inside on_close: calls answer, with -EPIPE.
    // SAFETY: `c` is valid until on_close returns.
    let got_ud = unsafe { epoll_loop_conn_get_user_data(c) };
    r.check(got_ud == ud, || "user data inside on_close".into());
    r.expect_rc("write inside on_close", write(c, b"x"), -libc::EPIPE);
    r.expect_rc("close inside on_close", close(c), -libc::EPIPE);
    r.expect_rc("shutdown inside on_close", shutdown(c), -libc::EPIPE);
    r.expect_rc("abort inside on_close", abort(c), -libc::EPIPE);
    r.closed_at.set(Some(Instant::now()));
    r.record(c, Ev::Close(error));
}

const CBS: epoll_loop_conn_callbacks = epoll_loop_conn_callbacks {
    on_open: Some(cb_open),
    on_data: Some(cb_data),
    on_drain: Some(cb_drain),
    on_close: Some(cb_close),
};

// ---------------------------------------------------------------------------
// Calls on handles. Each takes a handle the library gave this test whose
// on_close has not returned yet, or NULL (the library answers -EINVAL).
// ---------------------------------------------------------------------------

fn write(c: *mut epoll_loop_conn, b: &[u8]) -> c_int {
    // SAFETY: `c` is NULL or a live handle; `b` is readable for its length.
    unsafe { epoll_loop_conn_write(c, b.as_ptr().cast(), b.len()) }
}

fn close(c: *mut epoll_loop_conn) -> c_int {
    // SAFETY: `c` is NULL or a live handle.
    unsafe { epoll_loop_conn_close(c) }
}

fn shutdown(c: *mut epoll_loop_conn) -> c_int {
    // SAFETY: `c` is NULL or a live handle.
    unsafe { epoll_loop_conn_shutdown(c) }
}

fn abort(c: *mut epoll_loop_conn) -> c_int {
    // SAFETY: `c` is NULL or a live handle.
    unsafe { epoll_loop_conn_abort(c) }
}

fn pause(c: *mut epoll_loop_conn) -> c_int {
    // SAFETY: `c` is NULL or a live handle.
    unsafe { epoll_loop_conn_pause(c) }
}

fn resume(c: *mut epoll_loop_conn) -> c_int {
    // SAFETY: `c` is NULL or a live handle.
    unsafe { epoll_loop_conn_resume(c) }
}

fn set_limits(c: *mut epoll_loop_conn, max: usize, low: usize) -> c_int {
    // SAFETY: `c` is NULL or a live handle.
    unsafe { epoll_loop_conn_set_limits(c, max, low) }
}

fn set_half_open(c: *mut epoll_loop_conn, on: bool) -> c_int {
    // SAFETY: `c` is NULL or a live handle.
    unsafe { epoll_loop_conn_set_half_open(c, c_int::from(on)) }
}

fn set_timeout(c: *mut epoll_loop_conn, ms: u32) -> c_int {
    // SAFETY: `c` is NULL or a live handle.
    unsafe { epoll_loop_conn_set_timeout(c, ms) }
}

fn set_close_timeout(c: *mut epoll_loop_conn, ms: u32) -> c_int {
    // SAFETY: `c` is NULL or a live handle.
    unsafe { epoll_loop_conn_set_close_timeout(c, ms) }
}

/// The queued byte count, or the error code.
fn queued(c: *mut epoll_loop_conn) -> Result<usize, c_int> {
    let mut n = usize::MAX;
    // SAFETY: `c` is NULL or a live handle; `n` is writable.
    let rc = unsafe { epoll_loop_conn_get_queued(c, &mut n) };
    if rc == 0 { Ok(n) } else { Err(rc) }
}

fn fileno(c: *mut epoll_loop_conn) -> c_int {
    // SAFETY: `c` is NULL or a live handle.
    unsafe { epoll_loop_conn_fileno(c) }
}

/// Which address getter to call.
#[derive(Clone, Copy)]
enum Side {
    Peer,
    Local,
}

/// An address getter with a `cap`-byte host buffer: `Ok((host, port))` or the code.
fn address(c: *mut epoll_loop_conn, side: Side, cap: usize) -> Result<(String, u16), c_int> {
    let mut host = vec![0 as c_char; cap.max(1)];
    let mut port = 0u16;
    // SAFETY: `c` is NULL or a live handle; `host` is writable for `cap` bytes
    // (at least one), `port` is writable.
    let rc = unsafe {
        match side {
            Side::Peer => epoll_loop_conn_peer_address(c, host.as_mut_ptr(), cap, &mut port),
            Side::Local => epoll_loop_conn_local_address(c, host.as_mut_ptr(), cap, &mut port),
        }
    };
    if rc != 0 {
        return Err(rc);
    }
    // SAFETY: on success the library wrote a NUL-terminated string into `host`.
    let text = unsafe { CStr::from_ptr(host.as_ptr()) };
    Ok((text.to_string_lossy().into_owned(), port))
}

/// Sets the socket's send buffer (small buffers make "the socket is full" quick).
fn set_sndbuf(fd: c_int, bytes: c_int) {
    assert_eq!(
        set_buf(fd, libc::SO_SNDBUF, bytes),
        0,
        "setsockopt(SO_SNDBUF)"
    );
}

/// `setsockopt(fd, SOL_SOCKET, opt, bytes)`: 0 or -1 (usable inside callbacks).
fn set_buf(fd: c_int, opt: c_int, bytes: c_int) -> c_int {
    // SAFETY: plain setsockopt on a socket fd the test owns (or the library lent),
    // with a pointer to a live c_int and its size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            std::ptr::from_ref(&bytes).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    }
}

// ---------------------------------------------------------------------------
// Loop and listener
// ---------------------------------------------------------------------------

/// The stream layer's calls on a test's [`Loop`]. Declare the `Rec`s a test's
/// callbacks point at before the loop, so they outlive it.
trait Stream {
    /// A listener on 127.0.0.1, port 0, with `CBS` and `srv`.
    fn listen(&self, srv: &Rec) -> Listener;
    /// An outgoing connection to 127.0.0.1:`port` with `rec`'s callbacks.
    fn connect(&self, port: u16, rec: &Rec) -> *mut epoll_loop_conn;
}

impl Stream for Loop<'_> {
    fn listen(&self, srv: &Rec) -> Listener {
        let mut l = std::ptr::null_mut();
        // SAFETY: a live loop; the host is a C string; `CBS` is static; `srv`
        // outlives the loop (declared before it); `l` is writable.
        let rc = unsafe {
            epoll_loop_tcp_listen(
                self.ptr(),
                c"127.0.0.1".as_ptr(),
                0,
                0,
                &CBS,
                srv.ud(),
                &mut l,
            )
        };
        assert_eq!(rc, 0, "epoll_loop_tcp_listen");
        Listener(l)
    }

    fn connect(&self, port: u16, rec: &Rec) -> *mut epoll_loop_conn {
        let mut c = std::ptr::null_mut();
        // SAFETY: as in `listen`; `c` is writable.
        let rc = unsafe {
            epoll_loop_tcp_connect(
                self.ptr(),
                c"127.0.0.1".as_ptr(),
                port,
                &CBS,
                rec.ud(),
                &mut c,
            )
        };
        assert_eq!(rc, 0, "epoll_loop_tcp_connect to port {port}");
        assert!(!c.is_null());
        rec.conn.set(c);
        c
    }
}

/// A listener, closed on drop.
struct Listener(*mut epoll_loop_listener);

impl Listener {
    fn port(&self) -> u16 {
        // SAFETY: a live listener.
        let p = unsafe { epoll_loop_listener_port(self.0) };
        assert!(p > 0, "epoll_loop_listener_port: {p}");
        p as u16
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if self.0.is_null() {
            return;
        }
        // SAFETY: a live listener, closed once.
        let rc = unsafe { epoll_loop_listener_close(self.0) };
        if !thread::panicking() {
            assert_eq!(rc, 0, "epoll_loop_listener_close");
        }
    }
}

/// A std listener on 127.0.0.1, port 0, and its address.
fn std_listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    (l, a)
}

/// A port on 127.0.0.1 where nothing listens: bound, then closed at once.
fn closed_port() -> u16 {
    let (l, a) = std_listener();
    drop(l);
    a.port()
}

/// Deterministic test bytes: byte `i` of stream `seed`.
fn pattern(seed: u64, start: usize, len: usize) -> Vec<u8> {
    (start..start + len)
        .map(|i| {
            let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ seed;
            (x >> 29) as u8
        })
        .collect()
}

const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Callback order and exactly-once
// ---------------------------------------------------------------------------

/// A client writes before `on_open` (queued while connecting), the server
/// echoes, the client closes after the whole echo arrived. On both sides:
/// `on_open` first, `on_close(0)` once and last, the handle answering inside
/// `on_close`; nothing after it. Right after `_close` returns, `_write`,
/// `_close` and `_shutdown` answer -EPIPE.
#[test]
fn callbacks_come_in_order_and_on_close_exactly_once() {
    const N: usize = 200 * 1024;
    let srv = Rec::new();
    srv.echo.set(true);
    let got = Cell::new(0usize);
    let cli = Rec::with_hook(move |r, c, ev| {
        if let Ev::Data(n) = ev {
            got.set(got.get() + n);
            if got.get() == N {
                r.expect_rc("close", close(c), 0);
                r.expect_rc("write after close", write(c, b"late"), -libc::EPIPE);
                r.expect_rc("close after close", close(c), -libc::EPIPE);
                r.expect_rc("shutdown after close", shutdown(c), -libc::EPIPE);
            }
        }
    });
    let lp = Loop::new();
    let l = lp.listen(&srv);
    let c = lp.connect(l.port(), &cli);
    let msg = pattern(1, 0, N);
    assert_eq!(write(c, &msg), 0, "a write before on_open is queued");
    assert!(
        !cli.opened(),
        "on_open never runs inside epoll_loop_tcp_connect"
    );
    let t0 = Instant::now();
    lp.poll_until("both sides closed", WAIT, || cli.closed() && srv.closed());
    println!("echo of {N} bytes and close: {:?}", t0.elapsed());
    lp.poll_for(Duration::from_millis(100));

    cli.assert_lifecycle("client");
    srv.assert_lifecycle("server");
    assert_eq!(cli.data(), msg, "echo is byte-exact");
    assert_eq!(srv.data(), msg);
    assert_eq!(cli.close_codes(), vec![0]);
    assert_eq!(srv.close_codes(), vec![0]);
    assert_eq!(srv.shape(), vec![Ev::Open, Ev::Data(N), Ev::Close(0)]);
    assert!(
        cli.count(|e| *e == Ev::Drain) <= 1,
        "client: {:?}",
        cli.shape()
    );
}

/// A refused connect: `on_close(-ECONNREFUSED)` only, never `on_open`.
#[test]
fn connect_refused_reports_econnrefused_and_never_opens() {
    let cli = Rec::new();
    let lp = Loop::new();
    let port = closed_port();
    let t0 = Instant::now();
    let c = lp.connect(port, &cli);
    // Writes and a shutdown while connecting are accepted (queued)...
    assert_eq!(write(c, b"queued"), 0);
    lp.poll_until("on_close", WAIT, || cli.closed());
    println!("refused connect reported after {:?}", t0.elapsed());
    lp.poll_for(Duration::from_millis(50));
    cli.assert_lifecycle("client");
    assert_eq!(cli.events(), vec![Ev::Close(-libc::ECONNREFUSED)]);
}

/// A listener on which connects hang in SYN_SENT (see
/// `connect_to_a_black_hole_times_out_with_etimedout`): its backlog lowered
/// to 0 and its accept queue full. Keep all three alive while it is needed.
fn black_hole() -> (TcpListener, SocketAddr, Vec<TcpStream>) {
    let (l, addr) = std_listener();
    // SAFETY: listen(2) on a socket this test owns.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 0) }, 0);
    let mut fillers = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => fillers.push(s),
            Err(e) if e.kind() == ErrorKind::TimedOut => {
                println!("accept queue full after {} connections", fillers.len());
                return (l, addr, fillers);
            }
            Err(e) => panic!("filler connect: {e}"),
        }
    }
    panic!("the kernel completed 16 handshakes on a backlog-0 listener: cannot make a black hole");
}

/// Connecting to a port whose accept queue is full: Linux drops the SYN
/// (`tcp_conn_request`: `sk_acceptq_is_full` -> drop, whatever
/// `tcp_syncookies` says, with `tcp_abort_on_overflow` 0), so the connect
/// hangs in SYN_SENT; `epoll_loop_conn_set_timeout(c, 300)` ends it with
/// `on_close(-ETIMEDOUT)` and no `on_open`. The queue is a std listener whose
/// backlog is lowered to 0 with a second `listen(2)` (allowed on a listening
/// socket: it only changes the backlog) and filled with plain connections until
/// one of them cannot complete its handshake within 300 ms. While it hangs,
/// the peer address is -ENOTCONN.
#[test]
fn connect_to_a_black_hole_times_out_with_etimedout() {
    let (_l, addr, fillers) = black_hole();
    let cli = Rec::new();
    let lp = Loop::new();
    let c = lp.connect(addr.port(), &cli);
    let t0 = Instant::now();
    assert_eq!(set_timeout(c, 300), 0);
    lp.poll_ok(20);
    assert_eq!(
        address(c, Side::Peer, 64),
        Err(-libc::ENOTCONN),
        "peer address while connecting"
    );
    lp.poll_until("on_close", WAIT, || cli.closed());
    let took = cli.closed_at.get().unwrap() - t0;
    println!("black-holed connect: on_close after {took:?} (timeout 300 ms)");
    cli.assert_lifecycle("client");
    assert_eq!(cli.events(), vec![Ev::Close(-libc::ETIMEDOUT)]);
    assert!(
        took >= Duration::from_millis(295) && took < Duration::from_millis(3000),
        "timeout of 300 ms fired after {took:?}"
    );
    drop(fillers);
}

/// Every connection/listener call with NULL where a handle or a required
/// pointer goes answers -EINVAL (or NULL / 0 where documented).
#[test]
fn calls_with_null_return_einval() {
    let null_c = std::ptr::null_mut::<epoll_loop_conn>();
    let null_l = std::ptr::null_mut::<epoll_loop_listener>();
    let einval = -libc::EINVAL;
    assert_eq!(write(null_c, b"x"), einval);
    assert_eq!(close(null_c), einval);
    assert_eq!(shutdown(null_c), einval);
    assert_eq!(abort(null_c), einval);
    assert_eq!(pause(null_c), einval);
    assert_eq!(resume(null_c), einval);
    assert_eq!(set_limits(null_c, 100, 10), einval);
    assert_eq!(set_half_open(null_c, true), einval);
    assert_eq!(set_timeout(null_c, 10), einval);
    assert_eq!(set_close_timeout(null_c, 10), einval);
    assert_eq!(queued(null_c), Err(einval));
    assert_eq!(fileno(null_c), einval);
    assert_eq!(address(null_c, Side::Peer, 64), Err(einval));
    assert_eq!(address(null_c, Side::Local, 64), Err(einval));
    // SAFETY: NULL handles are answered with codes, per the API.
    unsafe {
        assert_eq!(
            epoll_loop_conn_set_user_data(null_c, std::ptr::dangling_mut::<c_void>()),
            einval
        );
        assert!(epoll_loop_conn_get_user_data(null_c).is_null());
        assert_eq!(epoll_loop_listener_port(null_l), einval);
        assert_eq!(epoll_loop_listener_set_limits(null_l, 100, 10), einval);
        assert_eq!(
            epoll_loop_listener_close(null_l),
            0,
            "close(NULL) is a no-op"
        );
    }

    let rec = Rec::new();
    // Declared before the loop, so it outlives it: the connection below is
    // still open when the loop is freed, and the free delivers its on_close.
    let cli = Rec::new();
    let lp = Loop::new();
    let mut out_l = std::ptr::null_mut();
    let mut out_c = std::ptr::null_mut();
    let host = c"127.0.0.1".as_ptr();
    // SAFETY: NULL loops, callbacks and out-pointers are answered with -EINVAL
    // (nothing is written); the non-NULL arguments are valid.
    unsafe {
        let null_loop = std::ptr::null_mut();
        assert_eq!(
            epoll_loop_tcp_listen(null_loop, host, 0, 0, &CBS, rec.ud(), &mut out_l),
            einval
        );
        assert_eq!(
            epoll_loop_tcp_listen(lp.ptr(), host, 0, 0, std::ptr::null(), rec.ud(), &mut out_l),
            einval
        );
        assert_eq!(
            epoll_loop_tcp_listen(lp.ptr(), host, 0, 0, &CBS, rec.ud(), std::ptr::null_mut()),
            einval
        );
        assert_eq!(
            epoll_loop_tcp_connect(null_loop, host, 9, &CBS, rec.ud(), &mut out_c),
            einval
        );
        assert_eq!(
            epoll_loop_tcp_connect(lp.ptr(), host, 9, std::ptr::null(), rec.ud(), &mut out_c),
            einval
        );
        assert_eq!(
            epoll_loop_tcp_connect(lp.ptr(), host, 9, &CBS, rec.ud(), std::ptr::null_mut()),
            einval
        );
        let bad_utf8 = c"\xff\xfe".as_ptr();
        assert_eq!(
            epoll_loop_tcp_connect(lp.ptr(), bad_utf8, 9, &CBS, rec.ud(), &mut out_c),
            einval
        );
    }
    assert!(
        out_l.is_null() && out_c.is_null(),
        "out-pointers written only on success"
    );

    // On a live connection: NULL buffer, bad limits, NULL out-pointer.
    let l = lp.listen(&rec);
    let c = lp.connect(l.port(), &cli);
    assert_eq!(write(c, b""), 0, "len 0 is a no-op");
    // SAFETY: a live handle; a NULL buffer with len > 0 is answered with -EINVAL.
    assert_eq!(
        unsafe { epoll_loop_conn_write(c, std::ptr::null(), 5) },
        einval
    );
    assert_eq!(
        set_limits(c, 100, 100),
        einval,
        "low_water must be below max_queue"
    );
    assert_eq!(set_limits(c, 0, 0), einval);
    assert_eq!(set_limits(c, 1 << 33, 10), einval, "above 4 GiB");
    // SAFETY: a live handle and a NULL out-pointer (answered with -EINVAL).
    assert_eq!(
        unsafe { epoll_loop_conn_get_queued(c, std::ptr::null_mut()) },
        einval
    );
    // SAFETY: a live listener.
    unsafe {
        assert_eq!(epoll_loop_listener_set_limits(l.0, 10, 10), einval);
        assert_eq!(epoll_loop_listener_set_limits(l.0, 0, 0), einval);
    }
    assert!(!cli.closed());
}

/// Between "closed" and "reported": after `_abort`, the connection is closed
/// but `on_close` comes later, from the loop. Every call on the handle then
/// answers -EPIPE, both outside a callback and inside one (where the library
/// still holds the connection while its callback runs).
#[test]
fn closed_but_not_yet_reported_answers_epipe() {
    let srv = Rec::with_hook(|r, c, ev| {
        if ev != Ev::Data(3) {
            return;
        }
        let epipe = -libc::EPIPE;
        let closes = r.close_codes().len();
        r.expect_rc("abort", abort(c), 0);
        r.check(r.close_codes().len() == closes, || {
            "on_close ran inside abort".into()
        });
        r.expect_rc(
            "write after abort (inside a callback)",
            write(c, b"x"),
            epipe,
        );
        r.expect_rc("close after abort (inside a callback)", close(c), epipe);
        r.expect_rc(
            "shutdown after abort (inside a callback)",
            shutdown(c),
            epipe,
        );
        r.expect_rc("abort after abort (inside a callback)", abort(c), epipe);
        r.expect_rc(
            "set_timeout after abort (inside a callback)",
            set_timeout(c, 5),
            epipe,
        );
        r.expect_rc("pause after abort (inside a callback)", pause(c), epipe);
        r.expect_rc("resume after abort (inside a callback)", resume(c), epipe);
        r.expect_rc(
            "set_limits after abort (inside a callback)",
            set_limits(c, 100, 10),
            epipe,
        );
        r.expect_rc(
            "set_half_open after abort (inside a callback)",
            set_half_open(c, true),
            epipe,
        );
        r.check(queued(c) == Err(epipe), || {
            format!(
                "get_queued after abort (inside a callback): {:?}",
                queued(c)
            )
        });
        r.expect_rc("fileno after abort (inside a callback)", fileno(c), epipe);
        r.check(address(c, Side::Peer, 64) == Err(epipe), || {
            format!(
                "peer_address after abort (inside a callback): {:?}",
                address(c, Side::Peer, 64)
            )
        });
    });
    let cli = Rec::new();
    let lp = Loop::new();
    let l = lp.listen(&srv);
    let c = lp.connect(l.port(), &cli);
    lp.poll_until("client open", WAIT, || cli.opened());

    // Outside a callback: the client's own connection.
    let epipe = -libc::EPIPE;
    assert_eq!(close(c), 0);
    assert!(!cli.closed(), "on_close never runs inside _close");
    assert_eq!(write(c, b"x"), epipe, "write while closing");
    assert_eq!(close(c), epipe, "close while closing");
    assert_eq!(shutdown(c), epipe, "shutdown while closing");
    assert_eq!(set_timeout(c, 5), epipe, "set_timeout while closing");
    lp.poll_until("client closed", WAIT, || cli.closed());

    // Inside a callback: the server aborts its side in on_data (see the hook).
    let cli2 = Rec::new();
    let c2 = lp.connect(l.port(), &cli2);
    assert_eq!(write(c2, b"abc"), 0);
    lp.poll_until("both closed", WAIT, || {
        cli2.closed() && srv.count(|e| matches!(e, Ev::Close(_))) == 2
    });
    let problems = srv.problems.borrow().clone();
    assert!(problems.is_empty(), "server side: {problems:#?}");
    assert_eq!(cli.close_codes(), vec![0]);
    assert_eq!(cli2.close_codes(), vec![-libc::ECONNRESET]);
    assert_eq!(
        srv.close_codes(),
        vec![0, -libc::ECONNABORTED],
        "server: {:?}",
        srv.events()
    );
    cli.assert_lifecycle("client");
    cli2.assert_lifecycle("client 2");
}

/// `_close` right after `_connect`, with a request written before `on_open`:
/// the documented contract ("writes made before `on_open` are queued and sent
/// once it is open"; `_close` "sends what is queued, then closes") means the
/// peer gets the request, then EOF; the client sees `on_open` (the connect
/// did complete), then `on_close(0)`. With nothing queued the close is at once
/// (`on_close(0)`, no `on_open`); a refused connect still reports its error.
/// (`_shutdown` while connecting already works that way, see
/// `shutdown_default_mode_the_server_flushes_then_closes`.)
#[test]
fn close_while_connecting_still_sends_what_was_written() {
    let cli = Rec::new();
    let (sl, addr) = std_listener();
    let lp = Loop::new();
    let c = lp.connect(addr.port(), &cli);
    assert_eq!(write(c, b"request written before on_open"), 0);
    assert_eq!(close(c), 0);
    assert_eq!(write(c, b"x"), -libc::EPIPE, "write after close");
    let (mut peer, _) = sl.accept().unwrap();
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let reader = thread::spawn(move || {
        let mut v = Vec::new();
        peer.read_to_end(&mut v).map(|_| v)
    });
    lp.poll_until("on_close", WAIT, || cli.closed());
    lp.poll_for(Duration::from_millis(50));
    let got = reader.join().unwrap();
    println!(
        "close while connecting: client events {:?}, peer read {:?}",
        cli.shape(),
        got.as_ref()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    );
    cli.assert_lifecycle("client");
    assert_eq!(cli.close_codes(), vec![0]);
    assert_eq!(
        got.map_err(|e| e.kind()),
        Ok(b"request written before on_open".to_vec()),
        "the peer gets the queued request, then EOF"
    );
    assert_eq!(cli.shape(), vec![Ev::Open, Ev::Close(0)]);

    // Nothing queued: closed at once, without on_open.
    let cli2 = Rec::new();
    let c2 = lp.connect(addr.port(), &cli2);
    assert_eq!(close(c2), 0);
    lp.poll_until("on_close", WAIT, || cli2.closed());
    lp.poll_for(Duration::from_millis(50));
    assert_eq!(cli2.events(), vec![Ev::Close(0)]);
    drop(sl.accept().unwrap());

    // Queued, then refused: the connect's error, no on_open.
    let cli3 = Rec::new();
    let c3 = lp.connect(closed_port(), &cli3);
    assert_eq!(write(c3, b"never delivered"), 0);
    assert_eq!(close(c3), 0);
    lp.poll_until("on_close", WAIT, || cli3.closed());
    assert_eq!(cli3.events(), vec![Ev::Close(-libc::ECONNREFUSED)]);
    cli3.assert_lifecycle("client 3");
}

// ---------------------------------------------------------------------------
// Writing, backpressure, pause/resume, abort
// ---------------------------------------------------------------------------

/// With a 64 KiB cap and a peer that does not read: writes go straight to the
/// socket, then queue, then fail whole with -ENOBUFS (nothing of a refused
/// write is queued); a write that fits exactly is taken. When the peer reads,
/// `on_drain` runs once, with the queue at or below the 16 KiB low-water
/// mark, and the peer gets every accepted byte in order.
#[test]
fn write_is_all_or_nothing_enobufs_past_the_cap_and_drain_at_low_water() {
    const CAP: usize = 64 * 1024;
    const LOW: usize = 16 * 1024;
    const CHUNK: usize = 8 * 1024;
    let queued_at_drain = std::rc::Rc::new(Cell::new(usize::MAX));
    let q = queued_at_drain.clone();
    let cli = Rec::with_hook(move |r, c, ev| {
        if ev == Ev::Drain {
            let n = queued(c);
            r.check(n.is_ok(), || format!("get_queued in on_drain: {n:?}"));
            q.set(n.unwrap_or(usize::MAX));
        }
    });
    let (sl, addr) = std_listener();
    let lp = Loop::new();
    let c = lp.connect(addr.port(), &cli);
    lp.poll_until("open", WAIT, || cli.opened());
    let (mut peer, _) = sl.accept().unwrap();
    set_sndbuf(fileno(c), 16 * 1024);
    assert_eq!(set_limits(c, CAP, LOW), 0);

    let mut sent = 0usize;
    let mut direct = None;
    loop {
        let chunk = pattern(7, sent, CHUNK);
        match write(c, &chunk) {
            0 => sent += CHUNK,
            rc if rc == -libc::ENOBUFS => break,
            rc => panic!("write: {rc}"),
        }
        if direct.is_none() && queued(c).unwrap() > 0 {
            direct = Some(sent);
        }
        assert!(sent < 64 << 20, "the cap never applied");
    }
    let q0 = queued(c).unwrap();
    println!(
        "socket took {} bytes directly; {sent} accepted in all; {q0} queued at -ENOBUFS (cap {CAP})",
        direct.unwrap_or(0)
    );
    assert!(
        q0 <= CAP && q0 + CHUNK > CAP,
        "refused only past the cap: queued {q0}"
    );
    assert_eq!(write(c, &pattern(7, sent, CHUNK)), -libc::ENOBUFS);
    assert_eq!(queued(c).unwrap(), q0, "a refused write queues nothing");
    // Exactly up to the cap is fine; one byte more is not.
    let rest = CAP - q0;
    if rest > 0 {
        assert_eq!(write(c, &pattern(7, sent, rest)), 0);
        sent += rest;
    }
    assert_eq!(queued(c).unwrap(), CAP);
    assert_eq!(write(c, &pattern(7, sent, 1)), -libc::ENOBUFS);
    assert_eq!(cli.count(|e| *e == Ev::Drain), 0);

    let total = sent;
    let reader = thread::spawn(move || {
        peer.set_read_timeout(Some(WAIT)).unwrap();
        let mut got = vec![0u8; total];
        peer.read_exact(&mut got).map(|()| (peer, got))
    });
    lp.poll_until("queue empty", WAIT, || queued(c) == Ok(0));
    let (mut peer, got) = reader.join().unwrap().expect("peer read");
    assert!(
        got == pattern(7, 0, total),
        "the peer got the accepted bytes in order"
    );
    assert_eq!(cli.count(|e| *e == Ev::Drain), 1, "{:?}", cli.shape());
    let at_drain = queued_at_drain.get();
    println!("on_drain ran with {at_drain} bytes queued (low-water mark {LOW})");
    assert!(at_drain <= LOW);

    // A write larger than the cap can never be queued: it fails whole even on an
    // empty queue (and no on_drain will follow).
    let big = pattern(8, 0, CAP + 1);
    let rc = write(c, &big);
    println!(
        "a {}-byte write with an empty queue and a {CAP}-byte cap: {rc}",
        big.len()
    );
    assert!(rc < 0 && queued(c) == Ok(0));

    assert_eq!(close(c), 0);
    lp.poll_until("closed", WAIT, || cli.closed());
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "nothing after the accepted bytes");
    cli.assert_lifecycle("client");
    assert_eq!(cli.close_codes(), vec![0]);
}

/// A producer on the loop, as the header tells C programs to write one: it
/// writes `chunk`-byte pieces of `pattern(seed, ..)` until `-ENOBUFS` and
/// resumes only from `on_drain`; after `total` bytes it closes.
struct Producer {
    chunk: usize,
    total: usize,
    seed: u64,
    low: usize,
    sent: Cell<usize>,
    /// The next piece (kept across refusals).
    next: RefCell<Vec<u8>>,
    waiting: Cell<bool>,
    refusals: Cell<usize>,
    /// Refusals with the queue at or below the low-water mark: the case in
    /// which `on_drain` never came (rare now: `on_drain` waits until the
    /// refused write fits, so only a write not made from `on_drain` meets it).
    low_refusals: Cell<usize>,
    /// `on_drain`s while not waiting, before the close.
    spurious_drains: Cell<usize>,
    /// `on_drain`s whose first write was refused again (the writer would spin).
    futile_drains: Cell<usize>,
    last_drain: Cell<Instant>,
    /// Set at the first refusal: the peer starts reading only then.
    refused_once: std::sync::Arc<AtomicBool>,
}

impl Producer {
    fn new(chunk: usize, total: usize, seed: u64, low: usize) -> Producer {
        Producer {
            chunk,
            total,
            seed,
            low,
            sent: Cell::new(0),
            next: RefCell::new(Vec::new()),
            waiting: Cell::new(false),
            refusals: Cell::new(0),
            low_refusals: Cell::new(0),
            spurious_drains: Cell::new(0),
            futile_drains: Cell::new(0),
            last_drain: Cell::new(Instant::now()),
            refused_once: Default::default(),
        }
    }

    fn run(&self, r: &Rec, c: *mut epoll_loop_conn) {
        let mut first = self.waiting.replace(false);
        while self.sent.get() < self.total {
            let mut next = self.next.borrow_mut();
            if next.is_empty() {
                let n = self.chunk.min(self.total - self.sent.get());
                *next = pattern(self.seed, self.sent.get(), n);
            }
            match write(c, &next) {
                0 => {
                    self.sent.set(self.sent.get() + next.len());
                    next.clear();
                    first = false;
                }
                rc if rc == -libc::ENOBUFS => {
                    if first {
                        self.futile_drains.set(self.futile_drains.get() + 1);
                    }
                    self.refusals.set(self.refusals.get() + 1);
                    self.refused_once.store(true, Ordering::Release);
                    if queued(c).is_ok_and(|q| q <= self.low) {
                        self.low_refusals.set(self.low_refusals.get() + 1);
                    }
                    self.waiting.set(true);
                    return;
                }
                rc => {
                    r.check(false, || format!("producer write: {rc}"));
                    return;
                }
            }
        }
        r.expect_rc("close after the last write", close(c), 0);
    }
}

/// What `stream_through_slow_peer` saw.
struct Transfer {
    refusals: usize,
    low_refusals: usize,
    drains: usize,
    elapsed: Duration,
}

impl std::fmt::Display for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} refusals ({} with the queue at or below low water), {} on_drain, {:?}",
            self.refusals, self.low_refusals, self.drains, self.elapsed
        )
    }
}

/// Streams `total` bytes in `chunk`-byte writes from a producer on the loop
/// (limits `cap`/`low`, or the defaults with `None`) to a peer thread that
/// starts reading once the producer was first refused (or after 30 s: then
/// the test fails for lack of refusals), then reads 32 KiB at a time with a 1 ms pause
/// after each read (small socket
/// buffers on both ends, so the queue fills and `-ENOBUFS` comes often).
/// Fails if the producer waits for an `on_drain` that does not come within
/// 10 s, if an `on_drain` comes before the refused write fits (the producer
/// would spin), if the peer's bytes differ from what was written, or if the
/// close is not `on_close(0)`. First, on the open connection with its queue empty, a
/// write of `cap + 1` bytes is `-EMSGSIZE` and is not followed by `on_drain`.
fn stream_through_slow_peer(
    chunk: usize,
    total: usize,
    limits: Option<(usize, usize)>,
) -> Transfer {
    let (cap, low) = limits.unwrap_or((1 << 20, 64 << 10));
    let seed = 0x5eed ^ chunk as u64;
    let p = std::rc::Rc::new(Producer::new(chunk, total, seed, low));
    let pp = p.clone();
    let cli = Rec::with_hook(move |r, c, ev| match ev {
        Ev::Open => {
            if let Some((cap, low)) = limits {
                r.expect_rc("set_limits", set_limits(c, cap, low), 0);
            }
            set_buf(fileno(c), libc::SO_SNDBUF, 32 * 1024);
            let big = vec![0u8; cap + 1];
            r.expect_rc("write of cap + 1 bytes", write(c, &big), -libc::EMSGSIZE);
            r.check(queued(c) == Ok(0), || "EMSGSIZE queued something".into());
            pp.run(r, c);
        }
        Ev::Drain => {
            if pp.waiting.get() {
                pp.last_drain.set(Instant::now());
                pp.run(r, c);
            } else if pp.sent.get() < pp.total {
                pp.spurious_drains.set(pp.spurious_drains.get() + 1);
            }
        }
        _ => {}
    });
    let (sl, addr) = std_listener();
    set_buf(sl.as_raw_fd(), libc::SO_RCVBUF, 32 * 1024);
    let refused_once = p.refused_once.clone();
    let reader = thread::spawn(move || -> Result<usize, String> {
        let (mut peer, _) = sl.accept().map_err(|e| format!("accept: {e}"))?;
        peer.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        // Only once the queue is full, so that even a slow producer (1-byte
        // writes, a sanitizer build) meets -ENOBUFS.
        let wait = Instant::now() + Duration::from_secs(30);
        while !refused_once.load(Ordering::Acquire) && Instant::now() < wait {
            thread::sleep(Duration::from_millis(5));
        }
        let mut buf = vec![0u8; 32 * 1024];
        let mut got = 0usize;
        loop {
            let n = peer
                .read(&mut buf)
                .map_err(|e| format!("read at {got}: {e}"))?;
            if n == 0 {
                return Ok(got);
            }
            if buf[..n] != pattern(seed, got, n)[..] {
                return Err(format!("bytes differ in {got}..{}", got + n));
            }
            got += n;
            thread::sleep(Duration::from_millis(1));
        }
    });
    let start = Instant::now();
    let lp = Loop::new();
    lp.connect(addr.port(), &cli);
    let deadline = start + Duration::from_secs(300);
    while !cli.closed() {
        let now = Instant::now();
        assert!(
            !p.waiting.get() || now - p.last_drain.get() < Duration::from_secs(10),
            "chunk {chunk}: stalled: -ENOBUFS with {:?} queued (low water {low}) and no \
             on_drain for 10 s; {} of {total} bytes written",
            queued(cli.conn.get()),
            p.sent.get()
        );
        assert!(now < deadline, "chunk {chunk}: transfer not done in 300 s");
        lp.poll_ok(20);
    }
    let elapsed = start.elapsed();
    let got = reader.join().expect("reader thread");
    cli.assert_lifecycle(&format!("chunk {chunk}"));
    assert_eq!(got, Ok(total), "chunk {chunk}: the peer's bytes");
    assert_eq!(p.sent.get(), total);
    assert_eq!(cli.close_codes(), vec![0], "chunk {chunk}");
    assert_eq!(
        p.spurious_drains.get(),
        0,
        "chunk {chunk}: on_drain without a wait"
    );
    assert_eq!(
        p.futile_drains.get(),
        0,
        "chunk {chunk}: on_drain before the refused write fit"
    );
    Transfer {
        refusals: p.refusals.get(),
        low_refusals: p.low_refusals.get(),
        drains: cli.count(|e| *e == Ev::Drain),
        elapsed,
    }
}

/// Every chunk size from 1 byte to the cap (cap 100 000, low water 30 000):
/// a producer that stops at `-ENOBUFS` and resumes only from `on_drain`
/// finishes, and the peer gets every byte; each `on_drain` comes when the
/// refused write fits. Chunks larger than cap - low water (70 000) are refused
/// with the queue at or below low water, where `on_drain` used to never come;
/// cap + 1 is `-EMSGSIZE` (no `on_drain`).
#[test]
fn enobufs_is_always_followed_by_on_drain_for_every_chunk_size() {
    const CAP: usize = 100_000;
    const LOW: usize = 30_000;
    let sizes = [
        1,
        2,
        1000,
        LOW,
        CAP - LOW - 1,
        CAP - LOW,
        CAP - LOW + 1,
        CAP - 1,
        CAP,
    ];
    for chunk in sizes {
        let total = (2 << 20).max(20 * chunk);
        let t = stream_through_slow_peer(chunk, total, Some((CAP, LOW)));
        println!("chunk {chunk}: {total} bytes, {t}");
        assert!(t.refusals > 0, "chunk {chunk}: the queue never filled");
        assert!(t.drains >= t.refusals, "chunk {chunk}: {t}");
    }
}

/// After `epoll_loop_conn_close` every write is `-EPIPE`, so a writer that
/// was refused with `-ENOBUFS` just before gets no `on_drain` while the queue
/// is flushed (small socket buffers and a slow peer: the queue passes its
/// low-water mark many times on the way down); every byte still arrives.
#[test]
fn no_on_drain_once_closing() {
    let cli = Rec::with_hook(|r, c, ev| {
        if ev == Ev::Open {
            r.expect_rc("set_limits", set_limits(c, 256 * 1024, 200 * 1024), 0);
            set_buf(fileno(c), libc::SO_SNDBUF, 16 * 1024);
        }
    });
    let (sl, addr) = std_listener();
    set_buf(sl.as_raw_fd(), libc::SO_RCVBUF, 16 * 1024);
    let lp = Loop::new();
    let c = lp.connect(addr.port(), &cli);
    lp.poll_until("open", WAIT, || cli.opened());
    let (mut peer, _) = sl.accept().unwrap();
    let chunk = vec![5u8; 16 * 1024];
    let mut accepted = 0usize;
    while write(c, &chunk) == 0 {
        accepted += chunk.len();
        assert!(accepted < 64 << 20, "the cap never applied");
    }
    assert!(
        queued(c).unwrap() > 200 * 1024,
        "refused with the queue above low water"
    );
    assert_eq!(close(c), 0);
    let reader = thread::spawn(move || {
        peer.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let mut got = 0usize;
        loop {
            match peer.read(&mut buf).unwrap() {
                0 => return got,
                n => got += n,
            }
            thread::sleep(Duration::from_micros(200));
        }
    });
    lp.poll_until("close", Duration::from_secs(60), || cli.closed());
    assert_eq!(
        reader.join().unwrap(),
        accepted,
        "every accepted byte arrived"
    );
    assert_eq!(cli.count(|e| *e == Ev::Drain), 0, "{:?}", cli.shape());
    assert!(cli.events().contains(&Ev::Close(0)), "{:?}", cli.shape());
}

/// 50 MiB in 1 000 000-byte writes with the default limits (1 MiB cap, 64 KiB
/// low water: a 1 000 000-byte write is refused even with the queue at low
/// water) through a peer that reads slowly: the producer, which resumes only
/// from `on_drain`, finishes, and the peer's bytes are exact.
#[test]
fn fifty_mib_in_megabyte_writes_to_a_slow_reader_never_stall() {
    let t = stream_through_slow_peer(1_000_000, 50 << 20, None);
    println!("50 MiB in 1 000 000-byte writes: {t}");
    assert!(t.refusals > 0, "the queue never filled: {t}");
    assert!(t.drains >= t.refusals, "{t}");
}

/// A `len` far beyond any cap, up to `SIZE_MAX` and just past `SSIZE_MAX`,
/// is `-EMSGSIZE` before the library looks at `buf` (it used to make a slice
/// of it first: undefined behaviour, an abort in debug builds); nothing is
/// queued and the connection goes on working.
#[test]
fn write_of_a_huge_len_is_emsgsize_without_touching_buf() {
    let cli = Rec::new();
    let (sl, addr) = std_listener();
    let lp = Loop::new();
    let c = lp.connect(addr.port(), &cli);
    lp.poll_until("open", WAIT, || cli.opened());
    let (mut peer, _) = sl.accept().unwrap();
    let buf = [7u8; 16];
    for len in [
        usize::MAX,
        isize::MAX as usize + 1,
        isize::MAX as usize,
        u32::MAX as usize + 1,
        (1 << 20) + 1,
    ] {
        // SAFETY: `buf` is readable for 16 bytes only and `len` says more on
        // purpose: the library must refuse the length before reading anything.
        let rc = unsafe { epoll_loop_conn_write(c, buf.as_ptr().cast(), len) };
        assert_eq!(rc, -libc::EMSGSIZE, "len {len:#x}");
        assert_eq!(queued(c), Ok(0), "len {len:#x}: nothing queued");
    }
    assert_eq!(write(c, b"still usable"), 0);
    let mut got = [0u8; 12];
    peer.set_read_timeout(Some(WAIT)).unwrap();
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still usable");
    assert_eq!(close(c), 0);
    drop(peer);
    lp.poll_until("closed", WAIT, || cli.closed());
    cli.assert_lifecycle("client");
    assert_eq!(cli.close_codes(), vec![0]);
}

/// A paused connection gets no `on_data`, and TCP pushes back on the peer (its
/// non-blocking writes end in EAGAIN); after `_resume` everything arrives in
/// order. Pause and resume are idempotent.
#[test]
fn pause_stops_on_data_and_resume_delivers_everything() {
    let srv = Rec::with_hook(|r, c, ev| {
        if ev == Ev::Open {
            r.expect_rc("pause in on_open", pause(c), 0);
            r.expect_rc("pause twice", pause(c), 0);
        }
    });
    let lp = Loop::new();
    let l = lp.listen(&srv);
    let mut peer = TcpStream::connect(("127.0.0.1", l.port())).unwrap();
    lp.poll_until("server open", WAIT, || srv.opened());
    let c = srv.conn.get();
    set_sndbuf(peer.as_raw_fd(), 16 * 1024);
    peer.set_nonblocking(true).unwrap();
    let mut sent = 0usize;
    let t0 = Instant::now();
    loop {
        let chunk = pattern(3, sent, 4096);
        match peer.write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // The loop may still be reading nothing; give it a chance to
                // (wrongly) deliver, then try once more.
                lp.poll_for(Duration::from_millis(20));
                match peer.write(&chunk) {
                    Ok(n) => sent += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => panic!("{e}"),
                }
            }
            Err(e) => panic!("{e}"),
        }
        assert!(sent < 256 << 20, "no backpressure: {sent} bytes written");
        assert!(t0.elapsed() < WAIT, "no backpressure within {WAIT:?}");
    }
    lp.poll_for(Duration::from_millis(100));
    println!("paused: the peer could write {sent} bytes before EAGAIN");
    assert_eq!(
        srv.count(|e| matches!(e, Ev::Data(_))),
        0,
        "on_data while paused"
    );
    assert_eq!(resume(c), 0);
    assert_eq!(resume(c), 0, "resume twice");
    lp.poll_until("all data", WAIT, || srv.data.borrow().len() == sent);
    assert!(srv.data() == pattern(3, 0, sent), "byte-exact after resume");

    // Pause again mid-stream: nothing more arrives until resume.
    assert_eq!(pause(c), 0);
    peer.set_nonblocking(false).unwrap();
    peer.write_all(b"more").unwrap();
    lp.poll_for(Duration::from_millis(100));
    assert_eq!(srv.data.borrow().len(), sent);
    assert_eq!(resume(c), 0);
    lp.poll_until("more", WAIT, || srv.data.borrow().len() == sent + 4);
    drop(peer);
    lp.poll_until("closed", WAIT, || srv.closed());
    srv.assert_lifecycle("server");
    assert_eq!(srv.close_codes(), vec![0]);
}

/// A paused connection whose both directions are shut (the peer sent data and
/// FIN, and we shut down our side: the socket reports EPOLLHUP) still holds
/// unread bytes: they must be delivered after `_resume`, then EOF closes it.
/// (A proxy meets this when it relays a half-close while the reader is paused
/// for backpressure.)
#[test]
fn paused_connection_keeps_unread_data_when_both_sides_have_shut_down() {
    let cli = Rec::with_hook(|r, c, ev| {
        if ev == Ev::Open {
            r.expect_rc("pause", pause(c), 0);
        }
    });
    let (sl, addr) = std_listener();
    let lp = Loop::new();
    let c = lp.connect(addr.port(), &cli);
    lp.poll_until("open", WAIT, || cli.opened());
    let (mut peer, _) = sl.accept().unwrap();
    peer.write_all(b"sent before the peer's FIN").unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    assert_eq!(shutdown(c), 0);
    lp.poll_for(Duration::from_millis(50));
    // Parked, not spinning: EPOLLHUP cannot be masked out, yet the loop must not
    // be woken by it over and over.
    let before = lp.stats();
    lp.poll_for(Duration::from_millis(200));
    let after = lp.stats();
    println!(
        "paused with EPOLLHUP pending: events {:?}; {} fd events and {} iterations in 200 ms",
        cli.shape(),
        after.events - before.events,
        after.iterations - before.iterations
    );
    assert!(
        after.events - before.events <= 2,
        "busy loop on EPOLLHUP while paused: {} events in 200 ms",
        after.events - before.events
    );
    assert!(
        !cli.closed(),
        "closed while paused, dropping the unread bytes: {:?}",
        cli.events()
    );
    assert_eq!(resume(c), 0);
    lp.poll_until("closed", WAIT, || cli.closed());
    cli.assert_lifecycle("client");
    assert_eq!(cli.data(), b"sent before the peer's FIN");
    assert_eq!(cli.close_codes(), vec![0]);
}

/// `_abort`: `on_close(-ECONNABORTED)` from the loop (not inside the call),
/// queued bytes dropped, and the peer sees a reset.
#[test]
fn abort_closes_with_econnaborted_and_the_peer_sees_a_reset() {
    let cli = Rec::new();
    let (sl, addr) = std_listener();
    let lp = Loop::new();
    let c = lp.connect(addr.port(), &cli);
    lp.poll_until("open", WAIT, || cli.opened());
    let (mut peer, _) = sl.accept().unwrap();
    peer.write_all(b"unread by the library").unwrap();
    lp.poll_until("data", WAIT, || !cli.data.borrow().is_empty());
    assert_eq!(abort(c), 0);
    assert!(!cli.closed(), "on_close never runs inside _abort");
    lp.poll_until("on_close", WAIT, || cli.closed());
    cli.assert_lifecycle("client");
    assert_eq!(cli.close_codes(), vec![-libc::ECONNABORTED]);
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 16];
    let r = peer.read(&mut buf);
    println!("peer read after abort: {r:?}");
    assert_eq!(
        r.map_err(|e| e.kind()),
        Err(ErrorKind::ConnectionReset),
        "the peer sees a reset"
    );
}

/// An idle connection with a timeout closes with `on_close(-ETIMEDOUT)`; traffic
/// keeps it open.
#[test]
fn idle_timeout_closes_with_etimedout_and_traffic_defers_it() {
    let cli = Rec::new();
    let (sl, addr) = std_listener();
    let lp = Loop::new();
    let c = lp.connect(addr.port(), &cli);
    lp.poll_until("open", WAIT, || cli.opened());
    let (mut peer, _) = sl.accept().unwrap();
    let t0 = Instant::now();
    assert_eq!(set_timeout(c, 300), 0);
    // Traffic every 100 ms for 600 ms keeps it alive.
    for i in 0..6 {
        peer.write_all(&[i]).unwrap();
        lp.poll_for(Duration::from_millis(100));
    }
    assert!(!cli.closed(), "closed despite traffic: {:?}", cli.events());
    lp.poll_until("timeout", WAIT, || cli.closed());
    let closed = cli.closed_at.get().unwrap();
    let idle = closed - cli.data_at.get().unwrap();
    println!(
        "idle timeout 300 ms: closed {idle:?} after the last read ({:?} after set_timeout)",
        closed - t0
    );
    assert!(
        idle >= Duration::from_millis(295) && idle < Duration::from_millis(3000),
        "closed {idle:?} after the last read"
    );
    cli.assert_lifecycle("client");
    assert_eq!(cli.close_codes(), vec![-libc::ETIMEDOUT]);
    assert_eq!(cli.data(), vec![0, 1, 2, 3, 4, 5]);
}

// ---------------------------------------------------------------------------
// Close timeout
// ---------------------------------------------------------------------------

/// A connection from the loop to a peer that never reads (16 KiB socket
/// buffers on both ends), with at least 1 MiB queued under an 8 MiB cap.
/// Returns the handle, the peer's socket and the bytes written (stream 11).
fn stuck_peer(lp: &Loop, cli: &Rec) -> (*mut epoll_loop_conn, TcpStream, usize) {
    let (sl, addr) = std_listener();
    set_buf(sl.as_raw_fd(), libc::SO_RCVBUF, 16 * 1024);
    let c = lp.connect(addr.port(), cli);
    lp.poll_until("open", WAIT, || cli.opened());
    let (peer, _) = sl.accept().unwrap();
    set_sndbuf(fileno(c), 16 * 1024);
    assert_eq!(set_limits(c, 8 << 20, 1 << 20), 0);
    let mut sent = 0;
    while queued(c).unwrap() < 1 << 20 {
        assert_eq!(write(c, &pattern(11, sent, 256 * 1024)), 0);
        sent += 256 * 1024;
    }
    (c, peer, sent)
}

/// Reads until EOF or an error: the bytes, and the error if any.
fn read_all(peer: &mut TcpStream) -> (Vec<u8>, Option<ErrorKind>) {
    peer.set_read_timeout(Some(WAIT)).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match peer.read(&mut buf) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return (got, Some(e.kind())),
        }
    }
}

/// `_close` with a large queue to a peer that never reads: by default it gives
/// up after 2 s (it used to wait forever, and a graceful shutdown with it):
/// the connection is reset and `on_close(-ETIMEDOUT)` says bytes were lost.
/// The peer sees the reset; what reached it before is exact.
#[test]
fn close_to_a_peer_that_never_reads_resets_after_2_s_with_etimedout() {
    let cli = Rec::new();
    let lp = Loop::new();
    let (c, mut peer, sent) = stuck_peer(&lp, &cli);
    let t0 = Instant::now();
    assert_eq!(close(c), 0);
    assert_eq!(set_close_timeout(c, 0), -libc::EPIPE, "closing already");
    lp.poll_until("on_close", WAIT, || cli.closed());
    let took = cli.closed_at.get().unwrap() - t0;
    println!("close with {sent} bytes written to a peer that never reads: on_close after {took:?}");
    cli.assert_lifecycle("client");
    assert_eq!(cli.close_codes(), vec![-libc::ETIMEDOUT]);
    assert!(
        took >= Duration::from_millis(1990) && took < Duration::from_secs(7),
        "default close timeout of 2 s ended the close after {took:?}"
    );
    let (got, err) = read_all(&mut peer);
    assert_eq!(
        err,
        Some(ErrorKind::ConnectionReset),
        "after {} bytes",
        got.len()
    );
    assert!(got.len() < sent);
    assert!(
        got == pattern(11, 0, got.len()),
        "the bytes that arrived are exact"
    );
}

/// `epoll_loop_conn_set_close_timeout` per connection: 300 ms and 3500 ms on
/// two connections closed at the same moment end after their own timeouts
/// (the second one outlives the 2 s default).
#[test]
fn close_timeout_is_per_connection() {
    let (fast, slow) = (Rec::new(), Rec::new());
    let lp = Loop::new();
    let (cf, _pf, _) = stuck_peer(&lp, &fast);
    let (cs, _ps, _) = stuck_peer(&lp, &slow);
    assert_eq!(set_close_timeout(cf, 300), 0);
    assert_eq!(set_close_timeout(cs, 3500), 0);
    let t0 = Instant::now();
    assert_eq!(close(cf), 0);
    assert_eq!(close(cs), 0);
    lp.poll_until("both closed", WAIT, || fast.closed() && slow.closed());
    let took_fast = fast.closed_at.get().unwrap() - t0;
    let took_slow = slow.closed_at.get().unwrap() - t0;
    println!("close timeouts 300 ms and 3500 ms: on_close after {took_fast:?} and {took_slow:?}");
    fast.assert_lifecycle("fast");
    slow.assert_lifecycle("slow");
    assert_eq!(fast.close_codes(), vec![-libc::ETIMEDOUT]);
    assert_eq!(slow.close_codes(), vec![-libc::ETIMEDOUT]);
    assert!(
        took_fast >= Duration::from_millis(295) && took_fast < Duration::from_millis(1900),
        "300 ms close timeout: {took_fast:?}"
    );
    assert!(
        took_slow >= Duration::from_millis(3490) && took_slow < Duration::from_secs(9),
        "3500 ms close timeout: {took_slow:?}"
    );
}

/// Close timeout 0 is no limit: the close to a peer that never reads is still
/// flushing after 2.5 s (past the 2 s default); `_abort` ends it.
#[test]
fn close_timeout_0_waits_until_aborted() {
    let cli = Rec::new();
    let lp = Loop::new();
    let (c, _peer, _) = stuck_peer(&lp, &cli);
    assert_eq!(set_close_timeout(c, 0), 0);
    assert_eq!(close(c), 0);
    lp.poll_for(Duration::from_millis(2500));
    assert!(
        !cli.closed(),
        "closed with no close timeout: {:?}",
        cli.events()
    );
    assert!(queued(c).unwrap() > 0, "still flushing");
    assert_eq!(abort(c), 0);
    lp.poll_until("on_close", WAIT, || cli.closed());
    cli.assert_lifecycle("client");
    assert_eq!(cli.close_codes(), vec![-libc::ECONNABORTED]);
}

/// A peer that reads everything: `_close` ends with `on_close(0)` and the
/// bytes arrive exact. Three ways: the peer closes after EOF (the close
/// completes with it); the peer reads everything but never closes (the close
/// lingers 2 s, then resets, still with 0: the peer had acknowledged every
/// byte, the reset destroyed nothing), once with a 10 s close timeout and
/// once with the default 2 s.
#[test]
fn close_to_a_peer_that_reads_everything_reports_0_and_the_bytes_are_exact() {
    for (mode, close_timeout) in [("closes", None), ("stays", Some(10_000)), ("stays", None)] {
        let cli = Rec::new();
        let (sl, addr) = std_listener();
        let lp = Loop::new();
        let c = lp.connect(addr.port(), &cli);
        lp.poll_until("open", WAIT, || cli.opened());
        let (mut peer, _) = sl.accept().unwrap();
        assert_eq!(set_limits(c, 8 << 20, 1 << 20), 0);
        if let Some(ms) = close_timeout {
            assert_eq!(set_close_timeout(c, ms), 0);
        }
        let data = pattern(12, 0, 4 << 20);
        assert_eq!(write(c, &data), 0);
        let total = data.len();
        let stays = mode == "stays";
        let reader = thread::spawn(move || {
            peer.set_read_timeout(Some(WAIT)).unwrap();
            if stays {
                let mut got = vec![0u8; total];
                peer.read_exact(&mut got).map(|()| (got, Some(peer)))
            } else {
                let (got, err) = read_all(&mut peer);
                drop(peer);
                match err {
                    None => Ok((got, None)),
                    Some(k) => Err(std::io::Error::from(k)),
                }
            }
        });
        let t0 = Instant::now();
        assert_eq!(close(c), 0);
        lp.poll_until("on_close", WAIT, || cli.closed());
        let took = cli.closed_at.get().unwrap() - t0;
        let (got, _peer) = reader.join().unwrap().expect("peer read");
        println!("peer {mode}, close timeout {close_timeout:?}: on_close after {took:?}");
        cli.assert_lifecycle(mode);
        assert_eq!(cli.close_codes(), vec![0], "peer {mode}, {close_timeout:?}");
        assert!(got == data, "peer {mode}: the bytes differ");
        if close_timeout.is_some() {
            assert!(
                took < Duration::from_millis(9500),
                "ended by lingering: {took:?}"
            );
        }
    }
}

/// Everything handed to the kernel (nothing queued), but the peer reads
/// nothing and its window is closed: the close lingers, and when the close
/// timeout ends it the reset destroys bytes the peer never acknowledged, so
/// `on_close` says `-ETIMEDOUT` (it used to say 0 after lingering).
#[test]
fn lingering_with_unacknowledged_bytes_ends_with_etimedout() {
    let cli = Rec::new();
    let (sl, addr) = std_listener();
    set_buf(sl.as_raw_fd(), libc::SO_RCVBUF, 16 * 1024);
    let lp = Loop::new();
    let c = lp.connect(addr.port(), &cli);
    lp.poll_until("open", WAIT, || cli.opened());
    let (_peer, _) = sl.accept().unwrap();
    set_sndbuf(fileno(c), 2 << 20);
    assert_eq!(set_close_timeout(c, 500), 0);
    let mut sent = 0;
    while sent < 256 * 1024 {
        assert_eq!(write(c, &pattern(13, sent, 16 * 1024)), 0);
        sent += 16 * 1024;
    }
    assert_eq!(queued(c), Ok(0), "the socket took all {sent} bytes");
    let t0 = Instant::now();
    assert_eq!(close(c), 0);
    lp.poll_until("on_close", WAIT, || cli.closed());
    let took = cli.closed_at.get().unwrap() - t0;
    println!("lingering with unacknowledged bytes: on_close after {took:?}");
    cli.assert_lifecycle("client");
    assert_eq!(cli.close_codes(), vec![-libc::ETIMEDOUT]);
    assert!(took >= Duration::from_millis(495), "{took:?}");
}

/// `_close` on a connection still connecting (to a black hole), with bytes
/// queued, is bounded by the close timeout too: `on_close(-ETIMEDOUT)`, no
/// `on_open` (it used to wait for the kernel to give up on the SYN, minutes).
#[test]
fn close_while_connecting_with_bytes_queued_is_bounded_by_the_close_timeout() {
    let (_l, addr, _fillers) = black_hole();
    let cli = Rec::new();
    let lp = Loop::new();
    let c = lp.connect(addr.port(), &cli);
    assert_eq!(write(c, b"request"), 0);
    assert_eq!(set_close_timeout(c, 400), 0);
    let t0 = Instant::now();
    assert_eq!(close(c), 0);
    lp.poll_until("on_close", WAIT, || cli.closed());
    let took = cli.closed_at.get().unwrap() - t0;
    println!("close while connecting: on_close after {took:?}");
    cli.assert_lifecycle("client");
    assert_eq!(cli.events(), vec![Ev::Close(-libc::ETIMEDOUT)]);
    assert!(
        took >= Duration::from_millis(395) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

// ---------------------------------------------------------------------------
// Half-close
// ---------------------------------------------------------------------------

/// Default mode: the client shuts down (before it is even open: after its
/// queue); the server sees data, then EOF, which is not reported as data: the
/// server flushes what it queued (a 4 MiB reply the paused client has not read
/// yet: the server waits) and then closes with `on_close(0)`. The client gets
/// the whole reply and then `on_close(0)`.
#[test]
fn shutdown_default_mode_the_server_flushes_then_closes() {
    const REPLY: usize = 4 << 20;
    let reply = pattern(11, 0, REPLY);
    let queued_after_reply = std::rc::Rc::new(Cell::new(0usize));
    let qr = queued_after_reply.clone();
    let srv = Rec::with_hook(move |r, c, ev| match ev {
        Ev::Open => {
            r.expect_rc("set_limits", set_limits(c, 8 << 20, 64 << 10), 0);
            // Small kernel buffers: the reply cannot hide in them.
            r.expect_rc(
                "SO_SNDBUF",
                set_buf(fileno(c), libc::SO_SNDBUF, 16 << 10),
                0,
            );
        }
        Ev::Data(_) if r.data.borrow().as_slice() == b"request" => {
            r.expect_rc("reply", write(c, &reply), 0);
            qr.set(queued(c).unwrap_or(0));
        }
        _ => {}
    });
    let cli = Rec::with_hook(|r, c, ev| {
        if ev == Ev::Open {
            r.expect_rc("pause", pause(c), 0);
        }
    });
    let lp = Loop::new();
    let l = lp.listen(&srv);
    let c = lp.connect(l.port(), &cli);
    assert_eq!(set_buf(fileno(c), libc::SO_RCVBUF, 16 << 10), 0);
    assert_eq!(write(c, b"request"), 0);
    assert_eq!(shutdown(c), 0, "shutdown while connecting: after the queue");
    assert_eq!(shutdown(c), 0, "shutdown twice");
    assert_eq!(write(c, b"x"), -libc::EPIPE, "write after shutdown");
    lp.poll_until("server got the request", WAIT, || {
        srv.data.borrow().len() == 7
    });
    lp.poll_for(Duration::from_millis(200));
    println!(
        "server: {} of {REPLY} reply bytes still queued when the client's EOF came",
        queued_after_reply.get()
    );
    assert!(
        queued_after_reply.get() > 0,
        "the reply should not fit in the socket"
    );
    assert!(
        !srv.closed(),
        "server closed with its reply queued: {:?}",
        srv.events()
    );
    assert_eq!(resume(c), 0);
    lp.poll_until("both closed", WAIT, || cli.closed() && srv.closed());
    srv.assert_lifecycle("server");
    cli.assert_lifecycle("client");
    // The drain: the reply's queue fell to the low-water mark while flushing.
    assert_eq!(
        srv.shape(),
        vec![Ev::Open, Ev::Data(7), Ev::Drain, Ev::Close(0)]
    );
    assert_eq!(cli.close_codes(), vec![0]);
    assert_eq!(
        cli.count(|e| *e == Ev::Eof),
        0,
        "no EOF report in default mode"
    );
    assert!(
        cli.data() == pattern(11, 0, REPLY),
        "the whole reply, byte-exact"
    );
}

/// Half-open on the server: the client's EOF arrives as `on_data(NULL, 0)`; the
/// server still writes after it (the client receives that), then its shutdown
/// completes the close on both sides. A write after one's own shutdown is -EPIPE.
#[test]
fn half_open_server_writes_after_eof_then_shutdown_completes_the_close() {
    let srv = Rec::with_hook(|r, c, ev| match ev {
        Ev::Open => r.expect_rc("set_half_open", set_half_open(c, true), 0),
        Ev::Eof => {
            r.expect_rc("write after EOF", write(c, b"answer after your EOF"), 0);
            r.expect_rc("shutdown", shutdown(c), 0);
            r.expect_rc("write after shutdown", write(c, b"x"), -libc::EPIPE);
        }
        _ => {}
    });
    let cli = Rec::new();
    let lp = Loop::new();
    let l = lp.listen(&srv);
    let c = lp.connect(l.port(), &cli);
    lp.poll_until("open", WAIT, || cli.opened());
    assert_eq!(write(c, b"question"), 0);
    assert_eq!(shutdown(c), 0);
    lp.poll_until("both closed", WAIT, || cli.closed() && srv.closed());
    srv.assert_lifecycle("server");
    cli.assert_lifecycle("client");
    assert_eq!(
        srv.shape(),
        vec![Ev::Open, Ev::Data(8), Ev::Eof, Ev::Close(0)]
    );
    assert_eq!(srv.data(), b"question");
    assert_eq!(cli.data(), b"answer after your EOF");
    assert_eq!(cli.close_codes(), vec![0]);
}

/// The other way round: the server shuts down first; the half-open client sees
/// EOF as `on_data(NULL, 0)`, keeps writing (the server, in default mode with
/// its own FIN sent, receives it), then shuts down: both close with 0.
#[test]
fn half_open_client_writes_after_the_servers_shutdown() {
    let srv = Rec::with_hook(|r, c, ev| {
        if ev == Ev::Open {
            r.expect_rc("write", write(c, b"hello, then FIN"), 0);
            r.expect_rc("shutdown", shutdown(c), 0);
        }
    });
    let cli = Rec::with_hook(|r, c, ev| match ev {
        Ev::Open => r.expect_rc("set_half_open", set_half_open(c, true), 0),
        Ev::Eof => {
            r.expect_rc("write after EOF", write(c, b"late reply"), 0);
            r.expect_rc("shutdown", shutdown(c), 0);
        }
        _ => {}
    });
    let lp = Loop::new();
    let l = lp.listen(&srv);
    lp.connect(l.port(), &cli);
    lp.poll_until("both closed", WAIT, || cli.closed() && srv.closed());
    srv.assert_lifecycle("server");
    cli.assert_lifecycle("client");
    assert_eq!(
        cli.shape(),
        vec![Ev::Open, Ev::Data(15), Ev::Eof, Ev::Close(0)]
    );
    assert_eq!(cli.data(), b"hello, then FIN");
    assert_eq!(srv.data(), b"late reply");
    assert_eq!(srv.close_codes(), vec![0]);
}

// ---------------------------------------------------------------------------
// Listener, user data, addresses
// ---------------------------------------------------------------------------

/// Accepted connections start with the listener's user data and limits; the
/// address getters report both ends (-ENOSPC for a short buffer); after `_listener_close` new clients are refused while
/// open connections live on.
#[test]
fn listener_user_data_limits_addresses_and_close() {
    let srv = Rec::with_hook(|r, c, ev| {
        if ev == Ev::Open {
            // SAFETY: a live handle inside its own callback.
            let ud = unsafe { epoll_loop_conn_get_user_data(c) };
            r.check(ud == r.ud(), || {
                "accepted connection without the listener's user data".into()
            });
        }
    });
    srv.echo.set(true);
    let cli = Rec::new();
    let lp = Loop::new();
    let mut l = lp.listen(&srv);
    let port = l.port();
    // SAFETY: a live listener.
    assert_eq!(unsafe { epoll_loop_listener_set_limits(l.0, 1000, 100) }, 0);
    let c = lp.connect(port, &cli);
    lp.poll_until("open", WAIT, || cli.opened() && srv.opened());
    let s = srv.conn.get();

    let (chost, cport) = address(c, Side::Local, 64).unwrap();
    let (shost, speer) = address(s, Side::Peer, 64).unwrap();
    assert_eq!((chost.as_str(), shost.as_str()), ("127.0.0.1", "127.0.0.1"));
    assert_eq!(speer, cport, "the server's peer is the client");
    assert_eq!(
        address(c, Side::Peer, 64).unwrap(),
        ("127.0.0.1".to_string(), port)
    );
    assert_eq!(address(s, Side::Local, 64).unwrap().1, port);
    assert_eq!(
        address(c, Side::Peer, 9),
        Err(-libc::ENOSPC),
        "9 bytes cannot hold 127.0.0.1 and NUL"
    );
    assert_eq!(address(c, Side::Peer, 10).unwrap().0, "127.0.0.1");
    // SAFETY: a live handle; NULL host and port are allowed (nothing wanted).
    assert_eq!(
        unsafe { epoll_loop_conn_peer_address(c, std::ptr::null_mut(), 0, std::ptr::null_mut()) },
        0
    );

    // The listener's limits (1000 / 100) apply to the accepted connection: with
    // the client paused, the server's writes end in -ENOBUFS at 1000 queued.
    assert_eq!(pause(c), 0);
    set_sndbuf(fileno(s), 4096);
    let mut n = 0usize;
    let t0 = Instant::now();
    while write(s, &[b'z'; 500]) == 0 {
        n += 500;
        assert!(
            n < 256 << 20 && t0.elapsed() < WAIT,
            "the listener's cap never applied"
        );
    }
    let q = queued(s).unwrap();
    println!("accepted connection: {n} bytes accepted, {q} queued at -ENOBUFS (listener cap 1000)");
    assert!(q <= 1000 && q + 500 > 1000);

    // User data can be changed.
    let other = Rec::new();
    // SAFETY: a live handle; `other` outlives the loop.
    unsafe {
        assert_eq!(epoll_loop_conn_set_user_data(c, other.ud()), 0);
        assert_eq!(epoll_loop_conn_get_user_data(c), other.ud());
        assert_eq!(epoll_loop_conn_set_user_data(c, cli.ud()), 0);
    }

    // Closing the listener: new clients are refused, the open pair lives on.
    // SAFETY: a live listener, closed once (the guard is disarmed).
    assert_eq!(unsafe { epoll_loop_listener_close(l.0) }, 0);
    l.0 = std::ptr::null_mut();
    let refused = TcpStream::connect(("127.0.0.1", port));
    assert_eq!(
        refused.map_err(|e| e.kind()).err(),
        Some(ErrorKind::ConnectionRefused)
    );
    assert_eq!(resume(c), 0);
    lp.poll_until("server's bytes at the client", WAIT, || {
        cli.data.borrow().len() == n
    });
    assert_eq!(write(c, b"still here"), 0);
    lp.poll_until("echo", WAIT, || cli.data.borrow().ends_with(b"still here"));
    assert_eq!(close(c), 0);
    lp.poll_until("both closed", WAIT, || cli.closed() && srv.closed());
    srv.assert_lifecycle("server");
    cli.assert_lifecycle("client");
    assert_eq!((cli.close_codes(), srv.close_codes()), (vec![0], vec![0]));
}

// ---------------------------------------------------------------------------
// The C program: the stream layer under the sanitizers
// ---------------------------------------------------------------------------

/// `tests/c/stream_test.c`, built once with ASan + UBSan against the `.so`.
fn stream_test_exe() -> &'static std::path::Path {
    static EXE: OnceLock<Scratch> = OnceLock::new();
    EXE.get_or_init(|| build_c_test("stream_test", true, &[]))
        .path()
}

/// The stream layer from C under ASan/UBSan/LSan: echo round trip with bytes
/// queued before `on_open`, refused connect, abort, half-open, and freeing a
/// loop with open connections and a pending `on_close` (no callback, no leak,
/// no fd left open).
#[test]
fn c_stream_test_passes_under_sanitizers() {
    let mut cmd = Command::new(stream_test_exe());
    sanitizer_env(&mut cmd);
    let o = output_within(&mut cmd, Duration::from_secs(120));
    assert_c_tests_passed("stream_test", &o, 1);
}
