//! Partition keys shared by the records that carry them: the in-memory stream keeps the keys of
//! recent appends in a small table, so that records of a key seen before share its one
//! allocation (and readers write that key's reference count, not one per record).

use std::sync::Arc;

/// Slots in the table: a few thousand distinct keys mostly find their own slot. Keys beyond
/// that, or unique per record, only cost a comparison before they take the slot.
const SLOTS: usize = 2_048;

/// A direct-mapped table of partition keys, indexed by their hash. Bounded: a slot holds the
/// last key that hashed to it.
#[derive(Debug, Default)]
pub(super) struct Keys {
    slots: Vec<Option<Arc<str>>>,
}

impl Keys {
    /// The shared key equal to `key`, whose [`hash_key`](super::hash_key) is `hash`.
    pub(super) fn share(&mut self, key: &str, hash: u128) -> Arc<str> {
        if self.slots.is_empty() {
            self.slots = vec![None; SLOTS];
        }
        // The hash's low bits: well spread (the hash ends with an avalanche).
        let slot = &mut self.slots[hash as usize % SLOTS];
        match slot {
            Some(kept) if **kept == *key => Arc::clone(kept),
            _ => Arc::clone(slot.insert(Arc::from(key))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::hash_key;

    #[test]
    fn equal_keys_share_one_allocation_and_colliding_keys_stay_distinct() {
        let mut keys = Keys::default();
        let a = keys.share("device-7", hash_key("device-7"));
        let again = keys.share("device-7", hash_key("device-7"));
        assert!(Arc::ptr_eq(&a, &again));
        // Two keys forced into one slot: each comes back as itself.
        let b = keys.share("device-8", hash_key("device-7"));
        assert_eq!(&*b, "device-8");
        let c = keys.share("device-7", hash_key("device-7"));
        assert_eq!(&*c, "device-7");
        assert!(!Arc::ptr_eq(&a, &c), "the slot held another key meanwhile");
        assert_eq!(keys.slots.len(), SLOTS);
    }
}
