"""A team backs its service up as the deployment guide says, while it serves, and restores the
backup into a fresh data_dir on another path: the keys, the tenants' learning, the budgets'
spend, the experiments, the session pins and the request log are all there, and the restored
service starts without a warning."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import openai

from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.servers import ProcessServer

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
ADMIN = "backup-admin-token-0123456789"
ENV = {"SP_ADMIN": ADMIN, "FAKE_KEY": "sk-fake"}
ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN}"}
CONFIG = """models:
  - {{name: big, profile: gpt-4-1106-preview, base_url: "{base}", api_key_env: FAKE_KEY,
     input_per_mtok: 10, output_per_mtok: 30}}
  - {{name: small, profile: gpt-3.5-turbo-1106, base_url: "{base}", api_key_env: FAKE_KEY,
     input_per_mtok: 1, output_per_mtok: 2}}
auth: keys
admin_token_env: SP_ADMIN
tenants:
  acme: {{models: [big, small, auto], budgets: [100/month]}}
  beta: {{models: [big, small, auto]}}
budgets: {{total: 1000/month}}
experiments:
  thrift:
    tenants: [beta]
    min_n: 2
    arms: {{control: {{}}, cheaper: {{cost_weight: 3.0}}}}
"""


def guide_backup_code() -> str:
    """The Python the guide runs in the container to back a database up."""
    found = re.search(r'python -c "\n(.*?)\n" "/data/\$db\.db"', GUIDE.read_text(), re.S)
    assert found, "the guide's Python backup is not where this test looks for it"
    return found.group(1)


def back_up(data: Path, into: Path) -> None:
    """What the guide's container backup does, file by file, while the service serves."""
    code = guide_backup_code()
    into.mkdir(mode=0o700)
    for name in ("switchpoint", "sessions", "keys"):
        done = subprocess.run([sys.executable, "-c", code, str(data / f"{name}.db"),
                               str(into / f"{name}.db")], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        assert os.stat(into / f"{name}.db").st_mode & 0o077 == 0  # (the guide's umask)


def served(base: str) -> dict[str, Any]:
    """What the admin routes answer about the state a backup must keep."""
    def get(path: str, **params: str) -> Any:
        r = httpx.get(f"{base}{path}", params=params, headers=ADMIN_HEADERS, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()
    status = get("/v1/router/status")
    return {"status": status["tenants"], "experiments": get("/v1/router/experiments"),
            "budgets": get("/v1/router/budgets"), "keys": get("/v1/router/keys"),
            "stats": get("/v1/router/stats"),
            "requests": get("/v1/router/requests", limit="500")["data"]}


def pins(path: Path) -> list[Any]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT session_id, model FROM session_pins ORDER BY 1").fetchall()
    finally:
        conn.close()


def test_a_backup_the_guide_takes_while_serving_restores_everything_elsewhere(
        tmp_path: Path, fake: FakeProviderProcess) -> None:
    config = tmp_path / "switchpoint.yaml"
    config.write_text(CONFIG.format(base=fake.openai_base_url))
    data = tmp_path / "data"
    with ProcessServer("--config", config, data_dir=data, env=ENV).start() as server:
        server.wait_ready()
        base = server.base
        secrets = {}
        for tenant in ("acme", "beta"):
            made = httpx.post(f"{base}/v1/router/keys", json={"tenant": tenant},
                              headers=ADMIN_HEADERS, timeout=30)
            assert made.status_code == 201, made.text
            secrets[tenant] = made.json()["key"]
        r = httpx.post(f"{base}/v1/router/experiments", headers=ADMIN_HEADERS, timeout=30,
                       json={"name": "later", "split": 0.3, "tenants": ["acme"]})
        assert r.status_code == 201, r.text
        for tenant, secret in secrets.items():
            client = openai.OpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
            for i in range(4):
                raw = client.chat.completions.with_raw_response.create(
                    model="auto", extra_headers={"x-session-id": f"{tenant}-{i % 2}"},
                    messages=[{"role": "user", "content": f"Prove that sqrt {i} is irrational."}])
                r = httpx.post(f"{base}/v1/feedback", timeout=30,
                               headers={"authorization": f"Bearer {secret}"},
                               json={"decision_id": raw.headers["x-switchpoint-decision-id"],
                                     "score": 0.9 if i % 2 else 0.1, "comment": "as it went"})
                assert r.status_code == 200, r.text
        r = httpx.post(f"{base}/v1/router/experiments/thrift/promote", json={"arm": "cheaper"},
                       headers=ADMIN_HEADERS, timeout=30)
        assert r.status_code == 200, r.text
        before = served(base)
        back_up(data, tmp_path / "backups")
        code, err = server.terminate()
        assert code == 0, err
    assert before["status"]["acme"]["learned_router"]["outcomes"] > 0  # (something to keep)
    # Restored as the guide says, into a fresh data_dir on another path.
    restored = tmp_path / "elsewhere é" / "data"
    restored.mkdir(parents=True, mode=0o700)
    for name in ("switchpoint", "sessions", "keys"):
        (restored / f"{name}.db").write_bytes((tmp_path / "backups" / f"{name}.db").read_bytes())
        os.chmod(restored / f"{name}.db", 0o600)
    with ProcessServer("--config", config, "--log-level", "info", data_dir=restored,
                       env=ENV).start() as server:
        server.wait_ready()
        assert served(server.base) == before
        assert pins(restored / "sessions.db") == pins(data / "sessions.db") != []
        # The keys open the gateway, and a conversation goes on on the model it was pinned to.
        for tenant, secret in secrets.items():
            client = openai.OpenAI(base_url=f"{server.base}/v1", api_key=secret, max_retries=0)
            raw = client.chat.completions.with_raw_response.create(
                model="auto", extra_headers={"x-session-id": f"{tenant}-0"},
                messages=[{"role": "user", "content": "And sqrt 8?"}])
            assert raw.headers["x-switchpoint-pin"] == "hard", tenant
        code, err = server.terminate()
        assert code == 0, err
    assert [line for line in err.splitlines() if line.startswith(("WARNING", "ERROR"))] == []
