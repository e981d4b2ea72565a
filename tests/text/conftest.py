"""Shared tokenizer instances and the tokenizer fixtures for tests/text."""

import json

import numpy as np
import pytest

from glide_jax.text import CLIPTokenizer, GPT2Tokenizer


@pytest.fixture(scope="session")
def gpt2_tokenizer() -> GPT2Tokenizer:
    return GPT2Tokenizer.default()


@pytest.fixture(scope="session")
def clip_tokenizer() -> CLIPTokenizer:
    return CLIPTokenizer.default()


@pytest.fixture(scope="session")
def tokenizer_prompts(fixtures_dir) -> dict:
    """tokenizer_prompts.json: prompts, decoded strings and special ids."""
    return json.loads((fixtures_dir / "tokenizer_prompts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def glide_arrays(fixtures_dir) -> dict:
    with np.load(fixtures_dir / "tokenizer_glide.npz") as z:
        return dict(z)


@pytest.fixture(scope="session")
def clip_arrays(fixtures_dir) -> dict:
    with np.load(fixtures_dir / "tokenizer_clip.npz") as z:
        return dict(z)
