"""``type = "vault_database"``: a database login per run from Vault's database secrets engine.

::

    [credentials.warehouse_vault]
    type = "vault_database"
    backend = "vault"                 # a [backends.*] of type vault: its address and auth
    mount = "database"                # where the database secrets engine is mounted
    role = "etl-writer"               # the Vault role whose creation statements make the login
    connection = "connections/warehouse_base"   # host, port, schema (database) and extras
    ttl = 900                         # optional: the increment asked for at each renewal

Lifecycle of one run's login:

* **mint**: ``GET <mount>/creds/<role>`` with the backend's token (one login per process,
  shared with the backend). Vault runs the role's creation statements and answers a lease:
  the login (Vault's ``username_template`` names it), its password and the lease's duration.
  The connection is the base connection with that login and password (the base connection's
  own login and password are dropped). The password and the lease id are registered with the
  redactor at once.
* **renew**: a renewal timer, one thread per definition for all its runs (started with the
  first lease, ending with the last), renews each lease once two thirds of its duration have
  passed (``sys/leases/renew`` with ``increment = ttl``, or the role's ``default_ttl``), so a
  run may outlive the lease it started with; a killed process renews nothing and its login
  dies with the lease, after at most one lease duration. When Vault caps a renewal at the
  role's ``max_ttl``, the login ends then: renewing further cannot help, and a warning says
  so. Renewal failures are retried (bounded by the lease's expiry) and logged by definition.
* **revoke**: ``sys/leases/revoke`` when the run closes, failed runs included; Vault runs the
  role's revocation statements (by default: revoke and ``DROP ROLE``). Revoking a lease Vault
  already dropped is a success.
* **sweep**: returns ``[]``. Vault's own expiration manager revokes every lease whose TTL has
  passed, so expired logins need no sweep; and listing leases (``sys/leases/lookup/<prefix>``)
  needs a ``sudo`` policy, which a pipeline's token should not hold. The bound on orphans is
  the lease duration, kept short because live runs renew.

Errors are :class:`~pipekey.errors.CredentialError`: one line naming the definition, the
role, the backend and what Vault said (scrubbed); a 403 says ``denied (403)``. No value and
no lease id is ever in a message. ``Run.lease(name).expires_at`` is the expiry at mint (or
at the last ``Run.renew``): the timer's renewals extend the lease in Vault, not that copy.
"""

from __future__ import annotations

import heapq
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .. import metrics, redact
from .._sdk import hvac_module
from ..connection import Connection
from ..errors import AccessDenied, BackendError, CredentialError, PipekeyError
from ..policy import fill_template
from .base import Lease, VaultDatabaseConfig, audit_credential

if TYPE_CHECKING:
    from ..backends.vault import VaultBackend
    from .base import MintContext

__all__ = ["RENEW_AT", "VaultDatabaseMinter", "vault_said"]

#: tries of one revocation, and the first wait between them (doubled each time)
REVOKE_ATTEMPTS = 4
REVOKE_BACKOFF = 0.2

log = logging.getLogger("pipekey.credentials")

#: the share of a lease's duration after which it is renewed
RENEW_AT = 2 / 3
#: the longest wait between retries of a failed renewal, and the shortest
RETRY_MAX, RETRY_MIN = 30.0, 0.5


class VaultDatabaseMinter:
    """Mints, renews and revokes one definition's logins through a ``vault`` backend.

    Raises:
        MissingDependency: hvac is not installed (the ``vault`` extra).

    Args:
        name: the definition's name (``[credentials.NAME]``).
        config: its manifest fields.
        context: whose backends and base connection it uses (a ``Pipekey``).
        env: the environment that fills ``{env}`` in ``connection`` and picks the backend's
            build for that environment.
        clock: wall-clock seconds (``expires_at``); tests may pass their own.
    """

    def __init__(self, name: str, config: VaultDatabaseConfig, context: MintContext,
                 env: str, clock: Callable[[], float] = time.time) -> None:
        hvac_module("credentials of type vault_database")  # missing: say so when built
        self.name = name
        self.config = config
        self.env = env
        self.mount = (config.mount or "database").strip("/")
        self.connection_key = fill_template(config.connection, {"env": self.env},
                                            f"credentials.{name}.connection")
        self._context = context
        self._clock = clock
        self._backend: VaultBackend | None = None
        self._renewer = _Renewer(self)

    def __repr__(self) -> str:
        return (f"<VaultDatabaseMinter {self.name!r} backend={self.config.backend!r} "
                f"role={self.config.role!r} env={self.env!r}>")

    # -- the contract ---------------------------------------------------------------------
    @property
    def reads(self) -> list[str]:
        """The base connection's key (host, port, database, extras)."""
        return [self.connection_key]

    def mint(self, pipeline: str, run_id: str,
             inputs: Mapping[str, str] | None = None) -> Lease:
        """A new login for this run (see the module docstring).

        Raises:
            CredentialError: Vault refused or failed; nothing is left behind.
        """
        base = self._base_connection(inputs)
        start = time.perf_counter()
        role, mount = self.config.role, self.mount
        answer = self._call("mint", lambda c: c.secrets.database.generate_credentials(
            name=role, mount_point=mount))
        data = answer.get("data") if isinstance(answer, dict) else None
        lease_id = answer.get("lease_id") if isinstance(answer, dict) else None
        for value in (lease_id, (data or {}).get("password")):  # the login is not secret
            redact.register(value if isinstance(value, str) else None)
        if not (isinstance(data, dict) and data.get("username") and data.get("password")
                and lease_id):
            if lease_id:  # a lease without a usable login: give it back at once
                self._revoke_id(str(lease_id))
            raise CredentialError(self.name, f"Vault's answer for role {role!r} at {mount!r} "
                                             f"(backend {self.config.backend!r}) holds no login")
        duration = float(answer.get("lease_duration") or 0)
        lease = Lease(definition=self.name, login=str(data["username"]),
                      connection=base.replace(login=str(data["username"]),
                                              password=str(data["password"])),
                      expires_at=self._clock() + duration, lease_id=str(lease_id))
        metrics.observe("credential_mint_seconds", time.perf_counter() - start,
                        definition=self.name)
        metrics.incr("credentials_minted", definition=self.name)
        if answer.get("renewable") and duration > 0:
            self._renewer.track(lease, duration, pipeline, run_id)
        return lease

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease`` by ``ttl`` (or the role's default); the new expiry is Vault's."""
        if lease.lease_id is None:
            return lease
        lease_id, increment = lease.lease_id, self.config.ttl
        answer = self._call("renew", lambda c: c.sys.renew_lease(lease_id, increment=increment))
        duration = float((answer or {}).get("lease_duration") or 0)
        metrics.incr("credential_renewals", definition=self.name)
        return Lease(definition=lease.definition, login=lease.login,
                     connection=lease.connection, expires_at=self._clock() + duration,
                     lease_id=lease_id)

    def revoke(self, lease: Lease) -> None:
        """Revoke ``lease`` now (Vault drops the login); an unknown lease is a success."""
        if lease.lease_id is None:
            return
        self._renewer.forget(lease.lease_id)
        self._revoke_id(lease.lease_id)

    def sweep(self, dry_run: bool = False) -> list[str]:
        """Nothing to do: Vault revokes expired leases itself (see the module docstring)."""
        log.debug("pipekey: credential %r: sweep has nothing to do: Vault revokes expired "
                  "leases itself; listing leases needs sudo", self.name)
        return []

    def close(self) -> None:
        """Stop the renewal timer (leases are revoked by their runs, or expire)."""
        self._renewer.close()

    # -- plumbing -------------------------------------------------------------------------
    @property
    def backend(self) -> VaultBackend:
        """The ``vault`` backend named by ``backend``, as built for this environment
        (unwrapped from its cache): its address, auth and the process's shared login."""
        if self._backend is None:
            from ..backends.vault import VaultBackend

            name = self.config.backend
            built = {b.name: b for b in self._context.chain_for(self.env)}
            found = (built[name] if name in built else self._context.backend(name)).origin()
            if not isinstance(found, VaultBackend):
                raise CredentialError(self.name, f"backend {name!r} is of type "
                                                 f"{found.kind!r}, not vault")
            self._backend = found
        return self._backend

    def _base_connection(self, inputs: Mapping[str, str] | None) -> Connection:
        """Host, port, schema and extras of the base connection, without its login."""
        key = self.connection_key
        if inputs is not None and key in inputs:
            value = inputs[key]
        else:
            value = self._context.chain_for(self.env).get(key).value
        base = Connection.from_value(value, conn_id=key)
        return base.replace(login=None, password=None)

    def _revoke_id(self, lease_id: str) -> None:
        """Revoke, trying again (bounded) when Vault says the revocation failed: its database
        plugin's statements can fail transiently (50 runs closing at once revoke concurrently
        on one schema's ACL), and Vault keeps such a lease live until its TTL otherwise. A
        refusal (403) is not tried again."""
        hvac = hvac_module()
        for attempt in range(REVOKE_ATTEMPTS):
            try:
                self._call("revoke", lambda c: c.sys.revoke_lease(lease_id))
                break
            except CredentialError as exc:
                if attempt + 1 == REVOKE_ATTEMPTS or \
                        isinstance(exc.__cause__, hvac.exceptions.Forbidden):
                    raise
                time.sleep(REVOKE_BACKOFF * 2 ** attempt)
        metrics.incr("credential_revocations", definition=self.name)

    def _call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        """``fn(client)`` through the backend (its token, one re-login on 403), its errors
        worded as one line naming this definition and what Vault said."""
        backend = self.backend
        hvac = hvac_module()
        try:
            return backend.vault(f"{what} of credential {self.name!r}", [], fn, absent=False)
        except (AccessDenied, BackendError) as exc:
            cause = exc.__cause__
            if not isinstance(cause, hvac.exceptions.VaultError) or \
                    f"credential {self.name!r}" not in str(exc):  # not the call: the login
                said = str(exc).removeprefix(f"backend {backend.name!r}: ")
                raise CredentialError(self.name, f"{what}: backend {backend.name!r}: "
                                                 f"{said}") from exc
            denied = " denied (403)" if isinstance(exc, AccessDenied) else ""
            raise CredentialError(self.name, f"{what} for role {self.config.role!r} at "
                                             f"{self.mount!r}{denied}: Vault (backend "
                                             f"{backend.name!r}) said: {vault_said(cause)}") \
                from cause

    def audit(self, event: str, outcome: str, pipeline: str | None, run: str | None,
              detail: str | None = None) -> None:
        """One audit record (no value, no lease id) through the context's auditor."""
        try:
            audit_credential(self._context.audit, event, self.name, outcome, pipeline=pipeline,
                             run=run, detail=detail)
        except PipekeyError as exc:  # a required sink failed: the renewal itself stands
            log.warning("pipekey: credential %r: %s", self.name, exc)


def vault_said(exc: Exception, limit: int = 200) -> str:
    """What Vault said in an hvac error, one line, scrubbed (no URL, no registered value)."""
    errors = getattr(exc, "errors", None)
    if not errors:  # hvac reads "errors" only from a bare application/json Content-Type
        try:
            errors = json.loads(getattr(exc, "text", None) or "").get("errors")
        except (ValueError, AttributeError):
            errors = None
    if isinstance(errors, list) and errors:
        text = "; ".join(str(e) for e in errors)
    else:
        text = type(exc).__name__
    text = text.replace("1 error occurred:", " ").replace("\t*", " ")
    text = " ".join(redact.redactor().redact(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


# -- the renewal timer -------------------------------------------------------------------------
@dataclass(order=True)
class _Due:
    at: float                                   # monotonic seconds
    lease_id: str = field(compare=False)


@dataclass
class _Tracked:
    lease: Lease
    pipeline: str
    run: str
    ends: float                                 # monotonic: the lease's expiry
    full: float                                 # the duration Vault gave at first


class _Renewer:
    """One thread per minter renewing its live leases; it ends when none is left."""

    def __init__(self, minter: VaultDatabaseMinter) -> None:
        self._minter = minter
        self._cond = threading.Condition()
        self._tracked: dict[str, _Tracked] = {}
        self._queue: list[_Due] = []
        self._thread: threading.Thread | None = None
        self._closed = False

    def track(self, lease: Lease, duration: float, pipeline: str, run: str) -> None:
        assert lease.lease_id is not None
        now = time.monotonic()
        with self._cond:
            self._tracked[lease.lease_id] = _Tracked(lease, pipeline, run, now + duration,
                                                          duration)
            heapq.heappush(self._queue, _Due(now + duration * RENEW_AT, lease.lease_id))
            self._closed = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name=f"pipekey-renew-{self._minter.name}")
                self._thread.start()
            self._cond.notify()

    def forget(self, lease_id: str) -> None:
        with self._cond:
            self._tracked.pop(lease_id, None)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._tracked.clear()
            self._queue.clear()
            thread = self._thread
            self._cond.notify()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _next(self) -> tuple[_Tracked, str] | None:
        """The next lease due, after waiting for it; None when the thread should end."""
        with self._cond:
            while True:
                while self._queue and self._queue[0].lease_id not in self._tracked:
                    heapq.heappop(self._queue)  # revoked since it was scheduled
                if self._closed or not self._queue:
                    self._thread = None
                    return None
                wait = self._queue[0].at - time.monotonic()
                if wait <= 0:
                    lease_id = heapq.heappop(self._queue).lease_id
                    return self._tracked[lease_id], lease_id
                self._cond.wait(min(wait, 60.0))

    def _loop(self) -> None:
        while True:
            job = self._next()
            if job is None:
                return
            self._renew_one(*job)

    def _renew_one(self, tracked: _Tracked, lease_id: str) -> None:
        minter = self._minter
        asked = minter.config.ttl
        try:
            renewed = minter.renew(tracked.lease)
        except Exception as exc:
            now = time.monotonic()
            left = tracked.ends - now
            reason = str(exc) if isinstance(exc, PipekeyError) else type(exc).__name__
            log.warning("pipekey: credential %r: renewing the lease of run %r failed (%s)",
                        minter.name, tracked.run, reason)
            minter.audit("renew", "error", tracked.pipeline, tracked.run, reason)
            if left > RETRY_MIN:
                self._schedule(lease_id, now + min(RETRY_MAX, max(RETRY_MIN, left / 3)))
            return
        duration = renewed.expires_at - minter._clock()
        minter.audit("renew", "ok", tracked.pipeline, tracked.run,
                     f"lease extended by {round(duration)}s")
        now = time.monotonic()
        with self._cond:
            if lease_id not in self._tracked:
                return  # revoked while renewing
            tracked.lease, tracked.ends = renewed, now + duration
        if 0 < duration < (tracked.full if asked is None else asked) - 1:
            log.warning("pipekey: credential %r: Vault capped the lease of run %r at the "
                        "role's max_ttl; the login ends in %ds", minter.name, tracked.run,
                        round(duration))
            self.forget(lease_id)
            return
        if duration <= 0:
            self.forget(lease_id)
            return
        self._schedule(lease_id, now + duration * RENEW_AT)

    def _schedule(self, lease_id: str, at: float) -> None:
        with self._cond:
            if lease_id in self._tracked:
                heapq.heappush(self._queue, _Due(at, lease_id))
                self._cond.notify()
