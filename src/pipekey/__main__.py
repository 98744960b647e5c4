"""``python -m pipekey`` is the ``pipekey`` command."""

from .cli import main

main()
