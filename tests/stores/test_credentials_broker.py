"""Minted logins in broker mode against a real PostgreSQL (issue 29): the broker mints while it
serves the run request and hands the login over in the payload; the worker's run close sends
one more request that revokes it; a run that never closes (a killed task) leaves a login that
stops working after its ttl and that ``pipekey credentials sweep`` on the API server drops.
The worker and the API server are two Pipekeys in one process here (the deployment test has
them in two); only the API server's holds the admin connection."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import pipekey
from pipekey import redact
from pipekey.broker import (
    brokered_run,
    close_request_key,
    decode_closed,
    decode_payload,
    request_key,
)
from pipekey.credentials.base import MIN_TTL_ENV
from pipekey.errors import AccessDenied
from pipekey.teams import TeamBroker

from ..extras import need
from .test_credentials_postgres import admin_uri, connect, run_roles, setup_roles

psycopg2 = need("postgres")

MANIFEST = """
env = "prod"
chain = ["local"]
[backends.local]
type = "local"
[audit]
sinks = [{{ type = "file", path = ".pipekey/audit.jsonl" }}]

[credentials.warehouse_rw]
type = "postgres_role"
admin = "connections/warehouse_admin"
member_of = ["lkt_etl_writer"]
ttl = {ttl}

[pipelines.loader]
scope = "loader/{{account}}"
requires = ["api_token"]
connections = {{ warehouse = "dynamic:warehouse_rw" }}
teams = ["marketing"]

[pipelines.ledger]
scope = "ledger"
connections = {{ warehouse = "dynamic:warehouse_rw" }}
teams = ["finance"]
"""


@pytest.fixture
def server(isolated: Path, master_key: str, postgres: dict[str, Any], monkeypatch):
    """The API server's side: the manifest, the store with the admin connection, a broker."""
    setup_roles(postgres)
    monkeypatch.setenv(MIN_TTL_ENV, "2")
    (isolated / "pipekey.toml").write_text(MANIFEST.format(ttl=3))
    lk = pipekey.load(isolated / "pipekey.toml")
    lk.set("connections/warehouse_admin", admin_uri(postgres))
    lk.set("loader/acct_42/api_token", "fake-broker-token-42")
    yield TeamBroker(lk)
    lk.close()


def _fetch(team_broker: TeamBroker, team: str, sent: list[str]):
    def fetch(key: str) -> str:
        sent.append(key)
        return team_broker.answer(key, team)
    return fetch


def _worker_run(team_broker: TeamBroker, team: str = "marketing", sent: list | None = None):
    return brokered_run(team_broker.lk.manifest, "loader", _fetch(team_broker, team,
                                                                  [] if sent is None else sent),
                        params={"account": "acct_42"}, run_name="loader__manual__1__load")


def test_the_task_connects_with_its_own_login_and_close_revokes_it(server, postgres,
                                                                 isolated: Path) -> None:
    """The worker's run holds a login the API server minted (its own role, the group's
    grants, not the admin); the run's close sends one more request and the role is gone."""
    sent: list[str] = []
    with _worker_run(server, sent=sent) as run:
        conn = run.connection("warehouse")
        assert conn.login.startswith("lk_loader_")
        db = connect(conn)
        with db, db.cursor() as cur:
            cur.execute("SELECT current_user")
            assert cur.fetchone()[0] == conn.login
        db.close()
        assert run_roles(postgres) == [conn.login]
        assert run.lease("warehouse").login == conn.login
        with pytest.raises(AccessDenied):  # the admin connection is the API server's alone
            run.get("connections/warehouse_admin")
        assert len(sent) == 1
        # the API server counts the login as open (bounded per team and pipeline)
        assert list(server.open_logins._open[("marketing", "loader")]) == [conn.login]
    assert len(sent) == 2  # the close request
    assert run_roles(postgres) == []
    assert server.open_logins._open[("marketing", "loader")] == {}
    with pytest.raises(psycopg2.OperationalError):
        connect(conn)
    events = [json.loads(line) for line in
              (isolated / ".pipekey" / "audit.jsonl").read_text().splitlines()]
    minted = [(e["event"], e["outcome"], e["run"]) for e in events
              if e["key"] == "dynamic:warehouse_rw"]
    assert minted == [("mint", "ok", "marketing/loader__manual__1__load"),
                      ("revoke", "ok", "marketing/loader__manual__1__load")]


def test_the_admin_connection_never_reaches_the_worker(server, postgres) -> None:
    """The payload holds the run's login and a sealed ticket, never the admin connection's
    password or login."""
    from .test_credentials_postgres import ADMIN, ADMIN_PASSWORD

    text = server.run(request_key("loader", None, {"account": "acct_42"}), "marketing")
    try:
        assert ADMIN_PASSWORD not in text and ADMIN not in text
        payload = decode_payload(text)
        assert set(payload.minted) == {"warehouse"}
        assert "warehouse_admin" not in text
    finally:  # hand the login back as the worker would
        for minted in decode_payload(text).minted.values():
            server.answer(close_request_key("loader", minted), "marketing")
    assert run_roles(postgres) == []


def test_a_close_request_of_another_team_or_a_forged_ticket_is_refused(server,
                                                                      postgres) -> None:
    """Only the team the login was minted for can have it revoked, and only with the
    ticket the API server sealed: another team's request, or a ticket changed by one
    character, is refused with a message (the login stays until its owner closes)."""
    text = server.run(request_key("loader", None, {"account": "acct_42"}), "marketing")
    minted = decode_payload(text).minted["warehouse"]
    with pytest.raises(AccessDenied, match="team 'finance': the close request's ticket is not "
                                           "one of this team's runs of pipeline 'ledger'"):
        decode_closed(server.answer(close_request_key("ledger", minted), "finance"))
    flipped = minted.ticket[:-2] + ("A" if minted.ticket[-2] != "A" else "B") + \
        minted.ticket[-1]
    with pytest.raises(AccessDenied, match="ticket was not made by this API server"):
        decode_closed(server.answer(close_request_key("loader", replace(minted, ticket=flipped)),
                                 "marketing"))
    assert run_roles(postgres) == [minted.login]
    assert decode_closed(server.answer(close_request_key("loader", minted), "marketing")) == \
        minted.login
    assert run_roles(postgres) == []


def test_a_run_that_never_closes_expires_by_ttl_and_sweep_drops_it(server, postgres) -> None:
    """A task killed in its run sends no close request: its login works until the ttl,
    then PostgreSQL refuses it, and `credentials sweep` on the API server drops it."""
    run = _worker_run(server).open()  # never closed: what a SIGKILL leaves
    conn = run.connection("warehouse")
    connect(conn).close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connect(conn).close()
        except psycopg2.OperationalError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the minted login still works 30 s after a 3 s ttl")
    assert run_roles(postgres) == [conn.login]
    assert server.lk.minter("warehouse_rw").sweep() == [conn.login]
    assert run_roles(postgres) == []
    redact.register(conn.password or "")
