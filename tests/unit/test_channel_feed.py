"""A channel's publications on one gateway come out in offset order, each once; gaps are
filled from the history or end in a reset; a subscriber recovers exactly what it missed."""

from __future__ import annotations

from sidecar.core.channel_feed import ChannelFeed, Fetch, recover
from sidecar.core.channel_frames import Since
from wsfleet.channels.messages import Publication
from wsfleet.channels.store import History, Position


def pub(offset: int, epoch: str = "e1", channel: str = "room") -> Publication:
    return Publication(channel, offset, epoch, b"%d" % offset, False)


def offsets(publications: list[Publication]) -> list[int]:
    return [p.offset for p in publications]


def history(top: int, after: int, epoch: str = "e1", first: int | None = None) -> History:
    start = max(after + 1, first or 1)
    return History(Position(epoch, top), [pub(n, epoch) for n in range(start, top + 1)])


def test_publications_in_order_pass_and_duplicates_are_dropped() -> None:
    feed = ChannelFeed()
    assert offsets(feed.live(pub(5)).deliver) == [5]  # the first one sets where it stands
    assert offsets(feed.live(pub(6)).deliver) == [6]
    assert feed.live(pub(6)).deliver == [] and feed.live(pub(4)).deliver == []
    assert offsets(feed.live(pub(7)).deliver) == [7]


def test_a_gap_holds_what_follows_until_the_history_fills_it() -> None:
    feed = ChannelFeed()
    feed.adopt(Position("e1", 10))
    step = feed.live(pub(13))
    assert step.deliver == [] and step.fetch == Fetch(10)
    assert feed.live(pub(14)).deliver == []  # held behind the gap
    filled = feed.fetched(history(top=13, after=10))
    assert offsets(filled.deliver) == [11, 12, 13, 14] and not filled.reset
    assert offsets(feed.live(pub(15)).deliver) == [15]


def test_a_gap_the_history_no_longer_covers_resets_the_subscribers() -> None:
    feed = ChannelFeed()
    feed.adopt(Position("e1", 10))
    feed.live(pub(20))
    step = feed.fetched(history(top=20, after=10, first=15))  # trimmed: 11-14 are gone
    assert step.reset and step.deliver == []
    assert feed.last == 20  # and goes on from the newest
    assert offsets(feed.live(pub(21)).deliver) == [21]


def test_an_unreadable_store_during_a_gap_resets() -> None:
    feed = ChannelFeed()
    feed.adopt(Position("e1", 1))
    feed.live(pub(3))
    assert feed.fetched(None).reset
    assert offsets(feed.live(pub(4)).deliver) == [4]


def test_a_new_epoch_resets_and_goes_on_in_it() -> None:
    feed = ChannelFeed()
    feed.adopt(Position("e1", 7))
    assert feed.live(pub(1, epoch="e2")).reset
    assert offsets(feed.live(pub(2, epoch="e2")).deliver) == [2]


def test_a_periodic_check_delivers_what_was_lost_with_nothing_after_it() -> None:
    feed = ChannelFeed()
    assert feed.check() is None  # nothing known yet
    feed.adopt(Position("e1", 3))
    assert feed.check() == Fetch(3)
    assert feed.check() is None  # one read at a time
    assert offsets(feed.fetched(history(top=5, after=3)).deliver) == [4, 5]
    assert feed.check() == Fetch(5)
    assert feed.fetched(history(top=5, after=5)).deliver == []


def test_publications_of_a_channel_without_history_pass_as_they_come() -> None:
    feed = ChannelFeed()
    live = Publication("news", 0, "", b"x", False)
    assert feed.live(live).deliver == [live] and feed.live(live).deliver == [live]


def test_recovery_gives_the_missed_history_then_what_arrived_after_the_read() -> None:
    read = history(top=12, after=9)
    arrived = [pub(11), pub(12), pub(13), pub(14)]  # some of it is also in the history
    result = recover(Since(9, "e1"), read, arrived, recoverable=True)
    assert result.recovered and result.missed == 3
    assert result.position == Position("e1", 9)
    assert offsets(result.publications) == [10, 11, 12, 13, 14]


def test_recovery_from_another_epoch_or_too_far_back_says_so_and_goes_on_live() -> None:
    arrived = [pub(13)]
    for since in (Since(9, "e0"), Since(2, "e1"), Since(99, "e1")):
        read = history(top=12, after=since.offset, first=5)
        result = recover(since, read, arrived, recoverable=True)
        assert not result.recovered and result.missed == 0
        assert result.position == Position("e1", 12)
        assert offsets(result.publications) == [13]


def test_a_subscribe_without_a_position_starts_at_the_top() -> None:
    result = recover(None, History(Position("e1", 40), []), [pub(40), pub(41)], True)
    assert result.position == Position("e1", 40) and not result.recovered
    assert offsets(result.publications) == [41]


def test_a_channel_without_history_recovers_nothing_and_passes_what_arrived() -> None:
    live = Publication("news", 0, "", b"x", False)
    result = recover(Since(3, "e1"), History(Position("", 0), []), [live], recoverable=False)
    assert not result.recovered and result.publications == [live]
