"""wsfleet's measurements: speed and memory, printed as JSON and a readable table.

Run ``python -m benchmarks --help`` (or ``make bench ARGS=...``). Every wait has a
deadline, every load loop is bounded in count and in time, and every child process is
stopped on any way out. Results also go to ``benchmarks/results/`` (``--output-dir``
elsewhere; ``--smoke`` runs at CI size into a temporary directory).
"""
