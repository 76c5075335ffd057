//! Serialising an event into a `serde_json::Value` in one pass, cheaper than
//! `serde_json::to_value` for the events' many small objects.
//!
//! `to_value` inserts every field into its object's `BTreeMap` one by one; this collects an
//! object's fields first and builds the map from them in one go (sorted, then bulk-built),
//! and leaves out the named fields of the outermost struct instead of removing them after.
//! Everything that is not a struct, map, sequence or option is `serde_json`'s own.

use serde::ser::{self, Serialize};
use serde_json::{Error, Map, Value};

/// The serializer `serde_json` would use, for what this one does not build itself.
type Plain = serde_json::value::Serializer;

/// `value` as JSON, without the fields named in `omit` of its outermost struct.
pub(crate) fn to_value_omitting<T: Serialize + ?Sized>(
    value: &T,
    omit: &'static [&'static str],
) -> Result<Value, Error> {
    value.serialize(Builder { omit })
}

/// Builds a `Value`; `omit` applies to the struct it is handed, not to the ones inside.
#[derive(Clone, Copy)]
struct Builder {
    omit: &'static [&'static str],
}

/// The serializer of what a struct, map or sequence contains: it omits nothing.
const INNER: Builder = Builder { omit: &[] };

/// A sequence's elements, gathered.
struct Elements(Vec<Value>);

/// An object's fields, gathered, then built into a map at once.
struct Fields {
    entries: Vec<(String, Value)>,
    key: Option<String>,
    omit: &'static [&'static str],
}

impl Fields {
    fn with_capacity(len: usize, omit: &'static [&'static str]) -> Self {
        Self {
            entries: Vec::with_capacity(len),
            key: None,
            omit,
        }
    }

    fn finish(self) -> Value {
        // `Map: FromIterator` sorts once and bulk-builds; a repeated key keeps its last value,
        // as `insert` would.
        Value::Object(self.entries.into_iter().collect::<Map<String, Value>>())
    }
}

impl ser::Serializer for Builder {
    type Ok = Value;
    type Error = Error;
    type SerializeSeq = Elements;
    type SerializeTuple = <Plain as ser::Serializer>::SerializeTuple;
    type SerializeTupleStruct = <Plain as ser::Serializer>::SerializeTupleStruct;
    type SerializeTupleVariant = <Plain as ser::Serializer>::SerializeTupleVariant;
    type SerializeMap = Fields;
    type SerializeStruct = Fields;
    type SerializeStructVariant = <Plain as ser::Serializer>::SerializeStructVariant;

    fn serialize_bool(self, v: bool) -> Result<Value, Error> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_i128(self, v: i128) -> Result<Value, Error> {
        Plain {}.serialize_i128(v)
    }
    fn serialize_u8(self, v: u8) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<Value, Error> {
        Ok(Value::from(v))
    }
    fn serialize_u128(self, v: u128) -> Result<Value, Error> {
        Plain {}.serialize_u128(v)
    }
    fn serialize_f32(self, v: f32) -> Result<Value, Error> {
        Plain {}.serialize_f32(v)
    }
    fn serialize_f64(self, v: f64) -> Result<Value, Error> {
        Plain {}.serialize_f64(v)
    }
    fn serialize_char(self, v: char) -> Result<Value, Error> {
        Ok(Value::String(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, Error> {
        Ok(Value::String(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, Error> {
        Plain {}.serialize_bytes(v)
    }
    fn serialize_none(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, Error> {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, name: &'static str) -> Result<Value, Error> {
        Plain {}.serialize_unit_struct(name)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<Value, Error> {
        Plain {}.serialize_unit_variant(name, index, variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, Error> {
        Plain {}.serialize_newtype_variant(name, index, variant, value)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Elements, Error> {
        Ok(Elements(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, Error> {
        Plain {}.serialize_tuple(len)
    }
    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Plain {}.serialize_tuple_struct(name, len)
    }
    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Plain {}.serialize_tuple_variant(name, index, variant, len)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Fields, Error> {
        Ok(Fields::with_capacity(len.unwrap_or(0), &[]))
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<Fields, Error> {
        Ok(Fields::with_capacity(len, self.omit))
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Plain {}.serialize_struct_variant(name, index, variant, len)
    }
}

impl ser::SerializeSeq for Elements {
    type Ok = Value;
    type Error = Error;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        self.0.push(value.serialize(INNER)?);
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(Value::Array(self.0))
    }
}

impl ser::SerializeMap for Fields {
    type Ok = Value;
    type Error = Error;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Error> {
        // Keys as `serde_json` writes them: strings, and numbers or booleans as text.
        let key = match key.serialize(INNER)? {
            Value::String(text) => text,
            scalar @ (Value::Number(_) | Value::Bool(_)) => scalar.to_string(),
            _ => return Err(ser::Error::custom("key must be a string")),
        };
        self.key = Some(key);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Error> {
        let key = self
            .key
            .take()
            .ok_or_else(|| <Error as ser::Error>::custom("a map value without its key"))?;
        self.entries.push((key, value.serialize(INNER)?));
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for Fields {
    type Ok = Value;
    type Error = Error;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        if !self.omit.contains(&key) {
            self.entries.push((key.to_owned(), value.serialize(INNER)?));
        }
        Ok(())
    }
    fn end(self) -> Result<Value, Error> {
        Ok(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Sample {
        kind: Option<String>,
        name: String,
        count: i64,
        ratio: f64,
        tags: Vec<String>,
        labels: HashMap<u16, bool>,
        inner: Inner,
        #[serde(skip_serializing_if = "Option::is_none")]
        absent: Option<String>,
        unit: (),
        pair: (u8, char),
        choice: Choice,
    }

    #[derive(serde::Serialize)]
    struct Inner {
        kind: &'static str,
        nothing: Option<u8>,
    }

    #[derive(serde::Serialize)]
    enum Choice {
        Struct { x: u8 },
    }

    fn sample() -> Sample {
        Sample {
            kind: Some("k".to_owned()),
            name: "n".to_owned(),
            count: -3,
            ratio: f64::NAN,
            tags: vec!["a".to_owned(), "b".to_owned()],
            labels: HashMap::from([(7, true)]),
            inner: Inner {
                kind: "inner",
                nothing: None,
            },
            absent: None,
            unit: (),
            pair: (1, 'c'),
            choice: Choice::Struct { x: 2 },
        }
    }

    #[test]
    fn builds_what_to_value_builds() {
        let expected = serde_json::to_value(sample()).unwrap();
        assert_eq!(to_value_omitting(&sample(), &[]).unwrap(), expected);
    }

    #[test]
    fn omits_the_named_fields_of_the_outermost_struct_only() {
        let mut expected = serde_json::to_value(sample()).unwrap();
        let object = expected.as_object_mut().unwrap();
        object.remove("kind");
        object.remove("count");
        let built = to_value_omitting(&sample(), &["kind", "count"]).unwrap();
        assert_eq!(built, expected);
        assert_eq!(built["inner"]["kind"], "inner");
    }
}
