//! Serde for the RFC 3339 times that Lambda's and S3's records carry
//! (`2019-11-14T00:38:04.835Z`), written by [`nimbus_core::util::aws::rfc3339_millis`] and
//! read by [`nimbus_core::util::aws::parse_rfc3339`].

/// Serde for a `SystemTime` written as RFC 3339 with milliseconds.
pub(crate) mod millis {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&nimbus_core::util::aws::rfc3339_millis(*at))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        nimbus_core::util::aws::parse_rfc3339(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not an RFC 3339 time: {text:?}")))
    }
}
