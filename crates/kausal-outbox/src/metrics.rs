//! The relay's metric families, registered in a service's
//! [`kausal_telemetry::Metrics`] registry so that they are served on its
//! `/metrics` with the rest. Names: [`crate::names::metric`].

use std::sync::atomic::AtomicU64;

use kausal_store::OutboxStats;
use kausal_telemetry::Metrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::names::metric;

/// Buckets of the relay latency, 10 ms to 5 min: it includes the relay's
/// poll interval (200 ms by default) and, during a broker outage or a
/// backlog, the whole wait, which the framework's 0.5 ms–10 s duration
/// buckets would lump into `+Inf`.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// The `topic` label (an outbox target's topic: bounded by code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The relay's metrics. Register once per registry (a second registration
/// would expose every family twice) and clone the handle: clones share
/// values.
#[derive(Clone, Debug)]
pub struct OutboxMetrics {
    pub relay_latency: Histograms<TopicLabel>,
    pub pending: Gauge,
    pub oldest_age_seconds: Gauge<f64, AtomicU64>,
}

impl OutboxMetrics {
    /// Creates the families and registers them in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self {
            relay_latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            pending: Gauge::default(),
            oldest_age_seconds: Gauge::default(),
        };
        metrics.register(
            metric::RELAY_LATENCY,
            "Time from an outbox row's creation to the broker's acknowledgement of its event",
            Some(Unit::Seconds),
            m.relay_latency.clone(),
        );
        metrics.register(
            metric::PENDING,
            "Outbox rows not yet published and acknowledged",
            None,
            m.pending.clone(),
        );
        metrics.register(
            metric::OLDEST_AGE,
            "How long the oldest unpublished outbox row has waited (0 when none)",
            Some(Unit::Seconds),
            m.oldest_age_seconds.clone(),
        );
        m
    }

    /// Sets both gauges from the store's count.
    pub fn set_backlog(&self, stats: OutboxStats) {
        self.pending.set(stats.pending);
        self.oldest_age_seconds
            .set(stats.oldest_age_ms.unwrap_or(0) as f64 / 1_000.0);
    }

    /// Records one event's latency, `created_at_ms` to `acknowledged_at_ms`.
    pub fn observe_latency(&self, topic: &str, created_at_ms: i64, acknowledged_at_ms: i64) {
        let seconds = (acknowledged_at_ms - created_at_ms).max(0) as f64 / 1_000.0;
        self.relay_latency
            .get_or_create(&TopicLabel {
                topic: topic.to_owned(),
            })
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_names() {
        let registry = Metrics::new();
        let m = OutboxMetrics::register(&registry);
        m.observe_latency("ledger", 1_000, 1_040);
        m.set_backlog(OutboxStats {
            pending: 7,
            oldest_age_ms: Some(2_500),
        });
        let text = registry.encode();
        for needle in [
            "outbox_relay_latency_seconds_bucket{le=\"0.05\",topic=\"ledger\"} 1",
            "outbox_relay_latency_seconds_bucket{le=\"0.025\",topic=\"ledger\"} 0",
            "outbox_relay_latency_seconds_count{topic=\"ledger\"} 1",
            "outbox_pending 7",
            "outbox_oldest_age_seconds 2.5",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        m.set_backlog(OutboxStats::default());
        let text = registry.encode();
        assert!(text.contains("outbox_pending 0"), "{text}");
        assert!(text.contains("outbox_oldest_age_seconds 0.0"), "{text}");
    }
}
