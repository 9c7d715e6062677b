//! [`Repository`]: loads an [`Aggregate`] by folding its stream, saves the
//! events it decided under optimistic concurrency, and runs a command end to
//! end ([`Repository::execute`]).
//!
//! A save names the version the decision was made on; if another writer
//! appended since, the store refuses the whole save ([`Error::Conflict`])
//! and nothing is written. `execute` then loads again and decides again
//! from the newer state, a bounded number of times, waiting a random,
//! growing moment in between so that writers that collided do not collide
//! again in step. Deciding again, never re-applying the old decision, is
//! what keeps a business rule (a balance that must not go negative) true
//! under concurrency.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use kausal_core::{CorrelationId, EventId, TraceParent};
use kausal_store::{Appended, Direction, ExpectedVersion, NewEvent, OutboxTarget};
use tracing::Instrument;

use crate::aggregate::{Aggregate, AggregateEvent};
use crate::error::{Error, ExecuteError, Result};
use crate::names::span;
use crate::state_cache::{Cloned, StateCache};
use crate::store::{EventStore, StreamEvents, StreamName};
use crate::trace::Traced;
use kausal_telemetry::ids;

/// Conflicts [`Repository::execute`] retries before it gives up.
pub const DEFAULT_MAX_RETRIES: u32 = 10;

/// Events read per query while loading.
const LOAD_PAGE: i64 = 1_000;

/// Upper bound of the wait before a retry after a conflict.
const MAX_RETRY_WAIT: Duration = Duration::from_millis(100);

/// Where a command comes from, stored with every event it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandContext {
    pub correlation_id: CorrelationId,
    /// The event whose handling issued the command.
    pub causation_id: Option<EventId>,
    /// The caller's span: the repository's spans are its children.
    pub traceparent: Option<TraceParent>,
    /// Publish the decided events through the outbox to this topic and key.
    pub outbox: Option<OutboxTarget>,
}

impl CommandContext {
    pub fn new(correlation_id: CorrelationId) -> Self {
        Self {
            correlation_id,
            causation_id: None,
            traceparent: None,
            outbox: None,
        }
    }

    pub fn caused_by(mut self, event_id: EventId) -> Self {
        self.causation_id = Some(event_id);
        self
    }

    pub fn traced(mut self, parent: TraceParent) -> Self {
        self.traceparent = Some(parent);
        self
    }

    /// Writes an outbox row per decided event, to be published on `topic`
    /// with record key `key`.
    pub fn publish_to(mut self, topic: impl Into<String>, key: Option<String>) -> Self {
        self.outbox = Some(OutboxTarget {
            topic: topic.into(),
            key,
        });
        self
    }
}

/// What [`Repository::execute`] did.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The state after the new events.
    pub state: A,
    /// The stream's version after the new events.
    pub version: i64,
    /// The events decided and saved (none: the command changed nothing).
    pub events: Vec<A::Event>,
    /// Conflicts met and retried on the way.
    pub conflicts: u32,
}

/// Loads and saves aggregates of type `A`. Cheap to clone.
pub struct Repository<A> {
    store: EventStore,
    max_retries: u32,
    /// Loaded states, when [`with_cache`](Self::with_cache) was asked for.
    cache: Option<Arc<dyn StateCache<A>>>,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A> std::fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store)
            .field("max_retries", &self.max_retries)
            .field("cached", &self.cache.is_some())
            .finish()
    }
}

impl<A> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            max_retries: self.max_retries,
            cache: self.cache.clone(),
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate + Clone> Repository<A> {
    /// Keeps up to `capacity` loaded aggregates in memory (shared by this
    /// repository's clones): a load starts from the cached state and reads
    /// only the events after it, so an aggregate with a long stream (an
    /// account posted to thousands of times) loads in the time of its new
    /// events, not of its whole history; each process has its own cache.
    pub fn with_cache(mut self, capacity: usize) -> Self {
        self.cache = Some(Arc::new(Cloned::new(capacity)));
        self
    }
}

impl<A: Aggregate> Repository<A> {
    pub fn new(store: EventStore) -> Self {
        Self {
            store,
            max_retries: DEFAULT_MAX_RETRIES,
            cache: None,
            _aggregate: PhantomData,
        }
    }

    /// How many conflicts [`execute`](Self::execute) retries (default
    /// [`DEFAULT_MAX_RETRIES`]); the next one is returned.
    pub fn with_max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The stream of aggregate `id`.
    pub fn stream(id: &str) -> StreamName {
        StreamName::new(A::TYPE, id)
    }

    /// The aggregate's state and version (0 and the empty state when it has
    /// no events). `parent`: the caller's span, `None` for a new trace.
    pub async fn load(&self, id: &str, parent: Option<TraceParent>) -> Result<(A, i64)> {
        let stream = Self::stream(id);
        let mut traced = self.start(span::REPOSITORY_LOAD, &stream, parent);
        let context = traced.context();
        let cached = self.cache.as_ref().and_then(|c| c.get(id));
        let loaded = self
            .fold(&stream, cached, context)
            .instrument(traced.log_span())
            .await;
        if let (Some(cache), Ok((state, version, _))) = (&self.cache, &loaded) {
            cache.put(id, state, *version);
        }
        match &loaded {
            Ok((_, version, count)) => {
                traced.set_version(*version);
                traced.set_count(*count);
            }
            Err(e) => traced.fail(&e.error_type(), &e.to_string()),
        }
        traced.end();
        loaded.map(|(state, version, _)| (state, version))
    }

    /// Reads the stream page by page from `from` (a cached state and its
    /// version; the empty state when `None`) and applies every event after
    /// it: (state, version, events read).
    async fn fold(
        &self,
        stream: &StreamName,
        from: Option<(A, i64)>,
        parent: TraceParent,
    ) -> Result<(A, i64, usize)> {
        let (mut state, mut version) = from.unwrap_or_default();
        let mut count = 0;
        loop {
            let page = self
                .store
                .get_events(
                    stream,
                    version + 1,
                    LOAD_PAGE,
                    Direction::Forward,
                    Some(parent),
                )
                .await?;
            for recorded in &page {
                let event: A::Event =
                    serde_json::from_str(&recorded.payload).map_err(|source| Error::Decode {
                        aggregate: A::TYPE,
                        stream: recorded.stream_id.clone(),
                        version: recorded.stream_version,
                        event_type: recorded.event_type.clone(),
                        source,
                    })?;
                state.apply(&event);
                version = recorded.stream_version;
            }
            count += page.len();
            if page.len() < LOAD_PAGE as usize {
                return Ok((state, version, count));
            }
        }
    }

    /// Whether the aggregate has any event.
    pub async fn exists(&self, id: &str, parent: Option<TraceParent>) -> Result<bool> {
        let stream = Self::stream(id);
        let mut traced = self.start(span::REPOSITORY_EXISTS, &stream, parent);
        let version = self
            .store
            .store()
            .stream_version(&stream.stream_id())
            .instrument(traced.log_span())
            .await
            .map_err(Error::from);
        match &version {
            Ok(v) => traced.set_version(*v),
            Err(e) => traced.fail(&e.error_type(), &e.to_string()),
        }
        traced.end();
        Ok(version? > 0)
    }

    /// Appends `events`, decided on `expected_version` (0: a new
    /// aggregate), with the context's ids and outbox target. Refused with
    /// [`Error::Conflict`], writing nothing, when the stream moved.
    pub async fn save(
        &self,
        id: &str,
        expected_version: i64,
        events: &[A::Event],
        context: &CommandContext,
    ) -> Result<Appended> {
        let stream = Self::stream(id);
        let mut traced = self.start(span::REPOSITORY_SAVE, &stream, context.traceparent);
        traced.set_expected_version(expected_version);
        traced.set_count(events.len());
        let saved = async {
            let new = events
                .iter()
                .map(|e| new_event::<A>(e, context))
                .collect::<Result<Vec<_>>>()?;
            self.store
                .append_events(
                    &stream,
                    ExpectedVersion::Exact(expected_version),
                    new,
                    context.outbox.as_ref(),
                    Some(traced.context()),
                )
                .await
        }
        .instrument(traced.log_span())
        .await;
        match &saved {
            Ok(appended) => traced.set_version(appended.stream_version),
            Err(e) => traced.fail(&e.error_type(), &e.to_string()),
        }
        traced.end();
        saved
    }

    /// `events` decided on `expected_version` (0: a new aggregate) as one
    /// stream's part of an [`EventStore::append_many`], encoded with the
    /// context's ids and outbox target: what [`save`](Self::save) appends,
    /// for a change that spans several aggregates in one transaction. The
    /// caller owns retrying on a conflict (load, decide and stage again).
    pub fn stage(
        id: &str,
        expected_version: i64,
        events: &[A::Event],
        context: &CommandContext,
    ) -> Result<StreamEvents> {
        Ok(StreamEvents {
            stream: Self::stream(id),
            expected: ExpectedVersion::Exact(expected_version),
            events: events
                .iter()
                .map(|e| new_event::<A>(e, context))
                .collect::<Result<Vec<_>>>()?,
            outbox: context.outbox.clone(),
        })
    }

    /// Loads the aggregate, decides `command`, saves the events; on a
    /// conflict loads and decides again, at most `max_retries` times. The
    /// aggregate's refusal is [`ExecuteError::Rejected`] and writes nothing.
    pub async fn execute(
        &self,
        id: &str,
        command: &A::Command,
        context: &CommandContext,
    ) -> Result<Executed<A>, ExecuteError<A::Error>> {
        let mut conflicts = 0;
        loop {
            let (mut state, version) = self.load(id, context.traceparent).await?;
            let events = state.decide(command).map_err(ExecuteError::Rejected)?;
            if events.is_empty() {
                return Ok(Executed {
                    state,
                    version,
                    events,
                    conflicts,
                });
            }
            match self.save(id, version, &events, context).await {
                Ok(appended) => {
                    for event in &events {
                        state.apply(event);
                    }
                    return Ok(Executed {
                        state,
                        version: appended.stream_version,
                        events,
                        conflicts,
                    });
                }
                Err(Error::Conflict { actual, .. }) if conflicts < self.max_retries => {
                    conflicts += 1;
                    tracing::debug!(
                        aggregate = A::TYPE,
                        id,
                        decided_on = version,
                        actual,
                        conflicts,
                        "stream moved while deciding; loading and deciding again"
                    );
                    tokio::time::sleep(retry_wait(conflicts)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn start(
        &self,
        name: &'static str,
        stream: &StreamName,
        parent: Option<TraceParent>,
    ) -> Traced {
        Traced::start(
            name,
            parent,
            self.store.db_system(),
            crate::trace::Subject {
                aggregate: Some((&stream.aggregate_type, &stream.aggregate_id)),
                subscription: None,
            },
            &[],
        )
    }
}

fn new_event<A: Aggregate>(event: &A::Event, context: &CommandContext) -> Result<NewEvent> {
    let payload = serde_json::to_string(event).map_err(|source| Error::Encode {
        aggregate: A::TYPE,
        event_type: event.event_type(),
        source,
    })?;
    Ok(NewEvent {
        event_id: ids::new_event_id(),
        event_type: event.event_type().to_owned(),
        event_version: event.event_version(),
        payload,
        correlation_id: context.correlation_id.clone(),
        causation_id: context.causation_id,
        // Set by the store to its append span.
        traceparent: None,
    })
}

/// "Full jitter": a random wait up to 2 ms × 2^(retry−1), at most
/// [`MAX_RETRY_WAIT`].
pub fn retry_wait(retry: u32) -> Duration {
    let ceiling = Duration::from_millis(2)
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(MAX_RETRY_WAIT);
    ceiling.mul_f64(ids::unit_sample())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits_grow_and_stay_bounded() {
        for retry in 1..40 {
            let wait = retry_wait(retry);
            assert!(wait <= MAX_RETRY_WAIT, "{retry}: {wait:?}");
            let ceiling = Duration::from_millis(2 << (retry - 1).min(16)).min(MAX_RETRY_WAIT);
            assert!(wait <= ceiling, "{retry}: {wait:?} > {ceiling:?}");
        }
    }
}
