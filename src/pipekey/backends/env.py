"""``env``: read secrets from environment variables.

With the default prefix ``PIPEKEY__`` and separator ``__``, the key
``marketing/facebook/access_token`` is the variable ``PIPEKEY__MARKETING__FACEBOOK__ACCESS_TOKEN``.

One key, one variable: the mapping is injective, and listing is its exact inverse. A variable
name cannot tell case, ``-`` or ``.`` apart, and the separator stands for ``/``, so only keys
that map back to themselves have a variable. Each segment must be:

* lower-case ASCII letters, digits and ``_`` (no upper case, ``-`` or ``.``: ``ACCT-43`` and
  ``acct_43`` would otherwise share ``ACCT_43``);
* without the separator (``acct_43__access_token`` would read ``acct_43/access_token``);
* not starting or ending with ``_`` (``a_/b`` and ``a/_b`` would both be ``A___B``).

Any other key is absent here (``explain`` says why) and refused for writes. Variables whose
names do not read back exactly (``PIPEKEY__acct_43__TOKEN``, ``PIPEKEY__A___B``) stand for
no key at all.

Read-only on purpose: writing to ``os.environ`` is how one pipeline's credentials bleed into
another's.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Mapping, Sequence

from ..keys import SEGMENT_PATTERN, is_under
from .base import Backend, BackendConfig, BuildContext, Secret

__all__ = ["EnvBackend", "key_to_name", "mapping_problem", "name_to_key", "prefix_pattern"]

_LOWER_SEGMENT = re.compile(r"[a-z0-9_]+")
#: what ``{env}`` can become: an environment name, which is one key segment
_ENV_FILL = SEGMENT_PATTERN


def mapping_problem(key: str, separator: str = "__") -> str | None:
    """Why ``key`` has no variable of its own (one line naming the segment), or None."""
    for position, segment in enumerate(key.split("/"), start=1):
        where = f"segment {position} {segment!r}"
        if not _LOWER_SEGMENT.fullmatch(segment):
            return (f"{where} is not lower-case letters, digits and '_' (variable names fold "
                    "case, '-' and '.')")
        if separator in segment.upper():
            return f"{where} contains the separator {separator!r}"
        if segment.startswith("_") or segment.endswith("_"):
            return f"{where} starts or ends with '_', which merges with the separator"
    if _split(_join(key, "", separator), "", separator) != key:
        return f"its variable name would not read back as the same key (separator {separator!r})"
    return None


def key_to_name(key: str, prefix: str = "", separator: str = "__") -> str | None:
    """The variable name holding ``key``, or None if ``key`` cannot have one (see
    :func:`mapping_problem`)."""
    return None if mapping_problem(key, separator) else _join(key, prefix, separator)


def name_to_key(name: str, prefix: str = "", separator: str = "__") -> str | None:
    """The key a variable name stands for, or None if it is not one of ours.

    The exact inverse of :func:`key_to_name`: a name is a key's only if that key maps back to
    this very name, so no two names (``X__A`` and ``X__a``) stand for one key.
    """
    key = _split(name, prefix, separator)
    return key if key is not None and key_to_name(key, prefix, separator) == name else None


def _join(key: str, prefix: str, separator: str) -> str:
    return prefix + separator.join(s.upper() for s in key.split("/"))


def _split(name: str, prefix: str, separator: str) -> str | None:
    if not name.startswith(prefix) or len(name) == len(prefix):
        return None
    parts = name[len(prefix):].split(separator)
    if any(not p for p in parts):
        return None
    key = "/".join(p.lower() for p in parts)
    return key if re.fullmatch(r"[a-z0-9_]+(/[a-z0-9_]+)*", key) else None


def prefix_pattern(template: str) -> re.Pattern[str] | None:
    """The variable names an env backend with prefix ``template`` reads, in every environment
    (``LK_{env}__`` matches ``LK_prod__...`` and ``LK_dev__...``), or None for an empty prefix
    (then any variable may be one of its keys)."""
    if not template:
        return None
    return re.compile("".join(_ENV_FILL if part == "{env}" else re.escape(part)
                              for part in re.split(r"(\{env\})", template)))


class EnvConfig(BackendConfig):
    prefix: str = "PIPEKEY__"
    separator: str = "__"


class EnvBackend(Backend):
    """Environment variables under a prefix. Read at call time, never cached."""

    kind = "env"
    Config = EnvConfig

    def __init__(
        self,
        name: str = "env",
        prefix: str = "PIPEKEY__",
        separator: str = "__",
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(name)
        if not separator:
            raise ValueError("the env backend's separator cannot be empty")
        self.prefix = prefix
        self.separator = separator
        self._environ = os.environ if environ is None else environ

    @classmethod
    def name_head(cls, config: BackendConfig) -> str | None:
        assert isinstance(config, EnvConfig)
        return config.prefix

    @classmethod
    def env_problem(cls, env: str, config: BackendConfig) -> str | None:
        """An environment in a variable name follows the rule of a key segment there (see
        the module docstring): ``PROD``, ``prod-eu`` and ``prod__finance`` are refused."""
        assert isinstance(config, EnvConfig)
        if "{env}" in config.prefix and (problem := mapping_problem(env, config.separator)):
            return "in a variable name it " + problem.removeprefix(f"segment 1 {env!r} ")
        return super().env_problem(env, config)

    @classmethod
    def from_config(cls, name: str, config: BackendConfig, ctx: BuildContext) -> "EnvBackend":
        assert isinstance(config, EnvConfig)
        return cls(name, prefix=ctx.text(config.prefix), separator=config.separator)

    def locate(self, key: str) -> str:
        name = key_to_name(key, self.prefix, self.separator)
        return "$" + name if name else f"(no variable: {self.prefix}* cannot hold this key)"

    def store_name(self, key: str) -> str | None:
        return key_to_name(key, self.prefix, self.separator)

    def unmappable(self, key: str) -> str | None:
        return mapping_problem(key, self.separator)

    def describe(self) -> str:
        return f"env (variables {self.prefix}*)"

    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        found = {}
        for key in keys:
            name = key_to_name(key, self.prefix, self.separator)
            value = None if name is None else self._environ.get(name)
            if value is not None:
                found[key] = self._secret(key, value)
        return found

    def _list(self, prefix: str) -> Iterable[str]:
        for name in list(self._environ):
            key = name_to_key(name, self.prefix, self.separator)
            if key is not None and is_under(key, prefix):
                yield key
