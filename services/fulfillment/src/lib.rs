//! fulfillment-service: ships reserved orders. Consumes `inventory`; on
//! `InventoryReserved` publishes `ShipmentCreated` on `shipments`.

use kausal_contracts::{InventoryReserved, ShipmentCreated, now_rfc3339, topics};
use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};
use kausal_service::{Consumer, Service, ServiceConfig};

pub const SERVICE_NAME: &str = "fulfillment-service";
pub const GROUP: &str = "fulfillment-service";
pub const INPUT_TOPICS: [&str; 1] = [topics::INVENTORY];
pub const OUTPUT_TOPICS: [&str; 1] = [topics::SHIPMENTS];

/// fulfillment-service as it runs: its handler in its group.
pub fn service(config: ServiceConfig) -> Service {
    Service::new(SERVICE_NAME, config)
        .consume(Consumer::new(GROUP, &INPUT_TOPICS, FulfillmentHandler).emits_to(&OUTPUT_TOPICS))
}

/// Handles inventory events.
#[derive(Debug, Default)]
pub struct FulfillmentHandler;

impl Handler for FulfillmentHandler {
    async fn handle(&self, event: &IncomingEvent, out: &mut Emitter) -> Result<(), HandlerError> {
        let reserved: InventoryReserved = event.decode()?;
        let shipment_id = format!("shp-{}", reserved.order_id.trim_start_matches("ord-"));
        tracing::info!(orderId = %reserved.order_id, shipmentId = %shipment_id, "shipment created");
        out.emit(&ShipmentCreated {
            order_id: reserved.order_id,
            shipment_id,
            carrier: "DHL".to_owned(),
            created_at: now_rfc3339(),
        })
    }
}
