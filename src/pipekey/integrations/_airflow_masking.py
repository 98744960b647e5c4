"""Log and stream masking for the Airflow integration: every value pipekey serves in an
Airflow process is registered with pipekey's masker (:mod:`pipekey.redact`), Airflow's, and
the process's ``sys.stdout``/``sys.stderr``. Re-exported by :mod:`pipekey.integrations.airflow`.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from .. import redact
from ..errors import PipekeyError

__all__ = ["mask", "mask_connection", "mask_many", "mask_std_streams"]


def mask(value: str | None) -> None:
    """Mask ``value`` wherever this process writes it: pipekey's masker (logs), Airflow's, and
    the process's stdout/stderr (:func:`mask_std_streams`), since a value served outside a run
    may be printed too and LocalExecutor copies task output to the scheduler's console."""
    if value:
        mask_many([value])


#: values this process has handed Airflow's masker (it keeps them for the process too): each
#: is sent once, as a task's every ``mask_secret`` is a round trip to its supervisor
_sent: set[str] = set()
_sent_lock = threading.Lock()


def mask_many(values: list[str]) -> None:
    """:func:`mask` of every value in one call to Airflow's ``mask_secret`` (which in a task
    is a round trip to its supervisor: one for a run's values, not one per value)."""
    values = [v for v in values if v]
    if not values:
        return
    for value in values:
        redact.register(value)
    mask_std_streams()
    with _sent_lock:
        new = list(dict.fromkeys(v for v in values if v not in _sent))
    if not new:
        return
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(list[Any](new))  # a list is one message (JSON), a masked value each
    except Exception:  # masking must never break a lookup (and is tried again next time)
        return
    with _sent_lock:
        _sent.update(new)


def mask_connection(value: str | None) -> None:
    if not value:
        return
    for part in redact.secret_parts(value):
        mask(part)
    try:
        from ..connection import Connection

        for secret in Connection.from_value(value).secret_values():
            mask(secret)
    except PipekeyError:
        pass


class _MaskedStream:
    """A text stream whose writes pass through pipekey's masker first."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if isinstance(text, str):
            self._stream.write(redact.redactor().redact(text))
            return len(text)
        return self._stream.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_streams_lock = threading.Lock()


def mask_std_streams() -> None:
    """Mask registered values in everything written to ``sys.stdout``/``sys.stderr`` from
    now on (idempotent; stays for the process, as the registered values do). Called for
    every value the backend or a task run serves, so a stream replaced since is wrapped too."""
    with _streams_lock:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream is not None and not isinstance(stream, _MaskedStream):
                setattr(sys, name, _MaskedStream(stream))
