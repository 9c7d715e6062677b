//! The trace waterfall of a correlation: every span of every trace it
//! touched, children under their parents in start order, a bar placed by
//! the span's offset and length within its trace, errors in red, and each
//! span's links to other traces (a replay's trace links the original one).
//! Bars are small SVGs: position is an attribute, never an inline style.

use std::collections::{BTreeMap, BTreeSet};

use maud::{Markup, html};

use super::{shorten, trace_href};
use crate::query::{CorrelationDocument, SpanView};

/// Indentation steps shown; deeper spans stay at the last one.
const MAX_INDENT: usize = 12;
/// The bar's coordinate width (the SVG scales it to the column).
const BAR_W: f64 = 1000.0;

/// One table per trace, in the document's order (the traces its events
/// were sent in first).
pub fn waterfall(doc: &CorrelationDocument) -> Markup {
    let mut by_trace: BTreeMap<&str, Vec<&SpanView>> = BTreeMap::new();
    for s in &doc.spans {
        by_trace.entry(s.trace_id.as_str()).or_default().push(s);
    }
    let mut order: Vec<&str> = doc
        .trace_ids
        .iter()
        .map(String::as_str)
        .filter(|t| by_trace.contains_key(t))
        .collect();
    for t in by_trace.keys() {
        if !order.contains(t) {
            order.push(t);
        }
    }
    if order.is_empty() {
        return html! {
            p.note {
                "No span of this correlation was received. Services export their spans to the "
                "console over OTLP (" code { "kausal up" } " points them at it); a service started "
                "without " code { "OTEL_EXPORTER_OTLP_ENDPOINT" } " sends none."
            }
        };
    }
    html! {
        @for trace in order {
            (trace_table(trace, &by_trace[trace]))
        }
    }
}

fn trace_table(trace_id: &str, spans: &[&SpanView]) -> Markup {
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans
        .iter()
        .map(|s| s.start_ns + (s.duration_ms * 1e6) as i64)
        .max()
        .unwrap_or(start);
    let total_ns = (end - start).max(1) as f64;
    let errors = spans.iter().filter(|s| s.status == "error").count();
    html! {
        article.trace {
            h3 {
                "Trace "
                a.id href=(trace_href(trace_id)) title="The trace page (a later slice)" { (trace_id) }
                span.meta {
                    " · " (spans.len()) " span" @if spans.len() != 1 { "s" }
                    " · " (format!("{:.1}", total_ns / 1e6)) " ms"
                    @if errors > 0 { " · " span.err { (errors) " failed" } }
                }
            }
            div.scroll {
                table.waterfall {
                    thead {
                        tr {
                            th.num scope="col" { "at ms" }
                            th.num scope="col" { "ms" }
                            th.bar scope="col" { span.visually-hidden { "Timeline" } }
                            th scope="col" { "service" }
                            th scope="col" { "span" }
                        }
                    }
                    tbody {
                        @for (depth, s) in crate::query::span_tree(spans) {
                            @let offset = (s.start_ns - start) as f64;
                            @let x = offset / total_ns * BAR_W;
                            @let w = (s.duration_ms * 1e6 / total_ns * BAR_W).max(3.0).min(BAR_W - x.min(BAR_W - 3.0));
                            @let failed = s.status == "error";
                            tr.span.error[failed] id={ "span-" (s.span_id) } data-span-id=(s.span_id) {
                                td.num { (format!("{:.1}", offset / 1e6)) }
                                td.num { (format!("{:.1}", s.duration_ms)) }
                                td.bar {
                                    svg.bar xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (BAR_W) " 12" }
                                        preserveAspectRatio="none" aria-hidden="true" {
                                        rect class=[failed.then_some("error")] x=(format!("{:.1}", x.min(BAR_W - 3.0))) y="1"
                                            width=(format!("{:.1}", w)) height="10" {}
                                    }
                                }
                                td.service { (s.service.as_deref().unwrap_or("?")) }
                                td class=(format!("name d{}", depth.min(MAX_INDENT))) {
                                    span.span-name { (s.name) }
                                    " " span.kind { (s.kind) }
                                    @if failed {
                                        " " span.err {
                                            "error"
                                            @if let Some(m) = &s.status_message { ": " (shorten(m, 200)) }
                                        }
                                    }
                                    @let links = links(s);
                                    @if !links.is_empty() {
                                        ul.links {
                                            @for (trace, span) in links {
                                                li {
                                                    @if trace == s.trace_id {
                                                        // The consumer's link to its producer,
                                                        // as the conventions ask, in this trace.
                                                        "↪ links span "
                                                        a.id href={ "#span-" (span) } { (span) }
                                                    } @else {
                                                        "↪ linked trace "
                                                        a.id href=(trace_href(trace)) { (shorten(trace, 16)) }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A span's links (OTLP span links) as (trace id, span id), each once.
fn links(s: &SpanView) -> Vec<(&str, &str)> {
    let mut seen = BTreeSet::new();
    s.links
        .as_array()
        .map(|links| {
            links
                .iter()
                .filter_map(|l| {
                    Some((l["trace_id"].as_str()?, l["span_id"].as_str().unwrap_or("")))
                })
                .filter(|l| seen.insert(*l))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::correlation::tests::document;

    pub(crate) fn span(
        trace: &str,
        id: &str,
        parent: Option<&str>,
        start_ms: i64,
        ms: f64,
    ) -> SpanView {
        SpanView {
            service: Some(format!("svc-{id}")),
            trace_id: trace.into(),
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            name: format!("process <{id}>"),
            kind: "consumer".into(),
            start_ns: start_ms * 1_000_000,
            duration_ms: ms,
            status: if id == "c" { "error" } else { "unset" }.into(),
            status_message: (id == "c").then(|| "MissingCustomerEmail".into()),
            event_id: None,
            attributes: serde_json::Value::Null,
            events: serde_json::Value::Null,
            // r (trace t2) links into t1; c links its parent's span in t1.
            links: if id == "r" || id == "c" {
                serde_json::json!([{"trace_id": "t1", "span_id": "a"}])
            } else {
                serde_json::json!([])
            },
        }
    }

    #[test]
    fn children_nest_under_parents_in_start_order() {
        let spans = [
            span("t1", "c", Some("a"), 5, 1.0),
            span("t1", "a", None, 0, 10.0),
            span("t1", "b", Some("a"), 2, 1.0),
        ];
        let refs: Vec<&SpanView> = spans.iter().collect();
        let order: Vec<(usize, &str)> = crate::query::span_tree(&refs)
            .into_iter()
            .map(|(d, s)| (d, s.span_id.as_str()))
            .collect();
        assert_eq!(order, [(0, "a"), (1, "b"), (1, "c")]);
    }

    #[test]
    fn rows_have_bars_by_time_errors_in_red_and_followable_links() {
        let mut doc = document(vec![], vec![], vec![]);
        doc.trace_ids = vec!["t1".into(), "t2".into()];
        doc.spans = vec![
            span("t1", "a", None, 0, 10.0),
            span("t1", "c", Some("a"), 5, 5.0),
            span("t2", "r", None, 100, 2.0),
        ];
        let html = waterfall(&doc).into_string();
        assert_eq!(html.matches("<tr class=\"span").count(), 3, "{html}");
        assert!(
            html.contains(r#"<tr class="span error" id="span-c" data-span-id="c">"#),
            "{html}"
        );
        // c starts half way through t1 and lasts to its end.
        assert!(
            html.contains(r#"<rect class="error" x="500.0" y="1" width="500.0""#),
            "{html}"
        );
        assert!(html.contains("error: MissingCustomerEmail"), "{html}");
        assert!(html.contains("process &lt;a&gt;"), "escaped: {html}");
        assert!(html.contains(r#"class="name d1""#), "{html}");
        assert!(html.contains(r#"href="/traces/t1""#), "{html}");
        assert!(
            html.contains(r#"↪ linked trace <a class="id" href="/traces/t1">t1</a>"#),
            "another trace's link leads to its page: {html}"
        );
        assert!(
            html.contains(r##"↪ links span <a class="id" href="#span-a">a</a>"##),
            "a link within the trace leads to the row: {html}"
        );
        assert!(html.contains(r#"id="span-a""#), "{html}");
        assert!(html.find("Trace <a").is_some());
    }

    #[test]
    fn no_span_says_why() {
        let doc = document(vec![], vec![], vec![]);
        assert!(
            waterfall(&doc)
                .into_string()
                .contains("No span of this correlation")
        );
    }
}
