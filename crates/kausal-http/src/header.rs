//! The HTTP headers services exchange (DESIGN §7), lowercase as HTTP/2
//! and `http::HeaderName` spell them.

/// W3C trace context: the caller's CLIENT span.
pub const TRACEPARENT: &str = "traceparent";
/// The business operation's correlation id.
pub const CORRELATION_ID: &str = "x-correlation-id";
/// The id of the event the caller was handling: the cause of what the
/// callee creates.
pub const CAUSATION_ID: &str = "x-causation-id";
/// The same key with the same body creates nothing new.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
