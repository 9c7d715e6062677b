//! The gauges of the lag monitor (DESIGN §6): lag in records and seconds,
//! Burrow status, the partitions' latest offsets, retention danger and the
//! dead-letter backlog. Registered in a [`Metrics`] registry so they are
//! served on the same `/metrics` as everything else.
//!
//! Gauges describe "now": a series whose group, topic or partition is no
//! longer observed is removed at the next update instead of freezing at its
//! last value.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;

use crate::metrics::Metrics;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionGroup {
    pub topic: String,
    pub partition: String,
    pub consumer_group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    pub consumer_group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceTopic {
    pub source_topic: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// One gauge family plus the label sets it was last given.
#[derive(Debug)]
struct Tracked<L, G> {
    family: Family<L, G>,
    live: Mutex<HashSet<L>>,
}

impl<L, G> Tracked<L, G>
where
    L: Clone + Hash + Eq,
    G: Default,
{
    fn new() -> Self {
        Self {
            family: Family::default(),
            live: Mutex::new(HashSet::new()),
        }
    }

    /// Replaces the family's series by `values`, removing the rest.
    fn replace(&self, values: impl IntoIterator<Item = (L, impl FnOnce(&G))>) {
        let mut next = HashSet::new();
        for (labels, set) in values {
            set(&self.family.get_or_create(&labels));
            next.insert(labels);
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        for gone in live.difference(&next) {
            self.family.remove(gone);
        }
        *live = next;
    }
}

/// One partition's lag as the monitor last computed it.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionLagValue {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub lag: i64,
    pub lag_seconds: f64,
    /// Time lag over `retention.ms`; `None` when retention is unknown or
    /// unlimited.
    pub retention_ratio: Option<f64>,
}

/// The monitor's gauges. Cheap to clone; clones share values.
#[derive(Debug, Clone)]
pub struct MonitorMetrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    consumer_lag: Tracked<PartitionGroup, Gauge>,
    consumer_lag_seconds: Tracked<PartitionGroup, FloatGauge>,
    retention_ratio: Tracked<PartitionGroup, FloatGauge>,
    group_status: Tracked<GroupLabel, Gauge>,
    offset_latest: Tracked<TopicPartition, Gauge>,
    dlq_pending: Tracked<SourceTopic, Gauge>,
}

impl MonitorMetrics {
    /// Creates the gauges and registers them in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let inner = Inner {
            consumer_lag: Tracked::new(),
            consumer_lag_seconds: Tracked::new(),
            retention_ratio: Tracked::new(),
            group_status: Tracked::new(),
            offset_latest: Tracked::new(),
            dlq_pending: Tracked::new(),
        };
        metrics.register(
            "consumer_lag",
            "Records the group has not read: high watermark minus committed offset",
            None,
            inner.consumer_lag.family.clone(),
        );
        metrics.register(
            "consumer_lag",
            "Age of the oldest record the group has not read (0 when caught up)",
            Some(Unit::Seconds),
            inner.consumer_lag_seconds.family.clone(),
        );
        metrics.register(
            "consumer_lag_retention_ratio",
            "Time lag as a share of the topic's retention.ms (danger above 0.8)",
            None,
            inner.retention_ratio.family.clone(),
        );
        metrics.register(
            "consumer_group_status",
            "Burrow-style group status: 0 OK, 1 WARN, 2 ERR",
            None,
            inner.group_status.family.clone(),
        );
        metrics.register(
            "partition_offset_latest",
            "High watermark (log end offset) of the partition",
            None,
            inner.offset_latest.family.clone(),
        );
        metrics.register(
            "dlq_events_pending",
            "Dead-lettered events neither replayed nor discarded, by source topic",
            None,
            inner.dlq_pending.family.clone(),
        );
        Self {
            inner: Arc::new(inner),
        }
    }

    /// Replaces every lag series by `partitions`, the group statuses by
    /// `groups` (`(group, status code)`), and the latest offsets by
    /// `offsets` (`(topic, partition, high watermark)`).
    pub fn set_lag(
        &self,
        partitions: &[PartitionLagValue],
        groups: &[(String, i64)],
        offsets: &[(String, i32, i64)],
    ) {
        let labels = |p: &PartitionLagValue| PartitionGroup {
            topic: p.topic.clone(),
            partition: p.partition.to_string(),
            consumer_group: p.group.clone(),
        };
        self.inner.consumer_lag.replace(
            partitions
                .iter()
                .map(|p| (labels(p), move |g: &Gauge| _ = g.set(p.lag))),
        );
        self.inner.consumer_lag_seconds.replace(
            partitions
                .iter()
                .map(|p| (labels(p), move |g: &FloatGauge| _ = g.set(p.lag_seconds))),
        );
        self.inner
            .retention_ratio
            .replace(partitions.iter().filter_map(|p| {
                p.retention_ratio
                    .map(|r| (labels(p), move |g: &FloatGauge| _ = g.set(r)))
            }));
        self.inner
            .group_status
            .replace(groups.iter().map(|(g, code)| {
                (
                    GroupLabel {
                        consumer_group: g.clone(),
                    },
                    move |gauge: &Gauge| _ = gauge.set(*code),
                )
            }));
        self.inner
            .offset_latest
            .replace(offsets.iter().map(|(topic, partition, high)| {
                (
                    TopicPartition {
                        topic: topic.clone(),
                        partition: partition.to_string(),
                    },
                    move |g: &Gauge| _ = g.set(*high),
                )
            }));
    }

    /// Replaces the pending dead-letter counts (`(source topic, count)`).
    pub fn set_dlq_pending(&self, pending: &[(String, i64)]) {
        self.inner
            .dlq_pending
            .replace(pending.iter().map(|(topic, n)| {
                (
                    SourceTopic {
                        source_topic: topic.clone(),
                    },
                    move |g: &Gauge| _ = g.set(*n),
                )
            }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(group: &str, partition: i32, lag: i64) -> PartitionLagValue {
        PartitionLagValue {
            group: group.into(),
            topic: "orders".into(),
            partition,
            lag,
            lag_seconds: lag as f64 / 10.0,
            retention_ratio: (partition == 0).then_some(0.25),
        }
    }

    #[test]
    fn exposes_the_design_names_and_drops_stale_series() {
        let metrics = Metrics::new();
        let monitor = MonitorMetrics::register(&metrics);
        monitor.set_lag(
            &[value("payments", 0, 40), value("payments", 1, 5)],
            &[("payments".into(), 1)],
            &[("orders".into(), 0, 100)],
        );
        monitor.set_dlq_pending(&[("payments".into(), 3)]);
        let text = metrics.encode();
        for needle in [
            "consumer_lag{topic=\"orders\",partition=\"0\",consumer_group=\"payments\"} 40",
            "consumer_lag_seconds{topic=\"orders\",partition=\"1\",consumer_group=\"payments\"} 0.5",
            "consumer_lag_retention_ratio{topic=\"orders\",partition=\"0\",consumer_group=\"payments\"} 0.25",
            "consumer_group_status{consumer_group=\"payments\"} 1",
            "partition_offset_latest{topic=\"orders\",partition=\"0\"} 100",
            "dlq_events_pending{source_topic=\"payments\"} 3",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(
            !text.contains("consumer_lag_retention_ratio{topic=\"orders\",partition=\"1\""),
            "no ratio without a retention"
        );

        // Partition 1 is gone (e.g. the group left the topic).
        monitor.set_lag(&[value("payments", 0, 0)], &[("payments".into(), 0)], &[]);
        let text = metrics.encode();
        assert!(text.contains("partition=\"0\",consumer_group=\"payments\"} 0"));
        assert!(
            !text.contains("partition=\"1\""),
            "stale series left:\n{text}"
        );
        assert!(!text.contains("partition_offset_latest{"), "{text}");
    }
}
