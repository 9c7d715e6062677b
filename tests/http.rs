//! The order service's HTTP API against the embedded broker and a real
//! store: POST continues the caller's trace and correlation, bad input is a
//! 400, GET returns the read model.

use std::time::{Duration, Instant};

use kausal_contracts::topics;
use kausal_eventsource::{EventStore, EventStoreMetrics, IdempotencyKeys};
use kausal_kafka::{CorrelationPolicy, EventProducer};
use kausal_order::http::{ApiState, serve};
use kausal_order::view_handler::{GROUP, INPUT_TOPICS, ViewHandler};
use kausal_payment::{PaymentHandler, PaymentMetrics};
use kausal_store::Store;
use kausal_telemetry::Metrics;
use rdkafka::message::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::harness::{Engine, TestBroker, header};
use crate::runtime::{ScriptedGateway, fast_retry, start_runtime};

/// A minimal HTTP/1.0 request: (status, headers text, body).
pub(crate) async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let (status, head, body) = request_bytes(addr, method, path, headers, body.as_bytes()).await;
    (status, head, String::from_utf8_lossy(&body).into_owned())
}

/// [`request`] with a binary body both ways (lowercased head).
pub(crate) async fn request_bytes(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).await.expect("write");
    // A server may answer (413) and close before reading a large body.
    let _ = stream.write_all(body).await;
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf).await;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("http response");
    let head = String::from_utf8_lossy(&buf[..split]).to_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, head, buf[split + 4..].to_vec())
}

/// The order API as order-service runs it, over a SQLite store of its own.
struct OrderApi {
    addr: std::net::SocketAddr,
    store: Store,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl OrderApi {
    async fn start(b: &TestBroker) -> Self {
        let dir = crate::harness::scratch_dir();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("api.db").display()))
            .await
            .expect("store");
        let metrics = Metrics::new();
        let events = EventStore::new(store.clone(), EventStoreMetrics::register(&metrics));
        let state = ApiState {
            producer: EventProducer::new(&b.kafka, "order-service", metrics).expect("producer"),
            store: store.clone(),
            topic: topics::ORDERS.to_owned(),
            keys: IdempotencyKeys::new(events, "orders"),
        };
        let stop = CancellationToken::new();
        let (addr, task) = serve(
            "127.0.0.1:0".parse().expect("addr"),
            state,
            stop.clone().cancelled_owned(),
        )
        .await
        .expect("api");
        Self {
            addr,
            store,
            stop,
            task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_orders_continues_the_callers_trace_and_get_returns_the_read_model() {
    let b = TestBroker::start(Engine::Sqlite).await;
    let mut all: Vec<(&str, i32)> = INPUT_TOPICS.iter().map(|t| (*t, 3)).collect();
    all.push(("orders.dlq", 3));
    all.push(("payments.dlq", 3));
    b.create_topics(&all).await;
    let api = OrderApi::start(&b).await;
    let (addr, store) = (api.addr, api.store.clone());
    let metrics = Metrics::new();
    let payment = start_runtime(
        &b.kafka,
        "payment-service",
        "payment-service",
        &[topics::ORDERS],
        PaymentHandler::new(
            ScriptedGateway::default(),
            PaymentMetrics::register(&metrics),
        ),
        fast_retry(2),
        CorrelationPolicy::Adopt,
        None,
    );
    let view = start_runtime(
        &b.kafka,
        "order-service",
        GROUP,
        &INPUT_TOPICS,
        ViewHandler::new(store.clone()),
        fast_retry(2),
        CorrelationPolicy::Adopt,
        None,
    );

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let body = r#"{"user_id":"u1","amount":19.99,"currency":"EUR","customer_email":"a@example.com","order_id":"ord-http"}"#;
    let (status, head, resp) = request(
        addr,
        "POST",
        "/orders",
        &[
            ("traceparent", traceparent),
            ("X-Correlation-ID", "checkout-77"),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .await;
    assert_eq!(status, 201, "{resp}");
    assert!(head.contains("x-correlation-id: checkout-77"), "{head}");
    let placed: serde_json::Value = serde_json::from_str(&resp).expect("json");
    assert_eq!(placed["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(placed["correlation_id"], "checkout-77");

    // Without X-Correlation-ID one is generated and returned.
    let (status, head, resp) = request(
        addr,
        "POST",
        "/orders",
        &[],
        r#"{"user_id":"u2","amount":5,"currency":"USD"}"#,
    )
    .await;
    assert_eq!(status, 201, "{resp}");
    let generated: serde_json::Value = serde_json::from_str(&resp).expect("json");
    let generated_id = generated["correlation_id"].as_str().expect("id").to_owned();
    assert!(
        head.contains(&format!("x-correlation-id: {generated_id}")),
        "{head}"
    );

    // Bad input: a clear 400, never a 500.
    let bad = [
        ("{not json", "invalid order JSON"),
        (
            r#"{"user_id":"u","amount":-1,"currency":"EUR"}"#,
            "amount must be a positive number",
        ),
        (
            r#"{"user_id":"u","amount":1,"currency":"euro"}"#,
            "currency",
        ),
        (
            r#"{"user_id":"u","amount":"ten","currency":"EUR"}"#,
            "invalid order JSON",
        ),
        (
            r#"{"user_id":"u","amount":1,"currency":"EUR","surprise":true}"#,
            "unknown field",
        ),
        ("", "invalid order JSON"),
    ];
    for (body, message) in bad {
        let (status, _, resp) = request(addr, "POST", "/orders", &[], body).await;
        assert_eq!(status, 400, "{body}: {resp}");
        assert!(resp.contains(message), "{body}: {resp}");
    }
    let (status, _, resp) = request(
        addr,
        "POST",
        "/orders",
        &[("X-Correlation-ID", "has space")],
        body,
    )
    .await;
    assert_eq!(status, 400, "{resp}");
    // A broken traceparent starts a new trace instead of failing.
    let (status, _, resp) = request(
        addr,
        "POST",
        "/orders",
        &[("traceparent", "00-broken")],
        r#"{"user_id":"u3","amount":5,"currency":"USD"}"#,
    )
    .await;
    assert_eq!(status, 201, "{resp}");

    // The trace flows from the HTTP caller to the payment.
    let payments = b.read_all(topics::PAYMENTS, 3, Duration::from_secs(30));
    let paid = payments
        .iter()
        .find(|m| m.key() == Some(&b"ord-http"[..]))
        .expect("ord-http paid");
    let tp = header(paid, "traceparent").expect("traceparent");
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{tp}"
    );
    assert_eq!(
        header(paid, "correlation-id").as_deref(),
        Some("checkout-77")
    );

    // GET returns the read model once the view has folded the payment.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut view_json = serde_json::Value::Null;
    while Instant::now() < deadline {
        let (status, _, resp) = request(addr, "GET", "/orders/ord-http", &[], "").await;
        if status == 200 {
            view_json = serde_json::from_str(&resp).expect("json");
            if view_json["status"] == "paid" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(view_json["status"], "paid", "{view_json}");
    assert_eq!(view_json["amount"], 19.99);
    assert_eq!(view_json["correlation_id"], "checkout-77");
    let (status, _, resp) = request(addr, "GET", "/orders/ord-unknown", &[], "").await;
    assert_eq!(status, 404, "{resp}");

    api.stop().await;
    payment.stop().await;
    view.stop().await;
}

/// `POST /orders` with an `Idempotency-Key`: a client's retry gets the
/// first answer and places nothing new, eight identical requests at once
/// place one order, a key reused for another order is a 409; on the
/// broker, one `OrderPlaced` per key.
async fn post_orders_with_an_idempotency_key_places_each_order_once(engine: Engine) {
    let b = TestBroker::start(engine).await;
    b.create_topics(&[(topics::ORDERS, 3)]).await;
    let api = OrderApi::start(&b).await;
    let addr = api.addr;
    let unique = crate::harness::unique();
    let first_key = format!("retry-{unique}");
    let body = format!(r#"{{"user_id":"u-{unique}","amount":12.5,"currency":"EUR"}}"#);
    let post = |key: String, body: String| async move {
        request(
            addr,
            "POST",
            "/orders",
            &[
                ("Idempotency-Key", &key),
                ("Content-Type", "application/json"),
            ],
            &body,
        )
        .await
    };

    // The client's retry: the same answer (the same generated order id),
    // marked as given again.
    let (status, head, first) = post(first_key.clone(), body.clone()).await;
    assert_eq!(status, 201, "{first}");
    assert!(!head.contains("idempotent-replayed"), "{head}");
    let (status, head, again) = post(first_key.clone(), body.clone()).await;
    assert_eq!(status, 201, "{again}");
    assert!(head.contains("idempotent-replayed: true"), "{head}");
    let (first, again): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&first).expect("json"),
        serde_json::from_str(&again).expect("json"),
    );
    assert_eq!(first, again, "the first answer, given again");

    // The same key for another order: refused, nothing placed.
    let other = format!(r#"{{"user_id":"u-{unique}","amount":99,"currency":"EUR"}}"#);
    let (status, _, resp) = post(first_key.clone(), other).await;
    assert_eq!(status, 409, "{resp}");
    assert!(resp.contains("another order"), "{resp}");
    for bad in ["has space", &"k".repeat(256)] {
        let (status, _, resp) = post(bad.to_owned(), body.clone()).await;
        assert_eq!(status, 400, "{bad:?}: {resp}");
        assert!(resp.contains("Idempotency-Key"), "{resp}");
    }

    // Eight identical requests at once: one places the order, the others
    // get its answer or a 409 "being placed now".
    let racing_key = format!("race-{unique}");
    let racing_body = format!(
        r#"{{"user_id":"u-{unique}","amount":7,"currency":"EUR","order_id":"ord-race-{unique}"}}"#
    );
    let answers =
        futures::future::join_all((0..8).map(|_| post(racing_key.clone(), racing_body.clone())))
            .await;
    let placed = answers
        .iter()
        .filter(|(s, h, _)| *s == 201 && !h.contains("idempotent-replayed"))
        .count();
    assert_eq!(placed, 1, "{answers:?}");
    assert!(
        answers.iter().all(|(s, _, _)| *s == 201 || *s == 409),
        "{answers:?}"
    );

    // On the broker: one OrderPlaced per key, nothing more.
    let order_ids = [
        first["order_id"].as_str().expect("order id").to_owned(),
        format!("ord-race-{unique}"),
    ];
    let records = b.read_all(topics::ORDERS, 3, Duration::from_secs(10));
    let keys: Vec<String> = records
        .iter()
        .filter_map(|m| m.key().map(|k| String::from_utf8_lossy(k).into_owned()))
        .collect();
    for id in &order_ids {
        assert_eq!(
            keys.iter().filter(|k| *k == id).count(),
            1,
            "{id} in {keys:?}"
        );
    }
    assert_eq!(keys.len(), 2, "{keys:?}");

    api.stop().await;
}
on_brokers!(post_orders_with_an_idempotency_key_places_each_order_once: Sqlite);
