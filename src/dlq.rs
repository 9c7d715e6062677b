//! `kausal dlq`: the dead-letter ledger. Stats, list, show, replay, discard.

use std::collections::BTreeMap;

use std::io::{IsTerminal, Write};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kausal_kafka::EventProducer;
use kausal_lineage::replay::{self, DEFAULT_REPLAY_CAP};
use kausal_store::{DeadLetterEntry, DeadLetterFilter, Store};
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

fn since_ms(since: &Option<String>) -> anyhow::Result<Option<i64>> {
    let Some(text) = since else { return Ok(None) };
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(Some(t.timestamp_millis()));
    }
    let (num, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = num.parse().with_context(|| {
        format!("--since {text:?}: use RFC 3339 or a duration like 30m, 2h, 7d")
    })?;
    let ms = match unit {
        "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        "d" => n * 86_400_000,
        _ => bail!("--since {text:?}: use RFC 3339 or a duration like 30m, 2h, 7d"),
    };
    Ok(Some(chrono::Utc::now().timestamp_millis() - ms))
}

fn filter_of(
    f: &FilterArgs,
    status: Option<String>,
    limit: Option<i64>,
) -> anyhow::Result<DeadLetterFilter> {
    Ok(DeadLetterFilter {
        source_topic: f.source_topic.clone(),
        error_type: f.error_type.clone(),
        status,
        correlation_id: f.correlation_id.clone(),
        since_ms: since_ms(&f.since)?,
        limit,
    })
}

fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
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

pub async fn run(args: DlqArgs) -> anyhow::Result<()> {
    let url = args.common.database_url();
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("cannot open the DLQ ledger {url}"))?;
    match args.command {
        DlqCommand::Stats { json } => stats(&store, json).await?,
        DlqCommand::List {
            filter,
            status,
            limit,
            json,
        } => {
            let status = (status != "all").then_some(status);
            let entries = store
                .dead_letters(&filter_of(&filter, status, Some(limit))?)
                .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &entries.iter().map(summary_json).collect::<Vec<_>>()
                    )?
                );
            } else if entries.is_empty() {
                println!("no dead letters match");
            } else {
                println!(
                    "{:<36}  {:<20}  {:<6}  {:<20}  {:<22}  {:<9}  error",
                    "id", "failed at", "age", "source", "service", "status"
                );
                for e in &entries {
                    println!(
                        "{:<36}  {:<20}  {:<6}  {:<20}  {:<22}  {:<9}  {}: {}",
                        e.dlq_id,
                        time(e.failed_at_ms),
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
        }
        DlqCommand::Show { id, json } => {
            let entry = store
                .dead_letter(&id)
                .await?
                .with_context(|| format!("no dead letter {id} (see `kausal dlq list`)"))?;
            let chain = match &entry.correlation_id {
                Some(c) => store.chain(c).await?,
                None => Vec::new(),
            };
            if json {
                let mut doc = summary_json(&entry);
                doc["headers"] = serde_json::from_str(&entry.headers_json).unwrap_or_default();
                doc["payload"] = payload_json(entry.payload.as_deref());
                doc["lineage"] = serde_json::to_value(&chain)?;
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                show(&entry, &chain);
            }
        }
        DlqCommand::Replay {
            ids,
            all_matching,
            filter,
            max_replays,
            by,
        } => {
            let targets: Vec<String> = if all_matching {
                if !ids.is_empty() {
                    bail!("give entry ids or --all-matching with filters, not both");
                }
                store
                    .dead_letters(&filter_of(&filter, Some("pending".into()), None)?)
                    .await?
                    .into_iter()
                    .map(|e| e.dlq_id)
                    .collect()
            } else {
                if ids.is_empty() {
                    bail!(
                        "name the entries to replay (see `kausal dlq list`) or use --all-matching with filters"
                    );
                }
                ids
            };
            let kafka = args.common.kafka_config();
            let producer = EventProducer::new(&kafka, "kausal-dlq-replay", Metrics::new())?;
            let total = targets.len();
            // On a terminal a bulk replay shows one bar updated in place;
            // otherwise (and for single entries) one line per entry.
            let bar = total > 1 && std::io::stdout().is_terminal();
            let (mut ok, mut refused) = (0usize, 0usize);
            for (i, id) in targets.iter().enumerate() {
                match replay::replay(&store, &producer, id, max_replays, &by).await {
                    Ok(r) => {
                        ok += 1;
                        if !bar {
                            println!(
                                "[{}/{total}] replayed {id} → {}/{}@{} (replay {}, trace {})",
                                i + 1,
                                r.topic,
                                r.partition,
                                r.offset,
                                r.replay_count,
                                r.trace_id
                            );
                        }
                    }
                    Err(e) => {
                        refused += 1;
                        if bar {
                            eprintln!("\r\x1b[2K{id}: {e}");
                        } else {
                            eprintln!("[{}/{total}] {e}", i + 1);
                        }
                    }
                }
                if bar {
                    print!("\r\x1b[2K{}", progress_bar(i + 1, total, ok, refused));
                    let _ = std::io::stdout().flush();
                }
            }
            if bar {
                println!();
            }
            producer.flush(std::time::Duration::from_secs(10));
            println!("{ok} replayed, {refused} refused");
            if refused > 0 && ok == 0 {
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

fn summary_json(e: &DeadLetterEntry) -> serde_json::Value {
    serde_json::json!({
        "id": e.dlq_id,
        "status": e.status,
        "event_id": e.event_id,
        "event_type": e.event_type,
        "correlation_id": e.correlation_id,
        "source_topic": e.source_topic,
        "source_partition": e.source_partition,
        "source_offset": e.source_offset,
        "dlq_topic": e.dlq_topic,
        "consumer_group": e.consumer_group,
        "service": e.service,
        "error_type": e.error_type,
        "error_message": e.error_message,
        "attempts": e.attempts,
        "failed_at": time(e.failed_at_ms),
        "replay_count": e.replay_count,
        "status_changed_at": e.status_changed_at_ms.map(time),
        "status_by": e.status_by,
        "status_reason": e.status_reason,
    })
}

fn payload_json(payload: Option<&[u8]>) -> serde_json::Value {
    match payload {
        None => serde_json::Value::Null,
        Some(bytes) => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(v) => v,
            Err(_) => serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()),
        },
    }
}

fn show(e: &DeadLetterEntry, chain: &[kausal_store::LineageEvent]) {
    println!("dead letter {}  ({})", e.dlq_id, e.status);
    println!(
        "  event      {} {}  correlation {}",
        e.event_type.as_deref().unwrap_or("?"),
        e.event_id,
        e.correlation_id.as_deref().unwrap_or("-")
    );
    println!(
        "  from       {}/{}@{}  → {}/{}@{}",
        e.source_topic,
        e.source_partition.unwrap_or(-1),
        e.source_offset.unwrap_or(-1),
        e.dlq_topic,
        e.dlq_partition,
        e.dlq_offset
    );
    println!(
        "  failed     {} in {} ({}) after {} attempts",
        time(e.failed_at_ms),
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
            e.status_changed_at_ms.map(time).unwrap_or_default(),
            e.status_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    println!("  headers");
    if let Ok(serde_json::Value::Array(hs)) =
        serde_json::from_str::<serde_json::Value>(&e.headers_json)
    {
        use base64::Engine;
        for h in hs {
            let name = h[0].as_str().unwrap_or("?");
            let value = h[1]
                .as_str()
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .map(|v| {
                    String::from_utf8(v.clone())
                        .unwrap_or_else(|_| format!("<{} bytes, not UTF-8>", v.len()))
                })
                .unwrap_or_else(|| "<null>".into());
            println!("    {name}: {value}");
        }
    }
    println!("  payload    {}", payload_json(e.payload.as_deref()));
    println!("  lineage");
    for l in chain {
        println!(
            "    {}  {:<22} {:<18} {}",
            time(l.occurred_at_ms),
            l.source_service.as_deref().unwrap_or("?"),
            l.event_type.as_deref().unwrap_or("?"),
            l.event_id
        );
    }
}

async fn stats(store: &Store, json: bool) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp_millis();
    let counts = store.dead_letter_counts().await?;
    let pending: Vec<_> = counts.iter().filter(|c| c.status == "pending").collect();
    let total: i64 = pending.iter().map(|c| c.count).sum();
    let oldest = pending.iter().map(|c| c.oldest_failed_at_ms).min();
    let failures = store
        .dead_letter_failures_since(now - 24 * 3_600_000)
        .await?;
    let inflow_hour = failures.iter().filter(|t| **t >= now - 3_600_000).count();
    let outflow_hour = store.dead_letter_outflow_since(now - 3_600_000).await?;
    let mut by_topic: BTreeMap<&str, i64> = BTreeMap::new();
    let mut by_error: BTreeMap<&str, i64> = BTreeMap::new();
    for c in &pending {
        *by_topic.entry(&c.source_topic).or_default() += c.count;
        *by_error.entry(&c.error_type).or_default() += c.count;
    }
    let mut trend = [0usize; 24];
    for t in &failures {
        let hours_ago = ((now - t) / 3_600_000).clamp(0, 23) as usize;
        trend[23 - hours_ago] += 1;
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "pending": total,
                "oldest_pending_failed_at": oldest.map(time),
                "inflow_last_hour": inflow_hour,
                "outflow_last_hour": outflow_hour,
                "pending_by_source_topic": by_topic,
                "pending_by_error_type": by_error,
                "hourly_inflow_last_24h": trend,
            }))?
        );
        return Ok(());
    }
    println!(
        "DLQ  pending {total}   oldest {}   last hour: +{inflow_hour} in, -{outflow_hour} out",
        oldest.map(age).unwrap_or_else(|| "-".into())
    );
    println!("\nby source topic");
    for (t, n) in &by_topic {
        println!("  {t:<24} {n}");
    }
    println!("\nby error type");
    for (e, n) in &by_error {
        println!("  {e:<32} {n}");
    }
    let max = trend.iter().copied().max().unwrap_or(0).max(1);
    let bars = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let line: String = trend
        .iter()
        .map(|n| if *n == 0 { ' ' } else { bars[(n * 7) / max] })
        .collect();
    println!("\ninflow, last 24 h (hourly, oldest left): |{line}|");
    Ok(())
}

/// `[██████░░░░░░]  35/70  replayed 33, refused 2`.
fn progress_bar(done: usize, total: usize, ok: usize, refused: usize) -> String {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH)
        .checked_div(total)
        .unwrap_or(WIDTH)
        .min(WIDTH);
    format!(
        "[{}{}] {done:>w$}/{total}  replayed {ok}, refused {refused}",
        "█".repeat(filled),
        "░".repeat(WIDTH - filled),
        w = total.to_string().len()
    )
}

#[cfg(test)]
mod tests {
    use super::progress_bar;

    #[test]
    fn progress_bar_fills_in_proportion() {
        assert_eq!(
            progress_bar(0, 4, 0, 0),
            format!("[{}] 0/4  replayed 0, refused 0", "░".repeat(30))
        );
        assert_eq!(
            progress_bar(2, 4, 1, 1),
            format!(
                "[{}{}] 2/4  replayed 1, refused 1",
                "█".repeat(15),
                "░".repeat(15)
            )
        );
        assert!(progress_bar(70, 70, 70, 0).starts_with(&format!("[{}]", "█".repeat(30))));
        assert!(progress_bar(0, 0, 0, 0).contains("0/0"));
    }
}
