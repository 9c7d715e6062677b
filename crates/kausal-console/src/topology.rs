//! The estate as a graph over a recent window: services produce to topics
//! (from the lineage), consumer groups of services handle topics (from the
//! receipts), each edge with its rate, and each handling edge with its
//! error rate and handling-time percentiles; the same per consumer group,
//! with the group's newest dead letter (from the DLQ ledger).

use std::collections::{BTreeMap, BTreeSet};

use kausal_store::Store;
use kausal_store::topology::{HandledSample, LatestFailure, Produced};
use serde::Serialize;

/// Receipts one topology reads at most: past this the rates are those of
/// the newest receipts and the document says `truncated`.
pub const MAX_RECEIPTS: i64 = 200_000;

/// A service producing to a topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProduceEdge {
    pub service: Option<String>,
    pub topic: String,
    pub events: i64,
    pub rate_per_second: f64,
}

/// What a set of receipts says about handling over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Handling {
    /// Receipts (every outcome).
    pub handled: usize,
    pub rate_per_second: f64,
    pub dead_lettered: usize,
    pub duplicates_skipped: usize,
    /// Dead-lettered over handled.
    pub error_rate: f64,
    /// Nearest-rank percentiles of the receipts' `duration_ms` (handling
    /// started to finished, retries included), every outcome.
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

impl Handling {
    fn of(samples: &[&HandledSample], window: f64) -> Self {
        let mut durations: Vec<f64> = samples.iter().map(|s| s.duration_ms).collect();
        durations.sort_by(f64::total_cmp);
        let count = |outcome: &str| samples.iter().filter(|s| s.outcome == outcome).count();
        let dead = count("dead_lettered");
        Self {
            handled: samples.len(),
            rate_per_second: samples.len() as f64 / window,
            dead_lettered: dead,
            duplicates_skipped: count("duplicate_skipped"),
            error_rate: dead as f64 / samples.len().max(1) as f64,
            p50_ms: percentile(&durations, 0.50),
            p95_ms: percentile(&durations, 0.95),
            max_ms: durations.last().copied().unwrap_or(0.0),
        }
    }
}

/// A consumer group (of a service) handling a topic.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumeEdge {
    pub topic: String,
    pub consumer_group: String,
    pub service: String,
    #[serde(flatten)]
    pub handling: Handling,
}

/// A consumer group (of a service) over every topic it handles, with its
/// newest failure.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupHandling {
    pub consumer_group: String,
    pub service: String,
    pub topics: Vec<String>,
    #[serde(flatten)]
    pub handling: Handling,
    /// The group's newest dead letter in the window, from the DLQ ledger.
    pub latest_failure: Option<LatestFailure>,
}

/// What `/api/topology` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Topology {
    pub window_seconds: u64,
    pub services: Vec<String>,
    pub topics: Vec<String>,
    pub produces: Vec<ProduceEdge>,
    pub consumes: Vec<ConsumeEdge>,
    /// The consume edges summed per (group, service).
    pub groups: Vec<GroupHandling>,
    /// True when the window held more than [`MAX_RECEIPTS`] receipts.
    pub truncated: bool,
}

/// The window a topology covers by default, and its bounds.
pub const DEFAULT_WINDOW_SECONDS: u64 = 900;
pub const MAX_WINDOW_SECONDS: u64 = 7 * 24 * 3600;

/// The window asked for (`?window_seconds=`), or the default; the reason
/// when it is out of bounds.
pub fn checked_window(window_seconds: Option<u64>) -> Result<u64, String> {
    let seconds = window_seconds.unwrap_or(DEFAULT_WINDOW_SECONDS);
    if (1..=MAX_WINDOW_SECONDS).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!(
            "window_seconds {seconds}: use 1 to {MAX_WINDOW_SECONDS}"
        ))
    }
}

/// The topology of the last `window_seconds` before `now_ms`.
pub async fn topology(
    store: &Store,
    now_ms: i64,
    window_seconds: u64,
) -> kausal_store::Result<Topology> {
    let since = now_ms.saturating_sub(window_seconds.saturating_mul(1000) as i64);
    let handled = store.handled_since(since, MAX_RECEIPTS + 1).await?;
    let produced = store.produced_since(since).await?;
    let failures = store.latest_failures_since(since).await?;
    Ok(build(&produced, &handled, &failures, window_seconds))
}

/// The graph from its rows (pure).
pub fn build(
    produced: &[Produced],
    handled: &[HandledSample],
    failures: &[LatestFailure],
    window_seconds: u64,
) -> Topology {
    let window = window_seconds.max(1) as f64;
    let truncated = handled.len() as i64 > MAX_RECEIPTS;
    let handled = &handled[..handled.len().min(MAX_RECEIPTS as usize)];
    let mut by_edge: BTreeMap<(&str, &str, &str), Vec<&HandledSample>> = BTreeMap::new();
    let mut by_group: BTreeMap<(&str, &str), Vec<&HandledSample>> = BTreeMap::new();
    for h in handled {
        by_edge
            .entry((
                h.topic.as_str(),
                h.consumer_group.as_str(),
                h.service.as_str(),
            ))
            .or_default()
            .push(h);
        by_group
            .entry((h.consumer_group.as_str(), h.service.as_str()))
            .or_default()
            .push(h);
    }
    let consumes: Vec<ConsumeEdge> = by_edge
        .into_iter()
        .map(|((topic, group, service), samples)| ConsumeEdge {
            topic: topic.to_owned(),
            consumer_group: group.to_owned(),
            service: service.to_owned(),
            handling: Handling::of(&samples, window),
        })
        .collect();
    let groups: Vec<GroupHandling> = by_group
        .into_iter()
        .map(|((group, service), samples)| {
            let topics: BTreeSet<String> = samples.iter().map(|s| s.topic.clone()).collect();
            GroupHandling {
                consumer_group: group.to_owned(),
                service: service.to_owned(),
                topics: topics.into_iter().collect(),
                handling: Handling::of(&samples, window),
                latest_failure: failures.iter().find(|f| f.consumer_group == group).cloned(),
            }
        })
        .collect();
    let produces: Vec<ProduceEdge> = produced
        .iter()
        .map(|p| ProduceEdge {
            service: p.service.clone(),
            topic: p.topic.clone(),
            events: p.events,
            rate_per_second: p.events as f64 / window,
        })
        .collect();
    let services: BTreeSet<String> = produces
        .iter()
        .filter_map(|p| p.service.clone())
        .chain(consumes.iter().map(|c| c.service.clone()))
        .collect();
    let topics: BTreeSet<String> = produces
        .iter()
        .map(|p| p.topic.clone())
        .chain(consumes.iter().map(|c| c.topic.clone()))
        .collect();
    Topology {
        window_seconds,
        services: services.into_iter().collect(),
        topics: topics.into_iter().collect(),
        produces,
        consumes,
        groups,
        truncated,
    }
}

/// Nearest-rank percentile of sorted values; 0 for none.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handled(group: &str, outcome: &str, ms: f64) -> HandledSample {
        HandledSample {
            consumer_group: group.into(),
            service: format!("{group}-svc"),
            topic: "orders".into(),
            outcome: outcome.into(),
            duration_ms: ms,
        }
    }

    #[test]
    fn edges_carry_rates_error_rates_and_percentiles() {
        let mut rows: Vec<HandledSample> = (1..=100)
            .map(|i| handled("payment", "processed", i as f64))
            .collect();
        rows.extend((0..25).map(|_| handled("payment", "dead_lettered", 1.0)));
        rows.push(handled("inventory", "duplicate_skipped", 3.0));
        let produced = [Produced {
            service: Some("order-service".into()),
            topic: "orders".into(),
            events: 120,
        }];
        let t = build(&produced, &rows, &[], 60);
        assert_eq!(t.topics, ["orders"]);
        assert_eq!(
            t.services,
            ["inventory-svc", "order-service", "payment-svc"]
        );
        assert_eq!(t.produces[0].rate_per_second, 2.0);
        let payment = t
            .consumes
            .iter()
            .find(|c| c.consumer_group == "payment")
            .expect("edge");
        assert_eq!(payment.handling.handled, 125);
        assert_eq!(payment.handling.dead_lettered, 25);
        assert!((payment.handling.error_rate - 0.2).abs() < 1e-9);
        assert_eq!(payment.handling.p95_ms, 94.0);
        assert_eq!(payment.handling.max_ms, 100.0);
        let inventory = t
            .consumes
            .iter()
            .find(|c| c.consumer_group == "inventory")
            .expect("edge");
        assert_eq!(inventory.handling.duplicates_skipped, 1);
        assert_eq!(inventory.handling.error_rate, 0.0);
        assert!(!t.truncated);
    }

    #[test]
    fn a_group_sums_its_topics_and_carries_its_newest_failure() {
        let mut rows: Vec<HandledSample> = (1..=20)
            .map(|i| handled("payment", "processed", i as f64))
            .collect();
        let mut refunds = handled("payment", "dead_lettered", 100.0);
        refunds.topic = "refunds".into();
        rows.push(refunds);
        let failure = LatestFailure {
            consumer_group: "payment".into(),
            dlq_id: "dlq-1".into(),
            correlation_id: Some("corr-1".into()),
            event_id: "ev-1".into(),
            error_type: Some("GatewayDown".into()),
            failed_at_ms: 5,
        };
        let t = build(&[], &rows, std::slice::from_ref(&failure), 10);
        assert_eq!(t.consumes.len(), 2, "one edge per topic");
        assert_eq!(t.groups.len(), 1, "one group over both");
        let g = &t.groups[0];
        assert_eq!(g.topics, ["orders", "refunds"]);
        assert_eq!(g.handling.handled, 21);
        assert_eq!(g.handling.rate_per_second, 2.1);
        assert_eq!(g.handling.dead_lettered, 1);
        assert_eq!(g.handling.p95_ms, 20.0, "the 20th of 21 durations");
        assert_eq!(g.latest_failure.as_ref(), Some(&failure));
        // The API's shape: the handling numbers beside the group, not nested.
        let json = serde_json::to_value(&t).expect("json");
        assert_eq!(json["groups"][0]["p95_ms"], 20.0);
        assert_eq!(json["consumes"][0]["handled"], 20);
        assert_eq!(json["groups"][0]["latest_failure"]["dlq_id"], "dlq-1");
    }

    #[test]
    fn the_window_is_bounded() {
        assert_eq!(checked_window(None), Ok(DEFAULT_WINDOW_SECONDS));
        assert_eq!(checked_window(Some(60)), Ok(60));
        assert!(checked_window(Some(0)).is_err());
        assert!(checked_window(Some(MAX_WINDOW_SECONDS + 1)).is_err());
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        assert_eq!(percentile(&[], 0.95), 0.0);
        assert_eq!(percentile(&[7.0], 0.5), 7.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.95), 4.0);
    }
}
