//! Checkpoints: how far a mapping has finished each shard.

use std::collections::HashMap;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::Sequence;
use crate::error::SourceError;

/// A shard's checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checkpoint {
    /// Every record up to and including this sequence number is finished.
    At(Sequence),
    /// The shard is closed and finished; its children may start.
    ShardEnd,
}

impl Checkpoint {
    /// The checkpoint as text that sorts as checkpoints do, so that stores can keep it
    /// forward-only by comparing text byte by byte (a Lua script, an SQL `WHERE old <= new`
    /// under the `C` collation): a sequence number of up to 39 digits zero-padded to 39, a
    /// longer one as `:`, its count of digits in three, and the digits; `~` for the shard's
    /// end.
    pub fn to_sortable_text(&self) -> String {
        match self {
            Self::At(seq) => seq.to_sortable_text(),
            Self::ShardEnd => "~".to_owned(),
        }
    }

    /// Reads [`Checkpoint::to_sortable_text`]'s form.
    pub fn from_sortable_text(text: &str) -> Option<Self> {
        if text == "~" {
            Some(Self::ShardEnd)
        } else {
            Sequence::from_sortable_text(text).map(Self::At)
        }
    }
}

/// Where checkpoints are kept: in memory, or in a broker so that another process can resume.
/// Checkpoints only move forward; a store refuses to move one back.
///
/// # Example
///
/// Checkpoints kept as text in a key-value map, as a Redis hash or an SQL table would keep
/// them: [`Checkpoint::to_sortable_text`] sorts as checkpoints do, so refusing to move back is
/// a comparison of text. The `async_trait` attribute is re-exported by this crate.
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use nimbus_sources::{async_trait, Checkpoint, CheckpointStore, Sequence, SourceError};
///
/// #[derive(Debug, Default)]
/// struct TextCheckpoints(Mutex<HashMap<(String, String), String>>);
///
/// #[async_trait]
/// impl CheckpointStore for TextCheckpoints {
///     async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
///         let map = self.0.lock().map_err(|_| SourceError::Closed)?;
///         map.get(&(mapping.to_owned(), shard.to_owned()))
///             .map(|text| {
///                 Checkpoint::from_sortable_text(text)
///                     .ok_or_else(|| SourceError::permanent(format!("corrupt checkpoint {text:?}")))
///             })
///             .transpose()
///     }
///
///     async fn put(&self, mapping: &str, shard: &str, checkpoint: Checkpoint) -> Result<(), SourceError> {
///         let text = checkpoint.to_sortable_text();
///         let mut map = self.0.lock().map_err(|_| SourceError::Closed)?;
///         let stored = map.entry((mapping.to_owned(), shard.to_owned())).or_default();
///         if *stored > text {
///             return Err(SourceError::Invalid(format!("checkpoint of {shard} would move back")));
///         }
///         *stored = text;
///         Ok(())
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = TextCheckpoints::default();
/// assert_eq!(store.get("clicks", "shard-0").await?, None);
/// store.put("clicks", "shard-0", Checkpoint::At(Sequence::new(10))).await?;
/// assert!(store.put("clicks", "shard-0", Checkpoint::At(Sequence::new(9))).await.is_err());
/// store.put("clicks", "shard-0", Checkpoint::ShardEnd).await?;
/// assert_eq!(store.get("clicks", "shard-0").await?, Some(Checkpoint::ShardEnd));
/// # Ok(())
/// # }
/// ```
#[async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The checkpoint of `shard` for `mapping`, if any.
    ///
    /// # Errors
    ///
    /// A [`SourceError`] from the store.
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError>;

    /// Moves the checkpoint forward.
    ///
    /// # Errors
    ///
    /// [`SourceError::Invalid`] if it would move back; a store error otherwise.
    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), SourceError>;
}

/// Checkpoints in memory.
#[derive(Debug, Default)]
pub struct InMemoryCheckpoints {
    entries: Mutex<HashMap<(String, String), Checkpoint>>,
}

impl InMemoryCheckpoints {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl CheckpointStore for InMemoryCheckpoints {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
        Ok(self
            .entries
            .lock()
            .get(&(mapping.to_owned(), shard.to_owned()))
            .cloned())
    }

    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), SourceError> {
        let mut entries = self.entries.lock();
        let entry = entries.entry((mapping.to_owned(), shard.to_owned()));
        match entry {
            std::collections::hash_map::Entry::Occupied(mut e) => {
                if checkpoint < *e.get() {
                    return Err(SourceError::Invalid(format!(
                        "checkpoint of {shard} would move back from {:?} to {checkpoint:?}",
                        e.get()
                    )));
                }
                e.insert(checkpoint);
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(checkpoint);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl<C: CheckpointStore + ?Sized> CheckpointStore for std::sync::Arc<C> {
    async fn get(&self, mapping: &str, shard: &str) -> Result<Option<Checkpoint>, SourceError> {
        (**self).get(mapping, shard).await
    }
    async fn put(
        &self,
        mapping: &str,
        shard: &str,
        checkpoint: Checkpoint,
    ) -> Result<(), SourceError> {
        (**self).put(mapping, shard, checkpoint).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sortable_text_sorts_as_checkpoints_do() {
        let at = |text: &str| Checkpoint::At(text.parse().unwrap());
        let values = [
            at("0"),
            at("9"),
            at("10"),
            Checkpoint::At(Sequence::new(u128::MAX)),
            at("340282366920938463463374607431768211456"),
            at("49590338271490256608559692538361571095921575989136588898"),
            at(&"9".repeat(crate::stream::MAX_SEQUENCE_DIGITS)),
            Checkpoint::ShardEnd,
        ];
        for pair in values.windows(2) {
            assert!(
                pair[0].to_sortable_text() < pair[1].to_sortable_text(),
                "{pair:?}"
            );
        }
        for value in values {
            assert_eq!(
                Checkpoint::from_sortable_text(&value.to_sortable_text()),
                Some(value)
            );
        }
        // Checkpoints written when sequence numbers were 128-bit read back the same.
        assert_eq!(
            Checkpoint::from_sortable_text("000000000000000000000000000000000000042"),
            Some(Checkpoint::At(Sequence::new(42)))
        );
        assert_eq!(Checkpoint::from_sortable_text("nope"), None);
    }
}
