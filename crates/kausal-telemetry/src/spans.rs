//! Spans of the telemetry contract (DESIGN §6), built with the ids Kausal
//! already made so that logs, Kafka headers and exported spans agree.
//!
//! Without an installed provider ([`crate::otel::init_tracing`],
//! [`crate::testing::SpanCapture`]) nothing is built: callers check
//! [`enabled`] before assembling attributes, and [`SpanStart::start`]
//! returns a disabled span. Attribute names live here, once.

use kausal_core::trace::TraceParent;
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue, global};

/// Semantic-convention attribute names used by Kausal.
pub mod attr {
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    pub const DESTINATION: &str = "messaging.destination.name";
    pub const PARTITION: &str = "messaging.destination.partition.id";
    pub const KEY: &str = "messaging.kafka.message.key";
    pub const OFFSET: &str = "messaging.kafka.offset";
    pub const CONSUMER_GROUP: &str = "messaging.consumer.group.name";
    pub const MESSAGE_ID: &str = "messaging.message.id";
    pub const CONVERSATION_ID: &str = "messaging.message.conversation_id";
    pub const ERROR_TYPE: &str = "error.type";
    pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
    pub const HTTP_ROUTE: &str = "http.route";
    pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
    pub const URL_FULL: &str = "url.full";
    pub const SERVER_ADDRESS: &str = "server.address";
    pub const SERVER_PORT: &str = "server.port";
    pub const RETRY_ATTEMPT: &str = "messaging.kausal.attempt";
    pub const EVENT_TYPE: &str = "messaging.kausal.event_type";
    /// Records handled by one batch span (semconv).
    pub const BATCH_MESSAGE_COUNT: &str = "messaging.batch.message_count";
}

const TRACER: &str = "kausal";

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether Kausal installed a tracer provider in this process (export or
/// capture). When not, the per-record span work is skipped entirely, and
/// producers leave the `traceparent` sampling flag as they found it.
pub fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Turns Kausal's span building on or off. [`crate::otel::init_tracing`]
/// and [`crate::testing::SpanCapture`] do this for you; call it yourself
/// after installing a global tracer provider of your own (or in a
/// benchmark).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// What a span is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Producer,
    Consumer,
    Server,
    Client,
    Internal,
}

impl Kind {
    fn otel(self) -> SpanKind {
        match self {
            Self::Producer => SpanKind::Producer,
            Self::Consumer => SpanKind::Consumer,
            Self::Server => SpanKind::Server,
            Self::Client => SpanKind::Client,
            Self::Internal => SpanKind::Internal,
        }
    }
}

fn trace_id(tp: &TraceParent) -> TraceId {
    TraceId::from_bytes(tp.trace_id.to_bytes())
}

fn span_id(id: kausal_core::trace::SpanId) -> SpanId {
    SpanId::from_bytes(id.to_bytes())
}

fn remote(tp: &TraceParent) -> SpanContext {
    SpanContext::new(
        trace_id(tp),
        span_id(tp.parent_id),
        TraceFlags::new(tp.flags),
        true,
        TraceState::default(),
    )
}

/// A span being recorded. End it with [`end`](Self::end) (dropping it
/// ends it too).
#[derive(Debug)]
pub struct KausalSpan {
    /// `None` while spans are not [`enabled`].
    span: Option<global::BoxedSpan>,
}

/// How to build one span.
#[derive(Debug)]
pub struct SpanStart {
    pub name: String,
    pub kind: Kind,
    /// The span's own context: its trace id and span id.
    pub own: TraceParent,
    /// Its parent, if any (same trace).
    pub parent: Option<TraceParent>,
    /// Contexts to link to (a consumer's producer, each message of a
    /// batch, a replay's original).
    pub links: Vec<TraceParent>,
    pub attributes: Vec<KeyValue>,
}

impl SpanStart {
    pub fn new(name: impl Into<String>, kind: Kind, own: TraceParent) -> Self {
        Self {
            name: name.into(),
            kind,
            own,
            parent: None,
            links: Vec::new(),
            attributes: Vec::new(),
        }
    }

    pub fn parent(mut self, parent: Option<TraceParent>) -> Self {
        self.parent = parent;
        self
    }

    /// Adds a link (nothing when `None`).
    pub fn link(mut self, link: Option<TraceParent>) -> Self {
        self.links.extend(link);
        self
    }

    pub fn attr(mut self, key: &'static str, value: impl Into<opentelemetry::Value>) -> Self {
        self.attributes.push(KeyValue::new(key, value));
        self
    }

    /// Starts the span now (a disabled span unless [`enabled`]).
    pub fn start(self) -> KausalSpan {
        if !enabled() {
            return KausalSpan::disabled();
        }
        let tracer = global::tracer(TRACER);
        let mut builder = tracer
            .span_builder(self.name)
            .with_kind(self.kind.otel())
            .with_trace_id(trace_id(&self.own))
            .with_span_id(span_id(self.own.parent_id))
            .with_attributes(self.attributes);
        if !self.links.is_empty() {
            builder = builder.with_links(
                self.links
                    .iter()
                    .map(|l| Link::with_context(remote(l)))
                    .collect(),
            );
        }
        let parent = match &self.parent {
            Some(p) => Context::new().with_remote_span_context(remote(p)),
            None => Context::new(),
        };
        KausalSpan {
            span: Some(builder.start_with_context(&tracer, &parent)),
        }
    }
}

impl KausalSpan {
    /// A span that records nothing (spans not [`enabled`]).
    pub fn disabled() -> Self {
        Self { span: None }
    }

    /// Adds an event (a retry, a dead-lettering) with attributes.
    pub fn event(&mut self, name: &'static str, attributes: Vec<KeyValue>) {
        if let Some(span) = &mut self.span {
            span.add_event(name, attributes);
        }
    }

    pub fn set_attribute(&mut self, key: &'static str, value: impl Into<opentelemetry::Value>) {
        if let Some(span) = &mut self.span {
            span.set_attribute(KeyValue::new(key, value));
        }
    }

    /// Marks the span failed (status ERROR, `error.type`) when the
    /// exceptions were already recorded as events.
    pub fn set_error(&mut self, error_type: &str, message: &str) {
        if let Some(span) = &mut self.span {
            span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type.to_owned()));
            span.set_status(Status::error(message.to_owned()));
        }
    }

    /// Marks the span failed and records the exception as the semantic
    /// conventions describe it.
    pub fn fail(&mut self, error_type: &str, message: &str) {
        self.event(
            "exception",
            vec![
                KeyValue::new("exception.type", error_type.to_owned()),
                KeyValue::new("exception.message", message.to_owned()),
            ],
        );
        self.set_error(error_type, message);
    }

    /// Whether the sampler chose to export this span's trace (`false` for a
    /// disabled span).
    pub fn sampled(&self) -> bool {
        self.span
            .as_ref()
            .is_some_and(|s| s.span_context().is_sampled())
    }

    pub fn end(self) {
        if let Some(mut span) = self.span {
            span.end();
        }
    }
}
