"""``env``: read secrets from environment variables.

With the default prefix ``LATCHKEY__`` and separator ``__``, the key
``marketing/facebook/access_token`` is the variable ``LATCHKEY__MARKETING__FACEBOOK__ACCESS_TOKEN``.
Variable names are upper case; ``-`` and ``.`` in a key become ``_``, so keys that differ only
there (or in case) share one variable. Listing reports keys in lower case.

Read-only on purpose: writing to ``os.environ`` is how one pipeline's credentials bleed into
another's.
"""

from __future__ import annotations

import os
import re
from typing import Iterable, Mapping, Sequence

from ..keys import is_under
from .base import Backend, BackendConfig, BuildContext, Secret

__all__ = ["EnvBackend", "key_to_name", "name_to_key", "prefix_pattern"]

_NAME_SAFE = re.compile(r"[^A-Za-z0-9_]")
#: what ``{env}`` can become: an environment name (the manifest's rule)
_ENV_FILL = r"[A-Za-z0-9_.-]+"


def key_to_name(key: str, prefix: str = "", separator: str = "__") -> str:
    """The variable name holding ``key``."""
    return prefix + separator.join(_NAME_SAFE.sub("_", s).upper() for s in key.split("/"))


def name_to_key(name: str, prefix: str = "", separator: str = "__") -> str | None:
    """The key a variable name stands for, or None if it is not one of ours."""
    if not name.startswith(prefix) or len(name) == len(prefix):
        return None
    parts = name[len(prefix):].split(separator)
    if any(not p for p in parts):
        return None
    key = "/".join(p.lower() for p in parts)
    return key if re.fullmatch(r"[a-z0-9_.-]+(/[a-z0-9_.-]+)*", key) else None


def prefix_pattern(template: str) -> re.Pattern[str] | None:
    """The variable names an env backend with prefix ``template`` reads, in every environment
    (``LK_{env}__`` matches ``LK_prod__...`` and ``LK_dev__...``), or None for an empty prefix
    (then any variable may be one of its keys)."""
    if not template:
        return None
    return re.compile("".join(_ENV_FILL if part == "{env}" else re.escape(part)
                              for part in re.split(r"(\{env\})", template)))


class EnvConfig(BackendConfig):
    prefix: str = "LATCHKEY__"
    separator: str = "__"


class EnvBackend(Backend):
    """Environment variables under a prefix. Read at call time, never cached."""

    type = "env"
    Config = EnvConfig
    batched = True  # a dict lookup per key; no remote call at all

    def __init__(
        self,
        name: str = "env",
        prefix: str = "LATCHKEY__",
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
    def from_config(cls, name: str, config: BackendConfig, ctx: BuildContext) -> "EnvBackend":
        assert isinstance(config, EnvConfig)
        return cls(name, prefix=ctx.text(config.prefix), separator=config.separator)

    def locate(self, key: str) -> str:
        return "$" + key_to_name(key, self.prefix, self.separator)

    def describe(self) -> str:
        return f"env (variables {self.prefix}*)"

    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        found = {}
        for key in keys:
            value = self._environ.get(key_to_name(key, self.prefix, self.separator))
            if value is not None:
                found[key] = self._secret(key, value)
        return found

    def _list(self, prefix: str) -> Iterable[str]:
        for name in list(self._environ):
            key = name_to_key(name, self.prefix, self.separator)
            if key is not None and is_under(key, prefix.lower()):
                yield key
