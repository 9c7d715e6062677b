//! Unit tests of your aggregates and projections (seed 003's `MockTracer`):
//! the decided events, the state they lead to, and the spans the
//! repository, the event store and a subscription export, with no database
//! to run and no collector.
//!
//! - [`given`]`(history).when(&command)`: an aggregate's pure functions,
//!   no I/O at all — the events it decides and the state after them.
//! - [`TestEventStore`]: the real event store on a throwaway SQLite file
//!   (removed on drop), with every span of the test's own trace captured
//!   in memory ([`kausal_telemetry::testing::SpanCapture`]). Commands run
//!   through a real [`Repository`], projections through a real
//!   [`Subscription`]: what the test sees is what production exports, not
//!   a mock's idea of it.
//!
//! ```
//! # use kausal_eventsource::{Aggregate, AggregateEvent};
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Debug, Default)]
//! # struct Account { balance: i64 }
//! # #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! # #[serde(tag = "type")]
//! # enum AccountEvent { Deposited { amount: i64 } }
//! # impl AggregateEvent for AccountEvent {
//! #     fn event_type(&self) -> &'static str { "Deposited" }
//! # }
//! # struct Deposit(i64);
//! # #[derive(Debug, thiserror::Error)]
//! # #[error("amounts are positive")]
//! # struct NotPositive;
//! # impl Aggregate for Account {
//! #     const TYPE: &'static str = "Account";
//! #     type Event = AccountEvent;
//! #     type Command = Deposit;
//! #     type Error = NotPositive;
//! #     fn decide(&self, c: &Deposit) -> Result<Vec<AccountEvent>, NotPositive> {
//! #         if c.0 <= 0 { return Err(NotPositive) }
//! #         Ok(vec![AccountEvent::Deposited { amount: c.0 }])
//! #     }
//! #     fn apply(&mut self, e: &AccountEvent) {
//! #         let AccountEvent::Deposited { amount } = e;
//! #         self.balance += amount;
//! #     }
//! # }
//! use kausal_eventsource::names::span;
//! use kausal_eventsource::testing::{TestEventStore, given};
//!
//! // Pure: given, when, then.
//! let decided = given::<Account>([AccountEvent::Deposited { amount: 5 }])
//!     .when(&Deposit(2))
//!     .expect("a deposit is accepted");
//! assert_eq!(decided.events, [AccountEvent::Deposited { amount: 2 }]);
//! assert_eq!(decided.state.balance, 7);
//! assert!(given::<Account>([]).when(&Deposit(0)).is_err());
//!
//! // Through the event store, with the spans it exports.
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = TestEventStore::new().await.expect("a throwaway SQLite event store");
//! store.given::<Account>("a-1", &[AccountEvent::Deposited { amount: 5 }]).await.unwrap();
//! let executed = store
//!     .repository::<Account>()
//!     .execute("a-1", &Deposit(2), &store.context())
//!     .await
//!     .expect("executed");
//! assert_eq!(executed.state.balance, 7);
//! let spans = store.spans();
//! let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
//! assert!(names.contains(&span::REPOSITORY_SAVE), "{names:?}");
//! assert!(names.contains(&span::APPEND_EVENTS), "{names:?}");
//! # });
//! ```

use std::sync::{Arc, Mutex};

use kausal_core::{CorrelationId, TraceParent};
use kausal_store::testing::TestDatabase;
use kausal_telemetry::Metrics;
use kausal_telemetry::ids::{new_span_id, new_trace_id};
use kausal_telemetry::testing::{CapturedSpan, SpanCapture};

use crate::{
    Aggregate, Batch, BatchHandler, CommandContext, EventStore, EventStoreMetrics, RecordedEvent,
    Repository, Result, Subscription,
};

/// An aggregate after its history, waiting for a command: see [`given`].
#[derive(Debug)]
pub struct Given<A: Aggregate> {
    state: A,
}

/// What a command decided: the new events and the state after them.
#[derive(Debug)]
pub struct Decided<A: Aggregate> {
    pub events: Vec<A::Event>,
    pub state: A,
}

/// The aggregate folded from `history`, ready for [`Given::when`].
pub fn given<A: Aggregate>(history: impl IntoIterator<Item = A::Event>) -> Given<A> {
    let mut state = A::default();
    for event in history {
        state.apply(&event);
    }
    Given { state }
}

impl<A: Aggregate> Given<A> {
    /// The state before the command.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Decides `command` and applies what it decided; the aggregate's
    /// refusal is the error.
    pub fn when(mut self, command: &A::Command) -> std::result::Result<Decided<A>, A::Error> {
        let events = self.state.decide(command)?;
        for event in &events {
            self.state.apply(event);
        }
        Ok(Decided {
            events,
            state: self.state,
        })
    }
}

/// The event store on a throwaway SQLite file, and the spans of one test.
///
/// Spans are captured process-wide (tests of one binary run in parallel),
/// so [`spans`](Self::spans) keeps only this store's own: the trace of
/// [`context`](Self::context) and the traces of the batches
/// [`project`](Self::project) handed over.
#[derive(Debug)]
pub struct TestEventStore {
    events: EventStore,
    metrics: Metrics,
    capture: SpanCapture,
    caller: TraceParent,
    correlation_id: CorrelationId,
    batch_traces: Arc<Mutex<Vec<String>>>,
    _database: TestDatabase,
}

impl TestEventStore {
    /// A fresh event store (SQLite file in a temporary directory, every
    /// migration applied) with its metrics in a registry of its own, and
    /// span capture installed.
    pub async fn new() -> Result<Self> {
        let capture = SpanCapture::install();
        let database = kausal_store::testing::sqlite()?;
        let store = kausal_store::testing::connect(&database).await?;
        let metrics = Metrics::new();
        let events = EventStore::new(store, EventStoreMetrics::register(&metrics));
        let trace_id = new_trace_id();
        Ok(Self {
            events,
            metrics,
            capture,
            caller: TraceParent::new(trace_id, new_span_id(), true),
            correlation_id: format!("test-{trace_id}")
                .parse()
                .expect("a hex trace id is a valid correlation id"),
            batch_traces: Arc::default(),
            _database: database,
        })
    }

    /// The traced event store, to build what your code needs
    /// (repositories, subscriptions, an outbox relay).
    pub fn events(&self) -> &EventStore {
        &self.events
    }

    /// The store's metrics (append duration, conflicts, subscription lag)
    /// in the Prometheus text format.
    pub fn metrics(&self) -> String {
        self.metrics.encode()
    }

    /// A repository of `A` on this store.
    pub fn repository<A: Aggregate>(&self) -> Repository<A> {
        Repository::new(self.events.clone())
    }

    /// A command context whose spans are captured: this test's correlation
    /// id, and a caller span of this test's trace as the parent.
    pub fn context(&self) -> CommandContext {
        CommandContext::new(self.correlation_id.clone()).traced(self.caller)
    }

    /// The caller span the repository's spans hang under.
    pub fn caller(&self) -> TraceParent {
        self.caller
    }

    /// Appends `history` to the aggregate `id` as setup: outside this
    /// test's trace, so [`spans`](Self::spans) shows only what the test
    /// did next.
    pub async fn given<A: Aggregate>(&self, id: &str, history: &[A::Event]) -> Result<()> {
        let repository = self.repository::<A>();
        let (_, version) = repository.load(id, None).await?;
        let setup = CommandContext::new(self.correlation_id.clone());
        repository.save(id, version, history, &setup).await?;
        Ok(())
    }

    /// Every stored event, in the global order.
    pub async fn recorded(&self) -> Result<Vec<RecordedEvent>> {
        kausal_store::testing::settle_read_all(self.events.store()).await;
        let mut all = Vec::new();
        let mut after = crate::GlobalCursor::START;
        loop {
            let page = self.events.store().read_all(after, 1_000).await?;
            let Some(last) = page.last().map(RecordedEvent::cursor) else {
                return Ok(all);
            };
            after = last;
            all.extend(page);
        }
    }

    /// Runs the subscription `name` over everything stored so far, batch
    /// by batch, through `handler` — a projection's whole catch-up, with
    /// the poll, process and checkpoint spans a running subscription
    /// exports. Returns how many events it handled; a handler failure
    /// stops it with the error and leaves the checkpoint before the batch.
    pub async fn project<H: BatchHandler>(&self, name: &str, handler: &mut H) -> Result<usize> {
        kausal_store::testing::settle_read_all(self.events.store()).await;
        let mut subscription = Subscription::new(name, self.events.clone());
        let mut seen = Seen {
            inner: handler,
            traces: self.batch_traces.clone(),
        };
        let mut handled = 0;
        loop {
            match subscription.poll_once(&mut seen).await? {
                0 => return Ok(handled),
                n => handled += n,
            }
        }
    }

    /// The spans of this test, in the order they ended: those under
    /// [`context`](Self::context) and those of [`project`](Self::project)'s
    /// batches.
    pub fn spans(&self) -> Vec<CapturedSpan> {
        let caller = self.caller.trace_id.to_string();
        let batches = self
            .batch_traces
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.capture
            .spans()
            .into_iter()
            .filter(|s| s.trace_id == caller || batches.contains(&s.trace_id))
            .collect()
    }
}

/// A handler that notes each batch's trace before handing it over.
struct Seen<'a, H> {
    inner: &'a mut H,
    traces: Arc<Mutex<Vec<String>>>,
}

impl<H: BatchHandler> BatchHandler for Seen<'_, H> {
    async fn handle(&mut self, batch: Batch) -> std::result::Result<(), kausal_core::HandlerError> {
        let trace = batch.trace.trace_id.to_string();
        {
            let mut traces = self.traces.lock().unwrap_or_else(|e| e.into_inner());
            if !traces.contains(&trace) {
                traces.push(trace);
            }
        }
        self.inner.handle(batch).await
    }
}
