//! The trace and services pages in a real browser (issue 13), against a
//! `kausal console` process over a real payment outage's ledger
//! (`console_dlq::payment_outage`). The outage's services run in this test
//! process without exporting spans, so the test sends the console the
//! spans they would have sent (OTLP/HTTP, protobuf): order-service's
//! `send orders` and payment-service's failed `process orders`, in the
//! order's real trace. The dead letter is then replayed through the API
//! with the token, and the console exports its own `send orders` span in a
//! new trace linked to the original — the link the test follows in the
//! page, both ways. Then `/services` shows payment-service's dead-lettered
//! share and leads to its dead letters.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

use super::{ChromeDriver, assert_clean, assert_fits_a_phone, close_all, screenshot, text, until};
use crate::console_dlq::payment_outage;
use crate::console_ingest::string;
use crate::http::request_bytes;

const TOKEN: &str = "trace-browser-token";
/// The span ids the test gives payment-service's spans.
const PROCESS_SPAN: &str = "5e55e55e55e55e01";
const DLQ_SPAN: &str = "5e55e55e55e55e02";

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn resource(service: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![string("service.name", service)],
        ..Resource::default()
    })
}

fn resource_spans(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: resource(service),
        scope_spans: vec![ScopeSpans {
            spans,
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    }
}

/// What the outage's two services would have exported for the order's
/// trace: the producer's send span (the id the record's `traceparent`
/// carries), the consumer's process span 15 ms later that failed after
/// 40 ms, with an exception event and the link to its producer, and the
/// dead letter's send span under it; and the failure's log line.
fn outage_telemetry(
    trace: &str,
    producer: &str,
    correlation: &str,
    error_type: &str,
    sent_ns: u64,
) -> (ExportTraceServiceRequest, ExportLogsServiceRequest) {
    let ms = 1_000_000;
    let process = sent_ns + 15 * ms;
    let send = Span {
        trace_id: bytes(trace),
        span_id: bytes(producer),
        name: "send orders".into(),
        kind: 4,
        start_time_unix_nano: sent_ns,
        end_time_unix_nano: sent_ns + 2 * ms,
        attributes: vec![
            string("messaging.destination.name", "orders"),
            string("messaging.message.conversation_id", correlation),
        ],
        ..Span::default()
    };
    let failed = Span {
        trace_id: bytes(trace),
        span_id: bytes(PROCESS_SPAN),
        parent_span_id: bytes(producer),
        name: "process orders".into(),
        kind: 5,
        start_time_unix_nano: process,
        end_time_unix_nano: process + 40 * ms,
        attributes: vec![
            string("messaging.consumer.group.name", "payment-service"),
            string("messaging.message.conversation_id", correlation),
        ],
        events: vec![Event {
            time_unix_nano: process + 39 * ms,
            name: "exception".into(),
            attributes: vec![string("exception.type", error_type)],
            ..Event::default()
        }],
        links: vec![Link {
            trace_id: bytes(trace),
            span_id: bytes(producer),
            ..Link::default()
        }],
        status: Some(Status {
            message: error_type.into(),
            code: 2,
        }),
        ..Span::default()
    };
    let dead_letter = Span {
        trace_id: bytes(trace),
        span_id: bytes(DLQ_SPAN),
        parent_span_id: bytes(PROCESS_SPAN),
        name: "send orders.dlq".into(),
        kind: 4,
        start_time_unix_nano: process + 39 * ms,
        end_time_unix_nano: process + 40 * ms,
        ..Span::default()
    };
    let traces = ExportTraceServiceRequest {
        resource_spans: vec![
            resource_spans("order-service", vec![send]),
            resource_spans("payment-service", vec![failed, dead_letter]),
        ],
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource("payment-service"),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: process + 40 * ms,
                    severity_number: 17,
                    severity_text: "ERROR".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(
                            "event dead-lettered after its retries".into(),
                        )),
                    }),
                    attributes: vec![
                        string("errorType", error_type),
                        string("correlationId", correlation),
                    ],
                    trace_id: bytes(trace),
                    span_id: bytes(PROCESS_SPAN),
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    (traces, logs)
}

/// POSTs `body`, expects 200, returns the answer's body.
async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    let (status, _, answer) = request_bytes(addr, "POST", path, headers, body).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Waits until the browser is at `path` (with `query`, when given).
async fn arrives(c: &Client, path: &str, query: Option<&str>) {
    until(Duration::from_secs(10), path, || async {
        let url = c.current_url().await.ok()?;
        (url.path() == path && (query.is_none() || url.query() == query)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_opens_its_spans_follows_the_replay_link_and_services_show_the_outage() {
    let started = Instant::now();
    let driver = ChromeDriver::start();
    let outage = payment_outage(&[("ord-trace-1", "checkout-trace-1")]).await;
    let entry = outage.pending().await.remove(0);
    let error_type = entry.error_type.clone().expect("the error type");
    let order = outage
        .store
        .chain("checkout-trace-1")
        .await
        .expect("chain")
        .remove(0);
    let trace = order.trace_id.clone().expect("the order's trace id");
    let producer = order.span_id.clone().expect("the order's span id");
    let (console, addr) = outage.start_console(TOKEN).await;

    let sent_ns = u64::try_from(order.occurred_at_ms).expect("time") * 1_000_000;
    let (spans, logs) =
        outage_telemetry(&trace, &producer, "checkout-trace-1", &error_type, sent_ns);
    let protobuf = [("Content-Type", "application/x-protobuf")];
    post(addr, "/v1/traces", &protobuf, &spans.encode_to_vec()).await;
    post(addr, "/v1/logs", &protobuf, &logs.encode_to_vec()).await;

    let pipeline_ready = started.elapsed();
    let c = driver.browser().await;

    // The original trace: three spans, the failure named, the correlation.
    c.goto(&format!("http://{addr}/traces/{trace}"))
        .await
        .expect("trace page");
    let rows = c
        .find_all(Locator::Css("table.waterfall tr.span"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 3, "the order's three spans");
    assert_clean(&c, "the trace page", &[]).await;
    let answer = text(&c, "#answer").await;
    assert!(
        answer.contains(&format!(
            "payment-service failed in process orders: {error_type}"
        )),
        "{answer}"
    );
    c.find(Locator::Css(
        "dl.trace-facts a[href=\"/correlations/checkout-trace-1\"]",
    ))
    .await
    .expect("the correlation's link");
    let process = format!("tr#span-{PROCESS_SPAN}");
    let hop = text(&c, &format!("{process} p.hop")).await;
    assert!(
        hop.contains("15.0 ms in Kafka, 40.0 ms in the handler"),
        "{hop}"
    );
    assert!(
        text(&c, "#logs")
            .await
            .contains("event dead-lettered after its retries"),
        "the trace's log line"
    );

    // A span's details open without script: attributes, events, links.
    let details = c
        .find(Locator::Css(&format!("{process} .span-detail")))
        .await
        .expect("details");
    assert!(
        !details.is_displayed().await.expect("shown?"),
        "closed at first"
    );
    click(&c, &format!("{process} details.span > summary")).await;
    assert!(
        details.is_displayed().await.expect("shown?"),
        "open on click"
    );
    let shown = details.text().await.expect("text");
    for expected in [
        "messaging.consumer.group.name",
        "payment-service",
        "exception",
        &error_type,
        &producer,
    ] {
        assert!(shown.contains(expected), "{expected} in {shown}");
    }
    screenshot("trace", &c.screenshot().await.expect("screenshot"), false);
    assert_fits_a_phone(&c, "the trace page", "trace-phone").await;

    // The replay, through the API with the token: the console exports its
    // `send orders` span in a new trace that links the original. (After the
    // page above: a console answers on its port a moment before its own
    // span export is set up, src/console.rs.)
    let bearer = format!("Bearer {TOKEN}");
    let replayed = post(
        addr,
        &format!("/api/dlq/{}/replay", entry.dlq_id),
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        b"{}",
    )
    .await;
    assert!(replayed.contains(r#""result":"replayed""#), "{replayed}");
    let replay = until(
        Duration::from_secs(30),
        &format!("the replay's span linking the original trace {trace} ({replayed})"),
        || async {
            let linked = outage.store.linked_traces(&trace).await.ok()?;
            linked.into_iter().find(|t| *t != trace)
        },
    )
    .await;

    // The replay links this trace: follow it there, and its link back.
    c.refresh().await.expect("reload");
    click(&c, &format!("dl.trace-facts a[href=\"/traces/{replay}\"]")).await;
    arrives(&c, &format!("/traces/{replay}"), None).await;
    let names = text(&c, "table.waterfall").await;
    assert!(names.contains("send orders"), "{names}");
    assert!(names.contains("kausal-console"), "{names}");
    click(&c, &format!("ul.links a[href^=\"/traces/{trace}#span-\"]")).await;
    arrives(&c, &format!("/traces/{trace}"), None).await;
    let url = c.current_url().await.expect("url");
    assert!(
        url.fragment().is_some_and(|f| f.starts_with("span-")),
        "at the linked span: {url}"
    );
    assert_clean(&c, "the replay's trace and the way back", &[]).await;

    // The services page: payment-service dead-lettered a share of what it
    // handled, and leads to its dead letters and its failed correlation.
    c.goto(&format!("http://{addr}/services"))
        .await
        .expect("services page");
    let row = "tr#service-payment-service";
    let share = text(&c, &format!("{row} td.num.err")).await;
    let percent: f64 = share
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("a share in {share:?}"));
    assert!(percent > 0.0, "{share}");
    c.find(Locator::Css(&format!(
        "{row} a[href=\"/correlations/checkout-trace-1\"]"
    )))
    .await
    .expect("the latest failed correlation");
    c.find(Locator::Css("svg.topology g.node.group.fail"))
        .await
        .expect("the failing group drawn red");
    screenshot("services", &c.screenshot().await.expect("screenshot"), true);
    assert_fits_a_phone(&c, "the services page", "services-phone").await;
    // The live refresh replaces the picture and the table without an error.
    until(Duration::from_secs(30), "a live refresh", || async {
        text(&c, "#live-state")
            .await
            .contains("refreshed at")
            .then_some(())
    })
    .await;
    assert_clean(&c, "the services page and its refresh", &[]).await;
    click(
        &c,
        &format!("{row} a[href=\"/dlq?consumer_group=payment-service#list\"]"),
    )
    .await;
    arrives(&c, "/dlq", Some("consumer_group=payment-service")).await;
    assert_eq!(text(&c, "h1").await, "Dead letters");
    assert_clean(&c, "the group's dead letters", &[]).await;

    println!(
        "trace browser test: pipeline and console ready in {:.1} s, browser part {:.1} s",
        pipeline_ready.as_secs_f64(),
        (started.elapsed() - pipeline_ready).as_secs_f64()
    );
    close_all(c, console, outage).await;
}
