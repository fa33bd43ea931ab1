"""Whatever calls models through a data_dir (``switchpoint serve``, a :class:`Gateway` in
Python, which ``switchpoint label`` builds too) takes its lock, so budgets and rate limits are
enforced by one process at a time; what only learns or reads offline works beside them."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from switchpoint.config import Settings, load_settings
from switchpoint.errors import ChatNotServedError, DataDirInUseError
from switchpoint.gateway import Gateway
from switchpoint.store import DecisionRecord
from switchpoint.store.spill import _spill_lines
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, db_rows
from tests.integration.servers import ProcessServer, refused_start


def settings_for(data: Path) -> Settings:
    return load_settings(overrides={"data_dir": str(data)}, environ={})


def test_a_gateway_is_refused_while_a_service_serves_from_its_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ProcessServer(data_dir=data).start()
    try:
        server.wait_ready()
        assert server.proc is not None
        gateway = Gateway(settings_for(data))
        with pytest.raises(DataDirInUseError) as info:
            gateway.open()
        assert (f"another switchpoint process (pid {server.proc.pid}) is serving from "
                f"data_dir {str(data)!r}") in str(info.value)
        gateway.close()
        # What only learns offline (switchpoint feedback, learn) works beside the service.
        offline = Gateway(settings_for(data), serves_chat=False)
        offline.open()
        offline.close()
        assert httpx.get(f"{server.base}/health").status_code == 200
    finally:
        server.kill()
    with Gateway(settings_for(data)) as after:  # a crashed service leaves nothing held
        after.open()


def test_a_service_is_refused_while_a_gateway_holds_its_data_dir_until_it_closes(
        tmp_path: Path) -> None:
    data = tmp_path / "data"
    gateway = Gateway(settings_for(data))
    gateway.open()
    try:
        code, err = refused_start(data_dir=data)
        assert code == 2, err
        assert (f"another switchpoint process (pid {os.getpid()}) is serving from data_dir "
                f"{str(data)!r}") in err and "Traceback" not in err
    finally:
        gateway.close()
    server = ProcessServer(data_dir=data).start()
    try:
        server.wait_ready()  # closing the gateway released the directory
    finally:
        server.kill()


def test_two_gateways_of_one_process_exclude_each_other(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Gateway(settings_for(data)) as first:
        first.open()
        second = Gateway(settings_for(data))
        with pytest.raises(DataDirInUseError) as refused:
            second.open()
        # (it was told another process held the directory, naming its own pid)
        assert str(refused.value).startswith(
            f"a Gateway of this process (pid {os.getpid()}) is serving from data_dir "
            f"{str(data)!r} already")
        assert "close it first (gateway.close()" in str(refused.value)
        assert not second.store or not second.store.is_open  # refused before any state opened
    second.open()  # the first closed
    second.close()


def test_a_lock_file_removed_under_a_running_service_is_locked_again(tmp_path: Path) -> None:
    """``serve.lock`` deleted while the service runs (data_dir cleaned or restored from a
    backup): the service's lock held a file no one else saw, so a second service started on
    the same data_dir and each enforced every budget on its own. The service now notices at
    its next housekeeping and locks the file there again."""
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text("gateway: {pin_purge_interval_s: 0.05}\n", encoding="utf-8")
    server = ProcessServer("--config", config, "--log-level", "info", data_dir=data).start()
    try:
        server.wait_ready()
        (data / "serve.lock").unlink()
        deadline = time.monotonic() + 20
        while "is locked again" not in server.stderr:
            assert time.monotonic() < deadline, server.stderr[-2000:]
            routed = httpx.post(f"{server.base}/v1/route", json={"prompt": "Say hello."},
                                timeout=10)  # each request checks whether housekeeping is due
            assert routed.status_code == 200
            time.sleep(0.1)
        assert server.proc is not None
        code, err = refused_start(data_dir=data)
        assert code == 2, err
        assert f"another switchpoint process (pid {server.proc.pid})" in err
    finally:
        server.kill()


def test_what_learns_beside_a_service_leaves_its_spill_file_to_it(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """`switchpoint feedback` / `learn` open the store beside the service: the records the
    service keeps in its spill file (its database refused them) are the service's to write,
    since it appends there meanwhile; its next start writes them."""
    data = tmp_path / "data"
    server = ProcessServer(data_dir=data).start()
    spill = data / "switchpoint.db.unwritten.jsonl"
    waiting = [DecisionRecord(
        id=uuid.uuid4().hex, ts=time.time(), selected_model="a", cluster_id=1,
        cost_weight=0.5, candidates=["a"], cache_hit=False, routing_ms=0.1, embedding_ms=1.0,
        policy="cluster", weights_id="w", expected_error=0.1, cost_adjusted_score=0.1)
        for _ in range(2)]
    try:
        server.wait_ready()
        spill.write_text(_spill_lines(waiting), encoding="utf-8")  # as its outage leaves it
        with Gateway(settings_for(data), serves_chat=False) as offline:
            offline.open()
            assert offline.store is not None
            assert {d["id"] for d in offline.store.decisions()} & {r.id for r in waiting} == set()
        assert spill.read_text(encoding="utf-8") == _spill_lines(waiting)  # untouched
        assert "2 record(s) wait in switchpoint.db.unwritten.jsonl for the service" in caplog.text
    finally:
        server.kill()
    with Gateway(settings_for(data)) as restarted:
        restarted.open()
        assert restarted.store is not None
        assert {r.id for r in waiting} <= {d["id"] for d in restarted.store.decisions()}
    assert not spill.exists()


def test_a_gateway_that_does_not_serve_chat_calls_no_model(
        gw_fake: FakeProviderProcess, tmp_path: Path) -> None:
    """Opened beside the service without its lock (``switchpoint feedback``, ``learn``), a
    gateway that does not serve chat refuses every door that would call a model: through it,
    a tenant's budget would be held and spent by a second process enforcing it on its own."""
    data = tmp_path / "data"
    config = {"models": [
        {"name": "good", "profile": "gpt-4-1106-preview", "base_url": gw_fake.openai_base_url,
         "input_per_mtok": 10, "output_per_mtok": 30, "context_window": 128000},
        {"name": "cheap", "profile": "gpt-3.5-turbo-1106", "base_url": gw_fake.openai_base_url,
         "input_per_mtok": 0.5, "output_per_mtok": 1.5, "context_window": 16000}],
        "data_dir": str(data), "tenants": {"acme": {"budgets": ["1/day"]}}}
    turns = [{"role": "user", "content": "Say hello."}]
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as service, \
            Gateway.from_config(config, loader=FACTORY, env=KEYS,
                                serves_chat=False) as offline:
        written = ("SELECT (SELECT count(*) FROM spend), (SELECT count(*) FROM requests), "
                   "(SELECT count(*) FROM decisions)")
        before = db_rows(data, written)
        doors: dict[str, Callable[[], object]] = {
            "complete": lambda: offline.complete(turns, tenant="acme"),
            "stream": lambda: offline.stream(turns, tenant="acme"),
            "acomplete": lambda: asyncio.run(offline.acomplete(turns, tenant="acme")),
            "astream": lambda: asyncio.run(offline.astream(turns, tenant="acme")),
            "compare": lambda: offline.compare(turns, ["good", "cheap"], tenant="acme"),
            "acompare": lambda: asyncio.run(offline.acompare(prompt="Say hello.",
                                                             tenant="acme")),
            "route_and_execute": lambda: offline.router.route_and_execute(
                "Say hello.", tenant="acme"),
            "route_and_execute(gateway=)": lambda: service.router.route_and_execute(
                "Say hello.", gateway=offline, tenant="acme"),
        }
        for door, call in doors.items():
            with pytest.raises(ChatNotServedError) as info:
                call()
            assert ("was opened not to serve chat (serves_chat=False" in str(info.value)
                    and "Gateway(settings) or Gateway.from_config(config)" in str(info.value)
                    ), door
        assert gw_fake.requests() == []
        assert db_rows(data, written) == before
        assert offline.router.stats.total_requests == 0  # (nothing was even routed)
        # The service beside it serves, and holds the budget alone.
        answer = service.complete(turns, tenant="acme", max_tokens=20)
        assert answer.switchpoint.charged_usd is not None and answer.switchpoint.charged_usd > 0
        assert len(gw_fake.requests()) == 1
