//! The fields of a stream entry: which one is the body (queue) or the data and partition key
//! (stream), for entries written by nimbus and by plain producers (`redis-cli XADD`, other
//! languages' clients) alike.

use nimbus_core::handler::hops;
use nimbus_sources::Attributes;

/// The fields a queue message's body is read from, first found wins: `b` (what nimbus
/// writes), then the names plain producers commonly use.
pub(crate) const BODY_FIELDS: &[&str] = &["b", "body", "data", "message", "payload", "value"];

/// The fields a stream record's data is read from, first found wins: `d` (what nimbus
/// writes), then the same names as a queue's body.
pub(crate) const DATA_FIELDS: &[&str] = &["d", "data", "body", "message", "payload", "value"];

/// The fields a stream record's partition key is read from, first found wins.
pub(crate) const KEY_FIELDS: &[&str] = &["k", "key", "partition_key"];

/// An entry's fields, in the order the server returned them.
pub(crate) type Fields = Vec<(String, Vec<u8>)>;

/// Removes and returns the first of `names` present in `fields`.
fn take(fields: &mut Fields, names: &[&str]) -> Option<Vec<u8>> {
    let at = names
        .iter()
        .find_map(|name| fields.iter().position(|(k, _)| k == name))?;
    Some(fields.swap_remove(at).1)
}

/// A queue message's body and attributes: the body is the first of [`BODY_FIELDS`] present,
/// or the only field of a single-field entry (the `nimbus-hops` field aside); every other field is an attribute (its value
/// read as UTF-8, invalid bytes replaced). An entry with several fields and none of those
/// names has no body: `Err` hands its fields back with the reason.
pub(crate) fn queue_body(mut fields: Fields) -> Result<(Vec<u8>, Attributes), (Fields, String)> {
    // The hop count is never the body: a single other field beside it still is.
    let others = fields.iter().filter(|(k, _)| k != hops::ATTRIBUTE).count();
    let body = match take(&mut fields, BODY_FIELDS) {
        Some(body) => body,
        None if others == 1 => {
            let at = fields.iter().position(|(k, _)| k != hops::ATTRIBUTE);
            at.map(|at| fields.swap_remove(at).1).unwrap_or_default()
        }
        None => {
            let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
            let reason = format!(
                "no body field: the entry has fields {names:?} and none of {BODY_FIELDS:?}"
            );
            return Err((fields, reason));
        }
    };
    Ok((body, attributes(fields)))
}

fn attributes(fields: Fields) -> Attributes {
    if fields.is_empty() {
        return Attributes::new();
    }
    let map: std::collections::BTreeMap<String, String> = fields
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
        .collect();
    map.into()
}

/// A stream record's partition key and data. The key is the first of [`KEY_FIELDS`] present
/// (empty without one); the data is the first of [`DATA_FIELDS`] present, else the only
/// remaining field, else every remaining field as a JSON object of strings (so that an entry
/// such as `user 7 action click` reaches the function whole rather than as nothing).
pub(crate) fn stream_record(mut fields: Fields) -> (String, Vec<u8>) {
    let key = take(&mut fields, KEY_FIELDS)
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .unwrap_or_default();
    let data = match take(&mut fields, DATA_FIELDS) {
        Some(data) => data,
        None if fields.len() <= 1 => fields.pop().map(|(_, v)| v).unwrap_or_default(),
        None => {
            let object: serde_json::Map<String, serde_json::Value> = fields
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        serde_json::Value::String(String::from_utf8_lossy(&v).into_owned()),
                    )
                })
                .collect();
            serde_json::to_vec(&object).unwrap_or_default()
        }
    };
    (key, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn the_body_is_read_from_the_common_field_names() {
        for name in BODY_FIELDS {
            let (body, attributes) = queue_body(fields(&[(name, "hi"), ("kind", "x")])).unwrap();
            assert_eq!(body, b"hi", "{name}");
            assert_eq!(attributes.get("kind"), Some("x"));
        }
        // `b` wins over `body`, which stays an attribute.
        let (body, attributes) = queue_body(fields(&[("body", "2"), ("b", "1")])).unwrap();
        assert_eq!(
            (body.as_slice(), attributes.get("body")),
            (&b"1"[..], Some("2"))
        );
        let (body, attributes) = queue_body(fields(&[("anything", "only")])).unwrap();
        assert_eq!(body, b"only");
        assert!(attributes.is_empty());
        // The hop count beside a single field leaves that field the body.
        let (body, attributes) =
            queue_body(fields(&[("custom", "data"), ("nimbus-hops", "3")])).unwrap();
        assert_eq!(body, b"data");
        assert_eq!(attributes.get("nimbus-hops"), Some("3"));
        let (fields_back, reason) =
            queue_body(fields(&[("user", "7"), ("action", "go")])).unwrap_err();
        assert_eq!(fields_back.len(), 2);
        assert!(reason.contains("no body field"), "{reason}");
    }

    #[test]
    fn stream_records_have_a_key_and_data_whatever_the_producer_wrote() {
        assert_eq!(
            stream_record(fields(&[("k", "a"), ("d", "x")])),
            ("a".to_owned(), b"x".to_vec())
        );
        assert_eq!(
            stream_record(fields(&[("key", "a"), ("payload", "x")])),
            ("a".to_owned(), b"x".to_vec())
        );
        assert_eq!(
            stream_record(fields(&[("d", "x")])),
            (String::new(), b"x".to_vec())
        );
        assert_eq!(stream_record(fields(&[("temp", "21")])).1, b"21");
        assert_eq!(
            stream_record(fields(&[("k", "a"), ("user", "7"), ("action", "go")])).1,
            br#"{"action":"go","user":"7"}"#
        );
    }
}
