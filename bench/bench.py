#!/usr/bin/env python3
"""Benchmark: our agent against plain Ultralytics ObjectCounter on the same clip,
model and runtime; prints a table (see edge_agent/benchmark.py, docs/performance.md).

    python bench/bench.py                      # 1 and 4 cameras, gate off/on, 3 interleaved repeats
    python bench/bench.py --repeats 1 --frames 200
    python bench/bench.py --soak-minutes 30    # also a 30-minute soak on the looped clip
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "0")

from edge_agent.benchmark import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
