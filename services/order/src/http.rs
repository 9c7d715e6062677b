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
use kausal_eventsource::{Claim, IdempotencyKey, IdempotencyKeys, StoredAnswer};
use kausal_kafka::EventProducer;
use kausal_store::Store;
use kausal_telemetry::spans::{KausalSpan, attr};
use serde::{Deserialize, Serialize};

use crate::place_order;

pub use kausal_http::header::CORRELATION_ID as CORRELATION_HEADER;
use kausal_http::server::{ApiError, finish};

#[derive(Clone, Debug)]
pub struct ApiState {
    pub producer: EventProducer,
    pub store: Store,
    pub topic: String,
    /// `Idempotency-Key`s of `POST /orders` (scope `orders`).
    pub keys: IdempotencyKeys,
}

/// Set on an answer given again for a repeated `Idempotency-Key`.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

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
    kausal_http::server::serve(addr, router(state), shutdown, "order API").await
}

async fn create_order(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The server span, for every answer (a 400 too): child of the caller's
    // context, parent of the OrderPlaced `send` span, so one trace runs from
    // the HTTP request to the last consumer.
    let (server, mut span) = kausal_http::server::server_span("POST", "/orders", &headers);
    let answered = place_from_request(&state, &headers, &body, server, &mut span).await;
    finish(span, &answered, "order request");
    answered
}

/// Validates the request and publishes `OrderPlaced` under `server`; with
/// an `Idempotency-Key`, once per key (see `kausal_eventsource::idempotency`):
/// a repetition gets the first answer again, another body under the same
/// key or a repetition while the first still runs a 409.
async fn place_from_request(
    state: &ApiState,
    headers: &HeaderMap,
    body: &[u8],
    server: TraceParent,
    span: &mut KausalSpan,
) -> Result<Response, ApiError> {
    let request: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid order JSON: {e}")))?;
    let new: NewOrder = serde_json::from_value(request.clone())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid order JSON: {e}")))?;
    let correlation_id = correlation_from(headers)?;
    let Some(key) = idempotency_key_from(headers)? else {
        let (status, body) = place(state, new, correlation_id, server, span).await?;
        return Ok(placed(status, body));
    };
    let claim_correlation = correlation_id
        .clone()
        .unwrap_or_else(|| CorrelationId::adopt(kausal_kafka::ids::new_event_id()));
    let claim = state
        .keys
        .claim(&key, &request, &claim_correlation, Some(server))
        .await
        .map_err(|e| unavailable(span, "the Idempotency-Key could not be checked", &e))?;
    let claimed = match claim {
        Claim::New(claimed) => claimed,
        Claim::Replay(answer) => return Ok(replayed(answer)),
        Claim::Mismatch => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "Idempotency-Key {} was used for another order; use a new key for a new order",
                    key.as_str()
                ),
            ));
        }
        Claim::InProgress => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "an order with Idempotency-Key {} is being placed now; retry in a second to get its answer",
                    key.as_str()
                ),
            ));
        }
    };
    match place(state, new, correlation_id, server, span).await {
        Ok((status, body)) => {
            let answer = StoredAnswer {
                status: status.as_u16(),
                body: serde_json::to_value(&body).unwrap_or_default(),
            };
            if let Err(e) = state.keys.complete(claimed, answer, Some(server)).await {
                // The order is placed: say so. Until the claim times out a
                // repetition gets 409, after it the order could be placed twice.
                tracing::warn!(idempotencyKey = key.as_str(), error = %e, "the order is placed but its Idempotency-Key answer was not stored");
            }
            Ok(placed(status, body))
        }
        Err(refused) => {
            if let Err(e) = state.keys.release(claimed, Some(server)).await {
                tracing::warn!(idempotencyKey = key.as_str(), error = %e, "the Idempotency-Key of a failed order was not released; it frees itself after its timeout");
            }
            Err(refused)
        }
    }
}

/// `X-Correlation-ID`, if sent and usable.
fn correlation_from(headers: &HeaderMap) -> Result<Option<CorrelationId>, ApiError> {
    let Some(v) = headers.get(CORRELATION_HEADER) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "X-Correlation-ID is not ASCII"))?;
    text.parse::<CorrelationId>().map(Some).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("X-Correlation-ID is not usable: {e}"),
        )
    })
}

/// `Idempotency-Key`, if sent and valid.
fn idempotency_key_from(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(v) = headers.get(kausal_http::header::IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "Idempotency-Key is not ASCII"))?;
    text.parse()
        .map(Some)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))
}

/// A 503 for a store that did not answer, recorded on the span.
fn unavailable(span: &mut KausalSpan, what: &str, e: &kausal_eventsource::Error) -> ApiError {
    tracing::error!(error = %e, "{what}");
    span.fail(&e.error_type(), &e.to_string());
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{what}; retry later"),
    )
}

/// Validates and publishes one order: the answer's status and body.
async fn place(
    state: &ApiState,
    new: NewOrder,
    correlation_id: Option<CorrelationId>,
    server: TraceParent,
    span: &mut KausalSpan,
) -> Result<(StatusCode, PlacedResponse), ApiError> {
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
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
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
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the order could not be published; retry later",
            ));
        }
    };
    let correlation = event.headers.correlation_id.to_string();
    span.set_attribute(attr::CONVERSATION_ID, correlation.clone());
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
    Ok((StatusCode::CREATED, body))
}

/// The answer to a placed order, with its correlation id as a header.
fn placed(status: StatusCode, body: PlacedResponse) -> Response {
    let correlation = body.correlation_id.clone();
    let mut response = (status, axum::Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&correlation) {
        response.headers_mut().insert(CORRELATION_HEADER, v);
    }
    response
}

/// The first answer to a key, given again.
fn replayed(answer: StoredAnswer) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::CREATED);
    let correlation = answer.body["correlation_id"].as_str().map(str::to_owned);
    let mut response = (status, axum::Json(answer.body)).into_response();
    let headers = response.headers_mut();
    headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    if let Some(v) = correlation.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(CORRELATION_HEADER, v);
    }
    response
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
        Ok(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("order {id} is not known (yet)"),
        )),
        Err(e) => {
            tracing::error!(error = %e, "order view unavailable");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the order store is unavailable; retry later",
            ))
        }
    }
}
