"""Write configs/defaults.yaml from the dataclass defaults in actsort_gpu/config.py.

Run after changing a default; tests/test_config.py checks that the file matches the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

from actsort_gpu.config import default_config_yaml

out = Path(__file__).resolve().parents[1] / "configs" / "defaults.yaml"
out.write_text(default_config_yaml())
print(f"wrote {out}", file=sys.stderr)
