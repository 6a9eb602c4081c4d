//! Helpers shared by the hardening tests (`hostile.rs`, `soak.rs`): an echo
//! server through the C ABI, clients, and process measurements (fds, CPU, RSS).
#![allow(dead_code)]

use ::epoll_loop::ffi::*;
use std::ffi::c_int;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

/// Tests that count the process's fds or CPU time run one at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A config from `echo_server_config_init` on 127.0.0.1, port 0.
pub fn config(threads: u32, idle_timeout_ms: u32) -> echo_server_config {
    // SAFETY: every field is an integer, a raw pointer or an Option of a function
    // pointer, all valid when zero; config_init then fills it.
    let mut cfg: echo_server_config = unsafe { std::mem::zeroed() };
    // SAFETY: valid, writable config.
    unsafe { echo_server_config_init(&mut cfg) };
    cfg.port = 0;
    cfg.backlog = 0; // SOMAXCONN: storms of connects must not be refused by the kernel
    cfg.threads = threads;
    cfg.idle_timeout_ms = idle_timeout_ms;
    cfg
}

/// A started server (`echo_server_start`), stopped on drop.
pub struct Server {
    raw: *mut echo_server,
    pub port: u16,
}

// SAFETY: port, get_stats and stop of a started server are documented as
// callable from any thread.
unsafe impl Send for Server {}
// SAFETY: as above.
unsafe impl Sync for Server {}

impl Server {
    pub fn start(cfg: &echo_server_config) -> Server {
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid config (static strings) and out-pointer.
        let rc = unsafe { echo_server_start(cfg, &mut raw) };
        assert_eq!(rc, 0, "echo_server_start");
        // SAFETY: live server.
        let port = unsafe { echo_server_port(raw) };
        assert!(port > 0);
        Server {
            raw,
            port: port as u16,
        }
    }

    pub fn stats(&self) -> echo_server_stats {
        let mut st = echo_server_stats::default();
        // SAFETY: live server, writable stats.
        assert_eq!(unsafe { echo_server_get_stats(self.raw, &mut st) }, 0);
        st
    }

    /// Waits until `pred(stats)` holds; panics after `limit` with the stats.
    pub fn wait(
        &self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&echo_server_stats) -> bool,
    ) -> echo_server_stats {
        let end = Instant::now() + limit;
        loop {
            let st = self.stats();
            if pred(&st) {
                return st;
            }
            assert!(
                Instant::now() < end,
                "timed out after {limit:?} waiting for {what}: {st:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops the server (graceful); returns how long it took.
    pub fn stop(mut self) -> Duration {
        let raw = std::mem::replace(&mut self.raw, std::ptr::null_mut());
        let t = Instant::now();
        // SAFETY: live server, stopped once.
        assert_eq!(unsafe { echo_server_stop(raw) }, 0);
        t.elapsed()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if !self.raw.is_null() {
            // SAFETY: live server not stopped yet (a test failed first).
            unsafe { echo_server_stop(self.raw) };
        }
    }
}

pub fn try_connect(port: u16) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(20)))?;
    Ok(s)
}

pub fn connect(port: u16) -> TcpStream {
    try_connect(port).unwrap_or_else(|e| panic!("connect to port {port}: {e}"))
}

/// Writes `msg`, reads as many bytes back and compares.
pub fn echo_once(s: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back != msg {
        return Err(io::Error::other("echo differs"));
    }
    Ok(())
}

/// Closing with `SO_LINGER {1, 0}`: the peer gets RST instead of FIN.
pub fn set_linger_zero(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a live socket and a linger struct of the size given.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}

pub fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// Waits (up to 5 s) for the fd count to fall back to `baseline`; returns the last count.
pub fn fds_settle(baseline: usize) -> usize {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let n = count_fds();
        if n <= baseline || Instant::now() > end {
            return n;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// User + system CPU time of the whole process.
pub fn cpu_time() -> Duration {
    // SAFETY: all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid, writable rusage.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) }, 0);
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Resident set size in KiB (VmRSS).
pub fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// Raises the soft RLIMIT_NOFILE to at least `need` (up to the hard limit).
pub fn raise_nofile(need: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit for getrlimit to fill.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur < need {
        lim.rlim_cur = need.min(lim.rlim_max);
        // SAFETY: valid rlimit; only the soft limit changes, within the hard one.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
    }
    lim.rlim_cur
}

/// xorshift64.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The seed of this run (`HARDENING_SEED`, or the clock), printed for replay.
pub fn seed() -> u64 {
    let s = std::env::var("HARDENING_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("HARDENING_SEED={s}");
    s
}

pub const EPIPE: c_int = -libc::EPIPE;
