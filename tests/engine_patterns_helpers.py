"""Solutions and a child script for tests/test_engine_call_patterns.py.

Standard library only at import time (the child imports this module before
FlashInfer, as an engine would import its own modules first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

from solution_files import solution_dict

HIDDEN = 64
MLA_HEADS, MLA_NOPE, MLA_ROPE = 128, 128, 64  # vLLM DeepSeek MLA prefill at 128 local heads

# Each Python solution counts its calls, so a child can show the solution ran.
FUSED_ADD_RMSNORM_QUANT = '''\
import torch

CALLS = 0


def run(hidden_states, residual, weight, scale, eps=1e-6):
    global CALLS
    CALLS += 1
    r = hidden_states.float() + residual.float()
    y = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.float()
    return (y / float(scale)).to(torch.float8_e4m3fn), r.to(residual.dtype)
'''

# One rank's all-reduce is the identity: a stand-in for the real kernel,
# which needs several GPUs and a workspace shared between them.
ALLREDUCE_FUSION = '''\
CALLS = 0


def run(input, workspace, pattern, residual_in=None, rms_gamma=None, rms_eps=1e-6, weight_bias=0.0):
    global CALLS
    CALLS += 1
    return input.clone()
'''

CONCAT_MLA_K = '''\
import torch

CALLS = 0


def run(k, k_nope, k_rope):
    global CALLS
    CALLS += 1
    return torch.cat([k_nope, k_rope.expand(-1, k_nope.shape[1], -1)], dim=-1)
'''


def python_solution(definition: str, name: str, source: str) -> Dict:
    return solution_dict(definition, source, name=name)


ENGINE_MODULE = '''\
"""Stands in for sglang.srt.layers.layernorm: binds the API at import."""
from flashinfer.norm import fused_add_rmsnorm_quant
'''


def write_engine_module(folder: Path, name: str = "engine_layernorm") -> str:
    (folder / f"{name}.py").write_text(ENGINE_MODULE, encoding="utf-8")
    return name
