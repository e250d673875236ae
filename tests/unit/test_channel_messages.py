"""A publication's topic message carries its publish time, and readers of either format
(with it, or an older publisher's without it) get the same publication."""

from __future__ import annotations

import time

import pytest

from sidecar.channel_hub import ChannelHub
from wsfleet.channels.memory_store import MemoryChannelStore
from wsfleet.channels.messages import (
    Publication,
    publication_message,
    publish_time_field,
    read_topic_message,
)
from wsfleet.channels.store import PublishRequest

PUBLISHED_AT = 1_700_000_000.123456


def test_the_publish_time_is_encoded_once_in_whole_microseconds() -> None:
    published_us = publish_time_field(PUBLISHED_AT)
    assert published_us == 1_700_000_000_123_456
    message = publication_message(3, "e1", b"hi", False, b'{"u":1}', published_us)
    assert message == b'p{"o":3,"e":"e1","b":0,"t":1700000000123456,"i":{"u":1}}\nhi'
    read = read_topic_message("news", message)
    assert read == Publication("news", 3, "e1", b"hi", False, b'{"u":1}')
    assert read.published_at == pytest.approx(PUBLISHED_AT, abs=1e-6)


def test_an_older_publishers_message_reads_as_before_with_no_publish_time() -> None:
    old = b'p{"o":3,"e":"e1","b":1}\n\x00\x01'
    assert publication_message(3, "e1", b"\x00\x01", True, b"") == old  # no time: old bytes
    read = read_topic_message("news", old)
    assert read == Publication("news", 3, "e1", b"\x00\x01", True)
    assert read.published_at == 0.0


@pytest.mark.parametrize("bad", [b'"soon"', b"-5", b"1.5", b"true", b"null", b"{}"])
def test_a_publish_time_that_is_not_whole_microseconds_is_ignored_not_the_publication(
    bad: bytes,
) -> None:
    read = read_topic_message("news", b'p{"o":1,"e":"e","b":0,"t":' + bad + b"}\nx")
    assert isinstance(read, Publication) and read.data == b"x"
    assert read.published_at == 0.0


async def test_the_store_sends_the_requests_publish_time_with_and_without_history() -> None:
    store = MemoryChannelStore()
    requests = [
        PublishRequest("news", b"a", False, b"", 10, 60.0, published_at=PUBLISHED_AT),
        PublishRequest("live", b"b", False, b"", 0, 60.0, published_at=PUBLISHED_AT),
    ]
    unstamped = PublishRequest("news", b"c", False, b"", 10, 60.0)  # no publish time
    await store.publish([*requests, unstamped])
    read = [read_topic_message(topic.rpartition(":")[2], m) for topic, m in store.sent]
    assert [(p.channel, p.offset) for p in read] == [("news", 1), ("live", 0), ("news", 2)]
    assert read[0].published_at == read[1].published_at == pytest.approx(PUBLISHED_AT, abs=1e-6)
    assert read[2].published_at == 0.0  # none on the wire: timed from the read


def _hub() -> tuple[ChannelHub, list[tuple[float, float]]]:
    hub = ChannelHub(None, str, "cmd", None, None, lambda: None, 60.0)  # type: ignore[arg-type]
    seen: list[tuple[float, float]] = []
    hub.on_delivered = lambda since_read, since_publish: seen.append((since_read, since_publish))
    return hub, seen


def test_a_delivered_batch_is_timed_from_its_read_and_from_its_publish() -> None:
    hub, seen = _hub()
    hub._delivered(time.monotonic() - 0.5, time.time() - 2.0)
    hub._delivered(time.monotonic() - 0.5, 0.0)  # no publish time: timed from the read
    hub._delivered(time.monotonic() - 0.5, time.time() + 60)  # the publisher's clock ahead
    (read_1, publish_1), (read_2, publish_2), (read_3, publish_3) = seen
    assert 0.5 <= read_1 < 1.5 and 2.0 <= publish_1 < 3.0
    assert 0.5 <= read_2 < 1.5 and publish_2 == read_2
    assert 0.5 <= read_3 < 1.5 and publish_3 == 0.0
