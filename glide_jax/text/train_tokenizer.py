"""Trains a SentencePiece tokenizer on a dataset's training captions.

Usage:
  python -m glide_jax.text.train_tokenizer --config configs/my_experiment.py [--config.KEY=VALUE ...]

The captions come from `glide_jax.data.iter_captions(config, split="train")`;
the vocabulary size and options from `config.text.sp_*`; the model is written
to `config.text.tokenizer_path`, which must not exist yet unless `--force`
is given. Afterwards set `config.text.tokenizer =
"sentencepiece"` and `config.text.n_vocab = config.text.sp_vocab_size`.
`--config.KEY=VALUE` overrides a key, as in train.py (pass the same ones to
train.py, e.g. `--config.text.tokenizer_path`).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Callable, Iterable, Sequence

from glide_jax import config as config_lib
from glide_jax.text.sentencepiece_tokenizer import train_sentencepiece


def _default_captions(config) -> Iterable[str]:
    # Imported here: glide_jax.data pulls in TensorFlow, which nothing else in
    # glide_jax.text needs.
    from glide_jax import data

    return data.iter_captions(config, split="train", limit=config.text.sp_max_captions)


def train_from_config(config, captions_fn: Callable[[object], Iterable[str]] = _default_captions) -> pathlib.Path:
    """Trains the SentencePiece model that `config.text` describes.

    Args:
      config: a full config; reads `text.tokenizer_path`, `text.sp_vocab_size`,
        `text.sp_model_type`, `text.sp_normalization`, `text.sp_max_captions`.
      captions_fn: config -> caption strings (the training split).

    Returns:
      The written model path (`config.text.tokenizer_path`).
    """
    text = config.text
    for key in ("tokenizer_path", "sp_vocab_size", "sp_model_type", "sp_normalization", "sp_max_captions"):
        if key not in text:
            raise KeyError(f"config.text.{key} is missing")
    if not text.tokenizer_path:
        raise config_lib.ConfigError("config.text.tokenizer_path must name the .model file to write")
    try:
        return train_sentencepiece(captions_fn(config), text.sp_vocab_size, text.tokenizer_path,
                                   model_type=text.sp_model_type, normalization=text.sp_normalization,
                                   max_captions=text.sp_max_captions)
    except ValueError as err:
        raise config_lib.ConfigError(f"config.text (sp_vocab_size={text.sp_vocab_size}, "
                                     f"sp_model_type={text.sp_model_type!r}): {err}") from err


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glide_jax.text.train_tokenizer",
                                     description=__doc__.splitlines()[0], epilog=config_lib.OVERRIDES_HELP)
    parser.add_argument("--config", required=True, type=pathlib.Path, help="experiment config file")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing config.text.tokenizer_path (runs trained with it then refuse "
                             "to resume with the new one)")
    try:
        argv, overrides = config_lib.split_overrides(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        config = config_lib.load_cli_config(args.config, overrides)
        existing = config.text.get("tokenizer_path")
        if existing and pathlib.Path(existing).exists() and not args.force:
            raise FileExistsError(f"config.text.tokenizer_path = {existing!r} exists; a model trained with it "
                                  "would read other ids from a new one: choose another path, or pass --force")
        path = train_from_config(config)
    except (config_lib.ConfigError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({config.text.sp_vocab_size} ids)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
