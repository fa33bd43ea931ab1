"""``switchpoint serve --weights DIR`` while a save keeps replacing DIR (``add-model`` or
``remove-model`` in place, ``learn --export``): every reload, and a start after ``kill -9``,
takes the old package or the new one whole, never refuses it as broken or serves a mix."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from switchpoint.training import remove_model
from switchpoint.weights import default_weights_path, load_weights
from tests.integration.servers import ProcessServer
from tests.unit.test_weights import SAVES_FOREVER


def test_reloads_and_a_restart_while_saves_replace_the_weights_take_one_package_whole(
        tmp_path: Path) -> None:
    weights = Path(shutil.copytree(default_weights_path("tfidf"), tmp_path / "w"))
    old = load_weights(weights)
    gone = old.models[1]
    new = remove_model(old, gone)
    ids = {old.weights_id, new.weights_id}
    server = ProcessServer("--weights", weights, data_dir=tmp_path / "data").start()
    writer = None
    try:
        assert server.wait_ready()["weights_id"] == old.weights_id
        writer = subprocess.Popen([sys.executable, "-c", SAVES_FOREVER, str(weights), gone],
                                  stdout=subprocess.PIPE, text=True)
        assert writer.stdout is not None and writer.stdout.readline() == "saving\n"
        with httpx.Client(base_url=server.base, timeout=60) as client:
            for _ in range(60):
                r = client.post("/v1/router/reload")
                assert r.status_code == 200, r.text
                assert r.json()["weights_id"] in ids
                assert (gone in r.json()["models"]) == (r.json()["weights_id"] == old.weights_id)
        server.kill()  # a crash, while the saves go on
        server = ProcessServer("--weights", weights, data_dir=tmp_path / "data").start()
        assert server.wait_ready()["weights_id"] in ids
    finally:
        if writer is not None:
            writer.kill()
            writer.wait()
        server.kill()
