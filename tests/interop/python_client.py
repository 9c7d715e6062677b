"""A Kafka client nobody on the Kausal team wrote the library for:
confluent-kafka (librdkafka 2.x) and opentelemetry-sdk from PyPI, used the
way the seeds' Python services use them.

    python_client.py produce BOOTSTRAP TOPIC KEY VALUE_JSON TRACEPARENT
        under the caller's context TRACEPARENT, starts a PRODUCER span
        `send TOPIC` with the OpenTelemetry SDK and sends one record whose
        only header is the `traceparent` the SDK's W3C propagator injects;
        prints {"partition", "offset", "trace_id", "span_id"} (the span's)
    python_client.py consume BOOTSTRAP TOPIC COUNT
        reads COUNT records from the beginning; for each, extracts the
        context with the SDK's propagator and starts a CONSUMER span
        `process TOPIC` in it; prints key, value, headers (UTF-8) and the
        traceparent of that span (`continued_traceparent`)

With OTEL_EXPORTER_OTLP_ENDPOINT set, spans are exported over OTLP/HTTP as
the SDK's exporter does it (OTEL_SERVICE_NAME names the service).
"""

import json
import os
import sys

from confluent_kafka import Consumer, Producer
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROVIDER = TracerProvider()  # service.name from OTEL_SERVICE_NAME
if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
    # As the seeds export: OTLP/HTTP protobuf to OTEL_EXPORTER_OTLP_ENDPOINT
    # (/v1/traces appended), each span as it ends.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    PROVIDER.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(PROVIDER)
TRACER = trace.get_tracer("seed-000-python")
W3C = TraceContextTextMapPropagator()


def produce(bootstrap, topic, key, value, traceparent):
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    result = {}

    def delivered(err, msg):
        if err is not None:
            raise SystemExit(f"delivery failed: {err}")
        result.update(partition=msg.partition(), offset=msg.offset())

    caller = W3C.extract({"traceparent": traceparent})
    with TRACER.start_as_current_span(f"send {topic}", context=caller, kind=SpanKind.PRODUCER) as span:
        carrier = {}
        W3C.inject(carrier)
        producer.produce(topic, key=key.encode(), value=value.encode(),
                         headers=[(k, v.encode()) for k, v in carrier.items()], on_delivery=delivered)
        producer.flush(30)
        ctx = span.get_span_context()
        result.update(trace_id=format(ctx.trace_id, "032x"), span_id=format(ctx.span_id, "016x"))
    if "partition" not in result:
        raise SystemExit("no delivery report within 30 s")
    print(json.dumps(result))


def consume(bootstrap, topic, count):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"python-interop-{os.getpid()}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    consumer.subscribe([topic])
    seen = 0
    while seen < count:
        msg = consumer.poll(30)
        if msg is None:
            raise SystemExit(f"only {seen} of {count} records within 30 s")
        if msg.error():
            continue
        headers = {k: (v.decode("utf-8") if v is not None else None) for k, v in (msg.headers() or [])}
        context = W3C.extract({k: v for k, v in headers.items() if v is not None})
        with TRACER.start_as_current_span(f"process {topic}", context=context, kind=SpanKind.CONSUMER):
            carrier = {}
            W3C.inject(carrier)
        continued = carrier.get("traceparent")
        print(json.dumps({
            "key": msg.key().decode() if msg.key() else None,
            "value": json.loads(msg.value()) if msg.value() else None,
            "headers": headers,
            "continued_traceparent": continued,
        }))
        seen += 1
    consumer.close()


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "produce":
        produce(*sys.argv[2:7])
    elif mode == "consume":
        consume(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode}")
