//! Event store append benchmark (issue 14): appends per second, events per
//! second and append latency of the event store, on SQLite (a fresh file
//! in a temp dir) and PostgreSQL (a fresh schema, dropped at the end) when
//! `KAUSAL_TEST_DATABASE_URL` is set. Printed as Markdown tables, never
//! asserted.
//!
//! ```text
//! cargo bench -p kausal-eventsource --bench event_store
//! KAUSAL_BENCH_STORE_APPENDS=20000 KAUSAL_BENCH_STORE_OUTBOX=1 \
//!     cargo bench -p kausal-eventsource --bench event_store
//! ```
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KAUSAL_BENCH_STORE_APPENDS` | measured appends per run (all writers together) | 1000 |
//! | `KAUSAL_BENCH_STORE_REPEAT` | runs of each path per layout and writers; the median (by appends/s) is reported | 3 |
//! | `KAUSAL_BENCH_STORE_EVENTS_PER_APPEND` | events in each append (one transaction) | 1 |
//! | `KAUSAL_BENCH_STORE_STREAMS` | streams of the many-streams runs, appended round robin | 1000 |
//! | `KAUSAL_BENCH_STORE_WRITERS` | comma-separated concurrent writers, one set of runs each | `1,4` |
//! | `KAUSAL_BENCH_STORE_OUTBOX` | `1`: every event also gets its outbox row (all paths, the baseline too) | `0` |
//! | `KAUSAL_BENCH_STORE_PATHS` | comma-separated subset of `bare,store,eventsource,spans` | all |
//! | `KAUSAL_BENCH_STORE_BACKENDS` | comma-separated subset of `sqlite,postgres` | both |
//! | `KAUSAL_TEST_DATABASE_URL` | PostgreSQL server; unset skips PostgreSQL | unset |
//!
//! **Runs.** For each backend, each stream layout and each number of
//! writers, every path below runs `KAUSAL_BENCH_STORE_REPEAT` times, the
//! paths taking turns in a rotating order (so that a slow moment of a
//! shared machine does not land on one path), and the median run by
//! appends/s is reported with the slowest and fastest. Each run gets a
//! fresh database (file or schema), 50 warm-up appends to a stream of
//! their own, then `KAUSAL_BENCH_STORE_APPENDS` appends from `writers`
//! tasks, each as fast as it can (a closed loop). *One stream*: every append goes to the same
//! stream. *Many streams*: append `i` goes to stream `i mod streams`. Every
//! append names the version it expects (`ExpectedVersion::Exact`, the last
//! version its writer saw); when another writer moved the stream first the
//! append is refused, and the writer retries at once with the version the
//! conflict reported. With 4 writers on one stream that is about three
//! refused tries per append (the *conflicts* column); with many streams
//! none. The
//! latency of an append is from its first try to its success, retries
//! included. Events are ~170 bytes of JSON payload with a correlation id,
//! a causation id and a traceparent, as a command's events are.
//!
//! **Paths**, each against the same rows:
//!
//! - *bare* (the baseline): the same rows written with plain sqlx on the
//!   store's own pool: `BEGIN` (`BEGIN IMMEDIATE` on SQLite, as the store
//!   does), one `INSERT` per event (plus, with outbox rows, `RETURNING` the
//!   position and the outbox `INSERT`), `COMMIT`; versions handed out by an
//!   in-memory counter, so nothing is read and nothing can conflict. The
//!   floor for writing these rows through this driver on this database.
//! - *store*: `kausal_store::Store::append_events`: the version read and
//!   checked inside the transaction, `RETURNING` the position of every
//!   event, conflicts mapped from the unique index. No spans, no metrics.
//! - *eventsource*: `kausal_eventsource::EventStore::append_events` as a
//!   service calls it: the store's append inside a traced operation (a span
//!   context made per append and stored in every event's `traceparent`, a
//!   `tracing` span with no subscriber installed) and the append duration
//!   observed in the Prometheus histogram. Spans are not built because no
//!   tracer provider is installed: what a service with tracing off pays.
//! - *spans*: the same with span building on
//!   (`kausal_telemetry::testing::SpanCapture`: an always-sampling
//!   provider keeping every ended span in memory, no export): what a
//!   service with tracing on pays before its exporter.
//!
//! So *store* / *bare* is what the store's append adds to the rows
//! themselves (the version check, `RETURNING`, the conflict mapping), and
//! *eventsource* / *store* what tracing and metrics add. Each run also
//! reports this process's CPU time per append (`/proc`; SQLite's work runs
//! in this process, PostgreSQL's in the server, which is not counted).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kausal_bench::{
    Backends, BoxError, Latencies, env_list, env_usize, load_average, now_ms, process_cpu,
    with_fresh_store,
};
use kausal_core::{CorrelationId, TraceParent};
use kausal_eventsource::{EventStore, EventStoreMetrics, ExpectedVersion, StreamName};
use kausal_store::{AppendError, Backend, NewEvent, OutboxTarget, Store};
use kausal_telemetry::{Metrics, ids};
use sqlx::Row;

/// The aggregate type of every stream (`BenchAccount-<n>`).
const AGGREGATE: &str = "BenchAccount";
const WARMUP_APPENDS: usize = 50;
const TOPIC: &str = "bench.account.v1";

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let config = Config::from_env()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Bare,
    Store,
    EventSource,
    Spans,
}

impl Path {
    const ALL: [Path; 4] = [Path::Bare, Path::Store, Path::EventSource, Path::Spans];

    fn key(self) -> &'static str {
        match self {
            Path::Bare => "bare",
            Path::Store => "store",
            Path::EventSource => "eventsource",
            Path::Spans => "spans",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Path::Bare => "bare sqlx INSERTs (baseline)",
            Path::Store => "`Store::append_events`",
            Path::EventSource => "`EventStore::append_events`",
            Path::Spans => "`EventStore::append_events`, spans on",
        }
    }
}

#[derive(Debug)]
struct Config {
    appends: usize,
    repeat: usize,
    events_per_append: usize,
    streams: usize,
    writers: Vec<usize>,
    outbox: bool,
    paths: Vec<Path>,
    backends: Backends,
}

impl Config {
    fn from_env() -> Result<Self, BoxError> {
        let writers = env_list("KAUSAL_BENCH_STORE_WRITERS", "1,4")
            .iter()
            .map(|s| s.parse::<usize>().map(|n| n.max(1)))
            .collect::<Result<Vec<_>, _>>()?;
        let paths = env_list("KAUSAL_BENCH_STORE_PATHS", "bare,store,eventsource,spans")
            .iter()
            .map(|s| {
                Path::ALL
                    .into_iter()
                    .find(|p| p.key() == s)
                    .ok_or_else(|| format!("unknown path {s:?} (bare, store, eventsource, spans)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            appends: env_usize("KAUSAL_BENCH_STORE_APPENDS", 1_000)?.max(1),
            repeat: env_usize("KAUSAL_BENCH_STORE_REPEAT", 3)?.max(1),
            events_per_append: env_usize("KAUSAL_BENCH_STORE_EVENTS_PER_APPEND", 1)?.max(1),
            streams: env_usize("KAUSAL_BENCH_STORE_STREAMS", 1_000)?.max(1),
            writers,
            outbox: std::env::var("KAUSAL_BENCH_STORE_OUTBOX").is_ok_and(|v| v == "1"),
            paths,
            backends: Backends::from_env("KAUSAL_BENCH_STORE_BACKENDS"),
        })
    }
}

async fn run(config: Config) -> Result<(), BoxError> {
    let bench_started = Instant::now();
    println!(
        "Event store appends: {} appends per run of {} event(s) each{}, a fresh database per run; \
         {} cores, load average {}",
        config.appends,
        config.events_per_append,
        if config.outbox {
            ", each event with its outbox row"
        } else {
            ", no outbox rows"
        },
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
    );
    let mut results = Vec::new();
    for backend in config.backends.names() {
        for streams in [1, config.streams] {
            for &writers in &config.writers {
                let first = results.len();
                // Rounds of every path, each round in another order, so
                // that the machine's slow moments spread over the paths;
                // each path's median run (by rate) is reported.
                let mut rounds: Vec<Vec<Result_>> =
                    config.paths.iter().map(|_| Vec::new()).collect();
                for round in 0..config.repeat {
                    for k in 0..config.paths.len() {
                        let index = (k + round) % config.paths.len();
                        let path = config.paths[index];
                        eprintln!(
                            "[{backend}] {streams} stream(s), {writers} writer(s), round {}: {}",
                            round + 1,
                            path.key()
                        );
                        let result = with_fresh_store(
                            config.backends.postgres.as_deref(),
                            backend,
                            |store| run_one(&config, store, path, streams, writers),
                        )
                        .await?;
                        rounds[index].push(Result_ {
                            backend,
                            streams,
                            writers,
                            path,
                            ..result
                        });
                    }
                }
                for mut runs in rounds {
                    runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
                    let spread = (runs[0].rate(), runs[runs.len() - 1].rate());
                    let mut median = runs.swap_remove(runs.len() / 2);
                    median.spread = spread;
                    results.push(median);
                }
                // Each group is printed as soon as it is done: a run stopped
                // halfway keeps what it measured.
                print_rows(&results[first..]);
            }
        }
    }
    println!();
    println!("## Summary");
    println!();
    print_header();
    for r in &results {
        print_row(r, &results);
    }
    println!();
    println!(
        "Ratio: appends/s against the bare baseline of the same backend, layout and writers \
         (1.00 = as fast as plain INSERTs of the same rows). CPU: this process only \
         (PostgreSQL's server is another process). The whole benchmark took {:.0} s.",
        bench_started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---- one run -------------------------------------------------------------

/// What one run measured (`Result_`: not to be confused with `Result`).
#[derive(Debug)]
struct Result_ {
    backend: &'static str,
    streams: usize,
    writers: usize,
    path: Path,
    appends: usize,
    events: usize,
    conflicts: u64,
    elapsed: Duration,
    latencies: Latencies,
    cpu: Option<Duration>,
    /// The slowest and the fastest round's appends/s.
    spread: (f64, f64),
}

impl Result_ {
    fn rate(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }
}

/// The thing appended to, with what every path needs.
struct Target {
    store: Store,
    events: EventStore,
    backend: Backend,
    /// The version each stream is at, as the writers last learned it.
    versions: Vec<AtomicI64>,
    outbox: Option<OutboxTarget>,
    payload: String,
    correlation: CorrelationId,
    /// The traceparent stored by the paths that do not make their own.
    traceparent: TraceParent,
    events_per_append: usize,
}

async fn run_one(
    config: &Config,
    store: Store,
    path: Path,
    streams: usize,
    writers: usize,
) -> Result<Result_, BoxError> {
    let target = Arc::new(Target {
        events: EventStore::new(store.clone(), EventStoreMetrics::register(&Metrics::new())),
        backend: store.backend(),
        store,
        versions: (0..streams + 1).map(|_| AtomicI64::new(0)).collect(),
        outbox: config.outbox.then(|| OutboxTarget {
            topic: TOPIC.to_owned(),
            key: None,
        }),
        payload: payload(),
        correlation: CorrelationId::adopt(ids::new_event_id()),
        traceparent: TraceParent::new(ids::new_trace_id(), ids::new_span_id(), true),
        events_per_append: config.events_per_append,
    });
    if path == Path::Spans {
        // Process-wide; switched off again below.
        let _ = kausal_telemetry::testing::SpanCapture::install();
    }
    // Warm-up: the pool's connections opened, statements prepared, on a
    // stream of its own (the last slot of `versions`).
    for _ in 0..WARMUP_APPENDS {
        append(&target, path, streams).await?;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = process_cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..writers {
        let (target, next) = (target.clone(), next.clone());
        let total = config.appends;
        tasks.spawn(async move {
            let mut times = Vec::with_capacity(total / writers + 1);
            let mut conflicts = 0u64;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, BoxError>((times, conflicts));
                }
                let begun = Instant::now();
                conflicts += append(&target, path, i % streams).await?;
                times.push(begun.elapsed());
            }
        });
    }
    let mut times = Vec::with_capacity(config.appends);
    let mut conflicts = 0;
    while let Some(done) = tasks.join_next().await {
        let (t, c) = done??;
        times.extend(t);
        conflicts += c;
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    if path == Path::Spans {
        kausal_telemetry::spans::set_enabled(false);
    }
    // Every append landed once, at the versions the writers were given.
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM event_store_events")
        .fetch_one(target.store.pool())
        .await?;
    let expected = ((config.appends + WARMUP_APPENDS) * config.events_per_append) as i64;
    if stored != expected {
        return Err(format!(
            "{} path: {stored} events stored, {expected} expected",
            path.key()
        )
        .into());
    }
    Ok(Result_ {
        backend: "",
        streams,
        writers,
        path,
        appends: config.appends,
        events: config.appends * config.events_per_append,
        conflicts,
        elapsed,
        latencies: Latencies::new(times),
        cpu,
        spread: (0.0, 0.0),
    })
}

/// One append to stream `slot` by `path`; returns the conflicts it met on
/// the way (each retried at once with the version the conflict reported).
async fn append(target: &Target, path: Path, slot: usize) -> Result<u64, BoxError> {
    let stream = StreamName::new(AGGREGATE, slot.to_string());
    let stream_id = stream.stream_id();
    let n = target.events_per_append;
    let version = &target.versions[slot];
    if path == Path::Bare {
        let first = version.fetch_add(n as i64, Ordering::Relaxed) + 1;
        bare_append(target, &stream_id, first, &new_events(target)).await?;
        return Ok(0);
    }
    let mut conflicts = 0;
    let mut expected = ExpectedVersion::Exact(version.load(Ordering::Relaxed));
    loop {
        let events = new_events(target);
        let outbox = target.outbox.as_ref();
        // A conflict's `actual` is the version to expect on the retry.
        let outcome = match path {
            Path::Store => match target
                .store
                .append_events(&stream_id, expected, &events, outbox)
                .await
            {
                Ok(appended) => Ok(appended.stream_version),
                Err(AppendError::Conflict { actual, .. }) => Err(actual),
                Err(e) => return Err(e.into()),
            },
            _ => match target
                .events
                .append_events(&stream, expected, events, outbox, None)
                .await
            {
                Ok(appended) => Ok(appended.stream_version),
                Err(kausal_eventsource::Error::Conflict { actual, .. }) => Err(actual),
                Err(e) => return Err(e.into()),
            },
        };
        match outcome {
            Ok(stream_version) => {
                version.fetch_max(stream_version, Ordering::Relaxed);
                return Ok(conflicts);
            }
            Err(actual) => {
                conflicts += 1;
                expected = ExpectedVersion::Exact(actual);
            }
        }
    }
}

/// The baseline: the same rows with plain sqlx, versions from `first` on.
async fn bare_append(
    target: &Target,
    stream_id: &str,
    first: i64,
    events: &[NewEvent],
) -> Result<(), BoxError> {
    let pool = target.store.pool();
    let mut tx = match target.backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => pool.begin().await?,
    };
    let recorded_at_ms = now_ms();
    for (version, event) in (first..).zip(events) {
        let insert = sqlx::query(if target.outbox.is_some() {
            INSERT_RETURNING
        } else {
            INSERT
        })
        .bind(stream_id)
        .bind(version)
        .bind(event.event_id.to_string())
        .bind(&event.event_type)
        .bind(i64::from(event.event_version))
        .bind(&event.payload)
        .bind(event.correlation_id.as_str())
        .bind(event.causation_id.map(|id| id.to_string()))
        .bind(event.traceparent.map(|tp| tp.to_string()))
        .bind(recorded_at_ms);
        let Some(outbox) = &target.outbox else {
            insert.execute(&mut *tx).await?;
            continue;
        };
        let position: i64 = insert.fetch_one(&mut *tx).await?.try_get(0)?;
        sqlx::query(
            "INSERT INTO event_store_outbox (global_position, stream_id, stream_version, \
             topic, record_key, created_at_ms) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(position)
        .bind(stream_id)
        .bind(version)
        .bind(&outbox.topic)
        .bind(outbox.key.as_deref())
        .bind(recorded_at_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

const INSERT: &str = "INSERT INTO event_store_events (stream_id, stream_version, event_id, \
    event_type, event_version, payload, correlation_id, causation_id, traceparent, recorded_at_ms) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
const INSERT_RETURNING: &str = "INSERT INTO event_store_events (stream_id, stream_version, \
    event_id, event_type, event_version, payload, correlation_id, causation_id, traceparent, \
    recorded_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING global_position";

/// One append's events: new ids, the shared payload and correlation.
fn new_events(target: &Target) -> Vec<NewEvent> {
    (0..target.events_per_append)
        .map(|_| NewEvent {
            event_id: ids::new_event_id(),
            event_type: "Deposited".to_owned(),
            event_version: 1,
            payload: target.payload.clone(),
            correlation_id: target.correlation.clone(),
            causation_id: Some(ids::new_event_id()),
            traceparent: Some(target.traceparent),
        })
        .collect()
}

/// An event payload the size of a ledger leg's (~170 bytes of JSON).
fn payload() -> String {
    format!(
        r#"{{"entry_id":"{}","account":"merchant-0042","direction":"credit","amount":129900,"currency":"EUR","order_id":"order-{}"}}"#,
        ids::new_event_id(),
        ids::new_event_id()
    )
}

// ---- report ------------------------------------------------------------------

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn print_header() {
    println!(
        "| backend | streams | writers | path | appends/s | (slowest–fastest run) | events/s | p50 ms | p99 ms | max ms | conflicts | CPU µs per append | ratio to bare |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
}

fn print_row(r: &Result_, all: &[Result_]) {
    let baseline = all
        .iter()
        .find(|b| {
            b.path == Path::Bare
                && b.backend == r.backend
                && b.streams == r.streams
                && b.writers == r.writers
        })
        .map(Result_::rate);
    println!(
        "| {} | {} | {} | {} | {:.0} | {:.0}–{:.0} | {:.0} | {} | {} | {} | {} | {} | {} |",
        r.backend,
        r.streams,
        r.writers,
        r.path.label(),
        r.rate(),
        r.spread.0,
        r.spread.1,
        r.events as f64 / r.elapsed.as_secs_f64(),
        ms(r.latencies.p50),
        ms(r.latencies.p99),
        ms(r.latencies.max),
        r.conflicts,
        r.cpu.map_or_else(
            || "-".to_owned(),
            |c| format!("{:.0}", c.as_secs_f64() * 1e6 / r.appends as f64)
        ),
        baseline.map_or_else(|| "-".to_owned(), |b| format!("{:.2}", r.rate() / b)),
    );
}

fn print_rows(rows: &[Result_]) {
    println!();
    print_header();
    for r in rows {
        print_row(r, rows);
    }
}
