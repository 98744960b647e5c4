"""The HTTP plumbing the protocol servers share: routing, counting, fault injection, TLS.

A service subclass lists its routes as ``(method, regex, handler)`` and words its errors in
``error_body``; handlers return ``(status, body)`` or raise :class:`HttpError`. ``fail()``
queues faults (status, optional ``Retry-After``) that the next matching requests get
instead of an answer, so a test can script 429s, 5xx or a 403 at a chosen moment.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit


class HttpError(Exception):
    """Raised by a handler: answered as the service's error shape with this status."""

    def __init__(self, status: int, message: str = "", **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    params: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body or b"{}")


@dataclass
class Fault:
    status: int
    times: int
    route: str | None
    retry_after: float | None
    message: str


class FakeService:
    """One fake API on 127.0.0.1; ``url`` is its base URL. Subclasses set ``routes``."""

    #: (method, path regex with named groups, name of the handler method)
    routes: list[tuple[str, str, str]] = []

    def __init__(self, cert: tuple[Path, Path] | None = None) -> None:
        self.counts: Counter[str] = Counter()
        self.requests: list[tuple[str, str]] = []
        #: seconds added to every answer, and the most requests seen in flight at once
        self.latency = 0.0
        self.inflight = self.max_inflight = 0
        self.lock = threading.RLock()
        self._faults: list[Fault] = []
        self._compiled = [(m, re.compile(p + r"\Z"), h) for m, p, h in self.routes]
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        scheme = "http"
        if cert is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(cert[0]), str(cert[1]))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    # -- for tests ------------------------------------------------------------------------
    def fail(self, status: int, times: int = 1, route: str | None = None,
             retry_after: float | None = None, message: str = "") -> None:
        """The next ``times`` requests (to handler ``route``, or any) get ``status``."""
        with self.lock:
            self._faults.append(Fault(status, times, route, retry_after, message))

    def clear_faults(self) -> None:
        """Drop the queued faults that requests have not used up."""
        with self.lock:
            self._faults.clear()

    def reset_counts(self) -> None:
        with self.lock:
            self.counts.clear()
            self.requests.clear()
            self.max_inflight = 0

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    # -- for subclasses -------------------------------------------------------------------
    def error_body(self, status: int, message: str, extra: dict) -> Any:
        raise NotImplementedError

    def before(self, request: Request, route: str) -> None:
        """Hook run before every handler (authentication, say)."""

    # -- plumbing -------------------------------------------------------------------------
    def _take_fault(self, route: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.route in (None, route):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def dispatch(self, method: str, raw_path: str, headers: dict[str, str],
                 body: bytes) -> tuple[int, Any, dict[str, str]]:
        split = urlsplit(raw_path)
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        path = unquote(split.path)
        for route_method, pattern, name in self._compiled:  # noqa: B007 (used after break)
            match = pattern.match(path)
            if route_method == method and match:
                break
        else:
            return 404, self.error_body(404, f"no route for {method} {path}", {}), {}
        with self.lock:
            self.counts[name] += 1
            self.requests.append((name, path))
        fault = self._take_fault(name)
        if fault is not None:
            extra = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            body = self.error_body(fault.status, fault.message or "injected", {})
            return fault.status, body, extra
        request = Request(method, path, query, headers, body, match.groupdict())
        handler: Callable[[Request], Any] = getattr(self, name)
        with self.lock:
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)
        try:
            if self.latency:
                time.sleep(self.latency)
            self.before(request, name)
            result = handler(request)
        except HttpError as exc:
            headers_out = exc.extra.pop("headers", {})
            return exc.status, self.error_body(exc.status, exc.message, exc.extra), headers_out
        finally:
            with self.lock:
                self.inflight -= 1
        if len(result) == 2:
            return result[0], result[1], {}
        return result

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out as two writes

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload, extra = service.dispatch(self.command, self.path, headers, body)
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                if payload is not None:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_LIST = _serve  # noqa: N815

            def log_message(self, *args: Any) -> None:  # keep pytest output clean
                pass

        return Handler


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pipekey test server")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def now_rfc3339() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
