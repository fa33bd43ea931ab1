"""Rebuild the weights packages bundled inside the wheel, reproducibly.

Which records: the ``train`` split of ../shared/data/routerbench-3task.jsonl (2,205 prompts from
ARC-challenge, Winogrande and MBPP, each answered by 11 well-known models with real per-answer
costs). Why: these are models people route between by name (gpt-4-1106-preview, gpt-3.5-turbo,
claude-2, mixtral-8x7b, ...), their costs are measured rather than estimated, and keeping the
test split out lets the default be evaluated honestly on prompts it never saw.

One package per policy is written to src/switchpoint/_default_weights/<policy>/ so every policy
can be loaded (or swapped in at run time) offline. ``cluster`` is the default.

Usage: python scripts/build_default_weights.py [--records PATH] [--out DIR] [--policies a,b]
Deterministic: same records, same code, same packages (k-means and the random baseline are
seeded; embeddings are computed once and shared by every policy).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RECORDS = ROOT.parent / "shared" / "data" / "routerbench-3task.jsonl"
DEFAULT_OUT = ROOT / "src" / "switchpoint" / "_default_weights"
POLICIES = ("cluster", "knn", "tiers", "tfidf", "fixed", "random")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--records", default=str(DEFAULT_RECORDS))
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--policies", default=",".join(POLICIES))
    args = parser.parse_args(argv)

    from switchpoint.embedding import MiniLMEmbedder
    from switchpoint.records import load_records
    from switchpoint.training import fit

    records = load_records(args.records).split("train")
    embedder = MiniLMEmbedder()
    print(f"embedding {len(records)} prompts with {embedder.id}", file=sys.stderr)
    records.embeddings = embedder.embed(records.prompts)
    for policy in args.policies.split(","):
        package = fit(records, policy=policy, embedder=embedder)
        package.provenance.update({
            "records": "shared/data/" + Path(args.records).name,
            "split": "train",
            "created_at": "reproducible build (scripts/build_default_weights.py)",
            "why": "RouterBench train split: well-known models with real per-answer costs; "
                   "the test split is held out for evaluation",
        })
        target = Path(args.out) / policy
        package.save(target, bundled=True)  # (these are the bundled weights)
        print(f"wrote {package.weights_id} to {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
