//! [`EventStore`]: `kausal_store`'s event store with spans and metrics.
//! Appends are `eventsource.event_store.append_events`, reads
//! `eventsource.event_store.get_events`; every appended event stores the
//! context of the append span, so the relay that publishes it later
//! continues the trace that wrote it. Appends are timed
//! (`eventstore_append_duration_seconds`) and conflicts counted
//! (`eventstore_conflicts_total`), both by aggregate type.

use std::fmt;
use std::time::Instant;

use kausal_core::TraceParent;
use kausal_store::event_store::StreamAppend;
use kausal_store::{
    AppendError, Appended, Backend, Direction, ExpectedVersion, GlobalCursor, NewEvent,
    OutboxTarget, RecordedEvent, Store,
};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::metrics::{AggregateTypeLabel, EventStoreMetrics};
use crate::names::span;
use crate::trace::{Subject, Traced};

/// One aggregate's stream: `<type>-<id>` in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamName {
    pub aggregate_type: String,
    pub aggregate_id: String,
}

impl StreamName {
    pub fn new(aggregate_type: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        Self {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
        }
    }

    /// The stream id in the store.
    pub fn stream_id(&self) -> String {
        self.to_string()
    }

    fn subject(&self) -> Subject<'_> {
        Subject {
            aggregate: Some((&self.aggregate_type, &self.aggregate_id)),
            subscription: None,
        }
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.aggregate_type, self.aggregate_id)
    }
}

/// One stream's part of [`EventStore::append_many`]
/// ([`crate::Repository::stage`] makes one from an aggregate's decided
/// events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvents {
    pub stream: StreamName,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    /// Publish these events through the outbox to this topic and key.
    pub outbox: Option<OutboxTarget>,
}

/// The event store, traced and measured. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventStore {
    store: Store,
    metrics: EventStoreMetrics,
}

impl EventStore {
    /// `metrics` from [`EventStoreMetrics::register`], once per registry.
    pub fn new(store: Store, metrics: EventStoreMetrics) -> Self {
        Self { store, metrics }
    }

    /// The untraced store underneath (outbox and checkpoint queries).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &EventStoreMetrics {
        &self.metrics
    }

    /// The `db.system` attribute: `sqlite` or `postgresql`.
    pub fn db_system(&self) -> &'static str {
        match self.store.backend() {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgresql",
        }
    }

    /// Appends `events` to `stream` if its version is as `expected`, with
    /// their outbox rows when `outbox` is given, in one transaction. Each
    /// event's `traceparent` is set to this append's span. A conflict is
    /// [`Error::Conflict`] and wrote nothing.
    pub async fn append_events(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        mut events: Vec<NewEvent>,
        outbox: Option<&OutboxTarget>,
        parent: Option<TraceParent>,
    ) -> Result<Appended> {
        let mut traced = Traced::start(
            span::APPEND_EVENTS,
            parent,
            self.db_system(),
            stream.subject(),
            &[],
        );
        traced.set_count(events.len());
        if let ExpectedVersion::Exact(v) = expected {
            traced.set_expected_version(v);
        }
        for event in &mut events {
            event.traceparent = Some(traced.context());
        }
        let label = AggregateTypeLabel {
            aggregate_type: stream.aggregate_type.clone(),
        };
        let started = Instant::now();
        let result = self
            .store
            .append_events(&stream.stream_id(), expected, &events, outbox)
            .instrument(traced.log_span())
            .await;
        self.metrics
            .append_duration
            .get_or_create(&label)
            .observe(started.elapsed().as_secs_f64());
        let result = result.map_err(|e| {
            if matches!(e, AppendError::Conflict { .. }) {
                self.metrics.conflicts.get_or_create(&label).inc();
            }
            Error::from(e)
        });
        match &result {
            Ok(appended) => traced.set_version(appended.stream_version),
            Err(e) => traced.fail(&e.error_type(), &e.to_string()),
        }
        traced.end();
        result
    }

    /// Appends to several streams in one transaction, each part under its
    /// own expected version and outbox target: all of it, or nothing (a
    /// conflict on any stream is [`Error::Conflict`] naming that stream).
    /// One `eventsource.event_store.append_events` span covers the
    /// transaction, with the streams' aggregate types, ids and versions
    /// after the append as arrays (in the order given) and the total event
    /// count; every event's `traceparent` is set to it. The duration is
    /// observed once for each aggregate type involved; a conflict is
    /// counted for the type of the stream that moved. Returns what each
    /// part wrote, in the order given.
    pub async fn append_many(
        &self,
        mut parts: Vec<StreamEvents>,
        parent: Option<TraceParent>,
    ) -> Result<Vec<Appended>> {
        let mut traced = Traced::start(
            span::APPEND_EVENTS,
            parent,
            self.db_system(),
            Subject::default(),
            &[],
        );
        traced.set_streams(
            parts
                .iter()
                .map(|p| p.stream.aggregate_type.clone())
                .collect(),
            parts
                .iter()
                .map(|p| p.stream.aggregate_id.clone())
                .collect(),
        );
        traced.set_count(parts.iter().map(|p| p.events.len()).sum());
        for event in parts.iter_mut().flat_map(|p| p.events.iter_mut()) {
            event.traceparent = Some(traced.context());
        }
        let stream_ids: Vec<String> = parts.iter().map(|p| p.stream.stream_id()).collect();
        let store_parts: Vec<StreamAppend<'_>> = parts
            .iter()
            .zip(&stream_ids)
            .map(|(p, id)| StreamAppend {
                stream_id: id,
                expected: p.expected,
                events: &p.events,
                outbox: p.outbox.as_ref(),
            })
            .collect();
        let started = Instant::now();
        let result = self
            .store
            .append_many(&store_parts)
            .instrument(traced.log_span())
            .await;
        let elapsed = started.elapsed().as_secs_f64();
        let mut types: Vec<&str> = parts
            .iter()
            .map(|p| p.stream.aggregate_type.as_str())
            .collect();
        types.sort_unstable();
        types.dedup();
        for aggregate_type in types {
            self.metrics
                .append_duration
                .get_or_create(&AggregateTypeLabel {
                    aggregate_type: aggregate_type.to_owned(),
                })
                .observe(elapsed);
        }
        let result = result.map_err(|e| {
            if let AppendError::Conflict { stream, .. } = &e
                && let Some(part) = parts.iter().find(|p| p.stream.stream_id() == *stream)
            {
                let label = AggregateTypeLabel {
                    aggregate_type: part.stream.aggregate_type.clone(),
                };
                self.metrics.conflicts.get_or_create(&label).inc();
            }
            Error::from(e)
        });
        match &result {
            Ok(appended) => {
                traced.set_versions(appended.iter().map(|a| a.stream_version).collect())
            }
            Err(e) => traced.fail(&e.error_type(), &e.to_string()),
        }
        traced.end();
        result
    }

    /// At most `limit` events of `stream` from `from_version` on, in
    /// `direction`.
    pub async fn get_events(
        &self,
        stream: &StreamName,
        from_version: i64,
        limit: i64,
        direction: Direction,
        parent: Option<TraceParent>,
    ) -> Result<Vec<RecordedEvent>> {
        let traced = Traced::start(
            span::GET_EVENTS,
            parent,
            self.db_system(),
            stream.subject(),
            &[],
        );
        let read = self
            .store
            .read_stream(&stream.stream_id(), from_version, limit, direction)
            .instrument(traced.log_span())
            .await;
        finish_read(traced, read, true)
    }

    /// At most `limit` events of every stream after `after`, in the global
    /// order (see `kausal_store::event_store`).
    pub async fn read_all(
        &self,
        after: GlobalCursor,
        limit: i64,
        parent: Option<TraceParent>,
    ) -> Result<Vec<RecordedEvent>> {
        let traced = Traced::start(
            span::GET_EVENTS,
            parent,
            self.db_system(),
            Subject::default(),
            &[],
        );
        let read = self
            .store
            .read_all(after, limit)
            .instrument(traced.log_span())
            .await;
        finish_read(traced, read, false)
    }
}

/// Ends a read's span with the count (and, for one stream, the version of
/// the last event read).
fn finish_read(
    mut traced: Traced,
    read: kausal_store::Result<Vec<RecordedEvent>>,
    one_stream: bool,
) -> Result<Vec<RecordedEvent>> {
    let read = read.map_err(Error::from);
    match &read {
        Ok(events) => {
            traced.set_count(events.len());
            if let Some(last) = events.last().filter(|_| one_stream) {
                traced.set_version(last.stream_version);
            }
        }
        Err(e) => traced.fail(&e.error_type(), &e.to_string()),
    }
    traced.end();
    read
}
