//! Small bodies stored together: copied into a shared buffer of a few hundred bytes, so that a
//! run of messages or records costs one allocation (and one free, often on another thread: the
//! reader's) instead of two each (the body and the header its first clone adds). The in-memory
//! queue packs the bodies of one send, the in-memory stream the data of a shard's appends.

use bytes::{Bytes, BytesMut};

/// Bodies up to this size are packed; larger ones are kept as sent.
const SMALL_BODY: usize = 128;
/// The size of one shared buffer: a small body kept alive (a message in flight for a long time,
/// or a body a handler holds on to) keeps its whole buffer alive with it, at most this much.
const BUFFER_BYTES: usize = 512;
/// Bodies per buffer at most. Readers of neighbouring bodies write the buffer's reference count;
/// few to a buffer keeps two pollers' batches (or two lanes of a shard) from sharing many.
const BUFFER_MESSAGES: u32 = 32;

/// Packs small bodies into shared buffers.
#[derive(Debug, Default)]
pub(crate) struct Packer {
    buffer: BytesMut,
    packed: u32,
}

impl Packer {
    /// The body to store: a small one copied into the current buffer, a large one as it is,
    /// made shareable here (its first clone allocates a header: better on the sender than on
    /// every receiver's hot path).
    pub(crate) fn pack(&mut self, body: Bytes) -> Bytes {
        if body.len() > SMALL_BODY {
            drop(body.clone());
            return body;
        }
        if self.packed == BUFFER_MESSAGES || self.buffer.capacity() < body.len() {
            self.buffer = BytesMut::with_capacity(BUFFER_BYTES);
            self.packed = 0;
        }
        self.packed += 1;
        // Within the capacity (checked above): the buffer never reallocates, so every body
        // split off it shares its one allocation.
        self.buffer.extend_from_slice(&body);
        self.buffer.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_bodies_share_a_buffer_and_keep_their_bytes() {
        let mut packer = Packer::default();
        let bodies: Vec<Bytes> = (0..100)
            .map(|i| packer.pack(Bytes::from(format!("body {i}"))))
            .collect();
        for (i, body) in bodies.iter().enumerate() {
            assert_eq!(&body[..], format!("body {i}").as_bytes());
        }
        // Neighbours lie next to each other in one allocation, up to 32 to a buffer.
        let next_to = |a: &Bytes, b: &Bytes| a.as_ptr().wrapping_add(a.len()) == b.as_ptr();
        assert!(next_to(&bodies[0], &bodies[1]));
        assert!(next_to(&bodies[30], &bodies[31]));
        assert!(!next_to(&bodies[31], &bodies[32]));
    }

    #[test]
    fn a_body_that_does_not_fit_starts_a_new_buffer() {
        let mut packer = Packer::default();
        let small: Vec<Bytes> = (0..4)
            .map(|_| packer.pack(Bytes::from(vec![7u8; SMALL_BODY])))
            .collect();
        assert!(small
            .iter()
            .all(|b| b.len() == SMALL_BODY && b.iter().all(|&x| x == 7)));
        let fifth = packer.pack(Bytes::from(vec![8u8; SMALL_BODY]));
        assert_ne!(small[3].as_ptr().wrapping_add(SMALL_BODY), fifth.as_ptr());
        assert!(fifth.iter().all(|&x| x == 8));
    }

    #[test]
    fn large_and_empty_bodies_are_kept() {
        let mut packer = Packer::default();
        let large = Bytes::from(vec![1u8; SMALL_BODY + 1]);
        let kept = packer.pack(large.clone());
        assert_eq!(kept.as_ptr(), large.as_ptr());
        assert!(packer.pack(Bytes::new()).is_empty());
    }
}
