//! The recorder: its own consumer group over every topic (business topics,
//! dead-letter topics — Kausal's `.dlq` and Spring Kafka's `-dlt`/`.DLT`,
//! see [`crate::record::DEAD_LETTER_SUFFIXES`] — and `kausal.receipts`; new
//! topics are picked up by pattern),
//! writing rows in batches and committing offsets only after the batch is
//! durable. If the database is down it keeps the batch, stops committing,
//! backs off and retries: nothing is lost, and re-reading creates no
//! duplicate rows.

use std::collections::HashMap;
use std::time::Duration;

use kausal_kafka::KafkaConfig;
use kausal_store::{DeadLetterEntry, LineageEvent, Receipt, Store};
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::record::{Record, Row, classify};

/// The recorder's consumer group.
pub const GROUP: &str = "kausal-lineage-recorder";
/// Every topic that does not start with `_` (Kafka's internal topics do).
/// It takes in dead-letter topics of every dialect (`orders.dlq`,
/// `orders-dlt`, `orders.DLT`); [`classify`] tells them apart by name.
pub const TOPIC_PATTERN: &str = "^[^_].*";

#[derive(Debug, Clone)]
pub struct RecorderConfig {
    pub group: String,
    /// A librdkafka regex (leading `^`) or a comma-free list of topics.
    pub topics: Vec<String>,
    /// Most records per database transaction.
    pub max_batch: usize,
    /// Longest wait to fill a batch.
    pub max_wait: Duration,
    /// Metadata refresh, so new topics are picked up.
    pub topic_refresh: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        Self {
            group: GROUP.to_owned(),
            topics: vec![TOPIC_PATTERN.to_owned()],
            max_batch: 1000,
            max_wait: Duration::from_millis(200),
            topic_refresh: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("cannot create the recorder's consumer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Counts of a recorder run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecorderSummary {
    pub records: u64,
    pub new_events: u64,
    pub new_receipts: u64,
    pub new_dead_letters: u64,
    pub skipped: u64,
    pub store_failures: u64,
}

#[derive(Debug)]
pub struct Recorder {
    kafka: KafkaConfig,
    store: Store,
    config: RecorderConfig,
}

impl Recorder {
    pub fn new(kafka: KafkaConfig, store: Store, config: RecorderConfig) -> Self {
        Self {
            kafka,
            store,
            config,
        }
    }

    /// Records until `shutdown`, then commits what is durable and returns.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<RecorderSummary, RecorderError> {
        let consumer: StreamConsumer = self
            .kafka
            .consumer_config(&self.config.group, "kausal-lineage-recorder")
            .set(
                "topic.metadata.refresh.interval.ms",
                self.config.topic_refresh.as_millis().to_string(),
            )
            .create()?;
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        tracing::info!(group = %self.config.group, topics = ?self.config.topics, "recorder started");
        let mut summary = RecorderSummary::default();
        'outer: loop {
            // Fill a batch.
            let mut batch: Vec<Record> = Vec::new();
            let deadline = tokio::time::Instant::now() + self.config.max_wait;
            while batch.len() < self.config.max_batch {
                let next = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => None,
                    r = tokio::time::timeout_at(deadline, consumer.recv()) => Some(r),
                };
                match next {
                    None => {
                        if batch.is_empty() {
                            break 'outer;
                        }
                        break;
                    }
                    Some(Err(_)) => break,
                    Some(Ok(Err(e))) => {
                        tracing::debug!(error = %e, "recorder consumer error");
                        break;
                    }
                    Some(Ok(Ok(m))) => batch.push(Record {
                        topic: m.topic().to_owned(),
                        partition: m.partition(),
                        offset: m.offset(),
                        timestamp_ms: m.timestamp().to_millis(),
                        key: m.key().map(<[u8]>::to_vec),
                        value: m.payload().map(<[u8]>::to_vec),
                        headers: m
                            .headers()
                            .map(|hs| {
                                hs.iter()
                                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    }),
                }
            }
            if batch.is_empty() {
                continue;
            }
            if !self.write(&batch, &mut summary, &shutdown).await {
                // Shut down while the database was unavailable: nothing of
                // this batch is committed, so it is read again next time.
                break;
            }
            let mut next: HashMap<(String, i32), i64> = HashMap::new();
            for r in &batch {
                let e = next
                    .entry((r.topic.clone(), r.partition))
                    .or_insert(r.offset + 1);
                *e = (*e).max(r.offset + 1);
            }
            let mut tpl = TopicPartitionList::new();
            for ((topic, partition), offset) in &next {
                let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
            }
            if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                // The rows are durable and idempotent: a failed commit only
                // means they are read and skipped again.
                tracing::warn!(error = %e, "recorder commit failed");
            }
            summary.records += batch.len() as u64;
        }
        consumer.unsubscribe();
        tracing::info!(?summary, "recorder stopped");
        Ok(summary)
    }

    /// Writes a batch, retrying with backoff while the database fails.
    async fn write(
        &self,
        batch: &[Record],
        summary: &mut RecorderSummary,
        shutdown: &CancellationToken,
    ) -> bool {
        let now = chrono::Utc::now().timestamp_millis();
        let (mut events, mut receipts, mut dead): (
            Vec<LineageEvent>,
            Vec<Receipt>,
            Vec<DeadLetterEntry>,
        ) = Default::default();
        for record in batch {
            match classify(record, now) {
                Row::Event(e) => events.push(e),
                Row::Receipt(r) => receipts.push(r),
                Row::DeadLetter(d) => dead.push(d),
                Row::Ignored => {}
                Row::Skipped { reason } => {
                    summary.skipped += 1;
                    tracing::warn!(topic = %record.topic, partition = record.partition, offset = record.offset, reason = %reason, "record not recorded");
                }
            }
        }
        let mut delay = Duration::from_millis(200);
        let mut failed = false;
        loop {
            match self.store.record_batch(&events, &receipts, &dead).await {
                Ok(counts) => {
                    summary.new_events += counts.events;
                    summary.new_receipts += counts.receipts;
                    summary.new_dead_letters += counts.dead_letters;
                    if failed {
                        tracing::info!("database reachable again; recording resumed");
                    }
                    return true;
                }
                Err(e) => {
                    failed = true;
                    summary.store_failures += 1;
                    tracing::error!(error = %e, retryInMs = delay.as_millis() as u64, rows = batch.len(), "cannot write lineage rows; holding the batch and not committing");
                    tokio::select! {
                        () = shutdown.cancelled() => return false,
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
