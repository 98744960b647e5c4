"""Benchmarks and the fault-injecting proxy: beside the package, not in the wheel.

Run from a source checkout's root: ``python -m benchmarks.compare``. The tests import
``benchmarks.proxy`` from the checkout too.
"""
