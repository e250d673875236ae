"""The backend kit: everything a wsfleet backend needs, on the bridge's generated stubs.

Subclass :class:`Backend`, override ``on_open`` / ``on_message`` / ``on_close`` (and
``on_publication`` to approve client publications), answer through :class:`Session`
(``send``, ``close``, ``subscribe``), publish with :meth:`Backend.publish`, and run it
with :func:`serve`. Batching, acknowledgements and resumes are the kit's. See
docs/backend.md.
"""

from wsfleet.backend.service import (
    ACCEPT,
    Backend,
    Decision,
    NoGateway,
    reject,
    serve,
    start,
)
from wsfleet.backend.session import Session, SessionInfo

__all__ = [
    "ACCEPT",
    "Backend",
    "Decision",
    "NoGateway",
    "Session",
    "SessionInfo",
    "reject",
    "serve",
    "start",
]
