"""The per-order count, from the topics after everything drained.

An order's outcome is a `PaymentProcessed` or `PaymentFailed` event on
`payments` (header `event-type`, payload `order_id`) or a dead letter on
`orders.dlq` (the original order's bytes). Then, per order id:

- lost: no outcome at all;
- duplicate effect: more than one DISTINCT outcome event id (header
  `event-id`), or both an outcome event and a dead letter;
- redeliveries: outcome records beyond the distinct event ids, dead letters
  beyond the first of an order, and receipts beyond the first per
  (consumer group, event id) on `kausal.receipts`.

Also counted, not judged: records on `orders` that repeat an event id
already there (a producer's retry without idempotence writes the same
record twice; the payment service then skips it or re-publishes the same
derived outcome id, so it shows as a redelivery, never a duplicate effect).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .kafka_io import json_value

OUTCOME_TYPES = ("PaymentProcessed", "PaymentFailed")


@dataclass
class Count:
    orders: int = 0
    lost: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    redeliveries: int = 0
    outcome_redeliveries: int = 0
    dlq_redeliveries: int = 0
    receipt_redeliveries: int = 0
    paid: int = 0
    declined: int = 0
    dead_lettered: int = 0
    not_on_topic: list[str] = field(default_factory=list)
    unknown_outcomes: list[str] = field(default_factory=list)
    processed_twice: dict[str, int] = field(default_factory=dict)
    order_records_repeated: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.orders} orders: {self.paid} paid, {self.declined} declined, "
                f"{self.dead_lettered} dead-lettered, {len(self.lost)} lost, "
                f"{len(self.duplicate)} duplicate effects; redeliveries {self.redeliveries} "
                f"(outcome records {self.outcome_redeliveries}, dead letters {self.dlq_redeliveries}, "
                f"receipts {self.receipt_redeliveries})")


def order_id_of(record: dict) -> str | None:
    value = json_value(record)
    if value and isinstance(value.get("order_id"), str):
        return value["order_id"]
    return record["key"]


def count(orders: list[dict], payments: list[dict], dead_letters: list[dict],
          receipts: list[dict], placed_in_logs: set[str], payment_group: str,
          sabotage: str | None = None) -> Count:
    c = Count()
    on_topic = {order_id_of(r) for r in orders}
    on_topic.discard(None)
    expected = on_topic | placed_in_logs
    c.orders = len(expected)
    # Acknowledged to the order service (its log says "order placed") but
    # absent from the topic: lost by the broker.
    c.not_on_topic = sorted(placed_in_logs - on_topic)
    order_event_ids = [r["headers"].get("event-id") or f"{r['partition']}/{r['offset']}" for r in orders]
    c.order_records_repeated = len(order_event_ids) - len(set(order_event_ids))
    if c.order_records_repeated:
        c.notes.append(f"{c.order_records_repeated} record(s) on orders repeat an event id already there "
                       f"(written twice by the order service's producer)")

    outcome_ids: dict[str, list[str]] = defaultdict(list)
    outcome_types: dict[str, set[str]] = defaultdict(set)
    for r in payments:
        etype = r["headers"].get("event-type")
        if etype not in OUTCOME_TYPES:
            continue
        oid = order_id_of(r)
        outcome_ids[oid].append(r["headers"].get("event-id") or f"{r['partition']}/{r['offset']}")
        outcome_types[oid].add(etype)
    dlq_count: Counter[str] = Counter(order_id_of(r) for r in dead_letters)

    if sabotage == "drop-outcome":
        # Deliberately forget one order's outcome: the count must report it lost.
        victim = next((o for o in sorted(outcome_ids) if dlq_count[o] == 0), None)
        if victim is not None:
            del outcome_ids[victim]
            c.notes.append(f"SABOTAGE: dropped the outcome of {victim} from the count")

    for oid in sorted(expected):
        ids = outcome_ids.get(oid, [])
        distinct = set(ids)
        dlq = dlq_count.get(oid, 0)
        if not ids and not dlq:
            c.lost.append(oid)
            continue
        if len(distinct) > 1 or (ids and dlq):
            c.duplicate.append(oid)
        c.outcome_redeliveries += len(ids) - len(distinct)
        c.dlq_redeliveries += max(dlq - 1, 0)
        if ids:
            if "PaymentProcessed" in outcome_types[oid]:
                c.paid += 1
            else:
                c.declined += 1
        else:
            c.dead_lettered += 1
    c.unknown_outcomes = sorted((set(outcome_ids) | set(dlq_count)) - expected)

    per_key: Counter[tuple[str, str]] = Counter()
    processed: Counter[str] = Counter()
    for r in receipts:
        v = json_value(r)
        if not v:
            continue
        per_key[(v.get("consumer_group"), v.get("event_id"))] += 1
        if v.get("consumer_group") == payment_group and v.get("outcome") == "processed":
            processed[v.get("event_id")] += 1
    c.receipt_redeliveries = sum(n - 1 for n in per_key.values())
    c.processed_twice = {e: n for e, n in processed.items() if n > 1}
    c.redeliveries = c.outcome_redeliveries + c.dlq_redeliveries + c.receipt_redeliveries
    return c
