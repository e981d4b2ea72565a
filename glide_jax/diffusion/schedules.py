"""Beta schedules and timestep respacing, in float64 numpy.

The schedules are host-side constants: they are computed once in float64, as
glide-text2im does, and only the per-step coefficients derived from them are
rounded to float32 when a jitted function uses them (see `gaussian.py`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

# Cap on a single beta so that 1 - beta stays away from 0 near t = T
# (Nichol & Dhariwal 2021, section 3.2).
MAX_BETA = 0.999

# Offset s of the cosine schedule, ibid. eq. 17.
COSINE_OFFSET = 0.008

SCHEDULE_NAMES = ("linear", "squaredcos_cap_v2")


def get_named_beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """Returns the betas of a named schedule.

    Args:
      name: "linear" (Ho et al. 2020, scaled so that any step count covers the
        same range as their 1000 steps) or "squaredcos_cap_v2" (the cosine
        schedule of Nichol & Dhariwal 2021, eq. 17, betas capped at 0.999).
      num_timesteps: number of diffusion steps T.

    Returns:
      (T,) float64 betas.
    """
    if num_timesteps <= 0:
        raise ValueError(f"num_timesteps must be positive, got {num_timesteps}")
    if name == "linear":
        scale = 1000 / num_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "squaredcos_cap_v2":
        return betas_for_alpha_bar(num_timesteps, _cosine_alpha_bar)
    raise ValueError(f"unknown noise schedule {name!r}; choose from {', '.join(SCHEDULE_NAMES)}")


def _cosine_alpha_bar(u: float) -> float:
    # Python floats (float64), evaluated like the reference's math.cos lambda.
    return math.cos((u + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2


def betas_for_alpha_bar(num_timesteps: int, alpha_bar: Callable[[float], float],
                        max_beta: float = MAX_BETA) -> np.ndarray:
    """Discretises a continuous alpha-bar(u), u in [0, 1], into betas.

    beta_i = min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta).

    Returns:
      (T,) float64 betas.
    """
    betas = []
    for i in range(num_timesteps):
        ratio = alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps)
        betas.append(min(1 - ratio, max_beta))
    return np.array(betas, dtype=np.float64)


def space_timesteps(num_timesteps: int, spec: str | Sequence[int] | None) -> tuple[int, ...]:
    """Picks the steps of the original process that a respaced process keeps.

    Args:
      num_timesteps: steps of the original process.
      spec: which steps to keep:
        - None or "": all of them;
        - "N" or "a,b,c" (or a sequence of ints): the process is cut into as
          many equal sections as there are counts (the first sections get one
          extra step when it does not divide) and each section is strided
          evenly to its count, positions rounded with Python's round() (half
          to even, so "25" of 1000 gives stride 166.5 -> 166, 333, 500, ...);
        - "ddimN": the integer stride that gives exactly N steps from 0
          (the DDIM paper's striding);
        - "fast27": "10,10,3,2,2" with the last step T-1 replaced by T-3,
          which reduces DDIM artefacts from the noisiest step.

    Returns:
      The kept original step indices, sorted ascending.
    """
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return tuple(range(num_timesteps))
    if isinstance(spec, str):
        spec = spec.strip()
        if spec.startswith("ddim"):
            return _ddim_steps(num_timesteps, _parse_count(spec[len("ddim"):], spec))
        if spec == "fast27":
            steps = set(space_timesteps(num_timesteps, "10,10,3,2,2"))
            steps.remove(num_timesteps - 1)
            steps.add(num_timesteps - 3)
            return tuple(sorted(steps))
        counts = [_parse_count(part, spec) for part in spec.split(",")]
    else:
        counts = [int(c) for c in spec]
    if sum(counts) < 1:
        raise ValueError(f"timestep respacing {spec!r} keeps no step; give at least 1")
    return _section_steps(num_timesteps, counts)


def _parse_count(text: str, spec: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"timestep respacing {spec!r}: {text!r} is not an integer; expected "
                         "'N', 'a,b,c', 'ddimN' or 'fast27'") from None


def _ddim_steps(num_timesteps: int, count: int) -> tuple[int, ...]:
    for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == count:
            return tuple(range(0, num_timesteps, stride))
    raise ValueError(f"timestep respacing 'ddim{count}': no integer stride gives exactly "
                     f"{count} steps out of {num_timesteps}")


def _section_steps(num_timesteps: int, counts: Sequence[int]) -> tuple[int, ...]:
    size_per, extra = divmod(num_timesteps, len(counts))
    start = 0
    kept: set[int] = set()
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count < 0 or size < count:
            raise ValueError(f"timestep respacing {list(counts)}: cannot take {count} steps "
                             f"from a section of {size} (of {num_timesteps} steps)")
        stride = 1 if count <= 1 else (size - 1) / (count - 1)
        position = 0.0
        for _ in range(count):
            # Python's round() rounds half to even, as the reference does.
            kept.add(start + round(position))
            position += stride
        start += size
    return tuple(sorted(kept))


def respaced_betas(base_betas: np.ndarray, use_timesteps: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Betas of the process that keeps only `use_timesteps` of the original.

    The kept steps keep their cumulative alpha-bar: beta'_k = 1 -
    alphabar[s_k] / alphabar[s_{k-1}] (Nichol & Dhariwal 2021, section 4).

    Args:
      base_betas: (T,) float64 betas of the original process.
      use_timesteps: kept original indices.

    Returns:
      (betas (S,) float64, timestep_map (S,) int64 original index of each
      respaced step).
    """
    keep = set(int(s) for s in use_timesteps)
    alphas_cumprod = np.cumprod(1.0 - np.asarray(base_betas, dtype=np.float64))
    last = 1.0
    betas, timestep_map = [], []
    for i, alpha_cumprod in enumerate(alphas_cumprod):
        if i in keep:
            betas.append(1 - alpha_cumprod / last)
            last = alpha_cumprod
            timestep_map.append(i)
    return np.array(betas, dtype=np.float64), np.array(timestep_map, dtype=np.int64)
