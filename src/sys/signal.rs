//! `signalfd(2)` and thread signal masks.

use super::fault::{self, Op};
use super::{Errno, Result, cvt};
use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// A set of signals (`sigset_t`).
#[derive(Clone, Copy)]
pub struct SigSet(libc::sigset_t);

impl std::fmt::Debug for SigSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigSet")
    }
}

impl SigSet {
    /// The empty set.
    pub fn empty() -> SigSet {
        let mut s = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: sigemptyset initialises the set it is given.
        unsafe { libc::sigemptyset(s.as_mut_ptr()) };
        // SAFETY: initialised just above.
        SigSet(unsafe { s.assume_init() })
    }

    /// Adds `signo` (`EINVAL` when out of range).
    pub fn add(&mut self, signo: i32) -> Result<()> {
        // SAFETY: `self.0` is an initialised sigset_t.
        cvt(unsafe { libc::sigaddset(&mut self.0, signo) })?;
        Ok(())
    }

    /// Removes `signo`.
    pub fn remove(&mut self, signo: i32) -> Result<()> {
        // SAFETY: `self.0` is an initialised sigset_t.
        cvt(unsafe { libc::sigdelset(&mut self.0, signo) })?;
        Ok(())
    }

    /// True when `signo` is in the set.
    pub fn contains(&self, signo: i32) -> bool {
        // SAFETY: `self.0` is an initialised sigset_t.
        unsafe { libc::sigismember(&self.0, signo) == 1 }
    }
}

/// The calling thread's blocked-signal mask.
pub fn thread_mask() -> Result<SigSet> {
    let mut old = SigSet::empty();
    // SAFETY: a NULL new set only queries; `old` is a valid writable set.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut old.0) };
    if r != 0 {
        return Err(Errno(r));
    }
    Ok(old)
}

/// Blocks `signo` in the calling thread (threads created afterwards inherit it).
///
/// `EINVAL` for `SIGKILL` and `SIGSTOP`: the kernel silently leaves them out of
/// any mask, so reporting success would be a lie.
pub fn block(signo: i32) -> Result<()> {
    if signo == libc::SIGKILL || signo == libc::SIGSTOP {
        return Err(Errno::EINVAL);
    }
    let mut set = SigSet::empty();
    set.add(signo)?;
    // SAFETY: `set` is a valid set; the old mask is not wanted.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set.0, std::ptr::null_mut()) };
    if r != 0 {
        return Err(Errno(r));
    }
    Ok(())
}

/// A new non-blocking, close-on-exec signalfd for `mask`.
pub fn signalfd_new(mask: &SigSet) -> Result<OwnedFd> {
    // SAFETY: `mask` is a valid set; -1 asks for a new descriptor.
    let fd = cvt(unsafe { libc::signalfd(-1, &mask.0, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) })?;
    // SAFETY: signalfd returned a new descriptor we alone own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Replaces the mask of an existing signalfd.
pub fn signalfd_set(fd: &OwnedFd, mask: &SigSet) -> Result<()> {
    // SAFETY: `fd` is a signalfd we own and `mask` a valid set.
    cvt(unsafe { libc::signalfd(fd.as_raw_fd(), &mask.0, 0) })?;
    Ok(())
}

/// Reads one pending signal number; `None` when there is none (`EAGAIN`).
pub fn signalfd_read(fd: &OwnedFd) -> Result<Option<i32>> {
    let mut info = MaybeUninit::<libc::signalfd_siginfo>::uninit();
    loop {
        let n = size_of::<libc::signalfd_siginfo>();
        let r = fault::before(Op::SignalfdRead, n).and_then(|_| {
            // SAFETY: `info` is writable for exactly one signalfd_siginfo.
            cvt(unsafe { libc::read(fd.as_raw_fd(), info.as_mut_ptr().cast(), n) })
        });
        match r {
            // SAFETY: the kernel filled a whole siginfo (reads are all-or-nothing).
            Ok(got) if got as usize == n => {
                return Ok(Some(unsafe { info.assume_init() }.ssi_signo as i32));
            }
            Ok(_) => return Err(Errno(libc::EIO)),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigkill_and_sigstop_cannot_be_blocked() {
        for s in [libc::SIGKILL, libc::SIGSTOP] {
            assert_eq!(block(s), Err(Errno::EINVAL));
            assert!(!thread_mask().unwrap().contains(s));
        }
        assert_eq!(block(0), Err(Errno::EINVAL));
        assert_eq!(block(1000), Err(Errno::EINVAL));
    }
}
