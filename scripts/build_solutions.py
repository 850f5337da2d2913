"""Regenerate the bundled Solution and Definition JSONs from the kernel sources.

One kernel source per op family serves many compile-time shapes: each
(op, shape) pair in CATALOG below becomes

- ``solutions/<family>/<definition>.json``: a FlashInfer-Bench Solution with
  the kernel source inlined, its entry point naming the op's function, and
  the shared ``_fast_launch.py`` (Triton launch fast path) as a second source;
- ``definitions/<op_type>/<definition>.json``: a FlashInfer-Bench Definition
  stating the axes, one dtype per tensor (as its schema has it), constraints
  and a reference ``run``;
- one entry in ``trace_apply.yaml``, the folder's policy file (read by the
  plugin, never rewritten by FlashInfer-Bench or FlashInfer): every dtype
  each input may have (bf16 and fp16) and, for a few shapes, the batch range
  where the solution is routed (``applies_when``).

The JSONs validate under FlashInfer-Bench's models and FlashInfer's
``flashinfer.trace.Solution`` (tests check both).

Catalog entries that ``scripts/bundle_routing.json`` leaves out (slower than
FlashInfer's kernel on the GPU, or not yet shown correct and fast there) are
written the same way under ``candidates/`` instead, with a README giving each
one's reason: not shipped in the wheel and never routed by the hook, but a
curated folder the benchmark and tests can point at, so a family can be
measured again and moved into the bundle by the routing file alone.

Run it after editing a kernel or the catalog; tests fail if a JSON no longer
matches (``--check`` reports stale and stray files without writing).

    python scripts/build_solutions.py [--check]
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from flashinfer_trace_apply.policy import POLICY_FILE, dump_policy  # noqa: E402
SOURCES = ROOT / "solutions" / "src"
AUTHOR = "flashinfer_trace_apply"
DTYPES = ["bfloat16", "float16"]
# Shipped beside every kernel source in each Solution (the loader puts the
# solution's folder on sys.path while importing the entry file, so the kernel
# files import these by plain name at module level).
SHARED_SOURCES = ("_fast_launch.py", "_rows.py")


@dataclass(frozen=True)
class Op:
    prefix: str  # definition name prefix (FlashInfer's template name_prefix)
    family: str  # solutions/<family>/
    op_type: str  # definitions/<op_type>/ and the Definition's op_type
    source: str  # kernel file in solutions/src/
    entry: str  # function in that file
    fi_api: str
    sizes: Dict[int, str]  # const-axis value in the name -> models using it
    describe: str  # one line; {v} is the const-axis value
    suffix: str = ""  # the rest of the name, for a template with a second const axis ("_k8")

    def name(self, value: int) -> str:
        return f"{self.prefix}{value}{self.suffix}"


# Hidden sizes of popular models (the norms are not sharded by tensor
# parallelism, so the model's hidden size is the call's).
NORM_SIZES = {
    2048: "Llama-3.2-1B, Qwen3-1.7B",
    2560: "Qwen3-4B",
    3072: "Llama-3.2-3B, Phi-3-mini",
    3584: "Qwen2.5-7B",
    4096: "Llama-3.1-8B, Mistral-7B, Qwen3-8B",
    5120: "Qwen3-14B, Qwen3-32B, Qwen2.5-32B",
    7168: "DeepSeek-V3, DeepSeek-R1",
    8192: "Llama-3.1-70B, Qwen2.5-72B",
}
# Latent widths of DeepSeek's multi-head latent attention, normalised every
# layer by plain rmsnorm (SGLang forwards them to FlashInfer): q_a at the
# query LoRA rank and kv_a at the KV LoRA rank, the latter a row-strided view
# of latent_cache (512 + 64 rope channels a row), read in place.
MLA_NORM_SIZES = {
    512: "DeepSeek-V3 kv_a, DeepSeek-R1 kv_a",
    1536: "DeepSeek-V3 q_a, DeepSeek-R1 q_a",
}
# Static per-tensor FP8 checkpoints (SGLang sends their norms to
# rmsnorm_quant / fused_add_rmsnorm_quant): Llama, Qwen and Mistral widths.
QUANT_NORM_SIZES = {h: m for h, m in NORM_SIZES.items() if h != 7168}
GEMMA_SIZES = {
    1152: "Gemma-3-1B",
    2048: "Gemma-2B",
    2304: "Gemma-2-2B",
    2560: "Gemma-3-4B",
    3072: "Gemma-7B",
    3584: "Gemma-2-9B",
    3840: "Gemma-3-12B",
    4608: "Gemma-2-27B",
    5376: "Gemma-3-27B",
}
# Gated activations: the definition's const axis is the gated input width,
# twice the MLP intermediate size of one GPU (intermediate / tensor-parallel).
# Not bundled: 2 * 3584 (Llama-3.1-70B at TP8). Our kernel was slower than
# FlashInfer's there at every batch size on an H100 (0.77-0.96x kernel time,
# docs/benchmarks.md), so routing it would be a regression.
SILU_SIZES = {
    2 * 6144: "Qwen3-1.7B",
    2 * 7168: "Llama-3.1-70B at TP4",
    2 * 8192: "Llama-3.2-1B, Llama-3.2-3B",
    2 * 9728: "Qwen3-4B",
    2 * 11008: "Llama-2-7B, Qwen2.5-3B",
    2 * 12288: "Qwen3-8B",
    2 * 14336: "Llama-3.1-8B, Mistral-7B, Llama-3.1-70B at TP2",
    2 * 17408: "Qwen3-14B",
    2 * 18432: "DeepSeek-V3 dense layers",
    2 * 18944: "Qwen2.5-7B",
    2 * 25600: "Qwen3-32B",
    2 * 27648: "Qwen2.5-32B",
    2 * 28672: "Llama-3.1-70B",
    2 * 29568: "Qwen2.5-72B",
}
GELU_TANH_SIZES = {
    2 * 6912: "Gemma-3-1B",
    2 * 9216: "Gemma-2-2B",
    2 * 10240: "Gemma-3-4B",
    2 * 14336: "Gemma-2-9B",
    2 * 15360: "Gemma-3-12B",
    2 * 16384: "Gemma-2B",
    2 * 21504: "Gemma-3-27B",
    2 * 24576: "Gemma-7B",
    2 * 36864: "Gemma-2-27B",
}
GELU_SIZES = {
    2 * 9216: "Gemma-2-2B with exact GELU",
    2 * 14336: "Gemma-2-9B with exact GELU",
    2 * 16384: "Gemma-2B",
    2 * 24576: "Gemma-7B",
}
# Where a bundled solution is routed (spec.applies_when), for shapes where
# FlashInfer's kernel is faster over part of the batch range: measured on an
# H100 with scripts/bench_solutions.py (docs/benchmarks.md); above the
# bound FlashInfer's kernel is 11-29% faster (rows resident in L2).
APPLIES_WHEN = {
    "silu_and_mul_h12288": ["num_tokens <= 128"],
    "gelu_tanh_and_mul_h43008": ["num_tokens <= 128"],
}
# Bounds from the H200 pass (scripts/bench_solutions.py --all --kernel-only,
# docs/benchmarks.md): shapes where FlashInfer's kernel was more than 10%
# faster over part of the batch range are left to it there. Activations at
# 1024 rows near L2 size (0.87-0.89x at 14336 and 13824); the widest gated
# activations at 16384 rows (0.88-0.90x; 1.0-1.12x up to 1024);
# gemma_rmsnorm_h4608 and rmsnorm_h5120 at 200-256 rows (0.88-0.90x).
APPLIES_WHEN.update({
    "silu_and_mul_h14336": ["num_tokens <= 128"],
    "gelu_tanh_and_mul_h13824": ["num_tokens <= 128"],
    **{name: ["num_tokens <= 1024"] for name in (
        "gelu_and_mul_h18432", "gelu_tanh_and_mul_h49152", "silu_and_mul_h34816", "silu_and_mul_h36864",
        "silu_and_mul_h37888", "silu_and_mul_h51200", "silu_and_mul_h55296", "silu_and_mul_h57344")},
    "gemma_rmsnorm_h4608": ["batch_size <= 64 or batch_size > 256"],
    "rmsnorm_h5120": ["batch_size <= 64 or batch_size > 256"],
})
# Decisions from a GPU run of scripts/bench_solutions.py, written by
# scripts/apply_bench_routing.py: per definition an applies_when (over the
# measured batch range where we are at least 0.9x FlashInfer's kernel) or
# "left_out" with the measured ratios (geomean below 1.0x). They override
# the bounds above.
ROUTING_FILE = ROOT / "scripts" / "bundle_routing.json"
ROUTING = json.loads(ROUTING_FILE.read_text()) if ROUTING_FILE.exists() else {}
APPLIES_WHEN.update(ROUTING.get("applies_when", {}))
LEFT_OUT: Dict[str, str] = ROUTING.get("left_out", {})
# Vocabulary sizes (the sampling ops see whole rows of the vocabulary).
VOCAB_SIZES = {
    128256: "Llama-3.1, Llama-3.2",
    129280: "DeepSeek-V3, DeepSeek-R1",
    151936: "Qwen2.5-0.5B, Qwen3",
    152064: "Qwen2.5-7B, Qwen2.5-72B",
    262144: "Gemma-3-1B",
}
# Probabilities come in float32 from the engines' softmax; FlashInfer takes
# bf16 and fp16 too.
SAMPLING_DTYPES = ["float32", "bfloat16", "float16"]
# DeepSeek-V3's router: 256 routed experts, top 8 (n_group=8, topk_group=4
# at the call). SGLang sends fp32 logits, an fp32 correction bias and fp32
# topk_values buffers; FlashInfer takes bf16 and fp16 as well.
MOE_ROUTING_EXPERTS = {256: "DeepSeek-V3, DeepSeek-R1"}
MOE_ROUTING_DTYPES = ["float32", "bfloat16", "float16"]
ROPE_HEAD_SIZES = {
    64: "Llama-3.2-1B, Qwen2.5-0.5B",
    128: "Llama-3.1, Mistral, Qwen2.5, Qwen3",
    256: "Gemma-2-9B, Gemma-3",
}

CATALOG: List[Op] = [
    Op("rmsnorm_h", "norm", "rmsnorm", "norm_triton.py", "rmsnorm", "flashinfer.norm.rmsnorm",
       NORM_SIZES, "RMSNorm over a hidden size of {v}: y = x / rms(x) * weight."),
    Op("fused_add_rmsnorm_h", "norm", "rmsnorm", "norm_triton.py", "fused_add_rmsnorm",
       "flashinfer.norm.fused_add_rmsnorm", NORM_SIZES,
       "Residual add then RMSNorm over a hidden size of {v}, in place: residual += hidden_states, "
       "hidden_states = rmsnorm(residual) * weight (the fp32 sum is normalized)."),
    Op("rmsnorm_h", "norm", "rmsnorm", "norm_triton.py", "rmsnorm", "flashinfer.norm.rmsnorm",
       MLA_NORM_SIZES, "RMSNorm over a latent width of {v} (rows may be a row-strided view): y = x / rms(x) * weight."),
    Op("rmsnorm_quant_h", "norm", "rmsnorm", "norm_triton.py", "rmsnorm_quant", "flashinfer.norm.rmsnorm_quant",
       QUANT_NORM_SIZES, "RMSNorm then static per-tensor FP8 quantization over a hidden size of {v}: "
       "out = clamp(x / rms(x) * weight / scale, fp8 range) cast to out's fp8 dtype (float8_e4m3fn or float8_e5m2)."),
    Op("fused_add_rmsnorm_quant_h", "norm", "rmsnorm", "norm_triton.py", "fused_add_rmsnorm_quant",
       "flashinfer.norm.fused_add_rmsnorm_quant", QUANT_NORM_SIZES,
       "Residual add, RMSNorm and static per-tensor FP8 quantization over a hidden size of {v}: "
       "residual += hidden_states in place; out = clamp(rmsnorm(the fp32 sum) * weight / scale, fp8 range) cast "
       "to out's fp8 dtype; hidden_states is only read."),
    Op("gemma_rmsnorm_h", "norm", "rmsnorm", "norm_triton.py", "gemma_rmsnorm", "flashinfer.norm.gemma_rmsnorm",
       GEMMA_SIZES, "Gemma RMSNorm over a hidden size of {v}: y = x / rms(x) * (weight + 1)."),
    Op("gemma_fused_add_rmsnorm_h", "norm", "rmsnorm", "norm_triton.py", "gemma_fused_add_rmsnorm",
       "flashinfer.norm.gemma_fused_add_rmsnorm", GEMMA_SIZES,
       "Residual add then Gemma RMSNorm over a hidden size of {v}, in place: residual += hidden_states, "
       "hidden_states = rmsnorm(residual) * (weight + 1)."),
    Op("silu_and_mul_h", "activation", "activation", "activation_triton.py", "silu_and_mul",
       "flashinfer.activation.silu_and_mul", SILU_SIZES,
       "SwiGLU gate: silu(x[:, :d]) * x[:, d:] for a gated width of {v} (d = {v} / 2)."),
    Op("gelu_and_mul_h", "activation", "activation", "activation_triton.py", "gelu_and_mul",
       "flashinfer.activation.gelu_and_mul", GELU_SIZES,
       "GeGLU gate with exact GELU: gelu(x[:, :d]) * x[:, d:] for a gated width of {v} (d = {v} / 2)."),
    Op("gelu_tanh_and_mul_h", "activation", "activation", "activation_triton.py", "gelu_tanh_and_mul",
       "flashinfer.activation.gelu_tanh_and_mul", GELU_TANH_SIZES,
       "GeGLU gate with tanh-approximated GELU: gelu_tanh(x[:, :d]) * x[:, d:] for a gated width of {v} (d = {v} / 2)."),
    Op("rope_cos_sin_cache_inplace_d", "rope", "rope", "rope_triton.py", "rope_cos_sin_cache_inplace",
       "flashinfer.rope.apply_rope_with_cos_sin_cache_inplace", ROPE_HEAD_SIZES,
       "RoPE from a [cos | sin] cache, in place on flattened query and key heads of size {v}; "
       "the first rotary_dim channels of each head rotate (half split if is_neox, else interleaved pairs)."),
    Op("top_k_renorm_probs_v", "sampling", "sampling", "sampling_triton.py", "top_k_renorm_probs",
       "flashinfer.sampling.top_k_renorm_probs", VOCAB_SIZES,
       "Top-k renormalization over a vocabulary of {v}: per row keep the values >= the k-th largest (ties kept), "
       "zero the rest, scale the kept ones by 1 / max(their sum, 1e-8); top_k is an int or a per-row tensor, "
       "k outside [1, vocab) keeps the row."),
    Op("top_p_renorm_probs_v", "sampling", "sampling", "sampling_triton.py", "top_p_renorm_probs",
       "flashinfer.sampling.top_p_renorm_probs", VOCAB_SIZES,
       "Top-p renormalization over a vocabulary of {v}: per row keep the values >= the largest threshold whose "
       "kept values sum to at least top_p * the row sum, zero the rest, scale the kept ones by 1 / their sum "
       "(1 when that is <= 1e-8); top_p is a float or a per-row tensor."),
    Op("fused_topk_deepseek_e", "moe_routing", "moe_routing", "moe_routing_triton.py", "fused_topk_deepseek",
       "flashinfer.fused_moe.fused_routing_dsv3.fused_topk_deepseek", MOE_ROUTING_EXPERTS,
       "DeepSeek-V3 MoE routing over {v} experts, top 8, in place: biased = sigmoid(scores) + bias; groups of "
       "num_experts / n_group experts score the sum of their two largest biased scores; the topk_group best "
       "groups are kept and the topk largest biased scores among their experts chosen, largest first (ties to the "
       "lower index); topk_values = the chosen sigmoid scores / their sum * routed_scaling_factor, topk_indices "
       "the chosen experts (int32).", suffix="_k8"),
]


# ---------------------------------------------------------------------------
# Definitions (FlashInfer-Bench schema; references written for this project).
# ---------------------------------------------------------------------------

_NORM_REFERENCE = '''
import torch


@torch.no_grad()
def run(hidden_states, weight):
    eps = 1e-6
    x = hidden_states.float()
    scale = torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)
    return (x * scale * (weight.float() + {offset})).to(hidden_states.dtype)
'''

_FUSED_REFERENCE = '''
import torch


@torch.no_grad()
def run(hidden_states, residual, weight):
    eps = 1e-6
    total = hidden_states.float() + residual.float()
    scale = torch.rsqrt(total.square().mean(dim=-1, keepdim=True) + eps)
    output = (total * scale * (weight.float() + {offset})).to(hidden_states.dtype)
    return output, total.to(residual.dtype)
'''

# FlashInfer's kernel multiplies by the reciprocal of the scale (norm.cuh),
# in this order; its template's reference divides, which can round the other
# way at an fp8 boundary.
_QUANT_REFERENCE = '''
import torch


@torch.no_grad()
def run(hidden_states, {residual}weight, scale):
    eps = 1e-6
    x = hidden_states.float(){add}
    inv_rms = torch.rsqrt(x.square().mean(dim=-1, keepdim=True) + eps)
    inv_scale = 1.0 / (scale.float().reshape(()) if isinstance(scale, torch.Tensor) else torch.tensor(float(scale)))
    y = (x * inv_rms * weight.float() * inv_scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return {returns}
'''

_ACT_REFERENCE = '''
import torch
import torch.nn.functional as F


@torch.no_grad()
def run(input):
    d = input.shape[-1] // 2
    gate, up = input[..., :d].float(), input[..., d:].float()
    return ({act} * up).to(input.dtype)
'''

_ROPE_REFERENCE = '''
import torch


@torch.no_grad()
def run(positions, query, key, head_size, cos_sin_cache, is_neox=True):
    half = cos_sin_cache.shape[-1] // 2
    cos = cos_sin_cache[positions.long(), :half].float()[:, None, :]
    sin = cos_sin_cache[positions.long(), half:].float()[:, None, :]

    def rotate(x):
        heads = x.float().reshape(x.shape[0], -1, head_size).clone()
        if is_neox:
            a, b = heads[..., :half].clone(), heads[..., half:2 * half].clone()
            heads[..., :half] = a * cos - b * sin
            heads[..., half:2 * half] = b * cos + a * sin
        else:
            a, b = heads[..., 0:2 * half:2].clone(), heads[..., 1:2 * half:2].clone()
            heads[..., 0:2 * half:2] = a * cos - b * sin
            heads[..., 1:2 * half:2] = b * cos + a * sin
        return heads.reshape(x.shape).to(x.dtype)

    return rotate(query), rotate(key)
'''

# FlashInfer's kernels (topk.cuh, air_top_p.cuh): ties at the pivot are kept;
# top-p's target is top_p times the row's own sum; top-p runs (and returns)
# float32.
_TOP_K_REFERENCE = '''
import torch


@torch.no_grad()
def run(probs, top_k):
    p = probs.float()
    rows, vocab = p.shape
    k = top_k.reshape(-1).long() if isinstance(top_k, torch.Tensor) else torch.full((rows,), int(top_k))
    k = torch.where((k < 1) | (k >= vocab), vocab, k).to(p.device)
    ordered = torch.sort(p, dim=-1, descending=True).values
    pivot = ordered.gather(-1, (k - 1)[:, None])
    kept = torch.where(p >= pivot, p, 0.0)
    return (kept / kept.sum(dim=-1, keepdim=True).clamp_min(1e-8)).to(probs.dtype)
'''

_TOP_P_REFERENCE = '''
import torch


@torch.no_grad()
def run(probs, top_p):
    p = probs.float()
    rows, vocab = p.shape
    tp = top_p.reshape(-1).float() if isinstance(top_p, torch.Tensor) else torch.full((rows,), float(top_p))
    target = tp.to(p.device)[:, None] * p.sum(dim=-1, keepdim=True)
    ordered = torch.sort(p, dim=-1, descending=True).values
    before = ordered.cumsum(dim=-1) - ordered  # mass strictly above each sorted value
    last = ((before < target).sum(dim=-1, keepdim=True) - 1).clamp(0, vocab - 1)
    kept = torch.where(p >= ordered.gather(-1, last), p, 0.0)
    total = kept.sum(dim=-1, keepdim=True)
    return kept / torch.where(total > 1e-8, total, torch.ones_like(total))
'''

# FlashInfer's kernel (noAuxTcKernels.cu): fp32 sigmoid as 0.5 * tanh(0.5 x)
# + 0.5, every ranking with ties to the lower index (stable sorts here), the
# weights in double (routed_scaling_factor is a C++ double there).
_MOE_ROUTING_REFERENCE = '''
import torch


@torch.no_grad()
def run(scores, bias, n_group, topk_group, topk, routed_scaling_factor):
    tokens, experts = scores.shape
    sig = 0.5 * torch.tanh(0.5 * scores.float()) + 0.5
    biased = sig + bias.float()
    grouped = biased.view(tokens, n_group, experts // n_group)
    top2 = grouped.sort(dim=-1, descending=True, stable=True).values[..., :2]
    group_score = top2[..., 0] + top2[..., 1]
    kept = group_score.sort(dim=-1, descending=True, stable=True).indices[:, :topk_group]
    mask = torch.zeros(tokens, n_group, dtype=torch.bool, device=scores.device).scatter_(1, kept, True)
    candidates = biased.masked_fill(~mask.repeat_interleave(experts // n_group, dim=1), float("-inf"))
    chosen = candidates.sort(dim=-1, descending=True, stable=True).indices[:, :topk]
    picked = sig.gather(1, chosen)
    total = picked.sum(dim=-1, keepdim=True)
    weights = picked.double() * float(routed_scaling_factor) / (total.double() + 1e-20)
    return weights.float().to(scores.dtype), chosen.to(torch.int32)
'''

_ACTS = {
    "silu_and_mul_h": "F.silu(gate)",
    "gelu_and_mul_h": "F.gelu(gate)",
    "gelu_tanh_and_mul_h": 'F.gelu(gate, approximate="tanh")',
}


def _tensor(shape, dtype, description=None) -> dict:
    # A list: the Definition states its first (the schema has one dtype);
    # all of them go to the policy file (policy_for).
    spec = {"shape": shape, "dtype": list(dtype) if isinstance(dtype, list) else dtype}
    if description:
        spec["description"] = description
    return spec


def definition_for(op: Op, value: int) -> dict:
    return _definition_and_dtypes(op, value)[0]


def policy_for(op: Op, value: int) -> dict:
    """The definition's entry in trace_apply.yaml: inputs that may have more
    than one dtype, and where the solution is routed."""
    entry: dict = {}
    dtypes = {k: v for k, v in _definition_and_dtypes(op, value)[1].items() if len(v) > 1}
    if dtypes:
        entry["dtypes"] = dtypes
    name = op.name(value)
    if name in APPLIES_WHEN:
        entry["applies_when"] = APPLIES_WHEN[name]
    return entry


def _dtype_note(op: Op) -> str:
    if op.family == "sampling":
        if op.prefix.startswith("top_k"):
            return f"probs in {', '.join(SAMPLING_DTYPES)}; the output has the input's dtype."
        return "probs in float32 (routed only then); the output is float32."
    if op.family == "moe_routing":
        return f"Scores and bias in {', '.join(MOE_ROUTING_DTYPES)}; topk_values has the scores' dtype."
    return f"Activations in {' or '.join(DTYPES)}; " + (
        "out is fp8, the residual has the input's dtype." if "quant" in op.prefix else "outputs have the input's dtype.")


def _definition_and_dtypes(op: Op, value: int) -> Tuple[dict, Dict[str, List[str]]]:
    name = op.name(value)
    tags = [f"fi_api:{op.fi_api}"]
    tags += ["model:" + m.strip().lower().replace(" ", "-") for m in op.sizes[value].split(",")]
    act = list(DTYPES)
    constraints: List[str] = []
    if op.family == "norm" and "quant" in op.prefix:
        fused = "fused_add" in op.prefix
        axes = {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": value}}
        rows = ["batch_size", "hidden_size"]
        inputs = {"hidden_states": _tensor(rows, act)}
        if fused:
            inputs["residual"] = _tensor(rows, act)
        inputs["weight"] = _tensor(["hidden_size"], act)
        inputs["scale"] = _tensor(None, "float32", "Per-tensor quantization scale, shape (1,): out = y / scale.")
        outputs = {"out": _tensor(rows, "float8_e4m3fn", "Written into the caller's out (float8_e4m3fn or float8_e5m2).")}
        if fused:
            outputs["residual_out"] = _tensor(rows, act, "hidden_states + residual, written into residual in place.")
        reference = _QUANT_REFERENCE.format(
            residual="residual, " if fused else "",
            add=" + residual.float()" if fused else "",
            returns="y, x.to(residual.dtype)" if fused else "y",
        )
        tags += ["quantization:fp8"] + (["fused"] if fused else [])
    elif op.family == "norm":
        fused = "fused_add" in op.prefix
        offset = "1.0" if op.prefix.startswith("gemma") else "0.0"
        axes = {"batch_size": {"type": "var"}, "hidden_size": {"type": "const", "value": value}}
        rows = ["batch_size", "hidden_size"]
        inputs = {"hidden_states": _tensor(rows, act)}
        if fused:
            inputs["residual"] = _tensor(rows, act)
        inputs["weight"] = _tensor(["hidden_size"], act)
        outputs = {"output": _tensor(rows, act, "Written into hidden_states in place." if fused else None)}
        if fused:
            outputs["residual_out"] = _tensor(rows, act, "hidden_states + residual, written into residual in place.")
        reference = (_FUSED_REFERENCE if fused else _NORM_REFERENCE).format(offset=offset)
        if fused:
            tags.append("fused")
    elif op.family == "activation":
        axes = {
            "num_tokens": {"type": "var"},
            "hidden_size": {"type": "const", "value": value, "description": "Gated input width."},
            "hidden_div_2": {"type": "const", "value": value // 2, "description": "Output width."},
        }
        constraints = ["hidden_size % 2 == 0"]
        inputs = {"input": _tensor(["num_tokens", "hidden_size"], act)}
        outputs = {"output": _tensor(["num_tokens", "hidden_div_2"], act)}
        reference = _ACT_REFERENCE.format(act=_ACTS[op.prefix])
        tags.append("fused")
    elif op.family == "sampling":
        top_k = op.prefix.startswith("top_k")
        axes = {"batch_size": {"type": "var"}, "vocab_size": {"type": "const", "value": value}}
        rows = ["batch_size", "vocab_size"]
        # top-p: FlashInfer returns float32 whatever the input, while the
        # plugin holds a result to the template's dtype (that of probs), so
        # only float32 probs are routed; top-k keeps the input's dtype.
        act = list(SAMPLING_DTYPES) if top_k else ["float32"]
        inputs = {
            "probs": _tensor(rows, act),
            "top_k" if top_k else "top_p": _tensor(
                None, "int32" if top_k else "float32",
                "A Python number or a per-row tensor of shape (batch_size,)."),
        }
        outputs = {"renormalized": _tensor(rows, act if top_k else "float32",
                                           None if top_k else "float32 whatever the input dtype (FlashInfer's).")}
        reference = _TOP_K_REFERENCE if top_k else _TOP_P_REFERENCE
    elif op.family == "moe_routing":
        axes = {
            "num_tokens": {"type": "var"},
            "num_experts": {"type": "const", "value": value},
            "topk": {"type": "const", "value": 8},
        }
        picked = ["num_tokens", "topk"]
        inputs = {
            "scores": _tensor(["num_tokens", "num_experts"], list(MOE_ROUTING_DTYPES), "Router logits, before the sigmoid."),
            "bias": _tensor(["num_experts"], list(MOE_ROUTING_DTYPES), "Per-expert score correction bias (any of the three dtypes)."),
            "n_group": _tensor(None, "int32", "Expert groups (num_experts % n_group == 0; 8 for DeepSeek-V3)."),
            "topk_group": _tensor(None, "int32", "Groups kept (4 for DeepSeek-V3)."),
            "topk": _tensor(None, "int32", "Experts chosen per token."),
            "routed_scaling_factor": _tensor(None, "float32", "Multiplies the normalized weights (a double in FlashInfer)."),
        }
        outputs = {
            "topk_values": _tensor(picked, "float32", "Written into the caller's topk_values in place, in the scores' dtype."),
            "topk_indices": _tensor(picked, "int32", "Written into the caller's topk_indices in place."),
        }
        reference = _MOE_ROUTING_REFERENCE
        tags.append("moe")
    else:
        axes = {
            "nnz": {"type": "var"},
            "num_q_heads_x_head_size": {"type": "var"},
            "num_k_heads_x_head_size": {"type": "var"},
            "head_size": {"type": "const", "value": value},
            "max_seq_len": {"type": "var"},
            "rotary_dim": {"type": "var", "description": "cos and sin halves together."},
        }
        constraints = [
            "num_q_heads_x_head_size % head_size == 0",
            "num_k_heads_x_head_size % head_size == 0",
            "rotary_dim % 2 == 0",
            "rotary_dim <= head_size",
        ]
        q = ["nnz", "num_q_heads_x_head_size"]
        k = ["nnz", "num_k_heads_x_head_size"]
        inputs = {
            "positions": _tensor(["nnz"], ["int32", "int64"], "Index into cos_sin_cache."),
            "query": _tensor(q, act),
            "key": _tensor(k, act),
            "head_size": _tensor(None, "int32"),
            "cos_sin_cache": _tensor(["max_seq_len", "rotary_dim"], ["float32"]),
            "is_neox": _tensor(None, "bool", "Half-split pairs if true (default), interleaved pairs if false."),
        }
        outputs = {
            "query_out": _tensor(q, act, "Written into query in place."),
            "key_out": _tensor(k, act, "Written into key in place."),
        }
        reference = _ROPE_REFERENCE
    dtypes = {k: v["dtype"] for k, v in inputs.items() if isinstance(v["dtype"], list)}
    for spec in (*inputs.values(), *outputs.values()):
        if isinstance(spec["dtype"], list):
            spec["dtype"] = spec["dtype"][0]
    return {
        "name": name,
        "op_type": op.op_type,
        "description": op.describe.format(v=value) + f" Models: {op.sizes[value]}. "
        + _dtype_note(op),
        "tags": tags,
        "axes": axes,
        "constraints": constraints,
        "inputs": inputs,
        "outputs": outputs,
        "reference": textwrap.dedent(reference).lstrip("\n"),
    }, dtypes


# ---------------------------------------------------------------------------
# Solutions.
# ---------------------------------------------------------------------------


def solution_for(op: Op, value: int) -> dict:
    definition = op.name(value)
    return {
        "name": f"fita_{definition}_triton",
        "definition": definition,
        "author": AUTHOR,
        "description": f"Bundled Triton kernel ({op.entry} in solutions/src/{op.source}).",
        "spec": {
            "language": "triton",
            "target_hardware": ["sm80", "sm89", "sm90", "sm100"],
            "entry_point": f"{op.source}::{op.entry}",
            "dependencies": ["triton >= 3.0", "torch >= 2.4"],
            "destination_passing_style": False,
        },
        "sources": [{"path": path, "content": (SOURCES / path).read_text()} for path in (op.source, *SHARED_SOURCES)],
    }


CANDIDATES = ROOT / "candidates"


def entries(bundled: bool = True) -> List[Tuple[Op, int]]:
    """The catalog entries of the bundled folder, or (bundled=False) those
    the routing file leaves out, which go to candidates/."""
    return [(op, value) for op in CATALOG for value in sorted(op.sizes) if (op.name(value) not in LEFT_OUT) == bundled]


def _folder_files(root: Path, chosen: List[Tuple[Op, int]]) -> Dict[Path, str]:
    files: Dict[Path, str] = {}
    for op, value in chosen:
        name = op.name(value)
        files[root / "solutions" / op.family / f"{name}.json"] = json.dumps(solution_for(op, value), indent=2) + "\n"
        files[root / "definitions" / op.op_type / f"{name}.json"] = json.dumps(definition_for(op, value), indent=2) + "\n"
    files[root / POLICY_FILE] = dump_policy(
        {"version": 1, "definitions": {op.name(value): policy_for(op, value) for op, value in chosen}}
    )
    return files


def _candidates_readme(chosen: List[Tuple[Op, int]]) -> str:
    lines = [
        "# Candidate solutions (not bundled)",
        "",
        "Generated by `scripts/build_solutions.py` from the catalog entries that",
        "`scripts/bundle_routing.json` leaves out of the bundled folder. This folder is",
        "not in the wheel and the import hook never routes it; point a benchmark or a",
        "test at it (`scripts/bench_solutions.py --family OP` finds these too) and, once",
        "a GPU run meets the bar, `scripts/apply_bench_routing.py RUN.json` moves an",
        "entry into the bundle.",
        "",
        "| definition | why it is left out |",
        "|---|---|",
    ]
    lines += [f"| {op.name(value)} | {LEFT_OUT[op.name(value)]} |" for op, value in chosen]
    return "\n".join(lines) + "\n"


def expected_files() -> Dict[Path, str]:
    files = _folder_files(ROOT, entries())
    left_out = entries(bundled=False)
    if left_out:
        files.update(_folder_files(CANDIDATES, left_out))
        files[CANDIDATES / "README.md"] = _candidates_readme(left_out)
    return files


def stray_files(expected: Dict[Path, str]) -> List[Path]:
    """Generated-looking files that no catalog entry produces any more."""
    found = [p for root in (ROOT, CANDIDATES) for folder in ("solutions", "definitions") for p in (root / folder).rglob("*.json")]
    found += [p for p in (CANDIDATES / POLICY_FILE, CANDIDATES / "README.md") if p.exists()]
    return sorted(p for p in found if p not in expected)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale or stray files (exit 1 if any)")
    args = parser.parse_args()
    expected = expected_files()
    stale = [p for p, text in expected.items() if not p.exists() or p.read_text() != text]
    stray = stray_files(expected)
    if args.check:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)}")
        for p in stray:
            print(f"stray: {p.relative_to(ROOT)}")
        return 1 if stale or stray else 0
    for path, text in expected.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    for path in stray:
        path.unlink()
    print(f"{len(expected)} file(s) up to date ({len(stale)} written, {len(stray)} stray removed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
