"""Parity group `clip`: the noised CLIP against glide-text2im's fixtures.

Reads the CLIP yaml from `clip_options.json`, converts
`clip_image_enc_state.npz` / `clip_text_enc_state.npz` with the same converter
users run on released checkpoints, and compares the encoders' input blocks,
raw and normalised embeddings, the logit scale, the guidance loss and the
guidance gradient with `clip_io.npz`. The `.pt` files must load (torch,
weights_only) equal to the npz files. Fixture arrays are NCHW; the model
gets NHWC.
"""

from __future__ import annotations

import json
import pathlib
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from glide_jax import config as config_lib
from glide_jax.convert import clip as clip_convert
from glide_jax.convert import core as convert_core
from glide_jax.models import clip as clip_model
from glide_jax.tools.parity import Check, compare, failed, to_nhwc

# Float32 reference; we see ~1e-6 with "highest" matmul precision.
REL_TOL = 1e-4
ATOL = 1e-4


def _pt_checks(fixture_dir: pathlib.Path, case: str, npz: dict) -> Iterator[Check]:
    name = f"clip: {case}.pt == {case}_state.npz"
    try:
        pt = convert_core.load_state(fixture_dir / f"{case}.pt")  # torch, weights_only
    except Exception as exc:  # torch missing or unreadable file: a failed row
        yield failed(name, f"{type(exc).__name__}: {exc}")
        return
    if list(pt) != list(npz):
        yield failed(name, f"key lists differ: only in .pt {sorted(set(pt) - set(npz))}, "
                           f"only in npz {sorted(set(npz) - set(pt))}")
        return
    keys = list(npz)
    yield compare(name, np.concatenate([pt[k].ravel() for k in keys]),
                  np.concatenate([npz[k].ravel() for k in keys]), 0.0, "exact")


def _compare(name: str, actual, expected) -> Check:
    return compare(f"clip: {name}", actual, expected, REL_TOL, "rel_l2", atol=ATOL)


def checks(fixture_dir: pathlib.Path) -> Iterator[Check]:
    """Yields one row per compared CLIP quantity."""
    # The fixtures are float32; accelerators would otherwise use TF32/bf16 passes.
    with jax.default_matmul_precision("float32"):
        rows = list(_checks(pathlib.Path(fixture_dir)))
    yield from rows


def _checks(fixture_dir: pathlib.Path) -> Iterator[Check]:
    options = json.loads((fixture_dir / "clip_options.json").read_text())
    config = config_lib.clip_config_from_glide(options["config"])
    io = np.load(fixture_dir / "clip_io.npz")
    image_state = convert_core.load_state(fixture_dir / "clip_image_enc_state.npz")
    text_state = convert_core.load_state(fixture_dir / "clip_text_enc_state.npz")
    yield from _pt_checks(fixture_dir, "clip_image_enc", image_state)
    yield from _pt_checks(fixture_dir, "clip_text_enc", text_state)

    variables = clip_convert.convert_clip(image_state, text_state, config)
    params = variables["params"]
    model = clip_model.create_clip(config)
    image_enc = {"params": params["image_encoder"]}
    text_enc = {"params": params["text_encoder"]}
    image_encoder = clip_model.image_encoder_from_config(config)
    text_encoder = clip_model.text_encoder_from_config(config)

    x, t = to_nhwc(io["images"]), jnp.asarray(io["image_t"], jnp.int32)
    yield _compare("image_input_emb", image_encoder.apply(image_enc, x, t, method="embed"),
                   io["image_input_emb"])
    yield _compare("image_emb_raw", image_encoder.apply(image_enc, x, t), io["image_emb_raw"])
    yield _compare("image_emb", model.apply(variables, x, t, method="image_embeddings"),
                   io["image_emb"])

    tokens = jnp.asarray(io["text_tokens"], jnp.int32)
    lens = jnp.asarray(io["text_lens"], jnp.int32)
    yield _compare("text_input_emb", text_encoder.apply(text_enc, tokens, method="embed"),
                   io["text_input_emb"])
    yield _compare("text_emb_raw", text_encoder.apply(text_enc, tokens, lens), io["text_emb_raw"])
    text_emb = model.apply(variables, tokens, lens, method="text_embeddings")
    yield _compare("text_emb", text_emb, io["text_emb"])

    yield compare("clip: logit_scale", params["logit_scale"], io["logit_scale"], 0.0, "exact")
    cond_x, cond_t = to_nhwc(io["cond_x"]), jnp.asarray(io["cond_t"], jnp.int32)
    loss = model.apply(variables, cond_x, cond_t, text_emb, method="guidance_loss")
    yield compare("clip: cond_loss", loss, io["cond_loss"], REL_TOL, "rel")
    cond_fn = clip_model.clip_cond_fn(model, variables, tokens, lens, float(io["grad_scale"]))
    grad = jax.jit(cond_fn)(cond_x, cond_t)
    yield _compare("cond_grad", np.transpose(np.asarray(grad), (0, 3, 1, 2)), io["cond_grad"])

    n_context = 1 + (config.clip.image_size // config.clip.patch_size) ** 2
    yield compare("clip: image_attn_bias", clip_model.attention_bias(n_context, causal=False),
                  io["image_attn_bias"], 0.0, "exact")
    yield compare("clip: text_attn_bias", clip_model.attention_bias(config.clip.max_text_len, causal=True),
                  io["text_attn_bias"], 0.0, "exact")
