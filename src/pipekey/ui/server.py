"""``pipekey ui``: the inventory's pages on 127.0.0.1 only, read-only, behind a random token.

The printed URL carries the token (``?token=...``), as Jupyter's does; the first request
sets it as an HttpOnly, SameSite=Strict cookie named for the port (``pipekey_ui_token_PORT``)
so links need not repeat it, and redirects (303) to the same URL without the token, so it
leaves the address bar and the history. A request with neither
a matching token nor the cookie is refused (403), the comparison in constant time
(:func:`hmac.compare_digest`). A Host header other than 127.0.0.1 or localhost at the
server's port is refused too (DNS rebinding).
"""

from __future__ import annotations

import hmac
import secrets
import socket
from typing import TYPE_CHECKING, Any, Callable

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse

if TYPE_CHECKING:
    from ..client import Pipekey

__all__ = ["COOKIE", "cookie_name", "guarded", "serve"]

COOKIE = "pipekey_ui_token"
HOST = "127.0.0.1"


def cookie_name(port: int) -> str:
    """The token's cookie at ``port``: cookies ignore ports, so a name per port keeps two
    instances (and other localhost services) from sharing or overwriting it."""
    return f"{COOKIE}_{port}"


def guarded(app: FastAPI, token: str, port: int) -> FastAPI:
    """``app`` refusing (403) every request without ``token``."""
    expected = token.encode()
    hosts = {f"{HOST}:{port}".encode(), f"localhost:{port}".encode()}

    cookie = cookie_name(port)

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Any:
        given = request.query_params.get("token") or request.cookies.get(cookie) or ""
        host = request.headers.get("host", "").encode()
        if not hmac.compare_digest(given.encode(), expected) or host not in hosts:
            return PlainTextResponse("403: open the URL pipekey ui printed (it holds the "
                                     "token)\n", status_code=403)
        if not request.query_params.get("token") or request.method not in ("GET", "HEAD"):
            return await call_next(request)
        # the token becomes a cookie, and leaves the address bar and the history
        url = request.url.remove_query_params("token")
        response = RedirectResponse(url.path + (f"?{url.query}" if url.query else ""), 303)
        response.set_cookie(cookie, token, httponly=True, samesite="strict", path="/")
        return response

    return app


def serve(lk: Pipekey, env: str | None, port: int, say: Callable[[str], None]) -> None:
    """Serve until interrupted, printing the URL (with its token) first."""
    import uvicorn

    from .app import InventorySource, create_app

    sock = socket.socket()
    sock.bind((HOST, port))
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(32)
    app = guarded(create_app(InventorySource(lk, [env] if env else None)), token, port)
    say(f"pipekey ui: serving the inventory read-only on http://{HOST}:{port}/")
    say(f"    open: http://{HOST}:{port}/?token={token}")
    say("    Ctrl-C stops it")
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])
