//! Span export proven with a real OTLP/HTTP receiver: the services run as
//! processes configured only by `OTEL_*` variables, and this test decodes
//! what they send with the OTLP protobuf types.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::{Span, span::SpanKind, status::StatusCode};
use prost::Message;

use crate::harness::{Engine, KillOnDrop, TestBroker, eventually, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_kausal");

/// A span as received, with its service.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.clone())
            .map(|v| match v {
                Value::StringValue(s) => s,
                Value::IntValue(i) => i.to_string(),
                Value::BoolValue(b) => b.to_string(),
                Value::DoubleValue(d) => d.to_string(),
                other => format!("{other:?}"),
            })
    }
}

/// Starts an OTLP/HTTP receiver on a free port; returns its endpoint.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
    let sink = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut out = sink.lock().expect("lock");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "service.name")
                        .and_then(|kv| kv.value.as_ref()?.value.clone())
                        .map(|v| match v {
                            Value::StringValue(s) => s,
                            other => format!("{other:?}"),
                        })
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            out.push(Received {
                                service: service.clone(),
                                span,
                            });
                        }
                    }
                }
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });
    (format!("http://{addr}"), spans)
}

pub(crate) fn service(b: &TestBroker, name: &str, endpoint: &str, extra: &[&str]) -> KillOnDrop {
    service_with_env(b, name, endpoint, extra, &[])
}

fn service_with_env(
    b: &TestBroker,
    name: &str,
    endpoint: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> KillOnDrop {
    let log = std::fs::File::create(b.dir.path().join(format!("{name}.log"))).expect("log file");
    Command::new(BIN)
        .args(["service", name, "--kafka", &b.kafka.bootstrap_servers])
        .args([
            "--database",
            &format!(
                "sqlite://{}",
                b.dir.path().join(format!("{name}.db")).display()
            ),
        ])
        .args(extra)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("OTEL_SERVICE_NAME", format!("{name}-under-test"))
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::from(log))
        .stderr(Stdio::inherit())
        .spawn()
        .map(KillOnDrop)
        .expect("service starts")
}

/// The value of the sample `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

on_brokers!(spans_of_one_order_reach_a_real_otlp_receiver_as_one_trace: Sqlite);
async fn spans_of_one_order_reach_a_real_otlp_receiver_as_one_trace(engine: Engine) {
    let b = TestBroker::start(engine).await;
    let (endpoint, spans) = receiver().await;
    let http_port = free_port();
    let metrics_port = free_port();
    // Every charge fails: two attempts, then the dead-letter topic.
    let mut payment = service(
        &b,
        "payment",
        &endpoint,
        &[
            "--payment-failure-rate",
            "1",
            "--payment-decline-rate",
            "0",
            "--max-attempts",
            "2",
            "--initial-backoff-ms",
            "10",
            "--metrics-port",
            &metrics_port.to_string(),
        ],
    );
    let mut order = service(
        &b,
        "order",
        &endpoint,
        &["--rate", "0", "--http-port", &http_port.to_string()],
    );

    // The caller's trace: the whole story must stay in it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let addr: std::net::SocketAddr = format!("127.0.0.1:{http_port}").parse().expect("addr");
    let up = eventually(Duration::from_secs(60), || {
        std::net::TcpStream::connect(addr).is_ok()
    })
    .await;
    assert!(up, "order API listens");
    let (status, _, body) = crate::http::request(
        addr,
        "POST",
        "/orders",
        &[
            ("traceparent", &format!("00-{trace_id}-{caller_span}-01")),
            ("X-Correlation-ID", "otel-test-1"),
        ],
        r#"{"user_id":"u1","amount":10.0,"currency":"EUR","customer_email":"a@b.c"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let placed: serde_json::Value = serde_json::from_str(&body).expect("json");
    let event_id = placed["event_id"].as_str().expect("event id").to_owned();
    // A refused request gets its server span too, in the caller's trace.
    let refused_trace = "5cf92f3577b34da6a3ce929d0e0e4737";
    let (status, _, _) = crate::http::request(
        addr,
        "POST",
        "/orders",
        &[(
            "traceparent",
            &format!("00-{refused_trace}-{caller_span}-01"),
        )],
        r#"{"user_id":"u1","amount":"ten"}"#,
    )
    .await;
    assert_eq!(status, 400);

    // (The order service's read model consumes `orders` too; its process
    // span is in the trace as well, under the order service's name.)
    let in_trace = |name: &str| -> Option<Received> {
        let service = if name == "process orders" || name == "send orders.dlq" {
            "payment-under-test"
        } else {
            "order-under-test"
        };
        spans
            .lock()
            .expect("lock")
            .iter()
            .find(|r| {
                hex(&r.span.trace_id) == trace_id && r.span.name == name && r.service == service
            })
            .cloned()
    };
    let arrived = eventually(Duration::from_secs(60), || {
        [
            "POST /orders",
            "send orders",
            "process orders",
            "send orders.dlq",
        ]
        .iter()
        .all(|n| in_trace(n).is_some())
    })
    .await;
    let metrics_addr: std::net::SocketAddr =
        format!("127.0.0.1:{metrics_port}").parse().expect("addr");
    assert!(
        std::net::TcpStream::connect(metrics_addr).is_ok(),
        "payment /metrics on {metrics_addr}: {}",
        std::fs::read_to_string(b.dir.path().join("payment.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("metrics") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (_, _, metrics) = crate::http::request(metrics_addr, "GET", "/metrics", &[], "").await;
    for child in [&mut payment, &mut order] {
        let status = child.terminate(Duration::from_secs(20));
        assert!(
            status.is_some_and(|s| s.success()),
            "SIGTERM exits 0: {status:?}"
        );
    }
    let names: Vec<String> = spans
        .lock()
        .expect("lock")
        .iter()
        .map(|r| format!("{} {} {}", r.service, r.span.name, hex(&r.span.trace_id)))
        .collect();
    assert!(arrived, "spans received: {names:#?}");
    let refused = spans
        .lock()
        .expect("lock")
        .iter()
        .find(|r| hex(&r.span.trace_id) == refused_trace && r.span.name == "POST /orders")
        .cloned()
        .expect("a server span for the 400");
    assert_eq!(hex(&refused.span.parent_span_id), caller_span);
    assert_eq!(
        refused.attr("http.response.status_code").as_deref(),
        Some("400")
    );
    assert!(
        refused
            .span
            .status
            .as_ref()
            .is_none_or(|s| s.code != StatusCode::Error as i32),
        "a 4xx is not a server error"
    );

    let server = in_trace("POST /orders").expect("server span");
    let send = in_trace("send orders").expect("send span");
    let process = in_trace("process orders").expect("process span");
    let dlq = in_trace("send orders.dlq").expect("dlq span");

    // Services, kinds, parentage: caller → server → send → process → dlq.
    assert_eq!(server.service, "order-under-test");
    assert_eq!(send.service, "order-under-test");
    assert_eq!(process.service, "payment-under-test");
    assert_eq!(server.span.kind, SpanKind::Server as i32);
    assert_eq!(send.span.kind, SpanKind::Producer as i32);
    assert_eq!(process.span.kind, SpanKind::Consumer as i32);
    assert_eq!(dlq.span.kind, SpanKind::Producer as i32);
    assert_eq!(hex(&server.span.parent_span_id), caller_span);
    assert_eq!(send.span.parent_span_id, server.span.span_id);
    assert_eq!(
        process.span.parent_span_id, send.span.span_id,
        "process is the send span's child"
    );
    assert_eq!(
        dlq.span.parent_span_id, process.span.span_id,
        "the DLQ publish is a child of process"
    );
    // ... and the consumer links to its producer too.
    assert_eq!(process.span.links.len(), 1);
    assert_eq!(process.span.links[0].span_id, send.span.span_id);

    // Semantic-convention attributes.
    let expect = |r: &Received, key: &str, want: &str| {
        assert_eq!(r.attr(key).as_deref(), Some(want), "{} {key}", r.span.name);
    };
    for r in [&send, &process, &dlq] {
        expect(r, "messaging.system", "kafka");
        expect(r, "messaging.message.id", &event_id);
        expect(r, "messaging.message.conversation_id", "otel-test-1");
    }
    expect(&send, "messaging.operation.type", "send");
    expect(&send, "messaging.destination.name", "orders");
    expect(&process, "messaging.operation.name", "process");
    expect(&process, "messaging.destination.name", "orders");
    expect(&process, "messaging.consumer.group.name", "payment-service");
    expect(
        &process,
        "messaging.kafka.message.key",
        placed["order_id"].as_str().expect("id"),
    );
    assert!(process.attr("messaging.kafka.offset").is_some());
    assert!(process.attr("messaging.destination.partition.id").is_some());
    expect(&dlq, "messaging.destination.name", "orders.dlq");

    // The failure: status ERROR, error.type, one exception per failed
    // attempt, a retry event between them.
    let status = process.span.status.clone().expect("status");
    assert_eq!(status.code, StatusCode::Error as i32);
    expect(&process, "error.type", "PaymentGatewayError");
    let events: HashMap<&str, usize> =
        process.span.events.iter().fold(HashMap::new(), |mut m, e| {
            *m.entry(e.name.as_str()).or_default() += 1;
            m
        });
    assert_eq!(
        events.get("exception"),
        Some(&2),
        "{:?}",
        process.span.events
    );
    assert_eq!(events.get("retry"), Some(&1), "{:?}", process.span.events);

    // Logs: every line of the payment service is JSON; those of this
    // handling carry the contract's fields and the span's ids.
    let log = std::fs::read_to_string(b.dir.path().join("payment.log")).expect("payment log");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let ours: Vec<&serde_json::Value> = lines.iter().filter(|l| l["traceId"] == trace_id).collect();
    assert!(ours.len() >= 2, "retry, dead-letter lines: {log}");
    for line in &ours {
        for field in [
            "timestamp",
            "level",
            "service",
            "message",
            "correlationId",
            "spanId",
            "eventType",
            "eventId",
        ] {
            assert!(line.get(field).is_some(), "{field} missing in {line}");
        }
        assert_eq!(line["spanId"], hex(&process.span.span_id), "{line}");
        assert_eq!(line["correlationId"], "otel-test-1");
        assert_eq!(line["eventId"], event_id.as_str());
    }
    let levels: Vec<&str> = ours.iter().filter_map(|l| l["level"].as_str()).collect();
    assert!(levels.contains(&"WARN"), "a retry logs WARN: {levels:?}");
    let dead = ours
        .iter()
        .find(|l| l["level"] == "ERROR")
        .expect("dead-lettering logs ERROR");
    assert_eq!(dead["errorType"], "PaymentGatewayError");
    assert!(
        dead.get("error").is_some() && dead.get("durationMs").is_some(),
        "{dead}"
    );

    // Metrics: the counts of this one order, and promtool accepts the text.
    let consumed = "events_consumed_total{topic=\"orders\",consumer_group=\"payment-service\"}";
    assert_eq!(sample(&metrics, consumed), Some(1.0), "{metrics}");
    let errors =
        "event_processing_errors_total{topic=\"orders\",error_type=\"PaymentGatewayError\"}";
    assert_eq!(sample(&metrics, errors), Some(2.0), "{metrics}");
    let retries = "event_retries_total{topic=\"orders\",consumer_group=\"payment-service\"}";
    assert_eq!(sample(&metrics, retries), Some(1.0), "{metrics}");
    let dlq = "dlq_events_total{source_topic=\"orders\",error_type=\"PaymentGatewayError\"}";
    assert_eq!(sample(&metrics, dlq), Some(1.0), "{metrics}");
    crate::alerts::promtool_stdin(&["check", "metrics"], &metrics);
}

on_brokers!(failed_handling_is_exported_even_when_the_sampler_keeps_nothing: Sqlite);
/// Errors are never sampled away: with a sampler that keeps no trace at
/// all, the spans of failed handling are exported and nothing else is.
async fn failed_handling_is_exported_even_when_the_sampler_keeps_nothing(engine: Engine) {
    let b = TestBroker::start(engine).await;
    b.create_topics(&[("orders", 1), ("orders.dlq", 1), ("payments", 1)])
        .await;
    let (endpoint, spans) = receiver().await;
    let mut payment = service_with_env(
        &b,
        "payment",
        &endpoint,
        &["--payment-failure-rate", "0", "--payment-decline-rate", "0"],
        &[
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0"),
        ],
    );

    let producer = b.plain_producer();
    let good = serde_json::json!({"order_id": "o-good", "user_id": "u", "amount": 5.0,
        "currency": "EUR", "customer_email": "a@b.c", "created_at": "2026-11-22T00:00:00Z"})
    .to_string();
    for i in 0..3 {
        let key = format!("o-good-{i}");
        crate::harness::send(
            &producer,
            "orders",
            Some(key.as_bytes()),
            Some(good.as_bytes()),
            &[("event-type", Some(b"OrderPlaced"))],
        )
        .await;
    }
    for i in 0..2 {
        let key = format!("o-bad-{i}");
        crate::harness::send(
            &producer,
            "orders",
            Some(key.as_bytes()),
            Some(b"{not json"),
            &[("event-type", Some(b"OrderPlaced"))],
        )
        .await;
    }
    let dead = b.read_all("orders.dlq", 2, Duration::from_secs(60));
    let processed = b.read_all("payments", 3, Duration::from_secs(60));
    // Give the batch processor time to send whatever it would send.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    payment.terminate(Duration::from_secs(20));
    assert_eq!(
        (dead.len(), processed.len()),
        (2, 3),
        "2 dead letters, 3 payments"
    );

    let received = spans.lock().expect("lock").clone();
    let process: Vec<&Received> = received
        .iter()
        .filter(|r| r.span.name == "process orders")
        .collect();
    let keys: Vec<Option<String>> = process
        .iter()
        .map(|r| r.attr("messaging.kafka.message.key"))
        .collect();
    assert_eq!(process.len(), 2, "only the failed handlings: {keys:?}");
    for r in &process {
        let status = r.span.status.clone().expect("status");
        assert_eq!(status.code, StatusCode::Error as i32);
        assert!(
            r.attr("messaging.kafka.message.key")
                .is_some_and(|k| k.starts_with("o-bad-")),
            "{keys:?}"
        );
    }
    assert!(
        received.iter().all(|r| r
            .span
            .status
            .as_ref()
            .is_some_and(|s| s.code == StatusCode::Error as i32)),
        "nothing that succeeded is exported: {:?}",
        received.iter().map(|r| &r.span.name).collect::<Vec<_>>()
    );
}

on_brokers!(spans_reach_an_otlp_grpc_receiver: Sqlite);
/// OTLP over gRPC to a receiver nobody here wrote the transport of
/// (grpcio + opentelemetry-proto from PyPI, `tests/interop/otlp_grpc_receiver.py`).
async fn spans_reach_an_otlp_grpc_receiver(engine: Engine) {
    use std::io::{BufRead, BufReader};

    let b = TestBroker::start(engine).await;
    b.create_topics(&[("orders", 1), ("orders.dlq", 1), ("payments", 1)])
        .await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/otlp_grpc_receiver.py"
    );
    let mut receiver = KillOnDrop(
        Command::new("python3")
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs"),
    );
    let stdout = receiver.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the receiver starts (is grpcio installed? `pip install grpcio opentelemetry-proto`, done by .ci/run)");
    let port = first.strip_prefix("PORT ").expect("PORT line").to_owned();

    let mut payment = service_with_env(
        &b,
        "payment",
        &format!("http://127.0.0.1:{port}"),
        &["--payment-failure-rate", "0", "--payment-decline-rate", "0"],
        &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
    );
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    crate::harness::send(
        &b.plain_producer(),
        "orders",
        Some(b"o-grpc"),
        Some(br#"{"order_id":"o-grpc","user_id":"u","amount":5.0,"currency":"EUR","customer_email":"a@b.c","created_at":"2026-11-22T00:00:00Z"}"#),
        &[
            ("event-type", Some(b"OrderPlaced")),
            (
                "traceparent",
                Some(format!("00-{trace_id}-b7ad6b7169203331-01").as_bytes()),
            ),
        ],
    )
    .await;
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut found = None;
    while found.is_none() && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            let span: serde_json::Value = serde_json::from_str(&line).expect("json line");
            if span["name"] == "process orders" && span["trace_id"] == trace_id {
                found = Some(span.clone());
            }
            seen.push(line);
        }
    }
    let status = payment.terminate(Duration::from_secs(20));
    let span = found.unwrap_or_else(|| panic!("no process span over gRPC; got {seen:#?}"));
    assert_eq!(span["service"], "payment-under-test");
    assert_eq!(span["parent_span_id"], "b7ad6b7169203331");
    assert_eq!(span["kind"], 5, "CONSUMER");
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
}
