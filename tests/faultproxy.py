"""A loopback HTTP proxy in front of moto that injects faults, for fault tests.

Each request takes the next action from ``plan`` (then ``default``): ``"pass"`` forwards it;
``("status", 500)`` answers that status; ``("throttle",)`` answers SSM-style throttling;
``("delay", s)`` waits, then forwards. ``close()`` stops listening, so new connections are
refused. Every request is counted; it serves only 127.0.0.1 and stops with the test.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.plan: list = []
        self.default = "pass"
        self.requests = 0
        self.down = False
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - the AWS JSON protocols are all POST
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if proxy.down:  # a kept-alive connection after close(): drop it
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                action = proxy._next()
                if action[0] == "delay":
                    time.sleep(action[1])
                    action = ("pass",)
                if action[0] == "status":
                    return self._reply(action[1], {"__type": "InternalServerError",
                                                   "message": "injected"})
                if action[0] == "throttle":
                    return self._reply(400, {"__type": "ThrottlingException",
                                             "message": "Rate exceeded (injected)"})
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                request = urllib.request.Request(proxy.upstream + self.path, data=body,
                                                 headers=headers, method="POST")
                try:
                    with urllib.request.urlopen(request, timeout=30) as upstream:
                        self._raw(upstream.status, upstream.read(), upstream.headers)
                except urllib.error.HTTPError as exc:
                    self._raw(exc.code, exc.read(), exc.headers)

            def _reply(self, status: int, body: dict) -> None:
                self._raw(status, json.dumps(body).encode(),
                          {"Content-Type": "application/x-amz-json-1.1"})

            def _raw(self, status: int, data: bytes, headers) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type",
                                     headers.get("Content-Type", "application/json"))
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test): nothing to answer

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def _next(self):
        with self._lock:
            self.requests += 1
            action = self.plan.pop(0) if self.plan else self.default
        return (action,) if isinstance(action, str) else action

    def close(self) -> None:
        """Stop: new connections are refused, kept-alive ones are dropped."""
        self.down = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
