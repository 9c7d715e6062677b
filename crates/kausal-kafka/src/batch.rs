//! Batch handling: a [`BatchHandler`] gets up to `max_records` records at
//! once (seed 002's batch consumer: one database round trip, one API call,
//! one bulk insert per batch) under one `process` span that links every
//! record's producer context.
//!
//! The runtime's guarantees are the per-record ones of [`crate::runtime`]:
//! the offsets of a batch are committed only after the whole batch was
//! handled (and what it emitted acknowledged) or its failing records were
//! dead-lettered. A failed batch is retried as a whole within the retry
//! budget; when the budget is spent, the batch is split and each record is
//! handled alone, with a budget of its own, so that one bad record is
//! dead-lettered and the good ones around it are processed — never the whole
//! batch dead-lettered for one record. The split costs the bad record a
//! second budget of attempts; that is the price of not needing the handler
//! to say which record failed.

use std::future::Future;
use std::time::{Duration, Instant};

use kausal_core::{HandlerError, TraceParent};
use kausal_telemetry::spans::{self, KausalSpan, Kind, SpanStart, attr};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::KafkaConfig;
use crate::event::{Emitter, IncomingEvent, OutgoingEvent};
use crate::ids;
use crate::producer::EventProducer;
use crate::runtime::{ConsumerRuntime, Dispatch, Outcome, RunSummary};
use crate::settle::{Emitted, Finished};

/// Business logic that handles records in batches. Implement with
/// `async fn`.
///
/// Return `Ok(())` when every record of `batch` is handled; an error fails
/// the whole batch (see the module docs for what happens next). Emit
/// follow-up events through `out`, naming the record each one follows from.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle_batch(
        &self,
        batch: &[IncomingEvent],
        out: &mut BatchEmitter,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// How big a batch gets and how long the runtime waits to fill it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Most records in one batch (at least 1).
    pub max_records: usize,
    /// After the first record arrived, how long to wait for more.
    pub max_wait: Duration,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_records: 100,
            max_wait: Duration::from_millis(50),
        }
    }
}

/// Records in batches to a [`BatchHandler`].
#[derive(Debug)]
pub struct Batched<B> {
    handler: B,
    limits: BatchLimits,
}

/// Collects what a batch handler emits, per record: each event inherits the
/// correlation id of the record it follows from and names it as its cause.
/// Published only if the whole batch succeeds.
#[derive(Debug)]
pub struct BatchEmitter {
    emitters: Vec<Emitter>,
}

impl BatchEmitter {
    fn new(service: &str, batch: &[IncomingEvent]) -> Self {
        Self {
            emitters: batch.iter().map(|e| Emitter::new(service, e)).collect(),
        }
    }

    /// Emits `event` on its topic, as a consequence of record `cause` (its
    /// index in the batch).
    pub fn emit<E: kausal_core::Event>(
        &mut self,
        cause: usize,
        event: &E,
    ) -> Result<(), HandlerError> {
        self.emit_to(cause, E::TOPIC, event.key(), E::TYPE, E::VERSION, event)
    }

    /// Emits `payload` as JSON on `topic`, as a consequence of record
    /// `cause` (its index in the batch).
    pub fn emit_to<T: Serialize>(
        &mut self,
        cause: usize,
        topic: &str,
        key: Option<&str>,
        event_type: &str,
        version: u32,
        payload: &T,
    ) -> Result<(), HandlerError> {
        let size = self.emitters.len();
        let emitter = self.emitters.get_mut(cause).ok_or_else(|| {
            HandlerError::fatal(
                "NoSuchRecord",
                format!("cannot emit {event_type} for record {cause} of a batch of {size}"),
            )
        })?;
        emitter.emit_to(topic, key, event_type, version, payload)
    }

    fn take(&mut self) -> Vec<OutgoingEvent> {
        self.emitters.iter_mut().flat_map(Emitter::take).collect()
    }
}

impl<B: BatchHandler> ConsumerRuntime<Batched<B>> {
    /// A member of `group` handing records of `topics` to `handler` in
    /// batches of at most `limits.max_records`.
    pub fn batched(
        config: KafkaConfig,
        service: &str,
        group: &str,
        topics: &[&str],
        handler: B,
        limits: BatchLimits,
        producer: EventProducer,
    ) -> Self {
        let limits = BatchLimits {
            max_records: limits.max_records.max(1),
            ..limits
        };
        Self::with_dispatch(
            config,
            service,
            group,
            topics,
            Batched { handler, limits },
            producer,
        )
    }

    /// One attempt loop over `records` within the retry budget.
    async fn attempt_all(
        &self,
        records: &[IncomingEvent],
        otel: &mut KausalSpan,
        summary: &mut RunSummary,
        shutdown: &CancellationToken,
    ) -> Option<Result<(u32, Vec<Emitted>), (HandlerError, u32)>> {
        let call = || async {
            let mut out = BatchEmitter::new(&self.service, records);
            let result = self.dispatch.handler.handle_batch(records, &mut out).await;
            (result, out.take())
        };
        self.attempt(records, call, otel, summary, shutdown).await
    }

    /// Handles the admitted records: as one batch, or one by one after the
    /// batch gave up. Outcomes and the events each record emitted, in the
    /// order of `records`.
    async fn handle_admitted(
        &self,
        records: &[IncomingEvent],
        otel: &mut KausalSpan,
        summary: &mut RunSummary,
        shutdown: &CancellationToken,
    ) -> Option<Vec<(Outcome, Vec<Emitted>)>> {
        let (error, attempts) = match self.attempt_all(records, otel, summary, shutdown).await? {
            Ok((attempts, emitted)) => {
                let outcome = Outcome::Processed { attempts };
                return Some(
                    by_cause(records, emitted)
                        .into_iter()
                        .map(|emitted| (outcome.clone(), emitted))
                        .collect(),
                );
            }
            Err(failed) => failed,
        };
        if let [record] = records {
            return Some(vec![(
                self.dead_letter(record, &error, attempts, shutdown).await?,
                Vec::new(),
            )]);
        }
        tracing::warn!(
            records = records.len(),
            errorType = %error.error_type,
            error = %error.message,
            "batch failed for good; handling its records one by one"
        );
        let mut outcomes = Vec::with_capacity(records.len());
        for record in records {
            let alone = std::slice::from_ref(record);
            let outcome = match self.attempt_all(alone, otel, summary, shutdown).await? {
                Ok((attempts, emitted)) => (Outcome::Processed { attempts }, emitted),
                Err((error, attempts)) => (
                    self.dead_letter(record, &error, attempts, shutdown).await?,
                    Vec::new(),
                ),
            };
            outcomes.push(outcome);
        }
        Some(outcomes)
    }
}

impl<B: BatchHandler> crate::runtime::sealed::Sealed for Batched<B> {}

impl<B: BatchHandler> Dispatch for Batched<B> {
    fn batch_limits(&self) -> (usize, Duration) {
        (self.limits.max_records, self.limits.max_wait)
    }

    async fn dispatch<'a>(
        runtime: &'a ConsumerRuntime<Self>,
        events: &'a mut [IncomingEvent],
        shutdown: &'a CancellationToken,
        summary: &'a mut RunSummary,
    ) -> Option<Vec<Finished>> {
        // The batch is one handling: one new trace, one span, linked to
        // every record's producer; logs, receipts, dead letters and emitted
        // events of its records all name it.
        let context = TraceParent::new(ids::new_trace_id(), ids::new_span_id(), true);
        for event in events.iter_mut() {
            event.trace = context;
        }
        let log_span = tracing::info_span!(
            "process",
            traceId = %context.trace_id,
            spanId = %context.parent_id,
            consumerGroup = %runtime.group,
            batchSize = events.len(),
        );
        async {
            let started = Instant::now();
            let mut outcomes: Vec<Option<(Outcome, Vec<Emitted>)>> =
                std::iter::repeat_with(|| None).take(events.len()).collect();
            let mut admitted = Vec::new();
            for (i, event) in events.iter().enumerate() {
                match runtime.admit(event, shutdown).await? {
                    Some(done) => outcomes[i] = Some((done, Vec::new())),
                    None => admitted.push(i),
                }
            }
            if !admitted.is_empty() {
                // Copies only when some records were finished early.
                let records: std::borrow::Cow<'_, [IncomingEvent]> =
                    if admitted.len() == events.len() {
                        std::borrow::Cow::Borrowed(&events[..])
                    } else {
                        admitted.iter().map(|i| events[*i].clone()).collect()
                    };
                let mut otel = batch_span(runtime, &records, context);
                runtime.metrics.handlers_in_flight.inc();
                let handled = runtime
                    .handle_admitted(&records, &mut otel, summary, shutdown)
                    .await;
                runtime.metrics.handlers_in_flight.dec();
                let handled = handled?;
                let failed = handled
                    .iter()
                    .filter(|(o, _)| matches!(o, Outcome::DeadLettered { .. }))
                    .count();
                if failed > 0 {
                    otel.set_error(
                        "BatchPartlyDeadLettered",
                        &format!("{failed} of {} records dead-lettered", records.len()),
                    );
                }
                otel.end();
                for (i, outcome) in admitted.iter().zip(handled) {
                    outcomes[*i] = Some(outcome);
                }
            }
            let duration = started.elapsed();
            let duration_ms = duration.as_secs_f64() * 1000.0;
            let mut finished = Vec::with_capacity(events.len());
            for (event, outcome) in events.iter().zip(outcomes) {
                // Every slot was filled above: admitted or finished early.
                let (outcome, emitted) = outcome?;
                runtime
                    .metrics
                    .event_processing_duration
                    .get_or_create(
                        &runtime
                            .metrics
                            .topic_event_type(&event.topic, event.event_type()),
                    )
                    .observe(duration.as_secs_f64());
                if let Outcome::DeadLettered {
                    attempts,
                    error_type,
                    error_message,
                } = &outcome
                {
                    tracing::error!(
                        durationMs = duration_ms,
                        attempts,
                        outcome = "dead_lettered",
                        correlationId = %event.headers.correlation_id,
                        eventId = %event.headers.event_id,
                        eventType = event.event_type().unwrap_or(""),
                        errorType = %error_type,
                        error = %error_message,
                        dlqTopic = %runtime.dlq_topic_for(&event.topic),
                        "event dead-lettered"
                    );
                }
                finished.push(Finished::new(outcome, duration_ms, emitted));
            }
            tracing::info!(
                durationMs = duration_ms,
                records = events.len(),
                "batch processed"
            );
            Some(finished)
        }
        .instrument(log_span)
        .await
    }
}

/// Assigns each emitted event to the record it follows from (its
/// `causation-id`), so that a record settles when its own output is
/// acknowledged; an event naming no record of the batch goes with the last.
fn by_cause(records: &[IncomingEvent], emitted: Vec<Emitted>) -> Vec<Vec<Emitted>> {
    let mut per_record: Vec<Vec<Emitted>> = std::iter::repeat_with(Vec::new)
        .take(records.len())
        .collect();
    for e in emitted {
        let cause = e.event.headers.causation_id;
        let index = records
            .iter()
            .position(|r| Some(r.headers.event_id) == cause)
            .unwrap_or(records.len().saturating_sub(1));
        if let Some(slot) = per_record.get_mut(index) {
            slot.push(e);
        }
    }
    per_record
}

/// The batch's `process` span: a new root (a batch has no one parent) with
/// one link per record to the context its producer sent (DESIGN §6).
fn batch_span<B>(
    runtime: &ConsumerRuntime<Batched<B>>,
    records: &[IncomingEvent],
    context: TraceParent,
) -> KausalSpan {
    if !spans::enabled() {
        return KausalSpan::disabled();
    }
    let first_topic = records.first().map(|r| r.topic.as_str()).unwrap_or("");
    let one_topic = records.iter().all(|r| r.topic == first_topic);
    let name = if one_topic {
        format!("process {first_topic}")
    } else {
        "process".to_owned()
    };
    let mut start = SpanStart::new(name, Kind::Consumer, context)
        .attr(attr::MESSAGING_SYSTEM, "kafka")
        .attr(attr::OPERATION_NAME, "process")
        .attr(attr::OPERATION_TYPE, "process")
        .attr(attr::CONSUMER_GROUP, runtime.group.clone())
        .attr(attr::BATCH_MESSAGE_COUNT, records.len() as i64);
    if one_topic {
        start = start.attr(attr::DESTINATION, first_topic.to_owned());
    }
    for record in records {
        start = start.link(record.headers.traceparent);
    }
    start.start()
}
