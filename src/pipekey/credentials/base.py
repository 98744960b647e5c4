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
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Literal, Mapping, Protocol, Union, runtime_checkable

from msgspec import Meta, Struct

from .._schema import field_problem
from ..audit import AuditEvent, Auditor
from ..errors import CredentialError

if TYPE_CHECKING:
    from ..connection import Connection

__all__ = ["DYNAMIC", "MIN_TTL", "MIN_TTL_ENV", "CredentialConfig", "CredentialError", "Lease",
           "Minter", "PostgresRoleConfig", "VaultDatabaseConfig", "audit_credential", "min_ttl"]

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


class PostgresRoleConfig(Struct, kw_only=True, forbid_unknown_fields=True):
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


class VaultDatabaseConfig(Struct, kw_only=True, forbid_unknown_fields=True):
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


#: the manifest picks the class by ``type`` (pipekey.manifest); both keep ``type`` as a field
CredentialConfig = Union[PostgresRoleConfig, VaultDatabaseConfig]


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
