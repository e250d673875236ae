"""Load through the whole stack, beside its peers, in one run.

Targets, each started fresh:

- ``wsfleet raw``: the local fleet (Envoy -> sidecar -> gRPC backend, Redis registry, xDS),
  plain WebSocket echo: no ``wsfleet.v1`` subprotocol, so no envelopes, sequence numbers
  or replay buffer;
- ``wsfleet v1``: the same fleet spoken to as the SDKs do (protocol v1: JSON envelopes,
  numbered messages, every reply kept in the session's replay buffer in Redis);
- ``envoy+bare``: Envoy (static config, same listener settings) -> bare aiohttp echo;
- ``bare``: the bare aiohttp echo server alone.

Scenarios against each: a handshake **surge** (N connects at rate R, split over client
processes on 127.0.0.2, .3, ...: success %, latency p50/p99/max, errors by kind), the same
connections **sustained** for T seconds (RSS and CPU of every server process, cost per
connection), **echo latency** (echo round trips while all are held), **throughput** (echo
messages/s, and per server CPU-second), **fan-out** (one connection broadcasts
``--fanout`` messages through the backend to every connection: deliveries/s and per server
CPU-second), and **keep-alive** (``--keepalive-held`` fresh connections held while
``--keepalive-rate`` echo messages/s are spread over them for ``--keepalive-seconds``;
WebSocket ping RTT p50/p99: a client ping frame and the server's pong frame, answered by
the sidecar through Envoy for wsfleet and by aiohttp for the bare server). Each wsfleet
row is reported as a ratio to each peer; a ratio with nothing measurable to divide by is
n/a (null in the JSON).

``--pin``: load generators (and this process) run on core 0, every server-side process
(Envoy, sidecar, backend, Redis, xDS server, bare server) on core 1, so per-core figures
do not depend on the client. ``--envoy-variants`` also runs wsfleet v1 with Envoy's
defaults delivered over xDS (1 MiB buffer limits, request ids) and with two Envoy workers:
the before/after of the settings wsfleet's policy delivers (``envoy-share`` isolates each
knob).

Output: JSON, a table, and PNG plots in the output directory (benchmarks/results/).

``--client picows`` measures the surge and the echo again with an outside client (picows,
one process on the clients' core, 256 handshakes in flight, 64 connections x 16 echo
messages in flight, the same requests for every target) and prints both clients' figures
side by side with why they differ (benchmarks/load/compare.py), with the server CPU split
by process. ``--outside-rounds N`` then starts wsfleet raw, wsfleet v1 and envoy+bare
together and runs the outside client against them N rounds, taken in turn: each ratio
divides two figures measured seconds apart, and the median over the rounds is printed
with its spread (benchmarks/load/rounds.py).

Modules: targets (and envoy_static), generators (the load-generator processes),
scenarios/* (one per scenario), phases (one target's run), compare, rounds, report, run
(main), options (flags, smoke sizes). The outside client's process is benchmarks/outside_client.py.
"""

from __future__ import annotations

from benchmarks.load.options import SMOKE, add_arguments, check_arguments
from benchmarks.load.run import main

__all__ = ["SMOKE", "add_arguments", "check_arguments", "main"]
