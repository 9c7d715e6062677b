//! Is a consumer group live? Kausal's own consumers answer with heartbeats
//! on `kausal.consumers` ([`kausal_kafka::heartbeat`]); any other consumer
//! through the broker's DescribeGroups, where the broker answers it.
//!
//! The rule: a group that ever beat is judged by its beats (a member is
//! live while it beats; a graceful stop says so at once, a crash after
//! three missed beats). Other groups are judged by DescribeGroups. When
//! neither answers, liveness is unknown and callers say so.

use kausal_kafka::admin::Admin;
use kausal_kafka::heartbeat::{Heartbeat, HeartbeatReader};

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

/// Liveness of `group` at `now_ms` by the rule above, asking the broker
/// only for groups that never beat.
pub fn membership(
    heartbeats: &HeartbeatReader,
    admin: &Admin,
    group: &str,
    now_ms: i64,
) -> Membership {
    let liveness = heartbeats.liveness();
    if liveness.knows(group) {
        let live: Vec<&Heartbeat> = liveness.live_members(group, now_ms);
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
