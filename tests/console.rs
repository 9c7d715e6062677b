//! The console (issue 12): its OTLP/HTTP receiver against every bad input
//! class, and one correlation document joining a Python producer's span
//! (opentelemetry-sdk's own exporter), the Rust payment service's spans and
//! the lineage the recorder wrote.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kausal_store::Store;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::console_ingest::{gzip, span, traces};
use crate::harness::{Engine, TestBroker, scratch_dir, spawn_recorder};
use crate::http::{request, request_bytes};

/// The bearer token of the tests' consoles.
const TOKEN: &str = "test-token";

/// The console in this process over `store`.
async fn console(store: &Store) -> (SocketAddr, CancellationToken) {
    let stop = CancellationToken::new();
    let config = kausal_console::ConsoleConfig::new("127.0.0.1:0".parse().expect("addr"), TOKEN);
    let console = kausal_console::serve(config, store.clone(), stop.clone())
        .await
        .expect("console serves");
    (console.http, stop)
}

/// An export of `spans` as protobuf bytes.
fn export(spans: Vec<Span>) -> Vec<u8> {
    traces(spans).encode_to_vec()
}

const PROTOBUF: (&str, &str) = ("Content-Type", "application/x-protobuf");

/// (name, headers, body, expected status)
type BadInput = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    Vec<u8>,
    u16,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_answers_every_bad_input_class_and_keeps_accepting() {
    let dir = scratch_dir();
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("c.db").display()))
        .await
        .expect("store");
    let (addr, stop) = console(&store).await;
    let post = |headers: Vec<(&'static str, &'static str)>, body: Vec<u8>| async move {
        request_bytes(addr, "POST", "/v1/traces", &headers, &body).await
    };
    let mut next = 1u8;
    let mut good = || {
        next += 1;
        export(vec![span(0xa0, next)])
    };

    let good_body = good();
    let (status, head, body) = post(vec![PROTOBUF], good_body).await;
    assert_eq!(status, 200, "{head}");
    let answer = ExportTraceServiceResponse::decode(body.as_slice()).expect("an OTLP response");
    assert_eq!(answer.partial_success, None);

    let valid = good();
    let bomb = gzip(&vec![0u8; 40 << 20]);
    let cases: Vec<BadInput> = vec![
        (
            "truncated protobuf",
            vec![PROTOBUF],
            valid[..valid.len() - 5].to_vec(),
            400,
        ),
        (
            "wrong content type",
            vec![("Content-Type", "text/plain")],
            valid.clone(),
            415,
        ),
        ("no content type", vec![], valid.clone(), 415),
        (
            "gzip bomb",
            vec![PROTOBUF, ("Content-Encoding", "gzip")],
            bomb,
            413,
        ),
        (
            "not gzip",
            vec![PROTOBUF, ("Content-Encoding", "gzip")],
            valid.clone(),
            400,
        ),
        ("20 MB body", vec![PROTOBUF], vec![0x0a; 20 << 20], 413),
        (
            "invalid ids",
            vec![PROTOBUF],
            export(vec![span(0, 1), span(1, 0)]),
            400,
        ),
        (
            "malformed JSON",
            vec![("Content-Type", "application/json")],
            b"{\"resourceSpans\": [".to_vec(),
            400,
        ),
    ];
    for (name, headers, body, want) in cases {
        let (status, head, answer) = post(headers, body).await;
        let text = String::from_utf8_lossy(&answer);
        assert_eq!(status, want, "{name}: {head}\n{text}");
        assert!(
            text.contains("\"error\""),
            "{name}: the reason is said: {text}"
        );
        // Nothing crashed: the next good request is taken.
        let (status, _, _) = post(vec![PROTOBUF], good()).await;
        assert_eq!(status, 200, "after {name}");
    }

    // An empty request is valid OTLP; a mix keeps the good spans and says
    // how many were refused.
    let (status, _, _) = post(vec![PROTOBUF], export(Vec::new())).await;
    assert_eq!(status, 200, "empty request");
    let (status, _, body) = post(vec![PROTOBUF], export(vec![span(0xb0, 1), span(0, 2)])).await;
    assert_eq!(status, 200);
    let partial = ExportTraceServiceResponse::decode(body.as_slice())
        .expect("response")
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    // JSON in, JSON out; gzip accepted.
    let json = serde_json::to_vec(
        &ExportTraceServiceRequest::decode(export(vec![span(0xc0, 1)]).as_slice()).expect("req"),
    )
    .expect("json");
    let (status, head, _) = post(
        vec![
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        gzip(&json),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");

    // Every good span is stored once: the first, one after each bad case,
    // the mixed request's good one, the JSON one.
    for (trace, want) in [(0xa0u8, 9usize), (0xb0, 1), (0xc0, 1)] {
        let hex: String = std::iter::repeat_n(format!("{trace:02x}"), 16).collect();
        let spans = store.spans_for_trace(&hex, 100).await.expect("spans");
        assert_eq!(spans.len(), want, "trace {hex}");
    }
    let (status, _, body) = request(
        addr,
        "GET",
        &format!("/api/traces/{}", "c0".repeat(16)),
        &[],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"service\":\"probe\""), "{body}");

    // The database goes away: 503 with Retry-After, so the exporter retries.
    store.close().await;
    let (status, head, _) = post(vec![PROTOBUF], good()).await;
    assert_eq!(status, 503, "{head}");
    assert!(head.contains("retry-after"), "{head}");
    stop.cancel();
}

/// Runs `tests/interop/python_client.py ARGS` with `env`.
fn python(args: &[&str], env: &[(&str, &str)]) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/python_client.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python client failed (scripts/test installs tests/requirements.txt): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON line")
}

/// The correlation document of the first correlation `q` resolves to.
async fn correlation_of(addr: SocketAddr, q: &str) -> Option<serde_json::Value> {
    let (_, search) = get_json(addr, &format!("/api/search?q={q}")).await;
    let correlation = search["matches"][0]["correlation_id"].as_str()?.to_owned();
    let (status, doc) = get_json(addr, &format!("/api/correlations/{correlation}")).await;
    (status == 200).then_some(doc)
}

async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = request(addr, "GET", path, &[], "").await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_producer_and_the_rust_payment_service_share_one_correlation_document() {
    let b = TestBroker::start(Engine::Sqlite).await;
    b.create_topics(&[
        ("orders", 3),
        ("orders.dlq", 3),
        ("payments", 3),
        ("kausal.receipts", 3),
    ])
    .await;
    let database = format!("sqlite://{}", b.dir.path().join("kausal.db").display());
    let store = Store::connect(&database).await.expect("store");
    let (addr, stop) = console(&store).await;
    let endpoint = format!("http://{addr}");
    let (recorder_stop, recorder) = spawn_recorder(&b, &store, "console-recorder");
    let _payment = crate::otel::service(
        &b,
        "payment",
        &endpoint,
        &["--payment-failure-rate", "0", "--payment-decline-rate", "0"],
    );

    let order = r#"{"order_id":"ord-console-py","user_id":"u","amount":7.5,"currency":"EUR","customer_email":"p@example.com","created_at":"2026-11-22T00:00:00Z"}"#;
    let sent = python(
        &[
            "produce",
            &b.kafka.bootstrap_servers,
            "orders",
            "ord-console-py",
            order,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_SERVICE_NAME", "seed-python-producer"),
        ],
    );
    let python_span = sent["span_id"].as_str().expect("span id").to_owned();

    // The order is handled, recorded, and both services' spans arrive.
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let mut doc = serde_json::Value::Null;
    let complete = loop {
        if let Some(found) = correlation_of(addr, "ord-console-py").await {
            let services: Vec<&str> = found["spans"]
                .as_array()
                .map(|s| s.iter().filter_map(|x| x["service"].as_str()).collect())
                .unwrap_or_default();
            // The payment hop needs the receipt, which the recorder
            // ingests after the consumer committed: later than the spans.
            let done = services.contains(&"seed-python-producer")
                && services.contains(&"payment-under-test")
                && found["events"].as_array().is_some_and(|e| e.len() >= 2)
                && found["hops"]
                    .as_array()
                    .is_some_and(|h| h.iter().any(|h| h["consumer_group"] == "payment-service"));
            doc = found;
            if done {
                break true;
            }
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    recorder_stop.cancel();
    let _ = recorder.await;
    stop.cancel();
    assert!(
        complete,
        "the correlation document joins both services: {doc:#}"
    );

    let spans = doc["spans"].as_array().expect("spans");
    let producer = spans
        .iter()
        .find(|s| s["service"] == "seed-python-producer")
        .expect("the Python PRODUCER span");
    assert_eq!(producer["kind"], "producer");
    assert_eq!(producer["span_id"], python_span.as_str());
    let process = spans
        .iter()
        .find(|s| s["service"] == "payment-under-test" && s["name"] == "process orders")
        .expect("the payment service's process span");
    assert_eq!(process["trace_id"], producer["trace_id"], "one trace");
    assert_eq!(
        process["parent_span_id"], producer["span_id"],
        "the Rust consumer continues the Python producer's span"
    );
    let types: Vec<&str> = doc["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["event_type"].as_str())
        .collect();
    assert!(types.contains(&"PaymentProcessed"), "{types:?}");
    assert!(
        doc["hops"]
            .as_array()
            .is_some_and(|h| h.iter().any(|h| h["consumer_group"] == "payment-service")),
        "the payment hop with its Kafka and handler time: {}",
        doc["hops"]
    );
    assert!(
        doc["edges"].as_array().is_some_and(|e| !e.is_empty()),
        "causation edges"
    );
}

/// The ERROR line that says the event was dead-lettered for a missing email.
fn failure_log(doc: &serde_json::Value) -> Option<&serde_json::Value> {
    doc["logs"]
        .as_array()?
        .iter()
        .find(|l| l["level"] == "ERROR" && l["attributes"]["errorType"] == "MissingCustomerEmail")
}

/// The seeds' scenario through `kausal up`'s own processes: orders without
/// an email; one order id answers, in one document, with the chain, the
/// notification service's failure, its dead letter and its ERROR log line,
/// and the spans of every service of the trace with their parentage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kausal_up_answers_the_seeds_question_in_one_document() {
    let dir = scratch_dir();
    let data_dir = crate::harness::relative(&dir, "data");
    let free = crate::harness::free_port;
    let mut up = crate::process::Up::spawn(
        &[
            "--rate",
            "5",
            "--missing-email-rate",
            "1",
            "--payment-failure-rate",
            "0",
            "--payment-decline-rate",
            "0",
            "--broker-port",
            &free().to_string(),
            "--metrics-port-base",
            &free().to_string(),
            "--console-port",
            &free().to_string(),
            "--otlp-grpc-port",
            &free().to_string(),
            "--http-port",
            &free().to_string(),
        ],
        &data_dir,
    );
    let flowing = up.until(Duration::from_secs(180), |l| {
        crate::process::count_after(l, "dead-lettered") >= 1.0
    });
    let console: SocketAddr = up.address("console").expect("the banner names the console");
    let seen = up.seen.join("\n");
    if flowing.is_none() {
        let _ = up.interrupt();
        panic!("nothing dead-lettered within 3 minutes:\n{seen}");
    }
    // A dead letter names the order's correlation; its key is the order id.
    let database = format!("sqlite://{}", data_dir.join("kausal.db").display());
    let mut state = String::from("no dead letter listed yet");
    // Up to 180 s, as the browser story: on a loaded machine the recorder's
    // ledger and each service's span batches trail; on a timeout, say which
    // part was missing.
    let waited = Instant::now();
    let doc = loop {
        let letters = crate::process::cli_json(&["dlq", "list", "--database", &database]);
        if let Some(correlation) = letters
            .as_array()
            .and_then(|l| l.iter().find(|e| e["error_type"] == "MissingCustomerEmail"))
            .and_then(|e| e["correlation_id"].as_str())
        {
            let (status, found) =
                get_json(console, &format!("/api/correlations/{correlation}")).await;
            let services: std::collections::BTreeSet<&str> = found["spans"]
                .as_array()
                .map(|s| s.iter().filter_map(|x| x["service"].as_str()).collect())
                .unwrap_or_default();
            // Spans leave each service in batches (every 5 s by default).
            let failures = found["failures"].as_array().is_some_and(|f| !f.is_empty());
            let logged = failure_log(&found).is_some();
            let ready = status == 200
                && [
                    "order-service",
                    "payment-service",
                    "notification-service",
                    "inventory-service",
                ]
                .iter()
                .all(|s| services.contains(s))
                && failures
                && logged;
            state = format!(
                "correlation {correlation}: status {status}, services {services:?}, \
                 failures: {failures}, the ERROR log line: {logged}"
            );
            if ready {
                break found;
            }
        }
        assert!(
            waited.elapsed() < Duration::from_secs(180),
            "waited {:?} for the dead letter's correlation document with four services' \
             spans, its failure and its log line; last seen: {state}",
            waited.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    // The same order id, searched while the console runs, leads to this
    // correlation.
    // Its keys: the order id, and the ledger entry's id (payment posts each
    // approved charge to the ledger).
    let order_key = |doc: &serde_json::Value| -> Option<String> {
        doc["keys"]
            .as_array()?
            .iter()
            .filter_map(|k| k.as_str())
            .find(|k| k.starts_with("ord-"))
            .map(str::to_owned)
    };
    let order_id = order_key(&doc).unwrap_or_default();
    let (_, search) = get_json(console, &format!("/api/search?q={order_id}")).await;
    // The estate around it: lag of every group (sampled every 5 s, so the
    // correlation's groups get theirs too) and the topology.
    let mut lag = serde_json::Value::Null;
    let mut lagged_doc = serde_json::Value::Null;
    // Up to 90 s: on a loaded machine the console's sampling trails.
    for _ in 0..90 {
        lag = get_json(console, "/api/lag").await.1;
        let correlation = doc["correlation_id"].as_str().unwrap_or_default();
        lagged_doc = get_json(console, &format!("/api/correlations/{correlation}"))
            .await
            .1;
        let groups = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
        if groups(&lag["groups"]) >= 4 && groups(&lagged_doc["lag"]) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (topology_status, topology) = get_json(console, "/api/topology?window_seconds=600").await;
    // Replay needs the token the banner printed and the data dir keeps.
    let token = up
        .seen
        .iter()
        .find_map(|l| l.trim().strip_prefix("token")?.split_whitespace().next())
        .expect("the banner prints the token")
        .to_owned();
    let replay_path = format!(
        "/api/dlq/{}/replay",
        doc["dead_letters"][0]["id"].as_str().unwrap_or_default()
    );
    let (refused, _, _) = request(console, "POST", &replay_path, &[], "").await;
    let bearer = format!("Bearer {token}");
    let (dry_status, _, dry) = request(
        console,
        "POST",
        &replay_path,
        &[
            ("Authorization", &bearer),
            ("Content-Type", "application/json"),
        ],
        r#"{"dry_run":true}"#,
    )
    .await;
    let status = up.interrupt();
    assert_eq!(refused, 401, "no token, no replay");
    assert_eq!(dry_status, 200, "{dry}");
    assert!(dry.contains("would_replay"), "{dry}");
    let token_file = data_dir.join("console-token");
    assert_eq!(
        std::fs::read_to_string(&token_file)
            .expect("token file")
            .trim(),
        token
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token_file)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the token file is private");
    }
    let lagged: Vec<&str> = lag["groups"]
        .as_array()
        .map(|g| g.iter().filter_map(|g| g["group"].as_str()).collect())
        .unwrap_or_default();
    for group in [
        "payment-service",
        "notification-service",
        "inventory-service",
    ] {
        assert!(lagged.contains(&group), "{group} in /api/lag: {lag}");
    }
    assert!(
        lag["groups"][0]["history"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "{lag}"
    );
    assert!(
        lagged_doc["lag"].as_array().is_some_and(|l| !l.is_empty()),
        "the correlation document carries its groups' lag: {}",
        lagged_doc["lag"]
    );
    assert_eq!(topology_status, 200, "{topology}");
    assert!(
        topology["produces"].as_array().is_some_and(|p| p
            .iter()
            .any(|e| e["service"] == "order-service" && e["topic"] == "orders")),
        "{topology}"
    );
    let notification = topology["consumes"]
        .as_array()
        .and_then(|c| {
            c.iter()
                .find(|e| e["consumer_group"] == "notification-service")
        })
        .unwrap_or_else(|| panic!("the notification edge: {topology}"));
    assert!(
        notification["dead_lettered"].as_u64() >= Some(1),
        "{notification}"
    );
    assert!(
        notification["error_rate"].as_f64() > Some(0.0),
        "{notification}"
    );
    assert!(
        notification["p95_ms"].as_f64() > Some(0.0),
        "{notification}"
    );
    assert_eq!(status.and_then(|s| s.code()), Some(0), "Ctrl-C exits 0");
    assert_eq!(
        search["matches"][0]["correlation_id"], doc["correlation_id"],
        "{search}"
    );
    assert_eq!(search["matches"][0]["kind"], "key");

    assert!(
        order_key(&doc).is_some(),
        "the order id among the keys: {}",
        doc["keys"]
    );
    let failure = doc["failures"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["error_type"] == "MissingCustomerEmail"))
        .unwrap_or_else(|| panic!("the failure: {}", doc["failures"]));
    assert_eq!(failure["service"], "notification-service");
    let dlq_id = failure["dlq_id"]
        .as_str()
        .expect("the failure names its dead letter");
    assert!(
        doc["dead_letters"]
            .as_array()
            .is_some_and(|d| d.iter().any(|d| d["id"] == dlq_id)),
        "{}",
        doc["dead_letters"]
    );
    // Spans from at least four services, in one trace, each parent present.
    let spans = doc["spans"].as_array().expect("spans");
    let trace = doc["events"][0]["trace_id"]
        .as_str()
        .expect("the order's trace");
    let in_trace: Vec<&serde_json::Value> =
        spans.iter().filter(|s| s["trace_id"] == trace).collect();
    let services: std::collections::BTreeSet<&str> = in_trace
        .iter()
        .filter_map(|s| s["service"].as_str())
        .collect();
    assert!(services.len() >= 4, "{services:?}");
    for want in ["order-service", "payment-service", "notification-service"] {
        assert!(services.contains(want), "{want} in {services:?}");
    }
    let ids: std::collections::BTreeSet<&str> = in_trace
        .iter()
        .filter_map(|s| s["span_id"].as_str())
        .collect();
    let roots = in_trace
        .iter()
        .filter(|s| s["parent_span_id"].is_null())
        .count();
    let orphans: Vec<&serde_json::Value> = in_trace
        .iter()
        .filter(|s| {
            s["parent_span_id"]
                .as_str()
                .is_some_and(|p| !ids.contains(p))
        })
        .copied()
        .collect();
    assert_eq!(roots, 1, "one root span (the order's `send orders`)");
    assert!(
        orphans.is_empty(),
        "every parent is in the trace: {orphans:#?}"
    );
    // The log line of the failure, from the service's own OTLP log export.
    let log =
        failure_log(&doc).unwrap_or_else(|| panic!("the failure's log line: {}", doc["logs"]));
    assert_eq!(log["service"], "notification-service", "{log}");
    assert_eq!(log["trace_id"], trace, "{log}");
    assert_eq!(log["correlation_id"], doc["correlation_id"], "{log}");
    let failed = in_trace
        .iter()
        .find(|s| s["service"] == "notification-service" && s["status"] == "error")
        .expect("the notification service's failed span");
    assert!(
        failed["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("process")),
        "{failed}"
    );

    // `kausal trace` answers from the same query: its JSON holds the API's
    // document (everything the API had, and whatever arrived since), and
    // its text shows the spans and the failure's log line.
    let cli = crate::process::cli_json(&["trace", &order_id, "--database", &database]);
    let cli_doc = &cli["correlations"][0];
    assert_eq!(cli_doc["correlation_id"], doc["correlation_id"], "{cli:#}");
    let ids =
        |d: &serde_json::Value, field: &str, id: &str| -> std::collections::BTreeSet<String> {
            d[field]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x[id].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
    // The CLI ran after everything stopped; the API answered while orders
    // still flowed: the CLI's document holds all the API's, and has its
    // shape field for field.
    let fields = |d: &serde_json::Value| -> Vec<String> {
        d.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(fields(cli_doc), fields(&lagged_doc), "{cli_doc:#}");
    for (field, id) in [
        ("spans", "span_id"),
        ("events", "event_id"),
        ("dead_letters", "id"),
        ("receipts", "receipt_id"),
    ] {
        let (cli, api) = (ids(cli_doc, field, id), ids(&lagged_doc, field, id));
        assert!(!api.is_empty(), "the API's {field}");
        assert!(cli.is_superset(&api), "{field}: CLI {cli:?} ⊉ API {api:?}");
    }
    let text = std::process::Command::new(env!("CARGO_BIN_EXE_kausal"))
        .args(["trace", &order_id, "--database", &database])
        .output()
        .expect("kausal trace runs");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains(&format!("spans of trace {trace}")), "{text}");
    assert!(text.contains("! notification-service process"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("ERROR") && l.contains("errorType=MissingCustomerEmail")),
        "the failure's log line: {text}"
    );
}
