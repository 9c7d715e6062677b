//! `kausal trace <order-id | correlation-id | event-id>`: the causal chain of
//! one business operation, who received each event, what failed, the dead
//! letters.

use anyhow::{Context, bail};
use clap::Args;
use std::collections::BTreeMap;

use kausal_console::query::{self, LogView, SpanView};
use kausal_store::Store;
use serde::Serialize;

use crate::Common;

#[derive(Debug, Clone, Args)]
pub struct TraceArgs {
    /// An order id (Kafka key), a correlation id or an event id.
    pub id: String,
    #[command(flatten)]
    pub common: Common,
    /// Print one JSON document instead of the timeline.
    #[arg(long)]
    pub json: bool,
}

/// `kausal trace --json`: the matches, then for each correlation the
/// console's document (`GET /api/correlations/{id}`), built by the same
/// query. `lag` stays empty here: lag needs a monitor sampling over time,
/// which a running console has and a one-shot command has not.
#[derive(Debug, Serialize)]
struct TraceDocument<'a> {
    query: &'a str,
    matched_by: &'static str,
    matches: Vec<query::Match>,
    correlations: Vec<query::CorrelationDocument>,
}

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let url = args.common.database_url();
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("cannot open the lineage store {url}"))?;
    let matches = query::resolve(&store, &args.id).await?;
    let matched_by = matches.first().map_or("nothing", |m| m.kind.label());
    if matches.is_empty() {
        bail!(
            "nothing is recorded for {:?} in {url}: check the id, and that the lineage recorder runs \
             (`kausal up` runs it; alone: `kausal service recorder`)",
            args.id
        );
    }
    let mut correlations = Vec::new();
    let expected = kausal_console::expected::ExpectedGroups::default();
    for m in &matches {
        if let Some(doc) = query::correlation(&store, &expected, &m.correlation_id).await? {
            correlations.push(doc);
        }
    }
    if args.json {
        let doc = TraceDocument {
            query: &args.id,
            matched_by,
            matches,
            correlations,
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (i, doc) in correlations.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", doc.report.render());
            print!("{}", waterfall(&doc.spans, WATERFALL_WIDTH));
            print!("{}", log_lines(&doc.logs));
            if doc.truncated {
                println!("(cut: the correlation touched more spans or logs than one answer holds)");
            }
        }
    }
    store.close().await;
    Ok(())
}

/// Columns of the waterfall's bars.
const WATERFALL_WIDTH: usize = 32;

/// The spans of each trace as a compact waterfall: offset from the trace's
/// first span, duration, a bar, service and span name, children indented
/// under their parents; an error marked with `!`.
fn waterfall(spans: &[SpanView], width: usize) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut traces: BTreeMap<&str, Vec<&SpanView>> = BTreeMap::new();
    for s in spans {
        traces.entry(&s.trace_id).or_default().push(s);
    }
    for (trace, spans) in traces {
        let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
        let end = spans
            .iter()
            .map(|s| s.start_ns + (s.duration_ms * 1e6) as i64)
            .max()
            .unwrap_or(start);
        let total = (end - start).max(1) as f64;
        let _ = writeln!(out, "\nspans of trace {trace}  ({:.1} ms)", total / 1e6);
        for (depth, s) in query::span_tree(&spans) {
            let offset = (s.start_ns - start) as f64;
            let from = ((offset / total) * width as f64).floor() as usize;
            let len = (((s.duration_ms * 1e6) / total) * width as f64)
                .ceil()
                .max(1.0) as usize;
            let from = from.min(width - 1);
            let len = len.min(width - from);
            let bar = format!(
                "{}{}{}",
                " ".repeat(from),
                "█".repeat(len),
                " ".repeat(width - from - len)
            );
            let _ = writeln!(
                out,
                "  {:>9.1} {:>9.1} ms |{bar}| {}{}{} {}",
                offset / 1e6,
                s.duration_ms,
                "  ".repeat(depth),
                if s.status == "error" { "! " } else { "" },
                s.service.as_deref().unwrap_or("?"),
                s.name
            );
        }
    }
    out
}

/// The log lines: time, level, service, message and the error type.
fn log_lines(logs: &[LogView]) -> String {
    use std::fmt::Write;
    if logs.is_empty() {
        return String::new();
    }
    let mut out = format!("\nlog lines ({})\n", logs.len());
    for l in logs {
        let time = chrono::DateTime::from_timestamp_nanos(l.time_ns)
            .format("%H:%M:%S%.3f")
            .to_string();
        let error = l.attributes["errorType"]
            .as_str()
            .map(|e| format!("  errorType={e}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {time} {:<5} {:<22} {}{error}",
            l.level.as_deref().unwrap_or("-"),
            l.service.as_deref().unwrap_or("?"),
            l.message.as_deref().unwrap_or("")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(id: &str, parent: Option<&str>, start_ms: i64, ms: f64) -> SpanView {
        SpanView {
            service: Some("svc".into()),
            trace_id: "t".into(),
            span_id: id.into(),
            parent_span_id: parent.map(Into::into),
            name: format!("span {id}"),
            kind: "internal".into(),
            start_ns: start_ms * 1_000_000,
            duration_ms: ms,
            status: if id == "c" {
                "error".into()
            } else {
                "unset".into()
            },
            status_message: None,
            event_id: None,
            attributes: serde_json::Value::Null,
            events: serde_json::Value::Null,
            links: serde_json::Value::Null,
        }
    }

    #[test]
    fn the_waterfall_nests_children_under_parents_in_time_order() {
        let spans = [
            span("c", Some("a"), 60, 20.0),
            span("a", None, 0, 100.0),
            span("b", Some("a"), 10, 10.0),
            span("orphan", Some("gone"), 50, 5.0),
        ];
        let text = waterfall(&spans, 10);
        let lines: Vec<&str> = text.lines().filter(|l| l.contains("span ")).collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].ends_with("svc span a"), "{text}");
        assert!(lines[1].ends_with("  svc span b"), "{text}");
        assert!(
            lines[2].contains("  ! svc span c"),
            "an error is marked: {text}"
        );
        assert!(
            lines[3].ends_with("| svc span orphan"),
            "a lost parent makes a root: {text}"
        );
        assert!(
            lines[0].contains("|██████████|"),
            "the root spans the trace: {text}"
        );
        assert!(lines[2].contains("|      ██  |"), "{text}");
    }
}
