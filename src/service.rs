//! `kausal service <name>`: one reference service in this process.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kausal_contracts::topics;
use kausal_kafka::admin::{Admin, TopicSpec};
use kausal_kafka::receipt::RECEIPTS_TOPIC;
use kausal_kafka::{
    ConsumerRuntime, CorrelationPolicy, EventProducer, Handler, KafkaConfig, RetryPolicy,
};
use kausal_telemetry::{Metrics, init_logging, serve_metrics};
use tokio_util::sync::CancellationToken;

use crate::Common;
use crate::signals::shutdown_on_signals;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceName {
    /// Places orders on `orders` at --rate.
    Order,
    /// Charges orders; publishes on `payments`.
    Payment,
    /// Reserves stock for paid orders; publishes on `inventory`.
    Inventory,
    /// Emails customers about payments; publishes on `notifications`.
    Notification,
    /// Ships reserved orders; publishes on `shipments`.
    Fulfillment,
    /// Records every event, dead letter and receipt into the lineage store.
    Recorder,
    /// Watches consumer lag and the dead-letter backlog; exports the gauges.
    Monitor,
}

impl ServiceName {
    pub fn service_name(self) -> &'static str {
        match self {
            Self::Order => kausal_order::SERVICE_NAME,
            Self::Payment => kausal_payment::SERVICE_NAME,
            Self::Inventory => kausal_inventory::SERVICE_NAME,
            Self::Notification => kausal_notification::SERVICE_NAME,
            Self::Fulfillment => kausal_fulfillment::SERVICE_NAME,
            Self::Recorder => "lineage-recorder",
            Self::Monitor => "lag-monitor",
        }
    }

    /// The CLI word (`kausal service <word>`).
    pub fn word(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Payment => "payment",
            Self::Inventory => "inventory",
            Self::Notification => "notification",
            Self::Fulfillment => "fulfillment",
            Self::Recorder => "recorder",
            Self::Monitor => "monitor",
        }
    }

    /// (default group, input topics, output topics) of a consuming service.
    fn consumes(self) -> Option<(&'static str, Vec<&'static str>, Vec<&'static str>)> {
        match self {
            Self::Order | Self::Recorder | Self::Monitor => None,
            Self::Payment => Some((
                kausal_payment::GROUP,
                vec![topics::ORDERS],
                vec![topics::PAYMENTS],
            )),
            Self::Inventory => Some((
                kausal_inventory::GROUP,
                kausal_inventory::INPUT_TOPICS.to_vec(),
                kausal_inventory::OUTPUT_TOPICS.to_vec(),
            )),
            Self::Notification => Some((
                kausal_notification::GROUP,
                kausal_notification::INPUT_TOPICS.to_vec(),
                kausal_notification::OUTPUT_TOPICS.to_vec(),
            )),
            Self::Fulfillment => Some((
                kausal_fulfillment::GROUP,
                kausal_fulfillment::INPUT_TOPICS.to_vec(),
                kausal_fulfillment::OUTPUT_TOPICS.to_vec(),
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CorrelationArg {
    Adopt,
    Reject,
}

#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Which service to run.
    pub name: ServiceName,
    #[command(flatten)]
    pub common: Common,
    /// Port of this service's /metrics (0 picks a free one).
    #[arg(long, env = "KAUSAL_METRICS_PORT", default_value_t = 0)]
    pub metrics_port: u16,
    /// Partitions for topics this service creates if missing.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// order: port of the HTTP API (POST /orders, GET /orders/{id}).
    #[arg(long, env = "KAUSAL_HTTP_PORT", default_value_t = 8081)]
    pub http_port: u16,
    /// order: orders per second (0 = none).
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// order: stop after this many orders.
    #[arg(long)]
    pub max_orders: Option<u64>,
    /// order: fraction of orders without customer_email.
    #[arg(long, default_value_t = 0.05)]
    pub missing_email_rate: f64,
    /// notification: what to do with a payment whose order has no email —
    /// dead-letter it (the seeds' bug) or tell the customer in the app
    /// (the fix).
    #[arg(long, value_enum, default_value_t = kausal_notification::WithoutEmail::DeadLetter)]
    pub notify_without_email: kausal_notification::WithoutEmail,
    /// payment: fraction of charge attempts that fail transiently.
    #[arg(long, default_value_t = 0.2)]
    pub payment_failure_rate: f64,
    /// payment: fraction of orders declined (PaymentFailed).
    #[arg(long, default_value_t = 0.05)]
    pub payment_decline_rate: f64,
    /// payment: simulated gateway latency per charge, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub payment_latency_ms: u64,
    /// payment: fault injection — orders whose id starts with this prefix
    /// fail transiently on every attempt (they end dead-lettered).
    #[arg(long)]
    pub payment_poison_prefix: Option<String>,
    /// The topic orders go to (seed: ORDERS_TOPIC).
    #[arg(long, env = "ORDERS_TOPIC", default_value = topics::ORDERS)]
    pub orders_topic: String,
    /// Dead-letter topic for orders (seed: DLQ_TOPIC); default `<orders>.dlq`.
    #[arg(long, env = "DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// Consumer group (seed: GROUP_ID); default the service name.
    #[arg(long, env = "GROUP_ID")]
    pub group: Option<String>,
    /// Handler attempts before dead-lettering.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// First retry backoff in milliseconds (doubles each attempt, ±20 %).
    #[arg(long, default_value_t = 100)]
    pub initial_backoff_ms: u64,
    /// What to do with events that carry no correlation id.
    #[arg(long, value_enum, default_value_t = CorrelationArg::Adopt)]
    pub missing_correlation: CorrelationArg,
    /// monitor: time between lag samples, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub monitor_interval_ms: u64,
    /// Do not create missing topics.
    #[arg(long)]
    pub no_create_topics: bool,
    /// Publish no receipts on `kausal.receipts` (lineage then cannot say
    /// who received an event). For comparisons with pipelines that keep
    /// none, such as the seeds'.
    #[arg(long)]
    pub no_receipts: bool,
    /// Keep no idempotency keys: a redelivered event is handled again
    /// (its outputs keep their derived ids). For comparisons, as above.
    #[arg(long)]
    pub no_idempotency_store: bool,
}

pub async fn run(args: ServiceArgs) -> anyhow::Result<()> {
    let name = args.name.service_name();
    init_logging(name);
    let mut otel = kausal_telemetry::otel::init_tracing(name).map_err(anyhow::Error::msg)?;
    if otel.exporting() {
        tracing::info!("exporting spans over OTLP (OTEL_* environment)");
    }
    if args.common.database.is_none() {
        // The default store is a SQLite file under --data-dir.
        let dir = &args.common.data_dir;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let shutdown = shutdown_on_signals()?;
    let kafka = args.common.kafka_config();
    let metrics = Metrics::new();
    let (metrics_addr, metrics_task) = serve_metrics(
        SocketAddr::from(([127, 0, 0, 1], args.metrics_port)),
        metrics.clone(),
        shutdown.clone().cancelled_owned(),
    )
    .await
    .with_context(|| format!("cannot serve /metrics on port {}", args.metrics_port))?;
    tracing::info!(service = name, metrics = %format!("http://{metrics_addr}/metrics"), kafka = %kafka.bootstrap_servers, "service starting");

    let dlq_topic = args
        .dlq_topic
        .clone()
        .unwrap_or_else(|| kausal_core::dlq::dlq_topic(&args.orders_topic));
    // Inputs of a consumer: the orders topic may be renamed (ORDERS_TOPIC).
    let consumes = args.name.consumes().map(|(group, inputs, outputs)| {
        let inputs: Vec<String> = inputs
            .into_iter()
            .map(|t| {
                if t == topics::ORDERS {
                    args.orders_topic.clone()
                } else {
                    t.to_owned()
                }
            })
            .collect();
        (group, inputs, outputs)
    });
    if !args.no_create_topics {
        let admin = Admin::new(&kafka)?;
        let mut wanted = vec![
            TopicSpec::new(&args.orders_topic, args.partitions),
            TopicSpec::new(RECEIPTS_TOPIC, args.partitions),
        ];
        if let Some((_, inputs, outputs)) = &consumes {
            for input in inputs {
                wanted.push(TopicSpec::new(input, args.partitions));
                let dlq = if *input == args.orders_topic {
                    dlq_topic.clone()
                } else {
                    kausal_core::dlq::dlq_topic(input)
                };
                wanted.push(TopicSpec::new(dlq, args.partitions));
            }
            wanted.extend(outputs.iter().map(|t| TopicSpec::new(*t, args.partitions)));
        }
        admin
            .ensure_topics(&wanted)
            .await
            .with_context(|| format!("cannot create topics on {}", kafka.bootstrap_servers))?;
    }

    let producer = EventProducer::new(&kafka, name, metrics.clone())?;
    match args.name {
        ServiceName::Order => {
            let store = kausal_store::Store::connect(&args.common.database_url())
                .await
                .context("the order service needs its read-model store")?;
            let api = kausal_order::http::ApiState {
                producer: producer.clone(),
                store: store.clone(),
                topic: args.orders_topic.clone(),
            };
            let (api_addr, api_task) = kausal_order::http::serve(
                SocketAddr::from(([127, 0, 0, 1], args.http_port)),
                api,
                shutdown.clone().cancelled_owned(),
            )
            .await
            .with_context(|| {
                format!(
                    "cannot serve the order API on port {} (pick another with --http-port)",
                    args.http_port
                )
            })?;
            tracing::info!(api = %format!("http://{api_addr}/orders"), "order API listening");
            let inputs: Vec<String> = kausal_order::view_handler::INPUT_TOPICS
                .iter()
                .map(|t| {
                    if *t == topics::ORDERS {
                        args.orders_topic.clone()
                    } else {
                        (*t).to_owned()
                    }
                })
                .collect();
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            if !args.no_create_topics {
                let specs: Vec<TopicSpec> = inputs
                    .iter()
                    .map(|t| TopicSpec::new(*t, args.partitions))
                    .collect();
                Admin::new(&kafka)?.ensure_topics(&specs).await?;
            }
            let view = ConsumerRuntime::new(
                kafka.clone(),
                name,
                kausal_order::view_handler::GROUP,
                &inputs,
                kausal_order::view_handler::ViewHandler::new(store.clone()),
                producer.clone(),
            )
            .dead_letter_topic(&args.orders_topic, &dlq_topic);
            let view_task = tokio::spawn(view.run(shutdown.clone()));
            let order_metrics = kausal_order::OrderMetrics::register(&metrics);
            let config = kausal_order::GeneratorConfig {
                rate_per_sec: args.rate,
                missing_email_rate: args.missing_email_rate,
                max_orders: args.max_orders,
                topic: args.orders_topic.clone(),
            };
            let published = kausal_order::run_generator(
                producer.clone(),
                config,
                order_metrics,
                shutdown.clone(),
            )
            .await;
            tracing::info!(published, "order generator stopped");
            // The API and the read model keep running until told to stop.
            shutdown.cancelled().await;
            match view_task.await {
                Ok(Ok(summary)) => tracing::info!(?summary, "order view stopped"),
                Ok(Err(e)) => tracing::error!(error = %e, "order view failed"),
                Err(e) => tracing::error!(error = %e, "order view task failed"),
            }
            let _ = api_task.await;
            store.close().await;
        }
        ServiceName::Payment => {
            let handler = kausal_payment::PaymentHandler::new(
                kausal_payment::SimulatedGateway {
                    failure_rate: args.payment_failure_rate,
                    decline_rate: args.payment_decline_rate,
                    latency: Duration::from_millis(args.payment_latency_ms),
                    poison_prefix: args.payment_poison_prefix.clone(),
                },
                kausal_payment::PaymentMetrics::register(&metrics),
            );
            consume(
                &args, &kafka, &producer, consumes, &dlq_topic, handler, &shutdown,
            )
            .await?;
        }
        ServiceName::Inventory => {
            consume(
                &args,
                &kafka,
                &producer,
                consumes,
                &dlq_topic,
                kausal_inventory::InventoryHandler,
                &shutdown,
            )
            .await?;
        }
        ServiceName::Notification => {
            consume(
                &args,
                &kafka,
                &producer,
                consumes,
                &dlq_topic,
                kausal_notification::NotificationHandler::new(args.notify_without_email),
                &shutdown,
            )
            .await?;
        }
        ServiceName::Recorder => {
            let store = kausal_store::Store::connect(&args.common.database_url())
                .await
                .context("the recorder needs the lineage store")?;
            let recorder = kausal_lineage::Recorder::new(
                kafka.clone(),
                store.clone(),
                kausal_lineage::RecorderConfig::default(),
            );
            let summary = recorder.run(shutdown.clone()).await?;
            tracing::info!(?summary, "recorder stopped");
            store.close().await;
        }
        ServiceName::Monitor => {
            let store = kausal_store::Store::connect(&args.common.database_url())
                .await
                .context("the lag monitor reads groups and dead letters from the lineage store")?;
            // The recorder keeps no receipts of its own: watch it explicitly
            // over the topics it must keep up with.
            let targets = topics::ALL
                .iter()
                .map(|t| (*t).to_owned())
                .chain([RECEIPTS_TOPIC.to_owned()])
                .map(|t| (kausal_lineage::recorder::GROUP.to_owned(), t))
                .collect();
            let monitor = kausal_monitor::LagMonitor::new(
                Admin::new(&kafka)?,
                kausal_monitor::MonitorConfig {
                    targets,
                    ..Default::default()
                },
            )
            .with_store(store.clone())
            .with_metrics(kausal_telemetry::monitor::MonitorMetrics::register(
                &metrics,
            ));
            tracing::info!(
                interval_ms = args.monitor_interval_ms,
                "lag monitor started"
            );
            monitor
                .run(
                    Duration::from_millis(args.monitor_interval_ms),
                    shutdown.clone(),
                )
                .await;
            store.close().await;
        }
        ServiceName::Fulfillment => {
            consume(
                &args,
                &kafka,
                &producer,
                consumes,
                &dlq_topic,
                kausal_fulfillment::FulfillmentHandler,
                &shutdown,
            )
            .await?;
        }
    }
    producer.flush(Duration::from_secs(10));
    shutdown.cancel();
    let _ = metrics_task.await;
    // Every span still buffered goes out before the process exits.
    otel.shutdown();
    Ok(())
}

/// Runs a consuming service's handler in its group until shutdown.
async fn consume<H: Handler>(
    args: &ServiceArgs,
    kafka: &KafkaConfig,
    producer: &EventProducer,
    consumes: Option<(&'static str, Vec<String>, Vec<&'static str>)>,
    orders_dlq: &str,
    handler: H,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let name = args.name.service_name();
    let (default_group, inputs, _) = consumes.context("not a consuming service")?;
    let store = kausal_store::Store::connect(&args.common.database_url())
        .await
        .with_context(|| format!("{name} needs its idempotency store"))?;
    let group = args
        .group
        .clone()
        .unwrap_or_else(|| default_group.to_owned());
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let runtime = ConsumerRuntime::new(
        kafka.clone(),
        name,
        &group,
        &inputs,
        handler,
        producer.clone(),
    )
    .retry_policy(RetryPolicy {
        max_attempts: args.max_attempts.max(1),
        initial_backoff: Duration::from_millis(args.initial_backoff_ms),
        ..RetryPolicy::default()
    })
    .correlation_policy(match args.missing_correlation {
        CorrelationArg::Adopt => CorrelationPolicy::Adopt,
        CorrelationArg::Reject => CorrelationPolicy::Reject,
    })
    .dead_letter_topic(&args.orders_topic, orders_dlq)
    .receipts(!args.no_receipts);
    let runtime = if args.no_idempotency_store {
        runtime
    } else {
        runtime.idempotency_store(store.clone())
    };
    let summary = runtime.run(shutdown.clone()).await?;
    tracing::info!(?summary, "{name} stopped");
    store.close().await;
    Ok(())
}
