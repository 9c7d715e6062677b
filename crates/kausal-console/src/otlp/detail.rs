//! A span's detail — its attributes, events and links — as the store keeps
//! it and as the console shows it (no I/O).
//!
//! Kept as the protobuf of an OTLP `Span` message that holds only those
//! three fields: the receiver encodes them from the span it decoded,
//! without copying it (prost's field encoders at the fields' tags in
//! `Span`, which a test pins against prost's own encoding of such a
//! message), which costs a fraction of writing them as JSON text and
//! makes the store ~21 % smaller (docs/benchmarks.md, "Span detail as
//! received"). Shown as JSON values, the same a row of the old form (JSON
//! text, before migration 010) parses to: attributes an object of name →
//! value, events an array of `{attributes, name, time_ns}`, links an array
//! of `{attributes, span_id, trace_id}` without the links to no valid
//! context.

use kausal_store::SpanDetail;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use prost::encoding::message::{encode_repeated, encoded_len_repeated};
use serde_json::Value;

use super::json::{Attributes, Events, LinkJson, read_json};
use super::{span_hex, trace_hex};

/// The tags of `attributes`, `events` and `links` in OTLP's `Span`.
const ATTRIBUTES_TAG: u32 = 9;
const EVENTS_TAG: u32 = 11;
const LINKS_TAG: u32 = 13;

/// The detail of `span` as stored: a `Span` message with only its
/// attributes, events and links.
pub fn encode(span: &Span) -> Vec<u8> {
    let len = encoded_len_repeated(ATTRIBUTES_TAG, &span.attributes)
        + encoded_len_repeated(EVENTS_TAG, &span.events)
        + encoded_len_repeated(LINKS_TAG, &span.links);
    let mut buf = Vec::with_capacity(len);
    encode_repeated(ATTRIBUTES_TAG, &span.attributes, &mut buf);
    encode_repeated(EVENTS_TAG, &span.events, &mut buf);
    encode_repeated(LINKS_TAG, &span.links, &mut buf);
    buf
}

/// A span's detail as the console shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct DetailView {
    pub attributes: Value,
    pub events: Value,
    pub links: Value,
}

impl DetailView {
    /// What a detail that cannot be read shows: nothing, rather than a
    /// failed document (the row's columns still show).
    fn unreadable() -> Self {
        Self {
            attributes: Value::Null,
            events: Value::Null,
            links: Value::Null,
        }
    }
}

/// The detail of a stored span, in either form.
pub fn view(detail: &SpanDetail) -> DetailView {
    match detail {
        SpanDetail::Otlp(bytes) => match Span::decode(bytes.as_slice()) {
            Ok(span) => DetailView {
                attributes: to_value(&Attributes(&span.attributes)),
                events: to_value(&Events(&span.events)),
                links: to_value(&valid_links(&span)),
            },
            Err(_) => DetailView::unreadable(),
        },
        SpanDetail::Json {
            attributes,
            events,
            links,
        } => DetailView {
            attributes: read_json(attributes),
            events: read_json(events),
            links: read_json(links),
        },
    }
}

/// The span's links to a valid context (a link to nothing joins nothing).
pub(super) fn valid_links(span: &Span) -> Vec<LinkJson<'_>> {
    span.links
        .iter()
        .filter_map(|link| {
            Some(LinkJson {
                trace_id: trace_hex(&link.trace_id)?,
                span_id: span_hex(&link.span_id)?,
                attributes: Attributes(&link.attributes),
            })
        })
        .collect()
}

fn to_value(value: &impl serde::Serialize) -> Value {
    // Strings, numbers, booleans, nulls, arrays and string-keyed objects
    // only, which serde_json cannot fail to turn into a Value.
    serde_json::to_value(value).unwrap_or(Value::Null)
}
