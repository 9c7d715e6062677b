//! The console's HTTP surface (DESIGN §7): the OTLP/HTTP receiver
//! (`POST /v1/traces`, `POST /v1/logs`) and the read API (`/api/…`).
//!
//! The receiver answers as OTLP/HTTP says: 200 with an export response
//! (partial success naming what was refused) in the request's format; 400
//! with the reason for a body it cannot decode; 413 over the size limits;
//! 415 for another content type; 503 with `Retry-After` when the store
//! cannot take the rows, so the exporter retries instead of dropping them.

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kausal_store::Store;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::Deserialize;

use crate::otlp::{self, Format, OtlpError};
use crate::query;

/// What every handler needs.
#[derive(Debug, Clone)]
pub struct ConsoleState {
    pub store: Store,
    /// The bearer token of the mutating endpoints.
    pub token: std::sync::Arc<str>,
    pub kafka: Option<kausal_kafka::KafkaConfig>,
}

impl ConsoleState {
    pub fn new(store: Store, config: &crate::ConsoleConfig) -> Self {
        Self {
            store,
            token: config.token.as_str().into(),
            kafka: config.kafka.clone(),
        }
    }
}

pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/v1/traces", post(receive_traces))
        .route("/v1/logs", post(receive_logs))
        .route("/api/search", get(search))
        .route("/api/correlations/{id}", get(correlation))
        .route("/api/traces/{trace_id}", get(trace))
        .route("/api/openapi.yaml", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        // One byte over the limit is how the receiver tells "too large".
        .layer(DefaultBodyLimit::max(otlp::MAX_BODY_BYTES + 1))
        .with_state(state)
}

/// An error answer: the status and a message saying what to do.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response =
            (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

impl From<OtlpError> for ApiError {
    fn from(e: OtlpError) -> Self {
        let status = match e {
            OtlpError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            OtlpError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            OtlpError::UnsupportedEncoding(_)
            | OtlpError::Gzip(_)
            | OtlpError::Malformed { .. } => StatusCode::BAD_REQUEST,
        };
        Self(status, e.to_string())
    }
}

/// A store failure: the caller should retry (ingest) or look later (reads).
fn unavailable(e: kausal_store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "console store unavailable");
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the console's database is unavailable ({e}); retry later"),
    )
}

/// A body that could not be read: over the limit (413), or broken off.
fn too_large(rejection: BytesRejection) -> ApiError {
    let status = rejection.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        OtlpError::TooLarge {
            limit: otlp::MAX_BODY_BYTES,
            stage: "as sent",
        }
        .to_string()
    } else {
        format!("the body could not be read: {rejection}")
    };
    ApiError(status, message)
}

/// Format and decompressed bytes of an OTLP request.
fn otlp_body(headers: &HeaderMap, body: &[u8]) -> Result<(Format, Vec<u8>), ApiError> {
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let format = Format::from_content_type(text(header::CONTENT_TYPE))?;
    let bytes = otlp::decompress(text(header::CONTENT_ENCODING), body)?;
    Ok((format, bytes))
}

/// An OTLP response in the request's format.
fn otlp_answer<M: Message + serde::Serialize>(format: Format, message: &M) -> Response {
    let body = match format {
        Format::Protobuf => message.encode_to_vec(),
        Format::Json => serde_json::to_vec(message).unwrap_or_default(),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        body,
    )
        .into_response()
}

async fn receive_traces(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (format, bytes) = otlp_body(&headers, &body.map_err(too_large)?)?;
    let request: ExportTraceServiceRequest = otlp::decode(format, &bytes, "OTLP trace export")?;
    let received = crate::now_ms();
    let decoded = otlp::span_rows(&request, received);
    if decoded.rows.is_empty() && decoded.rejected > 0 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            decoded.first_rejection.unwrap_or_default(),
        ));
    }
    state
        .store
        .record_telemetry(&decoded.rows, &decoded.links, &[], received)
        .await
        .map_err(unavailable)?;
    let partial_success = (decoded.rejected > 0).then(|| ExportTracePartialSuccess {
        rejected_spans: i64::try_from(decoded.rejected).unwrap_or(i64::MAX),
        error_message: decoded.first_rejection.unwrap_or_default(),
    });
    Ok(otlp_answer(
        format,
        &ExportTraceServiceResponse { partial_success },
    ))
}

async fn receive_logs(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (format, bytes) = otlp_body(&headers, &body.map_err(too_large)?)?;
    let request: ExportLogsServiceRequest = otlp::decode(format, &bytes, "OTLP logs export")?;
    let received = crate::now_ms();
    let decoded = otlp::log_rows(&request, received);
    if decoded.rows.is_empty() && decoded.rejected > 0 {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            decoded.first_rejection.unwrap_or_default(),
        ));
    }
    state
        .store
        .record_telemetry(&[], &[], &decoded.rows, received)
        .await
        .map_err(unavailable)?;
    let partial_success = (decoded.rejected > 0).then(|| ExportLogsPartialSuccess {
        rejected_log_records: i64::try_from(decoded.rejected).unwrap_or(i64::MAX),
        error_message: decoded.first_rejection.unwrap_or_default(),
    });
    Ok(otlp_answer(
        format,
        &ExportLogsServiceResponse { partial_success },
    ))
}

/// The longest id the API looks up: every id Kausal makes is far shorter.
const MAX_ID_LEN: usize = 256;

fn checked_id(id: &str) -> Result<&str, ApiError> {
    let id = id.trim();
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("an id is 1 to {MAX_ID_LEN} characters"),
        ));
    }
    Ok(id)
}

#[derive(Debug, Deserialize)]
struct SearchQuery {
    q: String,
}

/// A query string or path that does not parse: 400 in the API's own shape.
fn bad_request(rejection: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, rejection.to_string())
}

async fn search(
    State(state): State<ConsoleState>,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_request)?;
    let q = checked_id(&query.q)?;
    let matches = query::resolve(&state.store, q).await.map_err(unavailable)?;
    Ok(axum::Json(serde_json::json!({ "query": q, "matches": matches })).into_response())
}

async fn correlation(
    State(state): State<ConsoleState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(bad_request)?;
    let id = checked_id(&id)?;
    match query::correlation(&state.store, id)
        .await
        .map_err(unavailable)?
    {
        Some(doc) => Ok(axum::Json(doc).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "nothing is recorded for correlation {id:?}: try /api/search?q= with an order, \
                 event, trace or dead-letter id"
            ),
        )),
    }
}

async fn trace(
    State(state): State<ConsoleState>,
    trace_id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(trace_id) = trace_id.map_err(bad_request)?;
    let trace_id = checked_id(&trace_id)?.to_ascii_lowercase();
    let spans = state
        .store
        .spans_for_trace(&trace_id, query::MAX_SPANS_PER_TRACE)
        .await
        .map_err(unavailable)?;
    if spans.is_empty() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no span of trace {trace_id:?} was received"),
        ));
    }
    let logs = state
        .store
        .logs_for_trace(&trace_id, query::MAX_LOGS)
        .await
        .map_err(unavailable)?;
    let linked = state
        .store
        .linked_traces(&trace_id)
        .await
        .map_err(unavailable)?;
    Ok(axum::Json(serde_json::json!({
        "trace_id": trace_id,
        "spans": spans.into_iter().map(query::SpanView::from).collect::<Vec<_>>(),
        "logs": logs.into_iter().map(query::LogView::from).collect::<Vec<_>>(),
        "linked_traces": linked,
    }))
    .into_response())
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        include_str!("../openapi.yaml"),
    )
        .into_response()
}
