"""A SentencePiece tokenizer for models trained from scratch on new captions.

GLIDE itself uses GPT-2 BPE; a SentencePiece vocabulary fitted to a dataset's
captions is an option for training new models. Models trained here reserve
id 0 for padding ("<pad>") and id 1 for unknown pieces ("<unk>"), and have no
start or end tokens, so rows look like GLIDE's: caption ids, then padding,
with the mask True on the caption ids.
"""

from __future__ import annotations

import io
import itertools
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np
import sentencepiece

from glide_jax.text import base

PAD_ID = 0  # id of "<pad>" in models trained by `train_sentencepiece`
UNK_ID = 1  # id of "<unk>"
MODEL_TYPES = ("unigram", "bpe", "char", "word")


class SentencePieceTokenizer:
    """Wraps a trained SentencePiece `.model` file.

    Args:
      model_path: the `.model` file; it must define a pad piece (models
        written by `train_sentencepiece` use id 0).
    """

    def __init__(self, model_path: str | os.PathLike):
        path = pathlib.Path(model_path)
        if not path.is_file():
            raise FileNotFoundError(f"SentencePiece model {path} does not exist "
                                    "(train one with python -m glide_jax.text.train_tokenizer)")
        self._model = sentencepiece.SentencePieceProcessor(model_file=str(path))
        if self._model.pad_id() < 0:
            raise ValueError(f"SentencePiece model {path} has no pad piece; train it with pad_id set "
                             "(train_sentencepiece does this)")
        self.model_path = path

    @property
    def n_vocab(self) -> int:
        return int(self._model.get_piece_size())

    @property
    def pad_token(self) -> int:
        return int(self._model.pad_id())

    @property
    def unk_token(self) -> int:
        return int(self._model.unk_id())

    def encode(self, text: str) -> list[int]:
        """Caption -> ids (normalised as the model was trained; no special tokens)."""
        return list(self._model.encode(base.check_text(text), out_type=int))

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text; pad ids decode to nothing."""
        bad = [int(i) for i in ids if not 0 <= int(i) < self.n_vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary of {self.n_vocab}")
        return self._model.decode([int(i) for i in ids])

    def capacity(self, text_ctx: int) -> int:
        return base.check_text_ctx(text_ctx)

    def padded_tokens_and_mask(self, ids: Sequence[int], text_ctx: int) -> tuple[np.ndarray, np.ndarray]:
        """Truncates to `text_ctx` and pads with `pad_token`.

        Returns:
          tokens: (text_ctx,) int32; mask: (text_ctx,) bool, True on caption ids.
        """
        return base.pad_and_mask(ids, text_ctx, self.pad_token)


def train_sentencepiece(captions: Iterable[str], vocab_size: int, output_path: str | os.PathLike, *,
                        model_type: str = "unigram", normalization: str = "nmt_nfkc_cf",
                        max_captions: int | None = None) -> pathlib.Path:
    """Fits a SentencePiece model to captions and writes the `.model` file.

    Args:
      captions: caption strings; empty ones are skipped.
      vocab_size: number of ids in the model, including <pad> (0) and <unk> (1).
      output_path: where to write the model; parent folders are created.
      model_type: one of MODEL_TYPES.
      normalization: SentencePiece normalisation rule; the default
        "nmt_nfkc_cf" also lowercases, as GLIDE does for GPT-2.
      max_captions: use at most this many (non-empty) captions; None = all.

    Returns:
      The path written.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 3:
        raise ValueError(f"vocab_size = {vocab_size!r}: must be an integer >= 3")
    if model_type not in MODEL_TYPES:
        raise ValueError(f"model_type = {model_type!r}: must be one of {', '.join(MODEL_TYPES)}")
    if max_captions is not None and (not isinstance(max_captions, int) or max_captions <= 0):
        raise ValueError(f"max_captions = {max_captions!r}: must be a positive integer or None")
    sentences = list(itertools.islice((c for c in captions if c and c.strip()), max_captions))
    if not sentences:
        raise ValueError("no non-empty captions to train the SentencePiece model on")
    writer = io.BytesIO()
    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=writer, vocab_size=vocab_size,
            model_type=model_type, normalization_rule_name=normalization,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=-1, eos_id=-1,
            num_threads=os.cpu_count() or 1, minloglevel=2)
    except RuntimeError as err:
        raise ValueError(f"SentencePiece training on {len(sentences)} captions with vocab_size="
                         f"{vocab_size}, model_type={model_type!r} failed: {err}") from err
    path = pathlib.Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(writer.getvalue())
    os.replace(partial, path)
    return path
