//! Outbox relay benchmark (issue 14): how fast `kausal_outbox::Relay`
//! drains the outbox to a real broker, and how long an appended event
//! takes from its commit to a consumer, against a bare rdkafka producer
//! sending the same records to the same broker in the same run. On SQLite
//! (a fresh file in a temp dir per run) and PostgreSQL (a fresh schema per
//! run, dropped after it) when `KAUSAL_TEST_DATABASE_URL` is set. Printed
//! as Markdown tables, never asserted.
//!
//! ```text
//! cargo bench -p kausal-outbox --bench relay
//! KAUSAL_BENCH_KAFKA=$(scripts/kafka start --nodes 1) cargo bench -p kausal-outbox --bench relay
//! ```
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KAUSAL_BENCH_RELAY_EVENTS` | events pre-filled per throughput run | 5000 |
//! | `KAUSAL_BENCH_RELAY_BATCH_SIZES` | comma-separated `RelayConfig::batch_size`, one throughput run each | `100,1000` |
//! | `KAUSAL_BENCH_RELAY_RATE` | appends per second of the latency runs (one event each) | 200 |
//! | `KAUSAL_BENCH_RELAY_SECONDS` | length of each latency run | 10 |
//! | `KAUSAL_BENCH_RELAY_POLL_MS` | comma-separated `RelayConfig::poll_interval` in ms, one latency run each | `200,20` |
//! | `KAUSAL_BENCH_RELAY_STREAMS` | streams the events are appended to, round robin | 100 |
//! | `KAUSAL_BENCH_RELAY_BACKENDS` | comma-separated subset of `sqlite,postgres` (the event store's) | both |
//! | `KAUSAL_BENCH_RELAY_ENGINE` | the embedded broker's storage: `sqlite`, or `memory` (faster, so the relay's own limit shows; tansu's memory engine is for benchmarks only) | `sqlite` |
//! | `KAUSAL_BENCH_KAFKA` | bootstrap servers of an external broker (Apache Kafka) instead of the embedded one | unset |
//! | `KAUSAL_TEST_DATABASE_URL` | PostgreSQL server; unset skips PostgreSQL | unset |
//!
//! **The broker.** The embedded broker (`kausal_broker`, tansu on its SQLite
//! engine, a file in a temp dir, or on its memory engine with
//! `KAUSAL_BENCH_RELAY_ENGINE=memory`) started in this process before anything
//! else opens SQLite (libsql must set SQLite's threading mode first), or
//! Apache Kafka at `KAUSAL_BENCH_KAFKA`. Every run publishes to a topic of
//! its own (3 partitions). Events are ~170 bytes of JSON with the
//! contract's headers, keyed by stream.
//!
//! **Throughput.** `KAUSAL_BENCH_RELAY_EVENTS` events are appended with
//! their outbox rows (`kausal_eventsource::EventStore::append_events`, 10
//! events per append, streams round robin) before the relay starts; then
//! a relay with the given `batch_size` (other settings
//! `RelayConfig::new`'s) runs until the outbox is empty (`outbox_stats`
//! polled every 10 ms). Rate = events / time from the relay's start to the
//! last row marked sent; its summary must say every event was published,
//! none failed. Baselines: a bare `FutureProducer` with the producer
//! settings the relay's `EventProducer` uses (`KafkaConfig::producer_config`:
//! idempotent, `acks=all`, `linger.ms=0`) sending the same records (key,
//! payload, the same header set) with everything in flight at once, and in
//! batches of `batch_size` awaited in turn (the relay's own pattern: read
//! a batch, enqueue it, await every acknowledgement, mark). *Ratio* is
//! against the all-in-flight producer; *ratio to batches* against the
//! batched one of the same size, which leaves the relay's database work
//! and bookkeeping.
//!
//! **Latency.** A relay runs with `poll_interval` as given (the default is
//! 200 ms, what a service runs) and `batch_size` 100 while events are
//! appended at `KAUSAL_BENCH_RELAY_RATE` per second, one event per append
//! (`ExpectedVersion::Any`; each append started on schedule in a task of
//! its own, so a slow append does not delay the next one), for
//! `KAUSAL_BENCH_RELAY_SECONDS`, after a warm-up of 20 events. A consumer
//! (assigned all partitions, no group; `fetch.wait.max.ms=10`) reads the
//! topic in this process; each record's *latency* = the instant it was
//! received minus the instant its append returned (committed). The
//! baseline: the same schedule with a bare `FutureProducer` sending each
//! record instead of appending it, latency from the send call. *Waited in
//! the outbox*: the record's timestamp (`CreateTime`, which librdkafka
//! sets when the relay enqueues it) minus the commit's wall clock, in whole
//! milliseconds: how long the row waited for a relay pass.
//!
//! The relay's own metric (`outbox_relay_latency_seconds`, row creation to
//! acknowledgement) is not used: its start is taken before the commit, in
//! whole milliseconds. CPU per event is this process's (the relay, the
//! appenders, the consumer, SQLite, and the embedded broker, which runs in
//! this process; not PostgreSQL's server).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kausal_bench::{
    Backends, BoxError, Latencies, env_list, env_usize, load_average, now_ms, process_cpu,
    with_fresh_store,
};
use kausal_broker::{EmbeddedBroker, Storage};
use kausal_core::headers::{CONTENT_TYPE_JSON, EventHeaders};
use kausal_core::{CorrelationId, EventId, TraceParent};
use kausal_eventsource::{EventStore, EventStoreMetrics, ExpectedVersion, StreamName};
use kausal_kafka::admin::{Admin, TopicSpec};
use kausal_kafka::{EventProducer, KafkaConfig};
use kausal_outbox::{OutboxMetrics, Relay, RelayConfig, RelaySummary};
use kausal_store::{NewEvent, OutboxTarget, Store};
use kausal_telemetry::{Metrics, ids};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 3;
const AGGREGATE: &str = "BenchAccount";
const PREFILL_EVENTS_PER_APPEND: usize = 10;
const LATENCY_BATCH_SIZE: usize = 100;
const WARMUP_EVENTS: usize = 20;
/// A run that has not finished after this long is reported as stalled.
const STALL: Duration = Duration::from_secs(120);

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
    events: usize,
    batch_sizes: Vec<usize>,
    rate: u32,
    seconds: u64,
    polls: Vec<Duration>,
    streams: usize,
    backends: Backends,
    kafka: Option<String>,
    /// The embedded broker's memory engine instead of its SQLite one.
    memory_engine: bool,
}

impl Config {
    fn from_env() -> Result<Self, BoxError> {
        let numbers = |name: &str, default: &str| -> Result<Vec<u64>, BoxError> {
            env_list(name, default)
                .iter()
                .map(|s| Ok(s.replace('_', "").parse::<u64>()?.max(1)))
                .collect()
        };
        Ok(Self {
            events: env_usize("KAUSAL_BENCH_RELAY_EVENTS", 5_000)?.max(1),
            batch_sizes: numbers("KAUSAL_BENCH_RELAY_BATCH_SIZES", "100,1000")?
                .into_iter()
                .map(|n| n as usize)
                .collect(),
            rate: u32::try_from(env_usize("KAUSAL_BENCH_RELAY_RATE", 200)?.max(1))?,
            seconds: u64::try_from(env_usize("KAUSAL_BENCH_RELAY_SECONDS", 10)?)?,
            polls: numbers("KAUSAL_BENCH_RELAY_POLL_MS", "200,20")?
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            streams: env_usize("KAUSAL_BENCH_RELAY_STREAMS", 100)?.max(1),
            backends: Backends::from_env("KAUSAL_BENCH_RELAY_BACKENDS"),
            memory_engine: match std::env::var("KAUSAL_BENCH_RELAY_ENGINE").as_deref() {
                Err(_) | Ok("sqlite") => false,
                Ok("memory") => true,
                Ok(other) => {
                    return Err(
                        format!("KAUSAL_BENCH_RELAY_ENGINE={other}: use sqlite or memory").into(),
                    );
                }
            },
            kafka: std::env::var("KAUSAL_BENCH_KAFKA")
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()),
        })
    }
}

async fn run(config: Config) -> Result<(), BoxError> {
    // The broker first: libsql (its SQLite engine) must initialise SQLite
    // before sqlx opens any database in this process.
    let broker_dir = tempfile::tempdir()?;
    let (broker, kafka, broker_label) = match &config.kafka {
        Some(bootstrap) => (
            None,
            KafkaConfig::new(bootstrap.clone()),
            format!("Apache Kafka at {bootstrap} (KAUSAL_BENCH_KAFKA)"),
        ),
        None => {
            let (storage, engine) = if config.memory_engine {
                (Storage::Memory, "memory")
            } else {
                (
                    Storage::Sqlite(broker_dir.path().join("broker.db")),
                    "SQLite",
                )
            };
            let broker = EmbeddedBroker::start(storage, 0).await?;
            let kafka = KafkaConfig::new(broker.bootstrap_servers());
            (
                Some(broker),
                kafka,
                format!("the embedded broker (tansu, {engine} engine) in this process"),
            )
        }
    };
    println!(
        "Outbox relay: broker {broker_label}; {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    let bench = Bench {
        config: &config,
        admin: Admin::new(&kafka)?,
        kafka,
    };
    let outcome = bench.run_all().await;
    if let Some(broker) = broker {
        broker.stop().await;
    }
    outcome
}

struct Bench<'a> {
    config: &'a Config,
    kafka: KafkaConfig,
    admin: Admin,
}

impl Bench<'_> {
    async fn run_all(&self) -> Result<(), BoxError> {
        let config = self.config;
        let mut throughput = Vec::new();
        let mut latency = Vec::new();
        // The bare producer's figures do not depend on the event store:
        // measured once, before the first backend's runs.
        let workload = Workload::new(config.events, config.streams);
        // The broker's first run is slower (its storage and the client
        // warming up): one unreported all-in-flight run first.
        eprintln!("bare producer: warm-up, {} records", workload.len());
        self.bare_throughput(&workload, None).await?;
        eprintln!("bare producer: {} records, all in flight", workload.len());
        throughput.push(self.bare_throughput(&workload, None).await?);
        for &batch in &config.batch_sizes {
            eprintln!("bare producer: batches of {batch}");
            throughput.push(self.bare_throughput(&workload, Some(batch)).await?);
        }
        if config.seconds > 0 {
            eprintln!(
                "bare producer: {} records/s for {} s",
                config.rate, config.seconds
            );
            latency.push(self.bare_latency().await?);
        }
        for backend in config.backends.names() {
            for &batch in &config.batch_sizes {
                eprintln!("[{backend}] relay throughput, batch_size {batch}");
                let result =
                    with_fresh_store(config.backends.postgres.as_deref(), backend, |store| {
                        self.relay_throughput(store, &workload, batch)
                    })
                    .await?;
                throughput.push(Throughput { backend, ..result });
            }
            if config.seconds > 0 {
                for &poll in &config.polls {
                    eprintln!(
                        "[{backend}] relay latency, poll_interval {} ms",
                        poll.as_millis()
                    );
                    let result =
                        with_fresh_store(config.backends.postgres.as_deref(), backend, |store| {
                            self.relay_latency(store, poll)
                        })
                        .await?;
                    latency.push(Latency { backend, ..result });
                }
            }
        }
        print_throughput(config, &throughput);
        print_latency(config, &latency);
        Ok(())
    }

    /// A fresh topic of its own.
    async fn topic(&self, what: &str) -> Result<String, BoxError> {
        let topic = format!("bench-outbox-{what}-{}", ids::new_span_id());
        self.admin
            .ensure_topics(&[TopicSpec::new(topic.clone(), PARTITIONS)])
            .await?;
        Ok(topic)
    }

    fn bare_producer(&self) -> Result<FutureProducer, BoxError> {
        Ok(self.kafka.producer_config("bench-bare-producer").create()?)
    }

    // ---- throughput --------------------------------------------------------

    /// The relay drains a pre-filled outbox.
    async fn relay_throughput(
        &self,
        store: Store,
        workload: &Workload,
        batch_size: usize,
    ) -> Result<Throughput, BoxError> {
        let topic = self.topic("drain").await?;
        let events = event_store(&store);
        let target = OutboxTarget {
            topic: topic.clone(),
            key: None,
        };
        let filled = Instant::now();
        // `PREFILL_EVENTS_PER_APPEND` events of one stream per append
        // (the workload's events come in such runs), streams round robin.
        let mut versions = vec![0i64; self.config.streams];
        for chunk in workload.events.chunk_by(|a, b| a.slot == b.slot) {
            let slot = chunk[0].slot;
            let stream = StreamName::new(AGGREGATE, slot.to_string());
            events
                .append_events(
                    &stream,
                    ExpectedVersion::Exact(versions[slot]),
                    chunk.iter().map(WorkEvent::new_event).collect(),
                    Some(&target),
                    None,
                )
                .await?;
            versions[slot] += chunk.len() as i64;
        }
        let fill = filled.elapsed();
        let pending = store.outbox_stats(now_ms()).await?.pending;
        if pending != workload.len() as i64 {
            return Err(
                format!("{pending} outbox rows pending, {} appended", workload.len()).into(),
            );
        }

        let mut relay_config = RelayConfig::new("bench-relay");
        relay_config.batch_size = batch_size;
        let cpu = process_cpu();
        let started = Instant::now();
        let relay = RunningRelay::start(&self.kafka, &store, relay_config)?;
        loop {
            if store.outbox_stats(now_ms()).await?.pending == 0 {
                break;
            }
            if started.elapsed() > STALL {
                relay.stop().await;
                return Err(format!("the relay did not drain the outbox within {STALL:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let elapsed = started.elapsed();
        let cpu = process_cpu().zip(cpu).map(|(a, b)| a.saturating_sub(b));
        let summary = relay.stop().await;
        if summary.published != workload.len() as u64 || summary.failed + summary.abandoned > 0 {
            return Err(format!("the relay did not publish every event once: {summary:?}").into());
        }
        Ok(Throughput {
            backend: "",
            path: ThroughputPath::Relay { batch_size },
            events: workload.len(),
            elapsed,
            cpu,
            note: format!(
                "{} batches; pre-fill {:.1} s ({:.0} events/s)",
                summary.batches,
                fill.as_secs_f64(),
                workload.len() as f64 / fill.as_secs_f64()
            ),
        })
    }

    /// The same records with a bare producer: all in flight at once
    /// (`batch` `None`), or in batches awaited in turn.
    async fn bare_throughput(
        &self,
        workload: &Workload,
        batch: Option<usize>,
    ) -> Result<Throughput, BoxError> {
        let topic = self.topic("bare").await?;
        let producer = self.bare_producer()?;
        let records: Vec<BareRecord> = workload
            .events
            .iter()
            .map(|e| BareRecord::of(e, &topic))
            .collect();
        let cpu = process_cpu();
        let started = Instant::now();
        for group in records.chunks(batch.unwrap_or(records.len())) {
            let mut deliveries = Vec::with_capacity(group.len());
            for record in group {
                deliveries.push(record.send(&producer).await?);
            }
            for delivery in deliveries {
                delivery
                    .await
                    .map_err(|_| "the producer went away")?
                    .map_err(|(e, _)| e)?;
            }
        }
        let elapsed = started.elapsed();
        let cpu = process_cpu().zip(cpu).map(|(a, b)| a.saturating_sub(b));
        Ok(Throughput {
            backend: "-",
            path: match batch {
                None => ThroughputPath::BareAll,
                Some(size) => ThroughputPath::BareBatches { size },
            },
            events: records.len(),
            elapsed,
            cpu,
            note: String::new(),
        })
    }

    // ---- latency -----------------------------------------------------------

    /// Appends on a schedule while a relay publishes; a consumer notes when
    /// each record arrives.
    async fn relay_latency(&self, store: Store, poll: Duration) -> Result<Latency, BoxError> {
        let topic = self.topic("latency").await?;
        let events = event_store(&store);
        let consumer = Receiver::start(&self.kafka, &topic)?;
        let mut relay_config = RelayConfig::new("bench-relay");
        relay_config.batch_size = LATENCY_BATCH_SIZE;
        relay_config.poll_interval = poll;
        let relay = RunningRelay::start(&self.kafka, &store, relay_config)?;
        let streams = self.config.streams;
        let target = OutboxTarget {
            topic: topic.clone(),
            key: None,
        };
        let append = move |event: WorkEvent| {
            let (events, target) = (events.clone(), target.clone());
            async move {
                let stream = StreamName::new(AGGREGATE, event.slot.to_string());
                events
                    .append_events(
                        &stream,
                        ExpectedVersion::Any,
                        vec![event.new_event()],
                        Some(&target),
                        None,
                    )
                    .await?;
                Ok::<_, BoxError>(())
            }
        };
        let measured = self.on_schedule(&consumer, streams, append).await;
        let summary = relay.stop().await;
        consumer.stop().await;
        let (sent, elapsed) = measured?;
        Ok(Latency::from_sent(
            "",
            LatencyPath::Relay { poll },
            &sent,
            &consumer,
            elapsed,
            format!(
                "{} batches for {} events",
                summary.batches, summary.published
            ),
        ))
    }

    /// The same schedule with a bare producer. An event "exists" once it is
    /// handed to the producer (as one exists once its append committed);
    /// the acknowledgement is awaited in a task of its own.
    async fn bare_latency(&self) -> Result<Latency, BoxError> {
        let topic = self.topic("bare-latency").await?;
        let consumer = Receiver::start(&self.kafka, &topic)?;
        let producer = self.bare_producer()?;
        let send = move |event: WorkEvent| {
            let (producer, record) = (producer.clone(), BareRecord::of(&event, &topic));
            async move {
                let delivery = record.send(&producer).await?;
                tokio::spawn(async move {
                    // A lost record never arrives: the run then fails on
                    // its wait for every event.
                    if let Ok(Err((e, _))) = delivery.await {
                        eprintln!("a bare record was not delivered: {e}");
                    }
                });
                Ok::<_, BoxError>(())
            }
        };
        let measured = self.on_schedule(&consumer, self.config.streams, send).await;
        consumer.stop().await;
        let (sent, elapsed) = measured?;
        Ok(Latency::from_sent(
            "-",
            LatencyPath::Bare,
            &sent,
            &consumer,
            elapsed,
            String::new(),
        ))
    }

    /// Runs `act` (append or send) for a warm-up, waits for it to arrive,
    /// then `rate` times a second for `seconds`, each in a task of its own
    /// started on schedule; waits until every event arrived. Returns when
    /// each measured event's `act` finished (instant, wall clock ms).
    async fn on_schedule<F, Fut>(
        &self,
        receiver: &Receiver,
        streams: usize,
        act: F,
    ) -> Result<(HashMap<EventId, Sent>, Duration), BoxError>
    where
        F: Fn(WorkEvent) -> Fut,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        let warmup: Vec<WorkEvent> = (0..WARMUP_EVENTS)
            .map(|i| WorkEvent::new(i % streams))
            .collect();
        let warmup_ids: Vec<EventId> = warmup.iter().map(|e| e.event_id).collect();
        for event in warmup {
            act(event).await?;
        }
        receiver.wait_for(&warmup_ids, STALL).await?;

        let total = self.config.rate as usize * self.config.seconds as usize;
        let period = Duration::from_secs(1) / self.config.rate;
        let sent: Arc<Mutex<HashMap<EventId, Sent>>> =
            Arc::new(Mutex::new(HashMap::with_capacity(total)));
        let mut tasks = tokio::task::JoinSet::new();
        let mut ids = Vec::with_capacity(total);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        for i in 0..total {
            ticker.tick().await;
            let event = WorkEvent::new(i % streams);
            let id = event.event_id;
            ids.push(id);
            let (done, sent) = (act(event), sent.clone());
            tasks.spawn(async move {
                done.await?;
                let at = Sent {
                    instant: Instant::now(),
                    wall_ms: now_ms(),
                };
                sent.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, at);
                Ok::<_, BoxError>(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        receiver.wait_for(&ids, STALL).await?;
        let elapsed = started.elapsed();
        let sent = std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()));
        Ok((sent, elapsed))
    }
}

fn event_store(store: &Store) -> EventStore {
    EventStore::new(store.clone(), EventStoreMetrics::register(&Metrics::new()))
}

/// A relay running in a task of its own, with its own metric registry.
struct RunningRelay {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<RelaySummary>,
}

impl RunningRelay {
    fn start(kafka: &KafkaConfig, store: &Store, config: RelayConfig) -> Result<Self, BoxError> {
        let registry = Metrics::new();
        let producer = EventProducer::new(kafka, "bench-relay", registry.clone())?;
        let relay = Relay::new(
            store.clone(),
            producer,
            OutboxMetrics::register(&registry),
            config,
        )?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        Ok(Self {
            stop,
            task: tokio::spawn(async move { relay.run(token).await }),
        })
    }

    async fn stop(self) -> RelaySummary {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

// ---- events and records ------------------------------------------------------

/// One event of a workload: its stream slot, ids and payload.
#[derive(Debug, Clone)]
struct WorkEvent {
    slot: usize,
    event_id: EventId,
    causation_id: EventId,
    correlation_id: CorrelationId,
    payload: String,
}

impl WorkEvent {
    fn new(slot: usize) -> Self {
        let event_id = ids::new_event_id();
        Self {
            slot,
            event_id,
            causation_id: ids::new_event_id(),
            correlation_id: CorrelationId::adopt(ids::new_event_id()),
            // ~170 bytes, the size of a ledger leg's event.
            payload: format!(
                r#"{{"entry_id":"{event_id}","account":"merchant-{slot:04}","direction":"credit","amount":129900,"currency":"EUR","order_id":"order-{}"}}"#,
                ids::new_event_id()
            ),
        }
    }

    fn new_event(&self) -> NewEvent {
        NewEvent {
            event_id: self.event_id,
            event_type: "Deposited".to_owned(),
            event_version: 1,
            payload: self.payload.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: Some(self.causation_id),
            traceparent: None,
        }
    }

    fn stream_id(&self) -> String {
        StreamName::new(AGGREGATE, self.slot.to_string()).stream_id()
    }
}

#[derive(Debug)]
struct Workload {
    events: Vec<WorkEvent>,
}

impl Workload {
    /// `n` events in runs of `PREFILL_EVENTS_PER_APPEND` of one stream,
    /// streams round robin.
    fn new(n: usize, streams: usize) -> Self {
        Self {
            events: (0..n)
                .map(|i| WorkEvent::new((i / PREFILL_EVENTS_PER_APPEND) % streams))
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.events.len()
    }
}

/// The record the relay would publish for an event, for the bare producer:
/// the same topic, key (the stream id), payload and header set.
struct BareRecord {
    topic: String,
    key: String,
    payload: String,
    headers: Vec<(&'static str, String)>,
}

impl BareRecord {
    fn of(event: &WorkEvent, topic: &str) -> Self {
        let headers = EventHeaders {
            event_id: event.event_id,
            event_type: Some("Deposited".to_owned()),
            event_version: Some(1),
            correlation_id: event.correlation_id.clone(),
            causation_id: Some(event.causation_id),
            source_service: Some("bench-relay".to_owned()),
            content_type: Some(CONTENT_TYPE_JSON.to_owned()),
            traceparent: Some(TraceParent::new(
                ids::new_trace_id(),
                ids::new_span_id(),
                true,
            )),
            tracestate: None,
            baggage: None,
        };
        Self {
            topic: topic.to_owned(),
            key: event.stream_id(),
            payload: event.payload.clone(),
            headers: headers.encode(),
        }
    }

    /// Enqueues the record, waiting only while the local queue is full (as
    /// `EventProducer::enqueue` does).
    async fn send(&self, producer: &FutureProducer) -> Result<DeliveryFuture, BoxError> {
        let mut headers = OwnedHeaders::new_with_capacity(self.headers.len());
        for (name, value) in &self.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(&self.topic)
            .key(self.key.as_bytes())
            .payload(self.payload.as_bytes())
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }
}

// ---- the consumer --------------------------------------------------------------

/// When a measured event's append (or send) returned.
#[derive(Debug, Clone, Copy)]
struct Sent {
    instant: Instant,
    wall_ms: i64,
}

/// When a record arrived at the consumer, and its timestamp.
#[derive(Debug, Clone, Copy)]
struct Arrived {
    instant: Instant,
    timestamp_ms: Option<i64>,
}

/// A consumer of one topic (all partitions assigned from the start, no
/// group), noting when each event id arrived.
struct Receiver {
    arrived: Arc<Mutex<HashMap<EventId, Arrived>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    fn start(kafka: &KafkaConfig, topic: &str) -> Result<Self, BoxError> {
        let consumer: StreamConsumer = kafka
            .consumer_config("bench-outbox-latency", "bench-outbox-latency")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let mut assignment = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
        consumer.assign(&assignment)?;
        let arrived: Arc<Mutex<HashMap<EventId, Arrived>>> = Arc::default();
        let stop = CancellationToken::new();
        let (map, token) = (arrived.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    () = token.cancelled() => return,
                    m = consumer.recv() => m,
                };
                let instant = Instant::now();
                let Ok(message) = message else { continue };
                let id = message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key == kausal_core::headers::EVENT_ID)
                        .and_then(|h| h.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .and_then(|v| v.parse::<EventId>().ok())
                });
                if let Some(id) = id {
                    let timestamp_ms = message.timestamp().to_millis();
                    map.lock().unwrap_or_else(|e| e.into_inner()).insert(
                        id,
                        Arrived {
                            instant,
                            timestamp_ms,
                        },
                    );
                }
            }
        });
        Ok(Self {
            arrived,
            stop,
            task,
        })
    }

    async fn wait_for(&self, ids: &[EventId], timeout: Duration) -> Result<(), BoxError> {
        let started = Instant::now();
        loop {
            let missing = {
                let arrived = self.arrived.lock().unwrap_or_else(|e| e.into_inner());
                ids.iter().filter(|id| !arrived.contains_key(id)).count()
            };
            if missing == 0 {
                return Ok(());
            }
            if started.elapsed() > timeout {
                return Err(format!("{missing} events did not arrive within {timeout:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn arrived(&self, id: &EventId) -> Option<Arrived> {
        self.arrived
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    async fn stop(&self) {
        self.stop.cancel();
        while !self.task.is_finished() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

// ---- report ------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThroughputPath {
    BareAll,
    BareBatches { size: usize },
    Relay { batch_size: usize },
}

#[derive(Debug)]
struct Throughput {
    backend: &'static str,
    path: ThroughputPath,
    events: usize,
    elapsed: Duration,
    cpu: Option<Duration>,
    note: String,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LatencyPath {
    Bare,
    Relay { poll: Duration },
}

#[derive(Debug)]
struct Latency {
    backend: &'static str,
    path: LatencyPath,
    events: usize,
    /// Achieved rate of the appends (or sends).
    rate: f64,
    /// Commit (or send) to arrival at the consumer.
    latencies: Latencies,
    /// Commit wall clock to the record's timestamp, in ms.
    waited_ms: Option<(i64, i64)>,
    note: String,
}

impl Latency {
    fn from_sent(
        backend: &'static str,
        path: LatencyPath,
        sent: &HashMap<EventId, Sent>,
        receiver: &Receiver,
        elapsed: Duration,
        note: String,
    ) -> Self {
        let mut times = Vec::with_capacity(sent.len());
        let mut waited = Vec::with_capacity(sent.len());
        for (id, at) in sent {
            let Some(arrived) = receiver.arrived(id) else {
                continue;
            };
            // A record can arrive before its append's future finished
            // (the relay is that fast, or the task was not polled yet).
            times.push(arrived.instant.saturating_duration_since(at.instant));
            if let Some(ts) = arrived.timestamp_ms {
                waited.push(ts - at.wall_ms);
            }
        }
        waited.sort_unstable();
        let rank = |v: &[i64], p: usize| {
            let i = (v.len() * p).div_ceil(100).saturating_sub(1);
            v.get(i).copied().unwrap_or_default()
        };
        Self {
            backend,
            path,
            events: sent.len(),
            rate: sent.len() as f64 / elapsed.as_secs_f64(),
            latencies: Latencies::new(times),
            waited_ms: (!waited.is_empty()).then(|| (rank(&waited, 50), rank(&waited, 99))),
            note,
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn print_throughput(config: &Config, rows: &[Throughput]) {
    println!();
    println!(
        "Throughput: {} events drained from a pre-filled outbox ({} streams, keyed by stream, {PARTITIONS} partitions)",
        config.events, config.streams
    );
    println!();
    println!(
        "| store | path | events | seconds | events/s | ratio to bare (all in flight) | ratio to bare (same batches) | CPU µs per event | |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---|");
    let all = rows
        .iter()
        .find(|r| r.path == ThroughputPath::BareAll)
        .map(Throughput::rate);
    for r in rows {
        let batched = match r.path {
            ThroughputPath::Relay { batch_size } => rows
                .iter()
                .find(|b| b.path == ThroughputPath::BareBatches { size: batch_size })
                .map(|b| format!("{:.2}", r.rate() / b.rate())),
            _ => None,
        };
        let label = match r.path {
            ThroughputPath::BareAll => "bare `FutureProducer`, all in flight (baseline)".to_owned(),
            ThroughputPath::BareBatches { size } => {
                format!("bare `FutureProducer`, batches of {size} awaited in turn")
            }
            ThroughputPath::Relay { batch_size } => format!("`Relay`, batch_size {batch_size}"),
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {} | {} | {} | {} |",
            r.backend,
            label,
            r.events,
            r.elapsed.as_secs_f64(),
            r.rate(),
            all.map_or_else(|| "-".to_owned(), |b| format!("{:.2}", r.rate() / b)),
            batched.unwrap_or_else(|| "-".to_owned()),
            r.cpu.map_or_else(
                || "-".to_owned(),
                |c| format!("{:.0}", c.as_secs_f64() * 1e6 / r.events as f64)
            ),
            r.note,
        );
    }
}

fn print_latency(config: &Config, rows: &[Latency]) {
    if rows.is_empty() {
        return;
    }
    println!();
    println!(
        "Commit → consumed: {} events/s for {} s, one event per append, a consumer in this process (fetch.wait.max.ms=10); ms",
        config.rate, config.seconds
    );
    println!();
    println!(
        "| store | path | events | achieved/s | p50 | p99 | max | ratio to bare p50 / p99 | waited in the outbox p50 / p99 (record timestamp − commit, whole ms) | |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
    let bare = rows.iter().find(|r| r.path == LatencyPath::Bare);
    for r in rows {
        let label = match r.path {
            LatencyPath::Bare => "bare `FutureProducer` send → consumed (baseline)".to_owned(),
            LatencyPath::Relay { poll } => format!(
                "append → `Relay` (poll_interval {} ms, batch_size {LATENCY_BATCH_SIZE}) → consumed",
                poll.as_millis()
            ),
        };
        let ratio = bare.map_or_else(
            || "-".to_owned(),
            |b| {
                format!(
                    "{:.1} / {:.1}",
                    r.latencies.p50.as_secs_f64() / b.latencies.p50.as_secs_f64(),
                    r.latencies.p99.as_secs_f64() / b.latencies.p99.as_secs_f64()
                )
            },
        );
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
            r.backend,
            label,
            r.events,
            r.rate,
            ms(r.latencies.p50),
            ms(r.latencies.p99),
            ms(r.latencies.max),
            ratio,
            r.waited_ms
                .map_or_else(|| "-".to_owned(), |(a, b)| format!("{a} / {b}")),
            r.note,
        );
    }
}
