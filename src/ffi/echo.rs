//! `echo_server`: the seed tutorial's server as one library call.

use super::event_loop::{LOOPS, epoll_loop, with_loop};
use super::guard::{boundary, guarded, write_out};
use super::handle::{self, EFORKED, Handle, Poison, Table};
use crate::echo::{
    EchoConfig, EchoServer, LOG_DEBUG, LOG_ERROR, LOG_INFO, LOG_WARN, Logger, Worker, c_line,
};
use crate::stream::TcpStats;
use crate::sys::Errno;
use std::cell::RefCell;
use std::ffi::{CStr, c_char, c_int, c_void};
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

// The C levels are the echo server's own, number for number.
const _: () = assert!(
    EPOLL_LOOP_LOG_ERROR == LOG_ERROR
        && EPOLL_LOOP_LOG_WARN == LOG_WARN
        && EPOLL_LOOP_LOG_INFO == LOG_INFO
        && EPOLL_LOOP_LOG_DEBUG == LOG_DEBUG
);

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
///
/// Versions: the library reads only the fields that lie wholly inside
/// `struct_size` and defaults the others, so a program built against an older
/// header works (the first layout ended after `log_user_data`, 64 bytes;
/// `log_level` came later and defaults to `EPOLL_LOOP_LOG_INFO`). A
/// `struct_size` smaller than 64 is refused (`-EINVAL`). A larger one (a
/// program built against a newer header) is accepted when every byte past this
/// library's struct is zero (the newer fields are unset, and their zero means
/// "default"); otherwise, or above 4096 bytes, it is refused with `-E2BIG`, as
/// Linux's `openat2` does: a field this library does not know is set, and
/// ignoring it would lose what the caller asked for.
// Fields added later start at or after the current size (72), never in the
// trailing padding after `log_level`: a newer program's struct_size must grow,
// or an older library could not tell that a new field is set.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct echo_server_config {
    /// `sizeof(echo_server_config)` as the caller was compiled; set by
    /// `_config_init`. From 64 (the first layout) up; see the struct's comment.
    pub struct_size: u32,
    /// Address to listen on (numeric IPv4 or IPv6, or a host name resolved with
    /// getaddrinfo: its first address is used). Default "127.0.0.1"; NULL also
    /// means "127.0.0.1".
    pub host: *const c_char,
    /// Port; 0 picks an ephemeral port (read it with `echo_server_port`). Default 8888.
    pub port: u16,
    /// `listen(2)` backlog; `<= 0` means `SOMAXCONN`. Default `SOMAXCONN`, the
    /// recommended value (the kernel caps it at `net.core.somaxconn`). The
    /// tutorial's 10 is a teaching value: 200 clients connecting at once
    /// overflow such a queue, and their connects stall or are reset.
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
/// stop and free with `echo_server_stop`. The pointer is a handle, not an
/// address: a stopped server's handle is refused (`-EINVAL`) for certain.
///
/// Lifetime: until `echo_server_stop`. Thread safety: `echo_server_port`,
/// `echo_server_get_stats` and `echo_server_stop` of a started server may be
/// called from any thread; an attached server is stopped on its loop's thread.
pub struct echo_server {
    _opaque: [u8; 0],
}

/// A server as the C API keeps it (in [`SERVERS`]).
pub(crate) struct ServerState {
    poison: Poison,
    port: u16,
    /// `handle::forks()` when made: a forked child may only release it.
    forks: u32,
    shared: Arc<TcpStats>,
    kind: Kind,
}

enum Kind {
    Threaded(EchoServer),
    Attached {
        /// Taken by `echo_server_stop`, or by `epoll_loop_free` of the loop.
        worker: RefCell<Option<Rc<Worker>>>,
        /// The loop's handle (it may be freed first).
        lp: Handle,
    },
}

/// Every echo server. `port`, `forks`, `shared` (atomics) and `poison` may be
/// read from any thread; an attached server's `worker` is touched only under
/// its loop's owner check; a threaded server's `EchoServer` only by the one
/// `echo_server_stop` that removed the handle.
static SERVERS: Table<ServerState> = Table::new(handle::TAG_SERVER);

/// `epoll_loop_free` of the loop server `h` is attached to (its owner check
/// held): the server stops serving at once, without logging; its handle stays
/// for `echo_server_stop`, which then only releases it.
pub(crate) fn server_loop_freed(h: Handle) {
    let Some(st) = SERVERS.get(h) else { return };
    if let Kind::Attached { worker, .. } = &st.kind {
        let w = worker.borrow_mut().take();
        if let Some(w) = w {
            w.silence();
        }
    }
}

/// Runs `f` on the live server behind `srv` (any thread: it only reads
/// `port` and `shared`), inside the panic boundary.
fn with_server(
    srv: *const echo_server,
    f: impl FnOnce(&ServerState) -> Result<c_int, Errno>,
) -> c_int {
    let Some(st) = SERVERS.get(handle::from_ptr(srv)) else {
        return -libc::EINVAL;
    };
    if st.forks != handle::forks() {
        return EFORKED.to_negative();
    }
    guarded(&st.poison, || f(&st))
}

fn new_server(port: u16, shared: Arc<TcpStats>, kind: Kind) -> Result<Handle, Errno> {
    SERVERS.insert(Box::new(ServerState {
        poison: Poison::default(),
        port,
        forks: handle::forks(),
        shared,
        kind,
    }))
}

const DEFAULT_HOST: &CStr = c"127.0.0.1";

/// The first published layout ended after `log_user_data`.
const CONFIG_FIRST_SIZE: usize = 64;

/// Where each field of `echo_server_config` ends, in order.
const CONFIG_FIELD_ENDS: [usize; 11] = {
    use std::mem::{offset_of, size_of};
    type C = echo_server_config;
    [
        offset_of!(C, struct_size) + size_of::<u32>(),
        offset_of!(C, host) + size_of::<*const c_char>(),
        offset_of!(C, port) + size_of::<u16>(),
        offset_of!(C, backlog) + size_of::<c_int>(),
        offset_of!(C, threads) + size_of::<u32>(),
        offset_of!(C, max_connections) + size_of::<u32>(),
        offset_of!(C, idle_timeout_ms) + size_of::<u32>(),
        offset_of!(C, max_pending_bytes) + size_of::<usize>(),
        offset_of!(C, log) + size_of::<echo_server_log_fn>(),
        offset_of!(C, log_user_data) + size_of::<*mut c_void>(),
        offset_of!(C, log_level) + size_of::<c_int>(),
    ]
};

const _: () = assert!(CONFIG_FIELD_ENDS[9] == CONFIG_FIRST_SIZE);

/// The defaults `echo_server_config_init` writes (and fields an older
/// program's smaller struct lacks take).
fn default_config() -> echo_server_config {
    let d = EchoConfig::default();
    echo_server_config {
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
    }
}

/// Fills `*cfg` with the defaults (127.0.0.1:8888 as in the tutorial, backlog
/// `SOMAXCONN` (not the tutorial's 10, too short for a burst of clients), one
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
        // SAFETY: non-NULL, and per the contract writable for one config.
        unsafe { write_out(cfg, default_config()) };
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

/// Reads and validates a C config (of any `struct_size` the struct's docs
/// accept: see `read_sized`).
///
/// # Safety
/// `cfg` is NULL or points to at least `struct_size` readable bytes.
unsafe fn read_config(cfg: *const echo_server_config) -> Result<EchoConfig, Errno> {
    if cfg.is_null() {
        return Err(Errno::EINVAL);
    }
    // SAFETY: non-NULL, with `struct_size` readable bytes of a config, per the contract.
    let c = unsafe {
        super::error::read_sized(cfg, default_config(), CONFIG_FIRST_SIZE, &CONFIG_FIELD_ENDS)
    }?;
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

/// Starts an echo server on its own thread(s) (`cfg->threads` loops sharing the
/// port through `SO_REUSEPORT`); it is listening when this returns.
/// Returns: 0, and the server in `*out`.
/// Errors: `-EINVAL` (`cfg` or `out` NULL, `struct_size` below 64, `threads` 0
/// or above 1024, `max_pending_bytes` 0 or above 1 GiB, host not UTF-8),
/// `EPOLL_LOOP_EAI_*` (the host name did not resolve: `EPOLL_LOOP_EAI_NONAME`,
/// `EPOLL_LOOP_EAI_AGAIN`, ...), `-E2BIG` (`struct_size` larger than this
/// library's struct with a non-zero byte past it, or above 4096: the program
/// sets a field this version does not know), `-EADDRINUSE`, `-EADDRNOTAVAIL`,
/// `-EACCES`, `-EMFILE`, `-ENOMEM`, `-EAGAIN` (no thread could be started). On
/// error nothing is left running or open. `struct_size` from 64 up to this
/// library's size reads the fields inside it and defaults the rest (see
/// `echo_server_config`).
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
        let srv = match EchoServer::start(cfg) {
            Ok(s) => s,
            Err(e) => return e.to_negative(),
        };
        let (port, shared) = (srv.port(), srv.shared().clone());
        // On failure the server is dropped, which stops its threads.
        match new_server(port, shared, Kind::Threaded(srv)) {
            Ok(h) => {
                // SAFETY: `out` is non-NULL and writable.
                unsafe { write_out(out, handle::to_ptr(h)) };
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
    with_loop(r#loop, false, |st, lh| {
        if out.is_null() {
            return Err(Errno::EINVAL);
        }
        // SAFETY: NULL or a config of at least struct_size bytes, per the contract.
        let cfg = unsafe { read_config(cfg) }?;
        let (worker, port) = Worker::attach(st.core(), cfg)?;
        let shared = worker.shared().clone();
        let kind = Kind::Attached {
            worker: RefCell::new(Some(worker.clone())),
            lp: lh,
        };
        let h = match new_server(port, shared, kind) {
            Ok(h) => h,
            Err(e) => {
                worker.silence();
                worker.begin_stop(st.core());
                return Err(e);
            }
        };
        st.add_server(h);
        // SAFETY: `out` is non-NULL and, per the contract, writable.
        unsafe { write_out(out, handle::to_ptr(h)) };
        Ok(0)
    })
}

/// The port the server listens on (useful after configuring port 0).
/// Returns: the port (1..65535).
/// Errors: `-EINVAL` (`srv` NULL or stopped).
/// Ownership: unchanged.
/// Thread safety: any thread for a started server; the loop's thread for an attached one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_port(srv: *const echo_server) -> c_int {
    with_server(srv, |s| Ok(c_int::from(s.port)))
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
    with_server(srv, |s| {
        if out.is_null() {
            return Err(Errno::EINVAL);
        }
        let t = &s.shared;
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
        // SAFETY: non-NULL out-pointer, writable per the contract.
        unsafe { write_out(out, st) };
        Ok(0)
    })
}

/// Stops the server gracefully and frees it: stops accepting, lets every
/// connection send what is pending (for at most 2 s), then closes it.
///
/// A started server: its threads finish all of that before this returns.
/// An attached server: this closes the listener and starts the flush; connections
/// with pending bytes finish as the caller keeps driving the loop (they are
/// closed at once if the loop is freed first). After this returns, the
/// server's log callback is never called again (lingering connections close
/// silently), so `log_user_data` may be freed. An attached server whose loop
/// was freed first was ended by `epoll_loop_free`; this then only releases
/// the handle. In a process forked from the one that started the server, this
/// only releases the child's copy of the handle (the server keeps running in
/// the parent; the child touches none of its threads or descriptors).
/// Returns: 0. `echo_server_stop(NULL)` is a no-op returning 0.
/// Errors: `-EINVAL` (not a live server: stopped already, also by another
/// thread racing this call, or from the server's own log callback while a stop
/// runs: of two racing stops exactly one returns 0), `-EDEADLK` (a started
/// server stopped from its own log callback, which would wait for itself;
/// nothing is stopped), `-EBUSY` (an attached server, while another thread is
/// inside a call on its loop).
/// Ownership: `srv` is invalid after a 0 return.
/// Thread safety: a started server from any thread except its own threads; an
/// attached one on its loop's thread (inside its callbacks too).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_stop(srv: *mut echo_server) -> c_int {
    boundary(|| {
        if srv.is_null() {
            return 0;
        }
        let h = handle::from_ptr(srv);
        let Some(st) = SERVERS.get(h) else {
            return -libc::EINVAL;
        };
        if st.forks != handle::forks() {
            // A forked child: the server's threads are not here and its fds
            // are the parent's. Release the handle and nothing else.
            drop(st);
            return match SERVERS.remove(h, true) {
                Some(state) => {
                    std::mem::forget(state);
                    0
                }
                None => -libc::EINVAL,
            };
        }
        match &st.kind {
            Kind::Threaded(server) => {
                if server.is_own_thread() {
                    return -libc::EDEADLK;
                }
                drop(st);
                // One compare-and-swap decides between racing callers.
                let Some(state) = SERVERS.remove(h, false) else {
                    return -libc::EINVAL;
                };
                if let Kind::Threaded(mut server) = state.kind {
                    server.stop();
                }
                0
            }
            Kind::Attached { lp, .. } => {
                let lp = *lp;
                drop(st);
                let Some(loop_state) = LOOPS.get(lp) else {
                    // The loop was freed first, which ended the server.
                    return if SERVERS.remove(h, false).is_some() {
                        0
                    } else {
                        -libc::EINVAL
                    };
                };
                let _owned = match loop_state.enter(false) {
                    Ok(o) => o,
                    Err(e) => return e.to_negative(),
                };
                let Some(state) = SERVERS.remove(h, false) else {
                    return -libc::EINVAL;
                };
                if let Kind::Attached { worker, .. } = &state.kind {
                    let w = worker.borrow_mut().take();
                    if let Some(w) = w {
                        // May log "client close" (user code: a nested
                        // `_stop` now sees a stale handle, a nested
                        // `epoll_loop_free` is refused with EBUSY).
                        w.begin_stop(loop_state.core());
                        w.silence();
                    }
                }
                loop_state.remove_server(h);
                drop(state);
                0
            }
        }
    })
}
