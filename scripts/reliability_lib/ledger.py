"""The kill-ledger scenario's side of the count (issue 14): the ledger
service's HTTP API, its SQLite outbox as seen from outside, and the
`EntryPosted` records on `ledger.entry.v1` checked against the orders and
their outcomes.

Per order id, from the topics after everything drained:

- an order with a `PaymentProcessed` must have exactly one DISTINCT
  `EntryPosted` event id (header `event-id`) for its order id; the same
  event id published again (the relay killed after the broker acknowledged
  but before it marked the row sent) is a republication, counted, allowed;
- no entry for an order never placed, none for a declined order;
- each entry's amount equals its order's amount in cents;
- an order that ended dead-lettered may or may not have an entry (the post
  may have succeeded before the failure that dead-lettered it): counted.

The balances (`GET /v1/accounts/{id}`) are compared with the sums of the
distinct entries by the scenario (reliability.py).
"""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .counting import order_id_of
from .kafka_io import json_value

TOPIC = "ledger.entry.v1"
MERCHANT = "merchant:kausal-shop"


def get_json(url: str, timeout: float = 5.0) -> tuple[int, dict | None]:
    """(HTTP status, JSON body or None). Raises OSError when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        try:
            body = json.loads(e.read() or b"null")
        except ValueError:
            body = None
        return e.code, body if isinstance(body, dict) else None


def account_url(base: str, account: str) -> str:
    return f"{base}/v1/accounts/{urllib.parse.quote(account, safe=':')}"


def answering(base: str) -> bool:
    """True when the ledger's API answers at all (any HTTP status)."""
    try:
        get_json(account_url(base, MERCHANT), timeout=1.0)
        return True
    except (OSError, ValueError):
        return False


def account(base: str, account_id: str, timeout: float = 10.0) -> dict | None:
    """The account's balance, or None when it has no postings (404)."""
    status, body = get_json(account_url(base, account_id), timeout)
    if status == 404:
        return None
    if status != 200 or body is None:
        raise RuntimeError(f"GET {account_url(base, account_id)}: HTTP {status} {body}")
    return body


def outbox_stats(db: Path) -> tuple[int, list[str]] | None:
    """(outbox rows of ledger.entry.v1, event ids of those not marked sent)
    in the ledger's SQLite store, read only; None when it cannot be read
    (no file yet, locked, another backend)."""
    if not db.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2.0)
        try:
            (total,) = con.execute("SELECT COUNT(*) FROM event_store_outbox WHERE topic = ?",
                                   (TOPIC,)).fetchone()
            unsent = [row[0] for row in con.execute(
                "SELECT e.event_id FROM event_store_outbox o JOIN event_store_events e "
                "ON e.global_position = o.global_position WHERE o.topic = ? AND o.sent_at_ms IS NULL "
                "ORDER BY o.global_position", (TOPIC,))]
            return int(total), unsent
        finally:
            con.close()
    except sqlite3.Error:
        return None


@dataclass
class EntryCount:
    records: int = 0                       # EntryPosted records on the topic
    entries: dict[str, dict] = field(default_factory=dict)   # event id -> first payload
    republished: int = 0                   # records beyond the distinct event ids
    republished_differently: list[str] = field(default_factory=list)  # same id, other payload
    entry_ids_reused: list[str] = field(default_factory=list)  # an entry id under two event ids
    by_order: dict[str, set[str]] = field(default_factory=dict)
    without_order: list[str] = field(default_factory=list)
    paid: int = 0
    paid_without_entry: list[str] = field(default_factory=list)
    several: list[str] = field(default_factory=list)  # any order with two distinct event ids
    unknown_order: list[str] = field(default_factory=list)
    declined_with_entry: list[str] = field(default_factory=list)
    dead_lettered: int = 0
    dead_lettered_with_entry: int = 0
    wrong_amount: list[str] = field(default_factory=list)
    unbalanced: list[str] = field(default_factory=list)
    # Sums over the distinct entries: account -> [debits, credits, postings].
    sums: dict[str, list[int]] = field(default_factory=dict)

    @property
    def distinct(self) -> int:
        return len(self.entries)

    def summary(self) -> str:
        return (f"ledger.entry.v1: {self.records} records, {self.distinct} distinct entries "
                f"({self.republished} republished with the same event id); {self.paid} paid orders: "
                f"{len(self.paid_without_entry)} without an entry; orders with more than one distinct "
                f"entry {len(self.several)}; {self.dead_lettered} dead-lettered orders, {self.dead_lettered_with_entry} "
                f"of them with an entry; entries for orders never placed {len(self.unknown_order)}, "
                f"for declined orders {len(self.declined_with_entry)}, wrong amount {len(self.wrong_amount)}")


def cents(amount) -> int | None:
    try:
        return int(round(float(amount) * 100))
    except (TypeError, ValueError):
        return None


def count_entries(entry_records: list[dict], orders: list[dict], payments: list[dict],
                  dead_letters: list[dict], placed: set[str]) -> EntryCount:
    c = EntryCount(records=len(entry_records))
    order_cents: dict[str, int | None] = {}
    for r in orders:
        v = json_value(r) or {}
        oid = order_id_of(r)
        if oid is not None and oid not in order_cents:
            order_cents[oid] = cents(v.get("amount"))
    expected = set(order_cents) | placed
    paid = {order_id_of(r) for r in payments if r["headers"].get("event-type") == "PaymentProcessed"}
    declined = {order_id_of(r) for r in payments if r["headers"].get("event-type") == "PaymentFailed"}
    dead = {order_id_of(r) for r in dead_letters}

    seen_entry_ids: set = set()
    by_order: dict[str, set[str]] = defaultdict(set)
    for r in entry_records:
        eid = r["headers"].get("event-id") or f"{r['partition']}/{r['offset']}"
        v = json_value(r) or {}
        if eid in c.entries:
            c.republished += 1
            if v != c.entries[eid]:
                c.republished_differently.append(eid)
            continue
        c.entries[eid] = v
        entry_id = v.get("entry_id")
        if entry_id in seen_entry_ids:
            c.entry_ids_reused.append(str(entry_id))
        seen_entry_ids.add(entry_id)
        oid = v.get("order_id")
        if not oid:
            c.without_order.append(eid)
        else:
            by_order[oid].add(eid)
        legs = v.get("legs") or []
        debits = sum(int(leg.get("amount", 0)) for leg in legs if leg.get("direction") == "debit")
        credits = sum(int(leg.get("amount", 0)) for leg in legs if leg.get("direction") == "credit")
        if debits != credits or not legs:
            c.unbalanced.append(eid)
        for leg in legs:
            s = c.sums.setdefault(leg.get("account"), [0, 0, 0])
            s[0 if leg.get("direction") == "debit" else 1] += int(leg.get("amount", 0))
            s[2] += 1
        want = order_cents.get(oid) if oid else None
        merchant = [int(leg.get("amount", 0)) for leg in legs
                    if leg.get("account") == MERCHANT and leg.get("direction") == "credit"]
        if oid in order_cents and (want is None or merchant != [want] or credits != want):
            c.wrong_amount.append(f"{oid}: entry {merchant or credits}, order {want}")
    c.by_order = dict(by_order)
    c.unknown_order = sorted(set(by_order) - expected)
    c.declined_with_entry = sorted(set(by_order) & (declined - paid))
    for oid in sorted(paid & expected):
        c.paid += 1
        if not by_order.get(oid):
            c.paid_without_entry.append(oid)
    c.several = sorted(oid for oid, ids in by_order.items() if len(ids) > 1)
    dead_only = (dead - paid - declined) & expected
    c.dead_lettered = len(dead_only)
    c.dead_lettered_with_entry = sum(1 for oid in dead_only if oid in by_order)
    return c
