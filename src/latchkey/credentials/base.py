"""The contract of a credential minter (the framework branch owns this module)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..connection import Connection

__all__ = ["Lease", "Minter"]


@dataclass(frozen=True)
class Lease:
    """One login minted for one run."""

    definition: str
    login: str
    connection: Connection
    expires_at: float
    lease_id: str | None = None


class Minter(Protocol):
    name: str

    def mint(self, pipeline: str, run_id: str) -> Lease: ...

    def renew(self, lease: Lease) -> Lease: ...

    def revoke(self, lease: Lease) -> None: ...

    def sweep(self) -> list[str]: ...
