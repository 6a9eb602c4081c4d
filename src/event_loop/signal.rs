//! Signals on the loop: one signalfd per loop, created with the first
//! `signal_start` and registered like any fd, its mask updated with each
//! start and stop, closed with the last stop.

use super::{EventLoop, IN};
use crate::sys::signal::{self, SigSet};
use crate::sys::{Errno, Result};
use crate::trace::trace;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

/// A signal callback: `(loop, signal number)`.
pub type SignalCallback = Rc<dyn Fn(&EventLoop, i32)>;

/// Signals watched through one signalfd per loop.
pub(super) struct Signals {
    pub(super) fd: Option<Rc<OwnedFd>>,
    pub(super) mask: SigSet,
    pub(super) handlers: HashMap<i32, SignalCallback>,
}

impl Signals {
    pub(super) fn new() -> Signals {
        Signals {
            fd: None,
            mask: SigSet::empty(),
            handlers: HashMap::new(),
        }
    }
}

impl EventLoop {
    /// Calls `cb` on the loop thread each time `signo` arrives, through a signalfd.
    ///
    /// The signal must be blocked in every thread (see [`signal::block`]), or its
    /// default action runs instead; so that the mistake cannot pass silently,
    /// this refuses with [`Errno::ENOTBLOCKED`] when `signo` is not blocked in
    /// the calling thread. Errors: `EINVAL` (bad number, `SIGKILL`/`SIGSTOP`),
    /// `ENOTBLOCKED` (not blocked), `EEXIST` (already watched on this loop),
    /// `EMFILE`, `ENOMEM`.
    pub fn signal_start(&self, signo: i32, cb: SignalCallback) -> Result<()> {
        if signo <= 0
            || signo == libc::SIGKILL
            || signo == libc::SIGSTOP
            || signo > libc::SIGRTMAX()
        {
            return Err(Errno::EINVAL);
        }
        if !signal::thread_mask()?.contains(signo) {
            return Err(Errno::ENOTBLOCKED);
        }
        let mut sig = self.signals.borrow_mut();
        if sig.handlers.contains_key(&signo) {
            return Err(Errno::EEXIST);
        }
        let mut mask = sig.mask;
        mask.add(signo)?;
        match &sig.fd {
            Some(fd) => signal::signalfd_set(fd, &mask)?,
            None => {
                let fd = Rc::new(signal::signalfd_new(&mask)?);
                let f2 = fd.clone();
                let raw = fd.as_raw_fd();
                self.register(
                    raw,
                    IN,
                    Rc::new(move |lp: &EventLoop, _, _| lp.dispatch_signals(&f2)),
                )?;
                sig.fd = Some(fd);
            }
        }
        sig.mask = mask;
        sig.handlers.insert(signo, cb);
        Ok(())
    }

    /// Stops watching `signo` (it stays blocked). `ENOENT` if not watched here.
    pub fn signal_stop(&self, signo: i32) -> Result<()> {
        let (cb, fd_to_close) = {
            let mut sig = self.signals.borrow_mut();
            let cb = sig.handlers.remove(&signo).ok_or(Errno::ENOENT)?;
            let mut mask = sig.mask;
            mask.remove(signo)?;
            sig.mask = mask;
            if sig.handlers.is_empty() {
                (cb, sig.fd.take())
            } else {
                if let Some(fd) = &sig.fd {
                    signal::signalfd_set(fd, &mask)?;
                }
                (cb, None)
            }
        };
        if let Some(fd) = fd_to_close {
            self.unregister(fd.as_raw_fd())?;
        }
        drop(cb);
        Ok(())
    }

    fn dispatch_signals(&self, fd: &OwnedFd) {
        // Bounded: at most a batch of pending signals per readiness event.
        for _ in 0..64 {
            let signo = match signal::signalfd_read(fd) {
                Ok(Some(s)) => s,
                Ok(None) | Err(_) => return,
            };
            let cb = self.signals.borrow().handlers.get(&signo).cloned();
            if let Some(cb) = cb {
                trace!("signal {signo}: callback");
                cb(self, signo);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys;
    use std::cell::Cell;

    #[test]
    fn signals_reach_the_loop_through_signalfd() {
        // Thread-directed, and blocked in this thread only: safe beside other tests.
        signal::block(libc::SIGUSR2).unwrap();
        let lp = EventLoop::new().unwrap();
        let got = Rc::new(Cell::new(0));
        let g = got.clone();
        assert_eq!(
            lp.signal_start(libc::SIGKILL, Rc::new(|_: &EventLoop, _| {})),
            Err(Errno::EINVAL)
        );
        // SIGUSR1 is not blocked in this thread (nothing in the unit tests blocks it).
        assert!(!signal::thread_mask().unwrap().contains(libc::SIGUSR1));
        assert_eq!(
            lp.signal_start(libc::SIGUSR1, Rc::new(|_: &EventLoop, _| {})),
            Err(Errno::ENOTBLOCKED)
        );
        lp.signal_start(
            libc::SIGUSR2,
            Rc::new(move |_: &EventLoop, s| g.set(g.get() + s)),
        )
        .unwrap();
        assert_eq!(
            lp.signal_start(libc::SIGUSR2, Rc::new(|_: &EventLoop, _| {})),
            Err(Errno::EEXIST)
        );
        // To this very thread, where it is blocked.
        sys::testing::raise_in_thread(libc::SIGUSR2);
        let deadline = sys::monotonic_ns() + 5_000_000_000;
        while got.get() == 0 && sys::monotonic_ns() < deadline {
            lp.poll(100).unwrap();
        }
        assert_eq!(got.get(), libc::SIGUSR2);
        lp.signal_stop(libc::SIGUSR2).unwrap();
        assert_eq!(lp.signal_stop(libc::SIGUSR2), Err(Errno::ENOENT));
        assert!(lp.is_idle(), "the signalfd is gone with the last signal");
    }
}
