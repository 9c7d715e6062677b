//! `kausal dlq`: the dead-letter ledger. Stats, list, show, replay, discard.

use std::io::IsTerminal;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kausal_console::dlq;
use kausal_kafka::EventProducer;
use kausal_lineage::replay::{self, DEFAULT_REPLAY_CAP};
use kausal_store::{DeadLetterFilter, Store};
use kausal_telemetry::Metrics;

use crate::Common;

#[derive(Debug, Clone, Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Args, Default)]
pub struct FilterArgs {
    /// Only entries from this original topic.
    #[arg(long)]
    pub source_topic: Option<String>,
    /// Only entries with this error type.
    #[arg(long)]
    pub error_type: Option<String>,
    /// Only entries of this correlation id.
    #[arg(long)]
    pub correlation_id: Option<String>,
    /// Only entries the consumer group gave up on.
    #[arg(long)]
    pub consumer_group: Option<String>,
    /// Only entries that failed since: RFC 3339 time or a duration (30m, 2h, 7d).
    #[arg(long)]
    pub since: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum DlqCommand {
    /// Pending total, oldest, inflow/outflow last hour, by topic and error, 24 h trend.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Entries, newest first.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// pending (default), replayed, discarded or all.
        #[arg(long, default_value = "pending")]
        status: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// One entry with its original headers, payload and lineage chain.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Republish entries to their original topic (fresh trace, replay-count).
    Replay {
        /// Entry ids (see `kausal dlq list`).
        ids: Vec<String>,
        /// Replay every pending entry matching the filters instead.
        #[arg(long)]
        all_matching: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// Refuse events already replayed this many times.
        #[arg(long, default_value_t = DEFAULT_REPLAY_CAP)]
        max_replays: u32,
        /// Who replays (recorded in the ledger).
        #[arg(long, env = "USER", default_value = "kausal-cli")]
        by: String,
        /// Say what would be replayed and what refused; publish nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Mark an entry discarded, with a reason.
    Discard {
        id: String,
        #[arg(long)]
        reason: String,
        #[arg(long, env = "USER", default_value = "kausal-cli")]
        by: String,
    },
}

fn filter_of(
    f: &FilterArgs,
    status: Option<String>,
    limit: Option<i64>,
) -> anyhow::Result<DeadLetterFilter> {
    let since_ms = match &f.since {
        Some(text) => Some(
            dlq::parse_since(text, chrono::Utc::now().timestamp_millis())
                .map_err(|e| anyhow::anyhow!("--{e}"))?,
        ),
        None => None,
    };
    Ok(DeadLetterFilter {
        source_topic: f.source_topic.clone(),
        error_type: f.error_type.clone(),
        status,
        correlation_id: f.correlation_id.clone(),
        consumer_group: f.consumer_group.clone(),
        since_ms,
        limit,
    })
}

fn age(ms: i64) -> String {
    let secs = (chrono::Utc::now().timestamp_millis() - ms).max(0) / 1000;
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let url = args.common.database_url();
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("cannot open the DLQ ledger {url}"))?;
    match args.command {
        DlqCommand::Stats { json } => {
            let stats = dlq::stats(&store, chrono::Utc::now().timestamp_millis()).await?;
            if json {
                print_json(&stats)?;
            } else {
                print_stats(&stats);
            }
        }
        DlqCommand::List {
            filter,
            status,
            limit,
            json,
        } => {
            let status = (status != "all").then_some(status);
            let entries = dlq::list(&store, &filter_of(&filter, status, Some(limit))?).await?;
            if json {
                print_json(&entries)?;
            } else {
                print_list(&entries);
            }
        }
        DlqCommand::Show { id, json } => {
            let detail = dlq::detail(&store, &id)
                .await?
                .with_context(|| format!("no dead letter {id} (see `kausal dlq list`)"))?;
            if json {
                print_json(&detail)?;
            } else {
                show(&detail);
            }
        }
        DlqCommand::Replay {
            ids,
            all_matching,
            filter,
            max_replays,
            by,
            dry_run,
        } => {
            let targets: Vec<String> = if all_matching {
                if !ids.is_empty() {
                    bail!("give entry ids or --all-matching with filters, not both");
                }
                dlq::pending_ids(&store, &filter_of(&filter, None, None)?).await?
            } else {
                if ids.is_empty() {
                    bail!(
                        "name the entries to replay (see `kausal dlq list`) or use --all-matching with filters"
                    );
                }
                ids
            };
            // The replays' own spans go where OTEL_EXPORTER_OTLP_ENDPOINT
            // says (the console's URL puts them beside the rest).
            let _otel = kausal_telemetry::otel::init_tracing("kausal-dlq-replay")
                .map_err(anyhow::Error::msg)?;
            let producer = if dry_run {
                None
            } else {
                let kafka = args.common.kafka_config();
                Some(EventProducer::new(
                    &kafka,
                    "kausal-dlq-replay",
                    Metrics::new(),
                )?)
            };
            let total = targets.len();
            // On a terminal a bulk replay shows one bar updated in place
            // (on stderr); otherwise (and for single entries) one line per
            // entry, so a pipe or a log gets every entry.
            let bar =
                (total > 1 && std::io::stdout().is_terminal() && std::io::stderr().is_terminal())
                    .then(|| replay_progress(total as u64));
            let (mut done, mut refused) = (0usize, 0usize);
            let report = dlq::act(
                &store,
                producer.as_ref(),
                &targets,
                &dlq::Action::Replay { cap: max_replays },
                dlq::Actor { by: &by, dry_run },
                |o| {
                    let n = done + refused + 1;
                    match (&o.replayed, &o.reason) {
                        (_, Some(reason)) => {
                            refused += 1;
                            if let Some(bar) = &bar {
                                bar.println(format!("{}: {reason}", o.id));
                            } else {
                                eprintln!("[{n}/{total}] {reason}");
                            }
                        }
                        (Some(r), None) => {
                            done += 1;
                            if bar.is_none() {
                                println!(
                                    "[{n}/{total}] replayed {} → {}/{}@{} (replay {}, trace {})",
                                    o.id,
                                    r.topic,
                                    r.partition,
                                    r.offset,
                                    r.replay_count,
                                    r.trace_id
                                );
                            }
                        }
                        (None, None) => {
                            done += 1;
                            if bar.is_none() {
                                println!("[{n}/{total}] would replay {}", o.id);
                            }
                        }
                    }
                    if let Some(bar) = &bar {
                        bar.set_position(n as u64);
                        bar.set_message(format!("replayed {done}, refused {refused}"));
                    }
                },
            )
            .await;
            if let Some(bar) = &bar {
                bar.finish();
            }
            if let Some(producer) = producer.clone() {
                // librdkafka's flush blocks its thread: not an async worker's.
                let _ = tokio::task::spawn_blocking(move || {
                    producer.flush(std::time::Duration::from_secs(10))
                })
                .await;
            }
            let verb = if dry_run {
                "would be replayed"
            } else {
                "replayed"
            };
            println!("{} {verb}, {} refused", report.done, report.refused);
            if report.refused > 0 && report.done == 0 {
                bail!("nothing was replayed");
            }
        }
        DlqCommand::Discard { id, reason, by } => {
            replay::discard(&store, &id, &reason, &by).await?;
            println!("discarded {id}: {reason}");
        }
    }
    store.close().await;
    Ok(())
}

fn print_list(entries: &[dlq::DeadLetterSummary]) {
    if entries.is_empty() {
        println!("no dead letters match");
        return;
    }
    println!(
        "{:<36}  {:<20}  {:<6}  {:<20}  {:<22}  {:<9}  error",
        "id", "failed at", "age", "source", "service", "status"
    );
    for e in entries {
        println!(
            "{:<36}  {:<20}  {:<6}  {:<20}  {:<22}  {:<9}  {}: {}",
            e.id,
            e.failed_at,
            age(e.failed_at_ms),
            format!(
                "{}/{}@{}",
                e.source_topic,
                e.source_partition.unwrap_or(-1),
                e.source_offset.unwrap_or(-1)
            ),
            e.service
                .as_deref()
                .or(e.consumer_group.as_deref())
                .unwrap_or("?"),
            e.status,
            e.error_type.as_deref().unwrap_or("?"),
            e.error_message.as_deref().unwrap_or("")
        );
    }
}

fn show(d: &dlq::DeadLetterDetail) {
    let e = &d.summary;
    println!("dead letter {}  ({})", e.id, e.status);
    println!(
        "  event      {} {}  correlation {}",
        e.event_type.as_deref().unwrap_or("?"),
        e.event_id,
        e.correlation_id.as_deref().unwrap_or("-")
    );
    println!(
        "  from       {}/{}@{}  → {}",
        e.source_topic,
        e.source_partition.unwrap_or(-1),
        e.source_offset.unwrap_or(-1),
        e.dlq_topic,
    );
    println!(
        "  failed     {} in {} ({}) after {} attempts",
        e.failed_at,
        e.service.as_deref().unwrap_or("?"),
        e.consumer_group.as_deref().unwrap_or("?"),
        e.attempts.unwrap_or(0)
    );
    println!(
        "  error      {}: {}",
        e.error_type.as_deref().unwrap_or("?"),
        e.error_message.as_deref().unwrap_or("")
    );
    if let Some(by) = &e.status_by {
        println!(
            "  {} by {} at {}{}",
            e.status,
            by,
            e.status_changed_at.as_deref().unwrap_or_default(),
            e.status_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    println!("  headers");
    for h in &d.headers {
        let value = h
            .value
            .as_ref()
            .map_or("<null>".into(), dlq::Bytes::display);
        println!("    {}: {value}", h.name);
    }
    let shown = |b: &Option<dlq::Bytes>| b.as_ref().map_or("<none>".into(), dlq::Bytes::display);
    println!("  key        {}", shown(&d.key));
    println!("  payload    {}", shown(&d.payload));
    println!("  lineage");
    for l in &d.lineage {
        println!(
            "    {}  {:<22} {:<18} {}",
            dlq::rfc3339(l.occurred_at_ms),
            l.source_service.as_deref().unwrap_or("?"),
            l.event_type.as_deref().unwrap_or("?"),
            l.event_id
        );
    }
}

fn print_stats(s: &dlq::DlqStats) {
    let oldest = s
        .oldest_pending_age_seconds
        .map(|secs| age(chrono::Utc::now().timestamp_millis() - secs * 1000))
        .unwrap_or_else(|| "-".into());
    println!(
        "DLQ  pending {}   oldest {oldest}   last hour: +{} in, -{} out",
        s.pending, s.inflow_last_hour, s.outflow_last_hour
    );
    println!("\nby source topic");
    for (t, n) in &s.pending_by_source_topic {
        println!("  {t:<24} {n}");
    }
    println!("\nby error type");
    for (e, n) in &s.pending_by_error_type {
        println!("  {e:<32} {n}");
    }
    let trend = &s.hourly_inflow_last_24h;
    let max = trend.iter().copied().max().unwrap_or(0).max(1);
    let bars = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let line: String = trend
        .iter()
        .map(|n| if *n == 0 { ' ' } else { bars[(n * 7) / max] })
        .collect();
    println!("\ninflow, last 24 h (hourly, oldest left): |{line}|");
}

/// `[██████░░░░░░] 35/70  replayed 33, refused 2`, drawn on stderr
/// (indicatif hides it when stderr is not a terminal).
fn replay_progress(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(REPLAY_PROGRESS) {
        bar.set_style(style.progress_chars("█░"));
    }
    bar.set_message("replayed 0, refused 0");
    bar
}

const REPLAY_PROGRESS: &str = "[{bar:30}] {pos}/{len}  {msg}";

#[cfg(test)]
mod tests {
    use super::{REPLAY_PROGRESS, replay_progress};

    #[test]
    fn replay_progress_counts_entries() {
        assert!(indicatif::ProgressStyle::with_template(REPLAY_PROGRESS).is_ok());
        let bar = replay_progress(4);
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        bar.set_position(2);
        bar.set_message("replayed 1, refused 1");
        assert_eq!((bar.position(), bar.length()), (2, Some(4)));
        assert_eq!(bar.message(), "replayed 1, refused 1");
    }
}
