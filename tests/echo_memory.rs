//! The echo server's own memory per idle connection stays well under 1 KiB.
//!
//! Measured on the `echo_server` demo (a C host process, built without
//! sanitizers, which would inflate memory): VmRSS growth over N idle
//! connections, divided by N. Socket buffers live in the kernel and do not count.

mod common;

use common::{Link, compile_c, out_dir, root};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: raising the soft limit to the hard limit is always allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    lim.rlim_cur
}

fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

#[test]
fn idle_connection_costs_well_under_1_kib() {
    let limit = raise_nofile();
    let n: usize = if limit >= 4200 {
        4000
    } else {
        (limit as usize).saturating_sub(200)
    };
    assert!(
        n >= 500,
        "RLIMIT_NOFILE hard limit {limit} is too low for this test"
    );
    let dir = out_dir("echo-memory");
    let exe = dir.join("echo_server");
    compile_c(
        &[&root().join("c-examples/echo_server.c")],
        &exe,
        Link::Shared,
        false,
        &["-O2"],
    );
    let mut child = Command::new(&exe)
        .args(["--port", "0", "--quiet", "--backlog", "4096"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = loop {
        let line = lines.next().expect("demo exited before listening").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.rsplit(':').next().unwrap().trim().parse().unwrap();
        }
    };
    let result = std::panic::catch_unwind(|| {
        // Warm up: the first connections allocate the read buffer and grow tables.
        for _ in 0..200 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            echo(&mut s, b"warm");
        }
        std::thread::sleep(Duration::from_millis(200));
        let before = rss_kib(pid);
        let mut conns = Vec::with_capacity(n);
        for i in 0..n {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            if i % 500 == 0 {
                echo(&mut s, b"x");
            }
            conns.push(s);
        }
        // Every connection accepted: the last one echoes.
        echo(conns.last_mut().unwrap(), b"last");
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut after = rss_kib(pid);
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            after = after.max(rss_kib(pid));
        }
        let per_conn = after.saturating_sub(before) as f64 * 1024.0 / n as f64;
        println!(
            "{n} idle connections: RSS {before} KiB -> {after} KiB, {per_conn:.0} B per connection"
        );
        assert!(
            per_conn < 1024.0,
            "{per_conn:.0} B of server memory per idle connection"
        );
        // An active client is still served beside them (a bound for a stall,
        // not for speed: the echo takes about a millisecond).
        let mut active = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let t = Instant::now();
        echo(&mut active, &[7u8; 1024]);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "an echo beside the idle connections took {:?}",
            t.elapsed()
        );
        drop(conns);
    });
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(
                st.success() || result.is_err(),
                "echo_server demo exited with {st}"
            );
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("echo_server demo did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
