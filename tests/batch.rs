//! The batch handler API end to end on the embedded broker: batches under
//! one span with a link per record, per-record emission, and a bad record
//! dead-lettered alone after the batch is split.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kausal_contracts::OrderPlaced;
use kausal_core::{HandlerError, dlq, headers as h};
use kausal_kafka::runtime::Outcome;
use kausal_kafka::{
    BatchEmitter, BatchHandler, BatchLimits, ConsumerRuntime, EventProducer, IncomingEvent,
};
use kausal_telemetry::Metrics;
use kausal_telemetry::spans::attr;
use kausal_telemetry::testing::SpanCapture;
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

use crate::harness::{Engine, TestBroker, eventually, header, unique};
use crate::runtime::{fast_retry, order};

/// Pays every order of a batch in one go; an order id starting with `bad`
/// makes the whole batch fail (a bulk API refusing the request).
#[derive(Default, Clone)]
struct BulkPayments {
    batch_sizes: Arc<Mutex<Vec<usize>>>,
}

impl BatchHandler for BulkPayments {
    async fn handle_batch(
        &self,
        batch: &[IncomingEvent],
        out: &mut BatchEmitter,
    ) -> Result<(), HandlerError> {
        self.batch_sizes.lock().expect("lock").push(batch.len());
        let orders: Vec<OrderPlaced> = batch
            .iter()
            .map(IncomingEvent::json)
            .collect::<Result<_, _>>()?;
        if let Some(bad) = orders.iter().find(|o| o.order_id.starts_with("bad")) {
            return Err(HandlerError::retryable(
                "BulkRejected",
                format!("the bulk API refused the batch because of {}", bad.order_id),
            ));
        }
        for (i, o) in orders.iter().enumerate() {
            out.emit_to(
                i,
                "payments",
                Some(&o.order_id),
                "PaymentProcessed",
                1,
                &serde_json::json!({ "order_id": o.order_id }),
            )?;
        }
        Ok(())
    }
}

on_brokers!(batches_get_one_linked_span_and_a_bad_record_is_dead_lettered_alone: Sqlite);
async fn batches_get_one_linked_span_and_a_bad_record_is_dead_lettered_alone(engine: Engine) {
    let spans = SpanCapture::install();
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("orders", 1), ("orders.dlq", 1), ("payments", 1)])
        .await;
    let producer = EventProducer::new(&b.kafka, "order-test", Metrics::new()).expect("producer");
    let n = 40;
    let mut sent = HashMap::new();
    for i in 0..n {
        let id = if i == 17 {
            "bad-17".to_owned()
        } else {
            format!("ord-{i}")
        };
        let event = kausal_order::place_order(&producer, "orders", &order(&id), None, None)
            .await
            .expect("order published");
        sent.insert(id, event.headers);
    }

    let handler = BulkPayments::default();
    let group = format!("bulk-{}", unique());
    let outcomes: Arc<Mutex<Vec<(IncomingEvent, Outcome)>>> = Arc::default();
    let seen = outcomes.clone();
    let runtime = ConsumerRuntime::batched(
        b.kafka.clone(),
        "bulk-payment",
        &group,
        &["orders"],
        handler.clone(),
        BatchLimits {
            max_records: 10,
            max_wait: Duration::from_millis(300),
        },
        EventProducer::new(&b.kafka, "bulk-payment", Metrics::new()).expect("producer"),
    )
    .retry_policy(fast_retry(2))
    .commit_interval(Duration::from_millis(50))
    .on_outcome(Arc::new(move |e, o| {
        seen.lock().expect("lock").push((e.clone(), o.clone()))
    }));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(runtime.run(shutdown.clone()));
    assert!(
        eventually(Duration::from_secs(60), || outcomes
            .lock()
            .expect("lock")
            .len()
            >= n)
        .await,
        "every record finished"
    );
    shutdown.cancel();
    let summary = task.await.expect("task").expect("runtime runs");
    assert_eq!(summary.processed, n as u64 - 1);
    assert_eq!(summary.dead_lettered, 1);

    // Batches: more than one record at a time, never more than the limit.
    let sizes = handler.batch_sizes.lock().expect("lock").clone();
    assert!(
        sizes.iter().all(|s| (1..=10).contains(s)),
        "sizes {sizes:?}"
    );
    assert!(sizes.iter().any(|s| *s > 1), "sizes {sizes:?}");

    // Outcomes: only the bad record dead-lettered; the good records of its
    // batch were processed after the split.
    let outcomes = outcomes.lock().expect("lock").clone();
    for (event, outcome) in &outcomes {
        let id = event.key_str().expect("keyed").to_owned();
        if id == "bad-17" {
            assert!(
                matches!(outcome, Outcome::DeadLettered { error_type, .. } if error_type == "BulkRejected"),
                "{outcome:?}"
            );
        } else {
            assert!(
                matches!(outcome, Outcome::Processed { .. }),
                "{id}: {outcome:?}"
            );
        }
    }
    let letters = b.read_all("orders.dlq", 1, Duration::from_secs(10));
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].key(), Some(&b"bad-17"[..]));
    assert_eq!(
        header(&letters[0], dlq::ERROR_TYPE).as_deref(),
        Some("BulkRejected")
    );

    // Emitted per record: the record's correlation id, the record as cause,
    // one payment per good order.
    let payments = b.read_all("payments", n - 1, Duration::from_secs(10));
    assert_eq!(payments.len(), n - 1);
    let mut paid = HashSet::new();
    for p in &payments {
        let id = String::from_utf8(p.key().expect("keyed").to_vec()).expect("utf-8");
        let order_headers = &sent[&id];
        assert_eq!(
            header(p, h::CAUSATION_ID),
            Some(order_headers.event_id.to_string())
        );
        assert_eq!(
            header(p, h::CORRELATION_ID),
            Some(order_headers.correlation_id.to_string())
        );
        assert!(paid.insert(id), "one payment per order");
    }

    // Spans: one `process orders` span per handled batch, linked to every
    // record's producer span; the batch with the bad record ends in ERROR.
    let batch_spans: Vec<_> = spans
        .spans()
        .into_iter()
        .filter(|s| s.attribute(attr::CONSUMER_GROUP).as_deref() == Some(group.as_str()))
        .filter(|s| s.name == "process orders")
        .collect();
    let links: Vec<String> = batch_spans
        .iter()
        .flat_map(|s| s.links.iter().cloned())
        .collect();
    assert_eq!(
        links.len(),
        n,
        "each record linked from exactly one batch span"
    );
    let linked: HashSet<String> = links.into_iter().collect();
    let producer_spans: HashSet<String> = sent
        .values()
        .map(|hd| hd.traceparent.expect("traceparent").parent_id.to_string())
        .collect();
    assert_eq!(linked, producer_spans, "one link per record");
    for s in &batch_spans {
        assert_eq!(
            s.attribute(attr::BATCH_MESSAGE_COUNT),
            Some(s.links.len().to_string())
        );
        assert!(s.parent_span_id.is_none(), "a batch span is a root");
    }
    let failed: Vec<_> = batch_spans.iter().filter(|s| s.failed).collect();
    assert_eq!(failed.len(), 1, "the batch of the bad record");
    assert!(failed[0].events.iter().any(|e| e == "exception"));
    // The dead letter's `send` span is a child of that batch span.
    assert!(
        spans.spans().iter().any(|s| s.name == "send orders.dlq"
            && s.parent_span_id.as_ref() == Some(&failed[0].span_id)),
        "dlq span under the batch span"
    );
}

/// Names the child of `a_batch_consumers_span_reaches_each_records_correlation_document`:
/// "BOOTSTRAP CONSOLE_URL GROUP".
const EXPORTING_CHILD_ENV: &str = "KAUSAL_TEST_BATCH_EXPORTING_CHILD";

/// Orders the exporting child publishes and pays in batches.
const EXPORTED_ORDERS: usize = 12;

/// A batch consumer with the real OTLP exporter, pointed at a console: the
/// child process of `a_batch_consumers_span_reaches_each_records_correlation_document`
/// (this test binary, re-executed), because the exporter is installed for a
/// whole process and the other tests of this binary capture spans in
/// memory. It publishes the orders itself (so their `send` spans reach the
/// console too), prints `ORDER <correlation id> <trace id> <span id>` for
/// each, pays them in batches, flushes the exporter and prints `DONE`.
/// Without the env var this test does nothing.
#[test]
#[ignore = "run only as the child process of a_batch_consumers_span_reaches_each_records_correlation_document"]
fn batch_consumer_exporting_to_a_console() {
    let Ok(spec) = std::env::var(EXPORTING_CHILD_ENV) else {
        return;
    };
    let [bootstrap, console, group]: [&str; 3] = spec
        .split(' ')
        .collect::<Vec<_>>()
        .try_into()
        .expect("BOOTSTRAP CONSOLE_URL GROUP");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut telemetry = kausal_telemetry::otel::init_tracing_at("bulk-payment", Some(console))
            .expect("the OTLP exporter");
        let kafka = kausal_kafka::KafkaConfig::new(bootstrap);
        let producer = EventProducer::new(&kafka, "order-test", Metrics::new()).expect("producer");
        for i in 0..EXPORTED_ORDERS {
            let event = kausal_order::place_order(
                &producer,
                "orders",
                &order(&format!("ord-{i}")),
                None,
                None,
            )
            .await
            .expect("order published");
            let parent = event.headers.traceparent.expect("traceparent");
            println!(
                "ORDER {} {} {}",
                event.headers.correlation_id, parent.trace_id, parent.parent_id
            );
        }
        let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = finished.clone();
        let consumer = ConsumerRuntime::batched(
            kafka.clone(),
            "bulk-payment",
            group,
            &["orders"],
            BulkPayments::default(),
            BatchLimits {
                max_records: 5,
                max_wait: Duration::from_millis(300),
            },
            EventProducer::new(&kafka, "bulk-payment", Metrics::new()).expect("producer"),
        )
        .commit_interval(Duration::from_millis(50))
        .on_outcome(Arc::new(move |_, _| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(consumer.run(shutdown.clone()));
        assert!(
            eventually(Duration::from_secs(60), || finished
                .load(std::sync::atomic::Ordering::SeqCst)
                >= EXPORTED_ORDERS)
            .await,
            "every order paid"
        );
        shutdown.cancel();
        task.await.expect("task").expect("runtime runs");
        telemetry.shutdown();
        println!("DONE");
    });
}

on_brokers!(a_batch_consumers_span_reaches_each_records_correlation_document: Sqlite);
/// Issue 12: "a batch consumer's spans are reachable through their links",
/// end to end. The batch span is a root in a trace of its own with a link
/// per record; the console stores the links, and each order's correlation
/// document reaches the batch span's trace through them.
async fn a_batch_consumers_span_reaches_each_records_correlation_document(engine: Engine) {
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("orders", 1), ("orders.dlq", 1), ("payments", 1)])
        .await;
    let store = kausal_store::Store::connect(&format!(
        "sqlite://{}",
        b.dir.path().join("console.db").display()
    ))
    .await
    .expect("console store");
    let stop = CancellationToken::new();
    let console = kausal_console::serve(
        kausal_console::ConsoleConfig::new("127.0.0.1:0".parse().expect("addr"), "test-token"),
        store.clone(),
        stop.clone(),
    )
    .await
    .expect("console serves");
    let addr = console.http;

    let group = format!("bulk-{}", unique());
    let spec = format!("{} http://{addr} {group}", b.kafka.bootstrap_servers);
    let child = tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "batch::batch_consumer_exporting_to_a_console",
                "--ignored",
                "--nocapture",
            ])
            .env(EXPORTING_CHILD_ENV, spec)
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("the child runs");
        assert!(
            output.status.success(),
            "the child failed: {:?}",
            output.status
        );
        String::from_utf8(output.stdout).expect("UTF-8 output")
    });
    let stdout = tokio::time::timeout(Duration::from_secs(120), child)
        .await
        .expect("the child ends within 120 s")
        .expect("child task");
    let orders: Vec<(String, String, String)> = stdout
        .lines()
        .filter_map(|line| {
            let mut parts = line.strip_prefix("ORDER ")?.split(' ').map(str::to_owned);
            Some((parts.next()?, parts.next()?, parts.next()?))
        })
        .collect();
    assert_eq!(orders.len(), EXPORTED_ORDERS, "one ORDER line per order");
    assert!(
        stdout.lines().any(|l| l == "DONE"),
        "the child flushed its exporter"
    );

    for (correlation, trace, send_span) in &orders {
        let path = format!("/api/correlations/{correlation}");
        let (status, _, body) = crate::http::request(addr, "GET", &path, &[], "").await;
        assert_eq!(status, 200, "{path}: {body}");
        let doc: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let spans = doc["spans"].as_array().expect("spans");
        assert!(
            spans
                .iter()
                .any(|s| s["trace_id"] == trace.as_str() && s["span_id"] == send_span.as_str()),
            "{correlation}: the order's own send span: {doc:#}"
        );
        let batch = spans
            .iter()
            .find(|s| {
                s["name"] == "process orders"
                    && s["links"].as_array().is_some_and(|links| {
                        links.iter().any(|l| {
                            l["trace_id"] == trace.as_str() && l["span_id"] == send_span.as_str()
                        })
                    })
            })
            .unwrap_or_else(|| panic!("{correlation}: the batch span that handled it: {doc:#}"));
        assert_ne!(
            batch["trace_id"],
            trace.as_str(),
            "a batch span has a trace of its own"
        );
        assert!(batch["parent_span_id"].is_null(), "{batch}");
        assert!(
            doc["trace_ids"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| *t == batch["trace_id"])),
            "{correlation}: the batch's trace is one of the document's traces"
        );
        // The payment emitted for this order is a child of the batch span,
        // in the batch's trace.
        assert!(
            spans.iter().any(|s| s["name"] == "send payments"
                && s["trace_id"] == batch["trace_id"]
                && s["parent_span_id"] == batch["span_id"]),
            "{correlation}: the batch's send span: {doc:#}"
        );
    }
    stop.cancel();
    store.close().await;
}
