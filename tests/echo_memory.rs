//! The echo server's own memory per idle connection stays well under 1 KiB.
//!
//! Measured on the `echo_server` demo (a C host process, built without
//! sanitizers, which would inflate memory): VmRSS growth over N idle
//! connections, divided by N. Socket buffers live in the kernel and do not count.

mod support;

use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};
use support::c::{Link, compile_c};
use support::fd::raise_nofile;
use support::net::echo_once;
use support::process::{Running, rss_kib};
use support::{out_dir, root};

fn echo(s: &mut TcpStream, msg: &[u8]) {
    echo_once(s, msg).expect("echo");
}

#[test]
fn idle_connection_costs_well_under_1_kib() {
    let limit = raise_nofile(u64::MAX);
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
    let mut demo = Running::spawn(
        "echo_server",
        Command::new(&exe).args(["--port", "0", "--quiet", "--backlog", "4096"]),
    );
    let pid = demo.pid;
    let port = demo.wait_for_port(Duration::from_secs(30));
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
    demo.signal(libc::SIGINT);
    let st = demo.wait(Duration::from_secs(10)).status;
    assert!(
        st.success() || result.is_err(),
        "echo_server demo exited with {st}"
    );
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
