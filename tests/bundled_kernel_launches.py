"""Compile every bundled Triton kernel, as the bundled solutions launch it,
for a Hopper GPU on a machine without one.

Under ``TRITON_INTERPRET=1`` (how every CPU test runs the kernels) Triton's
compiler never runs, so a kernel that type-checks in Python but fails to
compile passes the whole CPU suite and breaks on the first GPU call. Two
steps, each in its own interpreter (the interpreter flag is read when Triton
is imported):

    python tests/bundled_kernel_launches.py record OUT.json
        interpreter on: the bundled folder enabled, each bundled definition
        called through FlashInfer's API on CPU tensors (batch 1, 3 and 300,
        bf16 and fp16); every kernel launch's argument kinds are written out
        (the kernels themselves are not run: only their arguments matter).
    python tests/bundled_kernel_launches.py compile IN.json
        interpreter off: each distinct launch compiled for sm_90 with the
        argument kinds Triton's launcher would derive from those arguments
        (an integer argument equal to 1 becomes a constant, as Triton
        specializes it) and the divisible-by-16 hints it adds for 16-byte
        aligned pointers and integers that are multiples of 16 (they change
        the code generated: wider loads and stores). Prints the failures and
        exits 1 if there are any.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "solutions" / "src"
BATCHES = (1, 3, 300)  # 300: past the 256-row switch some kernels make
POINTER_TYPES = {
    "torch.bfloat16": "*bf16", "torch.float16": "*fp16", "torch.float32": "*fp32",
    "torch.int32": "*i32", "torch.int64": "*i64", "torch.int8": "*i8", "torch.uint8": "*u8",
    "torch.bool": "*i1", "torch.float8_e4m3fn": "*fp8e4nv", "torch.float8_e5m2": "*fp8e5",
}


def describe(value):
    """What Triton's launcher specializes on, as JSON."""
    if value is None or isinstance(value, bool):
        return {"const": value}
    if isinstance(value, int):
        # Triton's launcher makes 1 a constant, sizes the rest by range and
        # marks multiples of 16
        if value == 1:
            return {"int": 1}
        return {"int": "i32" if -2**31 <= value < 2**31 else "i64", "div16": value % 16 == 0}
    if isinstance(value, float):
        return {"float": "fp32"}
    dtype = getattr(value, "dtype", None)
    if dtype is not None and hasattr(value, "data_ptr"):
        return {"ptr": POINTER_TYPES[str(dtype)], "div16": value.data_ptr() % 16 == 0}
    if hasattr(value, "value"):  # tl.constexpr
        return {"const": value.value}
    raise TypeError(f"no Triton argument kind for {type(value).__name__}")


def record(out_path: str) -> None:
    assert os.environ.get("TRITON_INTERPRET") == "1", "record runs under the interpreter"
    import torch
    from triton.runtime import interpreter

    sys.path.insert(0, str(ROOT / "scripts"))
    import bench_solutions
    import flashinfer_trace_apply as fita

    launches = {}
    launched = [0]  # kernel launches so far

    def run(self, *args, grid, warmup, **kwargs):
        fn = self.fn
        module = Path(fn.__code__.co_filename).stem
        names = list(fn.__code__.co_varnames[: fn.__code__.co_argcount])
        constant = {name for name, note in fn.__annotations__.items() if "constexpr" in str(note)}
        bound = dict(zip(names, args))
        options = {}
        for name, arg in kwargs.items():
            if name in names:
                bound[name] = arg
            else:
                options[name] = arg  # num_warps, num_stages, ...
        kinds = {name: {"const": getattr(arg, "value", arg)} if name in constant else describe(arg)
                 for name, arg in bound.items()}
        entry = {"module": module, "kernel": fn.__name__, "args": kinds, "options": options}
        launches[json.dumps(entry, sort_keys=True)] = entry
        launched[0] += 1
        # Not run: only the arguments matter here, and the results are never
        # read (the plugin checks a result's shape, dtype and device, not its values).

    interpreter.InterpretedFunction.run = run
    fita.enable_apply(str(ROOT))
    definitions = sorted(fita.load_solutions(str(ROOT)))
    silent = []  # definitions none of whose calls launched a kernel
    for definition in definitions:
        before = launched[0]
        for dtype in (torch.bfloat16, torch.float16):
            for batch in BATCHES:
                call, _, _ = bench_solutions.make_case(definition, batch, dtype, device="cpu")
                try:
                    call()
                except Exception:
                    pass  # left to FlashInfer's kernel here (dtype, applies_when): no CPU kernel
        if launched[0] == before:
            silent.append(definition)
    hits = sum(counts.get("hit", 0) for counts in fita.stats().values())
    Path(out_path).write_text(json.dumps({"definitions": definitions, "hits": hits, "silent": silent,
                                          "launches": list(launches.values())}, indent=1))
    print(f"{len(definitions)} definitions, {hits} routed calls, {len(launches)} distinct launches")


def signature_of(kernel, launch):
    """Triton's (signature, constexprs, attrs) for one recorded launch."""
    signature, constexprs, attrs = {}, {}, {}
    for index, param in enumerate(kernel.params):
        name = param.name
        kind = launch["args"].get(name)
        if param.is_constexpr:
            # a default when the launch did not pass it
            constexprs[(index,)] = param.default if kind is None else next(iter(kind.values()))
            signature[name] = "constexpr"
        elif kind is None:
            raise KeyError(f"{kernel.__name__}: no argument recorded for {name}")
        elif "ptr" in kind:
            signature[name] = kind["ptr"]
        elif "const" in kind:
            signature[name] = "constexpr"
            constexprs[(index,)] = kind["const"]
        elif kind.get("int") == 1:
            if param.do_not_specialize:
                signature[name] = "i32"
            else:
                signature[name] = "constexpr"
                constexprs[(index,)] = 1
        else:
            signature[name] = kind.get("int") or kind["float"]
        if kind and kind.get("div16") and not (param.do_not_specialize or param.do_not_specialize_on_alignment):
            attrs[(index,)] = [["tt.divisibility", 16]]
    return signature, constexprs, attrs


def compile_all(in_path: str) -> int:
    assert os.environ.get("TRITON_INTERPRET", "0") in ("", "0"), "compile needs Triton's compiler"
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sys.path.insert(0, str(SOURCES))
    recorded = json.loads(Path(in_path).read_text())
    failed = []
    for launch in recorded["launches"]:
        kernel = getattr(importlib.import_module(launch["module"]), launch["kernel"])
        what = f"{launch['module']}.{launch['kernel']} {launch['args']} {launch['options']}"
        try:
            signature, constexprs, attrs = signature_of(kernel, launch)
            source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
            triton.compile(source, target=GPUTarget("cuda", 90, 32), options=dict(launch["options"]))
        except Exception as error:  # every failing launch, not just the first
            failed.append(f"{what}: {repr(error.__cause__ or error)[:400]}")
    print(f"{len(recorded['launches'])} launches compiled, {len(failed)} failed")
    print("\n".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    step, path = sys.argv[1], sys.argv[2]
    if step == "record":
        record(path)
    else:
        sys.exit(compile_all(path))
