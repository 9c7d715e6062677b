//! The public `Service` builder (kausal-service) against a real broker and a
//! real SQLite store: a handler and a `main` of a few lines get topics, the
//! runtime's guarantees, `/metrics` and `/healthz`; a failed or panicking
//! part stops the rest and is the service's error.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use kausal_kafka::{
    Emitter, Event, EventSpec, Handler, HandlerError, IncomingEvent, OutgoingEvent,
};
use kausal_service::{Consumer, Service, ServiceConfig};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::harness::{Engine, TestBroker, eventually, free_port, header};
use crate::http::request;

#[derive(Debug, Serialize, Deserialize)]
struct Greeted {
    name: String,
}

impl Event for Greeted {
    const TYPE: &'static str = "Greeted";
    const VERSION: u32 = 1;
    const TOPIC: &'static str = "greetings";
    fn key(&self) -> Option<&str> {
        Some(&self.name)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Replied {
    name: String,
    text: String,
}

impl Event for Replied {
    const TYPE: &'static str = "Replied";
    const VERSION: u32 = 2;
    const TOPIC: &'static str = "replies";
    fn key(&self) -> Option<&str> {
        Some(&self.name)
    }
}

struct Greeter;

impl Handler for Greeter {
    async fn handle(&self, event: &IncomingEvent, out: &mut Emitter) -> Result<(), HandlerError> {
        let greeted: Greeted = event.decode()?;
        out.emit(&Replied {
            text: format!("hello, {}", greeted.name),
            name: greeted.name,
        })
    }
}

fn config(b: &TestBroker, metrics_port: u16) -> ServiceConfig {
    let database = format!("sqlite://{}", b.dir.path().join("service.db").display());
    ServiceConfig::try_parse_from([
        "greeter-service",
        "--kafka",
        &b.kafka.bootstrap_servers,
        "--database",
        &database,
        "--metrics-port",
        &metrics_port.to_string(),
        "--partitions",
        "2",
    ])
    .expect("flags parse")
}

on_brokers!(a_service_of_a_few_lines_consumes_emits_and_serves_health: Sqlite);
async fn a_service_of_a_few_lines_consumes_emits_and_serves_health(engine: Engine) {
    let b = TestBroker::start(engine).await;
    let port = free_port();
    let shutdown = CancellationToken::new();
    let service = Service::new("greeter-service", config(&b, port))
        .consume(Consumer::new("greeter-service", &["greetings"], Greeter).emits_to(&["replies"]));
    let running = tokio::spawn(service.run_until(shutdown.clone()));

    // The service created what it reads, dead-letters and writes.
    let admin = b.admin();
    let created = eventually(Duration::from_secs(30), || {
        let topics = admin.topics().unwrap_or_default();
        ["greetings", "greetings.dlq", "replies", "kausal.receipts"]
            .iter()
            .all(|t| topics.iter().any(|have| have == t))
    })
    .await;
    assert!(created, "the service creates its topics");

    let producer =
        kausal_kafka::EventProducer::new(&b.kafka, "test", kausal_telemetry::Metrics::new())
            .expect("producer");
    let greeting = OutgoingEvent::root(
        &EventSpec {
            topic: Greeted::TOPIC,
            key: Some("ada"),
            event_type: Greeted::TYPE,
            version: Greeted::VERSION,
            source_service: "test",
        },
        &Greeted { name: "ada".into() },
        None,
        None,
    )
    .expect("encodes");
    producer.publish(&greeting).await.expect("published");

    let replies = b.read_all("replies", 1, Duration::from_secs(60));
    assert_eq!(replies.len(), 1, "one reply");
    let reply = &replies[0];
    assert_eq!(header(reply, "event-type").as_deref(), Some("Replied"));
    assert_eq!(header(reply, "event-version").as_deref(), Some("2"));
    assert_eq!(
        header(reply, "source-service").as_deref(),
        Some("greeter-service")
    );
    assert_eq!(
        header(reply, "correlation-id"),
        Some(greeting.headers.correlation_id.to_string())
    );
    assert_eq!(
        header(reply, "causation-id"),
        Some(greeting.headers.event_id.to_string())
    );
    let body: serde_json::Value =
        serde_json::from_slice(rdkafka::Message::payload(reply).expect("a value")).expect("JSON");
    assert_eq!(body["text"], "hello, ada");

    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let (status, _, body) = request(addr, "GET", "/healthz", &[], "").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, _, metrics) = request(addr, "GET", "/metrics", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("events_consumed_total{"),
        "the runtime's metrics are served: {}",
        &metrics[..metrics.len().min(2000)]
    );

    shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("stops on shutdown")
        .expect("joins");
    assert!(stopped.is_ok(), "a clean stop is Ok: {stopped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_panicking_part_stops_the_service_with_its_error() {
    let b = TestBroker::start(Engine::Sqlite).await;
    for (part, expected) in [
        ("disk", "disk failed: the disk is full"),
        ("panics", "panics panicked: the index is corrupt"),
    ] {
        let shutdown = CancellationToken::new();
        let service = Service::new("greeter-service", config(&b, 0))
            .consume(Consumer::new("greeter-service", &["greetings"], Greeter))
            .task(part, move |ctx| async move {
                // Fails once the consumer is up, while it runs.
                tokio::time::sleep(Duration::from_secs(2)).await;
                assert!(!ctx.shutdown.is_cancelled());
                if part == "panics" {
                    panic!("the index is corrupt");
                }
                anyhow::bail!("the disk is full")
            });
        let started = Instant::now();
        let result =
            tokio::time::timeout(Duration::from_secs(60), service.run_until(shutdown.clone()))
                .await
                .expect("the failure stops the whole service, consumer included");
        let error = format!(
            "{:#}",
            result.expect_err("a failed part is the service's error")
        );
        assert!(error.contains(expected), "{part}: {error}");
        assert!(shutdown.is_cancelled(), "the other parts were told to stop");
        assert!(started.elapsed() >= Duration::from_secs(2));
    }
}
