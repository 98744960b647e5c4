"""Test doubles for your own tests (and ours): an in-memory store that records every call,
and a store that fails on demand.

    from pipekey.testing import MemoryBackend, FailingBackend
    mem = MemoryBackend(data={"shared/slack_token": "fake-token"})
    lk = pipekey.Pipekey([FailingBackend(), mem])
    lk.get("shared/slack_token")
    assert mem.calls == [Call("get_many", ("shared/slack_token",))]
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Iterable, Mapping, NamedTuple, Sequence

from .backends.base import Secret, VersionedBackend, VersionInfo, WritableBackend
from .errors import BackendError, BackendUnavailable
from .keys import is_under

__all__ = ["Call", "FailingBackend", "MemoryBackend", "ReadOnlyMemoryBackend"]


class Call(NamedTuple):
    """One call a test double received: the method and the keys (or prefix) it was given."""

    method: str
    args: tuple[str, ...]


class ReadOnlyMemoryBackend(VersionedBackend):
    """An in-memory store with history and no ``put``/``delete``, recording every call in
    ``calls``: :class:`MemoryBackend` without ``put``/``delete``.

    ``latency`` (seconds) makes every call that slow, to stand in for a remote store.
    """

    kind = "memory"

    def __init__(self, name: str = "memory", data: Mapping[str, str] | None = None,
                 latency: float = 0.0) -> None:
        super().__init__(name)
        self.latency = latency  # seconds each call takes, to stand in for a remote store
        self._lock = threading.Lock()
        self._versions: dict[str, list[tuple[str | None, datetime]]] = {}
        self.calls: list[Call] = []
        for key, value in (data or {}).items():
            self._append(key, value)

    def locate(self, key: str) -> str:
        return f"{self.kind}:{key}"

    def _append(self, key: str, value: str | None) -> int:
        versions = self._versions.setdefault(key, [])
        versions.append((value, datetime.now(timezone.utc)))
        return len(versions)

    def _record(self, method: str, args: Iterable[str]) -> None:
        with self._lock:
            self.calls.append(Call(method, tuple(args)))
        if self.latency:
            time.sleep(self.latency)

    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        self._record("get_many", keys)
        found = {}
        with self._lock:
            for key in keys:
                versions = self._versions.get(key)
                if not versions:
                    continue
                value, at = versions[-1]
                if value is not None:
                    found[key] = self._secret(key, value, str(len(versions)), created_at=at)
        return found

    def _list(self, prefix: str) -> Iterable[str]:
        self._record("list", [prefix])
        with self._lock:
            return [k for k, v in self._versions.items() if v[-1][0] is not None
                    and is_under(k, prefix)]

    def _get_version(self, key: str, version: str) -> Secret | None:
        self._record("get_version", [key, version])
        with self._lock:
            versions = self._versions.get(key, [])
            index = int(version) - 1 if version.isdigit() else -1
            if not 0 <= index < len(versions):
                return None
            value, at = versions[index]
        if value is None:
            return None
        return self._secret(key, value, version, created_at=at)

    def _history(self, key: str) -> list[VersionInfo]:
        with self._lock:
            return [VersionInfo(str(i), at, "memory", value is None)
                    for i, (value, at) in enumerate(self._versions.get(key, []), start=1)]


class MemoryBackend(ReadOnlyMemoryBackend, WritableBackend):
    """A writable in-memory store with history, recording every call in ``calls``.

    :class:`ReadOnlyMemoryBackend` is the same store without ``put``/``delete``.
    ``latency`` (seconds) makes every call that slow, to stand in for a remote store.
    """

    def _put(self, key: str, value: str) -> Secret:
        self._record("put", [key])
        with self._lock:
            version = self._append(key, value)
        return self._secret(key, value, str(version))

    def _delete(self, key: str) -> bool:
        self._record("delete", [key])
        with self._lock:
            versions = self._versions.get(key)
            if not versions or versions[-1][0] is None:
                return False
            self._append(key, None)
            return True


class FailingBackend(MemoryBackend):
    """A memory store that raises ``error`` on every call while failing.

    Args:
        error: the exception to raise, or a BackendError subclass built with this name.
        failing: start failing (default) or healthy.
    """

    kind = "failing"

    def __init__(self, name: str = "failing", data: Mapping[str, str] | None = None,
                 error: type[BackendError] | Exception = BackendUnavailable,
                 failing: bool = True) -> None:
        super().__init__(name, data)
        self.error = error
        self.failing = failing

    def fail(self, error: type[BackendError] | Exception | None = None) -> None:
        """Start failing, optionally with another error."""
        if error is not None:
            self.error = error
        self.failing = True

    def recover(self) -> None:
        """Stop failing."""
        self.failing = False

    def _record(self, method: str, args: Iterable[str]) -> None:
        super()._record(method, args)
        if self.failing:
            if isinstance(self.error, Exception):
                raise self.error
            raise self.error(self.name, f"{method} failed (injected by FailingBackend)")
