"""Synthetic calcium-imaging recordings with exact ground truth.

``synthesize(out_dir, SynthConfig(...))`` writes a uint16 movie (TIFF, optional HDF5), a
simulated extraction in Suite2p and EXTRACT layouts that mixes true cells with typical false
positives (duplicates, splits, merged neighbours, neuropil blobs, noise-only, dendrites, edge
somata, small neurite fragments), the truth and simulated annotators. See the README.txt it
writes for the layout.
"""

from .api import FORMATS, SynthResult, load_truth, synthesize
from .config import DEFAULT_ANNOTATORS, FP_KINDS, AnnotatorSpec, SynthConfig
from .scene import KINDS
from .truth import write_truth

__all__ = [
    "synthesize",
    "SynthConfig",
    "SynthResult",
    "AnnotatorSpec",
    "load_truth",
    "write_truth",
    "FORMATS",
    "FP_KINDS",
    "KINDS",
    "DEFAULT_ANNOTATORS",
]
