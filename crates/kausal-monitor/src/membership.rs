//! Is a consumer group live? Kausal's own consumers answer with heartbeats
//! on `kausal.consumers` ([`kausal_kafka::heartbeat`]); any other consumer
//! through the broker's DescribeGroups, where the broker answers it.
//!
//! The rule: a group that ever beat is judged by its beats (a member is
//! live while it beats; a graceful stop says so at once, a crash after
//! three missed beats). Other groups are judged by DescribeGroups. When
//! neither answers, liveness is unknown and callers say so.

use std::collections::BTreeMap;
use std::time::Duration;

use kausal_kafka::admin::{Admin, AdminError};
use kausal_kafka::heartbeat::{HEARTBEATS_TOPIC, Heartbeat, Liveness};

/// How far back a fresh reader looks for beats.
const LOOKBACK_MS: i64 = 120_000;

/// What is known about a group's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// `None`: neither heartbeats nor the broker could tell.
    pub alive: Option<bool>,
    /// Where the answer came from, for messages.
    pub source: MembershipSource,
    /// Live members, as `member (service)` or the broker's member ids.
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipSource {
    Heartbeats,
    DescribeGroups,
    Unknown,
}

impl MembershipSource {
    pub fn label(self) -> &'static str {
        match self {
            Self::Heartbeats => "Kausal heartbeats",
            Self::DescribeGroups => "the broker's DescribeGroups",
            Self::Unknown => "nothing (no heartbeats, DescribeGroups failed)",
        }
    }
}

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

    /// Liveness of `group` at `now_ms` by the rule above, asking the broker
    /// only for groups that never beat.
    pub fn membership(&self, admin: &Admin, group: &str, now_ms: i64) -> Membership {
        if self.liveness.knows(group) {
            let live: Vec<&Heartbeat> = self.liveness.live_members(group, now_ms);
            return Membership {
                alive: Some(!live.is_empty()),
                source: MembershipSource::Heartbeats,
                members: live
                    .iter()
                    .map(|b| format!("{} ({})", b.member, b.service))
                    .collect(),
            };
        }
        match admin.describe_group(group) {
            Ok(d) => Membership {
                alive: Some(d.has_live_members()),
                source: MembershipSource::DescribeGroups,
                members: d.members.iter().map(|m| m.member_id.clone()).collect(),
            },
            Err(e) => {
                tracing::debug!(consumer_group = %group, error = %e, "DescribeGroups failed");
                Membership {
                    alive: None,
                    source: MembershipSource::Unknown,
                    members: Vec::new(),
                }
            }
        }
    }
}
