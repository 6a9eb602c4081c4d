//! The OS layer: the only module (with `ffi/`) that calls libc.
//!
//! Every syscall goes through [`cvt`], which turns the C convention (`-1` and
//! `errno`) into `Result<T, Errno>`. Owned descriptors are [`OwnedFd`], created
//! with `CLOEXEC`, and close on drop. Functions that only take a raw fd number
//! are safe: the kernel validates the number, and a wrong one gives `EBADF`,
//! never undefined behaviour in this process.

pub mod epoll;
pub mod eventfd;
pub mod fault;
pub mod signal;
pub mod socket;
#[cfg(test)]
pub mod testing;
pub mod unix;

use std::fmt;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// An `errno` value (always positive), or one of the library's own codes:
/// from [`Errno::LIBRARY_BASE`] (3000) up, never a kernel errno (Linux's stop
/// below 200). The C API returns `-value` either way ([`Errno::to_negative`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(libc::EPERM);
    pub const ENOENT: Errno = Errno(libc::ENOENT);
    pub const EINTR: Errno = Errno(libc::EINTR);
    pub const EBADF: Errno = Errno(libc::EBADF);
    pub const EAGAIN: Errno = Errno(libc::EAGAIN);
    pub const ENOMEM: Errno = Errno(libc::ENOMEM);
    pub const EBUSY: Errno = Errno(libc::EBUSY);
    pub const EEXIST: Errno = Errno(libc::EEXIST);
    pub const EINVAL: Errno = Errno(libc::EINVAL);
    pub const ERANGE: Errno = Errno(libc::ERANGE);
    pub const ENOTRECOVERABLE: Errno = Errno(libc::ENOTRECOVERABLE);
    pub const EIO: Errno = Errno(libc::EIO);
    pub const EPIPE: Errno = Errno(libc::EPIPE);
    pub const EMFILE: Errno = Errno(libc::EMFILE);
    pub const ENFILE: Errno = Errno(libc::ENFILE);
    pub const EPROTO: Errno = Errno(libc::EPROTO);
    pub const ENOBUFS: Errno = Errno(libc::ENOBUFS);
    pub const EMSGSIZE: Errno = Errno(libc::EMSGSIZE);
    pub const ETIMEDOUT: Errno = Errno(libc::ETIMEDOUT);
    pub const ECONNRESET: Errno = Errno(libc::ECONNRESET);
    pub const ECONNREFUSED: Errno = Errno(libc::ECONNREFUSED);
    pub const ECONNABORTED: Errno = Errno(libc::ECONNABORTED);
    pub const ESHUTDOWN: Errno = Errno(libc::ESHUTDOWN);
    pub const EDEADLK: Errno = Errno(libc::EDEADLK);
    pub const ECANCELED: Errno = Errno(libc::ECANCELED);
    pub const EADDRINUSE: Errno = Errno(libc::EADDRINUSE);
    pub const ENOSPC: Errno = Errno(libc::ENOSPC);
    pub const ENAMETOOLONG: Errno = Errno(libc::ENAMETOOLONG);
    pub const EAFNOSUPPORT: Errno = Errno(libc::EAFNOSUPPORT);
    pub const ENOTSUP: Errno = Errno(libc::ENOTSUP);
    pub const ENOTCONN: Errno = Errno(libc::ENOTCONN);

    /// The first of the library's own codes; 3000..=3099 are name-resolution
    /// failures (`3000 + n` for glibc's `EAI_*` value `-n`), from 3100 others.
    pub const LIBRARY_BASE: i32 = 3000;
    /// `EAI_BADFLAGS`: bad flags in the getaddrinfo hints.
    pub const EAI_BADFLAGS: Errno = Errno(3001);
    /// `EAI_NONAME`: the host name is not known.
    pub const EAI_NONAME: Errno = Errno(3002);
    /// `EAI_AGAIN`: temporary failure in name resolution.
    pub const EAI_AGAIN: Errno = Errno(3003);
    /// `EAI_FAIL`: non-recoverable failure in name resolution.
    pub const EAI_FAIL: Errno = Errno(3004);
    /// `EAI_NODATA`: the host exists but has no address.
    pub const EAI_NODATA: Errno = Errno(3005);
    /// `EAI_FAMILY`: address family not supported.
    pub const EAI_FAMILY: Errno = Errno(3006);
    /// `EAI_SOCKTYPE`: socket type not supported.
    pub const EAI_SOCKTYPE: Errno = Errno(3007);
    /// `EAI_SERVICE`: service not available for the socket type.
    pub const EAI_SERVICE: Errno = Errno(3008);
    /// `EAI_ADDRFAMILY`: the host has no address in the requested family.
    pub const EAI_ADDRFAMILY: Errno = Errno(3009);
    /// `EAI_MEMORY`: out of memory during name resolution.
    pub const EAI_MEMORY: Errno = Errno(3010);
    /// `EAI_OVERFLOW`: an argument buffer overflowed.
    pub const EAI_OVERFLOW: Errno = Errno(3012);
    /// A signal to watch is not blocked in the calling thread (see
    /// `EventLoop::signal_start`).
    pub const ENOTBLOCKED: Errno = Errno(3100);
    /// An object made before a `fork()`, used in the child.
    pub const EFORKED: Errno = Errno(3101);

    /// The calling thread's current `errno`.
    pub fn last() -> Errno {
        Errno(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }

    /// The value as the C API returns it: `-errno`.
    pub const fn to_negative(self) -> i32 {
        -self.0
    }

    /// True for the library's own codes (not a kernel errno).
    pub fn is_library(self) -> bool {
        self.0 >= Self::LIBRARY_BASE
    }

    /// A short English description of a library code (`None` for an errno).
    fn library_text(self) -> Option<String> {
        if !self.is_library() {
            return None;
        }
        if let Some(eai) = socket::eai_of(self) {
            // SAFETY: gai_strerror returns a static NUL-terminated string for any code.
            let s = unsafe { std::ffi::CStr::from_ptr(libc::gai_strerror(eai)) };
            return Some(s.to_string_lossy().into_owned());
        }
        if self == Self::ENOTBLOCKED {
            return Some("signal not blocked: block it in every thread first".into());
        }
        if self == Self::EFORKED {
            return Some("used in a forked child: the object belongs to the parent".into());
        }
        Some(format!("epoll-loop error {}", self.0))
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.library_text() {
            return write!(f, "Errno({}: {text})", self.0);
        }
        write!(
            f,
            "Errno({}: {})",
            self.0,
            std::io::Error::from_raw_os_error(self.0)
        )
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(text) = self.library_text() {
            return f.write_str(&text);
        }
        fmt::Display::fmt(&std::io::Error::from_raw_os_error(self.0), f)
    }
}

impl std::error::Error for Errno {}

impl From<Errno> for std::io::Error {
    /// An errno becomes that OS error; a library code an `Other` error
    /// carrying the `Errno` (so it never poses as an unrelated errno).
    fn from(e: Errno) -> Self {
        if e.is_library() {
            std::io::Error::other(e)
        } else {
            std::io::Error::from_raw_os_error(e.0)
        }
    }
}

pub type Result<T> = std::result::Result<T, Errno>;

/// Turns a libc return value into a `Result`: `-1` becomes the current errno.
pub(crate) fn cvt<T: IsMinusOne>(ret: T) -> Result<T> {
    if ret.is_minus_one() {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

pub(crate) trait IsMinusOne {
    fn is_minus_one(&self) -> bool;
}

macro_rules! impl_is_minus_one {
    ($($t:ty)*) => {$(
        impl IsMinusOne for $t {
            fn is_minus_one(&self) -> bool { *self == -1 }
        }
    )*}
}
impl_is_minus_one! { i32 isize i64 }

/// Wraps a raw descriptor the caller owns in an [`OwnedFd`].
///
/// # Safety
/// `fd` must be an open descriptor that nothing else will close.
pub unsafe fn owned_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the caller guarantees `fd` is open and exclusively owned.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// True when `fd` refers to an open descriptor (`fcntl(F_GETFD)` succeeds).
pub fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD reads descriptor flags only; any fd number is acceptable input.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// An id of the calling thread (`pthread_self`): never 0 for a running thread,
/// and cheap (one load from the thread pointer), so it can guard a hot path.
#[inline]
pub fn current_thread() -> usize {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() as usize }
}

/// Current `CLOCK_MONOTONIC` time in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Writes `msg` to stderr with one `write(2)`, ignoring errors (tracing only).
pub fn write_stderr(msg: &[u8]) {
    // SAFETY: `msg` is a valid readable buffer of `msg.len()` bytes; fd 2 may be closed,
    // in which case write fails harmlessly with EBADF.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

/// Reads an environment variable with `getenv(3)` (usable before `main`).
pub fn getenv_bytes(name: &std::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: `name` is NUL-terminated. getenv returns NULL or a pointer into the
    // environment block, which lives for the process (nothing here calls setenv).
    let p = unsafe { libc::getenv(name.as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is a non-NULL, NUL-terminated string from the environment.
    Some(unsafe { std::ffi::CStr::from_ptr(p) }.to_bytes())
}
