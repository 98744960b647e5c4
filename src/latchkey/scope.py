"""Scopes: the key prefix a pipeline reads from, the walk up from it, and what a run may read.

A scope such as ``marketing/facebook/{account}`` is filled with the run's parameters (and
``{env}``) to ``marketing/facebook/acct_42``. A name is then looked for at each level, most
specific first, then under ``shared/``::

    marketing/facebook/acct_42/access_token   [marketing/facebook/acct_42]
    marketing/facebook/access_token           [marketing/facebook]
    marketing/access_token                    [marketing]
    shared/access_token                       [shared]

Policy: a run may read anything under its own scope, a key directly at a parent level (the
walk's own candidates, never a sibling's subtree: ``marketing/facebook/acct_43/...`` is
denied), anything under ``shared/``, its grants (exact keys or prefixes) and the keys its
connections are mapped to.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Mapping

from .errors import InvalidKey, UsageError
from .keys import is_under, validate_key

__all__ = ["Level", "Scope", "fill_template", "template_fields"]

SHARED = "shared"
_SEGMENT = re.compile(r"[A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class Level:
    """One step of the walk: a key prefix and its label in diagnostics."""

    prefix: str
    label: str

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"


def template_fields(template: str) -> list[str]:
    """The ``{field}`` names used in a template, in order."""
    try:
        return [f for _, f, _, _ in string.Formatter().parse(template) if f]
    except ValueError as exc:
        raise UsageError(f"template {template!r} is malformed: {exc}") from None


def fill_template(template: str, values: Mapping[str, str], what: str) -> str:
    """Fill ``{field}``s in a key template, checking each value is a valid key segment.

    Raises:
        UsageError: a field has no value, or a value is not a valid key segment.
    """
    for field in template_fields(template):
        if field not in values:
            raise UsageError(f"{what} needs parameter {field!r} (template {template!r})")
    for field, value in values.items():
        if not isinstance(value, str) or not _SEGMENT.fullmatch(value) or value in (".", ".."):
            raise UsageError(f"{what}: parameter {field!r} = {value!r} is not a valid key "
                             "segment (letters, digits, '_', '.', '-')")
    return validate_key(template.format_map(dict(values)))


class Scope:
    """A filled scope: its walk, and the policy of a run using it."""

    def __init__(self, prefix: str, grants: tuple[str, ...] = (),
                 mapped: tuple[str, ...] = ()) -> None:
        self.prefix = validate_key(prefix)
        self.grants = tuple(g.rstrip("/") for g in grants)
        self.mapped = frozenset(mapped)
        parts = self.prefix.split("/")
        levels = [Level("/".join(parts[:i]), "/".join(parts[:i])) for i in range(len(parts), 0, -1)]
        if self.prefix != SHARED and not self.prefix.startswith(SHARED + "/"):
            levels.append(Level(SHARED, SHARED))
        self.levels = tuple(levels)

    def __repr__(self) -> str:
        return f"Scope({self.prefix!r}, grants={list(self.grants)})"

    def walk(self, name: str) -> list[tuple[Level, str]]:
        """The candidate keys for ``name``, most specific first.

        A name is one segment: ``oauth/client_id`` looked up at ``marketing/facebook`` would
        reach into the subtree of an account called ``oauth``.
        """
        validate_key(name)
        if "/" in name:
            raise InvalidKey(name, "a secret name is one segment; read a full key with run.get()")
        return [(level, level.key(name)) for level in self.levels]

    def allows(self, key: str) -> bool:
        """True if a run in this scope may read ``key``."""
        if is_under(key, self.prefix) or is_under(key, SHARED) or key in self.mapped:
            return True
        if any(is_under(key, grant) for grant in self.grants):
            return True
        parent, _, leaf = key.rpartition("/")
        return bool(parent) and "/" not in leaf and any(
            parent == level.prefix for level in self.levels[1:])
