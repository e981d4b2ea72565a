"""glide_jax.convert: PyTorch (glide-text2im) checkpoints -> Flax params.

- `core`: `load_state(path)` (.pt via torch weights_only, or .npz),
  `param_template`, `convert_state` (strict mapping; `ConversionError` lists
  missing, unexpected and mis-shaped keys) and the layout transforms.
- `unet`: the U-Net + text transformer name table, `convert_unet(state, config)`.
- `clip`: the noised CLIP encoders.
- `options`: the config to convert with (a preset, or glide-text2im options
  JSON whose unknown keys and mistyped values are refused).
- `output`: what `--output` may replace, and the all-or-nothing write.
- `python -m glide_jax.convert INPUT --kind KIND --output DIR`: writes an
  exported checkpoint (`glide_jax.checkpoints`).
"""
