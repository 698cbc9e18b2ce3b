"""Every tunable parameter, as frozen dataclasses with units in the field names.

``configs/defaults.yaml`` mirrors these defaults. A YAML file passed with ``--config`` overrides
any subset; unknown sections or keys are rejected with a message naming the file and the key.
Load the config once at the entry point (CLI, app) and pass the relevant section down.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

__all__ = [
    "IngestConfig",
    "PreprocessConfig",
    "FeatureConfig",
    "ActiveConfig",
    "EmbedConfig",
    "UIConfig",
    "Config",
    "load_config",
    "default_config_yaml",
    "as_dict",
]


@dataclass(frozen=True)
class IngestConfig:
    format: str = "auto"  # extraction format: auto|extract|suite2p|caiman|minian|nwb|npz
    movie_dataset: str | None = (
        None  # HDF5/zarr dataset name inside the movie file (None: the only 3-D one)
    )
    # one channel / plane of a movie whose pages interleave several (ScanImage order); all
    # None: from Suite2p's ops (nchannels, functional_chan, nplanes, the planeN folder) when
    # the movie has that many times the traces' frames, else every page is a frame
    movie_channels: int | None = None  # channels interleaved in the movie's pages
    movie_channel: int | None = None  # the functional channel, 1-based (ScanImage, Suite2p)
    movie_planes: int | None = None  # planes interleaved in the movie's pages
    movie_plane: int | None = None  # the plane, 0-based (Suite2p's planeN folder)
    # [first, stop) rows of each page: one ROI of a ScanImage multi-ROI (mesoscope) page;
    # None: a Suite2p mesoscope plane's ops lines when the pages are taller, else whole pages
    movie_rows: list[int] | None = None
    # the ROI (1-based, top to bottom) of a ScanImage multi-ROI page: its rows from the file's
    # ROI groups (instead of movie_rows)
    movie_roi: int | None = None
    fs_hz: float | None = None  # frame rate; None: the movie's, the source's, or unknown
    suite2p_trace: str = "F-0.7Fneu"  # F | F-0.7Fneu | spks: which Suite2p signal becomes the trace
    neuropil_coefficient: float = 0.7  # c in F - c * Fneu (the 0.7 in the name is nominal)
    caiman_trace: str = "C+YrA"  # C+YrA (raw: denoised + residual) | C (denoised)
    nonfinite: str = "error"  # NaN/Inf in traces: error | zero (replace by 0, logged)
    allow_downsampling: bool = False  # accept a movie of < 100 frames with fewer than the traces
    check_mean_image: bool = True  # refuse a movie whose frames do not look like the mean image


@dataclass(frozen=True)
class PreprocessConfig:
    n_events: int = 5  # event snapshots per candidate (ActSort numSpikes)
    event_half_window_frames: int = 5  # snapshot = event frame +/- this (11 frames)
    edge_exclusion_frames: tuple[int, int] = (7, 8)  # frames at the start/end never used as events
    min_peak_distance_fraction: float = 0.01  # MinPeakDistance = this * n_frames
    outline_threshold: float = 0.05  # of the max-normalised footprint
    crop_margin_px: int = 7
    snapshot_dtype: str = "uint8"  # uint8 | uint16 | float32 (per-candidate min/max scale)
    max_memory_mb: float | None = (
        None  # chunk budget; None: what is left of 1.75 GiB for the process, <= 25 % of free RAM
    )


@dataclass(frozen=True)
class FeatureConfig:
    include_extra: bool = True  # Suite2p/CaImAn-style extra columns after the 76
    batch_candidates: int = 4096  # candidates per block (GPU: fewer if over half its free memory)
    similarity_tile: int = 8192  # rows per tile for the pairwise trace similarity (feature 35)
    similarity_memory_mb: float = 1024  # host RAM for feature 35 (Z rows, tiles); beyond: a file
    # feature 35 by the exact tiled product, or by sketch-and-verify (same counts; auto: sketch
    # from 10,000 candidates x 4,096 frames)
    similarity_method: str = "auto"  # auto | exact | sketch
    suite2p_pixel_fraction: float = 0.2  # extras compact/npix/aspect: pixels >= this x peak
    snr_window_frames: int = 5  # CaImAn exceptionality window N (its default 5)
    # CPU threads: temporal row chunks, host peak features, snapshot-family parts; 0 = one per
    # core this process may use, at most 8 (one per Dask piece); 1 = none
    threads: int = 0


@dataclass(frozen=True)
class ActiveConfig:
    strategy: str = "dcal"  # random | ordered | cal | dal | dcal
    dcal_weight: float = 0.5  # user weight w of DCAL (GUI default); clipped at 0 (bug B13)
    threshold: float = 0.5  # on P(cell); 0.5 is the balanced-accuracy threshold when
    # balance = "weights" (benchmarks/RESULTS.md, issue 5)
    balance: str = "weights"  # none (ActSort) | weights (each class carries half the loss)
    lambda_scale: float = 1.0  # lambda = lambda_scale / n_labelled (fitclinear 'auto' = 1)
    cold_start_per_class: int = 3  # DAL until this many cells and non-cells are labelled
    disc_refresh: int = 20  # DAL/DCAL discriminator subsample kept this many queries
    # (1 = ActSort: fresh draw per query; 20: ~10x cheaper)
    lambda_cv: bool = True  # lambda_scale x {1,2,4,8} chosen by 5-fold CV on the labels
    # With a pretrained classifier (--classifier): select | union | discard | classifier
    # (active/engine.py TRANSFER_MODES; benchmarks/RESULTS.md, issue 11)
    transfer: str = "select"
    # Learned embeddings (embeddings/ of the store) as inputs beside the features: auto = the
    # learner compares features vs features + embeddings by cross-validation on your labels and
    # uses the better (active/engine.py INPUT_MODES; benchmarks/RESULTS.md, issue 14);
    # true = always when present; false = never
    use_embeddings: bool | str = "auto"
    # With use_embeddings auto, the inputs before each class has 8 labels (the CV cannot decide
    # yet): auto = features + embeddings when the store's encoder was trained with labels (the
    # shipped one: synthetic truth), else the features alone; both; features
    # (active/engine.py INPUT_STARTS; benchmarks/RESULTS.md, issue 14)
    embeddings_start: str = "auto"
    seed: int = 0  # random streams of the learner (random queries, discriminator subsamples)


@dataclass(frozen=True)
class EmbedConfig:
    embedding_dim: int = 32  # D of embeddings/matrix
    image_size_px: int = 24  # side of the resized crop images fed to the encoder
    width: int = 16  # channels of the first conv layer (doubles twice)
    max_epochs: int = 20
    batch_size: int = 256  # training batch (pairs of augmented views)
    learning_rate: float = 1e-3  # AdamW, cosine decay to 0
    weight_decay: float = 1e-4
    temperature: float = 0.2  # NT-Xent (SimCLR) softmax temperature
    supervised_weight: float = 1.0  # weight of the cross-entropy term in supervised fine-tuning
    max_candidates_per_store: int | None = None  # training subsample per store; None: all
    max_seconds: float | None = None  # stop training after this long (None: max_epochs only)
    adapt_seconds: float = 60.0  # `actsort embed --adapt`: self-supervised fine-tuning time
    adapt_max_candidates: int = 5000  # ... on a random subset of this many candidates
    infer_batch_size: int = 2048  # candidates per forward pass in `actsort embed`
    seed: int = 0


@dataclass(frozen=True)
class UIConfig:
    host: str = "127.0.0.1"  # bind address; 0.0.0.0 only on purpose (with --auth)
    port: int = 7860
    annotator: str = "anonymous"
    playback_s_per_frame: float = 0.15  # ActSort "Moderate" speed
    stop_window_labels: int = 20  # stopping signal: decisions compared this many labels apart
    stop_churn_fraction: float = 0.005  # stable when fewer decisions than this fraction changed
    stop_min_labels: int = 30  # never "stable" before this many human labels


@dataclass(frozen=True)
class Config:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    active: ActiveConfig = field(default_factory=ActiveConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    ui: UIConfig = field(default_factory=UIConfig)


def _coerce(section_cls, values: dict, source: str):
    known = {f.name: f for f in fields(section_cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            f"{source}: unknown key(s) {unknown} in section "
            f"'{section_cls.__name__}'; known: {sorted(known)}"
        )
    default = section_cls()
    out = {}
    for key, value in values.items():
        current = getattr(default, key)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        out[key] = value
    return replace(default, **out)


def load_config(path: str | Path | None = None, **overrides: dict) -> Config:
    """Defaults, then the YAML file at ``path``, then ``overrides`` (section -> {key: value})."""
    cfg = Config()
    layers: list[tuple[str, dict]] = []
    if path is not None:
        import yaml

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ValueError(f"{path}: not valid YAML{at}: {problem}") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: not a text (YAML) file: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a mapping of sections, got {type(data).__name__}")
        layers.append((str(path), data))
    if overrides:
        layers.append(("overrides", overrides))
    for source, data in layers:
        names = {f.name for f in fields(Config)}
        for section, values in data.items():
            if section not in names:
                raise ValueError(f"{source}: unknown section {section!r}; known: {sorted(names)}")
            if not isinstance(values, dict):
                raise ValueError(f"{source}: section {section!r} must be a mapping")
            section_cls = type(getattr(cfg, section))
            merged = {**dataclasses.asdict(getattr(cfg, section)), **values}
            cfg = replace(cfg, **{section: _coerce(section_cls, merged, source)})
    return cfg


def default_config_yaml() -> str:
    """The defaults of every section as YAML text (the content of configs/defaults.yaml)."""
    import yaml

    def plain(value):
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return list(value) if isinstance(value, tuple) else value

    header = (
        "# Defaults of every parameter (generated by scripts/write_default_config.py from\n"
        "# actsort_gpu/config.py). Copy the keys you change into your own file and pass it\n"
        "# with --config; unknown sections or keys are rejected.\n"
    )
    return header + yaml.safe_dump(plain(dataclasses.asdict(Config())), sort_keys=False)


def as_dict(cfg) -> dict:
    """A JSON-ready dict of a config dataclass (for store provenance)."""
    return dataclasses.asdict(cfg)
