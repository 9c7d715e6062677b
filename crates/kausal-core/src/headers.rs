//! The Kafka header contract (DESIGN §4).
//!
//! The record value is the business payload; infrastructure metadata travels
//! in headers so that tools can read it without decoding the payload.
//! [`decode`] never fails: whatever is missing or malformed is repaired the
//! way the contract says (deterministic event id, adopted correlation id, new
//! trace) and reported as a [`HeaderIssue`] so the runtime can log, count or
//! reject it by policy.

use crate::ids::{CorrelationId, EventId};
use crate::trace::{TraceParent, TraceParentError};

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
pub const BAGGAGE: &str = "baggage";
pub const EVENT_ID: &str = "event-id";
pub const EVENT_TYPE: &str = "event-type";
pub const EVENT_VERSION: &str = "event-version";
pub const CORRELATION_ID: &str = "correlation-id";
pub const CAUSATION_ID: &str = "causation-id";
pub const SOURCE_SERVICE: &str = "source-service";
pub const CONTENT_TYPE: &str = "content-type";
/// How many times a dead-lettered event has been replayed (DESIGN §7).
pub const REPLAY_COUNT: &str = "replay-count";

pub const CONTENT_TYPE_JSON: &str = "application/json";

/// One Kafka header as it arrived: a name and an optional (null) value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawHeader<'a> {
    pub name: &'a str,
    pub value: Option<&'a [u8]>,
}

/// Where a record sits in Kafka; names records that carry no event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
}

/// The Kausal headers of one event, after repair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventHeaders {
    pub event_id: EventId,
    pub event_type: Option<String>,
    pub event_version: Option<u32>,
    pub correlation_id: CorrelationId,
    pub causation_id: Option<EventId>,
    pub source_service: Option<String>,
    pub content_type: Option<String>,
    pub traceparent: Option<TraceParent>,
    pub tracestate: Option<String>,
    pub baggage: Option<String>,
}

/// Something that was wrong with the headers of a record and how it was
/// repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderIssue {
    /// No `event-id`: the deterministic id of the record was used.
    EventIdMissing,
    /// `event-id` is not a UUID: the deterministic id of the record was used.
    EventIdInvalid { value: String },
    /// No `correlation-id`: the event's own id was adopted.
    CorrelationIdMissing,
    /// `correlation-id` is unusable: the event's own id was adopted.
    CorrelationIdInvalid { reason: String },
    /// `causation-id` is not a UUID: dropped.
    CausationIdInvalid { value: String },
    /// `event-version` is not a non-negative integer: dropped.
    EventVersionInvalid { value: String },
    /// A Kausal header's value is not UTF-8 (or is null): treated as absent.
    NotUtf8 { header: &'static str },
    /// A Kausal header appears more than once: the last one wins, as in
    /// Kafka's `Headers.lastHeader`, except `traceparent` (see below).
    Duplicate { header: &'static str },
    /// `traceparent` unusable: a new trace starts.
    TraceParentInvalid(TraceParentError),
}

impl HeaderIssue {
    /// A stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::EventIdMissing => "event_id_missing",
            Self::EventIdInvalid { .. } => "event_id_invalid",
            Self::CorrelationIdMissing => "correlation_id_missing",
            Self::CorrelationIdInvalid { .. } => "correlation_id_invalid",
            Self::CausationIdInvalid { .. } => "causation_id_invalid",
            Self::EventVersionInvalid { .. } => "event_version_invalid",
            Self::NotUtf8 { .. } => "header_not_utf8",
            Self::Duplicate { .. } => "header_duplicate",
            Self::TraceParentInvalid(_) => "traceparent_invalid",
        }
    }

    /// True when the event had to adopt a correlation id.
    pub fn is_correlation_adopted(&self) -> bool {
        matches!(
            self,
            Self::CorrelationIdMissing | Self::CorrelationIdInvalid { .. }
        )
    }
}

impl std::fmt::Display for HeaderIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EventIdMissing => {
                write!(f, "no event-id header; derived from topic/partition/offset")
            }
            Self::EventIdInvalid { value } => write!(
                f,
                "event-id {value:?} is not a UUID; derived from topic/partition/offset"
            ),
            Self::CorrelationIdMissing => {
                write!(f, "no correlation-id header; adopted the event id")
            }
            Self::CorrelationIdInvalid { reason } => write!(
                f,
                "correlation-id unusable ({reason}); adopted the event id"
            ),
            Self::CausationIdInvalid { value } => {
                write!(f, "causation-id {value:?} is not a UUID; ignored")
            }
            Self::EventVersionInvalid { value } => {
                write!(f, "event-version {value:?} is not an integer; ignored")
            }
            Self::NotUtf8 { header } => write!(f, "header {header} is not UTF-8; ignored"),
            Self::Duplicate { header } => write!(f, "header {header} appears more than once"),
            Self::TraceParentInvalid(e) => write!(f, "{e}; starting a new trace"),
        }
    }
}

/// Decoded headers plus everything that had to be repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedHeaders {
    pub headers: EventHeaders,
    pub issues: Vec<HeaderIssue>,
}

impl DecodedHeaders {
    pub fn correlation_adopted(&self) -> bool {
        self.issues.iter().any(HeaderIssue::is_correlation_adopted)
    }
}

/// The headers [`decode`] reads: the contract of DESIGN §4 (`replay-count`
/// is the ledger's, passed through untouched).
pub const KNOWN: [&str; 10] = [
    TRACEPARENT,
    TRACESTATE,
    BAGGAGE,
    EVENT_ID,
    EVENT_TYPE,
    EVENT_VERSION,
    CORRELATION_ID,
    CAUSATION_ID,
    SOURCE_SERVICE,
    CONTENT_TYPE,
];

/// Reads the Kausal headers of a record, repairing what is missing.
pub fn decode(raw: &[RawHeader<'_>], position: RecordPosition<'_>) -> DecodedHeaders {
    let mut issues = Vec::new();
    // Last value of each known header, and how often it appeared.
    let mut values: [Option<Option<&[u8]>>; KNOWN.len()] = [None; KNOWN.len()];
    let mut counts = [0usize; KNOWN.len()];
    for header in raw {
        if let Some(i) = KNOWN
            .iter()
            .position(|k| k.eq_ignore_ascii_case(header.name))
        {
            values[i] = Some(header.value);
            counts[i] += 1;
        }
    }
    for (i, count) in counts.iter().enumerate() {
        if *count > 1 {
            issues.push(HeaderIssue::Duplicate { header: KNOWN[i] });
        }
    }
    let mut text = |name: &'static str| -> Option<String> {
        let i = KNOWN.iter().position(|k| *k == name)?;
        let value = values[i]?;
        match value.map(std::str::from_utf8) {
            Some(Ok(s)) => Some(s.to_owned()),
            Some(Err(_)) | None => {
                issues.push(HeaderIssue::NotUtf8 { header: name });
                None
            }
        }
    };

    let event_id_text = text(EVENT_ID);
    let event_type = text(EVENT_TYPE).filter(|s| !s.is_empty());
    let version_text = text(EVENT_VERSION);
    let correlation_text = text(CORRELATION_ID);
    let causation_text = text(CAUSATION_ID);
    let source_service = text(SOURCE_SERVICE).filter(|s| !s.is_empty());
    let content_type = text(CONTENT_TYPE).filter(|s| !s.is_empty());
    let tracestate = text(TRACESTATE).filter(|s| !s.is_empty());
    let baggage = text(BAGGAGE).filter(|s| !s.is_empty());

    let derived = || EventId::for_record(position.topic, position.partition, position.offset);
    let event_id = match event_id_text {
        None => {
            issues.push(HeaderIssue::EventIdMissing);
            derived()
        }
        Some(value) => value.parse().unwrap_or_else(|_| {
            issues.push(HeaderIssue::EventIdInvalid { value });
            derived()
        }),
    };

    let correlation_id = match correlation_text {
        None => {
            issues.push(HeaderIssue::CorrelationIdMissing);
            CorrelationId::adopt(event_id)
        }
        Some(value) => value.parse().unwrap_or_else(|e: crate::IdError| {
            issues.push(HeaderIssue::CorrelationIdInvalid {
                reason: e.to_string(),
            });
            CorrelationId::adopt(event_id)
        }),
    };

    let causation_id = causation_text.and_then(|value| match value.parse() {
        Ok(id) => Some(id),
        Err(_) => {
            issues.push(HeaderIssue::CausationIdInvalid { value });
            None
        }
    });

    let event_version = version_text.and_then(|value| match value.trim().parse::<u32>() {
        Ok(v) => Some(v),
        Err(_) => {
            issues.push(HeaderIssue::EventVersionInvalid { value });
            None
        }
    });

    // W3C: several traceparent headers make the context invalid, since we
    // cannot know which one the sender meant.
    let traceparent_index = KNOWN.iter().position(|k| *k == TRACEPARENT).unwrap_or(0);
    let traceparent = match values[traceparent_index] {
        None => None,
        Some(_) if counts[traceparent_index] > 1 => {
            issues.push(HeaderIssue::TraceParentInvalid(
                TraceParentError::WrongShape,
            ));
            None
        }
        Some(None) => {
            issues.push(HeaderIssue::TraceParentInvalid(TraceParentError::NotUtf8));
            None
        }
        Some(Some(bytes)) => match TraceParent::parse_bytes(bytes) {
            Ok(tp) => Some(tp),
            Err(e) => {
                issues.push(HeaderIssue::TraceParentInvalid(e));
                None
            }
        },
    };
    // A tracestate without a valid traceparent must be dropped (W3C).
    let tracestate = tracestate.filter(|_| traceparent.is_some());

    DecodedHeaders {
        headers: EventHeaders {
            event_id,
            event_type,
            event_version,
            correlation_id,
            causation_id,
            source_service,
            content_type,
            traceparent,
            tracestate,
            baggage,
        },
        issues,
    }
}

impl EventHeaders {
    /// The headers to put on the record, in a stable order.
    pub fn encode(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(10);
        if let Some(tp) = &self.traceparent {
            out.push((TRACEPARENT, tp.to_string()));
        }
        if let Some(ts) = &self.tracestate {
            out.push((TRACESTATE, ts.clone()));
        }
        if let Some(b) = &self.baggage {
            out.push((BAGGAGE, b.clone()));
        }
        out.push((EVENT_ID, self.event_id.to_string()));
        if let Some(t) = &self.event_type {
            out.push((EVENT_TYPE, t.clone()));
        }
        if let Some(v) = self.event_version {
            out.push((EVENT_VERSION, v.to_string()));
        }
        out.push((CORRELATION_ID, self.correlation_id.to_string()));
        if let Some(c) = &self.causation_id {
            out.push((CAUSATION_ID, c.to_string()));
        }
        if let Some(s) = &self.source_service {
            out.push((SOURCE_SERVICE, s.clone()));
        }
        if let Some(c) = &self.content_type {
            out.push((CONTENT_TYPE, c.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SpanId, TraceId};

    const POS: RecordPosition<'static> = RecordPosition {
        topic: "orders",
        partition: 2,
        offset: 17,
    };

    fn h<'a>(name: &'a str, value: &'a [u8]) -> RawHeader<'a> {
        RawHeader {
            name,
            value: Some(value),
        }
    }

    fn full() -> EventHeaders {
        EventHeaders {
            event_id: EventId::from_parts(1_700_000_000_000, [1; 10]),
            event_type: Some("OrderPlaced".into()),
            event_version: Some(1),
            correlation_id: "ord-789".parse().expect("valid"),
            causation_id: Some(EventId::from_parts(1_699_999_999_999, [2; 10])),
            source_service: Some("order-service".into()),
            content_type: Some(CONTENT_TYPE_JSON.into()),
            traceparent: Some(TraceParent::new(
                TraceId::from_bytes([9; 16]).expect("non-zero"),
                SpanId::from_bytes([8; 8]).expect("non-zero"),
                true,
            )),
            tracestate: Some("vendor=1".into()),
            baggage: Some("tenant=a".into()),
        }
    }

    #[test]
    fn encode_then_decode_is_identity() {
        let headers = full();
        let encoded = headers.encode();
        let raw: Vec<_> = encoded.iter().map(|(n, v)| h(n, v.as_bytes())).collect();
        let decoded = decode(&raw, POS);
        assert_eq!(decoded.headers, headers);
        assert!(decoded.issues.is_empty(), "{:?}", decoded.issues);
    }

    #[test]
    fn plain_client_record_gets_deterministic_id_and_adopted_correlation() {
        let decoded = decode(&[], POS);
        let expected = EventId::for_record("orders", 2, 17);
        assert_eq!(decoded.headers.event_id, expected);
        assert_eq!(
            decoded.headers.correlation_id.as_str(),
            expected.to_string()
        );
        assert_eq!(
            decoded.issues,
            vec![
                HeaderIssue::EventIdMissing,
                HeaderIssue::CorrelationIdMissing
            ]
        );
        assert!(decoded.correlation_adopted());
        assert_eq!(decoded.headers.traceparent, None);
    }

    #[test]
    fn table_of_malformed_headers() {
        let id = "0190f5a2-0000-7000-8000-000000000001";
        type Check = fn(&DecodedHeaders) -> bool;
        let cases: Vec<(&str, Vec<RawHeader<'_>>, Vec<&str>, Check)> = vec![
            (
                "non-UTF-8 correlation id is adopted",
                vec![h(EVENT_ID, id.as_bytes()), h(CORRELATION_ID, &[0xff, 0xfe])],
                vec!["header_not_utf8", "correlation_id_missing"],
                |d| d.headers.correlation_id.as_str() == "0190f5a2-0000-7000-8000-000000000001",
            ),
            (
                "broken traceparent starts a new trace",
                vec![
                    h(EVENT_ID, id.as_bytes()),
                    h(CORRELATION_ID, b"c"),
                    h(TRACEPARENT, b"00-zz"),
                    h(TRACESTATE, b"a=b"),
                ],
                vec!["traceparent_invalid"],
                |d| d.headers.traceparent.is_none() && d.headers.tracestate.is_none(),
            ),
            (
                "null traceparent",
                vec![
                    h(EVENT_ID, id.as_bytes()),
                    h(CORRELATION_ID, b"c"),
                    RawHeader {
                        name: TRACEPARENT,
                        value: None,
                    },
                ],
                vec!["traceparent_invalid"],
                |d| d.headers.traceparent.is_none(),
            ),
            (
                "two traceparents are ambiguous",
                vec![
                    h(EVENT_ID, id.as_bytes()),
                    h(CORRELATION_ID, b"c"),
                    h(
                        TRACEPARENT,
                        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                    ),
                    h(
                        TRACEPARENT,
                        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b8-01",
                    ),
                ],
                vec!["header_duplicate", "traceparent_invalid"],
                |d| d.headers.traceparent.is_none(),
            ),
            (
                "duplicate correlation id: last wins",
                vec![
                    h(EVENT_ID, id.as_bytes()),
                    h(CORRELATION_ID, b"first"),
                    h(CORRELATION_ID, b"second"),
                ],
                vec!["header_duplicate"],
                |d| d.headers.correlation_id.as_str() == "second",
            ),
            (
                "event id not a UUID",
                vec![h(EVENT_ID, b"42"), h(CORRELATION_ID, b"c")],
                vec!["event_id_invalid"],
                |d| d.headers.event_id == EventId::for_record("orders", 2, 17),
            ),
            (
                "bad version and causation are dropped",
                vec![
                    h(EVENT_ID, id.as_bytes()),
                    h(CORRELATION_ID, b"c"),
                    h(EVENT_VERSION, b"v2"),
                    h(CAUSATION_ID, b"nope"),
                ],
                vec!["causation_id_invalid", "event_version_invalid"],
                |d| d.headers.event_version.is_none() && d.headers.causation_id.is_none(),
            ),
            (
                "header names are case-insensitive",
                vec![h("Event-Id", id.as_bytes()), h("Correlation-ID", b"c")],
                vec![],
                |d| d.headers.correlation_id.as_str() == "c",
            ),
            (
                "unknown headers are ignored even if binary",
                vec![
                    h(EVENT_ID, id.as_bytes()),
                    h(CORRELATION_ID, b"c"),
                    h("x-binary", &[0, 159, 146, 150]),
                ],
                vec![],
                |d| d.headers.event_type.is_none(),
            ),
        ];
        for (name, raw, kinds, check) in cases {
            let decoded = decode(&raw, POS);
            let got: Vec<_> = decoded.issues.iter().map(HeaderIssue::kind).collect();
            assert_eq!(got, kinds, "{name}");
            assert!(check(&decoded), "{name}: {decoded:?}");
        }
    }
}
