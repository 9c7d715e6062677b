"""Kafka through confluent-kafka (librdkafka 2.x): topic creation, committed
offsets of a group read with OffsetFetch (no group join), high watermarks,
whole-topic reads, and producing our own orders."""

from __future__ import annotations

import json
import os
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

QUIET = {"log_level": 2}  # critical only: a stopped broker is expected here


def uuid7() -> str:
    ms = time.time_ns() // 1_000_000
    b = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    b[6] = (b[6] & 0x0F) | 0x70
    b[8] = (b[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(b)))


def create_topics(bootstrap: str, topics: list[str], partitions: int, replication: int = 1) -> None:
    """Creates the topics that do not exist yet; `replication` 3 on the
    three-node cluster (min.insync.replicas=2 refuses every acks=all write
    to a topic of one replica), 1 on a single broker."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **QUIET})
    futures = admin.create_topics([NewTopic(t, partitions, replication) for t in topics], request_timeout=30)
    for topic, fut in futures.items():
        try:
            fut.result(60)
        except KafkaException as e:
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise


def partitions_of(client, topic: str, timeout: float = 10) -> list[int]:
    md = client.list_topics(topic, timeout=timeout)
    t = md.topics.get(topic)
    if t is None or t.error is not None or not t.partitions:
        raise RuntimeError(f"topic {topic} unknown to the broker: {t.error if t else 'absent'}")
    return sorted(t.partitions)


class GroupProbe:
    """Committed offsets of a group and the topics' ends, without joining the
    group (OffsetFetch and ListOffsets only)."""

    def __init__(self, bootstrap: str, group: str, topics: list[str]):
        self.group = group
        self.topics = topics
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": group,
            "enable.auto.commit": False, **QUIET,
        })
        self.parts: dict[str, list[int]] = {}

    def snapshot(self, timeout: float = 5) -> dict[tuple[str, int], tuple[int, int]] | None:
        """{(topic, partition): (committed, high)} or None when the broker
        does not answer (e.g. while it is restarting)."""
        try:
            for t in self.topics:
                if t not in self.parts:
                    self.parts[t] = partitions_of(self.consumer, t, timeout)
            tps = [TopicPartition(t, p) for t in self.topics for p in self.parts[t]]
            committed = self.consumer.committed(tps, timeout=timeout)
            out = {}
            for tp in committed:
                if tp.error is not None:
                    return None
                _, high = self.consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=timeout, cached=False)
                out[(tp.topic, tp.partition)] = (max(tp.offset, 0), high)
            return out
        except (KafkaException, RuntimeError):
            return None

    def close(self) -> None:
        try:
            self.consumer.close()
        except (KafkaException, RuntimeError):
            pass


def read_topic(bootstrap: str, topic: str, timeout: float = 600) -> list[dict]:
    """Every record of `topic`, from the beginning to the high watermark at
    the time of the call, as {partition, offset, timestamp, key, value,
    headers (name -> first value, str)}."""
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"reliability-reader-{uuid.uuid4()}",
        "enable.auto.commit": False, "enable.partition.eof": False,
        "fetch.max.bytes": 52428800, **QUIET,
    })
    try:
        parts = partitions_of(c, topic, 30)
        ends = {}
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30, cached=False)
            ends[p] = high
        pending = {p for p in parts if ends[p] > 0}
        if pending:
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        out = []
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic}: partitions {sorted(pending)} not read to their end within {timeout:.0f} s")
            for msg in c.consume(num_messages=2000, timeout=1.0):
                if msg.error():
                    continue
                p, off = msg.partition(), msg.offset()
                if off >= ends[p]:
                    pending.discard(p)
                    continue
                headers = {}
                for k, v in msg.headers() or []:
                    if k not in headers:
                        headers[k] = v.decode("utf-8", "replace") if v is not None else None
                out.append({
                    "partition": p, "offset": off, "timestamp": msg.timestamp()[1],
                    "key": msg.key().decode("utf-8", "replace") if msg.key() else None,
                    "value": msg.value(), "headers": headers,
                })
                if off + 1 >= ends[p]:
                    pending.discard(p)
        return out
    finally:
        c.close()


def json_value(record: dict) -> dict | None:
    try:
        v = json.loads(record["value"]) if record["value"] else None
        return v if isinstance(v, dict) else None
    except ValueError:
        return None


def order_payload(order_id: str) -> bytes:
    return json.dumps({
        "order_id": order_id, "user_id": "user-reliability", "amount": 12.5,
        "currency": "EUR", "customer_email": "reliability@example.com",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }).encode()


def produce_orders(bootstrap: str, topic: str, partition: int, order_ids: list[str]) -> list[int]:
    """Produces OrderPlaced records with the Kausal headers to one explicit
    partition, in order, idempotently; returns their offsets."""
    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "max.in.flight.requests.per.connection": 5, **QUIET,
    })
    offsets: dict[str, int] = {}
    errors: list[str] = []

    def delivered(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            offsets[msg.key().decode()] = msg.offset()

    for oid in order_ids:
        eid = uuid7()
        headers = [
            ("event-id", eid), ("event-type", "OrderPlaced"), ("event-version", "1"),
            ("correlation-id", eid), ("source-service", "reliability-harness"),
            ("content-type", "application/json"),
        ]
        producer.produce(topic, key=oid.encode(), value=order_payload(oid), partition=partition,
                         headers=[(k, v.encode()) for k, v in headers], on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(60)
    if errors or left:
        raise RuntimeError(f"producing {len(order_ids)} orders: {left} undelivered, errors {errors[:3]}")
    return [offsets[o] for o in order_ids]
