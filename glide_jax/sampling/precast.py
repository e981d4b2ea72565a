"""Casting the parameters to the compute dtype once, before a sampling loop.

With `config.model.dtype = "bfloat16"` the parameters stay float32 and each
layer casts its kernel to bfloat16 when it runs. Inside the reverse loop
that cast happens at every step, and XLA:GPU does not move it out of the
loop: compiled for an H100, the base model's 100-step loop carries its
float32 kernels (1.23 GB) and converts them again at each step (read 4
bytes, write 2, read 2 per parameter), about 0.75 ms a step of pure memory
traffic (docs/PERFORMANCE.md, "Per-step latency").

`precast` does that cast once. It traces one model call and, for every
parameter leaf, looks at each place the leaf is used: a leaf whose every use
is a cast to the same narrower dtype is cast up front, so the model finds it
already in that dtype and its own cast becomes a no-op. Leaves used in any
other way (the float32 time embedding and output head, GroupNorm scales) are
left alone. The samples are bit for bit those of the uncast parameters: each
leaf is rounded once, exactly as the model would round it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

_NARROW = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def precast(fn: Callable[..., Any], params: Any, *args, **kwargs) -> Any:
    """`params` with each leaf that `fn` only ever reads cast to bf16/fp16 pre-cast.

    Args:
      fn: `fn(params, *args, **kwargs)`, e.g. one U-Net call.
      params: the parameter tree (or variables) `fn` takes first.
      *args, **kwargs: example arguments of `fn` (arrays or
        jax.ShapeDtypeStruct; only shapes and dtypes are used).

    Returns:
      A tree like `params` in which those leaves are already in the narrower
      dtype; every other leaf is the same array as before.
    """
    leaves, treedef = jax.tree_util.tree_flatten(params)
    specs = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)),
                                   (leaves, args, kwargs))
    closed = jax.make_jaxpr(
        lambda ls, a, kw: fn(jax.tree_util.tree_unflatten(treedef, ls), *a, **kw))(*specs)
    targets = [_sole_cast(closed.jaxpr, var) for var in closed.jaxpr.invars[:len(leaves)]]
    cast = [leaf if dtype is None or jnp.result_type(leaf) == dtype else jnp.asarray(leaf).astype(dtype)
            for leaf, dtype in zip(leaves, targets)]
    return jax.tree_util.tree_unflatten(treedef, cast)


def _sole_cast(jaxpr, var) -> jnp.dtype | None:
    """The narrower dtype every use of `var` in `jaxpr` casts it to, else None."""
    if any(out is var for out in jaxpr.outvars):
        return None
    found: set = set()
    for eqn in jaxpr.eqns:
        positions = [i for i, operand in enumerate(eqn.invars) if operand is var]
        if not positions:
            continue
        if eqn.primitive.name == "convert_element_type":
            found.add(jnp.dtype(eqn.params["new_dtype"]))
            continue
        inner = _inner_jaxprs(eqn)
        if not inner:
            return None  # read by an op other than a cast
        for sub in inner:
            for i in positions:
                found.add(_sole_cast(sub, sub.invars[i]))
    if len(found) != 1:
        return None  # unused, or cast to several dtypes
    dtype = found.pop()
    return dtype if dtype in _NARROW else None


def _inner_jaxprs(eqn) -> list:
    """Sub-jaxprs of a call-like equation whose inputs are the equation's, in order.

    pjit, closed_call, remat, custom_jvp/vjp calls and the like pass their
    operands straight through; anything else (while, cond: extra or split
    operands) gives [] and counts as a non-cast use.
    """
    found = []
    for value in eqn.params.values():
        sub = value.jaxpr if isinstance(value, jex_core.ClosedJaxpr) else value
        if isinstance(sub, jex_core.Jaxpr) and len(sub.invars) == len(eqn.invars):
            found.append(sub)
    return found
