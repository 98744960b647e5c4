"""Shared fixtures: every test runs in its own folder with no pipekey variables inherited."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from pipekey.backends.local import generate_master_key

from .servers import (  # noqa: F401  (fixtures)
    airflow_home,
    aws_env,
    azure_env,
    fake_azure,
    fake_gcp,
    fake_vault,
    moto,
    moto_server,
    postgres,
    vault_env,
)

# Airflow writes its config under AIRFLOW_HOME on first import: keep it out of ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="pipekey-tests-airflow-"))
# dlt: no telemetry (no network here), and no probing of Airflow's variables from dlt's own
# Airflow provider (it is on by default whenever Airflow is installed).
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
os.environ.setdefault("PROVIDERS__ENABLE_AIRFLOW_SECRETS", "false")

# CI runs the same examples every time (a new failing example then shows up in a developer's
# run, not as a surprise in CI); locally hypothesis explores new ones.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

#: Obviously fake values; tests search all output for them.
FAKE = "fake-s3cr3t-Zq9x-DO-NOT-USE"


def _unmasked(stream: object) -> object:
    # pipekey.integrations._airflow_masking's wrapper
    while type(stream).__name__ == "_MaskedStream":
        stream = stream._stream  # type: ignore[attr-defined]
    return stream


@pytest.fixture(autouse=True)
def _task_process_state_undone() -> object:
    """The Airflow backend, once built in a process, registers a value listener with every
    run (Airflow's masker) and wraps sys.stdout/sys.stderr in pipekey's masker as soon as a
    value is served: right for a task process, but in this process a task is one test, so
    every test ends with the listeners it found and the streams unwrapped."""
    import pipekey.announce

    listeners = list(pipekey.announce._value_listeners)
    many = list(pipekey.announce._values_listeners)
    sys.stdout, sys.stderr = _unmasked(sys.stdout), _unmasked(sys.stderr)
    yield
    pipekey.announce._value_listeners[:] = listeners
    pipekey.announce._values_listeners[:] = many
    masking = sys.modules.get("pipekey.integrations._airflow_masking")
    if masking is not None:  # what this test's "process" handed Airflow's masker
        masking._sent.clear()
    sys.stdout, sys.stderr = _unmasked(sys.stdout), _unmasked(sys.stderr)


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty folder with no PIPEKEY_* variables from the outside."""
    for name in list(os.environ):
        if name.startswith("PIPEKEY"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def default_sigint() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in an interactive shell, even when pytest started
    with SIGINT ignored (what `cmd &` gives in a non-interactive shell); restored after."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture
def master_key(monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh master key in PIPEKEY_MASTER_KEY."""
    key = generate_master_key()
    monkeypatch.setenv("PIPEKEY_MASTER_KEY", key)
    return key


def run_cli(*args: str, input: str | None = None, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `pipekey` command in a subprocess, capturing everything it prints."""
    full_env = {k: v for k, v in os.environ.items()}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "pipekey", *args], input=input, capture_output=True,
        text=True, env=full_env, cwd=cwd, timeout=60,
    )
