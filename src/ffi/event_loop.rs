//! `epoll_loop`: the loop object of the C API.

use super::conn::LoopStreams;
use super::guard::{boundary, code, guarded, write_out};
use super::handle::{self, EFORKED, Handle, Poison, Table};
use crate::event_loop::{self as el, EventLoop, IoCallback, Remote, RunExit, TimerCallback};
use crate::sys::{self, Errno};
use std::cell::RefCell;
use std::ffi::{c_int, c_void};
use std::os::fd::{IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Readable: data (or a new connection, or EOF) can be read. Same value as `EPOLLIN`.
pub const EPOLL_LOOP_IN: u32 = 0x001;
/// Urgent (out-of-band) data can be read. Same value as `EPOLLPRI`.
pub const EPOLL_LOOP_PRI: u32 = 0x002;
/// Writable. Same value as `EPOLLOUT`.
pub const EPOLL_LOOP_OUT: u32 = 0x004;
/// Error condition; always reported, need not be requested. Same value as `EPOLLERR`.
pub const EPOLL_LOOP_ERR: u32 = 0x008;
/// Hang-up; always reported, need not be requested. Same value as `EPOLLHUP`.
pub const EPOLL_LOOP_HUP: u32 = 0x010;
/// The peer shut down its writing half. Same value as `EPOLLRDHUP`.
pub const EPOLL_LOOP_RDHUP: u32 = 0x2000;
/// Deliver one event per incoming wake-up instead of a repeated one per ready
/// state (all waiters of an fd wake, only one epoll set each). Same value as
/// `EPOLLEXCLUSIVE`. The kernel cannot `EPOLL_CTL_MOD` such a registration, so
/// `epoll_loop_modify` does `DEL` + `ADD` for it.
pub const EPOLL_LOOP_EXCLUSIVE: u32 = 0x1000_0000;
/// Disable the registration after one event until `epoll_loop_modify` re-arms it.
/// The fd stays registered. Same value as `EPOLLONESHOT`.
pub const EPOLL_LOOP_ONESHOT: u32 = 0x4000_0000;
/// Edge-triggered: report a state change once; the callback must drain the fd
/// until `EAGAIN`. Same value as `EPOLLET`.
pub const EPOLL_LOOP_ET: u32 = 0x8000_0000;

/// An event loop: an epoll set, its registrations and callbacks, timers and a
/// waker. Opaque; create with `epoll_loop_new` or `epoll_loop_from_fd`, free with
/// `epoll_loop_free`. The pointer is a handle, not an address: a freed loop's
/// handle is refused (`-EINVAL`) for certain, however long after.
///
/// Lifetime: from `_new` until `_free`. Thread safety: one thread at a time
/// drives a loop (`_poll`/`_run` and every other call, and the calls on its
/// connections, listeners and attached servers); a call while another thread
/// is inside a call on the same loop is refused with `-EBUSY`. A loop that no
/// thread is using may move to another thread. Only `epoll_loop_stop`,
/// `epoll_loop_wake` and `epoll_loop_post` may be called from other threads at
/// any time (the first two from signal handlers too).
pub struct epoll_loop {
    _opaque: [u8; 0],
}

/// A loop as the C API keeps it (in [`LOOPS`]).
pub(crate) struct LoopState {
    poison: Poison,
    /// The thread inside a call on this loop (`sys::current_thread`), 0 when
    /// none: the owner check.
    owner: AtomicUsize,
    /// `handle::forks()` when the loop was made: a forked child refuses it.
    forks: u32,
    remote: Arc<Remote>,
    core: EventLoop,
    /// What the stream layer's C objects keep per loop.
    streams: LoopStreams,
    /// Handles of the echo servers attached to this loop, stopped at `_free`.
    servers: RefCell<Vec<Handle>>,
}

/// Every loop. A [`LoopState`] is reached by other threads only through
/// `remote` (`Sync`), `owner` and `poison` (atomics) and `forks` (immutable):
/// everything else only by the thread that holds the owner check.
pub(crate) static LOOPS: Table<LoopState> = Table::new(handle::TAG_LOOP);

/// The owner check held for one call (see [`LoopState::enter`]).
pub(crate) struct Owned<'a> {
    owner: &'a AtomicUsize,
    taken: bool,
}

impl Drop for Owned<'_> {
    fn drop(&mut self) {
        if self.taken {
            self.owner.store(0, Ordering::Release);
        }
    }
}

impl LoopState {
    /// The owner check: makes the calling thread the loop's owner for the
    /// length of a call, or refuses. A call made inside another call on this
    /// loop on the same thread (from a callback) is nested and allowed, except
    /// an `exclusive` one (`_poll`, `_run`, `_free`), which is `EBUSY` there.
    /// A call while another thread is inside one is `EBUSY`; a loop made
    /// before a `fork()`, in the child, `EPOLL_LOOP_EFORKED`. One load and, when
    /// not nested, one compare-and-swap.
    pub(crate) fn enter(&self, exclusive: bool) -> Result<Owned<'_>, Errno> {
        if self.forks != handle::forks() {
            return Err(EFORKED);
        }
        let me = sys::current_thread();
        if self.owner.load(Ordering::Relaxed) == me {
            if exclusive {
                return Err(Errno::EBUSY);
            }
            return Ok(Owned {
                owner: &self.owner,
                taken: false,
            });
        }
        self.owner
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .map_err(|_| Errno::EBUSY)?;
        Ok(Owned {
            owner: &self.owner,
            taken: true,
        })
    }

    /// True when this loop was made before the latest `fork()` (we are a child).
    pub(crate) fn is_parents(&self) -> bool {
        self.forks != handle::forks()
    }

    /// The Rust loop (for layers built on the C object).
    pub(crate) fn core(&self) -> &EventLoop {
        &self.core
    }

    /// The C connections' per-loop state.
    pub(crate) fn streams(&self) -> &LoopStreams {
        &self.streams
    }

    /// Records an attached echo server (stopped at `_free`).
    pub(crate) fn add_server(&self, h: Handle) {
        self.servers.borrow_mut().push(h);
    }

    /// Forgets an attached echo server that was stopped.
    pub(crate) fn remove_server(&self, h: Handle) {
        self.servers.borrow_mut().retain(|&s| s != h);
    }

    /// `_free` in the process that made the loop, after its handle was removed:
    /// runs what was posted, ends attached servers, delivers every connection's
    /// `on_close`, then drops the rest (fds close, nothing else is called).
    fn teardown(self: Box<Self>) {
        for f in self.remote.close_posts() {
            f(&self.core);
        }
        for s in self.servers.take() {
            super::echo::server_loop_freed(s);
        }
        for c in self.streams.take_conns() {
            super::conn::conn_loop_freed(c, true);
        }
        drop(self);
    }

    /// `_free` in a forked child: the epoll set, eventfd and sockets are shared
    /// with the parent, so nothing may be done to them but closing this
    /// process's copies; no callback runs (posts are dropped, connections get
    /// no `on_close`), and locks the parent's threads may have held at the
    /// fork are not taken.
    fn abandon(self: Box<Self>) {
        self.core.forget_posts_on_drop();
        for s in self.servers.take() {
            super::echo::server_loop_freed(s);
        }
        for c in self.streams.take_conns() {
            super::conn::conn_loop_freed(c, false);
        }
        drop(self);
    }
}

/// Runs `f` on the live loop behind `lp`, holding its owner check
/// (`exclusive`: see [`LoopState::enter`]) inside the panic boundary.
/// `EINVAL` for NULL or a handle that is not a live loop.
pub(crate) fn with_loop(
    lp: *const epoll_loop,
    exclusive: bool,
    f: impl FnOnce(&LoopState, Handle) -> Result<c_int, Errno>,
) -> c_int {
    let h = handle::from_ptr(lp);
    let Some(st) = LOOPS.get(h) else {
        return -libc::EINVAL;
    };
    let _owned = match st.enter(exclusive) {
        Ok(o) => o,
        Err(e) => return e.to_negative(),
    };
    guarded(&st.poison, || f(&st, h))
}

fn new_loop(core: EventLoop) -> Result<*mut epoll_loop, Errno> {
    let remote = core.remote().clone();
    let h = LOOPS.insert(Box::new(LoopState {
        poison: Poison::default(),
        owner: AtomicUsize::new(0),
        forks: handle::forks(),
        remote,
        core,
        streams: LoopStreams::default(),
        servers: RefCell::new(Vec::new()),
    }))?;
    Ok(handle::to_ptr(h))
}

/// Called when a registered fd is ready.
///
/// `loop` is the loop that dispatched, `fd` the registered descriptor, `events`
/// the ready bits (`EPOLL_LOOP_IN`, `_OUT`, `_ERR`, `_HUP`, ...), `user_data` the
/// pointer given to `epoll_loop_register`. The callback may call any loop
/// function except `_poll`, `_run` and `_free` (those return `-EBUSY`). It must
/// not unwind (C++ exceptions, `longjmp`) out of the call.
pub type epoll_loop_io_cb = Option<
    unsafe extern "C" fn(r#loop: *mut epoll_loop, fd: c_int, events: u32, user_data: *mut c_void),
>;

/// Called when a timer is due; `timer_id` is the id `epoll_loop_timer_start`
/// returned. A one-shot timer is already gone when its callback runs; a
/// repeating one is already re-armed (and may be stopped from its callback).
pub type epoll_loop_timer_cb =
    Option<unsafe extern "C" fn(r#loop: *mut epoll_loop, timer_id: u64, user_data: *mut c_void)>;

/// Counters of a loop, filled by `epoll_loop_get_stats`. Times are nanoseconds
/// on `CLOCK_MONOTONIC`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct epoll_loop_stats {
    /// `epoll_wait` calls that returned (one per `poll`).
    pub iterations: u64,
    /// fd events received (the internal waker excluded), stale ones included.
    pub events: u64,
    /// Callbacks run, fd and timer alike.
    pub callbacks: u64,
    /// Timer callbacks run.
    pub timers_fired: u64,
    /// Total time spent inside callbacks.
    pub callback_ns: u64,
    /// The longest single callback.
    pub slowest_callback_ns: u64,
    /// fds registered now.
    pub registered: u64,
    /// Timers pending now.
    pub timers_pending: u64,
}

/// Creates an event loop on a new epoll instance (`select.epoll()`).
///
/// Returns: 0, and the loop in `*out`.
/// Errors: `-EINVAL` (`out` is NULL), `-EMFILE`/`-ENFILE` (no fds left), `-ENOMEM`.
/// Ownership: the caller owns `*out` and frees it with `epoll_loop_free`. `*out`
/// is written only on success.
/// Thread safety: safe from any thread; the new loop belongs to the thread that drives it.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_new(out: *mut *mut epoll_loop) -> c_int {
    boundary(|| {
        if out.is_null() {
            return -libc::EINVAL;
        }
        match EventLoop::new() {
            Ok(core) => match new_loop(core) {
                // SAFETY: `out` is non-NULL and, per the contract, writable.
                Ok(lp) => unsafe { write_out(out, lp) },
                Err(e) => return e.to_negative(),
            },
            Err(e) => return e.to_negative(),
        }
        0
    })
}

/// Creates an event loop on an existing epoll descriptor (`select.epoll.fromfd()`).
///
/// The loop adds its internal waker (an eventfd) to the set. Registrations already
/// in the set that were not made through this loop produce events it ignores, so
/// pass a set with none.
/// Returns: 0, and the loop in `*out`.
/// Errors: `-EINVAL` (`out` NULL, or `epfd` is not an epoll descriptor), `-EBADF`
/// (`epfd` negative or not open), `-EMFILE`, `-ENOMEM`.
/// Ownership: on success the loop owns `epfd` and closes it when freed; on failure
/// `epfd` stays open and the caller's.
/// Thread safety: as `epoll_loop_new`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_from_fd(epfd: c_int, out: *mut *mut epoll_loop) -> c_int {
    boundary(|| {
        if out.is_null() {
            return -libc::EINVAL;
        }
        if epfd < 0 || !sys::fd_is_open(epfd) {
            return -libc::EBADF;
        }
        // SAFETY: the caller hands us `epfd`; if adoption fails it is released unclosed.
        let owned = unsafe { sys::owned_fd(epfd) };
        match EventLoop::from_fd(owned) {
            Ok(core) => match new_loop(core) {
                // SAFETY: `out` is non-NULL and writable.
                Ok(lp) => unsafe { write_out(out, lp) },
                Err(e) => return e.to_negative(),
            },
            Err((e, fd)) => {
                let _ = fd.into_raw_fd();
                return e.to_negative();
            }
        }
        0
    })
}

/// The loop's epoll descriptor (`.fileno()`).
///
/// It is readable whenever events are pending, so it can be registered in another
/// loop (or any poller) to nest this one; then call `epoll_loop_poll(loop, 0)`.
/// Returns: the descriptor (`>= 0`).
/// Errors: `-EINVAL` (`loop` NULL or freed), `-ENOTRECOVERABLE`.
/// Ownership: the loop keeps owning the descriptor; do not close it.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_fileno(r#loop: *const epoll_loop) -> c_int {
    with_loop(r#loop, false, |st, _| Ok(st.core.fileno()))
}

/// Frees a loop (`.close()`): closes its epoll descriptor and waker.
///
/// What the loop still holds is released in this order, on the calling thread,
/// before this returns: functions posted with `epoll_loop_post` and not yet run
/// are run (each exactly once, as if in one last iteration; `loop` is already
/// invalid for them, so calls on it return `-EINVAL`); echo servers attached to
/// the loop stop serving (close their connections without logging; their
/// handles stay valid for `echo_server_stop`, which then only releases them);
/// every open connection gets its `on_close`, with `-ECANCELED` (or the error it
/// was already closed with, if that was not delivered yet), so per-connection
/// `user_data` can be released there; then registrations, timers and signal
/// watches are dropped without calling them (their fds, ids and `user_data`
/// are the caller's), and every socket of the stream layer is closed.
/// Listener handles stay valid for `epoll_loop_listener_close`. Registered fds
/// are not closed.
///
/// In a process forked from the one that made the loop, this only releases the
/// child's copy: it closes the child's descriptors (the parent's epoll set,
/// eventfd and sockets are untouched) and runs no callback.
/// Returns: 0. `epoll_loop_free(NULL)` is a no-op returning 0.
/// Errors: `-EBUSY` (called from inside a call on this loop, e.g. one of its
/// callbacks, an echo server's log callback run by `echo_server_attach`/
/// `_stop`, or `on_close`: free it after `_poll`/`_run` returns; or while
/// another thread is inside a call on this loop), `-EINVAL` (not a live loop,
/// e.g. freed twice: certain). A loop poisoned by an internal panic can still be
/// freed.
/// Ownership: `loop` is invalid after a 0 return.
/// Thread safety: the thread that drives the loop. Other threads may still call
/// `_stop`/`_wake`/`_post` meanwhile: they get 0 (and a post then runs during
/// the free) or `-EINVAL`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_free(r#loop: *mut epoll_loop) -> c_int {
    boundary(|| {
        if r#loop.is_null() {
            return 0;
        }
        let h = handle::from_ptr(r#loop);
        let Some(st) = LOOPS.get(h) else {
            return -libc::EINVAL;
        };
        if st.is_parents() {
            // Forked from inside a call on this loop: that call is still on
            // this thread's stack and would resume on freed memory.
            if st.owner.load(Ordering::Relaxed) == sys::current_thread() {
                return -libc::EBUSY;
            }
            drop(st);
            return match LOOPS.remove(h, true) {
                Some(state) => {
                    state.abandon();
                    0
                }
                None => -libc::EINVAL,
            };
        }
        match st.enter(true) {
            // Keep the owner check for good: no other call on this loop can
            // start now (calls on its connections from other threads get EBUSY),
            // and `_stop`/`_wake`/`_post` only touch `remote`.
            Ok(owned) => std::mem::forget(owned),
            Err(e) => return e.to_negative(),
        }
        drop(st);
        match LOOPS.remove(h, false) {
            Some(state) => {
                state.teardown();
                0
            }
            // Only a caller holding the owner check gets here, so nobody else removed it.
            None => -libc::EINVAL,
        }
    })
}

fn io_callback(
    r#loop: *mut epoll_loop,
    cb: epoll_loop_io_cb,
    user_data: *mut c_void,
) -> Result<IoCallback, Errno> {
    let f = cb.ok_or(Errno::EINVAL)?;
    Ok(Rc::new(move |_: &EventLoop, fd: RawFd, events: u32| {
        // SAFETY: `f` is the caller's callback, invoked with the loop it registered
        // on (alive: callbacks only run inside its _poll) and its own user_data.
        unsafe { f(r#loop, fd, events, user_data) }
    }))
}

/// Watches `fd` for `events` and calls `cb(loop, fd, events, user_data)` when any
/// occur (`select.epoll.register()`).
///
/// `events` is any combination of `EPOLL_LOOP_IN`, `_OUT`, `_PRI`, `_ERR`, `_HUP`,
/// `_RDHUP`, `_ET`, `_ONESHOT`, `_EXCLUSIVE` (the `<sys/epoll.h>` values; `_ERR`
/// and `_HUP` are reported even when not asked for). Level-triggered unless `_ET`.
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed, `cb` NULL, unknown bits in `events`,
/// or a combination the kernel refuses such as `_EXCLUSIVE|_ONESHOT`), `-EBADF`
/// (`fd` negative or not open), `-EEXIST` (`fd` already registered on this loop),
/// `-EPERM` (`fd` cannot be polled: a regular file or directory), `-ENOSPC`
/// (the epoll watch limit, `/proc/sys/fs/epoll/max_user_watches`), `-ENOMEM`,
/// `-ENOTRECOVERABLE`.
/// Ownership: the caller keeps owning `fd` and `user_data`. Unregister before
/// closing: epoll watches the open file description, not the number.
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_register(
    r#loop: *mut epoll_loop,
    fd: c_int,
    events: u32,
    cb: epoll_loop_io_cb,
    user_data: *mut c_void,
) -> c_int {
    with_loop(r#loop, false, |st, _| {
        let cb = io_callback(r#loop, cb, user_data)?;
        st.core.register(fd, events, cb).map(|()| 0)
    })
}

/// Changes the events watched on a registered fd (`select.epoll.modify()`); the
/// callback and user data stay. Re-arms an `_ONESHOT` registration. When the old
/// or new events contain `_EXCLUSIVE`, this does `DEL` + `ADD` (the kernel refuses
/// `MOD`); should the `ADD` fail, the old events are restored (and should that
/// fail too, which takes the kernel refusing twice, the fd is no longer registered).
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed, unknown bits), `-EBADF` (`fd`
/// negative, or closed since it was registered), `-ENOENT` (not registered on this
/// loop, or closed and its number reused by another file), `-EPERM` (closed and
/// its number reused by a file epoll cannot watch), `-ENOTRECOVERABLE`. A
/// closed fd stays registered after such an error: `epoll_loop_unregister` it.
/// Ownership: unchanged.
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_modify(
    r#loop: *mut epoll_loop,
    fd: c_int,
    events: u32,
) -> c_int {
    with_loop(r#loop, false, |st, _| {
        st.core.modify(fd, events).map(|()| 0)
    })
}

/// Stops watching `fd` (`select.epoll.unregister()`). Events for it already
/// fetched in the current batch are not delivered. Succeeds even when `fd` was
/// closed first, and frees its slot, whatever its number refers to now
/// (nothing, or another file, even one epoll cannot watch such as a regular
/// file, a directory or `/dev/null`).
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed), `-EBADF` (`fd` negative), `-ENOENT`
/// (not registered on this loop), `-ENOTRECOVERABLE`.
/// Ownership: the loop drops `user_data` without calling anything; the caller
/// still owns `fd`.
/// Thread safety: loop thread; allowed inside callbacks (its own fd's too).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_unregister(r#loop: *mut epoll_loop, fd: c_int) -> c_int {
    with_loop(r#loop, false, |st, _| st.core.unregister(fd).map(|()| 0))
}

/// Waits once for events and dispatches them (`select.epoll.poll()` plus callbacks).
///
/// Waits up to `timeout_ms` milliseconds (-1 forever, 0 not at all), less if a
/// timer is due sooner; `EINTR` is retried with the remaining time. Then runs the
/// callback of each ready fd, then each due timer. If a signal interrupts the
/// wait while a stop is pending (e.g. `epoll_loop_stop` from a signal handler),
/// it returns 0 at once instead of waiting out the rest.
///
/// Stop rule (libuv's): a pending `epoll_loop_stop` is consumed at the end of
/// each `_poll`. With a stop already pending, `_poll` does not block: it waits
/// with timeout 0, runs what is ready, and consumes the stop; a stop made by a
/// callback (or another thread) during this `_poll` is consumed by it too. So
/// a stop never carries over into a later `_run`:
///
/// ```c
/// epoll_loop_stop(loop);       // nothing running: the stop is pending
/// epoll_loop_poll(loop, -1);   // returns at once, and consumes it
/// epoll_loop_run(loop);        // runs until idle or the next stop
/// ```
///
/// Returns: the number of callbacks run (fd and timer alike); 0 on timeout or
/// after `epoll_loop_wake`.
/// Errors: `-EINVAL` (`loop` NULL or freed, `timeout_ms < -1`), `-EBUSY` (called
/// from one of this loop's callbacks, or while another thread runs the loop),
/// `-ENOTRECOVERABLE`.
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_poll(r#loop: *mut epoll_loop, timeout_ms: c_int) -> c_int {
    with_loop(r#loop, true, |st, _| {
        st.core
            .poll(timeout_ms)
            .map(|n| n.min(c_int::MAX as usize) as c_int)
    })
}

/// Polls until `epoll_loop_stop` is called or nothing is left to wait for (no fd
/// registered, no timer pending).
///
/// Stop rule (libuv's): `_run` consumes a pending stop when it returns, and
/// returns 1 when it consumed one. A stop requested while nothing runs is
/// consumed by whichever of `_poll` or `_run` comes next: if that is `_run`,
/// it returns 1 at once; its own iterations leave the stop for it to see.
///
/// ```c
/// epoll_loop_stop(loop);       // nothing running: the stop is pending
/// epoll_loop_run(loop);        // returns 1 at once, the stop consumed
/// epoll_loop_run(loop);        // runs until idle or the next stop
/// ```
///
/// Returns: 0 when nothing was left, 1 when it consumed a stop (requested
/// before `_run`, from a callback, from another thread or a signal handler).
/// Errors: `-EINVAL` (`loop` NULL or freed), `-EBUSY` (called from one of this
/// loop's callbacks, or while another thread runs the loop), `-ENOTRECOVERABLE`,
/// or an `epoll_wait` error.
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_run(r#loop: *mut epoll_loop) -> c_int {
    with_loop(r#loop, true, |st, _| {
        st.core.run().map(|exit| match exit {
            RunExit::Idle => 0,
            RunExit::Stopped => 1,
        })
    })
}

/// Runs `f` with the thread-safe part of a live loop, from any thread: no
/// owner check, only the handle (`EINVAL`), the fork check and the poison flag
/// (`ENOTRECOVERABLE`). Async-signal-safe as long as `f` is.
pub(crate) fn with_remote(
    lp: *const epoll_loop,
    f: impl FnOnce(&Remote) -> Result<(), Errno>,
) -> c_int {
    let Some(st) = LOOPS.get(handle::from_ptr(lp)) else {
        return -libc::EINVAL;
    };
    if st.is_parents() {
        return EFORKED.to_negative();
    }
    if st.poison.is_poisoned() {
        return -libc::ENOTRECOVERABLE;
    }
    boundary(|| code(f(&st.remote).map(|()| 0)))
}

/// Asks `epoll_loop_run` to return (with 1) after the current iteration, waking it
/// if it is blocked, and a running `epoll_loop_poll` not to block.
///
/// The request is consumed at the end of the next `_poll` or `_run`, whichever
/// ends first (libuv's `uv_stop` rule), so it never outlives the call that saw
/// it: a stop made while nothing runs makes the next `_run` return 1 at once,
/// or the next `_poll` not block (and then a later `_run` runs normally).
/// Like `epoll_loop_wake`, a stop also wakes the loop; a stop made inside a
/// `_poll` (from a callback) therefore leaves that wake for the next `_poll`,
/// which returns once without waiting (0 if nothing else is ready).
///
/// ```c
/// epoll_loop_stop(loop);       // from a callback inside _poll: that _poll consumes it
/// epoll_loop_poll(loop, -1);   // (after a stop made while idle) returns at once
/// epoll_loop_run(loop);        // not stopped by the old request
/// ```
///
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed, also while another thread frees
/// it), `EPOLL_LOOP_EFORKED` (a loop of the parent process, called in a forked
/// child: the parent's loop is not stopped), `-ENOTRECOVERABLE`.
/// Ownership: unchanged.
/// Thread safety: safe from any thread and async-signal-safe (atomics and one
/// `write(2)`), even while another thread frees the loop.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_stop(r#loop: *mut epoll_loop) -> c_int {
    with_remote(r#loop, Remote::stop)
}

/// Makes a blocked `epoll_loop_poll` return (with 0 if nothing else happened).
/// Wakes sent while the loop is not blocked are coalesced into one.
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed, also while another thread frees
/// it), `EPOLL_LOOP_EFORKED` (a loop of the parent process, in a forked child),
/// `-ENOTRECOVERABLE`.
/// Ownership: unchanged.
/// Thread safety: safe from any thread and async-signal-safe, even while another
/// thread frees the loop.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_wake(r#loop: *mut epoll_loop) -> c_int {
    with_remote(r#loop, Remote::wake)
}

/// Starts a timer: `cb(loop, id, user_data)` runs after `after_ms` milliseconds,
/// then every `repeat_ms` (0 = once). Timers run inside `_poll`, after the fd
/// callbacks; a timer started from a timer callback runs in a later `_poll` at
/// the earliest, even with `after_ms` 0.
/// Returns: 0, and the timer's id in `*out_id` (if `out_id` is not NULL). Ids start
/// at 1 and are never reused within the loop's life.
/// Errors: `-EINVAL` (`loop` NULL or freed, `cb` NULL), `-ENOTRECOVERABLE`.
/// Ownership: the caller keeps owning `user_data`. `*out_id` is written only on success.
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_timer_start(
    r#loop: *mut epoll_loop,
    after_ms: u64,
    repeat_ms: u64,
    cb: epoll_loop_timer_cb,
    user_data: *mut c_void,
    out_id: *mut u64,
) -> c_int {
    with_loop(r#loop, false, |st, _| {
        let f = cb.ok_or(Errno::EINVAL)?;
        let lp = r#loop;
        let cb: TimerCallback = Rc::new(move |_: &EventLoop, id: u64| {
            // SAFETY: the caller's callback, with its own loop and user_data.
            unsafe { f(lp, id, user_data) }
        });
        let id = st.core.timer_start(after_ms, repeat_ms, cb);
        if !out_id.is_null() {
            // SAFETY: non-NULL out-pointer, writable per the contract.
            unsafe { write_out(out_id, id) };
        }
        Ok(0)
    })
}

/// Stops a pending timer; its callback will not run again.
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed), `-ENOENT` (unknown id, already
/// stopped, or a one-shot timer that already fired), `-ENOTRECOVERABLE`.
/// Ownership: the loop drops `user_data` without calling anything.
/// Thread safety: loop thread; allowed inside callbacks (its own timer's too).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_timer_stop(r#loop: *mut epoll_loop, timer_id: u64) -> c_int {
    with_loop(r#loop, false, |st, _| {
        st.core.timer_stop(timer_id).map(|()| 0)
    })
}

/// Fills `*out` with the loop's counters.
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` or `out` NULL, loop freed), `-ENOTRECOVERABLE`.
/// Ownership: `*out` is the caller's; written only on success.
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_get_stats(
    r#loop: *const epoll_loop,
    out: *mut epoll_loop_stats,
) -> c_int {
    with_loop(r#loop, false, |st, _| {
        if out.is_null() {
            return Err(Errno::EINVAL);
        }
        let s = st.core.stats();
        let stats = epoll_loop_stats {
            iterations: s.iterations,
            events: s.events,
            callbacks: s.callbacks,
            timers_fired: s.timers_fired,
            callback_ns: s.callback_ns,
            slowest_callback_ns: s.slowest_callback_ns,
            registered: s.registered,
            timers_pending: s.timers_pending,
        };
        // SAFETY: non-NULL out-pointer, writable per the contract.
        unsafe { write_out(out, stats) };
        Ok(0)
    })
}

const _: () = {
    assert!(EPOLL_LOOP_IN == el::IN);
    assert!(EPOLL_LOOP_PRI == el::PRI);
    assert!(EPOLL_LOOP_OUT == el::OUT);
    assert!(EPOLL_LOOP_ERR == el::ERR);
    assert!(EPOLL_LOOP_HUP == el::HUP);
    assert!(EPOLL_LOOP_RDHUP == el::RDHUP);
    assert!(EPOLL_LOOP_EXCLUSIVE == el::EXCLUSIVE);
    assert!(EPOLL_LOOP_ONESHOT == el::ONESHOT);
    assert!(EPOLL_LOOP_ET == el::ET);
};

/// Test-only hooks (not part of the C API; not in the header).
#[doc(hidden)]
pub mod testing {
    use super::*;

    /// Makes the next checked call on `lp` panic inside the library, to prove the
    /// panic boundary: that call returns `-ENOTRECOVERABLE` and the loop refuses
    /// further work.
    ///
    /// # Safety
    /// `lp` is a live loop from `epoll_loop_new`.
    pub unsafe fn panic_on_next_call(lp: *mut epoll_loop) {
        if let Some(st) = LOOPS.get(handle::from_ptr(lp)) {
            st.poison.arm_panic();
        }
    }
}
