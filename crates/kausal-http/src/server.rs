//! The callee's side: serving an axum router until shutdown, the SERVER
//! span of a request, continuing the caller's `traceparent`, and the JSON
//! refusal every API answers with.

use std::net::SocketAddr;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use kausal_core::TraceParent;
use kausal_telemetry::ids;
use kausal_telemetry::spans::{self, KausalSpan, Kind, SpanStart, attr};

use crate::header;

/// Serves `app` on `addr` until `shutdown`; returns the bound address and
/// the serving task. `what` names the API in the error logged if serving
/// fails.
pub async fn serve(
    addr: SocketAddr,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    what: &'static str,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "{what} failed");
        }
    });
    Ok((bound, task))
}

/// The caller's trace context; a broken `traceparent` starts a new trace,
/// it never fails the request.
pub fn caller_context(headers: &HeaderMap) -> Option<TraceParent> {
    headers
        .get(header::TRACEPARENT)
        .and_then(|v| match TraceParent::parse_bytes(v.as_bytes()) {
            Ok(tp) => Some(tp),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an invalid traceparent header");
                None
            }
        })
}

/// The SERVER span of one request (`<method> <route>`): a child of the
/// caller's context, and its own context for whatever the request causes
/// (events, appends), carrying the sampler's decision.
pub fn server_span(
    method: &'static str,
    route: &'static str,
    headers: &HeaderMap,
) -> (TraceParent, KausalSpan) {
    let parent = caller_context(headers);
    let own = match parent {
        Some(p) => p.child(ids::new_span_id()),
        None => TraceParent::new(ids::new_trace_id(), ids::new_span_id(), true),
    };
    let span = SpanStart::new(format!("{method} {route}"), Kind::Server, own)
        .parent(parent)
        .attr(attr::HTTP_REQUEST_METHOD, method)
        .attr(attr::HTTP_ROUTE, route)
        .start();
    let own = if spans::enabled() {
        TraceParent {
            flags: u8::from(span.sampled()),
            ..own
        }
    } else {
        own
    };
    (own, span)
}

/// Seconds a caller is asked to wait after a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// An API's refusal: the status and a message for the caller, answered as
/// `{"error": …}`, with `Retry-After` on a 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            axum::Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// Ends a SERVER span with the answer's status, logging a refusal as INFO
/// (`<what> refused`). A 4xx leaves the span's status unset (the caller's
/// fault, by the semantic conventions); a 5xx was marked failed where it
/// happened.
pub fn finish(mut span: KausalSpan, answered: &Result<Response, ApiError>, what: &str) {
    let status = match answered {
        Ok(response) => response.status(),
        Err(ApiError { status, message }) => {
            tracing::info!(status = status.as_u16(), error = %message, "{what} refused");
            *status
        }
    };
    span.set_attribute(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(status.as_u16()));
    span.end();
}
