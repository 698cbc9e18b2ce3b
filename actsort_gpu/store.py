"""The sort store: one zarr v3 directory per recording, the only seam between stages.

Every stage reads its inputs from the store and writes its outputs back. The arrays (name, dims,
dtype, units, the stage that writes it) are declared once in :mod:`actsort_gpu.schema`, from
which docs/store_schema.md is generated; every write of a declared array is checked against its
spec, and the typed accessors (``traces``, ``footprint_crops``, ``snapshots_block``,
``feature_matrix``, ...) are the way stages read them. Stages record their parameters, timings
and status (``complete`` / ``incomplete``) in the root attributes, so a killed stage is visible
and ``actsort info`` can say what is done.

Snapshots are stored quantised: :func:`quantise` / :func:`quantise_ranges` write codes and
:func:`dequantise` is their one inverse.

Arrays are compressed with Blosc lz4 + byte shuffle: on two cores, compression work and not the
disk sets the ceiling, and zarr's default zstd is 2-4x slower to write (docs/environment.md).
The snapshot codes are the exception (``_STORAGE``): zstd at level 1 writes them as fast as lz4
and keeps 0.55 of their bytes instead of 0.86.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import scipy.sparse as sp
import zarr
from zarr.codecs import BloscCodec

from . import __version__, schema
from .schema import SCHEMA_VERSION
from .store_chunks import chunk_files, chunk_manifest, describe_change

log = logging.getLogger(__name__)

__all__ = [
    "SortStore",
    "SCHEMA_VERSION",
    "StoreError",
    "file_fingerprint",
    "STAGES",
    "FeatureMatrix",
    "EmbeddingMatrix",
    "Predictions",
    "SnapshotReader",
    "code_max",
    "quantise",
    "quantise_ranges",
    "dequantise",
    "crop_footprints",
]

STAGES = ("ingest", "preprocess", "features", "embed")
#: the stages whose outputs an open annotation page reads (refused while one is open)
_PAGE_INPUT_STAGES = ("preprocess", "features", "embed")
#: the stages whose outputs each stage reads: a new run of one leaves the stages after it (and
#: theirs) out of date until they run again
STAGE_INPUTS = {
    "preprocess": ("ingest",),
    "features": ("ingest", "preprocess"),
    "embed": ("ingest", "preprocess"),
    "apply": ("features", "embed"),
}
_COMPRESSOR = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
_TARGET_CHUNK_BYTES = 8 * 2**20
# Arrays stored otherwise: (codec, chunk bytes). The event snapshots are most of a store, and
# their quantised codes are noisy image bytes: lz4 keeps 0.86 of them, zstd's entropy coder
# 0.55 at level 1 for the same write time; in 1 MB chunks, reading one candidate's snapshots
# decodes 1 MB, 1.9 ms (an 8 MB zstd chunk: 10.7 ms; lz4's: 2.4-2.7 ms). benchmarks/RESULTS.md,
# "Store size".
_STORAGE = {
    schema.SNAPSHOTS_DATA: (BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"), 2**20),
}
# zarr's default compares every chunk with the fill value before writing it, to skip empty
# ones: 0.23-0.38 s per 70 MB of snapshots against 0.03-0.04 s to compress and write them
# (zarr 3.1); the store's arrays are rarely empty, so every chunk is written
_ARRAY_CONFIG = {"write_empty_chunks": True}


class StoreError(RuntimeError):
    """A store that is missing, corrupt, from a newer schema, or lacks a stage's output."""


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def file_fingerprint(path: str | Path, *, content_hash: bool = False) -> dict[str, Any]:
    """Path (as given and resolved), size in bytes, mtime and optionally a SHA-256 of the content.

    A folder (Suite2p plane, TIFF series, zarr) gets the total size and the newest mtime of its
    files; its hash covers the files' names and contents in sorted order.
    """
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    info: dict[str, Any] = {
        "path": str(path),
        "resolved": str(path.resolve()),
        "size_bytes": int(sum(p.stat().st_size for p in files)),
        "mtime": max((p.stat().st_mtime for p in files), default=0.0),
    }
    if content_hash:
        digest = hashlib.sha256()
        for p in files:
            if path.is_dir():
                digest.update(str(p.relative_to(path)).encode())
            with open(p, "rb") as fh:
                while block := fh.read(16 * 2**20):
                    digest.update(block)
        info["sha256"] = digest.hexdigest()
    return info


def _is_store_dir(path: Path) -> bool:
    """Whether ``path`` has a root ``zarr.json`` whose attributes hold ``schema_version``."""
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return isinstance(attrs, dict) and "schema_version" in attrs


def _build_path(path: Path, kind: str, pid: int | None = None) -> Path:
    """The hidden sibling of ``path`` that :meth:`SortStore.build` uses: ``kind`` 'partial'
    (the store being built) or 'replaced' (the old store between the two renames)."""
    return path.with_name(f".{path.name}.{kind}-{os.getpid() if pid is None else pid}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _clear_stale_builds(path: Path) -> None:
    """Tidy what a killed :meth:`SortStore.build` of ``path`` left beside it: a half-built
    store is deleted; an old store caught between the two renames (``path`` itself missing)
    is put back. Folders of a build still running (its process alive) are left alone; this
    process's own id counts as dead (a killed build's id reused, as after a container restart:
    this process has not started its build of ``path`` yet)."""
    for leftover in sorted(path.parent.glob(f".{glob.escape(path.name)}.*-*")):
        kind, _, pid = leftover.name[len(path.name) + 2 :].rpartition("-")
        if kind not in ("partial", "replaced") or not pid.isdigit():
            continue
        if int(pid) != os.getpid() and _pid_alive(int(pid)):
            continue
        if kind == "replaced" and not path.exists() and _is_store_dir(leftover):
            log.warning("%s: restored from %s (an earlier ingest was killed)", path, leftover)
            os.replace(leftover, path)
        elif _is_store_dir(leftover) or (leftover.is_dir() and not any(leftover.iterdir())):
            log.info("removing %s (left by an ingest that was killed)", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _move_into_place(staging: Path, path: Path) -> None:
    """Rename ``staging`` to ``path``, replacing what is there (an empty folder or a store that
    ``check_create`` allowed): the old one is renamed aside first and deleted last, and put
    back if the second rename fails."""
    old = None
    if path.exists() or path.is_symlink():
        old = _build_path(path, "replaced")
        if old.exists():
            shutil.rmtree(old)
        os.replace(path, old)
    try:
        os.replace(staging, path)
    except OSError:
        if old is not None:
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _default_chunks(
    shape: Sequence[int], itemsize: int, target: int = _TARGET_CHUNK_BYTES
) -> tuple[int, ...]:
    """Chunk along the first axis so that one chunk holds about ``target`` bytes (8 MB)."""
    if len(shape) == 0:
        return ()
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * itemsize if len(shape) > 1 else itemsize
    rows = max(1, min(int(shape[0]) or 1, target // max(row_bytes, 1)))
    return (rows, *[max(int(s), 1) for s in shape[1:]])


class SortStore:
    """A sort store on disk (zarr v3 directory, conventionally named ``*.actsort``).

    Create with :meth:`create`, open with :meth:`open`. Attribute ``path`` is the directory;
    ``attrs`` is the root attribute dict (read-only view; change it with :meth:`update_attrs`).

    Shape facts used everywhere: ``n_candidates`` (N), ``n_frames`` (T, trace frames at the
    extractor's rate), ``height`` (H) and ``width`` (W) of the field of view in pixels.
    """

    def __init__(self, path: Path, root: zarr.Group, mode: str):
        self.path = path
        self._root = root
        self.mode = mode
        self._whole: set[str] = set()  # arrays whose chunk files were found as last written

    # ------------------------------------------------------------------ open / create
    @staticmethod
    def check_create(
        path: str | Path, *, overwrite: bool = False, protect: Iterable[str | Path] = ()
    ) -> None:
        """Raise unless :meth:`create` may write ``path``: a path that does not exist or, with
        ``overwrite``, an empty folder or an existing sort store without labels.

        protect : the inputs of the same command (movie, extraction output): ``path`` may be
            none of them, nor a folder holding one. Nothing else is ever deleted: a file, a
            folder that is not a sort store (no root ``zarr.json`` with ``schema_version``) or
            a symbolic link is refused with a message naming it.
        """
        path = Path(path)
        if not path.exists() and not path.is_symlink():
            return
        target = path.resolve()
        cwd = Path.cwd().resolve()
        if target == cwd or target in cwd.parents:
            raise FileExistsError(
                f"{path}: is {'the' if target == cwd else 'a folder holding the'} current folder; "
                f"give the store a name of its own (e.g. --out session.actsort)"
            )
        for item in protect:
            src = Path(item).resolve()
            if src == target or target in src.parents:
                what = "is" if src == target else "holds"
                raise FileExistsError(
                    f"{path}: {what} an input of this command ({item}); choose another --out "
                    f"(it is never deleted)"
                )
        if not overwrite:
            raise FileExistsError(f"{path}: already exists (pass overwrite=True / --overwrite)")
        if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
            return  # an empty folder: nothing to lose
        if path.is_symlink() or not path.is_dir() or not _is_store_dir(path):
            if path.is_symlink():
                kind = "a symbolic link"
            elif path.is_dir():
                kind = "a folder that is not a sort store (no zarr.json with schema_version)"
            else:
                kind = "a file, not a sort store"
            raise FileExistsError(
                f"{path}: is {kind}; --overwrite replaces only an existing sort store, so "
                f"nothing was deleted: choose another --out or move it away"
            )
        if (path / schema.JOURNAL_FILE).exists():
            # Labels are the one thing a user cannot recompute: never delete them silently.
            raise FileExistsError(
                f"{path}: holds human labels ({schema.JOURNAL_FILE}); move it away or "
                f"export the labels before overwriting"
            )

    @classmethod
    def create(
        cls, path: str | Path, *, overwrite: bool = False, protect: Iterable[str | Path] = ()
    ) -> SortStore:
        """Create an empty store at ``path``; refuses to replace an existing one unless asked,
        and then replaces only a sort store without labels (see :meth:`check_create`)."""
        path = Path(path)
        cls.check_create(path, overwrite=overwrite, protect=protect)
        if path.exists():
            shutil.rmtree(path)
        return cls._create_at(path)

    @classmethod
    def _create_at(cls, path: Path) -> SortStore:
        root = zarr.open_group(str(path), mode="w", zarr_format=3)
        root.attrs.update(
            {
                "schema_version": SCHEMA_VERSION,
                "package_version": __version__,
                "created": _now(),
                "stages": {},
            }
        )
        log.debug("created store %s", path)
        return cls(path, root, "r+")

    @classmethod
    @contextlib.contextmanager
    def build(
        cls, path: str | Path, *, overwrite: bool = False, protect: Iterable[str | Path] = ()
    ) -> Iterator[SortStore]:
        """Create a store in a hidden folder beside ``path`` (``.NAME.partial-PID``) and move it
        to ``path`` only when the ``with`` block ends without an error, replacing the store
        there (same rules as :meth:`create`, checked again just before the move).

        A failure or an interruption inside the block never touches what ``path`` holds: the
        half-built folder is deleted (or, after a kill, by the next build of the same path).
        The yielded store follows the move: after the block its ``path`` is ``path``.
        """
        given = Path(path)
        path = given.absolute()  # the same components, so a name to put the siblings beside
        if path.name in ("", ".."):
            path = Path(os.path.abspath(path))
        _clear_stale_builds(path)
        cls.check_create(given, overwrite=overwrite, protect=protect)
        staging = _build_path(path, "partial")
        if staging.exists():
            shutil.rmtree(staging)
        store = cls._create_at(staging)
        try:
            yield store
            cls.check_create(given, overwrite=overwrite, protect=protect)
            _move_into_place(staging, path)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        store.path = given
        store._root = zarr.open_group(str(given), mode="r+", zarr_format=3)

    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> SortStore:
        """Open an existing store (``mode`` 'r' or 'r+'), checking it is one and its schema."""
        path = Path(path)
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such sort store")
        if not (path / "zarr.json").is_file():
            raise StoreError(
                f"{path}: not a sort store (no zarr.json; create it with `actsort ingest`)"
            )
        try:
            root = zarr.open_group(str(path), mode=mode, zarr_format=3)
            attrs = dict(root.attrs)
        except (ValueError, KeyError, OSError) as exc:
            raise StoreError(f"{path}: cannot read the store metadata ({exc})") from exc
        version = attrs.get("schema_version")
        if version is None:
            raise StoreError(f"{path}: not a sort store (no schema_version attribute)")
        if int(version) > SCHEMA_VERSION:
            raise StoreError(
                f"{path}: written with store schema {version} by actsort-gpu "
                f"{attrs.get('package_version', '?')}; this is actsort-gpu {__version__}, which "
                f"reads schema <= {SCHEMA_VERSION}: upgrade actsort-gpu"
            )
        return cls(path, root, mode)

    # ------------------------------------------------------------------ attributes
    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._root.attrs)

    def update_attrs(self, **values: Any) -> None:
        self._check_writable()
        self._root.attrs.update(values)

    def _check_writable(self) -> None:
        if self.mode == "r":
            raise StoreError(f"{self.path}: opened read-only")

    @property
    def n_candidates(self) -> int:
        return int(self.attrs["n_candidates"])

    @property
    def n_frames(self) -> int:
        return int(self.attrs["n_frames"])

    @property
    def height(self) -> int:
        return int(self.attrs["height"])

    @property
    def width(self) -> int:
        return int(self.attrs["width"])

    @property
    def labels_dir(self) -> Path:
        """The folder of the label files (not zarr): the journal, its lock, the page state."""
        return self.path / schema.LABELS_DIR

    @property
    def journal_path(self) -> Path:
        """The label journal (``labels/journal.jsonl``, see ``actsort_gpu.labels``)."""
        return self.path / schema.JOURNAL_FILE

    @property
    def ui_state_path(self) -> Path:
        """The page's saved position (``labels/ui_state.json``)."""
        return self.path / schema.UI_STATE_FILE

    # ------------------------------------------------------------------ stages
    def begin_stage(self, stage: str, params: dict[str, Any] | None = None) -> None:
        """Mark ``stage`` incomplete (a crash leaves it so) and record its parameters; the
        complete stages that read its outputs (:data:`STAGE_INPUTS`, transitively) become
        'stale' until they run again. The stages that rewrite what an annotation page reads
        (preprocess, features, embed) are refused while a page or another labelling session
        holds the store's journal."""
        if stage in _PAGE_INPUT_STAGES:
            self.check_no_session(stage)
        stages = self.attrs.get("stages", {})
        outdated = []
        for later in _stages_after(stage):  # they read what this run rewrites
            entry = stages.get(later)
            if entry is not None and entry.get("status") == "complete":
                entry.update(status="stale", stale_after=stage, stale_since=_now())
                outdated.append(later)
        if outdated:
            log.warning(
                "%s: %s read what %s rewrites: out of date until run again after it",
                self.path,
                " and ".join(outdated),
                stage,
            )
        stages[stage] = {
            "status": "incomplete",
            "started": _now(),
            "params": params or {},
            "package_version": __version__,
        }
        self.update_attrs(stages=stages)

    def check_no_session(self, stage: str) -> None:
        """StoreError naming the holder when a page or another labelling session holds this
        store's journal: ``stage`` would rewrite what that page reads."""
        from .labels import journal_holder

        holder = journal_holder(self.journal_path)
        if holder is not None:
            raise StoreError(
                f"{self.path}: a labelling session has it open ({holder}); close that page "
                f"before running {stage}, which rewrites what the page reads (labels are "
                "kept either way)"
            )

    def finish_stage(self, stage: str, seconds: float, **extra: Any) -> None:
        """Mark ``stage`` complete with its wall time and any extra facts (JSON-ready)."""
        stages = self.attrs.get("stages", {})
        entry = stages.get(stage, {})
        entry.update(
            {"status": "complete", "finished": _now(), "seconds": round(seconds, 3), **extra}
        )
        stages[stage] = entry
        # every array's chunk files as they are now: a reader finds a partial copy by them
        self.update_attrs(stages=stages, chunk_files=chunk_manifest(self.path))

    def _check_chunks(self, name: str) -> None:
        """StoreError when the chunk files of array ``name`` are not those its stage left
        (missing or cut short: zarr would read missing ones as zeros). Checked once per array
        and store object; skipped for arrays of a stage being rerun (they are being written)
        and for arrays no stage has recorded (stores written before the record existed)."""
        if name in self._whole:
            return
        recorded = self._root.attrs.get("chunk_files", {}).get(name)
        spec = _owner_spec(name)
        if recorded is not None and spec is not None and not self._being_written(spec):
            change = describe_change(recorded, chunk_files(self.path / name))
            if change is not None:
                again = (
                    "copy the whole store again"
                    if spec.stage == "ingest"
                    else f"copy the whole store again, or rerun `actsort {spec.stage} "
                    f"{self.path}` (labels are kept)"
                )
                raise StoreError(
                    f"{self.path}: array '{name}' is damaged: {change} (a store copied or "
                    f"synced in part?); {again}"
                )
        self._whole.add(name)

    def _forget_chunks(self, name: str) -> None:
        """Drop the chunk record of ``name``, rewritten outside its stage's run (through the
        Python API): it is checked again once a stage finishes and records it anew."""
        recorded = self._root.attrs.get("chunk_files", {})
        spec = _owner_spec(name)
        if name in recorded and (spec is None or not self._being_written(spec)):
            self._root.attrs.update(chunk_files={k: v for k, v in recorded.items() if k != name})
        self._whole.discard(name)

    def _being_written(self, spec) -> bool:
        """Whether the stage that writes ``spec``'s array is running (or was killed)."""
        return self.stage_status(spec.stage) == "incomplete"

    def check_chunks(self) -> list[str]:
        """The damage :meth:`_check_chunks` finds in every recorded array, one message each
        (empty: every array has the chunk files its stage left)."""
        problems = []
        for name in self._root.attrs.get("chunk_files", {}):
            if self.has(name):
                try:
                    self._check_chunks(name)
                except StoreError as exc:
                    problems.append(str(exc))
        return problems

    def stage_status(self, stage: str) -> str | None:
        """'complete', 'incomplete', 'stale' (a stage it reads ran again since) or None (never
        run)."""
        return self.attrs.get("stages", {}).get(stage, {}).get("status")

    def _stale(self, stage: str) -> StoreError:
        entry = self.attrs.get("stages", {}).get(stage, {})
        return StoreError(
            f"{self.path}: stage '{stage}' is out of date: {entry.get('stale_after', 'a stage')} "
            f"ran again after it ({entry.get('stale_since', '?')}), so its outputs describe "
            f"the earlier run; run `actsort {stage}` on {self.path} again (labels are kept)"
        )

    def require(self, *stages: str) -> None:
        """Raise StoreError naming the command to run when a needed stage is not complete, or
        naming the array when one of those stages' outputs lost chunk files since (checked
        before a stage that reads them marks itself incomplete)."""
        for stage in stages:
            status = self.stage_status(stage)
            if status == "incomplete":
                raise self._interrupted(stage)
            if status == "stale":
                raise self._stale(stage)
            if status != "complete":
                raise StoreError(
                    f"{self.path}: stage '{stage}' has not been run; run `actsort {stage} "
                    f"{self.path}` first"
                )
        for name in self._root.attrs.get("chunk_files", {}):
            spec = _owner_spec(name)
            if spec is not None and spec.stage in stages and self.has(name):
                self._check_chunks(name)

    def _interrupted(self, stage: str, name: str | None = None) -> StoreError:
        what = f"; '{name}' may be partial or from the previous run" if name else ""
        command = (
            "`actsort ingest ... --overwrite`"
            if stage == "ingest"
            else f"`actsort {stage} {self.path}`"
        )
        return StoreError(
            f"{self.path}: stage '{stage}' was interrupted (status incomplete){what}; run "
            f"{command} again"
        )

    def _check_stage_of(self, name: str) -> None:
        """A reader (mode 'r') never reads an output of a stage recorded as incomplete (a killed
        re-run leaves old and new arrays side by side) or stale (computed from what a stage
        it reads has rewritten since). The stage itself (mode 'r+') may."""
        if self.mode != "r":
            return
        spec = schema.spec_for(name)
        status = None if spec is None else self.stage_status(spec.stage)
        if status == "incomplete":
            raise self._interrupted(spec.stage, name)
        if status == "stale":
            raise self._stale(spec.stage)

    # ------------------------------------------------------------------ metadata
    def has(self, name: str) -> bool:
        """Whether the array or group ``name`` (e.g. ``schema.TRACES``) exists."""
        try:
            self._root[name]
        except KeyError:
            return False
        return True

    def _missing(self, name: str, what: str = "array") -> StoreError:
        spec = schema.spec_for(name)
        hint = ""
        if spec is not None and spec.stage in (*STAGES, "apply"):
            hint = f" (written by `actsort {spec.stage} {self.path}`)"
        return StoreError(f"{self.path}: no {what} '{name}' in the store{hint}")

    def array(self, name: str) -> zarr.Array:
        """The zarr array ``name`` (e.g. ``schema.TRACES``), for sliced reads and writes."""
        try:
            node = self._root[name]
        except KeyError:
            raise self._missing(name) from None
        if not isinstance(node, zarr.Array):
            raise StoreError(f"{self.path}: '{name}' is a group, not an array")
        self._check_stage_of(name)
        self._check_chunks(name)
        return node

    def shape_of(self, name: str) -> tuple[int, ...]:
        """Shape of array ``name`` (metadata only; a CSR group gives its logical shape)."""
        node = self._node(name)
        if isinstance(node, zarr.Array):
            return tuple(int(s) for s in node.shape)
        if "shape" in node.attrs:
            return tuple(int(s) for s in node.attrs["shape"])
        raise StoreError(f"{self.path}: '{name}' is a group without a shape")

    def attrs_of(self, name: str) -> dict[str, Any]:
        """A copy of the attributes of array or group ``name`` (``dims``, ``units``, ...)."""
        return dict(self._node(name).attrs)

    def _node(self, name: str):
        try:
            return self._root[name]
        except KeyError:
            raise self._missing(name) from None

    def read(self, name: str, selection: Any = slice(None)) -> np.ndarray:
        """Read ``name`` (optionally a selection, e.g. a slice of rows) into a NumPy array."""
        return np.asarray(self.array(name)[selection])

    # ------------------------------------------------------------------ writers
    def _resolve(
        self,
        name: str,
        shape: Sequence[int],
        dtype: np.dtype,
        dims: Sequence[str] | None,
        units: str | None,
        kind: str = "dense",
    ) -> tuple[list[str], str]:
        """Dims and units of a write of ``name``, checked against the schema.

        A declared name must have the spec's kind, dims and dtype (``dims`` and ``units`` default
        to the spec's); a name in the schema's namespace that the schema does not declare is
        refused; any other name (scratch, tests) needs explicit ``dims``.
        """
        spec = schema.spec_for(name)
        if spec is None:
            if schema.is_reserved(name):
                raise ValueError(
                    f"{name}: not an array of the store schema (docs/store_schema.md); declare "
                    f"it in actsort_gpu/schema.py before writing it"
                )
            if dims is None:
                raise ValueError(f"{name}: dims are required for an array outside the schema")
            dims, units = list(dims), units or ""
        else:
            spec_kind = "dense" if spec.kind == "group" else spec.kind
            if spec_kind != kind:
                writer = "write_array" if spec_kind == "dense" else f"write_{spec_kind}"
                raise ValueError(
                    f"{name}: the schema declares a {spec.kind} array; write it with {writer}"
                )
            if dims is not None and tuple(dims) != spec.dims:
                raise ValueError(
                    f"{name}: dims {list(dims)}, the schema declares {list(spec.dims)}"
                )
            if dtype.name not in spec.allowed_dtypes:
                raise ValueError(
                    f"{name}: dtype {dtype.name}, the schema declares "
                    f"{' or '.join(spec.allowed_dtypes)}"
                )
            dims, units = list(spec.dims), spec.units if units is None else units
        if kind != "csr" and len(dims) != len(shape):
            raise ValueError(f"{name}: {len(dims)} dims {dims} for shape {tuple(shape)}")
        return dims, units

    def _create(
        self,
        name: str,
        shape: Sequence[int],
        dtype: np.dtype,
        dims: list[str],
        units: str,
        chunks: Sequence[int] | None,
        fill_value: Any,
        attrs: dict[str, Any] | None,
    ) -> zarr.Array:
        self._forget_chunks(name)
        codec, target = _STORAGE.get(name, (_COMPRESSOR, _TARGET_CHUNK_BYTES))
        if chunks is None:
            chunks = _default_chunks(shape, dtype.itemsize, target)
        chunks = tuple(max(1, min(int(c), max(int(s), 1))) for c, s in zip(chunks, shape))
        return zarr.create_array(
            store=self._root.store,
            name=name,
            shape=tuple(int(s) for s in shape),
            dtype=dtype,
            chunks=chunks,
            compressors=codec,
            fill_value=fill_value,
            overwrite=True,
            dimension_names=list(dims),
            attributes={"dims": list(dims), "units": units, **(attrs or {})},
            config=_ARRAY_CONFIG,
        )

    def _write(
        self,
        name: str,
        data: np.ndarray,
        dims: list[str],
        units: str = "",
        chunks: Sequence[int] | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> zarr.Array:
        arr = self._create(name, data.shape, data.dtype, dims, units, chunks, 0, attrs)
        if data.size:
            arr[...] = data
        return arr

    def create_array(
        self,
        name: str,
        shape: Sequence[int],
        dtype: Any,
        *,
        dims: Sequence[str] | None = None,
        units: str | None = None,
        chunks: Sequence[int] | None = None,
        fill_value: Any = 0,
        attrs: dict[str, Any] | None = None,
    ) -> zarr.Array:
        """Create (replacing any old one) an array to be filled piece by piece.

        For a name the schema declares, ``dims`` and ``units`` default to the spec's and a
        different dims or dtype raises ValueError naming the array.
        """
        self._check_writable()
        dtype = np.dtype(dtype)
        dims, units = self._resolve(name, shape, dtype, dims, units)
        return self._create(name, shape, dtype, dims, units, chunks, fill_value, attrs)

    def write_array(
        self,
        name: str,
        data: Any,
        *,
        dims: Sequence[str] | None = None,
        units: str | None = None,
        chunks: Sequence[int] | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> zarr.Array:
        """Write a whole NumPy array as ``name`` with its dims, units and extra attributes.

        For a name the schema declares (``schema.TRACES``, a member of a group such as
        ``schema.SOURCE_METRICS + "/" + metric``), ``dims`` and ``units`` default to the spec's
        and a different dims or dtype raises ValueError naming the array.
        """
        data = np.asarray(data)
        arr = self.create_array(
            name, data.shape, data.dtype, dims=dims, units=units, chunks=chunks, attrs=attrs
        )
        if data.size:
            arr[...] = data
        return arr

    def delete(self, name: str) -> None:
        self._check_writable()
        if self.has(name):
            del self._root[name]

    # ------------------------------------------------------------------ sparse (CSR)
    def write_csr(
        self,
        name: str,
        matrix: sp.csr_matrix,
        *,
        units: str | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        """Store a CSR matrix as group ``name`` with ``indptr``, ``indices``, ``data``.

        Data are stored as float32; for a declared name the group's ``dims`` attr is the spec's.
        """
        self._check_writable()
        matrix = sp.csr_matrix(matrix)
        matrix.sort_indices()
        dims, units = self._resolve(
            name, matrix.shape, np.dtype(np.float32), None, units, kind="csr"
        )
        self._write(f"{name}/indptr", matrix.indptr.astype(np.int64), ["rows+1"])
        self._write(f"{name}/indices", matrix.indices.astype(np.int32), ["nonzeros"])
        self._write(f"{name}/data", matrix.data.astype(np.float32), ["nonzeros"], units)
        extra = {"dims": dims} if dims else {}
        group = self._root[name]
        group.attrs.update(
            {
                "shape": [int(s) for s in matrix.shape],
                "format": "csr",
                "units": units,
                **extra,
                **(attrs or {}),
            }
        )

    def read_csr(self, name: str, rows: slice | None = None) -> sp.csr_matrix:
        """Read CSR ``name``, or only the block of ``rows`` (a slice with step 1)."""
        try:
            group = self._root[name]
        except KeyError:
            raise self._missing(name, "sparse matrix") from None
        self._check_stage_of(name)
        for member in ("indptr", "indices", "data"):
            self._check_chunks(f"{name}/{member}")
        shape = tuple(group.attrs["shape"])
        start, stop, step = (rows or slice(None)).indices(shape[0])
        if step != 1:
            raise ValueError("read_csr reads contiguous row blocks only (step 1)")
        indptr = np.asarray(group["indptr"][start : stop + 1], dtype=np.int64)
        lo, hi = int(indptr[0]), int(indptr[-1])
        indices = np.asarray(group["indices"][lo:hi])
        data = np.asarray(group["data"][lo:hi])
        return sp.csr_matrix((data, indices, indptr - lo), shape=(stop - start, shape[1]))

    # ------------------------------------------------------------------ ragged arrays
    def write_ragged(
        self,
        name: str,
        pieces: Iterable[np.ndarray],
        *,
        dtype: Any = None,
        dims: Sequence[str] | None = None,
        units: str | None = None,
        attrs: dict[str, Any] | None = None,
    ) -> None:
        """Store a list of arrays of varying length along axis 0 as ``data`` + ``offsets``.

        ``offsets`` has n_items + 1 entries; item i is ``data[offsets[i]:offsets[i + 1]]``.
        ``dims`` / ``dtype`` / ``units`` are those of ``data``; for a declared name they default
        to the spec's (and a different dims or dtype raises ValueError naming the array).
        """
        self._check_writable()
        spec = schema.spec_for(name)
        if dtype is None:
            if spec is None:
                raise ValueError(f"{name}: dtype is required for an array outside the schema")
            dtype = spec.dtype
        dtype = np.dtype(dtype)
        pieces = [np.asarray(p, dtype=dtype) for p in pieces]
        lengths = np.array([len(p) for p in pieces], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        inner = pieces[0].shape[1:] if pieces else ()
        if spec is not None and not pieces:
            inner = (0,) * (len(spec.dims) - 1)  # the declared rank, even with no items
        data = (
            np.concatenate(pieces, axis=0)
            if pieces and offsets[-1] > 0
            else np.zeros((0, *inner), dtype=dtype)
        )
        dims, units = self._resolve(name, data.shape, dtype, dims, units, kind="ragged")
        self._write(f"{name}/data", data, dims, units)
        self._write(f"{name}/offsets", offsets, list(schema.RAGGED_OFFSETS[0]))
        self._root[name].attrs.update({"format": "ragged", **(attrs or {})})

    def read_ragged(self, name: str, items: slice | None = None) -> list[np.ndarray]:
        """Read the ragged array ``name`` as a list (optionally only ``items``, a slice)."""
        offsets = self.read(f"{name}/offsets")
        start, stop, _ = (items or slice(None)).indices(len(offsets) - 1)
        lo, hi = int(offsets[start]), int(offsets[stop])
        data = self.read(f"{name}/data", slice(lo, hi))
        return [data[offsets[i] - lo : offsets[i + 1] - lo] for i in range(start, stop)]

    # ------------------------------------------------------------------ ingest outputs
    def footprints(self, rows: slice | None = None) -> sp.csr_matrix:
        """Max-normalised footprints (N, H*W) CSR float32; pixel index = row * W + col."""
        return self.read_csr(schema.FOOTPRINTS, rows)

    def footprint_peak(self, rows: Any = slice(None)) -> np.ndarray:
        """(N,) float32 original peak of each footprint (source footprint units)."""
        return self.read(schema.FOOTPRINT_PEAK, rows)

    def traces(self, rows: Any = slice(None)) -> np.ndarray:
        """Traces (N, T) float32 in the extractor's units, at the extractor's frame rate."""
        return self.read(schema.TRACES, rows)

    def is_empty(self) -> np.ndarray:
        """(N,) bool: the footprint has no positive pixel."""
        return self.read(schema.IS_EMPTY)

    def source_index(self) -> np.ndarray:
        """(N,) int64 row of each candidate in the extraction output."""
        return self.read(schema.SOURCE_INDEX)

    def _member_names(self, group: str) -> list[str]:
        if not self.has(group):
            return []
        return sorted(self._root[group].array_keys())

    def source_metric_names(self) -> list[str]:
        """Sorted names of the arrays under ``candidates/source_metrics`` (empty if none)."""
        return self._member_names(schema.SOURCE_METRICS)

    def source_metric(self, name: str) -> np.ndarray:
        """(N,) float32 metric ``name`` the extractor computed (e.g. ``suite2p_iscell_prob``)."""
        return self.read(f"{schema.SOURCE_METRICS}/{name}")

    def source_metrics(self) -> dict[str, np.ndarray]:
        """Every source metric: name -> (N,) float32."""
        return {name: self.source_metric(name) for name in self.source_metric_names()}

    def write_source_metric(self, name: str, values: Any) -> None:
        """Write metric ``name``: (N,) values, stored float32."""
        self.write_array(f"{schema.SOURCE_METRICS}/{name}", np.asarray(values, np.float32))

    def source_images(self) -> dict[str, np.ndarray]:
        """Extractor summary images: name -> (h, w) float32 (empty if none)."""
        return {
            name: self.read(f"{schema.SOURCE_IMAGES}/{name}")
            for name in self._member_names(schema.SOURCE_IMAGES)
        }

    def write_source_image(self, name: str, image: Any) -> None:
        """Write summary image ``name``: (h, w), stored float32."""
        self.write_array(f"{schema.SOURCE_IMAGES}/{name}", np.asarray(image, np.float32))

    # ------------------------------------------------------------------ preprocess outputs
    def fov_images(self) -> dict[str, np.ndarray]:
        """The field-of-view images present: kind ('max', 'mean', 'std', 'corr') -> (H, W)
        float32 (movie units; 'corr' Pearson r). Empty before preprocess."""
        return {kind: self.read(name) for kind, name in schema.FOV_IMAGES.items() if self.has(name)}

    def centers(self, rows: Any = slice(None)) -> np.ndarray:
        """(N, 2) float32 (row, col) centre of each footprint, 0-based pixels (NaN if empty)."""
        return self.read(schema.CENTERS, rows)

    def crops(self, rows: Any = slice(None)) -> np.ndarray:
        """(N, 4) int32 crop windows (row0, row1, col0, col1), half-open, 0-based."""
        return self.read(schema.CROPS, rows)

    def footprint_crops(self, rows: slice | None = None) -> list[np.ndarray]:
        """Footprints of a contiguous block of candidates cut to their crop windows:
        a list of (row1 - row0, col1 - col0) float32 arrays (see :func:`crop_footprints`)."""
        start, stop, _ = (rows or slice(None)).indices(self.n_candidates)
        block = slice(start, stop)
        return crop_footprints(self.footprints(block), self.crops(block), self.width)

    def outlines(self, items: slice | None = None) -> list[np.ndarray]:
        """Per candidate (M_i, 2) float32 outline points (row, col); NaN rows separate
        boundaries."""
        return self.read_ragged(schema.OUTLINES, items)

    def neighbors(self, items: slice | None = None) -> list[np.ndarray]:
        """Per candidate (K_i,) int32 neighbour indices; empty arrays for a store written
        before neighbours were stored."""
        if not self.has(schema.NEIGHBORS):
            start, stop, _ = (items or slice(None)).indices(self.n_candidates)
            return [np.zeros(0, np.int32) for _ in range(start, stop)]
        return self.read_ragged(schema.NEIGHBORS, items)

    def events(self, rows: Any = slice(None)) -> np.ndarray:
        """(N, n_events) int32 event frames (trace frames), tallest first; -1 = none."""
        return self.read(schema.EVENTS, rows)

    def snapshot_traces(self, rows: Any = slice(None)) -> np.ndarray:
        """(N, n_events, event_frames) float32 trace (downsampled) at the snapshot frames."""
        return self.read(schema.SNAPSHOT_TRACES, rows)

    def snapshot_frames(self, rows: Any = slice(None)) -> np.ndarray:
        """(N, n_events, event_frames) int32 movie frame of each snapshot frame; -1 = none."""
        return self.read(schema.SNAPSHOTS_FRAMES, rows)

    def snapshot_layout(self) -> tuple[int, int]:
        """(n_events, event_frames) of the stored snapshots (metadata only)."""
        shape = self.shape_of(schema.SNAPSHOTS_FRAMES)
        return int(shape[1]), int(shape[2])

    def snapshot_clims(self, rows: Any = slice(None)) -> np.ndarray:
        """(N, 4) float32 display range (min, max, p10, p99.9) of each candidate's snapshots."""
        return self.read(schema.SNAPSHOTS_CLIMS, rows)

    def snapshots(self, index: int) -> np.ndarray:
        """Event snapshots of one candidate, dequantised: (n_events, event_frames, h, w) float32.

        Slots of missing events (``candidates/events`` == -1) and frames outside the movie
        (``snapshots/frames`` == -1) are zeros.
        """
        self.require("preprocess")
        return self.snapshots_block(slice(index, index + 1))[0]

    def snapshots_block(self, items: slice, *, dequantise: bool = True) -> list[np.ndarray]:
        """Snapshots of a contiguous block of candidates (list of float32 4-D arrays).

        dequantise : True gives movie units. False gives the stored codes (for integer storage
            an increasing affine map of movie units per candidate, cheaper when only the shape
            of the data matters), with missing frames set to the code of the value 0 and a
            constant candidate (hi <= lo) set to zeros.
        """
        start, stop, _ = items.indices(self.n_candidates)
        crops, scale, frames, raws = self._snapshot_raw_block(start, stop)
        return [
            _decode_block(raw, crops[k], scale[k], frames[k], dequantise)
            for k, raw in enumerate(raws)
        ]

    def snapshot_codes_block(self, items: slice) -> list[np.ndarray]:
        """Snapshot codes of a contiguous block of candidates, uncast where that is exact.

        For consumers that only need the shape of the data (the embedding inputs): per candidate
        an (n_events, event_frames, h, w) array with the values of
        ``snapshots_block(items, dequantise=False)`` at every event that exists
        (``candidates/events`` >= 0); the values at other event slots are unspecified. A
        candidate whose existing events lie inside the movie and, for integer storage, whose
        range is not constant comes as the stored codes themselves (storage dtype, e.g. uint8:
        a view of one read, no float32 copy); any other candidate comes decoded (float32).
        """
        start, stop, _ = items.indices(self.n_candidates)
        crops, scale, frames, raws = self._snapshot_raw_block(start, stop)
        exists = self.events(slice(start, stop)) >= 0
        as_stored = ((frames >= 0) | ~exists[..., None]).all(axis=(1, 2))
        if raws and code_max(raws[0].dtype) is not None:
            as_stored &= scale[:, 1] > scale[:, 0]
        shapes = np.stack([crops[:, 1] - crops[:, 0], crops[:, 3] - crops[:, 2]], 1).tolist()
        return [
            raw.reshape(*frames.shape[1:], *shapes[k])
            if as_stored[k]
            else _decode_block(raw, crops[k], scale[k], frames[k], False)
            for k, raw in enumerate(raws)
        ]

    def _snapshot_raw_block(self, start: int, stop: int):
        """Crops (n, 4), scale (n, 2), frames (n, n_events, event_frames) and the n flat stored
        snapshot arrays (views of one read) of candidates ``start:stop``."""
        crops = self.crops(slice(start, stop))
        scale = self.read(schema.SNAPSHOTS_SCALE, slice(start, stop))
        frames = self.snapshot_frames(slice(start, stop))
        offsets = self.read(schema.SNAPSHOTS_OFFSETS, slice(start, stop + 1))
        data = self.read(schema.SNAPSHOTS_DATA, slice(int(offsets[0]), int(offsets[-1])))
        rel = offsets - offsets[0]
        return crops, scale, frames, [data[rel[k] : rel[k + 1]] for k in range(stop - start)]

    def snapshot_reader(self) -> SnapshotReader:
        """A reader of one candidate's snapshots at a time through cached handles (the page)."""
        return SnapshotReader(self)

    # ------------------------------------------------------------------ later stages
    def feature_matrix(self) -> FeatureMatrix:
        """The features stage's matrix (N, F) float32 with its column names and version."""
        arr = self.array(schema.FEATURE_MATRIX)
        return FeatureMatrix(
            np.asarray(arr[...]),
            list(arr.attrs.get("names", [])),
            str(arr.attrs.get("version", "")),
        )

    def feature_names(self) -> list[str]:
        """The F column names of the feature matrix (metadata only)."""
        return list(self.attrs_of(schema.FEATURE_MATRIX).get("names", []))

    def embedding_matrix(self) -> EmbeddingMatrix:
        """The embed stage's matrix (N, D) float32 with its names and encoder id."""
        arr = self.array(schema.EMBEDDING_MATRIX)
        return EmbeddingMatrix(
            np.asarray(arr[...]),
            list(arr.attrs.get("names", [])),
            str(arr.attrs.get("encoder_id", "")),
            bool(arr.attrs.get("encoder_supervised", False)),
        )

    def predictions(self) -> Predictions:
        """The apply stage's outputs: probability (N,) float32, decision and final (N,) int8."""
        return Predictions(
            self.read(schema.PREDICTED_PROBABILITY),
            self.read(schema.PREDICTED_DECISION),
            self.read(schema.PREDICTED_FINAL),
        )

    def truth_labels(self) -> np.ndarray | None:
        """(N,) int8 ground truth +1 / -1 of a synthetic or benchmark store; None if absent."""
        return self.read(schema.TRUTH_LABELS) if self.has(schema.TRUTH_LABELS) else None

    def truth_annotators(self) -> tuple[np.ndarray, list[str]] | None:
        """((n_annotators, N) int8 labels, annotator names) when stored, else None."""
        if not self.has(schema.TRUTH_ANNOTATORS):
            return None
        arr = self.array(schema.TRUTH_ANNOTATORS)
        names = list(arr.attrs.get("names", [f"annotator{k}" for k in range(arr.shape[0])]))
        return np.asarray(arr[...]), names

    # ------------------------------------------------------------------ summary
    def summary(self) -> str:
        """A readable multi-line description for ``actsort info``."""
        a = self.attrs
        lines = [
            f"sort store   {self.path}",
            f"schema       {a.get('schema_version')} (actsort-gpu {a.get('package_version')}, "
            f"created {a.get('created')})",
        ]
        movie = a.get("movie")
        if movie:
            fs = movie.get("fs_hz")
            lines.append(
                f"movie        {movie.get('path')} [{movie.get('format')}] "
                f"{movie['n_frames']} x {a['height']} x {a['width']} "
                f"{movie.get('dtype')}" + (f", {fs:g} Hz" if fs else ", frame rate unknown")
            )
            if movie.get("interleave"):
                from .io.movies.interleave import Interleave

                layout = Interleave.from_dict(movie["interleave"])
                lines.append(
                    f"             {layout.describe()} of its {movie.get('pages')} pages "
                    "(the frames read)"
                )
            if movie.get("temporal_downsample", 1) != 1:
                lines.append(
                    f"             traces have {movie['temporal_downsample']}x the "
                    f"movie's frames (temporal downsampling)"
                )
        ext = a.get("extraction")
        if ext:
            lines.append(f"extraction   {ext.get('path')} [{ext.get('format')}]")
        if "n_candidates" in a:
            readable = self.has(schema.IS_EMPTY) and self.stage_status("ingest") == "complete"
            n_empty = int(self.read(schema.IS_EMPTY).sum()) if readable else 0
            lines.append(
                f"candidates   {a['n_candidates']:,} ({n_empty} with empty footprints), "
                f"{self.n_frames:,} trace frames"
            )
        metrics = self.source_metric_names()
        if metrics:
            lines.append(f"source info  {', '.join(metrics)}")
        lines.append("stages")
        for stage in (*STAGES, *sorted(set(a.get("stages", {})) - set(STAGES))):
            info = a.get("stages", {}).get(stage)
            if info is None:
                lines.append(f"  {stage:<11} not run")
                continue
            took = f" in {info['seconds']:.1f} s" if "seconds" in info else ""
            status = info["status"]
            if status == "stale":
                status = f"OUT OF DATE ({info.get('stale_after')} ran again since; rerun it)"
            lines.append(f"  {stage:<11} {status}{took}{_stage_device(info)}")
        if self.journal_path.exists():
            lines.extend(self._labels_summary())
        from .labels import other_journal_note, other_journals

        for copy in other_journals(self.labels_dir):
            lines.append(f"             NOT READ: {other_journal_note(self.path, copy)}")
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        lines.append(f"size on disk {size / 2**20:,.1f} MiB")
        if "chunk_files" in a:
            damaged = self.check_chunks()
            lines.append(
                "chunk files  as the stages left them"
                if not damaged
                else f"chunk files  DAMAGED: {'; '.join(damaged)}"
            )
        return "\n".join(lines)

    def _labels_summary(self) -> list[str]:
        """The ``labels`` lines of :meth:`summary`: how many candidates have which label and
        who gave them, from a read-only replay of the journal (its path and line count)."""
        from collections import Counter

        from . import CELL, NOT_CELL, UNSURE
        from .labels import Journal

        journal = self.journal_path
        n_lines = journal.read_bytes().count(b"\n")
        try:
            with Journal(
                journal, read_only=True, n_candidates=self.n_candidates, dataset=self.path.name
            ) as j:
                have = Counter(j.labels.values())
                who = Counter(j.annotators.values())
        except (OSError, ValueError) as exc:
            return [f"labels       {journal} ({n_lines} lines): unreadable ({exc})"]
        given = sum(have.values())
        out = [
            f"labels       {given:,} of {self.n_candidates:,} candidates (cell {have[CELL]:,}, "
            f"not a cell {have[NOT_CELL]:,}, unsure {have[UNSURE]:,})"
        ]
        if who:
            names = ", ".join(f"{name} {n:,}" for name, n in who.most_common())
            out.append(f"             given by {names}")
        out.append(f"             journal {journal} ({n_lines:,} lines)")
        return out


def _owner_spec(name: str):
    """The schema spec of array ``name``, or of its group for a CSR / ragged member
    (``candidates/footprints/indptr``); None outside the schema."""
    return schema.spec_for(name) or schema.spec_for(name.rpartition("/")[0])


def _stages_after(stage: str) -> list[str]:
    """The stages that read ``stage``'s outputs, directly or through another
    (:data:`STAGE_INPUTS`)."""
    found, frontier = [], [stage]
    while frontier:
        done = frontier.pop()
        for later, inputs in STAGE_INPUTS.items():
            if done in inputs and later not in found:
                found.append(later)
                frontier.append(later)
    return found


def _stage_device(info: dict) -> str:
    """' on cuda (NVIDIA H100 ...)', ' on cpu (auto: <why>), compiled accumulator, direct reads'
    or '' from a stage's record (``backend.Backend.provenance`` in its params; older stores: a
    ``device`` key only; the accumulator, read mode and NaN / Inf pixels: preprocess only;
    feature 35's sketch and the CPU threads: features only)."""
    params = info.get("params") or {}
    device = info.get("device") or params.get("device")
    if not device:
        return ""
    detail = params.get("device_name") or (
        f"auto: {params['device_reason']}" if params.get("device_reason") else ""
    )
    accumulator = info.get("accumulator")  # the movie pass's (preprocess only)
    read_mode = info.get("read_mode")  # how the pass read the movie (preprocess only)
    sketch = info.get("similarity_sketch")  # feature 35 by sketch-and-verify (features only)
    threads = info.get("threads")  # the feature stage's CPU threads (features only)
    nonfinite = info.get("nonfinite_pixels")  # the movie's NaN / Inf pixels (preprocess only)
    return (
        f" on {device}"
        + (f" ({detail})" if detail else "")
        + (f", {threads} CPU thread{'s' if threads != 1 else ''}" if threads else "")
        + (f", {accumulator} accumulator" if accumulator else "")
        + (f", {read_mode} reads" if read_mode else "")
        + (
            f", feature 35 by sketch ({100 * sketch['exact_work']:.0f} % of the exact products)"
            if sketch
            else ""
        )
        + (f", {nonfinite:,} NaN / Inf pixels read as 0" if nonfinite else "")
    )


class FeatureMatrix(NamedTuple):
    """``features/matrix``: values (N, F) float32, names (F column names), version string."""

    values: np.ndarray
    names: list[str]
    version: str


class EmbeddingMatrix(NamedTuple):
    """``embeddings/matrix``: values (N, D) float32, names (``emb00``...), encoder_id, and
    whether that encoder was trained with labels (False for stores embedded before this was
    recorded)."""

    values: np.ndarray
    names: list[str]
    encoder_id: str
    encoder_supervised: bool = False


class Predictions(NamedTuple):
    """``predictions/*``: probability (N,) float32 P(cell); decision, final (N,) int8 +1 / -1."""

    probability: np.ndarray
    decision: np.ndarray
    final: np.ndarray


class SnapshotReader:
    """One candidate's dequantised snapshots at a time, through cached zarr handles.

    The small index arrays (crops, offsets, scale, frames; O(N)) are read once; each call
    reads one candidate's block. Use it where single candidates are read often (the page);
    :meth:`SortStore.snapshots_block` is faster for contiguous blocks.
    """

    def __init__(self, store: SortStore):
        store.require("preprocess")
        self._data = store.array(schema.SNAPSHOTS_DATA)
        self._offsets = store.read(schema.SNAPSHOTS_OFFSETS)
        self._scale = store.read(schema.SNAPSHOTS_SCALE)
        self._frames = store.snapshot_frames()
        self._crops = store.crops()

    def __call__(self, index: int) -> np.ndarray:
        """(n_events, event_frames, h, w) float32 in movie units; missing frames are 0."""
        i = int(index)
        raw = np.asarray(self._data[int(self._offsets[i]) : int(self._offsets[i + 1])])
        return _decode_block(raw, self._crops[i], self._scale[i], self._frames[i], True)


def _decode_block(
    raw: np.ndarray, crop: np.ndarray, scale: np.ndarray, frames: np.ndarray, dequantise_codes: bool
) -> np.ndarray:
    """One candidate's stored values (flat) -> (n_events, event_frames, h, w) float32.

    frames : (n_events, event_frames) int, -1 = missing (set to 0, or to the code of 0 when
    ``dequantise_codes`` is False; see :meth:`SortStore.snapshots_block`).
    """
    h = int(crop[1] - crop[0])
    w = int(crop[3] - crop[2])
    codes = raw.reshape(frames.shape[0], frames.shape[1], h, w)
    lo, hi = float(scale[0]), float(scale[1])
    q_max = code_max(codes.dtype)
    zero_value = 0.0
    if dequantise_codes:
        block = dequantise(codes, lo, hi)
    else:
        block = codes.astype(np.float32)
        if q_max is not None:
            if hi <= lo:
                block[...] = 0.0
            else:
                zero_value = -lo / (hi - lo) * q_max
    block[frames < 0] = zero_value
    return block


def code_max(dtype: Any) -> float | None:
    """Largest code of an integer snapshot dtype (255.0 for uint8); None for float storage."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else None


def quantise_ranges(
    values: Any,
    lo: Any,
    hi: Any,
    dtype: Any,
    *,
    sizes: np.ndarray | None = None,
    invalid: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quantise float values to ``dtype`` codes, each segment with its own (lo, hi) range.

    Parameters
    ----------
    values : array of any shape (float or integer movie values); not modified
    lo, hi : scalars, or (n_segments,) float32 when ``sizes`` is given: the value range of
        each segment (values outside are clipped to codes 0 / q_max)
    dtype : the storage dtype ('uint8', 'uint16'; a float dtype stores the values as they are)
    sizes : (n_segments,) int, the lengths of consecutive segments of the flat ``values``
    invalid : bool mask like ``values``: elements stored as code 0 (float storage: 0.0)

    Returns
    -------
    codes : like ``values``, of ``dtype``
    lo, hi : float32 like the given ``lo``: the ranges to store with the codes (``hi`` = ``lo``
        for a constant segment, whose codes are all 0); float storage gives (0, 1)

    Notes
    -----
    code = floor((value - lo) * q_max / (hi - lo) + 0.5) in float32, so that
    :func:`dequantise` (value = lo + code * (hi - lo) / q_max) is off by at most
    (hi - lo) / (2 * q_max). The arithmetic is done in place on one float32 copy: preprocess
    quantises 64 MB blocks of many candidates at once.
    """
    dtype = np.dtype(dtype)
    q_max = code_max(dtype)
    x = np.array(values, dtype=np.float32)  # the one working copy
    lo = np.asarray(lo, dtype=np.float32)
    hi = np.asarray(hi, dtype=np.float32)
    if q_max is None:
        if invalid is not None:
            x[invalid] = 0.0
        return x.astype(dtype, copy=False), np.zeros_like(lo), np.ones_like(hi)
    span = hi.astype(np.float64) - lo.astype(np.float64)
    factor = np.where(span > 0, q_max / np.where(span > 0, span, 1.0), 0.0).astype(np.float32)
    if sizes is not None:
        lo_el, factor_el = np.repeat(lo, sizes), np.repeat(factor, sizes)
    else:
        lo_el, factor_el = lo, factor
    x -= lo_el
    x *= factor_el
    x += np.float32(0.5)
    np.floor(x, out=x)
    if invalid is not None:
        x[invalid] = 0.0
    np.clip(x, 0, q_max, out=x)
    return x.astype(dtype), lo, np.where(span > 0, hi, lo).astype(np.float32)


def quantise(block: np.ndarray, dtype: Any) -> tuple[np.ndarray, tuple[float, float]]:
    """Quantise a float block to ``dtype`` with its own (lo, hi) range; float dtypes pass through.

    Returns the codes and (lo, hi) such that value = lo + code / q_max * (hi - lo). The inverse
    is :func:`dequantise`. The error is at most (hi - lo) / (2 * q_max). A constant block gives
    codes 0 and (lo, lo).
    """
    block = np.asarray(block, dtype=np.float32)
    lo = float(block.min()) if block.size else 0.0
    hi = float(block.max()) if block.size else 0.0
    codes, lo_q, hi_q = quantise_ranges(block, lo, hi, dtype)
    return codes, (float(lo_q), float(hi_q))


def dequantise(codes: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Movie values of one candidate's codes: lo + code * (hi - lo) / q_max, float32.

    codes : integer codes (any shape) from :func:`quantise`, or float values (returned as
    float32 unchanged); lo, hi : the candidate's stored ``snapshots/scale`` row.
    """
    q_max = code_max(codes.dtype)
    block = codes.astype(np.float32)
    if q_max is None:
        return block
    return float(lo) + block * np.float32((float(hi) - float(lo)) / q_max)


def crop_footprints(footprints: sp.spmatrix, crops: np.ndarray, width: int) -> list[np.ndarray]:
    """Footprint rows cut to their crop windows (the one footprint-to-crop cutter).

    footprints : CSR (n, H*W) float32, pixel index = row * W + col
    crops : (n, 4) int (row0, row1, col0, col1), half-open, one row per footprint row
    width : W of the field of view, pixels
    Returns n arrays (row1 - row0, col1 - col0) float32; pixels outside the crop are dropped.
    """
    fp = sp.csr_matrix(footprints)
    crops = np.asarray(crops)
    if crops.shape != (fp.shape[0], 4):
        raise ValueError(
            f"crops: expected shape ({fp.shape[0]}, 4) (one window per footprint "
            f"row), got {crops.shape}"
        )
    # All candidates at once: one scatter into a buffer that holds the crops back to back.
    r0, r1, c0, c1 = crops.astype(np.int64).T
    heights, widths = np.maximum(r1 - r0, 0), np.maximum(c1 - c0, 0)
    starts = np.concatenate([[0], np.cumsum(heights * widths)])
    owner = np.repeat(np.arange(fp.shape[0]), np.diff(fp.indptr))
    pix = fp.indices.astype(np.int64)
    rr, cc = pix // width - r0[owner], pix % width - c0[owner]
    keep = (rr >= 0) & (rr < heights[owner]) & (cc >= 0) & (cc < widths[owner])
    owner, rr, cc = owner[keep], rr[keep], cc[keep]
    buf = np.zeros(int(starts[-1]), dtype=np.float32)
    buf[starts[owner] + rr * widths[owner] + cc] = fp.data[keep]
    return [
        buf[starts[k] : starts[k + 1]].reshape(int(heights[k]), int(widths[k]))
        for k in range(fp.shape[0])
    ]
