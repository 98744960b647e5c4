"""Credentials minted per run: ``[credentials.NAME]`` in the manifest, ``dynamic:NAME`` in a
pipeline's connections. See :mod:`pipekey.credentials.base` and docs/credentials.md.

Every kind is one entry of :data:`CREDENTIAL_TYPES` (as every backend type is one entry of
:data:`pipekey.backends.BACKEND_TYPES`): the manifest validates a ``[credentials.NAME]`` table
with the entry's config Struct, and :func:`build_minter` imports the entry's minter on first
use (its driver is an extra).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ..errors import UsageError
from .base import (
    DYNAMIC,
    CredentialConfig,
    Lease,
    MintContext,
    Minter,
    PostgresRoleConfig,
    VaultDatabaseConfig,
)

__all__ = ["CREDENTIAL_TYPES", "DYNAMIC", "CredentialConfig", "CredentialKind", "Lease",
           "MintContext", "Minter", "build_minter"]


@dataclass(frozen=True)
class CredentialKind:
    """One kind of credential: its ``[credentials.NAME]`` table and its minter."""

    #: the Struct a ``[credentials.NAME]`` table of this ``type`` converts to
    config: type[CredentialConfig]
    #: "module:Class" of the minter, relative to this package, imported on first build; the
    #: class is called as ``Class(name, config, context, env)``
    minter: str


#: manifest ``type`` -> the kind: the one place a kind is listed
CREDENTIAL_TYPES: dict[str, CredentialKind] = {
    "postgres_role": CredentialKind(PostgresRoleConfig, ".postgres:PostgresRoleMinter"),
    "vault_database": CredentialKind(VaultDatabaseConfig, ".vault_database:VaultDatabaseMinter"),
}


def build_minter(name: str, config: CredentialConfig, context: MintContext,
                 env: str) -> Minter:
    """The minter of definition ``name`` for environment ``env``.

    Args:
        context: what the minter reads its connections from and audits to (a ``Pipekey``).

    Raises:
        UsageError: ``config.type`` is no kind of :data:`CREDENTIAL_TYPES`.
        MissingDependency: the kind's extra (psycopg2, hvac) is not installed.
    """
    kind = CREDENTIAL_TYPES.get(config.type)
    if kind is None:
        raise UsageError(f"credentials.{name}: unknown type {config.type!r} (known: "
                         f"{', '.join(sorted(CREDENTIAL_TYPES))})")
    module_name, _, attr = kind.minter.partition(":")
    module = importlib.import_module(module_name, __name__)
    make: Callable[[str, CredentialConfig, MintContext, str], Minter] = getattr(module, attr)
    return make(name, config, context, env)
