//! `epoll_loop_listener`: a listening TCP socket of the C API. A listener is a
//! handle in [`LISTENERS`]; it names its loop by the loop's handle, so a
//! listener whose loop was freed can still be closed.

use super::conn::{CConn, epoll_loop_conn_callbacks, read_endpoint};
use super::event_loop::{LOOPS, LoopState, epoll_loop, with_loop};
use super::guard::{guarded, write_out};
use super::handle::{self, Handle, Poison, Table};
use crate::event_loop::EventLoop;
use crate::stream::{self, Conn, ConnHandler, Limits, ListenOptions, Listener, TcpStats};
use crate::sys::Errno;
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void};
use std::rc::{Rc, Weak};

/// A listening TCP socket on a loop. Opaque; made by `epoll_loop_tcp_listen`,
/// released by `epoll_loop_listener_close`. The pointer is a handle: after
/// `_listener_close` every call with it is `-EINVAL`, for certain.
pub struct epoll_loop_listener {
    _opaque: [u8; 0],
}

/// A listener as the C API keeps it (in [`LISTENERS`]).
pub(crate) struct ListenerState {
    poison: Poison,
    listener: Weak<Listener>,
    limits: Rc<Cell<Limits>>,
    port: u16,
    /// The loop's handle (the loop may be freed first).
    lp: Handle,
    /// `handle::forks()` when made.
    forks: u32,
}

/// Every listener. Only `lp` and `port` (immutable) and `poison` (atomic) are
/// read without the loop's owner check; `listener` and `limits` are touched
/// under it, or, once the loop is freed, by `_listener_close` alone.
static LISTENERS: Table<ListenerState> = Table::new(handle::TAG_LISTENER);

/// Listens on `host:port` and accepts connections on the loop: each accepted
/// connection gets `*cbs` (copied) and starts with `user_data`; `on_open` runs for
/// it at once. Running out of fds (`EMFILE`) neither stops the listener nor makes
/// it spin: the pending client is accepted and closed with a spare fd.
/// `host` NULL means "127.0.0.1"; names are resolved synchronously with
/// getaddrinfo (blocking), and the first address it gives is used.
/// `backlog <= 0` means `SOMAXCONN`, the recommended value (the kernel caps it at
/// `net.core.somaxconn`): a short queue overflows when many clients connect at
/// once, and their connects stall or are reset. Port 0 picks one
/// (`epoll_loop_listener_port`).
/// Returns: 0, and the listener in `*out`.
/// Errors: `-EINVAL` (NULL `loop`/`cbs`/`out`, host not UTF-8),
/// `EPOLL_LOOP_EAI_*` (the host name did not resolve: `EPOLL_LOOP_EAI_NONAME`,
/// `EPOLL_LOOP_EAI_AGAIN`, ...), `-EADDRINUSE`, `-EADDRNOTAVAIL`, `-EACCES`,
/// `-EMFILE`, `-ENOTRECOVERABLE`.
/// Ownership: the caller owns `*out` and frees it with `epoll_loop_listener_close`
/// (freeing the loop first closes the socket; `_close` then only frees the handle).
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_tcp_listen(
    r#loop: *mut epoll_loop,
    host: *const c_char,
    port: u16,
    backlog: c_int,
    cbs: *const epoll_loop_conn_callbacks,
    user_data: *mut c_void,
    out: *mut *mut epoll_loop_listener,
) -> c_int {
    with_loop(r#loop, false, |st, lh| {
        if out.is_null() {
            return Err(Errno::EINVAL);
        }
        let (cbs, addr) = read_endpoint(host, port, cbs)?;
        let options = ListenOptions {
            backlog,
            reuse_port: false,
        };
        let (fd, bound) = stream::bind(&addr, options)?;
        let port = bound.port();
        let limits = Rc::new(Cell::new(Limits::default()));
        let ctx = st.streams().context();
        let lp: *const LoopState = st;
        let lim = limits.clone();
        let stats = ctx.stats.clone();
        let on_accept = Box::new(move |el: &EventLoop, fd| {
            // SAFETY: this closure is owned by the loop's registry, so the loop
            // is alive whenever it runs.
            let st = unsafe { &*lp };
            let Ok(cc) = CConn::new(cbs, st, user_data) else {
                TcpStats::add(&ctx.stats.accept_errors, 1);
                return;
            };
            let Ok(conn) = Conn::open(el, fd, ctx.clone(), cc.clone(), lim.get()) else {
                TcpStats::add(&ctx.stats.accept_errors, 1);
                return;
            };
            TcpStats::add(&ctx.stats.accepted, 1);
            cc.bind(&conn);
            cc.on_open(el, &conn);
        });
        let listener = Listener::open(st.core(), fd, stats, on_accept, Box::new(|_| {}))?;
        let state = ListenerState {
            poison: Poison::default(),
            listener: Rc::downgrade(&listener),
            limits,
            port,
            lp: lh,
            forks: handle::forks(),
        };
        let h = match LISTENERS.insert(Box::new(state)) {
            Ok(h) => h,
            Err(e) => {
                listener.close(st.core());
                return Err(e);
            }
        };
        // SAFETY: `out` is non-NULL and, per the contract, writable.
        unsafe { write_out(out, handle::to_ptr(h)) };
        Ok(0)
    })
}

/// Runs `f` on the live listener behind `l` and its loop (`None` once the loop
/// was freed), holding the loop's owner check, inside the panic boundary.
fn with_listener(
    l: *const epoll_loop_listener,
    f: impl FnOnce(&ListenerState, Option<&LoopState>) -> Result<c_int, Errno>,
) -> c_int {
    let Some(ls) = LISTENERS.get(handle::from_ptr(l)) else {
        return -libc::EINVAL;
    };
    let lp = LOOPS.get(ls.lp);
    let _owned = match lp.as_deref().map(|st| st.enter(false)).transpose() {
        Ok(o) => o,
        Err(e) => return e.to_negative(),
    };
    guarded(&ls.poison, || f(&ls, lp.as_deref()))
}

/// The port a listener is bound to (also after its loop was freed).
/// Returns: the port (1..65535).
/// Errors: `-EINVAL` (NULL or closed listener), `-EBUSY` (another thread is
/// inside a call on its loop), `EPOLL_LOOP_EFORKED` (in a forked child).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_listener_port(l: *const epoll_loop_listener) -> c_int {
    with_listener(l, |ls, _| Ok(c_int::from(ls.port)))
}

/// Sets the write-queue limits of connections accepted from now on (see
/// `epoll_loop_conn_set_limits`; defaults 1 MiB and 64 KiB).
/// Returns: 0.
/// Errors: `-EINVAL` (NULL or closed listener, its loop freed,
/// `low_water >= max_queue`, `max_queue` 0 or above `UINT32_MAX`, on 32-bit
/// systems `SSIZE_MAX`), `-EBUSY` (another thread is inside a call on its
/// loop), `EPOLL_LOOP_EFORKED` (in a forked child).
/// Ownership: unchanged.
/// Thread safety: loop thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_listener_set_limits(
    l: *mut epoll_loop_listener,
    max_queue: usize,
    low_water: usize,
) -> c_int {
    with_listener(l, |ls, lp| {
        if lp.is_none() {
            return Err(Errno::EINVAL);
        }
        ls.limits.set(
            Limits {
                max_queue,
                low_water,
            }
            .validate()?,
        );
        Ok(0)
    })
}

/// Stops accepting and frees the listener. Connections it accepted live on.
/// After its loop was freed (which closed the socket), or in a forked child,
/// this only releases the handle.
/// Returns: 0. `epoll_loop_listener_close(NULL)` is a no-op returning 0.
/// Errors: `-EINVAL` (not a live listener, e.g. closed twice: certain),
/// `-EBUSY` (another thread is inside a call on its loop).
/// Ownership: `l` is invalid after a 0 return.
/// Thread safety: loop thread; allowed inside callbacks.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_listener_close(l: *mut epoll_loop_listener) -> c_int {
    if l.is_null() {
        return 0;
    }
    let h = handle::from_ptr(l);
    let Some(ls) = LISTENERS.get(h) else {
        return -libc::EINVAL;
    };
    let lp = LOOPS.get(ls.lp);
    let owned = match lp.as_deref().map(|st| st.enter(false)).transpose() {
        Ok(o) => o,
        // A loop of the parent process, in a forked child: release the handle
        // only (closing the listener would touch the parent's epoll set).
        Err(e) if e == handle::EFORKED => None,
        Err(e) => return e.to_negative(),
    };
    let live_loop = owned.as_ref().map(|_| ());
    let in_child = ls.forks != handle::forks();
    drop(ls);
    let Some(state) = LISTENERS.remove(h, in_child) else {
        return -libc::EINVAL;
    };
    super::guard::boundary(|| {
        if let (Some(st), Some(())) = (lp.as_deref(), live_loop)
            && let Some(listener) = state.listener.upgrade()
        {
            listener.close(st.core());
        }
        // With the loop's owner check held, or after the loop was freed (then
        // nothing else holds these `Rc`s any more), or in a forked child (one
        // thread; the loop's own copies are never touched again).
        drop(state);
        0
    })
}
