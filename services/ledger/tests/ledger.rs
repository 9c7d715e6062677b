//! The ledger over real HTTP (a TCP socket, reqwest) on every configured
//! backend: SQLite always, PostgreSQL when `KAUSAL_TEST_DATABASE_URL` is
//! set (the contention test needs it and fails without it). Nothing is
//! mocked: each test runs the API on a fresh database and checks what the
//! event store and its outbox hold afterwards.

use std::net::SocketAddr;
use std::time::Duration;

use kausal_contracts::ledger::{
    AccountBalance, EntryPosted, IDEMPOTENT_REPLAYED_HEADER, LEDGER_ENTRIES_TOPIC, MAX_BODY_BYTES,
    PostEntryResponse,
};
use kausal_core::{SpanId, TraceId, TraceParent};
use kausal_eventsource::names::span as store_span;
use kausal_eventsource::{EventStore, EventStoreMetrics};
use kausal_http::header;
use kausal_ledger::http::{ApiState, serve};
use kausal_ledger::{Ledger, names};
use kausal_store::testing::{self, TestDatabase};
use kausal_store::{Direction, GlobalCursor, Store};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// A refused request: key, body, other headers; the status and a part of
/// the message expected.
type BadCase<'a> = (
    Option<&'a str>,
    String,
    Vec<(&'a str, &'a str)>,
    StatusCode,
    &'a str,
);

/// The API on one backend's database.
struct Api {
    label: &'static str,
    addr: SocketAddr,
    store: Store,
    client: reqwest::Client,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

/// An answer: status, headers, body text.
struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {}", self.status, self.text))
    }

    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {}", self.text))
            .to_owned()
    }

    fn posted(&self) -> PostEntryResponse {
        assert_eq!(self.status, StatusCode::CREATED, "{}", self.text);
        serde_json::from_str(&self.text).expect("a PostEntryResponse")
    }
}

impl Api {
    async fn start(db: &TestDatabase, max_conflict_retries: u32) -> Self {
        let store = testing::connect(db).await.expect(db.label);
        let registry = kausal_telemetry::Metrics::new();
        let events = EventStore::new(store.clone(), EventStoreMetrics::register(&registry));
        let ledger = Ledger::new(events).with_max_conflict_retries(max_conflict_retries);
        let shutdown = CancellationToken::new();
        let (addr, server) = serve(
            "127.0.0.1:0".parse().expect("addr"),
            ApiState { ledger },
            shutdown.clone().cancelled_owned(),
        )
        .await
        .expect("serve");
        Self {
            label: db.label,
            addr,
            store,
            client: reqwest::Client::new(),
            shutdown,
            server,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.server.await.expect("server task");
        self.store.close().await;
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` to /v1/entries with these headers (the key first, if
    /// any).
    async fn post(&self, key: Option<&str>, body: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self
            .client
            .post(self.url("/v1/entries"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(key) = key {
            request = request.header(header::IDEMPOTENCY_KEY, key);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        answer(request.send().await.expect(self.label)).await
    }

    async fn get(&self, path: &str) -> Answer {
        answer(
            self.client
                .get(self.url(path))
                .send()
                .await
                .expect(self.label),
        )
        .await
    }

    async fn balance(&self, account: &str) -> AccountBalance {
        let got = self.get(&format!("/v1/accounts/{account}")).await;
        assert_eq!(got.status, StatusCode::OK, "{}: {}", self.label, got.text);
        serde_json::from_str(&got.text).expect("an AccountBalance")
    }

    /// Every event committed in the store.
    async fn event_count(&self) -> i64 {
        self.store
            .events_after(GlobalCursor::START)
            .await
            .expect(self.label)
    }

    async fn outbox(&self) -> Vec<kausal_store::PendingOutbox> {
        self.store.outbox_pending(1_000).await.expect(self.label)
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        text: response.text().await.expect("body"),
    }
}

/// The API on a fresh database of every configured backend.
async fn each_backend(test: impl AsyncFn(&TestDatabase, Api)) {
    for db in testing::databases().await.expect("test databases") {
        let api = Api::start(&db, kausal_eventsource::repository::DEFAULT_MAX_RETRIES).await;
        test(&db, api).await;
    }
}

/// A balanced entry of `amount` minor units from `debit` to `credit`.
fn entry(debit: &str, credit: &str, amount: u64) -> String {
    json!({
        "description": "test entry",
        "currency": "EUR",
        "legs": [
            {"account": debit, "direction": "debit", "amount": amount},
            {"account": credit, "direction": "credit", "amount": amount},
        ],
    })
    .to_string()
}

fn new_key() -> String {
    kausal_telemetry::ids::new_event_id().to_string()
}

fn caller_context() -> TraceParent {
    let bytes = kausal_telemetry::ids::new_event_id().as_uuid().into_bytes();
    let mut span = [0u8; 8];
    span.copy_from_slice(&bytes[8..]);
    span[0] |= 1;
    TraceParent::new(
        TraceId::from_bytes(bytes).expect("non-zero"),
        SpanId::from_bytes(span).expect("non-zero"),
        true,
    )
}

#[tokio::test]
async fn a_balanced_entry_is_posted_and_moves_both_balances() {
    each_backend(async |_, api| {
        let label = api.label;
        let body = json!({
            "description": "sale of ord-1",
            "currency": "EUR",
            "order_id": "ord-1",
            "legs": [
                {"account": "cash", "direction": "debit", "amount": 1250},
                {"account": "revenue", "direction": "credit", "amount": 1000},
                {"account": "vat:payable", "direction": "credit", "amount": 250},
            ],
        })
        .to_string();
        let first = api.post(Some(&new_key()), &body, &[]).await;
        let posted = first.posted();
        assert!(
            !posted.entry_id.is_empty(),
            "{label}: an entry id is generated"
        );
        let accounts: Vec<(&str, i64)> = posted
            .accounts
            .iter()
            .map(|a| (a.account.as_str(), a.version))
            .collect();
        assert_eq!(
            accounts,
            [("cash", 1), ("revenue", 1), ("vat:payable", 1)],
            "{label}"
        );
        // EntryPosted, three LegPosted; the idempotency record is not one.
        assert_eq!(posted.event_ids.len(), 4, "{label}");
        assert_eq!(api.event_count().await, 5, "{label}: 4 + the key's record");
        assert_eq!(
            first.headers[header::CORRELATION_ID]
                .to_str()
                .expect("ascii"),
            posted.correlation_id,
            "{label}: the generated correlation id is echoed"
        );

        let cash = api.balance("cash").await;
        assert_eq!(
            (cash.debits, cash.credits, cash.balance, cash.version),
            (1250, 0, 1250, 1),
            "{label}"
        );
        assert_eq!(cash.currency, "EUR");
        assert_eq!(api.balance("revenue").await.balance, -1000, "{label}");
        assert_eq!(api.balance("vat:payable").await.balance, -250, "{label}");

        // A second entry moves cash again, to version 2.
        let second = api
            .post(Some(&new_key()), &entry("bank", "cash", 1000), &[])
            .await
            .posted();
        let cash_after = second
            .accounts
            .iter()
            .find(|a| a.account == "cash")
            .expect("cash");
        assert_eq!(cash_after.version, 2, "{label}");
        let cash = api.balance("cash").await;
        assert_eq!((cash.balance, cash.version, cash.postings), (250, 2, 2));

        // The ids answered are the ids stored.
        let stored = api
            .store
            .read_stream("LedgerAccount-cash", 1, 10, Direction::Forward)
            .await
            .expect(label);
        assert_eq!(stored.len(), 2, "{label}");
        assert!(posted.event_ids.contains(&stored[0].event_id.to_string()));
        assert!(second.event_ids.contains(&stored[1].event_id.to_string()));
        assert_eq!(stored[0].event_type, "LegPosted");

        let unknown = api.get("/v1/accounts/nobody").await;
        assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{label}");
        assert!(unknown.error().contains("account nobody has no postings"));
        let bad = api.get("/v1/accounts/a%20b").await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{label}");
        assert!(bad.error().contains("is not an id"), "{}", bad.text);
        let long = api.get(&format!("/v1/accounts/{}", "x".repeat(65))).await;
        assert_eq!(long.status, StatusCode::BAD_REQUEST, "{label}");

        let openapi = api.get("/openapi.yaml").await;
        assert_eq!(openapi.status, StatusCode::OK);
        assert!(openapi.text.contains("/v1/entries:"), "{label}");
        api.stop().await;
    })
    .await;
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_message_and_write_nothing() {
    each_backend(async |_, api| {
        let label = api.label;
        let legs = |legs: Value| {
            json!({"description": "d", "currency": "EUR", "legs": legs}).to_string()
        };
        let seventeen: Vec<Value> = (0..17)
            .map(|i| json!({"account": format!("a{i}"), "direction": if i == 0 { "credit" } else { "debit" }, "amount": if i == 0 { 16 } else { 1 }}))
            .collect();
        let key = new_key();
        let key = key.as_str();
        let long_correlation = "c".repeat(300);
        let long_key = "k".repeat(256);
        let good = entry("cash", "bank", 5);
        let cases: Vec<BadCase> = vec![
            (None, good.clone(), vec![], StatusCode::BAD_REQUEST, "Idempotency-Key header is required"),
            (Some("has space"), good.clone(), vec![], StatusCode::BAD_REQUEST, "visible ASCII without spaces"),
            (Some(long_key.as_str()), good.clone(), vec![], StatusCode::BAD_REQUEST, "1 to 255 characters"),
            (Some(key), "{".into(), vec![], StatusCode::BAD_REQUEST, "invalid entry JSON"),
            (Some(key), "[]".into(), vec![], StatusCode::BAD_REQUEST, "invalid entry JSON"),
            (
                Some(key),
                json!({"description": "d", "currency": "EUR", "legs": [], "memo": 1}).to_string(),
                vec![],
                StatusCode::BAD_REQUEST,
                "unknown field `memo`",
            ),
            (
                Some(key),
                legs(json!([{"account": "a", "direction": "debit", "amount": 12.5}, {"account": "b", "direction": "credit", "amount": 12.5}])),
                vec![],
                StatusCode::BAD_REQUEST,
                "amount 12.5 is not an integer",
            ),
            (
                Some(key),
                legs(json!([{"account": "a", "direction": "debit", "amount": -5}, {"account": "b", "direction": "credit", "amount": 5}])),
                vec![],
                StatusCode::BAD_REQUEST,
                "amount -5 is negative",
            ),
            (
                Some(key),
                legs(json!([{"account": "a", "direction": "debit", "amount": 0}, {"account": "b", "direction": "credit", "amount": 0}])),
                vec![],
                StatusCode::BAD_REQUEST,
                "legs[0].amount must be 1",
            ),
            (
                Some(key),
                legs(json!([{"account": "a", "direction": "debit", "amount": 5}, {"account": "b", "direction": "credit", "amount": 4}])),
                vec![],
                StatusCode::BAD_REQUEST,
                "does not balance: debits sum to 5 and credits to 4",
            ),
            (
                Some(key),
                legs(json!([{"account": "a", "direction": "debit", "amount": 5}])),
                vec![],
                StatusCode::BAD_REQUEST,
                "at least one debit leg and one credit leg",
            ),
            (Some(key), legs(Value::Array(seventeen)), vec![], StatusCode::BAD_REQUEST, "at most 16 legs"),
            (
                Some(key),
                json!({"description": "d", "currency": "euro", "legs": []}).to_string(),
                vec![],
                StatusCode::BAD_REQUEST,
                "3-letter ISO 4217",
            ),
            (Some(key), entry("a/b", "c", 1), vec![], StatusCode::BAD_REQUEST, "account \"a/b\" is not an id"),
            (
                Some(key),
                good.clone(),
                vec![(header::CAUSATION_ID, "not-a-uuid")],
                StatusCode::BAD_REQUEST,
                "X-Causation-ID must be the event-id",
            ),
            (
                Some(key),
                good.clone(),
                vec![(header::CORRELATION_ID, long_correlation.as_str())],
                StatusCode::BAD_REQUEST,
                "X-Correlation-ID is not usable",
            ),
            (
                Some(key),
                " ".repeat(MAX_BODY_BYTES + 1),
                vec![],
                StatusCode::PAYLOAD_TOO_LARGE,
                "larger than 65536 bytes",
            ),
        ];
        for (key, body, headers, status, part) in &cases {
            let got = api.post(*key, body, headers).await;
            assert_eq!(got.status, *status, "{label} {part}: {}", got.text);
            let message = got.error();
            assert!(message.contains(part), "{label}: {part:?} not in {message:?}");
        }
        assert_eq!(api.event_count().await, 0, "{label}: nothing written");

        // An account keeps its currency: 422, and nothing more written.
        api.post(Some(&new_key()), &entry("cash", "bank", 5), &[])
            .await
            .posted();
        let written = api.event_count().await;
        let usd = entry("cash", "bank", 5).replace("EUR", "USD");
        let refused = api.post(Some(&new_key()), &usd, &[]).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{label}");
        assert!(refused.error().contains("holds EUR, not USD"), "{}", refused.text);
        assert_eq!(api.event_count().await, written, "{label}");
        assert_eq!(api.outbox().await.len(), 1, "{label}");
        api.stop().await;
    })
    .await;
}

/// A body without Content-Length (chunked) is cut at the limit too: a 413,
/// not a 400 and not a read of the whole body.
#[tokio::test]
async fn a_chunked_body_over_the_limit_is_a_413() {
    each_backend(async |_, api| {
        let mut socket = tokio::net::TcpStream::connect(api.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /v1/entries HTTP/1.1\r\nHost: {}\r\n{}: {}\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            api.addr,
            header::IDEMPOTENCY_KEY,
            new_key()
        );
        socket.write_all(head.as_bytes()).await.expect("head");
        let chunk = format!("2000\r\n{}\r\n", " ".repeat(0x2000));
        // 9 × 8 KiB: past the 64 KiB limit. The server may answer and close
        // before the last chunk; the answer is what counts.
        for _ in 0..9 {
            if socket.write_all(chunk.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = socket.write_all(b"0\r\n\r\n").await;
        let mut answer = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), socket.read_to_end(&mut answer)).await;
        let answer = String::from_utf8_lossy(&answer);
        assert!(
            answer.starts_with("HTTP/1.1 413"),
            "{}: {answer}",
            api.label
        );
        assert!(answer.contains("larger than 65536 bytes"), "{answer}");
        assert_eq!(api.event_count().await, 0);
        api.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_repeated_key_gets_the_first_answer_and_writes_nothing_even_after_a_restart() {
    each_backend(async |db, api| {
        let label = api.label;
        let key = new_key();
        let body = json!({
            "description": "refund",
            "currency": "EUR",
            "legs": [
                {"account": "revenue", "direction": "debit", "amount": 700},
                {"account": "cash", "direction": "credit", "amount": 700},
            ],
        });
        let first = api
            .post(
                Some(&key),
                &body.to_string(),
                &[(header::CORRELATION_ID, "corr-first")],
            )
            .await;
        let posted = first.posted();
        assert!(first.headers.get(IDEMPOTENT_REPLAYED_HEADER).is_none());
        let written = api.event_count().await;

        // The same request (other whitespace, another correlation id): the
        // first answer, byte for byte, and nothing written.
        let pretty = serde_json::to_string_pretty(&body).expect("json");
        let again = api
            .post(
                Some(&key),
                &pretty,
                &[(header::CORRELATION_ID, "corr-second")],
            )
            .await;
        assert_eq!(again.status, first.status, "{label}");
        assert_eq!(again.text, first.text, "{label}: the first body");
        assert_eq!(again.headers[IDEMPOTENT_REPLAYED_HEADER], "true");
        assert_eq!(again.headers[header::CORRELATION_ID], "corr-first");
        assert_eq!(api.event_count().await, written, "{label}");
        assert_eq!(api.balance("cash").await.balance, -700, "{label}: once");

        // Another body under the key: 409, nothing written.
        let other = api
            .post(Some(&key), &entry("revenue", "cash", 701), &[])
            .await;
        assert_eq!(other.status, StatusCode::CONFLICT, "{label}");
        assert!(
            other
                .error()
                .contains("first used with a different request body"),
            "{}",
            other.text
        );
        // The entry's id under another key: 409, nothing written.
        let named = json!({"entry_id": posted.entry_id, "description": "x", "currency": "EUR",
            "legs": [{"account": "a", "direction": "debit", "amount": 1},
                     {"account": "b", "direction": "credit", "amount": 1}]});
        let reused = api.post(Some(&new_key()), &named.to_string(), &[]).await;
        assert_eq!(reused.status, StatusCode::CONFLICT, "{label}");
        assert!(
            reused.error().contains("is already posted"),
            "{}",
            reused.text
        );
        assert_eq!(api.event_count().await, written, "{label}");

        // A restarted service (new pool, new server) still knows the key.
        api.stop().await;
        let api = Api::start(db, 10).await;
        let after_restart = api.post(Some(&key), &body.to_string(), &[]).await;
        assert_eq!(after_restart.status, StatusCode::CREATED, "{label}");
        assert_eq!(after_restart.text, first.text, "{label}");
        assert_eq!(api.event_count().await, written, "{label}");
        api.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_requests_at_once_post_one_entry() {
    each_backend(async |_, api| {
        let label = api.label;
        for round in 0..5 {
            let key = new_key();
            let body = entry("cash", "sales", 100);
            let answers =
                futures::future::join_all((0..4).map(|_| api.post(Some(&key), &body, &[]))).await;
            for answer in &answers {
                assert_eq!(
                    answer.status,
                    StatusCode::CREATED,
                    "{label}: {}",
                    answer.text
                );
                assert_eq!(
                    answer.text, answers[0].text,
                    "{label} round {round}: one answer"
                );
            }
            let replayed = answers
                .iter()
                .filter(|a| a.headers.get(IDEMPOTENT_REPLAYED_HEADER).is_some())
                .count();
            assert_eq!(
                replayed, 3,
                "{label} round {round}: one posted, three replayed"
            );
        }
        assert_eq!(
            api.outbox().await.len(),
            5,
            "{label}: one EntryPosted per key"
        );
        let cash = api.balance("cash").await;
        assert_eq!((cash.balance, cash.version), (500, 5), "{label}");
        api.stop().await;
    })
    .await;
}

/// Entries racing for one account all land: each conflict means another
/// entry committed in between, so with 8 writers nobody needs more than 7
/// of the 10 retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_entries_on_one_account_all_land() {
    each_backend(async |_, api| {
        let label = api.label;
        let bodies: Vec<String> = (1..=8)
            .map(|i| entry("shared", &format!("customer-{i}"), i))
            .collect();
        let keys: Vec<String> = bodies.iter().map(|_| new_key()).collect();
        let answers = futures::future::join_all(
            bodies
                .iter()
                .zip(&keys)
                .map(|(body, key)| api.post(Some(key), body, &[])),
        )
        .await;
        for answer in &answers {
            assert_eq!(
                answer.status,
                StatusCode::CREATED,
                "{label}: {}",
                answer.text
            );
        }
        let shared = api.balance("shared").await;
        assert_eq!(
            (shared.balance, shared.version, shared.postings),
            ((1..=8).sum::<i64>(), 8, 8),
            "{label}"
        );
        let mut versions: Vec<i64> = answers
            .iter()
            .map(|a| {
                a.posted()
                    .accounts
                    .iter()
                    .find(|v| v.account == "shared")
                    .expect("shared")
                    .version
            })
            .collect();
        versions.sort_unstable();
        assert_eq!(versions, (1..=8).collect::<Vec<_>>(), "{label}");
        assert_eq!(api.outbox().await.len(), 8, "{label}");
        api.stop().await;
    })
    .await;
}

#[tokio::test]
async fn entry_posted_goes_to_the_outbox_with_the_callers_ids() {
    each_backend(async |_, api| {
        let label = api.label;
        let caller = caller_context();
        let cause = kausal_telemetry::ids::new_event_id();
        let body = json!({
            "entry_id": "ent-42",
            "description": "capture ord-42",
            "currency": "USD",
            "order_id": "ord-42",
            "legs": [
                {"account": "receivable", "direction": "debit", "amount": 999},
                {"account": "sales", "direction": "credit", "amount": 999},
            ],
        })
        .to_string();
        let posted = api
            .post(
                Some(&new_key()),
                &body,
                &[
                    (header::TRACEPARENT, &caller.to_string()),
                    (header::CORRELATION_ID, "corr-ord-42"),
                    (header::CAUSATION_ID, &cause.to_string()),
                ],
            )
            .await
            .posted();
        assert_eq!(posted.entry_id, "ent-42");
        assert_eq!(posted.correlation_id, "corr-ord-42");

        let outbox = api.outbox().await;
        assert_eq!(outbox.len(), 1, "{label}: one row per entry, none per leg");
        let row = &outbox[0];
        assert_eq!(row.topic, LEDGER_ENTRIES_TOPIC);
        assert_eq!(row.key.as_deref(), Some("ent-42"));
        let event = &row.event;
        assert_eq!(event.stream_id, "LedgerEntry-ent-42");
        assert_eq!(event.event_type, "EntryPosted");
        assert_eq!(event.event_id.to_string(), posted.event_ids[0]);
        let payload: EntryPosted = serde_json::from_str(&event.payload).expect("EntryPosted");
        assert_eq!(payload.entry_id, "ent-42");
        assert_eq!(payload.currency, "USD");
        assert_eq!(payload.order_id.as_deref(), Some("ord-42"));
        assert_eq!(payload.correlation_id, "corr-ord-42");
        assert_eq!(payload.legs.len(), 2);
        assert_eq!(payload.legs[0].amount, 999);

        // Every event of the entry carries the caller's ids and a context
        // in the caller's trace (the append span's, not the caller's own).
        let mut stored = Vec::new();
        for stream in [
            "LedgerEntry-ent-42",
            "LedgerAccount-receivable",
            "LedgerAccount-sales",
        ] {
            stored.extend(
                api.store
                    .read_stream(stream, 1, 10, Direction::Forward)
                    .await
                    .expect(label),
            );
        }
        let stored_ids: Vec<String> = stored.iter().map(|e| e.event_id.to_string()).collect();
        assert_eq!(
            stored_ids, posted.event_ids,
            "{label}: the ids answered, in order"
        );
        for event in &stored {
            assert_eq!(event.correlation_id.as_str(), "corr-ord-42");
            assert_eq!(event.causation_id, Some(cause));
            let tp = event.traceparent.expect("traceparent");
            assert_eq!(tp.trace_id, caller.trace_id, "{label}");
            assert_ne!(tp.parent_id, caller.parent_id, "{label}");
        }
        api.stop().await;
    })
    .await;
}

/// The SERVER span continues the caller's trace; the store's append span
/// is its child, and the events carry the append span's context.
#[tokio::test]
async fn the_server_span_continues_the_callers_trace() {
    let capture = kausal_telemetry::testing::SpanCapture::install();
    each_backend(async |_, api| {
        let label = api.label;
        let caller = caller_context();
        let posted = api
            .post(
                Some(&new_key()),
                &entry("cash", "bank", 3),
                &[(header::TRACEPARENT, &caller.to_string())],
            )
            .await
            .posted();
        let spans = capture.in_trace(&caller.trace_id.to_string());
        let server: Vec<_> = spans
            .iter()
            .filter(|s| s.name == names::post_entries_span())
            .collect();
        assert_eq!(server.len(), 1, "{label}: {spans:#?}");
        let server = server[0];
        assert_eq!(server.kind, opentelemetry::trace::SpanKind::Server);
        assert_eq!(
            server.parent_span_id.as_deref(),
            Some(caller.parent_id.to_string().as_str())
        );
        assert_eq!(
            server
                .attribute(kausal_telemetry::spans::attr::HTTP_ROUTE)
                .as_deref(),
            Some("/v1/entries")
        );
        assert_eq!(
            server
                .attribute(kausal_telemetry::spans::attr::HTTP_RESPONSE_STATUS_CODE)
                .as_deref(),
            Some("201")
        );
        assert_eq!(
            server.attribute(kausal_telemetry::spans::attr::CONVERSATION_ID),
            Some(posted.correlation_id.clone())
        );
        let appends: Vec<_> = spans
            .iter()
            .filter(|s| s.name == store_span::APPEND_EVENTS)
            .collect();
        assert_eq!(appends.len(), 1, "{label}: one transaction");
        let append = appends[0];
        assert_eq!(
            append.parent_span_id.as_deref(),
            Some(server.span_id.as_str())
        );
        assert_eq!(
            append
                .attribute(kausal_eventsource::names::attr::EVENT_COUNT)
                .as_deref(),
            Some("4"),
            "{label}: EntryPosted, two legs, the key's record"
        );
        let types = append
            .attribute(kausal_eventsource::names::attr::AGGREGATE_TYPE)
            .expect("aggregate types");
        assert!(
            types.contains("LedgerAccount") && types.contains("LedgerEntry"),
            "{label}: {types}"
        );
        let stored = api
            .store
            .read_stream("LedgerAccount-cash", 1, 1, Direction::Forward)
            .await
            .expect(label);
        let tp = stored[0].traceparent.expect("traceparent");
        assert_eq!(tp.parent_id.to_string(), append.span_id, "{label}");
        api.stop().await;
    })
    .await;
}

/// Contention past the retry budget is a 503 with Retry-After, and writes
/// nothing (PostgreSQL, where another transaction can hold a version
/// open: deterministic, no timing). The request loads the account at
/// version 0 while an open transaction has inserted version 1; its append
/// waits on the unique index, then conflicts when that commits.
#[tokio::test]
async fn contention_past_the_retry_budget_is_a_503_with_retry_after() {
    let db = testing::postgres().await;
    let api = Api::start(&db, 0).await;
    let mut raw = sqlx::AnyConnection::connect(&db.url)
        .await
        .expect("a second connection");
    let raw_pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut raw)
        .await
        .expect("pid");
    let mut open = raw.begin().await.expect("begin");
    sqlx::query(
        "INSERT INTO event_store_events (stream_id, stream_version, event_id, event_type, \
         event_version, payload, correlation_id, recorded_at_ms) \
         VALUES ('LedgerAccount-hot', 1, $1, 'LegPosted', 1, $2, 'corr-raw', 1)",
    )
    .bind(kausal_telemetry::ids::new_event_id().to_string())
    .bind(
        json!({"type": "LegPosted", "entry_id": "raw", "direction": "debit", "amount": 1,
               "currency": "EUR"})
        .to_string(),
    )
    .execute(&mut *open)
    .await
    .expect("insert in the open transaction");

    let request = {
        let client = api.client.clone();
        let url = api.url("/v1/entries");
        tokio::spawn(async move {
            answer(
                client
                    .post(url)
                    .header(header::IDEMPOTENCY_KEY, "contended-1")
                    .body(entry("hot", "cold", 5))
                    .send()
                    .await
                    .expect("send"),
            )
            .await
        })
    };
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            )
            .bind(raw_pid)
            .fetch_one(api.store.pool())
            .await
            .expect("blocked sessions");
            if waiting > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the entry's append waits on the open transaction within 30 s");
    open.commit().await.expect("commit the other writer");

    let refused = request.await.expect("request task");
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.text
    );
    assert_eq!(refused.headers[reqwest::header::RETRY_AFTER], "1");
    assert!(
        refused.error().contains("kept changing"),
        "{}",
        refused.text
    );
    assert!(
        refused.error().contains("same Idempotency-Key"),
        "{}",
        refused.text
    );
    assert_eq!(api.event_count().await, 1, "only the other writer's event");
    assert!(api.outbox().await.is_empty());

    // Retrying with the same key now succeeds (nothing was stored for it).
    let retried = api
        .post(Some("contended-1"), &entry("hot", "cold", 5), &[])
        .await;
    let posted = retried.posted();
    let hot = posted
        .accounts
        .iter()
        .find(|a| a.account == "hot")
        .expect("hot");
    assert_eq!(hot.version, 2);
    raw.close().await.expect("close");
    api.stop().await;
}
