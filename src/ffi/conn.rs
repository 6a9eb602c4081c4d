//! `epoll_loop_listener` and `epoll_loop_conn`: the stream layer of the C API.
//!
//! A C connection is a [`CConn`] (the connection's handler: C callbacks, user
//! data, the handle), owned by its Rust [`Conn`], and a handle in [`CONNS`]
//! that points at the `CConn` and its loop. The handle lives until `on_close`
//! has been delivered (or the loop is freed, which delivers it too), then the
//! `CConn` removes it: a stale connection handle is `-EINVAL` for certain.
//! `on_close` is delivered from a zero-delay loop timer, never from inside the
//! call that caused it (`epoll_loop_conn_close` and friends), so a handle stays
//! valid for the rest of the callback or function that closed it.
//!

use super::event_loop::{LoopState, epoll_loop, with_loop};
use super::guard::{guarded, write_out};
use super::handle::{self, Handle, Poison, Table};
use crate::event_loop::EventLoop;
use crate::stream::{self, Conn, ConnHandler, Limits, TcpContext};
use crate::sys::Errno;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashSet;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::net::SocketAddr;
use std::rc::{Rc, Weak};

/// The callbacks of a connection. Any of them may be NULL.
///
/// Every callback receives the connection and its user data (accepted
/// connections start with their listener's, outgoing ones with the one given to
/// `epoll_loop_tcp_connect`; change it with `epoll_loop_conn_set_user_data`).
/// For per-connection state on accepted connections, set it first thing in
/// `on_open`: until then (and in `on_close`, if it never was) the callbacks get
/// the listener's user data.
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
    /// `-EMSGSIZE` is no reason to wait: no `on_drain` follows it. Not called
    /// once writes are refused with `-EPIPE` (after `_close` or `_shutdown`).
    pub on_drain: Option<unsafe extern "C" fn(conn: *mut epoll_loop_conn, user_data: *mut c_void)>,
    /// The connection is closed: `error` is 0 after a clean close or the peer's
    /// EOF, `-ECONNABORTED` after `epoll_loop_conn_abort`, `-ETIMEDOUT` after its
    /// inactivity timeout (`epoll_loop_conn_set_timeout`) or when an
    /// `epoll_loop_conn_close` could not finish within its close timeout
    /// (`epoll_loop_conn_set_close_timeout`, default 2 s: queued bytes were
    /// dropped, the peer got a reset), `-ECANCELED` when the loop was freed
    /// while it was open, else the socket's `-errno` (`-ECONNREFUSED`,
    /// `-ECONNRESET`, ...). 0 after a close means every byte written was sent;
    /// the peer's kernel acknowledged them all if the close ended with a reset
    /// (see `epoll_loop_conn_close`). Called exactly once, from the loop (never
    /// from inside the call that closed it) or from `epoll_loop_free`; calls on
    /// the connection inside it return `-EPIPE`, and the handle is invalid
    /// (`-EINVAL`) once it returns.
    pub on_close: Option<
        unsafe extern "C" fn(conn: *mut epoll_loop_conn, error: c_int, user_data: *mut c_void),
    >,
}

/// A buffered TCP connection on a loop. Opaque; made by `epoll_loop_tcp_connect`
/// or by a listener, released by the library after its `on_close`. The
/// pointer is a handle, not an address: after `on_close` returned, every call
/// with it is `-EINVAL`, for certain.
///
/// Lifetime: until `on_close` returns (`epoll_loop_free` delivers it to the
/// connections still open). Thread safety: the loop's thread; a call while
/// another thread is inside a call on the loop is refused with `-EBUSY`.
pub struct epoll_loop_conn {
    _opaque: [u8; 0],
}

/// Where a live connection handle leads: its handler and its loop. Both stay
/// valid while the handle is live: a `CConn` removes its handle before it is
/// dropped, and `epoll_loop_free` removes the handles of its connections
/// before it drops the loop.
pub(crate) struct ConnSlot {
    cc: *const CConn,
    lp: *const LoopState,
}

/// Every C connection. Other threads read only the two pointers (immutable)
/// and the loop's owner check through them; the `CConn` is touched only under
/// that check.
static CONNS: Table<ConnSlot> = Table::new(handle::TAG_CONN);

/// What a loop keeps for its C connections: the stream layer's shared
/// context (read buffer, counters), made on first use, and the handles of the
/// connections still open (told at `_free`).
#[derive(Default)]
pub(crate) struct LoopStreams {
    ctx: OnceCell<Rc<TcpContext>>,
    conns: RefCell<HashSet<Handle>>,
}

impl LoopStreams {
    pub(crate) fn context(&self) -> Rc<TcpContext> {
        self.ctx
            .get_or_init(|| TcpContext::new(Default::default()))
            .clone()
    }

    fn add_conn(&self, h: Handle) {
        self.conns.borrow_mut().insert(h);
    }

    fn remove_conn(&self, h: Handle) {
        self.conns.borrow_mut().remove(&h);
    }

    /// The handles of the connections still open, forgotten here.
    pub(crate) fn take_conns(&self) -> Vec<Handle> {
        self.conns.take().into_iter().collect()
    }
}

/// One connection's handler: the C callbacks, the user data and the handle.
pub(super) struct CConn {
    cbs: epoll_loop_conn_callbacks,
    /// The handle, 0 once removed.
    handle: Cell<Handle>,
    lp: *const LoopState,
    /// `handle::forks()` when made: dropped in a forked child, it must not wait
    /// for the parent's threads.
    forks: u32,
    poison: Poison,
    user_data: Cell<*mut c_void>,
    conn: RefCell<Weak<Conn>>,
    /// `on_close` is being (or was) delivered: calls on the handle are `EPIPE`.
    reported: Cell<bool>,
}

impl CConn {
    /// A handler with a new handle on the loop `lp` (recorded there).
    pub(super) fn new(
        cbs: epoll_loop_conn_callbacks,
        lp: &LoopState,
        user_data: *mut c_void,
    ) -> Result<Rc<CConn>, Errno> {
        let cc = Rc::new(CConn {
            cbs,
            handle: Cell::new(0),
            lp,
            forks: handle::forks(),
            poison: Poison::default(),
            user_data: Cell::new(user_data),
            conn: RefCell::new(Weak::new()),
            reported: Cell::new(false),
        });
        let h = CONNS.insert(Box::new(ConnSlot {
            cc: Rc::as_ptr(&cc),
            lp,
        }))?;
        cc.handle.set(h);
        lp.streams().add_conn(h);
        Ok(cc)
    }

    fn ptr(&self) -> *mut epoll_loop_conn {
        handle::to_ptr(self.handle.get())
    }

    pub(super) fn bind(&self, conn: &Rc<Conn>) {
        *self.conn.borrow_mut() = Rc::downgrade(conn);
    }

    /// Removes the handle (once): from now on it is stale.
    fn retire(&self) {
        let h = self.handle.replace(0);
        if h == 0 {
            return;
        }
        let in_child = self.forks != handle::forks();
        drop(CONNS.remove(h, in_child));
        if !in_child {
            // SAFETY: the loop outlives its connections' handles (see `ConnSlot`).
            unsafe { &*self.lp }.streams().remove_conn(h);
        }
    }

    /// Delivers `on_close(status)` (once), then retires the handle.
    fn deliver_close(&self, status: c_int) {
        if self.reported.replace(true) {
            return;
        }
        if let Some(f) = self.cbs.on_close {
            // SAFETY: the caller's callback with its handle, still live.
            unsafe { f(self.ptr(), status, self.user_data.get()) }
        }
        self.retire();
    }
}

impl ConnHandler for CConn {
    fn on_open(&self, _: &EventLoop, _: &Rc<Conn>) {
        if let Some(f) = self.cbs.on_open {
            // SAFETY: the caller's callback with its live handle and user data.
            unsafe { f(self.ptr(), self.user_data.get()) }
        }
    }

    fn on_data(&self, _: &EventLoop, _: &Rc<Conn>, data: &[u8]) {
        if let Some(f) = self.cbs.on_data {
            // SAFETY: the caller's callback; `data` is valid for `len` bytes during the call.
            unsafe { f(self.ptr(), data.as_ptr(), data.len(), self.user_data.get()) }
        }
    }

    fn on_eof(&self, _: &EventLoop, _: &Rc<Conn>) {
        if let Some(f) = self.cbs.on_data {
            // SAFETY: the caller's callback; NULL/0 is the documented EOF report.
            unsafe { f(self.ptr(), std::ptr::null(), 0, self.user_data.get()) }
        }
    }

    fn on_drain(&self, _: &EventLoop, _: &Rc<Conn>) {
        if let Some(f) = self.cbs.on_drain {
            // SAFETY: the caller's callback with its live handle and user data.
            unsafe { f(self.ptr(), self.user_data.get()) }
        }
    }

    /// From the loop already (the stream layer never calls it from inside
    /// the call that closed the connection). Should the loop be freed first,
    /// `conn_loop_freed` delivers the status the connection closed with.
    fn on_close(&self, _: &EventLoop, _: &Rc<Conn>, error: Option<Errno>) {
        self.deliver_close(error.map_or(0, Errno::to_negative));
    }
}

impl Drop for CConn {
    fn drop(&mut self) {
        self.retire();
    }
}

/// `epoll_loop_free` on the loop of connection `h` (the loop is out of its
/// table, its owner check held): delivers `on_close` with the status the
/// connection was closed with, or `-ECANCELED` if it was open, and retires the
/// handle. `deliver` false (a forked child): only retire it.
pub(crate) fn conn_loop_freed(h: Handle, deliver: bool) {
    let Some(slot) = CONNS.get(h) else { return };
    let cc = slot.cc;
    drop(slot);
    // SAFETY: the handle was live, so its `CConn` is alive; the loop (which owns
    // the connection, and so the `CConn`) is being torn down by our caller, who
    // drops it only after this returns.
    let cc = unsafe { &*cc };
    if deliver {
        // Closed but not yet told: the status it closed with; else still open.
        let pending = cc.conn.borrow().upgrade().and_then(|c| c.pending_close());
        let status = match pending {
            Some(status) => status.map_or(0, Errno::to_negative),
            None => Errno::ECANCELED.to_negative(),
        };
        cc.deliver_close(status);
    } else {
        cc.reported.set(true);
        cc.retire();
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

/// What a listen or a connect was given: the callbacks, and the first address
/// of `host:port` (`host` NULL: 127.0.0.1; numeric hosts without a lookup).
pub(super) fn read_endpoint(
    host: *const c_char,
    port: u16,
    cbs: *const epoll_loop_conn_callbacks,
) -> Result<(epoll_loop_conn_callbacks, SocketAddr), Errno> {
    let cbs = read_callbacks(cbs)?;
    let addr = stream::resolve(&read_host(host)?, port)?[0];
    Ok((cbs, addr))
}

fn read_callbacks(
    cbs: *const epoll_loop_conn_callbacks,
) -> Result<epoll_loop_conn_callbacks, Errno> {
    // SAFETY: NULL or a readable callbacks struct, per the contract.
    unsafe { cbs.as_ref() }.copied().ok_or(Errno::EINVAL)
}

/// Starts a non-blocking connect to `host:port`. `on_open` runs when the
/// connection is established; if it fails, only `on_close` runs, with the error
/// (`-ECONNREFUSED`, `-ETIMEDOUT` after `epoll_loop_conn_set_timeout`, ...).
/// Writes made before `on_open` are queued and sent once it is open.
/// `host` NULL means "127.0.0.1"; names are resolved synchronously with
/// getaddrinfo (blocking: pass a numeric address to avoid that), and the first
/// address it gives is used.
/// Returns: 0, and the connection in `*out` (no callback has run yet).
/// Errors: (no callback will run) `-EINVAL` (NULL `loop`/`cbs`/`out`, host not
/// UTF-8), `EPOLL_LOOP_EAI_*` (the host name did not resolve:
/// `EPOLL_LOOP_EAI_NONAME`, `EPOLL_LOOP_EAI_AGAIN`, ...), `-ENETUNREACH`,
/// `-EMFILE`, `-ENOTRECOVERABLE`.
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
    with_loop(r#loop, false, |st, _| {
        if out.is_null() {
            return Err(Errno::EINVAL);
        }
        let (cbs, addr) = read_endpoint(host, port, cbs)?;
        let cc = CConn::new(cbs, st, user_data)?;
        let conn = Conn::connect(
            st.core(),
            &addr,
            st.streams().context(),
            cc.clone(),
            Limits::default(),
        )?;
        cc.bind(&conn);
        // SAFETY: `out` is non-NULL and, per the contract, writable.
        unsafe { write_out(out, cc.ptr()) };
        Ok(0)
    })
}

/// Runs `f` on the handler behind a live connection handle and its loop,
/// holding the loop's owner check, inside the panic boundary.
fn with_cconn(
    c: *const epoll_loop_conn,
    f: impl FnOnce(&LoopState, &CConn) -> Result<c_int, Errno>,
) -> c_int {
    let Some(slot) = CONNS.get(handle::from_ptr(c)) else {
        return -libc::EINVAL;
    };
    // SAFETY: a live handle's loop is alive (see `ConnSlot`).
    let st = unsafe { &*slot.lp };
    let _owned = match st.enter(false) {
        Ok(o) => o,
        Err(e) => return e.to_negative(),
    };
    // SAFETY: a live handle's `CConn` is alive (see `ConnSlot`); we hold the
    // loop's owner check, so no other thread touches it.
    let cc = unsafe { &*slot.cc };
    guarded(&cc.poison, || f(st, cc))
}

/// Runs `f` on a live, open connection with its loop (`EPIPE` once it is
/// closed, even before `on_close` was delivered).
fn with_conn(
    c: *const epoll_loop_conn,
    f: impl FnOnce(&EventLoop, &Rc<Conn>, &CConn) -> Result<c_int, Errno>,
) -> c_int {
    with_cconn(c, |st, cc| {
        if cc.reported.get() {
            return Err(Errno(libc::EPIPE));
        }
        let conn = cc.conn.borrow().upgrade().ok_or(Errno(libc::EPIPE))?;
        // Closed but still held (inside one of its own callbacks, after
        // `_abort` or a failure): as closed as a connection already dropped.
        if conn.is_closed() {
            return Err(Errno(libc::EPIPE));
        }
        f(st.core(), &conn, cc)
    })
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
        let data = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len) };
        conn.write(lp, data).map(|()| 0)
    })
}

/// Stops reading from the connection (TCP then pushes back on the peer).
/// Returns: 0.
/// Errors: `-EINVAL`, `-EPIPE` (closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_pause(c: *mut epoll_loop_conn) -> c_int {
    with_conn(c, |lp, conn, _| {
        conn.pause(lp);
        Ok(0)
    })
}

/// Resumes reading after `epoll_loop_conn_pause`.
/// Returns: 0.
/// Errors: `-EINVAL`, `-EPIPE` (closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_resume(c: *mut epoll_loop_conn) -> c_int {
    with_conn(c, |lp, conn, _| {
        conn.resume(lp);
        Ok(0)
    })
}

/// Sends what is queued, then half-closes (FIN). Reading continues; the
/// connection closes (`on_close(0)`) when the peer's EOF arrives too.
/// Returns: 0 (also when already shut down).
/// Errors: `-EINVAL`, `-EPIPE` (closing or closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_shutdown(c: *mut epoll_loop_conn) -> c_int {
    with_conn(c, |lp, conn, _| conn.shutdown(lp).map(|()| 0))
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
    with_conn(c, |lp, conn, _| {
        if conn.is_closing() {
            return Err(Errno(libc::EPIPE));
        }
        conn.close(lp);
        Ok(0)
    })
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
    with_conn(c, |_, conn, _| {
        conn.set_close_timeout(timeout_ms).map(|()| 0)
    })
}

/// Closes at once with a reset (RST), discarding what is queued;
/// `on_close(-ECONNABORTED)` follows, from the loop.
/// Returns: 0.
/// Errors: `-EINVAL`, `-EPIPE` (already closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_abort(c: *mut epoll_loop_conn) -> c_int {
    with_conn(c, |lp, conn, _| {
        if conn.is_closed() {
            return Err(Errno(libc::EPIPE));
        }
        conn.abort(lp, Some(Errno::ECONNABORTED));
        Ok(0)
    })
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
    with_cconn(c, |_, cc| {
        cc.user_data.set(user_data);
        Ok(0)
    })
}

/// The connection's user data.
/// Returns: the user data (NULL if `c` is NULL or invalid).
/// Errors: none (an invalid handle gives NULL).
/// Ownership: the pointer stays the caller's.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_get_user_data(c: *const epoll_loop_conn) -> *mut c_void {
    let mut ud = std::ptr::null_mut();
    with_cconn(c, |_, cc| {
        ud = cc.user_data.get();
        Ok(0)
    });
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
    with_conn(c, |_, conn, _| {
        conn.set_half_open(enable != 0);
        Ok(0)
    })
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
    with_conn(c, |lp, conn, _| {
        conn.set_timeout(lp, timeout_ms).map(|()| 0)
    })
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
    with_conn(c, |_, conn, _| {
        if out.is_null() {
            return Err(Errno::EINVAL);
        }
        // SAFETY: non-NULL out-pointer, writable per the contract.
        unsafe { write_out(out, conn.queued()) };
        Ok(0)
    })
}

/// The connection's socket descriptor (for `setsockopt` and the like; do not
/// read, write or close it).
/// Returns: the fd.
/// Errors: `-EINVAL`, `-EPIPE` (closed).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_conn_fileno(c: *const epoll_loop_conn) -> c_int {
    with_conn(c, |_, conn, _| Ok(conn.fd()))
}

/// One of a connection's addresses (`which`), written as `write_name` does.
fn address_of(
    c: *const epoll_loop_conn,
    which: fn(&Conn) -> Result<SocketAddr, Errno>,
    host: *mut c_char,
    host_len: usize,
    port: *mut u16,
) -> c_int {
    with_conn(c, |_, conn, _| {
        write_name(which(conn)?, host, host_len, port)
    })
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
    address_of(c, Conn::peer_addr, host, host_len, port)
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
    address_of(c, Conn::local_addr, host, host_len, port)
}
