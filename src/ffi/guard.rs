//! The panic boundary and the pointer helpers.
//!
//! The guard sits *inside* each exported body, so the `extern "C"` signatures
//! stay literal for cbindgen. [`PanicValue`] picks what a panicking function
//! returns: `-ENOTRECOVERABLE` for `int`, a fixed string for `const char *`.
//! Functions that work on an object go through [`with_object`], which also marks
//! the object poisoned after a panic so that it refuses further work.

use crate::sys::Errno;
use std::cell::Cell;
use std::ffi::{c_char, c_int};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

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

/// The header every C-visible object starts with: a live marker (SQLite-style
/// magic number, poisoned on free), a poison flag set by a panic, and a test-only
/// switch that makes the next call panic.
pub(crate) struct ObjectHeader {
    magic: AtomicU64,
    poisoned: AtomicBool,
    panic_next: Cell<bool>,
}

/// Written over the magic number by `_free`, so a freed handle reads as dead.
const DEAD: u64 = 0xDEAD_DEAD_DEAD_DEAD;

impl ObjectHeader {
    pub(crate) fn new(magic: u64) -> Self {
        ObjectHeader {
            magic: AtomicU64::new(magic),
            poisoned: AtomicBool::new(false),
            panic_next: Cell::new(false),
        }
    }

    pub(crate) fn is_live(&self, magic: u64) -> bool {
        self.magic.load(Ordering::Relaxed) == magic
    }

    pub(crate) fn kill(&self) {
        self.magic.store(DEAD, Ordering::Relaxed);
    }

    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }

    pub(crate) fn arm_panic(&self) {
        self.panic_next.set(true);
    }
}

/// A C-visible object with an [`ObjectHeader`].
pub(crate) trait Object {
    const MAGIC: u64;
    fn header(&self) -> &ObjectHeader;

    /// Refuses a call the object cannot take from this thread right now (a
    /// loop being run by another thread answers `EBUSY`). Checked by
    /// [`with_object`] after the live marker.
    #[inline]
    fn check_caller(&self) -> Result<(), Errno> {
        Ok(())
    }
}

/// How many freed handles keep their memory (marked dead) in [`retire`].
pub(crate) const QUARANTINE: usize = 256;

struct Retired {
    addr: usize,
    free: unsafe fn(usize),
}

static RETIRED: std::sync::Mutex<std::collections::VecDeque<Retired>> =
    std::sync::Mutex::new(std::collections::VecDeque::new());

/// Keeps the memory of a freed handle for a while instead of releasing it, so
/// that using the handle again (or freeing it twice) reads its dead marker,
/// not memory the allocator has reused: such a call reliably answers `EINVAL`
/// for the [`QUARANTINE`] most recently freed handles. Only the oldest one's
/// memory is released. Costs nothing on any path but `_free`.
///
/// # Safety
/// `ptr` came from `Box::into_raw`, its marker is dead ([`ObjectHeader::kill`]),
/// everything it owns was already dropped (what is left drops trivially), and
/// nothing else will free it.
pub(crate) unsafe fn retire<O: Object>(ptr: *mut O) {
    unsafe fn free<O>(addr: usize) {
        // SAFETY: `addr` is a retired `Box<O>` (see `retire`); dropping it only
        // releases the memory.
        drop(unsafe { Box::from_raw(addr as *mut O) });
    }
    let evicted = {
        let mut q = RETIRED.lock().unwrap_or_else(|p| p.into_inner());
        q.push_back(Retired {
            addr: ptr as usize,
            free: free::<O>,
        });
        if q.len() > QUARANTINE {
            q.pop_front()
        } else {
            None
        }
    };
    if let Some(old) = evicted {
        // SAFETY: retired by this function, evicted once, so freed once.
        unsafe { (old.free)(old.addr) };
    }
}

/// Checks `ptr` (NULL gives `EINVAL`, a dead or foreign marker `EINVAL`, a
/// poisoned object `ENOTRECOVERABLE`, a caller the object refuses
/// ([`Object::check_caller`]) its code), then runs `f` inside the panic
/// boundary; a panic poisons the object.
///
/// # Safety
/// `ptr` is NULL or points to memory this library allocated for an `O`. A freed
/// pointer is caught for certain while its memory is in quarantine ([`retire`]),
/// on a best-effort basis afterwards (its marker is read).
pub(crate) unsafe fn with_object<O: Object>(
    ptr: *const O,
    f: impl FnOnce(&O) -> Result<c_int, Errno>,
) -> c_int {
    // SAFETY: the caller passes NULL or a pointer to an `O` this library made.
    let Some(obj) = (unsafe { ptr.as_ref() }) else {
        return -libc::EINVAL;
    };
    let h = obj.header();
    if !h.is_live(O::MAGIC) {
        return -libc::EINVAL;
    }
    if h.is_poisoned() {
        return -libc::ENOTRECOVERABLE;
    }
    if let Err(e) = obj.check_caller() {
        return e.to_negative();
    }
    match catch_unwind(AssertUnwindSafe(|| {
        if h.panic_next.take() {
            panic!("epoll_loop: panic forced by the test hook");
        }
        f(obj)
    })) {
        Ok(r) => code(r),
        Err(_) => {
            h.poisoned.store(true, Ordering::Relaxed);
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
