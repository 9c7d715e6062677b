//! The console's dead-letter API (issue 12): the ledger the recorder wrote
//! from a real payment outage, read over HTTP; replay and discard refused
//! without the token or with a wrong one, a dry run that changes nothing,
//! then a replay that reaches the original topic and a discard, each with
//! its actor recorded in the ledger.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kausal_contracts::topics;
use kausal_kafka::EventProducer;
use kausal_payment::{PaymentHandler, PaymentMetrics};
use kausal_store::{DeadLetterFilter, Store};
use kausal_telemetry::Metrics;
use serde_json::Value;

use crate::harness::{Engine, KillOnDrop, TestBroker, header, scratch_dir, spawn_recorder, unique};
use crate::http::request;
use crate::runtime::{ScriptedGateway, fast_retry, order, start_runtime};

const TOKEN: &str = "dlq-test-token";

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    let (status, _, body) = request(addr, method, path, &headers, body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// A payment outage that dead-lettered some orders, recorded in a ledger:
/// the embedded broker with the reference topics, a SQLite store, the
/// payment service (in-process, its gateway down while the orders went
/// through, up again afterwards) and the lineage recorder. Shared by the
/// DLQ API test and the console's browser test (`browser.rs`).
///
/// End it with [`Outage::stop`]: the recorder commits synchronously, and a
/// commit to a broker that is already gone waits forever (fields drop in
/// order, so the broker goes last in any case).
pub(crate) struct Outage {
    recorder: Option<(
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<kausal_lineage::recorder::RecorderSummary>,
    )>,
    payment: Option<crate::runtime::Running>,
    pub(crate) gateway: ScriptedGateway,
    pub(crate) store: Store,
    pub(crate) database: String,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) broker: TestBroker,
}

/// Places `orders` (order id, correlation id) while the payment gateway is
/// down and waits until each is a pending dead letter in the ledger.
pub(crate) async fn payment_outage(orders: &[(&str, &str)]) -> Outage {
    let b = TestBroker::start(Engine::Sqlite).await;
    let mut names = vec![(kausal_kafka::receipt::RECEIPTS_TOPIC.to_owned(), 3)];
    for t in topics::ALL {
        names.push((t.to_owned(), 3));
        names.push((kausal_core::dlq::dlq_topic(t), 3));
    }
    let refs: Vec<(&str, i32)> = names.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    b.create_topics(&refs).await;
    let dir = scratch_dir();
    let database = format!("sqlite://{}", dir.path().join("ledger.db").display());
    let store = Store::connect(&database).await.expect("store");

    // A payment outage dead-letters the orders; the recorder ledgers them.
    let script = crate::runtime::Script::default();
    script.down.store(true, Ordering::SeqCst);
    let gateway = ScriptedGateway(std::sync::Arc::new(script));
    let payment = start_runtime(
        &b.kafka,
        "payment-service",
        "payment-service",
        &[topics::ORDERS],
        PaymentHandler::new(gateway.clone(), PaymentMetrics::register(&Metrics::new())),
        fast_retry(2),
        kausal_kafka::CorrelationPolicy::Adopt,
        Some(store.clone()),
    );
    let recorder = spawn_recorder(&b, &store, &format!("rec-{}", unique()));
    let producer = EventProducer::new(&b.kafka, "order-service", Metrics::new()).expect("producer");
    for (id, correlation) in orders {
        kausal_order::place_order(
            &producer,
            topics::ORDERS,
            &order(id),
            Some(correlation.parse().expect("id")),
            None,
        )
        .await
        .expect("order");
    }
    let outage = Outage {
        recorder: Some(recorder),
        payment: Some(payment),
        gateway,
        store,
        database,
        dir,
        broker: b,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while outage.pending().await.len() < orders.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        outage.pending().await.len(),
        orders.len(),
        "every order dead-lettered in the ledger"
    );
    outage.gateway.0.down.store(false, Ordering::SeqCst);
    outage
}

impl Drop for Outage {
    fn drop(&mut self) {
        // Not stopped (a failed assertion): at least no further commit.
        if let Some((stop, _)) = &self.recorder {
            stop.cancel();
        }
    }
}

impl Outage {
    /// Stops the recorder and the payment service while the broker still
    /// runs, then the broker.
    pub(crate) async fn stop(mut self) {
        if let Some((stop, task)) = self.recorder.take() {
            stop.cancel();
            task.await.expect("the recorder stops");
        }
        if let Some(payment) = self.payment.take() {
            payment.stop().await;
        }
    }

    /// The pending entries of the ledger.
    pub(crate) async fn pending(&self) -> Vec<kausal_store::DeadLetterEntry> {
        self.store
            .dead_letters(&DeadLetterFilter {
                status: Some("pending".into()),
                ..Default::default()
            })
            .await
            .expect("list")
    }

    /// `kausal console` as a user runs it, with the store and the cluster
    /// and `token`, once it listens.
    pub(crate) async fn start_console(&self, token: &str) -> (KillOnDrop, SocketAddr) {
        start_console(
            &self.database,
            &self.broker.kafka.bootstrap_servers,
            self.dir.path(),
            token,
        )
        .await
    }
}

/// `kausal console` as a user runs it on `database` and the cluster at
/// `kafka`, keeping its token file in `data_dir`, once it listens.
pub(crate) async fn start_console(
    database: &str,
    kafka: &str,
    data_dir: &std::path::Path,
    token: &str,
) -> (KillOnDrop, SocketAddr) {
    let port = crate::harness::free_port();
    let console = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_kausal"))
            .args(["console", "--console-port", &port.to_string()])
            .args(["--kafka", kafka])
            .args(["--database", database, "--otlp-grpc-port", "0"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("KAUSAL_CONSOLE_TOKEN", token)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("kausal console starts"),
    );
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let listening = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() && Instant::now() < listening {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (console, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_read_replayed_and_discarded_over_the_api_with_the_token_only() {
    let outage = payment_outage(&[
        ("ord-api-1", "checkout-api-1"),
        ("ord-api-2", "checkout-api-2"),
    ])
    .await;
    let (b, store, gateway) = (&outage.broker, &outage.store, &outage.gateway);
    let pending = || outage.pending();
    let (mut console, addr) = outage.start_console(TOKEN).await;

    // Reads: the dashboard, the list with the CLI's filters, one entry.
    let (status, stats) = call(addr, "GET", "/api/dlq/stats", None, "").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["pending"], 2, "{stats}");
    assert_eq!(
        stats["pending_by_source_topic"][topics::ORDERS],
        2,
        "{stats}"
    );
    let (status, list) = call(
        addr,
        "GET",
        "/api/dlq?correlation_id=checkout-api-1&since=1h",
        None,
        "",
    )
    .await;
    assert_eq!(status, 200, "{list}");
    let first = list.as_array().expect("list");
    assert_eq!(first.len(), 1, "the filter selects one entry: {list}");
    let replay_id = first[0]["id"].as_str().expect("id").to_owned();
    let (_, other) = call(
        addr,
        "GET",
        "/api/dlq?correlation_id=checkout-api-2",
        None,
        "",
    )
    .await;
    let discard_id = other[0]["id"].as_str().expect("id").to_owned();
    let (status, detail) = call(addr, "GET", &format!("/api/dlq/{replay_id}"), None, "").await;
    assert_eq!(status, 200, "{detail}");
    assert_eq!(detail["payload"]["encoding"], "json", "{detail}");
    assert_eq!(
        detail["payload"]["value"]["order_id"], "ord-api-1",
        "{detail}"
    );
    assert_eq!(detail["key"]["value"], "ord-api-1", "{detail}");
    assert!(
        detail["headers"]
            .as_array()
            .expect("headers")
            .iter()
            .any(|h| h["name"] == "event-type" && h["value"]["value"] == "OrderPlaced"),
        "{detail}"
    );
    assert!(
        !detail["lineage"].as_array().expect("lineage").is_empty(),
        "{detail}"
    );
    let (status, _) = call(addr, "GET", "/api/dlq?status=lost", None, "").await;
    assert_eq!(status, 400);
    let (status, _) = call(addr, "GET", "/api/dlq/no-such-entry", None, "").await;
    assert_eq!(status, 404);

    // Mutations: no token, a wrong token → 401, and nothing changes.
    let replay_path = format!("/api/dlq/{replay_id}/replay");
    for token in [None, Some("wrong-token")] {
        let (status, body) = call(addr, "POST", &replay_path, token, "{}").await;
        assert_eq!(status, 401, "{body}");
        let (status, _) = call(
            addr,
            "POST",
            "/api/dlq/replay",
            token,
            r#"{"source_topic":"orders"}"#,
        )
        .await;
        assert_eq!(status, 401);
        let (status, _) = call(
            addr,
            "POST",
            &format!("/api/dlq/{discard_id}/discard"),
            token,
            r#"{"reason":"test"}"#,
        )
        .await;
        assert_eq!(status, 401);
    }
    assert_eq!(pending().await.len(), 2, "refused requests changed nothing");

    // A bulk dry run names both entries and publishes nothing.
    let (status, dry) = call(
        addr,
        "POST",
        "/api/dlq/replay",
        Some(TOKEN),
        r#"{"source_topic":"orders","dry_run":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["done"], 2, "{dry}");
    assert!(
        dry["outcomes"]
            .as_array()
            .expect("outcomes")
            .iter()
            .all(|o| o["result"] == "would_replay"),
        "{dry}"
    );
    assert_eq!(pending().await.len(), 2, "a dry run changes nothing");

    // The replay: 200, the record back on its topic, processed once, the
    // actor in the ledger.
    let (status, done) = call(
        addr,
        "POST",
        &replay_path,
        Some(TOKEN),
        r#"{"actor":"alice"}"#,
    )
    .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["outcomes"][0]["result"], "replayed", "{done}");
    let paid = b.read_all(topics::PAYMENTS, 1, Duration::from_secs(60));
    assert_eq!(paid.len(), 1, "the replayed order was processed once");
    assert_eq!(
        header(&paid[0], "correlation-id").as_deref(),
        Some("checkout-api-1")
    );
    let entry = store
        .dead_letter(&replay_id)
        .await
        .expect("read")
        .expect("entry");
    assert_eq!(entry.status, "replayed");
    assert_eq!(entry.status_by.as_deref(), Some("console:alice"));
    // Again: refused (not pending) with the reason, 409.
    let (status, again) = call(addr, "POST", &replay_path, Some(TOKEN), "").await;
    assert_eq!(status, 409, "{again}");
    assert!(
        again["outcomes"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not pending")),
        "{again}"
    );

    // The discard needs a reason, then records it and the actor.
    let discard_path = format!("/api/dlq/{discard_id}/discard");
    let (status, _) = call(
        addr,
        "POST",
        &discard_path,
        Some(TOKEN),
        r#"{"reason":" "}"#,
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = call(
        addr,
        "POST",
        &discard_path,
        Some(TOKEN),
        r#"{"reason":"customer cancelled","actor":"bob"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let entry = store
        .dead_letter(&discard_id)
        .await
        .expect("read")
        .expect("entry");
    assert_eq!(entry.status, "discarded");
    assert_eq!(entry.status_by.as_deref(), Some("console:bob"));
    assert_eq!(entry.status_reason.as_deref(), Some("customer cancelled"));
    assert_eq!(
        gateway.charges("ord-api-2"),
        2,
        "a discard publishes nothing"
    );

    // The replay's own `send orders` span reached the console (it exports
    // to itself), in a new trace the correlation document reaches, with a
    // link to the original record's trace.
    let original_trace = store
        .chain("checkout-api-1")
        .await
        .expect("chain")
        .first()
        .and_then(|e| e.trace_id.clone())
        .expect("the order's trace id");
    let mut replay_span = Value::Null;
    let mut doc = Value::Null;
    for _ in 0..60 {
        doc = call(addr, "GET", "/api/correlations/checkout-api-1", None, "")
            .await
            .1;
        if let Some(span) = doc["spans"].as_array().and_then(|s| {
            s.iter()
                .find(|s| s["kind"] == "producer" && s["service"] == "kausal-console")
        }) {
            replay_span = span.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(replay_span["name"], "send orders", "{doc:#}");
    assert_ne!(
        replay_span["trace_id"],
        original_trace.as_str(),
        "a new trace"
    );
    assert!(replay_span["parent_span_id"].is_null(), "{replay_span}");
    assert!(
        replay_span["links"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["trace_id"] == original_trace.as_str())),
        "linked to the original trace: {replay_span}"
    );
    assert!(
        console
            .terminate(Duration::from_secs(20))
            .is_some_and(|s| s.success()),
        "the console stops cleanly"
    );
    outage.stop().await;
}
