//! The list under the dashboard: the CLI's filters as a GET form, bulk
//! replay of what the filter selects (`assets/dlq.js`), and the entries,
//! newest first, each with its detail page, its correlation page and the
//! Replay and Discard buttons of `assets/actions.js`. Bounded by the
//! filter's limit; a cut list says so.

use maud::{Markup, html};
use serde_json::{Map, Value};

use super::{Around, action_forms, dead_letter_table, list_href};
use crate::dlq::{self, DeadLetterSummary, DlqStats};
use crate::http_dlq::Filters;

/// The entries a filter selected.
#[derive(Debug)]
pub(crate) struct Listed {
    pub(crate) entries: Vec<DeadLetterSummary>,
    /// The most shown.
    pub(crate) limit: i64,
    /// More entries matched than the limit.
    pub(crate) cut: bool,
}

/// Statuses in the form's choice, the default first.
const STATUS_CHOICES: [(&str, &str); 4] = [
    ("pending", "pending"),
    ("replayed", "replayed"),
    ("discarded", "discarded"),
    ("all", "any status"),
];

/// The list section. `listed` is the reason when the filter cannot be
/// used; `ledger_mark` is the dashboard's mark when the page was made.
pub(crate) fn render_list(
    filters: &Filters,
    stats: &DlqStats,
    listed: &Result<Listed, String>,
    ledger_mark: &str,
) -> Markup {
    html! {
        section #list aria-labelledby="list-title" data-ledger=(ledger_mark) {
            h2 #list-title { "Entries" }
            (filter_form(filters, stats))
            p #dlq-list-stale.note.stale role="status" hidden {
                "The ledger changed since this list was loaded (the figures above are live, the "
                "list is not, so that nothing moves while you act on it). "
                a href=(list_href(filters)) { "Reload the list" }
            }
            @match listed {
                Err(reason) => {
                    p.message.error { "This filter cannot be used: " (reason) ". Change it above." }
                }
                Ok(listed) => (entries(filters, listed)),
            }
        }
    }
}

/// The GET form of the CLI's filters, filled with the current ones.
fn filter_form(filters: &Filters, stats: &DlqStats) -> Markup {
    let status = filters.status.as_deref().unwrap_or("pending");
    let field = |v: &Option<String>| v.clone().unwrap_or_default();
    html! {
        form #dlq-filter.filters action="/dlq#list" method="get" aria-label="Filter the entries" {
            div.field {
                label for="f-status" { "Status" }
                select #f-status name="status" {
                    @for (value, label) in STATUS_CHOICES {
                        option value=(value) selected[value == status] { (label) }
                    }
                }
            }
            div.field {
                label for="f-topic" { "Source topic" }
                input #f-topic type="text" name="source_topic" list="dlq-topics" maxlength="256"
                    value=(field(&filters.source_topic)) placeholder="any";
            }
            div.field {
                label for="f-error" { "Error type" }
                input #f-error type="text" name="error_type" list="dlq-errors" maxlength="256"
                    value=(field(&filters.error_type)) placeholder="any";
            }
            div.field {
                label for="f-correlation" { "Correlation id" }
                input #f-correlation type="text" name="correlation_id" maxlength="256"
                    value=(field(&filters.correlation_id)) placeholder="any";
            }
            div.field {
                label for="f-group" { "Consumer group" }
                input #f-group type="text" name="consumer_group" maxlength="256"
                    value=(field(&filters.consumer_group)) placeholder="any";
            }
            div.field {
                label for="f-since" { "Failed since" }
                input #f-since type="text" name="since" maxlength="64"
                    value=(field(&filters.since)) placeholder="30m, 2h, 7d or RFC 3339";
            }
            div.field {
                label for="f-limit" { "At most" }
                input #f-limit type="number" name="limit" min="1" max=(dlq::MAX_ENTRIES)
                    value=(filters.limit.unwrap_or(50));
            }
            div.field.submit {
                button.primary type="submit" { "Filter" }
                a href="/dlq#list" { "Clear" }
            }
            datalist #dlq-topics {
                @for t in stats.pending_by_source_topic.keys() { option value=(t) {} }
            }
            datalist #dlq-errors {
                @for e in stats.pending_by_error_type.keys().filter(|e| !e.is_empty()) {
                    option value=(e) {}
                }
            }
        }
    }
}

/// The filter in words, for the bulk panel.
fn filter_words(filters: &Filters) -> String {
    let parts: Vec<String> = [
        ("source topic", &filters.source_topic),
        ("error type", &filters.error_type),
        ("correlation", &filters.correlation_id),
        ("consumer group", &filters.consumer_group),
        ("failed since", &filters.since),
    ]
    .iter()
    .filter_map(|(name, v)| Some(format!("{name} {}", v.as_deref()?)))
    .collect();
    if parts.is_empty() {
        "every pending entry".to_owned()
    } else {
        format!("pending entries with {}", parts.join(", "))
    }
}

/// The body of `POST /api/dlq/replay` that selects what `filters` select
/// (the API adds `status=pending` itself and takes no `status`).
pub(crate) fn bulk_filter(filters: &Filters) -> Value {
    let mut body = Map::new();
    for (name, v) in [
        ("source_topic", &filters.source_topic),
        ("error_type", &filters.error_type),
        ("correlation_id", &filters.correlation_id),
        ("consumer_group", &filters.consumer_group),
        ("since", &filters.since),
    ] {
        if let Some(v) = v {
            body.insert(name.to_owned(), Value::String(v.clone()));
        }
    }
    Value::Object(body)
}

/// Bulk replay of what the filter selects: a dry run that lists the
/// entries, then the replay of exactly those (`assets/dlq.js`).
fn bulk_panel(filters: &Filters) -> Markup {
    html! {
        section #bulk.bulk aria-labelledby="bulk-title" data-filter=(bulk_filter(filters).to_string()) {
            h3 #bulk-title { "Replay what this filter selects" }
            p.hint {
                "Replays " strong { (filter_words(filters)) }
                " to its original topic — every one the filter selects (up to "
                (dlq::MAX_ENTRIES) "), not only those listed below. The dry run lists exactly "
                "which, and which would be refused and why; the replay then takes those entries "
                "and no others."
            }
            div.buttons {
                button type="button" data-bulk="dry-run" { "Dry run" }
                button.primary type="button" data-bulk="replay" hidden { "Replay now" }
            }
            div.progress hidden {
                label for="bulk-progress" { "Replayed" }
                progress #bulk-progress max="1" value="0" {}
                output.count for="bulk-progress" { "0 of 0" }
            }
            output.bulk-state aria-live="polite" {}
            div.scroll {
                table.bulk-results hidden {
                    caption.visually-hidden { "What the bulk replay does to each entry" }
                    thead { tr { th scope="col" { "dead letter" } th scope="col" { "result" } } }
                    tbody {}
                }
            }
        }
    }
}

fn entries(filters: &Filters, listed: &Listed) -> Markup {
    let status = filters.status.as_deref().unwrap_or("pending");
    let bulk = matches!(status, "pending" | "all");
    let any_pending = listed.entries.iter().any(|d| d.status == "pending");
    let n = listed.entries.len();
    html! {
        @if bulk || any_pending { (action_forms()) }
        @if bulk { (bulk_panel(filters)) }
        @if listed.cut {
            p.note.cut {
                "Showing the newest " (listed.limit) " entries: more match. Narrow the filter or "
                "raise “At most” (up to " (dlq::MAX_ENTRIES) ")."
            }
        } @else {
            p.meta.count { (n) " entr" (if n == 1 { "y" } else { "ies" }) " match." }
        }
        @if listed.entries.is_empty() {
            p.note {
                @if status == "pending" && filters.source_topic.is_none()
                    && filters.error_type.is_none() && filters.correlation_id.is_none()
                    && filters.consumer_group.is_none() && filters.since.is_none() {
                    "No dead letter is pending: nothing to replay."
                } @else {
                    "No entry matches this filter. Widen it, or "
                    a href="/dlq#list" { "clear it" } "."
                }
            }
        } @else {
            (dead_letter_table(&listed.entries, Around::Ledger))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::correlation::tests::summary;
    use crate::pages::dlq::dashboard::tests::stats;

    fn listed(entries: Vec<DeadLetterSummary>, cut: bool) -> Result<Listed, String> {
        Ok(Listed {
            entries,
            limit: 2,
            cut,
        })
    }

    fn orders() -> Filters {
        Filters {
            source_topic: Some("orders".into()),
            since: Some("2h".into()),
            ..Filters::default()
        }
    }

    #[test]
    fn each_row_links_its_detail_and_correlation_and_has_the_actions() {
        let html = render_list(
            &orders(),
            &stats(),
            &listed(
                vec![
                    summary("dlq-1", "e1", "pending"),
                    summary("dlq-2", "e2", "replayed"),
                ],
                false,
            ),
            "5/3/2",
        )
        .into_string();
        assert!(
            html.contains(r#"<tr id="dlq-dlq-1" data-dlq-id="dlq-1" data-topic="payments">"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a class="id" href="/dlq/dlq-1">dlq-1</a>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a class="id" href="/correlations/corr-1" title="corr-1">corr-1</a>"#),
            "{html}"
        );
        assert_eq!(
            html.matches(r#"data-action="replay-dry""#).count(),
            1,
            "{html}"
        );
        assert!(html.contains("replayed by console:alice"), "{html}");
        assert!(html.contains("2 entries match."), "{html}");
        assert!(html.contains(r#"data-ledger="5/3/2""#), "{html}");
        assert!(html.contains(r#"id="token-form""#), "{html}");
    }

    #[test]
    fn the_form_keeps_the_filter_and_the_bulk_panel_replays_what_it_selects() {
        let html = render_list(&orders(), &stats(), &listed(vec![], false), "m").into_string();
        assert!(
            html.contains(
                r#"name="source_topic" list="dlq-topics" maxlength="256" value="orders""#
            ),
            "{html}"
        );
        assert!(
            html.contains(r#"<option value="pending" selected>pending</option>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<option value="orders"></option>"#),
            "the topics offered: {html}"
        );
        assert!(
            html.contains(r#"data-filter="{&quot;since&quot;:&quot;2h&quot;,&quot;source_topic&quot;:&quot;orders&quot;}""#),
            "{html}"
        );
        assert!(
            html.contains("pending entries with source topic orders, failed since 2h"),
            "{html}"
        );
        assert!(
            html.contains(r#"<progress id="bulk-progress" max="1" value="0">"#),
            "{html}"
        );
        assert!(html.contains("No entry matches this filter."), "{html}");
        // The API's body never carries a status (it refuses one).
        let all = Filters {
            status: Some("all".into()),
            ..Filters::default()
        };
        assert_eq!(bulk_filter(&all), serde_json::json!({}));
        // Replayed entries: no bulk replay, no token form without a pending row.
        let replayed = Filters {
            status: Some("replayed".into()),
            ..Filters::default()
        };
        let html = render_list(&replayed, &stats(), &listed(vec![], false), "m").into_string();
        assert!(!html.contains(r#"id="bulk""#), "{html}");
        assert!(!html.contains("token-form"), "{html}");
        assert!(
            html.contains(r#"<option value="replayed" selected>"#),
            "{html}"
        );
    }

    #[test]
    fn a_cut_list_says_so_and_a_bad_filter_says_why() {
        let html = render_list(
            &Filters::default(),
            &stats(),
            &listed(
                vec![summary("a", "e1", "pending"), summary("b", "e2", "pending")],
                true,
            ),
            "m",
        )
        .into_string();
        assert!(
            html.contains("Showing the newest 2 entries: more match."),
            "{html}"
        );
        assert!(html.contains("every pending entry"), "{html}");
        let html = render_list(
            &Filters {
                since: Some("soon".into()),
                ..Filters::default()
            },
            &stats(),
            &Err("since \"soon\": use RFC 3339 or a duration like 30m, 2h, 7d".into()),
            "m",
        )
        .into_string();
        assert!(
            html.contains("This filter cannot be used: since &quot;soon&quot;"),
            "{html}"
        );
        assert!(
            html.contains(r#"value="soon""#),
            "the form keeps it to fix: {html}"
        );
        assert!(!html.contains("<table"), "{html}");
    }

    #[test]
    fn an_empty_ledger_says_nothing_is_pending() {
        let html =
            render_list(&Filters::default(), &stats(), &listed(vec![], false), "m").into_string();
        assert!(
            html.contains("No dead letter is pending: nothing to replay."),
            "{html}"
        );
    }
}
