//! `kausal replay reset`: move a stopped consumer group's committed offsets
//! to a time, the start, the end or an offset — a dry run first, like
//! `kafka-consumer-groups.sh --reset-offsets`, and never under a live group.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use kausal_kafka::admin::Admin;
use kausal_monitor::HeartbeatReader;
use serde::Serialize;

use crate::Common;
use crate::when::{format_ms, parse_time_ms};

#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    #[command(subcommand)]
    pub command: ReplayCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ReplayCommand {
    /// Reset a stopped group's committed offsets (dry run unless --execute).
    Reset(ResetArgs),
}

#[derive(Debug, Clone, Args)]
#[command(group(clap::ArgGroup::new("to").required(true).args(["to_datetime", "to_earliest", "to_latest", "to_offset"])))]
pub struct ResetArgs {
    #[arg(long)]
    pub group: String,
    #[arg(long)]
    pub topic: String,
    /// Only these partitions (default: all).
    #[arg(long)]
    pub partition: Vec<i32>,
    /// The first offset whose record is at or after this time (RFC 3339,
    /// UTC date-time, epoch ms, or an age such as 30m).
    #[arg(long)]
    pub to_datetime: Option<String>,
    #[arg(long)]
    pub to_earliest: bool,
    #[arg(long)]
    pub to_latest: bool,
    /// This offset in every chosen partition (clamped to what exists).
    #[arg(long)]
    pub to_offset: Option<i64>,
    /// Go on when liveness cannot be determined (a group that is not
    /// Kausal's, on a broker that does not answer DescribeGroups).
    #[arg(long)]
    pub assume_stopped: bool,
    /// Commit the new offsets. Without it nothing changes.
    #[arg(long)]
    pub execute: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Debug, Clone, Serialize)]
struct PlannedReset {
    partition: i32,
    current: Option<i64>,
    new: i64,
    low: i64,
    high: i64,
    /// Events the group will read from the new offset to the current end.
    to_read: i64,
    /// `current − new`: positive re-reads, negative skips.
    shift: Option<i64>,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    match args.command {
        ReplayCommand::Reset(args) => tokio::task::spawn_blocking(move || reset(&args)).await?,
    }
}

fn reset(args: &ResetArgs) -> anyhow::Result<()> {
    let kafka = args.common.kafka_config();
    let admin = Admin::new(&kafka)?;
    let mut heartbeats = HeartbeatReader::default();
    heartbeats
        .catch_up(&admin)
        .context("cannot read consumer heartbeats (kausal.consumers)")?;
    let membership = kausal_monitor::membership(
        &heartbeats,
        &admin,
        &args.group,
        chrono::Utc::now().timestamp_millis(),
    );
    match membership.alive {
        Some(true) => bail!(
            "group {} has {} live member(s) according to {}: {}.\nA live member would overwrite the reset with its next commit. Stop its consumers first (the service, or `kausal up`), then run this again.",
            args.group,
            membership.members.len(),
            membership.source.label(),
            membership.members.join(", ")
        ),
        Some(false) => {}
        None if args.assume_stopped => eprintln!(
            "warning: cannot tell whether group {} has live members ({}); going on because of --assume-stopped",
            args.group,
            membership.source.label()
        ),
        None => bail!(
            "cannot tell whether group {} has live members: it sent no Kausal heartbeats and the broker did not answer DescribeGroups (the embedded broker's SQLite engine cannot).\nIf you know its consumers are stopped, add --assume-stopped.",
            args.group
        ),
    }
    let marks = admin
        .watermarks(&args.topic)
        .with_context(|| format!("cannot read the partitions of {}", args.topic))?;
    let committed = admin.committed_offsets(&args.group, &args.topic)?;
    let by_time = match &args.to_datetime {
        Some(t) => {
            let ts = parse_time_ms(t, chrono::Utc::now().timestamp_millis())
                .map_err(anyhow::Error::msg)?;
            Some((ts, admin.offsets_for_timestamp(&args.topic, ts)?))
        }
        None => None,
    };
    let mut plan = Vec::new();
    for w in &marks {
        if !args.partition.is_empty() && !args.partition.contains(&w.partition) {
            continue;
        }
        let current = committed
            .iter()
            .find(|(p, _)| *p == w.partition)
            .and_then(|(_, o)| *o);
        let new = if args.to_earliest {
            w.low
        } else if args.to_latest {
            w.high
        } else if let Some(o) = args.to_offset {
            o.clamp(w.low, w.high)
        } else if let Some((_, offsets)) = &by_time {
            offsets
                .iter()
                .find(|(p, _)| *p == w.partition)
                .map(|(_, o)| *o)
                .unwrap_or(w.high)
        } else {
            unreachable!("clap requires one --to-*")
        };
        plan.push(PlannedReset {
            partition: w.partition,
            current,
            new,
            low: w.low,
            high: w.high,
            to_read: (w.high - new).max(0),
            shift: current.map(|c| c - new),
        });
    }
    if plan.is_empty() {
        bail!(
            "topic {} has none of the partitions {:?}",
            args.topic,
            args.partition
        );
    }
    print_plan(args, &plan, by_time.map(|(ts, _)| ts));
    if !args.execute {
        if !args.json {
            println!("\nDry run: nothing changed. Add --execute to commit these offsets.");
        }
        return Ok(());
    }
    let offsets: Vec<(i32, i64)> = plan.iter().map(|p| (p.partition, p.new)).collect();
    admin.commit_offsets(&args.group, &args.topic, &offsets)?;
    // Read back what the broker stored.
    let stored = admin.committed_offsets(&args.group, &args.topic)?;
    for p in &plan {
        let got = stored
            .iter()
            .find(|(q, _)| *q == p.partition)
            .and_then(|(_, o)| *o);
        if got != Some(p.new) {
            bail!(
                "partition {} of {} reads back {:?} after committing {}; the group may have restarted meanwhile",
                p.partition,
                args.topic,
                got,
                p.new
            );
        }
    }
    if !args.json {
        println!(
            "\nReset done: group {} will read {} event(s) of {} when it starts.",
            args.group,
            plan.iter().map(|p| p.to_read).sum::<i64>(),
            args.topic
        );
    }
    Ok(())
}

fn print_plan(args: &ResetArgs, plan: &[PlannedReset], ts: Option<i64>) {
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "group": args.group,
                "topic": args.topic,
                "to_datetime": ts.map(format_ms),
                "executed": args.execute,
                "partitions": plan,
            })
        );
        return;
    }
    let target = match ts {
        Some(ts) => format!("first event at or after {}", format_ms(ts)),
        None if args.to_earliest => "earliest".to_owned(),
        None if args.to_latest => "latest".to_owned(),
        None => format!("offset {}", args.to_offset.unwrap_or_default()),
    };
    println!(
        "Reset group {} on {} to {}:",
        args.group, args.topic, target
    );
    println!(
        "  {:>9}  {:>10}  {:>10}  {:>10}  {:>12}",
        "PARTITION", "CURRENT", "NEW", "END", "WILL READ"
    );
    for p in plan {
        println!(
            "  {:>9}  {:>10}  {:>10}  {:>10}  {:>12}",
            p.partition,
            p.current
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
            p.new,
            p.high,
            p.to_read
        );
    }
}
