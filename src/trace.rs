//! `kausal trace <order-id | correlation-id | event-id>`: the causal chain of
//! one business operation, who received each event, what failed, the dead
//! letters.

use anyhow::{Context, bail};
use clap::Args;
use kausal_lineage::{TraceReport, build_report};
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

#[derive(Debug, Serialize)]
struct TraceDocument<'a> {
    query: &'a str,
    matched_by: &'static str,
    reports: Vec<TraceReport>,
}

pub async fn run(args: TraceArgs) -> anyhow::Result<()> {
    let url = args.common.database_url();
    let store = Store::connect(&url)
        .await
        .with_context(|| format!("cannot open the lineage store {url}"))?;
    let matches = kausal_console::query::resolve(&store, &args.id).await?;
    let matched_by = matches.first().map_or("nothing", |m| m.kind.label());
    let correlations: Vec<String> = matches.into_iter().map(|m| m.correlation_id).collect();
    if correlations.is_empty() {
        bail!(
            "nothing is recorded for {:?} in {url}: check the id, and that the lineage recorder runs \
             (`kausal up` runs it; alone: `kausal service recorder`)",
            args.id
        );
    }
    let mut reports = Vec::new();
    for correlation in &correlations {
        let chain = store.chain(correlation).await?;
        let receipts = store.receipts_for_correlation(correlation).await?;
        let dead = store.dead_letters_for_correlation(correlation).await?;
        reports.push(build_report(correlation, &chain, &receipts, &dead));
    }
    if args.json {
        let doc = TraceDocument {
            query: &args.id,
            matched_by,
            reports,
        };
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        for (i, report) in reports.iter().enumerate() {
            if i > 0 {
                println!();
            }
            print!("{}", report.render());
        }
    }
    store.close().await;
    Ok(())
}
