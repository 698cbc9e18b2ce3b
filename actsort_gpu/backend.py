"""Compute device selection: one switch, ``auto`` | ``cpu`` | ``cuda``, for every stage.

Two kinds of work can run on a GPU, and each needs its own software:

- ``arrays``: NumPy-style array work on CuPy (the movie pass, the features): CuPy, a CUDA
  driver and a GPU;
- ``torch``: torch models (the encoder, the active learner): a CUDA build of torch that sees
  the GPU.

:func:`resolve_backend` is the only place that turns the switch into a device; each stage
says which kinds of work it does (``uses``):

- ``cpu``: the CPU.
- ``auto``: the GPU when everything the stage uses can run there, else the CPU, with one log
  line naming what is missing (a laptop, a CPU-only torch, no CuPy: never a crash).
- ``cuda``: the GPU, or :class:`DeviceError` naming what is missing (CuPy, the driver or GPU,
  torch's CUDA build): an explicit request is never run silently on the CPU.

:meth:`Backend.provenance` is what each stage records in the store (``actsort info`` shows it).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "Backend",
    "cpu_cores",
    "cpu_threads",
    "DeviceError",
    "resolve_backend",
    "cuda_unavailable_reason",
    "torch_cuda_unavailable_reason",
    "device_report",
    "DEVICES",
    "PARTS",
]

DEVICES = ("auto", "cpu", "cuda")
#: the kinds of work a stage can put on the GPU (see the module docstring)
PARTS = ("arrays", "torch")
_WHAT = {"arrays": "array work (CuPy)", "torch": "torch models"}


class DeviceError(RuntimeError):
    """``--device cuda`` asked for, and the GPU cannot run what the stage needs."""


@dataclass(frozen=True)
class Backend:
    """Where one stage's work runs.

    name : "cpu" or "cuda"
    xp : the array module (numpy, or cupy when ``arrays`` runs on the GPU)
    torch_device : the torch device string ("cuda" when ``torch`` runs on the GPU)
    requested : the switch as given ("auto", "cpu" or "cuda")
    uses : the kinds of work resolved for (a subset of ``PARTS``)
    reason : why ``auto`` chose the CPU (None otherwise)
    """

    name: str
    xp: object
    torch_device: str
    requested: str = "cpu"
    uses: tuple[str, ...] = ("arrays",)
    reason: str | None = None
    gpu_name: str | None = field(default=None, compare=False)

    @property
    def is_gpu(self) -> bool:
        return self.name == "cuda"

    def describe(self) -> str:
        """One line: 'cuda (NVIDIA H100 ...)', 'cpu (asked for)' or 'cpu (auto: <reason>)'."""
        if self.is_gpu:
            return f"cuda ({self.gpu_name})" if self.gpu_name else "cuda"
        if self.requested == "cpu":
            return "cpu (asked for)"
        return f"cpu (auto: {self.reason})"

    def release(self) -> None:
        """Hand the device memory CuPy's pools keep for reuse back to the driver, so that the
        next stage (torch: the encoder, the learner) or another process can have it. Called
        when an array stage ends; nothing to do on the CPU."""
        if self.xp is not np:
            self.xp.get_default_memory_pool().free_all_blocks()
            self.xp.get_default_pinned_memory_pool().free_all_blocks()

    def provenance(self) -> dict:
        """What a stage records in the store's ``stages`` attrs (JSON-ready)."""
        out = {"device": self.name, "device_requested": self.requested}
        if self.gpu_name:
            out["device_name"] = self.gpu_name
        if self.reason:
            out["device_reason"] = self.reason
        return out


def cpu_cores() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one (a
    container's or ``taskset``'s cpuset limits it), else ``os.cpu_count()``; at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS / Windows have no affinity call
        return max(1, os.cpu_count() or 1)


#: threads of host work when the configuration says 0: the cores, at most this many (each
#: thread holds its own temporaries, e.g. ~120 MB per feature-stage thread)
AUTO_THREADS_MAX = 8


def cpu_threads(requested: int, *, piece: bool = False) -> int:
    """CPU threads for host work: ``requested`` when > 0; for 0 the cores this process may use
    (:func:`cpu_cores`), at most :data:`AUTO_THREADS_MAX`, or 1 in a Dask piece (the
    cluster's workers already spread the pieces over the cores)."""
    if requested > 0:
        return int(requested)
    return 1 if piece else min(cpu_cores(), AUTO_THREADS_MAX)


@lru_cache(maxsize=1)
def cuda_unavailable_reason() -> str | None:
    """None when CuPy can run kernels on a GPU, else a one-line reason."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install 'actsort-gpu[gpu]')"
    try:
        # is_available() is False without raising when no driver exists; the device count
        # raises CUDARuntimeError (a RuntimeError) on a driverless machine (docs/environment.md).
        if not cupy.cuda.is_available() or cupy.cuda.runtime.getDeviceCount() < 1:
            return "CuPy found no CUDA GPU"
        cupy.zeros(1).sum().get()
    except (RuntimeError, OSError, ImportError) as exc:
        return f"CUDA is not usable ({type(exc).__name__}: {exc})"
    return None


@lru_cache(maxsize=1)
def torch_cuda_unavailable_reason() -> str | None:
    """None when torch can run on a CUDA GPU, else a one-line reason."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if torch.version.cuda is None:
        return (
            f"torch {torch.__version__} is a CPU-only build (install the CUDA build of torch "
            f"for your driver)"
        )
    if not torch.cuda.is_available():
        return (
            f"torch {torch.__version__} (CUDA {torch.version.cuda}) found no usable GPU or driver"
        )
    return None


def _reasons(uses: tuple[str, ...]) -> list[str]:
    """What is missing for ``uses`` on the GPU (looked up at call time: tests replace them)."""
    probes = {"arrays": cuda_unavailable_reason, "torch": torch_cuda_unavailable_reason}
    out = []
    for part in uses:
        reason = probes[part]()
        if reason is not None:
            out.append(f"{_WHAT[part]}: {reason}")
    return out


@lru_cache(maxsize=4)
def _gpu_name(part: str) -> str | None:
    try:
        if part == "torch":
            import torch

            return str(torch.cuda.get_device_name())
        import cupy

        name = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except (RuntimeError, OSError, ImportError, KeyError, AssertionError):
        return None


def _as_parts(uses) -> tuple[str, ...]:
    parts = (uses,) if isinstance(uses, str) else tuple(uses)
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise ValueError(f"uses must name some of {PARTS}, got {uses!r}")
    return parts


def resolve_backend(device: str = "auto", *, uses=("arrays",), quiet: bool = False) -> Backend:
    """The backend of a stage for the switch ``device`` (one of ``DEVICES``).

    Parameters
    ----------
    device : "auto" | "cpu" | "cuda"
    uses : the kinds of work of the stage, some of ``PARTS`` ("arrays": CuPy; "torch").
        ``auto`` picks the GPU only when all of them can run there (one device per stage).
    quiet : no log line when ``auto`` falls back (a caller that reports it itself).

    Returns
    -------
    Backend

    Raises
    ------
    ValueError : ``device`` or ``uses`` unknown.
    DeviceError : ``device`` is "cuda" and the GPU cannot run ``uses``; the message names
        what is missing.
    """
    if device not in DEVICES:
        raise ValueError(
            f"device must be one of {DEVICES} (--device or $ACTSORT_DEVICE), got {device!r}"
        )
    parts = _as_parts(uses)
    if device == "cpu":
        return Backend("cpu", np, "cpu", "cpu", parts)
    missing = _reasons(parts)
    if not missing:
        xp = np
        if "arrays" in parts:
            import cupy

            xp = cupy
        torch_dev = "cuda" if "torch" in parts else "cpu"
        return Backend("cuda", xp, torch_dev, device, parts, gpu_name=_gpu_name(parts[0]))
    reason = "; ".join(missing)
    if device == "cuda":
        raise DeviceError(
            f"--device cuda: cannot run {' and '.join(_WHAT[p] for p in parts)} on a GPU: "
            f"{reason}. Fix that, or use --device auto (the CPU when the GPU cannot be used) "
            f"or --device cpu"
        )
    if not quiet:
        log.info("device auto: using the CPU for %s (%s)", " and ".join(parts), reason)
    return Backend("cpu", np, "cpu", device, parts, reason=reason)


def device_report() -> dict[str, str]:
    """What ``auto`` gives each kind of work on this machine, e.g. {"arrays": "cpu (auto:
    ...)", "torch": "cuda (NVIDIA H100 ...)"} (``actsort info``, ``scripts/gpu_check.py``)."""
    return {part: resolve_backend("auto", uses=part, quiet=True).describe() for part in PARTS}
