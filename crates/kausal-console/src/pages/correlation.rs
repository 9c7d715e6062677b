//! The correlation page (`/correlations/{id}`): the seeds' question — which
//! service dropped the order, and why — answered in a sentence above the
//! fold, then the causal graph, the receipts per event, the trace
//! waterfall, the log lines, the dead letters with Replay and Discard, and
//! the lag of the groups on the path. Built from the document of
//! `GET /api/correlations/{id}` (`crate::query::correlation`), by pure
//! functions: document in, markup out.

use std::collections::HashMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use percent_encoding::utf8_percent_encode;

use super::layout::{self, Section};
use super::{Page, SEGMENT, clock_ms, rfc3339_ms, shorten, trace_href};
use crate::http::ConsoleState;
use crate::lag::{GroupView, Trend};
use crate::query::{self, CorrelationDocument, Hop, LogView};

pub(super) async fn page(
    State(state): State<ConsoleState>,
    id: Result<Path<String>, PathRejection>,
) -> Response {
    let id = match super::path_id(id) {
        Ok(id) => id,
        Err(page) => return page.into_response(),
    };
    let id = id.as_str();
    match query::correlation(&state.store, &state.expected, id).await {
        Err(e) => super::unavailable(e).into_response(),
        Ok(None) => Page::error(
            StatusCode::NOT_FOUND,
            "No such correlation",
            html! {
                "Nothing is recorded for correlation " code { (id) } ". "
                "If this is an order, event, trace or dead-letter id, search for it instead:"
            },
        )
        .into_response(),
        Ok(Some(doc)) => {
            let doc = doc.with_lag(&state.lag);
            let title = format!("Correlation {}", shorten(&doc.correlation_id, 40));
            Page::ok(layout::page(
                &title,
                Section::None,
                true,
                render_correlation(&doc),
            ))
            .into_response()
        }
    }
}

/// The element id and the link of an event's receipts.
pub(crate) fn event_anchor(event_id: &str) -> (String, String) {
    anchor("event-", event_id)
}

/// The element id and the link of a dead letter's row.
pub(crate) fn dead_letter_anchor(dlq_id: &str) -> (String, String) {
    anchor("dlq-", dlq_id)
}

fn anchor(prefix: &str, id: &str) -> (String, String) {
    (
        format!("{prefix}{id}"),
        format!("#{prefix}{}", utf8_percent_encode(id, SEGMENT)),
    )
}

/// What went wrong on the path, in the words the page answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// A group received an event and failed on it for good.
    Failed {
        service: String,
        event_type: String,
        event_id: String,
        error_type: Option<String>,
        error_message: Option<String>,
        /// The dead letter's ledger id and status.
        dead_letter: Option<(String, String)>,
    },
    /// A group that receives this event type elsewhere left no receipt
    /// for it: dropped, or still in flight.
    Missing {
        service: String,
        consumer_group: String,
        event_type: String,
        event_id: String,
    },
}

impl Finding {
    /// The finding as one sentence of plain text.
    pub fn sentence(&self) -> String {
        match self {
            Self::Failed {
                service,
                event_type,
                error_type,
                dead_letter,
                ..
            } => {
                let mut s = format!(
                    "{service} failed on {event_type}: {}",
                    error_type.as_deref().unwrap_or("an error")
                );
                if let Some((id, status)) = dead_letter {
                    s.push_str(&format!(" — dead letter {id}"));
                    if status != "pending" {
                        s.push_str(&format!(" ({status})"));
                    }
                }
                s
            }
            Self::Missing {
                service,
                event_type,
                event_id,
                ..
            } => format!("{service} has no receipt for {event_type} {event_id}"),
        }
    }

    fn render(&self) -> Markup {
        match self {
            Self::Failed {
                service,
                event_type,
                event_id,
                error_type,
                error_message,
                dead_letter,
            } => html! {
                p.finding.failed {
                    strong.service { (service) } " failed on "
                    a href=(event_anchor(event_id).1) { strong { (event_type) } }
                    ": " code.err { (error_type.as_deref().unwrap_or("an error")) }
                    @if let Some((id, status)) = dead_letter {
                        " — dead letter " a.id href=(dead_letter_anchor(id).1) { (id) }
                        @if status != "pending" { " (" (status) ")" }
                    }
                }
                @if let Some(m) = error_message {
                    p.error-message { (shorten(m, 500)) }
                }
            },
            Self::Missing {
                service,
                consumer_group,
                event_type,
                event_id,
            } => html! {
                p.finding.missing {
                    strong.service { (service) } " has no receipt for "
                    strong { (event_type) } " "
                    a.id href=(event_anchor(event_id).1) { (event_id) }
                }
                p.error-message {
                    "Group " code { (consumer_group) } " handles " (event_type)
                    " events elsewhere but left no receipt for this one: it was dropped, or is "
                    "still in flight (look at the group's lag below)."
                }
            },
        }
    }
}

/// The failures, then the missing hops, of `doc`.
pub fn findings(doc: &CorrelationDocument) -> Vec<Finding> {
    let failed = doc.failures.iter().map(|f| Finding::Failed {
        service: f
            .service
            .clone()
            .or_else(|| f.consumer_group.clone())
            .unwrap_or_else(|| "a consumer".to_owned()),
        event_type: f
            .event_type
            .clone()
            .unwrap_or_else(|| "an event".to_owned()),
        event_id: f.event_id.clone(),
        error_type: f.error_type.clone(),
        error_message: f.error_message.clone(),
        dead_letter: f.dlq_id.as_ref().map(|id| {
            let status = doc
                .dead_letters
                .iter()
                .find(|d| &d.id == id)
                .map_or("pending", |d| d.status.as_str());
            (id.clone(), status.to_owned())
        }),
    });
    let missing = doc.missing.iter().map(|m| Finding::Missing {
        service: m.service.clone(),
        consumer_group: m.consumer_group.clone(),
        event_type: m.event_type.clone(),
        event_id: m.event_id.clone(),
    });
    failed.chain(missing).collect()
}

/// The answer when nothing failed and nothing is missing.
fn all_clear(doc: &CorrelationDocument) -> String {
    let mut s = format!(
        "Every hop was handled: {} event{}, {} receipt{}, no standing failure, no missing hop.",
        doc.events.len(),
        plural(doc.events.len()),
        doc.receipts.len(),
        plural(doc.receipts.len()),
    );
    for d in doc.dead_letters.iter().filter(|d| d.status != "pending") {
        s.push_str(&format!(" Dead letter {} was {}", d.id, d.status));
        if let Some(by) = &d.status_by {
            s.push_str(&format!(" by {by}"));
        }
        s.push('.');
    }
    s
}

pub(super) fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// The page's content (under the navigation).
pub fn render_correlation(doc: &CorrelationDocument) -> Markup {
    let findings = findings(doc);
    let pending = doc
        .dead_letters
        .iter()
        .filter(|d| d.status == "pending")
        .count();
    html! {
        h1 { "Correlation " span.id { (doc.correlation_id) } }
        p.meta {
            @if !doc.keys.is_empty() {
                "key " @for (i, k) in doc.keys.iter().enumerate() {
                    @if i > 0 { ", " } code { (k) }
                }
                " · "
            }
            (doc.events.len()) " event" (plural(doc.events.len()))
            " · " (doc.receipts.len()) " receipt" (plural(doc.receipts.len()))
            " · " (doc.trace_ids.len()) " trace" (plural(doc.trace_ids.len()))
            " · " (doc.dead_letters.len()) " dead letter" (plural(doc.dead_letters.len()))
            @if pending > 0 { " (" (pending) " pending)" }
        }
        section #answer.answer.failed[!findings.is_empty()].ok[findings.is_empty()] aria-label="Answer" {
            @if findings.is_empty() {
                p.finding { (all_clear(doc)) }
            } @else {
                @for f in &findings { (f.render()) }
            }
        }
        @if doc.truncated {
            p.note {
                "This correlation touched more traces, spans or log lines than one page holds "
                "(50 traces, 2 000 spans per trace, 2 000 log lines): what is shown is cut."
            }
        }
        nav.toc aria-label="Sections" {
            a href="#graph" { "Graph" } " · "
            a href="#receipts" { "Receipts" } " · "
            a href="#waterfall" { "Waterfall" } " · "
            a href="#logs" { "Logs (" (doc.logs.len()) ")" } " · "
            a href="#dead-letters" { "Dead letters (" (doc.dead_letters.len()) ")" } " · "
            a href="#lag" { "Lag" }
        }
        section #graph {
            h2 { "Causal graph" }
            p.legend {
                "Events by the service that produced them; arrows from cause to effect. "
                span.err { "Red: a hop that failed or never happened." }
            }
            div.scroll { (super::causal_graph(doc)) }
        }
        section #receipts {
            h2 { "Receipts per event" }
            (receipts(doc))
        }
        section #waterfall {
            h2 { "Trace waterfall" }
            p.legend {
                "Every span of every trace this correlation touched (and one step along links). "
                "Time in Kafka and in the handler per hop: see the receipts above."
            }
            (super::waterfall(doc))
        }
        section #logs {
            h2 { "Log lines" }
            (logs(doc))
        }
        section #dead-letters {
            h2 { "Dead letters" }
            (dead_letters(doc))
        }
        section #lag {
            h2 { "Lag of the groups on the path" }
            (lag(doc))
        }
    }
}

fn receipts(doc: &CorrelationDocument) -> Markup {
    if doc.events.is_empty() {
        return html! { p.note { "No event of this correlation is recorded." } };
    }
    let hops: HashMap<(&str, &str), &Hop> = doc
        .hops
        .iter()
        .map(|h| ((h.event_id.as_str(), h.consumer_group.as_str()), h))
        .collect();
    let types: HashMap<&str, &str> = doc
        .events
        .iter()
        .filter_map(|e| Some((e.event_id.as_str(), e.event_type.as_deref()?)))
        .collect();
    html! {
        @for e in &doc.events {
            @let rs: Vec<_> = doc.receipts.iter().filter(|r| r.event_id == e.event_id).collect();
            @let missing: Vec<_> = doc.missing.iter().filter(|m| m.event_id == e.event_id).collect();
            article.event id=(event_anchor(&e.event_id).0) {
                h3 {
                    (e.event_type.as_deref().unwrap_or("(no event-type)"))
                    span.meta { " from " (e.source_service.as_deref().unwrap_or("?")) }
                }
                p.meta {
                    span.id title="event id" { (e.event_id) }
                    " · " code { (e.topic) "[" (e.partition) "]@" (e.offset) }
                    @if let Some(k) = &e.key { " · key " code { (k) } }
                    " · " time datetime=(rfc3339_ms(e.occurred_at_ms)) { (clock_ms(e.occurred_at_ms)) " UTC" }
                    @if let Some(c) = &e.causation_id {
                        " · caused by "
                        @if let Some(t) = types.get(c.as_str()) {
                            a href=(event_anchor(c).1) { (t) }
                        } @else {
                            span.id { (shorten(c, 13)) }
                        }
                    }
                    @if let Some(t) = &e.trace_id {
                        " · trace " a.id href=(trace_href(t)) { (shorten(t, 16)) }
                    }
                }
                @if rs.is_empty() && missing.is_empty() {
                    p.note { "No consumer group has handled it." }
                } @else {
                    div.scroll {
                        table.receipts {
                            thead {
                                tr {
                                    th scope="col" { "group" }
                                    th scope="col" { "service" }
                                    th scope="col" { "outcome" }
                                    th.num scope="col" { "attempts" }
                                    th.num scope="col" title="record timestamp to the start of handling" { "in Kafka ms" }
                                    th.num scope="col" { "in handler ms" }
                                    th scope="col" { "error" }
                                }
                            }
                            tbody {
                                @for r in &rs {
                                    @let hop = hops.get(&(r.event_id.as_str(), r.consumer_group.as_str()));
                                    tr class=[(r.outcome == "dead_lettered").then_some("failed")] {
                                        td { code { (r.consumer_group) } }
                                        td { (r.service) }
                                        td { span class={ "outcome " (r.outcome) } { (r.outcome) } }
                                        td.num { (r.attempts) }
                                        td.num { (hop.map(|h| format!("{:.1}", h.kafka_ms)).unwrap_or_default()) }
                                        td.num { (format!("{:.1}", r.duration_ms)) }
                                        td {
                                            @if let Some(t) = &r.error_type { code.err { (t) } }
                                            @if let Some(m) = &r.error_message { " " span.error-message { (shorten(m, 300)) } }
                                        }
                                    }
                                }
                                @for m in &missing {
                                    tr.failed.missing {
                                        td { code { (m.consumer_group) } }
                                        td { (m.service) }
                                        td { span.outcome.missing { "no receipt" } }
                                        td.num {} td.num {} td.num {}
                                        td { "dropped, or still in flight" }
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

fn logs(doc: &CorrelationDocument) -> Markup {
    if doc.logs.is_empty() {
        return html! {
            p.note {
                "No log line of this correlation was received (services send their JSON log lines "
                "to the console over OTLP when " code { "kausal up" } " runs them)."
            }
        };
    }
    log_table(&doc.logs)
}

/// Log lines as a table: time, level, service, message, `errorType`.
pub(super) fn log_table(logs: &[LogView]) -> Markup {
    html! {
        div.scroll {
            table.logs {
                thead {
                    tr {
                        th scope="col" { "time (UTC)" }
                        th scope="col" { "level" }
                        th scope="col" { "service" }
                        th scope="col" { "message" }
                        th scope="col" { "errorType" }
                    }
                }
                tbody {
                    @for l in logs {
                        @let level = l.level.as_deref().unwrap_or("-");
                        @let error_type = l.attributes["errorType"].as_str();
                        tr class={ "level-" (level.to_ascii_lowercase()) } {
                            td.time { (clock_ms(l.time_ns.div_euclid(1_000_000))) }
                            td { (level) }
                            td { (l.service.as_deref().unwrap_or("?")) }
                            td.message { (shorten(l.message.as_deref().unwrap_or(""), 500)) }
                            td { @if let Some(t) = error_type { code.err { (t) } } }
                        }
                    }
                }
            }
        }
    }
}

fn dead_letters(doc: &CorrelationDocument) -> Markup {
    if doc.dead_letters.is_empty() {
        return html! { p.note { "No dead letter: no consumer gave up on an event of this correlation." } };
    }
    let pending = doc.dead_letters.iter().any(|d| d.status == "pending");
    html! {
        @if pending { (super::dlq::action_forms()) }
        (super::dlq::dead_letter_table(&doc.dead_letters, super::dlq::Around::Correlation))
    }
}

fn trend_label(t: Trend) -> &'static str {
    match t {
        Trend::Growing => "growing",
        Trend::Shrinking => "shrinking",
        Trend::Flat => "flat",
        Trend::Unknown => "—",
    }
}

fn lag(doc: &CorrelationDocument) -> Markup {
    if doc.groups.is_empty() {
        return html! { p.note { "No consumer group has handled an event of this correlation." } };
    }
    let by_group: HashMap<&str, &GroupView> =
        doc.lag.iter().map(|g| (g.lag.group.as_str(), g)).collect();
    html! {
        @if doc.lag.is_empty() {
            p.note {
                "No lag sample for these groups yet: the console samples every 5 s when it was "
                "started with " code { "--kafka" } " (" code { "kausal up" } " does)."
            }
        }
        div.scroll {
            table.lag {
                thead {
                    tr {
                        th scope="col" { "group" }
                        th scope="col" { "service" }
                        th.num scope="col" { "receipts here" }
                        th.num scope="col" { "failed here" }
                        th scope="col" { "status" }
                        th.num scope="col" { "lag (records)" }
                        th.num scope="col" { "lag (s)" }
                        th scope="col" { "trend" }
                        th.num scope="col" { "drains in" }
                    }
                }
                tbody {
                    @for g in &doc.groups {
                        @let view = by_group.get(g.consumer_group.as_str());
                        tr {
                            td { code { (g.consumer_group) } }
                            td { (g.service) }
                            td.num { (g.receipts) }
                            td.num.err[g.failed > 0] { (g.failed) }
                            @if let Some(v) = view {
                                @let danger = v.lag.partitions.iter().any(|p| p.retention_danger);
                                td { span class={ "status lag-" (v.lag.status.label()) } { (v.lag.status.burrow_name()) } }
                                td.num { (v.lag.total_lag) }
                                td.num { (format!("{:.1}", v.lag.max_lag_seconds)) }
                                td { (trend_label(v.trend)) @if danger { " " span.err { "retention danger" } } }
                                td.num {
                                    @match v.eta_seconds {
                                        Some(s) => (format!("{s:.0} s")),
                                        None => "—",
                                    }
                                }
                            } @else {
                                td { "—" } td.num {} td.num {} td {} td.num {}
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use kausal_store::{LineageEvent, Receipt};

    pub(crate) fn event(
        id: &str,
        cause: Option<&str>,
        event_type: &str,
        service: &str,
    ) -> LineageEvent {
        LineageEvent {
            event_id: id.into(),
            event_type: Some(event_type.into()),
            event_version: Some(1),
            correlation_id: "corr-1".into(),
            causation_id: cause.map(Into::into),
            source_service: Some(service.into()),
            topic: "orders".into(),
            partition: 0,
            offset: 7,
            key: Some("ord-1".into()),
            trace_id: Some("ab".repeat(16)),
            span_id: None,
            occurred_at_ms: 1_700_000_000_000,
            recorded_at_ms: 1_700_000_000_005,
        }
    }

    pub(crate) fn receipt(event_id: &str, group: &str, outcome: &str) -> Receipt {
        Receipt {
            receipt_id: format!("{event_id}-{group}"),
            event_id: event_id.into(),
            consumer_group: group.into(),
            service: group.into(),
            topic: "payments".into(),
            partition: 0,
            offset: 1,
            outcome: outcome.into(),
            attempts: 1,
            error_type: (outcome == "dead_lettered").then(|| "MissingCustomerEmail".into()),
            error_message: (outcome == "dead_lettered")
                .then(|| "payment <b>has no email</b>".into()),
            duration_ms: 2.5,
            trace_id: None,
            span_id: None,
            handled_at_ms: 1_700_000_000_050,
            correlation_id: Some("corr-1".into()),
        }
    }

    pub(crate) fn summary(id: &str, event_id: &str, status: &str) -> crate::dlq::DeadLetterSummary {
        crate::dlq::DeadLetterSummary {
            id: id.into(),
            status: status.into(),
            event_id: event_id.into(),
            event_type: Some("PaymentProcessed".into()),
            correlation_id: Some("corr-1".into()),
            source_topic: "payments".into(),
            source_partition: Some(0),
            source_offset: Some(1),
            dlq_topic: "payments.dlq".into(),
            consumer_group: Some("notification-service".into()),
            service: Some("notification-service".into()),
            error_type: Some("MissingCustomerEmail".into()),
            error_message: Some("payment has no email".into()),
            attempts: Some(1),
            failed_at: "2023-11-14T22:13:20.100Z".into(),
            failed_at_ms: 1_700_000_000_100,
            replay_count: 0,
            status_changed_at: None,
            status_by: (status != "pending").then(|| "console:alice".into()),
            status_reason: None,
        }
    }

    /// A document as `query::correlation` would build it from these rows
    /// (failures from the receipts, as `build_report` finds them).
    pub(crate) fn document(
        events: Vec<LineageEvent>,
        receipts: Vec<Receipt>,
        dead_letters: Vec<crate::dlq::DeadLetterSummary>,
    ) -> CorrelationDocument {
        let report = kausal_lineage::build_report("corr-1", &events, &receipts, &[]);
        let mut failures = report.failures.clone();
        for f in &mut failures {
            f.dlq_id = dead_letters
                .iter()
                .find(|d| d.event_id == f.event_id)
                .map(|d| d.id.clone());
        }
        CorrelationDocument {
            correlation_id: "corr-1".into(),
            keys: report.keys.clone(),
            trace_ids: report.trace_ids.clone(),
            edges: events
                .iter()
                .filter_map(|e| {
                    Some(query::Edge {
                        cause: e.causation_id.clone()?,
                        effect: e.event_id.clone(),
                    })
                })
                .collect(),
            hops: vec![],
            groups: vec![],
            failures,
            missing: vec![],
            dead_letters,
            spans: vec![],
            logs: vec![],
            lag: vec![],
            events,
            receipts,
            report,
            truncated: false,
        }
    }

    fn seeds_story() -> CorrelationDocument {
        let mut doc = document(
            vec![
                event("e1", None, "OrderPlaced", "order-service"),
                event("e2", Some("e1"), "PaymentProcessed", "payment-service"),
            ],
            vec![
                receipt("e1", "payment-service", "processed"),
                receipt("e2", "notification-service", "dead_lettered"),
            ],
            vec![summary("dlq-9", "e2", "pending")],
        );
        doc.groups = vec![query::GroupOnPath {
            consumer_group: "notification-service".into(),
            service: "notification-service".into(),
            receipts: 1,
            failed: 1,
        }];
        doc
    }

    #[test]
    fn the_answer_names_the_failing_service_the_event_the_error_and_the_dead_letter() {
        let doc = seeds_story();
        let found = findings(&doc);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].sentence(),
            "notification-service failed on PaymentProcessed: MissingCustomerEmail — dead letter dlq-9"
        );
        let html = render_correlation(&doc).into_string();
        assert!(
            html.contains(r#"<section class="answer failed" id="answer""#),
            "{html}"
        );
        assert!(
            html.contains(r##"— dead letter <a class="id" href="#dlq-dlq-9">dlq-9</a>"##),
            "{html}"
        );
        assert!(
            html.contains("payment &lt;b&gt;has no email&lt;/b&gt;"),
            "escaped: {html}"
        );
        assert!(!html.contains("<b>has"), "{html}");
        // The replay and discard controls of the pending entry.
        assert!(
            html.contains(r#"<tr id="dlq-dlq-9" data-dlq-id="dlq-9" data-topic="payments">"#),
            "{html}"
        );
        assert!(html.contains(r#"data-action="replay-dry""#), "{html}");
        assert!(html.contains(r#"id="token-form""#), "{html}");
        // Lag without a sample says why.
        assert!(
            html.contains("No lag sample for these groups yet"),
            "{html}"
        );
    }

    #[test]
    fn a_missing_hop_is_the_answer_when_nothing_failed() {
        let mut doc = document(
            vec![event("e1", None, "OrderPlaced", "order-service")],
            vec![],
            vec![],
        );
        doc.missing.push(query::Missing {
            event_id: "e1".into(),
            event_type: "OrderPlaced".into(),
            consumer_group: "inventory-service".into(),
            service: "inventory-service".into(),
        });
        let found = findings(&doc);
        assert_eq!(
            found[0].sentence(),
            "inventory-service has no receipt for OrderPlaced e1"
        );
        let html = render_correlation(&doc).into_string();
        assert!(html.contains("dropped, or still in flight"), "{html}");
    }

    #[test]
    fn a_replayed_dead_letter_is_reported_with_who_replayed_it() {
        let mut doc = document(
            vec![event("e1", None, "OrderPlaced", "order-service")],
            vec![receipt("e1", "payment-service", "processed")],
            vec![summary("dlq-1", "e1", "replayed")],
        );
        doc.failures.clear();
        assert!(findings(&doc).is_empty());
        let html = render_correlation(&doc).into_string();
        assert!(html.contains(r#"class="answer ok""#), "{html}");
        assert!(
            html.contains("Dead letter dlq-1 was replayed by console:alice."),
            "{html}"
        );
        assert!(
            !html.contains("data-action"),
            "no buttons for a settled entry: {html}"
        );
        assert!(!html.contains("token-form"), "{html}");
    }

    #[test]
    fn every_section_is_there_in_order() {
        let html = render_correlation(&seeds_story()).into_string();
        let at = |needle: &str| {
            html.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {html}"))
        };
        let order = [
            r#"id="answer""#,
            r#"<section id="graph">"#,
            r#"<section id="receipts">"#,
            r#"<section id="waterfall">"#,
            r#"<section id="logs">"#,
            r#"<section id="dead-letters">"#,
            r#"<section id="lag">"#,
        ];
        for pair in order.windows(2) {
            assert!(at(pair[0]) < at(pair[1]), "{} before {}", pair[0], pair[1]);
        }
        assert!(
            html.contains(r#"<article class="event" id="event-e2">"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<tr class="failed">"#),
            "the failed receipt: {html}"
        );
    }
}
