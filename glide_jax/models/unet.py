"""GLIDE's text-conditional ADM U-Net (NHWC) and its conditioning variants.

GLIDE §4 (Nichol et al. 2021): the ADM U-Net of Dhariwal & Nichol (2021)
conditioned on text twice: the projection of the text transformer's last
position is added to the time embedding, and every attention layer attends
to the transformer's output sequence (its keys/values are put in front of the
image's). `kind` picks the input conditioning:

  base              x
  upsample          [x, bilinear(low_res)]                       (super-res)
  inpaint           [x, inpaint_image * mask, mask]
  upsample_inpaint  [x, inpaint_image * mask, mask, bilinear(low_res)]

Submodule names mirror the reference's module tree (`input_blocks_3_1` is
`input_blocks.3.1`), which keeps the checkpoint converter a name table.
Intermediates for parity (`unet_input`, `timestep_embedding`, `time_emb`,
`middle_out`) are sown into the "intermediates" collection.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from glide_jax.config import INPAINT_KINDS, UPSAMPLE_KINDS
from glide_jax.models import layers
from glide_jax.models.text_transformer import TextTransformer

Dtype = Any
KINDS = ("base", "upsample", "inpaint", "upsample_inpaint")
# What the U-Net's first conv receives, per kind: (input, channels) in the
# order `conditioned_input` concatenates them (the reference's order).
INPUT_LAYOUT = {
    "base": (("x", 3),),
    "upsample": (("x", 3), ("low_res", 3)),
    "inpaint": (("x", 3), ("inpaint_image", 3), ("inpaint_mask", 1)),
    "upsample_inpaint": (("x", 3), ("inpaint_image", 3), ("inpaint_mask", 1), ("low_res", 3)),
}
IN_CHANNELS = {kind: sum(width for _, width in layout) for kind, layout in INPUT_LAYOUT.items()}


class ResBlock(nn.Module):
    """ADM residual block, optionally resampling (resblock_updown).

    Attributes:
      out_channels: output width.
      use_scale_shift_norm: GN(h) * (1 + scale) + shift instead of h + emb.
      dropout: dropout rate before the last conv.
      up, down: nearest x2 / 2x2 average pool applied to both the normalised
        activations (before the first conv) and the skip input.
      norm_groups: GroupNorm groups (32 in GLIDE).
      dtype: compute dtype.
    """

    out_channels: int
    use_scale_shift_norm: bool
    dropout: float
    up: bool = False
    down: bool = False
    norm_groups: int = 32
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, emb: jax.Array, deterministic: bool = True) -> jax.Array:
        """x: (B, H, W, C), emb: (B, E) -> (B, H', W', out_channels)."""
        h = nn.silu(layers.GroupNorm32(self.norm_groups, dtype=self.dtype, name="in_norm")(x))
        if self.up:
            h, x = layers.upsample_nearest(h), layers.upsample_nearest(x)
        elif self.down:
            h, x = layers.downsample_avg(h), layers.downsample_avg(x)
        h = layers.conv(self.out_channels, 3, self.dtype, name="in_conv")(h)
        width = 2 * self.out_channels if self.use_scale_shift_norm else self.out_channels
        emb_out = layers.dense(width, ("mlp", "embed"), self.dtype, name="emb_proj")(nn.silu(emb))
        emb_out = emb_out.astype(h.dtype)[:, None, None, :]
        out_norm = layers.GroupNorm32(self.norm_groups, dtype=self.dtype, name="out_norm")
        if self.use_scale_shift_norm:
            scale, shift = jnp.split(emb_out, 2, axis=-1)
            h = nn.silu(out_norm(h) * (1 + scale) + shift)
        else:
            h = nn.silu(out_norm(h + emb_out))
        h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
        h = layers.conv(self.out_channels, 3, self.dtype, name="out_conv", zero_init=True)(h)
        if x.shape[-1] != self.out_channels:
            x = layers.conv(self.out_channels, 1, self.dtype, name="skip")(x)
        return x.astype(jnp.float32) + h  # the residual stream stays float32


class AttentionBlock(nn.Module):
    """Self-attention over pixels, with the text's keys/values in front.

    The text's keys/values depend only on the caption, so they are a
    separate method: `Text2ImUNet.encode_text` computes them once per batch,
    outside a sampling loop, and every step passes them back in.

    Attributes:
      channels: width of x (and of q, k, v).
      num_heads: attention heads (channels must be divisible by it).
      norm_groups: GroupNorm groups (32 in GLIDE).
      dtype: compute dtype.
      attention_impl: "auto", "xla" or "cudnn" (`layers.attention_implementation`).
    """

    channels: int
    num_heads: int
    norm_groups: int = 32
    dtype: Dtype = jnp.float32
    attention_impl: str = "auto"

    def setup(self):
        c = self.channels
        self.norm = layers.GroupNorm32(self.norm_groups, dtype=self.dtype)
        # Both projections return the compute dtype: q, k and v are cast to it
        # at once, and the output joins the residual stream as a ResBlock's
        # last conv does.
        self.qkv = layers.dense(3 * c, ("embed", "heads"), self.dtype, out_dtype=self.dtype)
        self.encoder_kv = layers.dense(2 * c, ("embed", "heads"), self.dtype)
        self.proj_out = layers.dense(c, ("heads", "embed"), self.dtype, zero_init=True, out_dtype=self.dtype)

    def text_kv(self, encoder_out: jax.Array) -> tuple[jax.Array, jax.Array]:
        """encoder_out: (B, L, W_text) -> the text's keys and values, (B, L, heads, d) each.

        They come out as `__call__` uses them: in the compute dtype, the keys
        already scaled for `layers.attend`.
        """
        k, v = layers.split_heads(self.encoder_kv(encoder_out), self.num_heads, 2)
        return layers.scale_qk(k, self.dtype), v.astype(self.dtype)

    def __call__(self, x: jax.Array, text_kv: tuple[jax.Array, jax.Array]) -> jax.Array:
        """x: (B, H, W, C), text_kv: the output of `text_kv` -> (B, H, W, C)."""
        b, hgt, wid, c = x.shape
        h = self.norm(x).reshape(b, hgt * wid, c)
        q, k, v = layers.split_heads(self.qkv(h), self.num_heads, 3)
        q, k, v = layers.scale_qk(q, self.dtype), layers.scale_qk(k, self.dtype), v.astype(self.dtype)
        k = jnp.concatenate([text_kv[0], k], axis=1)
        v = jnp.concatenate([text_kv[1], v], axis=1)
        h = layers.attend(q, k, v, self.attention_impl)
        return x + self.proj_out(h).reshape(b, hgt, wid, c)


class Downsample(nn.Module):
    """Stride-2 3x3 conv (the resblock_updown=False downsampler)."""

    channels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, H, W, C) -> (B, H/2, W/2, channels)."""
        return layers.conv(self.channels, 3, self.dtype, name="op", stride=2)(x)


class Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv (the resblock_updown=False upsampler)."""

    channels: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, H, W, C) -> (B, 2H, 2W, channels)."""
        return layers.conv(self.channels, 3, self.dtype, name="conv")(layers.upsample_nearest(x))


def resize_bilinear(x: jax.Array, height: int, width: int) -> jax.Array:
    """torch `F.interpolate(mode="bilinear", align_corners=False)` on NHWC.

    Half-pixel source coordinates clamped at 0, no antialiasing (unlike
    `jax.image.resize`, which antialiases when shrinking).

    Args:
      x: (B, h, w, C) float.
      height, width: output size.

    Returns:
      (B, height, width, C) in x's dtype.
    """

    def taps(n_in: int, n_out: int):
        scale = np.float32(n_in) / np.float32(n_out)
        src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + np.float32(0.5)) - np.float32(0.5),
                         np.float32(0.0))
        i0 = np.floor(src).astype(np.int32)
        i1 = np.minimum(i0 + 1, n_in - 1)
        frac = (src - i0).astype(np.float32)
        return i0, i1, 1.0 - frac, frac

    h0, h1, hl0, hl1 = taps(x.shape[1], height)
    w0, w1, wl0, wl1 = taps(x.shape[2], width)
    rows0, rows1 = jnp.take(x, h0, axis=1), jnp.take(x, h1, axis=1)

    def along_w(rows):
        return (jnp.take(rows, w0, axis=2) * wl0[None, None, :, None]
                + jnp.take(rows, w1, axis=2) * wl1[None, None, :, None])

    out = along_w(rows0) * hl0[None, :, None, None] + along_w(rows1) * hl1[None, :, None, None]
    return out.astype(x.dtype)


class Text2ImUNet(nn.Module):
    """The text-conditional ADM U-Net of GLIDE (all four released variants).

    Attributes mirror glide-text2im's `create_model` options (see
    glide_jax/config/defaults.py for their meaning); `kind` selects the conditioning
    inputs and the first conv's input width.
    """

    kind: str = "base"
    image_size: int = 64
    model_channels: int = 192
    out_channels: int = 6
    num_res_blocks: int = 3
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    num_heads: int = 1
    num_head_channels: int | None = 64
    num_heads_upsample: int | None = None
    dropout: float = 0.0
    use_scale_shift_norm: bool = True
    resblock_updown: bool = True
    norm_groups: int = 32
    text_ctx: int = 128
    xf_width: int = 512
    xf_layers: int = 16
    xf_heads: int = 8
    xf_final_ln: bool = True
    xf_padding: bool = True
    n_vocab: int = 50257
    dtype: Dtype = jnp.float32
    remat: bool = False
    attention_impl: str = "auto"

    def _heads(self, channels: int, decoder: bool) -> int:
        if self.num_head_channels is not None:
            if channels % self.num_head_channels:
                raise ValueError(f"{channels} channels not divisible by num_head_channels {self.num_head_channels}")
            return channels // self.num_head_channels
        if decoder and self.num_heads_upsample is not None:
            return self.num_heads_upsample
        return self.num_heads

    def _res(self, out_channels: int, up: bool = False, down: bool = False) -> nn.Module:
        cls = nn.remat(ResBlock, static_argnums=(3,)) if self.remat else ResBlock
        return cls(out_channels, self.use_scale_shift_norm, self.dropout, up=up, down=down,
                   norm_groups=self.norm_groups, dtype=self.dtype)

    def _attn(self, channels: int, decoder: bool = False) -> nn.Module:
        return AttentionBlock(channels, self._heads(channels, decoder), self.norm_groups, dtype=self.dtype,
                              attention_impl=self.attention_impl)

    def _build_encoder(self, attention_ds: set[int]) -> tuple[list, list[int], int]:
        ch = self.model_channels * self.channel_mult[0]
        blocks = [[layers.conv(ch, 3, self.dtype)]]
        chans, ds = [ch], 1
        for level, mult in enumerate(self.channel_mult):
            for _ in range(self.num_res_blocks):
                ch = self.model_channels * mult
                block = [self._res(ch)]
                if ds in attention_ds:
                    block.append(self._attn(ch))
                blocks.append(block)
                chans.append(ch)
            if level != len(self.channel_mult) - 1:
                blocks.append([self._res(ch, down=True) if self.resblock_updown else Downsample(ch, self.dtype)])
                chans.append(ch)
                ds *= 2
        return blocks, chans, ds

    def _build_decoder(self, attention_ds: set[int], chans: list[int], ds: int) -> list:
        blocks = []
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for i in range(self.num_res_blocks + 1):
                chans.pop()
                ch = self.model_channels * mult
                block = [self._res(ch)]
                if ds in attention_ds:
                    block.append(self._attn(ch, decoder=True))
                if level and i == self.num_res_blocks:
                    block.append(self._res(ch, up=True) if self.resblock_updown else Upsample(ch, self.dtype))
                    ds //= 2
                blocks.append(block)
        return blocks

    def setup(self):
        if self.kind not in KINDS:
            raise ValueError(f"Text2ImUNet kind {self.kind!r} not in {KINDS}")
        attention_ds = {self.image_size // r for r in self.attention_resolutions}
        time_dim = 4 * self.model_channels
        self.time_embed = [layers.dense(time_dim, ("embed", "mlp"), jnp.float32),
                           layers.dense(time_dim, ("mlp", "embed"), jnp.float32)]
        self.text_encoder = TextTransformer(
            self.text_ctx, self.xf_width, self.xf_layers, self.xf_heads, self.n_vocab,
            final_ln=self.xf_final_ln, padding=self.xf_padding, dtype=self.dtype,
            attention_impl=self.attention_impl)
        self.transformer_proj = layers.dense(time_dim, ("embed", "mlp"), self.dtype)
        encoder, chans, ds = self._build_encoder(attention_ds)
        self.input_blocks = encoder
        mid = self.model_channels * self.channel_mult[-1]
        self.middle_block = [self._res(mid), self._attn(mid), self._res(mid)]
        self.output_blocks = self._build_decoder(attention_ds, chans, ds)
        # The head runs in float32, as in the reference (it casts back before `out`).
        self.out_norm = layers.GroupNorm32(self.norm_groups, dtype=jnp.float32)
        self.out_conv = layers.conv(self.out_channels, 3, jnp.float32, zero_init=True)

    def encode_text(self, tokens: jax.Array, mask: jax.Array | None) -> dict[str, Any]:
        """Everything the U-Net takes from the caption, computed once per batch.

        Args:
          tokens: (B, text_ctx) int token ids.
          mask: (B, text_ctx) bool, True on real tokens.

        Returns:
          {"xf_proj": (B, 4C) projection of the *last* position,
           "xf_out": (B, text_ctx, xf_width) the whole output sequence,
           "xf_kv": {attention block name: (keys, values), each (B, text_ctx,
                     heads, d), that block's text keys/values (`AttentionBlock.text_kv`)}}.
        """
        xf_out = self.text_encoder(tokens, mask)
        return {"xf_proj": self.transformer_proj(xf_out[:, -1]), "xf_out": xf_out,
                "xf_kv": self.text_keys_values(xf_out)}

    def text_keys_values(self, xf_out: jax.Array) -> dict[str, tuple[jax.Array, jax.Array]]:
        """Every attention block's text keys and values, by block name, from the encoder's output."""
        blocks = [*self.input_blocks, self.middle_block, *self.output_blocks]
        return {layer.name: layer.text_kv(xf_out)
                for block in blocks for layer in block if isinstance(layer, AttentionBlock)}

    def conditioned_input(self, x, low_res=None, inpaint_image=None, inpaint_mask=None) -> jax.Array:
        """Concatenates the conditioning inputs of `kind` onto x (channels last), in
        the order of `INPUT_LAYOUT`.

        Missing inpainting inputs default to zeros, as in the reference.
        """
        inputs = {"x": x}
        if self.kind in INPAINT_KINDS:
            image = jnp.zeros_like(x) if inpaint_image is None else inpaint_image.astype(x.dtype)
            mask = jnp.zeros_like(x[..., :1]) if inpaint_mask is None else inpaint_mask.astype(x.dtype)
            inputs["inpaint_image"], inputs["inpaint_mask"] = image * mask, mask
        if self.kind in UPSAMPLE_KINDS:
            if low_res is None:
                raise ValueError(f"Text2ImUNet kind {self.kind!r} needs low_res")
            inputs["low_res"] = resize_bilinear(low_res.astype(x.dtype), x.shape[1], x.shape[2])
        return jnp.concatenate([inputs[name] for name, _ in INPUT_LAYOUT[self.kind]], axis=-1)

    def _run_block(self, block, h, emb, xf_kv, deterministic):
        for layer in block:
            if isinstance(layer, ResBlock):
                h = layer(h, emb, deterministic)
            elif isinstance(layer, AttentionBlock):
                h = layer(h, xf_kv[layer.name])
            else:
                h = layer(h)
        return h

    def __call__(self, x, timesteps, tokens=None, mask=None, *, text_emb: Mapping[str, jax.Array] | None = None,
                 low_res=None, inpaint_image=None, inpaint_mask=None, deterministic: bool = True) -> jax.Array:
        """Predicts eps and the variance interpolation value.

        Args:
          x: (B, H, W, 3) noisy image x_t.
          timesteps: (B,) int original step indices (0..999).
          tokens, mask: (B, text_ctx) caption ids and bool mask; unused when
            `text_emb` (the output of `encode_text`) is given. A sampler
            passes `text_emb`, so the text transformer and the attention
            blocks' text keys/values stay outside its loop.
          low_res: (B, h, w, 3) low-resolution image (upsample kinds).
          inpaint_image: (B, H, W, 3) known pixels (inpaint kinds).
          inpaint_mask: (B, H, W, 1) float, 1 = known pixel (inpaint kinds).
          deterministic: disables dropout; otherwise pass rngs={"dropout": key}.

        Returns:
          (B, H, W, out_channels) float32: eps in channels 0-2, v in 3-5.
        """
        h = self.conditioned_input(x, low_res, inpaint_image, inpaint_mask)
        self.sow("intermediates", "unet_input", h)
        t_emb = layers.timestep_embedding(timesteps, self.model_channels)
        self.sow("intermediates", "timestep_embedding", t_emb)
        emb = self.time_embed[1](nn.silu(self.time_embed[0](t_emb)))
        self.sow("intermediates", "time_emb", emb)
        if text_emb is None:
            if tokens is None:
                raise ValueError("Text2ImUNet needs tokens (and mask) or text_emb")
            text_emb = self.encode_text(tokens, mask)
        emb = emb + text_emb["xf_proj"].astype(emb.dtype)
        xf_kv = text_emb["xf_kv"]
        skips = []
        for block in self.input_blocks:
            h = self._run_block(block, h, emb, xf_kv, deterministic)
            skips.append(h.astype(self.dtype))
        h = self._run_block(self.middle_block, h, emb, xf_kv, deterministic)
        self.sow("intermediates", "middle_out", h)
        for block in self.output_blocks:
            # In the compute dtype: the decoder block's norm (float32 inside)
            # and skip conv (compute dtype) are its only readers.
            h = jnp.concatenate([h.astype(self.dtype), skips.pop()], axis=-1)
            h = self._run_block(block, h, emb, xf_kv, deterministic)
        h = nn.silu(self.out_norm(h.astype(jnp.float32)))
        return self.out_conv(h)
