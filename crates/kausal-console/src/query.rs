//! The questions an on-call engineer asks, answered from the store: which
//! correlations an id belongs to (`resolve`), and everything about one
//! correlation in one document (`correlation`). The CLI (`kausal trace`)
//! and the HTTP API call these same functions, so they cannot disagree.

use std::collections::{BTreeMap, BTreeSet};

use kausal_lineage::{TraceReport, build_report};
use kausal_store::{LineageEvent, LogRow, Receipt, SpanRow, Store};
use serde::Serialize;
use serde_json::Value;

use crate::expected::ExpectedGroups;

/// Bounds of one document: a correlation that touched more is cut, and the
/// document says so (`truncated`).
pub const MAX_TRACES: usize = 50;
pub const MAX_SPANS_PER_TRACE: i64 = 2_000;
pub const MAX_LOGS: i64 = 2_000;

/// How an id matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    EventId,
    CorrelationId,
    Key,
    TraceId,
    DeadLetterId,
}

impl MatchKind {
    /// The name `kausal trace --json` gives it (`matched_by`).
    pub fn label(self) -> &'static str {
        match self {
            Self::EventId => "event-id",
            Self::CorrelationId => "correlation-id",
            Self::Key => "key",
            Self::TraceId => "trace-id",
            Self::DeadLetterId => "dead-letter-id",
        }
    }
}

/// One correlation an id belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    pub kind: MatchKind,
    pub correlation_id: String,
}

/// Every correlation `id` names: as an event id, a correlation id, a Kafka
/// key (order id), a dead-letter id or a trace id, in that order of
/// preference; empty when it names nothing recorded.
pub async fn resolve(store: &Store, id: &str) -> kausal_store::Result<Vec<Match>> {
    let one = |kind, correlation_id| {
        vec![Match {
            kind,
            correlation_id,
        }]
    };
    if let Some(event) = store.event(id).await? {
        return Ok(one(MatchKind::EventId, event.correlation_id));
    }
    if !store.chain(id).await?.is_empty() {
        return Ok(one(MatchKind::CorrelationId, id.to_owned()));
    }
    let by_key: BTreeSet<String> = store
        .events_by_key(id)
        .await?
        .into_iter()
        .map(|e| e.correlation_id)
        .collect();
    if !by_key.is_empty() {
        return Ok(by_key
            .into_iter()
            .map(|correlation_id| Match {
                kind: MatchKind::Key,
                correlation_id,
            })
            .collect());
    }
    if let Some(letter) = store.dead_letter(id).await? {
        let correlation = letter.correlation_id.or(store
            .event(&letter.event_id)
            .await?
            .map(|e| e.correlation_id));
        return Ok(correlation
            .map(|c| one(MatchKind::DeadLetterId, c))
            .unwrap_or_default());
    }
    let mut by_trace = BTreeSet::new();
    for span in store.spans_for_trace(id, MAX_SPANS_PER_TRACE).await? {
        if let Some(c) = span.correlation_id {
            by_trace.insert(c);
        }
    }
    Ok(by_trace
        .into_iter()
        .map(|correlation_id| Match {
            kind: MatchKind::TraceId,
            correlation_id,
        })
        .collect())
}

/// A causation edge: `cause` was handled and emitted `effect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    pub cause: String,
    pub effect: String,
}

/// One span as the document shows it (attributes, events and links parsed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanView {
    pub service: Option<String>,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: Option<String>,
    pub name: String,
    pub kind: String,
    pub start_ns: i64,
    pub duration_ms: f64,
    pub status: String,
    pub status_message: Option<String>,
    pub event_id: Option<String>,
    pub attributes: Value,
    pub events: Value,
    pub links: Value,
}

impl From<SpanRow> for SpanView {
    fn from(s: SpanRow) -> Self {
        let detail = crate::otlp::detail::view(&s.detail);
        Self {
            duration_ms: (s.end_ns.saturating_sub(s.start_ns)) as f64 / 1e6,
            service: s.service,
            trace_id: s.trace_id,
            span_id: s.span_id,
            parent_span_id: s.parent_span_id,
            name: s.name,
            kind: s.kind,
            start_ns: s.start_ns,
            status: s.status_code,
            status_message: s.status_message,
            event_id: s.event_id,
            attributes: detail.attributes,
            events: detail.events,
            links: detail.links,
        }
    }
}

/// One log line as the document shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogView {
    pub time_ns: i64,
    pub service: Option<String>,
    pub level: Option<String>,
    pub message: Option<String>,
    pub trace_id: Option<String>,
    pub span_id: Option<String>,
    pub correlation_id: Option<String>,
    pub attributes: Value,
}

impl From<LogRow> for LogView {
    fn from(l: LogRow) -> Self {
        Self {
            time_ns: l.time_ns,
            service: l.service,
            level: l.severity_text,
            message: l.body,
            trace_id: l.trace_id,
            span_id: l.span_id,
            correlation_id: l.correlation_id,
            attributes: crate::otlp::read_json(&l.attributes_json),
        }
    }
}

/// One event handed from its producer to one consumer group: time in Kafka
/// (record timestamp → handling started) and time in the handler.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hop {
    pub event_id: String,
    pub event_type: Option<String>,
    pub from_service: Option<String>,
    pub consumer_group: String,
    pub service: String,
    pub outcome: String,
    pub kafka_ms: f64,
    pub handler_ms: f64,
}

/// A consumer group on the path, with what it did for this correlation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupOnPath {
    pub consumer_group: String,
    pub service: String,
    pub receipts: usize,
    pub failed: usize,
}

/// A group that receives events of this type elsewhere, but left no receipt
/// for this one: the hop where the event "vanished" (or is still in flight).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Missing {
    pub event_id: String,
    pub event_type: String,
    pub consumer_group: String,
    pub service: String,
}

/// Everything about one correlation.
#[derive(Debug, Clone, Serialize)]
pub struct CorrelationDocument {
    pub correlation_id: String,
    pub keys: Vec<String>,
    pub trace_ids: Vec<String>,
    pub events: Vec<LineageEvent>,
    pub edges: Vec<Edge>,
    pub receipts: Vec<Receipt>,
    /// The dead letters without their bytes (those are at `/api/dlq/{id}`).
    pub dead_letters: Vec<crate::dlq::DeadLetterSummary>,
    pub spans: Vec<SpanView>,
    pub logs: Vec<LogView>,
    pub hops: Vec<Hop>,
    pub groups: Vec<GroupOnPath>,
    pub failures: Vec<kausal_lineage::report::Failure>,
    pub missing: Vec<Missing>,
    /// The lag of the consumer groups on the path, from the console's lag
    /// monitor; empty where no monitor runs (`kausal trace`).
    pub lag: Vec<crate::lag::GroupView>,
    /// The lineage report `kausal trace` prints (timeline per event).
    pub report: TraceReport,
    /// True when a bound above cut spans, traces or logs.
    pub truncated: bool,
}

/// The document for `correlation_id`; `None` when nothing is recorded for it
/// (no event and no span).
pub async fn correlation(
    store: &Store,
    expected: &ExpectedGroups,
    correlation_id: &str,
) -> kausal_store::Result<Option<CorrelationDocument>> {
    // Three rounds of queries that do not wait for one another, each as
    // wide as what it needs from the one before: the store's pool runs
    // them side by side (on SQLite, readers do not block one another).
    let (events, receipts, dead, span_traces) = tokio::try_join!(
        store.chain(correlation_id),
        store.receipts_for_correlation(correlation_id),
        store.dead_letters_for_correlation(correlation_id),
        store.span_traces_for_correlation(correlation_id, MAX_TRACES as i64),
    )?;
    let report = build_report(correlation_id, &events, &receipts, &dead);

    // Traces: those the events were sent in, those whose spans name the
    // correlation, and one step along links (batches, replays); the direct
    // ones first, so a cut keeps them.
    let mut traces: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let direct = events
        .iter()
        .filter_map(|e| e.trace_id.clone())
        .chain(span_traces);
    for trace in direct {
        if seen.insert(trace.clone()) {
            traces.push(trace);
        }
    }
    let mut truncated = traces.len() > MAX_TRACES;
    traces.truncate(MAX_TRACES);
    for trace in store.linked_traces_of(&traces).await? {
        if seen.insert(trace.clone()) {
            traces.push(trace);
        }
    }
    truncated |= traces.len() > MAX_TRACES;
    traces.truncate(MAX_TRACES);

    // The log lines of the correlation and of its traces in one query:
    // they are mostly the same lines.
    let (mut spans, logs, missing) = tokio::try_join!(
        store.spans_for_traces(&traces, MAX_SPANS_PER_TRACE),
        store.logs_for_correlation(correlation_id, &traces, MAX_LOGS),
        missing_hops(store, expected, &events, &receipts),
    )?;
    let mut per_trace: BTreeMap<&str, i64> = BTreeMap::new();
    for s in &spans {
        *per_trace.entry(s.trace_id.as_str()).or_default() += 1;
    }
    truncated |= per_trace.values().any(|n| *n >= MAX_SPANS_PER_TRACE);
    truncated |= logs.len() as i64 >= MAX_LOGS;
    if events.is_empty() && spans.is_empty() {
        return Ok(None);
    }
    spans.sort_by(|a, b| (a.start_ns, &a.span_id).cmp(&(b.start_ns, &b.span_id)));
    Ok(Some(CorrelationDocument {
        correlation_id: correlation_id.to_owned(),
        keys: report.keys.clone(),
        trace_ids: traces,
        edges: edges(&events),
        hops: hops(&events, &receipts),
        groups: groups(&receipts),
        failures: report.failures.clone(),
        missing,
        dead_letters: dead
            .iter()
            .map(crate::dlq::DeadLetterSummary::from)
            .collect(),
        spans: spans.into_iter().map(SpanView::from).collect(),
        logs: logs.into_iter().map(LogView::from).collect(),
        events,
        receipts,
        lag: Vec::new(),
        report,
        truncated,
    }))
}

/// Everything about one trace: what `GET /api/traces/{trace_id}` answers
/// and the trace page shows.
#[derive(Debug, Clone, Serialize)]
pub struct TraceDocument {
    pub trace_id: String,
    /// In start order, at most [`MAX_SPANS_PER_TRACE`].
    pub spans: Vec<SpanView>,
    /// In time order, at most [`MAX_LOGS`].
    pub logs: Vec<LogView>,
    /// Traces joined to this one by a span link, either way.
    pub linked_traces: Vec<String>,
    /// The correlation ids its spans and log lines name.
    pub correlation_ids: Vec<String>,
    /// True when the trace has more spans or log lines than the bounds.
    pub truncated: bool,
}

/// The document of `trace_id` (lowercase hex); `None` when no span of it
/// was received.
pub async fn trace(store: &Store, trace_id: &str) -> kausal_store::Result<Option<TraceDocument>> {
    // One more than the bound says whether the bound cut.
    let mut spans = store
        .spans_for_trace(trace_id, MAX_SPANS_PER_TRACE + 1)
        .await?;
    if spans.is_empty() {
        return Ok(None);
    }
    let mut logs = store.logs_for_trace(trace_id, MAX_LOGS + 1).await?;
    let truncated = spans.len() as i64 > MAX_SPANS_PER_TRACE || logs.len() as i64 > MAX_LOGS;
    spans.truncate(MAX_SPANS_PER_TRACE as usize);
    logs.truncate(MAX_LOGS as usize);
    let linked_traces = store.linked_traces(trace_id).await?;
    let correlation_ids: BTreeSet<String> = spans
        .iter()
        .filter_map(|s| s.correlation_id.clone())
        .chain(logs.iter().filter_map(|l| l.correlation_id.clone()))
        .collect();
    Ok(Some(TraceDocument {
        trace_id: trace_id.to_owned(),
        spans: spans.into_iter().map(SpanView::from).collect(),
        logs: logs.into_iter().map(LogView::from).collect(),
        linked_traces,
        correlation_ids: correlation_ids.into_iter().collect(),
        truncated,
    }))
}

impl CorrelationDocument {
    /// Fills [`lag`](Self::lag) with the groups on the path, as `board`
    /// has them.
    pub fn with_lag(mut self, board: &crate::lag::LagBoard) -> Self {
        let groups: Vec<&str> = self
            .groups
            .iter()
            .map(|g| g.consumer_group.as_str())
            .collect();
        let lag = board.document(Some(&groups)).groups;
        self.lag = lag;
        self
    }
}

/// Causation edges between recorded events of the chain.
fn edges(events: &[LineageEvent]) -> Vec<Edge> {
    let known: BTreeSet<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    events
        .iter()
        .filter_map(|e| {
            let cause = e.causation_id.as_deref()?;
            known.contains(cause).then(|| Edge {
                cause: cause.to_owned(),
                effect: e.event_id.clone(),
            })
        })
        .collect()
}

/// Per receipt: time in Kafka (the record's timestamp to the start of
/// handling) and time in the handler. Handling started `duration` before
/// the receipt's time.
fn hops(events: &[LineageEvent], receipts: &[Receipt]) -> Vec<Hop> {
    receipts
        .iter()
        .filter_map(|r| {
            let event = events.iter().find(|e| e.event_id == r.event_id)?;
            let started_ms = r.handled_at_ms as f64 - r.duration_ms;
            Some(Hop {
                event_id: r.event_id.clone(),
                event_type: event.event_type.clone(),
                from_service: event.source_service.clone(),
                consumer_group: r.consumer_group.clone(),
                service: r.service.clone(),
                outcome: r.outcome.clone(),
                kafka_ms: (started_ms - event.occurred_at_ms as f64).max(0.0),
                handler_ms: r.duration_ms,
            })
        })
        .collect()
}

fn groups(receipts: &[Receipt]) -> Vec<GroupOnPath> {
    let mut out: BTreeMap<&str, GroupOnPath> = BTreeMap::new();
    for r in receipts {
        let g = out
            .entry(r.consumer_group.as_str())
            .or_insert_with(|| GroupOnPath {
                consumer_group: r.consumer_group.clone(),
                service: r.service.clone(),
                receipts: 0,
                failed: 0,
            });
        g.receipts += 1;
        if r.outcome == "dead_lettered" {
            g.failed += 1;
        }
    }
    out.into_values().collect()
}

/// For each event: the groups that receive its type elsewhere but left no
/// receipt for it.
async fn missing_hops(
    store: &Store,
    expected: &ExpectedGroups,
    events: &[LineageEvent],
    receipts: &[Receipt],
) -> kausal_store::Result<Vec<Missing>> {
    let types: BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e.event_type.as_deref())
        .collect();
    // One query per event type not asked lately, side by side.
    let groups = futures::future::try_join_all(types.iter().map(|t| expected.of(store, t))).await?;
    let by_type: BTreeMap<&str, crate::expected::Groups> = types.into_iter().zip(groups).collect();
    let mut out = Vec::new();
    for event in events {
        let Some(event_type) = event.event_type.as_deref() else {
            continue;
        };
        for (group, service) in by_type[event_type].iter() {
            let received = receipts
                .iter()
                .any(|r| r.event_id == event.event_id && &r.consumer_group == group);
            if !received {
                out.push(Missing {
                    event_id: event.event_id.clone(),
                    event_type: event_type.to_owned(),
                    consumer_group: group.clone(),
                    service: service.clone(),
                });
            }
        }
    }
    Ok(out)
}

/// Spans depth-first from the roots, as a waterfall shows them (a span whose parent is not among them
/// is a root), each with its depth; siblings in start order.
pub fn span_tree<'a>(spans: &[&'a SpanView]) -> Vec<(usize, &'a SpanView)> {
    let ids: BTreeSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let mut children: BTreeMap<Option<&str>, Vec<&'a SpanView>> = BTreeMap::new();
    for s in spans {
        let parent = s
            .parent_span_id
            .as_deref()
            .filter(|p| ids.contains(p) && *p != s.span_id);
        children.entry(parent).or_default().push(s);
    }
    for c in children.values_mut() {
        c.sort_by(|a, b| (a.start_ns, &a.span_id).cmp(&(b.start_ns, &b.span_id)));
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut seen = BTreeSet::new();
    let mut stack: Vec<(usize, &'a SpanView)> = children
        .get(&None)
        .map(|roots| roots.iter().rev().map(|s| (0, *s)).collect())
        .unwrap_or_default();
    while let Some((depth, s)) = stack.pop() {
        if !seen.insert(s.span_id.as_str()) {
            continue;
        }
        out.push((depth, s));
        if let Some(kids) = children.get(&Some(s.span_id.as_str())) {
            stack.extend(kids.iter().rev().map(|k| (depth + 1, *k)));
        }
    }
    // Spans in a parent cycle (malformed input) have no root: show them
    // at the top level rather than drop them.
    for s in spans {
        if !seen.contains(s.span_id.as_str()) {
            out.push((0, s));
        }
    }
    out
}
