"""Fixtures for the provider and gateway tests: ``fake``, a fake provider process per test module
(reset before each test that uses it), and for the gateway tests one session-wide fake provider
and one switchpoint server in front of it (see gateway_env.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import gateway_server, start_fake
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


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviderProcess]:
    with FakeProviderProcess() as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_fake(request: pytest.FixtureRequest) -> None:
    """Every test that uses ``fake`` starts with no script and an empty request log."""
    if "fake" in request.fixturenames:
        request.getfixturevalue("fake").reset()
