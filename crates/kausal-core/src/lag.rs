//! Consumer lag evaluation (DESIGN §7): Burrow's partition rules over a
//! sliding window of offset samples, the group status derived from them, lag
//! in seconds by interpolating the high-watermark history (kafka-lag-exporter's
//! method without its NaN and runaway-extrapolation faults), and the
//! retention-danger signal. The rules agree with Burrow's own rule table,
//! ported into the tests below.
//!
//! Nothing here reads a clock: every timestamp is milliseconds since the Unix
//! epoch, passed in by the caller. The caller keeps one [`LagWindow`] and one
//! [`WatermarkHistory`] per (group, topic, partition) and (topic, partition).

use std::collections::VecDeque;
use std::fmt;

/// Samples a [`LagWindow`] keeps unless told otherwise (Burrow's `intervals`).
pub const DEFAULT_WINDOW_SAMPLES: usize = 10;

/// Points a [`WatermarkHistory`] keeps unless told otherwise.
pub const DEFAULT_HISTORY_POINTS: usize = 60;

/// Share of the topic's retention above which a time lag is a danger: past
/// it, the consumer is close to losing records to retention before reading
/// them.
pub const RETENTION_DANGER_RATIO: f64 = 0.8;

/// One observation of a partition as seen by one consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetSample {
    /// The group's committed offset (the next offset it will read).
    pub committed_offset: i64,
    /// The partition's high watermark (log end offset) at that moment.
    pub high_watermark: i64,
    /// When the sample was taken, ms since the Unix epoch.
    pub timestamp_ms: i64,
}

impl OffsetSample {
    pub fn new(committed_offset: i64, high_watermark: i64, timestamp_ms: i64) -> Self {
        Self {
            committed_offset,
            high_watermark,
            timestamp_ms,
        }
    }

    /// Records the group has not read yet: `max(0, high − committed)`.
    pub fn lag(&self) -> i64 {
        self.high_watermark
            .saturating_sub(self.committed_offset)
            .max(0)
    }
}

/// Burrow's status of one partition for one consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PartitionStatus {
    /// Keeping up, or no evidence of a problem.
    Ok,
    /// Lag did not decrease across the window: the consumer is falling behind.
    Warn,
    /// No commit for longer than the window spans while behind, and not
    /// caught up since the last commit: the consumer is gone or hung.
    Stop,
    /// Committing the same offset over and over while behind: the consumer is
    /// alive but stuck (typically on one record).
    Stall,
    /// The committed offset went backwards and has not since come back to
    /// where it was: someone reset the offsets or the consumer is
    /// reprocessing.
    Rewind,
}

impl PartitionStatus {
    /// Stable lowercase label for metrics, JSON and the console.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Stop => "stop",
            Self::Stall => "stall",
            Self::Rewind => "rewind",
        }
    }

    /// The name Burrow prints (`OK`, `WARN`, `STOP`, `STALL`, `REWIND`).
    pub fn burrow_name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Stop => "STOP",
            Self::Stall => "STALL",
            Self::Rewind => "REWIND",
        }
    }

    /// Whether this status makes the group ERR (Burrow: STOP, STALL, REWIND).
    pub fn is_error(self) -> bool {
        matches!(self, Self::Stop | Self::Stall | Self::Rewind)
    }
}

impl fmt::Display for PartitionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Burrow's status of a consumer group, the worst of its partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupStatus {
    Ok,
    Warn,
    Err,
}

impl GroupStatus {
    /// OK if every partition is OK (or there is none), ERR if any partition
    /// is STOP, STALL or REWIND, WARN otherwise.
    pub fn from_partitions<I>(statuses: I) -> Self
    where
        I: IntoIterator<Item = PartitionStatus>,
    {
        let mut group = Self::Ok;
        for status in statuses {
            if status.is_error() {
                return Self::Err;
            }
            if status != PartitionStatus::Ok {
                group = Self::Warn;
            }
        }
        group
    }

    /// Value of the `consumer_group_status` gauge: 0 = OK, 1 = WARN, 2 = ERR.
    pub fn code(self) -> i64 {
        match self {
            Self::Ok => 0,
            Self::Warn => 1,
            Self::Err => 2,
        }
    }

    /// Stable lowercase label for metrics, JSON and the console.
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Err => "err",
        }
    }

    /// The name Burrow prints (`OK`, `WARN`, `ERR`).
    pub fn burrow_name(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Warn => "WARN",
            Self::Err => "ERR",
        }
    }
}

impl fmt::Display for GroupStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Tunables of the partition rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LagRules {
    /// Lag (in records) that still counts as keeping up. Burrow's default, 0,
    /// means only a fully caught-up partition is OK by the first rule.
    pub allowed_lag: i64,
}

/// The last N offset samples of one (group, topic, partition), oldest first.
///
/// Samples are expected in time order; the rules only compare neighbours and
/// the two ends, so an out-of-order sample cannot panic anything, it only
/// makes the answer less meaningful.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagWindow {
    capacity: usize,
    samples: VecDeque<OffsetSample>,
}

impl Default for LagWindow {
    fn default() -> Self {
        Self::new(DEFAULT_WINDOW_SAMPLES)
    }
}

impl LagWindow {
    /// A window keeping the last `capacity` samples (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            capacity,
            samples: VecDeque::with_capacity(capacity),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Adds a sample, dropping the oldest once the window is full.
    pub fn push(&mut self, sample: OffsetSample) {
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = &OffsetSample> + '_ {
        self.samples.iter()
    }

    /// The most recent sample.
    pub fn latest(&self) -> Option<&OffsetSample> {
        self.samples.back()
    }

    /// Evaluates the window at `now_ms` with Burrow's partition rules.
    ///
    /// Returns `None` for an empty window: nothing is known, and reporting OK
    /// would hide a partition that was never sampled.
    ///
    /// The rules are those of Burrow's evaluator
    /// (`core/internal/evaluator/caching.go`, `calculatePartitionStatus`),
    /// in its order, and the first that matches decides:
    /// 1. the latest lag is within `rules.allowed_lag` → OK;
    /// 2. STOP: the time since the last commit (`now_ms` minus the timestamp
    ///    of the latest sample whose committed offset changed from the one
    ///    before, or of the first sample if it never changed) exceeds the
    ///    window's span (newest minus oldest timestamp) — unless a sample
    ///    taken since that commit read a high watermark at or below the latest
    ///    committed offset: the consumer was caught up after its last commit
    ///    and the records it lacks arrived since (Burrow's
    ///    `checkIfRecentLagZero`, its issue #303: the first record on a quiet
    ///    topic is not a stopped consumer);
    /// 3. REWIND: the committed offset went back at some step and no later
    ///    sample reached the offset it went back from (Burrow's
    ///    `checkIfRewindRecovered`: a rebalance that re-commits an older
    ///    offset and then moves past it is no rewind). Burrow looks at the
    ///    first backward step only, Kausal at each;
    /// 4. the consumer kept up at some sample → OK: its lag was within
    ///    `rules.allowed_lag`, or its committed offset was within
    ///    `rules.allowed_lag` of the high watermark of the sample before;
    /// 5. STALL: every committed offset in the window is the same;
    /// 6. WARN: the lag never decreased from one sample to the next;
    /// 7. otherwise OK.
    ///
    /// The second half of rule 4 is what Burrow's lag means: Burrow stores
    /// each commit's lag against the high watermark it last read (every
    /// `offset-refresh`, 10 s by default), so a consumer that has read
    /// everything produced before that reading has lag 0 there. Samples read
    /// both offsets at the same instant, so a consumer trailing the head by
    /// a few records would never be at lag 0 and, with a lag that only
    /// jitters or holds steady, would read WARN; comparing with the previous
    /// sample's high watermark gives it Burrow's tolerance of one interval.
    /// A consumer whose lag grows past one sampling interval's worth of
    /// records still reads WARN once its last such sample leaves the window.
    ///
    /// Samples are snapshots, not commits, so a commit of an unchanged offset
    /// is invisible: a window whose committed offset never moves is STALL
    /// when evaluated at its newest sample's time and STOP any time later.
    /// A single sample behind is therefore STALL at once; callers wanting a
    /// warm-up should wait until [`len`](Self::len) reaches the capacity.
    pub fn evaluate(&self, now_ms: i64, rules: LagRules) -> Option<PartitionStatus> {
        self.evaluate_with_commit(now_ms, None, rules)
    }

    /// [`evaluate`](Self::evaluate) with the time of the group's last commit
    /// known from outside the window.
    ///
    /// Snapshots cannot see a commit of an unchanged offset, so on their own
    /// they cannot tell a stopped consumer (STOP) from a live one stuck on a
    /// record (STALL). A caller that knows more passes it here: the sample
    /// time while the group has live members (they commit, if only the same
    /// offset), the time the offset last changed otherwise, and
    /// `Some(i64::MIN)` for a group with no members whose offset did not
    /// move since sampling began. `None` falls back to the window alone.
    pub fn evaluate_with_commit(
        &self,
        now_ms: i64,
        last_commit_ms: Option<i64>,
        rules: LagRules,
    ) -> Option<PartitionStatus> {
        let (first, last) = (self.samples.front()?, self.samples.back()?);
        let allowed_lag = rules.allowed_lag.max(0);

        // 1. Keeping up: nothing else matters, not even a stopped consumer
        // (an idle partition needs no commits).
        if last.lag() <= allowed_lag {
            return Some(PartitionStatus::Ok);
        }

        // 2. STOP, unless caught up since the last commit.
        let last_commit_ms = last_commit_ms.unwrap_or_else(|| {
            self.pairs()
                .filter(|(before, after)| after.committed_offset != before.committed_offset)
                .map(|(_, after)| after.timestamp_ms)
                .last()
                .unwrap_or(first.timestamp_ms)
        });
        let since_commit_ms = now_ms.saturating_sub(last_commit_ms);
        let span_ms = last.timestamp_ms.saturating_sub(first.timestamp_ms).max(0);
        if since_commit_ms > span_ms && !self.caught_up_since(last_commit_ms) {
            return Some(PartitionStatus::Stop);
        }

        // 3. REWIND, unless recovered.
        if self.has_unrecovered_rewind() {
            return Some(PartitionStatus::Rewind);
        }

        // 4. Kept up at some point in the window.
        if self.samples.iter().any(|s| s.lag() <= allowed_lag)
            || self.pairs().any(|(before, after)| {
                before.high_watermark.saturating_sub(after.committed_offset) <= allowed_lag
            })
        {
            return Some(PartitionStatus::Ok);
        }

        // 5. STALL.
        if self
            .pairs()
            .all(|(before, after)| after.committed_offset == before.committed_offset)
        {
            return Some(PartitionStatus::Stall);
        }

        // 6. WARN.
        if self
            .pairs()
            .all(|(before, after)| after.lag() >= before.lag())
        {
            return Some(PartitionStatus::Warn);
        }

        // 7.
        Some(PartitionStatus::Ok)
    }

    /// Whether a sample taken at or after `since_ms` read a high watermark at
    /// or below the latest committed offset (Burrow's `checkIfRecentLagZero`
    /// over the window's own high watermarks).
    ///
    /// Only samples since the last commit count: a high watermark read
    /// before it says nothing about a stop, the consumer passed it by
    /// committing. When rule 2 fires on live sampling the last commit is
    /// older than the whole window, so every sample counts.
    fn caught_up_since(&self, since_ms: i64) -> bool {
        let Some(latest) = self.samples.back() else {
            return false;
        };
        self.samples
            .iter()
            .filter(|s| s.timestamp_ms >= since_ms)
            .any(|s| s.high_watermark <= latest.committed_offset)
    }

    /// Whether the committed offset went back at some step and no later
    /// sample reached the offset it went back from.
    fn has_unrecovered_rewind(&self) -> bool {
        // Walk from the newest pair, keeping the highest committed offset at
        // or after the current step.
        let mut highest_after = i64::MIN;
        let newest_first = self.samples.iter().rev();
        for (after, before) in newest_first.clone().zip(newest_first.skip(1)) {
            highest_after = highest_after.max(after.committed_offset);
            if after.committed_offset < before.committed_offset
                && highest_after < before.committed_offset
            {
                return true;
            }
        }
        false
    }

    /// Neighbouring samples, oldest pair first.
    fn pairs(&self) -> impl Iterator<Item = (&OffsetSample, &OffsetSample)> + '_ {
        self.samples.iter().zip(self.samples.iter().skip(1))
    }
}

/// One high watermark and when it was read, ms since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatermarkPoint {
    pub offset: i64,
    pub timestamp_ms: i64,
}

/// A bounded history of a partition's high watermark over time, the lookup
/// table of kafka-lag-exporter, used to turn an offset into the time it was
/// produced.
///
/// It always holds at least one point, so "no history" cannot reach
/// [`time_lag_secs`](Self::time_lag_secs). Offsets never decrease from one
/// point to the next and neither do times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatermarkHistory {
    capacity: usize,
    points: VecDeque<WatermarkPoint>,
}

impl WatermarkHistory {
    /// A history keeping `capacity` points (at least two), starting with the
    /// high watermark `offset` read at `timestamp_ms`.
    pub fn new(capacity: usize, offset: i64, timestamp_ms: i64) -> Self {
        let capacity = capacity.max(2);
        let mut points = VecDeque::with_capacity(capacity);
        points.push_back(WatermarkPoint {
            offset,
            timestamp_ms,
        });
        Self { capacity, points }
    }

    /// The points, oldest first.
    pub fn points(&self) -> impl Iterator<Item = &WatermarkPoint> + '_ {
        self.points.iter()
    }

    /// The newest point.
    pub fn latest(&self) -> WatermarkPoint {
        // The history is never empty; the fallback only keeps this total.
        self.points.back().copied().unwrap_or(WatermarkPoint {
            offset: 0,
            timestamp_ms: 0,
        })
    }

    /// The oldest point.
    pub fn oldest(&self) -> WatermarkPoint {
        self.points
            .front()
            .copied()
            .unwrap_or_else(|| self.latest())
    }

    /// Records the high watermark `offset` read at `timestamp_ms`.
    ///
    /// - A reading older than the newest point is ignored.
    /// - A high watermark lower than the newest one (the topic was recreated,
    ///   or an unclean leader election truncated the log) makes the history
    ///   meaningless: it restarts from this point.
    /// - While the watermark stands still, the run is kept as two points, the
    ///   first and the latest time it was seen, so a quiet topic does not push
    ///   the useful history out of the window.
    pub fn push(&mut self, offset: i64, timestamp_ms: i64) {
        let latest = self.latest();
        if timestamp_ms < latest.timestamp_ms {
            return;
        }
        let point = WatermarkPoint {
            offset,
            timestamp_ms,
        };
        if offset < latest.offset {
            self.points.clear();
            self.points.push_back(point);
            return;
        }
        let n = self.points.len();
        if n >= 2 && offset == latest.offset && self.points[n - 2].offset == offset {
            self.points[n - 1].timestamp_ms = timestamp_ms;
            return;
        }
        if self.points.len() == self.capacity {
            self.points.pop_front();
        }
        self.points.push_back(point);
    }

    /// When the record at `offset` was produced, as well as this history can
    /// tell, ms since the Unix epoch. `None` when the offset has not been
    /// produced yet (at or past the newest high watermark).
    ///
    /// `next_record_timestamp_ms` is the timestamp of the record at `offset`
    /// when the caller has it; it is used only where interpolation cannot
    /// answer (see [`time_lag_secs`](Self::time_lag_secs)).
    pub fn produced_at_ms(
        &self,
        offset: i64,
        next_record_timestamp_ms: Option<i64>,
    ) -> Option<i64> {
        let latest = self.latest();
        if offset >= latest.offset {
            return None;
        }
        let oldest = self.oldest();
        if offset < oldest.offset {
            // Before the history: the record existed when the oldest point
            // was read, so that time is a sure upper bound of its production
            // time. Extrapolating the rate backwards is not: it runs away when
            // a group reprocesses a long topic from the start. A record
            // timestamp is better, unless it claims a time after the bound
            // (a producer's clock is not the broker's).
            return Some(match next_record_timestamp_ms {
                Some(record_ms) => record_ms.min(oldest.timestamp_ms),
                None => oldest.timestamp_ms,
            });
        }
        // oldest.offset <= offset < latest.offset, so a pair with
        // `lower.offset <= offset < upper.offset` exists, and its offsets
        // differ: the division below never divides by zero.
        let (lower, upper) = self
            .points
            .iter()
            .zip(self.points.iter().skip(1))
            .find(|(lower, upper)| lower.offset <= offset && offset < upper.offset)?;
        let fraction = (offset - lower.offset) as f64 / (upper.offset - lower.offset) as f64;
        let span_ms = (upper.timestamp_ms - lower.timestamp_ms) as f64;
        Some(lower.timestamp_ms + (fraction * span_ms).round() as i64)
    }

    /// How long ago, in seconds at `now_ms`, the first record a group with
    /// committed offset `committed_offset` has not read was produced.
    ///
    /// - Caught up (`committed_offset` at or past the newest high watermark):
    ///   0.
    /// - Inside the history: linear interpolation between the two points that
    ///   bracket the offset.
    /// - Older than the oldest point, which includes every consumer behind on
    ///   a quiet topic (one point, or a watermark that has not moved): the
    ///   record timestamp when given, else the oldest point's time, a lower
    ///   bound of the true lag (see [`produced_at_ms`](Self::produced_at_ms)).
    ///
    /// Always finite and never negative; a `now_ms` before the production
    /// time (clock skew between caller and broker) gives 0.
    pub fn time_lag_secs(
        &self,
        committed_offset: i64,
        now_ms: i64,
        next_record_timestamp_ms: Option<i64>,
    ) -> f64 {
        match self.produced_at_ms(committed_offset, next_record_timestamp_ms) {
            None => 0.0,
            Some(produced_ms) => now_ms.saturating_sub(produced_ms).max(0) as f64 / 1000.0,
        }
    }
}

/// Whether a time lag is past [`RETENTION_DANGER_RATIO`] of the topic's
/// retention, so that records may be deleted before the group reads them.
/// Unknown or infinite retention (`None`, or Kafka's `-1`) is never a danger.
pub fn retention_danger(time_lag_secs: f64, retention_ms: Option<i64>) -> bool {
    match retention_ms {
        Some(retention_ms) if retention_ms > 0 => {
            time_lag_secs * 1000.0 > RETENTION_DANGER_RATIO * retention_ms as f64
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(committed, high, timestamp_ms)`.
    type Triple = (i64, i64, i64);
    /// `(name, samples, now_ms, expected)`.
    type StatusCase<'a> = (&'a str, &'a [Triple], i64, PartitionStatus);
    /// `(name, history, committed, now_ms, record timestamp, expected secs)`.
    type TimeLagCase<'a> = (&'a str, &'a WatermarkHistory, i64, i64, Option<i64>, f64);

    /// A window from `(committed, high, timestamp_ms)` triples.
    fn window(samples: &[Triple]) -> LagWindow {
        let mut window = LagWindow::default();
        for &(committed, high, ts) in samples {
            window.push(OffsetSample::new(committed, high, ts));
        }
        window
    }

    #[test]
    fn table_of_partition_statuses() {
        use PartitionStatus::*;
        let rules = LagRules::default();
        let cases: &[StatusCase] = &[
            (
                "steady consumer: commits move, lag goes up and down",
                &[
                    (100, 110, 0),
                    (110, 125, 1000),
                    (125, 130, 2000),
                    (130, 142, 3000),
                    (142, 150, 4000),
                ],
                4000,
                Ok,
            ),
            (
                "slow consumer: commits move but lag keeps growing",
                &[
                    (100, 110, 0),
                    (105, 120, 1000),
                    (110, 130, 2000),
                    (115, 140, 3000),
                    (120, 150, 4000),
                ],
                4500,
                Warn,
            ),
            (
                "stopped consumer: last commit longer ago than the window spans",
                &[
                    (100, 110, 0),
                    (105, 120, 1000),
                    (110, 130, 2000),
                    (110, 140, 3000),
                    (110, 150, 4000),
                ],
                // Last commit at 2000, span 4000: 6001 - 2000 > 4000.
                6001,
                Stop,
            ),
            (
                "stopped exactly at the span is not yet STOP",
                &[
                    (100, 110, 0),
                    (105, 120, 1000),
                    (110, 130, 2000),
                    (110, 140, 4000),
                ],
                6000,
                Warn,
            ),
            (
                "stuck consumer: same offset, lag > 0, evaluated at the newest sample",
                &[
                    (100, 150, 0),
                    (100, 150, 1000),
                    (100, 150, 2000),
                    (100, 150, 3000),
                ],
                3000,
                Stall,
            ),
            (
                "the same stuck window evaluated later is STOP",
                &[
                    (100, 150, 0),
                    (100, 150, 1000),
                    (100, 150, 2000),
                    (100, 150, 3000),
                ],
                3001,
                Stop,
            ),
            (
                "offset moved backwards",
                &[
                    (100, 150, 0),
                    (120, 150, 1000),
                    (50, 160, 2000),
                    (60, 170, 3000),
                ],
                3000,
                Rewind,
            ),
            (
                "caught up: OK even though commits stopped long ago",
                &[(150, 150, 0), (150, 150, 1000), (150, 150, 2000)],
                1_000_000,
                Ok,
            ),
            (
                "lag reached zero inside the window: OK though lag now grows",
                &[
                    (100, 100, 0),
                    (100, 110, 1000),
                    (105, 120, 2000),
                    (110, 130, 3000),
                ],
                3000,
                Ok,
            ),
            (
                "STOP wins over REWIND (Burrow's order)",
                &[(100, 150, 0), (50, 150, 1000), (50, 150, 2000)],
                5000,
                Stop,
            ),
            (
                "REWIND wins over lag zero in the window (Burrow's order)",
                &[(100, 100, 0), (50, 120, 1000), (60, 130, 2000)],
                2000,
                Rewind,
            ),
            (
                "single sample behind, evaluated at once: no movement, STALL",
                &[(100, 150, 0)],
                0,
                Stall,
            ),
            (
                "committed past the watermark counts as lag 0",
                &[(100, 90, 0)],
                99_999,
                Ok,
            ),
            (
                "rebalance re-commits an older offset, then passes it: no REWIND",
                &[
                    (100, 110, 0),
                    (120, 130, 1000),
                    (110, 135, 2000),
                    (125, 140, 3000),
                    (130, 150, 4000),
                ],
                4000,
                Ok,
            ),
            (
                "went back and has not yet reached where it was: REWIND",
                &[
                    (100, 110, 0),
                    (120, 130, 1000),
                    (110, 135, 2000),
                    (115, 140, 3000),
                ],
                3000,
                Rewind,
            ),
            (
                "a recovered rewind does not hide a later, unrecovered one",
                &[
                    (100, 110, 0),
                    (90, 120, 1000),
                    (130, 140, 2000),
                    (20, 150, 3000),
                    (30, 160, 4000),
                ],
                4000,
                Rewind,
            ),
            (
                "steady lag 10, each commit past the previous watermark: kept up, not WARN",
                &[
                    (100, 110, 0),
                    (112, 122, 1000),
                    (124, 134, 2000),
                    (136, 146, 3000),
                ],
                3000,
                Ok,
            ),
            (
                "caught up on a quiet topic after its last commit, then one record: not STOP",
                &[
                    (500, 500, 0),
                    (500, 500, 1000),
                    (500, 500, 2000),
                    (500, 501, 3000),
                ],
                // Never changed: last commit taken as the first sample (0).
                3001,
                Ok,
            ),
            (
                "the same once the caught-up samples left the window: STOP",
                &[(500, 501, 3000), (500, 501, 4000), (500, 501, 5000)],
                5001,
                Stop,
            ),
        ];
        for (name, samples, now_ms, expected) in cases {
            let got = window(samples).evaluate(*now_ms, rules);
            assert_eq!(got, Some(*expected), "{name}");
        }
    }

    #[test]
    fn known_commit_time_separates_stop_from_stall() {
        use PartitionStatus::*;
        let rules = LagRules::default();
        // Offset 100 never moves while records pile up behind it.
        let stuck = window(&[(100, 150, 0), (100, 160, 1000), (100, 170, 2000)]);
        // Evaluated at its last sample, the window alone says STALL.
        assert_eq!(stuck.evaluate_with_commit(2000, None, rules), Some(Stall));
        // Live members committing (commit time = sample time): STALL, also later.
        assert_eq!(
            stuck.evaluate_with_commit(2000, Some(2000), rules),
            Some(Stall)
        );
        // No members, no change seen since sampling began: STOP at once.
        assert_eq!(
            stuck.evaluate_with_commit(2000, Some(i64::MIN), rules),
            Some(Stop)
        );
        // No members, last change inside the window: not yet STOP.
        let moving = window(&[(90, 150, 0), (100, 160, 1000), (100, 170, 2000)]);
        assert_eq!(
            moving.evaluate_with_commit(2000, Some(1000), rules),
            Some(Warn)
        );
        // ... and STOP once that change is older than the window's span.
        assert_eq!(
            moving.evaluate_with_commit(3500, Some(1000), rules),
            Some(Stop)
        );
        // Caught up: OK whatever the commit time.
        let idle = window(&[(170, 170, 0), (170, 170, 1000)]);
        assert_eq!(
            idle.evaluate_with_commit(9000, Some(i64::MIN), rules),
            Some(Ok)
        );
    }

    #[test]
    fn empty_window_is_unknown() {
        assert_eq!(LagWindow::default().evaluate(0, LagRules::default()), None);
    }

    #[test]
    fn allowed_lag_makes_small_lag_ok() {
        // Stopped with lag 5: STOP by default, OK when 5 records are allowed.
        let w = window(&[(100, 105, 0), (100, 105, 1000)]);
        assert_eq!(
            w.evaluate(10_000, LagRules::default()),
            Some(PartitionStatus::Stop)
        );
        assert_eq!(
            w.evaluate(10_000, LagRules { allowed_lag: 5 }),
            Some(PartitionStatus::Ok)
        );
        // Rule 4 compares with allowed_lag too (Burrow's `lag <= allowedLag`):
        // lag 3 at the start of the window is keeping up when 3 is allowed.
        let w = window(&[(100, 103, 0), (102, 112, 1000), (104, 121, 2000)]);
        assert_eq!(
            w.evaluate(2000, LagRules::default()),
            Some(PartitionStatus::Warn)
        );
        assert_eq!(
            w.evaluate(2000, LagRules { allowed_lag: 3 }),
            Some(PartitionStatus::Ok)
        );
    }

    /// A small deterministic generator (an LCG), so the tests need no crate.
    struct Jitter(u64);

    impl Jitter {
        /// The next value in `0..n`.
        fn below(&mut self, n: i64) -> i64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 33) % n as u64) as i64
        }
    }

    #[test]
    fn steady_consumer_reads_ok_at_every_evaluation() {
        // 5 records/s produced; the consumer commits every sample, trailing
        // the head by min_trail..=max_trail records at random (a constant
        // trail when both are equal). Sampled every interval_s seconds for
        // six full windows; evaluated at every sample from the second (as
        // the monitor does), from the window alone and as a live group
        // (commit time = sample time), with allowed_lag 0.
        for (interval_s, min_trail, max_trail) in
            [(2, 1, 8), (3, 1, 6), (5, 2, 12), (3, 4, 4), (4, 9, 9)]
        {
            for capacity in [3, DEFAULT_WINDOW_SAMPLES] {
                let mut jitter = Jitter(interval_s as u64 * 31 + capacity as u64);
                let mut w = LagWindow::new(capacity);
                let mut committed = 0;
                for i in 0..6 * capacity as i64 {
                    let t_ms = 1_700_000_000_000 + i * interval_s * 1000;
                    let high = 5 * interval_s * i + 1000;
                    let trail = min_trail + jitter.below(max_trail - min_trail + 1);
                    // Advances every sample, never past the head.
                    committed = (high - trail).max(committed + 1).min(high);
                    w.push(OffsetSample::new(committed, high, t_ms));
                    if w.len() < 2 {
                        continue;
                    }
                    let rules = LagRules::default();
                    let got = (
                        w.evaluate(t_ms, rules),
                        w.evaluate_with_commit(t_ms, Some(t_ms), rules),
                    );
                    let ok = Some(PartitionStatus::Ok);
                    assert_eq!(
                        got,
                        (ok, ok),
                        "interval {interval_s} s, trail {min_trail}..={max_trail}, window {capacity}, sample {i}: {:?}",
                        w.samples().collect::<Vec<_>>()
                    );
                }
            }
        }
    }

    #[test]
    fn slow_consumer_reads_warn() {
        // 5 records/s produced, 4 consumed, sampled every 3 s: the lag grows
        // by 3 records a sample.
        let rules = LagRules::default();
        let ok = Some(PartitionStatus::Ok);
        let warn = Some(PartitionStatus::Warn);

        // Already 30 records behind (more than the 15 produced between two
        // samples): WARN from the second sample on, over six windows.
        let mut w = LagWindow::default();
        for i in 0..6 * DEFAULT_WINDOW_SAMPLES as i64 {
            let t_ms = i * 3000;
            let high = 1000 + 15 * i;
            w.push(OffsetSample::new(high - 30 - 3 * i, high, t_ms));
            if w.len() >= 2 {
                assert_eq!(w.evaluate(t_ms, rules), warn, "behind, sample {i}");
                assert_eq!(w.evaluate_with_commit(t_ms, Some(t_ms), rules), warn);
            }
        }

        // Starting caught up: OK while a sample of the window shows it
        // within one interval of the head, WARN for good once none does.
        let mut w = LagWindow::default();
        let mut statuses = Vec::new();
        for i in 0..6 * DEFAULT_WINDOW_SAMPLES as i64 {
            let t_ms = i * 3000;
            let high = 1000 + 15 * i;
            w.push(OffsetSample::new(high - 3 * i, high, t_ms));
            statuses.push(w.evaluate_with_commit(t_ms, Some(t_ms), rules));
        }
        // Lag 3i reaches the previous sample's watermark (15 records back)
        // up to sample 5; that pair is in the window until sample 14.
        assert!(statuses[..14].iter().all(|s| *s == ok), "{statuses:?}");
        assert!(statuses[14..].iter().all(|s| *s == warn), "{statuses:?}");
    }

    /// One case of Burrow's `TestCachingEvaluator_CheckRules`.
    struct BurrowCase {
        name: &'static str,
        /// `(Offset, Lag, Timestamp ms)` of each commit; `None`: no lag
        /// stored.
        offsets: &'static [(i64, Option<i64>, i64)],
        broker_offsets: &'static [i64],
        current_lag: i64,
        /// Seconds, as in Burrow.
        time_now: i64,
        allowed_lag: i64,
        burrow: PartitionStatus,
        /// Where Kausal deliberately differs: its status and why.
        kausal: Option<(PartitionStatus, &'static str)>,
    }

    /// Kausal's inputs for a Burrow case.
    ///
    /// Each commit becomes a sample with the high watermark its lag was
    /// measured against (`Offset + Lag`); a commit without a lag keeps the
    /// lag before it (Kausal always reads both). Kausal's current lag is the
    /// newest sample's, so the newest sample takes Burrow's `currentLag`.
    /// Every entry is a commit, so the last one's time is the last commit
    /// (this is what tells STALL from STOP). Burrow's broker-offset ring has
    /// no counterpart: Kausal's samples carry their own high watermarks.
    fn burrow_inputs(case: &BurrowCase) -> (LagWindow, i64, Option<i64>, LagRules) {
        let mut window = LagWindow::new(case.offsets.len());
        let mut lag = 0;
        for (i, &(offset, commit_lag, timestamp_ms)) in case.offsets.iter().enumerate() {
            lag = commit_lag.unwrap_or(lag);
            if i + 1 == case.offsets.len() {
                lag = case.current_lag;
            }
            window.push(OffsetSample::new(offset, offset + lag, timestamp_ms));
        }
        let last_commit_ms = case.offsets.last().map(|&(_, _, ts)| ts);
        let rules = LagRules {
            allowed_lag: case.allowed_lag,
        };
        (window, case.time_now * 1000, last_commit_ms, rules)
    }

    /// Five commits 100 s apart, lag 0 at the first (Burrow's cases 0-2).
    const ZERO_LAG_AT_START: &[(i64, Option<i64>, i64)] = &[
        (1000, Some(0), 100_000),
        (2000, Some(50), 200_000),
        (3000, Some(100), 300_000),
        (4000, Some(150), 400_000),
        (5000, Some(200), 500_000),
    ];
    /// Lag never zero (Burrow's cases 3 and 8).
    const NEVER_ZERO: &[(i64, Option<i64>, i64)] = &[
        (1000, Some(50), 100_000),
        (2000, Some(100), 200_000),
        (3000, Some(150), 300_000),
        (4000, Some(200), 400_000),
        (5000, Some(250), 500_000),
    ];
    /// Same offset committed five times, lag growing (cases 5 and 13).
    const SAME_OFFSET_GROWING: &[(i64, Option<i64>, i64)] = &[
        (1000, Some(100), 100_000),
        (1000, Some(150), 200_000),
        (1000, Some(200), 300_000),
        (1000, Some(250), 400_000),
        (1000, Some(300), 500_000),
    ];
    /// Went back from 3000 to 2000, then to 4000 (cases 7 and 14).
    const REWOUND_AND_PASSED: &[(i64, Option<i64>, i64)] = &[
        (1000, Some(100), 100_000),
        (2000, Some(150), 200_000),
        (3000, Some(200), 300_000),
        (2000, Some(1250), 400_000),
        (4000, Some(300), 500_000),
    ];
    /// Burrow issue #290's commits: one a second, all at lag 0 (cases 9, 10).
    const ISSUE_290: &[(i64, Option<i64>, i64)] = &[
        (792_748_079, Some(0), 1_512_224_618_356),
        (792_748_080, Some(0), 1_512_224_619_362),
        (792_748_081, Some(0), 1_512_224_620_366),
        (792_748_082, Some(0), 1_512_224_621_367),
        (792_748_083, Some(0), 1_512_224_622_370),
        (792_748_084, Some(0), 1_512_224_623_373),
        (792_748_085, Some(0), 1_512_224_624_378),
        (792_748_086, Some(0), 1_512_224_625_379),
        (792_748_087, Some(0), 1_512_224_626_383),
        (792_748_088, Some(0), 1_512_224_627_383),
        (792_748_089, Some(0), 1_512_224_628_383),
        (792_748_090, Some(0), 1_512_224_629_388),
        (792_748_091, Some(0), 1_512_224_630_391),
        (792_748_092, Some(0), 1_512_224_631_394),
        (792_748_093, Some(0), 1_512_224_632_397),
    ];

    // Burrow's rule table, one case per entry of `tests` in
    // core/internal/evaluator/caching_test.go of github.com/linkedin/Burrow
    // (commit ced55ba, Copyright 2017 LinkedIn Corp., Apache License 2.0),
    // with its inputs and expected `calculatePartitionStatus` result.
    // Burrow's per-rule helper expectations are not ported: Kausal has no
    // such helpers, only the status.
    #[rustfmt::skip]
    const BURROW_CASES: &[BurrowCase] = &[
        BurrowCase { name: "0 - OK because there is zero lag somewhere",
            offsets: ZERO_LAG_AT_START, broker_offsets: &[5200], current_lag: 200,
            time_now: 600, allowed_lag: 0, burrow: PartitionStatus::Ok, kausal: None },
        BurrowCase { name: "1 - not STOP: time since last commit (400 s) equals the span",
            offsets: ZERO_LAG_AT_START, broker_offsets: &[5200], current_lag: 200,
            time_now: 900, allowed_lag: 0, burrow: PartitionStatus::Ok, kausal: None },
        BurrowCase { name: "2 - STOP though lag is zero at the start (#290)",
            offsets: ZERO_LAG_AT_START, broker_offsets: &[5200], current_lag: 200,
            time_now: 1000, allowed_lag: 0, burrow: PartitionStatus::Stop, kausal: None },
        BurrowCase { name: "3 - STOP when lag is always non-zero as well",
            offsets: NEVER_ZERO, broker_offsets: &[5250], current_lag: 250,
            time_now: 1000, allowed_lag: 0, burrow: PartitionStatus::Stop, kausal: None },
        BurrowCase { name: "4 - OK because of zero lag, though the offset never moves",
            offsets: &[(1000, Some(0), 100_000), (1000, Some(50), 200_000),
                (1000, Some(100), 300_000), (1000, Some(150), 400_000),
                (1000, Some(200), 500_000)],
            broker_offsets: &[1200], current_lag: 200,
            time_now: 600, allowed_lag: 0, burrow: PartitionStatus::Ok, kausal: None },
        BurrowCase { name: "5 - STALL because the lag is always non-zero",
            offsets: SAME_OFFSET_GROWING, broker_offsets: &[1300], current_lag: 300,
            time_now: 600, allowed_lag: 0, burrow: PartitionStatus::Stall, kausal: None },
        BurrowCase { name: "6 - STALL even when the lag stays the same",
            offsets: &[(1000, Some(100), 100_000), (1000, Some(100), 200_000),
                (1000, Some(100), 300_000), (1000, Some(100), 400_000),
                (1000, Some(100), 500_000)],
            broker_offsets: &[1100], current_lag: 100,
            time_now: 600, allowed_lag: 0, burrow: PartitionStatus::Stall, kausal: None },
        BurrowCase { name: "7 - OK: offsets go backwards, but the rewind was caught up",
            offsets: REWOUND_AND_PASSED, broker_offsets: &[4300], current_lag: 300,
            time_now: 600, allowed_lag: 0, burrow: PartitionStatus::Ok, kausal: None },
        BurrowCase { name: "8 - OK because the current lag is 0, though stopped by timestamps",
            offsets: NEVER_ZERO, broker_offsets: &[5250], current_lag: 0,
            time_now: 1000, allowed_lag: 0, burrow: PartitionStatus::Ok, kausal: None },
        BurrowCase { name: "9 - STOP: current lag non-zero though always zero in offsets (#290)",
            offsets: ISSUE_290,
            broker_offsets: &[792_749_024, 792_749_000, 792_748_800, 792_748_600, 792_748_500],
            current_lag: 931, time_now: 1_512_224_650, allowed_lag: 0,
            burrow: PartitionStatus::Stop, kausal: None },
        BurrowCase { name: "10 - OK: the recent broker offsets show zero lag (#303)",
            offsets: ISSUE_290,
            broker_offsets: &[792_748_094, 792_748_093, 792_748_093, 792_748_093],
            current_lag: 1, time_now: 1_512_224_650, allowed_lag: 0,
            burrow: PartitionStatus::Ok,
            // The commits are those of case 9; only Burrow's broker-offset
            // ring (readings at the last committed offset) tells the two
            // apart, and Kausal has no such ring. Sampled the Kausal way the
            // same story reads OK: "caught up on a quiet topic after its last
            // commit, then one record" in table_of_partition_statuses.
            kausal: Some((PartitionStatus::Stop,
                "decided by Burrow's broker-offset ring, which Kausal does not have")) },
        BurrowCase { name: "11 - same as 0 with commits without lag, which change nothing",
            offsets: &[(1000, Some(0), 100_000), (1500, None, 150_000),
                (2000, Some(50), 200_000), (2500, None, 250_000),
                (3000, Some(100), 300_000), (3500, None, 350_000),
                (4000, Some(150), 400_000), (4500, None, 450_000),
                (5000, Some(200), 500_000), (5500, None, 550_000)],
            broker_offsets: &[5700], current_lag: 200,
            time_now: 600, allowed_lag: 0, burrow: PartitionStatus::Ok, kausal: None },
        BurrowCase { name: "12 - OK: lag and time since commit, but within the allowed lag",
            offsets: &[(1000, Some(2), 100_000), (2000, Some(1), 200_000),
                (2000, Some(1), 300_000)],
            broker_offsets: &[2001], current_lag: 1,
            time_now: 550, allowed_lag: 1, burrow: PartitionStatus::Ok, kausal: None },
        BurrowCase { name: "13 - same as 5 with an allowed lag",
            offsets: SAME_OFFSET_GROWING, broker_offsets: &[1300], current_lag: 300,
            time_now: 600, allowed_lag: 99, burrow: PartitionStatus::Stall, kausal: None },
        BurrowCase { name: "14 - same as 7 with an allowed lag",
            offsets: REWOUND_AND_PASSED, broker_offsets: &[4300], current_lag: 300,
            time_now: 600, allowed_lag: 99, burrow: PartitionStatus::Ok, kausal: None },
        BurrowCase { name: "15 - REWIND, not caught up to the previous point",
            offsets: &[(1000, Some(100), 100_000), (2000, Some(150), 200_000),
                (3000, Some(200), 300_000), (2000, Some(1250), 400_000),
                (2500, Some(300), 500_000)],
            broker_offsets: &[4300], current_lag: 300,
            time_now: 600, allowed_lag: 0, burrow: PartitionStatus::Rewind, kausal: None },
    ];

    #[test]
    fn burrow_rule_table() {
        assert_eq!(BURROW_CASES.len(), 16);
        for case in BURROW_CASES {
            let (window, now_ms, last_commit_ms, rules) = burrow_inputs(case);
            let got = window.evaluate_with_commit(now_ms, last_commit_ms, rules);
            match case.kausal {
                None => assert_eq!(got, Some(case.burrow), "Burrow case {}", case.name),
                Some((kausal, why)) => {
                    assert_ne!(kausal, case.burrow, "{}", case.name);
                    assert_eq!(got, Some(kausal), "Burrow case {} ({why})", case.name);
                    // The stated reason holds: Burrow's broker ring shows a
                    // reading at or below the last commit.
                    let last_offset = case.offsets.last().map(|o| o.0).unwrap_or(0);
                    assert!(
                        case.broker_offsets.iter().any(|&b| b <= last_offset),
                        "{}",
                        case.name
                    );
                }
            }
        }
    }

    #[test]
    fn burrow_request_cases() {
        // Burrow's TestCachingEvaluator_* request cases over the storage
        // fixture (core/internal/storage/fixtures.go, same source and
        // licence as above): one broker offset, 4321, then commits of
        // 1000 + 100 i every 10 s from 100 s before the request.
        let start = 1_700_000_000_000;
        let now = start + 100_000;
        let fixture = |commits: i64| {
            let mut w = LagWindow::new(10);
            for i in 0..commits {
                w.push(OffsetSample::new(1000 + 100 * i, 4321, start + 10_000 * i));
            }
            let last_commit = start + 10_000 * (commits - 1);
            (w, Some(last_commit))
        };
        let rules = LagRules::default();

        // SingleRequest_NoShowAll / _ShowAll: "testgroup", a full ring of
        // ten commits: OK, total lag 2421.
        let (w, last_commit) = fixture(10);
        let status = w.evaluate_with_commit(now, last_commit, rules);
        assert_eq!(status, Some(PartitionStatus::Ok));
        assert_eq!(w.latest().map(OffsetSample::lag), Some(2421));
        assert_eq!(
            GroupStatus::from_partitions(status),
            GroupStatus::Ok,
            "testgroup"
        );

        // SingleRequest_Incomplete: "testgroup2", five commits in a ring of
        // ten: partition STOP, group ERR, total lag 2921. (Burrow also
        // reports the ring 0.5 complete; Kausal has no completeness, it
        // evaluates from the second sample.)
        let (w, last_commit) = fixture(5);
        let status = w.evaluate_with_commit(now, last_commit, rules);
        assert_eq!(status, Some(PartitionStatus::Stop));
        assert_eq!(w.latest().map(OffsetSample::lag), Some(2921));
        assert_eq!(
            GroupStatus::from_partitions(status),
            GroupStatus::Err,
            "testgroup2"
        );

        // TopicDeleted: a group with no partitions left is OK.
        assert_eq!(GroupStatus::from_partitions([]), GroupStatus::Ok);

        // Start: a group never seen is NOTFOUND in Burrow; Kausal has no
        // status for a partition never sampled.
        assert_eq!(
            LagWindow::new(10).evaluate_with_commit(now, None, rules),
            None
        );
    }

    #[test]
    fn window_keeps_only_the_last_samples() {
        let mut w = LagWindow::new(3);
        for i in 0..5 {
            w.push(OffsetSample::new(i, i + 10, i * 1000));
        }
        assert_eq!(w.len(), 3);
        assert_eq!(w.capacity(), 3);
        let committed: Vec<i64> = w.samples().map(|s| s.committed_offset).collect();
        assert_eq!(committed, [2, 3, 4]);
        assert_eq!(LagWindow::default().capacity(), DEFAULT_WINDOW_SAMPLES);
        // A zero capacity still keeps the latest sample.
        let mut one = LagWindow::new(0);
        one.push(OffsetSample::new(1, 2, 3));
        one.push(OffsetSample::new(4, 5, 6));
        assert_eq!(one.latest(), Some(&OffsetSample::new(4, 5, 6)));
    }

    #[test]
    fn table_of_group_statuses() {
        use PartitionStatus as P;
        let cases: &[(&[PartitionStatus], GroupStatus, i64, &str)] = &[
            (&[], GroupStatus::Ok, 0, "ok"),
            (&[P::Ok, P::Ok], GroupStatus::Ok, 0, "ok"),
            (&[P::Ok, P::Warn], GroupStatus::Warn, 1, "warn"),
            (&[P::Warn, P::Stop], GroupStatus::Err, 2, "err"),
            (&[P::Ok, P::Stall], GroupStatus::Err, 2, "err"),
            (&[P::Rewind, P::Ok], GroupStatus::Err, 2, "err"),
        ];
        for (partitions, expected, code, label) in cases {
            let got = GroupStatus::from_partitions(partitions.iter().copied());
            assert_eq!(got, *expected, "{partitions:?}");
            assert_eq!(got.code(), *code);
            assert_eq!(got.label(), *label);
            assert_eq!(got.burrow_name(), label.to_uppercase());
        }
    }

    #[test]
    fn partition_labels_are_stable() {
        use PartitionStatus::*;
        let cases = [
            (Ok, "ok", "OK"),
            (Warn, "warn", "WARN"),
            (Stop, "stop", "STOP"),
            (Stall, "stall", "STALL"),
            (Rewind, "rewind", "REWIND"),
        ];
        for (status, label, burrow) in cases {
            assert_eq!(status.label(), label);
            assert_eq!(status.to_string(), label);
            assert_eq!(status.burrow_name(), burrow);
        }
    }

    /// A busy topic producing 10 records per second since t = 100 s:
    /// watermark `10 * (t - 100)` read every 10 s until t = 200 s.
    fn busy_history() -> WatermarkHistory {
        let mut h = WatermarkHistory::new(DEFAULT_HISTORY_POINTS, 0, 100_000);
        for s in (110..=200).step_by(10) {
            h.push(10 * (s - 100), s * 1000);
        }
        h
    }

    #[test]
    fn table_of_time_lags() {
        let busy = busy_history();
        let quiet = WatermarkHistory::new(DEFAULT_HISTORY_POINTS, 500, 50_000);
        let mut flat = WatermarkHistory::new(DEFAULT_HISTORY_POINTS, 500, 50_000);
        for s in [60, 70, 80] {
            flat.push(500, s * 1000);
        }
        let mut long = WatermarkHistory::new(3, 0, 0);
        for s in 1..=10 {
            long.push(1_000_000 * s, s * 1000);
        }
        let cases: &[TimeLagCase] = &[
            ("caught up", &busy, 1000, 200_000, None, 0.0),
            (
                "committed past the watermark",
                &busy,
                5000,
                200_000,
                None,
                0.0,
            ),
            // Offset 400 was produced at t = 140 s, 60 s before now.
            ("busy topic, on a point", &busy, 400, 200_000, None, 60.0),
            // Offset 455 at t = 145.5 s, between points.
            (
                "busy topic, between points",
                &busy,
                455,
                200_000,
                None,
                54.5,
            ),
            // Inside the history, interpolation wins over the record time.
            (
                "busy topic ignores record time",
                &busy,
                455,
                200_000,
                Some(1),
                54.5,
            ),
            // One point at t = 50 s: the consumer is at least 70 s behind.
            ("quiet topic, one point", &quiet, 499, 120_000, None, 70.0),
            (
                "quiet topic, record time",
                &quiet,
                499,
                120_000,
                Some(20_000),
                100.0,
            ),
            // A producer clock ahead of the broker cannot shrink the bound.
            (
                "quiet topic, future record time",
                &quiet,
                499,
                120_000,
                Some(119_000),
                70.0,
            ),
            ("flat watermark", &flat, 100, 120_000, None, 70.0),
            // History kept only t = 8..10 s; reprocessing from offset 0 must
            // not extrapolate to t = -inf, only to the oldest point.
            ("reprocessing from the start", &long, 0, 10_000, None, 2.0),
            (
                "reprocessing with record time",
                &long,
                0,
                10_000,
                Some(1_500),
                8.5,
            ),
            (
                "now before production (clock skew)",
                &busy,
                400,
                100_000,
                None,
                0.0,
            ),
        ];
        for (name, history, committed, now_ms, record_ms, expected) in cases {
            let got = history.time_lag_secs(*committed, *now_ms, *record_ms);
            assert!(got.is_finite() && got >= 0.0, "{name}: {got}");
            assert!((got - expected).abs() < 1e-9, "{name}: {got} != {expected}");
        }
    }

    #[test]
    fn equal_offsets_never_give_nan() {
        // Every reading the same offset, some at the same instant, too.
        let mut h = WatermarkHistory::new(4, 100, 1000);
        for ts in [1000, 1000, 2000, 2000, 3000] {
            h.push(100, ts);
        }
        h.push(200, 3000);
        h.push(200, 3000);
        for committed in [0, 99, 100, 150, 199, 200, 300] {
            let got = h.time_lag_secs(committed, 10_000, None);
            assert!(got.is_finite() && got >= 0.0, "{committed}: {got}");
        }
        // 150 lies in the vertical step from (100, 3 s) to (200, 3 s).
        assert_eq!(h.time_lag_secs(150, 10_000, None), 7.0);
    }

    #[test]
    fn history_compacts_quiet_runs_and_restarts_on_truncation() {
        let mut h = WatermarkHistory::new(4, 10, 0);
        for ts in [1000, 2000, 3000, 4000] {
            h.push(10, ts);
        }
        let pts: Vec<(i64, i64)> = h.points().map(|p| (p.offset, p.timestamp_ms)).collect();
        assert_eq!(pts, [(10, 0), (10, 4000)]);
        // Out-of-order reading ignored.
        h.push(20, 100);
        assert_eq!(h.latest().timestamp_ms, 4000);
        // Capacity bound.
        for i in 1..=5 {
            h.push(10 + i, 4000 + i * 1000);
        }
        assert_eq!(h.points().count(), 4);
        assert_eq!(h.oldest().offset, 12);
        // A watermark that goes back restarts the history.
        h.push(3, 20_000);
        let pts: Vec<(i64, i64)> = h.points().map(|p| (p.offset, p.timestamp_ms)).collect();
        assert_eq!(pts, [(3, 20_000)]);
    }

    #[test]
    fn table_of_retention_danger() {
        let day_ms = 86_400_000;
        let cases = [
            (0.0, Some(day_ms), false),
            (0.8 * 86_400.0, Some(day_ms), false),
            (0.8 * 86_400.0 + 1.0, Some(day_ms), true),
            (1e12, None, false),
            (1e12, Some(-1), false),
            (1e12, Some(0), false),
            (f64::NAN, Some(day_ms), false),
        ];
        for (lag, retention, expected) in cases {
            assert_eq!(
                retention_danger(lag, retention),
                expected,
                "{lag} {retention:?}"
            );
        }
    }
}
