//! The read model's names, defined once: its consumer group and input, the
//! API's paths and query parameters, its span attributes and the
//! `error_type`s its handler fails with (the `dlq-error-type` header, the
//! `error_type` metric label and the `errorType` log field). The HTTP
//! attribute names are `kausal_telemetry::spans::attr`'s.

/// The consumer group projecting `EntryPosted`.
pub const GROUP: &str = "read-model-service";

/// The API's paths, as axum routes them (`{id}`: an account id).
pub mod paths {
    pub const ACCOUNT: &str = "/v1/accounts/{id}";
    pub const STATEMENT: &str = "/v1/accounts/{id}/statement";
    pub const OPENAPI: &str = "/openapi.yaml";
}

/// The statement's query parameters.
pub mod query {
    /// Lines per page, 1 to `kausal_store::MAX_STATEMENT_PAGE`.
    pub const LIMIT: &str = "limit";
    /// The `seq` of the last line already read (the previous page's
    /// `next_after`); 0 or absent: from the first line.
    pub const AFTER: &str = "after";
    /// Lines per page when `limit` is absent.
    pub const DEFAULT_LIMIT: i64 = 100;
}

/// The read model's own attributes of its SERVER spans.
pub mod attr {
    /// The account read.
    pub const ACCOUNT_ID: &str = "read_model.account.id";
}

/// The handler's failures, by `error_type`.
pub mod error_type {
    /// An entry posts to an account in another currency than the one the
    /// account was projected in (fatal: dead-lettered).
    pub const CURRENCY_MISMATCH: &str = "CurrencyMismatch";
    /// An entry breaks the ledger's own rules (no legs, a zero amount,
    /// unbalanced) (fatal).
    pub const INVALID_ENTRY: &str = "InvalidEntry";
    /// An account's sums would overflow 64 bits (fatal).
    pub const BALANCE_OVERFLOW: &str = "BalanceOverflow";
    /// The read model's database failed (an outage: the partition waits).
    pub const STORE_UNAVAILABLE: &str = "StoreUnavailable";
}
