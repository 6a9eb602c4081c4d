//! [`Poller`]: Python's `select.epoll` in safe Rust.
//!
//! A thin object over one epoll descriptor: `register`, `modify`, `unregister`
//! and `wait`, with a caller-chosen 64-bit token per registration. It keeps no
//! registry of its own; [`crate::event_loop::EventLoop`] builds one on top.
//!
//! # Notes
//! - `wait` retries `EINTR` with the remaining time, as Python does since PEP 475.
//! - Timeouts are whole milliseconds; [`ms_round_up`] converts durations rounding
//!   *up*, so a sleep never ends before the deadline it was computed for.

use crate::sys::{self, Errno, Result, epoll};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub use crate::sys::epoll::EpollEvent;

/// One epoll instance. Dropping it closes the descriptor.
#[derive(Debug)]
pub struct Poller {
    fd: OwnedFd,
}

impl Poller {
    /// `select.epoll()`: a new epoll instance (close-on-exec).
    pub fn new() -> Result<Poller> {
        Ok(Poller {
            fd: epoll::create()?,
        })
    }

    /// `select.epoll.fromfd()`: adopts an existing epoll descriptor.
    pub fn from_fd(fd: OwnedFd) -> Poller {
        Poller { fd }
    }

    /// Gives the descriptor back without closing it.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }

    /// `.fileno()`: the epoll descriptor.
    pub fn fileno(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// `.register()`: `EPOLL_CTL_ADD` with `token` as the event data.
    pub fn register(&self, fd: RawFd, events: u32, token: u64) -> Result<()> {
        epoll::add(&self.fd, fd, events, token)
    }

    /// `.modify()`: `EPOLL_CTL_MOD`.
    pub fn modify(&self, fd: RawFd, events: u32, token: u64) -> Result<()> {
        epoll::modify(&self.fd, fd, events, token)
    }

    /// `.unregister()`: `EPOLL_CTL_DEL`.
    pub fn unregister(&self, fd: RawFd) -> Result<()> {
        epoll::delete(&self.fd, fd)
    }

    /// `.poll()`: waits up to `timeout_ms` (-1 = forever, 0 = no wait) for events
    /// and fills `buf` from the front; returns how many were filled.
    ///
    /// `EINTR` is retried with the time that remains; when none remains, 0 is
    /// returned. `before_retry` runs before each retry; returning `false` from it
    /// makes `wait` return 0 at once (the loop uses this to honour a stop request
    /// made from a signal handler).
    pub fn wait(
        &self,
        buf: &mut [EpollEvent],
        timeout_ms: i32,
        mut before_retry: impl FnMut() -> bool,
    ) -> Result<usize> {
        let fd = &self.fd;
        if timeout_ms < -1 {
            return Err(Errno::EINVAL);
        }
        let deadline =
            (timeout_ms > 0).then(|| sys::monotonic_ns() + timeout_ms as u64 * 1_000_000);
        let mut wait_ms = timeout_ms;
        loop {
            match epoll::wait(fd, buf, wait_ms) {
                Err(Errno::EINTR) => {
                    if !before_retry() {
                        return Ok(0);
                    }
                    if let Some(d) = deadline {
                        let now = sys::monotonic_ns();
                        if now >= d {
                            return Ok(0);
                        }
                        wait_ms = ms_round_up(d - now);
                    }
                }
                other => return other,
            }
        }
    }
}

/// Nanoseconds to whole milliseconds, rounded up and clamped to `i32::MAX`.
pub fn ms_round_up(ns: u64) -> i32 {
    let ms = ns.div_ceil(1_000_000);
    ms.min(i32::MAX as u64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::eventfd;
    use std::os::fd::AsRawFd;

    fn empty_events(n: usize) -> Vec<EpollEvent> {
        vec![EpollEvent { events: 0, u64: 0 }; n]
    }

    #[test]
    fn register_wait_modify_unregister() {
        let p = Poller::new().unwrap();
        let efd = eventfd::create().unwrap();
        p.register(efd.as_raw_fd(), libc::EPOLLIN as u32, 42)
            .unwrap();
        let mut buf = empty_events(8);
        assert_eq!(p.wait(&mut buf, 0, || true).unwrap(), 0);
        eventfd::signal(&efd).unwrap();
        assert_eq!(p.wait(&mut buf, 1000, || true).unwrap(), 1);
        let (data, ev) = (buf[0].u64, buf[0].events);
        assert_eq!(data, 42);
        assert_eq!(ev, libc::EPOLLIN as u32);
        p.modify(efd.as_raw_fd(), libc::EPOLLOUT as u32, 7).unwrap();
        assert_eq!(p.wait(&mut buf, 0, || true).unwrap(), 1);
        assert_eq!({ buf[0].u64 }, 7);
        p.unregister(efd.as_raw_fd()).unwrap();
        assert_eq!(p.wait(&mut buf, 0, || true).unwrap(), 0);
        assert_eq!(p.unregister(efd.as_raw_fd()), Err(Errno::ENOENT));
    }

    #[test]
    fn timeout_is_honoured_and_rounds_up() {
        assert_eq!(ms_round_up(1), 1);
        assert_eq!(ms_round_up(1_000_000), 1);
        assert_eq!(ms_round_up(1_000_001), 2);
        assert_eq!(ms_round_up(u64::MAX), i32::MAX);
        let p = Poller::new().unwrap();
        let mut buf = empty_events(4);
        let t0 = sys::monotonic_ns();
        assert_eq!(p.wait(&mut buf, 30, || true).unwrap(), 0);
        assert!(sys::monotonic_ns() - t0 >= 30_000_000);
        assert_eq!(p.wait(&mut buf, -2, || true), Err(Errno::EINVAL));
    }
}
