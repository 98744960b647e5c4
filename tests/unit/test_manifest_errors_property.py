"""Manifest errors stay pipekey's own words, whatever is wrong and wherever (issue 27).

A valid manifest (every kind of table: backends with cache, rate limit and a tagged auth,
pipelines with a role, teams, credentials, audit sinks) is mutated once: a value of the wrong
kind, an unknown field, a misspelt field, a bad ``type``/``method`` tag, at any depth. The
error is one line naming the file and the mutated field, never a library's raw text.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipekey import ManifestError
from pipekey.backends.aws_ssm import SsmConfig
from pipekey.backends.base import CacheConfig, RateLimit
from pipekey.backends.local import LocalConfig
from pipekey.backends.vault import VaultConfig
from pipekey.backends.vault_auth import AppRoleAuth
from pipekey.credentials.base import PostgresRoleConfig
from pipekey.manifest import (
    AuditConfig,
    AuditSink,
    AwsRole,
    PipelineConfig,
    TeamConfig,
    _Document,
    parse_manifest,
)

FILE = Path("/fake/project/pipekey.toml")

BASE: dict[str, Any] = {
    "env": "dev",
    "environments": ["dev", "prod"],
    "chain": ["local", "ssm", "vault"],
    "on_backend_error": "fall_through",
    "audit": {"required": False, "sinks": [{"type": "file", "path": "audit.log",
                                            "max_bytes": 4096}]},
    "backends": {
        "local": {"type": "local", "path": "store.db"},
        "ssm": {"type": "aws_ssm", "prefix": "/fake/{env}", "region": "eu-central-1",
                "cache": {"ttl": 300, "max_entries": 100}, "rate_limit": {"rps": 10}},
        "vault": {"type": "vault", "url": "http://127.0.0.1:1", "kv_version": 2,
                  "auth": {"method": "approle", "role_id": "fake-role"}},
    },
    "pipelines": {
        "ads": {"scope": "marketing/ads/{account}", "requires": ["access_token"],
                "connections": {"warehouse": "connections/wh_{env}",
                                "db": "dynamic:warehouse_rw"},
                "grants": ["reference/rates"], "teams": ["marketing"],
                "aws_role": {"arn": "arn:aws:iam::123456789012:role/fake", "duration": 900},
                "env_vars": {"ACCOUNT": "fake"}},
    },
    "teams": {"marketing": {"aws_role": {"arn": "arn:aws:iam::123456789012:role/fake-read"}}},
    "credentials": {
        "warehouse_rw": {"type": "postgres_role", "admin": "admin/warehouse_{env}",
                         "member_of": ["etl_writer"], "ttl": 600},
    },
}

#: every field name some table of BASE's schema takes
SCHEMA_FIELDS = {f for cls in (_Document, PipelineConfig, AwsRole, TeamConfig, AuditConfig,
                               AuditSink, CacheConfig, RateLimit, SsmConfig, LocalConfig,
                               VaultConfig, AppRoleAuth, PostgresRoleConfig)
                 for f in cls.__struct_fields__} | {"method"}
#: tables whose keys are names the user chooses (any key is allowed)
FREE = {"backends", "pipelines", "teams", "credentials", "connections", "env_vars", "tags"}
#: the tag fields (their bad values are a separate mutation)
TAGS = {"type", "method"}


def _nodes(doc: Any, loc: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Any]]:
    """Every (path, value) of the document, the root excluded."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) \
        if isinstance(doc, list) else ()
    for key, value in items:
        out.append(((*loc, key), value))
        out.extend(_nodes(value, (*loc, key)))
    return out


LEAVES = [(p, v) for p, v in _nodes(BASE) if p[-1] not in TAGS]
#: tables of the schema (not name tables): where an unknown field is an error
STRUCTS = [()] + [p for p, v in _nodes(BASE) if isinstance(v, dict) and p[-1] not in FREE]
FIELDS = [(p, v) for p, v in _nodes(BASE)
          if isinstance(p[-1], str) and len(p[-1]) >= 4 and p[-1] not in TAGS
          and (len(p) == 1 or p[-2] not in FREE)]
TAG_PATHS = [p for p, _ in _nodes(BASE) if p[-1] in TAGS]


def _where(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")


def _set(doc: dict[str, Any], loc: tuple[str | int, ...], value: Any) -> None:
    node: Any = doc
    for part in loc[:-1]:
        node = node[part]
    node[loc[-1]] = value


def _wrong(value: Any) -> list[Any]:
    """Values of a kind the field does not take (a number field takes an int for a float)."""
    if isinstance(value, bool):
        return ["yes", 1, [True]]
    if isinstance(value, (int, float)):
        return ["900", [value], {"n": value}, True]
    if isinstance(value, str):
        return [7, ["x"], {"x": "y"}, True]
    if isinstance(value, list):
        return ["x", 7, {"x": "y"}]
    return ["x", 7, ["x"]]  # a table (a bool would be valid where `cache` = true/false)


def _load_error(doc: dict[str, Any]) -> str:
    with pytest.raises(ManifestError) as info:
        parse_manifest(doc, FILE)
    return str(info.value)


def _assert_pipekey_words(message: str, loc: tuple[str | int, ...]) -> None:
    assert "\n" not in message
    assert message.startswith(f"{FILE}: {_where(loc)}: "), message
    for raw in ("Expected `", "$.", "`", "[...]", "Object ", "Invalid enum", "msgspec"):
        assert raw not in message, message


def test_the_base_manifest_is_valid() -> None:
    """The document every mutation starts from loads."""
    manifest = parse_manifest(copy.deepcopy(BASE), FILE)
    assert set(manifest.backends) == {"local", "ssm", "vault"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_value_of_the_wrong_kind_names_its_field(data: st.DataObject) -> None:
    """A wrong kind of value anywhere is one line naming exactly that field."""
    loc, original = data.draw(st.sampled_from(LEAVES), label="field")
    bad = data.draw(st.sampled_from(_wrong(original)), label="value")
    doc = copy.deepcopy(BASE)
    _set(doc, loc, bad)
    _assert_pipekey_words(_load_error(doc), loc)


NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=14)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_an_unknown_field_at_any_depth_is_named(data: st.DataObject) -> None:
    """An unknown field in any table of the schema is refused naming it, with the fields
    that table knows or a did-you-mean."""
    at = data.draw(st.sampled_from(STRUCTS), label="table")
    node: Any = BASE
    for part in at:
        node = node[part]
    name = data.draw(NAMES.filter(lambda n: n not in SCHEMA_FIELDS), label="name")
    doc = copy.deepcopy(BASE)
    _set(doc, (*at, name), "fake")
    message = _load_error(doc)
    _assert_pipekey_words(message, (*at, name))
    assert "unknown field (" in message, message


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_misspelt_field_gets_a_did_you_mean(data: st.DataObject) -> None:
    """A field with one letter dropped is named with a suggestion, at any depth, even when
    that leaves a required field missing (the cause is shown, not the consequence)."""
    loc, value = data.draw(st.sampled_from(FIELDS), label="field")
    i = data.draw(st.integers(0, len(str(loc[-1])) - 1), label="dropped")
    typo = str(loc[-1])[:i] + str(loc[-1])[i + 1:]
    doc = copy.deepcopy(BASE)
    parent: Any = doc
    for part in loc[:-1]:
        parent = parent[part]
    if typo in parent:
        return  # the typo is another field of the same table
    parent[typo] = parent.pop(loc[-1])
    message = _load_error(doc)
    _assert_pipekey_words(message, (*loc[:-1], typo))
    assert "unknown field (did you mean '" in message, message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_bad_tag_names_the_tag(data: st.DataObject) -> None:
    """A ``type`` or ``method`` naming no kind is refused at that field, listing the kinds."""
    loc = data.draw(st.sampled_from(TAG_PATHS), label="tag")
    bad = data.draw(st.one_of(NAMES, st.integers(), st.just(["x"])), label="value")
    doc = copy.deepcopy(BASE)
    _set(doc, loc, bad)
    message = _load_error(doc)
    _assert_pipekey_words(message, loc)
    assert "unknown" in message or "must be one of" in message or "must be" in message


@pytest.mark.parametrize("loc, value, says", [
    pytest.param(("backends", "ssm", "cache", "ttl"), -1, "must be more than 0 (got -1)",
                 id="bound"),
    pytest.param(("backends", "vault", "auth", "method"), "aproll",
                 "unknown method 'aproll' (known: approle, aws, kubernetes, token)",
                 id="auth-method"),
    pytest.param(("backends", "vault", "kv_version"), 3, "must be one of 1 or 2",
                 id="literal-int"),
    pytest.param(("credentials", "warehouse_rw", "member_of"), [],
                 "must have at least 1 item", id="min-length"),
    pytest.param(("credentials", "warehouse_rw", "prefix"), "X",
                 "must match '^[a-z][a-z0-9_]{1,15}$' (got 'X')", id="pattern"),
    pytest.param(("pipelines", "ads", "connections", "db"), 5,
                 "must be text (a quoted string) (got a number)", id="dict-value"),
    pytest.param(("pipelines", "ads"), "x", "must be a table", id="table-is-text"),
    pytest.param(("audit", "sinks", 0, "type"), "syslog",
                 "must be one of 'file', 'stderr', 'dynamodb' or 'otel'", id="sink-type"),
    pytest.param(("backends", "vault", "auth"), {"method": "approle"}, "missing",
                 id="auth-missing"),
])
def test_each_kind_of_problem_in_pipekey_words(loc: tuple[str | int, ...], value: Any,
                                               says: str) -> None:
    """Each kind of msgspec error reads as pipekey's sentence for it."""
    doc = copy.deepcopy(BASE)
    _set(doc, loc, value)
    message = _load_error(doc)
    assert says in message, message
    assert "$." not in message and "`" not in message


def test_a_mistyped_member_of_is_the_cause_not_a_missing_field() -> None:
    """``members`` for ``member_of`` says the unknown field and its suggestion, not that
    ``member_of`` is missing."""
    doc = copy.deepcopy(BASE)
    doc["credentials"]["warehouse_rw"]["members"] = \
        doc["credentials"]["warehouse_rw"].pop("member_of")
    assert _load_error(doc) == (f"{FILE}: credentials.warehouse_rw.members: unknown field "
                                "(did you mean 'member_of'?)")


def test_an_unknown_field_is_shown_before_an_earlier_wrong_value() -> None:
    """With a wrong value and a misspelt field in one table, the misspelling is shown (it is
    the likelier cause), wherever it stands in the table."""
    doc = copy.deepcopy(BASE)
    doc["pipelines"] = {"ads": {"scope": 5, "require": ["x"]}}
    assert _load_error(doc) == (f"{FILE}: pipelines.ads.require: unknown field "
                                "(did you mean 'requires'?)")
