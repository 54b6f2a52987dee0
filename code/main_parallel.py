#!/usr/bin/env python3
"""InSAR Pipeline entry point: `python code/main_parallel.py [COMMAND] [OPTIONS]` (see README)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from insar_pipeline.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
