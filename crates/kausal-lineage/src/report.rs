//! The trace report: one correlation id's events in time order, who received
//! each and what became of it, the dead letters, and an explicit line for
//! every group that received an event but emitted nothing because it failed.
//! Built from store rows with no I/O; rendered as text or JSON.

use std::collections::BTreeSet;
use std::fmt::Write;

use kausal_store::{DeadLetterEntry, LineageEvent, Receipt};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TraceReport {
    pub correlation_id: String,
    /// Kafka keys seen in the chain (order ids).
    pub keys: Vec<String>,
    pub trace_ids: Vec<String>,
    pub events: Vec<EventEntry>,
    pub failures: Vec<Failure>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventEntry {
    pub at: String,
    pub service: Option<String>,
    pub event_type: Option<String>,
    pub event_id: String,
    pub caused_by: Option<String>,
    pub caused_by_type: Option<String>,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub trace_id: Option<String>,
    pub receipts: Vec<ReceiptEntry>,
    pub dead_letters: Vec<DeadLetterRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReceiptEntry {
    pub consumer_group: String,
    pub service: String,
    pub outcome: String,
    pub attempts: i64,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub duration_ms: f64,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeadLetterRef {
    pub dlq_id: String,
    pub dlq_topic: String,
    pub consumer_group: Option<String>,
    pub service: Option<String>,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub attempts: Option<i64>,
    pub status: String,
}

/// A group that received an event and emitted nothing because it failed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Failure {
    pub service: Option<String>,
    pub consumer_group: Option<String>,
    pub event_type: Option<String>,
    pub event_id: String,
    pub error_type: Option<String>,
    pub error_message: Option<String>,
    pub dlq_id: Option<String>,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Joins the rows of one correlation id.
pub fn build_report(
    correlation_id: &str,
    chain: &[LineageEvent],
    receipts: &[Receipt],
    dead_letters: &[DeadLetterEntry],
) -> TraceReport {
    let keys: BTreeSet<String> = chain.iter().filter_map(|e| e.key.clone()).collect();
    let trace_ids: BTreeSet<String> = chain.iter().filter_map(|e| e.trace_id.clone()).collect();
    let events = chain
        .iter()
        .map(|e| {
            let mut rs: Vec<&Receipt> = receipts
                .iter()
                .filter(|r| r.event_id == e.event_id)
                .collect();
            rs.sort_by(|a, b| {
                (a.handled_at_ms, &a.consumer_group).cmp(&(b.handled_at_ms, &b.consumer_group))
            });
            EventEntry {
                at: rfc3339(e.occurred_at_ms),
                service: e.source_service.clone(),
                event_type: e.event_type.clone(),
                event_id: e.event_id.clone(),
                caused_by: e.causation_id.clone(),
                caused_by_type: e
                    .causation_id
                    .as_ref()
                    .and_then(|c| chain.iter().find(|p| &p.event_id == c))
                    .and_then(|p| p.event_type.clone()),
                topic: e.topic.clone(),
                partition: e.partition,
                offset: e.offset,
                key: e.key.clone(),
                trace_id: e.trace_id.clone(),
                receipts: rs
                    .into_iter()
                    .map(|r| ReceiptEntry {
                        consumer_group: r.consumer_group.clone(),
                        service: r.service.clone(),
                        outcome: r.outcome.clone(),
                        attempts: r.attempts,
                        error_type: r.error_type.clone(),
                        error_message: r.error_message.clone(),
                        duration_ms: r.duration_ms,
                        at: rfc3339(r.handled_at_ms),
                    })
                    .collect(),
                dead_letters: dead_letters
                    .iter()
                    .filter(|d| d.event_id == e.event_id)
                    .map(|d| DeadLetterRef {
                        dlq_id: d.dlq_id.clone(),
                        dlq_topic: d.dlq_topic.clone(),
                        consumer_group: d.consumer_group.clone(),
                        service: d.service.clone(),
                        error_type: d.error_type.clone(),
                        error_message: d.error_message.clone(),
                        attempts: d.attempts,
                        status: d.status.clone(),
                    })
                    .collect(),
            }
        })
        .collect::<Vec<_>>();

    // Failures: from receipts, completed by the DLQ ledger (which also
    // covers consumers that publish no receipts, e.g. Spring services).
    let mut failures: Vec<Failure> = Vec::new();
    for r in receipts.iter().filter(|r| r.outcome == "dead_lettered") {
        let dlq = dead_letters.iter().find(|d| {
            d.event_id == r.event_id
                && d.consumer_group.as_deref() == Some(r.consumer_group.as_str())
        });
        failures.push(Failure {
            service: Some(r.service.clone()),
            consumer_group: Some(r.consumer_group.clone()),
            event_type: chain
                .iter()
                .find(|e| e.event_id == r.event_id)
                .and_then(|e| e.event_type.clone()),
            event_id: r.event_id.clone(),
            error_type: r.error_type.clone(),
            error_message: r.error_message.clone(),
            dlq_id: dlq.map(|d| d.dlq_id.clone()),
        });
    }
    for d in dead_letters {
        let known = failures
            .iter()
            .any(|f| f.event_id == d.event_id && f.consumer_group == d.consumer_group);
        if !known {
            failures.push(Failure {
                service: d.service.clone(),
                consumer_group: d.consumer_group.clone(),
                event_type: d.event_type.clone(),
                event_id: d.event_id.clone(),
                error_type: d.error_type.clone(),
                error_message: d.error_message.clone(),
                dlq_id: Some(d.dlq_id.clone()),
            });
        }
    }
    // A replay that later succeeded is not a standing failure.
    failures.retain(|f| {
        !receipts.iter().any(|r| {
            r.event_id == f.event_id
                && Some(&r.consumer_group) == f.consumer_group.as_ref()
                && r.outcome == "processed"
        })
    });

    TraceReport {
        correlation_id: correlation_id.to_owned(),
        keys: keys.into_iter().collect(),
        trace_ids: trace_ids.into_iter().collect(),
        events,
        failures,
    }
}

impl TraceReport {
    /// The seed's timeline as text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "correlation {}  key {}  trace {}",
            self.correlation_id,
            if self.keys.is_empty() {
                "-".to_owned()
            } else {
                self.keys.join(", ")
            },
            if self.trace_ids.is_empty() {
                "-".to_owned()
            } else {
                self.trace_ids.join(", ")
            }
        );
        let _ = writeln!(out);
        for e in &self.events {
            let cause = match (&e.caused_by, &e.caused_by_type) {
                (Some(id), Some(t)) => format!("caused by {t} {id}"),
                (Some(id), None) => format!("caused by {id}"),
                (None, _) => "root".to_owned(),
            };
            let _ = writeln!(
                out,
                "{}  {:<22} {:<18} {}  {}",
                e.at,
                e.service.as_deref().unwrap_or("?"),
                e.event_type.as_deref().unwrap_or("?"),
                e.event_id,
                cause
            );
            for r in &e.receipts {
                let detail = match (&r.error_type, &r.error_message) {
                    (Some(t), Some(m)) => format!(": {t}: {m}"),
                    (Some(t), None) => format!(": {t}"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "{:24}  received by {:<22} {} after {} attempt{} in {:.1} ms{}",
                    "",
                    r.service,
                    r.outcome,
                    r.attempts,
                    if r.attempts == 1 { "" } else { "s" },
                    r.duration_ms,
                    detail
                );
            }
            for d in &e.dead_letters {
                let _ = writeln!(
                    out,
                    "{:24}  dead letter {} on {} ({}) by {}",
                    "",
                    d.dlq_id,
                    d.dlq_topic,
                    d.status,
                    d.service
                        .as_deref()
                        .or(d.consumer_group.as_deref())
                        .unwrap_or("?")
                );
            }
        }
        if self.failures.is_empty() {
            let _ = writeln!(out, "\nno failures");
        } else {
            let _ = writeln!(out);
            for f in &self.failures {
                let _ = writeln!(
                    out,
                    "FAILED  {} received {} {} but emitted nothing: {}{}{}",
                    f.service
                        .as_deref()
                        .or(f.consumer_group.as_deref())
                        .unwrap_or("?"),
                    f.event_type.as_deref().unwrap_or("event"),
                    f.event_id,
                    f.error_type.as_deref().unwrap_or("error"),
                    f.error_message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default(),
                    f.dlq_id
                        .as_deref()
                        .map(|d| format!("  (dead letter {d})"))
                        .unwrap_or_default()
                );
            }
        }
        out
    }
}
