//! The C demos under valgrind memcheck: both servers (`echo_server`,
//! `echo_server_callbacks`) and the client (`echo_client`), built without
//! sanitizers against the shared library, driven by real clients and stopped
//! with SIGINT. Each must exit 0 with no memcheck error and nothing definitely
//! lost (`--error-exitcode=99`, definite leaks counted as errors).
//! `tests/demos.rs` runs the same demos under ASan and UBSan.

mod common;

use common::{Link, compile_c, note, out_dir, root};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

fn build(name: &str) -> PathBuf {
    let dir = out_dir("valgrind-demos");
    let src = root().join("c-examples").join(format!("{name}.c"));
    let exe = dir.join(format!("{name}.{}", std::process::id()));
    compile_c(&[&src], &exe, Link::Shared, false, &[]);
    exe
}

fn valgrind() -> Option<Command> {
    if !common::have_valgrind() {
        assert!(
            std::env::var_os("CI").is_none(),
            "valgrind is not installed, but CI must run the valgrind checks (.ci/run installs it)"
        );
        note("skipped the valgrind demo runs: valgrind not installed");
        return None;
    }
    let mut c = Command::new("valgrind");
    c.args([
        "--quiet",
        "--error-exitcode=99",
        "--leak-check=full",
        "--errors-for-leak-kinds=definite",
        "--show-leak-kinds=definite",
    ]);
    Some(c)
}

/// Collects a pipe into a shared buffer on a thread.
fn collect(mut r: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let b = buf.clone();
    let h = thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = r.read(&mut chunk) {
            if n == 0 {
                break;
            }
            b.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, h)
}

fn text(b: &Arc<Mutex<Vec<u8>>>) -> String {
    String::from_utf8_lossy(&b.lock().unwrap()).into_owned()
}

fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() > end {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn echo(port: u16, data: &[u8]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = s.try_clone().unwrap();
    let d = data.to_vec();
    let writer = thread::spawn(move || {
        w.write_all(&d).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut back = Vec::new();
    s.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(
        back == data,
        "echo differs ({} of {} bytes)",
        back.len(),
        data.len()
    );
}

/// Runs `server` under valgrind, serves clients (Rust ones and, under valgrind
/// too, the client demo), stops it with SIGINT and checks both exits.
fn run_server(server: &str, client: &PathBuf) {
    let Some(mut cmd) = valgrind() else { return };
    let exe = build(server);
    let mut child = cmd
        .arg(&exe)
        .args(["--port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn valgrind");
    let (out, h1) = collect(child.stdout.take().unwrap());
    let (err, h2) = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let port = loop {
        let o = text(&out);
        if let Some(p) = o
            .lines()
            .find(|l| l.contains("listening on "))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse::<u16>().ok())
        {
            break p;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!(
                "{server} exited ({st}) before listening:\n{o}\n{}",
                text(&err)
            );
        }
        assert!(
            Instant::now() < deadline,
            "{server}: no 'listening on' line:\n{o}"
        );
        thread::sleep(Duration::from_millis(20));
    };
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
        let l = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: a live socket and a linger struct of the size given.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&l as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            )
        };
    }
    // The client demo, under valgrind as well, fed from a pipe.
    let mut vc = valgrind().unwrap();
    let mut c = vc
        .arg(client)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the client under valgrind");
    let line = "x".repeat(5000);
    c.stdin
        .take()
        .unwrap()
        .write_all(format!("hello\n{line}\nworld\n").as_bytes())
        .unwrap();
    let co = c.wait_with_output().expect("client");
    let cout = String::from_utf8_lossy(&co.stdout);
    assert!(
        co.status.success(),
        "echo_client under valgrind: {}\n{cout}\n{}",
        co.status,
        String::from_utf8_lossy(&co.stderr)
    );
    assert!(cout.contains("hello") && cout.contains("world") && cout.contains(&line));

    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) },
        0
    );
    let st = wait(&mut child, Duration::from_secs(60)).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("{server} did not exit after SIGINT")
    });
    h1.join().unwrap();
    h2.join().unwrap();
    let e = text(&err);
    assert!(
        st.success(),
        "{server} under valgrind: {st} (99: memcheck errors or definite leaks)\n{e}"
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
