//! Sequence numbers: a record's place in its shard, as large as any broker makes them.
//!
//! Kinesis sequence numbers have up to 129 decimal digits, DynamoDB Streams ones 21 to 40, and a
//! Redis stream position (`<ms>-<seq>`) is `ms << 64 | seq`, above what a JSON number holds
//! exactly. [`Sequence`] keeps values that fit in 128 bits inline (no allocation, compared as
//! integers) and larger ones as shared decimal digits; either way it orders numerically and is
//! written as a decimal string, as Lambda's Kinesis events write `sequenceNumber`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A record's sequence number: increasing within a shard, and above 0 (a checkpoint at 0 means
/// "before the first record").
///
/// Ordered, compared and hashed by numeric value. Serialised as a decimal string; read back from
/// a string or from a JSON integer up to `u64::MAX` (larger JSON numbers have already lost
/// digits by the time they are read, so they are refused).
///
/// # Example
///
/// ```
/// use nimbus_sources::Sequence;
///
/// let kinesis: Sequence = "49590338271490256608559692538361571095921575989136588898".parse()?;
/// let small = Sequence::from(42u64);
/// assert!(small < kinesis);
/// assert_eq!(kinesis.as_u128(), None);
/// assert_eq!(small.as_u128(), Some(42));
/// assert_eq!(serde_json::to_string(&small)?, r#""42""#);
/// assert_eq!(serde_json::from_str::<Sequence>("42")?, small);
/// assert!("12a".parse::<Sequence>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Sequence(Repr);

/// Canonical: a value that fits in 128 bits is always `Small`, so that the derived equality
/// and hash are those of the numbers.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// The value as two halves rather than a `u128`, so that the type is 8-byte aligned and
    /// 24 bytes (a `u128` would make it 32).
    Small { high: u64, low: u64 },
    /// The decimal digits of a value above `u128::MAX`, without leading zeros.
    Large(Arc<str>),
}

/// The most digits a sequence number may have (Kinesis's longest has 129).
pub const MAX_SEQUENCE_DIGITS: usize = 160;

/// Digits of `u128::MAX`: shorter texts always fit in 128 bits.
const U128_DIGITS: usize = 39;

/// Why a text is not a sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseSequenceError {
    /// No digits at all.
    #[error("a sequence number needs at least one digit; the text is empty")]
    Empty,
    /// A character other than `0`–`9` (signs, spaces and separators included).
    #[error("a sequence number has decimal digits only; found {found:?} at byte {at}")]
    NotADigit {
        /// The character.
        found: char,
        /// Its byte offset in the text.
        at: usize,
    },
    /// More than [`MAX_SEQUENCE_DIGITS`] digits.
    #[error("a sequence number has at most {max} digits; this one has {digits}")]
    TooLong {
        /// How many digits the text has.
        digits: usize,
        /// The most allowed.
        max: usize,
    },
}

impl Sequence {
    /// A sequence number that fits in 128 bits.
    pub const fn new(value: u128) -> Self {
        Self(Repr::Small {
            high: (value >> 64) as u64,
            low: value as u64,
        })
    }

    /// The value, if it fits in 128 bits.
    #[inline]
    pub fn as_u128(&self) -> Option<u128> {
        match &self.0 {
            Repr::Small { high, low } => Some((u128::from(*high) << 64) | u128::from(*low)),
            Repr::Large(_) => None,
        }
    }

    /// At least [`Sequence::digits`], without counting them: the digits of `u128::MAX` for
    /// a value that fits in 128 bits, the exact count for a longer one (kept as its digits).
    pub(crate) fn digits_at_most(&self) -> usize {
        match &self.0 {
            Repr::Small { .. } => U128_DIGITS,
            Repr::Large(digits) => digits.len(),
        }
    }

    /// How many decimal digits it has.
    pub(crate) fn digits(&self) -> usize {
        match &self.0 {
            Repr::Small { .. } => self
                .as_u128()
                .and_then(|v| v.checked_ilog10())
                .map_or(1, |log| log as usize + 1),
            Repr::Large(digits) => digits.len(),
        }
    }

    /// `self + n`, or `None` past [`MAX_SEQUENCE_DIGITS`] digits.
    #[inline]
    pub(crate) fn checked_add(&self, n: u64) -> Option<Self> {
        match self.as_u128().and_then(|v| v.checked_add(u128::from(n))) {
            Some(sum) => Some(Self::new(sum)),
            None => self.checked_add_digits(n),
        }
    }

    /// `self + n` by decimal addition on the digits, from the right.
    fn checked_add_digits(&self, n: u64) -> Option<Self> {
        let mut digits: Vec<u8> = self.to_string().into_bytes();
        let mut carry = u128::from(n);
        for digit in digits.iter_mut().rev() {
            if carry == 0 {
                break;
            }
            let sum = u128::from(*digit - b'0') + carry;
            *digit = b'0' + (sum % 10) as u8;
            carry = sum / 10;
        }
        let mut text = if carry > 0 {
            carry.to_string()
        } else {
            String::new()
        };
        text.push_str(std::str::from_utf8(&digits).ok()?);
        text.parse().ok()
    }

    /// Text that sorts as the numbers do: up to 39 digits zero-padded to 39 (the form
    /// checkpoints had when sequence numbers were 128-bit), longer ones as `:`, the count of
    /// digits in three, and the digits (`:` sorts after every digit).
    pub(crate) fn to_sortable_text(&self) -> String {
        let digits = self.to_string();
        if digits.len() <= U128_DIGITS {
            format!("{digits:0>39}")
        } else {
            format!(":{:03}{digits}", digits.len())
        }
    }

    /// Reads [`Sequence::to_sortable_text`]'s form, and only that: a text is accepted only if
    /// writing the number back gives the same text, since any other spelling (unpadded, a
    /// sign, leading zeros in the long form) would sort out of place and freeze a checkpoint.
    pub(crate) fn from_sortable_text(text: &str) -> Option<Self> {
        let parsed: Self = match text.strip_prefix(':') {
            Some(rest) => {
                let (len, digits) = rest.split_at_checked(3)?;
                let len: usize = len.parse().ok()?;
                (len == digits.len() && len > U128_DIGITS)
                    .then(|| digits.parse().ok())
                    .flatten()
            }
            None if (1..=U128_DIGITS).contains(&text.len()) => text.parse().ok(),
            None => None,
        }?;
        (parsed.to_sortable_text() == text).then_some(parsed)
    }
}

impl FromStr for Sequence {
    type Err = ParseSequenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.is_empty() {
            return Err(ParseSequenceError::Empty);
        }
        if let Some((at, found)) = text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
            return Err(ParseSequenceError::NotADigit { found, at });
        }
        if text.len() > MAX_SEQUENCE_DIGITS {
            return Err(ParseSequenceError::TooLong {
                digits: text.len(),
                max: MAX_SEQUENCE_DIGITS,
            });
        }
        let digits = text.trim_start_matches('0');
        if digits.len() <= U128_DIGITS {
            if let Ok(value) = digits.parse::<u128>() {
                return Ok(Self::new(value));
            }
            // An empty rest is zero.
            if digits.is_empty() {
                return Ok(Self::new(0));
            }
        }
        Ok(Self(Repr::Large(Arc::from(digits))))
    }
}

impl From<u128> for Sequence {
    fn from(value: u128) -> Self {
        Self::new(value)
    }
}

impl From<u64> for Sequence {
    fn from(value: u64) -> Self {
        Self::new(u128::from(value))
    }
}

impl Ord for Sequence {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            (Repr::Small { high: a, low: b }, Repr::Small { high: c, low: d }) => {
                (a, b).cmp(&(c, d))
            }
            (Repr::Small { .. }, Repr::Large(_)) => Ordering::Less,
            (Repr::Large(_), Repr::Small { .. }) => Ordering::Greater,
            // Without leading zeros, more digits is a larger number.
            (Repr::Large(a), Repr::Large(b)) => a.len().cmp(&b.len()).then_with(|| a.cmp(b)),
        }
    }
}

impl PartialOrd for Sequence {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Small { .. } => fmt::Display::fmt(&self.as_u128().unwrap_or_default(), f),
            Repr::Large(digits) => f.write_str(digits),
        }
    }
}

impl fmt::Debug for Sequence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sequence({self})")
    }
}

impl serde::Serialize for Sequence {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sequence {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = Sequence;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence number: a string of decimal digits, or an integer")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Sequence, E> {
                text.parse().map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Sequence, E> {
                Ok(Sequence::from(value))
            }

            fn visit_u128<E: serde::de::Error>(self, value: u128) -> Result<Sequence, E> {
                Ok(Sequence::new(value))
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Sequence, E> {
                u64::try_from(value)
                    .map(Sequence::from)
                    .map_err(|_| E::custom(format!("a sequence number is not negative: {value}")))
            }

            fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Sequence, E> {
                Err(E::custom(format!(
                    "the sequence number {value} is not an integer that a JSON number holds \
                     exactly; write it as a string of digits"
                )))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINESIS: &str = "49590338271490256608559692538361571095921575989136588898";

    #[test]
    fn orders_numerically_across_representations() {
        let values: Vec<Sequence> = [
            "0",
            "9",
            "10",
            "18446744073709551616",
            "340282366920938463463374607431768211455",
            "340282366920938463463374607431768211456",
            "999999999999999999999999999999999999999",
            "1000000000000000000000000000000000000000",
            KINESIS,
        ]
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
        for pair in values.windows(2) {
            assert!(pair[0] < pair[1], "{pair:?}");
            let (a, b) = (pair[0].to_sortable_text(), pair[1].to_sortable_text());
            assert!(a < b, "{a} < {b}");
        }
        for value in &values {
            assert_eq!(&value.to_string().parse::<Sequence>().unwrap(), value);
            assert_eq!(
                Sequence::from_sortable_text(&value.to_sortable_text()).as_ref(),
                Some(value)
            );
        }
    }

    #[test]
    fn leading_zeros_make_the_same_number() {
        let a: Sequence = "00042".parse().unwrap();
        assert_eq!(a, Sequence::new(42));
        let long = format!("000{KINESIS}");
        let b: Sequence = long.parse().unwrap();
        assert_eq!(b.to_string(), KINESIS);
        assert_eq!(b, KINESIS.parse().unwrap());
        use std::hash::BuildHasher;
        let state = std::hash::RandomState::new();
        assert_eq!(state.hash_one(&a), state.hash_one(Sequence::new(42)));
        assert_eq!(
            state.hash_one(&b),
            state.hash_one(KINESIS.parse::<Sequence>().unwrap())
        );
    }

    #[test]
    fn bad_text_is_refused_with_the_reason() {
        assert_eq!("".parse::<Sequence>(), Err(ParseSequenceError::Empty));
        assert_eq!(
            "12a".parse::<Sequence>(),
            Err(ParseSequenceError::NotADigit { found: 'a', at: 2 })
        );
        assert!(matches!(
            "-1".parse::<Sequence>(),
            Err(ParseSequenceError::NotADigit { found: '-', at: 0 })
        ));
        let long = "1".repeat(MAX_SEQUENCE_DIGITS + 1);
        assert_eq!(
            long.parse::<Sequence>(),
            Err(ParseSequenceError::TooLong {
                digits: MAX_SEQUENCE_DIGITS + 1,
                max: MAX_SEQUENCE_DIGITS
            })
        );
        assert!("1".repeat(MAX_SEQUENCE_DIGITS).parse::<Sequence>().is_ok());
        for bad in ["~", ":", ":00", ":0401", "12x", &"1".repeat(40)] {
            assert_eq!(Sequence::from_sortable_text(bad), None, "{bad}");
        }
        // Non-canonical texts parse as numbers but sort above every canonical one: a
        // checkpoint stored so would never move again.
        let forty = "1".repeat(40);
        for bad in [
            "5".to_owned(),
            "+5".to_owned(),
            format!(":+40{forty}"),
            format!(":041{}", "0".to_owned() + &forty),
            format!(":040{}", "0".repeat(40)),
            format!("+{}", "0".repeat(38)),
        ] {
            assert_eq!(Sequence::from_sortable_text(&bad), None, "{bad}");
        }
    }

    #[test]
    fn serialises_as_a_string_and_reads_strings_and_integers() {
        let big: Sequence = KINESIS.parse().unwrap();
        assert_eq!(
            serde_json::to_string(&big).unwrap(),
            format!("\"{KINESIS}\"")
        );
        assert_eq!(
            serde_json::from_str::<Sequence>(&format!("\"{KINESIS}\"")).unwrap(),
            big
        );
        assert_eq!(
            serde_json::from_str::<Sequence>("18446744073709551615").unwrap(),
            Sequence::from(u64::MAX)
        );
        assert!(serde_json::from_str::<Sequence>("18446744073709551616").is_err());
        assert!(serde_json::from_str::<Sequence>("-3").is_err());
        assert!(serde_json::from_str::<Sequence>("1.5").is_err());
        assert!(serde_json::from_str::<Sequence>("\"1 2\"").is_err());
    }

    #[test]
    fn adds_across_the_128_bit_boundary() {
        let max = Sequence::new(u128::MAX);
        assert_eq!(
            max.checked_add(1).unwrap().to_string(),
            "340282366920938463463374607431768211456"
        );
        let big: Sequence = KINESIS.parse().unwrap();
        assert_eq!(
            big.checked_add(2).unwrap().to_string(),
            "49590338271490256608559692538361571095921575989136588900"
        );
        let nines: Sequence = "9".repeat(60).parse().unwrap();
        assert_eq!(
            nines.checked_add(1).unwrap().to_string(),
            format!("1{}", "0".repeat(60))
        );
        let top: Sequence = "9".repeat(MAX_SEQUENCE_DIGITS).parse().unwrap();
        assert_eq!(top.checked_add(1), None);
        assert_eq!(std::mem::size_of::<Sequence>(), 24);
    }
}
