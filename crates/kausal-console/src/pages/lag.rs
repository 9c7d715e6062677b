//! The lag page (`/lag`): every consumer group the console watches, worst
//! first, with its Burrow status, lag in records and in time, the trend and
//! an estimated time to drain, and retention danger flagged on top; per
//! group the last hour as a chart and its partitions (status, committed
//! offset, high watermark, lag). Rendered by pure functions from the lag
//! board's document (`crate::lag::LagBoard::document`, what `GET /api/lag`
//! answers). The board refreshes live (`assets/refresh.js`);
//! `assets/lag.js` keeps the partitions the user opened open, and the
//! focus where it was, across refreshes.

mod chart;

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::State;
use kausal_core::lag::RETENTION_DANGER_RATIO;
use kausal_monitor::PartitionLag;
use maud::{Markup, html};
use percent_encoding::utf8_percent_encode;

use super::layout::{self, Section};
use super::{Page, SEGMENT, clock_ms, rfc3339_ms, topic_href};
use crate::http::ConsoleState;
use crate::lag::{GroupView, LagDocument, Trend};

/// Groups shown; beyond it the healthiest are left out (the API has all).
const MAX_GROUPS: usize = 100;
/// Partitions listed per group.
const MAX_PARTITIONS: usize = 200;
/// Groups named in the retention-danger box.
const MAX_DANGERS: usize = 10;

pub(super) async fn page(State(state): State<ConsoleState>) -> Page {
    let doc = state.lag.document(None);
    let main = render_lag(&doc, crate::LAG_INTERVAL);
    Page::ok(if doc.watched {
        let seconds = u32::try_from(crate::LAG_INTERVAL.as_secs()).unwrap_or(5);
        layout::live_page("Lag", Section::Lag, seconds, main)
    } else {
        layout::page("Lag", Section::Lag, false, main)
    })
}

/// The page's content (under the navigation); `interval` is how often the
/// monitor samples.
pub fn render_lag(doc: &LagDocument, interval: Duration) -> Markup {
    let every = interval.as_secs();
    html! {
        h1 { "Consumer lag" }
        @if !doc.watched {
            (monitor_off(every))
        } @else {
            p.lead {
                "Every consumer group the console watches, worst first: Burrow's status, how far "
                "behind it is in records and in time, where that is heading, and whether it is "
                "about to lose records to retention. Sampled every " (every) " s."
            }
            p #live-state.live { "Live: this page follows every sample without reloading." }
            div #lag-board data-live { (board(doc, every)) }
        }
    }
}

fn monitor_off(every: u64) -> Markup {
    html! {
        p.message {
            "The lag monitor is off: this console was started without Kafka, so it has no broker "
            "to read committed offsets and high watermarks from."
        }
        p {
            "To turn it on, start the console with the cluster's bootstrap servers: "
            code { "kausal console --kafka <host:port> …" }
            " (" code { "kausal up" } " does this for you). It then samples every " (every)
            " s and this page follows live. For one reading from the command line: "
            code { "kausal lag --group <group> --topic <topic> --kafka <host:port>" } "."
        }
    }
}

/// The live part: the monitor's last sample, or why there is none.
fn board(doc: &LagDocument, every: u64) -> Markup {
    html! {
        @if let Some(e) = &doc.last_error {
            p.message.error {
                "The last lag sample failed: " (e) ". The console tries again every " (every)
                " s; check that the brokers given with " code { "--kafka" } " are reachable."
                @if doc.sampled_at_ms.is_some() { " Below is the last good sample." }
            }
        }
        @match doc.sampled_at_ms {
            None => {
                @if doc.last_error.is_none() {
                    p.note.waiting {
                        "Waiting for the first lag sample: the monitor samples every " (every)
                        " s, and this page shows it as soon as it is taken."
                    }
                }
            }
            Some(at) => (sample(doc, at)),
        }
    }
}

fn sample(doc: &LagDocument, at: i64) -> Markup {
    let sorted = worst_first(&doc.groups);
    let shown = &sorted[..sorted.len().min(MAX_GROUPS)];
    let cut = sorted.len() - shown.len();
    let dangers: Vec<&GroupView> = sorted.iter().copied().filter(|g| in_danger(g)).collect();
    let count = |status: &str| {
        sorted
            .iter()
            .filter(|g| g.lag.status.label() == status)
            .count()
    };
    html! {
        p.meta.lag-summary {
            "Sampled at " time datetime=(rfc3339_ms(at)) { (clock_ms(at)) " UTC" }
            " · " (sorted.len()) " group" (plural(sorted.len()))
            @if !sorted.is_empty() {
                ": " (count("err")) " ERR, " (count("warn")) " WARN, " (count("ok")) " OK"
            }
            @if !dangers.is_empty() {
                " · " strong.err { (dangers.len()) " in retention danger" }
            }
        }
        @if sorted.is_empty() {
            p.note {
                "No consumer group to watch yet. The console learns groups from their receipts in "
                "the lineage store: a group appears here once it has handled an event."
            }
        } @else {
            @if !dangers.is_empty() { (danger_box(&dangers)) }
            (overview(shown))
            @if cut > 0 {
                p.note {
                    (cut) " more group" (plural(cut)) ", the healthiest, "
                    (if cut == 1 { "is" } else { "are" }) " not shown: "
                    code { "GET /api/lag" } " lists every one."
                }
            }
            @for g in shown { (group_section(g, at)) }
        }
    }
}

/// Whether a partition of the group is past the danger share of its
/// topic's retention.
fn in_danger(g: &GroupView) -> bool {
    g.lag.partitions.iter().any(|p| p.retention_danger)
}

/// The groups, worst first: retention danger (records about to be lost),
/// then ERR, WARN, OK, then the furthest behind in time, then in records,
/// then by name.
pub fn worst_first(groups: &[GroupView]) -> Vec<&GroupView> {
    let mut sorted: Vec<&GroupView> = groups.iter().collect();
    sorted.sort_by(|a, b| {
        in_danger(b)
            .cmp(&in_danger(a))
            .then(b.lag.status.code().cmp(&a.lag.status.code()))
            .then(b.lag.max_lag_seconds.total_cmp(&a.lag.max_lag_seconds))
            .then(b.lag.total_lag.cmp(&a.lag.total_lag))
            .then(a.lag.group.cmp(&b.lag.group))
    });
    sorted
}

/// The partition whose time lag is the largest share of its topic's
/// retention (`None` when no retention is known).
fn closest_to_retention(g: &GroupView) -> Option<&PartitionLag> {
    g.lag
        .partitions
        .iter()
        .filter(|p| p.retention_ratio.is_some())
        .max_by(|a, b| {
            a.retention_ratio
                .unwrap_or(0.0)
                .total_cmp(&b.retention_ratio.unwrap_or(0.0))
        })
}

fn danger_box(dangers: &[&GroupView]) -> Markup {
    html! {
        section #retention-danger.lag-danger aria-labelledby="retention-danger-title" {
            h2 #retention-danger-title { "Retention danger" }
            @for g in dangers.iter().take(MAX_DANGERS) {
                @if let Some(p) = closest_to_retention(g) {
                    p {
                        a href={ "#" (dom_id(&g.lag.group)) } { strong { (g.lag.group) } }
                        " is " strong { (duration_text(p.lag_seconds)) } " behind on "
                        a href=(topic_href(&p.key.topic)) { (p.key.topic) } "[" (p.key.partition) "]"
                        ": " strong { (share(p.retention_ratio.unwrap_or(0.0))) }
                        " of the topic's " (retention_text(p.retention_ms)) " retention."
                    }
                }
            }
            @if dangers.len() > MAX_DANGERS {
                p { "And " (dangers.len() - MAX_DANGERS) " more groups: see the table below." }
            }
            p.hint {
                "Past " (share(RETENTION_DANGER_RATIO)) " of the retention, records may be deleted "
                "before the group reads them. Fix or scale out the group now, or raise the topic's "
                code { "retention.ms" } "."
            }
        }
    }
}

fn overview(groups: &[&GroupView]) -> Markup {
    html! {
        div.scroll {
            table.lag-groups {
                thead {
                    tr {
                        th scope="col" { "group" }
                        th scope="col" { "status" }
                        th.num scope="col" { "lag (records)" }
                        th.num scope="col" { "lag (time)" }
                        th scope="col" { "trend" }
                        th scope="col" { "drains in" }
                        th.num scope="col" { "retention used" }
                    }
                }
                tbody {
                    @for g in groups {
                        tr.danger[in_danger(g)] {
                            td { a href={ "#" (dom_id(&g.lag.group)) } { code { (g.lag.group) } } }
                            td { (group_status(g)) }
                            td.num { (g.lag.total_lag) }
                            td.num { (duration_text(g.lag.max_lag_seconds)) }
                            td { (trend_text(g)) }
                            td { (drain_text(g)) }
                            td.num.err[in_danger(g)] {
                                (closest_to_retention(g).and_then(|p| p.retention_ratio).map(share).unwrap_or_else(|| "—".into()))
                            }
                        }
                    }
                }
            }
        }
    }
}

fn group_section(g: &GroupView, end_ms: i64) -> Markup {
    let id = dom_id(&g.lag.group);
    let mut topics: Vec<&str> = g
        .lag
        .partitions
        .iter()
        .map(|p| p.key.topic.as_str())
        .collect();
    topics.sort_unstable();
    topics.dedup();
    html! {
        section.lag-group id=(id) aria-labelledby={ (id) "-name" } {
            h2 {
                code id={ (id) "-name" } { (g.lag.group) } " " (group_status(g))
                @if in_danger(g) { " " span.danger-tag { "retention danger" } }
            }
            p.lag-facts {
                strong.records { (g.lag.total_lag) } " record" (plural(g.lag.total_lag as usize)) " behind · "
                strong.seconds { (duration_text(g.lag.max_lag_seconds)) } " behind in time · "
                (trend_text(g)) " · "
                @match drain(g) {
                    Drain::In(_) => { "drains in " (drain_text(g)) },
                    Drain::Never => span.err { (drain_text(g)) },
                    Drain::Nothing | Drain::Unknown => (drain_text(g)),
                }
            }
            p.meta {
                "topic" (plural(topics.len())) " "
                @for (i, t) in topics.iter().enumerate() {
                    @if i > 0 { ", " }
                    a href=(topic_href(t)) { (t) }
                }
                " · consumers: " (members(g))
                @if let Some(p) = closest_to_retention(g) {
                    " · retention: " span.err[p.retention_danger] {
                        (share(p.retention_ratio.unwrap_or(0.0))) " used of "
                        (retention_text(p.retention_ms))
                    }
                    " on " (p.key.topic) "[" (p.key.partition) "]"
                }
                " · " a href=(super::dlq::group_failures_href(&g.lag.group)) { "recent failures" }
            }
            (chart::lag_chart(&id, &g.lag.group, &g.history, end_ms, g.lag.status.label()))
            (partitions(g, &id))
        }
    }
}

fn partitions(g: &GroupView, id: &str) -> Markup {
    let all = &g.lag.partitions;
    let shown = &all[..all.len().min(MAX_PARTITIONS)];
    let behind = all.iter().filter(|p| p.lag > 0).count();
    // STOP, STALL and REWIND, each counted.
    let mut failing: BTreeMap<&str, usize> = BTreeMap::new();
    for status in all.iter().filter_map(|p| p.status).filter(|s| s.is_error()) {
        *failing.entry(status.burrow_name()).or_default() += 1;
    }
    html! {
        details.partitions id={ (id) "-partitions" } {
            summary {
                (all.len()) " partition" (plural(all.len())) " · " (behind) " behind"
                @if !failing.is_empty() {
                    " · " span.err {
                        @for (i, (name, n)) in failing.iter().enumerate() {
                            @if i > 0 { ", " }
                            (n) " " (name)
                        }
                    }
                }
            }
            @if all.is_empty() {
                p.note { "No partition reported for this group." }
            } @else {
                div.scroll {
                    table.lag-partitions {
                        thead {
                            tr {
                                th scope="col" { "topic" }
                                th.num scope="col" { "partition" }
                                th scope="col" { "status" }
                                th.num scope="col" { "committed" }
                                th.num scope="col" { "high watermark" }
                                th.num scope="col" { "lag (records)" }
                                th.num scope="col" { "lag (time)" }
                                th.num scope="col" { "retention used" }
                            }
                        }
                        tbody {
                            @for p in shown {
                                tr.failed[p.retention_danger || p.status.is_some_and(|s| s.is_error())] {
                                    td { a href=(topic_href(&p.key.topic)) { (p.key.topic) } }
                                    td.num { (p.key.partition) }
                                    td { (partition_status(p)) }
                                    td.num {
                                        @match p.committed {
                                            Some(c) => (c),
                                            None => span.meta title="never committed: the group reads from the log start" { "none" },
                                        }
                                    }
                                    td.num { (p.high_watermark) }
                                    td.num { (p.lag) }
                                    td.num { (duration_text(p.lag_seconds)) }
                                    td.num.err[p.retention_danger] {
                                        (p.retention_ratio.map(share).unwrap_or_else(|| "—".into()))
                                    }
                                }
                            }
                        }
                    }
                }
                @if all.len() > shown.len() {
                    p.note {
                        (all.len() - shown.len()) " more partition" (plural(all.len() - shown.len()))
                        " not listed (the totals above count them): "
                        code { "GET /api/lag" } " has every one."
                    }
                }
            }
        }
    }
}

fn group_status(g: &GroupView) -> Markup {
    html! {
        span class={ "status lag-" (g.lag.status.label()) } { (g.lag.status.burrow_name()) }
    }
}

fn partition_status(p: &PartitionLag) -> Markup {
    match p.status {
        Some(s) => html! { span class={ "status lag-" (s.label()) } { (s.burrow_name()) } },
        None => html! {
            span.status.lag-unknown title="one sample so far: Burrow's rules need two" { "—" }
        },
    }
}

/// Whether the group's consumers run, as the monitor last saw them.
fn members(g: &GroupView) -> &'static str {
    let seen: Vec<bool> = g
        .lag
        .partitions
        .iter()
        .filter_map(|p| p.group_alive)
        .collect();
    if seen.contains(&true) {
        "running"
    } else if seen.is_empty() {
        "unknown"
    } else {
        "none running"
    }
}

/// The id of a group's elements: stable across refreshes, unique per name
/// (percent-encoded, so any group name makes a valid id).
fn dom_id(group: &str) -> String {
    format!("group-{}", utf8_percent_encode(group, SEGMENT))
}

/// Where the lag goes over the trend window, with its slope.
pub fn trend_text(g: &GroupView) -> String {
    let rate = g.lag_rate_per_second.map(rate_text).unwrap_or_default();
    match g.trend {
        Trend::Growing => format!("growing ({rate})"),
        Trend::Shrinking => format!("shrinking ({rate})"),
        Trend::Flat => format!("steady ({rate})"),
        Trend::Unknown => "trend not known yet".to_owned(),
    }
}

/// When a group's lag reaches zero at the current rate.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Drain {
    /// There is no lag.
    Nothing,
    /// In about this many seconds.
    In(f64),
    /// Not at this rate: the lag grows or stands still.
    Never,
    /// Fewer than two samples: no rate yet.
    Unknown,
}

fn drain(g: &GroupView) -> Drain {
    match g.eta_seconds {
        _ if g.lag.total_lag == 0 => Drain::Nothing,
        Some(s) => Drain::In(s),
        None if g.trend == Trend::Unknown => Drain::Unknown,
        None => Drain::Never,
    }
}

/// The estimated time to drain: `~3 min 20 s`, `not draining`, `nothing
/// to drain`, or `not known yet` (fewer than two samples).
pub fn drain_text(g: &GroupView) -> String {
    match drain(g) {
        Drain::Nothing => "nothing to drain".to_owned(),
        Drain::In(s) => format!("~{}", duration_text(s)),
        Drain::Never => "not draining".to_owned(),
        Drain::Unknown => "not known yet".to_owned(),
    }
}

/// A slope in records per second, signed, to a precision that fits it.
fn rate_text(rate: f64) -> String {
    let abs = rate.abs();
    let digits = if abs >= 10.0 {
        0
    } else if abs >= 1.0 {
        1
    } else {
        2
    };
    let shown = format!("{abs:.digits$}");
    let sign = if shown.trim_start_matches(['0', '.']).is_empty() {
        "±"
    } else if rate > 0.0 {
        "+"
    } else {
        "−"
    };
    format!("{sign}{shown} records/s")
}

/// A duration in the two largest units that matter: `4.2 s`, `42 s`,
/// `3 min 20 s`, `2 h 5 min`, `7 d`.
pub fn duration_text(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "—".to_owned();
    }
    if seconds < 10.0 {
        return format!("{seconds:.1} s");
    }
    let s = seconds.round() as u64;
    let two = |big: u64, big_unit: &str, small: u64, small_unit: &str| {
        if small == 0 {
            format!("{big} {big_unit}")
        } else {
            format!("{big} {big_unit} {small} {small_unit}")
        }
    };
    match s {
        s if s < 60 => format!("{s} s"),
        s if s < 3_600 => two(s / 60, "min", s % 60, "s"),
        s if s < 86_400 => two(s / 3_600, "h", s % 3_600 / 60, "min"),
        s => two(s / 86_400, "d", s % 86_400 / 3_600, "h"),
    }
}

fn retention_text(retention_ms: Option<i64>) -> String {
    match retention_ms {
        Some(ms) if ms > 0 => duration_text(ms as f64 / 1000.0),
        _ => "unlimited".to_owned(),
    }
}

/// A share as a percentage: `87%`, `<1%`.
fn share(ratio: f64) -> String {
    if ratio > 0.0 && ratio < 0.005 {
        "<1%".to_owned()
    } else {
        format!("{:.0}%", ratio * 100.0)
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use kausal_core::lag::{GroupStatus, PartitionStatus};
    use kausal_monitor::PartitionKey;

    use super::*;
    use crate::lag::LagPoint;

    const AT: i64 = 1_700_000_000_000;
    const EVERY: Duration = Duration::from_secs(5);

    fn partition(
        group: &str,
        partition: i32,
        lag: i64,
        status: Option<PartitionStatus>,
    ) -> PartitionLag {
        PartitionLag {
            key: PartitionKey {
                group: group.into(),
                topic: "orders".into(),
                partition,
            },
            committed: Some(100),
            high_watermark: 100 + lag,
            lag,
            lag_seconds: lag as f64 / 10.0,
            status,
            retention_ms: Some(3_600_000),
            retention_ratio: Some(lag as f64 / 10.0 / 3_600.0),
            retention_danger: false,
            group_alive: Some(true),
        }
    }

    fn group(name: &str, status: GroupStatus, partitions: Vec<PartitionLag>) -> GroupView {
        GroupView {
            lag: kausal_monitor::GroupLag {
                group: name.into(),
                status,
                total_lag: partitions.iter().map(|p| p.lag).sum(),
                max_lag_seconds: partitions.iter().map(|p| p.lag_seconds).fold(0.0, f64::max),
                partitions,
            },
            trend: Trend::Flat,
            lag_rate_per_second: Some(0.0),
            eta_seconds: None,
            history: vec![LagPoint {
                at_ms: AT,
                total_lag: 0,
                max_lag_seconds: 0.0,
            }],
        }
    }

    fn doc(groups: Vec<GroupView>) -> LagDocument {
        LagDocument {
            sampled_at_ms: Some(AT),
            note: None,
            groups,
            watched: true,
            last_error: None,
        }
    }

    fn render(doc: &LagDocument) -> String {
        render_lag(doc, EVERY).into_string()
    }

    /// The route: without Kafka a still page (nothing to follow, no
    /// script); with it a page that refreshes every sample.
    #[tokio::test]
    async fn only_a_watched_board_makes_a_live_page() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}", dir.path().join("lag.db").display());
        let store = kausal_store::Store::connect(&url).await.expect("store");
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut state =
            ConsoleState::new(store, &crate::ConsoleConfig::new(addr, "t")).expect("state");
        let off = page(State(state.clone())).await.body.into_string();
        assert!(off.contains("The lag monitor is off"), "{off}");
        assert!(!off.contains("data-refresh-seconds"), "{off}");
        assert!(!off.contains("<script"), "{off}");
        state.lag = crate::lag::LagBoard::watched();
        let live = page(State(state)).await.body.into_string();
        assert!(
            live.contains(r#"<main data-refresh-seconds="5">"#),
            "{live}"
        );
        assert!(live.contains("<script src="), "{live}");
        assert!(live.contains("Waiting for the first lag sample"), "{live}");
    }

    #[test]
    fn without_kafka_the_page_says_the_monitor_is_off_and_how_to_turn_it_on() {
        let html = render(&LagDocument {
            sampled_at_ms: None,
            note: Some("off".into()),
            groups: vec![],
            watched: false,
            last_error: None,
        });
        assert!(html.contains("The lag monitor is off"), "{html}");
        assert!(
            html.contains("kausal console --kafka &lt;host:port&gt;"),
            "{html}"
        );
        assert!(!html.contains("data-live"), "nothing to follow: {html}");
        assert!(!html.contains("Waiting"), "{html}");
    }

    #[test]
    fn before_the_first_sample_the_page_waits_for_it_live() {
        let mut waiting = doc(vec![]);
        waiting.sampled_at_ms = None;
        let html = render(&waiting);
        assert!(
            html.contains("Waiting for the first lag sample: the monitor samples every 5 s"),
            "{html}"
        );
        assert!(html.contains(r#"<div id="lag-board" data-live>"#), "{html}");
        assert!(html.contains(r#"id="live-state""#), "{html}");

        waiting.last_error = Some("broker <down>".into());
        let html = render(&waiting);
        assert!(
            html.contains(
                "The last lag sample failed: broker &lt;down&gt;. The console tries again every 5 s"
            ),
            "{html}"
        );
        assert!(!html.contains("Waiting"), "the error says why: {html}");
        assert!(!html.contains("Below is the last good sample"), "{html}");
    }

    #[test]
    fn a_sample_without_groups_says_where_groups_come_from() {
        let html = render(&doc(vec![]));
        assert!(html.contains("0 groups"), "{html}");
        assert!(html.contains("No consumer group to watch yet"), "{html}");
        assert!(!html.contains("<table"), "{html}");
    }

    #[test]
    fn groups_come_worst_first_with_their_status_as_colour_and_text() {
        let ok = group(
            "a-ok",
            GroupStatus::Ok,
            vec![partition("a-ok", 0, 0, Some(PartitionStatus::Ok))],
        );
        let warn = group(
            "b-warn",
            GroupStatus::Warn,
            vec![partition("b-warn", 0, 50, Some(PartitionStatus::Warn))],
        );
        let err = group(
            "c-err",
            GroupStatus::Err,
            vec![partition("c-err", 0, 5, Some(PartitionStatus::Stop))],
        );
        let mut danger = group(
            "d-ok-but-losing",
            GroupStatus::Ok,
            vec![partition(
                "d-ok-but-losing",
                0,
                10,
                Some(PartitionStatus::Ok),
            )],
        );
        danger.lag.partitions[0].retention_danger = true;
        danger.lag.partitions[0].retention_ratio = Some(0.87);
        let groups = vec![ok, warn, err, danger];
        let order: Vec<&str> = worst_first(&groups)
            .iter()
            .map(|g| g.lag.group.as_str())
            .collect();
        assert_eq!(order, ["d-ok-but-losing", "c-err", "b-warn", "a-ok"]);

        let html = render(&doc(groups));
        let at = |needle: &str| {
            html.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {html}"))
        };
        assert!(
            at(r#"<section class="lag-group" id="group-d-ok-but-losing""#)
                < at(r#"id="group-c-err""#)
        );
        assert!(at(r#"id="group-c-err""#) < at(r#"id="group-b-warn""#));
        assert!(at(r#"id="group-b-warn""#) < at(r#"id="group-a-ok""#));
        assert!(
            html.contains(r#"<span class="status lag-err">ERR</span>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<span class="status lag-warn">WARN</span>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<span class="status lag-stop">STOP</span>"#),
            "{html}"
        );
        assert!(html.contains("4 groups: 1 ERR, 1 WARN, 2 OK"), "{html}");
    }

    #[test]
    fn retention_danger_is_flagged_on_top_with_how_close_it_is() {
        let mut g = group(
            "billing",
            GroupStatus::Err,
            vec![partition("billing", 2, 30_600, Some(PartitionStatus::Stop))],
        );
        g.lag.partitions[0].lag_seconds = 3_060.0;
        g.lag.max_lag_seconds = 3_060.0;
        g.lag.partitions[0].retention_ratio = Some(0.85);
        g.lag.partitions[0].retention_danger = true;
        let html = render(&doc(vec![g]));
        let top = html
            .find(r#"id="retention-danger""#)
            .expect("the danger box");
        assert!(
            top < html.find("<table").expect("table"),
            "above everything: {html}"
        );
        assert!(
            html.contains(r##"<a href="#group-billing"><strong>billing</strong></a> is <strong>51 min</strong> behind on <a href="/topics/orders">orders</a>[2]: <strong>85%</strong> of the topic's 1 h retention."##),
            "{html}"
        );
        assert!(html.contains("Past 80% of the retention"), "{html}");
        assert!(html.contains("1 in retention danger"), "{html}");
        assert!(
            html.contains(r#"<span class="danger-tag">retention danger</span>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<tr class="failed">"#),
            "the partition's row: {html}"
        );

        let calm = render(&doc(vec![group(
            "calm",
            GroupStatus::Ok,
            vec![partition("calm", 0, 1, Some(PartitionStatus::Ok))],
        )]));
        assert!(!calm.contains("retention-danger"), "{calm}");
        assert!(calm.contains("&lt;1%"), "a tiny share is not 0%: {calm}");
    }

    #[test]
    fn trend_and_time_to_drain_read_as_words() {
        let mut g = group(
            "g",
            GroupStatus::Ok,
            vec![partition("g", 0, 200, Some(PartitionStatus::Ok))],
        );
        g.trend = Trend::Shrinking;
        g.lag_rate_per_second = Some(-1.25);
        g.eta_seconds = Some(160.0);
        assert_eq!(trend_text(&g), "shrinking (−1.2 records/s)");
        assert_eq!(drain_text(&g), "~2 min 40 s");
        g.trend = Trend::Growing;
        g.lag_rate_per_second = Some(42.0);
        g.eta_seconds = None;
        assert_eq!(trend_text(&g), "growing (+42 records/s)");
        assert_eq!(drain_text(&g), "not draining");
        g.trend = Trend::Flat;
        g.lag_rate_per_second = Some(0.001);
        assert_eq!(trend_text(&g), "steady (±0.00 records/s)");
        g.trend = Trend::Unknown;
        g.lag_rate_per_second = None;
        assert_eq!(trend_text(&g), "trend not known yet");
        assert_eq!(drain_text(&g), "not known yet");
        g.lag.total_lag = 0;
        g.eta_seconds = Some(0.0);
        assert_eq!(drain_text(&g), "nothing to drain");

        let mut g = group(
            "g",
            GroupStatus::Warn,
            vec![partition("g", 0, 200, Some(PartitionStatus::Warn))],
        );
        g.trend = Trend::Growing;
        let html = render(&doc(vec![g]));
        assert!(
            html.contains(r#"<span class="err">not draining</span>"#),
            "{html}"
        );
    }

    #[test]
    fn durations_keep_two_units() {
        for (s, expected) in [
            (0.0, "0.0 s"),
            (4.25, "4.2 s"),
            (42.4, "42 s"),
            (200.0, "3 min 20 s"),
            (180.0, "3 min"),
            (7_500.0, "2 h 5 min"),
            (604_800.0, "7 d"),
            (f64::NAN, "—"),
            (-1.0, "—"),
        ] {
            assert_eq!(duration_text(s), expected, "{s}");
        }
    }

    #[test]
    fn every_group_has_its_numbers_chart_partitions_and_links() {
        let mut g = group(
            "mail/er",
            GroupStatus::Err,
            vec![
                partition("mail/er", 0, 6, Some(PartitionStatus::Stop)),
                partition("mail/er", 1, 0, None),
            ],
        );
        g.lag.partitions[1].committed = None;
        g.lag.partitions[0].group_alive = Some(false);
        g.lag.partitions[1].group_alive = Some(false);
        g.history = vec![
            LagPoint {
                at_ms: AT - 10_000,
                total_lag: 2,
                max_lag_seconds: 0.1,
            },
            LagPoint {
                at_ms: AT,
                total_lag: 6,
                max_lag_seconds: 0.6,
            },
        ];
        let html = render(&doc(vec![g]));
        assert!(html.contains(r#"<section class="lag-group" id="group-mail%2Fer" aria-labelledby="group-mail%2Fer-name">"#), "{html}");
        assert!(
            html.contains(r#"<strong class="records">6</strong> records behind"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<strong class="seconds">0.6 s</strong> behind in time"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="/dlq?consumer_group=mail%2Fer#list">recent failures</a>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="/topics/orders">orders</a>"#),
            "{html}"
        );
        assert!(html.contains("consumers: none running"), "{html}");
        assert!(html.contains(r#"<svg class="lag-chart""#), "{html}");
        assert!(
            html.contains(r#"<details class="partitions" id="group-mail%2Fer-partitions">"#),
            "{html}"
        );
        assert!(
            html.contains("2 partitions · 1 behind · <span class=\"err\">1 STOP</span>"),
            "{html}"
        );
        assert!(html.contains(">none</span>"), "never committed: {html}");
        assert!(html.contains(r#"<span class="status lag-unknown" title="one sample so far: Burrow's rules need two">—</span>"#), "{html}");
        // committed, high watermark, lag of partition 0.
        assert!(
            html.contains(
                r#"<td class="num">100</td><td class="num">106</td><td class="num">6</td>"#
            ),
            "{html}"
        );
    }

    #[test]
    fn group_names_are_escaped() {
        let g = group("<b>x</b>", GroupStatus::Ok, vec![]);
        let html = render(&doc(vec![g]));
        assert!(!html.contains("<b>x"), "{html}");
        assert!(html.contains("&lt;b&gt;x&lt;/b&gt;"), "{html}");
        assert!(
            html.contains("No partition reported for this group."),
            "{html}"
        );
    }

    #[test]
    fn long_lists_are_cut_and_say_so() {
        let groups: Vec<GroupView> = (0..MAX_GROUPS + 3)
            .map(|i| {
                group(
                    &format!("g{i:03}"),
                    GroupStatus::Ok,
                    vec![partition("g", 0, i as i64, Some(PartitionStatus::Ok))],
                )
            })
            .collect();
        let html = render(&doc(groups));
        assert!(
            html.contains("3 more groups, the healthiest, are not shown"),
            "{html}"
        );
        assert!(
            !html.contains(r#"id="group-g000""#),
            "the least behind is cut"
        );
        assert!(html.contains(r#"id="group-g102""#));

        let many: Vec<PartitionLag> = (0..MAX_PARTITIONS as i32 + 1)
            .map(|p| partition("wide", p, 1, None))
            .collect();
        let html = render(&doc(vec![group("wide", GroupStatus::Ok, many)]));
        assert!(html.contains("1 more partition not listed"), "{html}");
        assert_eq!(
            html.matches(r#"<td><a href="/topics/orders">orders</a></td>"#)
                .count(),
            MAX_PARTITIONS
        );
    }
}
