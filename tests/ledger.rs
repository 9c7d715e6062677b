//! Seed 004's chain under `kausal up` (issue 14): an order placed over HTTP
//! is charged by payment-service, which posts the customer → merchant entry
//! to ledger-service over HTTP; the ledger appends it to its event store
//! with an outbox row, and the outbox relay publishes `EntryPosted` on
//! `ledger.entry.v1`. Checked on what a real OTLP receiver (the console)
//! got: one trace from `process orders` through the CLIENT and SERVER
//! spans, the append, `publishEvent`, `send ledger.entry.v1` and
//! read-model-service's `process ledger.entry.v1`; in the
//! lineage, `EntryPosted` caused by the `OrderPlaced` it was posted for,
//! and read-model-service's receipt for it; the customer's account debited
//! in the ledger and the same in the read model.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kausal_contracts::ledger::LEDGER_ENTRIES_TOPIC;
use kausal_eventsource::{EventStore, EventStoreMetrics};
use kausal_kafka::runtime::Outcome;
use kausal_kafka::{CorrelationPolicy, EventProducer};
use kausal_outbox::{OutboxMetrics, Relay, RelayConfig};
use kausal_payment::{LedgerClient, PaymentHandler, PaymentMetrics, SERVICE_NAME};
use kausal_store::Store;
use kausal_telemetry::Metrics;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::harness::{
    CuttableProxy, Engine, TestBroker, eventually, free_port, relative, scratch_dir,
};
use crate::http::request;
use crate::process::Up;
use crate::runtime::{ScriptedGateway, fast_retry, order, start_runtime};

async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = request(addr, "GET", path, &[], "").await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// The ledger's HTTP API over `store`, listening on `addr` until `stop`.
async fn serve_ledger(
    store: &Store,
    addr: &str,
    stop: &CancellationToken,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let events = EventStore::new(store.clone(), EventStoreMetrics::register(&Metrics::new()));
    kausal_ledger::http::serve(
        addr.parse().expect("addr"),
        kausal_ledger::http::ApiState {
            ledger: kausal_ledger::Ledger::new(events),
        },
        stop.clone().cancelled_owned(),
    )
    .await
    .unwrap_or_else(|e| panic!("the ledger API on {addr}: {e}"))
}

/// The span of `doc` named `name` in `service`, if any.
fn span<'a>(
    doc: &'a serde_json::Value,
    service: &str,
    name: &str,
) -> Option<&'a serde_json::Value> {
    doc["spans"]
        .as_array()?
        .iter()
        .find(|s| s["service"] == service && s["name"] == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_reaches_the_ledger_and_its_outbox_in_one_trace() {
    let dir = scratch_dir();
    let data_dir = relative(&dir, "data");
    let ports: Vec<String> = (0..7).map(|_| free_port().to_string()).collect();
    let mut up = Up::spawn(
        &[
            "--rate",
            "0",
            "--payment-failure-rate",
            "0",
            "--payment-decline-rate",
            "0",
            "--broker-port",
            &ports[0],
            "--metrics-port-base",
            &ports[1],
            "--console-port",
            &ports[2],
            "--otlp-grpc-port",
            &ports[3],
            "--http-port",
            &ports[4],
            "--ledger-port",
            &ports[5],
            "--read-model-port",
            &ports[6],
        ],
        &data_dir,
    );
    let banner = up.until(Duration::from_secs(180), |l| {
        l.contains("kausal trace <order-id>")
    });
    let seen = up.seen.join("\n");
    let (Some(_), Some(console), Some(api), Some(ledger), Some(read_model)) = (
        banner,
        up.address("console"),
        up.address("order API  POST"),
        up.address("ledger API POST"),
        up.address("read model GET"),
    ) else {
        let _ = up.interrupt();
        panic!("kausal up printed no banner with the console, the order and ledger APIs:\n{seen}");
    };

    // One order, once the order API listens (the banner comes first).
    let order_id = format!("ord-ledger-{}", crate::harness::unique());
    let body = serde_json::json!({
        "order_id": order_id,
        "user_id": "u-ledger",
        "amount": 12.5,
        "currency": "EUR",
        "customer_email": "ledger@example.com",
    })
    .to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tokio::net::TcpStream::connect(api).await.is_err() {
        assert!(Instant::now() < deadline, "the order API never listened");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, _, placed) = request(
        api,
        "POST",
        "/orders",
        &[("Content-Type", "application/json")],
        &body,
    )
    .await;
    assert_eq!(status, 201, "{placed}");
    let placed: serde_json::Value = serde_json::from_str(&placed).expect("json");
    let correlation = placed["correlation_id"]
        .as_str()
        .expect("correlation")
        .to_owned();

    // The console has it all once spans (batched every few seconds),
    // lineage and the relay's publish are in.
    let waited = Instant::now();
    let doc = loop {
        let (status, doc) = get_json(console, &format!("/api/correlations/{correlation}")).await;
        let complete = status == 200
            && span(&doc, "read-model-service", "process ledger.entry.v1").is_some()
            && span(&doc, "payment-service", "POST /v1/entries").is_some()
            && doc["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["event_type"] == "EntryPosted"));
        if complete {
            break doc;
        }
        if waited.elapsed() > Duration::from_secs(150) {
            let _ = up.interrupt();
            panic!(
                "waited {:?} for the ledger's spans and EntryPosted in the console: {doc:#}",
                waited.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let (balance_status, balance) = get_json(ledger, "/v1/accounts/customer:u-ledger").await;
    // The read model's projection of the same account, once it handled the
    // entry (its span is in, so its write is done).
    let (projected_status, projected) =
        get_json(read_model, "/v1/accounts/customer:u-ledger").await;
    let stopped = up.interrupt();

    // One trace, span by span, each the parent of the next.
    let chain = [
        ("payment-service", "process orders", "consumer"),
        ("payment-service", "POST /v1/entries", "client"),
        ("ledger-service", "POST /v1/entries", "server"),
        (
            "ledger-service",
            "eventsource.event_store.append_events",
            "internal",
        ),
        ("ledger-service", "publishEvent", "internal"),
        ("ledger-service", "send ledger.entry.v1", "producer"),
        ("read-model-service", "process ledger.entry.v1", "consumer"),
    ];
    let spans: Vec<&serde_json::Value> = chain
        .iter()
        .map(|(service, name, kind)| {
            doc["spans"]
                .as_array()
                .and_then(|all| {
                    all.iter().find(|s| {
                        s["service"] == *service && s["name"] == *name && s["kind"] == *kind
                    })
                })
                .unwrap_or_else(|| panic!("{service}'s {kind} span {name} in {doc:#}"))
        })
        .collect();
    for pair in spans.windows(2) {
        assert_eq!(
            pair[1]["trace_id"], pair[0]["trace_id"],
            "one trace: {pair:#?}"
        );
        assert_eq!(
            pair[1]["parent_span_id"], pair[0]["span_id"],
            "{} is the parent of {}",
            pair[0]["name"], pair[1]["name"]
        );
    }
    assert_eq!(
        spans[0]["trace_id"], placed["trace_id"],
        "the trace began at POST /orders"
    );

    // In the lineage: EntryPosted, caused by the OrderPlaced it was posted for.
    let events = doc["events"].as_array().expect("events");
    let id_of = |t: &str| {
        events
            .iter()
            .find(|e| e["event_type"] == t)
            .and_then(|e| e["event_id"].as_str())
            .unwrap_or_else(|| panic!("{t} in {events:#?}"))
            .to_owned()
    };
    let (order_placed, entry_posted) = (id_of("OrderPlaced"), id_of("EntryPosted"));
    assert!(
        doc["edges"].as_array().is_some_and(|edges| edges
            .iter()
            .any(|e| e["cause"] == order_placed.as_str() && e["effect"] == entry_posted.as_str())),
        "OrderPlaced → EntryPosted in {}",
        doc["edges"]
    );

    // The money: 12.50 EUR debited to the customer.
    assert_eq!(balance_status, 200, "{balance}");
    assert_eq!(balance["debits"], 1250, "{balance}");
    assert_eq!(balance["currency"], "EUR");
    assert_eq!(projected_status, 200, "{projected}");
    for field in ["debits", "credits", "balance", "postings", "currency"] {
        assert_eq!(
            projected[field], balance[field],
            "{field}: {projected} vs {balance}"
        );
    }
    // And the read model's receipt for EntryPosted is in the document.
    assert!(
        doc["receipts"]
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["event_id"] == entry_posted.as_str()
                && r["consumer_group"] == "read-model-service")),
        "the read model's receipt: {}",
        doc["receipts"]
    );
    assert_eq!(stopped.and_then(|s| s.code()), Some(0), "Ctrl-C exits 0");
}

/// The ledger's database (PostgreSQL, behind a proxy that can cut it) goes
/// away: `POST /v1/entries` answers 503 with `Retry-After` and writes
/// nothing; once it is back the same request (same key) posts, and the
/// relay, which kept running through the outage, publishes both entries —
/// each once.
async fn a_ledger_without_its_database_answers_503_and_its_relay_resumes(engine: Engine) {
    let db = kausal_store::testing::postgres().await;
    let upstream = {
        let url = url::Url::parse(&db.url).expect("database URL");
        format!(
            "{}:{}",
            url.host_str().expect("host"),
            url.port().unwrap_or(5432)
        )
    };
    let proxy = CuttableProxy::start(upstream).await;
    let mut through = url::Url::parse(&db.url).expect("database URL");
    through.set_host(Some("127.0.0.1")).expect("host");
    through.set_port(Some(proxy.addr.port())).expect("port");
    let store = Store::connect(through.as_str())
        .await
        .expect("the store through the proxy");
    // What the test reads itself goes around the proxy.
    let direct = Store::connect(&db.url).await.expect("the store");

    let b = TestBroker::start(engine).await;
    b.create_topics(&[(LEDGER_ENTRIES_TOPIC, 3)]).await;
    let metrics = Metrics::new();
    let stop = CancellationToken::new();
    let (api, server) = serve_ledger(&store, "127.0.0.1:0", &stop).await;
    let relay = Relay::new(
        store.clone(),
        EventProducer::new(&b.kafka, "ledger-service", Metrics::new()).expect("producer"),
        OutboxMetrics::register(&metrics),
        RelayConfig {
            poll_interval: Duration::from_millis(100),
            ..RelayConfig::new("ledger-service")
        },
    )
    .expect("relay");
    let relaying = tokio::spawn({
        let stop = stop.clone();
        async move { relay.run(stop).await }
    });

    let entry = |amount: u64| {
        serde_json::json!({
            "description": "outage",
            "currency": "EUR",
            "legs": [
                {"account": "cash", "direction": "debit", "amount": amount},
                {"account": "revenue", "direction": "credit", "amount": amount},
            ],
        })
        .to_string()
    };
    let post = |key: &'static str, body: String| async move {
        request(
            api,
            "POST",
            "/v1/entries",
            &[
                ("Idempotency-Key", key),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
        .await
    };
    let (status, _, first) = post("before-the-outage", entry(100)).await;
    assert_eq!(status, 201, "{first}");
    let after_first = direct
        .events_after(kausal_store::GlobalCursor::default())
        .await
        .expect("count");

    proxy.cut();
    let (status, head, refused) = post("during-the-outage", entry(250)).await;
    assert_eq!(status, 503, "{refused}");
    assert!(head.contains("retry-after:"), "{head}");
    assert!(refused.contains("retry"), "says what to do: {refused}");
    // Nothing half-written: only the first entry's events are stored.
    let stored_before = direct
        .events_after(kausal_store::GlobalCursor::default())
        .await
        .expect("count");
    assert_eq!(
        stored_before, after_first,
        "the refused entry wrote nothing"
    );

    proxy.restore();
    // The pool reconnects on its own; the client retries as told.
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let (status, _, body) = post("during-the-outage", entry(250)).await;
        if status == 201 {
            break body;
        }
        assert_eq!(status, 503, "{body}");
        assert!(
            Instant::now() < deadline,
            "the ledger never came back: {body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let (first, second): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&first).expect("json"),
        serde_json::from_str(&second).expect("json"),
    );

    // The relay resumes: both entries on the topic, each once.
    let records = b.read_all(LEDGER_ENTRIES_TOPIC, 3, Duration::from_secs(20));
    let keys: Vec<String> = records
        .iter()
        .filter_map(|m| m.key().map(|k| String::from_utf8_lossy(k).into_owned()))
        .collect();
    for posted in [&first, &second] {
        let id = posted["entry_id"].as_str().expect("entry id");
        assert_eq!(
            keys.iter().filter(|k| *k == id).count(),
            1,
            "{id} in {keys:?}"
        );
    }
    assert_eq!(keys.len(), 2, "{keys:?}");
    let stats = direct.outbox_stats(0).await.expect("outbox stats");
    assert_eq!(stats.pending, 0, "{stats:?}");
    let stored_after = direct
        .events_after(kausal_store::GlobalCursor::default())
        .await
        .expect("count");
    assert!(
        stored_after > stored_before,
        "the retried entry was stored after the outage ({stored_before} → {stored_after})"
    );
    let (_, _, cash) = request(api, "GET", "/v1/accounts/cash", &[], "").await;
    let cash: serde_json::Value = serde_json::from_str(&cash).expect("json");
    assert_eq!(cash["debits"], 350, "{cash}");
    assert_eq!(cash["postings"], 2, "{cash}");

    stop.cancel();
    let _ = server.await;
    let summary = relaying.await.expect("relay task");
    assert_eq!(summary.published, 2, "{summary:?}");
}
on_brokers!(a_ledger_without_its_database_answers_503_and_its_relay_resumes: Sqlite);

/// The ledger is down (nothing listens on its port) when payment charges an
/// order: every attempt's POST is refused (`HttpConnect`, an unavailable
/// dependency), so the order waits well past its retry budget (two
/// attempts) instead of being dead-lettered; once the ledger listens, the
/// next attempt posts the entry, once, and the order is processed.
async fn payment_waits_for_a_ledger_that_refuses_connections(engine: Engine) {
    let b = TestBroker::start(engine).await;
    b.create_topics(&[
        ("orders", 1),
        ("orders.dlq", 1),
        ("payments", 1),
        (LEDGER_ENTRIES_TOPIC, 1),
    ])
    .await;
    let port = free_port();
    let gateway = ScriptedGateway::default();
    let handler = PaymentHandler::new(gateway.clone(), PaymentMetrics::register(&Metrics::new()))
        .with_ledger(
            LedgerClient::new(SERVICE_NAME, &format!("http://127.0.0.1:{port}"))
                .expect("ledger client"),
        );
    let group = format!("payment-{}", crate::harness::unique());
    let running = start_runtime(
        &b.kafka,
        SERVICE_NAME,
        &group,
        &["orders"],
        handler,
        fast_retry(2),
        CorrelationPolicy::Adopt,
        None,
    );
    let producer = EventProducer::new(&b.kafka, "order-test", Metrics::new()).expect("producer");
    let order_id = format!("ord-ledger-down-{}", crate::harness::unique());
    kausal_order::place_order(&producer, "orders", &order(&order_id), None, None)
        .await
        .expect("order published");

    // Twice the budget's attempts, each charged and each refused by the
    // ledger: the order is still waiting, not dead-lettered.
    assert!(
        eventually(Duration::from_secs(60), || gateway.charges(&order_id) >= 4).await,
        "the order was tried {} times while the ledger was down",
        gateway.charges(&order_id)
    );
    assert!(
        running.outcomes().is_empty(),
        "no outcome while the ledger is down: {:?}",
        running.outcomes()
    );

    // The ledger comes up on its port.
    let store = Store::connect(&format!(
        "sqlite://{}",
        b.dir.path().join("ledger.db").display()
    ))
    .await
    .expect("the ledger's store");
    let stop = CancellationToken::new();
    let (ledger, server) = serve_ledger(&store, &format!("127.0.0.1:{port}"), &stop).await;
    assert!(
        eventually(Duration::from_secs(60), || !running.outcomes().is_empty()).await,
        "no outcome once the ledger was up"
    );
    let (summary, outcomes) = running.stop().await;
    let [(_, Outcome::Processed { attempts })] = outcomes.as_slice() else {
        panic!("one order processed: {outcomes:?}");
    };
    assert!(
        *attempts >= 5,
        "processed on an attempt past the outage ({attempts})"
    );
    assert_eq!(summary.dead_lettered, 0, "{summary:?}");
    let payments = b.read_all("payments", 1, Duration::from_secs(30));
    assert_eq!(payments.len(), 1, "one payment event");
    assert_eq!(
        crate::harness::header(&payments[0], kausal_core::headers::EVENT_TYPE).as_deref(),
        Some(kausal_contracts::event_types::PAYMENT_PROCESSED)
    );

    // The ledger holds the charge once.
    let (status, balance) = get_json(ledger, "/v1/accounts/customer:user-1").await;
    assert_eq!(status, 200, "{balance}");
    assert_eq!(
        (&balance["debits"], &balance["postings"]),
        (&serde_json::json!(1250), &serde_json::json!(1)),
        "{balance}"
    );
    stop.cancel();
    server.await.expect("ledger server");
    store.close().await;
}

on_brokers!(payment_waits_for_a_ledger_that_refuses_connections: Sqlite);
