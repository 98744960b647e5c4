"""What the manifest's msgspec Structs share: how a check in ``__post_init__`` names its field.

msgspec reports a ``ValueError`` raised in ``__post_init__`` at the Struct's own path; the
manifest's wording layer (:func:`pipekey.manifest._manifest_error`) reads the field from the
message that :func:`field_problem` builds and adds it to that path.
"""

from __future__ import annotations

__all__ = ["field_problem", "split_field_problem"]

_SEP = ": "


def field_problem(field: str, problem: str) -> ValueError:
    """The error a Struct's ``__post_init__`` raises when ``field`` holds a bad value."""
    return ValueError(f"{field}{_SEP}{problem}")


def split_field_problem(message: str) -> tuple[str, str] | None:
    """``(field, problem)`` from a :func:`field_problem` message, or None for any other."""
    field, sep, problem = message.partition(_SEP)
    return (field, problem) if sep and field.isidentifier() else None
