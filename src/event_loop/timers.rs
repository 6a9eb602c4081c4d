//! The timer queue: a binary min-heap of deadlines with lazy deletion.
//!
//! Ids come from a counter that starts at 1 and never goes back, so an id is
//! never reused within one queue's life. Stopping a timer removes it from the
//! live map only; its heap entry is skipped when it surfaces, and the heap is
//! rebuilt when stale entries outnumber live ones.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A multiplicative hasher for the sequential `u64` timer ids.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type IdMap<V> = HashMap<u64, V, BuildHasherDefault<IdHasher>>;

struct Entry<T> {
    deadline: u64,
    repeat: u64,
    cb: T,
}

/// Timers keyed by id, ordered by deadline (nanoseconds on any monotonic clock).
pub struct TimerQueue<T> {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    live: IdMap<Entry<T>>,
    next_id: u64,
}

impl<T> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            live: IdMap::default(),
            next_id: 1,
        }
    }
}

impl<T: Clone> TimerQueue<T> {
    /// Starts a timer due at `now + after`, then every `repeat` (0 = once). Returns its id.
    pub fn start(&mut self, now: u64, after: u64, repeat: u64, cb: T) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let deadline = now.saturating_add(after);
        self.live.insert(
            id,
            Entry {
                deadline,
                repeat,
                cb,
            },
        );
        self.heap.push(Reverse((deadline, id)));
        id
    }

    /// Stops a pending timer; `false` when the id is unknown, stopped or fired (one-shot).
    pub fn stop(&mut self, id: u64) -> bool {
        let found = self.live.remove(&id).is_some();
        if found && self.heap.len() > 64 && self.heap.len() > 2 * self.live.len() {
            self.compact();
        }
        found
    }

    fn compact(&mut self) {
        let live = &self.live;
        let mut v = std::mem::take(&mut self.heap).into_vec();
        v.retain(|Reverse((d, id))| live.get(id).is_some_and(|e| e.deadline == *d));
        self.heap = BinaryHeap::from(v);
    }

    fn is_current(&self, deadline: u64, id: u64) -> bool {
        self.live.get(&id).is_some_and(|e| e.deadline == deadline)
    }

    /// The earliest pending deadline (drops stale heap entries on the way).
    pub fn next_deadline(&mut self) -> Option<u64> {
        while let Some(&Reverse((d, id))) = self.heap.peek() {
            if self.is_current(d, id) {
                return Some(d);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes the next timer that is due at `now` and whose id is below `id_limit`
    /// (timers started during this round wait for the next one). A repeating
    /// timer is re-armed for `now + repeat` before it is returned; a one-shot
    /// timer is removed, so stopping it afterwards reports "unknown".
    pub fn pop_due(&mut self, now: u64, id_limit: u64) -> Option<(u64, T)> {
        loop {
            let &Reverse((d, id)) = self.heap.peek()?;
            if !self.is_current(d, id) {
                self.heap.pop();
                continue;
            }
            if d > now || id >= id_limit {
                return None;
            }
            self.heap.pop();
            let e = self.live.get_mut(&id).expect("current entry is live");
            if e.repeat == 0 {
                let e = self.live.remove(&id).expect("current entry is live");
                return Some((id, e.cb));
            }
            e.deadline = now.saturating_add(e.repeat);
            let next = e.deadline;
            let cb = e.cb.clone();
            self.heap.push(Reverse((next, id)));
            return Some((id, cb));
        }
    }

    /// The id the next `start` will return (a watermark for [`Self::pop_due`]).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// True when no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_order_and_ids_are_never_reused() {
        let mut q = TimerQueue::default();
        let a = q.start(0, 30, 0, 'a');
        let b = q.start(0, 10, 0, 'b');
        let c = q.start(0, 20, 0, 'c');
        assert_eq!((a, b, c), (1, 2, 3));
        assert_eq!(q.next_deadline(), Some(10));
        assert_eq!(q.pop_due(5, u64::MAX), None);
        let fired: Vec<char> =
            std::iter::from_fn(|| q.pop_due(100, u64::MAX).map(|x| x.1)).collect();
        assert_eq!(fired, vec!['b', 'c', 'a']);
        assert!(q.is_empty());
        assert!(!q.stop(b), "a fired one-shot timer is unknown");
        assert_eq!(q.start(0, 1, 0, 'd'), 4);
    }

    #[test]
    fn stop_prevents_firing_and_reports_unknown_ids() {
        let mut q = TimerQueue::default();
        let a = q.start(0, 10, 0, 1);
        assert!(q.stop(a));
        assert!(!q.stop(a));
        assert!(!q.stop(999));
        assert_eq!(q.pop_due(100, u64::MAX), None);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn repeating_timer_rearms_from_now() {
        let mut q = TimerQueue::default();
        let id = q.start(0, 10, 5, ());
        assert_eq!(q.pop_due(12, u64::MAX).map(|x| x.0), Some(id));
        assert_eq!(
            q.pop_due(12, u64::MAX),
            None,
            "re-armed for 17, not due at 12"
        );
        assert_eq!(q.next_deadline(), Some(17));
        assert_eq!(q.len(), 1);
        assert!(q.stop(id));
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn id_limit_defers_timers_started_during_a_round() {
        let mut q = TimerQueue::default();
        q.start(0, 0, 0, 'x');
        let limit = q.next_id();
        q.start(0, 0, 0, 'y');
        assert_eq!(q.pop_due(0, limit).map(|x| x.1), Some('x'));
        assert_eq!(q.pop_due(0, limit), None);
        assert_eq!(q.pop_due(0, q.next_id()).map(|x| x.1), Some('y'));
    }

    #[test]
    fn stale_entries_are_compacted() {
        let mut q = TimerQueue::default();
        let ids: Vec<u64> = (0..1000).map(|i| q.start(0, i, 0, ())).collect();
        for id in &ids[..990] {
            assert!(q.stop(*id));
        }
        assert_eq!(q.len(), 10);
        assert!(
            q.heap_len() <= 2 * 10 + 64,
            "heap holds {} entries",
            q.heap_len()
        );
        assert_eq!(
            std::iter::from_fn(|| q.pop_due(u64::MAX, u64::MAX)).count(),
            10
        );
    }
}
