//! Kafka adapters over `rdkafka`: the idempotent event producer, the
//! consumer runtime around a [`Handler`], and admin queries that work on the
//! embedded broker and on real Kafka alike.
//!
//! The runtime's guarantees (DESIGN §5):
//! - offsets are committed only after the handler succeeded (and what it
//!   emitted was acknowledged by the broker) or the record was dead-lettered;
//! - retryable failures are retried with backoff, fatal ones and exhausted
//!   ones go to `<topic>.dlq` with the original key, value and headers; a
//!   handler's outage ([`ErrorClass::Unavailable`]) is waited out with the
//!   partition paused, never dead-lettered;
//! - events emitted by a handler inherit the correlation id and trace, and
//!   name the handled event as their cause;
//! - a redelivered event already handled by the group is skipped when an
//!   idempotency store is configured;
//! - records of one partition are handled in order, partitions concurrently
//!   (a worker each, [`worker`]); the poll thread never stops polling: a
//!   partition whose worker is behind is paused, not the consumer
//!   ([`poll`]).

pub mod admin;
pub mod batch;
pub mod browse;
pub mod config;
pub mod event;
pub mod group;
pub mod heartbeat;
mod member;
mod poll;
pub mod producer;
pub mod receipt;
pub mod runtime;
mod settle;
pub mod testing;
mod worker;

/// Topics whose names start with this are Kausal's own bookkeeping
/// (`kausal.receipts`, `kausal.consumers`): not traced.
pub const INTERNAL_TOPIC_PREFIX: &str = "kausal.";

pub use batch::{BatchEmitter, BatchHandler, BatchLimits, Batched};
pub use config::KafkaConfig;
pub use event::{Emitter, EventSpec, IncomingEvent, OutgoingEvent};
pub use kausal_core::{ErrorClass, Event, HandlerError, RetryPolicy};
/// Fresh ids and the clock (kept in `kausal-telemetry`, shared with the
/// event store).
pub use kausal_telemetry::ids;
pub use producer::{Delivery, EventProducer, PublishError, Sending};
pub use runtime::{
    ConsumerRuntime, CorrelationPolicy, Dispatch, Handler, Outcome, RunSummary, RuntimeError,
    Single,
};
pub use settle::panic_message;
