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
//!   copies `amount` from the order into the payment events. With the
//!   workspace's serde_json (default float parser) an amount may come back
//!   a few ULPs off, and only that is tolerated; built with the
//!   `float_roundtrip` feature the check is exact (README.md, "Findings");
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
use serde_json::Value;

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
    if cfg!(feature = "float_roundtrip") {
        assert_eq!(again, value, "{}", String::from_utf8_lossy(&encoded));
        assert_eq!(
            serde_json::to_vec(&again).expect("encodes"),
            encoded,
            "encoding is not stable"
        );
    } else {
        // serde_json's default float parser trades exactness for speed
        // (significand times a rounded power of ten): it can land a couple
        // of ULPs off the nearest double, on numbers with many digits or a
        // large exponent (`1.0000000000000001e-28` reads back 2 ULPs low).
        // A re-encoded amount may differ from the decoded one by that much,
        // and by nothing else.
        let (a, b) = (to_value(&value), to_value(&again));
        assert!(within_ulps(&a, &b), "{a} vs {b}");
    }
    Some(value)
}

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("a decoded payload converts")
}

/// How far (in units in the last place) serde_json's default parser may
/// land from the value it is given; the worst seen while fuzzing was 2.
const MAX_ULPS: u64 = 4;

/// Equal JSON values, except that floats may differ by `MAX_ULPS`.
fn within_ulps(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) if x.is_sign_negative() == y.is_sign_negative() => {
                x.to_bits().abs_diff(y.to_bits()) <= MAX_ULPS
            }
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| within_ulps(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| within_ulps(v, w)))
        }
        _ => a == b,
    }
}
