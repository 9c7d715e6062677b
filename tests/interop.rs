//! Interoperability with a client the team did not write: confluent-kafka
//! (Python, librdkafka from PyPI). `.ci/run` installs it; without it these
//! tests fail with the install hint — they never pass silently.

use std::process::Command;
use std::time::Duration;

use kausal_contracts::topics;
use kausal_kafka::CorrelationPolicy;
use kausal_payment::{PaymentHandler, PaymentMetrics};
use kausal_telemetry::Metrics;

use crate::harness::{Engine, TestBroker, header};
use crate::runtime::{ScriptedGateway, fast_retry, start_runtime};

fn python(args: &[&str]) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/python_client.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python client failed (are confluent-kafka and opentelemetry-sdk installed? `pip install confluent-kafka opentelemetry-sdk`, done by .ci/run): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

on_brokers!(a_python_producer_and_consumer_share_one_trace_with_the_rust_service: Sqlite);
async fn a_python_producer_and_consumer_share_one_trace_with_the_rust_service(engine: Engine) {
    let b = TestBroker::start(engine).await;
    b.create_topics(&[
        (topics::ORDERS, 3),
        ("orders.dlq", 3),
        (topics::PAYMENTS, 3),
    ])
    .await;
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let order = r#"{"order_id":"ord-py","user_id":"u","amount":7.5,"currency":"EUR","customer_email":"p@example.com","created_at":"2026-11-22T00:00:00Z"}"#;
    // (a)+(c) a confluent-kafka producer with the OpenTelemetry SDK: its own
    // span in the caller's trace, and only a `traceparent` header, no
    // Kausal headers.
    let sent: serde_json::Value = serde_json::from_str(
        python(&[
            "produce",
            &b.kafka.bootstrap_servers,
            topics::ORDERS,
            "ord-py",
            order,
            &traceparent,
        ])
        .trim(),
    )
    .expect("json");
    // The Python SDK made its own PRODUCER span in the caller's trace.
    assert_eq!(sent["trace_id"], trace, "{sent}");
    assert_ne!(sent["span_id"], "00f067aa0ba902b7", "{sent}");
    let (partition, offset) = (
        sent["partition"].as_i64().expect("p") as i32,
        sent["offset"].as_i64().expect("o"),
    );

    let dir = crate::harness::scratch_dir();
    let store = kausal_store::Store::connect(&format!(
        "sqlite://{}",
        dir.path().join("interop.db").display()
    ))
    .await
    .expect("store");
    let (recorder_stop, recorder_task) =
        crate::harness::spawn_recorder(&b, &store, &format!("rec-{}", crate::harness::unique()));
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
    let paid = b.read_all(topics::PAYMENTS, 1, Duration::from_secs(60));
    payment.stop().await;
    assert_eq!(paid.len(), 1, "the Rust service processed the Python event");
    let tp = header(&paid[0], "traceparent").expect("traceparent");
    assert!(
        tp.starts_with(&format!("00-{trace}-")),
        "the Rust service continued the Python trace: {tp}"
    );
    let expected_id =
        kausal_core::EventId::for_record(topics::ORDERS, partition, offset).to_string();
    assert_eq!(
        header(&paid[0], "causation-id"),
        Some(expected_id.clone()),
        "deterministic id of the plain record"
    );
    assert_eq!(
        header(&paid[0], "correlation-id"),
        Some(expected_id.clone()),
        "adopted correlation id"
    );

    // The recorder names the Python event the same way.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut recorded = None;
    while recorded.is_none() && std::time::Instant::now() < deadline {
        recorded = store.event(&expected_id).await.expect("query");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    recorder_stop.cancel();
    recorder_task.await.expect("recorder");
    let recorded =
        recorded.expect("the plain confluent-kafka event is recorded under its deterministic id");
    assert_eq!(
        recorded.correlation_id, expected_id,
        "with its adopted correlation id"
    );
    assert_eq!(recorded.trace_id.as_deref(), Some(trace));

    // (b) a Python consumer reads the Rust event and continues its trace.
    let line = python(&["consume", &b.kafka.bootstrap_servers, topics::PAYMENTS, "1"]);
    let seen: serde_json::Value = serde_json::from_str(line.trim()).expect("json");
    assert_eq!(seen["key"], "ord-py");
    assert_eq!(seen["headers"]["event-type"], "PaymentProcessed");
    assert_eq!(seen["headers"]["source-service"], "payment-service");
    let continued = seen["continued_traceparent"].as_str().expect("continued");
    let parsed =
        kausal_core::TraceParent::parse(continued).expect("a valid traceparent from Python");
    assert_eq!(
        parsed.trace_id.to_string(),
        trace,
        "one trace id from Python through Rust back to Python"
    );
}
