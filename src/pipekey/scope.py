"""Scopes: the key prefix a pipeline reads from, the walk up from it, and what a run may read.

A scope such as ``marketing/facebook/{account}`` is filled with the run's parameters (and
``{env}``) to ``marketing/facebook/acct_42``. A name is then looked for at each level, most
specific first, then under ``shared/``::

    marketing/facebook/acct_42/access_token   [marketing/facebook/acct_42]
    marketing/facebook/access_token           [marketing/facebook]
    marketing/access_token                    [marketing]
    shared/access_token                       [shared]

Policy (decided by :mod:`pipekey.policy`, explained here): a run may read anything under its
own scope, anything under ``shared/``, its grants (exact keys or prefixes), the keys its
connections are mapped to, and, at a parent level, only the keys ``<level>/<name>`` of the
names its pipeline declares (``requires``, ``optional`` and the ``secret:`` targets of its
``dlt`` table). Nothing else at a parent level is readable: ``marketing/facebook/acct_43`` is a
sibling's scope, and in a store whose secrets are JSON documents (Secrets Manager's default,
Vault's document layout) reading it would return that sibling's whole subtree. So
``run.secret(name)`` walks the parent levels only for a declared name; an undeclared name is
looked for at the scope itself and under ``shared/``.

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

from dataclasses import dataclass
from typing import Iterable

from .errors import InvalidKey, UsageError
from .keys import validate_key
from .policy import SHARED

__all__ = ["Level", "Scope"]


@dataclass(frozen=True)
class Level:
    """One step of the walk: a key prefix and its label in diagnostics."""

    prefix: str
    label: str

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"


class Scope:
    """A filled scope's walk. What a run may read is :class:`pipekey.policy.RunPolicy`'s
    to say."""

    def __init__(self, prefix: str, names: Iterable[str] = ()) -> None:
        """Args:
            prefix: the filled scope.
            names: the declared names, the only ones read at parent levels.

        Raises:
            UsageError: a segment of the scope is a declared name (see the module docstring).
        """
        self.prefix = validate_key(prefix)
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
        return f"Scope({self.prefix!r})"

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
