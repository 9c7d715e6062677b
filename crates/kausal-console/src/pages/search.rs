//! Search (`/`, `/search?q=`): one box for any id the console knows. One
//! correlation found goes straight to its page (303); several are listed;
//! none says what to try. The same resolution as `GET /api/search`
//! (`crate::query::resolve`).

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::layout::{self, Section};
use super::{Page, correlation_href, shorten};
use crate::http::{ConsoleState, checked_id};
use crate::query::{self, Match, MatchKind};

#[derive(Debug, Deserialize)]
pub(super) struct SearchParams {
    q: Option<String>,
}

/// `/`: the search box alone.
pub(super) async fn index() -> Page {
    Page::ok(search_page(None, html! {}))
}

/// `/search?q=`.
pub(super) async fn search(
    State(state): State<ConsoleState>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return super::bad_request(&e.body_text()).into_response(),
    };
    let Some(raw) = params.q else {
        return Page::ok(search_page(None, html! {})).into_response();
    };
    let q = match checked_id(&raw) {
        Ok(q) => q,
        Err(e) => {
            // Do not echo a huge input back; the reason says the bound.
            let shown = shorten(raw.trim(), 64);
            let body = html! {
                p.message.error { (e.1) " (you gave " (raw.trim().chars().count()) " characters)." }
            };
            return Page {
                status: StatusCode::BAD_REQUEST,
                body: search_page(Some(&shown), body),
            }
            .into_response();
        }
    };
    match query::resolve(&state.store, q).await {
        Err(e) => super::unavailable(e).into_response(),
        Ok(matches) if matches.len() == 1 => (
            StatusCode::SEE_OTHER,
            [(
                header::LOCATION,
                correlation_href(&matches[0].correlation_id),
            )],
        )
            .into_response(),
        Ok(matches) if matches.is_empty() => {
            Page::ok(search_page(Some(q), render_nothing_found(q))).into_response()
        }
        Ok(matches) => Page::ok(search_page(Some(q), render_matches(q, &matches))).into_response(),
    }
}

/// The search page with `results` under the box.
fn search_page(q: Option<&str>, results: Markup) -> Markup {
    let main = html! {
        h1 { "Find what happened" }
        p.lead {
            "Paste an order id, a correlation id, an event id, a trace id or a dead-letter id: "
            "the console shows the whole business operation it belongs to."
        }
        (search_form(q, true))
        (results)
    };
    layout::page("Search", Section::Search, false, main)
}

/// The search box; `autofocus` on the search page itself.
pub(super) fn search_form(q: Option<&str>, autofocus: bool) -> Markup {
    html! {
        form.search action="/search" method="get" role="search" {
            label for="q" { "Id" }
            input #q type="search" name="q" value=[q] maxlength="256" required
                autofocus[autofocus] autocomplete="off" spellcheck="false"
                placeholder="ord-1042, 0192f3c4-…, 4bf92f3577b34da6a3ce929d0e0e4736";
            button type="submit" { "Search" }
        }
    }
}

/// How a match is named to a person.
fn kind_label(kind: MatchKind) -> &'static str {
    match kind {
        MatchKind::EventId => "an event id",
        MatchKind::CorrelationId => "a correlation id",
        MatchKind::Key => "a Kafka key (order id)",
        MatchKind::TraceId => "a trace id",
        MatchKind::DeadLetterId => "a dead-letter id",
    }
}

/// Several correlations for one id (a key reused by several operations,
/// a trace that carried several).
pub fn render_matches(q: &str, matches: &[Match]) -> Markup {
    html! {
        section.results {
            h2 { (matches.len()) " correlations match " code { (q) } }
            ul.matches {
                @for m in matches {
                    li {
                        a.id href=(correlation_href(&m.correlation_id)) { (m.correlation_id) }
                        " — matched as " (kind_label(m.kind))
                    }
                }
            }
        }
    }
}

/// Nothing recorded for `q`: what to try.
pub fn render_nothing_found(q: &str) -> Markup {
    html! {
        section.results.nothing {
            h2 { "Nothing is recorded for " code { (q) } }
            p { "The console looked for it as:" }
            ul {
                li { "an event id (the " code { "event-id" } " header, a UUID),"}
                li { "a correlation id (the " code { "correlation-id" } " header),"}
                li { "a Kafka key (in the reference system, the order id: " code { "ord-…" } "),"}
                li { "a dead-letter id (as " code { "kausal dlq list" } " shows it),"}
                li { "a trace id (32 hexadecimal characters, from a log line's " code { "traceId" } ")." }
            }
            p {
                "Check for a typo or surrounding characters. An event produced seconds ago may not "
                "be recorded yet: the lineage recorder (" code { "kausal service recorder" }
                ", run by " code { "kausal up" } ") stores it when it reads it. Lineage older than "
                "the console's retention (" code { "--retention-hours" } ") is pruned."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_matches_are_listed_with_links_and_how_they_matched() {
        let matches = [
            Match {
                kind: MatchKind::Key,
                correlation_id: "c-1".into(),
            },
            Match {
                kind: MatchKind::Key,
                correlation_id: "c/<2>".into(),
            },
        ];
        let html = render_matches("ord-1", &matches).into_string();
        assert!(
            html.contains("2 correlations match <code>ord-1</code>"),
            "{html}"
        );
        assert!(html.contains(r#"href="/correlations/c-1""#), "{html}");
        assert!(
            html.contains(r#"href="/correlations/c%2F%3C2%3E""#),
            "{html}"
        );
        assert!(html.contains("c/&lt;2&gt;"), "escaped: {html}");
        assert!(html.contains("a Kafka key (order id)"), "{html}");
    }

    #[test]
    fn nothing_found_names_the_input_escaped_and_what_to_try() {
        let html = render_nothing_found("<script>x</script>").into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"), "{html}");
        for hint in [
            "event id",
            "correlation id",
            "order id",
            "dead-letter id",
            "trace id",
        ] {
            assert!(html.contains(hint), "{hint}: {html}");
        }
    }

    #[test]
    fn the_form_keeps_the_query_escaped() {
        let html = search_form(Some(r#"a"b"#), true).into_string();
        assert!(html.contains(r#"value="a&quot;b""#), "{html}");
        assert!(html.contains("autofocus"), "{html}");
    }
}
