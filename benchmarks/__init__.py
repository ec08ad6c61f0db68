"""The benchmark suite moved into the package: ``shmstore.bench`` (run it as ``shmstore
bench`` or ``python -m shmstore.bench``). ``python -m benchmarks``, ``python -m
benchmarks.report`` and ``python -m benchmarks.profiling`` still work from a checkout, as
aliases; saved runs stay in ``benchmarks/results/``."""
