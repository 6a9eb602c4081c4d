//! [`Conn`]: a buffered, bounded, non-blocking connection on a loop: its state,
//! reading, writing and backpressure. Closing is in `close.rs`.

use super::write_queue::WriteQueue;
use super::{CLOSE_TIMEOUT_MS, ConnHandler, Limits, READ_BUFFER, TcpContext, TcpStats};
use crate::event_loop::{EventLoop, HUP, IN, ONESHOT, OUT, RDHUP};
use crate::sys::{Errno, Result, socket};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};

/// Where a connection is in its life. A connection moves only forward
/// through these (`Connecting` → `Open` → `Flushing` → `Lingering` →
/// `Closed`, skipping any), each move in one place, named where it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Phase {
    /// An outgoing connect is in progress; `EPOLLOUT` tells when it is done.
    /// (With [`sw::CLOSE_AFTER_CONNECT`], a close was asked for meanwhile,
    /// with bytes queued: they go out once connected, then it closes.)
    Connecting,
    /// Established: reading and writing.
    Open,
    /// A close was asked for: no more data is delivered; what is queued is sent.
    Flushing,
    /// The queue is sent and our FIN is out; reading and discarding until the
    /// peer's EOF (or the linger or close timeout), so that closing with
    /// unread input does not turn into a reset that destroys bytes in flight.
    Lingering,
    /// Unregistered; `on_close` is delivered (or on its way, from the loop).
    Closed,
}

/// Switches independent of the [`Phase`] (bits of [`Conn::switches`]).
pub(super) mod sw {
    /// Reading paused by the application.
    pub const PAUSED: u16 = 1;
    /// The peer sent EOF; nothing more will be read.
    pub const PEER_EOF: u16 = 2;
    /// A writer waits for `on_drain` (a write was refused, or the queue went
    /// above the low-water mark).
    pub const WANT_DRAIN: u16 = 4;
    /// A send failed; the error is reported from the next event.
    pub const FAILED: u16 = 8;
    /// `shutdown` was asked for: flush, then send FIN.
    pub const SHUT_PENDING: u16 = 16;
    /// Our FIN is sent: no more writes.
    pub const SHUT_DONE: u16 = 32;
    /// The peer's EOF does not close: the application decides (`on_eof`).
    pub const HALF_OPEN: u16 = 64;
    /// A failed `epoll_ctl(MOD)` is retried from a timer.
    pub const MASK_RETRY: u16 = 128;
    /// `EPOLLHUP` (both directions shut) came while paused, with the peer's
    /// bytes and EOF possibly unread: they wait for `resume`. HUP cannot be
    /// masked out, so while not reading the registration is one-shot.
    pub const HUP_PARKED: u16 = 256;
    /// A zero-delay timer will check for `on_drain`.
    pub const DRAIN_SOON: u16 = 512;
    /// Connecting, and a close was asked for (bytes are queued): flush once
    /// connected, then close.
    pub const CLOSE_AFTER_CONNECT: u16 = 1024;
}
use sw::*;

/// How soon a failed `epoll_ctl(MOD)` is retried.
const MASK_RETRY_MS: u64 = 10;

/// A buffered, non-blocking TCP connection registered on a loop.
pub struct Conn {
    pub(super) fd: OwnedFd,
    pub(super) phase: Cell<Phase>,
    pub(super) switches: Cell<u16>,
    /// What the fd is registered for now.
    mask: Cell<u32>,
    /// The failure recorded by a write, reported from the next event.
    pub(super) error: Cell<Option<Errno>>,
    max_queue: Cell<u32>,
    low_water: Cell<u32>,
    /// The smallest write refused with `ENOBUFS` since the last `on_drain` (0:
    /// none); `on_drain` waits until it would fit. See [`Conn::drain_level`].
    want_room: Cell<u32>,
    /// Inactivity limit (0 = none); see [`Conn::set_timeout`].
    pub(super) timeout_ms: Cell<u32>,
    last_active_ms: Cell<u64>,
    /// The linger timer while lingering, else the inactivity timer (0 = none).
    pub(super) timer: Cell<u64>,
    /// Limit on the whole of a close (0 = none); see [`Conn::set_close_timeout`].
    pub(super) close_timeout_ms: Cell<u32>,
    /// The close deadline's timer (0 = none).
    pub(super) close_timer: Cell<u64>,
    /// The status `on_close` will be called with, until it is delivered.
    pub(super) closing_status: Cell<Option<Option<Errno>>>,
    pub(super) queue: RefCell<WriteQueue>,
    pub(super) handler: Rc<dyn ConnHandler>,
    ctx: Rc<TcpContext>,
    /// This connection, for timers that must reach it (weak: no cycle).
    pub(super) me: Weak<Conn>,
}

/// Whether a connection in `phase` with switches `s` reads its socket: open
/// and not paused, or lingering (reading and discarding until the peer's
/// EOF); never after the peer's EOF or a failed send.
fn reads(phase: Phase, s: u16) -> bool {
    if s & (PEER_EOF | FAILED) != 0 {
        return false;
    }
    match phase {
        Phase::Open => s & PAUSED == 0,
        Phase::Lingering => true,
        Phase::Connecting | Phase::Flushing | Phase::Closed => false,
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("fd", &self.fd)
            .field("phase", &self.phase.get())
            .field("switches", &self.switches.get())
            .finish()
    }
}

impl Conn {
    fn new(
        lp: &EventLoop,
        fd: OwnedFd,
        ctx: Rc<TcpContext>,
        handler: Rc<dyn ConnHandler>,
        limits: Limits,
        phase: Phase,
    ) -> Rc<Conn> {
        // Validated: both fit in 32 bits (`Limits::MAX_QUEUE`).
        Rc::new_cyclic(|me| Conn {
            me: me.clone(),
            fd,
            phase: Cell::new(phase),
            switches: Cell::new(0),
            mask: Cell::new(0),
            error: Cell::new(None),
            max_queue: Cell::new(limits.max_queue as u32),
            low_water: Cell::new(limits.low_water as u32),
            want_room: Cell::new(0),
            timeout_ms: Cell::new(0),
            last_active_ms: Cell::new(lp.now_ns() / 1_000_000),
            timer: Cell::new(0),
            close_timeout_ms: Cell::new(CLOSE_TIMEOUT_MS),
            close_timer: Cell::new(0),
            closing_status: Cell::new(None),
            queue: RefCell::new(WriteQueue::default()),
            handler,
            ctx,
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
        let conn = Conn::new(lp, fd, ctx, handler, limits, Phase::Open);
        conn.register(lp, IN | RDHUP)?;
        Ok(conn)
    }

    /// Starts a non-blocking connect to `addr`. `on_open` runs when it completes;
    /// if it fails, `on_close` runs with the error instead (and `on_open` never
    /// does). Errors returned here (no callback will run): `EINVAL` for invalid
    /// limits, `socket`/`connect` failures that are known at once, e.g.
    /// `ENETUNREACH`, `EMFILE`.
    pub fn connect(
        lp: &EventLoop,
        addr: &SocketAddr,
        ctx: Rc<TcpContext>,
        handler: Rc<dyn ConnHandler>,
        limits: Limits,
    ) -> Result<Rc<Conn>> {
        let limits = limits.validate()?;
        let fd = socket::tcp_connect(addr)?;
        let conn = Conn::new(lp, fd, ctx, handler, limits, Phase::Connecting);
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

    /// True once the connection is closed (`on_close` delivered or on its way).
    pub fn is_closed(&self) -> bool {
        self.phase.get() == Phase::Closed
    }

    /// True once a close was asked for (the connection may still be flushing).
    pub fn is_closing(&self) -> bool {
        match self.phase.get() {
            Phase::Connecting => self.has(CLOSE_AFTER_CONNECT),
            Phase::Open => false,
            Phase::Flushing | Phase::Lingering | Phase::Closed => true,
        }
    }

    pub(super) fn is_connecting(&self) -> bool {
        self.phase.get() == Phase::Connecting
    }

    /// The status `on_close` will be called with, while it is on its way
    /// (`None` before the connection closed, and after `on_close` ran).
    pub fn pending_close(&self) -> Option<Option<Errno>> {
        self.closing_status.get()
    }

    /// Milliseconds (monotonic, the loop's clock) of the last read or write.
    pub fn last_active_ms(&self) -> u64 {
        self.last_active_ms.get()
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SocketAddr> {
        socket::peer_addr(self.fd())
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        socket::local_addr(self.fd())
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

    pub(super) fn has(&self, s: u16) -> bool {
        self.switches.get() & s != 0
    }
    pub(super) fn set(&self, s: u16) {
        self.switches.set(self.switches.get() | s)
    }
    pub(super) fn clear(&self, s: u16) {
        self.switches.set(self.switches.get() & !s)
    }

    /// Whether the socket should be read now.
    fn wants_read(&self) -> bool {
        reads(self.phase.get(), self.switches.get())
    }

    /// Re-registers for what the connection now needs (only when it changed).
    /// On the hot path (every write that queues, every flush): one read of
    /// each cell, then a compare.
    pub(super) fn update_mask(&self, lp: &EventLoop) {
        let (phase, s) = (self.phase.get(), self.switches.get());
        if phase == Phase::Closed {
            return;
        }
        let mut want = if reads(phase, s) { IN | RDHUP } else { 0 };
        if self.queued() > 0 || s & FAILED != 0 || phase == Phase::Connecting {
            want |= OUT;
        }
        if want & IN == 0 && s & HUP_PARKED != 0 {
            want |= ONESHOT;
        }
        if want != self.mask.get() {
            self.set_mask(lp, want);
        }
    }

    #[cold]
    fn set_mask(&self, lp: &EventLoop, want: u32) {
        if lp.modify(self.fd(), want).is_ok() {
            self.mask.set(want);
        } else if !self.has(MASK_RETRY) {
            // `epoll_ctl` refused (ENOMEM): try again shortly. Without a retry a
            // connection waiting only for EPOLLOUT (its peer waits for the answer)
            // would wait forever (found by fault injection).
            self.set(MASK_RETRY);
            let weak = self.me.clone();
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

    pub(super) fn touch(&self, lp: &EventLoop) {
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
            // before this write fits. (`data.len() <= max_queue <= u32::MAX`,
            // and never 0 here.)
            let len = data.len() as u32;
            let room = match self.want_room.get() {
                0 => len,
                r => r.min(len),
            };
            self.want_room.set(room);
            self.set(WANT_DRAIN);
            // Not due yet (the queue is above cap - len): the flushes that
            // shrink the queue run it.
            return Err(Errno::ENOBUFS);
        }
        let mut sent = 0;
        if queued == 0 && !self.is_connecting() {
            while sent < data.len() {
                match socket::send(self.fd(), &data[sent..]) {
                    Ok(n) => sent += n,
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => break,
                    Err(e) => {
                        // Reported from the next event, never from inside `write`.
                        self.error.set(Some(e));
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

    /// True while writes are taken: open (or connecting, before a close was
    /// asked for), not shut down, no send failed.
    fn accepts_writes(&self) -> bool {
        let s = self.switches.get();
        let phase_ok = match self.phase.get() {
            Phase::Open => true,
            Phase::Connecting => s & CLOSE_AFTER_CONNECT == 0,
            Phase::Flushing | Phase::Lingering | Phase::Closed => false,
        };
        phase_ok && s & (FAILED | SHUT_PENDING | SHUT_DONE) == 0
    }

    /// What [`Conn::write`] would answer for `len` bytes before looking at them:
    /// `EPIPE` once the connection is closing, shut down or closed, `EMSGSIZE`
    /// for more than the cap. `Ok` means `len <= max_queue <= Limits::MAX_QUEUE`,
    /// so the C boundary checks a caller's length here before it makes a slice
    /// of it (a length over `isize::MAX` must never become one).
    pub fn check_write_len(&self, len: usize) -> Result<()> {
        if !self.accepts_writes() {
            return Err(Errno::EPIPE);
        }
        if len > self.max_queue.get() as usize {
            // Could never fit, whatever drains: say so instead of ENOBUFS.
            return Err(Errno::EMSGSIZE);
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
        if self.is_closing() {
            return Err(Errno::EPIPE);
        }
        if self.has(SHUT_PENDING | SHUT_DONE) {
            return Ok(());
        }
        self.set(SHUT_PENDING);
        if self.queued() == 0 && !self.is_connecting() && !self.has(FAILED) {
            self.do_shutdown(lp);
        }
        Ok(())
    }

    fn do_shutdown(self: &Rc<Self>, lp: &EventLoop) {
        self.clear(SHUT_PENDING);
        self.set(SHUT_DONE);
        if let Err(e) = socket::shutdown_write(self.fd()) {
            self.close_now(lp, Some(e));
            return;
        }
        if self.has(PEER_EOF) {
            self.close_now(lp, None);
        }
    }

    /// The connect finished (`EPOLLOUT`, or an error): `on_open`, or the error.
    fn connected(self: &Rc<Self>, lp: &EventLoop, events: u32) {
        let close_after = self.has(CLOSE_AFTER_CONNECT);
        let err = match socket::take_error(self.fd()) {
            Ok(None) if events & (libc::EPOLLERR as u32 | HUP) == 0 => None,
            Ok(None) => Some(Errno::ECONNREFUSED),
            Ok(Some(e)) | Err(e) => Some(e),
        };
        if let Some(e) = err {
            self.close_now(lp, Some(e));
            return;
        }
        // Connected; a close asked for meanwhile now flushes.
        self.clear(CLOSE_AFTER_CONNECT);
        self.phase.set(if close_after {
            Phase::Flushing
        } else {
            Phase::Open
        });
        self.touch(lp);
        self.handler.on_open(lp, self);
        if self.is_closed() {
            return;
        }
        if self.queued() > 0 {
            self.flush(lp);
        } else if self.phase.get() == Phase::Flushing {
            self.finish_close(lp);
        } else if self.has(SHUT_PENDING) {
            self.do_shutdown(lp);
        }
    }

    fn on_event(self: &Rc<Self>, lp: &EventLoop, events: u32) {
        if self.is_closed() {
            return;
        }
        if self.is_connecting() {
            self.connected(lp, events);
            self.update_mask(lp);
            return;
        }
        if self.has(FAILED) {
            self.close_now(lp, self.error.get());
            return;
        }
        if events & libc::EPOLLERR as u32 != 0 {
            let e = socket::take_error(self.fd()).ok().flatten();
            self.close_now(lp, Some(e.unwrap_or(Errno::EIO)));
            return;
        }
        if events & OUT != 0 {
            self.flush(lp);
            if self.is_closed() {
                return;
            }
        }
        if events & (IN | RDHUP | HUP) != 0 {
            if self.wants_read() {
                self.read(lp);
                if self.is_closed() {
                    return;
                }
            } else if events & HUP != 0 {
                let open = self.phase.get() == Phase::Open;
                if open && self.has(PAUSED) && !self.has(PEER_EOF | FAILED) {
                    // Paused: what the peer sent before its FIN may still be
                    // unread. Keep it for `resume` (closing now would drop it).
                    self.set(HUP_PARKED);
                } else {
                    // Both directions are gone and we are not reading: nothing
                    // more can be sent.
                    let lost = self.queued() > 0;
                    self.close_now(lp, lost.then_some(Errno::ECONNRESET));
                    return;
                }
            }
        }
        self.update_mask(lp);
    }

    fn peer_eof(self: &Rc<Self>, lp: &EventLoop) {
        self.set(PEER_EOF);
        if self.phase.get() == Phase::Lingering {
            self.close_now(lp, None);
        } else if self.has(HALF_OPEN) && self.phase.get() == Phase::Open {
            self.handler.on_eof(lp, self);
            if !self.is_closed() && self.has(SHUT_DONE) {
                self.close_now(lp, None);
            }
        } else if self.queued() == 0 && !self.has(SHUT_PENDING) {
            self.close_now(lp, None);
        }
        // Otherwise the flush closes it once the queue is empty.
    }

    /// One read per readiness event, as hand-written epoll servers do: epoll
    /// is level-triggered here, so a socket with more to read is reported
    /// again (a second `recv` after a full buffer mostly returns `EAGAIN`: the
    /// benchmark of 64 KiB messages measured 2.6k wasted `recv`s per 25k
    /// messages with 16 reads per event). `EINTR` and `EAGAIN` wait for the
    /// next report.
    fn read(self: &Rc<Self>, lp: &EventLoop) {
        let mut buf = self.ctx.read_buf.take();
        if buf.len() < READ_BUFFER {
            buf = vec![0; READ_BUFFER];
        }
        match socket::recv(self.fd(), &mut buf) {
            Ok(0) => self.peer_eof(lp),
            // Lingering: the application asked for no more data.
            Ok(_) if self.phase.get() == Phase::Lingering => {}
            Ok(n) => {
                TcpStats::add(&self.ctx.stats.bytes_in, n as u64);
                self.touch(lp);
                self.handler.on_data(lp, self, &buf[..n]);
            }
            Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
            Err(e) => self.close_now(lp, Some(e)),
        }
        self.ctx.read_buf.set(buf);
    }

    /// Sends what is queued until the socket takes no more; then closes,
    /// shuts down or runs `on_drain` as the state asks.
    pub(super) fn flush(self: &Rc<Self>, lp: &EventLoop) {
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
                    self.close_now(lp, Some(e));
                    return;
                }
            }
        }
        if sent_total > 0 {
            TcpStats::add(&self.ctx.stats.bytes_out, sent_total);
            self.touch(lp);
        }
        if self.queued() == 0 {
            let closing = matches!(self.phase.get(), Phase::Flushing | Phase::Lingering);
            if closing || (self.has(PEER_EOF) && !self.has(HALF_OPEN)) {
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
        if !self.has(WANT_DRAIN) || !self.accepts_writes() || self.is_connecting() {
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
            || self.has(DRAIN_SOON)
            || self.is_closed()
            || self.queued() > self.drain_level()
        {
            return;
        }
        self.set(DRAIN_SOON);
        let weak = self.me.clone();
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
