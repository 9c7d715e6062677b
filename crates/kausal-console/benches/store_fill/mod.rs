//! A store filled with the reference system's history, fast: spans, log
//! lines, lineage events, receipts and dead letters shaped like the five
//! services' (order → payment → inventory, notification → fulfillment),
//! made by the receiver's own mapping (`otlp::span_rows`, `otlp::log_rows`;
//! no protobuf, no HTTP) and written with `Store::record_telemetry` and
//! `Store::record_batch` in transactions of 1 000 correlations, one writer,
//! into a fresh SQLite file or PostgreSQL schema.
//!
//! Shared by the console benchmark (`benches/console.rs`, `mod store_fill;`)
//! and the console's paint benchmark (`tests/browser/paint.rs`, by
//! `#[path]`), so each uses only a part of it.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kausal_console::otlp::{self, Decoded};
use kausal_store::{Backend, DeadLetterEntry, LineageEvent, LogRow, Receipt, SpanRow, Store};
use kausal_telemetry::spans::attr;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Correlations per bulk-load transaction (20 000 spans).
const LOAD_CORRELATIONS: usize = 1_000;

pub const SERVICES: [&str; 5] = [
    "order-service",
    "payment-service",
    "inventory-service",
    "notification-service",
    "fulfillment-service",
];
pub const ORDER: usize = 0;
pub const PAYMENT: usize = 1;
pub const INVENTORY: usize = 2;
pub const NOTIFICATION: usize = 3;
pub const FULFILLMENT: usize = 4;

// ---- databases ----------------------------------------------------------

/// A fresh database, removed by [`FreshDb::remove`].
#[derive(Debug)]
pub struct FreshDb {
    /// The store's URL (a PostgreSQL URL sets the schema as `search_path`).
    pub url: String,
    dir: Option<tempfile::TempDir>,
    /// PostgreSQL: (server URL, schema).
    schema: Option<(String, String)>,
}

impl FreshDb {
    /// A SQLite file in a temp dir (`backend` "sqlite"), or a schema on
    /// the PostgreSQL server at `postgres`.
    pub async fn create(postgres: Option<&str>, backend: &str) -> Result<Self, BoxError> {
        if backend == "sqlite" {
            let dir = tempfile::tempdir()?;
            let url = format!("sqlite://{}", dir.path().join("console-bench.db").display());
            return Ok(Self {
                url,
                dir: Some(dir),
                schema: None,
            });
        }
        let base = postgres
            .ok_or("PostgreSQL asked for without a URL")?
            .to_owned();
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
    pub async fn size_bytes(&self, store: &Store) -> Option<u64> {
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

    pub async fn remove(self) {
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

pub async fn count_rows(store: &Store, table: &str) -> Result<u64, BoxError> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
        .fetch_one(store.pool())
        .await?;
    Ok(u64::try_from(n)?)
}

/// Runs `f` with a fresh store and removes the database afterwards, also
/// when `f` failed.
pub async fn with_fresh_store<T, F, Fut>(
    postgres: Option<&str>,
    backend: &str,
    f: F,
) -> Result<T, BoxError>
where
    F: FnOnce(Store, Arc<FreshDb>) -> Fut,
    Fut: Future<Output = Result<T, BoxError>>,
{
    let db = Arc::new(FreshDb::create(postgres, backend).await?);
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

/// PostgreSQL plans from statistics that autovacuum gathers some time
/// after a bulk load: gathers them now, so that the numbers do not depend
/// on its timing. `None` on SQLite.
pub async fn analyze(store: &Store) -> Result<Option<Duration>, BoxError> {
    if store.backend() != Backend::Postgres {
        return Ok(None);
    }
    let started = Instant::now();
    for table in [
        "spans",
        "span_links",
        "log_records",
        "events",
        "receipts",
        "dead_letters",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("ANALYZE {table}")))
            .execute(store.pool())
            .await?;
    }
    Ok(Some(started.elapsed()))
}

/// What [`bulk_load`] writes: `fillers` other correlations of one order
/// each (5 events, 4 receipts, 20 spans in one trace, 5 log lines; fewer
/// when the order fails early), and halfway through them the measured one.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub seed: u64,
    pub fillers: usize,
    /// `false`: the fillers get spans and logs only, no events, receipts or
    /// dead letters.
    pub filler_lineage: bool,
    /// Fillers whose order is dead-lettered, spread evenly over the others,
    /// taking turns through [`FAILURES`].
    pub failing_fillers: usize,
    /// When the fillers' orders were placed.
    pub timeline: Timeline,
    /// The measured correlation.
    pub target: Shape,
}

impl LoadPlan {
    /// How filler `i` fails, if it does.
    fn failure_of(&self, i: usize) -> Option<Failure> {
        if self.failing_fillers == 0 {
            return None;
        }
        let stride = (self.fillers / self.failing_fillers).max(1);
        let nth = i / stride;
        (i.is_multiple_of(stride) && nth < self.failing_fillers)
            .then(|| FAILURES[nth % FAILURES.len()])
    }

    /// Fillers for about `lineage_rows` lineage rows (events, receipts and
    /// dead letters, the fillers' and the target's) when `failing` of them
    /// fail: the rows of each kind of filler counted on a sample of it.
    pub fn fillers_for(lineage_rows: usize, failing: usize, target: &Shape) -> usize {
        let mut generator = Generator::new(0, now_ms());
        let mut rows_of = |shape: &Shape| {
            let mut out = Generated::default();
            generator.correlation(0, shape, None, &mut out);
            out.events.len() + out.receipts.len() + out.dead_letters.len()
        };
        let plain = rows_of(&Shape::filler());
        let per_kind: Vec<usize> = FAILURES
            .iter()
            .map(|f| rows_of(&Shape::filler().failing(0, *f)))
            .collect();
        let failed: usize = (0..failing).map(|nth| per_kind[nth % per_kind.len()]).sum();
        let rest = lineage_rows.saturating_sub(rows_of(target) + failed);
        failing + rest.div_ceil(plain.max(1))
    }
}

/// The fillers' orders: the first `from_ms_ago` before the load started,
/// then one every `every_us` microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub from_ms_ago: i64,
    pub every_us: i64,
}

impl Timeline {
    /// One order a millisecond from an hour ago.
    pub const LAST_HOUR: Self = Self {
        from_ms_ago: 3_600_000,
        every_us: 1_000,
    };

    /// `orders` spread evenly over the last `hours`.
    pub fn spread(orders: usize, hours: i64) -> Self {
        let window_us = hours * 3_600_000_000;
        Self {
            from_ms_ago: hours * 3_600_000,
            every_us: window_us / i64::try_from(orders.max(1)).unwrap_or(i64::MAX),
        }
    }

    fn start_ms(&self, now_ms: i64, n: u64) -> i64 {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        now_ms - self.from_ms_ago + n.saturating_mul(self.every_us) / 1_000
    }
}

#[derive(Debug)]
pub struct Loaded {
    pub target: TargetIds,
    pub elapsed: Duration,
    /// Time inside `record_telemetry` and `record_batch`.
    pub in_store: Duration,
    pub spans: usize,
}

/// One bulk-load transaction's rows.
#[derive(Debug, Default)]
struct LoadChunk {
    spans: Decoded<SpanRow>,
    logs: Decoded<LogRow>,
    events: Vec<LineageEvent>,
    receipts: Vec<Receipt>,
    dead_letters: Vec<DeadLetterEntry>,
    fillers_before: usize,
    fillers: usize,
    target: Option<TargetIds>,
}

/// Fills the store as `plan` says. Rows are made on a thread of their own
/// while the previous chunk is written. `label` prefixes the progress
/// lines on stderr.
pub async fn bulk_load(store: &Store, plan: &LoadPlan, label: &str) -> Result<Loaded, BoxError> {
    let fillers = plan.fillers;
    eprintln!(
        "[{label}] loading {fillers} other correlations (20 spans, 5 log lines{} each; {} dead-lettered) and the measured one, \
         {LOAD_CORRELATIONS} correlations per transaction",
        if plan.filler_lineage {
            ", 5 events, 4 receipts"
        } else {
            ", no lineage"
        },
        plan.failing_fillers,
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel::<LoadChunk>(2);
    let plan = plan.clone();
    let generator = std::thread::spawn(move || {
        let received = now_ms();
        let mut generator = Generator::new(plan.seed, received).with_timeline(plan.timeline);
        let middle = fillers / 2;
        let mut n = 0;
        let mut last_filler_trace: Option<(Vec<u8>, Vec<u8>)> = None;
        let mut target_done = false;
        let target_of = |generator: &mut Generator, out: &mut Generated, last: &Option<_>| {
            let link = if plan.target.links_previous {
                Option::clone(last)
            } else {
                None
            };
            generator.correlation(u64::MAX, &plan.target, link, out)
        };
        while n < fillers || !target_done {
            let mut out = Generated::default();
            let mut target = None;
            let end = (n + LOAD_CORRELATIONS).min(fillers);
            for i in n..end {
                let lineage = (out.events.len(), out.receipts.len(), out.dead_letters.len());
                let shape = match plan.failure_of(i) {
                    Some(failure) => Shape::filler().failing(0, failure),
                    None => Shape::filler(),
                };
                let ids = generator.correlation(i as u64, &shape, None, &mut out);
                last_filler_trace = Some((ids.trace_id, ids.span_id));
                if !plan.filler_lineage {
                    out.events.truncate(lineage.0);
                    out.receipts.truncate(lineage.1);
                    out.dead_letters.truncate(lineage.2);
                }
                if i == middle && !target_done {
                    target = Some(target_of(&mut generator, &mut out, &last_filler_trace));
                    target_done = true;
                }
            }
            if !target_done && end >= fillers {
                target = Some(target_of(&mut generator, &mut out, &last_filler_trace));
                target_done = true;
            }
            let spans = otlp::span_rows(&generator.trace_request_all(&mut out.spans), received);
            let logs = otlp::log_rows(&generator.logs_request_all(&mut out.logs), received);
            let chunk = LoadChunk {
                fillers_before: n,
                fillers: end - n,
                spans,
                logs,
                events: std::mem::take(&mut out.events),
                receipts: std::mem::take(&mut out.receipts),
                dead_letters: std::mem::take(&mut out.dead_letters),
                target,
            };
            n = end;
            if tx.blocking_send(chunk).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut in_store = Duration::ZERO;
    let mut target = None;
    let step = (fillers / 10).max(1);
    let mut next_report = step;
    let mut spans = 0;
    while let Some(chunk) = rx.recv().await {
        let write = Instant::now();
        store
            .record_telemetry(
                &chunk.spans.rows,
                &chunk.spans.links,
                &chunk.spans.resources,
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
        spans += chunk.spans.rows.len();
        target = target.or(chunk.target);
        let done = chunk.fillers_before + chunk.fillers;
        if done >= next_report {
            eprintln!(
                "[{label}]   {done} correlations, {spans} spans, {:.0} spans/s (wall), {:.0} s",
                spans as f64 / started.elapsed().as_secs_f64(),
                started.elapsed().as_secs_f64()
            );
            next_report += step;
        }
    }
    let elapsed = started.elapsed();
    generator.join().map_err(|_| "the row generator panicked")?;
    eprintln!(
        "[{label}] loaded {spans} spans in {:.0} s ({:.0} s in the store)",
        elapsed.as_secs_f64(),
        in_store.as_secs_f64()
    );
    Ok(Loaded {
        target: target.ok_or("the measured correlation was not generated")?,
        elapsed,
        in_store,
        spans,
    })
}

// ---- the generator --------------------------------------------------------

/// What one correlation is made of.
#[derive(Debug, Clone)]
pub struct Shape {
    /// Orders in the conversation, each in a trace of its own.
    pub rounds: usize,
    pub logs_per_round: usize,
    /// The round whose order fails, and how (dead-lettered).
    pub failure: Option<(usize, Failure)>,
    /// Whether the last round's fulfillment batch span links to the trace
    /// of the correlation made before this one.
    pub links_previous: bool,
}

impl Shape {
    /// One order that goes through.
    pub fn filler() -> Self {
        Self {
            rounds: 1,
            logs_per_round: 5,
            failure: None,
            links_previous: false,
        }
    }

    /// A conversation of 10 orders, the fourth of which has no e-mail
    /// address, and a batch span linking another correlation's trace.
    pub fn measured() -> Self {
        Self {
            rounds: 10,
            logs_per_round: 50,
            failure: Some((3, MISSING_EMAIL)),
            links_previous: true,
        }
    }

    /// The same, with `round`'s order failing as `failure` says.
    pub fn failing(self, round: usize, failure: Failure) -> Self {
        Self {
            failure: Some((round, failure)),
            ..self
        }
    }
}

/// A consumer failing on an event for good: the event is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Failure {
    /// The failing service ([`PAYMENT`], [`INVENTORY`], [`NOTIFICATION`] or
    /// [`FULFILLMENT`]), which is its consumer group too.
    pub service: usize,
    pub error_type: &'static str,
    pub message: &'static str,
    pub attempts: i64,
}

/// The notification service meets an order without an e-mail address.
pub const MISSING_EMAIL: Failure = Failure {
    service: NOTIFICATION,
    error_type: "MissingCustomerEmail",
    message: "the payment carries no customer e-mail",
    attempts: 1,
};

/// The dead letters of an estate, in proportion: fatal errors of the
/// reference services' own kinds (kausal-core's `HandlerError`) and one
/// retryable error whose retries ran out.
pub const FAILURES: [Failure; 8] = [
    MISSING_EMAIL,
    Failure {
        service: PAYMENT,
        error_type: "PaymentGatewayError",
        message: "the payment gateway answered 503 Service Unavailable",
        attempts: 3,
    },
    MISSING_EMAIL,
    Failure {
        service: PAYMENT,
        error_type: "InvalidOrder",
        message: "amount_cents must be positive",
        attempts: 1,
    },
    MISSING_EMAIL,
    Failure {
        service: INVENTORY,
        error_type: "DeserializationError",
        message: "missing field `sku` at line 1 column 87",
        attempts: 1,
    },
    Failure {
        service: PAYMENT,
        error_type: "PaymentGatewayError",
        message: "the payment gateway did not answer within 2 s",
        attempts: 3,
    },
    Failure {
        service: FULFILLMENT,
        error_type: "UnknownEventType",
        message: "no handler for event type \"InventoryReserved.v2\"",
        attempts: 1,
    },
];

#[derive(Debug, Clone)]
pub struct TargetIds {
    pub correlation_id: String,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
}

/// Rows of one or more correlations, spans and logs per service.
#[derive(Debug, Default)]
pub struct Generated {
    pub spans: [Vec<Span>; 5],
    pub logs: [Vec<LogRecord>; 5],
    pub events: Vec<LineageEvent>,
    pub receipts: Vec<Receipt>,
    pub dead_letters: Vec<DeadLetterEntry>,
}

impl Generated {
    pub fn clear(&mut self) {
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

/// One order of a correlation: its trace and what happens to it.
#[derive(Debug)]
struct Order<'a> {
    correlation_id: &'a str,
    key: &'a str,
    trace: &'a [u8],
    t0: i64,
    failure: Option<Failure>,
    /// The span context the fulfillment batch span links to.
    link: Option<(Vec<u8>, Vec<u8>)>,
}

/// A span made for an order, which its log lines are written under.
#[derive(Debug)]
struct Made {
    service: usize,
    span_id: Vec<u8>,
    event_id: Option<String>,
    /// The error type when the span records the failure.
    error: Option<&'static str>,
}

impl Made {
    fn new(service: usize, span_id: &[u8], event_id: Option<&str>) -> Self {
        Self {
            service,
            span_id: span_id.to_vec(),
            event_id: event_id.map(str::to_owned),
            error: None,
        }
    }
}

/// Makes spans, logs and lineage rows shaped like the reference system's.
#[derive(Debug)]
pub struct Generator {
    rng: SplitMix64,
    now_ms: i64,
    timeline: Timeline,
    resources: Vec<Resource>,
    offsets: [i64; 6],
    spans_made: u64,
}

impl Generator {
    /// Fillers on [`Timeline::LAST_HOUR`].
    pub fn new(seed: u64, now_ms: i64) -> Self {
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
            timeline: Timeline::LAST_HOUR,
            resources,
            offsets: [0; 6],
            spans_made: 0,
        }
    }

    pub fn with_timeline(self, timeline: Timeline) -> Self {
        Self { timeline, ..self }
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

    pub fn trace_request(&self, service: usize, spans: Vec<Span>) -> ExportTraceServiceRequest {
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
    /// ShipmentCreated, CustomerNotified) in a trace of its own, each
    /// caused by the previous one's shipment. `link`: the span context the
    /// last round's batch span links to. `n == u64::MAX` is the measured
    /// correlation, placed a minute ago.
    pub fn correlation(
        &mut self,
        n: u64,
        shape: &Shape,
        link: Option<(Vec<u8>, Vec<u8>)>,
        out: &mut Generated,
    ) -> TargetIds {
        let start_ms = if n == u64::MAX {
            self.now_ms - 60_000
        } else {
            self.timeline.start_ms(self.now_ms, n)
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
            let order = Order {
                correlation_id: &correlation_id,
                key: &key,
                trace: &trace,
                t0,
                failure: shape.failure.and_then(|(r, f)| (r == round).then_some(f)),
                link: if round + 1 == shape.rounds {
                    link.clone()
                } else {
                    None
                },
            };
            let mut made = Vec::new();
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
            made.push(Made::new(ORDER, &server, None));
            cause = self.order(out, &order, cause.take(), &server, &mut made);
            for i in 0..shape.logs_per_round {
                let m = &made[i % made.len()];
                let log = self.log(
                    &correlation_id,
                    &trace,
                    &m.span_id,
                    m.event_id.clone(),
                    m.error,
                    t0,
                    i,
                );
                out.logs[m.service].push(log);
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

    /// One order's hops under its API span `server`, as far as they get:
    /// a failing consumer dead-letters its event and what would follow
    /// from it never happens. Returns the shipment's event id, the next
    /// order's cause.
    fn order(
        &mut self,
        out: &mut Generated,
        order: &Order<'_>,
        cause: Option<String>,
        server: &[u8],
        made: &mut Vec<Made>,
    ) -> Option<String> {
        let (t0, trace) = (order.t0, order.trace);
        let ids = (order.correlation_id, order.key, trace);
        let fails = |service: usize| order.failure.filter(|f| f.service == service);
        let e0 = self.emit(
            out,
            ids,
            ("OrderPlaced", ORDER, "orders", 0),
            cause,
            server,
            t0 + 1,
            made,
        );
        let payment = self.handle(out, trace, &e0, PAYMENT, t0 + 6, 9.5, fails(PAYMENT), made);
        if let Some(failure) = fails(PAYMENT) {
            self.dead_lettered(out, trace, &e0, &payment, t0 + 8, failure, made);
            return None;
        }
        let gateway = self.span(
            out,
            PAYMENT,
            trace,
            Some(&payment),
            "POST /v1/charges".to_owned(),
            3,
            t0 + 8,
            5.0,
            http_client_attributes(&e0, "gateway.payments.example", "/v1/charges"),
            None,
        );
        made.push(Made::new(PAYMENT, &gateway, Some(&e0.event_id)));
        let e1 = self.emit(
            out,
            ids,
            ("PaymentProcessed", PAYMENT, "payments", 1),
            Some(e0.event_id.clone()),
            &payment,
            t0 + 16,
            made,
        );
        let inventory = self.handle(
            out,
            trace,
            &e1,
            INVENTORY,
            t0 + 22,
            3.2,
            fails(INVENTORY),
            made,
        );
        let e2 = match fails(INVENTORY) {
            Some(failure) => {
                self.dead_lettered(out, trace, &e1, &inventory, t0 + 24, failure, made);
                None
            }
            None => Some(self.emit(
                out,
                ids,
                ("InventoryReserved", INVENTORY, "inventory", 2),
                Some(e1.event_id.clone()),
                &inventory,
                t0 + 26,
                made,
            )),
        };
        let notification = self.handle(
            out,
            trace,
            &e1,
            NOTIFICATION,
            t0 + 23,
            1.1,
            fails(NOTIFICATION),
            made,
        );
        if let Some(failure) = fails(NOTIFICATION) {
            self.dead_lettered(out, trace, &e1, &notification, t0 + 25, failure, made);
        } else {
            let email = self.span(
                out,
                NOTIFICATION,
                trace,
                Some(&notification),
                "POST /v3/mail/send".to_owned(),
                3,
                t0 + 24,
                12.0,
                http_client_attributes(&e1, "mail.example", "/v3/mail/send"),
                None,
            );
            made.push(Made::new(NOTIFICATION, &email, Some(&e1.event_id)));
            self.emit(
                out,
                ids,
                ("CustomerNotified", NOTIFICATION, "notifications", 3),
                Some(e1.event_id.clone()),
                &notification,
                t0 + 37,
                made,
            );
        }
        let e2 = e2?;
        let fulfillment = self.handle(
            out,
            trace,
            &e2,
            FULFILLMENT,
            t0 + 31,
            4.4,
            fails(FULFILLMENT),
            made,
        );
        if let Some(failure) = fails(FULFILLMENT) {
            self.dead_lettered(out, trace, &e2, &fulfillment, t0 + 33, failure, made);
            return None;
        }
        if let Some((lt, ls)) = order.link.clone() {
            // The batch span of the fulfillment service: one link per
            // record of the batch, one of them another order's.
            let batch = self.span(
                out,
                FULFILLMENT,
                trace,
                Some(&fulfillment),
                "process shipments batch".to_owned(),
                5,
                t0 + 31,
                6.0,
                messaging_attributes(&e2, "process", Some(SERVICES[FULFILLMENT])),
                Some((lt, ls)),
            );
            made.push(Made::new(FULFILLMENT, &batch, Some(&e2.event_id)));
        }
        let e4 = self.emit(
            out,
            ids,
            ("ShipmentCreated", FULFILLMENT, "shipments", 4),
            Some(e2.event_id.clone()),
            &fulfillment,
            t0 + 36,
            made,
        );
        Some(e4.event_id)
    }

    /// `failure`'s service dead-letters `hop`: the `send <topic>.dlq` span
    /// under its `process` span, then the ledger entry.
    #[allow(clippy::too_many_arguments)]
    fn dead_lettered(
        &mut self,
        out: &mut Generated,
        trace: &[u8],
        hop: &Hop,
        process: &[u8],
        at_ms: i64,
        failure: Failure,
        made: &mut Vec<Made>,
    ) {
        let dlq = self.span(
            out,
            failure.service,
            trace,
            Some(process),
            format!("send {}.dlq", hop.topic),
            4,
            at_ms,
            1.3,
            messaging_attributes(hop, "send", Some(SERVICES[failure.service])),
            None,
        );
        made.push(Made {
            error: Some(failure.error_type),
            ..Made::new(failure.service, &dlq, Some(&hop.event_id))
        });
        out.dead_letters.push(self.dead_letter(hop, at_ms, failure));
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
        made: &mut Vec<Made>,
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
        made.push(Made::new(service, &send, Some(&hop.event_id)));
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
        failure: Option<Failure>,
        made: &mut Vec<Made>,
    ) -> Vec<u8> {
        let group = SERVICES[service];
        let mut attributes = messaging_attributes(hop, "process", Some(group));
        let error = failure.map(|f| f.error_type);
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
        if let Some(failure) = failure {
            let span = out.spans[service].last_mut().expect("just pushed");
            span.status = Some(Status {
                code: 2,
                message: format!("{}: {}", failure.error_type, failure.message),
            });
            span.events.push(span::Event {
                time_unix_nano: ns(at_ms) + 900_000,
                name: "exception".to_owned(),
                attributes: vec![
                    kv_str("exception.type", failure.error_type),
                    kv_str(
                        "exception.message",
                        &format!("{}; the record is dead-lettered", failure.message),
                    ),
                ],
                dropped_attributes_count: 0,
            });
        }
        made.push(Made {
            error,
            ..Made::new(service, &process, Some(&hop.event_id))
        });
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
        made.push(Made {
            error,
            ..Made::new(service, &handler, Some(&hop.event_id))
        });
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
        made.push(Made::new(service, &idempotency, Some(&hop.event_id)));
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
            attempts: failure.map_or(1, |f| f.attempts),
            error_type: error.map(str::to_owned),
            error_message: failure.map(|f| f.message.to_owned()),
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
        error: Option<&str>,
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
        if let Some(error) = error {
            attributes.push(kv_str("errorType", error));
        }
        let error = error.is_some();
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

    fn dead_letter(&mut self, hop: &Hop, at_ms: i64, failure: Failure) -> DeadLetterEntry {
        let group = SERVICES[failure.service];
        let payload = match hop.event_type {
            "OrderPlaced" => format!(
                r#"{{"order_id":"{}","customer_id":"c-{}","amount_cents":4999,"currency":"EUR"}}"#,
                hop.key, hop.offset
            ),
            "InventoryReserved" => format!(
                r#"{{"order_id":"{}","items":[{{"sku":"SKU-1","quantity":2}}]}}"#,
                hop.key
            ),
            _ => format!(
                r#"{{"order_id":"{}","amount_cents":4999,"currency":"EUR","email":null}}"#,
                hop.key
            ),
        };
        DeadLetterEntry {
            dlq_id: self.uuid_v7(at_ms),
            dlq_topic: format!("{}.dlq", hop.topic),
            dlq_partition: hop.partition,
            dlq_offset: hop.offset,
            event_id: hop.event_id.clone(),
            correlation_id: Some(hop.correlation_id.clone()),
            event_type: Some(hop.event_type.to_owned()),
            source_topic: hop.topic.to_owned(),
            source_partition: Some(hop.partition),
            source_offset: Some(hop.offset),
            source_timestamp_ms: Some(hop.occurred_at_ms),
            consumer_group: Some(group.to_owned()),
            service: Some(group.to_owned()),
            error_type: Some(failure.error_type.to_owned()),
            error_message: Some(failure.message.to_owned()),
            attempts: Some(failure.attempts),
            failed_at_ms: at_ms,
            key: Some(hop.key.clone().into_bytes()),
            payload: Some(payload.into_bytes()),
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

pub fn now_ms() -> i64 {
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
