//! `echo_server`: the seed tutorial's server as one library call.

use super::event_loop::epoll_loop;
use super::guard::{self, Object, ObjectHeader, boundary, with_object, write_out};
use crate::echo::{EchoConfig, EchoServer, Logger, Shared, Worker, c_line};
use crate::sys::Errno;
use crate::tcp::TcpStats;
use std::ffi::{CStr, c_char, c_int, c_void};
use std::mem::ManuallyDrop;
use std::rc::Rc;
use std::sync::Arc;

/// Log level: something failed (a listener error, a failed accept).
pub const EPOLL_LOOP_LOG_ERROR: c_int = 1;
/// Log level: something unusual that the server handled (fd exhaustion, rejections).
pub const EPOLL_LOOP_LOG_WARN: c_int = 2;
/// Log level: lifecycle ("server started successfully", "new connection", "client close").
pub const EPOLL_LOOP_LOG_INFO: c_int = 3;
/// Log level: per-read detail ("received data").
pub const EPOLL_LOOP_LOG_DEBUG: c_int = 4;

/// Receives the server's log lines. `level` is one of `EPOLL_LOOP_LOG_*`;
/// `message` is a NUL-terminated line without a trailing newline, valid only
/// during the call. Called on the server's loop thread(s); with `threads > 1`,
/// concurrently from several threads.
pub type echo_server_log_fn =
    Option<unsafe extern "C" fn(level: c_int, message: *const c_char, user_data: *mut c_void)>;

/// Configuration of an echo server. Always initialise it with
/// `echo_server_config_init`, then change the fields you need: fields may be
/// added at the end in later versions, and `struct_size` tells the library
/// which ones your program knows.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct echo_server_config {
    /// `sizeof(echo_server_config)` as the caller was compiled; set by `_config_init`.
    pub struct_size: u32,
    /// Address to listen on (numeric IPv4 or IPv6, or a host name resolved with
    /// getaddrinfo). Default "127.0.0.1"; NULL also means "127.0.0.1".
    pub host: *const c_char,
    /// Port; 0 picks an ephemeral port (read it with `echo_server_port`). Default 8888.
    pub port: u16,
    /// `listen(2)` backlog; `<= 0` means `SOMAXCONN`. Default 10.
    pub backlog: c_int,
    /// Loop threads for `echo_server_start` (each with its own listener on the same
    /// port through `SO_REUSEPORT`). Default 1. `echo_server_attach` requires 1.
    pub threads: u32,
    /// Connections above this many are accepted and closed at once (counted as
    /// `rejected`). Default 0: limited only by `RLIMIT_NOFILE`.
    pub max_connections: u32,
    /// Close connections with no traffic for this long. Default 0: never.
    pub idle_timeout_ms: u32,
    /// Per connection: when this many bytes wait to be sent back, the server stops
    /// reading from that client until they drain. Default 256 KiB. From 1 to
    /// 1 GiB (1073741824); 0 or anything larger is refused with `-EINVAL`
    /// (each connection may queue up to this plus 64 KiB, a size that must
    /// stay in range).
    pub max_pending_bytes: usize,
    /// Log callback; default NULL (the library prints nothing).
    pub log: echo_server_log_fn,
    /// Passed to `log`.
    pub log_user_data: *mut c_void,
    /// The most detailed `EPOLL_LOOP_LOG_*` level passed to `log`. Default `EPOLL_LOOP_LOG_INFO`.
    pub log_level: c_int,
}

/// Counters of an echo server (summed over its threads).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct echo_server_stats {
    /// Connections accepted (rejected ones included).
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections closed (by either side, idle timeouts and rejections included).
    pub closed: u64,
    /// Connections closed at once after accepting: `max_connections` was reached,
    /// or no fd was free for the server (`EMFILE`/`ENFILE`, then the pending
    /// client is shed with a spare fd so the listener does not spin).
    pub rejected: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written back to clients.
    pub bytes_out: u64,
    /// Connections closed by `idle_timeout_ms`.
    pub idle_timeouts: u64,
    /// `accept(2)` failures other than `EAGAIN` (`EMFILE`, `ENFILE`, `ENOBUFS`, ...).
    pub accept_errors: u64,
}

/// An echo server. Opaque; create with `echo_server_start` or `echo_server_attach`,
/// stop and free with `echo_server_stop`.
///
/// Lifetime: until `echo_server_stop`. Thread safety: `echo_server_port` and
/// `echo_server_get_stats` may be called from any thread for a started server;
/// an attached server belongs to its loop's thread.
pub struct echo_server {
    header: ObjectHeader,
    port: u16,
    // Dropped by `echo_server_stop`, which keeps the header's memory for a while
    // (`guard::retire`) so a stopped handle reads as dead.
    shared: ManuallyDrop<Arc<Shared>>,
    kind: ManuallyDrop<Kind>,
}

enum Kind {
    Threaded(EchoServer),
    Attached {
        worker: Rc<Worker>,
        r#loop: *mut epoll_loop,
    },
}

impl Object for echo_server {
    const MAGIC: u64 = 0x6563_686f_5372_7672; // "echoSrvr"
    fn header(&self) -> &ObjectHeader {
        &self.header
    }
}

const DEFAULT_HOST: &CStr = c"127.0.0.1";

/// Fills `*cfg` with the defaults (the tutorial's: 127.0.0.1:8888, backlog 10, one
/// thread, no connection limit, no idle timeout, 256 KiB pending cap, no log,
/// log level `EPOLL_LOOP_LOG_INFO`) and sets `struct_size`.
/// Returns: nothing. `cfg` NULL is ignored.
/// Errors: none.
/// Ownership: `*cfg` is the caller's; `host` points to a static string.
/// Thread safety: safe from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_config_init(cfg: *mut echo_server_config) {
    boundary(|| {
        if cfg.is_null() {
            return 0;
        }
        let d = EchoConfig::default();
        let c = echo_server_config {
            struct_size: std::mem::size_of::<echo_server_config>() as u32,
            host: DEFAULT_HOST.as_ptr(),
            port: d.port,
            backlog: d.backlog,
            threads: d.threads,
            max_connections: d.max_connections,
            idle_timeout_ms: d.idle_timeout_ms,
            max_pending_bytes: d.max_pending_bytes,
            log: None,
            log_user_data: std::ptr::null_mut(),
            log_level: EPOLL_LOOP_LOG_INFO,
        };
        // SAFETY: non-NULL, and per the contract writable for one config.
        unsafe { write_out(cfg, c) };
        0
    });
}

/// The C log callback with its user data, callable from the server's threads.
struct CLog {
    f: unsafe extern "C" fn(level: c_int, message: *const c_char, user_data: *mut c_void),
    user_data: *mut c_void,
}

impl CLog {
    fn call(&self, level: c_int, line: &CStr) {
        // SAFETY: the caller's log callback with its own user data; `line` lives
        // for the call.
        unsafe { (self.f)(level, line.as_ptr(), self.user_data) }
    }
}

// SAFETY: the contract of `echo_server_config.log` says it is called from the
// server's threads; the caller guarantees the callback and its data allow that.
unsafe impl Send for CLog {}
// SAFETY: as above; with threads > 1 it may be called concurrently, as documented.
unsafe impl Sync for CLog {}

/// Reads and validates a C config.
///
/// # Safety
/// `cfg` is NULL or points to at least `struct_size` readable bytes.
unsafe fn read_config(cfg: *const echo_server_config) -> Result<EchoConfig, Errno> {
    if cfg.is_null() {
        return Err(Errno::EINVAL);
    }
    // SAFETY: non-NULL; `struct_size` is the first field of every version.
    let size = unsafe { std::ptr::addr_of!((*cfg).struct_size).read() } as usize;
    if size < std::mem::size_of::<echo_server_config>() {
        return Err(Errno::EINVAL);
    }
    // SAFETY: the caller's struct is at least as large as ours (checked above).
    let c = unsafe { cfg.read() };
    let host = if c.host.is_null() {
        "127.0.0.1".to_owned()
    } else {
        // SAFETY: a non-NULL host is a NUL-terminated string, per the contract.
        let h = unsafe { CStr::from_ptr(c.host) };
        h.to_str().map_err(|_| Errno::EINVAL)?.to_owned()
    };
    let log = c.log.map(|f| {
        let sink = CLog {
            f,
            user_data: c.log_user_data,
        };
        Logger::new(
            c.log_level,
            Arc::new(move |level: i32, msg: &str| sink.call(level, &c_line(msg))),
        )
    });
    Ok(EchoConfig {
        host,
        port: c.port,
        backlog: c.backlog,
        threads: c.threads,
        max_connections: c.max_connections,
        idle_timeout_ms: c.idle_timeout_ms,
        max_pending_bytes: c.max_pending_bytes,
        log,
    })
}

fn boxed(port: u16, shared: Arc<Shared>, kind: Kind) -> *mut echo_server {
    Box::into_raw(Box::new(echo_server {
        header: ObjectHeader::new(echo_server::MAGIC),
        port,
        shared: ManuallyDrop::new(shared),
        kind: ManuallyDrop::new(kind),
    }))
}

/// Starts an echo server on its own thread(s) (`cfg->threads` loops sharing the
/// port through `SO_REUSEPORT`); it is listening when this returns.
/// Returns: 0, and the server in `*out`.
/// Errors: `-EINVAL` (`cfg` or `out` NULL, `struct_size` too small, `threads` 0
/// or above 1024, `max_pending_bytes` 0 or above 1 GiB, host not UTF-8),
/// `-ENOENT` (host does not resolve), `-EADDRINUSE`, `-EADDRNOTAVAIL`, `-EACCES`, `-EMFILE`, `-ENOMEM`, `-EAGAIN`
/// (no thread could be started). On error nothing is left running or open.
/// Ownership: the caller owns `*out` and releases it with `echo_server_stop`; the
/// library copies what it needs from `cfg` (including `host`).
/// Thread safety: safe from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_start(
    cfg: *const echo_server_config,
    out: *mut *mut echo_server,
) -> c_int {
    boundary(|| {
        if out.is_null() {
            return -libc::EINVAL;
        }
        // SAFETY: NULL or a config of at least struct_size bytes, per the contract.
        let cfg = match unsafe { read_config(cfg) } {
            Ok(c) => c,
            Err(e) => return e.to_negative(),
        };
        match EchoServer::start(cfg) {
            Ok(srv) => {
                let (port, shared) = (srv.port(), srv.shared().clone());
                // SAFETY: `out` is non-NULL and writable.
                unsafe { write_out(out, boxed(port, shared, Kind::Threaded(srv))) };
                0
            }
            Err(e) => e.to_negative(),
        }
    })
}

/// Starts an echo server on the caller's loop; it is listening when this returns
/// and serves while the caller drives the loop (`_poll`/`_run`). `cfg->threads`
/// must be 1.
/// Returns: 0, and the server in `*out`.
/// Errors: as `echo_server_start`; `-EINVAL` also for `loop` NULL or freed and for
/// `threads != 1`.
/// Ownership: the caller owns `*out`; call `echo_server_stop` on the loop's thread
/// before freeing the loop.
/// Thread safety: the loop's thread; allowed inside the loop's callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_attach(
    r#loop: *mut epoll_loop,
    cfg: *const echo_server_config,
    out: *mut *mut echo_server,
) -> c_int {
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe {
        with_object(r#loop, |h| {
            if out.is_null() {
                return Err(Errno::EINVAL);
            }
            let cfg = read_config(cfg)?;
            let (worker, port) = Worker::attach(h.core(), cfg)?;
            let shared = worker.shared().clone();
            write_out(out, boxed(port, shared, Kind::Attached { worker, r#loop }));
            Ok(0)
        })
    }
}

/// The port the server listens on (useful after configuring port 0).
/// Returns: the port (1..65535).
/// Errors: `-EINVAL` (`srv` NULL or stopped).
/// Ownership: unchanged.
/// Thread safety: any thread for a started server; the loop's thread for an attached one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_port(srv: *const echo_server) -> c_int {
    // SAFETY: NULL or a server from echo_server_start/attach (checked by with_object).
    unsafe { with_object(srv, |s| Ok(c_int::from(s.port))) }
}

/// Fills `*out` with the server's counters (summed over its threads).
/// Returns: 0.
/// Errors: `-EINVAL` (`srv` or `out` NULL, server stopped).
/// Ownership: `*out` is the caller's; written only on success.
/// Thread safety: any thread for a started server; the loop's thread for an attached one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_get_stats(
    srv: *const echo_server,
    out: *mut echo_server_stats,
) -> c_int {
    // SAFETY: NULL or a server from echo_server_start/attach (checked by with_object).
    unsafe {
        with_object(srv, |s| {
            if out.is_null() {
                return Err(Errno::EINVAL);
            }
            let t = &s.shared.stats;
            let st = echo_server_stats {
                accepted: TcpStats::get(&t.accepted),
                active: TcpStats::get(&t.active),
                closed: TcpStats::get(&t.closed),
                rejected: TcpStats::get(&t.rejected),
                bytes_in: TcpStats::get(&t.bytes_in),
                bytes_out: TcpStats::get(&t.bytes_out),
                idle_timeouts: TcpStats::get(&t.idle_timeouts),
                accept_errors: TcpStats::get(&t.accept_errors),
            };
            write_out(out, st);
            Ok(0)
        })
    }
}

/// Stops the server gracefully and frees it: stops accepting, lets every
/// connection send what is pending (for at most 2 s), then closes it.
///
/// A started server: its threads finish all of that before this returns.
/// An attached server: this closes the listener and starts the flush; connections
/// with pending bytes finish as the caller keeps driving the loop (they are
/// closed at once if the loop is freed first).
/// Returns: 0. `echo_server_stop(NULL)` is a no-op returning 0.
/// Errors: `-EINVAL` (not a live server, e.g. stopped twice, detected on a
/// best-effort basis; or an attached server whose loop was freed), `-EDEADLK`
/// (a started server stopped from its own log callback, which would wait for
/// itself; nothing is stopped).
/// Ownership: `srv` is invalid after a 0 return.
/// Thread safety: a started server from any thread except its own threads; an
/// attached one on its loop's thread (inside its callbacks too).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_stop(srv: *mut echo_server) -> c_int {
    boundary(|| {
        if srv.is_null() {
            return 0;
        }
        // SAFETY: non-NULL, and per the contract a server this library allocated.
        let s = unsafe { &*srv };
        if !s.header.is_live(echo_server::MAGIC) {
            return -libc::EINVAL;
        }
        if let Kind::Threaded(server) = &*s.kind
            && server.is_own_thread()
        {
            return -libc::EDEADLK;
        }
        if let Kind::Attached { worker, r#loop } = &*s.kind {
            // SAFETY: the attached loop must outlive the server (documented);
            // with_object checks it is still live.
            let r = unsafe {
                with_object(*r#loop as *const epoll_loop, |h| {
                    worker.begin_stop(h.core());
                    Ok(0)
                })
            };
            if r < 0 {
                return r;
            }
        }
        s.header.kill();
        // SAFETY: allocated by Box::into_raw in `boxed`, live, and now ours alone.
        // Its contents are dropped once, in declaration order; the header stays.
        unsafe {
            let owned = &mut *srv;
            if let Kind::Threaded(server) = &mut *owned.kind {
                server.stop();
            }
            ManuallyDrop::drop(&mut owned.shared);
            ManuallyDrop::drop(&mut owned.kind);
            guard::retire(srv);
        }
        0
    })
}
