"""No credential reaches any log, every Python process logs JSON lines only, and Envoy's
access log (JSON, on its stdout) records the requests without their query strings."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.helpers import until
from wsfleet.tokens import mint_token, read_auth_key

pytestmark = pytest.mark.integration

NOT_PYTHON = ("envoy", "redis")  # log files of children that are not wsfleet's processes


def _secrets_in(path: Path) -> list[str]:
    """The long words of a key file (its secret, in whatever layout the file has)."""
    text = path.read_text()
    words = [text.strip(), *text.replace('"', " ").replace(":", " ").split()]
    return [word for word in words if len(word) >= 16]


async def test_no_secret_reaches_any_log_and_the_access_log_has_every_request(
    fleet_factory: Callable[..., Coroutine[Any, Any, Any]],
) -> None:
    fleet = await fleet_factory(sidecars=1, api_instances=1, log_level="debug")
    url = fleet.client_url
    query_token, header_token = fleet.token("hyg-query"), fleet.token("hyg-header")
    forged = mint_token(b"k" * 32, "hyg-forged")  # well formed, signed with another key
    pod_id = next(iter(fleet.info.sidecars))
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"{url}?user=hyg-query&access_token={query_token}")
        await ws.send_str("hello")
        assert (await ws.receive(timeout=10)).data == "hello"
        await ws.close()
        ws = await http.ws_connect(
            f"{url}?user=hyg-header", headers={"Authorization": f"Bearer {header_token}"}
        )
        await ws.close()
        for refused_url, status in (
            (f"{url}?user=hyg-forged&access_token={forged}", 401),  # a bad token
            (f"{url}?user=someone-else&access_token={query_token}", 403),  # a refused upgrade
        ):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(refused_url)
            assert refused.value.status == status
        api = await http.post(
            f"{fleet.api_url}/publish",
            json={"channel": "hygiene", "data": "x"},
            headers={"Authorization": f"Bearer {fleet.api_key}"},
        )
        assert api.status < 500
        for token in (fleet.admin_token, fleet.api_key):  # the right one, and a wrong one
            admin = await http.get(
                f"{fleet.admin_url}/debug/nodes", headers={"Authorization": f"Bearer {token}"}
            )
            assert admin.status in (200, 401)

    secrets = {
        query_token,
        header_token,
        forged,
        fleet.admin_token,
        fleet.api_key,
        fleet.pod_admin_token(pod_id),
        read_auth_key(fleet.state_dir / "auth.key").decode(),
        *_secrets_in(fleet.registry_key_path),
        *_secrets_in(fleet.pod_key_path(pod_id)),
    }
    logs = fleet.run_dir / "logs"
    envoy_log = logs / "envoy.log"

    def access_log() -> list[dict[str, Any]]:
        records = []
        for line in envoy_log.read_text().splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("component") == "envoy":
                    records.append(record)
        return records

    def logged(path: str, status: int) -> bool:
        return any(r["path"] == path and r["status"] == status for r in access_log())

    # Envoy writes a WebSocket's line when it ends; the API call's at once
    await until(lambda: logged("/ws", 101) and logged("/ws", 401), 30, "the access log lines")
    await until(lambda: logged("/ws", 403) and logged("/api/publish", api.status), 30, "the rest")
    upgrades = [r for r in access_log() if r["path"] == "/ws" and r["status"] == 101]
    assert all(r["upstream_host"] and r["duration_ms"] >= 0 for r in upgrades)
    assert all(r["bytes_received"] > 0 and r["bytes_sent"] > 0 for r in upgrades)

    files = sorted(logs.glob("*.log"))
    names = {path.stem for path in files}
    assert {"envoy", "xds", pod_id} <= names | {pod_id}, names
    for path in files:
        text = path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret in {path.name}"
        if path.stem.startswith(NOT_PYTHON):
            continue
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"not JSON in {path.name}: {line[:200]}")
            assert isinstance(record, dict) and "event" in record and "level" in record, line
