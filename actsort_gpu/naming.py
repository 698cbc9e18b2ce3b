"""Short names that tell recordings apart in reports, the page and its exports.

A lab keeps one folder per animal, so the sort stores of two animals are often named alike
(``mouse1/plane0.actsort``, ``mouse2/plane0.actsort``). Each recording is shown by its own name
(a store's folder name, a file's stem) with as many parent folders in front as it takes to tell
it from the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

__all__ = ["distinct_names", "check_distinct_paths"]


def distinct_names(paths: Sequence[str | Path], names: Sequence[str] | None = None) -> list[str]:
    """One name per path, unique when the paths are: ``names[k]`` (default: the path's last
    component) prefixed by its nearest parent folders, one more at a time, while another
    path's name reads the same (``["m1/plane0.actsort", "m2/plane0.actsort"]``).

    The parents are those of the resolved path, so ``plane0.actsort`` given from inside
    ``m1/`` still reads ``m1/plane0.actsort``. Paths that resolve to the same place keep the
    same name (:func:`check_distinct_paths` refuses them)."""
    resolved = [Path(p).resolve() for p in paths]
    own = [p.name for p in resolved] if names is None else [str(n) for n in names]
    if len(own) != len(resolved):
        raise ValueError(f"{len(own)} names for {len(resolved)} paths")
    depth = [0] * len(resolved)

    def shown(k: int) -> str:
        parents = [resolved[k].parents[i].name for i in range(depth[k])]
        return "/".join([*reversed(parents), own[k]])

    while True:
        labels = [shown(k) for k in range(len(resolved))]
        count = Counter(labels)
        clash = [
            k
            for k, label in enumerate(labels)
            if count[label] > 1 and depth[k] < len(resolved[k].parents) - 1
        ]
        if not clash:
            return labels
        for k in clash:
            depth[k] += 1


def check_distinct_paths(paths: Sequence[str | Path], what: str = "recording") -> None:
    """Raise ValueError naming the paths when two of them are the same file or folder (a
    recording given twice would count its labels twice)."""
    seen: dict[Path, str] = {}
    for p in paths:
        key = Path(p).resolve()
        if key in seen:
            raise ValueError(f"the same {what} is given twice: {seen[key]} and {p}")
        seen[key] = str(p)
