//! The standard metric set (DESIGN §6) in one place, served as Prometheus
//! (OpenMetrics) text on `/metrics`.
//!
//! prometheus-client appends `_total` to counters and the unit to
//! histograms, so `events_published` is exposed as `events_published_total`
//! and `event_publish_duration` as `event_publish_duration_seconds`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Buckets for work measured in milliseconds: 0.5 ms to 10 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram with [`DURATION_BUCKETS`].
pub fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn histograms<L: Clone + std::hash::Hash + Eq>() -> Histograms<L> {
    Family::new_with_constructor(duration_histogram as fn() -> Histogram)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicEventType {
    pub topic: String,
    pub event_type: String,
}

/// Distinct `event_type` label values one process keeps: the header comes
/// from any producer, so without a bound each new value would be a new
/// series in every scrape, forever.
pub const MAX_EVENT_TYPES: usize = 100;

/// The label value that stands for every event type past
/// [`MAX_EVENT_TYPES`], and for header values no label should carry.
pub const OTHER_EVENT_TYPE: &str = "other";

/// The label value of an event without an `event-type` header.
pub const UNKNOWN_EVENT_TYPE: &str = "unknown";

/// Longest event type kept as a label value, in bytes.
const MAX_EVENT_TYPE_LEN: usize = 128;

/// A bounded set of label values: the first `max` well-formed values seen
/// are themselves, anything else is [`OTHER_EVENT_TYPE`]. Cheap to clone;
/// clones share the set.
#[derive(Clone, Debug)]
pub struct BoundedLabel {
    seen: Arc<Mutex<HashSet<String>>>,
    max: usize,
}

impl BoundedLabel {
    pub fn new(max: usize) -> Self {
        Self {
            seen: Arc::default(),
            max,
        }
    }

    /// `raw` if it is (or may become) one of the kept values, else `other`.
    /// Logs a WARN the first time a value is turned away.
    pub fn admit(&self, raw: &str) -> String {
        let well_formed = !raw.is_empty()
            && raw.len() <= MAX_EVENT_TYPE_LEN
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b));
        if !well_formed {
            return OTHER_EVENT_TYPE.to_owned();
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.contains(raw) {
            return raw.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(raw.to_owned());
            return raw.to_owned();
        }
        if seen.len() == self.max {
            // One marker past the bound, so the WARN is logged once.
            seen.insert(String::new());
            tracing::warn!(
                max = self.max,
                eventType = raw,
                "more distinct event types than the metrics keep: the rest are counted as \"other\""
            );
        }
        OTHER_EVENT_TYPE.to_owned()
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    pub topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicErrorType {
    pub topic: String,
    pub error_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicGroup {
    pub topic: String,
    pub consumer_group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicGroupKind {
    pub topic: String,
    pub consumer_group: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceTopicErrorType {
    pub source_topic: String,
    pub error_type: String,
}

/// Every metric the framework records. Cheap to clone; clones share values.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    pub events_published: Family<TopicEventType, Counter>,
    pub event_publish_duration: Histograms<TopicLabel>,
    pub event_publish_errors: Family<TopicErrorType, Counter>,
    pub events_consumed: Family<TopicGroup, Counter>,
    pub event_processing_duration: Histograms<TopicEventType>,
    pub event_processing_errors: Family<TopicErrorType, Counter>,
    pub event_retries: Family<TopicGroup, Counter>,
    pub events_duplicate_skipped: Family<TopicGroup, Counter>,
    pub events_missing_correlation: Family<TopicGroup, Counter>,
    pub event_header_issues: Family<TopicGroupKind, Counter>,
    pub dlq_events: Family<SourceTopicErrorType, Counter>,
    pub store_errors: Family<TopicGroup, Counter>,
    pub handlers_in_flight: Gauge,
    /// Bounds the `event_type` label of the families above.
    event_types: BoundedLabel,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Self {
            events_published: Family::default(),
            event_publish_duration: histograms(),
            event_publish_errors: Family::default(),
            events_consumed: Family::default(),
            event_processing_duration: histograms(),
            event_processing_errors: Family::default(),
            event_retries: Family::default(),
            events_duplicate_skipped: Family::default(),
            events_missing_correlation: Family::default(),
            event_header_issues: Family::default(),
            dlq_events: Family::default(),
            store_errors: Family::default(),
            handlers_in_flight: Gauge::default(),
            event_types: BoundedLabel::new(MAX_EVENT_TYPES),
            registry: Arc::new(Mutex::new(Registry::default())),
        };
        r.register(
            "events_published",
            "Events published, by topic and event type",
            m.events_published.clone(),
        );
        r.register_with_unit(
            "event_publish_duration",
            "Time from send to broker acknowledgement",
            Unit::Seconds,
            m.event_publish_duration.clone(),
        );
        r.register(
            "event_publish_errors",
            "Publishes that failed",
            m.event_publish_errors.clone(),
        );
        r.register(
            "events_consumed",
            "Records received by a consumer group",
            m.events_consumed.clone(),
        );
        r.register_with_unit(
            "event_processing_duration",
            "Handler time per event including retries",
            Unit::Seconds,
            m.event_processing_duration.clone(),
        );
        r.register(
            "event_processing_errors",
            "Failed handler attempts",
            m.event_processing_errors.clone(),
        );
        r.register(
            "event_retries",
            "Handler attempts retried after a retryable error",
            m.event_retries.clone(),
        );
        r.register(
            "events_duplicate_skipped",
            "Redelivered events skipped by the idempotency guard",
            m.events_duplicate_skipped.clone(),
        );
        r.register(
            "events_missing_correlation",
            "Events that arrived without a usable correlation id",
            m.events_missing_correlation.clone(),
        );
        r.register(
            "event_header_issues",
            "Records whose Kausal headers had to be repaired, by kind",
            m.event_header_issues.clone(),
        );
        r.register(
            "dlq_events",
            "Events sent to a dead-letter topic",
            m.dlq_events.clone(),
        );
        r.register(
            "store_errors",
            "Idempotency store operations that failed and were retried",
            m.store_errors.clone(),
        );
        r.register(
            "handlers_in_flight",
            "Handlers running now",
            m.handlers_in_flight.clone(),
        );
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = r;
        m
    }

    /// The labels of `topic` and an event's `event-type` header (`None`:
    /// [`UNKNOWN_EVENT_TYPE`]), the event type bounded (see
    /// [`MAX_EVENT_TYPES`]).
    pub fn topic_event_type(&self, topic: &str, event_type: Option<&str>) -> TopicEventType {
        TopicEventType {
            topic: topic.to_owned(),
            event_type: match event_type {
                Some(t) => self.event_types.admit(t),
                None => UNKNOWN_EVENT_TYPE.to_owned(),
            },
        }
    }

    /// Registers a service's own metric (business metrics such as
    /// `orders_published_total`).
    pub fn register<M>(&self, name: &str, help: &str, unit: Option<Unit>, metric: M)
    where
        M: prometheus_client::registry::Metric,
    {
        let mut r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        match unit {
            Some(unit) => r.register_with_unit(name, help, unit, metric),
            None => r.register(name, help, metric),
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition: counter
/// families are named with their `_total` suffix (OpenMetrics names the
/// family without it), and `# UNIT` and `# EOF` lines, which 0.0.4 does not
/// know, are dropped.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Serves `GET /metrics` (and `GET /healthz`, `ok` while the process
/// serves) on `addr` until `shutdown` completes. Returns the bound address
/// (port 0 picks one).
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Metrics,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let metrics = metrics.clone();
                async move {
                    // OpenMetrics for scrapers that ask for it (Prometheus does);
                    // the classic text format otherwise (curl, promtool).
                    let openmetrics = headers
                        .get(axum::http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok())
                        .is_some_and(|v| v.contains("application/openmetrics-text"));
                    if openmetrics {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            metrics.encode(),
                        )
                    } else {
                        (
                            [(
                                axum::http::header::CONTENT_TYPE,
                                "text/plain; version=0.0.4; charset=utf-8",
                            )],
                            to_classic_text(&metrics.encode()),
                        )
                    }
                }
            }),
        );
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counter_families_with_total() {
        let om = "# HELP x_seconds A.\n# TYPE x_seconds histogram\n# UNIT x_seconds seconds\nx_seconds_sum 1\n# HELP c Things.\n# TYPE c counter\nc_total{a=\"1\"} 2\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP x_seconds A.\n# TYPE x_seconds histogram\nx_seconds_sum 1\n# HELP c_total Things.\n# TYPE c_total counter\nc_total{a=\"1\"} 2\n"
        );
    }

    #[test]
    fn ten_thousand_event_types_leave_the_series_bounded() {
        let m = Metrics::new();
        for i in 0..10_000 {
            let labels = m.topic_event_type("orders", Some(&format!("Type{i}")));
            m.event_processing_duration
                .get_or_create(&labels)
                .observe(0.001);
        }
        for raw in ["", "with space", "quote\"", &"x".repeat(129)] {
            let labels = m.topic_event_type("orders", Some(raw));
            assert_eq!(labels.event_type, OTHER_EVENT_TYPE, "{raw:?}");
        }
        assert_eq!(
            m.topic_event_type("orders", None).event_type,
            UNKNOWN_EVENT_TYPE
        );
        // The first ones kept stay themselves after the bound is reached.
        assert_eq!(
            m.topic_event_type("orders", Some("Type7")).event_type,
            "Type7"
        );
        let text = m.encode();
        let series: HashSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("event_processing_duration_seconds_count{"))
            .collect();
        assert_eq!(series.len(), MAX_EVENT_TYPES + 1, "kept types and other");
        assert!(
            text.contains(
                "event_processing_duration_seconds_count{topic=\"orders\",event_type=\"other\"} 9900"
            ),
            "the 9 900 past the bound are counted, as other"
        );
    }

    #[test]
    fn exposes_the_design_names() {
        let m = Metrics::new();
        m.events_published
            .get_or_create(&TopicEventType {
                topic: "orders".into(),
                event_type: "OrderPlaced".into(),
            })
            .inc();
        m.event_processing_duration
            .get_or_create(&TopicEventType {
                topic: "orders".into(),
                event_type: "OrderPlaced".into(),
            })
            .observe(0.003);
        m.dlq_events
            .get_or_create(&SourceTopicErrorType {
                source_topic: "orders".into(),
                error_type: "X".into(),
            })
            .inc();
        let text = m.encode();
        for needle in [
            "events_published_total{topic=\"orders\",event_type=\"OrderPlaced\"} 1",
            "event_processing_duration_seconds_bucket{",
            "dlq_events_total{source_topic=\"orders\",error_type=\"X\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }
}
