//! [`Remote`]: the part of a loop other threads may use: the stop flag, the
//! waker eventfd and the queue of posted functions.

use super::EventLoop;
use crate::sys::{Errno, Result, eventfd};
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// A function posted from any thread to run once on the loop's thread.
pub type Posted = Box<dyn FnOnce(&EventLoop) + Send>;

/// The part of a loop other threads may touch: a stop flag, the waker eventfd
/// and the queue of posted functions.
///
/// `wake` and `stop` are async-signal-safe (an atomic store and one `write(2)`);
/// `post` takes a mutex, so it is thread-safe but not async-signal-safe.
pub struct Remote {
    stop: AtomicBool,
    waker: OwnedFd,
    posted: AtomicBool,
    posts: Mutex<PostQueue>,
}

#[derive(Default)]
struct PostQueue {
    closed: bool,
    queue: VecDeque<Posted>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("stop", &self.stop)
            .field("waker", &self.waker)
            .finish()
    }
}

impl Remote {
    /// Makes a blocked `poll` return (once) without running a callback.
    pub fn wake(&self) -> Result<()> {
        eventfd::signal(&self.waker)
    }

    /// Asks `run` to return [`RunExit::Stopped`] after the current iteration,
    /// and a `poll` not to block. The request is remembered until the end of
    /// the next `poll` or `run` (one made while neither runs is consumed by
    /// whichever comes first).
    pub fn stop(&self) -> Result<()> {
        self.stop.store(true, Ordering::Release);
        self.wake()
    }

    /// Queues `f` to run once on the loop's thread, in the next iteration, after
    /// everything posted before it. `ESHUTDOWN` once the loop is being freed.
    pub fn post(&self, f: Posted) -> Result<()> {
        {
            let mut q = self.posts.lock().unwrap_or_else(|p| p.into_inner());
            if q.closed {
                return Err(Errno::ESHUTDOWN);
            }
            q.queue.push_back(f);
        }
        self.posted.store(true, Ordering::Release);
        self.wake()
    }

    /// Refuses further posts and returns those not yet run (the loop is going away).
    pub fn close_posts(&self) -> Vec<Posted> {
        let mut q = self.posts.lock().unwrap_or_else(|p| p.into_inner());
        q.closed = true;
        q.queue.drain(..).collect()
    }

    pub(super) fn take_posts(&self) -> VecDeque<Posted> {
        // Load first: the common case (nothing posted) then costs no locked instruction.
        if !self.posted.load(Ordering::Acquire) || !self.posted.swap(false, Ordering::AcqRel) {
            return VecDeque::new();
        }
        let mut q = self.posts.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut q.queue)
    }

    pub(super) fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    pub(super) fn take_stop(&self) -> bool {
        // Load first: the common case (no stop) then costs no locked instruction.
        self.stop.load(Ordering::Acquire) && self.stop.swap(false, Ordering::AcqRel)
    }
}

impl Remote {
    /// A remote for a loop whose waker is `waker`.
    pub(super) fn new(waker: OwnedFd) -> Remote {
        Remote {
            stop: AtomicBool::new(false),
            waker,
            posted: AtomicBool::new(false),
            posts: Mutex::new(PostQueue::default()),
        }
    }

    /// Consumes the waker's count (after it woke `epoll_wait`).
    pub(super) fn drain_waker(&self) {
        let _ = eventfd::drain(&self.waker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn posts_from_threads_run_on_the_loop_in_order() {
        let lp = EventLoop::new().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let me = std::thread::current().id();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let remote = lp.remote().clone();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let seen = seen.clone();
                        remote
                            .post(Box::new(move |_: &EventLoop| {
                                assert_eq!(std::thread::current().id(), me);
                                seen.lock().unwrap().push((t, i));
                            }))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut ran = 0;
        while ran < 4000 {
            ran += lp.poll(1000).unwrap();
        }
        assert_eq!(ran, 4000);
        let seen = seen.lock().unwrap();
        for t in 0..4 {
            let mine: Vec<i32> = seen.iter().filter(|x| x.0 == t).map(|x| x.1).collect();
            assert_eq!(
                mine,
                (0..1000).collect::<Vec<_>>(),
                "thread {t} out of order"
            );
        }
    }

    #[test]
    fn posts_after_free_are_refused_and_pending_ones_dropped() {
        let lp = EventLoop::new().unwrap();
        let remote = lp.remote().clone();
        let ran = Arc::new(AtomicUsize::new(0));
        let r2 = ran.clone();
        remote
            .post(Box::new(move |_: &EventLoop| {
                r2.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap();
        drop(lp);
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        assert_eq!(
            remote.post(Box::new(|_: &EventLoop| {})).err(),
            Some(Errno::ESHUTDOWN)
        );
    }
}
