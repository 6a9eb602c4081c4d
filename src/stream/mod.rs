//! Layer 4: buffered streams on the loop: a TCP [`Listener`] and a buffered,
//! bounded connection, [`Conn`] (libevent's bufferevent, libuv's stream).
//!
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
//!   no reason to wait: no `on_drain` follows it, nor once writes are refused
//!   with `EPIPE` (closing, shut down).
//! - A peer's EOF flushes what is queued, then closes: `on_close(None)`.
//! - [`Conn::close`] flushes, then lingers; the whole of it is bounded by the
//!   connection's close timeout ([`CLOSE_TIMEOUT_MS`] by default, see
//!   [`Conn::set_close_timeout`]): then it resets, `on_close(Some(ETIMEDOUT))`.
//! - `on_close` runs exactly once, from the loop (a zero-delay timer), never
//!   from inside the call that closed the connection; from the close on,
//!   every operation fails with `EPIPE`.
//!
//! One file per part: `conn.rs` (state, reading, writing, backpressure),
//! `close.rs` (closing, timeouts, `on_close`), `listener.rs`,
//! `write_queue.rs`.

mod close;
mod conn;
mod listener;
mod write_queue;

#[cfg(test)]
mod tests;

pub use conn::Conn;
pub use listener::Listener;

use crate::event_loop::EventLoop;
use crate::sys::{Errno, Result, socket};
use std::cell::Cell;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Size of the shared read buffer.
pub const READ_BUFFER: usize = 64 * 1024;
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
/// (flushing and lingering) before it resets with `on_close(ETIMEDOUT)`.
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
    pub stats: Arc<TcpStats>,
}

impl std::fmt::Debug for TcpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpContext")
            .field("stats", &self.stats)
            .finish()
    }
}

impl TcpContext {
    pub fn new(stats: Arc<TcpStats>) -> Rc<TcpContext> {
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
    /// The connection closed: `None` after a clean EOF or `close`, else the
    /// error. Exactly once, from the loop (never from inside the call that
    /// closed it); the connection refuses every operation afterwards.
    fn on_close(&self, _lp: &EventLoop, _conn: &Rc<Conn>, _error: Option<Errno>) {}
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

/// How a listening socket is made ([`bind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenOptions {
    /// `listen(2)` backlog; `<= 0` means `SOMAXCONN`.
    pub backlog: i32,
    /// `SO_REUSEPORT`: several sockets (one per thread) share the port.
    pub reuse_port: bool,
}

/// The addresses of `host:port` (numeric hosts without a lookup); the
/// library's `EAI_*` codes when the name does not resolve.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>> {
    socket::resolve(host, port)
}

/// A non-blocking listening TCP socket bound to `addr`, and the address it
/// got (the real port when `addr` asked for port 0). Register it with
/// [`Listener::open`] on the loop that accepts.
pub fn bind(addr: &SocketAddr, options: ListenOptions) -> Result<(OwnedFd, SocketAddr)> {
    let fd = socket::tcp_listen(addr, options.backlog, options.reuse_port)?;
    let bound = socket::local_addr(fd.as_raw_fd())?;
    Ok((fd, bound))
}

/// The peer address of an accepted socket not yet wrapped in a [`Conn`].
pub fn peer_addr_of(fd: &OwnedFd) -> Result<SocketAddr> {
    socket::peer_addr(fd.as_raw_fd())
}
