"""An exported package routes as the live router that learned it did."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from switchpoint.catalog import Catalog, ModelCard, estimate_tokens
from switchpoint.learning.export import export_weights
from switchpoint.policies import Estimates, Inputs
from switchpoint.router import Router
from switchpoint.weights import (
    FORMAT_VERSION,
    LEARNED_FORMAT_VERSION,
    WeightsPackage,
    load_weights,
)
from tests.conftest import FakeEmbedder
from tests.fakes.two_kinds import MODELS, labels, math_prompt, poem_prompt, two_kinds_package

PROBES = [math_prompt(9999), poem_prompt(9999), "ships and sails on the sea 3",
          "ships and sails on the sea 77", "a question about nothing we have seen", "hi"]


def _catalog() -> Catalog:
    return Catalog([ModelCard("strong", profile="strong", input_per_mtok=5, output_per_mtok=15),
                    ModelCard("runner", profile="runner", input_per_mtok=1, output_per_mtok=3),
                    ModelCard("cheap", profile="cheap", input_per_mtok=0.1,
                              output_per_mtok=0.2)])


def _router(package: WeightsPackage, embedder: FakeEmbedder, priced: bool) -> Router:
    return Router(package, embedder=embedder, cost_weight=0.5,
                  catalog=_catalog() if priced else None)


def _teach(router: Router, ratio: float) -> None:
    """Outcomes of every model on math prompts, with measured costs ``ratio`` times what the
    router expected, some without a cost, and prompts of a new kind (a grown cluster)."""
    for i in range(60):
        prompt = math_prompt(i)
        d = router.route(prompt)
        for j, model in enumerate(MODELS):
            expected = d.expected_costs[model]
            if router.catalog.all_priced:
                expected = router.catalog[model].price(estimate_tokens(prompt),
                                                       router.catalog.expected_output_tokens)
            cost = ratio * expected if (i + j) % 3 else None
            router.report_outcome(d.decision_id, 0.3 + 0.2 * j, model=model, cost=cost)
    for i in range(12):
        d = router.route(f"ships and sails on the sea {i}")
        router.report_outcome(d.decision_id, 1.0 if i % 2 else 0.4, model=MODELS[i % 3],
                              cost=None if i % 4 else 0.5 * d.expected_costs[MODELS[i % 3]])


def _same(live: Router, loaded: Router) -> None:
    a, b = live.estimates(PROBES), loaded.estimates(PROBES)
    assert a.models == b.models
    for name in ("error", "cost", "stderr", "support"):
        x, y = getattr(a, name), getattr(b, name)
        if name == "stderr" and x is None:  # (the tiers policy's estimates have none)
            assert y is None
            continue
        np.testing.assert_allclose(y, x, rtol=1e-6, atol=1e-9, err_msg=name)
    assert a.pessimism == b.pessimism
    assert live.cost_scale() == pytest.approx(loaded.cost_scale(), rel=1e-9)
    for prompt in PROBES:
        d, e = live.route(prompt), loaded.route(prompt)
        assert e.selected_model == d.selected_model
        for model, score in d.all_scores.items():  # (scores are shown to 6 decimals)
            assert e.all_scores[model] == pytest.approx(score, abs=1.5e-6)


@pytest.mark.parametrize("policy", ["cluster", "knn", "tiers"])
@pytest.mark.parametrize("priced", [True, False])
@pytest.mark.parametrize("ratio", [0.25, 4.0])
def test_a_reload_of_the_export_routes_as_the_live_router_did(
        policy: str, priced: bool, ratio: float, fake_embedder: FakeEmbedder,
        tmp_path: Path) -> None:
    live = _router(two_kinds_package(fake_embedder, policy=policy), fake_embedder, priced)
    _teach(live, ratio)
    exported = export_weights(live, tmp_path / "learned")
    package = load_weights(tmp_path / "learned")
    _same(live, _router(package, fake_embedder, priced))
    assert package.weights_id == exported.weights_id  # (what it holds, read back whole)


@pytest.mark.parametrize("policy", ["cluster", "knn"])
def test_a_router_on_the_export_learns_on_and_its_export_routes_as_it_did(
        policy: str, fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    live = _router(two_kinds_package(fake_embedder, policy=policy), fake_embedder, True)
    _teach(live, 4.0)
    export_weights(live, tmp_path / "first")
    again = _router(load_weights(tmp_path / "first"), fake_embedder, True)
    _teach(again, 0.25)
    for i in range(6):  # a kind of prompt new to both: a cluster the second one grows
        d = again.route(f"an old sailor's song of the northern winds {i}")
        again.report_outcome(d.decision_id, 0.6, model="runner")
    export_weights(again, tmp_path / "second")
    loaded = load_weights(tmp_path / "second")
    _same(again, _router(loaded, fake_embedder, True))
    assert json.loads((tmp_path / "second" / "manifest.json").read_text())[
        "format_version"] == LEARNED_FORMAT_VERSION


def _estimates(package: WeightsPackage, embedder: FakeEmbedder, models: list[str]) -> Estimates:
    est = _router(package, embedder, False).estimates(PROBES)
    cols = [est.models.index(m) for m in models]
    assert est.stderr is not None
    return Estimates(models=models, error=est.error[:, cols], cost=est.cost[:, cols],
                     support=est.support[:, cols], unit_ids=est.unit_ids,
                     unit_kind=est.unit_kind, stderr=est.stderr[:, cols])


def test_a_model_added_to_or_removed_from_an_export_leaves_the_others_as_they_were(
        fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    """What the export keeps of the live router stays with the models it was kept for; a
    model added later is estimated from its labels as it would be in any package, and what
    is saved then loads as it was."""
    live = _router(two_kinds_package(fake_embedder), fake_embedder, False)
    _teach(live, 4.0)
    exported = export_weights(live, tmp_path / "learned")
    before = _estimates(exported, fake_embedder, ["strong", "cheap"])
    prompts, scores, costs = labels()
    inputs = Inputs(embeddings=fake_embedder.embed(prompts[::5]))
    plain = two_kinds_package(fake_embedder)
    for package in (exported, plain):
        package.policy.add_model("newcomer", inputs, scores[::5, 1], costs[::5, 1] / 2)
        package.policy.remove_model("runner")
    after = _estimates(exported, fake_embedder, ["strong", "cheap"])
    # (errors are the tables', which a grown cluster pools across its models, as anywhere)
    for name in ("cost", "stderr"):
        np.testing.assert_allclose(getattr(after, name), getattr(before, name), rtol=1e-12)
    # The newcomer's costs are its labels' (what adding it to the fitted package gives).
    new, fitted = (_estimates(p, fake_embedder, ["newcomer"]) for p in (exported, plain))
    np.testing.assert_allclose(new.cost, fitted.cost, rtol=1e-12)
    saved = load_weights(exported.save(tmp_path / "added"))
    assert saved.models == ["strong", "cheap", "newcomer"]
    reloaded = _estimates(saved, fake_embedder, saved.models)
    for name in ("error", "cost", "stderr"):
        np.testing.assert_allclose(getattr(reloaded, name),
                                   getattr(_estimates(exported, fake_embedder, saved.models),
                                           name), rtol=1e-6, atol=1e-9)
    # A fit starts afresh: the policy keeps nothing of the export.
    refit = saved.policy.fit(Inputs(embeddings=fake_embedder.embed(prompts)), scores, costs,
                             MODELS)
    assert not refit.kept_  # type: ignore[attr-defined]
    assert refit.get_state().profiles == plain.policy.fit(
        Inputs(embeddings=fake_embedder.embed(prompts)), scores, costs, MODELS
    ).get_state().profiles


@pytest.mark.parametrize("policy", ["cluster", "knn", "tiers"])
def test_a_package_without_what_an_export_keeps_loads_from_its_tables_as_before(
        policy: str, fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    """Fitted packages are written as before (format 1, which earlier switchpoints read), and
    an export of an earlier switchpoint (no fields but the tables') loads from its tables."""
    fitted = two_kinds_package(fake_embedder, policy=policy)
    path = fitted.save(tmp_path / "fitted")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION == 1
    assert load_weights(path).weights_id == fitted.weights_id == manifest["weights_id"]
    live = _router(two_kinds_package(fake_embedder, policy=policy), fake_embedder, False)
    _teach(live, 4.0)
    export_weights(live, tmp_path / "learned")
    exported = load_weights(tmp_path / "learned")
    assert json.loads((tmp_path / "learned" / "manifest.json").read_text())[
        "format_version"] == LEARNED_FORMAT_VERSION
    state = exported.policy.get_state()
    for profile in state.profiles.values():
        for key in ("expected_cost", "mean_cost", "stderr_count", "label_variance"):
            profile.pop(key, None)
    earlier = type(exported.policy).from_state(state)
    assert earlier.get_state().profiles == state.profiles  # nothing kept, nothing written
    priced = _router(exported, fake_embedder, True).estimates(PROBES)
    tables = _router(WeightsPackage(earlier, fake_embedder.id, fake_embedder.dimension),
                     fake_embedder, True).estimates(PROBES)
    np.testing.assert_allclose(tables.error, priced.error, rtol=1e-12)
    assert not np.allclose(tables.cost, priced.cost, rtol=1e-3)  # its costs are its tables'


def test_an_export_holding_the_traffics_vectors_is_its_owners_alone(
        fake_embedder: FakeEmbedder, tmp_path: Path) -> None:
    """A cluster a prompt unlike any before opened is that prompt's vector: under a umask of
    022 the export was a directory of 0755 and files of 0644, which any local user could read;
    a package fitted on records keeps the usual permissions."""
    fitted = two_kinds_package(fake_embedder, policy="cluster")
    live = _router(fitted, fake_embedder, True)
    _teach(live, 1.0)
    old = os.umask(0o022)
    try:
        export_weights(live, tmp_path / "learned")
        fitted.save(tmp_path / "fitted")
    finally:
        os.umask(old)
    learned = live.weights.policy.get_state().arrays["centroids"].shape[0]
    assert load_weights(tmp_path / "learned").policy.get_state().arrays[
        "centroids"].shape[0] > learned  # (the ships' prompts opened a cluster)
    for folder, dirs, files in [(tmp_path / "learned", 0o700, 0o600),
                                (tmp_path / "fitted", 0o755, 0o644)]:
        for path in [folder, *folder.rglob("*")]:
            want = dirs if path.is_dir() else files
            assert path.stat().st_mode & 0o777 == want, (path, oct(path.stat().st_mode))
