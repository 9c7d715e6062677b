//! notification-service: tells customers their payment went through.
//! Consumes `payments`; on `PaymentProcessed` publishes `CustomerNotified` on
//! `notifications`. An order placed without a customer email cannot be
//! notified: that is the seeds' bug, and the event ends in `payments.dlq`
//! with error type `MissingCustomerEmail` — unless the service is run with
//! the fix, [`WithoutEmail::InApp`], which tells such customers in the
//! app's inbox instead. The on-call story of the console (README) deploys
//! the fix by restarting the service with it, then replays the dead
//! letters.

use kausal_contracts::{CustomerNotified, PaymentFailed, PaymentProcessed, now_rfc3339, topics};
use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};
use kausal_service::{Consumer, Service, ServiceConfig};

pub const SERVICE_NAME: &str = "notification-service";
pub const GROUP: &str = "notification-service";
pub const INPUT_TOPICS: [&str; 1] = [topics::PAYMENTS];
pub const OUTPUT_TOPICS: [&str; 1] = [topics::NOTIFICATIONS];

/// What to do with a payment whose order has no email.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum WithoutEmail {
    /// Give up on the event: a fatal error, dead-lettered at once (the
    /// seeds' behaviour, and the default).
    #[default]
    DeadLetter,
    /// Tell the customer in the app's inbox (`channel: "in-app"`).
    InApp,
}

/// notification-service as it runs: its handler in its group.
pub fn service(config: ServiceConfig, without_email: WithoutEmail) -> Service {
    let handler = NotificationHandler::new(without_email);
    Service::new(SERVICE_NAME, config)
        .consume(Consumer::new(GROUP, &INPUT_TOPICS, handler).emits_to(&OUTPUT_TOPICS))
}

/// Handles payment events.
#[derive(Debug, Default)]
pub struct NotificationHandler {
    pub without_email: WithoutEmail,
}

impl NotificationHandler {
    pub fn new(without_email: WithoutEmail) -> Self {
        Self { without_email }
    }
}

impl Handler for NotificationHandler {
    async fn handle(&self, event: &IncomingEvent, out: &mut Emitter) -> Result<(), HandlerError> {
        if event.is::<PaymentFailed>() {
            return Ok(());
        }
        let payment: PaymentProcessed = event.decode()?;
        let email = payment.customer_email.filter(|e| e.contains('@'));
        let channel = match (&email, self.without_email) {
            (Some(_), _) => "email",
            (None, WithoutEmail::InApp) => "in-app",
            // Retrying cannot invent an address: dead-letter at once.
            (None, WithoutEmail::DeadLetter) => {
                return Err(HandlerError::fatal(
                    "MissingCustomerEmail",
                    format!(
                        "order {} has no customer email; cannot send the confirmation",
                        payment.order_id
                    ),
                ));
            }
        };
        tracing::info!(orderId = %payment.order_id, channel, "customer notified");
        out.emit(&CustomerNotified {
            order_id: payment.order_id,
            email,
            channel: channel.to_owned(),
            notified_at: now_rfc3339(),
        })
    }
}
