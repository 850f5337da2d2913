/* Compiled launch site for the bundled Triton kernels (built at run time by
 * _launch_shim.py with the C compiler Triton itself needs; optional: without
 * it the Python launch site in _fast_launch.py does the same job, slower).
 *
 * Why. An eager call at batch 1 is host-bound. In Python, keying one launch
 * (per tensor its dtype, 16-byte alignment and device; each int's value;
 * current device, Triton's option knobs and hooks) costs about as much as
 * the kernel launch itself. Here the same key is read with the same Python
 * calls, compared in C against the keys the Python site validated, and a
 * match goes straight to cuLaunchKernel with the argument block laid out as
 * Triton's own launcher lays it out for that compiled kernel.
 *
 * A Site is called as ``site(grid_x, grid_y, *args)``. Anything it does not
 * recognise (no matching key, a hook registered, an argument of another
 * kind, no CUDA context on this thread) goes to ``fallback(grid_x, grid_y,
 * *args)``, the Python site, which then decides exactly as before.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MAX_SLOTS 32   /* runtime arguments of one call site */
#define MAX_PARAMS 48  /* kernel parameters, scratch pointers included */
#define MAX_ENTRIES 64 /* validated keys per site */
#define MAX_KNOBS 8    /* option knobs read per call */

/* The CUDA driver API, declared here (stable C ABI) so no CUDA header is
 * needed to build; the functions are looked up in libcuda.so.1 on first use. */
typedef int CUresult;
typedef void *CUfunction;
typedef void *CUstream;
typedef void *CUcontext;
typedef CUresult (*launch_kernel_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                                    unsigned, CUstream, void **, void **);
typedef CUresult (*ctx_get_current_t)(CUcontext *);
typedef CUresult (*get_error_string_t)(CUresult, const char **);

static launch_kernel_t cu_launch_kernel = NULL;
static ctx_get_current_t cu_ctx_get_current = NULL;
static get_error_string_t cu_get_error_string = NULL;

/* 0 once the driver functions are found, -1 if they cannot be (decided on
 * the first call, e.g. no libcuda on a machine without a GPU). */
static int load_driver(void) {
  static int state = 0;  /* 1 found, -1 not found */
  if (state == 0) {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib != NULL) {
      cu_launch_kernel = (launch_kernel_t)dlsym(lib, "cuLaunchKernel");
      cu_ctx_get_current = (ctx_get_current_t)dlsym(lib, "cuCtxGetCurrent");
      cu_get_error_string = (get_error_string_t)dlsym(lib, "cuGetErrorString");
    }
    state = cu_launch_kernel != NULL && cu_ctx_get_current != NULL ? 1 : -1;
  }
  return state == 1 ? 0 : -1;
}

/* How one kernel parameter is filled: from a call's pointer or float slot,
 * or a constant fixed by the key (ints are keyed by value). */
enum { P_POINTER = 0, P_F32 = 1, P_F64 = 2, P_CONST = 3 };

typedef struct {
  int kind;
  int slot;       /* P_POINTER: index among pointer slots; P_F32/P_F64: among float slots */
  uint64_t bits;  /* P_CONST: the value's bytes (little-endian, as wide as the parameter) */
} Param;

typedef struct {
  long device;                        /* the device index it was validated on... */
  CUcontext ctx;                      /* ...and that device's context, current then */
  PyObject *options;                  /* tuple: the knob values this key was validated with */
  PyObject *dtypes[MAX_SLOTS];        /* per pointer slot (borrowed from `keep`) */
  int aligns[MAX_SLOTS];              /* per pointer slot: data_ptr() % 16 */
  long devices[MAX_SLOTS];            /* per pointer slot: get_device() */
  long long ints[MAX_SLOTS];          /* per int slot: the value */
  CUfunction function;
  unsigned block_x, shared;
  int n_params;
  Param params[MAX_PARAMS];
  PyObject *keep;                     /* owns dtypes and options */
} Entry;

typedef struct {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject *fallback, *get_device, *get_stream, *kernel, *runtime, *chain_type;
  PyObject *knob_owner[MAX_KNOBS], *knob_name[MAX_KNOBS];
  int n_knobs;
  char kinds[MAX_SLOTS];  /* 'p', 'i' or 'f' per runtime argument */
  int n_slots, n_pointers, n_ints, n_floats;
  int n_entries;
  Entry entries[MAX_ENTRIES];
  unsigned long long fast_calls;
} Site;

static PyObject *s_dtype, *s_data_ptr, *s_get_device, *s_pre_run_hooks, *s_enter, *s_exit, *s_stages, *s_calls;

/* What one call presents, read once and compared against every entry. */
typedef struct {
  PyObject *dtypes[MAX_SLOTS];
  uint64_t pointers[MAX_SLOTS];
  long devices[MAX_SLOTS];
  long long ints[MAX_SLOTS];
  double floats[MAX_SLOTS];
  PyObject *options[MAX_KNOBS];
  long device;    /* read_call with by_context == 0 */
  CUcontext ctx;  /* by_context == 1 */
} Call;

static void call_release(Call *c, int n_pointers, int n_knobs) {
  for (int i = 0; i < n_pointers; i++) Py_XDECREF(c->dtypes[i]);
  for (int i = 0; i < n_knobs; i++) Py_XDECREF(c->options[i]);
}

/* 1 when no hook wants to see launches (Triton's idle state), 0 when one
 * does, -1 with an exception set on a read error. */
static int hooks_idle(Site *self) {
  PyObject *hooks = PyObject_GetAttr(self->kernel, s_pre_run_hooks);
  if (hooks == NULL) return -1;
  int busy = PyObject_IsTrue(hooks);
  Py_DECREF(hooks);
  if (busy != 0) return busy < 0 ? -1 : 0;
  PyObject *names[2] = {s_enter, s_exit};
  for (int i = 0; i < 2; i++) {
    PyObject *hook = PyObject_GetAttr(self->runtime, names[i]);
    if (hook == NULL) return -1;
    int idle = hook == Py_None;
    if (!idle && self->chain_type != Py_None && (PyObject *)Py_TYPE(hook) == self->chain_type) {
      PyObject *calls = PyObject_GetAttr(hook, s_calls);
      if (calls == NULL) {
        Py_DECREF(hook);
        return -1;
      }
      idle = PyObject_IsTrue(calls) == 0;
      Py_DECREF(calls);
    }
    Py_DECREF(hook);
    if (!idle) return 0;
  }
  PyObject *stages = PyObject_GetAttr(self->runtime, s_stages);
  if (stages == NULL) {
    if (!PyErr_ExceptionMatches(PyExc_AttributeError)) return -1;
    PyErr_Clear();  /* a Triton without stage hooks */
    return 1;
  }
  int idle = stages == Py_None;
  Py_DECREF(stages);
  return idle;
}

static int as_long(PyObject *value, long *out) {
  if (value == NULL) return -1;
  int ok = PyLong_CheckExact(value);
  *out = ok ? PyLong_AsLong(value) : 0;
  Py_DECREF(value);
  return ok && !PyErr_Occurred() ? 0 : -1;
}

/* Read the call's key: 0 on success, -1 when the call is not one this site
 * can key (an exception may be set; the caller clears it and falls back).
 * The current device is read through get_device, or (by_context, when
 * launching) stands as the current CUDA context, set by the caller: each
 * device's primary context is the one current while torch has it selected,
 * so an equal context means the device the key was validated on (and any
 * other context, e.g. on another device, falls back). */
static int read_call(Site *self, PyObject *const *args, Call *c, int by_context) {
  int idle = hooks_idle(self);
  if (idle != 1) return -1;
  for (int k = 0; k < self->n_knobs; k++) {
    c->options[k] = PyObject_GetAttr(self->knob_owner[k], self->knob_name[k]);
    if (c->options[k] == NULL) return -1;
  }
  if (!by_context && as_long(PyObject_CallNoArgs(self->get_device), &c->device) < 0) return -1;
  int p = 0, i = 0, f = 0;
  for (int s = 0; s < self->n_slots; s++) {
    PyObject *a = args[s];
    switch (self->kinds[s]) {
      case 'p': {
        c->dtypes[p] = PyObject_GetAttr(a, s_dtype);
        if (c->dtypes[p] == NULL) return -1;
        PyObject *ptr = PyObject_VectorcallMethod(s_data_ptr, &a, 1, NULL);
        if (ptr == NULL) return -1;
        int is_int = PyLong_CheckExact(ptr);  /* anything else: not a tensor this site knows */
        c->pointers[p] = is_int ? PyLong_AsUnsignedLongLong(ptr) : 0;
        Py_DECREF(ptr);
        if (!is_int || PyErr_Occurred()) return -1;
        if (as_long(PyObject_VectorcallMethod(s_get_device, &a, 1, NULL), &c->devices[p]) < 0)
          return -1;
        p++;
        break;
      }
      case 'i': {
        if (!PyLong_CheckExact(a)) return -1;
        int overflow = 0;
        c->ints[i++] = PyLong_AsLongLongAndOverflow(a, &overflow);
        if (overflow || PyErr_Occurred()) return -1;
        break;
      }
      default: {
        if (!PyFloat_CheckExact(a)) return -1;
        c->floats[f++] = PyFloat_AS_DOUBLE(a);
      }
    }
  }
  return 0;
}

/* The entry whose key equals the call's, or NULL (-1 error: exception set). */
static Entry *match(Site *self, Call *c, int by_context, int *error) {
  *error = 0;
  for (int e = 0; e < self->n_entries; e++) {
    Entry *en = &self->entries[e];
    if (by_context ? en->ctx == NULL || en->ctx != c->ctx : en->device != c->device) continue;
    int same = 1;
    for (int p = 0; same && p < self->n_pointers; p++)
      same = en->dtypes[p] == c->dtypes[p] && en->aligns[p] == (int)(c->pointers[p] & 15) &&
             en->devices[p] == c->devices[p];
    for (int i = 0; same && i < self->n_ints; i++) same = en->ints[i] == c->ints[i];
    for (int k = 0; same && k < self->n_knobs; k++) {
      PyObject *want = PyTuple_GET_ITEM(en->options, k);
      if (want == c->options[k]) continue;
      int eq = PyObject_RichCompareBool(want, c->options[k], Py_EQ);
      if (eq < 0) {
        *error = 1;
        return NULL;
      }
      same = eq;
    }
    if (same) return en;
  }
  return NULL;
}

/* The argument block of one launch: one 8-byte cell per parameter. */
static void pack(Entry *en, Call *c, uint64_t *cells, void **params) {
  for (int k = 0; k < en->n_params; k++) {
    Param *pr = &en->params[k];
    uint64_t bits = 0;
    if (pr->kind == P_POINTER) {
      bits = c->pointers[pr->slot];
    } else if (pr->kind == P_F32) {
      float value = (float)c->floats[pr->slot];
      uint32_t b32;
      memcpy(&b32, &value, 4);
      bits = b32;
    } else if (pr->kind == P_F64) {
      memcpy(&bits, &c->floats[pr->slot], 8);
    } else {
      bits = pr->bits;
    }
    cells[k] = bits;
    params[k] = &cells[k];
  }
}

static PyObject *fall_back(Site *self, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
  if (PyErr_Occurred()) PyErr_Clear();
  return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
}

/* Parse the grid and the call; the matching entry or NULL (fall back). */
static Entry *prepare(Site *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, Call *c,
                      int by_context, long *gx, long *gy) {
  memset(c->dtypes, 0, sizeof(c->dtypes));  /* call_release runs on every path */
  memset(c->options, 0, sizeof(c->options));
  if (kwnames != NULL || nargs != 2 + self->n_slots) return NULL;
  if (!PyLong_CheckExact(args[0]) || !PyLong_CheckExact(args[1])) return NULL;
  *gx = PyLong_AsLong(args[0]);
  *gy = PyLong_AsLong(args[1]);
  if (PyErr_Occurred() || *gx <= 0 || *gy <= 0 || *gx > 0x7fffffffL || *gy > 65535) return NULL;
  if (read_call(self, args + 2, c, by_context) < 0) return NULL;
  int error;
  return match(self, c, by_context, &error);
}

static PyObject *site_vectorcall(PyObject *obj, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
  Site *self = (Site *)obj;
  Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  Call c;
  long gx = 0, gy = 0;
  c.ctx = NULL;
  /* No driver or no current context (Triton's launcher would set one up):
   * nothing can match, let the fallback decide. */
  if (load_driver() < 0 || cu_ctx_get_current(&c.ctx) != 0 || c.ctx == NULL) return fall_back(self, args, nargsf, kwnames);
  Entry *en = prepare(self, args, nargs, kwnames, &c, 1, &gx, &gy);
  if (en == NULL) {
    call_release(&c, self->n_pointers, self->n_knobs);
    return fall_back(self, args, nargsf, kwnames);
  }
  PyObject *device = PyLong_FromLong(en->device);
  PyObject *stream_obj = device ? PyObject_CallOneArg(self->get_stream, device) : NULL;
  Py_XDECREF(device);
  uint64_t stream = 0;
  if (stream_obj == NULL || !PyLong_Check(stream_obj) ||
      ((stream = PyLong_AsUnsignedLongLong(stream_obj)), PyErr_Occurred())) {
    Py_XDECREF(stream_obj);
    call_release(&c, self->n_pointers, self->n_knobs);
    return fall_back(self, args, nargsf, kwnames);
  }
  Py_DECREF(stream_obj);
  uint64_t cells[MAX_PARAMS];
  void *params[MAX_PARAMS];
  pack(en, &c, cells, params);
  call_release(&c, self->n_pointers, self->n_knobs);
  CUresult status = cu_launch_kernel(en->function, (unsigned)gx, (unsigned)gy, 1, en->block_x, 1, 1, en->shared,
                                     (CUstream)(uintptr_t)stream, params, NULL);
  if (status != 0) {
    const char *text = NULL;
    if (cu_get_error_string == NULL || cu_get_error_string(status, &text) != 0) text = "unknown error";
    PyErr_Format(PyExc_RuntimeError, "Triton Error [CUDA]: %s (cuLaunchKernel from the launch shim, code %d)",
                 text, status);
    return NULL;
  }
  self->fast_calls++;
  Py_RETURN_NONE;
}

/* site.describe(grid_x, grid_y, *args): what a call would launch, without
 * launching (the current device read through get_device, not the context,
 * so it works without a GPU): None (it would fall back) or (entry index, grid_x, grid_y,
 * block_x, shared, params as bytes). For tests and debugging. */
static PyObject *site_describe(PyObject *obj, PyObject *const *args, Py_ssize_t nargs) {
  Site *self = (Site *)obj;
  Call c;
  long gx = 0, gy = 0;
  Entry *en = prepare(self, args, nargs, NULL, &c, 0, &gx, &gy);
  if (en == NULL) {
    call_release(&c, self->n_pointers, self->n_knobs);
    if (PyErr_Occurred()) PyErr_Clear();
    Py_RETURN_NONE;
  }
  uint64_t cells[MAX_PARAMS];
  void *params[MAX_PARAMS];
  pack(en, &c, cells, params);
  call_release(&c, self->n_pointers, self->n_knobs);
  return Py_BuildValue("(nllIIy#)", (Py_ssize_t)(en - self->entries), gx, gy, en->block_x, en->shared,
                       (const char *)cells, (Py_ssize_t)(en->n_params * 8));
}

/* site.add(device, options, pointer_keys, int_values, function, block_x,
 * shared, params): a key the Python site validated and how to launch it.
 * pointer_keys: ((dtype, align, device), ...) per pointer slot;
 * int_values: per int slot; params: ((kind, slot_or_bits), ...) per kernel
 * parameter with kind 0 pointer slot, 1 fp32 from float slot, 2 fp64 from
 * float slot, 3 constant bits. False when the site is full. */
static PyObject *site_add(PyObject *obj, PyObject *args) {
  Site *self = (Site *)obj;
  long device;
  PyObject *options, *pointer_keys, *int_values, *params;
  unsigned long long function;
  unsigned int block_x, shared;
  if (!PyArg_ParseTuple(args, "lO!O!O!KIIO!", &device, &PyTuple_Type, &options, &PyTuple_Type, &pointer_keys,
                        &PyTuple_Type, &int_values, &function, &block_x, &shared, &PyTuple_Type, &params))
    return NULL;
  if (self->n_entries >= MAX_ENTRIES) Py_RETURN_FALSE;
  if (PyTuple_GET_SIZE(options) != self->n_knobs || PyTuple_GET_SIZE(pointer_keys) != self->n_pointers ||
      PyTuple_GET_SIZE(int_values) != self->n_ints || PyTuple_GET_SIZE(params) > MAX_PARAMS) {
    PyErr_SetString(PyExc_ValueError, "launch shim: add() sizes do not match the site");
    return NULL;
  }
  Entry en;
  memset(&en, 0, sizeof(en));
  en.device = device;
  /* The context current now, in the thread that just launched this key the
   * standard way; none (no driver, e.g. on a machine without a GPU): the key
   * is kept for describe() but never launched. */
  if (load_driver() < 0 || cu_ctx_get_current(&en.ctx) != 0) en.ctx = NULL;
  en.function = (CUfunction)(uintptr_t)function;
  en.block_x = block_x;
  en.shared = shared;
  for (int p = 0; p < self->n_pointers; p++) {
    PyObject *dtype;
    int align;
    long dev;
    if (!PyArg_ParseTuple(PyTuple_GET_ITEM(pointer_keys, p), "Oil", &dtype, &align, &dev)) return NULL;
    en.dtypes[p] = dtype;
    en.aligns[p] = align;
    en.devices[p] = dev;
  }
  for (int i = 0; i < self->n_ints; i++) {
    en.ints[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(int_values, i));
    if (PyErr_Occurred()) return NULL;
  }
  en.n_params = (int)PyTuple_GET_SIZE(params);
  for (int k = 0; k < en.n_params; k++) {
    int kind;
    unsigned long long value;
    if (!PyArg_ParseTuple(PyTuple_GET_ITEM(params, k), "iK", &kind, &value)) return NULL;
    int limit = kind == P_POINTER ? self->n_pointers : self->n_floats;
    if (kind < P_POINTER || kind > P_CONST || (kind != P_CONST && value >= (unsigned long long)limit)) {
      PyErr_Format(PyExc_ValueError, "launch shim: parameter %d: bad kind %d or slot %llu", k, kind, value);
      return NULL;
    }
    en.params[k].kind = kind;
    if (kind == P_CONST)
      en.params[k].bits = value;
    else
      en.params[k].slot = (int)value;
  }
  en.options = options;
  en.keep = PyTuple_Pack(2, options, pointer_keys);  /* keeps the dtypes and options alive */
  if (en.keep == NULL) return NULL;
  self->entries[self->n_entries++] = en;
  Py_RETURN_TRUE;
}

static PyObject *site_clear(PyObject *obj, PyObject *unused) {
  Site *self = (Site *)obj;
  for (int e = 0; e < self->n_entries; e++) Py_CLEAR(self->entries[e].keep);
  self->n_entries = 0;
  Py_RETURN_NONE;
}

static int site_clear_refs(PyObject *obj);

static int site_init(PyObject *obj, PyObject *args, PyObject *kw) {
  Site *self = (Site *)obj;
  const char *kinds;
  PyObject *fallback, *get_device, *get_stream, *kernel, *runtime, *chain_type, *knobs;
  static char *names[] = {"kinds", "fallback", "get_device", "get_stream", "kernel", "runtime", "chain_type",
                          "knobs", NULL};
  if (!PyArg_ParseTupleAndKeywords(args, kw, "sOOOOOOO!", names, &kinds, &fallback, &get_device, &get_stream,
                                   &kernel, &runtime, &chain_type, &PyTuple_Type, &knobs))
    return -1;
  site_clear_refs(obj);  /* __init__ again starts from nothing */
  int n = (int)strlen(kinds);
  if (n == 0 || n > MAX_SLOTS || PyTuple_GET_SIZE(knobs) > MAX_KNOBS) {
    PyErr_SetString(PyExc_ValueError, "launch shim: 1 to 32 slots and at most 8 knobs");
    return -1;
  }
  self->n_slots = n;
  self->n_pointers = self->n_ints = self->n_floats = 0;
  for (int s = 0; s < n; s++) {
    char k = kinds[s];
    if (k == 'p') self->n_pointers++;
    else if (k == 'i') self->n_ints++;
    else if (k == 'f') self->n_floats++;
    else {
      PyErr_Format(PyExc_ValueError, "launch shim: slot kind %c is not one of p, i, f", k);
      return -1;
    }
    self->kinds[s] = k;
  }
  self->n_knobs = (int)PyTuple_GET_SIZE(knobs);
  for (int k = 0; k < self->n_knobs; k++) {
    PyObject *owner, *name;
    if (!PyArg_ParseTuple(PyTuple_GET_ITEM(knobs, k), "OU", &owner, &name)) return -1;
    Py_INCREF(owner);
    Py_INCREF(name);
    self->knob_owner[k] = owner;
    self->knob_name[k] = name;
  }
  PyObject **slots[] = {&self->fallback, &self->get_device, &self->get_stream, &self->kernel, &self->runtime,
                        &self->chain_type};
  PyObject *values[] = {fallback, get_device, get_stream, kernel, runtime, chain_type};
  for (int i = 0; i < 6; i++) {
    Py_INCREF(values[i]);
    Py_XSETREF(*slots[i], values[i]);
  }
  return 0;
}

static int site_traverse(PyObject *obj, visitproc visit, void *arg) {
  Site *self = (Site *)obj;
  Py_VISIT(self->fallback);
  Py_VISIT(self->get_device);
  Py_VISIT(self->get_stream);
  Py_VISIT(self->kernel);
  Py_VISIT(self->runtime);
  Py_VISIT(self->chain_type);
  for (int k = 0; k < self->n_knobs; k++) Py_VISIT(self->knob_owner[k]);
  for (int e = 0; e < self->n_entries; e++) Py_VISIT(self->entries[e].keep);
  return 0;
}

static int site_clear_refs(PyObject *obj) {
  Site *self = (Site *)obj;
  Py_CLEAR(self->fallback);
  Py_CLEAR(self->get_device);
  Py_CLEAR(self->get_stream);
  Py_CLEAR(self->kernel);
  Py_CLEAR(self->runtime);
  Py_CLEAR(self->chain_type);
  for (int k = 0; k < self->n_knobs; k++) {
    Py_CLEAR(self->knob_owner[k]);
    Py_CLEAR(self->knob_name[k]);
  }
  self->n_knobs = 0;
  for (int e = 0; e < self->n_entries; e++) Py_CLEAR(self->entries[e].keep);
  self->n_entries = 0;
  return 0;
}

static void site_dealloc(PyObject *obj) {
  PyObject_GC_UnTrack(obj);
  site_clear_refs(obj);
  Py_TYPE(obj)->tp_free(obj);
}

static PyObject *site_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  Site *self = (Site *)type->tp_alloc(type, 0);
  if (self != NULL) self->vectorcall = site_vectorcall;
  return (PyObject *)self;
}

static PyObject *site_get_fast_calls(PyObject *obj, void *unused) {
  return PyLong_FromUnsignedLongLong(((Site *)obj)->fast_calls);
}

static PyObject *site_get_n_entries(PyObject *obj, void *unused) {
  return PyLong_FromLong(((Site *)obj)->n_entries);
}

static PyMethodDef site_methods[] = {
    {"add", site_add, METH_VARARGS, "Add a validated key and how to launch it."},
    {"clear", site_clear, METH_NOARGS, "Drop every key."},
    {"describe", (PyCFunction)(void (*)(void))site_describe, METH_FASTCALL,
     "What a call would launch, without launching."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef site_getset[] = {
    {"fast_calls", site_get_fast_calls, NULL, "Calls launched here.", NULL},
    {"entries", site_get_n_entries, NULL, "Keys held.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SiteType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_fita_launch_shim.Site",
    .tp_basicsize = sizeof(Site),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Site, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = site_new,
    .tp_init = site_init,
    .tp_dealloc = site_dealloc,
    .tp_traverse = site_traverse,
    .tp_clear = site_clear_refs,
    .tp_methods = site_methods,
    .tp_getset = site_getset,
    .tp_doc = "site(grid_x, grid_y, *args): launch a validated key, else call fallback with the same arguments.",
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_fita_launch_shim", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__fita_launch_shim(void) {
  const char *texts[] = {"dtype", "data_ptr", "get_device", "pre_run_hooks", "launch_enter_hook",
                         "launch_exit_hook", "add_stages_inspection_hook", "calls"};
  PyObject **targets[] = {&s_dtype, &s_data_ptr, &s_get_device, &s_pre_run_hooks, &s_enter,
                          &s_exit, &s_stages, &s_calls};
  for (int i = 0; i < 8; i++) {
    *targets[i] = PyUnicode_InternFromString(texts[i]);
    if (*targets[i] == NULL) return NULL;
  }
  if (PyType_Ready(&SiteType) < 0) return NULL;
  PyObject *m = PyModule_Create(&module_def);
  if (m == NULL) return NULL;
  Py_INCREF(&SiteType);
  if (PyModule_AddObject(m, "Site", (PyObject *)&SiteType) < 0) {
    Py_DECREF(&SiteType);
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
