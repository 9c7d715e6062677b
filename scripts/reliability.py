#!/usr/bin/env python3
"""Reliability harness (issues 6 and 16): real processes, a real broker with
durable storage, counted outcomes.

Each scenario gets a fresh directory and a fresh broker in it: by default
(`--kafka embedded`) `kausal broker --storage sqlite` on a free port;
`--kafka cluster` a three-node Apache Kafka KRaft cluster (scripts/kafka,
replication factor 3, min.insync.replicas=2) on free ports, `--kafka single`
one Kafka node; it is SIGKILLed at the end of the scenario, pass or fail. It
runs `kausal service order` (the order generator, --max-orders N) and
`kausal service payment` as separate processes (plus the lineage recorder
for database-outage), injects its fault while orders flow, waits until the
payment group's committed offsets reach the end of `orders` ("drained"; a
stall fails the scenario loudly), then reads `orders`,
`payments`, `orders.dlq` and `kausal.receipts` from the beginning and counts
per order id (see reliability_lib/counting.py). PASS when lost = 0 and
duplicate effects = 0 (and the scenario's own checks hold). On Apache Kafka
the scenario also fails when any service log shows the orphan watchdog
rejoining ("partitions have had no live owner"): Kafka reassigns a dead
member's partitions itself, so the watchdog, written for the embedded
broker, must never fire there. On the embedded broker its count is only
reported.

Scenarios on every broker: kill-payment, rebalance, broker-restart (the
whole broker SIGKILLed: on Kafka all nodes at once), database-outage,
poison, sigterm, kill-ledger (the ledger service, with its outbox relay,
SIGKILLed three times; every entry checked against the payments and the
balances, reliability_lib/ledger.py). On the cluster only: broker-kill (SIGKILL of the node that
leads most partitions of orders and payments, started again 20 s later) and
rolling-restart (each node in turn stopped cleanly and started again, the
next only when every partition has its full ISR). Without --scenario, every
scenario the broker supports runs.

Time to recover: from the moment the fault is removed (service restarted,
broker back, database reachable again; for rebalance the kill itself) until
every partition that had records pending at that moment has been committed
past its position then; the worst of a scenario's faults. For broker-kill
and rolling-restart the clock starts at the kill (the stop): the cluster is
meant to carry on without that node. For poison: from the start of handling
the poison record to the handling of the first good record behind it (from
receipts).

    scripts/reliability [--orders 2000] [--scenario NAME]... [--kafka embedded|single|cluster]
                        [--json PATH] [--markdown PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the work tree
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reliability_lib import counting  # noqa: E402
from reliability_lib import ledger as ledger_io  # noqa: E402
from reliability_lib.brokers import ApacheKafka, BrokerError, EmbeddedBroker  # noqa: E402
from reliability_lib.kafka_io import (  # noqa: E402
    GroupProbe, create_topics, json_value, produce_orders, read_topic,
)
from reliability_lib.procs import LogWatch, Proc, free_port  # noqa: E402
from reliability_lib.proxy import CuttableProxy  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ["kill-payment", "rebalance", "broker-restart", "database-outage", "poison", "sigterm",
             "kill-ledger"]
CLUSTER_SCENARIOS = ["broker-kill", "rolling-restart"]
PAYMENT_GROUP = "payment-service"
RECORDER_GROUP = "kausal-lineage-recorder"
TOPICS = ["orders", "orders.dlq", "payments", "kausal.receipts"]
# Further topics the services create when missing (src/service.rs: the order
# service's read model reads all five business topics; the consumer runtime
# writes heartbeats to kausal.consumers, one partition). On Kafka the
# harness creates them itself with the cluster's replication factor, so that
# no service ever asks for a replication factor of its own.
SERVICE_TOPICS = ["inventory", "notifications", "shipments"]
HEARTBEATS_TOPIC = "kausal.consumers"
POISON_PREFIX = "ord-poison-"
# Logged by the consumer runtime's orphan watchdog (kausal-kafka runtime.rs).
ORPHAN_REJOIN = "partitions have had no live owner; rejoining the group so they are assigned again"
WEAK_PRODUCER = ["acks=1", "enable.idempotence=false"]


class ScenarioFailed(Exception):
    pass


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Result:
    scenario: str
    events: int = 0
    lost: int = 0
    duplicate_effects: int = 0
    redeliveries: int = 0
    time_to_recover_s: float | None = None
    passed: bool = False
    duration_s: float = 0.0
    orphan_rejoins: int = 0
    details: list[str] = field(default_factory=list)
    error: str | None = None
    logs: str = ""


@dataclass
class Fault:
    """A fault whose recovery is measured on `probe`'s group."""
    label: str
    probe: GroupProbe
    t_start: float
    t_end: float | None = None       # when the fault was removed
    baseline: dict | None = None     # {(topic, p): committed} at t_end
    pending: set | None = None
    t_recovered: float | None = None

    def recovery(self) -> float | None:
        if self.t_end is None or self.t_recovered is None:
            return None
        return self.t_recovered - self.t_end


class Scenario:
    def __init__(self, h: "Harness", name: str):
        self.h = h
        self.name = name
        self.dir = h.workdir / name
        if self.dir.exists():
            shutil.rmtree(self.dir)
        (self.dir / "logs").mkdir(parents=True)
        a = h.args
        if a.kafka == "embedded":
            self.broker = EmbeddedBroker(h.kausal, a.storage, self.dir)
        else:
            self.broker = ApacheKafka(REPO / "scripts" / "kafka", self.dir, 3 if a.kafka == "cluster" else 1)
        self.bootstrap = self.broker.bootstrap
        self.procs: list[Proc] = []
        self.payments: list[Proc] = []
        self.payment_starts = 0
        self.order: Proc | None = None
        self.order_watch: LogWatch | None = None
        self.placed: set[str] = set()
        self.injected: set[str] = set()  # orders the harness produced itself
        self.order_errors = 0
        self.generator_done = False
        self.published: int | None = None
        self.expected = h.args.orders
        self.faults: list[Fault] = []
        self.details: list[str] = []
        self.result = Result(scenario=name, logs=str(self.dir / "logs"))
        self.probes: list[GroupProbe] = []
        self.payment_flags: dict[str, str] = {}
        self.proxy: CuttableProxy | None = None
        self.intentionally_stopped: set[int] = set()
        self.order_rate = a.rate
        # Multi-step faults in progress (generators advanced by drive()).
        self.steps: list = []
        # kill-ledger: the ledger service (one process at a time).
        self.ledger: Proc | None = None
        self.ledger_starts = 0
        self.ledger_port: int | None = None

    # -- processes ---------------------------------------------------------
    def kafka_properties(self, word: str) -> list[str]:
        """`--kafka-property` flags for a service: the harness's own, then
        the weak producer of --sabotage weak-producer (order and payment)."""
        props = list(self.h.args.kafka_property or [])
        if self.h.args.sabotage == "weak-producer" and word in ("order", "payment"):
            props += WEAK_PRODUCER
        return [x for kv in props for x in ("--kafka-property", kv)]

    def service(self, word: str, log_name: str, data_dir: str, extra: list[str]) -> Proc:
        argv = [self.h.kausal, "service", word, "--kafka", self.bootstrap, "--data-dir", data_dir,
                "--metrics-port", "0", "--partitions", str(self.h.args.partitions),
                *self.kafka_properties(word), *extra]
        # `kausal service` does not create its --data-dir (its SQLite store fails).
        (self.dir / data_dir).mkdir(exist_ok=True)
        p = Proc(log_name, argv, self.dir, self.dir / "logs" / f"{log_name}.log").start()
        self.procs.append(p)
        return p

    def start_payment(self) -> Proc:
        self.payment_starts += 1
        a = self.h.args
        flags = {
            "--payment-failure-rate": str(a.payment_failure_rate),
            "--payment-decline-rate": str(a.payment_decline_rate),
            "--max-attempts": str(a.max_attempts),
            "--initial-backoff-ms": str(a.initial_backoff_ms),
            **self.payment_flags,
        }
        p = self.service("payment", f"payment-{self.payment_starts}", "payment",
                         [x for kv in flags.items() for x in kv])
        self.payments.append(p)
        return p

    def start_ledger(self) -> Proc:
        """ledger-service on `ledger_port` with its SQLite store in
        `<scenario>/ledger`; always the same port and data directory."""
        self.ledger_starts += 1
        self.ledger = self.service("ledger", f"ledger-{self.ledger_starts}", "ledger",
                                   ["--ledger-port", str(self.ledger_port)])
        return self.ledger

    @property
    def ledger_url(self) -> str:
        return f"http://127.0.0.1:{self.ledger_port}"

    def ledger_ready(self) -> bool:
        """The ledger's API answers; a ledger that exited fails the scenario."""
        if self.ledger is None or not self.ledger.alive():
            raise ScenarioFailed(f"{self.ledger.name if self.ledger else 'the ledger'} exited with status "
                                 f"{self.ledger.returncode() if self.ledger else None} "
                                 f"(log {self.ledger.log if self.ledger else '?'})")
        return ledger_io.answering(self.ledger_url)

    def start_order(self) -> None:
        a = self.h.args
        self.order = self.service("order", "order", "order", [
            "--rate", f"{self.order_rate:g}", "--max-orders", str(a.orders), "--http-port", "0"])
        self.order_watch = LogWatch(self.order.log)

    def watch_order_log(self) -> None:
        if self.order_watch is None:
            return
        for line in self.order_watch.new_lines():
            msg = line.get("message")
            if msg == "order placed":
                oid = line.get("orderId") or (line.get("fields") or {}).get("orderId")
                if oid:
                    self.placed.add(oid)
            elif msg == "order not published":
                self.order_errors += 1
            elif msg == "order generator stopped":
                self.generator_done = True
                pub = line.get("published") or (line.get("fields") or {}).get("published")
                self.published = int(pub) if pub is not None else None
        if self.generator_done and self.order is not None and self.order.alive():
            # The generator is the order service's only job here; its read
            # model consumer would only compete for the two cores.
            rc = self.order.terminate(60)
            self.details.append(f"order service: published {self.published}, "
                                f"{self.order_errors} publish errors, stopped with status {rc}")

    def kill_everything(self) -> None:
        for p in self.procs:
            p.kill9()
        self.broker.close()
        for probe in self.probes:
            probe.close()
        if self.proxy is not None:
            self.proxy.stop()

    # -- setup ---------------------------------------------------------------
    def setup(self, payments: int = 1, topics: tuple[str, ...] = (), before=None) -> GroupProbe:
        """Broker, topics (TOPICS and the scenario's `topics`), `before()`
        (services that must run before payment), payment, order."""
        t = time.monotonic()
        self.broker.start()
        if self.broker.kind == "kafka":
            self.details.append(f"Apache Kafka, {self.broker.nodes} node(s) at {self.bootstrap}, "
                                f"ready in {time.monotonic() - t:.0f} s")
        rf = self.broker.replication
        create_topics(self.bootstrap, TOPICS + list(topics), self.h.args.partitions, rf)
        if self.broker.kind == "kafka":
            create_topics(self.bootstrap, SERVICE_TOPICS, self.h.args.partitions, rf)
            create_topics(self.bootstrap, [HEARTBEATS_TOPIC], 1, rf)
        if before is not None:
            before()
        for _ in range(payments):
            self.start_payment()
        self.start_order()
        probe = GroupProbe(self.bootstrap, PAYMENT_GROUP, ["orders"])
        self.probes.append(probe)
        return probe

    # -- the main loop -------------------------------------------------------
    def drive(self, probe: GroupProbe, triggers: list[dict], timed: list | None = None) -> None:
        """Polls progress, fires triggers ({at, on: consumed|produced, action,
        label}) once their threshold is reached, and returns when the payment
        group has drained `orders`. `timed` holds (monotonic time, action).
        An action may return a generator: a fault of several steps (kill,
        wait, start again, wait until healthy) that must not stop the
        polling; it is advanced once per round until it ends, and the
        scenario is not done before."""
        a = self.h.args
        timed = timed if timed is not None else []
        t0 = time.monotonic()
        deadline = t0 + a.scenario_timeout
        last_progress, last_committed, last_print = t0, -1, 0.0
        drained_once = False
        while True:
            now = time.monotonic()
            self.watch_order_log()
            for item in [x for x in timed if x[0] <= now]:
                timed.remove(item)
                self.run_step(item[1]())
            for step in list(self.steps):
                self.advance(step)
            for p in self.payments:
                if not p.alive() and p.pid not in self.intentionally_stopped:
                    raise ScenarioFailed(f"{p.name} exited unexpectedly with status {p.returncode()} (log {p.log})")
            snap = probe.snapshot()
            self.update_faults()
            if snap is None:
                if now - last_progress > a.stall_timeout:
                    raise ScenarioFailed(f"broker unreachable for {a.stall_timeout:.0f} s")
                time.sleep(0.5)
                continue
            committed = sum(c for c, _ in snap.values())
            high = sum(h for _, h in snap.values())
            if committed != last_committed or (self.steps and committed >= high):
                # Nothing pending while a fault is still in progress is no stall.
                last_committed, last_progress = committed, now
            consumed = committed / max(self.expected, 1)
            produced = high / max(self.expected, 1)
            # One fault at a time: the next waits until the last recovered.
            settled = all(f.t_recovered is not None for f in self.faults) and not self.steps
            for trig in list(triggers) if settled else []:
                level = consumed if trig["on"] == "consumed" else produced
                if level >= trig["at"]:
                    triggers.remove(trig)
                    log(f"{self.name}: {trig['label']} at {trig['on']} {level:.0%} "
                        f"(committed {committed}, end {high})")
                    self.run_step(trig["action"]())
                    break
            if now - last_print >= 5:
                last_print = now
                log(f"{self.name}: {now - t0:5.0f}s produced {high}/{self.expected} consumed {committed}")
            done = (self.generator_done and not triggers and not timed and not self.steps
                    and all(c >= h for c, h in snap.values()) and high > 0)
            if done and drained_once:
                log(f"{self.name}: drained: {committed} records of orders committed after {now - t0:.0f} s")
                self.details.append(f"drained after {now - t0:.0f} s ({committed} records on orders)")
                return
            drained_once = done
            if now - last_progress > a.stall_timeout:
                raise ScenarioFailed(
                    f"not drained: group {PAYMENT_GROUP} stuck at {committed} of {high} for "
                    f"{a.stall_timeout:.0f} s (generator done: {self.generator_done}, triggers left: "
                    f"{[t['label'] for t in triggers]}, faults in progress: {len(self.steps)})")
            if now > deadline:
                raise ScenarioFailed(f"not drained within {a.scenario_timeout:.0f} s: {committed} of {high}")
            time.sleep(0.5)

    def run_step(self, result) -> None:
        """Keeps a generator an action returned, and takes its first step."""
        if result is not None and hasattr(result, "__next__"):
            self.steps.append(result)
            self.advance(result)

    def advance(self, step) -> None:
        try:
            next(step)
        except StopIteration:
            self.steps.remove(step)

    def begin_fault(self, label: str, probe: GroupProbe) -> Fault:
        f = Fault(label=label, probe=probe, t_start=time.monotonic())
        self.faults.append(f)
        return f

    def end_fault(self, f: Fault) -> None:
        f.t_end = time.monotonic()
        self.update_faults()

    def update_faults(self) -> None:
        for f in self.faults:
            if f.t_end is None or f.t_recovered is not None:
                continue
            snap = f.probe.snapshot()
            if snap is None:
                continue
            now = time.monotonic()
            if f.baseline is None:
                f.baseline = {k: c for k, (c, _) in snap.items()}
                f.pending = {k for k, (c, h) in snap.items() if c < h}
            if all(snap[k][0] > f.baseline[k] for k in f.pending if k in snap):
                f.t_recovered = now
                log(f"{self.name}: recovered from {f.label} in {f.recovery():.1f} s")

    def wait_recovered(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while any(f.t_recovered is None for f in self.faults):
            if time.monotonic() > deadline:
                left = [f.label for f in self.faults if f.t_recovered is None]
                raise ScenarioFailed(f"no recovery from {left} within {timeout:.0f} s")
            self.update_faults()
            time.sleep(0.5)

    def wait_group_drained(self, probe: GroupProbe, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while True:
            snap = probe.snapshot()
            if snap is not None:
                if all(c >= h for c, h in snap.values()):
                    return
                last = snap
            if time.monotonic() > deadline:
                lag = {f"{t}/{p}": h - c for (t, p), (c, h) in (last or {}).items() if h > c}
                raise ScenarioFailed(f"group {probe.group} not drained within {timeout:.0f} s; lag {lag}")
            time.sleep(1)

    # -- the end ---------------------------------------------------------------
    def stop_services(self) -> None:
        for p in self.procs:
            if p.alive():
                rc = p.terminate(60)
                self.details.append(f"{p.name} stopped by SIGTERM with status {rc}")

    def count(self) -> counting.Count:
        log(f"{self.name}: reading the topics")
        t = time.monotonic()
        records = {topic: read_topic(self.bootstrap, topic) for topic in TOPICS}
        log(f"{self.name}: read {sum(len(r) for r in records.values())} records in {time.monotonic() - t:.0f} s")
        self.records = records
        c = counting.count(records["orders"], records["payments"], records["orders.dlq"],
                           records["kausal.receipts"], self.placed, PAYMENT_GROUP,
                           sabotage=self.h.args.sabotage)
        self.result.events = c.orders
        self.result.lost = len(c.lost)
        self.result.duplicate_effects = len(c.duplicate)
        self.result.redeliveries = c.redeliveries
        self.details.append(c.summary())
        self.details.extend(c.notes)
        if c.lost:
            self.details.append(f"lost orders (first 10): {c.lost[:10]}")
        if c.not_on_topic:
            self.details.append(f"acknowledged but not on the orders topic: {len(c.not_on_topic)} {c.not_on_topic[:5]}")
        if c.duplicate:
            self.details.append(f"duplicate effects (first 10): {c.duplicate[:10]}")
        if c.unknown_outcomes:
            self.details.append(f"outcomes for unknown orders: {c.unknown_outcomes[:10]}")
            self.fail_check(f"{len(c.unknown_outcomes)} outcomes for orders never placed")
        from_log = len(self.placed - self.injected)
        if self.published is not None and self.published != from_log:
            self.details.append(f"generator reported {self.published} published, its log shows {from_log}")
        self.counted = c
        return c

    def fail_check(self, msg: str) -> None:
        self.details.append(f"CHECK FAILED: {msg}")
        self.checks_failed = True

    checks_failed = False


# --------------------------------------------------------------------------
# Scenarios


def scenario_kill_payment(s: Scenario, rng: random.Random) -> None:
    probe = s.setup()
    points = [rng.uniform(0.10, 0.30), rng.uniform(0.40, 0.55), rng.uniform(0.65, 0.80)]

    def kill(i):
        def act():
            victim = s.payments[-1]
            s.intentionally_stopped.add(victim.pid)
            f = s.begin_fault(f"kill -9 #{i}", probe)
            victim.kill9()
            s.details.append(f"kill -9 #{i} of {victim.name} (pid {victim.pid})")
            if s.h.args.sabotage == "no-restart" and i == 3:
                s.details.append("SABOTAGE: payment service not restarted")
                return
            if s.h.args.restart_delay:
                time.sleep(s.h.args.restart_delay)
            s.start_payment()
            s.end_fault(f)
        return act

    s.drive(probe, [{"at": p, "on": "consumed", "action": kill(i + 1), "label": f"kill -9 #{i + 1}"}
                    for i, p in enumerate(points)])
    s.wait_recovered()


def scenario_rebalance(s: Scenario, rng: random.Random) -> None:
    probe = s.setup(payments=2)
    point = rng.uniform(0.3, 0.5)

    def kill():
        victim = s.payments[rng.randrange(2)]
        s.intentionally_stopped.add(victim.pid)
        f = s.begin_fault(f"kill -9 of {victim.name}", probe)
        victim.kill9()
        s.details.append(f"kill -9 of {victim.name}; the other instance takes over")
        s.end_fault(f)

    s.drive(probe, [{"at": point, "on": "consumed", "action": kill, "label": "kill -9 of one instance"}])
    s.wait_recovered()


def scenario_broker_restart(s: Scenario, rng: random.Random) -> None:
    if s.broker.kind == "embedded" and s.h.args.storage != "sqlite":
        raise ScenarioFailed("broker-restart needs durable storage: run it with --storage sqlite")
    probe = s.setup()
    point = rng.uniform(0.4, 0.6)
    down = s.h.args.broker_down

    def restart():
        f = s.begin_fault("broker restart", probe)
        # SIGKILL (of every node on Kafka): the harshest stop; storage must
        # hold what was acknowledged.
        try:
            s.details.append(s.broker.restart(down))
        except BrokerError as e:
            raise ScenarioFailed(str(e)) from e
        s.end_fault(f)

    # At a point of the *produced* stream: the order service is still producing.
    s.drive(probe, [{"at": point, "on": "produced", "action": restart, "label": "broker SIGKILL"}])
    s.wait_recovered()


def psql(url: str, sql: str) -> list[str]:
    out = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise ScenarioFailed(f"psql: {out.stderr.strip()}")
    return [line for line in out.stdout.splitlines() if line]


def with_options(url: str, schema: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options=-c%20search_path%3D{schema}"


def scenario_database_outage(s: Scenario, rng: random.Random) -> None:  # noqa: ARG001
    a = s.h.args
    base = a.postgres
    u = urllib.parse.urlsplit(base)
    try:
        psql(base, "SELECT 1")
    except (ScenarioFailed, FileNotFoundError, subprocess.TimeoutExpired) as e:
        raise ScenarioFailed(f"PostgreSQL at {base} unreachable ({e}); this scenario needs it")
    schema = f"kausal_reliability_{os.getpid()}_{int(time.time())}"
    psql(base, f"CREATE SCHEMA {schema}")
    s.details.append(f"lineage store: PostgreSQL schema {schema} through a cuttable TCP proxy")
    try:
        s.proxy = CuttableProxy((u.hostname or "127.0.0.1", u.port or 5432), free_port()).start()
        proxied = urllib.parse.urlunsplit(u._replace(netloc=f"{u.username or 'postgres'}@127.0.0.1:{s.proxy.port}"))
        probe = s.setup()
        recorder = s.service("recorder", "recorder", "recorder", ["--database", with_options(proxied, schema)])
        rprobe = GroupProbe(s.bootstrap, RECORDER_GROUP, TOPICS)
        s.probes.append(rprobe)
        outage = a.db_outage
        state = {}

        def cut():
            state["fault"] = s.begin_fault("database outage", rprobe)
            n = s.proxy.cut()
            s.details.append(f"database cut for {outage:.0f} s ({n} open connections closed, new ones refused)")
            timed.append((time.monotonic() + outage, restore))

        def restore():
            s.proxy.restore()
            s.end_fault(state["fault"])
            log(f"{s.name}: database restored")

        timed: list = []
        s.drive(probe, [{"at": rng.uniform(0.25, 0.4), "on": "consumed", "action": cut, "label": "database cut"}], timed)
        if not recorder.alive():
            raise ScenarioFailed(f"the recorder exited with status {recorder.returncode()} (log {recorder.log})")
        s.wait_recovered()
        # Everything the recorder reads must be in the store.
        s.wait_group_drained(rprobe, a.stall_timeout * 2)
        s.count()
        direct = with_options(base, schema)
        events = set(psql(direct, "SELECT event_id FROM events"))
        receipts = set(psql(direct, "SELECT receipt_id FROM receipts"))
        dead = set(psql(direct, "SELECT dlq_topic || '/' || dlq_partition || '/' || dlq_offset FROM dead_letters"))
        want_events = {r["headers"].get("event-id") for t in ("orders", "payments") for r in s.records[t]}
        want_receipts = {(json_value(r) or {}).get("receipt_id") for r in s.records["kausal.receipts"]}
        want_dead = {f"orders.dlq/{r['partition']}/{r['offset']}" for r in s.records["orders.dlq"]}
        missing = (len(want_events - events), len(want_receipts - receipts), len(want_dead - dead))
        s.details.append(f"lineage rows: {len(events)} events, {len(receipts)} receipts, {len(dead)} dead letters; "
                         f"missing: {missing[0]} events, {missing[1]} receipts, {missing[2]} dead letters")
        if sum(missing):
            s.result.lost += sum(missing)
            s.details.append("lost includes the missing lineage rows")
    finally:
        if not a.keep:
            try:
                psql(base, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            except ScenarioFailed:
                pass


def scenario_poison(s: Scenario, rng: random.Random) -> None:
    a = s.h.args
    if "--payment-poison-prefix" not in s.h.payment_help:
        raise ScenarioFailed("`kausal service payment` has no --payment-poison-prefix yet (rebuild after the lead's change)")
    s.payment_flags = {"--payment-poison-prefix": POISON_PREFIX, "--max-attempts": str(a.poison_attempts),
                       "--initial-backoff-ms": str(a.poison_backoff_ms)}
    probe = s.setup()
    poison_id = f"{POISON_PREFIX}{rng.getrandbits(32):08x}"
    good = [f"ord-good{rng.getrandbits(32):08x}{i:04d}" for i in range(a.poison_good)]
    info = {}

    def inject():
        offsets = produce_orders(s.bootstrap, "orders", 0, [poison_id, *good])
        info["poison_offset"] = offsets[0]
        info["good_offsets"] = offsets[1:]
        s.expected += len(offsets)
        s.placed.update([poison_id, *good])
        s.injected.update([poison_id, *good])
        s.details.append(f"poison {poison_id} at orders/0@{offsets[0]}, {len(good)} good orders behind it "
                         f"(@{offsets[1]}..{offsets[-1]}); payment: {a.poison_attempts} attempts, "
                         f"first backoff {a.poison_backoff_ms} ms")

    s.drive(probe, [{"at": rng.uniform(0.2, 0.35), "on": "consumed", "action": inject, "label": "poison injection"}])
    c = s.count()
    receipts = [json_value(r) or {} for r in s.records["kausal.receipts"]]
    mine = {}
    for r in receipts:
        if r.get("consumer_group") == PAYMENT_GROUP and r.get("topic") == "orders" and r.get("partition") == 0:
            mine.setdefault(r.get("offset"), []).append(r)
    p_off = info["poison_offset"]
    poison_receipts = mine.get(p_off, [])
    dead = [r for r in poison_receipts if r.get("outcome") == "dead_lettered"]
    if not dead:
        s.fail_check(f"the poison record has no dead_lettered receipt (receipts: {[r.get('outcome') for r in poison_receipts]})")
        return
    started = dead[0]["handled_at_ms"] - dead[0]["duration_ms"]
    nxt = mine.get(p_off + 1, [])
    if not nxt:
        s.fail_check("the first good record behind the poison has no receipt")
        return
    recover = (min(r["handled_at_ms"] for r in nxt) - started) / 1000.0
    s.result.time_to_recover_s = recover
    s.details.append(f"poison dead-lettered after {dead[0].get('attempts')} attempts in {dead[0]['duration_ms'] / 1000:.2f} s; "
                     f"the next record handled {recover:.2f} s after the poison's first attempt")
    if dead[0].get("attempts") != a.poison_attempts:
        s.fail_check(f"poison dead-lettered after {dead[0].get('attempts')} attempts, not {a.poison_attempts}")
    budget = sum(a.poison_backoff_ms * 2 ** i for i in range(a.poison_attempts - 1)) / 1000.0
    if recover > budget * 1.2 + a.poison_slack:
        s.fail_check(f"the good records waited {recover:.1f} s, more than the retry budget {budget:.1f} s (+20 % jitter) + {a.poison_slack:.0f} s")
    handled_good = sum(1 for o in info["good_offsets"] if mine.get(o))
    if handled_good != len(good):
        s.fail_check(f"only {handled_good} of {len(good)} good records behind the poison have a receipt")
    if poison_id in c.lost or poison_id not in {counting.order_id_of(r) for r in s.records["orders.dlq"]}:
        s.fail_check("the poison order is not on orders.dlq")


def scenario_sigterm(s: Scenario, rng: random.Random) -> None:
    probe = s.setup()
    state = {}

    def term():
        victim = s.payments[-1]
        s.intentionally_stopped.add(victim.pid)
        f = s.begin_fault("SIGTERM", probe)
        t = time.monotonic()
        rc = victim.terminate(60)
        state["rc"] = rc
        s.details.append(f"SIGTERM to {victim.name}: exited with status {rc} after {time.monotonic() - t:.1f} s")
        s.start_payment()
        s.end_fault(f)

    s.drive(probe, [{"at": rng.uniform(0.3, 0.6), "on": "consumed", "action": term, "label": "SIGTERM"}])
    s.wait_recovered()
    c = s.count()
    if state.get("rc") != 0:
        s.fail_check(f"payment service exit status after SIGTERM was {state.get('rc')}, not 0")
    if c.processed_twice:
        s.fail_check(f"{len(c.processed_twice)} orders events have two 'processed' receipts of {PAYMENT_GROUP}: "
                     f"{list(c.processed_twice)[:5]}")
    else:
        s.details.append(f"no event of orders has two 'processed' receipts of {PAYMENT_GROUP}")


def wait_until(what: str, ready, timeout: float):
    """A step of a multi-step fault: yields (so that drive() keeps polling)
    until `ready()` is true; returns the seconds it took."""
    t = time.monotonic()
    while not ready():
        if time.monotonic() - t > timeout:
            raise ScenarioFailed(f"{what}: not within {timeout:.0f} s")
        yield
    return time.monotonic() - t


def start_node_step(s: Scenario, n: int, timeout: float = 240):
    """`scripts/kafka start-node N` in the background, then until every
    partition has its full ISR again; returns (ready, in sync) seconds."""
    proc = s.broker.start_node(n)
    t_ready = yield from wait_until(f"node {n} start", lambda: proc.poll() is not None, timeout)
    if proc.returncode != 0:
        raise ScenarioFailed(f"scripts/kafka start-node {n} failed with status {proc.returncode} "
                             f"(see {s.broker.log})")
    state = {}

    def healthy():
        state["why"] = s.broker.health()
        return state["why"] is None
    try:
        t_sync = yield from wait_until(f"full ISR after node {n} came back", healthy, timeout)
    except ScenarioFailed as e:
        raise ScenarioFailed(f"{e} ({state.get('why')})") from e
    return t_ready, t_sync


def pace_for_flow(s: Scenario) -> None:
    """Orders must flow through a cluster fault that lasts tens of seconds:
    at 400/s the CI's 1 000 orders would all be placed within 2.5 s. The
    order service is paced so that placing them takes --flow-seconds."""
    a = s.h.args
    if a.flow_seconds > 0:
        s.order_rate = min(a.rate, max(a.orders / a.flow_seconds, 1.0))
        s.details.append(f"order service paced at {s.order_rate:.0f} orders/s "
                         f"({a.orders} orders over about {a.orders / s.order_rate:.0f} s)")


def scenario_broker_kill(s: Scenario, rng: random.Random) -> None:
    a = s.h.args
    pace_for_flow(s)
    probe = s.setup()
    point = rng.uniform(0.3, 0.5)
    watched = ["orders", "payments"]

    def kill():
        leaders = s.broker.leaders(watched)
        per_node = {n: sum(1 for v in leaders.values() if v == n) for n in range(1, s.broker.nodes + 1)}
        draw = {n: rng.random() for n in per_node}  # ties: a seeded draw
        victim = max(per_node, key=lambda n: (per_node[n], draw[n]))
        f = s.begin_fault(f"SIGKILL of node {victim}", probe)
        s.broker.kill_node(victim)
        s.end_fault(f)
        t_kill = time.monotonic()
        s.details.append(f"node {victim} SIGKILLed (leader of {per_node[victim]} of {len(leaders)} partitions "
                         f"of orders and payments; leaders per node {per_node}), down for {a.kill_down:.0f} s")

        def moved():
            try:
                now = s.broker.leaders(watched)
            except BrokerError:
                return False
            return all(v not in (-1, victim) for v in now.values())
        t_moved = yield from wait_until("new leaders for the dead node's partitions", moved, a.kill_down + 60)
        s.details.append(f"every partition of orders and payments led by a live node {t_moved:.1f} s after the kill")
        yield from wait_until("the node's downtime", lambda: time.monotonic() - t_kill >= a.kill_down, a.kill_down + 1)
        t_ready, t_sync = yield from start_node_step(s, victim)
        s.details.append(f"node {victim} started again {a.kill_down:.0f} s after the kill: serving after "
                         f"{t_ready:.0f} s, every partition fully in sync {t_sync:.0f} s later")

    # At a point of the *produced* stream: the order service is producing.
    s.drive(probe, [{"at": point, "on": "produced", "action": kill, "label": "SIGKILL of a broker"}])
    s.wait_recovered()


def scenario_rolling_restart(s: Scenario, rng: random.Random) -> None:
    pace_for_flow(s)
    probe = s.setup()
    point = rng.uniform(0.05, 0.15)

    def roll():
        t_roll = time.monotonic()
        for n in range(1, s.broker.nodes + 1):
            f = s.begin_fault(f"stop of node {n}", probe)
            s.broker.terminate_node(n)
            s.end_fault(f)
            log(f"{s.name}: node {n} stopping (SIGTERM)")
            t_stop = yield from wait_until(f"node {n}'s controlled shutdown", lambda: not s.broker.node_alive(n), 120)
            t_ready, t_sync = yield from start_node_step(s, n)
            log(f"{s.name}: node {n} back, every partition in sync")
            s.details.append(f"node {n}: SIGTERM, exited after {t_stop:.1f} s, started again: serving after "
                             f"{t_ready:.0f} s, every partition fully in sync {t_sync:.0f} s later")
        s.details.append(f"rolling restart of {s.broker.nodes} nodes took {time.monotonic() - t_roll:.0f} s")

    s.drive(probe, [{"at": point, "on": "produced", "action": roll, "label": "rolling restart"}])
    s.wait_recovered()


def scenario_kill_ledger(s: Scenario, rng: random.Random) -> None:
    """Issue 14: kill -9 of the ledger service (its API and its outbox relay
    in one process) three times under load, restarted at once on the same
    port and data directory. Payment posts every approved charge to it
    before PaymentProcessed and retries while it is down."""
    a = s.h.args
    s.ledger_port = free_port()
    s.payment_flags = {"--ledger-url": s.ledger_url, "--max-attempts": str(a.ledger_attempts),
                       "--initial-backoff-ms": str(a.ledger_backoff_ms)}
    budget = sum(min(a.ledger_backoff_ms * 2 ** i, 10_000) for i in range(a.ledger_attempts - 1)) / 1000
    db = s.dir / "ledger" / "kausal.db"

    def first_ledger():
        s.start_ledger()
        t = time.monotonic()
        while not s.ledger_ready():
            if time.monotonic() - t > 60:
                raise ScenarioFailed(f"the ledger did not answer on {s.ledger_url} within 60 s (log {s.ledger.log})")
            time.sleep(0.2)
        s.details.append(f"ledger-service on {s.ledger_url} (SQLite store {db.relative_to(s.dir)}), answering "
                         f"{time.monotonic() - t:.1f} s after its start; payment posts each approved charge to it "
                         f"with {a.ledger_attempts} attempts from {a.ledger_backoff_ms} ms "
                         f"(retry budget {budget:.1f} s nominal, backoff capped at 10 s)")

    probe = s.setup(topics=(ledger_io.TOPIC,), before=first_ledger)
    unsent_at_kill: list[tuple[int, list[str]]] = []
    points = [rng.uniform(0.20, 0.30), rng.uniform(0.45, 0.55), rng.uniform(0.70, 0.80)]

    def kill(i):
        def act():
            victim = s.ledger
            snap = probe.snapshot()
            level = f"{sum(c for c, _ in snap.values()) / max(s.expected, 1):.0%}" if snap else "?"
            f = s.begin_fault(f"ledger kill -9 #{i}", probe)
            victim.kill9()
            # What the kill left: entries committed (outbox rows) and those
            # not yet marked sent (unpublished, or published and not marked).
            stats = ledger_io.outbox_stats(db)
            s.start_ledger()
            s.end_fault(f)
            t = yield from wait_until(f"ledger answering after kill #{i}", s.ledger_ready, 60)
            if stats is not None:
                unsent_at_kill.append((i, stats[1]))
            left = "outbox unreadable" if stats is None else (
                f"{stats[0]} entries committed, {len(stats[1])} of them not marked published")
            s.details.append(f"kill -9 #{i} of {victim.name} (pid {victim.pid}) at consumed {level}: {left}; "
                             f"{s.ledger.name} answering {t:.1f} s after its start")
            log(f"{s.name}: ledger kill #{i}: {left}; back in {t:.1f} s")
        return act

    s.drive(probe, [{"at": p, "on": "consumed", "action": kill(i + 1), "label": f"ledger kill -9 #{i + 1}"}
                    for i, p in enumerate(points)])
    s.wait_recovered()
    if not s.ledger.alive():
        raise ScenarioFailed(f"{s.ledger.name} exited with status {s.ledger.returncode()} (log {s.ledger.log})")

    # d. every committed entry published: the merchant account's postings
    # (one credit leg per entry) against the distinct entries on the topic.
    t = time.monotonic()
    while True:
        records = read_topic(s.bootstrap, ledger_io.TOPIC)
        distinct = len({r["headers"].get("event-id") for r in records})
        merchant = ledger_io.account(s.ledger_url, ledger_io.MERCHANT) or {}
        postings = int(merchant.get("postings", 0))
        if distinct == postings and postings > 0:
            break
        if time.monotonic() - t > a.ledger_publish_wait:
            st = ledger_io.outbox_stats(db)
            s.fail_check(f"not every entry published: {distinct} distinct on {ledger_io.TOPIC}, the ledger "
                         f"has {postings} postings on {ledger_io.MERCHANT} after {a.ledger_publish_wait:.0f} s "
                         f"(outbox rows {st[0] if st else '?'}, unsent {st[1][:5] if st else '?'})")
            break
        time.sleep(2)
    stats = ledger_io.outbox_stats(db)
    if distinct == postings:
        s.details.append(f"every entry published {time.monotonic() - t:.1f} s after the payment group drained: "
                         f"{distinct} distinct entries on {ledger_io.TOPIC}, {postings} postings on "
                         f"{ledger_io.MERCHANT}; outbox rows {stats[0] if stats else '?'}, unsent "
                         f"{len(stats[1]) if stats else '?'}")
    # Where the kills fell: an entry not marked sent at a kill that is on the
    # topic twice had been published before the kill (the relay killed
    # mid-batch, between the broker's acknowledgement and the mark); once,
    # published only by the restarted relay (killed between commit and
    # publication, or before the batch's acknowledgements).
    copies: dict[str, int] = {}
    for r in records:
        eid = r["headers"].get("event-id")
        copies[eid] = copies.get(eid, 0) + 1
    for i, ids in unsent_at_kill:
        twice = sum(1 for x in ids if copies.get(x, 0) > 1)
        once = sum(1 for x in ids if copies.get(x, 0) == 1)
        s.details.append(f"kill #{i}: of the {len(ids)} entries not marked published, {once} were published "
                         f"once (after the restart), {twice} twice (before the kill and after the restart: "
                         f"the relay killed mid-batch), {len(ids) - once - twice} are not on the topic")

    c = s.count()
    e = ledger_io.count_entries(records, s.records["orders"], s.records["payments"],
                                s.records["orders.dlq"], s.placed)
    s.details.append(e.summary())
    # In the table: a paid order without its entry is lost, an order with
    # two distinct entries a duplicate effect, a republication a redelivery.
    s.result.lost += len(e.paid_without_entry)
    s.result.duplicate_effects += len(e.several)
    s.result.redeliveries += e.republished
    s.details.append(f"the table's lost, duplicate effects and redeliveries include {len(e.paid_without_entry)} "
                     f"paid orders without an entry, {len(e.several)} orders with two distinct entries and "
                     f"{e.republished} republished entries")
    # a. one distinct EntryPosted per paid order, never two ids for one order.
    if e.paid_without_entry:
        s.fail_check(f"{len(e.paid_without_entry)} paid orders have no EntryPosted: {e.paid_without_entry[:10]}")
    if e.several:
        s.fail_check(f"{len(e.several)} orders have EntryPosted under different event ids: "
                     f"{[(o, sorted(e.by_order[o])) for o in e.several[:5]]}")
    if e.entry_ids_reused:
        s.fail_check(f"{len(e.entry_ids_reused)} entry ids published under two event ids: {e.entry_ids_reused[:5]}")
    if e.republished_differently:
        s.fail_check(f"{len(e.republished_differently)} event ids republished with another payload: "
                     f"{e.republished_differently[:5]}")
    # b. nothing for orders never placed (or never paid).
    if e.unknown_order:
        s.fail_check(f"{len(e.unknown_order)} EntryPosted for orders never placed: {e.unknown_order[:10]}")
    if e.without_order:
        s.fail_check(f"{len(e.without_order)} EntryPosted without an order id: {e.without_order[:5]}")
    if e.declined_with_entry:
        s.fail_check(f"{len(e.declined_with_entry)} declined orders have an EntryPosted: {e.declined_with_entry[:10]}")
    # c. amounts and balances.
    if e.wrong_amount:
        s.fail_check(f"{len(e.wrong_amount)} entries' amounts differ from their orders' (cents): {e.wrong_amount[:5]}")
    if e.unbalanced:
        s.fail_check(f"{len(e.unbalanced)} entries with debits != credits: {e.unbalanced[:5]}")
    t = time.monotonic()
    mismatched = []
    for acct, (debits, credits, n) in sorted(e.sums.items()):
        got = ledger_io.account(s.ledger_url, acct)
        want = {"debits": debits, "credits": credits, "postings": n, "balance": debits - credits}
        have = {k: (got or {}).get(k) for k in want}
        if have != want:
            mismatched.append(f"{acct}: ledger {have}, topic {want}")
    m = e.sums.get(ledger_io.MERCHANT, [0, 0, 0])
    t_get = time.monotonic()
    merchant = ledger_io.account(s.ledger_url, ledger_io.MERCHANT) or {}
    t_get = time.monotonic() - t_get
    s.details.append(f"balances: {ledger_io.MERCHANT} credits {merchant.get('credits')} / postings "
                     f"{merchant.get('postings')} (sum of the distinct entries: {m[1]} / {m[2]}; its GET, "
                     f"which replays the account's {merchant.get('version')} events, took {t_get:.2f} s); "
                     f"{len(e.sums)} accounts compared with the entries in {time.monotonic() - t:.0f} s, "
                     f"{len(mismatched)} differ")
    if mismatched:
        s.fail_check(f"{len(mismatched)} account balances differ from the sum of the distinct entries: "
                     f"{mismatched[:5]}")
    if e.dead_lettered or c.dead_lettered:
        s.details.append(f"{e.dead_lettered} dead-lettered orders ({e.dead_lettered_with_entry} with an entry): "
                         f"reported, not judged")
    s.details.append("the kills land between an entry's commit and its publication, and inside relay "
                     "batches, only by chance: the counts of unsent outbox rows at each kill show where they fell")


RUNNERS = {
    "kill-payment": scenario_kill_payment,
    "rebalance": scenario_rebalance,
    "broker-restart": scenario_broker_restart,
    "database-outage": scenario_database_outage,
    "poison": scenario_poison,
    "sigterm": scenario_sigterm,
    "kill-ledger": scenario_kill_ledger,
    "broker-kill": scenario_broker_kill,
    "rolling-restart": scenario_rolling_restart,
}


# --------------------------------------------------------------------------
# The harness


class Harness:
    def __init__(self, args):
        self.args = args
        self.workdir = Path(args.work_dir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.kausal = self.binary()
        self.payment_help = subprocess.run([self.kausal, "service", "payment", "--help"],
                                           capture_output=True, text=True).stdout

    def binary(self) -> str:
        a = self.args
        if a.kausal:
            return str(Path(a.kausal).resolve())
        env = dict(os.environ)
        env.setdefault("CARGO_TARGET_DIR", str(Path.home() / ".cache/kausal/target"))
        env.setdefault("CARGO_INCREMENTAL", "0")
        profile = "release" if a.release else "debug"
        if not a.no_build:
            cmd = ["cargo", "build", "--bin", "kausal"] + (["--release"] if a.release else [])
            log(f"building: {' '.join(cmd)} (CARGO_TARGET_DIR={env['CARGO_TARGET_DIR']})")
            if subprocess.run(cmd, cwd=REPO, env=env).returncode != 0:
                sys.exit("reliability: the build failed")
        path = Path(env["CARGO_TARGET_DIR"]) / profile / "kausal"
        if not path.exists():
            sys.exit(f"reliability: no binary at {path}")
        return str(path)

    def run(self, name: str) -> Result:
        s = Scenario(self, name)
        seed = self.args.seed if self.args.seed is not None else random.randrange(1 << 30)
        rng = random.Random(f"{seed}/{name}")
        s.details.append(f"seed {seed}")
        log(f"=== {name}: {self.args.orders} orders, {self.args.kafka} broker {s.bootstrap}, dir {s.dir}")
        t0 = time.monotonic()
        try:
            RUNNERS[name](s, rng)
            if not getattr(s, "counted", None):
                s.count()
            recoveries = [f.recovery() for f in s.faults]
            for f in s.faults:
                r = f.recovery()
                s.details.append(f"recovery from {f.label}: {'n/a' if r is None else f'{r:.1f} s'}")
            if recoveries and s.result.time_to_recover_s is None:
                known = [r for r in recoveries if r is not None]
                s.result.time_to_recover_s = max(known) if known else None
            s.stop_services()
        except ScenarioFailed as e:
            s.result.error = str(e)
            if not getattr(s, "counted", None) and s.broker.reachable():
                # Count what is there anyway: undrained orders show up as lost.
                try:
                    s.count()
                except Exception as e2:  # noqa: BLE001
                    s.details.append(f"could not count after the failure: {e2}")
        except Exception as e:  # noqa: BLE001 -- a crash of the harness fails the scenario, loudly
            s.result.error = f"{type(e).__name__}: {e}"
        finally:
            s.kill_everything()
        self.check_watchdog(s)
        r = s.result
        r.details = s.details
        r.duration_s = time.monotonic() - t0
        r.passed = (r.error is None and not s.checks_failed and r.lost == 0 and r.duplicate_effects == 0
                    and r.events > 0)
        log(f"=== {name}: {'PASS' if r.passed else 'FAIL'} in {r.duration_s:.0f} s")
        for d in r.details:
            print(f"    {d}")
        if r.error:
            print(f"    ERROR: {r.error}")
        if not r.passed:
            print(f"    logs: {r.logs}")
        elif not self.args.keep:
            # Passed: keep the logs, drop the (large) databases.
            for sub in ("payment", "order", "recorder", "ledger"):
                shutil.rmtree(s.dir / sub, ignore_errors=True)
            s.broker.drop_data()
        return r

    def check_watchdog(self, s: Scenario) -> None:
        """Counts the orphan watchdog's rejoins in every service log. Kafka
        reassigns a dead member's partitions itself: there, one rejoin fails
        the scenario. On the embedded broker it is the workaround for tansu
        (docs/broker.md), so only counted."""
        n = 0
        for path in sorted((s.dir / "logs").glob("*.log")):
            if path.name.startswith("broker-") or path.name == "kafka.log":
                continue
            n += path.read_text(errors="replace").count(ORPHAN_REJOIN)
        s.result.orphan_rejoins = n
        s.details.append(f"orphan watchdog: {n} rejoin(s) in the service logs")
        if n and self.args.kafka != "embedded":
            s.fail_check(f"the orphan watchdog fired {n} time(s) on Apache Kafka, which reassigns "
                         f"partitions itself")


HEADER = ["scenario", "events", "lost", "duplicate effects", "redeliveries", "time to recover (s)",
          "watchdog rejoins", "wall time (s)", "result"]


def table(results: list[Result]) -> str:
    rows = [[r.scenario, str(r.events), str(r.lost), str(r.duplicate_effects), str(r.redeliveries),
             "—" if r.time_to_recover_s is None else f"{r.time_to_recover_s:.1f}",
             str(r.orphan_rejoins), f"{r.duration_s:.0f}",
             "PASS" if r.passed else "FAIL"] for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(HEADER)]
    right = {1, 2, 3, 4, 5, 6, 7}

    def fmt(cells):
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(cells, widths))) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2))
                         for i, w in enumerate(widths)) + "|"
    return "\n".join([fmt(HEADER), sep, *(fmt(r) for r in rows)])


def broker_name(kafka: str) -> str:
    return {"embedded": "embedded (kausal broker)", "single": "Apache Kafka, one node",
            "cluster": "Apache Kafka, three nodes"}[kafka]


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kafka", choices=["embedded", "single", "cluster"], default="embedded",
                   help="the broker: embedded (default) is `kausal broker` (tansu) with --storage; "
                        "cluster is three Apache Kafka nodes (KRaft, replication factor 3, "
                        "min.insync.replicas=2) and single one node, through scripts/kafka (Java 17+, "
                        "Maven; the jars come from Maven Central once), fresh per scenario in its "
                        "directory on free ports")
    p.add_argument("--storage", choices=["sqlite", "memory"], default="sqlite",
                   help="the broker's storage (default sqlite: durable; memory cannot run broker-restart "
                        "and skips records when a consumer resumes inside a produce batch, so it loses "
                        "orders in kill and rebalance scenarios: docs/broker.md)")
    # 2 000 by default, a few minutes per run; the 20 000 take 2-4
    # minutes per scenario (debug build): docs/reliability.md has the command.
    p.add_argument("--orders", type=int, default=2000,
                   help="orders the order service generates per scenario (default 2000; the 20 000 runs "
                        "of docs/reliability.md use --orders 20000 --payment-failure-rate 0.01)")
    p.add_argument("--scenario", action="append", choices=SCENARIOS + CLUSTER_SCENARIOS,
                   help="run only this scenario (repeatable); default every one the broker supports "
                        f"({', '.join(CLUSTER_SCENARIOS)} need --kafka cluster)")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--markdown", help="write the table as Markdown here (default WORK_DIR/reliability.md)")
    p.add_argument("--work-dir", default=f"/tmp/kausal-reliability/{time.strftime('%Y%m%d-%H%M%S')}")
    p.add_argument("--release", action="store_true", help="build and run the release binary")
    p.add_argument("--no-build", action="store_true", help="use the binary as it is")
    p.add_argument("--kausal", help="path of the kausal binary (implies --no-build)")
    p.add_argument("--keep", action="store_true", help="keep every database and PostgreSQL schema")
    p.add_argument("--seed", type=int, help="seed of the fault moments (default random, printed)")
    p.add_argument("--rate", type=float, default=400.0, help="orders/s of the order service (default 400)")
    p.add_argument("--partitions", type=int, default=3)
    p.add_argument("--payment-failure-rate", type=float, default=0.2)
    p.add_argument("--payment-decline-rate", type=float, default=0.05)
    p.add_argument("--max-attempts", type=int, default=3)
    p.add_argument("--initial-backoff-ms", type=int, default=100)
    p.add_argument("--restart-delay", type=float, default=0.0,
                   help="seconds between kill -9 and restart of the payment service (default 0: at once)")
    p.add_argument("--broker-down", type=float, default=5.0,
                   help="broker-restart: seconds the broker (every Kafka node) stays down (default 5)")
    p.add_argument("--kill-down", type=float, default=20.0,
                   help="broker-kill: seconds the killed Kafka node stays down (default 20)")
    p.add_argument("--flow-seconds", type=float, default=60.0,
                   help="broker-kill and rolling-restart: pace the order service at "
                        "min(--rate, orders / this) so that orders flow through the fault "
                        "(default 60; 0 keeps --rate)")
    p.add_argument("--kafka-property", action="append", metavar="KEY=VALUE",
                   help="a librdkafka property for every service (`kausal service "
                        "--kafka-property`, overriding the contract's producer settings); repeatable")
    p.add_argument("--db-outage", type=float, default=10.0, help="seconds the database stays cut (default 10)")
    p.add_argument("--postgres", default=os.environ.get("KAUSAL_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))
    p.add_argument("--poison-good", type=int, default=1000)
    p.add_argument("--poison-attempts", type=int, default=5)
    p.add_argument("--poison-backoff-ms", type=int, default=200)
    p.add_argument("--poison-slack", type=float, default=10.0, help="seconds allowed beyond the retry budget")
    p.add_argument("--ledger-attempts", type=int, default=9,
                   help="kill-ledger: payment's --max-attempts (default 9: with --ledger-backoff-ms 100 "
                        "about 22 s of backoff, so a ledger down for a few seconds dead-letters nothing)")
    p.add_argument("--ledger-backoff-ms", type=int, default=100,
                   help="kill-ledger: payment's --initial-backoff-ms (default 100)")
    p.add_argument("--ledger-publish-wait", type=float, default=60.0,
                   help="kill-ledger: seconds to wait after the drain until every entry is on "
                        "ledger.entry.v1 (default 60)")
    p.add_argument("--stall-timeout", type=float, default=120.0, help="fail when nothing is committed for this long")
    p.add_argument("--scenario-timeout", type=float, help="fail a scenario that has not drained after this long")
    p.add_argument("--sabotage", choices=["drop-outcome", "no-restart", "weak-producer"],
                   help="break the harness on purpose to prove that it can fail: drop-outcome forgets an "
                        "outcome in the count, no-restart leaves the payment service dead after the third "
                        "kill, weak-producer runs the order and payment services with acks=1 and "
                        "enable.idempotence=false (for broker-kill)")
    args = p.parse_args()
    if args.scenario is None:
        args.scenario = SCENARIOS + (CLUSTER_SCENARIOS if args.kafka == "cluster" else [])
    need_cluster = [n for n in args.scenario if n in CLUSTER_SCENARIOS]
    if need_cluster and args.kafka != "cluster":
        p.error(f"{', '.join(need_cluster)}: need --kafka cluster (they kill or stop one node of a "
                f"three-node Apache Kafka cluster; the {args.kafka} broker has one)")
    if args.kausal:
        args.no_build = True
    if args.scenario_timeout is None:
        args.scenario_timeout = 300 + args.orders / 20
    h = Harness(args)
    results = []
    try:
        for name in args.scenario:
            results.append(h.run(name))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    text = table(results)
    print()
    print(text)
    meta = {"orders": args.orders, "rate": args.rate, "seed": args.seed, "binary": h.kausal,
            "kafka": args.kafka, "sabotage": args.sabotage, "kafka_property": args.kafka_property,
            "commit": git_commit(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "work_dir": str(h.workdir)}
    md = args.markdown or str(h.workdir / "reliability.md")
    notes = "\n".join(f"- **{r.scenario}**: " + "; ".join(r.details + ([f"ERROR: {r.error}"] if r.error else []))
                      for r in results)
    Path(md).write_text(
        f"Reliability harness, {meta['date']}, commit {meta['commit']}, {args.orders} orders per scenario, "
        f"broker: {broker_name(args.kafka)} (`scripts/reliability {' '.join(sys.argv[1:])}`)\n\n{text}\n\n{notes}\n")
    print(f"\nmarkdown: {md}")
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2))
        print(f"json: {args.json}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
