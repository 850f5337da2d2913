"""One decode step of Llama-3.1-8B, Qwen3-32B and DeepSeek-V3 (a tensor-
parallel-8 slice), built from the FlashInfer calls SGLang makes by default on
Hopper (../shared/ENGINES.md), with the plugin off and on (the bundled
folder): the whole-step time a user feels, eager and as a CUDA-graph replay.

What each step runs, per layer (weights and KV cache of one layer are shared
by all layers: each is far larger than L2, so the memory traffic per layer is
the real one):

- routed when the plugin is on (SGLang calls them through ``flashinfer.norm``
  at call time): ``fused_add_rmsnorm`` (input and post-attention norms),
  ``rmsnorm`` (Qwen3's per-head q/k norm at 128, DeepSeek MLA's q_a at 1536 and
  kv_a at 512, the latter a row-strided view), the final norm;
- FlashInfer, never routed: ``fused_moe.fused_topk_deepseek`` (DeepSeek-V3's
  router, e256 k8; a torch stand-in if it cannot be built, reported);
- stand-ins for what SGLang runs in its own kernels on Hopper (the same in both
  arms): SwiGLU and RoPE through FlashInfer's own functions held from before
  the plugin was enabled (so never routed), attention as torch SDPA over a
  1024-token context per request (FlashInfer's attention is opt-in on Hopper;
  its JIT build is also too slow for a short GPU lease), MLA attention as two
  matmuls over the 576-wide latent cache, the routed experts as dense GEMMs
  over the weights of the experts a batch activates (min(256, 8 * batch));
  torch GEMMs for every linear layer; no all-reduce (one GPU).

Timing: both arms in interleaved rounds (off, on, off, ...); per arm the best
round; the ratio is the median of per-round ratios off / on (above 1: the
plugin's step is faster). Eager rounds switch the plugin off and on between
rounds; the first step after a switch is not timed (a session's first calls
resolve their shapes, which a deployment does once) and is reported apart,
with the launch path of every bundled kernel and the host-device
synchronizations of one step per arm. A per-op breakdown (kernel time by name, torch
profiler over eager steps) is taken at one batch size.

    python scripts/bench_model_step.py [--models llama3-8b qwen3-32b deepseek-v3] [--batches 1 8 32 64 128 256]
        [--json OUT.json] [--plot docs/model_step_h200.png]
    python scripts/bench_model_step.py --from-json OUT.json --plot docs/model_step_h200.png --markdown OUT.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parent.parent
CONTEXT = 1024  # KV tokens per request


@dataclass(frozen=True)
class Model:
    name: str
    layers: int
    hidden: int
    heads: int  # query heads on this GPU
    kv_heads: int
    head_dim: int
    intermediate: int  # MLP intermediate on this GPU
    vocab: int  # lm_head rows on this GPU
    qk_norm: bool = False
    mla: bool = False
    dense_layers: int = 0  # DeepSeek: first layers with a dense MLP, the rest MoE


MODELS = {
    "llama3-8b": Model("Llama-3.1-8B (TP1)", 32, 4096, 32, 8, 128, 14336, 128256),
    "qwen3-32b": Model("Qwen3-32B (TP1)", 64, 5120, 64, 8, 128, 25600, 151936, qk_norm=True),
    # TP8 slice: 128 / 8 heads, dense MLP 18432 / 8, experts' 2048 / 8, vocab / 8.
    "deepseek-v3": Model("DeepSeek-V3 (TP8 slice)", 61, 7168, 16, 1, 128, 2304, 129280 // 8, mla=True,
                         dense_layers=3),
}
MOE_EXPERTS, MOE_TOPK, MOE_INTER = 256, 8, 2048 // 8
Q_LORA, KV_LORA, ROPE_DIM, NOPE_DIM, V_DIM = 1536, 512, 64, 128, 128


def build_step(model: Model, batch: int, routing: Dict[str, Any], enable_pdl: Optional[bool] = None) -> Callable[[], Any]:
    """A function running one decode step on fresh buffers (allocated here);
    the norms get ``enable_pdl`` (SGLang passes None: PDL where supported)."""
    import torch
    import torch.nn.functional as F

    import flashinfer
    import flashinfer.norm as fnorm

    dev, dt = "cuda", torch.bfloat16
    silu_and_mul = flashinfer.activation.silu_and_mul  # held: SGLang's own kernel on Hopper (stand-in)
    rope = flashinfer.rope.apply_rope_with_cos_sin_cache_inplace

    def w(*shape):
        return (torch.randn(*shape, device=dev, dtype=torch.float32) * 0.02).to(dt)

    h = model.hidden
    x0 = torch.randn(batch, h, device=dev, dtype=dt)
    residual = torch.zeros_like(x0)
    norm_w = w(h) + 1
    positions = torch.randint(0, CONTEXT, (batch,), device=dev)
    inv = 1.0 / (10000 ** (torch.arange(0, 128, 2, device=dev, dtype=torch.float32) / 128))
    freqs = torch.arange(CONTEXT, device=dev, dtype=torch.float32)[:, None] * inv[None, :]
    cache128 = torch.cat([freqs.cos(), freqs.sin()], dim=-1)
    cache64 = cache128[:, list(range(32)) + list(range(64, 96))].contiguous()
    lm_head = w(model.vocab, h)
    final_w = w(h) + 1

    if model.mla:
        w_qkv_a = w(Q_LORA + KV_LORA + ROPE_DIM, h)  # fused q_a and kv_a projections (replicated)
        q_a_w, kv_a_w = w(Q_LORA) + 1, w(KV_LORA) + 1
        w_q_b = w(model.heads * (NOPE_DIM + ROPE_DIM), Q_LORA)
        w_kc = w(model.heads, NOPE_DIM, KV_LORA)
        w_vc = w(model.heads, KV_LORA, V_DIM)
        latent = w(batch, CONTEXT, KV_LORA + ROPE_DIM)  # the latent KV cache of each request
        w_o = w(h, model.heads * V_DIM)
        scale = 1.0 / math.sqrt(NOPE_DIM + ROPE_DIM)
    else:
        qkv_out = (model.heads + 2 * model.kv_heads) * model.head_dim
        w_qkv, w_o = w(qkv_out, h), w(h, model.heads * model.head_dim)
        k_cache = w(batch, model.kv_heads, CONTEXT, model.head_dim)
        v_cache = w(batch, model.kv_heads, CONTEXT, model.head_dim)
        qn_w, kn_w = w(model.head_dim) + 1, w(model.head_dim) + 1
    w_gate_up, w_down = w(2 * model.intermediate, h), w(h, model.intermediate)
    if model.mla:
        active = min(MOE_EXPERTS, MOE_TOPK * batch)
        w_router, router_bias = w(MOE_EXPERTS, h), w(MOE_EXPERTS).float()
        w_exp_gate_up, w_exp_down = w(active * 2 * MOE_INTER, h), w(h, active * MOE_INTER)
        w_shared_gate_up, w_shared_down = w(2 * MOE_INTER, h), w(h, MOE_INTER)
        topk_values = torch.empty(batch, MOE_TOPK, device=dev, dtype=torch.float32)
        topk_indices = torch.empty(batch, MOE_TOPK, device=dev, dtype=torch.int32)

    def attention_gqa(x):
        qkv = x @ w_qkv.t()
        q, k, _v = qkv.split([model.heads * model.head_dim, model.kv_heads * model.head_dim,
                              model.kv_heads * model.head_dim], dim=-1)
        if model.qk_norm:
            # Qwen3's per-head norms: SGLang's RMSNorm on (tokens * heads, head_dim)
            q = fnorm.rmsnorm(q.reshape(-1, model.head_dim), qn_w, 1e-6, None, enable_pdl).view(batch, -1)
            k = fnorm.rmsnorm(k.reshape(-1, model.head_dim), kn_w, 1e-6, None, enable_pdl).view(batch, -1)
        else:
            q, k = q.contiguous(), k.contiguous()
        rope(positions, q, k, model.head_dim, cache128, True)
        attn = F.scaled_dot_product_attention(q.view(batch, model.heads, 1, model.head_dim), k_cache, v_cache,
                                              enable_gqa=True)
        return attn.reshape(batch, -1) @ w_o.t()

    def attention_mla(x):
        fused = x @ w_qkv_a.t()
        q_a = fnorm.rmsnorm(fused[:, :Q_LORA].contiguous(), q_a_w, 1e-6, None, enable_pdl)
        kv_a = fused[:, Q_LORA:Q_LORA + KV_LORA]  # row-strided view, as in SGLang
        kv_a = fnorm.rmsnorm(kv_a, kv_a_w, 1e-6, None, enable_pdl)
        q = (q_a @ w_q_b.t()).view(batch, model.heads, NOPE_DIM + ROPE_DIM)
        q_nope, q_pe = q[..., :NOPE_DIM], q[..., NOPE_DIM:]
        k_pe = fused[:, Q_LORA + KV_LORA:].contiguous()
        q_pe = q_pe.contiguous()
        rope(positions, q_pe.view(batch, -1), k_pe, ROPE_DIM, cache64, True)
        q_latent = torch.bmm(q_nope.transpose(0, 1), w_kc).transpose(0, 1)  # (b, heads, 512)
        q_full = torch.cat([q_latent, q_pe], dim=-1)  # (b, heads, 576)
        scores = torch.matmul(q_full, latent.transpose(1, 2)) * scale  # (b, heads, ctx)
        out_latent = torch.matmul(scores.softmax(-1), latent[..., :KV_LORA])  # (b, heads, 512)
        out = torch.bmm(out_latent.transpose(0, 1), w_vc).transpose(0, 1).reshape(batch, -1)
        return out @ w_o.t()

    def mlp(x, gate_up, down):
        return silu_and_mul(x @ gate_up.t()) @ down.t()

    def moe(x):
        logits = x @ w_router.t()
        if routing["fused_topk_deepseek"] is not None:
            routing["fused_topk_deepseek"](logits.float(), router_bias, 8, 4, MOE_TOPK, 2.5, topk_values, topk_indices)
        else:
            torch.topk(logits.float().sigmoid() + router_bias, MOE_TOPK, dim=-1)
        routed = mlp(x, w_exp_gate_up, w_exp_down)
        return routed + mlp(x, w_shared_gate_up, w_shared_down)

    def step():
        x = x0.clone()
        r = residual.clone()
        for layer in range(model.layers):
            if layer == 0:
                r.copy_(x)
                x = fnorm.rmsnorm(x, norm_w, 1e-6, None, enable_pdl)
            else:
                fnorm.fused_add_rmsnorm(x, r, norm_w, 1e-6, enable_pdl)
            x = attention_mla(x) if model.mla else attention_gqa(x)
            fnorm.fused_add_rmsnorm(x, r, norm_w, 1e-6, enable_pdl)
            if model.mla and layer >= model.dense_layers:
                x = moe(x)
            else:
                x = mlp(x, w_gate_up, w_down)
        fnorm.fused_add_rmsnorm(x, r, final_w, 1e-6, enable_pdl)
        return x @ lm_head.t()

    return step


def graph_of(step: Callable[[], Any]) -> Any:
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):  # engines warm every captured shape up eagerly
            step()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    torch.cuda.synchronize()
    return graph


def timed(run: Callable[[], Any], number: int) -> float:
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(number):
        run()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / number * 1e6


def interleaved(off: Callable[[], Any], on: Callable[[], Any], number: int, rounds: int,
                switch: Optional[Callable[[bool], None]] = None) -> Dict[str, float]:
    """``switch(plugin_on)`` runs before each side's round, outside the
    timing, and so does one step after it: the first call of a session
    resolves its shapes (once per process in a deployment), and a garbage
    collection of what the switch left is no part of a step either. The
    slowest of those first steps is reported per side."""
    import gc

    switch = switch or (lambda plugin_on: None)
    for plugin_on, run in ((False, off), (True, on)):
        switch(plugin_on)
        timed(run, 2)
    times: Dict[str, List[float]] = {"off": [], "on": []}
    first: Dict[str, float] = {"off": 0.0, "on": 0.0}
    for _ in range(rounds):
        for side, plugin_on, run in (("off", False, off), ("on", True, on)):
            switch(plugin_on)
            first[side] = max(first[side], timed(run, 1))
            gc.collect()
            times[side].append(timed(run, number))
    ratios = sorted(a / b for a, b in zip(times["off"], times["on"]))
    return {"off_us": min(times["off"]), "on_us": min(times["on"]), "ratio": ratios[len(ratios) // 2],
            "first_off_us": first["off"], "first_on_us": first["on"]}


def breakdown(step: Callable[[], Any], steps: int = 3) -> Dict[str, float]:
    """Kernel time per step by kernel name (torch profiler, eager steps)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    totals: Dict[str, float] = {}
    for event in prof.key_averages():
        us = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0.0)
        if us and event.key:
            totals[event.key] = totals.get(event.key, 0.0) + us / steps
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def op_class(kernel: str) -> str:
    k = kernel.lower()
    for needle, name in (("_rmsnorm_rows", "rmsnorm (bundled Triton)"), ("rmsnorm", "rmsnorm (FlashInfer)"),
                         ("fusedaddrmsnorm", "rmsnorm (FlashInfer)"), ("norm", "rmsnorm (FlashInfer)"),
                         ("topk", "routing"), ("routing", "routing"), ("act_and_mul", "SwiGLU"),
                         ("silu", "SwiGLU"), ("rope", "RoPE"), ("rotary", "RoPE"),
                         ("flash", "attention"), ("fmha", "attention"), ("attention", "attention"),
                         ("softmax", "attention"), ("gemm", "GEMM"), ("gemv", "GEMM"), ("nvjet", "GEMM"),
                         ("cutlass", "GEMM"), ("sm90", "GEMM"), ("copy", "copies"), ("elementwise", "elementwise"),
                         ("cat", "elementwise")):
        if needle in k:
            return name
    return "other"


def syncs_in(step: Callable[[], Any]) -> List[str]:
    """The host-device synchronizations one eager step makes (torch's sync
    debug mode): each one stalls an eager loop until the GPU catches up."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sorted({str(w.message).splitlines()[0][:160] for w in caught if "synchroniz" in str(w.message).lower()})


def launch_paths() -> Dict[str, Dict[str, Any]]:
    """Per bundled Triton kernel: launches that went straight to the compiled
    kernel, launches through Triton's standard ``kernel[grid](...)`` (about
    10 us more each at batch 1), and why the direct path is off, if it is.
    The eager arm is only what a deployment sees when the direct path is on."""
    paths: Dict[str, Dict[str, Any]] = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("_fita_solution_"):
            continue
        for value in list(vars(module).values()):
            if type(value).__name__ == "FastLauncher" and hasattr(value, "standard_calls"):
                kernel = getattr(getattr(value.kernel, "fn", None), "__name__", repr(value.kernel))
                paths[f"{name.rsplit('.', 1)[-1]}.{kernel}"] = {
                    "fast": value.fast_calls, "standard": value.standard_calls, "off": value.off}
    return paths


def _launch_delta(before: Dict[str, Dict[str, Any]], after: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    out = {}
    for kernel, now in after.items():
        then = before.get(kernel, {"fast": 0, "standard": 0})
        fast, standard = now["fast"] - then["fast"], now["standard"] - then["standard"]
        if fast or standard or now["off"]:
            out[kernel] = {"fast": fast, "standard": standard, "off": now["off"]}
    return out


def run(args: argparse.Namespace, argv: List[str]) -> Dict[str, Any]:
    import torch
    import triton

    import flashinfer
    import flashinfer_trace_apply as fita

    folder = fita.bundled_solutions_path()
    solutions = fita.load_solutions(folder)
    routing: Dict[str, Any] = {"fused_topk_deepseek": None, "note": "torch stand-in (not tried)"}
    if "deepseek-v3" in args.models and not args.torch_routing:
        try:
            from flashinfer.fused_moe import fused_topk_deepseek

            s = torch.randn(4, MOE_EXPERTS, device="cuda")
            fused_topk_deepseek(s, torch.zeros(MOE_EXPERTS, device="cuda"), 8, 4, MOE_TOPK, 2.5,
                                torch.empty(4, MOE_TOPK, device="cuda"),
                                torch.empty(4, MOE_TOPK, device="cuda", dtype=torch.int32))
            torch.cuda.synchronize()
            routing.update(fused_topk_deepseek=fused_topk_deepseek, note="flashinfer.fused_moe.fused_topk_deepseek")
        except Exception as exc:  # noqa: BLE001 - the step still runs, with the stand-in named
            routing["note"] = f"torch stand-in: fused_topk_deepseek failed ({type(exc).__name__}: {str(exc)[:200]})"
    print(f"routing: {routing['note']}", file=sys.stderr, flush=True)
    report: Dict[str, Any] = {"meta": {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name(), "host": platform.node(), "torch": torch.__version__,
        "triton": triton.__version__, "flashinfer": flashinfer.__version__, "context": CONTEXT,
        "routing": routing["note"],
        "command": "python scripts/bench_model_step.py " + " ".join(shlex.quote(a) for a in argv),
    }, "rows": [], "breakdown": {}}

    def on():
        fita.enable_apply(solutions, definitions=folder)

    def off():
        with warnings.catch_warnings():  # "registered definitions never matched": most are other models'
            warnings.simplefilter("ignore")
            fita.disable_apply()

    for key in args.models:
        model = MODELS[key]
        for batch in args.batches:
            began = time.perf_counter()
            row: Dict[str, Any] = {"model": model.name, "key": key, "batch": batch}
            try:
                step = build_step(model, batch, routing)
                off()
                want = step().float()
                row["eager_syncs_off"] = syncs_in(step)
                graph_off = graph_of(step)
                on()
                got = step().float()
                stats = fita.stats()  # one eager step: calls per step
                row["eager_syncs_on"] = syncs_in(step)
                graph_on = graph_of(step)
                row["routed_calls"] = {api: v.get("hit", 0) for api, v in stats.items() if v.get("hit")}
                row["fallbacks"] = {api: {k: n for k, n in v.items() if n and k != "hit"} for api, v in stats.items()
                                    if any(n for k, n in v.items() if k != "hit")}
                row["max_rel_diff"] = float((got - want).abs().max() / want.abs().max().clamp_min(1e-6))
                # Eager: the dispatch happens per call, so the plugin is switched between rounds.
                launches_before = launch_paths()
                eager = interleaved(step, step, args.eager_number, args.rounds,
                                    switch=lambda plugin_on: on() if plugin_on else off())
                row["eager_launches"] = _launch_delta(launches_before, launch_paths())
                off()
                graph = interleaved(graph_off.replay, graph_on.replay, args.graph_number, args.rounds)
                row.update({f"eager_{k}": v for k, v in eager.items()})
                row.update({f"graph_{k}": v for k, v in graph.items()})
                if args.pdl_arm:
                    # Plugin on both sides; the norms told enable_pdl=False on
                    # the "off" side: what launching them as programmatic
                    # dependents gains (ratio above 1: PDL faster).
                    on()
                    graph_no_pdl = graph_of(build_step(model, batch, routing, enable_pdl=False))
                    pdl = interleaved(graph_no_pdl.replay, graph_on.replay, args.graph_number, args.rounds)
                    row.update({f"pdl_{k}": v for k, v in pdl.items()})
                    del graph_no_pdl
                if batch == args.breakdown_batch:
                    off()
                    report["breakdown"].setdefault(key, {})["off"] = breakdown(step)
                    on()
                    report["breakdown"][key]["on"] = breakdown(step)
                del graph_off, graph_on, step
            except Exception as exc:  # noqa: BLE001 - one failing case must not end the run
                row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            finally:
                off()
            torch.cuda.empty_cache()
            report["rows"].append(row)
            print(f"{model.name} batch={batch}: " + (row.get("error") or
                  f"graph {row['graph_off_us']:.0f}/{row['graph_on_us']:.0f} us ({row['graph_ratio']:.3f}x), "
                  f"eager {row['eager_off_us']:.0f}/{row['eager_on_us']:.0f} us ({row['eager_ratio']:.3f}x)"
                  + f", first eager step after a switch off/on {row['eager_first_off_us']:.0f}/{row['eager_first_on_us']:.0f} us"
                  + f", eager launches {json.dumps(row.get('eager_launches'))}"
                  + f", kinds of sync per eager step off/on {len(row.get('eager_syncs_off', []))}/{len(row.get('eager_syncs_on', []))}"
                  + (f", PDL {row['pdl_off_us']:.0f}/{row['pdl_on_us']:.0f} us ({row['pdl_ratio']:.3f}x)"
                     if "pdl_ratio" in row else ""))
                  + f" [{time.perf_counter() - began:.0f}s]", file=sys.stderr, flush=True)
            if args.json:
                Path(args.json).write_text(json.dumps(report, indent=1))
    return report


def markdown(report: Dict[str, Any]) -> str:
    meta = report["meta"]
    lines = [
        f"Measured {meta['date']} on {meta['device']} ({meta['host']}), torch {meta['torch']}, triton {meta['triton']}, "
        f"flashinfer {meta['flashinfer']}; {meta['context']}-token context per request; routing: {meta['routing']}.",
        "", "```bash", meta["command"], "```", "",
        "Step µs: wall time per decode step (best of interleaved rounds); ratio: median over rounds of "
        "off / on (above 1: faster with the plugin and the bundled folder).", "",
        "| model | batch | graph µs off / on | graph ratio | eager µs off / on | eager ratio | routed calls per step |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['batch']} | error: {r['error']} | | | | |")
            continue
        routed = ", ".join(f"{api.rsplit('.', 1)[1]} {n}" for api, n in r.get("routed_calls", {}).items())
        lines.append(f"| {r['model']} | {r['batch']} | {r['graph_off_us']:.0f} / {r['graph_on_us']:.0f} | "
                     f"{r['graph_ratio']:.3f}x | {r['eager_off_us']:.0f} / {r['eager_on_us']:.0f} | "
                     f"{r['eager_ratio']:.3f}x | {routed} |")
    for key, sides in report.get("breakdown", {}).items():
        lines += ["", f"Per-op kernel time per eager step, {MODELS[key].name}, batch {report['meta'].get('breakdown_batch', '')}"
                  " (torch profiler; µs):", "", "| op | off | on |", "|---|---:|---:|"]
        classes: Dict[str, Dict[str, float]] = {}
        for side, kernels in sides.items():
            for kernel, us in kernels.items():
                classes.setdefault(op_class(kernel), {}).setdefault(side, 0.0)
                classes[op_class(kernel)][side] += us
        for name, v in sorted(classes.items(), key=lambda kv: -max(kv[1].values())):
            lines.append(f"| {name} | {v.get('off', 0):.0f} | {v.get('on', 0):.0f} |")
    return "\n".join(lines) + "\n"


def plot(report: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key in dict.fromkeys(r["key"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["key"] == key and "error" not in r]
        if not rows:
            continue
        for mode, style in (("graph", "-o"), ("eager", "--x")):
            ax.plot([r["batch"] for r in rows], [r[f"{mode}_ratio"] for r in rows], style,
                    label=f"{MODELS[key].name}, {'CUDA graph' if mode == 'graph' else 'eager'}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("decode batch (requests)")
    ax.set_ylabel("step time off / on (>1: plugin faster)")
    ax.set_title(f"Whole decode step with the bundled folder, {report['meta']['device']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64, 128, 256])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--graph-number", type=int, default=10, help="graph replays per round")
    parser.add_argument("--eager-number", type=int, default=5, help="eager steps per round")
    parser.add_argument("--breakdown-batch", type=int, default=32)
    parser.add_argument("--torch-routing", action="store_true", help="DeepSeek routing as a torch stand-in")
    parser.add_argument("--pdl-arm", action="store_true",
                        help="also time, plugin on, the graph with the norms told enable_pdl=False")
    parser.add_argument("--json")
    parser.add_argument("--from-json")
    parser.add_argument("--markdown")
    parser.add_argument("--plot")
    args = parser.parse_args(argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
    else:
        import torch

        if not torch.cuda.is_available():
            print("bench_model_step.py needs a CUDA GPU (or --from-json)", file=sys.stderr)
            return 2
        report = run(args, argv)
        report["meta"]["breakdown_batch"] = args.breakdown_batch
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
    text = markdown(report)
    if args.markdown:
        Path(args.markdown).write_text(text)
    if args.plot:
        plot(report, args.plot)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
