//! The transactional outbox relay (`kausal-outbox`) against real brokers
//! and real databases: events appended through the traced event store
//! reach their topic in per-stream order with the contract's headers and
//! the appending trace continued; two relays on one store publish every
//! event exactly once (one holds the lease, the other takes over when it
//! is released); and with the broker unreachable nothing is marked sent
//! until a relay reaches a broker again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use kausal_core::{EventId, TraceParent};
use kausal_eventsource::names::span as store_span;
use kausal_eventsource::{EventStore, EventStoreMetrics, StreamName};
use kausal_kafka::{EventProducer, KafkaConfig};
use kausal_outbox::names::{attr, span};
use kausal_outbox::{OutboxMetrics, Relay, RelayConfig, RelaySummary};
use kausal_store::testing::{self, TestDatabase};
use kausal_store::{ExpectedVersion, NewEvent, OutboxTarget, Store};
use kausal_telemetry::Metrics;
use kausal_telemetry::ids;
use kausal_telemetry::testing::{CapturedSpan, SpanCapture};
use rdkafka::message::{Message, OwnedMessage};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::harness::{Engine, TestBroker, eventually, free_port, header, unique};

/// One configured database (SQLite always, PostgreSQL where
/// `KAUSAL_TEST_DATABASE_URL` is set) with the traced event store over it.
struct Ledger {
    label: &'static str,
    store: Store,
    events: EventStore,
    _db: TestDatabase,
}

async fn ledgers() -> Vec<Ledger> {
    let mut out = Vec::new();
    for db in testing::databases().await.expect("test databases") {
        let store = testing::connect(&db).await.expect(db.label);
        let events = EventStore::new(store.clone(), EventStoreMetrics::register(&Metrics::new()));
        out.push(Ledger {
            label: db.label,
            store,
            events,
            _db: db,
        });
    }
    out
}

/// A relay that polls and backs off quickly (tests wait on it).
fn fast_config() -> RelayConfig {
    let mut config = RelayConfig::new("ledger");
    config.poll_interval = Duration::from_millis(20);
    config.initial_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(500);
    config
}

/// A running relay with its own metric registry.
struct Running {
    registry: Metrics,
    holder: String,
    stop: CancellationToken,
    task: JoinHandle<RelaySummary>,
}

impl Running {
    async fn stop(self) -> RelaySummary {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the relay stops within 30 s")
            .expect("the relay task")
    }
}

fn start_relay(kafka: &KafkaConfig, store: &Store, config: RelayConfig) -> Running {
    let registry = Metrics::new();
    let producer = EventProducer::new(kafka, "ledger-outbox", registry.clone()).expect("producer");
    let holder = config.holder.clone();
    let relay = Relay::new(
        store.clone(),
        producer,
        OutboxMetrics::register(&registry),
        config,
    )
    .expect("relay config");
    let stop = CancellationToken::new();
    let token = stop.clone();
    Running {
        registry,
        holder,
        stop,
        task: tokio::spawn(async move { relay.run(token).await }),
    }
}

fn new_trace() -> TraceParent {
    TraceParent::new(ids::new_trace_id(), ids::new_span_id(), true)
}

/// What a test appended, by event id.
#[derive(Debug, Clone)]
struct Appended {
    stream: String,
    n: i64,
    event: NewEvent,
    /// The trace of the append (its caller's).
    trace: TraceParent,
}

/// Appends events `from..from + count` of `stream` in one append (one
/// transaction, one append span in a trace of its own).
async fn append(
    events: &EventStore,
    stream: &StreamName,
    from: i64,
    count: i64,
    target: &OutboxTarget,
) -> Vec<Appended> {
    let trace = new_trace();
    let correlation: kausal_core::CorrelationId = format!("corr-{stream}").parse().expect("id");
    let batch: Vec<NewEvent> = (from..from + count)
        .map(|n| NewEvent {
            event_id: ids::new_event_id(),
            event_type: "Deposited".to_owned(),
            event_version: 1,
            payload: serde_json::json!({ "stream": stream.stream_id(), "n": n }).to_string(),
            correlation_id: correlation.clone(),
            causation_id: Some(ids::new_event_id()),
            traceparent: None,
        })
        .collect();
    events
        .append_events(
            stream,
            ExpectedVersion::Any,
            batch.clone(),
            Some(target),
            Some(trace),
        )
        .await
        .expect("append");
    batch
        .into_iter()
        .zip(from..)
        .map(|(event, n)| Appended {
            stream: stream.stream_id(),
            n,
            event,
            trace,
        })
        .collect()
}

fn target(topic: &str, key: Option<&str>) -> OutboxTarget {
    OutboxTarget {
        topic: topic.to_owned(),
        key: key.map(str::to_owned),
    }
}

/// `(stream, n)` of a published record, from its payload.
fn stream_and_n(m: &OwnedMessage) -> (String, i64) {
    let value: serde_json::Value =
        serde_json::from_slice(m.payload().expect("payload")).expect("JSON payload");
    (
        value["stream"].as_str().expect("stream").to_owned(),
        value["n"].as_i64().expect("n"),
    )
}

/// Each stream's `n`s in the order its records were read (one stream is
/// one key, so one partition, read in offset order).
fn order_per_stream(messages: &[OwnedMessage]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for m in messages {
        let (stream, n) = stream_and_n(m);
        out.entry(stream).or_default().push(n);
    }
    out
}

async fn wait_until_sent(store: &Store, label: &str) {
    let drained = tokio::time::timeout(Duration::from_secs(90), async {
        loop {
            let stats = store.outbox_stats(i64::MAX).await.expect("outbox stats");
            if stats.pending == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(drained.is_ok(), "{label}: the outbox drains within 90 s");
}

fn one<'a>(spans: &'a [CapturedSpan], name: &str) -> &'a CapturedSpan {
    let found: Vec<&CapturedSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} in {spans:#?}");
    found[0]
}

on_brokers!(relayed_events_keep_stream_order_headers_and_the_appending_trace: Sqlite);
async fn relayed_events_keep_stream_order_headers_and_the_appending_trace(engine: Engine) {
    let capture = SpanCapture::install();
    let b = TestBroker::start(engine).await;
    for ledger in ledgers().await {
        let label = ledger.label;
        let topic = format!("outbox-{}", unique());
        b.create_topics(&[(&topic, 3)]).await;
        let relay = start_relay(&b.kafka, &ledger.store, fast_config());

        // Three streams appended in turns, one with a key of its own, the
        // first append of each with two events in one transaction.
        let streams = [
            (StreamName::new("Account", "a"), None),
            (StreamName::new("Account", "b"), None),
            (StreamName::new("Account", "c"), Some("c-key")),
        ];
        let mut appended = Vec::new();
        let mut next: HashMap<String, i64> = HashMap::new();
        for round in 0..3 {
            for (stream, key) in &streams {
                let from = *next.entry(stream.stream_id()).or_insert(1);
                let count = if round == 0 { 2 } else { 1 };
                appended.extend(
                    append(&ledger.events, stream, from, count, &target(&topic, *key)).await,
                );
                next.insert(stream.stream_id(), from + count);
            }
        }
        let total = appended.len();
        assert_eq!(total, 12);

        wait_until_sent(&ledger.store, label).await;
        assert!(
            ledger
                .store
                .outbox_pending(100)
                .await
                .expect(label)
                .is_empty(),
            "{label}: every row marked sent"
        );
        // One more than was appended: a duplicate would show up here.
        let messages = b.read_all(&topic, total + 1, Duration::from_secs(3));
        assert_eq!(messages.len(), total, "{label}: each event exactly once");
        for (stream, ns) in order_per_stream(&messages) {
            assert_eq!(ns, [1, 2, 3, 4], "{label}: {stream} in version order");
        }

        // The contract's headers: the stored ids, and the appending trace
        // continued through the send span.
        let by_id: HashMap<String, &Appended> = appended
            .iter()
            .map(|a| (a.event.event_id.to_string(), a))
            .collect();
        let mut send_of: HashMap<String, TraceParent> = HashMap::new();
        for m in &messages {
            let event_id = header(m, "event-id").expect("event-id header");
            let a = by_id
                .get(&event_id)
                .unwrap_or_else(|| panic!("{label}: {event_id} was appended"));
            assert_eq!(stream_and_n(m), (a.stream.clone(), a.n), "{label}");
            assert_eq!(
                header(m, "correlation-id").as_deref(),
                Some(a.event.correlation_id.as_str()),
                "{label}"
            );
            let causation = a.event.causation_id.map(|c| c.to_string());
            assert_eq!(header(m, "causation-id"), causation, "{label}");
            assert_eq!(
                header(m, "event-type").as_deref(),
                Some("Deposited"),
                "{label}"
            );
            assert_eq!(
                header(m, "source-service").as_deref(),
                Some("ledger"),
                "{label}"
            );
            let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
            let want_key = if a.stream == "Account-c" {
                "c-key".to_owned()
            } else {
                a.stream.clone()
            };
            assert_eq!(
                key,
                Some(want_key),
                "{label}: the row's key or the stream id"
            );
            let tp = TraceParent::parse(&header(m, "traceparent").expect("traceparent"))
                .expect("a valid traceparent");
            assert_eq!(
                tp.trace_id, a.trace.trace_id,
                "{label}: the record continues the trace that appended it"
            );
            send_of.insert(event_id, tp);
        }

        // The spans of stream a's first append (two events, one trace):
        // append -> publishEvent (linked to processOutbox) -> send.
        let first = &appended[0];
        assert_eq!((first.stream.as_str(), first.n), ("Account-a", 1));
        let trace = first.trace.trace_id.to_string();
        let spans = capture.in_trace(&trace);
        let append_span = one(&spans, store_span::APPEND_EVENTS);
        let publishes: Vec<&CapturedSpan> = spans
            .iter()
            .filter(|s| s.name == span::PUBLISH_EVENT)
            .collect();
        assert_eq!(publishes.len(), 2, "{label}: {spans:#?}");
        let all = capture.spans();
        for publish in publishes {
            assert_eq!(
                publish.parent_span_id.as_deref(),
                Some(append_span.span_id.as_str()),
                "{label}: publishEvent is the append span's child"
            );
            assert_eq!(publish.links.len(), 1, "{label}: {publish:?}");
            let batch = all
                .iter()
                .find(|s| s.span_id == publish.links[0])
                .unwrap_or_else(|| panic!("{label}: the linked processOutbox span was exported"));
            assert_eq!(batch.name, span::PROCESS_OUTBOX);
            assert_ne!(batch.trace_id, trace, "a batch is a trace of its own");
            let count: i64 = batch
                .attribute(attr::EVENT_COUNT)
                .expect("event count")
                .parse()
                .expect("a number");
            assert!((1..=12).contains(&count), "{label}: {count}");
            let event_id = publish.attribute(attr::MESSAGE_ID).expect("message id");
            let sends: Vec<&CapturedSpan> = spans
                .iter()
                .filter(|s| s.parent_span_id.as_deref() == Some(publish.span_id.as_str()))
                .collect();
            assert_eq!(sends.len(), 1, "{label}: one send under {publish:?}");
            let send = sends[0];
            assert_eq!(send.name, format!("send {topic}"), "{label}");
            assert_eq!(
                send.attribute("messaging.message.id").as_deref(),
                Some(event_id.as_str())
            );
            // The record's traceparent names the send span.
            let header_tp = send_of[&event_id];
            assert_eq!(header_tp.parent_id.to_string(), send.span_id, "{label}");
            assert!(!send.failed && !publish.failed, "{label}");
        }

        // Metrics: every relayed event measured, the backlog gauges at 0.
        let latency_count =
            format!("outbox_relay_latency_seconds_count{{topic=\"{topic}\"}} {total}");
        let gauges_zero = eventually(Duration::from_secs(10), || {
            let text = relay.registry.encode();
            text.contains("outbox_pending 0\n")
                && text.contains("outbox_oldest_age_seconds 0.0\n")
                && text.contains(&latency_count)
        })
        .await;
        assert!(
            gauges_zero,
            "{label}: metrics after the drain:\n{}",
            relay.registry.encode()
        );

        let summary = relay.stop().await;
        assert_eq!(summary.published, total as u64, "{label}: {summary:?}");
        assert_eq!(
            summary.failed + summary.abandoned,
            0,
            "{label}: {summary:?}"
        );
        assert_eq!(
            ledger
                .store
                .outbox_lease(&RelayConfig::new("ledger").lease_name)
                .await
                .expect(label),
            None,
            "{label}: a stopped relay releases its lease"
        );
        ledger.store.close().await;
    }
}

on_brokers!(two_relays_at_once_publish_every_event_once_in_stream_order: Sqlite);
async fn two_relays_at_once_publish_every_event_once_in_stream_order(engine: Engine) {
    const STREAMS: i64 = 4;
    const PER_STREAM: i64 = 15;
    let b = TestBroker::start(engine).await;
    for ledger in ledgers().await {
        let label = ledger.label;
        let topic = format!("outbox-{}", unique());
        b.create_topics(&[(&topic, 3)]).await;
        // A lease longer than the test: whoever takes it first keeps it
        // until it stops, so no event may go out twice.
        let config = || {
            let mut c = fast_config();
            c.lease_duration = Duration::from_secs(300);
            c
        };
        let first = start_relay(&b.kafka, &ledger.store, config());
        let second = start_relay(&b.kafka, &ledger.store, config());

        // Writers append one event at a time while both relays run.
        let writers: Vec<JoinHandle<()>> = (0..STREAMS)
            .map(|s| {
                let (events, target) = (ledger.events.clone(), target(&topic, None));
                tokio::spawn(async move {
                    let stream = StreamName::new("Account", format!("w{s}"));
                    for n in 1..=PER_STREAM {
                        append(&events, &stream, n, 1, &target).await;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        for w in writers {
            w.await.expect("writer");
        }
        let total = (STREAMS * PER_STREAM) as usize;
        wait_until_sent(&ledger.store, label).await;
        let messages = b.read_all(&topic, total + 1, Duration::from_secs(3));
        assert_eq!(messages.len(), total, "{label}: every event, exactly once");
        let ids: HashSet<String> = messages
            .iter()
            .map(|m| header(m, "event-id").expect("event-id"))
            .collect();
        assert_eq!(ids.len(), total, "{label}: distinct event ids");
        let want: Vec<i64> = (1..=PER_STREAM).collect();
        for (stream, ns) in order_per_stream(&messages) {
            assert_eq!(ns, want, "{label}: {stream} in version order");
        }

        // One relay held the lease throughout and published everything.
        let lease = ledger
            .store
            .outbox_lease(&config().lease_name)
            .await
            .expect(label)
            .expect("a lease is held");
        let (holder, standby) = if lease.holder == first.holder {
            (first, second)
        } else {
            assert_eq!(lease.holder, second.holder, "{label}");
            (second, first)
        };
        let held = holder.stop().await;
        assert_eq!(held.published, total as u64, "{label}: {held:?}");
        assert_eq!(held.lease_refused, 0, "{label}: {held:?}");

        // Its stop released the lease: the standby takes over at once (a
        // 300 s lease left to expire would stall this test).
        let late = StreamName::new("Account", "late");
        append(&ledger.events, &late, 1, 5, &target(&topic, None)).await;
        wait_until_sent(&ledger.store, label).await;
        let messages = b.read_all(&topic, total + 6, Duration::from_secs(3));
        assert_eq!(messages.len(), total + 5, "{label}: the late events once");
        assert_eq!(
            order_per_stream(&messages)["Account-late"],
            [1, 2, 3, 4, 5],
            "{label}"
        );
        let took_over = standby.stop().await;
        assert_eq!(took_over.published, 5, "{label}: {took_over:?}");
        assert!(took_over.lease_refused > 0, "{label}: {took_over:?}");
        ledger.store.close().await;
    }
}

on_brokers!(an_unreachable_broker_marks_nothing_sent_until_one_answers: Sqlite);
async fn an_unreachable_broker_marks_nothing_sent_until_one_answers(engine: Engine) {
    let b = TestBroker::start(engine).await;
    let ledger = ledgers().await.into_iter().next().expect("SQLite");
    let topic = format!("outbox-{}", unique());
    b.create_topics(&[(&topic, 3)]).await;
    let mut appended = Vec::new();
    for s in ["x", "y"] {
        let stream = StreamName::new("Account", s);
        appended.extend(append(&ledger.events, &stream, 1, 3, &target(&topic, None)).await);
        appended.extend(append(&ledger.events, &stream, 4, 3, &target(&topic, None)).await);
    }
    let total = appended.len() as i64;

    // Nothing listens on this port: every publish fails (librdkafka gives
    // up on a record after message.timeout.ms).
    let nowhere =
        KafkaConfig::new(format!("127.0.0.1:{}", free_port())).with("message.timeout.ms", "800");
    let mut config = fast_config();
    config.publish_timeout = Duration::from_secs(3);
    let cut_off = start_relay(&nowhere, &ledger.store, config);
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stats = ledger.store.outbox_stats(i64::MAX).await.expect("stats");
        assert_eq!(
            stats.pending, total,
            "nothing is marked sent without a broker"
        );
    }
    let gauges = cut_off.registry.encode();
    assert!(
        gauges.contains(&format!("outbox_pending {total}\n")),
        "{gauges}"
    );
    let failed = cut_off.stop().await;
    assert_eq!(failed.published, 0, "{failed:?}");
    assert!(failed.failed + failed.abandoned > 0, "{failed:?}");
    assert!(failed.batches >= 2, "retried with backoff: {failed:?}");
    assert!(
        b.read_all(&topic, 1, Duration::from_secs(2)).is_empty(),
        "nothing reached the topic"
    );
    assert_eq!(
        ledger
            .store
            .outbox_pending(100)
            .await
            .expect("pending")
            .len() as i64,
        total
    );

    // A relay that reaches the broker publishes everything, in order.
    let reached = start_relay(&b.kafka, &ledger.store, fast_config());
    wait_until_sent(&ledger.store, "sqlite").await;
    let messages = b.read_all(&topic, total as usize + 1, Duration::from_secs(3));
    assert_eq!(messages.len() as i64, total);
    for (stream, ns) in order_per_stream(&messages) {
        assert_eq!(ns, [1, 2, 3, 4, 5, 6], "{stream}");
    }
    let ids: HashSet<EventId> = appended.iter().map(|a| a.event.event_id).collect();
    for m in &messages {
        let id: EventId = header(m, "event-id")
            .expect("event-id")
            .parse()
            .expect("uuid");
        assert!(ids.contains(&id));
    }
    let summary = reached.stop().await;
    assert_eq!(summary.published as i64, total, "{summary:?}");
    ledger.store.close().await;
}

on_brokers!(an_idle_relay_publishes_an_append_of_its_own_process_without_waiting_for_its_poll: Sqlite);
/// A relay that found nothing to publish waits for its poll interval, but
/// an append through the same store ends the wait: the events leave
/// without a poll. With a 60 s poll, every append is published within
/// 20 s (an SQLite engine's fetch included), three times in a row.
async fn an_idle_relay_publishes_an_append_of_its_own_process_without_waiting_for_its_poll(
    engine: Engine,
) {
    let b = TestBroker::start(engine).await;
    for ledger in ledgers().await {
        let label = ledger.label;
        let topic = format!("outbox-{}", unique());
        b.create_topics(&[(&topic, 1)]).await;
        let mut config = fast_config();
        config.poll_interval = Duration::from_secs(60);
        let relay = start_relay(&b.kafka, &ledger.store, config);
        let stream = StreamName::new("Account", "wake");
        for n in 1..=3 {
            // Idle: the relay's first pass found nothing, or the last
            // append is sent.
            tokio::time::sleep(Duration::from_millis(500)).await;
            append(&ledger.events, &stream, n, 1, &target(&topic, None)).await;
            let sent = tokio::time::timeout(Duration::from_secs(20), async {
                while ledger
                    .store
                    .outbox_stats(i64::MAX)
                    .await
                    .expect("outbox stats")
                    .pending
                    > 0
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
            assert!(
                sent.is_ok(),
                "{label}: append {n} is still pending after 20 s: the relay waits for its 60 s poll"
            );
        }
        let summary = relay.stop().await;
        assert_eq!(summary.published, 3, "{label}: {summary:?}");
        let records = b.read_all(&topic, 3, Duration::from_secs(30));
        assert_eq!(
            records.len(),
            3,
            "{label}: the three events reached the topic"
        );
        ledger.store.close().await;
    }
}
