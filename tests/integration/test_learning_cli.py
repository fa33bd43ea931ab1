"""``switchpoint feedback`` (on the state in data_dir, and against a running service with
--url) and ``switchpoint learn --export`` (a new weights package with the outcomes folded
in)."""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from switchpoint.cli import main
from switchpoint.config import Settings, load_settings
from switchpoint.decision import RoutingDecision, hash_prompt
from switchpoint.errors import GatewayClosedError, StoreError
from switchpoint.gateway import Gateway
from switchpoint.gateway import learning as gateway_learning
from switchpoint.server import create_app
from switchpoint.store import RequestRecord, SQLiteStore
from switchpoint.store.learning import LoggedFeedback
from switchpoint.weights import default_weights_path, load_weights
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, client, config_text
from tests.integration.servers import loopback_socket, thread_server
from tests.unit.test_import_weight import among, loaded_after

PROMPT = "Prove that the square root of 2 is irrational, step by step."


def _decided(gw_fake: FakeProviderProcess, tmp_path: Path, score: float | None = None
             ) -> tuple[Path, Settings, RoutingDecision]:
    """A config in ``tmp_path`` (data_dir ``data`` there) whose gateway made one decision, and
    learned ``score`` for it when given: (the config file, its settings, the decision)."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(tmp_path / "data")), encoding="utf-8")
    settings = load_settings(config, environ={})
    with Gateway(settings, loader=FACTORY, env=KEYS) as gateway:
        gateway.start()
        decision = gateway.route(PROMPT, ["good", "cheap"])
        if score is not None:
            gateway.report_outcome(decision.decision_id, score)
    return config, settings, decision


def test_feedback_and_learn_on_the_state_in_data_dir_and_over_http(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    config, settings, decision = _decided(gw_fake, tmp_path)
    capsys.readouterr()

    # Bad input: exit 2, a message naming what is wrong, nothing written.
    with pytest.raises(SystemExit) as exited:  # (argparse: --score's type refuses it)
        main(["feedback", decision.decision_id, "--score", "1.5", "--config", str(config)])
    assert exited.value.code == 2
    assert ('argument --score: "1.5" is out of range; give a number from 0 to 1 (1 = best)'
            in capsys.readouterr().err)
    assert main(["feedback", "0" * 32, "--success", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "no decision" in err and "Traceback" not in err
    # It names the state it searched, the usual mistake being another data_dir.
    assert f"searched the state in {str((tmp_path / 'data').resolve())!r}" in err, err
    assert main(["feedback", decision.decision_id, "--config", str(config)]) == 2
    assert "exactly one of --score" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["feedback", decision.decision_id, "--score", "0.5", "--cost", "-1", "--config",
              str(config)])
    assert exited.value.code == 2
    assert ('argument --cost: "-1" is negative; give what the answer cost, a number from '
            "0 to 1,000\n" in capsys.readouterr().err)  # (its unit: see its help)
    assert main(["learn", "--export", str(tmp_path / "nothing"), "--config", str(config)]) == 2
    assert ('tenant "default" has reported no outcomes; there is nothing to fold into the '
            "weights; report how answers went by their decision id first (POST /v1/feedback, "
            "switchpoint feedback or report_outcome)") in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()

    assert main(["feedback", decision.decision_id, "--score", "0", "--comment", "wrong",
                 "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["model"], out["quality"], out["replaced"], out["kind"]) == (
        decision.selected_model, 0.0, False, "decision")
    # It serves no chat: no warning about what would make chat requests fail (unset keys).
    assert "is not set; calls to it fail" not in caplog.text

    export = tmp_path / "learned"
    assert main(["learn", "--export", str(export), "--config", str(config), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    package = load_weights(export)
    assert package.weights_id == result["weights_id"]
    (learned,) = package.provenance["learned"]
    assert (learned["tenant"], learned["events"]) == ("default", 1)
    # Only an earlier package is replaced: never the state in data_dir, nor the config file.
    db = tmp_path / "data" / "switchpoint.db"
    kept = {p: p.read_bytes() for p in (db, config)}
    for target, fix in ((tmp_path / "data", "choose a folder outside the data_dir"),
                        (config, "choose a new or empty directory")):
        assert main(["learn", "--export", str(target), "--config", str(config)]) == 2
        assert f"{str(target)!r}" in (err := capsys.readouterr().err) and "Traceback" not in err
        assert fix in err, err
    assert {p: p.read_bytes() for p in (db, config)} == kept
    assert main(["learn", "--export", str(export), "--config", str(config)]) == 0
    assert load_weights(export).weights_id == result["weights_id"]
    capsys.readouterr()

    # A running service on the same data_dir replayed the CLI's outcome; --url teaches it.
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        assert main(["feedback", decision.decision_id, "--score", "0.5", "--url",
                     server.base, "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert (answer["replaced"], answer["previous_quality"]) == (True, 0.0)
        assert main(["feedback", "f" * 32, "--score", "0.5", "--url", server.base]) == 2
        assert "404" in capsys.readouterr().err
        # A cost given in USD is taken as the answer's cost.
        assert main(["feedback", decision.decision_id, "--score", "0.5", "--cost", "0.01",
                     "--url", server.base, "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert (answer["cost"], answer["cost_from"], answer["cost_unit"]) == (
            0.01, "feedback", "usd")  # (the catalog prices every model)
        assert main(["feedback", decision.decision_id, "--score", "0.5", "--cost", "0.02",
                     "--url", server.base]) == 0
        assert "replaced an earlier outcome" in (said := capsys.readouterr().out)
        assert "at $0.020000 (as given)" in said
        # Feedback on a request that named its model teaches no routing, and says so.
        named = httpx.post(f"{server.base}/v1/chat/completions", timeout=30, json={
            "model": "cheap", "messages": [{"role": "user", "content": PROMPT}]})
        assert named.status_code == 200, named.text
        request_id = named.headers["x-switchpoint-decision-id"]
        assert main(["feedback", request_id, "--score", "0.5", "--url", server.base]) == 0
        said, note = capsys.readouterr()
        assert "learned: cheap scored 0.5" in said and "(tenant default, model)" in said
        assert "does not teach routing" in note


def test_without_prices_a_cost_given_as_feedback_is_said_in_the_weights_units_not_dollars(
        gw_fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The router then takes the cost as it is, in its weights' own cost units: feedback's
    printed answer, its ``cost_unit`` and the API's description of ``cost`` say so, where
    they called it US dollars."""
    text = re.sub(r"input_per_mtok: [\d.]+,\s*output_per_mtok: [\d.]+,\s*", "",
                  config_text(gw_fake, str(tmp_path / "data")))
    text = re.sub(r"  - \{name: fresh[^\n]*\n", "", text)  # (no profile: routed by its price)
    assert "per_mtok" not in text and "fresh" not in text, text
    config = tmp_path / "switchpoint.yaml"
    config.write_text(text, encoding="utf-8")
    settings = load_settings(config, environ={})
    with Gateway(settings, loader=FACTORY, env=KEYS) as gateway:
        gateway.start()
        decision = gateway.route(PROMPT, ["good", "cheap"]).decision_id
    assert main(["feedback", decision, "--score", "0.5", "--cost", "0.02", "--config",
                 str(config)]) == 0
    said = capsys.readouterr().out
    assert "scored 0.5 at 0.020000 in the weights' cost units (as given)" in said, said
    assert "$" not in said, said
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        # (a tiny cost in the weights' units keeps its digits: ten decimal places, the
        # dollars' rule, made it 0)
        assert main(["feedback", decision, "--score", "0.5", "--cost", "3.25e-13", "--url",
                     server.base, "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert (answer["cost"], answer["cost_from"], answer["cost_unit"]) == (
            3.25e-13, "feedback", "weights"), answer
        spec = httpx.get(f"{server.base}/openapi.json", timeout=10).json()
    schemas = spec["components"]["schemas"]
    asked = spec["paths"]["/v1/feedback"]["post"]["requestBody"]["content"]["application/json"]
    described = [asked["schema"]["properties"]["cost"]["description"],
                 schemas["FeedbackResponse"]["properties"]["cost"]["description"],
                 schemas["FeedbackResponse"]["properties"]["cost_unit"]["description"]]
    assert "(USD)" not in " ".join(described), described
    assert "else in the weights' cost units" in described[0], described
    assert "weights (the weights' cost units" in described[2], described


def _auto_chat(server: Any, prompt: str) -> str:
    """The decision id of a chat request routed by ``auto`` through the official client, in a
    session of its own (so no earlier answer pins it)."""
    raw = client(server).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": prompt}],
        extra_headers={"x-session-id": uuid.uuid4().hex})
    return str(raw.headers["x-switchpoint-decision-id"])


def _feedback_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM feedback").fetchone()[0])


def test_feedback_by_prompt_hash_offline_after_a_service_stopped_and_over_http(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--prompt-hash`` names the latest decision routed on that prompt, in place of its id:
    offline, from the store a stopped service left (the decisions it made are found by their
    prompt's hash as by their ids), and with --url from the running service; a decision id
    and a hash together, or neither, are refused naming them, changing nothing."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(tmp_path / "data")) + "tenants:\n  acme: {}\n",
                      encoding="utf-8")
    settings = load_settings(config, environ={})
    hashed = hash_prompt(PROMPT)
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        first = _auto_chat(server, PROMPT)
        latest = _auto_chat(server, PROMPT)
        other = _auto_chat(server, "Write a haiku about autumn leaves.")
    assert len({first, latest, other}) == 3
    db = tmp_path / "data" / "switchpoint.db"
    capsys.readouterr()

    offline = ["--config", str(config)]
    for argv, needle in [
            (["--prompt-hash", hashed, "--success", "--tenant", "nope"],
             '--tenant: "nope" is not in the configuration'),
            ([first, "--prompt-hash", hashed, "--success"],
             "--prompt-hash: give a decision id or --prompt-hash, not both"),
            (["--success"], "decision_id: is needed, or --prompt-hash HASH in its place"),
            (["--prompt-hash", "F" * 64, "--success"],
             '--prompt-hash: holds "F" (character 1)'),
            (["--prompt-hash", hashed[:63], "--success"], "--prompt-hash: is 63 characters"),
            (["--prompt-hash", "0" * 64, "--success"],
             f'--prompt-hash: no remembered decision has prompt hash "{"0" * 64}"'),
            (["--prompt-hash", hashed, "--success", "--tenant", "acme"],  # (default's)
             "--prompt-hash: no remembered decision has prompt hash")]:
        assert main(["feedback", *argv, *offline]) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
    assert "searched the state in" in err  # (a hash not found says where it looked)
    assert _feedback_rows(db) == 0

    assert main(["feedback", "--prompt-hash", hashed, "--score", "0.25", *offline,
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["decision_id"], out["quality"], out["kind"], out["replaced"]) == (
        latest, 0.25, "decision", False)
    assert main(["feedback", "--prompt-hash", hashed, "--score", "0.5", *offline]) == 0
    said = capsys.readouterr().out
    assert "replaced an earlier outcome: " in said and f"for decision {latest} " in said, said
    assert _feedback_rows(db) == 2

    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        url = ["--url", server.base]
        assert main(["feedback", "--prompt-hash", hashed, "--score", "1", *url,
                     "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert (answer["decision_id"], answer["replaced"], answer["previous_quality"]) == (
            latest, True, 0.5)
        assert main(["feedback", latest, "--prompt-hash", hashed, "--success", *url]) == 2
        assert "--prompt-hash: give a decision id or --prompt-hash, not both" in (
            capsys.readouterr().err)
        assert main(["feedback", "--prompt-hash", "0" * 64, "--success", *url]) == 2
        err = capsys.readouterr().err
        assert "answered 404" in err and "no remembered decision has prompt hash" in err, err
        # A decision made since is the latest of its prompt.
        since = _auto_chat(server, PROMPT)
        assert main(["feedback", "--prompt-hash", hashed, "--failure", *url, "--json"]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert (answer["decision_id"], answer["quality"], answer["replaced"]) == (
            since, 0.0, False)
    assert _feedback_rows(db) == 4


def test_offline_feedback_on_an_outcome_retention_pruned_says_it_replaced_it_as_http_does(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Once retention pruned a decision's outcome (the learning checkpoint alone holds it), a
    repeat given offline says it replaced it, with the quality it replaced, as the service's
    answer to the same repeat does, and not that it was learned anew."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(tmp_path / "data")), encoding="utf-8")
    settings = load_settings(config, environ={})
    with Gateway(settings, loader=FACTORY, env=KEYS) as gateway:
        gateway.start()
        first = gateway.route(PROMPT, ["good", "cheap"]).decision_id
        gateway.report_outcome(first, 0.3)
        gateway.report_outcome(gateway.route("Write a haiku.", ["good", "cheap"]).decision_id,
                               0.5)
        assert gateway.learning.checkpoint() is not None
        time.sleep(0.05)
        gateway._housekeeping.run(False, 1e-9)  # the service's retention: every row it may
        reader = gateway.learning.reader
        assert reader is not None and reader.first_feedback() == 2  # first's row went
    capsys.readouterr()
    assert main(["feedback", first, "--score", "0.9", "--config", str(config)]) == 0
    said = capsys.readouterr().out
    assert said.startswith("replaced an earlier outcome: "), said
    assert main(["feedback", first, "--score", "0.7", "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["replaced"], out["previous_quality"]) == (True, 0.9)


def test_offline_feedback_without_the_config_is_refused_before_it_writes(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Given the data_dir alone, the command's catalog is the weights' own models, which do not
    hold the model that answered: the outcome would be kept as a quality observation teaching
    no routing. It is refused naming --config, the feedback log unchanged, by id and by
    prompt hash alike; the repeat with --config teaches routing."""
    monkeypatch.delenv("SWITCHPOINT_CONFIG", raising=False)
    config, _, decision = _decided(gw_fake, tmp_path)
    capsys.readouterr()
    data = ["--data-dir", str(tmp_path / "data")]
    db = tmp_path / "data" / "switchpoint.db"
    before = _feedback_rows(db)
    for named in ([decision.decision_id], ["--prompt-hash", decision.prompt_hash]):
        assert main(["feedback", *named, "--score", "0.5", *data, "--json"]) == 2
        err = capsys.readouterr().err
        assert f'--config: "{decision.selected_model}", the model that answered this ' in err
        assert "no config was read" in err and "$SWITCHPOINT_CONFIG" in err, err
        assert "nothing was kept" in err and "Traceback" not in err, err
        assert _feedback_rows(db) == before
    assert main(["feedback", decision.decision_id, "--score", "0.75", "--config", str(config),
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["kind"], out["teaches_routing"], out["replaced"]) == ("decision", True, False)
    assert _feedback_rows(db) == before + 1


def test_offline_feedback_without_the_config_on_a_tenants_decision_says_to_give_it(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A decision of a configured tenant, given the data_dir alone: no config was read, so no
    tenant is configured; the refusal names --config (it said a reload had taken the tenant
    out of the configuration, and to restore it), and nothing is written."""
    monkeypatch.delenv("SWITCHPOINT_CONFIG", raising=False)
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(tmp_path / "data")) + "tenants:\n  acme: {}\n",
                      encoding="utf-8")
    with Gateway(load_settings(config, environ={}), loader=FACTORY, env=KEYS) as gateway:
        gateway.start()
        decision = gateway.route(PROMPT, ["good", "cheap"], tenant="acme")
    capsys.readouterr()
    db = tmp_path / "data" / "switchpoint.db"
    before = _feedback_rows(db)
    assert main(["feedback", decision.decision_id, "--score", "0.5",
                 "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert '--config: this decision was made for tenant "acme", and no config was read' in err
    assert "$SWITCHPOINT_CONFIG" in err and "reload" not in err and "Traceback" not in err, err
    assert _feedback_rows(db) == before
    assert main(["feedback", decision.decision_id, "--score", "0.5", "--config",
                 str(config)]) == 0
    assert _feedback_rows(db) == before + 1


def test_learn_with_nothing_new_to_fold_in_says_why(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config, _, _ = _decided(gw_fake, tmp_path, score=0.4)
    export = tmp_path / "learned"
    assert main(["learn", "--export", str(export), "--config", str(config)]) == 0
    capsys.readouterr()
    assert main(["info", "--weights", str(export)]) == 0
    assert "learned   1 outcome(s) of tenant default at " in capsys.readouterr().out
    # Serve the exported weights: the outcome they hold is not counted again ...
    config.write_text(config.read_text(encoding="utf-8") + f"weights: {export}\n",
                      encoding="utf-8")
    # ... and feedback on a request that named its model is a quality observation only.
    with Gateway(load_settings(config, environ={}), loader=FACTORY, env=KEYS) as gateway:
        gateway.start()
        reply = gateway.complete([{"role": "user", "content": PROMPT}], model="cheap")
        outcome = gateway.report_outcome(reply.switchpoint.request_id, 0.9)
        assert not outcome.to_dict()["teaches_routing"]
    capsys.readouterr()
    again = tmp_path / "again"
    assert main(["learn", "--export", str(again), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "has reported no outcomes" not in err and "Traceback" not in err, err
    assert "1 feedback row(s) up to feedback log position 1 are in the weights already" in err
    assert "the 1 since are quality observations of a model a request named" in err
    assert "POST /v1/route" in err
    assert not again.exists()


def test_learn_from_quality_observations_only_says_they_teach_no_routing(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    config, settings, _ = _decided(gw_fake, tmp_path)
    with Gateway(settings, loader=FACTORY, env=KEYS) as gateway:
        gateway.start()
        reply = gateway.complete([{"role": "user", "content": PROMPT}], model="good")
        gateway.report_outcome(reply.switchpoint.request_id, success=True)
    capsys.readouterr()
    assert main(["learn", "--export", str(tmp_path / "out"), "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "its 1 outcome(s) are quality observations of a model a request named" in err, err
    assert "in the weights already" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "needle"), [
    (["--score", "0.5", "--cost", "inf"], '--cost: "inf" is not a finite number (it is NaN or '
                                          "an infinity); give what the answer cost"),
    (["--score", "0.5", "--cost", "1e-400"], '--cost: "1e-400" is too small a number to be told'),
    (["--score", "1e-400"], '--score: "1e-400" is too small a number to be told from 0'),
    (["--score", "0.5", "--comment", "x" * 100_000],
     "--comment: must have at most 2,000 characters, got 100,000"),
    (["--score", "0.5", "--comment", "ok\x1b]0;owned\x07"],
     "--comment: holds U+001B (character 3)"),
    (["--success", "--tenant", " "], "--tenant: must be a non-empty tenant name"),
    (["--success"], "does not exist, so it holds no decision"),
])
def test_offline_feedback_refused_creates_no_data_dir(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        needle: str) -> None:
    data_dir = tmp_path / "new" / "dir"
    try:
        code = main(["feedback", "abc", *argv, "--data-dir", str(data_dir)])
    except SystemExit as exited:  # (argparse: a number option's type refused it)
        code = int(str(exited.code))
    assert code == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize(("url", "needle"), [
    ("http://admin:s3cret-passw0rd@127.0.0.1:9", "--url: holds a user name or password"),
    ("http://[::zz", "--url: is not a URL"),
])
def test_feedback_to_a_url_with_a_password_is_refused_without_repeating_it(
        capsys: pytest.CaptureFixture[str], url: str, needle: str) -> None:
    # The URL's credentials were sent in place of --api-key, and echoed in the errors.
    assert main(["feedback", "abc", "--success", "--url", url]) == 2
    err = capsys.readouterr().err
    assert needle in err and "s3cret-passw0rd" not in err, err


@pytest.mark.parametrize(("comment", "needle"), [
    ("x" * 3_000, "--comment: must have at most 2,000 characters, got 3,000"),
    ("ok\x1b]0;owned\x07", "--comment: holds U+001B (character 3)"),
])
def test_feedback_to_a_url_refuses_a_comment_before_sending_anything(
        capsys: pytest.CaptureFixture[str], comment: str, needle: str) -> None:
    # It was sent, and the service's 400 reported, naming the request's field, comment.
    with contextlib.closing(loopback_socket()) as listener:
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        assert main(["feedback", "abc", "--success", "--comment", comment,
                     "--url", f"http://127.0.0.1:{port}"]) == 2
        with pytest.raises(BlockingIOError):  # (no connection came: nothing was sent)
            listener.accept()
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "localhost:8080", "ftp://127.0.0.1:9"])
def test_feedback_to_a_url_without_http_says_to_add_it(
        capsys: pytest.CaptureFixture[str], url: str) -> None:
    assert main(["feedback", "abc", "--success", "--url", url]) == 2
    err = capsys.readouterr().err
    assert "--url: must start with http:// or https://" in err, err
    assert "e.g. http://127.0.0.1:8080" in err and "cannot reach" not in err


def test_feedback_to_a_url_nothing_serves_says_to_start_the_service_or_fix_the_port(
        capsys: pytest.CaptureFixture[str]) -> None:
    # A port held by a socket that does not listen: a connection to it is refused.
    with contextlib.closing(loopback_socket()) as held:
        port = held.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        assert main(["feedback", "abc", "--success", "--url", url]) == 2
    err = capsys.readouterr().err
    assert f"--url: cannot reach '{url}/v1/feedback'" in err, err
    assert "is the service running there? start it (switchpoint serve)" in err, err
    assert "the address and port it serves on" in err and "Traceback" not in err, err


def test_feedback_to_a_url_that_never_answers_says_it_took_the_request_and_how_long_it_waited(
        capsys: pytest.CaptureFixture[str]) -> None:
    # A socket that takes the connection and never answers: it was "cannot reach", as if
    # nothing listened there, after 30 s that no option could change.
    with contextlib.closing(loopback_socket()) as listener:
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        assert main(["feedback", "abc", "--success", "--url", url, "--timeout", "0.5"]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"switchpoint: error: --url: '{url}/v1/feedback' took the request "
                          "but sent no answer within 0.5 s; is --url the switchpoint "
                          "service"), err
    assert "or give a larger --timeout" in err and "cannot reach" not in err, err
    assert out == "" and "Traceback" not in err


def test_feedback_to_a_host_name_that_does_not_resolve_says_so(
        capsys: pytest.CaptureFixture[str]) -> None:
    # (.invalid is reserved: no name in it resolves, with or without a network)
    url = "http://host.invalid:8080"
    assert main(["feedback", "abc", "--success", "--url", url, "--timeout", "5"]) == 2
    err = capsys.readouterr().err
    assert (f"--url: cannot reach '{url}/v1/feedback': the host name \"host.invalid\" does not "
            "resolve (") in err, err
    assert "check its spelling and this machine's DNS, or give the service's address" in err
    assert "is the service running there" not in err and "Traceback" not in err


@pytest.mark.parametrize(("argv", "needle"), [
    (["--timeout", "0"], '--timeout: "0" is out of range; give a number of seconds more than 0 '
                         "and at most 600"),
    (["--timeout", "601"], '--timeout: "601" is out of range'),
    (["--timeout", "-inf"], '--timeout: "-inf" is not a finite number'),
    (["--timeout", "nan"], '--timeout: "nan" is not a finite number'),
])
def test_feedback_s_timeout_is_bounded(capsys: pytest.CaptureFixture[str], argv: list[str],
                                       needle: str) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["feedback", "abc", "--success", "--url", "http://127.0.0.1:9", *argv])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and f"argument {needle}" in err, err


def test_feedback_s_timeout_applies_only_with_a_url(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "data"
    assert main(["feedback", "abc", "--success", "--timeout", "5", "--data-dir",
                 str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert "--timeout: applies only with --url" in err, err
    assert not data_dir.exists()


POSTED: list[str] = []  # (the paths NotTheService was sent, in order)


class NotTheService(http.server.BaseHTTPRequestHandler):
    """Something else listening where --url points: its answer is named by the path."""

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        POSTED.append(self.path)
        kind = self.path.split("/")[1]
        status, body = {
            "string-error": (500, b'{"error": "boom"}'),
            "a-list": (200, b"[1, 2]"),
            "nested": (200, b"[" * 100_000 + b"]" * 100_000),
            "long-message": (400, b'{"error": {"message": "' + b"x" * 5000 + b'"}}'),
            "escape": (400, b'{"error": {"message": "\\u001b[2Jcleared"}}'),
            "escaped-success": (200, b'{"model": "m\\u001b[31m", "quality": 1, "replaced": '
                                     b'false, "decision_id": "abc", "tenant": "default", '
                                     b'"kind": "decision"}'),
            "nonsense": (200, b'{"hello": "world"}'),
            "some-fields": (200, b'{"model": "m", "quality": 1}'),
            "bad-quality": (200, b'{"model": "m", "quality": "high", "replaced": false, '
                                 b'"decision_id": "abc", "tenant": "default", '
                                 b'"kind": "decision"}'),
            "bad-replaced": (200, b'{"model": "m", "quality": 1, "replaced": "no", '
                                  b'"decision_id": "abc", "tenant": "default", '
                                  b'"kind": "decision"}'),
            "unauthorized": (401, b'{"error": {"code": "unauthorized", "message": '
                                  b'"this gateway needs a client key"}}'),
        }.get(kind, (200, b""))
        self.send_response(status)
        self.send_header("content-type", "application/json")
        if kind == "endless":  # an answer that never ends
            self.end_headers()
            with contextlib.suppress(OSError):
                while True:
                    self.wfile.write(b" " * 65536)
            return
        if kind == "trickle":  # an answer that never ends, a byte at a time
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(400):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    time.sleep(0.05)
            return
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def not_the_service() -> Iterator[str]:
    # Bound here and handed over: no other process can take the port meanwhile.
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotTheService,
                                             bind_and_activate=False)
    server.socket.close()
    server.socket = loopback_socket()
    server.server_address = server.socket.getsockname()
    server.server_activate()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("kind", "needle"), [
    ("string-error", 'answered 500: {"error": "boom"}'),
    ("a-list", 'answered 200 with "[1, 2]", not the service\'s answer to feedback'),
    ("nested", "not the service's answer to feedback (a JSON object)"),
    ("long-message", "answered 400: " + "x" * 497 + "..."),
    ("escape", "answered 400: \\u001b[2Jcleared"),
    ("endless", "answered 200 with more than 1,048,576 bytes"),
    ("nonsense", "did not answer as a switchpoint feedback endpoint: its answer has no "
                 "decision_id, tenant, model, quality, replaced, kind"),
    ("some-fields", "feedback endpoint: its answer has no decision_id, tenant, replaced, kind"),
    ("bad-quality", 'feedback endpoint: its quality is "high", not a number from 0 to 1'),
    ("bad-replaced", 'feedback endpoint: its replaced is "no", not true or false'),
])
def test_feedback_to_a_url_that_is_not_the_service_says_so(
        not_the_service: str, capsys: pytest.CaptureFixture[str], kind: str,
        needle: str) -> None:
    for extra in ([], ["--json"]):  # (nothing printed as learned, in either form)
        assert main(["feedback", "abc", "--success", "--url", f"{not_the_service}/{kind}",
                     *extra]) == 2
        out, err = capsys.readouterr()
        assert err.startswith("switchpoint: error: ") and needle in err, err[:1000]
        assert "Traceback" not in err and len(err) < 1500 and out == ""


def test_feedback_to_a_url_that_trickles_its_answer_stops_at_the_deadline(
        not_the_service: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Each read waited up to 30 s, so a byte every few seconds held the command for ever.
    from switchpoint.learning import cli as learning_cli
    monkeypatch.setattr(learning_cli, "ANSWER_DEADLINE_S", 0.5)
    started = time.monotonic()
    assert main(["feedback", "abc", "--success", "--url", f"{not_the_service}/trickle"]) == 2
    out, err = capsys.readouterr()
    assert "answered 200 but its answer did not arrive whole within 0.5 s" in err, err
    assert "is --url the switchpoint service?" in err and out == ""
    assert time.monotonic() - started < 15  # (the trickle lasts 20 s)


@pytest.mark.parametrize("key", ["sp-0123456789_caf\u00e9-secret", "sp-one\nX-Two: secret",
                                 "sp-tab\tsecret"])
@pytest.mark.parametrize("source", ["--api-key", "$SWITCHPOINT_API_KEY"])
def test_feedback_with_a_key_no_header_can_carry_is_refused_naming_where_it_came_from(
        not_the_service: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, key: str, source: str) -> None:
    # A key of a character beyond ASCII was a UnicodeEncodeError's traceback.
    given = ["--api-key", key] if source == "--api-key" else []
    if source != "--api-key":
        monkeypatch.setenv("SWITCHPOINT_API_KEY", key)
    sent = len(POSTED)
    assert main(["feedback", "abc", "--success", "--url", f"{not_the_service}/a-list",
                 *given]) == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"switchpoint: error: {source}: the key holds U+"), err
    assert "which a request header cannot carry" in err and "secret" not in err
    assert "Traceback" not in err and out == "" and len(POSTED) == sent


def test_feedback_to_a_url_prints_what_it_answered_escaped(
        not_the_service: str, capsys: pytest.CaptureFixture[str]) -> None:
    # An answer's text goes to the terminal escaped: whatever --url names cannot send it
    # control sequences.
    assert main(["feedback", "abc", "--success", "--url",
                 f"{not_the_service}/escaped-success"]) == 0
    out = capsys.readouterr().out
    assert "learned: m\\u001b[31m scored 1" in out and "\x1b" not in out, out


def test_feedback_refused_for_want_of_a_key_says_how_to_give_this_command_one(
        not_the_service: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHPOINT_API_KEY", raising=False)
    url = f"{not_the_service}/unauthorized"
    assert main(["feedback", "abc", "--success", "--url", url]) == 2
    err = capsys.readouterr().err
    assert "answered 401: this gateway needs a client key" in err
    assert "--api-key or in $SWITCHPOINT_API_KEY" in err
    # With a key given, the service's own reason (a revoked key, say) is the whole message.
    assert main(["feedback", "abc", "--success", "--url", url, "--api-key", "sp-x"]) == 2
    assert "--api-key" not in capsys.readouterr().err


@pytest.mark.parametrize("tenant", [[], ["--tenant", "acme"]])
def test_learn_from_a_data_dir_that_does_not_exist_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], tenant: list[str]) -> None:
    # With a tenant the logs there would name, it was told the tenant was unknown.
    assert main(["learn", "--export", str(tmp_path / "w"), "--data-dir",
                 str(tmp_path / "new" / "dir"), *tenant]) == 2
    err = capsys.readouterr().err
    assert "--data-dir:" in err and "does not exist, so it holds no outcomes" in err
    assert "--tenant" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("argv", "needle"), [
    (["feedback", "abc", "--success"], "holds no switchpoint.db"),
    (["learn", "--export", "{tmp}/w"], "holds no switchpoint.db"),
    (["learn", "--export", "{tmp}/w", "--tenant", "nope"], "holds no switchpoint.db"),
])
def test_refused_on_an_empty_data_dir_writes_nothing_there(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
        needle: str) -> None:
    # A folder no service has run on: refused before the state is opened, so no database,
    # no session pins, no export appear.
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main([*argv, "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err, err
    assert list(data_dir.iterdir()) == []
    assert list(tmp_path.iterdir()) == [data_dir]


def test_learn_exports_nowhere_in_the_data_dir(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A weights package written into the data_dir would be mixed with the service's state:
    the data_dir itself, a folder inside it, or either reached through a link, is refused
    naming --export, and nothing is written."""
    config, _, _ = _decided(gw_fake, tmp_path, score=0.0)
    data = tmp_path / "data"
    (data / "empty").mkdir()
    (tmp_path / "link").symlink_to(data)
    state, names = _tree(data), sorted(p.name for p in tmp_path.iterdir())
    paths = sorted(p.relative_to(data).as_posix() for p in data.rglob("*"))
    assert "empty" in paths
    capsys.readouterr()
    for target, where in ((data, "is the data_dir"), (data / "empty", "is inside the data_dir"),
                          (data / "learned", "is inside the data_dir"),
                          (data / "a" / "b", "is inside the data_dir"),
                          (tmp_path / "link", "is the data_dir"),
                          (tmp_path / "link" / "learned", "is inside the data_dir")):
        assert main(["learn", "--export", str(target), "--config", str(config)]) == 2, target
        err = capsys.readouterr().err
        assert err == (f"switchpoint: error: --export: {str(target)!r} {where} ({str(data)!r}), "
                       "where the service keeps its state: the weights would be mixed with it; "
                       "choose a folder outside the data_dir, e.g. --export "
                       "./learned-weights\n"), err
    # The same through a data_dir given by a link.
    assert main(["learn", "--export", str(data / "learned"), "--data-dir",
                 str(tmp_path / "link")]) == 2
    assert "is inside the data_dir" in capsys.readouterr().err
    assert _tree(data) == state
    assert sorted(p.relative_to(data).as_posix() for p in data.rglob("*")) == paths
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    # A folder beside it, whose name only begins as the data_dir's, is outside it.
    assert main(["learn", "--export", str(tmp_path / "data-learned"), "--config",
                 str(config)]) == 0
    assert load_weights(tmp_path / "data-learned").provenance["learned"][-1]["outcomes"] == 1


def test_learn_to_a_name_too_long_is_a_clean_error(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / ("w" * 300)
    assert main(["learn", "--export", str(target), "--data-dir", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "File name too long" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_offline_feedback_takes_up_the_outcomes_of_its_decision_alone(
        gw_fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """switchpoint feedback reads none of the feedback log but the rows of the decision it is
    given (the rest are the service's to take up: at 100,000 outcomes a replay took 25 s and
    350 MB more) and writes no learning checkpoint, yet answers as a gateway that
    replayed the log would: a repeat names the outcome the learned router held, which the
    decision's last row (a quality observation of a model without a profile, which the knn
    policy does not learn) is not."""
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(tmp_path / "data")) + "policy: knn\n",
                      encoding="utf-8")
    settings = load_settings(config, environ={})
    with Gateway(settings, loader=FACTORY, env=KEYS) as gateway:
        gateway.start()
        decision, other = (gateway.route(prompt, ["good", "cheap"])
                           for prompt in (PROMPT, "Write a haiku about rain."))
        gateway.report_outcome(decision.decision_id, 0.2, model="cheap")
        gateway.report_outcome(other.decision_id, 0.7)
        gateway.report_outcome(decision.decision_id, 0.9, model="fresh")  # (an observation)
    data = tmp_path / "data"
    (data / "learning.checkpoint").unlink()
    taken: list[str] = []
    replay = gateway_learning.LiveLearning.replay

    def counted(self: gateway_learning.LiveLearning,
                rows: Iterator[LoggedFeedback]) -> None:
        def seen() -> Iterator[LoggedFeedback]:
            for row in rows:
                taken.append(row.event.decision_id)
                yield row
        replay(self, seen())

    monkeypatch.setattr(gateway_learning.LiveLearning, "replay", counted)
    capsys.readouterr()
    assert main(["feedback", decision.decision_id, "--score", "0.5", "--model", "cheap",
                 "--config", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["replaced"], out["previous_quality"]) == (True, 0.9)
    assert "the learned router's outcome about gpt-3.5-turbo-1106 (quality 0.2)" in out.get(
        "note", "")
    assert taken == [decision.decision_id] * 2  # its two rows, none of the other decision
    assert not (data / "learning.checkpoint").exists()


def test_offline_feedback_loads_no_http_client_and_no_web_framework(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A gateway that calls no model makes no pool of upstream connections: switchpoint
    feedback on the state in data_dir, run as a command is, imports the engine it learns
    through but neither httpx (nor the model adapters) nor the server."""
    config, _, decision = _decided(gw_fake, tmp_path)
    loaded = loaded_after(
        "from switchpoint.cli import main\n"
        f"assert main(['feedback', {decision.decision_id!r}, '--score', '1', '--config', "
        f"{str(config)!r}]) == 0")
    assert "switchpoint.gateway.engine" in loaded
    assert among(loaded, ("fastapi", "httpx", "switchpoint.gateway.providers.anthropic",
                          "switchpoint.gateway.providers.openai", "switchpoint.server",
                          "uvicorn")) == []


def test_learn_leaves_the_data_dir_as_it_found_it_refused_or_not(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """learn only reads the data_dir (its package goes to --export): refused for want of
    anything to fold, or exporting, it leaves every file there with its bytes and adds none
    (no session pins' file, no learning checkpoint, no SQLite side file), where opening the
    store for writing rewrote its header."""
    config, _, decision = _decided(gw_fake, tmp_path)
    data = tmp_path / "data"
    (data / "sessions.db").unlink()  # (none is made)
    kept = _tree(data)
    capsys.readouterr()
    assert main(["learn", "--export", str(tmp_path / "w"), "--config", str(config)]) == 2
    assert "there is nothing to fold into the weights" in capsys.readouterr().err
    assert _tree(data) == kept
    assert not (tmp_path / "w").exists()

    assert main(["feedback", decision.decision_id, "--score", "0.5", "--config",
                 str(config)]) == 0
    (data / "sessions.db").unlink()
    assert not (data / "learning.checkpoint").exists()  # (feedback writes none, nor learn)
    kept = _tree(data)
    assert main(["learn", "--export", str(tmp_path / "w"), "--config", str(config)]) == 0
    assert load_weights(tmp_path / "w").provenance["learned"][-1]["outcomes"] == 1
    assert _tree(data) == kept


def test_a_gateway_that_only_reads_refuses_what_it_would_keep_naming_reads_only(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A gateway built with reads_only=True (what learn opens) refuses feedback, scores and
    experiments, each of which it would have to write, saying it only reads data_dir, and
    leaves the files as they were: it said "the gateway is closed ... start it again
    (Gateway.start)" of a gateway open and started."""
    _, settings, decision = _decided(gw_fake, tmp_path)
    data = tmp_path / "data"
    kept = _tree(data)
    with Gateway(settings, loader=FACTORY, env=KEYS, reads_only=True) as gateway:
        gateway.start()
        for refused in (lambda: gateway.report_outcome(decision.decision_id, 0.5),
                        lambda: gateway.create_ab_test("cheaper", {"cost_weight": 0.1},
                                                       {"cost_weight": 2.0})):
            with pytest.raises(StoreError) as caught:
                refused()
            message = str(caught.value)
            assert not isinstance(caught.value, GatewayClosedError), message
            assert "reads_only=True" in message and "only reads data_dir" in message, message
            assert "closed" not in message and "Gateway.start" not in message, message
    assert _tree(data) == kept


def test_nothing_writes_over_the_weights_bundled_with_switchpoint(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The config names no weights, so the bundled ones are "the weights' own directory":
    an export there (by its path or a link to it), or an add-model or remove-model in place,
    is refused and the installation's weights stay as they were."""
    config, _, _ = _decided(gw_fake, tmp_path, score=0.0)
    bundled = default_weights_path()
    before = _tree(bundled.parent)
    link = tmp_path / "mine"
    link.symlink_to(bundled)
    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"prompt": PROMPT, "scores": {"m": 1}, "costs": {"m": 0.001}})
                      + "\n", encoding="utf-8")
    capsys.readouterr()
    for argv in (["learn", "--export", bundled, "--config", config],
                 ["learn", "--export", link, "--config", config],
                 ["learn", "--export", bundled.parent / "learned", "--config", config],
                 ["add-model", "m", labels, "--weights", bundled],
                 ["remove-model", "claude-v1", "--weights", bundled]):
        assert main([str(a) for a in argv]) == 2, argv
        err = capsys.readouterr().err
        assert "is among the weights bundled with switchpoint" in err, err
        assert "a directory of your own" in err and "Traceback" not in err
    assert _tree(bundled.parent) == before
    # The same export to a folder of its own works.
    assert main(["learn", "--export", str(tmp_path / "learned"), "--config", str(config)]) == 0
    assert load_weights(tmp_path / "learned").provenance["learned"][-1]["outcomes"] == 1


def _damage_table(db: Path, table: str) -> None:
    """Overwrite the root page of ``table`` in ``db``, as a damaged disk would."""
    conn = sqlite3.connect(db)
    page, size = (conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                               (table,)).fetchone()[0],
                  conn.execute("PRAGMA page_size").fetchone()[0])
    conn.close()
    with db.open("r+b") as fh:
        fh.seek((page - 1) * size)
        fh.write(b"\xff" * size)


@pytest.mark.parametrize("table", ["decisions", "requests"])
def test_offline_commands_beside_a_damaged_log_table(
        gw_fake: FakeProviderProcess, tmp_path: Path, table: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A damaged log table stops `switchpoint serve` (every append would fail), not the offline
    commands that do not read it: feedback and learn work from the learning tables, while a
    report or a prune, which need the log, stop with one line naming the file and what to do."""
    config, _, decision = _decided(gw_fake, tmp_path)
    db = tmp_path / "data" / "switchpoint.db"
    with SQLiteStore(db) as store:  # a request log the reports must read
        for _ in range(10):
            store.append(RequestRecord(id=uuid.uuid4().hex, ts=time.time(), requested_model="auto",
                                       status="ok", http_status=200, pin_state="fresh",
                                       stream=False, latency_ms=1.0)).result(timeout=10)
    _damage_table(db, table)
    capsys.readouterr()

    assert main(["feedback", decision.decision_id, "--score", "0", "--config", str(config),
                 "--json"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["model"] == decision.selected_model
    export = tmp_path / "learned"
    assert main(["learn", "--export", str(export), "--config", str(config)]) == 0, \
        capsys.readouterr().err
    assert load_weights(export).provenance["learned"][-1]["events"] == 1
    capsys.readouterr()
    for argv in (["report", "cost"], ["prune", "--older-than", "1"]):
        assert main([*argv, "--config", str(config)]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"switchpoint: error: {str(db)!r}: cannot read"), (argv, err)
        assert "the file is damaged" in err and "restore it from a backup" in err, (argv, err)
        assert "Traceback" not in err and err.count("\n") == 1, (argv, err)


def test_learn_names_the_weights_as_the_config_would_find_them(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A config's relative paths are taken from its own folder: the line to put in it must
    name the export from there, whatever folder the command ran in."""
    config, _, _ = _decided(gw_fake, tmp_path, score=0.4)
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    capsys.readouterr()
    assert main(["learn", "--export", "exported", "--config", str(config)]) == 0
    err = capsys.readouterr().err
    line = err.split("set weights: ", 1)[1].split(" in the config", 1)[0]
    config.write_text(config.read_text(encoding="utf-8") + f"weights: {line}\n",
                      encoding="utf-8")
    settings = load_settings(config, environ={})
    assert settings.weights is not None
    assert Path(settings.weights).resolve() == (work / "exported").resolve(), err


def _learned(server: Any) -> dict[str, Any]:
    """The deployment's own learned router as the service's status shows it, with the quality
    its log holds for each decision's latest outcome."""
    body = httpx.get(f"{server.base}/v1/router/status", timeout=15).json()
    tenant = body["tenants"]["default"]
    return {**tenant["learned_router"], "feedback": tenant["feedback"]}


def _scored(server: Any, decision_id: str, score: float) -> dict[str, Any]:
    r = httpx.post(f"{server.base}/v1/feedback", timeout=15,
                   json={"decision_id": decision_id, "score": score})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def test_offline_feedback_beside_a_running_service_is_replaced_by_a_repeat_over_http(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An outcome given offline on the data_dir a service runs on, then again over HTTP: the
    service takes the offline one up first, so the repeat replaces it and says so, and one
    outcome is learned, live, after a reload and after a restart."""
    config, settings, decision = _decided(gw_fake, tmp_path)
    did = decision.decision_id
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        assert main(["feedback", did, "--score", "0", "--config", str(config), "--json"]) == 0
        offline = json.loads(capsys.readouterr().out)
        assert (offline["replaced"], offline["quality"]) == (False, 0.0)
        answer = _scored(server, did, 1.0)
        assert (answer["replaced"], answer["previous_quality"]) == (True, 0.0)
        model = answer["model"]
        one = {"events": 2, "outcomes": 1, "feedback": {model: {"n": 1, "mean_quality": 1.0}}}
        assert _learned(server) == one
        assert httpx.post(f"{server.base}/v1/router/reload", timeout=30).status_code == 200
        assert _learned(server) == one
        # The other way round: the offline command sees the service's outcome, and the
        # service's next repeat replaces the offline one.
        assert main(["feedback", did, "--score", "0.25", "--config", str(config),
                     "--json"]) == 0
        offline = json.loads(capsys.readouterr().out)
        assert (offline["replaced"], offline["previous_quality"]) == (True, 1.0)
        answer = _scored(server, did, 0.5)
        assert (answer["replaced"], answer["previous_quality"]) == (True, 0.25)
        three = {"events": 4, "outcomes": 1, "feedback": {model: {"n": 1, "mean_quality": 0.5}}}
        assert _learned(server) == three
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        assert _learned(server) == three
        assert _scored(server, did, 0.75)["previous_quality"] == 0.5


def test_offline_commands_without_the_config_of_a_run_time_experiment_say_to_give_it(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """With --data-dir alone, an experiment the service made at run time for a tenant of its
    config does not fit the default config: the error said to end the experiment (which would
    stop it in the service), not to give the config it needs; it says what is wrong and that
    one fix, not the default config's tenants to use instead."""
    monkeypatch.delenv("SWITCHPOINT_CONFIG", raising=False)
    config = tmp_path / "switchpoint.yaml"
    data = tmp_path / "data"
    config.write_text(config_text(gw_fake, str(data)) + "tenants:\n  acme: {}\n",
                      encoding="utf-8")
    settings = load_settings(config, environ={})
    with Gateway(settings, loader=FACTORY, env=KEYS) as gateway:
        gateway.start()
        gateway.create_ab_test("trial", tenants=["acme"])
        decision = gateway.route(PROMPT, tenant="acme")
    capsys.readouterr()
    for command in (["feedback", decision.decision_id, "--score", "0.5"],
                    ["learn", "--export", str(tmp_path / "new")]):
        assert main([*command, "--data-dir", str(data)]) == 2
        err = capsys.readouterr().err
        assert err.startswith('switchpoint: error: experiments.trial.tenants[0]: "acme" is '
                              "not a tenant of this config (--data-dir alone reads no config: "
                              "the default one is used), and an experiment the service "
                              "created at run time in "), err
        assert err.rstrip().endswith("names what its config has; give that config with "
                                     "--config (or $SWITCHPOINT_CONFIG)"), err
        assert "end it first" not in err and "Traceback" not in err, err
        assert "use one of" not in err and "default (" not in err, err
    assert db_count(data, "feedback") == 0 and not (tmp_path / "new").exists()
    assert main(["feedback", decision.decision_id, "--score", "0.5", "--config",
                 str(config)]) == 0
    assert db_count(data, "feedback") == 1


def db_count(data: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{data / 'switchpoint.db'}?mode=ro",
                                            uri=True)) as db:
        return int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
