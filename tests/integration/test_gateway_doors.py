"""The gateway's two doors take the same path: one fault matrix, run through the HTTP gateway
(the official ``openai`` client against a real server) and through ``switchpoint.Gateway`` in
process, must give the same answers, the same tries in the same order and the same errors.

Both gateways use the same config (tests/integration/gateway_env.py) and the same fake provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from switchpoint import Gateway
from switchpoint.config import load_settings
from switchpoint.decision import RoutingDecision
from switchpoint.errors import (
    ConflictError,
    FailoverError,
    GatewayClosedError,
    InvalidInputError,
    ProcessBoundError,
    StoreError,
    StreamBroken,
    StreamInUseError,
)
from switchpoint.gateway import ChatCompletion, ChatStream, chat_door
from switchpoint.gateway.admission import runs_no_more
from switchpoint.gateway.chat_door import ChatDoor
from switchpoint.gateway.learning import MadeForACall
from switchpoint.gateway.parsing import check_chat_body
from switchpoint.gateway.planning import ChatCall
from switchpoint.governance.ledger import Ledger
from switchpoint.server import create_app
from switchpoint.store import SQLiteStore
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import (
    FACTORY,
    GATEWAY,
    KEYS,
    client,
    closing_in_background,
    config_text,
    db_rows,
    fresh_health,
    in_background,
    log_entry,
)
from tests.integration.servers import ThreadServer, thread_server, until
from tests.integration.test_stop_while_planning import SlowPolicy

OTHER = "claude-fake-2"  # the upstream name of the catalog model `other`


@dataclass(frozen=True)
class Case:
    name: str
    scripts: dict[str, tuple[str, ...]]
    stream: bool = False
    model: str | None = "other"  # who answers; None: the request fails
    tries: tuple[tuple[str, str], ...] = ()
    status: int | None = None  # the error status when it fails
    broken: bool = False  # a stream that fails after its first byte
    extra: dict[str, Any] = field(default_factory=dict)


CASES = [
    Case("ok", {}, model="good", tries=(("good", "ok"),)),
    Case("500 twice escalates", {"good": ("500", "500")},
         tries=(("good", "server_error"), ("good", "server_error"), ("other", "ok"))),
    Case("a reset is retried", {"good": ("reset",)}, model="good",
         tries=(("good", "connect_error"), ("good", "ok"))),
    Case("429 everywhere", {"good": ("429", "429"), OTHER: ("429", "429")}, model=None,
         status=429, tries=(("good", "rate_limited"),) * 2 + (("other", "rate_limited"),) * 2),
    Case("content filter stops", {"good": ("content_filter",)}, model=None, status=400,
         tries=(("good", "content_filter"),)),
    Case("context length goes larger", {"good": ("context_length",)},
         tries=(("good", "context_length_exceeded"), ("other", "ok"))),
    Case("stream: 503 then the fallback", {"good": ("503", "503")}, stream=True,
         tries=(("good", "server_error"), ("good", "server_error"), ("other", "ok"))),
    Case("stream: cut after the first byte", {"good": ("cut",)}, stream=True, model="good",
         broken=True, tries=(("good", "ok"), ("good", "stream_broken"))),
]


@pytest.fixture(scope="module")
def local(gw_fake: FakeProviderProcess,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root: Path = tmp_path_factory.mktemp("in-process")
    with _configured(gw_fake, root) as gateway:
        yield gateway


def _configured(fake: FakeProviderProcess, root: Path) -> Gateway:
    """A gateway of :func:`config_text` over ``fake``, its config and data in ``root``."""
    config = root / "switchpoint.yaml"
    config.write_text(config_text(fake), encoding="utf-8")
    return Gateway.from_config(config, loader=FACTORY, env=KEYS)


def _doors(gw: ThreadServer, local: Gateway, fake: FakeProviderProcess) -> Iterator[str]:
    """"http" then "python", each once the fake provider's scripts and both doors' health are
    reset, so the two meet the same upstream."""
    for door in ("http", "python"):
        fake.reset()
        fresh_health(gw)
        local.reset_health()
        yield door


def messages() -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": f"Tell me about failover [{uuid.uuid4().hex[:8]}]"}]


@dataclass
class Outcome:
    model: str | None
    tries: tuple[tuple[str, str], ...]
    status: int | None = None
    broken: bool = False
    text: str | None = ""


def through_http(gw: ThreadServer, case: Case) -> Outcome:
    api = client(gw)
    try:
        if not case.stream:
            raw = api.chat.completions.with_raw_response.create(model="good",
                                                                messages=messages())
            entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
            reply = raw.parse()
            return Outcome(reply.model, _tries(entry), text=reply.choices[0].message.content)
        text, broken = "", False
        with api.chat.completions.with_streaming_response.create(
                model="good", messages=messages(), stream=True) as response:
            request_id = response.headers["x-switchpoint-request-id"]
            try:
                for chunk in response.parse():
                    text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            except openai.APIError:
                broken = True
        entry = log_entry(gw, request_id)
        return Outcome(entry["model"], _tries(entry), broken=broken, text=text)
    except openai.APIStatusError as exc:
        entry = log_entry(gw, exc.response.headers["x-switchpoint-request-id"])
        return Outcome(None, _tries(entry), status=exc.status_code)


def through_python(gateway: Gateway, case: Case) -> Outcome:
    try:
        if not case.stream:
            reply = gateway.complete(messages(), model="good")
            assert isinstance(reply, ChatCompletion)
            info = reply.switchpoint
            return Outcome(reply.model, _tries(info.attempts),
                           text=reply.choices[0].message.content)
        text, broken = "", False
        stream = gateway.stream(messages(), model="good")
        try:
            for chunk in stream:
                text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        except StreamBroken:
            broken = True
        info = stream.switchpoint
        return Outcome(info.model, _tries(info.attempts), broken=broken, text=text)
    except FailoverError as exc:
        return Outcome(None, _tries(exc.info.attempts), status=exc.status)


def _tries(source: dict[str, Any] | list[dict[str, Any]]) -> tuple[tuple[str, str], ...]:
    attempts = source["attempts"] if isinstance(source, dict) else source
    return tuple((a["model"], a["outcome"]) for a in attempts)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_both_doors_fail_over_the_same_way(case: Case, gw: ThreadServer, local: Gateway,
                                           gw_fake: FakeProviderProcess) -> None:
    results: dict[str, Outcome] = {}
    for door in _doors(gw, local, gw_fake):
        for model, behaviours in case.scripts.items():
            gw_fake.script(model, *behaviours)
        results[door] = (through_http(gw, case) if door == "http"
                         else through_python(local, case))
    http, python = results["http"], results["python"]
    assert http.model == python.model == case.model
    assert http.tries == python.tries == case.tries
    assert http.status == python.status == case.status
    assert http.broken == python.broken == case.broken
    if case.model is not None and not case.broken:
        assert http.text and python.text  # a whole answer through either door


OVER = 1048576 + 1  # one byte past the default max_request_bytes, as a body's bytes


@pytest.mark.parametrize("what", ["a big message", "many messages", "a long prompt"])
def test_both_doors_refuse_a_request_over_max_request_bytes(
        what: str, gw: ThreadServer, local: Gateway, gw_fake: FakeProviderProcess) -> None:
    if what == "a big message":
        body: dict[str, Any] = {"model": "auto",
                                "messages": [{"role": "user", "content": "x" * OVER}]}
    elif what == "many messages":
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}] * 40_000}
    else:
        body = {"prompt": "x" * OVER}
    path = "/v1/route" if "prompt" in body else "/v1/chat/completions"
    assert local.store is not None
    logged = len(local.store.requests(1000)[0]), len(local.store.decisions(1000))
    answer = httpx.post(f"{gw.base}{path}", json=body, timeout=15)
    assert answer.status_code == 413
    assert "over the limit of 1048576 bytes (max_request_bytes" in answer.text
    with pytest.raises(InvalidInputError) as caught:
        if "prompt" in body:
            local.route(body["prompt"])
        else:
            local.complete(body["messages"])
    assert caught.value.field == ("prompt" if "prompt" in body else "messages")
    assert "over the limit of 1048576 bytes (max_request_bytes" in caught.value.reason
    assert gw_fake.requests() == []
    assert (len(local.store.requests(1000)[0]), len(local.store.decisions(1000))) == logged


@pytest.mark.parametrize("field", ["tenant", "prompt"])
def test_both_doors_measure_a_whole_comparison_against_max_request_bytes(
        field: str, gw: ThreadServer, local: Gateway, gw_fake: FakeProviderProcess) -> None:
    """A comparison's body is measured whole: a long tenant counts as a long prompt does."""
    body: dict[str, Any] = {"prompt": "Hi", "models": ["good", "other"], field: "t" * OVER}
    assert local.store is not None
    logged = len(local.store.requests(1000)[0])
    answer = httpx.post(f"{gw.base}/v1/router/preferences/compare", json=body, timeout=15)
    assert answer.status_code == 413
    assert "over the limit of 1048576 bytes (max_request_bytes" in answer.text
    with pytest.raises(InvalidInputError) as caught:
        local.compare(**body)
    assert caught.value.field == field
    assert "over the limit of 1048576 bytes (max_request_bytes" in caught.value.reason
    assert gw_fake.requests() == []
    assert len(local.store.requests(1000)[0]) == logged


def test_the_in_process_door_logs_like_the_server(local: Gateway) -> None:
    reply = local.complete(messages(), model="auto", cost_weight=0.0, session_id="doors-1")
    info = reply.switchpoint
    assert info.decision is not None and info.routed_model == info.decision.selected_model
    assert info.cost_usd is not None
    assert reply.usage.cost == pytest.approx(info.cost_usd) and info.cost_usd > 0
    store = local.store
    assert store is not None
    entries, _ = store.requests(20, None)
    entry = next(e for e in entries if e["id"] == info.request_id)
    assert entry["status"] == "ok" and entry["model"] == reply.model
    assert entry["decision_id"] == info.decision_id
    # The same session stays pinned, in process as over HTTP.
    again = local.complete(messages(), model="auto", cost_weight=10.0, session_id="doors-1")
    assert again.model == reply.model and again.switchpoint.pin_state == "hard"


@pytest.mark.parametrize("stream", [False, True])
def test_both_doors_report_a_pin_that_failed_over_alike(
        stream: bool, gw: ThreadServer, local: Gateway, gw_fake: FakeProviderProcess) -> None:
    said: dict[str, tuple[str, str | None, str | None]] = {}
    for door in _doors(gw, local, gw_fake):
        sid = f"doors-pin-{uuid.uuid4().hex}"
        if door == "http":
            client(gw).chat.completions.create(model="cheap", messages=messages(),
                                               extra_headers={"x-session-id": sid})
            gw_fake.script("cheap", "500", "500")
            raw = client(gw).chat.completions.with_raw_response.create(
                model="auto", messages=messages(), extra_headers={"x-session-id": sid},
                stream=stream)
            raw.http_response.read()
            entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
            assert entry["pin_state"] == raw.headers["x-switchpoint-pin"]
            said[door] = (raw.headers["x-switchpoint-pin"], raw.headers["x-switchpoint-model"],
                          entry["pin"]["previous_model"])
            continue
        local.complete(messages(), model="cheap", session_id=sid)
        gw_fake.script("cheap", "500", "500")
        if stream:
            answer = local.stream(messages(), session_id=sid)
            list(answer)
            info = answer.switchpoint
        else:
            info = local.complete(messages(), session_id=sid).switchpoint
        said[door] = (info.pin_state, info.model, info.pin["previous_model"])
    assert said["http"] == said["python"] == ("evicted_post_failure", "good", "cheap")


@pytest.mark.parametrize("door", ["complete", "stream", "acomplete"])
def test_both_doors_report_a_pin_whose_model_failed_with_every_other_alike(
        door: str, gw: ThreadServer, local: Gateway, gw_fake: FakeProviderProcess) -> None:
    """No model answers a hard-pinned session's turn: the pinned model failed, whichever
    door the request came through, and the pin is evicted (not reported ``hard``)."""
    said: dict[str, tuple[str, str, str | None, bool]] = {}
    for where in ("http", "python"):
        gw_fake.reset()
        fresh_health(gw)
        local.reset_health()
        sid = f"doors-fail-{uuid.uuid4().hex}"
        for upstream in ("good", OTHER, "cheap", "fresh"):
            gw_fake.default(upstream, None)
        if where == "http":
            client(gw).chat.completions.create(model="cheap", messages=messages(),
                                               extra_headers={"x-session-id": sid})
            for upstream in ("good", OTHER, "cheap", "fresh"):
                gw_fake.default(upstream, "500")
            with pytest.raises(openai.APIStatusError) as failed:
                client(gw).chat.completions.create(
                    model="auto", messages=messages(), extra_headers={"x-session-id": sid},
                    stream=door == "stream")
            headers = failed.value.response.headers
            entry = log_entry(gw, headers["x-switchpoint-request-id"])
            assert entry["pin_state"] == headers["x-switchpoint-pin"]
            pin = gw.service.gateway.pinner.store.get(entry["session_id"])
            assert pin is not None
            said[where] = (headers["x-switchpoint-pin"], entry["models_tried"][0],
                           entry["pin"]["previous_model"], pin.failed)
            continue
        local.complete(messages(), model="cheap", session_id=sid)
        for upstream in ("good", OTHER, "cheap", "fresh"):
            gw_fake.default(upstream, "500")
        with pytest.raises(FailoverError) as raised:
            if door == "stream":
                local.stream(messages(), session_id=sid)
            elif door == "acomplete":
                asyncio.run(local.acomplete(messages(), session_id=sid))
            else:
                local.complete(messages(), session_id=sid)
        info = raised.value.info
        assert info is not None and local.store is not None
        entries, _ = local.store.requests(50, None)
        entry = next(e for e in entries if e["id"] == info.request_id)
        assert entry["pin_state"] == info.pin_state
        pin = local.pinner.store.get(entry["session_id"])
        assert pin is not None
        said[where] = (info.pin_state, entry["models_tried"][0], info.pin["previous_model"],
                       pin.failed)
    assert said["http"] == said["python"] == ("evicted_post_failure", "cheap", "cheap", True)


@pytest.mark.anyio
async def test_the_async_door_streams(local: Gateway) -> None:
    stream = await local.astream(messages(), model="good")
    chunks = [chunk async for chunk in stream]
    assert chunks and all(c.model == "good" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert stream.switchpoint.model == "good" and stream.switchpoint.latency_ms is not None


@pytest.mark.anyio
async def test_a_call_forwarded_in_process_lists_its_via_before_the_gateways_own(
        local: Gateway, gw_fake: FakeProviderProcess) -> None:
    """A program forwarding a request through the in-process door passes the Via it came with
    (ChatCall.via), which the upstream request lists before the gateway's own; one past the
    bound (17 intermediaries) is refused naming it, before anything is planned or called."""
    body = check_chat_body({"model": "good", "messages": messages()})
    plan, live = await local.plan(ChatCall(body=body, caller="test", via=["1.1 proxy"]))
    await local.execute(plan, live)
    assert gw_fake.requests()[-1]["headers"]["via"] == f"1.1 proxy, 1.1 {local.via_name}"
    gw_fake.reset()
    with pytest.raises(InvalidInputError, match=r"via: lists 17 intermediaries \(at most 16\)"):
        await local.plan(ChatCall(body=body, caller="test",
                                  via=[f"1.1 proxy-{i}" for i in range(17)]))
    assert gw_fake.requests() == []


@pytest.mark.anyio
async def test_a_comparison_forwarded_in_process_lists_its_via_and_is_bounded_alike(
        local: Gateway, gw_fake: FakeProviderProcess) -> None:
    """A comparison passes the Via it came with to each compared model's upstream request, as a
    chat does; one past the bound (over 1,024 characters) is refused naming it, nothing called."""
    try:
        await local.acompare(prompt="Hi", models=["good", "other"], via=["1.1 proxy"])
    finally:
        local.reset_health()  # (its calls count in the models' health the next tests read)
    sent = [request["headers"]["via"] for request in gw_fake.requests()]
    assert sent == [f"1.1 proxy, 1.1 {local.via_name}"] * 2, sent
    gw_fake.reset()
    with pytest.raises(InvalidInputError, match=r"via: holds 1104 characters \(at most 1024\)"):
        await local.acompare(prompt="Hi", models=["good", "other"], via=[f"1.1 {'p' * 1100}"])
    assert gw_fake.requests() == []


def test_route_and_execute_answers_with_the_routers_choice(local: Gateway) -> None:
    router = local.router
    reply = router.route_and_execute("Prove that the square root of 2 is irrational.",
                                     cost_weight_override=0.0)
    decision = reply.switchpoint.decision
    assert decision is not None and reply.model == decision.selected_model
    assert reply.choices[0].message.content


def test_route_and_execute_in_a_pinned_session_keeps_its_decision(local: Gateway) -> None:
    # The hard pin answered and the reply's decision was None, though the router had routed.
    sid = f"routed-{uuid.uuid4().hex}"
    local.complete(messages(), model="fresh", session_id=sid)
    reply = local.router.route_and_execute("Prove that the square root of 2 is irrational.",
                                           cost_weight_override=0.0, session_id=sid)
    info = reply.switchpoint
    assert reply.model == "fresh" and info.pin_state == "hard"
    decision = info.decision
    assert decision is not None and decision.selected_model != "fresh"
    assert info.decision_id == decision.decision_id != info.request_id
    assert (f"the session is pinned to fresh: it answers, not the decision's "
            f"{decision.selected_model}") in info.reasoning
    store = local.store
    assert store is not None
    entries, _ = store.requests(20, None)
    entry = next(e for e in entries if e["id"] == info.request_id)
    assert entry["decision_id"] == decision.decision_id and entry["model"] == "fresh"
    assert entry["pin_state"] == "hard"


def test_a_closed_gateway_refuses_work_until_started_again(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    gateway = _configured(gw_fake, tmp_path)
    decision = gateway.route("Summarise the meeting notes.")
    gateway.close()
    gateway.close()  # closing twice is harmless
    store = gateway.store
    assert store is not None
    calls: dict[str, Callable[[], object]] = {
        "complete": lambda: gateway.complete(messages(), model="good"),
        "stream": lambda: gateway.stream(messages(), model="good"),
        "route": lambda: gateway.route("Summarise the meeting notes."),
        "report_outcome": lambda: gateway.report_outcome(decision.decision_id, 0.5),
        "compare": lambda: gateway.compare(prompt="Hi", models=["good", "other"]),
    }
    for name, call in calls.items():
        with pytest.raises(StoreError, match="the gateway is closed") as caught:
            call()
        assert "Gateway.start" in str(caught.value), name
    assert gateway._sync is None  # no event loop thread was started for the refused calls
    gateway.start()  # started again, it serves and learns as before
    try:
        assert gateway.complete(messages(), model="good").model == "good"
        assert not gateway.report_outcome(decision.decision_id, 0.5).outcome.replaced
        entries, _ = store.requests(20, None)
        assert len(entries) == 1  # only the request made after the restart was logged
    finally:
        gateway.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork here")
def test_a_gateway_used_in_a_forked_child_refuses_at_once_saying_to_make_it_after_the_fork(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    gateway = _configured(gw_fake, tmp_path)
    try:
        decision = gateway.route("Summarise the meeting notes.")
        assert gateway.complete(messages(), model="good").model == "good"  # its loop thread
        calls: dict[str, Callable[[], object]] = {
            "complete": lambda: gateway.complete(messages(), model="good"),
            "route": lambda: gateway.route("Summarise the meeting notes."),
            "report_outcome": lambda: gateway.report_outcome(decision.decision_id, 0.5),
            "router.report_outcome": lambda: gateway.router.report_outcome(
                decision.decision_id, 0.5),
            "learning_status": gateway.learning_status,
            "cost_report": gateway.cost_report,
            "aroute": lambda: asyncio.run(gateway.aroute("Summarise the meeting notes.")),
        }
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child (gunicorn --preload): it must not hang nor touch the parent's
            signal.alarm(10)
            said: dict[str, str] = {}
            for name, call in calls.items():
                try:
                    said[name] = f"returned {call()!r}"
                except ProcessBoundError as exc:
                    said[name] = str(exc)
                except BaseException as exc:
                    said[name] = f"{type(exc).__name__}: {exc}"
            gateway.close()  # nothing: its threads, connections and lock are the parent's
            os.write(write, json.dumps(said).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            said = json.loads(pipe.read() or b"{}")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0  # (-14: it hung until the alarm)
        assert set(said) == set(calls)
        for name, message in said.items():
            # (the router's outcome is one request inside its gateway, refused as its own)
            assert message.startswith(f"this Gateway was opened in process {os.getpid()}, and this "
                                      f"is process {pid}, a child made by os.fork()"), name
            assert message.endswith("make it after the fork, in each worker (gunicorn without "
                                    "--preload or in its post_fork hook, a multiprocessing "
                                    "Pool's initializer or the spawn start method)"), name
        # The parent goes on as before: the child closed nothing of it and logged nothing.
        assert gateway.complete(messages(), model="good").model == "good"
        assert not gateway.report_outcome(decision.decision_id, 0.5).outcome.replaced
        store = gateway.store
        assert store is not None
        assert len(store.requests(20, None)[0]) == 2
    finally:
        gateway.close()


@pytest.mark.anyio
async def test_a_closed_gateway_refuses_async_calls(gw_fake: FakeProviderProcess,
                                                     tmp_path: Path) -> None:
    async with _configured(gw_fake, tmp_path) as gateway:
        pass
    with pytest.raises(StoreError, match="the gateway is closed"):
        await gateway.acomplete(messages(), model="good")
    with pytest.raises(StoreError, match="the gateway is closed"):
        await gateway.aroute("Summarise the meeting notes.")


@pytest.mark.parametrize(("field", "kwargs"), [
    ("session_id", {"session_id": 42}),
    ("session_id", {"session_id": b"conversation-1"}),
    ("tenant", {"tenant": 7}),
    ("key", {"key": 12345}),
    ("decision", {"decision": "not-a-decision"}),
    ("models", {"models": "good"}),
    ("models", {"models": ["good", 3]}),
    ("models", {"models": {"good": 1}}),
    ("models", {"models": {"good"}}),
])
def test_the_in_process_door_names_an_argument_of_the_wrong_type(
        local: Gateway, field: str, kwargs: dict[str, Any]) -> None:
    store = local.store
    assert store is not None
    before, _ = store.requests(1000, None)
    with pytest.raises(InvalidInputError) as caught:
        local.complete(messages(), **kwargs)
    assert caught.value.field == field and "must be" in str(caught.value)
    after, _ = store.requests(1000, None)
    assert len(after) == len(before)  # refused before anything was routed, called or logged


@pytest.mark.parametrize(("value", "says"), [
    (float("inf"), "is infinity, too large a number (what 1e400, or any number past about "
                   "1.8e308, reads as); send finite numbers only"),
    (float("nan"), "is NaN, not a finite number; send finite numbers only")])
def test_the_in_process_door_refuses_a_cost_weight_not_finite_as_the_http_body_does(
        local: Gateway, value: float, says: str) -> None:
    """A λ of infinity or NaN given in process is named and told in the words a body's
    cost_weight is over HTTP, where it was "must be at most 10,000" and "is NaN; use ..."."""
    store = local.store
    assert store is not None
    before = len(store.requests(1000)[0])
    for call in (lambda: local.complete(messages(), model="auto", cost_weight=value),
                 lambda: local.route("hi", cost_weight=value)):
        with pytest.raises(InvalidInputError) as caught:
            call()
        assert str(caught.value) == f"cost_weight: {says}"
    assert len(store.requests(1000)[0]) == before


def test_learning_status_refuses_a_bare_tenant_name(local: Gateway) -> None:
    with pytest.raises(InvalidInputError) as caught:
        local.learning_status("acme")  # a str is a sequence of one-letter names
    assert caught.value.field == "tenants" and "[name]" in str(caught.value)
    assert "default" in local.learning_status(["default"])["tenants"]


def _loop_thread(gateway: Gateway) -> threading.Thread:
    """The thread of the event loop the gateway's synchronous methods run on."""
    assert gateway._sync is not None
    return gateway._sync.thread


def test_closing_the_gateway_logs_a_stream_left_open(gw_fake: FakeProviderProcess,
                                                      tmp_path: Path) -> None:
    gateway = _configured(gw_fake, tmp_path)
    stream = gateway.stream(messages(), model="good")
    assert next(stream).model == "good"  # read a little, then the gateway closes under it
    thread = _loop_thread(gateway)
    gateway.close()
    with pytest.raises(StoreError, match="the gateway was closed while this stream was open"):
        next(stream)
    stream.close()  # closing it again is harmless
    assert not thread.is_alive()
    with _restarted(gateway) as entries:
        assert [(e["id"], e["status"]) for e in entries] == [
            (stream.switchpoint.request_id, "client_closed")]


@pytest.mark.anyio
async def test_aclose_logs_open_streams_and_stops_the_sync_loop(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    gateway = _configured(gw_fake, tmp_path)
    synced = gateway.stream(messages(), model="good")  # on the synchronous methods' loop
    streamed = await gateway.astream(messages(), model="good")  # on this loop
    thread = _loop_thread(gateway)
    await gateway.aclose()
    assert not thread.is_alive()  # the synchronous methods' loop is stopped too
    with _restarted(gateway) as entries:
        assert {(e["id"], e["status"]) for e in entries} == {
            (synced.switchpoint.request_id, "client_closed"),
            (streamed.switchpoint.request_id, "client_closed")}


@pytest.mark.anyio
async def test_aclose_waits_for_housekeeping_the_other_doors_loop_started(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The first request starts housekeeping (pins purged, data_dir's lock checked) on the
    loop it runs on: here the synchronous methods' loop. Closing from this loop while that
    run was still under way awaited a future of the other loop (a RuntimeError, and the
    gateway left open); it now waits for the run, then closes."""
    gateway = _configured(gw_fake, tmp_path)
    housekeeping, ran = gateway._housekeeping.run, threading.Event()

    def slow(purge: bool, retention_days: float | None) -> None:
        time.sleep(0.5)
        housekeeping(purge, retention_days)
        ran.set()

    monkeypatch.setattr(gateway._housekeeping, "run", slow)
    reply = gateway.complete(messages(), model="good")  # on the synchronous methods' loop
    assert reply.switchpoint.model == "good" and not ran.is_set()
    await gateway.aclose()
    assert ran.is_set()  # waited for, not left running
    with pytest.raises(StoreError, match="the gateway is closed"):
        await gateway.acomplete(messages(), model="good")


def test_housekeeping_asked_for_by_both_doors_at_once_starts_one_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request asks for housekeeping, on its door's loop: the synchronous methods' loop
    and the caller's run on threads of their own. One is held where it has found a run due
    but not yet marked it started (reading the pins' purge interval) while the other asks:
    both started a run (two prunes of one database at once, and closing waited for one of
    them); the second now waits for the first, finds its run started and starts none."""
    settings = load_settings(None, overrides={"data_dir": str(tmp_path)}, environ={})
    gateway = Gateway(settings)
    runs: list[bool] = []
    monkeypatch.setattr(gateway._housekeeping, "run", lambda purge, days: runs.append(purge))
    inside, go = threading.Event(), threading.Event()

    class Held:
        """The gateway settings, the first read of the purge interval held until ``go``."""

        def __getattr__(self, name: str) -> Any:
            return getattr(settings.gateway, name)

        @property
        def pin_purge_interval_s(self) -> float:
            if not inside.is_set():
                inside.set()
                go.wait(10)
            return float(settings.gateway.pin_purge_interval_s)

    held = settings.model_copy(update={"gateway": Held()})
    monkeypatch.setattr(gateway.state, "peek", lambda: SimpleNamespace(settings=held))
    first = threading.Thread(target=gateway._housekeeping.maintain)
    first.start()
    assert inside.wait(10)
    second = threading.Thread(target=gateway._housekeeping.maintain)
    second.start()
    second.join(0.5)  # (it started its own run meanwhile; now it waits for the first)
    go.set()
    first.join(10)
    second.join(10)
    assert not first.is_alive() and not second.is_alive()
    gateway.close()  # waits for the run under way
    assert runs == [True]


def _held_after_the_open_check(gateway: Gateway, monkeypatch: pytest.MonkeyPatch
                                ) -> tuple[threading.Event, threading.Event]:
    """The first request to read the live router (just after its open check) waits there
    for ``go``, having set ``inside``."""
    live, inside, go = gateway.state.live, threading.Event(), threading.Event()

    def held() -> Any:
        if not inside.is_set():
            inside.set()
            assert go.wait(10)
        return live()

    monkeypatch.setattr(gateway.state, "live", held)
    return inside, go


@pytest.mark.parametrize("attempt", range(3))
def test_closing_waits_for_a_request_past_its_open_check_and_refuses_the_next(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        attempt: int) -> None:
    """A request on a thread of its own passes its open check, then the gateway closes: the
    request went on over the state being closed (its decision returned but not logged, the
    store closed under it; a housekeeping run started on the pins, data_dir's lock and the log
    just closed, that closing never waited for). Closing now waits for the requests under way:
    the decision is logged and the run it started is done before the state closes. A request
    that comes once closing has begun is refused, saying the gateway is closed, and logs
    nothing."""
    gateway = _configured(gw_fake, tmp_path)
    runs: list[str] = []

    def housekeeping(purge: bool, days: object) -> None:
        runs.append("started")
        time.sleep(0.2)
        runs.append("done")

    monkeypatch.setattr(gateway._housekeeping, "run", housekeeping)
    inside, go = _held_after_the_open_check(gateway, monkeypatch)
    requester, outcome = in_background(
        lambda: gateway.aroute("What is the capital of France?"))
    assert inside.wait(10)
    closer, closed = closing_in_background(gateway)
    with pytest.raises(StoreError, match="the gateway is closed"):
        asyncio.run(gateway.aroute("What is the capital of Spain?"))
    time.sleep(0.2)
    assert not closed.is_set()  # closing waits for the request under way
    go.set()
    requester.join(10)
    closer.join(20)
    assert not requester.is_alive() and closed.is_set()
    assert len(outcome) == 1 and isinstance(outcome[0], RoutingDecision), outcome
    assert runs == ["started", "done"]  # (waited for before the state closed)
    data = tmp_path / "data"
    assert db_rows(data, "SELECT id FROM decisions") == [(outcome[0].decision_id,)]
    # Opened again, the gateway serves and logs again.
    gateway.start()  # (the hold is spent: the router is read straight away)
    try:
        gateway.route("What is the capital of France?")
    finally:
        gateway.close()
    assert len(db_rows(data, "SELECT id FROM decisions")) == 2


def test_a_gateway_called_from_loop_after_loop_holds_nothing_of_the_loops_that_closed(
        gw_fake: FakeProviderProcess, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Each ``asyncio.run`` is an event loop of its own. The upstream clients a loop used are
    closed on it as it ends, their connections with them (they were dropped once the loop had
    closed, each socket left unclosed: a ResourceWarning); a stream read in part and never
    closed cannot be closed again once its loop has closed: the gateway drops it and says which
    streams went unlogged."""
    gateway = _configured(gw_fake, tmp_path)

    async def complete() -> str:
        answer = await gateway.acomplete(messages(), model="good")
        return answer.model

    async def read_one_chunk() -> None:
        stream = await gateway.astream(messages(), model="good")
        async for _ in stream:
            break  # and never closed

    gc.collect()  # (what earlier tests left is theirs, not this one's)
    try:
        with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"), \
                warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always", ResourceWarning)
            for _ in range(12):
                assert asyncio.run(complete()) == "good"
                assert len(gateway.pool) == 0  # closed as its loop ended
                asyncio.run(read_one_chunk())
                assert len(gateway._streams.open_streams) == 1  # the last one's loop alone
            gc.collect()
        left = [r.getMessage() for r in caplog.records if "neither finished" in r.getMessage()]
        assert len(left) == 11 and "await stream.aclose()" in left[0]
        assert [str(w.message) for w in said if issubclass(w.category, ResourceWarning)] == []
    finally:
        gateway.close()


def _deadline_config(fake: FakeProviderProcess, root: Path, max_total_s: float,
                     extra: str = "") -> Path:
    """The usual config with a short request deadline and a budget on ``good`` (so each of its
    requests holds a reservation until it is settled), and ``extra``."""
    config = root / "switchpoint.yaml"
    gateway = GATEWAY.replace("max_total_s: 10", f"max_total_s: {max_total_s}")
    assert gateway != GATEWAY
    config.write_text(config_text(fake, gateway=gateway) + "budgets: {models: {good: 50/day}}\n"
                      + extra, encoding="utf-8")
    return config


def _trickling(fake: FakeProviderProcess, root: Path, max_total_s: float, every: float = 0.05,
               extra: str = "") -> tuple[Gateway, SQLiteStore, Ledger]:
    """A gateway on :func:`_deadline_config` (with ``extra``), its store and its budgets'
    ledger, whose next answer from ``good`` is long and slow, never silent: after its first
    chunk, a byte every ``every`` seconds (a chunk is some 150 bytes)."""
    gateway = Gateway.from_config(_deadline_config(fake, root, max_total_s, extra),
                                  loader=FACTORY, env=KEYS)
    assert gateway.store is not None
    fake.script("good", f"trickle:every={every}")
    return gateway, gateway.store, gateway.governor.ledger


@contextlib.contextmanager
def _restarted(gateway: Gateway) -> Iterator[list[dict[str, Any]]]:
    """The closed ``gateway`` started again, and its logged requests, newest first; closed
    again after the block."""
    store = gateway.store
    assert store is not None
    gateway.start()
    try:
        yield store.requests(20, None)[0]
    finally:
        gateway.close()


def _settled_when_restarted(gateway: Gateway) -> list[dict[str, Any]]:
    """Start the closed ``gateway`` again and see that it carried no budget hold over (no
    ticket open, nothing held, something spent); its logged requests, newest first."""
    with _restarted(gateway) as entries:
        assert gateway.governor.ledger.open_tickets() == 0
        [budget] = gateway.budget_status()
        assert budget["held_usd"] == 0 and budget["spent_usd"] > 0
        return entries


def _upstream_let_go(fake: FakeProviderProcess) -> None:
    """Wait until the last request ``fake`` had is seen closed by the gateway: a request
    left on an event loop stopped, its connection ended as the gateway closed, where it stayed
    open (the provider generating on) until the loop ran again or was collected."""
    deadline = time.monotonic() + 2
    while not fake.requests()[-1].get("closed_at"):
        assert time.monotonic() < deadline, "the upstream connection was kept"
        time.sleep(0.02)


def _closed_at_once(gateway: Gateway, caplog: pytest.LogCaptureFixture, *,
                    by_aclose: bool = False) -> list[str]:
    """Close ``gateway`` (``by_aclose``: by aclose() on a loop of its own), whose requests
    left are on stopped loops: it does not wait for them (it waited max_total_s and 2 s more
    for each). Returns what it warned of."""
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
        if by_aclose:
            asyncio.run(gateway.aclose())
        else:
            gateway.close()
    assert time.monotonic() - started < 2
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def _until(what: Callable[[], object], seconds: float = 10.0) -> None:
    """Wait, with the event loop running, until ``what()`` is true."""
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "it never happened"
        await asyncio.sleep(0.05)


@pytest.mark.anyio
@pytest.mark.parametrize("kept", [True, False], ids=["held-unread", "dropped"])
async def test_a_stream_left_unread_on_a_running_loop_is_closed_logged_and_settled_once(
        gw_fake: FakeProviderProcess, tmp_path: Path, kept: bool) -> None:
    """A caller that reads part of a stream and then neither reads on nor closes it, while its
    event loop runs on: at the request's deadline (gateway.max_total_s) the gateway closes the
    upstream, releases the budget held and logs the request once, as a stream broken by that
    deadline (not as closed by the client, who did not close it)."""
    gateway, store, ledger = _trickling(gw_fake, tmp_path, 1.5)
    try:
        stream = await gateway.astream(messages(), model="good")
        assert (await anext(stream)).model == "good"  # read a little, then no more
        request_id = stream.switchpoint.request_id
        assert ledger.open_tickets() == 1 and len(gateway._streams.open_streams) == 1
        held = [stream] if kept else []
        del stream
        await _until(lambda: store.requests(20, None)[0])
        entries, _ = store.requests(20, None)
        assert [(e["id"], e["status"]) for e in entries] == [(request_id, "stream_broken")]
        assert "max_total_s" in entries[0]["error"]
        assert entries[0]["error_kind"] == "stream_broken"
        assert ledger.open_tickets() == 0 and not gateway._streams.open_streams
        # (let go by the commit's callback, on the writer's thread, just after the entry is
        # readable: feedback on the id meanwhile finds the stream or the entry, never neither)
        await _until(lambda: request_id not in gateway.learning.intake._streams, 5.0)
        assert request_id not in gateway.learning.intake._streams
        await _until(lambda: gw_fake.requests()[-1].get("closed_at"))  # the upstream is let go
        for stream in held:
            with pytest.raises(StreamBroken, match="nothing read it before the request's "
                                                   "deadline"):
                await anext(stream)
            await stream.aclose()  # closing it now is harmless
        assert len(store.requests(20, None)[0]) == 1  # logged once
    finally:
        await gateway.aclose()


def test_a_client_that_hangs_up_mid_stream_lets_the_upstream_go_and_is_logged_once(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The HTTP door: a client that disconnects mid-stream (well before the deadline) closes
    the upstream connection, releases the budget held and is logged once, as closed."""
    settings = load_settings(_deadline_config(gw_fake, tmp_path, 60), environ={})
    gw_fake.script("good", "trickle:every=0.05")
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        gateway = server.service.gateway
        with httpx.stream("POST", f"{server.base}/v1/chat/completions", timeout=10, json={
                "model": "good", "stream": True, "messages": messages()}) as r:
            request_id = r.headers["x-switchpoint-request-id"]
            events = r.iter_bytes()
            assert b"slow answer" in next(events)  # the first event ...
            assert gateway.governor.ledger.open_tickets() == 1 and gateway._streams.open_streams
        # ... then hang up
        entry = log_entry(server, request_id)
        assert entry["status"] == "client_closed" and entry["model"] == "good"
        deadline = time.monotonic() + 10
        while not gw_fake.requests()[-1].get("closed_at"):  # the upstream is let go
            assert time.monotonic() < deadline, "the upstream connection was kept"
            time.sleep(0.05)
        assert gateway.governor.ledger.open_tickets() == 0 and not gateway._streams.open_streams
        page = httpx.get(f"{server.base}/v1/router/requests", params={"limit": 100}).json()
        assert [e["id"] for e in page["data"]].count(request_id) == 1


def test_a_stream_stalled_on_a_slow_reading_client_is_logged_as_broken_at_its_deadline(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """The HTTP door: a client that stays connected but stops reading (its socket's buffers
    fill, so the gateway cannot send on) holds the stream past the request's deadline; the
    gateway then closes it and logs it as broken by the deadline, not as closed by the
    client, which never hung up."""
    settings = load_settings(_deadline_config(gw_fake, tmp_path, 1.5), environ={})
    gw_fake.script("good", "huge:mb=64")  # far more than the sockets between hold
    with thread_server(create_app(settings, loader=FACTORY, provider_env=KEYS)) as server:
        gateway = server.service.gateway
        with httpx.stream("POST", f"{server.base}/v1/chat/completions", timeout=30, json={
                "model": "good", "stream": True, "messages": messages()}) as r:
            request_id = r.headers["x-switchpoint-request-id"]
            events = r.iter_bytes()  # (kept: dropping it would close the connection)
            assert next(events).startswith(b"data: ")  # a little, then no more
            entry = log_entry(server, request_id, timeout=15)  # still connected
            assert gateway.governor.ledger.open_tickets() == 0 and not gateway._streams.open_streams
        assert entry["status"] == "stream_broken", (entry["error"], entry["error_kind"])
        assert entry["error_kind"] == "stream_broken" and "max_total_s" in entry["error"]
        assert entry["model"] == "good" and entry["http_status"] == 200


def test_a_synchronous_stream_left_unread_is_closed_logged_and_settled_at_its_deadline(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gateway = Gateway.from_config(_deadline_config(gw_fake, tmp_path, 1.5), loader=FACTORY,
                                  env=KEYS)
    store = gateway.store
    assert store is not None
    gw_fake.script("good", "trickle:every=0.05")
    try:
        with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
            stream = gateway.stream(messages(), model="good")
            assert next(stream).model == "good"  # read a little, then no more
            deadline = time.monotonic() + 10
            while not store.requests(20, None)[0]:
                assert time.monotonic() < deadline, "the stream was never logged"
                time.sleep(0.05)
        entries, _ = store.requests(20, None)
        assert [(e["id"], e["status"]) for e in entries] == [
            (stream.switchpoint.request_id, "stream_broken")]
        assert "gateway closed it" in entries[0]["error"]
        assert gateway.governor.ledger.open_tickets() == 0
        with pytest.raises(StreamBroken, match=r"gateway\.max_total_s: 1\.5s\) ran out"):
            next(stream)
        stream.close()
        assert any("await stream.aclose()" in r.getMessage() for r in caplog.records)
    finally:
        gateway.close()
    with _restarted(gateway) as entries:
        assert len(entries) == 1  # closing the gateway logged it no more


@pytest.mark.parametrize("read", [2, 0], ids=["loop-left-with-break", "never-read"])
def test_a_synchronous_stream_let_go_of_unclosed_is_closed_settled_and_logged_at_once(
        gw_fake: FakeProviderProcess, tmp_path: Path, read: int) -> None:
    """``for chunk in gateway.stream(...)`` left with ``break`` (or a stream never read) drops
    the last reference to an open stream, as a generator is dropped half-read: it is closed
    then, as ``close()`` closes it (its upstream let go, its budget hold settled, logged once
    as closed by the client), not held until its deadline (an hour here) and then logged as
    left unread."""
    # (a second chunk a byte each 10 ms: 1.5 s, where each 50 ms took 8; the rest 75 s more)
    gateway, store, ledger = _trickling(gw_fake, tmp_path, 3600, every=0.01)
    try:
        got: list[object] = []
        if read:
            for chunk in gateway.stream(messages(), model="good"):
                got.append(chunk)
                if len(got) == read:
                    break
            else:
                raise AssertionError("the stream ended before it was let go of")
        else:
            gateway.stream(messages(), model="good")  # never read, dropped at once
        deadline = time.monotonic() + 10
        while not store.requests(20, None)[0]:
            assert time.monotonic() < deadline, "the stream was not closed as it was let go of"
            time.sleep(0.05)
        entries, _ = store.requests(20, None)
        assert [e["status"] for e in entries] == ["client_closed"]
        assert entries[0]["model"] == "good"
        assert ledger.open_tickets() == 0 and not gateway._streams.open_streams
        [budget] = gateway.budget_status()  # charged what the upstream may bill, nothing held
        assert budget["spent_usd"] > 0 and budget["held_usd"] == 0
        while not gw_fake.requests()[-1].get("closed_at"):  # the upstream is let go
            assert time.monotonic() < deadline, "the upstream connection was kept"
            time.sleep(0.05)
    finally:
        gateway.close()
    with _restarted(gateway) as entries:
        assert len(entries) == 1  # closing the gateway logged it no more


def test_a_stream_left_open_as_its_event_loop_closed_is_logged_and_its_hold_settled(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An ``asyncio.run`` that returns with a stream neither read to its end nor closed: the
    stream can never be read on nor closed on that loop. The gateway's next stream, or its
    closing, logs it as broken saying why and settles its budget hold (charged what came),
    where the hold was kept (and, on disk, carried into the next run) and nothing logged."""
    gateway, store, ledger = _trickling(gw_fake, tmp_path, 3600)

    async def left_open(read: bool) -> str:
        stream = await gateway.astream(messages(), model="good")
        if read:
            await anext(stream)
        return stream.switchpoint.request_id

    async def read_whole() -> str:
        stream = await gateway.astream(messages(), model="good")
        async for _ in stream:
            pass
        return stream.switchpoint.request_id

    def statuses() -> dict[str, tuple[str, str]]:
        return {e["id"]: (e["status"], e["error"] or "") for e in store.requests(20, None)[0]}

    try:
        with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
            first = asyncio.run(left_open(read=True))
            assert ledger.open_tickets() == 1
            second = asyncio.run(read_whole())  # (its commit settles the first)
            deadline = time.monotonic() + 10
            while len(statuses()) < 2:
                assert time.monotonic() < deadline, "the stream left open was never logged"
                time.sleep(0.05)
            assert statuses()[second][0] == "ok"
            status, error = statuses()[first]
            assert status == "stream_broken" and "its event loop closed" in error
            assert ledger.open_tickets() == 0
            third = asyncio.run(left_open(read=False))
            assert ledger.open_tickets() == 1
    finally:
        gateway.close()  # (it settles the third)
    assert any("budget hold settled" in r.getMessage() for r in caplog.records)
    restarted = {e["id"]: e["status"] for e in _settled_when_restarted(gateway)}
    assert restarted[third] == "stream_broken" and len(restarted) == 3  # (nothing carried over)


@pytest.mark.parametrize("where", ["stopped", "thread-gone"])
def test_a_stream_left_open_on_a_stopped_loop_is_logged_and_settled_as_the_gateway_closes(
        gw_fake: FakeProviderProcess, tmp_path: Path, where: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A stream read once on a loop a ``run_until_complete`` returned from, the loop neither
    run again nor closed (or left so by a thread that ended): closing does not wait for it
    (nothing can end it but the closing), and logs it as broken saying so, its budget hold
    settled and its upstream connection ended, where closing waited out its whole drain bound
    and left the hold open, no log row and the connection open. Closed by close(), and by
    aclose() on a loop of its own."""
    gateway, _, ledger = _trickling(gw_fake, tmp_path, 3)

    async def read_once() -> str:
        stream = await gateway.astream(messages(), model="good")
        await anext(stream)
        return stream.switchpoint.request_id

    made: list[str] = []
    loop = asyncio.new_event_loop()
    try:
        if where == "thread-gone":
            thread = threading.Thread(target=lambda: made.append(
                asyncio.new_event_loop().run_until_complete(read_once())))
            thread.start()
            thread.join(10)
        else:
            made.append(loop.run_until_complete(read_once()))
        assert ledger.open_tickets() == 1
        said = _closed_at_once(gateway, caplog, by_aclose=where == "thread-gone")
        assert any("1 request(s) on an event loop stopped" in m for m in said)
        _upstream_let_go(gw_fake)
    finally:
        gateway.close()
        loop.close()
    entries = _settled_when_restarted(gateway)
    assert [(e["id"], e["status"]) for e in entries] == [(made[0], "stream_broken")]
    assert "event loop was stopped" in entries[0]["error"]


def test_a_call_left_on_a_stopped_loop_is_logged_and_settled_as_the_gateway_closes(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A plain call waiting for its answer on a loop a ``run_until_complete`` returned from,
    the loop neither run again nor closed: closing does not wait for it, and logs it once as
    closed by the client saying why, its budget hold settled (its try, sent, charged as a
    cancelled one is) and its upstream connection ended, where the hold was kept until its
    deadline (carried into the next run), nothing was logged and the connection stayed open.
    Its loop run again, it logs and charges nothing more."""
    gateway, _, ledger = _trickling(gw_fake, tmp_path, 3)
    gw_fake.script("good", "hang:seconds=5")
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(gateway.acomplete(messages(), model="good"))
        loop.run_until_complete(_until(gw_fake.requests))  # (its request is upstream)
        assert ledger.open_tickets() == 1
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
            gateway.close()
        assert time.monotonic() - started < 2  # (it waited 5 s: max_total_s and 2 s more)
        assert any("1 call(s) were left waiting" in r.getMessage() for r in caplog.records)
        _upstream_let_go(gw_fake)
        task.cancel()
        [ended] = loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        assert isinstance(ended, asyncio.CancelledError)
    finally:
        gateway.close()
        loop.close()
    entries = _settled_when_restarted(gateway)
    assert [(e["model"], e["status"]) for e in entries] == [(None, "client_closed")]
    assert "event loop was stopped" in entries[0]["error"]


def _closes_again_quietly(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    """Start ``gateway`` again and close it: nothing its last closing settled on a stopped
    loop is waited for or warned of again."""
    caplog.clear()
    gateway.start()
    with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
        gateway.close()
    assert [r.getMessage() for r in caplog.records
            if "event loop stopped" in r.getMessage()] == []


@contextlib.contextmanager
def _started_again(gateway: Gateway, store: SQLiteStore) -> Iterator[list[dict[str, Any]]]:
    """``gateway`` started again (then closed): the request log's entries, and no budget hold
    left open."""
    gateway.start()
    try:
        entries, _ = store.requests(20, None)
        assert gateway.governor.ledger.open_tickets() == 0
        yield entries
    finally:
        gateway.close()


def _comparing_on_a_stopped_loop(fake: FakeProviderProcess, root: Path
                                 ) -> tuple[Gateway, SQLiteStore, Ledger, asyncio.Task[Any]]:
    """A gateway (see :func:`_trickling`), its store and ledger, and the task of its comparison
    of ``good`` and ``cheap``, whose calls wait for their answers on a loop of its own, stopped
    (a ``run_until_complete`` returned) once both are upstream."""
    gateway, store, ledger = _trickling(fake, root, 3)
    fake.script("good", "hang:seconds=5")
    fake.script("cheap", "hang:seconds=5")
    loop = asyncio.new_event_loop()
    task = loop.create_task(gateway.acompare(messages(), ["good", "cheap"]))
    loop.run_until_complete(_until(lambda: len(fake.requests()) == 2))
    return gateway, store, ledger, task


def test_a_comparison_left_on_a_stopped_loop_is_settled_once_as_the_gateway_closes(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A comparison whose calls wait for their answers on a loop a ``run_until_complete``
    returned from: closing settles each call once (logged as closed by the client, its hold
    settled) and lets go of the comparison itself, so a later closing has nothing of it left
    to wait for or warn of, where the comparison stayed counted inside the gateway and every
    later closing warned of it again. Its closing counts it as one request, its calls within
    it, where it counted three."""
    gateway, store, ledger, task = _comparing_on_a_stopped_loop(gw_fake, tmp_path)
    loop = task.get_loop()
    try:
        assert ledger.open_tickets() == 2
        said = _closed_at_once(gateway, caplog)
        assert any("2 call(s) were left waiting" in m for m in said)
        # (what its caller made: one comparison, its two calls counted within it)
        assert any("1 request(s) on an event loop" in m for m in said), said
        _closes_again_quietly(gateway, caplog)
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        gateway.close()
        loop.close()
    with _started_again(gateway, store) as entries:
        assert [e["status"] for e in entries] == ["client_closed", "client_closed"]
        assert all("event loop was stopped" in e["error"] for e in entries)


@pytest.mark.parametrize(("stage", "closing"), [("routing", "close"), ("planned", "close"),
                                               ("routing", "aclose"), ("planned", "aclose")])
def test_a_request_left_routing_or_planned_on_a_stopped_loop_is_settled_as_the_gateway_closes(
        gw_fake: FakeProviderProcess, tmp_path: Path, stage: str, closing: str,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request still being routed, or planned (its budget hold reserved) but its call not
    begun, on a loop a ``run_until_complete`` returned from: closing logs it once as closed
    by the client saying why, releases its budget hold and gives back its place among its
    tenant's calls in flight, where it was neither logged nor let go of (the hold open until
    it expired, the tenant's place held for as long as the process ran, and every later
    closing warned of it again). Its loop run again, it calls no model and raises the closed
    error, logging and holding nothing more. Closed by close(), and by aclose() on a loop of
    its own."""
    gateway, store, ledger = _trickling(gw_fake, tmp_path, 3, extra="tenants: {acme: {}}\n")
    owner = 'tenant "acme"'
    slow = SlowPolicy(gateway)
    decided = threading.Event()
    made = MadeForACall.made

    def noted(self: MadeForACall, decision: RoutingDecision) -> RoutingDecision:
        made(self, decision)
        decided.set()
        return decision

    monkeypatch.setattr(MadeForACall, "made", noted)
    memory = gateway.router.learner.memory
    remembered = len(memory)
    loop = asyncio.new_event_loop()
    task = None
    try:
        if stage == "routing":
            task = loop.create_task(gateway.acomplete(messages(), models=["good"],
                                                      tenant="acme"))
            loop.run_until_complete(_until(slow.entered.is_set))
        else:
            call = ChatCall(body=check_chat_body({"model": "good", "messages": messages()}),
                            caller="test", tenant="acme")
            plan, live = loop.run_until_complete(gateway.plan(call))
            assert ledger.open_tickets() == 1
        assert gateway.in_flight.held(owner) == 1
        said = _closed_at_once(gateway, caplog, by_aclose=closing == "aclose")
        assert any("1 request(s) were left being routed or planned" in m for m in said)
        assert gateway.in_flight.held(owner) == 0 and ledger.open_tickets() == 0
        slow.release.set()
        if stage == "routing":  # the decision made for it is forgotten as it is made
            until(decided.is_set, "the router decides")
            assert len(memory) == remembered
        _closes_again_quietly(gateway, caplog)
        with pytest.raises(GatewayClosedError, match="event loop was stopped"):
            loop.run_until_complete(task if task is not None
                                    else gateway.execute(plan, live))
        assert gateway.in_flight.held(owner) == 0 and gw_fake.requests() == []
    finally:
        slow.release.set()
        if task is not None and not task.done():
            task.cancel()
            loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        gateway.close()
        loop.close()
    with _started_again(gateway, store) as entries:
        assert [(e["status"], e["tenant"]) for e in entries] == [("client_closed", "acme")]
        assert "event loop was stopped" in entries[0]["error"]
        if stage == "planned":
            assert entries[0]["id"] == plan.request_id
        [budget] = gateway.budget_status()
        assert budget["held_usd"] == 0 and budget["spent_usd"] == 0


def test_a_comparison_left_on_a_closed_loop_is_let_go_of_at_once_as_the_gateway_closes(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A comparison whose calls wait for their answers on a loop closed with them under way
    (closed, not just stopped: it never runs them again): the first closing settles its calls
    and lets go of the comparison at once, warning of it, where the comparison was let go of
    only by a closing that waited a 50 ms look or more for something else, so it stayed
    counted inside the gateway, closing after closing, and was never warned of."""
    gateway, store, ledger, task = _comparing_on_a_stopped_loop(gw_fake, tmp_path)
    task.get_loop().close()  # (its task pending: a closed loop runs it no more)
    try:
        assert ledger.open_tickets() == 2
        said = _closed_at_once(gateway, caplog)
        assert any("2 call(s) were left waiting" in m for m in said)
        assert any("1 request(s) on an event loop" in m for m in said), said
        assert not gateway._admission._inside  # (nothing of it is held)
        _closes_again_quietly(gateway, caplog)
    finally:
        gateway.close()
    with _started_again(gateway, store) as entries:
        assert [e["status"] for e in entries] == ["client_closed", "client_closed"]
    # (its coroutine, closed as it is collected, finds no loop to end on: said so, not here)
    monkeypatch.setattr(sys, "unraisablehook", lambda _: None)
    del task
    gc.collect()


def _run_again_as_closing_looks(monkeypatch: pytest.MonkeyPatch, task: asyncio.Task[Any],
                                looking: str, *, first: Callable[[], object] = lambda: None
                                ) -> list[object]:
    """As closing, in the chat door's ``looking`` method, looks at the loop of ``task``, left
    on it stopped, and sees it stopped: run that loop again on a thread of its own (its
    owner's; ``first`` called as it starts) until ``task`` has ended, before closing goes on.
    Returns what ``task`` ended with (a list that holds it once closing has looked)."""
    loop = task.get_loop()
    ended: list[object] = []
    owner = threading.Thread(target=lambda: ended.extend(loop.run_until_complete(
        asyncio.gather(task, return_exceptions=True))))
    look = getattr(ChatDoor, looking)
    looks = threading.Event()

    def run_again(on: asyncio.AbstractEventLoop) -> bool:
        stopped = runs_no_more(on)
        if looks.is_set() and on is loop and owner.ident is None:
            owner.start()
            first()
            owner.join(10)
            assert not owner.is_alive(), "the task did not end on its loop run again"
        return stopped

    async def looking_now(self: ChatDoor) -> None:
        looks.set()
        try:
            await look(self)
        finally:
            looks.clear()

    monkeypatch.setattr(chat_door, "runs_no_more", run_again)
    monkeypatch.setattr(ChatDoor, looking, looking_now)
    return ended


def test_a_loop_run_again_as_closing_looks_at_its_routing_ends_the_request_once(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A request being routed on a loop a ``run_until_complete`` returned from, whose owner
    runs the loop again from another thread just as closing has seen it stopped, so that the
    request is routed, answered and logged there: closing leaves it to its own end (logged
    once, as answered), where, acting on what it had seen, it settled it a second time,
    logging it again as closed by the client before any model was called."""
    gateway = Gateway.from_config(
        _deadline_config(gw_fake, tmp_path, 3, extra="tenants: {acme: {}}\n"),
        loader=FACTORY, env=KEYS)
    store = gateway.store
    assert store is not None
    slow = SlowPolicy(gateway)
    loop = asyncio.new_event_loop()
    task = loop.create_task(gateway.acomplete(messages(), models=["good"], tenant="acme"))
    ended = _run_again_as_closing_looks(monkeypatch, task, "_settle_unbegun",
                                        first=slow.release.set)
    try:
        loop.run_until_complete(_until(slow.entered.is_set))
        with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
            gateway.close()
        assert [type(e) for e in ended] == [ChatCompletion]
        assert not any("left being routed or planned" in r.getMessage()
                       for r in caplog.records)
        assert gateway.in_flight.held('tenant "acme"') == 0
    finally:
        slow.release.set()
        gateway.close()
        loop.close()
    with _started_again(gateway, store) as entries:
        assert [(e["status"], e["model"]) for e in entries] == [("ok", "good")]


def test_a_loop_run_again_as_closing_looks_at_its_call_ends_the_call_once(
        gw_fake: FakeProviderProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A call waiting for its answer on a loop a ``run_until_complete`` returned from, whose
    owner runs the loop again from another thread just as closing has seen it stopped, so
    that the answer is read, charged and logged there: closing leaves it to its own end
    (logged once, as answered, and told once), where, acting on what it had seen, it settled
    it a second time, telling the observer of it again as closed by the client, warning of
    it and ending the upstream connections of the loop that ran again."""
    told: list[tuple[str, str]] = []

    class Told:
        def on_request(self, record: Any) -> None:
            told.append((record.id, record.status))

        def on_decision(self, decision: Any) -> None:
            pass

        def on_store_error(self) -> None:
            pass

    gateway = Gateway.from_config(_deadline_config(gw_fake, tmp_path, 3), loader=FACTORY,
                                  env=KEYS, observer=Told())
    store = gateway.store
    assert store is not None
    gw_fake.script("good", "trickle:every=0.001")  # (the answer comes in a second or so)
    loop = asyncio.new_event_loop()
    task = loop.create_task(gateway.acomplete(messages(), model="good"))
    ended = _run_again_as_closing_looks(monkeypatch, task, "close_stopped")
    try:
        loop.run_until_complete(_until(gw_fake.requests))  # (its request is upstream)
        with caplog.at_level(logging.WARNING, logger="switchpoint.gateway"):
            gateway.close()
        assert [type(e) for e in ended] == [ChatCompletion]
        assert [status for _, status in told] == ["ok"]
        assert not any("left waiting for their answer" in r.getMessage()
                       for r in caplog.records)
    finally:
        gateway.close()
        loop.close()
    with _started_again(gateway, store) as entries:
        assert [(e["status"], e["model"]) for e in entries] == [("ok", "good")]
        [budget] = gateway.budget_status()
        assert budget["held_usd"] == 0 and budget["spent_usd"] > 0


@pytest.mark.parametrize("found_by", ["next chat", "closing", "stop"])
def test_a_plan_left_unexecuted_on_a_closed_loop_is_logged_and_its_hold_released(
        gw_fake: FakeProviderProcess, tmp_path: Path, found_by: str) -> None:
    """A request planned (its budget hold reserved) in an ``asyncio.run`` that returned
    without executing it can never be executed there: the gateway's next chat, its closing,
    or a stop on another loop, logs it once as closed by the client saying so and releases
    its hold, where they dropped it unlogged and left the hold open until it expired (into
    the next run).
    Executed on another loop after all, it raises the conflict error saying why, calling no
    model (its hold is gone)."""
    gateway, store, ledger = _trickling(gw_fake, tmp_path, 3)
    try:
        call = ChatCall(body=check_chat_body({"model": "good", "messages": messages()}),
                        caller="test")
        plan, live = asyncio.run(gateway.plan(call))
        assert ledger.open_tickets() == 1
        if found_by == "closing":
            gateway.close()
            gateway.start()
        elif found_by == "stop":
            assert asyncio.run(_stopped_in_flight(gateway)) == 0  # (none of its own loop)
        else:
            asyncio.run(gateway.acomplete(messages(), model="cheap"))
        logged = 2 if found_by == "next chat" else 1
        until(lambda: len(store.requests(20, None)[0]) == logged, "the plan is logged")
        [left] = [e for e in store.requests(20, None)[0] if e["id"] == plan.request_id]
        assert left["status"] == "client_closed" and "event loop closed" in left["error"]
        assert ledger.open_tickets() == 0
        with pytest.raises(ConflictError, match="event loop closed"):
            asyncio.run(gateway.execute(plan, live))
        assert len(gw_fake.requests()) == logged - 1  # (the next chat's alone)
        assert len(store.requests(20, None)[0]) == logged
    finally:
        gateway.close()
    with _started_again(gateway, store):
        [budget] = gateway.budget_status()
        assert budget["held_usd"] == 0


async def _stopped_in_flight(gateway: Gateway) -> int:
    """Stop what ``gateway`` has in flight on a loop of its own (a service's stop), waiting
    for the closings it starts: how many it ended."""
    ended = gateway.stop_in_flight("the service stops")
    await gateway.settled()
    return ended


@pytest.mark.parametrize("found_by", ["its deadline", "next chat"])
def test_a_plan_left_unexecuted_past_its_deadline_is_logged_and_its_hold_released(
        gw_fake: FakeProviderProcess, tmp_path: Path, found_by: str) -> None:
    """A request planned (its budget hold reserved) and not executed before its deadline
    (``gateway.max_total_s``) ran out is logged once as closed by the client saying so and its
    hold released: on its own loop, still running, as the deadline passes; on a loop that runs
    no more meanwhile (stopped, not closed), by the gateway's next chat. It was dropped
    unlogged by the next chat, its hold left open until it expired (the deadline and
    ``governance.reservation_grace_s`` more). Executed after that, it raises the conflict
    error saying why, calling no model."""
    gateway, store, ledger = _trickling(gw_fake, tmp_path, 1)
    call = ChatCall(body=check_chat_body({"model": "good", "messages": messages()}),
                    caller="test")

    def logged() -> list[dict[str, Any]]:
        return [e for e in store.requests(20, None)[0] if e["id"] == plan.request_id]

    loop = asyncio.new_event_loop()
    try:
        plan, live = loop.run_until_complete(gateway.plan(call))
        assert ledger.open_tickets() == 1
        if found_by == "its deadline":
            loop.run_until_complete(_until(logged, 5))
        else:
            until(lambda: time.perf_counter() - plan.started > 1, "the deadline passes")
            asyncio.run(gateway.acomplete(messages(), model="cheap"))
            until(lambda: bool(logged()), "the plan is logged")
        [left] = logged()
        assert left["status"] == "client_closed" and "deadline" in left["error"]
        assert ledger.open_tickets() == 0
        [budget] = gateway.governor.budget_status(gateway.settings)[0]
        assert budget["held_usd"] == 0 and budget["spent_usd"] == 0
        with pytest.raises(ConflictError, match="deadline"):
            loop.run_until_complete(gateway.execute(plan, live))
        assert len(gw_fake.requests()) == (0 if found_by == "its deadline" else 1)
        assert len(logged()) == 1
    finally:
        loop.close()
        gateway.close()


@pytest.mark.parametrize("stream", [False, True], ids=["answer", "stream"])
def test_a_plan_executed_again_calls_no_model_and_raises_the_conflict_error(
        gw_fake: FakeProviderProcess, tmp_path: Path, stream: bool) -> None:
    """One plan is one request: executed a second time (after its answer, or while its
    stream is open), it raises the conflict error saying so, calling no model and leaving
    the first execution's place in flight alone, where it called the model again, unlogged
    and uncharged (its budget hold settled by the first), and past any budget."""
    gateway = Gateway.from_config(_deadline_config(gw_fake, tmp_path, 9,
                                                   "tenants: {acme: {}}\n"),
                                  loader=FACTORY, env=KEYS)
    store, ledger = gateway.store, gateway.governor.ledger
    assert store is not None
    owner = 'tenant "acme"'
    call = ChatCall(body=check_chat_body({"model": "good", "messages": messages(),
                                          "stream": stream}), caller="test", tenant="acme")

    async def twice() -> None:
        plan, live = await gateway.plan(call)
        first = await gateway.execute(plan, live)
        with pytest.raises(ConflictError, match="executed already"):
            await gateway.execute(plan, live)
        assert gateway.in_flight.held(owner) == (1 if stream else 0)
        if isinstance(first, ChatStream):
            [chunk async for chunk in first]
        assert len(gw_fake.requests()) == 1 and gateway.in_flight.held(owner) == 0

    try:
        asyncio.run(twice())
        until(lambda: ledger.open_tickets() == 0, "the stream's hold is settled")
        [entry] = store.requests(20, None)[0]
        assert entry["status"] == "ok"
        [budget] = gateway.budget_status()
        assert budget["spent_usd"] == entry["charged_usd"] > 0
    finally:
        gateway.close()


def test_a_stream_read_on_another_loop_while_its_own_runs_is_refused_saying_where_to_read_it(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Nothing is read and the stream goes on, read on the loop that made it (then closed),
    where the read broke it with asyncio's "attached to a different loop" (logged
    stream_broken)."""
    gateway, store, ledger = _trickling(gw_fake, tmp_path, 3600, every=0.001)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        stream = asyncio.run_coroutine_threadsafe(
            gateway.astream(messages(), model="good"), loop).result(10)
        with pytest.raises(StreamInUseError, match=r"made on another event loop, which still "
                                                   r"runs.*read it on the loop that made it"):
            asyncio.run(anext(stream))

        async def read_on() -> str:
            chunk = await anext(stream)
            await stream.aclose()
            return chunk.model

        assert asyncio.run_coroutine_threadsafe(read_on(), loop).result(10) == "good"
        until(lambda: bool(store.requests(20, None)[0]), "the closed stream is logged")
        entries, _ = store.requests(20, None)
        assert [e["status"] for e in entries] == ["client_closed"], entries[0]["error"]
        assert ledger.open_tickets() == 0
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        gateway.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_failure_inside_the_gateway_leaves_the_sessions_pin_as_it_was(
        stream: bool, gw: ThreadServer, local: Gateway, gw_fake: FakeProviderProcess,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The pinned model answers, then the gateway's own code fails on its answer (a bug, not
    the upstream's doing; the model's health is not charged): the pin is left as it was, not
    evicted as if the model had failed, through either door, plain or streamed."""
    from switchpoint.gateway.failover import FailoverStream
    from switchpoint.gateway.providers.openai import OpenAIProvider

    real_complete, real_prepare = OpenAIProvider.complete, FailoverStream._prepare
    broken = {"on": False}
    seen: dict[int, int] = {}  # content chunks each stream has prepared

    async def complete(self: OpenAIProvider, *args: Any, **kwargs: Any) -> Any:
        answer = await real_complete(self, *args, **kwargs)
        if broken["on"]:
            raise RuntimeError("a bug in the gateway")
        return answer

    def prepare(self: FailoverStream, chunk: dict[str, Any]) -> dict[str, Any] | None:
        prepared = real_prepare(self, chunk)
        if broken["on"] and any((c.get("delta") or {}).get("content")
                                for c in chunk.get("choices") or []):
            seen[id(self)] = seen.get(id(self), 0) + 1
            if seen[id(self)] > 1:  # after the answer has started
                raise RuntimeError("a bug in the gateway")
        return prepared

    monkeypatch.setattr(OpenAIProvider, "complete", complete)
    monkeypatch.setattr(FailoverStream, "_prepare", prepare)
    said: dict[str, tuple[str, str, bool, str]] = {}
    for door in _doors(gw, local, gw_fake):
        sid = f"doors-internal-{uuid.uuid4().hex}"
        if door == "http":
            client(gw).chat.completions.create(model="cheap", messages=messages(),
                                               extra_headers={"x-session-id": sid})
            broken["on"] = True
            if stream:
                with client(gw).chat.completions.with_streaming_response.create(
                        model="auto", messages=messages(), stream=True,
                        extra_headers={"x-session-id": sid}) as response:
                    assert response.headers["x-switchpoint-pin"] == "hard"
                    request_id = response.headers["x-switchpoint-request-id"]
                    with pytest.raises(openai.APIError):
                        for _ in response.parse():
                            pass
                entry = log_entry(gw, request_id)
                assert entry["status"] == "stream_broken" and entry["pin_state"] == "hard"
                assert entry["error_kind"] == "internal_error"
            else:
                with pytest.raises(openai.InternalServerError):
                    client(gw).chat.completions.create(model="auto", messages=messages(),
                                                       extra_headers={"x-session-id": sid})
            broken["on"] = False
            raw = client(gw).chat.completions.with_raw_response.create(
                model="auto", messages=messages(), extra_headers={"x-session-id": sid})
            entry = log_entry(gw, raw.headers["x-switchpoint-request-id"])
            pin = gw.service.gateway.pinner.store.get(entry["session_id"])
            health = gw.service.gateway.health_snapshot()["models"]["cheap"]
        else:
            local.complete(messages(), model="cheap", session_id=sid)
            broken["on"] = True
            if stream:
                answer = local.stream(messages(), session_id=sid)
                assert answer.switchpoint.pin_state == "hard"
                with pytest.raises(StreamBroken):
                    list(answer)
                assert answer.switchpoint.pin_state == "hard"
            else:
                with pytest.raises(RuntimeError):
                    local.complete(messages(), session_id=sid)
            broken["on"] = False
            info = local.complete(messages(), session_id=sid).switchpoint
            assert local.store is not None
            entries, _ = local.store.requests(50, None)
            entry = next(e for e in entries if e["id"] == info.request_id)
            pin = local.pinner.store.get(entry["session_id"])
            health = local.health_snapshot()["models"]["cheap"]
        assert pin is not None
        said[door] = (entry["pin_state"], entry["model"], pin.failed, pin.model)
        assert health["failures"] == 0
    assert said["http"] == said["python"] == ("hard", "cheap", False, "cheap")


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["timed out", "task cancelled"])
async def test_a_stream_whose_read_is_cancelled_is_closed_settled_and_logged_once(
        gw_fake: FakeProviderProcess, tmp_path: Path, how: str) -> None:
    """A read given up by its caller (a timeout around it, or its task cancelled) cuts the
    answer it was reading. The stream is closed there, as an HTTP client that leaves closes
    it: its upstream let go, its budget hold settled and the request logged once as closed by
    the client; a later read says why it ended (it used to end as if the answer were whole,
    the upstream and the hold kept until the deadline)."""
    gateway, store, ledger = _trickling(gw_fake, tmp_path, 60)
    try:
        stream = await gateway.astream(messages(), model="good")
        assert (await anext(stream)).model == "good"
        if how == "timed out":
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(anext(stream), 0.1)
        else:
            reader = asyncio.create_task(anext(stream))
            await asyncio.sleep(0.1)
            reader.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reader
        assert ledger.open_tickets() == 0 and not gateway._streams.open_streams
        with pytest.raises(StreamBroken, match="a read of this stream was cancelled"):
            await anext(stream)
        await _until(lambda: store.requests(20, None)[0])
        entries, _ = store.requests(20, None)
        assert [(e["id"], e["status"]) for e in entries] == [
            (stream.switchpoint.request_id, "client_closed")]
        await _until(lambda: gw_fake.requests()[-1].get("closed_at"))  # the upstream is let go
        await stream.aclose()  # closing it again is harmless
        assert len(store.requests(20, None)[0]) == 1
    finally:
        await gateway.aclose()


@pytest.fixture
def ctrl_c_interrupts() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt, as in a terminal, for the test's length: a suite
    started in the background of a shell without job control (nohup, ``cmd &`` in a script)
    inherits SIGINT ignored, and Python then installs no handler of its own for it."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@pytest.mark.parametrize("stream", [False, True], ids=["complete", "stream"])
@pytest.mark.usefixtures("ctrl_c_interrupts")
def test_a_synchronous_call_interrupted_by_ctrl_c_is_cancelled_settled_and_logged_once(
        gw_fake: FakeProviderProcess, tmp_path: Path, stream: bool) -> None:
    """Ctrl-C while a synchronous call waits on a slow upstream: the call is cancelled on the
    gateway's loop before KeyboardInterrupt goes on (it ran on there with nobody to take its
    answer, and a stream's next read met 'asynchronous generator is already running'): its
    upstream let go, its budget hold settled, logged once as closed by the client."""
    gateway, store, ledger = _trickling(gw_fake, tmp_path, 60)
    main = threading.get_ident()
    try:
        answer = gateway.stream(messages(), model="good") if stream else None
        if answer is not None:
            assert next(answer).model == "good"
        ctrl_c = threading.Timer(0.3, signal.pthread_kill, (main, signal.SIGINT))
        ctrl_c.start()
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            if answer is not None:
                next(answer)
            else:
                gateway.complete(messages(), model="good")
        ctrl_c.join()
        assert time.monotonic() - started < 3
        assert ledger.open_tickets() == 0 and not gateway._chat._calls
        assert not gateway._streams.open_streams
        if answer is not None:
            with pytest.raises(StreamBroken, match="a read of this stream was cancelled"):
                next(answer)
            answer.close()  # harmless
        deadline = time.monotonic() + 10
        while not (store.requests(20, None)[0] and gw_fake.requests()[-1].get("closed_at")):
            assert time.monotonic() < deadline, "not logged, or the upstream was kept"
            time.sleep(0.05)
        entries, _ = store.requests(20, None)
        assert [e["status"] for e in entries] == ["client_closed"]
        assert gateway.complete(messages(), model="cheap").model == "cheap"  # goes on serving
    finally:
        gateway.close()


class _Interrupted(BaseException):
    """What a thread's caller meets as Ctrl-C's KeyboardInterrupt meets the main thread's."""


def _interrupt(thread: threading.Thread) -> None:
    """Raise :class:`_Interrupted` in ``thread`` (at its next step in Python)."""
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident),
                                               ctypes.py_object(_Interrupted))


def test_a_synchronous_stream_interrupted_as_it_opened_is_closed_settled_and_logged_once(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread's gateway.stream(...) interrupted (a BaseException raised in it, as Ctrl-C
    raises KeyboardInterrupt) just as its stream opened, so its caller never got the stream:
    it is closed at once, its budget hold settled, logged once as closed by the client, where
    it stayed open, held and unlogged until its deadline (a minute here)."""
    gateway, _, ledger = _trickling(gw_fake, tmp_path, 60)
    opened = gateway.astream

    async def astream(*args: Any, **kwargs: Any) -> Any:
        stream = await opened(*args, **kwargs)
        _interrupt(caller)  # (its caller waits for this call, which ends as it returns)
        return stream

    monkeypatch.setattr(gateway, "astream", astream)
    got: list[str] = []

    def call() -> None:
        try:
            gateway.stream(messages(), model="good")
        except _Interrupted:
            got.append("interrupted")

    caller = threading.Thread(target=call)
    try:
        caller.start()
        caller.join(10)
        assert got == ["interrupted"]
        deadline = time.monotonic() + 5
        while gateway._streams.open_streams or ledger.open_tickets():
            assert time.monotonic() < deadline, "the stream nobody took was kept open"
            time.sleep(0.05)
    finally:
        gateway.close()
    with _restarted(gateway) as entries:
        assert [e["status"] for e in entries] == ["client_closed"]


def test_a_synchronous_call_interrupted_as_it_was_handed_to_the_loop_never_begins(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The interruption lands once the call is queued for the gateway's loop, before the loop
    takes it up: the call never begins, and nothing fails on the loop, where the loop ran the
    coroutine the caller had closed ("cannot reuse already awaited coroutine", logged as a
    task exception never retrieved) and a wait of the next step let the call run unwaited."""
    gateway, store, _ = _trickling(gw_fake, tmp_path, 60)
    try:
        assert gateway.complete(messages(), model="cheap").model == "cheap"  # (the loop runs)
        assert gateway._sync is not None
        loop = gateway._sync.loop
        failed: list[dict[str, Any]] = []
        loop.set_exception_handler(lambda _, context: failed.append(context))
        queue = loop.call_soon_threadsafe

        def queued_then_interrupted(*args: Any, **kwargs: Any) -> Any:
            monkeypatch.undo()
            queue(time.sleep, 0.3)  # (the loop busy a moment: the caller is gone before)
            queue(*args, **kwargs)
            raise _Interrupted

        monkeypatch.setattr(loop, "call_soon_threadsafe", queued_then_interrupted)
        with contextlib.suppress(_Interrupted):  # (its traceback, and the call's, let go)
            gateway.complete(messages(), model="cheap")
        assert gateway.complete(messages(), model="cheap").model == "cheap"
        gc.collect()
        assert failed == []
        assert len(store.requests(20, None)[0]) == 2
    finally:
        gateway.close()


def test_a_synchronous_call_under_way_as_another_thread_closes_the_gateway_is_told_so(
        gw_fake: FakeProviderProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread's synchronous call still waiting on a slow upstream when another thread closes
    the gateway is waited for as any request is; still under way past that wait (here made
    short), it is cancelled once the close has given it its time, and told the gateway was
    closed during the call, as a StoreError saying what to do (it got a bare CancelledError);
    its request is logged once, its budget hold settled; a call made later is refused as the
    closed gateway refuses any."""
    from switchpoint.gateway.engine import LOOP_DRAIN_S

    gateway, store, ledger = _trickling(gw_fake, tmp_path, 60)
    monkeypatch.setattr(gateway, "_drain_s", lambda: 0.5)  # (the wait: max_total_s + 2 s)
    got: list[BaseException | ChatCompletion] = []

    def call() -> None:
        try:
            got.append(gateway.complete(messages(), model="good"))
        except BaseException as exc:  # (what the thread was told, whatever it is)
            got.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 10
    while not gateway._chat._calls:  # under way upstream
        assert time.monotonic() < deadline, "the call never began"
        time.sleep(0.02)
    started = time.monotonic()
    gateway.close()
    caller.join(timeout=10)
    assert not caller.is_alive()
    assert time.monotonic() - started < 0.5 + 2 * LOOP_DRAIN_S + 2
    [error] = got
    assert isinstance(error, StoreError), repr(error)
    assert "the gateway was closed" in str(error) and "while this call" in str(error)
    assert ledger.open_tickets() == 0
    with SQLiteStore(store.path) as reopened:
        assert [e["status"] for e in reopened.requests(20, None)[0]] == ["client_closed"]
    with pytest.raises(StoreError, match="the gateway is closed"):
        gateway.complete(messages(), model="cheap")


def test_a_gateway_dropped_without_close_is_closed_as_it_is_collected_with_a_warning(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A gateway its caller drops without closing gives a ResourceWarning, as an unclosed file
    does, and is closed: its threads end and data_dir's lock is let go, so a new gateway opens
    there (four threads and the lock were kept for the life of the process, and the gateway
    was never collected)."""
    config = _deadline_config(gw_fake, tmp_path, 60)
    before = set(threading.enumerate())
    gateway = Gateway.from_config(config, loader=FACTORY, env=KEYS)
    request_id = gateway.complete(messages(), model="good").switchpoint.request_id
    threads = set(threading.enumerate()) - before
    assert len(threads) >= 4, threads  # its loop, store writer, pins and ledger threads
    with pytest.warns(ResourceWarning, match="dropped without being closed"):
        del gateway
        gc.collect()
    deadline = time.monotonic() + 10
    while any(t.is_alive() for t in threads | (set(threading.enumerate()) - before)):
        assert time.monotonic() < deadline, [t.name for t in threads if t.is_alive()]
        time.sleep(0.05)
    again = Gateway.from_config(config, loader=FACTORY, env=KEYS)  # data_dir's lock is free
    try:
        assert again.store is not None
        assert [e["id"] for e in again.store.requests(20, None)[0]] == [request_id]
        assert again.governor.ledger.open_tickets() == 0
    finally:
        again.close()


def test_synchronous_calls_made_as_the_interpreter_finalizes_fail_at_once_saying_why(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Two gateways opened by an atexit handler (registered before any gateway opened, so it
    runs after their close-at-exit hook) are still open as the interpreter finalizes, when
    an object's ``__del__`` makes 80 synchronous calls on each: on one whose loop runs, each
    waited half a second for a loop that runs no more, then said the gateway was closed
    during the call (40 s in all, past the bound here); on one that never made its loop, the
    call raised ImportError ("sys.meta_path is None"), its coroutine never awaited. Now each
    raises GatewayClosedError at once saying the interpreter is exiting and when to call, and
    the script exits well within the bound."""
    configs = []
    for name in ("warm", "cold"):
        (tmp_path / name).mkdir()
        config = tmp_path / name / "switchpoint.yaml"
        config.write_text(config_text(gw_fake), encoding="utf-8")
        configs.append(str(config))
    script = textwrap.dedent(f"""
        import atexit
        from switchpoint import Gateway
        from switchpoint.gateway.live import RouterFactory
        # (what gateway_env holds, without its imports: openai, the server; seconds a start)
        FACTORY, KEYS = RouterFactory(), {KEYS!r}

        class Flush:  # what a program flushes as it is collected at teardown
            gateways = []

            def __del__(self):
                for gateway in self.gateways:
                    said = set()
                    for _ in range(80):
                        try:
                            gateway.route("What is the capital of France?")
                        except Exception as exc:
                            said.add(f"{{type(exc).__name__}}: {{exc}}")
                    print(len(said), *sorted(said), sep=" | ", flush=True)

        def open_late():
            warm = Gateway.from_config({configs[0]!r}, loader=FACTORY, env=KEYS)
            warm.route("What is the capital of France?")  # (its loop runs)
            Flush.gateways += [warm, Gateway.from_config({configs[1]!r}, loader=FACTORY,
                                                         env=KEYS)]

        atexit.register(open_late)
        flush = Flush()
    """)
    done = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True,
                          text=True, timeout=30, cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "never awaited" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 2, done.stdout
    for line in lines:
        # (one error, the same each time)
        assert line.startswith("1 | GatewayClosedError: the interpreter is exiting"), line
        assert "make the call before the interpreter exits" in line, line


def test_a_script_that_exits_with_its_gateway_open_keeps_its_work_and_exits_promptly(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """A script that reports an outcome, reads part of a stream and exits (sys.exit) without
    closing its gateway: it exits at once, with no traceback; the outcome is kept and the
    stream logged as closed by the client (it went unlogged, its budget hold left to be
    charged by the next start)."""
    config = _deadline_config(gw_fake, tmp_path, 60)
    gw_fake.script("good", "trickle:every=0.05")
    script = textwrap.dedent(f"""
        import sys, time
        from switchpoint import Gateway
        from switchpoint.gateway.live import RouterFactory
        # (what gateway_env holds, without its imports: openai, the server; seconds a start)
        FACTORY, KEYS = RouterFactory(), {KEYS!r}
        gateway = Gateway.from_config({str(config)!r}, loader=FACTORY, env=KEYS)
        reply = gateway.complete([{{"role": "user", "content": "Hi"}}], model="cheap")
        gateway.report_outcome(reply.switchpoint.request_id, 0.9)
        stream = gateway.stream([{{"role": "user", "content": "Hi"}}], model="good")
        next(stream)
        print(reply.switchpoint.request_id, stream.switchpoint.request_id, time.time(),
              flush=True)
        sys.exit(0)
    """)
    done = subprocess.run([sys.executable, "-X", "dev", "-c", script], capture_output=True,
                          text=True, timeout=60, cwd=Path(__file__).resolve().parents[2])
    ended = time.time()
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "Task was destroyed" not in done.stderr, done.stderr
    answered, streamed, exiting = done.stdout.split()
    assert ended - float(exiting) < 5
    again = Gateway.from_config(config, loader=FACTORY, env=KEYS)
    try:
        assert again.store is not None
        entries, _ = again.store.requests(20, None)
        assert {(e["id"], e["status"]) for e in entries} == {
            (answered, "ok"), (streamed, "client_closed")}
        assert again.governor.ledger.open_tickets() == 0
        assert again.report_outcome(answered, 0.5).outcome.replaced  # the first was kept
    finally:
        again.close()
