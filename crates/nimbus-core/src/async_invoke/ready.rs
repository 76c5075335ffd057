//! The ready events of a function's async queue: a deque kept in fixed-size chunks, so that a
//! growing backlog never copies what is queued, and a drained chunk is used again. An empty
//! queue holds no chunk.
//!
//! One `VecDeque` doubled as a backlog grew: each growth copied every queued event into new
//! memory the kernel had to zero first. A burst of a million events spent a fifth of its time
//! there (page clearing and the copy, in a `perf` profile of the async bench).

use std::collections::VecDeque;

/// Events per chunk: about 20 KB of events with a small payload, an allocation the allocator
/// reuses rather than asks the kernel for. (64 measured the same within the noise, 3 % lower
/// in two sets of alternating runs.)
const CHUNK: usize = 256;

/// Queued events, oldest first, in chunks of at most [`CHUNK`].
#[derive(Debug)]
pub(super) struct Ready<T> {
    /// Oldest chunk first. None is empty, and none grows past [`CHUNK`] (so none reallocates).
    chunks: VecDeque<VecDeque<T>>,
    len: usize,
    /// An emptied chunk, kept for the next one needed while the queue holds events.
    spare: Option<VecDeque<T>>,
}

impl<T> Default for Ready<T> {
    fn default() -> Self {
        Self {
            chunks: VecDeque::new(),
            len: 0,
            spare: None,
        }
    }
}

impl<T> Ready<T> {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The oldest event.
    pub(super) fn front(&self) -> Option<&T> {
        self.chunks.front().and_then(VecDeque::front)
    }

    pub(super) fn push_back(&mut self, event: T) {
        match self.chunks.back_mut() {
            Some(back) if back.len() < CHUNK => back.push_back(event),
            _ => {
                let mut chunk = self.fresh_chunk();
                chunk.push_back(event);
                self.chunks.push_back(chunk);
            }
        }
        self.len += 1;
    }

    /// Puts an event back in front of the oldest.
    pub(super) fn push_front(&mut self, event: T) {
        match self.chunks.front_mut() {
            Some(front) if front.len() < CHUNK => front.push_front(event),
            _ => {
                let mut chunk = self.fresh_chunk();
                chunk.push_front(event);
                self.chunks.push_front(chunk);
            }
        }
        self.len += 1;
    }

    pub(super) fn pop_front(&mut self) -> Option<T> {
        let front = self.chunks.front_mut()?;
        let event = front.pop_front();
        if front.is_empty() {
            self.retire_front();
        }
        if event.is_some() {
            self.len -= 1;
        }
        event
    }

    /// Moves the oldest `n` events (all, if fewer are queued) to the back of `into`, in order.
    pub(super) fn take_front(&mut self, n: usize, into: &mut VecDeque<T>) {
        let mut left = n.min(self.len);
        while left > 0 {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let taken = left.min(front.len());
            into.extend(front.drain(..taken));
            let emptied = front.is_empty();
            left -= taken;
            self.len -= taken;
            if emptied {
                self.retire_front();
            }
        }
    }

    /// Takes every event out, oldest first (those the iterator does not reach are dropped
    /// with it).
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = T> {
        self.len = 0;
        self.spare = None;
        std::mem::take(&mut self.chunks).into_iter().flatten()
    }

    /// A chunk to fill: the spare if there is one.
    fn fresh_chunk(&mut self) -> VecDeque<T> {
        self.spare
            .take()
            .unwrap_or_else(|| VecDeque::with_capacity(CHUNK))
    }

    /// Drops the (empty) oldest chunk, keeping it as the spare unless there is one already or
    /// the queue is now empty (an idle function keeps no chunk).
    fn retire_front(&mut self) {
        if let Some(chunk) = self.chunks.pop_front() {
            debug_assert!(chunk.is_empty(), "only an empty chunk is retired");
            if self.chunks.is_empty() {
                self.spare = None;
            } else {
                self.spare.get_or_insert(chunk);
            }
        }
    }
}

impl<T> Extend<T> for Ready<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, events: I) {
        for event in events {
            self.push_back(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::{Ready, CHUNK};

    #[derive(Debug, Clone)]
    enum Op {
        PushBack,
        PushFront,
        PopFront,
        TakeFront(usize),
        Extend(usize),
        TakeAll,
        /// `take_all`, its iterator dropped after this many.
        TakeSome(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => Just(Op::PushBack),
            2 => Just(Op::PushFront),
            4 => Just(Op::PopFront),
            2 => (0..3 * CHUNK).prop_map(Op::TakeFront),
            2 => (0..3 * CHUNK).prop_map(Op::Extend),
            1 => Just(Op::TakeAll),
            1 => (0..3 * CHUNK).prop_map(Op::TakeSome),
        ]
    }

    /// Checks the chunks' invariants: none empty, none past `CHUNK`, every one (the spare
    /// too) made at its full capacity and never grown, only the end ones partly filled, the
    /// count matching, and no chunk held by an empty queue.
    fn check<T>(ready: &Ready<T>) -> Result<(), TestCaseError> {
        prop_assert!(ready
            .chunks
            .iter()
            .all(|c| !c.is_empty() && c.len() <= CHUNK));
        let made_full = |c: &VecDeque<T>| (CHUNK..2 * CHUNK).contains(&c.capacity());
        prop_assert!(ready.chunks.iter().all(made_full));
        prop_assert!(ready.spare.iter().all(|c| c.is_empty() && made_full(c)));
        let middle = ready.chunks.len().saturating_sub(2);
        prop_assert!(ready
            .chunks
            .iter()
            .skip(1)
            .take(middle)
            .all(|c| c.len() == CHUNK));
        prop_assert_eq!(
            ready.chunks.iter().map(VecDeque::len).sum::<usize>(),
            ready.len
        );
        if ready.len == 0 {
            prop_assert!(ready.chunks.is_empty() && ready.spare.is_none());
        }
        Ok(())
    }

    proptest! {
        /// Any sequence of operations, across chunk boundaries, gives the events a plain
        /// `VecDeque` would: none lost, none duplicated, in the same order.
        #[test]
        fn ready_behaves_as_one_deque(
            ops in prop::collection::vec((op(), 1usize..200), 1..60),
        ) {
            let mut ready = Ready::default();
            let mut model = VecDeque::new();
            let mut next = 0u64;
            for (op, times) in ops {
                match op {
                    Op::PushBack => for _ in 0..times {
                        ready.push_back(next);
                        model.push_back(next);
                        next += 1;
                    },
                    Op::PushFront => for _ in 0..times {
                        ready.push_front(next);
                        model.push_front(next);
                        next += 1;
                    },
                    Op::PopFront => for _ in 0..times {
                        prop_assert_eq!(ready.pop_front(), model.pop_front());
                    },
                    Op::TakeFront(n) => {
                        let mut got = VecDeque::from([u64::MAX]);
                        ready.take_front(n, &mut got);
                        let mut want = VecDeque::from([u64::MAX]);
                        let n = n.min(model.len());
                        want.extend(model.drain(..n));
                        prop_assert_eq!(got, want);
                    }
                    Op::Extend(n) => {
                        let events = next..next + n as u64;
                        ready.extend(events.clone());
                        model.extend(events);
                        next += n as u64;
                    }
                    Op::TakeAll => {
                        let got: Vec<u64> = ready.take_all().collect();
                        let want: Vec<u64> = model.drain(..).collect();
                        prop_assert_eq!(got, want);
                    }
                    Op::TakeSome(n) => {
                        let got: Vec<u64> = ready.take_all().take(n).collect();
                        let want: Vec<u64> = model.drain(..).take(n).collect();
                        prop_assert_eq!(got, want);
                    }
                }
                check(&ready)?;
                prop_assert_eq!(ready.len(), model.len());
                prop_assert_eq!(ready.is_empty(), model.is_empty());
                prop_assert_eq!(ready.front(), model.front());
            }
            let rest: Vec<u64> = ready.take_all().collect();
            prop_assert_eq!(rest, Vec::from(model));
            prop_assert!(ready.is_empty() && ready.front().is_none());
        }
    }

    #[test]
    fn a_drained_chunk_is_used_again_and_an_empty_queue_keeps_none() {
        let mut ready = Ready::default();
        ready.extend(0..CHUNK as u64 + 1);
        assert_eq!(ready.chunks.len(), 2);
        let mut taken = VecDeque::new();
        ready.take_front(CHUNK, &mut taken);
        assert_eq!(ready.chunks.len(), 1);
        assert!(ready.spare.is_some(), "the drained chunk is kept");
        // Filling the last chunk needs one more: the spare.
        ready.extend(0..CHUNK as u64);
        assert_eq!(ready.chunks.len(), 2);
        assert!(
            ready.spare.is_none(),
            "the spare is taken before a new chunk"
        );
        assert_eq!(ready.len(), CHUNK + 1);
        // Drained, the queue keeps no chunk.
        ready.take_front(CHUNK, &mut taken);
        assert!(ready.spare.is_some());
        while ready.pop_front().is_some() {}
        assert!(ready.chunks.is_empty() && ready.spare.is_none());
    }
}
