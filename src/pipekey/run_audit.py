"""A run's audit records: one event per key read, denied or failed (:mod:`pipekey.audit`).

:class:`RunAudit` is a part of :class:`pipekey.run.Run`, kept apart so the run itself holds
its lifecycle and reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from .audit import AuditEvent

if TYPE_CHECKING:
    from .audit import Auditor
    from .backends.base import Secret
    from .chain import Resolution

__all__ = ["RunAudit"]


class RunAudit:
    """The audit part of :class:`pipekey.run.Run` (its events carry the pipeline and run)."""

    if TYPE_CHECKING:
        pipeline: str
        name: str
        _audit: Auditor

    def _event(self, event: str, key: str, outcome: str, secret: Secret | None = None,
               latency: float | None = None, detail: str | None = None) -> None:
        if not self._audit.enabled:
            return
        self._audit.record(AuditEvent(
            event, key, outcome, pipeline=self.pipeline, run=self.name,
            backend=secret.backend if secret else None,
            version=secret.version if secret else None, detail=detail,
            cached=bool(secret and secret.cached),
            latency_ms=round(latency * 1000, 3) if latency is not None else None))

    def _record(self, event: str, resolved: Mapping[str, Resolution], latency: float,
                missing: Mapping[str, Resolution]) -> None:
        """One event per key resolved (and one failure per required key missing)."""
        if not self._audit.enabled:
            return
        for name, resolution in resolved.items():
            if resolution.secret is not None:
                self._event(event, resolution.secret.key, "ok", resolution.secret, latency)
            elif name in missing:
                outcome = "error" if resolution.errors else "absent"
                self._event("failure", name, outcome, latency=latency,
                            detail=f"required secret {name!r} not resolved")
