//! Retention of lineage (issue 12): lineage events, receipts and
//! idempotency keys older than the retention age are deleted in bounded
//! batches, like the console's spans and log records
//! ([`Store::prune_telemetry`]).
//!
//! Each table is aged by one time column (indexed by migration 005):
//!
//! | table | column | meaning |
//! |---|---|---|
//! | `events` | `recorded_at_ms` | when the recorder stored the row |
//! | `receipts` | `handled_at_ms` | when the consumer handled the record |
//! | `processed_events` | `processed_at_ms` | when the idempotency key was written |
//!
//! Events are aged by when Kausal recorded them, not by the record's own
//! timestamp: that one is set by whoever produced the record (a plain
//! client, a skewed clock, a replay of an old record) and could make a row
//! leave at once or never.
//!
//! The DLQ ledger (`dead_letters`) is never pruned: it is the on-call
//! record, and a pending entry stays until it is replayed or discarded. An
//! entry older than the retention age keeps its own fields, bytes and
//! headers (so it can still be replayed), while the events and receipts of
//! its correlation may be gone.

use serde::Serialize;

use crate::{Result, Store};

/// Rows one [`Store::prune_lineage`] call deleted, per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PrunedLineage {
    pub events: u64,
    pub receipts: u64,
    /// Processed-event marks (idempotency keys).
    pub idempotency_keys: u64,
}

impl PrunedLineage {
    /// Rows deleted from every table together.
    pub fn total(&self) -> u64 {
        self.events + self.receipts + self.idempotency_keys
    }
}

impl Store {
    /// Deletes at most `batch` lineage events, receipts and idempotency keys
    /// each that are older than `before_ms` (by the columns in the module
    /// docs), each table in its own short statement; dead letters are kept.
    /// Call again until [`PrunedLineage::total`] is 0.
    pub async fn prune_lineage(&self, before_ms: i64, batch: i64) -> Result<PrunedLineage> {
        let mut pruned = PrunedLineage::default();
        for (sql, rows) in [
            (
                include_str!("../sql/retention_prune_events.sql"),
                &mut pruned.events,
            ),
            (
                include_str!("../sql/retention_prune_receipts.sql"),
                &mut pruned.receipts,
            ),
            (
                include_str!("../sql/retention_prune_processed_events.sql"),
                &mut pruned.idempotency_keys,
            ),
        ] {
            *rows = sqlx::query(sql)
                .bind(before_ms)
                .bind(batch)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(pruned)
    }
}
