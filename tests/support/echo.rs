//! An echo server started through the C ABI (`echo_server_start`).

use ::epoll_loop::ffi::*;
use std::ffi::c_int;
use std::time::{Duration, Instant};

/// A config from `echo_server_config_init`, on 127.0.0.1 port 0.
pub fn config() -> echo_server_config {
    let mut cfg = zeroed_config();
    // SAFETY: `cfg` is a valid, writable config.
    unsafe { echo_server_config_init(&mut cfg) };
    cfg.host = c"127.0.0.1".as_ptr();
    cfg.port = 0;
    cfg
}

/// [`config`] for the hardening tests: backlog SOMAXCONN (storms of connects
/// must not be refused by the kernel), `threads` and `idle_timeout_ms` as given.
pub fn storm_config(threads: u32, idle_timeout_ms: u32) -> echo_server_config {
    let mut cfg = config();
    cfg.backlog = 0;
    cfg.threads = threads;
    cfg.idle_timeout_ms = idle_timeout_ms;
    cfg
}

/// A config of all zero bytes (not initialised).
pub fn zeroed_config() -> echo_server_config {
    // SAFETY: every field of the config (integers, raw pointers, Options of
    // function pointers) is valid when all its bytes are zero.
    unsafe { std::mem::zeroed() }
}

/// A started server; stopped by [`Server::stop`] or, failing that, on drop.
pub struct Server {
    raw: *mut echo_server,
    pub port: u16,
}

// SAFETY: the API documents `echo_server_port`, `_get_stats` and `_stop` as safe
// from any thread for a server made by `echo_server_start` (the only kind this
// type holds).
unsafe impl Send for Server {}
// SAFETY: as above; the shared operations (`port`, `get_stats`) are thread-safe.
unsafe impl Sync for Server {}

impl Server {
    /// `echo_server_start`: the server, or the code (and then `*out` untouched).
    pub fn try_start(cfg: &echo_server_config) -> Result<Server, c_int> {
        let mut out: *mut echo_server = std::ptr::null_mut();
        // SAFETY: `cfg` points to a valid config whose strings are 'static; `out`
        // is a valid out-pointer.
        let rc = unsafe { echo_server_start(cfg, &mut out) };
        if rc != 0 {
            assert!(
                out.is_null(),
                "echo_server_start failed ({rc}) but wrote *out"
            );
            return Err(rc);
        }
        assert!(!out.is_null(), "echo_server_start returned 0 and no server");
        let mut srv = Server { raw: out, port: 0 };
        // SAFETY: `out` is a live server.
        let port = unsafe { echo_server_port(out) };
        assert!((1..=65535).contains(&port), "echo_server_port = {port}");
        srv.port = port as u16;
        Ok(srv)
    }

    pub fn start(cfg: &echo_server_config) -> Server {
        Server::try_start(cfg).unwrap_or_else(|rc| panic!("echo_server_start = {rc}"))
    }

    /// The handle, for calls the tests make themselves.
    pub fn raw(&self) -> *mut echo_server {
        self.raw
    }

    pub fn stats(&self) -> echo_server_stats {
        let mut st = echo_server_stats::default();
        // SAFETY: `self.raw` is a live started server; `st` is writable.
        let rc = unsafe { echo_server_get_stats(self.raw, &mut st) };
        assert_eq!(rc, 0, "echo_server_get_stats");
        st
    }

    /// Polls the stats until `pred` holds; `Err(last stats)` after `limit`.
    pub fn try_wait(
        &self,
        limit: Duration,
        pred: impl Fn(&echo_server_stats) -> bool,
    ) -> Result<echo_server_stats, echo_server_stats> {
        let deadline = Instant::now() + limit;
        loop {
            let st = self.stats();
            if pred(&st) {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                return Err(st);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until `pred(stats)` holds; panics after `limit` with the stats.
    pub fn wait(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&echo_server_stats) -> bool,
    ) -> echo_server_stats {
        self.try_wait(limit, pred).unwrap_or_else(|st| {
            panic!("timed out after {limit:?} waiting for {what}; stats {st:?}")
        })
    }

    /// `echo_server_stop`: its code.
    pub fn stop(mut self) -> c_int {
        let raw = std::mem::replace(&mut self.raw, std::ptr::null_mut());
        // SAFETY: `raw` is a live server, stopped once (the guard is now empty).
        unsafe { echo_server_stop(raw) }
    }
}

impl Server {
    /// Stops the server, which must work; returns how long it took.
    pub fn stop_timed(self) -> Duration {
        let t = Instant::now();
        assert_eq!(self.stop(), 0, "echo_server_stop");
        t.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.raw.is_null() {
            return;
        }
        // SAFETY: a live server not stopped yet.
        let rc = unsafe { echo_server_stop(self.raw) };
        if !std::thread::panicking() {
            assert_eq!(rc, 0, "echo_server_stop");
        }
    }
}
