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

/// The window a topology covers by default, and its bounds.
const DEFAULT_WINDOW_SECONDS: u64 = 900;
const MAX_WINDOW_SECONDS: u64 = 7 * 24 * 3600;

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
    let seconds = window.window_seconds.unwrap_or(DEFAULT_WINDOW_SECONDS);
    if !(1..=MAX_WINDOW_SECONDS).contains(&seconds) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("window_seconds {seconds}: use 1 to {MAX_WINDOW_SECONDS}"),
        ));
    }
    let graph = topology::topology(&state.store, crate::now_ms(), seconds)
        .await
        .map_err(unavailable)?;
    Ok(axum::Json(graph).into_response())
}
