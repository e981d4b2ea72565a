"""GLIDE's caption encoder: a pre-LayerNorm transformer without attention mask.

GLIDE §2.3/§4: captions are encoded into K tokens by a transformer whose
final token embedding conditions the time embedding and whose whole output
sequence is attended to by every U-Net attention layer. Differences from a
textbook encoder that matter for parity with glide-text2im:

- with `xf_padding`, a masked position's input is *replaced* by a learned
  per-position padding embedding (no token or positional embedding there);
- no attention mask at all: padding positions are attended to;
- exact (erf) GELU, LayerNorm eps 1e-5 in float32;
- the fused q|k|v projection is split *within* each head.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from glide_jax import sharding
from glide_jax.models import layers

Dtype = Any


class ResidualAttentionBlock(nn.Module):
    """x + attn(ln_1(x)), then x + mlp(ln_2(x)).

    Attributes:
      width: model width W.
      heads: attention heads (W must be divisible by it).
      dtype: compute dtype.
      attention_impl: "auto", "xla" or "cudnn" (`layers.attention_implementation`).
    """

    width: int
    heads: int
    dtype: Dtype = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, L, W) -> (B, L, W)."""
        h = layers.LayerNorm32(name="ln_1")(x)
        qkv = layers.dense(3 * self.width, ("embed", "heads"), self.dtype, name="c_qkv")(h)
        q, k, v = layers.split_heads(qkv, self.heads, 3)
        h = layers.attention(q, k, v, self.dtype, self.attention_impl)
        x = x + layers.dense(self.width, ("heads", "embed"), self.dtype, name="attn_c_proj")(h)
        h = layers.LayerNorm32(name="ln_2")(x)
        h = layers.dense(4 * self.width, ("embed", "mlp"), self.dtype, name="c_fc")(h)
        h = nn.gelu(h, approximate=False)
        return x + layers.dense(self.width, ("mlp", "embed"), self.dtype, name="mlp_c_proj")(h)


class TextTransformer(nn.Module):
    """Token + position embedding, `layers` residual blocks, optional final LN.

    Attributes:
      text_ctx: caption length L (after padding).
      width: transformer width W.
      layers: number of residual blocks.
      heads: attention heads.
      n_vocab: token embedding rows.
      final_ln: LayerNorm after the last block.
      padding: learned padding embedding where the mask is False.
      dtype: compute dtype of the matmuls (embeddings, LayerNorms and the
        residual stream stay float32).
      attention_impl: "auto", "xla" or "cudnn" (`layers.attention_implementation`).
    """

    text_ctx: int
    width: int
    layers: int
    heads: int
    n_vocab: int
    final_ln: bool = True
    padding: bool = True
    dtype: Dtype = jnp.float32
    attention_impl: str = "auto"

    @nn.compact
    def __call__(self, tokens: jax.Array, mask: jax.Array | None) -> jax.Array:
        """Encodes padded captions.

        Args:
          tokens: (B, L) int token ids, L == text_ctx.
          mask: (B, L) bool, True on real tokens; required when `padding`.

        Returns:
          (B, L, W) float32 transformer output.
        """
        if tokens.ndim != 2 or tokens.shape[1] != self.text_ctx:
            raise ValueError(f"tokens must be (B, {self.text_ctx}), got {tokens.shape}")
        embed_init = nn.initializers.normal(stddev=0.02)
        token_embedding = nn.Embed(
            self.n_vocab, self.width, param_dtype=jnp.float32,
            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(1.0), ("vocab", "embed")),
            name="token_embedding")
        positional = self.param("positional_embedding",
                                nn.with_logical_partitioning(embed_init, (None, "embed")),
                                (self.text_ctx, self.width), jnp.float32)
        # The lookup reads the table whole along "embed" (see glide_jax.sharding).
        table = sharding.constrain(token_embedding.embedding, ("vocab", None))
        x = jnp.take(table, tokens.astype(jnp.int32), axis=0) + positional[None]
        if self.padding:
            if mask is None:
                raise ValueError("TextTransformer with padding=True needs a mask")
            padding = self.param("padding_embedding",
                                 nn.with_logical_partitioning(embed_init, (None, "embed")),
                                 (self.text_ctx, self.width), jnp.float32)
            x = jnp.where(mask[..., None].astype(bool), x, padding[None])
        for i in range(self.layers):
            x = ResidualAttentionBlock(self.width, self.heads, self.dtype, self.attention_impl,
                                       name=f"resblocks_{i}")(x)
        if self.final_ln:
            x = layers.LayerNorm32(name="final_ln")(x)
        return x
