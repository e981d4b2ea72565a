"""glide_jax.convert: PyTorch (glide-text2im) checkpoints -> Flax params.

- `core`: `load_state(path)` (.pt via torch weights_only, or .npz),
  `param_template`, `convert_state` (strict mapping; `ConversionError` lists
  missing, unexpected and mis-shaped keys) and the layout transforms.
- `unet`: the U-Net + text transformer name table, `convert_unet(state, config)`.
- `clip`: the noised CLIP encoders.
- `python -m glide_jax.convert INPUT --kind KIND --output DIR`: writes an
  exported checkpoint (`glide_jax.checkpoints`).
"""
