//! Lineage store benchmark (issue 4): ingest throughput through
//! `Store::record_batch` and the latency of the lineage queries, on SQLite
//! (a fresh file in a temp dir) and on PostgreSQL (a fresh schema, dropped at
//! the end) when `KAUSAL_TEST_DATABASE_URL` is set. Results are printed,
//! never asserted.
//!
//! ```text
//! cargo bench -p kausal-store --bench lineage
//! KAUSAL_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//! KAUSAL_BENCH_LINEAGE_ROWS=1000000 cargo bench -p kausal-store --bench lineage
//! ```
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KAUSAL_BENCH_LINEAGE_ROWS` | events to ingest (rounded down to whole chains of 5) | 1000000 |
//! | `KAUSAL_BENCH_LINEAGE_QUERIES` | measured calls per query kind | 1000 |
//! | `KAUSAL_BENCH_LINEAGE_BACKENDS` | comma-separated subset of `sqlite,postgres` | both |
//! | `KAUSAL_BENCH_LINEAGE_RECEIPTS` | `1`: also write one receipt per event | off |
//! | `KAUSAL_TEST_DATABASE_URL` | PostgreSQL server; unset skips PostgreSQL | unset |
//!
//! Synthetic data, no Kafka: correlation chains of five events shaped like
//! the reference system, OrderPlaced → PaymentProcessed → (InventoryReserved
//! → ShipmentCreated, CustomerNotified), UUIDv7 ids, keys `ord-N`,
//! increasing timestamps, written in batches of 1000 events.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kausal_store::{Backend, LineageEvent, Receipt, Store};

const BATCH_EVENTS: usize = 1000;
const CHAIN_LEN: usize = 5;
const WARMUP_QUERIES: usize = 50;
const SEED: u64 = 0x6b61_7573_616c;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; a filter argument has nothing to filter.
    let config = Config::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config))
}

#[derive(Debug)]
struct Config {
    rows: usize,
    queries: usize,
    receipts: bool,
    sqlite: bool,
    postgres: Option<String>,
}

impl Config {
    fn from_env() -> Result<Self, BoxError> {
        let rows = env_usize("KAUSAL_BENCH_LINEAGE_ROWS", 1_000_000)?;
        let queries = env_usize("KAUSAL_BENCH_LINEAGE_QUERIES", 1000)?;
        let receipts = std::env::var("KAUSAL_BENCH_LINEAGE_RECEIPTS").is_ok_and(|v| v == "1");
        let backends = std::env::var("KAUSAL_BENCH_LINEAGE_BACKENDS")
            .unwrap_or_else(|_| "sqlite,postgres".to_owned());
        let wanted = |name: &str| backends.split(',').any(|b| b.trim() == name);
        let postgres = std::env::var(kausal_store::testing::DATABASE_URL_ENV).ok();
        if wanted("postgres") && postgres.is_none() {
            eprintln!(
                "note: {} is not set, PostgreSQL is skipped",
                kausal_store::testing::DATABASE_URL_ENV
            );
        }
        Ok(Self {
            rows: rows / CHAIN_LEN * CHAIN_LEN,
            queries,
            receipts,
            sqlite: wanted("sqlite"),
            postgres: postgres.filter(|_| wanted("postgres")),
        })
    }
}

fn env_usize(name: &str, default: usize) -> Result<usize, BoxError> {
    match std::env::var(name) {
        Ok(v) => Ok(v.replace('_', "").parse()?),
        Err(_) => Ok(default),
    }
}

async fn run(config: Config) -> Result<(), BoxError> {
    let mut results = Vec::new();
    if config.sqlite {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("lineage-bench.db");
        let store = Store::connect(&format!("sqlite://{}", path.display())).await?;
        let mut result = bench("sqlite", &store, &config).await?;
        store.close().await;
        result.size_bytes = sqlite_size(&path);
        results.push(result);
    }
    if let Some(base) = &config.postgres {
        let schema = format!(
            "kausal_bench_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
        );
        let admin = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect(base)
            .await?;
        // The schema name is made here from digits and underscores only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await?;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
        let outcome = async {
            let store = Store::connect(&url).await?;
            let result = bench("postgres", &store, &config).await;
            store.close().await;
            result
        }
        .await;
        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&admin)
            .await;
        if let Err(e) = dropped {
            eprintln!("warning: could not drop schema {schema}: {e}");
        }
        admin.close().await;
        results.push(outcome?);
    }
    print_report(&config, &results);
    Ok(())
}

/// Ids of one generated chain, kept for the chains the queries sample.
#[derive(Debug, Clone)]
struct ChainIds {
    correlation_id: String,
    root: String,
    leaf: String,
    key: String,
}

#[derive(Debug)]
struct BenchResult {
    backend: &'static str,
    rows: u64,
    receipts: u64,
    ingest: Duration,
    ingest_wall: Duration,
    analyze: Option<Duration>,
    size_bytes: Option<u64>,
    chain: Latencies,
    descendants: Latencies,
    root_cause: Latencies,
    by_key: Latencies,
}

async fn bench(
    backend: &'static str,
    store: &Store,
    config: &Config,
) -> Result<BenchResult, BoxError> {
    let chains = config.rows / CHAIN_LEN;
    let mut rng = SplitMix64(SEED);
    // The chains the queries will hit, chosen before ingest so that only
    // their ids are kept in memory.
    let picks: Vec<usize> = (0..config.queries.max(WARMUP_QUERIES))
        .map(|_| rng.below(chains))
        .collect();
    let mut wanted: HashMap<usize, Option<ChainIds>> = picks.iter().map(|&c| (c, None)).collect();

    eprintln!(
        "[{backend}] ingesting {} events ({chains} chains) in batches of {BATCH_EVENTS}{}",
        config.rows,
        if config.receipts {
            " with one receipt per event"
        } else {
            ""
        }
    );
    let base_ms: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z
    let chains_per_batch = BATCH_EVENTS / CHAIN_LEN;
    let mut ingest = Duration::ZERO;
    let mut written = (0u64, 0u64);
    let wall = Instant::now();
    let mut next_report = chains / 10;
    let mut events = Vec::with_capacity(BATCH_EVENTS);
    let mut receipts = Vec::with_capacity(if config.receipts { BATCH_EVENTS } else { 0 });
    let mut chain = 0;
    while chain < chains {
        events.clear();
        receipts.clear();
        let end = (chain + chains_per_batch).min(chains);
        for n in chain..end {
            let ids = synth_chain(n, base_ms, &mut events);
            if let Some(slot) = wanted.get_mut(&n) {
                *slot = Some(ids);
            }
        }
        if config.receipts {
            receipts.extend(events.iter().map(receipt_for));
        }
        let started = Instant::now();
        let counts = store.record_batch(&events, &receipts, &[]).await?;
        ingest += started.elapsed();
        written.0 += counts.events;
        written.1 += counts.receipts;
        chain = end;
        if chain >= next_report && chains >= 10 {
            eprintln!(
                "[{backend}]   {} events, {:.0} events/s",
                chain * CHAIN_LEN,
                (chain * CHAIN_LEN) as f64 / ingest.as_secs_f64()
            );
            next_report += chains / 10;
        }
    }
    let ingest_wall = wall.elapsed();
    let stored = store.lineage_row_counts().await?;
    if stored.events != written.0 || written.0 != config.rows as u64 {
        return Err(format!(
            "[{backend}] expected {} events, record_batch reported {}, table holds {}",
            config.rows, written.0, stored.events
        )
        .into());
    }

    // PostgreSQL plans the recursive walks from statistics; autovacuum would
    // gather them shortly after a bulk load, do it now so that the numbers
    // do not depend on its timing.
    let analyze = if store.backend() == Backend::Postgres {
        let started = Instant::now();
        sqlx::query("ANALYZE events").execute(store.pool()).await?;
        Some(started.elapsed())
    } else {
        None
    };

    let sample: Vec<ChainIds> = picks
        .iter()
        .map(|c| {
            wanted
                .get(c)
                .and_then(Clone::clone)
                .ok_or_else(|| format!("chain {c} was not generated"))
        })
        .collect::<Result<_, _>>()?;
    eprintln!(
        "[{backend}] querying: {} calls per kind after {WARMUP_QUERIES} warm-up calls",
        config.queries
    );
    // Warm-up: prepared statements and the connection pool, not measured.
    for ids in sample.iter().take(WARMUP_QUERIES) {
        store.chain(&ids.correlation_id).await?;
        store.descendants(&ids.root).await?;
        store.root_cause(&ids.leaf).await?;
        store.events_by_key(&ids.key).await?;
    }
    let measured = &sample[..config.queries.min(sample.len())];
    let chain = measure(measured, |ids| async move {
        let got = store.chain(&ids.correlation_id).await?;
        check(got.len() == CHAIN_LEN, "chain", &ids.correlation_id)
    })
    .await?;
    let descendants = measure(measured, |ids| async move {
        let got = store.descendants(&ids.root).await?;
        check(got.len() == CHAIN_LEN - 1, "descendants", &ids.root)
    })
    .await?;
    let root_cause = measure(measured, |ids| async move {
        let got = store.root_cause(&ids.leaf).await?;
        let ok = got.is_some_and(|e| e.event_id == ids.root);
        check(ok, "root_cause", &ids.leaf)
    })
    .await?;
    let by_key = measure(measured, |ids| async move {
        let got = store.events_by_key(&ids.key).await?;
        check(got.len() == CHAIN_LEN, "events_by_key", &ids.key)
    })
    .await?;
    let size_bytes = if store.backend() == Backend::Postgres {
        let size: i64 =
            sqlx::query_scalar("SELECT CAST(pg_total_relation_size('events') AS BIGINT)")
                .fetch_one(store.pool())
                .await?;
        let receipts: i64 =
            sqlx::query_scalar("SELECT CAST(pg_total_relation_size('receipts') AS BIGINT)")
                .fetch_one(store.pool())
                .await?;
        u64::try_from(size + receipts).ok()
    } else {
        None
    };
    Ok(BenchResult {
        backend,
        rows: written.0,
        receipts: written.1,
        ingest,
        ingest_wall,
        analyze,
        size_bytes,
        chain,
        descendants,
        root_cause,
        by_key,
    })
}

fn check(ok: bool, query: &str, id: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("{query}({id}) returned an unexpected result").into())
    }
}

/// Times each call separately, in the order given (random chains).
async fn measure<'a, F, Fut>(sample: &'a [ChainIds], mut call: F) -> Result<Latencies, BoxError>
where
    F: FnMut(&'a ChainIds) -> Fut,
    Fut: Future<Output = Result<(), BoxError>>,
{
    let mut times = Vec::with_capacity(sample.len());
    for ids in sample {
        let started = Instant::now();
        call(ids).await?;
        times.push(started.elapsed());
    }
    Ok(Latencies::new(times))
}

/// Appends chain `n`'s five events to `out` and returns its ids:
/// OrderPlaced → PaymentProcessed → InventoryReserved → ShipmentCreated,
/// and PaymentProcessed → CustomerNotified.
fn synth_chain(n: usize, base_ms: i64, out: &mut Vec<LineageEvent>) -> ChainIds {
    let correlation_id = uuid::Uuid::now_v7().to_string();
    let trace_id = uuid::Uuid::now_v7().simple().to_string();
    let key = format!("ord-{n}");
    // A new order every millisecond; each hop a few milliseconds later.
    let start = base_ms + i64::try_from(n).unwrap_or(i64::MAX);
    // One event per chain on each topic: (topic, n % 3, n / 3) is unique.
    let partition = i32::try_from(n % 3).unwrap_or_default();
    let offset = i64::try_from(n / 3).unwrap_or(i64::MAX);
    let steps: [(&str, &str, &str, Option<usize>, i64); CHAIN_LEN] = [
        ("OrderPlaced", "order", "orders", None, 0),
        ("PaymentProcessed", "payment", "payments", Some(0), 12),
        ("InventoryReserved", "inventory", "inventory", Some(1), 25),
        (
            "CustomerNotified",
            "notification",
            "notifications",
            Some(1),
            27,
        ),
        ("ShipmentCreated", "fulfillment", "shipments", Some(2), 40),
    ];
    let first = out.len();
    for (event_type, service, topic, cause, delay_ms) in steps {
        let causation_id = cause.map(|i| out[first + i].event_id.clone());
        let occurred_at_ms = start + delay_ms;
        out.push(LineageEvent {
            event_id: uuid::Uuid::now_v7().to_string(),
            event_type: Some(event_type.to_owned()),
            event_version: Some(1),
            correlation_id: correlation_id.clone(),
            causation_id,
            source_service: Some(service.to_owned()),
            topic: topic.to_owned(),
            partition,
            offset,
            key: Some(key.clone()),
            trace_id: Some(trace_id.clone()),
            span_id: Some(format!(
                "{:016x}",
                (n as u64) << 3 | (out.len() - first) as u64
            )),
            occurred_at_ms,
            recorded_at_ms: occurred_at_ms + 3,
        });
    }
    ChainIds {
        correlation_id,
        root: out[first].event_id.clone(),
        leaf: out[first + 4].event_id.clone(),
        key,
    }
}

fn receipt_for(e: &LineageEvent) -> Receipt {
    Receipt {
        receipt_id: uuid::Uuid::now_v7().to_string(),
        event_id: e.event_id.clone(),
        consumer_group: format!("{}-consumer", e.topic),
        service: e.topic.clone(),
        topic: e.topic.clone(),
        partition: e.partition,
        offset: e.offset,
        outcome: "processed".to_owned(),
        attempts: 1,
        error_type: None,
        error_message: None,
        duration_ms: 1.5,
        trace_id: e.trace_id.clone(),
        span_id: e.span_id.clone(),
        handled_at_ms: e.occurred_at_ms + 2,
        correlation_id: Some(e.correlation_id.clone()),
    }
}

#[derive(Debug)]
struct Latencies {
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

impl Latencies {
    fn new(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        // Nearest rank: the smallest value with at least p % of calls at or below it.
        let rank = |p: usize| {
            let i = (times.len() * p).div_ceil(100).saturating_sub(1);
            times.get(i).copied().unwrap_or_default()
        };
        let total: Duration = times.iter().sum();
        Self {
            p50: rank(50),
            p99: rank(99),
            max: times.last().copied().unwrap_or_default(),
            mean: total / u32::try_from(times.len().max(1)).unwrap_or(u32::MAX),
        }
    }

    fn p50_p99(&self) -> String {
        format!("{} / {}", ms(self.p50), ms(self.p99))
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn sqlite_size(path: &std::path::Path) -> Option<u64> {
    let mut total = std::fs::metadata(path).ok()?.len();
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        total += std::fs::metadata(&side).map(|m| m.len()).unwrap_or(0);
    }
    Some(total)
}

/// Deterministic sampling without a `rand` dependency.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or_default()
    }
}

fn print_report(config: &Config, results: &[BenchResult]) {
    println!();
    println!(
        "Lineage store: {} events in batches of {BATCH_EVENTS}{}; {} random calls per query (ms, p50 / p99)",
        config.rows,
        if config.receipts {
            " plus one receipt per event"
        } else {
            ""
        },
        config.queries
    );
    println!();
    println!(
        "| backend | rows | ingest events/s | chain p50/p99 | descendants p50/p99 | root cause p50/p99 | events_by_key p50/p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in results {
        println!(
            "| {} | {} | {:.0} | {} | {} | {} | {} |",
            r.backend,
            r.rows,
            r.rows as f64 / r.ingest.as_secs_f64(),
            r.chain.p50_p99(),
            r.descendants.p50_p99(),
            r.root_cause.p50_p99(),
            r.by_key.p50_p99(),
        );
    }
    println!();
    println!(
        "| backend | ingest s (in record_batch) | wall s (incl. generation) | receipts | ANALYZE s | size MB | chain mean/max | descendants mean/max | root cause mean/max | events_by_key mean/max |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let mean_max = |l: &Latencies| format!("{} / {}", ms(l.mean), ms(l.max));
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            r.backend,
            r.ingest.as_secs_f64(),
            r.ingest_wall.as_secs_f64(),
            r.receipts,
            r.analyze
                .map_or_else(|| "-".to_owned(), |d| format!("{:.1}", d.as_secs_f64())),
            r.size_bytes.map_or_else(
                || "-".to_owned(),
                |b| format!("{:.0}", b as f64 / 1_048_576.0)
            ),
            mean_max(&r.chain),
            mean_max(&r.descendants),
            mean_max(&r.root_cause),
            mean_max(&r.by_key),
        );
    }
    println!();
    println!(
        "Targets of issue 4 (reference only, not asserted): ingest >= 50000 events/s; chain p99 < 5 ms at 10 M rows."
    );
}
