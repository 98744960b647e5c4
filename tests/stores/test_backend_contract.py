"""One contract suite, run over every backend: reads, misses, listing, writes, errors.

Each backend is seeded through its own native format (variables, files, its own ``put``),
so the suite reads what a user's store would really hold. The AWS backends run against moto
over HTTP on 127.0.0.1, each test under its own prefix or table.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Callable

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipekey
from pipekey import InvalidKey, ReadOnlyBackend, ValueTooLarge
from pipekey.backends import Backend, backend_class
from pipekey.backends.aws_secrets_manager import SecretsManagerBackend, SecretsManagerConfig
from pipekey.backends.aws_ssm import SsmBackend, SsmConfig
from pipekey.backends.azure_key_vault import AzureKeyVaultBackend
from pipekey.backends.base import (
    BuildContext,
    Invalidates,
    Versioned,
    VersionProbe,
    Writable,
    require_env,
)
from pipekey.backends.dynamodb import DynamoDbBackend, DynamoDbConfig
from pipekey.backends.env import EnvBackend, key_to_name
from pipekey.backends.files import FilesBackend
from pipekey.backends.gcp_secret_manager import GcpSecretManagerBackend, GcpSecretManagerConfig
from pipekey.backends.local import LocalBackend
from pipekey.backends.vault import AppRoleAuth, VaultBackend, VaultConfig
from pipekey.cache import CachedBackend, wrap
from pipekey.errors import BackendError, UsageError
from pipekey.keys import is_segment, validate_key
from pipekey.testing import MemoryBackend

SEED = {
    "shared/slack_token": "fake-slack-0001",
    "marketing/facebook/acct_42/access_token": "fake-fb-0042",
    "marketing/facebook/acct_43/access_token": "fake-fb-0043",
    "marketing/facebook_extra/app_id": "fake-app-0001",
    "db_password": "fake pass with spaces = and # and 'quotes'",
}

Factory = Callable[[Path, dict], Backend]


def _nest(data: dict[str, str]) -> dict:
    tree: dict = {}
    for key, value in data.items():
        *parents, leaf = key.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def make_env(tmp: Path, data: dict, request=None) -> Backend:
    environ = {name: v for k, v in data.items() if (name := key_to_name(k, "PIPEKEY__"))}
    environ["UNRELATED"] = "x"
    return EnvBackend("env", environ=environ)


def make_toml(tmp: Path, data: dict, request=None) -> Backend:
    def dump(tree: dict, path: tuple[str, ...] = ()) -> list[str]:
        lines = [f"[{'.'.join(map(json.dumps, path))}]"] if path else []
        lines += [f"{json.dumps(k)} = {json.dumps(v)}" for k, v in tree.items()
                  if not isinstance(v, dict)]
        for k, v in tree.items():
            if isinstance(v, dict):
                lines += dump(v, (*path, k))
        return lines

    file = tmp / "secrets.toml"
    file.write_text("\n".join(dump(_nest(data))) + "\n")
    return FilesBackend("toml", file)


def make_json(tmp: Path, data: dict, request=None) -> Backend:
    file = tmp / "secrets.json"
    file.write_text(json.dumps(_nest(data)))
    return FilesBackend("json", file)


def make_yaml(tmp: Path, data: dict, request=None) -> Backend:
    file = tmp / "secrets.yaml"
    file.write_text(yaml.safe_dump(_nest(data)))
    return FilesBackend("yaml", file)


def make_dotenv(tmp: Path, data: dict, request=None) -> Backend:
    file = tmp / ".env"
    file.write_text("".join(f"{name}={json.dumps(v)}\n" for k, v in data.items()
                            if (name := key_to_name(k))))
    return FilesBackend("dotenv", file)


def make_dir(tmp: Path, data: dict, request=None) -> Backend:
    root = tmp / "run-secrets"
    root.mkdir()
    for key, value in data.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_text(value + "\n")
    return FilesBackend("dir", root)


def make_local(tmp: Path, data: dict, request=None) -> Backend:
    backend = LocalBackend("local", tmp / "store.db", master_key=_KEY)
    for key, value in data.items():
        backend.put(key, value)
    return backend


def make_memory(tmp: Path, data: dict, request=None) -> Backend:
    return MemoryBackend("memory", data)


_KEY = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="  # 32 bytes of test key, not a secret
_AWS = dict(region="eu-central-1")


def _seed(backend: Backend, data: dict) -> Backend:
    for key, value in data.items():
        backend.put(key, value)
    return backend


def make_ssm(tmp: Path, data: dict, request=None) -> Backend:
    endpoint = request.getfixturevalue("aws_env")
    config = SsmConfig(type="aws_ssm", prefix=f"/lk-test/{uuid.uuid4().hex[:10]}",
                       endpoint_url=endpoint, **_AWS)
    return _seed(SsmBackend("ssm", config), data)


def make_secrets_manager(tmp: Path, data: dict, request=None) -> Backend:
    endpoint = request.getfixturevalue("aws_env")
    config = SecretsManagerConfig(type="aws_secrets_manager", endpoint_url=endpoint,
                                  prefix=f"lk-test-{uuid.uuid4().hex[:10]}/", **_AWS)
    return _seed(SecretsManagerBackend("secrets_manager", config), data)


def make_dynamodb(tmp: Path, data: dict, request=None) -> Backend:
    endpoint = request.getfixturevalue("aws_env")
    config = DynamoDbConfig(type="dynamodb", table=f"lk-test-{uuid.uuid4().hex[:10]}",
                            endpoint_url=endpoint, **_AWS)
    backend = DynamoDbBackend("dynamodb", config, master_key=_KEY)
    backend.ensure_table()
    return _seed(backend, data)

def make_vault(tmp: Path, data: dict, request=None, **fields) -> Backend:
    request.getfixturevalue("vault_env")
    from ..fakes.vault import ROLE_ID

    config = VaultConfig(type="vault", prefix=f"lk-test/{uuid.uuid4().hex[:10]}",
                         auth=AppRoleAuth(role_id=ROLE_ID), **fields)
    return _seed(VaultBackend.build("vault", config), data)


def make_vault_document(tmp: Path, data: dict, request=None) -> Backend:
    return make_vault(tmp, data, request, layout="document")


def make_vault_kv1(tmp: Path, data: dict, request=None) -> Backend:
    return make_vault(tmp, data, request, mount="kv", kv_version=1)


def make_gcp(tmp: Path, data: dict, request=None) -> Backend:
    server = request.getfixturevalue("fake_gcp")
    config = GcpSecretManagerConfig(type="gcp_secret_manager", project="lk-test",
                                    prefix=f"lk{uuid.uuid4().hex[:10]}_", endpoint=server.url,
                                    credentials="anonymous")
    return _seed(GcpSecretManagerBackend("gcp", config), data)


def make_azure(tmp: Path, data: dict, request=None) -> Backend:
    from ..servers import azure_config

    server = request.getfixturevalue("azure_env")
    config = azure_config(server, prefix=f"lk{uuid.uuid4().hex[:10]}-")
    return _seed(AzureKeyVaultBackend("azure", config), data)


BARE = [
    pytest.param(make_env, id="env"),
    pytest.param(make_toml, id="files-toml"),
    pytest.param(make_json, id="files-json"),
    pytest.param(make_yaml, id="files-yaml"),
    pytest.param(make_dotenv, id="files-dotenv"),
    pytest.param(make_dir, id="files-dir"),
    pytest.param(make_local, id="local"),
    pytest.param(make_memory, id="memory"),
    pytest.param(make_ssm, id="aws_ssm"),
    pytest.param(make_secrets_manager, id="aws_secrets_manager"),
    pytest.param(make_dynamodb, id="dynamodb"),
    pytest.param(make_vault, id="vault"),
    pytest.param(make_vault_document, id="vault-document"),
    pytest.param(make_vault_kv1, id="vault-kv1"),
    pytest.param(make_gcp, id="gcp_secret_manager"),
    pytest.param(make_azure, id="azure_key_vault"),
]
CACHED = "+cache"


def _cached(factory: Factory) -> Factory:
    """The same store, seeded the same way, behind the cache (pipekey.cache.wrap)."""

    def make(tmp: Path, data: dict, request=None) -> Backend:
        return wrap(factory(tmp, data, request))

    return make


# every backend bare and wrapped by the cache: the cache keeps the contract
ALL = BARE + [pytest.param(_cached(p.values[0]), id=p.id + CACHED) for p in BARE]


def _store(param_id: str) -> str:
    """The store a parameter id names, cached or not."""
    return param_id.removesuffix(CACHED)


WRITABLE_IDS = ("local", "memory", "aws_ssm", "aws_secrets_manager", "dynamodb", "vault",
                "vault-document", "vault-kv1", "gcp_secret_manager",
                "azure_key_vault")
WRITABLE = [p for p in ALL if _store(p.id) in WRITABLE_IDS]
READ_ONLY = [p for p in ALL if _store(p.id) not in WRITABLE_IDS]
TOMBSTONES = [p for p in ALL if _store(p.id) in ("local", "memory")]  # deletes stay in history
VERSIONED = [p for p in WRITABLE if _store(p.id) != "vault-kv1"]     # KV v1 keeps one version
OLD_VALUES = [p for p in VERSIONED if _store(p.id) != "dynamodb"]     # past versions readable
PROBES = ("local", "aws_ssm")                                         # versions without values


@pytest.fixture(params=ALL)
def seeded(request, tmp_path: Path) -> Backend:
    return request.param(tmp_path, SEED, request)


def test_get_many_returns_every_present_key(seeded: Backend) -> None:
    """get_many returns a Secret per present key with the exact value."""
    found = seeded.get_many(list(SEED))
    assert {k: s.value for k, s in found.items()} == SEED
    assert all(s.backend == seeded.name and s.key == k for k, s in found.items())


def test_absent_keys_are_missing_not_errors(seeded: Backend) -> None:
    """A key the store does not hold is simply missing from the result."""
    found = seeded.get_many(["shared/slack_token", "shared/nope", "nope/deep/key"])
    assert set(found) == {"shared/slack_token"}
    assert seeded.get("shared/nope") is None


def test_empty_batch_makes_no_call(seeded: Backend) -> None:
    """An empty request returns an empty dict."""
    assert seeded.get_many([]) == {}


def test_duplicate_keys_in_a_batch(seeded: Backend) -> None:
    """Asking for one key twice returns it once."""
    assert list(seeded.get_many(["db_password", "db_password"])) == ["db_password"]


@pytest.mark.parametrize("bad", ["", "a//b", "/a", "a/", "a/../b", "a/./b", "a\nb", "a b",
                                 "x" * 513])
def test_invalid_key_raises_before_the_store(seeded: Backend, bad: str) -> None:
    """A malformed key raises InvalidKey quoting it, for reads."""
    with pytest.raises(InvalidKey) as info:
        seeded.get_many([bad])
    assert repr(bad)[:40].strip("'") in str(info.value)


def test_list_on_segment_boundaries(seeded: Backend) -> None:
    """list(prefix) returns keys at or under prefix, never a sibling sharing its letters."""
    assert seeded.list_keys("marketing/facebook") == [
        "marketing/facebook/acct_42/access_token",
        "marketing/facebook/acct_43/access_token",
    ]
    assert seeded.list_keys("marketing/facebook/") == seeded.list_keys("marketing/facebook")
    assert seeded.list_keys("") == sorted(SEED)
    assert seeded.list_keys("no/such") == []


def test_locate_names_a_place(seeded: Backend) -> None:
    """locate() gives a non-empty, value-free description of where a key lives."""
    where = seeded.locate("shared/slack_token")
    assert where and "fake-slack" not in where


def test_repr_of_secret_hides_value(seeded: Backend) -> None:
    """Neither a Secret's repr nor str shows its value."""
    secret = seeded.get("shared/slack_token")
    assert secret is not None
    assert "fake-slack-0001" not in repr(secret) and "fake-slack-0001" not in str(secret)


@pytest.mark.parametrize("factory", READ_ONLY)
def test_read_only_backends_refuse_writes(factory, tmp_path: Path) -> None:
    """A read-only backend has no put or delete; writing to it by name raises ReadOnlyBackend
    naming it."""
    backend = factory(tmp_path, SEED, None)
    assert not isinstance(backend, Writable)
    assert not hasattr(backend, "put") and not hasattr(backend, "delete")
    lk = pipekey.Pipekey([backend])
    with pytest.raises(ReadOnlyBackend, match=backend.name):
        lk.set("shared/new", "fake-new", backend=backend.name)
    with pytest.raises(ReadOnlyBackend, match=backend.name):
        lk.delete("shared/slack_token", backend=backend.name)
    assert backend.get("shared/slack_token").value == "fake-slack-0001"


@pytest.mark.parametrize("factory", ALL)
def test_capabilities_are_protocols(factory, tmp_path: Path, request) -> None:
    """Each backend is Writable, Versioned and a VersionProbe exactly when it supports them
    (isinstance says so), and a cache in front of it forwards exactly those, plus
    Invalidates."""
    backend = factory(tmp_path, {}, request)
    name = request.node.callspec.id
    expected = {Writable: _store(name) in WRITABLE_IDS,
                Versioned: name in {p.id for p in VERSIONED},
                VersionProbe: _store(name) in PROBES,
                Invalidates: name.endswith(CACHED)}
    assert {cap: isinstance(backend, cap) for cap in expected} == expected
    cached = wrap(backend)
    assert {cap: isinstance(cached, cap) for cap in expected} == {**expected, Invalidates: True}
    assert isinstance(cached, CachedBackend) and cached.kind == backend.kind


@pytest.mark.parametrize("factory", WRITABLE)
class TestWritable:
    def test_put_then_get(self, factory, tmp_path: Path, request) -> None:
        """A written value reads back, with a new version on overwrite."""
        backend = factory(tmp_path, {}, request)
        first = backend.put("shared/new", "fake-v1")
        second = backend.put("shared/new", "fake-v2")
        assert backend.get("shared/new").value == "fake-v2"
        if isinstance(backend, Versioned):  # a store keeping one version (KV v1) has no version ids
            assert first.version != second.version
        assert backend.get("shared/new").version == second.version

    def test_delete(self, factory, tmp_path: Path, request) -> None:
        """delete removes the key (True), and a second delete reports False."""
        backend = factory(tmp_path, SEED, request)
        assert backend.delete("db_password") is True
        assert backend.get("db_password") is None
        assert "db_password" not in backend.list_keys("")
        assert backend.delete("db_password") is False

    def test_set_again_after_delete(self, factory, tmp_path: Path, request) -> None:
        """A deleted key can be written again."""
        backend = factory(tmp_path, {"k": "fake-1"}, request)
        backend.delete("k")
        backend.put("k", "fake-2")
        assert backend.get("k").value == "fake-2"

    def test_put_rejects_invalid_key_and_non_text(self, factory, tmp_path: Path,
                                                  request) -> None:
        """Writes validate the key and the value's type before touching the store."""
        backend = factory(tmp_path, {}, request)
        with pytest.raises(InvalidKey):
            backend.put("a//b", "fake")
        with pytest.raises(TypeError):
            backend.put("a/b", b"bytes")  # type: ignore[arg-type]
        assert backend.list_keys("") == []

    def test_unicode_and_large_values(self, factory, tmp_path: Path, request) -> None:
        """Values keep every character (unicode, newlines) up to the store's size limit."""
        backend = factory(tmp_path, {}, request)
        head = "fake-ünïcødé\n\t\"quoted\" ✓ "
        size = min(1_000_000, backend.max_value_bytes or 1_000_000)
        odd = head + "x" * (size - len(head.encode("utf-8")))
        backend.put("big/value", odd)
        assert backend.get("big/value").value == odd

    def test_value_over_the_limit_is_refused_and_nothing_written(
            self, factory, tmp_path: Path, request) -> None:
        """A value over the store's limit raises ValueTooLarge naming backend and key, and
        the previous value stays."""
        backend = factory(tmp_path, {"k": "fake-old"}, request)
        if backend.max_value_bytes is None:
            pytest.skip(f"{backend.kind} has no size limit")
        with pytest.raises(ValueTooLarge) as info:
            backend.put("k", "y" * (backend.max_value_bytes + 1))
        assert backend.name in str(info.value) and "'k'" in str(info.value)
        assert backend.get("k").value == "fake-old"


@pytest.mark.parametrize("factory", VERSIONED)
def test_history_lists_versions_in_order(factory, tmp_path: Path, request) -> None:
    """history lists every version written, oldest first, and no value."""
    backend = factory(tmp_path, {}, request)
    first = backend.put("k", "fake-1")
    second = backend.put("k", "fake-2")
    history = backend.history("k")
    assert [v.version for v in history][-2:] == [first.version, second.version]
    assert "fake" not in repr(history)
    assert backend.history("never/written") == []

@pytest.mark.parametrize("factory", VERSIONED)
def test_get_version_of_the_current_value(factory, tmp_path: Path, request) -> None:
    """get_version reads the current version; an unknown version is None."""
    backend = factory(tmp_path, {}, request)
    backend.put("k", "fake-1")
    second = backend.put("k", "fake-2")
    assert backend.get_version("k", second.version).value == "fake-2"
    assert backend.get_version("k", "99") is None
    assert backend.get_version("never/written", "1") is None


@pytest.mark.parametrize("factory", OLD_VALUES)
def test_get_version_reads_a_past_version(factory, tmp_path: Path, request) -> None:
    """Stores that keep old values return what an earlier version held."""
    backend = factory(tmp_path, {}, request)
    first = backend.put("k", "fake-1")
    backend.put("k", "fake-2")
    assert backend.get_version("k", first.version).value == "fake-1"


@pytest.mark.parametrize("factory", TOMBSTONES)
def test_deletes_stay_in_history(factory, tmp_path: Path, request) -> None:
    """Stores with tombstones list a delete as a version; the deleted version reads None."""
    backend = factory(tmp_path, {}, request)
    backend.put("k", "fake-1")
    backend.put("k", "fake-2")
    backend.delete("k")
    history = backend.history("k")
    assert [v.version for v in history] == ["1", "2", "3"]
    assert [v.deleted for v in history] == [False, False, True]
    assert backend.get_version("k", "3") is None


def test_errors_name_the_backend(tmp_path: Path) -> None:
    """A broken store raises a BackendError naming the backend, not an absence."""
    broken = tmp_path / "secrets.json"
    broken.write_text('{"a": "fake-unterminated')
    backend = FilesBackend("my-files", broken)
    with pytest.raises(BackendError) as info:
        backend.get_many(["a"])
    assert "my-files" in str(info.value)
    assert "fake-unterminated" not in str(info.value)


# -- one key, one stored item ------------------------------------------------------------------
# Keys built to collide under a careless mapping: case variants, '-' vs '_' vs '.', the env
# separator inside a segment, '_' at segment edges, long keys (past GCP's and Azure's limits).
_segments = st.one_of(
    st.from_regex(r"[a-zA-Z0-9_.-]{1,10}", fullmatch=True),
    st.sampled_from(["acct_42", "acct_43", "ACCT-43", "acct-43", "acct.43", "a__b", "_a", "a_",
                     "__pipekey_chunks", ".hidden", "..data", "x" * 130]),
).filter(lambda s: s not in (".", ".."))
_keys = st.lists(_segments, min_size=1, max_size=4).map("/".join).filter(
    lambda k: len(k) <= 512)


def _variants(key: str) -> set[str]:
    """key and its look-alikes that a folding or concatenating mapping would merge with it."""
    out = {key, key.upper(), key.lower(), key.swapcase(), key.replace("_", "-"),
           key.replace("-", "_"), key.replace(".", "_"), key.replace("/", "__"),
           key.replace("__", "/"), key.replace("/", "_/"), key.replace("/", "/_"),
           key.replace("/", "___")}
    return {k for k in out if _valid(k)}


def _valid(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidKey:
        return False
    return True


_key_sets = st.lists(_keys, min_size=1, max_size=3).map(
    lambda ks: sorted(set().union(*(_variants(k) for k in ks))))
_REMOTE = {"aws_ssm", "aws_secrets_manager", "dynamodb", "vault", "vault-document", "vault-kv1",
           "gcp_secret_manager", "azure_key_vault"}


def _examples(request, local: int, remote: int) -> settings:
    remote_store = _store(request.node.callspec.id) in _REMOTE
    return settings(max_examples=remote if remote_store else local, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def _leaves(keys: list[str]) -> list[str]:
    """Keys no other key lies below: a file, a table or an env var cannot be both."""
    return [k for k in keys if not any(o != k and o.startswith(k + "/") for o in keys)]


@pytest.mark.parametrize("factory", ALL)
def test_key_to_store_name_is_injective(factory, tmp_path: Path, request) -> None:
    """Two distinct keys never name the same stored item; an unmappable key says why."""
    backend = factory(tmp_path, {}, request)

    @_examples(request, local=50, remote=50)
    @given(keys=_key_sets)
    def check(keys: list[str]) -> None:
        names: dict[str, str] = {}
        for key in keys:
            name = backend.store_name(key)
            if name is None:
                assert backend.unmappable(key), key
                continue
            assert backend.unmappable(key) is None, key
            assert name not in names, f"{key!r} and {names.get(name)!r} share {name!r}"
            names[name] = key

    check()


@pytest.mark.parametrize("factory", ALL)
def test_a_key_reads_only_its_own_item(factory, tmp_path: Path, request) -> None:
    """Seeded natively with look-alike keys, every key reads its own value or nothing, and
    listing gives back exactly the keys seeded."""
    probe = factory(tmp_path, {}, request)

    @_examples(request, local=15, remote=4)
    @given(keys=_key_sets)
    def check(keys: list[str]) -> None:
        seeded = [k for k in _leaves(keys) if probe.store_name(k) is not None]
        values = {k: f"fake-{uuid.uuid4().hex[:8]}-{i}" for i, k in enumerate(seeded)}
        backend = factory(Path(tempfile.mkdtemp(dir=tmp_path)), values, request)
        found = backend.get_many(keys)
        assert {k: s.value for k, s in found.items()} == values
        assert backend.list_keys("") == sorted(values)

    check()


@pytest.mark.parametrize("factory", WRITABLE)
def test_writing_one_key_never_changes_another(factory, tmp_path: Path, request) -> None:
    """put(A) then reading A's look-alikes never returns A's value; unmappable A is refused."""
    backend = factory(tmp_path, {}, request)

    @_examples(request, local=15, remote=4)
    @given(key=_keys)
    def check(key: str) -> None:
        value = f"fake-{uuid.uuid4().hex}"
        others = sorted(_variants(key) - {key})
        if backend.store_name(key) is None:
            with pytest.raises(InvalidKey, match=backend.name):
                backend.put(key, value)
        else:
            backend.put(key, value)
            assert backend.get(key).value == value
        leaked = {k for k, s in backend.get_many(others).items() if s.value == value}
        assert not leaked, f"writing {key!r} changed {sorted(leaked)}"

    check()


# -- environments are part of the key mapping ----------------------------------------------------
# Manifest sections whose store names hold {env}: building one calls no store.
ENV_TEMPLATED = [
    pytest.param({"type": "env", "prefix": "LK_{env}__"}, id="env"),
    pytest.param({"type": "env", "prefix": "LK_{env}_"}, id="env-one-underscore"),
    pytest.param({"type": "env", "prefix": "LK_{env}"}, id="env-nothing-after"),
    pytest.param({"type": "aws_ssm", "prefix": "/lk/{env}", **_AWS}, id="aws_ssm"),
    pytest.param({"type": "aws_secrets_manager", "prefix": "lk/{env}", **_AWS},
                 id="aws_secrets_manager"),
    pytest.param({"type": "aws_secrets_manager", "prefix": "lk-{env}-", "separator": "", **_AWS},
                 id="aws_secrets_manager-raw"),
    pytest.param({"type": "vault", "url": "http://127.0.0.1:9", "prefix": "lk/{env}"},
                 id="vault"),
    pytest.param({"type": "vault", "url": "http://127.0.0.1:9", "mount": "kv-{env}",
                  "prefix": "lk-{env}", "layout": "document"}, id="vault-document"),
    pytest.param({"type": "gcp_secret_manager", "project": "lk-test", "prefix": "lk_{env}",
                  "credentials": "anonymous"}, id="gcp_secret_manager"),
    pytest.param({"type": "gcp_secret_manager", "project": "lk-test", "prefix": "lk_{env}_",
                  "separator": "", "credentials": "anonymous"}, id="gcp_secret_manager-raw"),
    pytest.param({"type": "azure_key_vault", "url": "https://127.0.0.1:9", "prefix": "lk-{env}"},
                 id="azure_key_vault"),
]
_JOINERS = ("__", "_", "-", "--", ".", "")


@st.composite
def _env_key_pairs(draw: st.DrawFn) -> list[tuple[str, str]]:
    """(environment, key) pairs cut from one path at every segment boundary, each part joined
    the ways store names join (``prod__finance`` + ``ledger/api_key`` against ``prod`` +
    ``finance/ledger/api_key``), the environment in every case."""
    segments = draw(st.lists(_segments, min_size=2, max_size=4))
    pairs = set()
    for cut in range(1, len(segments)):
        for joiner in _JOINERS:
            env = joiner.join(segments[:cut])
            keys = {k for j in ("/", *_JOINERS) for k in _variants(j.join(segments[cut:]))}
            pairs |= {(e, k) for e in {env, env.lower(), env.upper()} for k in keys}
    return sorted((e, k) for e, k in pairs if is_segment(e))


@pytest.mark.parametrize("section", ENV_TEMPLATED)
def test_environment_and_key_to_store_name_is_injective(section, tmp_path: Path) -> None:
    """Two different (environment, key) pairs never name the same stored item; an
    environment the backend cannot map reversibly is refused, saying why."""
    cls = backend_class(section["type"])
    config = cls.Config(**section)

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(pairs=_env_key_pairs())
    def check(pairs: list[tuple[str, str]]) -> None:
        built: dict[str, Backend] = {}
        names: dict[str, tuple[str, str]] = {}
        for env, key in pairs:
            if cls.env_problem(env, config) is not None:
                with pytest.raises(UsageError, match=f"environment {env!r} cannot be used "
                                                     "with backend 'x': "):
                    require_env(cls, "x", config, env)
                continue
            if env not in built:
                built[env] = cls.from_config("x", config, BuildContext(tmp_path, env))
            name = built[env].store_name(key)
            if name is None:
                continue
            assert name not in names, f"{(env, key)} and {names[name]} share {name!r}"
            names[name] = (env, key)

    check()


@pytest.mark.parametrize(("section", "env"), [
    pytest.param({"type": "env", "prefix": "LK_{env}__"}, "prod__FINANCE", id="env-separator"),
    pytest.param({"type": "env", "prefix": "LK_{env}__"}, "prod__finance", id="env-lower"),
    pytest.param({"type": "env", "prefix": "LK_{env}__"}, "PROD", id="env-case"),
    pytest.param({"type": "env", "prefix": "LK_{env}__"}, "prod_", id="env-edge"),
    pytest.param({"type": "aws_secrets_manager", "prefix": "lk-{env}-", "separator": "",
                  **_AWS}, "prod-eu", id="raw-prefix-separator"),
    pytest.param({"type": "azure_key_vault", "url": "https://127.0.0.1:9", "prefix": "lk-{env}"},
                 "Prod", id="azure-case"),
    pytest.param({"type": "aws_ssm", "prefix": "/lk/{env}", **_AWS}, "..", id="ssm-dotdot"),
])
def test_an_unmappable_environment_is_refused(section, env: str) -> None:
    """The known collisions are refused, with one line naming the environment and backend."""
    cls = backend_class(section["type"])
    with pytest.raises(UsageError) as info:
        require_env(cls, "store", cls.Config(**section), env)
    assert str(info.value).startswith(f"environment {env!r} cannot be used with backend "
                                      "'store': ")
    assert "\n" not in str(info.value)
