//! Unit tests of the loop: dispatch, timers, stops, argument errors.

use super::*;
use crate::sys::testing::{pipe, reclaim, write_byte as write1};
use std::os::fd::IntoRawFd;

fn counter() -> (Rc<Cell<u32>>, IoCallback) {
    let c = Rc::new(Cell::new(0));
    let c2 = c.clone();
    (c, Rc::new(move |_: &EventLoop, _, _| c2.set(c2.get() + 1)))
}

#[test]
fn dispatches_ready_fds_and_counts_callbacks() {
    let lp = EventLoop::new().unwrap();
    let (r, w) = pipe();
    let (hits, cb) = counter();
    lp.register(r.as_raw_fd(), IN, cb).unwrap();
    assert_eq!(lp.poll(0).unwrap(), 0);
    write1(&w);
    assert_eq!(lp.poll(1000).unwrap(), 1);
    assert_eq!(hits.get(), 1);
    assert_eq!(lp.stats().callbacks, 1);
    assert_eq!(lp.stats().registered, 1);
}

#[test]
fn argument_errors() {
    let lp = EventLoop::new().unwrap();
    let (r, _w) = pipe();
    let (_, cb) = counter();
    assert_eq!(lp.register(-1, IN, cb.clone()), Err(Errno::EBADF));
    assert_eq!(
        lp.register(r.as_raw_fd(), 1 << 20, cb.clone()),
        Err(Errno::EINVAL)
    );
    lp.register(r.as_raw_fd(), IN, cb.clone()).unwrap();
    assert_eq!(lp.register(r.as_raw_fd(), IN, cb), Err(Errno::EEXIST));
    assert_eq!(lp.modify(999, IN), Err(Errno::ENOENT));
    assert_eq!(lp.unregister(999), Err(Errno::ENOENT));
    assert_eq!(lp.poll(-2), Err(Errno::EINVAL));
    assert_eq!(lp.timer_stop(12345), Err(Errno::ENOENT));
}

#[test]
fn stale_events_in_a_batch_are_dropped() {
    let lp = Rc::new(EventLoop::new().unwrap());
    let (r1, w1) = pipe();
    let (r2, w2) = pipe();
    let (hits2, cb2) = counter();
    let fd2 = r2.as_raw_fd();
    // Whichever callback runs first removes the other registration.
    let first = Rc::new(Cell::new(None::<RawFd>));
    let f = first.clone();
    let fd1 = r1.as_raw_fd();
    let killer: IoCallback = Rc::new(move |lp: &EventLoop, fd, _| {
        if f.get().is_none() {
            f.set(Some(fd));
            let other = if fd == fd1 { fd2 } else { fd1 };
            lp.unregister(other).unwrap();
        }
    });
    lp.register(fd1, IN, killer.clone()).unwrap();
    lp.register(fd2, IN, killer).unwrap();
    write1(&w1);
    write1(&w2);
    assert_eq!(lp.poll(1000).unwrap(), 1, "the second event was stale");
    drop(cb2);
    assert_eq!(hits2.get(), 0);
}

#[test]
fn timers_run_in_the_same_poll_and_repeat() {
    let lp = EventLoop::new().unwrap();
    let fired = Rc::new(Cell::new(0u32));
    let f = fired.clone();
    let id = lp.timer_start(5, 5, Rc::new(move |_: &EventLoop, _| f.set(f.get() + 1)));
    assert_eq!(id, 1);
    assert_eq!(lp.poll(-1).unwrap(), 1);
    assert_eq!(lp.poll(-1).unwrap(), 1);
    assert_eq!(fired.get(), 2);
    lp.timer_stop(id).unwrap();
    assert!(lp.is_idle());
    assert_eq!(lp.run().unwrap(), RunExit::Idle);
}

#[test]
fn poll_inside_a_callback_is_busy() {
    let lp = EventLoop::new().unwrap();
    let seen = Rc::new(Cell::new(None));
    let s = seen.clone();
    lp.timer_start(
        0,
        0,
        Rc::new(move |lp: &EventLoop, _| {
            s.set(Some((lp.poll(0), lp.run().map(|_| ()))));
        }),
    );
    assert_eq!(lp.poll(-1).unwrap(), 1);
    assert_eq!(seen.get(), Some((Err(Errno::EBUSY), Err(Errno::EBUSY))));
    assert_eq!(lp.poll(0), Ok(0), "the dispatch flag is clear again");
}

#[test]
fn stop_before_run_is_remembered_once() {
    let lp = EventLoop::new().unwrap();
    lp.timer_start(60_000, 0, Rc::new(|_: &EventLoop, _| {}));
    lp.remote().stop().unwrap();
    assert_eq!(lp.run().unwrap(), RunExit::Stopped);
    assert_eq!(lp.poll(0).unwrap(), 0);
}

/// libuv's rule: a pending stop is consumed at the end of each poll and run.
#[test]
fn a_stop_is_consumed_by_the_next_poll_which_does_not_block() {
    let lp = EventLoop::new().unwrap();
    let fired = Rc::new(Cell::new(0u32));
    let f = fired.clone();
    // A pending timer: poll(-1) would wait 60 s for it, run too.
    let far = lp.timer_start(60_000, 0, Rc::new(|_: &EventLoop, _| {}));
    lp.remote().stop().unwrap();
    let t0 = std::time::Instant::now();
    assert_eq!(lp.poll(-1).unwrap(), 0, "a pending stop: no blocking");
    assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    // Consumed: a run with a timer pending does not return at once.
    lp.timer_start(
        30,
        0,
        Rc::new(move |lp: &EventLoop, _| {
            f.set(f.get() + 1);
            lp.remote().stop().unwrap();
        }),
    );
    let t0 = std::time::Instant::now();
    assert_eq!(lp.run().unwrap(), RunExit::Stopped);
    assert_eq!(fired.get(), 1, "run waited for the timer that stopped it");
    assert!(t0.elapsed() >= std::time::Duration::from_millis(30));
    // A stop from a callback inside poll is consumed by that poll.
    let g = fired.clone();
    lp.timer_start(
        0,
        0,
        Rc::new(move |lp: &EventLoop, _| {
            g.set(g.get() + 1);
            lp.remote().stop().unwrap();
        }),
    );
    assert_eq!(lp.poll(-1).unwrap(), 1);
    assert_eq!(fired.get(), 2);
    let h = fired.clone();
    lp.timer_start(20, 0, Rc::new(move |_: &EventLoop, _| h.set(h.get() + 1)));
    lp.timer_stop(far).unwrap();
    assert_eq!(lp.run().unwrap(), RunExit::Idle, "no stop left over");
    assert_eq!(fired.get(), 3);
}

#[test]
fn a_refused_nested_poll_leaves_the_stop_for_run() {
    let lp = EventLoop::new().unwrap();
    let nested = Rc::new(Cell::new(None));
    let n = nested.clone();
    lp.timer_start(
        0,
        1,
        Rc::new(move |lp: &EventLoop, _| {
            lp.remote().stop().unwrap();
            n.set(Some(lp.poll(0).map(|_| ())));
        }),
    );
    assert_eq!(lp.run().unwrap(), RunExit::Stopped);
    assert_eq!(nested.get(), Some(Err(Errno::EBUSY)));
}

#[test]
fn from_fd_rejects_non_epoll_and_gives_the_fd_back() {
    let (r, _w) = pipe();
    let raw = r.as_raw_fd();
    let (e, back) = EventLoop::from_fd(r)
        .err()
        .expect("a pipe is not an epoll fd");
    assert_eq!(e, Errno::EINVAL);
    assert_eq!(back.into_raw_fd(), raw);
    drop(reclaim(raw));
}

#[test]
fn event_bits_match_the_kernel() {
    assert_eq!(IN, 0x001);
    assert_eq!(OUT, 0x004);
    assert_eq!(PRI, 0x002);
    assert_eq!(ERR, 0x008);
    assert_eq!(HUP, 0x010);
    assert_eq!(RDHUP, 0x2000);
    assert_eq!(EXCLUSIVE, 1 << 28);
    assert_eq!(ONESHOT, 1 << 30);
    assert_eq!(ET, 1 << 31);
}

mod regression_tests {
    use super::*;

    /// Found by the api_sequence fuzzer: a modify refused for an invalid
    /// EXCLUSIVE combination did DEL + failed ADD + restoring ADD, and the
    /// restoring ADD re-armed a ONESHOT registration that had already fired.
    #[test]
    fn a_refused_exclusive_modify_does_not_rearm_a_fired_oneshot() {
        let (r, w) = pipe();
        let lp = EventLoop::new().unwrap();
        let hits = Rc::new(Cell::new(0));
        let h = hits.clone();
        lp.register(
            r.as_raw_fd(),
            IN | ONESHOT,
            Rc::new(move |_: &EventLoop, _, _| h.set(h.get() + 1)),
        )
        .unwrap();
        write1(&w);
        assert_eq!(lp.poll(1000).unwrap(), 1);
        assert_eq!(
            lp.modify(r.as_raw_fd(), IN | OUT | ONESHOT | EXCLUSIVE | RDHUP),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            lp.registered_events(r.as_raw_fd()),
            Some(IN | ONESHOT),
            "unchanged"
        );
        assert_eq!(
            lp.poll(0).unwrap(),
            0,
            "still disarmed: the byte is unread but ONESHOT fired"
        );
        lp.modify(r.as_raw_fd(), IN | ONESHOT).unwrap();
        assert_eq!(lp.poll(0).unwrap(), 1, "modify re-arms it");
        assert_eq!(hits.get(), 2);
    }
}
