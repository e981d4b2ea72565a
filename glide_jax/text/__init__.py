"""Tokenizers: GLIDE's GPT-2 BPE, CLIP's BPE and SentencePiece.

`get_tokenizer(config.text)` picks one; all share the `Tokenizer` interface
(`encode`, `decode`, `padded_tokens_and_mask`, `n_vocab`, `pad_token`), and
`tokenize_batch` turns a list of captions into `(tokens, mask)` arrays.
"""

from glide_jax.text.base import Tokenizer, pad_and_mask, tokenize_batch
from glide_jax.text.clip import CLIPTokenizer
from glide_jax.text.factory import get_tokenizer, model_tokenizer
from glide_jax.text.gpt2 import GPT2Tokenizer
from glide_jax.text.sentencepiece_tokenizer import SentencePieceTokenizer, train_sentencepiece

__all__ = [
    "CLIPTokenizer",
    "GPT2Tokenizer",
    "SentencePieceTokenizer",
    "Tokenizer",
    "get_tokenizer",
    "model_tokenizer",
    "pad_and_mask",
    "tokenize_batch",
    "train_sentencepiece",
]
