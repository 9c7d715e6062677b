//! The relay's spans, built with Kausal's own ids by
//! `kausal_telemetry::spans` (as the event store's and the Kafka runtime's
//! spans are), each with a `tracing` span of the same name carrying the same
//! ids as log fields (`traceId`, `spanId`), so that a log line written while
//! publishing names the exported span.
//!
//! A batch is a `processOutbox` span of its own trace: the events in it
//! were appended by unrelated operations. Each event's `publishEvent` span
//! continues the trace that appended it (its parent is the stored
//! `traceparent`, the append's span) and links to the batch; the producer's
//! `send <topic>` span is its child, and the record's `traceparent` header
//! names that send span, so consumers continue the same trace.

use kausal_core::TraceParent;
use kausal_store::RecordedEvent;
use kausal_telemetry::ids;
use kausal_telemetry::spans::{self, KausalSpan, Kind, SpanStart};

use crate::names::{attr, span};

/// A running span: exported (when spans are enabled) and logged.
#[derive(Debug)]
pub(crate) struct Traced {
    own: TraceParent,
    otel: KausalSpan,
    log: tracing::Span,
}

impl Traced {
    /// The `processOutbox` span of a batch of `count` events: a new trace.
    pub(crate) fn batch(db_system: &'static str, count: usize) -> Self {
        let own = TraceParent::new(ids::new_trace_id(), ids::new_span_id(), true);
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        let (otel, own) = begin(
            SpanStart::new(span::PROCESS_OUTBOX, Kind::Internal, own)
                .attr(attr::EVENT_COUNT, count)
                .attr(attr::DB_SYSTEM, db_system),
            own,
        );
        let log = tracing::info_span!(
            span::PROCESS_OUTBOX,
            traceId = %own.trace_id,
            spanId = %own.parent_id,
            db.system = db_system,
            eventsource.event.count = count,
        );
        Self { own, otel, log }
    }

    /// The `publishEvent` span of `event` (going to `topic`): a child of
    /// the span that appended it, linked to `batch`. An event stored
    /// without a `traceparent` (appended around `kausal-eventsource`) has
    /// no trace to continue; its span is then the batch's child.
    pub(crate) fn publish(event: &RecordedEvent, topic: &str, batch: TraceParent) -> Self {
        let parent = event.traceparent.unwrap_or(batch);
        let own = parent.child(ids::new_span_id());
        let mut start = SpanStart::new(span::PUBLISH_EVENT, Kind::Internal, own)
            .parent(Some(parent))
            .attr(attr::MESSAGE_ID, event.event_id.to_string())
            .attr(attr::DESTINATION, topic.to_owned())
            .attr(attr::EVENT_TYPE, event.event_type.clone());
        if event.traceparent.is_some() {
            start = start.link(Some(batch));
        }
        let (otel, own) = begin(start, own);
        let log = tracing::info_span!(
            span::PUBLISH_EVENT,
            traceId = %own.trace_id,
            spanId = %own.parent_id,
            eventId = %event.event_id,
            correlationId = %event.correlation_id,
            eventType = %event.event_type,
        );
        Self { own, otel, log }
    }

    /// This span's own context: the parent of what runs inside it.
    pub(crate) fn context(&self) -> TraceParent {
        self.own
    }

    /// The log span, to run the span's work and log lines in.
    pub(crate) fn log_span(&self) -> &tracing::Span {
        &self.log
    }

    /// Marks the span failed (status ERROR, `error.type`, the exception).
    pub(crate) fn fail(&mut self, error_type: &str, message: &str) {
        self.otel.fail(error_type, message);
    }

    pub(crate) fn end(self) {
        self.otel.end();
    }
}

/// Starts `start` when spans are enabled; the returned context carries the
/// sampler's decision, which whoever continues it (the send span, the
/// consumers) follows.
fn begin(start: SpanStart, own: TraceParent) -> (KausalSpan, TraceParent) {
    if !spans::enabled() {
        return (KausalSpan::disabled(), own);
    }
    let otel = start.start();
    let sampled = TraceParent {
        flags: u8::from(otel.sampled()),
        ..own
    };
    (otel, sampled)
}
