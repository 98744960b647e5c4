"""Run-context benchmarks: `python benchmarks/run_contexts.py [--json]`.

The same numbers as `pipekey bench`: readiness of a 40-secret pipeline (cold, local store;
and against two simulated remote stores with 20 ms round trips), and warm read cost.
"""

import sys

from pipekey.cli import cli

if __name__ == "__main__":
    cli(["bench", *sys.argv[1:]], prog_name="pipekey")
