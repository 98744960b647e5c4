"""Small shims for the Python versions we support (3.10+)."""

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    # tomli is installed on 3.10 only (mypy checks as 3.10, maybe without it)
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["tomllib"]
