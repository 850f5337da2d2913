"""Launch fast path for the bundled Triton kernels (shared by every bundled
Solution; scripts/build_solutions.py ships this file as a second source).

Why. ``kernel[grid](*args, **kwargs)`` does, on every call, Triton's whole
per-call bookkeeping: bind the arguments, specialize each one (dtype, 16-byte
alignment, ``== 1``), build and look up a string cache key from the options,
read a handful of knobs, build launch metadata, and only then call the
compiled kernel's launcher. On an H100 host that is 17-28 µs of Python per
call, for kernels that run for 2 µs at small batch.

What. ``FastLauncher(kernel)`` holds what one kernel's launches share (the
gate, Triton's driver and knobs, the self-check); ``launcher.site(signature,
**fixed)`` makes a ``LaunchSite`` for one call site, whose constexprs and
launch options (``fixed``) are the same on every call. ``site.launch(grid_x,
grid_y, *args)`` behaves like ``kernel[(grid_x, grid_y)](*args, **fixed)``.
It keys each call, in one generated frame, by what Triton specializes on and
never coarser: per tensor its dtype, ``data_ptr() % 16`` and device index;
per int its value (finer than Triton's ``== 1``, ``% 16`` and width); per
float its type; plus the current device and the knobs Triton folds into the
options (``debug``, ``instrumentation_mode``, and on 3.9
``fpsan_homomorphic_casts``). Two calls with the same key therefore always
get the same compiled kernel from Triton. Life of a key:

1. first call: the standard launch; the compiled kernel it returns is kept;
2. second call: the standard launch again, then the self-check: Triton must
   have picked the *same* compiled kernel object (it is in Triton's own
   kernel cache), Triton's binder must bind the call to exactly the argument
   list the fast path would pass (same objects, same order), the arguments
   must be of the site's declared kinds, and no launch hook may want launch
   metadata. Any mismatch switches the fast path off for this kernel, with
   one warning;
3. later calls: the exact call Triton's ``JITFunction.run`` ends with
   (``compiled.run(grid..., stream, function, packed_metadata, None, None,
   None, *args)``, read in triton 3.6.0 and 3.9.0), on the stream Triton
   itself would use; on triton 3.6 (``DIRECT_C_LAUNCH``), for a kernel that
   needs no scratch memory, the C launch function under it, with the
   tensors' device pointers.

Every fast call still checks that no pre-run hook, launch enter/exit hook or
stages-inspection hook is registered (a profiler such as Proton registers
them), and takes the standard path if one is.

When not. The standard path is used for everything when
``FLASHINFER_TRACE_APPLY_TRITON_FAST_LAUNCH`` is ``0``/``false``/``off``/``no``,
when ``TRITON_INTERPRET`` is set, when the kernel is not a plain
``JITFunction`` (interpreter, autotuner), for a Triton version other than the
listed ones (``VERIFIED_TRITON``), when the installed Triton's source no
longer has the statements the fast path repeats (``internals_problem``:
checked once per process, and by tests/test_fast_launch.py in CI), and on a
non-CUDA backend. Turning itself off (any reason but the switch and the
interpreter) warns once per process and reason. Under ``torch.compile``
the kernel files launch the standard way, ``kernel[grid](...)``, which
Dynamo traces into the graph (each decides ``compiling()`` itself: Dynamo
must import the module of every function it inlines, and this file, a
solution's sibling, is not kept in sys.modules).
"""

from __future__ import annotations

import ast
import inspect
import os
import sys
import textwrap
import threading
import types
import warnings

import torch
import triton


__all__ = ["ENV_SWITCH", "VERIFIED_TRITON", "FastLauncher", "LaunchSite", "gate", "internals_problem", "triton_version"]

ENV_SWITCH = "FLASHINFER_TRACE_APPLY_TRITON_FAST_LAUNCH"
# (major, minor) of the Triton releases whose JITFunction.run and
# CompiledKernel.run / CudaLauncher.__call__ were read: 3.6.0 and 3.9.0. Any
# other release gets the standard launch (and one warning) until it is read
# and added here; internals_problem() then holds it to what was read.
VERIFIED_TRITON = ((3, 6), (3, 9))
# Releases whose CudaLauncher.__call__ (3.6: scratch allocation, then
# ``launch(grid, stream, function, cooperative, pdl, global_scratch,
# profile_scratch, metadata, launch_metadata, enter_hook, exit_hook, *args)``)
# was read and whose direct C launch was run on a GPU against it.
DIRECT_C_LAUNCH = ((3, 6),)
# Keys kept per kernel; past this, new keys just take the standard path.
MAX_KEYS = 256

_OFF_WORDS = ("0", "false", "off", "no")
_Tensor = torch.Tensor
# A site's fixed values (constexprs, options): only these types.
_KEYWORD_TYPES = frozenset((int, bool, float, str, type(None)))


def triton_version(text: str | None = None) -> tuple:
    """(major, minor, patch) of a version string (default: the installed
    Triton's); non-numeric tails such as ``+git`` are ignored."""
    text = triton.__version__ if text is None else text
    parts = []
    for piece in text.split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    while len(parts) < 3:
        parts.append(0)
    return tuple(parts)


def gate(environ=None, version: str | None = None) -> str | None:
    """None when the fast path may be used in this process, else the reason
    it may not (the environment switch, the interpreter, the Triton version)."""
    environ = os.environ if environ is None else environ
    switch = environ.get(ENV_SWITCH, "").strip().lower()
    if switch in _OFF_WORDS:
        return f"{ENV_SWITCH}={environ.get(ENV_SWITCH)}"
    interpret = environ.get("TRITON_INTERPRET", "").strip().lower()
    if interpret and interpret not in _OFF_WORDS:
        return "TRITON_INTERPRET is set"
    found = triton_version(version)
    if found[:2] not in VERIFIED_TRITON:
        text = triton.__version__ if version is None else version
        return f"triton {text} is not a verified version {VERIFIED_TRITON}"
    return None


_modules = sys.modules


# One record per process, shared by every copy of this file (each bundled
# Solution imports its own): which reasons were warned about, and the
# internals verdict (reading Triton's source once is enough).
_PROCESS = _modules.setdefault("_fita_fast_launch_process", types.ModuleType("_fita_fast_launch_process"))
if not hasattr(_PROCESS, "warned"):
    _PROCESS.warned, _PROCESS.internals = set(), {}


def warn_once(reason: str, stacklevel: int = 3) -> None:
    """Warn that the fast path is off for ``reason``, once per process."""
    if reason in _PROCESS.warned:
        return
    _PROCESS.warned.add(reason)
    warnings.warn(f"flashinfer_trace_apply: Triton fast launch off: {reason}; using the standard launch",
                  RuntimeWarning, stacklevel=stacklevel)


# The statements of Triton's own launch that the fast path repeats or relies
# on, as (function, callee or target, the argument list as ast.unparse writes
# it). A release on VERIFIED_TRITON whose source differs gets the standard
# launch. JITFunction.run: the knobs folded into the options (_knob_reads),
# the per-device caches the self-check unpacks, and the final launch call.
_RUN_LAUNCH = ("kernel.run", ("grid_0", "grid_1", "grid_2", "stream", "kernel.function", "kernel.packed_metadata",
                              "launch_metadata", "knobs.runtime.launch_enter_hook", "knobs.runtime.launch_exit_hook",
                              "*bound_args.values()"))
_RUN_CACHES = ("kernel_cache", "kernel_key_cache", "target", "backend", "binder")
# CudaLauncher.__call__ on DIRECT_C_LAUNCH releases: the C launch call the
# direct path makes itself (scratch pointers None: only used for kernels
# that need none).
# __call__(self, gridX, gridY, gridZ, stream, function, *args): args starts
# with the packed metadata, the launch metadata and the two hooks.
_C_LAUNCH = ("self.launch", ("gridX", "gridY", "gridZ", "stream", "function", "self.launch_cooperative_grid",
                             "self.launch_pdl", "global_scratch", "profile_scratch", "*args"))


def _tree(func):
    return ast.parse(textwrap.dedent(inspect.getsource(func)))


def _calls(tree, callee):
    """Argument lists (unparsed) of every call to ``callee`` in ``tree``."""
    return [tuple(ast.unparse(a) for a in node.args) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == callee]


def _option_knobs(tree):
    """(owner, name) of every ``knobs.<owner>.<name>`` read in an assignment
    to ``kwargs[...]`` (the knobs folded into the compile options)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Subscript) and ast.unparse(t.value) == "kwargs"
                                                for t in node.targets):
            for sub in ast.walk(node.value):
                text = ast.unparse(sub)
                if isinstance(sub, ast.Attribute) and text.startswith("knobs.") and text.count(".") == 2:
                    found.add(tuple(text.split(".")[1:]))
    return found


def internals_problem(version: tuple | None = None) -> str | None:
    """None when the installed Triton's launch path is the one the fast path
    was written against (see _RUN_LAUNCH and friends), else what differs.
    Read from Triton's source once per process."""
    version = triton_version()[:2] if version is None else version
    cached = _PROCESS.internals.get(version)
    if cached is not None or version in _PROCESS.internals:
        return cached
    try:
        problem = _read_internals(version)
    except Exception as exc:  # noqa: BLE001 - unreadable source: not verified
        problem = f"cannot read Triton's launch source: {exc!r}"
    _PROCESS.internals[version] = problem
    return problem


def _read_internals(version) -> str | None:
    from triton import knobs
    from triton.compiler import CompiledKernel
    from triton.runtime.jit import JITFunction

    run = _tree(JITFunction.run)
    callee, args = _RUN_LAUNCH
    if args not in _calls(run, callee):
        return f"JITFunction.run no longer ends with {callee}({', '.join(args)})"
    unpacks = [tuple(ast.unparse(e) for e in node.targets[0].elts) for node in ast.walk(run)
               if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Tuple)
               and ast.unparse(node.value) == "self.device_caches[device]"]
    if _RUN_CACHES not in unpacks:
        return f"JITFunction.run no longer unpacks device_caches[device] as {_RUN_CACHES}"
    owners = {"_rt": "runtime", "_comp": "compilation"}
    ours = {(owners[owner], name) for owner, name in _knob_reads(version)}
    theirs = _option_knobs(run)
    if ours != theirs:
        return f"JITFunction.run folds the knobs {sorted(theirs)} into the options, the fast path keys {sorted(ours)}"
    for owner, names in ((knobs.runtime, ("debug", "launch_enter_hook", "launch_exit_hook", "add_stages_inspection_hook")),
                         (knobs.compilation, ("instrumentation_mode",))):
        missing = [n for n in names if not hasattr(owner, n)]
        if missing:
            return f"triton.knobs lacks {missing}"
    if not hasattr(getattr(knobs, "HookChain", None), "__init__") or "calls" not in inspect.getsource(knobs.HookChain):
        return "triton.knobs.HookChain (with .calls) is gone"
    for name in ("launch_metadata", "run"):
        if not hasattr(CompiledKernel, name):
            return f"CompiledKernel.{name} is gone"
    if version in DIRECT_C_LAUNCH:
        from triton.backends.nvidia.driver import CudaLauncher

        callee, args = _C_LAUNCH
        if args not in _calls(_tree(CudaLauncher.__call__), callee):
            return f"CudaLauncher.__call__ no longer calls {callee}({', '.join(args)})"
    return None


def _is_plain_jit(kernel) -> bool:
    """A kernel compiled by Triton's JIT (not the interpreter's or an autotuner's)."""
    from triton.runtime.jit import JITFunction

    return type(kernel) is JITFunction


def _driver():
    """Triton's active driver (the object behind ``triton.runtime.driver.active``)."""
    from triton.runtime import driver

    return driver.active


def _device_reader(driver):
    """The driver's current-device function, or torch's C getter behind it:
    Triton's CUDA driver uses ``torch.cuda.current_device``, whose Python
    layer only makes sure CUDA is initialized: used once a key has been
    validated (two standard launches came first, so CUDA is initialized)."""
    reader = driver.get_current_device
    getter = getattr(torch._C, "_cuda_getDevice", None)
    if reader is getattr(torch.cuda, "current_device", None) and getter is not None:
        return getter
    return reader


def _compiled_kernel_class():
    from triton.compiler import CompiledKernel

    return CompiledKernel


def _knob_reads(version=None):
    """(owner, attribute) of each knob Triton folds into a kernel's compile
    options on every call, owners named as in _knob_expressions' namespace."""
    reads = [("_rt", "debug"), ("_comp", "instrumentation_mode")]
    if (triton_version()[:2] if version is None else version) >= (3, 9):
        reads.append(("_comp", "fpsan_homomorphic_casts"))
    return reads


def _knob_expressions():
    """(namespace, hooks-idle expression, options expression): Python
    expressions over the running Triton's knobs, compiled into the readers
    below and into every LaunchSite's launch function (one source of truth;
    one source of truth).

    Idle: no launch enter/exit hook (None, or Triton's empty HookChain) and
    no stages-inspection hook. Options: the knobs Triton folds into a
    kernel's compile options on every call."""
    from triton import knobs

    namespace = {"_rt": knobs.runtime, "_comp": knobs.compilation, "_Chain": getattr(knobs, "HookChain", None)}
    idle = " and ".join(
        [f"({h} is None or ({h}.__class__ is _Chain and not {h}.calls))"
         for h in ("_rt.launch_enter_hook", "_rt.launch_exit_hook")]
        + ["getattr(_rt, 'add_stages_inspection_hook', None) is None"]
    )
    options = ", ".join(f"{owner}.{name}" for owner, name in _knob_reads())
    return namespace, f"({idle})", f"({options},)"


def _knob_readers():
    """``(hooks_idle(), options())`` for the running Triton (see _knob_expressions)."""
    namespace, idle, options = _knob_expressions()
    scope = dict(namespace)
    return eval(f"lambda: {idle}", scope), eval(f"lambda: {options}", scope)  # noqa: S307 - fixed text above


class FastLauncher:
    """What the launches of one kernel share: the gate (decided at the first
    call), Triton's driver and knobs, the self-check, and its LaunchSites
    (``site()``). Attributes for inspection: ``off`` (None, or why the fast
    path is off for this kernel), ``fast_calls``, ``standard_calls``.
    """

    def __init__(self, kernel, environ=None):
        self.kernel = kernel
        self._environ = environ
        self._lock = threading.Lock()
        self._sites = []
        self.reset()

    def reset(self) -> None:
        """Forget every key and decide the gate again at the next call."""
        self.off = None
        self._decided = False
        self.standard_calls = 0
        for site in self._sites:
            site.reset()

    @property
    def fast_calls(self) -> int:
        """Calls launched directly, by all of this kernel's sites."""
        return sum(site.fast_calls for site in self._sites)

    # -- the gate -----------------------------------------------------------

    def _decide(self) -> None:
        self._decided = True
        reason = gate(self._environ)
        if reason is None and not _is_plain_jit(self.kernel):
            reason = f"not a plain JITFunction ({type(self.kernel).__name__})"
        if reason is None:
            reason = internals_problem()
        if reason is None:
            try:
                self._hooks_idle, self._options = _knob_readers()
                self._driver = _driver()
                self._get_device = self._driver.get_current_device
                self._get_stream = self._driver.get_current_stream
                self._compiled_cls = _compiled_kernel_class()
            except Exception as exc:  # noqa: BLE001 - any surprise: standard path
                reason = f"cannot read Triton's driver or knobs: {exc!r}"
        self.off = reason
        # The switch and the interpreter are the user's choice; anything else
        # means the fast path turned itself off: say so, once.
        if reason is not None and not reason.startswith((ENV_SWITCH, "TRITON_INTERPRET", "not a plain JITFunction")):
            warn_once(reason, stacklevel=4)

    def _disable(self, reason: str) -> None:
        self.off = reason
        for site in self._sites:
            site.forget()
        name = getattr(getattr(self.kernel, "fn", None), "__name__", repr(self.kernel))
        warn_once(f"{name}: {reason}", stacklevel=4)

    # -- launching ----------------------------------------------------------

    def _standard(self, grid, args, kwargs):
        self.standard_calls += 1
        return self.kernel[grid](*args, **kwargs)

    def _validate(self, first, compiled, device, grid, args, kwargs):
        """Compare what the fast path would launch with what the standard path
        just launched: (None, tail names) when they agree, else (why, None)."""
        driver = self._driver
        if compiled is not first:
            return "two calls with the same key got different compiled kernels (key coarser than Triton's)", None
        if not isinstance(compiled, self._compiled_cls):
            return f"the standard launch returned {type(compiled).__name__}, not a CompiledKernel", None
        if compiled.function is None or compiled.packed_metadata is None:
            return "the compiled kernel has no loaded function", None
        target = driver.get_current_target()
        if getattr(target, "backend", None) != "cuda":
            return f"backend {getattr(target, 'backend', None)!r} is not verified", None
        fn = self.kernel
        if fn.used_global_vals:
            return "the kernel reads global values (Triton re-checks them per call)", None
        kernel_cache, _key_cache, _target, _backend, binder = fn.device_caches[device]
        if not any(v is compiled for v in kernel_cache.values()):
            return "the compiled kernel is not in Triton's kernel cache", None
        bound, _specialization, _options = binder(*args, **kwargs)
        names = list(bound)
        # Parameters after the positional ones: passed by keyword, or their
        # defaults (the same objects on every call).
        tail = tuple((name, bound[name]) for name in names[len(args):])
        get = kwargs.get
        ours = list(args) + [get(name, default) for name, default in tail]
        theirs = list(bound.values())
        if len(ours) != len(theirs) or any(a is not b for a, b in zip(ours, theirs)):
            return "Triton binds the arguments differently from the fast path", None
        n = len(grid)
        if n < 1 or n > 3 or any(g.__class__ is not int for g in grid):
            return f"grid {grid!r} is not 1 to 3 ints", None
        stream = driver.get_current_stream(device)
        if stream != self._get_stream(device):
            return "the stream differs from the driver's current stream", None
        if not self._hooks_idle():
            return "launch hooks are registered", None
        # With no hooks registered nobody reads the launch metadata; the fast
        # path passes None. A kernel that computes its own metadata is left
        # to the standard path all the same.
        metadata = compiled.launch_metadata(grid, stream, *theirs)
        if metadata is not None and getattr(metadata, "extras", None):
            return "the kernel computes launch metadata", None
        return None, tail


    # -- launch sites ---------------------------------------------------------

    def site(self, signature: str, **fixed) -> "LaunchSite":
        """A LaunchSite for calls that always pass ``fixed`` (constexprs and
        options) by keyword and runtime arguments of the kinds in ``signature``."""
        site = LaunchSite(self, signature, fixed)
        self._sites.append(site)
        return site


# Kinds of runtime arguments a LaunchSite keys (see LaunchSite).
_SLOT_KINDS = "pif"


def _slot_kinds_agree(signature: str, args) -> bool:
    """Every argument is of its slot's kind (checked when a key is validated;
    the per-call key trusts the caller for int slots, see LaunchSite)."""
    if len(args) != len(signature):
        return False
    for kind, a in zip(signature, args):
        if kind == "p" and not isinstance(a, _Tensor):
            return False
        if kind == "i" and a.__class__ is not int:
            return False
        if kind == "f" and a.__class__ is not float:
            return False
    return True


def _site_source(signature: str, idle: str, options: str) -> str:
    """Source of a site's launch function for ``signature``, used once a key
    has been validated: one frame that keys the call, checks that no hook
    wants to see it (``idle``) and calls the launcher of the validated
    specialization, or hands the call to ``_slow``."""
    names = [f"a{i}" for i in range(len(signature))]
    pointers, key, direct = [], ["_device()", options], []
    for name, kind in zip(names, signature):
        if kind == "p":
            # What Triton specializes a pointer on (dtype, 16-byte alignment),
            # and the tensor's device: a CPU tensor (-1) never gets a
            # validated key, as Triton's launcher refuses it.
            pointers.append(f"        p{name} = {name}.data_ptr()")
            key += [f"{name}.dtype", f"p{name} & 15", f"{name}.get_device()"]
            direct.append(f"p{name}")
        elif kind == "i":
            key.append(name)  # the value: finer than Triton's (== 1, % 16, width)
            direct.append(name)
        else:
            key.append(f"{name}.__class__")  # a float is specialized by type only
            direct.append(name)
    args = ", ".join(names)
    return "\n".join([
        f"def launch(grid_x, grid_y, {args}):",
        "    key = None",
        "    try:",
        *pointers,
        f"        key = ({', '.join(key)},)",
        "        run, function, metadata, cooperative, pdl, tail, device = _ready[key]",
        f"        if _kernel.pre_run_hooks or not {idle}:",
        "            raise LookupError",
        "    except Exception:",
        f"        return _site._slow(key, grid_x, grid_y, ({args},))",
        "    if cooperative is None:  # the launcher object (Triton's own layer), tensors as given",
        f"        run(grid_x, grid_y, 1, _stream(device), function, metadata, None, None, None, {args}, *tail)",
        "    else:  # its C launch function: device pointers as ints, nothing left to look up",
        "        run(grid_x, grid_y, 1, _stream(device), function, cooperative, pdl, None, None, metadata,",
        f"            None, None, None, {', '.join(direct)}, *tail)",
        "    _site.fast_calls += 1",
    ]) + "\n"


class LaunchSite:
    """``site(grid_x, grid_y, *args)`` (or ``site.launch(...)``, one frame
    less) == ``kernel[(grid_x, grid_y)](*args, **fixed)`` for one call site
    of a kernel: its constexprs and launch options (``fixed``) are the same
    on every call, so only the runtime arguments are keyed, and a validated
    key goes straight to the compiled kernel.

    ``signature`` has one letter per runtime argument: ``p`` a tensor (keyed
    by dtype, ``data_ptr() % 16`` and device index), ``i`` a Python ``int``
    (keyed by value), ``f`` a Python ``float`` (keyed by type). The caller
    promises the kinds: int slots get ints read off tensors' shapes and
    strides, float slots are passed through ``float()``; the kinds are
    checked whenever a key is validated, and a mismatch turns the fast path
    off.

    A key's life is the FastLauncher's (standard, standard + self-check,
    direct). The direct launch calls the compiled kernel's launcher object,
    or, on a Triton whose launcher was read and run for it
    (``DIRECT_C_LAUNCH``) and a kernel that needs no scratch memory, the C
    launch function beneath it with the tensors' device pointers.
    """

    def __init__(self, launcher: FastLauncher, signature: str, fixed: dict) -> None:
        if not signature or any(kind not in _SLOT_KINDS for kind in signature):
            raise ValueError(f"signature {signature!r}: one of {_SLOT_KINDS!r} per runtime argument")
        for name, value in fixed.items():
            if value.__class__ not in _KEYWORD_TYPES:
                raise TypeError(f"fixed argument {name}={value!r}: only int, bool, float, str or None")
        self.launcher = launcher
        self.signature = signature
        self.fixed = dict(fixed)
        self.ready = {}
        self.pending = {}
        self.python_launch = None  # the generated launch function, once a key is validated
        self.fast_calls = 0  # calls it launched directly
        self.launch = self._launch_slow

    def _launch_slow(self, grid_x, grid_y, *args):
        """``launch`` until a key is validated (and after the fast path is off)."""
        return self._slow(None, grid_x, grid_y, args)

    def _compile(self):
        """The launch function for validated keys (see _site_source)."""
        launcher = self.launcher
        namespace, idle, options = _knob_expressions()
        scope = dict(namespace)
        scope.update(
            _site=self, _ready=self.ready, _kernel=launcher.kernel,
            _device=_device_reader(launcher._driver), _stream=launcher._get_stream,
        )
        source = _site_source(self.signature, idle, options)
        exec(compile(source, f"<launch site {self.signature}>", "exec"), scope)  # noqa: S102 - built above
        return scope["launch"]

    def forget(self) -> None:
        """Drop every key: calls take the standard path until keys validate again."""
        self.ready.clear()
        self.pending.clear()
        self.launch = self._launch_slow
        self.python_launch = None

    def reset(self) -> None:
        self.forget()
        self.fast_calls = 0

    def __call__(self, grid_x, grid_y, *args):
        return self.launch(grid_x, grid_y, *args)

    def _slow(self, key, grid_x, grid_y, args):
        launcher = self.launcher
        if not launcher._decided:
            launcher._decide()
        if launcher.off is not None:
            launcher.kernel[(grid_x, grid_y, 1)](*args, **self.fixed)
            return
        if key is None:  # e.g. None in a tensor slot: the standard path decides
            try:
                key = self._key(args)
            except Exception:  # noqa: BLE001
                key = None
        grid = (grid_x, grid_y, 1)
        compiled = launcher._standard(grid, args, self.fixed)
        if key is None or launcher.off is not None or key in self.ready:
            return
        if launcher.kernel.pre_run_hooks or not launcher._hooks_idle():
            return  # hooks are active now: this call stays standard
        with launcher._lock:
            first = self.pending.get(key)
            if first is None:
                if len(self.pending) + len(self.ready) < MAX_KEYS:
                    self.pending[key] = compiled
                return
            del self.pending[key]
            try:
                if not _slot_kinds_agree(self.signature, args):
                    problem = f"arguments {[type(a).__name__ for a in args]} do not match the site's kinds {self.signature!r}"
                else:
                    problem, tail = launcher._validate(first, compiled, key[0], grid, args, self.fixed)
                    if problem is None:
                        entry = _launch_entry(compiled, key[0], tail)
            except Exception as exc:  # noqa: BLE001 - a failed check is a mismatch
                problem = f"self-check raised {exc!r}"
            if problem is not None:
                launcher._disable(problem)
            else:
                self.ready[key] = entry
                if self.launch == self._launch_slow:
                    self.launch = self.python_launch = self._compile()

    def _key(self, args):
        """The key the launch function computes, for a call it handed over."""
        launcher = self.launcher
        key = [launcher._get_device(), launcher._options()]
        for kind, a in zip(self.signature, args):
            if kind == "p":
                key += [a.dtype, a.data_ptr() & 15, a.get_device()]
            else:
                key.append(a if kind == "i" else a.__class__)
        return tuple(key)


def _launch_entry(compiled, device, tail):
    """What the launch function needs to launch ``compiled`` as Triton's
    ``JITFunction.run`` would: (launch callable, function, metadata,
    cooperative, pdl, tail values, device); cooperative is None when the
    callable is the launcher object rather than its C launch function."""
    tail_values = tuple(value for _name, value in tail)  # fixed values or defaults: the same every call
    run = compiled.run
    c_launch = _c_launch_of(run)
    if c_launch is None:
        return (run, compiled.function, compiled.packed_metadata, None, None, tail_values, device)
    return (c_launch, compiled.function, compiled.packed_metadata, bool(run.launch_cooperative_grid),
            bool(run.launch_pdl), tail_values, device)


def _c_launch_of(run):
    """The C launch function under Triton's ``CudaLauncher`` when calling it
    directly is exactly what ``CudaLauncher.__call__`` would do: a verified
    Triton (``DIRECT_C_LAUNCH``), no scratch memory to allocate, and the raw
    C function (not the Python wrapper Triton puts around tensor-descriptor
    arguments). Else None (the launcher object itself is called)."""
    if triton_version()[:2] not in DIRECT_C_LAUNCH or type(run).__name__ != "CudaLauncher":
        return None
    if getattr(run, "global_scratch_size", 1) or getattr(run, "profile_scratch_size", 1):
        return None
    c_launch = getattr(run, "launch", None)
    if c_launch is None or isinstance(c_launch, (types.FunctionType, types.MethodType)):
        return None  # Triton's Python wrapper (tensor descriptors): let run() go through it
    return c_launch
