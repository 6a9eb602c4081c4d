//! Layer 5: the echo server, built only from [`crate::stream`]'s public surface.
//!
//! One [`Worker`] per loop: a [`Listener`] and the connections it accepted. Each
//! connection's `on_data` writes the bytes back ([`Conn::write`] sends at once
//! and queues only the rest) and pauses reading while more than
//! `max_pending_bytes` wait; `on_drain` resumes it. A peer's EOF flushes, then
//! closes. Idle connections are found by a sweep timer. [`EchoServer::start`]
//! runs N workers on N threads sharing the port through `SO_REUSEPORT`;
//! [`Worker::attach`] runs one on a caller's loop.

use crate::event_loop::EventLoop;
use crate::stream::{
    self, Conn, ConnHandler, Limits, ListenOptions, Listener, READ_BUFFER, TcpContext, TcpStats,
};
use crate::sys::{Errno, Result};
use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::thread::JoinHandle;

/// How long a graceful stop waits for pending bytes to drain.
pub const STOP_FLUSH_MS: u64 = 2000;

/// The largest `max_pending_bytes` a server accepts (1 GiB). Every size
/// derived from it stays in range: a connection's hard cap is
/// `max_pending_bytes + READ_BUFFER`, which must not pass
/// [`Limits::MAX_QUEUE`] (4 GiB - 1, on 32-bit targets 2 GiB - 1).
pub const MAX_PENDING_BYTES: usize = 1 << 30;

// The derived cap of the largest allowed setting is a valid cap everywhere.
const _: () = assert!(MAX_PENDING_BYTES + READ_BUFFER <= Limits::MAX_QUEUE);

/// Log levels (same values as `EPOLL_LOOP_LOG_*`).
pub const LOG_ERROR: i32 = 1;
pub const LOG_WARN: i32 = 2;
pub const LOG_INFO: i32 = 3;
pub const LOG_DEBUG: i32 = 4;

/// The function behind a [`Logger`]: `(level, line)`.
pub type LogFn = Arc<dyn Fn(i32, &str) + Send + Sync>;

/// A log sink: the C callback and its user data, or a Rust closure.
#[derive(Clone)]
pub struct Logger {
    f: LogFn,
    level: i32,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("level", &self.level)
            .finish()
    }
}

impl Logger {
    pub fn new(level: i32, f: LogFn) -> Logger {
        Logger { f, level }
    }
}

/// Server settings (the C config, validated).
#[derive(Debug, Clone)]
pub struct EchoConfig {
    pub host: String,
    pub port: u16,
    pub backlog: i32,
    pub threads: u32,
    pub max_connections: u32,
    pub idle_timeout_ms: u32,
    pub max_pending_bytes: usize,
    pub log: Option<Logger>,
}

impl Default for EchoConfig {
    fn default() -> Self {
        EchoConfig {
            host: "127.0.0.1".into(),
            port: 8888,
            // SOMAXCONN, not the tutorial's 10: a burst of clients overflows a
            // short accept queue (SYNs dropped and retried a second later, or
            // connections reset, depending on the kernel's settings).
            backlog: libc::SOMAXCONN,
            threads: 1,
            max_connections: 0,
            idle_timeout_ms: 0,
            max_pending_bytes: 256 * 1024,
            log: None,
        }
    }
}

/// `EINVAL` for settings the server cannot honour: no or more than 1024
/// threads, `max_pending_bytes` 0 or above [`MAX_PENDING_BYTES`], no host.
fn validate(cfg: &EchoConfig) -> Result<()> {
    if cfg.threads == 0
        || cfg.threads > 1024
        || cfg.max_pending_bytes == 0
        || cfg.max_pending_bytes > MAX_PENDING_BYTES
        || cfg.host.is_empty()
    {
        return Err(Errno::EINVAL);
    }
    conn_limits(cfg.max_pending_bytes)?;
    Ok(())
}

/// A connection's write-queue limits for `max_pending_bytes`: the hard cap
/// leaves room for one more read after the pause threshold, so an echo write
/// never fails; the low-water mark (half) resumes reading. `EINVAL` if the
/// cap would not be a valid one (checked arithmetic: never wraps).
fn conn_limits(pending: usize) -> Result<Limits> {
    let max_queue = pending.checked_add(READ_BUFFER).ok_or(Errno::EINVAL)?;
    Limits {
        max_queue,
        low_water: pending / 2,
    }
    .validate()
}

/// The listening sockets of a server: one, or `threads` sharing a port.
fn bind_all(cfg: &EchoConfig) -> Result<(Vec<OwnedFd>, u16)> {
    // The first address getaddrinfo gives (a numeric host is used as it is).
    let addr = stream::resolve(&cfg.host, cfg.port)?[0];
    let options = ListenOptions {
        backlog: cfg.backlog,
        reuse_port: cfg.threads > 1,
    };
    let (first, bound) = stream::bind(&addr, options)?;
    let mut fds = vec![first];
    for _ in 1..cfg.threads {
        let shared = ListenOptions {
            reuse_port: true,
            ..options
        };
        fds.push(stream::bind(&bound, shared)?.0);
    }
    Ok((fds, bound.port()))
}

/// The echo server on one loop.
pub struct Worker {
    cfg: EchoConfig,
    shared: Arc<TcpStats>,
    ctx: Rc<TcpContext>,
    listener: RefCell<Weak<Listener>>,
    conns: RefCell<Vec<Option<Weak<Conn>>>>,
    open: Cell<usize>,
    sweep_timer: Cell<u64>,
    deadline_timer: Cell<u64>,
    stopping: Cell<bool>,
    /// No more log lines (the C handle was stopped or its loop freed).
    silent: Cell<bool>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("open", &self.open.get())
            .finish()
    }
}

impl Worker {
    fn log(&self, level: i32, msg: impl FnOnce() -> String) {
        if let Some(l) = &self.cfg.log
            && level <= l.level
            && !self.silent.get()
        {
            (l.f)(level, &msg());
        }
    }

    fn new(
        lp: &EventLoop,
        cfg: EchoConfig,
        shared: Arc<TcpStats>,
        fd: OwnedFd,
    ) -> Result<Rc<Worker>> {
        let w = Rc::new(Worker {
            ctx: TcpContext::new(shared.clone()),
            cfg,
            shared,
            listener: RefCell::new(Weak::new()),
            conns: RefCell::new(Vec::new()),
            open: Cell::new(0),
            sweep_timer: Cell::new(0),
            deadline_timer: Cell::new(0),
            stopping: Cell::new(false),
            silent: Cell::new(false),
        });
        let wa = w.clone();
        let we = Rc::downgrade(&w);
        let l = Listener::open(
            lp,
            fd,
            w.shared.clone(),
            Box::new(move |lp: &EventLoop, fd| wa.accepted(lp, fd)),
            Box::new(move |e| {
                if let Some(w) = we.upgrade() {
                    w.log(LOG_WARN, || {
                        format!("accept failed: {e} (the server keeps running)")
                    });
                }
            }),
        )?;
        *w.listener.borrow_mut() = Rc::downgrade(&l);
        if w.cfg.idle_timeout_ms > 0 {
            let every = u64::from(w.cfg.idle_timeout_ms / 4).clamp(5, 1000);
            let ws = w.clone();
            let id = lp.timer_start(every, every, Rc::new(move |lp: &EventLoop, _| ws.sweep(lp)));
            w.sweep_timer.set(id);
        }
        Ok(w)
    }

    /// Runs a server on the caller's loop (threads must be 1).
    pub fn attach(lp: &EventLoop, cfg: EchoConfig) -> Result<(Rc<Worker>, u16)> {
        validate(&cfg)?;
        if cfg.threads != 1 {
            return Err(Errno::EINVAL);
        }
        let (mut fds, port) = bind_all(&cfg)?;
        let shared = Arc::new(TcpStats::default());
        let w = Worker::new(lp, cfg, shared, fds.pop().expect("one listener"))?;
        w.log(LOG_INFO, || {
            format!("server started successfully, listening on port {port}")
        });
        Ok((w, port))
    }

    /// The server's counters (shared by its workers).
    pub fn shared(&self) -> &Arc<TcpStats> {
        &self.shared
    }

    /// Stops logging for good: the owner of the log callback is done with it
    /// (connections still closing after a stop close silently).
    pub fn silence(&self) {
        self.silent.set(true);
    }

    fn accepted(self: &Rc<Self>, lp: &EventLoop, fd: OwnedFd) {
        let stats = &self.shared;
        TcpStats::add(&stats.accepted, 1);
        let max = u64::from(self.cfg.max_connections);
        if self.stopping.get() || (max > 0 && TcpStats::get(&stats.active) >= max) {
            TcpStats::add(&stats.rejected, 1);
            TcpStats::add(&stats.closed, 1);
            self.log(LOG_WARN, || {
                format!(
                    "rejected connection from {}: max_connections ({max}) reached",
                    peer_of(stream::peer_addr_of(&fd))
                )
            });
            return;
        }
        let raw = fd.as_raw_fd();
        // Validated with the config, so this cannot fail; should it, the
        // client is refused below like any connection that cannot be opened.
        let conn = match conn_limits(self.cfg.max_pending_bytes)
            .and_then(|limits| Conn::open(lp, fd, self.ctx.clone(), self.clone(), limits))
        {
            Ok(c) => c,
            Err(e) => {
                TcpStats::add(&stats.accept_errors, 1);
                TcpStats::add(&stats.closed, 1);
                self.log(LOG_ERROR, || format!("cannot watch new connection: {e}"));
                return;
            }
        };
        TcpStats::add(&stats.active, 1);
        self.open.set(self.open.get().saturating_add(1));
        let mut conns = self.conns.borrow_mut();
        let idx = raw as usize;
        if conns.len() <= idx {
            conns.resize(idx + 1, None);
        }
        conns[idx] = Some(Rc::downgrade(&conn));
        drop(conns);
        self.log(LOG_INFO, || format!("new connection: {}", peer(&conn)));
    }

    fn live_conns(&self) -> Vec<Rc<Conn>> {
        self.conns
            .borrow()
            .iter()
            .flatten()
            .filter_map(Weak::upgrade)
            .collect()
    }

    fn sweep(&self, lp: &EventLoop) {
        let idle = u64::from(self.cfg.idle_timeout_ms);
        let now = lp.now_ns() / 1_000_000;
        for c in self.live_conns() {
            if !c.is_closing() && now.saturating_sub(c.last_active_ms()) >= idle {
                TcpStats::add(&self.shared.idle_timeouts, 1);
                self.log(LOG_INFO, || format!("idle timeout: {}", peer(&c)));
                // Nothing pending: a clean FIN, at once (no lingering: slowloris
                // connections must go). Bytes pending to a client that stopped
                // reading would never drain: reset instead.
                c.close_idle(lp);
            }
        }
    }

    /// Starts a graceful stop: no more accepting, every connection flushes and
    /// closes; after [`STOP_FLUSH_MS`] the rest are reset.
    pub fn begin_stop(self: &Rc<Self>, lp: &EventLoop) {
        if self.stopping.replace(true) {
            return;
        }
        self.log(LOG_INFO, || {
            format!("server stopping: closing {} connections", self.open.get())
        });
        if let Some(l) = self.listener.borrow().upgrade() {
            l.close(lp);
        }
        let t = self.sweep_timer.replace(0);
        if t != 0 {
            let _ = lp.timer_stop(t);
        }
        for c in self.live_conns() {
            c.close(lp);
        }
        if self.open.get() > 0 {
            let w = self.clone();
            let id = lp.timer_start(
                STOP_FLUSH_MS,
                0,
                Rc::new(move |lp: &EventLoop, _| {
                    w.deadline_timer.set(0);
                    w.abort_all(lp);
                }),
            );
            self.deadline_timer.set(id);
        }
    }

    fn abort_all(&self, lp: &EventLoop) {
        for c in self.live_conns() {
            c.abort(lp, Some(Errno::ETIMEDOUT));
        }
    }

    /// Connections still open.
    pub fn open_connections(&self) -> usize {
        self.open.get()
    }
}

/// A connection's peer for the log.
fn peer(conn: &Conn) -> String {
    match conn.peer_addr() {
        Ok(a) => a.to_string(),
        Err(_) => format!("fd {}", conn.fd()),
    }
}

fn peer_of(addr: Result<std::net::SocketAddr>) -> String {
    addr.map_or_else(|_| "an unknown peer".into(), |a| a.to_string())
}

impl ConnHandler for Worker {
    fn on_data(&self, lp: &EventLoop, conn: &Rc<Conn>, data: &[u8]) {
        self.log(LOG_DEBUG, || {
            format!("received data: {} bytes from {}", data.len(), peer(conn))
        });
        if let Err(e) = conn.write(lp, data) {
            // Cannot happen while the cap leaves room for one read; never lose bytes silently.
            self.log(LOG_ERROR, || {
                format!("echo write failed ({e}); resetting {}", peer(conn))
            });
            conn.abort(lp, Some(e));
            return;
        }
        if conn.queued() > self.cfg.max_pending_bytes {
            conn.pause(lp);
        }
    }

    fn on_drain(&self, lp: &EventLoop, conn: &Rc<Conn>) {
        conn.resume(lp);
    }

    fn on_close(&self, lp: &EventLoop, conn: &Rc<Conn>, error: Option<Errno>) {
        if let Some(slot) = self.conns.borrow_mut().get_mut(conn.fd() as usize) {
            *slot = None;
        }
        self.open.set(self.open.get().saturating_sub(1));
        TcpStats::sub(&self.shared.active, 1);
        TcpStats::add(&self.shared.closed, 1);
        self.log(LOG_INFO, || match error {
            None => format!("client close: {}", peer(conn)),
            Some(e) => format!("client close: {} ({e})", peer(conn)),
        });
        if self.stopping.get() && self.open.get() == 0 {
            let t = self.deadline_timer.replace(0);
            if t != 0 {
                let _ = lp.timer_stop(t);
            }
        }
    }
}

/// A server running on its own threads.
#[derive(Debug)]
pub struct EchoServer {
    port: u16,
    shared: Arc<TcpStats>,
    threads: Vec<(JoinHandle<()>, Arc<crate::event_loop::Remote>)>,
}

impl EchoServer {
    /// Binds, spawns `cfg.threads` loop threads, and returns once all listen.
    pub fn start(cfg: EchoConfig) -> Result<EchoServer> {
        validate(&cfg)?;
        let (fds, port) = bind_all(&cfg)?;
        let shared = Arc::new(TcpStats::default());
        if let Some(l) = &cfg.log
            && LOG_INFO <= l.level
        {
            (l.f)(
                LOG_INFO,
                &format!(
                    "server started successfully, listening on {}:{port}",
                    cfg.host
                ),
            );
        }
        let mut server = EchoServer {
            port,
            shared: shared.clone(),
            threads: Vec::new(),
        };
        for (i, fd) in fds.into_iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            let cfg = cfg.clone();
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("echo-server-{i}"))
                .spawn(move || {
                    let setup = EventLoop::new()
                        .and_then(|lp| Worker::new(&lp, cfg, shared, fd).map(|w| (lp, w)));
                    let (lp, worker) = match setup {
                        Ok(x) => x,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = tx.send(Ok(lp.remote().clone()));
                    drop(tx);
                    serve(&lp, &worker);
                });
            let handle = match spawned {
                Ok(h) => h,
                Err(_) => {
                    server.stop();
                    return Err(Errno::EAGAIN);
                }
            };
            match rx.recv() {
                Ok(Ok(remote)) => server.threads.push((handle, remote)),
                Ok(Err(e)) => {
                    let _ = handle.join();
                    server.stop();
                    return Err(e);
                }
                Err(_) => {
                    let _ = handle.join();
                    server.stop();
                    return Err(Errno::ENOTRECOVERABLE);
                }
            }
        }
        Ok(server)
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's counters (shared by its workers).
    pub fn shared(&self) -> &Arc<TcpStats> {
        &self.shared
    }

    /// True when called from one of the server's own threads (its log callback):
    /// stopping from there would wait for itself.
    pub fn is_own_thread(&self) -> bool {
        let me = std::thread::current().id();
        self.threads.iter().any(|(h, _)| h.thread().id() == me)
    }

    /// Graceful stop: every thread stops accepting, flushes (bounded), closes and exits.
    pub fn stop(&mut self) {
        for (_, remote) in &self.threads {
            let _ = remote.stop();
        }
        for (handle, _) in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A worker thread's life: run until stopped, then drain and exit.
fn serve(lp: &EventLoop, worker: &Rc<Worker>) {
    // Returns when stopped; `Idle` cannot happen while the listener is
    // registered, and an epoll_wait error on a valid set is not expected: either
    // way, shut down rather than spin.
    let _ = lp.run();
    worker.begin_stop(lp);
    let deadline = lp
        .now_ns()
        .saturating_add((STOP_FLUSH_MS + 100) * 1_000_000);
    while worker.open_connections() > 0 && !lp.is_idle() {
        match lp.poll_until(deadline) {
            Ok(_) if lp.now_ns() < deadline => {}
            // The deadline passed, or `epoll_wait` failed: reset what is left.
            _ => {
                worker.abort_all(lp);
                // Deliver their `on_close`s (from the loop, as always).
                let _ = lp.poll(0);
                break;
            }
        }
    }
}

/// Formats a log line as a C string (interior NULs replaced).
pub fn c_line(msg: &str) -> CString {
    CString::new(msg.replace('\0', "?")).expect("no interior NUL")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpStream};
    use std::time::Duration;

    fn cfg() -> EchoConfig {
        EchoConfig {
            port: 0,
            ..EchoConfig::default()
        }
    }

    /// Sends `data` (then half-closes, from another thread) and checks that
    /// exactly `data` comes back before EOF.
    fn echo_all(c: &mut TcpStream, data: &[u8]) {
        let mut w = c.try_clone().unwrap();
        let d2 = data.to_vec();
        let writer = std::thread::spawn(move || {
            w.write_all(&d2).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut back = Vec::new();
        c.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert!(back == data, "echo differs (got {} bytes)", back.len());
    }

    fn connect(port: u16) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    #[test]
    fn echoes_and_closes_after_half_close() {
        let mut srv = EchoServer::start(cfg()).unwrap();
        let mut c = connect(srv.port());
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        echo_all(&mut c, &data);
        let st = srv.shared();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while TcpStats::get(&st.closed) < 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(TcpStats::get(&st.bytes_in), data.len() as u64);
        assert_eq!(TcpStats::get(&st.bytes_out), data.len() as u64);
        assert_eq!(TcpStats::get(&st.closed), 1);
        srv.stop();
    }

    #[test]
    fn a_client_that_never_reads_is_capped() {
        let mut srv = EchoServer::start(EchoConfig {
            max_pending_bytes: 64 * 1024,
            ..cfg()
        })
        .unwrap();
        let c = connect(srv.port());
        c.set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut w = c.try_clone().unwrap();
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0usize;
        // Write until the server stops reading and the kernel buffers are full.
        while sent < 64 * 1024 * 1024 {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        assert!(
            sent < 64 * 1024 * 1024,
            "the server kept reading a client that never reads"
        );
        let st = srv.shared();
        let pending = TcpStats::get(&st.bytes_in) - TcpStats::get(&st.bytes_out);
        assert!(
            pending <= 64 * 1024 + READ_BUFFER as u64,
            "pending {pending}"
        );
        // Another client is still served.
        let mut other = connect(srv.port());
        other.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        other.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        srv.stop();
    }

    /// `max_pending_bytes` is bounded so that the derived cap never wraps:
    /// `usize::MAX`, `usize::MAX - 1000` and the maximum + 1 are `EINVAL`
    /// (they used to start a server that echoed nothing, or panicked in
    /// debug builds); the maximum itself starts and echoes.
    #[test]
    fn max_pending_bytes_is_bounded_and_the_bound_works() {
        for pending in [usize::MAX, usize::MAX - 1000, MAX_PENDING_BYTES + 1] {
            let cfg = EchoConfig {
                max_pending_bytes: pending,
                ..cfg()
            };
            assert_eq!(
                EchoServer::start(cfg.clone()).err(),
                Some(Errno::EINVAL),
                "{pending}"
            );
            let lp = EventLoop::new().unwrap();
            assert_eq!(
                Worker::attach(&lp, cfg).err().map(|e| e.0),
                Some(libc::EINVAL)
            );
        }
        // The arithmetic itself refuses what would wrap, config or not.
        assert_eq!(conn_limits(usize::MAX).err(), Some(Errno::EINVAL));
        assert_eq!(conn_limits(usize::MAX - 1000).err(), Some(Errno::EINVAL));
        let l = conn_limits(MAX_PENDING_BYTES).unwrap();
        assert_eq!(l.max_queue, MAX_PENDING_BYTES + READ_BUFFER);
        assert_eq!(l.low_water, MAX_PENDING_BYTES / 2);

        let mut srv = EchoServer::start(EchoConfig {
            max_pending_bytes: MAX_PENDING_BYTES,
            ..cfg()
        })
        .unwrap();
        let mut c = connect(srv.port());
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        echo_all(&mut c, &data);
        srv.stop();
    }

    #[test]
    fn bad_configs_are_refused() {
        assert_eq!(
            EchoServer::start(EchoConfig {
                threads: 0,
                ..cfg()
            })
            .err(),
            Some(Errno::EINVAL)
        );
        assert!(
            EchoServer::start(EchoConfig {
                host: "no.such.host.invalid".into(),
                ..cfg()
            })
            .err()
            .is_some_and(|e| (3000..3100).contains(&e.0)),
            "an unresolvable host is an EAI code"
        );
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert_eq!(
            EchoServer::start(EchoConfig { port, ..cfg() }).err(),
            Some(Errno::EADDRINUSE)
        );
    }
}
