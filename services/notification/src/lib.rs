//! notification-service: tells customers their payment went through.
//! Consumes `payments`; on `PaymentProcessed` publishes `CustomerNotified` on
//! `notifications`. An order placed without a customer email cannot be
//! notified: that is the seeds' bug, and the event ends in `payments.dlq`
//! with error type `MissingCustomerEmail`.

use kausal_contracts::{
    CUSTOMER_NOTIFIED_VERSION, CustomerNotified, PaymentProcessed, event_types, now_rfc3339, topics,
};
use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};

pub const SERVICE_NAME: &str = "notification-service";
pub const GROUP: &str = "notification-service";
pub const INPUT_TOPICS: [&str; 1] = [topics::PAYMENTS];
pub const OUTPUT_TOPICS: [&str; 1] = [topics::NOTIFICATIONS];

/// Handles payment events.
#[derive(Debug, Default)]
pub struct NotificationHandler;

impl Handler for NotificationHandler {
    async fn handle(&self, event: &IncomingEvent, out: &mut Emitter) -> Result<(), HandlerError> {
        match event.event_type() {
            Some(event_types::PAYMENT_PROCESSED) => {}
            Some(event_types::PAYMENT_FAILED) => return Ok(()),
            other => return Err(HandlerError::unknown_event_type(other)),
        }
        let payment: PaymentProcessed = event.json()?;
        let Some(email) = payment.customer_email.filter(|e| e.contains('@')) else {
            // Retrying cannot invent an address: dead-letter at once.
            return Err(HandlerError::fatal(
                "MissingCustomerEmail",
                format!(
                    "order {} has no customer email; cannot send the confirmation",
                    payment.order_id
                ),
            ));
        };
        tracing::info!(orderId = %payment.order_id, "confirmation email sent");
        out.emit(
            topics::NOTIFICATIONS,
            Some(&payment.order_id),
            event_types::CUSTOMER_NOTIFIED,
            CUSTOMER_NOTIFIED_VERSION,
            &CustomerNotified {
                order_id: payment.order_id.clone(),
                email,
                channel: "email".to_owned(),
                notified_at: now_rfc3339(),
            },
        )
    }
}
