"""Values obtained for a run, announced: each is registered with pipekey's masker
(:mod:`pipekey.redact`) and passed to the listeners integrations register (Airflow's log
masking), with the secrets inside each (:func:`pipekey.redact.secret_parts`).

A run announces what it reads (:class:`pipekey.run.Run`), a brokered run what the broker sent
(:mod:`pipekey.broker`), a run's minted logins what they hold.
"""

from __future__ import annotations

from typing import Callable

from . import redact

__all__ = ["add_value_listener", "announce"]

_value_listeners: list[Callable[[str], None]] = []


def add_value_listener(listener: Callable[[str], None]) -> None:
    """Call ``listener(value)`` for every value any run obtains from now on (a secret, a
    connection's stored value, its password and sensitive extras, and the secrets inside
    each, :func:`pipekey.redact.secret_parts`): integrations register log masking here."""
    if listener not in _value_listeners:
        _value_listeners.append(listener)


def announce(*values: str | None) -> None:
    """Mask each of ``values`` (None and empty ones skipped) and tell the listeners."""
    for value in values:
        if value:
            redact.register(value)
            for part in redact.secret_parts(value) if _value_listeners else ():
                for listener in _value_listeners:
                    listener(part)
