//! The outbox relay's lease: which relay instance may publish the outbox
//! now. Two relays running against one store (two replicas of a service,
//! or an old process still stopping while the new one starts) would both
//! read the same pending rows and publish each event twice; with the lease
//! only its holder publishes, the other waits and tries again.
//!
//! A lease is one row `(name, holder, expires_at_ms)`. Taking and renewing
//! it is one upsert ([`Store::outbox_lease_acquire`]) that writes only when
//! the row is missing, already the caller's, or expired: one row affected
//! means the caller holds it. Both backends decide a race on the primary
//! key (PostgreSQL makes the second upsert wait for the first and re-checks
//! the condition against the row the first left; SQLite has one writer at
//! a time), so two holders never both see success for overlapping
//! periods, provided their clocks agree to well within the lease's length:
//! expiry is compared with the caller's `now_ms`.
//!
//! The lease is not a fence: a holder that stalls past its expiry (a long
//! pause, a batch slower than the lease) may still finish publishing what
//! it had read while the next holder publishes the same rows. That costs
//! duplicates, never a loss, which at-least-once delivery already allows.

use sqlx::Row;

use crate::{Result, Store};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxLease {
    /// The instance that took it last.
    pub holder: String,
    /// Until when it holds, milliseconds since the Unix epoch (by the
    /// holder's clock). Past it, anyone may take the lease over.
    pub expires_at_ms: i64,
}

impl Store {
    /// Takes lease `name` for `holder` until `now_ms + duration_ms`, or
    /// renews it when `holder` already holds it. Returns `false`, writing
    /// nothing, while another holder's lease runs (until its expiry, which
    /// is compared with `now_ms`).
    pub async fn outbox_lease_acquire(
        &self,
        name: &str,
        holder: &str,
        now_ms: i64,
        duration_ms: i64,
    ) -> Result<bool> {
        let affected = sqlx::query(include_str!("../sql/outbox_lease_acquire.sql"))
            .bind(name)
            .bind(holder)
            .bind(now_ms.saturating_add(duration_ms))
            .bind(now_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(affected > 0)
    }

    /// Gives lease `name` up if `holder` still holds it, so that another
    /// relay can take it at once instead of after its expiry. Returns
    /// whether it did (`false`: it had expired and been taken over, or was
    /// never held).
    pub async fn outbox_lease_release(&self, name: &str, holder: &str) -> Result<bool> {
        let affected = sqlx::query(include_str!("../sql/outbox_lease_release.sql"))
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(affected > 0)
    }

    /// Lease `name` as stored, expired or not; `None` when nobody took it
    /// (or the last holder released it).
    pub async fn outbox_lease(&self, name: &str) -> Result<Option<OutboxLease>> {
        let row = sqlx::query(include_str!("../sql/outbox_lease_get.sql"))
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(OutboxLease {
                holder: r.try_get("holder")?,
                expires_at_ms: r.try_get("expires_at_ms")?,
            })
        })
        .transpose()
    }
}
