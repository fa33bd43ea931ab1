"""A reload to weights someone could write one file of: a corrupt package is refused, naming the
file and the value, and the running router keeps serving; nothing is unpickled or allocated on
a header's say-so.

Before: a package whose centroids' header claimed terabytes failed the reload with a 500 (a
MemoryError), and one holding NaN centroids or a profile error of 5 went live, routing on NaN
or skewed estimates."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from switchpoint.weights import default_weights_path
from tests.attack.attack_env import Attacked


def _rewrite(package: Path, rel: str, data: bytes) -> None:
    """Put ``data`` at ``rel`` with its checksum in the manifest (a careful attacker's edit)."""
    (package / rel).write_bytes(data)
    manifest_path = package / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"][rel] = hashlib.sha256(data).hexdigest()
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")


def _npy(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def _terabytes(package: Path) -> tuple[str, str]:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                   "shape": (10**6, 10**6)})
    _rewrite(package, "clusters/centroids.npy", header.getvalue() + bytes(64))
    return "clusters/centroids.npy", "4,000,000,000,000 bytes), and 64 bytes follow it"


def _nan(package: Path) -> tuple[str, str]:
    centroids = np.load(package / "clusters/centroids.npy")
    centroids[3, 5] = np.nan
    _rewrite(package, "clusters/centroids.npy", _npy(centroids))
    return "clusters/centroids.npy", "holds nan at [3, 5], which is no finite number"


def _error_of_five(package: Path) -> tuple[str, str]:
    rel = "profiles/claude-v2.json"
    profile = json.loads((package / rel).read_bytes())
    profile["error"][2] = 5
    _rewrite(package, rel, json.dumps(profile).encode())
    return rel, 'field "error"[2] is 5; it must be a finite number in [0, 1]'


def _unlisted(package: Path) -> tuple[str, str]:
    # (its checksum taken off the list, then the file edited: it was read unchecked and went
    # live)
    rel = "profiles/claude-v2.json"
    manifest_path = package / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    del manifest["files"][rel]
    manifest_path.write_text(json.dumps(manifest), encoding="utf-8")
    profile = json.loads((package / rel).read_bytes())
    profile["error"] = [0.0] * len(profile["error"])
    (package / rel).write_text(json.dumps(profile), encoding="utf-8")
    return rel, 'has no SHA-256 in manifest.json\'s field "files"'


@pytest.mark.parametrize("corrupt", [_terabytes, _nan, _error_of_five, _unlisted])
def test_a_reload_to_a_corrupt_package_is_refused_and_the_old_router_serves(
        attacked: Attacked, tmp_path: Path,
        corrupt: Callable[[Path], tuple[str, str]]) -> None:
    package = Path(shutil.copytree(default_weights_path("cluster"), tmp_path / "weights"))
    served = attacked.data_dir.parent / "switchpoint.yaml"
    before = served.read_text(encoding="utf-8")
    url = f"{attacked.base}/v1/router/reload"
    served_id = httpx.get(f"{attacked.base}/v1/router/stats", headers=attacked.admin,
                          timeout=10).json()["weights_id"]
    try:
        served.write_text(f"{before}weights: {package}\n", encoding="utf-8")
        rel, said = corrupt(package)
        r = httpx.post(url, headers=attacked.admin, timeout=30)
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "invalid_config", error
        assert str(package / rel) in error["message"] and said in error["message"], error
        routed = httpx.post(f"{attacked.base}/v1/route", json={"prompt": "hi"}, timeout=10)
        assert routed.status_code == 200, routed.text
        stats = httpx.get(f"{attacked.base}/v1/router/stats", headers=attacked.admin,
                          timeout=10)
        assert stats.json()["weights_id"] == served_id
        # The same config with the package whole again reloads: the file was the fault.
        shutil.rmtree(package)
        shutil.copytree(default_weights_path("cluster"), package)
        assert httpx.post(url, headers=attacked.admin, timeout=30).status_code == 200
    finally:
        served.write_text(before, encoding="utf-8")
        assert httpx.post(url, headers=attacked.admin, timeout=30).status_code == 200


def test_a_reload_to_a_package_past_max_weights_bytes_is_refused_unread(
        attacked: Attacked, tmp_path: Path) -> None:
    # A centroids file of 9 GiB (sparse: it takes no disk) would be held whole by a load.
    package = Path(shutil.copytree(default_weights_path("cluster"), tmp_path / "weights"))
    with (package / "clusters/centroids.npy").open("r+b") as fh:
        fh.truncate(9 << 30)
    served = attacked.data_dir.parent / "switchpoint.yaml"
    before = served.read_text(encoding="utf-8")
    url = f"{attacked.base}/v1/router/reload"
    try:
        served.write_text(f"{before}weights: {package}\n", encoding="utf-8")
        r = httpx.post(url, headers=attacked.admin, timeout=30)
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert f"'{package}': its arrays and profiles hold 9,66" in message, message
        assert ("bytes (the largest, 'clusters/centroids.npy', 9,663,676,416), more than the "
                "8,589,934,592 a load reads (max_weights_bytes); if the package is one you "
                "trust and the memory is there, raise it: max_weights_bytes in the config"
                ) in message, message
        assert httpx.post(f"{attacked.base}/v1/route", json={"prompt": "hi"},
                          timeout=10).status_code == 200
        # The config's max_weights_bytes is the cap the service loads with.
        shutil.rmtree(package)
        shutil.copytree(default_weights_path("cluster"), package)
        served.write_text(f"{before}weights: {package}\nmax_weights_bytes: 1000\n",
                          encoding="utf-8")
        r = httpx.post(url, headers=attacked.admin, timeout=30)
        assert r.status_code == 400 and "more than the 1,000 a load reads" in r.text, r.text
        served.write_text(f"{before}weights: {package}\n", encoding="utf-8")
        assert httpx.post(url, headers=attacked.admin, timeout=30).status_code == 200
    finally:
        served.write_text(before, encoding="utf-8")
        assert httpx.post(url, headers=attacked.admin, timeout=30).status_code == 200
