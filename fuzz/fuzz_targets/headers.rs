//! `headers::decode` over an arbitrary list of Kafka headers.
//!
//! Input: the text format of `kausal_fuzz` (first line `#kausal-headers`) or
//! anything else, decoded with `arbitrary` into a record position and a list
//! of `(name, Option<bytes>)` headers.
//!
//! Checks, beyond "never panics" (`decode` must never fail, DESIGN §4):
//! - every issue has a kind and a message;
//! - duplicates are reported exactly for the contract's headers that appear
//!   more than once (names compared ignoring ASCII case);
//! - a missing or unusable `event-id` gives the deterministic id of the
//!   record position; a usable one is kept;
//! - an adopted correlation id is the event id; a usable one is kept as sent;
//! - `tracestate` never survives without a valid `traceparent`, and a valid
//!   single `traceparent` is kept;
//! - decoded → encoded → decoded is the identity with no issues, whatever
//!   the position of the second read, and encoding is stable.
#![no_main]

use arbitrary::Arbitrary;
use kausal_core::headers::{self, DecodedHeaders, HeaderIssue, RecordPosition};
use kausal_core::{CorrelationId, EventId, TraceParent};
use kausal_fuzz::{ArbHeaders, OwnedHeader, Position, borrow, count, last};
use libfuzzer_sys::fuzz_target;

/// Names the arbitrary format picks from: the contract, one header outside
/// it and one that differs by a character.
const NAMES: [&str; 13] = [
    headers::TRACEPARENT,
    headers::TRACESTATE,
    headers::BAGGAGE,
    headers::EVENT_ID,
    headers::EVENT_TYPE,
    headers::EVENT_VERSION,
    headers::CORRELATION_ID,
    headers::CAUSATION_ID,
    headers::SOURCE_SERVICE,
    headers::CONTENT_TYPE,
    headers::REPLAY_COUNT,
    "x-request-id",
    "event_id",
];


#[derive(Debug, Arbitrary)]
struct Input {
    topic: String,
    partition: i32,
    offset: i64,
    headers: ArbHeaders,
}

fuzz_target!(|data: &[u8]| {
    let (position, raw) = match kausal_fuzz::parse_text(data, "#kausal-headers") {
        Some(text) => (text.position.unwrap_or_default(), text.headers),
        None => match kausal_fuzz::from_arbitrary::<Input>(data) {
            Some(input) => (
                Position {
                    topic: input.topic,
                    partition: input.partition,
                    offset: input.offset,
                },
                input.headers.resolve(&NAMES),
            ),
            None => return,
        },
    };
    check(&position, &raw);
});

fn utf8(value: Option<Option<&[u8]>>) -> Option<&str> {
    value.flatten().and_then(|v| std::str::from_utf8(v).ok())
}

fn check(position: &Position, raw: &[OwnedHeader]) {
    let pos = RecordPosition {
        topic: &position.topic,
        partition: position.partition,
        offset: position.offset,
    };
    let decoded = headers::decode(&borrow(raw), pos);
    let h = &decoded.headers;
    for issue in &decoded.issues {
        assert!(!issue.kind().is_empty());
        assert!(!issue.to_string().is_empty());
    }

    // Duplicates: exactly the contract headers seen more than once.
    let duplicates: Vec<&str> = decoded
        .issues
        .iter()
        .filter_map(|i| match i {
            HeaderIssue::Duplicate { header } => Some(*header),
            _ => None,
        })
        .collect();
    let expected: Vec<&str> = headers::KNOWN
        .iter()
        .copied()
        .filter(|name| count(raw, name) > 1)
        .collect();
    let mut sorted = duplicates.clone();
    sorted.sort_unstable();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort_unstable();
    assert_eq!(sorted, expected_sorted);

    // Event id: kept when usable, else derived from the position.
    let derived = EventId::for_record(pos.topic, pos.partition, pos.offset);
    match utf8(last(raw, headers::EVENT_ID)).map(str::parse::<EventId>) {
        Some(Ok(id)) => assert_eq!(h.event_id, id),
        _ => {
            assert_eq!(h.event_id, derived);
            assert!(decoded.issues.iter().any(|i| matches!(
                i,
                HeaderIssue::EventIdMissing | HeaderIssue::EventIdInvalid { .. }
            )));
        }
    }

    // Correlation id: kept as sent when usable, else the event id.
    match utf8(last(raw, headers::CORRELATION_ID)).map(str::parse::<CorrelationId>) {
        Some(Ok(c)) => {
            assert_eq!(h.correlation_id, c);
            assert!(!decoded.correlation_adopted());
        }
        _ => {
            assert!(decoded.correlation_adopted());
            assert_eq!(h.correlation_id, CorrelationId::adopt(h.event_id));
        }
    }

    // Trace context.
    if h.tracestate.is_some() {
        assert!(h.traceparent.is_some(), "tracestate without traceparent");
    }
    if count(raw, headers::TRACEPARENT) == 1 {
        let expected = last(raw, headers::TRACEPARENT)
            .flatten()
            .and_then(|v| TraceParent::parse_bytes(v).ok());
        assert_eq!(h.traceparent, expected);
    } else {
        assert_eq!(h.traceparent, None);
    }

    // Optional text headers: last one wins, empty means absent.
    for (name, got) in [
        (headers::EVENT_TYPE, &h.event_type),
        (headers::SOURCE_SERVICE, &h.source_service),
        (headers::CONTENT_TYPE, &h.content_type),
        (headers::BAGGAGE, &h.baggage),
    ] {
        let expected = utf8(last(raw, name)).filter(|s| !s.is_empty());
        assert_eq!(got.as_deref(), expected, "{name}");
    }

    round_trip(&decoded, pos);
}

fn round_trip(decoded: &DecodedHeaders, pos: RecordPosition<'_>) {
    let encoded = decoded.headers.encode();
    let mut names: Vec<&str> = encoded.iter().map(|(n, _)| *n).collect();
    assert!(names.iter().all(|n| headers::KNOWN.contains(n)), "{names:?}");
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), encoded.len(), "a header encoded twice");

    let owned: Vec<OwnedHeader> = encoded
        .iter()
        .map(|(n, v)| OwnedHeader::new(*n, Some(v.clone().into_bytes())))
        .collect();
    let again = headers::decode(&borrow(&owned), pos);
    assert_eq!(again.headers, decoded.headers, "decode(encode(h)) != h");
    assert!(again.issues.is_empty(), "{:?}", again.issues);
    assert_eq!(again.headers.encode(), encoded, "encoding is not stable");

    // The encoded headers name the event: the position no longer matters.
    let elsewhere = RecordPosition {
        topic: "elsewhere",
        partition: pos.partition.wrapping_add(1),
        offset: pos.offset.wrapping_add(1),
    };
    assert_eq!(
        headers::decode(&borrow(&owned), elsewhere).headers,
        decoded.headers
    );
}
