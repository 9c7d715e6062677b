//! Ledger benchmark (issue 14): `POST /v1/entries` requests per second and
//! latency end to end, against the same entries posted through the
//! ledger's domain call (`Ledger::post`) without HTTP in the same run. On
//! SQLite (a fresh file in a temp dir per run) and PostgreSQL (a fresh
//! schema per run, dropped after it) when `KAUSAL_TEST_DATABASE_URL` is
//! set. Printed as Markdown tables, never asserted.
//!
//! ```text
//! cargo bench -p kausal-ledger --bench entries
//! KAUSAL_BENCH_LEDGER_ENTRIES=20000 KAUSAL_BENCH_LEDGER_CLIENTS=1,4,16 \
//!     cargo bench -p kausal-ledger --bench entries
//! ```
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KAUSAL_BENCH_LEDGER_ENTRIES` | measured entries per run (all clients together) | 1000 |
//! | `KAUSAL_BENCH_LEDGER_REPEAT` | runs of each path per backend and clients; the median (by requests/s) is reported | 3 |
//! | `KAUSAL_BENCH_LEDGER_CLIENTS` | comma-separated concurrent clients, one set of runs each | `1,4` |
//! | `KAUSAL_BENCH_LEDGER_ACCOUNTS` | accounts the entries' legs are spread over | 1000 |
//! | `KAUSAL_BENCH_LEDGER_PATHS` | comma-separated subset of `http,direct,append` | all |
//! | `KAUSAL_BENCH_LEDGER_BACKENDS` | comma-separated subset of `sqlite,postgres` | both |
//! | `KAUSAL_TEST_DATABASE_URL` | PostgreSQL server; unset skips PostgreSQL | unset |
//!
//! **Entries.** Each is a two-leg EUR entry (a debit on one account, the
//! same amount credited to another), the two accounts drawn at random
//! (fixed seed) from `KAUSAL_BENCH_LEDGER_ACCOUNTS`, with an
//! `Idempotency-Key` of its own; generated before the runs, the same list
//! for every path. Each path runs `KAUSAL_BENCH_LEDGER_REPEAT` times per
//! backend and clients, the paths taking turns in a rotating order, and
//! the median run by requests/s is reported with the slowest and fastest.
//! Posting one reads four streams (the key's, the entry's,
//! both accounts'; accounts come from the ledger's in-memory cache plus
//! the events after the cached version) and appends to the same four in
//! one transaction: `EntryPosted` with its outbox row, a `LegPosted` per
//! account, `IdempotencyKeyUsed`. Each run gets a fresh database and posts
//! 50 warm-up entries (not measured) before the measured ones, from
//! `clients` tasks in a closed loop (each sends its next entry when the
//! previous one was answered). Every answer must be a 201; a 503 (accounts
//! contended past the retries) would be counted and shown.
//!
//! **Paths**, each on the same entries:
//!
//! - *HTTP*: `POST /v1/entries` with reqwest to the ledger's router served
//!   in this process on a real TCP socket on 127.0.0.1
//!   (`kausal_ledger::http::serve`, as the service serves it): headers,
//!   body read, JSON, `Entry::parse`, the SERVER span's ids, the posting,
//!   the JSON answer. No tracer provider and no log subscriber are
//!   installed, so spans are not built and log lines go nowhere: the
//!   service's telemetry export is not in these figures.
//! - *direct* (the baseline): the same requests through `Ledger::post` (key
//!   and entry parsed in the call), no HTTP: the ledger's own rate.
//! - *append*: only the transaction each posting ends with:
//!   `EventStore::append_many` of the same four streams with events of the
//!   same types and sizes (payloads copied from a few entries posted
//!   directly on a scratch database first), without the four loads or the decision
//!   (`ExpectedVersion::Any` on the accounts, `NoStream` on the entry and
//!   the key). What the posting costs beyond its write.
//!
//! The outbox relay does not run: the outbox rows accumulate (the relay
//! has a benchmark of its own, `cargo bench -p kausal-outbox --bench
//! relay`). *Ratio* is requests/s against the direct path of the same
//! backend and clients; the CPU column is this process's CPU time per
//! entry (client, server, SQLite; not PostgreSQL's server).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kausal_bench::{
    Backends, BoxError, Latencies, env_list, env_usize, load_average, now_ms, process_cpu,
    with_fresh_store,
};
use kausal_contracts::ledger::{
    Direction as Side, LEDGER_ENTRIES_TOPIC, LegRequest, PostEntryRequest,
};
use kausal_core::CorrelationId;
use kausal_eventsource::{
    EventStore, EventStoreMetrics, ExpectedVersion, GlobalCursor, OutboxTarget, StreamEvents,
    StreamName,
};
use kausal_ledger::entry::Entry;
use kausal_ledger::http::{ApiState, serve};
use kausal_ledger::idempotency::IdempotencyKey;
use kausal_ledger::{Ledger, Origin, Posted};
use kausal_store::{NewEvent, Store};
use kausal_telemetry::{Metrics, ids};
use tokio_util::sync::CancellationToken;

const WARMUP_ENTRIES: usize = 50;
const SEED: u64 = 0x6c65_6467_6572;

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
    Http,
    Direct,
    Append,
}

impl Path {
    const ALL: [Path; 3] = [Path::Http, Path::Direct, Path::Append];

    fn key(self) -> &'static str {
        match self {
            Path::Http => "http",
            Path::Direct => "direct",
            Path::Append => "append",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Path::Http => "`POST /v1/entries` (reqwest → axum, TCP)",
            Path::Direct => "`Ledger::post`, no HTTP (baseline)",
            Path::Append => "`EventStore::append_many` alone",
        }
    }
}

#[derive(Debug)]
struct Config {
    entries: usize,
    repeat: usize,
    clients: Vec<usize>,
    accounts: usize,
    paths: Vec<Path>,
    backends: Backends,
}

impl Config {
    fn from_env() -> Result<Self, BoxError> {
        let clients = env_list("KAUSAL_BENCH_LEDGER_CLIENTS", "1,4")
            .iter()
            .map(|s| s.parse::<usize>().map(|n| n.max(1)))
            .collect::<Result<Vec<_>, _>>()?;
        let paths = env_list("KAUSAL_BENCH_LEDGER_PATHS", "http,direct,append")
            .iter()
            .map(|s| {
                Path::ALL
                    .into_iter()
                    .find(|p| p.key() == s)
                    .ok_or_else(|| format!("unknown path {s:?} (http, direct, append)"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            entries: env_usize("KAUSAL_BENCH_LEDGER_ENTRIES", 1_000)?.max(1),
            repeat: env_usize("KAUSAL_BENCH_LEDGER_REPEAT", 3)?.max(1),
            clients,
            accounts: env_usize("KAUSAL_BENCH_LEDGER_ACCOUNTS", 1_000)?.max(2),
            paths,
            backends: Backends::from_env("KAUSAL_BENCH_LEDGER_BACKENDS"),
        })
    }
}

async fn run(config: Config) -> Result<(), BoxError> {
    let bench_started = Instant::now();
    println!(
        "Ledger entries: {} entries per run (+{WARMUP_ENTRIES} warm-up), two legs each over {} accounts, \
         a fresh database per run, the outbox relay not running; {} cores, load average {}",
        config.entries,
        config.accounts,
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average(),
    );
    let entries = Arc::new(Entries::generate(
        WARMUP_ENTRIES + config.entries,
        config.accounts,
    ));
    let mut results = Vec::new();
    for backend in config.backends.names() {
        // The append path's events: the types and payloads of what the
        // ledger stores, from a few entries posted directly first.
        let shapes = {
            let entries = entries.clone();
            Arc::new(
                with_fresh_store(
                    config.backends.postgres.as_deref(),
                    backend,
                    |store| async move {
                        let ledger = ledger(&store);
                        for posting in &entries.list[..4] {
                            post_direct(&ledger, posting).await?;
                        }
                        Shapes::read(&store).await
                    },
                )
                .await?,
            )
        };
        for &clients in &config.clients {
            let first = results.len();
            // Rounds of every path, each round in another order, so that a
            // slow moment of the machine spreads over the paths; each
            // path's median run (by rate) is reported.
            let mut rounds: Vec<Vec<Run>> = config.paths.iter().map(|_| Vec::new()).collect();
            for round in 0..config.repeat {
                for k in 0..config.paths.len() {
                    let index = (k + round) % config.paths.len();
                    let path = config.paths[index];
                    eprintln!(
                        "[{backend}] {clients} client(s), round {}: {}",
                        round + 1,
                        path.key()
                    );
                    let (entries, shapes) = (entries.clone(), shapes.clone());
                    let result =
                        with_fresh_store(config.backends.postgres.as_deref(), backend, |store| {
                            run_one(store, path, clients, entries, shapes)
                        })
                        .await?;
                    rounds[index].push(Run { backend, ..result });
                }
            }
            for mut runs in rounds {
                runs.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
                let spread = (runs[0].rate(), runs[runs.len() - 1].rate());
                let mut median = runs.swap_remove(runs.len() / 2);
                median.spread = spread;
                results.push(median);
            }
            // Each group is printed as soon as it is done.
            print_rows(&results[first..]);
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
        "Ratio: requests/s against `Ledger::post` without HTTP, same backend and clients. \
         CPU: this process only (PostgreSQL's server is another process). The whole \
         benchmark took {:.0} s.",
        bench_started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn ledger(store: &Store) -> Ledger {
    Ledger::new(EventStore::new(
        store.clone(),
        EventStoreMetrics::register(&Metrics::new()),
    ))
}

// ---- the entries ---------------------------------------------------------------

/// One entry to post: its key, its request and the request's JSON body.
#[derive(Debug)]
struct Posting {
    key: String,
    request: PostEntryRequest,
    body: String,
}

#[derive(Debug)]
struct Entries {
    list: Vec<Posting>,
}

impl Entries {
    fn generate(n: usize, accounts: usize) -> Self {
        let mut random = SEED;
        let mut next = move || {
            // xorshift64*
            random ^= random >> 12;
            random ^= random << 25;
            random ^= random >> 27;
            random.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let list = (0..n)
            .map(|i| {
                let debit = (next() % accounts as u64) as usize;
                let credit = (debit + 1 + (next() % (accounts as u64 - 1)) as usize) % accounts;
                let amount = 1 + next() % 100_000;
                let leg = |account: usize, direction| LegRequest {
                    account: format!("acct-{account:05}"),
                    direction,
                    amount,
                };
                let request = PostEntryRequest {
                    entry_id: None,
                    description: format!("bench entry {i}"),
                    currency: "EUR".to_owned(),
                    order_id: Some(format!("order-{i}")),
                    legs: vec![leg(debit, Side::Debit), leg(credit, Side::Credit)],
                };
                let body = serde_json::to_string(&request).unwrap_or_default();
                Posting {
                    key: ids::new_event_id().to_string(),
                    request,
                    body,
                }
            })
            .collect();
        Self { list }
    }
}

/// The events one posting stores, by stream kind: (event type, payload).
#[derive(Debug)]
struct Shapes {
    entry: (String, String),
    leg: (String, String),
    key: (String, String),
}

impl Shapes {
    /// From the first entry stored on a scratch database.
    async fn read(store: &Store) -> Result<Self, BoxError> {
        let events = store.read_all(GlobalCursor::START, 100).await?;
        let find = |prefix: &str| {
            events
                .iter()
                .find(|e| e.stream_id.starts_with(prefix))
                .map(|e| (e.event_type.clone(), e.payload.clone()))
                .ok_or_else(|| format!("no {prefix} event stored"))
        };
        Ok(Self {
            entry: find("LedgerEntry-")?,
            leg: find("LedgerAccount-")?,
            key: find("LedgerIdempotency-")?,
        })
    }
}

// ---- one run -----------------------------------------------------------------

#[derive(Debug)]
struct Run {
    backend: &'static str,
    path: Path,
    clients: usize,
    entries: usize,
    /// Answers other than 201 (503: contended past the retries).
    refused: usize,
    elapsed: Duration,
    latencies: Latencies,
    cpu: Option<Duration>,
    /// The slowest and the fastest round's requests/s.
    spread: (f64, f64),
}

impl Run {
    fn rate(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64()
    }
}

/// How each path posts entry `i`.
#[derive(Clone)]
enum Poster {
    Http {
        client: reqwest::Client,
        url: String,
    },
    Direct(Box<Ledger>),
    Append {
        events: EventStore,
        shapes: Arc<Shapes>,
    },
}

impl Poster {
    /// Posts one entry; `false` when it was refused (a non-201 answer).
    async fn post(&self, posting: &Posting) -> Result<bool, BoxError> {
        match self {
            Poster::Http { client, url } => {
                let response = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header(kausal_http::header::IDEMPOTENCY_KEY, &posting.key)
                    .body(posting.body.clone())
                    .send()
                    .await?;
                let status = response.status();
                let text = response.text().await?;
                match status {
                    reqwest::StatusCode::CREATED => Ok(true),
                    reqwest::StatusCode::SERVICE_UNAVAILABLE => Ok(false),
                    other => Err(format!("POST /v1/entries answered {other}: {text}").into()),
                }
            }
            Poster::Direct(ledger) => post_direct(ledger, posting).await,
            Poster::Append { events, shapes } => {
                append_only(events, shapes, posting).await?;
                Ok(true)
            }
        }
    }
}

/// `Ledger::post` as the HTTP handler calls it, minus HTTP.
async fn post_direct(ledger: &Ledger, posting: &Posting) -> Result<bool, BoxError> {
    let key: IdempotencyKey = posting.key.parse()?;
    let entry = Entry::parse(&posting.request, || ids::new_event_id().to_string())?;
    let origin = Origin {
        correlation_id: CorrelationId::adopt(ids::new_event_id()),
        causation_id: None,
        traceparent: None,
    };
    match ledger.post(&key, &posting.request, &entry, &origin).await {
        Ok(Posted::Created(_)) => Ok(true),
        Ok(Posted::Replayed(_)) => Err("an entry was replayed: keys must be distinct".into()),
        Err(kausal_ledger::PostError::Contended { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The posting's transaction alone: the same four streams and event
/// shapes, no loads, no decision.
async fn append_only(
    events: &EventStore,
    shapes: &Shapes,
    posting: &Posting,
) -> Result<(), BoxError> {
    let correlation = CorrelationId::adopt(ids::new_event_id());
    let event = |(event_type, payload): &(String, String)| NewEvent {
        event_id: ids::new_event_id(),
        event_type: event_type.clone(),
        event_version: 1,
        payload: payload.clone(),
        correlation_id: correlation.clone(),
        causation_id: None,
        traceparent: None,
    };
    let entry_id = ids::new_event_id().to_string();
    let mut parts = vec![StreamEvents {
        stream: StreamName::new("LedgerEntry", entry_id.clone()),
        expected: ExpectedVersion::NoStream,
        events: vec![event(&shapes.entry)],
        outbox: Some(OutboxTarget {
            topic: LEDGER_ENTRIES_TOPIC.to_owned(),
            key: Some(entry_id),
        }),
    }];
    for leg in &posting.request.legs {
        parts.push(StreamEvents {
            stream: StreamName::new("LedgerAccount", leg.account.clone()),
            expected: ExpectedVersion::Any,
            events: vec![event(&shapes.leg)],
            outbox: None,
        });
    }
    parts.push(StreamEvents {
        stream: StreamName::new("LedgerIdempotency", posting.key.clone()),
        expected: ExpectedVersion::NoStream,
        events: vec![event(&shapes.key)],
        outbox: None,
    });
    events.append_many(parts, None).await?;
    Ok(())
}

async fn run_one(
    store: Store,
    path: Path,
    clients: usize,
    entries: Arc<Entries>,
    shapes: Arc<Shapes>,
) -> Result<Run, BoxError> {
    let mut server = None;
    let poster = match path {
        Path::Http => {
            let shutdown = CancellationToken::new();
            let (addr, task): (SocketAddr, _) = serve(
                ([127, 0, 0, 1], 0).into(),
                ApiState {
                    ledger: ledger(&store),
                },
                shutdown.clone().cancelled_owned(),
            )
            .await?;
            server = Some((shutdown, task));
            Poster::Http {
                client: reqwest::Client::builder()
                    .pool_max_idle_per_host(clients)
                    .build()?,
                url: format!("http://{addr}/v1/entries"),
            }
        }
        Path::Direct => Poster::Direct(Box::new(ledger(&store))),
        Path::Append => Poster::Append {
            events: EventStore::new(store.clone(), EventStoreMetrics::register(&Metrics::new())),
            shapes,
        },
    };
    for posting in &entries.list[..WARMUP_ENTRIES] {
        poster.post(posting).await?;
    }
    let next = Arc::new(AtomicUsize::new(WARMUP_ENTRIES));
    let cpu_before = process_cpu();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (poster, next, entries) = (poster.clone(), next.clone(), entries.clone());
        tasks.spawn(async move {
            let mut times = Vec::new();
            let mut refused = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(posting) = entries.list.get(i) else {
                    return Ok::<_, BoxError>((times, refused));
                };
                let begun = Instant::now();
                if !poster.post(posting).await? {
                    refused += 1;
                }
                times.push(begun.elapsed());
            }
        });
    }
    let mut times = Vec::new();
    let mut refused = 0;
    while let Some(done) = tasks.join_next().await {
        let (t, r) = done??;
        times.extend(t);
        refused += r;
    }
    let elapsed = started.elapsed();
    let cpu = process_cpu()
        .zip(cpu_before)
        .map(|(after, before)| after.saturating_sub(before));
    if let Some((shutdown, task)) = server {
        shutdown.cancel();
        let _ = task.await;
    }
    let measured = entries.list.len() - WARMUP_ENTRIES;
    // Every posting is in the store: the entries' outbox rows.
    let outbox = store.outbox_stats(now_ms()).await?.pending;
    if outbox != (entries.list.len() - refused) as i64 {
        return Err(format!(
            "{} path: {outbox} outbox rows for {} entries posted",
            path.key(),
            entries.list.len() - refused
        )
        .into());
    }
    Ok(Run {
        backend: "",
        path,
        clients,
        entries: measured,
        refused,
        elapsed,
        latencies: Latencies::new(times),
        cpu,
        spread: (0.0, 0.0),
    })
}

// ---- report --------------------------------------------------------------------

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn print_header() {
    println!(
        "| backend | clients | path | entries | requests/s | (slowest–fastest run) | p50 ms | p99 ms | max ms | refused | CPU µs per entry | ratio to direct |"
    );
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
}

fn print_row(r: &Run, all: &[Run]) {
    let baseline = all
        .iter()
        .find(|b| b.path == Path::Direct && b.backend == r.backend && b.clients == r.clients)
        .map(Run::rate);
    println!(
        "| {} | {} | {} | {} | {:.0} | {:.0}–{:.0} | {} | {} | {} | {} | {} | {} |",
        r.backend,
        r.clients,
        r.path.label(),
        r.entries,
        r.rate(),
        r.spread.0,
        r.spread.1,
        ms(r.latencies.p50),
        ms(r.latencies.p99),
        ms(r.latencies.max),
        r.refused,
        r.cpu.map_or_else(
            || "-".to_owned(),
            |c| format!("{:.0}", c.as_secs_f64() * 1e6 / r.entries as f64)
        ),
        baseline.map_or_else(|| "-".to_owned(), |b| format!("{:.2}", r.rate() / b)),
    );
}

fn print_rows(rows: &[Run]) {
    println!();
    print_header();
    for r in rows {
        print_row(r, rows);
    }
}
