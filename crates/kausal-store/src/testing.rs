//! Test support: every store test runs against each configured backend.
//! SQLite always; PostgreSQL when `KAUSAL_TEST_DATABASE_URL` is set. A set
//! but unreachable PostgreSQL fails the test: it never passes silently.

use crate::{Result, Store};

/// The environment variable naming the PostgreSQL server for tests.
pub const DATABASE_URL_ENV: &str = "KAUSAL_TEST_DATABASE_URL";

/// A database for one test, removed (SQLite file, PostgreSQL schema) with
/// the value where possible.
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    pub label: &'static str,
    _dir: Option<tempfile::TempDir>,
}

/// One fresh database per backend: a new SQLite file, and a new schema in
/// the PostgreSQL database named by `KAUSAL_TEST_DATABASE_URL`.
pub async fn databases() -> Result<Vec<TestDatabase>> {
    let mut out = vec![sqlite()?];
    if let Ok(base) = std::env::var(DATABASE_URL_ENV) {
        out.push(TestDatabase {
            url: fresh_schema(&base).await?,
            label: "postgres",
            _dir: None,
        });
    }
    Ok(out)
}

/// A new SQLite file in a temporary directory, removed with the value.
pub fn sqlite() -> Result<TestDatabase> {
    let dir = tempfile::tempdir().map_err(|e| crate::StoreError::Query(sqlx::Error::Io(e)))?;
    Ok(TestDatabase {
        url: format!("sqlite://{}", dir.path().join("kausal.db").display()),
        label: "sqlite",
        _dir: Some(dir),
    })
}

/// A fresh PostgreSQL schema, for a test that only means something on
/// PostgreSQL (concurrent transactions, row locks). Unlike [`databases`],
/// it panics when `KAUSAL_TEST_DATABASE_URL` is unset: such a test must
/// fail, never pass by skipping, when the server is missing.
pub async fn postgres() -> TestDatabase {
    let base = std::env::var(DATABASE_URL_ENV).unwrap_or_else(|_| {
        panic!(
            "{DATABASE_URL_ENV} names the test PostgreSQL; scripts/prepare.sh starts one and sets it"
        )
    });
    let url = fresh_schema(&base)
        .await
        .unwrap_or_else(|e| panic!("a fresh schema on {base}: {e}"));
    TestDatabase {
        url,
        label: "postgres",
        _dir: None,
    }
}

/// Creates a uniquely named schema and returns a URL whose connections use it.
async fn fresh_schema(base: &str) -> Result<String> {
    sqlx::any::install_default_drivers();
    let schema = format!("kausal_test_{}", uuid_like());
    // A short timeout: an unreachable server should fail the test quickly.
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect(base)
        .await
        .map_err(|source| crate::StoreError::Connect {
            url: base.to_owned(),
            source,
        })?;
    // The schema name is made here from digits and underscores only.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&pool)
        .await?;
    pool.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    Ok(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}_{}", std::process::id(), nanos)
}

/// Connects to a test database.
pub async fn connect(db: &TestDatabase) -> Result<Store> {
    Store::connect(&db.url).await
}

/// Waits until every committed event of the event store is readable through
/// [`Store::read_all`]. On PostgreSQL `read_all` holds back events behind
/// any transaction still open in the cluster (other tests' included: that is
/// the method, see [`crate::event_store`]), so a test that wants "everything
/// committed so far" in one read waits for those to end. Nothing signals
/// that, so this polls, every 2 ms, for at most 30 s, and panics after.
/// Once settled it stays settled: transactions that start later have larger
/// ids than the events read.
pub async fn settle_read_all(store: &Store) {
    use crate::GlobalCursor;
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let committed = store
                .events_after(GlobalCursor::START)
                .await
                .expect("count the committed events");
            let readable = store
                .read_all(GlobalCursor::START, committed + 1)
                .await
                .expect("read_all")
                .len();
            if readable as i64 >= committed {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the transactions open in the database cluster end within 30 s");
}
