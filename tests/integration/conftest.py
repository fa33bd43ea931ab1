"""Fixtures for the provider and gateway tests: ``fake``, a fake provider process per test module,
and for the gateway tests one session-wide fake provider and one switchpoint server in front of
it (see gateway_env.py); each test that uses them starts with them reset."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import fresh_health, gateway_server, start_fake
from tests.integration.servers import ThreadServer


@pytest.fixture(scope="session")
def gw_fake() -> Iterator[FakeProviderProcess]:
    fake = start_fake()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def gw(gw_fake: FakeProviderProcess,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadServer]:
    with gateway_server(gw_fake, tmp_path_factory.mktemp("gateway")) as server:
        yield server


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The benchmark scripts' embedding cache (``$SWITCHPOINT_BENCH_CACHE``), one folder for
    the session: the first benchmark test to run embeds the in-repo sample records into it and
    the others read the vectors back, as a second run of a benchmark does."""
    return tmp_path_factory.mktemp("bench-cache")


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderProcess]:
    with FakeProviderProcess() as server:
        yield server


@pytest.fixture(autouse=True)
def _independent(request: pytest.FixtureRequest) -> None:
    """Every test that uses a fake provider (``fake``, ``gw_fake``) starts with no script and
    an empty request log, and one that uses ``gw`` with every model's health forgotten: what
    an earlier test scripted or tripped does not reach it."""
    for name in ("fake", "gw_fake"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()
    if "gw" in request.fixturenames:
        fresh_health(request.getfixturevalue("gw"))
