//! The ledger service's contract (issue 14): the bodies of its HTTP API
//! (`POST /v1/entries`, `GET /v1/accounts/{id}`), the headers callers send,
//! the bounds it enforces, and the `EntryPosted` event it publishes on
//! [`LEDGER_ENTRIES_TOPIC`] through its outbox.
//!
//! Money is an integer count of the currency's **minor units** (cents for
//! EUR and USD, yen for JPY): never a float, so sums are exact. A leg's
//! amount is positive; its `direction` says which side it is on.
//!
//! Request bodies reject unknown fields (a misspelt field is a caller's bug
//! that must not be ignored silently); the event, like every payload here,
//! accepts them so that a newer producer does not break an older consumer.

use std::fmt;

use kausal_core::Event;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// Where `EntryPosted` is published (one record per entry, keyed by entry
/// id).
pub const LEDGER_ENTRIES_TOPIC: &str = "ledger.entry.v1";
pub const ENTRY_POSTED: &str = "EntryPosted";
pub const ENTRY_POSTED_VERSION: u32 = 1;

/// The API's paths, as axum routes them.
pub mod paths {
    pub const ENTRIES: &str = "/v1/entries";
    /// `{id}`: an account id.
    pub const ACCOUNT: &str = "/v1/accounts/{id}";
    pub const OPENAPI: &str = "/openapi.yaml";
}

/// `true` on an answer replayed for a repeated `Idempotency-Key`. The
/// headers a caller sends (`Idempotency-Key`, `X-Correlation-ID`,
/// `X-Causation-ID`, `traceparent`) are `kausal_http::header`'s.
pub const IDEMPOTENT_REPLAYED_HEADER: &str = "idempotent-replayed";

/// Legs of one entry, at most.
pub const MAX_LEGS: usize = 16;
/// Account and entry ids: 1 to this many bytes of `A-Z a-z 0-9 . _ : -`,
/// starting with a letter or digit.
pub const MAX_ID_LEN: usize = 64;
/// An entry's description, in characters.
pub const MAX_DESCRIPTION_LEN: usize = 500;
/// One leg's amount, in minor units (10^15: ten trillion euros in cents).
/// With at most [`MAX_LEGS`] legs no sum of one entry can overflow.
pub const MAX_LEG_AMOUNT: u64 = 1_000_000_000_000_000;
/// A request body, in bytes (larger is a 413).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Which side of an account a leg is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Debit,
    Credit,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Debit => "debit",
            Self::Credit => "credit",
        })
    }
}

/// The body of `POST /v1/entries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostEntryRequest {
    /// Generated (a UUIDv7) when absent. Posting an id twice is a 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
    pub description: String,
    /// ISO 4217 code; every leg is in it.
    pub currency: String,
    /// The order this entry belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// At least one debit and one credit; debits sum to credits.
    pub legs: Vec<LegRequest>,
}

/// One leg of a [`PostEntryRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegRequest {
    pub account: String,
    pub direction: Direction,
    /// Minor units, 1 to [`MAX_LEG_AMOUNT`].
    #[serde(deserialize_with = "minor_units")]
    pub amount: u64,
}

/// The answer to a posted entry (201), given again for its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostEntryResponse {
    pub entry_id: String,
    pub correlation_id: String,
    /// Each account touched, with its version after the entry.
    pub accounts: Vec<AccountVersion>,
    /// The events appended: `EntryPosted` first, then one per leg, in
    /// account order.
    pub event_ids: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountVersion {
    pub account: String,
    pub version: i64,
}

/// The body of `GET /v1/accounts/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBalance {
    pub account: String,
    /// Fixed by the account's first posting.
    pub currency: String,
    /// Sum of the debit legs, minor units.
    pub debits: i64,
    /// Sum of the credit legs, minor units.
    pub credits: i64,
    /// `debits - credits`: positive for a net debit (an asset or expense
    /// account's usual side), negative for a net credit (liability,
    /// equity, income).
    pub balance: i64,
    /// Legs posted to the account.
    pub postings: i64,
    /// The account stream's version.
    pub version: i64,
}

/// An entry was posted: every leg is on its account. Keyed by `entry_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryPosted {
    pub entry_id: String,
    pub description: String,
    pub currency: String,
    pub legs: Vec<EntryLeg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    /// The business operation (also in the `correlation-id` header).
    pub correlation_id: String,
    /// RFC 3339.
    pub posted_at: String,
}

/// One leg of an [`EntryPosted`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryLeg {
    pub account: String,
    pub direction: Direction,
    /// Minor units.
    pub amount: u64,
}

impl From<&LegRequest> for EntryLeg {
    fn from(leg: &LegRequest) -> Self {
        Self {
            account: leg.account.clone(),
            direction: leg.direction,
            amount: leg.amount,
        }
    }
}

impl Event for EntryPosted {
    const TYPE: &'static str = ENTRY_POSTED;
    const VERSION: u32 = ENTRY_POSTED_VERSION;
    const TOPIC: &'static str = LEDGER_ENTRIES_TOPIC;
    fn key(&self) -> Option<&str> {
        Some(&self.entry_id)
    }
}

/// An amount: a non-negative JSON integer. Floats and negatives are refused
/// with a message that says what an amount is (zero and the upper bound are
/// checked with the rest of the entry).
fn minor_units<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    struct MinorUnits;

    const EXPECTED: &str =
        "amount: a positive integer of the currency's minor units (1250 for 12.50 EUR)";

    impl Visitor<'_> for MinorUnits {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| {
                E::custom(format!(
                    "amount {v} is negative: amounts are positive and the leg's direction \
                     (debit or credit) says which side it is on"
                ))
            })
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
            Err(E::custom(format!(
                "amount {v} is not an integer: amounts are integers of the currency's minor \
                 units (1250 for 12.50 EUR)"
            )))
        }
    }

    deserializer.deserialize_any(MinorUnits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(json: &str) -> Result<LegRequest, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn amounts_are_integers_of_minor_units() {
        let cases: [(&str, Result<u64, &str>); 6] = [
            (
                r#"{"account":"a","direction":"debit","amount":1250}"#,
                Ok(1250),
            ),
            (r#"{"account":"a","direction":"credit","amount":0}"#, Ok(0)),
            (
                r#"{"account":"a","direction":"debit","amount":12.5}"#,
                Err("not an integer"),
            ),
            (
                r#"{"account":"a","direction":"debit","amount":1e3}"#,
                Err("not an integer"),
            ),
            (
                r#"{"account":"a","direction":"debit","amount":-5}"#,
                Err("is negative"),
            ),
            (
                r#"{"account":"a","direction":"debit","amount":"5"}"#,
                Err("minor units"),
            ),
        ];
        for (json, want) in cases {
            match (leg(json), want) {
                (Ok(got), Ok(amount)) => assert_eq!(got.amount, amount, "{json}"),
                (Err(got), Err(part)) => assert!(got.contains(part), "{json}: {got}"),
                (got, want) => panic!("{json}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn requests_refuse_unknown_fields_and_events_accept_them() {
        let err = leg(r#"{"account":"a","direction":"debit","amount":1,"memo":"x"}"#)
            .expect_err("unknown field");
        assert!(err.contains("unknown field `memo`"), "{err}");
        let err = leg(r#"{"account":"a","direction":"sideways","amount":1}"#).expect_err("dir");
        assert!(err.contains("debit") && err.contains("credit"), "{err}");
        let posted: EntryPosted = serde_json::from_str(
            r#"{"entry_id":"e","description":"d","currency":"EUR","legs":[],
                "correlation_id":"c","posted_at":"t","later":true}"#,
        )
        .expect("forward compatible");
        assert_eq!(posted.key(), Some("e"));
        assert_eq!(posted.order_id, None);
    }
}
