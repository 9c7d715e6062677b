//! The crate's errors: [`Error`] for everything the store, the repository
//! and subscriptions can fail with, and [`ExecuteError`] for
//! [`crate::Repository::execute`], which also returns the aggregate's own
//! refusal of a command, typed.

use kausal_core::{EventId, HandlerError};
use kausal_store::{AppendError, ExpectedVersion, GlobalCursor, StoreError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Another writer appended to the stream since it was loaded.
    #[error(
        "stream {stream} is at version {actual}, not at {expected}: another writer appended \
         first; load the aggregate again, decide again and save (Repository::execute does this \
         a bounded number of times)"
    )]
    Conflict {
        stream: String,
        expected: ExpectedVersion,
        actual: i64,
    },
    /// An event with this id is already stored.
    #[error(
        "event {event_id} is already in the event store: give every new event a new id, and do \
         not save the same decided events twice"
    )]
    DuplicateEvent { event_id: EventId },
    /// A decided event did not serialize.
    #[error("cannot write a {event_type} event of {aggregate} as JSON: {source}")]
    Encode {
        aggregate: &'static str,
        event_type: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A stored event does not deserialize into the aggregate's events.
    #[error(
        "stored event {stream} v{version} ({event_type}) does not read as an event of \
         {aggregate}: {source}; keep old event shapes readable (serde defaults, aliases) or \
         upcast them"
    )]
    Decode {
        aggregate: &'static str,
        stream: String,
        version: i64,
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    /// A subscription's handler failed; its checkpoint did not move.
    #[error(
        "subscription {subscription}'s handler failed on the events after {after}: {source}; \
         the checkpoint stays there, so the same events are handed over again on the next poll"
    )]
    Handler {
        subscription: String,
        after: GlobalCursor,
        #[source]
        source: HandlerError,
    },
    /// A multi-stream append named one stream twice; nothing was written.
    #[error(
        "stream {stream} appears twice in one append: stage each stream once, with all of its \
         events in order"
    )]
    StreamRepeated { stream: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Error {
    /// A stable name for the `error.type` span attribute.
    pub fn error_type(&self) -> String {
        match self {
            Self::Conflict { .. } => "Conflict".to_owned(),
            Self::DuplicateEvent { .. } => "DuplicateEvent".to_owned(),
            Self::Encode { .. } => "EncodeError".to_owned(),
            Self::Decode { .. } => "DecodeError".to_owned(),
            Self::Handler { source, .. } => source.error_type.clone(),
            Self::StreamRepeated { .. } => "StreamRepeated".to_owned(),
            Self::Store(_) => "StoreError".to_owned(),
        }
    }
}

impl From<AppendError> for Error {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Conflict {
                stream,
                expected,
                actual,
            } => Self::Conflict {
                stream,
                expected,
                actual,
            },
            AppendError::DuplicateEvent { event_id } => Self::DuplicateEvent { event_id },
            AppendError::StreamRepeated { stream } => Self::StreamRepeated { stream },
            AppendError::Store(e) => Self::Store(e),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why [`crate::Repository::execute`] did not apply a command.
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError<E> {
    /// The aggregate refused the command (its `decide` returned an error);
    /// nothing was written.
    #[error("command rejected: {0}")]
    Rejected(#[source] E),
    /// Loading or saving failed, or conflicts outlasted the retries.
    #[error(transparent)]
    Failed(#[from] Error),
}
