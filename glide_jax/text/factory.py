"""Builds the tokenizer named by a config's `text` section, or a model's tokenizer."""

from __future__ import annotations

from typing import Any

from glide_jax.config import TOKENIZERS, ConfigError
from glide_jax.text import base
from glide_jax.text.clip import CLIPTokenizer
from glide_jax.text.gpt2 import GPT2Tokenizer
from glide_jax.text.sentencepiece_tokenizer import SentencePieceTokenizer


def model_tokenizer(config: Any) -> base.Tokenizer:
    """The tokenizer of `config`'s model, checked against its token embedding.

    `config.text`'s tokenizer, except for the noised CLIP, which always reads
    CLIP BPE ids into `clip.n_vocab` rows.
    """
    if config.model.kind == "clip":
        return get_tokenizer({"tokenizer": "clip", "n_vocab": int(config.clip.n_vocab)}, vocab_key="clip.n_vocab")
    return get_tokenizer(config.text)


def get_tokenizer(text_config: Any, vocab_key: str = "text.n_vocab") -> base.Tokenizer:
    """Returns a new tokenizer for `config.text`.

    Args:
      text_config: the `text` section of a config (a ConfigDict or mapping)
        with `tokenizer` in `config.TOKENIZERS` and, for "sentencepiece",
        `tokenizer_path` naming the trained `.model` file.
      vocab_key: the config key of `n_vocab`, for the error message.

    Returns:
      `GPT2Tokenizer` (GLIDE's vocabulary), `CLIPTokenizer` or
      `SentencePieceTokenizer`. Each call loads the vocabulary afresh.

    Raises:
      KeyError, ConfigError or FileNotFoundError naming config.text.tokenizer,
      config.text.tokenizer_path, or config.text.n_vocab when the model's
      embedding has fewer rows than the tokenizer has ids.
    """
    if "tokenizer" not in text_config:
        hint = " (pass config.text, not the whole config)" if "text" in text_config else ""
        raise KeyError(f"config.text.tokenizer is missing{hint}")
    tokenizer = _build(text_config["tokenizer"], text_config)
    rows = text_config["n_vocab"] if "n_vocab" in text_config else None
    if rows is not None and tokenizer.n_vocab > rows:  # an out-of-range id would be clamped silently
        raise ConfigError(f"config.{vocab_key} = {rows}: the model's token embedding has {rows} rows but the "
                         f"{text_config['tokenizer']} tokenizer has {tokenizer.n_vocab} ids; use the tokenizer "
                         f"the model was trained with, or n_vocab >= {tokenizer.n_vocab}")
    return tokenizer


def _build(name: str, text_config: Any) -> base.Tokenizer:
    if name == "gpt2":
        return GPT2Tokenizer.default()
    if name == "clip":
        return CLIPTokenizer.default()
    if name == "sentencepiece":
        path = text_config["tokenizer_path"] if "tokenizer_path" in text_config else None
        if not path:
            raise ConfigError("config.text.tokenizer_path must name a SentencePiece .model file "
                             "when config.text.tokenizer = 'sentencepiece'")
        try:
            return SentencePieceTokenizer(path)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"config.text.tokenizer_path = {path!r}: {err}") from None
    raise ConfigError(f"config.text.tokenizer = {name!r}: must be one of {', '.join(TOKENIZERS)}")
