"""GLIDE's caption tokenizer: GPT-2 byte-level BPE on lowercased text.

Behaves like glide-text2im's `glide_text2im.tokenizer.bpe.Encoder` built by
`get_encoder()`: the whole caption is lowercased, split with GPT-2's regex,
each piece is byte-encoded and merged with the GPT-2 merge list. There are no
start or end tokens; padding uses the end-of-text id (50256 for the shipped
vocabulary, i.e. `n_vocab - 1`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Mapping, Sequence

import numpy as np
import regex

from glide_jax.text import base, byte_bpe

# GPT-2's pre-tokenizer: English contractions, runs of letters, of digits or of
# other symbols (each optionally preceded by one space), and whitespace, where
# trailing whitespace before a non-space is left for the next piece's space.
_SPLIT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


class GPT2Tokenizer:
    """GPT-2 BPE as used by GLIDE's text transformer.

    Args:
      encoder: symbol string -> id (the contents of encoder.json).
      merges: ranked merge pairs (the lines of vocab.bpe after its header).
    """

    def __init__(self, encoder: Mapping[str, int], merges: Sequence[tuple[str, str]]):
        self._encoder = dict(encoder)
        self._decoder = {i: s for s, i in self._encoder.items()}
        self._merger = byte_bpe.BytePairMerger(merges)
        self._byte_to_char = byte_bpe.byte_to_unicode_table()
        self._char_to_byte = {c: b for b, c in self._byte_to_char.items()}

    @classmethod
    def from_files(cls, encoder_path: str | pathlib.Path, merges_path: str | pathlib.Path) -> "GPT2Tokenizer":
        """Loads gzip-compressed encoder.json and vocab.bpe files."""
        encoder = json.loads(byte_bpe.read_gzip_text(encoder_path))
        lines = byte_bpe.read_gzip_text(merges_path).split("\n")
        # Line 0 is the "#version" header and the text ends with a newline,
        # so the merges are every line between the first and the last.
        merges = [tuple(line.split()) for line in lines[1:-1]]
        bad = [i + 2 for i, pair in enumerate(merges) if len(pair) != 2]
        if bad:
            raise ValueError(f"{merges_path}: line {bad[0]} is not a pair of symbols")
        return cls(encoder, merges)

    @classmethod
    def default(cls) -> "GPT2Tokenizer":
        """The vocabulary shipped with glide-text2im (50257 ids)."""
        return cls.from_files(byte_bpe.vocab_file("encoder.json.gz"), byte_bpe.vocab_file("vocab.bpe.gz"))

    @property
    def n_vocab(self) -> int:
        return len(self._encoder)

    @property
    def end_token(self) -> int:
        """End-of-text id; GLIDE uses it for padding and never emits it."""
        return self.n_vocab - 1

    @property
    def pad_token(self) -> int:
        return self.end_token

    def encode(self, text: str) -> list[int]:
        """Lowercases `text` and returns its BPE ids (no special tokens)."""
        ids: list[int] = []
        for piece in _SPLIT.findall(base.check_text(text).lower()):
            symbols = tuple(self._byte_to_char[b] for b in piece.encode("utf-8"))
            ids.extend(self._encoder[s] for s in self._merger(symbols))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; invalid UTF-8 byte sequences become U+FFFD."""
        try:
            chars = "".join(self._decoder[int(i)] for i in ids)
        except KeyError as err:
            raise ValueError(f"token id {err.args[0]} is outside the vocabulary of {self.n_vocab}") from None
        return bytes(self._char_to_byte[c] for c in chars).decode("utf-8", errors="replace")

    def capacity(self, text_ctx: int) -> int:
        return base.check_text_ctx(text_ctx)

    def padded_tokens_and_mask(self, ids: Sequence[int], text_ctx: int) -> tuple[np.ndarray, np.ndarray]:
        """Truncates to `text_ctx` and pads with `pad_token`.

        Returns:
          tokens: (text_ctx,) int32; mask: (text_ctx,) bool, True on caption ids.
        """
        return base.pad_and_mask(ids, text_ctx, self.pad_token)
