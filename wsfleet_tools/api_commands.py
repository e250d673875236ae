"""The CLI's server API commands: ``wsfleet publish``, ``presence``, ``history``, and
``wsfleet apikey`` (keys in the keys file). They find the API and its key from the
fleet's state dir (``wsfleet up`` records both), or take ``--api-url`` and ``--api-key``.
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from server_api.keys import LOCAL_KEY_FILE, SCOPES, add_key, keys_file, parse_keys
from wsfleet.errors import ConfigError, UnreachableError, WsfleetError
from wsfleet.readiness import read_ready
from wsfleet_tools.admin_client import fleet_file
from wsfleet_tools.cli_options import add_state_dir_argument

DEFAULT_API_URL = "http://127.0.0.1:8080/api"


class ApiCallError(WsfleetError):
    """The server API refused a call; the message is its answer."""


def add_api_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--api-url",
        help="the server API (default: the fleet running from --state-dir, else "
        f"{DEFAULT_API_URL})",
    )
    parser.add_argument("--api-key", help="an API key (default: the state dir's api.key)")
    add_state_dir_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def register(commands: argparse._SubParsersAction[Any]) -> None:
    publish = commands.add_parser("publish", help="publish to a channel (server API)")
    publish.add_argument("channel")
    publish.add_argument("data", help="the text to publish")
    add_api_arguments(publish)
    publish.set_defaults(run=lambda args: print(publish_command(args)))

    presence = commands.add_parser("presence", help="who is subscribed to a channel")
    presence.add_argument("channel")
    presence.add_argument("--stats", action="store_true", help="counts only")
    add_api_arguments(presence)
    presence.set_defaults(run=lambda args: print(presence_command(args)))

    history = commands.add_parser("history", help="a channel's kept publications")
    history.add_argument("channel")
    history.add_argument("--limit", type=int, default=20, help="at most this many (default 20)")
    history.add_argument(
        "--since", metavar="OFFSET[:EPOCH]", help="those after this offset (of this epoch)"
    )
    add_api_arguments(history)
    history.set_defaults(run=lambda args: print(history_command(args)))

    apikey = commands.add_parser("apikey", help="server API keys (hashes in the keys file)")
    actions = apikey.add_subparsers(dest="apikey_command", required=True)
    create = actions.add_parser("create", help="make a key, print it once, add its hash")
    create.add_argument("name", help="what the key is for (shown in logs, never the key)")
    create.add_argument(
        "--scope",
        action="append",
        choices=[*SCOPES, "*"],
        help="what it may do (repeat; default: every scope)",
    )
    create.add_argument("--keys-file", type=Path, help="default: the state dir's api-keys.yaml")
    add_state_dir_argument(create)
    create.set_defaults(run=lambda args: print(apikey_create(args)))
    listing = actions.add_parser("list", help="the keys' names and scopes")
    listing.add_argument("--keys-file", type=Path)
    add_state_dir_argument(listing)
    listing.set_defaults(run=lambda args: print(apikey_list(args)))


def api_url(url: str | None, state_dir: Path) -> str:
    if url:
        return url.rstrip("/")
    facts = read_ready(fleet_file(state_dir))
    if facts is not None and isinstance(facts.get("api_url"), str):
        return str(facts["api_url"])
    return DEFAULT_API_URL


def api_key(key: str | None, state_dir: Path) -> str:
    if key:
        return key
    path = state_dir / LOCAL_KEY_FILE
    try:
        return path.read_text().strip()
    except OSError:
        raise ConfigError(
            f"no --api-key and no {path}: run `wsfleet up` first (or pass --state-dir)"
        ) from None


def call(args: argparse.Namespace, method: str, body: dict[str, Any]) -> Any:
    """One server API call; :class:`ApiCallError` with the API's own words on a refusal."""
    url = f"{api_url(args.api_url, args.state_dir)}/{method}"
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={
            "Authorization": f"Bearer {api_key(args.api_key, args.state_dir)}",
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            answer = json.load(exc)
            message = f"{answer.get('error')}: {answer.get('message')}"
        except ValueError:
            message = str(exc.reason)
        raise ApiCallError(f"{method}: HTTP {exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise UnreachableError(
            f"cannot reach the server API at {url}: {getattr(exc, 'reason', exc)}"
        ) from None


def publish_command(args: argparse.Namespace) -> str:
    answer = call(args, "publish", {"channel": args.channel, "data": args.data})
    if args.json:
        return json.dumps(answer)
    if answer["offset"]:
        return f"published to {args.channel}: offset {answer['offset']} (epoch {answer['epoch']})"
    return f"published to {args.channel} (no history: no offset)"


def presence_command(args: argparse.Namespace) -> str:
    if args.stats:
        answer = call(args, "presence_stats", {"channel": args.channel})
        if args.json:
            return json.dumps(answer)
        return f"{args.channel}: {answer['clients']} clients, {answer['users']} users"
    answer = call(args, "presence", {"channel": args.channel})
    if args.json:
        return json.dumps(answer)
    clients = answer["clients"]
    lines = [f"{args.channel}: {len(clients)} clients"]
    for client in sorted(clients, key=lambda c: (c.get("user", ""), c.get("session", ""))):
        lines.append(
            f"  {client.get('user', '?'):<20} {client.get('session', '?')}  "
            f"{client.get('transport', '')}"
        )
    return "\n".join(lines)


def history_command(args: argparse.Namespace) -> str:
    body: dict[str, Any] = {"channel": args.channel, "limit": args.limit}
    if args.since:
        offset, _, epoch = args.since.partition(":")
        if not offset.isdigit():
            raise ConfigError("--since is OFFSET or OFFSET:EPOCH")
        body["since"] = {"offset": int(offset), "epoch": epoch}
    answer = call(args, "history", body)
    if args.json:
        return json.dumps(answer)
    lines = [
        f"{args.channel}: epoch {answer['epoch']}, last offset {answer['offset']}, "
        f"{len(answer['publications'])} shown"
    ]
    for item in answer["publications"]:
        data = item.get("data", f"<{len(item.get('data_b64', ''))} base64 characters>")
        who = f"  ({item['info'].get('user')})" if isinstance(item.get("info"), dict) else ""
        lines.append(f"  {item['offset']:>6}  {data}{who}")
    return "\n".join(lines)


def apikey_create(args: argparse.Namespace) -> str:
    path = args.keys_file or keys_file(args.state_dir)
    key = add_key(path, args.name, args.scope or ["*"])
    return key


def apikey_list(args: argparse.Namespace) -> str:
    path = args.keys_file or keys_file(args.state_dir)
    try:
        keys = parse_keys(path.read_text(), str(path))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return "\n".join(
        f"{key.name:<20} {','.join(sorted(key.scopes))}"
        for key in sorted(keys.values(), key=lambda k: k.name)
    )
