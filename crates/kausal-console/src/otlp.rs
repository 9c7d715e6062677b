//! OTLP/HTTP bodies in, store rows out (no I/O): decoding with the
//! `opentelemetry-proto` types (protobuf with prost, JSON with the crate's
//! serde mapping), gzip within a bound, and the mapping of spans and log
//! records to [`SpanRow`]s and [`LogRow`]s. Whatever comes from outside is
//! checked here: a bad body is an [`OtlpError`] with the reason, a span or
//! record with an invalid id is rejected alone and counted, the rest kept.
//!
//! A span's attributes, events and links are kept as protobuf (`detail`),
//! its resource once per request; a log record's attributes and non-string
//! body as JSON text (`json`). This mapping runs once per received span, so
//! it is on the ingest path's critical cost (docs/benchmarks.md, "The
//! console").

use std::borrow::Cow;
use std::io::Read;

use kausal_store::{LogRow, ResourceRow, SpanDetail, SpanLinkRow, SpanRow};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

pub(crate) use json::read_json;
use json::{Any, Attributes, json_text};

pub mod detail;
mod json;

/// The largest body accepted as sent (compressed or not).
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// The largest body accepted after gzip: a bound on what a small "gzip
/// bomb" may inflate to.
pub const MAX_DECODED_BYTES: usize = 32 << 20;

/// Span attributes that join a span to Kausal's lineage.
pub const CORRELATION_ATTRIBUTE: &str = "messaging.message.conversation_id";
pub const EVENT_ID_ATTRIBUTE: &str = "messaging.message.id";
/// Log attributes that name the correlation id: Kausal's JSON log field
/// first, then the messaging convention's.
pub const LOG_CORRELATION_ATTRIBUTES: [&str; 3] =
    ["correlationId", "correlation_id", CORRELATION_ATTRIBUTE];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OtlpError {
    #[error("unsupported content type {0:?}: send application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    #[error("unsupported content encoding {0:?}: send gzip or no encoding")]
    UnsupportedEncoding(String),
    #[error("the body is over {limit} bytes {stage}")]
    TooLarge { limit: usize, stage: &'static str },
    #[error("the body is not valid gzip: {0}")]
    Gzip(String),
    #[error("the body is not a valid {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// How a body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

impl Format {
    /// From a `Content-Type` header (parameters such as `charset` ignored).
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, OtlpError> {
        let essence = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Self::Protobuf),
            "application/json" => Ok(Self::Json),
            _ => Err(OtlpError::UnsupportedMediaType(
                content_type.unwrap_or("").to_owned(),
            )),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// The body as sent (borrowed, not copied), gunzipped when
/// `Content-Encoding: gzip`, within the bounds above.
pub fn decompress<'a>(encoding: Option<&str>, body: &'a [u8]) -> Result<Cow<'a, [u8]>, OtlpError> {
    if body.len() > MAX_BODY_BYTES {
        return Err(OtlpError::TooLarge {
            limit: MAX_BODY_BYTES,
            stage: "as sent",
        });
    }
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => Ok(Cow::Borrowed(body)),
        Some("gzip") => {
            let mut out = Vec::new();
            // One byte over the limit tells "too large" from "exactly full".
            let limit = (MAX_DECODED_BYTES + 1) as u64;
            flate2::read::MultiGzDecoder::new(body)
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| OtlpError::Gzip(e.to_string()))?;
            if out.len() > MAX_DECODED_BYTES {
                return Err(OtlpError::TooLarge {
                    limit: MAX_DECODED_BYTES,
                    stage: "after gzip",
                });
            }
            Ok(Cow::Owned(out))
        }
        Some(other) => Err(OtlpError::UnsupportedEncoding(other.to_owned())),
    }
}

/// Decodes an OTLP request of type `T` in `format`.
pub fn decode<T>(format: Format, bytes: &[u8], what: &'static str) -> Result<T, OtlpError>
where
    T: Message + Default + serde::de::DeserializeOwned,
{
    let malformed = |reason: String| OtlpError::Malformed { what, reason };
    match format {
        Format::Protobuf => T::decode(bytes).map_err(|e| malformed(e.to_string())),
        Format::Json => serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string())),
    }
}

/// Rows from one request, and what was refused.
#[derive(Debug, PartialEq)]
pub struct Decoded<R> {
    pub rows: Vec<R>,
    pub links: Vec<SpanLinkRow>,
    /// The resources the spans name, once per resource of the request.
    pub resources: Vec<ResourceRow>,
    /// How many items were refused, and the first reason.
    pub rejected: u64,
    pub first_rejection: Option<String>,
}

impl<R> Default for Decoded<R> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            links: Vec::new(),
            resources: Vec::new(),
            rejected: 0,
            first_rejection: None,
        }
    }
}

impl<R> Decoded<R> {
    fn reject(&mut self, reason: String) {
        self.rejected += 1;
        self.first_rejection.get_or_insert(reason);
    }
}

/// Spans and their links from a trace export request.
pub fn span_rows(request: &ExportTraceServiceRequest, received_at_ms: i64) -> Decoded<SpanRow> {
    let mut out = Decoded::default();
    out.rows.reserve(
        request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum(),
    );
    for resource_spans in &request.resource_spans {
        // Once per resource, shared by its spans.
        let resource = resource_spans.resource.as_ref().map(resource_row);
        let resource_id = resource.as_ref().map(|r| r.resource_id.clone());
        // A resource sent in several groups of one request is one row.
        out.resources.extend(resource.filter(|r| {
            !out.resources
                .iter()
                .any(|seen| seen.resource_id == r.resource_id)
        }));
        let service = service_name(resource_spans.resource.as_ref());
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                let (Some(trace_id), Some(span_id)) =
                    (trace_hex(&span.trace_id), span_hex(&span.span_id))
                else {
                    out.reject(format!(
                        "span {:?}: trace id must be 16 bytes and span id 8, not all zero",
                        span.name
                    ));
                    continue;
                };
                let parent_span_id = if span.parent_span_id.is_empty() {
                    None
                } else if let Some(p) = span_hex(&span.parent_span_id) {
                    Some(p)
                } else {
                    out.reject(format!(
                        "span {:?}: parent span id must be 8 bytes",
                        span.name
                    ));
                    continue;
                };
                out.links.extend(
                    detail::valid_links(span)
                        .into_iter()
                        .map(|link| SpanLinkRow {
                            trace_id: trace_id.clone(),
                            span_id: span_id.clone(),
                            linked_trace_id: link.trace_id,
                            linked_span_id: link.span_id,
                        }),
                );
                let status = span.status.as_ref();
                out.rows.push(SpanRow {
                    trace_id,
                    span_id,
                    parent_span_id,
                    name: span.name.clone(),
                    kind: span_kind(span.kind).to_owned(),
                    service: service.clone(),
                    start_ns: clamp_ns(span.start_time_unix_nano),
                    end_ns: clamp_ns(span.end_time_unix_nano),
                    status_code: status_code(status.map_or(0, |s| s.code)).to_owned(),
                    status_message: status.map(|s| s.message.clone()).filter(|m| !m.is_empty()),
                    correlation_id: string_attribute(&span.attributes, &[CORRELATION_ATTRIBUTE]),
                    event_id: string_attribute(&span.attributes, &[EVENT_ID_ATTRIBUTE]),
                    detail: SpanDetail::Otlp(detail::encode(span)),
                    resource_id: resource_id.clone(),
                    received_at_ms,
                });
            }
        }
    }
    out
}

/// Log records from a logs export request.
pub fn log_rows(request: &ExportLogsServiceRequest, received_at_ms: i64) -> Decoded<LogRow> {
    let mut out = Decoded::default();
    for resource_logs in &request.resource_logs {
        let service = service_name(resource_logs.resource.as_ref());
        for scope in &resource_logs.scope_logs {
            for record in &scope.log_records {
                // Ids are optional on a log record; present ones must be valid.
                let trace = (!record.trace_id.is_empty()).then(|| trace_hex(&record.trace_id));
                let span = (!record.span_id.is_empty()).then(|| span_hex(&record.span_id));
                if matches!(trace, Some(None)) || matches!(span, Some(None)) {
                    out.reject("log record: trace id must be 16 bytes and span id 8".to_owned());
                    continue;
                }
                let time_ns = if record.time_unix_nano != 0 {
                    record.time_unix_nano
                } else {
                    record.observed_time_unix_nano
                };
                let body = record.body.as_ref().map(|b| match &b.value {
                    Some(any_value::Value::StringValue(s)) => s.clone(),
                    _ => json_text(&Any(Some(b))),
                });
                let attributes_json = json_text(&Attributes(&record.attributes));
                let severity_text = Some(record.severity_text.clone()).filter(|s| !s.is_empty());
                let severity_number =
                    (record.severity_number != 0).then_some(i64::from(record.severity_number));
                let trace_id = trace.flatten();
                let span_id = span.flatten();
                // The record's identity: a JSON array of its content, the
                // same text for the same record in every version (retries
                // across an upgrade are still stored once).
                let identity = json_text(&(
                    &service,
                    time_ns,
                    severity_number,
                    &severity_text,
                    &body,
                    &trace_id,
                    &span_id,
                    &attributes_json,
                ));
                out.rows.push(LogRow {
                    log_id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, identity.as_bytes())
                        .to_string(),
                    time_ns: clamp_ns(time_ns),
                    severity_number,
                    severity_text,
                    service: service.clone(),
                    body,
                    trace_id,
                    span_id,
                    correlation_id: string_attribute(
                        &record.attributes,
                        &LOG_CORRELATION_ATTRIBUTES,
                    ),
                    attributes_json,
                    received_at_ms,
                });
            }
        }
    }
    out
}

/// Lowercase hex of a 16-byte trace id; `None` when malformed or all zero.
fn trace_hex(bytes: &[u8]) -> Option<String> {
    id_hex(bytes, 16)
}

/// Lowercase hex of an 8-byte span id; `None` when malformed or all zero.
fn span_hex(bytes: &[u8]) -> Option<String> {
    id_hex(bytes, 8)
}

fn id_hex(bytes: &[u8], len: usize) -> Option<String> {
    if bytes.len() != len || bytes.iter().all(|b| *b == 0) {
        return None;
    }
    // Through a buffer on the stack: one allocation, for the result.
    let mut buf = [0u8; 32];
    let hex = buf.get_mut(..2 * len)?;
    hex::encode_to_slice(bytes, hex).ok()?;
    std::str::from_utf8(hex).ok().map(str::to_owned)
}

fn clamp_ns(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

fn span_kind(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

fn status_code(code: i32) -> &'static str {
    match code {
        1 => "ok",
        2 => "error",
        _ => "unset",
    }
}

fn service_name(resource: Option<&Resource>) -> Option<String> {
    resource.and_then(|r| string_attribute(&r.attributes, &["service.name"]))
}

/// A resource as stored: its protobuf, named by a digest of it (the same
/// resource in every request is one row).
fn resource_row(resource: &Resource) -> ResourceRow {
    let bytes = resource.encode_to_vec();
    ResourceRow {
        resource_id: uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &bytes).to_string(),
        resource: bytes,
    }
}

/// The first of `names` that is a non-empty string attribute.
fn string_attribute(attributes: &[KeyValue], names: &[&str]) -> Option<String> {
    names.iter().find_map(|name| {
        attributes.iter().find(|kv| kv.key == *name).and_then(|kv| {
            match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) if !s.is_empty() => Some(s.clone()),
                _ => None,
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
        }
    }

    fn resource(service: &str) -> Option<Resource> {
        Some(Resource {
            attributes: vec![kv("service.name", service)],
            ..Resource::default()
        })
    }

    fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: resource("payment-service"),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope::default()),
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn span(trace: Vec<u8>, id: Vec<u8>) -> Span {
        Span {
            trace_id: trace,
            span_id: id,
            name: "process orders".to_owned(),
            kind: 5,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            attributes: vec![
                kv(CORRELATION_ATTRIBUTE, "corr-1"),
                kv(EVENT_ID_ATTRIBUTE, "ev-1"),
            ],
            status: Some(Status {
                code: 2,
                message: "MissingCustomerEmail".to_owned(),
            }),
            ..Span::default()
        }
    }

    #[test]
    fn a_span_keeps_its_ids_kind_status_service_and_join_keys() {
        let mut s = span(vec![0xab; 16], vec![0x01; 8]);
        s.parent_span_id = vec![0x02; 8];
        s.links = vec![span::Link {
            trace_id: vec![0xcd; 16],
            span_id: vec![0x03; 8],
            ..span::Link::default()
        }];
        let decoded = span_rows(&traces(vec![s]), 7);
        assert_eq!(decoded.rejected, 0);
        let row = &decoded.rows[0];
        assert_eq!(row.trace_id, "ab".repeat(16));
        assert_eq!(row.span_id, "01".repeat(8));
        assert_eq!(row.parent_span_id.as_deref(), Some("0202020202020202"));
        assert_eq!(
            (row.kind.as_str(), row.status_code.as_str()),
            ("consumer", "error")
        );
        assert_eq!(row.status_message.as_deref(), Some("MissingCustomerEmail"));
        assert_eq!(row.service.as_deref(), Some("payment-service"));
        assert_eq!(row.correlation_id.as_deref(), Some("corr-1"));
        assert_eq!(row.event_id.as_deref(), Some("ev-1"));
        assert_eq!(row.received_at_ms, 7);
        assert_eq!(decoded.links.len(), 1);
        assert_eq!(decoded.links[0].linked_trace_id, "cd".repeat(16));
        let links = detail::view(&row.detail).links;
        assert_eq!(links[0]["trace_id"], "cd".repeat(16));
    }

    #[test]
    fn spans_with_invalid_ids_are_rejected_alone() {
        let decoded = span_rows(
            &traces(vec![
                span(vec![0xab; 16], vec![0x01; 8]),
                span(vec![0; 16], vec![0x01; 8]),
                span(vec![0xab; 15], vec![0x01; 8]),
                span(vec![0xab; 16], vec![0x01; 9]),
            ]),
            0,
        );
        assert_eq!(decoded.rows.len(), 1);
        assert_eq!(decoded.rejected, 3);
        assert!(
            decoded
                .first_rejection
                .is_some_and(|r| r.contains("16 bytes"))
        );
    }

    #[test]
    fn protobuf_and_json_decode_to_the_same_spans() {
        let request = traces(vec![span(vec![0xab; 16], vec![0x01; 8])]);
        let from_proto: ExportTraceServiceRequest =
            decode(Format::Protobuf, &request.encode_to_vec(), "trace export").expect("proto");
        let json = serde_json::to_vec(&request).expect("json");
        let from_json: ExportTraceServiceRequest =
            decode(Format::Json, &json, "trace export").expect("json");
        assert_eq!(span_rows(&from_proto, 0), span_rows(&from_json, 0));
        assert_eq!(span_rows(&from_json, 0).rows.len(), 1);
    }

    #[test]
    fn the_otlp_json_example_decodes_and_unknown_fields_are_ignored() {
        // The shape of opentelemetry-proto's examples/trace.json, plus a
        // field no version defines.
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
          "scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0"},"spans":[{
            "traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
            "parentSpanId":"eee19b7ec3c1b173","name":"I'm a server span",
            "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000",
            "kind":2,"attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}}],
            "someFutureField":{"x":1}}]}]}]}"#;
        let request: ExportTraceServiceRequest =
            decode(Format::Json, body, "trace export").expect("decodes");
        let rows = span_rows(&request, 0).rows;
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].trace_id, "5b8efff798038103d269b633813fc60c");
        assert_eq!(rows[0].kind, "server");
        assert_eq!(rows[0].start_ns, 1_544_712_660_000_000_000);
        assert_eq!(rows[0].service.as_deref(), Some("my.service"));
    }

    #[test]
    fn bad_bodies_say_what_is_wrong() {
        let request = traces(vec![span(vec![0xab; 16], vec![0x01; 8])]);
        let bytes = request.encode_to_vec();
        let truncated = &bytes[..bytes.len() - 3];
        assert!(matches!(
            decode::<ExportTraceServiceRequest>(Format::Protobuf, truncated, "trace export"),
            Err(OtlpError::Malformed { .. })
        ));
        assert!(matches!(
            Format::from_content_type(Some("text/plain")),
            Err(OtlpError::UnsupportedMediaType(_))
        ));
        assert_eq!(
            Format::from_content_type(Some("application/json; charset=utf-8")),
            Ok(Format::Json)
        );
        assert!(matches!(
            decompress(Some("br"), b"x"),
            Err(OtlpError::UnsupportedEncoding(_))
        ));
        assert!(matches!(
            decompress(Some("gzip"), b"not gzip"),
            Err(OtlpError::Gzip(_))
        ));
        assert!(matches!(
            decompress(None, &vec![0; MAX_BODY_BYTES + 1]),
            Err(OtlpError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_decoded_limit() {
        use flate2::Compression;
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..40 {
            gz.write_all(&zeros).expect("write");
        }
        let bomb = gz.finish().expect("gzip");
        assert!(bomb.len() < 100_000, "a small body: {}", bomb.len());
        assert!(matches!(
            decompress(Some("gzip"), &bomb),
            Err(OtlpError::TooLarge {
                stage: "after gzip",
                ..
            })
        ));
        let mut ok = GzEncoder::new(Vec::new(), Compression::fast());
        ok.write_all(b"hello").expect("write");
        assert_eq!(
            *decompress(Some("GZIP"), &ok.finish().expect("gzip")).expect("ok"),
            *b"hello"
        );
        assert!(matches!(
            decompress(Some("identity"), b"as sent"),
            Ok(Cow::Borrowed(b"as sent"))
        ));
    }

    #[test]
    fn log_records_keep_trace_context_and_correlation_and_have_a_stable_id() {
        let record = LogRecord {
            time_unix_nano: 5,
            severity_number: 17,
            severity_text: "ERROR".to_owned(),
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("event failed".to_owned())),
            }),
            attributes: vec![
                kv("correlationId", "corr-9"),
                kv("errorType", "MissingCustomerEmail"),
            ],
            trace_id: vec![0xab; 16],
            span_id: vec![0x01; 8],
            ..LogRecord::default()
        };
        let bad = LogRecord {
            trace_id: vec![0xab; 3],
            ..record.clone()
        };
        let no_ids = LogRecord {
            trace_id: Vec::new(),
            span_id: Vec::new(),
            observed_time_unix_nano: 9,
            time_unix_nano: 0,
            ..record.clone()
        };
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: resource("notification-service"),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![record, bad, no_ids],
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        };
        let decoded = log_rows(&request, 3);
        assert_eq!(decoded.rejected, 1);
        let rows = &decoded.rows;
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].trace_id, Some("ab".repeat(16)));
        assert_eq!(rows[0].correlation_id.as_deref(), Some("corr-9"));
        assert_eq!(rows[0].body.as_deref(), Some("event failed"));
        assert_eq!(rows[0].service.as_deref(), Some("notification-service"));
        assert_eq!(rows[1].trace_id, None);
        assert_eq!(
            rows[1].time_ns, 9,
            "the observed time when the record has none"
        );
        assert_ne!(rows[0].log_id, rows[1].log_id);
        assert_eq!(
            log_rows(&request, 4).rows[0].log_id,
            rows[0].log_id,
            "stable across retries"
        );
    }

    /// The mapping as it was before it wrote JSON itself (through
    /// `serde_json::Value`): the text stored must stay the same, byte for
    /// byte, since the console's pages and API read it and a log record's
    /// id is a digest of it.
    mod value_oracle {
        use super::*;
        use serde_json::{Map, Value};

        pub fn attributes(attributes: &[KeyValue]) -> Map<String, Value> {
            attributes
                .iter()
                .map(|kv| {
                    let value = kv.value.as_ref().map_or(Value::Null, any_value_json);
                    (kv.key.clone(), value)
                })
                .collect()
        }

        pub fn any_value_json(value: &AnyValue) -> Value {
            match &value.value {
                None => Value::Null,
                Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
                Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
                Some(any_value::Value::IntValue(i)) => Value::from(*i),
                Some(any_value::Value::DoubleValue(d)) => {
                    serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
                }
                Some(any_value::Value::ArrayValue(a)) => {
                    Value::Array(a.values.iter().map(any_value_json).collect())
                }
                Some(any_value::Value::KvlistValue(kv)) => Value::Object(attributes(&kv.values)),
                Some(any_value::Value::BytesValue(b)) => {
                    Value::String(b.iter().map(|x| format!("{x:02x}")).collect())
                }
            }
        }

        pub fn object(kvs: &[KeyValue]) -> String {
            Value::Object(attributes(kvs)).to_string()
        }

        pub fn events(span: &Span) -> String {
            let events: Vec<Value> = span
                .events
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "name": e.name,
                        "time_ns": clamp_ns(e.time_unix_nano),
                        "attributes": attributes(&e.attributes),
                    })
                })
                .collect();
            Value::Array(events).to_string()
        }

        pub fn links(span: &Span) -> String {
            let links: Vec<Value> = span
                .links
                .iter()
                .filter_map(|link| {
                    let lt = trace_hex(&link.trace_id)?;
                    let ls = span_hex(&link.span_id)?;
                    Some(serde_json::json!({
                        "trace_id": lt,
                        "span_id": ls,
                        "attributes": attributes(&link.attributes),
                    }))
                })
                .collect();
            Value::Array(links).to_string()
        }

        pub fn log_id(service: Option<&str>, record: &LogRecord) -> String {
            let time_ns = if record.time_unix_nano != 0 {
                record.time_unix_nano
            } else {
                record.observed_time_unix_nano
            };
            let body = record.body.as_ref().map(|b| match &b.value {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                _ => any_value_json(b).to_string(),
            });
            let severity_text = Some(record.severity_text.clone()).filter(|s| !s.is_empty());
            let severity_number =
                (record.severity_number != 0).then_some(i64::from(record.severity_number));
            let trace_id = (!record.trace_id.is_empty())
                .then(|| trace_hex(&record.trace_id))
                .flatten();
            let span_id = (!record.span_id.is_empty())
                .then(|| span_hex(&record.span_id))
                .flatten();
            let identity = serde_json::json!([
                service,
                time_ns,
                severity_number,
                severity_text,
                body,
                trace_id,
                span_id,
                object(&record.attributes)
            ]);
            uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, identity.to_string().as_bytes())
                .to_string()
        }
    }

    fn value(v: any_value::Value) -> Option<AnyValue> {
        Some(AnyValue { value: Some(v) })
    }

    fn kv_of(key: &str, v: Option<AnyValue>) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: v,
        }
    }

    /// Every kind of value, keys out of order, repeated, and in need of
    /// escaping.
    fn awkward_attributes() -> Vec<KeyValue> {
        use any_value::Value as V;
        let list = |values: Vec<Option<AnyValue>>| {
            value(V::ArrayValue(
                opentelemetry_proto::tonic::common::v1::ArrayValue {
                    values: values.into_iter().map(Option::unwrap_or_default).collect(),
                },
            ))
        };
        let kvlist = |values: Vec<KeyValue>| {
            value(V::KvlistValue(
                opentelemetry_proto::tonic::common::v1::KeyValueList { values },
            ))
        };
        vec![
            kv("zeta", "last in order, first sent"),
            kv("messaging.system", "kafka"),
            kv_of("repeated", value(V::IntValue(1))),
            kv_of("int.min", value(V::IntValue(i64::MIN))),
            kv_of("int.max", value(V::IntValue(i64::MAX))),
            kv_of("bool", value(V::BoolValue(false))),
            kv_of("double", value(V::DoubleValue(0.1))),
            kv_of("double.big", value(V::DoubleValue(1e300))),
            kv_of("double.negative-zero", value(V::DoubleValue(-0.0))),
            kv_of("double.nan", value(V::DoubleValue(f64::NAN))),
            kv_of("double.inf", value(V::DoubleValue(f64::NEG_INFINITY))),
            kv_of("bytes", value(V::BytesValue(vec![0, 0xab, 0xff]))),
            kv_of("no value", None),
            kv_of("empty value", Some(AnyValue { value: None })),
            kv("escapes \"\\\n\t\u{1}", "ünïcödé ✓ \u{7f} </script>"),
            kv("Ärger", "non-ASCII key"),
            kv("", "empty key"),
            kv_of(
                "array",
                list(vec![
                    value(V::StringValue("a".into())),
                    None,
                    value(V::IntValue(-3)),
                    list(vec![value(V::BoolValue(true))]),
                ]),
            ),
            kv_of(
                "kvlist",
                kvlist(vec![
                    kv("b", "2"),
                    kv("a", "1"),
                    kv("b", "3, the last b"),
                    kv_of("nested", kvlist(vec![kv("y", "y"), kv("x", "x")])),
                ]),
            ),
            kv_of(
                "repeated",
                value(V::StringValue("the last one wins".into())),
            ),
            kv(CORRELATION_ATTRIBUTE, "corr-1"),
            kv_of("repeated", value(V::DoubleValue(2.5))),
        ]
    }

    #[test]
    fn span_detail_shows_what_a_serde_json_map_gives() {
        let mut s = span(vec![0xab; 16], vec![0x01; 8]);
        s.attributes = awkward_attributes();
        s.events = vec![
            span::Event {
                time_unix_nano: u64::MAX,
                name: "exception \"x\"".to_owned(),
                attributes: awkward_attributes(),
                ..span::Event::default()
            },
            span::Event::default(),
        ];
        s.links = vec![
            span::Link {
                trace_id: vec![0xcd; 16],
                span_id: vec![0x03; 8],
                attributes: awkward_attributes(),
                ..span::Link::default()
            },
            span::Link {
                trace_id: vec![0; 16], // dropped: a link to nothing
                span_id: vec![0x03; 8],
                ..span::Link::default()
            },
            span::Link {
                trace_id: vec![0x0e; 16],
                span_id: vec![0x04; 8],
                ..span::Link::default()
            },
        ];
        let bare = span(vec![0xab; 16], vec![0x02; 8]);
        let mut request = traces(vec![s.clone(), bare.clone()]);
        request.resource_spans[0]
            .resource
            .as_mut()
            .expect("resource")
            .attributes
            .extend(awkward_attributes());
        let resource = request.resource_spans[0]
            .resource
            .clone()
            .expect("resource");
        let mut no_resource = traces(vec![bare.clone()]);
        no_resource.resource_spans[0].resource = None;

        let decoded = span_rows(&request, 0);
        assert_eq!(decoded.rows.len(), 2);
        for (row, span) in decoded.rows.iter().zip([&s, &bare]) {
            let view = detail::view(&row.detail);
            assert_eq!(
                view.attributes.to_string(),
                value_oracle::object(&span.attributes)
            );
            assert_eq!(view.events.to_string(), value_oracle::events(span));
            assert_eq!(view.links.to_string(), value_oracle::links(span));
            assert_eq!(
                row.resource_id,
                Some(decoded.resources[0].resource_id.clone())
            );
        }
        assert_eq!(decoded.links.len(), 2);
        assert_eq!(
            decoded.resources.len(),
            1,
            "once per resource, not per span"
        );
        // As bytes: a NaN attribute is not equal to itself.
        assert_eq!(decoded.resources[0].resource, resource.encode_to_vec());
        let bare_view = detail::view(&decoded.rows[1].detail);
        assert_eq!(bare_view.events.to_string(), "[]");
        assert_eq!(bare_view.links.to_string(), "[]");
        let without = span_rows(&no_resource, 0);
        assert_eq!(
            (without.rows[0].resource_id.clone(), without.resources.len()),
            (None, 0)
        );
        // Spot checks of the oracle itself.
        let attributes = detail::view(&decoded.rows[0].detail).attributes;
        assert_eq!(attributes["repeated"], 2.5);
        assert_eq!(attributes["bytes"], "00abff");
        assert_eq!(attributes["double.nan"], serde_json::Value::Null);
        assert_eq!(attributes["kvlist"]["b"], "3, the last b");
    }

    #[test]
    fn a_resource_sent_in_two_groups_of_one_request_is_one_row() {
        let mut request = traces(vec![span(vec![0xab; 16], vec![0x01; 8])]);
        let mut second = request.resource_spans[0].clone();
        second.scope_spans[0].spans[0].span_id = vec![0x02; 8];
        request.resource_spans.push(second);
        let mut other = request.resource_spans[0].clone();
        other.resource = resource("inventory-service");
        other.scope_spans[0].spans[0].span_id = vec![0x03; 8];
        request.resource_spans.push(other);

        let decoded = span_rows(&request, 0);
        assert_eq!(
            decoded.resources.len(),
            2,
            "payment-service once, inventory-service once"
        );
        assert_eq!(decoded.rows[0].resource_id, decoded.rows[1].resource_id);
        assert_ne!(decoded.rows[0].resource_id, decoded.rows[2].resource_id);
        assert_eq!(
            decoded.rows[2].resource_id.as_deref(),
            Some(decoded.resources[1].resource_id.as_str())
        );
    }

    /// The detail is the protobuf prost writes for a `Span` holding only
    /// the three fields: the tags are right, and any OTLP reader reads it.
    #[test]
    fn span_detail_is_a_span_message_with_only_attributes_events_and_links() {
        let mut s = span(vec![0xab; 16], vec![0x01; 8]);
        s.attributes = awkward_attributes();
        s.events = vec![span::Event {
            name: "exception".to_owned(),
            attributes: awkward_attributes(),
            ..span::Event::default()
        }];
        s.links = vec![span::Link {
            trace_id: vec![0xcd; 16],
            span_id: vec![0x03; 8],
            ..span::Link::default()
        }];
        let only_detail = Span {
            attributes: s.attributes.clone(),
            events: s.events.clone(),
            links: s.links.clone(),
            ..Span::default()
        };
        assert_eq!(detail::encode(&s), only_detail.encode_to_vec());
        assert!(detail::encode(&Span::default()).is_empty());
    }

    #[test]
    fn rows_of_the_old_form_show_their_json_and_an_unreadable_detail_shows_nothing() {
        let old = kausal_store::SpanDetail::Json {
            attributes: r#"{"errorType":"MissingCustomerEmail"}"#.to_owned(),
            events: r#"[{"attributes":{},"name":"exception","time_ns":5}]"#.to_owned(),
            links: "[]".to_owned(),
        };
        let view = detail::view(&old);
        assert_eq!(view.attributes["errorType"], "MissingCustomerEmail");
        assert_eq!(view.events[0]["name"], "exception");
        assert_eq!(view.links, serde_json::json!([]));

        let broken = detail::view(&kausal_store::SpanDetail::Otlp(vec![0x4a, 0xff]));
        assert_eq!(broken.attributes, serde_json::Value::Null);
        assert_eq!(broken.links, serde_json::Value::Null);
    }

    #[test]
    fn log_columns_and_ids_are_the_same_as_through_serde_json_values() {
        use any_value::Value as V;
        let base = LogRecord {
            time_unix_nano: 5,
            severity_number: 17,
            severity_text: "ERROR".to_owned(),
            attributes: awkward_attributes(),
            trace_id: vec![0xab; 16],
            span_id: vec![0x01; 8],
            ..LogRecord::default()
        };
        let records = vec![
            LogRecord {
                body: value(V::StringValue("event failed \"quoted\"".to_owned())),
                ..base.clone()
            },
            LogRecord {
                body: value(V::KvlistValue(
                    opentelemetry_proto::tonic::common::v1::KeyValueList {
                        values: awkward_attributes(),
                    },
                )),
                ..base.clone()
            },
            LogRecord {
                body: value(V::DoubleValue(f64::NAN)),
                severity_number: 0,
                severity_text: String::new(),
                time_unix_nano: 0,
                observed_time_unix_nano: u64::MAX,
                trace_id: Vec::new(),
                span_id: Vec::new(),
                ..base.clone()
            },
            LogRecord {
                body: Some(AnyValue { value: None }),
                attributes: Vec::new(),
                ..base.clone()
            },
            LogRecord {
                body: None,
                ..base.clone()
            },
        ];
        for service in [Some("notification-service"), None] {
            let request = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: service.and_then(resource),
                    scope_logs: vec![ScopeLogs {
                        log_records: records.clone(),
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                }],
            };
            let decoded = log_rows(&request, 3);
            assert_eq!(decoded.rows.len(), records.len());
            for (row, record) in decoded.rows.iter().zip(&records) {
                assert_eq!(
                    row.attributes_json,
                    value_oracle::object(&record.attributes)
                );
                assert_eq!(
                    row.body,
                    record.body.as_ref().map(|b| match &b.value {
                        Some(V::StringValue(s)) => s.clone(),
                        _ => value_oracle::any_value_json(b).to_string(),
                    })
                );
                assert_eq!(row.log_id, value_oracle::log_id(service, record));
            }
        }
    }
}
