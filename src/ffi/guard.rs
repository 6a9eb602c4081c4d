//! The panic boundary and the pointer helpers.
//!
//! The guard sits *inside* each exported body, so the `extern "C"` signatures
//! stay literal for cbindgen. [`PanicValue`] picks what a panicking function
//! returns: `-ENOTRECOVERABLE` for `int`, a fixed string for `const char *`.
//! Functions that work on an object go through [`guarded`], which also marks
//! the object poisoned after a panic so that it refuses further work. How a
//! handle becomes an object is [`super::handle`]'s business.

use super::handle::Poison;
use crate::sys::Errno;
use std::ffi::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// What an exported function returns if its body panicked.
pub(crate) trait PanicValue {
    fn on_panic() -> Self;
}

impl PanicValue for c_int {
    fn on_panic() -> Self {
        -libc::ENOTRECOVERABLE
    }
}

impl PanicValue for u32 {
    fn on_panic() -> Self {
        0
    }
}

impl PanicValue for *const c_char {
    fn on_panic() -> Self {
        c"internal error (panic) in epoll_loop".as_ptr()
    }
}

/// Runs `f`, turning a panic into `T::on_panic()`.
pub(crate) fn boundary<T: PanicValue>(f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|_| T::on_panic())
}

/// `Ok(n)` becomes `n`, `Err(e)` becomes `-errno`.
pub(crate) fn code(r: Result<c_int, Errno>) -> c_int {
    r.unwrap_or_else(Errno::to_negative)
}

/// Runs `f` for a call on an object inside the panic boundary: refuses a
/// poisoned object (`ENOTRECOVERABLE`), and poisons it if `f` panics.
pub(crate) fn guarded(poison: &Poison, f: impl FnOnce() -> Result<c_int, Errno>) -> c_int {
    if poison.is_poisoned() {
        return -libc::ENOTRECOVERABLE;
    }
    match catch_unwind(AssertUnwindSafe(|| {
        if poison.take_panic() {
            panic!("epoll_loop: panic forced by the test hook");
        }
        f()
    })) {
        Ok(r) => code(r),
        Err(_) => {
            poison.poison();
            -libc::ENOTRECOVERABLE
        }
    }
}

/// Writes `value` through an out-pointer (only called on success).
///
/// # Safety
/// `out` is non-NULL and valid for a write of `T`.
pub(crate) unsafe fn write_out<T>(out: *mut T, value: T) {
    // SAFETY: guaranteed by the caller.
    unsafe { out.write(value) };
}
