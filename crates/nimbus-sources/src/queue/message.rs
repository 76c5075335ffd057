//! What a queue hands out: [`Message`]s with their [`MessageId`], [`Attributes`] and the
//! [`Receipt`] that acknowledges one delivery.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

/// A message id. Numeric ids (in-memory queue, PostgreSQL rows, NATS sequences) are kept as
/// numbers, so making and comparing them allocates nothing; others (SQS UUIDs, Redis stream
/// ids) as text. Displayed and serialised as text; a decimal text is the same id as the number.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId(IdRepr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum IdRepr {
    Number(u64),
    Text(Arc<str>),
}

impl MessageId {
    /// A numeric id.
    pub fn number(n: u64) -> Self {
        Self(IdRepr::Number(n))
    }

    /// A text id (a canonical decimal text becomes the numeric id, so both spellings are equal).
    pub fn text(text: &str) -> Self {
        let canonical = !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
            && (text == "0" || !text.starts_with('0'));
        match text.parse::<u64>() {
            Ok(n) if canonical => Self::number(n),
            _ => Self(IdRepr::Text(Arc::from(text))),
        }
    }

    /// The length of the id as text, without writing it (sizing a batch asks it per record).
    pub fn text_len(&self) -> usize {
        match &self.0 {
            IdRepr::Number(n) => n.checked_ilog10().map_or(1, |digits| digits as usize + 1),
            IdRepr::Text(text) => text.len(),
        }
    }

    /// The text, for a text id.
    pub fn as_text(&self) -> Option<&str> {
        match &self.0 {
            IdRepr::Number(_) => None,
            IdRepr::Text(text) => Some(text),
        }
    }

    /// The number, for a numeric id.
    pub fn as_number(&self) -> Option<u64> {
        match self.0 {
            IdRepr::Number(n) => Some(n),
            IdRepr::Text(_) => None,
        }
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            IdRepr::Number(n) => write!(f, "{n}"),
            IdRepr::Text(text) => f.write_str(text),
        }
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageId({self})")
    }
}

impl From<&str> for MessageId {
    fn from(text: &str) -> Self {
        Self::text(text)
    }
}

impl serde::Serialize for MessageId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MessageId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::text(&text))
    }
}

/// Message attributes: string keys and values, as SQS's string attributes. Empty attributes
/// allocate nothing; cloning shares them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Attributes(Option<Arc<std::collections::BTreeMap<String, String>>>);

impl Attributes {
    /// No attributes.
    pub fn new() -> Self {
        Self(None)
    }

    /// These attributes plus `key` = `value`.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        Arc::make_mut(self.0.get_or_insert_with(Arc::default)).insert(key.into(), value.into());
        self
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.as_ref()?.get(key).map(String::as_str)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_none_or(|map| map.is_empty())
    }

    /// The attributes, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .flat_map(|map| map.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

impl std::fmt::Debug for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl From<std::collections::BTreeMap<String, String>> for Attributes {
    fn from(map: std::collections::BTreeMap<String, String>) -> Self {
        Self((!map.is_empty()).then(|| Arc::new(map)))
    }
}

impl serde::Serialize for Attributes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> serde::Deserialize<'de> for Attributes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(std::collections::BTreeMap::<String, String>::deserialize(d)?.into())
    }
}

/// Proof of one receipt of a message, used to acknowledge it or make it visible again.
/// Opaque to the mapping engine; each source chooses what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Receipt(ReceiptInner);

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ReceiptInner {
    Slot { lease: u64, slot: u32 },
    Token(Arc<str>),
}

impl Receipt {
    /// A receipt made of two numbers (for sources that index in-flight messages).
    pub fn from_parts(lease: u64, slot: u32) -> Self {
        Self(ReceiptInner::Slot { lease, slot })
    }

    /// A receipt made of a token (SQS receipt handle, NATS reply subject, ...).
    pub fn token(token: impl Into<Arc<str>>) -> Self {
        Self(ReceiptInner::Token(token.into()))
    }

    /// The two numbers, for a receipt made by [`Receipt::from_parts`].
    pub fn parts(&self) -> Option<(u64, u32)> {
        match self.0 {
            ReceiptInner::Slot { lease, slot } => Some((lease, slot)),
            ReceiptInner::Token(_) => None,
        }
    }

    /// The token, for a receipt made by [`Receipt::token`].
    pub fn as_token(&self) -> Option<&str> {
        match &self.0 {
            ReceiptInner::Token(token) => Some(token),
            ReceiptInner::Slot { .. } => None,
        }
    }
}

/// One received message.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Message {
    /// The message id, stable across receives.
    pub id: MessageId,
    /// The body.
    pub body: Bytes,
    /// String attributes.
    pub attributes: Attributes,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    /// When it was sent.
    pub sent_at: SystemTime,
    /// Its message group, on a FIFO queue.
    pub group_id: Option<Arc<str>>,
    /// This receipt, for acknowledging it or making it visible again.
    pub receipt: Receipt,
}

impl Message {
    /// A message, for sources built outside this crate.
    pub fn new(id: MessageId, body: impl Into<Bytes>, receipt: Receipt) -> Self {
        Self {
            id,
            body: body.into(),
            attributes: Attributes::default(),
            receive_count: 1,
            sent_at: SystemTime::now(),
            group_id: None,
            receipt,
        }
    }

    /// Sets the attributes.
    #[must_use]
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }

    /// Sets the receive count.
    #[must_use]
    pub fn with_receive_count(mut self, receive_count: u32) -> Self {
        self.receive_count = receive_count;
        self
    }

    /// Sets the send time.
    #[must_use]
    pub fn with_sent_at(mut self, sent_at: SystemTime) -> Self {
        self.sent_at = sent_at;
        self
    }

    /// Sets the message group.
    #[must_use]
    pub fn with_group(mut self, group_id: impl Into<Arc<str>>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::MessageId;

    #[test]
    fn text_len_is_the_length_of_the_displayed_id() {
        let numbers = [0, 1, 9, 10, 99, 100, 999_999, 1_000_000, u64::MAX];
        let ids = numbers
            .into_iter()
            .map(MessageId::number)
            .chain(["", "a-uuid-like-id", "0012", "1712345678901-0"].map(MessageId::text));
        for id in ids {
            assert_eq!(id.text_len(), id.to_string().len(), "{id:?}");
        }
    }
}
