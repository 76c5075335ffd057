//! The ready events of a function's async queue: a deque kept in chunks that never grow, so
//! that a growing backlog never copies what is queued, and a drained chunk is used again.
//!
//! One `VecDeque` doubled as a backlog grew: each growth copied every queued event into new
//! memory the kernel had to zero first. A burst of two million events spent a sixth of its
//! samples zeroing pages, most of it under the growth (a `perf` profile of the async bench).
//!
//! An emptied chunk is kept as the spare (the larger, when two are emptied), so a queue that
//! empties after each event (light load), or after bursts no larger than a chunk, allocates
//! nothing per event or burst. The first chunk of an empty queue with no spare holds
//! [`FIRST`] events, so a function that only ever sees light load keeps a small one.
//!
//! A worker that takes the oldest chunk whole (`take_chunk`), a full-size one into its empty
//! batch, is handed the chunk and leaves its own empty buffer in its place: a backlog's events
//! are copied into the queue once and never again (moving them one by one into the worker's
//! batch was a sixth of the instructions an async event cost, and more of its time).
//!
//! What a function holds besides its events (and its workers' batches, a chunk at most each):
//! one spare chunk, and the list of chunks at the length its largest backlog needed (32 bytes
//! a chunk: 256 KiB after two million events).

use std::collections::VecDeque;

/// Events per chunk of a backlog: about 20 KB at 80 bytes an event (a small payload), an
/// allocation the allocator reuses rather than asks the kernel for. (64 gave a backlog's drain
/// 3 and 8 % less throughput in two sets of alternating runs, on a noisy machine.)
const CHUNK: usize = 256;

/// Events in the first chunk of an empty queue with no spare: about 1.3 KB at 80 bytes an
/// event, what a function that only ever sees light load keeps.
const FIRST: usize = 16;

/// Queued events, oldest first, in chunks of [`FIRST`] (the first of an empty queue) or
/// [`CHUNK`] events.
#[derive(Debug)]
pub(super) struct Ready<T> {
    /// Oldest chunk first. None is empty, and none is filled past the capacity it was made
    /// with (so none reallocates).
    chunks: VecDeque<VecDeque<T>>,
    len: usize,
    /// An emptied chunk, kept for the next one needed: at most one, the larger of those
    /// emptied since the last was taken.
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
            Some(back) if has_room(back) => back.push_back(event),
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
            Some(front) if has_room(front) => front.push_front(event),
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

    /// Events in the oldest chunk.
    pub(super) fn front_len(&self) -> usize {
        self.chunks.front().map_or(0, VecDeque::len)
    }

    /// Hands the oldest chunk over whole to an empty `into`, if it is a full-size one: `into`'s
    /// buffer takes its place (kept as the spare if it is one a chunk is made with). Returns
    /// the events taken, none if the chunk is not full-size or `into` not empty.
    pub(super) fn take_chunk(&mut self, into: &mut VecDeque<T>) -> usize {
        let Some(front) = self.chunks.front_mut() else {
            return 0;
        };
        if front.capacity() != CHUNK || !into.is_empty() {
            return 0;
        }
        std::mem::swap(front, into);
        if !matches!(front.capacity(), FIRST | CHUNK) {
            *front = VecDeque::new();
        }
        let taken = into.len();
        self.len -= taken;
        self.retire_front();
        taken
    }

    /// Takes every event out, oldest first (those the iterator does not reach are dropped
    /// with it). The spare stays.
    pub(super) fn take_all(&mut self) -> impl Iterator<Item = T> {
        self.len = 0;
        std::mem::take(&mut self.chunks).into_iter().flatten()
    }

    /// A chunk to fill: the spare if there is one, else a small one for an empty queue and a
    /// full-size one for a backlog.
    fn fresh_chunk(&mut self) -> VecDeque<T> {
        self.spare.take().unwrap_or_else(|| {
            let size = if self.chunks.is_empty() { FIRST } else { CHUNK };
            VecDeque::with_capacity(size)
        })
    }

    /// Drops the (empty) oldest chunk, keeping it as the spare unless the spare is as large:
    /// a queue that needed a full-size chunk once is likely to again.
    fn retire_front(&mut self) {
        if let Some(chunk) = self.chunks.pop_front() {
            debug_assert!(chunk.is_empty(), "only an empty chunk is retired");
            if chunk.capacity() > 0
                && self
                    .spare
                    .as_ref()
                    .is_none_or(|spare| spare.capacity() < chunk.capacity())
            {
                self.spare = Some(chunk);
            }
        }
    }
}

/// Whether `chunk` takes another event without growing.
fn has_room<T>(chunk: &VecDeque<T>) -> bool {
    chunk.len() < chunk.capacity()
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

    use super::{Ready, CHUNK, FIRST};

    #[derive(Debug, Clone)]
    enum Op {
        PushBack,
        PushFront,
        PopFront,
        TakeFront(usize),
        /// `take_chunk` into an empty deque of this capacity.
        TakeChunk(usize),
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
            2 => prop_oneof![Just(0), Just(FIRST), Just(32), Just(CHUNK)].prop_map(Op::TakeChunk),
            2 => (0..3 * CHUNK).prop_map(Op::Extend),
            1 => Just(Op::TakeAll),
            1 => (0..3 * CHUNK).prop_map(Op::TakeSome),
        ]
    }

    /// Checks the chunks' invariants: none empty, every one (the spare too) at a capacity a
    /// chunk is made with (so none grew; `with_capacity` is exact on the toolchains we build
    /// with), only the end ones partly filled, the count matching, and no chunk but the spare
    /// held by an empty queue.
    fn check<T>(ready: &Ready<T>) -> Result<(), TestCaseError> {
        let as_made = |c: &VecDeque<T>| c.capacity() == FIRST || c.capacity() == CHUNK;
        prop_assert!(ready.chunks.iter().all(|c| !c.is_empty() && as_made(c)));
        prop_assert!(ready.spare.iter().all(|c| c.is_empty() && as_made(c)));
        let middle = ready.chunks.len().saturating_sub(2);
        prop_assert!(ready
            .chunks
            .iter()
            .skip(1)
            .take(middle)
            .all(|c| c.len() == c.capacity()));
        prop_assert_eq!(
            ready.chunks.iter().map(VecDeque::len).sum::<usize>(),
            ready.len
        );
        if ready.len == 0 {
            prop_assert!(ready.chunks.is_empty());
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
                    Op::TakeChunk(capacity) => {
                        let mut got = VecDeque::with_capacity(capacity);
                        let taken = ready.take_chunk(&mut got);
                        prop_assert_eq!(taken, got.len());
                        let want: VecDeque<u64> = model.drain(..taken).collect();
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
    fn a_drained_chunk_is_used_again() {
        let mut ready = Ready::default();
        ready.extend(0..(FIRST + CHUNK) as u64);
        assert_eq!(
            ready.chunks.len(),
            2,
            "a small first chunk, then a full-size one"
        );
        let mut taken = VecDeque::new();
        ready.take_front(FIRST, &mut taken);
        assert_eq!(ready.chunks.len(), 1);
        assert!(ready.spare.is_some(), "the drained chunk is kept");
        // Filling the last chunk needs one more: the spare.
        ready.push_back(0);
        assert_eq!(ready.chunks.len(), 2);
        assert!(
            ready.spare.is_none(),
            "the spare is taken before a new chunk"
        );
        assert_eq!(ready.len(), CHUNK + 1);
    }

    #[test]
    fn a_queue_at_light_load_keeps_using_one_small_chunk() {
        let mut ready = Ready::default();
        for event in 0..100u64 {
            ready.push_back(event);
            assert!(ready.spare.is_none());
            assert_eq!(ready.chunks.front().map(VecDeque::capacity), Some(FIRST));
            assert_eq!(ready.pop_front(), Some(event));
            assert!(ready.chunks.is_empty());
            assert_eq!(ready.spare.as_ref().map(VecDeque::capacity), Some(FIRST));
        }
    }

    #[test]
    fn the_larger_emptied_chunk_is_kept() {
        let mut ready = Ready::default();
        // A burst of 17: a small first chunk and a full-size one.
        ready.extend(0..=FIRST as u64);
        while ready.pop_front().is_some() {}
        assert_eq!(ready.spare.as_ref().map(VecDeque::capacity), Some(CHUNK));
        // The next burst of up to a chunk needs no allocation: it fills the spare.
        ready.extend(0..CHUNK as u64);
        assert_eq!(ready.chunks.len(), 1);
        assert!(ready.spare.is_none());
    }

    #[test]
    fn a_full_chunk_is_handed_over_not_copied() {
        let mut ready = Ready::default();
        ready.extend(0..(FIRST + CHUNK + 5) as u64);
        let mut small = VecDeque::with_capacity(CHUNK);
        assert_eq!(
            ready.take_chunk(&mut small),
            0,
            "the first chunk is a small one"
        );
        ready.take_front(FIRST, &mut small);
        let chunk = ready.chunks.front().map(|c| c.as_slices().0.as_ptr());
        let mut into = VecDeque::with_capacity(CHUNK);
        let buffer = into.as_slices().0.as_ptr();
        assert_eq!(ready.take_chunk(&mut into), CHUNK);
        assert_eq!(Some(into.as_slices().0.as_ptr()), chunk, "the chunk itself");
        assert!(into
            .iter()
            .copied()
            .eq(FIRST as u64..(FIRST + CHUNK) as u64));
        assert_eq!(ready.len(), 5);
        let spare = ready.spare.as_ref().map(|c| c.as_slices().0.as_ptr());
        assert_eq!(spare, Some(buffer), "the taker's buffer is the spare");
        assert_eq!(ready.take_chunk(&mut into), 0, "only into an empty deque");
    }

    #[test]
    fn take_all_leaves_the_spare() {
        let mut ready = Ready::default();
        ready.extend(0..=FIRST as u64);
        let mut taken = VecDeque::new();
        ready.take_front(FIRST, &mut taken);
        assert_eq!(ready.spare.as_ref().map(VecDeque::capacity), Some(FIRST));
        assert_eq!(ready.take_all().count(), 1);
        assert_eq!(ready.spare.as_ref().map(VecDeque::capacity), Some(FIRST));
    }
}
