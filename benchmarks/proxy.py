"""A fault-injecting, latency-adding HTTP proxy on loopback, for tests and benchmarks.

It lives beside the package, not in it: ``tests/stores/test_faults.py`` and ``benchmarks/compare.py``
import it from a source checkout (``from benchmarks.proxy import LoopbackProxy``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["LoopbackProxy"]


class LoopbackProxy:
    """An HTTP proxy on 127.0.0.1 in front of an AWS-style endpoint (moto, say).

    It adds ``rtt`` seconds to every request, counts requests per API action (``counts``;
    ``requests`` in all), records when the upstream was busy (``busy``), and injects faults:
    each request takes the next action from ``plan`` (then ``"pass"``): ``("status", 500)``
    answers that status, ``("throttle",)`` answers AWS-style throttling, ``("delay", s)``
    waits then forwards, ``("drop",)`` closes the connection unanswered (an outage as a
    client sees it). ``fault`` (default None) is the action of every request past the plan,
    for a fault that lasts a while (``benchmarks/broker_load.py``). ``close()`` stops it:
    new connections are refused and kept-alive ones dropped. Used by pipekey's fault tests
    (``tests/stores/test_faults.py``) and ``benchmarks/compare.py``.
    """

    def __init__(self, upstream: str, rtt: float = 0.0) -> None:
        self.upstream, self.rtt = upstream.rstrip("/"), rtt
        self.counts: Counter[str] = Counter()
        self.busy: list[tuple[float, float]] = []
        self.plan: list = []
        self.requests = 0
        self.down = False
        self.fault: tuple | None = None
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the AWS JSON protocols are all POST
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if proxy.down:  # a kept-alive connection after close(): drop it
                    return self._drop()
                action = proxy._next((self.headers.get("X-Amz-Target") or "?").rpartition(".")[2])
                if action[0] == "drop":
                    return self._drop()
                time.sleep(proxy.rtt + (action[1] if action[0] == "delay" else 0))
                if action[0] == "status":
                    return self._send(action[1], json.dumps({"__type": "InternalServerError",
                                                             "message": "injected"}).encode())
                if action[0] == "throttle":
                    return self._send(400, json.dumps({"__type": "ThrottlingException",
                                                       "message": "Rate exceeded"}).encode())
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(proxy.upstream + self.path, data=body,
                                                 headers=headers, method="POST")
                started = time.perf_counter()
                try:
                    with urllib.request.urlopen(request, timeout=60) as r:
                        status, data, ctype = r.status, r.read(), r.headers.get("Content-Type")
                except urllib.error.HTTPError as e:
                    status, data, ctype = e.code, e.read(), e.headers.get("Content-Type")
                with proxy._lock:
                    proxy.busy.append((started, time.perf_counter()))
                self._send(status, data, ctype)

            def _drop(self) -> None:
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _send(self, status: int, data: bytes, ctype: str | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", ctype or "application/x-amz-json-1.1")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def log_message(self, *args) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # noqa: ANN001
                pass  # a client that went away (an API server killed mid-request)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _next(self, action_name: str) -> tuple:
        with self._lock:
            self.requests += 1
            self.counts[action_name] += 1
            action = self.plan.pop(0) if self.plan else (self.fault or "pass")
        return (action,) if isinstance(action, str) else action

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()
            self.busy.clear()
            self.requests = 0

    def close(self) -> None:
        """Stop: new connections are refused, kept-alive ones are dropped."""
        self.down = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
