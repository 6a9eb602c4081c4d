//! Layer 4: a TCP listener and a buffered connection on top of the loop.
//!
//! [`Conn`] is libevent's bufferevent / libuv's stream, bounded by default:
//! - Reads go into one buffer per [`TcpContext`] (shared by all its connections),
//!   then to [`ConnHandler::on_data`]; nothing is kept per connection.
//! - [`Conn::write`] sends at once what the socket takes and queues only the
//!   rest; `EPOLLOUT` is armed only while something is queued. A write that
//!   would take the queue past its cap fails whole with `ENOBUFS`; one larger
//!   than the cap by itself fails with `EMSGSIZE` (it could never fit).
//! - [`ConnHandler::on_drain`] runs when the queue falls to its low-water mark
//!   after having been above it, and after every write refused with `ENOBUFS`
//!   once the queue is at or below the low-water mark *and* low enough for
//!   the refused write to fit (at most cap - len bytes: a chunk larger than
//!   cap - low water is refused even at low water). It runs from the loop
//!   (on its next turn if the queue is already there, as after a
//!   [`Conn::set_limits`]), never from inside the refused `write`. So a
//!   writer that stops at `ENOBUFS` and retries from `on_drain` never stalls
//!   and never spins, whatever its chunk size: the retry fits. `EMSGSIZE` is
//!   no reason to wait: no `on_drain` follows it. (The echo server resumes
//!   reading in `on_drain`.)
//! - A peer's EOF flushes what is queued, then closes: `on_close(0)`.
//! - [`Conn::close`] flushes, then lingers; the whole of it is bounded by the
//!   connection's close timeout ([`CLOSE_TIMEOUT_MS`] by default, see
//!   [`Conn::set_close_timeout`]): then it resets, `on_close(-ETIMEDOUT)`.
//! - `on_close` runs exactly once; afterwards every operation fails with `EPIPE`.
//!
//! [`Listener`] accepts until `EAGAIN` and survives `EMFILE`/`ENFILE` with
//! libuv's reserve-fd trick (close the spare descriptor, accept and close the
//! pending connection, reopen the spare), so a full descriptor table neither
//! kills the listener nor makes it spin; if even that fails, accepting pauses
//! for [`ACCEPT_BACKOFF_MS`].

use crate::event_loop::{EventLoop, HUP, IN, ONESHOT, OUT, RDHUP};
use crate::sys::{self, Errno, Result, socket};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Size of the shared read buffer.
pub const READ_BUFFER: usize = 64 * 1024;
/// Reads per readiness event. One, as hand-written epoll servers do: epoll is
/// level-triggered here, so a socket with more to read is reported again, and a
/// second `recv` after a full buffer mostly returns `EAGAIN` (the benchmark of
/// 64 KiB messages measured 2.6k wasted `recv`s per 25k messages with 16).
const READS_PER_EVENT: usize = 1;
/// Accepts per readiness event before yielding.
const ACCEPTS_PER_EVENT: usize = 256;
/// How long a closing connection waits for the peer's EOF after sending its own
/// FIN (see [`Conn::close`]) before it resets, if by then the peer has
/// acknowledged every byte.
pub const LINGER_MS: u64 = 2000;
/// While lingering past [`LINGER_MS`] with bytes not yet acknowledged, how
/// often the connection looks again.
const LINGER_POLL_MS: u64 = 50;
/// The default close timeout: how long [`Conn::close`] may take in all
/// (flushing and lingering) before it resets with `on_close(-ETIMEDOUT)`.
pub const CLOSE_TIMEOUT_MS: u32 = 2000;
/// How long accepting pauses when even the reserve-fd trick fails.
pub const ACCEPT_BACKOFF_MS: u64 = 100;

/// Counters shared by a listener and its connections (readable from any thread).
#[derive(Debug, Default)]
pub struct TcpStats {
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    pub closed: AtomicU64,
    pub rejected: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub idle_timeouts: AtomicU64,
    pub accept_errors: AtomicU64,
}

impl TcpStats {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    pub(crate) fn sub(c: &AtomicU64, n: u64) {
        c.fetch_sub(n, Ordering::Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// What a group of connections on one loop shares: the read buffer and counters.
pub struct TcpContext {
    read_buf: Cell<Vec<u8>>,
    pub stats: std::sync::Arc<TcpStats>,
}

impl std::fmt::Debug for TcpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpContext")
            .field("stats", &self.stats)
            .finish()
    }
}

impl TcpContext {
    pub fn new(stats: std::sync::Arc<TcpStats>) -> Rc<TcpContext> {
        Rc::new(TcpContext {
            read_buf: Cell::new(Vec::new()),
            stats,
        })
    }
}

/// Callbacks of a connection. Each receives the loop and the connection.
pub trait ConnHandler {
    /// The connection is established: accepted, or an outgoing connect completed.
    fn on_open(&self, _lp: &EventLoop, _conn: &Rc<Conn>) {}
    /// Bytes arrived. `data` is valid only during the call.
    fn on_data(&self, lp: &EventLoop, conn: &Rc<Conn>, data: &[u8]);
    /// The peer shut down its writing half, on a connection that allows half-open
    /// ([`Conn::set_half_open`]); it stays open for writing until `shutdown`/`close`.
    fn on_eof(&self, _lp: &EventLoop, _conn: &Rc<Conn>) {}
    /// The write queue fell to its low-water mark after being above it, or,
    /// after a write refused with `ENOBUFS`, is at or below the mark and low
    /// enough for that write to fit (from the loop; never from inside the
    /// refused write).
    fn on_drain(&self, _lp: &EventLoop, _conn: &Rc<Conn>) {}
    /// The connection closed: 0 after a clean EOF or `close`, else `-errno`.
    /// Runs exactly once; the connection refuses every operation afterwards.
    fn on_close(&self, _lp: &EventLoop, _conn: &Rc<Conn>, _error: i32) {}
}

const PAUSED: u16 = 1;
/// The peer sent EOF; nothing more will be read.
const EOF: u16 = 2;
/// `close` was asked for: flush, then close.
const CLOSING: u16 = 4;
/// `on_close` ran (or is running).
const CLOSED: u16 = 8;
const WANT_DRAIN: u16 = 16;
/// A send failed; reported from the next event.
const FAILED: u16 = 32;
/// Closing: our FIN is sent; reading and discarding until the peer's EOF.
const LINGER: u16 = 64;
/// An outgoing connect is in progress.
const CONNECTING: u16 = 128;
/// `shutdown` was asked for: flush, then send FIN.
const SHUT_PENDING: u16 = 256;
/// Our FIN is sent (no more writes).
const SHUT_DONE: u16 = 512;
/// Peer EOF does not close: the application decides (`on_eof`).
const HALF_OPEN: u16 = 1024;
/// A failed `epoll_ctl(MOD)` is retried from a timer.
const MASK_RETRY: u16 = 2048;
/// EPOLLHUP (both directions shut) came while paused, with the peer's bytes
/// and EOF possibly still unread: they wait for `resume`. HUP cannot be masked
/// out, so while not reading the registration is one-shot (no busy loop).
const HUP_PARKED: u16 = 4096;
/// A zero-delay timer will check for `on_drain` (new limits put a waiting
/// writer's queue where `on_drain` is due).
const DRAIN_SOON: u16 = 8192;
/// How soon a failed `epoll_ctl(MOD)` is retried.
const MASK_RETRY_MS: u64 = 10;

/// Bytes accepted by `write` but not yet taken by the socket.
#[derive(Debug, Default)]
struct WriteQueue {
    buf: Vec<u8>,
    start: usize,
}

impl WriteQueue {
    fn len(&self) -> usize {
        self.buf.len() - self.start
    }
    fn front(&self) -> &[u8] {
        &self.buf[self.start..]
    }
    fn consume(&mut self, n: usize) {
        // `n` comes from `send` of `front()`, so it is at most `len()`.
        debug_assert!(n <= self.len());
        self.start += n.min(self.len());
        if self.start == self.buf.len() {
            // Empty: give the memory back so an idle connection costs nothing here.
            self.buf = Vec::new();
            self.start = 0;
        }
    }
    fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }
}

/// Write-queue limits of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `write` fails with `ENOBUFS` rather than queue past this many bytes.
    pub max_queue: usize,
    /// `on_drain` runs when the queue falls to this after having been above it,
    /// and once the queue is at or below it (and the refused write fits) after a
    /// write refused with `ENOBUFS`.
    pub low_water: usize,
}

impl Default for Limits {
    /// 1 MiB cap, 64 KiB low-water mark.
    fn default() -> Self {
        Limits {
            max_queue: 1 << 20,
            low_water: 64 << 10,
        }
    }
}

impl Limits {
    /// The largest cap: it must fit the 32-bit fields, and a chunk of that size
    /// must be a valid slice length (`isize::MAX`, on 32-bit targets smaller).
    pub const MAX_QUEUE: usize = if (u32::MAX as usize) < isize::MAX as usize {
        u32::MAX as usize
    } else {
        isize::MAX as usize
    };

    /// `EINVAL` unless `0 < max_queue <= MAX_QUEUE` and `low_water < max_queue`.
    pub fn validate(self) -> Result<Limits> {
        if self.max_queue == 0
            || self.low_water >= self.max_queue
            || self.max_queue > Limits::MAX_QUEUE
        {
            return Err(Errno::EINVAL);
        }
        Ok(self)
    }
}

/// A buffered, non-blocking TCP connection registered on a loop.
pub struct Conn {
    fd: OwnedFd,
    flags: Cell<u16>,
    mask: Cell<u32>,
    /// Failure recorded by a write, reported from the next event (as `-errno`).
    error: Cell<i32>,
    max_queue: Cell<u32>,
    low_water: Cell<u32>,
    /// The smallest write refused with `ENOBUFS` since the last `on_drain` (0:
    /// none); `on_drain` waits until it would fit. See [`Conn::drain_level`].
    want_room: Cell<u32>,
    /// Inactivity limit (0 = none); see [`Conn::set_timeout`].
    timeout_ms: Cell<u32>,
    last_active_ms: Cell<u64>,
    /// The linger timer while lingering, else the inactivity timer (0 = none).
    timer: Cell<u64>,
    /// Limit on the whole of a close (0 = none); see [`Conn::set_close_timeout`].
    close_timeout_ms: Cell<u32>,
    /// The close deadline's timer (0 = none).
    close_timer: Cell<u64>,
    queue: RefCell<WriteQueue>,
    handler: Rc<dyn ConnHandler>,
    ctx: Rc<TcpContext>,
    user: Cell<usize>,
    /// This connection, for timers that must reach it (weak: no cycle).
    me: std::rc::Weak<Conn>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("fd", &self.fd)
            .field("flags", &self.flags.get())
            .finish()
    }
}

fn now_ms() -> u64 {
    sys::monotonic_ns() / 1_000_000
}

impl Conn {
    fn new(
        fd: OwnedFd,
        ctx: Rc<TcpContext>,
        handler: Rc<dyn ConnHandler>,
        limits: Limits,
        flags: u16,
    ) -> Rc<Conn> {
        Rc::new_cyclic(|me| Conn {
            me: me.clone(),
            fd,
            flags: Cell::new(flags),
            mask: Cell::new(0),
            error: Cell::new(0),
            max_queue: Cell::new(limits.max_queue.min(u32::MAX as usize) as u32),
            low_water: Cell::new(limits.low_water.min(u32::MAX as usize) as u32),
            want_room: Cell::new(0),
            timeout_ms: Cell::new(0),
            last_active_ms: Cell::new(now_ms()),
            timer: Cell::new(0),
            close_timeout_ms: Cell::new(CLOSE_TIMEOUT_MS),
            close_timer: Cell::new(0),
            queue: RefCell::new(WriteQueue::default()),
            handler,
            ctx,
            user: Cell::new(0),
        })
    }

    fn register(self: &Rc<Self>, lp: &EventLoop, mask: u32) -> Result<()> {
        let c = self.clone();
        lp.register(
            self.fd(),
            mask,
            Rc::new(move |lp: &EventLoop, _fd, ev| c.on_event(lp, ev)),
        )?;
        self.mask.set(mask);
        Ok(())
    }

    /// Wraps a connected non-blocking socket and registers it for reading.
    /// `on_open` is not called here: the caller knows the connection is open.
    /// `EINVAL` for invalid limits ([`Limits::validate`]).
    pub fn open(
        lp: &EventLoop,
        fd: OwnedFd,
        ctx: Rc<TcpContext>,
        handler: Rc<dyn ConnHandler>,
        limits: Limits,
    ) -> Result<Rc<Conn>> {
        let limits = limits.validate()?;
        let conn = Conn::new(fd, ctx, handler, limits, 0);
        conn.register(lp, IN | RDHUP)?;
        Ok(conn)
    }

    /// Starts a non-blocking connect to `addr`. `on_open` runs when it completes;
    /// if it fails, `on_close(-errno)` runs instead (and `on_open` never does).
    /// Errors returned here (no callback will run): `EINVAL` for invalid limits,
    /// `socket`/`connect` failures that are known at once, e.g. `ENETUNREACH`,
    /// `EMFILE`.
    pub fn connect(
        lp: &EventLoop,
        addr: &SocketAddr,
        ctx: Rc<TcpContext>,
        handler: Rc<dyn ConnHandler>,
        limits: Limits,
    ) -> Result<Rc<Conn>> {
        let limits = limits.validate()?;
        let fd = socket::tcp_connect(addr)?;
        let conn = Conn::new(fd, ctx, handler, limits, CONNECTING);
        conn.register(lp, OUT)?;
        Ok(conn)
    }

    /// The socket.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Bytes queued, not yet taken by the socket.
    pub fn queued(&self) -> usize {
        self.queue.borrow().len()
    }

    /// True once `on_close` has run (or is running).
    pub fn is_closed(&self) -> bool {
        self.has(CLOSED)
    }

    /// True once a close was asked for (the connection may still be flushing).
    pub fn is_closing(&self) -> bool {
        self.flags.get() & (CLOSING | CLOSED) != 0
    }

    /// Milliseconds (monotonic) of the last read or write.
    pub fn last_active_ms(&self) -> u64 {
        self.last_active_ms.get()
    }

    /// A word of user data (the C API keeps its handle here).
    pub fn user(&self) -> usize {
        self.user.get()
    }

    /// Sets the word of user data.
    pub fn set_user(&self, v: usize) {
        self.user.set(v)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        socket::peer_addr(self.fd())
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        socket::local_addr(self.fd())
    }

    /// The write-queue limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_queue: self.max_queue.get() as usize,
            low_water: self.low_water.get() as usize,
        }
    }

    /// Changes the write-queue limits (`EINVAL` unless `low_water < max_queue`).
    /// Bytes already queued stay queued even if above the new cap. A writer
    /// waiting for `on_drain` whose queue the new limits put where `on_drain`
    /// is due gets it on the next loop turn.
    pub fn set_limits(self: &Rc<Self>, lp: &EventLoop, limits: Limits) -> Result<()> {
        let l = limits.validate()?;
        self.max_queue.set(l.max_queue as u32);
        self.low_water.set(l.low_water as u32);
        self.drain_soon(lp);
        Ok(())
    }

    /// With `on`, a peer's EOF no longer closes the connection: `on_eof` runs and
    /// the connection stays open for writing until `shutdown` or `close`
    /// (Node's `allowHalfOpen`; a proxy needs it to relay a half-close).
    pub fn set_half_open(&self, on: bool) {
        if on {
            self.set(HALF_OPEN)
        } else {
            self.clear(HALF_OPEN)
        }
    }

    fn has(&self, f: u16) -> bool {
        self.flags.get() & f != 0
    }
    fn set(&self, f: u16) {
        self.flags.set(self.flags.get() | f)
    }
    fn clear(&self, f: u16) {
        self.flags.set(self.flags.get() & !f)
    }

    fn wants_read(&self) -> bool {
        let f = self.flags.get();
        if f & (EOF | CLOSED | FAILED | CONNECTING) != 0 {
            return false;
        }
        // Lingering connections read (and discard) until the peer's EOF.
        f & LINGER != 0 || f & (PAUSED | CLOSING) == 0
    }

    /// Re-registers for what the connection now needs (only when it changed).
    fn update_mask(&self, lp: &EventLoop) {
        if self.has(CLOSED) {
            return;
        }
        let mut want = if self.wants_read() { IN | RDHUP } else { 0 };
        if self.queued() > 0 || self.flags.get() & (FAILED | CONNECTING) != 0 {
            want |= OUT;
        }
        if want & IN == 0 && self.has(HUP_PARKED) {
            want |= ONESHOT;
        }
        if want == self.mask.get() {
            return;
        }
        if lp.modify(self.fd(), want).is_ok() {
            self.mask.set(want);
        } else if !self.has(MASK_RETRY)
            && let Some(me) = self.me.upgrade()
        {
            // `epoll_ctl` refused (ENOMEM): try again shortly. Without a retry a
            // connection waiting only for EPOLLOUT (its peer waits for the answer)
            // would wait forever (found by fault injection).
            self.set(MASK_RETRY);
            let weak = Rc::downgrade(&me);
            lp.timer_start(
                MASK_RETRY_MS,
                0,
                Rc::new(move |lp: &EventLoop, _| {
                    if let Some(c) = weak.upgrade() {
                        c.clear(MASK_RETRY);
                        c.update_mask(lp);
                    }
                }),
            );
        }
    }

    fn touch(&self, lp: &EventLoop) {
        self.last_active_ms.set(lp.now_ns() / 1_000_000);
    }

    /// Queues `data` for sending, sending at once what the socket takes.
    /// All or nothing: `ENOBUFS` when the queue would pass its cap (`EMSGSIZE`
    /// when `data` alone is larger than the cap), `EPIPE` once
    /// the connection is closing, shut down or closed. While connecting, bytes
    /// are queued and sent once the connection opens.
    ///
    /// After `ENOBUFS`, `on_drain` follows once the queue is at or below the
    /// low-water mark and `data` would fit (a chunk larger than cap - low water
    /// is refused even with the queue that low; waking the writer before it
    /// fits would only make it spin), from the loop, never from inside this
    /// call. `EMSGSIZE` does not wait for a drain (none follows); split the
    /// data or raise the cap.
    pub fn write(self: &Rc<Self>, lp: &EventLoop, data: &[u8]) -> Result<()> {
        self.check_write_len(data.len())?;
        let queued = self.queued();
        if queued.saturating_add(data.len()) > self.max_queue.get() as usize {
            // The writer now waits for `on_drain`: make sure one comes, even if
            // the queue never goes above the low-water mark again, and not
            // before this write fits. (`data.len() <= max_queue <= u32::MAX`.)
            // (`want_room` is 0 when no write was refused since the last
            // `on_drain`: `len` here is never 0.)
            let len = data.len() as u32;
            let room = match self.want_room.get() {
                0 => len,
                r => r.min(len),
            };
            self.want_room.set(room);
            self.set(WANT_DRAIN);
            // Not due yet (the queue is above cap - len): the flushes that
            // shrink the queue run it.
            return Err(Errno(libc::ENOBUFS));
        }
        let mut sent = 0;
        if queued == 0 && !self.has(CONNECTING) {
            while sent < data.len() {
                match socket::send(self.fd(), &data[sent..]) {
                    Ok(n) => sent += n,
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => break,
                    Err(e) => {
                        // Reported from the next event, never from inside `write`.
                        self.error.set(-e.0);
                        self.set(FAILED);
                        self.update_mask(lp);
                        return Ok(());
                    }
                }
            }
            if sent > 0 {
                TcpStats::add(&self.ctx.stats.bytes_out, sent as u64);
                self.touch(lp);
            }
        }
        if sent < data.len() {
            self.queue.borrow_mut().push(&data[sent..]);
            if self.queued() > self.low_water.get() as usize {
                self.set(WANT_DRAIN);
            }
            self.update_mask(lp);
        }
        Ok(())
    }

    /// What [`Conn::write`] would answer for `len` bytes before looking at them:
    /// `EPIPE` once the connection is closing, shut down or closed, `EMSGSIZE`
    /// for more than the cap. `Ok` means `len <= max_queue <= Limits::MAX_QUEUE`,
    /// so the C boundary checks a caller's length here before it makes a slice
    /// of it (a length over `isize::MAX` must never become one).
    pub fn check_write_len(&self, len: usize) -> Result<()> {
        if self.flags.get() & (CLOSING | CLOSED | FAILED | SHUT_PENDING | SHUT_DONE) != 0 {
            return Err(Errno(libc::EPIPE));
        }
        if len > self.max_queue.get() as usize {
            // Could never fit, whatever drains: say so instead of ENOBUFS.
            return Err(Errno(libc::EMSGSIZE));
        }
        Ok(())
    }

    /// Stops reading (the kernel's receive buffer then fills and TCP pushes back).
    pub fn pause(&self, lp: &EventLoop) {
        self.set(PAUSED);
        self.update_mask(lp);
    }

    /// Resumes reading after [`Conn::pause`].
    pub fn resume(&self, lp: &EventLoop) {
        self.clear(PAUSED);
        self.update_mask(lp);
    }

    /// Sends what is queued, then half-closes (FIN); reading goes on, and the
    /// connection closes once the peer's EOF arrives too. Later writes fail with
    /// `EPIPE`. `EPIPE` if closing or closed.
    pub fn shutdown(self: &Rc<Self>, lp: &EventLoop) -> Result<()> {
        if self.flags.get() & (CLOSING | CLOSED) != 0 {
            return Err(Errno(libc::EPIPE));
        }
        if self.flags.get() & (SHUT_PENDING | SHUT_DONE) != 0 {
            return Ok(());
        }
        self.set(SHUT_PENDING);
        if self.queued() == 0 && !self.has(CONNECTING) && !self.has(FAILED) {
            self.do_shutdown(lp);
        }
        Ok(())
    }

    fn do_shutdown(self: &Rc<Self>, lp: &EventLoop) {
        self.clear(SHUT_PENDING);
        self.set(SHUT_DONE);
        if let Err(e) = socket::shutdown_write(self.fd()) {
            self.close_now(lp, -e.0);
            return;
        }
        if self.has(EOF) {
            self.close_now(lp, 0);
        }
    }

    /// Stops delivering data, sends what is queued, then closes (`on_close(0)`).
    /// While connecting: with nothing queued it closes at once (no `on_open`);
    /// otherwise `on_open` still runs when the connect completes, the queue is
    /// sent, then the connection closes (a failed connect reports its error).
    ///
    /// The close timeout ([`Conn::set_close_timeout`], default
    /// [`CLOSE_TIMEOUT_MS`]) bounds all of it, from this call: the flush (a
    /// peer that stops reading would otherwise hold it forever), a connect
    /// still in progress, and the lingering below. When it expires the
    /// connection is reset: `on_close(-ETIMEDOUT)`, or `on_close(0)` if it
    /// was lingering and the peer had acknowledged every byte (nothing is lost).
    ///
    /// # Implementation notes
    /// Closing a socket whose receive buffer holds unread bytes makes Linux send
    /// RST and drop what is still in flight to the peer, so a plain `close` after
    /// the flush could lose bytes already written. Unless the peer already sent
    /// EOF, the connection therefore "lingers" (as nginx's lingering close does):
    /// it sends FIN with `shutdown(SHUT_WR)`, reads and discards until the peer's
    /// EOF, then closes. After [`LINGER_MS`] it resets instead, with
    /// `on_close(0)`, once the peer has acknowledged every byte (`SIOCOUTQ` is
    /// 0: the reset cannot destroy any); until then it keeps lingering, within
    /// the close timeout. A reset with bytes unacknowledged reports `-ETIMEDOUT`.
    pub fn close(self: &Rc<Self>, lp: &EventLoop) {
        if self.flags.get() & (CLOSING | CLOSED) != 0 {
            return;
        }
        self.set(CLOSING);
        self.arm_close_deadline(lp);
        if self.has(CONNECTING) {
            // Nothing to send: no need to wait for the connect, flush or linger.
            // Bytes written while connecting, though, go out once it completes
            // (`on_open` runs, then the flush closes): a close must not drop them.
            if self.queued() == 0 {
                self.close_now(lp, 0);
            }
        } else if self.queued() == 0 && !self.has(FAILED) {
            self.finish_close(lp);
        } else {
            self.update_mask(lp);
        }
    }

    /// The queue is empty and a close was asked for (or EOF seen): close now if
    /// the peer is done sending, otherwise half-close and linger.
    fn finish_close(self: &Rc<Self>, lp: &EventLoop) {
        if self.flags.get() & (EOF | LINGER) != 0 {
            self.close_now(lp, 0);
            return;
        }
        if !self.has(SHUT_DONE) && socket::shutdown_write(self.fd()).is_err() {
            self.close_now(lp, 0);
            return;
        }
        self.set(LINGER | SHUT_DONE);
        self.stop_timer(lp);
        self.linger_for(lp, LINGER_MS);
        self.update_mask(lp);
    }

    /// Lingers `ms` more, then resets if the peer has acknowledged everything,
    /// else looks again every [`LINGER_POLL_MS`] (the close deadline, if any,
    /// ends it).
    fn linger_for(self: &Rc<Self>, lp: &EventLoop, ms: u64) {
        let weak = Rc::downgrade(self);
        let id = lp.timer_start(
            ms,
            0,
            Rc::new(move |lp: &EventLoop, _| {
                let Some(c) = weak.upgrade() else { return };
                c.timer.set(0);
                if c.is_closed() {
                    return;
                }
                if c.all_acknowledged() {
                    c.abort(lp, 0);
                } else {
                    c.linger_for(lp, LINGER_POLL_MS);
                }
            }),
        );
        self.timer.set(id);
    }

    /// Lingering, and the peer acknowledged every byte (and our FIN): a reset
    /// now destroys nothing. False when unknown.
    fn all_acknowledged(&self) -> bool {
        self.has(LINGER) && socket::unacked(self.fd()) == Ok(0)
    }

    /// Limits the whole of a close (flush, connect, linger): when it expires,
    /// the connection resets. `ms` 0: no limit (flushing may then wait forever
    /// for a peer that does not read; lingering waits until the peer has
    /// acknowledged every byte). Default [`CLOSE_TIMEOUT_MS`]. `EPIPE` once a
    /// close was asked for, or the connection is closed.
    pub fn set_close_timeout(&self, ms: u32) -> Result<()> {
        if self.is_closing() {
            return Err(Errno(libc::EPIPE));
        }
        self.close_timeout_ms.set(ms);
        Ok(())
    }

    /// The close timeout in milliseconds (0: none).
    pub fn close_timeout(&self) -> u32 {
        self.close_timeout_ms.get()
    }

    fn arm_close_deadline(self: &Rc<Self>, lp: &EventLoop) {
        let ms = self.close_timeout_ms.get();
        if ms == 0 {
            return;
        }
        let weak = Rc::downgrade(self);
        let id = lp.timer_start(
            u64::from(ms),
            0,
            Rc::new(move |lp: &EventLoop, _| {
                let Some(c) = weak.upgrade() else { return };
                c.close_timer.set(0);
                if c.is_closed() {
                    return;
                }
                let error = if c.all_acknowledged() {
                    0
                } else {
                    -libc::ETIMEDOUT
                };
                c.abort(lp, error);
            }),
        );
        self.close_timer.set(id);
    }

    /// Closes an idle connection at once, without lingering: a FIN when nothing
    /// is queued (an idle peer has sent nothing we have not read), else a reset.
    /// `on_close(0)` or `on_close(-ETIMEDOUT)`.
    pub fn close_idle(self: &Rc<Self>, lp: &EventLoop) {
        if self.queued() == 0 && self.flags.get() & (FAILED | CONNECTING) == 0 {
            self.close_now(lp, 0);
        } else {
            self.abort(lp, -libc::ETIMEDOUT);
        }
    }

    /// Closes at once, discarding the queue, with RST (`SO_LINGER` 0); `on_close(error)`.
    pub fn abort(self: &Rc<Self>, lp: &EventLoop, error: i32) {
        if self.has(CLOSED) {
            return;
        }
        let _ = socket::set_linger_zero(self.fd());
        self.close_now(lp, error);
    }

    /// Closes the connection after `ms` milliseconds without a successful read
    /// or write (or, while connecting, `ms` after this call): `on_close(-ETIMEDOUT)`.
    /// 0 turns it off. One timer per period, not one per read.
    pub fn set_timeout(self: &Rc<Self>, lp: &EventLoop, ms: u32) -> Result<()> {
        if self.is_closing() {
            return Err(Errno(libc::EPIPE));
        }
        self.timeout_ms.set(ms);
        if self.has(LINGER) {
            return Ok(());
        }
        self.stop_timer(lp);
        if self.has(CONNECTING) {
            self.touch(lp);
        }
        if ms > 0 {
            self.arm_timeout(lp, u64::from(ms));
        }
        Ok(())
    }

    fn stop_timer(&self, lp: &EventLoop) {
        let t = self.timer.replace(0);
        if t != 0 {
            let _ = lp.timer_stop(t);
        }
    }

    fn arm_timeout(self: &Rc<Self>, lp: &EventLoop, after: u64) {
        let weak = Rc::downgrade(self);
        let id = lp.timer_start(
            after,
            0,
            Rc::new(move |lp: &EventLoop, _| {
                let Some(c) = weak.upgrade() else { return };
                c.timer.set(0);
                let limit = u64::from(c.timeout_ms.get());
                if limit == 0 || c.is_closed() || c.has(LINGER) {
                    return;
                }
                let idle = now_ms().saturating_sub(c.last_active_ms());
                if idle >= limit {
                    c.abort(lp, -libc::ETIMEDOUT);
                } else {
                    c.arm_timeout(lp, limit - idle);
                }
            }),
        );
        self.timer.set(id);
    }

    fn close_now(self: &Rc<Self>, lp: &EventLoop, error: i32) {
        if self.has(CLOSED) {
            return;
        }
        self.set(CLOSED);
        self.stop_timer(lp);
        let t = self.close_timer.replace(0);
        if t != 0 {
            let _ = lp.timer_stop(t);
        }
        let _ = lp.unregister(self.fd());
        *self.queue.borrow_mut() = WriteQueue::default();
        self.handler.on_close(lp, self, error);
        // The descriptor closes when the last `Rc<Conn>` goes (the loop's
        // registration held one; it is dropped once this dispatch returns).
    }

    fn connected(self: &Rc<Self>, lp: &EventLoop, events: u32) {
        let err = match socket::take_error(self.fd()) {
            Ok(None) if events & (libc::EPOLLERR as u32 | HUP) == 0 => None,
            Ok(None) => Some(Errno(libc::ECONNREFUSED)),
            Ok(Some(e)) | Err(e) => Some(e),
        };
        if let Some(e) = err {
            self.close_now(lp, -e.0);
            return;
        }
        self.clear(CONNECTING);
        self.touch(lp);
        self.handler.on_open(lp, self);
        if self.is_closed() {
            return;
        }
        if self.queued() == 0 && self.has(SHUT_PENDING) {
            self.do_shutdown(lp);
        }
    }

    fn on_event(self: &Rc<Self>, lp: &EventLoop, events: u32) {
        if self.has(CLOSED) {
            return;
        }
        if self.has(CONNECTING) {
            self.connected(lp, events);
            if self.has(CLOSED) {
                return;
            }
            if self.queued() > 0 {
                self.flush(lp);
            }
            self.update_mask(lp);
            return;
        }
        if self.has(FAILED) {
            self.close_now(lp, self.error.get());
            return;
        }
        if events & libc::EPOLLERR as u32 != 0 {
            let e = socket::take_error(self.fd())
                .ok()
                .flatten()
                .unwrap_or(Errno(libc::EIO));
            self.close_now(lp, -e.0);
            return;
        }
        if events & OUT != 0 {
            self.flush(lp);
            if self.has(CLOSED) {
                return;
            }
        }
        if events & (IN | RDHUP | HUP) != 0 {
            if self.wants_read() {
                self.read(lp);
                if self.has(CLOSED) {
                    return;
                }
            } else if events & HUP != 0
                && self.has(PAUSED)
                && self.flags.get() & (EOF | CLOSING | FAILED) == 0
            {
                // Paused: what the peer sent before its FIN may still be unread.
                // Keep it for `resume` (closing now would drop it).
                self.set(HUP_PARKED);
            } else if events & HUP != 0 {
                // Both directions are gone and we are not reading: nothing more can be sent.
                self.close_now(
                    lp,
                    if self.queued() > 0 {
                        -libc::ECONNRESET
                    } else {
                        0
                    },
                );
                return;
            }
        }
        self.update_mask(lp);
    }

    fn peer_eof(self: &Rc<Self>, lp: &EventLoop) {
        self.set(EOF);
        if self.has(LINGER) {
            self.close_now(lp, 0);
        } else if self.has(HALF_OPEN) && !self.has(CLOSING) {
            self.handler.on_eof(lp, self);
            if !self.is_closed() && self.has(SHUT_DONE) {
                self.close_now(lp, 0);
            }
        } else if self.queued() == 0 && !self.has(SHUT_PENDING) {
            self.close_now(lp, 0);
        }
        // Otherwise the flush closes it once the queue is empty.
    }

    fn read(self: &Rc<Self>, lp: &EventLoop) {
        let mut buf = self.ctx.read_buf.take();
        if buf.len() < READ_BUFFER {
            buf = vec![0; READ_BUFFER];
        }
        for _ in 0..READS_PER_EVENT {
            if !self.wants_read() {
                break;
            }
            match socket::recv(self.fd(), &mut buf) {
                Ok(0) => {
                    self.peer_eof(lp);
                    break;
                }
                Ok(_) if self.has(LINGER) => {
                    // Closing: the application asked for no more data.
                }
                Ok(n) => {
                    TcpStats::add(&self.ctx.stats.bytes_in, n as u64);
                    self.touch(lp);
                    self.handler.on_data(lp, self, &buf[..n]);
                    if n < buf.len() {
                        break;
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(e) => {
                    self.close_now(lp, -e.0);
                    break;
                }
            }
        }
        self.ctx.read_buf.set(buf);
    }

    fn flush(self: &Rc<Self>, lp: &EventLoop) {
        let mut sent_total = 0u64;
        loop {
            let r = {
                let q = self.queue.borrow();
                if q.len() == 0 {
                    break;
                }
                socket::send(self.fd(), q.front())
            };
            match r {
                Ok(n) => {
                    self.queue.borrow_mut().consume(n);
                    sent_total += n as u64;
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(e) => {
                    self.close_now(lp, -e.0);
                    return;
                }
            }
        }
        if sent_total > 0 {
            TcpStats::add(&self.ctx.stats.bytes_out, sent_total);
            self.touch(lp);
        }
        let queued = self.queued();
        if queued == 0 {
            if self.has(CLOSING) || (self.has(EOF) && !self.has(HALF_OPEN)) {
                self.finish_close(lp);
                return;
            }
            if self.has(SHUT_PENDING) {
                self.do_shutdown(lp);
                if self.is_closed() {
                    return;
                }
            }
        }
        self.maybe_drain(lp);
    }

    /// The queue level at or below which a waiting writer gets `on_drain`:
    /// the low-water mark, lowered so that the smallest refused write fits.
    /// At worst 0, which an emptied queue always reaches.
    fn drain_level(&self) -> usize {
        let room_left = self.max_queue.get().saturating_sub(self.want_room.get());
        self.low_water.get().min(room_left) as usize
    }

    /// Runs `on_drain` if a writer waits for it and the queue is at or below
    /// [`Conn::drain_level`]. Not while connecting: `on_open` comes first (the
    /// flush after the connect completes checks again). Not once writes are
    /// refused with `EPIPE` (closing, shut down, failed): nothing could follow.
    fn maybe_drain(self: &Rc<Self>, lp: &EventLoop) {
        const NO_WRITES: u16 = CLOSED | CLOSING | FAILED | SHUT_PENDING | SHUT_DONE;
        if self.flags.get() & (NO_WRITES | CONNECTING) != 0 || !self.has(WANT_DRAIN) {
            return;
        }
        if self.queued() <= self.drain_level() {
            self.clear(WANT_DRAIN);
            self.want_room.set(0);
            self.handler.on_drain(lp, self);
        }
    }

    /// Flushes run `on_drain` as the queue falls; but when new limits put a
    /// waiting writer's queue where `on_drain` is due already, no flush may
    /// come (the peer may read nothing more): check from a zero-delay timer,
    /// i.e. on the next loop turn, never from inside the caller.
    fn drain_soon(self: &Rc<Self>, lp: &EventLoop) {
        if !self.has(WANT_DRAIN)
            || self.flags.get() & (DRAIN_SOON | CLOSED) != 0
            || self.queued() > self.drain_level()
        {
            return;
        }
        self.set(DRAIN_SOON);
        let weak = Rc::downgrade(self);
        lp.timer_start(
            0,
            0,
            Rc::new(move |lp: &EventLoop, _| {
                if let Some(c) = weak.upgrade() {
                    c.clear(DRAIN_SOON);
                    c.maybe_drain(lp);
                }
            }),
        );
    }
}

/// Called for each accepted connection with its socket.
pub type AcceptCallback = Box<dyn Fn(&EventLoop, OwnedFd)>;

/// A listening socket registered on a loop.
pub struct Listener {
    fd: OwnedFd,
    reserve: RefCell<Option<OwnedFd>>,
    on_accept: AcceptCallback,
    stats: std::sync::Arc<TcpStats>,
    closed: Cell<bool>,
    backoff_timer: Cell<u64>,
    on_error: Box<dyn Fn(Errno)>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("fd", &self.fd).finish()
    }
}

impl Listener {
    /// Registers a listening socket (from [`socket::tcp_listen`]) on `lp`.
    /// `on_error` hears about each failed accept (after it was handled).
    pub fn open(
        lp: &EventLoop,
        fd: OwnedFd,
        stats: std::sync::Arc<TcpStats>,
        on_accept: AcceptCallback,
        on_error: Box<dyn Fn(Errno)>,
    ) -> Result<Rc<Listener>> {
        let l = Rc::new(Listener {
            fd,
            reserve: RefCell::new(socket::open_reserve().ok()),
            on_accept,
            stats,
            closed: Cell::new(false),
            backoff_timer: Cell::new(0),
            on_error,
        });
        let l2 = l.clone();
        lp.register(
            l.fd.as_raw_fd(),
            IN,
            Rc::new(move |lp: &EventLoop, _fd, _ev| l2.accept_ready(lp)),
        )?;
        Ok(l)
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        socket::local_addr(self.fd.as_raw_fd())
    }

    /// Stops accepting and unregisters (the socket closes when the last reference goes).
    pub fn close(&self, lp: &EventLoop) {
        if self.closed.replace(true) {
            return;
        }
        let t = self.backoff_timer.replace(0);
        if t != 0 {
            let _ = lp.timer_stop(t);
        }
        let _ = lp.unregister(self.fd.as_raw_fd());
    }

    fn accept_ready(self: &Rc<Self>, lp: &EventLoop) {
        for _ in 0..ACCEPTS_PER_EVENT {
            if self.closed.get() {
                return;
            }
            match socket::accept(&self.fd) {
                Ok(fd) => (self.on_accept)(lp, fd),
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(e) if e.0 == libc::ECONNABORTED || e.0 == libc::EPROTO => continue,
                Err(e) if e.0 == libc::EMFILE || e.0 == libc::ENFILE => {
                    TcpStats::add(&self.stats.accept_errors, 1);
                    (self.on_error)(e);
                    if !self.shed_one() {
                        self.back_off(lp);
                        return;
                    }
                }
                Err(e) => {
                    // ENOBUFS, ENOMEM and friends: transient; pause instead of spinning.
                    TcpStats::add(&self.stats.accept_errors, 1);
                    (self.on_error)(e);
                    self.back_off(lp);
                    return;
                }
            }
        }
    }

    /// The reserve-fd trick: frees the spare descriptor, accepts the pending
    /// connection and closes it at once (the client sees a clean close, the
    /// backlog shrinks), then takes the spare back. False when it could not help.
    fn shed_one(&self) -> bool {
        let Some(spare) = self.reserve.borrow_mut().take() else {
            return false;
        };
        drop(spare);
        let shed = socket::accept(&self.fd);
        let ok = shed.is_ok();
        if ok {
            TcpStats::add(&self.stats.rejected, 1);
            TcpStats::add(&self.stats.accepted, 1);
            TcpStats::add(&self.stats.closed, 1);
        }
        drop(shed);
        *self.reserve.borrow_mut() = socket::open_reserve().ok();
        ok
    }

    fn back_off(self: &Rc<Self>, lp: &EventLoop) {
        if self.backoff_timer.get() != 0 || lp.modify(self.fd.as_raw_fd(), 0).is_err() {
            return;
        }
        self.rearm_later(lp);
    }

    /// Re-arms accepting after [`ACCEPT_BACKOFF_MS`]. Should re-arming fail
    /// (`epoll_ctl`), it tries again one period later: giving up would leave the
    /// listener disarmed, accepting nothing ever again (found by fault injection).
    fn rearm_later(self: &Rc<Self>, lp: &EventLoop) {
        let l = self.clone();
        let id = lp.timer_start(
            ACCEPT_BACKOFF_MS,
            0,
            Rc::new(move |lp: &EventLoop, _| {
                l.backoff_timer.set(0);
                if !l.closed.get() {
                    if l.reserve.borrow().is_none() {
                        *l.reserve.borrow_mut() = socket::open_reserve().ok();
                    }
                    if lp.modify(l.fd.as_raw_fd(), IN).is_err() {
                        l.rearm_later(lp);
                    }
                }
            }),
        );
        self.backoff_timer.set(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    #[derive(Default)]
    struct Record {
        data: RefCell<Vec<u8>>,
        drains: Cell<u32>,
        closes: RefCell<Vec<i32>>,
        opened: Cell<bool>,
        /// An `on_drain` came before `on_open`.
        drain_before_open: Cell<bool>,
        /// Inside a `write` call made by the test (an `on_drain` then is re-entrant).
        in_write: Cell<bool>,
        reentrant_drain: Cell<bool>,
        queued_at_drain: Cell<usize>,
    }

    impl ConnHandler for Record {
        fn on_open(&self, _: &EventLoop, _: &Rc<Conn>) {
            self.opened.set(true);
        }
        fn on_data(&self, _: &EventLoop, _: &Rc<Conn>, data: &[u8]) {
            self.data.borrow_mut().extend_from_slice(data);
        }
        fn on_drain(&self, _: &EventLoop, conn: &Rc<Conn>) {
            self.drains.set(self.drains.get() + 1);
            self.queued_at_drain.set(conn.queued());
            self.drain_before_open
                .set(self.drain_before_open.get() || !self.opened.get());
            self.reentrant_drain
                .set(self.reentrant_drain.get() || self.in_write.get());
        }
        fn on_close(&self, _: &EventLoop, _: &Rc<Conn>, error: i32) {
            self.closes.borrow_mut().push(error);
        }
    }

    /// A loop, a connection on it wrapping the server side, and the client socket.
    fn pair(max_queue: usize, low: usize) -> (EventLoop, Rc<Conn>, Rc<Record>, TcpStream) {
        let l = socket::tcp_listen(&"127.0.0.1:0".parse().unwrap(), 0, false).unwrap();
        let addr = socket::local_addr(l.as_raw_fd()).unwrap();
        let client = TcpStream::connect(addr).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let fd = loop {
            match socket::accept(&l) {
                Ok(fd) => break fd,
                Err(Errno::EAGAIN) if Instant::now() < deadline => std::thread::yield_now(),
                Err(e) => panic!("accept: {e}"),
            }
        };
        let lp = EventLoop::new().unwrap();
        let rec = Rc::new(Record::default());
        let ctx = TcpContext::new(Default::default());
        let conn = Conn::open(
            &lp,
            fd,
            ctx,
            rec.clone(),
            Limits {
                max_queue,
                low_water: low,
            },
        )
        .unwrap();
        (lp, conn, rec, client)
    }

    /// `conn.write`, noting that a write is in progress (for `reentrant_drain`).
    fn write(lp: &EventLoop, conn: &Rc<Conn>, rec: &Record, data: &[u8]) -> Result<()> {
        rec.in_write.set(true);
        let r = conn.write(lp, data);
        rec.in_write.set(false);
        r
    }

    /// Writes `chunk`s (cap permitting) until the socket refuses and bytes queue.
    fn fill_socket(lp: &EventLoop, conn: &Rc<Conn>, rec: &Record) -> usize {
        let chunk = vec![3u8; 256 * 1024];
        let mut sent = 0;
        while conn.queued() == 0 {
            write(lp, conn, rec, &chunk).unwrap();
            sent += chunk.len();
            assert!(sent < 512 << 20, "the socket took everything");
        }
        sent
    }

    fn poll_until(lp: &EventLoop, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "condition not reached in 5 s");
            lp.poll(50).unwrap();
        }
    }

    #[test]
    fn data_is_delivered_and_eof_closes_once_with_zero() {
        let (lp, conn, rec, mut client) = pair(1 << 20, 1 << 10);
        client.write_all(b"hello").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        poll_until(&lp, || !rec.closes.borrow().is_empty());
        assert_eq!(&rec.data.borrow()[..], b"hello");
        assert_eq!(*rec.closes.borrow(), vec![0]);
        assert!(conn.is_closed());
        assert_eq!(conn.write(&lp, b"x"), Err(Errno(libc::EPIPE)));
        conn.close(&lp);
        conn.abort(&lp, -1);
        assert_eq!(rec.closes.borrow().len(), 1, "on_close runs exactly once");
    }

    #[test]
    fn writes_queue_only_the_rest_and_refuse_past_the_cap() {
        let (lp, conn, rec, mut client) = pair(256 * 1024, 16 * 1024);
        // Fill the socket: the first write goes straight out, later ones queue.
        let chunk = vec![1u8; 64 * 1024];
        let mut accepted = 0usize;
        loop {
            match conn.write(&lp, &chunk) {
                Ok(()) => accepted += chunk.len(),
                Err(Errno(libc::ENOBUFS)) => break,
                Err(e) => panic!("{e}"),
            }
            assert!(accepted < 64 << 20, "the cap never applied");
        }
        assert!(conn.queued() <= 256 * 1024);
        assert!(
            conn.queued() + chunk.len() > 256 * 1024,
            "refused only past the cap"
        );
        // The client drains everything; on_drain fires once the queue is low.
        let mut got = vec![0u8; accepted];
        let reader = std::thread::spawn(move || {
            client.read_exact(&mut got).unwrap();
            (client, got)
        });
        poll_until(&lp, || conn.queued() == 0);
        let (_client, got) = reader.join().unwrap();
        assert!(got.iter().all(|&b| b == 1));
        assert_eq!(rec.drains.get(), 1);
    }

    /// The reproduction: cap 1000, low water 500, 10 bytes queued (written while
    /// connecting), `write(995)` is refused with ENOBUFS although the queue is
    /// far below low water. The queue drains to 0 and `on_drain` must come (it
    /// never did: it fired only after the queue had been above low water);
    /// after `on_open`, never from inside the refused write.
    #[test]
    fn enobufs_below_low_water_still_gets_on_drain_after_connecting() {
        let l = socket::tcp_listen(&"127.0.0.1:0".parse().unwrap(), 0, false).unwrap();
        let addr = socket::local_addr(l.as_raw_fd()).unwrap();
        let lp = EventLoop::new().unwrap();
        let rec = Rc::new(Record::default());
        let limits = Limits {
            max_queue: 1000,
            low_water: 500,
        };
        let ctx = TcpContext::new(Default::default());
        let conn = Conn::connect(&lp, &addr, ctx, rec.clone(), limits).unwrap();
        write(&lp, &conn, &rec, &[1; 10]).unwrap();
        assert_eq!(conn.queued(), 10);
        assert_eq!(
            write(&lp, &conn, &rec, &[2; 995]),
            Err(Errno(libc::ENOBUFS))
        );
        assert_eq!(conn.queued(), 10, "a refused write queues nothing");
        assert_eq!(
            write(&lp, &conn, &rec, &[2; 1001]),
            Err(Errno(libc::EMSGSIZE))
        );
        poll_until(&lp, || rec.drains.get() > 0);
        assert!(rec.opened.get());
        assert!(!rec.drain_before_open.get(), "on_drain before on_open");
        assert!(!rec.reentrant_drain.get(), "on_drain inside write");
        poll_until(&lp, || conn.queued() == 0);
        lp.poll(20).unwrap();
        assert_eq!(rec.drains.get(), 1, "once per refusal");
        let peer = socket::accept(&l).unwrap();
        let mut got = [0u8; 16];
        let n = socket::recv(peer.as_raw_fd(), &mut got).unwrap();
        assert_eq!(&got[..n], &[1; 10]);
    }

    /// A connected socket that takes nothing more (the peer does not read),
    /// bytes queued at or below low water, and a write too large for the rest
    /// of the cap: no `on_drain` while the write could not fit (waking the
    /// writer would only make it spin), none from inside `write`; new limits
    /// under which it fits bring `on_drain` on the next loop turn (not from
    /// inside `set_limits`), and the retry fits. Then the peer reads: the next
    /// refused write gets `on_drain` once the queue fell enough for it. EMSGSIZE
    /// gets none.
    #[test]
    fn enobufs_gets_on_drain_once_the_refused_write_fits() {
        let (lp, conn, rec, mut client) = pair(64 << 20, 32 << 20);
        fill_socket(&lp, &conn, &rec);
        lp.poll(0).unwrap();
        let q = conn.queued();
        assert!(q > 0 && q <= 256 * 1024);
        assert_eq!(rec.drains.get(), 0);
        let limits = |max_queue, low_water| Limits {
            max_queue,
            low_water,
        };
        conn.set_limits(&lp, limits(q + 100, q + 50)).unwrap();
        // One byte more than the rest of the cap (should the kernel have taken
        // a few more bytes meanwhile, the rest is larger).
        let len = q + 100 - conn.queued() + 1;
        for _ in 0..3 {
            assert_eq!(
                write(&lp, &conn, &rec, &vec![4; len]),
                Err(Errno(libc::ENOBUFS))
            );
        }
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline {
            lp.poll(10).unwrap();
        }
        assert_eq!(rec.drains.get(), 0, "on_drain while the write cannot fit");

        conn.set_limits(&lp, limits(q + 1000, q + 50)).unwrap();
        assert_eq!(rec.drains.get(), 0, "not from inside set_limits");
        poll_until(&lp, || rec.drains.get() > 0);
        assert!(!rec.reentrant_drain.get());
        write(&lp, &conn, &rec, &vec![4; len]).expect("the retry fits");
        for _ in 0..5 {
            lp.poll(0).unwrap();
        }
        assert_eq!(rec.drains.get(), 1, "one on_drain for the refusals");

        // EMSGSIZE is no wait-for-drain refusal.
        assert_eq!(
            write(&lp, &conn, &rec, &vec![4; q + 1001]),
            Err(Errno(libc::EMSGSIZE))
        );
        for _ in 0..5 {
            lp.poll(0).unwrap();
        }
        assert_eq!(rec.drains.get(), 1);

        // Low water just under the cap: a refusal waits for the queue to fall
        // until the write fits, below low water.
        let q = conn.queued();
        conn.set_limits(&lp, limits(q + 100, q + 99)).unwrap();
        let len = 1000;
        assert_eq!(
            write(&lp, &conn, &rec, &vec![4; len]),
            Err(Errno(libc::ENOBUFS))
        );
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            client.read_to_end(&mut v).map(|_| v.len())
        });
        poll_until(&lp, || rec.drains.get() == 2);
        let at = rec.queued_at_drain.get();
        assert!(
            at <= q + 100 - len,
            "on_drain with {at} queued: {len} do not fit"
        );
        write(&lp, &conn, &rec, &vec![4; len]).expect("the retry fits");
        assert!(!rec.reentrant_drain.get());
        conn.close(&lp);
        poll_until(&lp, || !rec.closes.borrow().is_empty());
        assert_eq!(*rec.closes.borrow(), vec![0]);
        assert!(reader.join().unwrap().unwrap() > q);
    }

    #[test]
    fn close_flushes_then_closes() {
        let (lp, conn, rec, mut client) = pair(8 << 20, 0);
        let data: Vec<u8> = (0..4_000_000u32).map(|i| i as u8).collect();
        conn.write(&lp, &data).unwrap();
        conn.close(&lp);
        let reader = std::thread::spawn(move || {
            let mut v = Vec::new();
            client.read_to_end(&mut v).unwrap();
            v
        });
        poll_until(&lp, || !rec.closes.borrow().is_empty());
        drop(conn);
        assert_eq!(reader.join().unwrap(), data);
        assert_eq!(*rec.closes.borrow(), vec![0]);
    }

    /// A close to a peer that reads nothing ends at the close timeout with a
    /// reset and `-ETIMEDOUT`; the timeout cannot change once closing.
    #[test]
    fn close_to_a_stuck_peer_ends_at_the_close_timeout() {
        let (lp, conn, rec, _client) = pair(64 << 20, 1 << 20);
        assert_eq!(conn.close_timeout(), CLOSE_TIMEOUT_MS);
        conn.set_close_timeout(200).unwrap();
        fill_socket(&lp, &conn, &rec);
        let t0 = Instant::now();
        conn.close(&lp);
        assert_eq!(conn.set_close_timeout(0), Err(Errno(libc::EPIPE)));
        poll_until(&lp, || !rec.closes.borrow().is_empty());
        assert!(t0.elapsed() >= Duration::from_millis(195));
        assert_eq!(*rec.closes.borrow(), vec![-libc::ETIMEDOUT]);
    }

    /// Caps stay at or below `Limits::MAX_QUEUE` (so a chunk that passes
    /// `check_write_len` is a valid slice length), and `check_write_len`
    /// answers any length, `usize::MAX` included, without arithmetic on it.
    #[test]
    fn write_lengths_are_checked_against_a_bounded_cap() {
        assert!(Limits::MAX_QUEUE <= isize::MAX as usize);
        assert!(Limits::MAX_QUEUE <= u32::MAX as usize);
        let l = |max_queue, low_water| Limits {
            max_queue,
            low_water,
        };
        assert!(l(Limits::MAX_QUEUE, 0).validate().is_ok());
        for bad in [
            l(Limits::MAX_QUEUE + 1, 0),
            l(usize::MAX, 0),
            l(0, 0),
            l(10, 10),
        ] {
            assert_eq!(bad.validate(), Err(Errno::EINVAL), "{bad:?}");
        }
        let (lp, conn, _rec, _client) = pair(1000, 500);
        for len in [usize::MAX, isize::MAX as usize + 1, 1001] {
            assert_eq!(conn.check_write_len(len), Err(Errno(libc::EMSGSIZE)));
        }
        assert_eq!(conn.check_write_len(1000), Ok(()));
        conn.close(&lp);
        assert_eq!(conn.check_write_len(usize::MAX), Err(Errno(libc::EPIPE)));
    }

    #[test]
    fn reset_by_peer_reports_an_error() {
        let (lp, conn, rec, client) = pair(1 << 20, 0);
        socket::set_linger_zero(client.as_raw_fd()).unwrap();
        drop(client);
        poll_until(&lp, || !rec.closes.borrow().is_empty());
        assert_eq!(*rec.closes.borrow(), vec![-libc::ECONNRESET]);
        assert!(conn.is_closed());
    }
}
