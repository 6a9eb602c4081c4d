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

use crate::poller::{EpollEvent, Poller, ms_round_up};
use crate::sys::signal::{self, SigSet};
use crate::sys::{self, Errno, Result, eventfd};
use crate::timers::TimerQueue;
use crate::trace::trace;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

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
/// A signal callback: `(loop, signal number)`.
pub type SignalCallback = Rc<dyn Fn(&EventLoop, i32)>;
/// A function posted from any thread to run once on the loop's thread.
pub type Posted = Box<dyn FnOnce(&EventLoop) + Send>;

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

/// The part of a loop other threads may touch: a stop flag, the waker eventfd
/// and the queue of posted functions.
///
/// `wake` and `stop` are async-signal-safe (an atomic store and one `write(2)`);
/// `post` takes a mutex, so it is thread-safe but not async-signal-safe.
pub struct Remote {
    stop: AtomicBool,
    waker: OwnedFd,
    posted: AtomicBool,
    posts: Mutex<PostQueue>,
}

#[derive(Default)]
struct PostQueue {
    closed: bool,
    queue: VecDeque<Posted>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("stop", &self.stop)
            .field("waker", &self.waker)
            .finish()
    }
}

impl Remote {
    /// Makes a blocked `poll` return (once) without running a callback.
    pub fn wake(&self) -> Result<()> {
        eventfd::signal(&self.waker)
    }

    /// Asks `run` to return [`RunExit::Stopped`] after the current iteration (or
    /// at once, if called before `run`): the request is remembered until a `run`
    /// consumes it.
    pub fn stop(&self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        self.wake()
    }

    /// Queues `f` to run once on the loop's thread, in the next iteration, after
    /// everything posted before it. `ESHUTDOWN` once the loop is being freed.
    pub fn post(&self, f: Posted) -> Result<()> {
        {
            let mut q = self.posts.lock().unwrap_or_else(|p| p.into_inner());
            if q.closed {
                return Err(Errno(libc::ESHUTDOWN));
            }
            q.queue.push_back(f);
        }
        self.posted.store(true, Ordering::Release);
        self.wake()
    }

    /// Refuses further posts and returns those not yet run (the loop is going away).
    pub fn close_posts(&self) -> Vec<Posted> {
        let mut q = self.posts.lock().unwrap_or_else(|p| p.into_inner());
        q.closed = true;
        q.queue.drain(..).collect()
    }

    fn take_posts(&self) -> VecDeque<Posted> {
        // Load first: the common case (nothing posted) then costs no locked instruction.
        if !self.posted.load(Ordering::Acquire) || !self.posted.swap(false, Ordering::AcqRel) {
            return VecDeque::new();
        }
        let mut q = self.posts.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut q.queue)
    }

    fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn take_stop(&self) -> bool {
        // Load first: the common case (no stop) then costs no locked instruction.
        self.stop.load(Ordering::Acquire) && self.stop.swap(false, Ordering::AcqRel)
    }
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

/// Signals watched through one signalfd per loop.
struct Signals {
    fd: Option<Rc<OwnedFd>>,
    mask: SigSet,
    handlers: HashMap<i32, SignalCallback>,
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
        Self::with_poller(Poller::from_fd(epfd))
            .map_err(|(e, p)| (e, p.into_fd().expect("poller not closed")))
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
            remote: Arc::new(Remote {
                stop: AtomicBool::new(false),
                waker,
                posted: AtomicBool::new(false),
                posts: Mutex::new(PostQueue::default()),
            }),
            registry: RefCell::new(Registry {
                slots: Vec::new(),
                active: 0,
                next_generation: 1,
            }),
            timers: RefCell::new(TimerQueue::default()),
            signals: RefCell::new(Signals {
                fd: None,
                mask: SigSet::empty(),
                handlers: HashMap::new(),
            }),
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
        self.poller
            .fileno()
            .expect("the loop's poller is never closed")
    }

    /// The thread-safe handle for `stop` and `wake`.
    pub fn remote(&self) -> &Arc<Remote> {
        &self.remote
    }

    /// Same as `self.remote().stop()`.
    pub fn stop(&self) -> Result<()> {
        self.remote.stop()
    }

    /// Same as `self.remote().wake()`.
    pub fn wake(&self) -> Result<()> {
        self.remote.wake()
    }

    /// The loop's cached monotonic time in nanoseconds: read once after each
    /// `epoll_wait` and after each callback (the reads that time callbacks), so
    /// inside a callback it is the time the callback started. Cheaper than a
    /// clock read; use it for timestamps that need ms, not ns, accuracy.
    pub fn now_ns(&self) -> u64 {
        self.now.get()
    }

    fn tick(&self) -> u64 {
        let t = sys::monotonic_ns();
        self.now.set(t);
        t
    }

    /// Makes dropping this loop leave the post queue alone (its lock may be
    /// held forever in a forked child); queued posts are dropped with the
    /// last [`Remote`].
    pub fn forget_posts_on_drop(&self) {
        self.forked.set(true);
    }

    /// True while `poll` (or `run`) is dispatching on this loop.
    pub fn is_dispatching(&self) -> bool {
        self.dispatching.get()
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

    /// Queues `f` to run on this loop's thread in the next iteration (from any
    /// thread, through [`Remote::post`]).
    pub fn post(&self, f: Posted) -> Result<()> {
        self.remote.post(f)
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
    /// Errors: `EBUSY` (called from one of this loop's callbacks), `EINVAL`
    /// (`timeout_ms < -1`), or an `epoll_wait` error.
    pub fn poll(&self, timeout_ms: i32) -> Result<usize> {
        let _guard = DispatchGuard::enter(&self.dispatching)?;
        if timeout_ms < -1 {
            return Err(Errno::EINVAL);
        }
        let mut wait_ms = timeout_ms;
        let next_timer = self.timers.borrow_mut().next_deadline();
        if let Some(deadline) = next_timer {
            let now = sys::monotonic_ns();
            let until = if deadline <= now {
                0
            } else {
                ms_round_up(deadline - now)
            };
            wait_ms = if wait_ms < 0 {
                until
            } else {
                wait_ms.min(until)
            };
        }

        let mut batch = self.batch.take();
        if batch.is_empty() {
            batch = vec![EpollEvent { events: 0, u64: 0 }; INITIAL_BATCH];
        }
        let remote = &self.remote;
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
        let mut t_prev = self.tick();
        for f in remote.take_posts() {
            trace!("posted function: callback");
            f(self);
            ran += 1;
            let t = self.tick();
            self.stats.callback_ran(t.saturating_sub(t_prev));
            t_prev = t;
        }
        for ev in &batch[..n] {
            let (tok, bits) = (ev.u64, ev.events);
            if tok == WAKER_TOKEN {
                let _ = eventfd::drain(&remote.waker);
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
            ran += 1;
            let t = self.tick();
            self.stats.callback_ran(t.saturating_sub(t_prev));
            t_prev = t;
        }
        if n == batch.len() && batch.len() < MAX_BATCH {
            batch.resize(batch.len() * 2, EpollEvent { events: 0, u64: 0 });
        }
        self.batch.set(batch);

        let now = t_prev;
        let id_limit = self.timers.borrow().next_id();
        loop {
            let due = self.timers.borrow_mut().pop_due(now, id_limit);
            let Some((id, cb)) = due else { break };
            trace!("timer {id}: callback");
            cb(self, id);
            ran += 1;
            StatCells::add(&self.stats.timers_fired, 1);
            let t = self.tick();
            self.stats.callback_ran(t.saturating_sub(t_prev));
            t_prev = t;
        }
        Ok(ran)
    }

    /// Polls until [`EventLoop::stop`] is called or nothing is left to wait for.
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
                return Ok(RunExit::Idle);
            }
            self.poll(-1)?;
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
mod tests {
    use super::*;
    use std::os::fd::{FromRawFd, IntoRawFd};

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: test helper; `fds` has room for two descriptors.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) },
            0
        );
        // SAFETY: pipe2 returned two new descriptors we own.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn write1(fd: &OwnedFd) {
        // SAFETY: test helper; writes one byte from a static buffer.
        assert_eq!(
            unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) },
            1
        );
    }

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
        assert!(!lp.is_dispatching());
    }

    #[test]
    fn stop_before_run_is_remembered_once() {
        let lp = EventLoop::new().unwrap();
        lp.timer_start(60_000, 0, Rc::new(|_: &EventLoop, _| {}));
        lp.stop().unwrap();
        assert_eq!(lp.run().unwrap(), RunExit::Stopped);
        assert_eq!(lp.poll(0).unwrap(), 0);
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
        // SAFETY: reclaim ownership of the descriptor we just released, so it closes.
        drop(unsafe { OwnedFd::from_raw_fd(raw) });
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
}

#[cfg(test)]
mod post_and_signal_tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn posts_from_threads_run_on_the_loop_in_order() {
        let lp = EventLoop::new().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let me = std::thread::current().id();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let remote = lp.remote().clone();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let seen = seen.clone();
                        remote
                            .post(Box::new(move |_: &EventLoop| {
                                assert_eq!(std::thread::current().id(), me);
                                seen.lock().unwrap().push((t, i));
                            }))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut ran = 0;
        while ran < 4000 {
            ran += lp.poll(1000).unwrap();
        }
        assert_eq!(ran, 4000);
        let seen = seen.lock().unwrap();
        for t in 0..4 {
            let mine: Vec<i32> = seen.iter().filter(|x| x.0 == t).map(|x| x.1).collect();
            assert_eq!(
                mine,
                (0..1000).collect::<Vec<_>>(),
                "thread {t} out of order"
            );
        }
    }

    #[test]
    fn posts_after_free_are_refused_and_pending_ones_dropped() {
        let lp = EventLoop::new().unwrap();
        let remote = lp.remote().clone();
        let ran = Arc::new(AtomicUsize::new(0));
        let r2 = ran.clone();
        remote
            .post(Box::new(move |_: &EventLoop| {
                r2.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap();
        drop(lp);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(
            remote.post(Box::new(|_: &EventLoop| {})).err(),
            Some(Errno(libc::ESHUTDOWN))
        );
    }

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
        // SAFETY: sends SIGUSR2 to this very thread, where it is blocked.
        assert_eq!(
            unsafe { libc::pthread_kill(libc::pthread_self(), libc::SIGUSR2) },
            0
        );
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

#[cfg(test)]
mod regression_tests {
    use super::*;
    use std::os::fd::FromRawFd;

    /// Found by the api_sequence fuzzer: a modify refused for an invalid
    /// EXCLUSIVE combination did DEL + failed ADD + restoring ADD, and the
    /// restoring ADD re-armed a ONESHOT registration that had already fired.
    #[test]
    fn a_refused_exclusive_modify_does_not_rearm_a_fired_oneshot() {
        let mut p = [0; 2];
        // SAFETY: `p` has room for two descriptors.
        assert_eq!(
            unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) },
            0
        );
        // SAFETY: pipe2 returned two new descriptors we own.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
        let lp = EventLoop::new().unwrap();
        let hits = Rc::new(Cell::new(0));
        let h = hits.clone();
        lp.register(
            r.as_raw_fd(),
            IN | ONESHOT,
            Rc::new(move |_: &EventLoop, _, _| h.set(h.get() + 1)),
        )
        .unwrap();
        // SAFETY: writes one byte from a static buffer into our pipe.
        assert_eq!(
            unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) },
            1
        );
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
