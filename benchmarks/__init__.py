"""wsfleet's measurements: speed and memory, printed as JSON and a readable table.

Run ``python -m benchmarks --help`` (or ``make bench ARGS=...``). Every load
loop is bounded in count and in time. Results also go to ``benchmarks/results/``.
"""
