//! The seeds' detective story end to end: every service and the recorder on
//! the embedded broker, then `kausal trace` as a user runs it.

use std::process::Command;
use std::time::{Duration, Instant};

use kausal_contracts::{OrderPlaced, topics};
use kausal_kafka::receipt::RECEIPTS_TOPIC;
use kausal_kafka::{CorrelationPolicy, EventProducer};
use kausal_payment::{PaymentHandler, PaymentMetrics};
use kausal_store::Store;
use kausal_telemetry::Metrics;

use crate::harness::{Engine, TestBroker, spawn_recorder, unique};
use crate::runtime::{ScriptedGateway, fast_retry, order, start_runtime};

const BIN: &str = env!("CARGO_BIN_EXE_kausal");

async fn all_topics(b: &TestBroker) {
    let mut topics: Vec<(String, i32)> = vec![(RECEIPTS_TOPIC.to_owned(), 3)];
    for t in topics::ALL {
        topics.push((t.to_owned(), 3));
        topics.push((kausal_core::dlq::dlq_topic(t), 3));
    }
    let refs: Vec<(&str, i32)> = topics.iter().map(|(t, p)| (t.as_str(), *p)).collect();
    b.create_topics(&refs).await;
}

fn trace_json(database: &str, id: &str) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["trace", id, "--json", "--database", database])
        .output()
        .expect("kausal trace runs");
    assert!(
        out.status.success(),
        "kausal trace failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

fn event_types(report: &serde_json::Value) -> Vec<String> {
    report["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or("?").to_owned())
        .collect()
}

on_brokers!(trace_names_the_service_that_swallowed_the_confirmation_email: Sqlite);
async fn trace_names_the_service_that_swallowed_the_confirmation_email(engine: Engine) {
    let b = TestBroker::start(engine).await;
    all_topics(&b).await;
    let database = format!("sqlite://{}", b.dir.path().join("kausal.db").display());
    let store = Store::connect(&database).await.expect("store");
    let retry = fast_retry(2);
    let adopt = CorrelationPolicy::Adopt;
    let metrics = Metrics::new();
    let running = vec![
        start_runtime(
            &b.kafka,
            "payment-service",
            "payment-service",
            &[topics::ORDERS],
            PaymentHandler::new(
                ScriptedGateway::default(),
                PaymentMetrics::register(&metrics),
            ),
            retry.clone(),
            adopt,
            Some(store.clone()),
        ),
        start_runtime(
            &b.kafka,
            "inventory-service",
            "inventory-service",
            &[topics::PAYMENTS],
            kausal_inventory::InventoryHandler,
            retry.clone(),
            adopt,
            Some(store.clone()),
        ),
        start_runtime(
            &b.kafka,
            "notification-service",
            "notification-service",
            &[topics::PAYMENTS],
            kausal_notification::NotificationHandler::default(),
            retry.clone(),
            adopt,
            Some(store.clone()),
        ),
        start_runtime(
            &b.kafka,
            "fulfillment-service",
            "fulfillment-service",
            &[topics::INVENTORY],
            kausal_fulfillment::FulfillmentHandler,
            retry.clone(),
            adopt,
            Some(store.clone()),
        ),
    ];
    let (recorder_stop, recorder) = spawn_recorder(&b, &store, &format!("rec-{}", unique()));

    let producer = EventProducer::new(&b.kafka, "order-service", Metrics::new()).expect("producer");
    let no_email = OrderPlaced {
        customer_email: None,
        ..order("ord-no-email")
    };
    kausal_order::place_order(&producer, topics::ORDERS, &no_email, None, None)
        .await
        .expect("order");
    kausal_order::place_order(&producer, topics::ORDERS, &order("ord-fine"), None, None)
        .await
        .expect("order");

    // Wait until the recorder has the whole story of both orders.
    let deadline = Instant::now() + Duration::from_secs(120);
    let complete = |report: &serde_json::Value, n: usize| {
        report["correlations"][0]["report"]["events"]
            .as_array()
            .map(Vec::len)
            .unwrap_or(0)
            >= n
    };
    let mut bad = serde_json::Value::Null;
    let mut good = serde_json::Value::Null;
    while Instant::now() < deadline {
        let has_rows = !store
            .events_by_key("ord-no-email")
            .await
            .expect("query")
            .is_empty()
            && !store
                .events_by_key("ord-fine")
                .await
                .expect("query")
                .is_empty();
        if has_rows {
            bad = trace_json(&database, "ord-no-email");
            good = trace_json(&database, "ord-fine");
            let failures = bad["correlations"][0]["report"]["failures"]
                .as_array()
                .map(Vec::len)
                .unwrap_or(0);
            let shipped_receipts = bad["correlations"][0]["report"]["events"]
                .as_array()
                .map(|es| {
                    es.iter().all(|e| {
                        e["event_type"] == "ShipmentCreated"
                            || !e["receipts"].as_array().map(Vec::is_empty).unwrap_or(true)
                    })
                })
                .unwrap_or(false);
            if complete(&bad, 4) && complete(&good, 5) && failures > 0 && shipped_receipts {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    recorder_stop.cancel();
    recorder.await.expect("recorder task");
    for r in running {
        r.stop().await;
    }

    assert_eq!(bad["matched_by"], "key");
    let report = &bad["correlations"][0]["report"];
    assert_eq!(
        event_types(report),
        [
            "OrderPlaced",
            "PaymentProcessed",
            "InventoryReserved",
            "ShipmentCreated"
        ],
        "CustomerNotified is absent: {report:#}"
    );
    let failures = report["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{report:#}");
    let f = &failures[0];
    assert_eq!(f["service"], "notification-service");
    assert_eq!(f["event_type"], "PaymentProcessed");
    assert_eq!(f["error_type"], "MissingCustomerEmail");
    assert!(
        f["error_message"]
            .as_str()
            .unwrap_or("")
            .contains("ord-no-email"),
        "{f}"
    );
    let dlq_id = f["dlq_id"]
        .as_str()
        .expect("the failure names its dead letter");
    let payment = &report["events"][1];
    assert!(
        payment["dead_letters"]
            .as_array()
            .expect("dead letters")
            .iter()
            .any(|d| d["dlq_id"] == dlq_id
                && d["dlq_topic"] == "payments.dlq"
                && d["status"] == "pending")
    );
    let groups: Vec<&str> = payment["receipts"]
        .as_array()
        .expect("receipts")
        .iter()
        .filter_map(|r| r["consumer_group"].as_str())
        .collect();
    assert!(
        groups.contains(&"inventory-service") && groups.contains(&"notification-service"),
        "{groups:?}"
    );
    assert_eq!(
        report["trace_ids"].as_array().map(Vec::len),
        Some(1),
        "one trace id for the whole chain"
    );
    let stored = store
        .dead_letter(dlq_id)
        .await
        .expect("query")
        .expect("the ledger has the entry");
    assert_eq!(stored.error_type.as_deref(), Some("MissingCustomerEmail"));

    let good_report = &good["correlations"][0]["report"];
    assert!(
        event_types(good_report).contains(&"CustomerNotified".to_owned()),
        "{good_report:#}"
    );
    assert!(
        good_report["failures"]
            .as_array()
            .expect("failures")
            .is_empty()
    );

    // The same answer by correlation id and by event id, and as text.
    let correlation = report["correlation_id"].as_str().expect("correlation");
    assert_eq!(
        trace_json(&database, correlation)["correlations"][0]["report"]["correlation_id"],
        correlation
    );
    let event_id = report["events"][2]["event_id"].as_str().expect("event id");
    assert_eq!(trace_json(&database, event_id)["matched_by"], "event-id");
    let text = Command::new(BIN)
        .args(["trace", "ord-no-email", "--database", &database])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("FAILED  notification-service received PaymentProcessed"),
        "{text}"
    );
    assert!(text.contains(dlq_id), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_of_an_unknown_id_says_what_to_check() {
    let dir = crate::harness::scratch_dir();
    let database = format!("sqlite://{}", dir.path().join("empty.db").display());
    let out = Command::new(BIN)
        .args(["trace", "ord-nope", "--database", &database])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing is recorded") && err.contains("recorder"),
        "{err}"
    );
}

/// Publishes `n` orders as Kausal events.
async fn publish_orders(b: &TestBroker, prefix: &str, n: usize) {
    let producer = EventProducer::new(&b.kafka, "order-service", Metrics::new()).expect("producer");
    for i in 0..n {
        kausal_order::place_order(
            &producer,
            topics::ORDERS,
            &order(&format!("{prefix}-{i}")),
            None,
            None,
        )
        .await
        .expect("order");
    }
}

async fn wait_for_events(store: &Store, n: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = store
            .lineage_row_counts()
            .await
            .map(|c| c.events)
            .unwrap_or(0);
        if counts >= n || Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

on_brokers!(recorder_restarted_mid_stream_and_rereading_from_the_start_creates_no_duplicates: Sqlite);
async fn recorder_restarted_mid_stream_and_rereading_from_the_start_creates_no_duplicates(
    engine: Engine,
) {
    for db in kausal_store::testing::databases().await.expect("databases") {
        let b = TestBroker::start(engine).await;
        all_topics(&b).await;
        let store = kausal_store::testing::connect(&db).await.expect(db.label);
        let group = format!("rec-{}", unique());
        let prefix = format!("ord-{}", unique());
        let (stop, task) = spawn_recorder(&b, &store, &group);
        publish_orders(&b, &prefix, 100).await;
        let mid = wait_for_events(&store, 1, Duration::from_secs(60)).await;
        stop.cancel();
        let first = task.await.expect("recorder");
        publish_orders(&b, &prefix, 100).await;
        let before = store.lineage_row_counts().await.expect(db.label);
        // Same group resumes; a fresh group re-reads everything from offset 0.
        let (stop, task) = spawn_recorder(&b, &store, &group);
        let total = b
            .admin()
            .watermarks(topics::ORDERS)
            .expect("watermarks")
            .iter()
            .map(|w| w.high)
            .sum::<i64>() as u64;
        assert_eq!(
            wait_for_events(&store, total, Duration::from_secs(60)).await,
            total,
            "{}",
            db.label
        );
        stop.cancel();
        task.await.expect("recorder");
        let after_resume = store.lineage_row_counts().await.expect(db.label);
        let (stop, task) = spawn_recorder(&b, &store, &format!("rec-{}", unique()));
        let reread = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let committed: i64 = b
                    .admin()
                    .committed_offsets(&group, topics::ORDERS)
                    .expect("committed")
                    .iter()
                    .map(|(_, o)| o.unwrap_or(0))
                    .sum();
                if committed as u64 >= total {
                    break;
                }
            }
        })
        .await;
        // Give the fresh group time to read the whole topic again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.cancel();
        let again = task.await.expect("recorder");
        let after_reread = store.lineage_row_counts().await.expect(db.label);
        assert!(reread.is_ok());
        assert!(
            mid > 0 && first.records > 0,
            "{}: the first run recorded something before it stopped",
            db.label
        );
        assert!(before.events <= total, "{}", db.label);
        assert!(
            again.records >= total,
            "{}: the fresh group re-read {} of {total} records",
            db.label,
            again.records
        );
        assert_eq!(
            again.new_events, 0,
            "{}: re-reading inserted rows",
            db.label
        );
        assert_eq!(
            after_reread, after_resume,
            "{}: row counts changed on re-read",
            db.label
        );
    }
}

/// Makes one test database unavailable to the recorder and back.
enum Outage {
    /// Another writer holds SQLite's write lock longer than the recorder's
    /// busy timeout (10 s). As root, file permissions cannot make a file
    /// unwritable, so a lock is the honest way to refuse writes.
    SqliteLock(sqlx::AnyConnection),
    /// The recorder's own PostgreSQL role loses LOGIN and its sessions are
    /// terminated, as when a database is restarted or a credential revoked.
    PostgresRole { admin: sqlx::AnyPool, role: String },
}

impl Outage {
    async fn begin(db: &kausal_store::testing::TestDatabase) -> (Self, String) {
        sqlx::any::install_default_drivers();
        if db.label == "sqlite" {
            let mut conn =
                <sqlx::AnyConnection as sqlx::Connection>::connect(&format!("{}?mode=rw", db.url))
                    .await
                    .expect("locker");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut conn)
                .await
                .expect("lock");
            return (Self::SqliteLock(conn), db.url.clone());
        }
        let base = std::env::var(kausal_store::testing::DATABASE_URL_ENV).expect("postgres url");
        let admin = sqlx::AnyPool::connect(&base)
            .await
            .expect("admin connection");
        let schema = db
            .url
            .split("search_path%3D")
            .nth(1)
            .expect("schema in url")
            .to_owned();
        let role = format!("kausal_outage_{}", unique().replace('-', "_"));
        for sql in [
            format!("CREATE ROLE {role} LOGIN"),
            format!("GRANT ALL ON SCHEMA {schema} TO {role}"),
            format!("GRANT ALL ON ALL TABLES IN SCHEMA {schema} TO {role}"),
        ] {
            // Names made here from digits, letters and underscores only.
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&admin)
                .await
                .expect("role setup");
        }
        let url = db
            .url
            .replacen("postgres://postgres@", &format!("postgres://{role}@"), 1);
        (Self::PostgresRole { admin, role }, url)
    }

    /// For PostgreSQL the outage starts after the recorder connected.
    async fn cut(&mut self) {
        if let Self::PostgresRole { admin, role } = self {
            sqlx::query(sqlx::AssertSqlSafe(format!("ALTER ROLE {role} NOLOGIN")))
                .execute(&*admin)
                .await
                .expect("nologin");
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
            )))
            .execute(&*admin)
            .await
            .expect("terminate");
        }
    }

    async fn end(&mut self) {
        match self {
            Self::SqliteLock(conn) => {
                sqlx::query("ROLLBACK").execute(conn).await.expect("unlock");
            }
            Self::PostgresRole { admin, role } => {
                sqlx::query(sqlx::AssertSqlSafe(format!("ALTER ROLE {role} LOGIN")))
                    .execute(&*admin)
                    .await
                    .expect("login");
            }
        }
    }

    async fn cleanup(self) {
        if let Self::PostgresRole { admin, role } = self {
            for sql in [
                format!("DROP OWNED BY {role} CASCADE"),
                format!("DROP ROLE {role}"),
            ] {
                let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&admin).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorder_holds_its_batch_through_a_database_outage_and_loses_nothing() {
    for db in kausal_store::testing::databases().await.expect("databases") {
        let b = TestBroker::start(Engine::Sqlite).await;
        all_topics(&b).await;
        // Migrations first, as the owner; then the outage's own access.
        let observer = kausal_store::testing::connect(&db).await.expect(db.label);
        let (mut outage, recorder_url) = Outage::begin(&db).await;
        let group = format!("rec-{}", unique());
        let recorder_store = if db.label == "sqlite" {
            observer.clone()
        } else {
            Store::connect(&recorder_url)
                .await
                .expect("the recorder's role connects")
        };
        let (stop, task) = spawn_recorder(&b, &recorder_store, &group);
        outage.cut().await;
        publish_orders(&b, &format!("ord-{}", db.label), 50).await;
        tokio::time::sleep(Duration::from_secs(13)).await;
        let during = observer
            .lineage_row_counts()
            .await
            .expect("the observer still reads")
            .events;
        let committed_during: i64 = b
            .admin()
            .committed_offsets(&group, topics::ORDERS)
            .expect("committed")
            .iter()
            .map(|(_, o)| o.unwrap_or(0))
            .sum();
        outage.end().await;
        let after = wait_for_events(&observer, 50, Duration::from_secs(90)).await;
        stop.cancel();
        let summary = task.await.expect("recorder");
        recorder_store.close().await;
        outage.cleanup().await;
        assert_eq!(
            during, 0,
            "{}: nothing could be written during the outage",
            db.label
        );
        assert_eq!(
            committed_during, 0,
            "{}: nothing was committed while the rows were not durable",
            db.label
        );
        assert_eq!(
            after, 50,
            "{}: every row recorded after the outage",
            db.label
        );
        assert!(
            summary.store_failures >= 1,
            "{}: the recorder saw the outage: {summary:?}",
            db.label
        );
    }
}

on_brokers!(plain_client_events_are_recorded_under_their_deterministic_id_and_adopted_correlation: Sqlite);
async fn plain_client_events_are_recorded_under_their_deterministic_id_and_adopted_correlation(
    engine: Engine,
) {
    let b = TestBroker::start(engine).await;
    all_topics(&b).await;
    let dir = crate::harness::scratch_dir();
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("plain.db").display()
    ))
    .await
    .expect("store");
    let plain = b.plain_producer();
    let (partition, offset) = crate::harness::send(
        &plain,
        topics::ORDERS,
        Some(b"ord-plain"),
        Some(b"{\"order_id\":\"ord-plain\"}"),
        &[],
    )
    .await;
    let (stop, task) = spawn_recorder(&b, &store, &format!("rec-{}", unique()));
    assert_eq!(wait_for_events(&store, 1, Duration::from_secs(60)).await, 1);
    stop.cancel();
    task.await.expect("recorder");
    let expected = kausal_core::EventId::for_record(topics::ORDERS, partition, offset).to_string();
    let recorded = store
        .event(&expected)
        .await
        .expect("query")
        .expect("recorded under the deterministic id");
    assert_eq!(
        recorded.correlation_id, expected,
        "adopted correlation id = its own event id"
    );
    assert_eq!(recorded.key.as_deref(), Some("ord-plain"));
    assert_eq!(recorded.causation_id, None);
    assert_eq!(store.chain(&expected).await.expect("chain").len(), 1);
}

on_brokers!(a_dead_letter_from_a_transient_fault_is_replayed_once_fixed_and_processed_once: Sqlite);
async fn a_dead_letter_from_a_transient_fault_is_replayed_once_fixed_and_processed_once(
    engine: Engine,
) {
    use kausal_lineage::replay::{self, LedgerError};
    use std::sync::atomic::Ordering;
    let b = TestBroker::start(engine).await;
    all_topics(&b).await;
    let dir = crate::harness::scratch_dir();
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("ledger.db").display()
    ))
    .await
    .expect("store");
    let script = crate::runtime::Script::default();
    script.down.store(true, Ordering::SeqCst);
    let gateway = ScriptedGateway(std::sync::Arc::new(script));
    let metrics = Metrics::new();
    let payment = start_runtime(
        &b.kafka,
        "payment-service",
        "payment-service",
        &[topics::ORDERS],
        PaymentHandler::new(gateway.clone(), PaymentMetrics::register(&metrics)),
        fast_retry(2),
        CorrelationPolicy::Adopt,
        Some(store.clone()),
    );
    let (stop, recorder) = spawn_recorder(&b, &store, &format!("rec-{}", unique()));
    let producer = EventProducer::new(&b.kafka, "order-service", Metrics::new()).expect("producer");
    let placed = kausal_order::place_order(
        &producer,
        topics::ORDERS,
        &order("ord-outage"),
        Some("checkout-9".parse().expect("id")),
        None,
    )
    .await
    .expect("order");
    kausal_order::place_order(
        &producer,
        topics::ORDERS,
        &order("ord-outage-2"),
        None,
        None,
    )
    .await
    .expect("order");

    // Both orders fail through the outage and land in the ledger.
    let deadline = Instant::now() + Duration::from_secs(60);
    let pending = |s: Store| async move {
        s.dead_letters(&kausal_store::DeadLetterFilter {
            status: Some("pending".into()),
            ..Default::default()
        })
        .await
        .expect("list")
    };
    while pending(store.clone()).await.len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let entries = pending(store.clone()).await;
    assert_eq!(entries.len(), 2, "both dead letters in the ledger");
    assert_eq!(
        gateway.charges("ord-outage"),
        2,
        "two attempts during the outage"
    );
    let entry = entries
        .iter()
        .find(|e| e.correlation_id.as_deref() == Some("checkout-9"))
        .expect("entry of ord-outage");

    // The fault is fixed; replay exactly the entries matching a filter.
    gateway.0.down.store(false, Ordering::SeqCst);
    let matching = store
        .dead_letters(&kausal_store::DeadLetterFilter {
            status: Some("pending".into()),
            correlation_id: Some("checkout-9".into()),
            ..Default::default()
        })
        .await
        .expect("filter");
    assert_eq!(
        matching.len(),
        1,
        "the filter touches only the matching entry"
    );
    let replayer =
        EventProducer::new(&b.kafka, "kausal-dlq-replay", Metrics::new()).expect("producer");
    let replayed = replay::replay(&store, &replayer, &entry.dlq_id, 3, "test")
        .await
        .expect("replayed");
    assert_eq!(replayed.topic, topics::ORDERS);
    assert_eq!(replayed.replay_count, 1);
    let paid = b.read_all(topics::PAYMENTS, 1, Duration::from_secs(60));
    assert_eq!(paid.len(), 1, "processed once after the replay");
    assert_eq!(
        crate::harness::header(&paid[0], "correlation-id").as_deref(),
        Some("checkout-9"),
        "the correlation id is kept"
    );
    assert_eq!(gateway.charges("ord-outage"), 3, "exactly one more charge");
    assert_eq!(
        gateway.charges("ord-outage-2"),
        2,
        "the other entry was not touched"
    );

    // The replayed record: same event id, fresh trace linked to the old one.
    let orders = b.read_all(topics::ORDERS, 3, Duration::from_secs(30));
    let copy = orders
        .iter()
        .find(|m| crate::harness::header(m, "replay-count").is_some())
        .expect("the replayed record");
    assert_eq!(
        crate::harness::header(copy, "event-id"),
        Some(placed.headers.event_id.to_string())
    );
    let old_trace = placed.headers.traceparent.expect("traceparent").to_string();
    assert_eq!(
        crate::harness::header(copy, replay::REPLAY_LINK),
        Some(old_trace.clone())
    );
    let new_trace = crate::harness::header(copy, "traceparent").expect("new traceparent");
    assert_ne!(new_trace[3..35], old_trace[3..35], "a fresh trace id");
    assert!(
        crate::harness::headers_of(copy)
            .iter()
            .all(|(k, _)| !k.starts_with("dlq-")),
        "dlq headers are not replayed"
    );

    // The ledger moved on; a second replay of the same entry is refused.
    let stored = store
        .dead_letter(&entry.dlq_id)
        .await
        .expect("query")
        .expect("entry");
    assert_eq!(stored.status, "replayed");
    assert_eq!(stored.status_by.as_deref(), Some("test"));
    assert!(matches!(
        replay::replay(&store, &replayer, &entry.dlq_id, 3, "test").await,
        Err(LedgerError::NotPending { .. })
    ));

    // An event already replayed `cap` times is refused with the reason.
    let other = entries
        .iter()
        .find(|e| e.dlq_id != entry.dlq_id)
        .expect("other");
    match replay::replay(&store, &replayer, &other.dlq_id, 0, "test").await {
        Err(e @ LedgerError::CapReached { .. }) => {
            assert!(e.to_string().contains("discard"), "{e}")
        }
        other => panic!("wanted a cap refusal, got {other:?}"),
    }
    replay::discard(&store, &other.dlq_id, "customer cancelled", "test")
        .await
        .expect("discard");
    assert_eq!(
        store
            .dead_letter(&other.dlq_id)
            .await
            .expect("q")
            .expect("e")
            .status_reason
            .as_deref(),
        Some("customer cancelled")
    );

    stop.cancel();
    recorder.await.expect("recorder");
    payment.stop().await;
}

/// Waits until the ledger holds `n` dead letters (any status).
async fn wait_for_dead_letters(store: &Store, n: usize, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        let found = store
            .dead_letters(&kausal_store::DeadLetterFilter::default())
            .await
            .expect("ledger")
            .len();
        if found >= n || Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

on_brokers!(spring_dead_letter_topics_reach_the_ledger_and_replay_to_their_original_topic: Sqlite);
async fn spring_dead_letter_topics_reach_the_ledger_and_replay_to_their_original_topic(
    engine: Engine,
) {
    use kausal_lineage::replay;
    use rdkafka::Message;
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("orders", 1), ("orders-dlt", 1), ("orders.DLT", 1)])
        .await;
    let dir = crate::harness::scratch_dir();
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("spring.db").display()
    ))
    .await
    .expect("store");

    // Two orders from a Spring service (a plain client: no Kausal headers
    // but a traceparent), each failed by a Spring listener and dead-lettered
    // by DeadLetterPublishingRecoverer: Spring Kafka 3.3+ names the topic
    // `orders-dlt` and wraps the listener's exception; older versions name
    // it `orders.DLT`.
    let plain = b.plain_producer();
    let traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let value = br#"{"order_id":"ord-spring"}"#;
    let old_value = br#"{"order_id":"ord-spring-old"}"#;
    let original = crate::harness::send(
        &plain,
        "orders",
        Some(b"ord-spring"),
        Some(value),
        &[
            ("traceparent", Some(traceparent)),
            ("__TypeId__", Some(b"com.acme.Order")),
        ],
    )
    .await;
    let old_original = crate::harness::send(
        &plain,
        "orders",
        Some(b"ord-spring-old"),
        Some(old_value),
        &[],
    )
    .await;
    let (partition, offset) = (original.0.to_be_bytes(), original.1.to_be_bytes());
    let timestamp = 1_700_000_000_000i64.to_be_bytes();
    let trace = "org.springframework.kafka.listener.ListenerExecutionFailedException: \
                 Listener method 'public void com.acme.Stock.on(com.acme.Order)' threw exception\n\
                 \tat org.springframework.kafka.listener.KafkaMessageListenerContainer$ListenerConsumer.decorateException(KafkaMessageListenerContainer.java:2945)\n\
                 Caused by: java.lang.IllegalStateException: stock service unavailable\n\
                 \tat com.acme.Stock.on(Stock.java:42)\n";
    crate::harness::send(
        &plain,
        "orders-dlt",
        Some(b"ord-spring"),
        Some(value),
        &[
            ("traceparent", Some(traceparent)),
            ("__TypeId__", Some(b"com.acme.Order")),
            ("kafka_dlt-original-topic", Some(b"orders")),
            ("kafka_dlt-original-partition", Some(&partition)),
            ("kafka_dlt-original-offset", Some(&offset)),
            ("kafka_dlt-original-timestamp", Some(&timestamp)),
            ("kafka_dlt-original-timestamp-type", Some(b"CreateTime")),
            ("kafka_dlt-original-consumer-group", Some(b"stock-service")),
            (
                "kafka_dlt-exception-fqcn",
                Some(b"org.springframework.kafka.listener.ListenerExecutionFailedException"),
            ),
            (
                "kafka_dlt-exception-cause-fqcn",
                Some(b"java.lang.IllegalStateException"),
            ),
            (
                "kafka_dlt-exception-message",
                Some(b"Listener method 'public void com.acme.Stock.on(com.acme.Order)' threw exception"),
            ),
            ("kafka_dlt-exception-stacktrace", Some(trace.as_bytes())),
        ],
    )
    .await;
    let (old_partition, old_offset) = (old_original.0.to_be_bytes(), old_original.1.to_be_bytes());
    crate::harness::send(
        &plain,
        "orders.DLT",
        Some(b"ord-spring-old"),
        Some(old_value),
        &[
            ("kafka_dlt-original-topic", Some(b"orders")),
            ("kafka_dlt-original-partition", Some(&old_partition)),
            ("kafka_dlt-original-offset", Some(&old_offset)),
            ("kafka_dlt-original-consumer-group", Some(b"legacy-stock")),
            (
                "kafka_dlt-exception-fqcn",
                Some(b"com.acme.OutOfStockException"),
            ),
            ("kafka_dlt-exception-message", Some(b"no stock for sku-7")),
        ],
    )
    .await;

    // The recorder's pattern takes both topics in; they land in the ledger,
    // not among the events.
    let (stop, recorder) = spawn_recorder(&b, &store, &format!("rec-{}", unique()));
    assert_eq!(
        wait_for_dead_letters(&store, 2, Duration::from_secs(60)).await,
        2,
        "both Spring dead letters in the ledger"
    );
    assert_eq!(wait_for_events(&store, 2, Duration::from_secs(30)).await, 2);
    let ledger = store
        .dead_letters(&kausal_store::DeadLetterFilter::default())
        .await
        .expect("ledger");
    let by_topic = |topic: &str| {
        ledger
            .iter()
            .find(|d| d.dlq_topic == topic)
            .unwrap_or_else(|| panic!("a ledger entry from {topic}: {ledger:?}"))
            .clone()
    };
    let recent = by_topic("orders-dlt");
    let original_id =
        kausal_core::EventId::for_record("orders", original.0, original.1).to_string();
    assert_eq!(recent.source_topic, "orders");
    assert_eq!(
        (recent.source_partition, recent.source_offset),
        (Some(original.0), Some(original.1))
    );
    assert_eq!(recent.source_timestamp_ms, Some(1_700_000_000_000));
    assert_eq!(recent.consumer_group.as_deref(), Some("stock-service"));
    assert_eq!(
        recent.error_type.as_deref(),
        Some("java.lang.IllegalStateException"),
        "the listener's exception, not Spring's wrapper"
    );
    assert_eq!(
        recent.error_message.as_deref(),
        Some("stock service unavailable")
    );
    assert_eq!(recent.status, "pending");
    assert_eq!(
        recent.event_id, original_id,
        "the id the recorder gave the original record"
    );
    assert!(
        store.event(&original_id).await.expect("query").is_some(),
        "the dead letter joins the original's lineage"
    );
    let older = by_topic("orders.DLT");
    assert_eq!(older.source_topic, "orders");
    assert_eq!(older.consumer_group.as_deref(), Some("legacy-stock"));
    assert_eq!(
        older.error_type.as_deref(),
        Some("com.acme.OutOfStockException")
    );
    assert_eq!(older.error_message.as_deref(), Some("no stock for sku-7"));
    let stats = store.dead_letter_counts().await.expect("stats");
    assert!(
        stats.iter().any(|c| c.source_topic == "orders"
            && c.error_type == "java.lang.IllegalStateException"
            && c.count == 1),
        "{stats:?}"
    );

    // Replayed to the original topic: the original key, value and headers,
    // without Spring's dead-letter headers, under the original's event id.
    let replayer =
        EventProducer::new(&b.kafka, "kausal-dlq-replay", Metrics::new()).expect("producer");
    for entry in [&recent, &older] {
        let replayed = replay::replay(&store, &replayer, &entry.dlq_id, 3, "test")
            .await
            .expect("replayed");
        assert_eq!(replayed.topic, "orders");
        assert_eq!(replayed.replay_count, 1);
        assert_eq!(
            store
                .dead_letter(&entry.dlq_id)
                .await
                .expect("query")
                .expect("entry")
                .status,
            "replayed"
        );
    }
    let orders = b.read_all("orders", 4, Duration::from_secs(30));
    let copies: Vec<_> = orders
        .iter()
        .filter(|m| crate::harness::header(m, "replay-count").as_deref() == Some("1"))
        .collect();
    assert_eq!(copies.len(), 2, "both replays back on orders");
    let copy = copies
        .iter()
        .find(|m| m.key() == Some(&b"ord-spring"[..]))
        .expect("the replay of ord-spring");
    assert_eq!(copy.payload(), Some(&value[..]));
    assert_eq!(
        crate::harness::header(copy, "__TypeId__").as_deref(),
        Some("com.acme.Order"),
        "the original's own headers are kept"
    );
    assert!(
        crate::harness::headers_of(copy)
            .iter()
            .all(|(k, _)| !k.starts_with("kafka_dlt-")),
        "Spring's dead-letter headers are not replayed"
    );
    assert_eq!(
        crate::harness::header(copy, "event-id"),
        Some(original_id.clone()),
        "a record that had no event id is replayed under the one the ledger gave it"
    );
    assert_eq!(
        crate::harness::header(copy, "correlation-id"),
        Some(original_id)
    );
    assert_eq!(
        crate::harness::header(copy, replay::REPLAYED_FROM),
        Some(recent.dlq_id.clone())
    );
    assert_eq!(
        crate::harness::header(copy, replay::REPLAY_LINK).as_deref(),
        Some(std::str::from_utf8(traceparent).expect("ascii"))
    );
    stop.cancel();
    recorder.await.expect("recorder");
}

/// Fails every record (fatally: dead-lettered at once) while `failing`.
struct FailWhile {
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl kausal_kafka::Handler for FailWhile {
    async fn handle(
        &self,
        _event: &kausal_kafka::IncomingEvent,
        _out: &mut kausal_kafka::Emitter,
    ) -> Result<(), kausal_kafka::HandlerError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(kausal_kafka::HandlerError::fatal(
                "StockServiceDown",
                "the stock service is down",
            ));
        }
        Ok(())
    }
}

on_brokers!(a_replay_sends_its_own_span_in_a_new_trace_linked_to_the_original: Sqlite);
async fn a_replay_sends_its_own_span_in_a_new_trace_linked_to_the_original(engine: Engine) {
    use kausal_lineage::replay;
    use kausal_telemetry::spans::attr;
    use std::sync::atomic::{AtomicBool, Ordering};
    let spans = kausal_telemetry::testing::SpanCapture::install();
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("orders", 1), ("orders.dlq", 1)]).await;
    let dir = crate::harness::scratch_dir();
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("replay-trace.db").display()
    ))
    .await
    .expect("store");
    let failing = std::sync::Arc::new(AtomicBool::new(true));
    let group = format!("stock-{}", unique());
    let stock = start_runtime(
        &b.kafka,
        "stock-service",
        &group,
        &["orders"],
        FailWhile {
            failing: failing.clone(),
        },
        fast_retry(1),
        CorrelationPolicy::Adopt,
        Some(store.clone()),
    );
    let (stop, recorder) = spawn_recorder(&b, &store, &format!("rec-{}", unique()));
    let producer = EventProducer::new(&b.kafka, "order-service", Metrics::new()).expect("producer");
    let placed =
        kausal_order::place_order(&producer, "orders", &order("ord-replay-trace"), None, None)
            .await
            .expect("order");
    let original = placed.headers.traceparent.expect("traceparent");
    assert_eq!(
        wait_for_dead_letters(&store, 1, Duration::from_secs(60)).await,
        1
    );
    let entry = store
        .dead_letters(&kausal_store::DeadLetterFilter::default())
        .await
        .expect("ledger")
        .remove(0);

    failing.store(false, Ordering::SeqCst);
    let replayer =
        EventProducer::new(&b.kafka, "kausal-dlq-replay", Metrics::new()).expect("producer");
    let replayed = replay::replay(&store, &replayer, &entry.dlq_id, 3, "test")
        .await
        .expect("replayed");
    let copy = b
        .read_all("orders", 2, Duration::from_secs(30))
        .into_iter()
        .find(|m| crate::harness::header(m, "replay-count").is_some())
        .expect("the replayed record");
    let copy_context = kausal_core::TraceParent::parse(
        &crate::harness::header(&copy, "traceparent").expect("traceparent"),
    )
    .expect("a valid traceparent");
    let new_trace = copy_context.trace_id.to_string();
    assert_eq!(new_trace, replayed.trace_id);
    assert_ne!(copy_context.trace_id, original.trace_id, "a new trace");

    // The replay's PRODUCER span: the root of the new trace, named by the
    // replayed record's traceparent, linked to the original record's span
    // (which was exported, in the old trace).
    assert!(
        crate::harness::eventually(Duration::from_secs(30), || spans
            .in_trace(&new_trace)
            .iter()
            .any(|s| s.name == "process orders"))
        .await,
        "the replayed record was handled: {:?}",
        spans.in_trace(&new_trace)
    );
    let in_new = spans.in_trace(&new_trace);
    let send = in_new
        .iter()
        .find(|s| s.name == "send orders")
        .unwrap_or_else(|| panic!("the replay's send span: {in_new:?}"));
    assert_eq!(format!("{:?}", send.kind), "Producer");
    assert_eq!(send.span_id, copy_context.parent_id.to_string());
    assert_eq!(send.parent_span_id, None, "a root: replays use links only");
    assert_eq!(send.links, [original.parent_id.to_string()]);
    assert!(!send.failed);
    assert_eq!(
        send.attribute(attr::MESSAGING_SYSTEM).as_deref(),
        Some("kafka")
    );
    assert_eq!(
        send.attribute(attr::OPERATION_TYPE).as_deref(),
        Some("send")
    );
    assert_eq!(send.attribute(attr::DESTINATION).as_deref(), Some("orders"));
    assert_eq!(
        send.attribute(attr::MESSAGE_ID),
        Some(placed.headers.event_id.to_string())
    );
    assert_eq!(
        send.attribute(attr::CONVERSATION_ID),
        Some(placed.headers.correlation_id.to_string())
    );
    assert_eq!(
        send.attribute(attr::KEY).as_deref(),
        Some("ord-replay-trace")
    );
    assert_eq!(
        send.attribute(attr::OFFSET),
        Some(replayed.offset.to_string())
    );
    let linked = spans.in_trace(&original.trace_id.to_string());
    assert!(
        linked
            .iter()
            .any(|s| s.span_id == original.parent_id.to_string() && s.name == "send orders"),
        "the link names the original record's exported send span: {linked:?}"
    );

    // The replayed record's process span has that exported span as parent.
    let process = in_new
        .iter()
        .find(|s| s.name == "process orders")
        .expect("process span");
    assert_eq!(process.parent_span_id.as_ref(), Some(&send.span_id));
    assert_eq!(
        process.attribute(attr::CONSUMER_GROUP).as_deref(),
        Some(group.as_str())
    );

    let (_, outcomes) = stock.stop().await;
    assert!(
        outcomes
            .iter()
            .any(|(_, o)| matches!(o, kausal_kafka::runtime::Outcome::Processed { .. })),
        "handled after the replay: {outcomes:?}"
    );
    stop.cancel();
    recorder.await.expect("recorder");
}

/// The console's retention task prunes lineage too (not only telemetry),
/// and leaves the ledger and recent rows alone.
#[tokio::test]
async fn the_console_retention_task_prunes_old_lineage_and_keeps_the_ledger() {
    let dir = crate::harness::scratch_dir();
    let store = Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("retention.db").display()
    ))
    .await
    .expect("store");
    let now = chrono::Utc::now().timestamp_millis();
    let long_ago = now - 30 * 24 * 3600 * 1000;
    let event = |id: &str, offset: i64, at: i64| kausal_store::LineageEvent {
        event_id: id.to_owned(),
        event_type: Some("OrderPlaced".to_owned()),
        event_version: Some(1),
        correlation_id: id.to_owned(),
        causation_id: None,
        source_service: None,
        topic: "orders".to_owned(),
        partition: 0,
        offset,
        key: None,
        trace_id: None,
        span_id: None,
        occurred_at_ms: at,
        recorded_at_ms: at,
    };
    let kausal_lineage::record::Row::DeadLetter(letter) = kausal_lineage::record::classify(
        &kausal_lineage::record::Record {
            topic: "orders.dlq".to_owned(),
            partition: 0,
            offset: 0,
            timestamp_ms: Some(long_ago),
            key: None,
            value: None,
            headers: vec![("dlq-original-topic".to_owned(), Some(b"orders".to_vec()))],
        },
        long_ago,
    ) else {
        panic!("a dead letter");
    };
    store
        .record_batch(
            &[event("old", 0, long_ago), event("new", 1, now)],
            &[],
            &[letter],
        )
        .await
        .expect("rows");
    store
        .mark_processed("g", "old", long_ago)
        .await
        .expect("mark");
    store.mark_processed("g", "new", now).await.expect("mark");

    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(kausal_console::prune_until(
        store.clone(),
        Duration::from_secs(7 * 24 * 3600),
        Duration::from_millis(100),
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.event("old").await.expect("query").is_some() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    task.await.expect("retention task");
    assert!(store.event("old").await.expect("query").is_none());
    assert!(store.event("new").await.expect("query").is_some());
    assert!(!store.is_processed("g", "old").await.expect("query"));
    assert!(store.is_processed("g", "new").await.expect("query"));
    assert_eq!(
        store
            .lineage_row_counts()
            .await
            .expect("counts")
            .dead_letters,
        1,
        "the ledger is never pruned"
    );
}
