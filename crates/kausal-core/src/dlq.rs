//! The dead-letter header set (DESIGN §5).
//!
//! A dead-lettered record keeps its original key, value and headers; these
//! headers are added. [`DeadLetterOrigin::from_headers`] reads them back, and
//! also reads Spring Kafka's `kafka_dlt-*` headers so that records dead-lettered
//! by Spring services can be replayed by the same tool.

use crate::headers::RawHeader;

pub const ORIGINAL_TOPIC: &str = "dlq-original-topic";
pub const ORIGINAL_PARTITION: &str = "dlq-original-partition";
pub const ORIGINAL_OFFSET: &str = "dlq-original-offset";
pub const ORIGINAL_TIMESTAMP: &str = "dlq-original-timestamp";
pub const CONSUMER_GROUP: &str = "dlq-consumer-group";
pub const SERVICE: &str = "dlq-service";
pub const ERROR_TYPE: &str = "dlq-error-type";
pub const ERROR_MESSAGE: &str = "dlq-error-message";
pub const ATTEMPTS: &str = "dlq-attempts";
pub const FAILED_AT: &str = "dlq-failed-at";

/// Every header the runtime adds when dead-lettering, in order.
pub const ALL: [&str; 10] = [
    ORIGINAL_TOPIC,
    ORIGINAL_PARTITION,
    ORIGINAL_OFFSET,
    ORIGINAL_TIMESTAMP,
    CONSUMER_GROUP,
    SERVICE,
    ERROR_TYPE,
    ERROR_MESSAGE,
    ATTEMPTS,
    FAILED_AT,
];

/// Spring Kafka's dead-letter headers. Partition is a 4-byte and offset and
/// timestamp are 8-byte big-endian integers there, not text.
pub mod spring {
    pub const ORIGINAL_TOPIC: &str = "kafka_dlt-original-topic";
    pub const ORIGINAL_PARTITION: &str = "kafka_dlt-original-partition";
    pub const ORIGINAL_OFFSET: &str = "kafka_dlt-original-offset";
    pub const ORIGINAL_TIMESTAMP: &str = "kafka_dlt-original-timestamp";
    pub const ORIGINAL_CONSUMER_GROUP: &str = "kafka_dlt-original-consumer-group";
    pub const EXCEPTION_FQCN: &str = "kafka_dlt-exception-fqcn";
    pub const EXCEPTION_MESSAGE: &str = "kafka_dlt-exception-message";
}

/// Suffix of a dead-letter topic.
pub const DLQ_SUFFIX: &str = ".dlq";

/// Longest error message kept in a header: a stack trace pasted into an
/// error must not push the record over the broker's size limit.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4096;

/// The dead-letter topic of a topic.
pub fn dlq_topic(topic: &str) -> String {
    format!("{topic}{DLQ_SUFFIX}")
}

pub fn is_dlq_topic(topic: &str) -> bool {
    topic.ends_with(DLQ_SUFFIX)
}

/// What the runtime knows when it dead-letters a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub original_topic: String,
    pub original_partition: i32,
    pub original_offset: i64,
    /// Record timestamp, ms since the Unix epoch, when the broker gave one.
    pub original_timestamp_ms: Option<i64>,
    pub consumer_group: String,
    pub service: String,
    pub error_type: String,
    pub error_message: String,
    pub attempts: u32,
    /// RFC 3339 UTC with milliseconds.
    pub failed_at: String,
}

impl DeadLetter {
    /// The headers to append to the original ones.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        vec![
            (ORIGINAL_TOPIC, self.original_topic.clone()),
            (ORIGINAL_PARTITION, self.original_partition.to_string()),
            (ORIGINAL_OFFSET, self.original_offset.to_string()),
            (
                ORIGINAL_TIMESTAMP,
                self.original_timestamp_ms
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            ),
            (CONSUMER_GROUP, self.consumer_group.clone()),
            (SERVICE, self.service.clone()),
            (ERROR_TYPE, self.error_type.clone()),
            (
                ERROR_MESSAGE,
                truncate(&self.error_message, MAX_ERROR_MESSAGE_BYTES),
            ),
            (ATTEMPTS, self.attempts.to_string()),
            (FAILED_AT, self.failed_at.clone()),
        ]
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Where a dead-lettered record came from and why it failed, read back from
/// its headers (Kausal's or Spring's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterOrigin {
    pub topic: String,
    pub partition: Option<i32>,
    pub offset: Option<i64>,
    pub timestamp_ms: Option<i64>,
    pub consumer_group: Option<String>,
    pub service: Option<String>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub attempts: Option<u32>,
    pub failed_at: Option<String>,
    /// Which header dialect named the original topic.
    pub dialect: Dialect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Kausal,
    Spring,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlqHeaderError {
    #[error(
        "no {ORIGINAL_TOPIC} (or {}) header: cannot tell where to replay this record",
        spring::ORIGINAL_TOPIC
    )]
    NoOriginalTopic,
}

fn last<'a>(raw: &[RawHeader<'a>], name: &str) -> Option<&'a [u8]> {
    raw.iter()
        .rev()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
}

fn text(raw: &[RawHeader<'_>], name: &str) -> Option<String> {
    last(raw, name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn parsed<T: std::str::FromStr>(raw: &[RawHeader<'_>], name: &str) -> Option<T> {
    text(raw, name).and_then(|s| s.trim().parse().ok())
}

fn be_i32(raw: &[RawHeader<'_>], name: &str) -> Option<i32> {
    last(raw, name)
        .and_then(|v| <[u8; 4]>::try_from(v).ok())
        .map(i32::from_be_bytes)
}

fn be_i64(raw: &[RawHeader<'_>], name: &str) -> Option<i64> {
    last(raw, name)
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map(i64::from_be_bytes)
}

impl DeadLetterOrigin {
    pub fn from_headers(raw: &[RawHeader<'_>]) -> Result<Self, DlqHeaderError> {
        if let Some(topic) = text(raw, ORIGINAL_TOPIC) {
            return Ok(Self {
                topic,
                partition: parsed(raw, ORIGINAL_PARTITION),
                offset: parsed(raw, ORIGINAL_OFFSET),
                timestamp_ms: parsed(raw, ORIGINAL_TIMESTAMP),
                consumer_group: text(raw, CONSUMER_GROUP),
                service: text(raw, SERVICE),
                error_type: text(raw, ERROR_TYPE),
                error_message: text(raw, ERROR_MESSAGE),
                attempts: parsed(raw, ATTEMPTS),
                failed_at: text(raw, FAILED_AT),
                dialect: Dialect::Kausal,
            });
        }
        if let Some(topic) = text(raw, spring::ORIGINAL_TOPIC) {
            return Ok(Self {
                topic,
                partition: be_i32(raw, spring::ORIGINAL_PARTITION),
                offset: be_i64(raw, spring::ORIGINAL_OFFSET),
                timestamp_ms: be_i64(raw, spring::ORIGINAL_TIMESTAMP),
                consumer_group: text(raw, spring::ORIGINAL_CONSUMER_GROUP),
                service: None,
                error_type: text(raw, spring::EXCEPTION_FQCN),
                error_message: text(raw, spring::EXCEPTION_MESSAGE),
                attempts: None,
                failed_at: None,
                dialect: Dialect::Spring,
            });
        }
        Err(DlqHeaderError::NoOriginalTopic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> DeadLetter {
        DeadLetter {
            original_topic: "orders".into(),
            original_partition: 1,
            original_offset: 99,
            original_timestamp_ms: Some(1_700_000_000_123),
            consumer_group: "payment-service".into(),
            service: "payment-service".into(),
            error_type: "PaymentGatewayTimeout".into(),
            error_message: "gateway did not answer".into(),
            attempts: 3,
            failed_at: "2026-11-22T03:00:00.000Z".into(),
        }
    }

    #[test]
    fn writes_every_header_once() {
        let headers = sample().headers();
        let names: Vec<_> = headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ALL.to_vec());
    }

    #[test]
    fn kausal_headers_round_trip() {
        let headers = sample().headers();
        let raw: Vec<_> = headers
            .iter()
            .map(|(n, v)| RawHeader {
                name: n,
                value: Some(v.as_bytes()),
            })
            .collect();
        let origin = DeadLetterOrigin::from_headers(&raw).expect("has origin");
        assert_eq!(origin.topic, "orders");
        assert_eq!(origin.partition, Some(1));
        assert_eq!(origin.offset, Some(99));
        assert_eq!(origin.timestamp_ms, Some(1_700_000_000_123));
        assert_eq!(origin.error_type.as_deref(), Some("PaymentGatewayTimeout"));
        assert_eq!(origin.attempts, Some(3));
        assert_eq!(origin.dialect, Dialect::Kausal);
    }

    #[test]
    fn spring_headers_are_read_with_binary_integers() {
        let partition = 2i32.to_be_bytes();
        let offset = 12345i64.to_be_bytes();
        let ts = 1_700_000_000_000i64.to_be_bytes();
        let raw = [
            RawHeader {
                name: spring::ORIGINAL_TOPIC,
                value: Some(b"payments"),
            },
            RawHeader {
                name: spring::ORIGINAL_PARTITION,
                value: Some(&partition),
            },
            RawHeader {
                name: spring::ORIGINAL_OFFSET,
                value: Some(&offset),
            },
            RawHeader {
                name: spring::ORIGINAL_TIMESTAMP,
                value: Some(&ts),
            },
            RawHeader {
                name: spring::EXCEPTION_FQCN,
                value: Some(b"java.lang.IllegalStateException"),
            },
        ];
        let origin = DeadLetterOrigin::from_headers(&raw).expect("has origin");
        assert_eq!(origin.topic, "payments");
        assert_eq!(origin.partition, Some(2));
        assert_eq!(origin.offset, Some(12345));
        assert_eq!(origin.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(
            origin.error_type.as_deref(),
            Some("java.lang.IllegalStateException")
        );
        assert_eq!(origin.dialect, Dialect::Spring);
    }

    #[test]
    fn no_origin_is_a_clear_error() {
        let err = DeadLetterOrigin::from_headers(&[]).expect_err("no origin");
        assert!(err.to_string().contains("cannot tell where to replay"));
    }

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let mut dl = sample();
        dl.error_message = "é".repeat(MAX_ERROR_MESSAGE_BYTES);
        let headers = dl.headers();
        let msg = &headers
            .iter()
            .find(|(n, _)| *n == ERROR_MESSAGE)
            .expect("present")
            .1;
        assert!(msg.len() <= MAX_ERROR_MESSAGE_BYTES + '…'.len_utf8());
        assert!(msg.ends_with('…'));
    }

    #[test]
    fn topic_names() {
        assert_eq!(dlq_topic("orders"), "orders.dlq");
        assert!(is_dlq_topic("orders.dlq"));
        assert!(!is_dlq_topic("orders"));
    }
}
