//! HTTP between services (DESIGN §7). [`server`]: serving a router and
//! the SERVER span continuing the caller's trace. The client: a CLIENT span on the caller with
//! `traceparent`, `X-Correlation-ID` and the causing event's id injected,
//! an `Idempotency-Key` on every POST that creates something, and failures
//! classified so that a handler can hand them to the consumer runtime's
//! retry policy (`?` turns a [`CallError`] into a `HandlerError`).
//!
//! ```no_run
//! # async fn example(event: &kausal_core::trace::TraceParent) -> Result<(), kausal_core::failure::HandlerError> {
//! use kausal_http::{CallContext, HttpClient};
//!
//! let client = HttpClient::new("payment-service")?;
//! let correlation = "corr-1".parse().expect("a correlation id");
//! let context = CallContext::new(correlation).parent(Some(*event));
//! let answer = client
//!     .post_json("http://127.0.0.1:8091/v1/entries", "/v1/entries", &serde_json::json!({}), &context, Some("ord-1"))
//!     .await?;
//! # let _ = answer;
//! # Ok(())
//! # }
//! ```

mod classify;
mod client;
pub mod header;
pub mod server;

pub use classify::status_class;
pub use client::{Answer, CallContext, CallError, HttpClient, MAX_ANSWER_BYTES};
