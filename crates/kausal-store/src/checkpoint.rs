//! SQLite's write-ahead log, checkpointed off the writers' path.
//!
//! By default SQLite checkpoints inside the commit that crossed 1 000 pages
//! of log, so that writer waits while the pages are copied into the
//! database file and the file is synced to disk. Measured on this project's
//! ingest (1 M spans, 4 KiB pages, `synchronous = NORMAL`), that wait was
//! about half of every writer's time. Instead, the store's connections turn
//! the automatic checkpoint off and one task per [`crate::Store`] runs a
//! `PASSIVE` checkpoint every [`INTERVAL`]: it copies what it can while
//! writers go on. A passive checkpoint cannot catch up with a writer that
//! never pauses, and the log only starts over once it has been copied
//! whole, so when the log has grown past [`LOG_LIMIT`] frames the task
//! takes this process's writer turn (see [`crate::Store::begin_write`])
//! and finishes the copy while no writer of the process appends: the next
//! writer then starts the log over. The log stays near that size instead
//! of growing without bound.
//!
//! Writers of other processes on the same file do not take this process's
//! turn; each process runs its own task, and a checkpoint that a writer
//! elsewhere interrupts is simply tried again at the next tick.

use std::sync::Arc;
use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

/// How often the task checkpoints.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

/// Frames of log (pages: 4 KiB each by default) past which the task waits
/// for the writer turn to finish the copy, so that the log starts over.
pub(crate) const LOG_LIMIT: i64 = 4096;

/// The checkpoint task of one store and its clones: stops when the last
/// clone is dropped or the pool is closed.
#[derive(Debug)]
pub(crate) struct Checkpointer(JoinHandle<()>);

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Checkpointer {
    /// Starts the task on the current tokio runtime.
    pub(crate) fn spawn(pool: AnyPool, writer: Arc<Mutex<()>>) -> Self {
        Self(tokio::spawn(run(pool, writer)))
    }
}

async fn run(pool: AnyPool, writer: Arc<Mutex<()>>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if pool.is_closed() {
            return;
        }
        match passive(&pool).await {
            Ok(log) if log > LOG_LIMIT => {
                let _turn = writer.lock().await;
                if let Err(e) = passive(&pool).await {
                    tracing::debug!(error = %e, "checkpoint under the writer turn failed; next tick tries again");
                }
            }
            Ok(_) => {}
            // A checkpoint of another process, or a closed pool: next tick.
            Err(e) => tracing::debug!(error = %e, "checkpoint failed; next tick tries again"),
        }
    }
}

/// One passive checkpoint; the frames in the log (copied or not).
async fn passive(pool: &AnyPool) -> Result<i64, sqlx::Error> {
    let (_busy, log, _copied): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
        .fetch_one(pool)
        .await?;
    Ok(log)
}
