"""Property-based fuzzing of everything a client or an operator feeds wsfleet: whatever
comes in, the answer is a result or the one documented error, never a crash."""

from __future__ import annotations

import contextlib
import json
import secrets
import struct

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server_api.calls import METHODS, BadCall, parse_call
from sidecar.auth import AuthError, KeySet, TokenVerifier
from sidecar.core import envelope, ws_frames
from sidecar.core.channel_frames import ChannelRequest, Refused
from sidecar.core.resume import Sequencer
from sidecar.core.send_queue import HARD_CAP_FACTOR
from sidecar.core.session import QueueBounds, SessionCore, SessionCounters
from wsfleet.channels.messages import BadMessage, read_command, read_topic_message
from wsfleet.channels.names import check_channel
from xds_server.policy import Policy
from xds_server.policy_loader import PolicyError, parse_policy

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
FRAME_KEYS = st.sampled_from(
    ["type", "cseq", "data", "data_b64", "token", "x", "id", "channel", "since"]
)
FRAME_VALUES = st.one_of(
    st.sampled_from(
        [
            *("message", "ping", "refresh", "welcome", "subscribe", "unsubscribe", "publish"),
            *("presence", "chat:room", "a b", "x" * 300),
        ]
    ),
    st.fixed_dictionaries(
        {"offset": st.integers(min_value=-2, max_value=9), "epoch": st.text(max_size=3)}
    ),
    st.integers(min_value=-3, max_value=2**70),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
)
FRAMES = st.dictionaries(FRAME_KEYS, FRAME_VALUES, max_size=5).map(json.dumps)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.one_of(st.text(max_size=200), FRAMES, JSON.map(json.dumps)))
def test_the_v1_parser_returns_a_message_or_says_what_is_wrong(text: str) -> None:
    try:
        message = envelope.parse_client(text)
    except envelope.EnvelopeError as error:
        assert str(error)
        return
    except Refused as refused:  # a channel request that breaks a rule: answered, with why
        assert refused.message and json.loads(refused.frame())["code"] == refused.code.value
        return
    if isinstance(message, ChannelRequest):
        check_channel(message.channel)
        assert message.request_id > 0 and isinstance(message.data, bytes)
        return
    assert isinstance(message.data, bytes)
    assert message.cseq >= 0 or message.cseq in (envelope.PING_CSEQ, envelope.REFRESH_CSEQ)


@FUZZ
@given(st.lists(st.one_of(st.binary(max_size=64), FRAMES.map(str.encode)), max_size=40))
def test_no_client_frame_breaks_a_session_or_its_bounds(frames: list[bytes]) -> None:
    bounds = QueueBounds(messages=5, bytes=200, slow_consumer_grace_s=1.0)
    for sequencer in (Sequencer(), None):
        core = SessionCore("s", sequencer, SessionCounters(), bounds)
        for n, data in enumerate(frames):
            message = core.client_frame(data, False, now=n * 0.01)
            if isinstance(message, ChannelRequest):
                assert sequencer is not None  # a raw WebSocket has no channel requests
            elif message is not None and sequencer is not None:
                assert message.cseq >= 0 or message.cseq == envelope.REFRESH_CSEQ
            queued, size = core.queued()
            assert queued <= HARD_CAP_FACTOR * bounds.messages + 1
            assert size <= HARD_CAP_FACTOR * bounds.bytes + 200
        counters = core._counters
        assert counters.messages_in == len(frames)


@FUZZ
@given(st.text(max_size=300))
def test_any_text_is_a_policy_or_a_located_policy_error(text: str) -> None:
    try:
        assert isinstance(parse_policy(text, "fuzz.yaml"), Policy)
    except PolicyError as error:
        assert str(error).startswith("fuzz.yaml")


POLICY_SHAPES = st.fixed_dictionaries(
    {},
    optional={
        "listeners": st.lists(
            st.dictionaries(
                st.sampled_from(["name", "port", "routes", "idle_timeout_s", "address", "tls"]),
                JSON,
                max_size=4,
            ),
            max_size=2,
        ),
        "routes": st.lists(
            st.dictionaries(
                st.sampled_from(["name", "path_prefix", "pool", "kind"]), JSON, max_size=4
            ),
            max_size=2,
        ),
        "pools": st.lists(
            st.dictionaries(st.sampled_from(["name", "hash_key", "lb_policy"]), JSON, max_size=3),
            max_size=2,
        ),
        "certificates": JSON,
    },
)


@FUZZ
@given(POLICY_SHAPES)
def test_any_policy_shaped_yaml_is_a_policy_or_a_located_policy_error(shape: object) -> None:
    try:
        text = yaml.safe_dump(shape)
    except yaml.YAMLError:
        return
    try:
        parse_policy(text, "fuzz.yaml")
    except PolicyError as error:
        assert str(error).startswith("fuzz.yaml")


VERIFIER = TokenVerifier(KeySet(secret=secrets.token_hex(32).encode()), "wsfleet")


@FUZZ
@given(
    st.one_of(
        st.text(max_size=120),
        st.lists(
            st.text(alphabet="ABCDEFabcdef0123456789-_", max_size=40), min_size=3, max_size=3
        ).map(".".join),
    )
)
def test_any_token_text_is_refused_with_an_auth_error(token: str) -> None:
    try:
        VERIFIER.verify(token)
    except AuthError as refused:
        assert refused.status in (401, 403) and refused.reason
    else:
        raise AssertionError("a random token was accepted")


@FUZZ
@given(st.binary(max_size=70_000), st.sampled_from([ws_frames.OP_TEXT, ws_frames.OP_BINARY]))
def test_every_server_frame_carries_its_payload_exactly(payload: bytes, opcode: int) -> None:
    frame = ws_frames.server_frame(opcode, payload)
    assert frame[0] == 0x80 | opcode and not frame[1] & 0x80  # final, unmasked
    size = frame[1] & 0x7F
    offset = 2
    if size == 126:
        (size,) = struct.unpack_from("!H", frame, 2)
        offset = 4
    elif size == 127:
        (size,) = struct.unpack_from("!Q", frame, 2)
        offset = 10
    assert frame[offset:] == payload and size == len(payload)


API_KEYS = st.sampled_from(
    [
        *("channel", "channels", "data", "data_b64", "user", "session", "code", "reason"),
        *("since", "limit", "x"),
    ]
)


@FUZZ
@given(
    st.sampled_from(sorted(METHODS)),
    st.one_of(JSON, st.dictionaries(API_KEYS, JSON, max_size=5)),
)
def test_any_server_api_body_is_a_call_or_a_refusal_naming_why(method: str, body: object) -> None:
    try:
        call = parse_call(method, body)
    except BadCall as refused:
        assert str(refused)
        return
    assert call is not None


@FUZZ
@given(st.binary(max_size=120), st.text(max_size=40).map(str.encode))
def test_any_topic_or_command_message_is_read_or_refused(raw: bytes, text: bytes) -> None:
    for message in (raw, b"p" + raw, b"p" + text + b"\n" + raw, text):
        with contextlib.suppress(BadMessage):  # read, or refused with BadMessage: no crash
            read_topic_message("room", message)
        with contextlib.suppress(BadMessage):
            read_command(message)
