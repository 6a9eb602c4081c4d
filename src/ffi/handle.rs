//! Handles: what a C program holds instead of pointers.
//!
//! Every C object (`epoll_loop *`, `echo_server *`, `epoll_loop_conn *`,
//! `epoll_loop_listener *`) is a *handle value*, not an address:
//!
//! ```text
//!  63  62..56  55..32   31..0
//!   0   tag    index    generation
//! ```
//!
//! `index` names a slot in the [`Table`] of that type, `generation` the life of
//! the slot the handle was made for, `tag` the type. A slot's generation moves
//! on when its object is freed, so a stale handle (used after `_free`, `_stop`,
//! `on_close` or `_listener_close`, however long after, whatever was allocated
//! since) fails the generation check for certain: `-EINVAL`, and no freed
//! memory is read. The slots themselves are never freed (a table grows to its
//! peak number of live objects), so checking a handle never touches memory
//! that is gone. A foreign pointer (a real address) has tag 0 and is refused
//! too. The C type stays an opaque pointer; C never dereferences it.
//!
//! A slot's state word holds the generation and a count of callers inside a
//! call on the object ([`Ref`]). [`Table::remove`] bumps the generation with
//! one compare-and-swap, so of two threads freeing one object exactly one
//! wins, and then waits until the callers already inside have left before it
//! hands the object back for dropping. Those callers are short (a `_stop`,
//! `_wake`, `_post` or `get_stats` from another thread, or a call refused with
//! `EBUSY`): the blocking calls (`_poll`, `_run`) run under the loop's owner
//! check, which `_free` takes first.
//!
//! Costs: creating or freeing an object takes a short spin lock (the free
//! list); looking a handle up is two atomic read-modify-writes on its slot.
//!
//! # Fork
//! A child made by `fork()` inherits the tables and every object, but not the
//! threads; objects made before the fork belong to the parent (they share its
//! epoll set, eventfds and sockets). [`forks`] counts the forks this process
//! went through (a `pthread_atfork` child handler), objects record the count
//! they were made at, and the C functions refuse objects of an earlier
//! generation (`EPOLL_LOOP_EFORKED`) except to free them. The atfork handlers
//! also hold the free-list lock across the fork, so a child never inherits it
//! locked.

use crate::sys::Errno;
use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// `EPOLL_LOOP_EFORKED` as an [`Errno`]: the object belongs to the parent of
/// this forked process.
pub(crate) const EFORKED: Errno = Errno::EFORKED;

/// Type tags (bit 63 stays clear; user-space addresses have 0 here).
pub(crate) const TAG_LOOP: u8 = 0x4c; // 'L'
pub(crate) const TAG_SERVER: u8 = 0x53; // 'S'
pub(crate) const TAG_CONN: u8 = 0x43; // 'C'
pub(crate) const TAG_LISTENER: u8 = 0x4e; // 'N'

const INDEX_BITS: u32 = 24;
/// Most objects of one type alive at once.
pub(crate) const MAX_SLOTS: u32 = 1 << INDEX_BITS;
/// Chunk `k` holds `FIRST_CHUNK << k` slots: 19 chunks reach past `MAX_SLOTS`.
const FIRST_CHUNK: usize = 64;
const CHUNKS: usize = 19;
const REFS: u64 = 0xffff_ffff;

/// A handle value as C sees it.
pub(crate) type Handle = u64;

fn encode(tag: u8, index: u32, generation: u32) -> Handle {
    (u64::from(tag) << 56) | (u64::from(index) << 32) | u64::from(generation)
}

/// `(tag, index, generation)`, or `None` for a value no table ever made.
fn decode(h: Handle) -> Option<(u8, u32, u32)> {
    let generation = h as u32;
    if h >> 63 != 0 || generation == 0 {
        return None;
    }
    Some((
        (h >> 56) as u8,
        ((h >> 32) as u32) & (MAX_SLOTS - 1),
        generation,
    ))
}

fn next_generation(g: u32) -> u32 {
    g.wrapping_add(1).max(1)
}

/// Converts the pointer C passed into the handle value it carries.
pub(crate) fn from_ptr<T>(p: *const T) -> Handle {
    p as usize as Handle
}

/// The pointer C receives for handle `h` (not an address: never dereferenced).
pub(crate) fn to_ptr<T>(h: Handle) -> *mut T {
    std::ptr::without_provenance_mut(h as usize)
}

struct Slot<T> {
    /// `generation << 32 | callers inside`.
    state: AtomicU64,
    /// The object (a `Box<T>`), NULL while the slot is free.
    value: AtomicPtr<T>,
}

/// A tiny spin lock for the free lists (held for a `VecDeque` push or pop).
struct SpinLock(AtomicBool);

impl SpinLock {
    fn lock(&self) {
        let mut spins = 0u32;
        while self
            .0
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    fn unlock(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// One lock for every table's free list, so that the fork handlers can hold it.
static FREE_LOCK: SpinLock = SpinLock(AtomicBool::new(false));
static FORKS: AtomicU32 = AtomicU32::new(0);
static ATFORK: Once = Once::new();

extern "C" fn before_fork() {
    FREE_LOCK.lock();
}

extern "C" fn after_fork_parent() {
    FREE_LOCK.unlock();
}

extern "C" fn after_fork_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
    FREE_LOCK.unlock();
}

/// How many times this process has been forked into (0 in a process that
/// never was a `fork()` child). One relaxed load.
#[inline]
pub(crate) fn forks() -> u32 {
    FORKS.load(Ordering::Relaxed)
}

/// Installs the fork handlers (once per process, before the first object).
fn watch_forks() {
    ATFORK.call_once(|| {
        // SAFETY: the three handlers are plain functions touching only atomics;
        // pthread_atfork just records them.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_parent),
                Some(after_fork_child),
            )
        };
    });
}

/// The slots of one C type.
pub(crate) struct Table<T> {
    tag: u8,
    chunks: [AtomicPtr<Slot<T>>; CHUNKS],
    /// Free indices, oldest first (under `FREE_LOCK`): reusing the slot freed
    /// longest ago keeps generations far apart.
    free: UnsafeCell<VecDeque<u32>>,
    /// The next index never used (under `FREE_LOCK`).
    fresh: UnsafeCell<u32>,
}

// SAFETY: the slot words are atomics; `free` and `fresh` are touched only under
// FREE_LOCK. The objects themselves are reached through `Ref`s by the threads
// each C type's rules allow (documented at each table): loop-affine state only
// under the loop's owner check, what other threads may read is `Sync` (atomics,
// `Arc`s of `Sync` data, immutable fields).
unsafe impl<T> Sync for Table<T> {}

fn chunk_of(index: u32) -> (usize, usize) {
    let n = index as usize / FIRST_CHUNK + 1;
    let k = (usize::BITS - 1 - n.leading_zeros()) as usize;
    (k, index as usize - FIRST_CHUNK * ((1 << k) - 1))
}

/// A caller inside a call on a live object: the object cannot be freed until
/// it is dropped.
pub(crate) struct Ref<'a, T> {
    slot: &'a Slot<T>,
    value: &'a T,
}

impl<T> std::ops::Deref for Ref<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> Drop for Ref<'_, T> {
    fn drop(&mut self) {
        self.slot.state.fetch_sub(1, Ordering::Release);
    }
}

impl<T> Table<T> {
    pub(crate) const fn new(tag: u8) -> Table<T> {
        Table {
            tag,
            chunks: [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS],
            free: UnsafeCell::new(VecDeque::new()),
            fresh: UnsafeCell::new(0),
        }
    }

    fn slot(&self, index: u32) -> Option<&Slot<T>> {
        let (k, off) = chunk_of(index);
        let chunk = self.chunks.get(k)?.load(Ordering::Acquire);
        if chunk.is_null() {
            return None;
        }
        // SAFETY: chunk `k` was allocated with `FIRST_CHUNK << k` slots (see
        // `take_index`) and is never freed; `off` is below that.
        Some(unsafe { &*chunk.add(off) })
    }

    /// Takes a free index, making a new chunk when needed (under the lock).
    fn take_index(&self) -> Result<u32, Errno> {
        FREE_LOCK.lock();
        // SAFETY: `free` and `fresh` are only touched under FREE_LOCK, held here.
        let r = unsafe {
            let free = &mut *self.free.get();
            let fresh = &mut *self.fresh.get();
            if let Some(i) = free.pop_front() {
                Ok(i)
            } else if *fresh >= MAX_SLOTS {
                Err(Errno::ENOMEM)
            } else {
                let i = *fresh;
                let (k, off) = chunk_of(i);
                if off == 0 {
                    let slots: Box<[Slot<T>]> = (0..FIRST_CHUNK << k)
                        .map(|_| Slot {
                            state: AtomicU64::new(1 << 32),
                            value: AtomicPtr::new(std::ptr::null_mut()),
                        })
                        .collect();
                    // Never freed: handles must stay checkable forever.
                    let p = Box::into_raw(slots).cast::<Slot<T>>();
                    self.chunks[k].store(p, Ordering::Release);
                }
                *fresh = i + 1;
                Ok(i)
            }
        };
        FREE_LOCK.unlock();
        r
    }

    /// Stores `value` in a free slot and returns its handle.
    pub(crate) fn insert(&self, value: Box<T>) -> Result<Handle, Errno> {
        watch_forks();
        let index = self.take_index()?;
        let slot = self.slot(index).expect("a taken index has its chunk");
        slot.value.store(Box::into_raw(value), Ordering::Release);
        let generation = (slot.state.load(Ordering::Acquire) >> 32) as u32;
        Ok(encode(self.tag, index, generation))
    }

    /// Enters a call on the object behind `h`: `None` when `h` is not a live
    /// handle of this table (freed, of another type, or never made here).
    /// Async-signal-safe (atomics only).
    #[inline]
    pub(crate) fn get(&self, h: Handle) -> Option<Ref<'_, T>> {
        let (tag, index, generation) = decode(h)?;
        if tag != self.tag {
            return None;
        }
        let slot = self.slot(index)?;
        let s = slot.state.fetch_add(1, Ordering::Acquire);
        let value = slot.value.load(Ordering::Acquire);
        if (s >> 32) as u32 != generation || value.is_null() {
            slot.state.fetch_sub(1, Ordering::Release);
            return None;
        }
        // SAFETY: the generation matched while we counted ourselves in, so the
        // object cannot be removed (and dropped) before this `Ref` is dropped.
        Some(Ref {
            slot,
            value: unsafe { &*value },
        })
    }

    /// Frees handle `h`: from now on it is stale. Returns the object once every
    /// caller already inside has left, or `None` if `h` was not live (freed
    /// already, perhaps by a concurrent caller: exactly one wins).
    ///
    /// The calling thread must not hold a [`Ref`] of `h` itself (it would wait
    /// for itself). `in_child`: the object was made before a `fork()` and this
    /// is the child: callers counted in the parent will never leave, so do not
    /// wait for them, and leave the slot unused (its count is unreliable).
    pub(crate) fn remove(&self, h: Handle, in_child: bool) -> Option<Box<T>> {
        let (tag, index, generation) = decode(h)?;
        if tag != self.tag {
            return None;
        }
        let slot = self.slot(index)?;
        let mut s = slot.state.load(Ordering::Acquire);
        loop {
            if (s >> 32) as u32 != generation {
                return None;
            }
            let next = (u64::from(next_generation(generation)) << 32) | (s & REFS);
            match slot
                .state
                .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(now) => s = now,
            }
        }
        if !in_child {
            let mut spins = 0u32;
            while slot.state.load(Ordering::Acquire) & REFS != 0 {
                spins += 1;
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
        }
        let value = slot.value.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !in_child {
            FREE_LOCK.lock();
            // SAFETY: under FREE_LOCK.
            unsafe { (*self.free.get()).push_back(index) };
            FREE_LOCK.unlock();
        }
        if value.is_null() {
            return None;
        }
        // SAFETY: `value` came from `Box::into_raw` in `insert`; the generation
        // CAS made us its only remover and no caller is inside any more.
        Some(unsafe { Box::from_raw(value) })
    }
}

/// What every C object carries besides its state: a poison flag (set by a
/// panic inside a call: the object refuses further work) and a test-only
/// switch that makes the next call panic. Both atomic: other threads may call
/// some functions on the same object.
#[derive(Default)]
pub(crate) struct Poison {
    poisoned: AtomicBool,
    panic_next: AtomicBool,
}

impl Poison {
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Relaxed)
    }

    pub(crate) fn poison(&self) {
        self.poisoned.store(true, Ordering::Relaxed);
    }

    pub(crate) fn arm_panic(&self) {
        self.panic_next.store(true, Ordering::Relaxed);
    }

    /// True once after [`Poison::arm_panic`]; a plain load otherwise (no write).
    #[inline]
    pub(crate) fn take_panic(&self) -> bool {
        self.panic_next.load(Ordering::Relaxed) && self.panic_next.swap(false, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn chunks_cover_every_index() {
        assert_eq!(chunk_of(0), (0, 0));
        assert_eq!(chunk_of(63), (0, 63));
        assert_eq!(chunk_of(64), (1, 0));
        assert_eq!(chunk_of(191), (1, 127));
        assert_eq!(chunk_of(192), (2, 0));
        let (k, off) = chunk_of(MAX_SLOTS - 1);
        assert!(k < CHUNKS && off < FIRST_CHUNK << k);
    }

    #[test]
    fn stale_handles_fail_and_slots_are_reused_with_a_new_generation() {
        static T: Table<u32> = Table::new(0x11);
        let a = T.insert(Box::new(7)).unwrap();
        assert_eq!(*T.get(a).unwrap(), 7);
        assert_eq!(*T.remove(a, false).unwrap(), 7);
        assert!(T.get(a).is_none());
        assert!(T.remove(a, false).is_none());
        let b = T.insert(Box::new(8)).unwrap();
        assert_ne!(a, b);
        assert!(T.get(a).is_none(), "the old handle stays stale");
        assert_eq!(*T.get(b).unwrap(), 8);
        // Other tags, foreign pointers and NULL are refused.
        static U: Table<u32> = Table::new(0x12);
        assert!(U.get(b).is_none());
        assert!(T.get(0).is_none());
        let addr = from_ptr(&b);
        assert!(T.get(addr).is_none());
        T.remove(b, false).unwrap();
    }

    #[test]
    fn exactly_one_of_two_racing_removers_wins() {
        static T: Table<u64> = Table::new(0x13);
        for round in 0..300u64 {
            let h = T.insert(Box::new(round)).unwrap();
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let b = barrier.clone();
                    std::thread::spawn(move || {
                        b.wait();
                        T.remove(h, false).is_some()
                    })
                })
                .collect();
            let wins = threads
                .into_iter()
                .map(|t| t.join().unwrap())
                .filter(|&w| w)
                .count();
            assert_eq!(wins, 1, "round {round}");
        }
    }

    #[test]
    fn remove_waits_for_callers_inside() {
        static T: Table<AtomicU32> = Table::new(0x14);
        let h = T.insert(Box::new(AtomicU32::new(0))).unwrap();
        let inside = Arc::new(std::sync::Barrier::new(2));
        let i2 = inside.clone();
        let t = std::thread::spawn(move || {
            let r = T.get(h).unwrap();
            i2.wait();
            std::thread::sleep(std::time::Duration::from_millis(50));
            r.store(1, Ordering::Relaxed);
        });
        inside.wait();
        let v = T.remove(h, false).unwrap();
        assert_eq!(
            v.load(Ordering::Relaxed),
            1,
            "removed only after the caller left"
        );
        t.join().unwrap();
    }
}
