//! Identifier newtypes. Parse, don't validate: a value of these types is
//! always well formed.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// Namespace for deterministic event ids of records that carry no `event-id`
/// header (produced by plain Kafka clients). Fixed forever: changing it
/// renames every such event in every lineage store.
const RECORD_NAMESPACE: Uuid = Uuid::from_u128(0x6b61_7573_616c_4e53_8000_0000_0000_0001);

/// Namespace of the ids of events emitted while handling another event
/// ([`EventId::derived`]). Fixed forever, like [`RECORD_NAMESPACE`].
const DERIVED_NAMESPACE: Uuid = Uuid::from_u128(0x6b61_7573_616c_4e53_8000_0000_0000_0002);

/// Longest correlation id we accept. Anything longer is almost certainly not
/// an id (a payload pasted into a header) and would bloat every index.
pub const MAX_CORRELATION_ID_LEN: usize = 256;

/// Why a header value is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("not a UUID: {0:?}")]
    NotAUuid(String),
    #[error("empty id")]
    Empty,
    #[error("id longer than {MAX_CORRELATION_ID_LEN} bytes")]
    TooLong,
    #[error("id contains a control character or whitespace")]
    BadCharacter,
}

/// The unique id of one event: a UUID, v7 (time-ordered) when Kausal made it,
/// v5 of `topic/partition/offset` when the producer did not send one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(Uuid);

impl EventId {
    /// A new time-ordered id from a timestamp (ms since the Unix epoch) and
    /// 10 random bytes supplied by the caller (core has no randomness).
    pub fn from_parts(unix_ms: u64, random: [u8; 10]) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        bytes[6..].copy_from_slice(&random);
        // Version 7 and RFC 4122 variant bits.
        bytes[6] = (bytes[6] & 0x0f) | 0x70;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Self(Uuid::from_bytes(bytes))
    }

    /// The deterministic id of a record that carries no `event-id`, so that
    /// the consumer, the lineage recorder and the console all name it alike.
    pub fn for_record(topic: &str, partition: i32, offset: i64) -> Self {
        let name = format!("{topic}/{partition}/{offset}");
        Self(Uuid::new_v5(&RECORD_NAMESPACE, name.as_bytes()))
    }

    /// The id of the `index`-th event of type `event_type` on `topic` that
    /// `service` emits while handling `cause`. It is the same on every
    /// attempt and after every redelivery, so an output published again
    /// after a crash (published, then killed before the commit) carries the
    /// id it had the first time and downstream idempotency guards skip it:
    /// a redelivery, not a second side effect. A handler that emits a
    /// different type on the second run gets a different id, so that
    /// inconsistency stays visible.
    ///
    /// Keeps the version-7 layout with the cause's millisecond prefix (when
    /// the cause has one), so children sort next to their cause.
    pub fn derived(
        cause: EventId,
        service: &str,
        topic: &str,
        event_type: &str,
        index: u32,
    ) -> Self {
        let name = format!("{cause}/{service}/{topic}/{event_type}/{index}");
        let hashed = Uuid::new_v5(&DERIVED_NAMESPACE, name.as_bytes()).into_bytes();
        let cause_bytes = cause.0.as_bytes();
        let prefix: [u8; 6] = if cause.0.get_version_num() == 7 {
            [
                cause_bytes[0],
                cause_bytes[1],
                cause_bytes[2],
                cause_bytes[3],
                cause_bytes[4],
                cause_bytes[5],
            ]
        } else {
            [
                hashed[0], hashed[1], hashed[2], hashed[3], hashed[4], hashed[5],
            ]
        };
        let mut ms = [0u8; 8];
        ms[2..].copy_from_slice(&prefix);
        let mut rest = [0u8; 10];
        rest.copy_from_slice(&hashed[6..]);
        Self::from_parts(u64::from_be_bytes(ms), rest)
    }

    pub fn from_uuid(uuid: Uuid) -> Self {
        Self(uuid)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for EventId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s.trim())
            .map(Self)
            .map_err(|_| IdError::NotAUuid(s.to_owned()))
    }
}

/// One business operation. Copied unchanged to every event it causes. Any
/// printable string without whitespace (HTTP callers send their own).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CorrelationId(String);

impl CorrelationId {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The correlation id adopted by an event that arrived without one: its
    /// own event id.
    pub fn adopt(event_id: EventId) -> Self {
        Self(event_id.to_string())
    }
}

impl FromStr for CorrelationId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(IdError::Empty);
        }
        if s.len() > MAX_CORRELATION_ID_LEN {
            return Err(IdError::TooLong);
        }
        if s.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(IdError::BadCharacter);
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `event-id` of the event whose handling produced this one.
pub type CausationId = EventId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v7_ids_are_time_ordered_and_versioned() {
        let a = EventId::from_parts(1_700_000_000_000, [0xff; 10]);
        let b = EventId::from_parts(1_700_000_000_001, [0x00; 10]);
        assert!(a < b);
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert_eq!(b.as_uuid().get_version_num(), 7);
        let (secs, _) = a
            .as_uuid()
            .get_timestamp()
            .map(|t| t.to_unix())
            .unwrap_or_default();
        assert_eq!(secs, 1_700_000_000);
    }

    #[test]
    fn record_ids_are_deterministic_and_distinct() {
        let cases = [
            ("orders", 0, 0),
            ("orders", 0, 1),
            ("orders", 1, 0),
            ("payments", 0, 0),
        ];
        let ids: Vec<_> = cases
            .iter()
            .map(|(t, p, o)| EventId::for_record(t, *p, *o))
            .collect();
        for (case, id) in cases.iter().zip(&ids) {
            assert_eq!(*id, EventId::for_record(case.0, case.1, case.2));
            assert_eq!(id.as_uuid().get_version_num(), 5);
        }
        let mut dedup = ids.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), ids.len());
        // Pinned so that a change of namespace or name format is noticed: it
        // would rename every plain-client event already recorded.
        assert_eq!(
            EventId::for_record("orders", 0, 42).to_string(),
            Uuid::new_v5(&RECORD_NAMESPACE, b"orders/0/42")
                .hyphenated()
                .to_string()
        );
    }

    #[test]
    fn correlation_id_parsing() {
        let cases: &[(&str, Result<(), IdError>)] = &[
            ("ord-789", Ok(())),
            ("0193b3c4-1111-7000-8000-000000000000", Ok(())),
            ("", Err(IdError::Empty)),
            ("has space", Err(IdError::BadCharacter)),
            ("tab\there", Err(IdError::BadCharacter)),
        ];
        for (input, expected) in cases {
            let got = input.parse::<CorrelationId>().map(|_| ());
            assert_eq!(&got, expected, "{input:?}");
        }
        let long = "x".repeat(MAX_CORRELATION_ID_LEN + 1);
        assert_eq!(long.parse::<CorrelationId>(), Err(IdError::TooLong));
    }

    #[test]
    fn event_id_parsing() {
        assert!("not-a-uuid".parse::<EventId>().is_err());
        let id = EventId::from_parts(1, [7; 10]);
        assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
    }

    #[test]
    fn derived_ids_are_stable_distinct_and_sort_with_their_cause() {
        let cause = EventId::from_parts(1_700_000_000_123, [7; 10]);
        let a = EventId::derived(cause, "payment-service", "payments", "PaymentProcessed", 0);
        assert_eq!(
            a,
            EventId::derived(cause, "payment-service", "payments", "PaymentProcessed", 0)
        );
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert_eq!(a.as_uuid().as_bytes()[..6], cause.as_uuid().as_bytes()[..6]);
        let others = [
            EventId::derived(cause, "payment-service", "payments", "PaymentProcessed", 1),
            EventId::derived(cause, "payment-service", "payments", "PaymentFailed", 0),
            EventId::derived(cause, "payment-service", "refunds", "PaymentProcessed", 0),
            EventId::derived(
                cause,
                "inventory-service",
                "payments",
                "PaymentProcessed",
                0,
            ),
            EventId::derived(
                EventId::from_parts(1_700_000_000_123, [8; 10]),
                "payment-service",
                "payments",
                "PaymentProcessed",
                0,
            ),
        ];
        for other in others {
            assert_ne!(a, other);
        }
        // A cause without a time prefix (a plain record's v5 id) still
        // yields a valid version-7 id.
        let plain = EventId::for_record("orders", 0, 1);
        let child = EventId::derived(plain, "payment-service", "payments", "PaymentProcessed", 0);
        assert_eq!(child.as_uuid().get_version_num(), 7);
        assert_ne!(
            child.as_uuid().as_bytes()[..6],
            plain.as_uuid().as_bytes()[..6]
        );
    }
}
