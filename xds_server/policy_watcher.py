"""Watch the policy file; apply valid edits, reject invalid ones, keep the last good."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import structlog

from xds_server.metrics import XdsMetrics
from xds_server.policy import Policy
from xds_server.policy_loader import PolicyError, load_policy_file

log = structlog.get_logger()


class PolicyWatcher:
    """Polls ``path`` for content changes (robust to editors that replace files)."""

    def __init__(
        self,
        path: Path,
        apply: Callable[[Policy], None],
        metrics: XdsMetrics,
        transform: Callable[[Policy], Policy] = lambda policy: policy,
        poll_s: float = 0.5,
    ) -> None:
        self._path = path
        self._apply = apply
        self._metrics = metrics
        self._transform = transform
        self._poll_s = poll_s
        self._digest = self._read_digest()
        self.last_error: str | None = None

    def _read_digest(self) -> str | None:
        try:
            return hashlib.sha256(self._path.read_bytes()).hexdigest()
        except OSError:
            return None

    def check(self) -> None:
        """Reload once if the file's content changed."""
        digest = self._read_digest()
        if digest is None or digest == self._digest:
            return
        self._digest = digest
        try:
            policy = self._transform(load_policy_file(self._path))
        except PolicyError as exc:
            self.last_error = str(exc)
            self._metrics.policy_reloads.labels("rejected").inc()
            log.error("policy_rejected", error=str(exc), note="last good policy keeps serving")
            return
        self.last_error = None
        self._metrics.policy_reloads.labels("applied").inc()
        log.info("policy_applied", path=str(self._path))
        self._apply(policy)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            self.check()
