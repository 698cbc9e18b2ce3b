"""Train an encoder across sort stores and save a weights-only checkpoint."""

from __future__ import annotations

import logging
import os
import platform
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import numpy as np

from ..config import EmbedConfig, as_dict

log = logging.getLogger(__name__)

__all__ = ["train_encoder", "fit_module", "adapt_encoder"]


def fit_module(
    datamodule,
    config: EmbedConfig = EmbedConfig(),
    *,
    supervised: bool = False,
    device: str = "cpu",
    progress: bool = False,
    init=None,
):
    """Fit an :class:`EmbedModule` on ``datamodule`` (already set up or not); returns it.

    ``init``: an encoder state dict to start from (fine-tuning), e.g. from a checkpoint.
    ``device``: "auto" | "cpu" | "cuda", resolved by the one device switch ("cuda" without
    torch's CUDA raises ``backend.DeviceError`` rather than training on the CPU).

    Seeds Python, NumPy and torch with ``config.seed`` and asks Lightning for deterministic
    algorithms, so two runs on the same machine and device give identical weights.
    """
    import lightning as L

    from .infer import torch_device
    from .model import EmbedModule

    if config.max_epochs < 1:
        raise ValueError(f"max_epochs: expected >= 1, found {config.max_epochs}")
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule.setup("fit")
    if len(datamodule.dataset) < 2:
        raise ValueError(f"training needs at least 2 candidates, found {len(datamodule.dataset)}")
    module = EmbedModule(
        embedding_dim=config.embedding_dim,
        width=config.width,
        n_channels=3,
        n_events=datamodule.n_events,
        event_frames=datamodule.event_frames,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        temperature=config.temperature,
        supervised_weight=config.supervised_weight if supervised else 0.0,
        max_epochs=config.max_epochs,
        seed=config.seed,
    )
    if init is not None:
        module.encoder.load_state_dict(init)
    accelerator = "gpu" if torch_device(device) == "cuda" else "cpu"
    max_time = None if config.max_seconds is None else timedelta(seconds=config.max_seconds)
    with _torch_flags_restored():  # deterministic=True switches them process-wide
        trainer = L.Trainer(
            max_epochs=config.max_epochs,
            max_time=max_time,
            accelerator=accelerator,
            devices=1,
            deterministic=True,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=progress,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            log_every_n_steps=10,
        )
        with warnings.catch_warnings():
            # Lightning 2.6 builds torch's LeafSpec, which torch >= 2.10 marks deprecated: a
            # FutureWarning per run that the user can do nothing about
            warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)", FutureWarning)
            trainer.fit(module, datamodule=datamodule)
    module.encoder.eval()
    return module


@contextmanager
def _torch_flags_restored() -> Iterator[None]:
    """Put torch's process-wide determinism settings back as they were on leaving.

    Lightning's ``Trainer(deterministic=True)`` turns on ``torch.use_deterministic_algorithms``
    and cuDNN's deterministic mode and sets ``CUBLAS_WORKSPACE_CONFIG`` for the whole process,
    and leaves them on after ``fit``: every later torch call in the process (the learner, the
    encoder's inference after ``embed --adapt``) would run under them, and on a GPU an
    operation without a deterministic CUDA kernel would raise.
    """
    import torch

    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )
    try:
        yield
    finally:
        det, warn_only, cudnn_det, cudnn_bench, cublas = before
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas


def train_encoder(
    store_paths: Sequence[str | Path],
    out: str | Path,
    *,
    config: EmbedConfig = EmbedConfig(),
    supervised: bool = False,
    device: str = "auto",
    progress: bool = False,
    description: str = "",
    init_checkpoint: str | Path | None = None,
    recorded_stores: Sequence[str] | None = None,
) -> dict:
    """Train an encoder on the candidates of ``store_paths`` and save it at ``out``.

    Self-supervised (NT-Xent on augmented views) by default; ``supervised`` adds a
    cross-entropy term on each store's labels (journal, else ``truth/labels``; model.py).
    ``init_checkpoint``: start from this encoder (fine-tuning); its architecture, image size
    and event shape replace those of ``config``.
    ``recorded_stores``: what the checkpoint's metadata names the stores (default: the paths
    as given; ``scripts/train_encoder.py`` records them relative to its work folder, so the
    shipped checkpoint names no path of the machine that trained it).
    Returns the checkpoint metadata (encoder_id, spec, training info: stores, candidates,
    epochs, seed, seconds, versions).
    """
    import lightning
    import torch

    from ..outputs import check_replaceable
    from .data import EmbedDataModule
    from .encoder import is_checkpoint, save_checkpoint

    if not store_paths:
        raise ValueError("store_paths: expected at least one sort store")
    check_replaceable(out, is_checkpoint, "encoder checkpoint")  # before minutes of training
    from .infer import torch_device

    dev = torch_device(device)
    init = init_meta = None
    if init_checkpoint is not None:
        from dataclasses import replace

        from .encoder import load_checkpoint

        encoder, init_meta = load_checkpoint(init_checkpoint)
        init = encoder.state_dict()
        config = replace(
            config,
            embedding_dim=encoder.embedding_dim,
            width=encoder.width,
            image_size_px=int(init_meta["spec"]["image_size"]),
        )
    t0 = time.perf_counter()
    dm = EmbedDataModule(
        store_paths,
        image_size=config.image_size_px,
        batch_size=config.batch_size,
        max_candidates_per_store=config.max_candidates_per_store,
        seed=config.seed,
        with_labels=supervised,
    )
    if init_meta is not None:  # the stores are fitted to the encoder's event shape
        dm.n_events = int(init_meta["spec"]["n_events"])
        dm.event_frames = int(init_meta["spec"]["event_frames"])
    dm.setup("fit")
    t_data = time.perf_counter() - t0
    if supervised and not np.any(dm.dataset.labels.numpy() != 0):
        raise ValueError(
            f"{[str(p) for p in store_paths]}: --supervised needs labels (a label "
            f"journal or truth/labels) in at least one store; found none"
        )
    module = fit_module(dm, config, supervised=supervised, device=dev, progress=progress, init=init)
    seconds = time.perf_counter() - t0
    info = {
        "stores": list(recorded_stores or [str(p) for p in store_paths]),
        "n_candidates": len(dm.dataset),
        "supervised": supervised,
        "init_encoder_id": init_meta["encoder_id"] if init_meta else None,
        "config": as_dict(config),
        "seed": config.seed,
        "steps": int(module.global_step),
        "seconds_total": round(seconds, 1),
        "seconds_inputs": round(t_data, 1),
        "device": dev,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "description": description,
    }
    ckpt = save_checkpoint(out, module.encoder, image_size=config.image_size_px, training=info)
    log.info(
        "trained encoder %s on %d candidates in %.1f s -> %s",
        ckpt["encoder_id"],
        len(dm.dataset),
        seconds,
        out,
    )
    return {k: v for k, v in ckpt.items() if k != "state_dict"}


def adapt_encoder(
    store_path: str | Path,
    out: str | Path,
    *,
    checkpoint: str | Path | None = None,
    config: EmbedConfig = EmbedConfig(),
    device: str = "auto",
    progress: bool = False,
) -> dict:
    """Fine-tune an encoder (default: the shipped one) self-supervised on one store's own
    candidates for at most ``config.adapt_seconds`` (a random subset of
    ``config.adapt_max_candidates``), at a third of the training learning rate, and save it at
    ``out``. No labels are used. Returns the checkpoint metadata (``training.steps`` says how
    many optimiser steps fitted in the time; the result depends on the machine's speed)."""
    from dataclasses import replace

    from .encoder import default_checkpoint_path

    init = Path(checkpoint) if checkpoint is not None else default_checkpoint_path()
    adapted = replace(
        config,
        max_epochs=1000,
        max_seconds=float(config.adapt_seconds),
        max_candidates_per_store=int(config.adapt_max_candidates),
        learning_rate=config.learning_rate / 3,
    )
    return train_encoder(
        [store_path],
        out,
        config=adapted,
        device=device,
        progress=progress,
        description=f"adapted to {store_path} from {init.name} ({config.adapt_seconds:g} s)",
        init_checkpoint=init,
    )
