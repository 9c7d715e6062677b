//! Payload decoding: the record value as handlers read it.
//!
//! `kausal_kafka::IncomingEvent::json` is `serde_json::from_slice` into a
//! payload type of `kausal-contracts` after rejecting an empty value;
//! kausal-kafka itself links librdkafka, so this target repeats that step
//! over the contract types directly (every type on every input).
//!
//! Checks, beyond "never panics":
//! - a payload that decodes re-encodes to JSON that decodes to an equal
//!   value, and re-encoding is stable. Amounts matter: the payment handler
//!   copies `amount` from the order into the payment events, so the check
//!   is exact: the workspace builds serde_json with `float_roundtrip`, the
//!   fix for what this target found (README.md, "Findings");
//! - `OrderPlaced::validate` accepts only finite positive amounts and
//!   3-letter uppercase currencies, and always explains a rejection;
//! - a decoding error always has a message.
#![no_main]

use kausal_contracts::{
    CustomerNotified, InventoryReserved, OrderPlaced, PaymentFailed, PaymentProcessed,
    ShipmentCreated,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    if let Some(order) = decode::<OrderPlaced>(data) {
        match order.validate() {
            Ok(()) => {
                assert!(order.amount.is_finite() && order.amount > 0.0);
                assert!(!order.order_id.trim().is_empty());
                assert_eq!(order.currency.len(), 3);
                assert!(order.currency.bytes().all(|b| b.is_ascii_uppercase()));
            }
            Err(reason) => assert!(!reason.is_empty()),
        }
    }
    decode::<PaymentProcessed>(data);
    decode::<PaymentFailed>(data);
    decode::<InventoryReserved>(data);
    decode::<CustomerNotified>(data);
    decode::<ShipmentCreated>(data);
});

/// Decodes like `IncomingEvent::json` and checks the round trip.
fn decode<T>(data: &[u8]) -> Option<T>
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug,
{
    if data.is_empty() {
        return None; // IncomingEvent::json: "the record has an empty value"
    }
    let value: T = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return None;
        }
    };
    let encoded = serde_json::to_vec(&value).expect("a decoded payload encodes");
    let again: T = serde_json::from_slice(&encoded).unwrap_or_else(|e| {
        panic!(
            "re-encoded payload does not decode: {e}: {}",
            String::from_utf8_lossy(&encoded)
        )
    });
    assert_eq!(again, value, "{}", String::from_utf8_lossy(&encoded));
    assert_eq!(
        serde_json::to_vec(&again).expect("encodes"),
        encoded,
        "encoding is not stable"
    );
    Some(value)
}

