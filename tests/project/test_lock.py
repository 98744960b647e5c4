"""CI installs from a complete lock (scripts/requirements-lock.txt, made by scripts/lock.sh):
every pin is exact, and every requirement pyproject.toml names, in every extra, is pinned at a
version its range admits, once for the running Python."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

packaging_requirements = pytest.importorskip("packaging.requirements")
from packaging.markers import Marker  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402
from packaging.version import Version  # noqa: E402

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - the lock test reads pyproject.toml with tomli on 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "scripts" / "requirements-lock.txt"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)\s*(?:;\s*(?P<marker>[^#]+?))?\s*"
                 r"(?:#.*)?$")


def _pins() -> dict[str, list[Version]]:
    """name -> the versions pinned for this interpreter (markers evaluated)."""
    pins: dict[str, list[Version]] = {}
    for number, line in enumerate(LOCK.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = PIN.match(line)
        assert match, f"{LOCK.name}:{number} is not an exact pin: {line!r}"
        marker = match["marker"]
        if marker and not Marker(marker).evaluate():
            continue
        pins.setdefault(canonicalize_name(match["name"]), []).append(Version(match["version"]))
    return pins


def _requirements() -> list[packaging_requirements.Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    texts = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        texts += extra
    out = []
    for text in texts:
        req = packaging_requirements.Requirement(text)
        if canonicalize_name(req.name) == canonicalize_name(project["name"]):
            continue  # an extra naming other extras of this project
        if req.marker is None or req.marker.evaluate():
            out.append(req)
    return out


def test_every_line_of_the_lock_is_an_exact_pin_and_each_package_is_pinned_once() -> None:
    pins = _pins()
    assert len(pins) > 100, "the lock holds every package CI installs, not a few"
    twice = {name: versions for name, versions in pins.items() if len(versions) > 1}
    assert not twice, f"pinned more than once for this Python: {twice}"


def test_every_pyproject_requirement_is_locked_within_its_range() -> None:
    pins = _pins()
    wrong = []
    for req in _requirements():
        versions = pins.get(canonicalize_name(req.name))
        if not versions:
            wrong.append(f"{req} is not in the lock")
        elif not req.specifier.contains(versions[0], prereleases=True):
            wrong.append(f"{req} but the lock pins {versions[0]}")
    assert not wrong, "run `bash scripts/lock.sh`:\n" + "\n".join(wrong)


def test_the_build_and_install_tools_are_locked_too() -> None:
    pins = _pins()
    for tool in ("pip", "setuptools", "wheel"):
        assert tool in pins, f"{tool} is not in the lock"
