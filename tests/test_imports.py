"""Importing latchkey, and loading a manifest of core backends, loads no cloud SDK."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SDKS = ["boto3", "botocore", "hvac", "google.cloud", "google.api_core", "azure",
        "airflow", "dlt", "duckdb", "rich"]

PROBE = """
import json, sys
import latchkey
{extra}
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {roots!r}
                        or any(m == s or m.startswith(s + '.') for s in {sdks!r}))))
"""


def _loaded(extra: str = "", cwd: Path | None = None) -> list[str]:
    roots = sorted({s.split(".")[0] for s in SDKS})
    code = PROBE.format(extra=extra, roots=roots, sdks=SDKS)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=cwd, timeout=60)
    return json.loads(out.stdout)


def test_import_loads_no_sdk() -> None:
    """`import latchkey` in a fresh interpreter loads no cloud SDK, no Airflow, no dlt, no rich."""
    assert _loaded() == []


def test_loading_core_backends_loads_no_sdk(tmp_path: Path) -> None:
    """load() with env, files and local backends, and a read, still load no SDK."""
    (tmp_path / "latchkey.toml").write_text(
        '[backends.env]\ntype = "env"\n[backends.files]\ntype = "files"\npath = "s.json"\n'
        '[backends.local]\ntype = "local"\n')
    (tmp_path / "s.json").write_text('{"a": "fake"}')
    assert _loaded("latchkey.load().get('a')", cwd=tmp_path) == []


def test_aws_backends_load_boto3_only_when_used(tmp_path: Path) -> None:
    """A manifest naming the AWS backends validates and builds without importing boto3."""
    (tmp_path / "latchkey.toml").write_text(
        '[backends.ssm]\ntype = "aws_ssm"\nprefix = "/x/{env}"\n'
        '[backends.sm]\ntype = "aws_secrets_manager"\n'
        '[backends.ddb]\ntype = "dynamodb"\ntable = "t"\n')
    assert _loaded("latchkey.load()", cwd=tmp_path) == []
