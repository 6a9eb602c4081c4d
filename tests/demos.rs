//! The three C demos (`c-examples/`) driven end to end: each is compiled with
//! AddressSanitizer and UndefinedBehaviorSanitizer against the shared library,
//! started on port 0 (the port is read from its start line), fed by real clients
//! (the demo client, a Python standard-library client, Rust clients), and stopped
//! with SIGINT, after which it must exit 0 with nothing reported by the sanitizers.
//!
//! The reset and fd-exhaustion tests run against the demo processes on purpose: a
//! Rust test binary ignores SIGPIPE, which would hide a send without
//! `MSG_NOSIGNAL`, and `RLIMIT_NOFILE` is per process.

mod support;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use support::c::{Link, assert_sanitizer_clean, compile_c, sanitizer_env};
use support::net::{echo_to_eof, set_linger_zero};
use support::process::{Running, output_with_input, output_within, tail};
use support::{assert_same, out_dir, root};

// ---------------------------------------------------------------------------
// Building the demos

struct Demos {
    client: PathBuf,
    server: PathBuf,
    callbacks: PathBuf,
}

/// Compiles the three demos once per test binary (ASan + UBSan, linked against the `.so`).
fn demos() -> &'static Demos {
    static DEMOS: OnceLock<Demos> = OnceLock::new();
    DEMOS.get_or_init(|| {
        let dir = out_dir("demos");
        let build = |name: &str| {
            let src = root().join("c-examples").join(format!("{name}.c"));
            let exe = dir.join(name);
            compile_c(&[&src], &exe, Link::Shared, true, &[]);
            exe
        };
        Demos {
            client: build("echo_client"),
            server: build("echo_server"),
            callbacks: build("echo_server_callbacks"),
        }
    })
}

// ---------------------------------------------------------------------------
// Processes

/// A running demo server, killed (and reaped) on drop if the test did not stop it.
struct Server {
    name: String,
    proc: Running,
    pid: u32,
    port: u16,
}

/// What a stopped server left behind.
struct Stopped {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Server {
    /// Starts `exe --port 0 args...` (with `RLIMIT_NOFILE` soft = hard = `nofile` if
    /// given) and waits for its "listening on HOST:PORT" line.
    fn start(exe: &Path, args: &[&str], nofile: Option<u64>) -> Server {
        let name = exe.file_name().unwrap().to_string_lossy().into_owned();
        let mut cmd = Command::new(exe);
        cmd.args(["--port", "0"]).args(args).stdin(Stdio::null());
        sanitizer_env(&mut cmd);
        if let Some(n) = nofile {
            // SAFETY: the closure runs in the forked child before exec and calls only
            // setrlimit(2), which is async-signal-safe; `rl` lives on the child's stack.
            unsafe {
                cmd.pre_exec(move || {
                    let rl = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut proc = Running::spawn(&name, &mut cmd);
        let port = proc.wait_for_port(Duration::from_secs(30));
        Server {
            name,
            pid: proc.pid,
            proc,
            port,
        }
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Panics if the process has exited.
    fn assert_alive(&mut self, when: &str) {
        self.proc.assert_alive(when);
    }

    fn stdout_now(&self) -> String {
        self.proc.stdout()
    }

    /// Sends SIGINT and waits (at most 30 s) for the process to exit.
    fn interrupt(self) -> Stopped {
        self.proc.signal(libc::SIGINT);
        let o = self.proc.wait(Duration::from_secs(30));
        let stopped = Stopped {
            status: o.status,
            stdout: text(&o.stdout),
            stderr: text(&o.stderr),
        };
        assert_sanitizer_clean(&self.name, &stopped.stderr);
        stopped
    }

    /// SIGINT, then asserts a clean exit 0; returns the output.
    fn stop_cleanly(self) -> Stopped {
        let name = self.name.clone();
        let s = self.interrupt();
        assert!(
            s.status.success(),
            "{name} did not exit 0 on SIGINT ({}):\n--- stdout (tail) ---\n{}\n--- stderr ---\n{}",
            s.status,
            tail(&s.stdout, 3000),
            s.stderr
        );
        s
    }
}

/// The client demo pointed at `port`.
fn client_cmd(port: u16) -> Command {
    let mut cmd = Command::new(&demos().client);
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()]);
    sanitizer_env(&mut cmd);
    cmd
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------
// Sockets

/// A small deterministic generator (xorshift64*), so failures can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next() >> 32) as u8).collect()
    }
    fn printable(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| b'!' + (self.next() % 94) as u8).collect()
    }
}

/// utime + stime of a process, in seconds (from /proc/<pid>/stat).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the ")" that closes the command name: state is [0], utime [11], stime [12].
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks as f64 / hz as f64
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Retries a byte-exact echo of `data` until it works or 15 s pass.
fn served_within(addr: SocketAddr, data: &[u8]) -> Duration {
    let t0 = Instant::now();
    let mut last = String::new();
    while t0.elapsed() < Duration::from_secs(15) {
        match echo_to_eof(addr, data) {
            Ok(back) if back == data => return t0.elapsed(),
            Ok(back) => last = format!("{} bytes back of {}", back.len(), data.len()),
            Err(e) => last = e.to_string(),
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "no byte-exact echo of {} bytes within 15 s; last: {last}",
        data.len()
    );
}

/// "key=value" pairs of the line starting with `prefix`-containing text.
fn stats_from(stdout: &str) -> std::collections::HashMap<String, u64> {
    let line = stdout
        .lines()
        .find(|l| l.contains("stats:"))
        .unwrap_or_else(|| panic!("no stats summary in:\n{}", tail(stdout, 3000)));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let v = v.trim_end_matches(|c: char| !c.is_ascii_digit());
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

// ---------------------------------------------------------------------------
// echo_client

#[test]
fn demos_print_help() {
    for exe in [&demos().client, &demos().server, &demos().callbacks] {
        let mut cmd = Command::new(exe);
        cmd.arg("--help").stdin(Stdio::null());
        sanitizer_env(&mut cmd);
        let o = output_within(&mut cmd, Duration::from_secs(10));
        support::assert_success(&format!("{} --help", exe.display()), &o);
        let out = text(&o.stdout);
        for flag in ["--host", "--port", "--help"] {
            assert!(
                out.contains(flag),
                "{}: help lacks {flag}:\n{out}",
                exe.display()
            );
        }
    }
}

#[test]
fn client_from_a_pipe_prints_both_echoes() {
    let srv = Server::start(&demos().callbacks, &[], None);
    let o = output_with_input(
        &mut client_cmd(srv.port),
        b"a\nb\n".to_vec(),
        Duration::from_secs(30),
    );
    support::assert_success("echo_client < 'a\\nb\\n'", &o);
    assert_sanitizer_clean("echo_client", &text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "Please input: data received by the client: a\n\
         Please input: data received by the client: b\n\
         Please input: \n"
    );
    let s = srv.stop_cleanly();
    assert!(
        s.stdout.contains("new connection: 127.0.0.1:"),
        "{}",
        s.stdout
    );
    assert!(s.stdout.contains("received data: "), "{}", s.stdout);
    assert!(s.stdout.contains("client close: "), "{}", s.stdout);
}

#[test]
fn client_streams_a_100_kb_line() {
    let srv = Server::start(&demos().callbacks, &[], None);
    let mut line = Rng(7).printable(100_000);
    line.push(b'\n');
    let o = output_with_input(
        &mut client_cmd(srv.port),
        line.clone(),
        Duration::from_secs(60),
    );
    support::assert_success("echo_client < 100 KB line", &o);
    let mut want = b"Please input: data received by the client: ".to_vec();
    want.extend_from_slice(&line);
    want.extend_from_slice(b"Please input: \n");
    assert_same("client output", &o.stdout, &want);
    srv.stop_cleanly();
}

#[test]
fn client_reads_a_redirected_file() {
    // A regular file cannot be polled (epoll_loop_register gives -EPERM): the
    // client must fall back to blocking reads. Lines: a short one, 300 KB, an
    // empty one, and a last one without a newline.
    let srv = Server::start(&demos().callbacks, &[], None);
    let big = Rng(11).printable(300_000);
    let mut input = b"first\n".to_vec();
    input.extend_from_slice(&big);
    input.extend_from_slice(b"\n\nlast");
    let path = out_dir("demos").join(format!("client_input_{}.txt", std::process::id()));
    std::fs::write(&path, &input).unwrap();
    let mut cmd = client_cmd(srv.port);
    cmd.stdin(std::fs::File::open(&path).unwrap());
    let o = output_within(&mut cmd, Duration::from_secs(60));
    let _ = std::fs::remove_file(&path);
    support::assert_success("echo_client < file", &o);
    let p = "Please input: data received by the client: ";
    let mut want = format!("{p}first\n{p}").into_bytes();
    want.extend_from_slice(&big);
    want.extend_from_slice(format!("\n{p}\n{p}last\nPlease input: \n").as_bytes());
    assert_same("client output", &o.stdout, &want);
    srv.stop_cleanly();
}

#[test]
fn client_reports_connection_refused() {
    // A port that was free a moment ago: bind, read it, close.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let o = output_with_input(
        &mut client_cmd(port),
        b"hello\n".to_vec(),
        Duration::from_secs(30),
    );
    assert_eq!(o.status.code(), Some(1), "exit status: {}", o.status);
    let err = text(&o.stderr);
    assert_sanitizer_clean("echo_client", &err);
    assert!(
        err.contains("cannot connect") && err.contains("refused"),
        "unclear message: {err}"
    );
}

/// A fake server that accepts one client (waiting at most 20 s), reads one line,
/// then does `then` to the connection.
fn fake_server(then: fn(TcpStream, Vec<u8>)) -> (u16, JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    l.set_nonblocking(true).unwrap();
    let h = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("fake server: no client within 20 s: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut line = Vec::new();
        let mut buf = [0u8; 4096];
        while !line.contains(&b'\n') {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => line.extend_from_slice(&buf[..n]),
            }
        }
        then(s, line);
    });
    (port, h)
}

/// Runs the client demo with `input` against a fake server that does `then`
/// with the first line; the client must fail (exit 1) without a sanitizer
/// report. Returns its stdout and stderr.
fn client_fails_against(then: fn(TcpStream, Vec<u8>), input: &[u8]) -> (String, String) {
    let (port, h) = fake_server(then);
    let o = output_with_input(
        &mut client_cmd(port),
        input.to_vec(),
        Duration::from_secs(30),
    );
    h.join().unwrap();
    assert_eq!(o.status.code(), Some(1), "exit status: {}", o.status);
    let err = text(&o.stderr);
    assert_sanitizer_clean("echo_client", &err);
    (text(&o.stdout), err)
}

#[test]
fn client_reports_a_server_that_goes_away() {
    // EOF after half of the echo.
    let (out, err) = client_fails_against(
        |mut s, line| {
            s.write_all(&line[..line.len() / 2]).unwrap();
            drop(s);
        },
        b"hello world\nsecond\n",
    );
    assert!(
        err.contains("closed the connection before echoing the whole line"),
        "unclear message: {err}"
    );
    assert!(out.contains("data received by the client: hello"));

    // A reset instead of an echo.
    let (_, err) = client_fails_against(
        |s, _| {
            set_linger_zero(&s);
            drop(s);
        },
        b"hello\n",
    );
    assert!(
        err.contains("reset") || err.contains("closed the connection"),
        "unclear message: {err}"
    );
}

// ---------------------------------------------------------------------------
// echo_server_callbacks, driven by Python

const PY_CLIENTS: &str = r#"
import os, socket, sys, threading
port, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
errors = []
def client(i):
    try:
        data = os.urandom(size)
        s = socket.create_connection(('127.0.0.1', port), timeout=30)
        got = []
        def reader():
            try:
                while True:
                    b = s.recv(65536)
                    if not b:
                        return
                    got.append(b)
            except Exception as e:
                errors.append('client %d reader: %r' % (i, e))
        t = threading.Thread(target=reader)
        t.start()
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        t.join(90)
        if t.is_alive():
            errors.append('client %d: no EOF after the half-close' % i)
            return
        back = b''.join(got)
        if back != data:
            errors.append('client %d: %d bytes back of %d, equal=%s' % (i, len(back), len(data), back == data))
        s.close()
    except Exception as e:
        errors.append('client %d: %r' % (i, e))
threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
for t in threads:
    t.start()
for t in threads:
    t.join(120)
print('%d clients x %d bytes: %s' % (n, size, 'FAILED' if errors else 'ok'))
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
"#;

#[test]
fn callbacks_server_echoes_python_clients() {
    let srv = Server::start(&demos().callbacks, &[], None);
    let (clients, size) = (8usize, 1usize << 20);
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        PY_CLIENTS,
        &srv.port.to_string(),
        &clients.to_string(),
        &size.to_string(),
    ])
    .stdin(Stdio::null());
    let t0 = Instant::now();
    let o = output_within(&mut cmd, Duration::from_secs(180));
    support::assert_success("python clients", &o);
    eprintln!("python: {} in {:?}", text(&o.stdout).trim(), t0.elapsed());
    let s = srv.stop_cleanly();
    let news = s.stdout.matches("new connection: ").count();
    let closes = s.stdout.matches("client close: ").count();
    assert_eq!(
        (news, closes),
        (clients, clients),
        "connections opened/closed"
    );
}

// ---------------------------------------------------------------------------
// Resets and fd exhaustion, against both servers

/// Many clients go away while the server has echo data for them, in three ways
/// (by client number modulo 4):
/// - 0, 2: send 128 or 192 KiB in one go and `shutdown(SHUT_RDWR)` at once,
///   never reading. The server gets all the data and the FIN (it is in
///   CLOSE_WAIT); its first echo reaches a socket that no longer reads, which
///   answers with RST, and the server's next send fails with EPIPE: without
///   `MSG_NOSIGNAL` that send raises SIGPIPE and kills the process. (Checked:
///   this kills both servers built without `MSG_NOSIGNAL` in every run.)
/// - 1: send until blocked (at most 2 MiB: the server's queue is full and it is
///   writing to us), read a random part of the echo, reset (SO_LINGER 0 + close);
/// - 3: send 64 KiB and reset at once.
///
/// Then a new client must still be served.
fn resets_then_served(exe: &Path, args: &[&str]) {
    let mut srv = Server::start(exe, args, None);
    let addr = srv.addr();
    let mut resets = 0usize;
    let mut sent_total = 0usize;
    for round in 0..3u64 {
        let handles: Vec<_> = (0..32u64)
            .map(|i| {
                thread::spawn(move || -> io::Result<usize> {
                    let mut rng = Rng(round * 1000 + i + 1);
                    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
                    s.set_write_timeout(Some(Duration::from_millis(300)))?;
                    s.set_read_timeout(Some(Duration::from_millis(300)))?;
                    let mode = i % 4;
                    if mode == 0 || mode == 2 {
                        let data = rng.bytes(if mode == 0 { 128 << 10 } else { 192 << 10 });
                        s.write_all(&data)?;
                        s.shutdown(Shutdown::Both)?;
                        thread::sleep(Duration::from_millis(100));
                        return Ok(data.len());
                    }
                    let chunk = rng.bytes(64 << 10);
                    let limit = if mode == 1 { 2 << 20 } else { 64 << 10 };
                    let mut sent = 0;
                    while sent < limit {
                        match s.write(&chunk) {
                            Ok(n) => sent += n,
                            Err(_) => break,
                        }
                    }
                    if mode == 1 {
                        let want = (rng.next() % (256 << 10)) as usize;
                        let mut buf = vec![0u8; 16 << 10];
                        let mut got = 0;
                        while got < want {
                            match s.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => got += n,
                            }
                        }
                    }
                    set_linger_zero(&s);
                    drop(s);
                    Ok(sent)
                })
            })
            .collect();
        for h in handles {
            if let Ok(n) = h.join().unwrap() {
                resets += 1;
                sent_total += n;
            }
        }
        srv.assert_alive(&format!("after reset round {round}"));
    }
    assert!(resets >= 64, "only {resets} of 96 clients connected");
    let data = Rng(99).bytes(1 << 20);
    let took = served_within(addr, &data);
    srv.assert_alive("after the resets");
    eprintln!(
        "{}: {resets} clients went away after sending {sent_total} bytes in all; \
         a new client got 1 MiB back in {took:?}",
        srv.name
    );
    srv.stop_cleanly();
}

/// Under RLIMIT_NOFILE 64, 100 clients connect: the server runs out of fds,
/// must not spin, and must serve a new client once the others are gone.
/// Returns the server's stdout.
fn fd_exhaustion(exe: &Path, args: &[&str]) -> String {
    let mut srv = Server::start(exe, args, Some(64));
    let addr = srv.addr();
    let mut clients = Vec::new();
    let mut failed = 0;
    for _ in 0..100 {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(s) => clients.push(s),
            Err(_) => failed += 1,
        }
    }
    thread::sleep(Duration::from_millis(500));
    srv.assert_alive("with 100 clients under RLIMIT_NOFILE 64");
    let fds = open_fds(srv.pid);
    // More clients than fds: it cannot hold them all. Keep connecting during
    // the measurement, so pending connections keep arriving.
    let c0 = cpu_seconds(srv.pid);
    let t0 = Instant::now();
    let mut extra = Vec::new();
    while t0.elapsed() < Duration::from_secs(1) {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            extra.push(s);
        }
        thread::sleep(Duration::from_millis(50));
    }
    let cpu = cpu_seconds(srv.pid) - c0;
    let window = t0.elapsed();
    srv.assert_alive("while out of fds");
    eprintln!(
        "{}: {} clients connected ({failed} connects failed), {} more during the window; \
         server fds: {fds} of 64; cpu {cpu:.3} s over {window:?}",
        srv.name,
        clients.len(),
        extra.len()
    );
    assert!(
        fds >= 56,
        "the server holds only {fds} fds: it did not run into the limit of 64"
    );
    assert!(
        cpu < 0.5,
        "{} spins while out of fds: {cpu:.3} s CPU in {window:?}",
        srv.name
    );
    drop(clients);
    drop(extra);
    let took = served_within(addr, b"hello after EMFILE\n");
    eprintln!(
        "{}: served a new client {took:?} after the others left",
        srv.name
    );
    srv.assert_alive("after the clients left");
    srv.stop_cleanly().stdout
}

#[test]
fn callbacks_server_survives_resets() {
    resets_then_served(&demos().callbacks, &[]);
}

#[test]
fn callbacks_server_survives_fd_exhaustion() {
    let out = fd_exhaustion(&demos().callbacks, &[]);
    assert!(
        out.contains("too many open files"),
        "no EMFILE handling was logged:\n{}",
        tail(&out, 3000)
    );
}

// ---------------------------------------------------------------------------
// echo_server (one echo_server_start call)

#[test]
fn echo_server_byte_exact_and_sigint_stats() {
    let srv = Server::start(&demos().server, &[], None);
    let addr = srv.addr();
    let sizes = [1usize, 1000, 65_537, 1 << 20, 8 << 20];
    let handles: Vec<_> = sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            thread::spawn(move || {
                let data = Rng(i as u64 + 1).bytes(n);
                let back = echo_to_eof(addr, &data).unwrap();
                assert_same(&format!("client of {n} bytes"), &back, &data);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // The server closes each connection after its last echoed byte; give it a
    // moment to count the closes before asking for the summary.
    thread::sleep(Duration::from_millis(200));
    let log = srv.stdout_now();
    let s = srv.stop_cleanly();
    let total: u64 = sizes.iter().map(|&n| n as u64).sum();
    let st = stats_from(&s.stdout);
    eprintln!("echo_server stats: {st:?}");
    assert_eq!(st["accepted"], sizes.len() as u64, "accepted");
    assert_eq!(st["bytes_in"], total, "bytes_in");
    assert_eq!(st["bytes_out"], total, "bytes_out");
    assert_eq!(st["active"], 0, "active");
    for msg in [
        "server started successfully",
        "new connection",
        "received data",
        "client close",
    ] {
        assert!(
            log.contains(msg),
            "the log lacks '{msg}':\n{}",
            tail(&log, 3000)
        );
    }
    assert!(
        log.contains("open file limit"),
        "the RLIMIT_NOFILE line is missing"
    );
}

#[test]
fn echo_server_survives_resets() {
    resets_then_served(&demos().server, &["--quiet"]);
}

#[test]
fn echo_server_survives_fd_exhaustion() {
    // Backlog above 100, so every connect completes at once while the server is
    // out of fds and the pending ones wait in the kernel's queue.
    let out = fd_exhaustion(&demos().server, &["--quiet", "--backlog", "256"]);
    let st = stats_from(&out);
    eprintln!("echo_server stats: {st:?}");
    assert!(st["accept_errors"] > 0, "no accept errors counted: {st:?}");
}
