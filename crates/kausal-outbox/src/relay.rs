//! [`Relay`]: the loop that publishes the outbox. See the crate docs for
//! what it guarantees; this module is how.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kausal_core::TraceParent;
use kausal_core::headers::{CONTENT_TYPE_JSON, EventHeaders};
use kausal_kafka::{EventProducer, OutgoingEvent, PublishError};
use kausal_store::{Backend, PendingOutbox, Store, StoreError};
use kausal_telemetry::ids;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::metrics::OutboxMetrics;
use crate::trace::Traced;

/// How a relay runs. [`RelayConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The `source-service` header of every published event.
    pub source_service: String,
    /// The lease relays of one outbox share: of the relays using the same
    /// name on one store, one publishes at a time.
    pub lease_name: String,
    /// This relay's name in the lease; unique per running relay (the
    /// default joins the service, the process id and a random part).
    pub holder: String,
    /// Outbox rows read and published per batch (at least 1).
    pub batch_size: usize,
    /// How long an idle relay (nothing pending, or the lease held by
    /// another relay) waits before it looks again, unless its store
    /// commits outbox rows first (appends in the relay's own process wake
    /// it at once; other processes' are found by this poll).
    pub poll_interval: Duration,
    /// How long a taken lease holds without renewal. It is renewed before
    /// every batch and every idle poll, and must outlast the longest batch:
    /// at least twice `publish_timeout`.
    pub lease_duration: Duration,
    /// How long one batch waits for the broker's acknowledgements, from its
    /// first enqueue; events not acknowledged by then stay pending and are
    /// published again by the next pass.
    pub publish_timeout: Duration,
    /// The wait after a pass in which a publish failed or the database did
    /// not answer; doubled after each such pass, up to `max_backoff`, and
    /// reset by a pass without failures.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl RelayConfig {
    /// The defaults for a relay publishing on behalf of `source_service`:
    /// batches of 100, a 200 ms poll, a 10 s lease, 5 s for a batch's
    /// acknowledgements, backoff from 200 ms to 5 s.
    pub fn new(source_service: impl Into<String>) -> Self {
        let source_service = source_service.into();
        Self {
            lease_name: "outbox-relay".to_owned(),
            holder: format!(
                "{source_service}-{}-{}",
                std::process::id(),
                ids::new_span_id()
            ),
            source_service,
            batch_size: 100,
            poll_interval: Duration::from_millis(200),
            lease_duration: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(5),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }

    fn validate(&self) -> Result<()> {
        let problem = if self.batch_size == 0 {
            "batch_size is 0: a relay must read at least one row per batch".to_owned()
        } else if self.poll_interval.is_zero() {
            "poll_interval is 0: an idle relay would query the database in a busy loop; \
             use e.g. 200 ms"
                .to_owned()
        } else if self.publish_timeout.is_zero() {
            "publish_timeout is 0: no acknowledgement could ever arrive in time".to_owned()
        } else if self.lease_duration < self.publish_timeout * 2 {
            format!(
                "lease_duration ({:?}) is shorter than twice publish_timeout ({:?}): a batch \
                 could outlast the lease it runs under and let a second relay publish the same \
                 events; raise lease_duration or lower publish_timeout",
                self.lease_duration, self.publish_timeout
            )
        } else if self.initial_backoff.is_zero() || self.max_backoff < self.initial_backoff {
            "backoff: initial_backoff must be above 0 and at most max_backoff".to_owned()
        } else if self.holder.is_empty() || self.lease_name.is_empty() {
            "lease_name and holder must not be empty".to_owned()
        } else {
            return Ok(());
        };
        Err(Error::Config(problem))
    }
}

/// What a relay did until it stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelaySummary {
    /// Batches read and published (passes that found rows pending).
    pub batches: u64,
    /// Events acknowledged by the broker and marked sent.
    pub published: u64,
    /// Publishes the producer or the broker refused (they stay pending).
    pub failed: u64,
    /// Events enqueued but not acknowledged before the batch's
    /// `publish_timeout` or the stop (they stay pending).
    pub abandoned: u64,
    /// Passes that found the lease held by another relay.
    pub lease_refused: u64,
}

/// Publishes the store's outbox through a producer until stopped. Cheap to
/// clone (clones share the store's pool, the producer and the metrics),
/// but each running relay needs its own `holder`.
#[derive(Debug, Clone)]
pub struct Relay {
    store: Store,
    producer: EventProducer,
    metrics: OutboxMetrics,
    config: RelayConfig,
}

/// How one pass ended, and so how long the loop waits before the next.
enum Pass {
    /// Everything read was published: go on at once.
    Busy,
    /// Nothing pending, or another relay holds the lease: poll later.
    Idle,
    /// A publish or the database failed: back off.
    Failed,
}

/// What one batch did.
#[derive(Debug, Default)]
struct Batch {
    read: usize,
    marked: u64,
    failed: u64,
    abandoned: u64,
}

/// The broker's answer for one enqueued event, as far as the batch waited.
enum Answer {
    Acknowledged,
    Refused(PublishError),
    TimedOut,
    Stopped,
}

impl Relay {
    /// `metrics` from [`OutboxMetrics::register`], once per registry.
    /// Fails when `config` is inconsistent (the error says what to change).
    pub fn new(
        store: Store,
        producer: EventProducer,
        metrics: OutboxMetrics,
        config: RelayConfig,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            store,
            producer,
            metrics,
            config,
        })
    }

    pub fn config(&self) -> &RelayConfig {
        &self.config
    }

    /// Publishes until `stop` is cancelled, then releases the lease and
    /// returns what it did. Failures (broker, database) are logged and
    /// retried with backoff, never returned: a relay outlives outages.
    /// On a stop in the middle of a batch, acknowledgements that already
    /// arrived are marked and the rest of the batch is abandoned (left
    /// pending for the next run).
    pub async fn run(&self, stop: CancellationToken) -> RelaySummary {
        let mut summary = RelaySummary::default();
        let mut backoff = self.config.initial_backoff;
        let mut held = false;
        while !stop.is_cancelled() {
            let pass = self.pass(&stop, &mut held, &mut summary).await;
            let wait = match pass {
                Pass::Busy => {
                    backoff = self.config.initial_backoff;
                    Duration::ZERO
                }
                Pass::Idle => {
                    backoff = self.config.initial_backoff;
                    self.config.poll_interval
                }
                Pass::Failed => {
                    let wait = backoff;
                    backoff = (backoff * 2).min(self.config.max_backoff);
                    wait
                }
            };
            self.refresh_backlog().await;
            if !wait.is_zero() {
                // Idle, a commit of outbox rows in this process ends the
                // wait: its events leave at once, not a poll later. A
                // backoff is sat out in full.
                let idle = matches!(pass, Pass::Idle);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(wait) => {}
                    () = self.store.outbox_written(), if idle => {}
                }
            }
        }
        if held {
            self.release().await;
        }
        summary
    }

    /// One pass: take or renew the lease, then publish one batch.
    async fn pass(
        &self,
        stop: &CancellationToken,
        held: &mut bool,
        summary: &mut RelaySummary,
    ) -> Pass {
        let config = &self.config;
        let lease_ms = i64::try_from(config.lease_duration.as_millis()).unwrap_or(i64::MAX);
        match self
            .store
            .outbox_lease_acquire(&config.lease_name, &config.holder, now_ms(), lease_ms)
            .await
        {
            Ok(true) if !*held => {
                *held = true;
                tracing::info!(
                    lease = %config.lease_name,
                    holder = %config.holder,
                    "took the outbox lease; publishing"
                );
            }
            Ok(true) => {}
            Ok(false) => {
                if std::mem::take(held) {
                    tracing::warn!(
                        lease = %config.lease_name,
                        holder = %config.holder,
                        "another relay took the outbox lease over (ours expired: a pass outlasted \
                         lease_duration, or the clocks of the relays' hosts disagree); waiting"
                    );
                }
                summary.lease_refused += 1;
                return Pass::Idle;
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    lease = %config.lease_name,
                    "cannot take or renew the outbox lease; publishing nothing until the \
                     database answers"
                );
                return Pass::Failed;
            }
        }
        match self.publish_batch(stop).await {
            Ok(batch) => {
                summary.batches += u64::from(batch.read > 0);
                summary.published += batch.marked;
                summary.failed += batch.failed;
                summary.abandoned += batch.abandoned;
                if batch.read == 0 {
                    Pass::Idle
                } else if batch.failed + batch.abandoned > 0 {
                    Pass::Failed
                } else {
                    Pass::Busy
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the outbox batch failed in the database; nothing acknowledged is lost \
                     (unmarked events are published again); retrying with backoff"
                );
                Pass::Failed
            }
        }
    }

    /// Reads one batch, publishes it in position order, and marks sent the
    /// acknowledged events of each stream up to its first failure.
    async fn publish_batch(&self, stop: &CancellationToken) -> Result<Batch, StoreError> {
        let limit = i64::try_from(self.config.batch_size).unwrap_or(i64::MAX);
        let rows = self.store.outbox_pending(limit).await?;
        if rows.is_empty() {
            return Ok(Batch::default());
        }
        let mut traced = Traced::batch(self.db_system(), rows.len());
        let log = traced.log_span().clone();
        let result = self
            .publish_rows(&rows, traced.context(), stop)
            .instrument(log)
            .await;
        if let Err(e) = &result {
            traced.fail("StoreError", &e.to_string());
        }
        traced.end();
        result
    }

    async fn publish_rows(
        &self,
        rows: &[PendingOutbox],
        batch: TraceParent,
        stop: &CancellationToken,
    ) -> Result<Batch, StoreError> {
        let deadline = Instant::now() + self.config.publish_timeout;
        // Streams with an event that was not acknowledged in this batch:
        // their later events are neither enqueued nor marked, so that a
        // stream's events are marked sent as a prefix, in order.
        let mut blocked: HashSet<&str> = HashSet::new();
        let mut outcome = Batch {
            read: rows.len(),
            ..Batch::default()
        };

        // Enqueue everything first (the producer pipelines the records and
        // keeps each partition in enqueue order), then take the answers in
        // the same order.
        let mut in_flight = Vec::with_capacity(rows.len());
        for row in rows {
            let stream = row.event.stream_id.as_str();
            if blocked.contains(stream) {
                continue;
            }
            let mut span = Traced::publish(&row.event, &row.topic, batch);
            let event = outgoing(row, span.context(), &self.config.source_service);
            let enqueued = tokio::select! {
                biased;
                r = tokio::time::timeout_at(deadline, self.producer.enqueue(&event)) => r,
                () = stop.cancelled() => {
                    abandon(&mut span, "the relay stopped before the event was enqueued");
                    span.end();
                    outcome.abandoned += 1;
                    break;
                }
            };
            match enqueued {
                Ok(Ok(sending)) => in_flight.push((row, span, sending)),
                Ok(Err(e)) => {
                    refused(row, &mut span, &e);
                    span.end();
                    outcome.failed += 1;
                    blocked.insert(stream);
                }
                Err(_elapsed) => {
                    abandon(
                        &mut span,
                        "the producer's queue stayed full past publish_timeout",
                    );
                    span.end();
                    outcome.abandoned += 1;
                    blocked.insert(stream);
                }
            }
        }

        let mut acknowledged = Vec::with_capacity(in_flight.len());
        for (row, mut span, sending) in in_flight {
            let stream = row.event.stream_id.as_str();
            // Biased: an answer that has already arrived counts even after
            // the deadline or the stop (timeout_at polls it once first).
            let answer = tokio::select! {
                biased;
                r = tokio::time::timeout_at(deadline, sending.acknowledged()) => match r {
                    Ok(Ok(_delivery)) => Answer::Acknowledged,
                    Ok(Err(e)) => Answer::Refused(e),
                    Err(_elapsed) => Answer::TimedOut,
                },
                () = stop.cancelled() => Answer::Stopped,
            };
            match answer {
                Answer::Acknowledged if !blocked.contains(stream) => {
                    self.metrics
                        .observe_latency(&row.topic, row.created_at_ms, now_ms());
                    acknowledged.push(row.event.position);
                }
                // Published after an event of its stream that was not: it
                // stays pending and goes out again after that one.
                Answer::Acknowledged => {}
                Answer::Refused(e) => {
                    refused(row, &mut span, &e);
                    outcome.failed += 1;
                    blocked.insert(stream);
                }
                Answer::TimedOut => {
                    let message = "no acknowledgement within publish_timeout";
                    span.log_span().in_scope(|| {
                        tracing::warn!(
                            eventId = %row.event.event_id,
                            topic = %row.topic,
                            error = message,
                            "publishing the outbox event timed out; it stays pending and is \
                             retried with backoff (is the broker reachable?)"
                        );
                    });
                    abandon(&mut span, message);
                    outcome.abandoned += 1;
                    blocked.insert(stream);
                }
                Answer::Stopped => {
                    abandon(&mut span, "the relay stopped before the broker answered");
                    outcome.abandoned += 1;
                    blocked.insert(stream);
                }
            }
            span.end();
        }

        if !acknowledged.is_empty() {
            outcome.marked = match self.store.outbox_mark_sent(&acknowledged, now_ms()).await {
                Ok(marked) => marked,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        events = acknowledged.len(),
                        "the broker acknowledged these outbox events but marking them sent \
                         failed; they will be published again (consumers dedupe by event id)"
                    );
                    return Err(e);
                }
            };
        }
        Ok(outcome)
    }

    /// Sets the backlog gauges from the store (a failure leaves them as
    /// they were: stale rather than wrong).
    async fn refresh_backlog(&self) {
        match self.store.outbox_stats(now_ms()).await {
            Ok(stats) => self.metrics.set_backlog(stats),
            Err(e) => tracing::debug!(error = %e, "cannot count the outbox backlog"),
        }
    }

    async fn release(&self) {
        let config = &self.config;
        match self
            .store
            .outbox_lease_release(&config.lease_name, &config.holder)
            .await
        {
            Ok(_) => tracing::info!(
                lease = %config.lease_name,
                holder = %config.holder,
                "released the outbox lease"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                lease = %config.lease_name,
                "cannot release the outbox lease; another relay takes it over once it expires"
            ),
        }
    }

    /// The `db.system` attribute: `sqlite` or `postgresql`.
    fn db_system(&self) -> &'static str {
        match self.store.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }
}

/// Logs a refused publish (WARN) and fails its span.
fn refused(row: &PendingOutbox, span: &mut Traced, error: &PublishError) {
    span.log_span().in_scope(|| {
        tracing::warn!(
            eventId = %row.event.event_id,
            topic = %row.topic,
            error = %error,
            errorType = %error.error_type(),
            "publishing the outbox event failed; it stays pending and is retried with \
             backoff, and the later events of its stream wait for it"
        );
    });
    span.fail(&error.error_type(), &error.to_string());
}

/// Marks an event's span as abandoned: not published as far as the relay
/// knows, left pending for the next pass.
fn abandon(span: &mut Traced, why: &str) {
    span.fail("Abandoned", why);
}

/// The Kafka record of an outbox row: the stored event's ids, payload and
/// type; the record key is the row's key, or the stream id when it has
/// none (so that a stream's events share a partition and keep their
/// order). The `traceparent` header names the producer's `send` span, a
/// child of the `publishEvent` span `publish`.
fn outgoing(row: &PendingOutbox, publish: TraceParent, source_service: &str) -> OutgoingEvent {
    let event = &row.event;
    let key = row.key.as_deref().unwrap_or(&event.stream_id);
    OutgoingEvent {
        topic: row.topic.clone(),
        key: Some(key.as_bytes().to_vec()),
        payload: event.payload.as_bytes().to_vec(),
        headers: EventHeaders {
            event_id: event.event_id,
            event_type: Some(event.event_type.clone()),
            event_version: Some(event.event_version),
            correlation_id: event.correlation_id.clone(),
            causation_id: event.causation_id,
            source_service: Some(source_service.to_owned()),
            content_type: Some(CONTENT_TYPE_JSON.to_owned()),
            traceparent: Some(publish.child(ids::new_span_id())),
            tracestate: None,
            baggage: None,
        },
        extra_headers: Vec::new(),
        parent_span: Some(publish.parent_id),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inconsistent_configs_are_refused_with_what_to_change() {
        assert!(RelayConfig::new("svc").validate().is_ok());
        type Change = fn(&mut RelayConfig);
        let cases: [(Change, &str); 4] = [
            (|c| c.batch_size = 0, "batch_size"),
            (|c| c.poll_interval = Duration::ZERO, "busy loop"),
            (
                |c| c.lease_duration = Duration::from_secs(9),
                "raise lease_duration or lower publish_timeout",
            ),
            (|c| c.max_backoff = Duration::from_millis(1), "backoff"),
        ];
        for (change, needle) in cases {
            let mut config = RelayConfig::new("svc");
            change(&mut config);
            let error = config.validate().expect_err(needle).to_string();
            assert!(error.contains(needle), "{error}");
        }
    }

    fn pending(stream: &str, key: Option<&str>) -> PendingOutbox {
        PendingOutbox {
            topic: "ledger".to_owned(),
            key: key.map(str::to_owned),
            created_at_ms: 1_000,
            event: kausal_store::RecordedEvent {
                position: 7,
                tx_id: 0,
                stream_id: stream.to_owned(),
                stream_version: 3,
                event_id: ids::new_event_id(),
                event_type: "Deposited".to_owned(),
                event_version: 2,
                payload: r#"{"amount":5}"#.to_owned(),
                correlation_id: "corr-7".parse().expect("correlation id"),
                causation_id: Some(ids::new_event_id()),
                traceparent: Some(TraceParent::new(
                    ids::new_trace_id(),
                    ids::new_span_id(),
                    true,
                )),
                recorded_at_ms: 1_000,
            },
        }
    }

    #[test]
    fn a_record_carries_the_stored_ids_and_a_send_span_under_publish_event() {
        let row = pending("Account-1", None);
        let publish = row
            .event
            .traceparent
            .expect("traceparent")
            .child(ids::new_span_id());
        let record = outgoing(&row, publish, "ledger-service");
        let headers = &record.headers;
        assert_eq!(headers.event_id, row.event.event_id);
        assert_eq!(headers.correlation_id, row.event.correlation_id);
        assert_eq!(headers.causation_id, row.event.causation_id);
        assert_eq!(headers.event_type.as_deref(), Some("Deposited"));
        assert_eq!(headers.event_version, Some(2));
        assert_eq!(headers.source_service.as_deref(), Some("ledger-service"));
        let send = headers.traceparent.expect("traceparent header");
        assert_eq!(send.trace_id, publish.trace_id, "one trace");
        assert_ne!(send.parent_id, publish.parent_id, "the send span's own id");
        assert_eq!(record.parent_span, Some(publish.parent_id));
        // No key: the stream id keeps the stream in one partition.
        assert_eq!(record.key.as_deref(), Some(&b"Account-1"[..]));
        let keyed = outgoing(&pending("Account-1", Some("acct")), publish, "s");
        assert_eq!(keyed.key.as_deref(), Some(&b"acct"[..]));
    }

    #[test]
    fn a_refused_publish_is_a_warn_with_the_event_id_topic_and_error() {
        use crate::names::field;
        let row = pending("Account-1", None);
        let batch = TraceParent::new(ids::new_trace_id(), ids::new_span_id(), true);
        // Capture first: a span made without a subscriber records nothing.
        let logs = kausal_telemetry::testing::LogCapture::start("ledger-service");
        let mut span = Traced::publish(&row.event, &row.topic, batch);
        let error = PublishError::Delivery {
            topic: row.topic.clone(),
            source: rdkafka::error::KafkaError::Canceled,
        };
        refused(&row, &mut span, &error);
        span.end();
        let lines = logs.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        assert_eq!(line[field::EVENT_ID], row.event.event_id.to_string());
        assert_eq!(line[field::TOPIC], "ledger");
        assert_eq!(line[field::ERROR], error.to_string());
        assert_eq!(line[field::ERROR_TYPE], error.error_type());
        // Inside the publishEvent span: the stored trace continues.
        let stored = row.event.traceparent.expect("traceparent");
        assert_eq!(line[field::TRACE_ID], stored.trace_id.to_string());
    }

    #[test]
    fn holders_differ_per_relay() {
        assert_ne!(
            RelayConfig::new("svc").holder,
            RelayConfig::new("svc").holder
        );
    }
}
