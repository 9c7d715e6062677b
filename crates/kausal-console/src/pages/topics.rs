//! The topics pages: `/topics`, every topic with its partitions, records
//! and the groups reading it; `/topics/{name}`, a topic's records — the
//! newest, from an offset, from a time, or by key — with their headers
//! decoded into links (trace, correlation, event). Built from
//! `crate::records` (the reads, bounded), by pure functions: data in,
//! markup out.
//!
//! Without Kafka both pages answer 503 and say how to give the console one;
//! a Kafka that does not answer is a 503 too, an unknown topic a 404, a
//! position the page cannot use a 400 with the reason.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use percent_encoding::utf8_percent_encode;

use super::layout::{self, Section};
use super::{
    Page, SEGMENT, clock_ms, correlation_href, rfc3339_ms, shorten, topic_href, trace_href,
};
use crate::dlq::Bytes;
use crate::http::ConsoleState;
use crate::records::{
    self, Cursors, HeaderLine, HeaderLink, KeyLookup, Order, PAGE, Position, RecordPage,
    RecordParams, RecordQuery, RecordView, Shown, TopicError, TopicKind, TopicList, TopicRow,
};

/// `/topics`.
pub(super) async fn index(State(state): State<ConsoleState>) -> Response {
    let Some(kafka) = &state.kafka else {
        return no_kafka().into_response();
    };
    match records::topic_list(kafka, &state.lag, records::KAFKA_TIMEOUT).await {
        Ok(list) => Page::ok(layout::page(
            "Topics",
            Section::Topics,
            false,
            render_topics(&list),
        ))
        .into_response(),
        Err(e) => failed(e, &kafka.bootstrap_servers).into_response(),
    }
}

/// `/topics/{name}?partition=&offset=&since=&key=&from=&before=`.
pub(super) async fn topic(
    State(state): State<ConsoleState>,
    name: Result<Path<String>, PathRejection>,
    params: Result<Query<RecordParams>, QueryRejection>,
) -> Response {
    let name = match name {
        Ok(Path(name)) => name,
        Err(e) => return bad_position(&e.body_text()).into_response(),
    };
    let name = match records::checked_topic(&name) {
        Ok(name) => name,
        Err(reason) => return bad_position(&reason).into_response(),
    };
    let params = match params {
        Ok(Query(params)) => params,
        Err(e) => return bad_position(&e.body_text()).into_response(),
    };
    let Some(kafka) = &state.kafka else {
        return no_kafka().into_response();
    };
    let query = match RecordQuery::parse(&params, crate::now_ms()) {
        Ok(query) => query,
        Err(reason) => return bad_position(&reason).into_response(),
    };
    match records::read_page(&state.store, kafka, name, query, records::KAFKA_TIMEOUT).await {
        Ok(page) => Page::ok(layout::page(
            &format!("Topic {}", shorten(name, 40)),
            Section::Topics,
            false,
            render_topic(&page),
        ))
        .into_response(),
        Err(e) => failed(e, &kafka.bootstrap_servers).into_response(),
    }
}

/// The console has no Kafka: 503, and how to give it one.
fn no_kafka() -> Page {
    Page::error(
        StatusCode::SERVICE_UNAVAILABLE,
        "No Kafka to read topics from",
        html! {
            "This console was started without Kafka, so it cannot read topics. Start it with "
            code { "kausal console --kafka <bootstrap servers>" }
            " (add " code { "--kafka-property" } " for TLS or SASL); " code { "kausal up" }
            " does this for its own cluster."
        },
    )
}

/// A position (or topic name) the page cannot use: 400 with the reason.
fn bad_position(reason: &str) -> Page {
    Page::error(
        StatusCode::BAD_REQUEST,
        "That position cannot be read",
        html! { (reason) ". " a href="/topics" { "See every topic" } "." },
    )
}

/// A read that failed: the page for each reason.
fn failed(e: TopicError, bootstrap: &str) -> Page {
    match e {
        TopicError::UnknownTopic(name) => Page::error(
            StatusCode::NOT_FOUND,
            "No such topic",
            html! {
                "Kafka has no topic " code { (name) } ". "
                a href="/topics" { "See every topic" } "."
            },
        ),
        TopicError::BadPosition(reason) => bad_position(&reason),
        TopicError::Store(e) => super::unavailable(e),
        e @ (TopicError::TimedOut(_) | TopicError::Kafka(_)) => {
            tracing::warn!(error = %e, "console cannot read Kafka");
            Page::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Kafka does not answer",
                html! {
                    (e.to_string()) ". The console reads from " code { (bootstrap) }
                    ": check that Kafka runs there and that the console can reach it, then reload."
                },
            )
        }
    }
}

/// The search for an id (an event id, a causation id).
fn search_href(id: &str) -> String {
    format!("/search?q={}", utf8_percent_encode(id, SEGMENT))
}

/// A topic's page at `position` (`from` or `before` cursors).
fn page_href(topic: &str, partition: Option<i32>, param: &str, at: &Cursors) -> String {
    let mut href = format!("{}?", topic_href(topic));
    if let Some(p) = partition {
        href.push_str(&format!("partition={p}&"));
    }
    href.push_str(&format!("{param}={}", at.to_param()));
    href
}

/// The search for `key` on `topic`.
fn key_href(topic: &str, key: &str) -> String {
    format!(
        "{}?key={}",
        topic_href(topic),
        utf8_percent_encode(key, SEGMENT)
    )
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `/topics`' content.
pub fn render_topics(list: &TopicList) -> Markup {
    const KINDS: [(TopicKind, &str, &str); 3] = [
        (TopicKind::Business, "business", "Business topics"),
        (TopicKind::DeadLetter, "dead-letter", "Dead-letter topics"),
        (TopicKind::Kausal, "kausal", "Kausal's own topics"),
    ];
    let blurb = |kind| match kind {
        TopicKind::Business => html! { "The events of the system." },
        TopicKind::DeadLetter => html! {
            "Records a consumer failed on for good, with their original key, value and headers: "
            "replay or discard them from " a href="/dlq" { "Dead letters" } "."
        },
        TopicKind::Kausal => html! {
            "Receipts (which group handled which event, and how) and consumer heartbeats."
        },
    };
    html! {
        h1 { "Topics" }
        p.lead {
            "Every topic of the cluster at " code { (list.bootstrap) } ": its partitions, the "
            "records still in its log (high minus low watermark) and the consumer groups the "
            a href="/lag" { "lag monitor" } " saw reading it, with their lag in records. Open a "
            "topic to read its records."
        }
        @if let Some(note) = &list.groups_note {
            p.note { "Consumer groups: " (note) "." }
        }
        @if list.rows.is_empty() {
            p.note { "The cluster has no topic yet." }
        }
        @for (kind, id, title) in KINDS {
            @let rows: Vec<&TopicRow> = list.rows.iter().filter(|r| r.kind == kind).collect();
            @if !rows.is_empty() {
                section.topics id=(id) {
                    h2 { (title) " (" (rows.len()) ")" }
                    p.legend { (blurb(kind)) }
                    div.scroll {
                        table.topics {
                            thead {
                                tr {
                                    th scope="col" { "topic" }
                                    th.num scope="col" { "partitions" }
                                    th.num scope="col" { "records" }
                                    th scope="col" { "consumer groups (lag)" }
                                }
                            }
                            tbody {
                                @for r in rows {
                                    tr {
                                        td { a.topic href=(topic_href(&r.name)) { (r.name) } }
                                        td.num { (r.partitions) }
                                        td.num { (r.records) }
                                        td.groups {
                                            @for (i, g) in r.groups.iter().enumerate() {
                                                @if i > 0 { ", " }
                                                code { (g.group) } " (" (g.lag) ")"
                                            }
                                            @if r.groups.is_empty() { span.meta { "—" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if list.internal_hidden > 0 {
            p.note {
                (list.internal_hidden) " internal topic" (plural(list.internal_hidden))
                " of Kafka (" code { "__…" } ") not shown."
            }
        }
        @if list.cut > 0 {
            p.note {
                "Only the first " (records::MAX_TOPICS) " topics by name are shown: "
                (list.cut) " more are not."
            }
        }
    }
}

/// `/topics/{name}`'s content.
pub fn render_topic(page: &RecordPage) -> Markup {
    let total: i64 = page
        .partitions
        .iter()
        .map(|w| (w.high - w.low).max(0))
        .sum();
    let kind = match TopicKind::of(&page.topic) {
        TopicKind::Business => "business topic",
        TopicKind::DeadLetter => "dead-letter topic",
        TopicKind::Kausal => "Kausal's own topic",
    };
    html! {
        h1 { "Topic " span.id { (page.topic) } }
        p.meta {
            (kind) " · " (page.partitions.len()) " partition" (plural(page.partitions.len()))
            " · " (total) " record" (plural(total as usize)) " in the log · "
            a href="/topics" { "every topic" }
        }
        div.finders {
            (position_form(page))
            (key_form(page))
        }
        section #records aria-label="Records" {
            (summary(page))
            (pager(page, "Pages"))
            @for r in &page.records { (record(r)) }
            @if page.records.len() > 3 { (pager(page, "Pages, at the end")) }
        }
    }
}

fn position_form(page: &RecordPage) -> Markup {
    let q = &page.query;
    let offset = match q.position {
        Position::Offset(o) => Some(o.to_string()),
        _ => None,
    };
    let since = match &q.position {
        Position::Since { text, .. } => Some(text.as_str()),
        _ => None,
    };
    html! {
        form.position method="get" action=(topic_href(&page.topic)) aria-label="Position" {
            div.field {
                label for="partition" { "Partition" }
                select #partition name="partition" {
                    option value="all" selected[q.partition.is_none()] { "all" }
                    @for w in &page.partitions {
                        option value=(w.partition) selected[q.partition == Some(w.partition)] {
                            (w.partition)
                            @if w.high > w.low { " — offsets " (w.low) "–" (w.high - 1) }
                            @else { " — empty" }
                        }
                    }
                }
            }
            div.field {
                label for="offset" { "From offset" }
                input #offset type="number" name="offset" min="0" step="1" value=[offset]
                    inputmode="numeric";
            }
            div.field {
                label for="since" { "Since" }
                input #since type="text" name="since" value=[since] maxlength="40"
                    spellcheck="false" placeholder="30m, 2h or 2026-11-02T10:00:00Z";
            }
            button type="submit" { "Show" }
            a.newest href=(topic_href(&page.topic)) { "Newest" }
        }
    }
}

fn key_form(page: &RecordPage) -> Markup {
    let key = match &page.query.position {
        Position::Key(k) => Some(k.as_str()),
        _ => None,
    };
    html! {
        form.key method="get" action=(topic_href(&page.topic)) role="search" {
            div.field {
                label for="key" { "Key" }
                input #key type="search" name="key" value=[key] maxlength="256"
                    autocomplete="off" spellcheck="false" placeholder="ord-1042";
            }
            button type="submit" { "Find by key" }
            p.hint {
                "Finds the events the lineage recorder stored with this key (business and "
                "dead-letter topics), then reads those records from Kafka. A record that was "
                "never recorded is not found this way: read from a position instead."
            }
        }
    }
}

/// What the page shows, in a sentence.
fn summary(page: &RecordPage) -> Markup {
    let n = page.records.len();
    let shown = html! { "Showing " strong { (n) } " record" (plural(n)) };
    let partition = match page.query.partition {
        Some(p) => format!(" of partition {p}"),
        None => String::new(),
    };
    let order = match page.order {
        Order::NewestFirst => "newest first",
        Order::OldestFirst => "oldest first",
    };
    html! {
        @match &page.query.position {
            Position::Newest => {
                p.summary { (shown) (partition) ", newest first: the latest of the log." }
            }
            Position::Before(_) => {
                p.summary { (shown) (partition) " older than the page before, " (order) "." }
            }
            Position::From(_) => {
                p.summary { (shown) (partition) " newer than the page before, " (order) "." }
            }
            Position::Offset(o) => {
                p.summary { (shown) (partition) " from offset " (o) " on, " (order) "." }
            }
            Position::Since { at_ms, text } => {
                p.summary {
                    (shown) (partition) " from " code { (text) } " ("
                    time datetime=(rfc3339_ms(*at_ms)) { (rfc3339_ms(*at_ms)) } ") on, " (order) "."
                }
            }
            Position::Key(_) => {
                @if let Some(k) = &page.keyed { (key_summary(page, k)) }
            }
        }
        @if n == 0 && page.keyed.is_none() {
            p.note {
                @if page.order == Order::OldestFirst {
                    "No record at or after this position yet."
                } @else {
                    "No record here: the topic (or partition) holds none."
                }
            }
        }
        @if page.records.iter().any(|r| r.value.as_ref().is_some_and(|v| v.cut)) {
            p.note {
                "Values longer than " (records::MAX_VALUE_BYTES / 1024)
                " KiB are cut: the first " (records::MAX_VALUE_BYTES) " bytes are shown."
            }
        }
    }
}

fn key_summary(page: &RecordPage, k: &KeyLookup) -> Markup {
    html! {
        p.summary {
            "Key " code { (k.key) } ": " (k.recorded) " event" (plural(k.recorded))
            " recorded on this topic"
            @if let Some(p) = page.query.partition { " (partition " (p) ")" }
            "; " strong { (page.records.len()) } " read from Kafka, newest first."
        }
        @if k.recorded > PAGE {
            p.note { "Only the newest " (PAGE) " recorded events are read." }
        }
        @if k.recorded == 0 {
            p.note {
                "Key search covers the events the lineage recorder stored: no event with this key "
                "is recorded on this topic. Read from a position above to see every record."
            }
        }
        @if !k.missing.is_empty() {
            p.note {
                (k.missing.len()) " recorded record" (plural(k.missing.len()))
                " not in Kafka any more (retention or compaction), or not read in time: "
                @for (i, (p, o)) in k.missing.iter().enumerate() {
                    @if i > 0 { ", " }
                    "partition " (p) " offset " (o)
                }
                "."
            }
        }
        @if !k.elsewhere.is_empty() {
            p.note {
                "This key is also recorded on "
                @for (i, t) in k.elsewhere.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href=(key_href(t, &k.key)) { (t) }
                }
                "."
            }
        }
    }
}

/// The links to the newer and the older page, in a navigation landmark
/// named `label`.
fn pager(page: &RecordPage, label: &str) -> Markup {
    if page.keyed.is_some() {
        return html! {};
    }
    let p = page.query.partition;
    html! {
        nav.pager aria-label=(label) {
            @if let Some(at) = &page.newer {
                a rel="prev" href=(page_href(&page.topic, p, "from", at)) { "← Newer" }
            } @else {
                span.meta { "At the newest record" }
            }
            @if let Some(at) = &page.older {
                a rel="next" href=(page_href(&page.topic, p, "before", at)) { "Older →" }
            } @else {
                span.meta { "At the oldest record" }
            }
        }
    }
}

/// The element id of a record.
fn record_anchor(r: &RecordView) -> String {
    format!("p{}-{}", r.partition, r.offset)
}

fn record(r: &RecordView) -> Markup {
    let id = record_anchor(r);
    html! {
        article.record id=(id) {
            p.record-head {
                a.position href={ "#" (id) } { "partition " (r.partition) " · offset " (r.offset) }
                @if let Some(ts) = r.timestamp_ms {
                    " · " time datetime=(rfc3339_ms(ts)) title=(rfc3339_ms(ts)) { (clock_ms(ts)) " UTC" }
                }
                @if let Some(k) = &r.key {
                    " · key " code.key { (shorten(&k.bytes.display(), 120)) }
                }
                @if let Some(t) = r.event_type() { " · " strong { (t) } }
            }
            div.record-body {
                div.headers {
                    @if r.headers.is_empty() {
                        p.note { "No headers." }
                    } @else {
                        table.headers {
                            caption.visually-hidden { "Headers" }
                            tbody {
                                @for h in &r.headers {
                                    tr { th scope="row" { (h.name) } td { (header_value(h)) } }
                                }
                            }
                        }
                    }
                }
                div.value { (value(r.value.as_ref())) }
            }
        }
    }
}

fn header_value(h: &HeaderLine) -> Markup {
    let text = h
        .value
        .as_ref()
        .map(|v| shorten(&v.bytes.display(), 300))
        .unwrap_or_default();
    html! {
        @match &h.link {
            Some(HeaderLink::Trace(trace_id)) => {
                a.id href=(trace_href(trace_id)) title="the trace" { (text) }
            }
            Some(HeaderLink::Correlation(id)) => {
                a.id href=(correlation_href(id)) title="the correlation" { (id) }
            }
            Some(HeaderLink::Event(id)) => {
                a.id href=(search_href(id)) title="search for this event" { (id) }
            }
            Some(HeaderLink::Topic(name)) => { a href=(topic_href(name)) { (name) } }
            None => {
                @if h.value.is_some() { span.id { (text) } } @else { span.meta { "(null)" } }
            }
        }
        @if h.value.as_ref().is_some_and(|v| v.cut) { " " span.meta { "(cut)" } }
    }
}

fn value(v: Option<&Shown>) -> Markup {
    let Some(v) = v else {
        return html! { p.note { "No value (a tombstone)." } };
    };
    let (label, text) = match &v.bytes {
        Bytes::Json(j) => (
            "JSON",
            serde_json::to_string_pretty(j).unwrap_or_else(|_| j.to_string()),
        ),
        Bytes::Text(t) => ("text", t.clone()),
        Bytes::Hex(h) => ("bytes, in hex", h.clone()),
    };
    html! {
        p.encoding.meta {
            (label) " · " (v.len) " byte" (plural(v.len))
            @if v.cut { " · " span.cut { "the first " (records::MAX_VALUE_BYTES) " shown" } }
        }
        pre.value { code { (text) } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kausal_kafka::admin::Watermarks;
    use kausal_kafka::browse::{Excerpt, RecordCopy};
    use std::collections::BTreeMap;

    const TRACE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn order_record(offset: i64, value: &[u8]) -> RecordView {
        let header = |name: &str, v: &str| (name.to_owned(), Some(Excerpt::of(v.as_bytes(), 4096)));
        RecordView::of(&RecordCopy {
            partition: 1,
            offset,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some(Excerpt::of(b"ord-1", 4096)),
            value: Some(Excerpt::of(value, 16)),
            headers: vec![
                header(kausal_core::headers::TRACEPARENT, TRACE),
                header(kausal_core::headers::EVENT_ID, "ev/1"),
                header(kausal_core::headers::EVENT_TYPE, "OrderPlaced"),
                header(kausal_core::headers::CORRELATION_ID, "checkout <1>"),
                header(kausal_core::headers::CAUSATION_ID, "ev-0"),
            ],
        })
    }

    fn page(position: Position, records: Vec<RecordView>) -> RecordPage {
        RecordPage {
            topic: "orders".into(),
            partitions: vec![
                Watermarks {
                    partition: 0,
                    low: 0,
                    high: 0,
                },
                Watermarks {
                    partition: 1,
                    low: 2,
                    high: 9,
                },
            ],
            query: RecordQuery {
                partition: Some(1),
                position,
            },
            order: Order::NewestFirst,
            records,
            older: Some(Cursors(BTreeMap::from([(1, 7)]))),
            newer: None,
            keyed: None,
        }
    }

    #[test]
    fn a_record_shows_its_headers_as_links_and_its_value() {
        let html = render_topic(&page(
            Position::Newest,
            vec![order_record(8, br#"{"order_id":"ord-1"}"#)],
        ))
        .into_string();
        assert!(
            html.contains(&format!(
                r#"<a class="id" href="/traces/4bf92f3577b34da6a3ce929d0e0e4736" title="the trace">{TRACE}</a>"#
            )),
            "{html}"
        );
        assert!(
            html.contains(r#"href="/correlations/checkout%20%3C1%3E" title="the correlation">checkout &lt;1&gt;</a>"#),
            "escaped and encoded: {html}"
        );
        assert!(html.contains(r#"href="/search?q=ev%2F1""#), "{html}");
        assert!(html.contains(r#"href="/search?q=ev-0""#), "{html}");
        assert!(
            html.contains(r#"<article class="record" id="p1-8">"#),
            "{html}"
        );
        assert!(html.contains("<strong>OrderPlaced</strong>"), "{html}");
        assert!(
            html.contains(r#"key <code class="key">ord-1</code>"#),
            "{html}"
        );
        // The value is cut at 16 bytes here: no longer JSON, said so.
        assert!(html.contains("text · 20 bytes"), "{html}");
        assert!(html.contains("the first 4096 shown"), "{html}");
        assert!(html.contains("{&quot;order_id&quot;:&quot;"), "{html}");
    }

    #[test]
    fn json_values_are_pretty_printed() {
        let html = value(Some(&Shown::of(&Excerpt::of(br#"{"a":1}"#, 4096)))).into_string();
        assert!(html.contains("JSON · 7 bytes"), "{html}");
        assert!(html.contains("{\n  &quot;a&quot;: 1\n}"), "{html}");
        assert!(value(None).into_string().contains("tombstone"));
    }

    #[test]
    fn the_form_keeps_the_position_and_the_pager_carries_it() {
        let html = render_topic(&page(Position::Offset(4), vec![])).into_string();
        assert!(
            html.contains(r#"<option value="1" selected>1 — offsets 2–8</option>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<option value="0">0 — empty</option>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"name="offset" min="0" step="1" value="4""#),
            "{html}"
        );
        assert!(
            html.contains(
                r#"<a rel="next" href="/topics/orders?partition=1&amp;before=1:7">Older →</a>"#
            ),
            "{html}"
        );
        assert!(html.contains("At the newest record"), "{html}");
        assert!(
            html.contains("No record at or after") || html.contains("No record here"),
            "{html}"
        );
        let since = render_topic(&page(
            Position::Since {
                at_ms: 1_700_000_000_000,
                text: "2h".into(),
            },
            vec![],
        ))
        .into_string();
        assert!(since.contains(r#"name="since" value="2h""#), "{since}");
        assert!(since.contains("2023-11-14T22:13:20.000Z"), "{since}");
    }

    #[test]
    fn a_key_search_says_what_it_covers() {
        let mut p = page(Position::Key("ord-1".into()), vec![order_record(8, b"{}")]);
        p.keyed = Some(KeyLookup {
            key: "ord-1".into(),
            recorded: 2,
            missing: vec![(1, 3)],
            elsewhere: vec!["payments".into()],
        });
        let html = render_topic(&p).into_string();
        assert!(
            html.contains("2 events recorded on this topic (partition 1)"),
            "{html}"
        );
        assert!(html.contains("partition 1 offset 3"), "{html}");
        assert!(
            html.contains(r#"<a href="/topics/payments?key=ord-1">payments</a>"#),
            "{html}"
        );
        assert!(html.contains(r#"name="key" value="ord-1""#), "{html}");
        assert!(
            !html.contains(r#"class="pager""#),
            "a key search is not paged: {html}"
        );
        p.keyed = Some(KeyLookup {
            key: "ord-2".into(),
            recorded: 0,
            missing: vec![],
            elsewhere: vec![],
        });
        p.records.clear();
        let html = render_topic(&p).into_string();
        assert!(
            html.contains("Key search covers the events the lineage recorder stored"),
            "{html}"
        );
    }

    #[test]
    fn the_topic_list_is_grouped_and_says_what_it_hides() {
        let list = TopicList {
            bootstrap: "127.0.0.1:9092".into(),
            rows: vec![
                TopicRow {
                    name: "orders".into(),
                    kind: TopicKind::Business,
                    partitions: 3,
                    records: 12,
                    groups: vec![records::GroupOnTopic {
                        group: "payment-service".into(),
                        lag: 2,
                    }],
                },
                TopicRow {
                    name: "orders.dlq".into(),
                    kind: TopicKind::DeadLetter,
                    partitions: 3,
                    records: 1,
                    groups: vec![],
                },
            ],
            internal_hidden: 1,
            cut: 0,
            groups_note: Some("the first lag sample has not been taken yet".into()),
        };
        let html = render_topics(&list).into_string();
        assert!(
            html.contains(r#"<a class="topic" href="/topics/orders">orders</a>"#),
            "{html}"
        );
        assert!(html.contains("<code>payment-service</code> (2)"), "{html}");
        assert!(
            html.contains(
                r#"<section class="topics" id="dead-letter"><h2>Dead-letter topics (1)</h2>"#
            ),
            "{html}"
        );
        assert!(!html.contains(r#"id="kausal""#), "no empty section: {html}");
        assert!(html.contains("1 internal topic of Kafka"), "{html}");
        assert!(html.contains("not been taken yet"), "{html}");
    }

    /// The console's routes on a free port, with `kafka` or none.
    async fn serve(
        store: kausal_store::Store,
        kafka: Option<kausal_kafka::KafkaConfig>,
    ) -> (String, tokio::task::JoinHandle<std::io::Result<()>>) {
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let config = crate::ConsoleConfig {
            kafka,
            ..crate::ConsoleConfig::new(addr, "t")
        };
        let state = ConsoleState::new(store, &config).expect("state");
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let app = crate::http::router(state);
        (base, tokio::spawn(axum::serve(listener, app).into_future()))
    }

    /// The routes over HTTP: without Kafka both pages say so (503), a bad
    /// topic name or position is a 400 before Kafka is asked.
    #[tokio::test]
    async fn without_kafka_the_pages_say_how_to_give_it_one() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("topics.db").display());
        let store = kausal_store::Store::connect(&url).await.expect("store");
        let (base, server) = serve(store.clone(), None).await;
        for path in ["/topics", "/topics/orders"] {
            let answer = reqwest::get(format!("{base}{path}")).await.expect("page");
            assert_eq!(answer.status(), 503, "{path}");
            let html = answer.text().await.expect("body");
            assert!(html.contains("started without Kafka"), "{html}");
            assert!(html.contains("--kafka"), "{html}");
        }
        let bad = reqwest::get(format!("{base}/topics/a%2Fb"))
            .await
            .expect("page");
        assert_eq!(bad.status(), 400);
        let html = bad.text().await.expect("body");
        assert!(html.contains("is not a topic name"), "{html}");
        server.abort();

        // With a Kafka (nothing listens there), a bad position is refused
        // before Kafka is asked.
        let nowhere = kausal_kafka::KafkaConfig::new("127.0.0.1:1");
        let (base, server) = serve(store, Some(nowhere)).await;
        for (query, reason) in [
            ("offset=-1", "0 or more"),
            ("offset=1&since=2h", "one position at a time"),
            ("partition=x", "choose all or a partition number"),
        ] {
            let answer = reqwest::get(format!("{base}/topics/orders?{query}"))
                .await
                .expect("page");
            assert_eq!(answer.status(), 400, "{query}");
            let html = answer.text().await.expect("body");
            assert!(html.contains(reason), "{query}: {html}");
        }
        server.abort();
    }
}
