"""Byte-level byte-pair encoding shared by the GPT-2 and CLIP tokenizers.

Both tokenizers of glide-text2im work the same way underneath: text is split
into words by a regex, every word is turned into UTF-8 bytes, every byte is
shown as one printable unicode character (so the vocabulary files are plain
text), and the characters of a word are merged pairwise following a ranked
list of merges. This module holds those shared pieces; the tokenizers differ
only in text cleaning, the split regex, the word-end marker and special tokens.
"""

from __future__ import annotations

import gzip
import importlib.resources
import pathlib
from typing import Sequence

# Bytes that are printable characters of their own in Latin-1 keep their code
# point; every other byte is moved above 255 so the vocabulary never contains
# whitespace or control characters. The ranges are the ones GPT-2 uses.
_PRINTABLE_RANGES = ((ord("!"), ord("~")), (ord("¡"), ord("¬")), (ord("®"), ord("ÿ")))

# The BPE word cache is cleared when it reaches this many entries, which
# bounds memory when a tokenizer streams a large caption set.
_CACHE_LIMIT = 1 << 17


def byte_to_unicode_table() -> dict[int, str]:
    """Maps each byte value 0..255 to the character that stands for it.

    The insertion order matters: CLIP builds its vocabulary from the table's
    values in this order (printable bytes first, then the remapped ones).

    Returns:
      A new dict with 256 entries, byte -> one-character string.
    """
    printable = [b for lo, hi in _PRINTABLE_RANGES for b in range(lo, hi + 1)]
    table = {b: chr(b) for b in printable}
    shifted = 256
    for b in range(256):
        if b not in table:
            table[b] = chr(shifted)
            shifted += 1
    return table


def vocab_file(name: str) -> pathlib.Path:
    """Path of a vocabulary file shipped in glide_jax/text/vocab."""
    path = importlib.resources.files("glide_jax.text").joinpath("vocab", name)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary file glide_jax/text/vocab/{name} is missing "
                                "from the installed package")
    return pathlib.Path(str(path))


def read_gzip_text(path: str | pathlib.Path) -> str:
    """Reads a gzip-compressed UTF-8 text file."""
    with gzip.open(path, "rb") as f:
        return f.read().decode("utf-8")


class BytePairMerger:
    """Applies ranked pair merges to the symbols of one word.

    At each step the adjacent pair with the lowest rank is found and every
    non-overlapping occurrence of it is merged, scanning left to right, until
    no adjacent pair has a rank. Results are cached per instance.

    Args:
      merges: the merge list, best first; each entry is a pair of symbols.
    """

    def __init__(self, merges: Sequence[tuple[str, str]]):
        self._ranks = {tuple(pair): rank for rank, pair in enumerate(merges)}
        self._cache: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __call__(self, symbols: tuple[str, ...]) -> tuple[str, ...]:
        """Merges a word given as a tuple of symbols; returns the merged tuple."""
        cached = self._cache.get(symbols)
        if cached is None:
            cached = self._merge(symbols)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[symbols] = cached
        return cached

    def _best_pair(self, symbols: list[str]) -> tuple[str, str] | None:
        best, best_rank = None, None
        for pair in zip(symbols, symbols[1:]):
            rank = self._ranks.get(pair)
            if rank is not None and (best_rank is None or rank < best_rank):
                best, best_rank = pair, rank
        return best

    def _merge(self, symbols: tuple[str, ...]) -> tuple[str, ...]:
        word = list(symbols)
        while len(word) > 1:
            pair = self._best_pair(word)
            if pair is None:
                break
            first, second = pair
            merged, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return tuple(word)
