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

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
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
}
