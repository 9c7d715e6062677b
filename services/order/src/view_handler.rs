//! Keeps the order read model up to date: its own consumer group over every
//! topic that carries an order's events.

use kausal_contracts::topics;
use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};
use kausal_store::Store;

pub const GROUP: &str = "order-service-view";
/// `error_type` of a failed write to the order view's store.
pub const STORE_UNAVAILABLE: &str = "StoreUnavailable";
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
        // A database outage is the store's, not the event's: the runtime
        // waits it out with the partition paused (shutdown and revokes still
        // stop the wait), without spending the retry budget or dead-lettering
        // good events.
        let at = event.timestamp_ms.unwrap_or_default();
        self.store
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
            .await
            .map_err(|e| {
                HandlerError::unavailable(
                    STORE_UNAVAILABLE,
                    format!("the order view's store failed: {e}"),
                )
            })?
    }
}
