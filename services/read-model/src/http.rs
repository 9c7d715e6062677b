//! The read model's HTTP API: `GET /v1/accounts/{id}` (an account's
//! projected balance), `GET /v1/accounts/{id}/statement?limit=&after=` (its
//! lines in order, a page at a time) and `/openapi.yaml`. Each request runs
//! in a SERVER span continuing the caller's `traceparent`. An unknown
//! account is a 404, a bad id or parameter a 400 saying what is wrong, a
//! failing store a 503 with `Retry-After` — never a 500.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kausal_contracts::ledger::MAX_ID_LEN;
use kausal_http::server::{ApiError, finish, server_span};
use kausal_store::{MAX_STATEMENT_PAGE, StatementLine, Store};
use kausal_telemetry::spans::KausalSpan;
use serde::{Deserialize, Serialize};

use crate::names::{attr, paths, query};

#[derive(Clone, Debug)]
pub struct ApiState {
    pub store: Store,
}

/// The body of `GET /v1/accounts/{id}/statement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementResponse {
    pub account: String,
    pub currency: String,
    /// In order of `seq`.
    pub lines: Vec<StatementLine>,
    /// The `after` of the next page; `null` after the last line.
    pub next_after: Option<i64>,
}

/// A 404 for an account the read model has no postings of.
fn unknown(account: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "account {account} has no projected postings (an account appears with its \
                 first EntryPosted)"
        ),
    )
}

/// A 503 for a store that failed, recorded on the span.
fn unavailable(span: &mut KausalSpan, e: &kausal_store::StoreError) -> ApiError {
    tracing::error!(error = %e, "read model store unavailable");
    span.fail("StoreUnavailable", &e.to_string());
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the read model's store is unavailable; retry later",
    )
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(paths::ACCOUNT, get(get_account))
        .route(paths::STATEMENT, get(get_statement))
        .route(paths::OPENAPI, get(openapi))
        .with_state(state)
}

/// Serves the API until `shutdown`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    kausal_http::server::serve(addr, router(state), shutdown, "read model API").await
}

async fn get_account(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, mut span) = server_span("GET", paths::ACCOUNT, &headers);
    let answered = async {
        check_account_id(&id)?;
        span.set_attribute(attr::ACCOUNT_ID, id.clone());
        match state.store.read_model_account(&id).await {
            Ok(Some(account)) => Ok(axum::Json(account).into_response()),
            Ok(None) => Err(unknown(&id)),
            Err(e) => Err(unavailable(&mut span, &e)),
        }
    }
    .await;
    finish(span, &answered, "account request");
    answered
}

async fn get_statement(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (_, mut span) = server_span("GET", paths::STATEMENT, &headers);
    let answered = async {
        check_account_id(&id)?;
        span.set_attribute(attr::ACCOUNT_ID, id.clone());
        let page = Page::parse(raw.as_deref())?;
        let account = match state.store.read_model_account(&id).await {
            Ok(Some(account)) => account,
            Ok(None) => return Err(unknown(&id)),
            Err(e) => return Err(unavailable(&mut span, &e)),
        };
        let read = state
            .store
            .read_model_statement(&id, page.after, page.limit)
            .await
            .map_err(|e| unavailable(&mut span, &e))?;
        Ok(axum::Json(StatementResponse {
            account: account.account,
            currency: account.currency,
            lines: read.lines,
            next_after: read.next_after,
        })
        .into_response())
    }
    .await;
    finish(span, &answered, "statement request");
    answered
}

/// An account id as the ledger accepts them: 1 to [`MAX_ID_LEN`] bytes of
/// `A-Z a-z 0-9 . _ : -`, starting with a letter or digit.
fn check_account_id(id: &str) -> Result<(), ApiError> {
    let shown: String = id.chars().take(MAX_ID_LEN + 8).collect();
    let refuse = |why: String| {
        Err(ApiError::bad_request(format!(
            "account id {shown:?}: {why}"
        )))
    };
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return refuse(format!("ids are 1 to {MAX_ID_LEN} bytes long"));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return refuse("ids start with a letter or a digit".into());
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return refuse(format!(
            "{c:?} is not allowed; use letters, digits, '.', '_', ':' and '-'"
        ));
    }
    Ok(())
}

/// The statement's query: `limit` and `after`, each at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    limit: i64,
    after: i64,
}

impl Page {
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut limit = None;
        let mut after = None;
        for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let (slot, max) = match name {
                query::LIMIT => (&mut limit, MAX_STATEMENT_PAGE),
                query::AFTER => (&mut after, i64::MAX),
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter {other:?}: the statement takes {} and {}",
                        query::LIMIT,
                        query::AFTER
                    )));
                }
            };
            if slot.is_some() {
                return Err(ApiError::bad_request(format!("{name} is given twice")));
            }
            let min = if name == query::LIMIT { 1 } else { 0 };
            let parsed = value
                .parse::<i64>()
                .ok()
                .filter(|v| (min..=max).contains(v))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{name}={value:?} is not an integer from {min} to {max}"
                    ))
                })?;
            *slot = Some(parsed);
        }
        Ok(Self {
            limit: limit.unwrap_or(query::DEFAULT_LIMIT),
            after: after.unwrap_or(0),
        })
    }
}

/// The OpenAPI document of this API (`services/read-model/openapi.yaml`).
pub const OPENAPI: &str = include_str!("../openapi.yaml");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_queries() {
        let ok = |limit, after| Ok(Page { limit, after });
        let cases: [(Option<&str>, Result<Page, &str>); 11] = [
            (None, ok(query::DEFAULT_LIMIT, 0)),
            (Some(""), ok(query::DEFAULT_LIMIT, 0)),
            (Some("limit=5"), ok(5, 0)),
            (Some("after=7&limit=500"), ok(500, 7)),
            (Some("after=0"), ok(query::DEFAULT_LIMIT, 0)),
            (
                Some("limit=501"),
                Err("limit=\"501\" is not an integer from 1 to 500"),
            ),
            (Some("limit=0"), Err("from 1 to 500")),
            (
                Some("after=-1"),
                Err("after=\"-1\" is not an integer from 0"),
            ),
            (Some("limit=ten"), Err("not an integer")),
            (Some("limit=1&limit=2"), Err("limit is given twice")),
            (Some("page=2"), Err("unknown query parameter \"page\"")),
        ];
        for (raw, want) in cases {
            match (Page::parse(raw), want) {
                (Ok(got), Ok(page)) => assert_eq!(got, page, "{raw:?}"),
                (Err(got), Err(part)) => {
                    assert_eq!(got.status, StatusCode::BAD_REQUEST, "{raw:?}");
                    assert!(got.message.contains(part), "{raw:?}: {}", got.message);
                }
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn account_ids() {
        for good in ["customer:u-1", "a", "merchant.shop_1"] {
            assert!(check_account_id(good).is_ok(), "{good}");
        }
        let long = "a".repeat(MAX_ID_LEN + 1);
        for (bad, why) in [
            ("", "1 to 64 bytes"),
            (long.as_str(), "1 to 64 bytes"),
            ("-a", "start with a letter"),
            ("a b", "' ' is not allowed"),
        ] {
            let e = check_account_id(bad).expect_err(bad);
            assert!(e.message.contains(why), "{bad}: {}", e.message);
        }
    }
}
