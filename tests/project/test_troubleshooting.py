"""docs/troubleshooting.md shows what the CLI prints: each block marked ``<!-- output checked by
tests/project/test_troubleshooting.py: SETUP -->`` is run, command by command (``$ `` lines), in
a fresh folder prepared by SETUP, and its other lines are compared with the real output (stdout
and stderr, in order; the folder shown as /srv/pipelines; runs of spaces are one, as a table's
padding follows its widest cell)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from pipekey.backends.local import generate_master_key

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "troubleshooting.md"
SHOWN = "/srv/pipelines"
MARK = re.compile(r"<!-- output checked by tests/project/test_troubleshooting\.py: (.+?) -->\n"
                  r"```console\n(.*?)```", flags=re.S)


def _facebook_ads(folder: Path, env: dict[str, str]) -> None:
    """The manifest the explain example uses, and the token at the parent level."""
    (folder / "pipekey.toml").write_text(
        '[backends.local]\ntype = "local"\n[pipelines.facebook_ads]\n'
        'scope = "marketing/facebook/{account}"\nrequires = ["access_token"]\n')
    subprocess.run(["pipekey", "set", "marketing/facebook/access_token"], input="fake-tok",
                   cwd=folder, env=env, check=True, capture_output=True, text=True, timeout=60)


SETUPS: dict[str, Callable[[Path, dict[str, str]], None]] = {
    "empty folder": lambda folder, env: None,
    "facebook_ads": _facebook_ads,
}
BLOCKS = MARK.findall(DOC.read_text(encoding="utf-8"))


def _sessions(block: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines, each with the output lines shown after it."""
    sessions: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            sessions.append((line[2:], []))
        else:
            sessions[-1][1].append(line)
    return sessions


def _same(lines: list[str]) -> list[str]:
    return [" ".join(line.split()) for line in lines if line.strip()]


def test_the_doc_has_checked_blocks() -> None:
    """The marker is spelt so the test finds the blocks (and each names a known setup)."""
    assert len(BLOCKS) >= 3
    assert {setup for setup, _ in BLOCKS} <= set(SETUPS)


@pytest.mark.parametrize("setup, block", BLOCKS,
                         ids=[f"{i}-{s}" for i, (s, _) in enumerate(BLOCKS, start=1)])
def test_each_example_prints_what_the_doc_shows(tmp_path: Path, setup: str, block: str) -> None:
    """Each command of the block prints exactly the lines shown after it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPEKEY")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PIPEKEY_MASTER_KEY"] = generate_master_key()
    env["COLUMNS"] = "1000"
    if shutil.which("pipekey", path=env["PATH"]) is None:
        pytest.skip("the pipekey command is not installed (pip install -e .)")
    folder = tmp_path / "project"
    folder.mkdir()
    SETUPS[setup](folder, env)
    for command, shown in _sessions(block):
        result = subprocess.run(["bash", "-c", f"{command} 2>&1"], capture_output=True,
                                text=True, cwd=folder, env=env, timeout=60)
        printed = result.stdout.replace(str(folder.resolve()), SHOWN).replace(str(folder), SHOWN)
        assert _same(printed.splitlines()) == _same(shown), command
