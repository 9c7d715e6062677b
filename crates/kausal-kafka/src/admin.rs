//! Admin queries that give the same answers on the embedded broker and on
//! real Kafka. Where tansu 0.6 answers wrongly (DESIGN §9, `docs/broker.md`)
//! the answer is checked against the records themselves.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::config::KafkaConfig;
use crate::group::{GroupDescription, GroupError};

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Kafka admin request failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error("cannot create topic {topic}: {code:?}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error("topic {0} does not exist")]
    UnknownTopic(String),
}

pub type Result<T, E = AdminError> = std::result::Result<T, E>;

/// A topic to create.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// Replicas per partition; [`TopicSpec::BROKER_DEFAULT`] leaves it to
    /// the cluster's `default.replication.factor` (KIP-464).
    pub replication: i32,
}

impl TopicSpec {
    /// The cluster's own `default.replication.factor`: 3 on a production
    /// cluster with `min.insync.replicas=2` (a topic of one replica there
    /// would refuse every `acks=all` write), 1 on a single node.
    pub const BROKER_DEFAULT: i32 = -1;

    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication: Self::BROKER_DEFAULT,
        }
    }
}

/// Low and high watermark of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub partition: i32,
    pub low: i64,
    pub high: i64,
}

/// A consumer group as listed by the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub name: String,
    pub state: String,
    pub members: usize,
}

/// Admin client plus a group-less consumer for metadata and reads.
pub struct Admin {
    config: KafkaConfig,
    admin: AdminClient<DefaultClientContext>,
    reader: BaseConsumer,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("bootstrap", &self.config.bootstrap_servers)
            .finish()
    }
}

impl Admin {
    pub fn new(config: &KafkaConfig) -> Result<Self> {
        let admin = config.client_config().create()?;
        let reader = config
            .client_config()
            .set("group.id", "kausal-admin-reader")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "20")
            .set("enable.partition.eof", "false")
            .create()?;
        Ok(Self {
            config: config.clone(),
            admin,
            reader,
        })
    }

    /// Creates the topics that do not exist yet; existing ones are left as
    /// they are.
    pub async fn ensure_topics(&self, topics: &[TopicSpec]) -> Result<()> {
        // Only ask for missing topics: creating an existing one is harmless
        // for Kafka but makes some brokers log errors.
        let existing = self.topics().unwrap_or_default();
        // Each name once: Kafka refuses a CreateTopics request that names a
        // topic twice (INVALID_REQUEST for that topic; tansu accepts it).
        let mut missing: Vec<&TopicSpec> = Vec::new();
        for t in topics {
            if !existing.contains(&t.name) && !missing.iter().any(|m| m.name == t.name) {
                missing.push(t);
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .map(|t| {
                NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(t.replication),
                )
            })
            .collect();
        let created = self
            .admin
            .create_topics(&new, &AdminOptions::new().operation_timeout(Some(TIMEOUT)))
            .await;
        let failure = match created {
            Ok(results) => results.into_iter().find_map(|r| match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
                Err((topic, code)) => Some(AdminError::CreateTopic { topic, code }),
            }),
            Err(e) => Some(e.into()),
        };
        if let Some(error) = failure {
            // Another process may have created the same topics at the same
            // moment (services starting together): the embedded broker then
            // fails the request. Only topics still missing are an error.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = self.topics().unwrap_or_default();
            if missing.iter().any(|t| !now.contains(&t.name)) {
                return Err(error);
            }
        }
        // Metadata propagates asynchronously; wait until every topic is seen.
        for t in topics {
            for _ in 0..50 {
                if self
                    .partitions(&t.name)
                    .map(|p| !p.is_empty())
                    .unwrap_or(false)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// Partition ids of a topic.
    pub fn partitions(&self, topic: &str) -> Result<Vec<i32>> {
        let md = self.reader.fetch_metadata(Some(topic), TIMEOUT)?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .ok_or_else(|| AdminError::UnknownTopic(topic.to_owned()))?;
        if t.error().is_some() {
            return Err(AdminError::UnknownTopic(topic.to_owned()));
        }
        let mut ids: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// All topic names.
    pub fn topics(&self) -> Result<Vec<String>> {
        let md = self.reader.fetch_metadata(None, TIMEOUT)?;
        let mut names: Vec<String> = md.topics().iter().map(|t| t.name().to_owned()).collect();
        names.sort();
        Ok(names)
    }

    pub fn watermarks(&self, topic: &str) -> Result<Vec<Watermarks>> {
        self.partitions(topic)?
            .into_iter()
            .map(|p| {
                let (low, high) = self.reader.fetch_watermarks(topic, p, TIMEOUT)?;
                Ok(Watermarks {
                    partition: p,
                    low,
                    high,
                })
            })
            .collect()
    }

    /// A consumer speaking for `group` that never joins it (OffsetFetch and
    /// OffsetCommit only).
    fn group_client(&self, group: &str) -> Result<BaseConsumer> {
        Ok(self
            .config
            .client_config()
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()?)
    }

    /// Committed offsets of `group` on `topic` (OffsetFetch), `None` where the
    /// group has committed nothing.
    pub fn committed_offsets(&self, group: &str, topic: &str) -> Result<Vec<(i32, Option<i64>)>> {
        let consumer = self.group_client(group)?;
        let mut tpl = TopicPartitionList::new();
        for p in self.partitions(topic)? {
            tpl.add_partition(topic, p);
        }
        Ok(offsets_of(&consumer.committed_offsets(tpl, TIMEOUT)?))
    }

    /// Sets `group`'s committed offsets on `topic` (OffsetCommit outside
    /// the group protocol, as `kafka-consumer-groups.sh --reset-offsets`
    /// does). Callers check first that the group has no live members: a live
    /// member would overwrite the reset with its next commit.
    pub fn commit_offsets(&self, group: &str, topic: &str, offsets: &[(i32, i64)]) -> Result<()> {
        let consumer = self.group_client(group)?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in offsets {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*o))?;
        }
        consumer.commit(&tpl, CommitMode::Sync)?;
        Ok(())
    }

    /// Members and state of `group`, asked of its coordinator through this
    /// admin client's connections ([`crate::group`]). Blocking.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        Ok(crate::group::describe_group_with(
            self.admin.inner(),
            group,
            TIMEOUT,
        )?)
    }

    /// The topic's `retention.ms`, `None` when unlimited (-1) or not reported.
    pub async fn retention_ms(&self, topic: &str) -> Result<Option<i64>> {
        let resource = ResourceSpecifier::Topic(topic);
        let results = self
            .admin
            .describe_configs(
                [&resource],
                &AdminOptions::new().request_timeout(Some(TIMEOUT)),
            )
            .await?;
        for result in results {
            let Ok(config) = result else { continue };
            if let Some(value) = config.get("retention.ms").and_then(|e| e.value.as_deref()) {
                return Ok(value.trim().parse::<i64>().ok().filter(|ms| *ms > 0));
            }
        }
        Ok(None)
    }

    /// Groups known to the broker (ListGroups + DescribeGroups).
    pub fn groups(&self) -> Result<Vec<GroupInfo>> {
        let list = self.reader.fetch_group_list(None, TIMEOUT)?;
        Ok(list
            .groups()
            .iter()
            .map(|g| GroupInfo {
                name: g.name().to_owned(),
                state: g.state().to_owned(),
                members: g.members().len(),
            })
            .collect())
    }

    /// The broker's own answer to "first offset at or after `ts_ms`" per
    /// partition, unverified (`None` means the log end).
    pub fn broker_offsets_for_timestamp(
        &self,
        topic: &str,
        ts_ms: i64,
    ) -> Result<Vec<(i32, Option<i64>)>> {
        let mut tpl = TopicPartitionList::new();
        for p in self.partitions(topic)? {
            tpl.add_partition_offset(topic, p, Offset::Offset(ts_ms))?;
        }
        Ok(offsets_of(&self.reader.offsets_for_times(tpl, TIMEOUT)?))
    }

    /// The first offset whose record timestamp is at or after `ts_ms`, per
    /// partition; the high watermark when there is none. The broker's answer
    /// is verified by reading the records around it, and replaced by a
    /// binary search over record timestamps when it is wrong (tansu 0.6
    /// answers 0 instead of the log end).
    pub fn offsets_for_timestamp(&self, topic: &str, ts_ms: i64) -> Result<Vec<(i32, i64)>> {
        let claimed = self.broker_offsets_for_timestamp(topic, ts_ms)?;
        let marks = self.watermarks(topic)?;
        let mut out = Vec::with_capacity(claimed.len());
        for (partition, offset) in claimed {
            let Some(w) = marks.iter().find(|w| w.partition == partition) else {
                continue;
            };
            let verified = match offset {
                Some(o) if self.is_first_at_or_after(topic, partition, o, ts_ms, w)? => o,
                None if w.high == w.low
                    || self
                        .timestamp_at(topic, partition, w.high - 1)?
                        .is_some_and(|t| t < ts_ms) =>
                {
                    w.high
                }
                _ => self.search_timestamp(topic, partition, ts_ms, w)?,
            };
            out.push((partition, verified));
        }
        Ok(out)
    }

    fn is_first_at_or_after(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        ts_ms: i64,
        w: &Watermarks,
    ) -> Result<bool> {
        if offset == w.high {
            let last = if w.high > w.low {
                self.timestamp_at(topic, partition, w.high - 1)?
            } else {
                None
            };
            return Ok(last.is_none_or(|t| t < ts_ms));
        }
        if offset < w.low || offset > w.high {
            return Ok(false);
        }
        let here = self.timestamp_at(topic, partition, offset)?;
        if here.is_none_or(|t| t < ts_ms) {
            return Ok(false);
        }
        if offset == w.low {
            return Ok(true);
        }
        Ok(self
            .timestamp_at(topic, partition, offset - 1)?
            .is_some_and(|t| t < ts_ms))
    }

    /// Binary search for the first record with timestamp ≥ `ts_ms`, assuming
    /// timestamps grow with offsets (CreateTime from one producer clock).
    fn search_timestamp(
        &self,
        topic: &str,
        partition: i32,
        ts_ms: i64,
        w: &Watermarks,
    ) -> Result<i64> {
        let (mut lo, mut hi) = (w.low, w.high);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.timestamp_at(topic, partition, mid)? {
                Some(t) if t >= ts_ms => hi = mid,
                _ => lo = mid + 1,
            }
        }
        Ok(lo)
    }

    /// Reads `[from, to)` of each `(partition, from, to)` of `topic` with a
    /// group-less assignment: no group join, no commits, nothing produced.
    /// Calls `visit` for every record, in offset order per partition. Gives
    /// up on a partition that yields nothing for `idle` (records deleted by
    /// retention meanwhile). Returns the records read.
    ///
    /// One partition at a time: with several assigned at once the embedded
    /// broker starved some of them until the idle timeout.
    pub fn read_range(
        &self,
        topic: &str,
        ranges: &[(i32, i64, i64)],
        idle: Duration,
        mut visit: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
    ) -> Result<u64> {
        let mut read = 0;
        for &(partition, from, to) in ranges {
            if from >= to {
                continue;
            }
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
            self.reader.assign(&tpl)?;
            let mut last_progress = std::time::Instant::now();
            let mut next = from;
            while next < to && last_progress.elapsed() < idle {
                match self.reader.poll(Duration::from_millis(100)) {
                    Some(Ok(m)) if m.topic() == topic && m.partition() == partition => {
                        if m.offset() >= to {
                            break;
                        }
                        if m.offset() >= next {
                            next = m.offset() + 1;
                            read += 1;
                            last_progress = std::time::Instant::now();
                            visit(&m);
                        }
                    }
                    Some(Ok(_)) | None => {}
                    Some(Err(e)) => return Err(e.into()),
                }
            }
        }
        self.reader.unassign()?;
        Ok(read)
    }

    /// The timestamp of the record at `offset`, if it can be read.
    pub fn timestamp_at(&self, topic: &str, partition: i32, offset: i64) -> Result<Option<i64>> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        self.reader.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            match self.reader.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.partition() == partition && m.topic() == topic => {
                    if m.offset() == offset {
                        return Ok(m.timestamp().to_millis());
                    }
                    if m.offset() > offset {
                        // The record at `offset` is gone (compaction): the
                        // next one stands for it.
                        return Ok(m.timestamp().to_millis());
                    }
                }
                Some(Ok(_)) | None => {}
                Some(Err(e)) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}

/// (partition, concrete offset) pairs; `None` for the logical ones (end,
/// invalid, stored).
fn offsets_of(tpl: &TopicPartitionList) -> Vec<(i32, Option<i64>)> {
    tpl.elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            };
            (e.partition(), offset)
        })
        .collect()
}
