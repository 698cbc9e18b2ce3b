"""Dask entry points: an existing cluster (``--scheduler ADDRESS``) or a LocalCluster
(``--workers N``).

Dask appears only at the stage entry points: a stage splits its work into independent pieces
(time chunks of the movie, blocks of candidates), submits them with :func:`map_pieces`, and
merges the results in a fixed order so that the output equals the single-process run.
Multi-GPU: start one worker per GPU (``dask-cuda``'s ``LocalCUDACluster`` or
``dask-cuda-worker``) and pass the scheduler address. HPC: start a ``dask-jobqueue`` cluster
(SLURM, PBS, ...) and pass ``cluster.scheduler_address``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["dask_client", "map_pieces", "ClusterError"]


class ClusterError(RuntimeError):
    """The Dask scheduler could not be reached or the cluster could not start."""


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    workers: int | None = None,
    *,
    timeout_s: float = 10.0,
    threads_per_worker: int = 1,
) -> Iterator[Any]:
    """Yield a ``distributed.Client``, or None when neither argument is given (run in-process).

    scheduler : address of a running scheduler, e.g. ``tcp://10.0.0.5:8786``.
    workers : number of local worker processes for a ``LocalCluster`` (ignored with scheduler).
    An unreachable scheduler raises :class:`ClusterError` after ``timeout_s`` seconds, naming
    the address, before any output is written.
    """
    if scheduler is None and workers is None:
        yield None
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise ClusterError(
            "Dask distributed is not installed: pip install 'actsort-gpu[cluster]'"
        ) from exc
    _quiet_distributed()
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout=f"{timeout_s}s")
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {scheduler!r} within "
                f"{timeout_s:g} s ({type(exc).__name__}: {exc})"
            ) from exc
        log.info(
            "connected to Dask scheduler %s (%d workers)",
            scheduler,
            len(client.scheduler_info().get("workers", {})),
        )
        try:
            yield client
        finally:
            client.close()
        return
    if workers < 1:  # (0 ran in-process without a word)
        raise ValueError(f"--workers must be >= 1, got {workers}")
    # Processes, one thread each: the pieces are NumPy-heavy and hold the GIL in parts.
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        log.info("started a local Dask cluster with %d workers", workers)
        yield client


def _quiet_distributed() -> None:
    """Dask's scheduler, nanny and proxy log every connection at INFO (dozens of lines per
    run, issue 15): keep its loggers at WARNING unless the user asked for DEBUG (``-v``), where
    they are wanted. Warnings and errors (a lost worker) still show."""
    if logging.getLogger().getEffectiveLevel() <= logging.DEBUG:
        return
    for name in (
        "distributed",
        "distributed.scheduler",
        "distributed.nanny",
        "distributed.core",
        "distributed.http.proxy",
        "distributed.worker",
    ):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def map_pieces(
    client: Any, function: Callable, pieces: Sequence[Any], *args: Any, **kwargs: Any
) -> list[Any]:
    """``[function(piece, *args, **kwargs) for piece in pieces]``, on the cluster when given.

    Results come back in the order of ``pieces`` whatever order the workers finish in, so a
    merge over them is deterministic.
    """
    if client is None:
        return [function(piece, *args, **kwargs) for piece in pieces]
    futures = client.map(
        function, list(pieces), *[[a] * len(pieces) for a in args], pure=False, **kwargs
    )
    return client.gather(futures)
