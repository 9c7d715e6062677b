//! Event sourcing on Kausal's event store (`kausal_store::event_store`):
//! aggregates decided from commands and folded from their events, a
//! repository that loads and saves them under optimistic concurrency, and
//! catch-up subscriptions with stored checkpoints. Every operation is
//! traced with seed 003's span names and attributes and measured in the
//! service's metric registry. Nothing here talks to Kafka: events leave
//! through the outbox rows an append writes, published by a relay.
//!
//! | module | what |
//! |---|---|
//! | [`aggregate`] | the [`Aggregate`] trait: pure `decide` and `apply` |
//! | [`repository`] | [`Repository`]: `load`, `save`, `exists`, `execute` with conflict retries |
//! | [`subscription`] | [`Subscription`]: catch-up, at-least-once, checkpoint after the handler |
//! | [`store`] | [`EventStore`]: the store's appends (one stream, or several in one transaction) and reads, traced and measured |
//! | [`idempotency`] | [`IdempotencyKeys`]: `Idempotency-Key` for requests whose effect is outside the store |
//! | [`metrics`] | [`EventStoreMetrics`]: append duration, conflicts, subscription lag |
//! | [`names`] | every span, attribute and metric name, once |
//! | [`testing`] | unit tests of aggregates and projections: given/when, a throwaway store, captured spans |
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use kausal_eventsource::{EventStore, EventStoreMetrics};
//!
//! let metrics = kausal_telemetry::Metrics::new();
//! let store = kausal_store::Store::connect("sqlite://ledger.db").await?;
//! let events = EventStore::new(store, EventStoreMetrics::register(&metrics));
//! # let _ = events;
//! # Ok(())
//! # }
//! ```

pub mod aggregate;
mod error;
pub mod idempotency;
pub mod metrics;
pub mod names;
pub mod repository;
mod state_cache;
pub mod store;
pub mod subscription;
pub mod testing;
mod trace;

pub use aggregate::{Aggregate, AggregateEvent};
pub use error::{Error, ExecuteError, Result};
pub use idempotency::{Claim, IdempotencyKey, IdempotencyKeys, StoredAnswer};
pub use metrics::EventStoreMetrics;
pub use repository::{CommandContext, Executed, Repository};
pub use store::{EventStore, StreamEvents, StreamName};
pub use subscription::{Batch, BatchHandler, Subscription};

/// The store's types that appear in this crate's API.
pub use kausal_store::{
    Appended, Direction, ExpectedVersion, GlobalCursor, OutboxTarget, RecordedEvent,
};
