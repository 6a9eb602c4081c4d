//! Soak: 1000 concurrent clients doing random things against the echo
//! server for `SOAK_SECS` seconds (default 30): random sizes (log-uniform up to
//! 4 MiB per connection) in random pieces, pauses in reading (the server must
//! cap and pause), clean half-close, reset at the end or midway. Each closed
//! session is replaced by a new one, so about 1000 are open at any time.
//!
//! Checked: every clean session got back exactly what it sent, in order, then
//! EOF; the server's counters add up (`accepted == closed`, `bytes_out <=
//! bytes_in`, and what went missing is at most what reset sessions sent); at
//! the end no fd leaked (`/proc/self/fd`), memory is back near its baseline
//! (VmRSS after `malloc_trim`), and the idle server uses no CPU.
//!
//! The clients are 8 threads, each driving 125 non-blocking sockets with
//! `poll(2)` (not this library, so a library bug cannot hide on both sides).
//! Expected bytes come from one random pattern, so checking is a compare.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use support::echo::{Server, storm_config};
use support::fd::{count_fds, fds_settle, raise_nofile};
use support::net::{connect, set_linger_zero};
use support::process::{cpu_time, own_rss_kib, serial};
use support::rng::Rng;

const CLIENTS: usize = 1000;
const THREADS: usize = 8;
const PATTERN: usize = 1 << 20;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    /// Half-close when all is sent, read the echo to EOF.
    Clean,
    /// Reset (`SO_LINGER 0`) once all is sent, without reading the rest.
    Reset,
    /// Reset after sending `at` bytes.
    ResetMidway(u64),
}

struct Session {
    s: TcpStream,
    start: usize,
    total: u64,
    sent: u64,
    recvd: u64,
    end: End,
    shut: bool,
    paused_until: Option<Instant>,
    max_chunk: usize,
}

#[derive(Default, Debug, Clone, Copy)]
struct Tally {
    sessions: u64,
    clean: u64,
    resets: u64,
    clean_bytes: u64,
    reset_sent: u64,
    pauses: u64,
    failures: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.sessions += o.sessions;
        self.clean += o.clean;
        self.resets += o.resets;
        self.clean_bytes += o.clean_bytes;
        self.reset_sent += o.reset_sent;
        self.pauses += o.pauses;
        self.failures += o.failures;
    }
}

fn new_session(port: u16, rng: &mut Rng) -> Session {
    let s = connect(port);
    s.set_nonblocking(true).unwrap();
    let total = if rng.below(8) == 0 {
        0
    } else {
        1u64 << rng.below(23)
    } + rng.below(1000);
    let end = match rng.below(20) {
        0..=13 => End::Clean,
        14..=16 => End::Reset,
        _ => End::ResetMidway(rng.below(total + 1)),
    };
    Session {
        s,
        start: rng.below(PATTERN as u64) as usize,
        total,
        sent: 0,
        recvd: 0,
        end,
        shut: false,
        paused_until: None,
        max_chunk: 1 + rng.below(64 * 1024) as usize,
    }
}

/// `len` bytes of the session's stream from `off`, in at most two slices of the pattern.
fn stream_at(pattern: &[u8], start: usize, off: u64, len: usize) -> &[u8] {
    let p = (start + (off % PATTERN as u64) as usize) % PATTERN;
    &pattern[p..(p + len).min(PATTERN)]
}

enum Outcome {
    Open,
    Clean,
    Reset,
    Failed(String),
}

/// One step for a session the poll said is ready (`readable`/`writable`).
fn step(
    sess: &mut Session,
    pattern: &[u8],
    buf: &mut [u8],
    readable: bool,
    writable: bool,
) -> Outcome {
    if writable && !sess.shut && sess.sent < sess.total {
        let limit = match sess.end {
            End::ResetMidway(at) => at,
            _ => sess.total,
        };
        let want = ((limit.max(sess.sent) - sess.sent) as usize).min(sess.max_chunk);
        if want > 0 {
            let data = stream_at(pattern, sess.start, sess.sent, want);
            match sess.s.write(data) {
                Ok(n) => sess.sent += n as u64,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Outcome::Failed(format!("write: {e}")),
            }
        }
    }
    match sess.end {
        End::ResetMidway(at) if sess.sent >= at => {
            set_linger_zero(&sess.s);
            return Outcome::Reset;
        }
        End::Reset if sess.sent >= sess.total => {
            set_linger_zero(&sess.s);
            return Outcome::Reset;
        }
        End::Clean if sess.sent >= sess.total && !sess.shut => {
            if let Err(e) = sess.s.shutdown(Shutdown::Write) {
                return Outcome::Failed(format!("shutdown: {e}"));
            }
            sess.shut = true;
        }
        _ => {}
    }
    if readable {
        for _ in 0..4 {
            match sess.s.read(buf) {
                Ok(0) => {
                    if sess.end == End::Clean && sess.shut && sess.recvd == sess.total {
                        return Outcome::Clean;
                    }
                    return Outcome::Failed(format!(
                        "EOF after {} of {} bytes ({:?}, shut {})",
                        sess.recvd, sess.total, sess.end, sess.shut
                    ));
                }
                Ok(n) => {
                    let mut off = 0;
                    while off < n {
                        let want = stream_at(pattern, sess.start, sess.recvd, n - off);
                        if buf[off..off + want.len()] != *want {
                            return Outcome::Failed(format!(
                                "echo differs near byte {}",
                                sess.recvd
                            ));
                        }
                        off += want.len();
                        sess.recvd += want.len() as u64;
                    }
                    if sess.recvd > sess.sent {
                        return Outcome::Failed("more bytes back than sent".into());
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    return Outcome::Failed(format!(
                        "read: {e} after {} of {}",
                        sess.recvd, sess.total
                    ));
                }
            }
        }
    }
    Outcome::Open
}

/// One client thread: keeps `n` sessions going until `until`, then lets the
/// open ones finish (bounded by `drain`).
fn client_thread(
    port: u16,
    n: usize,
    seed: u64,
    pattern: Arc<Vec<u8>>,
    until: Instant,
    drain: Instant,
) -> Tally {
    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let mut sessions: Vec<Option<Session>> =
        (0..n).map(|_| Some(new_session(port, &mut rng))).collect();
    tally.sessions += n as u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(n);
    loop {
        let now = Instant::now();
        if now > drain {
            let open = sessions.iter().flatten().count();
            tally.failures += open as u64;
            eprintln!("soak: {open} sessions did not finish in time");
            for sess in sessions.iter().flatten() {
                let local = sess.s.local_addr().map(|a| a.port()).unwrap_or(0);
                eprintln!(
                    "soak: stuck session: local port {local}, {:?}, total {}, sent {}, \
                     received {}, shut {}",
                    sess.end, sess.total, sess.sent, sess.recvd, sess.shut
                );
                if let Ok(o) = std::process::Command::new("ss")
                    .args([
                        "-tnie",
                        "state",
                        "all",
                        &format!("( sport = :{local} or dport = :{local} )"),
                    ])
                    .output()
                {
                    eprintln!("{}", String::from_utf8_lossy(&o.stdout));
                }
            }
            break;
        }
        fds.clear();
        let mut idx = Vec::with_capacity(n);
        for (i, s) in sessions.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            let mut ev = 0;
            let paused = s.paused_until.is_some_and(|t| t > now);
            if !paused {
                s.paused_until = None;
                ev |= libc::POLLIN;
            }
            if !s.shut {
                // Data to send, or the end of the script to act on (a
                // session of 0 bytes half-closes or resets at once).
                ev |= libc::POLLOUT;
            }
            fds.push(libc::pollfd {
                fd: s.s.as_raw_fd(),
                events: ev,
                revents: 0,
            });
            idx.push(i);
        }
        if fds.is_empty() {
            break;
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd entries.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 10) };
        assert!(rc >= 0, "poll: {}", std::io::Error::last_os_error());
        for (k, pfd) in fds.iter().enumerate() {
            let i = idx[k];
            let sess = sessions[i].as_mut().unwrap();
            let r = pfd.revents;
            let readable = r & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
            let writable = r & libc::POLLOUT != 0;
            if !readable && !writable {
                continue;
            }
            let outcome = step(sess, &pattern, &mut buf, readable, writable);
            if matches!(outcome, Outcome::Open) {
                if sess.paused_until.is_none() && rng.below(200) == 0 {
                    sess.paused_until =
                        Some(Instant::now() + Duration::from_millis(rng.below(400)));
                    tally.pauses += 1;
                }
                continue;
            }
            match outcome {
                Outcome::Clean => {
                    tally.clean += 1;
                    tally.clean_bytes += sess.total;
                }
                Outcome::Reset => {
                    tally.resets += 1;
                    tally.reset_sent += sess.sent;
                }
                Outcome::Failed(why) => {
                    tally.failures += 1;
                    eprintln!("soak: session failed: {why}");
                }
                Outcome::Open => unreachable!(),
            }
            sessions[i] = None;
            if Instant::now() < until {
                sessions[i] = Some(new_session(port, &mut rng));
                tally.sessions += 1;
            }
        }
    }
    tally
}

fn malloc_trim() {
    // SAFETY: malloc_trim only returns free heap memory to the kernel.
    unsafe { libc::malloc_trim(0) };
}

#[test]
fn a_thousand_random_clients() {
    let _g = serial();
    raise_nofile(8192);
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let seed = support::rng::seed("HARDENING_SEED");
    let mut rng = Rng::new(seed);
    let pattern = Arc::new(rng.bytes(PATTERN));
    let fds0 = count_fds();
    let mut cfg = storm_config(2, 0);
    cfg.max_pending_bytes = 64 * 1024;
    let srv = Server::start(&cfg);
    let port = srv.port;
    // Warm up the allocator's arenas the way the run will, then take the baseline.
    still_echoes_big(port);
    malloc_trim();
    let rss0 = own_rss_kib();

    let t0 = Instant::now();
    let until = t0 + Duration::from_secs(secs);
    let drain = until + Duration::from_secs(60);
    let hs: Vec<_> = (0..THREADS)
        .map(|t| {
            let pattern = pattern.clone();
            let seed = seed ^ ((t as u64 + 1) << 40);
            thread::spawn(move || {
                client_thread(port, CLIENTS / THREADS, seed, pattern, until, drain)
            })
        })
        .collect();
    // Meanwhile: the server's open connections stay near the client count.
    let mut peak_active = 0;
    while hs.iter().any(|h| !h.is_finished()) {
        peak_active = peak_active.max(srv.stats().active);
        thread::sleep(Duration::from_millis(100));
    }
    let mut tally = Tally::default();
    for h in hs {
        tally.add(&h.join().expect("client thread"));
    }
    let ran = t0.elapsed();
    let st = srv.wait(Duration::from_secs(10), "every connection closed", |st| {
        st.active == 0 && st.accepted == tally.sessions + 1
    });

    // The server still serves, and idles without spinning.
    still_echoes_big(port);
    let c0 = cpu_time();
    thread::sleep(Duration::from_millis(500));
    let idle_cpu = cpu_time() - c0;
    malloc_trim();
    let rss1 = own_rss_kib();
    let stop_took = srv.stop_timed();
    let fds = fds_settle(fds0);

    let mb = |b: u64| b as f64 / (1 << 20) as f64;
    println!(
        "soak {secs} s (ran {ran:.1?}): {} sessions, {} clean ({:.1} MiB echoed byte-exact), \
         {} reset (had sent {:.1} MiB), {} reading pauses, {} failures; peak {peak_active} \
         open on the server; server in {:.1} MiB, out {:.1} MiB, accepted {}, closed {}; \
         idle CPU {idle_cpu:?}/500 ms; VmRSS {rss0} KiB -> {rss1} KiB; stop {stop_took:?}; \
         fds {fds0} -> {fds}",
        tally.sessions,
        tally.clean,
        mb(tally.clean_bytes),
        tally.resets,
        mb(tally.reset_sent),
        tally.pauses,
        tally.failures,
        mb(st.bytes_in),
        mb(st.bytes_out),
        st.accepted,
        st.closed,
    );
    assert_eq!(tally.failures, 0, "sessions failed (see stderr)");
    assert!(tally.clean > 0 && tally.resets > 0);
    assert!(
        peak_active as usize >= CLIENTS * 9 / 10,
        "only {peak_active} open at the peak"
    );
    assert_eq!(st.accepted, st.closed);
    // Clean sessions were echoed whole; reset ones can only have lost bytes.
    assert!(st.bytes_out <= st.bytes_in);
    assert!(st.bytes_out >= tally.clean_bytes);
    assert!(st.bytes_in <= tally.clean_bytes + tally.reset_sent + 2 * 256 * 1024);
    assert!(
        st.bytes_in - st.bytes_out <= tally.reset_sent,
        "lost more than reset sessions sent"
    );
    assert!(
        idle_cpu < Duration::from_millis(100),
        "idle server used {idle_cpu:?} in 500 ms"
    );
    assert!(rss1 <= rss0 + 32 * 1024, "VmRSS {rss0} KiB -> {rss1} KiB");
    assert_eq!(fds, fds0, "fds leaked");
}

/// A 256 KiB round trip (also warms up the allocator before the baseline).
fn still_echoes_big(port: u16) {
    let mut s = connect(port);
    let data: Vec<u8> = (0..256 * 1024u32).map(|i| (i * 31) as u8).collect();
    let mut r = s.try_clone().unwrap();
    let n = data.len();
    let reader = thread::spawn(move || {
        let mut back = vec![0u8; n];
        r.read_exact(&mut back).map(|()| back)
    });
    s.write_all(&data).unwrap();
    let back = reader.join().unwrap().expect("echo");
    assert!(back == data);
}
