//! `epoll_create1`, `epoll_ctl`, `epoll_wait`.
//!
//! The event's data word carries a token (`u64`), never a pointer.

use super::fault::{self, Op};
use super::{Errno, Result, cvt};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

pub use libc::epoll_event as EpollEvent;

/// `epoll_create1(EPOLL_CLOEXEC)`.
pub fn create() -> Result<OwnedFd> {
    fault::before(Op::EpollCreate, 0)?;
    // SAFETY: plain syscall with a valid flag.
    let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    // SAFETY: epoll_create1 returned a new descriptor that we alone own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ctl(epfd: &OwnedFd, op: i32, fd: RawFd, events: u32, token: u64) -> Result<()> {
    let mut ev = libc::epoll_event { events, u64: token };
    // SAFETY: `ev` is a valid epoll_event (ignored for DEL, but must be non-NULL
    // for kernels before 2.6.9); fd numbers are validated by the kernel.
    cvt(unsafe { libc::epoll_ctl(epfd.as_raw_fd(), op, fd, &mut ev) })?;
    Ok(())
}

/// `EPOLL_CTL_ADD`.
pub fn add(epfd: &OwnedFd, fd: RawFd, events: u32, token: u64) -> Result<()> {
    fault::before(Op::EpollAdd, 0)?;
    ctl(epfd, libc::EPOLL_CTL_ADD, fd, events, token)
}

/// `EPOLL_CTL_MOD`.
pub fn modify(epfd: &OwnedFd, fd: RawFd, events: u32, token: u64) -> Result<()> {
    fault::before(Op::EpollMod, 0)?;
    ctl(epfd, libc::EPOLL_CTL_MOD, fd, events, token)
}

/// `EPOLL_CTL_DEL`.
pub fn delete(epfd: &OwnedFd, fd: RawFd) -> Result<()> {
    fault::before(Op::EpollDel, 0)?;
    ctl(epfd, libc::EPOLL_CTL_DEL, fd, 0, 0)
}

/// `epoll_wait` into `buf`; returns how many entries were filled.
/// `EINTR` is returned to the caller, which decides whether to retry.
pub fn wait(epfd: &OwnedFd, buf: &mut [EpollEvent], timeout_ms: i32) -> Result<usize> {
    let max = buf.len().min(i32::MAX as usize) as i32;
    if max == 0 {
        return Err(Errno::EINVAL);
    }
    fault::before(Op::EpollWait, 0)?;
    // SAFETY: `buf` is valid for `max` writable epoll_event entries.
    let n = cvt(unsafe { libc::epoll_wait(epfd.as_raw_fd(), buf.as_mut_ptr(), max, timeout_ms) })?;
    Ok(n as usize)
}
