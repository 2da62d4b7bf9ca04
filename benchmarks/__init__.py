"""Throughput benchmarks, run by hand: ``python -m benchmarks`` (not part of the tests)."""
