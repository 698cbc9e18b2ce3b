"""Named feature columns: what every feature family returns and the driver places by name.

A family names each value where it computes it (``cols["trace_snr"] = ...``) and returns a
:class:`NamedColumns` whose names are those of its group in :mod:`.registry`, in the registry's
order. The driver never counts columns: it writes each named column into the matrix column of
that name (:meth:`NamedColumns.place_into`), so a column cannot land under another name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .._xp import to_numpy

__all__ = ["NamedColumns"]


@dataclass(frozen=True)
class NamedColumns:
    """Feature columns of a block of candidates, each under its feature name.

    names : tuple of F unique str, the feature names (registry spelling)
    values : (n_candidates, F) host ndarray; column j holds feature ``names[j]`` (raw values,
        NaN/Inf allowed; dtype as the family computes it, float32 or float64)
    """

    names: tuple[str, ...]
    values: np.ndarray

    def __post_init__(self):
        names = tuple(self.names)
        object.__setattr__(self, "names", names)
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ValueError(f"names: expected unique feature names, got duplicates {dup}")
        if self.values.ndim != 2 or self.values.shape[1] != len(names):
            raise ValueError(
                f"values: expected shape (n_candidates, {len(names)}) (one column "
                f"per name), got {self.values.shape}"
            )

    @classmethod
    def from_dict(
        cls, columns: Mapping[str, object], names: Sequence[str], *, xp=np, dtype=None
    ) -> NamedColumns:
        """Stack ``columns`` (name -> (n,) array in ``xp``) into the order ``names``.

        ``columns`` must hold exactly ``names`` (ValueError naming the missing and unexpected
        ones). The stack is built in ``xp`` and moved to the host once; ``dtype`` (optional)
        casts the stacked matrix, else the columns' common dtype is kept.
        """
        names = tuple(names)
        missing = [n for n in names if n not in columns]
        extra = [n for n in columns if n not in set(names)]
        if missing or extra:
            raise ValueError(
                f"feature columns: expected exactly {len(names)} names "
                f"({names[:3]}...), missing {missing}, unexpected {extra}"
            )
        if not names:
            return cls(names, np.empty((0, 0), dtype=dtype or np.float64))
        values = to_numpy(xp.stack([columns[n] for n in names], axis=1))
        return cls(names, values if dtype is None else values.astype(dtype))

    @classmethod
    def concat(cls, parts: Sequence[NamedColumns], names: Sequence[str]) -> NamedColumns:
        """Row-wise concatenation of blocks that hold the same ``names`` (in any order)."""
        names = tuple(names)
        if not parts:
            return cls(names, np.empty((0, len(names))))
        return cls(names, np.concatenate([p.select(names) for p in parts]))

    def __len__(self) -> int:
        return self.values.shape[0]

    def __getitem__(self, name: str) -> np.ndarray:
        """The (n_candidates,) column of feature ``name``."""
        try:
            return self.values[:, self.names.index(name)]
        except ValueError:
            raise KeyError(f"feature {name!r}: not among these columns {self.names}") from None

    def to_dict(self) -> dict[str, np.ndarray]:
        """name -> (n_candidates,) column view."""
        return {name: self.values[:, j] for j, name in enumerate(self.names)}

    def select(self, names: Sequence[str]) -> np.ndarray:
        """(n_candidates, len(names)) matrix of the columns ``names``, in that order."""
        missing = [n for n in names if n not in self.names]
        if missing:
            raise KeyError(f"features {missing}: not among these columns {self.names}")
        index = {name: j for j, name in enumerate(self.names)}
        order = [index[n] for n in names]
        if order == list(range(len(self.names))):
            return self.values
        return self.values[:, order]

    def place_into(self, matrix: np.ndarray, column_of: Mapping[str, int]) -> list[int]:
        """Write every column into ``matrix`` (n_candidates, F) at ``column_of[name]``.

        Returns the matrix columns written (the caller checks that all were filled). A name
        without a matrix column raises ValueError.
        """
        unknown = [n for n in self.names if n not in column_of]
        if unknown:
            raise ValueError(f"feature columns {unknown}: not in the feature matrix names")
        if matrix.shape[0] != len(self):
            raise ValueError(f"matrix: expected {len(self)} rows, got {matrix.shape[0]}")
        cols = [column_of[n] for n in self.names]
        matrix[:, cols] = self.values
        return cols
