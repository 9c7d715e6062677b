//! The JSON log lines as OTLP log records too (DESIGN §2: "JSON lines on
//! stdout, and OTLP logs to the console"), when an OTLP endpoint is
//! configured. Each record is made from the same flattened fields as its
//! JSON line — so the two cannot disagree — with `traceId`/`spanId` as the
//! record's trace context, `message` as its body and every other field as
//! an attribute (`correlationId`, `eventId`, `errorType`, …). Batching and
//! export are the OpenTelemetry SDK's (`BatchLogProcessor`, the OTLP/HTTP
//! exporter on its own thread).
//!
//! Why not `opentelemetry-appender-tracing`: Kausal's trace context travels
//! in span fields (the ids the runtime made), not in an OpenTelemetry
//! `Context`, so the appender would send records without trace ids.
//!
//! Environment: `OTEL_EXPORTER_OTLP_LOGS_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (`/v1/logs` appended); only
//! `http/protobuf`; `OTEL_LOGS_EXPORTER=none` or `OTEL_SDK_DISABLED=true`
//! turns it off.

use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{BatchLogProcessor, SdkLogger, SdkLoggerProvider};
use serde_json::{Map, Value};
use tracing::Level;

use crate::fields;

/// The process's log export, once installed.
static EXPORT: OnceLock<LogExport> = OnceLock::new();

/// Targets never exported: the exporter's own stack, which would log about
/// every export it makes, and the warning that an export failed.
const OWN_STACK: [&str; 7] = [
    "opentelemetry",
    "reqwest",
    "hyper",
    "h2",
    "tower",
    "rustls",
    crate::export_retry::TARGET,
];

pub(crate) struct LogExport {
    provider: SdkLoggerProvider,
    logger: SdkLogger,
}

/// Whether the environment asks for log export over OTLP/HTTP.
fn wanted(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |k: &str| var(k).is_some_and(|v| !v.trim().is_empty());
    let is = |k: &str, v: &str| var(k).is_some_and(|x| x.trim().eq_ignore_ascii_case(v));
    if is("OTEL_SDK_DISABLED", "true") || is("OTEL_LOGS_EXPORTER", "none") {
        return false;
    }
    let protocol = var("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_default();
    (set("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
        && matches!(protocol.trim(), "" | "http/protobuf")
}

/// Installs the export for `service` if the environment asks for it.
pub(crate) fn install_from_env(service: &str) -> Option<&'static LogExport> {
    if !wanted(|k| std::env::var(k).ok()) {
        return None;
    }
    use opentelemetry_otlp::WithExportConfig;
    let exporter = match opentelemetry_otlp::LogExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("kausal: no OTLP log export: cannot build the exporter: {e}");
            return None;
        }
    };
    let mut resource = Resource::builder();
    if !std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty()) {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkLoggerProvider::builder()
        .with_resource(resource.build())
        .with_log_processor(
            BatchLogProcessor::builder(crate::export_retry::Retrying::logs(
                exporter,
                crate::export_retry::default_policy(),
            ))
            .with_batch_config(crate::export_queue::logs())
            .build(),
        )
        .build();
    let logger = provider.logger("kausal");
    Some(EXPORT.get_or_init(|| LogExport { provider, logger }))
}

/// Sends what is queued and stops the export (at the end of a service).
pub fn shutdown() {
    if let Some(export) = EXPORT.get() {
        let _ = export.provider.shutdown();
    }
}

impl LogExport {
    /// One record from a JSON line's fields.
    pub(crate) fn emit(&self, line: &Map<String, Value>, level: Level, target: &str) {
        if OWN_STACK.iter().any(|t| target.starts_with(t)) {
            return;
        }
        let mut record = self.logger.create_log_record();
        record.set_timestamp(SystemTime::now());
        record.set_severity_number(severity(level));
        record.set_severity_text(level.as_str());
        record.set_target(target.to_owned());
        if let Some(Value::String(message)) = line.get(fields::MESSAGE) {
            record.set_body(AnyValue::String(message.clone().into()));
        }
        let id = |name| line.get(name).and_then(Value::as_str);
        if let (Some(trace), Some(span)) = (id(fields::TRACE_ID), id(fields::SPAN_ID))
            && let (Ok(trace), Ok(span)) = (TraceId::from_hex(trace), SpanId::from_hex(span))
        {
            record.set_trace_context(trace, span, Some(TraceFlags::SAMPLED));
        }
        for (key, value) in line {
            if matches!(
                key.as_str(),
                fields::TIMESTAMP
                    | fields::LEVEL
                    | fields::MESSAGE
                    | fields::SERVICE
                    | fields::TARGET
            ) {
                continue;
            }
            record.add_attribute(key.clone(), any_value(value));
        }
        self.logger.emit(record);
    }
}

fn severity(level: Level) -> Severity {
    match level {
        Level::TRACE => Severity::Trace,
        Level::DEBUG => Severity::Debug,
        Level::INFO => Severity::Info,
        Level::WARN => Severity::Warn,
        Level::ERROR => Severity::Error,
    }
}

fn any_value(value: &Value) -> AnyValue {
    match value {
        Value::String(s) => AnyValue::String(s.clone().into()),
        Value::Bool(b) => AnyValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AnyValue::Int(i),
            None => AnyValue::Double(n.as_f64().unwrap_or_default()),
        },
        other => AnyValue::String(other.to_string().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::wanted;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn export_follows_the_otel_environment() {
        assert!(!wanted(env(&[])));
        assert!(wanted(env(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://c:4318"
        )])));
        assert!(wanted(env(&[(
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
            "http://c:4318/v1/logs"
        )])));
        assert!(!wanted(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_LOGS_EXPORTER", "none"),
        ])));
        assert!(!wanted(env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ])));
        assert!(
            !wanted(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ])),
            "gRPC is not offered for logs"
        );
    }
}
