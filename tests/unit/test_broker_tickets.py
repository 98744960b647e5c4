"""Broker mode's close tickets (pipekey.broker_leases): sealed under the API server's ticket
key, which is no function of anything a task holds or can guess (review of issue 29: a key
derived from a vault_database's base connection, which the task gets back in its minted
connection, let a task forge tickets and have another team's lease revoked)."""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest

pytest.importorskip("cryptography")

from pipekey import broker_leases  # noqa: E402
from pipekey.errors import AccessDenied, UsageError  # noqa: E402

FIELDS = {"team": "finance", "pipeline": "billing", "run": "r1", "login": "lk_fake_login",
          "expires_at": 1.0, "lease_id": "database/creds/ro/fake-lease"}
#: what a task holding a minted vault_database login knows: its base connection's fields
BASE_CONNECTION = "postgresql://db.example.invalid:5432/warehouse"


@pytest.fixture(autouse=True)
def _fresh_process_key(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(broker_leases.TICKET_KEY_ENV, raising=False)
    monkeypatch.setattr(broker_leases, "_process_key", [])


def _forge(fields: dict, key: bytes, definition: str = "db", env: str = "dev") -> str:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, json.dumps(fields, sort_keys=True).encode(),
                                 f"{definition}\0{env}".encode())
    return base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")


def test_a_ticket_opens_where_it_was_sealed() -> None:
    ticket = broker_leases.seal_ticket(FIELDS, "db", "dev")
    assert broker_leases.open_ticket(ticket, "db", "dev") == FIELDS
    assert "fake-lease" not in ticket and "lk_fake_login" not in ticket
    with pytest.raises(AccessDenied):  # bound to its definition and environment
        broker_leases.open_ticket(ticket, "db", "prod")


def test_a_task_cannot_forge_a_ticket_from_the_connection_it_holds() -> None:
    """The earlier derivation: sha256(context || sha256(each value the definition reads))."""
    guessed = hashlib.sha256(broker_leases._CONTEXT
                             + hashlib.sha256(BASE_CONNECTION.encode()).digest()).digest()
    forged = _forge({**FIELDS, "team": "marketing"}, guessed)
    with pytest.raises(AccessDenied, match="not made by this API server"):
        broker_leases.open_ticket(forged, "db", "dev")


def test_replicas_sharing_the_configured_key_open_each_others_tickets(monkeypatch) -> None:
    monkeypatch.setenv(broker_leases.TICKET_KEY_ENV, "fake-ticket-key-" + "x" * 32)
    ticket = broker_leases.seal_ticket(FIELDS, "db", "dev")
    monkeypatch.setattr(broker_leases, "_process_key", [os.urandom(32)])  # another process
    assert broker_leases.open_ticket(ticket, "db", "dev") == FIELDS


def test_without_the_configured_key_only_this_process_opens_it(monkeypatch) -> None:
    ticket = broker_leases.seal_ticket(FIELDS, "db", "dev")
    monkeypatch.setattr(broker_leases, "_process_key", [os.urandom(32)])  # another process
    with pytest.raises(AccessDenied, match="PIPEKEY_BROKER_TICKET_KEY"):
        broker_leases.open_ticket(ticket, "db", "dev")


def test_a_short_configured_key_is_refused_without_echoing_it(monkeypatch) -> None:
    monkeypatch.setenv(broker_leases.TICKET_KEY_ENV, "fake-short")
    with pytest.raises(UsageError) as info:
        broker_leases.seal_ticket(FIELDS, "db", "dev")
    assert "fake-short" not in str(info.value)


def test_a_replayed_or_late_close_of_an_expired_login_revokes_nothing() -> None:
    """serve_close refuses an expired ticket before it reads anything of the store."""
    ticket = broker_leases.seal_ticket(FIELDS, "db", "dev")  # expires_at 1.0: long past
    with pytest.raises(AccessDenied, match="has expired; nothing to revoke"):
        broker_leases.serve_close(None, "finance", "billing",  # type: ignore[arg-type]
                                  {"warehouse": "db"},
                                  {"definition": "db", "env": "dev", "ticket": ticket})


def test_open_logins_are_bounded_per_team_and_pipeline(monkeypatch) -> None:
    """A task asking for run after run without closing them is refused past the bound; a
    close, or the logins' expiry, makes room again; other pipelines and teams are apart."""
    clock = [1000.0]
    monkeypatch.setattr(broker_leases.time, "time", lambda: clock[0])
    logins = broker_leases.OpenLogins(limit=3)
    for n in range(3):
        logins.admit("finance", "billing")
        logins.add("finance", "billing", {f"lk_{n}": 1060.0})
    with pytest.raises(AccessDenied, match="3 minted logins of pipeline 'billing' are open"):
        logins.admit("finance", "billing")
    logins.admit("finance", "other")        # another pipeline
    logins.admit("marketing", "billing")    # another team
    logins.closed("finance", "billing", "lk_0")
    logins.admit("finance", "billing")      # a close made room
    logins.add("finance", "billing", {"lk_3": 1060.0})
    with pytest.raises(AccessDenied):
        logins.admit("finance", "billing")
    clock[0] = 1061.0                       # all expired
    logins.admit("finance", "billing")


def test_the_bound_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(broker_leases.MAX_OPEN_LOGINS_ENV, "7")
    assert broker_leases.OpenLogins().limit == 7
    monkeypatch.setenv(broker_leases.MAX_OPEN_LOGINS_ENV, "many")
    with pytest.raises(UsageError, match="PIPEKEY_BROKER_MAX_OPEN_LOGINS"):
        broker_leases.OpenLogins()
