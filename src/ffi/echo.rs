//! `echo_server`: the seed tutorial's server as one library call.

use super::event_loop::epoll_loop;
use super::guard::boundary;
use std::ffi::{c_char, c_int, c_void};

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
    /// Address to listen on (numeric IPv4 or IPv6, or a host name). Default "127.0.0.1".
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
    /// reading from that client until they drain. Default 256 KiB.
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
    /// Connections closed at once because `max_connections` was reached.
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
pub struct echo_server {
    _private: (),
}

/// Fills `*cfg` with the defaults (the tutorial's: 127.0.0.1:8888, backlog 10, one
/// thread, no connection limit, no idle timeout, 256 KiB pending cap, no log).
/// Ownership: `*cfg` is the caller's. `cfg` NULL is ignored.
/// Thread safety: safe from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_config_init(cfg: *mut echo_server_config) {
    boundary(|| {
        let _ = cfg;
        0
    });
}

/// Starts an echo server on its own thread(s); it is listening when this returns.
/// Returns: 0, and the server in `*out`.
/// Errors: `-EINVAL` (NULL argument, bad config), `-EADDRINUSE`, `-EADDRNOTAVAIL`,
/// `-ENOENT` (host name does not resolve), `-EMFILE`, `-ENOMEM`.
/// Ownership: the caller owns `*out` and releases it with `echo_server_stop`.
/// Thread safety: safe from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_start(
    cfg: *const echo_server_config,
    out: *mut *mut echo_server,
) -> c_int {
    boundary(|| {
        let _ = (cfg, out);
        -libc::ENOSYS
    })
}

/// Starts an echo server on the caller's loop (driven by the caller's `_poll`/`_run`).
/// `cfg->threads` must be 1.
/// Returns: 0, and the server in `*out`.
/// Errors: as `echo_server_start`, and `-EINVAL` when `threads != 1`.
/// Ownership: the caller owns `*out`; `echo_server_stop` must be called on the loop's
/// thread before the loop is freed.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_attach(
    r#loop: *mut epoll_loop,
    cfg: *const echo_server_config,
    out: *mut *mut echo_server,
) -> c_int {
    boundary(|| {
        let _ = (r#loop, cfg, out);
        -libc::ENOSYS
    })
}

/// The port the server listens on (useful after configuring port 0).
/// Returns: the port (1..65535).
/// Errors: `-EINVAL` (NULL or stopped server).
/// Thread safety: safe from any thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_port(srv: *const echo_server) -> c_int {
    boundary(|| {
        let _ = srv;
        -libc::ENOSYS
    })
}

/// Fills `*out` with the server's counters.
/// Returns: 0.
/// Errors: `-EINVAL` (NULL argument or stopped server).
/// Thread safety: safe from any thread for a started server; loop thread for an attached one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_get_stats(
    srv: *const echo_server,
    out: *mut echo_server_stats,
) -> c_int {
    boundary(|| {
        let _ = (srv, out);
        -libc::ENOSYS
    })
}

/// Stops the server gracefully: stops accepting, sends what is pending (for at most
/// a short deadline), closes every connection, joins its threads and frees it.
/// Returns: 0. `echo_server_stop(NULL)` is a no-op returning 0.
/// Errors: `-EINVAL` (not a live server), `-EBUSY` (attached server stopped from
/// inside its loop's dispatch... see notes).
/// Ownership: `srv` is invalid after a 0 return.
/// Thread safety: any thread for a started server (not from its own log callback);
/// the loop's thread for an attached one.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn echo_server_stop(srv: *mut echo_server) -> c_int {
    boundary(|| {
        let _ = srv;
        -libc::ENOSYS
    })
}
