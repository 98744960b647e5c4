"""Policy, as a property: whatever the pipeline and the store hold, a run obtains only values
stored under its scope subtree, its declared names at parent levels, shared/, its grants and
its mapped connections, through run.secret, run.get, run.connection, the dlt provider and the
Airflow backend (issue 16).

The store double keeps Secrets Manager's document layout: a secret whose value is a JSON
object is a document whose fields are keys (``K/f`` is answered from ``K`` when ``K/f`` itself
is absent), and reading ``K`` whole returns every value below it.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pipekey
from pipekey.backends.base import Secret
from pipekey.errors import ManifestError, PipekeyError
from pipekey.manifest import parse_manifest
from pipekey.testing import MemoryBackend

SEGMENTS = ["a", "b", "c", "d"]
PARAM = "{acct}"
TOKEN = re.compile(r"fake-tok\d{4}x")


class DocumentMemory(MemoryBackend):
    """MemoryBackend with Secrets Manager's document layout (``documents = true``)."""

    kind = "memory_documents"

    def _get_many(self, keys: Sequence[str]) -> dict[str, Secret]:
        own = super()._get_many([*keys, *(k.rsplit("/", 1)[0] for k in keys if "/" in k)])
        out = {}
        for key in keys:
            if key in own:
                out[key] = _mark(own[key], _object(own[key].value))
            elif "/" in key and key.rsplit("/", 1)[0] in own:
                parent, field = key.rsplit("/", 1)
                doc = _object(own[parent].value)
                if doc is not None and doc.get(field) is not None:
                    value = doc[field]
                    text = value if isinstance(value, str) else json.dumps(value)
                    out[key] = _mark(self._secret(key, text), value if isinstance(value, dict)
                                     else None)
        return out


def _object(text: str) -> dict | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _mark(secret: Secret, document: dict | None) -> Secret:
    if "document" not in Secret.__dataclass_fields__:  # a pipekey without the flag
        return secret
    return replace(secret, document=document is not None)


# -- generated worlds ---------------------------------------------------------------------
paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map("/".join)
stored_keys = st.one_of(paths, paths.map(lambda p: f"shared/{p}"))
leaf_or_doc = st.one_of(
    st.just("leaf"),
    st.dictionaries(st.sampled_from(SEGMENTS), st.one_of(
        st.just("leaf"), st.dictionaries(st.sampled_from(SEGMENTS), st.just("leaf"),
                                         min_size=1, max_size=2)), min_size=1, max_size=3))


@st.composite
def worlds(draw) -> dict[str, Any]:
    scope = draw(st.lists(st.sampled_from([*SEGMENTS, PARAM]), min_size=1, max_size=3))
    # mostly names that are no segment of the scope (one that is makes the run refused)
    pool = SEGMENTS if draw(st.integers(0, 4)) == 0 else [s for s in SEGMENTS if s not in scope]
    names = draw(st.lists(st.sampled_from(pool), max_size=3, unique=True)) if pool else []
    pipeline = {
        "scope": "/".join(scope),
        "optional": names[:2],
        "shared": draw(st.lists(st.sampled_from(SEGMENTS), max_size=2, unique=True)),
        "grants": draw(st.lists(paths, max_size=2)),
        "connections": draw(st.dictionaries(st.sampled_from(["wh", "lake"]), paths, max_size=2)),
        "dlt": {"sources.src.mapped_key": "key:" + draw(stored_keys),
                **({"sources.src.mapped_name": f"secret:{names[2]}"} if len(names) > 2 else {})},
    }
    acct = draw(st.sampled_from(SEGMENTS))
    shapes = draw(st.dictionaries(stored_keys, leaf_or_doc, min_size=1, max_size=12))
    filled = pipeline["scope"].replace(PARAM, acct).split("/")
    for name in names:  # values, and documents, where the walk looks for declared names
        depth = draw(st.integers(0, len(filled)))
        shapes.setdefault("/".join([*filled[:depth], name]), draw(leaf_or_doc))
    for key in [*(f"shared/{n}" for n in pipeline["shared"]), *pipeline["connections"].values()]:
        shapes.setdefault(key, draw(leaf_or_doc))  # what the run requires, so it opens
    return {"pipeline": pipeline, "acct": acct, "shapes": shapes}


def _materialise(shapes: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """Store values: ``{key: text}``, and ``{token: the key it is stored under}``."""
    counter = itertools.count()
    owner: dict[str, str] = {}

    def build(key: str, shape: Any) -> Any:
        if shape == "leaf":
            token = f"fake-tok{next(counter):04d}x"
            owner[token] = key
            return token
        return {field: build(f"{key}/{field}", sub) for field, sub in shape.items()}

    data = {}
    for key, shape in shapes.items():
        value = build(key, shape)
        data[key] = value if isinstance(value, str) else json.dumps(value)
    return data, owner


# -- the reference model: DESIGN.md's sentence, written out --------------------------------
def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + "/")


def reference_allows(pipeline: dict, acct: str, key: str) -> bool:
    scope = pipeline["scope"].replace(PARAM, acct)
    declared = set(pipeline["optional"]) | {t[len("secret:"):] for t in pipeline["dlt"].values()
                                            if t.startswith("secret:")}
    parents = ["/".join(scope.split("/")[:i]) for i in range(1, scope.count("/") + 1)]
    parent, _, leaf = key.rpartition("/")
    return (_under(key, scope) or _under(key, "shared")
            or any(_under(key, g) for g in pipeline["grants"])
            or any(_under(key, c) for c in pipeline["connections"].values())
            or (parent in parents and leaf in declared))


# -- every way a run hands out a value ------------------------------------------------------
def _airflow_backend(lk: pipekey.Pipekey):
    if _AIRFLOW is None:
        return None
    backend_cls, base_cls, _ = _AIRFLOW
    backend = backend_cls.__new__(backend_cls)
    base_cls.__init__(backend)
    backend.lk, backend.outside_pipelines = lk, "shared_only"
    backend.prefixes = {"connection": None, "variable": None, "config": None}
    return backend


def _obtain(run, lk, probe_keys: list[str]) -> Iterator[str]:
    """Every text the run hands out, trying every key and name through every API."""
    provider = _dlt_provider()
    airflow = _airflow_backend(lk)
    denied = (PipekeyError,) + ((_AIRFLOW[2],) if _AIRFLOW else ())
    attempts = [(run.secret, name) for name in [*SEGMENTS, "shared"]]
    attempts += [(run.get, key) for key in probe_keys]
    attempts += [(lambda c: run.connection(c).to_json(), c) for c in run.connection_keys]
    if provider is not None:
        from dlt.common.typing import TSecretStrValue  # a secret field: config ones refuse

        attempts += [(lambda f: provider.get_value(f, TSecretStrValue, None, "sources",
                                                   "src")[0], f)
                     for f in [*SEGMENTS, "mapped_key", "mapped_name"]]
    if airflow is not None:
        for key in probe_keys:
            parent, _, leaf = key.rpartition("/")
            if parent:
                attempts.append((lambda k: _airflow_reads(airflow, *k), (parent, leaf)))
    for read, arg in attempts:
        try:
            value = read(arg)
        except denied:
            continue
        if value is not None:
            yield value if isinstance(value, str) else json.dumps(value)


def _airflow_reads(backend, prefix: str, name: str) -> str:
    backend.prefixes.update(connection=prefix, variable=prefix)
    return json.dumps([backend.get_variable(name), backend.get_conn_value(name)])


_DLT: list = []


def _dlt_provider():
    if not _DLT:
        try:
            from pipekey.integrations.dlt import PipekeyProvider
            _DLT.append(PipekeyProvider())
        except ImportError:
            _DLT.append(None)
    return _DLT[0]


def _load_airflow():
    try:
        from airflow.sdk.exceptions import AirflowSecretsBackendAccessDenied
        from airflow.secrets import BaseSecretsBackend

        from pipekey.integrations.airflow import PipekeySecretsBackend
    except ImportError:
        return None
    return PipekeySecretsBackend, BaseSecretsBackend, AirflowSecretsBackendAccessDenied


_AIRFLOW = None


@pytest.fixture(scope="module", autouse=True)
def _airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Airflow, when installed, is imported with its home in a temporary folder."""
    global _AIRFLOW
    home = os.environ.get("AIRFLOW_HOME")
    os.environ["AIRFLOW_HOME"] = str(tmp_path_factory.mktemp("airflow_home"))
    try:
        _AIRFLOW = _load_airflow()
        yield
    finally:
        if home is None:
            os.environ.pop("AIRFLOW_HOME", None)
        else:
            os.environ["AIRFLOW_HOME"] = home


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=worlds())
def test_a_run_obtains_only_what_its_policy_allows(world: dict) -> None:
    """Through secret, get, connection, the dlt provider and the Airflow backend, every value
    a run obtains is stored under a key the reference model allows."""
    data, owner = _materialise(world["shapes"])
    pipeline, acct = world["pipeline"], world["acct"]
    manifest = parse_manifest({"pipelines": {"p": pipeline}}, Path("pipekey.toml"), None)
    lk = pipekey.Pipekey([DocumentMemory("mem", data)], manifest=manifest, env=manifest.env)
    probe_keys = sorted({k for key in data for k in _prefixes(key)}
                        | {f"{k}/{s}" for k in data for s in SEGMENTS})
    try:
        run = lk.pipeline("p", acct=acct) if PARAM in pipeline["scope"] else lk.pipeline("p")
        run.open()
    except PipekeyError:
        return  # refused at the door (a scope segment that is a declared name, a document)
    with run.attach():
        try:
            obtained = list(_obtain(run, lk, probe_keys))
        finally:
            run.close()
    for text in obtained:
        for token in TOKEN.findall(text):
            key = owner[token]
            assert reference_allows(pipeline, acct, key), (
                f"run of scope {pipeline['scope']!r} (acct={acct}) obtained the value of {key!r}")


def _prefixes(key: str) -> list[str]:
    parts = key.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def test_the_reference_model_denies_a_sibling_document() -> None:
    """The property's oracle itself: acct_43's document is not acct_42's to read."""
    pipeline = {"scope": "m/f/{acct}", "optional": ["token"], "grants": [], "connections": {},
                "dlt": {}}
    assert reference_allows(pipeline, "a42", "m/f/token")
    assert not reference_allows(pipeline, "a42", "m/f/a43")
    assert not reference_allows(pipeline, "a42", "m/f/a43/token")



# -- broker mode: a team's union policy (issue 17) ------------------------------------------
def _team_pipeline(pipeline: dict, tag: str, teams: list[str]) -> dict:
    """A generated pipeline serving ``teams``, its connection names made its own (a team's
    pipelines may not map one conn_id twice)."""
    return {**pipeline, "teams": teams,
            "connections": {f"{tag}_{c}": t for c, t in pipeline["connections"].items()}}


def _run_exists(pipeline: dict, acct: str) -> bool:
    """pipekey.scope refuses a run whose scope has a declared name below its first segment."""
    declared = set(pipeline["optional"]) | {t[len("secret:"):] for t in pipeline["dlt"].values()
                                            if t.startswith("secret:")}
    return not declared.intersection(pipeline["scope"].replace(PARAM, acct).split("/")[1:])


def reference_team_allows(pipelines: list[dict], key: str) -> bool:
    """The union of the team's pipelines' run policies, over every parameter value a run of
    this world can have, and ``shared/`` (served to every team the manifest knows, even one
    whose pipelines can open no run)."""
    return _under(key, "shared") or any(reference_allows(p, acct, key) for p in pipelines
                                        for acct in SEGMENTS if _run_exists(p, acct))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=worlds(), second=worlds(), other=worlds())
def test_a_team_obtains_only_its_union_policy(first: dict, second: dict, other: dict) -> None:
    """Through the broker's key reads, connection lookups and run requests (its own pipelines'
    and another team's), every value team t obtains is under a key that some run of one of
    t's pipelines may read, with some parameter value."""
    from pipekey.broker import decode_payload, request_key
    from pipekey.teams import TeamBroker

    mine = [_team_pipeline(first["pipeline"], "p1", ["team_t"]),
            _team_pipeline(second["pipeline"], "p2", ["team_t"])]
    # team u's keys live under u/ (a prefix it owns), where team t has no template of its own
    theirs = _team_pipeline(_moved_under_u(other["pipeline"]), "p3", ["team_u"])
    data, owner = _materialise({**{_u(k): v for k, v in other["shapes"].items()},
                                **second["shapes"], **first["shapes"]})
    try:
        manifest = parse_manifest({"pipelines": {"p1": mine[0], "p2": mine[1], "p3": theirs}},
                                  Path("pipekey.toml"), None)
    except ManifestError as exc:  # a template of t's with no literal prefix owns u/ too
        assert "'team_t'" in str(exc) and "'team_u'" in str(exc), str(exc)
        assert any(p["scope"].startswith(PARAM) or any(
            c.startswith(PARAM) for c in p["connections"].values()) for p in mine), str(exc)
        event("refused at load: overlapping prefixes")
        return
    lk = pipekey.Pipekey([DocumentMemory("mem", data)], manifest=manifest, env=manifest.env)
    broker = TeamBroker(lk)
    probe_keys = sorted({k for key in data for k in _prefixes(key)}
                        | {f"{k}/{s}" for k in data for s in SEGMENTS})
    attempts = [lambda k=k: broker.read(k, "team_t", "key") for k in probe_keys]
    for conn in {c for p in (*mine, theirs) for c in p["connections"]}:
        attempts.append(lambda c=conn: broker.read(
            broker.connection_key(c, "team_t", f"airflow/{c}") or "", "team_t", "connection"))
    for name, pipeline in (("p1", mine[0]), ("p2", mine[1]), ("p3", theirs)):
        for acct in [*SEGMENTS, "u"] if PARAM in pipeline["scope"] else [None]:
            params = {"acct": acct} if acct else {}
            attempts.append(lambda n=name, p=params: broker.run(request_key(n, None, p), "team_t"))
    obtained = []
    for attempt in attempts:
        try:
            text = attempt()
        except PipekeyError:
            continue
        if text is not None:
            obtained.append(text)
            if text.startswith('{"connections"'):
                payload = decode_payload(text)
                assert payload.pipeline != "p3", "team t opened team u's pipeline"
    for text in obtained:
        for token in TOKEN.findall(text):
            key = owner[token]
            assert reference_team_allows(mine, key), (
                f"team t (scopes {[p['scope'] for p in mine]}) obtained the value of {key!r}")
            assert not key.startswith("u/") or any(
                _under(key, g) for p in mine for g in p["grants"]), (
                f"team t obtained {key!r}, under the prefix team u owns")


def _u(key: str) -> str:
    return key if _under(key, "shared") else f"u/{key}"


def _moved_under_u(pipeline: dict) -> dict:
    """A generated pipeline with every key it names moved under ``u/``."""
    return {**pipeline, "scope": _u(pipeline["scope"]),
            "connections": {c: _u(t) for c, t in pipeline["connections"].items()},
            "grants": [_u(g) for g in pipeline["grants"]],
            "dlt": {f: (f"key:{_u(t[4:])}" if t.startswith("key:") else t)
                    for f, t in pipeline["dlt"].items()}}


def test_two_teams_owning_overlapping_prefixes_are_refused_at_load() -> None:
    """Ownership is a prefix check over every served environment: marketing's data/{dataset}
    overlaps finance's data/ledger_{env} (issue 25, hole 1), and marketing's dev/{x} overlaps
    finance's {env}/ledger only in environment dev, which the server (prod) does not run in;
    both are refused at load, naming both teams."""
    hole = {"environments": ["prod", "dev"], "env": "prod", "pipelines": {
        "ledger": {"scope": "data/ledger_{env}", "requires": ["api_key"], "teams": ["finance"]},
        "lakes": {"scope": "data/{dataset}", "requires": ["api_key"], "teams": ["marketing"]}}}
    with pytest.raises(ManifestError, match="teams '.*' and '.*' own overlapping keys"):
        parse_manifest(hole, Path("pipekey.toml"), None)
    by_env = {"environments": ["prod", "dev"], "env": "prod", "pipelines": {
        "ledger": {"scope": "{env}/ledger", "requires": ["api_key"], "teams": ["finance"]},
        "lakes": {"scope": "dev/{x}", "requires": ["api_key"], "teams": ["marketing"]}}}
    with pytest.raises(ManifestError, match="'dev/'"):
        parse_manifest(by_env, Path("pipekey.toml"), None)
    # the same templates without dev served: nothing overlaps
    prod_only = {**by_env, "environments": ["prod"]}
    parse_manifest(prod_only, Path("pipekey.toml"), None)
