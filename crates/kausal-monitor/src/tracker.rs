//! Pure bookkeeping of the lag monitor: readings in, statuses and lags out.
//!
//! One [`LagWindow`] per (group, topic, partition), one
//! [`WatermarkHistory`] per (topic, partition), and what is known about
//! commits that snapshots cannot see (see
//! [`LagWindow::evaluate_with_commit`]). No I/O: the sampler feeds it.

use std::collections::BTreeMap;

use kausal_core::lag::{
    DEFAULT_HISTORY_POINTS, DEFAULT_WINDOW_SAMPLES, GroupStatus, LagRules, LagWindow, OffsetSample,
    PartitionStatus, WatermarkHistory,
};
use serde::Serialize;

/// (group, topic, partition).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PartitionKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// One observation of a partition for a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub key: PartitionKey,
    /// The group's committed offset, `None` if it never committed here.
    pub committed: Option<i64>,
    pub low_watermark: i64,
    pub high_watermark: i64,
    /// Timestamp of the record at the group's position, when the sampler
    /// read it (see [`LagTracker::needs_record_timestamp`]).
    pub record_timestamp_ms: Option<i64>,
    /// Whether the group has live members; `None` when that could not be
    /// asked.
    pub group_alive: Option<bool>,
    pub at_ms: i64,
}

impl Reading {
    /// The next offset the group will read: its commit, or the log start
    /// for a group that never committed (it starts from the earliest).
    pub fn position(&self) -> i64 {
        self.committed.unwrap_or(self.low_watermark)
    }
}

/// The state of one partition for one group at report time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartitionLag {
    #[serde(flatten)]
    pub key: PartitionKey,
    pub committed: Option<i64>,
    pub high_watermark: i64,
    pub lag: i64,
    pub lag_seconds: f64,
    /// `None` until the partition has been sampled.
    #[serde(serialize_with = "status_label")]
    pub status: Option<PartitionStatus>,
    pub retention_ms: Option<i64>,
    /// Time lag over retention; `None` when retention is unknown/unlimited.
    pub retention_ratio: Option<f64>,
    pub retention_danger: bool,
    pub group_alive: Option<bool>,
}

/// A group and its partitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupLag {
    pub group: String,
    #[serde(serialize_with = "group_label")]
    pub status: GroupStatus,
    pub total_lag: i64,
    pub max_lag_seconds: f64,
    pub partitions: Vec<PartitionLag>,
}

fn status_label<S: serde::Serializer>(
    s: &Option<PartitionStatus>,
    ser: S,
) -> Result<S::Ok, S::Error> {
    match s {
        Some(s) => ser.serialize_str(s.label()),
        None => ser.serialize_none(),
    }
}

fn group_label<S: serde::Serializer>(s: &GroupStatus, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.label())
}

#[derive(Debug, Clone)]
struct PartitionState {
    window: LagWindow,
    last: Reading,
    /// See [`LagWindow::evaluate_with_commit`].
    last_commit_ms: Option<i64>,
}

/// Windows, histories and retention of everything the monitor watches.
#[derive(Debug, Clone)]
pub struct LagTracker {
    window_samples: usize,
    history_points: usize,
    rules: LagRules,
    partitions: BTreeMap<PartitionKey, PartitionState>,
    histories: BTreeMap<(String, i32), WatermarkHistory>,
    retention: BTreeMap<String, Option<i64>>,
    /// Timestamps of records already read, by (topic, partition, offset):
    /// a group stuck at one offset costs one read, not one per tick.
    record_times: BTreeMap<(String, i32, i64), i64>,
}

impl Default for LagTracker {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW_SAMPLES, LagRules::default())
    }
}

impl LagTracker {
    pub fn new(window_samples: usize, rules: LagRules) -> Self {
        Self {
            window_samples,
            history_points: DEFAULT_HISTORY_POINTS,
            rules,
            partitions: BTreeMap::new(),
            histories: BTreeMap::new(),
            retention: BTreeMap::new(),
            record_times: BTreeMap::new(),
        }
    }

    /// Records a topic's `retention.ms` (`None`: unlimited or unknown).
    pub fn set_retention(&mut self, topic: &str, retention_ms: Option<i64>) {
        self.retention.insert(topic.to_owned(), retention_ms);
    }

    /// Whether the record at `position` is older than the watermark history
    /// of the partition, so that only its own timestamp tells when it was
    /// produced. The sampler reads that record only then.
    pub fn needs_record_timestamp(
        &self,
        topic: &str,
        partition: i32,
        position: i64,
        high: i64,
    ) -> bool {
        if position >= high
            || self
                .record_times
                .contains_key(&(topic.to_owned(), partition, position))
        {
            return false;
        }
        match self.histories.get(&(topic.to_owned(), partition)) {
            Some(h) => position < h.oldest().offset,
            None => true,
        }
    }

    /// Adds a reading.
    pub fn observe(&mut self, mut reading: Reading) {
        let record_key = (
            reading.key.topic.clone(),
            reading.key.partition,
            reading.position(),
        );
        match reading.record_timestamp_ms {
            Some(ts) => {
                self.record_times.insert(record_key, ts);
            }
            None => reading.record_timestamp_ms = self.record_times.get(&record_key).copied(),
        }
        let history_points = self.history_points;
        self.histories
            .entry((reading.key.topic.clone(), reading.key.partition))
            .and_modify(|h| h.push(reading.high_watermark, reading.at_ms))
            .or_insert_with(|| {
                WatermarkHistory::new(history_points, reading.high_watermark, reading.at_ms)
            });

        let sample = OffsetSample::new(reading.position(), reading.high_watermark, reading.at_ms);
        let window_samples = self.window_samples;
        match self.partitions.get_mut(&reading.key) {
            Some(state) => {
                let moved = state.last.position() != reading.position();
                state.last_commit_ms = match reading.group_alive {
                    _ if moved => Some(reading.at_ms),
                    Some(true) => Some(reading.at_ms),
                    Some(false) => state.last_commit_ms.or(Some(i64::MIN)),
                    None => state.last_commit_ms,
                };
                state.window.push(sample);
                state.last = reading;
            }
            None => {
                let mut window = LagWindow::new(window_samples);
                window.push(sample);
                let last_commit_ms = match reading.group_alive {
                    Some(true) => Some(reading.at_ms),
                    Some(false) => Some(i64::MIN),
                    None => None,
                };
                self.partitions.insert(
                    reading.key.clone(),
                    PartitionState {
                        window,
                        last: reading,
                        last_commit_ms,
                    },
                );
            }
        }
    }

    /// Forgets partitions not observed since `since_ms` (a group that left
    /// a topic, a deleted topic).
    pub fn forget_unseen_since(&mut self, since_ms: i64) {
        self.partitions.retain(|_, s| s.last.at_ms >= since_ms);
        let live: std::collections::BTreeSet<(String, i32)> = self
            .partitions
            .keys()
            .map(|k| (k.topic.clone(), k.partition))
            .collect();
        self.histories.retain(|k, _| live.contains(k));
        let positions: std::collections::BTreeSet<(String, i32, i64)> = self
            .partitions
            .iter()
            .map(|(k, s)| (k.topic.clone(), k.partition, s.last.position()))
            .collect();
        self.record_times.retain(|k, _| positions.contains(k));
    }

    /// Lag and status of every tracked partition at `now_ms`, by group.
    pub fn report(&self, now_ms: i64) -> Vec<GroupLag> {
        let mut groups: BTreeMap<&str, Vec<PartitionLag>> = BTreeMap::new();
        for (key, state) in &self.partitions {
            groups
                .entry(&key.group)
                .or_default()
                .push(self.partition_lag(key, state, now_ms));
        }
        groups
            .into_iter()
            .map(|(group, partitions)| GroupLag {
                group: group.to_owned(),
                status: GroupStatus::from_partitions(partitions.iter().filter_map(|p| p.status)),
                total_lag: partitions.iter().map(|p| p.lag).sum(),
                max_lag_seconds: partitions.iter().map(|p| p.lag_seconds).fold(0.0, f64::max),
                partitions,
            })
            .collect()
    }

    /// Burrow's rules need a history: with one sample only "keeping up"
    /// can be said; anything else is unknown until the second sample.
    fn status(&self, state: &PartitionState, lag: i64, now_ms: i64) -> Option<PartitionStatus> {
        if state.window.len() < 2 {
            return (lag <= self.rules.allowed_lag.max(0)).then_some(PartitionStatus::Ok);
        }
        state
            .window
            .evaluate_with_commit(now_ms, state.last_commit_ms, self.rules)
    }

    fn partition_lag(
        &self,
        key: &PartitionKey,
        state: &PartitionState,
        now_ms: i64,
    ) -> PartitionLag {
        let r = &state.last;
        let position = r.position();
        let lag = (r.high_watermark - position).max(0);
        let lag_seconds = if lag == 0 {
            0.0
        } else {
            match self.histories.get(&(key.topic.clone(), key.partition)) {
                Some(h) => h.time_lag_secs(position, now_ms, r.record_timestamp_ms),
                None => r
                    .record_timestamp_ms
                    .map(|t| now_ms.saturating_sub(t).max(0) as f64 / 1000.0)
                    .unwrap_or(0.0),
            }
        };
        let retention_ms = self.retention.get(&key.topic).copied().flatten();
        let retention_ratio = retention_ms
            .filter(|ms| *ms > 0)
            .map(|ms| lag_seconds * 1000.0 / ms as f64);
        PartitionLag {
            key: key.clone(),
            committed: r.committed,
            high_watermark: r.high_watermark,
            lag,
            lag_seconds,
            status: self.status(state, lag, now_ms),
            retention_ms,
            retention_ratio,
            retention_danger: kausal_core::lag::retention_danger(lag_seconds, retention_ms),
            group_alive: r.group_alive,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(committed: i64, high: i64, at_ms: i64, alive: Option<bool>) -> Reading {
        Reading {
            key: PartitionKey {
                group: "payments".into(),
                topic: "orders".into(),
                partition: 0,
            },
            committed: Some(committed),
            low_watermark: 0,
            high_watermark: high,
            record_timestamp_ms: None,
            group_alive: alive,
            at_ms,
        }
    }

    fn status_after(readings: &[(i64, i64, i64)], alive: Option<bool>) -> Option<PartitionStatus> {
        let mut t = LagTracker::default();
        for &(c, h, at) in readings {
            t.observe(reading(c, h, at, alive));
        }
        let now = readings.last().map(|r| r.2).unwrap_or(0);
        t.report(now)[0].partitions[0].status
    }

    #[test]
    fn liveness_turns_a_frozen_offset_into_stop_or_stall() {
        let frozen = [(100, 150, 0), (100, 160, 1000), (100, 170, 2000)];
        assert_eq!(
            status_after(&frozen, Some(false)),
            Some(PartitionStatus::Stop)
        );
        assert_eq!(
            status_after(&frozen, Some(true)),
            Some(PartitionStatus::Stall)
        );
        assert_eq!(status_after(&frozen, None), Some(PartitionStatus::Stall));
    }

    #[test]
    fn a_group_that_left_after_moving_is_stop_once_the_move_is_old() {
        let mut t = LagTracker::new(3, LagRules::default());
        t.observe(reading(90, 150, 0, Some(true)));
        t.observe(reading(100, 160, 1000, Some(true)));
        t.observe(reading(100, 170, 2000, Some(false)));
        // Last commit seen at 1000; window span 2000: not stopped yet.
        assert_eq!(
            t.report(2000)[0].partitions[0].status,
            Some(PartitionStatus::Warn)
        );
        t.observe(reading(100, 170, 3100, Some(false)));
        t.observe(reading(100, 170, 4500, Some(false)));
        // Window 2000..4500 (span 2500); last commit 3500 ago.
        assert_eq!(
            t.report(4500)[0].partitions[0].status,
            Some(PartitionStatus::Stop)
        );
    }

    #[test]
    fn lag_seconds_from_history_record_time_or_zero() {
        let mut t = LagTracker::default();
        // Caught up: 0 s.
        t.observe(reading(10, 10, 1_000_000, Some(true)));
        assert_eq!(t.report(1_000_000)[0].partitions[0].lag_seconds, 0.0);
        // Ten records arrive over 10 s, the group stays at 10.
        t.observe(reading(10, 20, 1_010_000, Some(true)));
        let lag = &t.report(1_010_000)[0].partitions[0];
        assert_eq!(lag.lag, 10);
        // Offset 10 was produced between the two readings: interpolation
        // puts it at the first (offset 10 at 1 000 000), so 10 s.
        assert!((lag.lag_seconds - 10.0).abs() < 1e-9, "{}", lag.lag_seconds);

        // A group reprocessing from 0, older than the history: the record
        // timestamp (an hour ago) bounds it, no extrapolation.
        let mut old = reading(0, 20, 1_010_000, Some(true));
        old.key.group = "replayer".into();
        old.record_timestamp_ms = Some(1_010_000 - 3_600_000);
        assert!(t.needs_record_timestamp("orders", 0, 0, 20));
        t.observe(old);
        assert!(
            !t.needs_record_timestamp("orders", 0, 0, 20),
            "a record read once is not read again"
        );
        let report = t.report(1_010_000);
        let replayer = report
            .iter()
            .find(|g| g.group == "replayer")
            .expect("replayer reported");
        assert!((replayer.partitions[0].lag_seconds - 3600.0).abs() < 1e-9);
    }

    #[test]
    fn retention_ratio_and_danger() {
        let mut t = LagTracker::default();
        t.set_retention("orders", Some(10_000));
        let mut r = reading(0, 5, 100_000, Some(true));
        r.record_timestamp_ms = Some(91_000);
        t.observe(r);
        let p = &t.report(100_000)[0].partitions[0];
        assert!((p.lag_seconds - 9.0).abs() < 1e-9);
        assert_eq!(p.retention_ratio, Some(0.9));
        assert!(p.retention_danger);
        t.set_retention("orders", None);
        let p = &t.report(100_000)[0].partitions[0];
        assert_eq!(p.retention_ratio, None);
        assert!(!p.retention_danger);
    }

    #[test]
    fn one_sample_says_ok_or_nothing() {
        let mut t = LagTracker::default();
        t.observe(reading(100, 150, 0, Some(true)));
        assert_eq!(t.report(0)[0].partitions[0].status, None);
        let mut t = LagTracker::default();
        t.observe(reading(150, 150, 0, Some(true)));
        assert_eq!(
            t.report(0)[0].partitions[0].status,
            Some(PartitionStatus::Ok)
        );
    }

    #[test]
    fn forgets_what_is_no_longer_seen() {
        let mut t = LagTracker::default();
        t.observe(reading(0, 5, 1000, Some(true)));
        let mut other = reading(0, 5, 5000, Some(true));
        other.key.partition = 1;
        t.observe(other);
        t.forget_unseen_since(2000);
        let report = t.report(5000);
        assert_eq!(report[0].partitions.len(), 1);
        assert_eq!(report[0].partitions[0].key.partition, 1);
    }
}
