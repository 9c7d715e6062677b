//! inventory-service: reserves stock for paid orders. Consumes `payments`;
//! on `PaymentProcessed` publishes `InventoryReserved` on `inventory`;
//! ignores `PaymentFailed` (nothing to reserve).

use kausal_contracts::{InventoryReserved, PaymentFailed, PaymentProcessed, now_rfc3339, topics};
use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};
use kausal_service::{Consumer, Service, ServiceConfig};
use rand::Rng;

pub const SERVICE_NAME: &str = "inventory-service";
pub const GROUP: &str = "inventory-service";
pub const INPUT_TOPICS: [&str; 1] = [topics::PAYMENTS];
pub const OUTPUT_TOPICS: [&str; 1] = [topics::INVENTORY];

/// inventory-service as it runs: its handler in its group.
pub fn service(config: ServiceConfig) -> Service {
    Service::new(SERVICE_NAME, config)
        .consume(Consumer::new(GROUP, &INPUT_TOPICS, InventoryHandler).emits_to(&OUTPUT_TOPICS))
}

/// Handles payment events.
#[derive(Debug, Default)]
pub struct InventoryHandler;

impl Handler for InventoryHandler {
    async fn handle(&self, event: &IncomingEvent, out: &mut Emitter) -> Result<(), HandlerError> {
        if event.is::<PaymentFailed>() {
            return Ok(());
        }
        let payment: PaymentProcessed = event.decode()?;
        let warehouse = ["AMS-1", "BER-2", "LIS-1"][rand::rng().random_range(0..3)];
        let reservation_id = format!("res-{}", payment.order_id.trim_start_matches("ord-"));
        tracing::info!(orderId = %payment.order_id, reservationId = %reservation_id, warehouse, "stock reserved");
        out.emit(&InventoryReserved {
            order_id: payment.order_id,
            reservation_id,
            warehouse: warehouse.to_owned(),
            reserved_at: now_rfc3339(),
        })
    }
}
