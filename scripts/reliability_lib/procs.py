"""Child processes of the harness: each in its own process group, output to
a log file, and every one of them killed when the harness exits for any
reason (normal end, exception, Ctrl-C, SIGTERM)."""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

_LIVE: list["Proc"] = []


def _kill_all() -> None:
    for proc in list(_LIVE):
        proc.kill9()


atexit.register(_kill_all)


def _on_term(signum, frame):  # noqa: ARG001
    # Unwinds through every try/finally of the harness, then atexit.
    raise KeyboardInterrupt(f"signal {signum}")


signal.signal(signal.SIGTERM, _on_term)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """One OS process of the system under test."""

    def __init__(self, name: str, argv: list[str], cwd: Path, log: Path, env: dict | None = None):
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.log = log
        self.env = env
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Proc":
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.update(self.env or {})
        self.popen = subprocess.Popen(
            self.argv, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )
        out.close()
        _LIVE.append(self)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def kill9(self) -> None:
        """`kill -9` of the process (and anything it started in its group)."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if self in _LIVE:
            _LIVE.remove(self)

    def terminate(self, timeout: float = 60.0) -> int | None:
        """SIGTERM to the process; its exit status, or None (then killed) if it
        did not exit within `timeout`."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
        try:
            rc = self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None
        # Anything left in its group (there should be nothing) goes too.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self in _LIVE:
            _LIVE.remove(self)
        return rc


class LogWatch:
    """Reads a JSON-lines log incrementally (partial last lines are kept)."""

    def __init__(self, path: Path):
        self.path = path
        self.pos = 0
        self.rest = b""

    def new_lines(self) -> list[dict]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                data = f.read()
                self.pos = f.tell()
        except FileNotFoundError:
            return []
        data = self.rest + data
        *lines, self.rest = data.split(b"\n")
        out = []
        for line in lines:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"message": line.decode("utf-8", "replace")})
        return out


def wait_for_line(path: Path, needle: str, timeout: float, proc: Proc | None = None) -> str:
    """Waits until a line containing `needle` appears in the log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            for line in path.read_text(errors="replace").splitlines():
                if needle in line:
                    return line
        except FileNotFoundError:
            pass
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{proc.name} exited (status {proc.returncode()}) before '{needle}'; log {path}")
        time.sleep(0.2)
    raise RuntimeError(f"no '{needle}' in {path} within {timeout:.0f} s")
