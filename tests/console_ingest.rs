//! The console's OTLP/gRPC receiver and its forwarding (issue 12): spans
//! and log records exported by the OpenTelemetry SDK's own tonic exporters
//! land in the store; bad gRPC inputs get OTLP's status codes and the
//! receiver keeps accepting; a console forwards what it accepted, over
//! HTTP and gRPC, to a second real console; a forwarding target that is
//! down costs nothing but the count of what it lost.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kausal_console::forward::{ForwardConfig, ForwardProtocol, ForwardStatus};
use kausal_core::retry::RetryPolicy;
use kausal_store::Store;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;

use crate::harness::scratch_dir;
use crate::http::request_bytes;

/// A console in this process over a fresh SQLite store.
struct Console {
    http: SocketAddr,
    grpc: Option<SocketAddr>,
    forwarding: Option<ForwardStatus>,
    store: Store,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Console {
    /// A console on `http`, with a gRPC receiver on `grpc` if given.
    async fn start(
        http: SocketAddr,
        grpc: Option<SocketAddr>,
        forward: Option<ForwardConfig>,
    ) -> Self {
        let dir = scratch_dir();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .expect("store");
        let stop = CancellationToken::new();
        let config = kausal_console::ConsoleConfig {
            grpc,
            forward,
            ..kausal_console::ConsoleConfig::new(http, "test-token")
        };
        let running = kausal_console::serve(config, store.clone(), stop.clone())
            .await
            .expect("console serves");
        Self {
            http: running.http,
            grpc: running.grpc,
            forwarding: running.forwarding,
            store,
            stop,
            task: running.task,
            _dir: dir,
        }
    }

    fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc.expect("a gRPC receiver"))
    }

    fn forwarding(&self) -> &ForwardStatus {
        self.forwarding.as_ref().expect("forwarding")
    }

    async fn spans(&self, trace: u8) -> usize {
        self.store
            .spans_for_trace(&hex(trace, 16), 100)
            .await
            .map_or(0, |s| s.len())
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().expect("addr")
}

fn hex(byte: u8, len: usize) -> String {
    std::iter::repeat_n(format!("{byte:02x}"), len).collect()
}

/// Polls an async `check` until it holds or `timeout` passes.
async fn until<F: std::future::Future<Output = bool>>(
    timeout: Duration,
    mut check: impl FnMut() -> F,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

pub(crate) fn span(trace: u8, id: u8) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: "send orders".to_owned(),
        kind: 4,
        start_time_unix_nano: 1,
        end_time_unix_nano: 2,
        ..Span::default()
    }
}

pub(crate) fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string("service.name", "probe")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

fn logs(trace: u8, body: &str) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![string("service.name", "probe")],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: 5,
                    severity_number: 17,
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(body.to_owned())),
                    }),
                    trace_id: vec![trace; 16],
                    span_id: vec![1; 8],
                    ..LogRecord::default()
                }],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// A retry policy for tests: quick, few attempts.
fn quick_retries(attempts: u32, backoff_ms: u64) -> RetryPolicy {
    RetryPolicy {
        max_attempts: attempts,
        initial_backoff: Duration::from_millis(backoff_ms),
        max_backoff: Duration::from_millis(backoff_ms * 4),
        multiplier: 2.0,
        jitter: 0.0,
    }
}

/// A gRPC codec that sends bytes as they are: how a malformed message
/// reaches the receiver (the generated client can only send valid ones).
#[derive(Debug, Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        prost::bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Vec<u8>>, tonic::Status> {
        use prost::bytes::Buf;
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

/// `bytes` as the body of a `TraceService/Export` call.
async fn raw_export(url: &str, bytes: Vec<u8>, gzip: bool) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("endpoint")
        .connect()
        .await
        .expect("connects");
    let mut client = tonic::client::Grpc::new(channel);
    if gzip {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    client
        .ready()
        .await
        .map_err(|e| tonic::Status::unknown(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    client
        .unary(tonic::Request::new(bytes), path, Raw)
        .await
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdks_tonic_exporters_land_spans_and_logs_over_grpc() {
    use opentelemetry::logs::{AnyValue as LogValue, LogRecord as _, Logger, LoggerProvider};
    use opentelemetry::trace::{Span as _, Tracer, TracerProvider};
    use opentelemetry_otlp::WithExportConfig;

    let console = Console::start(any_port(), Some(any_port()), None).await;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("grpc-exporter")
        .build();
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(console.grpc_url())
        .build()
        .expect("span exporter");
    let tracer_provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(spans)
        .build();
    let logs = opentelemetry_otlp::LogExporter::builder()
        .with_tonic()
        .with_endpoint(console.grpc_url())
        .build()
        .expect("log exporter");
    let logger_provider = opentelemetry_sdk::logs::SdkLoggerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(logs)
        .build();

    let tracer = tracer_provider.tracer("console-ingest-test");
    let mut span = tracer.start("process payments");
    let context = span.span_context().clone();
    let logger = logger_provider.logger("console-ingest-test");
    let mut record = logger.create_log_record();
    record.set_body(LogValue::String("payment declined".into()));
    record.set_severity_number(opentelemetry::logs::Severity::Error);
    record.set_trace_context(
        context.trace_id(),
        context.span_id(),
        Some(context.trace_flags()),
    );
    record.add_attribute("correlationId", "corr-grpc");
    logger.emit(record);
    span.end();

    // The batch processors flush on their own threads; wait for them there.
    let (tp, lp) = (tracer_provider.clone(), logger_provider.clone());
    tokio::task::spawn_blocking(move || {
        tp.force_flush().expect("spans flushed over gRPC");
        lp.force_flush().expect("logs flushed over gRPC");
    })
    .await
    .expect("flush");

    let trace_id = context.trace_id().to_string();
    let stored = console
        .store
        .spans_for_trace(&trace_id, 10)
        .await
        .expect("spans");
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0].name, "process payments");
    assert_eq!(stored[0].service.as_deref(), Some("grpc-exporter"));
    assert_eq!(stored[0].span_id, context.span_id().to_string());
    let lines = console
        .store
        .logs_for_trace(&trace_id, 10)
        .await
        .expect("logs");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].body.as_deref(), Some("payment declined"));
    assert_eq!(lines[0].correlation_id.as_deref(), Some("corr-grpc"));
    assert_eq!(lines[0].service.as_deref(), Some("grpc-exporter"));

    tokio::task::spawn_blocking(move || {
        let _ = tracer_provider.shutdown();
        let _ = logger_provider.shutdown();
    })
    .await
    .expect("shutdown");
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_receiver_answers_bad_inputs_with_otlp_codes_and_keeps_accepting() {
    let console = Console::start(any_port(), Some(any_port()), None).await;
    let url = console.grpc_url();
    let mut client = TraceServiceClient::connect(url.clone())
        .await
        .expect("connects");
    let mut next = 0u8;
    let mut good = || {
        next += 1;
        traces(vec![span(0xa0, next)])
    };

    let first = client.export(good()).await.expect("a valid export");
    assert_eq!(first.into_inner().partial_success, None);

    let valid = good().encode_to_vec();
    let big = traces(vec![Span {
        attributes: vec![string("blob", &"x".repeat(9 << 20))],
        ..span(0xa0, 0xee)
    }])
    .encode_to_vec();
    let cases: Vec<(&str, Vec<u8>, bool, tonic::Code)> = vec![
        (
            "truncated protobuf",
            valid[..valid.len() - 5].to_vec(),
            false,
            tonic::Code::InvalidArgument,
        ),
        (
            "not protobuf at all",
            b"\xff\xff\xff\xff not an OTLP message".to_vec(),
            false,
            tonic::Code::InvalidArgument,
        ),
        (
            "every span with invalid ids",
            traces(vec![span(0, 1), span(1, 0)]).encode_to_vec(),
            false,
            tonic::Code::InvalidArgument,
        ),
        ("9 MiB as sent", big, false, tonic::Code::ResourceExhausted),
        (
            "a gzip bomb: 40 MiB of zeros",
            vec![0u8; 40 << 20],
            true,
            tonic::Code::ResourceExhausted,
        ),
    ];
    for (name, bytes, compressed, want) in cases {
        let status = raw_export(&url, bytes, compressed).await.expect_err(name);
        assert_eq!(status.code(), want, "{name}: {status:?}");
        assert!(!status.message().is_empty(), "{name}: the reason is said");
        // Nothing broke: the next valid export is taken, on the same
        // connection as before.
        client
            .export(good())
            .await
            .unwrap_or_else(|e| panic!("after {name}: {e:?}"));
    }

    // A mix keeps the good span and says how many were refused; gzip is
    // accepted.
    let mut gzipped = client.clone().send_compressed(CompressionEncoding::Gzip);
    let partial = gzipped
        .export(traces(vec![span(0xb0, 1), span(0, 2)]))
        .await
        .expect("a partial success")
        .into_inner()
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("16 bytes"), "{partial:?}");
    // Every good span once: the first, one after each bad case.
    assert_eq!(console.spans(0xa0).await, 6);
    assert_eq!(console.spans(0xb0).await, 1);

    // The database goes away: UNAVAILABLE, which OTLP exporters retry.
    console.store.close().await;
    let status = client.export(good()).await.expect_err("no database");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    console.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_forwards_what_it_accepts_over_http_and_grpc_to_another_console() {
    forward_to_another_console(ForwardProtocol::Http).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_forwards_over_otlp_grpc_to_another_consoles_grpc_receiver() {
    forward_to_another_console(ForwardProtocol::Grpc).await;
}

/// What the upstream console accepts, over OTLP/HTTP (protobuf gzipped,
/// JSON) and OTLP/gRPC, reaches the downstream console in `protocol`.
async fn forward_to_another_console(protocol: ForwardProtocol) {
    let downstream = Console::start(any_port(), Some(any_port()), None).await;
    let endpoint = match protocol {
        ForwardProtocol::Http => format!("http://{}", downstream.http),
        ForwardProtocol::Grpc => downstream.grpc_url(),
    };
    let upstream = Console::start(
        any_port(),
        Some(any_port()),
        Some(ForwardConfig::new(endpoint).with_protocol(protocol)),
    )
    .await;

    // OTLP/HTTP: gzipped protobuf (over HTTP forwarded as the same gzipped
    // bytes, which the downstream console must decode itself) and JSON logs.
    let body = gzip(&traces(vec![span(0xc1, 1), span(0xc1, 2)]).encode_to_vec());
    let (status, head, _) = request_bytes(
        upstream.http,
        "POST",
        "/v1/traces",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 200, "{head}");
    let json = serde_json::to_vec(&logs(0xc1, "forwarded as JSON")).expect("json");
    let (status, head, _) = request_bytes(
        upstream.http,
        "POST",
        "/v1/logs",
        &[("Content-Type", "application/json")],
        &json,
    )
    .await;
    assert_eq!(status, 200, "{head}");
    // OTLP/gRPC (over HTTP forwarded as OTLP/HTTP protobuf).
    let mut client = TraceServiceClient::connect(upstream.grpc_url())
        .await
        .expect("connects");
    client
        .export(traces(vec![span(0xc2, 1)]))
        .await
        .expect("gRPC export");
    // A request the upstream refuses is not forwarded: its exporter sends
    // it again.
    let (status, _, _) = request_bytes(
        upstream.http,
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &traces(vec![span(0, 1)]).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 400);

    assert_eq!(upstream.spans(0xc1).await, 2, "stored upstream");
    assert_eq!(upstream.spans(0xc2).await, 1, "stored upstream");
    let arrived = until(Duration::from_secs(20), || async {
        downstream.spans(0xc1).await == 2
            && downstream.spans(0xc2).await == 1
            && downstream
                .store
                .logs_for_trace(&hex(0xc1, 16), 10)
                .await
                .is_ok_and(|l| {
                    l.iter()
                        .any(|l| l.body.as_deref() == Some("forwarded as JSON"))
                })
    })
    .await;
    assert!(
        arrived,
        "{protocol}: downstream has {} + {} spans; forwarding sent {}, lost {}",
        downstream.spans(0xc1).await,
        downstream.spans(0xc2).await,
        upstream.forwarding().sent(),
        upstream.forwarding().lost()
    );
    let forwarding = upstream.forwarding().clone();
    assert_eq!((forwarding.sent(), forwarding.lost()), (3, 0));
    upstream.stop().await;
    downstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarding_target_that_is_down_costs_ingest_nothing_and_the_loss_is_counted() {
    // Nothing listens there.
    let nowhere = format!("http://127.0.0.1:{}", crate::harness::free_port());
    let upstream = Console::start(
        any_port(),
        Some(any_port()),
        Some(ForwardConfig {
            queue_requests: 2,
            retry: quick_retries(3, 50),
            ..ForwardConfig::new(nowhere)
        }),
    )
    .await;
    // More than the queue holds, as fast as they come: every one is
    // answered 200 at once and stored.
    let started = Instant::now();
    for id in 1..=6u8 {
        let (status, head, _) = request_bytes(
            upstream.http,
            "POST",
            "/v1/traces",
            &[("Content-Type", "application/x-protobuf")],
            &traces(vec![span(0xd0, id)]).encode_to_vec(),
        )
        .await;
        assert_eq!(status, 200, "{head}");
    }
    let mut client = TraceServiceClient::connect(upstream.grpc_url())
        .await
        .expect("connects");
    client
        .export(traces(vec![span(0xd0, 7)]))
        .await
        .expect("gRPC export");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "ingest did not wait for forwarding: {:?}",
        started.elapsed()
    );
    assert_eq!(upstream.spans(0xd0).await, 7);
    // Each request is lost — to the full queue or after its attempts —
    // and counted (and logged as a WARN with the count).
    let forwarding = upstream.forwarding().clone();
    let counted = until(Duration::from_secs(20), || async {
        forwarding.lost() == 7 && forwarding.queued() == 0
    })
    .await;
    assert!(
        counted,
        "lost {}, sent {}, queued {}",
        forwarding.lost(),
        forwarding.sent(),
        forwarding.queued()
    );
    assert_eq!(forwarding.sent(), 0);
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_forwarding_to_itself_does_not_loop() {
    for protocol in [ForwardProtocol::Http, ForwardProtocol::Grpc] {
        forward_to_itself(protocol).await;
    }
}

async fn forward_to_itself(protocol: ForwardProtocol) {
    let port = || -> SocketAddr {
        format!("127.0.0.1:{}", crate::harness::free_port())
            .parse()
            .expect("addr")
    };
    let (addr, grpc) = (port(), port());
    let endpoint = match protocol {
        ForwardProtocol::Http => format!("http://{addr}"),
        ForwardProtocol::Grpc => format!("http://{grpc}"),
    };
    let console = Console::start(
        addr,
        Some(grpc),
        Some(ForwardConfig::new(endpoint).with_protocol(protocol)),
    )
    .await;
    let (status, _, _) = request_bytes(
        addr,
        "POST",
        "/v1/traces",
        &[("Content-Type", "application/x-protobuf")],
        &traces(vec![span(0xe0, 1)]).encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let forwarding = console.forwarding().clone();
    assert!(until(Duration::from_secs(10), || async { forwarding.sent() == 1 }).await);
    // The copy came back with this console's id and went no further.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!((forwarding.sent(), forwarding.lost()), (1, 0), "{protocol}");
    assert_eq!(console.spans(0xe0).await, 1);
    console.stop().await;
}
