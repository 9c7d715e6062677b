//! Consumer heartbeats: every runtime says, every few seconds on
//! `kausal.consumers`, that it is alive, what it is assigned, what it last
//! committed and what it is working on.
//!
//! Burrow tells a stopped consumer (STOP) from a live one stuck on a record
//! (STALL) by the commit stream in `__consumer_offsets`, and tools refuse an
//! offset reset while DescribeGroups lists members. The embedded broker
//! offers neither (no `__consumer_offsets`; its SQLite engine fails
//! DescribeGroups for every existing group, docs/broker.md), so Kausal's own
//! consumers report themselves. The lag monitor and `kausal replay reset`
//! combine this with DescribeGroups where the broker answers it, which also
//! covers consumers that are not Kausal's.
//!
//! A heartbeat is published from its own task, so a member stuck in a long
//! retry still beats — that is what makes it STALL rather than STOP.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admin::{Admin, AdminError};

/// The topic heartbeats go to, keyed by consumer group.
pub const HEARTBEATS_TOPIC: &str = "kausal.consumers";
/// `event-type` of a heartbeat record.
pub const HEARTBEAT_EVENT_TYPE: &str = "ConsumerHeartbeat";
/// How often a runtime beats by default.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// A member is live while its last beat is younger than this many intervals.
pub const MISSED_BEATS_TOLERATED: i64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Running,
    /// The last beat of a member that stopped gracefully.
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PartitionRef {
    pub topic: String,
    pub partition: i32,
}

/// An offset the member committed and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub at_ms: i64,
}

/// The record the member is handling now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlight {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub since_ms: i64,
}

/// The JSON value of a heartbeat record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub consumer_group: String,
    /// Unique per runtime instance: `<service>-<pid>-<random>`.
    pub member: String,
    pub service: String,
    pub state: MemberState,
    pub at_ms: i64,
    pub interval_ms: i64,
    pub assigned: Vec<PartitionRef>,
    pub committed: Vec<CommittedOffset>,
    pub in_flight: Option<InFlight>,
    /// Assigned partitions whose intake the member paused because their
    /// worker is behind (absent in beats of members before per-partition
    /// workers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paused: Vec<PartitionRef>,
}

impl Heartbeat {
    /// Whether this beat says the member is alive at `now_ms`.
    pub fn is_live(&self, now_ms: i64) -> bool {
        self.state == MemberState::Running
            && now_ms.saturating_sub(self.at_ms)
                <= MISSED_BEATS_TOLERATED.saturating_mul(self.interval_ms.max(1))
    }
}

/// The newest heartbeat of every member seen, by group.
#[derive(Debug, Clone, Default)]
pub struct Liveness {
    members: BTreeMap<(String, String), Heartbeat>,
}

impl Liveness {
    /// Keeps `beat` if it is the member's newest.
    pub fn observe(&mut self, beat: Heartbeat) {
        let key = (beat.consumer_group.clone(), beat.member.clone());
        match self.members.get(&key) {
            Some(known) if known.at_ms > beat.at_ms => {}
            _ => {
                self.members.insert(key, beat);
            }
        }
    }

    /// Parses and keeps a heartbeat record's value; false if it is not one.
    pub fn observe_json(&mut self, value: &[u8]) -> bool {
        match serde_json::from_slice::<Heartbeat>(value) {
            Ok(beat) => {
                self.observe(beat);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether any member of `group` ever beat.
    pub fn knows(&self, group: &str) -> bool {
        self.members.keys().any(|(g, _)| g == group)
    }

    /// Members of `group` alive at `now_ms`.
    pub fn live_members(&self, group: &str, now_ms: i64) -> Vec<&Heartbeat> {
        self.members
            .iter()
            .filter(|((g, _), beat)| g == group && beat.is_live(now_ms))
            .map(|(_, beat)| beat)
            .collect()
    }

    /// The latest time any member of `group` committed `topic`/`partition`.
    pub fn last_commit_ms(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        self.members
            .iter()
            .filter(|((g, _), _)| g == group)
            .flat_map(|(_, beat)| &beat.committed)
            .filter(|c| c.topic == topic && c.partition == partition)
            .map(|c| c.at_ms)
            .max()
    }
}

/// How far back a fresh [`HeartbeatReader`] looks for beats.
const LOOKBACK_MS: i64 = 120_000;

/// Follows `kausal.consumers` and answers liveness questions.
#[derive(Debug, Default)]
pub struct HeartbeatReader {
    liveness: Liveness,
    /// Next offset to read per partition; empty until the topic is found.
    next: BTreeMap<i32, i64>,
}

impl HeartbeatReader {
    /// Reads the beats published since the last call (on the first call,
    /// those of the last two minutes). Blocking. A missing topic means no
    /// Kausal consumer ever ran here: nothing to read, not an error.
    pub fn catch_up(&mut self, admin: &Admin) -> Result<(), AdminError> {
        let marks = match admin.watermarks(HEARTBEATS_TOPIC) {
            Ok(m) => m,
            Err(AdminError::UnknownTopic(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        if self.next.is_empty() {
            let since = chrono::Utc::now().timestamp_millis() - LOOKBACK_MS;
            for (partition, offset) in admin.offsets_for_timestamp(HEARTBEATS_TOPIC, since)? {
                self.next.insert(partition, offset);
            }
        }
        let ranges: Vec<(i32, i64, i64)> = marks
            .iter()
            .map(|w| {
                let from = self
                    .next
                    .get(&w.partition)
                    .copied()
                    .unwrap_or(w.low)
                    .max(w.low);
                (w.partition, from, w.high)
            })
            .collect();
        let liveness = &mut self.liveness;
        admin.read_range(HEARTBEATS_TOPIC, &ranges, Duration::from_secs(2), |m| {
            if let Some(value) = rdkafka::Message::payload(m) {
                liveness.observe_json(value);
            }
        })?;
        for w in &marks {
            self.next.insert(w.partition, w.high);
        }
        Ok(())
    }

    pub fn liveness(&self) -> &Liveness {
        &self.liveness
    }
}

/// How long a partition of a group's topics may have no live owner before a
/// member rejoins the group: three session timeouts, long after a broker
/// that rebalances on a member's eviction has done so (docs/broker.md).
pub const ORPHAN_GRACE: Duration = Duration::from_secs(30);

/// The partitions among `partitions` that no live member of `group` owns,
/// as member `own_member` (assigned `own` right now) sees it: its own
/// assignment plus the other live members' latest beats.
pub fn orphaned<'a>(
    liveness: &Liveness,
    group: &str,
    own_member: &str,
    own: &BTreeSet<PartitionRef>,
    partitions: &'a [PartitionRef],
    now_ms: i64,
) -> Vec<&'a PartitionRef> {
    let others: Vec<&Heartbeat> = liveness
        .live_members(group, now_ms)
        .into_iter()
        .filter(|b| b.member != own_member)
        .collect();
    partitions
        .iter()
        .filter(|p| !own.contains(*p) && !others.iter().any(|b| b.assigned.contains(p)))
        .collect()
}

/// Whether `own_member` is the member that acts for its group: the smallest
/// member id among the live ones and itself, so that one member rejoins,
/// not all of them at once.
pub fn acts_for_group(liveness: &Liveness, group: &str, own_member: &str, now_ms: i64) -> bool {
    liveness
        .live_members(group, now_ms)
        .iter()
        .all(|b| b.member.as_str() >= own_member)
}

/// Turns "a partition has no owner now" into "rejoin now" once that has
/// lasted the grace period, then waits a full grace period again.
#[derive(Debug, Clone)]
pub struct OrphanWatch {
    grace_ms: i64,
    since_ms: Option<i64>,
}

impl OrphanWatch {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace_ms: grace.as_millis() as i64,
            since_ms: None,
        }
    }

    /// Whether to rejoin, given whether orphans are seen at `now_ms`.
    pub fn observe(&mut self, orphans: bool, now_ms: i64) -> bool {
        if !orphans {
            self.since_ms = None;
            return false;
        }
        let since = *self.since_ms.get_or_insert(now_ms);
        if now_ms - since >= self.grace_ms {
            self.since_ms = Some(now_ms);
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(group: &str, member: &str, at_ms: i64, state: MemberState) -> Heartbeat {
        Heartbeat {
            consumer_group: group.into(),
            member: member.into(),
            service: "payment-service".into(),
            state,
            at_ms,
            interval_ms: 1000,
            assigned: vec![PartitionRef {
                topic: "orders".into(),
                partition: 0,
            }],
            committed: vec![CommittedOffset {
                topic: "orders".into(),
                partition: 0,
                offset: 10,
                at_ms: at_ms - 500,
            }],
            in_flight: None,
            paused: Vec::new(),
        }
    }

    #[test]
    fn live_while_beating_dead_after_missed_beats_or_stop() {
        let mut l = Liveness::default();
        l.observe(beat("payments", "a", 10_000, MemberState::Running));
        assert_eq!(l.live_members("payments", 10_500).len(), 1);
        assert_eq!(l.live_members("payments", 13_000).len(), 1, "3 intervals");
        assert!(
            l.live_members("payments", 13_001).is_empty(),
            "missed beats"
        );
        assert!(l.live_members("other", 10_500).is_empty());
        assert!(l.knows("payments") && !l.knows("other"));

        // An older beat arriving late changes nothing; a stop ends it.
        l.observe(beat("payments", "a", 9_000, MemberState::Running));
        assert_eq!(l.live_members("payments", 10_500)[0].at_ms, 10_000);
        l.observe(beat("payments", "a", 11_000, MemberState::Stopped));
        assert!(l.live_members("payments", 11_000).is_empty());
        assert_eq!(l.last_commit_ms("payments", "orders", 0), Some(10_500));
        assert_eq!(l.last_commit_ms("payments", "orders", 1), None);
    }

    #[test]
    fn json_round_trip_and_garbage() {
        let mut l = Liveness::default();
        let b = beat("g", "m", 5, MemberState::Running);
        let json = serde_json::to_vec(&b).expect("encode");
        assert!(l.observe_json(&json));
        assert!(!l.observe_json(b"{not json"));
        assert_eq!(l.live_members("g", 5), vec![&b]);
        let text = String::from_utf8(json).expect("utf8");
        assert!(text.contains("\"state\":\"running\""), "{text}");
    }

    fn owning(member: &str, at_ms: i64, partitions: &[i32]) -> Heartbeat {
        Heartbeat {
            assigned: partitions
                .iter()
                .map(|p| PartitionRef {
                    topic: "orders".into(),
                    partition: *p,
                })
                .collect(),
            ..beat("g", member, at_ms, MemberState::Running)
        }
    }

    #[test]
    fn a_partition_of_a_dead_member_is_orphaned_and_the_smallest_live_member_acts() {
        let all: Vec<PartitionRef> = (0..3)
            .map(|p| PartitionRef {
                topic: "orders".into(),
                partition: p,
            })
            .collect();
        let mut l = Liveness::default();
        l.observe(owning("a", 10_000, &[0, 1]));
        l.observe(owning("b", 10_000, &[2]));
        let own: BTreeSet<PartitionRef> = all[..2].iter().cloned().collect();
        assert!(orphaned(&l, "g", "a", &own, &all, 10_500).is_empty());
        // b stops beating: its partition has no live owner after 3 intervals.
        assert!(orphaned(&l, "g", "a", &own, &all, 13_000).is_empty());
        assert_eq!(orphaned(&l, "g", "a", &own, &all, 13_001), vec![&all[2]]);
        // Own beats are ignored in favour of the current assignment.
        l.observe(owning("a", 13_000, &[0, 1, 2]));
        assert_eq!(orphaned(&l, "g", "a", &own, &all, 13_001), vec![&all[2]]);
        assert!(acts_for_group(&l, "g", "a", 13_001));
        l.observe(owning("0-first", 13_000, &[]));
        assert!(
            !acts_for_group(&l, "g", "a", 13_001),
            "a smaller live member acts"
        );
        assert!(
            acts_for_group(&l, "g", "a", 17_000),
            "once it is gone, a acts"
        );
    }

    #[test]
    fn orphan_watch_waits_the_grace_then_fires_once_per_grace() {
        let mut w = OrphanWatch::new(Duration::from_secs(30));
        assert!(!w.observe(true, 0));
        assert!(!w.observe(true, 29_999));
        assert!(w.observe(true, 30_000));
        assert!(!w.observe(true, 31_000), "then a full grace again");
        assert!(w.observe(true, 60_000));
        assert!(!w.observe(false, 61_000), "owned again: reset");
        assert!(!w.observe(true, 62_000));
        assert!(!w.observe(true, 91_999));
        assert!(w.observe(true, 92_000));
    }
}
