//! Numbered migrations from `ddl/NNN-name.sql`, applied once each, in order,
//! recorded in `kausal_schema` (one row per applied version).
//!
//! Several processes may connect to one fresh database at the same moment
//! (services started together) and all migrate it:
//!
//! - PostgreSQL: the whole run holds a session-level advisory lock on one
//!   dedicated connection ([`MIGRATION_LOCK_KEY`], `sql/migration_lock.sql`),
//!   so runs are serialised: the first applies what is missing, the others
//!   wait, then find every version recorded. Without it two runs both saw a
//!   version missing and both ran its `CREATE TABLE … IF NOT EXISTS`, and the
//!   second failed on the catalog's unique index (`IF NOT EXISTS` does not
//!   see a table another transaction has not committed yet).
//! - SQLite: each migration runs in a `BEGIN IMMEDIATE` transaction, which
//!   takes the file's single write lock before reading `kausal_schema`
//!   (waiting out other writers for the busy timeout), and re-checks the
//!   version inside it. SQLite has one writer per file, so that already
//!   serialises migrations; it has no advisory locks to take.
//!
//! One file serves both backends. Where a table truly differs (the event
//! store's auto-assigned position and its transaction-id column), the file
//! holds one statement per backend and tags each with a comment line of its
//! own before it, `-- backend: sqlite` or `-- backend: postgres`: a tagged
//! statement runs on that backend only, an untagged one on both. The
//! version is recorded alike on both, so a database's history does not
//! depend on its backend.
//!
//! Why not `sqlx::migrate::Migrator` (which takes a PostgreSQL advisory lock
//! itself): its SQLite lock is a no-op and it applies a migration without
//! re-checking inside a deferred transaction, so processes sharing one
//! SQLite file would race again; databases deployed so far record their
//! versions in `kausal_schema`, not `_sqlx_migrations`; and it refuses to
//! start when an applied file's checksum changed (a comment edited).

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Connection};

use crate::{Backend, Result, Store, StoreError};

/// The key of the PostgreSQL advisory lock held while migrating: "Kausal" in
/// ASCII. Advisory locks are per database, so Kausal stores in different
/// schemas of one database take turns (harmless: each run is short).
pub const MIGRATION_LOCK_KEY: i64 = 0x4b61_7573_616c;

/// Every migration, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "001-processed-events",
        include_str!("../ddl/001-processed-events.sql"),
    ),
    (2, "002-lineage", include_str!("../ddl/002-lineage.sql")),
    (
        3,
        "003-order-views",
        include_str!("../ddl/003-order-views.sql"),
    ),
    (4, "004-telemetry", include_str!("../ddl/004-telemetry.sql")),
    (5, "005-retention", include_str!("../ddl/005-retention.sql")),
    (
        6,
        "006-recent-events-by-type",
        include_str!("../ddl/006-recent-events-by-type.sql"),
    ),
    (
        7,
        "007-event-store",
        include_str!("../ddl/007-event-store.sql"),
    ),
    (
        8,
        "008-outbox-lease",
        include_str!("../ddl/008-outbox-lease.sql"),
    ),
    (
        9,
        "009-read-model",
        include_str!("../ddl/009-read-model.sql"),
    ),
    (
        10,
        "010-span-detail",
        include_str!("../ddl/010-span-detail.sql"),
    ),
    (
        11,
        "011-span-trace-index",
        include_str!("../ddl/011-span-trace-index.sql"),
    ),
    (
        12,
        "012-span-link-index",
        include_str!("../ddl/012-span-link-index.sql"),
    ),
];

pub(crate) async fn apply(pool: &AnyPool, backend: Backend) -> Result<()> {
    let mut conn = pool.acquire().await?;
    match backend {
        Backend::Sqlite => apply_unlocked(&mut conn, backend).await,
        Backend::Postgres => apply_locked(&mut conn).await,
    }
}

/// Migrates under the advisory lock, on the connection that holds it.
async fn apply_locked(conn: &mut PoolConnection<Any>) -> Result<()> {
    sqlx::query(include_str!("../sql/migration_lock.sql"))
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut **conn)
        .await
        .map_err(|source| StoreError::Migration {
            name: "migration_lock",
            source,
        })?;
    let result = apply_unlocked(conn, Backend::Postgres).await;
    let unlocked = sqlx::query(include_str!("../sql/migration_unlock.sql"))
        .bind(MIGRATION_LOCK_KEY)
        .execute(&mut **conn)
        .await;
    if result.is_err() || unlocked.is_err() {
        // Never hand a connection that may still hold the lock back to the
        // pool: closing it ends the session, which releases the lock.
        conn.close_on_drop();
    }
    result?;
    unlocked.map_err(|source| StoreError::Migration {
        name: "migration_unlock",
        source,
    })?;
    Ok(())
}

async fn apply_unlocked(conn: &mut AnyConnection, backend: Backend) -> Result<()> {
    sqlx::query(include_str!("../sql/schema_create.sql"))
        .execute(&mut *conn)
        .await
        .map_err(|source| StoreError::Migration {
            name: "kausal_schema",
            source,
        })?;
    for (version, name, sql) in MIGRATIONS {
        if is_applied(&mut *conn, *version).await? {
            continue;
        }
        // On SQLite a deferred transaction that read the schema cannot
        // upgrade to a writer once another process wrote ("database is
        // locked", without waiting for the busy timeout): take the write
        // lock first, then look again.
        let mut tx = match backend {
            Backend::Sqlite => conn.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => conn.begin().await?,
        };
        if is_applied(&mut tx, *version).await? {
            tx.rollback().await?;
            continue;
        }
        for statement in statements(sql).into_iter().filter(|s| runs_on(s, backend)) {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(|source| StoreError::Migration { name, source })?;
        }
        sqlx::query(include_str!("../sql/schema_version_insert.sql"))
            .bind(*version)
            .bind(*name)
            .execute(&mut *tx)
            .await
            .map_err(|source| StoreError::Migration { name, source })?;
        tx.commit().await?;
    }
    Ok(())
}

async fn is_applied(conn: &mut AnyConnection, version: i64) -> Result<bool> {
    let count: i64 = sqlx::query_scalar(include_str!("../sql/schema_version_applied.sql"))
        .bind(version)
        .fetch_one(conn)
        .await?;
    Ok(count > 0)
}

impl Store {
    /// The migrations this database has applied, as (version, name) in
    /// version order: one row per migration, the same list as
    /// [`MIGRATIONS`] once [`Store::connect`] returned.
    pub async fn applied_migrations(&self) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as(include_str!("../sql/schema_versions.sql"))
            .fetch_all(self.pool())
            .await?)
    }
}

/// Splits a DDL file into statements at each `;` outside a `--` comment,
/// dropping pieces that hold only comments. (DDL files put no `;` inside
/// string literals.)
fn statements(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_comment = false;
    let mut previous = '\0';
    for (i, c) in sql.char_indices() {
        match c {
            '-' if previous == '-' && !in_comment => in_comment = true,
            '\n' => in_comment = false,
            ';' if !in_comment => {
                out.push(&sql[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        previous = c;
    }
    out.push(&sql[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|s| !is_blank(s))
        .collect()
}

/// The tag line that restricts a statement to one backend.
fn backend_tag(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "-- backend: sqlite",
        Backend::Postgres => "-- backend: postgres",
    }
}

/// Whether `statement` runs on `backend`: untagged statements run on both,
/// tagged ones (a line of the comments before the SQL) on theirs only.
fn runs_on(statement: &str, backend: Backend) -> bool {
    let tags: Vec<&str> = statement
        .lines()
        .map(str::trim)
        .take_while(|l| l.is_empty() || l.starts_with("--"))
        .filter(|l| {
            [Backend::Sqlite, Backend::Postgres]
                .map(backend_tag)
                .contains(l)
        })
        .collect();
    tags.is_empty() || tags.contains(&backend_tag(backend))
}

fn is_blank(statement: &str) -> bool {
    statement
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
}

#[cfg(test)]
mod tests {
    use super::{runs_on, statements};
    use crate::Backend;

    #[test]
    fn tagged_statements_run_on_their_backend_only() {
        let cases = [
            ("CREATE TABLE a (x BIGINT)", true, true),
            (
                "-- backend: sqlite\nCREATE TABLE a (x INTEGER)",
                true,
                false,
            ),
            (
                "-- why\n-- backend: postgres\n-- more\nCREATE TABLE a (x BIGINT)",
                false,
                true,
            ),
            // A tag after the SQL has started is not a tag.
            (
                "CREATE TABLE a (\n-- backend: sqlite\nx BIGINT)",
                true,
                true,
            ),
        ];
        for (statement, sqlite, postgres) in cases {
            assert_eq!(runs_on(statement, Backend::Sqlite), sqlite, "{statement}");
            assert_eq!(
                runs_on(statement, Backend::Postgres),
                postgres,
                "{statement}"
            );
        }
    }

    #[test]
    fn the_event_store_table_is_created_once_per_backend() {
        let sql = include_str!("../ddl/007-event-store.sql");
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let creates = statements(sql)
                .into_iter()
                .filter(|s| runs_on(s, backend))
                .filter(|s| s.contains("CREATE TABLE IF NOT EXISTS event_store_events"))
                .count();
            assert_eq!(creates, 1, "{backend:?}");
        }
    }

    #[test]
    fn semicolons_in_comments_do_not_split_statements() {
        let sql = "-- one; two\nCREATE TABLE a (x BIGINT);\n-- three;\n\nCREATE INDEX i ON a (x);\n-- end\n";
        assert_eq!(
            statements(sql),
            [
                "-- one; two\nCREATE TABLE a (x BIGINT)",
                "-- three;\n\nCREATE INDEX i ON a (x)"
            ]
        );
    }
}
