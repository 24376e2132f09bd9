from __future__ import annotations

from lokal.engines.textstream import TextStream


def test_utf8_split_across_tokens_is_held_until_complete() -> None:
    s = TextStream()
    data = "héllo €".encode()
    out = "".join(s.feed(data[i : i + 1]) for i in range(len(data))) + s.flush()
    assert out == "héllo €"


def test_stop_string_across_tokens_is_never_emitted() -> None:
    s = TextStream(["STOP"])
    emitted = [s.feed(p.encode()) for p in ["abc S", "T", "O", "Pxyz"]]
    assert "".join(emitted) == "abc "
    assert s.stopped
    assert s.feed(b"more") == ""


def test_partial_stop_prefix_is_released_when_it_diverges() -> None:
    s = TextStream(["STOP"])
    assert s.feed(b"ab ST") == "ab "
    assert s.feed(b"AR") == "STAR"
    assert not s.stopped
    assert s.flush() == ""


def test_earliest_of_several_stops_wins() -> None:
    s = TextStream(["zz", "b"])
    assert s.feed(b"aabzz") == "aa"
    assert s.text == "aa"
