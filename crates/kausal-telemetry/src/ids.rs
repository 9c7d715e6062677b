//! Fresh ids: the randomness and clock that `kausal-core` leaves to the edge,
//! shared by the Kafka runtime, the event store and the services.

use kausal_core::{EventId, SpanId, TraceId};
use rand::RngCore;

pub fn new_event_id() -> EventId {
    let ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
    let mut random = [0u8; 10];
    rand::rng().fill_bytes(&mut random);
    EventId::from_parts(ms, random)
}

pub fn new_trace_id() -> TraceId {
    loop {
        let mut b = [0u8; 16];
        rand::rng().fill_bytes(&mut b);
        if let Some(id) = TraceId::from_bytes(b) {
            return id;
        }
    }
}

pub fn new_span_id() -> SpanId {
    loop {
        let mut b = [0u8; 8];
        rand::rng().fill_bytes(&mut b);
        if let Some(id) = SpanId::from_bytes(b) {
            return id;
        }
    }
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A random fraction in `[0, 1)` (retry jitter).
pub fn unit_sample() -> f64 {
    rand::random::<f64>()
}
