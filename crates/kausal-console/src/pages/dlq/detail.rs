//! One dead letter in full (`/dlq/{id}`): its status (who, when, why) with
//! Replay and Discard, where and why it failed, the original record's
//! headers (trace and correlation ids as links), key and payload (JSON
//! pretty-printed, text as text, other bytes in hex), and the lineage
//! chain of its correlation with the dead-lettered event marked.

use maud::{Markup, html};

use super::{action_forms, actions_cell, age, date_time};
use crate::dlq::{Bytes, DeadLetterDetail, HeaderView};
use crate::pages::correlation::event_anchor;
use crate::pages::{correlation_href, rfc3339_ms, shorten, topic_href, trace_href};

/// Characters of a payload or key shown; the API has the whole of it.
const MAX_BYTES_SHOWN: usize = 64 * 1024;
/// Events of the lineage chain shown.
const MAX_CHAIN: usize = 200;
/// Bytes per line of a hex dump.
const HEX_LINE: usize = 16;

/// The page's content (under the navigation).
pub(crate) fn render_detail(d: &DeadLetterDetail, now_ms: i64) -> Markup {
    let s = &d.summary;
    html! {
        p.back { a href="/dlq" { "← Dead letters" } }
        h1 { "Dead letter " span.id { (s.id) } }
        p.meta {
            (s.event_type.as_deref().unwrap_or("(no event-type)"))
            " failed in " strong { (s.service.as_deref().unwrap_or("?")) }
            " · " time datetime=(rfc3339_ms(s.failed_at_ms)) { (date_time(s.failed_at_ms)) " UTC" }
            " (" (age((now_ms - s.failed_at_ms) / 1000)) " ago)"
            @if let Some(c) = &s.correlation_id {
                " · correlation " a.id href=(correlation_href(c)) { (c) }
            }
        }
        section #status aria-labelledby="status-title" {
            h2 #status-title { "Status" }
            @if s.status == "pending" {
                p.hint {
                    "Pending since it failed: replay it to " code { (s.source_topic) }
                    " once the cause is fixed, or discard it with a reason."
                }
                (action_forms())
            }
            div.scroll {
                table.dead-letters.dlq-status {
                    thead {
                        tr {
                            th scope="col" { "status" }
                            th.num scope="col" { "replays" }
                            th scope="col" {
                                @if s.status == "pending" { "actions" } @else { "who, when, why" }
                            }
                        }
                    }
                    tbody {
                        tr id={ "dlq-" (s.id) } data-dlq-id=(s.id) data-topic=(s.source_topic) {
                            td { span class={ "status " (s.status) } data-status { (s.status) } }
                            td.num { (s.replay_count) }
                            (actions_cell(s))
                        }
                    }
                }
            }
        }
        section #failure aria-labelledby="failure-title" {
            h2 #failure-title { "Where and why it failed" }
            dl.facts {
                dt { "Source" }
                dd {
                    a href=(topic_href(&s.source_topic)) { code { (s.source_topic) } }
                    @if let Some(p) = s.source_partition { " partition " (p) }
                    @if let Some(o) = s.source_offset { " offset " (o) }
                }
                dt { "Dead-letter topic" }
                dd { a href=(topic_href(&s.dlq_topic)) { code { (s.dlq_topic) } } }
                dt { "Consumer group" }
                dd { @match &s.consumer_group { Some(g) => { code { (g) } }, None => { span.meta { "—" } } } }
                dt { "Service" }
                dd { (s.service.as_deref().unwrap_or("—")) }
                dt { "Event" }
                dd {
                    (s.event_type.as_deref().unwrap_or("(no event-type)")) " "
                    a.id href=(search_href(&s.event_id)) { (s.event_id) }
                }
                dt { "Error type" }
                dd { @match &s.error_type { Some(t) => { code.err { (t) } }, None => { span.meta { "—" } } } }
                dt { "Error message" }
                dd { @match &s.error_message { Some(m) => { pre.error-message { (shorten(m, 4000)) } }, None => { span.meta { "—" } } } }
                dt { "Attempts" }
                dd { (s.attempts.map(|a| a.to_string()).unwrap_or_else(|| "—".into())) }
                dt { "Failed at" }
                dd { time datetime=(rfc3339_ms(s.failed_at_ms)) { (s.failed_at) } }
                dt { "Replays" }
                dd { (s.replay_count) " (each replay adds one to the record's " code { "replay-count" } " header; the cap refuses more)" }
            }
        }
        section #headers aria-labelledby="headers-title" {
            h2 #headers-title { "Original headers" }
            (headers(&d.headers))
        }
        section #payload aria-labelledby="payload-title" {
            h2 #payload-title { "Key and payload" }
            h3 { "Key" }
            (bytes(d.key.as_ref(), "The record had no key."))
            h3 { "Payload" }
            (bytes(d.payload.as_ref(), "The ledger has no payload for it: the dead-letter record came without a value."))
        }
        section #lineage aria-labelledby="lineage-title" {
            h2 #lineage-title { "Lineage" }
            (lineage(d))
        }
    }
}

/// The search page's link for an id (an event id resolves to its
/// correlation there).
fn search_href(id: &str) -> String {
    format!(
        "/search?q={}",
        percent_encoding::utf8_percent_encode(id, crate::pages::SEGMENT)
    )
}

fn headers(headers: &[HeaderView]) -> Markup {
    if headers.is_empty() {
        return html! { p.note { "The original record had no header (or the ledger kept none)." } };
    }
    html! {
        div.scroll {
            table.headers {
                thead { tr { th scope="col" { "name" } th scope="col" { "value" } } }
                tbody {
                    @for h in headers {
                        tr {
                            td { code { (h.name) } }
                            td.value { (header_value(h)) }
                        }
                    }
                }
            }
        }
    }
}

/// A header's value, as a link where the console has a page for it.
fn header_value(h: &HeaderView) -> Markup {
    let Some(value) = &h.value else {
        return html! { span.meta { "(no value)" } };
    };
    let Bytes::Text(text) = value else {
        return html! { code { (shorten(&value.display(), 2000)) } };
    };
    match h.name.as_str() {
        kausal_core::headers::TRACEPARENT => match kausal_core::trace::TraceParent::parse(text) {
            Ok(tp) => html! {
                code { (text) } " · trace "
                a.id href=(trace_href(&tp.trace_id.to_string())) { (tp.trace_id.to_string()) }
            },
            Err(_) => html! { code { (text) } " " span.meta { "(not a valid traceparent)" } },
        },
        kausal_core::headers::CORRELATION_ID => html! {
            a.id href=(correlation_href(text)) { (text) }
        },
        kausal_core::headers::EVENT_ID | kausal_core::headers::CAUSATION_ID => html! {
            a.id href=(search_href(text)) { (text) }
        },
        _ => html! { code { (shorten(text, 2000)) } },
    }
}

/// Bytes as a reader wants them, bounded.
fn bytes(value: Option<&Bytes>, none: &str) -> Markup {
    let Some(value) = value else {
        return html! { p.note { (none) } };
    };
    let (kind, text) = match value {
        Bytes::Json(v) => (
            "JSON, pretty-printed",
            serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()),
        ),
        Bytes::Text(t) => ("text (not JSON)", t.clone()),
        Bytes::Hex(h) => ("bytes that are not UTF-8, in hex", hex_dump(h)),
    };
    let cut = text.chars().count() > MAX_BYTES_SHOWN;
    html! {
        p.meta { (kind) }
        pre.bytes { (shorten(&text, MAX_BYTES_SHOWN)) }
        @if cut {
            p.note {
                "Cut at " (MAX_BYTES_SHOWN / 1024) " KiB: the whole of it is in "
                code { "GET /api/dlq/{id}" } " and " code { "kausal dlq show <id> --json" } "."
            }
        }
    }
}

/// `ff00a1…` as lines of 16 bytes, two digits a byte, spaced.
fn hex_dump(hex: &str) -> String {
    let digits: Vec<char> = hex.chars().collect();
    digits
        .chunks(2 * HEX_LINE)
        .map(|line| {
            line.chunks(2)
                .map(|b| b.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn lineage(d: &DeadLetterDetail) -> Markup {
    let s = &d.summary;
    let Some(correlation) = &s.correlation_id else {
        return html! { p.note { "The record carried no correlation id: there is no chain to show." } };
    };
    if d.lineage.is_empty() {
        return html! {
            p.note {
                "No event of correlation " code { (correlation) } " is recorded (not yet, or pruned "
                "after the retention age; the ledger keeps its entries longer)."
            }
        };
    }
    let shown = &d.lineage[..d.lineage.len().min(MAX_CHAIN)];
    html! {
        p.meta {
            "The events of correlation " a.id href=(correlation_href(correlation)) { (correlation) }
            ", in time order; the one that failed here is marked. The correlation page has the "
            "whole story (receipts, spans, logs)."
        }
        div.scroll {
            table.chain {
                thead {
                    tr {
                        th scope="col" { "time (UTC)" }
                        th scope="col" { "event" }
                        th scope="col" { "from" }
                        th scope="col" { "topic" }
                        th scope="col" { "event id" }
                        th scope="col" { "caused by" }
                    }
                }
                tbody {
                    @for e in shown {
                        @let here = e.event_id == s.event_id;
                        tr class=[here.then_some("here")] {
                            td.time { time datetime=(rfc3339_ms(e.occurred_at_ms)) { (date_time(e.occurred_at_ms)) } }
                            td {
                                a href={ (correlation_href(correlation)) (event_anchor(&e.event_id).1) } {
                                    (e.event_type.as_deref().unwrap_or("(no event-type)"))
                                }
                                @if here { " " strong.err { "← dead-lettered here" } }
                            }
                            td { (e.source_service.as_deref().unwrap_or("?")) }
                            td { code { (e.topic) "[" (e.partition) "]@" (e.offset) } }
                            td { span.id { (e.event_id) } }
                            td { @if let Some(c) = &e.causation_id { span.id { (shorten(c, 13)) } } }
                        }
                    }
                }
            }
        }
        @if d.lineage.len() > shown.len() {
            p.note {
                "Showing the first " (MAX_CHAIN) " of " (d.lineage.len()) " events: the "
                a href=(correlation_href(correlation)) { "correlation page" } " has them all."
            }
        }
        @if !shown.iter().any(|e| e.event_id == s.event_id) {
            p.note {
                "The dead-lettered event " span.id { (s.event_id) } " itself is not in the recorded "
                "chain (not recorded yet, or pruned); its payload is above."
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::correlation::tests::{event, summary};

    fn detail() -> DeadLetterDetail {
        let mut s = summary("dlq-7", "e2", "pending");
        s.error_message = Some("gateway <down>".into());
        DeadLetterDetail {
            summary: s,
            key: Some(Bytes::Text("ord-1".into())),
            headers: vec![
                HeaderView {
                    name: "traceparent".into(),
                    value: Some(Bytes::Text(format!(
                        "00-{}-{}-01",
                        "ab".repeat(16),
                        "cd".repeat(8)
                    ))),
                },
                HeaderView {
                    name: "correlation-id".into(),
                    value: Some(Bytes::Text("corr/1".into())),
                },
                HeaderView {
                    name: "baggage".into(),
                    value: None,
                },
                HeaderView {
                    name: "blob".into(),
                    value: Some(Bytes::Hex("ff00".into())),
                },
            ],
            payload: Some(Bytes::Json(
                serde_json::json!({"order_id": "ord-1", "total": 12}),
            )),
            lineage: vec![
                event("e1", None, "OrderPlaced", "order-service"),
                event("e2", Some("e1"), "PaymentProcessed", "payment-service"),
            ],
        }
    }

    #[test]
    fn the_detail_has_status_actions_facts_headers_payload_and_chain() {
        let html = render_detail(&detail(), 1_700_000_300_100).into_string();
        assert!(
            html.contains(r#"<tr id="dlq-dlq-7" data-dlq-id="dlq-7" data-topic="payments">"#),
            "{html}"
        );
        assert!(html.contains(r#"data-action="discard-dry""#), "{html}");
        assert!(html.contains(r#"id="token-form""#), "{html}");
        assert!(html.contains("(5 min ago)"), "{html}");
        assert!(
            html.contains(
                r#"<a href="/topics/payments"><code>payments</code></a> partition 0 offset 1"#
            ),
            "{html}"
        );
        assert!(html.contains("gateway &lt;down&gt;"), "escaped: {html}");
        let trace = "ab".repeat(16);
        assert!(
            html.contains(&format!(
                r#"<a class="id" href="/traces/{trace}">{trace}</a>"#
            )),
            "{html}"
        );
        assert!(
            html.contains(r#"<a class="id" href="/correlations/corr%2F1">corr/1</a>"#),
            "{html}"
        );
        assert!(html.contains("(no value)"), "{html}");
        assert!(html.contains("<code>0xff00</code>"), "{html}");
        assert!(html.contains("JSON, pretty-printed"), "{html}");
        assert!(
            html.contains(
                "{\n  &quot;order_id&quot;: &quot;ord-1&quot;,\n  &quot;total&quot;: 12\n}"
            ),
            "{html}"
        );
        assert!(html.contains(r#"<tr class="here">"#), "{html}");
        assert!(html.contains("← dead-lettered here"), "{html}");
        assert_eq!(html.matches("<tr class=\"here\">").count(), 1, "{html}");
        assert!(
            html.contains(r##"href="/correlations/corr-1#event-e1""##),
            "{html}"
        );
    }

    #[test]
    fn a_settled_entry_says_who_and_has_no_buttons() {
        let mut d = detail();
        d.summary.status = "replayed".into();
        d.summary.status_by = Some("console:alice".into());
        d.summary.status_changed_at = Some("2023-11-14T22:14:00Z".into());
        let html = render_detail(&d, 1_700_000_060_100).into_string();
        assert!(
            html.contains("replayed by console:alice at 2023-11-14T22:14:00Z"),
            "{html}"
        );
        assert!(!html.contains("data-action"), "{html}");
        assert!(!html.contains("token-form"), "{html}");
    }

    #[test]
    fn bytes_show_as_text_or_hex_and_are_bounded() {
        assert_eq!(hex_dump("ff00"), "ff 00");
        assert_eq!(
            hex_dump(&"ab".repeat(17)),
            format!("{}\nab", ["ab"; 16].join(" "))
        );
        let html = bytes(Some(&Bytes::Hex("ff00".into())), "none").into_string();
        assert!(
            html.contains("in hex") && html.contains("<pre class=\"bytes\">ff 00</pre>"),
            "{html}"
        );
        let long = Bytes::Text("x".repeat(MAX_BYTES_SHOWN + 10));
        let html = bytes(Some(&long), "none").into_string();
        assert!(html.contains("Cut at 64 KiB"), "{html}");
        assert!(bytes(None, "No key.").into_string().contains("No key."));
    }

    #[test]
    fn a_bad_traceparent_is_shown_not_linked() {
        let h = HeaderView {
            name: "traceparent".into(),
            value: Some(Bytes::Text("garbage".into())),
        };
        let html = header_value(&h).into_string();
        assert!(
            html.contains("not a valid traceparent") && !html.contains("/traces/"),
            "{html}"
        );
    }

    #[test]
    fn no_chain_says_why() {
        let mut d = detail();
        d.lineage.clear();
        assert!(
            render_detail(&d, 0)
                .into_string()
                .contains("No event of correlation")
        );
        d.summary.correlation_id = None;
        assert!(
            render_detail(&d, 0)
                .into_string()
                .contains("no correlation id")
        );
    }
}
