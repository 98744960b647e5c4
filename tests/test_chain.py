"""The chain: order, batching, and failures that are never turned into absence."""

from __future__ import annotations

import logging

import pytest

import latchkey
from latchkey import AccessDenied, BackendUnavailable, SecretNotFound
from latchkey.testing import Call, FailingBackend, MemoryBackend


def test_first_hit_wins_in_chain_order() -> None:
    """The first backend holding a key answers; later ones are not asked for it."""
    a = MemoryBackend("a", {"k": "fake-from-a"})
    b = MemoryBackend("b", {"k": "fake-from-b", "only/b": "fake-b"})
    lk = latchkey.Latchkey([a, b])
    assert lk.get("k") == "fake-from-a"
    assert lk.get("only/b") == "fake-b"
    assert b.calls == [Call("get_many", ("only/b",))]


def test_one_batched_call_per_backend() -> None:
    """get_many asks each backend once, with only the keys still missing."""
    a = MemoryBackend("a", {"x": "fake-1"})
    b = MemoryBackend("b", {"y": "fake-2", "z": "fake-3"})
    lk = latchkey.Latchkey([a, b])
    assert lk.get_many(["x", "y", "z"]) == {"x": "fake-1", "y": "fake-2", "z": "fake-3"}
    assert a.calls == [Call("get_many", ("x", "y", "z"))]
    assert b.calls == [Call("get_many", ("y", "z"))]


def test_not_found_lists_every_place_in_order() -> None:
    """SecretNotFound names each (backend, path) tried, in chain order."""
    lk = latchkey.Latchkey([MemoryBackend("first"), MemoryBackend("second")])
    with pytest.raises(SecretNotFound) as info:
        lk.get("shared/missing")
    assert [(a.backend, a.outcome) for a in info.value.attempts] == [
        ("first", "absent"), ("second", "absent")]
    text = str(info.value)
    assert text.index("first") < text.index("second")
    assert "'shared/missing'" in text


def test_failure_with_no_later_hit_is_an_error_not_a_miss(caplog) -> None:
    """A failed backend and no hit elsewhere raises BackendUnavailable, not SecretNotFound."""
    lk = latchkey.Latchkey([FailingBackend("down"), MemoryBackend("up")])
    with pytest.raises(BackendUnavailable) as info:
        lk.get("k")
    assert not isinstance(info.value, SecretNotFound)
    assert "down" in str(info.value) and "up" in str(info.value)


def test_failure_keeps_its_type_and_names_the_walk(tmp_path) -> None:
    """A wrong master key stays a WrongMasterKey after the chain, with every place tried."""
    from latchkey.backends.local import LocalBackend, generate_master_key

    LocalBackend("local", tmp_path / "s.db", master_key=generate_master_key()).put("k", "fake")
    wrong = LocalBackend("local", tmp_path / "s.db", master_key=generate_master_key())
    lk = latchkey.Latchkey([MemoryBackend("mem"), wrong])
    with pytest.raises(latchkey.WrongMasterKey) as info:
        lk.get("k")
    assert "mem memory:k -> absent" in str(info.value) and "does not open" in str(info.value)


def test_failure_falls_through_to_a_later_hit_and_is_reported(caplog) -> None:
    """A failed backend is logged by name and recorded; a later backend can still answer."""
    lk = latchkey.Latchkey([FailingBackend("down"), MemoryBackend("up", {"k": "fake-up"})])
    with caplog.at_level(logging.WARNING, logger="latchkey"):
        assert lk.get("k") == "fake-up"
    assert "'down' failed" in caplog.text
    outcomes = [(a.backend, a.outcome) for a in lk.explain("k").attempts]
    assert outcomes == [("down", "error"), ("up", "found")]


def test_raise_mode_stops_at_the_first_failure() -> None:
    """With on_backend_error='raise' a failure is raised even if a later backend has the key."""
    up = MemoryBackend("up", {"k": "fake"})
    lk = latchkey.Latchkey([FailingBackend("down"), up], on_backend_error="raise")
    with pytest.raises(BackendUnavailable, match="down"):
        lk.get("k")
    assert up.calls == []


def test_access_denied_is_authoritative() -> None:
    """AccessDenied from a backend is raised at once; the chain does not fall through."""
    up = MemoryBackend("up", {"k": "fake"})
    denied = FailingBackend("vault", error=AccessDenied("vault refused 'k'"))
    lk = latchkey.Latchkey([denied, up])
    with pytest.raises(AccessDenied):
        lk.get("k")
    assert up.calls == []


def test_set_goes_to_first_writable_or_named_backend() -> None:
    """set writes to the first writable backend unless one is named; read-only is refused."""
    ro = MemoryBackend("ro", writable=False)
    w1, w2 = MemoryBackend("w1"), MemoryBackend("w2")
    lk = latchkey.Latchkey([ro, w1, w2])
    assert lk.set("k", "fake-1").backend == "w1"
    assert lk.set("k", "fake-2", backend="w2").backend == "w2"
    with pytest.raises(latchkey.ReadOnlyBackend, match="ro"):
        lk.set("k", "fake-3", backend="ro")
    with pytest.raises(latchkey.UsageError, match="no backend named 'nope'"):
        lk.set("k", "fake-4", backend="nope")
    assert (w1.get("k").value, w2.get("k").value) == ("fake-1", "fake-2")


def test_delete_and_list_union() -> None:
    """list shows each key with every backend holding it; delete hits the first holder."""
    a = MemoryBackend("a", {"s/x": "fake"})
    b = MemoryBackend("b", {"s/x": "fake", "s/y": "fake"})
    lk = latchkey.Latchkey([a, b])
    assert lk.list("s") == {"s/x": ["a", "b"], "s/y": ["b"]}
    assert lk.delete("s/y").name == "b"
    assert lk.delete("s/y") is None
    assert lk.list("s") == {"s/x": ["a", "b"]}


def test_explain_gives_provenance_without_the_value() -> None:
    """explain returns backend, path and version, and its dict carries no value."""
    mem = MemoryBackend("mem")
    mem.put("k", "fake-1")
    mem.put("k", "fake-secret-2")
    result = latchkey.Latchkey([MemoryBackend("empty"), mem]).explain("k")
    data = result.to_dict()
    assert (data["backend"], data["version"], data["found"]) == ("mem", "2", True)
    assert "fake-secret-2" not in repr(data) and "fake-secret-2" not in repr(result)


def test_explain_says_backends_failed_not_not_found() -> None:
    """With no hit and failed backends, explain reports "failed" and names them; "not found"
    is only said when every backend answered."""
    down = FailingBackend("ssm", {"k": "fake-secret-acct42"})
    lk = latchkey.Latchkey([down, FailingBackend("vault")])
    result = lk.explain("k")
    assert result.status == "failed"
    assert result.summary() == ("k could not be resolved: every backend failed: "
                                "ssm (BackendUnavailable), vault (BackendUnavailable)")
    data = result.to_dict()
    assert (data["found"], data["status"], data["failed_backends"]) == \
        (False, "failed", ["ssm", "vault"])
    partly = latchkey.Latchkey([MemoryBackend("env"), down]).explain("k")
    assert partly.summary() == ("k could not be resolved: backend ssm (BackendUnavailable) "
                                "failed, and no other backend holds it")
    absent = latchkey.Latchkey([MemoryBackend("env")]).explain("k")
    assert (absent.status, absent.summary()) == ("absent", "k is not found in any backend")
    assert "fake-secret" not in repr(data) + result.summary()


def test_explain_reports_shadowed_values() -> None:
    """explain asks every backend and marks a later hit as shadowed by the first."""
    lk = latchkey.Latchkey([MemoryBackend("env", {"k": "fake-env"}),
                            FailingBackend("down"), MemoryBackend("local", {"k": "fake-local"})])
    result = lk.explain("k")
    assert result.secret.backend == "env"
    assert [(a.backend, a.outcome) for a in result.attempts] == [
        ("env", "found"), ("down", "error"), ("local", "shadowed")]
    assert lk.get("k") == "fake-env"


def test_unique_backend_names() -> None:
    """Two backends with one name in a chain are refused."""
    with pytest.raises(ValueError, match="unique"):
        latchkey.Latchkey([MemoryBackend("m"), MemoryBackend("m")])
