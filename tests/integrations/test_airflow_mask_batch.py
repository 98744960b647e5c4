"""A run's values reach Airflow's masker in one call (issue 32): in a task every
``mask_secret`` is a round trip to the task's supervisor, so a run of 40 secrets registering
each value on its own cost 40 round trips on the run-open path, direct and brokered alike."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from pipekey import broker
from pipekey.announce import add_values_listener
from pipekey.backends.local import LocalBackend, generate_master_key
from pipekey.client import load
from pipekey.manifest import load_manifest

from ..extras import need

need("airflow")

NAMES = [f"secret_{i:02d}" for i in range(12)]
VALUES = {n: f"fake-batch-{n}-value" for n in NAMES}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list:
    """Airflow's mask_secret, recording what pipekey hands it (Airflow's, not pipekey's)."""
    import airflow.sdk.log

    from pipekey.integrations._airflow_masking import mask_many

    seen: list = []
    monkeypatch.setattr(airflow.sdk.log, "mask_secret", lambda value, name=None:
                        seen.append(value))
    add_values_listener(mask_many)  # what task_run and the backend register
    return seen


def _manifest(tmp_path: Path) -> Path:
    names = ", ".join(f'"{n}"' for n in NAMES)
    (tmp_path / "pipekey.toml").write_text(textwrap.dedent(f'''
        chain = ["local"]
        [backends.local]
        type = "local"
        path = "store.db"
        [pipelines.p]
        dags = ["p_*"]
        scope = "bench"
        requires = [{names}]
    '''))
    return tmp_path / "pipekey.toml"


def test_a_direct_run_masks_its_values_in_one_call(tmp_path, monkeypatch, calls) -> None:
    key = generate_master_key()
    monkeypatch.setenv("PIPEKEY_MASTER_KEY", key)
    store = LocalBackend("local", tmp_path / "store.db", master_key=key)
    for name, value in VALUES.items():
        store.put(f"bench/{name}", value)
    store.close()
    lk = load(_manifest(tmp_path))
    with lk.pipeline("p") as run:
        assert len(calls) == 1  # before any value is handed out
        assert sorted(calls[0]) == sorted(VALUES.values())
        assert [run.secret(n) for n in NAMES] == [VALUES[n] for n in NAMES]
    assert len(calls) == 1  # reading them masks nothing again
    lk.close()


def test_a_brokered_run_masks_the_payload_in_one_call(tmp_path, calls) -> None:
    secrets = {n: {"key": f"bench/{n}", "value": v, "backend": "local", "path": f"bench/{n}",
                   "version": None, "document": False} for n, v in VALUES.items()}
    answer = json.dumps({"v": 1, "pipeline": "p", "env": "dev", "params": {}, "run": "t",
                         "names": secrets, "connections": {}, "keys": {}})
    with broker.brokered_run(load_manifest(_manifest(tmp_path)), "p",
                             lambda key: answer) as run:
        assert [run.secret(n) for n in NAMES] == [VALUES[n] for n in NAMES]
    assert len(calls) == 1 and sorted(calls[0]) == sorted(VALUES.values())
