"""A tiny stand-in for an ads API, on 127.0.0.1: each account's campaigns, for its own token.

It knows only the SHA-256 of each account's token (never the token), answers 401 to a wrong
or missing one, and counts what it saw, so a run that read another run's token fails loudly.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["AdsApi", "digest"]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AdsApi:
    """``GET /accounts/<account>/campaigns`` with ``Authorization: Bearer <token>``."""

    def __init__(self, token_digests: dict[str, str], campaigns: int = 5) -> None:
        self.token_digests = dict(token_digests)
        self.campaigns = campaigns
        self.seen: Counter[tuple[str, str]] = Counter()   # (account, "ok" | "refused")
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                parts = self.path.strip("/").split("/")
                if len(parts) != 3 or parts[0] != "accounts" or parts[2] != "campaigns":
                    return self._send(404, {"error": "not found"})
                account = parts[1]
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                ok = api.token_digests.get(account) == digest(token)
                with api._lock:
                    api.seen[(account, "ok" if ok else "refused")] += 1
                if not ok:
                    return self._send(401, {"error": f"bad token for account {account}"})
                rows = [{"account": account, "campaign_id": i, "name": f"{account} campaign {i}",
                         "spend_cents": 1000 * (i + 1)} for i in range(api.campaigns)]
                self._send(200, {"campaigns": rows})

            def _send(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:  # keep the demo's output readable
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "AdsApi":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
