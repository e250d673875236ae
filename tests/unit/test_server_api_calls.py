"""The server API's calls and keys, with no process and no socket: bodies are checked into
typed calls (or refused naming what is wrong), keys are hashes with scopes, and the OpenAPI
document says exactly what the code takes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from server_api.calls import (
    METHODS,
    BadCall,
    Broadcast,
    Data,
    Disconnect,
    HistoryQuery,
    PresenceQuery,
    Publish,
    Send,
    Subscription,
    parse_call,
)
from server_api.keys import ApiKeys, add_key, key_digest, parse_keys
from wsfleet.errors import ConfigError

SPEC = yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "docs" / "openapi" / "server-api.yaml").read_text()
)


def test_bodies_become_typed_calls() -> None:
    assert parse_call("publish", {"channel": "feed:a", "data": "hé"}) == Publish(
        "feed:a", Data("hé".encode(), False)
    )
    assert parse_call("broadcast", {"channels": ["a", "b"], "data_b64": "AAE="}) == Broadcast(
        ("a", "b"), Data(b"\x00\x01", True)
    )
    assert parse_call("send", {"user": "u", "data": "x"}) == Send("u", "", Data(b"x", False))
    assert parse_call("unsubscribe", {"user": "u", "session": "s", "channel": "c"}) == (
        Subscription("u", "s", "c", subscribe=False)
    )
    assert parse_call("disconnect", {"user": "u"}) == Disconnect(
        "u", "", 1000, "disconnected by the server"
    )
    assert parse_call("presence_stats", {"channel": "c"}) == PresenceQuery("c", stats=True)
    assert parse_call("history", {"channel": "c", "since": {"offset": 3, "epoch": "e"}}) == (
        HistoryQuery("c", 3, "e", 100)
    )


@pytest.mark.parametrize(
    ("method", "body", "words"),
    [
        ("publish", "text", "a JSON object"),
        ("publish", {"channel": "c"}, "data (text) or data_b64"),
        ("publish", {"channel": "c", "data": "x", "data_b64": "eA=="}, "one of them"),
        ("publish", {"channel": "c", "data": 5}, "data is a string"),
        ("publish", {"channel": "c", "data_b64": "%%"}, "not base64"),
        ("publish", {"channel": "c", "data": "\ud800"}, "not valid Unicode"),
        ("publish", {"channel": "a b", "data": "x"}, "channel: a channel name has only"),
        ("publish", {"channel": "c", "data": "x", "chanel": "d"}, "not 'chanel'"),
        ("broadcast", {"channels": [], "data": "x"}, "1 to 1000 channels"),
        ("broadcast", {"channels": ["ok", "not ok"], "data": "x"}, "channels[1]"),
        ("send", {"data": "x"}, "user is the user's id"),
        ("send", {"user": "u", "session": 5, "data": "x"}, "session is a session id"),
        ("disconnect", {"user": "u", "code": 1006}, "code is"),
        ("disconnect", {"user": "u", "code": True}, "code is"),
        ("disconnect", {"user": "u", "reason": "é" * 70}, "at most 123 bytes"),
        ("history", {"channel": "c", "limit": -1}, "limit is a positive integer"),
        ("history", {"channel": "c", "since": {"offset": -2}}, "since is"),
    ],
)
def test_a_bad_body_is_refused_naming_what_is_wrong(method: str, body: Any, words: str) -> None:
    with pytest.raises(BadCall) as refused:
        parse_call(method, body)
    assert words in str(refused.value)


def test_keys_are_hashes_with_scopes_and_a_bad_file_names_its_problem(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    everything = add_key(path, "app", ["*"])
    publisher = add_key(path, "publisher", ["publish"])
    assert everything not in path.read_text() and key_digest(everything) in path.read_text()
    keys = ApiKeys(path)
    found = keys.find(f"Bearer {publisher}")
    assert found is not None and found.name == "publisher"
    assert found.allows("publish") and not found.allows("presence")
    assert keys.find(f"Bearer {everything}x") is None and keys.find(everything) is None
    with pytest.raises(ConfigError, match="exists already"):
        add_key(path, "app", ["publish"])
    for text, problem in (
        ("keys: 5", "a list of keys"),
        ("keys: [{name: a, sha256: abc, scopes: ['*']}]", "keys.0.sha256"),
        (f"keys: [{{name: a, sha256: '{'0' * 64}', scopes: [fly]}}]", "unknown scope 'fly'"),
        (f"keys: [{{name: a, sha256: '{'0' * 64}', scopes: []}}]", "keys.0.scopes"),
        (f"keys: [{{name: a, sha256: '{'0' * 64}', scopes: ['*'], key: x}}]", "nothing else"),
    ):
        with pytest.raises(ConfigError) as caught:
            parse_keys(text, "k.yaml")
        assert str(caught.value).startswith("k.yaml") and problem in str(caught.value)


def test_a_bad_edit_of_the_keys_file_keeps_the_keys_in_force(tmp_path: Path) -> None:
    path = tmp_path / "keys.yaml"
    key = add_key(path, "app", ["*"])
    keys = ApiKeys(path)
    path.write_text("keys: nonsense\n")
    with pytest.raises(ConfigError):
        keys.reload()
    assert keys.find(f"Bearer {key}") is not None


def test_the_openapi_document_describes_exactly_the_methods_and_their_fields() -> None:
    documented = {path.removeprefix("/api/"): item["post"] for path, item in SPEC["paths"].items()}
    assert set(documented) == set(METHODS)
    for name, operation in documented.items():
        scope, fields = METHODS[name]
        assert operation["x-scope"] == scope
        body = operation["requestBody"]["content"]["application/json"]
        assert set(body["schema"]["properties"]) == fields, name
        parse_call(name, body["example"])  # the documented example is a valid call
        assert {"200", "400", "401", "403", "413", "503"} <= set(operation["responses"])
