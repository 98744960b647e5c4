"""The project is pipekey: the old name (taken on the package index by another credential
store) is left nowhere but the CHANGELOG's one line about the rename."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OLD = "latch" + "key"  # spelled in two parts so this file is not a hit itself


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / name for name in out.decode().split("\0") if name]


def test_the_old_name_is_left_only_in_the_changelog_line() -> None:
    hits = []
    for path in _tracked_files():
        rel = path.relative_to(ROOT).as_posix()
        if OLD in rel.lower():
            hits.append(f"{rel} (file name)")
        try:
            text = path.read_bytes().decode("utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue  # images and other binary files
        for number, line in enumerate(text.splitlines(), 1):
            if OLD not in line.lower():
                continue
            if rel == "CHANGELOG.md" and "renamed from" in line.lower():
                continue
            hits.append(f"{rel}:{number}: {line.strip()[:80]}")
    assert not hits, "the old name is still here:\n" + "\n".join(hits)


def test_the_distribution_module_and_command_are_pipekey() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'name = "pipekey"' in pyproject
    assert 'pipekey = "pipekey.cli:main"' in pyproject
    assert (ROOT / "src" / "pipekey" / "__init__.py").is_file()
