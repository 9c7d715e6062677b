//! `kausal service <name>`: one reference service in this process.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use kausal_contracts::{OrdersTopic, topics};
use kausal_kafka::admin::Admin;
use kausal_kafka::receipt::RECEIPTS_TOPIC;
use kausal_service::{Service, ServiceConfig};

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
    /// The double-entry ledger over HTTP; publishes `EntryPosted` on
    /// `ledger.entry.v1` through its outbox.
    Ledger,
    /// Projects `ledger.entry.v1` into balances and statements over HTTP.
    ReadModel,
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
            Self::Ledger => kausal_ledger::SERVICE_NAME,
            Self::ReadModel => kausal_read_model::SERVICE_NAME,
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
            Self::Ledger => "ledger",
            Self::ReadModel => "read-model",
            Self::Recorder => "recorder",
            Self::Monitor => "monitor",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Which service to run.
    pub name: ServiceName,
    #[command(flatten)]
    pub service: ServiceConfig,
    /// order: port of the HTTP API (POST /orders, GET /orders/{id}).
    #[arg(long, env = "KAUSAL_HTTP_PORT", default_value_t = 8081)]
    pub http_port: u16,
    /// ledger: port of the HTTP API (POST /v1/entries, GET /v1/accounts/{id}).
    #[arg(long, env = "KAUSAL_LEDGER_PORT", default_value_t = 8095)]
    pub ledger_port: u16,
    /// read-model: port of the HTTP API (GET /v1/accounts/{id}[/statement]).
    #[arg(long, env = "KAUSAL_READ_MODEL_PORT", default_value_t = 8096)]
    pub read_model_port: u16,
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
    /// payment: the ledger service's base URL (`http://127.0.0.1:8095`);
    /// every approved charge is posted to it as an entry. Unset: no ledger.
    #[arg(long, env = "KAUSAL_LEDGER_URL")]
    pub ledger_url: Option<String>,
    /// The topic orders go to (seed: ORDERS_TOPIC).
    #[arg(long, env = "ORDERS_TOPIC", default_value = topics::ORDERS)]
    pub orders_topic: String,
    /// Dead-letter topic for orders (seed: DLQ_TOPIC); default `<orders>.dlq`.
    #[arg(long, env = "DLQ_TOPIC")]
    pub dlq_topic: Option<String>,
    /// monitor: time between lag samples, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub monitor_interval_ms: u64,
}

/// Runs one service until SIGINT/SIGTERM; an error (or a failed part) is a
/// non-zero exit.
pub async fn run(args: ServiceArgs) -> anyhow::Result<()> {
    let orders = OrdersTopic::new(&args.orders_topic, args.dlq_topic.as_deref());
    let config = args.service.clone();
    let service = match args.name {
        ServiceName::Order => kausal_order::service(
            config,
            kausal_order::OrderOptions {
                http: SocketAddr::from(([127, 0, 0, 1], args.http_port)),
                generator: kausal_order::GeneratorConfig {
                    rate_per_sec: args.rate,
                    missing_email_rate: args.missing_email_rate,
                    max_orders: args.max_orders,
                    topic: orders.name.clone(),
                },
                orders: orders.clone(),
            },
        ),
        ServiceName::Payment => kausal_payment::service(
            config,
            kausal_payment::SimulatedGateway {
                failure_rate: args.payment_failure_rate,
                decline_rate: args.payment_decline_rate,
                latency: Duration::from_millis(args.payment_latency_ms),
                poison_prefix: args.payment_poison_prefix.clone(),
            },
            &orders,
            args.ledger_url.as_deref(),
        )?,
        ServiceName::Inventory => kausal_inventory::service(config),
        ServiceName::Notification => {
            kausal_notification::service(config, args.notify_without_email)
        }
        ServiceName::Fulfillment => kausal_fulfillment::service(config),
        ServiceName::Ledger => kausal_ledger::service(
            config,
            kausal_ledger::LedgerOptions {
                http: SocketAddr::from(([127, 0, 0, 1], args.ledger_port)),
                max_conflict_retries: 10,
            },
        ),
        ServiceName::ReadModel => kausal_read_model::service(
            config,
            kausal_read_model::ReadModelOptions {
                http: SocketAddr::from(([127, 0, 0, 1], args.read_model_port)),
            },
        ),
        ServiceName::Recorder => recorder(config),
        ServiceName::Monitor => monitor(config, Duration::from_millis(args.monitor_interval_ms)),
    };
    // Every service makes sure the orders topic exists, so that whichever
    // starts first, the pipeline's head is there.
    service.creates(&orders.name).run().await
}

/// The lineage recorder: every event, dead letter and receipt into the
/// lineage store.
fn recorder(config: ServiceConfig) -> Service {
    Service::new("lineage-recorder", config).task("recorder", |ctx| async move {
        let recorder = kausal_lineage::Recorder::new(
            ctx.kafka.clone(),
            ctx.store().await?,
            kausal_lineage::RecorderConfig::default(),
        );
        let summary = recorder.run(ctx.shutdown.clone()).await?;
        tracing::info!(?summary, "recorder stopped");
        Ok(())
    })
}

/// The lag monitor: lag and the dead-letter backlog as gauges.
fn monitor(config: ServiceConfig, interval: Duration) -> Service {
    Service::new("lag-monitor", config).task("lag monitor", move |ctx| async move {
        let store = ctx.store().await?;
        // The recorder keeps no receipts of its own: watch it explicitly
        // over the topics it must keep up with.
        let targets = topics::ALL
            .iter()
            .map(|t| (*t).to_owned())
            .chain([RECEIPTS_TOPIC.to_owned()])
            .map(|t| (kausal_lineage::recorder::GROUP.to_owned(), t))
            .collect();
        let monitor = kausal_monitor::LagMonitor::new(
            Admin::new(&ctx.kafka)?,
            kausal_monitor::MonitorConfig {
                targets,
                ..Default::default()
            },
        )
        .with_store(store)
        .with_metrics(kausal_telemetry::monitor::MonitorMetrics::register(
            &ctx.metrics,
        ));
        tracing::info!(interval_ms = interval.as_millis(), "lag monitor started");
        monitor.run(interval, ctx.shutdown.clone()).await;
        Ok(())
    })
}
