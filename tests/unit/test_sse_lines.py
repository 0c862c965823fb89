"""The SSE line splitter and the answer's byte budget: lines however the bytes are chunked, caps
that stop reading before memory grows."""

from __future__ import annotations

import pytest

from llmpool.errors import InvalidResponse, LineTooLong, ResponseTooLarge
from llmpool.sse_lines import ByteBudget, LineSplitter

STREAM = "data: {\"a\": \"héllo 世界 🙂\"}\r\n\r\n: keepalive\n\ndata: [DONE]\rtail".encode()
LINES = ['data: {"a": "héllo 世界 🙂"}', "", ": keepalive", "", "data: [DONE]", "tail"]


def split(chunks: list[bytes], max_line: int = 1024) -> list[str]:
    splitter = LineSplitter(max_line)
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    return lines + splitter.finish()


def test_whole_stream_in_one_chunk() -> None:
    assert split([STREAM]) == LINES


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_every_place_a_chunk_can_end_gives_the_same_lines(cut: int) -> None:
    # This covers a CRLF split between chunks and every multi-byte character split in the middle.
    assert split([STREAM[:cut], STREAM[cut:]]) == LINES


def test_one_byte_at_a_time() -> None:
    assert split([STREAM[i:i + 1] for i in range(len(STREAM))]) == LINES


@pytest.mark.parametrize(("data", "lines"), [
    (b"a\nb\n", ["a", "b"]),
    (b"a\r\nb\r\n", ["a", "b"]),
    (b"a\rb\r", ["a", "b"]),
    (b"a\r\rb", ["a", "", "b"]),  # two CRs are two line ends
    (b"\n\n", ["", ""]),
    (b"", []),
])
def test_line_ends(data: bytes, lines: list[str]) -> None:
    assert split([data]) == lines
    assert split([data[i:i + 1] for i in range(len(data))]) == lines


def test_a_cr_chunk_then_a_cr_chunk_are_two_line_ends() -> None:
    assert split([b"a\r", b"\r", b"b\n"]) == ["a", "", "b"]


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert split([b"data: \xff\xfe ok\n"]) == ["data: \ufffd\ufffd ok"]


def test_a_line_of_exactly_the_cap_passes_one_byte_more_does_not() -> None:
    assert split([b"x" * 16 + b"\n"], max_line=16) == ["x" * 16]
    with pytest.raises(LineTooLong):
        split([b"x" * 17 + b"\n"], max_line=16)


def test_an_endless_line_stops_at_the_cap_whatever_the_chunks() -> None:
    splitter = LineSplitter(max_line=1000)
    fed = 0
    with pytest.raises(LineTooLong) as caught:
        while fed < 10_000_000:
            splitter.feed(b"y" * 300)
            fed += 300
    assert fed < 1000  # raised at the chunk that crossed the cap, not after the whole stream
    assert caught.value.details == {"limit": 1000}
    assert isinstance(caught.value, ResponseTooLarge) and isinstance(caught.value, InvalidResponse)


def test_many_short_lines_never_trip_the_line_cap() -> None:
    assert len(split([b"data: x\n\n" * 10_000], max_line=16)) == 20_000


def test_byte_budget() -> None:
    budget = ByteBudget(100)
    budget.spend(60)
    budget.spend(40)  # exactly the limit is allowed
    with pytest.raises(ResponseTooLarge) as caught:
        budget.spend(1)
    assert caught.value.code == "response_too_large" and caught.value.details == {"limit": 100}
