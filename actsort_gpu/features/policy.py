"""NaN/Inf policy of the feature matrix (ActSort reference section 3.1), applied once.

1. Local fix (``get_features.m``), only for circularity, spatial_corruption,
   spurious_corr_score and the resid quantiles (features 42, 45, 51, 52-66): +-Inf -> 10 x the
   largest finite value of the column, then NaN -> mean of the column's non-NaN values.
2. Final fix (``create_features.m``), every column: +-Inf -> 0, then NaN -> mean of the
   column's non-NaN values. ActSort divides the non-NaN sum by all N rows (NaNs count as zeros,
   bug B10); we divide by the number of non-NaN values. A column with no value at all -> 0.
3. Values beyond the float32 range are clipped to it (the matrix is stored as float32).

Every replacement is counted per column; :func:`apply_nan_policy` returns the counts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from .registry import LOCAL_FIX_NAMES

log = logging.getLogger(__name__)

__all__ = ["apply_nan_policy", "format_nan_report"]

_F32_MAX = float(np.finfo(np.float32).max)


def apply_nan_policy(
    matrix: np.ndarray, names: Sequence[str]
) -> tuple[np.ndarray, dict[str, dict[str, int]]]:
    """Replace NaN/Inf in ``matrix`` (N, F) column by column; returns (float32 matrix, report).

    report : {feature name: {"nan": k, "posinf": k, "neginf": k, "clipped": k}} for the columns
    where anything was replaced (counts of raw values, before any replacement).
    """
    x = np.array(matrix, dtype=np.float64, copy=True)
    if x.ndim != 2 or x.shape[1] != len(names):
        raise ValueError(
            f"matrix: expected shape (N, {len(names)}) for {len(names)} names, got {x.shape}"
        )
    report: dict[str, dict[str, int]] = {}
    for j, name in enumerate(names):
        col = x[:, j]
        nan = np.isnan(col)
        pos = np.isposinf(col)
        neg = np.isneginf(col)
        big = np.isfinite(col) & (np.abs(col) > _F32_MAX)
        entry = {
            "nan": int(nan.sum()),
            "posinf": int(pos.sum()),
            "neginf": int(neg.sum()),
            "clipped": int(big.sum()),
        }
        if not any(entry.values()):
            continue
        report[name] = entry
        if name in LOCAL_FIX_NAMES:
            finite = col[np.isfinite(col)]
            if finite.size and (pos | neg).any():
                col[pos | neg] = 10.0 * finite.max()
            _fill_nan_with_mean(col)
        col[np.isinf(col)] = 0.0
        _fill_nan_with_mean(col)
        np.clip(col, -_F32_MAX, _F32_MAX, out=col)
    for name, entry in report.items():
        log.info(
            "features: %s: replaced %d NaN, %d +Inf, %d -Inf, clipped %d",
            name,
            entry["nan"],
            entry["posinf"],
            entry["neginf"],
            entry["clipped"],
        )
    return x.astype(np.float32), report


def _fill_nan_with_mean(col: np.ndarray) -> None:
    nan = np.isnan(col)
    if nan.any():
        rest = col[~nan]
        col[nan] = rest.mean() if rest.size else 0.0


def format_nan_report(report: dict[str, dict[str, int]]) -> str:
    """One line per feature with replacements (for the CLI); '' when nothing was replaced."""
    lines = []
    for name, e in report.items():
        parts = [
            f"{e[k]} {label}"
            for k, label in (
                ("nan", "NaN"),
                ("posinf", "+Inf"),
                ("neginf", "-Inf"),
                ("clipped", "clipped"),
            )
            if e.get(k)
        ]
        lines.append(f"  {name}: {', '.join(parts)}")
    return "\n".join(lines)
