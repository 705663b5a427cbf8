from wasi_nn_backend.core.text import TextAssembler


def feed_all(assembler, pieces):
    return [assembler.feed(p) for p in pieces] + [assembler.finish()]


def test_plain_text_passes_through():
    a = TextAssembler()
    assert "".join(feed_all(a, [b"Hel", b"lo", b" world"])) == "Hello world"
    assert a.text == "Hello world" and a.stopped_by is None


def test_utf8_is_never_split():
    data = "héllo 世界 🎉".encode()
    a = TextAssembler()
    shown = [a.feed(data[i:i + 1]) for i in range(len(data))]
    for piece in shown:  # every piece handed out is whole characters
        piece.encode("utf-8")
        assert "\ufffd" not in piece
    assert "".join(shown) + a.finish() == "héllo 世界 🎉"


def test_stop_string_cut_and_not_shown():
    a = TextAssembler(stop=("END",))
    out = feed_all(a, [b"abc E", b"N", b"D more"])
    assert "".join(out) == "abc "
    assert a.stopped_by == "END"
    assert a.text == "abc "


def test_partial_stop_is_held_back_then_released():
    a = TextAssembler(stop=("END",))
    assert a.feed(b"abc EN") == "abc "   # "EN" may begin "END"
    assert a.feed(b"X") == "ENX"          # it did not
    assert a.finish() == ""
    assert a.text == "abc ENX"


def test_earliest_stop_in_text_wins_not_list_order():
    a = TextAssembler(stop=("zzz", "b"))
    out = feed_all(a, [b"a", b"b", b"zzz"])
    assert "".join(out) == "a" and a.stopped_by == "b"


def test_streamed_pieces_never_show_a_completed_stop_prefix():
    stop = "<|end|>"
    a = TextAssembler(stop=(stop,))
    text = "hello <|end|> after"
    shown = [a.feed(ch.encode()) for ch in text]
    assert "".join(shown) == "hello "
    assert all("<" not in piece for piece in shown)


def test_held_text_released_at_finish_when_no_stop():
    a = TextAssembler(stop=("STOP",))
    assert a.feed(b"go ST") == "go "
    assert a.finish() == "ST"


def test_invalid_utf8_is_replaced_not_raised():
    a = TextAssembler()
    assert a.feed(b"\xff") == "\ufffd"


def test_pieces_cut_anywhere_give_what_one_incremental_decoder_gives():
    """Whole-character pieces take a shortcut past the incremental decoder; around split or
    invalid bytes the decoder takes over. Either way the text equals one decoder's."""
    import codecs
    import random
    data = "héllo 世界 🎉 ok".encode() + b"\xff\xc3(" + "fin é".encode() + b"\xe4\xb8"
    rng = random.Random(7)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 12)))
        pieces = [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]
        reference = codecs.getincrementaldecoder("utf-8")(errors="replace")
        expected = "".join(reference.decode(p) for p in pieces) + reference.decode(b"", True)
        for stop in ((), ("zzz",)):
            assert "".join(feed_all(TextAssembler(stop=stop), pieces)) == expected
