//! Unit tests of the stream layer: delivery, the write queue and its cap,
//! `on_drain`, close, the close timeout, resets.

use super::*;
use crate::sys::{Errno, Result, socket};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Record {
    data: RefCell<Vec<u8>>,
    drains: Cell<u32>,
    closes: RefCell<Vec<i32>>,
    opened: Cell<bool>,
    /// An `on_drain` came before `on_open`.
    drain_before_open: Cell<bool>,
    /// Inside a `write` call made by the test (an `on_drain` then is re-entrant).
    in_write: Cell<bool>,
    reentrant_drain: Cell<bool>,
    queued_at_drain: Cell<usize>,
}

impl ConnHandler for Record {
    fn on_open(&self, _: &EventLoop, _: &Rc<Conn>) {
        self.opened.set(true);
    }
    fn on_data(&self, _: &EventLoop, _: &Rc<Conn>, data: &[u8]) {
        self.data.borrow_mut().extend_from_slice(data);
    }
    fn on_drain(&self, _: &EventLoop, conn: &Rc<Conn>) {
        self.drains.set(self.drains.get() + 1);
        self.queued_at_drain.set(conn.queued());
        self.drain_before_open
            .set(self.drain_before_open.get() || !self.opened.get());
        self.reentrant_drain
            .set(self.reentrant_drain.get() || self.in_write.get());
    }
    fn on_close(&self, _: &EventLoop, _: &Rc<Conn>, error: Option<Errno>) {
        // As the C API reports it: 0 or -errno.
        self.closes
            .borrow_mut()
            .push(error.map_or(0, Errno::to_negative));
    }
}

/// A loop, a connection on it wrapping the server side, and the client socket.
fn pair(max_queue: usize, low: usize) -> (EventLoop, Rc<Conn>, Rc<Record>, TcpStream) {
    let l = socket::tcp_listen(&"127.0.0.1:0".parse().unwrap(), 0, false).unwrap();
    let addr = socket::local_addr(l.as_raw_fd()).unwrap();
    let client = TcpStream::connect(addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let fd = loop {
        match socket::accept(&l) {
            Ok(fd) => break fd,
            Err(Errno::EAGAIN) if Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => panic!("accept: {e}"),
        }
    };
    let lp = EventLoop::new().unwrap();
    let rec = Rc::new(Record::default());
    let ctx = TcpContext::new(Default::default());
    let conn = Conn::open(
        &lp,
        fd,
        ctx,
        rec.clone(),
        Limits {
            max_queue,
            low_water: low,
        },
    )
    .unwrap();
    (lp, conn, rec, client)
}

/// `conn.write`, noting that a write is in progress (for `reentrant_drain`).
fn write(lp: &EventLoop, conn: &Rc<Conn>, rec: &Record, data: &[u8]) -> Result<()> {
    rec.in_write.set(true);
    let r = conn.write(lp, data);
    rec.in_write.set(false);
    r
}

/// Writes `chunk`s (cap permitting) until the socket refuses and bytes queue.
fn fill_socket(lp: &EventLoop, conn: &Rc<Conn>, rec: &Record) -> usize {
    let chunk = vec![3u8; 256 * 1024];
    let mut sent = 0;
    while conn.queued() == 0 {
        write(lp, conn, rec, &chunk).unwrap();
        sent += chunk.len();
        assert!(sent < 512 << 20, "the socket took everything");
    }
    sent
}

fn poll_until(lp: &EventLoop, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "condition not reached in 5 s");
        lp.poll(50).unwrap();
    }
}

#[test]
fn data_is_delivered_and_eof_closes_once_with_zero() {
    let (lp, conn, rec, mut client) = pair(1 << 20, 1 << 10);
    client.write_all(b"hello").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    poll_until(&lp, || !rec.closes.borrow().is_empty());
    assert_eq!(&rec.data.borrow()[..], b"hello");
    assert_eq!(*rec.closes.borrow(), vec![0]);
    assert!(conn.is_closed());
    assert_eq!(conn.write(&lp, b"x"), Err(Errno::EPIPE));
    conn.close(&lp);
    conn.abort(&lp, Some(Errno::EIO));
    assert_eq!(rec.closes.borrow().len(), 1, "on_close runs exactly once");
}

#[test]
fn writes_queue_only_the_rest_and_refuse_past_the_cap() {
    let (lp, conn, rec, mut client) = pair(256 * 1024, 16 * 1024);
    // Fill the socket: the first write goes straight out, later ones queue.
    let chunk = vec![1u8; 64 * 1024];
    let mut accepted = 0usize;
    loop {
        match conn.write(&lp, &chunk) {
            Ok(()) => accepted += chunk.len(),
            Err(Errno::ENOBUFS) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(accepted < 64 << 20, "the cap never applied");
    }
    assert!(conn.queued() <= 256 * 1024);
    assert!(
        conn.queued() + chunk.len() > 256 * 1024,
        "refused only past the cap"
    );
    // The client drains everything; on_drain fires once the queue is low.
    let mut got = vec![0u8; accepted];
    let reader = std::thread::spawn(move || {
        client.read_exact(&mut got).unwrap();
        (client, got)
    });
    poll_until(&lp, || conn.queued() == 0);
    let (_client, got) = reader.join().unwrap();
    assert!(got.iter().all(|&b| b == 1));
    assert_eq!(rec.drains.get(), 1);
}

/// The reproduction: cap 1000, low water 500, 10 bytes queued (written while
/// connecting), `write(995)` is refused with ENOBUFS although the queue is
/// far below low water. The queue drains to 0 and `on_drain` must come (it
/// never did: it fired only after the queue had been above low water);
/// after `on_open`, never from inside the refused write.
#[test]
fn enobufs_below_low_water_still_gets_on_drain_after_connecting() {
    let l = socket::tcp_listen(&"127.0.0.1:0".parse().unwrap(), 0, false).unwrap();
    let addr = socket::local_addr(l.as_raw_fd()).unwrap();
    let lp = EventLoop::new().unwrap();
    let rec = Rc::new(Record::default());
    let limits = Limits {
        max_queue: 1000,
        low_water: 500,
    };
    let ctx = TcpContext::new(Default::default());
    let conn = Conn::connect(&lp, &addr, ctx, rec.clone(), limits).unwrap();
    write(&lp, &conn, &rec, &[1; 10]).unwrap();
    assert_eq!(conn.queued(), 10);
    assert_eq!(write(&lp, &conn, &rec, &[2; 995]), Err(Errno::ENOBUFS));
    assert_eq!(conn.queued(), 10, "a refused write queues nothing");
    assert_eq!(write(&lp, &conn, &rec, &[2; 1001]), Err(Errno::EMSGSIZE));
    poll_until(&lp, || rec.drains.get() > 0);
    assert!(rec.opened.get());
    assert!(!rec.drain_before_open.get(), "on_drain before on_open");
    assert!(!rec.reentrant_drain.get(), "on_drain inside write");
    poll_until(&lp, || conn.queued() == 0);
    lp.poll(20).unwrap();
    assert_eq!(rec.drains.get(), 1, "once per refusal");
    let peer = socket::accept(&l).unwrap();
    let mut got = [0u8; 16];
    let n = socket::recv(peer.as_raw_fd(), &mut got).unwrap();
    assert_eq!(&got[..n], &[1; 10]);
}

/// A connected socket that takes nothing more (the peer does not read),
/// bytes queued at or below low water, and a write too large for the rest
/// of the cap: no `on_drain` while the write could not fit (waking the
/// writer would only make it spin), none from inside `write`; new limits
/// under which it fits bring `on_drain` on the next loop turn (not from
/// inside `set_limits`), and the retry fits. Then the peer reads: the next
/// refused write gets `on_drain` once the queue fell enough for it. EMSGSIZE
/// gets none.
#[test]
fn enobufs_gets_on_drain_once_the_refused_write_fits() {
    let (lp, conn, rec, mut client) = pair(64 << 20, 32 << 20);
    fill_socket(&lp, &conn, &rec);
    lp.poll(0).unwrap();
    let q = conn.queued();
    assert!(q > 0 && q <= 256 * 1024);
    assert_eq!(rec.drains.get(), 0);
    let limits = |max_queue, low_water| Limits {
        max_queue,
        low_water,
    };
    conn.set_limits(&lp, limits(q + 100, q + 50)).unwrap();
    // One byte more than the rest of the cap (should the kernel have taken
    // a few more bytes meanwhile, the rest is larger).
    let len = q + 100 - conn.queued() + 1;
    for _ in 0..3 {
        assert_eq!(write(&lp, &conn, &rec, &vec![4; len]), Err(Errno::ENOBUFS));
    }
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        lp.poll(10).unwrap();
    }
    assert_eq!(rec.drains.get(), 0, "on_drain while the write cannot fit");

    conn.set_limits(&lp, limits(q + 1000, q + 50)).unwrap();
    assert_eq!(rec.drains.get(), 0, "not from inside set_limits");
    poll_until(&lp, || rec.drains.get() > 0);
    assert!(!rec.reentrant_drain.get());
    write(&lp, &conn, &rec, &vec![4; len]).expect("the retry fits");
    for _ in 0..5 {
        lp.poll(0).unwrap();
    }
    assert_eq!(rec.drains.get(), 1, "one on_drain for the refusals");

    // EMSGSIZE is no wait-for-drain refusal.
    assert_eq!(
        write(&lp, &conn, &rec, &vec![4; q + 1001]),
        Err(Errno::EMSGSIZE)
    );
    for _ in 0..5 {
        lp.poll(0).unwrap();
    }
    assert_eq!(rec.drains.get(), 1);

    // Low water just under the cap: a refusal waits for the queue to fall
    // until the write fits, below low water.
    let q = conn.queued();
    conn.set_limits(&lp, limits(q + 100, q + 99)).unwrap();
    let len = 1000;
    assert_eq!(write(&lp, &conn, &rec, &vec![4; len]), Err(Errno::ENOBUFS));
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        client.read_to_end(&mut v).map(|_| v.len())
    });
    poll_until(&lp, || rec.drains.get() == 2);
    let at = rec.queued_at_drain.get();
    assert!(
        at <= q + 100 - len,
        "on_drain with {at} queued: {len} do not fit"
    );
    write(&lp, &conn, &rec, &vec![4; len]).expect("the retry fits");
    assert!(!rec.reentrant_drain.get());
    conn.close(&lp);
    poll_until(&lp, || !rec.closes.borrow().is_empty());
    assert_eq!(*rec.closes.borrow(), vec![0]);
    assert!(reader.join().unwrap().unwrap() > q);
}

#[test]
fn close_flushes_then_closes() {
    let (lp, conn, rec, mut client) = pair(8 << 20, 0);
    let data: Vec<u8> = (0..4_000_000u32).map(|i| i as u8).collect();
    conn.write(&lp, &data).unwrap();
    conn.close(&lp);
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        client.read_to_end(&mut v).unwrap();
        v
    });
    poll_until(&lp, || !rec.closes.borrow().is_empty());
    drop(conn);
    assert_eq!(reader.join().unwrap(), data);
    assert_eq!(*rec.closes.borrow(), vec![0]);
}

/// A close to a peer that reads nothing ends at the close timeout with a
/// reset and `-ETIMEDOUT`; the timeout cannot change once closing.
#[test]
fn close_to_a_stuck_peer_ends_at_the_close_timeout() {
    let (lp, conn, rec, _client) = pair(64 << 20, 1 << 20);
    assert_eq!(conn.close_timeout_ms.get(), CLOSE_TIMEOUT_MS);
    conn.set_close_timeout(200).unwrap();
    fill_socket(&lp, &conn, &rec);
    let t0 = Instant::now();
    conn.close(&lp);
    assert_eq!(conn.set_close_timeout(0), Err(Errno::EPIPE));
    poll_until(&lp, || !rec.closes.borrow().is_empty());
    assert!(t0.elapsed() >= Duration::from_millis(195));
    assert_eq!(*rec.closes.borrow(), vec![-libc::ETIMEDOUT]);
}

/// Caps stay at or below `Limits::MAX_QUEUE` (so a chunk that passes
/// `check_write_len` is a valid slice length), and `check_write_len`
/// answers any length, `usize::MAX` included, without arithmetic on it.
#[test]
fn write_lengths_are_checked_against_a_bounded_cap() {
    assert!(Limits::MAX_QUEUE <= isize::MAX as usize);
    assert!(Limits::MAX_QUEUE <= u32::MAX as usize);
    let l = |max_queue, low_water| Limits {
        max_queue,
        low_water,
    };
    assert!(l(Limits::MAX_QUEUE, 0).validate().is_ok());
    for bad in [
        l(Limits::MAX_QUEUE + 1, 0),
        l(usize::MAX, 0),
        l(0, 0),
        l(10, 10),
    ] {
        assert_eq!(bad.validate(), Err(Errno::EINVAL), "{bad:?}");
    }
    let (lp, conn, _rec, _client) = pair(1000, 500);
    for len in [usize::MAX, isize::MAX as usize + 1, 1001] {
        assert_eq!(conn.check_write_len(len), Err(Errno::EMSGSIZE));
    }
    assert_eq!(conn.check_write_len(1000), Ok(()));
    conn.close(&lp);
    assert_eq!(conn.check_write_len(usize::MAX), Err(Errno::EPIPE));
}

#[test]
fn reset_by_peer_reports_an_error() {
    let (lp, conn, rec, client) = pair(1 << 20, 0);
    socket::set_linger_zero(client.as_raw_fd()).unwrap();
    drop(client);
    poll_until(&lp, || !rec.closes.borrow().is_empty());
    assert_eq!(*rec.closes.borrow(), vec![-libc::ECONNRESET]);
    assert!(conn.is_closed());
}
