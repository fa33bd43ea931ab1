"""README.md's examples, run as a newcomer runs them.

Conventions (README authors: keep to them):

- Every fenced ```sh block runs, in the order of the file, in its own ``bash -e -o pipefail``,
  so any failing command fails the block. Every ```python block runs the same way with the
  project's Python. The working directory is a scratch folder that stands in for a fresh clone's
  root: it holds a copy of ``tests/data`` and a link to ``.venv``, and ``.venv/bin`` is first on
  ``PATH`` (as after ``source .venv/bin/activate``). Blocks share the files they write (the tour
  writes into ``tmp/``), not shell variables, so each block must make sense on its own.
- ``<!-- readme-test: skip (REASON) -->`` as the last line before a block leaves it out. The
  reason is required; use it only for what cannot run here (installing packages, serving until
  stopped, calling a provider with a real key, data that must be downloaded).
- A block that talks to ``http://127.0.0.1:8080`` (or ``localhost:8080``) runs against a real
  ``switchpoint serve`` that this test starts, as ``scripts/run`` does (bundled weights, state in
  the scratch folder), on a free port that replaces ``8080`` in the block.
- ```yaml blocks are config examples: each must load as a valid switchpoint config.

Nothing in the repository changes: the test checks ``git status`` before and after.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from switchpoint.config import load_settings
from switchpoint.weights import load_weights
from tests.head_start import HeadStart
from tests.integration.servers import ProcessServer

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
SERVICE = re.compile(r"(?:127\.0\.0\.1|localhost):8080\b")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BLOCK_TIMEOUT_S = 120
MAX_SKIPS = 6

# Cheap checks that a block's output looks right: (text in the block, text its stdout must hold).
EXPECTED_OUTPUT = [
    ("--models gpt-4-1106-preview,claude-instant-v1 --explain", "Model selected:"),
    ("--input tmp/prompts.jsonl", '"selected_model"'),
    ("switchpoint fit tests/data/routerbench-sample.jsonl", "fitted on 190 records"),
    ("switchpoint eval tests/data/routerbench-sample.jsonl", "zero router"),
    ("switchpoint add-model my-model", '"my-model"'),
    ("from switchpoint import fit, load_router", "Model selected:"),
    ("/health", '"ready":true'),
    ('"cost_weight": 0.7', '"selected_model"'),
    ('"prefer_healthy": true', '"selected_model"'),
    ("tmp/vector.json", '"embedding_ms":0.0'),
    ("--success --url", "replaced an earlier outcome"),
    ("switchpoint learn --export tmp/learned-weights", "'events': 2"),
]


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    skip_reason: str | None

    def __str__(self) -> str:
        return f"README.md line {self.line} ({self.lang})"


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, with its language and the skip marker's reason (if any)."""
    blocks: list[Block] = []
    lines = text.splitlines()
    previous = ""  # the last non-blank line outside a block
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if opening is None:
            if lines[i].strip():
                previous = lines[i]
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        marker = SKIP.search(previous)
        reason = None
        if marker is not None:
            reason = (marker.group("reason") or "").strip()
            if not reason:
                raise AssertionError(f"README.md line {start}: a readme-test skip marker needs a "
                                     "reason, e.g. <!-- readme-test: skip (needs an API key) -->")
        blocks.append(Block(opening.group("lang"), "\n".join(body) + "\n", start + 1, reason))
        previous = ""
        i += 1
    return blocks


def git_status() -> str | None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        return None
    proc = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


def make_scratch(folder: Path) -> Path:
    """A folder standing in for a fresh clone's root, as far as the README's blocks go."""
    root = folder / "switchpoint"
    shutil.copytree(ROOT / "tests" / "data", root / "tests" / "data")
    (root / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    return root


def block_env() -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "switchpoint").exists(), f"no switchpoint command beside {sys.executable}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SWITCHPOINT_") or k == "SWITCHPOINT_CACHE_DIR"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = sys.prefix
    return env


class _Service:
    """Starts one ``switchpoint serve`` on first use, for the blocks that call port 8080."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.server: ProcessServer | None = None

    def port(self) -> int:
        if self.server is None:
            self.server = ProcessServer(data_dir=self.data_dir).start()
            self.server.wait_ready()
        return self.server.port

    def stop(self) -> None:
        server = self.server
        if server is None or server.proc is None:
            return
        try:
            code, err = server.terminate()
            assert code == 0, f"switchpoint serve exited with {code}: {err}"  # as it was told
        finally:
            if server.proc.poll() is None:
                server.kill()


def run_block(block: Block, cwd: Path, env: dict[str, str], service: _Service,
              scripts: Path) -> subprocess.CompletedProcess[str]:
    code = block.code
    if SERVICE.search(code):
        code = SERVICE.sub(lambda m: m.group(0).replace("8080", str(service.port())), code)
    script = scripts / f"block-{block.line}.{'py' if block.lang == 'python' else 'sh'}"
    script.write_text(code, encoding="utf-8")
    argv = ([sys.executable, str(script)] if block.lang == "python"
            else ["bash", "-e", "-o", "pipefail", str(script)])
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S, check=False)


@dataclass(frozen=True)
class Ran:
    """What a run of the README's blocks left: each block run's line, status, stdout and
    stderr, in order, to the first that failed; the repository's status before and after; and
    the scratch folder the blocks ran in."""

    blocks: list[tuple[int, int, str, str]]
    git_before: str | None
    git_after: str | None
    scratch: Path


def run_readme(folder: Path) -> None:
    """Run the README's runnable blocks as the test describes, in ``folder``; what they did
    goes to ``folder/ran.json`` (see :class:`Ran`). A head start (tests/head_start.py): its
    blocks embed, fit and serve for seconds on the CPU."""
    runnable = [b for b in readme_blocks(README.read_text(encoding="utf-8"))
                if b.lang in ("sh", "python") and b.skip_reason is None]
    scratch = make_scratch(folder)
    scripts = folder / "blocks"
    scripts.mkdir()
    env = block_env()
    before = git_status()
    ran: list[tuple[int, int, str, str]] = []
    service = _Service(scratch / "tmp" / "service-data")
    try:
        for block in runnable:
            proc = run_block(block, scratch, env, service, scripts)
            ran.append((block.line, proc.returncode, proc.stdout, proc.stderr))
            if proc.returncode != 0:
                break
    finally:
        service.stop()
    (folder / "ran.json").write_text(json.dumps({
        "blocks": ran, "git_before": before, "git_after": git_status(),
        "scratch": str(scratch)}), encoding="utf-8")


def readme_run(folder: Path) -> list[str]:
    """The head start's command: this file run as a script on ``folder``."""
    return ["env", f"PYTHONPATH={ROOT}", sys.executable, "-m", "tests.integration.test_readme",
            str(folder)]


def ran_of(head_start: HeadStart) -> Ran:
    done = head_start.result(timeout=BLOCK_TIMEOUT_S * 10)
    assert done.returncode == 0, done.stderr  # (a block's own failure is in ran.json)
    data = json.loads((head_start.workdir / "ran.json").read_text(encoding="utf-8"))
    return Ran([(line, code, out, err) for line, code, out, err in data["blocks"]],
               data["git_before"], data["git_after"], Path(data["scratch"]))


@pytest.mark.head_start.with_args(readme_run)
def test_readme_blocks_run_as_written(head_start: HeadStart) -> None:
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    runnable = [b for b in blocks if b.lang in ("sh", "python") and b.skip_reason is None]
    skipped = [b for b in blocks if b.skip_reason is not None]
    assert len(skipped) <= MAX_SKIPS, f"skip markers are for exceptions: {skipped}"
    ran = ran_of(head_start)
    scratch = ran.scratch
    by_line = {b.line: b for b in runnable}
    outputs: dict[int, str] = {}
    for line, code, stdout, stderr in ran.blocks:
        block = by_line[line]
        assert code == 0, (
            f"{block} exited with {code}\n--- block ---\n{block.code}"
            f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
        assert "Traceback" not in stderr, f"{block}:\n{stderr}"
        outputs[line] = stdout
    assert [line for line, *_ in ran.blocks] == [b.line for b in runnable]  # every one ran
    for needle, expected in EXPECTED_OUTPUT:
        owners = [b for b in runnable if needle in b.code]
        assert owners, f"no README block contains {needle!r} any more; update EXPECTED_OUTPUT"
        for block in owners:
            assert expected in outputs[block.line], (
                f"{block}: expected {expected!r} in its output\n{outputs[block.line]}")
    # What the tour wrote, where it said it would.
    tmp = scratch / "tmp"
    decisions = (tmp / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(decisions) == 3 * 3  # 3 prompts x 3 cost weights
    assert (tmp / "curve.png").read_bytes().startswith(PNG_SIGNATURE)
    models = load_weights(tmp / "weights").models
    assert "my-model" in models and "claude-v1" not in models
    assert sorted(p.name for p in scratch.iterdir()) == [".venv", "tests", "tmp"]
    assert ran.git_after == ran.git_before, "running the README's blocks changed the repository"


def test_readme_yaml_blocks_are_valid_configs(tmp_path: Path) -> None:
    blocks = [b for b in readme_blocks(README.read_text(encoding="utf-8")) if b.lang == "yaml"]
    assert blocks, "the README shows no config example"
    for block in blocks:
        path = tmp_path / f"config-{block.line}.yaml"
        path.write_text(block.code, encoding="utf-8")
        # A config that guards the admin routes reads the token from the environment.
        settings = load_settings(path, environ={"SWITCHPOINT_ADMIN_TOKEN": "t" * 32})
        assert settings.cost_weight >= 0, block


def test_skip_marker_without_a_reason_is_refused() -> None:
    text = "<!-- readme-test: skip -->\n```sh\necho hi\n```\n"
    with pytest.raises(AssertionError, match="needs a reason"):
        readme_blocks(text)
    [block] = readme_blocks("<!-- readme-test: skip (needs a key) -->\n\n```sh\necho hi\n```\n")
    assert block.skip_reason == "needs a key" and block.code == "echo hi\n"


if __name__ == "__main__":
    run_readme(Path(sys.argv[1]))
