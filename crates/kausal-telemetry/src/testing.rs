//! Test helpers for service authors (seed 003's MockTracer): capture the
//! spans and the JSON log lines your code produces, in memory, and assert
//! on them in a unit test. No broker, no collector.
//!
//! ```
//! use kausal_core::trace::{SpanId, TraceId, TraceParent};
//! use kausal_telemetry::spans::{Kind, SpanStart};
//! use kausal_telemetry::testing::{LogCapture, SpanCapture};
//!
//! // Spans: install once per test binary (it is process-wide), then look
//! // only at your own trace.
//! let spans = SpanCapture::install();
//! let incoming = TraceParent::new(
//!     TraceId::from_bytes([7; 16]).expect("non-zero"),
//!     SpanId::from_bytes([1; 8]).expect("non-zero"),
//!     true,
//! );
//! let own = incoming.child(SpanId::from_bytes([2; 8]).expect("non-zero"));
//! let mut span = SpanStart::new("charge card", Kind::Internal, own)
//!     .parent(Some(incoming))
//!     .attr("payment.provider", "simulated")
//!     .start();
//! span.fail("CardDeclined", "insufficient funds");
//! span.end();
//!
//! let mine = spans.in_trace(&incoming.trace_id.to_string());
//! assert_eq!(mine.len(), 1);
//! assert_eq!(mine[0].name, "charge card");
//! assert_eq!(mine[0].parent_span_id.as_deref(), Some("0101010101010101"));
//! assert_eq!(mine[0].attribute("payment.provider").as_deref(), Some("simulated"));
//! assert_eq!(mine[0].attribute("error.type").as_deref(), Some("CardDeclined"));
//! assert!(mine[0].failed);
//! assert_eq!(mine[0].events, ["exception"]);
//!
//! // Logs: captured for the current thread while the guard lives.
//! let logs = LogCapture::start("payment-service");
//! tracing::info_span!("process", correlationId = "c-1", eventType = "OrderPlaced").in_scope(|| {
//!     tracing::warn!(attempt = 1, "handler failed; retrying");
//! });
//! let lines = logs.lines();
//! assert_eq!(lines[0]["level"], "WARN");
//! assert_eq!(lines[0]["service"], "payment-service");
//! assert_eq!(lines[0]["correlationId"], "c-1");
//! assert_eq!(lines[0]["message"], "handler failed; retrying");
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::{SpanKind, Status};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, Span, SpanData, SpanProcessor};
use tracing_subscriber::layer::SubscriberExt;

use crate::logs::JsonLayer;

/// A finished span, flattened for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedSpan {
    pub name: String,
    pub kind: SpanKind,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub attributes: BTreeMap<String, String>,
    /// Event names in order (`exception`, `retry`, …).
    pub events: Vec<String>,
    /// Links, as span ids.
    pub links: Vec<String>,
    /// Status ERROR.
    pub failed: bool,
}

impl CapturedSpan {
    pub fn attribute(&self, key: &str) -> Option<String> {
        self.attributes.get(key).cloned()
    }

    fn from_data(s: &SpanData) -> Self {
        let parent = s.parent_span_id;
        Self {
            name: s.name.to_string(),
            kind: s.span_kind.clone(),
            trace_id: s.span_context.trace_id().to_string(),
            span_id: s.span_context.span_id().to_string(),
            parent_span_id: (parent != opentelemetry::trace::SpanId::INVALID)
                .then(|| parent.to_string()),
            attributes: s
                .attributes
                .iter()
                .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                .collect(),
            events: s.events.iter().map(|e| e.name.to_string()).collect(),
            links: s
                .links
                .iter()
                .map(|l| l.span_context.span_id().to_string())
                .collect(),
            failed: matches!(s.status, Status::Error { .. }),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for Collect {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Every span ended in this process after [`install`](Self::install).
#[derive(Debug, Clone)]
pub struct SpanCapture {
    spans: Collect,
}

impl SpanCapture {
    /// Installs, once per process, an always-sampling provider that keeps
    /// spans in memory, as the global provider; later calls share it (a
    /// second provider would take the first one's spans away). Tests running
    /// in parallel therefore see each other's spans: select yours with
    /// [`in_trace`](Self::in_trace) or by an attribute of your own.
    pub fn install() -> Self {
        static SHARED: std::sync::OnceLock<Collect> = std::sync::OnceLock::new();
        let spans = SHARED
            .get_or_init(|| {
                let spans = Collect::default();
                let provider = SdkTracerProvider::builder()
                    .with_sampler(Sampler::AlwaysOn)
                    .with_span_processor(spans.clone())
                    .build();
                opentelemetry::global::set_tracer_provider(provider);
                spans
            })
            .clone();
        crate::spans::set_enabled(true);
        Self { spans }
    }

    /// All captured spans, in the order they ended.
    pub fn spans(&self) -> Vec<CapturedSpan> {
        self.spans
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(CapturedSpan::from_data)
            .collect()
    }

    /// The captured spans of one trace (lowercase hex id).
    pub fn in_trace(&self, trace_id: &str) -> Vec<CapturedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

#[derive(Debug, Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON log lines written on this thread while it lives (the same
/// layer and fields as [`crate::init_logging`]).
#[derive(Debug)]
pub struct LogCapture {
    buffer: SharedBuffer,
    _guard: tracing::subscriber::DefaultGuard,
}

impl LogCapture {
    /// Starts capturing for `service` on the current thread (all levels).
    pub fn start(service: &str) -> Self {
        let buffer = SharedBuffer::default();
        let subscriber =
            tracing_subscriber::registry().with(JsonLayer::new(service, Box::new(buffer.clone())));
        Self {
            _guard: tracing::subscriber::set_default(subscriber),
            buffer,
        }
    }

    /// The lines so far, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self
            .buffer
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}
