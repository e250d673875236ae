"""The scenarios of ``load``, one module each. surge, sustained, echo_latency, throughput
and fanout share the surge's connections (benchmarks/load/phases.py runs them in that
order); keepalive opens its own; outside (``--client picows``) runs its own client."""
