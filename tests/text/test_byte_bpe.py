"""Byte table and the pair-merge loop shared by the BPE tokenizers."""

import pytest

from glide_jax.text import byte_bpe


def test_byte_table_is_a_printable_bijection():
    table = byte_bpe.byte_to_unicode_table()
    assert sorted(table) == list(range(256))
    chars = list(table.values())
    assert len(set(chars)) == 256
    assert all(c.isprintable() and not c.isspace() for c in chars)
    assert table[ord("a")] == "a" and table[ord("!")] == "!"
    # Non-printable bytes move above 255 in byte order: space (32) -> chr(288).
    assert table[ord(" ")] == "Ġ"
    # Insertion order: printable bytes first, in increasing order (CLIP relies on it).
    assert list(table)[:3] == [ord("!"), ord('"'), ord("#")]
    assert list(table)[188] == 0 and table[0] == chr(256)


def test_merger_lowest_rank_first_and_greedy_left_to_right():
    merger = byte_bpe.BytePairMerger([("b", "c"), ("a", "b"), ("a", "bc"), ("x", "x")])
    # (b, c) outranks (a, b), so "abc" becomes a|bc, then a+bc.
    assert merger(("a", "b", "c")) == ("abc",)
    # Overlapping occurrences of a pair merge greedily from the left.
    assert merger(("x", "x", "x")) == ("xx", "x")
    assert merger(("x", "x", "x", "x")) == ("xx", "xx")
    # Unknown pairs stop merging.
    assert merger(("c", "b", "a")) == ("c", "b", "a")
    assert merger(("q",)) == ("q",)


def test_merger_cache_is_per_instance():
    one = byte_bpe.BytePairMerger([("a", "b")])
    other = byte_bpe.BytePairMerger([("b", "c")])
    assert one(("a", "b", "c")) == ("ab", "c")
    assert other(("a", "b", "c")) == ("a", "bc")
    assert one(("a", "b", "c")) == ("ab", "c")


def test_missing_vocab_file_is_named():
    with pytest.raises(FileNotFoundError, match="nope.gz"):
        byte_bpe.vocab_file("nope.gz")
