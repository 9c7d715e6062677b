//! The [`Service`] builder: what every Kausal service does around its
//! handlers, written once.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kausal_kafka::admin::{Admin, TopicSpec};
use kausal_kafka::receipt::RECEIPTS_TOPIC;
use kausal_kafka::runtime::Single;
use kausal_kafka::{ConsumerRuntime, EventProducer, Handler, KafkaConfig};
use kausal_store::Store;
use kausal_telemetry::{Metrics, init_logging, serve_metrics};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;
use crate::signals::shutdown_on_signals;

/// How long the producer may take to deliver what is still buffered when
/// the service stops.
const FINAL_FLUSH: Duration = Duration::from_secs(10);

type BoxFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type Start = Box<dyn FnOnce(ServiceContext) -> BoxFuture + Send>;

/// A Kausal service: consumers (a consumer group each, around a
/// [`Handler`]) and tasks (an HTTP API, a generator, anything long-running),
/// with what every service needs done for it.
///
/// [`run`](Self::run) sets up JSON logs on stdout and OpenTelemetry from the
/// `OTEL_*` environment, serves `/metrics` and `/healthz`, creates the
/// topics it reads and writes (unless `--no-create-topics`), opens the
/// producer, runs every consumer and task until SIGINT or SIGTERM, then
/// stops them gracefully (finished records committed, the producer
/// flushed, spans exported). If a consumer or a task fails or panics, the
/// others are stopped and `run` returns the error, so the process exits
/// non-zero and its supervisor sees it.
///
/// ```no_run
/// # use kausal_service::{Consumer, Service, ServiceConfig};
/// # use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};
/// # struct Audit;
/// # impl Handler for Audit {
/// #     async fn handle(&self, _: &IncomingEvent, _: &mut Emitter) -> Result<(), HandlerError> { Ok(()) }
/// # }
/// # async fn main_() -> anyhow::Result<()> {
/// use clap::Parser;
/// Service::new("audit-service", ServiceConfig::parse())
///     .consume(Consumer::new("audit-service", &["orders"], Audit))
///     .run()
///     .await
/// # }
/// ```
pub struct Service {
    name: String,
    config: ServiceConfig,
    metrics: Metrics,
    topics: Vec<String>,
    starts: Vec<(String, Start)>,
    consumers: usize,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("topics", &self.topics)
            .field(
                "parts",
                &self.starts.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service called `name` (its `service.name` in spans, `service` in
    /// logs, `source-service` on what it publishes).
    pub fn new(name: &str, config: ServiceConfig) -> Self {
        Self {
            name: name.to_owned(),
            config,
            metrics: Metrics::new(),
            topics: Vec::new(),
            starts: Vec::new(),
            consumers: 0,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The service's metric registry (served on `/metrics`): register a
    /// handler's own metrics here before handing it to a consumer.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Also creates `topic` if missing (a topic the service writes to).
    pub fn creates(mut self, topic: &str) -> Self {
        if !self.topics.iter().any(|t| t == topic) {
            self.topics.push(topic.to_owned());
        }
        self
    }

    /// Runs `consumer` while the service runs. The first consumer added
    /// takes `--group` (GROUP_ID) if given.
    pub fn consume<H: Handler>(mut self, consumer: Consumer<H>) -> Self {
        let mut consumer = consumer;
        if self.consumers == 0
            && let Some(group) = &self.config.group
        {
            consumer.group.clone_from(group);
        }
        self.consumers += 1;
        for topic in &consumer.topics {
            self = self.creates(topic);
            let dlq = consumer.dead_letter_topic_for(topic);
            self = self.creates(&dlq);
        }
        for topic in &consumer.outputs {
            self = self.creates(topic);
        }
        let label = format!("consumer group {}", consumer.group);
        self.starts.push((
            label,
            Box::new(move |ctx: ServiceContext| Box::pin(consumer.run(ctx)) as BoxFuture),
        ));
        self
    }

    /// Runs `task` while the service runs: an HTTP API, a generator. The
    /// task should return when `ctx.shutdown` is cancelled; returning
    /// `Ok` earlier is fine (the rest keeps running), an error stops the
    /// service.
    pub fn task<F, Fut>(mut self, name: &str, task: F) -> Self
    where
        F: FnOnce(ServiceContext) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.starts.push((
            name.to_owned(),
            Box::new(move |ctx: ServiceContext| Box::pin(task(ctx)) as BoxFuture),
        ));
        self
    }

    /// Runs the service until SIGINT or SIGTERM, or until a part fails.
    pub async fn run(self) -> anyhow::Result<()> {
        let name = self.name.clone();
        init_logging(&name);
        let mut otel = kausal_telemetry::otel::init_tracing(&name).map_err(anyhow::Error::msg)?;
        if otel.exporting() {
            tracing::info!("exporting spans over OTLP (OTEL_* environment)");
        }
        let shutdown = shutdown_on_signals()?;
        let result = self.run_until(shutdown).await;
        // Every span still buffered goes out before the process exits.
        otel.shutdown();
        result
    }

    /// Runs the service until `shutdown` is cancelled or a part fails, with
    /// logging and tracing left as the caller set them up (tests, or a
    /// process that runs several services).
    pub async fn run_until(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            name,
            config,
            metrics,
            topics,
            starts,
            consumers: _,
        } = self;
        let connection = &config.connection;
        if connection.database.is_none() {
            // The default store is a SQLite file under --data-dir.
            let dir = &connection.data_dir;
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        let kafka = connection.kafka_config();
        let (metrics_addr, metrics_task) = serve_metrics(
            SocketAddr::from(([127, 0, 0, 1], config.metrics_port)),
            metrics.clone(),
            shutdown.clone().cancelled_owned(),
        )
        .await
        .with_context(|| {
            format!(
                "cannot serve /metrics on port {} (pick another with --metrics-port, or 0)",
                config.metrics_port
            )
        })?;
        tracing::info!(service = %name, metrics = %format!("http://{metrics_addr}/metrics"), kafka = %kafka.bootstrap_servers, "service starting");

        if !config.no_create_topics && !topics.is_empty() {
            let specs: Vec<TopicSpec> = topics
                .iter()
                .chain(std::iter::once(&RECEIPTS_TOPIC.to_owned()))
                .map(|t| TopicSpec::new(t, config.partitions))
                .collect();
            Admin::new(&kafka)?
                .ensure_topics(&specs)
                .await
                .with_context(|| {
                    format!(
                        "cannot create topics on {} (is Kafka up? or create them and pass --no-create-topics)",
                        kafka.bootstrap_servers
                    )
                })?;
        }
        let producer = EventProducer::new(&kafka, &name, metrics.clone())?;
        let ctx = ServiceContext {
            name: name.clone(),
            config: Arc::new(config),
            kafka,
            producer: producer.clone(),
            metrics,
            shutdown: shutdown.clone(),
            store: Arc::new(OnceCell::new()),
        };
        let result = supervise(starts, &ctx).await;
        // librdkafka's flush blocks its thread: not an async worker's.
        let flushing = producer.clone();
        let _ = tokio::task::spawn_blocking(move || flushing.flush(FINAL_FLUSH)).await;
        shutdown.cancel();
        let _ = metrics_task.await;
        if let Some(store) = ctx.store.get() {
            store.close().await;
        }
        // Every queued log line is written before the service returns.
        kausal_telemetry::logs::flush_logs();
        result
    }
}

/// Runs every part; the first failure stops the rest and is returned,
/// named after the part that failed.
async fn supervise(starts: Vec<(String, Start)>, ctx: &ServiceContext) -> anyhow::Result<()> {
    let mut parts = JoinSet::new();
    let mut labels = HashMap::new();
    for (label, start) in starts {
        let id = parts.spawn(start(ctx.clone())).id();
        labels.insert(id, label);
    }
    let mut first_failure: Option<anyhow::Error> = None;
    while let Some(joined) = parts.join_next_with_id().await {
        let failure = match joined {
            Ok((_, Ok(()))) => None,
            Ok((id, Err(e))) => Some(e.context(format!("{} failed", labels[&id]))),
            Err(e) if e.is_panic() => Some(anyhow::anyhow!(
                "{} panicked: {}",
                labels[&e.id()],
                kausal_kafka::panic_message(e.into_panic().as_ref())
            )),
            Err(e) => Some(anyhow::anyhow!("{} was cancelled: {e}", labels[&e.id()])),
        };
        if let Some(failure) = failure {
            tracing::error!(service = %ctx.name, error = %format!("{failure:#}"), "stopping the service: a part of it failed");
            ctx.shutdown.cancel();
            first_failure.get_or_insert(failure);
        }
    }
    first_failure.map_or(Ok(()), Err)
}

/// What a consumer or task of a running [`Service`] gets.
#[derive(Debug, Clone)]
pub struct ServiceContext {
    pub name: String,
    pub config: Arc<ServiceConfig>,
    pub kafka: KafkaConfig,
    /// The service's producer (traced, idempotent), shared by its parts.
    pub producer: EventProducer,
    pub metrics: Metrics,
    /// Cancelled on SIGINT/SIGTERM or when a part failed.
    pub shutdown: CancellationToken,
    store: Arc<OnceCell<Store>>,
}

impl ServiceContext {
    /// The service's database (`--database`, or SQLite under
    /// `--data-dir`), connected and migrated on first use and shared.
    pub async fn store(&self) -> anyhow::Result<Store> {
        let url = self.config.connection.database_url();
        let store = self
            .store
            .get_or_try_init(|| Store::connect(&url))
            .await
            .with_context(|| format!("{} cannot open its database", self.name))?;
        Ok(store.clone())
    }
}

type MakeHandler<H> = Box<
    dyn FnOnce(ServiceContext) -> Pin<Box<dyn Future<Output = anyhow::Result<H>> + Send>> + Send,
>;

/// A consumer group around a [`Handler`], part of a [`Service`].
pub struct Consumer<H> {
    group: String,
    topics: Vec<String>,
    outputs: Vec<String>,
    handler: MakeHandler<H>,
    dead_letter_topics: Vec<(String, String)>,
    idempotency_store: bool,
    #[allow(clippy::type_complexity)]
    tune: Option<Box<dyn FnOnce(ConsumerRuntime<Single<H>>) -> ConsumerRuntime<Single<H>> + Send>>,
}

impl<H> std::fmt::Debug for Consumer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group", &self.group)
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl<H: Handler> Consumer<H> {
    /// `handler` in consumer group `group`, over `topics`.
    pub fn new(group: &str, topics: &[&str], handler: H) -> Self {
        Self::build(group, topics, move |_| async move { Ok(handler) })
    }

    /// A handler made when the service starts, from what it has: its
    /// database, metrics, configuration (a handler that keeps a read model
    /// needs the store). An error stops the service before it consumes.
    pub fn build<F, Fut>(group: &str, topics: &[&str], make: F) -> Self
    where
        F: FnOnce(ServiceContext) -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<H>> + Send + 'static,
    {
        Self {
            group: group.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            outputs: Vec::new(),
            handler: Box::new(move |ctx| Box::pin(make(ctx))),
            dead_letter_topics: Vec::new(),
            idempotency_store: true,
            tune: None,
        }
    }

    /// Keep no idempotency keys for this group even when the service
    /// does: for a handler that is idempotent by itself (an upsert keyed by
    /// what it reads), where the keys would only cost writes.
    pub fn without_idempotency_store(mut self) -> Self {
        self.idempotency_store = false;
        self
    }

    /// Topics the handler emits to, created with the service's.
    pub fn emits_to(mut self, topics: &[&str]) -> Self {
        self.outputs.extend(topics.iter().map(|t| (*t).to_owned()));
        self
    }

    /// Dead-letter records of `source` to `dlq` instead of `<source>.dlq`.
    pub fn dead_letter_topic(mut self, source: &str, dlq: &str) -> Self {
        self.dead_letter_topics
            .push((source.to_owned(), dlq.to_owned()));
        self
    }

    /// Sets runtime options the service's configuration does not cover
    /// (commit interval, heartbeats, an outcome observer).
    pub fn tune(
        mut self,
        tune: impl FnOnce(ConsumerRuntime<Single<H>>) -> ConsumerRuntime<Single<H>> + Send + 'static,
    ) -> Self {
        self.tune = Some(Box::new(tune));
        self
    }

    fn dead_letter_topic_for(&self, source: &str) -> String {
        self.dead_letter_topics
            .iter()
            .find(|(s, _)| s == source)
            .map_or_else(|| kausal_core::dlq::dlq_topic(source), |(_, d)| d.clone())
    }

    async fn run(self, ctx: ServiceContext) -> anyhow::Result<()> {
        let config = &ctx.config;
        let handler = (self.handler)(ctx.clone())
            .await
            .with_context(|| format!("cannot make the handler of group {}", self.group))?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        let mut runtime = ConsumerRuntime::new(
            ctx.kafka.clone(),
            &ctx.name,
            &self.group,
            &topics,
            handler,
            ctx.producer.clone(),
        )
        .retry_policy(config.retry_policy())
        .correlation_policy(config.missing_correlation.into())
        .partition_concurrency(config.partition_concurrency)
        .receipts(!config.no_receipts);
        for (source, dlq) in &self.dead_letter_topics {
            runtime = runtime.dead_letter_topic(source, dlq);
        }
        if self.idempotency_store && !config.no_idempotency_store {
            runtime = runtime.idempotency_store(ctx.store().await.with_context(|| {
                format!(
                    "group {} keeps its idempotency keys there (or run with --no-idempotency-store)",
                    self.group
                )
            })?);
        }
        if let Some(tune) = self.tune {
            runtime = tune(runtime);
        }
        let summary = runtime.run(ctx.shutdown.clone()).await?;
        tracing::info!(group = %self.group, ?summary, "consumer stopped");
        Ok(())
    }
}
