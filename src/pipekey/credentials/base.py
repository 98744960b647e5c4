"""Credentials minted per run ("dynamic"), and the contract every kind of them keeps.

A ``[credentials.NAME]`` table of the manifest defines how to mint one; a pipeline maps a
connection to it with ``connections = { warehouse = "dynamic:NAME" }``. When a run opens,
pipekey reads what the definition needs from the chain (``Minter.reads``: an admin
connection, a base connection) in the run's one batched pass, then calls ``mint``; the
:class:`Lease` it returns holds the run's own login as a :class:`~pipekey.Connection`.
When the run closes, failed or not, pipekey calls ``revoke``. ``sweep`` removes what
crashed runs left behind, and only what pipekey made.

Kinds: ``postgres_role`` (:mod:`pipekey.credentials.postgres`) and ``vault_database``
(:mod:`pipekey.credentials.vault_database`), imported lazily: psycopg2 and hvac are extras.
The kinds are listed once, in :data:`pipekey.credentials.CREDENTIAL_TYPES`: a kind is its
:class:`CredentialConfig` (whose methods say what the manifest checks) and its minter.
A minter sees the client only through :class:`MintContext`, never :class:`pipekey.Pipekey`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal, Mapping, Protocol, runtime_checkable

from msgspec import Meta, Struct

from .._schema import field_problem
from ..audit import AuditEvent, Auditor
from ..errors import CredentialError

if TYPE_CHECKING:
    from ..backends.base import Backend
    from ..chain import Chain
    from ..connection import Connection

__all__ = ["DYNAMIC", "MIN_TTL", "MIN_TTL_ENV", "CredentialConfig", "CredentialError", "Lease",
           "MintContext", "Minter", "PostgresRoleConfig", "VaultDatabaseConfig",
           "audit_credential", "min_ttl"]

#: the prefix of a pipeline's connection mapping that names a credential definition
DYNAMIC = "dynamic:"
#: the shortest ``ttl`` a definition accepts, seconds: a login that expires sooner can lapse
#: between minting and first use on a loaded machine
MIN_TTL = 60
#: test-only: a lower minimum (whole seconds, at least 1), so a test can watch a login expire
#: without waiting a minute. Never set it in production.
MIN_TTL_ENV = "PIPEKEY_TESTING_MIN_TTL"


def min_ttl() -> int:
    """The shortest ``ttl`` accepted: :data:`MIN_TTL`, unless the test-only knob lowers it."""
    knob = os.environ.get(MIN_TTL_ENV, "")
    return max(1, int(knob)) if knob.isdigit() else MIN_TTL


def _check_ttl(value: int | None) -> None:
    """The minimum is read when a definition is made (the test-only knob may lower it), so
    it is a check in ``__post_init__``, not a static ``Meta`` bound."""
    if value is not None and value < min_ttl():
        raise field_problem("ttl", f"must be at least {min_ttl()} seconds (got {value})")


class CredentialConfig(Struct, kw_only=True, forbid_unknown_fields=True):
    """A ``[credentials.NAME]`` table: the base of every kind's Struct. The manifest checks a
    definition through these methods alone, so a new kind needs no code in the manifest."""

    #: the kind, a key of :data:`pipekey.credentials.CREDENTIAL_TYPES`
    type: str

    def keys(self) -> dict[str, str]:
        """Field -> the key template it names (read from the chain when a run opens); only
        ``{env}`` may appear in it: a definition is shared by every pipeline mapping it."""
        return {}

    def unreadable(self) -> tuple[str, ...]:
        """The fields of :meth:`keys` no run may read (an admin connection's, say)."""
        return ()

    def problem(self, backends: Mapping[str, str]) -> tuple[str, str] | None:
        """``(field, what is wrong)`` with this definition against the manifest's backends
        (name -> type), or None."""
        return None


class PostgresRoleConfig(CredentialConfig, kw_only=True, forbid_unknown_fields=True):
    """``type = "postgres_role"``: a PostgreSQL login role created per run."""

    type: Literal["postgres_role"]
    #: key of the admin connection (CREATEROLE); ``{env}`` may appear in it
    admin: str
    #: the roles the run's login joins: its privileges, and nothing else
    member_of: Annotated[list[str], Meta(min_length=1)]
    #: seconds: VALID UNTIL now() + ttl
    ttl: int = 3600
    connection_limit: Annotated[int, Meta(ge=1)] = 5
    #: drop expired run roles of this definition's database whenever a run opens
    sweep_on_open: bool = False
    #: the role name's prefix; sweep only ever looks at roles starting with it (and marked)
    prefix: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{1,15}$")] = "lk_"

    def __post_init__(self) -> None:
        _check_ttl(self.ttl)

    def keys(self) -> dict[str, str]:
        return {"admin": self.admin}

    def unreadable(self) -> tuple[str, ...]:
        return ("admin",)  # it may create roles

    def problem(self, backends: Mapping[str, str]) -> tuple[str, str] | None:
        for i, role in enumerate(self.member_of):
            if not role or len(role.encode()) > 63 or "\x00" in role:
                return f"member_of[{i}]", f"{role!r} is not a PostgreSQL role name"
        return None


class VaultDatabaseConfig(CredentialConfig, kw_only=True, forbid_unknown_fields=True):
    """``type = "vault_database"``: a lease of Vault's database secrets engine per run."""

    type: Literal["vault_database"]
    #: the name of a ``[backends.NAME]`` of type vault: its address, client and auth are used
    backend: str
    mount: str = "database"
    role: str
    #: key of a base connection: host, port, schema and extras are used, login and password
    #: come from Vault; ``{env}`` may appear in it
    connection: str
    #: the increment asked for when a lease is renewed (seconds); default: Vault's
    ttl: int | None = None

    def __post_init__(self) -> None:
        _check_ttl(self.ttl)

    def keys(self) -> dict[str, str]:
        return {"connection": self.connection}

    def problem(self, backends: Mapping[str, str]) -> tuple[str, str] | None:
        if backends.get(self.backend) != "vault":
            vaults = sorted(n for n, t in backends.items() if t == "vault")
            return "backend", (f"{self.backend!r} is not a vault backend under [backends] "
                               f"(vault backends: {vaults})")
        return None


@dataclass(frozen=True)
class Lease:
    """One run's minted credential. ``repr`` shows the login, never the password (the
    :class:`~pipekey.Connection` masks it).

    Attributes:
        definition: the ``[credentials.NAME]`` it was minted from.
        login: the role or user name (not secret).
        connection: host, port and database of the definition with the minted login.
        expires_at: when it stops working by itself, seconds since the epoch.
        lease_id: the store's lease (Vault), else None.
    """

    definition: str
    login: str
    connection: "Connection"
    expires_at: float
    lease_id: str | None = field(default=None, repr=False)  # it renews the lease: no repr

    @property
    def remaining(self) -> float:
        """Seconds until it expires by itself (negative once expired)."""
        return self.expires_at - time.time()


class MintContext(Protocol):
    """What a minter uses of the client that builds it (:class:`pipekey.Pipekey` is one), and
    nothing more: credentials depend on this, never on :mod:`pipekey.client`."""

    #: where the minter's audit records go
    audit: Auditor

    def chain_for(self, env: str) -> "Chain":
        """The chain of ``env``: what a minter reads its admin or base connection from."""

    def backend(self, name: str) -> "Backend":
        """The backend ``name`` of the manifest (a definition may name one, as a vault)."""


@runtime_checkable
class Minter(Protocol):
    """Mints, renews, revokes and sweeps the credentials of one definition, in one
    environment. Built by :func:`pipekey.credentials.build_minter`; thread-safe: many runs
    mint at once.

    Errors are :class:`~pipekey.errors.CredentialError`: one line naming the definition and
    what the store said, never a value. A failed ``mint`` leaves nothing behind.
    """

    name: str

    @property
    def reads(self) -> list[str]:
        """The keys ``mint`` needs from the chain (an admin or base connection), filled for
        the minter's environment. The run reads them in its batched pass and passes them as
        ``inputs``; they are not readable by the pipeline's code unless its policy allows."""

    def mint(self, pipeline: str, run_id: str,
             inputs: Mapping[str, str] | None = None) -> Lease:
        """A new credential for one run. ``inputs``: key -> value for each of ``reads``
        (read from the chain by the minter itself when None)."""

    def renew(self, lease: Lease) -> Lease:
        """Extend ``lease``; returns it with its new expiry."""

    def revoke(self, lease: Lease) -> None:
        """End ``lease`` now: its login stops working. Idempotent."""

    def sweep(self, dry_run: bool = False) -> list[str]:
        """Remove the expired credentials runs of this definition left behind (a killed
        process); returns the logins or leases removed (or that would be, with ``dry_run``).
        Never removes what pipekey did not make."""

    def close(self) -> None:
        """Release connections and pools."""


def audit_credential(auditor: Auditor, event: str, definition: str, outcome: str, *,
                     pipeline: str | None = None, run: str | None = None,
                     detail: str | None = None, latency: float | None = None) -> None:
    """One audit record for a mint, renew, revoke or sweep: the key is ``dynamic:NAME``, the
    detail names the login (never a password)."""
    if not auditor.enabled:
        return
    auditor.record(AuditEvent(
        event, DYNAMIC + definition, outcome, pipeline=pipeline, run=run, detail=detail,
        backend=f"credentials.{definition}",
        latency_ms=round(latency * 1000, 3) if latency is not None else None))
