//! The last hour of a group's lag as an inline SVG line chart, scaled on
//! the server: time on x (up to the latest sample, back to the oldest one
//! kept — an hour at most, a minute at least, so that a console started a
//! few minutes ago shows a line rather than a dot at the edge), lag in
//! records on y (from 0 to a round number above the highest point), the
//! current value marked and written, and a sentence saying the same for
//! whoever cannot see the picture. Geometry is attributes, colours are CSS
//! classes (`assets/lag.css`): the pages' policy allows no inline style.

use maud::{Markup, html};

use super::super::clock_ms;
use crate::lag::{HISTORY, LagPoint};

/// The drawing's size in SVG units (it scales down to the page's width).
const WIDTH: f64 = 480.0;
const HEIGHT: f64 = 170.0;
/// Room for the y labels on the left, the axis title on top and the x
/// labels below.
const LEFT: f64 = 52.0;
const RIGHT: f64 = 14.0;
const TOP: f64 = 22.0;
const BOTTOM: f64 = 26.0;
/// One point per this many units of width: an hour of 5 s samples (720)
/// becomes at most ~200 points, each the highest lag of its column, so
/// that no peak is smoothed away.
const COLUMN: f64 = 2.0;
/// The shortest stretch of time the x axis spans.
const MIN_SPAN_MS: i64 = 60_000;
/// Spacings of the x axis' ticks, in seconds: the smallest that needs no
/// more than [`MAX_X_INTERVALS`] is taken.
const TICK_STEPS_S: [i64; 9] = [15, 30, 60, 120, 300, 600, 900, 1_200, 1_800];
const MAX_X_INTERVALS: i64 = 4;

fn plot_width() -> f64 {
    WIDTH - LEFT - RIGHT
}

fn plot_height() -> f64 {
    HEIGHT - TOP - BOTTOM
}

/// A series placed in the drawing.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Scaled {
    /// The top of the y axis: a round number at or above the highest point
    /// (1 for an empty or all-zero series, so that it is drawn on the floor).
    pub y_max: i64,
    /// The time the x axis spans, up to the latest sample.
    pub span_ms: i64,
    /// The line, in drawing units, oldest first.
    pub line: Vec<(f64, f64)>,
    /// The latest sample: where it is drawn, and its lag.
    pub now: Option<(f64, f64, i64)>,
    /// Samples in the hour, their lowest and highest lag, the first's time.
    pub samples: usize,
    pub lowest: i64,
    pub highest: i64,
    pub since_ms: Option<i64>,
}

/// Places `history` on the hour at most that ends at `end_ms` (the latest
/// sample): older points and points after it are left out.
pub(super) fn scale(history: &[LagPoint], end_ms: i64) -> Scaled {
    let hour = HISTORY.as_millis() as i64;
    let inside: Vec<&LagPoint> = history
        .iter()
        .filter(|p| p.at_ms >= end_ms - hour && p.at_ms <= end_ms)
        .collect();
    let span = inside
        .first()
        .map_or(hour, |p| (end_ms - p.at_ms).clamp(MIN_SPAN_MS, hour));
    let start = end_ms - span;
    let highest = inside.iter().map(|p| p.total_lag).max().unwrap_or(0);
    let lowest = inside.iter().map(|p| p.total_lag).min().unwrap_or(0);
    let y_max = round_up(highest);
    let x = |at: i64| LEFT + (at - start) as f64 / span as f64 * plot_width();
    let y = |lag: i64| TOP + (1.0 - lag.max(0) as f64 / y_max as f64) * plot_height();

    // One point per column (its highest lag), then the latest sample as it
    // is, so that the line ends on the value written beside it.
    let mut line: Vec<(f64, f64)> = Vec::new();
    let mut column: Option<i64> = None;
    if let Some((last, earlier)) = inside.split_last() {
        for p in earlier {
            let (px, py) = (x(p.at_ms), y(p.total_lag));
            let c = ((px - LEFT) / COLUMN).floor() as i64;
            match line.last_mut() {
                Some(prev) if column == Some(c) => prev.1 = prev.1.min(py),
                _ => line.push((px, py)),
            }
            column = Some(c);
        }
        line.push((x(last.at_ms), y(last.total_lag)));
    }
    Scaled {
        y_max,
        span_ms: span,
        now: inside
            .last()
            .map(|p| (x(p.at_ms), y(p.total_lag), p.total_lag)),
        line,
        samples: inside.len(),
        lowest,
        highest,
        since_ms: inside.first().map(|p| p.at_ms),
    }
}

/// The smallest of 1, 1.5, 2, 3, 4, 5, 6, 8 times a power of ten that is
/// at least `v` (and at least 1): a y axis that ends on a round number.
pub(super) fn round_up(v: i64) -> i64 {
    if v <= 1 {
        return 1;
    }
    let mut magnitude: i64 = 1;
    while magnitude <= v / 10 {
        magnitude *= 10;
    }
    // (numerator, denominator) of each step, to stay in integers.
    const STEPS: [(i64, i64); 9] = [
        (1, 1),
        (3, 2),
        (2, 1),
        (3, 1),
        (4, 1),
        (5, 1),
        (6, 1),
        (8, 1),
        (10, 1),
    ];
    STEPS
        .iter()
        .filter(|(n, d)| (magnitude * n) % d == 0)
        .map(|(n, d)| magnitude * n / d)
        .find(|candidate| *candidate >= v)
        .unwrap_or(magnitude * 10)
}

/// The x axis' ticks of a span: where each is, back from the right end,
/// and its label (`now`, `−30 s`, `−15 min`).
pub(super) fn x_ticks(span_ms: i64) -> Vec<(f64, String)> {
    let span_s = span_ms / 1000;
    let step = TICK_STEPS_S
        .into_iter()
        .find(|step| span_s <= step * MAX_X_INTERVALS)
        .unwrap_or(TICK_STEPS_S[TICK_STEPS_S.len() - 1]);
    (0..)
        .map(|k| k * step)
        .take_while(|back| *back <= span_s)
        .map(|back| {
            let x = LEFT + plot_width() * (1.0 - (back * 1000) as f64 / span_ms as f64);
            let label = match back {
                0 => "now".to_owned(),
                b if step < 60 => format!("−{b} s"),
                b => format!("−{} min", b / 60),
            };
            (x, label)
        })
        .collect()
}

/// A count in few characters: 950, 1.2k, 12k, 3.4M.
pub(super) fn compact(n: i64) -> String {
    let abs = n.unsigned_abs() as f64;
    let sign = if n < 0 { "-" } else { "" };
    let (value, unit) = match abs {
        a if a < 1e3 => return n.to_string(),
        a if a < 1e6 => (a / 1e3, "k"),
        a if a < 1e9 => (a / 1e6, "M"),
        a => (a / 1e9, "G"),
    };
    if value < 10.0 && (value * 10.0).round() % 10.0 != 0.0 {
        format!("{sign}{value:.1}{unit}")
    } else {
        format!("{sign}{value:.0}{unit}")
    }
}

/// What the chart shows, in one sentence.
pub(super) fn summary(s: &Scaled) -> String {
    match (s.now, s.since_ms) {
        (Some((_, _, now)), Some(since)) => format!(
            "Last hour: {} sample{} since {} UTC, lowest {}, highest {}, now {} record{}.",
            s.samples,
            if s.samples == 1 { "" } else { "s" },
            clock_ms(since).get(..8).unwrap_or_default(),
            s.lowest,
            s.highest,
            now,
            if now == 1 { "" } else { "s" },
        ),
        _ => "No sample of this group in the last hour yet.".to_owned(),
    }
}

/// The chart of `history` up to `end_ms`, for the group whose elements'
/// ids start with `id`; `tone` is the group's status label (the line's
/// colour).
pub(super) fn lag_chart(
    id: &str,
    group: &str,
    history: &[LagPoint],
    end_ms: i64,
    tone: &str,
) -> Markup {
    let s = scale(history, end_ms);
    let y_of = |v: i64| TOP + (1.0 - v as f64 / s.y_max as f64) * plot_height();
    let mut y_ticks = vec![0, s.y_max];
    if s.y_max % 2 == 0 {
        y_ticks.insert(1, s.y_max / 2);
    }
    let bottom = TOP + plot_height();
    let points: String = s
        .line
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect::<Vec<_>>()
        .join(" ");
    let title_id = format!("{id}-chart-title");
    let caption_id = format!("{id}-chart-caption");
    html! {
        figure.lag-chart {
            svg.lag-chart xmlns="http://www.w3.org/2000/svg" role="img"
                viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
                aria-labelledby=(title_id) aria-describedby=(caption_id) {
                title id=(title_id) { "Lag of group " (group) " in records, over the last hour at most" }
                text.axis-title x="4" y="12" { "records" }
                @for v in &y_ticks {
                    @let y = format!("{:.1}", y_of(*v));
                    line.grid x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y) y2=(y) {}
                    text.tick.y-label x=(LEFT - 6.0) y=(format!("{:.1}", y_of(*v) + 4.0)) { (compact(*v)) }
                }
                @for (x, label) in x_ticks(s.span_ms) {
                    @let x = format!("{x:.1}");
                    line.axis x1=(x) x2=(x) y1=(bottom) y2=(bottom + 4.0) {}
                    text.tick.x-label x=(x) y=(HEIGHT - 6.0) { (label) }
                }
                line.axis x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(bottom) {}
                line.axis x1=(LEFT) x2=(WIDTH - RIGHT) y1=(bottom) y2=(bottom) {}
                @if s.line.len() > 1 {
                    polyline class={ "line " (tone) } points=(points) {}
                }
                @if let Some((x, y, now)) = s.now {
                    circle class={ "now " (tone) } cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="3.5" {}
                    // Above the point, or below it when the point is at the top.
                    @let label_y = if y < TOP + 14.0 { y + 16.0 } else { y - 8.0 };
                    text.now-label x=(format!("{x:.1}")) y=(format!("{label_y:.1}")) { "now " (compact(now)) }
                } @else {
                    text.empty x=(LEFT + plot_width() / 2.0) y=(TOP + plot_height() / 2.0) {
                        "no sample in the last hour"
                    }
                }
            }
            figcaption id=(caption_id) { (summary(&s)) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    fn at(points: &[(i64, i64)]) -> Vec<LagPoint> {
        points
            .iter()
            .map(|(ms, lag)| LagPoint {
                at_ms: *ms,
                total_lag: *lag,
                max_lag_seconds: 0.0,
            })
            .collect()
    }

    #[test]
    fn the_y_axis_ends_on_a_round_number_at_or_above_the_highest_point() {
        for (v, expected) in [
            (-3, 1),
            (0, 1),
            (1, 1),
            (2, 2),
            (7, 8),
            (9, 10),
            (10, 10),
            (11, 15),
            (120, 150),
            (151, 200),
            (999, 1000),
            (4_100, 5_000),
            (61_000, 80_000),
        ] {
            assert_eq!(round_up(v), expected, "{v}");
        }
    }

    #[test]
    fn an_hour_spans_the_plot_and_lag_its_height() {
        let end = 10 * HOUR;
        let s = scale(
            &at(&[(end - HOUR, 0), (end - HOUR / 2, 60), (end, 120)]),
            end,
        );
        assert_eq!(s.y_max, 150);
        assert_eq!(s.line.len(), 3);
        let (left, bottom) = s.line[0];
        assert_eq!((left, bottom), (LEFT, TOP + plot_height()));
        let (mid_x, mid_y) = s.line[1];
        assert!((mid_x - (LEFT + plot_width() / 2.0)).abs() < 1e-9);
        assert!((mid_y - (TOP + plot_height() * (1.0 - 60.0 / 150.0))).abs() < 1e-9);
        assert_eq!(s.now.map(|n| (n.0, n.2)), Some((WIDTH - RIGHT, 120)));
        assert_eq!((s.samples, s.lowest, s.highest), (3, 0, 120));
    }

    #[test]
    fn a_flat_series_is_a_horizontal_line_and_zero_lies_on_the_floor() {
        let end = HOUR;
        let flat = scale(&at(&[(0, 5), (HOUR / 2, 5), (HOUR, 5)]), end);
        assert_eq!(flat.y_max, 5);
        assert!(flat.line.iter().all(|p| p.1 == TOP), "{flat:?}");
        let zero = scale(&at(&[(0, 0), (HOUR, 0)]), end);
        assert_eq!(zero.y_max, 1, "no division by zero");
        assert!(
            zero.line.iter().all(|p| p.1 == TOP + plot_height()),
            "{zero:?}"
        );
    }

    #[test]
    fn an_empty_series_is_drawn_as_axes_and_says_so() {
        let s = scale(&[], HOUR);
        assert_eq!((s.y_max, s.line.len(), s.now, s.samples), (1, 0, None, 0));
        let svg = lag_chart("g", "billing", &[], HOUR, "ok").into_string();
        assert!(!svg.contains("<polyline"), "{svg}");
        assert!(!svg.contains("<circle"), "{svg}");
        assert!(svg.contains("no sample in the last hour"), "{svg}");
        assert!(
            svg.contains("No sample of this group in the last hour yet."),
            "{svg}"
        );
    }

    #[test]
    fn the_x_axis_spans_the_history_kept_between_a_minute_and_an_hour() {
        let end = 10 * HOUR;
        let young = scale(&at(&[(end - 10_000, 1), (end - 5_000, 2), (end, 3)]), end);
        assert_eq!(young.span_ms, MIN_SPAN_MS, "three samples: a minute");
        let (first_x, _) = young.line[0];
        assert!((first_x - (LEFT + plot_width() * 50.0 / 60.0)).abs() < 1e-9);
        let labels = |span| x_ticks(span).into_iter().map(|t| t.1).collect::<Vec<_>>();
        assert_eq!(
            labels(MIN_SPAN_MS),
            ["now", "−15 s", "−30 s", "−45 s", "−60 s"]
        );
        assert_eq!(labels(100_000), ["now", "−30 s", "−60 s", "−90 s"]);
        assert_eq!(
            labels(HOUR),
            ["now", "−15 min", "−30 min", "−45 min", "−60 min"]
        );
        let ticks = x_ticks(HOUR);
        assert_eq!(ticks[0].0, WIDTH - RIGHT);
        assert_eq!(ticks[4].0, LEFT);
        let ten_minutes = scale(&at(&[(end - 600_000, 1), (end, 3)]), end);
        assert_eq!(ten_minutes.span_ms, 600_000);
        assert_eq!(labels(ten_minutes.span_ms), ["now", "−5 min", "−10 min"]);
        assert_eq!(
            scale(&[], end).span_ms,
            HOUR,
            "an empty chart shows the hour"
        );
    }

    #[test]
    fn points_outside_the_hour_are_left_out() {
        let s = scale(
            &at(&[(0, 900), (HOUR, 10), (2 * HOUR, 20), (3 * HOUR, 7)]),
            2 * HOUR,
        );
        assert_eq!(s.samples, 2);
        assert_eq!(s.highest, 20, "the 900 of two hours ago is not drawn");
        assert_eq!(s.now.map(|n| n.2), Some(20), "nor the point after the end");
    }

    #[test]
    fn an_hour_of_samples_is_thinned_to_columns_keeping_peaks_and_the_last_value() {
        let end = HOUR;
        let mut points: Vec<(i64, i64)> = (0..720).map(|i| (i * 5_000, 10)).collect();
        points[300].1 = 500;
        points.push((HOUR, 3));
        let s = scale(&at(&points), end);
        assert!(
            s.line.len() <= (plot_width() / COLUMN) as usize + 2,
            "{}",
            s.line.len()
        );
        let top = TOP + plot_height() * (1.0 - 500.0 / s.y_max as f64);
        assert!(s.line.iter().any(|p| (p.1 - top).abs() < 1e-9), "the peak");
        let last = s.line.last().expect("a line");
        assert_eq!(Some((last.0, last.1)), s.now.map(|n| (n.0, n.1)));
        assert_eq!(s.now.map(|n| n.2), Some(3));
    }

    #[test]
    fn the_chart_names_its_group_labels_its_axes_and_writes_the_current_value() {
        let end = 1_700_000_000_000;
        let svg = lag_chart(
            "group-billing",
            "billing<1>",
            &at(&[(end - 60_000, 1_000), (end, 1_200)]),
            end,
            "err",
        )
        .into_string();
        assert!(
            svg.contains(r#"<title id="group-billing-chart-title">Lag of group billing&lt;1&gt; in records, over the last hour at most</title>"#),
            "{svg}"
        );
        assert!(svg.contains(r#"aria-describedby="group-billing-chart-caption""#));
        assert!(svg.contains(r#"<polyline class="line err""#), "{svg}");
        assert!(svg.contains(">now 1.2k</text>"), "{svg}");
        assert!(
            svg.contains(">−60 s</text>") && svg.contains(">now</text>"),
            "{svg}"
        );
        assert!(svg.contains(">1.5k</text>"), "the top of the y axis: {svg}");
        assert!(
            svg.contains("Last hour: 2 samples since 22:12:20 UTC, lowest 1000, highest 1200, now 1200 records."),
            "{svg}"
        );
    }

    #[test]
    fn counts_are_written_short() {
        for (n, expected) in [
            (0, "0"),
            (999, "999"),
            (1_000, "1k"),
            (1_200, "1.2k"),
            (15_000, "15k"),
            (2_500_000, "2.5M"),
            (-1_500, "-1.5k"),
        ] {
            assert_eq!(compact(n), expected, "{n}");
        }
    }
}
