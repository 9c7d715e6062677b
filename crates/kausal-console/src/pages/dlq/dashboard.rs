//! Seed 001's dashboard: pending total, the oldest pending entry's age,
//! inflow and outflow in the last hour, pending by source topic and by
//! error type (each a link that filters the list), and the 24-hour trend.
//! Every part is a `data-live` element: `assets/refresh.js` replaces it
//! with its namesake from a fresh copy of the page.

use std::collections::BTreeMap;

use maud::{Markup, html};

use super::{age, list_href, trend_chart};
use crate::dlq::{DlqStats, TrendHour};
use crate::http_dlq::Filters;

/// Rows of a breakdown shown; the rest are counted in a line.
const MAX_BREAKDOWN_ROWS: usize = 20;

/// A mark of the ledger's state: it changes when an entry arrives or
/// leaves `pending`. The list keeps the mark it was loaded with, so that
/// `assets/dlq.js` can say when the live figures moved on without it.
pub(crate) fn ledger_mark(stats: &DlqStats, trend: &[TrendHour]) -> String {
    let inflow: usize = trend.iter().map(|h| h.inflow).sum();
    let outflow: usize = trend.iter().map(|h| h.outflow).sum();
    format!("{}/{inflow}/{outflow}", stats.pending)
}

/// The dashboard (the figures, the breakdowns, the trend).
pub(crate) fn render_dashboard(stats: &DlqStats, trend: &[TrendHour]) -> Markup {
    let pending_href = list_href(&Filters {
        status: Some("pending".into()),
        ..Filters::default()
    });
    html! {
        section #dashboard aria-label="Dashboard" {
            dl #dlq-numbers.numbers data-live data-ledger=(ledger_mark(stats, trend)) {
                div data-stat="pending" {
                    dt { "Pending" }
                    dd.value { a href=(pending_href) { (stats.pending) } }
                    dd.sub { "waiting for a replay or a discard" }
                }
                div data-stat="oldest" {
                    dt { "Oldest pending" }
                    dd.value {
                        @match stats.oldest_pending_age_seconds {
                            Some(s) => (age(s)),
                            None => "—",
                        }
                    }
                    dd.sub {
                        @match &stats.oldest_pending_failed_at {
                            Some(at) => { "failed at " time datetime=(at) { (at) } },
                            None => "nothing pending",
                        }
                    }
                }
                div data-stat="inflow" {
                    dt { "In, last hour" }
                    dd.value { (stats.inflow_last_hour) }
                    dd.sub { "entries that failed for good" }
                }
                div data-stat="outflow" {
                    dt { "Out, last hour" }
                    dd.value { (stats.outflow_last_hour) }
                    dd.sub { "replayed or discarded" }
                }
            }
            div.breakdowns {
                (breakdown("dlq-by-topic", "Pending by source topic", "source topic",
                    &stats.pending_by_source_topic,
                    |t| Filters { source_topic: Some(t.to_owned()), ..Filters::default() }))
                (breakdown("dlq-by-error", "Pending by error type", "error type",
                    &stats.pending_by_error_type,
                    |e| Filters { error_type: Some(e.to_owned()), ..Filters::default() }))
            }
            (trend_chart(trend))
        }
    }
}

/// One breakdown of the pending entries, largest first, each name a link
/// to the list filtered by it.
fn breakdown(
    id: &str,
    title: &str,
    what: &str,
    counts: &BTreeMap<String, i64>,
    filter: impl Fn(&str) -> Filters,
) -> Markup {
    let mut rows: Vec<(&String, &i64)> = counts.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let more = rows.len().saturating_sub(MAX_BREAKDOWN_ROWS);
    rows.truncate(MAX_BREAKDOWN_ROWS);
    html! {
        section.breakdown id=(id) data-live aria-labelledby={ (id) "-title" } {
            h2 id={ (id) "-title" } { (title) }
            @if rows.is_empty() {
                p.note { "Nothing pending." }
            } @else {
                div.scroll {
                    table {
                        thead { tr { th scope="col" { (what) } th.num scope="col" { "pending" } } }
                        tbody {
                            @for (name, count) in &rows {
                                tr {
                                    td {
                                        @if name.is_empty() {
                                            span.meta { "(none recorded)" }
                                        } @else {
                                            a href=(list_href(&filter(name))) { code { (name) } }
                                        }
                                    }
                                    td.num { (count) }
                                }
                            }
                        }
                    }
                }
                @if more > 0 {
                    p.note { "And " (more) " more, each with fewer entries: filter the list below to see them." }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const NOW: i64 = 1_700_000_000_000;

    pub(crate) fn stats() -> DlqStats {
        let counts = [
            kausal_store::DeadLetterCount {
                status: "pending".into(),
                source_topic: "orders".into(),
                error_type: "GatewayUnavailable".into(),
                count: 3,
                oldest_failed_at_ms: NOW - 2 * 3_600_000 - 5 * 60_000,
            },
            kausal_store::DeadLetterCount {
                status: "pending".into(),
                source_topic: "payments".into(),
                error_type: "Missing <email>".into(),
                count: 1,
                oldest_failed_at_ms: NOW - 60_000,
            },
            kausal_store::DeadLetterCount {
                status: "pending".into(),
                source_topic: "payments".into(),
                error_type: String::new(),
                count: 1,
                oldest_failed_at_ms: NOW - 60_000,
            },
        ];
        let failures = [NOW - 60_000, NOW - 60_000, NOW - 3 * 3_600_000];
        crate::dlq::stats_of(&counts, &failures, 2, NOW)
    }

    pub(crate) fn trend(stats: &DlqStats) -> Vec<TrendHour> {
        crate::dlq::trend_of(stats, &[NOW - 1000, NOW - 2000], NOW)
    }

    #[test]
    fn the_figures_are_the_ledgers() {
        let s = stats();
        let html = render_dashboard(&s, &trend(&s)).into_string();
        let figure = |stat: &str| {
            let at = html
                .find(&format!(r#"data-stat="{stat}""#))
                .unwrap_or_else(|| panic!("{stat}: {html}"));
            let value = &html[at..];
            let start = value.find(r#"<dd class="value">"#).expect("value") + 18;
            let end = value.find("</dd>").expect("end");
            value[start..end].to_owned()
        };
        assert_eq!(
            figure("pending"),
            r##"<a href="/dlq?status=pending#list">5</a>"##
        );
        assert_eq!(figure("oldest"), "2 h 5 min");
        assert_eq!(figure("inflow"), "2");
        assert_eq!(figure("outflow"), "2");
        assert!(html.contains(r#"data-ledger="5/3/2""#), "{html}");
        assert!(
            html.contains(r#"<dl class="numbers" id="dlq-numbers" data-live"#),
            "{html}"
        );
    }

    #[test]
    fn breakdowns_link_to_the_filtered_list_largest_first() {
        let s = stats();
        let html = render_dashboard(&s, &trend(&s)).into_string();
        let orders = html
            .find(r##"<a href="/dlq?source_topic=orders#list"><code>orders</code></a>"##)
            .expect("orders");
        let payments = html
            .find(r##"<a href="/dlq?source_topic=payments#list">"##)
            .expect("payments");
        assert!(orders < payments, "3 before 2: {html}");
        assert!(
            html.contains(
                r##"<a href="/dlq?error_type=Missing%20%3Cemail%3E#list"><code>Missing &lt;email&gt;</code></a>"##
            ),
            "escaped and encoded: {html}"
        );
        assert!(html.contains("(none recorded)"), "{html}");
        assert!(html.contains(r#"id="dlq-by-topic" data-live"#), "{html}");
    }

    #[test]
    fn an_empty_ledger_says_so() {
        let s = crate::dlq::stats_of(&[], &[], 0, NOW);
        let html = render_dashboard(&s, &trend(&s)).into_string();
        assert!(html.contains("nothing pending"), "{html}");
        assert_eq!(html.matches("Nothing pending.").count(), 2, "{html}");
    }

    #[test]
    fn a_long_breakdown_is_cut_and_says_so() {
        let counts: BTreeMap<String, i64> = (0..25).map(|i| (format!("t{i:02}"), 1)).collect();
        let html = breakdown("b", "B", "topic", &counts, |_| Filters::default()).into_string();
        assert_eq!(
            html.matches("<tr>").count(),
            1 + MAX_BREAKDOWN_ROWS,
            "{html}"
        );
        assert!(html.contains("And 5 more"), "{html}");
    }
}
