"""Credentials minted per run: ``[credentials.NAME]`` in the manifest, ``dynamic:NAME`` in a
pipeline's connections. See :mod:`pipekey.credentials.base` and docs/credentials.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import UsageError
from .base import DYNAMIC, CredentialConfig, Lease, Minter

if TYPE_CHECKING:
    from ..client import Pipekey

__all__ = ["DYNAMIC", "CredentialConfig", "Lease", "Minter", "build_minter"]


def build_minter(name: str, config: CredentialConfig, lk: "Pipekey",
                 env: str | None = None) -> Minter:
    """The minter of definition ``name`` for environment ``env`` (default: ``lk.env``).

    Raises:
        MissingDependency: the definition's extra (psycopg2, hvac) is not installed.
    """
    env = env or lk.env
    if config.type == "postgres_role":
        from .postgres import PostgresRoleMinter  # type: ignore[import-not-found,unused-ignore]

        pg: Minter = PostgresRoleMinter(name, config, lk, env)
        return pg
    if config.type == "vault_database":
        from .vault_database import VaultDatabaseMinter  # type: ignore[import-not-found,unused-ignore]

        minter: Minter = VaultDatabaseMinter(name, config, lk, env)
        return minter
    raise UsageError(f"credentials.{name}: unknown type {config.type!r}")
