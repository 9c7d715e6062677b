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

use crate::harness::{Engine, TestBroker, free_port, header};
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

on_brokers!(balances_and_statements_are_exact_and_a_redelivery_changes_nothing: Sqlite);
async fn balances_and_statements_are_exact_and_a_redelivery_changes_nothing(engine: Engine) {
    use Direction::{Credit, Debit};
    let b = TestBroker::start(engine).await;
    b.create_topics(&[(LEDGER_ENTRIES_TOPIC, 3)]).await;
    let database = format!("sqlite://{}", b.dir.path().join("read-model.db").display());
    let config = ServiceConfig::try_parse_from([
        kausal_read_model::SERVICE_NAME,
        "--kafka",
        &b.kafka.bootstrap_servers,
        "--database",
        &database,
        "--partitions",
        "3",
        "--no-idempotency-store",
    ])
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
    let dead = tokio::task::block_in_place(|| {
        b.read_all(
            &kausal_core::dlq::dlq_topic(LEDGER_ENTRIES_TOPIC),
            1,
            Duration::from_secs(30),
        )
    });
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

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("stops on shutdown")
        .expect("joins");
    assert!(stopped.is_ok(), "a clean stop: {stopped:?}");
}
