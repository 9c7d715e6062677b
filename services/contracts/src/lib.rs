//! Topics and versioned JSON payloads of the reference system (DESIGN §4):
//! `OrderPlaced` (orders) → `PaymentProcessed` / `PaymentFailed` (payments)
//! → `InventoryReserved` (inventory), `CustomerNotified` (notifications) →
//! `ShipmentCreated` (shipments).
//!
//! Payloads accept unknown fields so that a newer producer does not break an
//! older consumer; a breaking change bumps the event's version. The ledger's
//! HTTP bodies and its `EntryPosted` event are in [`ledger`].

pub use kausal_core::Event;
use serde::{Deserialize, Serialize};

pub mod ledger;

pub mod topics {
    pub const ORDERS: &str = "orders";
    pub const PAYMENTS: &str = "payments";
    pub const INVENTORY: &str = "inventory";
    pub const NOTIFICATIONS: &str = "notifications";
    pub const SHIPMENTS: &str = "shipments";
    /// Business topics, in flow order.
    pub const ALL: [&str; 5] = [ORDERS, PAYMENTS, INVENTORY, NOTIFICATIONS, SHIPMENTS];
}

pub mod event_types {
    pub const ORDER_PLACED: &str = "OrderPlaced";
    pub const PAYMENT_PROCESSED: &str = "PaymentProcessed";
    pub const PAYMENT_FAILED: &str = "PaymentFailed";
    pub const INVENTORY_RESERVED: &str = "InventoryReserved";
    pub const CUSTOMER_NOTIFIED: &str = "CustomerNotified";
    pub const SHIPMENT_CREATED: &str = "ShipmentCreated";
}

/// Schema version of each payload below.
pub const ORDER_PLACED_VERSION: u32 = 1;
pub const PAYMENT_PROCESSED_VERSION: u32 = 1;
pub const PAYMENT_FAILED_VERSION: u32 = 1;
pub const INVENTORY_RESERVED_VERSION: u32 = 1;
pub const CUSTOMER_NOTIFIED_VERSION: u32 = 1;
pub const SHIPMENT_CREATED_VERSION: u32 = 1;

/// A customer placed an order. Keyed by `order_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub user_id: String,
    /// In major units of `currency`.
    pub amount: f64,
    /// ISO 4217 code.
    pub currency: String,
    /// Absent on some orders: the seeds' notification bug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

impl OrderPlaced {
    /// Checks what a payment needs; the reason is user-facing.
    pub fn validate(&self) -> Result<(), String> {
        if self.order_id.trim().is_empty() {
            return Err("order_id is empty".into());
        }
        if !self.amount.is_finite() || self.amount <= 0.0 {
            return Err(format!(
                "amount must be a positive number, got {}",
                self.amount
            ));
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "currency must be a 3-letter ISO 4217 code, got {:?}",
                self.currency
            ));
        }
        Ok(())
    }
}

/// The payment went through. Keyed by `order_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentProcessed {
    pub order_id: String,
    pub payment_id: String,
    pub amount: f64,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_email: Option<String>,
    pub processed_at: String,
}

/// The payment was declined: a business outcome, not an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub order_id: String,
    pub reason: String,
    pub amount: f64,
    pub currency: String,
    pub failed_at: String,
}

/// Stock was set aside for a paid order. Keyed by `order_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryReserved {
    pub order_id: String,
    pub reservation_id: String,
    pub warehouse: String,
    pub reserved_at: String,
}

/// The customer was told the payment went through. Keyed by `order_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerNotified {
    pub order_id: String,
    /// The address written to; absent when the customer was told another
    /// way (`channel` says which).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `email`, or `in-app` (the customer's inbox in the app, for an order
    /// without an email when the service is told to fall back to it).
    pub channel: String,
    pub notified_at: String,
}

/// A shipment was created for a reserved order. Keyed by `order_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipmentCreated {
    pub order_id: String,
    pub shipment_id: String,
    pub carrier: String,
    pub created_at: String,
}

/// Where orders go, and where their dead letters go: `orders` and
/// `orders.dlq` unless the seed's `ORDERS_TOPIC` / `DLQ_TOPIC` say
/// otherwise. Events are declared on [`topics::ORDERS`]; the services that
/// produce or consume orders use this instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrdersTopic {
    pub name: String,
    pub dead_letters: String,
}

impl OrdersTopic {
    /// `name`, with its dead letters on `dead_letters` or `<name>.dlq`.
    pub fn new(name: &str, dead_letters: Option<&str>) -> Self {
        Self {
            name: name.to_owned(),
            dead_letters: dead_letters
                .map_or_else(|| kausal_core::dlq::dlq_topic(name), ToOwned::to_owned),
        }
    }
}

/// Declares payloads as [`Event`]s of the reference system: every one is
/// keyed by its `order_id`, so one order's events stay in order.
macro_rules! order_events {
    ($($payload:ty => $event_type:expr, $version:expr, $topic:expr;)+) => {$(
        impl Event for $payload {
            const TYPE: &'static str = $event_type;
            const VERSION: u32 = $version;
            const TOPIC: &'static str = $topic;
            fn key(&self) -> Option<&str> {
                Some(&self.order_id)
            }
        }
    )+};
}

order_events! {
    OrderPlaced => event_types::ORDER_PLACED, ORDER_PLACED_VERSION, topics::ORDERS;
    PaymentProcessed => event_types::PAYMENT_PROCESSED, PAYMENT_PROCESSED_VERSION, topics::PAYMENTS;
    PaymentFailed => event_types::PAYMENT_FAILED, PAYMENT_FAILED_VERSION, topics::PAYMENTS;
    InventoryReserved => event_types::INVENTORY_RESERVED, INVENTORY_RESERVED_VERSION, topics::INVENTORY;
    CustomerNotified => event_types::CUSTOMER_NOTIFIED, CUSTOMER_NOTIFIED_VERSION, topics::NOTIFICATIONS;
    ShipmentCreated => event_types::SHIPMENT_CREATED, SHIPMENT_CREATED_VERSION, topics::SHIPMENTS;
}

/// Now as RFC 3339 UTC with milliseconds: the timestamp format of every
/// payload.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzz/envelope: with serde_json's default float parser these
    /// amounts came back one or two ULPs off after decode → encode → decode.
    #[test]
    fn amounts_survive_a_round_trip_exactly() {
        for text in [
            "2.2207319278943611e-308",
            "1e-28",
            "1.0000000000000001e-28",
            "19.99",
        ] {
            let json = format!(
                r#"{{"order_id":"o","user_id":"u","amount":{text},"currency":"EUR","created_at":"t"}}"#
            );
            let first: OrderPlaced = serde_json::from_str(&json).expect("decodes");
            let again: OrderPlaced =
                serde_json::from_slice(&serde_json::to_vec(&first).expect("encodes"))
                    .expect("decodes again");
            assert_eq!(first.amount.to_bits(), again.amount.to_bits(), "{text}");
            let exact: f64 = text.parse().expect("std parses exactly");
            assert_eq!(first.amount.to_bits(), exact.to_bits(), "{text}");
        }
    }

    #[test]
    fn order_validation() {
        let ok = OrderPlaced {
            order_id: "ord-1".into(),
            user_id: "u".into(),
            amount: 10.5,
            currency: "EUR".into(),
            customer_email: None,
            created_at: "2026-11-22T00:00:00Z".into(),
        };
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            OrderPlaced {
                order_id: " ".into(),
                ..ok.clone()
            },
            OrderPlaced {
                amount: 0.0,
                ..ok.clone()
            },
            OrderPlaced {
                amount: f64::NAN,
                ..ok.clone()
            },
            OrderPlaced {
                currency: "eur".into(),
                ..ok.clone()
            },
        ];
        for case in cases {
            assert!(case.validate().is_err(), "{case:?}");
        }
    }

    #[test]
    fn unknown_fields_are_accepted_and_email_is_optional() {
        let json = r#"{"order_id":"o","user_id":"u","amount":1,"currency":"USD","created_at":"t","new_field":1}"#;
        let order: OrderPlaced = serde_json::from_str(json).expect("forward compatible");
        assert_eq!(order.customer_email, None);
    }
}
