"""Broker mode's minted logins: the API server mints them, the worker's run close revokes them.

A pipeline that maps a connection to ``dynamic:NAME`` (docs/credentials.md) gets its login in
broker mode as in direct mode, but minted where the admin connection lives: the API server
mints while it serves the run request (:meth:`pipekey.teams.TeamBroker.run`) and hands the
login over in the payload (:func:`minted_entries`) instead of revoking it when its own side
of the run closes. The worker's run holds it through a :class:`BrokeredMinter`, whose
``revoke`` (the run's close, failed or not) sends one more request, a *close request*
(:func:`close_request_key`), that the API server serves with :func:`serve_close`: it revokes
the login there. A task that dies leaves the login to its definition's ``ttl`` (it stops
working by itself) and to ``pipekey credentials sweep`` on the API server, which drops it.
The admin connection never leaves the API server.

A close request carries a *ticket* the API server made when it minted the login: the team,
pipeline, run, login, expiry and (Vault) lease id, encrypted and authenticated with AES-GCM
under the *ticket key*: ``$PIPEKEY_BROKER_TICKET_KEY`` (at least 32 characters, random; set
it on every API server process, and on nothing else, so that any replica or a restarted
server can close a login), else a random key of this process (a login is then closed only by
the process that minted it; others leave it to its ttl and the sweep). The key is no
function of what a run can see or guess: a task can neither forge a ticket nor read a Vault
lease id from one (an earlier key derived from the definition's connection let a task holding
a ``vault_database`` base connection forge tickets, and guess a weak admin password offline).
The API server revokes only a login whose ticket names the team the close request comes
from, a pipeline of that team mapping that definition, and, for ``postgres_role``, a role
pipekey's definition made (its marker).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .connection import Connection
from .credentials.base import Lease, audit_credential
from .errors import AccessDenied, CredentialError, PipekeyError, UsageError

if TYPE_CHECKING:
    from .client import Pipekey
    from .run import Run

__all__ = ["BrokeredMinter", "Minted", "OpenLogins", "close_body", "minted_entries", "open_ticket",
           "seal_ticket", "serve_close"]

_CONTEXT = b"pipekey broker close ticket v1\0"
_MAX_TICKET = 1200  # characters of base64url: far more than a ticket needs


@dataclass(frozen=True)
class Minted:
    """One login the broker minted for a run, as the worker holds it. ``repr`` hides the
    password (the :class:`~pipekey.Connection` does)."""

    connection: Connection
    definition: str
    login: str
    expires_at: float
    env: str
    ticket: str


#: the API server's ticket key (see the module docstring); never in a worker
TICKET_KEY_ENV = "PIPEKEY_BROKER_TICKET_KEY"
_MIN_TICKET_KEY = 32
_process_key: list[bytes] = []
_process_key_lock = threading.Lock()


def _key() -> bytes:
    configured = os.environ.get(TICKET_KEY_ENV)
    if configured is not None:
        if len(configured) < _MIN_TICKET_KEY:
            raise UsageError(f"${TICKET_KEY_ENV} must be at least {_MIN_TICKET_KEY} random "
                             "characters (e.g. python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))')")
        secret = configured.encode("utf-8")
    else:
        with _process_key_lock:
            if not _process_key:
                _process_key.append(os.urandom(32))
        secret = _process_key[0]
    return hashlib.sha256(_CONTEXT + hashlib.sha256(secret).digest()).digest()


def _aad(definition: str, env: str) -> bytes:
    return f"{definition}\0{env}".encode()


def seal_ticket(fields: Mapping[str, Any], definition: str, env: str) -> str:
    """``fields`` as a ticket only the API server can open (base64url, no padding)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce = os.urandom(12)
    sealed = AESGCM(_key()).encrypt(
        nonce, json.dumps(dict(fields), sort_keys=True).encode(), _aad(definition, env))
    return base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")


def open_ticket(ticket: str, definition: str, env: str) -> dict[str, Any]:
    """The fields of a ticket :func:`seal_ticket` made for ``definition`` in ``env``.

    Raises:
        AccessDenied: not a ticket of this definition, or sealed under another key.
    """
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    bad = AccessDenied(f"credential {definition!r}: the close request's ticket was not made by "
                       f"this API server for this definition (forged, or another process's "
                       f"ticket key: set ${TICKET_KEY_ENV} on every API server; the login "
                       "expires by its ttl)")
    if not isinstance(ticket, str) or len(ticket) > _MAX_TICKET:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(ticket + "=" * (-len(ticket) % 4))
        plain = AESGCM(_key()).decrypt(raw[:12], raw[12:], _aad(definition, env))
        fields = json.loads(plain)
    except (ValueError, binascii.Error, InvalidTag):
        raise bad from None
    if not isinstance(fields, dict):
        raise bad
    return fields


# -- the API server's side ------------------------------------------------------------------
def minted_entries(run: Run, team: str) -> dict[str, dict[str, Any]]:
    """What the payload carries for each login ``run`` minted: its connection (a value),
    definition, login, expiry, environment and close ticket."""
    out: dict[str, dict[str, Any]] = {}
    for conn, definition in run.dynamic.items():
        lease = run.lease(conn)
        ticket = seal_ticket({"team": team, "pipeline": run.pipeline, "run": run.name,
                              "login": lease.login, "expires_at": lease.expires_at,
                              "lease_id": lease.lease_id},
                             definition, run.environment)
        out[conn] = {"value": lease.connection.replace(conn_id=None).to_json(),
                     "definition": definition, "login": lease.login,
                     "expires_at": lease.expires_at, "env": run.environment, "ticket": ticket}
    return out


def serve_close(lk: Pipekey, team: str, pipeline: str, definitions: Mapping[str, str],
                close: Mapping[str, str], on_closed: Callable[[str], None] | None = None) -> str:
    """Revoke the login a close request names; returns the answer (JSON).

    Args:
        lk: the team's Pipekey on the API server.
        team: the team Airflow authenticated.
        pipeline: the request's pipeline (it serves ``team``: the caller checked).
        definitions: the pipeline's minted connections (connection -> definition).
        close: the request's ``definition``, ``env`` and ``ticket``.

    Raises:
        AccessDenied: the pipeline does not map the definition, or the ticket is not this
            team's for this pipeline.
        CredentialError: the store refused to revoke (the login then expires by its ttl).
    """
    definition, env = close["definition"], close["env"]
    if definition not in definitions.values():
        raise AccessDenied(f"Airflow team {team!r}: pipeline {pipeline!r} maps no connection "
                           f"to credential {definition!r}; nothing of it to revoke")
    fields = open_ticket(close["ticket"], definition, env)
    if fields.get("team") != team or fields.get("pipeline") != pipeline:
        raise AccessDenied(f"Airflow team {team!r}: the close request's ticket is not one of "
                           f"this team's runs of pipeline {pipeline!r}")
    login, run_name = str(fields.get("login")), str(fields.get("run"))
    if float(fields.get("expires_at") or 0) <= time.time():  # a replayed or late close
        raise AccessDenied(f"credential {definition!r}: login {login} has expired; nothing to "
                           "revoke (the sweep drops what is left)")
    lease = Lease(definition, login, Connection(), float(fields.get("expires_at") or 0),
                  None if fields.get("lease_id") is None else str(fields["lease_id"]))
    start = time.perf_counter()
    try:
        lk.minter(definition, env).revoke(lease)
    except PipekeyError as exc:
        audit_credential(lk.audit, "revoke", definition, "error", pipeline=pipeline,
                         run=run_name, detail=str(exc), latency=time.perf_counter() - start)
        raise
    audit_credential(lk.audit, "revoke", definition, "ok", pipeline=pipeline, run=run_name,
                     detail=f"login {login}", latency=time.perf_counter() - start)
    if on_closed is not None:
        on_closed(login)
    return json.dumps({"v": 1, "closed": login}, separators=(",", ":"))


#: how many minted logins one (team, pipeline) may hold open on an API server process at once
MAX_OPEN_LOGINS_ENV = "PIPEKEY_BROKER_MAX_OPEN_LOGINS"
DEFAULT_MAX_OPEN_LOGINS = 1000


class OpenLogins:
    """The logins an API server process handed over and no close request revoked yet, per
    (team, pipeline), until their expiry: a task asking for run after run without closing
    them is refused past the bound (``$PIPEKEY_BROKER_MAX_OPEN_LOGINS``, default 1000)
    instead of making the server mint without end."""

    def __init__(self, limit: int | None = None) -> None:
        if limit is None:
            raw = os.environ.get(MAX_OPEN_LOGINS_ENV, str(DEFAULT_MAX_OPEN_LOGINS))
            if not raw.isdigit() or int(raw) < 1:
                raise UsageError(f"${MAX_OPEN_LOGINS_ENV} must be a whole number of at least 1")
            limit = int(raw)
        self.limit = limit
        self._open: dict[tuple[str, str], dict[str, float]] = {}
        self._lock = threading.Lock()

    def admit(self, team: str, pipeline: str) -> None:
        """Raises AccessDenied when ``team`` holds ``limit`` open logins of ``pipeline``."""
        now = time.time()
        with self._lock:
            held = self._open.setdefault((team, pipeline), {})
            for login in [n for n, until in held.items() if until <= now]:
                del held[login]
            if len(held) >= self.limit:
                raise AccessDenied(
                    f"Airflow team {team!r}: {len(held)} minted logins of pipeline "
                    f"{pipeline!r} are open on this API server (at most {self.limit}, "
                    f"${MAX_OPEN_LOGINS_ENV}); close runs, or wait for their ttl")

    def add(self, team: str, pipeline: str, logins: Mapping[str, float]) -> None:
        with self._lock:
            self._open.setdefault((team, pipeline), {}).update(logins)

    def closed(self, team: str, pipeline: str, login: str) -> None:
        with self._lock:
            self._open.get((team, pipeline), {}).pop(login, None)


# -- the worker's side ----------------------------------------------------------------------
def close_body(minted: Minted) -> dict[str, str]:
    """What a close request for ``minted`` carries (no value: the ticket is sealed)."""
    return {"definition": minted.definition, "env": minted.env, "ticket": minted.ticket}


class BrokeredMinter:
    """The minter of a brokered run: hands the run the logins the broker minted (in the
    order of the pipeline's connections) and, when the run closes, asks the broker to revoke
    each (``send_close``). Holds no admin connection; renew and sweep belong to the API
    server."""

    def __init__(self, name: str, minted: Sequence[Minted],
                 send_close: Callable[[Minted], None]) -> None:
        self.name = name
        self._pending = list(minted)
        self._issued: dict[str, Minted] = {}
        self._send_close = send_close

    def __repr__(self) -> str:
        return f"<BrokeredMinter {self.name!r} pending={len(self._pending)}>"

    @property
    def reads(self) -> list[str]:
        return []

    def mint(self, pipeline: str, run_id: str,
             inputs: Mapping[str, str] | None = None) -> Lease:
        if not self._pending:
            raise CredentialError(self.name, f"the pipekey broker sent no login for pipeline "
                                             f"{pipeline!r} (an API server of another pipekey "
                                             "version?)")
        minted = self._pending.pop(0)
        self._issued[minted.login] = minted
        return Lease(self.name, minted.login, minted.connection, minted.expires_at)

    def renew(self, lease: Lease) -> Lease:
        raise CredentialError(self.name, "a login minted by the pipekey broker is renewed on "
                                         "the API server only; give the definition a ttl "
                                         "longer than the task")

    def revoke(self, lease: Lease) -> None:
        minted = self._issued.pop(lease.login, None)
        if minted is not None:
            self._send_close(minted)

    def sweep(self, dry_run: bool = False) -> list[str]:
        raise UsageError(f"credential {self.name!r}: sweep runs where the admin connection is "
                         "(`pipekey credentials sweep` on the API server)")

    def close(self) -> None:
        self._pending.clear()
