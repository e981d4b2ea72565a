"""The CLIP tokenizer used by GLIDE's noised CLIP.

Behaves like glide-text2im's `glide_text2im.tokenizer.simple_tokenizer.
SimpleTokenizer`: the caption is repaired with `ftfy.fix_text`, HTML entities
are unescaped twice, whitespace runs collapse to one space, the text is
lowercased, split with CLIP's regex (digits one at a time) and byte-level BPE
is applied with a `</w>` marker on the last symbol of every word. A CLIP row is
`[start] + ids[:text_ctx - 2] + [end]` followed by zeros.
"""

from __future__ import annotations

import html
import pathlib
from typing import Sequence

import ftfy
import numpy as np
import regex

from glide_jax.text import base, byte_bpe

_START_TEXT = "<|startoftext|>"
_END_TEXT = "<|endoftext|>"
_WORD_END = "</w>"
# CLIP keeps the first 48894 merges of the file: its vocabulary is 49152 ids
# of symbols (256 bytes + 256 word-final bytes + merges) plus the 2 specials.
_NUM_MERGES = 49152 - 256 - 2
# Special tokens written literally in a caption are recognised as such; the
# flag mirrors CLIP (it only matters for characters such as U+017F that
# case-fold onto ASCII letters of the contractions).
_SPLIT = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def clean_text(text: str) -> str:
    """CLIP's caption cleaning: ftfy, double HTML unescape, whitespace, lowercase."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE.sub(" ", text).strip().lower()


class CLIPTokenizer:
    """CLIP BPE (49408 ids with the shipped merges).

    Args:
      merges: ranked merge pairs; the vocabulary is built from them.
    """

    def __init__(self, merges: Sequence[tuple[str, str]]):
        self._byte_to_char = byte_bpe.byte_to_unicode_table()
        self._char_to_byte = {c: b for b, c in self._byte_to_char.items()}
        chars = list(self._byte_to_char.values())
        symbols = chars + [c + _WORD_END for c in chars] + ["".join(pair) for pair in merges]
        symbols += [_START_TEXT, _END_TEXT]
        self._encoder = {s: i for i, s in enumerate(symbols)}
        self._decoder = dict(enumerate(symbols))
        self._merger = byte_bpe.BytePairMerger(merges)

    @classmethod
    def from_file(cls, merges_path: str | pathlib.Path) -> "CLIPTokenizer":
        """Loads a gzip-compressed CLIP merges file (bpe_simple_vocab_16e6.txt.gz)."""
        lines = byte_bpe.read_gzip_text(merges_path).split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
        bad = [i + 2 for i, pair in enumerate(merges) if len(pair) != 2]
        if bad or len(merges) != _NUM_MERGES:
            where = f"line {bad[0]} is not a pair of symbols" if bad else f"has {len(merges)} merges"
            raise ValueError(f"{merges_path}: {where}; expected {_NUM_MERGES} merge lines")
        return cls(merges)

    @classmethod
    def default(cls) -> "CLIPTokenizer":
        """The vocabulary shipped with glide-text2im (49408 ids)."""
        return cls.from_file(byte_bpe.vocab_file("bpe_simple_vocab_16e6.txt.gz"))

    @property
    def n_vocab(self) -> int:
        return len(self._encoder)

    @property
    def start_token(self) -> int:
        return self._encoder[_START_TEXT]

    @property
    def end_token(self) -> int:
        return self._encoder[_END_TEXT]

    @property
    def pad_token(self) -> int:
        """CLIP pads with id 0 (the attention length, not the id, hides padding)."""
        return 0

    def encode(self, text: str) -> list[int]:
        """Cleans `text` and returns its BPE ids, without start/end tokens."""
        ids: list[int] = []
        for piece in _SPLIT.findall(clean_text(base.check_text(text))):
            if piece in (_START_TEXT, _END_TEXT):
                ids.append(self._encoder[piece])
                continue
            chars = [self._byte_to_char[b] for b in piece.encode("utf-8")]
            chars[-1] += _WORD_END
            ids.extend(self._encoder[s] for s in self._merger(tuple(chars)))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; every word end becomes a space (so text ends with one)."""
        try:
            chars = "".join(self._decoder[int(i)] for i in ids)
        except KeyError as err:
            raise ValueError(f"token id {err.args[0]} is outside the vocabulary of {self.n_vocab}") from None
        raw = bytes(self._char_to_byte[c] for c in chars).decode("utf-8", errors="replace")
        return raw.replace(_WORD_END, " ")

    def capacity(self, text_ctx: int) -> int:
        return base.check_text_ctx(text_ctx, minimum=2) - 2

    def padded_tokens_and_len(self, ids: Sequence[int], text_ctx: int) -> tuple[np.ndarray, int]:
        """CLIP's row: start, the first `text_ctx - 2` ids, end, then zeros.

        Returns:
          tokens: (text_ctx,) int32.
          text_len: number of non-padding positions (ids kept + 2).
        """
        kept = list(ids)[: self.capacity(text_ctx)]
        row = [self.start_token, *kept, self.end_token]
        tokens = np.full((text_ctx,), self.pad_token, dtype=np.int32)
        tokens[: len(row)] = row
        return tokens, len(row)

    def padded_tokens_and_mask(self, ids: Sequence[int], text_ctx: int) -> tuple[np.ndarray, np.ndarray]:
        """The `padded_tokens_and_len` row with mask = position < text_len.

        The start and end tokens count as real tokens, so the mask marks
        exactly the positions CLIP's text encoder attends to.
        """
        tokens, text_len = self.padded_tokens_and_len(ids, text_ctx)
        return tokens, np.arange(tokens.shape[0]) < text_len
