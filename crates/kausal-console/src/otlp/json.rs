//! OTLP values as JSON text (no I/O): attributes, span events, links and
//! any-values written straight from the decoded messages with serde_json's
//! serializer, without building `serde_json::Value`s: the same text a
//! `serde_json::Map` would give (keys in byte order, a repeated key keeping
//! its last value), at a fraction of the allocations. Log records' columns
//! are written with it on the ingest path; span detail is shown with it on
//! the read path (`detail`).

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::clamp_ns;

/// Compact JSON text of one of the views below.
pub(super) fn json_text(value: &impl Serialize) -> String {
    // Only strings, numbers, booleans, nulls, arrays and string-keyed
    // objects are written, which serde_json cannot fail to serialise.
    serde_json::to_string(value).expect("OTLP values serialise to JSON")
}

/// JSON text this module wrote (a log record's attributes, a span's detail
/// stored before migration 010), read back; `null` if a row holds text that
/// is not JSON, rather than a failed document.
pub(crate) fn read_json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(serde_json::Value::Null)
}

/// Attributes as a JSON object: keys in byte order, a repeated key keeps
/// its last value — the text of the `serde_json::Map` they would collect
/// into (a `BTreeMap`: serde_json's `preserve_order` is off).
pub(super) struct Attributes<'a>(pub(super) &'a [KeyValue]);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<&KeyValue> = self.0.iter().collect();
        // Stable: of a repeated key, the last sent stays last.
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
        let mut map = serializer.serialize_map(None)?;
        for (i, kv) in sorted.iter().enumerate() {
            if sorted.get(i + 1).is_some_and(|next| next.key == kv.key) {
                continue;
            }
            map.serialize_entry(&kv.key, &Any(kv.value.as_ref()))?;
        }
        map.end()
    }
}

/// One attribute value as JSON: a missing value and a non-finite double
/// are `null`, bytes are lowercase hex, a key-value list an object as
/// [`Attributes`].
pub(super) struct Any<'a>(pub(super) Option<&'a AnyValue>);

impl Serialize for Any<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use any_value::Value as V;
        match self.0.and_then(|v| v.value.as_ref()) {
            None => serializer.serialize_unit(),
            Some(V::StringValue(s)) => serializer.serialize_str(s),
            Some(V::BoolValue(b)) => serializer.serialize_bool(*b),
            Some(V::IntValue(i)) => serializer.serialize_i64(*i),
            Some(V::DoubleValue(d)) if d.is_finite() => serializer.serialize_f64(*d),
            Some(V::DoubleValue(_)) => serializer.serialize_unit(),
            Some(V::ArrayValue(a)) => serializer.collect_seq(a.values.iter().map(|v| Any(Some(v)))),
            Some(V::KvlistValue(kv)) => Attributes(&kv.values).serialize(serializer),
            Some(V::BytesValue(b)) => serializer.serialize_str(&hex::encode(b)),
        }
    }
}

/// Span events as a JSON array of `{attributes, name, time_ns}`.
pub(super) struct Events<'a>(pub(super) &'a [span::Event]);

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|e| EventJson {
            attributes: Attributes(&e.attributes),
            name: &e.name,
            time_ns: clamp_ns(e.time_unix_nano),
        }))
    }
}

// The fields of the two below are in byte order, as the keys of an object
// of `serde_json::Map` are.

#[derive(Serialize)]
struct EventJson<'a> {
    attributes: Attributes<'a>,
    name: &'a str,
    time_ns: i64,
}

#[derive(Serialize)]
pub(super) struct LinkJson<'a> {
    pub(super) attributes: Attributes<'a>,
    pub(super) span_id: String,
    pub(super) trace_id: String,
}
