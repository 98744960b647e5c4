"""Reading a run's values again past any cache: after a rotation (:meth:`refresh`), and once
when the credentials are refused (:meth:`retry_on_auth_failure`).

:class:`RunRefresh` is a part of :class:`pipekey.run.Run`, kept apart so the run itself holds
its lifecycle and reads.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Callable, Mapping

from . import metrics
from .run_connections import CONNECTION

if TYPE_CHECKING:
    from .authfailure import AuthFailurePolicy
    from .chain import Chain
    from .connection import Connection
    from .scope import Scope

__all__ = ["RunRefresh"]


class RunRefresh:
    """Refreshing a run's values from the stores."""

    if TYPE_CHECKING:
        pipeline: str
        scope: Scope
        auth_policy: AuthFailurePolicy
        _chain: Chain
        _lock: threading.Lock
        _by_name: dict[str, str]
        _by_key: dict[str, str]
        _connections: dict[str, Connection]

        @property
        def connection_keys(self) -> Mapping[str, str]: ...

        @property
        def names(self) -> list[str]: ...

        def get(self, key: str) -> str: ...

        def _resolve_name(self, name: str) -> str: ...

        def _check_open(self) -> None: ...

    def refresh(self, name: str) -> str:
        """Read ``name`` again from the stores, past any cache (after a rotation, say).

        ``name`` is a secret name of the scope walk, or ``connection:<name>`` / a connection
        name of the pipeline. Returns the new value (for a connection, its stored value).
        """
        self._check_open()
        conn = name.removeprefix(CONNECTION)
        if conn in self.connection_keys:
            key = self.connection_keys[conn]
            self._invalidate([key])
            with self._lock:
                self._by_key.pop(key, None)
                self._connections.pop(conn, None)
            return self.get(key)
        keys = [key for _, key in self.scope.walk(name)]
        self._invalidate(keys)
        with self._lock:
            self._by_name.pop(name, None)
            for key in keys:
                self._by_key.pop(key, None)
        return self._resolve_name(name)

    def retry_on_auth_failure(
            self, action: Callable[[], Any], *names: str,
            is_auth_failure: Callable[[BaseException], bool] | None = None) -> Any:
        """Run ``action``; if it fails with an authentication error, re-read ``names`` once
        (past the cache: the credentials may have been rotated) and run it again.

        Args:
            action: what uses the credentials (``lambda: connect(run.connection("db"))``).
            names: the secrets or connections to re-read.
            is_auth_failure: decides whether an exception is an authentication failure;
                default: the run's ``auth_policy`` (:class:`pipekey.authfailure.AuthFailurePolicy`:
                the error's text mentions authentication, a password, access denied, 401
                or 403).
        """
        check = is_auth_failure or self.auth_policy.is_auth_failure
        try:
            return action()
        except Exception as exc:
            if not check(exc):
                raise
            for name in names or self.names:
                self.refresh(name)
            metrics.incr("auth_failure_retries", pipeline=self.pipeline)
            return action()

    def _invalidate(self, keys: list[str]) -> None:
        # imported here: this module's top-level imports are being reorganised
        from .backends.base import Invalidates

        for backend in self._chain:
            if isinstance(backend, Invalidates):
                backend.invalidate(keys)
