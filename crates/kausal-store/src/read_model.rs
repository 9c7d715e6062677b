//! The ledger's read model (read-model-service): per account, the sums of
//! the legs projected from `EntryPosted` events — debits, credits, balance
//! (`debits - credits`, the ledger's convention), postings — and a
//! statement, one line per leg with the balance after it.
//!
//! [`Store::project_entry`] writes one event in one transaction and is
//! idempotent by itself, whatever guard the caller has: each line is
//! inserted with `ON CONFLICT (account_id, event_id, leg_index) DO
//! NOTHING`, and an account's sums move only by the lines actually
//! inserted, so a redelivered event inserts nothing and changes nothing
//! ([`Projected::Duplicate`]).
//!
//! Concurrent projections (entries on different partitions touching one
//! account) are serialised per account: the transaction takes each account
//! it touches, in account id order (so two entries never wait for each
//! other in a cycle), with a row-locking no-op `UPDATE … RETURNING` on
//! PostgreSQL; on SQLite `BEGIN IMMEDIATE` holds the file's write lock.
//! A line's `seq` is the account's posting count after it, the
//! statement's cursor.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use crate::{Result, Store, StoreError};

/// The most statement lines one read returns.
pub const MAX_STATEMENT_PAGE: i64 = 500;

/// Which side of an account a leg is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Debit,
    Credit,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Debit => "debit",
            Self::Credit => "credit",
        }
    }

    fn parse(text: &str) -> Result<Self> {
        match text {
            "debit" => Ok(Self::Debit),
            "credit" => Ok(Self::Credit),
            other => Err(StoreError::Write(format!(
                "a statement line's direction is {other:?}, neither debit nor credit"
            ))),
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry to project: what an `EntryPosted` event says, and its event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedEntry {
    /// The event's `event-id`: with the leg's index, what makes a line
    /// unique.
    pub event_id: String,
    pub entry_id: String,
    pub description: String,
    /// Every leg's currency (ISO 4217).
    pub currency: String,
    pub order_id: Option<String>,
    /// RFC 3339, as the ledger wrote it.
    pub posted_at: String,
    pub legs: Vec<ProjectedLeg>,
}

/// One leg of a [`ProjectedEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedLeg {
    pub account: String,
    pub side: Side,
    /// Minor units, positive.
    pub amount: i64,
}

/// What [`Store::project_entry`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projected {
    /// The entry's lines were written and the sums moved.
    Applied { lines: usize },
    /// Every leg was already projected (a redelivery): nothing changed.
    Duplicate,
}

/// Why an entry was not projected. Everything but [`Self::Store`] is about
/// the entry itself: projecting it again gives the same answer.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error(
        "account {account} is kept in {account_currency}, but entry {entry_id} posts \
         {entry_currency} to it: an account has one currency"
    )]
    CurrencyMismatch {
        account: String,
        entry_id: String,
        account_currency: String,
        entry_currency: String,
    },
    #[error("leg {index} of entry {entry_id} has amount {amount}: amounts are positive")]
    InvalidAmount {
        entry_id: String,
        index: usize,
        amount: i64,
    },
    #[error("entry {entry_id} would overflow account {account}'s sums (64-bit minor units)")]
    Overflow { account: String, entry_id: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<sqlx::Error> for ProjectError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Query(e))
    }
}

/// An account as projected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountProjection {
    pub account: String,
    /// Fixed by the account's first projected leg.
    pub currency: String,
    /// Sum of the debit legs, minor units.
    pub debits: i64,
    /// Sum of the credit legs, minor units.
    pub credits: i64,
    /// `debits - credits`.
    pub balance: i64,
    /// Legs projected to the account (its statement's lines).
    pub postings: i64,
    /// When the last line was projected, ms since the Unix epoch.
    pub updated_at_ms: i64,
}

/// One line of an account's statement: one leg.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementLine {
    /// The line's number on the account, from 1: the statement's cursor.
    pub seq: i64,
    pub entry_id: String,
    pub direction: Side,
    /// Minor units.
    pub amount: i64,
    /// The account's balance (`debits - credits`) after this line.
    pub balance_after: i64,
    pub description: String,
    pub order_id: Option<String>,
    /// RFC 3339.
    pub posted_at: String,
    /// The `EntryPosted` event's id, and the leg's index in it.
    pub event_id: String,
    pub leg_index: i64,
}

/// A page of a statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementPage {
    pub lines: Vec<StatementLine>,
    /// The `after` of the next page; `None` when this page holds the last
    /// line projected so far.
    pub next_after: Option<i64>,
}

/// An account's sums while an entry is projected.
#[derive(Debug, Clone, Copy)]
struct Sums {
    debits: i64,
    credits: i64,
    balance: i64,
    postings: i64,
    changed: bool,
}

impl Sums {
    /// The sums with `leg` counted; `None` on overflow.
    fn with(self, leg: &ProjectedLeg) -> Option<Self> {
        let (debits, credits, balance) = match leg.side {
            Side::Debit => (
                self.debits.checked_add(leg.amount)?,
                self.credits,
                self.balance.checked_add(leg.amount)?,
            ),
            Side::Credit => (
                self.debits,
                self.credits.checked_add(leg.amount)?,
                self.balance.checked_sub(leg.amount)?,
            ),
        };
        Some(Self {
            debits,
            credits,
            balance,
            postings: self.postings.checked_add(1)?,
            changed: true,
        })
    }
}

impl Store {
    /// Projects `entry` in one transaction: a statement line per leg not
    /// projected before, and each touched account's sums moved by those
    /// lines only. Refuses, writing nothing, an entry in another currency
    /// than an account it touches already has, a non-positive amount, or
    /// sums that would overflow.
    pub async fn project_entry(
        &self,
        entry: &ProjectedEntry,
        now_ms: i64,
    ) -> Result<Projected, ProjectError> {
        if let Some((index, leg)) = entry.legs.iter().enumerate().find(|(_, l)| l.amount <= 0) {
            return Err(ProjectError::InvalidAmount {
                entry_id: entry.entry_id.clone(),
                index,
                amount: leg.amount,
            });
        }
        let (_turn, mut tx) = self.begin_write().await?;
        // Every account first, in id order: one lock order for everyone.
        let accounts: BTreeSet<&str> = entry.legs.iter().map(|l| l.account.as_str()).collect();
        let mut sums: BTreeMap<&str, Sums> = BTreeMap::new();
        for account in accounts {
            let (currency, current) =
                lock_account(&mut tx, account, &entry.currency, now_ms).await?;
            if currency != entry.currency {
                tx.rollback().await?;
                return Err(ProjectError::CurrencyMismatch {
                    account: account.to_owned(),
                    entry_id: entry.entry_id.clone(),
                    account_currency: currency,
                    entry_currency: entry.currency.clone(),
                });
            }
            sums.insert(account, current);
        }
        let mut lines = 0;
        for (index, leg) in entry.legs.iter().enumerate() {
            let Some(current) = sums.get_mut(leg.account.as_str()) else {
                continue;
            };
            let Some(next) = current.with(leg) else {
                tx.rollback().await?;
                return Err(ProjectError::Overflow {
                    account: leg.account.clone(),
                    entry_id: entry.entry_id.clone(),
                });
            };
            let inserted = sqlx::query(include_str!("../sql/read_model_line_insert.sql"))
                .bind(&leg.account)
                .bind(next.postings)
                .bind(&entry.event_id)
                .bind(index as i64)
                .bind(&entry.entry_id)
                .bind(leg.side.as_str())
                .bind(leg.amount)
                .bind(next.balance)
                .bind(&entry.description)
                .bind(&entry.order_id)
                .bind(&entry.posted_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if inserted > 0 {
                *current = next;
                lines += 1;
            }
        }
        if lines == 0 {
            tx.rollback().await?;
            return Ok(Projected::Duplicate);
        }
        for (account, s) in sums.iter().filter(|(_, s)| s.changed) {
            sqlx::query(include_str!("../sql/read_model_account_update.sql"))
                .bind(*account)
                .bind(s.debits)
                .bind(s.credits)
                .bind(s.balance)
                .bind(s.postings)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Projected::Applied { lines })
    }

    /// Account `account` as projected; `None` before its first leg.
    pub async fn read_model_account(&self, account: &str) -> Result<Option<AccountProjection>> {
        let row = sqlx::query(include_str!("../sql/read_model_account.sql"))
            .bind(account)
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| {
            Ok(AccountProjection {
                account: r.try_get(0)?,
                currency: r.try_get(1)?,
                debits: r.try_get(2)?,
                credits: r.try_get(3)?,
                balance: r.try_get(4)?,
                postings: r.try_get(5)?,
                updated_at_ms: r.try_get(6)?,
            })
        })
        .transpose()
    }

    /// Up to `limit` (1 to [`MAX_STATEMENT_PAGE`]; clamped) lines of
    /// `account`'s statement after line `after` (0: from the first), in
    /// order, and the cursor of the next page if there are more lines.
    pub async fn read_model_statement(
        &self,
        account: &str,
        after: i64,
        limit: i64,
    ) -> Result<StatementPage> {
        let limit = limit.clamp(1, MAX_STATEMENT_PAGE);
        let rows = sqlx::query(include_str!("../sql/read_model_statement.sql"))
            .bind(account)
            .bind(after.max(0))
            .bind(limit + 1)
            .fetch_all(self.pool())
            .await?;
        let mut lines = rows.iter().map(line_from).collect::<Result<Vec<_>>>()?;
        let next_after = if lines.len() as i64 > limit {
            lines.truncate(limit as usize);
            lines.last().map(|l| l.seq)
        } else {
            None
        };
        Ok(StatementPage { lines, next_after })
    }
}

/// Creates `account` if new (in `currency`), locks its row and reads it.
async fn lock_account(
    tx: &mut Transaction<'static, Any>,
    account: &str,
    currency: &str,
    now_ms: i64,
) -> Result<(String, Sums)> {
    sqlx::query(include_str!("../sql/read_model_account_ensure.sql"))
        .bind(account)
        .bind(currency)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    let row = sqlx::query(include_str!("../sql/read_model_account_lock.sql"))
        .bind(account)
        .fetch_one(&mut **tx)
        .await?;
    Ok((
        row.try_get(0)?,
        Sums {
            debits: row.try_get(1)?,
            credits: row.try_get(2)?,
            balance: row.try_get(3)?,
            postings: row.try_get(4)?,
            changed: false,
        },
    ))
}

fn line_from(r: &AnyRow) -> Result<StatementLine> {
    Ok(StatementLine {
        seq: r.try_get(0)?,
        event_id: r.try_get(1)?,
        leg_index: r.try_get(2)?,
        entry_id: r.try_get(3)?,
        direction: Side::parse(&r.try_get::<String, _>(4)?)?,
        amount: r.try_get(5)?,
        balance_after: r.try_get(6)?,
        description: r.try_get(7)?,
        order_id: r.try_get(8)?,
        posted_at: r.try_get(9)?,
    })
}
