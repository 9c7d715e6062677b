//! What a member of a consumer group tells the others: its status (the
//! partitions it owns, pauses and is handling, what it committed), the
//! heartbeats that carry it, and the watch that rejoins the group when a
//! partition has had no live owner.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::message::{Header, OwnedHeaders};
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::heartbeat::{
    CommittedOffset, HEARTBEAT_EVENT_TYPE, HEARTBEATS_TOPIC, Heartbeat, HeartbeatReader, InFlight,
    MemberState, ORPHAN_GRACE, OrphanWatch, PartitionRef, acts_for_group, orphaned,
};
use crate::ids;
use crate::producer::EventProducer;
use crate::runtime::RuntimeError;
use crate::settle::died;

/// What this member reports in its heartbeats.
#[derive(Debug, Default)]
pub(crate) struct MemberStatus {
    pub(crate) assigned: BTreeSet<PartitionRef>,
    /// Partitions whose intake is paused because their worker is behind
    /// (waiting on the database, a retry backoff or unsettled records).
    pub(crate) paused: BTreeSet<PartitionRef>,
    pub(crate) committed: HashMap<(String, i32), (i64, i64)>,
    /// The record each partition's worker is handling now.
    pub(crate) in_flight: HashMap<PartitionRef, InFlight>,
}

impl MemberStatus {
    /// Forgets a partition that was taken away.
    pub(crate) fn release(&mut self, partition: &PartitionRef) {
        self.assigned.remove(partition);
        self.paused.remove(partition);
        self.in_flight.remove(partition);
    }

    /// The heartbeat saying this status now.
    pub(crate) fn beat(&self, runtime: &MemberIdentity, state: MemberState) -> Heartbeat {
        let mut committed: Vec<CommittedOffset> = self
            .committed
            .iter()
            .map(|((topic, partition), (offset, at_ms))| CommittedOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
                at_ms: *at_ms,
            })
            .collect();
        committed.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        Heartbeat {
            consumer_group: runtime.group.clone(),
            member: runtime.member.clone(),
            service: runtime.service.clone(),
            state,
            at_ms: ids::now_ms(),
            interval_ms: runtime.interval.as_millis() as i64,
            assigned: self.assigned.iter().cloned().collect(),
            committed,
            // The longest-running handling: the one a watchdog cares about.
            in_flight: self
                .in_flight
                .values()
                .min_by_key(|f| (f.since_ms, f.partition))
                .cloned(),
            paused: self.paused.iter().cloned().collect(),
        }
    }
}

/// Who this member is, as its heartbeats say.
#[derive(Debug, Clone)]
pub(crate) struct MemberIdentity {
    pub(crate) group: String,
    pub(crate) member: String,
    pub(crate) service: String,
    pub(crate) interval: Duration,
}

/// Asks the run loop to rejoin the group when a partition of its topics has
/// had no live owner (by heartbeats) for [`ORPHAN_GRACE`]: a broker that does
/// not rebalance after evicting a crashed member leaves that member's
/// partitions unread forever (the embedded broker does, docs/broker.md). One
/// member acts for the group (the smallest live member id).
pub(crate) async fn watch_orphans(
    config: KafkaConfig,
    identity: MemberIdentity,
    topics: Vec<String>,
    status: Arc<Mutex<MemberStatus>>,
    rejoin: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let admin = match crate::admin::Admin::new(&config) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            tracing::warn!(error = %e, "no orphaned-partition watch: cannot create an admin client");
            return;
        }
    };
    let reader = Arc::new(Mutex::new(HeartbeatReader::default()));
    let mut watch = OrphanWatch::new(ORPHAN_GRACE);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(identity.interval) => {}
        }
        let (admin, read_into, topics) = (admin.clone(), reader.clone(), topics.clone());
        let partitions = tokio::task::spawn_blocking(move || {
            read_into
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .catch_up(&admin)?;
            let mut all = Vec::new();
            for topic in &topics {
                for partition in admin.partitions(topic)? {
                    all.push(PartitionRef {
                        topic: topic.clone(),
                        partition,
                    });
                }
            }
            Ok::<_, crate::admin::AdminError>(all)
        })
        .await;
        let partitions = match partitions {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "orphaned-partition check skipped");
                continue;
            }
            Err(_) => continue,
        };
        let now = ids::now_ms();
        let own = status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .assigned
            .clone();
        let reader = reader.lock().unwrap_or_else(|e| e.into_inner());
        let liveness = reader.liveness();
        let orphans = orphaned(
            liveness,
            &identity.group,
            &identity.member,
            &own,
            &partitions,
            now,
        );
        let acting = acts_for_group(liveness, &identity.group, &identity.member, now);
        if watch.observe(acting && !orphans.is_empty(), now) {
            tracing::warn!(
                group = %identity.group,
                orphaned = ?orphans.iter().map(|p| format!("{}/{}", p.topic, p.partition)).collect::<Vec<_>>(),
                graceSeconds = ORPHAN_GRACE.as_secs(),
                "partitions have had no live owner; rejoining the group so they are assigned again"
            );
            rejoin.store(true, Ordering::Relaxed);
        }
    }
}

/// `Err` once a helper task of the run loop (heartbeats, the orphan watch)
/// has died; one that returned by itself (the watch without an admin
/// client) is let go.
pub(crate) fn helper_alive(
    task: &mut Option<tokio::task::JoinHandle<()>>,
    name: &str,
) -> Result<(), RuntimeError> {
    let Some(handle) = task.as_mut().filter(|h| h.is_finished()) else {
        return Ok(());
    };
    let ended = handle.now_or_never();
    *task = None;
    match ended {
        Some(Err(e)) => Err(died(name.to_owned(), e)),
        _ => Ok(()),
    }
}

/// Publishes a heartbeat every interval until `stop`.
pub(crate) async fn beat_until(
    producer: EventProducer,
    identity: MemberIdentity,
    status: Arc<Mutex<MemberStatus>>,
    stop: CancellationToken,
) {
    loop {
        let beat = status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .beat(&identity, MemberState::Running);
        tokio::select! {
            () = stop.cancelled() => return,
            () = publish_beat(&producer, &beat) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(identity.interval) => {}
        }
    }
}

/// One heartbeat; a failure is logged at debug level only: a missed beat is
/// what the monitor reads as "not live", which is then true enough.
pub(crate) async fn publish_beat(producer: &EventProducer, beat: &Heartbeat) {
    let Ok(value) = serde_json::to_vec(beat) else {
        return;
    };
    let headers = OwnedHeaders::new().insert(Header {
        key: kausal_core::headers::EVENT_TYPE,
        value: Some(HEARTBEAT_EVENT_TYPE),
    });
    if let Err(e) = producer
        .publish_raw(
            HEARTBEATS_TOPIC,
            Some(beat.consumer_group.as_bytes()),
            Some(&value),
            headers,
            HEARTBEAT_EVENT_TYPE,
        )
        .await
    {
        tracing::debug!(error = %e, "heartbeat not published");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn finished(task: &Option<tokio::task::JoinHandle<()>>) {
        while !task.as_ref().is_some_and(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_helper_task_that_panics_is_noticed_and_named() {
        let mut task = Some(tokio::spawn(async { panic!("heartbeat encoder broke") }));
        finished(&task).await;
        match helper_alive(&mut task, "the heartbeat task") {
            Err(RuntimeError::TaskDied { task, reason }) => {
                assert_eq!(task, "the heartbeat task");
                assert_eq!(reason, "panicked: heartbeat encoder broke");
            }
            other => panic!("expected TaskDied, got {other:?}"),
        }
        assert!(task.is_none());
    }

    #[tokio::test]
    async fn a_helper_task_that_returned_or_still_runs_is_fine() {
        let mut returned = Some(tokio::spawn(async {}));
        finished(&returned).await;
        assert!(helper_alive(&mut returned, "the orphaned-partition watch").is_ok());
        assert!(returned.is_none(), "let go");

        let stop = CancellationToken::new();
        let token = stop.clone();
        let mut running = Some(tokio::spawn(async move { token.cancelled().await }));
        assert!(helper_alive(&mut running, "the heartbeat task").is_ok());
        assert!(running.is_some(), "still watched");
        stop.cancel();
        let mut none = None;
        assert!(helper_alive(&mut none, "no task").is_ok());
    }
}
