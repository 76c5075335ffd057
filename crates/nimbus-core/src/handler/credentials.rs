//! [`AwsCredentials`]: the access key a function's code signs its AWS SDK calls with, as
//! Lambda hands a function its role's credentials in its environment.

use std::fmt;

/// An access key id and its secret. The secret is never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AwsCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
}

impl AwsCredentials {
    /// A key pair.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
        }
    }

    /// A fresh pair shaped as AWS's temporary ones: `ASIA` and 16 characters, and a
    /// 40-character secret, from the operating system's secure random source (a secret that
    /// could be predicted from another function's would let one function act as another).
    pub fn generate() -> Self {
        const KEY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        // Both alphabets have a power-of-two size: a byte modulo their length is uniform.
        let pick = |alphabet: &[u8], n: usize| -> String {
            crate::util::secure_random(n)
                .into_iter()
                .map(|b| char::from(alphabet[usize::from(b) % alphabet.len()]))
                .collect()
        };
        Self {
            access_key_id: format!("ASIA{}", pick(KEY, 16)),
            secret_access_key: pick(SECRET, 40),
        }
    }
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}
