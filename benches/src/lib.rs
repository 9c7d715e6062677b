//! What the benchmarks share (the benchmarks themselves live in `benches/`
//! and in the crates' own `benches/`; see docs/benchmarks.md): environment
//! knobs, a fresh database per run, latency percentiles and the machine's
//! state printed next to the figures.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use kausal_store::Store;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A count from the environment (`1_000_000` allowed), or `default`.
pub fn env_usize(name: &str, default: usize) -> Result<usize, BoxError> {
    match std::env::var(name) {
        Ok(v) => Ok(v.replace('_', "").parse()?),
        Err(_) => Ok(default),
    }
}

/// A comma-separated list from the environment, or `default`'s.
pub fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The databases a benchmark runs on: SQLite, and PostgreSQL when
/// `KAUSAL_TEST_DATABASE_URL` names a server.
#[derive(Debug, Clone)]
pub struct Backends {
    pub sqlite: bool,
    /// The PostgreSQL server's URL, when wanted and set.
    pub postgres: Option<String>,
}

impl Backends {
    /// The comma-separated subset of `sqlite,postgres` in `var` (both when
    /// unset); PostgreSQL is skipped, saying so, without a server.
    pub fn from_env(var: &str) -> Self {
        let wanted = env_list(var, "sqlite,postgres");
        let wants = |name: &str| wanted.iter().any(|b| b == name);
        let postgres = std::env::var(kausal_store::testing::DATABASE_URL_ENV).ok();
        if wants("postgres") && postgres.is_none() {
            eprintln!(
                "note: {} is not set, PostgreSQL is skipped",
                kausal_store::testing::DATABASE_URL_ENV
            );
        }
        Self {
            sqlite: wants("sqlite"),
            postgres: postgres.filter(|_| wants("postgres")),
        }
    }

    /// `"sqlite"`, `"postgres"`: what [`with_fresh_store`] takes.
    pub fn names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.sqlite {
            out.push("sqlite");
        }
        if self.postgres.is_some() {
            out.push("postgres");
        }
        out
    }
}

/// Runs `f` on a fresh store — a SQLite file in a temporary directory for
/// `"sqlite"`, a new schema on the PostgreSQL server `postgres` for
/// `"postgres"` — and removes it afterwards, also when `f` failed.
pub async fn with_fresh_store<T, F, Fut>(
    postgres: Option<&str>,
    backend: &str,
    f: F,
) -> Result<T, BoxError>
where
    F: FnOnce(Store) -> Fut,
    Fut: Future<Output = Result<T, BoxError>>,
{
    let dir = tempfile::tempdir()?;
    let (url, schema) = match postgres.filter(|_| backend == "postgres") {
        None => (
            format!("sqlite://{}", dir.path().join("bench.db").display()),
            None,
        ),
        Some(base) => {
            let schema = format!("kausal_bench_{}_{}", std::process::id(), now_ms());
            admin(base, &format!("CREATE SCHEMA {schema}")).await?;
            let sep = if base.contains('?') { '&' } else { '?' };
            (
                format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                Some((base, schema)),
            )
        }
    };
    let outcome = async {
        let store = Store::connect(&url).await?;
        let result = f(store.clone()).await;
        store.close().await;
        result
    }
    .await;
    if let Some((base, schema)) = schema
        && let Err(e) = admin(base, &format!("DROP SCHEMA {schema} CASCADE")).await
    {
        eprintln!("warning: could not drop schema {schema}: {e}");
    }
    outcome
}

/// One statement on the PostgreSQL server (schema names are made here from
/// digits and underscores only).
async fn admin(base: &str, statement: &str) -> Result<(), BoxError> {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(base)
        .await?;
    sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&pool)
        .await?;
    pool.close().await;
    Ok(())
}

/// Percentiles of measured durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    pub calls: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Latencies {
    pub fn new(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        // Nearest rank: the smallest value with at least p % of the calls
        // at or below it.
        let rank = |p: usize| {
            let i = (times.len() * p).div_ceil(100).saturating_sub(1);
            times.get(i).copied().unwrap_or_default()
        };
        Self {
            calls: times.len(),
            p50: rank(50),
            p99: rank(99),
            max: times.last().copied().unwrap_or_default(),
        }
    }
}

/// The CPU time this process used so far (user + system, Linux `/proc`).
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((user + system) * 10))
}

/// The one-minute load average, printed next to figures from a shared
/// machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned())
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let times = (1..=200).map(Duration::from_millis).collect();
        let l = Latencies::new(times);
        assert_eq!(l.calls, 200);
        assert_eq!(l.p50, Duration::from_millis(100));
        assert_eq!(l.p99, Duration::from_millis(198));
        assert_eq!(l.max, Duration::from_millis(200));
        assert_eq!(Latencies::new(Vec::new()).p99, Duration::ZERO);
    }
}
