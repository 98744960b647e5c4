"""The manifest's schema machinery: msgspec conversion, and msgspec's errors in pipekey's words.

Every table of the manifest is a msgspec ``Struct`` (``forbid_unknown_fields``, ``Meta``
bounds, unions of Structs tagged on ``method``), converted from what tomllib parsed with
:func:`convert`. A failure becomes one :class:`~pipekey.errors.ManifestError` line naming the
file and the field's full path (``backends.ssm.cache.ttl``) in pipekey's words
(:func:`manifest_error`): never msgspec's own text.

msgspec reports a ``ValueError`` raised in ``__post_init__`` at the Struct's own path; a
check there raises :func:`field_problem`, whose field the wording adds to that path.
"""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec
from msgspec import Struct

from .errors import ManifestError

__all__ = ["convert", "field_problem", "manifest_error", "split_field_problem"]

_SEP = ": "


def field_problem(field: str, problem: str) -> ValueError:
    """The error a Struct's ``__post_init__`` raises when ``field`` holds a bad value."""
    return ValueError(f"{field}{_SEP}{problem}")


def split_field_problem(message: str) -> tuple[str, str] | None:
    """``(field, problem)`` from a :func:`field_problem` message, or None for any other."""
    field, sep, problem = message.partition(_SEP)
    return (field, problem) if sep and field.isidentifier() else None


S = TypeVar("S")

#: msgspec's type names (``Expected `array`, got `str```) in the manifest's words
_TYPE_WORDING = {
    "array": "must be a list",
    "str": "must be text (a quoted string)",
    "int": "must be a whole number",
    "float": "must be a number",
    "bool": "must be true or false",
    "object": "must be a table ([section] or { key = value })",
}
_AT = re.compile(r" - at `(\$[^`]*)`$")
_PATH_PART = re.compile(r"\.([^.\[]+)|\[(\d+|\.\.\.)\]")
_EXPECTED = re.compile(r"Expected `([^`]+)`(.*)$")
_BOUND = re.compile(r" (>=|>|<=|<) (\S+)$")
_BOUND_WORDS = {">=": "at least", ">": "more than", "<=": "at most", "<": "less than"}


def convert(path: Path, raw: Any, model: type[S], prefix: tuple[str, ...]) -> S:
    """``raw`` (what tomllib parsed) as ``model``, or a ManifestError naming the field."""
    try:
        return msgspec.convert(raw, model)
    except msgspec.ValidationError as exc:
        raise manifest_error(path, str(exc), raw, model, prefix) from None


def manifest_error(path: Path, message: str, raw: Any, model: Any,
                    prefix: tuple[str, ...] = ()) -> ManifestError:
    """A msgspec validation error in pipekey's words, naming the field by its full path.

    msgspec stops at its first error, in the order of the document. An unknown field is
    looked for first, at any depth: a misspelt field is the likelier cause of what else fails
    (``members`` for ``member_of`` leaves ``member_of`` missing).
    """
    unknown = _first_unknown(model, raw, ())
    if unknown is not None:
        loc, problem = unknown, _unknown_field(model, raw, unknown)
    else:
        loc, problem = _from_msgspec(message, raw, model)
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in (*prefix, *loc))
    return ManifestError(path, where.lstrip(".") or None, problem)


def _from_msgspec(message: str, raw: Any, model: Any) -> tuple[tuple[str | int, ...], str]:
    """(field path, problem) from msgspec's message: ``<what> - at `$.a.b[0]```."""
    at = _AT.search(message)
    text = message[:at.start()] if at else message
    loc = _resolve(_parse_path(at.group(1)) if at else (), raw, text)
    own = split_field_problem(text)
    if own is not None and not text.startswith(("Expected", "Object", "Invalid")):
        return (*loc, own[0]), own[1]  # a Struct's __post_init__ check (pipekey._schema)
    if text.startswith("Object missing required field `"):
        return (*loc, text.split("`")[1]), "missing"
    value = _value_at(raw, loc)
    if text.startswith("Invalid enum value "):
        return loc, f"must be one of {_choices(_literal_at(model, raw, loc))}"
    if text.startswith("Invalid value ") and loc:  # a tagged union's tag (auth.method)
        tags = _tags_at(model, raw, loc[:-1])
        return loc, (f"unknown {loc[-1]} {value!r}"
                     + (f" (known: {', '.join(tags)})" if tags else ""))
    expected = _EXPECTED.match(text)
    if expected is None:
        return loc, f"is not valid here (got {_kind(value)})"
    names, rest = expected.group(1), expected.group(2)
    bound = _BOUND.search(rest)
    if rest.startswith(" of length") and bound:
        n = _number(float(bound.group(2)))
        return loc, f"must have {_BOUND_WORDS[bound.group(1)]} {n} item{'s' * (n != 1)}"
    if rest.startswith(" matching regex "):
        return loc, f"must match {rest[len(' matching regex '):]} (got {value!r})"
    if bound and not rest.startswith(","):
        return loc, (f"must be {_BOUND_WORDS[bound.group(1)]} "
                     f"{_number(float(bound.group(2)))} (got {value!r})")
    kinds = [n for n in names.split(" | ") if n != "null"]
    message = " or ".join(_TYPE_WORDING.get(k, f"must be {k}") for k in kinds) or "not valid"
    if kinds == ["array"] and isinstance(value, str) and loc and len(value) <= 60:
        message += f", e.g. {loc[-1]} = [{_toml_string(value)}]"
    return loc, f"{message} (got {_kind(value)})"


def _parse_path(text: str) -> tuple[str | int, ...]:
    """``$.a.b[0][...]`` -> ``("a", "b", 0, "...")``."""
    parts: list[str | int] = []
    for name, index in _PATH_PART.findall(text[1:]):
        parts.append(name if name else int(index) if index.isdigit() else "...")
    return tuple(parts)


#: the msgspec type names of what tomllib gives
_MSGSPEC_KIND = {str: "str", bool: "bool", int: "int", float: "float", list: "array",
                 dict: "object"}


def _resolve(loc: tuple[str | int, ...], raw: Any, text: str) -> tuple[str | int, ...]:
    """``loc`` with each ``[...]`` (a table's key, which msgspec does not report) replaced
    by the first key of that table whose value shows the problem (msgspec stops at the first
    in document order)."""
    if "..." not in loc:
        return loc
    i = loc.index("...")
    table = _value_at(raw, loc[:i])
    keys = list(table) if isinstance(table, dict) else []
    got = re.search(r", got `([^`]+)`", text)
    for key in keys:
        candidate = (*loc[:i], key, *loc[i + 1:])
        if "..." in candidate[i + 1:]:
            candidate = (*loc[:i], key, *_resolve(loc[i + 1:], table[key], text))
        value = _value_at(raw, candidate, missing=_MISSING)
        if value is _MISSING:
            continue
        if got is None or _MSGSPEC_KIND.get(type(value)) == got.group(1):
            return candidate
    return (*loc[:i], keys[0], *loc[i + 1:]) if keys else loc[:i]


_MISSING = object()


def _value_at(raw: Any, loc: tuple[str | int, ...], missing: Any = None) -> Any:
    for part in loc:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and isinstance(part, int) and part < len(raw):
            raw = raw[part]
        else:
            return missing
    return raw


def _first_unknown(model: Any, raw: Any, loc: tuple[str | int, ...]
                   ) -> tuple[str | int, ...] | None:
    """The path of the first field ``raw`` holds that ``model`` does not know, at any depth,
    in document order, or None."""
    model = _pick(model, raw)
    if isinstance(model, type) and issubclass(model, Struct) and isinstance(raw, dict):
        hints = _hints(model)
        for name, value in raw.items():
            if name not in hints and name != model.__struct_config__.tag_field:
                return (*loc, name)
            found = _first_unknown(hints.get(name), value, (*loc, name))
            if found is not None:
                return found
    elif get_origin(model) is dict and isinstance(raw, dict):
        for key, value in raw.items():
            found = _first_unknown(get_args(model)[1], value, (*loc, key))
            if found is not None:
                return found
    elif get_origin(model) is list and isinstance(raw, list):
        for i, value in enumerate(raw):
            found = _first_unknown(get_args(model)[0], value, (*loc, i))
            if found is not None:
                return found
    return None


def _unknown_field(model: Any, raw: Any, loc: tuple[str | int, ...]) -> str:
    known = sorted(_fields(_type_at(model, raw, loc[:-1])))
    import difflib  # an error message's suggestion: not on the happy path's imports

    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"unknown field (did you mean {close[0]!r}?)"
    return f"unknown field (known: {', '.join(known)})" if known else "unknown field"


def _type_at(model: Any, raw: Any, loc: tuple[str | int, ...]) -> Any:
    """The type ``loc`` reaches from ``model`` (unions of Structs picked by their tag)."""
    for part in loc:
        model = _pick(model, raw)
        if isinstance(model, type) and issubclass(model, Struct):
            model = _hints(model).get(str(part))
        elif get_origin(model) in (dict, list):
            model = get_args(model)[-1]
        else:
            return None
        raw = _value_at(raw, (part,))
    return _pick(model, raw)


def _pick(model: Any, raw: Any) -> Any:
    """``X | None`` -> ``X``; a tagged union of Structs -> the member ``raw``'s tag names."""
    if get_origin(model) not in (Union, types.UnionType):
        return model
    args = [a for a in get_args(model) if a is not type(None)]
    if len(args) == 1:
        return args[0]
    structs = [a for a in args if isinstance(a, type) and issubclass(a, Struct)]
    for member in structs:
        config = member.__struct_config__
        if isinstance(raw, dict) and raw.get(config.tag_field) == config.tag:
            return member
    return model


def _fields(model: Any) -> set[str]:
    if isinstance(model, type) and issubclass(model, Struct):
        tag = model.__struct_config__.tag_field
        return set(model.__struct_fields__) | ({tag} if tag else set())
    return set()


def _tags_at(model: Any, raw: Any, loc: tuple[str | int, ...]) -> list[str]:
    """The tags a tagged union at ``loc`` accepts."""
    union = _type_at(model, {}, loc) if loc else model
    members = get_args(union) if get_origin(union) in (Union, types.UnionType) else ()
    return sorted(str(m.__struct_config__.tag) for m in members
                  if isinstance(m, type) and issubclass(m, Struct) and m.__struct_config__.tag)


def _literal_at(model: Any, raw: Any, loc: tuple[str | int, ...]) -> tuple[Any, ...]:
    target = _type_at(model, raw, loc)
    return get_args(target) if get_origin(target) is Literal else ()


def _choices(values: tuple[Any, ...]) -> str:
    """``'a', 'b' or 'c'``."""
    shown = [repr(v) for v in values]
    return ", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else "".join(shown)


def _hints(model: type[Struct]) -> dict[str, Any]:
    """A Struct's field types (its annotations resolved, ``Annotated`` constraints dropped)."""
    return {k: v for k, v in get_type_hints(model).items() if k in model.__struct_fields__}


def _number(bound: Any) -> Any:
    """A bound as the manifest would write it (``0``, not ``0.0``)."""
    return int(bound) if isinstance(bound, float) and bound.is_integer() else bound


def _toml_string(text: str) -> str:
    """``text`` as a TOML basic string."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _kind(value: Any) -> str:
    names = {str: "text", bool: "true/false", int: "a number", float: "a number",
             list: "a list", dict: "a table"}
    return next((n for t, n in names.items() if type(value) is t), type(value).__name__)
