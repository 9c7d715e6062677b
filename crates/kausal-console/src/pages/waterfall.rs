//! The trace waterfall: a trace's spans, children under their parents in
//! start order, a bar placed by the span's offset and length within its
//! trace, errors in red, and each span's links to other traces (a replay's
//! trace links the original one). The correlation page shows every trace
//! of a correlation in brief; the trace page shows one in full: each
//! span's attributes, events and links in a `<details>` (no script), and
//! for a consumer that follows a producer of the same trace, its time in
//! Kafka beside its time in the handler.
//! Bars are small SVGs: position is an attribute, never an inline style.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use maud::{Markup, html};
use serde_json::Value;

use super::{clock_ms, shorten, trace_href};
use crate::query::{CorrelationDocument, SpanView};

/// Indentation steps shown; deeper spans stay at the last one.
const MAX_INDENT: usize = 12;
/// The bar's coordinate width (the SVG scales it to the column).
const BAR_W: f64 = 1000.0;
/// Attributes, events or links shown per span in full; an SDK keeps 128
/// of each by default.
const MAX_ITEMS: usize = 200;
/// Characters of one attribute value shown (a stack trace is long).
const MAX_VALUE_CHARS: usize = 4_000;

/// How much a waterfall row shows of its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detail {
    /// Name, kind, error and links: the correlation page, many traces.
    Brief,
    /// Also the span's facts, attributes, events and links behind its name
    /// (a `<details>`), and a consumer's time in Kafka: the trace page.
    Full,
}

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

/// Where a trace sits in time: its first start and its length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Extent {
    pub start_ns: i64,
    pub total_ns: f64,
}

impl Extent {
    pub(crate) fn of(spans: &[&SpanView]) -> Self {
        let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let end = spans
            .iter()
            .map(|s| s.start_ns + (s.duration_ms * 1e6) as i64)
            .max()
            .unwrap_or(start);
        Self {
            start_ns: start,
            total_ns: (end - start).max(1) as f64,
        }
    }

    /// Milliseconds from the trace's start to `ns`.
    fn offset_ms(&self, ns: i64) -> f64 {
        (ns - self.start_ns) as f64 / 1e6
    }

    /// The bar coordinate of `ns`.
    fn x(&self, ns: i64) -> f64 {
        ((ns - self.start_ns) as f64 / self.total_ns * BAR_W).clamp(0.0, BAR_W - 3.0)
    }
}

fn trace_table(trace_id: &str, spans: &[&SpanView]) -> Markup {
    let extent = Extent::of(spans);
    let errors = spans.iter().filter(|s| s.status == "error").count();
    html! {
        article.trace {
            h3 {
                "Trace "
                a.id href=(trace_href(trace_id)) title="This trace's page: every span in full" { (trace_id) }
                span.meta {
                    " · " (spans.len()) " span" @if spans.len() != 1 { "s" }
                    " · " (format!("{:.1}", extent.total_ns / 1e6)) " ms"
                    @if errors > 0 { " · " span.err { (errors) " failed" } }
                }
            }
            (span_table(spans, Detail::Brief, usize::MAX))
        }
    }
}

/// A consumer span's producer in the same trace (its parent, or the span
/// it links), and the time the record spent in Kafka: from the producer's
/// start (when the record was handed to Kafka, the record's timestamp the
/// receipts measure from) to the consumer's start.
pub(crate) fn kafka_hop<'a>(
    s: &SpanView,
    by_id: &HashMap<&str, &'a SpanView>,
) -> Option<(&'a SpanView, f64)> {
    if s.kind != "consumer" {
        return None;
    }
    let producer = s
        .parent_span_id
        .iter()
        .map(String::as_str)
        .chain(
            links(s)
                .into_iter()
                .filter(|(t, _)| *t == s.trace_id)
                .map(|(_, span)| span),
        )
        .filter_map(|id| by_id.get(id).copied())
        .find(|p| p.kind == "producer")?;
    Some((
        producer,
        ((s.start_ns - producer.start_ns) as f64 / 1e6).max(0.0),
    ))
}

/// The rows of one trace's spans, children under their parents, at most
/// `limit` of them (the caller says when that cut).
pub(crate) fn span_table(spans: &[&SpanView], detail: Detail, limit: usize) -> Markup {
    let extent = Extent::of(spans);
    let by_id: HashMap<&str, &SpanView> = spans.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let full = detail == Detail::Full;
    html! {
        div.scroll {
            table.waterfall.full[full] {
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
                    @for (depth, s) in crate::query::span_tree(spans).into_iter().take(limit) {
                        @let offset = extent.offset_ms(s.start_ns);
                        @let x = extent.x(s.start_ns);
                        @let w = (s.duration_ms * 1e6 / extent.total_ns * BAR_W).max(3.0).min(BAR_W - x);
                        @let failed = s.status == "error";
                        @let hop = if full { kafka_hop(s, &by_id) } else { None };
                        tr.span.error[failed] id={ "span-" (s.span_id) } data-span-id=(s.span_id) {
                            td.num { (format!("{:.1}", offset)) }
                            td.num { (format!("{:.1}", s.duration_ms)) }
                            td.bar {
                                svg.bar xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (BAR_W) " 12" }
                                    preserveAspectRatio="none" aria-hidden="true" {
                                    @if let Some((producer, _)) = hop {
                                        @let from = extent.x(producer.start_ns);
                                        rect.kafka x=(format!("{from:.1}")) y="4"
                                            width=(format!("{:.1}", (x - from).max(0.0))) height="4" {}
                                    }
                                    rect class=[failed.then_some("error")] x=(format!("{:.1}", x)) y="1"
                                        width=(format!("{:.1}", w)) height="10" {}
                                }
                            }
                            td.service { (s.service.as_deref().unwrap_or("?")) }
                            td class=(format!("name d{}", depth.min(MAX_INDENT))) {
                                @if full {
                                    details.span {
                                        summary { (span_title(s)) }
                                        (span_details(s, &extent, &by_id))
                                    }
                                } @else {
                                    (span_title(s))
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
                                                    a.id href=(linked_href(trace, span, detail)) { (shorten(trace, 16)) }
                                                }
                                            }
                                        }
                                    }
                                }
                                @if let Some((producer, kafka_ms)) = hop {
                                    p.hop title="In Kafka: from the producer's send span starting to this span starting. In the handler: this span's length." {
                                        "after " a href={ "#span-" (producer.span_id) } { (producer.name) } ": "
                                        strong { (format!("{kafka_ms:.1} ms")) } " in Kafka, "
                                        strong { (format!("{:.1} ms", s.duration_ms)) } " in the handler"
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

/// A link to another trace: its page, at the linked span when in full.
fn linked_href(trace: &str, span: &str, detail: Detail) -> String {
    match detail {
        Detail::Full if !span.is_empty() => format!("{}#span-{span}", trace_href(trace)),
        _ => trace_href(trace),
    }
}

/// The span's name and kind, and its error in red.
fn span_title(s: &SpanView) -> Markup {
    html! {
        span.span-name { (s.name) }
        " " span.kind { (s.kind) }
        @if s.status == "error" {
            " " span.err {
                "error"
                @if let Some(m) = &s.status_message { ": " (shorten(m, 200)) }
            }
        }
    }
}

/// Everything the store has of one span, for its `<details>`.
fn span_details(s: &SpanView, extent: &Extent, by_id: &HashMap<&str, &SpanView>) -> Markup {
    let start_ms = s.start_ns.div_euclid(1_000_000);
    let events = items(&s.events);
    let links = items(&s.links);
    html! {
        div.span-detail {
            dl.facts {
                dt { "span id" } dd { code { (s.span_id) } }
                dt { "parent" }
                dd {
                    @match s.parent_span_id.as_deref() {
                        Some(p) if by_id.contains_key(p) => a.id href={ "#span-" (p) } { (p) },
                        Some(p) => { code { (p) } " (not received)" },
                        None => "none: a root span",
                    }
                }
                dt { "started" }
                dd {
                    time datetime=(super::rfc3339_ms(start_ms)) { (clock_ms(start_ms)) " UTC" }
                    " (+" (format!("{:.3}", extent.offset_ms(s.start_ns))) " ms)"
                }
                dt { "duration" } dd { (format!("{:.3} ms", s.duration_ms)) }
                dt { "status" }
                dd {
                    span.err[s.status == "error"] { (s.status) }
                    @if let Some(m) = &s.status_message { ": " span.value { (shorten(m, MAX_VALUE_CHARS)) } }
                }
                @if let Some(e) = &s.event_id {
                    dt { "event id" } dd { code { (e) } }
                }
            }
            h4 { "Attributes" }
            (attribute_table(&s.attributes, "No attribute."))
            h4 { "Events (" (events.len()) ")" }
            @if events.is_empty() {
                p.note { "No event." }
            } @else {
                ol.span-events {
                    @for e in events.iter().take(MAX_ITEMS) {
                        li {
                            strong { (e["name"].as_str().unwrap_or("(unnamed)")) }
                            @if let Some(t) = e["time_ns"].as_i64() {
                                " at +" (format!("{:.3}", (t - s.start_ns) as f64 / 1e6)) " ms"
                            }
                            (attribute_table(&e["attributes"], ""))
                        }
                    }
                }
                (cut(events.len(), "events"))
            }
            h4 { "Links (" (links.len()) ")" }
            @if links.is_empty() {
                p.note { "No link." }
            } @else {
                ul.span-links {
                    @for l in links.iter().take(MAX_ITEMS) {
                        @let trace = l["trace_id"].as_str().unwrap_or("");
                        @let span = l["span_id"].as_str().unwrap_or("");
                        li {
                            @if trace == s.trace_id {
                                "span " a.id href={ "#span-" (span) } { (span) } " of this trace"
                            } @else {
                                "trace " a.id href=(linked_href(trace, span, Detail::Full)) { (trace) }
                                ", span " code { (span) }
                            }
                            (attribute_table(&l["attributes"], ""))
                        }
                    }
                }
                (cut(links.len(), "links"))
            }
        }
    }
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// "Only the first N": when a list of `total` was cut at [`MAX_ITEMS`].
fn cut(total: usize, what: &str) -> Markup {
    html! {
        @if total > MAX_ITEMS {
            p.note { "The first " (MAX_ITEMS) " of " (total) " " (what) " are shown." }
        }
    }
}

/// A JSON object of attributes as a two-column table; `empty` when it has
/// none (nothing at all when `empty` is empty).
fn attribute_table(attributes: &Value, empty: &str) -> Markup {
    let Some(map) = attributes.as_object().filter(|m| !m.is_empty()) else {
        return html! { @if !empty.is_empty() { p.note { (empty) } } };
    };
    html! {
        table.attributes {
            @for (key, value) in map.iter().take(MAX_ITEMS) {
                tr {
                    th scope="row" { (key) }
                    td.value {
                        @match value {
                            Value::String(s) => (shorten(s, MAX_VALUE_CHARS)),
                            other => code { (shorten(&other.to_string(), MAX_VALUE_CHARS)) },
                        }
                    }
                }
            }
        }
        (cut(map.len(), "attributes"))
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
