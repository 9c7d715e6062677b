//! The console's HTTP surface (DESIGN §7): the OTLP/HTTP receiver
//! (`POST /v1/traces`, `POST /v1/logs`, from [`crate::ingest`], which also
//! says how it answers) and the read API (`/api/…`).

use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kausal_store::Store;
use serde::Deserialize;

use crate::otlp;
use crate::query;

/// What every handler needs.
#[derive(Debug, Clone)]
pub struct ConsoleState {
    pub store: Store,
    /// The bearer token of the mutating endpoints.
    pub token: std::sync::Arc<str>,
    /// Publishes replays; `None` when the console was given no Kafka.
    pub producer: Option<std::sync::Arc<kausal_kafka::EventProducer>>,
    /// The cluster the topic pages read from; `None` without Kafka.
    pub kafka: Option<kausal_kafka::KafkaConfig>,
    /// Where accepted OTLP requests are forwarded; set by [`crate::serve`].
    pub forward: Option<crate::forward::Forwarder>,
    /// The lag monitor's latest report and last hour; set by
    /// [`crate::serve`] when the console has Kafka.
    pub lag: crate::lag::LagBoard,
    /// The groups expected to receive each event type, kept a few seconds
    /// for the documents' `missing` hops.
    pub expected: crate::expected::ExpectedGroups,
}

impl ConsoleState {
    pub fn new(
        store: Store,
        config: &crate::ConsoleConfig,
    ) -> Result<Self, kausal_kafka::PublishError> {
        let producer = match &config.kafka {
            Some(kafka) => Some(std::sync::Arc::new(kausal_kafka::EventProducer::new(
                kafka,
                "kausal-console-replay",
                kausal_telemetry::Metrics::new(),
            )?)),
            None => None,
        };
        Ok(Self {
            store,
            token: config.token.as_str().into(),
            producer,
            kafka: config.kafka.clone(),
            forward: None,
            lag: crate::lag::LagBoard::unwatched(),
            expected: crate::expected::ExpectedGroups::default(),
        })
    }
}

pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .merge(crate::ingest::routes())
        .route("/api/search", get(search))
        .route("/api/correlations/{id}", get(correlation))
        .route("/api/traces/{trace_id}", get(trace))
        .merge(crate::http_dlq::routes())
        .merge(crate::http_ops::routes())
        .merge(crate::pages::routes())
        .route("/api/openapi.yaml", get(openapi))
        .route("/healthz", get(|| async { "ok" }))
        // One byte over the limit is how the receiver tells "too large".
        .layer(DefaultBodyLimit::max(otlp::MAX_BODY_BYTES + 1))
        .with_state(state)
}

/// An error answer: the status and a message saying what to do.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

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

/// A store failure: the caller should retry (ingest) or look later (reads).
pub(crate) fn unavailable(e: kausal_store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "console store unavailable");
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the console's database is unavailable ({e}); retry later"),
    )
}

/// The longest id the API looks up: every id Kausal makes is far shorter.
const MAX_ID_LEN: usize = 256;

pub(crate) fn checked_id(id: &str) -> Result<&str, ApiError> {
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
pub(crate) fn bad_request(rejection: impl std::fmt::Display) -> ApiError {
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
    match query::correlation(&state.store, &state.expected, id)
        .await
        .map_err(unavailable)?
    {
        Some(doc) => Ok(axum::Json(doc.with_lag(&state.lag)).into_response()),
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
    match query::trace(&state.store, &trace_id)
        .await
        .map_err(unavailable)?
    {
        Some(doc) => Ok(axum::Json(doc).into_response()),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no span of trace {trace_id:?} was received"),
        )),
    }
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml")],
        include_str!("../openapi.yaml"),
    )
        .into_response()
}
