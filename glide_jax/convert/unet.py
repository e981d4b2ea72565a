"""glide-text2im U-Net + text transformer state dict -> `Text2ImUNet` params.

Torch names and their Flax homes (i, j block indices; Conv weights go OIHW ->
HWIO, Conv1d (out, in, 1) and Linear (out, in) -> (in, out)):

  token_embedding.weight                 text_encoder/token_embedding/embedding
  positional_embedding, padding_embedding  text_encoder/<same>
  transformer.resblocks.i.ln_{1,2}.*       text_encoder/resblocks_i/ln_{1,2}/{scale,bias}
  transformer.resblocks.i.attn.c_qkv.*     text_encoder/resblocks_i/c_qkv
  transformer.resblocks.i.attn.c_proj.*    text_encoder/resblocks_i/attn_c_proj
  transformer.resblocks.i.mlp.c_fc.*       text_encoder/resblocks_i/c_fc
  transformer.resblocks.i.mlp.c_proj.*     text_encoder/resblocks_i/mlp_c_proj
  final_ln.*                               text_encoder/final_ln
  transformer_proj.*                       transformer_proj
  time_embed.{0,2}.*                       time_embed_{0,1}
  input_blocks.i.j.<layer>.*               input_blocks_i_j/<layer name below>
  middle_block.j.<layer>.*                 middle_block_j/...
  output_blocks.i.j.<layer>.*              output_blocks_i_j/...
  out.{0,2}.*                              out_norm, out_conv
"""

from __future__ import annotations

import re
from typing import Callable

import ml_collections
import numpy as np

from glide_jax.convert import core
from glide_jax.models import factory

# Leaf kinds: how "weight" is renamed and re-laid-out.
_WEIGHT = {
    "norm": ("scale", core.identity),
    "linear": ("kernel", core.linear_kernel),
    "conv": ("kernel", core.conv2d_kernel),
    "conv1d": ("kernel", core.conv1x1_kernel),
}

# Layers inside a ResBlock / AttentionBlock / resampler: torch name -> (Flax name, kind).
_BLOCK_LAYERS = {
    "in_layers.0": ("in_norm", "norm"),
    "in_layers.2": ("in_conv", "conv"),
    "emb_layers.1": ("emb_proj", "linear"),
    "out_layers.0": ("out_norm", "norm"),
    "out_layers.3": ("out_conv", "conv"),
    "skip_connection": ("skip", "conv"),
    "norm": ("norm", "norm"),
    "qkv": ("qkv", "conv1d"),
    "encoder_kv": ("encoder_kv", "conv1d"),
    "proj_out": ("proj_out", "conv1d"),
    "op": ("op", "conv"),  # Downsample with a conv
    "conv": ("conv", "conv"),  # Upsample with a conv
}

_TEXT_LAYERS = {
    "ln_1": ("ln_1", "norm"),
    "ln_2": ("ln_2", "norm"),
    "attn.c_qkv": ("c_qkv", "linear"),
    "attn.c_proj": ("attn_c_proj", "linear"),
    "mlp.c_fc": ("c_fc", "linear"),
    "mlp.c_proj": ("mlp_c_proj", "linear"),
}

_TOP_LAYERS = {
    "final_ln": (("text_encoder", "final_ln"), "norm"),
    "transformer_proj": (("transformer_proj",), "linear"),
    "time_embed.0": (("time_embed_0",), "linear"),
    "time_embed.2": (("time_embed_1",), "linear"),
    "out.0": (("out_norm",), "norm"),
    "out.2": (("out_conv",), "conv"),
}

_PARAMS = {
    "token_embedding.weight": ("text_encoder", "token_embedding", "embedding"),
    "positional_embedding": ("text_encoder", "positional_embedding"),
    "padding_embedding": ("text_encoder", "padding_embedding"),
}


def _leaf(prefix: tuple[str, ...], kind: str, leaf: str) -> core.Target | None:
    if leaf == "bias":
        return core.Target(prefix + ("bias",), core.identity)
    if leaf == "weight":
        name, transform = _WEIGHT[kind]
        return core.Target(prefix + (name,), transform)
    return None


def _block_target(module: str, rest: str, leaf: str) -> core.Target | None:
    if not rest:  # input_blocks.0.0 is a bare Conv2d
        return _leaf((module,), "conv", leaf)
    if rest not in _BLOCK_LAYERS:
        return None
    name, kind = _BLOCK_LAYERS[rest]
    return _leaf((module, name), kind, leaf)


_BLOCK_KEY = re.compile(r"^(input_blocks|output_blocks)\.(\d+)\.(\d+)\.(?:(.+)\.)?(weight|bias)$")
_MIDDLE_KEY = re.compile(r"^middle_block\.(\d+)\.(.+)\.(weight|bias)$")
_TEXT_KEY = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$")
_TOP_KEY = re.compile(r"^(.+)\.(weight|bias)$")


def unet_rule(key: str) -> core.Target | None:
    """Maps one glide-text2im state-dict key to its `Text2ImUNet` param, or None."""
    if key in _PARAMS:
        return core.Target(_PARAMS[key], core.identity)
    if match := _BLOCK_KEY.match(key):
        group, i, j, rest, leaf = match.groups()
        return _block_target(f"{group}_{i}_{j}", rest or "", leaf)
    if match := _MIDDLE_KEY.match(key):
        j, rest, leaf = match.groups()
        return _block_target(f"middle_block_{j}", rest, leaf)
    if match := _TEXT_KEY.match(key):
        i, rest, leaf = match.groups()
        if rest not in _TEXT_LAYERS:
            return None
        name, kind = _TEXT_LAYERS[rest]
        return _leaf(("text_encoder", f"resblocks_{i}", name), kind, leaf)
    if (match := _TOP_KEY.match(key)) and match.group(1) in _TOP_LAYERS:
        prefix, kind = _TOP_LAYERS[match.group(1)]
        return _leaf(prefix, kind, match.group(2))
    return None


def convert_unet(state: dict[str, np.ndarray], config: ml_collections.ConfigDict,
                 rule: Callable[[str], core.Target | None] = unet_rule) -> dict:
    """Converts a glide-text2im (Text2Im/SuperRes/Inpaint) state dict.

    Args:
      state: flat {torch_name: array}, e.g. from `core.load_state("base.pt")`.
      config: the config the checkpoint was trained with (model.kind must be a
        U-Net kind; text.n_vocab must equal the token embedding's rows).

    Returns:
      The Flax params tree (float32 numpy arrays) for `factory.create_model(config)`.

    Raises:
      core.ConversionError: listing every missing, unexpected or mis-shaped key.
    """
    model = factory.create_model(config)
    template = core.param_template(model, factory.example_inputs(config, 1))
    return core.convert_state(state, template, rule)
