"""The in-process gateway's methods refuse an argument no caller could mean (a tenant,
experiment, period or model name of the wrong type, text that is not valid Unicode, a chat
parameter JSON cannot hold) with switchpoint's error naming it, before anything is read,
routed, called or logged: never Python's AttributeError, TypeError or UnicodeEncodeError from
deep inside. The catalog points at an address nothing is asked at."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from switchpoint import Gateway
from switchpoint.errors import InvalidInputError
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS

NOWHERE = "http://127.0.0.1:19299/v1"  # never asked: each request here is refused first
SURROGATE = "acme\ud800"


class Unshowable:
    """A value whose str and repr raise."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    data_dir: Path = tmp_path_factory.mktemp("in-process")
    config = {
        "models": [
            {"name": "good", "profile": "gpt-4-1106-preview", "base_url": NOWHERE,
             "input_per_mtok": 10, "output_per_mtok": 30, "context_window": 128000},
            {"name": "cheap", "profile": "gpt-3.5-turbo-1106", "base_url": NOWHERE,
             "input_per_mtok": 0.5, "output_per_mtok": 1.5, "context_window": 16000}],
        "tenants": {"acme": {"models": ["cheap", "auto"], "budgets": ["10/day"]}},
        "data_dir": str(data_dir)}
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        yield gateway


GatewayCall = Callable[[Gateway, Any], object]
TENANT_READERS: list[tuple[str, GatewayCall]] = [
    ("stats", lambda g, v: g.stats(v)),
    ("get_analytics", lambda g, v: g.get_analytics(v)),
    ("check_budget_alert", lambda g, v: g.check_budget_alert(v)),
    ("cost_report", lambda g, v: g.cost_report("day", tenant=v)),
    ("savings_estimate", lambda g, v: g.savings_estimate(tenant=v)),
    ("learning_status", lambda g, v: g.learning_status([v])),
]


@pytest.mark.parametrize("value", [5, 0.5, b"acme", ("acme",), SURROGATE],
                         ids=["int", "float", "bytes", "tuple", "lone surrogate"])
@pytest.mark.parametrize(("method", "call"), TENANT_READERS, ids=[m for m, _ in TENANT_READERS])
def test_a_tenant_to_report_on_that_no_tenant_could_be_is_refused_naming_it(
        local: Gateway, method: str, call: GatewayCall, value: object) -> None:
    """(It was an AttributeError from the redaction of its name, a TypeError unhashable, or a
    UnicodeEncodeError from the store's query.)"""
    with pytest.raises(InvalidInputError) as caught:
        call(local, value)
    assert caught.value.field in ("tenant", "tenants"), caught.value


def test_a_list_of_tenants_past_the_most_a_deployment_has_is_refused_naming_it(
        local: Gateway) -> None:
    """(Any length was taken, each name checked against the logs in turn.)"""
    from switchpoint._limits import MAX_TENANTS

    with pytest.raises(InvalidInputError) as caught:
        local.learning_status(["acme"] * (MAX_TENANTS + 1))
    assert str(caught.value) == (
        f"tenants: names {MAX_TENANTS + 1:,} tenants, more than the {MAX_TENANTS:,} a "
        f"deployment may have; name at most {MAX_TENANTS:,} in one call, or leave tenants out "
        "for every tenant's status")
    assert list(local.learning_status(["acme"] * MAX_TENANTS)["tenants"]) == ["acme"]


def test_a_tenant_named_again_is_looked_up_once_and_answered_in_the_order_given(
        local: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    """(Each copy of a name was looked up again: 10,000 copies of one took about a second.)"""
    from switchpoint.governance.reports import Reports

    looked_up: list[str] = []
    check = Reports.check_tenant

    def counted(reports: Reports, name: str) -> Any:
        looked_up.append(name)
        return check(reports, name)

    monkeypatch.setattr(Reports, "check_tenant", counted)
    status = local.learning_status(["acme", "default", "acme"] * 3_000)
    assert list(status["tenants"]) == ["acme", "default"]
    assert looked_up == ["acme", "default"]
    assert list(local.learning_status(["default", "acme"])["tenants"]) == ["default", "acme"]


NAMED: list[tuple[str, str, GatewayCall]] = [
    ("experiment_report", "name", lambda g, v: g.experiment_report(v)),
    ("promote", "name", lambda g, v: g.promote(v)),
    ("create_ab_test", "name", lambda g, v: g.create_ab_test(v)),
    ("end_ab_test", "name", lambda g, v: g.end_ab_test(v)),
    ("swap_policy", "name", lambda g, v: g.swap_policy(v)),
    ("unregister_model", "name", lambda g, v: g.unregister_model(v)),
    ("cost_report", "period", lambda g, v: g.cost_report(v)),
    ("savings_estimate", "comparison_model", lambda g, v: g.savings_estimate(v)),
    ("budget_page", "limit", lambda g, v: g.budget_page(v)),
    ("budget_page", "cursor", lambda g, v: g.budget_page(5, v)),
    ("check_budget_alert", "limit", lambda g, v: g.check_budget_alert(limit=v)),
]


@pytest.mark.parametrize("value", [5, ["day"], {"a": 1}, Unshowable()],
                         ids=["int", "list", "dict", "unshowable"])
@pytest.mark.parametrize(("method", "field", "call"), NAMED,
                         ids=[f"{m}-{f}" for m, f, _ in NAMED])
def test_a_name_of_the_wrong_type_is_refused_naming_the_argument(
        local: Gateway, method: str, field: str, call: GatewayCall, value: object) -> None:
    """(An experiment's name was a TypeError, not subscriptable or unhashable, a period and a
    comparison model unhashable, and a limit or cursor whose repr raised that exception.)"""
    if value == 5 and field == "limit":
        pytest.skip("5 is a limit")
    with pytest.raises(InvalidInputError) as caught:
        call(local, value)
    assert caught.value.field == field, caught.value


@pytest.mark.parametrize("value", [5, ["good"], "good", Unshowable()],
                         ids=["int", "list", "str", "unshowable"])
def test_a_model_to_register_that_is_no_mapping_is_refused_naming_the_card(
        local: Gateway, value: object) -> None:
    with pytest.raises(InvalidInputError) as caught:
        local.register_model(value)  # type: ignore[arg-type]
    assert caught.value.field == "card", caught.value
    assert local.router.catalog.names == ["good", "cheap"]


def test_an_id_that_is_not_valid_unicode_is_refused_or_not_found(local: Gateway) -> None:
    """A decision id or comparison id holding a lone surrogate was looked up in the store, and
    the query failed with a UnicodeEncodeError; no id holds one."""
    with pytest.raises(InvalidInputError) as refused:
        local.report_outcome("abc\ud800", 0.5)
    assert refused.value.field == "decision_id" and "U+D800 (character 4)" in str(refused.value)
    with pytest.raises(InvalidInputError) as missing:
        local.score("abc\ud800", {"good": 0.5})
    assert missing.value.field == "compare_id" and "U+D800 (character 4)" in str(missing.value)
    with pytest.raises(InvalidInputError) as unshown:
        local.score(Unshowable(), {"good": 0.5})  # type: ignore[arg-type]
    assert str(unshown.value).startswith("compare_id: must be a comparison id, got Unshowable")


def logged(gateway: Gateway) -> int:
    store = gateway.store
    assert store is not None
    return len(store.requests(1000, None)[0])


@pytest.mark.parametrize("value", [b"0.5", {0.5}, object(), Unshowable(), [b"x"]],
                         ids=["bytes", "set", "object", "unshowable", "bytes in a list"])
def test_a_chat_parameter_json_cannot_hold_is_refused_naming_it(local: Gateway,
                                                                value: object) -> None:
    """A parameter is forwarded as given, so one that cannot be written as JSON (what the HTTP
    door receives and the upstream is sent) is refused naming it before anything is routed or
    logged (it was a TypeError from the JSON encoder, or the value's own exception)."""
    before = logged(local)
    with pytest.raises(InvalidInputError) as caught:
        local.complete([{"role": "user", "content": "hi"}], temperature=value)
    assert caught.value.field == "temperature", caught.value
    assert "JSON" in str(caught.value)
    assert logged(local) == before


@pytest.mark.parametrize(("value", "said"), [
    (np.float32("nan"), "temperature: is NaN, not a finite number"),
    (np.float64("inf"), "temperature: is infinity, too large a number (what 1e400"),
    (np.array([0.5]), "temperature: is of type ndarray, which a JSON body cannot hold"),
    (np.complex128(0.5), "temperature: is of type complex128, which a JSON body cannot hold"),
], ids=["float32 nan", "float64 inf", "array", "complex"])
def test_a_numpy_value_no_number_holds_is_refused_naming_it(local: Gateway, value: object,
                                                            said: str) -> None:
    before = logged(local)
    with pytest.raises(InvalidInputError) as caught:
        local.complete([{"role": "user", "content": "hi"}], temperature=value)
    assert caught.value.field == "temperature" and str(caught.value).startswith(said)
    assert logged(local) == before


def test_numpy_numbers_count_toward_the_size_bound_as_the_numbers_they_hold(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A NumPy scalar was measured as its quoted text (np.int64(-100) as "-100"), so a request
    the HTTP door takes was refused in process."""
    messages = [{"role": "user", "content": f"sized {uuid.uuid4().hex}"}]
    bias = {str(token): -100 for token in range(200)}
    plain = {"model": "good", "messages": messages, "max_tokens": 5, "logit_bias": bias}
    size = len(json.dumps(plain, separators=(",", ":")).encode())
    config = {"models": [{"name": "good", "profile": "gpt-4-1106-preview",
                          "base_url": gw_fake.openai_base_url, "input_per_mtok": 10,
                          "output_per_mtok": 30, "context_window": 128000}],
              "max_request_bytes": size, "data_dir": str(tmp_path / "data")}
    numpy_bias = {token: np.int64(value) for token, value in bias.items()}
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        answer = gateway.complete(messages, "good", max_tokens=np.int64(5),
                                  logit_bias=numpy_bias)
        assert answer.choices[0].message.content
        with pytest.raises(InvalidInputError) as caught:  # (a byte more is over the bound)
            gateway.complete(messages, "good", max_tokens=np.int64(50), logit_bias=numpy_bias)
    assert f"is {size + 1} bytes" in str(caught.value)
    assert numpy_bias["0"] == np.int64(-100) and isinstance(numpy_bias["0"], np.int64)


def test_a_numpy_long_double_counts_toward_the_size_bound_as_the_number_it_holds(
        local: Gateway) -> None:
    """np.longdouble, whose item() is itself again, made the measure of the field holding it
    recurse until it gave up, and count that field as 0 bytes, however long its text."""
    text = "x" * local.settings.max_request_bytes
    plain = {"messages": [{"role": "user", "content": text, "weight": 0.5}]}
    size = len(json.dumps(plain, separators=(",", ":")))
    with pytest.raises(InvalidInputError) as caught:
        local.check_size({"messages": [{"role": "user", "content": text,
                                        "weight": np.longdouble(0.5)}]})
    assert caught.value.field == "messages"
    assert f"is {size} bytes (messages holds {size - 2} of them)" in str(caught.value)


def test_a_value_json_cannot_hold_deep_in_a_field_is_named_by_its_path_once(
        local: Gateway) -> None:
    with pytest.raises(InvalidInputError) as caught:
        local.complete([{"role": "user", "content": b"hi"}])
    assert caught.value.field == "messages"
    assert str(caught.value) == ("messages[0].content: is of type bytes, which a JSON body "
                                 "cannot hold; send strings, numbers, true or false, null, "
                                 "lists and objects")
    with pytest.raises(InvalidInputError) as caught:
        local.complete([{"role": "user", "content": "hi"}], metadata={"a": [1, float("nan")]})
    assert (caught.value.field, str(caught.value)) == (
        "metadata", "metadata.a[1]: is NaN, not a finite number; send finite numbers only")


def test_numpy_numbers_in_a_chat_request_are_sent_as_the_numbers_they_hold(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A pandas column's values are NumPy scalars: they were refused as values a JSON body
    cannot hold (np.float64 aside, a float). The caller's own values are left as they were."""
    config = {"models": [{"name": "good", "profile": "gpt-4-1106-preview",
                          "base_url": gw_fake.openai_base_url, "input_per_mtok": 10,
                          "output_per_mtok": 30, "context_window": 128000}],
              "data_dir": str(tmp_path / "data")}
    messages = [{"role": "user", "content": f"numbers {uuid.uuid4().hex}"}]
    bias = {"50256": np.int64(-100)}
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        answer = gateway.complete(messages, "good", max_tokens=np.int64(5),
                                  temperature=np.float32(0.5), top_p=np.float16(0.25),
                                  seed=np.uint8(7), logprobs=np.bool_(False), logit_bias=bias)
    assert answer.choices[0].message.content
    sent = [r["body"] for r in gw_fake.requests() if r["body"].get("messages") == messages]
    assert len(sent) == 1
    assert {k: sent[0][k] for k in ("max_tokens", "temperature", "top_p", "seed", "logprobs",
                                    "logit_bias")} == {
        "max_tokens": 5, "temperature": 0.5, "top_p": 0.25, "seed": 7, "logprobs": False,
        "logit_bias": {"50256": -100}}
    assert type(bias["50256"]) is np.int64


FLAGS: list[tuple[str, GatewayCall]] = [
    ("blind", lambda g, v: g.compare([{"role": "user", "content": "hi"}], ["good", "cheap"],
                                     blind=v)),
    ("exact", lambda g, v: g.complete([{"role": "user", "content": "hi"}], "good", exact=v)),
    ("stream", lambda g, v: g.complete([{"role": "user", "content": "hi"}], stream=v)),
    ("stream", lambda g, v: g.stream([{"role": "user", "content": "hi"}], stream=v)),
    ("stream", lambda g, v: g.compare([{"role": "user", "content": "hi"}], ["good", "cheap"],
                                      stream=v)),
]


@pytest.mark.parametrize("value", [0, 1, "", "no", [], {}, np.array([True, False])],
                         ids=["0", "1", "empty string", "string", "empty list", "empty dict",
                              "array"])
@pytest.mark.parametrize(("field", "call"), FLAGS,
                         ids=["compare-blind", "complete-exact", "complete-stream",
                              "stream-stream", "compare-stream"])
def test_a_flag_that_is_not_true_or_false_is_refused_naming_it(
        local: Gateway, field: str, call: GatewayCall, value: object) -> None:
    """A flag was read for its truth: 0, "" or [] as False, 1 or "no" as True, and an array
    raised NumPy's ValueError; a comparison's blind was not read until its answers were paid
    for, then failed to be kept, said as a full disk. Now it is refused naming it before
    anything is called or logged."""
    before = logged(local)
    with pytest.raises(InvalidInputError) as caught:
        call(local, value)
    assert caught.value.field == field, caught.value
    assert "True or False" in str(caught.value)
    assert logged(local) == before


PASSED_ON: list[tuple[str, GatewayCall, tuple[str, ...]]] = [
    ("Gateway.cost_report", lambda g, v: g.cost_report(**v),
     ("period", "until", "tenant", "comparison_model")),
    ("Gateway.savings_estimate", lambda g, v: g.savings_estimate(**v),
     ("comparison_model", "period", "until", "tenant")),
    ("Gateway.forecast_cost", lambda g, v: g.forecast_cost(10, 100, 100, **v),
     ("requests_per_hour", "avg_input_tokens", "avg_output_tokens", "period", "until",
      "tenant")),
    ("Gateway.get_cost_optimizations", lambda g, v: g.get_cost_optimizations(**v),
     ("estimate_tokens", "period", "until", "tenant", "max_quality_loss")),
    ("Gateway.get_sla_report", lambda g, v: g.get_sla_report(**v),
     ("since_hours", "tenant", "until")),
    ("Gateway.score", lambda g, v: g.score("no-such-comparison", {"good": 0.5}, **v),
     ("compare_id", "scores", "key", "tenant", "principal")),
    ("Gateway.from_config", lambda g, v: Gateway.from_config(
        {"data_dir": str(g.settings.data_dir)}, start=False, **v),
     ("config", "start", "loader", "store", "env", "providers", "observer", "serves_chat",
      "reads_only", "replays_log")),
]


@pytest.mark.parametrize(("method", "call", "takes"), PASSED_ON, ids=[m for m, _, _ in PASSED_ON])
def test_an_unknown_keyword_argument_is_refused_naming_it_and_those_taken(
        local: Gateway, method: str, call: GatewayCall, takes: tuple[str, ...]) -> None:
    """A method that passes its keyword arguments on refuses one neither it nor what it calls
    takes, naming it, the method and every argument it takes, before anything is done: it was
    Python's TypeError naming the inner function the caller never called (Reports.cost_report,
    Gateway.__init__, Gateway.ascore)."""
    with pytest.raises(InvalidInputError) as caught:
        call(local, {"bogus": 1, "colour\n": 2})
    assert caught.value.field == "bogus", caught.value
    assert str(caught.value) == (
        f'bogus: is not an argument of {method} (nor is "colour\\n"); it takes '
        f"{', '.join(json.dumps(name) for name in takes)} (check its spelling, or leave it "
        "out)")
    # (and every argument it lists is taken: none of them is refused as unknown)
    for name in takes:
        try:  # (refused as the argument it is, or given twice: the method passes it itself)
            call(local, {name: Unshowable()})
        except Exception as err:
            assert "is not an argument" not in str(err), err


HUGE: list[tuple[str, GatewayCall]] = [
    ("requests_per_hour", lambda g, v: g.forecast_cost(v, 100, 100)),
    ("since_hours", lambda g, v: g.get_sla_report(v)),
    ("max_quality_loss", lambda g, v: g.get_cost_optimizations(max_quality_loss=v)),
    ("cost_weight", lambda g, v: g.route("hi", cost_weight=v)),
    ("quality_score", lambda g, v: g.report_outcome(g.route("hi").decision_id, v)),
    ("cost", lambda g, v: g.report_outcome(g.route("hi").decision_id, 0.5, cost=v)),
]


@pytest.mark.parametrize(("field", "call"), HUGE, ids=[f for f, _ in HUGE])
def test_an_integer_past_what_a_float_holds_is_told_so_as_over_http(
        local: Gateway, field: str, call: GatewayCall) -> None:
    """A report's figure, a λ, a quality score or a cost of 10**400 was "got inf" or "is inf";
    HTTP says what it is, and the gateway's methods now say the same, changing nothing."""
    before = logged(local)
    with pytest.raises(InvalidInputError) as caught:
        call(local, 10**400)
    assert str(caught.value) == (
        f"{field}: must be a finite number, got an integer of 401 digits, past the largest a "
        "number holds (about 1.8e308)")
    assert logged(local) == before


@pytest.mark.parametrize("value", ["0.1", -0.1, 2, float("nan"), None],
                         ids=["string", "negative", "past 1", "NaN", "None"])
def test_a_quality_loss_that_is_no_share_of_quality_is_refused_naming_it(
        local: Gateway, value: object) -> None:
    """get_cost_optimizations' max_quality_loss was taken unread: a string raised a TypeError
    once the log held requests, a negative loss or NaN gave suggestions of no meaning."""
    with pytest.raises(InvalidInputError) as caught:
        local.get_cost_optimizations(max_quality_loss=value)
    assert caught.value.field == "max_quality_loss", caught.value


def test_a_numpy_number_is_taken_where_a_number_is_taken(local: Gateway) -> None:
    """A page's limit of np.int64(5) was refused as "must be a whole number of budgets from 1
    to 500, got 5", and an experiment's split of np.float32(0.25) (or a Fraction or Decimal)
    as "must be a number": each is read as the number it holds, as a λ or a score is; a
    boolean is still no number."""
    page = local.budget_page(np.int64(1))  # type: ignore[arg-type]
    assert len(page["data"]) == 1
    assert local.check_budget_alert(limit=np.int32(1)) == (  # type: ignore[arg-type]
        local.check_budget_alert(limit=1))
    name = f"numpy-split-{uuid.uuid4().hex[:8]}"
    test = local.create_ab_test(name, split=np.float32(0.25),  # type: ignore[arg-type]
                                tenants=["acme"])
    try:
        assert test.arms["b"].weight == 0.25
    finally:
        local.end_ab_test(name)
    with pytest.raises(InvalidInputError) as caught:
        local.budget_page(np.bool_(True))  # type: ignore[arg-type]
    assert caught.value.field == "limit"
    with pytest.raises(InvalidInputError) as caught:
        local.create_ab_test(f"{name}-flag", split=True)
    assert caught.value.field == "split"
