//! Lag as the console shows it: the lag monitor's latest report (Burrow's
//! statuses, lag in records and seconds per partition, retention danger)
//! and, per group, the last hour of total lag with its trend and an
//! estimated time to drain. A [`LagBoard`] is filled by [`watch`] (one
//! `LagMonitor` tick every interval) and read by `/api/lag` and the
//! correlation document.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use kausal_monitor::{GroupLag, LagMonitor};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// How far back a group's history goes.
pub const HISTORY: Duration = Duration::from_secs(3600);
/// The stretch of history the trend and the time to drain are fitted on.
pub const TREND_WINDOW: Duration = Duration::from_secs(300);

/// One point of a group's history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LagPoint {
    pub at_ms: i64,
    pub total_lag: i64,
    pub max_lag_seconds: f64,
}

/// Which way a group's lag goes over [`TREND_WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    Growing,
    Shrinking,
    Flat,
    /// Fewer than two points yet.
    Unknown,
}

/// One group: the monitor's report, its history, trend and time to drain.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupView {
    #[serde(flatten)]
    pub lag: GroupLag,
    pub trend: Trend,
    /// Records per second the lag changes by (negative: draining).
    pub lag_rate_per_second: Option<f64>,
    /// Seconds until the lag reaches zero at the current drain rate; 0 when
    /// there is no lag, `None` when it is not draining.
    pub eta_seconds: Option<f64>,
    pub history: Vec<LagPoint>,
}

/// What `/api/lag` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LagDocument {
    /// When the monitor last sampled; `None` before its first sample.
    pub sampled_at_ms: Option<i64>,
    /// Why there is no data, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub groups: Vec<GroupView>,
    /// Whether a lag monitor fills the board (the console has Kafka); the
    /// page tells "off" from "waiting for the first sample" by it. Not in
    /// the API's answer (`note` says it there).
    #[serde(skip)]
    pub watched: bool,
    /// Why the last sample failed, while it does (the page shows it beside
    /// the last good sample). Not in the API's answer (`note` says it).
    #[serde(skip)]
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    sampled_at_ms: Option<i64>,
    latest: Vec<GroupLag>,
    history: BTreeMap<String, VecDeque<LagPoint>>,
    last_error: Option<String>,
}

/// The latest lag and the last hour of it, shared by the watcher and the
/// API.
#[derive(Debug, Clone, Default)]
pub struct LagBoard {
    inner: Arc<RwLock<Inner>>,
    /// Whether anything fills it (the console was given Kafka).
    watched: bool,
}

impl LagBoard {
    /// A board [`watch`] fills.
    pub fn watched() -> Self {
        Self {
            inner: Arc::default(),
            watched: true,
        }
    }

    /// A board nothing fills: the console has no Kafka.
    pub fn unwatched() -> Self {
        Self::default()
    }

    /// Records one report taken at `at_ms`, and forgets history older than
    /// [`HISTORY`] and groups no longer reported.
    pub fn record(&self, report: Vec<GroupLag>, at_ms: i64) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let oldest = at_ms - HISTORY.as_millis() as i64;
        for g in &report {
            let points = inner.history.entry(g.group.clone()).or_default();
            points.push_back(LagPoint {
                at_ms,
                total_lag: g.total_lag,
                max_lag_seconds: g.max_lag_seconds,
            });
            while points.front().is_some_and(|p| p.at_ms < oldest) {
                points.pop_front();
            }
        }
        inner
            .history
            .retain(|group, _| report.iter().any(|g| &g.group == group));
        inner.latest = report;
        inner.sampled_at_ms = Some(at_ms);
        inner.last_error = None;
    }

    fn failed(&self, error: String) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.last_error = Some(error);
    }

    /// The document of every group, or of the named ones only.
    pub fn document(&self, only: Option<&[&str]>) -> LagDocument {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let groups = inner
            .latest
            .iter()
            .filter(|g| only.is_none_or(|names| names.contains(&g.group.as_str())))
            .map(|g| {
                let history: Vec<LagPoint> = inner
                    .history
                    .get(&g.group)
                    .map(|h| h.iter().copied().collect())
                    .unwrap_or_default();
                let (trend, rate, eta) = trend_of(&history, g.total_lag);
                GroupView {
                    lag: g.clone(),
                    trend,
                    lag_rate_per_second: rate,
                    eta_seconds: eta,
                    history,
                }
            })
            .collect();
        let note = if !self.watched {
            Some("the console was started without Kafka: give it --kafka to watch lag".into())
        } else if let Some(e) = &inner.last_error {
            Some(format!("the last lag sample failed: {e}"))
        } else if inner.sampled_at_ms.is_none() {
            Some("the first lag sample has not been taken yet".into())
        } else {
            None
        };
        LagDocument {
            sampled_at_ms: inner.sampled_at_ms,
            note,
            groups,
            watched: self.watched,
            last_error: inner.last_error.clone(),
        }
    }
}

/// The trend, the rate of change (records/s, least squares over the last
/// [`TREND_WINDOW`]) and the time to drain `lag` at that rate.
pub fn trend_of(history: &[LagPoint], lag: i64) -> (Trend, Option<f64>, Option<f64>) {
    let Some(last) = history.last() else {
        return (Trend::Unknown, None, (lag == 0).then_some(0.0));
    };
    let since = last.at_ms - TREND_WINDOW.as_millis() as i64;
    let recent: Vec<(f64, f64)> = history
        .iter()
        .filter(|p| p.at_ms >= since)
        .map(|p| ((p.at_ms - last.at_ms) as f64 / 1000.0, p.total_lag as f64))
        .collect();
    let eta_at = |rate: f64| {
        if lag == 0 {
            Some(0.0)
        } else if rate < 0.0 {
            Some(lag as f64 / -rate)
        } else {
            None
        }
    };
    if recent.len() < 2 {
        return (Trend::Unknown, None, eta_at(0.0));
    }
    let n = recent.len() as f64;
    let (mx, my) = (
        recent.iter().map(|p| p.0).sum::<f64>() / n,
        recent.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = recent.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = recent.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    if sxx == 0.0 {
        return (Trend::Unknown, None, eta_at(0.0));
    }
    let rate = sxy / sxx;
    // Under one record a minute either way is noise, not a trend.
    let trend = if rate > 1.0 / 60.0 {
        Trend::Growing
    } else if rate < -1.0 / 60.0 {
        Trend::Shrinking
    } else {
        Trend::Flat
    };
    (trend, Some(rate), eta_at(rate))
}

/// Ticks `monitor` every `interval` into `board` until `stop`. A failed
/// tick is logged and shown in the document's note; the next one retries.
pub async fn watch(
    mut monitor: LagMonitor,
    board: LagBoard,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        match monitor.tick().await {
            Ok(report) => board.record(report, crate::now_ms()),
            Err(e) => {
                tracing::warn!(error = %e, "lag sampling failed; retrying next interval");
                board.failed(e.to_string());
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points(lags: &[(i64, i64)]) -> Vec<LagPoint> {
        lags.iter()
            .map(|(s, lag)| LagPoint {
                at_ms: s * 1000,
                total_lag: *lag,
                max_lag_seconds: 0.0,
            })
            .collect()
    }

    #[test]
    fn a_draining_group_gets_its_time_to_drain() {
        // 10 records/s drained, 100 left: 10 s.
        let h = points(&[(0, 400), (10, 300), (20, 200), (30, 100)]);
        let (trend, rate, eta) = trend_of(&h, 100);
        assert_eq!(trend, Trend::Shrinking);
        assert!((rate.expect("rate") + 10.0).abs() < 1e-9);
        assert!((eta.expect("eta") - 10.0).abs() < 1e-9);
    }

    #[test]
    fn a_growing_group_has_no_time_to_drain() {
        let h = points(&[(0, 100), (10, 200), (20, 300)]);
        let (trend, _, eta) = trend_of(&h, 300);
        assert_eq!(trend, Trend::Growing);
        assert_eq!(eta, None);
    }

    #[test]
    fn no_lag_drains_now_and_one_point_has_no_trend() {
        assert_eq!(
            trend_of(&points(&[(0, 0)]), 0),
            (Trend::Unknown, None, Some(0.0))
        );
        let (trend, _, eta) = trend_of(&points(&[(0, 5), (10, 5), (20, 5)]), 5);
        assert_eq!(trend, Trend::Flat);
        assert_eq!(eta, None);
    }

    #[test]
    fn only_the_last_five_minutes_set_the_trend() {
        // Grew long ago, drains now.
        let mut lags: Vec<(i64, i64)> = (0..30).map(|i| (i * 10, i * 100)).collect();
        lags.extend((0..31).map(|i| (600 + i * 10, 3000 - i * 50)));
        let (trend, rate, _) = trend_of(&points(&lags), 1500);
        assert_eq!(trend, Trend::Shrinking);
        assert!((rate.expect("rate") + 5.0).abs() < 1e-9);
    }

    #[test]
    fn the_board_keeps_an_hour_and_forgets_gone_groups() {
        let board = LagBoard::watched();
        let group = |name: &str, lag| GroupLag {
            group: name.into(),
            status: kausal_core::lag::GroupStatus::Ok,
            total_lag: lag,
            max_lag_seconds: 0.0,
            partitions: Vec::new(),
        };
        board.record(vec![group("a", 5), group("b", 1)], 0);
        board.record(vec![group("a", 4)], HISTORY.as_millis() as i64 + 1);
        let doc = board.document(None);
        assert_eq!(doc.groups.len(), 1, "b is gone");
        assert_eq!(
            doc.groups[0].history.len(),
            1,
            "the point an hour old is gone"
        );
        assert_eq!(board.document(Some(&["b"])).groups.len(), 0);
        assert!(LagBoard::unwatched().document(None).note.is_some());
    }

    #[test]
    fn the_document_says_whether_anything_watches_and_why_the_last_sample_failed() {
        let off = LagBoard::unwatched().document(None);
        assert!(!off.watched);
        let board = LagBoard::watched();
        let waiting = board.document(None);
        assert!(waiting.watched && waiting.sampled_at_ms.is_none());
        assert_eq!(waiting.last_error, None);
        board.failed("broker unreachable".into());
        let failing = board.document(None);
        assert_eq!(failing.last_error.as_deref(), Some("broker unreachable"));
        let json = serde_json::to_value(&failing).expect("json");
        let mut fields: Vec<&String> = json.as_object().expect("object").keys().collect();
        fields.sort();
        assert_eq!(
            fields,
            ["groups", "note", "sampled_at_ms"],
            "the API's fields are unchanged: {json}"
        );
        board.record(Vec::new(), 5);
        assert_eq!(
            board.document(None).last_error,
            None,
            "a good sample clears it"
        );
    }
}
