"""Rebuild the weights package bundled inside the wheel, reproducibly.

Which records: the ``train`` split of ../shared/data/routerbench-3task.jsonl (2,205 prompts from
ARC-challenge, Winogrande and MBPP, each answered by 11 well-known models with real per-answer
costs). Why: these are the models people route between by name (gpt-4-1106-preview,
gpt-3.5-turbo, claude-2, mixtral-8x7b, ...), their costs are measured rather than estimated, and
keeping the test split out lets the default be evaluated honestly on prompts it never saw.

Usage: python scripts/build_default_weights.py [--records PATH] [--out DIR]
The result is deterministic: same records, same code, same package (the k-means is seeded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECORDS = ROOT.parent / "shared" / "data" / "routerbench-3task.jsonl"
DEFAULT_OUT = ROOT / "src" / "switchpoint" / "_default_weights"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", default=str(DEFAULT_RECORDS))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    args = parser.parse_args(argv)

    from switchpoint.training import fit

    package = fit(args.records, policy="cluster", split="train",
                  progress=lambda m: print(m, file=sys.stderr))
    package.provenance["records"] = "shared/data/" + Path(args.records).name
    package.provenance["created_at"] = "reproducible build (scripts/build_default_weights.py)"
    package.provenance["why"] = (
        "RouterBench train split: well-known models with real per-answer costs; the test split "
        "is held out for evaluation")
    package.save(args.out)
    print(f"wrote {package.weights_id} to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
