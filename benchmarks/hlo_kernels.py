"""The kernels of a compiled XLA program, each with its FLOPs and bytes, and a roofline time for each.

XLA's optimised HLO (`compiled.as_text()`) is the program as the backend
will run it: on a GPU every top-level instruction of a computation, other
than tuples, parameters, bitcasts and the like, is one kernel (a fusion, a
cuDNN or cuBLAS call, a copy). So, without running anything, the HLO says
how many kernels one sampling step launches, how many bytes each reads and
writes, and which of them do the FLOPs. From that, a roofline model:

    time(kernel) = max(flops / compute rate, bytes / bandwidth) + overhead

summed over the kernels, `while` bodies `known_trip_count` times. It is a
model, not a measurement: small convolutions run below the matmul rate,
caches make some reads free, and the per-kernel overhead (launch and ramp)
depends on whether XLA puts the loop in a CUDA graph. Its worth is in the
counts (kernels per step, bytes by kind of kernel) and in saying which
kernels a profile should look at first.

Accounting, per kernel:
  bytes  every distinct operand and every result array, whole (a fusion that
         reads only a slice of an operand, or updates one in place, is
         over-counted; neither is common in these programs).
  flops  the tensor-core work: cuDNN convolutions (forward, backward input
         and filter: 2 x the forward's multiply-adds), cuDNN fused attention
         (forward QK^T and PV: 4 B N T S H; backward with the recomputed
         QK^T: 10 B N T S H), cuBLAS gemms and the dots inside fusions
         (Triton gemms). Elementwise and reduction work is left out.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Iterator

ARRAY = re.compile(r"\b(pred|[su](?:8|16|32|64)|f16|bf16|f32|f64|c64|c128)\[([\d,]*)\]")
DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4,
               "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
# Instructions that launch nothing: they name, group or reinterpret buffers.
# (An async op's work is counted once, at its start.)
FREE_OPCODES = frozenset({"parameter", "get-tuple-element", "tuple", "bitcast", "constant", "after-all",
                          "add-dependency", "opt-barrier", "partition-id", "replica-id", "async-done"})
CONTROL_OPCODES = frozenset({"while", "conditional", "call", "async-start"})

# The model's defaults: the rates JAX 0.11.2 reached on the H100
# (an 8192^3 bf16 matmul at 629 TFLOP/s; about 3 TB/s of the 3.35 of HBM3),
# and about 2 us of launch and ramp per kernel.
COMPUTE_TFLOPS = 629.0
MEMORY_TBPS = 3.0
OVERHEAD_US = 2.0

_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%([^\s=]+) = (.*)$")
_COMPUTATION = re.compile(r"^(ENTRY\s+)?%([^\s(]+)\s*\(.*\{\s*$")
_OPCODE = re.compile(r"\s*([a-z][\w-]*)\(")
_OPERAND = re.compile(r"%([^\s,)]+)")


def array_bytes(type_text: str) -> dict[str, int]:
    """Bytes per dtype of every array in an HLO type (an array or a tuple of them)."""
    by_dtype: dict[str, int] = {}
    for dtype, dims in ARRAY.findall(type_text):
        size = math.prod(int(d) for d in dims.split(",") if d) * DTYPE_BYTES[dtype]
        by_dtype[dtype] = by_dtype.get(dtype, 0) + size
    return by_dtype


def array_shapes(type_text: str) -> list[tuple[int, ...]]:
    """The dimensions of every array in an HLO type, in order."""
    return [tuple(int(d) for d in dims.split(",") if d) for _, dims in ARRAY.findall(type_text)]


def _closing(text: str, start: int) -> int:
    """Index of the parenthesis closing the one at text[start]."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"(": 1, ")": -1}.get(text[index], 0)
        if depth == 0:
            return index
    raise ValueError(f"unbalanced parentheses in HLO: {text[start:start + 80]!r}")


@dataclasses.dataclass(frozen=True)
class Instruction:
    name: str
    type_text: str
    opcode: str
    operands: tuple[str, ...]
    arguments: str  # the text between the parentheses (a parameter's index, a constant's value)
    attributes: str

    def attribute(self, key: str) -> str | None:
        """The value of `key=value` in the attributes (up to the next comma or space), if present."""
        found = re.search(rf"\b{re.escape(key)}=([^\s,]+)", self.attributes)
        return found.group(1) if found else None


def parse_instruction(line: str) -> Instruction | None:
    """One HLO instruction line, or None for anything else."""
    found = _INSTRUCTION.match(line)
    if not found:
        return None
    name, rest = found.groups()
    type_end = _closing(rest, 0) + 1 if rest.startswith("(") else rest.index(" ")
    opcode = _OPCODE.match(rest, type_end)
    if not opcode:
        return None
    open_paren = opcode.end() - 1
    close_paren = _closing(rest, open_paren)
    return Instruction(name=name, type_text=rest[:type_end], opcode=opcode.group(1),
                       operands=tuple(_OPERAND.findall(rest[open_paren:close_paren])),
                       arguments=rest[open_paren + 1:close_paren],
                       attributes=rest[close_paren + 1:])


@dataclasses.dataclass
class Module:
    """An HLO module's computations (name -> instructions in order) and its entry."""
    computations: dict[str, list[Instruction]]
    entry: str

    def types(self, computation: str) -> dict[str, str]:
        return {i.name: i.type_text for i in self.computations[computation]}


def parse_module(text: str) -> Module:
    """Parses `compiled.as_text()` (an optimised HLO module)."""
    computations: dict[str, list[Instruction]] = {}
    entry, current = None, None
    for line in text.splitlines():
        header = _COMPUTATION.match(line)
        if header:
            current = header.group(2)
            computations[current] = []
            entry = current if header.group(1) else entry
        elif line.startswith("}"):
            current = None
        elif current is not None:
            instruction = parse_instruction(line)
            if instruction is not None:
                computations[current].append(instruction)
    if entry is None:
        raise ValueError("no ENTRY computation in the HLO text")
    return Module(computations, entry)


def trip_count(instruction: Instruction) -> int:
    """A `while` loop's known trip count (1 if XLA does not know it)."""
    found = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', instruction.attributes)
    return int(found.group(1)) if found else 1


def _custom_call_target(instruction: Instruction) -> str:
    found = re.search(r'custom_call_target="([^"]+)"', instruction.attributes)
    return found.group(1) if found else ""


def _conv_flops(instruction: Instruction, types: dict[str, str], target: str) -> float:
    # 2 x the forward convolution's multiply-adds, whichever pass this is:
    # forward output elements x (filter elements / output features).
    result = array_shapes(instruction.type_text)[0]
    operands = [array_shapes(types[name])[0] for name in instruction.operands[:2]]
    if target.endswith("convBackwardFilter"):
        filter_shape, forward_out = result, operands[1]
    elif target.endswith("convBackwardInput"):
        filter_shape, forward_out = operands[1], operands[0]
    else:
        filter_shape, forward_out = operands[1], result
    labels = instruction.attribute("dim_labels") or "b01f_o01i->b01f"
    out_features = filter_shape[labels.split("_", 1)[1].split("->")[0].index("o")]
    return 2.0 * math.prod(forward_out) * math.prod(filter_shape) / out_features


def _attention_flops(instruction: Instruction, types: dict[str, str], target: str) -> float:
    """2 x multiply-adds of cuDNN attention: QK^T and PV forward, five matmuls backward.

    q is (B, T, N, H) and k (B, S, N, H) as the layout constraints list them;
    without those, the operands' shapes and the backend config's
    `bmm1_dot_dimension_numbers` (QK^T's batch and contracting axes) say
    which axis of k is S.
    """
    found = re.search(r"operand_layout_constraints=\{((?:[^{}]|\{[^{}]*\})*)\}", instruction.attributes)
    shapes = array_shapes(found.group(1)) if found else []
    if len(shapes) >= 2:
        q, k = shapes[:2]
        key_length = k[1]
    else:
        bmm1 = re.search(r'"bmm1_dot_dimension_numbers":\{([^{}]*)\}', instruction.attributes)
        operands = [array_shapes(types.get(name, "")) for name in instruction.operands[:2]]
        if bmm1 is None or len(operands) < 2 or not all(operands):
            raise ValueError(f"attention call %{instruction.name}: neither operand_layout_constraints nor "
                             "bmm1_dot_dimension_numbers give the q and k shapes")
        q, k = operands[0][0], operands[1][0]
        reduced = {int(d) for key in ("rhs_contracting_dimensions", "rhs_batch_dimensions")
                   for dims in re.findall(rf'"{key}":\[([^\]]*)\]', bmm1.group(1))
                   for d in re.findall(r"\d+", dims)}
        key_length = math.prod(size for axis, size in enumerate(k) if axis not in reduced)
    per_matmul = 2.0 * math.prod(q) * key_length
    return per_matmul * (5 if "Backward" in target else 2)


def _dims(attributes: str, key: str) -> list[int]:
    found = re.search(rf"\b{key}=\{{([\d,]*)\}}", attributes)
    return [int(d) for d in found.group(1).split(",") if d] if found else []


def _dot_flops(instruction: Instruction, types: dict[str, str]) -> float:
    lhs = array_shapes(types[instruction.operands[0]])[0]
    contracted = math.prod(lhs[d] for d in _dims(instruction.attributes, "lhs_contracting_dims"))
    return 2.0 * math.prod(array_shapes(instruction.type_text)[0]) * contracted


def _gemm_call_flops(instruction: Instruction, types: dict[str, str]) -> float:
    # cuBLAS custom calls carry their dimension numbers in the backend config.
    found = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', instruction.attributes)
    lhs = array_shapes(types[instruction.operands[0]])[0]
    contracted = math.prod(lhs[int(d)] for d in re.findall(r"\d+", found.group(1))) if found else 0
    return 2.0 * math.prod(array_shapes(instruction.type_text)[0]) * contracted


def instruction_flops(module: Module, instruction: Instruction, types: dict[str, str]) -> float:
    """Tensor-core FLOPs of one instruction: convolutions, attention, gemms, dots, and those inside fusions."""
    target = _custom_call_target(instruction)
    if "conv" in target or instruction.opcode == "convolution":
        return _conv_flops(instruction, types, target)
    if "fmha" in target:
        return _attention_flops(instruction, types, target)
    if "gemm" in target or "matmul" in target:
        return _gemm_call_flops(instruction, types)
    if instruction.opcode == "dot":
        return _dot_flops(instruction, types)
    called = (instruction.attribute("calls") or "").lstrip("%")
    if instruction.opcode == "fusion" and called in module.computations:
        inner_types = module.types(called)
        return sum(instruction_flops(module, inner, inner_types) for inner in module.computations[called])
    return 0.0


# Ops through which a slice further on still limits what is read of an
# operand: elementwise ones, reshapes and concatenations (for which the
# slice's size is an upper bound on each operand's share).
_PASS_THROUGH = frozenset({"convert", "bitcast", "bitcast-convert", "reshape", "copy", "concatenate", "add",
                           "subtract", "multiply", "divide", "maximum", "minimum", "negate", "select", "compare",
                           "exponential", "tanh", "logistic", "sqrt", "rsqrt", "abs"})


def _elements_read(body: list[Instruction], name: str) -> int | None:
    """Elements of `name` a fused computation reads, if it reaches only slices (through the ops of
    _PASS_THROUGH); None if it reads the whole array."""
    total = 0
    for user in (i for i in body if name in i.operands):
        if user.opcode in ("slice", "dynamic-slice") and user.operands[0] == name:
            total += math.prod(array_shapes(user.type_text)[0])
        elif user.opcode in _PASS_THROUGH:
            inner = _elements_read(body, user.name)
            if inner is None:
                return None
            total += inner
        else:
            return None
    return total or None


def _operand_bytes(module: Module, instruction: Instruction, types: dict[str, str]) -> list[int]:
    """Bytes each distinct operand of a kernel reads: only the slices taken, where a fusion just slices it."""
    read = {name: sum(array_bytes(types.get(name, "")).values()) for name in dict.fromkeys(instruction.operands)}
    called = (instruction.attribute("calls") or "").lstrip("%")
    if instruction.opcode != "fusion" or called not in module.computations:
        return list(read.values())
    body = module.computations[called]
    for parameter in (i for i in body if i.opcode == "parameter"):
        elements = _elements_read(body, parameter.name)
        if elements is not None:
            name = instruction.operands[int(parameter.arguments)]
            itemsize = DTYPE_BYTES[ARRAY.search(parameter.type_text).group(1)]
            read[name] = min(read[name], elements * itemsize)
    return list(read.values())


def _fuses(module: Module, instruction: Instruction, opcode: str) -> bool:
    """Whether a fusion computes `opcode` somewhere inside (nested fusions included)."""
    called = (instruction.attribute("calls") or "").lstrip("%")
    return instruction.opcode == "fusion" and called in module.computations and any(
        inner.opcode == opcode or _fuses(module, inner, opcode) for inner in module.computations[called])


def kernel_class(module: Module, instruction: Instruction, flops: float) -> str:
    """convolution, attention, gemm, reduction, elementwise, collective or other."""
    target = _custom_call_target(instruction)
    if "conv" in target or instruction.opcode == "convolution" or _fuses(module, instruction, "convolution"):
        return "convolution"
    if "fmha" in target:
        return "attention"
    if flops > 0 or "gemm" in target or "matmul" in target:
        return "gemm"
    kind = instruction.attribute("kind")
    if instruction.opcode == "fusion" and kind == "kInput":
        return "reduction"
    if instruction.opcode == "fusion":
        return "elementwise"
    if instruction.opcode.startswith(("all-", "reduce-scatter", "collective", "send", "recv")):
        return "collective"
    return "other"


@dataclasses.dataclass(frozen=True)
class Kernel:
    name: str
    kind: str
    flops: float
    bytes: float
    op_name: str
    trips: int  # how many times the program runs it (loop trip counts multiplied)


def _op_name(instruction: Instruction) -> str:
    found = re.search(r'op_name="([^"]*)"', instruction.attributes)
    return found.group(1) if found else ""


def kernels(module: Module, computation: str | None = None, trips: int = 1) -> Iterator[Kernel]:
    """Every kernel a run of `computation` (default: the entry) launches, loops unrolled by trip count."""
    computation = computation or module.entry
    types = module.types(computation)
    for instruction in module.computations[computation]:
        if instruction.opcode in FREE_OPCODES:
            continue
        if instruction.opcode in CONTROL_OPCODES:
            inner_trips = trips * (trip_count(instruction) if instruction.opcode == "while" else 1)
            for key in ("body", "to_apply", "calls"):
                called = instruction.attribute(key)
                if called and called.lstrip("%") in module.computations:
                    yield from kernels(module, called.lstrip("%"), inner_trips)
            branches = re.search(r"branch_computations=\{([^}]*)\}", instruction.attributes)
            if branches:  # the costliest branch, as an upper bound
                names = [n.strip().lstrip("%") for n in branches.group(1).split(",")]
                costs = [list(kernels(module, n, inner_trips)) for n in names]
                yield from max(costs, key=lambda ks: sum(k.bytes + k.flops for k in ks))
            continue
        flops = instruction_flops(module, instruction, types)
        operand_bytes = sum(_operand_bytes(module, instruction, types))
        result_bytes = sum(array_bytes(instruction.type_text).values())
        yield Kernel(instruction.name, kernel_class(module, instruction, flops), flops,
                     float(operand_bytes + result_bytes), _op_name(instruction), trips)


def kernel_seconds(kernel: Kernel, compute_tflops: float = COMPUTE_TFLOPS, memory_tbps: float = MEMORY_TBPS,
                   overhead_us: float = OVERHEAD_US) -> float:
    """One run of `kernel` under the roofline model (the module docstring)."""
    return max(kernel.flops / (compute_tflops * 1e12), kernel.bytes / (memory_tbps * 1e12)) + overhead_us * 1e-6


def hlo_text(program: Any) -> str | None:
    """The optimised HLO of a `jax.stages.Compiled` (or the text itself); None where the backend has none."""
    if isinstance(program, str):
        return program
    try:
        return program.as_text()
    except Exception:  # noqa: BLE001  (a backend without HLO text: no answer, not a failed benchmark)
        return None


def report(program: Any, compute_tflops: float = COMPUTE_TFLOPS, memory_tbps: float = MEMORY_TBPS,
           overhead_us: float = OVERHEAD_US, top: int = 10) -> dict[str, Any] | None:
    """The kernel accounting and predicted time of a compiled program (or its HLO text).

    Returns:
      {"model": the rates used, "program": totals over one run of the
      program, "by_kind": the same per kind of kernel, "step": totals of the
      largest loop body (one sampling step) if there is a loop, else None,
      "top": the `top` kernels by predicted time over the run}, or None when
      the text has no entry computation. Totals are {"kernels" (launches),
      "flops", "bytes", "predicted_s", "bound_s": {"compute", "memory",
      "overhead"}}.
    """
    try:
        module = parse_module(hlo_text(program) or "")
    except ValueError:
        return None
    seconds = {"compute_tflops": compute_tflops, "memory_tbps": memory_tbps, "overhead_us": overhead_us}
    every = list(kernels(module))

    def totals(group: list[Kernel]) -> dict[str, Any]:
        return {"kernels": sum(k.trips for k in group),
                "flops": sum(k.flops * k.trips for k in group),
                "bytes": sum(k.bytes * k.trips for k in group),
                "predicted_s": sum(kernel_seconds(k, **seconds) * k.trips for k in group),
                "bound_s": {"compute": sum(k.flops * k.trips for k in group) / (compute_tflops * 1e12),
                            "memory": sum(k.bytes * k.trips for k in group) / (memory_tbps * 1e12),
                            "overhead": sum(k.trips for k in group) * overhead_us * 1e-6}}

    step = None
    loops = [i for i in module.computations[module.entry] if i.opcode == "while"]
    if loops:  # one iteration of the costliest top-level loop (a sampling step), inner loops included
        bodies = {loop.name: list(kernels(module, (loop.attribute("body") or "").lstrip("%"))) for loop in loops}
        loop = max(loops, key=lambda i: sum(k.flops + k.bytes * k.trips for k in bodies[i.name]))
        step = {**totals(bodies[loop.name]), "trips": trip_count(loop)}
    kinds = sorted({k.kind for k in every})
    ranked = sorted(every, key=lambda k: kernel_seconds(k, **seconds) * k.trips, reverse=True)[:top]
    return {"model": seconds, "program": totals(every),
            "by_kind": {kind: totals([k for k in every if k.kind == kind]) for kind in kinds},
            "step": step,
            "top": [{"name": k.name, "kind": k.kind, "op_name": k.op_name, "flops": k.flops, "bytes": k.bytes,
                     "trips": k.trips, "predicted_s": kernel_seconds(k, **seconds) * k.trips} for k in ranked]}


def loop_state(program: Any) -> dict[str, Any] | None:
    """What the biggest `while` loop of a compiled program (or HLO text) carries, in bytes per dtype.

    The sampling loops close over the float32 parameters, and with bfloat16
    compute every layer casts its kernel. Unless those casts are hoisted out
    of the loop (XLA:GPU does not; `sampling/precast.py` does), the loop
    carries the kernels as f32 and casts them again at every step.

    Returns:
      {"total_bytes", "bytes_by_dtype"} of the while loop with the largest
      state, or None if the program has no loop (or no HLO text).
    """
    best = None
    for line in (hlo_text(program) or "").splitlines():
        head, found, _ = line.partition(" while(")
        if not found or "=" not in head:
            continue
        by_dtype = array_bytes(head.split("=", 1)[1])
        total = sum(by_dtype.values())
        if best is None or total > best["total_bytes"]:
            best = {"total_bytes": total, "bytes_by_dtype": dict(sorted(by_dtype.items()))}
    return best


if __name__ == "__main__":  # python benchmarks/hlo_kernels.py HLO.txt: the report of a saved HLO text
    import pathlib
    import sys
    print(json.dumps(report(pathlib.Path(sys.argv[1]).read_text()), indent=1))
