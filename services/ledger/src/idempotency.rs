//! Idempotency keys of `POST /v1/entries`, kept in the event store: each
//! key used is a stream of its own, `LedgerIdempotency-<key>`, whose one
//! `KeyUsed` event holds the request (as parsed) and the answer given. It
//! is appended with "no stream" expected in the same transaction as the
//! entry, so:
//!
//! - a key is used by exactly one posted entry, even when two requests
//!   with it race: the second append conflicts on this stream, writes
//!   nothing, and on its retry finds the first one's answer;
//! - the answer survives restarts (it is in the database), and is removed
//!   only with the event store's rows;
//! - no table of its own: the key is an ordinary stream, readable with the
//!   event store's tools.
//!
//! The key itself names the stream (it is bounded and printable, so no
//! digest is needed, and an operator can look a key up by name).
//! `kausal_eventsource::idempotency` keeps keys for requests whose effect
//! lies outside the store (claim, effect, complete); here the effect is an
//! append, so the key goes in the same transaction and needs no claim. Requests
//! are compared as parsed [`PostEntryRequest`]s: whitespace and field order
//! do not make a body different, a changed amount does. Only a posted
//! entry's answer (201) is stored; a refused request wrote nothing, so
//! sending its key again tries again.

use kausal_contracts::ledger::{PostEntryRequest, PostEntryResponse};
use kausal_eventsource::{Aggregate, AggregateEvent};
use serde::{Deserialize, Serialize};

/// The key's rules (1 to 255 visible ASCII characters) are
/// `kausal_eventsource`'s, shared with every API that takes one.
pub use kausal_eventsource::IdempotencyKey;

/// What a key was used for: the request and the answer given to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsed {
    pub request: PostEntryRequest,
    /// The HTTP status of the answer.
    pub status: u16,
    pub response: PostEntryResponse,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum IdempotencyEvent {
    KeyUsed(KeyUsed),
}

impl AggregateEvent for IdempotencyEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::KeyUsed(_) => "IdempotencyKeyUsed",
        }
    }
}

/// A key's stream: unused, or used once.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    pub used: Option<KeyUsed>,
}

/// A key is used once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this Idempotency-Key is already used")]
pub struct AlreadyUsed;

impl Aggregate for IdempotencyRecord {
    const TYPE: &'static str = "LedgerIdempotency";
    type Event = IdempotencyEvent;
    type Command = KeyUsed;
    type Error = AlreadyUsed;

    fn decide(&self, command: &KeyUsed) -> Result<Vec<IdempotencyEvent>, AlreadyUsed> {
        match self.used {
            Some(_) => Err(AlreadyUsed),
            None => Ok(vec![IdempotencyEvent::KeyUsed(command.clone())]),
        }
    }

    fn apply(&mut self, event: &IdempotencyEvent) {
        let IdempotencyEvent::KeyUsed(used) = event;
        self.used = Some(used.clone());
    }
}
