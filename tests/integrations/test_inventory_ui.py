"""The inventory's pages in a real browser: `pipekey ui` (the real command, in a subprocess)
driven by Debian's chromium. Each page is checked against the store and audit the scenario
set up (tests/inventory_scenario.py), no seeded value may appear in any encoding in the DOM
or in any HTTP response, and a request without the printed token is refused."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Iterator

import pytest

from pipekey.backends.local import generate_master_key
from pipekey.redact import encodings
from tests.browser import browser
from tests.extras import need
from tests.inventory_scenario import Scenario, make

pytestmark = pytest.mark.slow

PAGES = {  # path -> what the page must show
    "/?env=dev": ["marketing/ads/acct_42/api_token", "ops/notify/webhook", "old/unused"],
    "/findings?env=dev": ["fix: pipekey --env dev set marketing/ads/acct_43/api_token",
                          "read 1 time(s) by runs of billing"],
    "/graph?env=dev": ["Access graph"],
    "/pipeline/ads?env=dev": ["marketing/ads/{account}", "ads_report", "team_a",
                              "connection warehouse"],
    "/pipeline/billing?env=dev": ["finance/billing/stripe_key", "stale", "rotate after 1s"],
    "/key/marketing/ads/acct_42/api_token?env=dev": ["ads_report__run_1", "billing (1)",
                                                     "requires api_token"],
    "/key/ops/notify/webhook?env=dev": ["PIPEKEY__OPS__NOTIFY__WEBHOOK", "shadowed"],
}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Scenario]]:
    """`pipekey ui` over the scenario: (base URL, token, scenario); stopped after."""
    need("ui")
    world = make(tmp_path_factory.mktemp("ui") / "world", generate_master_key())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKEY")}
    env.update(world.env)
    proc = subprocess.Popen([sys.executable, "-m", "pipekey", "--env", "dev", "ui"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []],
                              daemon=True)
    reader.start()
    try:
        url = None
        for _ in range(120):  # at most 60 s for the URL
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert proc.poll() is None, "pipekey ui exited"
                continue
            found = re.search(r"open: (http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
            if found:
                url = found.group(1), found.group(2)
                break
        assert url is not None, "pipekey ui printed no URL"
        yield url[0], url[1], world
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        reader.join(timeout=10)
        if proc.stdout:
            proc.stdout.close()


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    yield from browser(tmp_path / "profile")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _get(url: str, headers: dict[str, str] | None = None,
         method: str = "GET") -> tuple[int, bytes]:
    """(status, body and headers), redirects not followed."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, response.read() + str(response.headers).encode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() + str(exc.headers).encode()


def _cookie(base: str, token: str) -> dict[str, str]:
    return {"Cookie": f"pipekey_ui_token_{base.rsplit(':', 1)[1]}={token}"}


def _no_value(world: Scenario, text: str, where: str) -> None:
    for value in world.all_values():
        for form in encodings(value):
            assert form not in text, f"a seeded value ({len(form)} chars) appears in {where}"


def test_a_request_without_the_token_is_refused(served: tuple[str, str, Scenario],
                                                driver: Any, tmp_path: Path) -> None:
    base, token, _ = served
    assert _get(f"{base}/")[0] == 403
    assert _get(f"{base}/?token={token[:-1]}x")[0] == 403
    assert _get(f"{base}/key/old/unused?env=dev")[0] == 403
    port = base.rsplit(":", 1)[1]
    assert _get(f"{base}/", {"Cookie": f"pipekey_ui_token_{port}={token}x"})[0] == 403
    # the token becomes a cookie named for the port, and is redirected out of the URL
    status, raw = _get(f"{base}/key/old/unused?token={token}&env=dev")
    assert status == 303
    assert re.search(r"(?im)^location: /key/old/unused\?env=dev\s*$", raw.decode())
    assert re.search(rf"(?im)^set-cookie: pipekey_ui_token_{port}={re.escape(token)};.*"
                     r"httponly.*samesite=strict", raw.decode())
    assert _get(f"{base}/", _cookie(base, token))[0] == 200
    # another port's (another instance's, another localhost service's) cookie is no key
    assert _get(f"{base}/", {"Cookie": f"pipekey_ui_token={token}"})[0] == 403
    assert _get(f"{base}/?token={token}", method="POST")[0] == 405     # read-only
    assert _get(f"{base}/?token={token}", {"Host": f"evil.example:{port}"})[0] == 403
    driver.get(f"{base}/pipeline/ads?env=dev")
    assert "403" in driver.find_element("tag name", "body").text
    assert "marketing/ads" not in driver.page_source
    driver.save_screenshot(str(tmp_path / "refused.png"))


def test_every_page_shows_the_store_and_the_audit_and_no_value(
        served: tuple[str, str, Scenario], driver: Any, tmp_path: Path) -> None:
    base, token, world = served
    driver.get(f"{base}/?token={token}&env=dev")  # sets the cookie: later pages need no token
    assert driver.current_url == f"{base}/?env=dev"  # the token left the address bar
    assert "matrix" in driver.page_source
    shots = tmp_path / "screenshots"
    shots.mkdir()
    for path, expected in PAGES.items():
        driver.get(base + path)
        source = driver.page_source
        for text in expected:
            assert text in source, f"{path}: {text!r} missing"
        _no_value(world, source, f"the DOM of {path}")
        _no_value(world, driver.find_element("tag name", "body").text, f"the text of {path}")
        status, raw = _get(base + path, _cookie(base, token))
        assert status == 200, path
        _no_value(world, raw.decode(), f"the HTTP response of {path}")
        name = re.sub(r"[^a-z0-9]+", "_", path.split("?")[0]).strip("_") or "matrix"
        driver.save_screenshot(str(shots / f"{name}.png"))
    # the matrix: each key's row carries its state, and the pipelines' columns
    driver.get(f"{base}/?env=dev")
    states = {row.get_attribute("data-key"): row.get_attribute("data-state")
              for row in driver.find_elements("css selector", "#matrix tbody tr")}
    assert states["marketing/ads/acct_43/api_token"] == "missing"
    assert states["finance/billing/stripe_key"] == "stale"
    assert states["ops/notify/webhook"] == "shadowed"
    assert states["old/unused"] == "orphan"
    assert states["marketing/ads/acct_42/api_token"] == "ok"
    heads = [h.text for h in driver.find_elements("css selector", "#matrix th.p")]
    assert heads == ["ads", "billing", "notify"]
    # the key page: versions (metadata) and reads from the audit
    driver.get(f"{base}/key/finance/billing/stripe_key?env=dev")
    versions = driver.find_elements("css selector", "#versions tbody tr")
    assert [v.find_elements("tag name", "td")[1].text for v in versions] == ["1"]
    # the graph: one box per pipeline and backend, edges drawn
    driver.get(f"{base}/graph?env=dev")
    assert len(driver.find_elements("css selector", "svg.graph g.pipeline")) == 3
    assert len(driver.find_elements("css selector", "svg.graph g.backend")) == 2
    assert len(driver.find_elements("css selector", "svg.graph path")) >= 8
    assert sorted(p.name for p in shots.iterdir()) == sorted(
        f"{re.sub(r'[^a-z0-9]+', '_', p.split('?')[0]).strip('_') or 'matrix'}.png"
        for p in PAGES)


def test_teams_narrow_what_a_viewer_sees(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The teams dependency the Airflow plugin gives: a team's pipelines, their keys and
    shared/; no team: shared/ alone (here in-process; the Airflow deployment test does it
    behind Airflow's login)."""
    need("ui")
    import pipekey
    from pipekey.ui.app import InventorySource, create_app

    world = make(tmp_path / "world", generate_master_key())
    for name, value in world.env.items():
        monkeypatch.setenv(name, value)
    lk = pipekey.load(world.manifest, env="dev")
    source = InventorySource(lk, ["dev"])
    for teams, sees, hidden in (
            ({"team_a"}, ["marketing/ads/acct_42/api_token", "shared/slack_token"],
             ["finance/billing/stripe_key", "old/unused", "ops/notify/webhook"]),
            ({"team_b"}, ["finance/billing/stripe_key"], ["marketing/ads/acct_42/api_token"]),
            (set(), ["shared/slack_token"], ["marketing/ads", "finance/billing"])):
        with _serving(create_app(source, lambda teams=teams: teams)) as base:
            page = _get(f"{base}/")[1].decode()
            for key in sees:
                assert f'data-key="{key}"' in page, (teams, key)
            for key in hidden:
                assert key not in page, (teams, key)
            assert _get(f"{base}/key/finance/billing/stripe_key")[0] == \
                (200 if teams == {"team_b"} else 404)
            assert _get(f"{base}/pipeline/ads")[0] == (200 if teams == {"team_a"} else 404)
            # other teams' pipelines, runs and denials are not shown, even on shared/ keys
            shared = _get(f"{base}/key/shared/slack_token")[1].decode()
            assert "notify__run_1" not in shared and "notify (1)" not in shared
            if teams == {"team_a"}:
                ads = _get(f"{base}/key/marketing/ads/acct_42/api_token")[1].decode()
                assert "ads_report__run_1" in ads and "billing" not in ads
    lk.close()


TEAM_B_MANIFEST = """
env = "dev"
[backends.local]
type = "local"
path = "dev.db"
[pipelines.ads]
dags = ["ads*"]
scope = "marketing/ads"
shared = ["db", "gone"]
teams = ["team_a"]
[pipelines.zz_fin_project]
dags = ["fin*"]
scope = "finance/x"
shared = ["db", "fin_only", "gone"]
requires = ["tok"]
teams = ["team_zz"]
"""


def test_a_team_viewer_sees_no_other_teams_pipeline_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Used by lists and findings (a missing key two teams declare) name the viewer's own
    pipelines alone, on every page, shared/ keys included."""
    need("ui")
    import pipekey
    from pipekey.backends.local import LocalBackend
    from pipekey.ui.app import InventorySource, create_app

    key = generate_master_key()
    monkeypatch.setenv("PIPEKEY_MASTER_KEY", key)
    (tmp_path / "pipekey.toml").write_text(TEAM_B_MANIFEST)
    store = LocalBackend("local", tmp_path / "dev.db", master_key=key)
    store.put("shared/db", "fake-db-pw")
    store.close()
    monkeypatch.chdir(tmp_path)
    lk = pipekey.load(str(tmp_path / "pipekey.toml"), env="dev")
    with _serving(create_app(InventorySource(lk, ["dev"]), lambda: {"team_a"})) as base:
        matrix = _get(f"{base}/")[1].decode()
        keys = re.findall(r'data-key="([^"]+)"', matrix)
        assert {"shared/db", "shared/gone"} <= set(keys)
        pages = {p: _get(base + p) for p in ["/", "/findings", "/graph", "/pipeline/ads",
                                             *(f"/key/{k}" for k in keys)]}
        for path, (status, raw) in pages.items():
            assert status == 200, path
            for hidden in ("zz_fin_project", "team_zz"):
                assert hidden not in raw.decode(), (path, hidden)
        # what team_a may see is still there: its own use and its own missing finding
        assert "shared db (required)" in pages["/key/shared/db"][1].decode()
        assert "declared by ads and stored in no backend" in pages["/findings"][1].decode()
    lk.close()


@contextlib.contextmanager
def _serving(app: Any) -> Iterator[str]:
    """``app`` served by uvicorn on 127.0.0.1 in a thread; its base URL."""
    import socket
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_airflow_entry_point_names_the_plugin() -> None:
    """pyproject's ``airflow.plugins`` entry point loads the plugin: the app at /pipekey and
    the menu entry (the deployment test loads the same class from a plugins folder)."""
    need("airflow")
    need("ui")
    from pipekey._compat import tomllib

    root = Path(__file__).resolve().parents[2]
    points = tomllib.loads((root / "pyproject.toml").read_text())["project"]["entry-points"]
    module, _, name = points["airflow.plugins"]["pipekey_inventory"].partition(":")
    with warnings.catch_warnings():  # Airflow's import of starlette.testclient warns
        warnings.simplefilter("ignore", UserWarning)  # StarletteDeprecationWarning
        plugin = getattr(__import__(module, fromlist=[name]), name)
        from airflow.plugins_manager import AirflowPlugin

    assert issubclass(plugin, AirflowPlugin) and plugin.name == "pipekey_inventory"
    assert [a["url_prefix"] for a in plugin.fastapi_apps] == ["/pipekey"]
    assert plugin.external_views[0]["href"] == "/pipekey/"


def test_the_airflow_plugin_imports_no_web_framework() -> None:
    """Airflow imports every plugin in every process that loads plugins, task processes too:
    the plugin builds its FastAPI app on the first request, not at import."""
    need("airflow")
    need("ui")
    code = ("import sys, pipekey.integrations.airflow_ui as ui\n"
            "assert ui.PipekeyInventoryPlugin.fastapi_apps\n"
            "print(sorted(m for m in ('fastapi', 'starlette', 'pipekey.ui.app', "
            "'pipekey.inventory') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
