"""Learning from routing records: fit a weights package, add a model to it, remove one."""

from __future__ import annotations

import copy
import datetime as _dt
from pathlib import Path
from typing import Any

import numpy as np

from switchpoint._args import FUNCTION, PATH, expect
from switchpoint._limits import DEFAULT_EMBEDDER_ID as DEFAULT_EMBEDDER_ID  # (re-exported)
from switchpoint._messages import json_quoted, listed_names, plural
from switchpoint._progress import ProgressFn, step
from switchpoint._version import __version__
from switchpoint.catalog import catalog_name_problem
from switchpoint.embedding import Embedder, embed_in_steps, embedder_from_id
from switchpoint.errors import InvalidInputError, RecordsError
from switchpoint.policies import Inputs, Policy, new_policy
from switchpoint.records import RecordSet, load_records
from switchpoint.weights import WeightsPackage, listed, with_entry

_RECORDS = "a RecordSet or the path of a JSONL file of routing records"


def _inputs(records: RecordSet, embedder: Embedder | None, requires: str,
            progress: ProgressFn | None = None) -> Inputs:
    texts = list(records.prompts)
    if requires == "text":
        return Inputs(texts=texts)
    if records.embeddings is not None:
        return Inputs(texts=texts, embeddings=records.embeddings)
    if requires == "none":
        return Inputs(texts=texts)
    assert embedder is not None
    return Inputs(texts=texts, embeddings=embed_in_steps(embedder, texts, progress))


def select_split(records: RecordSet, split: str | None,
                 source: object = "records") -> RecordSet:
    """``split`` if given; else ``train`` when the records carry splits; else all of them;
    each of their models labelled at least once there."""
    if split is not None:
        return records.split(split, source=source, hint="; name one of them to fit on (--split "
                                                         "on the command line, split= in Python)"
                             ).check_labelled(source, split)
    if records.has_splits:
        if "train" not in records.splits:
            present = sorted({s for s in records.splits if s is not None})
            raise RecordsError(
                source, None,
                f"the records carry the splits {listed_names(present, quoted=True)} but "
                'none is "train", the split fitting uses when records have splits; name the '
                f"split to fit on (--split {present[0]} on the command line, split= in "
                "Python), or remove the split fields to fit on every record")
        return records.split("train").check_labelled(source, "train")
    return records


def fit(
    records: RecordSet | str | Path,
    policy: str | Policy = "cluster",
    *,
    split: str | None = None,
    embedder: Embedder | str | None = None,
    progress: ProgressFn | None = None,
    **params: Any,
) -> WeightsPackage:
    """Fit a policy on routing records and return the weights package (not yet saved:
    :meth:`WeightsPackage.save <switchpoint.WeightsPackage.save>`).

    ``records`` is a :class:`~switchpoint.RecordSet` or the path of a records file
    (:func:`~switchpoint.load_records`). ``policy`` is one of ``cluster`` (the default),
    ``knn``, ``tiers``, ``tfidf``, ``fixed``, ``random`` or one registered by name
    (:func:`~switchpoint.policies.register_policy`), and ``params`` its parameters
    (``n_clusters=20`` for ``cluster``, say; an unknown one is refused, listing the policy's);
    or an unfitted policy instance carrying its parameters, as a scikit-learn estimator is
    given (``fit(records, KnnPolicy(k=20))``), of which a copy is fitted: the instance itself
    is left unfitted, as it was (a fitted one is refused, as are ``params`` beside it).
    Without ``split``, records that carry a ``split`` field are limited to ``train``; with
    it, to that split. ``embedder`` is an :class:`~switchpoint.embedding.Embedder` or an
    embedder's id (default: the bundled all-MiniLM-L6-v2). ``progress(stage, done, total)``
    hears about the embedding (per batch of prompts) and the fitting (one step): a stage is
    reported first with ``done=0``, then with ``done == total`` once it completes.

    Raises :class:`~switchpoint.errors.InvalidInputError` naming the argument for a wrong
    type, an unknown policy or parameter, a parameter out of range or records with nothing to
    learn from; :class:`~switchpoint.errors.RecordsError` for a records file that cannot be
    read, a split the records do not have, or a model the split does not label.
    """
    expect("records", records, (RecordSet, *PATH), _RECORDS)
    model = new_policy(policy, params)  # (the one check of what a policy is given as)
    expect("split", split, str, "the name of a split of the records (train, ...)",
           optional=True)
    expect("embedder", embedder, (Embedder, str), "an Embedder or an embedder's id",
           optional=True)
    expect("progress", progress, FUNCTION, "a function progress(stage, done, total)",
           optional=True)
    source = str(records) if isinstance(records, PATH) else "records"
    # (each model becomes one of the weights': refused, before any work, when no catalog
    # could hold its name)
    if isinstance(records, PATH):
        data = load_records(records, model_rule=catalog_name_problem)
    else:
        data = records
        for j, name in enumerate(data.models):
            if (problem := catalog_name_problem(name)) is not None:
                raise InvalidInputError(f"records.models[{j}]", f"{problem}; rename the model "
                                                                "in the records")
    data = select_split(data, split, source)
    emb: Embedder = (
        embedder_from_id(embedder or DEFAULT_EMBEDDER_ID)
        if embedder is None or isinstance(embedder, str) else embedder
    )
    inputs = _inputs(data, emb, model.requires, progress)
    with step(progress, f"fitting the {json_quoted(model.name)} policy on "
                        f"{plural(len(data), 'record')}, {plural(len(data.models), 'model')}"):
        model.fit(inputs, data.scores, data.costs, list(data.models))
    provenance = {
        "records": source,
        "n_records": len(data),
        "split": split or ("train" if data.has_splits else None),
        **listed("tasks", sorted(set(data.tasks))),
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "switchpoint_version": __version__,
    }
    return WeightsPackage(policy=model, embedder_id=emb.id, dimension=emb.dimension,
                          provenance=provenance)


def check_model_name(name: str, field: str = "name") -> str:
    """``name``, when a catalog can hold it as a model's name (the catalog's one rule:
    :func:`~switchpoint.catalog.catalog_name_problem`), else an :class:`InvalidInputError`
    naming ``field``: the new model of :func:`add_model`, which the command line checks before
    it loads the weights."""
    expect(field, name, str, "the new model's name")
    problem = catalog_name_problem(name)
    if problem is not None:
        raise InvalidInputError(field, f"{problem}; name the model so a catalog can hold it")
    return name


def add_model(
    package: WeightsPackage,
    name: str,
    records: RecordSet | str | Path,
    *,
    embedder: Embedder | None = None,
    source_model: str | None = None,
) -> WeightsPackage:
    """A new package: ``package`` taught a new model from a small labelled set, without
    re-clustering.

    ``records`` are routing records that label ``name`` (or ``source_model``, when the records
    call the model by another name). Other models' labels in them are ignored.

    ``package`` is left as it was, so a router built from it routes on as before (from any
    thread); the new package shares the arrays the change leaves alone (a cluster policy's
    centroids, say) and has no ``path`` until it is saved.
    """
    expect("package", package, WeightsPackage, "a WeightsPackage (what load_weights returns)")
    check_model_name(name)
    expect("records", records, (RecordSet, *PATH), _RECORDS)
    expect("embedder", embedder, Embedder, "an Embedder", optional=True)
    expect("source_model", source_model, str, "the model's name in the records",
           optional=True)
    if name in package.models:
        raise InvalidInputError("name", f"model {json_quoted(name)} is already in these weights; "
                                        "remove it first to re-learn it")
    data = load_records(records) if isinstance(records, PATH) else records
    label = source_model or name
    if label not in data.models:
        raise RecordsError(str(records) if isinstance(records, PATH) else "records", None,
                           f"no labels for model {json_quoted(label)}; the records label "
                           f"{listed_names(data.models, quoted=True)}"
                           + ("" if source_model else
                              " (to add one of them under the name "
                              f"{json_quoted(name)}, name it as the source: add-model --label "
                              "MODEL, "
                              "or source_model=)"))
    j = data.models.index(label)
    rows = np.flatnonzero(~np.isnan(data.scores[:, j]))
    data = data.subset(rows)
    emb = embedder or embedder_from_id(package.embedder_id)
    inputs = _inputs(data, emb, package.policy.requires)
    policy = copy.copy(package.policy).add_model(name, inputs, data.scores[:, j],
                                                 data.costs[:, j])
    provenance = with_entry(package.provenance, "added_models", {
        "model": name, "n_records": len(data),
        "records": str(records) if isinstance(records, (str, Path)) else "records",
        "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})
    return _changed(package, policy, provenance)


def check_removable(package: WeightsPackage, name: str) -> None:
    """Raise :class:`InvalidInputError` naming ``name`` unless :func:`remove_model` can take the
    model ``name`` out of ``package``: one of its models, and not its only one. (``remove-model``
    checks it before where the result goes.)"""
    expect("package", package, WeightsPackage, "a WeightsPackage (what load_weights returns)")
    expect("name", name, str, "the name of a model of the weights")
    if name not in package.models:
        raise InvalidInputError("name", f"model {json_quoted(name)} is not in these weights; "
                                        f"they hold {listed_names(package.models, quoted=True)} "
                                        "(`switchpoint info --weights DIR` lists them)")
    if len(package.models) == 1:
        raise InvalidInputError("name", "cannot remove the only model; a router needs at least one")


def remove_model(package: WeightsPackage, name: str) -> WeightsPackage:
    """A new package: ``package`` without the model ``name`` (it must keep at least one),
    its provenance recording the removal (``removed_models``) as :func:`add_model`'s records
    an addition (``added_models``).

    ``package`` is left as it was, as :func:`add_model` leaves it."""
    check_removable(package, name)
    policy = copy.copy(package.policy).remove_model(name)
    provenance = with_entry(package.provenance, "removed_models", {
        "model": name, "at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})
    return _changed(package, policy, provenance)


def _changed(package: WeightsPackage, policy: Policy,
             provenance: dict[str, Any]) -> WeightsPackage:
    """A package of ``policy`` (a changed copy of ``package``'s) for ``package``'s embedder,
    not yet saved anywhere."""
    return WeightsPackage(policy=policy, embedder_id=package.embedder_id,
                          dimension=package.dimension, provenance=provenance)
