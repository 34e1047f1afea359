#!/usr/bin/env python3
"""Count accuracy, tracking metrics, speed and memory per tracker on every
ground-truth sequence, each tracker in its own process (so peak RSS shows
what that tracker pulls in: torch for the Ultralytics ones).

    python bench/eval_trackers.py [EVAL_DIR] [--model PATH] [--max-frames N]

EVAL_DIR defaults to ../shared/data/eval ($EDGE_AGENT_SHARED_DIR). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGE_AGENT_SHARED_DIR", REPO.parent / "shared"))
KINDS = ["botsort", "bytetrack", "ultralytics-bytetrack", "ultralytics-botsort"]


def run(eval_dir: Path, model: str, kind: str, extra: list[str]) -> dict:
    command = [sys.executable, "-m", "edge_agent", "eval", str(eval_dir), "--model", model, "--tracker", kind,
               "--no-baselines", "--json", *extra]
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=env, check=True)
    return json.loads(result.stdout[result.stdout.index("{"):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("eval_dir", nargs="?", default=str(SHARED / "data" / "eval"))
    parser.add_argument("--model", default=str(SHARED / "models" / "yolov8n_fp32.onnx"))
    parser.add_argument("--max-frames", type=int, default=None)
    args = parser.parse_args()
    extra = ["--max-frames", str(args.max_frames)] if args.max_frames else []
    print("| sequence | tracker | rules | sum abs count error | misses + extras | worst direction acc. | MOTA | IDF1 | "
          "HOTA | ID sw. | frames/s (detect+track+rules) | track+rules ms/frame | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in KINDS:
        for rules, flags in (("defaults", []), ("none", ["--plain-rules"])):
            report = run(Path(args.eval_dir), args.model, kind, extra + flags)
            for seq in report["sequences"]:
                t = seq["trackers"][0]
                worst = min((c["accuracy"] for line in t["lines"].values() for c in line.values()
                             if c["accuracy"] is not None), default=None)
                print(f"| {seq['sequence']} | {kind} | {rules} | {t['abs_error']} | {t['misses_plus_extras']} | "
                      f"{'n/a' if worst is None else f'{100 * worst:.1f}%'} | {100 * t['mota']:.1f} | "
                      f"{100 * t['idf1']:.1f} | {100 * t['hota']:.1f} | {t['id_switches']} | "
                      f"{t['frames_per_second']} | {t['track_and_rules_ms_per_frame']} | {report['peak_rss_mb']:.0f} |")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
