//! End-to-end throughput of the payment pipeline on the embedded broker or
//! on Apache Kafka, against a bare rdkafka loop with the same delivery
//! semantics. Prints a markdown table; asserts nothing (DESIGN §8: speed
//! lives in benchmarks).
//!
//! ```text
//! cargo bench -p kausal-bench --bench pipeline
//! KAUSAL_BENCH_KAFKA=$(scripts/kafka start --nodes 1) cargo bench -p kausal-bench --bench pipeline
//! ```
//!
//! For each storage engine of the embedded broker (memory, SQLite file), or
//! for the Kafka at `KAUSAL_BENCH_KAFKA`:
//!
//! 1. N `OrderPlaced` events with Kausal headers are produced to a fresh
//!    3-partition `orders-*` topic (many publishes in flight);
//! 2. **bare**: a plain `StreamConsumer` + idempotent `FutureProducer`
//!    (the contract's client settings, `KafkaConfig::consumer_config` /
//!    `producer_config`) consumes them one at a time, produces a small record
//!    per order to `bare-out`, awaits its delivery, stores the offset and
//!    commits every 200 ms and at the end — the runtime's semantics without
//!    the runtime; two variants show where a sequential loop's time goes:
//!    `linger.ms=0`, and deliveries pipelined (awaited in order, 256 open);
//! 3. **kausal**: `ConsumerRuntime` with the payment handler (simulated
//!    gateway: no failures, no declines, no latency) consumes the same
//!    records with a fresh group and produces `PaymentProcessed`; with
//!    receipts (the default), without receipts, with `linger.ms=0` (with and
//!    without receipts), and with the SQLite idempotency store.
//!
//! Rates count from the first finished record to the N-th (the pipelined
//! bare loop: from the first record received), so the consumer group join
//! is left out (it is printed separately). Every pipeline gets a fresh
//! embedded broker with the same N orders; on Kafka, which outlives the run,
//! a fresh input topic instead (the output topics are shared: pipelines
//! only append to them).
//!
//! Environment:
//! - `KAUSAL_BENCH_KAFKA` — bootstrap servers of an external broker (Apache
//!   Kafka: `scripts/kafka start --nodes 1|3` prints them; `scripts/bench
//!   --kafka single|cluster --with-inprocess` starts one and sets this):
//!   the pipelines run there instead of on the embedded engines, with N
//!   from `KAUSAL_BENCH_EVENTS`, topics with the cluster's default
//!   replication factor; the topics are left on it;
//! - `KAUSAL_BENCH_EVENTS` — N on the memory engine and on Kafka (default
//!   20 000);
//! - `KAUSAL_BENCH_SQLITE_EVENTS` — N on the SQLite engine (default 5 000);
//! - `KAUSAL_BENCH_ENGINES` — `sqlite,memory` (default `sqlite`; SQLite
//!   always runs first, see `Settings::from_env`; ignored with
//!   `KAUSAL_BENCH_KAFKA`). The memory engine skips the rest of a produce
//!   batch when a fetch starts inside it, which the runtime's pausing and
//!   resuming of partitions now provokes: its runs lose records and are not
//!   valid measurements (docs/benchmarks.md); ask for it to see that;
//! - `KAUSAL_BENCH_PIPELINES` — any of `bare`, `bare-no-linger`,
//!   `bare-pipelined`, `kausal`, `no-receipts`, `kausal-no-linger`,
//!   `no-receipts-no-linger`, `store`, `slow-partition`
//!   (default all, in that order);
//! - `KAUSAL_BENCH_LOG_FILE` — install the JSON log layer writing to this
//!   file (level from `RUST_LOG`, default info) to measure logging cost;
//!   without it no subscriber is installed;
//! - `KAUSAL_BENCH_KEEP=1` — keep `./.kausal-bench/` (SQLite files).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::{FuturesOrdered, FuturesUnordered};
use kausal_broker::{EmbeddedBroker, Storage};
use kausal_contracts::{ORDER_PLACED_VERSION, OrderPlaced, event_types, topics};
use kausal_kafka::admin::{Admin, TopicSpec};
use kausal_kafka::receipt::RECEIPTS_TOPIC;
use kausal_kafka::runtime::Outcome;
use kausal_kafka::{ConsumerRuntime, EventProducer, EventSpec, KafkaConfig, OutgoingEvent};
use kausal_payment::{PaymentHandler, PaymentMetrics, SimulatedGateway};
use kausal_telemetry::Metrics;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// Publishes in flight at once while pre-producing.
const PRODUCE_IN_FLIGHT: usize = 2_000;
/// A pipeline that finishes no record for this long is reported as stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
const BARE_OUT: &str = "bare-out";
const SCRATCH: &str = ".kausal-bench";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Memory,
    Sqlite,
    /// The external broker at `KAUSAL_BENCH_KAFKA`, of this many brokers.
    Kafka {
        brokers: usize,
    },
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::Kafka { .. } => "kafka",
        }
    }

    /// The table's engine column: on Kafka, one node and a cluster differ
    /// (replication, min.insync.replicas), so the size is part of the name.
    fn label(self) -> String {
        match self {
            Self::Kafka { brokers: 1 } => "kafka, 1 broker".to_owned(),
            Self::Kafka { brokers } => format!("kafka, {brokers} brokers"),
            _ => self.name().to_owned(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pipeline {
    Bare,
    /// The bare loop with `linger.ms=0`: the producer's batching delay is
    /// the floor of an awaited delivery.
    BareNoLinger,
    /// Deliveries awaited in consumption order with many in flight: the
    /// same commit-after-ack guarantee without one round trip per record.
    BarePipelined,
    /// The runtime as a service runs it (receipts on).
    Kausal,
    /// Receipts off: one produce per record, like the bare loop.
    NoReceipts,
    /// The default runtime with `linger.ms=0` given as a `KafkaConfig`
    /// extra: what the producer's batching delay costs a sequential
    /// consumer.
    KausalNoLinger,
    /// Receipts off and `linger.ms=0`: against `BareNoLinger`, the
    /// runtime's own per-record cost once the batching delay is gone.
    NoReceiptsNoLinger,
    /// Receipts on plus the SQLite idempotency store.
    Store,
    /// The mixed workload: the default runtime with every record of
    /// partition 0 taking [`SLOW_RECORD`] in its handler. Measured over the
    /// other partitions' records only: against `Kausal`, what one slow
    /// partition costs the healthy ones (per-partition workers: little;
    /// one record at a time per process: everything).
    SlowPartition,
}

/// The handler time of each record of the slow partition.
const SLOW_RECORD: Duration = Duration::from_millis(50);

impl Pipeline {
    const ALL: [Self; 9] = [
        Self::Bare,
        Self::BareNoLinger,
        Self::BarePipelined,
        Self::Kausal,
        Self::NoReceipts,
        Self::KausalNoLinger,
        Self::NoReceiptsNoLinger,
        Self::Store,
        Self::SlowPartition,
    ];

    fn key(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::BareNoLinger => "bare-no-linger",
            Self::BarePipelined => "bare-pipelined",
            Self::Kausal => "kausal",
            Self::NoReceipts => "no-receipts",
            Self::KausalNoLinger => "kausal-no-linger",
            Self::NoReceiptsNoLinger => "no-receipts-no-linger",
            Self::Store => "store",
            Self::SlowPartition => "slow-partition",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Bare => "bare rdkafka loop",
            Self::BareNoLinger => "bare rdkafka loop, linger.ms=0",
            Self::BarePipelined => {
                "bare, pipelined (256 deliveries in flight, offsets stored in order)"
            }
            Self::Kausal => "kausal runtime (receipts on, default)",
            Self::NoReceipts => "kausal runtime, receipts off",
            Self::KausalNoLinger => "kausal runtime (receipts on), linger.ms=0",
            Self::NoReceiptsNoLinger => "kausal runtime, receipts off, linger.ms=0",
            Self::Store => "kausal runtime + SQLite idempotency store",
            Self::SlowPartition => {
                "kausal runtime, partition 0 slowed to 50 ms a record (the other partitions measured)"
            }
        }
    }
}

#[derive(Debug)]
struct Settings {
    memory_events: u64,
    sqlite_events: u64,
    /// Bootstrap servers of an external broker: replaces the engines.
    kafka: Option<String>,
    engines: Vec<Engine>,
    pipelines: Vec<Pipeline>,
    keep: bool,
    /// Not run by `cargo bench`: tiny sizes, figures meaningless.
    smoke: bool,
}

impl Settings {
    fn from_env(smoke: bool) -> Result<Self> {
        let number = |name: &str, default: u64| -> Result<u64> {
            match std::env::var(name) {
                Ok(v) => Ok(v
                    .trim()
                    .replace('_', "")
                    .parse::<u64>()
                    .map_err(|e| format!("{name}={v:?} is not a positive integer: {e}"))?),
                Err(_) => Ok(default),
            }
        };
        let list = |name: &str| -> Option<Vec<String>> {
            std::env::var(name).ok().map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_lowercase())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
        };
        let engines = match list("KAUSAL_BENCH_ENGINES") {
            None => vec![Engine::Sqlite],
            Some(names) => names
                .iter()
                .map(|n| match n.as_str() {
                    "memory" => Ok(Engine::Memory),
                    "sqlite" => Ok(Engine::Sqlite),
                    other => Err(format!("unknown engine {other:?} (memory, sqlite)")),
                })
                .collect::<Result<_, _>>()?,
        };
        let pipelines = match list("KAUSAL_BENCH_PIPELINES") {
            None => Pipeline::ALL.to_vec(),
            Some(names) => names
                .iter()
                .map(|n| {
                    Pipeline::ALL
                        .into_iter()
                        .find(|p| p.key() == n)
                        .ok_or_else(|| {
                            let known: Vec<&str> = Pipeline::ALL.iter().map(|p| p.key()).collect();
                            format!("unknown pipeline {n:?} ({})", known.join(", "))
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        // The SQLite engine runs first: tansu's libsql configures SQLite's
        // threading mode when it opens its file, and panics ("incorrect
        // threading configuration") if SQLite was already initialised in
        // the process — which the idempotency store (sqlx, same SQLite
        // symbols) does. See docs/benchmarks.md.
        let mut engines = engines;
        engines.sort_by_key(|e| *e != Engine::Sqlite);
        engines.dedup();
        let kafka = std::env::var("KAUSAL_BENCH_KAFKA")
            .ok()
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        if let Some(bootstrap) = &kafka {
            engines = vec![Engine::Kafka {
                brokers: broker_count(bootstrap)?,
            }];
        }
        let settings = Self {
            memory_events: number("KAUSAL_BENCH_EVENTS", if smoke { 200 } else { 20_000 })?,
            sqlite_events: number(
                "KAUSAL_BENCH_SQLITE_EVENTS",
                if smoke { 100 } else { 5_000 },
            )?,
            smoke,
            kafka,
            engines,
            pipelines,
            keep: std::env::var("KAUSAL_BENCH_KEEP").is_ok_and(|v| v == "1"),
        };
        if settings.memory_events == 0 || settings.sqlite_events == 0 {
            return Err("the number of events must be at least 1".into());
        }
        Ok(settings)
    }

    fn events(&self, engine: Engine) -> u64 {
        match engine {
            Engine::Memory | Engine::Kafka { .. } => self.memory_events,
            Engine::Sqlite => self.sqlite_events,
        }
    }
}

/// How many brokers the cluster at `bootstrap` has (metadata), for the
/// table; also fails early when nothing answers there.
fn broker_count(bootstrap: &str) -> Result<usize> {
    let client: BaseConsumer = KafkaConfig::new(bootstrap)
        .consumer_config("kausal-bench-metadata", "bench-metadata")
        .create()?;
    let metadata = client
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(|e| format!("KAUSAL_BENCH_KAFKA={bootstrap}: no metadata: {e}"))?;
    Ok(metadata.brokers().len())
}

/// One line of the result table.
#[derive(Debug)]
struct Row {
    engine: Engine,
    pipeline: String,
    events: u64,
    seconds: f64,
    /// From subscribing to the first finished record (group join).
    startup: Option<f64>,
    bare: bool,
    note: String,
}

impl Row {
    fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.events as f64 / self.seconds
        } else {
            f64::INFINITY
        }
    }
}

/// What one consuming run measured.
#[derive(Debug)]
struct Measured {
    /// Records counted (after the first finished one, or all for the
    /// pipelined loop) and the time they took.
    events: u64,
    seconds: f64,
    startup: f64,
    note: String,
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // then a small smoke run checks that every pipeline still works.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let settings = Settings::from_env(smoke)?;
    if let Ok(path) = std::env::var("KAUSAL_BENCH_LOG_FILE") {
        kausal_telemetry::logs::init_logging_to_file("kausal-bench", Path::new(&path))?;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(settings))
}

async fn run(settings: Settings) -> Result<()> {
    print_machine();
    if settings.smoke {
        println!("smoke run (no --bench argument): tiny sizes, the figures mean nothing");
    }
    let logs = std::env::var("KAUSAL_BENCH_LOG_FILE")
        .map(|p| format!("JSON layer to {p}"))
        .unwrap_or_else(|_| "no subscriber installed".to_owned());
    match &settings.kafka {
        Some(bootstrap) => println!(
            "broker: external at {bootstrap} (KAUSAL_BENCH_KAFKA), {}; events: {} \
             (KAUSAL_BENCH_EVENTS); logs: {logs}",
            settings.engines[0].label(),
            settings.memory_events,
        ),
        None => println!(
            "events: {} on the memory engine, {} on the SQLite engine \
             (KAUSAL_BENCH_EVENTS, KAUSAL_BENCH_SQLITE_EVENTS); logs: {logs}",
            settings.memory_events, settings.sqlite_events,
        ),
    }
    let scratch = PathBuf::from(SCRATCH).join(format!("run-{}", std::process::id()));
    let mut rows = Vec::new();
    let result = run_engines(&settings, &scratch, &mut rows).await;
    if !settings.keep {
        let _ = std::fs::remove_dir_all(&scratch);
        // Leave ./.kausal-bench only if something else is in it.
        let _ = std::fs::remove_dir(SCRATCH);
    }
    print_table(&rows);
    result
}

async fn run_engines(settings: &Settings, scratch: &Path, rows: &mut Vec<Row>) -> Result<()> {
    for &engine in &settings.engines {
        let n = settings.events(engine);
        println!("\n## {} engine, {n} events", engine.label());
        let first_row = rows.len();
        let mut produced = (0u64, 0.0f64);
        for (i, &pipeline) in settings.pipelines.iter().enumerate() {
            // A fresh broker (and SQLite file) per pipeline: every pipeline
            // starts from the same state, and the SQLite engine's group join,
            // which slows down with every group the broker has seen (see
            // docs/benchmarks.md), does not penalise the later rows.
            let dir = scratch
                .join(engine.name())
                .join(format!("{i}-{}", pipeline.key()));
            std::fs::create_dir_all(&dir)?;
            let storage = match engine {
                Engine::Memory => Some(Storage::Memory),
                // Relative to the working directory: tansu resolves it so.
                Engine::Sqlite => Some(Storage::Sqlite(dir.join("broker.db"))),
                Engine::Kafka { .. } => None,
            };
            let broker = match storage {
                Some(storage) => Some(EmbeddedBroker::start(storage, 0).await?),
                None => None,
            };
            let kafka = match (&broker, &settings.kafka) {
                (Some(broker), _) => KafkaConfig::new(broker.bootstrap_servers()),
                (None, Some(bootstrap)) => KafkaConfig::new(bootstrap.clone()),
                (None, None) => return Err("no broker for the kafka engine".into()),
            };
            let outcome = run_pipeline(engine, pipeline, i, n, &kafka, &dir).await;
            if let Some(broker) = broker {
                broker.stop().await;
            }
            if !settings.keep {
                let _ = std::fs::remove_dir_all(&dir);
            }
            let (produce, measured) = outcome?;
            produced.0 += produce.0;
            produced.1 += produce.1;
            rows.push(Row {
                engine,
                pipeline: pipeline.label().to_owned(),
                events: measured.events,
                seconds: measured.seconds,
                startup: Some(measured.startup),
                bare: pipeline == Pipeline::Bare,
                note: measured.note,
            });
        }
        if produced.0 > 0 {
            rows.insert(
                first_row,
                Row {
                    engine,
                    pipeline: format!(
                        "pre-produce only (EventProducer, {PRODUCE_IN_FLIGHT} in flight)"
                    ),
                    events: produced.0,
                    seconds: produced.1,
                    startup: None,
                    bare: false,
                    note: format!(
                        "total over {} fresh {}",
                        settings.pipelines.len(),
                        if settings.kafka.is_some() {
                            "input topics"
                        } else {
                            "brokers"
                        }
                    ),
                },
            );
        }
    }
    Ok(())
}

/// Starts from empty input topics: topics, N orders, then one pipeline.
/// Returns (events produced, seconds) and what the pipeline measured.
async fn run_pipeline(
    engine: Engine,
    pipeline: Pipeline,
    index: usize,
    n: u64,
    kafka: &KafkaConfig,
    dir: &Path,
) -> Result<((u64, f64), Measured)> {
    // An input topic of its own per pipeline (and per process): on Kafka,
    // which keeps its topics between pipelines and runs, a fresh group on a
    // reused `orders` would also read every earlier pipeline's orders.
    let orders = format!("{}-{}-{index}", topics::ORDERS, std::process::id());
    let dlq = format!("{orders}.dlq");
    let admin = Admin::new(kafka)?;
    // Replication left to the broker (TopicSpec::new): 1 on the embedded
    // broker and one Kafka node, 3 on scripts/kafka's cluster.
    let specs: Vec<TopicSpec> = [
        orders.as_str(),
        dlq.as_str(),
        topics::PAYMENTS,
        RECEIPTS_TOPIC,
        BARE_OUT,
    ]
    .into_iter()
    .map(|t| TopicSpec::new(t, 3))
    .collect();
    admin.ensure_topics(&specs).await?;

    let (seconds, events) = pre_produce(kafka, &orders, n).await?;
    println!(
        "{}: pre-produced {events} OrderPlaced in {seconds:.2} s ({:.0}/s); running {} …",
        engine.name(),
        events as f64 / seconds,
        pipeline.label()
    );
    let group = format!("bench-{}-{index}-{}", pipeline.key(), std::process::id());
    let measured = match pipeline {
        Pipeline::Bare => bare(kafka, &orders, &group, n, None).await?,
        Pipeline::BareNoLinger => bare(kafka, &orders, &group, n, Some("0")).await?,
        Pipeline::BarePipelined => bare_pipelined(kafka, &orders, &group, n).await?,
        Pipeline::Kausal => kausal(kafka, &orders, &group, n, true, None, None).await?,
        Pipeline::NoReceipts => kausal(kafka, &orders, &group, n, false, None, None).await?,
        Pipeline::KausalNoLinger => {
            let kafka = kafka.clone().with("linger.ms", "0");
            kausal(&kafka, &orders, &group, n, true, None, None).await?
        }
        Pipeline::NoReceiptsNoLinger => {
            let kafka = kafka.clone().with("linger.ms", "0");
            kausal(&kafka, &orders, &group, n, false, None, None).await?
        }
        Pipeline::Store => {
            let path = std::env::current_dir()?.join(dir).join("idempotency.db");
            let store =
                kausal_store::Store::connect(&format!("sqlite://{}", path.display())).await?;
            kausal(kafka, &orders, &group, n, true, Some(store), None).await?
        }
        Pipeline::SlowPartition => {
            let slow = records_in_partition(kafka, &orders, 0)?;
            kausal(kafka, &orders, &group, n, true, None, Some((0, slow))).await?
        }
    };
    println!(
        "  {} records in {:.2} s ({:.0}/s), first record after {:.2} s{}",
        measured.events,
        measured.seconds,
        measured.events as f64 / measured.seconds,
        measured.startup,
        if measured.note.is_empty() {
            String::new()
        } else {
            format!("; {}", measured.note)
        }
    );
    Ok(((events, seconds), measured))
}

/// How many records `partition` of `topic` holds (its high watermark: the
/// topic is fresh, so it starts at 0).
fn records_in_partition(kafka: &KafkaConfig, topic: &str, partition: i32) -> Result<u64> {
    let client: BaseConsumer = kafka
        .consumer_config("kausal-bench-watermarks", "bench-watermarks")
        .create()?;
    let (low, high) = client.fetch_watermarks(topic, partition, Duration::from_secs(30))?;
    Ok(u64::try_from(high - low)?)
}

/// A handler that takes [`SLOW_RECORD`] more for every record of one
/// partition (none: it only passes records on).
struct SlowPartition<H> {
    inner: H,
    partition: Option<i32>,
}

impl<H: kausal_kafka::Handler> kausal_kafka::Handler for SlowPartition<H> {
    async fn handle(
        &self,
        event: &kausal_kafka::IncomingEvent,
        out: &mut kausal_kafka::Emitter,
    ) -> Result<(), kausal_kafka::HandlerError> {
        if self.partition == Some(event.partition) {
            tokio::time::sleep(SLOW_RECORD).await;
        }
        self.inner.handle(event, out).await
    }
}

/// Produces `n` OrderPlaced root events with many publishes in flight.
async fn pre_produce(kafka: &KafkaConfig, orders: &str, n: u64) -> Result<(f64, u64)> {
    let producer = EventProducer::new(kafka, "bench-orders", Metrics::new())?;
    let started = Instant::now();
    let mut in_flight = FuturesUnordered::new();
    let mut sent = 0u64;
    let mut acked = 0u64;
    while acked < n {
        while sent < n && in_flight.len() < PRODUCE_IN_FLIGHT {
            let order = order(sent);
            let spec = EventSpec {
                topic: orders,
                key: Some(&order.order_id),
                event_type: event_types::ORDER_PLACED,
                version: ORDER_PLACED_VERSION,
                source_service: kausal_order::SERVICE_NAME,
            };
            let event = OutgoingEvent::root(&spec, &order, None, None)?;
            let producer = producer.clone();
            in_flight.push(async move { producer.publish(&event).await });
            sent += 1;
        }
        match in_flight.next().await {
            Some(result) => {
                result?;
                acked += 1;
            }
            None => break,
        }
    }
    producer.flush(Duration::from_secs(10));
    Ok((started.elapsed().as_secs_f64(), acked))
}

/// A plausible order, deterministic per index (every order has an email:
/// the payment handler does not care, and sizes stay comparable).
fn order(i: u64) -> OrderPlaced {
    OrderPlaced {
        order_id: format!("ord-{i:012x}"),
        user_id: format!("user-{}", i % 5000),
        amount: 5.0 + (i % 49_500) as f64 / 100.0,
        currency: "EUR".to_owned(),
        customer_email: Some(format!("customer{}@example.com", i % 1_000_000)),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}

/// The bare loop: the runtime's delivery semantics with nothing else.
async fn bare(
    kafka: &KafkaConfig,
    orders: &str,
    group: &str,
    n: u64,
    linger_ms: Option<&str>,
) -> Result<Measured> {
    let consumer: StreamConsumer = kafka.consumer_config(group, "bench-bare").create()?;
    let mut producer_config = kafka.producer_config("bench-bare");
    if let Some(linger) = linger_ms {
        producer_config.set("linger.ms", linger);
    }
    let producer: FutureProducer = producer_config.create()?;
    let subscribed = Instant::now();
    consumer.subscribe(&[orders])?;
    let commit_interval = Duration::from_millis(200);
    let mut last_commit = Instant::now();
    let mut first: Option<Instant> = None;
    let mut done = 0u64;
    let mut value = String::with_capacity(96);
    while done < n {
        let message = match tokio::time::timeout(STALL_TIMEOUT, consumer.recv()).await {
            Ok(m) => m?,
            Err(_) => {
                return Err(format!(
                    "bare loop stalled after {done} of {n} records ({STALL_TIMEOUT:?} without one)"
                )
                .into());
            }
        };
        small_value(&mut value, &message);
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(BARE_OUT).payload(value.as_bytes());
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)?;
        consumer.store_offset_from_message(&message)?;
        drop(message);
        done += 1;
        if first.is_none() {
            first = Some(Instant::now());
        }
        if last_commit.elapsed() >= commit_interval {
            consumer.commit_consumer_state(CommitMode::Async)?;
            last_commit = Instant::now();
        }
    }
    let end = Instant::now();
    consumer.commit_consumer_state(CommitMode::Sync)?;
    consumer.unsubscribe();
    let first = first.unwrap_or(end);
    Ok(Measured {
        events: n - 1,
        seconds: (end - first).as_secs_f64(),
        startup: (first - subscribed).as_secs_f64(),
        note: String::new(),
    })
}

/// The small record the bare loops produce per consumed one.
fn small_value<M: Message>(value: &mut String, message: &M) {
    use std::fmt::Write as _;
    value.clear();
    let _ = write!(
        value,
        r#"{{"source":"{}","partition":{},"offset":{},"status":"ok"}}"#,
        message.topic(),
        message.partition(),
        message.offset()
    );
}

/// The bare loop with deliveries pipelined: each record's produce is
/// started at once, and offsets are stored in consumption order as the
/// deliveries complete (FuturesOrdered), so a record is still committed only
/// after its output was acknowledged. Up to `IN_FLIGHT` records are open.
async fn bare_pipelined(
    kafka: &KafkaConfig,
    orders: &str,
    group: &str,
    n: u64,
) -> Result<Measured> {
    const IN_FLIGHT: usize = 256;
    let consumer: StreamConsumer = kafka.consumer_config(group, "bench-bare").create()?;
    let producer: FutureProducer = kafka.producer_config("bench-bare").create()?;
    let subscribed = Instant::now();
    consumer.subscribe(&[orders])?;
    let commit_interval = Duration::from_millis(200);
    let mut last_commit = Instant::now();
    let mut first: Option<Instant> = None;
    let mut received = 0u64;
    let mut done = 0u64;
    let mut value = String::with_capacity(96);
    let mut open = FuturesOrdered::new();
    while done < n {
        tokio::select! {
            biased;
            Some(result) = open.next(), if !open.is_empty() => {
                let (partition, offset) = result?;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(orders, partition, Offset::Offset(offset + 1))?;
                consumer.store_offsets(&tpl)?;
                done += 1;
            }
            message = consumer.recv(), if received < n && open.len() < IN_FLIGHT => {
                let message = message?;
                if first.is_none() {
                    // The first delivery completes only with its whole
                    // batch: count from the first record received instead.
                    first = Some(Instant::now());
                }
                small_value(&mut value, &message);
                let mut record: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(BARE_OUT).payload(value.as_bytes());
                if let Some(key) = message.key() {
                    record = record.key(key);
                }
                let delivery = producer.send_result(record).map_err(|(e, _)| e)?;
                let partition = message.partition();
                let offset = message.offset();
                open.push_back(async move {
                    match delivery.await {
                        Ok(Ok(_)) => Ok((partition, offset)),
                        Ok(Err((e, _))) => Err(BoxError::from(e)),
                        Err(_) => Err(BoxError::from("delivery future cancelled")),
                    }
                });
                received += 1;
            }
            () = tokio::time::sleep(STALL_TIMEOUT) => {
                return Err(format!(
                    "pipelined loop stalled after {done} of {n} records"
                )
                .into());
            }
        }
        if last_commit.elapsed() >= commit_interval {
            consumer.commit_consumer_state(CommitMode::Async)?;
            last_commit = Instant::now();
        }
    }
    let end = Instant::now();
    consumer.commit_consumer_state(CommitMode::Sync)?;
    consumer.unsubscribe();
    let first = first.unwrap_or(end);
    Ok(Measured {
        events: n,
        seconds: (end - first).as_secs_f64(),
        startup: (first - subscribed).as_secs_f64(),
        note: String::new(),
    })
}

/// Progress of a runtime run, updated by its outcome observer.
#[derive(Debug, Default)]
struct Progress {
    finished: AtomicU64,
    /// Records of the slowed partition finished (not measured).
    slow_finished: AtomicU64,
    not_processed: AtomicU64,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
}

/// The payment service's pipeline in-process: the runtime over the `n` records of `orders`. With `slow` = (partition,
/// its record count), that partition's records are slowed and the run is
/// measured, and ends, on the other partitions' records.
async fn kausal(
    kafka: &KafkaConfig,
    orders: &str,
    group: &str,
    n: u64,
    receipts: bool,
    store: Option<kausal_store::Store>,
    slow: Option<(i32, u64)>,
) -> Result<Measured> {
    let slow_partition = slow.map(|(p, _)| p);
    // Records measured: those of the partitions not slowed.
    let n = n - slow.map_or(0, |(_, records)| records);
    let metrics = Metrics::new();
    let producer = EventProducer::new(kafka, "bench-payment", metrics.clone())?;
    let gateway = SimulatedGateway {
        failure_rate: 0.0,
        decline_rate: 0.0,
        latency: Duration::ZERO,
        poison_prefix: None,
    };
    let handler = SlowPartition {
        inner: PaymentHandler::new(gateway, PaymentMetrics::register(&metrics)),
        partition: slow_partition,
    };
    let shutdown = CancellationToken::new();
    let progress = Arc::new(Progress::default());
    let observer = {
        let progress = progress.clone();
        let shutdown = shutdown.clone();
        Arc::new(
            move |event: &kausal_kafka::IncomingEvent, outcome: &Outcome| {
                let now = Instant::now();
                if slow_partition == Some(event.partition) {
                    progress.slow_finished.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                if !matches!(outcome, Outcome::Processed { .. }) {
                    progress.not_processed.fetch_add(1, Ordering::Relaxed);
                }
                let finished = progress.finished.fetch_add(1, Ordering::Relaxed) + 1;
                if finished == 1 {
                    *progress.first.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                }
                if finished == n {
                    *progress.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                    shutdown.cancel();
                }
            },
        )
    };
    let mut runtime = ConsumerRuntime::new(
        kafka.clone(),
        kausal_payment::SERVICE_NAME,
        group,
        &[orders],
        handler,
        producer,
    )
    .receipts(receipts)
    .on_outcome(observer);
    if let Some(store) = store {
        runtime = runtime.idempotency_store(store);
    }

    // Stop a run that makes no progress instead of hanging the benchmark.
    let watchdog = {
        let progress = progress.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            let mut since = Instant::now();
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return false,
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                let now = progress.finished.load(Ordering::Relaxed);
                if now != seen {
                    seen = now;
                    since = Instant::now();
                } else if since.elapsed() > STALL_TIMEOUT {
                    shutdown.cancel();
                    return true;
                }
            }
        })
    };
    let subscribed = Instant::now();
    let summary = runtime.run(shutdown).await?;
    let stalled = watchdog.await.unwrap_or(false);
    let finished = progress.finished.load(Ordering::Relaxed);
    if stalled || finished < n {
        return Err(format!(
            "kausal runtime stalled after {finished} of {n} records ({summary:?})"
        )
        .into());
    }
    let first = progress
        .first
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(subscribed);
    let last = progress
        .last
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(first);
    let not_processed = progress.not_processed.load(Ordering::Relaxed);
    let mut notes = Vec::new();
    if not_processed > 0 {
        notes.push(format!(
            "{not_processed} records not processed (dead-lettered or skipped)"
        ));
    }
    if let Some((partition, records)) = slow {
        notes.push(format!(
            "meanwhile {} of partition {partition}'s {records} slowed records",
            progress.slow_finished.load(Ordering::Relaxed)
        ));
    }
    Ok(Measured {
        events: n - 1,
        seconds: (last - first).as_secs_f64(),
        startup: (first - subscribed).as_secs_f64(),
        note: notes.join("; "),
    })
}

fn print_machine() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".to_owned());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("# Kausal pipeline benchmark");
    println!(
        "machine: nproc {nproc}, {model}, {memory} RAM, Linux {}",
        kernel.trim()
    );
}

fn print_table(rows: &[Row]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "| engine | pipeline | events | seconds | events/s | ratio to bare | first record after (s) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let bare = rows
            .iter()
            .find(|r| r.bare && r.engine == row.engine)
            .map(Row::rate);
        let ratio = match bare {
            Some(b) if row.startup.is_some() => format!("{:.2}", row.rate() / b),
            _ => "—".to_owned(),
        };
        let startup = row
            .startup
            .map_or_else(|| "—".to_owned(), |s| format!("{s:.2}"));
        let pipeline = if row.note.is_empty() {
            row.pipeline.clone()
        } else {
            format!("{} ({})", row.pipeline, row.note)
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {} | {} |",
            row.engine.label(),
            pipeline,
            row.events,
            row.seconds,
            row.rate(),
            ratio,
            startup
        );
    }
}
