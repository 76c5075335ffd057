//! Request ids for answers that no invocation produced (errors, dry runs, the gateway's own
//! answers), in the form of Lambda's: a UUID.

/// A fresh id for answers that no invocation produced.
pub(crate) fn fresh_request_id() -> String {
    let bits = (u128::from(fastrand_u64()) << 64) | u128::from(fastrand_u64());
    uuid_text(bits)
}

/// `bits` as [`nimbus_core::RequestId`] displays them (`8-4-4-4-12` lowercase hex digits), written
/// directly: every request needs one, and `fmt` costs several times more.
fn uuid_text(bits: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(36);
    for nibble in 0..32 {
        if matches!(nibble, 8 | 12 | 16 | 20) {
            text.push('-');
        }
        let digit = (bits >> (124 - 4 * nibble)) & 0xf;
        text.push(char::from(DIGITS[usize::try_from(digit).unwrap_or(0)]));
    }
    text
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_read_as_request_id_displays_them() {
        for bits in [0, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            let expected = nimbus_core::RequestId::from_u128(bits).to_string();
            assert_eq!(uuid_text(bits), expected);
        }
        assert_eq!(fresh_request_id().len(), 36);
    }
}
