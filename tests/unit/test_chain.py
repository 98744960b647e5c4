"""The chain: order, batching, and failures that are never turned into absence."""

from __future__ import annotations

import logging

import pytest

import pipekey
from pipekey import AccessDenied, BackendUnavailable, SecretNotFound
from pipekey.testing import Call, FailingBackend, MemoryBackend, ReadOnlyMemoryBackend


def test_first_hit_wins_in_chain_order() -> None:
    """The first backend holding a key answers; later ones are not asked for it."""
    a = MemoryBackend("a", {"k": "fake-from-a"})
    b = MemoryBackend("b", {"k": "fake-from-b", "only/b": "fake-b"})
    lk = pipekey.Pipekey([a, b])
    assert lk.get("k") == "fake-from-a"
    assert lk.get("only/b") == "fake-b"
    assert b.calls == [Call("get_many", ("only/b",))]


def test_one_batched_call_per_backend() -> None:
    """get_many asks each backend once, with only the keys still missing."""
    a = MemoryBackend("a", {"x": "fake-1"})
    b = MemoryBackend("b", {"y": "fake-2", "z": "fake-3"})
    lk = pipekey.Pipekey([a, b])
    assert lk.get_many(["x", "y", "z"]) == {"x": "fake-1", "y": "fake-2", "z": "fake-3"}
    assert a.calls == [Call("get_many", ("x", "y", "z"))]
    assert b.calls == [Call("get_many", ("y", "z"))]


def test_not_found_lists_every_place_in_order() -> None:
    """SecretNotFound names each (backend, path) tried, in chain order."""
    lk = pipekey.Pipekey([MemoryBackend("first"), MemoryBackend("second")])
    with pytest.raises(SecretNotFound) as info:
        lk.get("shared/missing")
    assert [(a.backend, a.outcome) for a in info.value.attempts] == [
        ("first", "absent"), ("second", "absent")]
    text = str(info.value)
    assert text.index("first") < text.index("second")
    assert "'shared/missing'" in text


def test_failure_with_no_later_hit_is_an_error_not_a_miss(caplog) -> None:
    """A failed backend and no hit elsewhere raises BackendUnavailable, not SecretNotFound."""
    lk = pipekey.Pipekey([FailingBackend("down"), MemoryBackend("up")])
    with pytest.raises(BackendUnavailable) as info:
        lk.get("k")
    assert not isinstance(info.value, SecretNotFound)
    assert "down" in str(info.value) and "up" in str(info.value)


def test_failure_keeps_its_type_and_names_the_walk(tmp_path) -> None:
    """A wrong master key stays a WrongMasterKey after the chain, with every place tried."""
    from pipekey.backends.local import LocalBackend, generate_master_key

    LocalBackend("local", tmp_path / "s.db", master_key=generate_master_key()).put("k", "fake")
    wrong = LocalBackend("local", tmp_path / "s.db", master_key=generate_master_key())
    lk = pipekey.Pipekey([MemoryBackend("mem"), wrong])
    with pytest.raises(pipekey.WrongMasterKey) as info:
        lk.get("k")
    assert "mem memory:k -> absent" in str(info.value) and "does not open" in str(info.value)


def test_failure_falls_through_to_a_later_hit_and_is_reported(caplog) -> None:
    """A failed backend is logged by name and recorded; a later backend can still answer."""
    lk = pipekey.Pipekey([FailingBackend("down"), MemoryBackend("up", {"k": "fake-up"})])
    with caplog.at_level(logging.WARNING, logger="pipekey"):
        assert lk.get("k") == "fake-up"
    assert "'down' failed" in caplog.text
    outcomes = [(a.backend, a.outcome) for a in lk.explain("k").attempts]
    assert outcomes == [("down", "error"), ("up", "found")]


def test_raise_mode_stops_at_the_first_failure() -> None:
    """With on_backend_error='raise' a failure is raised even if a later backend has the key."""
    up = MemoryBackend("up", {"k": "fake"})
    lk = pipekey.Pipekey([FailingBackend("down"), up], on_backend_error="raise")
    with pytest.raises(BackendUnavailable, match="down"):
        lk.get("k")
    assert up.calls == []


def test_access_denied_is_authoritative() -> None:
    """AccessDenied from a backend is raised at once; the chain does not fall through."""
    up = MemoryBackend("up", {"k": "fake"})
    denied = FailingBackend("vault", error=AccessDenied("vault refused 'k'"))
    lk = pipekey.Pipekey([denied, up])
    with pytest.raises(AccessDenied):
        lk.get("k")
    assert up.calls == []


def test_set_goes_to_first_writable_or_named_backend() -> None:
    """set writes to the first writable backend unless one is named; read-only is refused."""
    ro = ReadOnlyMemoryBackend("ro")
    w1, w2 = MemoryBackend("w1"), MemoryBackend("w2")
    lk = pipekey.Pipekey([ro, w1, w2])
    assert lk.set("k", "fake-1").backend == "w1"
    assert lk.set("k", "fake-2", backend="w2").backend == "w2"
    with pytest.raises(pipekey.ReadOnlyBackend, match="ro"):
        lk.set("k", "fake-3", backend="ro")
    with pytest.raises(pipekey.UsageError, match="no backend named 'nope'"):
        lk.set("k", "fake-4", backend="nope")
    assert (w1.get("k").value, w2.get("k").value) == ("fake-1", "fake-2")


def test_delete_and_list_union() -> None:
    """list shows each key with every backend holding it; delete hits the first holder."""
    a = MemoryBackend("a", {"s/x": "fake"})
    b = MemoryBackend("b", {"s/x": "fake", "s/y": "fake"})
    lk = pipekey.Pipekey([a, b])
    assert lk.list("s") == {"s/x": ["a", "b"], "s/y": ["b"]}
    assert lk.delete("s/y").name == "b"
    assert lk.delete("s/y") is None
    assert lk.list("s") == {"s/x": ["a", "b"]}


def test_explain_gives_provenance_without_the_value() -> None:
    """explain returns backend, path and version, and its dict carries no value."""
    mem = MemoryBackend("mem")
    mem.put("k", "fake-1")
    mem.put("k", "fake-secret-2")
    result = pipekey.Pipekey([MemoryBackend("empty"), mem]).explain("k")
    data = result.to_dict()
    assert (data["backend"], data["version"], data["found"]) == ("mem", "2", True)
    assert "fake-secret-2" not in repr(data) and "fake-secret-2" not in repr(result)


def test_explain_says_backends_failed_not_not_found() -> None:
    """With no hit and failed backends, explain reports "failed" and names them; "not found"
    is only said when every backend answered."""
    down = FailingBackend("ssm", {"k": "fake-secret-acct42"})
    lk = pipekey.Pipekey([down, FailingBackend("vault")])
    result = lk.explain("k")
    assert result.status == "failed"
    assert result.summary() == ("k could not be resolved: every backend failed: "
                                "ssm (BackendUnavailable), vault (BackendUnavailable)")
    data = result.to_dict()
    assert (data["found"], data["status"], data["failed_backends"]) == \
        (False, "failed", ["ssm", "vault"])
    partly = pipekey.Pipekey([MemoryBackend("env"), down]).explain("k")
    assert partly.summary() == ("k could not be resolved: backend ssm (BackendUnavailable) "
                                "failed, and no other backend holds it")
    absent = pipekey.Pipekey([MemoryBackend("env")]).explain("k")
    assert (absent.status, absent.summary()) == ("absent", "k is not found in any backend")
    assert "fake-secret" not in repr(data) + result.summary()


def test_explain_reports_shadowed_values() -> None:
    """explain asks every backend and marks a later hit as shadowed by the first."""
    lk = pipekey.Pipekey([MemoryBackend("env", {"k": "fake-env"}),
                            FailingBackend("down"), MemoryBackend("local", {"k": "fake-local"})])
    result = lk.explain("k")
    assert result.secret.backend == "env"
    assert [(a.backend, a.outcome) for a in result.attempts] == [
        ("env", "found"), ("down", "error"), ("local", "shadowed")]
    assert lk.get("k") == "fake-env"


def test_unique_backend_names() -> None:
    """Two backends with one name in a chain are refused."""
    with pytest.raises(ValueError, match="unique"):
        pipekey.Pipekey([MemoryBackend("m"), MemoryBackend("m")])


# -- one resolver: first hit wins in every path, whatever the later backends do -----------
_LOOKUPS = [pytest.param("sequential", id="sequential"), pytest.param("parallel", id="parallel")]
_LATER = [
    pytest.param(lambda: FailingBackend("later", error=AccessDenied("backend 'later': denied")),
                 "fall_through", id="later-denies"),
    pytest.param(lambda: FailingBackend("later"), "raise", id="later-fails-raise-mode"),
    pytest.param(lambda: FailingBackend("later"), "fall_through", id="later-fails"),
    pytest.param(lambda: MemoryBackend("later", {"team/a1/token": "fake-later-tok",
                                                 "shared/slack": "fake-later-slack"}),
                 "fall_through", id="later-holds-another-value"),
]
_HELD = {"team/a1/token": "fake-first-tok", "shared/slack": "fake-first-slack"}


def _resolver_lk(later, on_backend_error: str, lookup: str) -> pipekey.Pipekey:
    from pathlib import Path

    from pipekey.manifest import parse_manifest

    manifest = parse_manifest({"lookup": lookup, "on_backend_error": on_backend_error,
                               "pipelines": {"ads": {"scope": "team/{account}",
                                                     "requires": ["token"]}}},
                              Path("pipekey.toml"))
    return pipekey.Pipekey([MemoryBackend("first", _HELD), later], manifest=manifest,
                             on_backend_error=on_backend_error)


@pytest.mark.parametrize("lookup", _LOOKUPS)
@pytest.mark.parametrize("make_later, on_backend_error", _LATER)
def test_a_later_backend_never_sinks_an_earlier_hit(make_later, on_backend_error,
                                                    lookup) -> None:
    """lk.get, get_many, explain, run open, run.secret, run.get and run.explain all return
    the first backend's hit, whatever a later backend answers, fails or denies."""
    lk = _resolver_lk(make_later(), on_backend_error, lookup)
    assert lk.get("shared/slack") == "fake-first-slack"
    assert lk.get_many(["team/a1/token"]) == {"team/a1/token": "fake-first-tok"}
    assert lk.explain("shared/slack").secret.backend == "first"
    with lk.pipeline("ads", account="a1") as run:
        assert run.secret("token") == "fake-first-tok"
        assert run.get("shared/slack") == "fake-first-slack"
        assert run.explain("token").secret.backend == "first"
        assert run.explain("token").attempts[0].outcome == "found"


@pytest.mark.parametrize("lookup", _LOOKUPS)
def test_explain_names_the_same_winner_and_records_a_later_denial(lookup) -> None:
    """explain asks every backend: the winner is the one lk.get returns; a later hit is
    shadowed and a later denial is recorded as denied, not raised."""
    denied = FailingBackend("vault", error=AccessDenied("backend 'vault': denied"))
    lk = pipekey.Pipekey([MemoryBackend("env"), MemoryBackend("ssm", {"k": "fake-ssm"}),
                            denied, MemoryBackend("local", {"k": "fake-local"})], lookup=lookup)
    result = lk.explain("k")
    assert result.secret.backend == lk.get_secret("k").backend == "ssm"
    assert [(a.backend, a.outcome) for a in result.attempts] == [
        ("env", "absent"), ("ssm", "found"), ("vault", "denied"), ("local", "shadowed")]
    assert "fake" not in repr(result.to_dict())


@pytest.mark.parametrize("lookup", _LOOKUPS)
def test_a_denial_before_any_hit_is_still_authoritative(lookup) -> None:
    """AccessDenied from a backend before the first hit is raised in every path."""
    denied = FailingBackend("vault", error=AccessDenied("backend 'vault': denied"))
    lk = pipekey.Pipekey([MemoryBackend("env"), denied, MemoryBackend("local", {"k": "fake"})],
                           lookup=lookup)
    with pytest.raises(AccessDenied, match="vault"):
        lk.get("k")
    with pytest.raises(AccessDenied, match="vault"):
        lk.explain("k")


def test_sequential_and_parallel_resolve_alike() -> None:
    """Both lookups give the same resolution, attempts included; only the calls differ."""
    def resolve(lookup: str) -> list[dict[str, object]]:
        lk = pipekey.Pipekey([MemoryBackend("a", {"x": "fake-1"}), FailingBackend("down"),
                                MemoryBackend("b", {"x": "fake-2", "y": "fake-3"}),
                                MemoryBackend("c")], lookup=lookup)
        resolved = lk.chain.resolve(["x", "y", "z"])
        return [{**resolved[k].to_dict(), "created_at": None} for k in ("x", "y", "z")]

    assert resolve("sequential") == resolve("parallel")


@pytest.mark.parametrize("lookup, calls", [
    pytest.param("sequential", {"a": [("x", "y")], "b": [("y",)], "c": []}, id="sequential"),
    pytest.param("parallel", {"a": [("x", "y")], "b": [("x", "y")], "c": [("x", "y")]},
                 id="parallel"),
])
def test_store_calls_per_lookup(lookup, calls) -> None:
    """sequential asks a backend only for keys no earlier one holds; parallel asks every
    backend for every key (one round trip, more calls)."""
    a, b, c = MemoryBackend("a", {"x": "fake-1"}), MemoryBackend("b", {"y": "fake-2"}), \
        MemoryBackend("c")
    lk = pipekey.Pipekey([a, b, c], lookup=lookup)
    assert lk.get_many(["x", "y"]) == {"x": "fake-1", "y": "fake-2"}
    assert {m.name: [call.args for call in m.calls] for m in (a, b, c)} == calls
    for m in (a, b, c):
        m.calls.clear()
    assert lk.get("x") == "fake-1"
    assert sum(len(m.calls) for m in (a, b, c)) == (1 if lookup == "sequential" else 3)


@pytest.mark.parametrize("lookup, total", [pytest.param("sequential", 1, id="sequential"),
                                           pytest.param("parallel", 2, id="parallel")])
def test_run_prefetch_calls_per_lookup(lookup, total) -> None:
    """A run whose secret sits in the first backend costs one call sequentially, one per
    backend in parallel."""
    later = MemoryBackend("later")
    lk = _resolver_lk(later, "fall_through", lookup)
    with lk.pipeline("ads", account="a1") as run:
        assert run.secret("token") == "fake-first-tok"
    assert len(later.calls) + len(lk.backend("first").calls) == total


def test_lookup_is_validated_with_the_manifest() -> None:
    """lookup is "sequential" or "parallel"; anything else is a ManifestError naming it."""
    from pathlib import Path

    from pipekey.manifest import parse_manifest

    assert parse_manifest({}, Path("pipekey.toml")).lookup == "sequential"
    with pytest.raises(pipekey.ManifestError, match="lookup"):
        parse_manifest({"lookup": "eager"}, Path("pipekey.toml"))
    with pytest.raises(ValueError, match="lookup"):
        pipekey.Pipekey([MemoryBackend("m")], lookup="eager")
