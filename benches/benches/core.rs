//! Per-message costs of the Kausal code path, without a broker: header
//! decoding and encoding, traceparent parsing, the child headers of an
//! emitted event, the dead-letter header set, and the consumed record copy.
//!
//! ```text
//! cargo bench -p kausal-bench --bench core
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use kausal_contracts::{OrderPlaced, PaymentProcessed};
use kausal_core::dlq::DeadLetter;
use kausal_core::headers::{self, EventHeaders, RawHeader, RecordPosition};
use kausal_core::{CorrelationId, EventId, TraceParent};
use kausal_kafka::IncomingEvent;
use kausal_kafka::receipt::ReceiptRecord;
use kausal_kafka::runtime::Outcome;
use rdkafka::Timestamp;
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const POSITION: RecordPosition<'static> = RecordPosition {
    topic: "orders",
    partition: 2,
    offset: 123_456,
};

/// A complete Kausal header set, as `EventHeaders::encode` writes it (with
/// a causation id, tracestate and baggage: the largest normal set).
fn full_headers() -> EventHeaders {
    let event_id = EventId::from_parts(1_763_800_000_000, [7; 10]);
    let cause = EventId::from_parts(1_763_799_999_000, [9; 10]);
    let trace = TraceParent::parse(TRACEPARENT).expect("a valid traceparent");
    EventHeaders {
        event_id,
        event_type: Some("PaymentProcessed".to_owned()),
        event_version: Some(1),
        correlation_id: CorrelationId::adopt(cause),
        causation_id: Some(cause),
        source_service: Some("payment-service".to_owned()),
        content_type: Some(headers::CONTENT_TYPE_JSON.to_owned()),
        traceparent: Some(trace),
        tracestate: Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE".to_owned()),
        baggage: Some("userId=alice,tenant=eu-1".to_owned()),
    }
}

fn order() -> OrderPlaced {
    OrderPlaced {
        order_id: "ord-00000001e240".to_owned(),
        user_id: "user-1234".to_owned(),
        amount: 123.45,
        currency: "EUR".to_owned(),
        customer_email: Some("customer123456@example.com".to_owned()),
        created_at: "2026-11-22T10:00:00.000Z".to_owned(),
    }
}

/// The record as librdkafka hands it over: payload, key, Kausal headers.
fn consumed_record() -> OwnedMessage {
    let mut hs = OwnedHeaders::new_with_capacity(10);
    for (name, value) in full_headers().encode() {
        hs = hs.insert(Header {
            key: name,
            value: Some(value.as_bytes()),
        });
    }
    OwnedMessage::new(
        serde_json::to_vec(&order()).ok(),
        Some(b"ord-00000001e240".to_vec()),
        "orders".to_owned(),
        Timestamp::CreateTime(1_763_800_000_000),
        POSITION.partition,
        POSITION.offset,
        Some(hs),
    )
}

fn incoming() -> IncomingEvent {
    IncomingEvent::from_message(&consumed_record())
}

fn header_codec(c: &mut Criterion) {
    let encoded = full_headers().encode();
    let raw: Vec<RawHeader<'_>> = encoded
        .iter()
        .map(|(name, value)| RawHeader {
            name,
            value: Some(value.as_bytes()),
        })
        .collect();
    let mut g = c.benchmark_group("headers");
    g.bench_function("decode full set (10 headers)", |b| {
        b.iter(|| headers::decode(black_box(&raw), black_box(POSITION)))
    });
    g.bench_function("decode plain record (no headers, repaired)", |b| {
        b.iter(|| headers::decode(black_box(&[]), black_box(POSITION)))
    });
    let h = full_headers();
    g.bench_function("EventHeaders::encode full set", |b| {
        b.iter(|| black_box(&h).encode())
    });
    g.bench_function("encode + rdkafka OwnedHeaders (producer path)", |b| {
        b.iter(|| {
            let mut hs = OwnedHeaders::new_with_capacity(12);
            for (name, value) in black_box(&h).encode() {
                hs = hs.insert(Header {
                    key: name,
                    value: Some(value.as_bytes()),
                });
            }
            hs
        })
    });
    g.finish();
}

fn trace_context(c: &mut Criterion) {
    let mut g = c.benchmark_group("traceparent");
    g.bench_function("TraceParent::parse", |b| {
        b.iter(|| TraceParent::parse(black_box(TRACEPARENT)))
    });
    let tp = TraceParent::parse(TRACEPARENT).ok();
    g.bench_function("TraceParent to_string", |b| {
        b.iter(|| black_box(tp).map(|t| t.to_string()))
    });
    g.finish();
}

fn event_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("event");
    let record = consumed_record();
    g.bench_function("IncomingEvent::from_message (copy + decode)", |b| {
        b.iter(|| IncomingEvent::from_message(black_box(&record)))
    });
    let event = incoming();
    g.bench_function("IncomingEvent::child_headers (new ids)", |b| {
        b.iter(|| black_box(&event).child_headers("payment-service", "PaymentProcessed", 1))
    });
    g.bench_function("child_headers + encode", |b| {
        b.iter(|| {
            black_box(&event)
                .child_headers("payment-service", "PaymentProcessed", 1)
                .encode()
        })
    });
    g.bench_function("payload: OrderPlaced from JSON", |b| {
        b.iter(|| black_box(&event).json::<OrderPlaced>())
    });
    let processed = PaymentProcessed {
        order_id: "ord-00000001e240".to_owned(),
        payment_id: "pay-0123456789abcdef-ord-00000001e240".to_owned(),
        amount: 123.45,
        currency: "EUR".to_owned(),
        customer_email: Some("customer123456@example.com".to_owned()),
        processed_at: "2026-11-22T10:00:00.012Z".to_owned(),
    };
    g.bench_function("payload: PaymentProcessed to JSON", |b| {
        b.iter(|| serde_json::to_vec(black_box(&processed)))
    });
    let outcome = Outcome::Processed { attempts: 1 };
    g.bench_function("receipt: ReceiptRecord::new + to_event", |b| {
        b.iter(|| {
            ReceiptRecord::new(
                black_box(&event),
                &outcome,
                "payment-service",
                "payment-service",
                1.25,
            )
            .to_event(&event)
        })
    });
    g.finish();
}

fn dead_letter(c: &mut Criterion) {
    let letter = DeadLetter {
        original_topic: "orders".to_owned(),
        original_partition: 2,
        original_offset: 123_456,
        original_timestamp_ms: Some(1_763_800_000_000),
        consumer_group: "payment-service".to_owned(),
        service: "payment-service".to_owned(),
        error_type: "PaymentGatewayError".to_owned(),
        error_message: "payment gateway timed out".to_owned(),
        attempts: 3,
        failed_at: "2026-11-22T10:00:01.234Z".to_owned(),
    };
    c.bench_function("dlq/DeadLetter::headers", |b| {
        b.iter(|| black_box(&letter).headers())
    });
}

/// What the runtime adds per record when tracing is on: the `process` span
/// with its attributes and link, built from ids already in hand, started
/// and ended; and the same call with tracing off (no provider).
fn spans(c: &mut Criterion) {
    use kausal_telemetry::spans;
    let event = incoming();
    let build =
        |event: &IncomingEvent| kausal_kafka::runtime::process_span(event, "payment-service");
    let mut g = c.benchmark_group("spans");
    spans::set_enabled(false);
    g.bench_function("process span, tracing off", |b| {
        b.iter(|| build(black_box(&event)).end())
    });
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_sampler(opentelemetry_sdk::trace::Sampler::AlwaysOn)
        .build();
    opentelemetry::global::set_tracer_provider(provider);
    spans::set_enabled(true);
    g.bench_function(
        "process span, sampled (12 attributes, link), no export",
        |b| b.iter(|| build(black_box(&event)).end()),
    );
    g.finish();
    spans::set_enabled(false);
}

fn config() -> Criterion {
    // Two shared cores: shorter windows keep the whole run under a minute
    // or two without making the per-call figures meaningless.
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = header_codec, trace_context, event_path, dead_letter, spans
}
criterion_main!(benches);
