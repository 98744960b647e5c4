"""The inventory's pages (``pipekey[ui]``): FastAPI, Jinja2 templates rendered on the server.

Pages (each takes ``?env=``, default: the first environment served):

* ``/``: the pipelines x keys matrix, a cell coloured by the key's state;
* ``/pipeline/NAME``: its keys, where each resolves, freshness, last reads, its findings;
* ``/key/KEY``: who uses and reads it, where it resolves, its versions (metadata, no value);
* ``/findings``: every finding with its fix;
* ``/graph``: the access graph (pipeline -> key -> backend) as an SVG drawn here.

Read-only: only GET and HEAD. What a viewer sees is narrowed by ``teams``, a FastAPI
dependency the host gives: None for everything; a set of Airflow team names for the
pipelines serving those teams, the keys they use and ``shared/`` (an empty set:
``shared/`` alone). Pages never hold a value: the inventory holds none.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from ..backends.base import Versioned
from ..errors import PipekeyError
from ..inventory import STATES, EnvInventory, Finding, Inventory, KeyEntry, build
from ..keys import is_under
from ..policy import SHARED

if TYPE_CHECKING:
    from ..audit_index import AuditIndex
    from ..client import Pipekey

__all__ = ["InventorySource", "create_app", "render"]

TEMPLATES = Path(__file__).parent / "templates"
#: no script, no outside resource; frames: see create_app
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'"


class InventorySource:
    """Builds the inventory for the pages: the audit index is kept and read incrementally,
    the stores are listed again for each page (at most one build at a time)."""

    def __init__(self, lk: Pipekey, envs: list[str] | None = None) -> None:
        from ..audit_index import AuditIndex
        from ..inventory import audit_path

        self.lk, self.envs = lk, envs
        self.audit: AuditIndex = AuditIndex(audit_path(lk))
        self._lock = threading.Lock()

    def inventory(self) -> Inventory:
        with self._lock:
            return build(self.lk, self.envs, self.audit)


@dataclass
class View:
    """One environment of the inventory as one viewer may see it."""

    env: EnvInventory
    envs: list[str]
    pipelines: list[str]
    keys: list[KeyEntry]
    findings: list[Finding]
    teams: set[str] | None


def narrow(inv: Inventory, env: str | None, teams: set[str] | None) -> View:
    chosen = next((e for e in inv.envs if e.env == env), inv.envs[0])
    if teams is None:
        pipelines = sorted(inv.pipelines)
    else:
        pipelines = sorted(n for n, c in inv.pipelines.items() if teams & set(c.teams))
    shown = set(pipelines)
    keys = [e for e in chosen.keys.values()
            if teams is None or is_under(e.key, SHARED) or shown & {u.pipeline for u in e.uses}]
    if teams is not None:  # other teams' pipelines, runs and denials are not theirs to see
        keys = [dataclasses.replace(
            e, reads=e.reads.seen_by(shown) if e.reads else None, teams=e.teams & teams,
            uses=[u for u in e.uses if u.pipeline in shown
                  or u.pipeline.startswith("credential:")]) for e in keys]
    visible = {e.key for e in keys}
    findings = [f for f in chosen.findings if f.key in visible
                and (f.pipeline is None or teams is None or f.pipeline in shown)]
    return View(chosen, [e.env for e in inv.envs], pipelines, keys, findings, teams)


def _jinja() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.globals["STATES"] = STATES
    return env


_ENV: Any = None


def render(template: str, **context: Any) -> str:
    """A page as HTML (the Jinja2 environment is made once)."""
    global _ENV
    if _ENV is None:
        _ENV = _jinja()
    return str(_ENV.get_template(template).render(**context))


def matrix_rows(view: View) -> list[tuple[KeyEntry, list[str]]]:
    """(key, the state class of each pipeline's cell: the key's state where it uses it)."""
    rows = []
    for e in view.keys:
        users = {u.pipeline for u in e.uses}
        rows.append((e, [e.state if p in users else "" for p in view.pipelines]))
    return rows


def create_app(source: InventorySource | Callable[[], InventorySource],
               teams: Callable[..., set[str] | None] | None = None,
               frame_ancestors: str = "'none'") -> FastAPI:
    """The app. ``source``: an :class:`InventorySource` or a function making one on first
    use; ``teams``: the FastAPI dependency saying which teams the viewer sees (None: all)."""
    from .graph import svg

    app = FastAPI(title="pipekey inventory", docs_url=None, redoc_url=None, openapi_url=None)
    held: list[InventorySource] = []

    def get_source() -> InventorySource:
        if not held:
            held.append(source if isinstance(source, InventorySource) else source())
        return held[0]

    def no_teams() -> None:
        return None

    viewer = Depends(teams or no_teams)

    @app.middleware("http")
    async def read_only(request: Request, call_next: Any) -> Any:
        if request.method not in ("GET", "HEAD"):
            return Response("read-only\n", status_code=405, media_type="text/plain")
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = \
            f"{CSP}; frame-ancestors {frame_ancestors}"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def page(request: Request, template: str, view: View, **context: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "").rstrip("/")
        return HTMLResponse(render(template, base=base, view=view, env=view.env.env,
                                   page=template.removesuffix('.html'), **context))

    def current(env: str | None, seen: set[str] | None) -> View:
        return narrow(get_source().inventory(), env, seen)

    @app.get("/", response_class=HTMLResponse)
    def matrix(request: Request, env: str | None = None, seen: Any = viewer) -> HTMLResponse:
        view = current(env, seen)
        return page(request, "matrix.html", view, rows=matrix_rows(view))

    @app.get("/pipeline/{name}", response_class=HTMLResponse)
    def pipeline(request: Request, name: str, env: str | None = None,
                 seen: Any = viewer) -> HTMLResponse:
        view = current(env, seen)
        if name not in view.pipelines:
            raise HTTPException(404, "no such pipeline here")
        keys = [e for e in view.keys if name in {u.pipeline for u in e.uses}]
        config = get_source().lk.manifest.pipelines[name]  # type: ignore[union-attr]
        return page(request, "pipeline.html", view, name=name, config=config, keys=keys,
                    findings=[f for f in view.findings
                              if f.pipeline == name or f.key in {e.key for e in keys}],
                    graph=svg([name], keys, view.env.chain))

    @app.get("/key/{key:path}", response_class=HTMLResponse)
    def key_page(request: Request, key: str, env: str | None = None,
                 seen: Any = viewer) -> HTMLResponse:
        view = current(env, seen)
        entry = next((e for e in view.keys if e.key == key), None)
        if entry is None:
            raise HTTPException(404, "no such key here")
        shown = {n: c for n, c in get_source().lk.manifest.pipelines.items()  # type: ignore[union-attr]
                 if n in view.pipelines}
        return page(request, "key.html", view, entry=entry, pipelines=shown,
                    timeline=_timeline(get_source().lk, view.env.env, entry),
                    findings=[f for f in view.findings if f.key == key])

    @app.get("/findings", response_class=HTMLResponse)
    def findings(request: Request, env: str | None = None, seen: Any = viewer) -> HTMLResponse:
        return page(request, "findings.html", current(env, seen))

    @app.get("/graph", response_class=HTMLResponse)
    def graph(request: Request, env: str | None = None, seen: Any = viewer) -> HTMLResponse:
        view = current(env, seen)
        used = [e for e in view.keys if e.uses]
        return page(request, "graph.html", view, graph=svg(view.pipelines, used,
                                                           view.env.chain), shown=len(used))

    return app


def _timeline(lk: Pipekey, env: str, entry: KeyEntry) -> list[dict[str, Any]]:
    """Every version of the key in each backend holding it (metadata: no value)."""
    rows: list[dict[str, Any]] = []
    chain = {b.name: b for b in lk.chain_for(env)}
    for place in entry.places:
        backend = chain.get(place.backend)
        if backend is not None and backend.origin().history_reads_values:
            backend = None  # its history would fetch values: the place's version alone
        if not isinstance(backend, Versioned):
            rows.append({"backend": place.backend, "version": place.version or "-",
                         "at": place.changed, "by": None, "deleted": False})
            continue
        try:
            history = backend.history(entry.key)
        except PipekeyError as exc:
            rows.append({"backend": place.backend, "error": str(exc)})
            continue
        rows += [{"backend": place.backend, "version": v.version, "at": v.created_at,
                  "by": v.created_by, "deleted": v.deleted} for v in reversed(history)]
    return rows


def audit_index_of(source: InventorySource) -> AuditIndex:
    return source.audit
