//! Receipts (DESIGN §5): one record on `kausal.receipts` per handled message,
//! published by the runtime, so that lineage knows which group received what
//! and what became of it.

use kausal_core::CorrelationId;
use kausal_core::headers::{CONTENT_TYPE_JSON, EventHeaders};
use serde::{Deserialize, Serialize};

use crate::event::{IncomingEvent, OutgoingEvent};
use crate::ids;
use crate::runtime::Outcome;

/// The topic receipts go to.
pub const RECEIPTS_TOPIC: &str = "kausal.receipts";
/// `event-type` of a receipt record.
pub const RECEIPT_EVENT_TYPE: &str = "Receipt";
pub const RECEIPT_VERSION: u32 = 1;

/// The JSON value of a receipt record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiptRecord {
    pub receipt_id: String,
    pub event_id: String,
    pub correlation_id: String,
    pub event_type: Option<String>,
    pub consumer_group: String,
    pub service: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// `processed`, `dead_lettered` or `duplicate_skipped`.
    pub outcome: String,
    pub attempts: u32,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub duration_ms: f64,
    pub trace_id: String,
    pub span_id: String,
    /// RFC 3339 UTC, milliseconds.
    pub handled_at: String,
    pub handled_at_ms: i64,
}

impl ReceiptRecord {
    pub fn new(
        event: &IncomingEvent,
        outcome: &Outcome,
        group: &str,
        service: &str,
        duration_ms: f64,
    ) -> Self {
        let (attempts, error_type, error_message) = match outcome {
            Outcome::Processed { attempts } => (*attempts, None, None),
            Outcome::DeadLettered {
                attempts,
                error_type,
                error_message,
            } => (
                *attempts,
                Some(error_type.clone()),
                Some(error_message.clone()),
            ),
            Outcome::DuplicateSkipped => (0, None, None),
        };
        Self {
            receipt_id: ids::new_event_id().to_string(),
            event_id: event.event_id().to_string(),
            correlation_id: event.correlation_id().to_string(),
            event_type: event.event_type().map(str::to_owned),
            consumer_group: group.to_owned(),
            service: service.to_owned(),
            topic: event.topic.clone(),
            partition: event.partition,
            offset: event.offset,
            outcome: outcome.label().to_owned(),
            attempts,
            error_type,
            error_message,
            duration_ms,
            trace_id: event.trace.trace_id.to_string(),
            span_id: event.trace.parent_id.to_string(),
            handled_at: ids::now_rfc3339(),
            handled_at_ms: ids::now_ms(),
        }
    }

    /// The record to publish: keyed by the handled event's id, in the
    /// handled event's correlation and trace.
    pub fn to_event(&self, event: &IncomingEvent) -> Result<OutgoingEvent, serde_json::Error> {
        let receipt_id = self
            .receipt_id
            .parse()
            .unwrap_or_else(|_| ids::new_event_id());
        Ok(OutgoingEvent {
            topic: RECEIPTS_TOPIC.to_owned(),
            key: Some(self.event_id.as_bytes().to_vec()),
            payload: serde_json::to_vec(self)?,
            headers: EventHeaders {
                event_id: receipt_id,
                event_type: Some(RECEIPT_EVENT_TYPE.to_owned()),
                event_version: Some(RECEIPT_VERSION),
                correlation_id: event.correlation_id().clone(),
                causation_id: Some(event.event_id()),
                source_service: Some(self.service.clone()),
                content_type: Some(CONTENT_TYPE_JSON.to_owned()),
                traceparent: Some(event.trace),
                tracestate: None,
                baggage: None,
            },
            extra_headers: Vec::new(),
            parent_span: None,
        })
    }

    pub fn correlation(&self) -> Option<CorrelationId> {
        self.correlation_id.parse().ok()
    }
}
