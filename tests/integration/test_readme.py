"""The examples of README.md and of the pages of ``docs/``, run as a newcomer runs them.

The pages run after README.md, in the order ``docs/README.md`` (the index) links them, which is
the order the text was written in: a page's blocks may use what an earlier page's blocks wrote
(the quick tour makes ``tmp/``, which the later pages write into) and the state of the one
service they all call. Every page of ``docs/`` must be in the index. The deployment guide's
blocks are not run here: they administer a host (root, docker, systemd), and
``tests/integration/test_backup_restore.py`` runs its backup; its config examples and command
lines are checked as the others' are.

Conventions (authors of README.md and docs/: keep to them):

- Every fenced ```sh block runs, in the order of the files, in its own ``bash -e -o pipefail``,
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
- ```yaml blocks are config examples: each must load as a valid switchpoint config. One whose
  introducing line says "these are the defaults" shows only defaults: each value it sets must
  be the one a config that leaves the key out gets.
- The service's route table (``docs/service.md``) names every route as ``METHOD /path`` in its
  first column: it must list the routes of the API document the service serves, all of them.
- A command shown as ``switchpoint SUBCOMMAND ... --option`` must be a subcommand the command
  line has, and each option one that subcommand takes.

Nothing in the repository changes: the test checks ``git status`` before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from switchpoint.cli import build_parser
from switchpoint.config import Settings, load_settings
from switchpoint.server import create_app
from switchpoint.weights import load_weights
from tests.head_start import HeadStart
from tests.integration.servers import ProcessServer, thread_server

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
INDEX = DOCS / "README.md"
SERVICE_PAGE = DOCS / "service.md"
NOT_RUN = {"docs/deployment.md"}  # its blocks administer a host: see the docstring
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
SERVICE = re.compile(r"(?:127\.0\.0\.1|localhost):8080\b")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BLOCK_TIMEOUT_S = 120
MAX_SKIPS = 7  # in all the files run; README.md's own gateway call is the seventh

# Cheap checks that a block's output looks right: (text in the block, text its stdout must hold).
EXPECTED_OUTPUT = [
    ("--models gpt-4-1106-preview,claude-instant-v1 --explain", "Model selected:"),
    ("--input tmp/prompts.jsonl", '"selected_model"'),
    ("switchpoint fit tests/data/routerbench-sample.jsonl", "fitted on 190 records"),
    ("switchpoint eval tests/data/routerbench-sample.jsonl", "zero router"),
    ("switchpoint add-model my-model", '"my-model"'),
    ("from switchpoint import fit, load_router", "Model selected:"),
    ("@register_policy", "cheapest-good "),
    ("/health", '"ready":true'),
    ('"cost_weight": 0.7', '"selected_model"'),
    ('"prefer_healthy": true', '"selected_model"'),
    ("tmp/vector.json", '"embedding_ms":0.0'),
    ("gateway.create_ab_test(", "True 1"),
    ("--success --url", "replaced an earlier outcome"),
    ("hashlib.sha256(sys.argv[1]", '"kind":"decision","teaches_routing":true'),
    ("switchpoint learn --export tmp/learned-weights", "'events': 2"),
    ('.route("Prove the square root of 2 is irrational.").explain()', "Model selected:"),
    ('irrational.", "cost_weight": 0.5}', '"selected_model"'),
]


@dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # of the opening fence, 1-based
    skip_reason: str | None
    intro: str = ""  # the last non-blank line before the block, outside any block
    source: str = "README.md"  # the file, relative to the repository's root

    def __str__(self) -> str:
        return f"{self.source} line {self.line} ({self.lang})"

    @property
    def key(self) -> str:
        return f"{self.source}:{self.line}"


def doc_files() -> list[Path]:
    """README.md, then the pages of docs/ in the order the index links them (each once), then
    any page the index leaves out (which test_every_page_is_in_the_index refuses)."""
    linked = re.findall(r"\]\(([\w-]+\.md)\)", INDEX.read_text(encoding="utf-8"))
    pages = [DOCS / name for name in dict.fromkeys(linked) if name != "README.md"]
    rest = sorted(p for p in DOCS.glob("*.md") if p != INDEX and p not in pages)
    return [README, *pages, *rest]


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def doc_blocks(run_only: bool = False) -> list[Block]:
    """The blocks of every file of :func:`doc_files`, in order; ``run_only``: of the files
    whose blocks run here."""
    return [block for path in doc_files() if not (run_only and relative(path) in NOT_RUN)
            for block in readme_blocks(path.read_text(encoding="utf-8"), relative(path))]


def doc_texts() -> str:
    """Every file of :func:`doc_files`, one after another."""
    return "\n".join(path.read_text(encoding="utf-8") for path in doc_files())


def readme_blocks(text: str, source: str = "README.md") -> list[Block]:
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
                raise AssertionError(f"{source} line {start}: a readme-test skip marker needs a "
                                     "reason, e.g. <!-- readme-test: skip (needs an API key) -->")
        blocks.append(Block(opening.group("lang"), "\n".join(body) + "\n", start + 1, reason,
                            previous, source))
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
    """A folder standing in for a fresh clone's root, as far as the docs' blocks go."""
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
    name = f"{block.source.replace('/', '-').removesuffix('.md')}-{block.line}"
    script = scripts / f"block-{name}.{'py' if block.lang == 'python' else 'sh'}"
    script.write_text(code, encoding="utf-8")
    argv = ([sys.executable, str(script)] if block.lang == "python"
            else ["bash", "-e", "-o", "pipefail", str(script)])
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S, check=False)


@dataclass(frozen=True)
class Ran:
    """What a run of the docs' blocks left: each block run's key (file:line), status, stdout
    and stderr, in order, to the first that failed; the repository's status before and after; and
    the scratch folder the blocks ran in."""

    blocks: list[tuple[str, int, str, str]]
    git_before: str | None
    git_after: str | None
    scratch: Path


def run_readme(folder: Path) -> None:
    """Run the runnable blocks of README.md and docs/ as the test describes, in ``folder``;
    what they did goes to ``folder/ran.json`` (see :class:`Ran`). A head start
    (tests/head_start.py): its blocks embed, fit and serve for seconds on the CPU."""
    runnable = [b for b in doc_blocks(run_only=True)
                if b.lang in ("sh", "python") and b.skip_reason is None]
    scratch = make_scratch(folder)
    scripts = folder / "blocks"
    scripts.mkdir()
    env = block_env()
    before = git_status()
    ran: list[tuple[str, int, str, str]] = []
    service = _Service(scratch / "tmp" / "service-data")
    try:
        for block in runnable:
            proc = run_block(block, scratch, env, service, scripts)
            ran.append((block.key, proc.returncode, proc.stdout, proc.stderr))
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
    return Ran([(key, code, out, err) for key, code, out, err in data["blocks"]],
               data["git_before"], data["git_after"], Path(data["scratch"]))


@pytest.mark.head_start.with_args(readme_run)
def test_readme_blocks_run_as_written(head_start: HeadStart) -> None:
    blocks = doc_blocks(run_only=True)
    runnable = [b for b in blocks if b.lang in ("sh", "python") and b.skip_reason is None]
    skipped = [b for b in blocks if b.skip_reason is not None]
    assert len(skipped) <= MAX_SKIPS, f"skip markers are for exceptions: {skipped}"
    ran = ran_of(head_start)
    scratch = ran.scratch
    by_key = {b.key: b for b in runnable}
    outputs: dict[str, str] = {}
    for key, code, stdout, stderr in ran.blocks:
        block = by_key[key]
        assert code == 0, (
            f"{block} exited with {code}\n--- block ---\n{block.code}"
            f"--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
        assert "Traceback" not in stderr, f"{block}:\n{stderr}"
        outputs[key] = stdout
    assert [key for key, *_ in ran.blocks] == [b.key for b in runnable]  # every one ran
    for needle, expected in EXPECTED_OUTPUT:
        owners = [b for b in runnable if needle in b.code]
        assert owners, f"no block of the docs contains {needle!r} any more; update EXPECTED_OUTPUT"
        for block in owners:
            assert expected in outputs[block.key], (
                f"{block}: expected {expected!r} in its output\n{outputs[block.key]}")
    # What the tour wrote, where it said it would.
    tmp = scratch / "tmp"
    decisions = (tmp / "decisions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(decisions) == 3 * 3  # 3 prompts x 3 cost weights
    assert (tmp / "curve.png").read_bytes().startswith(PNG_SIGNATURE)
    models = load_weights(tmp / "weights").models
    assert "my-model" in models and "claude-v1" not in models
    assert sorted(p.name for p in scratch.iterdir()) == [".venv", "tests", "tmp"]
    assert ran.git_after == ran.git_before, "running the docs' blocks changed the repository"


def test_every_page_is_in_the_index() -> None:
    """A page the index leaves out is found by no reader, and its blocks would run out of
    order."""
    linked = set(re.findall(r"\]\(([\w-]+\.md)\)", INDEX.read_text(encoding="utf-8")))
    pages = {p.name for p in DOCS.glob("*.md")} - {"README.md"}
    assert sorted(pages - linked) == [], "docs/README.md does not link these pages"
    assert sorted(linked - pages) == [], "docs/README.md links pages that do not exist"


def test_readme_yaml_blocks_are_valid_configs(tmp_path: Path) -> None:
    blocks = [b for b in doc_blocks() if b.lang == "yaml"]
    assert blocks, "the docs show no config example"
    for block in blocks:
        path = tmp_path / f"config-{block.key.replace('/', '-').replace(':', '-')}.yaml"
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


def _differences(shown: object, default: object, path: str) -> list[str]:
    """Where ``shown`` (a config example's values) differs from ``default`` (the settings a
    config that leaves every key out gets, as a dict)."""
    if isinstance(shown, dict):
        if not isinstance(default, dict):
            return [f"{path}: a section here, {default!r} by default"]
        return [difference for key, value in shown.items()
                for difference in (_differences(value, default[key], f"{path}.{key}".lstrip("."))
                                   if key in default else [f"{path}.{key}: no such key"])]
    return [] if shown == default else [f"{path}: {shown!r} here, {default!r} by default"]


def test_readme_defaults_are_the_defaults() -> None:
    blocks = [b for b in doc_blocks() if b.lang == "yaml" and "these are the defaults" in b.intro]
    assert len(blocks) >= 2, "the docs no longer show the gateway's defaults and the limits"
    defaults = Settings().model_dump()
    for block in blocks:
        shown = yaml.safe_load(block.code)
        assert isinstance(shown, dict) and shown, block
        assert _differences(shown, defaults, "") == [], block


ROUTE = re.compile(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`?\s]*)(?:\?[^`]*)?`")


def readme_routes(text: str) -> set[tuple[str, str]]:
    """The routes the table of ``docs/service.md`` (``text``) lists, under its title *The
    service*, as (method, path with every path parameter written {})."""
    section = text.split("# The service\n", 1)[1].split("\n# ", 1)[0]
    routes = set()
    for row in section.splitlines():
        if row.startswith("| `"):
            first = row.split(" | ", 1)[0]
            routes |= {(m, re.sub(r"\{[^}]*\}", "{}", path)) for m, path in ROUTE.findall(first)}
    return routes


def test_readme_route_table_lists_the_service_routes(tmp_path: Path) -> None:
    listed = readme_routes(SERVICE_PAGE.read_text(encoding="utf-8"))
    settings = load_settings(None, overrides={"data_dir": str(tmp_path / "data")}, environ={})
    with thread_server(create_app(settings), ready=False) as server:
        r = httpx.get(f"{server.base}/openapi.json", timeout=30)
    assert r.status_code == 200, r.text
    served = {(method.upper(), re.sub(r"\{[^}]*\}", "{}", path))
              for path, operations in r.json()["paths"].items() for method in operations}
    served.add(("GET", "/openapi.json"))  # the document itself, which it does not list
    assert sorted(listed - served) == [], "docs/service.md's route table lists routes not served"
    assert sorted(served - listed) == [], "routes docs/service.md's route table leaves out"


SUBCOMMAND = re.compile(r"^\s*(?:\$\s+)?switchpoint\s+([a-z][a-z-]*)(.*)")
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z-]*)")


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """The options ``parser`` takes, with those of its subcommands' (if it has some)."""
    options = {o for action in parser._actions for o in action.option_strings}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                options |= _options(child)
    return options


def readme_commands(text: str) -> list[tuple[str, str]]:
    """Each command line ``text`` shows that starts ``switchpoint SUBCOMMAND`` (an inline
    code span, a line of a fenced or an indented block), as (subcommand, the rest of it, up to
    where a comment, a pipe or another command takes over)."""
    parts = re.split(r"^```.*$", text, flags=re.MULTILINE)
    lines: list[str] = []
    for i, part in enumerate(parts):
        joined = part.replace("\\\n", " ")
        if i % 2:  # a fenced block
            lines += joined.splitlines()
        else:
            lines += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", part)]
            lines += [line for line in joined.splitlines() if line.startswith("    ")]
    found = []
    for line in lines:
        match = SUBCOMMAND.match(re.split(r"\s#", line)[0])
        if match is None:
            continue
        rest = re.split(r";|&&|\$\(|\)|>", match.group(2))[0]
        kept: list[str] = []
        for alternative in rest.split("|"):  # a synopsis's alternatives, not a pipe
            if kept and not re.match(r"\s*(--|[a-z]+( [A-Z]+)?\s*(\[|$))", alternative):
                break
            kept.append(alternative)
        found.append((match.group(1), "|".join(kept)))
    return found


def test_readme_commands_are_the_command_line() -> None:
    parser = build_parser()
    [subcommands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = readme_commands(doc_texts())
    assert len(commands) > 30, commands
    wrong = []
    for name, rest in commands:
        if name not in subcommands.choices:
            wrong.append(f"switchpoint {name}: no such subcommand")
            continue
        taken = _options(subcommands.choices[name])
        wrong += [f"switchpoint {name} ... {option}: not an option of {name}"
                  for option in OPTION.findall(rest) if option not in taken]
    assert wrong == []



# Error messages the docs quote whole, each beside a command that gives it: (how the quote
# begins, the command's arguments; {bad_config} is a config whose first model has a negative
# price).
QUOTED_ERRORS = [
    ("switchpoint route: error: argument --cost-weight:", ["route", "Hi", "--cost-weight", "abc"]),
    ("switchpoint: error: models[0].input_per_mtok:",
     ["serve", "--config", "{bad_config}", "--port", "0"]),
]


def readme_quote(text: str, start: str) -> str:
    """The one inline code span of ``text`` (outside fenced blocks) that begins with ``start``,
    its whitespace (a line break the paragraph put in it) written as single spaces."""
    parts = re.split(r"^```.*$", text, flags=re.MULTILINE)[::2]  # (the prose between blocks)
    spans = [" ".join(span.split()) for part in parts for span in re.findall(r"`([^`]+)`", part)]
    found = [span for span in spans if span.startswith(start)]
    assert len(found) == 1, f"the docs quote {start!r} {len(found)} times; update QUOTED_ERRORS"
    return found[0]


def test_readme_quoted_errors_are_what_the_commands_say(tmp_path: Path) -> None:
    text = doc_texts()
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("models:\n  - {name: a, profile: claude-v1, input_per_mtok: -1, "
                          "output_per_mtok: 1}\n", encoding="utf-8")
    command = Path(sys.executable).parent / "switchpoint"
    for start, args in QUOTED_ERRORS:
        quote = readme_quote(text, start)
        argv = [str(command), *(a.replace("{bad_config}", str(bad_config)) for a in args)]
        proc = subprocess.run(argv, cwd=tmp_path, env=block_env(), capture_output=True,
                              text=True, timeout=BLOCK_TIMEOUT_S, check=False)
        said = " ".join(proc.stderr.split())
        assert proc.returncode == 2, (argv, proc.returncode, proc.stderr)
        assert quote in said, f"the docs quote {quote!r}; {args[0]} says {said!r}"
    assert not (tmp_path / "data").exists()  # (a start refused for its config makes no state)


if __name__ == "__main__":
    run_readme(Path(sys.argv[1]))
