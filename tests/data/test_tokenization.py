"""Word tokenizer: normalisation keeps apostrophes and digits; rare words map to <unk>."""

from __future__ import annotations

import pytest

from dialoglab.data.tokenization import WordTokenizer


def test_normalisation_keeps_apostrophes_digits_and_punctuation() -> None:
    tok = WordTokenizer()
    assert tok.split("I'm NOT going, am I? It's 2 o'clock!") == [
        "i'm", "not", "going", ",", "am", "i", "?", "it's", "2", "o'clock", "!",
    ]  # fmt: skip
    assert tok.split("Café — naïve") == ["cafe", "naive"]
    assert WordTokenizer(lowercase=False).split("Hello") == ["Hello"]
    assert WordTokenizer(keep_punctuation=False).split("hi, you!") == ["hi", "you"]


def test_min_count_and_unknown_words() -> None:
    tok = WordTokenizer(min_count=2).fit(["the cat sat", "the dog sat", "a zebra"])
    assert "the" in tok.stoi and "sat" in tok.stoi
    assert "zebra" not in tok.stoi
    ids = tok.encode("the zebra sat")
    assert ids[1] == tok.unk_id and len(ids) == 3
    assert tok.decode(ids) == "the <unk> sat"


def test_decode_stops_at_eos_and_skips_padding() -> None:
    tok = WordTokenizer().fit(["hello there ."])
    ids = [tok.sos_id, *tok.encode("hello there ."), tok.eos_id, *tok.encode("hello"), tok.pad_id]
    assert tok.decode(ids) == "hello there."


def test_state_round_trip_and_fingerprint() -> None:
    tok = WordTokenizer(min_count=1).fit(["b a a", "c"])
    clone = WordTokenizer().load_state_dict(tok.state_dict())
    assert clone.itos == tok.itos and clone.fingerprint() == tok.fingerprint()
    assert clone.encode("a b c d") == tok.encode("a b c d")
    assert tok.itos[5] == "a"  # most frequent word first, after the specials


def test_context_turns_are_separated() -> None:
    tok = WordTokenizer().fit(["hi", "hello you"])
    ids = tok.encode_context(["persona line"], ["hi", "hello you"])
    assert ids.count(tok.sep_id) == 2


def test_invalid_min_count() -> None:
    with pytest.raises(ValueError, match="min_count"):
        WordTokenizer(min_count=0)
