//! Re-reading history (issue 5): `kausal replay reset` and `kausal state
//! order --at`, as users run them, against the embedded broker.

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kausal_contracts::{
    InventoryReserved, OrderPlaced, PaymentProcessed, ShipmentCreated, event_types, topics,
};
use kausal_kafka::{
    Emitter, EventProducer, EventSpec, Handler, HandlerError, IncomingEvent, OutgoingEvent,
};
use kausal_telemetry::Metrics;

use crate::harness::{Engine, TestBroker, eventually, send, spawn_member, unique};

const BIN: &str = env!("CARGO_BIN_EXE_kausal");

fn kausal(b: &TestBroker, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .args(["--kafka", &b.kafka.bootstrap_servers])
        .env("RUST_LOG", "warn")
        .output()
        .expect("kausal runs")
}

/// Records the key of every event it handles.
struct Keys {
    seen: Arc<Mutex<Vec<String>>>,
    handled: Arc<AtomicU64>,
}

impl Handler for Keys {
    async fn handle(&self, event: &IncomingEvent, _out: &mut Emitter) -> Result<(), HandlerError> {
        let key = event.key_str().unwrap_or_default().to_owned();
        self.seen.lock().expect("lock").push(key);
        self.handled.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

fn keys_member(
    b: &TestBroker,
    group: &str,
    topic: &str,
) -> (crate::harness::Member, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handled = Arc::new(AtomicU64::new(0));
    let handler = Keys {
        seen: seen.clone(),
        handled: handled.clone(),
    };
    (spawn_member(b, group, topic, handler, handled), seen)
}

on_brokers!(reset_to_a_time_redelivers_exactly_the_later_events_and_refuses_a_live_group: Sqlite);
async fn reset_to_a_time_redelivers_exactly_the_later_events_and_refuses_a_live_group(
    engine: Engine,
) {
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("ledger", 2)]).await;
    let producer = b.plain_producer();
    for i in 0..10 {
        send(
            &producer,
            "ledger",
            Some(format!("before-{i}").as_bytes()),
            Some(b"{}"),
            &[],
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let cut = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..10 {
        send(
            &producer,
            "ledger",
            Some(format!("after-{i}").as_bytes()),
            Some(b"{}"),
            &[],
        )
        .await;
    }

    let group = format!("ledger-{}", unique());
    let (first, _) = keys_member(&b, &group, "ledger");
    assert!(
        eventually(Duration::from_secs(60), || first
            .handled
            .load(Ordering::Relaxed)
            == 20)
        .await,
        "first run handles all 20"
    );

    // Live: refused, with the reason, and nothing changes.
    let reset = [
        "replay",
        "reset",
        "--group",
        &group,
        "--topic",
        "ledger",
        "--to-datetime",
        &cut,
    ];
    let refused = kausal(&b, &[&reset[..], &["--execute"]].concat());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "reset of a live group must fail");
    assert!(stderr.contains("live member"), "{stderr}");
    assert!(stderr.contains("Stop its consumers first"), "{stderr}");

    first.stop.cancel();
    first.task.await.expect("first run stops");
    let admin = b.admin();
    let committed_before = admin.committed_offsets(&group, "ledger").expect("offsets");

    // Dry run: the plan, nothing committed.
    let dry = kausal(&b, &[&reset[..], &["--json"]].concat());
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&dry.stdout).expect("json plan");
    let to_read: i64 = plan["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| p["to_read"].as_i64().expect("to_read"))
        .sum();
    assert_eq!(to_read, 10, "{plan:#}");
    assert_eq!(plan["executed"], false);
    assert_eq!(
        admin.committed_offsets(&group, "ledger").expect("offsets"),
        committed_before,
        "a dry run commits nothing"
    );

    let done = kausal(&b, &[&reset[..], &["--execute"]].concat());
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(String::from_utf8_lossy(&done.stdout).contains("Reset done"));

    // The group starts again and reads exactly the events after the cut.
    let (second, seen) = keys_member(&b, &group, "ledger");
    assert!(
        eventually(Duration::from_secs(60), || second
            .handled
            .load(Ordering::Relaxed)
            >= 10)
        .await,
        "second run re-reads"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    second.stop.cancel();
    second.task.await.expect("second run stops");
    let seen = seen.lock().expect("lock").clone();
    let expected: BTreeSet<String> = (0..10).map(|i| format!("after-{i}")).collect();
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert_eq!(seen.into_iter().collect::<BTreeSet<_>>(), expected);
}

fn spec<'a>(topic: &'a str, key: &'a str, event_type: &'a str) -> EventSpec<'a> {
    EventSpec {
        topic,
        key: Some(key),
        event_type,
        version: 1,
        source_service: "history-test",
    }
}

async fn publish<T: serde::Serialize>(p: &EventProducer, spec: &EventSpec<'_>, payload: &T) -> i64 {
    let event = OutgoingEvent::root(spec, payload, None, None).expect("encode");
    p.publish(&event).await.expect("published");
    chrono::Utc::now().timestamp_millis()
}

fn state_at(b: &TestBroker, order: &str, at_ms: i64, extra: &[&str]) -> serde_json::Value {
    let at = at_ms.to_string();
    let out = kausal(
        b,
        &[&["state", "order", order, "--at", &at, "--json"][..], extra].concat(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json state")
}

on_brokers!(state_as_of_three_times_along_one_order: Sqlite);
async fn state_as_of_three_times_along_one_order(engine: Engine) {
    let b = TestBroker::start(engine).await;
    let all: Vec<(&str, i32)> = topics::ALL.iter().map(|t| (*t, 2)).collect();
    b.create_topics(&all).await;
    let p = EventProducer::new(&b.kafka, "history-test", Metrics::new()).expect("producer");
    let order = format!("ord-{}", unique());
    let other = format!("ord-other-{}", unique());
    let gap = Duration::from_millis(400);
    let placed = |id: &str| OrderPlaced {
        order_id: id.to_owned(),
        user_id: "u-1".into(),
        amount: 42.5,
        currency: "EUR".into(),
        customer_email: Some("a@example.com".into()),
        created_at: kausal_contracts::now_rfc3339(),
    };

    let before = chrono::Utc::now().timestamp_millis() - 1;
    tokio::time::sleep(gap).await;
    publish(
        &p,
        &spec(topics::ORDERS, &other, event_types::ORDER_PLACED),
        &placed(&other),
    )
    .await;
    let t_placed = publish(
        &p,
        &spec(topics::ORDERS, &order, event_types::ORDER_PLACED),
        &placed(&order),
    )
    .await;
    tokio::time::sleep(gap).await;
    let t_paid = publish(
        &p,
        &spec(topics::PAYMENTS, &order, event_types::PAYMENT_PROCESSED),
        &PaymentProcessed {
            order_id: order.clone(),
            payment_id: "pay-1".into(),
            amount: 42.5,
            currency: "EUR".into(),
            customer_email: Some("a@example.com".into()),
            processed_at: kausal_contracts::now_rfc3339(),
        },
    )
    .await;
    tokio::time::sleep(gap).await;
    publish(
        &p,
        &spec(topics::INVENTORY, &order, event_types::INVENTORY_RESERVED),
        &InventoryReserved {
            order_id: order.clone(),
            reservation_id: "res-1".into(),
            warehouse: "w-1".into(),
            reserved_at: kausal_contracts::now_rfc3339(),
        },
    )
    .await;
    tokio::time::sleep(gap).await;
    let t_shipped = publish(
        &p,
        &spec(topics::SHIPMENTS, &order, event_types::SHIPMENT_CREATED),
        &ShipmentCreated {
            order_id: order.clone(),
            shipment_id: "shp-1".into(),
            carrier: "c-1".into(),
            created_at: kausal_contracts::now_rfc3339(),
        },
    )
    .await;

    let nothing = state_at(&b, &order, before, &["--scan"]);
    assert!(nothing["state"].is_null(), "{nothing:#}");
    assert_eq!(nothing["later_events"], 4);

    let at_placed = state_at(&b, &order, t_placed + 100, &["--scan"]);
    assert_eq!(at_placed["state"]["status"], "placed", "{at_placed:#}");
    assert_eq!(at_placed["state"]["amount"], 42.5);
    assert!(at_placed["state"]["payment_id"].is_null());
    assert_eq!(at_placed["later_events"], 3);

    let at_paid = state_at(&b, &order, t_paid + 100, &["--scan"]);
    assert_eq!(at_paid["state"]["status"], "paid", "{at_paid:#}");
    assert_eq!(at_paid["state"]["payment_id"], "pay-1");
    assert!(at_paid["state"]["reservation_id"].is_null());

    let at_end = state_at(&b, &order, t_shipped + 100, &["--scan"]);
    assert_eq!(at_end["state"]["status"], "shipped", "{at_end:#}");
    assert_eq!(at_end["state"]["reservation_id"], "res-1");
    assert_eq!(at_end["state"]["shipment_id"], "shp-1");
    assert_eq!(at_end["events"].as_array().map(Vec::len), Some(4));
    assert_eq!(at_end["located_by"], "scan");

    // Located through the lineage index instead of a scan: same answers.
    let database = format!("sqlite://{}", b.dir.path().join("kausal.db").display());
    let store = kausal_store::Store::connect(&database)
        .await
        .expect("store");
    let (stop, recorder) =
        crate::harness::spawn_recorder(&b, &store, &format!("recorder-{}", unique()));
    let mut recorded = 0;
    for _ in 0..600 {
        recorded = store.events_by_key(&order).await.expect("query").len();
        if recorded == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recorded, 4, "the recorder indexes the order's events");
    stop.cancel();
    recorder.await.expect("recorder stops");
    for (t, scanned) in [(t_placed + 100, &at_placed), (t_shipped + 100, &at_end)] {
        let indexed = state_at(&b, &order, t, &["--database", &database]);
        assert_eq!(indexed["located_by"], "lineage-index");
        assert_eq!(indexed["state"], scanned["state"], "{indexed:#}");
        assert_eq!(indexed["events"], scanned["events"]);
    }
}
