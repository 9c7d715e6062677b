//! The trace page (`/traces/{trace_id}`): a waterfall like Jaeger's of every
//! span of one trace (service, name, kind, offset and length, errors in
//! red), each span's details (facts, attributes, events, links) behind its
//! name without script, a consumer's time in Kafka beside its time in the
//! handler, the traces it links to and those that link to it, the
//! correlations it belongs to and its log lines. Built from the document of
//! `GET /api/traces/{trace_id}` (`crate::query::trace`) by pure functions.

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::correlation::plural;
use super::layout::{self, Section};
use super::waterfall::{Detail, Extent, span_table};
use super::{Page, clock_ms, correlation_href, rfc3339_ms, shorten, trace_href};
use crate::http::ConsoleState;
use crate::query::{self, SpanView, TraceDocument};

/// Span rows one page shows (each carries its details): a bigger trace is
/// cut in tree order, and the page says so.
const MAX_ROWS: usize = 500;
/// Log lines one page shows.
const MAX_LOG_LINES: usize = 500;
/// Linked traces listed each way.
const MAX_LINKED: usize = 100;
/// Failed spans named at the top.
const MAX_FAILED: usize = 10;

pub(super) async fn page(
    State(state): State<ConsoleState>,
    trace_id: Result<Path<String>, PathRejection>,
) -> Response {
    let Path(raw) = match trace_id {
        Ok(id) => id,
        Err(e) => return super::bad_request(&e.body_text()).into_response(),
    };
    let trace_id = match parse_trace_id(&raw) {
        Ok(id) => id,
        Err(reason) => return super::bad_request(&reason).into_response(),
    };
    match query::trace(&state.store, &trace_id).await {
        Err(e) => super::unavailable(e).into_response(),
        Ok(Some(doc)) => {
            let title = format!("Trace {}", shorten(&doc.trace_id, 17));
            Page::ok(layout::page(
                &title,
                Section::None,
                false,
                render_trace(&doc),
            ))
            .into_response()
        }
        // Its spans never came, but other traces may link to it.
        Ok(None) => match state.store.linked_traces(&trace_id).await {
            Err(e) => super::unavailable(e).into_response(),
            Ok(linked) => unknown_trace(&trace_id, &linked).into_response(),
        },
    }
}

/// A trace id as W3C trace context writes it: 32 hex digits, not all
/// zero; lowercased. The reason when it is not one.
pub(crate) fn parse_trace_id(raw: &str) -> Result<String, String> {
    let id = raw.trim();
    let hex = id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex || id.bytes().all(|b| b == b'0') {
        return Err(format!(
            "A trace id is 32 hexadecimal digits, not all zero (like \
             4bf92f3577b34da6a3ce929d0e0e4736); \"{}\" is not one. Search for it instead if it \
             is another kind of id.",
            shorten(id, 64)
        ));
    }
    Ok(id.to_ascii_lowercase())
}

/// 404: no span of the trace, and what to do about it.
fn unknown_trace(trace_id: &str, linked: &[String]) -> Page {
    Page::error(
        StatusCode::NOT_FOUND,
        "No such trace",
        html! {
            "No span of trace " code { (trace_id) } " was received by this console. Services send "
            "their spans over OTLP when " code { "OTEL_EXPORTER_OTLP_ENDPOINT" } " points at the "
            "console (" code { "kausal up" } " does), and spans older than the retention are pruned. "
            @if !linked.is_empty() {
                "Spans of other traces link to it: "
                @for (i, t) in linked.iter().take(MAX_LINKED).enumerate() {
                    @if i > 0 { ", " }
                    a.id href=(trace_href(t)) { (t) }
                }
                ". "
            }
            "If the id names an event, an order or a correlation, search for it:"
        },
    )
}

/// The traces this one links to (from its spans' links), in the order
/// they are first named, and those that link to it (the rest of the
/// store's linked traces).
fn linked_both_ways(doc: &TraceDocument) -> (Vec<&str>, Vec<&str>) {
    let mut to: Vec<&str> = Vec::new();
    for s in &doc.spans {
        for link in s.links.as_array().into_iter().flatten() {
            if let Some(t) = link["trace_id"].as_str()
                && t != doc.trace_id
                && !to.contains(&t)
            {
                to.push(t);
            }
        }
    }
    let from = doc
        .linked_traces
        .iter()
        .map(String::as_str)
        .filter(|t| *t != doc.trace_id && !to.contains(t))
        .collect();
    (to, from)
}

/// The page's content (under the navigation).
pub fn render_trace(doc: &TraceDocument) -> Markup {
    let spans: Vec<&SpanView> = doc.spans.iter().collect();
    let extent = Extent::of(&spans);
    let start_ms = extent.start_ns.div_euclid(1_000_000);
    let mut services: Vec<&str> = spans.iter().filter_map(|s| s.service.as_deref()).collect();
    services.sort_unstable();
    services.dedup();
    let failed: Vec<&SpanView> = spans
        .iter()
        .copied()
        .filter(|s| s.status == "error")
        .collect();
    let (links_to, linked_from) = linked_both_ways(doc);
    html! {
        h1 { "Trace " span.id { (doc.trace_id) } }
        p.meta {
            (spans.len()) " span" (plural(spans.len()))
            " · " (format!("{:.1}", extent.total_ns / 1e6)) " ms"
            " · started " time datetime=(rfc3339_ms(start_ms)) { (clock_ms(start_ms)) " UTC" }
            " · " (services.len()) " service" (plural(services.len())) ": " (services.join(", "))
            @if !failed.is_empty() { " · " span.err { (failed.len()) " failed" } }
        }
        @if doc.truncated || spans.len() > MAX_ROWS || doc.logs.len() > MAX_LOG_LINES {
            p.note {
                "This trace is larger than one page shows: the first "
                (MAX_ROWS.min(spans.len())) " of " (spans.len())
                @if doc.truncated { " or more (the console reads at most 2 000 spans and 2 000 log lines of a trace)" }
                " spans are in the waterfall, and at most " (MAX_LOG_LINES) " log lines. "
                a href={ "/api/traces/" (doc.trace_id) } { "The API" } " has up to 2 000 of each."
            }
        }
        @if !failed.is_empty() {
            section #answer.answer.failed aria-label="Failed spans" {
                @for s in failed.iter().take(MAX_FAILED) {
                    p.finding {
                        strong.service { (s.service.as_deref().unwrap_or("?")) } " failed in "
                        a href={ "#span-" (s.span_id) } { (s.name) }
                        @if let Some(m) = &s.status_message { ": " code.err { (shorten(m, 200)) } }
                    }
                }
                @if failed.len() > MAX_FAILED {
                    p.note { "…and " (failed.len() - MAX_FAILED) " more failed spans, red below." }
                }
            }
        }
        dl.trace-facts {
            dt { "Correlation" (plural(doc.correlation_ids.len())) }
            dd {
                @if doc.correlation_ids.is_empty() {
                    span.meta { "None named by its spans or log lines." }
                }
                @for (i, c) in doc.correlation_ids.iter().enumerate() {
                    @if i > 0 { ", " }
                    a.id href=(correlation_href(c)) { (c) }
                }
            }
            dt { "Links to" }
            dd { (trace_list(&links_to, "No span of this trace links another trace.")) }
            dt { "Linked from" }
            dd { (trace_list(&linked_from, "No span of another trace links this one.")) }
        }
        nav.toc aria-label="Sections" {
            a href="#waterfall" { "Waterfall" } " · "
            a href="#logs" { "Log lines (" (doc.logs.len()) ")" }
        }
        section #waterfall {
            h2 { "Waterfall" }
            p.legend {
                "Children under their parents in start order; the bar is the span's place in the "
                "trace. " span.err { "Red: a span that ended in error." }
                " Open a span's name for its attributes, events and links. Where a consumer follows "
                "a producer of this trace, the thin bar before it is the record's time in Kafka."
            }
            (span_table(&spans, Detail::Full, MAX_ROWS))
        }
        section #logs {
            h2 { "Log lines" }
            @if doc.logs.is_empty() {
                p.note {
                    "No log line of this trace was received (services send their JSON log lines "
                    "to the console over OTLP when " code { "kausal up" } " runs them)."
                }
            } @else {
                (super::correlation::log_table(&doc.logs[..doc.logs.len().min(MAX_LOG_LINES)]))
            }
        }
    }
}

fn trace_list(traces: &[&str], none: &str) -> Markup {
    html! {
        @if traces.is_empty() {
            span.meta { (none) }
        }
        @for (i, t) in traces.iter().take(MAX_LINKED).enumerate() {
            @if i > 0 { ", " }
            a.id href=(trace_href(t)) { (t) }
        }
        @if traces.len() > MAX_LINKED {
            " " span.meta { "and " (traces.len() - MAX_LINKED) " more" }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::query::LogView;
    use serde_json::json;

    const T1: &str = "0af7651916cd43dd8448eb211c80319c";
    const T2: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const T3: &str = "11111111111111111111111111111111";

    /// A console over a fresh SQLite store; the directory lives as long as
    /// the first value.
    pub(crate) async fn state() -> (tempfile::TempDir, ConsoleState) {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("pages.db").display());
        let store = kausal_store::Store::connect(&url).await.expect("store");
        let addr = "127.0.0.1:0".parse().expect("addr");
        let state = ConsoleState::new(store, &crate::ConsoleConfig::new(addr, "t")).expect("state");
        (dir, state)
    }

    /// The status and body of a page handler's answer.
    pub(crate) async fn read(response: Response) -> (StatusCode, String) {
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 16 << 20)
            .await
            .expect("body");
        (status, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    fn span(id: &str, parent: Option<&str>, kind: &str, start_ms: i64, ms: f64) -> SpanView {
        SpanView {
            service: Some(format!("{kind}-service")),
            trace_id: T1.into(),
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            name: format!("{kind} orders"),
            kind: kind.into(),
            start_ns: start_ms * 1_000_000,
            duration_ms: ms,
            status: "unset".into(),
            status_message: None,
            event_id: None,
            attributes: json!({}),
            events: json!([]),
            links: json!([]),
        }
    }

    /// A producer, the consumer that failed on its record (7 ms later), and
    /// a replay's trace T3 linking this one.
    fn document() -> TraceDocument {
        let producer = span("aaaaaaaaaaaaaaaa", None, "producer", 0, 2.0);
        let mut consumer = span(
            "cccccccccccccccc",
            Some("aaaaaaaaaaaaaaaa"),
            "consumer",
            7,
            3.0,
        );
        consumer.status = "error".into();
        consumer.status_message = Some("GatewayUnavailable: <down>".into());
        consumer.event_id = Some("ev-1".into());
        consumer.attributes = json!({
            "messaging.consumer.group.name": "payment-service",
            "messaging.kafka.offset": 41,
        });
        consumer.events = json!([{
            "name": "exception",
            "time_ns": 9_000_000,
            "attributes": {"exception.message": "gateway <b>down</b>"},
        }]);
        consumer.links = json!([
            {"trace_id": T1, "span_id": "aaaaaaaaaaaaaaaa", "attributes": {}},
            {"trace_id": T2, "span_id": "bbbbbbbbbbbbbbbb", "attributes": {"kind": "batch"}},
        ]);
        TraceDocument {
            trace_id: T1.into(),
            spans: vec![producer, consumer],
            logs: vec![LogView {
                time_ns: 8_000_000,
                service: Some("consumer-service".into()),
                level: Some("ERROR".into()),
                message: Some("payment failed".into()),
                trace_id: Some(T1.into()),
                span_id: Some("cccccccccccccccc".into()),
                correlation_id: Some("corr/1".into()),
                attributes: json!({"errorType": "GatewayUnavailable"}),
            }],
            linked_traces: vec![T2.into(), T3.into()],
            correlation_ids: vec!["corr/1".into()],
            truncated: false,
        }
    }

    #[test]
    fn a_trace_id_is_32_hex_digits_not_all_zero() {
        assert_eq!(parse_trace_id(&T2.to_uppercase()), Ok(T2.to_owned()));
        assert_eq!(parse_trace_id(&format!(" {T2} ")), Ok(T2.to_owned()));
        for bad in [&T2[1..], "zz".repeat(16).as_str(), &"0".repeat(32), "ord-1"] {
            let reason = parse_trace_id(bad).expect_err(bad);
            assert!(reason.contains("32 hexadecimal digits"), "{reason}");
        }
    }

    #[test]
    fn spans_open_to_their_details_and_a_consumer_shows_its_time_in_kafka() {
        let html = render_trace(&document()).into_string();
        // The failed span, named at the top and red in the waterfall.
        assert!(
            html.contains(r##"failed in <a href="#span-cccccccccccccccc">consumer orders</a>"##),
            "{html}"
        );
        assert!(
            html.contains(r#"<tr class="span error" id="span-cccccccccccccccc""#),
            "{html}"
        );
        // Details behind the name: facts, attributes, events, links, escaped.
        assert_eq!(
            html.matches("<details class=\"span\">").count(),
            2,
            "{html}"
        );
        assert!(
            html.contains("<th scope=\"row\">messaging.consumer.group.name</th><td class=\"value\">payment-service</td>"),
            "{html}"
        );
        assert!(html.contains("<code>41</code>"), "a number as JSON: {html}");
        assert!(
            html.contains("<strong>exception</strong> at +2.000 ms"),
            "{html}"
        );
        assert!(
            html.contains("gateway &lt;b&gt;down&lt;/b&gt;"),
            "escaped: {html}"
        );
        assert!(!html.contains("<b>down"), "{html}");
        assert!(html.contains("GatewayUnavailable: &lt;down&gt;"), "{html}");
        assert!(html.contains("<dd><code>ev-1</code></dd>"), "{html}");
        // A link to another trace leads to the linked span on its page.
        let to_t2 = format!(r#"href="/traces/{T2}#span-bbbbbbbbbbbbbbbb""#);
        assert!(html.contains(&to_t2), "{html}");
        // The time in Kafka: producer start (0 ms) to consumer start (7 ms).
        assert!(
            html.contains(
                "<strong>7.0 ms</strong> in Kafka, <strong>3.0 ms</strong> in the handler"
            ),
            "{html}"
        );
        assert!(
            html.contains(r#"<rect class="kafka" x="0.0" y="4" width="700.0" height="4">"#),
            "the Kafka wait is drawn before the consumer's bar: {html}"
        );
        // Links both ways, correlations, log lines.
        let facts =
            &html[html.find("trace-facts").expect("facts")..html.find("nav class").expect("toc")];
        assert!(
            facts.contains(r#"href="/correlations/corr%2F1""#),
            "{facts}"
        );
        let links_to =
            &facts[facts.find("Links to").expect("to")..facts.find("Linked from").expect("from")];
        assert!(links_to.contains(&format!("/traces/{T2}")), "{links_to}");
        assert!(!links_to.contains(T3), "{links_to}");
        let linked_from = &facts[facts.find("Linked from").expect("from")..];
        assert!(
            linked_from.contains(&format!("/traces/{T3}")),
            "{linked_from}"
        );
        assert!(!linked_from.contains(T2), "{linked_from}");
        assert!(html.contains("payment failed"), "{html}");
        assert!(!html.contains("larger than one page"), "{html}");
    }

    #[test]
    fn a_huge_trace_shows_its_first_spans_and_says_so() {
        let mut doc = document();
        doc.spans = (0..MAX_ROWS + 100)
            .map(|i| span(&format!("{i:016x}"), None, "internal", i as i64, 1.0))
            .collect();
        doc.truncated = true;
        let html = render_trace(&doc).into_string();
        assert_eq!(
            html.matches("<tr class=\"span").count(),
            MAX_ROWS,
            "rows are bounded"
        );
        assert!(
            html.contains(&format!(
                "the first {MAX_ROWS} of {} or more",
                MAX_ROWS + 100
            )),
            "{html}"
        );
    }

    fn row(trace: &str, span: &str, links: &[(&str, &str)]) -> kausal_store::SpanRow {
        kausal_store::SpanRow {
            trace_id: trace.into(),
            span_id: span.into(),
            parent_span_id: None,
            name: "send orders".into(),
            kind: "producer".into(),
            service: Some("kausal-console".into()),
            start_ns: 1_700_000_000_000_000_000,
            end_ns: 1_700_000_000_002_000_000,
            status_code: "unset".into(),
            status_message: None,
            correlation_id: Some("corr-9".into()),
            event_id: None,
            detail: kausal_store::SpanDetail::Otlp(crate::otlp::detail::encode(
                &opentelemetry_proto::tonic::trace::v1::Span {
                    links: links
                        .iter()
                        .map(|(t, s)| opentelemetry_proto::tonic::trace::v1::span::Link {
                            trace_id: hex::decode(t).expect("hex"),
                            span_id: hex::decode(s).expect("hex"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            )),
            resource_id: None,
            received_at_ms: 1_700_000_000_000,
        }
    }

    /// The route against a real store: 400 for what is not a trace id, 404
    /// naming the traces that link to an unknown one, 200 for a known one
    /// whatever its case.
    #[tokio::test]
    async fn the_page_answers_400_404_and_200() {
        let (_dir, state) = state().await;
        let replay = row(T3, "3333333333333333", &[(T1, "aaaaaaaaaaaaaaaa")]);
        let link = kausal_store::SpanLinkRow {
            trace_id: T3.into(),
            span_id: "3333333333333333".into(),
            linked_trace_id: T1.into(),
            linked_span_id: "aaaaaaaaaaaaaaaa".into(),
        };
        state
            .store
            .record_telemetry(&[replay], &[link], &[], &[], 1)
            .await
            .expect("record");
        let get = |id: &str| page(State(state.clone()), Ok(Path(id.to_owned())));

        let (status, html) = read(get("ord-1").await).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(html.contains("32 hexadecimal digits"), "{html}");

        let (status, html) = read(get(T1).await).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(html.contains("No such trace"), "{html}");
        assert!(
            html.contains(&format!(r#"<a class="id" href="/traces/{T3}">"#)),
            "the unknown trace's linkers: {html}"
        );

        let (status, html) = read(get(&T3.to_uppercase()).await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("send orders"), "{html}");
        assert!(html.contains(r#"href="/correlations/corr-9""#), "{html}");
        assert!(
            html.contains(&format!(r#"href="/traces/{T1}#span-aaaaaaaaaaaaaaaa""#)),
            "{html}"
        );
    }
}
