"""Backend selection never crashes without a GPU; array helpers dispatch correctly."""

import logging
import sys

import numpy as np
import pytest

from actsort_gpu import backend as backend_mod
from actsort_gpu._xp import get_xp, to_numpy
from actsort_gpu.backend import resolve_backend


def test_cpu_is_numpy():
    b = resolve_backend("cpu")
    assert b.name == "cpu" and b.xp is np and b.torch_device == "cpu" and not b.is_gpu


def test_auto_and_cuda_fall_back_with_one_log_line(monkeypatch, caplog):
    monkeypatch.setattr(backend_mod, "cuda_unavailable_reason", lambda: "no GPU in this test")
    with caplog.at_level(logging.INFO, logger="actsort_gpu.backend"):
        assert resolve_backend("auto").name == "cpu"
        assert resolve_backend("cuda").name == "cpu"
    messages = [r for r in caplog.records if "no GPU in this test" in r.getMessage()]
    assert len(messages) == 2
    assert messages[1].levelno == logging.WARNING  # asked for cuda explicitly


def test_unknown_device_rejected():
    with pytest.raises(ValueError, match="'gpu'"):
        resolve_backend("gpu")


@pytest.fixture
def fresh_reason():
    """cuda_unavailable_reason is cached per process: clear it around a test that fakes CuPy."""
    backend_mod.cuda_unavailable_reason.cache_clear()
    yield backend_mod.cuda_unavailable_reason
    backend_mod.cuda_unavailable_reason.cache_clear()


def test_reason_names_missing_cupy(monkeypatch, fresh_reason):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    assert "CuPy is not installed" in fresh_reason()


class _FakeCuda:
    """A CuPy stand-in whose runtime reports the given device count or raises."""

    def __init__(self, available: bool, count):
        self.cuda = self
        self.runtime = self
        self._available, self._count = available, count

    def is_available(self):
        return self._available

    def getDeviceCount(self):  # noqa: N802 (CuPy's name)
        if isinstance(self._count, Exception):
            raise self._count
        return self._count


@pytest.mark.parametrize(
    ("available", "count", "expected"),
    [
        (False, 0, "CuPy found no CUDA GPU"),
        (True, 0, "CuPy found no CUDA GPU"),
        (True, RuntimeError("cudaErrorInsufficientDriver"), "CUDA is not usable (RuntimeError"),
    ],
)
def test_reason_names_what_is_missing(monkeypatch, fresh_reason, available, count, expected):
    monkeypatch.setitem(sys.modules, "cupy", _FakeCuda(available, count))
    assert expected in fresh_reason()


def test_get_xp_and_to_numpy():
    a = np.arange(3)
    assert get_xp(a) is np
    assert get_xp(a, xp="sentinel") == "sentinel"
    np.testing.assert_array_equal(to_numpy(a), a)
    torch = pytest.importorskip("torch")
    np.testing.assert_array_equal(to_numpy(torch.arange(3)), a)


@pytest.mark.gpu
def test_gpu_backend_uses_cupy():
    b = resolve_backend("cuda")
    assert b.is_gpu and b.xp.__name__ == "cupy"
    assert get_xp(b.xp.arange(3)) is b.xp
