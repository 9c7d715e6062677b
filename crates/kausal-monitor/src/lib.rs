//! The consumer lag monitor (DESIGN §7, issue 5): every interval, per group
//! and partition, the committed offset against the high watermark; Burrow's
//! rules over a sliding window; lag in seconds from a watermark history;
//! retention danger; exported as `consumer_lag`, `consumer_lag_seconds`,
//! `consumer_group_status` and friends.
//!
//! [`tracker`] is the pure part. [`LagMonitor`] reads the broker through
//! [`Admin`] (blocking calls, run on the blocking pool) and, when given a
//! lineage store, learns which groups read which topics from the receipts
//! (ListGroups is unreliable on the embedded broker, docs/broker.md) and
//! exports the dead-letter backlog.

pub mod membership;
pub mod tracker;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use kausal_core::lag::{DEFAULT_WINDOW_SAMPLES, LagRules};
use kausal_kafka::admin::{Admin, AdminError};
use kausal_store::Store;
use kausal_telemetry::monitor::{MonitorMetrics, PartitionLagValue};
use tokio_util::sync::CancellationToken;

pub use kausal_kafka::heartbeat::HeartbeatReader;
pub use membership::{Membership, MembershipSource, membership};
pub use tracker::{GroupLag, LagTracker, PartitionKey, PartitionLag, Reading};

/// How often retention.ms is asked again, in ticks.
const RETENTION_REFRESH_TICKS: u64 = 60;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("cannot read consumer groups from the lineage store: {0}")]
    Store(#[from] kausal_store::StoreError),
    #[error("sampling task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// What to watch and how.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// (group, topic) pairs always watched.
    pub targets: Vec<(String, String)>,
    /// Samples per window (Burrow's default is 10).
    pub window_samples: usize,
    pub rules: LagRules,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            window_samples: DEFAULT_WINDOW_SAMPLES,
            rules: LagRules::default(),
        }
    }
}

/// Samples lag, keeps the windows, exports the gauges.
#[derive(Debug)]
pub struct LagMonitor {
    admin: Arc<Admin>,
    config: MonitorConfig,
    tracker: LagTracker,
    store: Option<Store>,
    metrics: Option<MonitorMetrics>,
    heartbeats: HeartbeatReader,
    ticks: u64,
}

impl LagMonitor {
    pub fn new(admin: Admin, config: MonitorConfig) -> Self {
        let tracker = LagTracker::new(config.window_samples, config.rules);
        Self {
            admin: Arc::new(admin),
            config,
            tracker,
            store: None,
            metrics: None,
            heartbeats: HeartbeatReader::default(),
            ticks: 0,
        }
    }

    /// Discovers (group, topic) pairs from the receipts in `store` and
    /// exports `dlq_events_pending` from its dead-letter ledger.
    pub fn with_store(mut self, store: Store) -> Self {
        self.store = Some(store);
        self
    }

    /// Exports every tick's result on these gauges.
    pub fn with_metrics(mut self, metrics: MonitorMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The (group, topic) pairs watched now.
    pub async fn targets(&self) -> Result<Vec<(String, String)>, MonitorError> {
        let mut pairs: BTreeSet<(String, String)> = self.config.targets.iter().cloned().collect();
        if let Some(store) = &self.store {
            pairs.extend(store.receipt_groups().await?);
        }
        Ok(pairs.into_iter().collect())
    }

    /// Samples every target once, updates the gauges, and returns the report.
    pub async fn tick(&mut self) -> Result<Vec<GroupLag>, MonitorError> {
        let targets = self.targets().await?;
        let refresh_retention = self.ticks.is_multiple_of(RETENTION_REFRESH_TICKS);
        self.ticks += 1;
        if refresh_retention {
            let topics: BTreeSet<&String> = targets.iter().map(|(_, t)| t).collect();
            for topic in topics {
                match self.admin.retention_ms(topic).await {
                    Ok(ms) => self.tracker.set_retention(topic, ms),
                    Err(e) => {
                        tracing::warn!(topic = %topic, error = %e, "cannot read retention.ms")
                    }
                }
            }
        }

        let admin = Arc::clone(&self.admin);
        let mut tracker = std::mem::take(&mut self.tracker);
        let mut heartbeats = std::mem::take(&mut self.heartbeats);
        let (tracker, heartbeats, sampled_at) = tokio::task::spawn_blocking(move || {
            if let Err(e) = heartbeats.catch_up(&admin) {
                tracing::warn!(error = %e, "cannot read consumer heartbeats");
            }
            let at = sample(&admin, &targets, &heartbeats, &mut tracker);
            (tracker, heartbeats, at)
        })
        .await?;
        self.tracker = tracker;
        self.heartbeats = heartbeats;
        // A pair not seen this tick (the group left the topic, the topic is
        // gone) stops being reported.
        self.tracker.forget_unseen_since(sampled_at);
        let report = self.tracker.report(chrono::Utc::now().timestamp_millis());

        if let Some(metrics) = &self.metrics {
            export(metrics, &report);
            if let Some(store) = &self.store {
                match store.dead_letter_counts().await {
                    Ok(counts) => {
                        let mut pending: BTreeMap<String, i64> = BTreeMap::new();
                        for c in counts.iter().filter(|c| c.status == "pending") {
                            *pending.entry(c.source_topic.clone()).or_default() += c.count;
                        }
                        metrics.set_dlq_pending(&pending.into_iter().collect::<Vec<_>>());
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read the dead-letter ledger"),
                }
            }
        }
        Ok(report)
    }

    /// Ticks every `interval` until `cancel`; errors are logged, never fatal
    /// (a broker or database outage shows as stale or missing series).
    pub async fn run(mut self, interval: Duration, cancel: CancellationToken) {
        loop {
            match self.tick().await {
                Ok(report) => {
                    for g in &report {
                        tracing::debug!(
                            consumer_group = %g.group,
                            status = g.status.label(),
                            lag = g.total_lag,
                            lag_seconds = g.max_lag_seconds,
                            "lag sampled"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e, "lag sampling failed; retrying next interval"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
        }
    }
}

/// One round of blocking broker reads into `tracker`. Returns the time the
/// round started; failures of one group or topic are logged and skipped.
fn sample(
    admin: &Admin,
    targets: &[(String, String)],
    heartbeats: &HeartbeatReader,
    tracker: &mut LagTracker,
) -> i64 {
    let started = chrono::Utc::now().timestamp_millis();
    let groups: BTreeSet<&String> = targets.iter().map(|(g, _)| g).collect();
    let alive: BTreeMap<&String, Option<bool>> = groups
        .into_iter()
        .map(|g| (g, membership(heartbeats, admin, g, started).alive))
        .collect();
    // Per topic: every group's committed offsets first, then the watermarks
    // once. Read in that order, the high watermark never trails a commit it
    // is compared with.
    let mut by_topic: BTreeMap<&String, Vec<&String>> = BTreeMap::new();
    for (group, topic) in targets {
        by_topic.entry(topic).or_default().push(group);
    }
    for (topic, groups) in by_topic {
        let committed: Vec<_> = groups
            .into_iter()
            .filter_map(|group| match admin.committed_offsets(group, topic) {
                Ok(c) => Some((group, c)),
                Err(e) => {
                    tracing::warn!(consumer_group = %group, topic = %topic, error = %e, "cannot read committed offsets");
                    None
                }
            })
            .collect();
        let marks = match admin.watermarks(topic) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(topic = %topic, error = %e, "cannot read watermarks");
                continue;
            }
        };
        let now = chrono::Utc::now().timestamp_millis();
        for (group, offsets) in &committed {
            for w in &marks {
                let committed = offsets
                    .iter()
                    .find(|(p, _)| *p == w.partition)
                    .and_then(|(_, o)| *o);
                let position = committed.unwrap_or(w.low);
                let record_timestamp_ms = if tracker.needs_record_timestamp(
                    topic,
                    w.partition,
                    position,
                    w.high,
                ) {
                    admin
                            .timestamp_at(topic, w.partition, position)
                            .unwrap_or_else(|e| {
                                tracing::warn!(topic = %topic, partition = w.partition, error = %e, "cannot read record timestamp");
                                None
                            })
                } else {
                    None
                };
                tracker.observe(Reading {
                    key: PartitionKey {
                        group: (*group).clone(),
                        topic: topic.clone(),
                        partition: w.partition,
                    },
                    committed,
                    low_watermark: w.low,
                    high_watermark: w.high,
                    record_timestamp_ms,
                    group_alive: alive.get(group).copied().flatten(),
                    at_ms: now,
                });
            }
        }
    }
    started
}

fn export(metrics: &MonitorMetrics, report: &[GroupLag]) {
    let partitions: Vec<PartitionLagValue> = report
        .iter()
        .flat_map(|g| &g.partitions)
        .map(|p| PartitionLagValue {
            group: p.key.group.clone(),
            topic: p.key.topic.clone(),
            partition: p.key.partition,
            lag: p.lag,
            lag_seconds: p.lag_seconds,
            retention_ratio: p.retention_ratio,
        })
        .collect();
    let groups: Vec<(String, i64)> = report
        .iter()
        .map(|g| (g.group.clone(), g.status.code()))
        .collect();
    let offsets: BTreeMap<(String, i32), i64> = report
        .iter()
        .flat_map(|g| &g.partitions)
        .map(|p| ((p.key.topic.clone(), p.key.partition), p.high_watermark))
        .collect();
    let offsets: Vec<(String, i32, i64)> = offsets
        .into_iter()
        .map(|((topic, partition), high)| (topic, partition, high))
        .collect();
    metrics.set_lag(&partitions, &groups, &offsets);
}
