//! Span and attribute names of the ledger's HTTP API, defined once. Paths
//! and header names are the contract's (`kausal_contracts::ledger`); the
//! event store's spans are `kausal_eventsource`'s.

/// The ledger's own attributes of its SERVER spans (the HTTP ones are
/// `kausal_telemetry::spans::attr`'s).
pub mod attr {
    /// The entry posted or replayed.
    pub const ENTRY_ID: &str = "ledger.entry.id";
    /// `true` when the answer was replayed for a repeated Idempotency-Key.
    pub const IDEMPOTENT_REPLAY: &str = "ledger.idempotent_replay";
}

/// The SERVER span of `POST /v1/entries` (`kausal_http::server::server_span`
/// names spans `<method> <route>`).
pub fn post_entries_span() -> String {
    format!("POST {}", kausal_contracts::ledger::paths::ENTRIES)
}
