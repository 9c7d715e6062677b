//! `kausal lag`: per group and partition, committed offset, high watermark,
//! lag in records and in seconds, Burrow-style status.
//!
//! Groups come from `--group` or from the receipts in the lineage store
//! (ListGroups is unreliable on the embedded broker, docs/broker.md). Lag in
//! seconds is the age of the first unread record (its timestamp read from
//! the broker), so it is exact, defined on quiet topics and 0 when caught up.
//! Status needs history: a one-shot run samples `--samples` times
//! `--interval-ms` apart; `--watch` keeps a sliding window of 10 samples.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use kausal_core::lag::{GroupStatus, LagRules, LagWindow, OffsetSample, PartitionStatus};
use kausal_kafka::KafkaConfig;
use kausal_kafka::admin::Admin;
use kausal_store::Store;
use serde::Serialize;

use crate::Common;

#[derive(Debug, Clone, Args)]
pub struct LagArgs {
    /// Only this consumer group.
    #[arg(long)]
    pub group: Option<String>,
    /// Topics of --group (default: those in its receipts).
    #[arg(long)]
    pub topic: Vec<String>,
    /// Keep sampling and print a table every interval.
    #[arg(long)]
    pub watch: bool,
    /// Time between samples.
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Samples taken by a one-shot run before it evaluates.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Serialize)]
struct PartitionLag {
    group: String,
    topic: String,
    partition: i32,
    committed: Option<i64>,
    high_watermark: i64,
    lag: i64,
    lag_seconds: f64,
    status: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
struct GroupLag {
    group: String,
    status: &'static str,
    total_lag: i64,
    max_lag_seconds: f64,
    partitions: Vec<PartitionLag>,
}

pub async fn run(args: LagArgs) -> anyhow::Result<()> {
    let kafka = KafkaConfig::new(args.common.kafka_or_default());
    let admin = Admin::new(&kafka)?;
    let pairs = groups(&args).await?;
    if pairs.is_empty() {
        bail!(
            "no consumer groups known: pass --group (and --topic), or run the recorder so receipts name them"
        );
    }
    let mut windows: BTreeMap<(String, String, i32), LagWindow> = BTreeMap::new();
    let mut taken = 0usize;
    loop {
        let now = chrono::Utc::now().timestamp_millis();
        let mut rows = Vec::new();
        for (group, topic) in &pairs {
            let marks = admin
                .watermarks(topic)
                .with_context(|| format!("cannot read watermarks of {topic}"))?;
            let committed = admin
                .committed_offsets(group, topic)
                .with_context(|| format!("cannot read offsets of {group}"))?;
            for w in marks {
                let c = committed
                    .iter()
                    .find(|(p, _)| *p == w.partition)
                    .and_then(|(_, o)| *o);
                let position = c.unwrap_or(w.low);
                let lag = (w.high - position).max(0);
                let lag_seconds = if lag == 0 {
                    0.0
                } else {
                    admin
                        .timestamp_at(topic, w.partition, position)?
                        .map(|t| ((now - t).max(0)) as f64 / 1000.0)
                        .unwrap_or(0.0)
                };
                let window = windows
                    .entry((group.clone(), topic.clone(), w.partition))
                    .or_default();
                window.push(OffsetSample::new(position, w.high, now));
                rows.push(PartitionLag {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: w.partition,
                    committed: c,
                    high_watermark: w.high,
                    lag,
                    lag_seconds,
                    status: None,
                });
            }
        }
        taken += 1;
        let evaluate = args.watch || taken >= args.samples.max(1);
        if evaluate {
            for row in &mut rows {
                row.status = windows
                    .get(&(row.group.clone(), row.topic.clone(), row.partition))
                    .and_then(|w| w.evaluate(now, LagRules::default()))
                    .map(PartitionStatus::label);
            }
            print(&rows, &windows, now, args.json);
            if !args.watch {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
}

async fn groups(args: &LagArgs) -> anyhow::Result<Vec<(String, String)>> {
    if let Some(group) = &args.group
        && !args.topic.is_empty()
    {
        return Ok(args
            .topic
            .iter()
            .map(|t| (group.clone(), t.clone()))
            .collect());
    }
    let url = args.common.database_url();
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("cannot open the lineage store {url}"))?;
    let pairs = store.receipt_groups().await?;
    store.close().await;
    Ok(pairs
        .into_iter()
        .filter(|(g, _)| args.group.as_ref().is_none_or(|want| want == g))
        .collect())
}

fn print(
    rows: &[PartitionLag],
    windows: &BTreeMap<(String, String, i32), LagWindow>,
    now: i64,
    json: bool,
) {
    let mut by_group: BTreeMap<&str, Vec<&PartitionLag>> = BTreeMap::new();
    for r in rows {
        by_group.entry(&r.group).or_default().push(r);
    }
    let groups: Vec<GroupLag> = by_group
        .into_iter()
        .map(|(group, parts)| {
            let statuses = parts.iter().filter_map(|p| {
                windows
                    .get(&(p.group.clone(), p.topic.clone(), p.partition))
                    .and_then(|w| w.evaluate(now, LagRules::default()))
            });
            GroupLag {
                group: group.to_owned(),
                status: GroupStatus::from_partitions(statuses).label(),
                total_lag: parts.iter().map(|p| p.lag).sum(),
                max_lag_seconds: parts.iter().map(|p| p.lag_seconds).fold(0.0, f64::max),
                partitions: parts.into_iter().cloned().collect(),
            }
        })
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&groups).unwrap_or_default()
        );
        return;
    }
    for g in &groups {
        println!(
            "{}  {}  lag {} records, oldest unread {:.1} s",
            g.group,
            g.status.to_uppercase(),
            g.total_lag,
            g.max_lag_seconds
        );
        for p in &g.partitions {
            println!(
                "  {:<18} {:>3}  committed {:>8}  end {:>8}  lag {:>6}  {:>8.1} s  {}",
                p.topic,
                p.partition,
                p.committed
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                p.high_watermark,
                p.lag,
                p.lag_seconds,
                p.status.unwrap_or("?").to_uppercase()
            );
        }
    }
}
