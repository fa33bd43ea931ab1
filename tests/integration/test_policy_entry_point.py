"""A policy an installed package names by an entry point (group ``switchpoint.policies``):
the command line fits and evaluates it by that name, and ``switchpoint serve`` routes on its
weights, as an experiment's arm and after a policy swap."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

import switchpoint.policies as policies
from switchpoint.cli import main
from switchpoint.router import Router
from switchpoint.weights import load_weights
from tests.conftest import SAMPLE
from tests.integration.servers import ProcessServer

MODULE = '''
import numpy as np

from switchpoint.policies import Policy


class CheapestGood(Policy):
    name = "cheapest-good"
    requires = "none"

    def __init__(self, threshold=0.7):
        self.threshold = threshold

    def _estimate(self, inputs):
        good = 1.0 - self.error_ >= self.threshold
        return self.estimates(inputs, np.where(good, 0.0, 1.0))
'''


def installed(site: Path) -> Path:
    """``site``, holding a package installed as pip installs one that names its policy by an
    entry point."""
    (site / "my_policies-1.0.dist-info").mkdir(parents=True)
    (site / "my_policies.py").write_text(MODULE, encoding="utf-8")
    (site / "my_policies-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: my-policies\nVersion: 1.0\n", encoding="utf-8")
    (site / "my_policies-1.0.dist-info" / "entry_points.txt").write_text(
        "[switchpoint.policies]\ncheapest-good = my_policies:CheapestGood\n", encoding="utf-8")
    return site


def test_an_installed_policy_is_fitted_evaluated_and_served_by_its_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    site = installed(tmp_path / "site")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(policies, "_registered", {})
    weights = tmp_path / "w"
    assert main(["fit", str(SAMPLE), "--policy", "cheapest-good", "--param", "threshold=0.75",
                 "--out", str(weights), "-q"]) == 0
    assert main(["eval", str(SAMPLE), "--policy", "cheapest-good", "--json", "-q"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [p["name"] for p in report["policies"]] == ["cheapest-good"]
    package = load_weights(weights)
    assert package.policy.get_params() == {"threshold": 0.75}
    expected = Router(package).route("What is 2 + 2?").selected_model

    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "policy": "fixed",  # (the bundled weights of a policy that needs no embedder)
        "policies": {"cheapest-good": str(weights)},
        "experiments": {"custom": {"arms": {"control": {},
                                            "mine": {"policy": "cheapest-good"}}}},
    }), encoding="utf-8")
    with ProcessServer("--config", config, data_dir=tmp_path / "data",
                       env={"PYTHONPATH": str(site)}).start() as server:
        server.wait_ready()
        with httpx.Client(base_url=server.base, timeout=60) as client:
            arms: dict[str, set[str]] = {}
            for i in range(16):
                r = client.post("/v1/route", json={"prompt": f"What is {i} + 2?"})
                assert r.status_code == 200, r.text
                arms.setdefault(r.json()["arm"], set()).add(r.json()["selected_model"])
            assert arms.keys() == {"control", "mine"} and arms["mine"] == {expected}, arms
            r = client.post("/v1/router/policy/cheapest-good")
            assert r.status_code == 200, r.text
            assert client.get("/health").json()["policy"] == "cheapest-good"
            r = client.post("/v1/route", json={"prompt": "Prove that 2 is prime."})
            assert r.status_code == 200 and r.json()["selected_model"] == expected, r.text


def test_an_entry_point_that_cannot_be_loaded_is_refused_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An installed package whose entry point names a module that does not import is a
    refusal naming the entry point and what its import raised (it was a traceback)."""
    site = tmp_path / "site"
    (site / "broken_policies-1.0.dist-info").mkdir(parents=True)
    (site / "broken_policies-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: broken-policies\nVersion: 1.0\n", encoding="utf-8")
    (site / "broken_policies-1.0.dist-info" / "entry_points.txt").write_text(
        "[switchpoint.policies]\nbroken = no_such_module:Broken\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(policies, "_registered", {})
    assert main(["fit", str(SAMPLE), "--policy", "broken", "--out", str(tmp_path / "w"),
                 "-q"]) == 2
    err = capsys.readouterr().err
    assert ('the entry point "broken" of the group switchpoint.policies names '
            "no_such_module:Broken, which cannot be loaded (ModuleNotFoundError: ") in err, err
    assert "fix or reinstall the package that declares it" in err
    assert not (tmp_path / "w").exists()
