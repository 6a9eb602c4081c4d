//! [`EventLoop`]: the poller, a registry of callbacks, timers and a cross-thread waker.
//!
//! Single-threaded: one thread drives a loop at a time. Every method takes
//! `&self` and keeps its internal borrows short, so a callback (which receives
//! `&EventLoop`) may call any method re-entrantly; only `poll` and `run` refuse
//! with `EBUSY` while a dispatch is in progress. The only state shared with
//! other threads is [`Remote`] (the stop flag and the waker eventfd).
//!
//! # Dispatch rules
//! - Each registration carries a generation, stored in the epoll token beside the
//!   fd (`gen << 32 | fd`). An event is delivered only if the fd's slot is still
//!   registered with that same generation, so an event for a registration that
//!   was removed (or removed and re-added) earlier in the same batch is dropped.
//! - Due timers run after the fd callbacks of the same `poll`; timers started
//!   while timers run wait for the next `poll`.
//! - `EINTR` is retried with the remaining time (PEP 475), except after a stop
//!   request made from a signal handler.
//! - A stop request is consumed at the end of each `poll` and each `run`
//!   (libuv's rule for `uv_stop`): `poll` with a stop pending does not block,
//!   `run` returns [`RunExit::Stopped`] when it consumed one. A stop never
//!   outlives the call that saw it, so it cannot end a later `run` at once.

mod remote;
mod signal;
mod timers;

pub use remote::Remote;

use crate::poller::{EpollEvent, Poller, ms_round_up};
use crate::sys::{self, Errno, Result, eventfd};
use crate::trace::trace;
use signal::Signals;
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use timers::TimerQueue;

/// Readable (`EPOLLIN`).
pub const IN: u32 = libc::EPOLLIN as u32;
/// Writable (`EPOLLOUT`).
pub const OUT: u32 = libc::EPOLLOUT as u32;
/// Urgent data (`EPOLLPRI`).
pub const PRI: u32 = libc::EPOLLPRI as u32;
/// Error condition (`EPOLLERR`, always reported).
pub const ERR: u32 = libc::EPOLLERR as u32;
/// Hang-up (`EPOLLHUP`, always reported).
pub const HUP: u32 = libc::EPOLLHUP as u32;
/// Peer closed its writing half (`EPOLLRDHUP`).
pub const RDHUP: u32 = libc::EPOLLRDHUP as u32;
/// Edge-triggered (`EPOLLET`).
pub const ET: u32 = libc::EPOLLET as u32;
/// Disable after one event until `modify` (`EPOLLONESHOT`).
pub const ONESHOT: u32 = libc::EPOLLONESHOT as u32;
/// Wake one of several epoll sets waiting on the same fd (`EPOLLEXCLUSIVE`).
pub const EXCLUSIVE: u32 = libc::EPOLLEXCLUSIVE as u32;
/// The bits the kernel accepts beside `EXCLUSIVE` (`EPOLLEXCLUSIVE_OK_BITS`).
const EXCLUSIVE_OK: u32 = IN | OUT | ERR | HUP | ET | EXCLUSIVE;
/// Every bit `register` and `modify` accept.
pub const ALLOWED_EVENTS: u32 = IN | OUT | PRI | ERR | HUP | RDHUP | ET | ONESHOT | EXCLUSIVE;

const WAKER_TOKEN: u64 = u64::MAX;
const INITIAL_BATCH: usize = 64;
const MAX_BATCH: usize = 1024;

/// An fd callback: `(loop, fd, events)`.
pub type IoCallback = Rc<dyn Fn(&EventLoop, RawFd, u32)>;
/// A timer callback: `(loop, timer id)`.
pub type TimerCallback = Rc<dyn Fn(&EventLoop, u64)>;

/// Why [`EventLoop::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunExit {
    /// Nothing registered and no timer pending.
    Idle = 0,
    /// [`Remote::stop`] (or [`EventLoop::stop`]) was called.
    Stopped = 1,
}

/// Counters kept by the loop (see `epoll_loop_stats` in the C API).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoopStats {
    pub iterations: u64,
    pub events: u64,
    pub callbacks: u64,
    pub timers_fired: u64,
    pub callback_ns: u64,
    pub slowest_callback_ns: u64,
    pub registered: u64,
    pub timers_pending: u64,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    events: u32,
    /// `Some` while registered.
    cb: Option<IoCallback>,
}

struct Registry {
    slots: Vec<Slot>,
    active: usize,
    next_generation: u32,
}

impl Registry {
    fn active_mut(&mut self, fd: RawFd) -> Option<&mut Slot> {
        self.slots.get_mut(fd as usize).filter(|s| s.cb.is_some())
    }
}

fn token(fd: RawFd, generation: u32) -> u64 {
    (u64::from(generation) << 32) | u64::from(fd as u32)
}

#[derive(Default)]
struct StatCells {
    iterations: Cell<u64>,
    events: Cell<u64>,
    callbacks: Cell<u64>,
    timers_fired: Cell<u64>,
    callback_ns: Cell<u64>,
    slowest_callback_ns: Cell<u64>,
}

impl StatCells {
    fn add(c: &Cell<u64>, n: u64) {
        c.set(c.get().wrapping_add(n));
    }

    fn callback_ran(&self, ns: u64) {
        Self::add(&self.callbacks, 1);
        Self::add(&self.callback_ns, ns);
        if ns > self.slowest_callback_ns.get() {
            self.slowest_callback_ns.set(ns);
        }
    }
}

/// Clears the "dispatching" flag however `poll` is left (return or unwind).
struct DispatchGuard<'a>(&'a Cell<bool>);

impl<'a> DispatchGuard<'a> {
    fn enter(flag: &'a Cell<bool>) -> Result<Self> {
        if flag.replace(true) {
            return Err(Errno::EBUSY);
        }
        Ok(DispatchGuard(flag))
    }
}

impl Drop for DispatchGuard<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// The event loop. See the module docs for the dispatch rules.
pub struct EventLoop {
    poller: Poller,
    remote: Arc<Remote>,
    registry: RefCell<Registry>,
    timers: RefCell<TimerQueue<TimerCallback>>,
    signals: RefCell<Signals>,
    batch: Cell<Vec<EpollEvent>>,
    dispatching: Cell<bool>,
    /// The monotonic time of the loop's last clock read (see [`EventLoop::now_ns`]).
    now: Cell<u64>,
    stats: StatCells,
    /// Dropped in a forked child: leave the post queue's lock alone.
    forked: Cell<bool>,
}

impl EventLoop {
    /// A loop on a new epoll instance.
    pub fn new() -> Result<EventLoop> {
        Self::with_poller(Poller::new()?).map_err(|(e, _)| e)
    }

    /// A loop on an existing epoll descriptor, which it then owns. On failure the
    /// descriptor is handed back unclosed with the error (`EINVAL`: not an epoll fd).
    pub fn from_fd(epfd: OwnedFd) -> std::result::Result<EventLoop, (Errno, OwnedFd)> {
        Self::with_poller(Poller::from_fd(epfd)).map_err(|(e, p)| (e, p.into_fd()))
    }

    fn with_poller(poller: Poller) -> std::result::Result<EventLoop, (Errno, Poller)> {
        let waker = match eventfd::create() {
            Ok(w) => w,
            Err(e) => return Err((e, poller)),
        };
        if let Err(e) = poller.register(waker.as_raw_fd(), IN, WAKER_TOKEN) {
            return Err((e, poller));
        }
        Ok(EventLoop {
            poller,
            remote: Arc::new(Remote::new(waker)),
            registry: RefCell::new(Registry {
                slots: Vec::new(),
                active: 0,
                next_generation: 1,
            }),
            timers: RefCell::new(TimerQueue::default()),
            signals: RefCell::new(Signals::new()),
            batch: Cell::new(Vec::new()),
            dispatching: Cell::new(false),
            now: Cell::new(sys::monotonic_ns()),
            stats: StatCells::default(),
            forked: Cell::new(false),
        })
    }

    /// The epoll descriptor (readable when events are pending; it can be
    /// registered in another loop to nest this one).
    pub fn fileno(&self) -> RawFd {
        self.poller.fileno()
    }

    /// The thread-safe handle for `stop` and `wake`.
    pub fn remote(&self) -> &Arc<Remote> {
        &self.remote
    }

    /// The loop's cached monotonic time in nanoseconds: read once after each
    /// `epoll_wait` and after each callback (the reads that time callbacks), so
    /// inside a callback it is the time the callback started. Cheaper than a
    /// clock read; use it for timestamps that need ms, not ns, accuracy.
    pub fn now_ns(&self) -> u64 {
        self.now.get()
    }

    /// Reads the clock into the cached time ([`EventLoop::now_ns`]).
    fn refresh_now(&self) -> u64 {
        let t = sys::monotonic_ns();
        self.now.set(t);
        t
    }

    /// Accounts for a callback that just returned: one more callback, and the
    /// time since `*started` (then `*started` is now, for the next one).
    fn callback_done(&self, ran: &mut usize, started: &mut u64) {
        *ran += 1;
        let t = self.refresh_now();
        self.stats.callback_ran(t.saturating_sub(*started));
        *started = t;
    }

    /// Makes dropping this loop leave the post queue alone (its lock may be
    /// held forever in a forked child); queued posts are dropped with the
    /// last [`Remote`].
    pub fn forget_posts_on_drop(&self) {
        self.forked.set(true);
    }

    fn check_args(fd: RawFd, events: u32) -> Result<()> {
        if fd < 0 {
            return Err(Errno::EBADF);
        }
        if events & !ALLOWED_EVENTS != 0 {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// Watches `fd` for `events` and calls `cb` when they occur.
    ///
    /// Errors: `EBADF` (negative or closed fd), `EINVAL` (unknown event bits, or a
    /// combination the kernel refuses), `EEXIST` (already registered here), `EPERM`
    /// (the fd does not support polling, e.g. a regular file), `ENOMEM`, `ENOSPC`.
    pub fn register(&self, fd: RawFd, events: u32, cb: IoCallback) -> Result<()> {
        Self::check_args(fd, events)?;
        let mut reg = self.registry.borrow_mut();
        let idx = fd as usize;
        if reg.slots.get(idx).is_some_and(|s| s.cb.is_some()) {
            return Err(Errno::EEXIST);
        }
        let generation = reg.next_generation;
        self.poller.register(fd, events, token(fd, generation))?;
        reg.next_generation = generation.wrapping_add(1).max(1);
        if reg.slots.len() <= idx {
            reg.slots.resize_with(idx + 1, Slot::default);
        }
        reg.slots[idx] = Slot {
            generation,
            events,
            cb: Some(cb),
        };
        reg.active += 1;
        Ok(())
    }

    /// Changes the events of a registered fd (its callback stays).
    ///
    /// `EXCLUSIVE` registrations cannot be changed with `EPOLL_CTL_MOD`, so when the
    /// old or new events contain it, this does `DEL` + `ADD`; if the `ADD` fails the
    /// old events are restored and the error returned. Should the restoring
    /// `ADD` fail too, the fd is no longer registered (its slot is freed): once
    /// its own `DEL` succeeded, a failed `modify` never leaves a slot claiming a
    /// registration the kernel does not have. When the kernel refuses the
    /// first step (`MOD`, or the `DEL`) because the fd was closed since it was
    /// registered (`EBADF`; `ENOENT` or `EPERM` when its number was reused),
    /// nothing is changed and the error returned: [`EventLoop::unregister`]
    /// then frees the slot.
    ///
    /// Errors: `EBADF`, `EINVAL` as for `register`; `ENOENT` (not registered
    /// here, or reused), `EPERM` (closed and reused by a file epoll cannot watch).
    pub fn modify(&self, fd: RawFd, events: u32) -> Result<()> {
        Self::check_args(fd, events)?;
        let mut reg = self.registry.borrow_mut();
        let slot = reg.active_mut(fd).ok_or(Errno::ENOENT)?;
        let tok = token(fd, slot.generation);
        if (slot.events | events) & EXCLUSIVE != 0 {
            // Refuse what the kernel would refuse *before* the DEL: restoring the
            // old registration with ADD would re-arm a fired ONESHOT (found by
            // the api_sequence fuzzer: a failed modify must change nothing).
            if events & EXCLUSIVE != 0 && events & !EXCLUSIVE_OK != 0 {
                return Err(Errno::EINVAL);
            }
            self.poller.unregister(fd)?;
            if let Err(e) = self.poller.register(fd, events, tok) {
                // Put the old registration back so nothing is lost. If even that
                // fails, the kernel no longer watches `fd`: free the slot rather
                // than claim a registration that delivers nothing.
                if self.poller.register(fd, slot.events, tok).is_err() {
                    let cb = slot.cb.take();
                    slot.events = 0;
                    reg.active -= 1;
                    drop(reg);
                    drop(cb);
                }
                return Err(e);
            }
        } else {
            self.poller.modify(fd, events, tok)?;
        }
        slot.events = events;
        Ok(())
    }

    /// Stops watching `fd` and drops its callback. Succeeds, and frees the slot,
    /// even when the fd was already closed, whatever its number refers to now.
    ///
    /// Errors: `EBADF` (negative fd), `ENOENT` (not registered here).
    pub fn unregister(&self, fd: RawFd) -> Result<()> {
        Self::check_args(fd, 0)?;
        let cb = {
            let mut reg = self.registry.borrow_mut();
            let slot = reg.active_mut(fd).ok_or(Errno::ENOENT)?;
            // `EPOLL_CTL_DEL` fails only when the number no longer names the
            // registered file: EBADF (closed), ENOENT (reused by a file this set
            // does not hold), EPERM (reused by one epoll cannot watch: a regular
            // file, a directory, /dev/null), EINVAL (by an epoll fd that is
            // this set). Then the registration is gone (the file was closed)
            // or unreachable by number (a dup of it lives on): either way the
            // slot is ours to free, whatever the kernel says. Keeping it would
            // keep `run` from ever going idle and the number from registering.
            let _ = self.poller.unregister(fd);
            let cb = slot.cb.take();
            slot.events = 0;
            reg.active -= 1;
            cb
        };
        // The callback (and whatever it owns) is dropped with no borrow held.
        drop(cb);
        Ok(())
    }

    /// The events `fd` is registered for, or `None` when it is not registered.
    #[cfg(test)]
    pub fn registered_events(&self, fd: RawFd) -> Option<u32> {
        let reg = self.registry.borrow();
        reg.slots
            .get(usize::try_from(fd).ok()?)
            .filter(|s| s.cb.is_some())
            .map(|s| s.events)
    }

    /// Starts a timer: `cb` runs after `after_ms`, then every `repeat_ms` (0 = once).
    /// Returns its id (never 0, never reused within this loop's life).
    pub fn timer_start(&self, after_ms: u64, repeat_ms: u64, cb: TimerCallback) -> u64 {
        let ns = |ms: u64| ms.saturating_mul(1_000_000);
        self.timers
            .borrow_mut()
            .start(sys::monotonic_ns(), ns(after_ms), ns(repeat_ms), cb)
    }

    /// Stops a pending timer. Errors: `ENOENT` (unknown, stopped, or a one-shot
    /// timer that already fired).
    pub fn timer_stop(&self, id: u64) -> Result<()> {
        let found = self.timers.borrow_mut().stop(id);
        if found { Ok(()) } else { Err(Errno::ENOENT) }
    }

    /// True when nothing is registered and no timer is pending.
    pub fn is_idle(&self) -> bool {
        self.registry.borrow().active == 0 && self.timers.borrow().is_empty()
    }

    /// The loop's counters.
    pub fn stats(&self) -> LoopStats {
        let s = &self.stats;
        LoopStats {
            iterations: s.iterations.get(),
            events: s.events.get(),
            callbacks: s.callbacks.get(),
            timers_fired: s.timers_fired.get(),
            callback_ns: s.callback_ns.get(),
            slowest_callback_ns: s.slowest_callback_ns.get(),
            registered: self.registry.borrow().active as u64,
            timers_pending: self.timers.borrow().len() as u64,
        }
    }

    /// Waits once for events (up to `timeout_ms`: -1 forever, 0 no wait, shortened
    /// to the next timer's deadline), runs the callbacks of the ready fds, then the
    /// due timers. Returns the number of callbacks run (fd and timer alike).
    ///
    /// With a stop pending (requested before, or by a callback or another
    /// thread while it waits), it does not block: it waits with timeout 0,
    /// dispatches what is ready, and consumes the stop at the end.
    ///
    /// Errors: `EBUSY` (called from one of this loop's callbacks), `EINVAL`
    /// (`timeout_ms < -1`), or an `epoll_wait` error. A failed `poll` leaves a
    /// pending stop alone (a refused nested `poll` must not eat its `run`'s stop).
    pub fn poll(&self, timeout_ms: i32) -> Result<usize> {
        let n = self.poll_once(timeout_ms)?;
        self.remote.take_stop();
        Ok(n)
    }

    /// [`EventLoop::poll`] waiting at most until `deadline_ns` (monotonic, as
    /// [`EventLoop::now_ns`]), rounded up to whole milliseconds.
    pub fn poll_until(&self, deadline_ns: u64) -> Result<usize> {
        let left = deadline_ns.saturating_sub(sys::monotonic_ns());
        self.poll(ms_round_up(left))
    }

    /// One iteration of `poll`, leaving a stop request for the caller.
    fn poll_once(&self, timeout_ms: i32) -> Result<usize> {
        let _guard = DispatchGuard::enter(&self.dispatching)?;
        if timeout_ms < -1 {
            return Err(Errno::EINVAL);
        }
        let mut batch = self.batch.take();
        if batch.is_empty() {
            batch = vec![EpollEvent { events: 0, u64: 0 }; INITIAL_BATCH];
        }
        let remote = &self.remote;
        let wait_ms = self.wait_ms(timeout_ms);
        let n = match self
            .poller
            .wait(&mut batch, wait_ms, || !remote.stop_requested())
        {
            Ok(n) => n,
            Err(e) => {
                self.batch.set(batch);
                return Err(e);
            }
        };
        StatCells::add(&self.stats.iterations, 1);
        let mut ran = 0;
        let mut started = self.refresh_now();
        for f in remote.take_posts() {
            trace!("posted function: callback");
            f(self);
            self.callback_done(&mut ran, &mut started);
        }
        self.dispatch_events(&batch[..n], &mut ran, &mut started);
        if n == batch.len() && batch.len() < MAX_BATCH {
            batch.resize(batch.len() * 2, EpollEvent { events: 0, u64: 0 });
        }
        self.batch.set(batch);
        self.run_due_timers(&mut ran, &mut started);
        Ok(ran)
    }

    /// How long this iteration may wait: `timeout_ms`, 0 with a stop pending,
    /// shortened to the next timer's deadline (rounded up to whole ms).
    fn wait_ms(&self, timeout_ms: i32) -> i32 {
        if self.remote.stop_requested() {
            return 0;
        }
        let Some(deadline) = self.timers.borrow_mut().next_deadline() else {
            return timeout_ms;
        };
        let now = sys::monotonic_ns();
        let until = ms_round_up(deadline.saturating_sub(now));
        if timeout_ms < 0 {
            until
        } else {
            timeout_ms.min(until)
        }
    }

    /// Runs the callback of each ready registration, in kernel order; an
    /// event for a registration removed (or replaced) since is dropped.
    fn dispatch_events(&self, events: &[EpollEvent], ran: &mut usize, started: &mut u64) {
        for ev in events {
            let (tok, bits) = (ev.u64, ev.events);
            if tok == WAKER_TOKEN {
                self.remote.drain_waker();
                continue;
            }
            StatCells::add(&self.stats.events, 1);
            let fd = (tok & 0xffff_ffff) as u32 as RawFd;
            let generation = (tok >> 32) as u32;
            let cb = {
                let reg = self.registry.borrow();
                reg.slots
                    .get(fd as usize)
                    .filter(|s| s.generation == generation)
                    .and_then(|s| s.cb.clone())
            };
            let Some(cb) = cb else {
                trace!("fd {fd} events {bits:#x}: stale registration, dropped");
                continue;
            };
            trace!("fd {fd} events {bits:#x}: callback");
            cb(self, fd, bits);
            self.callback_done(ran, started);
        }
    }

    /// Runs the timers due at `*started`, in deadline order; timers started
    /// meanwhile wait for the next iteration (an id watermark).
    fn run_due_timers(&self, ran: &mut usize, started: &mut u64) {
        let now = *started;
        let id_limit = self.timers.borrow().next_id();
        loop {
            let due = self.timers.borrow_mut().pop_due(now, id_limit);
            let Some((id, cb)) = due else { break };
            trace!("timer {id}: callback");
            cb(self, id);
            StatCells::add(&self.stats.timers_fired, 1);
            self.callback_done(ran, started);
        }
    }

    /// Polls until [`EventLoop::stop`] is called or nothing is left to wait for.
    /// Returns [`RunExit::Stopped`] when it consumed a stop request (one made
    /// before `run` included: then it returns at once), else
    /// [`RunExit::Idle`]. Its iterations leave the stop for it to see.
    ///
    /// Errors: `EBUSY` (called from one of this loop's callbacks), or a `poll` error.
    pub fn run(&self) -> Result<RunExit> {
        if self.dispatching.get() {
            return Err(Errno::EBUSY);
        }
        loop {
            if self.remote.take_stop() {
                return Ok(RunExit::Stopped);
            }
            if self.is_idle() {
                // A stop that came meanwhile (another thread) ends here too:
                // no request outlives the run that saw it.
                return Ok(if self.remote.take_stop() {
                    RunExit::Stopped
                } else {
                    RunExit::Idle
                });
            }
            self.poll_once(-1)?;
        }
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        // Posts not yet run are dropped unrun; later posts fail with ESHUTDOWN.
        // In a forked child another thread of the parent may have held the
        // queue's lock at the fork: the queue then goes with the `Remote`.
        if !self.forked.get() {
            drop(self.remote.close_posts());
        }
        // Drop callbacks with no borrow held (their captures may be arbitrary).
        let slots = std::mem::take(&mut self.registry.get_mut().slots);
        drop(slots);
        let timers = std::mem::take(self.timers.get_mut());
        drop(timers);
        let handlers = std::mem::take(&mut self.signals.get_mut().handlers);
        drop(handlers);
    }
}

#[cfg(test)]
mod tests;
