"""Upstream errors that echo the caller's credentials: nothing reaches the client, the request
log, the health view, the SQLite files or the server's log with a key in it.

Before: an upstream's 400 quoting ``Authorization: Bearer sk-...`` went to the client verbatim,
into the request log's ``error`` column and into ``/v1/router/health``'s recent errors.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from switchpoint.cli import main
from tests.attack.attack_env import ADMIN_TOKEN, KEYS, SECRETS, Attacked, chat_body
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.learning_env import get, learning_server, post
from tests.integration.servers import ProcessServer

UPSTREAM_KEYS = [KEYS[k] for k in ("ALPHA_KEY", "BETA_KEY", "GAMMA_KEY")]


def leaked(text: str) -> list[str]:
    return [s for s in SECRETS if s in text]


def files_text(folder: Path) -> str:
    return "".join(p.read_bytes().decode("latin-1") for p in folder.iterdir() if p.is_file())


@pytest.mark.parametrize(("model", "behaviour", "status"), [
    ("alpha", "echo_auth:status=400", 400),          # a plain 4xx: the upstream's own envelope
    ("alpha", "echo_auth:status=500", 502),          # escalates to beta, which echoes too
    ("gamma", "echo_auth:status=400", 400),          # Anthropic: x-api-key, not a bearer token
    ("alpha", "echo_auth:status=401,text=1", 502),   # a plain-text body
])
def test_an_upstream_echoing_the_key_leaks_it_nowhere(
        attacked: Attacked, fake: FakeProviderProcess, model: str, behaviour: str,
        status: int) -> None:
    fake.reset()
    for stream in (False, True):
        r = httpx.post(f"{attacked.base}/v1/chat/completions", timeout=15,
                       json=chat_body(f"[[fake:{behaviour}]] hi", model, stream=stream))
        assert r.status_code == status, r.text
        assert not leaked(r.text) and not leaked(str(r.headers)), r.text
        assert "[REDACTED]" in r.text or status == 502
    # The fake did receive, and echo, the real keys.
    sent = [q["headers"].get("authorization", "") + q["headers"].get("x-api-key", "")
            for q in fake.requests()]
    assert any(k in s for s in sent for k in UPSTREAM_KEYS)
    log = httpx.get(f"{attacked.base}/v1/router/requests", params={"limit": 20},
                    headers=attacked.admin, timeout=10).text
    health = httpx.get(f"{attacked.base}/v1/router/health", headers=attacked.admin,
                       timeout=10).text
    assert "[REDACTED]" in log + health
    assert not leaked(log) and not leaked(health)


def test_the_stored_files_and_the_server_log_hold_no_key(attacked: Attacked) -> None:
    # After the echoes above (and whatever else ran): the database files and stderr are clean.
    r = httpx.post(f"{attacked.base}/v1/chat/completions", timeout=15,
                   json=chat_body("[[fake:echo_auth:status=400]] once more", "alpha"))
    assert r.status_code == 400
    stored = files_text(attacked.data_dir)
    assert "requests" in stored  # the files were read
    assert not [k for k in UPSTREAM_KEYS if k in stored]
    assert not leaked(attacked.log_text())


def test_error_text_is_capped(attacked: Attacked) -> None:
    # Upstream error messages of 12 KB, on each of the two models tried.
    r = httpx.post(f"{attacked.base}/v1/chat/completions", timeout=15,
                   json=chat_body("[[fake:echo_auth:status=500,pad=12000]]", "alpha"))
    assert r.status_code == 502 and len(r.text) < 4096
    entry = attacked.entry(r.headers["x-switchpoint-request-id"])
    assert [a["model"] for a in entry["attempts"]] == ["alpha", "beta"]
    assert len(entry["error"]) <= 4096 + 64
    assert all(len(a["error"]) <= 2048 + 64 for a in entry["attempts"])


KEYED = """auth: keys
tenants:
  acme: {models: [cheap, auto]}
"""
PASTED = "sk-proj-pasted-by-mistake-0123456789abcdef"


def test_a_key_pasted_where_a_model_goes_is_not_repeated_or_stored(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # A key limited to some models is refused any other name with a 403 that quotes it, and
    # the refusal is logged with the model it named. A secret pasted there (another key, a
    # provider's key) was repeated in the answer and stored verbatim in the request log.
    with learning_server(fake, tmp_path, KEYED) as server:
        made = post(server, "/v1/router/keys", {"tenant": "acme", "models": ["cheap", "auto"]})
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        other = post(server, "/v1/router/keys", {"tenant": "acme"}).json()["key"]
        answers = []
        for pasted in (PASTED, other):
            answers.append(httpx.post(f"{server.base}/v1/chat/completions", timeout=15,
                                      headers={"authorization": f"Bearer {key}"},
                                      json=chat_body("hi", pasted)))
        answers.append(httpx.post(f"{server.base}/v1/chat/completions", timeout=15,
                                  headers={"authorization": f"Bearer {key}",
                                           "x-switchpoint-models": f"cheap,{PASTED}"},
                                  json=chat_body("hi", "auto")))
        answers.append(httpx.post(f"{server.base}/v1/route", timeout=15,
                                  headers={"authorization": f"Bearer {key}"},
                                  json={"prompt": "hi", "available_models": [other]}))
        for r in answers:
            assert r.status_code == 403, r.text
            assert "[REDACTED]" in r.text
            assert PASTED not in r.text and other not in r.text
        deadline = time.monotonic() + 5
        while (log := get(server, "/v1/router/requests", limit=10).text).count(
                '"status":"refused"') < 3:  # written behind the answers
            assert time.monotonic() < deadline, log
            time.sleep(0.05)
        assert PASTED not in log and other not in log
        stored = files_text(tmp_path / "data")
        assert "requests" in stored
        assert PASTED not in stored and other.split("_", 1)[1] not in stored


@pytest.mark.parametrize("entry", [
    f'{{name: m, base_url: "{PASTED}", input_per_mtok: 1, output_per_mtok: 1}}',
    f'{{name: m, base_url: "http://127.0.0.1:1/v1", input_per_mtok: "{PASTED}", '
    'output_per_mtok: 1}',
    f'{{name: m, base_url: "http://127.0.0.1:1/v1", input_per_mtok: 1, output_per_mtok: 1, '
    f'fallbacks: ["{PASTED}"]}}'])
def test_a_config_refused_for_a_key_in_the_wrong_place_does_not_print_it(
        attacked: Attacked, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        entry: str) -> None:
    # A provider key written where a URL, a price or a model name goes: the error names the
    # field, and used to quote the key with it on stderr (and in a reload's 400).
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"models:\n  - {entry}\ndata_dir: {tmp_path / 'data'}\n",
                      encoding="utf-8")
    assert main(["serve", "--config", str(config), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "switchpoint: error: models[0]." in err and "[REDACTED]" in err, err
    assert PASTED not in err
    # The running service, told to reload such a config, keeps serving and does not quote it.
    r = attacked.reload_with_model(entry)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config", r.text
    assert PASTED not in r.text and "[REDACTED]" in r.text


SHORT_KEY = "sk-proj-0123456789abcdefghijKLMN"  # (quoted whole: the longer one is cut short)


@pytest.mark.parametrize(("header", "value"), [
    ("host", f"{SHORT_KEY}.example"), ("host", f"{SHORT_KEY}:x"),
    ("origin", f"https://{SHORT_KEY}.example"),
    ("origin", "https://user:sekrit-password-42@evil.example"),
    ("content-encoding", SHORT_KEY)])
def test_a_key_pasted_in_a_header_a_guard_refuses_is_not_repeated(
        attacked: Attacked, header: str, value: str) -> None:
    # The refusals of a request's host, origin or body encoding (given before any route reads
    # it) quoted the header whole, where every other error is redacted.
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("hi"),
                   headers={header: value}, timeout=15)
    assert r.status_code in (403, 415), r.text
    assert r.json()["error"]["param"] == header
    assert "[REDACTED]" in r.text
    assert "0123456789abcdef" not in r.text and "sekrit" not in r.text


def test_a_key_pasted_in_a_feedback_comment_is_kept_redacted(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # A comment is stored with the feedback and shown back: a key pasted into it was kept
    # verbatim in the feedback log.
    with learning_server(fake, tmp_path) as server:
        decision = post(server, "/v1/route", {"prompt": "hi"}).json()["decision_id"]
        r = post(server, "/v1/feedback", {"decision_id": decision, "score": 1,
                                          "comment": f"worked, my key is {PASTED}"})
        assert r.status_code == 200, r.text
        assert PASTED not in r.text
        stored = files_text(tmp_path / "data")
        assert "worked, my key is" in stored and PASTED not in stored


def test_a_long_policy_name_is_quoted_short(attacked: Attacked) -> None:
    r = httpx.post(f"{attacked.base}/v1/router/policy/{'p' * 5000}", headers=attacked.admin,
                   timeout=10)
    assert r.status_code == 400 and 'unknown policy \\"ppp' in r.text
    assert len(r.text) < 1000


def test_a_request_path_is_logged_on_one_line() -> None:
    # The path is percent-decoded: %0A and %1B in a URL were written into the log as a new
    # line and a terminal escape of the client's own making.
    from starlette.requests import Request

    from switchpoint.server.errors import shown_path

    request = Request({"type": "http", "method": "GET", "headers": [], "query_string": b"",
                       "path": f"/v1/x\n2026-12-03 ERROR forged\x1b[31m {PASTED}"})
    shown = shown_path(request)
    assert "\n" not in shown and "\x1b" not in shown and PASTED not in shown
    assert "ERROR forged\\x1b[31m" in shown


def test_the_access_log_does_not_write_a_key_a_client_put_in_the_url(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    # With --access-log, uvicorn logs each request line as sent: a whole client key pasted
    # where its id goes (refused "without being repeated"), or a key or the admin token in a
    # query string, was written to the log verbatim.
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"""models:
  - {{name: alpha, base_url: "{fake.openai_base_url}", api_key_env: ALPHA_KEY,
     input_per_mtok: 1, output_per_mtok: 2}}
auth: keys
admin_token_env: SP_ATTACK_ADMIN
tenants:
  acme: {{models: [alpha, auto]}}
""", encoding="utf-8")
    server = ProcessServer("--config", config, "--access-log", "--log-level", "info",
                           data_dir=tmp_path / "data", env=KEYS).start()
    try:
        server.wait_ready()
        admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        made = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme"},
                          headers=admin, timeout=10)
        assert made.status_code == 201, made.text
        key = made.json()["key"]
        shown = httpx.get(f"{server.base}/v1/router/keys/{key}", headers=admin, timeout=10)
        assert shown.status_code == 400 and key not in shown.text
        listed = httpx.get(f"{server.base}/v1/models", params={"api_key": key},
                           headers={"authorization": f"Bearer {key}"}, timeout=10)
        assert listed.status_code == 200
        status = httpx.get(f"{server.base}/v1/router/status",
                           params={"tenant": "acme", "note": ADMIN_TOKEN, "k": PASTED},
                           headers=admin, timeout=10)
        # (Refused: the route takes no such parameters; nor does its answer repeat them.)
        assert status.status_code == 400 and status.json()["error"]["param"] == "note", status.text
        assert ADMIN_TOKEN not in status.text and PASTED not in status.text
        # Percent-encoded, the same secrets matched no pattern and were logged as sent.
        key_id, secret = key.split("_", 1)
        for url in (f"/v1/router/keys/{key_id}%5F{secret}",
                    f"/v1/models?api%5Fkey={key_id}%255F{secret}",
                    f"/v1/router/status?note={ADMIN_TOKEN.replace('-', '%2D')}"):
            httpx.get(f"{server.base}{url}", headers=admin, timeout=10)
    finally:
        _, err = server.terminate()
    log = server.stdout + err  # uvicorn's access log is stdout
    assert '"GET /v1/router/keys/sp-' in log and '"GET /v1/models?api_key=' in log, log
    secret = key.split("_", 1)[1]
    assert secret not in log and ADMIN_TOKEN not in log and PASTED not in log, log
    assert ADMIN_TOKEN.replace("-", "%2D") not in log, log
    assert key.split("_", 1)[0] in log  # the key's id, which is not secret, stays


def test_the_access_log_file_holds_no_credential_a_client_put_in_a_query(
        tmp_path: Path) -> None:
    # ?token=, ?key=, ?auth=, ?client_key=... in plain form matched no pattern (only api_key
    # and the like did, or a value shaped like a key) and went to the access log as sent.
    config = tmp_path / "switchpoint.yaml"
    config.write_text("""models:
  - {name: alpha, base_url: "http://127.0.0.1:9/v1", api_key_env: ALPHA_KEY,
     input_per_mtok: 1, output_per_mtok: 2}
""", encoding="utf-8")
    log_file = tmp_path / "serve.log"
    server = ProcessServer("--config", config, "--access-log", "--log-level", "info",
                           data_dir=tmp_path / "data", env=KEYS, log_file=log_file).start()
    secrets = {name: f"{name}-value-{i}-Zq8Wm2Xp" for i, name in enumerate(
        ("token", "key", "api_key", "auth", "client_key", "access_token", "sig"))}
    try:
        server.wait_ready()
        for name, value in secrets.items():
            answer = httpx.get(f"{server.base}/v1/models?page=1&{name}={value}&x=y", timeout=10)
            assert answer.status_code == 200, answer.text
        kept = httpx.get(f"{server.base}/v1/models?tenant=acme&monkey=banana", timeout=10)
        assert kept.status_code == 200
    finally:
        assert server.proc is not None
        server.terminate()
    log = log_file.read_text(encoding="utf-8")
    for name, value in secrets.items():
        assert value not in log, log
        assert f"/v1/models?page=1&{name}=[REDACTED]&x=y" in log, log
    # What names no credential is logged as sent.
    assert "/v1/models?tenant=acme&monkey=banana" in log, log


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/route", {"prompt": "hi"}),
    ("/v1/feedback", {"decision_id": "0" * 32, "score": 1}),
    ("/v1/router/preferences/score", {"compare_id": "0" * 32, "scores": {"A": 1}}),
    ("/v1/router/keys", {"tenant": "default"}),
])
def test_an_unknown_field_s_name_is_not_repeated_whole(attacked: Attacked, path: str,
                                                       body: dict[str, object]) -> None:
    # An unknown field is named in the error's message and its param. The message was
    # redacted, but the param repeated a key pasted as a field's name verbatim, and both
    # repeated a name of any length (a 200 KB name made a 400 KB answer).
    for name in (PASTED, "Q" * 200_000):
        r = httpx.post(f"{attacked.base}{path}", json={**body, name: 1},
                       headers=attacked.admin, timeout=10)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert "is not a field of this request" in error["message"], error
        assert PASTED not in r.text and len(r.text) < 1500, r.text[:300]
        assert error["param"].startswith("sk-[REDACTED]" if name == PASTED else "QQQ")
