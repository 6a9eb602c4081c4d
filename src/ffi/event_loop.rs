//! `epoll_loop`: the loop object of the C API.

use super::guard::{self, Object, ObjectHeader, boundary, with_object, write_out};
use crate::event_loop::{self as core, EventLoop, IoCallback, Remote, RunExit, TimerCallback};
use crate::sys::{self, Errno};
use crate::tcp::TcpContext;
use std::ffi::{c_int, c_void};
use std::mem::ManuallyDrop;
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
/// `epoll_loop_free`.
///
/// Lifetime: from `_new` until `_free`. Thread safety: one thread drives a loop
/// (`_poll`/`_run` and every other call); only `epoll_loop_stop`,
/// `epoll_loop_wake` and `epoll_loop_post` may be called from other threads
/// (the first two from signal handlers too). A call from another thread while
/// `_poll`/`_run` runs is refused with `-EBUSY`.
pub struct epoll_loop {
    header: ObjectHeader,
    /// The thread inside `_poll`/`_run` (`sys::current_thread`), 0 when none.
    owner: AtomicUsize,
    // The rest is dropped by `epoll_loop_free`, which keeps the header's memory
    // for a while (`guard::retire`) so a freed handle reads as dead.
    remote: ManuallyDrop<Arc<Remote>>,
    core: ManuallyDrop<EventLoop>,
    /// The read buffer and counters shared by this loop's C connections.
    tcp: ManuallyDrop<std::cell::OnceCell<Rc<TcpContext>>>,
}

impl Object for epoll_loop {
    const MAGIC: u64 = 0x6570_6f6c_6c4c_6f6f; // "epollLoo"
    fn header(&self) -> &ObjectHeader {
        &self.header
    }

    /// `EBUSY` while another thread runs the loop: a relaxed load and a compare
    /// on every call, nothing more. Not caught: a call racing with the very
    /// start of `_poll`/`_run` on the other thread, or made while that thread
    /// is between two polls.
    #[inline]
    fn check_caller(&self) -> Result<(), Errno> {
        let owner = self.owner.load(Ordering::Relaxed);
        if owner != 0 && owner != sys::current_thread() {
            return Err(Errno::EBUSY);
        }
        Ok(())
    }
}

/// Marks a loop as run by the calling thread while `_poll`/`_run` is inside;
/// restores the previous mark on return and on unwind (a nested, refused
/// `_poll` from a callback restores the same thread).
struct Owner<'a> {
    owner: &'a AtomicUsize,
    prev: usize,
}

impl<'a> Owner<'a> {
    fn enter(owner: &'a AtomicUsize) -> Owner<'a> {
        let prev = owner.swap(sys::current_thread(), Ordering::Relaxed);
        Owner { owner, prev }
    }
}

impl Drop for Owner<'_> {
    fn drop(&mut self) {
        self.owner.store(self.prev, Ordering::Relaxed);
    }
}

impl epoll_loop {
    fn boxed(core: EventLoop) -> *mut epoll_loop {
        let remote = core.remote().clone();
        Box::into_raw(Box::new(epoll_loop {
            header: ObjectHeader::new(Self::MAGIC),
            owner: AtomicUsize::new(0),
            remote: ManuallyDrop::new(remote),
            core: ManuallyDrop::new(core),
            tcp: ManuallyDrop::new(std::cell::OnceCell::new()),
        }))
    }

    /// The Rust loop behind a handle (for layers built on the C object).
    pub(crate) fn core(&self) -> &EventLoop {
        &self.core
    }

    /// The stream layer's shared context for this loop (made on first use).
    pub(crate) fn tcp_context(&self) -> Rc<TcpContext> {
        self.tcp
            .get_or_init(|| TcpContext::new(Default::default()))
            .clone()
    }
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
            // SAFETY: `out` is non-NULL and, per the contract, writable.
            Ok(core) => unsafe { write_out(out, epoll_loop::boxed(core)) },
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
            // SAFETY: `out` is non-NULL and writable.
            Ok(core) => unsafe { write_out(out, epoll_loop::boxed(core)) },
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
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe { with_object(r#loop, |h| Ok(h.core.fileno())) }
}

/// Frees a loop (`.close()`): closes its epoll descriptor and waker and drops every
/// registration and timer without calling them. Registered fds are not closed.
///
/// Returns: 0. `epoll_loop_free(NULL)` is a no-op returning 0.
/// Errors: `-EBUSY` (called from one of this loop's callbacks: free it after
/// `_poll`/`_run` returns; or from another thread while the loop runs),
/// `-EINVAL` (not a live loop, e.g. freed twice: certain for the 256 most
/// recently freed handles, whose memory is kept, best effort beyond). A loop
/// poisoned by an internal panic can still be freed.
/// Ownership: `loop` is invalid after a 0 return.
/// Thread safety: loop thread, and no other thread may be calling
/// `_stop`/`_wake`/`_post`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_free(r#loop: *mut epoll_loop) -> c_int {
    boundary(|| {
        if r#loop.is_null() {
            return 0;
        }
        // SAFETY: non-NULL, and per the contract a loop this library allocated.
        let h = unsafe { &*r#loop };
        if !h.header.is_live(epoll_loop::MAGIC) {
            return -libc::EINVAL;
        }
        // Another thread running it, or one of its own callbacks: not now.
        if h.check_caller().is_err() || h.core.is_dispatching() {
            return -libc::EBUSY;
        }
        h.header.kill();
        // SAFETY: allocated by Box::into_raw in epoll_loop::boxed, live, and not in
        // use by a dispatch; we are its only user now. Its contents are dropped in
        // declaration order (as a plain drop would), each once; the header stays.
        unsafe {
            let h = &mut *r#loop;
            ManuallyDrop::drop(&mut h.remote);
            ManuallyDrop::drop(&mut h.core);
            ManuallyDrop::drop(&mut h.tcp);
            guard::retire(r#loop);
        }
        0
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
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe {
        with_object(r#loop, |h| {
            let cb = io_callback(r#loop, cb, user_data)?;
            h.core.register(fd, events, cb).map(|()| 0)
        })
    }
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
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe { with_object(r#loop, |h| h.core.modify(fd, events).map(|()| 0)) }
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
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe { with_object(r#loop, |h| h.core.unregister(fd).map(|()| 0)) }
}

/// Waits once for events and dispatches them (`select.epoll.poll()` plus callbacks).
///
/// Waits up to `timeout_ms` milliseconds (-1 forever, 0 not at all), less if a
/// timer is due sooner; `EINTR` is retried with the remaining time. Then runs the
/// callback of each ready fd, then each due timer. If a signal interrupts the
/// wait while a stop is pending (e.g. `epoll_loop_stop` from a signal handler),
/// it returns 0 at once instead of waiting out the rest.
/// Returns: the number of callbacks run (fd and timer alike); 0 on timeout or
/// after `epoll_loop_wake`.
/// Errors: `-EINVAL` (`loop` NULL or freed, `timeout_ms < -1`), `-EBUSY` (called
/// from one of this loop's callbacks, or while another thread runs the loop),
/// `-ENOTRECOVERABLE`.
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_poll(r#loop: *mut epoll_loop, timeout_ms: c_int) -> c_int {
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe {
        with_object(r#loop, |h| {
            let _owner = Owner::enter(&h.owner);
            h.core
                .poll(timeout_ms)
                .map(|n| n.min(c_int::MAX as usize) as c_int)
        })
    }
}

/// Polls until `epoll_loop_stop` is called or nothing is left to wait for (no fd
/// registered, no timer pending).
/// Returns: 0 when nothing was left, 1 when stopped by `epoll_loop_stop` (a stop
/// requested before `_run` makes it return 1 at once; each request is used once).
/// Errors: `-EINVAL` (`loop` NULL or freed), `-EBUSY` (called from one of this
/// loop's callbacks, or while another thread runs the loop), `-ENOTRECOVERABLE`,
/// or an `epoll_wait` error.
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_run(r#loop: *mut epoll_loop) -> c_int {
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe {
        with_object(r#loop, |h| {
            let _owner = Owner::enter(&h.owner);
            h.core.run().map(|exit| match exit {
                RunExit::Idle => 0,
                RunExit::Stopped => 1,
            })
        })
    }
}

/// The thread-safe part of a loop, reached without touching the rest of it.
/// `Err` holds the code to return: `-EINVAL` (NULL or not live) or
/// `-ENOTRECOVERABLE` (poisoned by a panic: it refuses further work).
///
/// # Safety
/// `lp` is NULL or a loop from `epoll_loop_new` that no thread is freeing.
unsafe fn remote_of<'a>(lp: *const epoll_loop) -> Result<&'a Remote, c_int> {
    if lp.is_null() {
        return Err(-libc::EINVAL);
    }
    // SAFETY: non-NULL loop pointer; only the atomic header and the immutable,
    // Sync `remote` field are read, so this does not race with the loop thread.
    unsafe {
        let header = &*std::ptr::addr_of!((*lp).header);
        if !header.is_live(epoll_loop::MAGIC) {
            return Err(-libc::EINVAL);
        }
        if header.is_poisoned() {
            return Err(-libc::ENOTRECOVERABLE);
        }
        Ok(&***std::ptr::addr_of!((*lp).remote))
    }
}

/// Asks `epoll_loop_run` to return (with 1) after the current iteration, waking it
/// if it is blocked. A stop requested while `_run` is not running is remembered
/// and makes the next `_run` return at once.
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed), `-ENOTRECOVERABLE`.
/// Ownership: unchanged.
/// Thread safety: safe from any thread and async-signal-safe (an atomic store and
/// one `write(2)`), as long as the loop is not being freed concurrently.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_stop(r#loop: *mut epoll_loop) -> c_int {
    // SAFETY: NULL or a live loop, per the contract.
    match unsafe { remote_of(r#loop) } {
        Ok(r) => boundary(|| super::guard::code(r.stop().map(|()| 0))),
        Err(code) => code,
    }
}

/// Makes a blocked `epoll_loop_poll` return (with 0 if nothing else happened).
/// Wakes sent while the loop is not blocked are coalesced into one.
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed), `-ENOTRECOVERABLE`.
/// Ownership: unchanged.
/// Thread safety: safe from any thread and async-signal-safe, as long as the loop
/// is not being freed concurrently.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_wake(r#loop: *mut epoll_loop) -> c_int {
    // SAFETY: NULL or a live loop, per the contract.
    match unsafe { remote_of(r#loop) } {
        Ok(r) => boundary(|| super::guard::code(r.wake().map(|()| 0))),
        Err(code) => code,
    }
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
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe {
        with_object(r#loop, |h| {
            let f = cb.ok_or(Errno::EINVAL)?;
            let lp = r#loop;
            let cb: TimerCallback = Rc::new(move |_: &EventLoop, id: u64| {
                // SAFETY: the caller's callback, with its own loop and user_data.
                f(lp, id, user_data)
            });
            let id = h.core.timer_start(after_ms, repeat_ms, cb);
            if !out_id.is_null() {
                // SAFETY: non-NULL out-pointer, writable per the contract.
                write_out(out_id, id);
            }
            Ok(0)
        })
    }
}

/// Stops a pending timer; its callback will not run again.
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed), `-ENOENT` (unknown id, already
/// stopped, or a one-shot timer that already fired), `-ENOTRECOVERABLE`.
/// Ownership: the loop drops `user_data` without calling anything.
/// Thread safety: loop thread; allowed inside callbacks (its own timer's too).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_timer_stop(r#loop: *mut epoll_loop, timer_id: u64) -> c_int {
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe { with_object(r#loop, |h| h.core.timer_stop(timer_id).map(|()| 0)) }
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
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe {
        with_object(r#loop, |h| {
            if out.is_null() {
                return Err(Errno::EINVAL);
            }
            let s = h.core.stats();
            let st = epoll_loop_stats {
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
            write_out(out, st);
            Ok(0)
        })
    }
}

const _: () = {
    assert!(EPOLL_LOOP_IN == core::IN);
    assert!(EPOLL_LOOP_PRI == core::PRI);
    assert!(EPOLL_LOOP_OUT == core::OUT);
    assert!(EPOLL_LOOP_ERR == core::ERR);
    assert!(EPOLL_LOOP_HUP == core::HUP);
    assert!(EPOLL_LOOP_RDHUP == core::RDHUP);
    assert!(EPOLL_LOOP_EXCLUSIVE == core::EXCLUSIVE);
    assert!(EPOLL_LOOP_ONESHOT == core::ONESHOT);
    assert!(EPOLL_LOOP_ET == core::ET);
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
        // SAFETY: per the contract, `lp` is a live loop.
        unsafe { (*lp).header.arm_panic() }
    }
}

/// Called on the loop thread when a watched signal arrives (`signo`).
pub type epoll_loop_signal_cb =
    Option<unsafe extern "C" fn(r#loop: *mut epoll_loop, signo: c_int, user_data: *mut c_void)>;

/// A function posted with `epoll_loop_post`, run once on the loop thread.
pub type epoll_loop_post_cb =
    Option<unsafe extern "C" fn(r#loop: *mut epoll_loop, user_data: *mut c_void)>;

/// Blocks `signo` in the calling thread, so that it can be received through
/// `epoll_loop_signal_start` instead of its default action.
///
/// The blocking rule: a signal watched by a loop must be blocked in every thread
/// of the process, or the kernel may deliver it to a thread that has it
/// unblocked (running its handler or default action, e.g. terminating). Call this
/// in the main thread before starting other threads (they inherit the mask).
/// Returns: 0.
/// Errors: `-EINVAL` (not a valid signal number, or `SIGKILL`/`SIGSTOP`, which
/// nothing can block).
/// Ownership: nothing.
/// Thread safety: affects only the calling thread.
#[unsafe(no_mangle)]
pub extern "C" fn epoll_loop_signal_block(signo: c_int) -> c_int {
    boundary(|| super::guard::code(sys::signal::block(signo).map(|()| 0)))
}

/// Calls `cb(loop, signo, user_data)` on the loop thread each time `signo`
/// arrives (through a signalfd; several signals share one per loop). A watched
/// signal keeps `epoll_loop_run` running, like a registered fd.
///
/// Only one loop in the process should watch a given signal: each arrival is
/// read by one of them.
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed, `cb` NULL, `signo` invalid or
/// `SIGKILL`/`SIGSTOP`), `EPOLL_LOOP_ENOTBLOCKED` (`signo` is not blocked in the
/// calling thread: block it with `epoll_loop_signal_block` first, in every
/// thread), `-EEXIST` (already watched on this loop), `-EMFILE`, `-ENOMEM`,
/// `-ENOTRECOVERABLE`.
/// Ownership: the caller keeps owning `user_data`.
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_signal_start(
    r#loop: *mut epoll_loop,
    signo: c_int,
    cb: epoll_loop_signal_cb,
    user_data: *mut c_void,
) -> c_int {
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe {
        with_object(r#loop, |h| {
            let f = cb.ok_or(Errno::EINVAL)?;
            let lp = r#loop;
            h.core
                .signal_start(
                    signo,
                    Rc::new(move |_: &EventLoop, s: i32| {
                        // SAFETY: the caller's callback with its own loop and user data.
                        f(lp, s, user_data)
                    }),
                )
                .map(|()| 0)
        })
    }
}

/// Stops watching `signo` on this loop (the signal stays blocked).
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed), `-ENOENT` (not watched here),
/// `-ENOTRECOVERABLE`.
/// Ownership: the loop drops `user_data` without calling anything.
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_signal_stop(r#loop: *mut epoll_loop, signo: c_int) -> c_int {
    // SAFETY: NULL or a loop from epoll_loop_new (checked by with_object).
    unsafe { with_object(r#loop, |h| h.core.signal_stop(signo).map(|()| 0)) }
}

/// The loop pointer and user data of a post, carried to the loop thread.
struct PostArgs {
    f: unsafe extern "C" fn(r#loop: *mut epoll_loop, user_data: *mut c_void),
    lp: *mut epoll_loop,
    user_data: *mut c_void,
}

// SAFETY: the pointers are only used on the loop thread, where the function runs;
// `epoll_loop_post` documents that user_data is handed to that thread.
unsafe impl Send for PostArgs {}

impl PostArgs {
    fn call(self) {
        // SAFETY: the caller's callback, run on the loop thread with its loop
        // (alive: posts run only inside its _poll) and its own user data.
        unsafe { (self.f)(self.lp, self.user_data) }
    }
}

/// Runs `cb(loop, user_data)` once on the loop thread, in the loop's next
/// iteration, waking it if it is blocked. Functions posted from one thread run
/// in posting order; each run counts as a callback.
/// Returns: 0.
/// Errors: `-EINVAL` (`loop` NULL or freed, `cb` NULL), `-ESHUTDOWN` (the loop
/// is being freed: posts still queued when it is freed are dropped unrun).
/// Ownership: `user_data` travels to the loop thread; the caller keeps owning it.
/// Thread safety: safe from any thread (takes a mutex: not async-signal-safe), as
/// long as the loop is not freed concurrently.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_post(
    r#loop: *mut epoll_loop,
    cb: epoll_loop_post_cb,
    user_data: *mut c_void,
) -> c_int {
    // SAFETY: NULL or a live loop, per the contract.
    let remote = match unsafe { remote_of(r#loop) } {
        Ok(r) => r,
        Err(code) => return code,
    };
    boundary(|| {
        let Some(f) = cb else {
            return -libc::EINVAL;
        };
        let args = PostArgs {
            f,
            lp: r#loop,
            user_data,
        };
        super::guard::code(
            remote
                .post(Box::new(move |_: &EventLoop| args.call()))
                .map(|()| 0),
        )
    })
}
