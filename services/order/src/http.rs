//! The order service's HTTP API (seed 004): `POST /orders` places an order
//! inside the caller's trace and correlation; `GET /orders/{id}` returns the
//! read model. Bad input gets a 400 with a message, never a 500.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kausal_contracts::OrderPlaced;
use kausal_core::{CorrelationId, TraceParent};
use kausal_kafka::EventProducer;
use kausal_store::Store;
use kausal_telemetry::spans::{KausalSpan, Kind, SpanStart};
use serde::{Deserialize, Serialize};

use crate::place_order;

pub const CORRELATION_HEADER: &str = "x-correlation-id";

#[derive(Clone, Debug)]
pub struct ApiState {
    pub producer: EventProducer,
    pub store: Store,
    pub topic: String,
}

/// The body of `POST /orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewOrder {
    pub user_id: String,
    pub amount: f64,
    pub currency: String,
    #[serde(default)]
    pub customer_email: Option<String>,
    /// Optional; generated when absent.
    #[serde(default)]
    pub order_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PlacedResponse {
    pub order_id: String,
    pub correlation_id: String,
    pub event_id: String,
    pub trace_id: String,
}

/// An API error: the status and a message for the caller.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/orders", post(create_order))
        .route("/orders/{id}", get(get_order))
        .route("/openapi.yaml", get(openapi))
        .with_state(state)
}

/// Serves the API until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "order API failed");
        }
    });
    Ok((bound, task))
}

async fn create_order(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // A broken traceparent starts a new trace; it never fails the request.
    let parent =
        headers
            .get("traceparent")
            .and_then(|v| match TraceParent::parse_bytes(v.as_bytes()) {
                Ok(tp) => Some(tp),
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring an invalid traceparent header");
                    None
                }
            });
    // The server span, for every answer (a 400 too): child of the caller's
    // context, parent of the OrderPlaced `send` span, so one trace runs from
    // the HTTP request to the last consumer.
    let server = match parent {
        Some(p) => p.child(kausal_kafka::ids::new_span_id()),
        None => TraceParent::new(
            kausal_kafka::ids::new_trace_id(),
            kausal_kafka::ids::new_span_id(),
            true,
        ),
    };
    let mut span = SpanStart::new("POST /orders", Kind::Server, server)
        .parent(parent)
        .attr("http.request.method", "POST")
        .attr("http.route", "/orders")
        .start();
    let answered = place_from_request(&state, &headers, &body, server, &mut span).await;
    let status = match &answered {
        Ok(response) => response.status(),
        Err(ApiError(status, message)) => {
            tracing::info!(status = status.as_u16(), error = %message, "order request refused");
            *status
        }
    };
    // 4xx leaves a server span's status unset (the caller's fault, semconv);
    // a 5xx was marked failed where it happened.
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    span.end();
    answered
}

/// Validates the request and publishes `OrderPlaced` under `server`.
async fn place_from_request(
    state: &ApiState,
    headers: &HeaderMap,
    body: &[u8],
    server: TraceParent,
    span: &mut KausalSpan,
) -> Result<Response, ApiError> {
    let new: NewOrder = serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid order JSON: {e}")))?;
    let correlation_id = match headers.get(CORRELATION_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        "X-Correlation-ID is not ASCII".into(),
                    )
                })?
                .parse::<CorrelationId>()
                .map_err(|e| {
                    ApiError(
                        StatusCode::BAD_REQUEST,
                        format!("X-Correlation-ID is not usable: {e}"),
                    )
                })?,
        ),
    };
    let order = OrderPlaced {
        order_id: new
            .order_id
            .unwrap_or_else(|| crate::new_order_id(&mut rand::rng())),
        user_id: new.user_id,
        amount: new.amount,
        currency: new.currency,
        customer_email: new.customer_email,
        created_at: kausal_contracts::now_rfc3339(),
    };
    order
        .validate()
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?;
    let published = place_order(
        &state.producer,
        &state.topic,
        &order,
        correlation_id,
        Some(server),
    )
    .await;
    let event = match published {
        Ok(event) => event,
        Err(e) => {
            tracing::error!(error = %e, "order not published");
            span.fail(&e.error_type(), &e.to_string());
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the order could not be published; retry later".into(),
            ));
        }
    };
    let correlation = event.headers.correlation_id.to_string();
    span.set_attribute("messaging.message.conversation_id", correlation.clone());
    let body = PlacedResponse {
        order_id: order.order_id.clone(),
        correlation_id: correlation.clone(),
        event_id: event.headers.event_id.to_string(),
        trace_id: event
            .headers
            .traceparent
            .map(|t| t.trace_id.to_string())
            .unwrap_or_default(),
    };
    tracing::info!(orderId = %order.order_id, correlationId = %correlation, "order placed over HTTP");
    let mut response = (StatusCode::CREATED, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&correlation) {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    Ok(response)
}

/// The OpenAPI document of this API (`services/order/openapi.yaml`).
pub const OPENAPI: &str = include_str!("../openapi.yaml");

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        OPENAPI,
    )
        .into_response()
}

async fn get_order(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    match state.store.order_view(&id).await {
        Ok(Some(view)) => Ok(axum::Json(view).into_response()),
        Ok(None) => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("order {id} is not known (yet)"),
        )),
        Err(e) => {
            tracing::error!(error = %e, "order view unavailable");
            Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "the order store is unavailable; retry later".into(),
            ))
        }
    }
}
