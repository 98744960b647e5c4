"""The ``pipekey`` command.

Every command takes ``--json``. Errors print one line on stderr and exit 1 (not found, a
store failed) or 2 (bad usage: a malformed key, an invalid manifest, a bad flag). Values are
read from stdin or a hidden prompt, never from the command line, and never printed unless
``get --reveal`` asks.
"""

from __future__ import annotations

from ._common import cli  # each command's module is imported when it is used

__all__ = ["cli", "main"]


def main() -> None:
    """Console entry point."""
    cli(prog_name="pipekey")
