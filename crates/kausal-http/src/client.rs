//! The traced client.

use std::time::Duration;

use kausal_core::failure::{ErrorClass, HandlerError};
use kausal_core::{CorrelationId, EventId, TraceParent};
use kausal_telemetry::ids;
use kausal_telemetry::spans::{Kind, SpanStart, attr};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::classify::status_class;
use crate::header;

/// The most of an answer's body the client reads; a longer answer is an
/// error, not a truncated body.
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// How long one request may take, connection included, by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest wait for a connection: a SYN and two of its retransmissions
/// (1 s, then 2 s more), so a callee on the other side of the world still
/// connects, and one whose host is gone (no answer, not even a refusal) is
/// known to be down in 3 s.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Who is calling, on whose behalf: the trace the CLIENT span continues,
/// the correlation id and the event being handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    correlation_id: CorrelationId,
    causation_id: Option<EventId>,
    parent: Option<TraceParent>,
}

impl CallContext {
    pub fn new(correlation_id: CorrelationId) -> Self {
        Self {
            correlation_id,
            causation_id: None,
            parent: None,
        }
    }

    /// The event whose handling makes this call (sent as `X-Causation-ID`).
    pub fn caused_by(mut self, event_id: EventId) -> Self {
        self.causation_id = Some(event_id);
        self
    }

    /// The span the CLIENT span is a child of (a handler's `process` span);
    /// `None` starts a trace.
    pub fn parent(mut self, parent: Option<TraceParent>) -> Self {
        self.parent = parent;
        self
    }

    pub fn correlation_id(&self) -> &CorrelationId {
        &self.correlation_id
    }
}

/// A 2xx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON; a body that does not parse is fatal (the callee
    /// answered something this caller does not understand).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, CallError> {
        serde_json::from_slice(&self.body).map_err(|e| CallError {
            class: ErrorClass::Fatal,
            error_type: "HttpAnswerNotUnderstood".to_owned(),
            message: format!("the answer's body is not the expected JSON: {e}"),
            status: Some(self.status),
        })
    }
}

/// Why a call failed, classified for the retry policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    pub class: ErrorClass,
    /// Stable: `Http<status>` for an answer (`Http503`), `HttpTimeout`,
    /// `HttpConnect`, `HttpRequest`, `HttpAnswerTooLarge`, …
    pub error_type: String,
    pub message: String,
    /// The answer's status, when there was one.
    pub status: Option<u16>,
}

impl From<CallError> for HandlerError {
    fn from(e: CallError) -> Self {
        Self {
            class: e.class,
            error_type: e.error_type,
            message: e.message,
        }
    }
}

/// An HTTP client whose every request is a CLIENT span carrying the
/// context's trace, correlation and cause.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
}

impl HttpClient {
    /// A client whose requests time out after 10 s.
    pub fn new(service: &str) -> Result<Self, CallError> {
        Self::with_timeout(service, DEFAULT_TIMEOUT)
    }

    /// A client whose requests time out after `timeout`. Making the
    /// connection has its own, shorter limit (half of `timeout`, at most
    /// 3 s), so that a callee that does not answer at all
    /// ([`ErrorClass::Unavailable`]: wait for it) is told apart from a
    /// request that is slow ([`ErrorClass::Retryable`]).
    pub fn with_timeout(service: &str, timeout: Duration) -> Result<Self, CallError> {
        let client = reqwest::Client::builder()
            .user_agent(format!("{service} (kausal-http)"))
            .timeout(timeout)
            .connect_timeout((timeout / 2).min(MAX_CONNECT_TIMEOUT))
            .build()
            .map_err(|e| CallError {
                class: ErrorClass::Fatal,
                error_type: "HttpClientBuild".to_owned(),
                message: format!("cannot build the HTTP client: {e}"),
                status: None,
            })?;
        Ok(Self { client })
    }

    /// `POST url` with `body` as JSON. `route` is the path template the
    /// span is named after (`/v1/entries`, not the URL with its ids).
    pub async fn post_json<T: Serialize>(
        &self,
        url: &str,
        route: &str,
        body: &T,
        context: &CallContext,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, CallError> {
        let body = serde_json::to_vec(body).map_err(|e| CallError {
            class: ErrorClass::Fatal,
            error_type: "SerializationError".to_owned(),
            message: format!("cannot encode the request body: {e}"),
            status: None,
        })?;
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = idempotency_key {
            request = request.header(header::IDEMPOTENCY_KEY, key);
        }
        self.send("POST", url, route, request, context).await
    }

    /// `GET url`.
    pub async fn get(
        &self,
        url: &str,
        route: &str,
        context: &CallContext,
    ) -> Result<Answer, CallError> {
        let request = self.client.get(url);
        self.send("GET", url, route, request, context).await
    }

    async fn send(
        &self,
        method: &'static str,
        url: &str,
        route: &str,
        request: reqwest::RequestBuilder,
        context: &CallContext,
    ) -> Result<Answer, CallError> {
        let own = match context.parent {
            Some(parent) => parent.child(ids::new_span_id()),
            None => TraceParent::new(ids::new_trace_id(), ids::new_span_id(), true),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| CallError {
            class: ErrorClass::Fatal,
            error_type: "HttpBadUrl".to_owned(),
            message: format!("{url:?} is not a URL: {e}"),
            status: None,
        })?;
        let mut span = SpanStart::new(format!("{method} {route}"), Kind::Client, own)
            .parent(context.parent)
            .attr(attr::HTTP_REQUEST_METHOD, method)
            .attr(attr::URL_FULL, url.to_owned())
            .attr(
                attr::SERVER_ADDRESS,
                parsed.host_str().unwrap_or_default().to_owned(),
            )
            .attr(
                attr::SERVER_PORT,
                i64::from(parsed.port_or_known_default().unwrap_or_default()),
            )
            .attr(
                attr::CONVERSATION_ID,
                context.correlation_id.as_str().to_owned(),
            )
            .start();
        let mut request = request
            .header(header::TRACEPARENT, own.to_string())
            .header(header::CORRELATION_ID, context.correlation_id.as_str());
        if let Some(cause) = context.causation_id {
            request = request.header(header::CAUSATION_ID, cause.to_string());
        }
        let outcome = exchange(request, url).await;
        match &outcome {
            Ok(answer) => {
                span.set_attribute(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(answer.status));
            }
            Err(e) => {
                if let Some(status) = e.status {
                    span.set_attribute(attr::HTTP_RESPONSE_STATUS_CODE, i64::from(status));
                }
                span.fail(&e.error_type, &e.message);
            }
        }
        span.end();
        outcome
    }
}

/// Sends and reads the answer, at most [`MAX_ANSWER_BYTES`] of it.
async fn exchange(request: reqwest::RequestBuilder, url: &str) -> Result<Answer, CallError> {
    let mut response = request.send().await.map_err(|e| transport(&e, url))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(&e, url))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(CallError {
                class: ErrorClass::Fatal,
                error_type: "HttpAnswerTooLarge".to_owned(),
                message: format!(
                    "{url} answered {status} with more than {MAX_ANSWER_BYTES} bytes; refusing to read it"
                ),
                status: Some(status),
            });
        }
        body.extend_from_slice(&chunk);
    }
    if (200..300).contains(&status) {
        return Ok(Answer { status, body });
    }
    let excerpt: String = String::from_utf8_lossy(&body).chars().take(300).collect();
    Err(CallError {
        class: status_class(status),
        error_type: format!("Http{status}"),
        message: format!("{url} answered {status}: {excerpt}"),
        status: Some(status),
    })
}

/// A request that got no answer. A connection that cannot be made (refused,
/// no route, a name that does not resolve, no answer within the connect
/// timeout: a host that is gone or a firewall that drops) says the callee
/// is down, not that this request is wrong: nothing in a request's body or
/// headers makes a connection fail, so it is [`ErrorClass::Unavailable`]
/// and the record waits for the callee instead of spending its retry
/// budget and being dead-lettered. A timeout once connected or a
/// connection broken off mid-answer is retried within the budget (a
/// request can be slow or break its callee by itself); a request that
/// cannot be built is not retried.
fn transport(e: &reqwest::Error, url: &str) -> CallError {
    // A connect timeout is both `is_connect` and `is_timeout`: the
    // connection is what failed.
    let (class, error_type) = if e.is_connect() {
        (ErrorClass::Unavailable, "HttpConnect")
    } else if e.is_timeout() {
        (ErrorClass::Retryable, "HttpTimeout")
    } else if e.is_builder() {
        (ErrorClass::Fatal, "HttpRequest")
    } else {
        // Reset connections, broken-off bodies.
        (ErrorClass::Retryable, "HttpTransport")
    };
    let mut message = format!("{url}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    CallError {
        class,
        error_type: error_type.to_owned(),
        message,
        status: None,
    }
}
