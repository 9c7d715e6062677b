//! The consumer runtime end to end on the embedded broker: the payment
//! service's handler with a scripted gateway (the only fake).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kausal_contracts::{OrderPlaced, event_types};
use kausal_core::{dlq, headers as h};
use kausal_kafka::runtime::Outcome;
use kausal_kafka::{ConsumerRuntime, CorrelationPolicy, EventProducer, IncomingEvent, RetryPolicy};
use kausal_payment::{Charge, GatewayError, PaymentGateway, PaymentHandler, PaymentMetrics};
use kausal_telemetry::Metrics;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::harness::{
    Engine, TestBroker, count_by_key, eventually, header, headers_of, send, unique,
};

/// A gateway whose answers are scripted per order id, recording every call.
#[derive(Default)]
pub(crate) struct Script {
    fail_always: HashSet<String>,
    decline: HashSet<String>,
    /// Time each charge takes.
    delay: Duration,
    /// While set, every charge fails transiently (a gateway outage).
    pub(crate) down: std::sync::atomic::AtomicBool,
    calls: Mutex<Vec<(String, Instant)>>,
}

#[derive(Clone, Default)]
pub(crate) struct ScriptedGateway(pub(crate) Arc<Script>);

impl ScriptedGateway {
    pub(crate) fn charges(&self, order: &str) -> usize {
        self.0
            .calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|(o, _)| o == order)
            .count()
    }
    fn call_times(&self, order: &str) -> Vec<Instant> {
        self.0
            .calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|(o, _)| o == order)
            .map(|(_, t)| *t)
            .collect()
    }
    fn calls_per_order(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for (o, _) in self.0.calls.lock().expect("lock").iter() {
            *out.entry(o.clone()).or_insert(0) += 1;
        }
        out
    }
}

impl PaymentGateway for ScriptedGateway {
    async fn charge(&self, order: &OrderPlaced) -> Result<Charge, GatewayError> {
        self.0
            .calls
            .lock()
            .expect("lock")
            .push((order.order_id.clone(), Instant::now()));
        if !self.0.delay.is_zero() {
            tokio::time::sleep(self.0.delay).await;
        }
        if self.0.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(GatewayError("gateway down".into()));
        }
        if self.0.fail_always.contains(&order.order_id) {
            return Err(GatewayError("gateway unavailable".into()));
        }
        if self.0.decline.contains(&order.order_id) {
            return Ok(Charge::Declined {
                reason: "insufficient funds".into(),
            });
        }
        Ok(Charge::Approved {
            payment_id: format!("pay-{}", order.order_id),
        })
    }
}

pub(crate) fn order(id: &str) -> OrderPlaced {
    OrderPlaced {
        order_id: id.to_owned(),
        user_id: "user-1".into(),
        amount: 12.5,
        currency: "EUR".into(),
        customer_email: Some("a@example.com".into()),
        created_at: "2026-11-22T00:00:00.000Z".into(),
    }
}

pub(crate) struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<kausal_kafka::RunSummary>,
    outcomes: Arc<Mutex<Vec<(IncomingEvent, Outcome)>>>,
}

impl Running {
    fn count(&self) -> usize {
        self.outcomes.lock().expect("lock").len()
    }
    /// What it settled so far.
    pub(crate) fn outcomes(&self) -> Vec<(IncomingEvent, Outcome)> {
        self.outcomes.lock().expect("lock").clone()
    }
    pub(crate) async fn stop(self) -> (kausal_kafka::RunSummary, Vec<(IncomingEvent, Outcome)>) {
        self.shutdown.cancel();
        let summary = self.task.await.expect("runtime task");
        let outcomes = self.outcomes.lock().expect("lock").clone();
        (summary, outcomes)
    }
}

fn start_payment(
    b: &TestBroker,
    group: &str,
    gateway: ScriptedGateway,
    retry: RetryPolicy,
    policy: CorrelationPolicy,
    store: Option<kausal_store::Store>,
) -> Running {
    let metrics = Metrics::new();
    let handler = PaymentHandler::new(gateway, PaymentMetrics::register(&metrics));
    start_runtime(
        &b.kafka,
        kausal_payment::SERVICE_NAME,
        group,
        &["orders"],
        handler,
        retry,
        policy,
        store,
    )
}

/// Runs any handler in a consumer group on the test broker (`kafka`: its
/// client configuration, `&broker.kafka` or with extra properties).
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_runtime<H: kausal_kafka::Handler>(
    kafka: &kausal_kafka::KafkaConfig,
    service: &str,
    group: &str,
    topics: &[&str],
    handler: H,
    retry: RetryPolicy,
    policy: CorrelationPolicy,
    store: Option<kausal_store::Store>,
) -> Running {
    let producer = EventProducer::new(kafka, service, Metrics::new()).expect("producer");
    let outcomes: Arc<Mutex<Vec<(IncomingEvent, Outcome)>>> = Arc::default();
    let seen = outcomes.clone();
    let mut runtime =
        ConsumerRuntime::new(kafka.clone(), service, group, topics, handler, producer)
            .retry_policy(retry)
            .correlation_policy(policy)
            .commit_interval(Duration::from_millis(50))
            .on_outcome(Arc::new(move |e, o| {
                seen.lock().expect("lock").push((e.clone(), o.clone()))
            }));
    if let Some(store) = store {
        runtime = runtime.idempotency_store(store);
    }
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { runtime.run(token).await.expect("runtime runs") });
    Running {
        shutdown,
        task,
        outcomes,
    }
}

pub(crate) fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

async fn setup(engine: Engine) -> TestBroker {
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("orders", 3), ("orders.dlq", 3), ("payments", 3)])
        .await;
    b
}

async fn place(b: &TestBroker, producer: &EventProducer, id: &str) {
    kausal_order::place_order(producer, "orders", &order(id), None, None)
        .await
        .expect("order published");
    let _ = b;
}

async fn sqlite_store(b: &TestBroker) -> kausal_store::Store {
    let url = format!("sqlite://{}", b.dir.path().join("kausal.db").display());
    kausal_store::Store::connect(&url).await.expect("store")
}

/// Sum of committed offsets of `group` on `topic` equals the sum of high
/// watermarks: every record is committed.
async fn all_committed(b: &TestBroker, group: &str, topic: &str) -> bool {
    let admin = b.admin();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let marks = admin.watermarks(topic).expect("watermarks");
        let committed = admin.committed_offsets(group, topic).expect("committed");
        let ok = marks.iter().all(|w| {
            committed
                .iter()
                .any(|(p, o)| *p == w.partition && o.unwrap_or(0) == w.high)
        });
        if ok || Instant::now() > deadline {
            return ok;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

on_brokers!(every_order_gets_exactly_one_outcome: Sqlite);
async fn every_order_gets_exactly_one_outcome(engine: Engine) {
    let b = setup(engine).await;
    let n = 200;
    let ids: Vec<String> = (0..n).map(|i| format!("ord-{i}")).collect();
    let script = Script {
        fail_always: ids.iter().step_by(25).cloned().collect(),
        decline: ids.iter().skip(3).step_by(20).cloned().collect(),
        ..Script::default()
    };
    let gateway = ScriptedGateway(Arc::new(script));
    let producer = EventProducer::new(&b.kafka, "order-test", Metrics::new()).expect("producer");
    for id in &ids {
        place(&b, &producer, id).await;
    }
    let group = format!("payment-{}", unique());
    let store = sqlite_store(&b).await;
    let running = start_payment(
        &b,
        &group,
        gateway.clone(),
        fast_retry(2),
        CorrelationPolicy::Adopt,
        Some(store),
    );
    assert!(
        eventually(Duration::from_secs(90), || running.count() >= n).await,
        "only {} of {n} handled",
        running.count()
    );
    let (summary, _) = running.stop().await;
    assert!(
        all_committed(&b, &group, "orders").await,
        "every offset committed"
    );

    let failing = ids.iter().step_by(25).count();
    let payments = b.read_all("payments", n - failing, Duration::from_secs(30));
    let dead = b.read_all("orders.dlq", failing, Duration::from_secs(30));
    let mut outcome_of: HashMap<String, Vec<String>> = HashMap::new();
    for m in &payments {
        let key = String::from_utf8_lossy(m.key().expect("keyed")).into_owned();
        outcome_of
            .entry(key)
            .or_default()
            .push(header(m, h::EVENT_TYPE).expect("typed"));
    }
    for m in &dead {
        let key = String::from_utf8_lossy(m.key().expect("keyed")).into_owned();
        outcome_of
            .entry(key)
            .or_default()
            .push("dead-lettered".into());
    }
    for (i, id) in ids.iter().enumerate() {
        let expected = if i % 25 == 0 {
            "dead-lettered"
        } else if i >= 3 && (i - 3) % 20 == 0 {
            event_types::PAYMENT_FAILED
        } else {
            event_types::PAYMENT_PROCESSED
        };
        assert_eq!(
            outcome_of.get(id).map(Vec::as_slice),
            Some(&[expected.to_owned()][..]),
            "order {id}"
        );
    }
    assert_eq!(outcome_of.len(), n, "no outcome for an unknown order");
    assert_eq!(summary.processed as usize, n - failing);
    assert_eq!(summary.dead_lettered as usize, failing);
    assert_eq!(
        summary.retries as usize, failing,
        "each failing order retried once (2 attempts)"
    );
}

on_brokers!(a_failing_payment_is_retried_with_backoff_then_dead_lettered_byte_identical: Sqlite);
async fn a_failing_payment_is_retried_with_backoff_then_dead_lettered_byte_identical(
    engine: Engine,
) {
    let b = setup(engine).await;
    let gateway = ScriptedGateway(Arc::new(Script {
        fail_always: ["ord-bad".to_owned()].into(),
        ..Script::default()
    }));
    let producer = EventProducer::new(&b.kafka, "order-test", Metrics::new()).expect("producer");
    let sent = kausal_order::place_order(&producer, "orders", &order("ord-bad"), None, None)
        .await
        .expect("sent");
    let group = format!("payment-{}", unique());
    let running = start_payment(
        &b,
        &group,
        gateway.clone(),
        fast_retry(3),
        CorrelationPolicy::Adopt,
        None,
    );
    assert!(eventually(Duration::from_secs(60), || running.count() >= 1).await);
    running.stop().await;

    assert_eq!(gateway.charges("ord-bad"), 3, "three attempts");
    let times = gateway.call_times("ord-bad");
    // Backoff lower bounds (sleep never returns early): 100 ms and 200 ms
    // less 20 % jitter.
    assert!(
        times[1] - times[0] >= Duration::from_millis(80),
        "{:?}",
        times[1] - times[0]
    );
    assert!(
        times[2] - times[1] >= Duration::from_millis(160),
        "{:?}",
        times[2] - times[1]
    );

    let original = b.read_all("orders", 1, Duration::from_secs(10));
    let dead = b.read_all("orders.dlq", 1, Duration::from_secs(10));
    assert_eq!(dead.len(), 1);
    let (o, d) = (&original[0], &dead[0]);
    assert_eq!(d.key(), o.key(), "key byte-identical");
    assert_eq!(d.payload(), o.payload(), "value byte-identical");
    assert_eq!(d.payload(), Some(sent.payload.as_slice()));
    let oh = headers_of(o);
    let dh = headers_of(d);
    assert_eq!(
        &dh[..oh.len()],
        &oh[..],
        "original headers first, unchanged"
    );
    let added: Vec<&str> = dh[oh.len()..].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(added, dlq::ALL.to_vec(), "every dlq-* header, once");
    assert_eq!(header(d, dlq::ORIGINAL_TOPIC).as_deref(), Some("orders"));
    assert_eq!(
        header(d, dlq::ORIGINAL_PARTITION),
        Some(o.partition().to_string())
    );
    assert_eq!(
        header(d, dlq::ORIGINAL_OFFSET),
        Some(o.offset().to_string())
    );
    assert_eq!(
        header(d, dlq::ORIGINAL_TIMESTAMP),
        o.timestamp().to_millis().map(|t| t.to_string())
    );
    assert_eq!(header(d, dlq::CONSUMER_GROUP), Some(group.clone()));
    assert_eq!(header(d, dlq::SERVICE).as_deref(), Some("payment-service"));
    assert_eq!(
        header(d, dlq::ERROR_TYPE).as_deref(),
        Some("PaymentGatewayError")
    );
    assert_eq!(
        header(d, dlq::ERROR_MESSAGE).as_deref(),
        Some("gateway unavailable")
    );
    assert_eq!(header(d, dlq::ATTEMPTS).as_deref(), Some("3"));
    let failed_at = header(d, dlq::FAILED_AT).expect("failed-at");
    assert!(
        chrono::DateTime::parse_from_rfc3339(&failed_at).is_ok(),
        "{failed_at}"
    );
    assert!(all_committed(&b, &group, "orders").await);
}

/// One malformed record and what must become of it.
struct Case {
    name: &'static str,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(&'static str, Option<Vec<u8>>)>,
    expect: Expect,
}

#[derive(Debug, PartialEq)]
enum Expect {
    Processed,
    /// Processed with a correlation id adopted from the event id.
    Adopted,
    DeadLettered(&'static str),
}

fn kausal_headers(
    event_type: &str,
    correlation: Option<&[u8]>,
) -> Vec<(&'static str, Option<Vec<u8>>)> {
    let mut hs = vec![
        (
            h::EVENT_ID,
            Some(kausal_kafka::ids::new_event_id().to_string().into_bytes()),
        ),
        (h::EVENT_TYPE, Some(event_type.as_bytes().to_vec())),
        (h::EVENT_VERSION, Some(b"1".to_vec())),
    ];
    if let Some(c) = correlation {
        hs.push((h::CORRELATION_ID, Some(c.to_vec())));
    }
    hs
}

fn order_json(id: &str) -> Vec<u8> {
    serde_json::to_vec(&order(id)).expect("json")
}

fn bad_input_cases() -> Vec<Case> {
    let big_valid = {
        let mut v = serde_json::to_value(order("ord-big")).expect("value");
        v["notes"] = serde_json::Value::String("x".repeat(1024 * 1024));
        serde_json::to_vec(&v).expect("json")
    };
    let mut big_invalid = vec![b'{'; 1024 * 1024];
    big_invalid[0] = b'[';
    let with = |extra: Vec<(&'static str, Option<Vec<u8>>)>| {
        let mut hs = kausal_headers("OrderPlaced", Some(b"corr-1"));
        hs.extend(extra);
        hs
    };
    vec![
        Case {
            name: "invalid JSON",
            key: Some(b"k1".to_vec()),
            value: Some(b"{not json".to_vec()),
            headers: with(vec![]),
            expect: Expect::DeadLettered("DeserializationError"),
        },
        Case {
            name: "wrong field types",
            key: Some(b"k2".to_vec()),
            value: Some(
                br#"{"order_id":5,"user_id":[],"amount":"ten","currency":"EUR","created_at":"t"}"#
                    .to_vec(),
            ),
            headers: with(vec![]),
            expect: Expect::DeadLettered("DeserializationError"),
        },
        Case {
            name: "unknown event type",
            key: Some(b"k3".to_vec()),
            value: Some(order_json("ord-unknown")),
            headers: kausal_headers("OrderCancelled", Some(b"corr-1")),
            expect: Expect::DeadLettered("UnknownEventType"),
        },
        Case {
            name: "invalid order",
            key: Some(b"k4".to_vec()),
            value: Some(
                serde_json::to_vec(&OrderPlaced {
                    amount: -1.0,
                    ..order("ord-neg")
                })
                .expect("json"),
            ),
            headers: with(vec![]),
            expect: Expect::DeadLettered("InvalidOrder"),
        },
        Case {
            name: "empty value",
            key: Some(b"k5".to_vec()),
            value: Some(Vec::new()),
            headers: with(vec![]),
            expect: Expect::DeadLettered("DeserializationError"),
        },
        Case {
            name: "null value",
            key: Some(b"k6".to_vec()),
            value: None,
            headers: with(vec![]),
            expect: Expect::DeadLettered("DeserializationError"),
        },
        Case {
            name: "1 MiB invalid payload",
            key: Some(b"k7".to_vec()),
            value: Some(big_invalid),
            headers: with(vec![]),
            expect: Expect::DeadLettered("DeserializationError"),
        },
        Case {
            name: "1 MiB valid payload",
            key: Some(b"ord-big".to_vec()),
            value: Some(big_valid),
            headers: with(vec![]),
            expect: Expect::Processed,
        },
        Case {
            name: "non-UTF-8 correlation id",
            key: Some(b"ord-utf".to_vec()),
            value: Some(order_json("ord-utf")),
            headers: kausal_headers("OrderPlaced", Some(&[0xff, 0xfe, 0xfd])),
            expect: Expect::Adopted,
        },
        Case {
            name: "non-UTF-8 unknown header",
            key: Some(b"ord-bin".to_vec()),
            value: Some(order_json("ord-bin")),
            headers: with(vec![("x-binary", Some(vec![0, 0xff]))]),
            expect: Expect::Processed,
        },
        Case {
            name: "broken traceparent",
            key: Some(b"ord-tp".to_vec()),
            value: Some(order_json("ord-tp")),
            headers: with(vec![(h::TRACEPARENT, Some(b"00-zzzz-01".to_vec()))]),
            expect: Expect::Processed,
        },
        Case {
            name: "traceparent of version ff",
            key: Some(b"ord-tp3".to_vec()),
            value: Some(order_json("ord-tp3")),
            headers: with(vec![(
                h::TRACEPARENT,
                Some(b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_vec()),
            )]),
            expect: Expect::Processed,
        },
        Case {
            name: "traceparent with all-zero ids",
            key: Some(b"ord-tp4".to_vec()),
            value: Some(order_json("ord-tp4")),
            headers: with(vec![(
                h::TRACEPARENT,
                Some(b"00-00000000000000000000000000000000-0000000000000000-01".to_vec()),
            )]),
            expect: Expect::Processed,
        },
        Case {
            name: "non-UTF-8 traceparent",
            key: Some(b"ord-tp2".to_vec()),
            value: Some(order_json("ord-tp2")),
            headers: with(vec![(h::TRACEPARENT, Some(vec![0xc3, 0x28]))]),
            expect: Expect::Processed,
        },
        Case {
            name: "missing correlation id",
            key: Some(b"ord-nocorr".to_vec()),
            value: Some(order_json("ord-nocorr")),
            headers: kausal_headers("OrderPlaced", None),
            expect: Expect::Adopted,
        },
        Case {
            name: "duplicated correlation id",
            key: Some(b"ord-dup".to_vec()),
            value: Some(order_json("ord-dup")),
            headers: with(vec![(h::CORRELATION_ID, Some(b"corr-2".to_vec()))]),
            expect: Expect::Processed,
        },
        Case {
            name: "null key",
            key: None,
            value: Some(order_json("ord-nokey")),
            headers: with(vec![]),
            expect: Expect::Processed,
        },
    ]
}

on_brokers!(every_bad_input_class_has_a_defined_outcome_and_the_consumer_survives: Sqlite);
async fn every_bad_input_class_has_a_defined_outcome_and_the_consumer_survives(engine: Engine) {
    let b = setup(engine).await;
    let plain = b.plain_producer();
    let cases = bad_input_cases();
    let mut positions = Vec::new();
    for case in &cases {
        let hs: Vec<(&str, Option<&[u8]>)> = case
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_deref()))
            .collect();
        positions.push(
            send(
                &plain,
                "orders",
                case.key.as_deref(),
                case.value.as_deref(),
                &hs,
            )
            .await,
        );
    }
    let group = format!("payment-{}", unique());
    let running = start_payment(
        &b,
        &group,
        ScriptedGateway::default(),
        fast_retry(3),
        CorrelationPolicy::Adopt,
        None,
    );
    assert!(
        eventually(Duration::from_secs(60), || running.count() >= cases.len()).await,
        "handled {}",
        running.count()
    );
    // The consumer is still alive: a good order after all of that is handled.
    let producer = EventProducer::new(&b.kafka, "order-test", Metrics::new()).expect("producer");
    place(&b, &producer, "ord-after").await;
    assert!(
        eventually(Duration::from_secs(30), || running.count() > cases.len()).await,
        "consumer stopped handling"
    );
    let (_, outcomes) = running.stop().await;
    assert!(
        all_committed(&b, &group, "orders").await,
        "every offset committed"
    );

    for (case, (partition, offset)) in cases.iter().zip(&positions) {
        let (event, outcome) = outcomes
            .iter()
            .find(|(e, _)| e.partition == *partition && e.offset == *offset)
            .unwrap_or_else(|| panic!("{}: no outcome", case.name));
        match (&case.expect, outcome) {
            (Expect::Processed, Outcome::Processed { attempts: 1 }) => {
                assert!(
                    !event.issues.iter().any(|i| i.is_correlation_adopted()),
                    "{}",
                    case.name
                );
            }
            (Expect::Adopted, Outcome::Processed { attempts: 1 }) => {
                assert_eq!(
                    event.correlation_id().as_str(),
                    event.event_id().to_string(),
                    "{}",
                    case.name
                );
            }
            (
                Expect::DeadLettered(kind),
                Outcome::DeadLettered {
                    attempts,
                    error_type,
                    error_message,
                },
            ) => {
                assert_eq!(error_type, kind, "{}: {error_message}", case.name);
                assert_eq!(*attempts, 1, "{}: fatal errors are not retried", case.name);
                assert!(!error_message.is_empty(), "{}", case.name);
            }
            (want, got) => panic!("{}: wanted {want:?}, got {got:?}", case.name),
        }
    }
    // Dead letters keep their original value, the 1 MiB one included.
    let dead_count = cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::DeadLettered(_)))
        .count();
    let dead = b.read_all("orders.dlq", dead_count, Duration::from_secs(30));
    assert_eq!(dead.len(), dead_count);
    for case in cases
        .iter()
        .filter(|c| matches!(c.expect, Expect::DeadLettered(_)))
    {
        let d = dead
            .iter()
            .find(|d| d.key() == case.key.as_deref())
            .unwrap_or_else(|| panic!("{}: not in DLQ", case.name));
        assert_eq!(
            d.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            case.value.clone().unwrap_or_default(),
            "{}",
            case.name
        );
    }
    // The trace continues even where the incoming context was broken.
    let payments = b.read_all("payments", 1, Duration::from_secs(10));
    for m in &payments {
        let tp = header(m, h::TRACEPARENT).expect("traceparent on every emitted event");
        assert!(kausal_core::TraceParent::parse(&tp).is_ok(), "{tp}");
    }
}

on_brokers!(reject_policy_dead_letters_events_without_correlation_id: Sqlite);
async fn reject_policy_dead_letters_events_without_correlation_id(engine: Engine) {
    let b = setup(engine).await;
    let plain = b.plain_producer();
    let hs = kausal_headers("OrderPlaced", None);
    let hs: Vec<(&str, Option<&[u8]>)> = hs.iter().map(|(k, v)| (*k, v.as_deref())).collect();
    send(
        &plain,
        "orders",
        Some(b"ord-x"),
        Some(&order_json("ord-x")),
        &hs,
    )
    .await;
    let gateway = ScriptedGateway::default();
    let group = format!("payment-{}", unique());
    let running = start_payment(
        &b,
        &group,
        gateway.clone(),
        fast_retry(3),
        CorrelationPolicy::Reject,
        None,
    );
    assert!(eventually(Duration::from_secs(60), || running.count() >= 1).await);
    let (_, outcomes) = running.stop().await;
    match &outcomes[0].1 {
        Outcome::DeadLettered {
            error_type,
            attempts,
            ..
        } => {
            assert_eq!(error_type, "MissingCorrelationId");
            assert_eq!(*attempts, 0, "the handler never ran");
        }
        other => panic!("wanted a dead letter, got {other:?}"),
    }
    assert_eq!(gateway.charges("ord-x"), 0);
}

on_brokers!(a_plain_client_event_gets_a_deterministic_id_and_an_adopted_correlation_id: Sqlite);
async fn a_plain_client_event_gets_a_deterministic_id_and_an_adopted_correlation_id(
    engine: Engine,
) {
    let b = setup(engine).await;
    let plain = b.plain_producer();
    let (partition, offset) = send(
        &plain,
        "orders",
        Some(b"ord-plain"),
        Some(&order_json("ord-plain")),
        &[],
    )
    .await;
    let group = format!("payment-{}", unique());
    let running = start_payment(
        &b,
        &group,
        ScriptedGateway::default(),
        fast_retry(3),
        CorrelationPolicy::Adopt,
        None,
    );
    assert!(eventually(Duration::from_secs(60), || running.count() >= 1).await);
    let (_, outcomes) = running.stop().await;
    let expected_id = kausal_core::EventId::for_record("orders", partition, offset);
    let (event, outcome) = &outcomes[0];
    assert_eq!(outcome, &Outcome::Processed { attempts: 1 });
    assert_eq!(event.event_id(), expected_id);
    assert_eq!(event.correlation_id().as_str(), expected_id.to_string());
    let payments = b.read_all("payments", 1, Duration::from_secs(10));
    let p = &payments[0];
    assert_eq!(
        header(p, h::CAUSATION_ID),
        Some(expected_id.to_string()),
        "the payment names the plain event as its cause"
    );
    assert_eq!(
        header(p, h::CORRELATION_ID),
        Some(expected_id.to_string()),
        "and carries the adopted correlation id"
    );
    assert_eq!(
        header(p, h::EVENT_TYPE).as_deref(),
        Some("PaymentProcessed")
    );
}

on_brokers!(emitted_events_inherit_correlation_set_causation_and_continue_the_trace: Sqlite);
async fn emitted_events_inherit_correlation_set_causation_and_continue_the_trace(engine: Engine) {
    let b = setup(engine).await;
    let producer = EventProducer::new(&b.kafka, "order-test", Metrics::new()).expect("producer");
    let parent =
        kausal_core::TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
            .expect("valid");
    let correlation: kausal_core::CorrelationId = "checkout-42".parse().expect("valid");
    let sent = kausal_order::place_order(
        &producer,
        "orders",
        &order("ord-trace"),
        Some(correlation),
        Some(parent),
    )
    .await
    .expect("sent");
    let group = format!("payment-{}", unique());
    let running = start_payment(
        &b,
        &group,
        ScriptedGateway::default(),
        fast_retry(3),
        CorrelationPolicy::Adopt,
        None,
    );
    assert!(eventually(Duration::from_secs(60), || running.count() >= 1).await);
    let (_, outcomes) = running.stop().await;
    let consumer_span = outcomes[0].0.span_id();
    let p = &b.read_all("payments", 1, Duration::from_secs(10))[0];
    assert_eq!(header(p, h::CORRELATION_ID).as_deref(), Some("checkout-42"));
    assert_eq!(
        header(p, h::CAUSATION_ID),
        Some(sent.headers.event_id.to_string())
    );
    assert_eq!(
        header(p, h::SOURCE_SERVICE).as_deref(),
        Some("payment-service")
    );
    let tp = kausal_core::TraceParent::parse(&header(p, h::TRACEPARENT).expect("traceparent"))
        .expect("valid");
    assert_eq!(
        tp.trace_id, parent.trace_id,
        "one trace id from the caller to the payment"
    );
    // The header names the payment's own `send payments` span, whose parent
    // is the consumer's `process` span (that parentage is asserted on
    // exported spans in tests/otel.rs).
    assert_ne!(
        tp.parent_id, consumer_span,
        "the payment's traceparent names its send span, not the consumer's span"
    );
    let o = &b.read_all("orders", 1, Duration::from_secs(10))[0];
    let otp = kausal_core::TraceParent::parse(&header(o, h::TRACEPARENT).expect("traceparent"))
        .expect("valid");
    assert_eq!(
        otp.trace_id, parent.trace_id,
        "the order continues the caller's trace"
    );
}

on_brokers!(two_instances_share_the_partitions_and_charge_each_order_once: Sqlite);
async fn two_instances_share_the_partitions_and_charge_each_order_once(engine: Engine) {
    let b = setup(engine).await;
    let n = 300;
    let producer = EventProducer::new(&b.kafka, "order-test", Metrics::new()).expect("producer");
    for i in 0..n {
        place(&b, &producer, &format!("ord-{i}")).await;
    }
    // Slow charges keep the first member busy while the second joins.
    let gateway = ScriptedGateway(Arc::new(Script {
        delay: Duration::from_millis(30),
        ..Script::default()
    }));
    let group = format!("payment-{}", unique());
    let first = start_payment(
        &b,
        &group,
        gateway.clone(),
        fast_retry(3),
        CorrelationPolicy::Adopt,
        Some(sqlite_store(&b).await),
    );
    assert!(
        eventually(Duration::from_secs(60), || first.count() >= 30).await,
        "first member started"
    );
    let second = start_payment(
        &b,
        &group,
        gateway.clone(),
        fast_retry(3),
        CorrelationPolicy::Adopt,
        Some(sqlite_store(&b).await),
    );
    let handled = |a: &Running, b: &Running| {
        let mut ids = HashSet::new();
        for r in [a, b] {
            for (e, o) in r.outcomes.lock().expect("lock").iter() {
                if matches!(o, Outcome::Processed { .. }) {
                    ids.insert(e.event_id());
                }
            }
        }
        ids.len()
    };
    assert!(
        eventually(Duration::from_secs(120), || handled(&first, &second) >= n).await,
        "handled {}",
        handled(&first, &second)
    );
    let (_, a) = first.stop().await;
    let (_, c) = second.stop().await;
    assert!(!c.is_empty(), "the second member took part");
    let calls = gateway.calls_per_order();
    assert_eq!(calls.len(), n);
    let twice: Vec<_> = calls.iter().filter(|(_, c)| **c != 1).collect();
    assert!(twice.is_empty(), "charged more than once: {twice:?}");
    let payments = b.read_all("payments", n, Duration::from_secs(30));
    let per_order = count_by_key(&payments);
    assert_eq!(per_order.len(), n);
    assert!(
        per_order.values().all(|c| *c == 1),
        "one PaymentProcessed per order"
    );
    let skipped = a
        .iter()
        .chain(&c)
        .filter(|(_, o)| *o == Outcome::DuplicateSkipped)
        .count();
    println!("redeliveries skipped by the idempotency guard: {skipped}");
}

on_brokers!(a_dead_lettered_record_delivered_again_is_skipped_but_its_replay_is_handled: Sqlite);
/// A record dead-lettered and then delivered again (a crash between the
/// dead letter and the commit, simulated by a second copy of the record) is
/// not handled again, even though the gateway would now accept it: no
/// payment *and* dead letter for one order. A replay from the ledger
/// (`replay-count` 1) is handled.
async fn a_dead_lettered_record_delivered_again_is_skipped_but_its_replay_is_handled(
    engine: Engine,
) {
    let b = setup(engine).await;
    let plain = b.plain_producer();
    let event_id = kausal_kafka::ids::new_event_id().to_string();
    let value = order_json("ord-redelivered");
    let copy = |replay: Option<&'static [u8]>| {
        let mut hs: Vec<(&str, Option<Vec<u8>>)> = vec![
            (h::EVENT_ID, Some(event_id.clone().into_bytes())),
            (h::EVENT_TYPE, Some(b"OrderPlaced".to_vec())),
            (h::CORRELATION_ID, Some(b"corr-redelivered".to_vec())),
        ];
        if let Some(r) = replay {
            hs.push((h::REPLAY_COUNT, Some(r.to_vec())));
        }
        hs
    };
    // All three copies in one partition, in order.
    let gateway = ScriptedGateway::default();
    gateway
        .0
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let group = format!("payment-{}", unique());
    let running = start_payment(
        &b,
        &group,
        gateway.clone(),
        fast_retry(2),
        CorrelationPolicy::Adopt,
        Some(sqlite_store(&b).await),
    );
    let first = copy(None);
    let replay = copy(Some(b"1"));
    async fn deliver(
        plain: &rdkafka::producer::FutureProducer,
        value: &[u8],
        headers: &[(&'static str, Option<Vec<u8>>)],
    ) {
        let headers: Vec<(&str, Option<&[u8]>)> =
            headers.iter().map(|(k, v)| (*k, v.as_deref())).collect();
        send(
            plain,
            "orders",
            Some(b"ord-redelivered"),
            Some(value),
            &headers,
        )
        .await;
    }
    deliver(&plain, &value, &first).await;
    assert!(eventually(Duration::from_secs(60), || running.count() >= 1).await);
    // The gateway is back: the redelivered copy would now be paid.
    gateway
        .0
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    deliver(&plain, &value, &first).await;
    deliver(&plain, &value, &replay).await;
    assert!(eventually(Duration::from_secs(60), || running.count() >= 3).await);
    let (_, outcomes) = running.stop().await;
    let kinds: Vec<&str> = outcomes.iter().map(|(_, o)| o.label()).collect();
    assert_eq!(kinds, ["dead_lettered", "duplicate_skipped", "processed"]);
    // Two failed charges for the first copy, none for the second, one for
    // the replay.
    assert_eq!(gateway.charges("ord-redelivered"), 3);
    let payments = b.read_all("payments", 1, Duration::from_secs(10));
    assert_eq!(payments.len(), 1, "one payment, from the replay");
}

/// Forwards each record to `payments`; a record keyed `nowhere-*` to a topic
/// that does not exist (the broker's refusal comes back with the
/// acknowledgement, after later records were handled), one keyed `huge-*`
/// as an event too large to send (refused before sending).
struct Forward;

impl kausal_kafka::Handler for Forward {
    async fn handle(
        &self,
        event: &IncomingEvent,
        out: &mut kausal_kafka::Emitter,
    ) -> Result<(), kausal_kafka::HandlerError> {
        let key = event.key_str().unwrap_or_default().to_owned();
        let (topic, padding) = if key.starts_with("nowhere") {
            ("no-such-topic", 0)
        } else if key.starts_with("huge") {
            ("payments", 9 << 20)
        } else {
            ("payments", 0)
        };
        let body = serde_json::json!({ "order": key, "padding": "x".repeat(padding) });
        out.emit_to(topic, Some(&key), "Forwarded", 1, &body)
    }
}

on_brokers!(a_record_whose_output_the_broker_refuses_is_dead_lettered_and_the_rest_flow_on: Sqlite);
async fn a_record_whose_output_the_broker_refuses_is_dead_lettered_and_the_rest_flow_on(
    engine: Engine,
) {
    let b = setup(engine).await;
    b.create_topics(&[("fw", 1), ("fw.dlq", 1)]).await;
    // Fail a send to a missing topic after 1 s instead of librdkafka's 30 s.
    let kafka = b
        .kafka
        .clone()
        .with("topic.metadata.propagation.max.ms", "1000");
    let keys: Vec<String> = (0..30)
        .map(|i| format!("o-{i}"))
        .flat_map(|k| match k.as_str() {
            "o-9" => vec![k, "nowhere-1".to_owned()],
            "o-19" => vec![k, "huge-1".to_owned()],
            _ => vec![k],
        })
        .collect();
    let group = format!("forward-{}", unique());
    let running = start_runtime(
        &kafka,
        "forwarder",
        &group,
        &["fw"],
        Forward,
        fast_retry(2),
        CorrelationPolicy::Adopt,
        Some(sqlite_store(&b).await),
    );
    let plain = b.plain_producer();
    let mut originals = HashMap::new();
    for key in &keys {
        let value = order_json(key);
        send(&plain, "fw", Some(key.as_bytes()), Some(&value), &[]).await;
        originals.insert(key.clone(), value);
    }
    assert!(
        eventually(Duration::from_secs(60), || running.count() >= keys.len()).await,
        "every record settles"
    );
    assert!(
        all_committed(&b, &group, "fw").await,
        "every offset committed"
    );
    let (summary, outcomes) = running.stop().await;
    // Records settle in their partition's order, whatever finished first.
    let settled: Vec<String> = outcomes
        .iter()
        .map(|(e, _)| e.key_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(settled, keys);
    for (event, outcome) in &outcomes {
        let key = event.key_str().unwrap_or_default();
        match outcome {
            Outcome::DeadLettered { error_type, .. } => {
                assert!(key == "nowhere-1" || key == "huge-1", "{key} dead-lettered");
                assert_eq!(error_type, "PublishFailed", "{key}");
            }
            Outcome::Processed { attempts } => {
                assert!(key.starts_with("o-"), "{key} processed");
                assert_eq!(*attempts, 1);
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    assert_eq!((summary.processed, summary.dead_lettered), (30, 2));
    let forwarded = b.read_all("payments", 30, Duration::from_secs(20));
    let mut forwarded_keys: Vec<String> = forwarded
        .iter()
        .map(|m| String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned())
        .collect();
    forwarded_keys.sort();
    let mut good: Vec<String> = keys
        .iter()
        .filter(|k| k.starts_with("o-"))
        .cloned()
        .collect();
    good.sort();
    assert_eq!(forwarded_keys, good, "each good record forwarded once");
    let letters = b.read_all("fw.dlq", 2, Duration::from_secs(20));
    let mut lettered = Vec::new();
    for letter in &letters {
        let key = String::from_utf8_lossy(letter.key().unwrap_or_default()).into_owned();
        assert_eq!(
            letter.payload(),
            originals.get(&key).map(Vec::as_slice),
            "{key}: original bytes"
        );
        assert_eq!(
            header(letter, dlq::ERROR_TYPE).as_deref(),
            Some("PublishFailed")
        );
        lettered.push(key);
    }
    lettered.sort();
    assert_eq!(lettered, ["huge-1", "nowhere-1"]);
}

/// Fails each record as its key's script says, one class per call, then
/// accepts it; counts the calls per key. A key without a script fails with
/// an outage for good.
struct Scripted {
    scripts: HashMap<&'static str, Vec<kausal_kafka::ErrorClass>>,
    calls: Arc<Mutex<HashMap<String, usize>>>,
}

impl Scripted {
    fn new(scripts: &[(&'static str, Vec<kausal_kafka::ErrorClass>)]) -> Self {
        Self {
            scripts: scripts.iter().cloned().collect(),
            calls: Arc::default(),
        }
    }
}

impl kausal_kafka::Handler for Scripted {
    async fn handle(
        &self,
        event: &IncomingEvent,
        _out: &mut kausal_kafka::Emitter,
    ) -> Result<(), kausal_kafka::HandlerError> {
        use kausal_kafka::{ErrorClass, HandlerError};
        let key = event.key_str().unwrap_or_default().to_owned();
        let call = {
            let mut calls = self.calls.lock().expect("lock");
            let n = calls.entry(key.clone()).or_default();
            *n += 1;
            *n
        };
        let class = match self.scripts.get(key.as_str()) {
            Some(script) => script.get(call - 1).copied(),
            None => Some(ErrorClass::Unavailable),
        };
        match class {
            None => Ok(()),
            Some(ErrorClass::Unavailable) => Err(HandlerError::unavailable(
                "StoreUnavailable",
                format!("the store is down (call {call})"),
            )),
            Some(ErrorClass::Retryable) => Err(HandlerError::retryable(
                "Timeout",
                format!("timed out (call {call})"),
            )),
            Some(ErrorClass::Fatal) => Err(HandlerError::fatal("Bad", "bad")),
        }
    }
}

on_brokers!(an_outage_is_waited_out_without_spending_the_retry_budget: Sqlite);
/// An outage ([`kausal_kafka::ErrorClass::Unavailable`]) is waited out past the retry
/// budget and does not spend it: six outage failures, then one transient
/// failure, then success, under a budget of two attempts, is processed at
/// attempt 8. The same record failing transiently is dead-lettered after
/// two, as before.
async fn an_outage_is_waited_out_without_spending_the_retry_budget(engine: Engine) {
    use kausal_kafka::ErrorClass::{Retryable, Unavailable};
    let b = setup(engine).await;
    let producer = EventProducer::new(&b.kafka, "order-test", Metrics::new()).expect("producer");
    place(&b, &producer, "outage").await;
    place(&b, &producer, "transient").await;
    let mut outage = vec![Unavailable; 6];
    outage.push(Retryable);
    let handler = Scripted::new(&[("outage", outage), ("transient", vec![Retryable; 10])]);
    let calls = handler.calls.clone();
    let group = format!("outage-{}", unique());
    let running = start_runtime(
        &b.kafka,
        "outage-test",
        &group,
        &["orders"],
        handler,
        fast_retry(2),
        CorrelationPolicy::Adopt,
        None,
    );
    assert!(
        eventually(Duration::from_secs(60), || running.count() >= 2).await,
        "only {} of 2 settled; calls {:?}",
        running.count(),
        calls.lock().expect("lock")
    );
    let (_, outcomes) = running.stop().await;
    let outcome_of = |key: &str| {
        let found: Vec<_> = outcomes
            .iter()
            .filter(|(e, _)| e.key_str() == Some(key))
            .map(|(_, o)| o.clone())
            .collect();
        found
    };
    assert_eq!(outcome_of("outage"), [Outcome::Processed { attempts: 8 }]);
    assert_eq!(
        outcome_of("transient"),
        [Outcome::DeadLettered {
            attempts: 2,
            error_type: "Timeout".into(),
            error_message: "timed out (call 2)".into(),
        }]
    );
    let dead = b.read_all("orders.dlq", 1, Duration::from_secs(10));
    let keys: Vec<_> = dead.iter().map(|m| m.key().map(<[u8]>::to_vec)).collect();
    assert_eq!(
        keys,
        [Some(b"transient".to_vec())],
        "only the transient failure is dead-lettered"
    );
    assert!(all_committed(&b, &group, "orders").await);
}

on_brokers!(shutdown_abandons_an_outage_wait_and_leaves_the_record_uncommitted: Sqlite);
/// A record whose handler waits on an outage that does not end is neither
/// dead-lettered nor committed: shutdown abandons the wait, and the next
/// member of the group gets the record again.
async fn shutdown_abandons_an_outage_wait_and_leaves_the_record_uncommitted(engine: Engine) {
    let b = setup(engine).await;
    let producer = EventProducer::new(&b.kafka, "order-test", Metrics::new()).expect("producer");
    place(&b, &producer, "down").await;
    let group = format!("outage-{}", unique());
    let start = |scripts: &[(&'static str, Vec<kausal_kafka::ErrorClass>)]| {
        let handler = Scripted::new(scripts);
        let calls = handler.calls.clone();
        let running = start_runtime(
            &b.kafka,
            "outage-test",
            &group,
            &["orders"],
            handler,
            // No retry budget at all: only an outage waits.
            RetryPolicy::no_retry(),
            CorrelationPolicy::Adopt,
            None,
        );
        (running, calls)
    };
    let (running, calls) = start(&[]);
    let tried = |n: usize| {
        let calls = calls.clone();
        move || {
            calls
                .lock()
                .expect("lock")
                .get("down")
                .copied()
                .unwrap_or(0)
                >= n
        }
    };
    assert!(
        eventually(Duration::from_secs(60), tried(4)).await,
        "the handler was not called again during the outage"
    );
    let (summary, outcomes) = running.stop().await;
    assert!(outcomes.is_empty(), "{outcomes:?}");
    assert_eq!(summary.dead_lettered, 0);
    assert!(
        b.read_all("orders.dlq", 1, Duration::from_secs(2))
            .is_empty(),
        "nothing dead-lettered"
    );

    // The store is back: the next run of the group handles the record.
    let (running, _) = start(&[("down", Vec::new())]);
    assert!(eventually(Duration::from_secs(60), || running.count() >= 1).await);
    let (_, outcomes) = running.stop().await;
    let keys: Vec<_> = outcomes
        .iter()
        .map(|(e, o)| (e.key_str().map(str::to_owned), o.clone()))
        .collect();
    assert_eq!(
        keys,
        [(Some("down".to_owned()), Outcome::Processed { attempts: 1 })]
    );
    assert!(all_committed(&b, &group, "orders").await);
}

/// Accepts every record.
struct Accept;

impl kausal_kafka::Handler for Accept {
    async fn handle(
        &self,
        _event: &IncomingEvent,
        _out: &mut kausal_kafka::Emitter,
    ) -> Result<(), kausal_kafka::HandlerError> {
        Ok(())
    }
}

/// The `event-type` header comes from any producer: 10 000 distinct values
/// must not become 10 000 series. Each record is handled and counted, the
/// first `MAX_EVENT_TYPES` under their own label, the rest as `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_event_types_leave_the_metric_series_bounded() {
    use kausal_telemetry::metrics::{MAX_EVENT_TYPES, OTHER_EVENT_TYPE};
    const RECORDS: usize = 10_000;
    let b = TestBroker::start(Engine::Sqlite).await;
    b.create_topics(&[("typed", 3), ("typed.dlq", 3)]).await;
    let metrics = Metrics::new();
    let producer =
        EventProducer::new(&b.kafka, "typed-service", metrics.clone()).expect("producer");
    let group = format!("typed-{}", unique());
    let runtime = ConsumerRuntime::new(
        b.kafka.clone(),
        "typed-service",
        &group,
        &["typed"],
        Accept,
        producer,
    )
    .commit_interval(Duration::from_millis(50));
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let task = tokio::spawn(async move { runtime.run(token).await.expect("runtime runs") });

    let plain = b.plain_producer();
    let ids: Vec<(String, String)> = (0..RECORDS)
        .map(|i| (format!("ev-{i}"), format!("Made.Up.Type{i}")))
        .collect();
    for chunk in ids.chunks(500) {
        futures::future::join_all(chunk.iter().map(|(id, event_type)| {
            let plain = &plain;
            async move {
                let headers = [
                    (h::EVENT_ID, Some(id.as_bytes())),
                    (h::EVENT_TYPE, Some(event_type.as_bytes())),
                    (h::CORRELATION_ID, Some(id.as_bytes())),
                ];
                send(plain, "typed", Some(id.as_bytes()), Some(b"{}"), &headers).await
            }
        }))
        .await;
    }
    let handled = |text: &str| -> u64 {
        text.lines()
            .filter(|l| l.starts_with("event_processing_duration_seconds_count{topic=\"typed\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    assert!(
        eventually(Duration::from_secs(180), || handled(&metrics.encode())
            >= RECORDS as u64)
        .await,
        "every record handled: {} of {RECORDS}",
        handled(&metrics.encode())
    );
    shutdown.cancel();
    task.await.expect("runtime task");

    let text = metrics.encode();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("event_processing_duration_seconds_count{topic=\"typed\""))
        .collect();
    // One bound per process: the runtime's own event types (heartbeats,
    // receipts) published meanwhile took a few of the kept places.
    assert!(
        (MAX_EVENT_TYPES - 5..=MAX_EVENT_TYPES + 1).contains(&series.len()),
        "the kept types and other: {} series",
        series.len()
    );
    let other = format!(
        "event_processing_duration_seconds_count{{topic=\"typed\",event_type=\"{OTHER_EVENT_TYPE}\"}} "
    );
    let others: u64 = series
        .iter()
        .find_map(|l| l.strip_prefix(&other)?.parse().ok())
        .expect("an other series");
    assert_eq!(
        others,
        (RECORDS - (series.len() - 1)) as u64,
        "the rest are other"
    );
}
