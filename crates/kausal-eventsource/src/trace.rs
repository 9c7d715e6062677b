//! One traced operation: the span exported over OTLP (built with Kausal's
//! own ids by `kausal_telemetry::spans`, as the Kafka runtime builds its
//! spans) and a `tracing` span of the same name carrying the same ids as
//! log fields (`traceId`, `spanId`), so that a log line written inside an
//! operation names the exported span. Without an installed tracer provider
//! nothing is exported, but the ids still exist: an appended event stores
//! the context of the span that appended it either way, for the outbox
//! relay to continue.

use kausal_core::TraceParent;
use kausal_telemetry::spans::{self, KausalSpan, Kind, SpanStart};

use crate::names::{attr, span};
use kausal_telemetry::ids;

/// Links one `process_batch` span carries at most (one per event's
/// appending span); a batch larger than this links its first events only.
const MAX_LINKS: usize = 64;

/// What an operation is about, for its attributes.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Subject<'a> {
    /// (aggregate type, aggregate id).
    pub aggregate: Option<(&'a str, &'a str)>,
    pub subscription: Option<&'a str>,
}

/// A running operation's spans. Ending it (or dropping it) ends both.
#[derive(Debug)]
pub(crate) struct Traced {
    own: TraceParent,
    otel: KausalSpan,
    log: tracing::Span,
}

impl Traced {
    /// Starts span `name` as a child of `parent` (a new trace when `None`),
    /// linked to `links` (at most [`MAX_LINKS`]).
    pub(crate) fn start(
        name: &'static str,
        parent: Option<TraceParent>,
        db_system: &'static str,
        subject: Subject<'_>,
        links: &[TraceParent],
    ) -> Self {
        let own = match parent {
            Some(p) => p.child(ids::new_span_id()),
            None => TraceParent::new(ids::new_trace_id(), ids::new_span_id(), true),
        };
        let (otel, own) = if spans::enabled() {
            let mut start = SpanStart::new(name, Kind::Internal, own)
                .parent(parent)
                .attr(attr::DB_SYSTEM, db_system);
            if let Some((aggregate_type, aggregate_id)) = subject.aggregate {
                start = start
                    .attr(attr::AGGREGATE_TYPE, aggregate_type.to_owned())
                    .attr(attr::AGGREGATE_ID, aggregate_id.to_owned());
            }
            if let Some(subscription) = subject.subscription {
                start = start.attr(attr::SUBSCRIPTION, subscription.to_owned());
            }
            for link in links.iter().take(MAX_LINKS) {
                start = start.link(Some(*link));
            }
            let otel = start.start();
            // Whoever continues this context (the relay, a handler) follows
            // the sampler's decision.
            let sampled = TraceParent {
                flags: u8::from(otel.sampled()),
                ..own
            };
            (otel, sampled)
        } else {
            (KausalSpan::disabled(), own)
        };
        let log = log_span(name, &own, db_system);
        if let Some((aggregate_type, aggregate_id)) = subject.aggregate {
            log.record(attr::AGGREGATE_TYPE, aggregate_type);
            log.record(attr::AGGREGATE_ID, aggregate_id);
        }
        if let Some(subscription) = subject.subscription {
            log.record(attr::SUBSCRIPTION, subscription);
        }
        Self { own, otel, log }
    }

    /// This span's own context: the parent of what runs inside it.
    pub(crate) fn context(&self) -> TraceParent {
        self.own
    }

    /// The log span, to instrument the operation's future with.
    pub(crate) fn log_span(&self) -> tracing::Span {
        self.log.clone()
    }

    pub(crate) fn set_version(&mut self, version: i64) {
        self.otel.set_attribute(attr::VERSION, version);
        self.log.record(attr::VERSION, version);
    }

    pub(crate) fn set_expected_version(&mut self, version: i64) {
        self.otel.set_attribute(attr::EXPECTED_VERSION, version);
        self.log.record(attr::EXPECTED_VERSION, version);
    }

    /// The streams of a multi-stream append: `eventsource.aggregate.type`
    /// and `eventsource.aggregate.id` as arrays, one entry per stream in
    /// the order given (comma-separated on the log span, whose fields
    /// cannot hold arrays).
    pub(crate) fn set_streams(&mut self, types: Vec<String>, ids: Vec<String>) {
        self.log.record(attr::AGGREGATE_TYPE, types.join(","));
        self.log.record(attr::AGGREGATE_ID, ids.join(","));
        self.otel
            .set_attribute(attr::AGGREGATE_TYPE, string_array(types));
        self.otel
            .set_attribute(attr::AGGREGATE_ID, string_array(ids));
    }

    /// The versions of a multi-stream append's streams after it, as an
    /// array in the order of [`set_streams`](Self::set_streams).
    pub(crate) fn set_versions(&mut self, versions: Vec<i64>) {
        let text: Vec<String> = versions.iter().map(i64::to_string).collect();
        self.log.record(attr::VERSION, text.join(","));
        self.otel.set_attribute(
            attr::VERSION,
            opentelemetry::Value::Array(opentelemetry::Array::I64(versions)),
        );
    }

    pub(crate) fn set_count(&mut self, count: usize) {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        self.otel.set_attribute(attr::EVENT_COUNT, count);
        self.log.record(attr::EVENT_COUNT, count);
    }

    /// Marks the span failed (status ERROR, `error.type`, the exception).
    pub(crate) fn fail(&mut self, error_type: &str, message: &str) {
        self.otel.fail(error_type, message);
    }

    pub(crate) fn end(self) {
        self.otel.end();
    }
}

fn string_array(values: Vec<String>) -> opentelemetry::Value {
    opentelemetry::Value::Array(opentelemetry::Array::String(
        values.into_iter().map(Into::into).collect(),
    ))
}

/// The `tracing` span of an operation: `tracing` needs each span's name as
/// a constant, hence one arm per name.
fn log_span(name: &'static str, own: &TraceParent, db_system: &'static str) -> tracing::Span {
    macro_rules! log_span {
        ($name:expr) => {
            tracing::info_span!(
                $name,
                traceId = %own.trace_id,
                spanId = %own.parent_id,
                db.system = db_system,
                eventsource.aggregate.type = tracing::field::Empty,
                eventsource.aggregate.id = tracing::field::Empty,
                eventsource.subscription.name = tracing::field::Empty,
                eventsource.version = tracing::field::Empty,
                eventsource.expected_version = tracing::field::Empty,
                eventsource.event.count = tracing::field::Empty,
            )
        };
    }
    match name {
        span::APPEND_EVENTS => log_span!(span::APPEND_EVENTS),
        span::GET_EVENTS => log_span!(span::GET_EVENTS),
        span::REPOSITORY_LOAD => log_span!(span::REPOSITORY_LOAD),
        span::REPOSITORY_SAVE => log_span!(span::REPOSITORY_SAVE),
        span::REPOSITORY_EXISTS => log_span!(span::REPOSITORY_EXISTS),
        span::POLL_BATCH => log_span!(span::POLL_BATCH),
        span::PROCESS_BATCH => log_span!(span::PROCESS_BATCH),
        span::SAVE_CHECKPOINT => log_span!(span::SAVE_CHECKPOINT),
        _ => log_span!("eventsource"),
    }
}
