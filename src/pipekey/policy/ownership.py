"""Which teams own which key prefixes: part of :mod:`pipekey.policy` (the one read policy),
kept in its own module for size."""

from __future__ import annotations

import itertools
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Mapping

from ..errors import ManifestError
from ..keys import is_under

if TYPE_CHECKING:
    from ..manifest import PipelineConfig

SHARED = "shared"


# -- ownership between teams ------------------------------------------------------------------
@dataclass(frozen=True)
class _Owned:
    team: str
    pipeline: str
    where: str        #: the manifest field, e.g. pipelines.p.scope
    template: str
    prefix: str       #: the literal text before the first field, {env} filled
    subtree: bool     #: False: the template names one key (a literal connection mapping)

    def covers(self, key: str) -> bool:
        return key.startswith(self.prefix) if self.subtree else key == self.prefix

    def overlaps(self, other: _Owned) -> bool:
        if self.subtree and other.subtree:
            return self.prefix.startswith(other.prefix) or other.prefix.startswith(self.prefix)
        if self.subtree:
            return self.covers(other.prefix)
        return other.covers(self.prefix)


def _literal_prefix(template: str, env: str) -> tuple[str, bool]:
    """The text of ``template`` before its first field other than ``{env}`` (filled with
    ``env``), and whether the template has such a field."""
    literal = ""
    for text, name, _, _ in string.Formatter().parse(template.rstrip("/")):
        literal += text
        if name == "env":
            literal += env
        elif name is not None:
            return literal, True
    return literal, False


def _owned(team: str, pipeline: str, where: str, template: str, env: str,
           whole_subtree: bool) -> list[_Owned]:
    literal, templated = _literal_prefix(template, env)
    if templated:
        return [_Owned(team, pipeline, where, template, literal, True)]
    out = [_Owned(team, pipeline, where, template, literal, False)]
    if whole_subtree:
        out.append(_Owned(team, pipeline, where, template, literal + "/", True))
    return out


class Ownership:
    """Which teams own which key prefixes (see the module docstring).

    Raises:
        ManifestError: two teams own overlapping prefixes (naming both, the pipelines and
            the fields), through pipelines that are not the same one.
    """

    def __init__(self, pipelines: Mapping[str, PipelineConfig], environments: Iterable[str],
                 path: object = "pipekey.toml") -> None:
        owned: list[_Owned] = []
        for name, config in pipelines.items():
            for team in dict.fromkeys(config.teams):
                for env in environments:
                    owned += _owned(team, name, f"pipelines.{name}.scope", config.scope, env,
                                    True)
                    for conn, template in config.stored_connections().items():
                        owned += _owned(team, name, f"pipelines.{name}.connections.{conn}",
                                        template, env, False)
        self._owned = [o for o in owned if not is_under(o.prefix.rstrip("/"), SHARED)
                       and not o.prefix.startswith(SHARED + "/")]
        # sorted, an entry's overlaps follow it while they start with its prefix (a prefix
        # sorts before every string it starts): near-linear instead of every pair
        ordered = sorted(self._owned, key=lambda o: (o.prefix, not o.subtree))
        for i, one in enumerate(ordered):
            for other in itertools.islice(ordered, i + 1, None):
                if not other.prefix.startswith(one.prefix):
                    break
                if one.team != other.team and one.pipeline != other.pipeline \
                        and one.overlaps(other):
                    raise ManifestError(
                        path, other.where,
                        f"teams {one.team!r} and {other.team!r} own overlapping keys: "
                        f"{one.where} = {one.template!r} and {other.where} = "
                        f"{other.template!r} share the prefix "
                        f"{min(one.prefix, other.prefix, key=len)!r}, so a parameter value of "
                        "one could reach the other's keys (give each team its own literal "
                        "prefix, or grant the keys explicitly)")

    def owners(self, key: str) -> set[str]:
        """The teams that own ``key`` (none for ``shared/`` and keys no team's templates
        start)."""
        return {o.team for o in self._owned if o.covers(key)}


