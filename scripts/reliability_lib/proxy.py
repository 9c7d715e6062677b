"""A TCP proxy in front of the database that can be cut: `cut()` closes every
open connection and stops listening (new connections are refused by the
kernel), `restore()` listens again on the same port."""

from __future__ import annotations

import socket
import threading


class CuttableProxy:
    def __init__(self, upstream: tuple[str, int], port: int):
        self.upstream = upstream
        self.port = port
        self.lock = threading.Lock()
        self.conns: set[socket.socket] = set()
        self.listener: socket.socket | None = None
        self.accepted = 0

    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        s.settimeout(0.2)
        self.listener = s
        threading.Thread(target=self._accept_loop, args=(s,), daemon=True).start()

    def start(self) -> "CuttableProxy":
        self._listen()
        return self

    def _accept_loop(self, listener: socket.socket) -> None:
        while True:
            with self.lock:
                if self.listener is not listener:
                    return
            try:
                client, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                up = socket.create_connection(self.upstream, timeout=5)
                up.settimeout(None)
                client.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.listener is not listener:
                    client.close()
                    up.close()
                    return
                self.conns.update((client, up))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self.lock:
                for s in (src, dst):
                    if s in self.conns:
                        self.conns.discard(s)
                        s.close()

    def cut(self) -> int:
        """Closes the listener and every connection; returns how many
        connections were cut."""
        with self.lock:
            listener, self.listener = self.listener, None
            conns = list(self.conns)
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # stops listening at once
            except OSError:
                pass
            listener.close()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        return len(conns) // 2

    def restore(self) -> None:
        self._listen()

    def stop(self) -> None:
        self.cut()
