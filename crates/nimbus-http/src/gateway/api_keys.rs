//! [`ApiKeys`]: the API keys a host gives its gateway, each with the identity its requests
//! invoke as, kept only as SHA-256 digests so that no key is ever printed or compared byte by
//! byte.

use std::collections::HashMap;

use nimbus_core::{ConfigError, Principal};
use sha2::{Digest, Sha256};

/// The shortest API key API Gateway accepts.
const MIN_LEN: usize = 20;
/// The longest.
const MAX_LEN: usize = 128;

/// One key, as kept: who uses it, and what the validation needs to know of its value.
#[derive(Clone)]
struct Entry {
    principal: Principal,
    len: usize,
    visible_ascii: bool,
}

/// The API keys of routes with [`RouteAuth::ApiKey`](crate::RouteAuth::ApiKey): a request
/// must carry one in `x-api-key`, and then invokes as that key's [`Principal::Identity`], so
/// that the function's policy decides whether it may.
///
/// Keys are kept as SHA-256 digests: `Debug` shows only how many there are and whom they
/// stand for.
///
/// ```
/// use std::sync::Arc;
/// use nimbus_core::Principal;
/// use nimbus_http::{ApiKeys, HttpConfig};
///
/// let partner = Principal::Identity {
///     arn: Arc::from("arn:aws:iam::111122223333:user/partner"),
///     account: Arc::from("111122223333"),
///     org_id: None,
/// };
/// let keys = ApiKeys::new().with_key("partner-key-0123456789abcdef", partner);
/// assert!(!format!("{keys:?}").contains("0123456789"));
/// let config = HttpConfig::default().with_api_keys(keys);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Default)]
pub struct ApiKeys {
    keys: HashMap<[u8; 32], Entry>,
}

impl std::fmt::Debug for ApiKeys {
    /// The principals only: never a key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut principals: Vec<String> = self
            .keys
            .values()
            .map(|entry| entry.principal.to_string())
            .collect();
        principals.sort();
        f.debug_struct("ApiKeys")
            .field("principals", &principals)
            .finish()
    }
}

impl ApiKeys {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the key `value` (20 to 128 visible ASCII characters, as API
    /// Gateway's; checked by [`ApiKeys::validate`]), whose requests invoke as `identity`
    /// (a [`Principal::Identity`]).
    #[must_use]
    pub fn with_key(mut self, value: impl AsRef<str>, identity: Principal) -> Self {
        let value = value.as_ref();
        let entry = Entry {
            principal: identity,
            len: value.len(),
            visible_ascii: value.bytes().all(|b| b.is_ascii_graphic()),
        };
        self.keys.insert(digest(value), entry);
        self
    }

    /// The principal of the key `value`, if it is one.
    pub(crate) fn principal_of(&self, value: &str) -> Option<&Principal> {
        self.keys.get(&digest(value)).map(|entry| &entry.principal)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks every key: 20 to 128 visible ASCII characters, standing for an identity (a key
    /// must not make its holder the host, a service or a function). Errors name the key's
    /// principal, never the key.
    ///
    /// # Errors
    ///
    /// The first invalid key, by principal.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut entries: Vec<&Entry> = self.keys.values().collect();
        entries.sort_by_key(|entry| entry.principal.to_string());
        for entry in entries {
            let shaped = (MIN_LEN..=MAX_LEN).contains(&entry.len) && entry.visible_ascii;
            if !shaped {
                return Err(ConfigError::new(
                    "http",
                    "api_keys",
                    format!("the key of {} ({} bytes)", entry.principal, entry.len),
                    "keys of 20 to 128 visible ASCII characters",
                ));
            }
            if !matches!(entry.principal, Principal::Identity { .. }) {
                return Err(ConfigError::new(
                    "http",
                    "api_keys",
                    entry.principal.to_string(),
                    "Principal::Identity for every key",
                ));
            }
        }
        Ok(())
    }
}

fn digest(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partner() -> Principal {
        Principal::Identity {
            arn: "arn:aws:iam::111122223333:user/partner".into(),
            account: "111122223333".into(),
            org_id: None,
        }
    }

    const KEY: &str = "k3y-value-0123456789-abcdef";

    #[test]
    fn a_key_finds_its_principal_and_debug_never_shows_it() {
        let keys = ApiKeys::new().with_key(KEY, partner());
        assert_eq!(keys.principal_of(KEY), Some(&partner()));
        assert_eq!(keys.principal_of("k3y-value-0123456789-abcdeF"), None);
        assert_eq!(keys.principal_of(""), None);
        let shown = format!("{keys:?}");
        assert!(shown.contains("user/partner"), "{shown}");
        assert!(!shown.contains("k3y"), "{shown}");
    }

    #[test]
    fn keys_must_be_api_gateway_shaped_and_name_an_identity() {
        assert!(ApiKeys::new().with_key(KEY, partner()).validate().is_ok());
        for bad in ["short", "has a space in it 0123456789", &"x".repeat(129)] {
            let error = ApiKeys::new()
                .with_key(bad, partner())
                .validate()
                .unwrap_err();
            assert_eq!(error.field, "api_keys");
            assert!(!error.value.contains(bad), "{}", error.value);
        }
        let host = ApiKeys::new().with_key(KEY, Principal::Host);
        assert_eq!(host.validate().unwrap_err().value, "\"host\"");
    }
}
