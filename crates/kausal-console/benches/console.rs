//! Console benchmark (issue 12): OTLP ingest and the correlation document,
//! on SQLite (a fresh file in a temp dir) and PostgreSQL (a fresh schema,
//! dropped at the end) when `KAUSAL_TEST_DATABASE_URL` is set. Results are
//! printed as Markdown tables, never asserted.
//!
//! ```text
//! cargo bench -p kausal-console --bench console
//! KAUSAL_BENCH_CONSOLE_INGEST_SPANS=200000 KAUSAL_BENCH_CONSOLE_STORED_SPANS=1000000 \
//!     cargo bench -p kausal-console --bench console          # the quick run
//! ```
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KAUSAL_BENCH_CONSOLE_INGEST_SPANS` | spans per ingest run | 1000000 |
//! | `KAUSAL_BENCH_CONSOLE_SENDERS` | comma-separated concurrent senders, one ingest run (direct and HTTP) each | `1,4` |
//! | `KAUSAL_BENCH_CONSOLE_STORED_SPANS` | spans in the store for the query part; 0 skips it | 10000000 |
//! | `KAUSAL_BENCH_CONSOLE_FILLER_LINEAGE` | `0`: the other correlations get spans and logs only, no events or receipts | `1` |
//! | `KAUSAL_BENCH_CONSOLE_QUERIES` | measured calls of the correlation document | 500 |
//! | `KAUSAL_BENCH_CONSOLE_QUERY_SECONDS` | time per latency measurement, after which it stops (at least 20 calls; a tenth of it, at least 5 calls, per store query of the breakdown) | 120 |
//! | `KAUSAL_BENCH_CONSOLE_BACKENDS` | comma-separated subset of `sqlite,postgres` | both |
//! | `KAUSAL_TEST_DATABASE_URL` | PostgreSQL server; unset skips PostgreSQL | unset |
//!
//! **Ingest.** Spans shaped like the reference system's (a `send` PRODUCER
//! and a `process` CONSUMER span per hop, handler and idempotency INTERNAL
//! spans, the order API's SERVER span, gateway and e-mail CLIENT spans;
//! ~15 attributes each with the `messaging.*` set and the conversation id,
//! one or two span events, a link on every tenth span (to a context that
//! is not stored); random 16-byte trace ids), grouped per service into requests of 512 spans as the SDK's batch
//! exporter sends them, protobuf, uncompressed. Each run gets a fresh
//! database and sends every request once:
//!
//! - *direct*: the requests decoded to rows beforehand, then
//!   `Store::record_telemetry` per request from `senders` tasks: the
//!   store's own rate, the baseline;
//! - *HTTP*: `POST /v1/traces` to a console served in this process
//!   (`kausal_console::serve`, a real TCP socket on 127.0.0.1) from
//!   `senders` tasks with reqwest: the path an exporter takes (HTTP, body
//!   read, protobuf decode, rows, the same `record_telemetry`).
//!
//! **Correlation document.** A fresh database is filled with
//! `KAUSAL_BENCH_CONSOLE_STORED_SPANS` spans, the fastest honest way: rows
//! made on a thread of their own from OTLP messages by the receiver's own
//! mapping (`otlp::span_rows`, `otlp::log_rows`; no protobuf, no HTTP) and
//! written with `record_telemetry` (spans, links, logs) and
//! `Store::record_batch` (events, receipts, dead letters) in transactions
//! of 1 000 correlations (20 000 spans) each, one writer. It needs about
//! 2.1–2.3 GB of disk per million stored spans (SQLite and PostgreSQL
//! alike; one backend at a time). Other correlations are one order each:
//! 5 events, 4 receipts, 20 spans in one trace, 5 log lines. Halfway
//! through comes the measured correlation: 10 orders of the same
//! conversation (each caused by the previous one's shipment), each in its
//! own trace: 49 events, 40 receipts, one dead letter
//! (`MissingCustomerEmail` at the notification service), 199 spans, 500
//! log lines, and a batch span linking one other correlation's trace (20
//! more spans through the link). Then `GET /api/correlations/{id}` is called
//! one call at a time, and the same document built without HTTP
//! (`kausal_console::query::correlation`) as the baseline, and each store
//! query of the document timed alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use kausal_console::otlp::{self, Decoded, Format};
use kausal_console::{ConsoleConfig, query};
use kausal_store::{Backend, DeadLetterEntry, LineageEvent, LogRow, Receipt, SpanRow, Store};
use kausal_telemetry::spans::attr;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Spans per OTLP request: the SDK batch exporter's `max_export_batch_size`.
const REQUEST_SPANS: usize = 512;
/// Correlations per bulk-load transaction (20 000 spans).
const LOAD_CORRELATIONS: usize = 1_000;
const WARMUP_QUERIES: usize = 20;
/// Calls per store query in the breakdown, at most.
const BREAKDOWN_CALLS: usize = 200;
/// Calls per measurement at least, whatever the time budget.
const MIN_CALLS: usize = 20;
/// The issue's targets, printed next to the numbers.
const INGEST_TARGET_SQLITE: f64 = 50_000.0;
const P99_TARGET: Duration = Duration::from_millis(50);
const SEED: u64 = 0x6b61_7573_616c;

const SERVICES: [&str; 5] = [
    "order-service",
    "payment-service",
    "inventory-service",
    "notification-service",
    "fulfillment-service",
];
const ORDER: usize = 0;
const PAYMENT: usize = 1;
const INVENTORY: usize = 2;
const NOTIFICATION: usize = 3;
const FULFILLMENT: usize = 4;

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let config = Config::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config))
}

#[derive(Debug)]
struct Config {
    ingest_spans: usize,
    senders: Vec<usize>,
    stored_spans: usize,
    filler_lineage: bool,
    queries: usize,
    /// Time per latency measurement, after which it stops (with at least
    /// `MIN_CALLS` calls).
    query_budget: Duration,
    sqlite: bool,
    postgres: Option<String>,
}

impl Config {
    fn from_env() -> Result<Self, BoxError> {
        let backends = std::env::var("KAUSAL_BENCH_CONSOLE_BACKENDS")
            .unwrap_or_else(|_| "sqlite,postgres".to_owned());
        let wanted = |name: &str| backends.split(',').any(|b| b.trim() == name);
        let postgres = std::env::var(kausal_store::testing::DATABASE_URL_ENV).ok();
        if wanted("postgres") && postgres.is_none() {
            eprintln!(
                "note: {} is not set, PostgreSQL is skipped",
                kausal_store::testing::DATABASE_URL_ENV
            );
        }
        let senders = std::env::var("KAUSAL_BENCH_CONSOLE_SENDERS")
            .unwrap_or_else(|_| "1,4".to_owned())
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse::<usize>().map(|n| n.max(1)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            ingest_spans: env_usize("KAUSAL_BENCH_CONSOLE_INGEST_SPANS", 1_000_000)?,
            senders,
            stored_spans: env_usize("KAUSAL_BENCH_CONSOLE_STORED_SPANS", 10_000_000)?,
            filler_lineage: std::env::var("KAUSAL_BENCH_CONSOLE_FILLER_LINEAGE")
                .map_or(true, |v| v != "0"),
            queries: env_usize("KAUSAL_BENCH_CONSOLE_QUERIES", 500)?.max(1),
            query_budget: Duration::from_secs(
                env_usize("KAUSAL_BENCH_CONSOLE_QUERY_SECONDS", 120)?.try_into()?,
            ),
            sqlite: wanted("sqlite"),
            postgres: postgres.filter(|_| wanted("postgres")),
        })
    }

    fn backends(&self) -> Vec<&'static str> {
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

fn env_usize(name: &str, default: usize) -> Result<usize, BoxError> {
    match std::env::var(name) {
        Ok(v) => Ok(v.replace('_', "").parse()?),
        Err(_) => Ok(default),
    }
}

async fn run(config: Config) -> Result<(), BoxError> {
    // Each part's tables are printed as soon as it is done: a long run
    // stopped halfway keeps what it measured.
    let mut ingest_results = Vec::new();
    let mut notes = Vec::new();
    if config.ingest_spans > 0 && !config.backends().is_empty() {
        let workload = IngestWorkload::generate(config.ingest_spans);
        notes.push(format!(
            "Ingest requests: {} spans in {} requests of up to {REQUEST_SPANS} spans, {:.0} bytes of protobuf per span; \
             protobuf decode + rows (`otlp::decode` + `otlp::span_rows`, one thread): {:.2} µs per span ({:.0} spans/s per core).",
            workload.spans,
            workload.bodies.len(),
            workload.body_bytes as f64 / workload.spans as f64,
            workload.decode.as_secs_f64() * 1e6 / workload.spans as f64,
            workload.spans as f64 / workload.decode.as_secs_f64(),
        ));
        eprintln!("{}", notes[notes.len() - 1]);
        for backend in config.backends() {
            for &senders in &config.senders {
                ingest_results.push(ingest_direct(&config, backend, &workload, senders).await?);
                ingest_results.push(ingest_http(&config, backend, &workload, senders).await?);
            }
        }
        print_report(&config, &ingest_results, &[], &notes);
    }
    if config.stored_spans > 0 {
        for backend in config.backends() {
            let result = correlation_queries(&config, backend).await?;
            print_report(&config, &[], std::slice::from_ref(&result), &[]);
        }
    }
    println!(
        "Targets of issue 12 (printed, not asserted): ingest ≥ 50 000 spans/s on SQLite; GET /api/correlations/{{id}} p99 < 50 ms with 10 M spans stored."
    );
    Ok(())
}

// ---- databases ----------------------------------------------------------

/// A fresh database, removed by [`FreshDb::remove`].
#[derive(Debug)]
struct FreshDb {
    url: String,
    dir: Option<tempfile::TempDir>,
    /// PostgreSQL: (server URL, schema).
    schema: Option<(String, String)>,
}

impl FreshDb {
    async fn create(config: &Config, backend: &str) -> Result<Self, BoxError> {
        if backend == "sqlite" {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("console-bench.db").display());
            return Ok(Self {
                url,
                dir: Some(dir),
                schema: None,
            });
        }
        let base = config
            .postgres
            .clone()
            .ok_or("PostgreSQL asked for without a URL")?;
        let schema = format!(
            "kausal_bench_console_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
        );
        let admin = admin_pool(&base).await?;
        // The schema name is made here from digits and underscores only.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&admin)
            .await?;
        admin.close().await;
        let sep = if base.contains('?') { '&' } else { '?' };
        Ok(Self {
            url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
            dir: None,
            schema: Some((base, schema)),
        })
    }

    /// Bytes on disk: the SQLite file with its WAL, or the PostgreSQL
    /// tables with their indexes and TOAST.
    async fn size_bytes(&self, store: &Store) -> Option<u64> {
        if let Some(dir) = &self.dir {
            let path = dir.path().join("console-bench.db");
            let mut total = std::fs::metadata(&path).ok()?.len();
            for suffix in ["-wal", "-shm"] {
                let mut side = path.as_os_str().to_owned();
                side.push(suffix);
                total += std::fs::metadata(&side).map(|m| m.len()).unwrap_or(0);
            }
            return Some(total);
        }
        let mut total = 0i64;
        for table in [
            "spans",
            "span_links",
            "log_records",
            "events",
            "receipts",
            "dead_letters",
        ] {
            let size: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST(pg_total_relation_size('{table}') AS BIGINT)"
            )))
            .fetch_one(store.pool())
            .await
            .ok()?;
            total += size;
        }
        u64::try_from(total).ok()
    }

    async fn remove(self) {
        if let Some((base, schema)) = &self.schema {
            let dropped = async {
                let admin = admin_pool(base).await?;
                sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                    .execute(&admin)
                    .await?;
                admin.close().await;
                Ok::<_, BoxError>(())
            }
            .await;
            if let Err(e) = dropped {
                eprintln!("warning: could not drop schema {schema}: {e}");
            }
        }
        drop(self.dir);
    }
}

async fn admin_pool(base: &str) -> Result<sqlx::AnyPool, BoxError> {
    sqlx::any::install_default_drivers();
    Ok(sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(base)
        .await?)
}

async fn count_rows(store: &Store, table: &str) -> Result<u64, BoxError> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(store.pool())
        .await?;
    Ok(u64::try_from(n)?)
}

/// Runs `f` with a fresh store and removes the database afterwards, also
/// when `f` failed.
async fn with_fresh_store<T, F, Fut>(config: &Config, backend: &str, f: F) -> Result<T, BoxError>
where
    F: FnOnce(Store, Arc<FreshDb>) -> Fut,
    Fut: Future<Output = Result<T, BoxError>>,
{
    let db = Arc::new(FreshDb::create(config, backend).await?);
    let outcome = async {
        let store = Store::connect(&db.url).await?;
        let result = f(store.clone(), db.clone()).await;
        store.close().await;
        result
    }
    .await;
    match Arc::try_unwrap(db) {
        Ok(db) => db.remove().await,
        Err(_) => eprintln!("warning: a database of the {backend} run is still in use"),
    }
    outcome
}

// ---- ingest ---------------------------------------------------------------

/// The requests of one ingest run, encoded, and the same decoded to rows.
#[derive(Debug)]
struct IngestWorkload {
    bodies: Arc<Vec<Bytes>>,
    rows: Arc<Vec<Decoded<SpanRow>>>,
    spans: usize,
    body_bytes: usize,
    /// Decoding every body to rows on one thread.
    decode: Duration,
}

impl IngestWorkload {
    fn generate(spans: usize) -> Self {
        eprintln!("generating {spans} spans in requests of {REQUEST_SPANS}");
        let mut generator = Generator::new(SEED, now_ms());
        let mut pending: [Vec<Span>; 5] = Default::default();
        let mut bodies = Vec::new();
        let mut emitted = 0;
        let mut n = 0u64;
        let mut scratch = Generated::default();
        while emitted < spans {
            scratch.clear();
            generator.correlation(n, &Shape::filler(), &mut scratch);
            n += 1;
            for (service, spans_of) in scratch.spans.iter_mut().enumerate() {
                pending[service].append(spans_of);
                while pending[service].len() >= REQUEST_SPANS && emitted < spans {
                    let take = REQUEST_SPANS.min(spans - emitted);
                    let batch: Vec<Span> = pending[service].drain(..take).collect();
                    emitted += batch.len();
                    bodies.push(generator.trace_request(service, batch).encode_to_vec());
                }
            }
        }
        let body_bytes = bodies.iter().map(Vec::len).sum();
        let started = Instant::now();
        let received = now_ms();
        let rows: Vec<Decoded<SpanRow>> = bodies
            .iter()
            .map(|body| {
                let request: ExportTraceServiceRequest =
                    otlp::decode(Format::Protobuf, body, "OTLP trace export")
                        .expect("the benchmark's own requests decode");
                otlp::span_rows(&request, received)
            })
            .collect();
        let decode = started.elapsed();
        Self {
            bodies: Arc::new(bodies.into_iter().map(Bytes::from).collect()),
            rows: Arc::new(rows),
            spans: emitted,
            body_bytes,
            decode,
        }
    }
}

#[derive(Debug)]
struct IngestResult {
    backend: &'static str,
    path: &'static str,
    senders: usize,
    spans: u64,
    elapsed: Duration,
    size_bytes: Option<u64>,
}

impl IngestResult {
    fn rate(&self) -> f64 {
        self.spans as f64 / self.elapsed.as_secs_f64()
    }
}

/// `Store::record_telemetry` per request, from `senders` tasks.
async fn ingest_direct(
    config: &Config,
    backend: &'static str,
    workload: &IngestWorkload,
    senders: usize,
) -> Result<IngestResult, BoxError> {
    eprintln!(
        "[{backend}] ingest direct: {} spans, {senders} sender(s)",
        workload.spans
    );
    with_fresh_store(config, backend, |store, db| async move {
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..senders {
            let (store, rows, next) = (store.clone(), workload.rows.clone(), next.clone());
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(decoded) = rows.get(i) else {
                        return Ok::<_, BoxError>(());
                    };
                    store
                        .record_telemetry(&decoded.rows, &decoded.links, &[], now_ms())
                        .await?;
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let elapsed = started.elapsed();
        let spans = check_spans(&store, workload.spans).await?;
        Ok(IngestResult {
            backend,
            path: "direct",
            senders,
            spans,
            elapsed,
            size_bytes: db.size_bytes(&store).await,
        })
    })
    .await
}

/// `POST /v1/traces` to a console in this process, from `senders` tasks.
async fn ingest_http(
    config: &Config,
    backend: &'static str,
    workload: &IngestWorkload,
    senders: usize,
) -> Result<IngestResult, BoxError> {
    eprintln!(
        "[{backend}] ingest over HTTP: {} spans, {senders} sender(s)",
        workload.spans
    );
    with_fresh_store(config, backend, |store, db| async move {
        let console = Console::start(store.clone()).await?;
        let url = format!("http://{}/v1/traces", console.addr);
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(senders)
            .build()?;
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..senders {
            let (client, url, bodies, next) = (
                client.clone(),
                url.clone(),
                workload.bodies.clone(),
                next.clone(),
            );
            tasks.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        return Ok::<_, BoxError>(());
                    };
                    let response = client
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(body.clone())
                        .send()
                        .await?;
                    let status = response.status();
                    let answer = response.bytes().await?;
                    if status != reqwest::StatusCode::OK {
                        return Err(format!(
                            "POST /v1/traces answered {status}: {}",
                            String::from_utf8_lossy(&answer)
                        )
                        .into());
                    }
                    let answer = ExportTraceServiceResponse::decode(answer)?;
                    if let Some(partial) = answer.partial_success {
                        return Err(format!("spans refused: {partial:?}").into());
                    }
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let elapsed = started.elapsed();
        console.stop().await;
        let spans = check_spans(&store, workload.spans).await?;
        Ok(IngestResult {
            backend,
            path: "HTTP",
            senders,
            spans,
            elapsed,
            size_bytes: db.size_bytes(&store).await,
        })
    })
    .await
}

async fn check_spans(store: &Store, expected: usize) -> Result<u64, BoxError> {
    let stored = count_rows(store, "spans").await?;
    if stored != expected as u64 {
        return Err(format!("expected {expected} spans stored, found {stored}").into());
    }
    Ok(stored)
}

/// A console served in this process on a free loopback port.
#[derive(Debug)]
struct Console {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Console {
    async fn start(store: Store) -> Result<Self, BoxError> {
        let shutdown = CancellationToken::new();
        let config = ConsoleConfig::new(([127, 0, 0, 1], 0).into(), "bench-token");
        let running = kausal_console::serve(config, store, shutdown.clone()).await?;
        Ok(Self {
            addr: running.http,
            shutdown,
            task: running.task,
        })
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

// ---- the correlation document ---------------------------------------------

#[derive(Debug)]
struct QueryResult {
    backend: &'static str,
    stored_spans: u64,
    stored_logs: u64,
    stored_events: u64,
    stored_receipts: u64,
    load: Duration,
    load_in_store: Duration,
    analyze: Option<Duration>,
    size_bytes: Option<u64>,
    document: DocumentShape,
    http: Latencies,
    direct: Latencies,
    serialise: Latencies,
    breakdown: Vec<(String, Latencies)>,
}

#[derive(Debug)]
struct DocumentShape {
    events: usize,
    receipts: usize,
    dead_letters: usize,
    traces: usize,
    spans: usize,
    logs: usize,
    missing: usize,
    bytes: usize,
    truncated: bool,
}

async fn correlation_queries(
    config: &Config,
    backend: &'static str,
) -> Result<QueryResult, BoxError> {
    with_fresh_store(config, backend, |store, db| async move {
        let load = bulk_load(&store, config, backend).await?;
        let stored_spans = count_rows(&store, "spans").await?;
        let stored_logs = count_rows(&store, "log_records").await?;
        let counts = store.lineage_row_counts().await?;
        eprintln!(
            "[{backend}] stored: {stored_spans} spans, {stored_logs} log records, {} events, {} receipts",
            counts.events, counts.receipts
        );
        // PostgreSQL plans from statistics that autovacuum gathers some time
        // after a bulk load; gather them now so that the numbers do not
        // depend on its timing.
        let analyze = if store.backend() == Backend::Postgres {
            let started = Instant::now();
            for table in ["spans", "span_links", "log_records", "events", "receipts", "dead_letters"] {
                sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
                    .execute(store.pool())
                    .await?;
            }
            Some(started.elapsed())
        } else {
            None
        };
        let id = load.target.correlation_id.clone();

        let console = Console::start(store.clone()).await?;
        let url = format!("http://{}/api/correlations/{id}", console.addr);
        let client = reqwest::Client::new();
        let body = fetch(&client, &url).await?;
        let document = shape_of(&body)?;
        eprintln!("[{backend}] the document: {document:?}");
        for _ in 0..WARMUP_QUERIES {
            fetch(&client, &url).await?;
        }
        eprintln!(
            "[{backend}] GET /api/correlations/{{id}}: {} calls or {} s",
            config.queries,
            config.query_budget.as_secs()
        );
        let mut times = Vec::with_capacity(config.queries);
        let phase = Instant::now();
        while times.len() < config.queries
            && (times.len() < MIN_CALLS || phase.elapsed() < config.query_budget)
        {
            let started = Instant::now();
            fetch(&client, &url).await?;
            times.push(started.elapsed());
        }
        let http = Latencies::new(times);
        console.stop().await;

        eprintln!(
            "[{backend}] query::correlation without HTTP: {} calls or {} s",
            config.queries,
            config.query_budget.as_secs()
        );
        let mut times = Vec::with_capacity(config.queries);
        let mut serialise = Vec::new();
        let phase = Instant::now();
        while times.len() < config.queries
            && (times.len() < MIN_CALLS || phase.elapsed() < config.query_budget)
        {
            let i = times.len();
            let started = Instant::now();
            let doc = query::correlation(&store, &id)
                .await?
                .ok_or("the correlation is not found")?;
            times.push(started.elapsed());
            if i < BREAKDOWN_CALLS {
                let started = Instant::now();
                let json = serde_json::to_vec(&doc)?;
                serialise.push(started.elapsed());
                std::hint::black_box(json);
            }
        }
        let direct = Latencies::new(times);
        let breakdown = breakdown(&store, &id, config.query_budget / 10).await?;
        let size_bytes = db.size_bytes(&store).await;
        Ok(QueryResult {
            backend,
            stored_spans,
            stored_logs,
            stored_events: counts.events,
            stored_receipts: counts.receipts,
            load: load.elapsed,
            load_in_store: load.in_store,
            analyze,
            size_bytes,
            document,
            http,
            direct,
            serialise: Latencies::new(serialise),
            breakdown,
        })
    })
    .await
}

/// One call, the whole body read.
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Bytes, BoxError> {
    let response = client.get(url).send().await?;
    let status = response.status();
    let body = response.bytes().await?;
    if status != reqwest::StatusCode::OK {
        return Err(format!(
            "GET {url} answered {status}: {}",
            String::from_utf8_lossy(&body)
        )
        .into());
    }
    Ok(body)
}

fn shape_of(body: &[u8]) -> Result<DocumentShape, BoxError> {
    let doc: serde_json::Value = serde_json::from_slice(body)?;
    let len = |key: &str| doc.get(key).and_then(|v| v.as_array()).map_or(0, Vec::len);
    Ok(DocumentShape {
        events: len("events"),
        receipts: len("receipts"),
        dead_letters: len("dead_letters"),
        traces: len("trace_ids"),
        spans: len("spans"),
        logs: len("logs"),
        missing: len("missing"),
        bytes: body.len(),
        truncated: doc
            .get("truncated")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
    })
}

/// Each store query of the document, timed alone (the order and arguments
/// of `query::correlation`).
async fn breakdown(
    store: &Store,
    id: &str,
    budget: Duration,
) -> Result<Vec<(String, Latencies)>, BoxError> {
    let doc = query::correlation(store, id)
        .await?
        .ok_or("the correlation is not found")?;
    let traces = doc.trace_ids.clone();
    let mut direct: Vec<String> = Vec::new();
    for e in &doc.events {
        if let Some(t) = &e.trace_id
            && !direct.contains(t)
        {
            direct.push(t.clone());
        }
    }
    let mut types: Vec<String> = doc
        .events
        .iter()
        .filter_map(|e| e.event_type.clone())
        .collect();
    types.sort();
    types.dedup();
    let limit = query::MAX_TRACES as i64;
    let mut out = Vec::new();
    macro_rules! time {
        ($name:expr, $call:expr) => {{
            let mut times = Vec::with_capacity(BREAKDOWN_CALLS);
            let phase = Instant::now();
            while times.len() < BREAKDOWN_CALLS
                && (times.len() < MIN_CALLS / 4 || phase.elapsed() < budget)
            {
                let started = Instant::now();
                std::hint::black_box($call.await?);
                times.push(started.elapsed());
            }
            out.push(($name.to_string(), Latencies::new(times)));
        }};
    }
    time!("chain (events)", store.chain(id));
    time!(
        "receipts_for_correlation",
        store.receipts_for_correlation(id)
    );
    time!(
        "dead_letters_for_correlation",
        store.dead_letters_for_correlation(id)
    );
    time!(
        "span_traces_for_correlation",
        store.span_traces_for_correlation(id, limit)
    );
    time!(
        format!("linked_traces_of ({} traces)", direct.len()),
        store.linked_traces_of(&direct)
    );
    time!(
        format!("spans_for_traces ({} traces)", traces.len()),
        store.spans_for_traces(&traces, query::MAX_SPANS_PER_TRACE)
    );
    time!(
        format!("logs_for_traces ({} traces)", traces.len()),
        store.logs_for_traces(&traces, query::MAX_LOGS)
    );
    time!(
        "logs_for_correlation",
        store.logs_for_correlation(id, query::MAX_LOGS)
    );
    for t in &types {
        time!(
            format!("receipt_groups_for_event_type({t})"),
            store.receipt_groups_for_event_type(t, kausal_console::query::MISSING_SAMPLE)
        );
    }
    Ok(out)
}

#[derive(Debug)]
struct Loaded {
    target: TargetIds,
    elapsed: Duration,
    /// Time inside `record_telemetry` and `record_batch`.
    in_store: Duration,
}

/// One bulk-load transaction's rows.
#[derive(Debug, Default)]
struct LoadChunk {
    spans: Decoded<SpanRow>,
    logs: Decoded<LogRow>,
    events: Vec<LineageEvent>,
    receipts: Vec<Receipt>,
    dead_letters: Vec<DeadLetterEntry>,
    spans_before: usize,
    target: Option<TargetIds>,
}

/// Fills the store with `stored_spans` spans: the other correlations and,
/// halfway, the measured one. Rows are made on a thread of their own while
/// the previous chunk is written.
async fn bulk_load(store: &Store, config: &Config, backend: &str) -> Result<Loaded, BoxError> {
    let target_spans = 199;
    let fillers = config.stored_spans.saturating_sub(target_spans) / 20;
    let with_lineage = config.filler_lineage;
    eprintln!(
        "[{backend}] loading {fillers} other correlations (20 spans, 5 log lines{} each) and the measured one, \
         {LOAD_CORRELATIONS} correlations per transaction",
        if with_lineage {
            ", 5 events, 4 receipts"
        } else {
            ", no lineage"
        }
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<LoadChunk>(2);
    let generator = std::thread::spawn(move || {
        let received = now_ms();
        let mut generator = Generator::new(SEED ^ 0x5eed, received);
        let middle = fillers / 2;
        let mut n = 0;
        let mut spans_before = 0;
        let mut last_filler_trace: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut target_done = false;
        while n < fillers || !target_done {
            let mut out = Generated::default();
            let mut target = None;
            let end = (n + LOAD_CORRELATIONS).min(fillers);
            for i in n..end {
                let lineage = (out.events.len(), out.receipts.len());
                let ids = generator.correlation(i as u64, &Shape::filler(), &mut out);
                last_filler_trace = Some((ids.trace_id, ids.span_id));
                if !with_lineage {
                    out.events.truncate(lineage.0);
                    out.receipts.truncate(lineage.1);
                }
                if i == middle && !target_done {
                    let shape = Shape::measured(last_filler_trace.clone());
                    target = Some(generator.correlation(u64::MAX, &shape, &mut out));
                    target_done = true;
                }
            }
            if !target_done && end >= fillers {
                let shape = Shape::measured(last_filler_trace.clone());
                target = Some(generator.correlation(u64::MAX, &shape, &mut out));
                target_done = true;
            }
            n = end;
            let spans = otlp::span_rows(&generator.trace_request_all(&mut out.spans), received);
            let logs = otlp::log_rows(&generator.logs_request_all(&mut out.logs), received);
            let chunk = LoadChunk {
                spans_before,
                spans,
                logs,
                events: std::mem::take(&mut out.events),
                receipts: std::mem::take(&mut out.receipts),
                dead_letters: std::mem::take(&mut out.dead_letters),
                target,
            };
            spans_before += chunk.spans.rows.len();
            if tx.blocking_send(chunk).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut in_store = Duration::ZERO;
    let mut target = None;
    let mut next_report = config.stored_spans / 10;
    let mut written = 0;
    while let Some(chunk) = rx.recv().await {
        let write = Instant::now();
        store
            .record_telemetry(
                &chunk.spans.rows,
                &chunk.spans.links,
                &chunk.logs.rows,
                now_ms(),
            )
            .await?;
        if !chunk.events.is_empty() || !chunk.receipts.is_empty() {
            store
                .record_batch(&chunk.events, &chunk.receipts, &chunk.dead_letters)
                .await?;
        }
        in_store += write.elapsed();
        written = chunk.spans_before + chunk.spans.rows.len();
        target = target.or(chunk.target);
        if written >= next_report && next_report > 0 {
            eprintln!(
                "[{backend}]   {written} spans, {:.0} spans/s (wall), {:.0} s",
                written as f64 / started.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            next_report += config.stored_spans / 10;
        }
    }
    let elapsed = started.elapsed();
    generator.join().map_err(|_| "the row generator panicked")?;
    eprintln!(
        "[{backend}] loaded {written} spans in {:.0} s ({:.0} s in the store)",
        elapsed.as_secs_f64(),
        in_store.as_secs_f64()
    );
    Ok(Loaded {
        target: target.ok_or("the measured correlation was not generated")?,
        elapsed,
        in_store,
    })
}

// ---- the generator --------------------------------------------------------

/// What one correlation is made of.
#[derive(Debug, Clone)]
struct Shape {
    /// Orders in the conversation, each in a trace of its own.
    rounds: usize,
    logs_per_round: usize,
    /// The round whose notification fails (dead-lettered).
    failing_round: Option<usize>,
    /// A span context the last round's fulfillment batch span links to.
    batch_link: Option<(Vec<u8>, Vec<u8>)>,
}

impl Shape {
    fn filler() -> Self {
        Self {
            rounds: 1,
            logs_per_round: 5,
            failing_round: None,
            batch_link: None,
        }
    }

    fn measured(batch_link: Option<(Vec<u8>, Vec<u8>)>) -> Self {
        Self {
            rounds: 10,
            logs_per_round: 50,
            failing_round: Some(3),
            batch_link,
        }
    }
}

#[derive(Debug, Clone)]
struct TargetIds {
    correlation_id: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
}

/// Rows of one or more correlations, spans and logs per service.
#[derive(Debug, Default)]
struct Generated {
    spans: [Vec<Span>; 5],
    logs: [Vec<LogRecord>; 5],
    events: Vec<LineageEvent>,
    receipts: Vec<Receipt>,
    dead_letters: Vec<DeadLetterEntry>,
}

impl Generated {
    fn clear(&mut self) {
        self.spans.iter_mut().for_each(Vec::clear);
        self.logs.iter_mut().for_each(Vec::clear);
        self.events.clear();
        self.receipts.clear();
        self.dead_letters.clear();
    }
}

/// The context of one hop, repeated in its spans' attributes.
#[derive(Debug, Clone)]
struct Hop {
    correlation_id: String,
    event_id: String,
    event_type: &'static str,
    topic: &'static str,
    partition: i32,
    offset: i64,
    key: String,
    send_span: Vec<u8>,
    occurred_at_ms: i64,
}

/// Makes spans, logs and lineage rows shaped like the reference system's.
#[derive(Debug)]
struct Generator {
    rng: SplitMix64,
    now_ms: i64,
    resources: Vec<Resource>,
    offsets: [i64; 6],
    spans_made: u64,
}

impl Generator {
    fn new(seed: u64, now_ms: i64) -> Self {
        let mut rng = SplitMix64(seed);
        let resources = SERVICES
            .iter()
            .map(|service| Resource {
                attributes: vec![
                    kv_str("service.name", service),
                    kv_str("service.version", "0.1.0"),
                    kv_str("service.namespace", "kausal"),
                    kv_str(
                        "service.instance.id",
                        &uuid::Uuid::from_u64_pair(rng.next(), rng.next()).to_string(),
                    ),
                    kv_str("telemetry.sdk.name", "opentelemetry"),
                    kv_str("telemetry.sdk.language", "rust"),
                    kv_str("telemetry.sdk.version", "0.31.0"),
                    kv_str("host.name", "bench-host-1"),
                    kv_int("process.pid", 4242),
                ],
                ..Default::default()
            })
            .collect();
        Self {
            rng,
            now_ms,
            resources,
            offsets: [0; 6],
            spans_made: 0,
        }
    }

    fn bytes<const N: usize>(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(N);
        while out.len() < N {
            out.extend_from_slice(&self.rng.next().to_le_bytes());
        }
        out.truncate(N);
        out
    }

    /// A UUIDv7 at `ms`, as Kausal's event and correlation ids are.
    fn uuid_v7(&mut self, ms: i64) -> String {
        let random: [u8; 10] = self.bytes::<10>().try_into().unwrap_or_default();
        uuid::Builder::from_unix_timestamp_millis(u64::try_from(ms).unwrap_or_default(), &random)
            .into_uuid()
            .to_string()
    }

    fn trace_request(&self, service: usize, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![self.resource_spans(service, spans)],
        }
    }

    fn resource_spans(&self, service: usize, spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(self.resources[service].clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }
    }

    fn trace_request_all(&self, spans: &mut [Vec<Span>; 5]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: spans
                .iter_mut()
                .enumerate()
                .map(|(service, s)| self.resource_spans(service, std::mem::take(s)))
                .collect(),
        }
    }

    fn logs_request_all(&self, logs: &mut [Vec<LogRecord>; 5]) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: logs
                .iter_mut()
                .enumerate()
                .map(|(service, l)| ResourceLogs {
                    resource: Some(self.resources[service].clone()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope()),
                        log_records: std::mem::take(l),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                })
                .collect(),
        }
    }

    /// Appends correlation `n` to `out`: `shape.rounds` orders, each
    /// OrderPlaced → PaymentProcessed → (InventoryReserved →
    /// ShipmentCreated, CustomerNotified) in a trace of its own.
    fn correlation(&mut self, n: u64, shape: &Shape, out: &mut Generated) -> TargetIds {
        // One order a millisecond, the last hour; the measured one now.
        let start_ms = if n == u64::MAX {
            self.now_ms - 60_000
        } else {
            self.now_ms - 3_600_000 + i64::try_from(n % 3_000_000).unwrap_or_default()
        };
        let correlation_id = self.uuid_v7(start_ms);
        let key = if n == u64::MAX {
            "ord-measured".to_owned()
        } else {
            format!("ord-{n:08}")
        };
        let mut cause: Option<String> = None;
        let mut first = None;
        for round in 0..shape.rounds {
            let t0 = start_ms + i64::try_from(round).unwrap_or_default() * 250;
            let trace = self.bytes::<16>();
            let mut made: Vec<(usize, Vec<u8>, Option<String>, bool)> = Vec::new();
            let failing = shape.failing_round == Some(round);

            let server = self.span(
                out,
                ORDER,
                &trace,
                None,
                "POST /orders".to_owned(),
                2,
                t0,
                4.0,
                http_server_attributes(&correlation_id, &key),
                None,
            );
            made.push((ORDER, server.clone(), None, false));
            let e0 = self.emit(
                out,
                (&correlation_id, &key, &trace),
                ("OrderPlaced", ORDER, "orders", 0),
                cause.take(),
                &server,
                t0 + 1,
                &mut made,
            );
            let payment = self.handle(out, &trace, &e0, PAYMENT, t0 + 6, 9.5, None, &mut made);
            let gateway = self.span(
                out,
                PAYMENT,
                &trace,
                Some(&payment),
                "POST /v1/charges".to_owned(),
                3,
                t0 + 8,
                5.0,
                http_client_attributes(&e0, "gateway.payments.example", "/v1/charges"),
                None,
            );
            made.push((PAYMENT, gateway, Some(e0.event_id.clone()), false));
            let e1 = self.emit(
                out,
                (&correlation_id, &key, &trace),
                ("PaymentProcessed", PAYMENT, "payments", 1),
                Some(e0.event_id.clone()),
                &payment,
                t0 + 16,
                &mut made,
            );
            let inventory = self.handle(out, &trace, &e1, INVENTORY, t0 + 22, 3.2, None, &mut made);
            let e2 = self.emit(
                out,
                (&correlation_id, &key, &trace),
                ("InventoryReserved", INVENTORY, "inventory", 2),
                Some(e1.event_id.clone()),
                &inventory,
                t0 + 26,
                &mut made,
            );
            let notification = self.handle(
                out,
                &trace,
                &e1,
                NOTIFICATION,
                t0 + 23,
                1.1,
                failing.then_some("MissingCustomerEmail"),
                &mut made,
            );
            if failing {
                // The dead letter's own send span, then the ledger entry.
                let dlq = self.span(
                    out,
                    NOTIFICATION,
                    &trace,
                    Some(&notification),
                    "send payments.dlq".to_owned(),
                    4,
                    t0 + 25,
                    1.3,
                    messaging_attributes(&e1, "send", Some(SERVICES[NOTIFICATION])),
                    None,
                );
                made.push((NOTIFICATION, dlq, Some(e1.event_id.clone()), true));
                out.dead_letters.push(self.dead_letter(&e1, t0 + 25));
            } else {
                let email = self.span(
                    out,
                    NOTIFICATION,
                    &trace,
                    Some(&notification),
                    "POST /v3/mail/send".to_owned(),
                    3,
                    t0 + 24,
                    12.0,
                    http_client_attributes(&e1, "mail.example", "/v3/mail/send"),
                    None,
                );
                made.push((NOTIFICATION, email, Some(e1.event_id.clone()), false));
                self.emit(
                    out,
                    (&correlation_id, &key, &trace),
                    ("CustomerNotified", NOTIFICATION, "notifications", 3),
                    Some(e1.event_id.clone()),
                    &notification,
                    t0 + 37,
                    &mut made,
                );
            }
            let last = round + 1 == shape.rounds;
            let link = if last { shape.batch_link.clone() } else { None };
            let fulfillment =
                self.handle(out, &trace, &e2, FULFILLMENT, t0 + 31, 4.4, None, &mut made);
            if let Some((lt, ls)) = link {
                // The batch span of the fulfillment service: one link per
                // record of the batch, one of them another order's.
                let batch = self.span(
                    out,
                    FULFILLMENT,
                    &trace,
                    Some(&fulfillment),
                    "process shipments batch".to_owned(),
                    5,
                    t0 + 31,
                    6.0,
                    messaging_attributes(&e2, "process", Some(SERVICES[FULFILLMENT])),
                    Some((lt, ls)),
                );
                made.push((FULFILLMENT, batch, Some(e2.event_id.clone()), false));
            }
            let e4 = self.emit(
                out,
                (&correlation_id, &key, &trace),
                ("ShipmentCreated", FULFILLMENT, "shipments", 4),
                Some(e2.event_id.clone()),
                &fulfillment,
                t0 + 36,
                &mut made,
            );
            cause = Some(e4.event_id.clone());
            for i in 0..shape.logs_per_round {
                let (service, span_id, event_id, error) = made[i % made.len()].clone();
                let log = self.log(&correlation_id, &trace, &span_id, event_id, error, t0, i);
                out.logs[service].push(log);
            }
            first.get_or_insert((trace, server));
        }
        let (trace_id, span_id) = first.unwrap_or_default();
        TargetIds {
            correlation_id,
            trace_id,
            span_id,
        }
    }

    /// An event sent by `service`: its `send` span and its lineage row.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        out: &mut Generated,
        (correlation_id, key, trace): (&str, &str, &[u8]),
        (event_type, service, topic, topic_index): (&'static str, usize, &'static str, usize),
        causation_id: Option<String>,
        parent: &[u8],
        at_ms: i64,
        made: &mut Vec<(usize, Vec<u8>, Option<String>, bool)>,
    ) -> Hop {
        let partition = i32::try_from(self.rng.next() % 3).unwrap_or_default();
        let offset = self.offsets[topic_index];
        self.offsets[topic_index] += 1;
        let mut hop = Hop {
            correlation_id: correlation_id.to_owned(),
            event_id: self.uuid_v7(at_ms),
            event_type,
            topic,
            partition,
            offset,
            key: key.to_owned(),
            send_span: Vec::new(),
            occurred_at_ms: at_ms,
        };
        let send = self.span(
            out,
            service,
            trace,
            Some(parent),
            format!("send {topic}"),
            4,
            at_ms,
            0.8,
            messaging_attributes(&hop, "send", None),
            None,
        );
        made.push((service, send.clone(), Some(hop.event_id.clone()), false));
        out.events.push(LineageEvent {
            event_id: hop.event_id.clone(),
            event_type: Some(event_type.to_owned()),
            event_version: Some(1),
            correlation_id: correlation_id.to_owned(),
            causation_id,
            source_service: Some(SERVICES[service].to_owned()),
            topic: topic.to_owned(),
            partition,
            offset,
            key: Some(key.to_owned()),
            trace_id: Some(hex(trace)),
            span_id: Some(hex(&send)),
            occurred_at_ms: at_ms,
            recorded_at_ms: at_ms + 3,
        });
        hop.send_span = send;
        hop
    }

    /// `service` handles `hop`: its `process`, handler and idempotency
    /// spans and its receipt. Returns the `process` span's id.
    #[allow(clippy::too_many_arguments)]
    fn handle(
        &mut self,
        out: &mut Generated,
        trace: &[u8],
        hop: &Hop,
        service: usize,
        at_ms: i64,
        duration_ms: f64,
        error: Option<&str>,
        made: &mut Vec<(usize, Vec<u8>, Option<String>, bool)>,
    ) -> Vec<u8> {
        let group = SERVICES[service];
        let mut attributes = messaging_attributes(hop, "process", Some(group));
        if let Some(error) = error {
            attributes.push(kv_str(attr::ERROR_TYPE, error));
        }
        let process = self.span(
            out,
            service,
            trace,
            Some(&hop.send_span),
            format!("process {}", hop.topic),
            5,
            at_ms,
            duration_ms,
            attributes,
            None,
        );
        if let Some(error) = error {
            let span = out.spans[service].last_mut().expect("just pushed");
            span.status = Some(Status {
                code: 2,
                message: format!("{error}: the payment carries no customer e-mail"),
            });
            span.events.push(span::Event {
                time_unix_nano: ns(at_ms) + 900_000,
                name: "exception".to_owned(),
                attributes: vec![
                    kv_str("exception.type", error),
                    kv_str(
                        "exception.message",
                        "the payment carries no customer e-mail; the record is dead-lettered",
                    ),
                ],
                dropped_attributes_count: 0,
            });
        }
        made.push((
            service,
            process.clone(),
            Some(hop.event_id.clone()),
            error.is_some(),
        ));
        let handler = self.span(
            out,
            service,
            trace,
            Some(&process),
            format!("handle {}", hop.event_type),
            1,
            at_ms,
            duration_ms * 0.7,
            internal_attributes(hop, group, "handle"),
            None,
        );
        made.push((
            service,
            handler,
            Some(hop.event_id.clone()),
            error.is_some(),
        ));
        let mut store_attributes = internal_attributes(hop, group, "is_processed");
        store_attributes.truncate(11);
        store_attributes.extend([
            kv_str("db.system.name", "sqlite"),
            kv_str("db.operation.name", "SELECT"),
            kv_str("db.collection.name", "processed_events"),
            kv_str("db.namespace", "kausal"),
        ]);
        let idempotency = self.span(
            out,
            service,
            trace,
            Some(&process),
            "idempotency check".to_owned(),
            3,
            at_ms,
            0.3,
            store_attributes,
            None,
        );
        made.push((service, idempotency, Some(hop.event_id.clone()), false));
        out.receipts.push(Receipt {
            receipt_id: self.uuid_v7(at_ms),
            event_id: hop.event_id.clone(),
            consumer_group: group.to_owned(),
            service: group.to_owned(),
            topic: hop.topic.to_owned(),
            partition: hop.partition,
            offset: hop.offset,
            outcome: if error.is_some() {
                "dead_lettered"
            } else {
                "processed"
            }
            .to_owned(),
            attempts: 1,
            error_type: error.map(str::to_owned),
            error_message: error.map(|_| "the payment carries no customer e-mail".to_owned()),
            duration_ms,
            trace_id: Some(hex(trace)),
            span_id: Some(hex(&process)),
            handled_at_ms: at_ms + duration_ms as i64,
            correlation_id: Some(hop.correlation_id.clone()),
        });
        process
    }

    /// One span: one event, a second on every fourth, a link on every
    /// tenth (a consumer's link to its producer; `link` when given).
    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        out: &mut Generated,
        service: usize,
        trace: &[u8],
        parent: Option<&[u8]>,
        name: String,
        kind: i32,
        at_ms: i64,
        duration_ms: f64,
        attributes: Vec<KeyValue>,
        link: Option<(Vec<u8>, Vec<u8>)>,
    ) -> Vec<u8> {
        let id = self.bytes::<8>();
        let start = ns(at_ms) + self.rng.next() % 1_000_000;
        let end = start + (duration_ms * 1e6) as u64;
        self.spans_made += 1;
        let mut events = vec![span::Event {
            time_unix_nano: start + (end - start) / 2,
            name: "message handled".to_owned(),
            attributes: vec![
                kv_str("kausal.outcome", "processed"),
                kv_int("kausal.events_emitted", 1),
            ],
            dropped_attributes_count: 0,
        }];
        if self.spans_made.is_multiple_of(4) {
            events.push(span::Event {
                time_unix_nano: start + 1_000,
                name: "retry".to_owned(),
                attributes: vec![
                    kv_int(attr::RETRY_ATTEMPT, 1),
                    kv_str("error.type", "GatewayTimeout"),
                    kv_str(
                        "exception.message",
                        "the payment gateway did not answer within 2 s",
                    ),
                ],
                dropped_attributes_count: 0,
            });
        }
        let mut links = Vec::new();
        if let Some((trace_id, span_id)) = link {
            links.push(span::Link {
                trace_id,
                span_id,
                attributes: vec![kv_str("messaging.operation.type", "process")],
                ..Default::default()
            });
        } else if self.spans_made.is_multiple_of(10) {
            links.push(span::Link {
                trace_id: self.bytes::<16>(),
                span_id: self.bytes::<8>(),
                ..Default::default()
            });
        }
        out.spans[service].push(Span {
            trace_id: trace.to_vec(),
            span_id: id.clone(),
            parent_span_id: parent.map(<[u8]>::to_vec).unwrap_or_default(),
            flags: 0x101,
            name,
            kind,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            events,
            links,
            status: None,
            ..Default::default()
        });
        id
    }

    /// A log line as Kausal's JSON layer exports it over OTLP.
    #[allow(clippy::too_many_arguments)]
    fn log(
        &mut self,
        correlation_id: &str,
        trace: &[u8],
        span_id: &[u8],
        event_id: Option<String>,
        error: bool,
        t0: i64,
        i: usize,
    ) -> LogRecord {
        const MESSAGES: [&str; 5] = [
            "event received",
            "event processed",
            "emitted event acknowledged",
            "idempotency key written",
            "receipt published",
        ];
        let mut attributes = vec![
            kv_str("correlationId", correlation_id),
            kv_str("target", "kausal_kafka::runtime"),
            kv_int("durationMs", 3),
            kv_str("traceId", &hex(trace)),
            kv_str("spanId", &hex(span_id)),
        ];
        if let Some(event_id) = event_id {
            attributes.push(kv_str("eventId", &event_id));
        }
        if error {
            attributes.push(kv_str("errorType", "MissingCustomerEmail"));
        }
        LogRecord {
            time_unix_nano: ns(t0) + (i as u64) * 100_000,
            observed_time_unix_nano: ns(t0) + (i as u64) * 100_000 + 50_000,
            severity_number: if error { 17 } else { 9 },
            severity_text: if error { "ERROR" } else { "INFO" }.to_owned(),
            body: Some(any_str(if error {
                "handler failed: dead-lettering the record"
            } else {
                MESSAGES[i % MESSAGES.len()]
            })),
            attributes,
            trace_id: trace.to_vec(),
            span_id: span_id.to_vec(),
            ..Default::default()
        }
    }

    fn dead_letter(&mut self, hop: &Hop, at_ms: i64) -> DeadLetterEntry {
        DeadLetterEntry {
            dlq_id: self.uuid_v7(at_ms),
            dlq_topic: "payments.dlq".to_owned(),
            dlq_partition: hop.partition,
            dlq_offset: hop.offset,
            event_id: hop.event_id.clone(),
            correlation_id: Some(hop.correlation_id.clone()),
            event_type: Some(hop.event_type.to_owned()),
            source_topic: hop.topic.to_owned(),
            source_partition: Some(hop.partition),
            source_offset: Some(hop.offset),
            source_timestamp_ms: Some(hop.occurred_at_ms),
            consumer_group: Some(SERVICES[NOTIFICATION].to_owned()),
            service: Some(SERVICES[NOTIFICATION].to_owned()),
            error_type: Some("MissingCustomerEmail".to_owned()),
            error_message: Some("the payment carries no customer e-mail".to_owned()),
            attempts: Some(1),
            failed_at_ms: at_ms,
            key: Some(hop.key.clone().into_bytes()),
            payload: Some(
                format!(
                    r#"{{"order_id":"{}","amount_cents":4999,"currency":"EUR","email":null}}"#,
                    hop.key
                )
                .into_bytes(),
            ),
            headers_json: "[]".to_owned(),
            status: "pending".to_owned(),
            status_changed_at_ms: None,
            status_by: None,
            status_reason: None,
            replay_count: 0,
        }
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "kausal".to_owned(),
        version: "0.1.0".to_owned(),
        ..Default::default()
    }
}

/// The messaging attributes of a `send` or `process` span (15 with a
/// consumer group).
fn messaging_attributes(hop: &Hop, operation: &str, group: Option<&str>) -> Vec<KeyValue> {
    let mut out = vec![
        kv_str(attr::MESSAGING_SYSTEM, "kafka"),
        kv_str(attr::OPERATION_NAME, operation),
        kv_str(attr::OPERATION_TYPE, operation),
        kv_str(attr::DESTINATION, hop.topic),
        kv_str(attr::PARTITION, &hop.partition.to_string()),
        kv_str(attr::KEY, &hop.key),
        kv_int(attr::OFFSET, hop.offset),
        kv_str(attr::MESSAGE_ID, &hop.event_id),
        kv_str(attr::CONVERSATION_ID, &hop.correlation_id),
        kv_str(attr::EVENT_TYPE, hop.event_type),
        kv_int("messaging.message.body.size", 412),
        kv_str("messaging.client.id", "rdkafka#producer-1"),
        kv_str("server.address", "127.0.0.1"),
        kv_int("server.port", 9092),
    ];
    if let Some(group) = group {
        out.push(kv_str(attr::CONSUMER_GROUP, group));
        out.push(kv_int(attr::RETRY_ATTEMPT, 1));
    }
    out
}

/// The attributes of a handler's INTERNAL span (15).
fn internal_attributes(hop: &Hop, group: &str, function: &str) -> Vec<KeyValue> {
    vec![
        kv_str(attr::MESSAGE_ID, &hop.event_id),
        kv_str(attr::CONVERSATION_ID, &hop.correlation_id),
        kv_str(attr::EVENT_TYPE, hop.event_type),
        kv_str(attr::DESTINATION, hop.topic),
        kv_str(attr::PARTITION, &hop.partition.to_string()),
        kv_int(attr::OFFSET, hop.offset),
        kv_str(attr::KEY, &hop.key),
        kv_str(attr::CONSUMER_GROUP, group),
        kv_int(attr::RETRY_ATTEMPT, 1),
        kv_str("code.function.name", function),
        kv_str("code.namespace", "kausal_kafka::runtime"),
        kv_str("code.file.path", "crates/kausal-kafka/src/runtime.rs"),
        kv_int("code.line.number", 412),
        kv_int("thread.id", 7),
        kv_str("thread.name", "tokio-runtime-worker"),
    ]
}

fn http_server_attributes(correlation_id: &str, key: &str) -> Vec<KeyValue> {
    vec![
        kv_str("http.request.method", "POST"),
        kv_str("http.route", "/orders"),
        kv_str("url.path", "/orders"),
        kv_str("url.scheme", "http"),
        kv_int("http.response.status_code", 201),
        kv_str("server.address", "127.0.0.1"),
        kv_int("server.port", 8081),
        kv_str("client.address", "127.0.0.1"),
        kv_str("network.protocol.version", "1.1"),
        kv_str("user_agent.original", "curl/7.88.1"),
        kv_str(attr::CONVERSATION_ID, correlation_id),
        kv_str(attr::KEY, key),
        kv_str("kausal.order.id", key),
        kv_int("http.request.body.size", 187),
        kv_int("http.response.body.size", 96),
    ]
}

fn http_client_attributes(hop: &Hop, host: &str, path: &str) -> Vec<KeyValue> {
    vec![
        kv_str("http.request.method", "POST"),
        kv_str("url.full", &format!("https://{host}{path}")),
        kv_str("server.address", host),
        kv_int("server.port", 443),
        kv_int("http.response.status_code", 200),
        kv_str("network.protocol.version", "1.1"),
        kv_int("http.request.body.size", 231),
        kv_int("http.response.body.size", 512),
        kv_str(attr::MESSAGE_ID, &hop.event_id),
        kv_str(attr::CONVERSATION_ID, &hop.correlation_id),
        kv_str(attr::EVENT_TYPE, hop.event_type),
        kv_str(attr::KEY, &hop.key),
        kv_str("idempotency_key", &hop.event_id),
        kv_str("code.namespace", "kausal_payment::gateway"),
        kv_int(attr::RETRY_ATTEMPT, 1),
    ]
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(any_str(value)),
    }
}

fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
    }
}

fn any_str(value: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(value.to_owned())),
    }
}

fn ns(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or_default() * 1_000_000
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// Deterministic ids without a `rand` dependency.
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
}

// ---- report ---------------------------------------------------------------

#[derive(Debug)]
struct Latencies {
    calls: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Latencies {
    fn new(mut times: Vec<Duration>) -> Self {
        times.sort_unstable();
        // Nearest rank: the smallest value with at least p % of calls at or below it.
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

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn mb(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.0}", b as f64 / 1_048_576.0),
    )
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

fn print_report(
    config: &Config,
    ingest: &[IngestResult],
    queries: &[QueryResult],
    notes: &[String],
) {
    println!();
    if !ingest.is_empty() {
        println!(
            "OTLP ingest: {} spans per run, requests of {REQUEST_SPANS} spans (protobuf), a fresh database per run",
            config.ingest_spans
        );
        println!();
        println!(
            "| backend | path | senders | spans | seconds | spans/s | ratio to direct (same senders) | target | |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---|---|");
        for r in ingest {
            let baseline = ingest
                .iter()
                .find(|b| b.backend == r.backend && b.senders == r.senders && b.path == "direct")
                .map(IngestResult::rate);
            let ratio = baseline.map_or_else(|| "-".to_owned(), |b| format!("{:.2}", r.rate() / b));
            let (target, verdict) = if r.backend == "sqlite" {
                (
                    "≥ 50 000 spans/s",
                    met(r.rate() >= INGEST_TARGET_SQLITE).to_owned(),
                )
            } else {
                ("none (issue: SQLite)", "-".to_owned())
            };
            println!(
                "| {} | {} | {} | {} | {:.1} | {:.0} | {} | {} | {} |",
                r.backend,
                if r.path == "HTTP" {
                    "POST /v1/traces"
                } else {
                    "record_telemetry"
                },
                r.senders,
                r.spans,
                r.elapsed.as_secs_f64(),
                r.rate(),
                ratio,
                target,
                verdict
            );
        }
        println!();
        let sizes: Vec<String> = ingest
            .iter()
            .filter(|r| r.path == "direct")
            .filter_map(|r| {
                r.size_bytes.map(|b| {
                    format!(
                        "{} {:.0} MB ({:.0} bytes per span)",
                        r.backend,
                        b as f64 / 1_048_576.0,
                        b as f64 / r.spans as f64
                    )
                })
            })
            .collect();
        if !sizes.is_empty() {
            println!("Size after an ingest run: {}.", sizes.join(", "));
        }
        for note in notes {
            println!("{note}");
        }
        println!();
    }
    if !queries.is_empty() {
        println!(
            "GET /api/correlations/{{id}}: up to {} calls one after another (or {} s) after {WARMUP_QUERIES} warm-up calls (ms)",
            config.queries,
            config.query_budget.as_secs()
        );
        println!();
        println!(
            "| backend | stored spans | path | calls | p50 | p99 | max | ratio to direct p50 / p99 | target p99 < 50 ms | |"
        );
        println!("|---|---:|---|---:|---:|---:|---:|---:|---|---|");
        for r in queries {
            println!(
                "| {} | {} | GET /api/correlations/{{id}} | {} | {} | {} | {} | {:.2} / {:.2} | p99 {} ms | {} |",
                r.backend,
                r.stored_spans,
                r.http.calls,
                ms(r.http.p50),
                ms(r.http.p99),
                ms(r.http.max),
                r.http.p50.as_secs_f64() / r.direct.p50.as_secs_f64(),
                r.http.p99.as_secs_f64() / r.direct.p99.as_secs_f64(),
                ms(r.http.p99),
                met(r.http.p99 < P99_TARGET),
            );
            println!(
                "| {} | {} | query::correlation (no HTTP) | {} | {} | {} | {} | 1.00 | | |",
                r.backend,
                r.stored_spans,
                r.direct.calls,
                ms(r.direct.p50),
                ms(r.direct.p99),
                ms(r.direct.max),
            );
        }
        println!();
        println!(
            "| backend | stored spans / logs / events / receipts | load s (in the store) | ANALYZE s | size MB | document: events, receipts, dead letters, traces, spans, logs, missing, KiB |"
        );
        println!("|---|---|---:|---:|---:|---|");
        for r in queries {
            let d = &r.document;
            println!(
                "| {} | {} / {} / {} / {} | {:.0} ({:.0}) | {} | {} | {}, {}, {}, {}, {}, {}, {}, {:.0}{} |",
                r.backend,
                r.stored_spans,
                r.stored_logs,
                r.stored_events,
                r.stored_receipts,
                r.load.as_secs_f64(),
                r.load_in_store.as_secs_f64(),
                r.analyze
                    .map_or_else(|| "-".to_owned(), |d| format!("{:.1}", d.as_secs_f64())),
                mb(r.size_bytes),
                d.events,
                d.receipts,
                d.dead_letters,
                d.traces,
                d.spans,
                d.logs,
                d.missing,
                d.bytes as f64 / 1024.0,
                if d.truncated { " (truncated)" } else { "" },
            );
        }
        println!();
        println!(
            "Where the document's time goes: each store query alone, up to {BREAKDOWN_CALLS} calls (ms, p50 / p99, calls)"
        );
        println!();
        let header: Vec<&str> = queries.iter().map(|r| r.backend).collect();
        println!("| query | {} |", header.join(" | "));
        println!("|---|{}", "---:|".repeat(header.len()));
        let mut names: Vec<&str> = Vec::new();
        for r in queries {
            for (name, _) in &r.breakdown {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        for name in names {
            let cells: Vec<String> = queries
                .iter()
                .map(|r| {
                    r.breakdown.iter().find(|(n, _)| n == name).map_or_else(
                        || "-".to_owned(),
                        |(_, l)| format!("{} / {} ({})", ms(l.p50), ms(l.p99), l.calls),
                    )
                })
                .collect();
            println!("| {name} | {} |", cells.join(" | "));
        }
        let cells: Vec<String> = queries
            .iter()
            .map(|r| {
                format!(
                    "{} / {} ({})",
                    ms(r.serialise.p50),
                    ms(r.serialise.p99),
                    r.serialise.calls
                )
            })
            .collect();
        println!(
            "| the document to JSON (serde_json) | {} |",
            cells.join(" | ")
        );
        println!();
    }
}
