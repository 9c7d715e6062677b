//! The dashboard's 24-hour trend as an inline SVG drawn on the server:
//! per hour, the entries that failed (inflow) and those that left
//! `pending` (outflow) as bars on the left scale, and the pending total at
//! each hour's end as a line on the right scale. The SVG names itself and
//! summarises what it shows (`<title>`, `<desc>`), and the same numbers
//! are a table under it for whoever cannot see the picture.
//!
//! Geometry is attributes, colours are CSS classes (`dlq.css`): the pages'
//! Content-Security-Policy allows no inline style.

use maud::{Markup, html};

use crate::dlq::TrendHour;

const LEFT: i64 = 44;
const RIGHT: i64 = 56;
const TOP: i64 = 26;
const BOTTOM: i64 = 32;
/// Width of one hour.
const SLOT: i64 = 27;
const PLOT_H: i64 = 170;
const BAR_W: i64 = 10;
const WIDTH: i64 = LEFT + 24 * SLOT + RIGHT;
const HEIGHT: i64 = TOP + PLOT_H + BOTTOM;
const HOUR_MS: i64 = 3_600_000;

/// The smallest of 1, 2, 5, 10, 20, 50, … at least `n`: the top of a scale.
fn scale_top(n: i64) -> i64 {
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if step * m >= n {
                return step * m;
            }
        }
        step *= 10;
    }
}

/// The ticks of a scale from 0 to `top`: the ends, and the middle when it
/// is a whole number.
fn ticks(top: i64) -> Vec<i64> {
    if top % 2 == 0 {
        vec![0, top / 2, top]
    } else {
        vec![0, top]
    }
}

/// The y of `v` on a scale from 0 to `top`.
fn y(v: i64, top: i64) -> i64 {
    TOP + PLOT_H - v * PLOT_H / top
}

/// `13:05–14:05` (UTC) for the hour ending at `end_ms`.
fn hour_label(end_ms: i64) -> String {
    let clock = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .map(|t| t.format("%H:%M").to_string())
            .unwrap_or_default()
    };
    format!("{}–{}", clock(end_ms - HOUR_MS), clock(end_ms))
}

/// What the chart shows, in a sentence or two.
pub(crate) fn summary(hours: &[TrendHour]) -> String {
    let inflow: usize = hours.iter().map(|h| h.inflow).sum();
    let outflow: usize = hours.iter().map(|h| h.outflow).sum();
    let (Some(first), Some(last)) = (hours.first(), hours.last()) else {
        return "No trend.".to_owned();
    };
    let before = first.pending_at_end - first.inflow as i64 + first.outflow as i64;
    if inflow == 0 && outflow == 0 {
        return format!(
            "No entry failed or left pending in the last 24 hours; {} pending throughout.",
            last.pending_at_end
        );
    }
    let mut s = format!(
        "In the last 24 hours {inflow} entr{} failed and {outflow} left pending (replayed or \
         discarded); pending went from {} to {}.",
        if inflow == 1 { "y" } else { "ies" },
        before.max(0),
        last.pending_at_end
    );
    if let Some(peak) = hours
        .iter()
        .filter(|h| h.inflow > 0)
        .max_by_key(|h| h.inflow)
    {
        s.push_str(&format!(
            " Most failures in one hour: {} ({} UTC).",
            peak.inflow,
            hour_label(peak.end_ms)
        ));
    }
    s
}

/// The chart, its legend and its table.
pub(crate) fn trend_chart(hours: &[TrendHour]) -> Markup {
    let flow_top = scale_top(
        hours
            .iter()
            .map(|h| h.inflow.max(h.outflow) as i64)
            .max()
            .unwrap_or(0)
            .max(1),
    );
    let pending_top = scale_top(
        hours
            .iter()
            .map(|h| h.pending_at_end)
            .max()
            .unwrap_or(0)
            .max(1),
    );
    let line: Vec<String> = hours
        .iter()
        .enumerate()
        .map(|(i, h)| {
            format!(
                "{},{}",
                LEFT + (i as i64 + 1) * SLOT,
                y(h.pending_at_end, pending_top)
            )
        })
        .collect();
    let bottom = TOP + PLOT_H;
    let right = LEFT + 24 * SLOT;
    html! {
        section #dlq-trend-section.trend aria-labelledby="dlq-trend-heading" {
            h2 #dlq-trend-heading { "The last 24 hours" }
            div #dlq-trend.scroll data-live {
                svg.dlq-trend xmlns="http://www.w3.org/2000/svg" role="img"
                    aria-labelledby="dlq-trend-title dlq-trend-desc"
                    width=(WIDTH) height=(HEIGHT) viewBox={ "0 0 " (WIDTH) " " (HEIGHT) } {
                    title #dlq-trend-title { "Dead letters per hour over the last 24 hours" }
                    desc #dlq-trend-desc { (summary(hours)) }
                    @for t in ticks(flow_top) {
                        line.grid x1=(LEFT) x2=(right) y1=(y(t, flow_top)) y2=(y(t, flow_top)) {}
                        text.tick x=(LEFT - 6) y=(y(t, flow_top) + 4) text-anchor="end" { (t) }
                    }
                    @for t in ticks(pending_top) {
                        text.tick.pending x=(right + 6) y=(y(t, pending_top) + 4) { (t) }
                    }
                    text.axis-name x="4" y=(TOP - 12) { "per hour" }
                    text.axis-name.pending x=(right + 6) y=(TOP - 12) { "pending" }
                    @for (i, h) in hours.iter().enumerate() {
                        @let x = LEFT + i as i64 * SLOT;
                        g.hour {
                            title {
                                (hour_label(h.end_ms)) " UTC: " (h.inflow) " in, " (h.outflow)
                                " out, " (h.pending_at_end) " pending at the end"
                            }
                            // The whole slot answers the pointer, not only the bars.
                            rect.slot x=(x) y=(TOP) width=(SLOT) height=(PLOT_H) {}
                            @if h.inflow > 0 {
                                rect.inflow x=(x + 3) y=(y(h.inflow as i64, flow_top))
                                    width=(BAR_W) height=(bottom - y(h.inflow as i64, flow_top)) {}
                            }
                            @if h.outflow > 0 {
                                rect.outflow x=(x + 4 + BAR_W) y=(y(h.outflow as i64, flow_top))
                                    width=(BAR_W) height=(bottom - y(h.outflow as i64, flow_top)) {}
                            }
                        }
                    }
                    polyline.pending points=(line.join(" ")) {}
                    line.axis x1=(LEFT) x2=(right) y1=(bottom) y2=(bottom) {}
                    @for j in (0..=24).step_by(6) {
                        @let x = LEFT + j as i64 * SLOT;
                        line.axis x1=(x) x2=(x) y1=(bottom) y2=(bottom + 4) {}
                        text.tick x=(x) y=(bottom + 18) text-anchor="middle" {
                            @if j == 24 { "now" } @else { "−" (24 - j) " h" }
                        }
                    }
                }
            }
            p.legend {
                span.swatch.inflow {} " in: entries that failed, per hour · "
                span.swatch.outflow {} " out: entries replayed or discarded, per hour (left scale) · "
                span.swatch.pending {} " pending at each hour's end (right scale)"
            }
            details.trend-table {
                summary { "The chart as a table" }
                div.scroll {
                    table {
                        thead {
                            tr {
                                th scope="col" { "hour (UTC)" }
                                th.num scope="col" { "in" }
                                th.num scope="col" { "out" }
                                th.num scope="col" { "pending at the end" }
                            }
                        }
                        tbody #dlq-trend-rows data-live {
                            @for h in hours.iter().rev() {
                                tr {
                                    td.time { (hour_label(h.end_ms)) }
                                    td.num { (h.inflow) }
                                    td.num { (h.outflow) }
                                    td.num { (h.pending_at_end) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pages::dlq::dashboard::tests::{NOW, stats, trend};

    #[test]
    fn scales_end_on_round_numbers() {
        let tops: Vec<i64> = [1, 2, 3, 5, 6, 11, 49, 50, 51, 999]
            .iter()
            .map(|n| scale_top(*n))
            .collect();
        assert_eq!(tops, [1, 2, 5, 5, 10, 20, 50, 50, 100, 1000]);
        assert_eq!(ticks(10), [0, 5, 10]);
        assert_eq!(ticks(5), [0, 5]);
        assert_eq!(y(0, 10), TOP + PLOT_H);
        assert_eq!(y(10, 10), TOP);
    }

    #[test]
    fn bars_and_the_line_sit_where_the_numbers_say() {
        let s = stats();
        let hours = trend(&s);
        let svg = trend_chart(&hours).into_string();
        // The last hour: 2 in, 2 out, on a scale up to 2: full height.
        let last = LEFT + 23 * SLOT;
        assert!(
            svg.contains(&format!(
                r#"<rect class="inflow" x="{}" y="{TOP}" width="{BAR_W}" height="{PLOT_H}">"#,
                last + 3
            )),
            "{svg}"
        );
        assert!(
            svg.contains(&format!(
                r#"<rect class="outflow" x="{}" y="{TOP}""#,
                last + 4 + BAR_W
            )),
            "{svg}"
        );
        // One bar of each kind per hour that had any, none for empty hours.
        assert_eq!(svg.matches(r#"<rect class="inflow""#).count(), 2, "{svg}");
        assert_eq!(svg.matches(r#"<rect class="outflow""#).count(), 1, "{svg}");
        // Pending ends at 5 on a scale up to 5: the line's last point is at the top.
        assert!(
            svg.contains(&format!("{},{TOP}\"", LEFT + 24 * SLOT)),
            "{svg}"
        );
        for label in ["−24 h", "−12 h", "−6 h", "now"] {
            assert!(svg.contains(&format!(">{label}</text>")), "{label}: {svg}");
        }
    }

    #[test]
    fn the_chart_has_a_text_alternative_and_a_table() {
        let s = stats();
        let hours = trend(&s);
        let html = trend_chart(&hours).into_string();
        assert!(
            html.contains(r#"role="img" aria-labelledby="dlq-trend-title dlq-trend-desc""#),
            "{html}"
        );
        assert_eq!(
            summary(&hours),
            "In the last 24 hours 3 entries failed and 2 left pending (replayed or discarded); \
             pending went from 4 to 5. Most failures in one hour: 2 (21:13–22:13 UTC)."
        );
        assert!(html.contains(&summary(&hours)), "{html}");
        assert_eq!(html.matches("<td class=\"time\">").count(), 24, "{html}");
        assert!(
            html.contains(r#"<tbody id="dlq-trend-rows" data-live>"#),
            "the rows refresh, the open/closed details stays: {html}"
        );
        let quiet = crate::dlq::trend_of(&crate::dlq::stats_of(&[], &[], 0, NOW), &[], NOW);
        assert_eq!(
            summary(&quiet),
            "No entry failed or left pending in the last 24 hours; 0 pending throughout."
        );
    }
}
