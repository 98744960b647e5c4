"""The auth-failure policy: which errors make ``run.retry_on_auth_failure`` re-read credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

import pipekey
from pipekey.authfailure import AUTH_WORDS, AuthFailurePolicy, looks_like_auth_failure
from pipekey.manifest import parse_manifest
from pipekey.run import Run
from pipekey.testing import MemoryBackend


class DriverError(Exception):
    pass


@pytest.mark.parametrize("exc, refused", [
    pytest.param(DriverError("password authentication failed for user loader"), True, id="pg"),
    pytest.param(DriverError("HTTP 403"), True, id="403"),
    pytest.param(type("ExpiredToken", (Exception,), {})("x"), True, id="type-name"),
    pytest.param(DriverError("connection reset by peer"), False, id="network"),
])
def test_default_policy_guesses_from_the_text(exc: Exception, refused: bool) -> None:
    """The default words match the error's type name and message, case-insensitively."""
    assert AuthFailurePolicy().is_auth_failure(exc) is refused
    assert looks_like_auth_failure(exc) is refused


def test_custom_words_replace_the_default() -> None:
    """words= decides what counts; the default words then no longer do."""
    policy = AuthFailurePolicy(words=("28P01",))
    assert policy.is_auth_failure(DriverError("sqlstate 28p01"))
    assert not policy.is_auth_failure(DriverError("password authentication failed"))
    assert "password" in AUTH_WORDS


def test_custom_predicate_decides_alone() -> None:
    """predicate= replaces the guess from the text."""
    policy = AuthFailurePolicy(predicate=lambda e: isinstance(e, DriverError))
    assert policy.is_auth_failure(DriverError("no words here"))
    assert not policy.is_auth_failure(ValueError("password authentication failed"))


def _run(policy: AuthFailurePolicy | None = None) -> tuple[Run, MemoryBackend]:
    manifest = parse_manifest({"pipelines": {"p": {"scope": "p", "requires": ["pw"]}}},
                              Path("pipekey.toml"))
    backend = MemoryBackend("mem", {"p/pw": "fake-old"})
    lk = pipekey.Pipekey([backend], manifest=manifest)
    config = lk.pipeline_config("p")
    return Run("p", config, lk.chain_for("dev"), "dev", {}, auth_policy=policy), backend


def test_run_retries_by_its_policy() -> None:
    """A run's auth_policy decides which failure re-reads the names and runs the action again."""
    run, backend = _run(AuthFailurePolicy(words=("28p01",)))
    attempts: list[str] = []

    def action() -> str:
        attempts.append(run.secret("pw"))
        if len(attempts) == 1:
            backend.put("p/pw", "fake-new")
            raise DriverError("SQLSTATE 28P01")
        return "connected"

    with run:
        assert run.retry_on_auth_failure(action, "pw") == "connected"
    assert attempts == ["fake-old", "fake-new"]


def test_run_policy_does_not_retry_other_errors() -> None:
    """An error the policy does not call refused is raised at once, without a re-read."""
    run, _ = _run(AuthFailurePolicy(predicate=lambda e: False))
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise DriverError("password authentication failed")

    with run, pytest.raises(DriverError):
        run.retry_on_auth_failure(action, "pw")
    assert calls == [1]
