//! `Idempotency-Key` for requests whose effect is not a database write of
//! their own — `POST /orders` publishes to Kafka — so the key cannot be
//! stored in the same transaction as the effect. Each key is a stream of
//! the event store (`idempotency.<scope>-<key>`), and a request goes
//! through three steps:
//!
//! 1. [`IdempotencyKeys::claim`]: appends `Claimed` (with the request)
//!    where the stream is empty, or was released, or was claimed longer ago
//!    than the in-progress timeout (a caller that crashed mid-request). The
//!    store's optimistic concurrency makes exactly one of two concurrent
//!    requests the claimer; the other sees the claim.
//! 2. The caller produces the effect.
//! 3. [`IdempotencyKeys::complete`] appends `Completed` with the answer,
//!    or [`IdempotencyKeys::release`] appends `Released` when the effect
//!    failed, so that a retry may claim again.
//!
//! What a later request with the same key gets ([`Claim`]): the stored
//! answer if the request is the same (compared as JSON values, so key order
//! and whitespace do not matter); `Mismatch` if it differs — the caller
//! reused a key for another request; `InProgress` while the first one is
//! still running. The effect happens at most once per key unless a claimer
//! outlives the in-progress timeout (default 30 s) — then a second claimer
//! may repeat it; pick the timeout above the effect's longest duration.

use std::time::Duration;

use kausal_core::{CorrelationId, TraceParent};
use kausal_store::{Direction, ExpectedVersion, NewEvent};
use kausal_telemetry::ids;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::{EventStore, StreamName};

/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// Attempts at claiming a key before [`Claim::InProgress`] is answered
/// (each lost race re-reads the stream).
const CLAIM_ATTEMPTS: u32 = 3;

/// A key as the client sent it: 1 to [`MAX_KEY_LEN`] visible ASCII
/// characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl std::str::FromStr for IdempotencyKey {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.is_empty() || s.len() > MAX_KEY_LEN {
            return Err(format!(
                "an Idempotency-Key has 1 to {MAX_KEY_LEN} characters; this one has {}",
                s.len()
            ));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "an Idempotency-Key is visible ASCII without spaces (a UUID is a good one)"
                    .to_owned(),
            );
        }
        Ok(Self(s.to_owned()))
    }
}

impl IdempotencyKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The answer given to the request that claimed a key, given again to its
/// repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: Value,
}

/// What a request with a key may do.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// First with this key (or the first after a release or a timed-out
    /// claim): produce the effect, then complete or release.
    New(Claimed),
    /// The same request was answered before: give this answer again.
    Replay(StoredAnswer),
    /// The key was used for another request.
    Mismatch,
    /// The same request is running now: the client should retry shortly.
    InProgress,
}

/// A key held by this request.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    stream: StreamName,
    version: i64,
    request: Value,
    correlation_id: CorrelationId,
}

/// The events of a key's stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
enum KeyEvent {
    Claimed {
        request: Value,
        claimed_at_ms: i64,
    },
    Completed {
        request: Value,
        answer: StoredAnswer,
    },
    Released {
        request: Value,
    },
}

impl KeyEvent {
    fn name(&self) -> &'static str {
        match self {
            Self::Claimed { .. } => "IdempotencyKeyClaimed",
            Self::Completed { .. } => "IdempotencyKeyCompleted",
            Self::Released { .. } => "IdempotencyKeyReleased",
        }
    }
}

/// The keys of one scope (`orders`), in the event store.
#[derive(Debug, Clone)]
pub struct IdempotencyKeys {
    events: EventStore,
    scope: String,
    in_progress_timeout: Duration,
}

impl IdempotencyKeys {
    pub fn new(events: EventStore, scope: impl Into<String>) -> Self {
        Self {
            events,
            scope: scope.into(),
            in_progress_timeout: Duration::from_secs(30),
        }
    }

    /// How long a claim holds before another request may take it over.
    pub fn in_progress_timeout(mut self, timeout: Duration) -> Self {
        self.in_progress_timeout = timeout;
        self
    }

    fn stream(&self, key: &IdempotencyKey) -> StreamName {
        StreamName::new(format!("idempotency.{}", self.scope), key.as_str())
    }

    /// Claims `key` for `request`, or says why not (see [`Claim`]).
    pub async fn claim(
        &self,
        key: &IdempotencyKey,
        request: &Value,
        correlation_id: &CorrelationId,
        parent: Option<TraceParent>,
    ) -> Result<Claim> {
        let stream = self.stream(key);
        for _ in 0..CLAIM_ATTEMPTS {
            let last = self
                .events
                .get_events(&stream, i64::MAX, 1, Direction::Backward, parent)
                .await?
                .pop();
            let (expected, version) = match &last {
                None => (ExpectedVersion::NoStream, 0),
                Some(recorded) => {
                    let event: KeyEvent =
                        serde_json::from_str(&recorded.payload).map_err(|e| Error::Decode {
                            aggregate: "IdempotencyKey",
                            stream: recorded.stream_id.clone(),
                            version: recorded.stream_version,
                            event_type: recorded.event_type.clone(),
                            source: e,
                        })?;
                    let version = recorded.stream_version;
                    match event {
                        KeyEvent::Completed { request: first, .. }
                        | KeyEvent::Claimed { request: first, .. }
                        | KeyEvent::Released { request: first }
                            if first != *request =>
                        {
                            return Ok(Claim::Mismatch);
                        }
                        KeyEvent::Completed { answer, .. } => return Ok(Claim::Replay(answer)),
                        KeyEvent::Claimed { claimed_at_ms, .. }
                            if ids::now_ms().saturating_sub(claimed_at_ms)
                                < self.in_progress_timeout.as_millis() as i64 =>
                        {
                            return Ok(Claim::InProgress);
                        }
                        KeyEvent::Claimed { .. } | KeyEvent::Released { .. } => {
                            (ExpectedVersion::Exact(version), version)
                        }
                    }
                }
            };
            let claimed = KeyEvent::Claimed {
                request: request.clone(),
                claimed_at_ms: ids::now_ms(),
            };
            match self
                .append(&stream, expected, &claimed, correlation_id, parent)
                .await
            {
                Ok(()) => {
                    return Ok(Claim::New(Claimed {
                        stream,
                        version: version + 1,
                        request: request.clone(),
                        correlation_id: correlation_id.clone(),
                    }));
                }
                // Another request claimed first: look again.
                Err(Error::Conflict { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Claim::InProgress)
    }

    /// Stores `answer` for the claimed key: later requests get it again.
    pub async fn complete(
        &self,
        claimed: Claimed,
        answer: StoredAnswer,
        parent: Option<TraceParent>,
    ) -> Result<()> {
        let event = KeyEvent::Completed {
            request: claimed.request,
            answer,
        };
        self.append(
            &claimed.stream,
            ExpectedVersion::Exact(claimed.version),
            &event,
            &claimed.correlation_id,
            parent,
        )
        .await
    }

    /// Gives the key up after the effect failed: a retry may claim it.
    pub async fn release(&self, claimed: Claimed, parent: Option<TraceParent>) -> Result<()> {
        let event = KeyEvent::Released {
            request: claimed.request,
        };
        self.append(
            &claimed.stream,
            ExpectedVersion::Exact(claimed.version),
            &event,
            &claimed.correlation_id,
            parent,
        )
        .await
    }

    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        event: &KeyEvent,
        correlation_id: &CorrelationId,
        parent: Option<TraceParent>,
    ) -> Result<()> {
        let payload = serde_json::to_string(event).map_err(|e| Error::Encode {
            aggregate: "IdempotencyKey",
            event_type: event.name(),
            source: e,
        })?;
        let new = NewEvent {
            event_id: ids::new_event_id(),
            event_type: event.name().to_owned(),
            event_version: 1,
            payload,
            correlation_id: correlation_id.clone(),
            causation_id: None,
            traceparent: None,
        };
        self.events
            .append_events(stream, expected, vec![new], None, parent)
            .await
            .map(|_| ())
    }
}
