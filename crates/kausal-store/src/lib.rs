//! Kausal's SQL store: idempotency keys, the lineage of events, consumer
//! receipts, the DLQ ledger, and the event store with its outbox
//! ([`event_store`]). One set of queries for SQLite (the default, a
//! file under the data dir) and PostgreSQL (by URL), kept in `.sql` files;
//! numbered migrations in `ddl/` applied on connect.
//!
//! | URL | backend |
//! |---|---|
//! | `sqlite://PATH` (created if missing) | SQLite |
//! | `postgres://…`, `postgresql://…` | PostgreSQL |

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor, Transaction};

mod checkpoint;
pub mod event_store;
mod lineage;
mod marks;
mod migrate;
pub mod order_view;
pub mod outbox_lease;
pub mod read_model;
mod retention;
pub mod telemetry;
pub mod testing;
pub mod topology;

pub use event_store::{
    AppendError, Appended, Direction, ExpectedVersion, GlobalCursor, NewEvent, OutboxStats,
    OutboxTarget, PendingOutbox, RecordedEvent, StreamAppend,
};
pub use lineage::{
    BatchCounts, DeadLetterCount, DeadLetterEntry, DeadLetterFilter, LineageEvent,
    MAX_LINEAGE_DEPTH, Receipt,
};
pub use marks::MarkWriter;
pub use migrate::{MIGRATION_LOCK_KEY, MIGRATIONS};
pub use order_view::OrderView;
pub use outbox_lease::OutboxLease;
pub use read_model::{
    AccountProjection, MAX_STATEMENT_PAGE, ProjectError, Projected, ProjectedEntry, ProjectedLeg,
    Side, StatementLine, StatementPage,
};
pub use retention::PrunedLineage;
pub use telemetry::{LogRow, ResourceRow, SpanDetail, SpanLinkRow, SpanRow, TelemetryCounts};

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST:PORT/DB")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database at {url}: {source} (is it running and reachable?)")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("migration {name} failed: {source}")]
    Migration {
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("database write failed: {0}")]
    Write(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A connection pool plus the queries Kausal runs.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite: this process's writers take turns here (see
    /// [`Store::begin_write`]).
    sqlite_writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Raised after a commit that wrote outbox rows (see
    /// [`Store::outbox_written`]).
    outbox_written: std::sync::Arc<tokio::sync::Notify>,
    /// SQLite: the task that checkpoints the write-ahead log (see
    /// [`checkpoint`]); `None` on PostgreSQL.
    _checkpointer: Option<std::sync::Arc<checkpoint::Checkpointer>>,
}

/// A writer's turn at a SQLite file, held until its transaction ended;
/// `None` on PostgreSQL.
pub(crate) type WriteTurn = Option<tokio::sync::OwnedMutexGuard<()>>;

impl Store {
    /// Connects, creating a SQLite file if needed, and applies migrations.
    pub async fn connect(url: &str) -> Result<Self> {
        install_default_drivers();
        let (backend, url) = normalise(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(5))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets several service processes share one file.
                        // Wait for other processes' locks, also while
                        // switching to WAL on a fresh file.
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                        // The store's own task checkpoints (see `checkpoint`),
                        // not the commit that crossed a threshold.
                        conn.execute("PRAGMA wal_autocheckpoint = 0").await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|source| StoreError::Connect {
                url: redact(&url),
                source,
            })?;
        let sqlite_writer = std::sync::Arc::<tokio::sync::Mutex<()>>::default();
        let checkpointer = (backend == Backend::Sqlite).then(|| {
            std::sync::Arc::new(checkpoint::Checkpointer::spawn(
                pool.clone(),
                sqlite_writer.clone(),
            ))
        });
        let store = Self {
            pool,
            backend,
            sqlite_writer,
            outbox_written: std::sync::Arc::default(),
            _checkpointer: checkpointer,
        };
        migrate::apply(&store.pool, backend).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A write transaction, and on SQLite this process's turn to write:
    /// drop the turn after the transaction ended.
    ///
    /// SQLite has one writer at a time. Writers of one process queue here
    /// rather than inside SQLite, and the store's checkpoint task takes a
    /// turn too when the write-ahead log has grown, so that its copy
    /// finishes before the next writer appends and the log starts over:
    /// writers that overlap keep a checkpoint from ever catching up and
    /// the log grows without bound (5 GB of log behind 1.8 GB of data
    /// after a million spans from four concurrent ingest requests). The
    /// transaction is `BEGIN IMMEDIATE`: it holds the write lock from the
    /// start, so what it reads cannot move before its commit and it cannot
    /// fail to upgrade to a writer (other processes still wait on the
    /// file's lock, up to the busy timeout).
    pub(crate) async fn begin_write(&self) -> Result<(WriteTurn, Transaction<'static, Any>)> {
        Ok(match self.backend {
            Backend::Sqlite => {
                let turn = self.sqlite_writer.clone().lock_owned().await;
                (Some(turn), self.pool.begin_with("BEGIN IMMEDIATE").await?)
            }
            Backend::Postgres => (None, self.pool.begin().await?),
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Returns once this store (or a clone of it) commits outbox rows: at
    /// once when one did since the last return, else at the next such
    /// commit. Lets a relay in the appending process publish as soon as
    /// the rows are there instead of at its next poll; rows committed by
    /// other processes are only found by polling.
    pub async fn outbox_written(&self) {
        self.outbox_written.notified().await;
    }

    /// Wakes a waiter of [`Store::outbox_written`] (or the next one).
    pub(crate) fn outbox_committed(&self) {
        self.outbox_written.notify_one();
    }

    /// True when `group` already handled `event_id` to the end.
    pub async fn is_processed(&self, group: &str, event_id: &str) -> Result<bool> {
        let count: i64 = sqlx::query_scalar(include_str!("../sql/processed_event_exists.sql"))
            .bind(group)
            .bind(event_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(count > 0)
    }

    /// Whether `group` recorded either key (one round trip for the
    /// runtime's two idempotency keys: handled, and dead-lettered).
    pub async fn is_processed_either(
        &self,
        group: &str,
        first: &str,
        second: &str,
    ) -> Result<bool> {
        let count: i64 =
            sqlx::query_scalar(include_str!("../sql/processed_event_exists_either.sql"))
                .bind(group)
                .bind(first)
                .bind(second)
                .fetch_one(&self.pool)
                .await?;
        Ok(count > 0)
    }

    /// Records that `group` handled `event_id`. Returns false when it was
    /// already recorded.
    pub async fn mark_processed(&self, group: &str, event_id: &str, at_ms: i64) -> Result<bool> {
        let result = sqlx::query(include_str!("../sql/processed_event_insert.sql"))
            .bind(group)
            .bind(event_id)
            .bind(at_ms)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() > 0)
    }

    /// Records (group, event id) pairs in one statement; returns how many
    /// were new. At most 256 pairs (see [`MarkWriter`]).
    pub async fn mark_processed_many(&self, marks: &[(&str, &str)], at_ms: i64) -> Result<u64> {
        if marks.is_empty() {
            return Ok(0);
        }
        let rows: Vec<String> = (0..marks.len())
            .map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO processed_events (consumer_group, event_id, processed_at_ms) VALUES {} \
             ON CONFLICT (consumer_group, event_id) DO NOTHING",
            rows.join(", ")
        );
        // Only placeholders are formatted in; the values are bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (group, event_id) in marks {
            query = query.bind(*group).bind(*event_id).bind(at_ms);
        }
        Ok(query.execute(&self.pool).await?.rows_affected())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn normalise(url: &str) -> Result<(Backend, String)> {
    if let Some(rest) = url.strip_prefix("sqlite:") {
        // `mode=rwc` creates the file when missing.
        let sep = if rest.contains('?') { '&' } else { '?' };
        let url = if rest.contains("mode=") {
            url.to_owned()
        } else {
            format!("{url}{sep}mode=rwc")
        };
        return Ok((Backend::Sqlite, url));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_owned()));
    }
    Err(StoreError::UnsupportedUrl(url.to_owned()))
}

/// Hides a password in a URL before it goes into an error message.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            normalise("sqlite://a/b.db").expect("sqlite"),
            (Backend::Sqlite, "sqlite://a/b.db?mode=rwc".to_owned())
        );
        assert_eq!(
            normalise("postgres://x@h/db").expect("pg").0,
            Backend::Postgres
        );
        assert!(normalise("mysql://x").is_err());
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
