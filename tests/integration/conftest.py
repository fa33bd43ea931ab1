"""Session fixtures for the gateway tests: one fake provider process and one switchpoint server
in front of it (see gateway_env.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gateway_env import gateway_server, start_fake
from servers import ThreadServer

from tests.fakes.fake_provider import FakeProviderProcess


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
