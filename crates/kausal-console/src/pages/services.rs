//! The services page (`/services`): the topology over a recent window
//! (service → topic → consumer group) as a picture and as a table, with
//! produce and handling rates, the dead-lettered share, the p95 handling
//! time, and per group a link to its pending dead letters and to its
//! newest failed correlation. Built from the document of `GET /api/topology`
//! (`crate::topology::topology`) by pure functions; refreshed live.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use percent_encoding::utf8_percent_encode;
use serde::Deserialize;

use super::correlation::plural;
use super::layout::{self, Section};
use super::svg::{self, LABEL_CHARS, NODE_W};
use super::{
    Page, SEGMENT, clock_ms, correlation_href, dead_letter_href, rfc3339_ms, shorten, topic_href,
};
use crate::http::ConsoleState;
use crate::topology::{self, GroupHandling, MAX_RECEIPTS, ProduceEdge, Topology};

/// How often the page fetches itself again.
const REFRESH_SECONDS: u32 = 10;
/// The windows offered (the query string may ask for any other in bounds).
const WINDOWS: [(u64, &str); 6] = [
    (300, "5 minutes"),
    (900, "15 minutes"),
    (3_600, "1 hour"),
    (6 * 3_600, "6 hours"),
    (24 * 3_600, "24 hours"),
    (7 * 24 * 3_600, "7 days"),
];
/// Nodes drawn per column; the table below lists everything.
const MAX_NODES: usize = 60;
/// The picture's geometry.
const COL_W: i64 = 300;
const SLOT_H: i64 = 54;
const TOP: i64 = 30;
const PAD: i64 = 10;
/// A service's name where the lineage has none (no `source-service` header).
const NO_SERVICE: &str = "(no source-service)";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WindowParams {
    window_seconds: Option<u64>,
}

pub(super) async fn page(
    State(state): State<ConsoleState>,
    params: Result<Query<WindowParams>, QueryRejection>,
) -> Response {
    let asked = match params {
        Ok(Query(p)) => topology::checked_window(p.window_seconds),
        Err(e) => Err(e.body_text()),
    };
    let seconds = match asked {
        Ok(s) => s,
        Err(reason) => return window_refused(&reason).into_response(),
    };
    let now_ms = crate::now_ms();
    match topology::topology(&state.store, now_ms, seconds).await {
        Err(e) => super::unavailable(e).into_response(),
        Ok(t) => Page::ok(layout::live_page(
            "Services",
            Section::Services,
            REFRESH_SECONDS,
            render_services(&t, now_ms),
        ))
        .into_response(),
    }
}

/// 400: a window the page cannot show.
fn window_refused(reason: &str) -> Page {
    Page::error(
        StatusCode::BAD_REQUEST,
        "That is not a window the console can show",
        html! {
            (reason) ". Pick one from the list on "
            a href="/services" { "the services page" } " (the last 15 minutes by default)."
        },
    )
}

/// The element id of a group's row in the table.
fn group_anchor(group: &str) -> String {
    format!("group-{group}")
}

/// Events per second, with as many decimals as a small rate needs (two
/// significant digits below 0.01: a quiet window still shows its traffic).
fn rate(per_second: f64) -> String {
    if per_second <= 0.0 {
        "0".to_owned()
    } else if per_second < 0.01 {
        let decimals = (1.0 - per_second.log10().floor()).clamp(3.0, 9.0) as usize;
        format!("{per_second:.decimals$}")
    } else if per_second < 10.0 {
        format!("{per_second:.2}")
    } else {
        format!("{per_second:.1}")
    }
}

fn percent(share: f64) -> String {
    if share == 0.0 {
        "0 %".to_owned()
    } else {
        format!("{:.1} %", share * 100.0)
    }
}

fn window_label(seconds: u64) -> String {
    WINDOWS
        .iter()
        .find(|(s, _)| *s == seconds)
        .map_or_else(|| format!("{seconds} s"), |(_, l)| (*l).to_owned())
}

/// The page's content (under the navigation).
pub fn render_services(t: &Topology, now_ms: i64) -> Markup {
    html! {
        h1 { "Services" }
        (window_form(t.window_seconds))
        p #live-state.live aria-live="polite" {
            "Refreshed every " (REFRESH_SECONDS) " s while this tab is visible."
        }
        (summary(t, now_ms))
        section #map data-live {
            h2 { "Topology" }
            p.legend {
                "Services produce to topics; consumer groups handle them. "
                span.err { "Red: a group that dead-lettered events in this window." }
                " Hover a node or an arrow for its numbers."
            }
            div.scroll { (topology_map(t)) }
        }
        section #rates data-live {
            h2 { "Rates, errors and handling time" }
            (table(t))
        }
        section #method {
            h2 { "Where the numbers come from" }
            ul.method {
                li {
                    strong { "Produced/s" } ": events the lineage recorder stored in the window "
                    "(by their " code { "source-service" } " header), over the window's length."
                }
                li {
                    strong { "Handled/s" } ": the receipts consumers wrote in the window (every "
                    "outcome: processed, dead-lettered, duplicate skipped), over its length."
                }
                li {
                    strong { "Dead-lettered" } ": the group's receipts with the outcome "
                    code { "dead_lettered" } " over all its receipts: events it gave up on "
                    "after its retries."
                }
                li {
                    strong { "p95" } ": the nearest-rank 95th percentile of the receipts' "
                    code { "duration_ms" } " (from the start of handling to its end, retries and "
                    "back-off included), every outcome, from the newest "
                    (MAX_RECEIPTS) " receipts of the window at most."
                }
                li {
                    strong { "Not recorded" } ": failed publishes (a producer's errors are in its "
                    code { "/metrics" } " as " code { "event_publish_errors" }
                    ", not in the ledger), and the time a producer spends sending: the page has "
                    "no error rate or latency for producing."
                }
            }
        }
    }
}

fn window_form(current: u64) -> Markup {
    let offered = WINDOWS.iter().any(|(s, _)| *s == current);
    html! {
        form.window method="get" action="/services" {
            label for="window" { "Window" }
            select #window name="window_seconds" {
                @if !offered {
                    option value=(current) selected { (window_label(current)) }
                }
                @for (seconds, label) in WINDOWS {
                    option value=(seconds) selected[seconds == current] { "last " (label) }
                }
            }
            button type="submit" { "Show" }
        }
    }
}

fn summary(t: &Topology, now_ms: i64) -> Markup {
    let produced: f64 = t.produces.iter().map(|p| p.rate_per_second).sum();
    let handled: f64 = t.groups.iter().map(|g| g.handling.rate_per_second).sum();
    let dead: usize = t.groups.iter().map(|g| g.handling.dead_lettered).sum();
    html! {
        div #summary data-live {
            p.meta {
                "Last " (window_label(t.window_seconds)) " to "
                time datetime=(rfc3339_ms(now_ms)) { (clock_ms(now_ms)) " UTC" } ": "
                (t.services.len()) " service" (plural(t.services.len())) ", "
                (t.topics.len()) " topic" (plural(t.topics.len())) ", "
                (t.groups.len()) " consumer group" (plural(t.groups.len())) "; "
                (rate(produced)) " events/s produced, "
                (rate(handled)) "/s handled, "
                span.err[dead > 0] { (dead) " dead-lettered" } "."
            }
            @if t.truncated {
                p.note {
                    "The window holds more than " (MAX_RECEIPTS) " receipts: handling numbers are "
                    "those of the newest " (MAX_RECEIPTS) ", so the rates are low. Pick a shorter window."
                }
            }
        }
    }
}

/// The produce edges of each service (by name; `None` sorts first).
fn produced_by(t: &Topology) -> BTreeMap<Option<&str>, Vec<&ProduceEdge>> {
    let mut out: BTreeMap<Option<&str>, Vec<&ProduceEdge>> = BTreeMap::new();
    for p in &t.produces {
        out.entry(p.service.as_deref()).or_default().push(p);
    }
    out
}

fn table(t: &Topology) -> Markup {
    if t.services.is_empty() && t.produces.is_empty() {
        return html! {
            p.note {
                "Nothing was produced or handled in the last " (window_label(t.window_seconds))
                ". The numbers come from the lineage recorder (events) and the consumers' receipts: "
                "is the recorder running, and are services consuming? Try a longer window."
            }
        };
    }
    let produced = produced_by(t);
    let mut services: Vec<Option<&str>> = t.services.iter().map(|s| Some(s.as_str())).collect();
    if produced.contains_key(&None) {
        services.push(None);
    }
    html! {
        div.scroll {
            table.services {
                thead {
                    tr {
                        th scope="col" { "service" }
                        th scope="col" { "produces (events/s)" }
                        th scope="col" { "consumer group" }
                        th scope="col" { "handles" }
                        th.num scope="col" { "handled/s" }
                        th.num scope="col" { "dead-lettered" }
                        th.num scope="col" title="nearest-rank, receipts' duration_ms" { "p95 ms" }
                        th scope="col" { "failures" }
                    }
                }
                tbody {
                    @for service in services {
                        @let groups: Vec<&GroupHandling> = t.groups.iter()
                            .filter(|g| Some(g.service.as_str()) == service).collect();
                        @let rows = groups.len().max(1);
                        @let name = service.unwrap_or(NO_SERVICE);
                        tr id={ "service-" (name) } {
                            th scope="row" rowspan=(rows) { (name) }
                            td rowspan=(rows) {
                                @match produced.get(&service) {
                                    None => span.meta { "nothing" },
                                    Some(edges) => {
                                        ul.plain {
                                            @for p in edges {
                                                li {
                                                    a href=(topic_href(&p.topic)) { (p.topic) }
                                                    " " (rate(p.rate_per_second))
                                                }
                                            }
                                        }
                                    },
                                }
                            }
                            @match groups.first() {
                                Some(g) => (group_cells(g)),
                                None => { td.meta colspan="6" { "consumes nothing in this window" } },
                            }
                        }
                        @for g in groups.iter().skip(1) {
                            tr { (group_cells(g)) }
                        }
                    }
                }
            }
        }
    }
}

fn group_cells(g: &GroupHandling) -> Markup {
    let h = &g.handling;
    let failed = h.dead_lettered > 0;
    html! {
        td id=(group_anchor(&g.consumer_group)) { code { (g.consumer_group) } }
        td {
            @for (i, topic) in g.topics.iter().enumerate() {
                @if i > 0 { ", " }
                a href=(topic_href(topic)) { (topic) }
            }
        }
        td.num title={ (h.handled) " receipts" } { (rate(h.rate_per_second)) }
        td.num.err[failed] title={ (h.dead_lettered) " of " (h.handled) " receipts" } {
            (percent(h.error_rate))
            @if failed { " (" (h.dead_lettered) ")" }
        }
        td.num title=(format!("p50 {:.1} ms, max {:.1} ms, over {} receipts", h.p50_ms, h.max_ms, h.handled)) {
            (format!("{:.1}", h.p95_ms))
        }
        td.failures {
            a href=(super::dlq::group_failures_href(&g.consumer_group)) { "pending dead letters" }
            @if let Some(f) = &g.latest_failure {
                br;
                "latest: "
                @if let Some(c) = &f.correlation_id {
                    a.id href=(correlation_href(c)) title="the correlation that failed last" { (shorten(c, 24)) }
                    " "
                }
                @if let Some(e) = &f.error_type { code.err { (shorten(e, 40)) } " " }
                "at " time datetime=(rfc3339_ms(f.failed_at_ms)) { (clock_ms(f.failed_at_ms)) }
                " (" a href=(dead_letter_href(&f.dlq_id)) { "dead letter" } ")"
            } @else if failed {
                br; span.meta { "no dead letter of this group in the ledger yet" }
            }
        }
    }
}

/// A node of the picture: its label, the line under it, its tooltip and
/// link, its kind (a CSS class) and whether it is red.
#[derive(Debug)]
struct MapNode {
    label: String,
    sub: String,
    title: String,
    href: String,
    kind: &'static str,
    failed: bool,
}

/// The topology as an inline SVG: services, topics and consumer groups in
/// three columns, produce arrows from services to topics and handling
/// arrows from topics to groups. Orders follow the arrows (a topic near
/// its producers, a group near its topics) to keep crossings few.
fn topology_map(t: &Topology) -> Markup {
    if t.topics.is_empty() {
        return html! { p.note { "No topic had traffic in this window: nothing to draw." } };
    }
    let produced = produced_by(t);
    let services: Vec<Option<&str>> = produced
        .keys()
        .copied()
        .filter(|s| s.is_some())
        .chain(produced.contains_key(&None).then_some(None))
        .take(MAX_NODES)
        .collect();
    let first = |topic: &str| -> usize {
        t.produces
            .iter()
            .filter(|p| p.topic == topic)
            .filter_map(|p| services.iter().position(|s| *s == p.service.as_deref()))
            .min()
            .unwrap_or(usize::MAX)
    };
    let mut topics: Vec<&str> = t.topics.iter().map(String::as_str).collect();
    topics.sort_by_key(|topic| (first(topic), *topic));
    topics.truncate(MAX_NODES);
    let mut groups: Vec<&GroupHandling> = t.groups.iter().collect();
    groups.sort_by_key(|g| {
        let nearest = g
            .topics
            .iter()
            .filter_map(|x| topics.iter().position(|y| y == x))
            .min()
            .unwrap_or(usize::MAX);
        (nearest, g.consumer_group.as_str())
    });
    groups.truncate(MAX_NODES);

    let columns: [Vec<MapNode>; 3] = [
        services
            .iter()
            .map(|s| service_node(*s, &produced[s]))
            .collect(),
        topics.iter().map(|topic| topic_node(t, topic)).collect(),
        groups.iter().map(|g| group_node(g)).collect(),
    ];
    let rows = columns.iter().map(Vec::len).max().unwrap_or(0) as i64;
    let width = 2 * PAD + 2 * COL_W + NODE_W;
    let height = TOP + rows * SLOT_H + PAD;
    let at = |col: usize, row: usize| (PAD + col as i64 * COL_W, TOP + row as i64 * SLOT_H);
    let cut = services.len() < produced.len()
        || topics.len() < t.topics.len()
        || groups.len() < t.groups.len();
    html! {
        svg.graph.topology xmlns="http://www.w3.org/2000/svg" role="img"
            width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) }
            aria-labelledby="topology-title" {
            title #topology-title {
                "Topology of the last " (window_label(t.window_seconds)) ": "
                (services.len()) " producing services, " (topics.len()) " topics, "
                (groups.len()) " consumer groups"
            }
            (svg::arrowheads())
            @for (col, heading) in ["services", "topics", "consumer groups"].iter().enumerate() {
                text.column-label x=(at(col, 0).0) y="16" { (heading) }
            }
            @for p in &t.produces {
                @if let (Some(from), Some(to)) = (
                    services.iter().position(|s| *s == p.service.as_deref()),
                    topics.iter().position(|x| *x == p.topic),
                ) {
                    (svg::edge("edge", at(0, from), at(1, to), false, Some(&format!(
                        "{} → {}: {} events/s", p.service.as_deref().unwrap_or(NO_SERVICE), p.topic,
                        rate(p.rate_per_second)))))
                }
            }
            @for c in &t.consumes {
                @if let (Some(from), Some(to)) = (
                    topics.iter().position(|x| *x == c.topic),
                    groups.iter().position(|g| g.consumer_group == c.consumer_group && g.service == c.service),
                ) {
                    @let failed = c.handling.dead_lettered > 0;
                    (svg::edge(if failed { "edge fail" } else { "edge" }, at(1, from), at(2, to), failed, Some(&format!(
                        "{} → {}: {}/s handled, {} dead-lettered, p95 {:.1} ms", c.topic, c.consumer_group,
                        rate(c.handling.rate_per_second), percent(c.handling.error_rate), c.handling.p95_ms))))
                }
            }
            @for (col, nodes) in columns.iter().enumerate() {
                @for (row, n) in nodes.iter().enumerate() {
                    (svg::node(
                        &format!("node {}{}", n.kind, if n.failed { " fail" } else { "" }),
                        at(col, row), &n.label, &n.sub, &n.title, &n.href,
                    ))
                }
            }
        }
        @if cut {
            p.note { "The picture draws at most " (MAX_NODES) " nodes per column; the table lists all." }
        }
    }
}

fn service_node(service: Option<&str>, edges: &[&ProduceEdge]) -> MapNode {
    let name = service.unwrap_or(NO_SERVICE);
    let total: f64 = edges.iter().map(|p| p.rate_per_second).sum();
    MapNode {
        label: shorten(name, LABEL_CHARS),
        sub: format!("{} events/s out", rate(total)),
        title: format!(
            "{name} produced {} events/s: {}",
            rate(total),
            edges
                .iter()
                .map(|p| format!("{} {}/s", p.topic, rate(p.rate_per_second)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        href: format!("#service-{}", utf8_percent_encode(name, SEGMENT)),
        kind: "service",
        failed: false,
    }
}

fn topic_node(t: &Topology, topic: &str) -> MapNode {
    let produced: f64 = t
        .produces
        .iter()
        .filter(|p| p.topic == topic)
        .map(|p| p.rate_per_second)
        .sum();
    MapNode {
        label: shorten(topic, LABEL_CHARS),
        sub: format!("{}/s in", rate(produced)),
        title: format!("topic {topic}: {} events/s produced", rate(produced)),
        href: topic_href(topic),
        kind: "topic",
        failed: false,
    }
}

fn group_node(g: &GroupHandling) -> MapNode {
    let h = &g.handling;
    let failed = h.dead_lettered > 0;
    MapNode {
        label: shorten(&g.consumer_group, LABEL_CHARS),
        sub: if failed {
            format!(
                "{}/s · {} to DLQ",
                rate(h.rate_per_second),
                percent(h.error_rate)
            )
        } else {
            format!("{}/s handled", rate(h.rate_per_second))
        },
        title: format!(
            "group {} of {}: {}/s handled, {} dead-lettered, p95 {:.1} ms",
            g.consumer_group,
            g.service,
            rate(h.rate_per_second),
            percent(h.error_rate),
            h.p95_ms
        ),
        href: format!(
            "#{}",
            utf8_percent_encode(&group_anchor(&g.consumer_group), SEGMENT)
        ),
        kind: "group",
        failed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::trace::tests::{read, state};
    use kausal_store::topology::{HandledSample, LatestFailure, Produced};

    fn handled(group: &str, topic: &str, outcome: &str, ms: f64) -> HandledSample {
        HandledSample {
            consumer_group: group.into(),
            service: group.into(),
            topic: topic.into(),
            outcome: outcome.into(),
            duration_ms: ms,
        }
    }

    fn produced(service: Option<&str>, topic: &str, events: i64) -> Produced {
        Produced {
            service: service.map(Into::into),
            topic: topic.into(),
            events,
        }
    }

    /// Orders dead-lettered by payment-service half the time.
    fn outage() -> Topology {
        let rows = [
            handled("payment-service", "orders", "processed", 4.0),
            handled("payment-service", "orders", "dead_lettered", 40.0),
            handled("notification <svc>", "payments", "processed", 1.0),
        ];
        let failure = LatestFailure {
            consumer_group: "payment-service".into(),
            dlq_id: "dlq-1".into(),
            correlation_id: Some("corr-9".into()),
            event_id: "ev-1".into(),
            error_type: Some("GatewayUnavailable".into()),
            failed_at_ms: 1_700_000_000_000,
        };
        topology::build(
            &[
                produced(Some("order-service"), "orders", 30),
                produced(Some("payment-service"), "payments", 15),
                produced(None, "legacy", 3),
            ],
            &rows,
            &[failure],
            300,
        )
    }

    #[test]
    fn the_picture_draws_services_topics_and_groups_with_the_failing_one_red() {
        let html = render_services(&outage(), 1_700_000_000_000).into_string();
        let svg = &html[html.find("<svg class=\"graph topology\"").expect("svg")..];
        assert!(svg.contains(r#"<g class="node service">"#), "{svg}");
        assert!(svg.contains(r#"<g class="node topic">"#), "{svg}");
        assert!(svg.contains(r#"<g class="node group fail">"#), "{svg}");
        assert!(svg.contains(r#"<g class="node group">"#), "{svg}");
        assert!(
            svg.contains("0.0067/s · 50.0 % to DLQ"),
            "2 in 300 s: {svg}"
        );
        assert!(
            svg.contains("order-service → orders: 0.10 events/s"),
            "{svg}"
        );
        assert!(svg.contains("(no source-service) → legacy"), "{svg}");
        assert_eq!(
            svg.matches(r#"<path class="edge fail""#).count(),
            1,
            "{svg}"
        );
        assert_eq!(svg.matches(r#"<path class="edge""#).count(), 4, "{svg}");
        assert!(svg.contains("notification &lt;svc&gt;"), "escaped: {svg}");
        assert!(
            svg.contains(r##"href="#group-notification%20%3Csvc%3E""##),
            "{svg}"
        );
    }

    #[test]
    fn the_table_links_each_group_to_its_dead_letters_and_latest_failed_correlation() {
        let html = render_services(&outage(), 1_700_000_000_000).into_string();
        let table = &html[html.find("<table class=\"services\"").expect("table")..];
        let payment = &table[table
            .find(r#"<tr id="service-payment-service">"#)
            .expect("row")..];
        let payment = &payment[..payment.find("</tr>").expect("end")];
        assert!(
            payment.contains(r#"<a href="/topics/payments">payments</a> 0.05"#),
            "{payment}"
        );
        assert!(
            payment.contains(r#"<td class="num err" title="1 of 2 receipts">50.0 % (1)</td>"#),
            "{payment}"
        );
        assert!(
            payment.contains(">40.0</td>"),
            "p95 of 4 and 40 ms: {payment}"
        );
        assert!(
            payment.contains(
                r#"<a href="/dlq?consumer_group=payment-service#list">pending dead letters</a>"#
            ),
            "{payment}"
        );
        assert!(
            payment.contains(r#"href="/correlations/corr-9""#),
            "{payment}"
        );
        assert!(payment.contains("GatewayUnavailable"), "{payment}");
        assert!(
            payment.contains(r#"(<a href="/dlq/dlq-1">dead letter</a>)"#),
            "{table}"
        );
        let order = &table[table
            .find(r#"<tr id="service-order-service">"#)
            .expect("row")..];
        assert!(order.contains("consumes nothing in this window"), "{order}");
        assert!(table.contains("(no source-service)"), "{table}");
        assert!(
            table.contains(r#"href="/dlq?consumer_group=notification%20%3Csvc%3E#list""#),
            "{table}"
        );
        // Live parts, the window picked, how p95 is computed.
        for live in [
            r#"id="map" data-live"#,
            r#"id="rates" data-live"#,
            r#"id="summary" data-live"#,
        ] {
            assert!(html.contains(live), "{live}: {html}");
        }
        assert!(
            html.contains(r#"<option value="300" selected>last 5 minutes</option>"#),
            "{html}"
        );
        assert!(html.contains("nearest-rank 95th percentile"), "{html}");
    }

    #[test]
    fn rates_keep_two_significant_digits_when_small() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(2.0 / 300.0), "0.0067");
        assert_eq!(rate(1.0 / 604_800.0), "0.0000017");
        assert_eq!(rate(0.5), "0.50");
        assert_eq!(rate(123.45), "123.5");
    }

    #[test]
    fn an_empty_window_says_where_the_numbers_come_from() {
        let t = topology::build(&[], &[], &[], 123);
        let html = render_services(&t, 0).into_string();
        assert!(
            html.contains("Nothing was produced or handled in the last 123 s"),
            "{html}"
        );
        assert!(html.contains("nothing to draw"), "{html}");
        assert!(
            html.contains(r#"<option value="123" selected>123 s</option>"#),
            "a window from the address is kept: {html}"
        );
    }

    #[tokio::test]
    async fn the_page_refreshes_live_and_refuses_a_window_out_of_bounds() {
        let (_dir, state) = state().await;
        let get = |query: &str| {
            let params = axum::extract::Query::<WindowParams>::try_from_uri(
                &format!("/services{query}").parse().expect("uri"),
            );
            page(State(state.clone()), params)
        };
        let (status, html) = read(get("").await).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains(r#"<main data-refresh-seconds="10">"#),
            "{html}"
        );
        assert!(html.contains(r#"<option value="900" selected>"#), "{html}");
        for bad in [
            "?window_seconds=0",
            "?window_seconds=604801",
            "?window_seconds=x",
            "?since=1",
        ] {
            let (status, html) = read(get(bad).await).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(
                html.contains("not a window the console can show"),
                "{bad}: {html}"
            );
        }
    }
}
