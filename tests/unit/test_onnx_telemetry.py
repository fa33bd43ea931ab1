"""The embedder imports ONNX Runtime with its telemetry off: nothing written, nothing sent."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from switchpoint.embedding import onnx_runtime
from switchpoint.embedding.onnx_runtime import TELEMETRY_VARIABLE

_EMBED = """
import os
from switchpoint.embedding import MiniLMEmbedder
vector = MiniLMEmbedder(precision="fp32").embed(["How do I sort a list in Python?"])
print(vector.shape[1], os.environ.get("ORT_DISABLE_TELEMETRY"))
"""


def test_loading_the_embedder_leaves_no_telemetry_behind(tmp_path: Path) -> None:
    # ONNX Runtime's telemetry, once started, writes its device id and event queue under
    # ~/.cache/Microsoft before it uploads them: with HOME a fresh folder, none may appear.
    env = {k: v for k, v in os.environ.items() if k != TELEMETRY_VARIABLE}
    env["HOME"] = str(tmp_path)
    done = subprocess.run([sys.executable, "-c", _EMBED], env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["384", "1"]
    assert not (tmp_path / ".cache" / "Microsoft").exists(), sorted(
        str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))


def test_a_users_own_setting_of_the_variable_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TELEMETRY_VARIABLE, "0")
    monkeypatch.setattr(onnx_runtime, "_checked", False)
    onnx_runtime.import_onnxruntime()
    assert os.environ[TELEMETRY_VARIABLE] == "0"


def test_onnxruntime_imported_before_is_quietened_and_said(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(TELEMETRY_VARIABLE, "1")
    ort = onnx_runtime.import_onnxruntime()  # (imported: as a user's own import leaves it)
    calls: list[str] = []
    monkeypatch.setattr(ort, "disable_telemetry_events", lambda: calls.append("off"))
    monkeypatch.delenv(TELEMETRY_VARIABLE, raising=False)
    monkeypatch.setattr(onnx_runtime, "_checked", False)
    with caplog.at_level(logging.WARNING, logger="switchpoint.embedding.onnx_runtime"):
        assert onnx_runtime.import_onnxruntime() is ort
        onnx_runtime.import_onnxruntime()  # (said once)
    assert calls == ["off"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "ORT_DISABLE_TELEMETRY=1" in warnings[0], warnings
    assert os.environ[TELEMETRY_VARIABLE] == "1"
