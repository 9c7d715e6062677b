//! The traced client against a real HTTP server on a TCP socket: what the
//! callee receives, the CLIENT span the caller records, and how failures
//! are classified for the runtime's retry policy.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use kausal_core::failure::{ErrorClass, HandlerError};
use kausal_core::{CorrelationId, EventId, TraceParent};
use kausal_http::{CallContext, HttpClient, MAX_ANSWER_BYTES, header};
use kausal_telemetry::ids;
use kausal_telemetry::testing::SpanCapture;
use opentelemetry::trace::SpanKind;

/// What the server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Clone)]
struct Server {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// The status and body of every answer.
    answer: (u16, Vec<u8>),
}

async fn record(State(s): State<Server>, headers: HeaderMap, body: Bytes) -> (StatusCode, Vec<u8>) {
    s.seen.lock().expect("seen").push(Seen { headers, body });
    (
        StatusCode::from_u16(s.answer.0).expect("status"),
        s.answer.1.clone(),
    )
}

/// A server answering every `POST /v1/entries` with `status` and `body`;
/// its base URL and what it saw.
async fn serve(status: u16, body: Vec<u8>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let server = Server {
        seen: Arc::default(),
        answer: (status, body),
    };
    let seen = server.seen.clone();
    let app = Router::new()
        .route("/v1/entries", post(record))
        .with_state(server);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, seen)
}

fn context() -> (CallContext, TraceParent, EventId) {
    let process = TraceParent::new(ids::new_trace_id(), ids::new_span_id(), true);
    let cause = ids::new_event_id();
    let correlation: CorrelationId = format!("corr-{}", ids::new_event_id())
        .parse()
        .expect("correlation id");
    let context = CallContext::new(correlation)
        .caused_by(cause)
        .parent(Some(process));
    (context, process, cause)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_carries_the_trace_the_correlation_the_cause_and_the_key_under_a_client_span() {
    let capture = SpanCapture::install();
    let (base, seen) = serve(201, br#"{"entry_id":"e-1"}"#.to_vec()).await;
    let (context, process, cause) = context();
    let client = HttpClient::new("payment-service").expect("client");
    let answer = client
        .post_json(
            &format!("{base}/v1/entries"),
            "/v1/entries",
            &serde_json::json!({"amount": 4200}),
            &context,
            Some("ord-42"),
        )
        .await
        .expect("posted");
    assert_eq!(answer.status, 201);
    let parsed: serde_json::Value = answer.json().expect("JSON");
    assert_eq!(parsed["entry_id"], "e-1");

    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 1);
    let h = |name: &str| {
        seen[0]
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(
        h(header::CORRELATION_ID).as_deref(),
        Some(context.correlation_id().as_str())
    );
    assert_eq!(h(header::CAUSATION_ID), Some(cause.to_string()));
    assert_eq!(h(header::IDEMPOTENCY_KEY).as_deref(), Some("ord-42"));
    assert_eq!(h("content-type").as_deref(), Some("application/json"));
    assert_eq!(&seen[0].body[..], br#"{"amount":4200}"#);
    let sent = TraceParent::parse(&h(header::TRACEPARENT).expect("traceparent")).expect("valid");
    assert_eq!(
        sent.trace_id, process.trace_id,
        "the handler's trace goes on"
    );

    let spans = capture.in_trace(&process.trace_id.to_string());
    let client_span = spans
        .iter()
        .find(|s| s.name == "POST /v1/entries")
        .unwrap_or_else(|| panic!("a CLIENT span in {spans:?}"));
    assert_eq!(client_span.kind, SpanKind::Client);
    assert_eq!(
        client_span.span_id,
        sent.parent_id.to_string(),
        "the callee's parent is the CLIENT span"
    );
    assert_eq!(
        client_span.parent_span_id,
        Some(process.parent_id.to_string()),
        "the CLIENT span is a child of the handler's span"
    );
    assert_eq!(
        client_span
            .attribute("http.response.status_code")
            .as_deref(),
        Some("201")
    );
    assert_eq!(
        client_span
            .attribute("messaging.message.conversation_id")
            .as_deref(),
        Some(context.correlation_id().as_str())
    );
    assert_eq!(
        client_span.attribute("url.full"),
        Some(format!("{base}/v1/entries"))
    );
    assert!(!client_span.failed);
}

/// A listener that never accepts, with its accept queue filled: the kernel
/// drops further SYNs, so a connection to it is neither made nor refused.
/// The listener and the streams that fill its queue are returned to be
/// kept open.
async fn silent_listener() -> (
    std::net::SocketAddr,
    (tokio::net::TcpListener, Vec<std::net::TcpStream>),
) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let addr = socket.local_addr().expect("address");
    let listener = socket.listen(0).expect("listen");
    let mut queue = Vec::new();
    for _ in 0..16 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(stream) => queue.push(stream),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return (addr, (listener, queue)),
            Err(e) => panic!("filling the accept queue: {e}"),
        }
    }
    panic!("16 connections did not fill an accept queue of length 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_classified_for_the_retry_policy_and_mark_the_span() {
    let capture = SpanCapture::install();
    let client =
        HttpClient::with_timeout("payment-service", Duration::from_secs(2)).expect("client");
    let body = serde_json::json!({});
    for (status, class) in [
        (503, ErrorClass::Retryable),
        (429, ErrorClass::Retryable),
        (400, ErrorClass::Fatal),
        (409, ErrorClass::Fatal),
    ] {
        let (base, _) = serve(status, b"{\"error\":\"why\"}".to_vec()).await;
        let (context, process, _) = context();
        let e = client
            .post_json(
                &format!("{base}/v1/entries"),
                "/v1/entries",
                &body,
                &context,
                Some("k"),
            )
            .await
            .expect_err("refused");
        assert_eq!((e.status, e.class), (Some(status), class), "{e}");
        assert_eq!(e.error_type, format!("Http{status}"));
        assert!(
            e.message.contains("why"),
            "the callee's reason is kept: {e}"
        );
        let handler: HandlerError = e.into();
        assert_eq!(handler.class, class);
        let spans = capture.in_trace(&process.trace_id.to_string());
        let span = spans
            .iter()
            .find(|s| s.name == "POST /v1/entries")
            .expect("the CLIENT span");
        assert!(span.failed, "{status} fails the span");
        assert_eq!(
            span.attribute("http.response.status_code"),
            Some(status.to_string())
        );
    }

    // Nobody listening: the callee is down; the record waits for it.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("address")
    };
    let (context, _, _) = context();
    let e = client
        .post_json(
            &format!("http://{closed}/v1/entries"),
            "/v1/entries",
            &body,
            &context,
            None,
        )
        .await
        .expect_err("nobody there");
    assert_eq!(
        (e.class, e.error_type.as_str()),
        (ErrorClass::Unavailable, "HttpConnect"),
        "{e}"
    );

    // A host that does not answer at all (SYNs dropped: here a listener
    // whose accept queue is full, as a firewall or a gone host would): the
    // callee is down too, after the connect timeout (1 s for this client),
    // not a slow request spending the retry budget.
    let (silent, _held) = silent_listener().await;
    let started = std::time::Instant::now();
    let e = client
        .post_json(
            &format!("http://{silent}/v1/entries"),
            "/v1/entries",
            &body,
            &context,
            None,
        )
        .await
        .expect_err("no answer");
    assert_eq!(
        (e.class, e.error_type.as_str()),
        (ErrorClass::Unavailable, "HttpConnect"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the connect timeout, not the request's, ended it: {:?}",
        started.elapsed()
    );

    // An answer over the bound is refused, not truncated.
    let (base, _) = serve(200, vec![b'x'; MAX_ANSWER_BYTES + 1]).await;
    let e = client
        .post_json(
            &format!("{base}/v1/entries"),
            "/v1/entries",
            &body,
            &context,
            None,
        )
        .await
        .expect_err("too large");
    assert_eq!(
        (e.class, e.error_type.as_str()),
        (ErrorClass::Fatal, "HttpAnswerTooLarge")
    );
}
