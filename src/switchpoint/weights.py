"""The weights package: a directory that holds a fitted policy and says how it was made.

::

    manifest.json          format version, the package's id as written (informative: a
                           loaded package's id is computed from what it holds), embedder id
                           and dimension, policy and its parameters, models, provenance, and
                           a SHA-256 for every file
    clusters/*.npy         the policy's shared arrays (``examples/`` for knn, ``policy/`` others)
    profiles/<model>.json  one per model: its per-unit counts, mean error and mean cost
                           (and, in an export of a router that learned from outcomes, what
                           it estimated beyond them: expected_cost, mean_cost, stderr_count,
                           label_variance)

Everything is validated on load; a missing file, a file the manifest gives no SHA-256 for, a
checksum mismatch, a wrong dimension, a model without a profile or a model name holding a
control or invisible character (refused on save too) raises
:class:`~switchpoint.errors.WeightsError` naming the file and the fix.
Packages are written to a temporary sibling directory and swapped into place in one step (where
the system offers it, see :func:`~switchpoint._files.replace_dir`), so a crash never leaves half
a package, or none, behind (what it leaves beside it, the next save clears). Saving replaces
only what is safe to replace: an earlier weights package or an empty directory
(:func:`check_weights_target`), never a file or a directory of other things.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from switchpoint._args import INTEGER, PATH, expect
from switchpoint._bundled import DEFAULT_PACKAGE as DEFAULT_PACKAGE  # (re-exported)
from switchpoint._bundled import DEFAULT_POLICY as DEFAULT_POLICY
from switchpoint._bundled import bundled_policies as bundled_policies
from switchpoint._bundled import default_weights_path as default_weights_path
from switchpoint._files import (
    access_problem,
    clear_leftovers,
    file_identity,
    file_kind,
    held_identity,
    npy_header,
    path_problem,
    read_problem,
    replace_dir,
    set_aside,
    temporary_name,
    unnameable,
    write_problem,
)
from switchpoint._json import DuplicateKeyError, as_float, loads, unreadable
from switchpoint._limits import MAX_WEIGHTS_BYTES as MAX_WEIGHTS_BYTES  # (re-exported)
from switchpoint._limits import MAX_WEIGHTS_BYTES_LIMIT as MAX_WEIGHTS_BYTES_LIMIT
from switchpoint._messages import (
    bounded_repr,
    got,
    json_quoted,
    listed_names,
    printed_name_problem,
    quoted_path,
)
from switchpoint.catalog import MAX_ANSWER_COST, MAX_CATALOG_MODELS, named_once
from switchpoint.errors import InvalidInputError, WeightsError

if TYPE_CHECKING:
    import numpy as np

    from switchpoint.config import Settings
    from switchpoint.policies import Policy

# (NumPy and the policies, which compute with it, are imported where a package's arrays are
# read, written or hashed: reading what a manifest names, as a listing of the models the
# weights profile does, loads neither.)

FORMAT = "switchpoint-weights"
FORMAT_VERSION = 1
#: The version of a package whose profiles hold what a router that learned from outcomes
#: estimated beyond its tables (:data:`_LEARNED_FIELDS`). A reader that ignored those fields
#: would route by the tables alone, with other costs and standard errors than the router
#: the package was exported from, so such a package says it needs a reader that knows them;
#: every other package keeps version 1, which earlier switchpoints read.
LEARNED_FORMAT_VERSION = 2
_READABLE_VERSIONS = (FORMAT_VERSION, LEARNED_FORMAT_VERSION)
_ARRAY_DIRS = {"cluster": "clusters", "knn": "examples"}
# Arrays that hold embedding-space vectors, whose width must equal the embedder's dimension.
_VECTOR_ARRAYS = {"cluster": ("centroids", "coarse_centroids"), "knn": ("examples",)}
#: The most arrays a package's manifest may name (a policy holds at most 4).
MAX_ARRAYS = 16
# Arrays a policy holds as float32 (its vectors), whatever type the file gives.
_FLOAT32_ARRAYS = {**_VECTOR_ARRAYS, "tfidf": ("centroids",)}
#: The widest embedding a package's ``dimension`` may give (the widest common embedders give
#: 4,096 numbers a text).
MAX_DIMENSION = 65_536
#: The most a package's provenance may hold, as JSON: where the weights came from (records,
#: split, tasks, creation time, models added) is a few KB; a router copies it whole.
MAX_PROVENANCE_BYTES = 1 << 20
#: The most task names, and models added, a package's provenance lists (the rest are counted).
MAX_PROVENANCE_ITEMS = 100
# The most a package's manifest.json, or one model's profile, may hold: far more than any fit
# writes (a profile of a knn package fitted on a million examples is about 40 MB).
MAX_JSON_BYTES = 256 << 20
# What a profile's per-unit lists hold: the bounds of each number, and whether null (no
# label there) may stand for one.
#: The most labels a profile may count in one unit: 2**53, past which float64 counts no whole
#: number exactly, so no fit or learning counts so many (a fit reads at most a million
#: records); a count near the largest float (1e308) made every estimate NaN, its sums overflowing.
MAX_UNIT_COUNT = float(2**53)
_PROFILE_LISTS = {"count": (0.0, MAX_UNIT_COUNT, False), "error": (0.0, 1.0, True),
                  "prior_error": (0.0, 1.0, False), "cost": (0.0, MAX_ANSWER_COST, True),
                  "expected_cost": (0.0, MAX_ANSWER_COST, False),
                  "stderr_count": (0.0, MAX_UNIT_COUNT, False)}
# A profile's single numbers and their bounds (one label's variance of a 0/1 error is at most
# 0.25).
_PROFILE_NUMBERS = {"mean_cost": (0.0, MAX_ANSWER_COST), "label_variance": (0.0, 0.25)}
# The profile fields only a package exported from a router that learned from outcomes holds.
_LEARNED_FIELDS = ("expected_cost", "mean_cost", "stderr_count", "label_variance")


def listed(key: str, names: list[str]) -> dict[str, Any]:
    """``{key: names}`` for a package's provenance, the list cut to its first
    :data:`MAX_PROVENANCE_ITEMS`, with ``n_<key>`` counting them all when it is longer (records
    of thousands of tasks would make every copy of the provenance large)."""
    if len(names) <= MAX_PROVENANCE_ITEMS:
        return {key: names}
    return {key: names[:MAX_PROVENANCE_ITEMS], f"n_{key}": len(names)}


def with_entry(provenance: dict[str, Any], key: str, entry: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``provenance`` with ``entry`` appended to its list ``key`` (a model added,
    outcomes learned), which keeps the latest :data:`MAX_PROVENANCE_ITEMS` entries and counts
    those let go in ``earlier_<key>``: a package added to or re-exported every day keeps a
    provenance of a few KB."""
    out = copy.deepcopy(provenance)
    held = out.get(key)
    entries = [*(held if isinstance(held, list) else []), entry]
    if len(entries) > MAX_PROVENANCE_ITEMS:
        earlier = out.get(f"earlier_{key}")
        out[f"earlier_{key}"] = ((earlier if type(earlier) is int else 0)
                                 + len(entries) - MAX_PROVENANCE_ITEMS)
        entries = entries[-MAX_PROVENANCE_ITEMS:]
    out[key] = entries
    return out


@dataclass
class WeightsPackage:
    """A fitted policy plus the embedder it expects and where it came from: what
    :func:`~switchpoint.fit` returns, :func:`load_weights` reads and a
    :class:`~switchpoint.Router` routes with.

    ``policy`` is the fitted policy; ``embedder_id`` the id of the embedder it was fitted with
    (the bundled default's is ``all-MiniLM-L6-v2/tail-64``) and ``dimension`` its vectors'
    length (1 to 65,536, the policy's own when it holds vectors); ``provenance`` a dict of
    where it came from (records, split, tasks, creation time, models added), written to the
    manifest; ``path`` the directory it was loaded from or saved to (None until saved). Each
    is checked as it is built: a wrong type, a policy not fitted, an empty ``embedder_id`` or
    a ``dimension`` out of range is an :class:`~switchpoint.errors.InvalidInputError` naming
    it."""

    policy: Policy
    embedder_id: str
    dimension: int
    provenance: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        from switchpoint.policies import Policy

        expect("policy", self.policy, Policy, "a fitted Policy")
        expect("embedder_id", self.embedder_id, str, "an embedder's id")
        expect("dimension", self.dimension, INTEGER,
               "the embedder's dimension (an integer)")
        expect("provenance", self.provenance, dict, "a dict")
        expect("path", self.path, PATH, "the package's directory", optional=True)
        if self.path is not None:
            self.path = Path(self.path)
        size = len(json.dumps(self.provenance, default=str).encode())
        if size > MAX_PROVENANCE_BYTES:
            raise InvalidInputError("provenance", f"holds {size / (1 << 20):.1f} MiB as JSON, "
                                                  f"over the {MAX_PROVENANCE_BYTES >> 20} MiB a "
                                                  "package's provenance may hold (where the "
                                                  "weights came from, a few KB); keep it short")
        # What a router built from the package, or the package saved and loaded again, could
        # not use: refused here, naming it, rather than as an AttributeError or a NumPy shape
        # error on the first route.
        if not hasattr(self.policy, "models_"):
            raise InvalidInputError("policy", f"{type(self.policy).__name__} is not fitted; "
                                              "fit it first (or make the package with fit(), "
                                              "or load one with load_weights())")
        if not self.embedder_id.strip():
            raise InvalidInputError("embedder_id", "is empty; give the id of the embedder the "
                                                   "policy was fitted with (the default's is "
                                                   "'all-MiniLM-L6-v2/tail-64')")
        if not 1 <= self.dimension <= MAX_DIMENSION:
            raise InvalidInputError("dimension", f"is {json_quoted(self.dimension)}; an "
                                                 "embedder's "
                                                 f"dimension is from 1 to {MAX_DIMENSION:,}")
        width = self.policy.vector_width
        if width is not None and width != self.dimension:
            raise InvalidInputError("dimension", f"is {self.dimension}, but the policy holds "
                                                 f"{width}-d vectors; give dimension={width}, "
                                                 "that of the embedder it was fitted with")

    def __repr__(self) -> str:
        """The policy with its parameters, the embedder, the models and where the package
        came from, each list and text bounded (:func:`~switchpoint._messages.bounded_repr`):
        the provenance of a fit on records of thousands of tasks, or of many ``add_model``
        calls, is a few lines, never the arrays."""
        return (f"WeightsPackage(policy={self.policy!r}, "
                f"embedder_id={bounded_repr(self.embedder_id)}, dimension={self.dimension}, "
                f"models={bounded_repr(self.models)}, "
                f"provenance={bounded_repr(self.provenance)}, path={self.path!r})")

    @property
    def models(self) -> list[str]:
        """The models the policy has learned profiles for, in its order (a copy)."""
        return list(self.policy.models_)

    @property
    def weights_id(self) -> str:
        """``<policy>-<12 hex>``: a digest of the policy's name, parameters, profiles and
        arrays, what else it learned (a policy of your own's learned numbers and strings:
        :meth:`Policy.get_state <switchpoint.policies.Policy.get_state>`) and the embedder's
        id (the manifest's field is not read: a package written before a policy gained a
        parameter loads with its default, and the id says so)."""
        import numpy as np

        from switchpoint.policies.base import LEARNED

        state = self.policy.get_state()
        digest = hashlib.sha256()
        digest.update(json.dumps([state.name, state.params, self.embedder_id], sort_keys=True,
                                 default=str).encode())
        digest.update(json.dumps(state.profiles, sort_keys=True).encode())
        for name in sorted(state.arrays):
            digest.update(np.ascontiguousarray(state.arrays[name]).tobytes())
        if LEARNED in state.meta:  # (absent from the built-in policies' state: their ids stay)
            digest.update(json.dumps(state.meta[LEARNED], sort_keys=True).encode())
        return f"{state.name}-{digest.hexdigest()[:12]}"

    def save(self, path: str | Path, *, bundled: bool = False) -> Path:
        """:func:`save_weights` for this package: write it to the directory ``path`` and
        return that path."""
        return save_weights(self, path, bundled=bundled)


_MAX_STEM = 100  # characters of a model's name in its profile's file name (file systems: 255)


def _profile_filename(model: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "__", model).strip(".")
    if len(safe) > _MAX_STEM:  # a long name: its start, and a digest of all of it
        safe = f"{safe[:_MAX_STEM]}-{_sha256(model.encode('utf-8', 'surrogatepass'))[:8]}"
    return f"profiles/{safe or 'model'}.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_weights_target(path: str | Path, *, bundled: bool = False) -> Path:
    """``path`` if :func:`save_weights` may write a package there: a new path, an empty
    directory or a weights package (which it replaces). Anything else (a file, a directory of
    other things, ``.``) raises :class:`~switchpoint.errors.WeightsError` naming it, and so
    does a place among the weights bundled with switchpoint (every router of the
    installation loads them by default, and a reinstall puts them back) unless ``bundled``
    (the build that makes them)."""
    target = Path(path)
    if target.name in ("", ".", ".."):
        raise WeightsError(target, "names no directory of its own; give the weights a "
                                   "directory name, e.g. ./weights")
    problem = unnameable(target)  # (first: resolving it, the system is not even asked)
    if problem is not None:
        raise _unwritable(target, problem)
    if not bundled and _among_bundled(target):
        raise WeightsError(target, "is among the weights bundled with switchpoint, which "
                                   "every router of this installation loads by default and a "
                                   "reinstall puts back; write to a directory of your own "
                                   "(then set weights: DIR in the config, or pass --weights "
                                   "DIR)")
    holder = _enclosing_package(target)
    if holder is not None:
        raise WeightsError(target, f"is inside the weights package {quoted_path(holder)}, "
                                   "which would then hold other files than its own, so a "
                                   "save could no longer replace it; write the weights beside "
                                   f"it, e.g. {quoted_path(holder.with_name(holder.name + '-2'))}")
    try:
        exists = target.exists()
    except OSError as exc:  # a name too long for the file system, say
        raise _unwritable(target, exc.strerror or str(exc)) from None
    if not exists:
        problem = path_problem(target)
        if problem is not None:
            raise _unwritable(target, problem)
        return target
    if not target.is_dir():
        raise WeightsError(target, f"is a file, not a weights package; {_CHOOSE}")
    if _is_package(target):
        return target
    try:
        empty = next(target.iterdir(), None) is None
    except OSError as exc:
        raise WeightsError(target, f"cannot read it: {exc.strerror or exc}") from None
    if not empty:
        raise WeightsError(target, "holds other files than a weights package's own (its "
                                   f"manifest.json of format {json_quoted(FORMAT)} and the "
                                   f"files it lists); {_CHOOSE}")
    return target


def replacing_note(target: Path) -> str:
    """What a save to ``target`` (checked by :func:`check_weights_target`) replaces, said
    after where it wrote: ``, replacing the weights package ID that was there`` when an
    earlier package is there, else nothing, so a command writing to a folder that held one says
    that it is gone."""
    if not _is_package(target):
        return ""
    try:
        earlier = loads(_read_json_file(target / "manifest.json")).get("weights_id")
    except (OSError, ValueError, WeightsError, AttributeError):
        earlier = None
    named = f" {earlier}" if isinstance(earlier, str) and earlier.isprintable() else ""
    return f", replacing the weights package{named[:80]} that was there"


def _among_bundled(target: Path) -> bool:
    """Whether ``target`` is the bundled weights' folder or inside it (by any name)."""
    root = default_weights_path().parent
    try:
        real, bundled_root = target.resolve(), root.resolve()
    except (OSError, RuntimeError):  # a symlink loop, say: not provably theirs
        return False
    return real == bundled_root or bundled_root in real.parents


_CHOOSE = ("choose a new or empty directory for the weights (saving replaces only an earlier "
           "weights package)")


def _enclosing_package(target: Path) -> Path | None:
    """The weights package (a folder whose manifest.json is of :data:`FORMAT`) that ``target``
    lies inside, by any name, or ``None``."""
    try:
        real = target.resolve()
    except (OSError, RuntimeError):  # a symlink loop, say: left to the checks that follow
        return None
    for folder in real.parents:
        try:
            manifest = loads(_read_json_file(folder / "manifest.json"))
        except (OSError, ValueError, WeightsError):
            continue
        if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
            return folder
    return None


def _is_package(root: Path) -> bool:
    """Whether ``root`` holds a weights package and nothing else (replacing it loses nothing
    of anyone's)."""
    try:
        manifest = loads(_read_json_file(root / "manifest.json"))
    except (OSError, ValueError, WeightsError):
        return False
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        return False
    files = manifest.get("files")
    own = {"manifest.json", *(files if isinstance(files, dict) else {})}
    try:
        return all((p.is_dir() and not p.is_symlink()) or p.relative_to(root).as_posix() in own
                   for p in root.rglob("*"))
    except OSError:
        return False


def save_weights(package: WeightsPackage, path: str | Path, *, bundled: bool = False) -> Path:
    """Write ``package`` to the directory ``path`` (a string or a ``pathlib.Path``) and
    return that path, which the package's ``path`` then names too.

    ``path`` must be a new or empty directory, or an earlier weights package, which is
    replaced in one step: a process killed while saving leaves the old package or the new one,
    whole. Anything else there (a file, a directory of other things) is refused with
    :class:`~switchpoint.errors.WeightsError` naming it, nothing written, and so are the
    weights bundled with switchpoint unless ``bundled`` is True (every router of the
    installation loads them by default)."""
    expect("package", package, WeightsPackage, "a WeightsPackage (what fit returns)")
    expect("path", path, PATH, "the path of a directory")
    expect("bundled", bundled, bool, "True or False")
    target = check_weights_target(path, bundled=bundled)
    state = package.policy.get_state()
    _check_model_names(state.profiles, target)
    private = holds_traffic(package)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        # (mkdir, not mkdtemp: a package of records gets the usual permissions, not owner-only
        # ones, so a service running as another user can read it; one of outcomes learned
        # from the traffic is its owner's alone, as the data_dir it came from)
        clear_leftovers(target)  # what saves killed mid-way left
        tmp = temporary_name(target)
        tmp.mkdir(mode=0o700 if private else 0o777)
    except OSError as exc:
        raise _unwritable(target, write_problem(target, exc)) from None
    try:
        files: dict[str, str] = {}
        array_dir = _ARRAY_DIRS.get(state.name, "policy")
        arrays: dict[str, str] = {}
        for name, arr in state.arrays.items():
            import numpy as np

            rel = f"{array_dir}/{name}.npy"
            buf = io.BytesIO()
            np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
            _write(tmp / rel, buf.getvalue(), private)
            files[rel] = _sha256(buf.getvalue())
            arrays[name] = rel
        profiles: dict[str, str] = {}
        used: set[str] = set()
        for model, profile in state.profiles.items():
            rel = _profile_filename(model)
            if rel in used:
                rel = rel.replace(".json", f"-{_sha256(model.encode())[:8]}.json")
            used.add(rel)
            data = json.dumps({"model": model, **profile}, separators=(",", ":")).encode()
            _write(tmp / rel, data, private)
            files[rel] = _sha256(data)
            profiles[model] = rel
        manifest = {
            "format": FORMAT,
            "format_version": (LEARNED_FORMAT_VERSION if any(
                key in profile for profile in state.profiles.values()
                for key in _LEARNED_FIELDS) else FORMAT_VERSION),
            "weights_id": package.weights_id,
            "embedder": {"id": package.embedder_id, "dimension": package.dimension},
            "policy": {"name": state.name, "params": state.params, "meta": state.meta},
            "models": list(state.profiles),
            "arrays": arrays,
            "profiles": profiles,
            "files": files,
            "provenance": package.provenance,
        }
        _write(tmp / "manifest.json", json.dumps(manifest, indent=2, default=str).encode(),
               private)
        replace_dir(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _unwritable(target, write_problem(target, exc)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    package.path = target
    return target


def _check_model_names(models: Iterable[str], where: Path) -> None:
    """Each model's name shows as itself (the one rule for model names: see
    :func:`~switchpoint._messages.printed_name_problem`)."""
    for model in models:
        problem = printed_name_problem(model)
        if problem is not None:
            raise WeightsError(where, f"{problem}; fit the weights again from records that "
                                      "name the model so")


def _unwritable(target: Path, reason: str) -> WeightsError:
    return WeightsError(target, f"cannot write a weights package there: {reason}; choose a "
                                "directory you can write to")


def holds_traffic(package: WeightsPackage) -> bool:
    """Whether ``package`` holds outcomes learned from the traffic (``learn --export``, or a
    package made from one): its clusters opened by prompts unlike any before are those
    prompts' vectors, so it is saved readable by its owner alone (a directory of mode 0700,
    files of 0600), as the data_dir it was learned from is; a package fitted on records keeps
    the usual permissions."""
    return any(key in package.provenance for key in ("learned", "earlier_learned"))


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(mode=0o700 if private else 0o777, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    with os.fdopen(os.open(path, flags, 0o600 if private else 0o666), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def policy_of(path: str | Path) -> str | None:
    """The policy the manifest of the weights package at ``path`` names, read without loading
    the package (None: no readable manifest there; loading it says what is wrong)."""
    try:
        manifest = loads(_read_json_file(Path(path) / "manifest.json").decode("utf-8"))
    except (OSError, ValueError, WeightsError):
        return None
    policy = manifest.get("policy") if isinstance(manifest, dict) else None
    name = policy.get("name") if isinstance(policy, dict) else None
    return name if isinstance(name, str) else None


def manifest_models(path: str | Path | None, policy: str | None = None) -> list[str] | None:
    """The models the manifest of the weights package at ``path`` (None: the bundled one of
    ``policy``) says it profiles, read without loading the package, as :func:`policy_of`
    reads its policy: no array is read, and NumPy is not imported (None: no readable list of
    names there; loading it says what is wrong)."""
    root = default_weights_path(policy or DEFAULT_POLICY) if path is None else Path(path)
    try:
        manifest = loads(_read_json_file(root / "manifest.json").decode("utf-8"))
    except (OSError, ValueError, WeightsError):
        return None
    models = manifest.get("models") if isinstance(manifest, dict) else None
    if (not isinstance(models, list) or not models or len(models) > MAX_CATALOG_MODELS
            or not all(isinstance(m, str) for m in models) or len(set(models)) < len(models)):
        return None
    return list(models)


#: Where weights are read from: the package's path (None: bundled weights), the bundled
#: policy (None: a path) and the size bound they are read within.
WeightsSource = tuple[str | None, str | None, int]


def weights_source(settings: Settings, policy: str | None = None) -> WeightsSource:
    """Where a gateway (:func:`~switchpoint.gateway.live.checked_package`) reads the weights
    for ``settings`` and ``policy`` from:
    the package's path (None: bundled weights), the bundled policy (None: a path) and the
    size bound it reads them within."""
    if policy is None and settings.weights is not None:
        path: str | None = settings.weights
    else:
        path = settings.policy_weights(policy or settings.policy)
        if (path is None and policy is not None and settings.weights is not None
                and policy_of(settings.weights) == policy):
            path = settings.weights
    return path, None if path else (policy or settings.policy), settings.max_weights_bytes


def load_weights(path: str | Path | None = None, policy: str | None = None, *,
                 max_weights_bytes: int = MAX_WEIGHTS_BYTES) -> WeightsPackage:
    """Read and validate a weights package.

    With no ``path``, the bundled default for ``policy`` (``cluster`` unless given). A package
    a save replaces while it is read is read again, so a reader gets the old one or the new one,
    whole; one replaced each of the five times it is read is refused saying so.
    ``max_weights_bytes``: the most its arrays and profiles may hold together (each is read
    whole), checked before any is read.
    """
    expect("path", path, PATH, "the path of a weights package's directory", optional=True)
    expect("policy", policy, str, "the name of a bundled policy", optional=True)
    check_max_weights_bytes(max_weights_bytes)
    if path is None and policy is not None and policy not in bundled_policies():
        raise WeightsError(default_weights_path(policy), f"no bundled weights for policy "
                           f"{json_quoted(policy)}; bundled: "
                           f"{listed_names(bundled_policies(), quoted=True)}. Pass a weights path")
    root = default_weights_path(policy or DEFAULT_POLICY) if path is None else Path(path)
    problem = path_problem(root)
    if problem is not None:  # (a name too long, a NUL: the system refuses to look)
        raise WeightsError(root, f"cannot be used: {problem}; pass the folder that holds "
                                 "manifest.json")
    if not root.is_dir():
        aside = None if root.exists() else set_aside(root)
        if aside is not None:
            raise WeightsError(root, f"does not exist: a save of it was cut short and left the "
                                     f"package it replaced at {quoted_path(aside)}; "
                                     f"rename that folder back to {quoted_path(root.name)} "
                                     "(the next save there does it too)")
        what = "is not a directory" if root.exists() else "does not exist"
        raise WeightsError(root, f"{what}; pass the folder that holds manifest.json "
                                 "(make one with `switchpoint fit RECORDS.jsonl --out DIR`)")
    for _ in range(_READS):
        # (the folder read is held open: no folder a save makes can take its number meanwhile)
        with held_identity(root) as before:
            try:
                return _read_package(root, max_weights_bytes)
            except WeightsError:
                if file_identity(root) == before:
                    raise
        # (a save swapped a new package in while this one was read: read that one)
    raise WeightsError(root, f"a save replaced the package each of the {_READS} times it was "
                             "read, before the read was done; load it again once it is no "
                             "longer being saved")


def check_max_weights_bytes(value: object, field: str = "max_weights_bytes") -> int:
    """``value`` when it is a whole number of bytes from 1 to :data:`MAX_WEIGHTS_BYTES_LIMIT`,
    else an :class:`~switchpoint.errors.InvalidInputError` naming ``field``."""
    expect(field, value, INTEGER, "a whole number of bytes")
    assert isinstance(value, int)
    if not 1 <= value <= MAX_WEIGHTS_BYTES_LIMIT:
        raise InvalidInputError(field, f"must be from 1 to {MAX_WEIGHTS_BYTES_LIMIT:,} bytes (1 "
                                       f"TiB){got(value)}")
    return value


class _Budget:
    """What a load may still read of a package's arrays and profiles (``max_weights_bytes``)."""

    def __init__(self, root: Path, cap: int) -> None:
        self.root = root
        self.cap = self.left = cap

    def check(self, paths: Iterable[Path]) -> None:
        """Refuse, before any is read, files whose sizes add up to more than the cap."""
        sizes: dict[Path, int] = {}
        for path in paths:
            found = _status(path)
            if found is not None:  # (a missing file is named when its turn comes)
                sizes[path] = sizes.get(path, 0) + found.st_size
        total = sum(sizes.values())
        if total > self.cap:
            largest = max(sizes, key=lambda p: sizes[p])
            raise self.over(f"{total:,} bytes (the largest, "
                            f"{quoted_path(largest.relative_to(self.root))}, {sizes[largest]:,})")

    def take(self, path: Path, data: bytes) -> bytes:
        """``data``, read of ``path`` up to what is left plus one byte, counted against it."""
        if len(data) > self.left:  # (it grew since its size was checked)
            raise self.over(f"over {self.cap:,} bytes (reading {quoted_path(path.name)})")
        self.left -= len(data)
        return data

    def over(self, held: str) -> WeightsError:
        return WeightsError(self.root, f"its arrays and profiles hold {held}, more than the "
                                       f"{self.cap:,} a load reads (max_weights_bytes); if the "
                                       "package is one you trust and the memory is there, raise "
                                       "it: max_weights_bytes in the config, "
                                       "--max-weights-bytes on the command line, or "
                                       "load_weights(..., max_weights_bytes=N)")


_READS = 5  # a package replaced while it is read is read again, up to this many times


def _read_package(root: Path, max_weights_bytes: int) -> WeightsPackage:
    manifest_path = root / "manifest.json"
    if _status(manifest_path) is None:
        raise WeightsError(manifest_path, "missing; a weights package needs manifest.json "
                                          "(make one with `switchpoint fit`)")
    if not _inside(root, "manifest.json"):
        raise WeightsError(manifest_path, "is a link to a file outside the package's folder; "
                                          "a package is one folder, its manifest.json its own: "
                                          "copy the file into the folder in place of the link")
    try:
        manifest = _json_text(manifest_path, _read_json_file(manifest_path))
    except FileNotFoundError:  # gone since: a save swapped the package out
        raise WeightsError(manifest_path, "missing; a weights package needs manifest.json "
                                          "(make one with `switchpoint fit`)") from None
    except DuplicateKeyError as exc:
        raise WeightsError(manifest_path, f"{unreadable(exc)}; {_CORRUPT}") from None
    except json.JSONDecodeError as exc:
        raise WeightsError(manifest_path, f"is not valid JSON ({exc}); {_CORRUPT}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise WeightsError(manifest_path, f"is not a switchpoint weights manifest "
                                          f"(expected \"format\": \"{FORMAT}\")")
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in _READABLE_VERSIONS:
        raise WeightsError(manifest_path, f"has format_version {json_quoted(version)}; this "
                                          f"switchpoint reads versions {FORMAT_VERSION} to "
                                          f"{LEARNED_FORMAT_VERSION}. Upgrade switchpoint "
                                          "or re-fit the weights")
    dimension = _part(manifest, "embedder.dimension", int, manifest_path)
    embedder_id = _part(manifest, "embedder.id", str, manifest_path)
    policy_info = {"name": _part(manifest, "policy.name", str, manifest_path),
                   "params": _part(manifest, "policy.params", dict, manifest_path, {}),
                   "meta": _part(manifest, "policy.meta", dict, manifest_path, {})}
    models = _part(manifest, "models", list, manifest_path)
    array_files = _part(manifest, "arrays", dict, manifest_path)
    profile_files = _part(manifest, "profiles", dict, manifest_path)
    checksums = _part(manifest, "files", dict, manifest_path)
    provenance = _part(manifest, "provenance", dict, manifest_path, {})
    for name, values in (("models", models), ("arrays", array_files.values()),
                         ("profiles", profile_files.values()), ("files", checksums.values())):
        if not all(isinstance(v, str) for v in values):
            raise WeightsError(manifest_path, f"field {json_quoted(name)} must hold strings; "
                                              f"{_CORRUPT}")
    if len(models) > MAX_CATALOG_MODELS:
        raise WeightsError(manifest_path, f'field "models" lists {len(models):,} models; a '
                                          f"package holds at most {MAX_CATALOG_MODELS:,} (the "
                                          f"most a catalog does); {_CORRUPT}")
    # (each file named is looked at, read and hashed: a manifest of a few megabytes naming
    # one small file 200,000 times took a minute to load)
    for name, listed, most, what in (
            ("arrays", array_files, MAX_ARRAYS, "arrays"),
            ("profiles", profile_files, MAX_CATALOG_MODELS, "profiles, one per model"),
            ("files", checksums, MAX_ARRAYS + MAX_CATALOG_MODELS, "files, its arrays and "
                                                                  "profiles")):
        if len(listed) > most:
            raise WeightsError(manifest_path, f"field {json_quoted(name)} lists "
                                              f"{len(listed):,} entries; a package holds at "
                                              f"most {most:,} {what}; {_CORRUPT}")
    _check_model_names(models, manifest_path)
    if not models:
        raise WeightsError(manifest_path, f'field "models" lists no model; a package holds the '
                                          f"profile of at least one; {_CORRUPT}")
    try:
        named_once(models, "models", "each model has one profile")
    except InvalidInputError as exc:
        raise WeightsError(manifest_path, f'field "models" {exc.reason}; {_CORRUPT}') from None
    for section, files in (("arrays", array_files), ("profiles", profile_files)):
        for rel in files.values():
            _check_inside(root, rel, section, manifest_path)
            _check_listed(root, rel, checksums)
    budget = _Budget(root, max_weights_bytes)
    budget.check([*(root / rel for rel in array_files.values()),
                  *(root / profile_files[m] for m in models if m in profile_files)])
    arrays: dict[str, Any] = {}
    for name, rel in array_files.items():
        arrays[name] = _array(root / rel, _read_checked(root, rel, checksums, budget))
    profiles: dict[str, dict[str, Any]] = {}
    units: tuple[int, str, str] | None = None
    for model in models:
        rel = profile_files.get(model)
        if rel is None or _status(root / rel) is None:
            expected = rel or _profile_filename(model)
            raise WeightsError(root / expected, f"model {json_quoted(model)} is listed in "
                               "manifest.json but has no profile file; add it with `switchpoint "
                               "add-model` or remove the model with `switchpoint remove-model`")
        data = _read_checked(root, rel, checksums, budget, limit=MAX_JSON_BYTES)
        try:
            profile = _json_text(root / rel, data)
        except json.JSONDecodeError as exc:
            raise WeightsError(root / rel, unreadable(exc)) from None
        if not isinstance(profile, dict):
            raise WeightsError(root / rel, f"holds a JSON {type(profile).__name__}, not a "
                                           f"model's profile (an object); {_CORRUPT}")
        profile.pop("model", None)
        _check_profile(root / rel, profile)
        units = _check_units(root, rel, profile, units)
        _check_labelled(root / rel, profile)
        profiles[model] = profile
    policy_name = policy_info["name"]
    for name, arr in arrays.items():
        if name in _FLOAT32_ARRAYS.get(policy_name, ()):
            _check_float32(root / array_files[name], arr)
        if name not in _VECTOR_ARRAYS.get(policy_name, ()):
            continue
        if arr.ndim != 2 or arr.shape[1] != dimension:
            raise WeightsError(root / array_files[name],
                               f"holds vectors of shape {arr.shape}; manifest.json says the "
                               f"embedder {json_quoted(embedder_id)} has dimension {dimension}. "
                               "The package was fitted with another embedder: re-fit it")
    from switchpoint.policies import PolicyState, policy_from_state

    state = PolicyState(
        name=policy_name, params=dict(policy_info["params"]),
        arrays=arrays, profiles=profiles, meta=dict(policy_info["meta"]),
    )
    try:
        fitted = policy_from_state(state)
    except KeyError as exc:
        missing = exc.args[0] if exc.args else str(exc)
        raise WeightsError(root, f"cannot rebuild the {json_quoted(state.name)} policy: it lacks "
                                 f"the field {json_quoted(missing)}; {_CORRUPT}") from None
    except (ValueError, TypeError, IndexError) as exc:
        raise WeightsError(root, f"cannot rebuild the {json_quoted(state.name)} policy: "
                                 f"{exc}") from None
    try:
        return WeightsPackage(policy=fitted, embedder_id=embedder_id, dimension=dimension,
                              provenance=dict(provenance), path=root)
    except InvalidInputError as exc:  # (what manifest.json says, and a package could not hold)
        raise WeightsError(manifest_path, f"{exc}; {_CORRUPT}") from None


_CORRUPT = "the package is corrupt, re-create it with `switchpoint fit`"
_REQUIRED = object()
_KIND_NAMES = {int: "whole number", str: "string", dict: "JSON object", list: "JSON list"}


def _part(manifest: dict[str, Any], path: str, kind: type, where: Path,
          default: Any = _REQUIRED) -> Any:
    """The manifest's field at the dotted ``path`` when it is a ``kind`` (``default`` when it is
    absent, if given); else a :class:`WeightsError` naming the field."""
    value: Any = manifest
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            if default is not _REQUIRED and isinstance(value, dict):
                return default
            raise WeightsError(where, f"lacks the field {json_quoted(path)}; {_CORRUPT}")
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise WeightsError(where, f"field {json_quoted(path)} must be a {_KIND_NAMES[kind]}"
                                  f"{got(value)}; {_CORRUPT}")
    return value


def _check_inside(root: Path, rel: str, field: str, manifest_path: Path) -> None:
    """A file the manifest names is one of the package's own: a relative path that stays in
    its folder, through links too (a package is one folder, read whole and copied whole)."""
    if not _inside(root, rel):
        raise WeightsError(manifest_path, f"field {json_quoted(field)} names "
                                          f"{json_quoted(rel, 200)}, a file that is not inside "
                                          "the package's folder; "
                                          f"{_CORRUPT}")


def _inside(root: Path, rel: str) -> bool:
    """Whether ``rel`` names a file inside the folder ``root``: a relative path that stays in
    it, through links too."""
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        return False
    try:
        return (root / rel).resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError):  # a link loop: not a file of the package either
        return False


def _check_listed(root: Path, rel: str, checksums: dict[str, str]) -> None:
    """A file the manifest names has its SHA-256 in the field ``files``, as every save writes
    one for each file: one without is refused before anything is read, never read unchecked."""
    if rel not in checksums:
        raise WeightsError(root / rel, "has no SHA-256 in manifest.json's field \"files\", so "
                                       "it cannot be checked and is not read; every file of a "
                                       "package is listed there with its SHA-256, as "
                                       "`switchpoint fit` writes it. Copy the whole folder "
                                       "again or re-create the package")


def manifest_problem(root: str | Path) -> str | None:
    """Why ``root`` holds no manifest.json to read (None: it holds one), told from its status
    alone: nothing is opened."""
    try:
        mode = Path(root).stat().st_mode
    except OSError:
        mode = stat.S_IFDIR  # (nothing there: said of its manifest.json below)
    if not stat.S_ISDIR(mode):
        return f"it is {file_kind(mode)}, not a folder"
    found = _look(Path(root) / "manifest.json")
    if found is None:
        return "no manifest.json there"
    if isinstance(found, Unreadable):
        return Unreadable(f"its manifest.json {found}")
    return f"its manifest.json {found}" if isinstance(found, str) else None


class Unreadable(str):
    """What :func:`manifest_problem` (or a package's file) says when this process may not
    reach the package's files: a matter of permissions, said with what to run, not of the
    package (no other copy of it mends it)."""


def _look(path: Path) -> os.stat_result | str | None:
    """The status of ``path`` when it is a regular file, None when nothing is there, else what
    is wrong with it (``is a FIFO (named pipe), not a regular file``, ``cannot be read: ...``:
    an :class:`Unreadable` when the system refused permission, which only the package's folder,
    or one on its way, not searched by this process makes it do). Told from its status alone:
    a FIFO opened to be read would wait for a writer."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    except PermissionError as exc:
        return Unreadable(f"cannot be read: {read_problem(path.parent, exc, directory=True)}")
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if not stat.S_ISREG(found.st_mode):
        return _not_regular(found.st_mode)
    return found


def _not_regular(mode: int) -> str:
    return f"is {file_kind(mode)}, not a regular file"


def _status(path: Path) -> os.stat_result | None:
    """The status of ``path``, a package's file (None: nothing is there); a
    :class:`WeightsError` naming it when it is no regular file (a FIFO, a device, a directory)
    or cannot be looked at (see :func:`_look`)."""
    found = _look(path)
    if isinstance(found, Unreadable):
        raise WeightsError(path, found)
    if isinstance(found, str):
        raise WeightsError(path, f"{found}; {_REGULAR}")
    return found


_REGULAR = ("a weights package holds the regular files `switchpoint fit` writes: copy the "
            "whole folder again or re-create it with `switchpoint fit`")


def _read_regular(path: Path, limit: int) -> bytes:
    """Up to ``limit`` + 1 bytes of ``path``, a package's file, once :func:`_status` finds it a
    regular file (``FileNotFoundError``: nothing is there)."""
    if _status(path) is None:
        raise FileNotFoundError(path)
    try:
        # (non-blocking: a FIFO put there since is found by its status without waiting)
        with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
            status = os.fstat(handle.fileno())
            if not stat.S_ISREG(status.st_mode):
                raise WeightsError(path, f"{_not_regular(status.st_mode)}; {_REGULAR}")
            # A read of n bytes sets n aside first: ask for what the file holds (and a byte
            # more, to see it grew), never the whole limit (gigabytes, which a debug allocator
            # fills).
            return handle.read(min(limit, status.st_size) + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:  # (no permission to read it, an I/O error: said, never a traceback)
        problem = access_problem(path, (), writes=False) or exc.strerror or str(exc)
        raise WeightsError(path, f"cannot be read: {problem}") from None


def _read_json_file(path: Path) -> bytes:
    """The bytes of ``path``, a package's JSON file: a :class:`WeightsError` once it holds
    more than :data:`MAX_JSON_BYTES` (read no further)."""
    data = _read_regular(path, MAX_JSON_BYTES)
    if len(data) > MAX_JSON_BYTES:
        raise _json_too_big(path)
    return data


def _json_text(path: Path, data: bytes) -> Any:
    """The JSON value ``data``, a package's JSON file, holds, read as UTF-8 (as every save
    writes it): a :class:`WeightsError` naming the first byte that is not."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WeightsError(path, f"is not UTF-8 text (byte 0x{data[exc.start]:02X} at byte "
                                 f"{exc.start + 1:,}); {_CORRUPT}") from None
    return loads(text)


def _json_too_big(path: Path) -> WeightsError:
    return WeightsError(path, f"is over {MAX_JSON_BYTES >> 20} MiB, more than a weights "
                              f"package's JSON file holds; {_CORRUPT}")


def _array(path: Path, data: bytes) -> np.ndarray:
    """The array a ``.npy`` file's ``data`` holds, read once its header is found to describe
    real numbers (whole or not) and exactly the data that follows it (so a header claiming
    terabytes allocates nothing), never unpickled; each number must be finite."""
    import numpy as np

    buffer = io.BytesIO(data)
    try:
        shape, dtype, expected = npy_header(buffer)
    except ValueError as exc:
        raise WeightsError(path, f"is not a valid .npy array ({exc}); {_CORRUPT}") from None
    if dtype.kind not in "biuf" or dtype.fields is not None:
        raise WeightsError(path, f"holds values of type {dtype} (read as "
                                 f"{json_quoted(dtype.kind)}); a weights array holds real "
                                 f"numbers. {_CORRUPT.capitalize()}")
    held = len(data) - buffer.tell()
    if held != expected:
        raise WeightsError(path, f"is not a valid .npy array: its header says {shape} values "
                                 f"of {dtype} ({expected:,} bytes), and {held:,} bytes follow "
                                 f"it; {_CORRUPT}")
    try:
        array: np.ndarray = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise WeightsError(path, f"is not a valid .npy array ({exc}); {_CORRUPT}") from None
    if dtype.kind == "f":
        bad = np.argwhere(~np.isfinite(array))
        if bad.size:
            where = tuple(int(i) for i in bad[0])
            raise WeightsError(path, f"holds {array[where]} at {list(where)}, which is no "
                                     f"finite number ({len(bad):,} such values in all); "
                                     f"{_CORRUPT}")
    return array


_FLOAT32_MAX = 3.4028234663852886e38  # (float32's largest: np.finfo(np.float32).max)


def _check_float32(path: Path, array: np.ndarray) -> None:
    """An array its policy holds as float32 (:data:`_FLOAT32_ARRAYS`: its vectors) holds no
    number past float32's largest (about 3.4e38): one was infinite once held, and every
    estimate NaN (a route a traceback)."""
    import numpy as np

    if array.dtype.kind != "f" or array.dtype.itemsize <= 4:
        return
    bad = np.argwhere(np.abs(array) > _FLOAT32_MAX)
    if bad.size:
        where = tuple(int(i) for i in bad[0])
        raise WeightsError(path, f"holds {array[where]} at {list(where)}, past the largest "
                                 f"number a vector holds (float32's, {_FLOAT32_MAX:.4g}; "
                                 f"{len(bad):,} such values in all); {_CORRUPT}")


def _check_profile(path: Path, profile: dict[str, Any]) -> None:
    """Each per-unit list of a model's profile holds numbers within their bounds (nulls where
    a unit had no label), and so does each of its single numbers, so no estimate is built of
    NaN, infinity or a negative cost."""
    for key, (low, high) in _PROFILE_NUMBERS.items():
        if key in profile and not _within(profile[key], low, high):
            raise WeightsError(path, f"field {json_quoted(key)} is {json_quoted(profile[key])}; "
                                     f"it must be a finite number in [{low:g}, {high:g}]; "
                                     f"{_CORRUPT}")
    for key, (low, high, nullable) in _PROFILE_LISTS.items():
        if key not in profile:  # (one the policy needs: rebuilding it says it lacks it)
            continue
        values = profile[key]
        if not isinstance(values, list):
            raise WeightsError(path, f"field {json_quoted(key)} must be a JSON list"
                                     f"{got(values)}; {_CORRUPT}")
        if _all_within(values, low, high, nullable):
            continue
        for i, value in enumerate(values):
            if value is None and nullable:
                continue
            if not _within(value, low, high):
                bounds = f"in [{low:g}, {high:,.0f}]" if high > 1e6 else f"in [{low:g}, {high:g}]"
                allowed = " or null (no label)" if nullable else ""
                raise WeightsError(path, f"field {json_quoted(key)}[{i}] is {json_quoted(value)}; "
                                         f"it must be a finite number {bounds}{allowed}; "
                                         f"{_CORRUPT}")


def _check_units(root: Path, rel: str, profile: dict[str, Any],
                 units: tuple[int, str, str] | None) -> tuple[int, str, str] | None:
    """Each per-unit list of the profile ``rel`` holds one value per unit of the policy
    (cluster, example, tier), as many as each list read before it (``units``: that count, and
    the profile and field it was first read in); the count and where it was read, for the
    next."""
    for key in _PROFILE_LISTS:
        if key not in profile:  # (one the policy needs: rebuilding it says it lacks it)
            continue
        held = len(profile[key])
        if units is None:
            units = (held, rel, key)
        elif held != units[0]:
            where = (f" its field {json_quoted(units[2])}" if units[1] == rel
                     else f" field {json_quoted(units[2])} of {json_quoted(units[1])}")
            raise WeightsError(root / rel, f"field {json_quoted(key)} holds {held:,} values, "
                                           f"where{where} holds "
                                           f"{units[0]:,}: each list of every profile holds "
                                           "one value per unit of the policy (cluster, "
                                           f"example or tier); {_CORRUPT}")
    return units


def _check_labelled(path: Path, profile: dict[str, Any]) -> None:
    """A unit a profile counts labels in (``count`` above 0) has their mean error and cost: a
    null (no label) there would be routed on as NaN (its lists are of one length, see
    :func:`_check_units`)."""
    counts = profile.get("count")
    if not isinstance(counts, list):
        return
    for key in ("error", "cost"):
        values = profile.get(key)
        if not isinstance(values, list):
            continue
        for i, (count, value) in enumerate(zip(counts, values, strict=False)):
            if value is None and count > 0:
                raise WeightsError(path, f"field {json_quoted(key)}[{i}] is null (no label), "
                                         f'where "count"[{i}] counts {json_quoted(count)} '
                                         "labels: a unit with labels has their mean, a null "
                                         f"only a unit of none (count 0); {_CORRUPT}")


#: Integers past this magnitude are not all exact as floats: a list holding one is checked
#: value by value.
_EXACT_INTEGERS = float(2**53)
_NONE_TYPE = type(None)


def _all_within(values: list[Any], low: float, high: float, nullable: bool) -> bool:
    """Whether every value of ``values`` is a finite JSON number in ``[low, high]`` (or null,
    when ``nullable``), told at numpy's speed for a list of plain numbers: False when it may
    not be, which the check value by value then tells and names (a list of tens of thousands
    of examples' errors took some 100 ms one at a time)."""
    kinds = set(map(type, values))
    if not kinds <= ({float, int, _NONE_TYPE} if nullable else {float, int}):
        return False  # (a bool, a string, ... : named by the check value by value)
    import numpy as np

    try:
        numbers = np.array(values, dtype=np.float64)  # (a null is NaN)
    except OverflowError:  # an integer past a float's range
        return False
    held = numbers[~np.isnan(numbers)]
    nulls = values.count(None) if nullable else 0
    return bool(held.size == len(values) - nulls  # (no NaN but the nulls)
                and np.all(np.abs(held) < _EXACT_INTEGERS)
                and np.all((held >= low) & (held <= high)))


def _within(value: object, low: float, high: float) -> bool:
    """Whether ``value`` is a finite JSON number in ``[low, high]``."""
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(as_float(value)) and low <= value <= high)


def _read_checked(root: Path, rel: str, checksums: dict[str, str], budget: _Budget,
                  limit: int | None = None) -> bytes:
    """The bytes of the package's file ``rel``, at most ``limit`` (a JSON file's) and what is
    left of the ``budget``, checked against its SHA-256 in the manifest (which
    :func:`_check_listed` found there)."""
    path = root / rel
    if _status(path) is None:
        raise WeightsError(path, "missing; the package is incomplete. Copy the whole folder or "
                                 "re-create it with `switchpoint fit`")
    try:
        data = _read_regular(path, budget.left if limit is None else min(limit, budget.left))
        if limit is not None and len(data) > limit:
            raise _json_too_big(path)
        budget.take(path, data)
    except FileNotFoundError:  # gone since: a save swapped the package out while it was read
        raise WeightsError(path, "missing; the package is incomplete. Copy the whole folder or "
                                 "re-create it with `switchpoint fit`") from None
    if _sha256(data) != checksums[rel]:
        raise WeightsError(path, "does not match its SHA-256 in manifest.json; the file is "
                                 "corrupt or was edited by hand. Re-create the package")
    return data
