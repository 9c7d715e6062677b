//! `/api/lag` and `/api/topology`: the state of the estate, beside the
//! per-correlation answers.

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::http::{ApiError, ConsoleState, bad_request, unavailable};
use crate::topology;

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/api/lag", get(lag))
        .route("/api/topology", get(topology))
}

async fn lag(State(state): State<ConsoleState>) -> Response {
    axum::Json(state.lag.document(None)).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Window {
    window_seconds: Option<u64>,
}

async fn topology(
    State(state): State<ConsoleState>,
    window: Result<Query<Window>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(window) = window.map_err(bad_request)?;
    let seconds = topology::checked_window(window.window_seconds)
        .map_err(|reason| ApiError(StatusCode::BAD_REQUEST, reason))?;
    let graph = topology::topology(&state.store, crate::now_ms(), seconds)
        .await
        .map_err(unavailable)?;
    Ok(axum::Json(graph).into_response())
}
