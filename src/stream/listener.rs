//! [`Listener`]: a listening socket on a loop that accepts until `EAGAIN` and
//! survives `EMFILE`/`ENFILE` with libuv's reserve-fd trick (close the spare
//! descriptor, accept and close the pending connection, reopen the spare), so a
//! full descriptor table neither kills the listener nor makes it spin; if even
//! that fails, accepting pauses for [`ACCEPT_BACKOFF_MS`].

use super::{ACCEPT_BACKOFF_MS, ACCEPTS_PER_EVENT, TcpStats};
use crate::event_loop::{EventLoop, IN};
use crate::sys::{Errno, Result, socket};
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

/// Called for each accepted connection with its socket.
pub type AcceptCallback = Box<dyn Fn(&EventLoop, OwnedFd)>;

/// A listening socket registered on a loop.
pub struct Listener {
    fd: OwnedFd,
    reserve: RefCell<Option<OwnedFd>>,
    on_accept: AcceptCallback,
    stats: std::sync::Arc<TcpStats>,
    closed: Cell<bool>,
    backoff_timer: Cell<u64>,
    on_error: Box<dyn Fn(Errno)>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener").field("fd", &self.fd).finish()
    }
}

impl Listener {
    /// Registers a listening socket (from [`super::bind`]) on `lp`.
    /// `on_error` hears about each failed accept (after it was handled).
    pub fn open(
        lp: &EventLoop,
        fd: OwnedFd,
        stats: std::sync::Arc<TcpStats>,
        on_accept: AcceptCallback,
        on_error: Box<dyn Fn(Errno)>,
    ) -> Result<Rc<Listener>> {
        let l = Rc::new(Listener {
            fd,
            reserve: RefCell::new(socket::open_reserve().ok()),
            on_accept,
            stats,
            closed: Cell::new(false),
            backoff_timer: Cell::new(0),
            on_error,
        });
        let l2 = l.clone();
        lp.register(
            l.fd.as_raw_fd(),
            IN,
            Rc::new(move |lp: &EventLoop, _fd, _ev| l2.accept_ready(lp)),
        )?;
        Ok(l)
    }

    /// Stops accepting and unregisters (the socket closes when the last reference goes).
    pub fn close(&self, lp: &EventLoop) {
        if self.closed.replace(true) {
            return;
        }
        let t = self.backoff_timer.replace(0);
        if t != 0 {
            let _ = lp.timer_stop(t);
        }
        let _ = lp.unregister(self.fd.as_raw_fd());
    }

    fn accept_ready(self: &Rc<Self>, lp: &EventLoop) {
        for _ in 0..ACCEPTS_PER_EVENT {
            if self.closed.get() {
                return;
            }
            match socket::accept(&self.fd) {
                Ok(fd) => (self.on_accept)(lp, fd),
                Err(Errno::EAGAIN) => return,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNABORTED | Errno::EPROTO) => continue,
                Err(e @ (Errno::EMFILE | Errno::ENFILE)) => {
                    TcpStats::add(&self.stats.accept_errors, 1);
                    (self.on_error)(e);
                    if !self.shed_one() {
                        self.back_off(lp);
                        return;
                    }
                }
                Err(e) => {
                    // ENOBUFS, ENOMEM and friends: transient; pause instead of spinning.
                    TcpStats::add(&self.stats.accept_errors, 1);
                    (self.on_error)(e);
                    self.back_off(lp);
                    return;
                }
            }
        }
    }

    /// The reserve-fd trick: frees the spare descriptor, accepts the pending
    /// connection and closes it at once (the client sees a clean close, the
    /// backlog shrinks), then takes the spare back. False when it could not help.
    fn shed_one(&self) -> bool {
        let Some(spare) = self.reserve.borrow_mut().take() else {
            return false;
        };
        drop(spare);
        let shed = socket::accept(&self.fd);
        let ok = shed.is_ok();
        if ok {
            TcpStats::add(&self.stats.rejected, 1);
            TcpStats::add(&self.stats.accepted, 1);
            TcpStats::add(&self.stats.closed, 1);
        }
        drop(shed);
        *self.reserve.borrow_mut() = socket::open_reserve().ok();
        ok
    }

    fn back_off(self: &Rc<Self>, lp: &EventLoop) {
        if self.backoff_timer.get() != 0 || lp.modify(self.fd.as_raw_fd(), 0).is_err() {
            return;
        }
        self.rearm_later(lp);
    }

    /// Re-arms accepting after [`ACCEPT_BACKOFF_MS`]. Should re-arming fail
    /// (`epoll_ctl`), it tries again one period later: giving up would leave the
    /// listener disarmed, accepting nothing ever again (found by fault injection).
    fn rearm_later(self: &Rc<Self>, lp: &EventLoop) {
        let l = self.clone();
        let id = lp.timer_start(
            ACCEPT_BACKOFF_MS,
            0,
            Rc::new(move |lp: &EventLoop, _| {
                l.backoff_timer.set(0);
                if !l.closed.get() {
                    if l.reserve.borrow().is_none() {
                        *l.reserve.borrow_mut() = socket::open_reserve().ok();
                    }
                    if lp.modify(l.fd.as_raw_fd(), IN).is_err() {
                        l.rearm_later(lp);
                    }
                }
            }),
        );
        self.backoff_timer.set(id);
    }
}
