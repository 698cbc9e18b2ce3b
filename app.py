"""``python app.py S1.actsort [S2.actsort ...] [--classifier C] [--annotator NAME] ...``

The same page and arguments as ``actsort sort`` (it calls the same code).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from actsort_gpu.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["sort", *sys.argv[1:]]))
