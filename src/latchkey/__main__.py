"""``python -m latchkey`` is the ``latchkey`` command."""

from .cli import main

main()
