"""The broker under test, one per scenario, in the scenario's directory:

- `EmbeddedBroker`: `kausal broker` (tansu) as a process of its own;
- `ApacheKafka`: Apache Kafka through scripts/kafka, one node or a
  three-node KRaft cluster (replication factor 3, min.insync.replicas=2),
  with per-node faults (SIGKILL, clean stop, start) and a health check
  (every partition led, with its full ISR) read from the metadata.

Both have `bootstrap`, `replication` (for the topics the harness creates),
`start()`, `restart(down)` (the whole broker SIGKILLed and started again),
`reachable()` and `close()` (SIGKILL, even after a failure)."""

from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from .kafka_io import QUIET
from .procs import Proc, free_port, wait_for_line

_OPEN: list["ApacheKafka"] = []


def _kill_open() -> None:
    # The nodes run in sessions of their own (scripts/kafka uses setsid), so
    # the process-group kills of procs.py do not reach them.
    for kafka in list(_OPEN):
        kafka.close()


atexit.register(_kill_open)


class BrokerError(RuntimeError):
    pass


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(offsets: list[int], low: int = 20000, high: int = 32000) -> int:
    """A base port P with P + every offset free. Below Linux's ephemeral
    range (32768-60999), so that no client connection takes one of them
    between this check and the broker's start."""
    for _ in range(200):
        base = random.randrange(low, high - max(offsets))
        if all(port_free(base + o) for o in offsets):
            return base
    raise BrokerError(f"no free block of ports {offsets} in {low}-{high}")


class EmbeddedBroker:
    """`kausal broker` (tansu) on a free port, SQLite (or memory) storage in
    DIR/broker; one process, so `restart` is that process SIGKILLed."""

    kind = "embedded"
    nodes = 1
    replication = 1

    def __init__(self, kausal: str, storage: str, scenario_dir: Path):
        self.kausal = kausal
        self.storage = storage
        self.dir = scenario_dir
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log_path = self.dir / "logs" / f"broker-{self.starts}.log"
        # tansu resolves the SQLite path against the working directory: the
        # broker runs in the scenario dir with a relative data dir.
        self.proc = Proc("broker", [self.kausal, "broker", "--port", str(self.port),
                                    "--storage", self.storage, "--data-dir", "broker"],
                         self.dir, log_path,
                         # tansu logs every decoded varint at INFO: that alone slows it down.
                         env={"RUST_LOG": os.environ.get("KAUSAL_BROKER_LOG", "warn,kausal=info,kausal_broker=info,tansu_broker::coordinator::group=info")},
                         ).start()
        wait_for_line(log_path, "broker listening on", 120, self.proc)

    def restart(self, down: float) -> str:
        # SIGKILL: the harshest stop; storage must hold what was acknowledged.
        self.proc.kill9()
        time.sleep(down)
        self.start()
        return f"broker SIGKILLed, restarted after {down:.0f} s on the same port and data dir"

    def reachable(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill9()

    def drop_data(self) -> None:
        shutil.rmtree(self.dir / "broker", ignore_errors=True)


class ApacheKafka:
    """Apache Kafka through scripts/kafka in DIR/kafka: node N serves clients
    on P+N-1 and has node.id N (so metadata leader ids are node numbers).
    scripts/kafka's own output goes to logs/kafka.log."""

    kind = "kafka"

    def __init__(self, script: Path, scenario_dir: Path, nodes: int):
        self.script = script
        self.nodes = nodes
        self.replication = 3 if nodes == 3 else 1
        self.dir = scenario_dir / "kafka"
        self.log = scenario_dir / "logs" / "kafka.log"
        # One node: P and its controller P+1; three: P..P+2, controllers P+100..P+102.
        offsets = [0, 1] if nodes == 1 else [0, 1, 2, 100, 101, 102]
        self.port = free_port_block(offsets)
        self.bootstrap = ",".join(f"127.0.0.1:{self.port + i}" for i in range(nodes))
        self.admin: AdminClient | None = None
        self.started = False

    # -- scripts/kafka -------------------------------------------------------
    def _argv(self, verb: str, *args: str) -> list[str]:
        return [str(self.script), verb, *args, "--nodes", str(self.nodes), "--dir", str(self.dir)]

    def _run(self, verb: str, *args: str, timeout: float = 300) -> str:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as err:
            err.write(f"--- {time.strftime('%H:%M:%S')} scripts/kafka {verb} {' '.join(args)}\n".encode())
            err.flush()
            out = subprocess.run(self._argv(verb, *args), stdout=subprocess.PIPE, stderr=err,
                                 stdin=subprocess.DEVNULL, timeout=timeout)
        if out.returncode != 0:
            raise BrokerError(f"scripts/kafka {verb} {' '.join(args)} failed with status {out.returncode} (see {self.log})")
        return out.stdout.decode().strip()

    def start(self) -> None:
        _OPEN.append(self)
        self.started = True
        got = self._run("start", "--port", str(self.port))
        if got != self.bootstrap:
            raise BrokerError(f"scripts/kafka start printed {got!r}, expected {self.bootstrap!r}")
        self.admin = AdminClient({"bootstrap.servers": self.bootstrap, **QUIET})

    def restart(self, down: float) -> str:
        """Every node SIGKILLed at once (a power cut of the whole cluster, as
        the embedded broker's restart), started again after `down` seconds
        on the same data directories."""
        self._run("kill")
        time.sleep(down)
        t = time.monotonic()
        self._run("start")
        which = "the Kafka node" if self.nodes == 1 else f"all {self.nodes} Kafka nodes"
        return (f"{which} SIGKILLed at once, started again after {down:.0f} s on the same data "
                f"dirs (serving {time.monotonic() - t:.0f} s later)")

    def reachable(self) -> bool:
        try:
            self.metadata(5)
            return True
        except (KafkaException, BrokerError):
            return False

    def close(self) -> None:
        if self.started:
            try:
                self._run("kill", timeout=60)
            except (BrokerError, subprocess.TimeoutExpired):
                pass
            self.started = False
        if self in _OPEN:
            _OPEN.remove(self)

    def drop_data(self) -> None:
        for node in self.dir.glob("node-*"):
            shutil.rmtree(node / "data", ignore_errors=True)

    # -- single nodes -----------------------------------------------------------
    def pid(self, n: int) -> int | None:
        try:
            return int((self.dir / f"node-{n}" / "pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def node_alive(self, n: int) -> bool:
        """As scripts/kafka decides it: the pid file names this node's JVM
        (a reaped or reused pid, or a zombie, has not its command line)."""
        pid = self.pid(n)
        if pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.dir / f"node-{n}" / "server.properties").encode() in cmdline

    def kill_node(self, n: int) -> None:
        self._run("kill-node", str(n), timeout=60)

    def terminate_node(self, n: int) -> None:
        """SIGTERM to node N: Kafka's controlled shutdown (leaderships moved
        away first). scripts/kafka has no verb for one node's clean stop."""
        pid = self.pid(n)
        if pid is None or not self.node_alive(n):
            raise BrokerError(f"node {n} is not running")
        os.kill(pid, signal.SIGTERM)

    def start_node(self, n: int) -> subprocess.Popen:
        """`scripts/kafka start-node N` in the background (it waits until the
        node serves clients): poll the returned process."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        err = open(self.log, "ab")
        err.write(f"--- {time.strftime('%H:%M:%S')} scripts/kafka start-node {n}\n".encode())
        err.flush()
        try:
            return subprocess.Popen(self._argv("start-node", str(n)), stdout=subprocess.DEVNULL,
                                    stderr=err, stdin=subprocess.DEVNULL)
        finally:
            err.close()

    # -- metadata --------------------------------------------------------------
    def metadata(self, timeout: float = 5):
        if self.admin is None:
            raise BrokerError("not started")
        return self.admin.list_topics(timeout=timeout)

    def leaders(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """{(topic, partition): leader node id}, -1 while leaderless."""
        try:
            md = self.metadata()
        except KafkaException as e:
            raise BrokerError(f"no metadata: {e}") from e
        out = {}
        for t in topics:
            tm = md.topics.get(t)
            if tm is None or tm.error is not None:
                raise BrokerError(f"no metadata for {t}: {tm.error if tm else 'absent'}")
            for p, pm in tm.partitions.items():
                out[(t, p)] = pm.leader
        return out

    def health(self) -> str | None:
        """None when every node is registered and every partition of every
        topic (the internal ones too) has a leader and its full replica set
        in sync; otherwise what is missing."""
        try:
            md = self.metadata()
        except KafkaException as e:
            return f"no metadata: {e}"
        if len(md.brokers) != self.nodes:
            return f"{len(md.brokers)} of {self.nodes} brokers registered"
        short = []
        for t, tm in md.topics.items():
            if tm.error is not None:
                return f"{t}: {tm.error}"
            for p, pm in tm.partitions.items():
                if pm.leader < 0 or set(pm.isrs) != set(pm.replicas):
                    short.append(f"{t}/{p} (leader {pm.leader}, isr {sorted(pm.isrs)} of {sorted(pm.replicas)})")
        if short:
            return f"{len(short)} partitions not fully in sync, e.g. {short[:3]}"
        return None
