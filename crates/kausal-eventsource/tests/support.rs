//! A counter aggregate and per-backend test environments.

use std::fmt;
use std::sync::Arc;

use kausal_eventsource::{Aggregate, AggregateEvent, EventStore, EventStoreMetrics};
use kausal_store::testing::{self, TestDatabase};

use serde::{Deserialize, Serialize};

/// A counter with an optional ceiling.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counter {
    pub value: i64,
    pub ceiling: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum CounterEvent {
    Incremented { by: i64 },
    CeilingSet { ceiling: i64 },
}

impl AggregateEvent for CounterEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Incremented { .. } => "Incremented",
            Self::CeilingSet { .. } => "CeilingSet",
        }
    }
}

/// Runs inside `decide`: lets a test slip another writer in between a
/// load and its save.
#[derive(Clone)]
pub struct Hook(pub Arc<dyn Fn() + Send + Sync>);

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hook")
    }
}

#[derive(Debug, Clone)]
pub enum CounterCommand {
    Increment(i64),
    SetCeiling(i64),
    /// Increment, after running the hook.
    IncrementAfter(i64, Hook),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterError {
    #[error("increments must be positive, not {0}")]
    NotPositive(i64),
    #[error("{value} + {by} would pass the ceiling {ceiling}")]
    OverCeiling { value: i64, by: i64, ceiling: i64 },
}

impl Aggregate for Counter {
    const TYPE: &'static str = "Counter";
    type Event = CounterEvent;
    type Command = CounterCommand;
    type Error = CounterError;

    fn decide(&self, command: &CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
        match command {
            CounterCommand::Increment(by) => self.increment(*by),
            CounterCommand::IncrementAfter(by, hook) => {
                (hook.0)();
                self.increment(*by)
            }
            CounterCommand::SetCeiling(ceiling) if self.ceiling == Some(*ceiling) => Ok(vec![]),
            CounterCommand::SetCeiling(ceiling) => {
                Ok(vec![CounterEvent::CeilingSet { ceiling: *ceiling }])
            }
        }
    }

    fn apply(&mut self, event: &CounterEvent) {
        match event {
            CounterEvent::Incremented { by } => self.value += by,
            CounterEvent::CeilingSet { ceiling } => self.ceiling = Some(*ceiling),
        }
    }
}

impl Counter {
    fn increment(&self, by: i64) -> Result<Vec<CounterEvent>, CounterError> {
        if by <= 0 {
            return Err(CounterError::NotPositive(by));
        }
        if let Some(ceiling) = self.ceiling.filter(|c| self.value + by > *c) {
            return Err(CounterError::OverCeiling {
                value: self.value,
                by,
                ceiling,
            });
        }
        Ok(vec![CounterEvent::Incremented { by }])
    }
}

/// One backend's database, store and registry for one test.
pub struct Env {
    pub label: &'static str,
    pub db: TestDatabase,
    pub events: EventStore,
    pub registry: kausal_telemetry::Metrics,
}

impl Env {
    pub fn is_postgres(&self) -> bool {
        self.label == "postgres"
    }
}

/// A fresh database per configured backend.
pub async fn envs() -> Vec<Env> {
    let mut out = Vec::new();
    for db in testing::databases().await.expect("test databases") {
        out.push(env_of(db).await);
    }
    out
}

/// A fresh PostgreSQL database, for the tests that only mean something
/// there; fails when no server is configured (never skips).
pub async fn postgres_env() -> Env {
    env_of(testing::postgres().await).await
}

async fn env_of(db: TestDatabase) -> Env {
    let store = testing::connect(&db).await.expect(db.label);
    let registry = kausal_telemetry::Metrics::new();
    let events = EventStore::new(store, EventStoreMetrics::register(&registry));
    Env {
        label: db.label,
        db,
        events,
        registry,
    }
}

pub fn correlation(id: &str) -> kausal_core::CorrelationId {
    id.parse().expect("correlation id")
}

pub fn new_event_id() -> kausal_core::EventId {
    kausal_core::EventId::from_uuid(uuid::Uuid::new_v4())
}
