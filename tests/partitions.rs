//! Per-partition workers and a poll that never stops (issue 15): a slow
//! partition holds up only itself; a rebalance under load moves only the
//! partitions that change owner and loses nothing; a database outage longer
//! than `max.poll.interval.ms` evicts no one — the stalled partitions are
//! paused, and the heartbeats say so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kausal_core::headers as h;
use kausal_kafka::heartbeat::{HEARTBEATS_TOPIC, Heartbeat};
use kausal_kafka::runtime::Outcome;
use kausal_kafka::{
    CorrelationPolicy, Emitter, Handler, HandlerError, IncomingEvent, KafkaConfig, RetryPolicy,
};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::harness::{CuttableProxy, Engine, TestBroker, eventually, unique};
use crate::runtime::{Running, start_runtime};

/// One handled record, as the handler saw it.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    partition: i32,
    at: Instant,
}

/// Records what it handles; sleeps `slow.1` per record of partition
/// `slow.0`.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    slow: Option<(i32, Duration)>,
}

impl Recorder {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    fn count(&self, partition: impl Fn(i32) -> bool) -> usize {
        self.seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| partition(s.partition))
            .count()
    }
}

impl Handler for Recorder {
    async fn handle(&self, event: &IncomingEvent, _out: &mut Emitter) -> Result<(), HandlerError> {
        if let Some((partition, delay)) = self.slow
            && event.partition == partition
        {
            tokio::time::sleep(delay).await;
        }
        self.seen.lock().expect("lock").push(Seen {
            id: event.headers.event_id.to_string(),
            partition: event.partition,
            at: Instant::now(),
        });
        Ok(())
    }
}

/// Sends record `id` to `partition` of `topic` with the contract headers.
async fn send_to(producer: &FutureProducer, topic: &str, partition: i32, id: &str) {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: h::EVENT_ID,
            value: Some(id.as_bytes()),
        })
        .insert(Header {
            key: h::CORRELATION_ID,
            value: Some(id.as_bytes()),
        })
        .insert(Header {
            key: h::EVENT_TYPE,
            value: Some("Work.Item"),
        });
    let record = FutureRecord::to(topic)
        .partition(partition)
        .key(id)
        .payload("{}")
        .headers(headers);
    producer
        .send(record, Duration::from_secs(30))
        .await
        .expect("record sent");
}

/// A member of `group` running `handler` (the runtime tests' harness).
fn start(
    kafka: &KafkaConfig,
    group: &str,
    topic: &str,
    handler: Recorder,
    store: Option<kausal_store::Store>,
) -> Running {
    start_runtime(
        kafka,
        "partition-test",
        group,
        &[topic],
        handler,
        RetryPolicy::default(),
        CorrelationPolicy::Adopt,
        store,
    )
}

/// Event ids a member processed (settled), in order.
fn processed(outcomes: &[(IncomingEvent, Outcome)]) -> Vec<String> {
    outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Processed { .. }))
        .map(|(e, _)| e.headers.event_id.to_string())
        .collect()
}

/// The committed offset of each partition of `topic` for `group`.
fn committed(b: &TestBroker, group: &str, topic: &str) -> BTreeMap<i32, i64> {
    b.admin()
        .committed_offsets(group, topic)
        .expect("committed offsets")
        .into_iter()
        .map(|(p, o)| (p, o.unwrap_or(0)))
        .collect()
}

on_brokers!(a_slow_partition_holds_up_only_itself: Sqlite);
async fn a_slow_partition_holds_up_only_itself(engine: Engine) {
    const SLOW: usize = 20;
    const FAST_EACH: usize = 100;
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("work", 4), ("work.dlq", 4)]).await;
    let plain = b.plain_producer();
    for i in 0..SLOW {
        send_to(&plain, "work", 0, &format!("slow-{i}")).await;
    }
    for partition in 1..4 {
        for i in 0..FAST_EACH {
            send_to(&plain, "work", partition, &format!("fast-{partition}-{i}")).await;
        }
    }
    // Partition 0's handler takes 2 s a record: 40 s for its 20.
    let handler = Recorder {
        slow: Some((0, Duration::from_secs(2))),
        ..Recorder::default()
    };
    let group = format!("work-{}", unique());
    let started = Instant::now();
    let member = start(&b.kafka, &group, "work", handler.clone(), None);
    let fast = 3 * FAST_EACH;
    assert!(
        eventually(Duration::from_secs(120), || handler.count(|p| p != 0)
            >= fast)
        .await,
        "the fast partitions were handled: {} of {fast}",
        handler.count(|p| p != 0)
    );
    let fast_done = started.elapsed();
    let slow_then = handler.count(|p| p == 0);
    println!(
        "the other partitions' {fast} records took {fast_done:.1?}; partition 0 had {slow_then} of {SLOW} by then"
    );
    // One record at a time for the whole member would have put every fast
    // record behind the slow ones fetched with them.
    assert!(
        slow_then < SLOW / 2,
        "the fast partitions did not wait for the slow one: {slow_then} of its {SLOW} were handled first"
    );
    // And their offsets are committed while partition 0 still works.
    assert!(
        eventually(Duration::from_secs(20), || {
            let c = committed(&b, &group, "work");
            (1..4).all(|p| c.get(&p) == Some(&(FAST_EACH as i64)))
        })
        .await,
        "the fast partitions are committed: {:?}",
        committed(&b, &group, "work")
    );
    assert!(
        handler.count(|p| p == 0) < SLOW,
        "partition 0 was still being handled"
    );
    let (summary, _) = member.stop().await;
    assert_eq!(summary.processed as usize, handler.seen().len());
    let c = committed(&b, &group, "work");
    assert_eq!(
        c.get(&0).copied().unwrap_or(0),
        handler.count(|p| p == 0) as i64,
        "partition 0 committed exactly what it handled"
    );
}

on_brokers!(a_rebalance_under_load_moves_only_what_changes_and_loses_nothing: Sqlite);
async fn a_rebalance_under_load_moves_only_what_changes_and_loses_nothing(engine: Engine) {
    const PARTITIONS: i32 = 6;
    const RECORDS: usize = 1_200;
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("moving", PARTITIONS), ("moving.dlq", PARTITIONS)])
        .await;
    let store_url = format!("sqlite://{}", b.dir.path().join("guard.db").display());
    let store = || async {
        kausal_store::Store::connect(&store_url)
            .await
            .expect("store")
    };
    let group = format!("moving-{}", unique());
    // Handlers take a few ms, so that records are in flight when
    // partitions move.
    let handler_a = Recorder {
        slow: None,
        ..Recorder::default()
    };
    let first = start(
        &b.kafka,
        &group,
        "moving",
        handler_a.clone(),
        Some(store().await),
    );
    // Records keep coming through the whole test: ~100/s.
    let plain = b.plain_producer();
    let producing = tokio::spawn(async move {
        for i in 0..RECORDS {
            send_to(
                &plain,
                "moving",
                (i % PARTITIONS as usize) as i32,
                &format!("m-{i}"),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    assert!(
        eventually(Duration::from_secs(60), || processed(&first.outcomes())
            .len()
            >= 150)
        .await,
        "the first member handles"
    );
    let joined = Instant::now();
    let handler_b = Recorder::default();
    let second = start(
        &b.kafka,
        &group,
        "moving",
        handler_b.clone(),
        Some(store().await),
    );
    assert!(
        eventually(Duration::from_secs(60), || processed(&second.outcomes())
            .len()
            >= 100)
        .await,
        "the second member got partitions and handles them"
    );
    let (second_summary, second_outcomes) = second.stop().await;
    let left = Instant::now();
    producing.await.expect("producer task");
    let all = |a: &[(IncomingEvent, Outcome)], b: &[(IncomingEvent, Outcome)]| -> Vec<String> {
        let mut ids = processed(a);
        ids.extend(processed(b));
        ids
    };
    assert!(
        eventually(Duration::from_secs(120), || {
            let mut ids: BTreeSet<String> = processed(&first.outcomes()).into_iter().collect();
            ids.extend(all(&second_outcomes, &[]));
            ids.len() >= RECORDS
        })
        .await,
        "every record handled: {} + {} of {RECORDS}",
        processed(&first.outcomes()).len(),
        all(&second_outcomes, &[]).len()
    );
    let (first_summary, first_outcomes) = first.stop().await;
    let processed = {
        let mut ids = handler_a.seen();
        ids.extend(handler_b.seen());
        ids
    };
    let mut per_id: HashMap<&str, usize> = HashMap::new();
    for s in &processed {
        *per_id.entry(s.id.as_str()).or_default() += 1;
    }
    assert_eq!(per_id.len(), RECORDS, "nothing lost");
    // A revoked partition is drained first: the record in its handler
    // finishes and settles, its offset is committed, and only then does the
    // next owner start — so no record reaches a handler twice.
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    println!("first member: {first_summary:?}; second: {second_summary:?}");
    assert!(twice.is_empty(), "handled more than once: {twice:?}");
    let mut settled: HashMap<String, usize> = HashMap::new();
    for id in all(&first_outcomes, &second_outcomes) {
        *settled.entry(id).or_default() += 1;
    }
    assert!(
        settled.values().all(|n| *n == 1),
        "each record processed once"
    );
    assert!(
        first_summary.partitions_revoked < PARTITIONS as u64,
        "the first member kept partitions through both rebalances (cooperative): {} revoked",
        first_summary.partitions_revoked
    );
    // The partitions the first member kept were handled while the second
    // was in the group.
    let during: BTreeSet<i32> = handler_a
        .seen()
        .iter()
        .filter(|s| s.at > joined && s.at < left)
        .map(|s| s.partition)
        .collect();
    assert!(
        !during.is_empty(),
        "the first member kept handling while the second joined and left"
    );
    assert!(second_summary.processed > 0);
}

on_brokers!(a_database_outage_longer_than_the_poll_interval_evicts_no_one: Sqlite);
async fn a_database_outage_longer_than_the_poll_interval_evicts_no_one(engine: Engine) {
    const BEFORE: usize = 30;
    const DURING: usize = 30;
    // The idempotency store on PostgreSQL, reached through a proxy that
    // can cut it.
    let base = std::env::var(kausal_store::testing::DATABASE_URL_ENV).expect(
        "KAUSAL_TEST_DATABASE_URL names the test PostgreSQL (scripts/prepare.sh starts one and sets it)",
    );
    let db = kausal_store::testing::databases()
        .await
        .expect("test databases")
        .into_iter()
        .find(|d| d.label == "postgres")
        .expect("a PostgreSQL test database");
    let server = url::Url::parse(&base).expect("database URL");
    let upstream = format!(
        "{}:{}",
        server.host_str().expect("database host"),
        server.port().unwrap_or(5432)
    );
    let proxy = CuttableProxy::start(upstream).await;
    let mut through = url::Url::parse(&db.url).expect("database URL");
    through.set_host(Some("127.0.0.1")).expect("host");
    through.set_port(Some(proxy.addr.port())).expect("port");
    let store = kausal_store::Store::connect(through.as_str())
        .await
        .expect("store through the proxy");

    let b = TestBroker::start(engine).await;
    b.create_topics(&[("outage", 3), ("outage.dlq", 3)]).await;
    // A member that does not poll for 7 s is evicted by its own client.
    let kafka = b
        .kafka
        .clone()
        .with("session.timeout.ms", "6000")
        .with("max.poll.interval.ms", "7000");
    let group = format!("outage-{}", unique());
    let handler = Recorder::default();
    let member = start(&kafka, &group, "outage", handler.clone(), Some(store));
    let plain = b.plain_producer();
    for i in 0..BEFORE {
        send_to(&plain, "outage", (i % 3) as i32, &format!("before-{i}")).await;
    }
    assert!(
        eventually(Duration::from_secs(60), || processed(&member.outcomes())
            .len()
            >= BEFORE)
        .await,
        "handled before the outage"
    );

    proxy.cut();
    let cut_at = Instant::now();
    for i in 0..DURING {
        send_to(&plain, "outage", (i % 3) as i32, &format!("during-{i}")).await;
    }
    // Three times the poll interval without the database.
    tokio::time::sleep(Duration::from_secs(21).saturating_sub(cut_at.elapsed())).await;
    let handled_during = handler.count(|_| true) - BEFORE;
    proxy.restore();
    assert!(
        eventually(Duration::from_secs(90), || processed(&member.outcomes())
            .len()
            >= BEFORE + DURING)
        .await,
        "every record handled after the outage: {} of {}",
        processed(&member.outcomes()).len(),
        BEFORE + DURING
    );
    let (summary, outcomes) = member.stop().await;
    println!("outage run: {summary:?}; handled while the database was cut: {handled_during}");
    assert_eq!(
        handled_during, 0,
        "nothing reaches the handler while the idempotency guard cannot be asked"
    );
    assert_eq!(
        summary.partitions_revoked, 0,
        "the member kept its partitions: it was not evicted for not polling"
    );
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for id in processed(&outcomes) {
        *per_id.entry(id).or_default() += 1;
    }
    assert_eq!(per_id.len(), BEFORE + DURING, "nothing lost");
    assert!(per_id.values().all(|n| *n == 1), "nothing handled twice");

    // The heartbeats said which partitions were paused meanwhile.
    let beats = b.read_all(HEARTBEATS_TOPIC, usize::MAX, Duration::from_secs(10));
    let paused: BTreeSet<i32> = beats
        .iter()
        .filter_map(|m| serde_json::from_slice::<Heartbeat>(m.payload()?).ok())
        .filter(|beat| beat.consumer_group == group)
        .flat_map(|beat| beat.paused.into_iter().map(|p| p.partition))
        .collect();
    assert!(
        !paused.is_empty(),
        "a heartbeat during the outage named the paused partitions"
    );
}
