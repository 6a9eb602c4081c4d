//! [`WriteQueue`]: the bytes a connection accepted but the socket has not
//! taken yet.

/// Bytes accepted by `write` but not yet taken by the socket. Its memory is
/// given back when it empties, so an idle connection costs nothing here.
#[derive(Debug, Default)]
pub(super) struct WriteQueue {
    buf: Vec<u8>,
    start: usize,
}

impl WriteQueue {
    pub(super) fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub(super) fn front(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Drops the first `n` bytes (sent).
    pub(super) fn consume(&mut self, n: usize) {
        // `n` comes from `send` of `front()`, so it is at most `len()`.
        debug_assert!(n <= self.len());
        self.start += n.min(self.len());
        if self.start == self.buf.len() {
            *self = WriteQueue::default();
        }
    }

    /// Appends `data`, first compacting when the sent part is at least half.
    pub(super) fn push(&mut self, data: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Empties the queue, giving its memory back.
    pub(super) fn clear(&mut self) {
        *self = WriteQueue::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_consumes_compacts_and_frees() {
        let mut q = WriteQueue::default();
        q.push(b"hello ");
        q.push(b"world");
        assert_eq!(q.front(), b"hello world");
        q.consume(6);
        assert_eq!((q.len(), q.front()), (5, &b"world"[..]));
        q.push(b"!");
        assert_eq!(q.front(), b"world!", "compacted, order kept");
        q.consume(6);
        assert_eq!(q.len(), 0);
        assert_eq!(q.buf.capacity(), 0, "memory given back when empty");
    }
}
