"""``embed``: run an encoder over every candidate of a store and write ``embeddings/matrix``."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from .. import schema

log = logging.getLogger(__name__)

__all__ = ["embed", "embed_inputs", "inference_encoder", "torch_device"]


def torch_device(device: str) -> str:
    """'auto' | 'cpu' | 'cuda' -> the torch device string for the encoder.

    The one device switch (:func:`..backend.resolve_backend` for torch work): needs torch's
    CUDA only (not CuPy); 'cuda' without it raises ``backend.DeviceError``, 'auto' falls back
    to the CPU with one log line.
    """
    from ..backend import resolve_backend

    return resolve_backend(device, uses="torch").torch_device


#: candidates per forward pass on the CPU: activations of a few hundred 24 x 24 candidates stay
#: in cache (measured 2-3.5x faster than 2048 at once with the folded, channels-last encoder)
CPU_FORWARD_BATCH = 256


def embed_inputs(
    encoder,
    images: np.ndarray,
    traces: np.ndarray,
    valid: np.ndarray,
    *,
    device: str = "cpu",
    batch_size: int = 2048,
) -> np.ndarray:
    """Embeddings of inputs held in memory.

    images (n, C, S, S) float32, traces (n, n_events * event_frames) float32, valid
    (n, n_events) bool -> (n, D) float32. ``device`` is a torch device string; ``batch_size``
    candidates per forward pass (at most :data:`CPU_FORWARD_BATCH` on the CPU). The encoder is
    put in eval mode and runs as :func:`inference_encoder` builds it.
    """
    import torch

    encoder = inference_encoder(encoder.to(device).eval())
    if torch.device(device).type == "cpu":
        batch_size = min(batch_size, CPU_FORWARD_BATCH)
    out = np.empty((len(images), encoder.embedding_dim), np.float32)
    with torch.inference_mode():
        for s in range(0, len(images), batch_size):
            e = slice(s, s + batch_size)
            z = encoder(
                torch.as_tensor(images[e], dtype=torch.float32, device=device).contiguous(
                    memory_format=torch.channels_last
                ),
                torch.as_tensor(traces[e], dtype=torch.float32, device=device),
                torch.as_tensor(valid[e], device=device),
            )
            out[e] = z.float().cpu().numpy()
    return out


def inference_encoder(encoder):
    """A copy of an encoder in eval mode, prepared for inference only: each batch normalisation
    folded into the convolution before it (the same function up to float rounding, one pass
    over the activations less) and the weights in channels-last layout (faster convolutions on
    the CPU; feed it channels-last images). ``encoder`` itself is left unchanged."""
    import copy

    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(encoder).eval()
    for block in fused.image_branch:
        if (
            isinstance(block, torch.nn.Sequential)
            and isinstance(block[0], torch.nn.Conv2d)
            and isinstance(block[1], torch.nn.BatchNorm2d)
        ):
            block[0] = fuse_conv_bn_eval(block[0], block[1])
            block[1] = torch.nn.Identity()
    return fused.to(memory_format=torch.channels_last)


def embed(
    store_path: str | Path,
    checkpoint: str | Path | None = None,
    *,
    device: str = "auto",
    batch_size: int = 2048,
    progress: bool = False,
) -> np.ndarray:
    """Embed every candidate of the store at ``store_path``.

    Parameters
    ----------
    store_path : a preprocessed sort store.
    checkpoint : an encoder checkpoint (``actsort embed-train`` output); None: the pretrained
        one shipped in the package.
    device : auto | cpu | cuda (the encoder runs on the GPU when torch's CUDA build sees one;
        'cuda' without it raises ``backend.DeviceError``; inputs are built on the CPU block by
        block).
    batch_size : candidates per block (inputs are built and embedded per block).

    Returns
    -------
    (N, D) float32, also written as ``embeddings/matrix`` with attrs ``encoder_id``,
    ``checkpoint``, ``dims`` (candidates, embedding) and ``units``; the stage 'embed' is
    marked complete.
    """
    from tqdm.auto import tqdm

    from ..backend import resolve_backend
    from ..store import SortStore
    from .encoder import default_checkpoint_path, load_checkpoint
    from .inputs import store_inputs

    if int(batch_size) < 1:
        raise ValueError(f"batch_size: expected >= 1, found {batch_size}")
    store = SortStore.open(store_path, "r+")
    store.require("preprocess")
    ckpt_path = Path(checkpoint) if checkpoint is not None else default_checkpoint_path()
    encoder, meta = load_checkpoint(ckpt_path)
    spec = meta["spec"]
    backend = resolve_backend(device, uses="torch")
    dev = backend.torch_device
    params = {
        "checkpoint": str(ckpt_path),
        "encoder_id": meta["encoder_id"],
        **backend.provenance(),
        "batch_size": int(batch_size),
    }
    store.begin_stage("embed", params)
    t0 = time.perf_counter()
    n = store.n_candidates
    out = np.zeros((n, encoder.embedding_dim), np.float32)
    for s in tqdm(range(0, n, batch_size), disable=not progress, desc="embed", unit="block"):
        block = slice(s, min(s + batch_size, n))
        images, traces, valid = store_inputs(
            store,
            block,
            spec["image_size"],
            n_events=spec["n_events"],
            event_frames=spec["event_frames"],
        )
        out[block] = embed_inputs(encoder, images, traces, valid, device=dev, batch_size=batch_size)
    store.write_array(
        schema.EMBEDDING_MATRIX,
        out,
        attrs={
            "encoder_id": meta["encoder_id"],
            # trained with labels (the learner's active.embeddings_start: auto reads it)
            "encoder_supervised": bool((meta.get("training") or {}).get("supervised", False)),
            "checkpoint": str(ckpt_path),
            "names": [f"emb{k:02d}" for k in range(out.shape[1])],
        },
    )
    seconds = time.perf_counter() - t0
    store.finish_stage("embed", seconds, n_candidates=n, dims=int(out.shape[1]), device=dev)
    log.info(
        "%s: embedded %d candidates with encoder %s on %s in %.1f s",
        store.path,
        n,
        meta["encoder_id"],
        dev,
        seconds,
    )
    return out
