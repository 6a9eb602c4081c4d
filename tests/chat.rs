//! The chat_server demo (`c-examples/chat_server.c`), a program written from
//! the README and the header alone, driven end to end under ASan + UBSan (+
//! LeakSanitizer where it works): lines go to every other client; a client
//! that stops reading is dropped once its write queue is full while the others
//! keep being served; SIGINT closes everyone gracefully and the server exits 0
//! within the close timeout even with a peer that never reads.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::c::{Link, assert_sanitizer_clean, compile_c, sanitizer_env};
use support::process::Running;
use support::{out_dir, root};

fn connect(port: u16) -> (TcpStream, BufReader<TcpStream>) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let r = BufReader::new(s.try_clone().unwrap());
    (s, r)
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

#[test]
fn chat_server_broadcasts_drops_a_slow_reader_and_shuts_down_in_bounded_time() {
    let exe = out_dir("chat").join(format!("chat_server.{}", std::process::id()));
    compile_c(
        &[&root().join("c-examples").join("chat_server.c")],
        &exe,
        Link::Shared,
        true,
        &[],
    );
    let mut cmd = Command::new(&exe);
    cmd.args(["--port", "0", "--max-queue", "65536"])
        .stdin(Stdio::null());
    sanitizer_env(&mut cmd);
    let mut server = Running::spawn("chat_server", &mut cmd);
    let port = server.wait_for_port(Duration::from_secs(30));

    let (mut a, mut ar) = connect(port);
    assert_eq!(line(&mut ar), "welcome, you are 1; 1 here\n");
    let (_b, mut br) = connect(port);
    assert_eq!(line(&mut br), "welcome, you are 2; 2 here\n");
    let (slow, mut sr) = connect(port);
    assert_eq!(line(&mut sr), "welcome, you are 3; 3 here\n");

    a.write_all(b"hello\n").unwrap();
    assert_eq!(line(&mut br), "1 hello\n");
    assert_eq!(line(&mut sr), "1 hello\n");

    // The slow client stops reading; A talks 40 MB. B reads it all, line by
    // line and in order, so one slow reader neither blocks nor reorders the room.
    let text: String = "x".repeat(3999);
    let writer = {
        let mut a = a.try_clone().unwrap();
        let msg = format!("{text}\n");
        std::thread::spawn(move || {
            for _ in 0..10_000 {
                a.write_all(msg.as_bytes()).unwrap();
            }
        })
    };
    for i in 0..10_000 {
        let l = line(&mut br);
        assert!(
            l.len() == 4002 && l.starts_with("1 x"),
            "line {i}: {} bytes",
            l.len()
        );
    }
    writer.join().unwrap();
    server.wait_for_stdout(Duration::from_secs(10), "the slow reader dropped", |out| {
        out.contains("client 3 dropped: too slow").then_some(())
    });
    // What reached the slow client is a prefix of whole lines, then a reset.
    let mut got = Vec::new();
    let mut s = slow;
    let _ = s.read_to_end(&mut got);
    assert!(got.len() < 40_000_000, "it was dropped, not served");

    // B still chats; A goes quiet and never reads: SIGINT must still end the
    // server within the close timeout (2 s) plus slack, exit 0.
    let (mut b2, mut b2r) = connect(port);
    assert!(line(&mut b2r).starts_with("welcome, you are 4;"));
    b2.write_all(b"bye\n").unwrap();
    assert_eq!(line(&mut br), "4 bye\n");
    let t0 = Instant::now();
    server.signal(libc::SIGINT);
    assert_eq!(line(&mut br), "server shutting down\n");
    let o = server.wait(Duration::from_secs(20));
    let took = t0.elapsed();
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "exit {}:\n{out}\n{err}", o.status);
    assert!(took < Duration::from_secs(10), "shutdown took {took:?}");
    assert!(
        out.contains("stopped: 1 dropped for reading too slowly"),
        "{out}"
    );
    assert_sanitizer_clean("chat_server", &err);
    drop(a);
}
