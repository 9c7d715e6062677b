//! `kausal lag` against the embedded broker: lag in records and seconds.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use kausal_core::lag::{GroupStatus, LagRules, PartitionStatus};
use kausal_kafka::admin::Admin;
use kausal_kafka::{Emitter, Handler, HandlerError, IncomingEvent};
use kausal_monitor::{GroupLag, LagMonitor, MonitorConfig, PartitionLag};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use crate::harness::{
    Engine, Member, TestBroker, eventually, group_consumer, send, spawn_member, unique,
};
use tokio_util::sync::CancellationToken;

const BIN: &str = env!("CARGO_BIN_EXE_kausal");

fn commit(b: &TestBroker, group: &str, topic: &str, offset: i64) {
    let c = group_consumer(b, group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(offset))
        .expect("tpl");
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

on_brokers!(lag_in_records_and_seconds_is_the_age_of_the_first_unread_record: Sqlite);
async fn lag_in_records_and_seconds_is_the_age_of_the_first_unread_record(engine: Engine) {
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("lagged", 1)]).await;
    let producer = b.plain_producer();
    let before = chrono::Utc::now().timestamp_millis();
    for i in 0..10 {
        send(
            &producer,
            "lagged",
            Some(format!("k{i}").as_bytes()),
            Some(b"{}"),
            &[],
        )
        .await;
    }
    let behind = format!("behind-{}", unique());
    let caught_up = format!("caught-up-{}", unique());
    commit(&b, &behind, "lagged", 4);
    commit(&b, &caught_up, "lagged", 10);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let run = |group: &str| {
        let out = Command::new(BIN)
            .args([
                "lag",
                "--group",
                group,
                "--topic",
                "lagged",
                "--samples",
                "1",
                "--json",
                "--kafka",
                &b.kafka.bootstrap_servers,
            ])
            .output()
            .expect("kausal lag runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        doc[0]["partitions"][0].clone()
    };
    let lagging = run(&behind);
    let elapsed = (chrono::Utc::now().timestamp_millis() - before) as f64 / 1000.0;
    assert_eq!(lagging["lag"], 6);
    assert_eq!(lagging["committed"], 4);
    assert_eq!(lagging["high_watermark"], 10);
    let secs = lagging["lag_seconds"].as_f64().expect("seconds");
    // The first unread record was produced after `before` and at least 2 s ago.
    assert!(
        secs >= 2.0 && secs <= elapsed + 1.0,
        "lag {secs} s, elapsed {elapsed} s"
    );
    let fine = run(&caught_up);
    assert_eq!(fine["lag"], 0);
    assert_eq!(fine["lag_seconds"], 0.0);
    assert_eq!(fine["status"], "ok");
}

/// A subscribed consumer that polls until `stop`, committing what it read
/// after each record when `commit` says so; `pace` between records.
fn run_consumer(
    b: &TestBroker,
    group: &str,
    topic: &str,
    stop: Arc<AtomicBool>,
    commit_upto: Option<i64>,
    pace: Duration,
) -> std::thread::JoinHandle<()> {
    let c = group_consumer(b, group);
    c.subscribe(&[topic]).expect("subscribe");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                let next = m.offset() + 1;
                if commit_upto.is_none_or(|limit| next <= limit) {
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset(m.topic(), m.partition(), Offset::Offset(next))
                        .expect("tpl");
                    let _ = c.commit(&tpl, CommitMode::Async);
                }
                std::thread::sleep(pace);
            }
        }
        // Dropping the consumer closes it: LeaveGroup.
    })
}

async fn wait_for_members(admin: &Admin, group: &str, alive: bool) -> bool {
    eventually(Duration::from_secs(30), || {
        admin
            .describe_group(group)
            .is_ok_and(|d| d.has_live_members() == alive)
    })
    .await
}

on_brokers!(describe_group_sees_members_come_and_go: Memory);
/// DescribeGroups through librdkafka: members seen while polling, gone
/// after close. On the memory engine; the SQLite engine fails DescribeGroups
/// for every existing group (pinned in `describe_groups_fails_on_sqlite`).
async fn describe_group_sees_members_come_and_go(engine: Engine) {
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("membership", 1)]).await;
    let admin = b.admin();
    let group = format!("members-{}", unique());
    let never = admin
        .describe_group(&group)
        .expect("describe unknown group");
    assert!(!never.has_live_members(), "{never:?}");

    let stop = Arc::new(AtomicBool::new(false));
    let consumer = run_consumer(&b, &group, "membership", stop.clone(), None, Duration::ZERO);
    if engine == Engine::Memory {
        // librdkafka describes groups with ConsumerGroupDescribe first and
        // falls back to DescribeGroups only when the broker lacks it; tansu
        // has it but lists no members in it. Kausal then says it cannot
        // tell (a live group must never read as "nobody consumes").
        let not_listed = |d: &kausal_kafka::admin::Result<_>| {
            matches!(
                d,
                Err(kausal_kafka::admin::AdminError::Group(
                    kausal_kafka::group::GroupError::MembersNotListed { .. }
                ))
            )
        };
        assert!(
            eventually(Duration::from_secs(30), || not_listed(
                &admin.describe_group(&group)
            ))
            .await,
            "a polling member's group is not described as empty: {:?}",
            admin.describe_group(&group)
        );
        stop.store(true, Ordering::Relaxed);
        consumer.join().expect("consumer thread");
        return;
    }
    assert!(
        wait_for_members(&admin, &group, true).await,
        "a polling member is seen: {:?}",
        admin.describe_group(&group)
    );
    let d = admin.describe_group(&group).expect("describe");
    assert_eq!(d.members.len(), 1, "{d:?}");
    stop.store(true, Ordering::Relaxed);
    consumer.join().expect("consumer thread");
    assert!(
        wait_for_members(&admin, &group, false).await,
        "a closed member is gone: {:?}",
        admin.describe_group(&group)
    );
}

/// A handler that takes `pace` per event, or never succeeds (`stuck`).
struct Paced {
    pace: Duration,
    stuck: bool,
    handled: Arc<AtomicU64>,
}

impl Handler for Paced {
    async fn handle(&self, _event: &IncomingEvent, _out: &mut Emitter) -> Result<(), HandlerError> {
        tokio::time::sleep(self.pace).await;
        if self.stuck {
            return Err(HandlerError::retryable("GatewayDown", "still down"));
        }
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn member(b: &TestBroker, group: &str, topic: &str, pace: Duration, stuck: bool) -> Member {
    let handled = Arc::new(AtomicU64::new(0));
    let handler = Paced {
        pace,
        stuck,
        handled: handled.clone(),
    };
    spawn_member(b, group, topic, handler, handled)
}

fn status_of(report: &[GroupLag], group: &str) -> (GroupStatus, Vec<PartitionLag>) {
    let g = report
        .iter()
        .find(|g| g.group == group)
        .unwrap_or_else(|| panic!("{group} not in report: {report:#?}"));
    (g.status, g.partitions.clone())
}

on_brokers!(burrow_statuses_and_lag_seconds_through_the_broker: Sqlite, 4);
/// Issue 5: the Burrow statuses, driven through the real broker with real
/// consumer runtimes: steady OK, slow WARN, stopped STOP, stuck STALL, reset
/// backwards REWIND, caught up OK; lag seconds exact on a quiet topic,
/// bounded while reprocessing from the start, 0 when caught up.
async fn burrow_statuses_and_lag_seconds_through_the_broker(engine: Engine) {
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("busy", 1), ("burst", 1), ("quiet", 1)])
        .await;
    let producer = b.plain_producer();
    let t0 = chrono::Utc::now().timestamp_millis();
    for i in 0..5 {
        send(
            &producer,
            "quiet",
            Some(format!("q{i}").as_bytes()),
            Some(b"{}"),
            &[],
        )
        .await;
    }
    let admin = b.admin();
    let quiet_ts = admin
        .timestamp_at("quiet", 0, 2)
        .expect("read")
        .expect("record 2 exists");
    let first_busy_ts = chrono::Utc::now().timestamp_millis();

    // Load: `busy` gets 20 events/s, `burst` 5 events every 2 s.
    let load = CancellationToken::new();
    let feeding = {
        let load = load.clone();
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut tick = 0u64;
            while !load.is_cancelled() {
                send(&producer, "busy", Some(b"k"), Some(b"{}"), &[]).await;
                if tick.is_multiple_of(40) {
                    for _ in 0..5 {
                        send(&producer, "burst", Some(b"k"), Some(b"{}"), &[]).await;
                    }
                }
                tick += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let id = unique();
    let steady_g = format!("steady-{id}");
    let slow_g = format!("slow-{id}");
    let stuck_g = format!("stuck-{id}");
    let stopped_g = format!("stopped-{id}");
    let rewind_g = format!("rewind-{id}");
    let caught_up_g = format!("caught-up-{id}");
    let quiet_g = format!("quiet-behind-{id}");
    let replay_g = format!("replay-from-start-{id}");
    let steady = member(&b, &steady_g, "burst", Duration::ZERO, false);
    let slow = member(&b, &slow_g, "busy", Duration::from_millis(250), false);
    let stuck = member(&b, &stuck_g, "busy", Duration::ZERO, true);
    let stopped = member(&b, &stopped_g, "busy", Duration::ZERO, false);
    commit(&b, &rewind_g, "busy", 1);
    commit(&b, &caught_up_g, "quiet", 5);
    commit(&b, &quiet_g, "quiet", 2);
    commit(&b, &replay_g, "busy", 0);

    // Every member working before the clock starts.
    assert!(
        eventually(Duration::from_secs(60), || {
            steady.handled.load(Ordering::Relaxed) > 0
                && slow.handled.load(Ordering::Relaxed) > 0
                && stopped.handled.load(Ordering::Relaxed) > 20
        })
        .await,
        "members did not start"
    );
    let rewind_to_high = admin.watermarks("busy").expect("marks")[0].high;
    commit(&b, &rewind_g, "busy", rewind_to_high - 5);

    let window = 6;
    let targets = [
        (&steady_g, "burst"),
        (&slow_g, "busy"),
        (&stuck_g, "busy"),
        (&stopped_g, "busy"),
        (&rewind_g, "busy"),
        (&caught_up_g, "quiet"),
        (&quiet_g, "quiet"),
        (&replay_g, "busy"),
    ]
    .iter()
    .map(|(g, t)| ((*g).clone(), (*t).to_owned()))
    .collect();
    let mut monitor = LagMonitor::new(
        b.admin(),
        MonitorConfig {
            targets,
            window_samples: window,
            rules: LagRules::default(),
        },
    );
    // Stop one member for good while the monitor watches.
    let mut report = Vec::new();
    for tick in 0..window + 4 {
        if tick == 1 {
            stopped.stop.cancel();
        }
        if tick == window + 2 {
            // An operator resets the group back by 20 records.
            commit(&b, &rewind_g, "busy", (rewind_to_high - 25).max(0));
        }
        report = monitor.tick().await.expect("tick");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let now = chrono::Utc::now().timestamp_millis();

    let (status, parts) = status_of(&report, &steady_g);
    assert_eq!(
        parts[0].status,
        Some(PartitionStatus::Ok),
        "steady: {parts:?}"
    );
    assert_eq!(status, GroupStatus::Ok);
    let (status, parts) = status_of(&report, &slow_g);
    assert_eq!(
        parts[0].status,
        Some(PartitionStatus::Warn),
        "slow: {parts:?}"
    );
    assert_eq!(status, GroupStatus::Warn);
    let (status, parts) = status_of(&report, &stuck_g);
    assert_eq!(
        parts[0].status,
        Some(PartitionStatus::Stall),
        "stuck: {parts:?}"
    );
    assert_eq!(parts[0].group_alive, Some(true));
    assert_eq!(status, GroupStatus::Err);
    let (status, parts) = status_of(&report, &stopped_g);
    assert_eq!(
        parts[0].status,
        Some(PartitionStatus::Stop),
        "stopped: {parts:?}"
    );
    assert_eq!(parts[0].group_alive, Some(false));
    assert_eq!(status, GroupStatus::Err);
    let (_, parts) = status_of(&report, &rewind_g);
    assert_eq!(
        parts[0].status,
        Some(PartitionStatus::Rewind),
        "rewind: {parts:?}"
    );
    let (status, parts) = status_of(&report, &caught_up_g);
    assert_eq!(parts[0].status, Some(PartitionStatus::Ok));
    assert_eq!((parts[0].lag, parts[0].lag_seconds), (0, 0.0));
    assert_eq!(status, GroupStatus::Ok);

    // Behind on a quiet topic: the age of the first unread record, exactly
    // (its timestamp is known), finite though nothing moves.
    let (_, parts) = status_of(&report, &quiet_g);
    let expected = (now - quiet_ts) as f64 / 1000.0;
    assert_eq!(parts[0].lag, 3);
    assert!(
        (parts[0].lag_seconds - expected).abs() < 2.0,
        "quiet lag {} s, first unread produced {expected} s ago",
        parts[0].lag_seconds
    );
    // Reprocessing from the start: bounded by the first record's age, no
    // extrapolation beyond it.
    let (_, parts) = status_of(&report, &replay_g);
    let oldest_possible = (now - t0) as f64 / 1000.0;
    let first = (now - first_busy_ts) as f64 / 1000.0;
    assert!(
        parts[0].lag_seconds <= oldest_possible + 1.0 && parts[0].lag_seconds >= first - 2.0,
        "replay lag {} s, topic began {first} s ago",
        parts[0].lag_seconds
    );

    load.cancel();
    feeding.await.expect("feeder");
    for m in [steady, slow, stuck, stopped] {
        m.stop.cancel();
        m.task.await.expect("member stops");
    }
}

/// Pinned broker fault (docs/broker.md): tansu 0.6's SQLite engine reads a
/// stored group as a JSON string instead of parsing it, so DescribeGroups
/// of any existing group drops the connection. Kausal's consumers therefore
/// report liveness through heartbeats. When this starts failing, tansu was
/// fixed: update docs/broker.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_groups_fails_on_sqlite() {
    let b = TestBroker::start(Engine::Sqlite).await;
    b.create_topics(&[("membership", 1)]).await;
    let admin = b.admin();
    let group = format!("members-{}", unique());
    commit(&b, &group, "membership", 0);
    let unknown = admin.describe_group(&format!("never-{}", unique()));
    assert!(unknown.is_ok_and(|d| !d.has_live_members()));
    // tansu drops the connection for a group it has stored.
    let existing = admin.describe_group(&group);
    assert!(
        matches!(
            &existing,
            Err(kausal_kafka::admin::AdminError::Group(
                kausal_kafka::group::GroupError::Broker { .. }
            ))
        ),
        "tansu answered for a stored group on SQLite: {existing:?}"
    );
}

on_brokers!(retention_danger_when_time_lag_nears_retention: Sqlite);
/// Retention danger: a group whose oldest unread record is older than 80 %
/// of the topic's `retention.ms` is flagged and exported; a topic without a
/// retention setting gives no ratio at all on tansu (unknown is not "safe"),
/// the broker default's on Kafka.
async fn retention_danger_when_time_lag_nears_retention(engine: Engine) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::FutureRecord;

    let b = TestBroker::start(engine).await;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &b.kafka.bootstrap_servers)
        .create()
        .expect("admin");
    let created = admin
        .create_topics(
            &[NewTopic::new("retained", 1, TopicReplication::Fixed(1))
                .set("retention.ms", "60000")],
            &AdminOptions::new(),
        )
        .await
        .expect("create");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    b.create_topics(&[("unlimited", 1)]).await;
    let producer = b.plain_producer();
    let old = chrono::Utc::now().timestamp_millis() - 55_000;
    for topic in ["retained", "unlimited"] {
        producer
            .send(
                FutureRecord::<[u8], [u8]>::to(topic)
                    .payload(b"{}")
                    .timestamp(old),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("sent");
    }
    let group = format!("late-{}", unique());
    commit(&b, &group, "retained", 0);
    commit(&b, &group, "unlimited", 0);

    let metrics = kausal_telemetry::Metrics::new();
    let mut monitor = LagMonitor::new(
        b.admin(),
        MonitorConfig {
            targets: vec![
                (group.clone(), "retained".into()),
                (group.clone(), "unlimited".into()),
            ],
            ..MonitorConfig::default()
        },
    )
    .with_metrics(kausal_telemetry::monitor::MonitorMetrics::register(
        &metrics,
    ));
    let report = monitor.tick().await.expect("tick");
    let (_, parts) = status_of(&report, &group);
    let retained = parts
        .iter()
        .find(|p| p.key.topic == "retained")
        .expect("retained");
    assert_eq!(retained.retention_ms, Some(60_000));
    let ratio = retained.retention_ratio.expect("ratio");
    assert!(
        (0.9..1.0).contains(&ratio),
        "ratio {ratio}, lag {} s",
        retained.lag_seconds
    );
    assert!(retained.retention_danger);
    let unlimited = parts
        .iter()
        .find(|p| p.key.topic == "unlimited")
        .expect("unlimited");
    if engine.is_tansu() {
        // tansu reports no retention.ms for a topic created without one.
        assert_eq!(unlimited.retention_ratio, None);
    } else {
        // Kafka reports the broker's default (7 days): a tiny ratio.
        assert_eq!(unlimited.retention_ms, Some(7 * 24 * 3600 * 1000));
        assert!(unlimited.retention_ratio.is_some_and(|r| r < 0.001));
    }
    assert!(!unlimited.retention_danger);
    assert!(unlimited.lag_seconds >= 55.0, "{}", unlimited.lag_seconds);

    let text = metrics.encode();
    let needle = format!(
        "consumer_lag_retention_ratio{{topic=\"retained\",partition=\"0\",consumer_group=\"{group}\"}} 0.9"
    );
    assert!(text.contains(&needle), "{needle} missing in\n{text}");
}
