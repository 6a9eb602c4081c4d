//! The `c-examples/tcp_proxy.c` demo driven end to end: compiled with ASan +
//! UBSan against the shared library (LeakSanitizer too where it works), started
//! on port 0 in front of an echo server (`echo_server_start` in this process) or
//! a Rust upstream, fed by Rust clients, and stopped with SIGINT or SIGTERM,
//! after which it must exit 0 with nothing reported by the sanitizers.
//!
//! The memory test uses a build without sanitizers (ASan's allocator and
//! quarantine would hide the proxy's own memory behind its own).

mod support;

use std::ffi::c_int;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};
use support::c::{Link, assert_sanitizer_clean, compile_c, sanitizer_env};
use support::echo::{Server as Echo, config};
use support::process::{Running, rss_kib};
use support::{assert_same, lib_dir, out_dir, root};

const WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// Building and running the proxy
// ---------------------------------------------------------------------------

/// The proxy built with ASan + UBSan (once per test binary).
fn proxy_asan() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build("tcp_proxy_asan", true, &[]))
}

/// The proxy built without sanitizers, optimised (for memory measurements).
fn proxy_plain() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| build("tcp_proxy_plain", false, &["-O2"]))
}

fn build(name: &str, sanitize: bool, extra: &[&str]) -> PathBuf {
    let dir = out_dir("proxy");
    // Several `cargo test` runs may share the target directory: one file per process.
    let exe = dir.join(format!("{name}.{}", std::process::id()));
    let src = root().join("c-examples").join("tcp_proxy.c");
    compile_c(&[&src], &exe, Link::Shared, sanitize, extra);
    exe
}

/// A running proxy, killed (and reaped) on drop unless stopped.
struct Proxy {
    proc: Running,
    port: u16,
}

/// What a stopped proxy left behind.
struct Stopped {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Stopped {
    /// The counters from the final "stopped; pairs=... " line.
    fn counter(&self, name: &str) -> u64 {
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with("stopped;"))
            .unwrap_or_else(|| panic!("no 'stopped;' line in:\n{}", self.stdout));
        let key = format!("{name}=");
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&key))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in: {line}"))
    }
}

impl Proxy {
    /// Starts `exe --listen-port 0 --upstream-port upstream extra...` and waits for
    /// its "listening on HOST:PORT" line.
    fn start(exe: &Path, upstream: u16, extra: &[&str], sanitize: bool) -> Proxy {
        let mut cmd = Command::new(exe);
        cmd.args(["--listen-host", "127.0.0.1", "--listen-port", "0"])
            .args(["--upstream-host", "127.0.0.1"])
            .args(["--upstream-port", &upstream.to_string()])
            .args(extra)
            .env("LD_LIBRARY_PATH", lib_dir())
            .stdin(Stdio::null());
        if sanitize {
            sanitizer_env(&mut cmd);
        }
        let mut proc = Running::spawn("tcp_proxy", &mut cmd);
        let port = proc.wait_for_port(WAIT);
        Proxy { proc, port }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn assert_alive(&mut self) {
        self.proc.assert_alive("while serving");
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(self.proc.pid)
    }

    /// Sends `sig`, waits for the exit, and checks: exit 0, no sanitizer report.
    fn stop(self, sig: c_int) -> Stopped {
        let t0 = Instant::now();
        self.proc.signal(sig);
        let o = self.proc.wait(WAIT);
        let s = Stopped {
            status: o.status,
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            took: t0.elapsed(),
        };
        assert_sanitizer_clean("tcp_proxy", &s.stderr);
        assert!(
            s.status.success(),
            "tcp_proxy exited with {} on signal {sig}:\n{}\n{}",
            s.status,
            s.stdout,
            s.stderr
        );
        s
    }
}

// ---------------------------------------------------------------------------
// The echo server behind the proxy (in this process)
// ---------------------------------------------------------------------------

/// An echo server from `echo_server_start` (backlog SOMAXCONN), stopped on drop.
fn start_echo() -> Echo {
    let mut cfg = config();
    cfg.backlog = 0; // SOMAXCONN
    Echo::start(&cfg)
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Deterministic bytes of stream `seed` (xorshift64*).
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.set_write_timeout(Some(WAIT)).unwrap();
    s
}

/// Reads until EOF (bounded by the socket's read timeout).
fn read_to_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read until EOF");
    v
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

/// `--help` prints the usage and exits 0; bad or missing arguments exit 2.
#[test]
fn proxy_help_and_bad_arguments() {
    let run = |args: &[&str]| {
        let mut cmd = Command::new(proxy_asan());
        cmd.args(args).env("LD_LIBRARY_PATH", lib_dir());
        sanitizer_env(&mut cmd);
        cmd.output().unwrap()
    };
    let o = run(&["--help"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for opt in [
        "--listen-host",
        "--listen-port",
        "--upstream-host",
        "--upstream-port",
    ] {
        assert!(out.contains(opt), "--help does not mention {opt}:\n{out}");
    }
    for bad in [
        &[][..],
        &["--upstream-port", "0"],
        &["--upstream-port", "70000"],
        &["--upstream-port", "80", "--listen-port", "x"],
        &["--upstream-port", "80", "extra"],
        &["--nope"],
    ] {
        let o = run(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}");
    }
}

/// 16 MiB of random bytes through the proxy to the echo server and back,
/// byte-exact, while both directions flow at once; then the client's
/// half-close travels through (proxy -> echo server), the echo server closes,
/// and that EOF comes back through the proxy to the client.
#[test]
fn proxy_relays_16_mib_byte_exact_through_the_echo_server() {
    const N: usize = 16 << 20;
    let echo = start_echo();
    let px = Proxy::start(proxy_asan(), echo.port, &["--verbose"], true);
    let data = pattern(16, N);
    let mut s = connect(px.addr());
    let mut w = s.try_clone().unwrap();
    let t0 = Instant::now();
    let to_send = data.clone();
    let writer = thread::spawn(move || {
        w.write_all(&to_send).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_to_eof(&mut s);
    let took = t0.elapsed();
    writer.join().unwrap();
    if got != data {
        let es = echo.stats();
        let st = px.stop(libc::SIGINT);
        assert_same(
            &format!(
                "16 MiB through the proxy (echo server: {} bytes in, {} out; proxy said:\n{}{})",
                es.bytes_in, es.bytes_out, st.stdout, st.stderr
            ),
            &got,
            &data,
        );
        unreachable!("assert_same returned on different data");
    }
    println!(
        "16 MiB echoed through the proxy (ASan build) in {took:?}: {:.1} MiB/s each way",
        16.0 / took.as_secs_f64()
    );
    drop(s);
    let st = px.stop(libc::SIGINT);
    println!("proxy: {}", st.stdout.lines().last().unwrap_or(""));
    assert_eq!(st.counter("pairs"), 1);
    assert_eq!(st.counter("errors"), 0);
    assert_eq!(st.counter("bytes_up"), N as u64);
    assert_eq!(st.counter("bytes_down"), N as u64);
}

/// 1000 clients connected through the proxy at the same time, each sending
/// distinct data (different lengths and bytes) and getting exactly its own
/// back; then each half-closes and sees the EOF relayed back.
#[test]
fn proxy_serves_1000_concurrent_connections_each_echoing_its_own_data() {
    const CLIENTS: usize = 1000;
    const THREADS: usize = 4;
    let echo = start_echo();
    let mut px = Proxy::start(proxy_asan(), echo.port, &[], true);
    let addr = px.addr();
    let t0 = Instant::now();
    // All connected before anyone talks.
    let clients: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    let connected = t0.elapsed();
    px.assert_alive();
    let mut groups: Vec<Vec<(usize, TcpStream)>> = (0..THREADS).map(|_| Vec::new()).collect();
    for (i, c) in clients.into_iter().enumerate() {
        groups[i % THREADS].push((i, c));
    }
    let t1 = Instant::now();
    let workers: Vec<_> = groups
        .into_iter()
        .map(|mut group| {
            thread::spawn(move || {
                let msgs: Vec<Vec<u8>> = group
                    .iter()
                    .map(|(i, _)| pattern(1000 + *i as u64, 1000 + (*i * 37) % 3000))
                    .collect();
                // Everyone writes first, so all connections carry data at once.
                for ((_, s), m) in group.iter_mut().zip(&msgs) {
                    s.write_all(m).unwrap();
                }
                for ((i, s), m) in group.iter_mut().zip(&msgs) {
                    let mut back = vec![0u8; m.len()];
                    s.read_exact(&mut back)
                        .unwrap_or_else(|e| panic!("client {i}: {e}"));
                    assert_same(&format!("client {i}"), &back, m);
                }
                for (_, s) in group.iter_mut() {
                    s.shutdown(Shutdown::Write).unwrap();
                }
                for (i, s) in group.iter_mut() {
                    let rest = read_to_eof(s);
                    assert!(
                        rest.is_empty(),
                        "client {i}: {} bytes after the echo",
                        rest.len()
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    println!(
        "{CLIENTS} connections through the proxy (ASan build): connected in {connected:?}, \
         echoed and closed in {:?}",
        t1.elapsed()
    );
    let st = px.stop(libc::SIGINT);
    println!("proxy: {}", st.stdout.lines().last().unwrap_or(""));
    assert_eq!(st.counter("pairs"), CLIENTS as u64);
    assert_eq!(st.counter("errors"), 0);
    assert_eq!(
        st.counter("open"),
        0,
        "every pair closed after its half-closes"
    );
}

/// Half-close relayed both ways, against a Rust upstream that checks each
/// step: (a) the client sends a request and shuts down its writing side; the
/// upstream reads it up to EOF, then answers and closes; the client gets the
/// answer and EOF. (b) The upstream greets and shuts down first; the client
/// reads the greeting and EOF, then still sends; the upstream gets that and EOF.
#[test]
fn proxy_relays_half_close_both_ways() {
    let (ul, uaddr) = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    };
    let upstream = thread::spawn(move || {
        // (a)
        let (mut s, _) = ul.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let req = read_to_eof(&mut s);
        s.write_all(b"response to: ").unwrap();
        s.write_all(&req).unwrap();
        drop(s);
        // (b)
        let (mut s, _) = ul.accept().unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"greeting, then FIN").unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        read_to_eof(&mut s)
    });
    let px = Proxy::start(proxy_asan(), uaddr.port(), &["--verbose"], true);

    let mut a = connect(px.addr());
    a.write_all(b"request").unwrap();
    a.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_eof(&mut a), b"response to: request");

    let mut b = connect(px.addr());
    let mut greeting = vec![0u8; 18];
    b.read_exact(&mut greeting).unwrap();
    assert_eq!(greeting, b"greeting, then FIN");
    let mut one = [0u8; 1];
    assert_eq!(
        b.read(&mut one).unwrap(),
        0,
        "the upstream's EOF is relayed"
    );
    b.write_all(b"still talking after your FIN").unwrap();
    b.shutdown(Shutdown::Write).unwrap();
    let late = upstream.join().unwrap();
    assert_eq!(late, b"still talking after your FIN");
    let mut rest = Vec::new();
    b.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());

    let st = px.stop(libc::SIGTERM);
    assert_eq!(st.counter("pairs"), 2);
    assert_eq!(st.counter("errors"), 0);
    assert_eq!(st.counter("open"), 0);
}

/// An upstream that refuses, and one that resets: the client's connection is
/// closed (the proxy flushes, then closes), the error is logged and counted,
/// and the proxy keeps serving.
#[test]
fn proxy_closes_the_client_when_the_upstream_refuses_or_resets() {
    let refused_port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let px = Proxy::start(proxy_asan(), refused_port, &[], true);
    let mut c = connect(px.addr());
    let _ = c.write_all(b"anyone there?"); // queued while connecting, then dropped
    let t0 = Instant::now();
    let r = c.read(&mut [0u8; 16]);
    println!(
        "client of a refused upstream: read {r:?} after {:?}",
        t0.elapsed()
    );
    assert!(matches!(r, Ok(0)), "EOF expected, got {r:?}");
    let st = px.stop(libc::SIGINT);
    assert!(
        st.stdout.contains("Connection refused") || st.stdout.contains("ECONNREFUSED"),
        "{}",
        st.stdout
    );
    assert_eq!(st.counter("errors"), 1);
    assert_eq!(st.counter("open"), 0);

    // An upstream that accepts, reads a little, then resets.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = l.local_addr().unwrap().port();
    let upstream = thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).unwrap();
        let lin = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: setsockopt on a socket this thread owns, with a valid linger struct.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&s),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                std::ptr::from_ref(&lin).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        drop(s); // RST
        b
    });
    let px = Proxy::start(proxy_asan(), up, &[], true);
    let mut c = connect(px.addr());
    c.write_all(b"hello").unwrap();
    assert_eq!(&upstream.join().unwrap(), b"hello");
    let r = c.read(&mut [0u8; 16]);
    assert!(
        matches!(r, Ok(0)),
        "EOF expected after the upstream's reset, got {r:?}"
    );
    // Still serving: another client (to the same, now absent, upstream) is closed too.
    let mut c2 = connect(px.addr());
    assert!(matches!(c2.read(&mut [0u8; 1]), Ok(0)));
    let st = px.stop(libc::SIGINT);
    assert_eq!(st.counter("pairs"), 2);
    assert_eq!(st.counter("errors"), 2);
}

/// SIGTERM with open, idle pairs: the proxy closes them (each client sees EOF),
/// frees everything (LeakSanitizer) and exits 0, promptly.
#[test]
fn proxy_stops_on_sigterm_with_open_pairs() {
    let echo = start_echo();
    let px = Proxy::start(proxy_asan(), echo.port, &[], true);
    let mut clients: Vec<TcpStream> = (0..20).map(|_| connect(px.addr())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let m = format!("client {i}");
        c.write_all(m.as_bytes()).unwrap();
        let mut back = vec![0u8; m.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, m.as_bytes());
    }
    // Clients answer the proxy's FIN with their own, as a well-behaved peer does.
    let closers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            thread::spawn(move || {
                let rest = read_to_eof(&mut c);
                drop(c);
                rest.len()
            })
        })
        .collect();
    let st = px.stop(libc::SIGTERM);
    for h in closers {
        assert_eq!(h.join().unwrap(), 0, "no bytes after the echo, then EOF");
    }
    println!(
        "SIGTERM with 20 open pairs: exit 0 after {:?}; {}",
        st.took,
        st.stdout.lines().last().unwrap_or("")
    );
    assert!(st.stdout.contains("SIGTERM received"));
    assert_eq!(st.counter("pairs"), 20);
    assert_eq!(st.counter("open"), 0, "every pair closed before the exit");
    // Closed by the clients' FINs, not by the proxy's 5 s stop deadline (which
    // says so); a wall-clock bound would also count an ASan exit on a loaded
    // machine. A hang is caught by stop()'s own limit.
    assert!(
        !st.stdout.contains("still open after"),
        "the stop deadline fired after {:?}:\n{}",
        st.took,
        st.stdout
    );
}

/// A client that writes 64 MiB and never reads: the proxy pauses reading from
/// it once the path back is full (client <- proxy <- echo server <- proxy), so
/// the client's writes stall, and the proxy's memory (VmRSS, optimised build
/// without sanitizers) grows by less than 8 MiB over its idle baseline. Its
/// queues are capped at 256 KiB per connection.
#[test]
fn proxy_memory_stays_bounded_when_a_client_stops_reading() {
    const TOTAL: usize = 64 << 20;
    const CHUNK: usize = 64 << 10;
    let echo = start_echo();
    let mut px = Proxy::start(proxy_plain(), echo.port, &[], false);

    // Warm up: one full round trip allocates what a working pair needs.
    {
        let mut c = connect(px.addr());
        let m = pattern(5, 256 << 10);
        let mut r = c.try_clone().unwrap();
        let m2 = m.clone();
        let reader = thread::spawn(move || {
            let mut back = vec![0u8; m2.len()];
            r.read_exact(&mut back).unwrap();
            back
        });
        c.write_all(&m).unwrap();
        assert_same("warm-up", &reader.join().unwrap(), &m);
    }
    thread::sleep(Duration::from_millis(200));
    let base = px.rss_kib();

    let c = connect(px.addr());
    c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let chunk = pattern(6, CHUNK);
        let mut sent = 0usize;
        let t0 = Instant::now();
        while sent < TOTAL {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("write: {e}"),
            }
        }
        (sent, t0.elapsed())
    }); // `w` is dropped with the thread; `c` still holds the socket
    let mut peak = base;
    while !writer.is_finished() {
        peak = peak.max(px.rss_kib());
        thread::sleep(Duration::from_millis(20));
    }
    let (sent, took) = writer.join().unwrap();
    for _ in 0..25 {
        peak = peak.max(px.rss_kib());
        thread::sleep(Duration::from_millis(20));
    }
    px.assert_alive();
    let growth = peak.saturating_sub(base);
    println!(
        "client wrote {:.1} MiB of {} MiB, then stalled ({took:?}); proxy VmRSS {base} KiB idle, \
         {peak} KiB peak: +{growth} KiB",
        sent as f64 / (1 << 20) as f64,
        TOTAL >> 20
    );
    assert!(
        sent < TOTAL,
        "the client's writes never stalled: no backpressure"
    );
    assert!(
        growth < 8 * 1024,
        "proxy memory grew by {growth} KiB (limit 8 MiB)"
    );

    drop(c); // (and the writer's clone, gone with its thread) unread data: a reset; the proxy closes the pair
    let st = px.stop(libc::SIGINT);
    println!("proxy: {}", st.stdout.lines().last().unwrap_or(""));
    assert!(st.counter("pauses") > 0, "the proxy never paused a reader");
}
