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
//! | `KAUSAL_BENCH_CONSOLE_COLD_QUERIES` | calls of the document on a cold cache (needs root to drop the OS page cache; 0 skips) | 20 |
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
//! Each run also reports the CPU time it used per span (Linux `/proc`): the
//! whole process (senders included) and the SQLite connections' threads.
//! On a shared machine these move much less than the rates; HTTP minus
//! direct is what the receiving path costs. Before the runs, decoding
//! every request to rows on one thread is timed (protobuf, rows, dropping
//! the request; and that thread's CPU time).
//!
//! **Correlation document.** A fresh database is filled with
//! `KAUSAL_BENCH_CONSOLE_STORED_SPANS` spans, the fastest honest way
//! (`store_fill`, shared with the console's paint benchmark): rows
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
//! (`kausal_console::query::correlation`) as the baseline, once with the
//! expected groups of each event type kept as the console keeps them and
//! once asked of the store every time, and each store query of the
//! document timed alone. Last, the document on a cold cache: before each
//! call the OS page cache is dropped (`sync`, then `1` written to
//! `/proc/sys/vm/drop_caches`; skipped with a note when that is refused)
//! and a new `Store` is connected (its SQLite connections start with empty
//! page caches), as a console started on a store that is not in memory
//! would answer its first request. PostgreSQL's own `shared_buffers` are
//! not dropped.

mod store_fill;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use kausal_bench::{Latencies, env_usize};
use kausal_console::expected::ExpectedGroups;
use kausal_console::otlp::{self, Decoded, Format};
use kausal_console::{ConsoleConfig, query};
use kausal_store::{SpanRow, Store};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio_util::sync::CancellationToken;

use store_fill::{
    BoxError, Generated, Generator, LoadPlan, Shape, Timeline, bulk_load, count_rows, now_ms,
    with_fresh_store,
};

/// Spans per OTLP request: the SDK batch exporter's `max_export_batch_size`.
const REQUEST_SPANS: usize = 512;
const WARMUP_QUERIES: usize = 20;
/// Calls per store query in the breakdown, at most.
const BREAKDOWN_CALLS: usize = 200;
/// Calls per measurement at least, whatever the time budget.
const MIN_CALLS: usize = 20;
/// The issue's targets, printed next to the numbers.
const INGEST_TARGET_SQLITE: f64 = 50_000.0;
const P99_TARGET: Duration = Duration::from_millis(50);
const SEED: u64 = 0x6b61_7573_616c;
/// Spans of the measured correlation (`Shape::measured`).
const MEASURED_SPANS: usize = 199;

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
    /// Calls of the document on a cold cache.
    cold_queries: usize,
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
            cold_queries: env_usize("KAUSAL_BENCH_CONSOLE_COLD_QUERIES", 20)?,
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

async fn run(config: Config) -> Result<(), BoxError> {
    // Each part's tables are printed as soon as it is done: a long run
    // stopped halfway keeps what it measured.
    let mut ingest_results = Vec::new();
    let mut notes = Vec::new();
    if config.ingest_spans > 0 && !config.backends().is_empty() {
        let workload = IngestWorkload::generate(config.ingest_spans);
        let per_span = |d: Duration| d.as_secs_f64() * 1e6 / workload.spans as f64;
        notes.push(format!(
            "Ingest requests: {} spans in {} requests of up to {REQUEST_SPANS} spans, {:.0} bytes of protobuf per span; \
             protobuf decode + rows (`otlp::decode` + `otlp::span_rows`, one thread): {:.2} µs per span ({:.0} spans/s per core): \
             decode {:.2}, rows {:.2}, dropping the request {:.2}; CPU time of the thread {} µs per span.",
            workload.spans,
            workload.bodies.len(),
            workload.body_bytes as f64 / workload.spans as f64,
            per_span(workload.decode.total()),
            workload.spans as f64 / workload.decode.total().as_secs_f64(),
            per_span(workload.decode.protobuf),
            per_span(workload.decode.rows),
            per_span(workload.decode.drop),
            workload
                .decode
                .cpu
                .map_or_else(|| "-".to_owned(), |d| format!("{:.2}", per_span(d))),
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

// ---- ingest ---------------------------------------------------------------

/// The requests of one ingest run, encoded, and the same decoded to rows.
#[derive(Debug)]
struct IngestWorkload {
    bodies: Arc<Vec<Bytes>>,
    rows: Arc<Vec<Decoded<SpanRow>>>,
    spans: usize,
    body_bytes: usize,
    /// Decoding every body to rows on one thread.
    decode: DecodeTimes,
}

/// Where decoding every body to rows on one thread went.
#[derive(Debug)]
struct DecodeTimes {
    /// `otlp::decode` (prost).
    protobuf: Duration,
    /// `otlp::span_rows`: ids to hex, attributes, events, links and the
    /// resource to JSON text.
    rows: Duration,
    /// Dropping the decoded request.
    drop: Duration,
    /// The CPU time of the thread over all of it (less affected by other
    /// processes on a shared machine than the times above).
    cpu: Option<Duration>,
}

impl DecodeTimes {
    fn total(&self) -> Duration {
        self.protobuf + self.rows + self.drop
    }
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
            generator.correlation(n, &Shape::filler(), None, &mut scratch);
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
        let received = now_ms();
        let cpu_before = thread_cpu();
        let (mut protobuf, mut mapping, mut dropping) = Default::default();
        let rows: Vec<Decoded<SpanRow>> = bodies
            .iter()
            .map(|body| {
                let started = Instant::now();
                let request: ExportTraceServiceRequest =
                    otlp::decode(Format::Protobuf, body, "OTLP trace export")
                        .expect("the benchmark's own requests decode");
                let decoded = Instant::now();
                let rows = otlp::span_rows(&request, received);
                let mapped = Instant::now();
                drop(request);
                protobuf += decoded - started;
                mapping += mapped - decoded;
                dropping += mapped.elapsed();
                rows
            })
            .collect();
        let cpu = thread_cpu()
            .zip(cpu_before)
            .map(|(after, before)| after - before);
        Self {
            bodies: Arc::new(bodies.into_iter().map(Bytes::from).collect()),
            rows: Arc::new(rows),
            spans: emitted,
            body_bytes,
            decode: DecodeTimes {
                protobuf,
                rows: mapping,
                drop: dropping,
                cpu,
            },
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
    /// CPU time over the run, where `/proc` tells.
    cpu: Option<CpuUse>,
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
    with_fresh_store(
        config.postgres.as_deref(),
        backend,
        |store, db| async move {
            let next = Arc::new(AtomicUsize::new(0));
            let cpu = CpuSnapshot::take();
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
                            .record_telemetry(
                                &decoded.rows,
                                &decoded.links,
                                &decoded.resources,
                                &[],
                                now_ms(),
                            )
                            .await?;
                    }
                });
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            let elapsed = started.elapsed();
            let cpu = CpuSnapshot::take()
                .zip(cpu)
                .map(|(after, before)| after.since(&before));
            let spans = check_spans(&store, workload.spans).await?;
            Ok(IngestResult {
                backend,
                path: "direct",
                senders,
                spans,
                elapsed,
                cpu,
                size_bytes: db.size_bytes(&store).await,
            })
        },
    )
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
    with_fresh_store(
        config.postgres.as_deref(),
        backend,
        |store, db| async move {
            let console = Console::start(store.clone()).await?;
            let url = format!("http://{}/v1/traces", console.addr);
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(senders)
                .build()?;
            let next = Arc::new(AtomicUsize::new(0));
            let cpu = CpuSnapshot::take();
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
            let cpu = CpuSnapshot::take()
                .zip(cpu)
                .map(|(after, before)| after.since(&before));
            console.stop().await;
            let spans = check_spans(&store, workload.spans).await?;
            Ok(IngestResult {
                backend,
                path: "HTTP",
                senders,
                spans,
                elapsed,
                cpu,
                size_bytes: db.size_bytes(&store).await,
            })
        },
    )
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

// ---- CPU time --------------------------------------------------------------
//
// The machine this runs on is often shared, and wall-clock rates move with
// whatever else runs. CPU time per span moves much less: it says what the
// path costs, the rate says what it got.

/// CPU time used so far (user + system, from `/proc`; Linux only): by the
/// whole process (every thread, ended ones too), and by each thread of a
/// SQLite connection (sqlx's `sqlx-sqlite-worker-N`; the kernel keeps 15
/// bytes of a thread's name), by thread id.
#[derive(Debug)]
struct CpuSnapshot {
    process: Duration,
    sqlite_workers: HashMap<String, Duration>,
}

/// CPU time between two snapshots.
#[derive(Debug, Clone, Copy)]
struct CpuUse {
    process: Duration,
    /// The SQLite connections' worker threads: the database's own work
    /// (statements, pages, the file) plus sqlx's binding there. Zero on
    /// PostgreSQL, whose server is another process.
    sqlite: Duration,
}

impl CpuSnapshot {
    fn take() -> Option<Self> {
        let (_, process) = stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
        let mut sqlite_workers = HashMap::new();
        for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
            let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
                continue; // ended meanwhile
            };
            if let Some((name, cpu)) = stat_cpu(&stat)
                && name.starts_with("sqlx-sqlite-wor")
            {
                sqlite_workers.insert(task.file_name().to_string_lossy().into_owned(), cpu);
            }
        }
        Some(Self {
            process,
            sqlite_workers,
        })
    }

    fn since(&self, earlier: &Self) -> CpuUse {
        let sqlite = self
            .sqlite_workers
            .iter()
            .map(|(tid, cpu)| {
                cpu.saturating_sub(earlier.sqlite_workers.get(tid).copied().unwrap_or_default())
            })
            .sum();
        CpuUse {
            process: self.process.saturating_sub(earlier.process),
            sqlite,
        }
    }
}

/// The calling thread's CPU time so far.
fn thread_cpu() -> Option<Duration> {
    stat_cpu(&std::fs::read_to_string("/proc/thread-self/stat").ok()?).map(|(_, cpu)| cpu)
}

/// The name and user + system CPU time of a `/proc/…/stat` line (fields 14
/// and 15, in clock ticks of 1/100 s: Linux's `USER_HZ`).
fn stat_cpu(stat: &str) -> Option<(String, Duration)> {
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_owned();
    let mut fields = rest.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some((name, Duration::from_millis((user + system) * 10)))
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
    /// `direct` with the expected groups asked of the store every time.
    uncached: Latencies,
    serialise: Latencies,
    breakdown: Vec<(String, Latencies)>,
    /// `uncached` on a cold cache; `None` when not measured.
    cold: Option<Latencies>,
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
    with_fresh_store(config.postgres.as_deref(), backend, |store, db| async move {
        let plan = LoadPlan {
            seed: SEED ^ 0x5eed,
            fillers: config.stored_spans.saturating_sub(MEASURED_SPANS) / 20,
            filler_lineage: config.filler_lineage,
            failing_fillers: 0,
            timeline: Timeline::LAST_HOUR,
            target: Shape::measured(),
        };
        let load = bulk_load(&store, &plan, backend).await?;
        let stored_spans = count_rows(&store, "spans").await?;
        let stored_logs = count_rows(&store, "log_records").await?;
        let counts = store.lineage_row_counts().await?;
        eprintln!(
            "[{backend}] stored: {stored_spans} spans, {stored_logs} log records, {} events, {} receipts",
            counts.events, counts.receipts
        );
        let analyze = store_fill::analyze(&store).await?;
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

        // As the console runs it: each event type's expected groups kept
        // for a few seconds, so a document asks for them at most that often.
        let (direct, serialise) = documents(
            config,
            &store,
            &ExpectedGroups::default(),
            &id,
            &format!("[{backend}] query::correlation without HTTP"),
        )
        .await?;
        // Every document asks for its event types' expected groups.
        let (uncached, _) = documents(
            config,
            &store,
            &ExpectedGroups::uncached(),
            &id,
            &format!("[{backend}] query::correlation without HTTP, expected groups asked each time"),
        )
        .await?;
        let breakdown = breakdown(&store, &id, config.query_budget / 10).await?;
        let cold = cold_documents(config, &db.url, &id, backend).await?;
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
            uncached,
            serialise,
            breakdown,
            cold,
        })
    })
    .await
}

/// `query::correlation` of `id` on a cold cache, `config.cold_queries`
/// times: before each call the OS page cache is dropped and a new store is
/// connected to `url` (closed after the call). `None` when not asked for or
/// when the page cache cannot be dropped (not root).
async fn cold_documents(
    config: &Config,
    url: &str,
    id: &str,
    backend: &str,
) -> Result<Option<Latencies>, BoxError> {
    if config.cold_queries == 0 {
        return Ok(None);
    }
    eprintln!(
        "[{backend}] query::correlation on a cold cache: {} calls",
        config.cold_queries
    );
    let mut times = Vec::with_capacity(config.cold_queries);
    for _ in 0..config.cold_queries {
        if let Err(e) = drop_page_cache() {
            eprintln!("note: the cold-cache calls are skipped: {e}");
            return Ok(None);
        }
        let store = Store::connect(url).await?;
        let started = Instant::now();
        let doc = query::correlation(&store, &ExpectedGroups::uncached(), id)
            .await?
            .ok_or("the correlation is not found")?;
        times.push(started.elapsed());
        std::hint::black_box(doc);
        store.close().await;
    }
    Ok(Some(Latencies::new(times)))
}

/// Writes dirty pages out, then drops the OS page cache (root only).
fn drop_page_cache() -> Result<(), BoxError> {
    let synced = std::process::Command::new("sync").status()?;
    if !synced.success() {
        return Err(format!("sync failed: {synced}").into());
    }
    std::fs::write("/proc/sys/vm/drop_caches", "1")
        .map_err(|e| format!("cannot drop the page cache (/proc/sys/vm/drop_caches): {e}"))?;
    Ok(())
}

/// `query::correlation` of `id` called `config.queries` times or for
/// `config.query_budget`: the latencies, and those of serialising the first
/// documents to JSON.
async fn documents(
    config: &Config,
    store: &Store,
    expected: &ExpectedGroups,
    id: &str,
    label: &str,
) -> Result<(Latencies, Latencies), BoxError> {
    eprintln!(
        "{label}: {} calls or {} s",
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
        let doc = query::correlation(store, expected, id)
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
    Ok((Latencies::new(times), Latencies::new(serialise)))
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
    let doc = query::correlation(store, &ExpectedGroups::uncached(), id)
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
        format!("logs_for_correlation ({} traces)", traces.len()),
        store.logs_for_correlation(id, &traces, query::MAX_LOGS)
    );
    for t in &types {
        time!(
            format!("receipt_groups_for_event_type({t})"),
            store.receipt_groups_for_event_type(t, kausal_console::expected::SAMPLE)
        );
    }
    Ok(out)
}

// ---- report ---------------------------------------------------------------

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
            "| backend | path | senders | spans | seconds | spans/s | ratio to direct (same senders) | CPU µs per span: process / SQLite workers | target | |"
        );
        println!("|---|---|---:|---:|---:|---:|---:|---:|---|---|");
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
            let cpu = r.cpu.map_or_else(
                || "-".to_owned(),
                |c| {
                    let per_span = |d: Duration| d.as_secs_f64() * 1e6 / r.spans as f64;
                    format!("{:.1} / {:.1}", per_span(c.process), per_span(c.sqlite))
                },
            );
            println!(
                "| {} | {} | {} | {} | {:.1} | {:.0} | {} | {} | {} | {} |",
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
                cpu,
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
            let rows = [
                ("GET /api/correlations/{id}", &r.http, true),
                ("query::correlation (no HTTP)", &r.direct, false),
                (
                    "query::correlation, expected groups asked each time",
                    &r.uncached,
                    false,
                ),
            ];
            let cold = r.cold.as_ref().map(|l| {
                (
                    "query::correlation, cold: OS page cache dropped, a new store",
                    l,
                    false,
                )
            });
            for (path, l, targeted) in rows.into_iter().chain(cold) {
                let target = if targeted {
                    format!("p99 {} ms | {}", ms(l.p99), met(l.p99 < P99_TARGET))
                } else {
                    " |".to_owned()
                };
                println!(
                    "| {} | {} | {path} | {} | {} | {} | {} | {:.2} / {:.2} | {target} |",
                    r.backend,
                    r.stored_spans,
                    l.calls,
                    ms(l.p50),
                    ms(l.p99),
                    ms(l.max),
                    l.p50.as_secs_f64() / r.direct.p50.as_secs_f64(),
                    l.p99.as_secs_f64() / r.direct.p99.as_secs_f64(),
                );
            }
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
