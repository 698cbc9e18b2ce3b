"""The demo: a synthetic recording with known truth, carried through every stage.

``build_demo_store`` synthesises a recording (``actsort_gpu.synth``), ingests its Suite2p
output, preprocesses, computes features and (when an encoder checkpoint is available)
embeddings, and writes the truth into the store (``truth/labels``, ``truth/annotators``) where
the page keeps it hidden until the user asks to compare. ``headless_session`` plays a simulated
annotator against the active learner, for scripts and CI (``actsort demo --no-browser``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import schema
from .labels import balanced_accuracy

log = logging.getLogger(__name__)

__all__ = ["synthetic_store", "build_demo_store", "headless_session", "DemoSession"]


def synthetic_store(
    workdir: str | Path,
    config=None,
    *,
    features: bool = True,
    embeddings: bool = False,
    device: str = "auto",
    overwrite: bool = True,
    progress: bool = False,
) -> tuple[Path, dict[str, float]]:
    """Synthesise a recording in ``workdir`` and carry it through the pipeline into a store.

    Stages: synth -> ingest (Suite2p layout) -> truth -> preprocess -> features (optional) ->
    embeddings (optional; needs a checkpoint). Returns the store path and seconds per stage.
    """
    from .ingest import ingest_files
    from .preprocess import preprocess
    from .synth import SynthConfig, synthesize, write_truth

    workdir = Path(workdir)
    times: dict[str, float] = {}

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        times[name] = time.perf_counter() - t0
        return out

    rec = timed(
        "synth",
        synthesize,
        workdir,
        config or SynthConfig(),
        formats=("suite2p",),
        overwrite=overwrite,
        progress=progress,
    )
    store_path = workdir / "recording.actsort"
    timed(
        "ingest",
        ingest_files,
        rec.files["movie"],
        rec.files["suite2p"],
        store_path,
        overwrite=overwrite,
    )
    write_truth(store_path, rec.files["truth"])
    timed("preprocess", preprocess, store_path, device=device, progress=progress)
    if features:
        from .features import compute_features

        timed("features", compute_features, store_path, device=device, progress=progress)
    if embeddings:
        from .embed import embed

        timed("embed", embed, store_path, device=device, progress=progress)
    log.info("%s ready (%s)", store_path, ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return store_path, times


def build_demo_store(
    out_dir: str | Path,
    *,
    seed: int = 0,
    device: str = "auto",
    progress: bool = False,
    embeddings: bool | None = None,
    overwrite: bool = False,
) -> tuple[Path, dict[str, float]]:
    """The demo recording: 2 minutes of 256 x 256 at 15 Hz, 150 cells + 150 false candidates.

    embeddings : None = compute them when the package ships an encoder checkpoint.
    """
    from .synth import SynthConfig

    out_dir = Path(out_dir)
    if (out_dir / "recording.actsort" / "labels" / "journal.jsonl").exists() and not overwrite:
        # A demo the user already labelled: never rebuild over their labels.
        log.info("%s: reusing the existing demo store and its labels", out_dir)
        return out_dir / "recording.actsort", {}
    if embeddings is None:
        embeddings = _default_checkpoint_exists()
    return synthetic_store(
        out_dir,
        SynthConfig(seed=seed),
        features=True,
        embeddings=embeddings,
        device=device,
        overwrite=True,
        progress=progress,
    )


def _default_checkpoint_exists() -> bool:
    return (Path(__file__).parent / "embed" / "checkpoints" / "default.pt").is_file()


@dataclass
class DemoSession:
    """Outcome of a simulated annotator labelling the demo through the active learner."""

    n_candidates: int
    n_labelled: int
    balanced_accuracy: float  # final labels (human where given, else model) vs truth
    model_balanced_accuracy: float  # model decisions alone vs truth
    annotator_balanced_accuracy: float  # the simulated annotator's own labels vs truth
    seconds_per_update: float
    curve: list[tuple[int, float]] = field(default_factory=list)  # (n_labelled, BA)


def headless_session(
    store_path: str | Path,
    *,
    budget_fraction: float = 0.05,
    annotator: int = 0,
    seed: int = 0,
    config=None,
    device: str = "auto",
) -> DemoSession:
    """Label ``budget_fraction`` of the candidates with a simulated annotator's answers, choosing
    each candidate with the product's query strategy, and score the result against the truth.

    Labels go to an in-memory learner (the store's journal is not touched), so the demo page can
    still be labelled by a person afterwards. ``device``: the learner's ('auto' | 'cpu' |
    'cuda', ``backend.resolve_backend``).
    """
    from .active.engine import product_policy
    from .active.learner import Learner, dataset_from_store
    from .store import SortStore

    store = SortStore.open(store_path)
    if not store.has(schema.TRUTH_ANNOTATORS):
        raise ValueError(f"{store_path}: no truth/annotators (not a synthetic demo store)")
    answers = store.read(schema.TRUTH_ANNOTATORS)[annotator]
    truth = store.read(schema.TRUTH_LABELS)
    active = config.active if config is not None else None
    policy = product_policy(active)
    ds = dataset_from_store(store_path, use_embeddings=policy.inputs != "features")
    learner = Learner([replace(ds, journal_path=None)], policy, device=device, seed=seed)
    budget = max(6, int(round(budget_fraction * len(truth))))
    curve, seconds = [], []
    for n in range(1, budget + 1):
        t0 = time.perf_counter()
        i = learner.next_query()[0]
        learner.label(i, int(answers[i]))
        learner.probabilities()
        seconds.append(time.perf_counter() - t0)
        if n % 5 == 0 or n == budget:
            curve.append((n, balanced_accuracy(learner.final(), truth)))
    return DemoSession(
        n_candidates=len(truth),
        n_labelled=budget,
        balanced_accuracy=balanced_accuracy(learner.final(), truth),
        model_balanced_accuracy=balanced_accuracy(learner.decisions(), truth),
        annotator_balanced_accuracy=balanced_accuracy(answers, truth),
        seconds_per_update=float(np.median(seconds)),
        curve=curve,
    )
