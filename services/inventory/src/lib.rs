//! inventory-service: reserves stock for paid orders. Consumes `payments`;
//! on `PaymentProcessed` publishes `InventoryReserved` on `inventory`;
//! ignores `PaymentFailed` (nothing to reserve).

use kausal_contracts::{
    INVENTORY_RESERVED_VERSION, InventoryReserved, PaymentProcessed, event_types, now_rfc3339,
    topics,
};
use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};
use rand::Rng;

pub const SERVICE_NAME: &str = "inventory-service";
pub const GROUP: &str = "inventory-service";
pub const INPUT_TOPICS: [&str; 1] = [topics::PAYMENTS];
pub const OUTPUT_TOPICS: [&str; 1] = [topics::INVENTORY];

/// Handles payment events.
#[derive(Debug, Default)]
pub struct InventoryHandler;

impl Handler for InventoryHandler {
    async fn handle(&self, event: &IncomingEvent, out: &mut Emitter) -> Result<(), HandlerError> {
        match event.event_type() {
            Some(event_types::PAYMENT_PROCESSED) => {}
            Some(event_types::PAYMENT_FAILED) => return Ok(()),
            other => return Err(HandlerError::unknown_event_type(other)),
        }
        let payment: PaymentProcessed = event.json()?;
        let warehouse = ["AMS-1", "BER-2", "LIS-1"][rand::rng().random_range(0..3)];
        let reservation_id = format!("res-{}", payment.order_id.trim_start_matches("ord-"));
        tracing::info!(orderId = %payment.order_id, reservationId = %reservation_id, warehouse, "stock reserved");
        out.emit(
            topics::INVENTORY,
            Some(&payment.order_id),
            event_types::INVENTORY_RESERVED,
            INVENTORY_RESERVED_VERSION,
            &InventoryReserved {
                order_id: payment.order_id.clone(),
                reservation_id,
                warehouse: warehouse.to_owned(),
                reserved_at: now_rfc3339(),
            },
        )
    }
}
