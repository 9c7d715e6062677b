//! The event store's metric families, registered in a service's
//! [`kausal_telemetry::Metrics`] registry so that they are served on its
//! `/metrics` with the rest. Names: [`crate::names::metric`].

use kausal_telemetry::Metrics;
use kausal_telemetry::metrics::duration_histogram;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Unit;

use crate::names::metric;

/// The `aggregate_type` label (an aggregate's `TYPE`: bounded by code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AggregateTypeLabel {
    pub aggregate_type: String,
}

/// The `subscription` label (a subscription's name: bounded by code).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabel {
    pub subscription: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// The event store's metrics. Register once per registry (a second
/// registration would expose every family twice) and clone the handle:
/// clones share values.
#[derive(Clone, Debug)]
pub struct EventStoreMetrics {
    pub append_duration: Histograms<AggregateTypeLabel>,
    pub conflicts: Family<AggregateTypeLabel, Counter>,
    pub subscription_lag: Family<SubscriptionLabel, Gauge>,
}

impl EventStoreMetrics {
    /// Creates the families and registers them in `metrics`.
    pub fn register(metrics: &Metrics) -> Self {
        let m = Self {
            append_duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            conflicts: Family::default(),
            subscription_lag: Family::default(),
        };
        metrics.register(
            metric::APPEND_DURATION,
            "Time of one event store append, begin to commit, conflicts included",
            Some(Unit::Seconds),
            m.append_duration.clone(),
        );
        metrics.register(
            metric::CONFLICTS,
            "Appends refused because the stream's version had moved",
            None,
            m.conflicts.clone(),
        );
        metrics.register(
            metric::SUBSCRIPTION_LAG,
            "Committed events after a catch-up subscription's checkpoint",
            None,
            m.subscription_lag.clone(),
        );
        m
    }

    /// Conflicts counted so far for `aggregate_type`.
    pub fn conflicts_of(&self, aggregate_type: &str) -> u64 {
        self.conflicts
            .get_or_create(&AggregateTypeLabel {
                aggregate_type: aggregate_type.to_owned(),
            })
            .get()
    }

    /// The lag last measured for `subscription`.
    pub fn lag_of(&self, subscription: &str) -> i64 {
        self.subscription_lag
            .get_or_create(&SubscriptionLabel {
                subscription: subscription.to_owned(),
            })
            .get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_the_documented_names() {
        let registry = Metrics::new();
        let m = EventStoreMetrics::register(&registry);
        let label = AggregateTypeLabel {
            aggregate_type: "Account".into(),
        };
        m.append_duration.get_or_create(&label).observe(0.002);
        m.conflicts.get_or_create(&label).inc();
        m.subscription_lag
            .get_or_create(&SubscriptionLabel {
                subscription: "balances".into(),
            })
            .set(3);
        let text = registry.encode();
        for needle in [
            "eventstore_append_duration_seconds_bucket{le=\"0.0025\",aggregate_type=\"Account\"} 1",
            "eventstore_append_duration_seconds_count{aggregate_type=\"Account\"} 1",
            "eventstore_conflicts_total{aggregate_type=\"Account\"} 1",
            "eventstore_subscription_lag_events{subscription=\"balances\"} 3",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert_eq!(m.conflicts_of("Account"), 1);
        assert_eq!(m.lag_of("balances"), 3);
    }
}
