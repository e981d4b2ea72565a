"""Parity group `tokenizer`: GLIDE's GPT-2 BPE and CLIP BPE against the fixtures.

Reads `tokenizer_prompts.json`, `tokenizer_glide.npz` and `tokenizer_clip.npz`
(format in tests/fixtures/FORMAT.md). For every prompt the ids must match
exactly; the padded rows are rebuilt with the context length read from the
arrays' shapes; decoded strings are compared with the JSON. When the fixture
set carries its copies of the vocabulary files, they must be byte-identical
to the ones glide_jax ships.
"""

from __future__ import annotations

import json
import pathlib
from typing import Iterator

import numpy as np

from glide_jax.text import byte_bpe
from glide_jax.text.clip import CLIPTokenizer
from glide_jax.text.gpt2 import GPT2Tokenizer
from glide_jax.tools.parity import Check, compare, failed

_VOCAB_FILES = ("encoder.json.gz", "vocab.bpe.gz", "bpe_simple_vocab_16e6.txt.gz")


def _codepoints(text: str) -> np.ndarray:
    """A string as an int array, so `compare` can check it exactly."""
    return np.array([ord(c) for c in text], dtype=np.int64)


def _vocab_checks(fixture_dir: pathlib.Path) -> Iterator[Check]:
    for name in _VOCAB_FILES:
        copy = fixture_dir / "tokenizer" / name
        if not copy.is_file():
            continue
        ours = np.frombuffer(byte_bpe.vocab_file(name).read_bytes(), dtype=np.uint8)
        theirs = np.frombuffer(copy.read_bytes(), dtype=np.uint8)
        yield compare(f"tokenizer: vocab file {name}", ours, theirs, 0.0, metric="exact")


def _id_checks(tag: str, tokenizer, prompts: list[str], arrays) -> Iterator[tuple[Check, list[int]]]:
    """Per prompt: the ids and their count; yields each check with the ids."""
    ids_table, lengths = arrays["ids"], arrays["lengths"]
    if ids_table.shape[0] != len(prompts) or lengths.shape != (len(prompts),):
        raise ValueError(f"{tag}: {len(prompts)} prompts but ids {ids_table.shape}, lengths {lengths.shape}")
    for i, prompt in enumerate(prompts):
        ids = tokenizer.encode(prompt)
        n = int(lengths[i])
        yield compare(f"tokenizer: {tag} ids[{i}] ({n} ids)", np.asarray(ids, np.int64), ids_table[i, :n],
                      0.0, metric="exact"), ids


def _glide_checks(fixture_dir: pathlib.Path, prompts: list[str], meta: dict) -> Iterator[Check]:
    arrays = np.load(fixture_dir / "tokenizer_glide.npz")
    tokenizer = GPT2Tokenizer.default()
    yield compare("tokenizer: glide n_vocab", tokenizer.n_vocab, meta["n_vocab"], 0.0, metric="exact")
    yield compare("tokenizer: glide end/pad token", tokenizer.pad_token, meta["end_token"], 0.0, metric="exact")
    all_ids = []
    for check, ids in _id_checks("glide", tokenizer, prompts, arrays):
        all_ids.append(ids)
        yield check
    yield compare("tokenizer: glide lengths", [len(ids) for ids in all_ids], arrays["lengths"], 0.0, metric="exact")
    text_ctx = arrays["padded_tokens"].shape[1]
    rows = [tokenizer.padded_tokens_and_mask(ids, text_ctx) for ids in all_ids]
    yield compare(f"tokenizer: glide padded_tokens (ctx {text_ctx})", np.stack([r[0] for r in rows]),
                  arrays["padded_tokens"], 0.0, metric="exact")
    yield compare(f"tokenizer: glide mask (ctx {text_ctx})", np.stack([r[1] for r in rows]),
                  arrays["mask"], 0.0, metric="exact")
    for i, (ids, expected) in enumerate(zip(all_ids, meta["decoded"])):
        yield compare(f"tokenizer: glide decode[{i}]", _codepoints(tokenizer.decode(ids)), _codepoints(expected),
                      0.0, metric="exact")


def _clip_checks(fixture_dir: pathlib.Path, prompts: list[str], meta: dict) -> Iterator[Check]:
    arrays = np.load(fixture_dir / "tokenizer_clip.npz")
    tokenizer = CLIPTokenizer.default()
    yield compare("tokenizer: clip n_vocab", tokenizer.n_vocab, meta["vocab_size"], 0.0, metric="exact")
    yield compare("tokenizer: clip start/end tokens", [tokenizer.start_token, tokenizer.end_token],
                  [meta["start_token"], meta["end_token"]], 0.0, metric="exact")
    all_ids = []
    for check, ids in _id_checks("clip", tokenizer, prompts, arrays):
        all_ids.append(ids)
        yield check
    yield compare("tokenizer: clip lengths", [len(ids) for ids in all_ids], arrays["lengths"], 0.0, metric="exact")
    text_ctx = arrays["padded_tokens"].shape[1]
    rows = [tokenizer.padded_tokens_and_len(ids, text_ctx) for ids in all_ids]
    yield compare(f"tokenizer: clip padded_tokens (ctx {text_ctx})", np.stack([r[0] for r in rows]),
                  arrays["padded_tokens"], 0.0, metric="exact")
    yield compare(f"tokenizer: clip text_len (ctx {text_ctx})", [r[1] for r in rows],
                  arrays["text_len"], 0.0, metric="exact")
    for i, (ids, expected) in enumerate(zip(all_ids, meta["decoded"])):
        yield compare(f"tokenizer: clip decode[{i}]", _codepoints(tokenizer.decode(ids)), _codepoints(expected),
                      0.0, metric="exact")


def checks(fixture_dir) -> Iterator[Check]:
    """Yields one exact check per compared quantity (see module docstring)."""
    fixture_dir = pathlib.Path(fixture_dir)
    prompts_file = fixture_dir / "tokenizer_prompts.json"
    if not prompts_file.is_file():
        yield failed("tokenizer: tokenizer_prompts.json", f"{prompts_file} is missing")
        return
    meta = json.loads(prompts_file.read_text(encoding="utf-8"))
    prompts = meta["prompts"]
    yield from _vocab_checks(fixture_dir)
    for tag, run in (("glide", _glide_checks), ("clip", _clip_checks)):
        npz = fixture_dir / f"tokenizer_{tag}.npz"
        if not npz.is_file():
            yield failed(f"tokenizer: {npz.name}", f"{npz} is missing")
            continue
        try:
            yield from run(fixture_dir, prompts, meta[tag])
        except Exception as exc:  # one broken tokenizer must not hide the other's rows
            yield failed(f"tokenizer: {tag} (crashed)", f"{type(exc).__name__}: {exc}")
