"""Backend selection never crashes without a GPU; array helpers dispatch correctly."""

import logging
import sys

import numpy as np
import pytest

from actsort_gpu import backend as backend_mod
from actsort_gpu._xp import get_xp, to_numpy
from actsort_gpu.backend import DeviceError, resolve_backend


def test_cpu_is_numpy():
    b = resolve_backend("cpu")
    assert b.name == "cpu" and b.xp is np and b.torch_device == "cpu" and not b.is_gpu


def test_auto_falls_back_with_one_log_line_and_cuda_raises(monkeypatch, caplog):
    # issue 12 changed this: an explicit "cuda" that cannot be honoured used to fall back to
    # the CPU with a warning; it is now an error naming what is missing (never a CPU run)
    monkeypatch.setattr(backend_mod, "cuda_unavailable_reason", lambda: "no GPU in this test")
    with caplog.at_level(logging.INFO, logger="actsort_gpu.backend"):
        b = resolve_backend("auto")
        assert b.name == "cpu" and b.xp is np and b.reason.endswith("no GPU in this test")
        with pytest.raises(DeviceError, match=r"--device cuda.*CuPy.*no GPU in this test"):
            resolve_backend("cuda")
    messages = [r for r in caplog.records if "no GPU in this test" in r.getMessage()]
    assert len(messages) == 1 and messages[0].levelno == logging.INFO
    assert b.provenance() == {
        "device": "cpu",
        "device_requested": "auto",
        "device_reason": "array work (CuPy): no GPU in this test",
    }
    assert b.describe() == "cpu (auto: array work (CuPy): no GPU in this test)"


def test_one_switch_for_arrays_and_torch(monkeypatch, caplog):
    """Each stage names what it runs; 'cuda' fails on exactly the missing part, 'auto' takes
    the GPU only when every part can run there (one device per stage)."""
    monkeypatch.setattr(backend_mod, "cuda_unavailable_reason", lambda: "CuPy missing here")
    monkeypatch.setattr(backend_mod, "torch_cuda_unavailable_reason", lambda: None)
    monkeypatch.setattr(backend_mod, "_gpu_name", lambda part: "Fake GPU")
    t = resolve_backend("cuda", uses="torch")  # the learner / encoder: torch's CUDA is enough
    assert t.is_gpu and t.torch_device == "cuda" and t.xp is np
    assert t.provenance() == {
        "device": "cuda",
        "device_requested": "cuda",
        "device_name": "Fake GPU",
    }
    with pytest.raises(DeviceError, match="array work .CuPy.: CuPy missing here"):
        resolve_backend("cuda", uses=("arrays", "torch"))
    with caplog.at_level(logging.INFO, logger="actsort_gpu.backend"):
        both = resolve_backend("auto", uses=("torch", "arrays"))
    assert both.name == "cpu" and both.torch_device == "cpu"  # not half on the GPU
    assert "CuPy missing here" in caplog.text
    monkeypatch.setattr(backend_mod, "torch_cuda_unavailable_reason", lambda: "CPU-only torch")
    with pytest.raises(DeviceError, match="torch models: CPU-only torch"):
        resolve_backend("cuda", uses="torch")
    assert resolve_backend("cpu", uses="torch").torch_device == "cpu"
    with pytest.raises(ValueError, match="uses must name"):
        resolve_backend("auto", uses="tensors")
    report = backend_mod.device_report()
    assert report == {
        "arrays": "cpu (auto: array work (CuPy): CuPy missing here)",
        "torch": "cpu (auto: torch models: CPU-only torch)",
    }


def test_torch_reason_names_the_build(monkeypatch):
    import types

    backend_mod.torch_cuda_unavailable_reason.cache_clear()
    fake = types.SimpleNamespace(
        __version__="9.9+cpu",
        version=types.SimpleNamespace(cuda=None),
        cuda=types.SimpleNamespace(is_available=lambda: False),
    )
    monkeypatch.setitem(sys.modules, "torch", fake)
    try:
        assert "torch 9.9+cpu is a CPU-only build" in backend_mod.torch_cuda_unavailable_reason()
        backend_mod.torch_cuda_unavailable_reason.cache_clear()
        fake.version.cuda = "13.0"
        assert "found no usable GPU or driver" in backend_mod.torch_cuda_unavailable_reason()
    finally:
        backend_mod.torch_cuda_unavailable_reason.cache_clear()


def test_info_and_stage_records_name_the_device(tmp_path, capsys):
    from actsort_gpu.cli import main
    from actsort_gpu.features.synthetic import make_feature_store

    store = make_feature_store(tmp_path / "d.actsort", n_candidates=4, n_frames=50)
    store.begin_stage("features", resolve_backend("cpu").provenance())
    store.finish_stage("features", 1.0, device="cpu")
    assert "features    complete in 1.0 s on cpu" in store.summary()
    store.begin_stage("embed", {"device": "cuda", "device_name": "NVIDIA H100"})
    store.finish_stage("embed", 2.0)
    assert "embed       complete in 2.0 s on cuda (NVIDIA H100)" in store.summary()
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("arrays ") and "\ntorch " in out


@pytest.mark.parametrize("numba_imports", [True, False])
def test_info_says_whether_the_host_loops_run_compiled(numba_imports, monkeypatch, capsys):
    import actsort_gpu.jit as jit
    from actsort_gpu.cli import main

    monkeypatch.setattr(jit, "available", lambda: numba_imports)
    assert main(["info"]) == 0
    out = capsys.readouterr().out.splitlines()
    loops = next(line for line in out if line.startswith("loops "))
    assert out[-1].startswith("cores ") and "CPU cores usable here" in out[-1]
    assert ("run compiled" in loops) == numba_imports
    assert ("twins run" in loops) != numba_imports


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


def test_gpu_backend_uses_cupy(cp):
    b = resolve_backend("cuda")
    assert b.is_gpu and b.xp.__name__ == "cupy"
    assert get_xp(b.xp.arange(3)) is b.xp


def test_stages_refuse_an_unusable_cuda_and_record_the_device(tmp_path, monkeypatch):
    from actsort_gpu.embed import embed
    from actsort_gpu.features import compute_features
    from actsort_gpu.features.synthetic import make_feature_store
    from actsort_gpu.store import SortStore

    path = make_feature_store(tmp_path / "s.actsort", n_candidates=12, n_frames=200).path
    monkeypatch.setattr(backend_mod, "cuda_unavailable_reason", lambda: "no GPU in this test")
    monkeypatch.setattr(backend_mod, "torch_cuda_unavailable_reason", lambda: "no torch CUDA")
    before = dict(SortStore.open(path).attrs["stages"])
    with pytest.raises(DeviceError, match="no GPU in this test"):
        compute_features(path, device="cuda")
    with pytest.raises(DeviceError, match="no torch CUDA"):
        embed(path, device="cuda")
    assert dict(SortStore.open(path).attrs["stages"]) == before  # nothing begun
    compute_features(path, device="auto")
    params = SortStore.open(path).attrs["stages"]["features"]["params"]
    assert params["device"] == "cpu" and params["device_requested"] == "auto"
    assert params["device_reason"] == "array work (CuPy): no GPU in this test"
    assert "features    complete in" in SortStore.open(path).summary()
    assert "on cpu (auto: array work (CuPy): no GPU in this test)" in SortStore.open(path).summary()


def test_every_computing_command_takes_the_one_switch():
    from actsort_gpu.cli import build_parser

    parser = build_parser()
    argv = {
        "sort": ["sort", "s.actsort"],
        "preprocess": ["preprocess", "s.actsort"],
        "features": ["features", "s.actsort"],
        "embed": ["embed", "s.actsort"],
        "apply": ["apply", "s.actsort", "--classifier", "c.npz"],
        "simulate": ["simulate", "--features", "f.mat", "--json", "o.json"],
        "demo": ["demo"],
    }
    for name, args in argv.items():
        assert parser.parse_args([*args, "--device", "cpu"]).device == "cpu", name
    with pytest.raises(SystemExit):
        parser.parse_args(["sort", "s.actsort", "--device", "gpu"])
