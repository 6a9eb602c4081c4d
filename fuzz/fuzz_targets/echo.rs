//! Fuzz target: a byte string decodes into a client script against an echo
//! server attached to a loop in this process (`echo_server_attach`), driven by
//! this thread between the clients' steps. Up to 4 non-blocking clients
//! connect, write pieces of any size (zero too), read or do not read (the
//! server must pause at its cap), half-close or reset. At the end every client
//! that was not reset half-closes and must get back exactly what it sent, in
//! order, then EOF; the server stops and the loop is freed with no fd left.
//!
//! The first byte also picks a fault plan for the server's syscalls on this
//! thread (`epoll-loop`'s `fault-injection` feature): none, `EINTR` on every
//! other interruptible call, `EAGAIN` storms, or reads/writes that move 1 to 7
//! bytes.

#![no_main]

use ::epoll_loop::ffi::*;
use ::epoll_loop::testing::Errno;
use ::epoll_loop::testing::fault::{self, Action, Op};
use libfuzzer_sys::fuzz_target;
use std::ffi::c_int;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const MAX_CLIENTS: usize = 4;
const MAX_OPS: usize = 128;
/// Connections per input (reset ones free a client slot; their connections
/// may still wait in the accept queue).
const MAX_CONNECTS: usize = 16;

struct Client {
    s: TcpStream,
    sent: Vec<u8>,
    got: usize,
    shut: bool,
    eof: bool,
}

fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn poll(lp: *mut epoll_loop, times: u32) {
    for _ in 0..times {
        // SAFETY: the live loop of this input, driven by this thread.
        let rc = unsafe { epoll_loop_poll(lp, 0) };
        assert!(rc >= 0, "poll: {rc}");
    }
}

/// Reads what is available; checks it against what was sent.
fn read_some(c: &mut Client, buf: &mut [u8]) {
    if c.eof {
        return;
    }
    loop {
        match c.s.read(buf) {
            Ok(0) => {
                assert!(
                    c.shut,
                    "the server closed a client that had not half-closed"
                );
                c.eof = true;
                return;
            }
            Ok(n) => {
                assert!(c.got + n <= c.sent.len(), "more bytes back than sent");
                assert!(
                    buf[..n] == c.sent[c.got..c.got + n],
                    "echo differs at byte {}",
                    c.got
                );
                c.got += n;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => panic!("client read: {e} (got {} of {})", c.got, c.sent.len()),
        }
    }
}

fn set_linger_zero(s: &TcpStream) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
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

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let fds0 = count_fds();
    let mode = data[0] % 4;
    let pending = [1024usize, 4096, 65536, 262_144][(data[1] % 4) as usize];
    // With 1-byte moves, big pieces take long: keep them small.
    let max_piece = if mode == 3 { 2048 } else { 65536 };
    let mut lp = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { epoll_loop_new(&mut lp) }, 0);
    // SAFETY: zero is valid for every field; config_init then fills it.
    let mut cfg: echo_server_config = unsafe { std::mem::zeroed() };
    // SAFETY: valid, writable config.
    unsafe { echo_server_config_init(&mut cfg) };
    cfg.port = 0;
    cfg.max_pending_bytes = pending;
    // SOMAXCONN: the harness connects without driving the loop, so a backlog
    // of 10 could fill with reset connections and a blocking connect would hang.
    cfg.backlog = 0;
    let mut srv = std::ptr::null_mut();
    // SAFETY: live loop; valid config and out-pointer.
    assert_eq!(unsafe { echo_server_attach(lp, &cfg, &mut srv) }, 0);
    // SAFETY: live server.
    let port = unsafe { echo_server_port(srv) } as u16;

    let plan = match mode {
        1 => Some(fault::install(fault::bursts(
            &Op::INTERRUPTIBLE,
            Errno::EINTR,
            2,
            1,
        ))),
        2 => Some(fault::install(fault::bursts(
            &[Op::Recv, Op::Send, Op::Accept, Op::EventfdRead],
            Errno::EAGAIN,
            8,
            5,
        ))),
        3 => Some(fault::install(|op, n| {
            matches!(op, Op::Recv | Op::Send).then_some(Action::Short(1 + (n % 7) as usize))
        })),
        _ => None,
    };

    let mut clients: Vec<Client> = Vec::new();
    let mut connects = 0;
    let mut buf = vec![0u8; 65536];
    let mut it = data[2..].iter().copied();
    let mut next = move || it.next();
    for _ in 0..MAX_OPS {
        let Some(op) = next() else { break };
        let arg = next().unwrap_or(0);
        let k = arg as usize;
        match op % 10 {
            0 => {
                if clients.len() < MAX_CLIENTS && connects < MAX_CONNECTS {
                    connects += 1;
                    let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                    s.set_nonblocking(true).unwrap();
                    clients.push(Client {
                        s,
                        sent: Vec::new(),
                        got: 0,
                        shut: false,
                        eof: false,
                    });
                }
            }
            1 | 2 => {
                let n = clients.len();
                if n == 0 {
                    continue;
                }
                let c = &mut clients[k % n];
                if c.shut {
                    continue;
                }
                let len = (usize::from(arg) << 8 | usize::from(next().unwrap_or(0))) % max_piece;
                let fill = next().unwrap_or(0);
                let piece: Vec<u8> = (0..len).map(|i| fill.wrapping_add(i as u8)).collect();
                match c.s.write(&piece) {
                    Ok(w) => c.sent.extend_from_slice(&piece[..w]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("client write: {e}"),
                }
            }
            3 => {
                let n = clients.len();
                if n > 0 {
                    read_some(&mut clients[k % n], &mut buf);
                }
            }
            4 => {
                let n = clients.len();
                if n > 0 {
                    let c = &mut clients[k % n];
                    if !c.shut {
                        c.s.shutdown(Shutdown::Write).unwrap();
                        c.shut = true;
                    }
                }
            }
            5 => {
                let n = clients.len();
                if n > 0 && arg & 0x80 != 0 {
                    // Reset: leaves the script (nothing more to check for it).
                    let c = clients.remove(k % n);
                    set_linger_zero(&c.s);
                    drop(c);
                }
            }
            6 => {
                let n = clients.len();
                if n > 0 {
                    // A zero-length write: nothing on the wire.
                    let c = &mut clients[k % n];
                    if !c.shut {
                        let _ = c.s.write(&[]);
                    }
                }
            }
            _ => poll(lp, 1 + u32::from(arg % 4)),
        }
    }

    // Finale: everyone half-closes and must get everything back, then EOF.
    for c in clients.iter_mut() {
        if !c.shut {
            c.s.shutdown(Shutdown::Write).unwrap();
            c.shut = true;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while clients.iter().any(|c| !c.eof) {
        assert!(
            Instant::now() < deadline,
            "the server wedged: not every echo came back"
        );
        poll(lp, 1);
        for c in clients.iter_mut() {
            read_some(c, &mut buf);
        }
    }
    for c in &clients {
        assert_eq!(c.got, c.sent.len(), "every byte came back");
    }
    drop(clients);
    drop(plan);

    // SAFETY: live attached server, on its loop's thread.
    assert_eq!(unsafe { echo_server_stop(srv) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut st = epoll_loop_stats::default();
        // SAFETY: live loop.
        assert_eq!(unsafe { epoll_loop_get_stats(lp, &mut st) }, 0);
        if st.registered == 0 && st.timers_pending == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stopped server did not finish: {st:?}"
        );
        // SAFETY: live loop.
        let rc: c_int = unsafe { epoll_loop_poll(lp, 5) };
        assert!(rc >= 0);
    }
    // SAFETY: live loop, nothing attached any more.
    assert_eq!(unsafe { epoll_loop_free(lp) }, 0);
    assert_eq!(count_fds(), fds0, "fds leaked");
});
