//! Keeps the order read model up to date: its own consumer group over every
//! topic that carries an order's events.

use std::time::Duration;

use kausal_contracts::topics;
use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};
use kausal_store::Store;

pub const GROUP: &str = "order-service-view";
pub const INPUT_TOPICS: [&str; 5] = [
    topics::ORDERS,
    topics::PAYMENTS,
    topics::INVENTORY,
    topics::NOTIFICATIONS,
    topics::SHIPMENTS,
];

#[derive(Debug)]
pub struct ViewHandler {
    store: Store,
}

impl ViewHandler {
    pub fn new(store: Store) -> Self {
        Self { store }
    }
}

impl Handler for ViewHandler {
    async fn handle(&self, event: &IncomingEvent, _out: &mut Emitter) -> Result<(), HandlerError> {
        let Some(event_type) = event.event_type() else {
            return Ok(());
        };
        let Some(payload) = event.payload.as_deref() else {
            return Ok(());
        };
        let order_id = match crate::view::order_id_of(event_type, payload) {
            Ok(Some(id)) => id,
            Ok(None) => return Ok(()),
            Err(e) => return Err(HandlerError::bad_payload(e)),
        };
        // A database outage pauses the view (nothing committed) rather than
        // spending the retry budget and dead-lettering good events.
        loop {
            let at = event.timestamp_ms.unwrap_or_default();
            let result = self
                .store
                .update_order_view(&order_id, |current| {
                    crate::view::apply(
                        current,
                        event_type,
                        payload,
                        event.correlation_id().as_str(),
                        at,
                    )
                    .map_err(HandlerError::bad_payload)
                })
                .await;
            match result {
                Ok(outcome) => return outcome,
                Err(e) => {
                    tracing::error!(error = %e, "order view store unavailable; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
