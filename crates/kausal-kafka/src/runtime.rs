//! The consumer runtime: a consumer group around a [`Handler`], with
//! commit-after-success, retries, dead-lettering and an idempotency guard.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use kausal_core::dlq::{self, DeadLetter};
use kausal_core::retry::{GiveUpReason, RetryDecision};
use kausal_core::{HandlerError, RetryPolicy};
use kausal_store::{MarkWriter, Store};
use kausal_telemetry::metrics::{
    Metrics, SourceTopicErrorType, TopicErrorType, TopicGroup, TopicGroupKind,
};
use kausal_telemetry::spans::{self, KausalSpan, Kind, SpanStart, attr};
use opentelemetry::KeyValue;
use rand::Rng;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::KafkaConfig;
use crate::event::{Emitter, IncomingEvent};
use crate::heartbeat::{
    CommittedOffset, DEFAULT_HEARTBEAT_INTERVAL, HEARTBEAT_EVENT_TYPE, HEARTBEATS_TOPIC, Heartbeat,
    HeartbeatReader, InFlight, MemberState, ORPHAN_GRACE, OrphanWatch, PartitionRef,
    acts_for_group, orphaned,
};
use crate::ids;
use crate::producer::{EventProducer, PublishError};
use crate::settle::{
    Emitted, Finished, MAX_UNSETTLED, Pending, Position, Settling, died, panic_message,
};

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

/// What this member reports in its heartbeats.
#[derive(Debug, Default)]
pub(crate) struct MemberStatus {
    pub(crate) assigned: std::collections::BTreeSet<PartitionRef>,
    committed: HashMap<(String, i32), (i64, i64)>,
    in_flight: Option<InFlight>,
}

impl MemberStatus {
    fn beat(&self, runtime: &MemberIdentity, state: MemberState) -> Heartbeat {
        let mut committed: Vec<CommittedOffset> = self
            .committed
            .iter()
            .map(|((topic, partition), (offset, at_ms))| CommittedOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                at_ms: *at_ms,
            })
            .collect();
        committed.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Heartbeat {
            consumer_group: runtime.group.clone(),
            member: runtime.member.clone(),
            service: runtime.service.clone(),
            state,
            at_ms: ids::now_ms(),
            interval_ms: runtime.interval.as_millis() as i64,
            assigned: self.assigned.iter().cloned().collect(),
            committed,
            in_flight: self.in_flight.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct MemberIdentity {
    group: String,
    member: String,
    service: String,
    interval: Duration,
}

/// Commits finished work for partitions that are being taken away, before
/// another member can start on them.
struct RuntimeContext {
    pending: Arc<Mutex<Pending>>,
    status: Arc<Mutex<MemberStatus>>,
    group: String,
}

impl RuntimeContext {
    fn status(&self) -> std::sync::MutexGuard<'_, MemberStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ClientContext for RuntimeContext {}

impl ConsumerContext for RuntimeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(revoked) => {
                let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
                let tpl = pending.to_list(Some(revoked));
                if tpl.count() > 0 {
                    match consumer.commit(&tpl, CommitMode::Sync) {
                        Ok(()) => {
                            tracing::info!(group = %self.group, partitions = tpl.count(), "committed finished work before rebalance")
                        }
                        Err(e) => {
                            tracing::warn!(group = %self.group, error = %e, "commit before rebalance failed; those records will be redelivered")
                        }
                    }
                }
                let mut status = self.status();
                for elem in revoked.elements() {
                    pending
                        .offsets
                        .remove(&(elem.topic().to_owned(), elem.partition()));
                    status.assigned.remove(&PartitionRef {
                        topic: elem.topic().to_owned(),
                        partition: elem.partition(),
                    });
                }
            }
            Rebalance::Assign(assigned) => {
                tracing::info!(group = %self.group, partitions = assigned.count(), "partitions assigned");
                let mut status = self.status();
                for elem in assigned.elements() {
                    status.assigned.insert(PartitionRef {
                        topic: elem.topic().to_owned(),
                        partition: elem.partition(),
                    });
                }
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance error")
            }
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                let at = ids::now_ms();
                let mut status = self.status();
                for elem in offsets.elements() {
                    if let Offset::Offset(o) = elem.offset() {
                        status
                            .committed
                            .insert((elem.topic().to_owned(), elem.partition()), (o, at));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(group = %self.group, error = %e, "offset commit failed; will retry with the next commit");
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).dirty = true;
            }
        }
    }
}

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
    config: KafkaConfig,
    pub(crate) service: String,
    pub(crate) group: String,
    topics: Vec<String>,
    pub(crate) dispatch: D,
    pub(crate) producer: EventProducer,
    pub(crate) retry: RetryPolicy,
    pub(crate) correlation: CorrelationPolicy,
    pub(crate) store: Option<Store>,
    /// Writes the store's idempotency marks in batches (started by `run`).
    marks: Option<MarkWriter>,
    pub(crate) metrics: Metrics,
    commit_interval: Duration,
    pub(crate) infra_backoff: Duration,
    observer: Option<OutcomeObserver>,
    dlq_overrides: HashMap<String, String>,
    pub(crate) receipts: bool,
    heartbeat: Option<Duration>,
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
        }
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

    /// Consumes until `shutdown` is cancelled, then finishes the record in
    /// hand, commits, flushes and returns. Stops the same way, but with
    /// [`RuntimeError::TaskDied`], when one of its tasks dies.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<RunSummary, RuntimeError> {
        self.marks = self.store.clone().map(MarkWriter::spawn);
        // Shared with the tasks that settle handled records.
        let this = Arc::new(self);
        this.run_shared(shutdown).await
    }

    async fn run_shared(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<RunSummary, RuntimeError> {
        // Cancelled as well when a task of this runtime dies, so that the
        // settle tasks let go of what they wait for.
        let shutdown = shutdown.child_token();
        let mut own_topics = Vec::new();
        if self.receipts {
            // Receipts are awaited before a commit, so their topic must exist.
            own_topics.push(crate::admin::TopicSpec::new(
                crate::receipt::RECEIPTS_TOPIC,
                3,
            ));
        }
        if self.heartbeat.is_some() {
            own_topics.push(crate::admin::TopicSpec::new(HEARTBEATS_TOPIC, 1));
        }
        if !own_topics.is_empty() {
            let ensured = match crate::admin::Admin::new(&self.config) {
                Ok(admin) => admin
                    .ensure_topics(&own_topics)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = ensured {
                tracing::error!(error = %e, topics = ?own_topics.iter().map(|t| &t.name).collect::<Vec<_>>(), "cannot create the runtime's topics; records wait until the receipts topic exists (create it, or disable receipts)");
            }
        }
        let pending = Arc::new(Mutex::new(Pending::default()));
        let status = Arc::new(Mutex::new(MemberStatus::default()));
        let context = RuntimeContext {
            pending: pending.clone(),
            status: status.clone(),
            group: self.group.clone(),
        };
        let client_id = format!("{}-{}", self.service, std::process::id());
        let consumer: StreamConsumer<RuntimeContext> = self
            .config
            .consumer_config(&self.group, &client_id)
            .create_with_context(context)
            .map_err(RuntimeError::Create)?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|source| RuntimeError::Subscribe {
                topics: self.topics.clone(),
                source,
            })?;
        tracing::info!(service = %self.service, group = %self.group, topics = ?self.topics, "consumer started");
        let identity = MemberIdentity {
            group: self.group.clone(),
            member: format!("{client_id}-{}", crate::ids::new_span_id()),
            service: self.service.clone(),
            interval: self.heartbeat.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL),
        };
        let beats = CancellationToken::new();
        let mut beating = self.heartbeat.map(|_| {
            tokio::spawn(beat_until(
                self.producer.clone(),
                identity.clone(),
                status.clone(),
                beats.clone(),
            ))
        });
        let rejoin = Arc::new(AtomicBool::new(false));
        let mut watching = self.heartbeat.map(|_| {
            tokio::spawn(watch_orphans(
                self.config.clone(),
                identity.clone(),
                self.topics.clone(),
                status.clone(),
                rejoin.clone(),
                beats.clone(),
            ))
        });

        let mut summary = RunSummary::default();
        let mut settling = Settling::new(pending.clone(), status.clone(), self.observer.clone());
        let mut last_commit = Instant::now();
        let mut last_error_log: Option<Instant> = None;
        // A task of this runtime that died: the run stops with it.
        let mut failure: Option<RuntimeError> = None;
        loop {
            if let Err(e) = helper_alive(&mut beating, "the heartbeat task")
                .and_then(|()| helper_alive(&mut watching, "the orphaned-partition watch"))
            {
                failure = Some(e);
                break;
            }
            if rejoin.swap(false, Ordering::Relaxed) {
                // Leaving commits finished work (the revoke callback);
                // subscribing again joins a fresh generation, in which the
                // orphaned partitions are assigned.
                consumer.unsubscribe();
                if let Err(e) = consumer.subscribe(&topics) {
                    tracing::error!(group = %self.group, error = %e, "cannot rejoin the group; retrying at the next check");
                }
            }
            let received = tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                r = tokio::time::timeout(self.commit_interval, consumer.recv()) => r,
            };
            match received {
                Err(_elapsed) => {}
                Ok(Err(e)) => {
                    // Transport errors and unknown topics are reported here
                    // and recover by themselves; log them without flooding.
                    if last_error_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                        tracing::warn!(group = %self.group, error = %e, "consumer error");
                        last_error_log = Some(Instant::now());
                    }
                }
                Ok(Ok(message)) => {
                    let mut events = vec![IncomingEvent::from_message(&message)];
                    drop(message);
                    self.fill_batch(&consumer, &mut events).await;
                    // A copy of an unsettled record is not marked processed
                    // yet: let the first settle so the guard sees it.
                    if events.iter().any(|e| settling.holds(&e.headers.event_id))
                        && !settling.settle_until(0).await
                    {
                        break;
                    }
                    status.lock().unwrap_or_else(|e| e.into_inner()).in_flight = Some(InFlight {
                        topic: events[0].topic.clone(),
                        partition: events[0].partition,
                        offset: events[0].offset,
                        since_ms: ids::now_ms(),
                    });
                    let finished = D::dispatch(self, &mut events, &shutdown, &mut summary).await;
                    status.lock().unwrap_or_else(|e| e.into_inner()).in_flight = None;
                    let Some(finished) = finished else {
                        // Shut down while waiting on infrastructure: the
                        // records are not finished, so they are not
                        // committed.
                        break;
                    };
                    for (event, done) in events.into_iter().zip(finished) {
                        let position = Position::of(&event);
                        let event_id = event.headers.event_id;
                        let settle = self.settle(event, done, &shutdown);
                        settling.push(position, event_id, settle);
                    }
                    // Settling overlaps the next records' handling; a
                    // record's offset waits for it, and so does the next
                    // record once too many are unsettled.
                    if !settling.settle_ready() || !settling.settle_until(MAX_UNSETTLED).await {
                        break;
                    }
                }
            }
            if !settling.settle_ready() {
                break;
            }
            if last_commit.elapsed() >= self.commit_interval {
                let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
                if p.dirty {
                    let tpl = p.to_list(None);
                    if tpl.count() > 0
                        && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
                    {
                        tracing::warn!(group = %self.group, error = %e, "offset commit failed; will retry");
                    } else {
                        p.dirty = false;
                    }
                }
                last_commit = Instant::now();
            }
        }

        // A dead task stops the run like a shutdown, but the run ends in an
        // error: what it was settling and everything after it (already let
        // go by `settling`) stay uncommitted.
        let mut failure = failure.or_else(|| settling.take_failure());
        if failure.is_some() {
            shutdown.cancel();
        }
        // Graceful stop: commit everything finished (and receipted), flush,
        // leave the group.
        settling.settle_until(0).await;
        failure = failure.or_else(|| settling.take_failure());
        if let Some(e) = &failure {
            tracing::error!(group = %self.group, error = %e, "a task of the consumer runtime died; stopping: records not settled stay uncommitted and will be redelivered");
        }
        summary.processed = settling.counts.processed;
        summary.dead_lettered = settling.counts.dead_lettered;
        summary.duplicates_skipped = settling.counts.duplicates_skipped;
        let tpl = pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .to_list(None);
        if tpl.count() > 0 {
            match consumer.commit(&tpl, CommitMode::Sync) {
                Ok(()) => tracing::info!(group = %self.group, "final offsets committed"),
                Err(e) => {
                    tracing::error!(group = %self.group, error = %e, "final commit failed; finished records will be redelivered")
                }
            }
        }
        beats.cancel();
        if let Some(task) = watching {
            let _ = task.await;
        }
        if let Some(task) = beating {
            let _ = task.await;
            let last = status
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .beat(&identity, MemberState::Stopped);
            // Bounded: with the broker gone, a stop must not wait for the
            // producer's delivery timeout.
            let _ =
                tokio::time::timeout(Duration::from_secs(2), publish_beat(&self.producer, &last))
                    .await;
        }
        self.producer.flush(Duration::from_secs(10));
        consumer.unsubscribe();
        if let Some(e) = failure {
            return Err(e);
        }
        tracing::info!(group = %self.group, processed = summary.processed, dead_lettered = summary.dead_lettered, "consumer stopped");
        Ok(summary)
    }

    /// Adds records that arrive within the dispatch's wait, up to its size
    /// (nothing for one-at-a-time handlers).
    async fn fill_batch(
        &self,
        consumer: &StreamConsumer<RuntimeContext>,
        events: &mut Vec<IncomingEvent>,
    ) {
        let (max_records, max_wait) = self.dispatch.batch_limits();
        let deadline = tokio::time::Instant::now() + max_wait;
        while events.len() < max_records {
            match tokio::time::timeout_at(deadline, consumer.recv()).await {
                Ok(Ok(message)) => events.push(IncomingEvent::from_message(&message)),
                Ok(Err(e)) => {
                    tracing::warn!(group = %self.group, error = %e, "consumer error while filling a batch");
                    return;
                }
                Err(_elapsed) => return,
            }
        }
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
        loop {
            attempt += 1;
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
            if !self
                .after_failure(records, &error, attempt, otel, summary, shutdown)
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
        attempt: u32,
        otel: &mut KausalSpan,
        summary: &mut RunSummary,
        shutdown: &CancellationToken,
    ) -> Option<bool> {
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
        match self.retry.decide(attempt, error.class, sample) {
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
                tracing::warn!(
                    attempt,
                    maxAttempts = self.retry.max_attempts,
                    retryInMs = delay.as_millis() as u64,
                    errorType = %error.error_type,
                    error = %error.message,
                    records = events.len(),
                    "handler failed; retrying"
                );
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
                    tracing::error!(error = %e, retryInMs = delay.as_millis() as u64, "idempotency store unavailable; pausing this consumer");
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

/// Asks the run loop to rejoin the group when a partition of its topics has
/// had no live owner (by heartbeats) for [`ORPHAN_GRACE`]: a broker that does
/// not rebalance after evicting a crashed member leaves that member's
/// partitions unread forever (the embedded broker does, docs/broker.md). One
/// member acts for the group (the smallest live member id).
async fn watch_orphans(
    config: KafkaConfig,
    identity: MemberIdentity,
    topics: Vec<String>,
    status: Arc<Mutex<MemberStatus>>,
    rejoin: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let admin = match crate::admin::Admin::new(&config) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            tracing::warn!(error = %e, "no orphaned-partition watch: cannot create an admin client");
            return;
        }
    };
    let reader = Arc::new(Mutex::new(HeartbeatReader::default()));
    let mut watch = OrphanWatch::new(ORPHAN_GRACE);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(identity.interval) => {}
        }
        let (admin, read_into, topics) = (admin.clone(), reader.clone(), topics.clone());
        let partitions = tokio::task::spawn_blocking(move || {
            read_into
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .catch_up(&admin)?;
            let mut all = Vec::new();
            for topic in &topics {
                for partition in admin.partitions(topic)? {
                    all.push(PartitionRef {
                        topic: topic.clone(),
                        partition,
                    });
                }
            }
            Ok::<_, crate::admin::AdminError>(all)
        })
        .await;
        let partitions = match partitions {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "orphaned-partition check skipped");
                continue;
            }
            Err(_) => continue,
        };
        let now = ids::now_ms();
        let own = status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .assigned
            .clone();
        let reader = reader.lock().unwrap_or_else(|e| e.into_inner());
        let liveness = reader.liveness();
        let orphans = orphaned(
            liveness,
            &identity.group,
            &identity.member,
            &own,
            &partitions,
            now,
        );
        let acting = acts_for_group(liveness, &identity.group, &identity.member, now);
        if watch.observe(acting && !orphans.is_empty(), now) {
            tracing::warn!(
                group = %identity.group,
                orphaned = ?orphans.iter().map(|p| format!("{}/{}", p.topic, p.partition)).collect::<Vec<_>>(),
                graceSeconds = ORPHAN_GRACE.as_secs(),
                "partitions have had no live owner; rejoining the group so they are assigned again"
            );
            rejoin.store(true, Ordering::Relaxed);
        }
    }
}

/// `Err` once a helper task of the run loop (heartbeats, the orphan watch)
/// has died; one that returned by itself (the watch without an admin
/// client) is let go.
fn helper_alive(
    task: &mut Option<tokio::task::JoinHandle<()>>,
    name: &str,
) -> Result<(), RuntimeError> {
    let Some(handle) = task.as_mut().filter(|h| h.is_finished()) else {
        return Ok(());
    };
    let ended = handle.now_or_never();
    *task = None;
    match ended {
        Some(Err(e)) => Err(died(name.to_owned(), e)),
        _ => Ok(()),
    }
}

/// Publishes a heartbeat every interval until `stop`.
async fn beat_until(
    producer: EventProducer,
    identity: MemberIdentity,
    status: Arc<Mutex<MemberStatus>>,
    stop: CancellationToken,
) {
    loop {
        let beat = status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .beat(&identity, MemberState::Running);
        tokio::select! {
            () = stop.cancelled() => return,
            () = publish_beat(&producer, &beat) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(identity.interval) => {}
        }
    }
}

/// One heartbeat; a failure is logged at debug level only: a missed beat is
/// what the monitor reads as "not live", which is then true enough.
async fn publish_beat(producer: &EventProducer, beat: &Heartbeat) {
    let Ok(value) = serde_json::to_vec(beat) else {
        return;
    };
    let headers = OwnedHeaders::new().insert(Header {
        key: kausal_core::headers::EVENT_TYPE,
        value: Some(HEARTBEAT_EVENT_TYPE),
    });
    if let Err(e) = producer
        .publish_raw(
            HEARTBEATS_TOPIC,
            Some(beat.consumer_group.as_bytes()),
            Some(&value),
            headers,
            HEARTBEAT_EVENT_TYPE,
        )
        .await
    {
        tracing::debug!(error = %e, "heartbeat not published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn finished(task: &Option<tokio::task::JoinHandle<()>>) {
        while !task.as_ref().is_some_and(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_helper_task_that_panics_is_noticed_and_named() {
        let mut task = Some(tokio::spawn(async { panic!("heartbeat encoder broke") }));
        finished(&task).await;
        match helper_alive(&mut task, "the heartbeat task") {
            Err(RuntimeError::TaskDied { task, reason }) => {
                assert_eq!(task, "the heartbeat task");
                assert_eq!(reason, "panicked: heartbeat encoder broke");
            }
            other => panic!("expected TaskDied, got {other:?}"),
        }
        assert!(task.is_none());
    }

    #[tokio::test]
    async fn a_helper_task_that_returned_or_still_runs_is_fine() {
        let mut returned = Some(tokio::spawn(async {}));
        finished(&returned).await;
        assert!(helper_alive(&mut returned, "the orphaned-partition watch").is_ok());
        assert!(returned.is_none(), "let go");

        let stop = CancellationToken::new();
        let token = stop.clone();
        let mut running = Some(tokio::spawn(async move { token.cancelled().await }));
        assert!(helper_alive(&mut running, "the heartbeat task").is_ok());
        assert!(running.is_some(), "still watched");
        stop.cancel();
        let mut none = None;
        assert!(helper_alive(&mut none, "no task").is_ok());
    }
}
