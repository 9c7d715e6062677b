//! The relay's error type.

/// Why a relay could not be made. (A running relay does not fail: broker
/// and database errors are logged and retried.)
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration contradicts itself; the message says what to
    /// change.
    #[error("invalid outbox relay configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
