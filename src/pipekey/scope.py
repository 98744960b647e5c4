"""Scopes: the key prefix a pipeline reads from, the walk up from it, and what a run may read.

A scope such as ``marketing/facebook/{account}`` is filled with the run's parameters (and
``{env}``) to ``marketing/facebook/acct_42``. A name is then looked for at each level, most
specific first, then under ``shared/``::

    marketing/facebook/acct_42/access_token   [marketing/facebook/acct_42]
    marketing/facebook/access_token           [marketing/facebook]
    marketing/access_token                    [marketing]
    shared/access_token                       [shared]

Policy: a run may read anything under its own scope, anything under ``shared/``, its grants
(exact keys or prefixes), the keys its connections are mapped to, and, at a parent level, only
the keys ``<level>/<name>`` of the names its pipeline declares (``requires``, ``optional`` and
the ``secret:`` targets of its ``dlt`` table). Nothing else at a parent level is readable:
``marketing/facebook/acct_43`` is a sibling's scope, and in a store whose secrets are JSON
documents (Secrets Manager's default, Vault's document layout) reading it would return that
sibling's whole subtree. So ``run.secret(name)`` walks the parent levels only for a declared
name; an undeclared name is looked for at the scope itself and under ``shared/``.

A value that stands for a subtree (``Secret.document``: a Secrets Manager secret holding a
JSON object, whose fields are keys; a nested object in a Vault document) is readable only where
that whole subtree is (:meth:`Scope.allows_subtree`): under the scope, ``shared/``, a grant, or
a mapped connection. A declared name at a parent level that holds a document is refused; grant
its key if the run needs it whole.

A declared name must never be the root of a sibling's subtree. A scope whose own segment
below a parent level is one of the pipeline's declared names is refused
(``marketing/facebook/{account}`` with ``account="access_token"`` would make this run's subtree
the key every other account reads as ``access_token``).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Iterable, Mapping

from .errors import InvalidKey, UsageError
from .keys import is_segment, is_under, validate_key

__all__ = ["Level", "Scope", "fill_fields", "fill_template", "template_fields"]

SHARED = "shared"


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


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill_fields(text: str, values: Mapping[str, str], what: str) -> str:
    """Fill the ``{field}``s of ``text`` that ``values`` names, each value a valid key segment.

    The one filler of templates: key templates (:func:`fill_template`) and ``{env}`` in a
    backend's prefixes and paths. Other text, braces included, is left as it is, and the
    message of an error quotes the field and its value, never ``text`` (a backend's field
    may be anything).

    Raises:
        UsageError: a value is not a valid key segment (letters, digits, '_', '.', '-').
    """
    for field, value in values.items():
        if not is_segment(value):
            raise UsageError(f"{what}: parameter {field!r} = {value!r} is not a valid key "
                             "segment (letters, digits, '_', '.', '-')")
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def fill_template(template: str, values: Mapping[str, str], what: str) -> str:
    """Fill ``{field}``s in a key template, checking each value is a valid key segment.

    Raises:
        UsageError: a field has no value, or a value is not a valid key segment.
    """
    for field in template_fields(template):
        if field not in values:
            raise UsageError(f"{what} needs parameter {field!r} (template {template!r})")
    return validate_key(fill_fields(template, values, what))


class Scope:
    """A filled scope: its walk, and the policy of a run using it."""

    def __init__(self, prefix: str, grants: tuple[str, ...] = (),
                 mapped: tuple[str, ...] = (), names: Iterable[str] = ()) -> None:
        """Args:
            prefix: the filled scope.
            grants: keys or prefixes the run may read besides its scope.
            mapped: the keys the run's connections are mapped to (exact keys).
            names: the declared names, the only ones read at parent levels.

        Raises:
            UsageError: a segment of the scope is a declared name (see the module docstring).
        """
        self.prefix = validate_key(prefix)
        self.grants = tuple(g.rstrip("/") for g in grants)
        self.mapped = frozenset(mapped)
        self.names = frozenset(names)
        parts = self.prefix.split("/")
        for depth in range(1, len(parts)):
            if parts[depth] in self.names:
                level = "/".join(parts[:depth])
                raise UsageError(
                    f"scope {self.prefix!r}: segment {parts[depth]!r} is also a declared name, "
                    f"which runs read as {level}/{parts[depth]}; that key would be this "
                    "scope's subtree (rename the parameter value or the name)")
        levels = [Level("/".join(parts[:i]), "/".join(parts[:i])) for i in range(len(parts), 0, -1)]
        if self.prefix != SHARED and not self.prefix.startswith(SHARED + "/"):
            levels.append(Level(SHARED, SHARED))
        self.levels = tuple(levels)

    def __repr__(self) -> str:
        return f"Scope({self.prefix!r}, grants={list(self.grants)})"

    def walk(self, name: str) -> list[tuple[Level, str]]:
        """The candidate keys for ``name``, most specific first.

        A declared name is looked for at every level; any other name only at the scope itself
        and under ``shared/`` (a parent level holds siblings' subtrees, see the module
        docstring). A name is one segment: ``oauth/client_id`` looked up at
        ``marketing/facebook`` would reach into the subtree of an account called ``oauth``.
        """
        validate_key(name)
        if "/" in name:
            raise InvalidKey(name, "a secret name is one segment; read a full key with run.get()")
        levels = self.levels if name in self.names else \
            [lvl for lvl in self.levels if lvl.prefix in (self.prefix, SHARED)]
        return [(level, level.key(name)) for level in levels]

    def allows_subtree(self, key: str) -> bool:
        """True if a run may read everything below ``key`` too: what a document standing for
        that subtree (``Secret.document``) needs. A mapped connection's document is the
        connection; a declared name at a parent level is one key, never a subtree."""
        return (is_under(key, self.prefix) or is_under(key, SHARED) or key in self.mapped
                or any(is_under(key, grant) for grant in self.grants))

    def allows(self, key: str) -> bool:
        """True if a run in this scope may read ``key``."""
        if is_under(key, self.prefix) or is_under(key, SHARED) or key in self.mapped:
            return True
        if any(is_under(key, grant) for grant in self.grants):
            return True
        parent, _, leaf = key.rpartition("/")
        return leaf in self.names and any(parent == level.prefix for level in self.levels[1:])
