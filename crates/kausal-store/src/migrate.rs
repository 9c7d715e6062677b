//! Numbered migrations from `ddl/NNN-name.sql`, applied once each, in order,
//! recorded in `kausal_schema`.

use sqlx::AnyPool;

use crate::{Backend, Result, StoreError};

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
];

pub(crate) async fn apply(pool: &AnyPool, backend: Backend) -> Result<()> {
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
        // Services started together race to migrate a fresh database. On
        // SQLite a deferred transaction that read the schema cannot upgrade
        // to a writer once another process wrote ("database is locked",
        // without waiting for the busy timeout): take the write lock first.
        let mut tx = match backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => pool.begin().await?,
        };
        let applied: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM kausal_schema WHERE version = $1")
                .bind(*version)
                .fetch_one(&mut *tx)
                .await?;
        if applied > 0 {
            tx.rollback().await?;
            continue;
        }
        for statement in statements(sql) {
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

fn is_blank(statement: &str) -> bool {
    statement
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with("--"))
}

#[cfg(test)]
mod tests {
    use super::statements;

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
