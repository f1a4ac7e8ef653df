"""A TCP proxy in front of a real local service, for fault injection.

The fault matrix (docs/reliability.md) must break PostgreSQL, Redis, Neo4j and the
Pub/Sub emulator in the middle of deliveries without stopping the shared servers that
the rest of the suite uses. Clients under test connect through a :class:`FaultProxy`;
the test then takes the service "down" (new connections refused, live ones cut),
"blackholes" it (connections accepted, nothing answered: a hung dependency), or slows
every chunk, and restores it. The real server never notices; the client sees exactly
what a dead, hung or slow peer looks like on the wire.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from typing import Literal

Mode = Literal["up", "down", "blackhole", "slow"]


class FaultProxy:
    """Forward ``127.0.0.1:port`` to ``127.0.0.1:target``; switch :attr:`mode` at will."""

    def __init__(self, target_port: int, *, slow_s: float = 0.5) -> None:
        self.target_port = target_port
        self.slow_s = slow_s
        self.mode: Mode = "up"
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._live: set[socket.socket] = set()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.accepted = 0

    # ------------------------------------------------------------------ control

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def set(self, mode: Mode) -> None:
        """Switch mode; ``down`` and ``blackhole`` also cut the connections now open, as
        a crashed or partitioned server would."""
        self.mode = mode
        if mode in ("down", "blackhole"):
            self.cut()

    def cut(self) -> None:
        with self._lock:
            live, self._live = self._live, set()
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()

    @contextlib.contextmanager
    def fault(self, mode: Mode) -> Iterator[None]:
        self.set(mode)
        try:
            yield
        finally:
            self.set("up")

    def close(self) -> None:
        self._stopped.set()
        self.cut()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plumbing

    def _track(self, *socks: socket.socket) -> None:
        with self._lock:
            self._live.update(socks)

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            if self.mode == "down":
                with contextlib.suppress(OSError):
                    client.close()
                continue
            if self.mode == "blackhole":
                self._track(client)
                threading.Thread(target=self._swallow, args=(client,), daemon=True).start()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            self._track(client, upstream)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()

    def _swallow(self, client: socket.socket) -> None:
        """Read and drop everything: the peer looks alive and never answers."""
        with contextlib.suppress(OSError):
            while not self._stopped.is_set() and client.recv(65536):
                pass

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while not self._stopped.is_set():
                if self.mode in ("down", "blackhole"):
                    break
                readable, _, _ = select.select(list(peers), [], [], 0.2)
                for sock in readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    if self.mode == "slow":
                        time.sleep(self.slow_s)
                    peers[sock].sendall(chunk)
        except (OSError, ValueError):
            return
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.close()
            with self._lock:
                self._live.discard(a)
                self._live.discard(b)
