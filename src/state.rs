//! `kausal state order <id> --at <time>`: what an order looked like at a
//! point in time, rebuilt from Kafka by a side-effect-free replay — a
//! group-less reader (no group join, no commits, nothing produced) folds
//! the order's events up to the time with the order service's own fold.
//!
//! The records are always read from Kafka. Where they are is looked up in
//! the lineage store (the order id is the events' key), so only the order's
//! own records are fetched; `--scan` reads every business topic instead
//! (no store needed, but slow on a big log: the embedded broker serves
//! about a hundred records per second per partition to a fresh reader).

use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use kausal_contracts::topics;
use kausal_kafka::admin::Admin;
use kausal_kafka::{IncomingEvent, KafkaConfig};
use kausal_store::OrderView;
use serde::Serialize;

use crate::Common;
use crate::when::{format_ms, parse_time_ms};

#[derive(Debug, Clone, Args)]
pub struct StateArgs {
    #[command(subcommand)]
    pub entity: Entity,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Entity {
    /// An order's state (status, amount, payment, reservation, shipment).
    Order(OrderStateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct OrderStateArgs {
    /// The order id (the Kafka key of its events).
    pub id: String,
    /// The point in time (RFC 3339, UTC date-time, epoch ms, or an age such
    /// as 10m); default now.
    #[arg(long)]
    pub at: Option<String>,
    /// Scan every business topic instead of locating the order's records
    /// through the lineage store.
    #[arg(long)]
    pub scan: bool,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

/// One event that went into the state.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: String,
    pub timestamp_ms: i64,
    pub event_type: String,
    pub event_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct StateAt {
    pub order_id: String,
    pub at: String,
    /// `None`: the order did not exist yet at that time.
    pub state: Option<OrderView>,
    pub events: Vec<Applied>,
    /// Events of the order after `at`, not applied.
    pub later_events: usize,
    /// `lineage-index` or `scan`.
    pub located_by: &'static str,
}

pub async fn run(args: StateArgs) -> anyhow::Result<()> {
    let Entity::Order(args) = args.entity;
    let now = chrono::Utc::now().timestamp_millis();
    let at_ms = match &args.at {
        Some(t) => parse_time_ms(t, now).map_err(anyhow::Error::msg)?,
        None => now,
    };
    let kafka = args.common.kafka_config();
    let locations = if args.scan {
        None
    } else {
        let url = args.common.database_url();
        let store = kausal_store::Store::connect(&url).await.with_context(|| {
            format!(
                "cannot open the lineage store {url} to locate the order's records (or pass --scan)"
            )
        })?;
        let events = store.events_by_key(&args.id).await?;
        store.close().await;
        if events.is_empty() {
            eprintln!(
                "note: the lineage store has no events keyed {} (unknown order, or the recorder is behind: kausal lag --group {}); scanning Kafka instead",
                args.id,
                kausal_lineage::recorder::GROUP
            );
            None
        } else {
            Some(
                events
                    .into_iter()
                    .map(|e| (e.topic, e.partition, e.offset))
                    .collect::<Vec<_>>(),
            )
        }
    };
    let id = args.id.clone();
    let result = tokio::task::spawn_blocking(move || {
        order_state_at(&kafka, &id, at_ms, locations.as_deref())
    })
    .await??;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&result)?);
        return Ok(());
    }
    print(&result);
    Ok(())
}

/// Folds the events of `order_id` with a record timestamp at or before
/// `at_ms`. `locations` are the order's records as `(topic, partition,
/// offset)`; `None` scans every topic the order's life touches.
pub fn order_state_at(
    kafka: &KafkaConfig,
    order_id: &str,
    at_ms: i64,
    locations: Option<&[(String, i32, i64)]>,
) -> anyhow::Result<StateAt> {
    let admin = Admin::new(kafka)?;
    let mut events: Vec<(IncomingEvent, bool)> = Vec::new();
    for topic in topics::ALL {
        let ranges: Vec<(i32, i64, i64)> = match locations {
            Some(found) => found
                .iter()
                .filter(|(t, _, _)| t == topic)
                .map(|(_, p, o)| (*p, *o, *o + 1))
                .collect(),
            None => match admin.watermarks(topic) {
                Ok(marks) => marks.iter().map(|w| (w.partition, w.low, w.high)).collect(),
                Err(kausal_kafka::admin::AdminError::UnknownTopic(_)) => continue,
                Err(e) => return Err(e).with_context(|| format!("cannot read {topic}")),
            },
        };
        admin.read_range(topic, &ranges, Duration::from_secs(5), |m| {
            // The key is the order id on every topic.
            let event = IncomingEvent::from_message(m);
            if event.key.as_deref() != Some(order_id.as_bytes()) {
                return;
            }
            let ours = event
                .event_type()
                .and_then(|t| {
                    kausal_order::view::order_id_of(t, event.payload.as_deref().unwrap_or_default())
                        .ok()
                        .flatten()
                })
                .is_some_and(|id| id == order_id);
            if ours {
                let applies = event.timestamp_ms.is_some_and(|t| t <= at_ms);
                events.push((event, applies));
            }
        })?;
    }
    events.sort_by_key(|(e, _)| e.timestamp_ms);
    let mut state: Option<OrderView> = None;
    let mut applied = Vec::new();
    let mut later = 0;
    for (event, applies) in &events {
        if !applies {
            later += 1;
            continue;
        }
        let event_type = event.event_type().unwrap_or_default().to_owned();
        let ts = event.timestamp_ms.unwrap_or_default();
        state = kausal_order::view::apply(
            state,
            &event_type,
            event.payload.as_deref().unwrap_or_default(),
            event.correlation_id().as_str(),
            ts,
        )
        .map_err(|e| anyhow::anyhow!("event {} cannot be folded: {e}", event.event_id()))?;
        applied.push(Applied {
            topic: event.topic.clone(),
            partition: event.partition,
            offset: event.offset,
            timestamp: format_ms(ts),
            timestamp_ms: ts,
            event_type,
            event_id: event.event_id().to_string(),
        });
    }
    Ok(StateAt {
        order_id: order_id.to_owned(),
        at: format_ms(at_ms),
        state,
        events: applied,
        later_events: later,
        located_by: if locations.is_some() {
            "lineage-index"
        } else {
            "scan"
        },
    })
}

fn print(r: &StateAt) {
    println!(
        "order {} as of {} (records read from Kafka, located by {})",
        r.order_id, r.at, r.located_by
    );
    match &r.state {
        None => println!("  did not exist yet ({} later event(s))", r.later_events),
        Some(v) => {
            let opt = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
            println!("  status        {}", v.status);
            println!(
                "  amount        {} {}",
                v.amount
                    .map(|a| format!("{a:.2}"))
                    .unwrap_or_else(|| "-".into()),
                opt(&v.currency)
            );
            println!("  payment       {}", opt(&v.payment_id));
            if let Some(reason) = &v.failure_reason {
                println!("  declined      {reason}");
            }
            println!("  reservation   {}", opt(&v.reservation_id));
            println!("  shipment      {}", opt(&v.shipment_id));
            println!("  notified      {}", if v.notified { "yes" } else { "no" });
            println!("  correlation   {}", opt(&v.correlation_id));
            println!("  events applied:");
            for e in &r.events {
                println!(
                    "    {}  {:<18} {}/{}@{}",
                    e.timestamp, e.event_type, e.topic, e.partition, e.offset
                );
            }
            if r.later_events > 0 {
                println!("  ({} later event(s) not applied)", r.later_events);
            }
        }
    }
}
