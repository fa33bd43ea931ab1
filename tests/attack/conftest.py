"""Fixtures of the attack suite: the fake upstream and the server under attack (one of each
for the whole session; see attack_env.py), and what keeps the tests that share them
independent: each starts with the fake's scripts and the server's model health forgotten, and
ends checking that the server failed no request and logged no traceback while it ran."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.attack.attack_env import Attacked, serving
from tests.fakes.fake_provider import FakeProviderProcess


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeProviderProcess]:
    with FakeProviderProcess() as server:
        yield server


@pytest.fixture(scope="session")
def attacked(fake: FakeProviderProcess,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attacked]:
    with serving(fake, tmp_path_factory.mktemp("attacked")) as server:
        yield server


@pytest.fixture(autouse=True)
def _independent(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test of the shared server starts where any other would (no script queued in the fake,
    no model kept out by what an earlier test made an upstream do) and fails if the server
    answered a 500 or logged a traceback while it ran, whatever ran before or after it."""
    if "fake" in request.fixturenames:  # (so in every test of the server: it needs the fake)
        request.getfixturevalue("fake").reset()
    if "attacked" not in request.fixturenames:
        yield
        return
    attacked: Attacked = request.getfixturevalue("attacked")
    attacked.forget_health()
    failures = attacked.server_failures()
    logged = attacked.log_path.stat().st_size
    yield
    with attacked.log_path.open("rb") as fh:
        fh.seek(logged)
        new_log = fh.read().decode("utf-8", errors="replace")
    assert "Traceback" not in new_log and "unexpected error" not in new_log, new_log[-4000:]
    assert attacked.server_failures() == failures, "the server answered 500 during this test"
