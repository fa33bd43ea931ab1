"""The small edges a hostile caller found at the service's doors: a sampling setting that is
a boolean, text in a header that is not ASCII, a session id holding control characters, an
integer of thousands of digits (and a decimal as long, which is none), values quoted in
Python's spelling, a long name cut short without saying so, and a documentation page that
needed the network."""

from __future__ import annotations

import json

import httpx
import pytest

from switchpoint.errors import InvalidInputError
from switchpoint.gateway.sessions import session_key
from tests.attack.attack_env import Attacked, chat_body
from tests.fakes.fake_provider import FakeProviderProcess

# The sampling settings, each a number; the whole ones too.
SAMPLING = ("temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p",
            "repetition_penalty", "seed", "top_k", "top_logprobs", "n", "max_tokens",
            "max_completion_tokens")


@pytest.mark.parametrize("model", ["alpha", "gamma", "auto"])  # (gamma: the Messages API)
@pytest.mark.parametrize("field", SAMPLING)
@pytest.mark.parametrize("value", [True, False, "0.5"])
def test_a_sampling_setting_that_is_no_number_is_refused_before_routing(
        attacked: Attacked, fake: FakeProviderProcess, model: str, field: str,
        value: object) -> None:
    """The Anthropic adapter read temperature: true as 1.0 and sent it; every adapter now gets
    only numbers, and the request is refused before anything is routed, held or sent."""
    r = httpx.post(f"{attacked.base}/v1/chat/completions",
                   json=chat_body("hi", model, **{field: value}), timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}: must be "), error
    assert error["message"].endswith(f"got {json.dumps(value)}"), error  # as JSON writes it
    assert "x-switchpoint-request-id" not in r.headers  # nothing was routed
    assert fake.requests() == []


def test_a_sampling_setting_that_is_a_number_is_sent_as_it_was(
        attacked: Attacked, fake: FakeProviderProcess) -> None:
    r = httpx.post(f"{attacked.base}/v1/chat/completions",
                   json=chat_body("hi", "alpha", temperature=0, top_p=1, seed=7, top_k=3,
                                  presence_penalty=-0.5), timeout=10)
    assert r.status_code == 200, r.text
    sent = fake.requests()[-1]["body"]
    assert (sent["temperature"], sent["top_p"], sent["seed"], sent["top_k"],
            sent["presence_penalty"]) == (0, 1, 7, 3, -0.5)


def chat(attacked: Attacked, headers: dict[str, bytes], model: str = "auto") -> httpx.Response:
    """A chat request with ``headers``, their values as the bytes sent."""
    return httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body("hi", model),
                      headers={k.encode(): v for k, v in headers.items()}, timeout=10)


def test_a_models_header_in_utf8_is_read_as_utf8(attacked: Attacked) -> None:
    """``x-switchpoint-models: été`` was read as Latin-1 and echoed as ``Ã©tÃ©``."""
    r = chat(attacked, {"x-switchpoint-models": "été, beta".encode()})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert "été" in error["message"] and "Ã" not in error["message"], error
    r = chat(attacked, {"x-switchpoint-models": b"beta, alpha"})
    assert r.status_code == 200 and r.headers["x-switchpoint-model"] in ("alpha", "beta")


def test_a_models_header_not_in_utf8_is_refused(attacked: Attacked,
                                                fake: FakeProviderProcess) -> None:
    r = chat(attacked, {"x-switchpoint-models": "été".encode("latin-1")})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "x-switchpoint-models" and "not UTF-8" in error["message"], error
    assert fake.requests() == []


@pytest.mark.parametrize(("header", "written", "quoted"), [
    ("host", "évil.com", '"évil.com"'),
    ("origin", "http://évil.com", '"http://évil.com"'),
    ("x-switchpoint-cost-weight", "٥", '"٥"'),
    ("content-encoding", "gzïp", '"gzïp"'),
])
def test_an_error_quotes_a_header_as_its_client_wrote_it(
        attacked: Attacked, fake: FakeProviderProcess, header: str, written: str,
        quoted: str) -> None:
    """A header's value in UTF-8 was quoted as read in Latin-1 (``évil.com`` as
    ``Ã©vil.com``); bytes that are not UTF-8 are quoted as ``\\xff``, not as characters they
    are not."""
    for raw, shown in ((written.encode(), quoted),
                       (b"\xff" + written.encode(), '"\\\\xff' + quoted[1:])):
        r = chat(attacked, {header: raw})
        assert r.status_code in (400, 403, 415), r.text
        error = r.json()["error"]
        assert error["param"] == header, error
        assert shown in error["message"] and not {"Ã", "ÿ"} & set(error["message"]), error
    assert fake.requests() == []


@pytest.mark.parametrize("session", ["a\tb", "a\u0085b", "a\u202eb", "a\u200bb"])
def test_a_session_id_holding_control_characters_is_refused(
        attacked: Attacked, fake: FakeProviderProcess, session: str) -> None:
    r = chat(attacked, {"x-session-id": session.encode()})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "x-session-id", error
    assert f"U+{ord(session[1]):04X}" in error["message"], error
    assert fake.requests() == []


def test_a_session_id_in_any_script_pins_its_conversation(attacked: Attacked) -> None:
    session = {"x-session-id": "café-🙂-会话".encode()}
    first = chat(attacked, session)
    assert first.status_code == 200, first.text
    again = chat(attacked, session)
    assert again.headers["x-switchpoint-pin"] == "hard"
    assert again.headers["x-switchpoint-model"] == first.headers["x-switchpoint-model"]


def test_the_library_refuses_such_a_session_id_too() -> None:
    """One rule for both doors: the in-process gateway's session_id is held to it."""
    with pytest.raises(InvalidInputError, match="U\\+0000") as caught:
        session_key("a\x00b", [{"role": "user", "content": "hi"}], field="session_id")
    assert caught.value.field == "session_id"
    assert session_key("  café  ", [], field="session_id") == session_key("café", [])


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/chat/completions", '{"model": "auto", "messages": [{"role": "user", "content": "hi"}],'
                             ' "seed": %s}', "seed"),
    ("/v1/route", '{"prompt": "hi", "cost_weight": %s}', "cost_weight"),
    ("/v1/feedback", '{"decision_id": "d", "score": %s}', "score")])
def test_an_integer_of_thousands_of_digits_is_named_by_its_field_on_every_route(
        attacked: Attacked, path: str, body: str, field: str) -> None:
    """The routing and feedback routes read it as JSON that is not valid ("number out of
    range"), the chat gateway as a number that is not finite; then each as the body's fault
    ("body: holds a number of 5000 digits"): it is named by its field, as one of 401 digits is."""
    r = httpx.post(f"{attacked.base}{path}", content=body % ("9" * 5000),
                   headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field, error
    assert error["message"] == (f"{field}: must be a finite number, got an integer of 5000 "
                                "digits, past the largest a number holds (about 1.8e308)"), error


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/chat/completions", '{"model": "alpha", "messages": [{"role": "user", "content": '
                             '"hi"}], "temperature": %s}', "temperature"),
    ("/v1/route", '{"prompt": "hi", "cost_weight": %s}', "cost_weight"),
    ("/v1/feedback", '{"decision_id": "d", "score": 0.5, "cost": %s}', "cost"),
    ("/v1/router/preferences/score", '{"compare_id": "c", "scores": {"A": %s}}', "scores.A")])
def test_a_number_a_float_holds_only_as_0_is_refused_naming_its_field(
        attacked: Attacked, fake: FakeProviderProcess, path: str, body: str,
        field: str) -> None:
    """1e-400 was read as 0 on every body route (a cost_weight of 0 is quality first, a
    feedback's cost was recorded as 0.0, a temperature sent upstream as 0.0), where a header,
    a query parameter and the command line refuse it."""
    logged = [entry["id"] for entry in attacked.requests()]
    r = httpx.post(f"{attacked.base}{path}", content=body % "1e-400", timeout=10,
                   headers={"content-type": "application/json", **attacked.admin})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("invalid_request", field), error
    assert error["message"] == (f"{field}: 1e-400 is too small a number to be told from 0; "
                                "write 0, or a number of at least 1e-300"), error
    assert fake.requests() == []
    assert [entry["id"] for entry in attacked.requests()] == logged


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/chat/completions", '{"model": "alpha", "messages": [{"role": "user", "content": '
                             '"hi"}], "temperature": %s}', "temperature"),
    ("/v1/route", '{"prompt": "hi", "cost_weight": %s}', "cost_weight")])
def test_a_long_decimal_a_float_holds_only_as_0_is_told_so_not_as_an_integer(
        attacked: Attacked, fake: FakeProviderProcess, path: str, body: str,
        field: str) -> None:
    """0.000…1 written with 5000 zeros was told as "an integer of 5003 digits, past the largest
    a number holds": its length alone was taken for an integer's, whatever its point."""
    logged = [entry["id"] for entry in attacked.requests()]
    r = httpx.post(f"{attacked.base}{path}", content=body % ("0." + "0" * 5000 + "1"),
                   timeout=10, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == field, error
    assert error["message"].startswith(f"{field}: 0.000"), error
    assert error["message"].endswith(" is too small a number to be told from 0; write 0, or a "
                                     "number of at least 1e-300"), error
    assert fake.requests() == []
    assert [entry["id"] for entry in attacked.requests()] == logged


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/chat/completions", '{"model": "alpha", "messages": [{"role": "user", "content": '
                             '"hi"}], "temperature": %s}', "temperature"),
    ("/v1/route", '{"prompt": "hi", "cost_weight": %s}', "cost_weight"),
    ("/v1/feedback", '{"decision_id": "d", "score": %s}', "score"),
    ("/v1/router/preferences/score", '{"compare_id": "c", "scores": {"A": %s}}', "scores.A"),
    ("/v1/router/experiments", '{"name": "e", "arms": {"a": {}, "b": {"weight": %s}}}',
     "arms.b.weight")])
@pytest.mark.parametrize("sign", ["", "-"])
def test_an_integer_past_what_a_number_holds_is_told_so_alike_on_every_route(
        attacked: Attacked, path: str, body: str, field: str, sign: str) -> None:
    """Read (it has fewer digits than the parser's limit), but no float holds it: one field
    said it must be a finite number "(not NaN or infinity)", another that it must be a number
    at all."""
    r = httpx.post(f"{attacked.base}{path}", content=body % (sign + "1" + "0" * 400),
                   headers={"content-type": "application/json", **attacked.admin}, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == (
        f"{field}: must be a finite number, got an integer of 401 digits, past the largest a "
        "number holds (about 1.8e308)"), r.text


def test_a_long_experiment_name_is_shortened_as_a_policy_name_is(attacked: Attacked) -> None:
    """The 404 cut the name at 100 characters without saying it was cut; a policy swap's 400
    ends a shortened name with "…", inside its closing quote."""
    long = "e" * 150
    r = httpx.get(f"{attacked.base}/v1/router/experiments/{long}", headers=attacked.admin,
                  timeout=10)
    assert r.status_code == 404, r.text
    message = r.json()["error"]["message"]
    assert f'"{"e" * 97}…" is configured' in message, message
    r = httpx.post(f"{attacked.base}/v1/router/policy/{'p' * 150}", headers=attacked.admin,
                   timeout=10)
    assert r.status_code == 400 and "p" * 77 + '…"' in r.json()["error"]["message"], r.text


def test_a_name_a_request_sent_is_quoted_as_json_writes_it(attacked: Attacked) -> None:
    """A model, a policy, a key id or a header's value a request sent is quoted in its error
    as JSON writes it ("it's"), as the fields' values are: it read 'x', Python's spelling, and
    a quote in the name came back as "it's" in one message and 'it\\'s' in another."""
    odd = "it's"
    answers = [
        httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body(model=odd),
                   timeout=10),
        httpx.get(f"{attacked.base}/v1/models/{odd}", timeout=10),
        httpx.post(f"{attacked.base}/v1/router/policy/{odd}", headers=attacked.admin,
                   timeout=10),
        httpx.post(f"{attacked.base}/v1/route", content=b"{}", timeout=10,
                   headers={"content-type": "application/json", "content-encoding": odd}),
    ]
    for r in answers:
        message = r.json()["error"]["message"]
        assert r.status_code in (400, 404, 415) and json.dumps(odd) in message, r.text
    r = httpx.post(f"{attacked.base}/v1/chat/completions", json=chat_body(),
                   headers={"x-switchpoint-cost-weight": "1e-400"}, timeout=10)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == (
        'x-switchpoint-cost-weight: "1e-400" is too small a number to be told from 0; write 0, '
        "or a number of at least 1e-300"), r.text
