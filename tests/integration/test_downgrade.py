"""A team goes back to an older switchpoint: a data_dir a newer one wrote is refused, with a
line saying so, and a refused start leaves the data_dir as a stop leaves it (no writer or pin
thread of the refused gateway runs on, no log or note of a crash is left beside a file)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import httpx
import pytest

from switchpoint.errors import StoreError
from switchpoint.gateway import Gateway
from switchpoint.governance.keys import KEYS_FILENAME
from switchpoint.governance.keys import SCHEMA_VERSION as KEYS_SCHEMA
from tests.integration.servers import ProcessServer, refused_start

ADMIN = "downgrade-admin-token-0123456789"
CONFIG = """auth: keys
admin_token_env: SP_ADMIN
tenants:
  acme: {}
"""


def served_data_dir(tmp_path: Path) -> tuple[Path, Path]:
    """A data_dir a service served from (a key made in it), stopped: (config, data_dir)."""
    config, data = tmp_path / "switchpoint.yaml", tmp_path / "data"
    config.write_text(CONFIG)
    service = ProcessServer("--config", config, data_dir=data, env={"SP_ADMIN": ADMIN})
    with service.start() as server:
        server.wait_ready()
        made = httpx.post(f"{server.base}/v1/router/keys", json={"tenant": "acme"},
                          headers={"authorization": f"Bearer {ADMIN}"}, timeout=30)
        assert made.status_code == 201, made.text
        code, err = server.terminate()
        assert code == 0, err
    return config, data


def newer_key_store(data: Path) -> bytes:
    """Mark the key store as a newer switchpoint's; its bytes."""
    conn = sqlite3.connect(data / KEYS_FILENAME)
    try:
        conn.execute(f"PRAGMA user_version = {KEYS_SCHEMA + 1}")
    finally:
        conn.close()
    return (data / KEYS_FILENAME).read_bytes()


def files(data: Path) -> set[str]:
    return {p.name for p in data.iterdir()}


def test_a_start_refused_by_a_newer_key_store_leaves_the_data_dir_as_a_stop_leaves_it(
        tmp_path: Path) -> None:
    config, data = served_data_dir(tmp_path)
    before, keys = files(data), newer_key_store(data)
    assert not any(name.endswith(("-wal", "-shm", ".wal-owner")) for name in before), before
    code, err = refused_start("--config", config, data_dir=data, env={"SP_ADMIN": ADMIN})
    assert code == 2, err
    assert (f"cannot open the key store (schema version {KEYS_SCHEMA + 1} is newer than this "
            f"switchpoint's {KEYS_SCHEMA}; upgrade switchpoint)") in err
    assert "Traceback" not in err
    # The session pins and the request log it opened before the key store are closed as a
    # stop closes them: no -wal, -shm or note of a crash is left beside them.
    assert files(data) == before
    assert (data / KEYS_FILENAME).read_bytes() == keys


def test_a_gateway_refused_by_a_newer_key_store_keeps_no_thread_or_file_open(
        tmp_path: Path) -> None:
    _, data = served_data_dir(tmp_path)
    before, keys = files(data), newer_key_store(data)
    threads = set(threading.enumerate())
    for _ in range(2):  # a caller trying again opens and leaves nothing either
        with pytest.raises(StoreError, match=f"schema version {KEYS_SCHEMA + 1} is newer"):
            Gateway.from_config({"data_dir": str(data), "auth": "keys",
                                 "tenants": {"acme": {}}})
        assert [t.name for t in set(threading.enumerate()) - threads] == []
        assert files(data) == before
    assert (data / KEYS_FILENAME).read_bytes() == keys
