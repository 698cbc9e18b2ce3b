"""Augmentations that keep a cell a cell, applied to whole batches on the batch's device.

Images: a random rotation by any angle, horizontal and vertical flips and a small shift (one
affine resampling), per-channel brightness and contrast jitter, Gaussian noise. Traces: event
order shuffling, dropping some events (never all), amplitude jitter and Gaussian noise.
Randomness comes from an explicit ``torch.Generator`` so that a seeded run is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AugmentConfig", "augment_images", "augment_traces", "augment_batch"]


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation (0 switches one off)."""

    rotate: bool = True  # uniform angle in [0, 2 pi)
    flip: bool = True  # each axis with probability 0.5
    shift_fraction: float = 0.08  # max shift as a fraction of the image side
    brightness: float = 0.1  # additive, uniform in +/- this (images are in [0, 1])
    contrast: float = 0.2  # multiplicative about the channel mean, 1 +/- this
    image_noise: float = 0.03  # Gaussian SD
    shuffle_events: bool = True
    drop_event_p: float = 0.2  # each valid event dropped with this probability (>= 1 kept)
    trace_scale: float = 0.15  # multiplicative amplitude jitter, 1 +/- this
    trace_noise: float = 0.05  # Gaussian SD (trace inputs are arcsinh robust z)


def _uniform(shape, lo, hi, gen, device):
    return torch.rand(shape, generator=gen, device=device) * (hi - lo) + lo


def augment_images(
    images: torch.Tensor, gen: torch.Generator, cfg: AugmentConfig = AugmentConfig()
) -> torch.Tensor:
    """images : (B, C, S, S) float32 in [0, 1] -> same shape, augmented (not clipped)."""
    b, c = images.shape[:2]
    dev = images.device
    if cfg.rotate or cfg.flip or cfg.shift_fraction > 0:
        angle = (
            _uniform((b,), 0, 2 * math.pi, gen, dev) if cfg.rotate else torch.zeros(b, device=dev)
        )
        cos, sin = torch.cos(angle), torch.sin(angle)
        fx = fy = torch.ones(b, device=dev)
        if cfg.flip:
            fx = torch.where(torch.rand(b, generator=gen, device=dev) < 0.5, -1.0, 1.0)
            fy = torch.where(torch.rand(b, generator=gen, device=dev) < 0.5, -1.0, 1.0)
        # normalised coordinates span 2 units per side
        shift = _uniform((b, 2), -2 * cfg.shift_fraction, 2 * cfg.shift_fraction, gen, dev)
        theta = torch.stack(
            [
                torch.stack([cos * fx, -sin * fy, shift[:, 0]], 1),
                torch.stack([sin * fx, cos * fy, shift[:, 1]], 1),
            ],
            1,
        )
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        images = F.grid_sample(
            images, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
    if cfg.contrast > 0:
        mean = images.mean(dim=(2, 3), keepdim=True)
        factor = _uniform((b, c, 1, 1), 1 - cfg.contrast, 1 + cfg.contrast, gen, dev)
        images = (images - mean) * factor + mean
    if cfg.brightness > 0:
        images = images + _uniform((b, c, 1, 1), -cfg.brightness, cfg.brightness, gen, dev)
    if cfg.image_noise > 0:
        images = images + cfg.image_noise * torch.randn(images.shape, generator=gen, device=dev)
    return images


def augment_traces(
    traces: torch.Tensor,
    valid: torch.Tensor,
    gen: torch.Generator,
    cfg: AugmentConfig = AugmentConfig(),
) -> tuple[torch.Tensor, torch.Tensor]:
    """traces : (B, n_events, event_frames), valid : (B, n_events) bool -> both augmented.

    Missing events stay zeros; at least one valid event survives the dropping.
    """
    b, e, _ = traces.shape
    dev = traces.device
    if cfg.shuffle_events and e > 1:
        order = torch.argsort(torch.rand((b, e), generator=gen, device=dev), dim=1)
        traces = torch.gather(traces, 1, order[..., None].expand_as(traces))
        valid = torch.gather(valid, 1, order)
    if cfg.drop_event_p > 0:
        drop = (torch.rand((b, e), generator=gen, device=dev) < cfg.drop_event_p) & valid
        # keep the first valid event of each row whatever the draw
        first = torch.argmax(valid.to(torch.int8), dim=1)
        drop[torch.arange(b, device=dev), first] = False
        valid = valid & ~drop
    if cfg.trace_scale > 0:
        traces = traces * _uniform((b, 1, 1), 1 - cfg.trace_scale, 1 + cfg.trace_scale, gen, dev)
    if cfg.trace_noise > 0:
        traces = traces + cfg.trace_noise * torch.randn(traces.shape, generator=gen, device=dev)
    traces = traces * valid[..., None]
    return traces, valid


def augment_batch(images, traces, valid, gen, cfg: AugmentConfig = AugmentConfig()):
    """Both augmentations; ``traces`` (B, n_events, event_frames)."""
    images = augment_images(images, gen, cfg)
    traces, valid = augment_traces(traces, valid, gen, cfg)
    return images, traces, valid
