"""Dask helpers: in-process fallback, ordered results, clear error for a dead scheduler."""

import socket

import pytest

from actsort_gpu.cluster import ClusterError, dask_client, map_pieces


def _square_plus(x, offset):
    return x * x + offset


def test_no_cluster_runs_in_process():
    with dask_client() as client:
        assert client is None
        assert map_pieces(client, _square_plus, [1, 2, 3], 10) == [11, 14, 19]


def test_local_cluster_keeps_piece_order():
    pytest.importorskip("distributed")
    with dask_client(workers=2) as client:
        assert map_pieces(client, _square_plus, list(range(8)), 1) == [x * x + 1 for x in range(8)]


def test_unreachable_scheduler_names_the_address():
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    with pytest.raises(ClusterError, match=address), dask_client(address, timeout_s=2):
        pass


def test_bad_worker_count():
    pytest.importorskip("distributed")
    with pytest.raises(ValueError, match="workers"), dask_client(workers=-1):
        pass


def test_zero_workers_is_refused_not_run_in_process():
    """--workers 0 used to mean 'no cluster' for features (it ran in-process without a word)."""
    from actsort_gpu.cluster import dask_client

    with pytest.raises(ValueError, match="--workers must be >= 1, got 0"), dask_client(None, 0):
        pass
    with dask_client(None, None) as client:
        assert client is None
