//! `eventfd(2)`: the cross-thread waker.

use super::fault::{self, Op};
use super::{Errno, Result, cvt};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A non-blocking, close-on-exec eventfd with counter 0.
pub fn create() -> Result<OwnedFd> {
    fault::before(Op::EventfdCreate, 0)?;
    // SAFETY: plain syscall with valid flags.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: eventfd returned a new descriptor that we alone own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds 1 to the counter. A full counter (`EAGAIN`) already means "signalled".
/// Async-signal-safe: one `write(2)`.
pub fn signal(fd: &OwnedFd) -> Result<()> {
    let one: u64 = 1;
    loop {
        let r = fault::before(Op::EventfdWrite, 8).and_then(|_| {
            // SAFETY: writes 8 bytes from a valid u64 on the stack.
            cvt(unsafe { libc::write(fd.as_raw_fd(), (&one as *const u64).cast(), 8) })
        });
        match r {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Resets the counter to 0; `EAGAIN` (already 0) is not an error.
pub fn drain(fd: &OwnedFd) -> Result<()> {
    let mut v: u64 = 0;
    loop {
        let r = fault::before(Op::EventfdRead, 8).and_then(|_| {
            // SAFETY: reads 8 bytes into a valid u64 on the stack.
            cvt(unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) })
        });
        match r {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}
