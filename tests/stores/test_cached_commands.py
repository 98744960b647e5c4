"""Every command that uses an optional capability (init, copy, history, rm, diff) works on a
backend behind pipekey's cache as on the bare backend: the cache forwards each capability
explicitly (moto over HTTP for DynamoDB and SSM)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import pipekey
from pipekey.backends.base import Initialisable, Versioned, Writable
from pipekey.cache import CachedBackend
from pipekey.cli import cli

BIG = "fake-" + "c" * 6000  # over a Standard parameter's 4 KB: SSM with split stores chunks


@pytest.fixture
def project(isolated: Path, aws_env: str, master_key: str) -> Path:
    """A manifest with a DynamoDB table and an SSM prefix (split = true), both cached (the
    default for remote stores)."""
    uid = uuid.uuid4().hex[:8]
    config = isolated / "pipekey.toml"
    config.write_text(f'''
chain = ["ddb", "ssm"]

[backends.ddb]
type = "dynamodb"
table = "lk-cached-{uid}"
region = "eu-central-1"
endpoint_url = "{aws_env}"

[backends.ssm]
type = "aws_ssm"
prefix = "/lk-cached/{uid}"
region = "eu-central-1"
endpoint_url = "{aws_env}"
split = true
''')
    lk = pipekey.load(config)
    try:
        for name in ("ddb", "ssm"):
            backend = lk.backend(name)
            assert isinstance(backend, CachedBackend)
            assert isinstance(backend, Writable) and isinstance(backend, Versioned)
        assert isinstance(lk.backend("ddb"), Initialisable)
    finally:
        lk.close()
    return config


def _pipekey(config: Path, *args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, ["--config", str(config), *args], input=input)
    assert "fake-" not in result.output
    return result


def test_init_set_history_rm_on_a_cached_dynamodb(project: Path) -> None:
    """`init --backend ddb` creates the cached backend's table; set, history and rm then work
    through the cache."""
    init = _pipekey(project, "init", "--backend", "ddb", "--json")
    assert init.exit_code == 0, init.output
    assert json.loads(init.stdout)["table_created"] is True
    again = _pipekey(project, "init", "--backend", "ddb")
    assert again.exit_code == 0 and "kept existing table" in again.output
    for value in ("fake-one", "fake-two"):
        assert _pipekey(project, "set", "shared/token", "--backend", "ddb",
                        input=value).exit_code == 0
    history = _pipekey(project, "history", "shared/token", "--backend", "ddb", "--json")
    assert history.exit_code == 0, history.output
    assert [v["version"] for v in json.loads(history.stdout)["versions"]] == ["1", "2"]
    rm = _pipekey(project, "rm", "shared/token", "--backend", "ddb")
    assert rm.exit_code == 0 and "deleted shared/token from ddb" in rm.output
    assert _pipekey(project, "get", "shared/token").exit_code != 0


def test_copy_splits_into_a_cached_ssm_and_diff_finds_it_the_same(project: Path) -> None:
    """A 6 KB value copied into a cached SSM backend with split = true is planned as
    "split" (not "add" of a value SSM would refuse), stored whole, and diff finds every key
    the same; history and rm work through the cache too."""
    source = project.parent / "secrets.json"
    source.write_text(json.dumps({"certs": {"bundle": BIG}, "small": "fake-small"}))
    plan = _pipekey(project, "copy", f"file:{source}", "ssm", "--dry-run", "--json")
    assert plan.exit_code == 0, plan.output
    actions = {i["key"]: i["action"] for i in json.loads(plan.stdout)["items"]}
    assert actions == {"certs/bundle": "split", "small": "add"}
    done = _pipekey(project, "copy", f"file:{source}", "ssm")
    assert done.exit_code == 0 and "copied 2" in done.output, done.output
    diff = _pipekey(project, "diff", f"file:{source}", "ssm", "--json")
    assert diff.exit_code == 0, diff.output
    assert {r["state"] for r in json.loads(diff.stdout)["keys"]} == {"same"}
    history = _pipekey(project, "history", "small", "--backend", "ssm", "--json")
    assert [v["version"] for v in json.loads(history.stdout)["versions"]] == ["1"]
    assert _pipekey(project, "rm", "small", "--backend", "ssm").exit_code == 0
    lk = pipekey.load(project)
    try:
        assert lk.backend("ssm").get("certs/bundle").value == BIG  # type: ignore[union-attr]
        assert lk.backend("ssm").get("small") is None
    finally:
        lk.close()
