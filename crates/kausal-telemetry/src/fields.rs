//! Log field names (DESIGN §6). Spans and events use these names verbatim:
//! `tracing` needs field names as literals, so the runtime writes e.g.
//! `correlationId = …` and this module is the reference the JSON layer and
//! the tests check against.

pub const TIMESTAMP: &str = "timestamp";
pub const LEVEL: &str = "level";
pub const SERVICE: &str = "service";
pub const MESSAGE: &str = "message";
pub const CORRELATION_ID: &str = "correlationId";
pub const TRACE_ID: &str = "traceId";
pub const SPAN_ID: &str = "spanId";
pub const EVENT_TYPE: &str = "eventType";
pub const EVENT_ID: &str = "eventId";
pub const DURATION_MS: &str = "durationMs";
pub const ERROR: &str = "error";
pub const ERROR_TYPE: &str = "errorType";
pub const TARGET: &str = "target";

/// Fields every line emitted inside a handler carries.
pub const REQUIRED_IN_HANDLER: [&str; 9] = [
    TIMESTAMP,
    LEVEL,
    SERVICE,
    MESSAGE,
    CORRELATION_ID,
    TRACE_ID,
    SPAN_ID,
    EVENT_TYPE,
    EVENT_ID,
];
