//! The event store (issue 14): streams of events appended under optimistic
//! concurrency, read per stream or all together in one global order, the
//! transactional outbox written with them, and the checkpoints of catch-up
//! subscriptions. SQL only; spans, metrics, aggregates and subscriptions
//! are `kausal-eventsource`'s.
//!
//! **Concurrency.** An append reads the stream's version, compares it with
//! the caller's [`ExpectedVersion`] and inserts the events at the next
//! versions, all in one transaction. The unique index on
//! `(stream_id, stream_version)` is the arbiter: of two writers that both
//! read version 5 and both insert version 6, PostgreSQL makes the second
//! wait for the first and then fails it on the index, and the store turns
//! that failure into [`AppendError::Conflict`] after rolling back, so a
//! conflicting append writes nothing, neither events nor outbox rows. On
//! SQLite the append takes the file's write lock first (`BEGIN
//! IMMEDIATE`), so the version it reads cannot move before it commits.
//!
//! **The global order and the gap problem.** A catch-up subscription reads
//! "everything after my cursor" and stores the cursor of the last event it
//! handled. With positions from a PostgreSQL sequence that is not safe:
//! transaction A takes position 10, B takes 11, B commits first; a reader
//! sees 11, stores 11, and skips 10 forever once A commits. The store uses
//! the transaction-id method instead: each row keeps the id of the
//! transaction that wrote it (`tx_id`, `pg_current_xact_id()`, 64 bits,
//! never wrapping), [`Store::read_all`] orders by `(tx_id, position)` and
//! returns only rows whose `tx_id` is below the reading snapshot's `xmin`,
//! the oldest transaction still running. Every transaction below `xmin` has
//! finished, so the set of such rows is final; every transaction that
//! commits later has an id of at least `xmin`, so its rows sort after any
//! cursor taken from what was returned. The cursor is therefore the pair
//! [`GlobalCursor`] `(tx_id, position)`. The price: one long transaction
//! anywhere in the PostgreSQL cluster (not only in the event store) holds
//! `read_all` back until it ends; nothing is skipped, only delayed. (The
//! casts through text are there because sqlx's `Any` driver cannot decode
//! `xid8`.)
//!
//! On SQLite there is one writer per file and positions are assigned inside
//! its write lock, so they commit in order: `tx_id` is always 0, the cursor
//! is `(0, position)` and a plain ordered read is correct.
//!
//! **Several streams at once.** [`Store::append_many`] appends to several
//! streams in one transaction, each under its own [`ExpectedVersion`] and
//! with its own outbox target: a conflict on any stream rolls back all of
//! them (a ledger entry moves money between accounts all at once or not at
//! all). It inserts the streams in the order of their ids, whatever order
//! the caller gave: two such appends that share streams then wait for each
//! other on the unique index in one order only, so PostgreSQL never has to
//! break a deadlock between them. A stream may appear once per call.
//!
//! **Outbox.** An append given an [`OutboxTarget`] writes one outbox row per
//! event in the same transaction, keyed by the event's position. A relay
//! reads [`Store::outbox_pending`] (by position, which within one stream is
//! version order), publishes, and calls [`Store::outbox_mark_sent`] after
//! the broker acknowledged.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use kausal_core::{CorrelationId, EventId, TraceParent};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::{Backend, Result, Store, StoreError};

/// How many times an append with [`ExpectedVersion::Any`] tries when
/// concurrent writers keep taking the version it was about to write. Each
/// retry waits a random 0..=`attempt` ms first, so that the writers that
/// lost together do not collide again together.
const ANY_VERSION_ATTEMPTS: u32 = 50;

/// Outbox rows marked sent per statement (one parameter each, under every
/// backend's limit).
const MARK_SENT_CHUNK: usize = 500;

/// What the writer believes a stream's version to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the version is.
    Any,
    /// The stream must have no events yet.
    NoStream,
    /// The stream's last event must have this version (0 = no events).
    Exact(i64),
}

impl ExpectedVersion {
    fn admits(self, actual: i64) -> bool {
        match self {
            Self::Any => true,
            Self::NoStream => actual == 0,
            Self::Exact(v) => actual == v,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any version"),
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "version {v}"),
        }
    }
}

/// A position in the global order: the writing transaction and the
/// event's position (see the module comment). Cursors compare in
/// `read_all` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GlobalCursor {
    /// PostgreSQL: the writing transaction's id. SQLite: 0.
    pub tx_id: i64,
    pub position: i64,
}

impl GlobalCursor {
    /// Before every event.
    pub const START: Self = Self {
        tx_id: 0,
        position: 0,
    };
}

impl fmt::Display for GlobalCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tx_id, self.position)
    }
}

/// Which way [`Store::read_stream`] walks a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the given version up, oldest first.
    Forward,
    /// From the given version down, newest first (`i64::MAX`: from the end).
    Backward,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub event_id: EventId,
    pub event_type: String,
    /// The payload's schema version.
    pub event_version: u32,
    /// JSON text.
    pub payload: String,
    pub correlation_id: CorrelationId,
    /// The event whose handling produced this one.
    pub causation_id: Option<EventId>,
    /// The context of the span that appended it, continued by whoever
    /// publishes it.
    pub traceparent: Option<TraceParent>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: i64,
    /// PostgreSQL: the writing transaction's id. SQLite: 0.
    pub tx_id: i64,
    pub stream_id: String,
    /// 1 for a stream's first event.
    pub stream_version: i64,
    pub event_id: EventId,
    pub event_type: String,
    pub event_version: u32,
    /// JSON text.
    pub payload: String,
    pub correlation_id: CorrelationId,
    pub causation_id: Option<EventId>,
    pub traceparent: Option<TraceParent>,
    /// When it was appended, milliseconds since the Unix epoch.
    pub recorded_at_ms: i64,
}

impl RecordedEvent {
    /// The cursor just past this event in `read_all` order.
    pub fn cursor(&self) -> GlobalCursor {
        GlobalCursor {
            tx_id: self.tx_id,
            position: self.position,
        }
    }
}

/// Where an append's events are to be published: one outbox row per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxTarget {
    pub topic: String,
    /// The Kafka record key (events of one key stay in order).
    pub key: Option<String>,
}

/// One stream's part of [`Store::append_many`]: its events, the version the
/// writer expects it at, and where its events are to be published.
#[derive(Debug, Clone, Copy)]
pub struct StreamAppend<'a> {
    pub stream_id: &'a str,
    pub expected: ExpectedVersion,
    pub events: &'a [NewEvent],
    pub outbox: Option<&'a OutboxTarget>,
}

/// What an append wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The stream's version after the append.
    pub stream_version: i64,
    /// The appended events' cursors, in order (empty for an empty append).
    pub cursors: Vec<GlobalCursor>,
}

/// An unsent outbox row with its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingOutbox {
    pub topic: String,
    pub key: Option<String>,
    /// When the row was written, milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// The event; its `position` is the row's id for
    /// [`Store::outbox_mark_sent`].
    pub event: RecordedEvent,
}

/// The outbox's backlog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OutboxStats {
    /// Rows not yet sent.
    pub pending: i64,
    /// How long the oldest unsent row has waited, in milliseconds; `None`
    /// when nothing is pending.
    pub oldest_age_ms: Option<i64>,
}

/// Why an append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Another writer moved the stream since the caller read it.
    #[error(
        "stream {stream} is at version {actual}, not at {expected}: another writer appended \
         first; load the stream again, decide again and retry"
    )]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: i64,
    },
    /// An event with this id is already stored (in any stream).
    #[error(
        "event {event_id} is already in the store: an event is appended once; give a new event \
         a new id (a retried command must not re-append what it already wrote)"
    )]
    DuplicateEvent { event_id: EventId },
    /// [`Store::append_many`] was given two parts for one stream.
    #[error(
        "stream {stream} appears twice in one append: give each stream one part, with all of \
         its events in order"
    )]
    StreamRepeated { stream: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for AppendError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

/// Which unique index an insert violated.
enum Violation {
    StreamVersion,
    EventId,
}

fn violation(e: &sqlx::Error) -> Option<Violation> {
    let sqlx::Error::Database(db) = e else {
        return None;
    };
    if db.kind() != sqlx::error::ErrorKind::UniqueViolation {
        return None;
    }
    // PostgreSQL names the index (constraint and message); SQLite names the
    // columns ("UNIQUE constraint failed: event_store_events.stream_id,
    // event_store_events.stream_version").
    let text = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
    if text.contains("stream_version") {
        Some(Violation::StreamVersion)
    } else if text.contains("event_id") {
        Some(Violation::EventId)
    } else {
        None
    }
}

/// A random wait of 0..=`max_ms` milliseconds (the standard library's
/// randomly keyed hasher is randomness enough for spreading retries).
fn jitter(max_ms: u32) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    std::time::Duration::from_micros(random % (u64::from(max_ms) * 1_000 + 1))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

impl Store {
    /// Appends `events` to `stream_id` if its version is what `expected`
    /// says, with one outbox row per event when `outbox` is given: all of
    /// it in one transaction, or nothing.
    pub async fn append_events(
        &self,
        stream_id: &str,
        expected: ExpectedVersion,
        events: &[NewEvent],
        outbox: Option<&OutboxTarget>,
    ) -> Result<Appended, AppendError> {
        let part = StreamAppend {
            stream_id,
            expected,
            events,
            outbox,
        };
        let mut appended = self.append_many(&[part]).await?;
        Ok(appended.pop().unwrap_or(Appended {
            stream_version: 0,
            cursors: Vec::new(),
        }))
    }

    /// Appends to several streams in one transaction: every part's events
    /// if every stream's version is what its part expects, with the outbox
    /// rows of the parts that name a target; otherwise nothing at all (a
    /// conflict names the first stream found moved). Returns what each
    /// part wrote, in the order given.
    pub async fn append_many(
        &self,
        parts: &[StreamAppend<'_>],
    ) -> Result<Vec<Appended>, AppendError> {
        if parts.is_empty() {
            return Ok(Vec::new());
        }
        // Lock order: by stream id (see the module comment).
        let mut order: Vec<usize> = (0..parts.len()).collect();
        order.sort_by(|&a, &b| parts[a].stream_id.cmp(parts[b].stream_id));
        if let Some(pair) = order
            .windows(2)
            .find(|w| parts[w[0]].stream_id == parts[w[1]].stream_id)
        {
            return Err(AppendError::StreamRepeated {
                stream: parts[pair[0]].stream_id.to_owned(),
            });
        }
        let mut attempt = 1;
        loop {
            match self.try_append_many(parts, &order).await {
                // A concurrent writer took the version of a stream appended
                // with no expectation; the next version is as good.
                Err(AppendError::Conflict { expected, .. })
                    if expected == ExpectedVersion::Any && attempt < ANY_VERSION_ATTEMPTS =>
                {
                    tokio::time::sleep(jitter(attempt)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// One try of [`append_many`](Self::append_many): the parts in `order`
    /// in one transaction.
    async fn try_append_many(
        &self,
        parts: &[StreamAppend<'_>],
        order: &[usize],
    ) -> Result<Vec<Appended>, AppendError> {
        let (_turn, mut tx) = self.begin_write().await?;
        let recorded_at_ms = now_ms();
        let mut written = Vec::with_capacity(parts.len());
        for &index in order {
            let part = &parts[index];
            match append_part(&mut tx, part, recorded_at_ms).await {
                Ok(appended) => written.push((index, appended)),
                Err(failure) => {
                    // PostgreSQL aborted the transaction on a failed insert;
                    // end it before reading the version the winner left.
                    tx.rollback().await?;
                    let conflict = |actual| AppendError::Conflict {
                        stream: part.stream_id.to_owned(),
                        expected: part.expected,
                        actual,
                    };
                    return Err(match failure {
                        PartFailure::Moved { actual } => conflict(actual),
                        PartFailure::Query(e) => e.into(),
                        PartFailure::Insert { error, event_id } => match violation(&error) {
                            Some(Violation::StreamVersion) => {
                                conflict(self.stream_version(part.stream_id).await?)
                            }
                            Some(Violation::EventId) => AppendError::DuplicateEvent { event_id },
                            None => error.into(),
                        },
                    });
                }
            }
        }
        tx.commit().await?;
        if parts.iter().any(|part| part.outbox.is_some()) {
            self.outbox_committed();
        }
        written.sort_by_key(|(index, _)| *index);
        Ok(written.into_iter().map(|(_, appended)| appended).collect())
    }

    /// The version of a stream's last event; 0 when it has none.
    pub async fn stream_version(&self, stream_id: &str) -> Result<i64> {
        let mut conn = self.pool.acquire().await?;
        stream_version(&mut conn, stream_id).await
    }

    /// At most `limit` events of one stream, from `from_version` on in
    /// `direction` (inclusive).
    pub async fn read_stream(
        &self,
        stream_id: &str,
        from_version: i64,
        limit: i64,
        direction: Direction,
    ) -> Result<Vec<RecordedEvent>> {
        let sql = match direction {
            Direction::Forward => include_str!("../sql/event_store_read_stream_forward.sql"),
            Direction::Backward => include_str!("../sql/event_store_read_stream_backward.sql"),
        };
        let rows = sqlx::query(sql)
            .bind(stream_id)
            .bind(from_version)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from).collect()
    }

    /// At most `limit` events of every stream after `after`, in the global
    /// order a subscription can follow without skipping any (see the
    /// module comment). An empty answer means nothing final lies past
    /// `after` yet.
    pub async fn read_all(&self, after: GlobalCursor, limit: i64) -> Result<Vec<RecordedEvent>> {
        let sql = match self.backend {
            Backend::Sqlite => include_str!("../sql/event_store_read_all.sqlite.sql"),
            Backend::Postgres => include_str!("../sql/event_store_read_all.postgres.sql"),
        };
        let rows = sqlx::query(sql)
            .bind(after.tx_id)
            .bind(after.position)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(event_from).collect()
    }

    /// How many committed events lie after `after` (a subscription's lag).
    pub async fn events_after(&self, after: GlobalCursor) -> Result<i64> {
        Ok(
            sqlx::query_scalar(include_str!("../sql/event_store_count_after.sql"))
                .bind(after.tx_id)
                .bind(after.position)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The stored cursor of subscription `name`; `None` before its first
    /// save.
    pub async fn checkpoint(&self, name: &str) -> Result<Option<GlobalCursor>> {
        let row = sqlx::query(include_str!("../sql/subscription_checkpoint_get.sql"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(GlobalCursor {
                tx_id: r.try_get("tx_id")?,
                position: r.try_get("global_position")?,
            })
        })
        .transpose()
    }

    /// Stores the cursor of subscription `name`, replacing the one before.
    pub async fn save_checkpoint(&self, name: &str, cursor: GlobalCursor) -> Result<()> {
        sqlx::query(include_str!("../sql/subscription_checkpoint_save.sql"))
            .bind(name)
            .bind(cursor.tx_id)
            .bind(cursor.position)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// At most `limit` unsent outbox rows with their events, by position
    /// (within one stream: version order).
    pub async fn outbox_pending(&self, limit: i64) -> Result<Vec<PendingOutbox>> {
        let rows = sqlx::query(include_str!("../sql/outbox_pending.sql"))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(PendingOutbox {
                    topic: row.try_get("topic")?,
                    key: row.try_get("record_key")?,
                    created_at_ms: row.try_get("created_at_ms")?,
                    event: event_from(row)?,
                })
            })
            .collect()
    }

    /// Marks the outbox rows of these event positions sent at `sent_at_ms`;
    /// returns how many were unsent until now.
    pub async fn outbox_mark_sent(&self, positions: &[i64], sent_at_ms: i64) -> Result<u64> {
        let mut marked = 0;
        for chunk in positions.chunks(MARK_SENT_CHUNK) {
            let ids: Vec<String> = (2..chunk.len() + 2).map(|i| format!("${i}")).collect();
            let sql = include_str!("../sql/outbox_mark_sent.sql").replace("$IDS", &ids.join(", "));
            // Only placeholders are formatted in; the values are bound.
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sent_at_ms);
            for position in chunk {
                query = query.bind(*position);
            }
            marked += query.execute(&self.pool).await?.rows_affected();
        }
        Ok(marked)
    }

    /// How many outbox rows wait, and how long the oldest has, at `now_ms`.
    pub async fn outbox_stats(&self, now_ms: i64) -> Result<OutboxStats> {
        let row = sqlx::query(include_str!("../sql/outbox_stats.sql"))
            .fetch_one(&self.pool)
            .await?;
        let oldest: Option<i64> = row.try_get("oldest_created_at_ms")?;
        Ok(OutboxStats {
            pending: row.try_get("pending")?,
            oldest_age_ms: oldest.map(|t| (now_ms - t).max(0)),
        })
    }
}

/// Why one part of an append failed inside its transaction.
enum PartFailure {
    /// The stream's version is not what the part expected.
    Moved {
        actual: i64,
    },
    /// Inserting this event failed (a unique index, or the database).
    Insert {
        error: sqlx::Error,
        event_id: EventId,
    },
    Query(StoreError),
}

impl From<sqlx::Error> for PartFailure {
    fn from(e: sqlx::Error) -> Self {
        Self::Query(StoreError::Query(e))
    }
}

impl From<StoreError> for PartFailure {
    fn from(e: StoreError) -> Self {
        Self::Query(e)
    }
}

/// Checks one stream's version and inserts its events (and outbox rows)
/// inside `tx`; the caller commits or rolls back.
async fn append_part(
    tx: &mut Transaction<'static, Any>,
    part: &StreamAppend<'_>,
    recorded_at_ms: i64,
) -> Result<Appended, PartFailure> {
    let actual = stream_version(tx, part.stream_id).await?;
    if !part.expected.admits(actual) {
        return Err(PartFailure::Moved { actual });
    }
    let mut cursors = Vec::with_capacity(part.events.len());
    for (version, event) in (actual + 1..).zip(part.events) {
        let row = sqlx::query(include_str!("../sql/event_store_insert.sql"))
            .bind(part.stream_id)
            .bind(version)
            .bind(event.event_id.to_string())
            .bind(&event.event_type)
            .bind(i64::from(event.event_version))
            .bind(&event.payload)
            .bind(event.correlation_id.as_str())
            .bind(event.causation_id.map(|id| id.to_string()))
            .bind(event.traceparent.map(|tp| tp.to_string()))
            .bind(recorded_at_ms)
            .fetch_one(&mut **tx)
            .await
            .map_err(|error| PartFailure::Insert {
                error,
                event_id: event.event_id,
            })?;
        let cursor = GlobalCursor {
            tx_id: row.try_get("tx_id")?,
            position: row.try_get("global_position")?,
        };
        if let Some(target) = part.outbox {
            sqlx::query(include_str!("../sql/outbox_insert.sql"))
                .bind(cursor.position)
                .bind(part.stream_id)
                .bind(version)
                .bind(&target.topic)
                .bind(target.key.as_deref())
                .bind(recorded_at_ms)
                .execute(&mut **tx)
                .await?;
        }
        cursors.push(cursor);
    }
    Ok(Appended {
        stream_version: actual + cursors.len() as i64,
        cursors,
    })
}

async fn stream_version(conn: &mut sqlx::AnyConnection, stream_id: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar(include_str!("../sql/event_store_stream_version.sql"))
            .bind(stream_id)
            .fetch_one(conn)
            .await?,
    )
}

fn event_from(row: &AnyRow) -> Result<RecordedEvent> {
    let event_id: String = row.try_get("event_id")?;
    let correlation_id: String = row.try_get("correlation_id")?;
    let causation_id: Option<String> = row.try_get("causation_id")?;
    let traceparent: Option<String> = row.try_get("traceparent")?;
    let event_version: i64 = row.try_get("event_version")?;
    Ok(RecordedEvent {
        position: row.try_get("global_position")?,
        tx_id: row.try_get("tx_id")?,
        stream_id: row.try_get("stream_id")?,
        stream_version: row.try_get("stream_version")?,
        event_id: parse(&event_id)?,
        event_type: row.try_get("event_type")?,
        event_version: u32::try_from(event_version).map_err(decode_error)?,
        payload: row.try_get("payload")?,
        correlation_id: parse(&correlation_id)?,
        causation_id: causation_id.as_deref().map(parse).transpose()?,
        traceparent: traceparent
            .as_deref()
            .map(TraceParent::parse)
            .transpose()
            .map_err(decode_error)?,
        recorded_at_ms: row.try_get("recorded_at_ms")?,
    })
}

/// A stored id that does not parse: the row was not written by this store.
fn parse<T>(text: &str) -> Result<T>
where
    T: std::str::FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    text.parse().map_err(decode_error)
}

fn decode_error(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Query(sqlx::Error::Decode(Box::new(e)))
}
