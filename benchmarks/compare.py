"""`python benchmarks/compare.py [--repeat 3] [--latency-ms 20] [--pipelines 20] [--json]`:
the same as `latchkey bench --compare` (see benchmarks/README.md)."""

import sys

from latchkey.cli import cli

if __name__ == "__main__":
    cli(["bench", "--compare", *sys.argv[1:]], prog_name="latchkey")
