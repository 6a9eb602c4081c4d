//! Fault injection: the echo guarantees and the dispatch rules under
//! each fault class that [`crate::sys::fault`] can inject.
//!
//! Each test drives a loop on its own thread with a fault plan installed on that
//! thread (so only the library's syscalls on this loop fail; clients run on
//! other threads with real sockets), an echo server attached to the loop, and
//! checks: byte-exact echo, half-close, no spin (loop iterations and syscalls
//! counted), the server still serving afterwards, and nothing left behind (no
//! connection open, nothing registered, no timer pending, so every accepted
//! socket was closed). Run with `--nocapture` to see the measured numbers.

use crate::echo::{EchoConfig, Worker};
use crate::event_loop::{EXCLUSIVE, EventLoop, IN, IoCallback, OUT, RunExit};
use crate::stream::TcpStats;
use crate::sys::Errno;
use crate::sys::fault::{self, Action, Op, PlanGuard};
use crate::sys::testing::{drain, pipe, write_byte as write1};
use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

struct Server {
    lp: EventLoop,
    worker: Rc<Worker>,
    port: u16,
}

impl Server {
    fn start() -> Server {
        let lp = EventLoop::new().unwrap();
        let cfg = EchoConfig {
            port: 0,
            max_pending_bytes: 64 * 1024,
            ..EchoConfig::default()
        };
        let (worker, port) = Worker::attach(&lp, cfg).unwrap();
        Server { lp, worker, port }
    }

    fn stat(&self, f: impl Fn(&TcpStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        TcpStats::get(f(self.worker.shared()))
    }

    /// Polls until `t` finishes (failing after [`LIMIT`]: the server wedged).
    fn drive<R>(&self, t: JoinHandle<R>) -> R {
        let deadline = Instant::now() + LIMIT;
        while !t.is_finished() {
            assert!(
                Instant::now() < deadline,
                "the server wedged: client not done"
            );
            self.lp.poll(10).unwrap();
        }
        t.join().expect("client thread")
    }

    /// Polls (50 ms at a time, so an idle loop iterates 20 times a second)
    /// for `d`; returns the loop iterations it took. A spinning loop would
    /// make thousands.
    fn poll_for(&self, d: Duration) -> u64 {
        let before = self.lp.stats().iterations;
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.lp.poll(50).unwrap();
        }
        self.lp.stats().iterations - before
    }

    /// Graceful stop, then checks that nothing is left: no connection, no
    /// registration, no timer (so every accepted socket was closed).
    fn stop(self) {
        self.worker.begin_stop(&self.lp);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(self.worker.open_connections() == 0 && self.lp.is_idle()) {
            assert!(Instant::now() < deadline, "stop did not finish");
            self.lp.poll(10).unwrap();
        }
        let st = self.worker.shared();
        assert_eq!(TcpStats::get(&st.active), 0);
        assert_eq!(
            TcpStats::get(&st.accepted),
            TcpStats::get(&st.closed),
            "every accepted connection was closed"
        );
        assert_eq!(self.lp.stats().registered, 0);
        assert_eq!(self.lp.stats().timers_pending, 0);
        assert_eq!(Rc::strong_count(&self.worker), 1, "the worker leaked");
    }
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// Connects `n` clients one after the other; each must see its connection
/// closed at once (EOF or a reset), as a shed or refused client does.
fn refused_clients(port: u16, n: usize) {
    for _ in 0..n {
        let mut s = connect(port);
        let mut b = [0u8; 1];
        match s.read(&mut b) {
            Ok(0) => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
            other => panic!("expected the server to close at once, got {other:?}"),
        }
    }
}

/// A client socket with a 4 KiB receive buffer, set before connecting, so that
/// the server's writes back stall soon and its queue, pause and resume work.
fn connect_small_rcvbuf(port: u16) -> TcpStream {
    let s = crate::sys::testing::connect_with_rcvbuf(port, 4096);
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

/// A client that writes `len` random bytes in random-size pieces (with pauses
/// in reading: the reader starts late), half-closes, and checks that exactly
/// those bytes come back, in order, followed by EOF. A `slow` client has a
/// tiny receive buffer and starts reading only after 200 ms, so the server
/// must queue, pause reading, arm `EPOLLOUT` and resume.
fn echo_client(port: u16, len: usize, seed: u64, slow: bool) -> JoinHandle<usize> {
    thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let data = rng.bytes(len);
        let mut s = if slow {
            connect_small_rcvbuf(port)
        } else {
            connect(port)
        };
        let mut w = s.try_clone().unwrap();
        let d2 = data.clone();
        let writer = thread::spawn(move || {
            let mut rng = Rng::new(seed ^ 0xabcd);
            let mut off = 0;
            while off < d2.len() {
                let n = (1 + rng.below(8192) as usize).min(d2.len() - off);
                w.write_all(&d2[off..off + n]).unwrap();
                off += n;
                if rng.below(8) == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            w.shutdown(Shutdown::Write).unwrap();
        });
        let pause = if slow { 200 } else { rng.below(30) };
        thread::sleep(Duration::from_millis(pause));
        let mut back = Vec::with_capacity(len);
        s.read_to_end(&mut back).unwrap();
        writer.join().unwrap();
        assert_eq!(back.len(), data.len(), "echo length");
        assert!(back == data, "echo differs");
        back.len()
    })
}

/// Runs `clients` echo clients against `srv`, concurrently: even ones send
/// `len` bytes, odd ones are slow (see [`echo_client`]) and send `slow_len`
/// (more than the server's socket buffer takes, so that it must queue).
fn echo_clients(srv: &Server, clients: usize, len: usize, slow_len: usize, seed: u64) -> usize {
    let port = srv.port;
    let t = thread::spawn(move || {
        let hs: Vec<_> = (0..clients)
            .map(|i| {
                let slow = i % 2 == 1;
                let n = if slow { slow_len } else { len };
                echo_client(port, n, seed + i as u64, slow)
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>()
    });
    srv.drive(t)
}

fn counter() -> (Rc<Cell<u32>>, IoCallback) {
    let c = Rc::new(Cell::new(0));
    let c2 = c.clone();
    (c, Rc::new(move |_: &EventLoop, _, _| c2.set(c2.get() + 1)))
}

/// The dispatch rules (docs/ARCHITECTURE.md, "Dispatch rules"), checked on `lp` under whatever plan is
/// installed on this thread (the fault classes that leave epoll_ctl alone).
fn check_dispatch_rules(lp: &EventLoop) {
    check_fd_rules(lp);
    check_timer_rules(lp);
    check_cross_thread_rules(lp);
}

fn check_fd_rules(lp: &EventLoop) {
    // A ready fd's callback runs, and counts.
    let (r, w) = pipe();
    let (hits, cb) = counter();
    lp.register(r.as_raw_fd(), IN, cb).unwrap();
    write1(&w);
    let deadline = Instant::now() + Duration::from_secs(5);
    while hits.get() == 0 {
        assert!(Instant::now() < deadline, "fd callback never ran");
        lp.poll(100).unwrap();
    }
    drain(&r);
    lp.poll(0).unwrap();
    assert_eq!(hits.get(), 1, "exactly one callback for one readiness");

    // An event for a registration removed earlier in the batch is not delivered.
    let (r2, w2) = pipe();
    let fd1 = r.as_raw_fd();
    let fd2 = r2.as_raw_fd();
    let runs = Rc::new(Cell::new(0u32));
    let rn = runs.clone();
    lp.unregister(fd1).unwrap();
    let killer: IoCallback = Rc::new(move |lp: &EventLoop, fd, _| {
        rn.set(rn.get() + 1);
        let _ = lp.unregister(if fd == fd1 { fd2 } else { fd1 });
        let _ = lp.unregister(fd);
    });
    lp.register(fd1, IN, killer.clone()).unwrap();
    lp.register(fd2, IN, killer).unwrap();
    write1(&w);
    write1(&w2);
    let deadline = Instant::now() + Duration::from_secs(5);
    while runs.get() == 0 {
        assert!(Instant::now() < deadline, "no callback");
        lp.poll(100).unwrap();
    }
    for _ in 0..3 {
        lp.poll(0).unwrap();
    }
    assert_eq!(runs.get(), 1, "the second event of the batch was stale");
    assert_eq!(lp.registered_events(fd1), None);
    assert_eq!(lp.registered_events(fd2), None);
}

fn check_timer_rules(lp: &EventLoop) {
    // A one-shot timer fires exactly once; its id is then unknown.
    let fired = Rc::new(Cell::new(0u32));
    let f = fired.clone();
    let id = lp.timer_start(2, 0, Rc::new(move |_: &EventLoop, _| f.set(f.get() + 1)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while fired.get() == 0 {
        assert!(Instant::now() < deadline, "timer never fired");
        lp.poll(-1).unwrap();
    }
    lp.poll(5).unwrap();
    assert_eq!(fired.get(), 1);
    assert_eq!(lp.timer_stop(id), Err(Errno::ENOENT));

    // A timeout is honoured: not early (EINTR retried with the time left), not late.
    let t0 = Instant::now();
    assert_eq!(lp.poll(40).unwrap(), 0);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(40),
        "poll(40) returned after {took:?}"
    );
    assert!(took < Duration::from_secs(2), "poll(40) took {took:?}");
}

fn check_cross_thread_rules(lp: &EventLoop) {
    // Posts from another thread run exactly once each; wake makes poll return.
    let ran = Arc::new(AtomicUsize::new(0));
    let remote = lp.remote().clone();
    let r2c = ran.clone();
    let poster = thread::spawn(move || {
        for _ in 0..100 {
            let r = r2c.clone();
            remote
                .post(Box::new(move |_: &EventLoop| {
                    r.fetch_add(1, Ordering::SeqCst);
                }))
                .unwrap();
        }
        remote.wake().unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while ran.load(Ordering::SeqCst) < 100 {
        assert!(Instant::now() < deadline, "posts lost");
        lp.poll(100).unwrap();
    }
    poster.join().unwrap();
    lp.poll(0).unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 100);

    // Stop from another thread makes run return; the loop is not idle meanwhile.
    let (keep, _keep_w) = pipe();
    let (_, cb) = counter();
    lp.register(keep.as_raw_fd(), IN, cb).unwrap();
    let remote = lp.remote().clone();
    let stopper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        remote.stop().unwrap();
    });
    assert_eq!(lp.run().unwrap(), RunExit::Stopped);
    stopper.join().unwrap();
    lp.unregister(keep.as_raw_fd()).unwrap();
    assert_eq!(lp.registered_events(keep.as_raw_fd()), None);
}

fn report(class: &str, plan: &PlanGuard, extra: &str) {
    let per_op: Vec<String> = Op::ALL
        .iter()
        .filter(|&&op| plan.injected(op) > 0)
        .map(|&op| format!("{op:?} {}/{}", plan.injected(op), plan.calls(op)))
        .collect();
    println!(
        "fault class {class}: injected {} ({}) {extra}",
        plan.injected_total(),
        per_op.join(", ")
    );
}

// ---------------------------------------------------------------------------
// One test per fault class
// ---------------------------------------------------------------------------

/// Every interruptible call (`epoll_wait`, `accept`, `recv`, `send`, eventfd and
/// signalfd reads and writes, `connect`) fails with `EINTR` every other time.
#[test]
fn eintr_on_every_interruptible_call() {
    let srv = Server::start();
    let plan = fault::install(fault::bursts(&Op::INTERRUPTIBLE, Errno::EINTR, 2, 1));
    check_dispatch_rules(&srv.lp);
    let it0 = srv.lp.stats().iterations;
    let bytes = echo_clients(&srv, 8, 200_000, 6 << 20, 1);
    let iterations = srv.lp.stats().iterations - it0;
    assert_eq!(bytes, 4 * 200_000 + 4 * (6 << 20));
    for op in [
        Op::EpollWait,
        Op::Accept,
        Op::Recv,
        Op::Send,
        Op::EventfdRead,
    ] {
        assert!(plan.injected(op) > 0, "{op:?} was never interrupted");
    }
    let idle = srv.poll_for(Duration::from_millis(300));
    assert!(idle <= 40, "{idle} iterations in 300 ms idle: spinning");
    report(
        "EINTR",
        &plan,
        &format!("echo {bytes} B in {iterations} iterations; idle 300 ms: {idle} iterations"),
    );
    drop(plan);
    srv.stop();
}

/// `recv`, `send`, `accept` and the waker's drain fail with `EAGAIN` in storms
/// (12 of every 16 calls) although epoll said they were ready.
#[test]
fn eagain_storms() {
    let srv = Server::start();
    let plan = fault::install(fault::bursts(
        &[Op::Recv, Op::Send, Op::Accept, Op::EventfdRead],
        Errno::EAGAIN,
        16,
        12,
    ));
    check_dispatch_rules(&srv.lp);
    let it0 = srv.lp.stats().iterations;
    let bytes = echo_clients(&srv, 8, 200_000, 6 << 20, 2);
    let iterations = srv.lp.stats().iterations - it0;
    assert_eq!(bytes, 4 * 200_000 + 4 * (6 << 20));
    for op in [Op::Recv, Op::Send, Op::Accept] {
        assert!(plan.injected(op) > 0, "{op:?} never got EAGAIN");
    }
    let idle = srv.poll_for(Duration::from_millis(300));
    assert!(idle <= 40, "{idle} iterations in 300 ms idle: spinning");
    report(
        "EAGAIN",
        &plan,
        &format!("echo {bytes} B in {iterations} iterations; idle 300 ms: {idle} iterations"),
    );
    drop(plan);
    srv.stop();
}

/// Every `recv` and `send` moves one byte at most; then, with normal reads,
/// every `send` moves one byte and every 64th fails with `EAGAIN`, so the
/// server queues remainders and flushes them one byte at a time.
#[test]
fn one_byte_reads_and_writes() {
    let srv = Server::start();
    let recv_too = Rc::new(Cell::new(true));
    let r = recv_too.clone();
    let plan = fault::install(move |op, n| match op {
        Op::Recv if r.get() => Some(Action::Short(1)),
        Op::Send if r.get() => Some(Action::Short(1)),
        Op::Send if n % 64 == 63 => Some(Action::Fail(Errno::EAGAIN)),
        Op::Send => Some(Action::Short(1)),
        _ => None,
    });
    check_dispatch_rules(&srv.lp);
    let it0 = srv.lp.stats().iterations;
    let bytes = echo_clients(&srv, 4, 20_000, 20_000, 3);
    let iterations = srv.lp.stats().iterations - it0;
    assert_eq!(bytes, 4 * 20_000);
    assert!(
        plan.injected(Op::Recv) >= 4 * 20_000 / 2,
        "reads were not short"
    );

    recv_too.set(false);
    let sends0 = plan.injected(Op::Send);
    let queued0 = plan.calls(Op::EpollMod);
    let bytes2 = echo_clients(&srv, 4, 50_000, 50_000, 4);
    assert_eq!(bytes2, 4 * 50_000);
    let short_sends = plan.injected(Op::Send) - sends0;
    assert!(short_sends > 1000, "sends were not short ({short_sends})");
    assert!(
        plan.calls(Op::EpollMod) > queued0,
        "the server never had to queue"
    );

    let idle = srv.poll_for(Duration::from_millis(300));
    assert!(idle <= 40, "{idle} iterations in 300 ms idle: spinning");
    report(
        "short reads/writes (1 byte)",
        &plan,
        &format!(
            "echo {bytes} B with 1-byte reads in {iterations} iterations, {bytes2} B with \
             1-byte writes; idle 300 ms: {idle} iterations"
        ),
    );
    drop(plan);
    srv.stop();
}

/// `accept` fails with `EMFILE`, `ENFILE` or `ENOMEM` for a while: the server
/// neither dies nor spins, sheds or keeps the pending clients, and serves
/// normally once the fault is gone.
#[test]
fn accept_emfile_enfile_enomem() {
    let srv = Server::start();
    // 0: no fault; else fail every accept with this errno; -1: EMFILE, but let
    // the accept right after a failure through (the reserve-fd trick works).
    let mode = Rc::new(Cell::new(0i32));
    let last_failed = Rc::new(Cell::new(false));
    let (m, lf) = (mode.clone(), last_failed.clone());
    let plan = fault::install(move |op, _| {
        if op != Op::Accept {
            return None;
        }
        let fail = match m.get() {
            0 => None,
            -1 if lf.get() => None,
            -1 => Some(Errno::EMFILE),
            e => Some(Errno(e)),
        };
        lf.set(fail.is_some());
        fail.map(Action::Fail)
    });
    let mut notes = Vec::new();
    for errno in [libc::EMFILE, libc::ENFILE, libc::ENOMEM] {
        notes.push(accept_fails_without_spinning(&srv, &plan, &mode, errno));
    }

    // EMFILE where the reserve fd helps: pending clients are shed (closed at
    // once, counted as rejected), the listener does not stop.
    mode.set(-1);
    let rejected0 = srv.stat(|s| &s.rejected);
    let port = srv.port;
    let shed = thread::spawn(move || refused_clients(port, 3));
    srv.drive(shed);
    let rejected = srv.stat(|s| &s.rejected) - rejected0;
    assert!(rejected >= 3, "shed {rejected} of 3");
    mode.set(0);
    srv.poll_for(Duration::from_millis(150)); // past any back-off
    let bytes = echo_clients(&srv, 2, 50_000, 50_000, 4);
    assert_eq!(bytes, 100_000);
    report(
        "accept EMFILE/ENFILE/ENOMEM",
        &plan,
        &format!("{}; shed {rejected}", notes.join("; ")),
    );
    drop(plan);
    srv.stop();
}

/// While every accept fails with `errno` (through `mode`, see
/// `accept_emfile_enfile_enomem`), a waiting client stays in the backlog, the
/// failures are counted and the listener does not spin; once the fault is gone
/// the client is served. Returns a line for the report.
fn accept_fails_without_spinning(
    srv: &Server,
    plan: &PlanGuard,
    mode: &Cell<i32>,
    errno: i32,
) -> String {
    mode.set(errno);
    let errors0 = srv.stat(|s| &s.accept_errors);
    let calls0 = plan.calls(Op::Accept);
    // A client arrives while accept fails; it waits in the backlog.
    let port = srv.port;
    let client = thread::spawn(move || {
        let mut s = connect(port);
        s.write_all(b"still there?").unwrap();
        let mut b = [0u8; 12];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"still there?");
    });
    thread::sleep(Duration::from_millis(20));
    let iterations = srv.poll_for(Duration::from_millis(500));
    let calls = plan.calls(Op::Accept) - calls0;
    assert!(
        srv.stat(|s| &s.accept_errors) > errors0,
        "errno {errno} not counted"
    );
    assert!(
        iterations <= 60,
        "errno {errno}: {iterations} iterations in 500 ms: spinning"
    );
    assert!(
        calls <= 40,
        "errno {errno}: {calls} accept calls in 500 ms: spinning"
    );
    // The fault goes away: the waiting client is served.
    mode.set(0);
    srv.drive(client);
    format!(
        "{}: {iterations} iterations/{calls} accepts in 500 ms",
        Errno(errno)
    )
}

/// The loop's registry when `epoll_ctl` fails (`fail_add`/`fail_mod`: how
/// many of the next ADDs/MODs the installed plan fails).
fn registry_under_failing_epoll_ctl(lp: &EventLoop, fail_add: &Cell<u32>, fail_mod: &Cell<u32>) {
    // Dispatch rules: a failed register leaves nothing behind, and the fd can
    // be registered later with a fresh generation.
    let (r, w) = pipe();
    let fd = r.as_raw_fd();
    let (hits, cb) = counter();
    fail_add.set(1);
    assert_eq!(lp.register(fd, IN, cb.clone()), Err(Errno::ENOSPC));
    assert_eq!(lp.registered_events(fd), None);
    assert_eq!(lp.stats().registered, 0);
    assert_eq!(lp.unregister(fd), Err(Errno::ENOENT));
    lp.register(fd, IN, cb).unwrap();
    write1(&w);
    assert_eq!(lp.poll(1000).unwrap(), 1);
    assert_eq!(hits.get(), 1);
    // A failed modify keeps the old events and callback.
    fail_mod.set(1);
    assert_eq!(lp.modify(fd, IN | OUT), Err(Errno::ENOMEM));
    assert_eq!(lp.registered_events(fd), Some(IN));
    assert_eq!(
        lp.poll(1000).unwrap(),
        1,
        "still delivered with the old events"
    );
    assert_eq!(hits.get(), 2);
    drain(&r);
    // EXCLUSIVE is changed by DEL + ADD; a failed ADD puts the old mask back.
    lp.unregister(fd).unwrap();
    lp.register(fd, IN | EXCLUSIVE, counter().1).unwrap();
    fail_add.set(1);
    assert_eq!(lp.modify(fd, IN), Err(Errno::ENOSPC));
    assert_eq!(lp.registered_events(fd), Some(IN | EXCLUSIVE));
    write1(&w);
    assert_eq!(
        lp.poll(1000).unwrap(),
        1,
        "the old registration is back in the kernel"
    );
    drain(&r);
    // If not even the old mask can be put back, the fd is no longer registered
    // (the loop does not claim a registration the kernel lost).
    fail_add.set(2);
    assert_eq!(lp.modify(fd, IN), Err(Errno::ENOSPC));
    assert_eq!(
        lp.registered_events(fd),
        None,
        "a registration the kernel dropped"
    );
    assert_eq!(lp.stats().registered, 0);
    lp.register(fd, IN, counter().1).unwrap();
    lp.unregister(fd).unwrap();
    drop((r, w));
}

/// `epoll_ctl` fails: `ADD` with `ENOMEM`/`ENOSPC`, `MOD` with `ENOMEM`.
#[test]
fn failing_epoll_ctl() {
    let lp = EventLoop::new().unwrap();
    let fail_add = Rc::new(Cell::new(0u32)); // how many of the next ADDs fail
    let fail_mod = Rc::new(Cell::new(0u32));
    let every_mod = Rc::new(Cell::new(0u64)); // fail every n-th MOD (0: off)
    let (a, m, e) = (fail_add.clone(), fail_mod.clone(), every_mod.clone());
    let plan = fault::install(move |op, n| {
        let take = |c: &Cell<u32>| {
            let left = c.get();
            c.set(left.saturating_sub(1));
            left > 0
        };
        match op {
            Op::EpollAdd if take(&a) => Some(Action::Fail(Errno::ENOSPC)),
            Op::EpollMod if take(&m) => Some(Action::Fail(Errno::ENOMEM)),
            Op::EpollMod if e.get() > 0 && n % e.get() == 0 => Some(Action::Fail(Errno::ENOMEM)),
            _ => None,
        }
    });

    registry_under_failing_epoll_ctl(&lp, &fail_add, &fail_mod);

    // The echo server: connections whose ADD fails are closed at once (the
    // client sees EOF), the server keeps serving.
    let cfg = EchoConfig {
        port: 0,
        max_pending_bytes: 64 * 1024,
        ..EchoConfig::default()
    };
    let (worker, port) = Worker::attach(&lp, cfg).unwrap();
    let srv = Server { lp, worker, port };
    fail_add.set(3);
    let refused = thread::spawn(move || refused_clients(port, 3));
    srv.drive(refused);
    assert_eq!(fail_add.get(), 0);
    assert!(srv.stat(|s| &s.accept_errors) >= 3);

    // Every third MOD fails while clients push data through (the server pauses,
    // arms EPOLLOUT, resumes): no connection may wedge, no byte may be lost.
    every_mod.set(3);
    let bytes = echo_clients(&srv, 6, 300_000, 6 << 20, 5);
    assert_eq!(bytes, 3 * 300_000 + 3 * (6 << 20));
    assert!(plan.injected(Op::EpollMod) > 0);
    println!("MOD calls during the echo: {}", plan.calls(Op::EpollMod));

    every_mod.set(0);
    report("epoll_ctl", &plan, "");
    drop(plan);
    srv.stop();
}

/// A request/response client: the echo's `send` gets `EAGAIN` (the rest is
/// queued) and the `MOD` that arms `EPOLLOUT` fails. Nothing else will happen
/// on that connection (the client waits for its answer), so unless the server
/// retries, the answer never comes.
#[test]
fn a_failed_mod_does_not_wedge_a_connection() {
    let srv = Server::start();
    let plan = fault::install(|op, n| match op {
        Op::Send if n == 0 => Some(Action::Fail(Errno::EAGAIN)),
        Op::EpollMod if n < 2 => Some(Action::Fail(Errno::ENOMEM)),
        _ => None,
    });
    let port = srv.port;
    let client = thread::spawn(move || {
        let mut s = connect(port);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        for i in 0..3u8 {
            s.write_all(&[i; 5]).unwrap();
            let mut b = [0u8; 5];
            s.read_exact(&mut b).unwrap();
            assert_eq!(b, [i; 5]);
        }
    });
    srv.drive(client);
    assert_eq!(plan.injected(Op::Send), 1);
    assert_eq!(plan.injected(Op::EpollMod), 2, "two MODs in a row failed");
    report("failed MOD", &plan, "");
    drop(plan);
    srv.stop();
}

/// Accepting resumes after a back-off even when re-arming the listener fails once.
#[test]
fn listener_back_off_survives_a_failed_rearm() {
    let srv = Server::start();
    let emfile = Rc::new(Cell::new(true));
    let fail_mods = Rc::new(Cell::new(0u32));
    let (em, fm) = (emfile.clone(), fail_mods.clone());
    let plan = fault::install(move |op, _| match op {
        Op::Accept if em.get() => Some(Action::Fail(Errno::EMFILE)),
        Op::EpollMod if fm.get() > 0 => {
            fm.set(fm.get() - 1);
            Some(Action::Fail(Errno::ENOMEM))
        }
        _ => None,
    });
    let port = srv.port;
    let client = thread::spawn(move || {
        let mut s = connect(port);
        s.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
    });
    // Let the listener back off (MOD to 0 succeeds), then fail the re-arm.
    let deadline = Instant::now() + Duration::from_secs(5);
    while plan.calls(Op::EpollMod) == 0 {
        assert!(Instant::now() < deadline, "the listener never backed off");
        srv.lp.poll(10).unwrap();
    }
    emfile.set(false);
    fail_mods.set(1);
    srv.drive(client);
    assert_eq!(plan.injected(Op::EpollMod), 1);
    report("listener re-arm", &plan, "");
    drop(plan);
    srv.stop();
}

/// Sanity: a plan sees the calls and release builds compile the hook away (see
/// `docs/ARCHITECTURE.md`); here only that the plan is per thread.
#[test]
fn plans_are_per_thread() {
    for (i, op) in Op::ALL.iter().enumerate() {
        assert_eq!(*op as usize, i, "Op::ALL is in declaration order");
    }
    let plan = fault::install(fault::bursts(&[Op::EventfdCreate], Errno::EMFILE, 1, 1));
    assert_eq!(EventLoop::new().err(), Some(Errno::EMFILE));
    let other = thread::spawn(|| EventLoop::new().is_ok()).join().unwrap();
    assert!(other, "another thread is not affected");
    assert_eq!(plan.injected(Op::EventfdCreate), 1);
    drop(plan);
    assert!(EventLoop::new().is_ok());
}
