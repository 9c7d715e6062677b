//! Every span, attribute and metric name this crate emits, defined once
//! (DESIGN §7, seed 003's names). Code elsewhere uses these constants, never
//! its own strings.

/// Span names.
pub mod span {
    pub const APPEND_EVENTS: &str = "eventsource.event_store.append_events";
    pub const GET_EVENTS: &str = "eventsource.event_store.get_events";
    pub const REPOSITORY_LOAD: &str = "eventsource.repository.load";
    pub const REPOSITORY_SAVE: &str = "eventsource.repository.save";
    pub const REPOSITORY_EXISTS: &str = "eventsource.repository.exists";
    pub const POLL_BATCH: &str = "eventsource.subscription.poll_batch";
    pub const PROCESS_BATCH: &str = "eventsource.subscription.process_batch";
    pub const SAVE_CHECKPOINT: &str = "eventsource.subscription.save_checkpoint";
}

/// Span attribute names.
pub mod attr {
    pub const AGGREGATE_ID: &str = "eventsource.aggregate.id";
    pub const AGGREGATE_TYPE: &str = "eventsource.aggregate.type";
    /// A stream's version: after an append, after a load, or the one a save
    /// expected (`eventsource.expected_version`).
    pub const VERSION: &str = "eventsource.version";
    pub const EXPECTED_VERSION: &str = "eventsource.expected_version";
    /// Events appended, read or handed to a handler.
    pub const EVENT_COUNT: &str = "eventsource.event.count";
    pub const SUBSCRIPTION: &str = "eventsource.subscription.name";
    /// `sqlite` or `postgresql` (OTel database semantic conventions).
    pub const DB_SYSTEM: &str = "db.system";
}

/// Metric names as registered; Prometheus exposes them with the suffix in
/// brackets, which prometheus-client appends (`_total` to counters, the
/// unit to histograms).
///
/// | exposed name | type | labels | what |
/// |---|---|---|---|
/// | `eventstore_append_duration_seconds` | histogram | `aggregate_type` | one append, begin to commit (conflicts included) |
/// | `eventstore_conflicts_total` | counter | `aggregate_type` | appends refused because the stream's version moved |
/// | `eventstore_subscription_lag_events` | gauge | `subscription` | committed events after the subscription's checkpoint |
pub mod metric {
    /// Exposed as `eventstore_append_duration_seconds`.
    pub const APPEND_DURATION: &str = "eventstore_append_duration";
    /// Exposed as `eventstore_conflicts_total`.
    pub const CONFLICTS: &str = "eventstore_conflicts";
    /// Exposed as is.
    pub const SUBSCRIPTION_LAG: &str = "eventstore_subscription_lag_events";
}
