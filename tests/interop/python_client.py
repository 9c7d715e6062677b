"""A Kafka client nobody on the Kausal team wrote the library for:
confluent-kafka (librdkafka 2.x) from PyPI, used the way the seeds' Python
services use it.

    python_client.py produce BOOTSTRAP TOPIC KEY VALUE_JSON TRACEPARENT
        sends one record whose only header is `traceparent`, prints
        {"partition": p, "offset": o}
    python_client.py consume BOOTSTRAP TOPIC COUNT
        reads COUNT records from the beginning, prints one JSON object per
        record: key, value, headers (UTF-8), and the traceparent this
        consumer would continue with (same trace id, its own span id)
"""

import json
import os
import sys

from confluent_kafka import Consumer, Producer


def produce(bootstrap, topic, key, value, traceparent):
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    result = {}

    def delivered(err, msg):
        if err is not None:
            raise SystemExit(f"delivery failed: {err}")
        result.update(partition=msg.partition(), offset=msg.offset())

    producer.produce(topic, key=key.encode(), value=value.encode(),
                     headers=[("traceparent", traceparent.encode())], on_delivery=delivered)
    producer.flush(30)
    if not result:
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
        parent = headers.get("traceparent") or ""
        parts = parent.split("-")
        continued = None
        if len(parts) == 4:
            continued = f"00-{parts[1]}-{os.urandom(8).hex()}-{parts[3]}"
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
