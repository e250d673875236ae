"""permessage-deflate (RFC 7692): which offer is agreed and how it is answered; messages
compressed as the client inflates them, with or without context takeover; the inflater's
bound."""

from __future__ import annotations

import zlib

import pytest

from sidecar.core.ws_deflate import Deflate, DeflateTerms, agree


@pytest.mark.parametrize(
    ("offers", "answer"),
    [
        ("permessage-deflate; client_max_window_bits", "permessage-deflate"),  # Chromium's
        ("permessage-deflate", "permessage-deflate"),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
        ),
        # 8 bits is not a raw deflate window zlib makes: the next offer is taken
        ("permessage-deflate; server_max_window_bits=8, permessage-deflate", "permessage-deflate"),
        ('permessage-deflate; client_max_window_bits="12"', "permessage-deflate"),
        ("x-webkit-deflate-frame, permessage-deflate", "permessage-deflate"),
    ],
)
def test_the_first_offer_it_can_honour_is_agreed_and_answered(offers: str, answer: str) -> None:
    terms = agree(offers)
    assert terms is not None and terms.header() == answer


@pytest.mark.parametrize(
    "offers",
    [
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; mystery",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover=1",
    ],
)
def test_an_offer_it_cannot_honour_means_no_compression(offers: str) -> None:
    assert agree(offers) is None


def _inflate(payloads: list[bytes], takeover: bool) -> list[bytes]:
    """What a client makes of the gateway's compressed payloads."""
    out, inflater = [], zlib.decompressobj(wbits=-15)
    for payload in payloads:
        if not takeover:
            inflater = zlib.decompressobj(wbits=-15)
        out.append(inflater.decompress(payload + b"\x00\x00\xff\xff"))
    return out


@pytest.mark.parametrize("takeover", [True, False])
def test_compressed_messages_inflate_to_themselves_on_the_clients_side(takeover: bool) -> None:
    deflate = Deflate(DeflateTerms(server_takeover=takeover))
    messages = [b"hello world " * 20, b"", b"hello world " * 20, bytes(range(256))]
    payloads = [deflate.compress(message) for message in messages]
    assert _inflate(payloads, takeover) == messages
    # the context kept: the repeat costs a few bytes; without it, as much as the first time
    assert (len(payloads[2]) < len(payloads[0])) is takeover


def test_the_inflater_stops_at_its_bound_and_refuses_what_is_not_deflate() -> None:
    compressor = zlib.compressobj(wbits=-15)
    big = compressor.compress(bytes(10_001)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    deflate = Deflate(DeflateTerms())
    assert deflate.decompress(big[:-4], 10_000) is None
    assert Deflate(DeflateTerms()).decompress(big[:-4], 10_001) == bytes(10_001)
    with pytest.raises(ValueError, match="not deflate data"):
        Deflate(DeflateTerms()).decompress(b"\xff\xff\xff\xff", 100)
