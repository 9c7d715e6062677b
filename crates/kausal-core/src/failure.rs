//! How a handler failure is classified: retry it within a budget, wait for
//! a dependency for as long as it is down, or dead-letter it at once.

use std::fmt;

/// Whether trying again can help, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A transient fault (a timeout, a declined dependency): retry with
    /// backoff, then dead-letter.
    Retryable,
    /// What the handler needs is down, not the message wrong (its own
    /// database, a service every record needs): retry with backoff, capped
    /// at the policy's `max_backoff`, for as long as it takes, without
    /// spending the retry budget, and never dead-letter on this account.
    /// The record's partition waits (paused, listed in the heartbeats);
    /// shutdown or a revoke abandons the wait with the record uncommitted.
    /// A message that is itself wrong must not say this: it would hold up
    /// its partition for good.
    Unavailable,
    /// The message itself is wrong (bad JSON, unknown event type): retrying
    /// cannot help, dead-letter at once.
    Fatal,
}

/// A handler's failure, with a stable `error_type` used in the `dlq-error-type`
/// header, the `error_type` metric label and the `errorType` log field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    pub class: ErrorClass,
    pub error_type: String,
    pub message: String,
}

impl HandlerError {
    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Retryable,
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// See [`ErrorClass::Unavailable`].
    pub fn unavailable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Unavailable,
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    pub fn fatal(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Fatal,
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// The payload could not be decoded as the expected type.
    pub fn bad_payload(message: impl Into<String>) -> Self {
        Self::fatal("DeserializationError", message)
    }

    /// The handler does not know this event type (or the header is missing).
    pub fn unknown_event_type(event_type: Option<&str>) -> Self {
        match event_type {
            Some(t) => Self::fatal(
                "UnknownEventType",
                format!("no handler for event type {t:?}"),
            ),
            None => Self::fatal("UnknownEventType", "the record has no event-type header"),
        }
    }

    /// The event has no correlation id and the consumer's policy is `reject`.
    pub fn missing_correlation_id() -> Self {
        Self::fatal(
            "MissingCorrelationId",
            "the record has no usable correlation-id header and the consumer rejects such events",
        )
    }

    /// Whether trying again can help ([`ErrorClass::Retryable`] or
    /// [`ErrorClass::Unavailable`]).
    pub fn is_retryable(&self) -> bool {
        self.class != ErrorClass::Fatal
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl std::error::Error for HandlerError {}
