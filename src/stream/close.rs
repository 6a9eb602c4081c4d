//! How a [`Conn`] ends: graceful close (flush, linger), bounded by the close
//! timeout; reset; the inactivity timeout; and the one delivery of `on_close`.

use super::conn::{Conn, Phase, sw};
use super::{LINGER_MS, LINGER_POLL_MS};
use crate::event_loop::EventLoop;
use crate::sys::{self, Errno, Result, socket};
use std::rc::Rc;

impl Conn {
    /// Stops delivering data, sends what is queued, then closes (`on_close(None)`).
    /// While connecting: with nothing queued it closes at once (no `on_open`);
    /// otherwise `on_open` still runs when the connect completes, the queue is
    /// sent, then the connection closes (a failed connect reports its error).
    ///
    /// The close timeout ([`Conn::set_close_timeout`], default
    /// [`super::CLOSE_TIMEOUT_MS`]) bounds all of it, from this call: the flush
    /// (a peer that stops reading would otherwise hold it forever), a connect
    /// still in progress, and the lingering below. When it expires the
    /// connection is reset: `on_close(ETIMEDOUT)`, or `on_close(None)` if it
    /// was lingering and the peer had acknowledged every byte (nothing is lost).
    ///
    /// # Implementation notes
    /// Closing a socket whose receive buffer holds unread bytes makes Linux send
    /// RST and drop what is still in flight to the peer, so a plain `close` after
    /// the flush could lose bytes already written. Unless the peer already sent
    /// EOF, the connection therefore "lingers" (as nginx's lingering close does):
    /// it sends FIN with `shutdown(SHUT_WR)`, reads and discards until the peer's
    /// EOF, then closes. After [`LINGER_MS`] it resets instead, cleanly, once
    /// the peer has acknowledged every byte (`SIOCOUTQ` is 0: the reset cannot
    /// destroy any); until then it keeps lingering, within the close timeout.
    /// A reset with bytes unacknowledged reports `ETIMEDOUT`.
    pub fn close(self: &Rc<Self>, lp: &EventLoop) {
        if self.is_closing() {
            return;
        }
        self.arm_close_deadline(lp);
        if self.is_connecting() {
            // Nothing to send: no need to wait for the connect, flush or linger.
            // Bytes written while connecting, though, go out once it completes
            // (`on_open` runs, then the flush closes): a close must not drop them.
            if self.queued() == 0 {
                self.close_now(lp, None);
            } else {
                self.set(sw::CLOSE_AFTER_CONNECT);
            }
            return;
        }
        // Open → Flushing.
        self.phase.set(Phase::Flushing);
        if self.queued() == 0 && !self.has(sw::FAILED) {
            self.finish_close(lp);
        } else {
            self.update_mask(lp);
        }
    }

    /// The queue is empty and a close was asked for (or EOF seen): close now if
    /// the peer is done sending, otherwise half-close and linger.
    pub(super) fn finish_close(self: &Rc<Self>, lp: &EventLoop) {
        if self.has(sw::PEER_EOF) || self.phase.get() == Phase::Lingering {
            self.close_now(lp, None);
            return;
        }
        if !self.has(sw::SHUT_DONE) && socket::shutdown_write(self.fd()).is_err() {
            self.close_now(lp, None);
            return;
        }
        // Flushing (or Open after the peer's EOF) → Lingering.
        self.phase.set(Phase::Lingering);
        self.set(sw::SHUT_DONE);
        self.stop_timer(lp);
        self.linger_for(lp, LINGER_MS);
        self.update_mask(lp);
    }

    /// Lingers `ms` more, then resets if the peer has acknowledged everything,
    /// else looks again every [`LINGER_POLL_MS`] (the close deadline, if any,
    /// ends it).
    fn linger_for(self: &Rc<Self>, lp: &EventLoop, ms: u64) {
        let weak = self.me.clone();
        let id = lp.timer_start(
            ms,
            0,
            Rc::new(move |lp: &EventLoop, _| {
                let Some(c) = weak.upgrade() else { return };
                c.timer.set(0);
                if c.is_closed() {
                    return;
                }
                if c.all_acknowledged() {
                    c.abort(lp, None);
                } else {
                    c.linger_for(lp, LINGER_POLL_MS);
                }
            }),
        );
        self.timer.set(id);
    }

    /// Lingering, and the peer acknowledged every byte (and our FIN): a reset
    /// now destroys nothing. False when unknown.
    fn all_acknowledged(&self) -> bool {
        self.phase.get() == Phase::Lingering && socket::unacked(self.fd()) == Ok(0)
    }

    /// Limits the whole of a close (flush, connect, linger): when it expires,
    /// the connection resets. `ms` 0: no limit (flushing may then wait forever
    /// for a peer that does not read; lingering waits until the peer has
    /// acknowledged every byte). Default [`super::CLOSE_TIMEOUT_MS`]. `EPIPE`
    /// once a close was asked for, or the connection is closed.
    pub fn set_close_timeout(&self, ms: u32) -> Result<()> {
        if self.is_closing() {
            return Err(Errno::EPIPE);
        }
        self.close_timeout_ms.set(ms);
        Ok(())
    }

    fn arm_close_deadline(self: &Rc<Self>, lp: &EventLoop) {
        let ms = self.close_timeout_ms.get();
        if ms == 0 {
            return;
        }
        let weak = self.me.clone();
        let id = lp.timer_start(
            u64::from(ms),
            0,
            Rc::new(move |lp: &EventLoop, _| {
                let Some(c) = weak.upgrade() else { return };
                c.close_timer.set(0);
                if c.is_closed() {
                    return;
                }
                let lost = !c.all_acknowledged();
                c.abort(lp, lost.then_some(Errno::ETIMEDOUT));
            }),
        );
        self.close_timer.set(id);
    }

    /// Closes an idle connection at once, without lingering: a FIN when nothing
    /// is queued (an idle peer has sent nothing we have not read), else a reset.
    /// `on_close(None)` or `on_close(ETIMEDOUT)`.
    pub fn close_idle(self: &Rc<Self>, lp: &EventLoop) {
        if self.queued() == 0 && !self.has(sw::FAILED) && !self.is_connecting() {
            self.close_now(lp, None);
        } else {
            self.abort(lp, Some(Errno::ETIMEDOUT));
        }
    }

    /// Closes at once, discarding the queue, with RST (`SO_LINGER` 0);
    /// `on_close(error)`.
    pub fn abort(self: &Rc<Self>, lp: &EventLoop, error: Option<Errno>) {
        if self.is_closed() {
            return;
        }
        let _ = socket::set_linger_zero(self.fd());
        self.close_now(lp, error);
    }

    /// Closes the connection after `ms` milliseconds without a successful read
    /// or write (or, while connecting, `ms` after this call):
    /// `on_close(ETIMEDOUT)`. 0 turns it off. One timer per period, not one
    /// per read.
    pub fn set_timeout(self: &Rc<Self>, lp: &EventLoop, ms: u32) -> Result<()> {
        if self.is_closing() {
            return Err(Errno::EPIPE);
        }
        self.timeout_ms.set(ms);
        self.stop_timer(lp);
        if self.is_connecting() {
            self.touch(lp);
        }
        if ms > 0 {
            self.arm_timeout(lp, u64::from(ms));
        }
        Ok(())
    }

    pub(super) fn stop_timer(&self, lp: &EventLoop) {
        let t = self.timer.replace(0);
        if t != 0 {
            let _ = lp.timer_stop(t);
        }
    }

    fn arm_timeout(self: &Rc<Self>, lp: &EventLoop, after: u64) {
        let weak = self.me.clone();
        let id = lp.timer_start(
            after,
            0,
            Rc::new(move |lp: &EventLoop, _| {
                let Some(c) = weak.upgrade() else { return };
                c.timer.set(0);
                let limit = u64::from(c.timeout_ms.get());
                if limit == 0 || matches!(c.phase.get(), Phase::Lingering | Phase::Closed) {
                    return;
                }
                let idle = (sys::monotonic_ns() / 1_000_000).saturating_sub(c.last_active_ms());
                if idle >= limit {
                    c.abort(lp, Some(Errno::ETIMEDOUT));
                } else {
                    c.arm_timeout(lp, limit - idle);
                }
            }),
        );
        self.timer.set(id);
    }

    /// Any phase → Closed: unregisters, drops the queue, and has `on_close`
    /// delivered from a zero-delay timer, never from inside the call that
    /// closed it (a handler may close a connection from anywhere and still use
    /// it until that call returns). Exactly once.
    pub(super) fn close_now(self: &Rc<Self>, lp: &EventLoop, error: Option<Errno>) {
        if self.is_closed() {
            return;
        }
        self.phase.set(Phase::Closed);
        self.stop_timer(lp);
        let t = self.close_timer.replace(0);
        if t != 0 {
            let _ = lp.timer_stop(t);
        }
        let _ = lp.unregister(self.fd());
        self.queue.borrow_mut().clear();
        self.closing_status.set(Some(error));
        // The timer holds the connection until delivery; the socket closes
        // when the last `Rc<Conn>` goes, after `on_close`.
        let me = self.clone();
        lp.timer_start(
            0,
            0,
            Rc::new(move |lp: &EventLoop, _| {
                if let Some(status) = me.closing_status.take() {
                    me.handler.on_close(lp, &me, status);
                }
            }),
        );
    }
}
