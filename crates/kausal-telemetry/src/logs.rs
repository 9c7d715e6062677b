//! One JSON object per line on stdout. Fields of the enclosing spans (the
//! runtime's `process` span carries `correlationId`, `traceId`, `spanId`,
//! `eventType`, `eventId`) are flattened into every line emitted inside them,
//! so a handler's own `tracing::info!` lines are correlated for free. With
//! an OTLP endpoint configured, each line also goes out as an OTLP log
//! record (`otlp_logs`).

use std::io::Write;
use std::sync::Mutex;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

use crate::fields;

/// Dependencies that log every request (tansu logs each decoded frame at
/// info): held to warnings unless `RUST_LOG` names them.
const NOISY: [&str; 13] = [
    "tansu_auth",
    "tansu_broker",
    "tansu_model",
    "tansu_sans_io",
    "tansu_schema",
    "tansu_service",
    "tansu_storage",
    "libsql",
    "sqlx",
    "rdkafka",
    "h2",
    "hyper",
    "tower",
];

/// The filter: `RUST_LOG` (default `info`), plus `<crate>=warn` for each
/// noisy dependency it does not name, so `RUST_LOG=info` shows Kausal's
/// lines, not the broker's frames, and `RUST_LOG=info,tansu_broker=debug`
/// still shows those.
fn filter(rust_log: Option<&str>) -> String {
    let user = rust_log
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("info");
    let mut directives: Vec<String> = NOISY
        .iter()
        .filter(|name| !user.contains(*name))
        .map(|name| format!("{name}=warn"))
        .collect();
    directives.push(user.to_owned());
    directives.join(",")
}

/// Installs the JSON log layer for `service` as the global subscriber, with
/// the level from `RUST_LOG`. Safe to call twice (the second call is a no-op).
pub fn init_logging(service: &str) {
    install(service, Box::new(std::io::stdout()));
}

/// Like [`init_logging`], appending the lines to `path` instead of stdout.
pub fn init_logging_to_file(service: &str, path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    install(service, Box::new(file));
    Ok(())
}

/// Lines a logging thread may queue for the writer thread before it waits
/// (it waits rather than dropping a line).
const QUEUED_LINES: usize = 64 * 1024;

/// The writer thread's guard: dropping it writes what is queued and ends
/// the thread.
static WRITER: Mutex<Option<tracing_appender::non_blocking::WorkerGuard>> = Mutex::new(None);

fn install(service: &str, out: Box<dyn Write + Send>) {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::try_new(filter(rust_log.as_deref()))
        .unwrap_or_else(|_| EnvFilter::new(filter(None)));
    // Lines go to a writer thread through a bounded queue: a slow stdout
    // (a full pipe, a slow terminal) never blocks an async worker in the
    // middle of a record, and never loses a line either (not lossy: a
    // logging thread waits when the queue is full).
    let mut kept = WRITER.lock().unwrap_or_else(|e| e.into_inner());
    if kept.is_some() {
        // Installed already: the second call is a no-op.
        return;
    }
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("kausal-log-writer")
        .finish(out);
    *kept = Some(guard);
    drop(kept);
    let mut layer = JsonLayer::new(service, Box::new(writer));
    layer.export = crate::otlp_logs::install_from_env(service);
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
}

/// Writes every queued log line and stops the writer thread. Call it last
/// (`kausal`'s `main`, the end of `Service::run`): lines logged after it are
/// not written. Calling it again does nothing.
pub fn flush_logs() {
    let guard = WRITER.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(guard);
}

/// The JSON line layer. Public so that tests can write into a buffer.
pub struct JsonLayer {
    service: String,
    out: Mutex<Box<dyn Write + Send>>,
    export: Option<&'static crate::otlp_logs::LogExport>,
}

impl std::fmt::Debug for JsonLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonLayer")
            .field("service", &self.service)
            .finish()
    }
}

impl JsonLayer {
    pub fn new(service: &str, out: Box<dyn Write + Send>) -> Self {
        Self {
            service: service.to_owned(),
            out: Mutex::new(out),
            export: None,
        }
    }
}

/// The fields recorded on a span, kept in its extensions.
struct SpanFields(Map<String, Value>);

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }
}

impl<S> Layer<S> for JsonLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut map = Map::new();
        attrs.record(&mut JsonVisitor(&mut map));
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields(map));
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            let mut ext = span.extensions_mut();
            if let Some(fields) = ext.get_mut::<SpanFields>() {
                values.record(&mut JsonVisitor(&mut fields.0));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut line = Map::new();
        line.insert(
            fields::TIMESTAMP.to_owned(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        );
        line.insert(
            fields::LEVEL.to_owned(),
            Value::String(event.metadata().level().to_string()),
        );
        line.insert(
            fields::SERVICE.to_owned(),
            Value::String(self.service.clone()),
        );
        // Outer spans first so inner ones override.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.0 {
                        line.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut own = Map::new();
        event.record(&mut JsonVisitor(&mut own));
        line.extend(own);
        line.insert(
            fields::TARGET.to_owned(),
            Value::String(event.metadata().target().to_owned()),
        );
        if let Some(export) = self.export {
            export.emit(&line, *event.metadata().level(), event.metadata().target());
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }
}

#[cfg(test)]
mod filter_tests {
    use super::filter;

    #[test]
    fn noisy_crates_stay_at_warn_unless_named() {
        let f = filter(Some("info"));
        assert!(f.contains("tansu_model=warn"), "{f}");
        assert!(f.ends_with(",info"), "{f}");
        let f = filter(Some("info,tansu_broker=debug"));
        assert!(!f.contains("tansu_broker=warn"), "{f}");
        assert!(f.contains("tansu_storage=warn"), "{f}");
        assert_eq!(filter(Some("  ")), filter(None));
        assert!(filter(None).ends_with(",info"));
    }
}
