//! The ledger's read model end to end (issue 14): read-model-service as it
//! runs (`kausal_read_model::service`, its consumer group, dead-letter
//! topic and HTTP API) consumes real `EntryPosted` records from
//! `ledger.entry.v1`; balances and statements read over HTTP are exact, a
//! redelivered event changes nothing, and an entry in another currency than
//! its account is dead-lettered with its reason.
//!
//! The service runs with `--no-idempotency-store`, so the redelivery
//! reaches the handler (its receipt says `processed`, not
//! `duplicate_skipped`): what keeps it from counting twice is the
//! projection's own unique (account, event id, leg) key, the guarantee that
//! holds whatever the runtime's guard does.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use kausal_contracts::ledger::{Direction, EntryLeg, EntryPosted, LEDGER_ENTRIES_TOPIC};
use kausal_kafka::receipt::{RECEIPTS_TOPIC, ReceiptRecord};
use kausal_kafka::{Event, EventProducer, EventSpec, OutgoingEvent};
use kausal_read_model::{GROUP, ReadModelOptions};
use kausal_service::ServiceConfig;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::harness::{CuttableProxy, Engine, TestBroker, free_port, header};
use crate::http::request;

fn entry(id: &str, currency: &str, legs: &[(&str, Direction, u64)]) -> EntryPosted {
    EntryPosted {
        entry_id: id.to_owned(),
        description: format!("entry {id}"),
        currency: currency.to_owned(),
        legs: legs
            .iter()
            .map(|(account, direction, amount)| EntryLeg {
                account: (*account).to_owned(),
                direction: *direction,
                amount: *amount,
            })
            .collect(),
        order_id: Some(format!("ord-{id}")),
        correlation_id: format!("corr-{id}"),
        posted_at: "2026-11-02T10:00:00.000Z".to_owned(),
    }
}

/// `EntryPosted` as the ledger's outbox publishes it: keyed by entry id.
fn record(e: &EntryPosted) -> OutgoingEvent {
    let spec = EventSpec {
        topic: EntryPosted::TOPIC,
        key: e.key(),
        event_type: EntryPosted::TYPE,
        version: EntryPosted::VERSION,
        source_service: "ledger-service",
    };
    OutgoingEvent::root(&spec, e, None, None).expect("encodes")
}

async fn get(api: SocketAddr, path: &str) -> (u16, Value) {
    let (status, _, body) = request(api, "GET", path, &[], "").await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Waits until `account` shows `postings` lines.
async fn wait_for_postings(api: SocketAddr, account: &str, postings: i64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = get(api, &format!("/v1/accounts/{account}")).await;
        if status == 200 && body["postings"] == postings {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{account} never reached {postings} postings: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The records of `ledger.entry.v1.dlq`: `expected` of them, or what came
/// within `timeout`.
fn dead_letters(
    b: &TestBroker,
    expected: usize,
    timeout: Duration,
) -> Vec<rdkafka::message::OwnedMessage> {
    tokio::task::block_in_place(|| {
        b.read_all(
            &kausal_core::dlq::dlq_topic(LEDGER_ENTRIES_TOPIC),
            expected,
            timeout,
        )
    })
}

/// read-model-service as it runs, on `database`, with these extra flags.
struct ReadModel {
    api: SocketAddr,
    shutdown: CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl ReadModel {
    /// Starts the service and waits until its API listens.
    async fn start(b: &TestBroker, database: &str, flags: &[&str]) -> Self {
        let config = ServiceConfig::try_parse_from(
            [
                kausal_read_model::SERVICE_NAME,
                "--kafka",
                &b.kafka.bootstrap_servers,
                "--database",
                database,
            ]
            .iter()
            .chain(flags),
        )
        .expect("flags parse");
        let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(
            kausal_read_model::service(config, ReadModelOptions { http: api })
                .run_until(shutdown.clone()),
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        while tokio::net::TcpStream::connect(api).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "the read model API never listened"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Self {
            api,
            shutdown,
            running,
        }
    }

    /// Stops it and checks that it stopped cleanly.
    async fn stop(self) {
        self.shutdown.cancel();
        let stopped = tokio::time::timeout(Duration::from_secs(60), self.running)
            .await
            .expect("stops on shutdown")
            .expect("joins");
        assert!(stopped.is_ok(), "a clean stop: {stopped:?}");
    }
}

on_brokers!(balances_and_statements_are_exact_and_a_redelivery_changes_nothing: Sqlite);
async fn balances_and_statements_are_exact_and_a_redelivery_changes_nothing(engine: Engine) {
    use Direction::{Credit, Debit};
    let b = TestBroker::start(engine).await;
    b.create_topics(&[(LEDGER_ENTRIES_TOPIC, 3)]).await;
    let database = format!("sqlite://{}", b.dir.path().join("read-model.db").display());
    let service = ReadModel::start(
        &b,
        &database,
        &["--partitions", "3", "--no-idempotency-store"],
    )
    .await;
    let api = service.api;
    let producer = EventProducer::new(&b.kafka, "ledger-service", kausal_telemetry::Metrics::new())
        .expect("producer");
    let entries = [
        entry(
            "e1",
            "EUR",
            &[("customer:1", Debit, 1250), ("merchant:1", Credit, 1250)],
        ),
        entry(
            "e2",
            "EUR",
            &[("customer:1", Debit, 300), ("merchant:1", Credit, 300)],
        ),
        // A refund.
        entry(
            "e3",
            "EUR",
            &[("merchant:1", Debit, 500), ("customer:1", Credit, 500)],
        ),
    ];
    let records: Vec<OutgoingEvent> = entries.iter().map(record).collect();
    // One at a time (entries land on different partitions), so that the
    // statements' order, and with it every running balance, is known.
    for (n, r) in records.iter().enumerate() {
        producer.publish(r).await.expect("published");
        wait_for_postings(api, "customer:1", n as i64 + 1).await;
    }
    let (_, account_before) = get(api, "/v1/accounts/customer:1").await;

    // A redelivery of e2 (same record, same event id), and an entry in
    // dollars on a euro account.
    producer
        .publish(&records[1])
        .await
        .expect("published again");
    let dollars = record(&entry(
        "e-usd",
        "USD",
        &[("customer:1", Debit, 100), ("merchant:usd", Credit, 100)],
    ));
    producer.publish(&dollars).await.expect("published");

    // Both were handled: five receipts from the group.
    let receipts: Vec<ReceiptRecord> =
        tokio::task::block_in_place(|| b.read_all(RECEIPTS_TOPIC, 5, Duration::from_secs(90)))
            .iter()
            .filter_map(|m| serde_json::from_slice(rdkafka::Message::payload(m)?).ok())
            .filter(|r: &ReceiptRecord| r.consumer_group == GROUP)
            .collect();
    let outcomes = |event: &OutgoingEvent| -> Vec<(String, Option<String>)> {
        receipts
            .iter()
            .filter(|r| r.event_id == event.headers.event_id.to_string())
            .map(|r| (r.outcome.clone(), r.error_type.clone()))
            .collect()
    };
    assert_eq!(
        outcomes(&records[1]),
        [
            ("processed".to_owned(), None),
            ("processed".to_owned(), None)
        ],
        "the redelivery reached the handler: {receipts:#?}"
    );
    assert_eq!(
        outcomes(&dollars),
        [(
            "dead_lettered".to_owned(),
            Some("CurrencyMismatch".to_owned())
        )],
        "{receipts:#?}"
    );
    let dead = dead_letters(&b, 1, Duration::from_secs(30));
    assert_eq!(dead.len(), 1, "one dead letter");
    assert_eq!(
        header(&dead[0], "event-id"),
        Some(dollars.headers.event_id.to_string())
    );
    assert_eq!(
        header(&dead[0], "dlq-error-type").as_deref(),
        Some("CurrencyMismatch")
    );

    // Exact balances; the duplicate and the refused entry changed nothing.
    let (status, customer) = get(api, "/v1/accounts/customer:1").await;
    assert_eq!(status, 200, "{customer}");
    assert_eq!(customer, account_before, "the redelivery changed nothing");
    let sums = |a: &Value| {
        (
            a["currency"].clone(),
            a["debits"].clone(),
            a["credits"].clone(),
            a["balance"].clone(),
            a["postings"].clone(),
        )
    };
    assert_eq!(
        sums(&customer),
        (json!("EUR"), json!(1550), json!(500), json!(1050), json!(3))
    );
    let (_, merchant) = get(api, "/v1/accounts/merchant:1").await;
    assert_eq!(
        sums(&merchant),
        (
            json!("EUR"),
            json!(500),
            json!(1550),
            json!(-1050),
            json!(3)
        )
    );
    let (status, _) = get(api, "/v1/accounts/merchant:usd").await;
    assert_eq!(status, 404, "the refused entry created no account");

    // The statement, line by line, in two pages.
    let (status, first) = get(api, "/v1/accounts/customer:1/statement?limit=2").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["next_after"], 2, "{first}");
    let (_, second) = get(api, "/v1/accounts/customer:1/statement?limit=2&after=2").await;
    assert_eq!(second["next_after"], Value::Null, "{second}");
    let lines: Vec<&Value> = first["lines"]
        .as_array()
        .into_iter()
        .chain(second["lines"].as_array())
        .flatten()
        .collect();
    let got: Vec<Value> = lines
        .iter()
        .map(|l| {
            json!([
                l["seq"],
                l["entry_id"],
                l["direction"],
                l["amount"],
                l["balance_after"],
                l["event_id"]
            ])
        })
        .collect();
    let id = |n: usize| records[n].headers.event_id.to_string();
    assert_eq!(
        got,
        [
            json!([1, "e1", "debit", 1250, 1250, id(0)]),
            json!([2, "e2", "debit", 300, 1550, id(1)]),
            json!([3, "e3", "credit", 500, 1050, id(2)]),
        ]
    );
    assert_eq!(lines[0]["description"], "entry e1");
    assert_eq!(lines[0]["order_id"], "ord-e1");
    assert_eq!(lines[0]["posted_at"], "2026-11-02T10:00:00.000Z");
    let (_, merchant_statement) = get(api, "/v1/accounts/merchant:1/statement").await;
    let balances: Vec<&Value> = merchant_statement["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| &l["balance_after"])
        .collect();
    assert_eq!(balances, [-1250, -1550, -1050]);

    // Refusals say why.
    for (path, status, says) in [
        ("/v1/accounts/nobody", 404, "no projected postings"),
        (
            "/v1/accounts/nobody/statement",
            404,
            "no projected postings",
        ),
        ("/v1/accounts/a%20b", 400, "not allowed"),
        (
            "/v1/accounts/customer:1/statement?limit=501",
            400,
            "from 1 to 500",
        ),
        ("/v1/accounts/customer:1/statement?after=x", 400, "after"),
    ] {
        let (got, body) = get(api, path).await;
        assert_eq!(got, status, "{path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains(says)),
            "{path}: {body}"
        );
    }
    let (status, _, openapi) = request(api, "GET", "/openapi.yaml", &[], "").await;
    assert_eq!(status, 200);
    assert!(openapi.contains("/v1/accounts/{id}/statement"), "{openapi}");

    service.stop().await;
}

on_brokers!(a_read_model_without_its_database_waits_and_loses_nothing: Sqlite);
async fn a_read_model_without_its_database_waits_and_loses_nothing(engine: Engine) {
    database_outage(engine, &[]).await;
}

on_brokers!(a_read_model_without_its_database_or_idempotency_store_waits: Sqlite);
async fn a_read_model_without_its_database_or_idempotency_store_waits(engine: Engine) {
    database_outage(engine, &["--no-idempotency-store"]).await;
}

/// The read model's database (PostgreSQL behind a proxy that can cut it)
/// goes away while an `EntryPosted` arrives: its API answers 503, the entry
/// waits — far past the retry budget (two attempts, 100 ms) — instead of
/// being dead-lettered; once the database is back the entry is projected,
/// once, and its only receipt says processed. With the idempotency store
/// (same database) the runtime's guard is what waits, before the handler;
/// without it, the handler's own classification of the failed projection
/// (`StoreUnavailable`, an unavailable dependency).
async fn database_outage(engine: Engine, flags: &[&str]) {
    use Direction::{Credit, Debit};
    let db = kausal_store::testing::postgres().await;
    let url = url::Url::parse(&db.url).expect("database URL");
    let proxy = CuttableProxy::start(format!(
        "{}:{}",
        url.host_str().expect("host"),
        url.port().unwrap_or(5432)
    ))
    .await;
    let mut through = url.clone();
    through.set_host(Some("127.0.0.1")).expect("host");
    through.set_port(Some(proxy.addr.port())).expect("port");

    let b = TestBroker::start(engine).await;
    b.create_topics(&[(LEDGER_ENTRIES_TOPIC, 1)]).await;
    let mut all = vec![
        "--partitions",
        "1",
        "--max-attempts",
        "2",
        "--initial-backoff-ms",
        "100",
    ];
    all.extend_from_slice(flags);
    let service = ReadModel::start(&b, through.as_str(), &all).await;
    let api = service.api;
    let producer = EventProducer::new(&b.kafka, "ledger-service", kausal_telemetry::Metrics::new())
        .expect("producer");
    let before = record(&entry(
        "before",
        "EUR",
        &[("customer:7", Debit, 1000), ("merchant:7", Credit, 1000)],
    ));
    producer.publish(&before).await.expect("published");
    wait_for_postings(api, "customer:7", 1).await;

    proxy.cut();
    let during = record(&entry(
        "during",
        "EUR",
        &[("customer:7", Debit, 250), ("merchant:7", Credit, 250)],
    ));
    producer.publish(&during).await.expect("published");
    let (status, body) = get(api, "/v1/accounts/customer:7").await;
    assert_eq!(status, 503, "the API while the database is away: {body}");
    // Long past two attempts at 100 ms: a retryable failure would have been
    // dead-lettered by now.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let dead = dead_letters(&b, 1, Duration::from_secs(2));
    assert!(dead.is_empty(), "nothing dead-lettered during the outage");

    proxy.restore();
    wait_for_postings(api, "customer:7", 2).await;
    let (_, customer) = get(api, "/v1/accounts/customer:7").await;
    assert_eq!(
        (&customer["debits"], &customer["balance"]),
        (&json!(1250), &json!(1250)),
        "{customer}"
    );
    // Its receipts: one, processed (and the one for the entry before).
    let receipts: Vec<ReceiptRecord> =
        tokio::task::block_in_place(|| b.read_all(RECEIPTS_TOPIC, 2, Duration::from_secs(60)))
            .iter()
            .filter_map(|m| serde_json::from_slice(rdkafka::Message::payload(m)?).ok())
            .filter(|r: &ReceiptRecord| {
                r.consumer_group == GROUP && r.event_id == during.headers.event_id.to_string()
            })
            .collect();
    assert_eq!(
        receipts
            .iter()
            .map(|r| (r.outcome.as_str(), r.error_type.as_deref()))
            .collect::<Vec<_>>(),
        [("processed", None)],
        "{receipts:#?}"
    );
    let dead = dead_letters(&b, 1, Duration::from_secs(2));
    assert!(dead.is_empty(), "nothing dead-lettered after it either");
    service.stop().await;
}
