"""The kernel accounting of compiled HLO: against hand counts on a GPU-style module, and the jaxpr count on CPU."""

import jax
import jax.numpy as jnp
import pytest

from benchmarks import hlo_kernels, roofline

# A scheduled module in XLA:GPU's style: a 10-step loop whose body runs a
# cuDNN convolution and cuDNN attention (k and v the same buffer), then a
# Triton gemm (a dot inside a nested fusion) and a fusion that only slices
# its operand.
GPU_STYLE_HLO = """HloModule jit_run, is_scheduled=true

%fused_slice (param_0: f32[16,8]) -> f32[4,8] {
  %param_0 = f32[16,8]{1,0} parameter(0)
  ROOT %slice.1 = f32[4,8]{1,0} slice(%param_0), slice={[0:4], [0:8]}
}

%gemm_inner (p0: bf16[32,64], p1: bf16[64,128]) -> f32[32,128] {
  %p0 = bf16[32,64]{1,0} parameter(0)
  %p1 = bf16[64,128]{1,0} parameter(1)
  ROOT %dot.1 = f32[32,128]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%gemm_fusion (param_0.1: bf16[32,64], param_1.1: bf16[64,128]) -> f32[32,128] {
  %param_0.1 = bf16[32,64]{1,0} parameter(0)
  %param_1.1 = bf16[64,128]{1,0} parameter(1)
  ROOT %nested = f32[32,128]{1,0} fusion(%param_0.1, %param_1.1), kind=kCustom, calls=%gemm_inner
}

%add_one (i.2: s32[], one.2: s32[]) -> s32[] {
  %i.2 = s32[] parameter(0)
  %one.2 = s32[] parameter(1)
  ROOT %sum = s32[] add(%i.2, %one.2)
}

%cond (arg.1: (s32[], bf16[2,8,8,16], bf16[16,3,3,16], bf16[2,64,4,32], bf16[2,80,4,32])) -> pred[] {
  %arg.1 = (s32[], bf16[2,8,8,16]{3,2,1,0}, bf16[16,3,3,16]{3,2,1,0}, bf16[2,64,4,32]{3,2,1,0}, /*index=4*/bf16[2,80,4,32]{3,2,1,0}) parameter(0)
  %i.1 = s32[] get-tuple-element(%arg.1), index=0
  %ten = s32[] constant(10)
  ROOT %lt = pred[] compare(%i.1, %ten), direction=LT
}

%body (arg: (s32[], bf16[2,8,8,16], bf16[16,3,3,16], bf16[2,64,4,32], bf16[2,80,4,32])) -> (s32[], bf16[2,8,8,16], bf16[16,3,3,16], bf16[2,64,4,32], bf16[2,80,4,32]) {
  %arg = (s32[], bf16[2,8,8,16]{3,2,1,0}, bf16[16,3,3,16]{3,2,1,0}, bf16[2,64,4,32]{3,2,1,0}, /*index=4*/bf16[2,80,4,32]{3,2,1,0}) parameter(0)
  %i = s32[] get-tuple-element(%arg), index=0
  %x = bf16[2,8,8,16]{3,2,1,0} get-tuple-element(%arg), index=1
  %w = bf16[16,3,3,16]{3,2,1,0} get-tuple-element(%arg), index=2
  %q = bf16[2,64,4,32]{3,2,1,0} get-tuple-element(%arg), index=3
  %kv = bf16[2,80,4,32]{3,2,1,0} get-tuple-element(%arg), index=4
  %conv = (bf16[2,8,8,16]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward", metadata={op_name="jit(run)/while/body/in_conv/conv_general_dilated"}
  %y = bf16[2,8,8,16]{3,2,1,0} get-tuple-element(%conv), index=0
  %attn = (bf16[2,4,64,32]{3,1,2,0}, u8[0]{0}) custom-call(%q, %kv, %kv), custom_call_target="__cudnn$fmhaSoftmax", operand_layout_constraints={bf16[2,64,4,32]{3,2,1,0}, bf16[2,80,4,32]{3,2,1,0}, bf16[2,80,4,32]{3,2,1,0}}, api_version=API_VERSION_STATUS_RETURNING
  %one = s32[] constant(1)
  %next = s32[] fusion(%i, %one), kind=kLoop, calls=%add_one
  ROOT %out = (s32[], bf16[2,8,8,16]{3,2,1,0}, bf16[16,3,3,16]{3,2,1,0}, bf16[2,64,4,32]{3,2,1,0}, /*index=4*/bf16[2,80,4,32]{3,2,1,0}) tuple(%next, %y, %w, %q, %kv)
}

ENTRY %main.1 (a: bf16[32,64], b: bf16[64,128], c: f32[16,8], init: (s32[], bf16[2,8,8,16], bf16[16,3,3,16], bf16[2,64,4,32], bf16[2,80,4,32])) -> f32[4,8] {
  %a = bf16[32,64]{1,0} parameter(0)
  %b = bf16[64,128]{1,0} parameter(1)
  %c = f32[16,8]{1,0} parameter(2)
  %init = (s32[], bf16[2,8,8,16]{3,2,1,0}, bf16[16,3,3,16]{3,2,1,0}, bf16[2,64,4,32]{3,2,1,0}, /*index=4*/bf16[2,80,4,32]{3,2,1,0}) parameter(3)
  %while = (s32[], bf16[2,8,8,16]{3,2,1,0}, bf16[16,3,3,16]{3,2,1,0}, bf16[2,64,4,32]{3,2,1,0}, /*index=4*/bf16[2,80,4,32]{3,2,1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"10"},"known_init_step":{"init":"0","step":"1"}}
  %gemm = f32[32,128]{1,0} fusion(%a, %b), kind=kCustom, calls=%gemm_fusion, backend_config={"fusion_backend_config":{"kind":"__triton_nested_gemm_fusion"}}
  ROOT %sliced = f32[4,8]{1,0} fusion(%c), kind=kLoop, calls=%fused_slice
}
"""

CONV_FLOPS = 2 * (2 * 8 * 8 * 16) * (3 * 3 * 16)  # output elements x 3x3x16 taps
ATTENTION_FLOPS = 2 * (2 * 2 * 4 * 64 * 80 * 32)  # QK^T and PV
GEMM_FLOPS = 2 * 32 * 128 * 64


def _by_name(module):
    return {k.name: k for k in hlo_kernels.kernels(module)}


def test_gpu_style_kernels_flops_and_bytes():
    kernels = _by_name(hlo_kernels.parse_module(GPU_STYLE_HLO))
    assert set(kernels) == {"conv", "attn", "next", "gemm", "sliced"}
    conv, attn, gemm, sliced = kernels["conv"], kernels["attn"], kernels["gemm"], kernels["sliced"]
    assert (conv.kind, conv.flops, conv.trips) == ("convolution", CONV_FLOPS, 10)
    assert conv.bytes == (2 * 8 * 8 * 16 + 16 * 3 * 3 * 16 + 2 * 8 * 8 * 16) * 2
    assert conv.op_name.endswith("in_conv/conv_general_dilated")
    assert (attn.kind, attn.flops, attn.trips) == ("attention", ATTENTION_FLOPS, 10)
    assert attn.bytes == (2 * 64 * 4 * 32 + 2 * 80 * 4 * 32 + 2 * 4 * 64 * 32) * 2  # k and v read once
    assert (gemm.kind, gemm.flops, gemm.trips) == ("gemm", GEMM_FLOPS, 1)
    assert gemm.bytes == (32 * 64 + 64 * 128) * 2 + 32 * 128 * 4
    assert (sliced.kind, sliced.flops) == ("elementwise", 0)
    assert sliced.bytes == 2 * 4 * 8 * 4  # the slice it reads, not the whole 16x8 operand


def test_backward_passes_count_the_forward_multiply_adds():
    # Backward filter: (x, dy) -> dw; backward input: (dy, w) -> dx. Same
    # multiply-adds as the forward; attention's backward recomputes QK^T: 5 matmuls.
    text = GPU_STYLE_HLO.replace(
        '%attn = (bf16[2,4,64,32]{3,1,2,0}, u8[0]{0}) custom-call(%q, %kv, %kv), custom_call_target="__cudnn$fmhaSoftmax"',
        '%dw = (bf16[16,3,3,16]{3,2,1,0}, u8[0]{0}) custom-call(%x, %y), window={size=3x3 pad=1_1x1_1}, '
        'dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardFilter"\n'
        '  %dx = (bf16[2,8,8,16]{3,2,1,0}, u8[0]{0}) custom-call(%y, %w), window={size=3x3 pad=1_1x1_1}, '
        'dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardInput"\n'
        '  %attn = (bf16[2,4,64,32]{3,1,2,0}, u8[0]{0}) custom-call(%q, %kv, %kv), '
        'custom_call_target="__cudnn$fmhaSoftmaxBackward"')
    kernels = _by_name(hlo_kernels.parse_module(text))
    assert kernels["dw"].flops == kernels["dx"].flops == CONV_FLOPS
    assert kernels["attn"].flops == ATTENTION_FLOPS * 5 / 2


def test_report_totals_and_the_loop_step():
    model = {"compute_tflops": 100.0, "memory_tbps": 1.0, "overhead_us": 3.0}
    report = hlo_kernels.report(GPU_STYLE_HLO, **model)
    assert report["model"] == model
    kernels = list(hlo_kernels.kernels(hlo_kernels.parse_module(GPU_STYLE_HLO)))
    step = report["step"]
    assert step["trips"] == 10 and step["kernels"] == 3  # conv, attention, the counter
    assert step["flops"] == CONV_FLOPS + ATTENTION_FLOPS
    program = report["program"]
    assert program["kernels"] == 3 * 10 + 2
    assert program["flops"] == 10 * (CONV_FLOPS + ATTENTION_FLOPS) + GEMM_FLOPS
    assert program["bytes"] == sum(k.bytes * k.trips for k in kernels)
    expected = sum(k.trips * (max(k.flops / 100e12, k.bytes / 1e12) + 3e-6) for k in kernels)
    assert program["predicted_s"] == pytest.approx(expected)
    assert program["bound_s"]["overhead"] == pytest.approx(32 * 3e-6)
    assert sum(v["kernels"] for v in report["by_kind"].values()) == program["kernels"]
    assert report["top"][0]["name"] in {"conv", "attn"} and report["top"][0]["trips"] == 10


def test_report_without_hlo_is_none():
    assert hlo_kernels.report("") is None
    assert hlo_kernels.loop_state("") is None


def test_cpu_program_flops_match_the_jaxpr_count():
    # On XLA:CPU convolutions and dots stay top-level instructions or sit in
    # fusions; either way the count must equal the jaxpr's, scan trips included.
    def program(x, w, d):
        y = jax.nn.silu(jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC")))
        z = y.reshape(y.shape[0], -1, y.shape[-1]) @ d
        z, _ = jax.lax.scan(lambda c, _: (jnp.tanh(c @ d.T @ d), None), z, None, length=3)
        return z.sum()

    args = (jnp.ones((2, 8, 8, 4)), jnp.ones((3, 3, 4, 16)), jnp.ones((16, 16)))
    report = hlo_kernels.report(jax.jit(program).lower(*args).compile())
    assert report["program"]["flops"] == roofline.model_flops(program, *args)
    assert report["step"]["trips"] == 3 and report["step"]["flops"] == 2 * 2 * 2 * 64 * 16 * 16
    assert report["program"]["bytes"] > (2 * 8 * 8 * 4 + 3 * 3 * 4 * 16 + 2 * 8 * 8 * 16) * 4


def test_loop_state_reads_the_biggest_while_loop():
    def program(x, w):
        def step(carry, _):
            h, count = carry
            return (jnp.tanh(h @ w), count + 1), None
        (h, count), _ = jax.lax.scan(step, (x, jnp.zeros((5,), jnp.bfloat16)), None, length=16)
        return h, count

    compiled = jax.jit(program).lower(jnp.ones((4, 8)), jnp.ones((8, 8))).compile()
    state = hlo_kernels.loop_state(compiled)
    by_dtype = state["bytes_by_dtype"]
    # x (4x8) and the closed-over w (8x8) as f32, the (5,) bf16 counter, plus
    # whatever induction variables XLA adds.
    assert by_dtype["f32"] >= (4 * 8 + 8 * 8) * 4 and by_dtype["bf16"] >= 5 * 2
    assert state["total_bytes"] == sum(by_dtype.values())
    assert hlo_kernels.loop_state(jax.jit(jnp.sin).lower(jnp.ones(3)).compile()) is None
    assert hlo_kernels.loop_state(GPU_STYLE_HLO)["bytes_by_dtype"] == {
        "bf16": (2 * 8 * 8 * 16 + 16 * 3 * 3 * 16 + 2 * 64 * 4 * 32 + 2 * 80 * 4 * 32) * 2, "s32": 4}


def test_attention_without_layout_constraints_reads_the_backend_config():
    # Another XLA build may leave out operand_layout_constraints: q and k come
    # from the operands, in (B, N, T, H) order here, and QK^T's dimension
    # numbers say which axis of k is S.
    config = ('backend_config={"cudnn_fmha_backend_config":{"bmm1_dot_dimension_numbers":'
              '{"lhs_contracting_dimensions":["3"],"rhs_contracting_dimensions":["3"],'
              '"lhs_batch_dimensions":["0","1"],"rhs_batch_dimensions":["0","1"]}}}')
    line = ('  %attn = (bf16[2,4,64,32]{3,2,1,0}, u8[0]{0}) custom-call(%qt, %kt, %kt), '
            'custom_call_target="__cudnn$fmhaSoftmax", ' + config)
    text = GPU_STYLE_HLO.replace(
        "  %attn = (bf16[2,4,64,32]{3,1,2,0}, u8[0]{0}) custom-call(%q, %kv, %kv)",
        "  %qt = bf16[2,4,64,32]{3,2,1,0} transpose(%q), dimensions={0,2,1,3}\n"
        "  %kt = bf16[2,4,80,32]{3,2,1,0} transpose(%kv), dimensions={0,2,1,3}\n"
        "  %attn_old = (bf16[2,4,64,32]{3,1,2,0}, u8[0]{0}) custom-call(%q, %kv, %kv)")
    text = text.replace("  %one = s32[] constant(1)\n", line + "\n  %one = s32[] constant(1)\n", 1)
    kernels = _by_name(hlo_kernels.parse_module(text))
    assert kernels["attn"].flops == ATTENTION_FLOPS == kernels["attn_old"].flops
    bare = text.replace(config, "api_version=API_VERSION_STATUS_RETURNING")
    with pytest.raises(ValueError, match="attention call %attn: neither operand_layout_constraints"):
        _by_name(hlo_kernels.parse_module(bare))
