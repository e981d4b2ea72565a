"""glide_jax.models: GLIDE's networks in Flax linen (NHWC, float32 params).

- `create_model(config)`, `example_inputs(config, batch_size)` and
  `abstract_params(config)` (from `factory`); `model.apply({"params": params},
  **inputs)` with the params of `glide_jax.checkpoints.load_model`.
- `unet.Text2ImUNet`: the text-conditional ADM U-Net (base, upsample,
  inpaint, upsample_inpaint), with `encode_text(tokens, mask)`.
- `text_transformer.TextTransformer`: the caption encoder.
- `layers`: shared blocks (timestep embedding, norms, attention).
- `clip`: the noised CLIP used for CLIP guidance.
"""

from glide_jax.models.factory import abstract_params, create_model, example_inputs

__all__ = ["abstract_params", "create_model", "example_inputs"]
