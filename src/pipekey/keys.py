"""Keys: slash paths naming one secret, e.g. ``marketing/facebook/acct_42/access_token``.

Rules: segments of ``[A-Za-z0-9_.-]+``, no empty segment (so no leading, trailing or doubled
slash), no ``.`` or ``..`` segment, no control characters, at most 512 characters.
"""

from __future__ import annotations

import re

from .errors import InvalidKey

__all__ = ["MAX_KEY_LENGTH", "NAME", "NAME_PATTERN", "NOT_AN_ENVIRONMENT", "SEGMENT_PATTERN",
           "environment_problem", "is_name", "is_segment", "is_under", "join", "segment_problem",
           "validate_key", "validate_prefix"]

MAX_KEY_LENGTH = 512
#: one key segment; the one rule for keys, scope parameters, secret names and environments
SEGMENT_PATTERN = r"[A-Za-z0-9_.-]+"
_SEGMENT = re.compile(SEGMENT_PATTERN)
#: a name of the manifest (a pipeline, a backend, a credential): a key segment without '.'
NAME_PATTERN = r"[A-Za-z0-9_-]+"
NAME = re.compile(NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: why a text is not an environment name, said once for the manifest, the client and the CLI;
#: ``{problem}`` is :func:`segment_problem`'s, never the text (it may be a value typed by mistake)
NOT_AN_ENVIRONMENT = ("is not a valid environment name ({problem}; one key segment: letters, "
                      "digits, '_', '.', '-')")


def is_name(text: object) -> bool:
    """True if ``text`` is a name of the manifest (letters, digits, '_' and '-')."""
    return isinstance(text, str) and bool(NAME.fullmatch(text))


def is_segment(text: object) -> bool:
    """True if ``text`` is one valid key segment: ``[A-Za-z0-9_.-]+``, not ``.`` or ``..``."""
    return isinstance(text, str) and bool(_SEGMENT.fullmatch(text)) and text not in (".", "..")


def segment_problem(text: object) -> str | None:
    """What keeps ``text`` from being one key segment, said without ``text`` (a scope
    parameter or an environment may be a value given by mistake): its type, empty, a dot
    segment, or its length and the kinds of characters it may not hold. None: a segment."""
    if is_segment(text):
        return None
    if not isinstance(text, str):
        return f"not text but {type(text).__name__}"
    if not text:
        return "empty"
    if text in (".", ".."):
        return "a '.' or '..' segment"
    kinds = {"'/'" if c == "/" else "whitespace" if c.isspace() and c.isascii()
             else "a control character" if _CONTROL.match(c)
             else "a non-ASCII character" if not c.isascii()
             else "punctuation other than '_', '.', '-'"
             for c in text if not _SEGMENT.fullmatch(c)}
    plural = "s" if len(text) != 1 else ""
    return f"{len(text)} character{plural}, with {' and '.join(sorted(kinds))}"


def environment_problem(env: object) -> str | None:
    """Why ``env`` is not an environment name (one key segment), or None if it is one; it
    never quotes ``env``."""
    problem = segment_problem(env)
    return None if problem is None else NOT_AN_ENVIRONMENT.format(problem=problem)


def validate_key(key: object) -> str:
    """Return ``key`` unchanged if it is a valid key.

    Raises:
        InvalidKey: naming the key and the rule it breaks.
    """
    if not isinstance(key, str):
        raise InvalidKey(key, f"a key is a string, not {type(key).__name__}")
    if not key:
        raise InvalidKey(key, "empty key")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(key, f"{len(key)} characters, the limit is {MAX_KEY_LENGTH}")
    if _CONTROL.search(key):
        raise InvalidKey(key, "contains a control character")
    if key.startswith("/"):
        raise InvalidKey(key, "keys do not start with '/' (write shared/x, not /shared/x; a "
                              "backend's prefix adds any leading slash it needs)")
    for position, segment in enumerate(key.split("/"), start=1):
        _check_segment(key, segment, position)
    return key


def validate_prefix(prefix: str) -> str:
    """Like :func:`validate_key`, but ``""`` (everything) and a trailing slash are allowed.

    Returns the prefix without its trailing slash.
    """
    if prefix in ("", "/"):
        return ""
    return validate_key(prefix.rstrip("/") if prefix.endswith("/") else prefix)


def is_under(key: str, prefix: str) -> bool:
    """True if ``key`` is ``prefix`` itself or lies below it, on a segment boundary."""
    return not prefix or key == prefix or key.startswith(prefix + "/")


def join(*parts: str) -> str:
    """Join key parts with ``/``, skipping empty ones, and validate the result."""
    return validate_key("/".join(p.strip("/") for p in parts if p and p.strip("/")))


def _check_segment(key: str, segment: str, position: int) -> None:
    if not segment:
        raise InvalidKey(key, f"empty segment at position {position}")
    if segment in (".", ".."):
        raise InvalidKey(key, f"segment {position} is {segment!r}")
    if not _SEGMENT.fullmatch(segment):
        bad = sorted({c for c in segment if not _SEGMENT.fullmatch(c)})
        raise InvalidKey(
            key,
            f"segment {position} has {''.join(bad)!r}; "
            "allowed are ASCII letters, digits, '_', '.', '-'",
        )
