//! `epoll_loop_post`: a function run once on the loop thread, from any thread.

use super::event_loop::{epoll_loop, with_remote};
use crate::event_loop::EventLoop;
use std::ffi::{c_int, c_void};

/// A function posted with `epoll_loop_post`, run once on the loop thread.
pub type epoll_loop_post_cb =
    Option<unsafe extern "C" fn(r#loop: *mut epoll_loop, user_data: *mut c_void)>;

/// The loop pointer and user data of a post, carried to the loop thread.
struct PostArgs {
    f: unsafe extern "C" fn(r#loop: *mut epoll_loop, user_data: *mut c_void),
    lp: *mut epoll_loop,
    user_data: *mut c_void,
}

// SAFETY: the pointers are only used on the loop thread, where the function runs;
// `epoll_loop_post` documents that user_data is handed to that thread.
unsafe impl Send for PostArgs {}

impl PostArgs {
    fn call(self) {
        // SAFETY: the caller's callback, run on the loop thread with its loop
        // (alive: posts run only inside its _poll) and its own user data.
        unsafe { (self.f)(self.lp, self.user_data) }
    }
}

/// Runs `cb(loop, user_data)` once on the loop thread, in the loop's next
/// iteration, waking it if it is blocked. Functions posted from one thread run
/// in posting order; each run counts as a callback.
/// Returns: 0.
/// Every post that returned 0 runs exactly once: normally in an iteration of
/// the loop, or, if the loop is freed first, inside `epoll_loop_free` (on the
/// thread that frees it, with `loop` already invalid for further calls).
/// Errors: `-EINVAL` (`loop` NULL or freed, `cb` NULL), `-ESHUTDOWN` (the loop
/// is being freed right now), `EPOLL_LOOP_EFORKED` (a loop of the parent
/// process, in a forked child), `-ENOTRECOVERABLE`. After an error `cb` never
/// runs: `user_data` is still the caller's to release.
/// Ownership: `user_data` travels to the loop thread; the caller keeps owning it.
/// Thread safety: safe from any thread (takes a mutex: not async-signal-safe),
/// even while another thread frees the loop.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn epoll_loop_post(
    r#loop: *mut epoll_loop,
    cb: epoll_loop_post_cb,
    user_data: *mut c_void,
) -> c_int {
    let Some(f) = cb else {
        return -libc::EINVAL;
    };
    with_remote(r#loop, |remote| {
        let args = PostArgs {
            f,
            lp: r#loop,
            user_data,
        };
        remote.post(Box::new(move |_: &EventLoop| args.call()))
    })
}
