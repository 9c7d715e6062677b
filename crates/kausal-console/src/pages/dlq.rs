//! The dead letters' pages: seed 001's dashboard over the list with the
//! CLI's filters and bulk replay (`/dlq`), and one entry in full
//! (`/dlq/{id}`). Built from the documents of `GET /api/dlq/stats`,
//! `GET /api/dlq` and `GET /api/dlq/{id}` (`crate::dlq`), plus the hourly
//! trend (`crate::dlq::trend`), by pure functions: documents in, markup
//! out. Replay and discard go through the API with the token, from the
//! browser (`assets/actions.js` for one entry, `assets/dlq.js` for bulk).
//!
//! The dashboard refreshes live; the list does not: it is what the user
//! acts on (a reason being typed, a dry run's answer, a bulk replay in
//! progress), so it stays as loaded and says when the ledger changed under
//! it, with a link that reloads it.
//!
//! `dashboard` (figures, breakdowns), `trend` (the 24-hour chart), `list`
//! (filter form, bulk replay), `detail` (one entry) and `table` (dead
//! letters as rows with their actions, shared with the correlation page).

mod dashboard;
mod detail;
mod list;
mod table;
mod trend;

use std::collections::BTreeMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use percent_encoding::utf8_percent_encode;
use serde::Deserialize;

use super::layout::{self, Section};
use super::{Page, SEGMENT};
use crate::dlq::{self, DeadLetterSummary};
use crate::http::ConsoleState;
use crate::http_dlq::Filters;

pub(crate) use dashboard::render_dashboard;
pub(crate) use detail::render_detail;
pub(crate) use list::{Listed, render_list};
pub(crate) use table::{Around, action_forms, actions_cell, dead_letter_table};
pub(crate) use trend::trend_chart;

/// How often the dashboard refreshes itself.
const REFRESH_SECONDS: u32 = 10;

/// The list's query string as a form sends it: every field a string, an
/// empty one meaning "any" (a form submits its empty boxes too).
#[derive(Debug, Default, Deserialize)]
pub(super) struct ListQuery {
    status: Option<String>,
    source_topic: Option<String>,
    error_type: Option<String>,
    correlation_id: Option<String>,
    consumer_group: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    /// Anything else: named back rather than silently ignored, so that a
    /// link with a filter the ledger does not have never shows an
    /// unfiltered list as if it were filtered.
    #[serde(flatten)]
    other: BTreeMap<String, String>,
}

impl ListQuery {
    /// The API's filters (blank fields dropped), or why the query cannot
    /// be used.
    fn filters(self) -> (Filters, Result<(), String>) {
        let keep = |v: Option<String>| v.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty());
        let limit = keep(self.limit);
        let parsed = limit.as_deref().map(str::parse::<i64>).transpose();
        let filters = Filters {
            status: keep(self.status),
            source_topic: keep(self.source_topic),
            error_type: keep(self.error_type),
            correlation_id: keep(self.correlation_id),
            consumer_group: keep(self.consumer_group),
            since: keep(self.since),
            limit: parsed.clone().ok().flatten(),
        };
        let checked = match (self.other.keys().next(), parsed) {
            (Some(name), _) => Err(unknown_filter(name)),
            (None, Err(_)) => Err(format!(
                "limit {:?}: use a number from 1 to {}",
                limit.unwrap_or_default(),
                dlq::MAX_ENTRIES
            )),
            (None, Ok(_)) => Ok(()),
        };
        (filters, checked)
    }
}

/// Why the list cannot take a filter `name`.
fn unknown_filter(name: &str) -> String {
    format!(
        "{name:?} is not a filter: the ledger's list filters by status, source_topic, \
         error_type, correlation_id, consumer_group, since and limit"
    )
}

/// `/dlq`: the dashboard, then the list the query string selects.
pub(super) async fn index(
    State(state): State<ConsoleState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Response {
    let Query(query) = match query {
        Ok(q) => q,
        Err(e) => return super::bad_request(&e.body_text()).into_response(),
    };
    let (filters, limit_ok) = query.filters();
    let now_ms = crate::now_ms();
    let stats = match dlq::stats(&state.store, now_ms).await {
        Ok(s) => s,
        Err(e) => return super::unavailable(e).into_response(),
    };
    let trend = match dlq::trend(&state.store, &stats, now_ms).await {
        Ok(t) => t,
        Err(e) => return super::unavailable(e).into_response(),
    };
    let listed = match limit_ok.and_then(|()| filters.to_filter("pending").map_err(|e| e.1)) {
        Err(reason) => Err(reason),
        Ok(mut filter) => {
            let limit = filter.limit.unwrap_or(dlq::MAX_ENTRIES);
            // One more than shown says whether the list was cut.
            filter.limit = Some(limit + 1);
            match dlq::list(&state.store, &filter).await {
                Err(e) => return super::unavailable(e).into_response(),
                Ok(mut entries) => {
                    let cut = entries.len() as i64 > limit;
                    entries.truncate(limit as usize);
                    Ok(Listed {
                        entries,
                        limit,
                        cut,
                    })
                }
            }
        }
    };
    // A filter the list cannot use still shows the dashboard and the form,
    // with the reason in place of the list.
    let status = if listed.is_err() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    let main = html! {
        h1 { "Dead letters" }
        p.meta {
            "The DLQ ledger: what failed for good, and what was done about it. "
            span #live-state.live { "The figures refresh every " (REFRESH_SECONDS) " s." }
        }
        (render_dashboard(&stats, &trend))
        (render_list(&filters, &stats, &listed, &dashboard::ledger_mark(&stats, &trend)))
    };
    Page {
        status,
        body: layout::live_page("Dead letters", Section::DeadLetters, REFRESH_SECONDS, main),
    }
    .into_response()
}

/// `/dlq/{id}`: one entry in full.
pub(super) async fn detail(
    State(state): State<ConsoleState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match super::path_id(id) {
        Ok(id) => id,
        Err(page) => return page.into_response(),
    };
    let id = id.as_str();
    match dlq::detail(&state.store, id).await {
        Err(e) => super::unavailable(e).into_response(),
        Ok(None) => Page::error(
            StatusCode::NOT_FOUND,
            "No such dead letter",
            html! {
                "The ledger has no entry " code { (id) } ". "
                a href="/dlq" { "Back to the dead letters" }
                ", or search for the id as an order, correlation, event or trace id:"
            },
        )
        .into_response(),
        Ok(Some(entry)) => {
            let title = format!("Dead letter {}", super::shorten(&entry.summary.id, 40));
            let main = render_detail(&entry, crate::now_ms());
            Page::ok(layout::page(&title, Section::DeadLetters, true, main)).into_response()
        }
    }
}

/// The list's URL for `filters` (only the fields set), jumping to the list.
pub(crate) fn list_href(filters: &Filters) -> String {
    let limit = filters.limit.map(|l| l.to_string());
    let pairs = [
        ("status", filters.status.as_deref()),
        ("source_topic", filters.source_topic.as_deref()),
        ("error_type", filters.error_type.as_deref()),
        ("correlation_id", filters.correlation_id.as_deref()),
        ("consumer_group", filters.consumer_group.as_deref()),
        ("since", filters.since.as_deref()),
        ("limit", limit.as_deref()),
    ];
    let query: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| {
            Some(format!(
                "{name}={}",
                utf8_percent_encode((*value)?, SEGMENT)
            ))
        })
        .collect();
    if query.is_empty() {
        "/dlq#list".to_owned()
    } else {
        format!("/dlq?{}#list", query.join("&"))
    }
}

/// The list of the pending entries consumer group `group` gave up on: its
/// recent failures, linked from the lag and services pages.
pub(crate) fn group_failures_href(group: &str) -> String {
    list_href(&Filters {
        consumer_group: Some(group.to_owned()),
        ..Filters::default()
    })
}

/// A time in ms as `YYYY-MM-DD HH:MM:SS` (UTC): entries can be days old,
/// so the clock alone would not do.
pub(crate) fn date_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// An age in seconds as a person reads it: `45 s`, `12 min`, `3 h 5 min`,
/// `2 d 4 h`.
pub(crate) fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        s if s < 120 => format!("{s} s"),
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 48 * 3600 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `replayed by console:alice at …: reason`, for an entry that is not
/// pending.
pub(crate) fn settled(d: &DeadLetterSummary) -> String {
    let mut s = d.status.clone();
    if let Some(by) = &d.status_by {
        s.push_str(&format!(" by {by}"));
    }
    if let Some(at) = &d.status_changed_at {
        s.push_str(&format!(" at {at}"));
    }
    if let Some(r) = &d.status_reason {
        s.push_str(&format!(": {r}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> ListQuery {
        let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let Query(q) = Query::<ListQuery>::try_from_uri(
            &format!("/dlq?{}", text.join("&")).parse().expect("uri"),
        )
        .expect("query");
        q
    }

    #[test]
    fn blank_form_fields_mean_any_and_a_bad_limit_is_named() {
        let (f, ok) = query(&[
            ("status", "pending"),
            ("source_topic", "orders"),
            ("error_type", ""),
            ("since", "+2h+"),
            ("limit", ""),
        ])
        .filters();
        assert_eq!(ok, Ok(()));
        assert_eq!(f.source_topic.as_deref(), Some("orders"));
        assert_eq!(f.error_type, None);
        assert_eq!(f.since.as_deref(), Some("2h"), "trimmed");
        assert_eq!(f.limit, None);
        let (f, ok) = query(&[("limit", "ten")]).filters();
        assert_eq!(f.limit, None);
        assert_eq!(
            ok,
            Err("limit \"ten\": use a number from 1 to 10000".to_owned())
        );
        let (f, _) = query(&[("limit", "20")]).filters();
        assert_eq!(f.limit, Some(20));
        let (f, ok) = query(&[("consumer_group", "payment-service")]).filters();
        assert_eq!(ok, Ok(()));
        assert_eq!(f.consumer_group.as_deref(), Some("payment-service"));
        // A filter the ledger does not have is named, not ignored.
        let (_, ok) = query(&[("topic", "orders")]).filters();
        assert_eq!(
            ok,
            Err(
                "\"topic\" is not a filter: the ledger's list filters by status, source_topic, \
                 error_type, correlation_id, consumer_group, since and limit"
                    .to_owned()
            )
        );
    }

    #[test]
    fn list_links_carry_only_the_fields_set_percent_encoded() {
        assert_eq!(list_href(&Filters::default()), "/dlq#list");
        let f = Filters {
            source_topic: Some("orders".into()),
            error_type: Some("a b/c&d".into()),
            limit: Some(20),
            ..Filters::default()
        };
        assert_eq!(
            list_href(&f),
            "/dlq?source_topic=orders&error_type=a%20b%2Fc%26d&limit=20#list"
        );
    }

    #[test]
    fn ages_read_like_a_person_says_them() {
        assert_eq!(age(-3), "0 s");
        assert_eq!(age(45), "45 s");
        assert_eq!(age(12 * 60 + 5), "12 min");
        assert_eq!(age(3 * 3600 + 5 * 60), "3 h 5 min");
        assert_eq!(age(2 * 86_400 + 4 * 3600), "2 d 4 h");
        assert_eq!(date_time(1_700_000_000_100), "2023-11-14 22:13:20");
    }

    fn ledger_entry(id: &str, topic: &str, failed_at_ms: i64) -> kausal_store::DeadLetterEntry {
        kausal_store::DeadLetterEntry {
            dlq_id: id.into(),
            dlq_topic: format!("{topic}.dlq"),
            dlq_partition: 0,
            dlq_offset: 1,
            event_id: format!("ev-{id}"),
            correlation_id: Some(format!("corr-{id}")),
            event_type: Some("OrderPlaced".into()),
            source_topic: topic.into(),
            source_partition: Some(0),
            source_offset: Some(3),
            source_timestamp_ms: Some(failed_at_ms),
            consumer_group: Some("payment-service".into()),
            service: Some("payment-service".into()),
            error_type: Some("GatewayUnavailable".into()),
            error_message: Some("the gateway is down".into()),
            attempts: Some(3),
            failed_at_ms,
            key: Some(b"ord-1".to_vec()),
            payload: Some(br#"{"order_id":"ord-1"}"#.to_vec()),
            headers_json: "[]".into(),
            status: "pending".into(),
            status_changed_at_ms: None,
            status_by: None,
            status_reason: None,
            replay_count: 0,
        }
    }

    /// The routes over HTTP against a real SQLite ledger: the dashboard's
    /// figures, a filter, a cut list, a bad filter, one entry, an unknown
    /// and a bad id.
    #[tokio::test]
    async fn the_pages_answer_from_the_ledger_with_the_right_status() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("dlq.db").display());
        let store = kausal_store::Store::connect(&url).await.expect("store");
        let now = crate::now_ms();
        let entries = [
            ledger_entry("dlq-a", "orders", now - 60_000),
            ledger_entry("dlq-b", "orders", now - 120_000),
            ledger_entry("dlq-c", "payments", now - 3 * 3_600_000),
        ];
        store
            .record_batch(&[], &[], &entries)
            .await
            .expect("record");
        let (base, server) = crate::pages::tests::serve(store).await;
        let get = |path: &str| {
            let url = format!("{base}{path}");
            async move {
                let answer = reqwest::get(url).await.expect("answer");
                let status = answer.status().as_u16();
                (status, answer.text().await.expect("body"))
            }
        };

        let (status, html) = get("/dlq").await;
        assert_eq!(status, 200, "{html}");
        assert!(
            html.contains(r#"<main data-refresh-seconds="10">"#),
            "{html}"
        );
        assert!(
            html.contains(r##"<a href="/dlq?status=pending#list">3</a>"##),
            "{html}"
        );
        assert!(html.contains(r#"data-ledger="3/3/0""#), "{html}");
        assert!(html.contains("3 entries match."), "{html}");
        assert_eq!(html.matches("<tr id=\"dlq-").count(), 3, "{html}");

        let (status, html) =
            get("/dlq?status=pending&source_topic=orders&error_type=&since=&limit=").await;
        assert_eq!(status, 200, "{html}");
        assert!(html.contains("2 entries match."), "{html}");
        assert!(!html.contains(r#"data-dlq-id="dlq-c""#), "{html}");

        let (status, html) = get("/dlq?limit=1").await;
        assert_eq!(status, 200, "{html}");
        assert!(
            html.contains("Showing the newest 1 entries: more match."),
            "{html}"
        );
        assert!(
            html.contains(r#"data-dlq-id="dlq-a""#),
            "the newest: {html}"
        );

        for (bad, reason) in [
            ("/dlq?since=soon", "since &quot;soon&quot;"),
            ("/dlq?status=lost", "status &quot;lost&quot;"),
            ("/dlq?limit=0", "limit 0: use 1 to 10000"),
            ("/dlq?limit=many", "limit &quot;many&quot;"),
        ] {
            let (status, html) = get(bad).await;
            assert_eq!(status, 400, "{bad}");
            assert!(html.contains(reason), "{bad}: {html}");
            assert!(
                html.contains(r#"id="dlq-numbers""#),
                "{bad}: the dashboard stays"
            );
        }

        let (status, html) = get("/dlq/dlq-a").await;
        assert_eq!(status, 200, "{html}");
        assert!(html.contains("the gateway is down"), "{html}");
        assert!(html.contains("JSON, pretty-printed"), "{html}");
        let (status, html) = get("/dlq/no-such-entry").await;
        assert_eq!(status, 404);
        assert!(html.contains("No such dead letter"), "{html}");
        assert!(
            html.contains(r#"<a href="/dlq">Back to the dead letters</a>"#),
            "{html}"
        );
        let (status, _) = get(&format!("/dlq/{}", "x".repeat(300))).await;
        assert_eq!(status, 400);
        server.abort();
    }
}
