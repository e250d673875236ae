"""permessage-deflate (RFC 7692): the terms agreed in the handshake, and each
connection's compressor and decompressor.

The gateway accepts the first offer it can honour: ``server_no_context_takeover`` (a fresh
compressor per message), ``client_no_context_takeover`` (acknowledged: the client's hint),
``server_max_window_bits`` 9-15 (zlib's raw deflate has no 8-bit window: an offer that
asks for 8 is declined, the next one is tried) and ``client_max_window_bits`` (the inflater
takes any window, so no value is asked of the client). An offer with anything else, or a
parameter twice, is declined; no acceptable offer means no compression, never a refusal.

Both zlib objects are made at first use: a connection that never sends or receives a
compressed message holds neither (a compressor takes ~256 KiB, an inflater ~40 KiB).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

EXTENSION = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"  # what RFC 7692 section 7.2.1 strips from each message
_MAX_BITS = 15


@dataclass(frozen=True, slots=True)
class DeflateTerms:
    """What both sides agreed on: the compressor's window, whether each side keeps its
    context from one message to the next."""

    server_window_bits: int = _MAX_BITS
    server_takeover: bool = True
    client_takeover: bool = True

    def header(self) -> str:
        """The ``Sec-WebSocket-Extensions`` value of the 101."""
        parts = [EXTENSION]
        if not self.server_takeover:
            parts.append("server_no_context_takeover")
        if not self.client_takeover:
            parts.append("client_no_context_takeover")
        if self.server_window_bits != _MAX_BITS:
            parts.append(f"server_max_window_bits={self.server_window_bits}")
        return "; ".join(parts)


def agree(offers: str) -> DeflateTerms | None:
    """The terms of the first permessage-deflate offer in a ``Sec-WebSocket-Extensions``
    header that the gateway can honour; None when there is none."""
    for offer in offers.split(","):
        name, *params = (part.strip() for part in offer.split(";"))
        if name.lower() == EXTENSION:
            terms = _terms(params)
            if terms is not None:
                return terms
    return None


def _terms(params: list[str]) -> DeflateTerms | None:
    seen: set[str] = set()
    window, server_takeover, client_takeover = _MAX_BITS, True, True
    for param in params:
        key, _, value = (side.strip().strip('"') for side in param.partition("="))
        key = key.lower()
        if key in seen:
            return None
        seen.add(key)
        if key == "server_no_context_takeover" and not value:
            server_takeover = False
        elif key == "client_no_context_takeover" and not value:
            client_takeover = False
        elif key == "server_max_window_bits":
            if not value.isdigit() or not 9 <= int(value) <= _MAX_BITS:
                return None
            window = int(value)
        elif key == "client_max_window_bits":
            if value and (not value.isdigit() or not 8 <= int(value) <= _MAX_BITS):
                return None
        else:
            return None
    return DeflateTerms(window, server_takeover, client_takeover)


class Deflate:
    """One connection's permessage-deflate, on the agreed terms."""

    __slots__ = ("_compressor", "_decompressor", "_terms")

    def __init__(self, terms: DeflateTerms) -> None:
        self._terms = terms
        self._compressor: zlib._Compress | None = None
        self._decompressor: zlib._Decompress | None = None

    def compress(self, message: bytes) -> bytes:
        """A message's compressed payload (the frame then carries RSV1)."""
        compressor = self._compressor
        if compressor is None:
            compressor = zlib.compressobj(wbits=-self._terms.server_window_bits)
            if self._terms.server_takeover:
                self._compressor = compressor
        payload = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return payload[:-4] if payload.endswith(_TAIL) else payload

    def decompress(self, payload: bytes, limit: int) -> bytes | None:
        """A compressed message inflated; None when it would exceed ``limit`` bytes.
        Raises ``ValueError`` when it is not deflate data."""
        decompressor = self._decompressor
        if decompressor is None:
            decompressor = zlib.decompressobj(wbits=-_MAX_BITS)
            if self._terms.client_takeover:
                self._decompressor = decompressor
        try:
            message = decompressor.decompress(payload + _TAIL, limit + 1)
        except zlib.error as error:
            raise ValueError(f"not deflate data: {error}") from None
        if len(message) > limit or decompressor.unconsumed_tail:
            self._decompressor = None  # its state is mid-message: a next one starts afresh
            return None
        return message
