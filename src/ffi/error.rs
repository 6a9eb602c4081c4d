//! Error codes: `>= 0` success, `-errno` failure; `epoll_loop_strerror`.

use super::guard::boundary;
use std::ffi::{CStr, c_char, c_int};

/// The object was made by the parent of this forked process: it shares the
/// parent's epoll set, eventfd and sockets, so a child may only release it
/// (`epoll_loop_free`, `echo_server_stop`, `epoll_loop_listener_close`). A
/// library code, not an errno.
pub const EPOLL_LOOP_EFORKED: c_int = -3101;

const _: () = assert!(EPOLL_LOOP_EFORKED == -super::handle::EFORKED.0);

fn message(errno: c_int) -> &'static CStr {
    match errno {
        0 => c"success",
        libc::EPERM => c"operation not permitted (EPERM): for register, the fd does not support polling, e.g. a regular file or directory",
        libc::ENOENT => c"no such entry (ENOENT): fd not registered here, timer id unknown (stopped or fired), or host name not found",
        libc::EINTR => c"interrupted system call (EINTR)",
        libc::EIO => c"input/output error (EIO)",
        libc::EBADF => c"bad file descriptor (EBADF)",
        libc::EAGAIN => c"resource temporarily unavailable (EAGAIN)",
        libc::ENOMEM => c"out of memory (ENOMEM)",
        libc::EACCES => c"permission denied (EACCES)",
        libc::EFAULT => c"bad address (EFAULT)",
        libc::EBUSY => c"busy (EBUSY): not allowed from inside one of this loop's callbacks",
        libc::EEXIST => c"already exists (EEXIST): the fd is already registered",
        libc::EINVAL => c"invalid argument (EINVAL)",
        libc::ENFILE => c"too many open files in the system (ENFILE)",
        libc::EMFILE => c"too many open files (EMFILE)",
        libc::ENOSPC => c"no space left (ENOSPC): the epoll watch limit (max_user_watches) was reached",
        libc::EPIPE => c"broken pipe (EPIPE)",
        libc::ERANGE => c"result out of range (ERANGE)",
        libc::ENOSYS => c"function not implemented (ENOSYS)",
        libc::ELOOP => c"too many levels of nesting (ELOOP)",
        libc::EOVERFLOW => c"value too large (EOVERFLOW)",
        libc::ENOTSOCK => c"not a socket (ENOTSOCK)",
        libc::EOPNOTSUPP => c"operation not supported (EOPNOTSUPP)",
        libc::EAFNOSUPPORT => c"address family not supported (EAFNOSUPPORT)",
        libc::EADDRINUSE => c"address already in use (EADDRINUSE)",
        libc::EADDRNOTAVAIL => c"address not available (EADDRNOTAVAIL)",
        libc::ENETDOWN => c"network is down (ENETDOWN)",
        libc::ENETUNREACH => c"network is unreachable (ENETUNREACH)",
        libc::ECONNABORTED => c"connection aborted (ECONNABORTED)",
        libc::ECONNRESET => c"connection reset by peer (ECONNRESET)",
        libc::ENOBUFS => c"no buffer space available (ENOBUFS): the connection's write queue is full",
        libc::EMSGSIZE => c"message too long (EMSGSIZE): larger than the connection's write-queue cap",
        libc::EISCONN => c"already connected (EISCONN)",
        libc::ENOTCONN => c"not connected (ENOTCONN)",
        libc::ESHUTDOWN => c"cannot send after shutdown (ESHUTDOWN)",
        libc::ETIMEDOUT => c"timed out (ETIMEDOUT)",
        libc::ECONNREFUSED => c"connection refused (ECONNREFUSED)",
        libc::EHOSTUNREACH => c"host is unreachable (EHOSTUNREACH)",
        libc::EALREADY => c"operation already in progress (EALREADY)",
        libc::EINPROGRESS => c"operation in progress (EINPROGRESS)",
        libc::EDEADLK => c"resource deadlock avoided (EDEADLK): a server cannot be stopped from its own thread",
        libc::ECANCELED => c"operation canceled (ECANCELED)",
        libc::ENOTRECOVERABLE => c"state not recoverable (ENOTRECOVERABLE): an internal error (panic) poisoned this object; free it",
        3101 => c"used in a forked child (EPOLL_LOOP_EFORKED): this object belongs to the parent process; a child may only free it",
        _ => c"unknown error",
    }
}

/// Describes an error code returned by this library.
///
/// Returns: a static, NUL-terminated English message naming the errno constant
/// (for example "bad file descriptor (EBADF)"); "success" for 0; "unknown error"
/// for codes it does not know. Both `-EBADF` and `EBADF` are accepted.
/// Errors: none.
/// Ownership: the string is static; never free it.
/// Thread safety: safe from any thread.
#[unsafe(no_mangle)]
pub extern "C" fn epoll_loop_strerror(code: c_int) -> *const c_char {
    boundary(|| message(code.checked_abs().unwrap_or(-1)).as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(code: c_int) -> String {
        // SAFETY: epoll_loop_strerror returns a static NUL-terminated string.
        unsafe { CStr::from_ptr(epoll_loop_strerror(code)) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn messages_name_the_code() {
        assert_eq!(msg(0), "success");
        assert!(msg(-libc::EBADF).contains("EBADF"));
        assert!(msg(libc::EBADF).contains("EBADF"));
        assert!(msg(-libc::ENOTRECOVERABLE).contains("ENOTRECOVERABLE"));
        assert_eq!(msg(-99999), "unknown error");
        assert_eq!(msg(c_int::MIN), "unknown error");
    }
}
