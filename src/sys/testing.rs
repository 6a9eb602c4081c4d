//! Test-only helpers for the safe layers' unit tests (compiled for `cfg(test)`
//! only), so that the `unsafe` they need stays in `sys/`. They call libc
//! directly, never through the fault-injection hooks.

use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking, close-on-exec pipe: `(read end, write end)`.
pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: two new descriptors that only we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Writes one byte to `fd` (asserting it went).
pub fn write_byte(fd: &OwnedFd) {
    // SAFETY: writes one byte from a static buffer.
    let n = unsafe { libc::write(fd.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    assert_eq!(n, 1, "write: {}", std::io::Error::last_os_error());
}

/// Reads `fd` (non-blocking) until it has nothing more.
pub fn drain(fd: &OwnedFd) {
    let mut b = [0u8; 64];
    // SAFETY: reads into a stack buffer of the length given.
    while unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), b.len()) } > 0 {}
}

/// Takes back ownership of a descriptor released with `into_raw_fd`.
pub fn reclaim(fd: RawFd) -> OwnedFd {
    // SAFETY: test helper; the caller released `fd` and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Sends `signo` to the calling thread.
pub fn raise_in_thread(signo: i32) {
    // SAFETY: pthread_kill with our own thread id and a valid signal number.
    let rc = unsafe { libc::pthread_kill(libc::pthread_self(), signo) };
    assert_eq!(rc, 0);
}

/// A blocking TCP client to 127.0.0.1:`port` whose receive buffer was set to
/// `rcvbuf` bytes before connecting (so the window is small from the start).
pub fn connect_with_rcvbuf(port: u16, rcvbuf: i32) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor we own; the sockaddr is a
    // valid, fully initialised sockaddr_in of the size given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let s = TcpStream::from_raw_fd(fd);
        let rc = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&rcvbuf as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
        assert_eq!(rc, 0);
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        s
    }
}
