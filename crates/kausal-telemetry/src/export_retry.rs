//! Sending a batch of spans or log records again when the receiver says
//! "later".
//!
//! opentelemetry-otlp 0.31 sends each batch once: a `503` from a busy
//! receiver (the console answers 503 + `Retry-After` while its database is
//! unavailable), a timeout or a refused connection loses the batch, and the
//! SDK leaves retries to the exporter. [`Retrying`] wraps the OTLP
//! exporters and sends the same batch again under a [`RetryPolicy`] when
//! the failure is retryable by the OTLP specification (429, 502, 503, 504,
//! timeouts, transport errors); what is refused for good (another 4xx) or
//! still fails after the last attempt is logged as a WARN with the number
//! of items lost — on stdout only, since the log export itself may be what
//! is failing.
//!
//! The wait between attempts blocks the calling thread: the SDK's batch
//! processors call `export` on a thread of their own, and meanwhile new
//! items queue up to the processor's bound ([`crate::export_queue::QUEUE`]).

use std::time::Duration;

use kausal_core::failure::ErrorClass;
use kausal_core::retry::{RetryDecision, RetryPolicy};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// This module's log target, never exported over OTLP (see
/// [`crate::otlp_logs`]): a warning about a failing export must not feed
/// the export that fails.
pub(crate) const TARGET: &str = "kausal_telemetry::export_retry";

/// OTLP/HTTP's retryable answers: 429, 502, 503, 504. Anything else is a
/// refusal that sending the same bytes again cannot change.
pub fn status_class(status: u16) -> ErrorClass {
    match status {
        429 | 502 | 503 | 504 => ErrorClass::Retryable,
        _ => ErrorClass::Fatal,
    }
}

/// Whether an export error is worth another attempt. opentelemetry-otlp
/// reports an HTTP answer only inside its message: its own ("…, Status
/// Code: 503, …") or, with the reqwest clients, reqwest's debug text
/// ("reqwest::Error { kind: Status(503, None), … }"). An error naming no
/// status is a timeout or a transport failure, which the OTLP
/// specification retries.
fn class_of(error: &OTelSdkError) -> ErrorClass {
    match error {
        OTelSdkError::AlreadyShutdown => ErrorClass::Fatal,
        OTelSdkError::Timeout(_) => ErrorClass::Retryable,
        OTelSdkError::InternalFailure(message) => {
            status_in(message).map_or(ErrorClass::Retryable, status_class)
        }
    }
}

/// The HTTP status an exporter's message names, if any.
fn status_in(message: &str) -> Option<u16> {
    ["Status Code: ", "kind: Status("]
        .iter()
        .find_map(|marker| {
            let (_, rest) = message.split_once(marker)?;
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
}

/// The policy the services' exporters retry with: five attempts, waiting
/// 0.5, 1, 2 and 4 s (±20 %) in between.
pub fn default_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(5),
        multiplier: 2.0,
        jitter: 0.2,
    }
}

/// An exporter that sends a failed batch again (see the module's text).
#[derive(Debug)]
pub struct Retrying<E> {
    inner: E,
    policy: RetryPolicy,
    /// "spans" or "log records", for the warning.
    items: &'static str,
}

impl<E> Retrying<E> {
    pub fn spans(inner: E, policy: RetryPolicy) -> Self {
        Self {
            inner,
            policy,
            items: "spans",
        }
    }

    pub fn logs(inner: E, policy: RetryPolicy) -> Self {
        Self {
            inner,
            policy,
            items: "log records",
        }
    }

    /// Runs `attempt` until it succeeds, fails for good or runs out of
    /// attempts; `count` items are at stake.
    async fn send<F, Fut>(&self, count: usize, mut attempt: F) -> OTelSdkResult
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = OTelSdkResult>,
    {
        let mut tries = 0u32;
        loop {
            tries += 1;
            let error = match attempt().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match self
                .policy
                .decide(tries, class_of(&error), crate::ids::unit_sample())
            {
                RetryDecision::RetryAfter(wait) => std::thread::sleep(wait),
                RetryDecision::GiveUp(reason) => {
                    tracing::warn!(
                        target: TARGET,
                        lost = count,
                        attempts = tries,
                        error = %error,
                        "OTLP export of {count} {} failed ({reason:?}); they are lost",
                        self.items,
                    );
                    return Err(error);
                }
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for Retrying<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len();
        self.send(count, || self.inner.export(batch.clone())).await
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: LogExporter> LogExporter for Retrying<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let records: Vec<_> = batch.iter().collect();
        self.send(records.len(), || self.inner.export(LogBatch::new(&records)))
            .await
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;
    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::trace::{SdkTracerProvider, SimpleSpanProcessor};

    use super::*;

    #[test]
    fn statuses_and_messages_are_classified_as_the_otlp_specification_says() {
        for (status, class) in [
            (429, ErrorClass::Retryable),
            (502, ErrorClass::Retryable),
            (503, ErrorClass::Retryable),
            (504, ErrorClass::Retryable),
            (400, ErrorClass::Fatal),
            (413, ErrorClass::Fatal),
            (500, ErrorClass::Fatal),
        ] {
            assert_eq!(status_class(status), class, "{status}");
        }
        let failure = |m: &str| OTelSdkError::InternalFailure(m.to_owned());
        let http = "OpenTelemetry trace export failed. Url: http://c/v1/traces, Status Code: ";
        assert_eq!(
            class_of(&failure(&format!("{http}503, Response: \"busy\""))),
            ErrorClass::Retryable
        );
        assert_eq!(
            class_of(&failure(&format!("{http}400, Response: \"bad\""))),
            ErrorClass::Fatal
        );
        assert_eq!(
            class_of(&failure(
                "reqwest::Error { kind: Status(413, None), url: \"http://c/v1/traces\" }"
            )),
            ErrorClass::Fatal
        );
        assert_eq!(
            class_of(&failure(
                "reqwest::Error { kind: Status(429, None), url: \"http://c/v1/traces\" }"
            )),
            ErrorClass::Retryable
        );
        assert_eq!(
            class_of(&failure(
                "reqwest::Error { kind: Request, source: ConnectionRefused }"
            )),
            ErrorClass::Retryable
        );
        assert_eq!(
            class_of(&OTelSdkError::Timeout(Duration::from_secs(10))),
            ErrorClass::Retryable
        );
        assert_eq!(class_of(&OTelSdkError::AlreadyShutdown), ErrorClass::Fatal);
    }

    /// A receiver that answers the statuses of `script` in turn (then 200)
    /// and keeps every body it was sent.
    #[derive(Clone, Default)]
    struct Receiver {
        script: Arc<Mutex<Vec<u16>>>,
        bodies: Arc<Mutex<Vec<Bytes>>>,
    }

    async fn answer(State(r): State<Receiver>, body: Bytes) -> StatusCode {
        r.bodies.lock().expect("bodies").push(body);
        let mut script = r.script.lock().expect("script");
        let status = if script.is_empty() {
            200
        } else {
            script.remove(0)
        };
        StatusCode::from_u16(status).expect("status")
    }

    /// Ends one span through the real OTLP/HTTP exporter, wrapped, against
    /// a real HTTP server answering `script`; the bodies it received.
    async fn export_one_span(script: &[u16]) -> Vec<Bytes> {
        let receiver = Receiver::default();
        *receiver.script.lock().expect("script") = script.to_vec();
        let app = Router::new()
            .route("/v1/traces", post(answer))
            .with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/v1/traces",
            listener.local_addr().expect("address")
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let fast = RetryPolicy {
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            ..default_policy()
        };
        tokio::task::spawn_blocking(move || {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url)
                .build()
                .expect("exporter");
            let provider = SdkTracerProvider::builder()
                .with_span_processor(SimpleSpanProcessor::new(Retrying::spans(exporter, fast)))
                .build();
            provider
                .tracer("test")
                .in_span("the-span-that-must-arrive", |_| {});
            let _ = provider.shutdown();
        })
        .await
        .expect("export");
        server.abort();
        receiver.bodies.lock().expect("bodies").clone()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_receiver_gets_the_same_batch_again_until_it_takes_it() {
        let bodies = export_one_span(&[503, 429, 502]).await;
        assert_eq!(bodies.len(), 4, "three refusals, then accepted");
        assert!(
            bodies.iter().all(|b| b == &bodies[0]),
            "the same batch each time"
        );
        let name = b"the-span-that-must-arrive";
        assert!(bodies[0].windows(name.len()).any(|w| w == name));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refusal_for_good_or_a_receiver_busy_too_long_ends_the_attempts() {
        assert_eq!(export_one_span(&[400]).await.len(), 1, "400 is not retried");
        assert_eq!(
            export_one_span(&[503; 9]).await.len(),
            default_policy().max_attempts as usize,
            "503 is retried up to the policy's limit"
        );
    }
}
