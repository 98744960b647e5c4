"""One run's minted credentials: mint at open, renew on request, revoke at close.

:class:`RunLeases` is what a :class:`~pipekey.run.Run` holds for the connections its
pipeline maps to ``dynamic:NAME``. It audits every mint, renew and revoke with the run's
pipeline and name (never a value), and never lets a close fail because a revoke did: the
login then expires by itself and ``pipekey credentials sweep`` removes it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Callable, Mapping

from .. import metrics, redact
from ..errors import PipekeyError, UsageError
from .base import Lease, Minter, audit_credential

if TYPE_CHECKING:
    from ..audit import Auditor

__all__ = ["RunLeases"]

log = logging.getLogger("pipekey")


class RunLeases:
    """The leases of one run.

    Args:
        pipeline: the run's pipeline.
        run: the run's name.
        dynamic: connection name -> ``[credentials.NAME]`` that mints it.
        minters: definition -> its minter (one for each definition in ``dynamic``).
        auditor: where mint, renew and revoke events go.
        announce: registers a value for masking (:func:`pipekey.announce.announce`).
    """

    def __init__(self, pipeline: str, run: str, dynamic: Mapping[str, str],
                 minters: Mapping[str, Minter], auditor: "Auditor",
                 announce: Callable[..., None]) -> None:
        missing = sorted(set(dynamic.values()) - set(minters))
        if missing:
            raise UsageError(f"pipeline {pipeline!r}: no minter for credential {missing[0]!r} "
                             "(build runs with Pipekey.pipeline)")
        self.pipeline, self.run = pipeline, run
        self.dynamic = dict(dynamic)
        self._minters = dict(minters)
        self._audit = auditor
        self._announce = announce
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._leases)

    @property
    def reads(self) -> list[str]:
        """The keys the definitions read from the chain (admin connections), once each."""
        return list(dict.fromkeys(key for d in self.dynamic.values()
                                  for key in self._minters[d].reads))

    def reads_of(self, definition: str) -> list[str]:
        return list(self._minters[definition].reads)

    def get(self, name: str) -> Lease:
        if name not in self._leases:
            raise UsageError(f"pipeline {self.pipeline!r} has no minted connection {name!r} "
                             f"(minted: {sorted(self.dynamic)})")
        return self._leases[name]

    def mint_all(self, inputs: Mapping[str, str]) -> dict[str, Lease]:
        """Mint each dynamic connection; on any failure revoke what was minted and raise.

        A lease is held (so revoked on failure) the moment ``mint`` returns it: a failure
        after that (a required audit sink refusing the mint record, an interrupt) must not
        leave its login to expire by itself."""
        self._announce(*inputs.values())
        try:
            for conn, definition in self.dynamic.items():
                minter = self._minters[definition]
                start = time.perf_counter()
                try:
                    lease = minter.mint(self.pipeline, self.run,
                                        {k: inputs[k] for k in minter.reads})
                except BaseException as exc:
                    detail = str(exc) if isinstance(exc, PipekeyError) else type(exc).__name__
                    self._event("mint", definition, "error", detail, start)
                    raise
                with self._lock:
                    self._leases[conn] = lease
                self._announce(*lease.connection.secret_values())
                self._event("mint", definition, "ok", f"login {lease.login}", start)
        except BaseException:  # an interrupt too: what was minted must go
            self.revoke_all()
            raise
        return dict(self._leases)

    def renew(self, name: str) -> Lease:
        lease = self.get(name)
        start = time.perf_counter()
        try:
            renewed = self._minters[lease.definition].renew(lease)
        except PipekeyError as exc:
            self._event("renew", lease.definition, "error", str(exc), start)
            raise
        self._event("renew", lease.definition, "ok", f"login {lease.login}", start)
        with self._lock:
            self._leases[name] = renewed
        return renewed

    def revoke_all(self) -> None:
        """Revoke every lease; a failure is logged, counted and audited, not raised. An
        interrupt (KeyboardInterrupt, SystemExit) while revoking one lease does not skip the
        others: they are revoked first, then the interrupt is raised again."""
        with self._lock:
            leases, self._leases = list(self._leases.values()), {}
        interrupt: BaseException | None = None
        for lease in leases:
            start = time.perf_counter()
            try:
                self._minters[lease.definition].revoke(lease)
                outcome, detail = "ok", f"login {lease.login}"
            except BaseException as exc:  # noqa: BLE001 - a close must finish
                if not isinstance(exc, Exception):
                    interrupt = interrupt or exc
                text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                detail = redact.redactor().redact(text)
                outcome = "error"
                log.warning("run %r: could not revoke %s: %s", self.run, lease.login, detail)
                metrics.incr("credential_revoke_errors", definition=lease.definition)
            try:  # a required audit sink that refuses must not stop the other revokes
                self._event("revoke", lease.definition, outcome, detail, start)
            except BaseException as exc:  # noqa: BLE001
                interrupt = interrupt or exc
        if interrupt is not None:
            raise interrupt

    def detach(self) -> dict[str, Lease]:
        """Stop holding every lease (they are not revoked at close): connection -> lease."""
        with self._lock:
            leases, self._leases = dict(self._leases), {}
        return leases

    def mint_detached(self, name: str) -> tuple[Lease, Callable[[], None]]:
        """Mint ``name`` outside the run's lifecycle (``pipekey check --connect``); returns
        the lease and the function that revokes it. Audited like a run's."""
        definition = self.dynamic[name]
        minter = self._minters[definition]
        start = time.perf_counter()
        try:
            lease = minter.mint(self.pipeline, self.run)
        except PipekeyError as exc:
            self._event("mint", definition, "error", str(exc), start)
            raise

        def revoke() -> None:
            begun = time.perf_counter()
            try:
                minter.revoke(lease)
            except PipekeyError as exc:
                self._event("revoke", definition, "error", str(exc), begun)
                raise
            self._event("revoke", definition, "ok", f"login {lease.login}", begun)

        try:
            self._announce(*lease.connection.secret_values())
            self._event("mint", definition, "ok", f"login {lease.login}", start)
        except BaseException:  # the caller never gets the revoke: do it here
            minter.revoke(lease)
            raise
        return lease, revoke

    def _event(self, event: str, definition: str, outcome: str, detail: str,
               start: float) -> None:
        audit_credential(self._audit, event, definition, outcome, pipeline=self.pipeline,
                         run=self.run, detail=detail, latency=time.perf_counter() - start)
