//! The consumer runtime: a consumer group around a [`Handler`], with
//! commit-after-success, retries, dead-lettering and an idempotency guard.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use kausal_core::dlq::{self, DeadLetter};
use kausal_core::retry::{GiveUpReason, RetryDecision};
use kausal_core::{ErrorClass, HandlerError, RetryPolicy};
use kausal_store::{MarkWriter, Store};
use kausal_telemetry::metrics::{
    Metrics, SourceTopicErrorType, TopicErrorType, TopicGroup, TopicGroupKind,
};
use kausal_telemetry::spans::{self, KausalSpan, Kind, SpanStart, attr};
use opentelemetry::KeyValue;
use rand::Rng;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::KafkaConfig;
use crate::event::{Emitter, IncomingEvent};
use crate::heartbeat::DEFAULT_HEARTBEAT_INTERVAL;
use crate::ids;
use crate::producer::{EventProducer, PublishError};
use crate::settle::{Emitted, Finished, panic_message};

/// Partitions handled at the same time unless
/// [`ConsumerRuntime::partition_concurrency`] says otherwise.
pub const DEFAULT_PARTITION_CONCURRENCY: usize = 16;

/// See [`ConsumerRuntime::drain_timeout`].
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Header set on a dead letter whose original value could not be copied
/// (the broker refused the size); the original stays at its offset.
pub const DLQ_VALUE_OMITTED: &str = "dlq-original-value-omitted";

/// Business logic for one consumer group. Implement with `async fn`.
///
/// Return `Ok(())` when the event is handled (also for event types this
/// handler deliberately ignores), a retryable [`HandlerError`] for transient
/// faults, a fatal one for bad input. Emit follow-up events through `out`:
/// they are published only if the handler succeeds.
pub trait Handler: Send + Sync + 'static {
    fn handle(
        &self,
        event: &IncomingEvent,
        out: &mut Emitter,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// What to do with an event that carries no usable `correlation-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CorrelationPolicy {
    /// Use the event's own id, log a warning, count it.
    #[default]
    Adopt,
    /// Dead-letter it without calling the handler.
    Reject,
}

/// How the runtime finished with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Processed {
        attempts: u32,
    },
    DeadLettered {
        attempts: u32,
        error_type: String,
        error_message: String,
    },
    DuplicateSkipped,
}

impl Outcome {
    /// The label of DESIGN §5's receipts.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Processed { .. } => "processed",
            Self::DeadLettered { .. } => "dead_lettered",
            Self::DuplicateSkipped => "duplicate_skipped",
        }
    }
}

/// Counts of one run, returned on graceful shutdown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub processed: u64,
    pub dead_lettered: u64,
    pub duplicates_skipped: u64,
    pub retries: u64,
    /// Partitions taken away from this member by rebalances while it ran
    /// (with the default cooperative assignment only those that moved; a
    /// member evicted for not polling loses all of them).
    pub partitions_revoked: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create the Kafka consumer: {0}")]
    Create(KafkaError),
    #[error("cannot subscribe to {topics:?}: {source}")]
    Subscribe {
        topics: Vec<String>,
        #[source]
        source: KafkaError,
    },
    /// A task of the runtime panicked: one settling a record (publishing
    /// what its handler emitted, its idempotency mark, its receipt; or the
    /// outcome observer), the heartbeats or the orphaned-partition watch.
    /// The runtime stops instead of running on without it; the record being
    /// settled and every record after it stay uncommitted and are
    /// redelivered.
    #[error("{task} died: {reason}")]
    TaskDied {
        /// Which task, e.g. `the task settling orders/1@42`.
        task: String,
        /// How it died, e.g. `panicked: <message>`.
        reason: String,
    },
}

/// Called after each record is finished (tests, receipts), as part of its
/// settling: a panic in it stops the runtime with
/// [`RuntimeError::TaskDied`], the record uncommitted.
pub type OutcomeObserver = Arc<dyn Fn(&IncomingEvent, &Outcome) + Send + Sync>;

/// How a runtime hands records to its business logic: one at a time
/// ([`Single`], a [`Handler`]) or in batches ([`Batched`], a
/// [`BatchHandler`](crate::batch::BatchHandler)). Everything else — the
/// group, commits, retries, dead letters, receipts, heartbeats — is the same
/// runtime. Sealed: implemented by those two only.
pub trait Dispatch: sealed::Sealed + Send + Sync + Sized + 'static {
    /// Most records handed over at once, and how long to wait for more
    /// after the first one arrived.
    #[doc(hidden)]
    fn batch_limits(&self) -> (usize, Duration);

    /// Finishes every record of `events` (handled, dead-lettered or
    /// skipped) and returns each one's outcome, handling time and what it
    /// emitted, in order; `None` when shutdown interrupted a wait (nothing
    /// of the batch is then committed).
    #[doc(hidden)]
    fn dispatch<'a>(
        runtime: &'a ConsumerRuntime<Self>,
        events: &'a mut [IncomingEvent],
        shutdown: &'a CancellationToken,
        summary: &'a mut RunSummary,
    ) -> impl Future<Output = Option<Vec<Finished>>> + Send + 'a;
}

/// Records one at a time to a [`Handler`].
#[derive(Debug)]
pub struct Single<H>(H);

pub(crate) mod sealed {
    /// Keeps [`super::Dispatch`] to this crate's two shapes of handler.
    pub trait Sealed {}
}

impl<H: Handler> sealed::Sealed for Single<H> {}

impl<H: Handler> Dispatch for Single<H> {
    fn batch_limits(&self) -> (usize, Duration) {
        (1, Duration::ZERO)
    }

    async fn dispatch<'a>(
        runtime: &'a ConsumerRuntime<Self>,
        events: &'a mut [IncomingEvent],
        shutdown: &'a CancellationToken,
        summary: &'a mut RunSummary,
    ) -> Option<Vec<Finished>> {
        let mut finished = Vec::with_capacity(events.len());
        for event in events.iter() {
            finished.push(runtime.finish(event, shutdown, summary).await?);
        }
        Some(finished)
    }
}

/// A consumer group member running a [`Handler`] (or a batch handler, see
/// [`ConsumerRuntime::batched`]).
pub struct ConsumerRuntime<D> {
    pub(crate) config: KafkaConfig,
    pub(crate) service: String,
    pub(crate) group: String,
    pub(crate) topics: Vec<String>,
    pub(crate) dispatch: D,
    pub(crate) producer: EventProducer,
    pub(crate) retry: RetryPolicy,
    pub(crate) correlation: CorrelationPolicy,
    pub(crate) store: Option<Store>,
    /// Writes the store's idempotency marks in batches (started by `run`).
    marks: Option<MarkWriter>,
    pub(crate) metrics: Metrics,
    pub(crate) commit_interval: Duration,
    pub(crate) infra_backoff: Duration,
    pub(crate) observer: Option<OutcomeObserver>,
    dlq_overrides: HashMap<String, String>,
    pub(crate) receipts: bool,
    pub(crate) heartbeat: Option<Duration>,
    /// Most partitions whose records are in a handler at the same time.
    pub(crate) partition_concurrency: usize,
    /// How long a revoked partition's worker gets to finish the record in
    /// hand and settle what it finished before the partition is let go.
    pub(crate) drain_timeout: Duration,
}

impl<D> std::fmt::Debug for ConsumerRuntime<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerRuntime")
            .field("service", &self.service)
            .field("group", &self.group)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> ConsumerRuntime<Single<H>> {
    /// A member of `group` handling each record of `topics` with `handler`.
    pub fn new(
        config: KafkaConfig,
        service: &str,
        group: &str,
        topics: &[&str],
        handler: H,
        producer: EventProducer,
    ) -> Self {
        Self::with_dispatch(config, service, group, topics, Single(handler), producer)
    }
}

impl<D: Dispatch> ConsumerRuntime<D> {
    pub(crate) fn with_dispatch(
        config: KafkaConfig,
        service: &str,
        group: &str,
        topics: &[&str],
        dispatch: D,
        producer: EventProducer,
    ) -> Self {
        Self {
            config,
            service: service.to_owned(),
            group: group.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            dispatch,
            metrics: producer.metrics().clone(),
            producer,
            retry: RetryPolicy::default(),
            correlation: CorrelationPolicy::default(),
            store: None,
            marks: None,
            commit_interval: Duration::from_millis(200),
            infra_backoff: Duration::from_millis(500),
            observer: None,
            dlq_overrides: HashMap::new(),
            receipts: true,
            heartbeat: Some(DEFAULT_HEARTBEAT_INTERVAL),
            partition_concurrency: DEFAULT_PARTITION_CONCURRENCY,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }

    /// Handle records of at most `n` partitions at the same time (default
    /// 16, at least 1). Records of one partition are always handled one
    /// after the other, in order.
    pub fn partition_concurrency(mut self, n: usize) -> Self {
        self.partition_concurrency = n.max(1);
        self
    }

    /// How long a partition being revoked may take to finish the record in
    /// hand and settle what it finished (default 30 s); after that it is
    /// let go uncommitted, and its next owner handles those records again.
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Beat on `kausal.consumers` every `interval` (default 3 s), or never
    /// (`None`). See [`crate::heartbeat`].
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Publish a receipt per handled record on `kausal.receipts` (default on).
    pub fn receipts(mut self, enabled: bool) -> Self {
        self.receipts = enabled;
        self
    }

    /// Dead-letter records of `source` to `dlq` instead of `<source>.dlq`
    /// (the seed's `DLQ_TOPIC`).
    pub fn dead_letter_topic(mut self, source: &str, dlq: &str) -> Self {
        self.dlq_overrides.insert(source.to_owned(), dlq.to_owned());
        self
    }

    pub(crate) fn dlq_topic_for(&self, source: &str) -> String {
        self.dlq_overrides
            .get(source)
            .cloned()
            .unwrap_or_else(|| dlq::dlq_topic(source))
    }

    pub fn retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn correlation_policy(mut self, policy: CorrelationPolicy) -> Self {
        self.correlation = policy;
        self
    }

    /// Skip events this group already handled (by event id).
    pub fn idempotency_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// How often finished offsets are committed while running.
    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval;
        self
    }

    pub fn on_outcome(mut self, observer: OutcomeObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Consumes until `shutdown` is cancelled, then finishes the records in
    /// hand, commits, flushes and returns. Stops the same way, but with
    /// [`RuntimeError::TaskDied`], when one of its tasks dies. How: see
    /// [`crate::poll`] and [`crate::worker`].
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<RunSummary, RuntimeError> {
        self.marks = self.store.clone().map(MarkWriter::spawn);
        // Shared with the partitions' workers and the settle tasks.
        crate::poll::run(Arc::new(self), shutdown).await
    }
}

impl<H: Handler> ConsumerRuntime<Single<H>> {
    /// Handles, dead-letters or skips one record. `None` only when shutdown
    /// interrupted a wait, leaving the record unfinished.
    async fn finish(
        &self,
        event: &IncomingEvent,
        shutdown: &CancellationToken,
        summary: &mut RunSummary,
    ) -> Option<Finished> {
        let span = record_log_span(event, &self.group);
        let mut otel = process_span(event, &self.group);
        async {
            let started = Instant::now();
            self.metrics.handlers_in_flight.inc();
            let finished = self.finish_inner(event, shutdown, summary, &mut otel).await;
            let (outcome, emitted) = match finished {
                Some((outcome, emitted)) => (Some(outcome), emitted),
                None => (None, Vec::new()),
            };
            self.metrics.handlers_in_flight.dec();
            let duration = started.elapsed();
            self.metrics
                .event_processing_duration
                .get_or_create(
                    &self
                        .metrics
                        .topic_event_type(&event.topic, event.event_type()),
                )
                .observe(duration.as_secs_f64());
            let duration_ms = duration.as_secs_f64() * 1000.0;
            match &outcome {
                Some(Outcome::Processed { attempts }) => {
                    tracing::info!(
                        durationMs = duration_ms,
                        attempts,
                        outcome = "processed",
                        "event processed"
                    );
                }
                Some(Outcome::DuplicateSkipped) => {
                    tracing::info!(
                        durationMs = duration_ms,
                        outcome = "duplicate_skipped",
                        "event already processed by this group; skipped"
                    );
                }
                Some(Outcome::DeadLettered {
                    attempts,
                    error_type,
                    error_message,
                }) => {
                    tracing::error!(
                        durationMs = duration_ms,
                        attempts,
                        outcome = "dead_lettered",
                        errorType = %error_type,
                        error = %error_message,
                        dlqTopic = %self.dlq_topic_for(&event.topic),
                        "event dead-lettered"
                    );
                }
                None => {
                    tracing::warn!("shutdown before the event was finished; it will be redelivered")
                }
            }
            match &outcome {
                Some(Outcome::DeadLettered {
                    error_type,
                    error_message,
                    ..
                }) => otel.set_error(error_type, error_message),
                Some(Outcome::DuplicateSkipped) => {
                    otel.set_attribute("messaging.kausal.duplicate", true)
                }
                _ => {}
            }
            otel.end();
            Some(Finished::new(outcome?, duration_ms, emitted))
        }
        .instrument(span)
        .await
    }

    async fn finish_inner(
        &self,
        event: &IncomingEvent,
        shutdown: &CancellationToken,
        summary: &mut RunSummary,
        otel: &mut KausalSpan,
    ) -> Option<(Outcome, Vec<Emitted>)> {
        if let Some(done) = self.admit(event, shutdown).await? {
            return Some((done, Vec::new()));
        }
        let call = || async {
            let mut out = Emitter::new(&self.service, event);
            let result = self.dispatch.0.handle(event, &mut out).await;
            (result, out.take())
        };
        let records = std::slice::from_ref(event);
        match self.attempt(records, call, otel, summary, shutdown).await? {
            Ok((attempts, emitted)) => Some((Outcome::Processed { attempts }, emitted)),
            Err((error, attempts)) => {
                let outcome = self.dead_letter(event, &error, attempts, shutdown).await?;
                Some((outcome, Vec::new()))
            }
        }
    }
}

/// Which failed attempt this was: of all (`attempt`, for receipts, logs and
/// span events) and of its error's class (`of_class`, what the retry policy
/// decides by: an outage does not spend the retry budget).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tries {
    pub(crate) attempt: u32,
    pub(crate) of_class: u32,
}

/// The log span of one record's handling: its logs carry these fields.
pub(crate) fn record_log_span(event: &IncomingEvent, group: &str) -> tracing::Span {
    tracing::info_span!(
        "process",
        correlationId = %event.headers.correlation_id,
        eventId = %event.headers.event_id,
        eventType = event.event_type().unwrap_or(""),
        traceId = %event.trace.trace_id,
        spanId = %event.trace.parent_id,
        topic = %event.topic,
        partition = event.partition,
        offset = event.offset,
        consumerGroup = %group,
    )
}

/// The `process <topic>` span of one record (DESIGN §6), as the runtime
/// starts it.
/// The `process <topic>` span (DESIGN §6): child of the producer's
/// context when the headers carry one, linked to it as well; a new root
/// otherwise. Its ids are the ones the logs carry.
pub fn process_span(event: &IncomingEvent, group: &str) -> KausalSpan {
    if !spans::enabled() {
        return KausalSpan::disabled();
    }
    let producer = event.headers.traceparent;
    let mut start = SpanStart::new(
        format!("process {}", event.topic),
        Kind::Consumer,
        event.trace,
    )
    .parent(producer)
    .link(producer)
    .attr(attr::MESSAGING_SYSTEM, "kafka")
    .attr(attr::OPERATION_NAME, "process")
    .attr(attr::OPERATION_TYPE, "process")
    .attr(attr::DESTINATION, event.topic.clone())
    .attr(attr::PARTITION, event.partition.to_string())
    .attr(attr::OFFSET, event.offset)
    .attr(attr::CONSUMER_GROUP, group.to_owned())
    .attr(attr::MESSAGE_ID, event.headers.event_id.to_string())
    .attr(
        attr::CONVERSATION_ID,
        event.headers.correlation_id.to_string(),
    );
    if let Some(key) = event.key_str() {
        start = start.attr(attr::KEY, key.to_owned());
    }
    if let Some(t) = event.event_type() {
        start = start.attr(attr::EVENT_TYPE, t.to_owned());
    }
    start.start()
}

/// The idempotency key saying "this group dead-lettered this delivery of
/// the event": its id and `replay-count` (0 when absent).
fn dead_lettered_key(event: &IncomingEvent) -> String {
    let replay = event
        .raw_headers
        .iter()
        .rev()
        .find(|(name, _)| name.eq_ignore_ascii_case(kausal_core::headers::REPLAY_COUNT))
        .and_then(|(_, v)| v.as_deref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    format!("{}#dead-lettered#{replay}", event.headers.event_id)
}

/// A panic in a handler, as a retryable error.
pub(crate) fn panic_error(panic: Box<dyn std::any::Any + Send>) -> HandlerError {
    HandlerError::retryable("HandlerPanic", panic_message(panic.as_ref()))
}

impl<D: Dispatch> ConsumerRuntime<D> {
    /// What happens before a record reaches the handler: counting, header
    /// issues, the correlation policy and the idempotency guard. `Some(None)`
    /// hands it to the handler, `Some(Some(outcome))` finished it here,
    /// `None` means shutdown interrupted a wait.
    pub(crate) async fn admit(
        &self,
        event: &IncomingEvent,
        shutdown: &CancellationToken,
    ) -> Option<Option<Outcome>> {
        let topic_group = self.topic_group(event);
        self.metrics
            .events_consumed
            .get_or_create(&topic_group)
            .inc();
        for issue in &event.issues {
            self.metrics
                .event_header_issues
                .get_or_create(&TopicGroupKind {
                    topic: event.topic.clone(),
                    consumer_group: self.group.clone(),
                    kind: issue.kind().to_owned(),
                })
                .inc();
            tracing::warn!(headerIssue = issue.kind(), eventId = %event.headers.event_id, "{issue}");
        }
        if event.issues.iter().any(|i| i.is_correlation_adopted()) {
            self.metrics
                .events_missing_correlation
                .get_or_create(&topic_group)
                .inc();
            if self.correlation == CorrelationPolicy::Reject {
                let error = HandlerError::missing_correlation_id();
                return self.dead_letter(event, &error, 0, shutdown).await.map(Some);
            }
        }
        if let Some(store) = &self.store {
            let event_id = event.headers.event_id.to_string();
            let dead_key = dead_lettered_key(event);
            let seen = self
                .with_store_retry(shutdown, &topic_group, || {
                    store.is_processed_either(&self.group, &event_id, &dead_key)
                })
                .await?;
            if seen {
                self.metrics
                    .events_duplicate_skipped
                    .get_or_create(&topic_group)
                    .inc();
                return Some(Some(Outcome::DuplicateSkipped));
            }
        }
        Some(None)
    }

    pub(crate) fn topic_group(&self, event: &IncomingEvent) -> TopicGroup {
        TopicGroup {
            topic: event.topic.clone(),
            consumer_group: self.group.clone(),
        }
    }

    /// Records `key` for `event` in the idempotency store (through the
    /// batching writer), retrying while the database is down.
    pub(crate) async fn mark(
        &self,
        event: &IncomingEvent,
        key: &str,
        shutdown: &CancellationToken,
    ) -> Option<()> {
        if let Some(marks) = &self.marks {
            self.with_store_retry(shutdown, &self.topic_group(event), || {
                marks.mark(&self.group, key)
            })
            .await?;
        }
        Some(())
    }

    /// Calls the handler (`call` returns its result and what it emitted)
    /// until it succeeds or the retry budget is spent, and hands what a
    /// successful attempt emitted to the producer (its acknowledgement and
    /// the idempotency mark follow when the record settles). The number of
    /// attempts and the events in flight, or the last error and the
    /// attempts when it gave up; `None` on shutdown.
    pub(crate) async fn attempt<F, Fut>(
        &self,
        records: &[IncomingEvent],
        mut call: F,
        otel: &mut KausalSpan,
        summary: &mut RunSummary,
        shutdown: &CancellationToken,
    ) -> Option<Result<(u32, Vec<Emitted>), (HandlerError, u32)>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = (Result<(), HandlerError>, Vec<crate::event::OutgoingEvent>)>,
    {
        let mut attempt = 0u32;
        // Failures of each class that waits: the retry budget, the outage.
        let (mut retried, mut waited) = (0u32, 0u32);
        loop {
            // An outage may last for ever: counts saturate, never wrap.
            attempt = attempt.saturating_add(1);
            let (result, emitted) = AssertUnwindSafe(call())
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| (Err(panic_error(panic)), Vec::new()));
            let error = match result {
                Ok(()) => match self.enqueue_emitted(emitted, shutdown).await? {
                    Ok(in_flight) => return Some(Ok((attempt, in_flight))),
                    Err(error) => error,
                },
                Err(error) => error,
            };
            let of_class = match error.class {
                ErrorClass::Unavailable => &mut waited,
                ErrorClass::Retryable | ErrorClass::Fatal => &mut retried,
            };
            *of_class = of_class.saturating_add(1);
            let tries = Tries {
                attempt,
                of_class: *of_class,
            };
            if !self
                .after_failure(records, &error, tries, otel, summary, shutdown)
                .await?
            {
                return Some(Err((error, attempt)));
            }
        }
    }

    /// Accounts for a failed attempt at `events` (one record or a batch):
    /// counts, span events, logs; then waits out the backoff. `Some(true)`:
    /// try again; `Some(false)`: give up; `None`: shutdown during the wait.
    pub(crate) async fn after_failure(
        &self,
        events: &[IncomingEvent],
        error: &HandlerError,
        tries: Tries,
        otel: &mut KausalSpan,
        summary: &mut RunSummary,
        shutdown: &CancellationToken,
    ) -> Option<bool> {
        let attempt = tries.attempt;
        for event in events {
            self.metrics
                .event_processing_errors
                .get_or_create(&TopicErrorType {
                    topic: event.topic.clone(),
                    error_type: error.error_type.clone(),
                })
                .inc();
        }
        otel.event(
            "exception",
            vec![
                KeyValue::new("exception.type", error.error_type.clone()),
                KeyValue::new("exception.message", error.message.clone()),
                KeyValue::new(attr::RETRY_ATTEMPT, i64::from(attempt)),
            ],
        );
        let sample: f64 = rand::rng().random();
        match self.retry.decide(tries.of_class, error.class, sample) {
            RetryDecision::RetryAfter(delay) => {
                summary.retries += 1;
                otel.event(
                    "retry",
                    vec![
                        KeyValue::new(attr::RETRY_ATTEMPT, i64::from(attempt)),
                        KeyValue::new("messaging.kausal.retry_in_ms", delay.as_millis() as i64),
                        KeyValue::new(attr::ERROR_TYPE, error.error_type.clone()),
                    ],
                );
                for event in events {
                    self.metrics
                        .event_retries
                        .get_or_create(&self.topic_group(event))
                        .inc();
                }
                if error.class == ErrorClass::Unavailable {
                    tracing::warn!(
                        attempt,
                        retryInMs = delay.as_millis() as u64,
                        errorType = %error.error_type,
                        error = %error.message,
                        records = events.len(),
                        "handler's dependency unavailable; the partition waits, retrying without limit"
                    );
                } else {
                    tracing::warn!(
                        attempt,
                        maxAttempts = self.retry.max_attempts,
                        retryInMs = delay.as_millis() as u64,
                        errorType = %error.error_type,
                        error = %error.message,
                        records = events.len(),
                        "handler failed; retrying"
                    );
                }
                let _stalled = crate::worker::stalled();
                tokio::select! {
                    () = shutdown.cancelled() => None,
                    () = tokio::time::sleep(delay) => Some(true),
                }
            }
            RetryDecision::GiveUp(reason) => {
                if reason == GiveUpReason::Fatal {
                    tracing::warn!(errorType = %error.error_type, error = %error.message, "not retryable");
                }
                Some(false)
            }
        }
    }

    /// Sends the original record to `<topic>.dlq` with the `dlq-*` headers.
    /// Retries until the broker has it: a record is never committed before it
    /// is handled or dead-lettered.
    pub(crate) async fn dead_letter(
        &self,
        event: &IncomingEvent,
        error: &HandlerError,
        attempts: u32,
        shutdown: &CancellationToken,
    ) -> Option<Outcome> {
        let letter = DeadLetter {
            original_topic: event.topic.clone(),
            original_partition: event.partition,
            original_offset: event.offset,
            original_timestamp_ms: event.timestamp_ms,
            consumer_group: self.group.clone(),
            service: self.service.clone(),
            error_type: error.error_type.clone(),
            error_message: error.message.clone(),
            attempts,
            failed_at: ids::now_rfc3339(),
        };
        let dlq_topic = self.dlq_topic_for(&event.topic);
        let event_type = event.event_type().unwrap_or("unknown");
        let mut omit_value: Option<String> = None;
        let mut dlq_span = if !spans::enabled() {
            KausalSpan::disabled()
        } else {
            SpanStart::new(
                format!("send {dlq_topic}"),
                Kind::Producer,
                event.trace.child(ids::new_span_id()),
            )
            .parent(Some(event.trace))
            .attr(attr::MESSAGING_SYSTEM, "kafka")
            .attr(attr::OPERATION_NAME, "send")
            .attr(attr::OPERATION_TYPE, "send")
            .attr(attr::DESTINATION, dlq_topic.clone())
            .attr(attr::MESSAGE_ID, event.headers.event_id.to_string())
            .attr(
                attr::CONVERSATION_ID,
                event.headers.correlation_id.to_string(),
            )
            .attr(attr::ERROR_TYPE, error.error_type.clone())
            .start()
        };
        loop {
            let mut headers = OwnedHeaders::new_with_capacity(event.raw_headers.len() + 11);
            for (name, value) in &event.raw_headers {
                headers = headers.insert(Header {
                    key: name.as_str(),
                    value: value.as_deref(),
                });
            }
            for (name, value) in letter.headers() {
                headers = headers.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            if let Some(reason) = &omit_value {
                headers = headers.insert(Header {
                    key: DLQ_VALUE_OMITTED,
                    value: Some(reason.as_bytes()),
                });
            }
            let value = if omit_value.is_some() {
                None
            } else {
                event.payload.as_deref()
            };
            match self
                .producer
                .publish_raw(&dlq_topic, event.key.as_deref(), value, headers, event_type)
                .await
            {
                Ok(d) => {
                    dlq_span.set_attribute(attr::PARTITION, d.partition.to_string());
                    dlq_span.set_attribute(attr::OFFSET, d.offset);
                    break;
                }
                Err(e) if e.is_permanent() && omit_value.is_none() => {
                    // Keep the failure visible in the ledger; the original
                    // bytes remain at their offset in the source topic.
                    tracing::error!(error = %e, "dead letter refused by the broker; sending it without the original value");
                    omit_value = Some(format!("{}: {e}", PublishError::error_type(&e)));
                }
                Err(e) => {
                    tracing::error!(error = %e, dlqTopic = %dlq_topic, "cannot dead-letter; retrying (the record stays uncommitted)");
                    if self.pause(shutdown).await.is_none() {
                        dlq_span.fail("DeadLetterNotPublished", &e.to_string());
                        dlq_span.end();
                        return None;
                    }
                }
            }
        }
        dlq_span.end();
        // A crash before the commit redelivers the record; it was
        // dead-lettered, so it must not be handled again (it might succeed
        // the second time: a payment *and* a dead letter). A replay from the
        // ledger carries a higher `replay-count`, so a different key, and is
        // handled.
        self.mark(event, &dead_lettered_key(event), shutdown)
            .await?;
        self.metrics
            .dlq_events
            .get_or_create(&SourceTopicErrorType {
                source_topic: event.topic.clone(),
                error_type: error.error_type.clone(),
            })
            .inc();
        Some(Outcome::DeadLettered {
            attempts,
            error_type: error.error_type.clone(),
            error_message: error.message.clone(),
        })
    }

    /// Runs a store operation until it succeeds: a database outage pauses
    /// the consumer (nothing is committed) instead of losing or
    /// double-charging events.
    async fn with_store_retry<T, F, Fut>(
        &self,
        shutdown: &CancellationToken,
        labels: &TopicGroup,
        mut op: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = kausal_store::Result<T>>,
    {
        let mut delay = self.infra_backoff;
        loop {
            match op().await {
                Ok(v) => return Some(v),
                Err(e) => {
                    self.metrics.store_errors.get_or_create(labels).inc();
                    tracing::error!(error = %e, retryInMs = delay.as_millis() as u64, "idempotency store unavailable; pausing this partition");
                    let _stalled = crate::worker::stalled();
                    tokio::select! {
                        () = shutdown.cancelled() => return None,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
