"""An experiment created or ended at run time survives ``kill -9`` of ``switchpoint serve``
right after the answer: the restart has it running (created) or ended, as answered."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import config_text
from tests.integration.learning_env import serve

PATH = "/v1/router/experiments"


def _listed(base: str) -> dict[str, object]:
    data = httpx.get(f"{base}{PATH}", timeout=15).json()["data"]
    return {e["experiment"]: e["ended_at"] for e in data}


def test_a_create_and_an_end_answered_survive_kill_9(gw_fake: FakeProviderProcess,
                                                     tmp_path: Path) -> None:
    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text(config_text(gw_fake, str(data)), encoding="utf-8")
    with serve(config, data) as server:
        made = httpx.post(f"{server.base}{PATH}", json={"name": "kept", "split": 0.4},
                          timeout=30)
        assert made.status_code == 201, made.text
        server.kill()  # right after the answer
    with serve(config, data) as server:
        assert _listed(server.base) == {"kept": None}
        ended = httpx.delete(f"{server.base}{PATH}/kept", timeout=30)
        assert ended.status_code == 200, ended.text
        ended_at = ended.json()["ended_at"]
        assert ended_at is not None
        server.kill()
    with serve(config, data) as server:
        assert _listed(server.base) == {"kept": ended_at}
        assert httpx.post(f"{server.base}{PATH}", json={"name": "kept"},
                          timeout=30).status_code == 409
        server.kill()
