"""The self-supervised training module (``LightningModule``) around :class:`CandidateEncoder`.

Training without labels is SimCLR-style contrastive learning: two augmented views of each
candidate (augment.py: rotations by any angle, flips, shifts, contrast / brightness jitter,
noise, event shuffling and dropping) pass through the encoder and a small projection head,
and the NT-Xent loss pulls the two views of a candidate together and pushes other candidates
away (Chen et al. 2020, "A simple framework for contrastive learning of visual
representations"). ROICaT trains its ROI embeddings the same way. With labels (+1 / -1; 0 =
unlabelled, ignored) a logistic head on the embedding adds a supervised cross-entropy term
(``supervised_weight``), for fine-tuning on curated stores.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from .augment import AugmentConfig, augment_batch
from .encoder import CandidateEncoder

__all__ = ["EmbedModule", "nt_xent"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of two views (B, d) each; rows i of z1 and z2 are the positive pair."""
    z = F.normalize(torch.cat([z1, z2], 0), dim=1)
    sim = z @ z.T / temperature
    n = z1.shape[0]
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.arange(2 * n, device=z.device).roll(n)
    return F.cross_entropy(sim, target)


class EmbedModule(L.LightningModule):
    """Encoder + projection head (+ optional label head), NT-Xent (+ cross-entropy) loss.

    A batch is ``(images (B, C, S, S), traces (B, n_events * event_frames), valid (B, n_events)
    bool, labels (B,) int8)``. ``self.encoder`` is what gets saved and used for inference.
    """

    def __init__(
        self,
        embedding_dim: int = 32,
        width: int = 16,
        n_channels: int = 3,
        n_events: int = 5,
        event_frames: int = 11,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
        temperature: float = 0.2,
        supervised_weight: float = 0.0,
        max_epochs: int = 20,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = CandidateEncoder(embedding_dim, width, n_channels, n_events, event_frames)
        self.projection = nn.Sequential(
            nn.Linear(embedding_dim, 64), nn.ReLU(inplace=True), nn.Linear(64, 32)
        )
        self.label_head = nn.Linear(embedding_dim, 1)
        self.augment_config = AugmentConfig()
        self._gen: torch.Generator | None = None

    def on_fit_start(self) -> None:
        # An explicit generator on the batch's device: augmentations are reproducible for a
        # seed, independent of other random draws.
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(int(self.hparams.seed))

    def forward(self, images, traces, valid):
        return self.encoder(images, traces, valid)

    def _views(self, images, traces, valid):
        b = traces.shape[0]
        t = traces.reshape(b, self.hparams.n_events, self.hparams.event_frames)
        im, tr, va = augment_batch(images, t, valid, self._gen, self.augment_config)
        return self.encoder(im, tr.reshape(b, -1), va)

    def _common_step(self, batch, batch_idx, stage: str):
        images, traces, valid, labels = batch
        if self._gen is None:
            self.on_fit_start()
        h1 = self._views(images, traces, valid)
        h2 = self._views(images, traces, valid)
        loss = nt_xent(self.projection(h1), self.projection(h2), self.hparams.temperature)
        self.log(f"{stage}_contrastive", loss, prog_bar=False, batch_size=len(labels))
        known = labels != 0
        if self.hparams.supervised_weight > 0 and bool(known.any()):
            y = (labels[known] > 0).to(h1.dtype)
            logits = torch.cat([self.label_head(h1[known]), self.label_head(h2[known])])[:, 0]
            ce = F.binary_cross_entropy_with_logits(logits, torch.cat([y, y]))
            self.log(f"{stage}_supervised", ce, batch_size=int(known.sum()))
            loss = loss + self.hparams.supervised_weight * ce
        self.log(f"{stage}_loss", loss, prog_bar=True, batch_size=len(labels))
        return loss

    def training_step(self, batch, batch_idx):
        return self._common_step(batch, batch_idx, "train")

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(
            opt, T_max=max(self.hparams.max_epochs, 1)
        )
        return {"optimizer": opt, "lr_scheduler": sched}
