//! fulfillment-service: ships reserved orders. Consumes `inventory`; on
//! `InventoryReserved` publishes `ShipmentCreated` on `shipments`.

use kausal_contracts::{
    InventoryReserved, SHIPMENT_CREATED_VERSION, ShipmentCreated, event_types, now_rfc3339, topics,
};
use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};

pub const SERVICE_NAME: &str = "fulfillment-service";
pub const GROUP: &str = "fulfillment-service";
pub const INPUT_TOPICS: [&str; 1] = [topics::INVENTORY];
pub const OUTPUT_TOPICS: [&str; 1] = [topics::SHIPMENTS];

/// Handles inventory events.
#[derive(Debug, Default)]
pub struct FulfillmentHandler;

impl Handler for FulfillmentHandler {
    async fn handle(&self, event: &IncomingEvent, out: &mut Emitter) -> Result<(), HandlerError> {
        if event.event_type() != Some(event_types::INVENTORY_RESERVED) {
            return Err(HandlerError::unknown_event_type(event.event_type()));
        }
        let reserved: InventoryReserved = event.json()?;
        let shipment_id = format!("shp-{}", reserved.order_id.trim_start_matches("ord-"));
        tracing::info!(orderId = %reserved.order_id, shipmentId = %shipment_id, "shipment created");
        out.emit(
            topics::SHIPMENTS,
            Some(&reserved.order_id),
            event_types::SHIPMENT_CREATED,
            SHIPMENT_CREATED_VERSION,
            &ShipmentCreated {
                order_id: reserved.order_id.clone(),
                shipment_id,
                carrier: "DHL".to_owned(),
                created_at: now_rfc3339(),
            },
        )
    }
}
