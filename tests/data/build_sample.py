"""Rebuild ``routerbench-sample.jsonl`` from the full RouterBench records.

Usage: python tests/data/build_sample.py [RECORDS]
(default: $SWITCHPOINT_DATA/routerbench-3task.jsonl, else ../shared/data/routerbench-3task.jsonl
beside the repository). Lines are copied verbatim; see README.md in this folder for the layout.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "routerbench-sample.jsonl"
# (task, split, how many): the first lines of each block, in this order. The first block must
# stay first: the tests read the sample's first 120 lines (all ARC-Challenge, split "test").
LAYOUT = [
    ("arc-challenge", "test", 120),
    ("mbpp", "test", 30),
    ("winogrande", "test", 30),
    ("arc-challenge", "train", 50),
    ("mbpp", "train", 80),
    ("winogrande", "train", 60),
]


def default_records() -> Path:
    root = os.environ.get("SWITCHPOINT_DATA")
    data = Path(root) if root else HERE.parents[2] / "shared" / "data"
    return data / "routerbench-3task.jsonl"


def select(lines: list[str]) -> list[str]:
    """The sample's lines, in :data:`LAYOUT` order, taken verbatim from ``lines``."""
    blocks: dict[tuple[str, str], list[str]] = {}
    for line in lines:
        record = json.loads(line)
        blocks.setdefault((record["task"], record["split"]), []).append(line)
    out: list[str] = []
    for task, split, count in LAYOUT:
        block = blocks.get((task, split), [])
        if len(block) < count:
            raise SystemExit(f"{task}/{split}: need {count} records, the source has {len(block)}")
        out.extend(block[:count])
    return out


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else default_records()
    if not source.is_file():
        print(f"{source}: not found; pass the path of routerbench-3task.jsonl", file=sys.stderr)
        return 2
    with source.open(encoding="utf-8") as fh:
        lines = fh.readlines()
    OUT.write_text("".join(select(lines)), encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
