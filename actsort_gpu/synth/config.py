"""Parameters of a synthetic recording (:class:`SynthConfig`), with units in the field names."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

__all__ = ["AnnotatorSpec", "SynthConfig", "FP_KINDS", "DEFAULT_ANNOTATORS"]

#: false-positive kinds, in the order their counts are drawn. "fragment": a small active piece
#: of neurite (about 5-70 px, its own transients), the commonest false positive of Suite2p
#: on two-photon data; off by default so the default recordings stay as they were.
FP_KINDS = ("duplicate", "split", "merged", "neuropil", "noise", "dendrite", "edge", "fragment")


@dataclass(frozen=True)
class AnnotatorSpec:
    """One simulated annotator.

    noise : probability of flipping the (lenient-adjusted) label of any candidate.
    leniency : probability of calling a borderline false positive (duplicate, split, edge) a cell.
    """

    name: str
    leniency: float = 0.0
    noise: float = 0.05


DEFAULT_ANNOTATORS = (
    AnnotatorSpec("ann0", leniency=0.05, noise=0.04),
    AnnotatorSpec("ann1", leniency=0.40, noise=0.06),
    AnnotatorSpec("ann2", leniency=0.15, noise=0.08),
    AnnotatorSpec("ann3", leniency=0.70, noise=0.05),
)


@dataclass(frozen=True)
class SynthConfig:
    """A synthetic recording. Defaults: a 2-minute 256 x 256 demo at 15 Hz.

    Intensities are in camera counts (uint16 movie); dF/F amplitudes are relative to each
    source's resting brightness.
    """

    seed: int = 0
    n_frames: int = 1800
    height: int = 256
    width: int = 256
    fs_hz: float = 15.0
    n_cells: int = 150
    n_false_positives: int = 150
    # fraction of the false positives of each kind (normalised to sum 1), order of FP_KINDS
    fp_fractions: tuple[float, ...] = (0.15, 0.15, 0.10, 0.15, 0.20, 0.15, 0.10, 0.0)
    # somata
    diameter_px: tuple[float, float] = (8.0, 16.0)
    nucleus_fraction: float = 0.3  # share of somata with a dark nucleus
    brightness_counts: tuple[float, float] = (60.0, 200.0)  # resting soma brightness (peak px)
    # activity
    rate_hz: tuple[float, float] = (0.05, 1.0)
    amplitude_dff: tuple[float, float] = (0.5, 2.0)
    rise_s: float = 0.05
    decay_s: tuple[float, float] = (0.5, 1.0)
    # background, neuropil, noise
    background_counts: float = 100.0
    neuropil_counts: float = 40.0  # mean neuropil level
    neuropil_modulation: float = 0.25  # relative size of the slow neuropil fluctuations
    n_neuropil_patches: int = 9
    gain_counts_per_photon: float = 2.0  # shot noise variance = gain * signal (Gaussian approx.)
    read_noise_counts: float = 6.0
    drift_counts: float = 10.0  # amplitude of the slow additive baseline drift
    bleach_fraction: float = 0.15  # fluorescence lost by the last frame (exp decay)
    motion_px: float = 0.0  # max rigid shift; 0: no motion
    motion_subpixel: bool = False  # bilinear subpixel shifts instead of integer ones
    # annotators
    annotators: tuple[AnnotatorSpec, ...] = DEFAULT_ANNOTATORS
    # I/O
    chunk_frames: int | None = None  # frames per chunk; None: about 32 MB of float32 canvas
    v73_threshold_bytes: int = 2**31 - 2**24  # EXTRACT .mat larger than this -> v7.3 (HDF5)
    bigtiff_threshold_bytes: int = 2**31 - 2**25

    def __post_init__(self):
        for name in ("n_frames", "height", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"SynthConfig.{name}: expected >= 1, found {getattr(self, name)}")
        for name in ("n_cells", "n_false_positives", "n_neuropil_patches"):
            if getattr(self, name) < 0:
                raise ValueError(f"SynthConfig.{name}: expected >= 0, found {getattr(self, name)}")
        if self.fs_hz <= 0:
            raise ValueError(f"SynthConfig.fs_hz: expected > 0, found {self.fs_hz}")
        if (
            len(self.fp_fractions) != len(FP_KINDS)
            or min(self.fp_fractions) < 0
            or sum(self.fp_fractions) <= 0
        ):
            raise ValueError(
                f"SynthConfig.fp_fractions: expected {len(FP_KINDS)} non-negative "
                f"numbers for {FP_KINDS} with a positive sum, found {self.fp_fractions}"
            )
        if min(self.height, self.width) < 2 * self.diameter_px[1]:
            raise ValueError(
                f"SynthConfig.height/width: expected >= {2 * self.diameter_px[1]} px "
                f"(twice the largest soma), found {self.height} x {self.width}"
            )
        if self.motion_px < 0:
            raise ValueError(f"SynthConfig.motion_px: expected >= 0, found {self.motion_px}")
        if not 0 <= self.bleach_fraction < 1:
            raise ValueError(
                f"SynthConfig.bleach_fraction: expected in [0, 1), found {self.bleach_fraction}"
            )
        if self.chunk_frames is not None and self.chunk_frames < 1:
            raise ValueError(
                f"SynthConfig.chunk_frames: expected >= 1 or None, found {self.chunk_frames}"
            )
        for a in self.annotators:
            if not (0 <= a.noise <= 1 and 0 <= a.leniency <= 1):
                raise ValueError(
                    f"SynthConfig.annotators[{a.name!r}]: noise and leniency must "
                    f"be in [0, 1], found {a.noise}, {a.leniency}"
                )

    def fp_counts(self) -> dict[str, int]:
        """Number of false positives of each kind (largest-remainder rounding)."""
        total = sum(self.fp_fractions)
        raw = [self.n_false_positives * f / total for f in self.fp_fractions]
        counts = [int(r) for r in raw]
        order = sorted(range(len(raw)), key=lambda i: counts[i] - raw[i])
        for i in order[: self.n_false_positives - sum(counts)]:
            counts[i] += 1
        return dict(zip(FP_KINDS, counts))

    def with_fragment_share(self, share: float) -> SynthConfig:
        """This config with ``share`` (0-1) of its false positives small neurite fragments; the
        other kinds keep their fractions (``fp_fractions`` are normalised when counted), so a
        share of 0 on a config without fragments changes nothing."""
        if not 0 <= share <= 1:
            raise ValueError(f"fragment share: expected in [0, 1], found {share}")
        others = self.fp_fractions[:-1]
        if share == 1:
            return replace(self, fp_fractions=(0.0,) * len(others) + (1.0,))
        return replace(self, fp_fractions=(*others, share * sum(others) / (1 - share)))

    @property
    def n_candidates(self) -> int:
        return self.n_cells + self.n_false_positives

    def as_dict(self) -> dict:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "annotators":
                v = [dict(name=a.name, leniency=a.leniency, noise=a.noise) for a in v]
            out[f.name] = v
        return out
