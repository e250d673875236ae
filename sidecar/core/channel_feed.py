"""The order of a channel's publications on one gateway, and a subscriber's recovery, with
no I/O.

:class:`ChannelFeed` takes publications as the gateway's pub/sub connection hands them
over and gives them out in offset order, once each. A publication that skips offsets (one
Redis dropped, or sent while the connection was being made again) is held while the
missing ones are read from the history (:class:`Fetch`); if the history no longer has
them, or the channel's epoch changed, the feed says so (``reset``) and its subscribers are
told to subscribe again, which tells them that they could not recover.

:func:`recover` decides what a subscribing session gets: the history it missed (when it
gave its position), then what arrived live while the history was being read, each
publication once, contiguous from the position its ``subscribed`` frame names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sidecar.core.channel_frames import Since
from wsfleet.channels.messages import Publication
from wsfleet.channels.store import History, Position


@dataclass(frozen=True, slots=True)
class Fetch:
    """Read the channel's history after ``after`` (what the feed has given out so far)."""

    after: int


@dataclass(slots=True)
class FeedStep:
    """What to do after one event: give these publications out, in order; maybe read the
    history (``fetch``); or tell every subscriber to subscribe again (``reset``)."""

    deliver: list[Publication] = field(default_factory=list)
    fetch: Fetch | None = None
    reset: bool = False


class ChannelFeed:
    """One channel's publications on this gateway, in offset order, each once."""

    __slots__ = ("_held", "epoch", "fetching", "last")

    def __init__(self) -> None:
        self.epoch = ""
        self.last: int | None = None  # the last offset given out (None: nothing yet)
        self.fetching = False
        self._held: list[Publication] = []

    def adopt(self, position: Position) -> None:
        """A position read from the store (a subscribe): the feed's starting point, if it
        has none yet."""
        if self.last is None and position.epoch:
            self.epoch, self.last = position.epoch, position.offset

    def live(self, publication: Publication) -> FeedStep:
        """A publication from the channel's topic."""
        if publication.offset == 0:  # a channel without history: no order to keep
            return FeedStep([publication])
        if self.fetching:
            self._held.append(publication)
            return FeedStep()
        if self.last is None:
            self.epoch, self.last = publication.epoch, publication.offset
            return FeedStep([publication])
        if publication.epoch != self.epoch:
            self.epoch, self.last = publication.epoch, publication.offset
            return FeedStep(reset=True)
        if publication.offset <= self.last:
            return FeedStep()  # had it (from the history, or twice on the topic)
        if publication.offset == self.last + 1:
            self.last = publication.offset
            return FeedStep([publication])
        self.fetching = True
        self._held = [publication]
        return FeedStep(fetch=Fetch(self.last))

    def check(self) -> Fetch | None:
        """A periodic look at the store (a loss with nothing after it shows no gap): what to
        read, or None when a read is under way or nothing was given out yet."""
        if self.fetching or self.last is None or not self.epoch:
            return None
        self.fetching = True
        return Fetch(self.last)

    def fetched(self, history: History | None) -> FeedStep:
        """The history read for a :class:`Fetch` (None: the store could not be read)."""
        self.fetching = False
        held, self._held = self._held, []
        last = self.last
        if last is None:  # not reached: fetches start from a known offset
            return FeedStep(held)
        if history is None or history.position.epoch != self.epoch:
            return self._reset(history, held)
        step = FeedStep()
        for publication in [*history.publications, *held]:
            if publication.epoch != self.epoch or publication.offset <= last:
                continue
            if publication.offset != last + 1:
                return self._reset(history, held)
            step.deliver.append(publication)
            last = publication.offset
        self.last = last
        return step

    def _reset(self, history: History | None, held: list[Publication]) -> FeedStep:
        """Start afresh after the newest publication known: subscribers resubscribe."""
        newest = [p for p in held if p.offset]
        if history is not None and history.position.epoch:
            self.epoch, self.last = history.position.epoch, history.position.offset
        if newest and newest[-1].epoch == self.epoch:
            self.last = max(self.last or 0, newest[-1].offset)
        return FeedStep(reset=True)


@dataclass(frozen=True, slots=True)
class Recovery:
    """What a subscribing session is told and sent: the position its ``subscribed`` frame
    names, whether it recovered what it asked for, and the publications that follow
    (contiguous from that position)."""

    position: Position
    recovered: bool
    missed: int
    publications: list[Publication]


def recover(
    since: Since | None,
    history: History,
    arrived: list[Publication],
    recoverable: bool,
) -> Recovery:
    """``history``: read after the session registered for the channel's live publications
    (with ``since``: the publications after ``since.offset``); ``arrived``: what the feed
    gave out since it registered, in order."""
    if not recoverable:
        return Recovery(history.position, False, 0, list(arrived))
    top = history.position
    recovered = (
        since is not None and since.epoch == top.epoch and history.reaches_back_to(since.offset)
    )
    missed = list(history.publications) if recovered else []
    after_top = [p for p in arrived if p.epoch == top.epoch and p.offset > top.offset]
    position = Position(top.epoch, since.offset) if recovered and since else top
    return Recovery(position, recovered, len(missed), [*missed, *after_top])


__all__ = ["ChannelFeed", "FeedStep", "Fetch", "Recovery", "recover"]
