//! The transactional outbox relay (issue 14): publishes to Kafka the events
//! that event store appends wrote outbox rows for
//! (`kausal_store::event_store`, in the append's transaction), and marks
//! them sent once the broker has them.
//!
//! | module | what |
//! |---|---|
//! | [`relay`] | [`Relay`], [`RelayConfig`], [`RelaySummary`] |
//! | [`metrics`] | [`OutboxMetrics`]: relay latency, backlog |
//! | [`names`] | every span, attribute, metric and log field name, once |
//!
//! # What it guarantees
//!
//! **Nothing is marked sent before the broker acknowledged it.** Each pass
//! reads a batch of pending rows by position, enqueues them all on the
//! [`kausal_kafka::EventProducer`] (idempotent, `acks=all`), awaits the
//! acknowledgements in order and marks sent only the acknowledged ones. An
//! event whose publish failed, or whose acknowledgement did not come within
//! [`RelayConfig::publish_timeout`], stays pending and is published again
//! by a later pass, after a backoff (200 ms doubling to 5 s by default).
//!
//! **At least once, so consumers dedupe by event id.** An event can reach
//! the topic more than once: when the broker stored it but the relay did
//! not learn so (a timed-out acknowledgement, a stop in the middle of a
//! batch, marking failed in the database), when a later event of a stream
//! was acknowledged after an earlier one of the same stream failed (the
//! later one is not marked and goes again), and when a stalled relay's
//! lease was taken over. Every copy carries the same `event-id` header (the
//! stored event's id), which Kausal's consumer runtime deduplicates on;
//! other consumers must do the same.
//!
//! **Order per stream.** Rows are read by position, which within a stream
//! is version order, and published with the outbox row's key, or the
//! stream id when the row has none, so a stream's events share a
//! partition (give all of a stream's events the same key). Each stream's
//! events are marked sent as a prefix: once one failed, the stream's later
//! events in the batch are neither enqueued nor marked, and go out after
//! it on the next pass. A consumer that skips duplicates therefore sees
//! each stream in version order. One gap: the producer pipelines a batch,
//! so if the broker refuses one record of a partition but accepts a later
//! one (the idempotent producer fails a partition's later records together
//! with a timed-out one, so this takes a per-record refusal), the later
//! event lands before the earlier one's retry.
//!
//! **On failure.** A refused or timed-out publish is a WARN with the event
//! id, the topic and the error, and a failed `publishEvent` span; the pass
//! backs off and retries. A record the broker refuses for good (larger than
//! the topic allows) blocks its stream, with a WARN each pass, until the
//! topic or the event is fixed: skipping it would break the stream's order.
//! Database errors are logged and retried the same way; a running relay
//! never gives up.
//!
//! **Why a lease.** Two relays on one store (two replicas of a service, or
//! an old process still stopping while its successor starts) would read the
//! same pending rows and publish everything twice, interleaved. Relays
//! sharing a [`RelayConfig::lease_name`] take turns through a lease row
//! (`kausal_store::outbox_lease`): only the holder publishes; the others
//! poll and take over when it releases the lease (on stop) or lets it
//! expire (crash). The holder renews it before every pass, and a batch is
//! bounded by `publish_timeout`, which must be at most half of
//! [`RelayConfig::lease_duration`], so a live relay's lease does not
//! expire under it. The lease is not a fence: a relay paused past its
//! lease may still publish its batch while the next holder publishes the
//! same rows (duplicates, never a loss); and expiry is judged by the
//! relays' clocks, which must agree to well within the lease.
//!
//! **Stopping.** [`Relay::run`] returns when its
//! `tokio_util::sync::CancellationToken` is cancelled: acknowledgements
//! that already arrived are marked, the rest of the batch is abandoned
//! (left pending, possibly already on the topic), and the lease is
//! released so that a standby relay takes over at once.
//!
//! # Traces and metrics
//!
//! Each batch is a `processOutbox` span (new trace; `eventsource.event.count`,
//! `db.system`). Each event is a `publishEvent` span whose parent is the
//! event's stored `traceparent` (the span that appended it, so the
//! appending trace continues), linked to its `processOutbox` span; the
//! producer's `send <topic>` span is its child, and the record's
//! `traceparent` header names that send span, so consumers continue the
//! same trace. The record also carries the stored event's `event-id`,
//! `correlation-id` and `causation-id`. Metrics, registered in the
//! service's `kausal_telemetry::Metrics`: `outbox_relay_latency_seconds`
//! (row created to acknowledgement), `outbox_pending` and
//! `outbox_oldest_age_seconds` (refreshed every pass).
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use kausal_outbox::{OutboxMetrics, Relay, RelayConfig};
//!
//! let metrics = kausal_telemetry::Metrics::new();
//! let store = kausal_store::Store::connect("sqlite://ledger.db").await?;
//! let kafka = kausal_kafka::KafkaConfig::new("127.0.0.1:9092");
//! let producer = kausal_kafka::EventProducer::new(&kafka, "ledger-outbox", metrics.clone())?;
//! let relay = Relay::new(
//!     store,
//!     producer,
//!     OutboxMetrics::register(&metrics),
//!     RelayConfig::new("ledger"),
//! )?;
//! let stop = tokio_util::sync::CancellationToken::new();
//! let summary = relay.run(stop).await;
//! # let _ = summary;
//! # Ok(())
//! # }
//! ```

mod error;
pub mod metrics;
pub mod names;
pub mod relay;
mod trace;

pub use error::{Error, Result};
pub use metrics::OutboxMetrics;
pub use relay::{Relay, RelayConfig, RelaySummary};
