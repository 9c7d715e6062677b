//! `kausal lag`: per group and partition, committed offset, high watermark,
//! lag in records and in seconds, Burrow-style status, retention danger.
//!
//! The same [`LagMonitor`] runs inside `kausal up` (as the `monitor`
//! service) and exports the gauges. Groups come from `--group`/`--topic` or
//! from the receipts in the lineage store (ListGroups is unreliable on the
//! embedded broker, docs/broker.md). Status needs history: a one-shot run
//! samples `--samples` times `--interval-ms` apart; `--watch` keeps going
//! with a sliding window of `--window` samples.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use kausal_core::lag::LagRules;
use kausal_kafka::admin::Admin;
use kausal_monitor::{GroupLag, LagMonitor, MonitorConfig};
use kausal_store::Store;

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
    /// Samples in the sliding window (Burrow's default is 10).
    #[arg(long, default_value_t = kausal_core::lag::DEFAULT_WINDOW_SAMPLES)]
    pub window: usize,
    /// Lag in records that still counts as keeping up.
    #[arg(long, default_value_t = 0)]
    pub allowed_lag: i64,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

pub async fn run(args: LagArgs) -> anyhow::Result<()> {
    let kafka = args.common.kafka_config();
    let admin = Admin::new(&kafka)?;
    let explicit = match &args.group {
        Some(group) => args
            .topic
            .iter()
            .map(|t| (group.clone(), t.clone()))
            .collect(),
        None => Vec::new(),
    };
    let config = MonitorConfig {
        targets: explicit.clone(),
        window_samples: args.window,
        rules: LagRules {
            allowed_lag: args.allowed_lag,
        },
    };
    let mut monitor = LagMonitor::new(admin, config);
    if explicit.is_empty() {
        let url = args.common.database_url();
        let store = Store::connect(&url)
            .await
            .with_context(|| format!("cannot open the lineage store {url}"))?;
        monitor = monitor.with_store(store);
    }
    let wanted = |group: &str| args.group.as_deref().is_none_or(|want| want == group);
    if !monitor.targets().await?.iter().any(|(g, _)| wanted(g)) {
        bail!(
            "no consumer groups known: pass --group and --topic, or run the recorder so receipts name them"
        );
    }
    let mut taken = 0usize;
    loop {
        let report: Vec<GroupLag> = monitor
            .tick()
            .await?
            .into_iter()
            .filter(|g| wanted(&g.group))
            .collect();
        taken += 1;
        if args.watch || taken >= args.samples.max(1) {
            print(&report, args.json);
            if !args.watch {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
    }
}

fn print(groups: &[GroupLag], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(groups).unwrap_or_default()
        );
        return;
    }
    for g in groups {
        println!(
            "{}  {}  lag {} records, oldest unread {:.1} s",
            g.group,
            g.status.burrow_name(),
            g.total_lag,
            g.max_lag_seconds
        );
        for p in &g.partitions {
            let danger = if p.retention_danger {
                format!(
                    "  RETENTION DANGER ({:.0}% of retention)",
                    p.retention_ratio.unwrap_or(0.0) * 100.0
                )
            } else {
                String::new()
            };
            println!(
                "  {:<18} {:>3}  committed {:>8}  end {:>8}  lag {:>6}  {:>8.1} s  {}{}",
                p.key.topic,
                p.key.partition,
                p.committed
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                p.high_watermark,
                p.lag,
                p.lag_seconds,
                p.status.map(|s| s.burrow_name()).unwrap_or("?"),
                danger
            );
        }
    }
}
