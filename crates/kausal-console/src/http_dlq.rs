//! `/api/dlq…`: the dead-letter ledger over HTTP (documents in
//! [`crate::dlq`]). Reads are open like the rest of the API; replay and
//! discard demand `Authorization: Bearer <token>` and record who acted as
//! `console:<actor>` (the body's `actor`, or `console` alone).

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use kausal_lineage::replay::DEFAULT_REPLAY_CAP;
use kausal_store::DeadLetterFilter;
use serde::Deserialize;

use crate::dlq::{self, Action};
use crate::http::{ApiError, ConsoleState, bad_request, checked_id, unavailable};

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/api/dlq", get(list))
        .route("/api/dlq/stats", get(stats))
        .route("/api/dlq/replay", post(replay_matching))
        .route("/api/dlq/{id}", get(detail))
        .route("/api/dlq/{id}/replay", post(replay_one))
        .route("/api/dlq/{id}/discard", post(discard_one))
}

/// The longest actor name and discard reason kept.
const MAX_ACTOR_LEN: usize = 64;
const MAX_REASON_LEN: usize = 1_000;
/// Entries a list answers by default.
const DEFAULT_LIMIT: i64 = 50;

/// The CLI's filters (`kausal dlq list`); the `/dlq` page takes them too.
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Filters {
    /// `pending` (default), `replayed`, `discarded` or `all`.
    pub(crate) status: Option<String>,
    pub(crate) source_topic: Option<String>,
    pub(crate) error_type: Option<String>,
    pub(crate) correlation_id: Option<String>,
    pub(crate) consumer_group: Option<String>,
    /// RFC 3339 or a duration back from now (`30m`, `2h`, `7d`).
    pub(crate) since: Option<String>,
    pub(crate) limit: Option<i64>,
}

impl Filters {
    pub(crate) fn to_filter(&self, default_status: &str) -> Result<DeadLetterFilter, ApiError> {
        let status = self.status.as_deref().unwrap_or(default_status);
        if status != "all" && !dlq::STATUSES.contains(&status) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("status {status:?}: use pending, replayed, discarded or all"),
            ));
        }
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=dlq::MAX_ENTRIES).contains(&limit) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("limit {limit}: use 1 to {}", dlq::MAX_ENTRIES),
            ));
        }
        let since_ms = match &self.since {
            Some(text) => Some(
                dlq::parse_since(text, crate::now_ms())
                    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e))?,
            ),
            None => None,
        };
        let text = |v: &Option<String>| -> Result<Option<String>, ApiError> {
            v.as_deref()
                .map(|t| checked_id(t).map(str::to_owned))
                .transpose()
        };
        Ok(DeadLetterFilter {
            source_topic: text(&self.source_topic)?,
            error_type: text(&self.error_type)?,
            status: (status != "all").then(|| status.to_owned()),
            correlation_id: text(&self.correlation_id)?,
            consumer_group: text(&self.consumer_group)?,
            since_ms,
            limit: Some(limit),
        })
    }
}

async fn list(
    State(state): State<ConsoleState>,
    filters: Result<Query<Filters>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(filters) = filters.map_err(bad_request)?;
    let entries = dlq::list(&state.store, &filters.to_filter("pending")?)
        .await
        .map_err(unavailable)?;
    Ok(axum::Json(entries).into_response())
}

async fn stats(State(state): State<ConsoleState>) -> Result<Response, ApiError> {
    let stats = dlq::stats(&state.store, crate::now_ms())
        .await
        .map_err(unavailable)?;
    Ok(axum::Json(stats).into_response())
}

async fn detail(
    State(state): State<ConsoleState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(id) = id.map_err(bad_request)?;
    let id = checked_id(&id)?;
    match dlq::detail(&state.store, id).await.map_err(unavailable)? {
        Some(detail) => Ok(axum::Json(detail).into_response()),
        None => Err(not_found(id)),
    }
}

/// 404 unless the ledger has entry `id` (a bulk action reports unknown
/// ids per entry instead).
async fn ensure_exists(state: &ConsoleState, id: &str) -> Result<(), ApiError> {
    match state.store.dead_letter(id).await.map_err(unavailable)? {
        Some(_) => Ok(()),
        None => Err(not_found(id)),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        format!("no dead letter {id:?} in the ledger: see GET /api/dlq"),
    )
}

/// 401 unless the request carries the console's token.
fn authorize(state: &ConsoleState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if crate::token::authorizes(given, &state.token) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "replay and discard need Authorization: Bearer <token>; the token is printed by \
             `kausal up` and kept in <data-dir>/console-token"
                .to_owned(),
        ))
    }
}

/// `console:<actor>` as the ledger records it.
fn actor(given: Option<&str>) -> Result<String, ApiError> {
    match given.map(str::trim) {
        None | Some("") => Ok("console".to_owned()),
        Some(a) if a.len() <= MAX_ACTOR_LEN && !a.chars().any(char::is_control) => {
            Ok(format!("console:{a}"))
        }
        Some(_) => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("actor: at most {MAX_ACTOR_LEN} characters, no control characters"),
        )),
    }
}

/// A JSON body, or none at all (then every field takes its default). A
/// body that is there but not JSON is refused rather than ignored: a
/// `dry_run` in it must never be lost.
fn optional_body<T: Default + serde::de::DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body.map_err(bad_request)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("the JSON body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayOne {
    max_replays: Option<u32>,
    #[serde(default)]
    dry_run: bool,
    actor: Option<String>,
}

async fn replay_one(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let Path(id) = id.map_err(bad_request)?;
    let id = checked_id(&id)?.to_owned();
    let body: ReplayOne = optional_body(body)?;
    let by = actor(body.actor.as_deref())?;
    ensure_exists(&state, &id).await?;
    let action = Action::Replay {
        cap: body.max_replays.unwrap_or(DEFAULT_REPLAY_CAP),
    };
    run(&state, &[id], &action, &by, body.dry_run).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayMatching {
    /// Entry ids; when absent, every pending entry the filters select.
    ids: Option<Vec<String>>,
    source_topic: Option<String>,
    error_type: Option<String>,
    correlation_id: Option<String>,
    consumer_group: Option<String>,
    since: Option<String>,
    /// Most entries selected by the filters.
    limit: Option<i64>,
    max_replays: Option<u32>,
    #[serde(default)]
    dry_run: bool,
    actor: Option<String>,
}

impl ReplayMatching {
    fn filters(&self) -> Filters {
        Filters {
            status: Some("pending".to_owned()),
            source_topic: self.source_topic.clone(),
            error_type: self.error_type.clone(),
            correlation_id: self.correlation_id.clone(),
            consumer_group: self.consumer_group.clone(),
            since: self.since.clone(),
            limit: Some(self.limit.unwrap_or(dlq::MAX_ENTRIES)),
        }
    }
}

async fn replay_matching(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    body: Result<axum::Json<ReplayMatching>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let axum::Json(body) = body.map_err(bad_request)?;
    let by = actor(body.actor.as_deref())?;
    let ids = match &body.ids {
        Some(ids) => {
            if ids.len() as i64 > dlq::MAX_ENTRIES {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("at most {} ids per request", dlq::MAX_ENTRIES),
                ));
            }
            ids.iter()
                .map(|id| checked_id(id).map(str::to_owned))
                .collect::<Result<Vec<_>, _>>()?
        }
        None => dlq::pending_ids(&state.store, &body.filters().to_filter("pending")?)
            .await
            .map_err(unavailable)?,
    };
    let action = Action::Replay {
        cap: body.max_replays.unwrap_or(DEFAULT_REPLAY_CAP),
    };
    run(&state, &ids, &action, &by, body.dry_run).await
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscardOne {
    reason: String,
    #[serde(default)]
    dry_run: bool,
    actor: Option<String>,
}

async fn discard_one(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<axum::Json<DiscardOne>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let Path(id) = id.map_err(bad_request)?;
    let id = checked_id(&id)?.to_owned();
    let axum::Json(body) = body.map_err(bad_request)?;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.len() > MAX_REASON_LEN {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("reason: say why, in 1 to {MAX_REASON_LEN} characters"),
        ));
    }
    let by = actor(body.actor.as_deref())?;
    ensure_exists(&state, &id).await?;
    let action = Action::Discard {
        reason: reason.to_owned(),
    };
    run(&state, &[id], &action, &by, body.dry_run).await
}

/// Applies `action`; 200 with the report when at least one entry was done
/// (or nothing was asked), 409 when every entry was refused, 503 when the
/// ledger itself failed.
async fn run(
    state: &ConsoleState,
    ids: &[String],
    action: &Action,
    by: &str,
    dry_run: bool,
) -> Result<Response, ApiError> {
    let report = dlq::act(
        &state.store,
        state.producer.as_deref(),
        ids,
        action,
        dlq::Actor { by, dry_run },
        |_| {},
    )
    .await;
    let status = if report.done == 0 && report.refused > 0 {
        StatusCode::CONFLICT
    } else {
        StatusCode::OK
    };
    Ok((status, axum::Json(report)).into_response())
}
