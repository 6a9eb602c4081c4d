//! The C demos under valgrind memcheck: both servers (`echo_server`,
//! `echo_server_callbacks`) and the client (`echo_client`), built without
//! sanitizers against the shared library, driven by real clients and stopped
//! with SIGINT. Each must exit 0 with no memcheck error and nothing definitely
//! lost (`--error-exitcode=99`, definite leaks counted as errors).
//! `tests/demos.rs` runs the same demos under ASan and UBSan.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::c::{Link, compile_c, valgrind_cmd, valgrind_or_skip};
use support::net::{echo_to_eof, set_linger_zero};
use support::process::{Running, output_with_input};
use support::{out_dir, root};

fn build(name: &str) -> PathBuf {
    let dir = out_dir("valgrind-demos");
    let src = root().join("c-examples").join(format!("{name}.c"));
    let exe = dir.join(format!("{name}.{}", std::process::id()));
    compile_c(&[&src], &exe, Link::Shared, false, &[]);
    exe
}

fn echo(port: u16, data: &[u8]) {
    let back = echo_to_eof(SocketAddr::from(([127, 0, 0, 1], port)), data).expect("echo");
    assert!(
        back == data,
        "echo differs ({} of {} bytes)",
        back.len(),
        data.len()
    );
}

/// Runs `server` under valgrind, serves clients (Rust ones and, under valgrind
/// too, the client demo), stops it with SIGINT and checks both exits.
fn run_server(server: &str, client: &Path) {
    if !valgrind_or_skip("the valgrind demo runs") {
        return;
    }
    let exe = build(server);
    let mut demo = Running::spawn(
        server,
        valgrind_cmd(&exe)
            .args(["--port", "0"])
            .stdin(Stdio::null()),
    );
    let port = demo.wait_for_port(Duration::from_secs(60));
    let t0 = Instant::now();
    // Rust clients: a big echo with half-close, a few small ones, one reset.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 13 + i / 7) as u8).collect();
    echo(port, &big);
    for i in 0..5u8 {
        echo(port, &[b'a' + i; 100]);
    }
    {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(b"bye").unwrap();
        set_linger_zero(&s);
    }
    // The client demo, under valgrind as well, fed from a pipe.
    let line = "x".repeat(5000);
    let co = output_with_input(
        valgrind_cmd(client).args(["--host", "127.0.0.1", "--port", &port.to_string()]),
        format!("hello\n{line}\nworld\n").into_bytes(),
        Duration::from_secs(120),
    );
    let cout = String::from_utf8_lossy(&co.stdout);
    assert!(
        co.status.success(),
        "echo_client under valgrind: {}\n{cout}\n{}",
        co.status,
        String::from_utf8_lossy(&co.stderr)
    );
    assert!(cout.contains("hello") && cout.contains("world") && cout.contains(&line));

    demo.signal(libc::SIGINT);
    let o = demo.wait(Duration::from_secs(60));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.success(),
        "{server} under valgrind: {} (99: memcheck errors or definite leaks)\n{e}",
        o.status
    );
    println!(
        "{server} and echo_client under valgrind memcheck: 0 errors, 0 bytes definitely lost ({:?})",
        t0.elapsed()
    );
    let _ = std::fs::remove_file(&exe);
}

#[test]
fn demos_run_clean_under_valgrind() {
    let client = build("echo_client");
    run_server("echo_server", &client);
    run_server("echo_server_callbacks", &client);
    let _ = std::fs::remove_file(&client);
}
