//! OTLP in, once: the receiving path that both signals (traces, logs) and
//! both transports (OTLP/HTTP on the console's port, OTLP/gRPC on a port of
//! its own) share.
//!
//! A request is turned into rows ([`otlp`], on the blocking pool), stored in
//! one transaction, and answered with a partial success naming what was
//! refused; only then is it handed to the [`Forwarder`]. What differs
//! between traces and logs is the
//! [`Signal`] trait; what differs between the transports is how the request
//! arrives and how a [`Refused`] is said:
//!
//! | refused because | OTLP/HTTP | OTLP/gRPC |
//! |---|---|---|
//! | malformed body (protobuf, JSON, gzip) | 400 | `INVALID_ARGUMENT` |
//! | every item has invalid ids | 400 | `INVALID_ARGUMENT` |
//! | another content type or encoding | 415 / 400 | (gRPC's own) |
//! | over 8 MiB as sent, over 32 MiB decoded | 413 | `RESOURCE_EXHAUSTED` |
//! | the database is unavailable | 503 + `Retry-After` | `UNAVAILABLE` |
//!
//! Both answers to a store outage are retryable by the OTLP specification,
//! so the exporter sends again instead of dropping; the size and input
//! answers are not, since sending the same bytes again cannot help.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use kausal_store::{LogRow, SpanRow, Store, StoreError};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::server::NamedService;

use crate::forward::Forwarder;
use crate::http::{ApiError, ConsoleState};
use crate::otlp::{self, Decoded, Format, OtlpError};

/// One OTLP signal: its request and response types, its rows and where they
/// are stored.
pub trait Signal: Send + Sync + 'static {
    type Request: Message + Default + serde::de::DeserializeOwned + Send + Sync + 'static;
    type Response: Message + serde::Serialize + Send + 'static;
    type Row: Send + Sync;
    /// The OTLP/HTTP path, here and at the forwarding endpoint.
    const PATH: &'static str;
    /// The request's name in error messages.
    const WHAT: &'static str;

    fn rows(request: &Self::Request, received_at_ms: i64) -> Decoded<Self::Row>;

    fn store(
        store: &Store,
        decoded: &Decoded<Self::Row>,
        received_at_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The answer, with a partial success when `rejected` > 0.
    fn response(rejected: u64, first_rejection: Option<String>) -> Self::Response;
}

/// Spans (`ExportTraceServiceRequest`).
#[derive(Debug)]
pub enum Traces {}

/// Log records (`ExportLogsServiceRequest`).
#[derive(Debug)]
pub enum Logs {}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Signal for Traces {
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    type Row = SpanRow;
    const PATH: &'static str = "/v1/traces";
    const WHAT: &'static str = "OTLP trace export";

    fn rows(request: &Self::Request, received_at_ms: i64) -> Decoded<SpanRow> {
        otlp::span_rows(request, received_at_ms)
    }

    async fn store(
        store: &Store,
        decoded: &Decoded<SpanRow>,
        received_at_ms: i64,
    ) -> Result<(), StoreError> {
        store
            .record_telemetry(
                &decoded.rows,
                &decoded.links,
                &decoded.resources,
                &[],
                received_at_ms,
            )
            .await
            .map(drop)
    }

    fn response(rejected: u64, first_rejection: Option<String>) -> Self::Response {
        ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: clamp(rejected),
                error_message: first_rejection.unwrap_or_default(),
            }),
        }
    }
}

impl Signal for Logs {
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    type Row = LogRow;
    const PATH: &'static str = "/v1/logs";
    const WHAT: &'static str = "OTLP logs export";

    fn rows(request: &Self::Request, received_at_ms: i64) -> Decoded<LogRow> {
        otlp::log_rows(request, received_at_ms)
    }

    async fn store(
        store: &Store,
        decoded: &Decoded<LogRow>,
        received_at_ms: i64,
    ) -> Result<(), StoreError> {
        store
            .record_telemetry(&[], &[], &[], &decoded.rows, received_at_ms)
            .await
            .map(drop)
    }

    fn response(rejected: u64, first_rejection: Option<String>) -> Self::Response {
        ExportLogsServiceResponse {
            partial_success: (rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: clamp(rejected),
                error_message: first_rejection.unwrap_or_default(),
            }),
        }
    }
}

/// Why a decoded request was not taken.
#[derive(Debug)]
pub enum Refused {
    /// Nothing in it can be kept: every item has invalid ids.
    Invalid(String),
    /// The store failed; the exporter should send it again.
    Unavailable(StoreError),
}

/// Turns a request into rows on the blocking pool: the CPU-heavy half of
/// the path (protobuf decode, ids to hex, attributes to JSON text; a few
/// µs per span, tens of ms for a large request), kept off the async
/// workers so that a large request does not hold up the server's other
/// connections and the store's answers while it is decoded.
async fn off_the_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "decoding an OTLP request failed");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the request could not be decoded".to_owned(),
        )
    })
}

/// Stores what can be kept of a request (its rows) and says what was
/// refused: the one path of every OTLP request, whatever its signal or
/// transport.
pub async fn accept<S: Signal>(
    store: &Store,
    decoded: Decoded<S::Row>,
    received_at_ms: i64,
) -> Result<S::Response, Refused> {
    if decoded.rows.is_empty() && decoded.rejected > 0 {
        return Err(Refused::Invalid(
            decoded.first_rejection.unwrap_or_default(),
        ));
    }
    S::store(store, &decoded, received_at_ms).await.map_err(|e| {
        tracing::warn!(error = %e, signal = S::PATH, "console store unavailable; OTLP request refused for a retry");
        Refused::Unavailable(e)
    })?;
    Ok(S::response(decoded.rejected, decoded.first_rejection))
}

// ---- OTLP/HTTP ---------------------------------------------------------

/// `POST /v1/traces` and `POST /v1/logs`.
pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route(Traces::PATH, post(receive_http::<Traces>))
        .route(Logs::PATH, post(receive_http::<Logs>))
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

impl From<Refused> for ApiError {
    fn from(refused: Refused) -> Self {
        match refused {
            Refused::Invalid(reason) => Self(StatusCode::BAD_REQUEST, reason),
            // 503 carries Retry-After (ApiError's IntoResponse).
            Refused::Unavailable(e) => Self(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the console's database is unavailable ({e}); retry later"),
            ),
        }
    }
}

/// A body that could not be read: over the limit (413), or broken off.
fn unreadable(rejection: BytesRejection) -> ApiError {
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

async fn receive_http<S: Signal>(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(unreadable)?;
    let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let format = Format::from_content_type(text(header::CONTENT_TYPE))?;
    let encoding = text(header::CONTENT_ENCODING).map(str::to_owned);
    let received = crate::now_ms();
    let sent = body.clone();
    let decoded = off_the_runtime(move || {
        let bytes = otlp::decompress(encoding.as_deref(), &sent)?;
        let request: S::Request = otlp::decode(format, &bytes, S::WHAT)?;
        Ok::<_, OtlpError>(S::rows(&request, received))
    })
    .await??;
    let response = accept::<S>(&state.store, decoded, received).await?;
    if let Some(forward) = &state.forward {
        forward.forward_http(S::PATH, &headers, body);
    }
    let answer = match format {
        Format::Protobuf => response.encode_to_vec(),
        Format::Json => serde_json::to_vec(&response).unwrap_or_default(),
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        answer,
    )
        .into_response())
}

// ---- OTLP/gRPC ---------------------------------------------------------

/// The gRPC services' shared state.
#[derive(Debug, Clone)]
pub struct GrpcReceiver {
    store: Store,
    forward: Option<Forwarder>,
}

impl GrpcReceiver {
    pub fn new(store: Store, forward: Option<Forwarder>) -> Self {
        Self { store, forward }
    }

    async fn receive<S: Signal>(
        &self,
        request: tonic::Request<S::Request>,
    ) -> Result<tonic::Response<S::Response>, tonic::Status> {
        let previous = request
            .metadata()
            .get(crate::forward::FORWARDED_BY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let request = request.into_inner();
        let received = crate::now_ms();
        let (request, decoded) = off_the_runtime(move || {
            let decoded = S::rows(&request, received);
            (request, decoded)
        })
        .await
        .map_err(|e| tonic::Status::unknown(e.1))?;
        let response = accept::<S>(&self.store, decoded, received)
            .await
            .map_err(|refused| match refused {
                Refused::Invalid(reason) => tonic::Status::invalid_argument(reason),
                Refused::Unavailable(e) => tonic::Status::unavailable(format!(
                    "the console's database is unavailable ({e}); retry later"
                )),
            })?;
        if let Some(forward) = &self.forward {
            forward.forward_protobuf(S::PATH, previous.as_deref(), request.encoded_len(), || {
                request.encode_to_vec()
            });
        }
        Ok(tonic::Response::new(response))
    }
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.receive::<Traces>(request).await
    }
}

#[tonic::async_trait]
impl LogsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.receive::<Logs>(request).await
    }
}

/// Serves `TraceService` and `LogsService` on `listener` until `shutdown`:
/// gzip accepted, at most 8 MiB as sent (plus the 5-byte gRPC frame header)
/// and 32 MiB decoded, as over HTTP.
pub async fn serve_grpc(
    listener: tokio::net::TcpListener,
    receiver: GrpcReceiver,
    shutdown: CancellationToken,
) -> Result<(), tonic::transport::Error> {
    let traces = TraceServiceServer::new(receiver.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(otlp::MAX_DECODED_BYTES);
    let logs = LogsServiceServer::new(receiver)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(otlp::MAX_DECODED_BYTES);
    tonic::transport::Server::builder()
        .add_service(OtlpStatus(traces))
        .add_service(OtlpStatus(logs))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener),
            shutdown.cancelled_owned(),
        )
        .await
}

/// A generated service with the limits and status codes of the table
/// above. tonic decodes the request before the handler runs and says
/// `INTERNAL` for a message prost cannot decode (and for bad gzip or a
/// broken frame) and `OUT_OF_RANGE` for a frame over the limit. Both are
/// wrong for OTLP: `OUT_OF_RANGE` is retryable there (the exporter would
/// send the oversized request again and again), and a malformed request is
/// the client's fault. The handlers never answer either code themselves,
/// so every such answer is the decoder's and is rewritten:
/// `INTERNAL` → `INVALID_ARGUMENT`, `OUT_OF_RANGE` → `RESOURCE_EXHAUSTED`.
#[derive(Debug, Clone)]
struct OtlpStatus<S>(S);

impl<S: NamedService> NamedService for OtlpStatus<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tonic::codegen::Service<axum::http::Request<tonic::body::Body>> for OtlpStatus<S>
where
    S: tonic::codegen::Service<
            axum::http::Request<tonic::body::Body>,
            Response = axum::http::Response<tonic::body::Body>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = axum::http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: axum::http::Request<tonic::body::Body>) -> Self::Future {
        // The size as sent: the whole body, which is one message and its
        // 5-byte frame header for a unary call.
        let request = request.map(|body| {
            tonic::body::Body::new(
                http_body_util::Limited::new(body, otlp::MAX_BODY_BYTES + 5).map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        tonic::Status::resource_exhausted(
                            OtlpError::TooLarge {
                                limit: otlp::MAX_BODY_BYTES,
                                stage: "as sent",
                            }
                            .to_string(),
                        )
                    } else {
                        tonic::Status::from_error(e)
                    }
                }),
            )
        });
        let answer = self.0.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            let headers = response.headers_mut();
            let code = headers
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i32>().ok())
                .map(tonic::Code::from_i32);
            let rewritten = match code {
                Some(tonic::Code::Internal) => Some(tonic::Code::InvalidArgument),
                Some(tonic::Code::OutOfRange) => Some(tonic::Code::ResourceExhausted),
                _ => None,
            };
            if let Some(code) = rewritten {
                headers.insert("grpc-status", axum::http::HeaderValue::from(code as i32));
            }
            Ok(response)
        })
    }
}
