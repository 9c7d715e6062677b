//! The order read model: each order's state folded from its events. The
//! fold is pure so that `GET /orders/{id}` and a replay to a point in time
//! compute the same state.

use kausal_contracts::{
    CustomerNotified, InventoryReserved, OrderPlaced, PaymentFailed, PaymentProcessed,
    ShipmentCreated, event_types,
};
use kausal_store::OrderView;
use serde::de::DeserializeOwned;

pub const PLACED: &str = "placed";
pub const PAID: &str = "paid";
pub const PAYMENT_FAILED: &str = "payment_failed";
pub const RESERVED: &str = "reserved";
pub const SHIPPED: &str = "shipped";

fn rank(status: &str) -> u8 {
    match status {
        PLACED => 1,
        PAID => 2,
        RESERVED => 3,
        SHIPPED => 4,
        _ => 0,
    }
}

/// Moves forward only: events of one order arrive on different topics, so a
/// later step may be seen before an earlier one. A declined payment is final.
fn advance(view: &mut OrderView, status: &str) {
    if view.status == PAYMENT_FAILED {
        return;
    }
    if status == PAYMENT_FAILED || rank(status) > rank(&view.status) {
        view.status = status.to_owned();
    }
}

fn parse<T: DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    serde_json::from_slice(payload).map_err(|e| e.to_string())
}

/// The order id an event is about, if it is one the view folds.
pub fn order_id_of(event_type: &str, payload: &[u8]) -> Result<Option<String>, String> {
    #[derive(serde::Deserialize)]
    struct Id {
        order_id: String,
    }
    match event_type {
        event_types::ORDER_PLACED
        | event_types::PAYMENT_PROCESSED
        | event_types::PAYMENT_FAILED
        | event_types::INVENTORY_RESERVED
        | event_types::CUSTOMER_NOTIFIED
        | event_types::SHIPMENT_CREATED => parse::<Id>(payload).map(|i| Some(i.order_id)),
        _ => Ok(None),
    }
}

/// Applies one event to an order's view (`None` before its first event).
pub fn apply(
    view: Option<OrderView>,
    event_type: &str,
    payload: &[u8],
    correlation_id: &str,
    at_ms: i64,
) -> Result<Option<OrderView>, String> {
    let Some(order_id) = order_id_of(event_type, payload)? else {
        return Ok(view);
    };
    let mut v = view.unwrap_or_else(|| OrderView {
        order_id: order_id.clone(),
        ..OrderView::default()
    });
    if v.correlation_id.is_none() {
        v.correlation_id = Some(correlation_id.to_owned());
    }
    match event_type {
        event_types::ORDER_PLACED => {
            let e: OrderPlaced = parse(payload)?;
            v.user_id = Some(e.user_id);
            v.amount = Some(e.amount);
            v.currency = Some(e.currency);
            v.customer_email = e.customer_email;
            advance(&mut v, PLACED);
        }
        event_types::PAYMENT_PROCESSED => {
            let e: PaymentProcessed = parse(payload)?;
            v.payment_id = Some(e.payment_id);
            v.amount = v.amount.or(Some(e.amount));
            advance(&mut v, PAID);
        }
        event_types::PAYMENT_FAILED => {
            let e: PaymentFailed = parse(payload)?;
            v.failure_reason = Some(e.reason);
            advance(&mut v, PAYMENT_FAILED);
        }
        event_types::INVENTORY_RESERVED => {
            let e: InventoryReserved = parse(payload)?;
            v.reservation_id = Some(e.reservation_id);
            advance(&mut v, RESERVED);
        }
        event_types::CUSTOMER_NOTIFIED => {
            let _: CustomerNotified = parse(payload)?;
            v.notified = true;
        }
        event_types::SHIPMENT_CREATED => {
            let e: ShipmentCreated = parse(payload)?;
            v.shipment_id = Some(e.shipment_id);
            advance(&mut v, SHIPPED);
        }
        _ => {}
    }
    if v.status.is_empty() {
        // A downstream event seen before OrderPlaced.
        v.status = PLACED.to_owned();
    }
    v.updated_at_ms = v.updated_at_ms.max(at_ms);
    Ok(Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&v).expect("json")
    }

    #[test]
    fn folds_the_happy_path_in_any_arrival_order() {
        let events = [
            (
                "OrderPlaced",
                json(
                    serde_json::json!({"order_id":"o","user_id":"u","amount":5.0,"currency":"EUR","created_at":"t"}),
                ),
            ),
            (
                "PaymentProcessed",
                json(
                    serde_json::json!({"order_id":"o","payment_id":"p","amount":5.0,"currency":"EUR","processed_at":"t"}),
                ),
            ),
            (
                "InventoryReserved",
                json(
                    serde_json::json!({"order_id":"o","reservation_id":"r","warehouse":"w","reserved_at":"t"}),
                ),
            ),
            (
                "ShipmentCreated",
                json(
                    serde_json::json!({"order_id":"o","shipment_id":"s","carrier":"c","created_at":"t"}),
                ),
            ),
        ];
        let orders: [[usize; 4]; 3] = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2]];
        for order in orders {
            let mut view = None;
            for (at, i) in order.iter().enumerate() {
                let (t, p) = &events[*i];
                view = apply(view, t, p, "c", at as i64).expect("valid");
            }
            let v = view.expect("view");
            assert_eq!(v.status, SHIPPED, "{order:?}");
            assert_eq!(v.payment_id.as_deref(), Some("p"));
            assert_eq!(v.shipment_id.as_deref(), Some("s"));
            assert_eq!(v.amount, Some(5.0));
        }
    }

    #[test]
    fn a_declined_payment_is_final_and_bad_payloads_are_errors() {
        let placed = json(
            serde_json::json!({"order_id":"o","user_id":"u","amount":5.0,"currency":"EUR","created_at":"t"}),
        );
        let failed = json(
            serde_json::json!({"order_id":"o","reason":"declined","amount":5.0,"currency":"EUR","failed_at":"t"}),
        );
        let v = apply(None, "OrderPlaced", &placed, "c", 1).expect("ok");
        let v = apply(v, "PaymentFailed", &failed, "c", 2).expect("ok");
        let v = apply(v, "OrderPlaced", &placed, "c", 3)
            .expect("ok")
            .expect("view");
        assert_eq!(v.status, PAYMENT_FAILED);
        assert_eq!(v.failure_reason.as_deref(), Some("declined"));
        assert!(apply(None, "OrderPlaced", b"{bad", "c", 1).is_err());
        assert_eq!(apply(None, "Receipt", b"{}", "c", 1), Ok(None));
    }
}
