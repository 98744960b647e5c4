"""Values obtained for a run, announced: each is registered with pipekey's masker
(:mod:`pipekey.redact`) and passed to the listeners integrations register (Airflow's log
masking), with the secrets inside each (:func:`pipekey.redact.secret_parts`).

A run announces what it reads (:class:`pipekey.run.Run`), a brokered run what the broker sent
(:mod:`pipekey.broker`), a run's minted logins what they hold.
"""

from __future__ import annotations

from typing import Callable

from . import redact

__all__ = ["add_value_listener", "add_values_listener", "announce"]

_value_listeners: list[Callable[[str], None]] = []
_values_listeners: list[Callable[[list[str]], None]] = []


def add_value_listener(listener: Callable[[str], None]) -> None:
    """Call ``listener(value)`` for every value any run obtains from now on (a secret, a
    connection's stored value, its password and sensitive extras, and the secrets inside
    each, :func:`pipekey.redact.secret_parts`): integrations register log masking here."""
    if listener not in _value_listeners:
        _value_listeners.append(listener)


def add_values_listener(listener: Callable[[list[str]], None]) -> None:
    """As :func:`add_value_listener`, called once per :func:`announce` with every value and
    part it announces (a run's values at once): for maskers that pay per call, such as
    Airflow's, whose every call in a task is a round trip to the task's supervisor."""
    if listener not in _values_listeners:
        _values_listeners.append(listener)


def announce(*values: str | None) -> None:
    """Mask each of ``values`` (None and empty ones skipped) and tell the listeners."""
    parts: list[str] = []
    for value in values:
        if value:
            redact.register(value)
            if _value_listeners or _values_listeners:
                parts.extend(redact.secret_parts(value))
    for part in parts:
        for listener in _value_listeners:
            listener(part)
    if parts:
        for many in _values_listeners:
            many(parts)
