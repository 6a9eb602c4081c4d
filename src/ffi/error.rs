//! Error codes: `>= 0` success, `-errno` failure, or one of the library's own
//! codes (from -3000 down); `epoll_loop_strerror`.
//!
//! Every message must be true for every call that can return its code: where
//! a code has several causes, the message names them (kept short), and a test
//! (`tests/errors.rs`) checks that each code in any "Errors:" line of the
//! header has its own message.

use super::guard::boundary;
use crate::sys::Errno;
use std::ffi::{CStr, c_char, c_int};

/// The object was made by the parent of this forked process: it shares the
/// parent's epoll set, eventfd and sockets, so a child may only release it
/// (`epoll_loop_free`, `echo_server_stop`, `epoll_loop_listener_close`). A
/// library code, not an errno.
pub const EPOLL_LOOP_EFORKED: c_int = -3101;

/// Name resolution: the host's address family is not supported
/// (glibc's `EAI_ADDRFAMILY`). The library's own codes start at -3000 and
/// are never `-errno`; -3000..-3099 are name-resolution failures
/// (`EPOLL_LOOP_EAI_x` is `EAI_x - 3000` with glibc's values).
pub const EPOLL_LOOP_EAI_ADDRFAMILY: c_int = -3009;
/// Name resolution: temporary failure (no answer from the name server, e.g.
/// no DNS server reachable); trying again later may work (`EAI_AGAIN`).
pub const EPOLL_LOOP_EAI_AGAIN: c_int = -3003;
/// Name resolution: bad flags in the lookup's hints (`EAI_BADFLAGS`).
pub const EPOLL_LOOP_EAI_BADFLAGS: c_int = -3001;
/// Name resolution: non-recoverable failure of the name server (`EAI_FAIL`).
pub const EPOLL_LOOP_EAI_FAIL: c_int = -3004;
/// Name resolution: address family not supported (`EAI_FAMILY`).
pub const EPOLL_LOOP_EAI_FAMILY: c_int = -3006;
/// Name resolution: out of memory (`EAI_MEMORY`).
pub const EPOLL_LOOP_EAI_MEMORY: c_int = -3010;
/// Name resolution: the host name exists but has no address (`EAI_NODATA`).
pub const EPOLL_LOOP_EAI_NODATA: c_int = -3005;
/// Name resolution: the host name is not known (`EAI_NONAME`).
pub const EPOLL_LOOP_EAI_NONAME: c_int = -3002;
/// Name resolution: a result buffer was too small (`EAI_OVERFLOW`).
pub const EPOLL_LOOP_EAI_OVERFLOW: c_int = -3012;
/// Name resolution: service not available for the socket type (`EAI_SERVICE`).
pub const EPOLL_LOOP_EAI_SERVICE: c_int = -3008;
/// Name resolution: socket type not supported (`EAI_SOCKTYPE`).
pub const EPOLL_LOOP_EAI_SOCKTYPE: c_int = -3007;

/// `epoll_loop_signal_start` of a signal that is not blocked in the calling
/// thread: block it in every thread first (`epoll_loop_signal_block`, in the
/// main thread before other threads start), or its default action would run
/// instead of the callback.
pub const EPOLL_LOOP_ENOTBLOCKED: c_int = -3100;

const _: () = {
    assert!(EPOLL_LOOP_ENOTBLOCKED == Errno::ENOTBLOCKED.to_negative());
    assert!(EPOLL_LOOP_EAI_ADDRFAMILY == Errno::EAI_ADDRFAMILY.to_negative());
    assert!(EPOLL_LOOP_EAI_AGAIN == Errno::EAI_AGAIN.to_negative());
    assert!(EPOLL_LOOP_EAI_BADFLAGS == Errno::EAI_BADFLAGS.to_negative());
    assert!(EPOLL_LOOP_EAI_FAIL == Errno::EAI_FAIL.to_negative());
    assert!(EPOLL_LOOP_EAI_FAMILY == Errno::EAI_FAMILY.to_negative());
    assert!(EPOLL_LOOP_EAI_MEMORY == Errno::EAI_MEMORY.to_negative());
    assert!(EPOLL_LOOP_EAI_NODATA == Errno::EAI_NODATA.to_negative());
    assert!(EPOLL_LOOP_EAI_NONAME == Errno::EAI_NONAME.to_negative());
    assert!(EPOLL_LOOP_EAI_OVERFLOW == Errno::EAI_OVERFLOW.to_negative());
    assert!(EPOLL_LOOP_EAI_SERVICE == Errno::EAI_SERVICE.to_negative());
    assert!(EPOLL_LOOP_EAI_SOCKTYPE == Errno::EAI_SOCKTYPE.to_negative());
};

const _: () = assert!(EPOLL_LOOP_EFORKED == -super::handle::EFORKED.0);

fn message(code: c_int) -> &'static CStr {
    match Errno(code) {
        Errno(0) => c"success",
        Errno(libc::E2BIG) => c"too big (E2BIG): a struct_size larger than this library's struct, with a field it does not know set (non-zero bytes past its struct) or above 4096 bytes: the program was built for a newer version",
        Errno(libc::EPERM) => c"operation not permitted (EPERM): e.g. register of an fd that cannot be polled (a regular file or directory), or a connect refused by a local firewall rule",
        Errno(libc::ENOENT) => c"no such entry (ENOENT): e.g. the fd is not registered on this loop, the timer id is unknown (stopped or fired), or the signal is not watched by this loop",
        Errno(libc::EINTR) => c"interrupted system call (EINTR)",
        Errno(libc::EIO) => c"input/output error (EIO)",
        Errno(libc::EBADF) => c"bad file descriptor (EBADF): the fd is negative or not open",
        Errno(libc::EAGAIN) => c"resource temporarily unavailable (EAGAIN): e.g. no thread could be started; try again",
        Errno(libc::ENOMEM) => c"out of memory (ENOMEM)",
        Errno(libc::EACCES) => c"permission denied (EACCES): e.g. a port below 1024 without the privilege",
        Errno(libc::EFAULT) => c"bad address (EFAULT)",
        Errno(libc::EBUSY) => c"busy (EBUSY): the loop is in use: _poll, _run or _free from inside a call on this loop (e.g. one of its callbacks), or a call while another thread is inside one",
        Errno(libc::EEXIST) => c"already exists (EEXIST): the fd is already registered on this loop, or the signal already watched by it",
        Errno(libc::EINVAL) => c"invalid argument (EINVAL)",
        Errno(libc::ENFILE) => c"too many open files in the system (ENFILE)",
        Errno(libc::EMFILE) => c"too many open files (EMFILE)",
        Errno(libc::ENOSPC) => c"no space left (ENOSPC): the buffer is too small for the result (address functions), or the epoll watch limit max_user_watches was reached (register)",
        Errno(libc::EPIPE) => c"broken pipe (EPIPE): the connection is closing or closed, by this side or by the peer",
        Errno(libc::ERANGE) => c"result out of range (ERANGE)",
        Errno(libc::ENOSYS) => c"function not implemented (ENOSYS)",
        Errno(libc::ELOOP) => c"too many levels of nesting (ELOOP): e.g. epoll sets watching each other",
        Errno(libc::EOVERFLOW) => c"value too large (EOVERFLOW)",
        Errno(libc::ENOTSOCK) => c"not a socket (ENOTSOCK)",
        Errno(libc::EOPNOTSUPP) => c"operation not supported (EOPNOTSUPP)",
        Errno(libc::EPROTONOSUPPORT) => c"protocol not supported (EPROTONOSUPPORT)",
        Errno(libc::EAFNOSUPPORT) => c"address family not supported (EAFNOSUPPORT)",
        Errno(libc::EADDRINUSE) => c"address already in use (EADDRINUSE)",
        Errno(libc::EADDRNOTAVAIL) => c"address not available (EADDRNOTAVAIL): not an address of this host, or no free local port",
        Errno(libc::ENETDOWN) => c"network is down (ENETDOWN)",
        Errno(libc::ENETUNREACH) => c"network is unreachable (ENETUNREACH)",
        Errno(libc::ECONNABORTED) => c"connection aborted (ECONNABORTED): e.g. by epoll_loop_conn_abort",
        Errno(libc::ECONNRESET) => c"connection reset by peer (ECONNRESET)",
        Errno(libc::ENOBUFS) => c"no buffer space available (ENOBUFS): for a connection write, its write queue would pass its cap (wait for on_drain); otherwise the kernel is short of socket memory",
        Errno(libc::EMSGSIZE) => c"message too long (EMSGSIZE): larger than the connection's write-queue cap",
        Errno(libc::EISCONN) => c"already connected (EISCONN)",
        Errno(libc::ENOTCONN) => c"not connected (ENOTCONN): not yet, or no longer",
        Errno(libc::ESHUTDOWN) => c"cannot send after shutdown (ESHUTDOWN): e.g. a post to a loop that is being freed",
        Errno(libc::ETIMEDOUT) => c"timed out (ETIMEDOUT)",
        Errno(libc::ECONNREFUSED) => c"connection refused (ECONNREFUSED)",
        Errno(libc::EHOSTDOWN) => c"host is down (EHOSTDOWN)",
        Errno(libc::EHOSTUNREACH) => c"host is unreachable (EHOSTUNREACH)",
        Errno(libc::EALREADY) => c"operation already in progress (EALREADY)",
        Errno(libc::EINPROGRESS) => c"operation in progress (EINPROGRESS)",
        Errno(libc::EDEADLK) => c"resource deadlock avoided (EDEADLK): echo_server_stop called from the server's own thread (its log callback)",
        Errno(libc::ECANCELED) => c"operation canceled (ECANCELED)",
        Errno(libc::ENOTRECOVERABLE) => c"state not recoverable (ENOTRECOVERABLE): an internal error (panic) poisoned this object; free it",
        Errno::EAI_ADDRFAMILY => c"host name has no address in the requested family (EPOLL_LOOP_EAI_ADDRFAMILY)",
        Errno::EAI_AGAIN => c"temporary failure in name resolution: try again (EPOLL_LOOP_EAI_AGAIN)",
        Errno::EAI_BADFLAGS => c"bad flags for name resolution (EPOLL_LOOP_EAI_BADFLAGS)",
        Errno::EAI_FAIL => c"non-recoverable failure in name resolution (EPOLL_LOOP_EAI_FAIL)",
        Errno::EAI_FAMILY => c"address family not supported by name resolution (EPOLL_LOOP_EAI_FAMILY)",
        Errno::EAI_MEMORY => c"out of memory in name resolution (EPOLL_LOOP_EAI_MEMORY)",
        Errno::EAI_NODATA => c"host name has no address (EPOLL_LOOP_EAI_NODATA)",
        Errno::EAI_NONAME => c"host name not known (EPOLL_LOOP_EAI_NONAME)",
        Errno::EAI_OVERFLOW => c"buffer overflow in name resolution (EPOLL_LOOP_EAI_OVERFLOW)",
        Errno::EAI_SERVICE => c"service not supported for the socket type (EPOLL_LOOP_EAI_SERVICE)",
        Errno::EAI_SOCKTYPE => c"socket type not supported by name resolution (EPOLL_LOOP_EAI_SOCKTYPE)",
        Errno::ENOTBLOCKED => c"signal not blocked (EPOLL_LOOP_ENOTBLOCKED): block it in every thread first (epoll_loop_signal_block)",
        Errno(3101) => c"used in a forked child (EPOLL_LOOP_EFORKED): this object belongs to the parent process; a child may only free it",
        _ => c"unknown error",
    }
}

/// The largest `struct_size` of a versioned struct that is read at all.
pub(crate) const MAX_STRUCT_SIZE: usize = 4096;

/// Reads a caller's versioned struct: one whose first field is `uint32_t
/// struct_size`, the `sizeof` the caller was compiled with, and that grows
/// only by fields added at the end (`echo_server_config`).
///
/// - `struct_size < min_size` (smaller than the first published layout):
///   `EINVAL`.
/// - Up to our size (an older program): the fields that lie wholly inside
///   `struct_size` (`field_ends`: each field's end offset, ascending) are read,
///   the others keep their value from `defaults`. Not one byte past
///   `struct_size` is read.
/// - Larger (a newer program): accepted when every byte past our struct is
///   zero (its newer fields are unset, and zero must mean "default" for
///   them); otherwise `E2BIG`, as Linux's `openat2` and `clone3` answer: a
///   field this library does not know is set, and ignoring it would lose the
///   caller's intent. Above [`MAX_STRUCT_SIZE`]: `E2BIG` without reading.
///
/// # Safety
/// `p` is non-NULL, aligned for `T`, and points to at least `struct_size`
/// readable bytes (at least the 4 of `struct_size` itself); bytes that form
/// fields of `T` hold valid values of their types.
pub(crate) unsafe fn read_sized<T: Copy>(
    p: *const T,
    defaults: T,
    min_size: usize,
    field_ends: &[usize],
) -> Result<T, Errno> {
    // SAFETY: per the contract, the first 4 bytes are the u32 struct_size.
    let size = unsafe { p.cast::<u32>().read() } as usize;
    if size < min_size {
        return Err(Errno::EINVAL);
    }
    if size > MAX_STRUCT_SIZE {
        return Err(Errno(libc::E2BIG));
    }
    let ours = std::mem::size_of::<T>();
    if size > ours {
        // SAFETY: the caller's struct has `size` readable bytes; [ours, size) lies inside.
        let tail = unsafe { std::slice::from_raw_parts(p.cast::<u8>().add(ours), size - ours) };
        if tail.iter().any(|&b| b != 0) {
            return Err(Errno(libc::E2BIG));
        }
    }
    let n = field_ends
        .iter()
        .copied()
        .filter(|&end| end <= size.min(ours))
        .max()
        .unwrap_or(0);
    let mut out = defaults;
    // SAFETY: `n <= size` bytes are readable at `p` and `n <= size_of::<T>()`
    // fit in `out`; they are whole fields of `T` (valid values, per the
    // contract) and the padding between them; the regions do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(p.cast::<u8>(), (&mut out as *mut T).cast::<u8>(), n) };
    Ok(out)
}

/// Describes an error code returned by this library.
///
/// Returns: a static, NUL-terminated English message naming the errno constant
/// (for example "bad file descriptor (EBADF): the fd is negative or not
/// open") or the library's own constant ("host name not known
/// (EPOLL_LOOP_EAI_NONAME)"); "success" for 0; "unknown error" for codes it
/// does not know. Both `-EBADF` and `EBADF` are accepted.
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

    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq)]
    struct V {
        struct_size: u32,
        a: u32,
        b: u64,
        c: u16,
    }

    const ENDS: [usize; 4] = [4, 8, 16, 18];

    fn read(bytes: &[u8]) -> Result<V, Errno> {
        #[repr(C, align(8))]
        struct Buf([u8; 8192]);
        let mut buf = Buf([0; 8192]);
        buf.0[..bytes.len()].copy_from_slice(bytes);
        let d = V {
            struct_size: 0,
            a: 1,
            b: 2,
            c: 3,
        };
        // SAFETY: an aligned buffer of 8192 readable bytes, any bytes valid for V's fields.
        unsafe { read_sized(buf.0.as_ptr().cast::<V>(), d, 8, &ENDS) }
    }

    fn v_bytes(size: u32) -> Vec<u8> {
        let mut v = size.to_ne_bytes().to_vec();
        v.extend(10u32.to_ne_bytes());
        v.extend(20u64.to_ne_bytes());
        v.extend(30u16.to_ne_bytes());
        v.resize(24, 0xee); // our padding: never checked
        v
    }

    #[test]
    fn versioned_structs_read_whole_fields_and_refuse_unknown_ones() {
        assert_eq!(
            read(&v_bytes(7)),
            Err(Errno::EINVAL),
            "below the first layout"
        );
        let r = read(&v_bytes(8)).unwrap();
        assert_eq!((r.a, r.b, r.c), (10, 2, 3), "only struct_size and a");
        let r = read(&v_bytes(17)).unwrap();
        assert_eq!((r.a, r.b, r.c), (10, 20, 3), "c is cut: defaulted");
        let r = read(&v_bytes(24)).unwrap();
        assert_eq!((r.a, r.b, r.c), (10, 20, 30));
        let mut newer = v_bytes(64);
        newer.resize(64, 0);
        let r = read(&newer).unwrap();
        assert_eq!((r.a, r.b, r.c), (10, 20, 30), "newer, zero tail");
        newer[63] = 1;
        assert_eq!(
            read(&newer),
            Err(Errno(libc::E2BIG)),
            "a field we do not know"
        );
        let mut huge = v_bytes(4097);
        huge.resize(4097, 0);
        assert_eq!(read(&huge), Err(Errno(libc::E2BIG)), "past the cap");
        let mut cap = v_bytes(4096);
        cap.resize(4096, 0);
        assert!(read(&cap).is_ok(), "the cap itself");
    }

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
        assert!(msg(EPOLL_LOOP_EAI_NONAME).contains("EPOLL_LOOP_EAI_NONAME"));
        assert!(msg(EPOLL_LOOP_ENOTBLOCKED).contains("epoll_loop_signal_block"));
        assert!(msg(-libc::E2BIG).contains("struct_size"));
        assert_eq!(msg(-99999), "unknown error");
        assert_eq!(msg(c_int::MIN), "unknown error");
    }
}
