//! One consumed record → the rows it becomes. No I/O.

use base64::Engine;
use kausal_core::EventId;
use kausal_core::dlq::{self, DeadLetterOrigin};
use kausal_core::headers::{self, RawHeader, RecordPosition};
use kausal_kafka::heartbeat::HEARTBEATS_TOPIC;
use kausal_kafka::receipt::{RECEIPTS_TOPIC, ReceiptRecord};
use kausal_store::{DeadLetterEntry, LineageEvent, Receipt};

/// A consumed record, owned.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// What a record becomes.
#[derive(Debug, Clone, PartialEq)]
pub enum Row {
    Event(LineageEvent),
    Receipt(Receipt),
    DeadLetter(DeadLetterEntry),
    /// Not recordable (a receipt whose JSON is broken); logged and counted,
    /// never blocks the recorder.
    Skipped {
        reason: String,
    },
    /// Not lineage at all (consumer heartbeats): read and passed over.
    Ignored,
}

impl Record {
    fn raw(&self) -> Vec<RawHeader<'_>> {
        self.headers
            .iter()
            .map(|(name, value)| RawHeader {
                name,
                value: value.as_deref(),
            })
            .collect()
    }

    fn position(&self) -> RecordPosition<'_> {
        RecordPosition {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
        }
    }
}

/// Suffixes of the dead-letter topics the recorder keeps in the ledger:
/// Kausal's own `<topic>.dlq`, and Spring Kafka's
/// `DeadLetterPublishingRecoverer` defaults, `<topic>-dlt` (Spring Kafka
/// 3.3 and later, and `@RetryableTopic`) and `<topic>.DLT` (earlier
/// versions), so that a mixed Spring and Kausal estate has one ledger.
pub const DEAD_LETTER_SUFFIXES: [&str; 3] = [dlq::DLQ_SUFFIX, "-dlt", ".DLT"];

/// The topic a dead-letter topic is named after (`orders` for
/// `orders.dlq`, `orders-dlt` and `orders.DLT`), or `None` when `topic` is
/// not a dead-letter topic. The record's own headers name its original
/// topic more reliably; this is the fallback when they do not.
pub fn dead_letter_source(topic: &str) -> Option<&str> {
    DEAD_LETTER_SUFFIXES
        .iter()
        .find_map(|suffix| topic.strip_suffix(suffix))
        .filter(|source| !source.is_empty())
}

/// Maps a record to its row. `now_ms` is the recording time.
pub fn classify(record: &Record, now_ms: i64) -> Row {
    if record.topic == HEARTBEATS_TOPIC {
        return Row::Ignored;
    }
    if record.topic == RECEIPTS_TOPIC {
        return receipt_row(record);
    }
    if let Some(source) = dead_letter_source(&record.topic) {
        return dead_letter_row(record, source, now_ms);
    }
    Row::Event(event_row(record, now_ms))
}

fn event_row(record: &Record, now_ms: i64) -> LineageEvent {
    let decoded = headers::decode(&record.raw(), record.position());
    let h = decoded.headers;
    LineageEvent {
        event_id: h.event_id.to_string(),
        event_type: h.event_type,
        event_version: h.event_version.map(i64::from),
        correlation_id: h.correlation_id.to_string(),
        causation_id: h.causation_id.map(|c| c.to_string()),
        source_service: h.source_service,
        topic: record.topic.clone(),
        partition: record.partition,
        offset: record.offset,
        key: record
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        trace_id: h.traceparent.map(|t| t.trace_id.to_string()),
        span_id: h.traceparent.map(|t| t.parent_id.to_string()),
        occurred_at_ms: record.timestamp_ms.unwrap_or(now_ms),
        recorded_at_ms: now_ms,
    }
}

fn receipt_row(record: &Record) -> Row {
    let Some(value) = record.value.as_deref() else {
        return Row::Skipped {
            reason: "receipt without a value".into(),
        };
    };
    match serde_json::from_slice::<ReceiptRecord>(value) {
        Ok(r) => Row::Receipt(Receipt {
            receipt_id: r.receipt_id,
            event_id: r.event_id,
            consumer_group: r.consumer_group,
            service: r.service,
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            outcome: r.outcome,
            attempts: i64::from(r.attempts),
            error_type: r.error_type,
            error_message: r.error_message,
            duration_ms: r.duration_ms,
            trace_id: Some(r.trace_id),
            span_id: Some(r.span_id),
            handled_at_ms: r.handled_at_ms,
            correlation_id: Some(r.correlation_id),
        }),
        Err(e) => Row::Skipped {
            reason: format!("receipt is not valid JSON: {e}"),
        },
    }
}

fn dead_letter_row(record: &Record, named_after: &str, now_ms: i64) -> Row {
    let raw = record.raw();
    let origin = DeadLetterOrigin::from_headers(&raw)
        .ok()
        .map(|o| spring_cause(o, &raw));
    let source_topic = origin
        .as_ref()
        .map(|o| o.topic.clone())
        .unwrap_or_else(|| named_after.to_owned());
    // The original event's id: its header, or the deterministic id of its
    // original position (what the consumer called it), or of this record.
    let has_event_id = raw
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case(headers::EVENT_ID));
    let position = match (&origin, has_event_id) {
        (
            Some(DeadLetterOrigin {
                partition: Some(p),
                offset: Some(o),
                ..
            }),
            false,
        ) => RecordPosition {
            topic: &source_topic,
            partition: *p,
            offset: *o,
        },
        _ => record.position(),
    };
    let decoded = headers::decode(&raw, position);
    let failed_at_ms = origin
        .as_ref()
        .and_then(|o| o.failed_at.as_deref())
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
        .or(record.timestamp_ms)
        .unwrap_or(now_ms);
    let b64 = base64::engine::general_purpose::STANDARD;
    let headers_json = serde_json::Value::Array(
        record
            .headers
            .iter()
            .map(|(k, v)| serde_json::json!([k, v.as_deref().map(|v| b64.encode(v))]))
            .collect(),
    )
    .to_string();
    Row::DeadLetter(DeadLetterEntry {
        dlq_id: EventId::for_record(&record.topic, record.partition, record.offset).to_string(),
        dlq_topic: record.topic.clone(),
        dlq_partition: record.partition,
        dlq_offset: record.offset,
        event_id: decoded.headers.event_id.to_string(),
        correlation_id: Some(decoded.headers.correlation_id.to_string()),
        event_type: decoded.headers.event_type,
        source_topic,
        source_partition: origin.as_ref().and_then(|o| o.partition),
        source_offset: origin.as_ref().and_then(|o| o.offset),
        source_timestamp_ms: origin.as_ref().and_then(|o| o.timestamp_ms),
        consumer_group: origin.as_ref().and_then(|o| o.consumer_group.clone()),
        service: origin.as_ref().and_then(|o| o.service.clone()),
        error_type: origin.as_ref().and_then(|o| o.error_type.clone()),
        error_message: origin.as_ref().and_then(|o| o.error_message.clone()),
        attempts: origin.as_ref().and_then(|o| o.attempts).map(i64::from),
        failed_at_ms,
        key: record.key.clone(),
        payload: record.value.clone(),
        headers_json,
        status: "pending".to_owned(),
        status_changed_at_ms: None,
        status_by: None,
        status_reason: None,
        replay_count: 0,
    })
}

/// Spring Kafka's listener container wraps whatever a listener threw in
/// this exception before dead-lettering, so `kafka_dlt-exception-fqcn`
/// names the wrapper for almost every dead letter and its message says only
/// which listener method threw.
const SPRING_LISTENER_FAILED: &str =
    "org.springframework.kafka.listener.ListenerExecutionFailedException";
/// The class of the wrapped exception (Spring Kafka 2.8 and later).
const SPRING_EXCEPTION_CAUSE_FQCN: &str = "kafka_dlt-exception-cause-fqcn";
/// The wrapper's stack trace, with a `Caused by: <class>: <message>` line.
const SPRING_EXCEPTION_STACKTRACE: &str = "kafka_dlt-exception-stacktrace";

/// For a Spring dead letter whose error is Spring's listener wrapper, the
/// ledger's error type and message are the listener's own exception's
/// (what an engineer groups and searches by): its class from
/// `kafka_dlt-exception-cause-fqcn`, its message from the `Caused by:` line
/// of the stack trace when there is one. Anything else is kept as read.
fn spring_cause(mut origin: DeadLetterOrigin, raw: &[RawHeader<'_>]) -> DeadLetterOrigin {
    if origin.dialect != dlq::Dialect::Spring
        || origin.error_type.as_deref() != Some(SPRING_LISTENER_FAILED)
    {
        return origin;
    }
    let Some(cause) = last_text(raw, SPRING_EXCEPTION_CAUSE_FQCN) else {
        return origin;
    };
    if let Some(message) = last_text(raw, SPRING_EXCEPTION_STACKTRACE)
        .and_then(|trace| caused_by_message(&trace, &cause))
    {
        origin.error_message = Some(message);
    }
    origin.error_type = Some(cause);
    origin
}

/// The last non-empty UTF-8 value of header `name`.
fn last_text(raw: &[RawHeader<'_>], name: &str) -> Option<String> {
    raw.iter()
        .rev()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The message of the first `Caused by: <class>: <message>` line of a Java
/// stack trace naming `class`.
fn caused_by_message(trace: &str, class: &str) -> Option<String> {
    trace.lines().find_map(|line| {
        line.trim()
            .strip_prefix("Caused by: ")?
            .strip_prefix(class)?
            .strip_prefix(": ")
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_topics_are_named_after_their_source() {
        for (topic, source) in [
            ("orders.dlq", Some("orders")),
            ("orders-dlt", Some("orders")),
            ("orders.DLT", Some("orders")),
            ("payments.v2-dlt", Some("payments.v2")),
            ("orders", None),
            ("orders.dlt", None),
            ("orders-DLT", None),
            ("orders-retry-0", None),
            (".dlq", None),
            ("-dlt", None),
        ] {
            assert_eq!(dead_letter_source(topic), source, "{topic}");
        }
    }

    fn record(topic: &str, headers: Vec<(&str, &[u8])>) -> Record {
        Record {
            topic: topic.to_owned(),
            partition: 1,
            offset: 7,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(b"ord-1".to_vec()),
            value: Some(b"{}".to_vec()),
            headers: headers
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Some(v.to_vec())))
                .collect(),
        }
    }

    fn dead_letter(row: Row) -> DeadLetterEntry {
        match row {
            Row::DeadLetter(d) => d,
            other => panic!("wanted a dead letter, got {other:?}"),
        }
    }

    #[test]
    fn a_spring_dead_letter_names_the_listener_s_own_exception() {
        let partition = 2i32.to_be_bytes();
        let offset = 41i64.to_be_bytes();
        let trace = "org.springframework.kafka.listener.ListenerExecutionFailedException: \
                     Listener method 'public void com.acme.Orders.on(java.lang.String)' threw exception\n\
                     \tat org.springframework.kafka.listener.KafkaMessageListenerContainer.x(K.java:1)\n\
                     Caused by: java.lang.IllegalStateException: stock service unavailable\n\
                     \tat com.acme.Orders.on(Orders.java:12)\n";
        let row = classify(
            &record(
                "orders-dlt",
                vec![
                    ("kafka_dlt-original-topic", b"orders"),
                    ("kafka_dlt-original-partition", &partition),
                    ("kafka_dlt-original-offset", &offset),
                    ("kafka_dlt-original-consumer-group", b"stock-service"),
                    ("kafka_dlt-exception-fqcn", SPRING_LISTENER_FAILED.as_bytes()),
                    (
                        "kafka_dlt-exception-cause-fqcn",
                        b"java.lang.IllegalStateException",
                    ),
                    (
                        "kafka_dlt-exception-message",
                        b"Listener method 'public void com.acme.Orders.on(java.lang.String)' threw exception",
                    ),
                    ("kafka_dlt-exception-stacktrace", trace.as_bytes()),
                ],
            ),
            5,
        );
        let d = dead_letter(row);
        assert_eq!(d.dlq_topic, "orders-dlt");
        assert_eq!(d.source_topic, "orders");
        assert_eq!((d.source_partition, d.source_offset), (Some(2), Some(41)));
        assert_eq!(d.consumer_group.as_deref(), Some("stock-service"));
        assert_eq!(
            d.error_type.as_deref(),
            Some("java.lang.IllegalStateException")
        );
        assert_eq!(
            d.error_message.as_deref(),
            Some("stock service unavailable")
        );
        // No event-id header: the id the recorder gave the original record.
        assert_eq!(d.event_id, EventId::for_record("orders", 2, 41).to_string());
        assert_eq!(d.failed_at_ms, 1_700_000_000_000, "the DLT record's time");
        assert_eq!(d.status, "pending");
    }

    #[test]
    fn an_unwrapped_spring_exception_and_a_bare_dlt_record_are_kept_as_read() {
        let d = dead_letter(classify(
            &record(
                "payments.DLT",
                vec![
                    ("kafka_dlt-original-topic", b"payments"),
                    (
                        "kafka_dlt-exception-fqcn",
                        b"org.springframework.kafka.support.serializer.DeserializationException",
                    ),
                    ("kafka_dlt-exception-message", b"failed to deserialize"),
                ],
            ),
            5,
        ));
        assert_eq!(d.source_topic, "payments");
        assert_eq!(
            d.error_type.as_deref(),
            Some("org.springframework.kafka.support.serializer.DeserializationException")
        );
        assert_eq!(d.error_message.as_deref(), Some("failed to deserialize"));

        // No dead-letter headers at all: the topic's name says where from.
        let bare = dead_letter(classify(&record("shipments.DLT", vec![]), 5));
        assert_eq!(bare.source_topic, "shipments");
        assert_eq!(bare.error_type, None);
    }

    #[test]
    fn a_topic_that_only_looks_similar_is_an_event() {
        assert!(matches!(
            classify(&record("orders.dlt", vec![]), 5),
            Row::Event(_)
        ));
    }
}
