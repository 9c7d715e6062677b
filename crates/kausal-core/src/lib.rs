//! Pure logic of Kausal: no I/O, no async runtime, no clocks or random numbers
//! of its own. Everything here is a function over plain data so that it can be
//! tested with tables of cases.
//!
//! - [`event`]: the [`Event`] trait of typed payloads (type, version, topic,
//!   key).
//! - [`ids`]: the newtypes for event, correlation and causation ids.
//! - [`trace`]: W3C Trace Context `traceparent` parsing and formatting.
//! - [`headers`]: the Kafka header contract (DESIGN §4): names, decoding with
//!   a list of everything that was wrong, encoding.
//! - [`retry`]: the retry policy (exponential backoff with jitter).
//! - [`failure`]: how a handler failure is classified.
//! - [`dlq`]: the dead-letter header set (DESIGN §5), written and read back,
//!   Spring Kafka's `kafka_dlt-*` headers included.
//! - [`lag`]: consumer lag rules (DESIGN §7): Burrow's partition and group
//!   statuses over a window of samples, lag in seconds, retention danger.

pub mod dlq;
pub mod event;
pub mod failure;
pub mod headers;
pub mod ids;
pub mod lag;
pub mod retry;
pub mod trace;

pub use event::Event;
pub use failure::{ErrorClass, HandlerError};
pub use headers::{DecodedHeaders, EventHeaders, HeaderIssue, RawHeader};
pub use ids::{CausationId, CorrelationId, EventId, IdError};
pub use lag::{GroupStatus, LagRules, LagWindow, OffsetSample, PartitionStatus, WatermarkHistory};
pub use retry::{RetryDecision, RetryPolicy};
pub use trace::{SpanId, TraceId, TraceParent, TraceParentError};
