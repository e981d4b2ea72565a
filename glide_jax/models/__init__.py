"""glide_jax.models: GLIDE's networks in Flax linen (NHWC, float32 params).

- `factory.create_model(config)` / `factory.example_inputs(config, batch_size)`
- `unet.Text2ImUNet`: the text-conditional ADM U-Net (base, upsample,
  inpaint, upsample_inpaint), with `encode_text(tokens, mask)`.
- `text_transformer.TextTransformer`: the caption encoder.
- `layers`: shared blocks (timestep embedding, norms, attention).
- `clip`: the noised CLIP used for CLIP guidance.
"""
