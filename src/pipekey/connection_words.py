"""The alias words of Airflow's Secrets Manager backend for a connection's JSON fields.

Airflow's ``SecretsManagerBackend`` reads a connection stored as a JSON object whose field
names may be any of several words (``user`` for ``login``, ``pass`` for ``password``,
``engine`` for ``conn_type``...), extended by its ``extra_conn_words`` argument. It rewrites
such an object into Airflow's JSON form before Airflow parses it. :func:`standardize` does the
same, field for field (the first matching field of the object wins, as in Airflow);
:func:`canonical_field` lets :meth:`pipekey.Connection.from_json` read the aliases too.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["WORDS", "canonical_field", "standardize", "words"]

#: Airflow's words per connection field, in Airflow's order
WORDS: dict[str, tuple[str, ...]] = {
    "login": ("login", "user", "username", "user_name"),
    "password": ("password", "pass", "key"),
    "host": ("host", "remote_host", "server"),
    "port": ("port",),
    "schema": ("database", "schema"),
    "conn_type": ("conn_type", "conn_id", "connection_type", "engine"),
    "extra": ("extra",),
}
#: alias -> field, for parsing (``conn_id`` stays the connection's id there, not its type)
_ALIASES = {word: field for field, listed in WORDS.items() for word in listed
            if word != field and word != "conn_id"}


def words(extra_conn_words: Mapping[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Airflow's words per field with ``extra_conn_words`` added (``user`` names ``login``,
    as in Airflow).

    Raises:
        ValueError: ``extra_conn_words`` names a field that is not a connection's.
    """
    out = {field: list(listed) for field, listed in WORDS.items()}
    for field, extra in (extra_conn_words or {}).items():
        target = "login" if field == "user" else field
        if target not in out:
            raise ValueError(f"extra_conn_words: {field!r} is not a connection field (one of "
                             f"user, {', '.join(out)})")
        out[target].extend(extra)
    return out


def standardize(secret: Mapping[str, Any],
                extra_conn_words: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    """``secret`` in Airflow's JSON form, exactly as Airflow's Secrets Manager backend
    rewrites it: every field present (None where no word of it appears), the first matching
    word of ``secret`` giving each field's value, other names dropped."""
    return {field: next((v for k, v in secret.items() if k in listed), None)
            for field, listed in words(extra_conn_words).items()}


def canonical_field(name: str) -> str:
    """The connection field ``name`` stands for (``user`` -> ``login``); itself otherwise."""
    return _ALIASES.get(name, name)
