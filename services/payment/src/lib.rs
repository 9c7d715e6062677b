//! payment-service: consumes `OrderPlaced` from `orders`, charges a payment
//! gateway, and publishes `PaymentProcessed` (or `PaymentFailed` when the
//! payment is declined) on `payments`, keyed by order id.
//!
//! The gateway is a trait so that tests (and a real integration) can supply
//! their own; [`SimulatedGateway`] fails transiently at a configurable rate
//! (the seed's 20 %), which the runtime retries and finally dead-letters.

use std::future::Future;
use std::time::Instant;

use kausal_contracts::{OrderPlaced, OrdersTopic, PaymentFailed, PaymentProcessed, topics};
use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};
use kausal_service::{Consumer, Service, ServiceConfig};
use kausal_telemetry::Metrics;
use kausal_telemetry::metrics::duration_histogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use rand::Rng;

mod ledger;
pub use ledger::{DEFAULT_MERCHANT_ACCOUNT, LedgerClient};

pub const SERVICE_NAME: &str = "payment-service";
pub const GROUP: &str = "payment-service";

/// payment-service as it runs: its handler, charging `gateway`, in its
/// group over `orders`.
pub fn service<G: PaymentGateway>(
    config: ServiceConfig,
    gateway: G,
    orders: &OrdersTopic,
    ledger_url: Option<&str>,
) -> anyhow::Result<Service> {
    let service = Service::new(SERVICE_NAME, config);
    let mut handler = PaymentHandler::new(gateway, PaymentMetrics::register(service.metrics()));
    if let Some(url) = ledger_url {
        handler = handler.with_ledger(
            LedgerClient::new(SERVICE_NAME, url)
                .map_err(|e| anyhow::anyhow!("cannot reach the ledger at {url}: {e}"))?,
        );
    }
    Ok(service.consume(
        Consumer::new(GROUP, &[&orders.name], handler)
            .dead_letter_topic(&orders.name, &orders.dead_letters)
            .emits_to(&[topics::PAYMENTS]),
    ))
}

/// The gateway's answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    Approved { payment_id: String },
    Declined { reason: String },
}

/// A transient gateway fault: worth retrying.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError(pub String);

/// Where money is taken. Implement for a real provider or a test double.
pub trait PaymentGateway: Send + Sync + 'static {
    fn charge(
        &self,
        order: &OrderPlaced,
    ) -> impl Future<Output = Result<Charge, GatewayError>> + Send;
}

/// A gateway that fails transiently at `failure_rate` per attempt and
/// declines at `decline_rate` per order.
///
/// Like a real gateway called with the order id as idempotency key, it
/// answers a repeated charge of the same order the same way: whether an
/// order is declined and its payment id follow from the order id, not from
/// the attempt. Only transient failures are random per attempt.
#[derive(Debug, Clone, Default)]
pub struct SimulatedGateway {
    pub failure_rate: f64,
    pub decline_rate: f64,
    /// How long each charge takes.
    pub latency: std::time::Duration,
    /// Fault injection: orders whose id starts with this prefix fail
    /// transiently on every attempt (a poison message that exhausts its
    /// retry budget and is dead-lettered).
    pub poison_prefix: Option<String>,
}

/// A stable 64-bit hash (FNV-1a): the same in every process and release.
fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl PaymentGateway for SimulatedGateway {
    async fn charge(&self, order: &OrderPlaced) -> Result<Charge, GatewayError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        if self
            .poison_prefix
            .as_deref()
            .is_some_and(|p| order.order_id.starts_with(p))
        {
            return Err(GatewayError(
                "payment gateway timed out (injected: poison order)".to_owned(),
            ));
        }
        if rand::rng().random_bool(self.failure_rate.clamp(0.0, 1.0)) {
            return Err(GatewayError("payment gateway timed out".to_owned()));
        }
        let hash = stable_hash(order.order_id.as_bytes());
        // The top 53 bits as a uniform fraction in [0, 1).
        let draw = (hash >> 11) as f64 / (1u64 << 53) as f64;
        if draw < self.decline_rate.clamp(0.0, 1.0) {
            return Ok(Charge::Declined {
                reason: "card declined by issuer".to_owned(),
            });
        }
        Ok(Charge::Approved {
            payment_id: format!("pay-{hash:016x}-{}", order.order_id),
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Business metrics of the payment service.
#[derive(Debug, Clone)]
pub struct PaymentMetrics {
    pub payments: Family<OutcomeLabel, Counter>,
    pub payment_processing_duration: Histogram,
}

impl PaymentMetrics {
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self {
            payments: Family::default(),
            payment_processing_duration: duration_histogram(),
        };
        metrics.register(
            "payments",
            "Charges by outcome: approved, declined, gateway_error",
            None,
            m.payments.clone(),
        );
        metrics.register(
            "payment_processing_duration",
            "Time the gateway took per charge",
            Some(prometheus_client::registry::Unit::Seconds),
            m.payment_processing_duration.clone(),
        );
        m
    }

    fn count(&self, outcome: &str) {
        self.payments
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }
}

/// Handles `OrderPlaced`.
#[derive(Debug)]
pub struct PaymentHandler<G> {
    gateway: G,
    metrics: PaymentMetrics,
    /// Where approved charges are posted, if anywhere.
    ledger: Option<LedgerClient>,
}

impl<G: PaymentGateway> PaymentHandler<G> {
    pub fn new(gateway: G, metrics: PaymentMetrics) -> Self {
        Self {
            gateway,
            metrics,
            ledger: None,
        }
    }

    /// Posts every approved charge to the ledger before `PaymentProcessed`
    /// is emitted (see [`LedgerClient`]).
    pub fn with_ledger(mut self, ledger: LedgerClient) -> Self {
        self.ledger = Some(ledger);
        self
    }
}

impl<G: PaymentGateway> Handler for PaymentHandler<G> {
    async fn handle(&self, event: &IncomingEvent, out: &mut Emitter) -> Result<(), HandlerError> {
        // `orders` carries only OrderPlaced, so a record without an
        // event-type header (a plain Kafka client's) is read as one; any
        // other declared type is not ours.
        let order: OrderPlaced = match event.event_type() {
            None => event.json()?,
            Some(_) => event.decode()?,
        };
        order
            .validate()
            .map_err(|reason| HandlerError::fatal("InvalidOrder", reason))?;
        let started = Instant::now();
        let charge = self.gateway.charge(&order).await;
        self.metrics
            .payment_processing_duration
            .observe(started.elapsed().as_secs_f64());
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        match charge {
            Ok(Charge::Approved { payment_id }) => {
                if let Some(ledger) = &self.ledger {
                    ledger.post_charge(&order, &payment_id, event).await?;
                }
                self.metrics.count("approved");
                tracing::info!(orderId = %order.order_id, paymentId = %payment_id, "payment approved");
                out.emit(&PaymentProcessed {
                    order_id: order.order_id,
                    payment_id,
                    amount: order.amount,
                    currency: order.currency,
                    customer_email: order.customer_email,
                    processed_at: now,
                })
            }
            Ok(Charge::Declined { reason }) => {
                self.metrics.count("declined");
                tracing::info!(orderId = %order.order_id, reason = %reason, "payment declined");
                out.emit(&PaymentFailed {
                    order_id: order.order_id,
                    reason,
                    amount: order.amount,
                    currency: order.currency,
                    failed_at: now,
                })
            }
            Err(GatewayError(message)) => {
                self.metrics.count("gateway_error");
                Err(HandlerError::retryable("PaymentGatewayError", message))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str) -> OrderPlaced {
        OrderPlaced {
            order_id: id.to_owned(),
            user_id: "u-1".to_owned(),
            amount: 10.0,
            currency: "EUR".to_owned(),
            customer_email: None,
            created_at: "2026-11-22T08:00:00.000Z".to_owned(),
        }
    }

    #[tokio::test]
    async fn a_repeated_charge_gets_the_first_answer() {
        let gateway = SimulatedGateway {
            decline_rate: 0.5,
            ..SimulatedGateway::default()
        };
        let mut declined = 0;
        for i in 0..200 {
            let o = order(&format!("ord-{i}"));
            let first = gateway.charge(&o).await.expect("no transient failures");
            let again = gateway.charge(&o).await.expect("no transient failures");
            assert_eq!(first, again, "order {i}");
            declined += u32::from(matches!(first, Charge::Declined { .. }));
        }
        // About half are declined (binomial: 200 × 0.5 ± 4σ).
        assert!((72..=128).contains(&declined), "declined {declined} of 200");
    }

    #[tokio::test]
    async fn poison_orders_fail_on_every_attempt_and_others_pass() {
        let gateway = SimulatedGateway {
            poison_prefix: Some("poison-".to_owned()),
            ..SimulatedGateway::default()
        };
        for _ in 0..5 {
            assert!(gateway.charge(&order("poison-1")).await.is_err());
        }
        assert!(matches!(
            gateway.charge(&order("ord-1")).await,
            Ok(Charge::Approved { .. })
        ));
    }
}
