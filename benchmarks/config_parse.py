"""How long a config file of a mebibyte (the most one may hold) takes to read: parsed by
libyaml, as the config is where PyYAML has it, beside PyYAML's pure-Python safe loader, what
it was parsed by before; both with the config's own constructor (a key written twice refused).

The file is a catalog of ``models:`` entries in flow style, each line with a comment, written
up to just under ``MAX_CONFIG_BYTES``. Each parser reads it ``--repeats`` times in this process,
alternated; the figures are CPU seconds (this process's), median and least. A bad file costs
the libyaml parse and then the pure one (its refusal is worded as the pure loader words it),
shown on the same file with its last line broken.

Usage: python benchmarks/config_parse.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from _common import Spread

from switchpoint import config
from switchpoint.errors import ConfigError


def write_config(path: Path, limit: int = config.MAX_CONFIG_BYTES) -> int:
    """A catalog of just under ``limit`` bytes at ``path``: how many models it lists."""
    lines = ["policy: cluster", "models:"]
    size, count = sum(len(line) + 1 for line in lines), 0
    while True:
        line = (f"  - {{name: model-{count:05d}, provider: openai, input_per_mtok: 1.5, "
                f"output_per_mtok: 2.5, context_window: 128000, tier: 2}}  # entry {count}")
        if size + len(line) + 1 > limit - 64:
            break
        lines.append(line)
        size += len(line) + 1
        count += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return count


def cpu_seconds(read: Callable[[], object]) -> float:
    start = time.process_time()
    with contextlib.suppress(ConfigError):
        read()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    fast = config._FastUniqueKeyLoader
    if fast is None:
        raise SystemExit("this PyYAML has no libyaml: there is nothing to compare")
    with tempfile.TemporaryDirectory(prefix="sp-config-") as tmp:
        good, bad = Path(tmp) / "good.yaml", Path(tmp) / "bad.yaml"
        models = write_config(good)
        size = good.stat().st_size
        bad.write_text(good.read_text(encoding="utf-8") + "a: [1\n", encoding="utf-8")
        times: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            for name, loader in (("libyaml", fast), ("pure Python", None)):
                config._FastUniqueKeyLoader = loader
                for which, path in (("", good), (", its last line broken", bad)):
                    times.setdefault(name + which, []).append(
                        cpu_seconds(partial(config._read_yaml, path, "--config")))
        config._FastUniqueKeyLoader = fast
    print(f"A config of {size:,} bytes ({models:,} models), read "
          f"{args.repeats} times by each parser, alternated (CPU seconds)")
    print(f"{'':34} {'median':>8} {'least':>8}")
    for name, runs in times.items():
        cpu = Spread.of(runs)
        print(f"{name:34} {cpu.median:8.2f} {cpu.least:8.2f}")


if __name__ == "__main__":
    main()
