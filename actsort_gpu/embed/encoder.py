"""The candidate encoder (plain ``torch.nn.Module``) and its checkpoint file format.

Kept apart from the LightningModule (model.py) so that inference imports torch only, not
lightning (about 3.5 s of import time, docs/environment.md).

Checkpoint: ``torch.save`` of a dict with only tensors, strings, numbers, lists and dicts, so it
loads with ``torch.load(weights_only=True)`` (no pickled code runs)::

    {"format": "actsort-embed-1", "encoder_id": "<12 hex>", "state_dict": {...},
     "hparams": {embedding_dim, width, n_channels, n_events, event_frames},
     "spec": {image_size, channels, n_events, event_frames, inputs_version},
     "training": {...}}
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .inputs import CHANNELS

__all__ = [
    "CandidateEncoder",
    "encoder_id",
    "save_checkpoint",
    "load_checkpoint",
    "is_checkpoint",
    "CHECKPOINT_FORMAT",
    "INPUTS_VERSION",
    "default_checkpoint_path",
]

CHECKPOINT_FORMAT = "actsort-embed-1"
#: bump when inputs.py changes what the encoder sees (an old checkpoint would then be refused)
INPUTS_VERSION = "1"


def default_checkpoint_path() -> Path:
    """The pretrained checkpoint shipped in the package."""
    return Path(__file__).resolve().parent / "checkpoints" / "default.pt"


def _conv(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CandidateEncoder(nn.Module):
    """Images + event traces -> an embedding.

    Image branch: a small VGG-like CNN (3 stages of 3x3 convolutions: one at full size, two at
    1/2 and two at 1/4, 2x2 max pooling between stages, global average pooling; one convolution
    at full size keeps the CPU cost low) -> 4 * width values. Trace branch: the same 1-D
    CNN on each event's trace, then the mean and the max over the valid events (so the result
    does not depend on event order) -> 4 * width values. A 2-layer MLP fuses both into
    ``embedding_dim`` values.

    forward(images (B, C, S, S), traces (B, n_events * event_frames), valid (B, n_events) bool)
    -> (B, embedding_dim) float32.
    """

    def __init__(
        self,
        embedding_dim: int = 32,
        width: int = 16,
        n_channels: int = len(CHANNELS),
        n_events: int = 5,
        event_frames: int = 11,
    ):
        super().__init__()
        self.embedding_dim, self.width = int(embedding_dim), int(width)
        self.n_events, self.event_frames = int(n_events), int(event_frames)
        w = self.width
        self.image_branch = nn.Sequential(
            _conv(n_channels, w),
            nn.MaxPool2d(2),
            _conv(w, 2 * w),
            _conv(2 * w, 2 * w),
            nn.MaxPool2d(2),
            _conv(2 * w, 4 * w),
            _conv(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.trace_branch = nn.Sequential(
            nn.Conv1d(1, w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv1d(w, 2 * w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv1d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(inplace=True),
        )
        self.fuse = nn.Sequential(
            nn.Linear(4 * w + 8 * w, 4 * w),
            nn.ReLU(inplace=True),
            nn.Linear(4 * w, self.embedding_dim),
        )

    def encode_traces(self, traces: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """(B, n_events * event_frames), (B, n_events) bool -> (B, 8 * width)."""
        b = traces.shape[0]
        x = traces.reshape(b * self.n_events, 1, self.event_frames)
        h = self.trace_branch(x)  # (B*E, 2w, F)
        h = torch.cat([h.mean(dim=2), h.amax(dim=2)], 1).reshape(b, self.n_events, -1)
        m = valid.to(h.dtype)[..., None]  # (B, E, 1)
        has_event = m.sum(dim=1) > 0  # (B, 1)
        mean = (h * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
        # masked max over events; a candidate without events gets zeros
        mx = torch.where(m > 0, h, torch.full_like(h, torch.finfo(h.dtype).min)).amax(dim=1)
        mx = torch.where(has_event, mx, torch.zeros_like(mx))
        return torch.cat([mean, mx], 1)

    def forward(
        self, images: torch.Tensor, traces: torch.Tensor, valid: torch.Tensor
    ) -> torch.Tensor:
        return self.fuse(
            torch.cat([self.image_branch(images), self.encode_traces(traces, valid)], 1)
        )

    def hparams(self) -> dict:
        return {
            "embedding_dim": self.embedding_dim,
            "width": self.width,
            "n_channels": self.image_branch[0][0].in_channels,
            "n_events": self.n_events,
            "event_frames": self.event_frames,
        }


def encoder_id(state_dict: dict) -> str:
    """First 12 hex digits of the SHA-256 of the weights (names, shapes and bytes, sorted)."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(t.shape)).encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:12]


def save_checkpoint(
    path: str | Path, encoder: CandidateEncoder, *, image_size: int, training: dict | None = None
) -> dict:
    """Write ``encoder`` as a weights-only checkpoint; returns the saved dict."""
    state = {k: v.detach().to("cpu").clone() for k, v in encoder.state_dict().items()}
    ckpt = {
        "format": CHECKPOINT_FORMAT,
        "encoder_id": encoder_id(state),
        "state_dict": state,
        "hparams": encoder.hparams(),
        "spec": {
            "image_size": int(image_size),
            "channels": list(CHANNELS),
            "n_events": encoder.n_events,
            "event_frames": encoder.event_frames,
            "inputs_version": INPUTS_VERSION,
        },
        "training": _plain(training or {}),
    }
    from ..outputs import check_replaceable, replace_whole

    check_replaceable(path, is_checkpoint, "encoder checkpoint")
    replace_whole(path, lambda tmp: torch.save(ckpt, tmp))
    return ckpt


def is_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds an actsort encoder checkpoint (of any inputs version): the only
    kind of file ``save_checkpoint`` replaces."""
    ckpt = torch.load(Path(path), map_location="cpu", weights_only=True)
    return isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT


def _plain(value):
    """JSON-like plain values only (weights_only loading accepts nothing else)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, str):
        return str(value)  # also for str subclasses such as torch's TorchVersion
    if value is None or isinstance(value, (int, float, bool)):
        return value
    return str(value)


def load_checkpoint(
    path: str | Path | None = None, *, map_location: str = "cpu"
) -> tuple[CandidateEncoder, dict]:
    """Load a checkpoint (default: the shipped one) with ``weights_only=True``.

    Returns the encoder in eval mode and the checkpoint dict (without ``state_dict``).
    Raises FileNotFoundError / ValueError naming the file when it is missing or not an
    actsort encoder checkpoint.
    """
    path = Path(path) if path is not None else default_checkpoint_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: encoder checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        # torch's first sentence only: the rest advises weights_only=False (running the file)
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise ValueError(
            f"{path}: not an actsort encoder checkpoint (torch cannot read it as weights: "
            f"{type(exc).__name__}: {first})"
        ) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(
            f"{path}: expected an actsort encoder checkpoint "
            f"(format {CHECKPOINT_FORMAT!r}), found {found!r}"
        )
    spec = ckpt["spec"]
    if spec.get("inputs_version") != INPUTS_VERSION or list(spec["channels"]) != list(CHANNELS):
        raise ValueError(
            f"{path}: trained on encoder inputs version "
            f"{spec.get('inputs_version')} with channels {spec['channels']}; this "
            f"actsort-gpu builds version {INPUTS_VERSION} with {list(CHANNELS)}: "
            f"retrain it with `actsort embed-train`"
        )
    encoder = CandidateEncoder(**ckpt["hparams"])
    encoder.load_state_dict(ckpt["state_dict"])
    encoder.eval()
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    return encoder, meta
