//! Numbered migrations from `ddl/NNN-name.sql`, applied once each, in order,
//! recorded in `kausal_schema`.

use sqlx::AnyPool;

use crate::{Result, StoreError};

/// Every migration, in order: (version, name, SQL).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "001-processed-events",
    include_str!("../ddl/001-processed-events.sql"),
)];

pub(crate) async fn apply(pool: &AnyPool) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS kausal_schema (version BIGINT PRIMARY KEY, name TEXT NOT NULL)",
    )
    .execute(pool)
    .await
    .map_err(|source| StoreError::Migration {
        name: "kausal_schema",
        source,
    })?;
    for (version, name, sql) in MIGRATIONS {
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM kausal_schema WHERE version = $1")
                .bind(*version)
                .fetch_one(pool)
                .await?;
        if applied > 0 {
            continue;
        }
        let mut tx = pool.begin().await?;
        for statement in sql.split(';').map(str::trim).filter(|s| !is_blank(s)) {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(|source| StoreError::Migration { name, source })?;
        }
        // Two processes may race to migrate a fresh database; the loser's
        // insert conflicts and its transaction rolls back harmlessly.
        sqlx::query(
            "INSERT INTO kausal_schema (version, name) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
        )
        .bind(*version)
        .bind(*name)
        .execute(&mut *tx)
        .await
        .map_err(|source| StoreError::Migration { name, source })?;
        tx.commit().await?;
    }
    Ok(())
}

fn is_blank(statement: &str) -> bool {
    statement
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
}
