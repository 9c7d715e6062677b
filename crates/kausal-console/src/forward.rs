//! Forwarding: what the console accepts over OTLP also goes to the user's
//! own OTLP endpoint (an OpenTelemetry Collector, Jaeger, Tempo), so
//! pointing the services at the console takes nothing away downstream.
//!
//! The endpoint speaks OTLP/HTTP (the default) or OTLP/gRPC, as
//! `OTEL_EXPORTER_OTLP_PROTOCOL` says for the SDKs. Over HTTP, an OTLP/HTTP
//! request is forwarded as it came: the same bytes, the same `Content-Type`
//! and `Content-Encoding`; an OTLP/gRPC request goes as OTLP/HTTP protobuf,
//! re-encoded from the decoded request (the same message; the bytes may
//! differ from the exporter's). Over gRPC, every request is decoded again
//! when it is sent (only then, so ingest pays nothing for it) and exported
//! with the collector service's own client. Only what the console
//! answered with success is forwarded: a request it refused, the exporter
//! sends again, and forwarding it as well would send it twice.
//!
//! Forwarding never blocks or fails ingest. A request goes into a bounded
//! queue (by count and by bytes) and the handler answers at once; one task
//! sends the queue in order, retrying 429, 502, 503, 504, timeouts and
//! connection errors with exponential backoff and jitter. What does not fit
//! in the queue, what runs out of attempts and what is refused for good is
//! counted as lost and logged as a WARN with the totals — never silently.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use kausal_core::failure::ErrorClass;
use kausal_core::retry::{RetryDecision, RetryPolicy};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::otlp::{self, Format};

/// The header a forwarding console adds: the ids of the consoles a request
/// went through, comma-separated. A console that finds its own id there
/// stores the request but does not forward it again (a console pointed at
/// itself, or two pointed at each other, would loop forever).
pub const FORWARDED_BY: &str = "kausal-forwarded-by";

/// How often a loss that was not yet reported is logged, at most.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// What the forwarding endpoint speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardProtocol {
    /// OTLP/HTTP (port 4318 by convention): requests as they came.
    #[default]
    Http,
    /// OTLP/gRPC (port 4317 by convention), plain-text HTTP/2.
    Grpc,
}

impl ForwardProtocol {
    /// From `OTEL_EXPORTER_OTLP_PROTOCOL`'s values: `grpc`, or
    /// `http/protobuf` and `http/json` (both forward requests as they came;
    /// the body keeps the format the exporter chose). Unset means HTTP.
    pub fn parse(value: Option<&str>) -> Result<Self, ForwardError> {
        match value.map(str::trim) {
            None | Some("") => Ok(Self::Http),
            Some(v) if v.eq_ignore_ascii_case("grpc") => Ok(Self::Grpc),
            Some(v)
                if v.eq_ignore_ascii_case("http/protobuf")
                    || v.eq_ignore_ascii_case("http/json") =>
            {
                Ok(Self::Http)
            }
            Some(other) => Err(ForwardError::Protocol(other.to_owned())),
        }
    }

    /// The value [`parse`](Self::parse) reads back.
    pub fn as_env(self) -> &'static str {
        match self {
            Self::Http => "http/protobuf",
            Self::Grpc => "grpc",
        }
    }
}

impl std::fmt::Display for ForwardProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Http => "OTLP/HTTP",
            Self::Grpc => "OTLP/gRPC",
        })
    }
}

/// Where and how forwarding sends.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardConfig {
    /// The endpoint's base URL, as in `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// (`http://collector:4318`; over HTTP `/v1/traces` and `/v1/logs` are
    /// appended, over gRPC the collector services' paths).
    pub endpoint: String,
    /// OTLP/HTTP or OTLP/gRPC.
    pub protocol: ForwardProtocol,
    /// Requests waiting to be sent, at most.
    pub queue_requests: usize,
    /// Bytes of requests waiting to be sent, at most.
    pub queue_bytes: usize,
    /// Attempts per request and the backoff between them.
    pub retry: RetryPolicy,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// Headers sent with every request (authentication for a hosted
    /// endpoint), from `OTEL_EXPORTER_OTLP_HEADERS`.
    pub headers: HeaderMap,
}

impl ForwardConfig {
    /// Forwarding to `endpoint` with the defaults: 1 024 requests or 64 MiB
    /// queued, 6 attempts 250 ms to 8 s apart, 10 s per attempt.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol: ForwardProtocol::Http,
            queue_requests: 1024,
            queue_bytes: 64 << 20,
            retry: RetryPolicy {
                max_attempts: 6,
                initial_backoff: Duration::from_millis(250),
                max_backoff: Duration::from_secs(8),
                multiplier: 2.0,
                jitter: 0.2,
            },
            timeout: Duration::from_secs(10),
            headers: HeaderMap::new(),
        }
    }

    /// Adds the headers of `OTEL_EXPORTER_OTLP_HEADERS` syntax:
    /// `key1=value1,key2=value2`, values percent-decoded (the OTLP exporter
    /// specification's format).
    pub fn with_headers(mut self, spec: &str) -> Result<Self, ForwardError> {
        self.headers = parse_headers(spec)?;
        Ok(self)
    }

    /// The same, speaking `protocol`.
    pub fn with_protocol(mut self, protocol: ForwardProtocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The URL a signal is posted to: the endpoint with `path` appended,
    /// as the OTLP exporter specification appends `v1/traces`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.endpoint.trim_end_matches('/'))
    }

    /// Checks the endpoint: an absolute `http` or `https` URL; over gRPC
    /// `http` only (the console's gRPC client has no TLS).
    pub fn validate(&self) -> Result<(), ForwardError> {
        let url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| ForwardError::Endpoint(self.endpoint.clone(), e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ForwardError::Endpoint(
                self.endpoint.clone(),
                "not an http:// or https:// URL with a host".to_owned(),
            ));
        }
        if self.protocol == ForwardProtocol::Grpc && url.scheme() != "http" {
            return Err(ForwardError::Endpoint(
                self.endpoint.clone(),
                "OTLP/gRPC forwarding is plain-text only: use an http:// URL, or \
                 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for an https:// endpoint"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

/// Parses `key1=value1,key2=value2` (values percent-encoded) into headers.
pub fn parse_headers(spec: &str) -> Result<HeaderMap, ForwardError> {
    let mut headers = HeaderMap::new();
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = |why: &str| ForwardError::Headers(format!("{why} in {:?}", redact(pair)));
        let (key, value) = pair.split_once('=').ok_or_else(|| bad("no '='"))?;
        let value = percent_encoding::percent_decode_str(value.trim())
            .decode_utf8()
            .map_err(|_| bad("a value that is not UTF-8 once decoded"))?;
        let name = axum::http::HeaderName::from_bytes(key.trim().as_bytes())
            .map_err(|_| bad("an invalid header name"))?;
        let mut value =
            HeaderValue::from_str(&value).map_err(|_| bad("an invalid header value"))?;
        value.set_sensitive(true);
        headers.append(name, value);
    }
    Ok(headers)
}

/// `key=…`: a header's name without its secret, for error messages.
fn redact(pair: &str) -> String {
    match pair.split_once('=') {
        Some((key, _)) => format!("{}=…", key.trim()),
        None => "…".to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error(
        "OTEL_EXPORTER_OTLP_HEADERS: {0}; use key1=value1,key2=value2 with values percent-encoded"
    )]
    Headers(String),
    #[error("cannot forward to {0:?}: {1}")]
    Endpoint(String, String),
    #[error("cannot build the forwarding client: {0}")]
    Client(#[from] reqwest::Error),
    #[error(
        "OTEL_EXPORTER_OTLP_PROTOCOL={0:?} is not a protocol forwarding speaks: use grpc, http/protobuf or http/json"
    )]
    Protocol(String),
}

/// Counts shared by the queue, the sending task and [`ForwardStatus`].
#[derive(Debug, Default)]
struct Counters {
    queued: AtomicUsize,
    queued_bytes: AtomicUsize,
    sent: AtomicU64,
    lost: AtomicU64,
    /// `lost` when it was last logged, and when (ms since the epoch).
    reported: AtomicU64,
    reported_at_ms: AtomicI64,
    /// Why the latest request was lost.
    last_reason: Mutex<String>,
    loop_warned: AtomicBool,
}

impl Counters {
    /// Counts `n` lost requests and logs it, unless a WARN went out less
    /// than [`WARN_INTERVAL`] ago (then [`report`](Self::report) will).
    fn lose(&self, n: u64, reason: &str) {
        if let Ok(mut last) = self.last_reason.lock() {
            reason.clone_into(&mut last);
        }
        self.lost.fetch_add(n, Ordering::Relaxed);
        let now = crate::now_ms();
        let last = self.reported_at_ms.load(Ordering::Relaxed);
        let interval = i64::try_from(WARN_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(last) >= interval
            && self
                .reported_at_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.warn();
        }
    }

    /// Logs losses not logged yet.
    fn report(&self) {
        if self.lost.load(Ordering::Relaxed) > self.reported.load(Ordering::Relaxed) {
            self.reported_at_ms
                .store(crate::now_ms(), Ordering::Relaxed);
            self.warn();
        }
    }

    fn warn(&self) {
        let reason = self
            .last_reason
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default();
        let lost = self.lost.load(Ordering::Relaxed);
        let before = self.reported.swap(lost, Ordering::Relaxed);
        tracing::warn!(
            lost_total = lost,
            lost_since_last_warning = lost.saturating_sub(before),
            sent_total = self.sent.load(Ordering::Relaxed),
            queued = self.queued.load(Ordering::Relaxed),
            last_reason = reason,
            "OTLP forwarding lost requests: they are stored in the console but did not reach the forwarding endpoint"
        );
    }
}

/// What forwarding did so far; cheap to clone, readable after shutdown.
#[derive(Debug, Clone)]
pub struct ForwardStatus(Arc<Counters>);

impl ForwardStatus {
    /// Requests the endpoint accepted.
    pub fn sent(&self) -> u64 {
        self.0.sent.load(Ordering::Relaxed)
    }

    /// Requests that will never reach the endpoint: the queue was full,
    /// every attempt failed, or the endpoint refused them for good.
    pub fn lost(&self) -> u64 {
        self.0.lost.load(Ordering::Relaxed)
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.0.queued.load(Ordering::Relaxed)
    }
}

/// One request waiting to be forwarded.
#[derive(Debug)]
struct Outgoing {
    /// `/v1/traces` or `/v1/logs`.
    path: &'static str,
    body: Bytes,
    content_type: HeaderValue,
    content_encoding: Option<HeaderValue>,
    forwarded_by: HeaderValue,
}

/// The receiving side's handle: puts accepted requests in the queue.
#[derive(Debug, Clone)]
pub struct Forwarder {
    queue: mpsc::Sender<Outgoing>,
    counters: Arc<Counters>,
    queue_bytes: usize,
    /// This console's id in [`FORWARDED_BY`].
    id: Arc<str>,
}

/// The sending task; [`finish`](Self::finish) it after the receivers
/// stopped.
#[derive(Debug)]
pub struct ForwardWorker {
    task: tokio::task::JoinHandle<()>,
    counters: Arc<Counters>,
}

impl Forwarder {
    /// Starts the sending task on the current runtime.
    pub fn start(config: ForwardConfig) -> Result<(Self, ForwardWorker), ForwardError> {
        config.validate()?;
        let client = Client::new(&config)?;
        let (queue, receiver) = mpsc::channel(config.queue_requests.max(1));
        let counters = Arc::new(Counters {
            reported_at_ms: AtomicI64::new(i64::MIN),
            ..Counters::default()
        });
        let forwarder = Self {
            queue,
            counters: counters.clone(),
            queue_bytes: config.queue_bytes,
            id: uuid::Uuid::new_v4().simple().to_string().into(),
        };
        let task = tokio::spawn(send_queue(receiver, client, config, counters.clone()));
        Ok((forwarder, ForwardWorker { task, counters }))
    }

    pub fn status(&self) -> ForwardStatus {
        ForwardStatus(self.counters.clone())
    }

    /// Queues an OTLP/HTTP request's body as it came, with its content type
    /// and encoding, unless it already went through this console.
    pub fn forward_http(&self, path: &'static str, headers: &HeaderMap, body: Bytes) {
        let Some(content_type) = headers.get(header::CONTENT_TYPE).cloned() else {
            return; // Refused before: the receiver demands a content type.
        };
        let previous = headers.get(FORWARDED_BY).and_then(|v| v.to_str().ok());
        let Some(forwarded_by) = self.chain(path, previous) else {
            return;
        };
        self.enqueue(Outgoing {
            path,
            body,
            content_type,
            content_encoding: headers.get(header::CONTENT_ENCODING).cloned(),
            forwarded_by,
        });
    }

    /// Queues a request received over gRPC, re-encoded as OTLP/HTTP
    /// protobuf, unless it already went through this console (`previous`:
    /// the request's `kausal-forwarded-by` metadata). `encoded_len` is
    /// checked against the queue's byte budget before `encode` runs.
    pub fn forward_protobuf(
        &self,
        path: &'static str,
        previous: Option<&str>,
        encoded_len: usize,
        encode: impl FnOnce() -> Vec<u8>,
    ) {
        let Some(forwarded_by) = self.chain(path, previous) else {
            return;
        };
        if !self.reserve(encoded_len) {
            return;
        }
        let outgoing = Outgoing {
            path,
            body: Bytes::from(encode()),
            content_type: HeaderValue::from_static("application/x-protobuf"),
            content_encoding: None,
            forwarded_by,
        };
        self.send_reserved(outgoing, encoded_len);
    }

    /// The [`FORWARDED_BY`] chain to send on: `previous` with this console
    /// added; `None` when this console is in it already (a loop: the
    /// request is stored, not forwarded again) or it cannot be sent.
    fn chain(&self, path: &'static str, previous: Option<&str>) -> Option<HeaderValue> {
        let previous = previous.unwrap_or("");
        if previous.split(',').any(|id| id.trim() == &*self.id) {
            if !self.counters.loop_warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    path,
                    "this console received a request it forwarded itself (the forwarding endpoint \
                     leads back here): it is stored, not forwarded again; further ones are not logged"
                );
            }
            return None;
        }
        let chain = if previous.trim().is_empty() {
            self.id.to_string()
        } else {
            format!("{previous},{}", self.id)
        };
        let value = HeaderValue::from_str(&chain).ok();
        if value.is_none() {
            self.counters
                .lose(1, "the request's kausal-forwarded-by header is not valid");
        }
        value
    }

    fn enqueue(&self, outgoing: Outgoing) {
        let len = outgoing.body.len();
        if self.reserve(len) {
            self.send_reserved(outgoing, len);
        }
    }

    /// Takes `len` bytes of the queue's budget; counts a loss when they are
    /// not there.
    fn reserve(&self, len: usize) -> bool {
        let before = self.counters.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before.saturating_add(len) > self.queue_bytes {
            self.counters.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            self.counters
                .lose(1, "the forwarding queue is full (bytes)");
            return false;
        }
        true
    }

    fn send_reserved(&self, outgoing: Outgoing, len: usize) {
        self.counters.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.queue.try_send(outgoing) {
            self.counters.queued.fetch_sub(1, Ordering::Relaxed);
            self.counters.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            let reason = match e {
                mpsc::error::TrySendError::Full(_) => "the forwarding queue is full (requests)",
                mpsc::error::TrySendError::Closed(_) => "forwarding has stopped",
            };
            self.counters.lose(1, reason);
        }
    }
}

impl ForwardWorker {
    pub fn status(&self) -> ForwardStatus {
        ForwardStatus(self.counters.clone())
    }

    /// Waits until the queue is sent, for at most `grace` (the receivers
    /// must have stopped: the queue closes when the last [`Forwarder`] is
    /// dropped). What is still queued then is counted as lost and logged.
    pub async fn finish(self, grace: Duration) {
        let abort = self.task.abort_handle();
        if tokio::time::timeout(grace, self.task).await.is_err() {
            abort.abort();
            let left = self.counters.queued.swap(0, Ordering::Relaxed);
            if left > 0 {
                self.counters.lose(
                    u64::try_from(left).unwrap_or(u64::MAX),
                    "still queued when the console stopped",
                );
            }
        }
        self.counters.report();
    }
}

/// Sends the queue in order until it is closed and empty, logging losses
/// not yet logged every [`WARN_INTERVAL`].
async fn send_queue(
    mut queue: mpsc::Receiver<Outgoing>,
    client: Client,
    config: ForwardConfig,
    counters: Arc<Counters>,
) {
    let mut report = tokio::time::interval(WARN_INTERVAL);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let outgoing = tokio::select! {
            next = queue.recv() => match next {
                Some(outgoing) => outgoing,
                None => break,
            },
            _ = report.tick() => {
                counters.report();
                continue;
            }
        };
        let result = send_with_retries(&client, &config, &outgoing).await;
        counters.queued.fetch_sub(1, Ordering::Relaxed);
        counters
            .queued_bytes
            .fetch_sub(outgoing.body.len(), Ordering::Relaxed);
        match result {
            Ok(()) => {
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            Err(reason) => counters.lose(1, &reason),
        }
    }
    counters.report();
}

/// The forwarding client of one protocol.
#[derive(Debug)]
enum Client {
    Http(reqwest::Client),
    Grpc(Box<GrpcClients>),
}

/// The collector services' clients over one channel.
#[derive(Debug)]
struct GrpcClients {
    traces: TraceServiceClient<Channel>,
    logs: LogsServiceClient<Channel>,
}

/// Why one attempt failed: how to go on, what to log, and the wait the
/// endpoint asked for.
type Failed = (ErrorClass, String, Option<Duration>);

impl Client {
    fn new(config: &ForwardConfig) -> Result<Self, ForwardError> {
        Ok(match config.protocol {
            ForwardProtocol::Http => Self::Http(
                reqwest::Client::builder()
                    .timeout(config.timeout)
                    .user_agent(concat!("kausal-console/", env!("CARGO_PKG_VERSION")))
                    .default_headers(config.headers.clone())
                    .build()?,
            ),
            ForwardProtocol::Grpc => {
                // Connects on first use, and again after a failure.
                let channel = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| ForwardError::Endpoint(config.endpoint.clone(), e.to_string()))?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout)
                    .user_agent(concat!("kausal-console/", env!("CARGO_PKG_VERSION")))
                    .map_err(|e| ForwardError::Endpoint(config.endpoint.clone(), e.to_string()))?
                    .connect_lazy();
                Self::Grpc(Box::new(GrpcClients {
                    traces: TraceServiceClient::new(channel.clone()),
                    logs: LogsServiceClient::new(channel),
                }))
            }
        })
    }

    /// What every attempt at `outgoing` sends, made once: over gRPC the
    /// decoded message and its metadata. `Err` (fatal) when it cannot be
    /// decoded, which would be a bug: the receiver decoded it before.
    fn prepare<'a>(
        &'a self,
        config: &ForwardConfig,
        outgoing: &Outgoing,
    ) -> Result<Prepared<'a>, String> {
        let clients = match self {
            Self::Http(client) => return Ok(Prepared::Http(client)),
            Self::Grpc(clients) => clients.as_ref(),
        };
        let fatal = |reason: String| format!("{}: {reason}", config.url(outgoing.path));
        let export = if outgoing.path == <crate::ingest::Traces as crate::ingest::Signal>::PATH {
            GrpcExport::Traces(decode_again(outgoing).map_err(fatal)?)
        } else {
            GrpcExport::Logs(decode_again(outgoing).map_err(fatal)?)
        };
        let mut metadata = tonic::metadata::MetadataMap::from_headers(config.headers.clone());
        if let Some(chain) = outgoing
            .forwarded_by
            .to_str()
            .ok()
            .and_then(|chain| tonic::metadata::MetadataValue::try_from(chain).ok())
        {
            metadata.insert(FORWARDED_BY, chain);
        }
        Ok(Prepared::Grpc {
            clients,
            export,
            metadata,
        })
    }
}

/// A queued request made ready for its client (see [`Client::prepare`]).
#[derive(Debug)]
enum Prepared<'a> {
    /// OTLP/HTTP sends the queued bytes as they are.
    Http(&'a reqwest::Client),
    Grpc {
        clients: &'a GrpcClients,
        export: GrpcExport,
        metadata: tonic::metadata::MetadataMap,
    },
}

/// The message of one OTLP/gRPC export.
#[derive(Debug)]
enum GrpcExport {
    Traces(ExportTraceServiceRequest),
    Logs(ExportLogsServiceRequest),
}

impl Prepared<'_> {
    /// One attempt.
    async fn send(&self, config: &ForwardConfig, outgoing: &Outgoing) -> Result<(), Failed> {
        let (clients, export, metadata) = match self {
            Self::Http(client) => return send_http(client, config, outgoing).await,
            Self::Grpc {
                clients,
                export,
                metadata,
            } => (clients, export, metadata),
        };
        fn request<T>(metadata: &tonic::metadata::MetadataMap, message: T) -> tonic::Request<T> {
            tonic::Request::from_parts(metadata.clone(), Default::default(), message)
        }
        let sent = match export {
            GrpcExport::Traces(m) => clients
                .traces
                .clone()
                .export(request(metadata, m.clone()))
                .await
                .map(drop),
            GrpcExport::Logs(m) => clients
                .logs
                .clone()
                .export(request(metadata, m.clone()))
                .await
                .map(drop),
        };
        sent.map_err(|status| {
            (
                grpc_class(status.code()),
                format!(
                    "{} answered {:?}: {}",
                    config.url(outgoing.path),
                    status.code(),
                    status.message()
                ),
                None,
            )
        })
    }
}

/// A queued request as the message it carries (it was decoded once
/// already, on receipt: a failure here would be a bug, and is fatal).
fn decode_again<T>(outgoing: &Outgoing) -> Result<T, String>
where
    T: prost::Message + Default + serde::de::DeserializeOwned,
{
    let format = Format::from_content_type(outgoing.content_type.to_str().ok())
        .map_err(|e| e.to_string())?;
    let encoding = outgoing
        .content_encoding
        .as_ref()
        .and_then(|v| v.to_str().ok());
    let bytes = otlp::decompress(encoding, &outgoing.body).map_err(|e| e.to_string())?;
    otlp::decode(format, &bytes, "a forwarded request").map_err(|e| e.to_string())
}

/// OTLP/gRPC's retryable codes (the OTLP specification's list; exhausted
/// resources too, as the SDKs back off on them).
fn grpc_class(code: tonic::Code) -> ErrorClass {
    use tonic::Code;
    match code {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => ErrorClass::Retryable,
        _ => ErrorClass::Fatal,
    }
}

/// One OTLP/HTTP attempt.
async fn send_http(
    client: &reqwest::Client,
    config: &ForwardConfig,
    outgoing: &Outgoing,
) -> Result<(), Failed> {
    let url = config.url(outgoing.path);
    let mut request = client
        .post(&url)
        .header(header::CONTENT_TYPE, outgoing.content_type.clone())
        .header(FORWARDED_BY, outgoing.forwarded_by.clone())
        .body(outgoing.body.clone());
    if let Some(encoding) = &outgoing.content_encoding {
        request = request.header(header::CONTENT_ENCODING, encoding.clone());
    }
    match request.send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let status = response.status();
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = response.text().await.unwrap_or_default();
            let reason = format!(
                "{url} answered {status}: {}",
                text.chars().take(200).collect::<String>()
            );
            Err((status_class(status), reason, retry_after))
        }
        Err(e) => {
            let class = if e.is_builder() {
                ErrorClass::Fatal
            } else {
                ErrorClass::Retryable
            };
            Err((class, format!("{url}: {}", error_chain(&e)), None))
        }
    }
}

/// One request, with retries; `Err` with the last reason when it is lost.
async fn send_with_retries(
    client: &Client,
    config: &ForwardConfig,
    outgoing: &Outgoing,
) -> Result<(), String> {
    let prepared = client
        .prepare(config, outgoing)
        .map_err(|reason| format!("not sent, it could not be decoded again: {reason}"))?;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let Err((class, reason, retry_after)) = prepared.send(config, outgoing).await else {
            return Ok(());
        };
        match config.retry.decide(attempt, class, rand::random::<f64>()) {
            RetryDecision::RetryAfter(backoff) => {
                let wait = retry_after
                    .map_or(backoff, |r| r.max(backoff))
                    .min(config.retry.max_backoff);
                tracing::debug!(attempt, ?wait, reason, "forwarding failed; retrying");
                tokio::time::sleep(wait).await;
            }
            RetryDecision::GiveUp(_) => {
                // Logged by the loss count's WARN (at most one per interval).
                tracing::debug!(attempt, reason, "forwarding gave up");
                return Err(format!("after {attempt} attempt(s): {reason}"));
            }
        }
    }
}

/// An error and its sources: reqwest's own message ("error sending
/// request") does not say what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// OTLP/HTTP's retryable answers, as the services' own exporters retry.
fn status_class(status: StatusCode) -> ErrorClass {
    kausal_telemetry::export_retry::status_class(status.as_u16())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otlp_headers_parse_decode_and_refuse_bad_pairs_without_leaking_them() {
        let h = parse_headers("api-key=s3cr%3Dt, x-tenant = blue ,").expect("headers");
        assert_eq!(h["api-key"], "s3cr=t");
        assert_eq!(h["x-tenant"], "blue");
        assert!(h["api-key"].is_sensitive());
        assert!(parse_headers("").expect("none").is_empty());
        for bad in ["novalue", "bad name=x", "k=%FF"] {
            let e = parse_headers(bad).expect_err(bad).to_string();
            assert!(!e.contains("%FF") && !e.contains("=x"), "{e}");
        }
    }

    #[test]
    fn the_protocol_is_read_in_the_sdks_words_and_grpc_refuses_https() {
        for (value, want) in [
            (None, ForwardProtocol::Http),
            (Some(""), ForwardProtocol::Http),
            (Some("http/protobuf"), ForwardProtocol::Http),
            (Some("HTTP/JSON"), ForwardProtocol::Http),
            (Some(" grpc "), ForwardProtocol::Grpc),
        ] {
            assert_eq!(
                ForwardProtocol::parse(value).expect("known"),
                want,
                "{value:?}"
            );
            assert_eq!(
                ForwardProtocol::parse(Some(want.as_env())).expect("round trip"),
                want
            );
        }
        let e = ForwardProtocol::parse(Some("thrift")).expect_err("unknown");
        assert!(
            e.to_string().contains("grpc, http/protobuf or http/json"),
            "{e}"
        );
        let grpc = |endpoint: &str| {
            ForwardConfig::new(endpoint)
                .with_protocol(ForwardProtocol::Grpc)
                .validate()
        };
        assert!(grpc("http://collector:4317").is_ok());
        let e = grpc("https://collector:4317").expect_err("no TLS over gRPC");
        assert!(e.to_string().contains("http/protobuf"), "{e}");
        assert!(
            ForwardConfig::new("https://collector:4318")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn urls_append_the_signal_path_as_the_exporters_do() {
        for (endpoint, want) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("https://c/otlp", "https://c/otlp/v1/traces"),
        ] {
            assert_eq!(ForwardConfig::new(endpoint).url("/v1/traces"), want);
        }
    }

    #[test]
    fn only_http_urls_with_a_host_are_endpoints() {
        assert!(
            ForwardConfig::new("http://127.0.0.1:4318")
                .validate()
                .is_ok()
        );
        assert!(
            ForwardConfig::new("https://otlp.example")
                .validate()
                .is_ok()
        );
        for bad in ["127.0.0.1:4318", "grpc://c:4317", "", "http://"] {
            assert!(ForwardConfig::new(bad).validate().is_err(), "{bad:?}");
        }
    }
}
