//! order-service: places orders. Publishes `OrderPlaced` (keyed by order id)
//! on `orders` at a configurable rate, leaving out the customer email on a
//! configurable fraction of orders so the seeds' notification bug can be
//! reproduced.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use kausal_contracts::{ORDER_PLACED_VERSION, OrderPlaced, OrdersTopic, event_types, topics};
use kausal_kafka::{EventProducer, EventSpec, OutgoingEvent};
use kausal_service::{Consumer, Service, ServiceConfig};
use kausal_telemetry::Metrics;
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use tokio_util::sync::CancellationToken;

pub mod http;
pub mod view;
pub mod view_handler;

pub const SERVICE_NAME: &str = "order-service";

/// How the generator behaves.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Orders per second; 0 publishes nothing.
    pub rate_per_sec: f64,
    /// Fraction of orders without `customer_email`, in `[0, 1]`.
    pub missing_email_rate: f64,
    /// Stop after this many orders.
    pub max_orders: Option<u64>,
    pub topic: String,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            rate_per_sec: 5.0,
            missing_email_rate: 0.05,
            max_orders: None,
            topic: topics::ORDERS.to_owned(),
        }
    }
}

/// What the order service runs besides the common options.
#[derive(Debug, Clone)]
pub struct OrderOptions {
    /// Where `POST /orders` and `GET /orders/{id}` listen.
    pub http: SocketAddr,
    /// The generator; its `topic` is where every order goes.
    pub generator: GeneratorConfig,
    pub orders: OrdersTopic,
}

/// order-service as it runs: the HTTP API, the generator, and the read
/// model's consumer group over every topic of an order's story.
pub fn service(config: ServiceConfig, options: OrderOptions) -> Service {
    let OrderOptions {
        http,
        generator,
        orders,
    } = options;
    let inputs: Vec<String> = view_handler::INPUT_TOPICS
        .iter()
        .map(|t| {
            if *t == topics::ORDERS {
                orders.name.clone()
            } else {
                (*t).to_owned()
            }
        })
        .collect();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let service = Service::new(SERVICE_NAME, config);
    let order_metrics = OrderMetrics::register(service.metrics());
    let api_topic = generator.topic.clone();
    service
        .creates(&generator.topic)
        .consume(
            Consumer::build(view_handler::GROUP, &inputs, |ctx| async move {
                Ok(view_handler::ViewHandler::new(ctx.store().await?))
            })
            .dead_letter_topic(&orders.name, &orders.dead_letters)
            // The view is an upsert per order: applying a record twice
            // changes nothing, so no idempotency keys are kept.
            .without_idempotency_store(),
        )
        .task("order API", move |ctx| async move {
            let store = ctx.store().await?;
            let events = kausal_eventsource::EventStore::new(
                store.clone(),
                kausal_eventsource::EventStoreMetrics::register(&ctx.metrics),
            );
            let api = http::ApiState {
                producer: ctx.producer.clone(),
                store,
                topic: api_topic,
                keys: kausal_eventsource::IdempotencyKeys::new(events, "orders"),
            };
            let (addr, task) = http::serve(http, api, ctx.shutdown.clone().cancelled_owned())
                .await
                .with_context(|| {
                    format!(
                        "cannot serve the order API on {http} (pick another port with --http-port)"
                    )
                })?;
            tracing::info!(api = %format!("http://{addr}/orders"), "order API listening");
            task.await.context("the order API stopped")
        })
        .task("order generator", move |ctx| async move {
            let published = run_generator(
                ctx.producer.clone(),
                generator,
                order_metrics,
                ctx.shutdown.clone(),
            )
            .await;
            tracing::info!(published, "order generator stopped");
            Ok(())
        })
}

/// Business metrics of the order service.
#[derive(Debug, Clone, Default)]
pub struct OrderMetrics {
    pub orders_published: Counter,
    pub orders_publish_failed: Counter,
}

impl OrderMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self::default();
        metrics.register(
            "orders_published",
            "Orders placed and acknowledged by Kafka",
            None,
            m.orders_published.clone(),
        );
        metrics.register(
            "orders_publish_failed",
            "Orders that could not be published",
            None,
            m.orders_publish_failed.clone(),
        );
        m
    }
}

/// A plausible random order.
pub fn random_order(rng: &mut impl Rng, missing_email_rate: f64) -> OrderPlaced {
    let n: u32 = rng.random_range(0..1_000_000);
    let order_id = new_order_id(rng);
    let user = rng.random_range(1..5000);
    let cents: u32 = rng.random_range(500..50_000);
    OrderPlaced {
        order_id,
        user_id: format!("user-{user}"),
        amount: f64::from(cents) / 100.0,
        currency: "EUR".to_owned(),
        customer_email: (!rng.random_bool(missing_email_rate.clamp(0.0, 1.0)))
            .then(|| format!("customer{n}@example.com")),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}

/// A fresh order id: `ord-` and 12 hex digits.
pub fn new_order_id(rng: &mut impl Rng) -> String {
    let v: u64 = rng.random();
    format!("ord-{:012x}", v & 0xffff_ffff_ffff)
}

/// Publishes one order as a root event and waits for the broker.
pub async fn place_order(
    producer: &EventProducer,
    topic: &str,
    order: &OrderPlaced,
    correlation_id: Option<kausal_core::CorrelationId>,
    parent: Option<kausal_core::TraceParent>,
) -> Result<OutgoingEvent, kausal_kafka::PublishError> {
    let spec = EventSpec {
        topic,
        key: Some(&order.order_id),
        event_type: event_types::ORDER_PLACED,
        version: ORDER_PLACED_VERSION,
        source_service: SERVICE_NAME,
    };
    let event = OutgoingEvent::root(&spec, order, correlation_id, parent)?;
    producer.publish(&event).await?;
    Ok(event)
}

/// Publishes orders at `config.rate_per_sec` until `shutdown` (or
/// `max_orders`). Up to 256 publishes are in flight at once so that high
/// rates are not capped by the broker round trip. Returns how many orders
/// were acknowledged.
pub async fn run_generator(
    producer: EventProducer,
    config: GeneratorConfig,
    metrics: OrderMetrics,
    shutdown: CancellationToken,
) -> u64 {
    const MAX_IN_FLIGHT: usize = 256;
    if config.rate_per_sec <= 0.0 {
        shutdown.cancelled().await;
        return 0;
    }
    let period = Duration::from_secs_f64(1.0 / config.rate_per_sec);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight = FuturesUnordered::new();
    let mut started = 0u64;
    let mut published = 0u64;
    loop {
        let may_start =
            in_flight.len() < MAX_IN_FLIGHT && config.max_orders.is_none_or(|m| started < m);
        if !may_start && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(result) = in_flight.next(), if !in_flight.is_empty() => {
                match result {
                    Ok(_) => { published += 1; metrics.orders_published.inc(); }
                    Err(e) => { metrics.orders_publish_failed.inc(); tracing::error!(error = %e, "order not published"); }
                }
            }
            _ = ticker.tick(), if may_start => {
                let order = random_order(&mut rand::rng(), config.missing_email_rate);
                let producer = producer.clone();
                let topic = config.topic.clone();
                started += 1;
                in_flight.push(async move {
                    let result = place_order(&producer, &topic, &order, None, None).await;
                    if result.is_ok() {
                        tracing::info!(orderId = %order.order_id, amount = order.amount, hasEmail = order.customer_email.is_some(), "order placed");
                    }
                    result
                });
            }
        }
    }
    // Finish what is in flight: those orders were announced to the broker.
    while let Some(result) = in_flight.next().await {
        if result.is_ok() {
            published += 1;
            metrics.orders_published.inc();
        }
    }
    published
}
