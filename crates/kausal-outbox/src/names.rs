//! Every span, attribute, metric and log field name the relay emits,
//! defined once (DESIGN §7, seed 004's names). Code elsewhere uses these
//! constants, never its own strings.

/// Span names.
pub mod span {
    /// One batch of outbox rows: read, published, marked.
    pub const PROCESS_OUTBOX: &str = "processOutbox";
    /// One event of a batch, from enqueue to the broker's answer; the child
    /// of the span that appended the event, the parent of `send <topic>`.
    pub const PUBLISH_EVENT: &str = "publishEvent";
}

/// Span attribute names: the event store's (shared with
/// `kausal-eventsource`, defined there) and the messaging conventions'
/// (defined in `kausal_telemetry::spans::attr`).
pub mod attr {
    pub use kausal_eventsource::names::attr::{DB_SYSTEM, EVENT_COUNT};
    pub use kausal_telemetry::spans::attr::{DESTINATION, EVENT_TYPE, MESSAGE_ID};
}

/// Metric names as registered; Prometheus exposes them with the suffix in
/// brackets, which prometheus-client appends (the unit).
///
/// | exposed name | type | labels | what |
/// |---|---|---|---|
/// | `outbox_relay_latency_seconds` | histogram | `topic` | an outbox row's creation (the append's commit) to the broker's acknowledgement of its event |
/// | `outbox_pending` | gauge | – | outbox rows not yet marked sent |
/// | `outbox_oldest_age_seconds` | gauge | – | how long the oldest unsent row has waited (0 when none) |
pub mod metric {
    /// Exposed as `outbox_relay_latency_seconds`.
    pub const RELAY_LATENCY: &str = "outbox_relay_latency";
    /// Exposed as is.
    pub const PENDING: &str = "outbox_pending";
    /// Exposed as `outbox_oldest_age_seconds`.
    pub const OLDEST_AGE: &str = "outbox_oldest_age";
}

/// Log field names. The contract's fields come from
/// `kausal_telemetry::fields` (`eventId`, `error`, `errorType`, `traceId`,
/// `spanId`); the topic, which it does not name, is `topic` as in the other
/// crates' log lines. `tracing` needs field names as literals, so the relay
/// writes them out and a unit test checks them against these constants.
pub mod field {
    pub use kausal_telemetry::fields::{ERROR, ERROR_TYPE, EVENT_ID, SPAN_ID, TRACE_ID};
    pub const TOPIC: &str = "topic";
}
