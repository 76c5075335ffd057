//! [`Credentials`]: the access keys a server knows, each with its secret and the identity a
//! request signed with it invokes as.

use std::collections::HashMap;
use std::sync::Arc;

use nimbus_core::{ConfigError, Principal};

/// One access key: its secret and who signs with it.
#[derive(Clone)]
pub(crate) struct Key {
    secret: Arc<str>,
    principal: Principal,
}

impl Key {
    /// The secret access key, for the signing key.
    pub(crate) fn secret(&self) -> &str {
        &self.secret
    }

    /// The identity a request signed with this key acts as.
    pub(crate) fn principal(&self) -> &Principal {
        &self.principal
    }
}

/// The access keys a server accepts: each access key id with its secret and the
/// [`Principal::Identity`] its requests invoke as. With credentials, the Invoke API verifies
/// each request's SigV4 signature, refuses unknown keys and bad signatures, and invokes as
/// the signer (unsigned requests as [`Principal::Anonymous`]), so that function policies
/// decide who may invoke what.
///
/// ```
/// use std::sync::Arc;
/// use nimbus_core::Principal;
/// use nimbus_http::{Credentials, HttpConfig};
///
/// let ana = Principal::Identity {
///     arn: Arc::from("arn:aws:iam::111122223333:user/ana"),
///     account: Arc::from("111122223333"),
///     org_id: None,
/// };
/// let config = HttpConfig::default()
///     .with_credentials(Credentials::new().with_key("AKIAANA", "ana's secret", ana));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Clone, Default)]
pub struct Credentials {
    keys: HashMap<String, Key>,
}

impl std::fmt::Debug for Credentials {
    /// Key ids and identities only: never a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<_> = self.keys.iter().collect();
        keys.sort_by(|a, b| a.0.cmp(b.0));
        f.debug_map()
            .entries(keys.iter().map(|(id, key)| (id, key.principal.to_string())))
            .finish()
    }
}

impl Credentials {
    /// No keys.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the key `access_key_id`, whose requests are signed with `secret`
    /// and invoke as `identity` (a [`Principal::Identity`]).
    #[must_use]
    pub fn with_key(
        mut self,
        access_key_id: impl Into<String>,
        secret: impl Into<String>,
        identity: Principal,
    ) -> Self {
        let key = Key {
            secret: secret.into().into(),
            principal: identity,
        };
        self.keys.insert(access_key_id.into(), key);
        self
    }

    /// The key `access_key_id`, if known.
    pub(crate) fn get(&self, access_key_id: &str) -> Option<&Key> {
        self.keys.get(access_key_id)
    }

    /// How many keys there are.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks every key: an id and a secret that are not empty, and an identity as principal
    /// (a key must not make its holder the host, a service or a function).
    ///
    /// # Errors
    ///
    /// The first invalid key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut ids: Vec<&String> = self.keys.keys().collect();
        ids.sort();
        for id in ids {
            let key = &self.keys[id];
            let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
            if !id_ok {
                return Err(ConfigError::new(
                    "http",
                    "credentials",
                    id,
                    "access key ids of visible ASCII without '/'",
                ));
            }
            if key.secret.is_empty() {
                return Err(ConfigError::new(
                    "http",
                    "credentials",
                    id,
                    "a secret that is not empty",
                ));
            }
            if !matches!(key.principal, Principal::Identity { .. }) {
                return Err(ConfigError::new(
                    "http",
                    "credentials",
                    key.principal.to_string(),
                    "Principal::Identity for every key",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ana() -> Principal {
        Principal::Identity {
            arn: "arn:aws:iam::111122223333:user/ana".into(),
            account: "111122223333".into(),
            org_id: None,
        }
    }

    #[test]
    fn debug_shows_key_ids_and_identities_never_secrets() {
        let credentials = Credentials::new().with_key("AKIAANA", "s3cr3t-value", ana());
        let shown = format!("{credentials:?}");
        assert!(shown.contains("AKIAANA"), "{shown}");
        assert!(shown.contains("user/ana"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
    }

    #[test]
    fn a_key_must_name_an_identity_and_have_a_secret() {
        assert!(Credentials::new()
            .with_key("AKIAANA", "secret", ana())
            .validate()
            .is_ok());
        let host = Credentials::new().with_key("AKIAHOST", "secret", Principal::Host);
        assert_eq!(host.validate().unwrap_err().field, "credentials");
        assert!(Credentials::new()
            .with_key("AKIAANA", "", ana())
            .validate()
            .is_err());
        assert!(Credentials::new()
            .with_key("AKIA/ANA", "secret", ana())
            .validate()
            .is_err());
    }
}
