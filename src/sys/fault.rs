//! Fault injection for the syscall wrappers (tests only; nothing in release builds).
//!
//! Every wrapper in [`crate::sys`] that can fail in an interesting way calls
//! [`before`] with its [`Op`] just before the syscall. With the crate built for
//! its own unit tests (`cfg(test)`) or with the `fault-injection` feature, that
//! consults a *plan* installed on the calling thread with [`install`]: the plan
//! may make the call fail with an errno (the syscall is then not made, which is
//! what `EINTR`, `EAGAIN`, `EMFILE`... mean) or move fewer bytes than asked
//! (a short read or write). Without a plan, or in a normal build, nothing
//! happens: the normal build's [`before`] is an inlined `Ok(len)`, so release
//! binaries carry no trace of this module (checked with `nm`, see
//! `docs/ARCHITECTURE.md`).
//!
//! The plan is thread-local, so a test injects faults into the loop it drives
//! on its own thread and nowhere else: parallel tests, and clients running on
//! other threads, see the real kernel.
//!
//! # Notes
//! An injected failure happens *instead of* the syscall, so state stays
//! consistent: an injected `EINTR` on `recv` consumed no bytes, an injected
//! `EMFILE` on `accept` leaves the connection in the backlog, exactly as the
//! kernel would.

#[cfg(any(test, feature = "fault-injection"))]
use super::Errno;
use super::Result;

/// The syscalls that can be made to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `epoll_create1`.
    EpollCreate,
    /// `epoll_ctl(EPOLL_CTL_ADD)`.
    EpollAdd,
    /// `epoll_ctl(EPOLL_CTL_MOD)`.
    EpollMod,
    /// `epoll_ctl(EPOLL_CTL_DEL)`.
    EpollDel,
    /// `epoll_wait`.
    EpollWait,
    /// `eventfd`.
    EventfdCreate,
    /// `write(2)` on an eventfd (the waker's signal).
    EventfdWrite,
    /// `read(2)` on an eventfd (the waker's drain).
    EventfdRead,
    /// `read(2)` on a signalfd.
    SignalfdRead,
    /// `socket(2)` for a listener or an outgoing connection.
    Socket,
    /// `connect(2)`.
    Connect,
    /// `accept4(2)`.
    Accept,
    /// `recv(2)`.
    Recv,
    /// `send(2)`.
    Send,
    /// `shutdown(2)`.
    Shutdown,
    /// `open("/dev/null")` for the listener's reserve descriptor.
    OpenReserve,
}

#[cfg(any(test, feature = "fault-injection"))]
impl Op {
    /// Every operation, in declaration order.
    pub const ALL: [Op; 16] = [
        Op::EpollCreate,
        Op::EpollAdd,
        Op::EpollMod,
        Op::EpollDel,
        Op::EpollWait,
        Op::EventfdCreate,
        Op::EventfdWrite,
        Op::EventfdRead,
        Op::SignalfdRead,
        Op::Socket,
        Op::Connect,
        Op::Accept,
        Op::Recv,
        Op::Send,
        Op::Shutdown,
        Op::OpenReserve,
    ];

    /// The calls the kernel may interrupt with `EINTR`.
    pub const INTERRUPTIBLE: [Op; 8] = [
        Op::EpollWait,
        Op::EventfdWrite,
        Op::EventfdRead,
        Op::SignalfdRead,
        Op::Connect,
        Op::Accept,
        Op::Recv,
        Op::Send,
    ];
}

/// What a plan does to one call.
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Fail with this errno; the syscall is not made.
    Fail(Errno),
    /// Move at most this many bytes (at least 1 when the caller asked for any,
    /// so a short read never reads as EOF). Ignored by calls that move no bytes.
    Short(usize),
}

#[cfg(any(test, feature = "fault-injection"))]
pub use imp::*;

#[cfg(any(test, feature = "fault-injection"))]
mod imp {
    use super::{Action, Errno, Op, Result};
    use std::cell::RefCell;

    type Decide = Box<dyn FnMut(Op, u64) -> Option<Action>>;

    struct Plan {
        decide: Decide,
        calls: [u64; Op::ALL.len()],
        injected: [u64; Op::ALL.len()],
    }

    thread_local! {
        static PLAN: RefCell<Option<Plan>> = const { RefCell::new(None) };
    }

    /// Installs a plan on the calling thread until the returned guard drops.
    ///
    /// `decide(op, n)` is asked before each hooked call; `n` counts the calls of
    /// `op` under this plan, from 0. Returning `None` lets the call through.
    /// Panics if a plan is already installed on this thread.
    pub fn install(decide: impl FnMut(Op, u64) -> Option<Action> + 'static) -> PlanGuard {
        PLAN.with(|p| {
            let mut p = p.borrow_mut();
            assert!(
                p.is_none(),
                "a fault plan is already installed on this thread"
            );
            *p = Some(Plan {
                decide: Box::new(decide),
                calls: [0; Op::ALL.len()],
                injected: [0; Op::ALL.len()],
            });
        });
        PlanGuard {
            _not_send: std::marker::PhantomData,
        }
    }

    /// Removes the thread's plan when dropped; reads its counters meanwhile.
    #[derive(Debug)]
    pub struct PlanGuard {
        _not_send: std::marker::PhantomData<*const ()>,
    }

    impl PlanGuard {
        /// Hooked calls of `op` made under the plan so far.
        pub fn calls(&self, op: Op) -> u64 {
            PLAN.with(|p| p.borrow().as_ref().map_or(0, |p| p.calls[op as usize]))
        }

        /// Calls of `op` the plan failed or shortened so far.
        pub fn injected(&self, op: Op) -> u64 {
            PLAN.with(|p| p.borrow().as_ref().map_or(0, |p| p.injected[op as usize]))
        }

        /// Injections over every operation.
        pub fn injected_total(&self) -> u64 {
            PLAN.with(|p| p.borrow().as_ref().map_or(0, |p| p.injected.iter().sum()))
        }
    }

    impl Drop for PlanGuard {
        fn drop(&mut self) {
            // `try_with`: the guard may drop while the thread's locals are torn down.
            let _ = PLAN.try_with(|p| p.borrow_mut().take());
        }
    }

    /// The hook: `Err(errno)` to fail the call, else how many of `len` bytes it
    /// may move.
    pub(crate) fn before(op: Op, len: usize) -> Result<usize> {
        PLAN.try_with(|p| {
            let mut p = p.borrow_mut();
            let Some(plan) = p.as_mut() else {
                return Ok(len);
            };
            let i = op as usize;
            let n = plan.calls[i];
            plan.calls[i] += 1;
            match (plan.decide)(op, n) {
                None => Ok(len),
                Some(Action::Fail(e)) => {
                    plan.injected[i] += 1;
                    Err(e)
                }
                Some(Action::Short(max)) => {
                    let lim = len.min(max.max(1));
                    if lim < len {
                        plan.injected[i] += 1;
                    }
                    Ok(lim)
                }
            }
        })
        .unwrap_or(Ok(len))
    }

    /// Plans that fail `op`s of `ops` with `errno` on every call numbered
    /// `n % period < burst` (so `period 2, burst 1` fails every other call).
    pub fn bursts(
        ops: &'static [Op],
        errno: Errno,
        period: u64,
        burst: u64,
    ) -> impl FnMut(Op, u64) -> Option<Action> {
        move |op, n| (ops.contains(&op) && n % period < burst).then_some(Action::Fail(errno))
    }
}

/// Release and normal builds: no plan, no cost.
#[cfg(not(any(test, feature = "fault-injection")))]
#[inline(always)]
pub(crate) fn before(_op: Op, len: usize) -> Result<usize> {
    Ok(len)
}
