//! Bad input from the network never crashes or wedges the echo server:
//! garbage, zero-length writes, connect-and-close storms (FIN and RST),
//! slowloris (many idle connections) with `idle_timeout_ms`, clients that
//! vanish mid-transfer. After each: the server still echoes, its counters add
//! up, it does not spin (CPU measured while idle), and once stopped it has
//! left no fd behind (`/proc/self/fd`). Through the C ABI (`echo_server_*`).
//! Run with `--nocapture` for the numbers; `HARDENING_SEED` replays a run.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};
use support::echo::{Server, storm_config};
use support::fd::{count_fds, fds_settle, raise_nofile};
use support::net::{connect, echo_once, set_linger_zero, try_connect};
use support::process::{cpu_time, serial};
use support::rng::Rng;

/// Checks that a server is alive and echoing.
fn still_echoes(port: u16) {
    let mut s = connect(port);
    echo_once(&mut s, b"still alive?\0\xff").expect("the server still echoes");
}

/// CPU time the process uses over `d` while nothing happens.
fn idle_cpu(d: Duration) -> Duration {
    let c0 = cpu_time();
    thread::sleep(d);
    cpu_time() - c0
}

#[test]
fn garbage_and_zero_length_writes_are_echoed_byte_exact() {
    let _g = serial();
    let fds0 = count_fds();
    let seed = support::rng::seed("HARDENING_SEED");
    let srv = Server::start(&storm_config(2, 0));
    let port = srv.port;
    let clients: Vec<_> = (0..16u64)
        .map(|c| {
            thread::spawn(move || {
                let mut rng = Rng::new(seed ^ c);
                let mut s = connect(port);
                let mut r = s.try_clone().unwrap();
                // Every byte value, NULs, CR/LF floods, telnet IAC, huge and
                // empty writes, in random order.
                let mut sent = Vec::new();
                let mut pieces: Vec<Vec<u8>> = vec![
                    (0..=255u8).collect(),
                    vec![0; 70_000],
                    b"\r\n".repeat(5000),
                    vec![0xff, 0xf4, 0xff, 0xfd, 0x06],
                    vec![],
                ];
                for _ in 0..40 {
                    let n = rng.below(20_000) as usize;
                    pieces.push(if rng.below(4) == 0 {
                        Vec::new()
                    } else {
                        rng.bytes(n)
                    });
                }
                for p in &pieces {
                    sent.extend_from_slice(p);
                }
                let total = sent.len();
                let reader = thread::spawn(move || {
                    let mut back = vec![0u8; total];
                    r.read_exact(&mut back).map(|()| back)
                });
                let mut zero_writes = 0;
                for p in &pieces {
                    if p.is_empty() {
                        // A zero-length send: nothing goes on the wire.
                        assert_eq!(s.write(p).unwrap(), 0);
                        zero_writes += 1;
                    } else {
                        s.write_all(p).unwrap();
                    }
                }
                let back = reader.join().unwrap().expect("read the echo");
                assert!(back == sent, "client {c}: echo differs");
                s.shutdown(Shutdown::Write).unwrap();
                let mut rest = Vec::new();
                s.read_to_end(&mut rest).unwrap();
                assert!(rest.is_empty(), "nothing after the echo but EOF");
                (total, zero_writes)
            })
        })
        .collect();
    let (mut bytes, mut zeros) = (0, 0);
    for c in clients {
        let (b, z) = c.join().expect("client");
        bytes += b;
        zeros += z;
    }
    let st = srv.wait(Duration::from_secs(10), "all closed", |st| st.active == 0);
    assert_eq!(st.bytes_in, bytes as u64);
    assert_eq!(st.bytes_out, bytes as u64);
    still_echoes(port);
    let cpu = idle_cpu(Duration::from_millis(500));
    srv.stop_timed();
    let fds = fds_settle(fds0);
    println!(
        "garbage: 16 clients, {bytes} B (every byte value, NUL and CRLF floods, IAC), \
         {zeros} zero-length writes: byte-exact; idle CPU {cpu:?}/500 ms; fds {fds0} -> {fds}"
    );
    assert!(
        cpu < Duration::from_millis(100),
        "idle server used {cpu:?} of CPU in 500 ms"
    );
    assert_eq!(fds, fds0, "fds leaked");
}

#[test]
fn connect_and_close_storms_neither_crash_nor_wedge_nor_leak() {
    let _g = serial();
    let fds0 = count_fds();
    let seed = support::rng::seed("HARDENING_SEED");
    let srv = Server::start(&storm_config(2, 0));
    let port = srv.port;
    // An active client keeps echoing during the storm; its worst round trip is kept.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let active = thread::spawn(move || {
        let mut s = connect(port);
        let (mut n, mut worst) = (0u32, Duration::ZERO);
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            echo_once(&mut s, b"ping").expect("active client served during the storm");
            worst = worst.max(t.elapsed());
            n += 1;
        }
        (n, worst)
    });
    let per_thread = 500;
    let stormers: Vec<_> = (0..4u64)
        .map(|t| {
            thread::spawn(move || {
                let mut rng = Rng::new(seed ^ (t << 32));
                let mut kinds = [0u32; 4];
                for _ in 0..per_thread {
                    let s = match try_connect(port) {
                        Ok(s) => s,
                        Err(e) => panic!("connect during the storm: {e}"),
                    };
                    let k = rng.below(4) as usize;
                    kinds[k] += 1;
                    match k {
                        // Connect and close at once (FIN).
                        0 => drop(s),
                        // Connect and reset (RST).
                        1 => {
                            set_linger_zero(&s);
                            drop(s);
                        }
                        // Send a little, then reset without reading.
                        2 => {
                            let mut s = s;
                            let len = 1 + rng.below(100_000) as usize;
                            let _ = s.write_all(&rng.bytes(len));
                            set_linger_zero(&s);
                            drop(s);
                        }
                        // Half-close at once, read the (empty) echo and EOF.
                        _ => {
                            let mut s = s;
                            let _ = s.write_all(b"x");
                            s.shutdown(Shutdown::Write).unwrap();
                            let mut v = Vec::new();
                            match s.read_to_end(&mut v) {
                                Ok(_) => assert_eq!(v, b"x"),
                                Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset),
                            }
                        }
                    }
                }
                kinds
            })
        })
        .collect();
    let mut kinds = [0u32; 4];
    for h in stormers {
        for (k, n) in h.join().expect("storm thread").iter().enumerate() {
            kinds[k] += n;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (pings, worst) = active.join().expect("active client");
    let total = 4 * per_thread as u64 + 1;
    let st = srv.wait(
        Duration::from_secs(10),
        "every storm connection closed",
        |st| st.accepted >= total && st.active == 0,
    );
    assert_eq!(st.accepted, st.closed, "{st:?}");
    still_echoes(port);
    let cpu = idle_cpu(Duration::from_millis(500));
    let stop_took = srv.stop_timed();
    let fds = fds_settle(fds0);
    println!(
        "storm: {} connections (FIN {}, RST {}, data+RST {}, half-close {}); active client \
         {pings} round trips, worst {worst:?}; stats {st:?}; idle CPU {cpu:?}/500 ms; \
         stop {stop_took:?}; fds {fds0} -> {fds}",
        total - 1,
        kinds[0],
        kinds[1],
        kinds[2],
        kinds[3]
    );
    assert!(pings > 0);
    // Milliseconds normally; 5 s is for a loaded machine beside the storm.
    assert!(
        worst < Duration::from_secs(5),
        "the active client waited {worst:?}"
    );
    assert!(
        cpu < Duration::from_millis(100),
        "idle server used {cpu:?} of CPU in 500 ms"
    );
    assert_eq!(fds, fds0, "fds leaked");
}

#[test]
fn slowloris_connections_are_closed_by_the_idle_timeout() {
    let _g = serial();
    raise_nofile(8192);
    let fds0 = count_fds();
    let idle_ms = 400;
    let srv = Server::start(&storm_config(1, idle_ms));
    let port = srv.port;
    let n = 1000;
    // Idle connections: half send nothing, half send a partial "request" and stop.
    let t0 = Instant::now();
    let mut idle: Vec<TcpStream> = (0..n)
        .map(|i| {
            let mut s = connect(port);
            if i % 2 == 1 {
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            }
            s
        })
        .collect();
    let opened = t0.elapsed();
    // Meanwhile an active client (one round trip per 50 ms) is never closed.
    let active = thread::spawn(move || {
        let mut s = connect(port);
        let end = Instant::now() + Duration::from_millis(3 * idle_ms as u64);
        let mut n = 0;
        while Instant::now() < end {
            echo_once(&mut s, b"keep me").expect("the active client stays open");
            n += 1;
            thread::sleep(Duration::from_millis(50));
        }
        n
    });
    // Idle ones see their echo (if any) then EOF, well within timeout + sweep.
    let cpu0 = cpu_time();
    let st = srv.wait(Duration::from_secs(10), "idle timeouts", |st| {
        st.idle_timeouts >= n as u64
    });
    let closed_after = t0.elapsed();
    let cpu = cpu_time() - cpu0;
    for (i, s) in idle.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut v = Vec::new();
        match s.read_to_end(&mut v) {
            Ok(_) => {}
            Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "idle {i}: {e}"),
        }
        if i % 2 == 1 {
            assert!(v.is_empty() || v == b"GET / HTTP/1.1\r\nHost: x\r\n");
        }
    }
    let rounds = active.join().expect("active client");
    assert!(rounds >= 10, "active client made {rounds} round trips");
    drop(idle);
    still_echoes(port);
    let st2 = srv.wait(Duration::from_secs(5), "all closed", |st| st.active == 0);
    srv.stop_timed();
    let fds = fds_settle(fds0);
    println!(
        "slowloris: {n} idle connections opened in {opened:?}, all closed by the {idle_ms} ms \
         idle timeout after {closed_after:?} (idle_timeouts {}), CPU meanwhile {cpu:?}; the \
         active client made {rounds} round trips untouched; fds {fds0} -> {fds}; {st2:?}",
        st.idle_timeouts
    );
    assert_eq!(st2.idle_timeouts, n as u64, "only the idle ones timed out");
    // Counted from the last connection opened (opening 1000 takes a while on
    // a loaded machine): 10 x the idle timeout.
    assert!(
        closed_after < opened + Duration::from_millis(10 * idle_ms as u64),
        "closed {closed_after:?} after the first open, {opened:?} to open them all"
    );
    assert_eq!(fds, fds0, "fds leaked");
}

#[test]
fn clients_that_vanish_mid_transfer_are_cleaned_up() {
    let _g = serial();
    let fds0 = count_fds();
    let mut cfg = storm_config(1, 0);
    cfg.max_pending_bytes = 64 * 1024;
    let srv = Server::start(&cfg);
    let port = srv.port;
    // Each client pushes data without reading until the server stops reading
    // (its queue is at the cap), then disappears with RST or FIN.
    let hs: Vec<_> = (0..20)
        .map(|i| {
            thread::spawn(move || {
                let mut s = connect(port);
                s.set_write_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let chunk = vec![i as u8; 64 * 1024];
                let mut sent = 0usize;
                while sent < 64 << 20 {
                    match s.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(_) => break,
                    }
                }
                if i % 2 == 0 {
                    set_linger_zero(&s);
                }
                drop(s);
                sent
            })
        })
        .collect();
    let sent: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
    let st = srv.wait(Duration::from_secs(10), "all closed", |st| {
        st.active == 0 && st.accepted == 20
    });
    still_echoes(port);
    srv.stop_timed();
    let fds = fds_settle(fds0);
    println!(
        "vanishing: 20 clients pushed {sent} B without reading, then left (10 RST, 10 FIN); \
         server read {} B, wrote {} B; fds {fds0} -> {fds}",
        st.bytes_in, st.bytes_out
    );
    assert!(st.bytes_in <= sent as u64);
    assert_eq!(fds, fds0, "fds leaked");
}
