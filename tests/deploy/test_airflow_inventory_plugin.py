"""The inventory's Airflow plugin in a real Airflow 3 api-server, in a real browser.

Lean: one multi-team deployment (examples/airflow/deploy.py, broker mode, teams ``team_a`` and
``team_b``), the api-server alone (a plugin's page needs nothing else), SimpleAuthManager
users of each team and one of no team. The plugin is loaded from the plugins folder (a
one-line module importing it), as the ``airflow.plugins`` entry point loads it once
installed. Checks: Airflow's authentication guards the pages (401 without a login), each
user sees their team's pipelines and keys and ``shared/`` only (no team: ``shared/``
alone), the menu entry is listed, and no seeded value appears in the DOM or any response.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("airflow")
pytest.importorskip("fastapi")
pytest.importorskip("dlt")  # deploy.py's stand-in APIs come with the quickstart's extras

from pipekey.redact import encodings  # noqa: E402
from tests.browser import browser  # noqa: E402
from tests.inventory_scenario import MANIFEST, Scenario, seed  # noqa: E402

from .airflow_deploy import deploy_module  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

USERS = {"alice": ("team_a", "fake-pw-alice-31"), "bob": ("team_b", "fake-pw-bob-47"),
         "carol": (None, "fake-pw-carol-59")}
ADS, BILLING, SHARED = ("marketing/ads/acct_42/api_token", "finance/billing/stripe_key",
                        "shared/slack_token")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    deploy = deploy_module()
    work = tmp_path_factory.mktemp("inventory_plugin")
    bundles = {team: work / f"bundle_{team}" for team in ("team_a", "team_b")}
    for folder in bundles.values():
        folder.mkdir()
    plugins = work / "plugins"
    plugins.mkdir()
    (plugins / "pipekey_inventory.py").write_text(
        "from pipekey.integrations.airflow_ui import PipekeyInventoryPlugin  # noqa: F401\n")
    (work / "source.toml").write_text(MANIFEST)
    passwords = work / "passwords.json"
    passwords.write_text(json.dumps({u: pw for u, (_, pw) in USERS.items()}))
    users = ",".join(f"{u}:viewer:{t}" if t else f"{u}:viewer" for u, (t, _) in USERS.items())
    seeded: list[Scenario] = []
    running = deploy.Deployment(
        work / "deployment", log=lambda *a: None, dag_ids=(),
        manifest_source=work / "source.toml", teams=bundles, broker=True,
        seed=lambda d: seeded.append(seed(d.manifest, d.master_key)),
        extra_env={"AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
                   "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users,
                   "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                   "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False"})
    try:
        running.setup()
        args = [a.format(port=running.port) for a in deploy.COMPONENTS["api-server"]]
        running._spawn("api-server", [sys.executable, "-m", "airflow", *args])
        running._wait_for("the api-server", running._api_up, 180)
        running.base = f"http://127.0.0.1:{running.port}"
        running.scenario = seeded[0]
        yield running
    finally:
        running.stop()


def _http(url: str, token: str | None = None, body: dict[str, str] | None = None,
          cookie: bool = False) -> tuple[int, str, str]:
    """(status, body, headers)."""
    headers = {"Content-Type": "application/json"} if body else {}
    if token:
        headers["Cookie" if cookie else "Authorization"] = \
            f"_token={token}" if cookie else f"Bearer {token}"
    data = json.dumps(body).encode() if body else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(), str(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), str(exc.headers)


def _login(base: str, user: str) -> str:
    status, text, _ = _http(f"{base}/auth/token", body={"username": user,
                                                        "password": USERS[user][1]})
    assert status == 201, text
    return str(json.loads(text)["access_token"])


def _no_value(scenario: Scenario, text: str, where: str) -> None:
    for value in scenario.all_values():
        for form in encodings(value):
            assert form not in text, f"a seeded value appears in {where}"


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    yield from browser(tmp_path / "profile")


def test_pages_need_airflow_login_and_the_menu_lists_them(airflow: Any) -> None:
    base = airflow.base
    assert _http(f"{base}/pipekey/")[0] == 401
    assert _http(f"{base}/pipekey/key/shared/slack_token")[0] == 401
    assert _http(f"{base}/pipekey/", token="not-a-jwt", cookie=True)[0] in (401, 403)
    status, text, _ = _http(f"{base}/api/v2/plugins", token=_login(base, "alice"))
    assert status == 200, text
    views = [v for p in json.loads(text)["plugins"] for v in p["external_views"]]
    assert {"name": "Secrets inventory", "href": "/pipekey/"}.items() <= \
        next(v for v in views if v["name"] == "Secrets inventory").items()


@pytest.mark.parametrize("user, sees, hidden", [
    ("alice", [ADS, SHARED], [BILLING, "old/unused"]),
    ("bob", [BILLING, SHARED], [ADS]),
    ("carol", [SHARED], [ADS, BILLING, "ops/notify/webhook"]),
])
def test_each_user_sees_their_teams_only(airflow: Any, driver: Any, tmp_path: Path,
                                         user: str, sees: list[str],
                                         hidden: list[str]) -> None:
    base, scenario = airflow.base, airflow.scenario
    token = _login(base, user)
    driver.get(f"{base}/api/v2/monitor/health")
    driver.add_cookie({"name": "_token", "value": token, "path": "/"})
    pages = ["/pipekey/?env=dev", "/pipekey/findings?env=dev", "/pipekey/graph?env=dev",
             f"/pipekey/key/{SHARED}?env=dev"]
    for page in pages:
        driver.get(base + page)
        source = driver.page_source
        _no_value(scenario, source, f"the DOM of {page} as {user}")
        status, raw, headers = _http(base + page, token=token, cookie=True)
        assert status == 200, (page, raw[:300])
        _no_value(scenario, raw + headers, f"the response of {page} as {user}")
    driver.get(f"{base}/pipekey/?env=dev")
    driver.save_screenshot(str(tmp_path / f"airflow_{user}.png"))
    source = driver.page_source
    team = USERS[user][0]
    assert f"teams: {team or 'none (shared/ only)'}" in source
    for key in sees:
        assert f'data-key="{key}"' in source, (user, key)
    for key in hidden:
        assert key not in source, (user, key)
    for key in hidden:
        assert _http(f"{base}/pipekey/key/{key}?env=dev", token=token, cookie=True)[0] == 404
    if user == "alice":  # the page inside Airflow's own UI, where its menu entry leads
        from selenium.webdriver.support.ui import WebDriverWait

        driver.get(f"{base}/plugin/pipekey-inventory")
        frame = WebDriverWait(driver, 90).until(
            lambda d: d.find_elements("css selector", "iframe[src*='/pipekey/']"))[0]
        driver.switch_to.frame(frame)
        WebDriverWait(driver, 60).until(
            lambda d: d.find_elements("css selector", "#matrix"))
        assert f'data-key="{ADS}"' in driver.page_source
        driver.switch_to.default_content()
        driver.save_screenshot(str(tmp_path / "airflow_nav_alice.png"))
