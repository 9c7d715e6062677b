//! Topics and their records as the console shows them (`/topics`,
//! `/topics/{name}`): every topic with its partitions, its record count and
//! the groups reading it; one page of a topic's records from a position
//! (`position`: pure), each record decoded for reading (`view`: pure).
//!
//! Reads go to Kafka through the group-less reader of
//! [`kausal_kafka::admin::Admin`] (no group joined, nothing committed: a
//! GET changes nothing), built per request from the console's
//! [`KafkaConfig`] (so TLS and SASL settings apply), inside
//! `spawn_blocking` (librdkafka blocks) and under a deadline. Every read is
//! bounded: [`PAGE`] records, [`MAX_VALUE_BYTES`] of each key, value and
//! header value, [`MAX_TOPICS`] topics.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use kausal_kafka::KafkaConfig;
use kausal_kafka::admin::{Admin, AdminError, Watermarks};
use kausal_kafka::browse::read_records;
use kausal_store::{LineageEvent, Store};

use crate::lag::{LagBoard, LagDocument};

mod position;
mod view;

pub use position::{Cursors, Order, PAGE, Position, RecordParams, RecordQuery};
pub use view::{HeaderLine, HeaderLink, RecordView, Shown};

/// The most bytes of a key, a value or a header value read into a page.
pub const MAX_VALUE_BYTES: usize = 4096;
/// How long a page waits for Kafka before it says Kafka does not answer.
pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(8);
/// The most topics `/topics` counts the records of.
pub const MAX_TOPICS: usize = 200;
/// How long a partition may yield nothing before its read stops.
const IDLE: Duration = Duration::from_secs(2);
/// Kafka's own topics (`__consumer_offsets`, `__transaction_state`).
const INTERNAL_PREFIX: &str = "__";
/// Kafka's limit on a topic name's length.
const MAX_TOPIC_LEN: usize = 249;

/// Why a topic could not be shown.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("topic {0:?} does not exist")]
    UnknownTopic(String),
    /// The query names something the topic does not have (a partition).
    #[error("{0}")]
    BadPosition(String),
    #[error("Kafka did not answer within {} s", .0.as_secs())]
    TimedOut(Duration),
    #[error("Kafka refused or failed the read: {0}")]
    Kafka(String),
    #[error(transparent)]
    Store(#[from] kausal_store::StoreError),
}

impl From<AdminError> for TopicError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::UnknownTopic(t) => Self::UnknownTopic(t),
            e => Self::Kafka(e.to_string()),
        }
    }
}

/// `name` when it can be a Kafka topic's name (1 to 249 of `a-z A-Z 0-9 .
/// _ -`), else the reason.
pub fn checked_topic(name: &str) -> Result<&str, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_TOPIC_LEN || !name.chars().all(valid) {
        return Err(format!(
            "{:?} is not a topic name: 1 to {MAX_TOPIC_LEN} letters, digits, '.', '_' or '-'",
            shorten_for_error(name)
        ));
    }
    Ok(name)
}

/// At most 40 characters of what the user sent, for an error message.
fn shorten_for_error(text: &str) -> String {
    text.chars().take(40).collect()
}

/// What a topic is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TopicKind {
    /// Events of the business.
    Business,
    /// `<topic>.dlq`: dead letters.
    DeadLetter,
    /// `kausal.*`: receipts and consumer heartbeats.
    Kausal,
}

impl TopicKind {
    pub fn of(name: &str) -> Self {
        if kausal_core::dlq::is_dlq_topic(name) {
            Self::DeadLetter
        } else if name.starts_with(kausal_kafka::INTERNAL_TOPIC_PREFIX) {
            Self::Kausal
        } else {
            Self::Business
        }
    }
}

/// A consumer group reading a topic, with its lag there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOnTopic {
    pub group: String,
    /// Records behind, summed over the topic's partitions.
    pub lag: i64,
}

/// One line of `/topics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRow {
    pub name: String,
    pub kind: TopicKind,
    pub partitions: usize,
    /// High minus low watermark, summed: the records still in the log (an
    /// upper bound on a compacted topic).
    pub records: i64,
    /// The groups the lag monitor saw reading it.
    pub groups: Vec<GroupOnTopic>,
}

/// What `/topics` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicList {
    /// Where the console reads from.
    pub bootstrap: String,
    /// Kind, then name.
    pub rows: Vec<TopicRow>,
    /// Kafka's internal topics (`__…`), not shown.
    pub internal_hidden: usize,
    /// Topics past [`MAX_TOPICS`], not shown.
    pub cut: usize,
    /// Why the groups may be missing (the lag monitor's note).
    pub groups_note: Option<String>,
}

/// The rows of `marks` (each topic's watermarks), with the groups `lag`
/// saw on each topic.
pub fn topic_rows(marks: Vec<(String, Vec<Watermarks>)>, lag: &LagDocument) -> Vec<TopicRow> {
    let mut groups: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
    for g in &lag.groups {
        for p in &g.lag.partitions {
            *groups
                .entry(p.key.topic.as_str())
                .or_default()
                .entry(g.lag.group.as_str())
                .or_default() += p.lag;
        }
    }
    let mut rows: Vec<TopicRow> = marks
        .into_iter()
        .map(|(name, marks)| TopicRow {
            kind: TopicKind::of(&name),
            partitions: marks.len(),
            records: marks.iter().map(|w| (w.high - w.low).max(0)).sum(),
            groups: groups
                .get(name.as_str())
                .map(|gs| {
                    gs.iter()
                        .map(|(group, lag)| GroupOnTopic {
                            group: (*group).to_owned(),
                            lag: *lag,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            name,
        })
        .collect();
    rows.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    rows
}

/// Every topic of the cluster but Kafka's internal ones, with watermarks
/// and groups (from `lag`, the lag monitor's board).
pub async fn topic_list(
    kafka: &KafkaConfig,
    lag: &LagBoard,
    timeout: Duration,
) -> Result<TopicList, TopicError> {
    let config = kafka.clone();
    let (marks, internal_hidden, cut) = blocking(timeout, move |deadline| {
        let admin = Admin::new(&config)?;
        let names = admin.topics()?;
        let (internal, visible): (Vec<String>, Vec<String>) = names
            .into_iter()
            .partition(|n| n.starts_with(INTERNAL_PREFIX));
        let cut = visible.len().saturating_sub(MAX_TOPICS);
        let mut marks = Vec::new();
        for name in visible.into_iter().take(MAX_TOPICS) {
            in_time(deadline, timeout)?;
            match admin.watermarks(&name) {
                Ok(m) => marks.push((name, m)),
                // Deleted since the listing: not a topic any more.
                Err(AdminError::UnknownTopic(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok((marks, internal.len(), cut))
    })
    .await?;
    let doc = lag.document(None);
    Ok(TopicList {
        bootstrap: kafka.bootstrap_servers.clone(),
        rows: topic_rows(marks, &doc),
        internal_hidden,
        cut,
        groups_note: doc.note,
    })
}

/// A search by key: what the lineage store had, and what Kafka gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLookup {
    pub key: String,
    /// Events recorded with this key on this topic (and partition); at
    /// most [`PAGE`] of them are read.
    pub recorded: usize,
    /// Recorded records Kafka no longer has (retention, compaction) or did
    /// not give in time: `(partition, offset)`.
    pub missing: Vec<(i32, i64)>,
    /// Other topics with events of this key.
    pub elsewhere: Vec<String>,
}

/// One page of a topic's records.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordPage {
    pub topic: String,
    /// Every partition of the topic.
    pub partitions: Vec<Watermarks>,
    pub query: RecordQuery,
    pub order: Order,
    pub records: Vec<RecordView>,
    /// Where the older and the newer page start; `None`: nothing there.
    pub older: Option<Cursors>,
    pub newer: Option<Cursors>,
    /// Set for a search by key.
    pub keyed: Option<KeyLookup>,
}

/// The page of `topic` that `query` asks for. A key is looked up in the
/// lineage store (`store`) first; everything else is read from Kafka.
pub async fn read_page(
    store: &Store,
    kafka: &KafkaConfig,
    topic: &str,
    query: RecordQuery,
    timeout: Duration,
) -> Result<RecordPage, TopicError> {
    let recorded = match &query.position {
        Position::Key(key) => Some(store.events_by_key(key).await?),
        _ => None,
    };
    let config = kafka.clone();
    let topic = topic.to_owned();
    blocking(timeout, move |deadline| {
        let admin = Admin::new(&config)?;
        if !admin.topics()?.contains(&topic) {
            return Err(TopicError::UnknownTopic(topic));
        }
        let partitions = admin.watermarks(&topic)?;
        let shown =
            position::chosen(&partitions, query.partition).map_err(TopicError::BadPosition)?;
        in_time(deadline, timeout)?;
        if let (Position::Key(key), Some(events)) = (&query.position, recorded) {
            let (records, keyed) = read_keyed(&admin, &topic, &shown, key, events)?;
            return Ok(RecordPage {
                topic,
                partitions,
                query,
                order: Order::NewestFirst,
                records,
                older: None,
                newer: None,
                keyed: Some(keyed),
            });
        }
        let position = match &query.position {
            Position::Since { at_ms, .. } => Position::From(Cursors(
                admin
                    .offsets_for_timestamp(&topic, *at_ms)?
                    .into_iter()
                    .collect(),
            )),
            other => other.clone(),
        };
        in_time(deadline, timeout)?;
        let window = position::Window::of(&position, &shown);
        let read = read_records(&admin, &topic, &window.ranges(), MAX_VALUE_BYTES, IDLE)?;
        let paged = window.page(read);
        Ok(RecordPage {
            topic,
            partitions,
            query,
            order: window.order,
            records: paged.records.iter().map(RecordView::of).collect(),
            older: paged.older,
            newer: paged.newer,
            keyed: None,
        })
    })
    .await
}

/// The records `events` (the lineage store's, with `key`) locate on
/// `topic`'s partitions `shown`, newest first, read from Kafka.
fn read_keyed(
    admin: &Admin,
    topic: &str,
    shown: &[Watermarks],
    key: &str,
    events: Vec<LineageEvent>,
) -> Result<(Vec<RecordView>, KeyLookup), TopicError> {
    let (located, elsewhere) = located(topic, shown, events);
    let recorded = located.len();
    let wanted: Vec<(i32, i64)> = located.into_iter().take(PAGE).collect();
    // Only what the log still holds: a read below the low watermark would
    // wait for nothing.
    let ranges: Vec<(i32, i64, i64)> = wanted
        .iter()
        .filter(|(p, o)| {
            shown
                .iter()
                .any(|w| w.partition == *p && (w.low..w.high).contains(o))
        })
        .map(|(p, o)| (*p, *o, o + 1))
        .collect();
    let mut read = read_records(admin, topic, &ranges, MAX_VALUE_BYTES, IDLE)?;
    read.sort_by_key(|r| {
        (
            std::cmp::Reverse(r.timestamp_ms),
            r.partition,
            std::cmp::Reverse(r.offset),
        )
    });
    let missing = wanted
        .into_iter()
        .filter(|(p, o)| !read.iter().any(|r| r.partition == *p && r.offset == *o))
        .collect();
    Ok((
        read.iter().map(RecordView::of).collect(),
        KeyLookup {
            key: key.to_owned(),
            recorded,
            missing,
            elsewhere,
        },
    ))
}

/// Where `events` sit on `topic`'s partitions `shown` (newest first, each
/// position once), and the other topics they name.
fn located(
    topic: &str,
    shown: &[Watermarks],
    mut events: Vec<LineageEvent>,
) -> (Vec<(i32, i64)>, Vec<String>) {
    let elsewhere: BTreeSet<String> = events
        .iter()
        .filter(|e| e.topic != topic)
        .map(|e| e.topic.clone())
        .collect();
    events.retain(|e| e.topic == topic && shown.iter().any(|w| w.partition == e.partition));
    events.sort_by_key(|e| std::cmp::Reverse((e.occurred_at_ms, e.offset)));
    let mut seen = BTreeSet::new();
    let located = events
        .into_iter()
        .map(|e| (e.partition, e.offset))
        .filter(|at| seen.insert(*at))
        .collect();
    (located, elsewhere.into_iter().collect())
}

/// Runs `work` (blocking Kafka calls) off the runtime, with the deadline it
/// must check between calls; [`TopicError::TimedOut`] after `timeout`
/// whatever it is doing (a call under way finishes on its own thread).
async fn blocking<T: Send + 'static>(
    timeout: Duration,
    work: impl FnOnce(Instant) -> Result<T, TopicError> + Send + 'static,
) -> Result<T, TopicError> {
    let deadline = Instant::now() + timeout;
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || work(deadline))).await {
        Err(_) => Err(TopicError::TimedOut(timeout)),
        Ok(Err(e)) => Err(TopicError::Kafka(format!("the read stopped: {e}"))),
        Ok(Ok(answer)) => answer,
    }
}

fn in_time(deadline: Instant, timeout: Duration) -> Result<(), TopicError> {
    if Instant::now() < deadline {
        Ok(())
    } else {
        Err(TopicError::TimedOut(timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::position::tests::marks;
    use super::*;
    use kausal_monitor::GroupLag;

    #[test]
    fn topic_names_are_checked() {
        assert_eq!(checked_topic("orders.dlq"), Ok("orders.dlq"));
        assert_eq!(checked_topic("kausal.receipts"), Ok("kausal.receipts"));
        for bad in ["", "a/b", "ord ers", "é", &"x".repeat(250)] {
            let reason = checked_topic(bad).expect_err(bad);
            assert!(reason.contains("is not a topic name"), "{reason}");
        }
    }

    #[test]
    fn topics_are_grouped_by_kind_and_carry_their_groups() {
        let board = LagBoard::watched();
        let partition = |topic: &str, p: i32, lag: i64| kausal_monitor::PartitionLag {
            key: kausal_monitor::PartitionKey {
                group: "payment-service".into(),
                topic: topic.into(),
                partition: p,
            },
            committed: Some(0),
            high_watermark: lag,
            lag,
            lag_seconds: 0.0,
            status: None,
            retention_ms: None,
            retention_ratio: None,
            retention_danger: false,
            group_alive: None,
        };
        board.record(
            vec![GroupLag {
                group: "payment-service".into(),
                status: kausal_core::lag::GroupStatus::Ok,
                total_lag: 5,
                max_lag_seconds: 0.0,
                partitions: vec![partition("orders", 0, 2), partition("orders", 1, 3)],
            }],
            0,
        );
        let rows = topic_rows(
            vec![
                ("kausal.receipts".into(), vec![marks(0, 0, 9)]),
                ("orders.dlq".into(), vec![marks(0, 0, 1)]),
                ("payments".into(), vec![marks(0, 0, 0)]),
                ("orders".into(), vec![marks(0, 5, 15), marks(1, 0, 4)]),
            ],
            &board.document(None),
        );
        let names: Vec<(&str, TopicKind)> =
            rows.iter().map(|r| (r.name.as_str(), r.kind)).collect();
        assert_eq!(
            names,
            vec![
                ("orders", TopicKind::Business),
                ("payments", TopicKind::Business),
                ("orders.dlq", TopicKind::DeadLetter),
                ("kausal.receipts", TopicKind::Kausal),
            ]
        );
        assert_eq!((rows[0].partitions, rows[0].records), (2, 14));
        assert_eq!(
            rows[0].groups,
            vec![GroupOnTopic {
                group: "payment-service".into(),
                lag: 5
            }]
        );
        assert!(rows[1].groups.is_empty());
    }

    fn event(topic: &str, partition: i32, offset: i64, at: i64) -> LineageEvent {
        LineageEvent {
            event_id: format!("{topic}-{partition}-{offset}"),
            event_type: None,
            event_version: None,
            correlation_id: "c".into(),
            causation_id: None,
            source_service: None,
            topic: topic.into(),
            partition,
            offset,
            key: Some("ord-1".into()),
            trace_id: None,
            span_id: None,
            occurred_at_ms: at,
            recorded_at_ms: at,
        }
    }

    #[test]
    fn a_key_locates_its_records_on_this_topic_newest_first() {
        let events = vec![
            event("orders", 0, 3, 10),
            event("payments", 1, 7, 20),
            event("orders", 2, 9, 30),
            event("orders", 2, 9, 30),
            event("orders", 1, 4, 40),
        ];
        let (at, elsewhere) = located("orders", &[marks(0, 0, 9), marks(2, 0, 20)], events);
        assert_eq!(at, vec![(2, 9), (0, 3)], "partition 1 is not shown");
        assert_eq!(elsewhere, vec!["payments".to_owned()]);
    }

    /// A Kafka that does not answer: the page says so within the timeout
    /// instead of hanging.
    #[test]
    fn a_kafka_that_does_not_answer_times_out() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        // Nothing listens on port 1.
        let kafka = KafkaConfig::new("127.0.0.1:1");
        let started = Instant::now();
        let e = runtime
            .block_on(topic_list(
                &kafka,
                &LagBoard::unwatched(),
                Duration::from_millis(1500),
            ))
            .expect_err("no Kafka there");
        assert!(
            matches!(e, TopicError::TimedOut(_) | TopicError::Kafka(_)),
            "{e}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // The read under way ends on its own thread; do not wait for it.
        runtime.shutdown_background();
    }
}
