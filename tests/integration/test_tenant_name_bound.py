"""One bound for a tenant's name at every door: the config, HTTP, the command line, a key, the
in-process ``Gateway`` and the library's ``Router`` and tenant memory refuse a name of 65
characters in the one wording of a length bound, storing nothing; what a store already holds
under a longer name (written by an older version, whose library took 200) still replays.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from switchpoint._messages import json_quoted, too_long
from switchpoint.cli import main
from switchpoint.config import DB_FILENAME, load_settings
from switchpoint.errors import ConfigError, InvalidInputError
from switchpoint.governance.keys import KeySpec
from switchpoint.learning.events import MAX_TENANT_NAME, InMemoryFeedbackLog
from switchpoint.learning.tenant_memory import TenantKnnMemory, TenantSettings
from switchpoint.router import Router
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.learning_env import (
    EMBEDDER,
    chat,
    get,
    learning_server,
    package,
    post,
    scored,
    settings_for,
)

# (not one letter repeated: a test run in the same process may register "t" * 32 as a secret,
# which the refusal would then mask)
LONG = ("tenant-" + "abc" * 30)[:MAX_TENANT_NAME + 1]
WORDING = too_long(64, 65)
TENANTS = "tenants:\n  acme: {}\n"


def refused(call: object, field: str = "tenant") -> None:
    assert callable(call)
    with pytest.raises(InvalidInputError) as info:
        call()
    assert info.value.field == field and WORDING in info.value.reason, info.value


def test_the_library_and_a_key_refuse_a_tenant_name_past_the_bound() -> None:
    log = InMemoryFeedbackLog()
    router = Router(package(), embedder=EMBEDDER, feedback_log=log)
    decision = router.route("Prove that 17 is prime.")
    refused(lambda: router.route("Prove that 17 is prime.", tenant=LONG))
    refused(lambda: router.report_outcome(decision.decision_id, 0.5, tenant=LONG))
    assert list(log.replay()) == []  # nothing learned nor kept
    memory = TenantKnnMemory()
    refused(lambda: memory.configure(LONG, TenantSettings()))
    refused(lambda: TenantKnnMemory(tenants={LONG: TenantSettings()}))
    refused(lambda: KeySpec(tenant=LONG).checked(None, None))
    # 64 characters is a name, at every door
    assert router.report_outcome(router.route("Prove that 17 is prime.", tenant="t" * 64)
                                 .decision_id, 0.5, tenant="t" * 64).tenant == "t" * 64


def test_the_config_refuses_a_tenant_name_past_the_bound(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"data_dir": str(tmp_path), "tenants": {LONG: {}}}, environ={})
    assert WORDING in str(info.value) and "tenants" in str(info.value)


def test_http_the_gateway_and_the_command_line_refuse_it_and_store_nothing(
        fake: FakeProviderProcess, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(fake, tmp_path, TENANTS)
    assert settings.source_path is not None
    with learning_server(fake, tmp_path, TENANTS) as server:
        made = post(server, "/v1/router/keys", {"tenant": LONG})
        assert made.status_code == 400 and WORDING in made.json()["error"]["message"], made.text
        assert made.json()["error"]["param"] == "tenant"
        for path in ("/v1/router/keys", "/v1/router/report/cost", "/v1/router/status"):
            r = get(server, path, tenant=LONG)
            assert r.status_code == 400 and WORDING in r.json()["error"]["message"], (path, r.text)
        decision_id = chat(server, "Prove that 17 is prime.")[0]["x-switchpoint-decision-id"]
        compare = post(server, "/v1/router/preferences/compare",
                       {"prompt": "Prove that 17 is prime.", "models": ["strong", "cheap"],
                        "tenant": LONG})
        assert compare.status_code == 400 and WORDING in compare.text, compare.text
        gateway = server.service.gateway
        refused(lambda: gateway.complete([{"role": "user", "content": "hi"}], tenant=LONG))
        refused(lambda: gateway.learning_status([LONG]))
        refused(lambda: gateway.report_outcome(decision_id, 1.0, tenant=LONG))
        assert get(server, "/v1/router/keys").json()["data"] == []
        status = get(server, "/v1/router/status").json()["tenants"]
        assert LONG not in status and all(
            t["learned_router"]["events"] == 0 for t in status.values()), status
    for argv in (["keys", "create", "--tenant", LONG], ["keys", "list", "--tenant", LONG],
                 ["report", "cost", "--tenant", LONG]):
        code = main([*argv, "--config", str(settings.source_path)])
        err = capsys.readouterr().err
        assert code != 0 and f"--tenant: {json_quoted(LONG, 40)} {WORDING}" in err, (argv, err)
    assert main(["keys", "list", "--json", "--config", str(settings.source_path)]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_a_row_stored_under_a_longer_name_still_replays(
        fake: FakeProviderProcess, tmp_path: Path) -> None:
    older = "o" * 100  # (an older version's library took names of up to 200 characters)
    with learning_server(fake, tmp_path) as server:
        decision_id = chat(server, "Prove that 17 is prime.")[0]["x-switchpoint-decision-id"]
        scored(server, decision_id, 1.0)
    # The row an older version would have written for that tenant, beside the one above.
    with closing(sqlite3.connect(tmp_path / "data" / DB_FILENAME)) as conn, conn:
        columns = [r[1] for r in conn.execute("PRAGMA table_info(feedback)")
                   if r[1] not in ("seq", "event_id", "tenant")]
        listed = ", ".join(columns)
        conn.execute(f"INSERT INTO feedback (event_id, tenant, {listed}) "
                     f"SELECT ?, ?, {listed} FROM feedback", (uuid.uuid4().hex, older))
    with learning_server(fake, tmp_path) as server:
        status = get(server, "/v1/router/status").json()["tenants"]
        assert status[older]["learned_router"]["events"] == 1, status
        assert status["default"]["learned_router"]["events"] == 1
        assert server.service.gateway.router.learner.n_events(older) == 1
