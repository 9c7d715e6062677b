//! The ledger's HTTP API: `POST /v1/entries` posts a balanced entry under an
//! `Idempotency-Key`; `GET /v1/accounts/{id}` returns an account's balance
//! and version; `/openapi.yaml` describes both. Each request runs in a
//! SERVER span continuing the caller's `traceparent`, and the events it
//! appends carry the caller's `X-Correlation-ID` (generated when absent)
//! and `X-Causation-ID`. Bad input is a 4xx with a message saying what is
//! wrong, never a 500; a store that fails or stays contended is a 503 with
//! `Retry-After`.

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kausal_contracts::ledger::{
    IDEMPOTENT_REPLAYED_HEADER, MAX_BODY_BYTES, MAX_LEGS, PostEntryRequest, PostEntryResponse,
    paths,
};
use kausal_core::{CorrelationId, EventId, TraceParent};
use kausal_http::header as names;
use kausal_http::server::{ApiError, finish, server_span};
use kausal_telemetry::ids;
use kausal_telemetry::spans::{self, KausalSpan};

use crate::entry::{Entry, check_id};
use crate::idempotency::IdempotencyKey;
use crate::names::attr;
use crate::post::{Ledger, Origin, PostError, Posted};

#[derive(Clone, Debug)]
pub struct ApiState {
    pub ledger: Ledger,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(paths::ENTRIES, post(post_entry))
        .route(paths::ACCOUNT, get(get_account))
        .route(paths::OPENAPI, get(openapi))
        .with_state(state)
}

/// Serves the API until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    kausal_http::server::serve(addr, router(state), shutdown, "ledger API").await
}

async fn post_entry(
    State(state): State<ApiState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (server, mut span) = server_span("POST", paths::ENTRIES, &headers);
    let answered = post_from_request(&state, &headers, body, server, &mut span).await;
    finish(span, &answered, "entry");
    answered
}

/// Reads the headers and body, posts the entry under `server`.
async fn post_from_request(
    state: &ApiState,
    headers: &HeaderMap,
    body: Body,
    server: TraceParent,
    span: &mut KausalSpan,
) -> Result<Response, ApiError> {
    let key: IdempotencyKey = header_text(headers, names::IDEMPOTENCY_KEY, "Idempotency-Key")?
        .ok_or_else(|| {
            ApiError::bad_request(
                "the Idempotency-Key header is required: send a new unique key (a UUID) per \
                 entry, and the same key when retrying that entry",
            )
        })?
        .parse()
        .map_err(ApiError::bad_request)?;
    let correlation_id = match header_text(headers, names::CORRELATION_ID, "X-Correlation-ID")? {
        Some(text) => text
            .parse::<CorrelationId>()
            .map_err(|e| ApiError::bad_request(format!("X-Correlation-ID is not usable: {e}")))?,
        None => CorrelationId::adopt(ids::new_event_id()),
    };
    let causation_id = header_text(headers, names::CAUSATION_ID, "X-Causation-ID")?
        .map(|text| {
            text.parse::<EventId>().map_err(|e| {
                ApiError::bad_request(format!(
                    "X-Causation-ID must be the event-id (a UUID) of the event being handled: {e}"
                ))
            })
        })
        .transpose()?;
    span.set_attribute(spans::attr::CONVERSATION_ID, correlation_id.to_string());

    let body = read_body(headers, body).await?;
    let request: PostEntryRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("invalid entry JSON: {e}")))?;
    let entry = Entry::parse(&request, || ids::new_event_id().to_string())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    span.set_attribute(attr::ENTRY_ID, entry.id.clone());

    let origin = Origin {
        correlation_id,
        causation_id,
        traceparent: Some(server),
    };
    let posted = state.ledger.post(&key, &request, &entry, &origin).await;
    let (used, replayed) = match posted {
        Ok(Posted::Created(used)) => (used, false),
        Ok(Posted::Replayed(used)) => (used, true),
        Err(e) => {
            let status = match &e {
                PostError::KeyReused { .. } | PostError::AlreadyPosted(_) => StatusCode::CONFLICT,
                PostError::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
                PostError::Contended { .. } => StatusCode::SERVICE_UNAVAILABLE,
                PostError::Store(store) => {
                    tracing::error!(error = %store, "entry not posted: the event store failed");
                    span.fail(&e.error_type(), &store.to_string());
                    return Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the ledger's store is unavailable; retry later with the same \
                         Idempotency-Key",
                    ));
                }
            };
            if status.is_server_error() {
                span.fail(&e.error_type(), &e.to_string());
            }
            return Err(ApiError::new(status, e.to_string()));
        }
    };
    span.set_attribute(attr::IDEMPOTENT_REPLAY, replayed);
    tracing::info!(
        entryId = %used.response.entry_id,
        correlationId = %used.response.correlation_id,
        replayed,
        "ledger entry answered"
    );
    Ok(entry_response(&used.response, used.status, replayed))
}

/// The answer of a posted entry: the same status and body on a replay,
/// marked with `Idempotent-Replayed: true`.
fn entry_response(body: &PostEntryResponse, status: u16, replayed: bool) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED);
    let mut response = (status, axum::Json(body)).into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&body.correlation_id) {
        headers.insert(HeaderName::from_static(names::CORRELATION_ID), v);
    }
    if replayed {
        headers.insert(
            HeaderName::from_static(IDEMPOTENT_REPLAYED_HEADER),
            HeaderValue::from_static("true"),
        );
    }
    response
}

/// A header's value as text; `None` when absent.
fn header_text<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
    display: &str,
) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request(format!("{display} is not visible ASCII")))
        })
        .transpose()
}

/// The body, at most [`MAX_BODY_BYTES`]: a declared or actual larger one
/// is a 413 (checked before parsing, so a huge body costs nothing).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is larger than {MAX_BODY_BYTES} bytes: an entry has at most \
                 {MAX_LEGS} legs; split larger postings into several entries"
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            if is_length_limit(&e) {
                too_large()
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            }
        })
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(error) = source {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = error.source();
    }
    false
}

async fn get_account(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (server, mut span) = server_span("GET", paths::ACCOUNT, &headers);
    let answered = async {
        check_id("account", &id).map_err(|e| ApiError::bad_request(e.to_string()))?;
        match state.ledger.account(&id, Some(server)).await {
            Ok(Some(balance)) => Ok(axum::Json(balance).into_response()),
            Ok(None) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("account {id} has no postings: an account exists from its first entry"),
            )),
            Err(e) => {
                tracing::error!(error = %e, "account not loaded");
                span.fail(&e.error_type(), &e.to_string());
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the ledger's store is unavailable; retry later",
                ))
            }
        }
    }
    .await;
    finish(span, &answered, "account request");
    answered
}

/// The OpenAPI document of this API (`services/ledger/openapi.yaml`).
pub const OPENAPI: &str = include_str!("../openapi.yaml");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}
