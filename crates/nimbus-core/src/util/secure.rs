//! Bytes from the operating system's secure random source, for secrets (credentials) and ids
//! that must not be predictable from others (policy revision ids).

/// `n` random bytes. Should the operating system refuse (it does not on the systems nimbus
/// runs on), the error is logged and a fast generator seeded from the clock fills in: weaker,
/// but the runtime keeps working.
pub(crate) fn secure_random(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    if let Err(error) = getrandom::fill(&mut bytes) {
        tracing::error!(%error, "the secure random source failed; secrets are weaker");
        bytes.iter_mut().for_each(|b| *b = fastrand::u8(..));
    }
    bytes
}
