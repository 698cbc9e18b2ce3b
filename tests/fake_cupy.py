"""A NumPy-backed stand-in for CuPy that keeps CuPy's rules, so CPU CI runs the CuPy branches.

The project's GPU path is its NumPy code with ``xp = cupy``; on a machine without a GPU every
``xp is not np`` branch, every host <-> device boundary and every CuPy-only call would go
untested. :func:`install` puts this module in ``sys.modules`` as ``cupy`` (and ``cupyx``), so
:func:`actsort_gpu.backend.resolve_backend` hands it out for ``--device cuda``. Its arrays hold
host NumPy arrays but behave as CuPy's do where code can go wrong:

- no implicit conversion to NumPy: ``np.asarray(a)``, SciPy and anything else that asks for
  ``__array__`` raises CuPy's own ``TypeError``; ``a.get()`` / ``cupy.asnumpy(a)`` copy out;
- no NumPy arrays, lists or tuples as operands of arithmetic or ufuncs (CuPy raises
  ``TypeError: Unsupported type``), nor a host array assigned through a basic index
  (``a[:n] = host``: CuPy's ``fill`` raises ``ValueError``); ``cupy.asarray(host)`` copies in;
- reductions give 0-d arrays, not scalars, and arrays have no ``__index__`` (a 0-d array
  cannot be a slice bound or a ``range`` argument);
- module functions exist only where CuPy 14.2 has them, take only the keywords its
  signatures list (``cupy_names.py``), and NumPy functions called on these arrays dispatch
  only to those; the arrays have only ``cupy.ndarray``'s attributes, and its methods take only
  their keywords (``x.argsort(stable=True)``, ``x.sum(initial=0)``, ``x.max(where=m)``,
  ``x.setflags()`` raise as on CuPy);
- ``RawKernel`` runs the project's own kernels through their NumPy twins (the gather), and
  refuses any other source.

What it cannot catch: numerical differences of GPU arithmetic (float32 reductions in another
order, FMA), kernel bugs, performance. The real-GPU tests (``pytest -m gpu``) remain the check
for those.
"""

from __future__ import annotations

import functools
import operator
import re
import sys
import types
import weakref

import numpy as np
import scipy.special
from cupy_names import (
    CUPY_KEYWORDS,
    CUPY_NAMES,
    CUPY_NDARRAY_KEYWORDS,
    CUPY_NDARRAY_NAMES,
    CUPYX_SPECIAL_NAMES,
)

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. "
    "Please use `.get()` to construct a NumPy array explicitly."
)


class DeviceMemory:
    """What the fake device holds: the bytes of every live array that owns its data (views
    count through their base), with the peak since :meth:`reset`. ``memGetInfo`` reports
    ``total - in use`` as free, so code that sizes its work by free memory sees its own use."""

    def __init__(self, total: int = 16 * 2**30):
        self.total = int(total)
        self.in_use = 0
        self.peak = 0
        self._held: set[int] = set()

    def reset(self, total: int | None = None) -> None:
        if total is not None:
            self.total = int(total)
        self.peak = self.in_use

    def hold(self, data: np.ndarray) -> None:
        if data.base is not None or id(data) in self._held:
            return
        self._held.add(id(data))
        self.in_use += data.nbytes
        self.peak = max(self.peak, self.in_use)
        weakref.finalize(data, self._release, id(data), data.nbytes)

    def _release(self, key: int, nbytes: int) -> None:
        self._held.discard(key)
        self.in_use -= nbytes

    def info(self) -> tuple[int, int]:
        return max(self.total - self.in_use, 0), self.total


#: the fake device's memory (module-wide, like the one GPU of a process)
MEMORY = DeviceMemory()


def _operand(x):
    """An operand of arithmetic or a ufunc: a fake array's data, or a scalar."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (np.ndarray, list, tuple)):
        raise TypeError(f"Unsupported type {type(x)}")
    return x


def _unwrap(x):
    """Arguments of a module function: fake arrays -> their data (also inside lists, tuples
    and dicts); a NumPy array is refused as CuPy refuses it."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _index(key):
    """An index: fake arrays -> their data; host integer / boolean arrays are allowed (CuPy
    copies them to the device)."""
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    return key


def _check_keywords(name: str, kwargs) -> None:
    """A keyword CuPy's function does not take raises TypeError, as CuPy's would."""
    allowed = CUPY_KEYWORDS.get(name)
    if allowed is not None:
        unknown = sorted(set(kwargs) - set(allowed))
        if unknown:
            raise TypeError(f"cupy.{name}() got unexpected keyword arguments {unknown}")


def _advanced(key) -> bool:
    """Whether an (unwrapped) index holds an integer / boolean array or a list."""
    parts = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (np.ndarray, list)) for k in parts)


def _wrap(x):
    """Results back to the fake device: arrays and NumPy scalars become fake arrays (CuPy
    reductions give 0-d arrays); containers are wrapped element by element."""
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):
        return ndarray(np.asarray(x))
    if isinstance(x, tuple):
        return type(x)(*map(_wrap, x)) if hasattr(x, "_fields") else tuple(map(_wrap, x))
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


class ndarray:  # noqa: N801 - CuPy's name
    """A device array of the fake: a host NumPy array under CuPy's rules (module docstring)."""

    __slots__ = ("_a",)
    __hash__ = None

    def __init__(self, data: np.ndarray):
        if not isinstance(data, np.ndarray):
            raise TypeError(f"fake cupy.ndarray wraps a numpy.ndarray, got {type(data)}")
        self._a = data
        MEMORY.hold(data)

    # --- the boundaries CuPy keeps
    def __array__(self, dtype=None, copy=None):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = tuple(_operand(o) for o in kwargs["out"])
        return _wrap(getattr(ufunc, method)(*map(_operand, inputs), **kwargs))

    def __array_function__(self, func, types_, args, kwargs):
        if func.__name__ not in CUPY_NAMES:
            raise TypeError(f"no implementation found for 'numpy.{func.__name__}' in CuPy")
        _check_keywords(func.__name__, kwargs)
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def get(self, stream=None, order="C", out=None):
        if out is not None:
            out[...] = self._a
            return out
        return self._a.copy()

    def set(self, arr, stream=None):
        self._a[...] = arr

    # --- Python protocols (no __index__: CuPy has none)
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray(np.asarray(v)) for v in self._a)

    def __bool__(self):
        return bool(self._a)

    def __int__(self):
        return int(self._a)

    def __float__(self):
        return float(self._a)

    def __complex__(self):
        return complex(self._a)

    def __repr__(self):
        return "fake_cupy." + repr(self._a)

    def __getitem__(self, key):
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value):
        key = _index(key)
        if isinstance(value, np.ndarray) and value.shape != () and not _advanced(key):
            # CuPy's basic-index assignment of a host array goes through fill()
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._a[key] = value._a if isinstance(value, ndarray) else value

    def __getattr__(self, name):
        if name.startswith("__"):
            # never hand out __array_interface__ / __array_struct__: NumPy would read the host
            # data through them without asking __array__
            raise AttributeError(name)
        if name not in CUPY_NDARRAY_NAMES:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        attr = getattr(self._a, name)
        if callable(attr):

            def method(*args, **kwargs):
                unknown = sorted(set(kwargs) - set(CUPY_NDARRAY_KEYWORDS.get(name, kwargs)))
                if unknown:
                    raise TypeError(f"cupy.ndarray.{name}() got unexpected keywords {unknown}")
                return _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))

            return method
        return _wrap(attr) if isinstance(attr, np.ndarray) else attr  # shape, dtype, T, ...


ndarray.__module__ = "cupy._core.core"  # what actsort_gpu._xp.is_cupy looks at


def _binary(op, reflected=False):
    if reflected:
        return lambda self, other: _wrap(op(_operand(other), self._a))
    return lambda self, other: _wrap(op(self._a, _operand(other)))


def _inplace(op):
    def method(self, other):
        op(self._a, _operand(other))
        return self

    return method


_ARITHMETIC = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul")
_BITWISE = ("and", "or", "xor", "lshift", "rshift")
_COMPARISON = ("lt", "le", "eq", "ne", "gt", "ge")
for _name in _ARITHMETIC + _BITWISE + _COMPARISON:
    _op = getattr(operator, f"__{_name}__")
    setattr(ndarray, f"__{_name}__", _binary(_op))
    if _name not in _COMPARISON:
        setattr(ndarray, f"__r{_name}__", _binary(_op, reflected=True))
        setattr(ndarray, f"__i{_name}__", _inplace(getattr(operator, f"__i{_name}__")))
for _name in ("neg", "pos", "abs", "invert"):
    setattr(
        ndarray,
        f"__{_name}__",
        (lambda op: lambda self: _wrap(op(self._a)))(getattr(operator, f"__{_name}__")),
    )


class _Ufunc:
    """A NumPy ufunc on fake arrays, with the methods CuPy's ufuncs have."""

    def __init__(self, ufunc):
        self._u = ufunc
        self.__name__ = ufunc.__name__

    def __call__(self, *args, **kwargs):
        if "out" in kwargs:
            kwargs["out"] = _operand(kwargs["out"])
        return _wrap(self._u(*map(_operand, args), **kwargs))

    def __getattr__(self, name):
        if name not in ("at", "reduce", "accumulate", "reduceat", "outer"):
            return getattr(self._u, name)
        method = getattr(self._u, name)

        def call(*args, **kwargs):
            return _wrap(method(*_unwrap(args), **_unwrap(kwargs)))

        return call


def _function(fn, name):
    def call(*args, **kwargs):
        _check_keywords(name, kwargs)
        return _wrap(fn(*_unwrap(args), **_unwrap(kwargs)))

    call.__name__ = name
    return call


def _to_device(copy: bool):
    """``cupy.asarray`` (copy=False) / ``cupy.array`` (copy=True): host data is copied in;
    a list holding device arrays is refused, as CuPy refuses it (NumPy asks for __array__)."""

    def call(obj, dtype=None, *args, **kwargs):
        if isinstance(obj, ndarray):
            out = obj._a.astype(dtype, copy=copy) if dtype is not None else obj._a
            return ndarray(out.copy() if copy and out is obj._a else out)
        return ndarray(np.array(obj, dtype=dtype, copy=True))

    return call


def _namespace(name, source, names):
    mod = types.ModuleType(name)
    for n in names:
        obj = getattr(source, n, None)
        if obj is None:
            continue
        if isinstance(obj, np.ufunc):
            obj = _Ufunc(obj)
        elif callable(obj) and not isinstance(obj, type):
            obj = _function(obj, n)
        setattr(mod, n, obj)
    return mod


class MemoryPool:
    """CuPy's memory pools as far as the project uses them: ``free_all_blocks`` (counted)."""

    def __init__(self):
        self.freed = 0

    def free_all_blocks(self) -> None:
        self.freed += 1

    def used_bytes(self) -> int:
        return MEMORY.in_use


# ------------------------------------------------------------------ kernels
class RawKernel:
    """Runs the project's own CUDA kernels through their NumPy twins (by kernel name)."""

    def __init__(self, code: str, name: str, options=(), **kwargs):
        if not re.fullmatch(r"gather_segments_u(8|16|32)", name) or name not in code:
            raise NotImplementedError(f"fake cupy: no NumPy twin for kernel {name!r}")
        self.code, self.name = code, name

    def __call__(self, grid, block, args, **kwargs):
        from actsort_gpu.preprocess.kernels import gather_segments_numpy

        src, segments, n_segments, _height, _width, total, out = args
        segments = segments._a if isinstance(segments, ndarray) else segments
        if int(n_segments) != len(segments) or not isinstance(out, ndarray):
            raise ValueError("fake gather: arguments do not match the kernel's signature")
        gather_segments_numpy(src._a, segments, out=out._a[: int(total)])


# ------------------------------------------------------------------ cuda
class _Device:
    def __init__(self, device=0):
        self.id = int(device)

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _runtime():
    rt = types.ModuleType("cupy.cuda.runtime")
    rt.getDeviceCount = lambda: 1
    rt.memGetInfo = MEMORY.info
    rt.getDeviceProperties = lambda i: {"name": b"fake GPU (NumPy, tests/fake_cupy.py)"}
    rt.deviceSynchronize = lambda: None
    rt.CUDARuntimeError = type("CUDARuntimeError", (RuntimeError,), {})
    return rt


def build():
    """The fake ``cupy`` and ``cupyx`` modules: ``(cupy, cupyx)``."""
    cp = _namespace("cupy", np, CUPY_NAMES)
    cp.__file__ = __file__
    cp.__version__ = "14.2.0+fake"
    cp.ndarray = ndarray
    cp.asarray = cp.asanyarray = _to_device(copy=False)
    cp.array = _to_device(copy=True)
    cp.RawKernel = RawKernel
    cp.asnumpy = lambda a, stream=None, order="C", out=None: (
        a.get(out=out) if isinstance(a, ndarray) else np.asarray(a)
    )
    pool, pinned = MemoryPool(), MemoryPool()
    cp.get_default_memory_pool = lambda: pool
    cp.get_default_pinned_memory_pool = lambda: pinned
    cp.get_array_module = lambda *args: cp if any(isinstance(a, ndarray) for a in args) else np
    cp.fft = _namespace("cupy.fft", np.fft, dir(np.fft))
    cp.linalg = _namespace("cupy.linalg", np.linalg, dir(np.linalg))
    cuda = types.ModuleType("cupy.cuda")
    cuda.is_available = lambda: True
    cuda.runtime = _runtime()
    cuda.Device = _Device
    cp.cuda = cuda

    cupyx = types.ModuleType("cupyx")
    cupyx.scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy.special = _namespace("cupyx.scipy.special", scipy.special, CUPYX_SPECIAL_NAMES)
    return cp, cupyx


def install(monkeypatch):
    """Make ``import cupy`` give the fake for the rest of a test (``monkeypatch`` undoes it),
    and let :mod:`actsort_gpu.backend` find its "GPU"."""
    from actsort_gpu import backend

    cp, cupyx = build()
    for name, mod in {
        "cupy": cp,
        "cupy.cuda": cp.cuda,
        "cupy.cuda.runtime": cp.cuda.runtime,
        "cupy.fft": cp.fft,
        "cupy.linalg": cp.linalg,
        "cupyx": cupyx,
        "cupyx.scipy": cupyx.scipy,
        "cupyx.scipy.special": cupyx.scipy.special,
    }.items():
        monkeypatch.setitem(sys.modules, name, mod)
    # fresh probes (the cached ones keep what they found without the fake, and get it back)
    for name in ("cuda_unavailable_reason", "_gpu_name"):
        probe = functools.lru_cache(maxsize=4)(getattr(backend, name).__wrapped__)
        monkeypatch.setattr(backend, name, probe)
    return cp
