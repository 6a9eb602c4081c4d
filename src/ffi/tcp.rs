//! `epoll_loop_listener` and `epoll_loop_conn`: the stream layer of the C API.
//!
//! A C connection handle is owned by its connection's handler (one per
//! connection), which the Rust [`Conn`] owns; the handle refers back to the
//! connection weakly. So the handle lives exactly as long as the connection:
//! until `on_close` has been delivered, or until the loop is freed.
//! `on_close` is delivered from a zero-delay loop timer, never from inside the
//! call that caused it (`epoll_loop_conn_close` and friends), so a handle stays
//! valid for the rest of the callback or function that closed it.

use super::event_loop::epoll_loop;
use super::guard::{Object, ObjectHeader, with_object, write_out};
use crate::echo::resolve;
use crate::event_loop::EventLoop;
use crate::sys::{Errno, socket};
use crate::tcp::{Conn, ConnHandler, Limits, Listener, TcpStats};
use std::cell::Cell;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};

/// The callbacks of a connection. Any of them may be NULL.
///
/// Every callback receives the connection and its user data (accepted
/// connections start with their listener's, outgoing ones with the one given to
/// `epoll_loop_tcp_connect`; change it with `epoll_loop_conn_set_user_data`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct epoll_loop_conn_callbacks {
    /// The connection is established: accepted, or an outgoing connect completed.
    /// Not called when a connect fails (then only `on_close` runs).
    pub on_open: Option<unsafe extern "C" fn(conn: *mut epoll_loop_conn, user_data: *mut c_void)>,
    /// `len` bytes arrived at `data` (valid only during the call). With
    /// half-open allowed (`epoll_loop_conn_set_half_open`), the peer's EOF is
    /// reported as `data == NULL, len == 0`.
    pub on_data: Option<
        unsafe extern "C" fn(
            conn: *mut epoll_loop_conn,
            data: *const u8,
            len: usize,
            user_data: *mut c_void,
        ),
    >,
    /// The write queue fell to its low-water mark after having been above it:
    /// a good moment to resume a paused producer. Also after every
    /// `epoll_loop_conn_write` refused with `-ENOBUFS`: it runs once the queue
    /// is at or below the low-water mark and the refused write fits (at most
    /// `max_queue - len` bytes queued; a chunk larger than `max_queue -
    /// low_water` is refused even at low water), from the loop, never from
    /// inside the refused write. So a producer that stops at `-ENOBUFS` and
    /// retries from here never stalls and never spins, whatever its chunk
    /// size: the retry fits (unless the limits changed meanwhile).
    /// `-EMSGSIZE` is no reason to wait: no `on_drain` follows it.
    pub on_drain: Option<unsafe extern "C" fn(conn: *mut epoll_loop_conn, user_data: *mut c_void)>,
    /// The connection is closed: `error` is 0 after a clean close or the peer's
    /// EOF, `-ECONNABORTED` after `epoll_loop_conn_abort`, `-ETIMEDOUT` after its
    /// inactivity timeout (`epoll_loop_conn_set_timeout`) or when an
    /// `epoll_loop_conn_close` could not finish within its close timeout
    /// (`epoll_loop_conn_set_close_timeout`, default 2 s: queued bytes were
    /// dropped, the peer got a reset), else the socket's `-errno`
    /// (`-ECONNREFUSED`, `-ECONNRESET`, ...). 0 after a close means every
    /// byte written was sent; the peer's kernel acknowledged them all if the
    /// close ended with a reset (see `epoll_loop_conn_close`).
    /// Called exactly once, from the loop (never from inside the call that
    /// closed it); the handle is invalid once it returns.
    pub on_close: Option<
        unsafe extern "C" fn(conn: *mut epoll_loop_conn, error: c_int, user_data: *mut c_void),
    >,
}

/// A buffered TCP connection on a loop. Opaque; made by `epoll_loop_tcp_connect`
/// or by a listener, released by the library after its `on_close`.
///
/// Lifetime: until `on_close` returns (or the loop is freed: then no callback
/// runs). Thread safety: the loop's thread only.
pub struct epoll_loop_conn {
    header: ObjectHeader,
    conn: Cell<Option<Weak<Conn>>>,
    user_data: Cell<*mut c_void>,
    r#loop: *mut epoll_loop,
}

impl Object for epoll_loop_conn {
    const MAGIC: u64 = 0x6570_6c43_6f6e_6e21; // "eplConn!"
    fn header(&self) -> &ObjectHeader {
        &self.header
    }
}

/// A listening TCP socket on a loop. Opaque; made by `epoll_loop_tcp_listen`,
/// released by `epoll_loop_listener_close`.
pub struct epoll_loop_listener {
    header: ObjectHeader,
    listener: Cell<Option<Weak<Listener>>>,
    limits: Rc<Cell<Limits>>,
    port: u16,
    r#loop: *mut epoll_loop,
}

impl Object for epoll_loop_listener {
    const MAGIC: u64 = 0x6570_6c4c_6973_746e; // "eplListn"
    fn header(&self) -> &ObjectHeader {
        &self.header
    }
}

/// One connection's handler: the C callbacks and the C handle it owns.
struct CConn {
    cbs: epoll_loop_conn_callbacks,
    handle: Box<epoll_loop_conn>,
    /// Itself, so that `on_close` can keep the handler alive until delivery.
    me: Weak<CConn>,
}

impl CConn {
    fn new(
        cbs: epoll_loop_conn_callbacks,
        lp: *mut epoll_loop,
        user_data: *mut c_void,
    ) -> Rc<CConn> {
        Rc::new_cyclic(|me| CConn {
            cbs,
            handle: Box::new(epoll_loop_conn {
                header: ObjectHeader::new(epoll_loop_conn::MAGIC),
                conn: Cell::new(None),
                user_data: Cell::new(user_data),
                r#loop: lp,
            }),
            me: me.clone(),
        })
    }

    fn ptr(&self) -> *mut epoll_loop_conn {
        std::ptr::from_ref::<epoll_loop_conn>(&self.handle).cast_mut()
    }

    fn bind(&self, conn: &Rc<Conn>) {
        self.handle.conn.set(Some(Rc::downgrade(conn)));
    }
}

impl ConnHandler for CConn {
    fn on_open(&self, _: &EventLoop, _: &Rc<Conn>) {
        if let Some(f) = self.cbs.on_open {
            // SAFETY: the caller's callback with its live handle and user data.
            unsafe { f(self.ptr(), self.handle.user_data.get()) }
        }
    }

    fn on_data(&self, _: &EventLoop, _: &Rc<Conn>, data: &[u8]) {
        if let Some(f) = self.cbs.on_data {
            // SAFETY: the caller's callback; `data` is valid for `len` bytes during the call.
            unsafe {
                f(
                    self.ptr(),
                    data.as_ptr(),
                    data.len(),
                    self.handle.user_data.get(),
                )
            }
        }
    }

    fn on_eof(&self, _: &EventLoop, _: &Rc<Conn>) {
        if let Some(f) = self.cbs.on_data {
            // SAFETY: the caller's callback; NULL/0 is the documented EOF report.
            unsafe { f(self.ptr(), std::ptr::null(), 0, self.handle.user_data.get()) }
        }
    }

    fn on_drain(&self, _: &EventLoop, _: &Rc<Conn>) {
        if let Some(f) = self.cbs.on_drain {
            // SAFETY: the caller's callback with its live handle and user data.
            unsafe { f(self.ptr(), self.handle.user_data.get()) }
        }
    }

    fn on_close(&self, lp: &EventLoop, conn: &Rc<Conn>, error: c_int) {
        // Deliver from the loop, not from inside whatever closed the connection:
        // the timer's closure keeps this handler (and so the handle) alive.
        let _ = conn;
        let Some(me) = self.me.upgrade() else { return };
        lp.timer_start(
            0,
            0,
            Rc::new(move |_: &EventLoop, _| {
                if let Some(f) = me.cbs.on_close {
                    // SAFETY: the caller's callback with its handle, still live.
                    unsafe { f(me.ptr(), error, me.handle.user_data.get()) }
                }
                me.handle.header.kill();
                me.handle.conn.set(None);
            }),
        );
    }
}

/// Binds a new connection to its C handler (the `Conn` owns the handler, which
/// owns the C handle; the handle refers back weakly).
fn adopt(conn: &Rc<Conn>, cc: &Rc<CConn>) {
    cc.bind(conn);
}

impl Drop for CConn {
    fn drop(&mut self) {
        self.handle.header.kill();
    }
}

fn read_host(host: *const c_char) -> Result<String, Errno> {
    if host.is_null() {
        return Ok("127.0.0.1".into());
    }
    // SAFETY: a non-NULL host is a NUL-terminated string, per the contract.
    let h = unsafe { CStr::from_ptr(host) };
    Ok(h.to_str().map_err(|_| Errno::EINVAL)?.to_owned())
}

fn read_callbacks(
    cbs: *const epoll_loop_conn_callbacks,
) -> Result<epoll_loop_conn_callbacks, Errno> {
    // SAFETY: NULL or a readable callbacks struct, per the contract.
    unsafe { cbs.as_ref() }.copied().ok_or(Errno::EINVAL)
}

/// Listens on `host:port` and accepts connections on the loop: each accepted
/// connection gets `*cbs` (copied) and starts with `user_data`; `on_open` runs for
/// it at once. Running out of fds (`EMFILE`) neither stops the listener nor makes
/// it spin: the pending client is accepted and closed with a spare fd.
/// `host` NULL means "127.0.0.1"; names are resolved synchronously (blocking).
/// `backlog <= 0` means `SOMAXCONN`; port 0 picks one (`epoll_loop_listener_port`).
/// Returns: 0, and the listener in `*out`.
/// Errors: `-EINVAL` (NULL `loop`/`cbs`/`out`, host not UTF-8), `-ENOENT` (host
/// not found), `-EADDRINUSE`, `-EADDRNOTAVAIL`, `-EACCES`, `-EMFILE`,
/// `-ENOTRECOVERABLE`.
/// Ownership: the caller owns `*out` and frees it with `epoll_loop_listener_close`
/// (freeing the loop first closes the socket; `_close` then only frees the handle).
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_tcp_listen(
    r#loop: *mut epoll_loop,
    host: *const c_char,
    port: u16,
    backlog: c_int,
    cbs: *const epoll_loop_conn_callbacks,
    user_data: *mut c_void,
    out: *mut *mut epoll_loop_listener,
) -> c_int {
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe {
        with_object(r#loop, |h| {
            if out.is_null() {
                return Err(Errno::EINVAL);
            }
            let cbs = read_callbacks(cbs)?;
            let addr = resolve(&read_host(host)?, port)?;
            let fd = socket::tcp_listen(&addr, backlog, false)?;
            let port = socket::local_addr(std::os::fd::AsRawFd::as_raw_fd(&fd))?.port();
            let limits = Rc::new(Cell::new(Limits::default()));
            let ctx = h.tcp_context();
            let lp = r#loop;
            let lim = limits.clone();
            let stats = ctx.stats.clone();
            let on_accept = Box::new(move |el: &EventLoop, fd| {
                let cc = CConn::new(cbs, lp, user_data);
                let Ok(conn) = Conn::open(el, fd, ctx.clone(), cc.clone(), lim.get()) else {
                    TcpStats::add(&ctx.stats.accept_errors, 1);
                    return;
                };
                TcpStats::add(&ctx.stats.accepted, 1);
                adopt(&conn, &cc);
                cc.on_open(el, &conn);
            });
            let listener = Listener::open(h.core(), fd, stats, on_accept, Box::new(|_| {}))?;
            let handle = Box::new(epoll_loop_listener {
                header: ObjectHeader::new(epoll_loop_listener::MAGIC),
                listener: Cell::new(Some(Rc::downgrade(&listener))),
                limits,
                port,
                r#loop: lp,
            });
            write_out(out, Box::into_raw(handle));
            Ok(0)
        })
    }
}

/// The port a listener is bound to.
/// Returns: the port (1..65535).
/// Errors: `-EINVAL` (NULL or closed listener).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_listener_port(l: *const epoll_loop_listener) -> c_int {
    // SAFETY: NULL or a listener from epoll_loop_tcp_listen (checked by with_object).
    unsafe { with_object(l, |h| Ok(c_int::from(h.port))) }
}

/// Sets the write-queue limits of connections accepted from now on (see
/// `epoll_loop_conn_set_limits`; defaults 1 MiB and 64 KiB).
/// Returns: 0.
/// Errors: `-EINVAL` (NULL or closed listener, `low_water >= max_queue`,
/// `max_queue` 0 or above `UINT32_MAX`, on 32-bit systems `SSIZE_MAX`).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_listener_set_limits(
    l: *mut epoll_loop_listener,
    max_queue: usize,
    low_water: usize,
) -> c_int {
    // SAFETY: NULL or a listener from epoll_loop_tcp_listen (checked by with_object).
    unsafe {
        with_object(l, |h| {
            h.limits.set(
                Limits {
                    max_queue,
                    low_water,
                }
                .validate()?,
            );
            Ok(0)
        })
    }
}

/// Stops accepting and frees the listener. Connections it accepted live on.
/// Returns: 0. `epoll_loop_listener_close(NULL)` is a no-op returning 0.
/// Errors: `-EINVAL` (not a live listener, e.g. closed twice; best effort).
/// Ownership: `l` is invalid after a 0 return.
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_listener_close(l: *mut epoll_loop_listener) -> c_int {
    if l.is_null() {
        return 0;
    }
    // SAFETY: non-NULL listener from epoll_loop_tcp_listen (checked by with_object).
    let rc = unsafe {
        with_object(l, |h| {
            if let Some(listener) = h.listener.take().and_then(|w| w.upgrade()) {
                // The loop is alive as long as its listener is.
                listener.close((*h.r#loop).core());
            }
            h.header.kill();
            Ok(0)
        })
    };
    if rc == 0 {
        // SAFETY: allocated by Box::into_raw in epoll_loop_tcp_listen; now dead.
        drop(unsafe { Box::from_raw(l) });
    }
    rc
}

/// Starts a non-blocking connect to `host:port`. `on_open` runs when the
/// connection is established; if it fails, only `on_close` runs, with the error
/// (`-ECONNREFUSED`, `-ETIMEDOUT` after `epoll_loop_conn_set_timeout`, ...).
/// Writes made before `on_open` are queued and sent once it is open.
/// `host` NULL means "127.0.0.1"; names are resolved synchronously (blocking:
/// pass a numeric address to avoid that).
/// Returns: 0, and the connection in `*out` (no callback has run yet).
/// Errors: (no callback will run) `-EINVAL` (NULL `loop`/`cbs`/`out`, host not
/// UTF-8), `-ENOENT` (host not found), `-ENETUNREACH`, `-EMFILE`,
/// `-ENOTRECOVERABLE`.
/// Ownership: the handle belongs to the library; it stays valid until `on_close`
/// returns.
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_tcp_connect(
    r#loop: *mut epoll_loop,
    host: *const c_char,
    port: u16,
    cbs: *const epoll_loop_conn_callbacks,
    user_data: *mut c_void,
    out: *mut *mut epoll_loop_conn,
) -> c_int {
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe {
        with_object(r#loop, |h| {
            if out.is_null() {
                return Err(Errno::EINVAL);
            }
            let cbs = read_callbacks(cbs)?;
            let addr: SocketAddr = resolve(&read_host(host)?, port)?;
            let cc = CConn::new(cbs, r#loop, user_data);
            let conn = Conn::connect(
                h.core(),
                &addr,
                h.tcp_context(),
                cc.clone(),
                Limits::default(),
            )?;
            adopt(&conn, &cc);
            write_out(out, cc.ptr());
            Ok(0)
        })
    }
}

/// Runs `f` on a live connection with its loop.
///
/// # Safety
/// `c` is NULL or a connection handle from this library.
unsafe fn with_conn(
    c: *mut epoll_loop_conn,
    f: impl FnOnce(&EventLoop, &Rc<Conn>, &epoll_loop_conn) -> Result<c_int, Errno>,
) -> c_int {
    // SAFETY: NULL or a connection handle (checked by with_object).
    unsafe {
        with_object(c, |h| {
            let weak = h.conn.take();
            let conn = weak.as_ref().and_then(Weak::upgrade);
            h.conn.set(weak);
            let conn = conn.ok_or(Errno(libc::EPIPE))?;
            // Closed but still held (inside one of its own callbacks, after
            // `_abort` or a failure): as closed as a connection already dropped.
            if conn.is_closed() {
                return Err(Errno(libc::EPIPE));
            }
            // The loop outlives its connections: freeing it drops them.
            let lp = (*h.r#loop).core();
            f(lp, &conn, h)
        })
    }
}

/// Queues `len` bytes from `buf` to send: what the socket takes goes out at once,
/// only the rest is queued (`EPOLLOUT` is armed only while something is queued).
/// All or nothing: either every byte is accepted or none is.
/// Returns: 0 (`len` 0 is a no-op).
/// Errors: `-EINVAL` (`c` or `buf` NULL, handle invalid), `-ENOBUFS` (the queue
/// would pass its cap: wait for `on_drain`, which is sure to follow once the
/// queue is at or below the low-water mark and this write fits; retry it
/// there), `-EMSGSIZE` (`len` alone is larger than the cap, so it could
/// never be queued: no `on_drain` follows; split it or raise the cap with
/// `epoll_loop_conn_set_limits`; any `len` up to `SIZE_MAX` gets this answer,
/// checked before `buf` is touched), `-EPIPE` (the connection is closing,
/// shut down or closed, even if `on_close` has not been delivered yet).
/// Ownership: the bytes are copied; `buf` stays the caller's.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_write(
    c: *mut epoll_loop_conn,
    buf: *const c_void,
    len: usize,
) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c, |lp, conn, _| {
            if len == 0 {
                return Ok(0);
            }
            if buf.is_null() {
                return Err(Errno::EINVAL);
            }
            // Refuse a length over the cap before it becomes a slice: one over
            // isize::MAX would be undefined behaviour.
            conn.check_write_len(len)?;
            // SAFETY: `buf` is non-NULL and readable for `len` bytes per the
            // contract, and `len <= max_queue <= isize::MAX` (checked above).
            let data = std::slice::from_raw_parts(buf.cast::<u8>(), len);
            conn.write(lp, data).map(|()| 0)
        })
    }
}

/// Stops reading from the connection (TCP then pushes back on the peer).
/// Returns: 0.
/// Errors: `-EINVAL`, `-EPIPE` (closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_pause(c: *mut epoll_loop_conn) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c, |lp, conn, _| {
            conn.pause(lp);
            Ok(0)
        })
    }
}

/// Resumes reading after `epoll_loop_conn_pause`.
/// Returns: 0.
/// Errors: `-EINVAL`, `-EPIPE` (closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_resume(c: *mut epoll_loop_conn) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c, |lp, conn, _| {
            conn.resume(lp);
            Ok(0)
        })
    }
}

/// Sends what is queued, then half-closes (FIN). Reading continues; the
/// connection closes (`on_close(0)`) when the peer's EOF arrives too.
/// Returns: 0 (also when already shut down).
/// Errors: `-EINVAL`, `-EPIPE` (closing or closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_shutdown(c: *mut epoll_loop_conn) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe { with_conn(c, |lp, conn, _| conn.shutdown(lp).map(|()| 0)) }
}

/// Stops delivering data, sends what is queued, then closes; `on_close(0)`
/// follows, from the loop. Unread input from the peer is drained and dropped
/// (lingering: we send FIN and wait for the peer's EOF) so that the close does
/// not turn into a reset that would destroy bytes still in flight; after 2 s
/// of that the connection is reset, with `on_close(0)`, as soon as the peer
/// has acknowledged every byte. On a connection still connecting, bytes
/// written so far are sent too: `on_open` runs when the connect completes,
/// then the queue goes out and the connection closes (with nothing queued it
/// closes at once, without `on_open`).
/// The whole close, from this call (connecting, flushing, lingering), is
/// bounded by the connection's close timeout, 2 s unless changed with
/// `epoll_loop_conn_set_close_timeout`: when it expires the connection is
/// reset and `on_close(-ETIMEDOUT)` reports that bytes were lost (or
/// `on_close(0)` if it was lingering and the peer had acknowledged them all).
/// So a peer that stops reading cannot hold a close, or a graceful shutdown
/// waiting for it, forever.
/// Returns: 0.
/// Errors: `-EINVAL`, `-EPIPE` (already closing or closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_close(c: *mut epoll_loop_conn) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c, |lp, conn, _| {
            if conn.is_closing() {
                return Err(Errno(libc::EPIPE));
            }
            conn.close(lp);
            Ok(0)
        })
    }
}

/// Sets the close timeout: how long an `epoll_loop_conn_close` may take in all
/// (finishing a connect, sending what is queued, lingering for the peer's EOF)
/// before the connection is reset (RST) and `on_close(-ETIMEDOUT)` follows
/// (`on_close(0)` if it was lingering and the peer had acknowledged every
/// byte). Default 2000 ms. `timeout_ms` 0 means no limit, an explicit
/// opt-in: a close then waits as long as the peer takes to read what was
/// written, forever if it never reads (`epoll_loop_conn_abort` still ends it).
/// Set it before `epoll_loop_conn_close`; the inactivity timeout
/// (`epoll_loop_conn_set_timeout`) is separate and keeps applying while the
/// queue is flushed.
/// Returns: 0.
/// Errors: `-EINVAL` (`c` NULL or invalid), `-EPIPE` (closing or closed: the
/// running close keeps the timeout it started with).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_set_close_timeout(
    c: *mut epoll_loop_conn,
    timeout_ms: u32,
) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c, |_, conn, _| {
            conn.set_close_timeout(timeout_ms).map(|()| 0)
        })
    }
}

/// Closes at once with a reset (RST), discarding what is queued;
/// `on_close(-ECONNABORTED)` follows, from the loop.
/// Returns: 0.
/// Errors: `-EINVAL`, `-EPIPE` (already closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_abort(c: *mut epoll_loop_conn) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c, |lp, conn, _| {
            if conn.is_closed() {
                return Err(Errno(libc::EPIPE));
            }
            conn.abort(lp, -libc::ECONNABORTED);
            Ok(0)
        })
    }
}

/// Sets the user data passed to the connection's callbacks from now on.
/// Returns: 0.
/// Errors: `-EINVAL` (`c` NULL or invalid).
/// Ownership: the caller keeps owning `user_data`.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_set_user_data(
    c: *mut epoll_loop_conn,
    user_data: *mut c_void,
) -> c_int {
    // SAFETY: NULL or a connection handle (checked by with_object).
    unsafe {
        with_object(c, |h| {
            h.user_data.set(user_data);
            Ok(0)
        })
    }
}

/// The connection's user data.
/// Returns: the user data (NULL if `c` is NULL or invalid).
/// Errors: none (an invalid handle gives NULL).
/// Ownership: the pointer stays the caller's.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_get_user_data(c: *const epoll_loop_conn) -> *mut c_void {
    let mut ud = std::ptr::null_mut();
    // SAFETY: NULL or a connection handle (checked by with_object).
    unsafe {
        with_object(c, |h| {
            ud = h.user_data.get();
            Ok(0)
        })
    };
    ud
}

/// Sets the write-queue limits: `epoll_loop_conn_write` fails with `-ENOBUFS`
/// rather than queue past `max_queue` bytes (`-EMSGSIZE` for a write larger
/// than `max_queue` by itself), and `on_drain` runs when the queue falls to
/// `low_water` after having been above it, and after a write refused with
/// `-ENOBUFS` once the queue is at or below `low_water` and that write fits
/// (on the next loop turn, never from inside this call, if these new limits
/// put the queue there already).
/// Bytes already queued stay queued, even above a lower cap.
/// Defaults: 1 MiB, 64 KiB.
/// Returns: 0.
/// Errors: `-EINVAL` (`low_water >= max_queue`, `max_queue` 0 or above
/// `UINT32_MAX`, on 32-bit systems `SSIZE_MAX`), `-EPIPE` (closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_set_limits(
    c: *mut epoll_loop_conn,
    max_queue: usize,
    low_water: usize,
) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c, |lp, conn, _| {
            conn.set_limits(
                lp,
                Limits {
                    max_queue,
                    low_water,
                },
            )
            .map(|()| 0)
        })
    }
}

/// With `enable` non-zero, the peer's EOF no longer closes the connection: it is
/// reported as `on_data(c, NULL, 0, ud)` and the connection stays open for
/// writing until `epoll_loop_conn_shutdown` or `_close` (a proxy needs this to
/// relay a half-close). Default: off (EOF flushes, then `on_close(0)`).
/// Returns: 0.
/// Errors: `-EINVAL`, `-EPIPE` (closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_set_half_open(
    c: *mut epoll_loop_conn,
    enable: c_int,
) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c, |_, conn, _| {
            conn.set_half_open(enable != 0);
            Ok(0)
        })
    }
}

/// Closes the connection with `on_close(-ETIMEDOUT)` after `timeout_ms`
/// milliseconds without a successful read or write (while connecting: after
/// `timeout_ms` from this call). 0 turns it off.
/// Returns: 0.
/// Errors: `-EINVAL`, `-EPIPE` (closing or closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_set_timeout(
    c: *mut epoll_loop_conn,
    timeout_ms: u32,
) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c, |lp, conn, _| {
            conn.set_timeout(lp, timeout_ms).map(|()| 0)
        })
    }
}

/// Bytes queued on the connection and not yet taken by the socket.
/// Returns: 0, and the count in `*out`.
/// Errors: `-EINVAL` (`c` or `out` NULL), `-EPIPE` (closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_get_queued(
    c: *const epoll_loop_conn,
    out: *mut usize,
) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c.cast_mut(), |_, conn, _| {
            if out.is_null() {
                return Err(Errno::EINVAL);
            }
            write_out(out, conn.queued());
            Ok(0)
        })
    }
}

/// The connection's socket descriptor (for `setsockopt` and the like; do not
/// read, write or close it).
/// Returns: the fd.
/// Errors: `-EINVAL`, `-EPIPE` (closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_fileno(c: *const epoll_loop_conn) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe { with_conn(c.cast_mut(), |_, conn, _| Ok(conn.fd())) }
}

fn write_name(
    addr: SocketAddr,
    host: *mut c_char,
    host_len: usize,
    port: *mut u16,
) -> Result<c_int, Errno> {
    if !host.is_null() {
        let text = addr.ip().to_string();
        if text.len() + 1 > host_len {
            return Err(Errno(libc::ENOSPC));
        }
        // SAFETY: `host` is writable for `host_len` bytes, which fit the text and NUL.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), host.cast::<u8>(), text.len());
            host.add(text.len()).write(0);
        }
    }
    if !port.is_null() {
        // SAFETY: non-NULL out-pointer, writable per the contract.
        unsafe { write_out(port, addr.port()) };
    }
    Ok(0)
}

/// The peer's address: its numeric IP as text in `host` (NUL-terminated; 46 bytes
/// fit any address) and its port in `*port`. Either may be NULL if not wanted.
/// Returns: 0.
/// Errors: `-EINVAL`, `-ENOSPC` (`host_len` too small), `-ENOTCONN` (not
/// connected yet or any more), `-EPIPE` (closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_peer_address(
    c: *const epoll_loop_conn,
    host: *mut c_char,
    host_len: usize,
    port: *mut u16,
) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c.cast_mut(), |_, conn, _| {
            write_name(conn.peer_addr()?, host, host_len, port)
        })
    }
}

/// The connection's local address, as `epoll_loop_conn_peer_address`.
/// Returns: 0.
/// Errors: as `epoll_loop_conn_peer_address`.
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_local_address(
    c: *const epoll_loop_conn,
    host: *mut c_char,
    host_len: usize,
    port: *mut u16,
) -> c_int {
    // SAFETY: NULL or a connection handle (checked inside).
    unsafe {
        with_conn(c.cast_mut(), |_, conn, _| {
            write_name(conn.local_addr()?, host, host_len, port)
        })
    }
}
