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

/// Maps a record to its row. `now_ms` is the recording time.
pub fn classify(record: &Record, now_ms: i64) -> Row {
    if record.topic == HEARTBEATS_TOPIC {
        return Row::Ignored;
    }
    if record.topic == RECEIPTS_TOPIC {
        return receipt_row(record);
    }
    if dlq::is_dlq_topic(&record.topic) {
        return dead_letter_row(record, now_ms);
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

fn dead_letter_row(record: &Record, now_ms: i64) -> Row {
    let raw = record.raw();
    let origin = DeadLetterOrigin::from_headers(&raw).ok();
    let source_topic = origin
        .as_ref()
        .map(|o| o.topic.clone())
        .unwrap_or_else(|| record.topic.trim_end_matches(dlq::DLQ_SUFFIX).to_owned());
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
