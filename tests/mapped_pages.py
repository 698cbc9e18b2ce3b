"""How much of a file this process holds mapped in memory (Linux ``/proc/self/smaps``)."""

from __future__ import annotations

import re
from pathlib import Path

SMAPS = Path("/proc/self/smaps")


def mapped_rss_kb(path) -> int:
    """Resident kB of this process's memory maps of ``path``."""
    total, inside = 0, False
    for line in SMAPS.read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total
