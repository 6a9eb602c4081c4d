//! `echo_server_config.struct_size` through the C ABI: an older program's
//! smaller struct (the first layout ended after `log_user_data`, 64 bytes) is
//! read up to its size with the rest defaulted (`log_level` INFO, seen in the
//! log lines the server emits), never read past; a newer program's larger
//! struct is accepted when the bytes past ours are zero and refused with
//! `-E2BIG` when one is set; smaller than the first layout is `-EINVAL`.

use ::epoll_loop::ffi::*;
use std::ffi::{c_char, c_int, c_void};
use std::io::{Read, Write};
use std::mem::size_of;
use std::net::TcpStream;
use std::sync::Mutex;
use std::time::Duration;

type Lines = Mutex<Vec<(c_int, String)>>;

unsafe extern "C" fn collect(level: c_int, msg: *const c_char, ud: *mut c_void) {
    // SAFETY: `ud` is the test's `Lines`, alive until the server is stopped;
    // `msg` is a NUL-terminated line valid during the call.
    let (lines, text) = unsafe { (&*ud.cast::<Lines>(), std::ffi::CStr::from_ptr(msg)) };
    let text = text.to_string_lossy().into_owned();
    lines.lock().unwrap().push((level, text));
}

/// A full config (as `echo_server_config_init` gives it) that logs into `lines`
/// at `log_level`, port 0.
fn config(lines: &Lines, log_level: c_int) -> echo_server_config {
    let mut c = std::mem::MaybeUninit::<echo_server_config>::zeroed();
    // SAFETY: a writable config.
    unsafe { echo_server_config_init(c.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let mut c = unsafe { c.assume_init() };
    c.port = 0;
    c.log = Some(collect);
    c.log_user_data = (lines as *const Lines).cast_mut().cast();
    c.log_level = log_level;
    c
}

/// The config's bytes, `struct_size` set to `size`, padded with zeros to `len`.
fn bytes(c: &echo_server_config, size: u32, len: usize) -> Vec<u8> {
    let mut c = *c;
    c.struct_size = size;
    // SAFETY: reads the bytes of a live, initialised repr(C) value (its padding
    // may be anything; it is only copied).
    let raw = unsafe {
        std::slice::from_raw_parts(
            (&c as *const echo_server_config).cast::<u8>(),
            size_of::<echo_server_config>(),
        )
    };
    let mut v = raw.to_vec();
    v.resize(len.max(v.len()), 0);
    v
}

/// An 8-aligned buffer holding `b`.
fn aligned(b: &[u8]) -> Vec<u64> {
    let mut v = vec![0u64; b.len().div_ceil(8)];
    // SAFETY: `v` has room for `b.len()` bytes; the regions do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr().cast::<u8>(), b.len()) };
    v
}

/// Starts a server from the config at `cfg`, echoes one message through it,
/// stops it. Returns the start's result.
///
/// # Safety
/// `cfg` points to a config of at least its `struct_size` readable bytes.
unsafe fn start_echo_stop(cfg: *const echo_server_config) -> c_int {
    let mut srv = std::ptr::null_mut();
    // SAFETY: per the contract.
    let rc = unsafe { echo_server_start(cfg, &mut srv) };
    if rc != 0 {
        assert!(srv.is_null(), "*out written on failure");
        return rc;
    }
    // SAFETY: a live server.
    let port = unsafe { echo_server_port(srv) };
    let mut s = TcpStream::connect(("127.0.0.1", port as u16)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"hello").unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"hello");
    drop(s);
    // SAFETY: a live server, stopped once.
    assert_eq!(unsafe { echo_server_stop(srv) }, 0);
    0
}

fn levels(lines: &Lines) -> Vec<c_int> {
    let mut v: Vec<c_int> = lines.lock().unwrap().iter().map(|l| l.0).collect();
    v.sort();
    v.dedup();
    v
}

fn started(lines: &Lines) -> bool {
    lines
        .lock()
        .unwrap()
        .iter()
        .any(|(l, m)| *l == EPOLL_LOOP_LOG_INFO && m.starts_with("server started successfully"))
}

/// `len` bytes right before an inaccessible page: reading one byte past them
/// faults, so a library that read past `struct_size` would crash the test.
struct Guarded {
    base: *mut c_void,
    page: usize,
    len: usize,
}

impl Guarded {
    fn new(b: &[u8]) -> Guarded {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        assert!(b.len() <= page && b.len() % 8 == 0);
        // SAFETY: a fresh private anonymous mapping of two pages.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: the second page of our own mapping.
        let rc =
            unsafe { libc::mprotect(base.cast::<u8>().add(page).cast(), page, libc::PROT_NONE) };
        assert_eq!(rc, 0);
        // SAFETY: the first page is writable and holds `b.len() <= page` bytes at its end.
        unsafe {
            std::ptr::copy_nonoverlapping(
                b.as_ptr(),
                base.cast::<u8>().add(page - b.len()),
                b.len(),
            )
        };
        Guarded {
            base,
            page,
            len: b.len(),
        }
    }

    fn ptr(&self) -> *const echo_server_config {
        // SAFETY: inside the first page of the mapping; 8-aligned (len % 8 == 0).
        unsafe { self.base.cast::<u8>().add(self.page - self.len).cast() }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: our own mapping of two pages.
        unsafe { libc::munmap(self.base, 2 * self.page) };
    }
}

#[test]
fn the_first_layout_of_64_bytes_is_read_up_to_its_size_and_log_level_defaults_to_info() {
    let lines = Lines::default();
    // log_level ERROR would hide the INFO lines, were it read.
    let c = config(&lines, EPOLL_LOOP_LOG_ERROR);
    let b = bytes(&c, 64, 0);
    let g = Guarded::new(&b[..64]);
    // SAFETY: 64 readable bytes holding a first-layout config.
    assert_eq!(unsafe { start_echo_stop(g.ptr()) }, 0, "struct_size 64");
    assert!(
        started(&lines),
        "INFO lines are logged: {:?}",
        lines.lock().unwrap()
    );
    assert!(
        !levels(&lines).contains(&EPOLL_LOOP_LOG_DEBUG),
        "INFO, not more: {:?}",
        lines.lock().unwrap()
    );

    // The same through echo_server_attach.
    let mut lp = std::ptr::null_mut();
    // SAFETY: a writable out-pointer.
    assert_eq!(unsafe { epoll_loop_new(&mut lp) }, 0);
    let mut srv = std::ptr::null_mut();
    // SAFETY: a live loop, 64 readable config bytes, a writable out-pointer.
    assert_eq!(unsafe { echo_server_attach(lp, g.ptr(), &mut srv) }, 0);
    // SAFETY: the attached server and its loop, on this thread.
    unsafe {
        assert_eq!(echo_server_stop(srv), 0);
        assert_eq!(epoll_loop_free(lp), 0);
    }
}

#[test]
fn a_field_cut_by_struct_size_is_defaulted_and_one_inside_it_is_read() {
    // log_level DEBUG would add "received data" lines, were it read.
    for (size, debug) in [(66u32, false), (68, true), (72, true)] {
        let lines = Lines::default();
        let c = config(&lines, EPOLL_LOOP_LOG_DEBUG);
        let buf = aligned(&bytes(&c, size, 0));
        // SAFETY: the buffer holds at least `size` bytes of a config.
        let rc = unsafe { start_echo_stop(buf.as_ptr().cast()) };
        assert_eq!(rc, 0, "struct_size {size}");
        assert!(started(&lines));
        assert_eq!(
            levels(&lines).contains(&EPOLL_LOOP_LOG_DEBUG),
            debug,
            "struct_size {size}: {:?}",
            lines.lock().unwrap()
        );
    }
    // And a read log_level below INFO hides the INFO lines.
    let lines = Lines::default();
    let c = config(&lines, EPOLL_LOOP_LOG_ERROR);
    // SAFETY: a full config.
    assert_eq!(unsafe { start_echo_stop(&c) }, 0);
    assert!(!started(&lines), "{:?}", lines.lock().unwrap());
}

#[test]
fn a_larger_struct_is_accepted_with_zeros_past_ours_and_refused_with_e2big_otherwise() {
    let ours = size_of::<echo_server_config>();
    assert_eq!(ours, 72);
    for size in [80usize, 128, 4096] {
        let lines = Lines::default();
        let c = config(&lines, EPOLL_LOOP_LOG_DEBUG);
        let mut b = bytes(&c, size as u32, size);
        let buf = aligned(&b);
        // SAFETY: `size` readable bytes; all past ours are zero.
        assert_eq!(
            unsafe { start_echo_stop(buf.as_ptr().cast()) },
            0,
            "size {size}, zeros"
        );
        assert!(
            levels(&lines).contains(&EPOLL_LOOP_LOG_DEBUG),
            "its fields are read"
        );

        for at in [ours, size - 1] {
            b[at] = 1;
            let buf = aligned(&b);
            // SAFETY: as above.
            let rc = unsafe { start_echo_stop(buf.as_ptr().cast()) };
            assert_eq!(rc, -libc::E2BIG, "size {size}, byte {at} set");
            b[at] = 0;
        }
    }
    let lines = Lines::default();
    let c = config(&lines, EPOLL_LOOP_LOG_INFO);
    let buf = aligned(&bytes(&c, 4097, 8192));
    // SAFETY: 8192 readable bytes, all past ours zero.
    let rc = unsafe { start_echo_stop(buf.as_ptr().cast()) };
    assert_eq!(rc, -libc::E2BIG, "past the 4096-byte cap");
    assert!(lines.lock().unwrap().is_empty(), "nothing started");
    let m = epoll_loop_strerror(rc);
    // SAFETY: a static NUL-terminated string.
    let m = unsafe { std::ffi::CStr::from_ptr(m) }.to_string_lossy();
    assert!(m.contains("E2BIG") && m.contains("newer"), "{m}");
}

#[test]
fn smaller_than_the_first_layout_is_einval() {
    let lines = Lines::default();
    let c = config(&lines, EPOLL_LOOP_LOG_INFO);
    for size in [0u32, 4, 56, 63] {
        let buf = aligned(&bytes(&c, size, 0));
        // SAFETY: the buffer holds a whole config.
        let rc = unsafe { start_echo_stop(buf.as_ptr().cast()) };
        assert_eq!(rc, -libc::EINVAL, "struct_size {size}");
    }
    assert!(lines.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------------------
// The default backlog

/// The backlog the kernel gives a `listen(SOMAXCONN)`: capped by `net.core.somaxconn`.
fn expected_backlog() -> u32 {
    let cap: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u32::MAX);
    cap.min(libc::SOMAXCONN as u32)
}

/// The backlog of the socket listening on 127.0.0.1:`port`, as `ss` reports
/// it (Send-Q of a listener); `None` without `ss`.
fn listen_backlog(port: u16) -> Option<u32> {
    let o = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{port}")))
        .unwrap_or_else(|| panic!("no listener on port {port} in ss's output:\n{text}"));
    let backlog = line.split_whitespace().nth(2);
    Some(
        backlog
            .and_then(|b| b.parse().ok())
            .unwrap_or_else(|| panic!("ss: {line:?}")),
    )
}

#[test]
fn the_default_config_serves_200_clients_connecting_at_once() {
    const CLIENTS: usize = 200;
    let mut c = std::mem::MaybeUninit::<echo_server_config>::zeroed();
    // SAFETY: a writable config.
    unsafe { echo_server_config_init(c.as_mut_ptr()) };
    // SAFETY: initialised just above.
    let mut c = unsafe { c.assume_init() };
    assert_eq!(c.backlog, libc::SOMAXCONN, "the default backlog");
    c.port = 0;
    let mut srv = std::ptr::null_mut();
    // SAFETY: a full config and a writable out-pointer.
    assert_eq!(unsafe { echo_server_start(&c, &mut srv) }, 0);
    // SAFETY: a live server.
    let port = unsafe { echo_server_port(srv) } as u16;
    let echo = |s: &mut TcpStream, msg: &[u8]| -> std::io::Result<()> {
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(msg)?;
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back)?;
        assert_eq!(back, msg);
        Ok(())
    };
    assert_eq!(
        listen_backlog(port).unwrap_or(expected_backlog()),
        expected_backlog()
    );
    // A little traffic first: the server's thread is then busy in its loop.
    for i in 0..3 {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        echo(&mut s, format!("warm-up {i}").as_bytes()).unwrap();
    }
    let barrier = std::sync::Barrier::new(CLIENTS);
    let failures: Vec<String> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let barrier = &barrier;
                sc.spawn(move || -> Result<(), String> {
                    barrier.wait();
                    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
                    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(20))
                        .map_err(|e| format!("client {i}: connect: {e}"))?;
                    echo(&mut s, format!("client {i}").as_bytes())
                        .map_err(|e| format!("client {i}: {e}"))
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().unwrap().err())
            .collect()
    });
    // SAFETY: a live server, stopped once.
    assert_eq!(unsafe { echo_server_stop(srv) }, 0);
    assert!(
        failures.is_empty(),
        "{} of {CLIENTS} clients failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
