"""The seeds' Python pipeline, rewritten for the benchmarks: seed 000's
order producer and payment consumer with confluent-kafka and the
OpenTelemetry SDK, as a Python team would run them in production, minus the
seed's `time.sleep(2)` per payment.

What it does per order, like the seed (and like Kausal's payment service):

- producer: idempotent (`enable.idempotence`, `acks=all`), a PRODUCER span
  `send <topic>` per event, W3C `traceparent` injected into the Kafka
  headers together with the Kausal header set (DESIGN §4: event-id UUIDv7,
  event-type, event-version, correlation-id, causation-id, source-service,
  content-type), so the Rust services consume these events as their own;
- consumer: a consumer group with auto-commit off; per record the trace
  context is extracted from the headers and a CONSUMER span `process
  <topic>` runs in it (parent + link); the charge is retried with
  exponential backoff and jitter (3 attempts); a record that still fails,
  or cannot be decoded, goes to the dead-letter topic with its original
  key, value and headers plus the `dlq-*` headers; a `PaymentProcessed`
  (or `PaymentFailed` when declined) is produced to `payments` under a
  PRODUCER span and its delivery awaited; only then is the offset
  committed; JSON log lines carry traceId, spanId and correlationId.

Usage:

    seed_pipeline.py produce --bootstrap HOST:PORT --count N [--topic orders]
    seed_pipeline.py consume --bootstrap HOST:PORT --count N [--orders-topic orders]
                             [--group G] [--failure-rate 0.2] [--decline-rate 0.05]

`consume` stops once N records were handled (paid, declined or
dead-lettered), commits, and prints one JSON line: events, wall seconds,
process CPU seconds, events/s, events per CPU-second.

Spans are exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set
(opentelemetry-exporter-otlp-proto-http), otherwise created and dropped.
Logs go to --log-file (default /dev/null): the point is that the work of
formatting and writing them is done.
"""

import time

T_START = time.monotonic()
CPU_START = time.process_time()

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import secrets  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402

from confluent_kafka import Consumer, KafkaException, Producer  # noqa: E402
from confluent_kafka.admin import AdminClient, NewTopic  # noqa: E402
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: E402
from opentelemetry.trace import Link, SpanKind, Status, StatusCode  # noqa: E402
from opentelemetry.trace.propagation.tracecontext import (  # noqa: E402
    TraceContextTextMapPropagator,
)

W3C = TraceContextTextMapPropagator()
LOG = logging.getLogger("seed")


# --- telemetry setup -------------------------------------------------------

def setup_tracing(service):
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider, trace.get_tracer(service)


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the fields of DESIGN §6."""

    def __init__(self, service):
        super().__init__()
        self.service = service

    def format(self, record):
        ctx = trace.get_current_span().get_span_context()
        line = {
            "timestamp": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "service": self.service,
            "message": record.getMessage(),
            "traceId": format(ctx.trace_id, "032x") if ctx.is_valid else None,
            "spanId": format(ctx.span_id, "016x") if ctx.is_valid else None,
        }
        line.update(getattr(record, "fields", {}))
        return json.dumps(line)


def setup_logging(service, path):
    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter(service))
    LOG.handlers[:] = [handler]
    LOG.setLevel(logging.INFO)
    LOG.propagate = False


def log(level, message, **fields):
    LOG.log(level, message, extra={"fields": fields})


# --- the event contract (DESIGN §4) ---------------------------------------

def uuid7():
    """A time-ordered UUIDv7 (Python 3.11 has none)."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(secrets.token_bytes(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 68) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=value))


def now_rfc3339():
    return (
        datetime.datetime.now(datetime.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def event_headers(event_type, correlation_id, source, causation_id=None):
    """Kausal headers plus the current span's W3C context."""
    carrier = {}
    W3C.inject(carrier)
    headers = dict(carrier)
    headers.update({
        "event-id": uuid7(),
        "event-type": event_type,
        "event-version": "1",
        "correlation-id": correlation_id,
        "source-service": source,
        "content-type": "application/json",
    })
    if causation_id:
        headers["causation-id"] = causation_id
    return headers


def send_attributes(span, topic, key, event_id, correlation_id):
    span.set_attribute("messaging.system", "kafka")
    span.set_attribute("messaging.operation.name", "send")
    span.set_attribute("messaging.operation.type", "send")
    span.set_attribute("messaging.destination.name", topic)
    span.set_attribute("messaging.kafka.message.key", key)
    span.set_attribute("messaging.message.id", event_id)
    span.set_attribute("messaging.message.conversation_id", correlation_id)


def ensure_topics(bootstrap, topics, partitions):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics]
    )
    for topic, future in futures.items():
        try:
            future.result(30)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e) and "already exists" not in str(e):
                raise


def producer_config(bootstrap):
    return {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"}


# --- order producer (seed 000's order service) ----------------------------

def produce(args):
    service = "order-service"
    provider, tracer = setup_tracing(service)
    setup_logging(service, args.log_file)
    ensure_topics(args.bootstrap, [args.topic], args.partitions)
    producer = Producer(producer_config(args.bootstrap))
    failed = []

    def delivered(err, msg):
        if err is not None:
            failed.append(str(err))

    started = time.monotonic()
    for i in range(args.count):
        order_id = f"ord-{secrets.token_hex(6)}"
        order = {
            "order_id": order_id,
            "user_id": f"user-{random.randint(1, 1000)}",
            "amount": round(random.uniform(10, 500), 2),
            "currency": "USD",
            "customer_email": f"customer{i}@example.com",
            "created_at": now_rfc3339(),
        }
        correlation_id = str(uuid.uuid4())
        with tracer.start_as_current_span(f"send {args.topic}", kind=SpanKind.PRODUCER) as span:
            headers = event_headers("OrderPlaced", correlation_id, service)
            send_attributes(span, args.topic, order_id, headers["event-id"], correlation_id)
            while True:
                try:
                    producer.produce(
                        args.topic,
                        key=order_id.encode(),
                        value=json.dumps(order).encode(),
                        headers=[(k, v.encode()) for k, v in headers.items()],
                        on_delivery=delivered,
                    )
                    break
                except BufferError:
                    producer.poll(0.05)
            log(logging.INFO, "Order published", orderId=order_id, correlationId=correlation_id,
                eventId=headers["event-id"], eventType="OrderPlaced")
        producer.poll(0)
    left = producer.flush(60)
    provider.shutdown()
    if left or failed:
        raise SystemExit(f"{left} undelivered, {len(failed)} failed: {failed[:3]}")
    print(json.dumps({"produced": args.count, "seconds": round(time.monotonic() - started, 3)}))


# --- payment consumer (seed 000's payment service) ------------------------

class RetryableError(Exception):
    pass


class FatalError(Exception):
    def __init__(self, error_type, message):
        super().__init__(message)
        self.error_type = error_type


def charge(order, failure_rate, decline_rate):
    """The seed's simulated gateway, without its 2 s sleep."""
    if random.random() < failure_rate:
        raise RetryableError("payment gateway timed out")
    if random.random() < decline_rate:
        return None
    return f"pay-{secrets.token_hex(8)}"


def consume(args):
    service = "payment-service"
    provider, tracer = setup_tracing(service)
    setup_logging(service, args.log_file)
    dlq_topic = args.dlq_topic or f"{args.orders_topic}.dlq"
    ensure_topics(args.bootstrap, [args.orders_topic, args.payments_topic, dlq_topic], args.partitions)
    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    producer = Producer(producer_config(args.bootstrap))
    consumer.subscribe([args.orders_topic])

    def publish(topic, key, value, headers):
        """Produces and waits for the broker's acknowledgement."""
        outcome = []
        producer.produce(topic, key=key, value=value, headers=headers,
                         on_delivery=lambda err, msg: outcome.append(err))
        producer.flush(30)
        if not outcome or outcome[0] is not None:
            raise RetryableError(f"delivery to {topic} failed: {outcome[:1]}")

    handled = paid = declined = dead = retries = 0
    first_at = None
    while handled < args.count:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            log(logging.WARNING, "consumer error", error=str(msg.error()))
            continue
        if first_at is None:
            first_at = time.monotonic()
        t0 = time.monotonic()
        raw_headers = msg.headers() or []
        headers = {}
        for k, v in raw_headers:
            if v is not None:
                try:
                    headers[k] = v.decode()
                except UnicodeDecodeError:
                    pass
        parent = W3C.extract(headers)
        parent_span = trace.get_current_span(parent).get_span_context()
        links = [Link(parent_span)] if parent_span.is_valid else []
        event_id = headers.get("event-id") or str(
            uuid.uuid5(uuid.NAMESPACE_URL, f"{msg.topic()}/{msg.partition()}/{msg.offset()}"))
        correlation_id = headers.get("correlation-id") or event_id
        key = msg.key().decode(errors="replace") if msg.key() else None
        with tracer.start_as_current_span(f"process {msg.topic()}", context=parent,
                                          kind=SpanKind.CONSUMER, links=links) as span:
            span.set_attribute("messaging.system", "kafka")
            span.set_attribute("messaging.operation.name", "process")
            span.set_attribute("messaging.operation.type", "process")
            span.set_attribute("messaging.destination.name", msg.topic())
            span.set_attribute("messaging.destination.partition.id", str(msg.partition()))
            span.set_attribute("messaging.kafka.offset", msg.offset())
            span.set_attribute("messaging.consumer.group.name", args.group)
            span.set_attribute("messaging.message.id", event_id)
            span.set_attribute("messaging.message.conversation_id", correlation_id)
            if key is not None:
                span.set_attribute("messaging.kafka.message.key", key)
            log(logging.INFO, "Processing order", correlationId=correlation_id, eventId=event_id,
                eventType=headers.get("event-type"), offset=msg.offset())
            attempt = 0
            error = None
            outcome = None
            while True:
                attempt += 1
                try:
                    try:
                        order = json.loads(msg.value())
                        order_id = order["order_id"]
                        amount = float(order["amount"])
                        currency = order["currency"]
                    except (ValueError, TypeError, KeyError) as e:
                        raise FatalError("BadPayload", f"not a valid OrderPlaced: {e}") from e
                    payment_id = charge(order, args.failure_rate, args.decline_rate)
                    if payment_id is not None:
                        event_type, topic_value = "PaymentProcessed", {
                            "order_id": order_id, "payment_id": payment_id, "amount": amount,
                            "currency": currency, "customer_email": order.get("customer_email"),
                            "processed_at": now_rfc3339(),
                        }
                    else:
                        event_type, topic_value = "PaymentFailed", {
                            "order_id": order_id, "reason": "card declined by issuer",
                            "amount": amount, "currency": currency, "failed_at": now_rfc3339(),
                        }
                    with tracer.start_as_current_span(f"send {args.payments_topic}",
                                                      kind=SpanKind.PRODUCER) as send:
                        out = event_headers(event_type, correlation_id, service, causation_id=event_id)
                        send_attributes(send, args.payments_topic, order_id, out["event-id"], correlation_id)
                        publish(args.payments_topic, order_id.encode(), json.dumps(topic_value).encode(),
                                [(k, v.encode()) for k, v in out.items()])
                    outcome = event_type
                    break
                except RetryableError as e:
                    error = ("RetryableError", str(e))
                    span.add_event("retry", {"attempt": attempt, "error": str(e)})
                    if attempt >= args.max_attempts:
                        break
                    retries += 1
                    backoff = args.initial_backoff * (2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
                    log(logging.WARNING, "Payment attempt failed, retrying", correlationId=correlation_id,
                        eventId=event_id, attempt=attempt, error=str(e), backoffMs=round(backoff * 1000))
                    time.sleep(backoff)
                except FatalError as e:
                    error = (e.error_type, str(e))
                    break
            if outcome is None:
                span.set_status(Status(StatusCode.ERROR, error[1]))
                span.set_attribute("error.type", error[0])
                with tracer.start_as_current_span(f"send {dlq_topic}", kind=SpanKind.PRODUCER):
                    ts_type, ts = msg.timestamp()
                    dlq_headers = list(raw_headers) + [
                        (name, value.encode()) for name, value in [
                            ("dlq-original-topic", msg.topic()),
                            ("dlq-original-partition", str(msg.partition())),
                            ("dlq-original-offset", str(msg.offset())),
                            ("dlq-original-timestamp", str(ts) if ts_type else ""),
                            ("dlq-consumer-group", args.group),
                            ("dlq-service", service),
                            ("dlq-error-type", error[0]),
                            ("dlq-error-message", error[1][:4096]),
                            ("dlq-attempts", str(attempt)),
                            ("dlq-failed-at", now_rfc3339()),
                        ]
                    ]
                    publish(dlq_topic, msg.key(), msg.value(), dlq_headers)
                dead += 1
                log(logging.ERROR, "Order dead-lettered", correlationId=correlation_id, eventId=event_id,
                    error=error[1], errorType=error[0], attempts=attempt)
            else:
                if outcome == "PaymentProcessed":
                    paid += 1
                else:
                    declined += 1
                log(logging.INFO, "Payment processed" if outcome == "PaymentProcessed" else "Payment declined",
                    correlationId=correlation_id, eventId=event_id, eventType=outcome,
                    durationMs=round((time.monotonic() - t0) * 1000, 3))
        # Commit only now: the outcome was acknowledged by the broker.
        consumer.commit(message=msg)
        handled += 1
    consumer.commit(asynchronous=False)
    consumer.close()
    provider.shutdown()
    wall = time.monotonic() - T_START
    cpu = time.process_time()
    steady = time.monotonic() - first_at if first_at else None
    print(json.dumps({
        "events": handled, "paid": paid, "declined": declined, "dead_lettered": dead,
        "retries": retries, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
        "events_per_s": round(handled / wall, 1), "events_per_cpu_s": round(handled / cpu, 1),
        "steady_s": round(steady, 3) if steady else None,
    }), flush=True)


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    pr = sub.add_parser("produce")
    pr.add_argument("--bootstrap", required=True)
    pr.add_argument("--topic", default="orders")
    pr.add_argument("--count", type=int, required=True)
    pr.add_argument("--partitions", type=int, default=3)
    pr.add_argument("--log-file", default=os.devnull)
    co = sub.add_parser("consume")
    co.add_argument("--bootstrap", required=True)
    co.add_argument("--orders-topic", default="orders")
    co.add_argument("--payments-topic", default="payments")
    co.add_argument("--dlq-topic", default=None, help="default <orders-topic>.dlq")
    co.add_argument("--group", default="payment-service-py")
    co.add_argument("--count", type=int, required=True)
    co.add_argument("--partitions", type=int, default=3)
    co.add_argument("--failure-rate", type=float, default=0.2, help="transient gateway failures (seed: 0.2)")
    co.add_argument("--decline-rate", type=float, default=0.05)
    co.add_argument("--max-attempts", type=int, default=3)
    co.add_argument("--initial-backoff", type=float, default=0.1, help="seconds, doubling")
    co.add_argument("--log-file", default=os.devnull)
    args = p.parse_args(argv)
    produce(args) if args.mode == "produce" else consume(args)


if __name__ == "__main__":
    main(sys.argv[1:])
