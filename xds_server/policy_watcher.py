"""Watch the policy file and the certificate files it names.

Any content change reloads the whole bundle (policy + certificates): a valid
one is applied, an invalid one is logged with file, line and problem, counted,
and ignored: the last good bundle keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path

import structlog

from wsfleet.bounded_files import UnreadableFile, read_bounded
from xds_server.certificates import certificate_files
from xds_server.metrics import XdsMetrics
from xds_server.policy_loader import (
    MAX_POLICY_BYTES,
    PolicyBundle,
    PolicyError,
    load_bundle,
    load_policy_file,
)

log = structlog.get_logger()


class PolicyWatcher:
    """Polls file contents (robust to editors that replace files, and to mtime games)."""

    def __init__(
        self,
        path: Path,
        apply: Callable[[PolicyBundle], None],
        metrics: XdsMetrics,
        poll_s: float = 0.5,
    ) -> None:
        self._path = path
        self._apply = apply
        self._metrics = metrics
        self._poll_s = poll_s
        self._watched = self._files_named_by_policy()
        self._digest = self._read_digest()
        self.last_error: str | None = None

    def _files_named_by_policy(self) -> list[Path]:
        try:
            policy = load_policy_file(self._path)
        except PolicyError:
            return []
        return certificate_files(policy.certificates, self._path.parent)

    def _read_digest(self) -> str:
        digest = hashlib.sha256()
        for path in [self._path, *self._watched]:
            try:
                digest.update(read_bounded(path, MAX_POLICY_BYTES))
            except UnreadableFile as exc:
                digest.update(b"\\0" + str(exc).encode())
            digest.update(str(path).encode())
        return digest.hexdigest()

    def _changed_bundle(self) -> PolicyBundle | PolicyError | None:
        """A new bundle (or why it cannot be used) if any watched file changed, else None.
        Blocking file work: run in a thread, never on the event loop."""
        digest = self._read_digest()
        if digest == self._digest:
            return None
        self._watched = self._files_named_by_policy()
        self._digest = self._read_digest()
        try:
            return load_bundle(self._path)
        except PolicyError as exc:
            return exc

    def check(self) -> bool:
        """Reload once if any watched file changed; True if a new bundle was applied."""
        return self._take(self._changed_bundle())

    def _take(self, outcome: PolicyBundle | PolicyError | None) -> bool:
        if outcome is None:
            return False
        if isinstance(outcome, PolicyError):
            self.last_error = str(outcome)
            self._metrics.policy_reloads.labels("rejected").inc()
            log.error(
                "policy_rejected", error=str(outcome), note="the last good policy keeps serving"
            )
            return False
        self.last_error = None
        self._metrics.policy_reloads.labels("applied").inc()
        log.info("policy_applied", path=str(self._path))
        self._apply(outcome)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_s)
            # reading and parsing may take a while (large files): not on the event loop
            self._take(await asyncio.to_thread(self._changed_bundle))
