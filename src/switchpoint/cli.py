"""The ``switchpoint`` command line: route, fit, add-model, remove-model, info, eval, serve,
prune.

Bad input prints ``switchpoint: error: ...`` naming what is wrong and exits with status 2;
nothing is written when a command fails.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from switchpoint.errors import SwitchpointError

EXIT_BAD_INPUT = 2
PROGRESS_CHUNK = 256


class CliError(Exception):
    """Bad input found by the CLI itself."""


def _fail(message: str) -> NoReturn:
    raise CliError(message)


def _parse_models(value: str | None) -> list[str] | None:
    if value is None:
        return None
    names = [n.strip() for n in value.split(",") if n.strip()]
    if not names:
        _fail("--models: give at least one model name, e.g. --models a,b")
    return names


def _parse_float(value: str, flag: str) -> float:
    try:
        x = float(value)
    except ValueError:
        _fail(f"{flag}: {value!r} is not a number")
    if math.isnan(x) or x < 0:
        _fail(f"{flag}: {value!r} must be a number >= 0 (0 = quality first)")
    return x


def _parse_params(items: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            _fail(f"--param: {item!r} must look like name=value")
        try:
            params[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            params[key.replace("-", "_")] = raw
    return params


class _Progress:
    """A one-line progress bar on stderr, shown only on a terminal."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.done = 0
        self.stream = stream
        self.enabled = stream.isatty() and total > 0

    def advance(self, n: int) -> None:
        self.done += n
        if self.enabled:
            width = 30
            filled = int(width * self.done / self.total)
            self.stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] "
                              f"{self.done}/{self.total} prompts")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def _atomic_write(path: Path, write: Callable[[TextIO], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Commands --------------------------------------------------------------------------------------


def cmd_route(args: argparse.Namespace) -> int:
    from switchpoint.router import load_router

    if args.input is None and args.prompt is None:
        _fail("route: give a PROMPT, or --input prompts.jsonl --output decisions.jsonl")
    if args.input is not None and args.prompt is not None:
        _fail("route: give either a PROMPT or --input, not both")
    if args.input is not None and args.output is None:
        _fail("route: --input needs --output decisions.jsonl")
    models = _parse_models(args.models)
    weights = None if args.cost_weights is None else [
        _parse_float(v, "--cost-weights") for v in args.cost_weights.split(",") if v.strip()]
    if weights is not None and not weights:
        _fail("--cost-weights: give a comma-separated list such as 0,0.1,1,10")
    lam = None if args.cost_weight is None else _parse_float(args.cost_weight, "--cost-weight")
    if args.input is not None:
        rows = _read_route_input(Path(args.input))
        router = load_router(args.weights, warm=False)
        return _route_file(router, rows, Path(args.output), models,
                           weights or [lam if lam is not None else router.cost_weight])
    router = load_router(args.weights, warm=False)
    decision = router.route(args.prompt, available_models=models, cost_weight_override=lam)
    if args.json:
        out = decision.to_dict()
        if args.explain:
            out["explanation"] = decision.explain()
        print(json.dumps(out, indent=2, ensure_ascii=False))
    elif args.explain:
        print(decision.explain())
    else:
        print(decision.selected_model)
    return 0


def _read_route_input(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        _fail(f"--input: {path} not found")
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                _fail(f"{path}, line {number}: not valid JSON ({exc.msg})")
            if not isinstance(obj, dict) or "id" not in obj:
                _fail(f"{path}, line {number}: each line must be an object with an 'id'")
            has_p, has_e = "prompt" in obj, "embedding" in obj
            if has_p == has_e:
                _fail(f"{path}, line {number}: give exactly one of 'prompt' or 'embedding'")
            rid = str(obj["id"])
            if rid in seen:
                _fail(f"{path}, line {number}: duplicate id {rid!r}")
            seen.add(rid)
            obj["_line"] = number
            rows.append(obj)
    if not rows:
        _fail(f"--input: {path} has no lines to route")
    return rows


def _route_file(router: Any, rows: list[dict[str, Any]], output: Path,
                models: list[str] | None, weights: list[float]) -> int:
    from switchpoint.embedding import check_embedding, check_prompt
    from switchpoint.errors import InvalidInputError

    # Validate everything before routing anything, so a bad line writes nothing.
    for row in rows:
        try:
            if "prompt" in row:
                check_prompt(row["prompt"])
            else:
                check_embedding(row["embedding"], router.weights.dimension)
        except InvalidInputError as exc:
            _fail(f"line {row['_line']} (id {row['id']!r}): {exc}")
    router.check_candidates(models)
    progress = _Progress(len(rows))
    lines: list[str] = []
    for start in range(0, len(rows), PROGRESS_CHUNK):
        chunk = rows[start : start + PROGRESS_CHUNK]
        groups: dict[str, list[dict[str, Any]]] = {"prompt": [], "embedding": []}
        for row in chunk:
            groups["prompt" if "prompt" in row else "embedding"].append(row)
        results: dict[tuple[str, float], Any] = {}
        for kind, items in groups.items():
            if not items:
                continue
            if kind == "prompt":
                decided = router.route_batch([r["prompt"] for r in items], models,
                                             cost_weights=weights)
            else:
                decided = router.route_batch(None, models, cost_weights=weights,
                                             embeddings=[r["embedding"] for r in items])
            for w_i, lam in enumerate(weights):
                for r_i, row in enumerate(items):
                    results[(str(row["id"]), lam)] = decided[w_i * len(items) + r_i]
        for lam in weights:
            for row in chunk:
                d = results[(str(row["id"]), lam)]
                lines.append(json.dumps({
                    "id": row["id"], "cost_weight": lam, "selected_model": d.selected_model,
                    "cluster_id": d.cluster_id, "expected_error": d.expected_error,
                    "cost_adjusted_score": d.cost_adjusted_score, "all_scores": d.all_scores,
                }))
        progress.advance(len(chunk))
    progress.close()
    _atomic_write(output, lambda fh: fh.writelines(line + "\n" for line in lines))
    print(f"wrote {len(lines)} decisions ({len(rows)} prompts x {len(weights)} cost weights) "
          f"to {output}", file=sys.stderr)
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from switchpoint.training import fit

    params = _parse_params(args.param or [])
    if args.n_clusters is not None:
        params["n_clusters"] = args.n_clusters
    if args.k is not None:
        params["k"] = args.k
    out = Path(args.out)
    package = fit(args.records, policy=args.policy, split=args.split,
                  embedder=args.embedder, progress=lambda m: print(m, file=sys.stderr), **params)
    package.save(out)
    print(f"wrote {package.weights_id} ({package.policy.name}, {len(package.models)} models) "
          f"to {out}", file=sys.stderr)
    return 0


def cmd_add_model(args: argparse.Namespace) -> int:
    from switchpoint.training import add_model
    from switchpoint.weights import load_weights

    package = load_weights(args.weights)
    add_model(package, args.name, args.records, source_model=args.label)
    out = Path(args.out or args.weights)
    package.save(out)
    print(f"added {args.name!r}; wrote {package.weights_id} to {out}", file=sys.stderr)
    return 0


def cmd_remove_model(args: argparse.Namespace) -> int:
    from switchpoint.training import remove_model
    from switchpoint.weights import load_weights

    package = load_weights(args.weights)
    remove_model(package, args.name)
    out = Path(args.out or args.weights)
    package.save(out)
    print(f"removed {args.name!r}; wrote {package.weights_id} to {out}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from switchpoint.weights import load_weights

    package = load_weights(args.weights)
    policy = package.policy
    costs = policy.global_cost()
    info = {
        "weights_id": package.weights_id,
        "path": str(package.path),
        "embedder": {"id": package.embedder_id, "dimension": package.dimension},
        "policy": {"name": policy.name, "params": policy.get_params(),
                   "units": int(getattr(policy, "n_units", 1))},
        "models": {m: {"mean_cost_usd": costs[m]} for m in package.models},
        "provenance": package.provenance,
    }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"weights   {info['weights_id']}  ({info['path']})")
    print(f"embedder  {package.embedder_id} ({package.dimension}-d)")
    print(f"policy    {policy.name} {policy.get_params()}")
    print(f"models    {len(package.models)}")
    for m in package.models:
        print(f"  {m:<40} mean cost ${costs[m]:.6f}")
    prov = package.provenance
    if prov:
        print(f"fitted on {prov.get('n_records')} records from {prov.get('records')} "
              f"(split {prov.get('split')}) at {prov.get('created_at')}")
    return 0


def _parse_policy_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--param cluster.n_clusters=25`` → ``{"cluster": {"n_clusters": 25}}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        policy, dot, name = key.partition(".")
        if not sep or not dot or not policy or not name:
            _fail(f"--param: {item!r} must look like policy.name=value, "
                  "e.g. cluster.n_clusters=25")
        out.setdefault(policy, {}).update(_parse_params([f"{name}={raw}"]))
    return out


def cmd_eval(args: argparse.Namespace) -> int:
    from switchpoint.evaluation.harness import evaluate

    if args.weights is not None and args.fit_split is not None:
        _fail("eval: give either --weights DIR or --fit-split SPLIT, not both")
    if args.weights is not None and (args.policy or args.param or args.embedder):
        _fail("eval: --policy, --param and --embedder apply when fitting (--fit-split); "
              "the weights already hold a fitted policy and name their embedder")
    plot = None if args.plot is None else Path(args.plot)
    if plot is not None:
        from switchpoint.evaluation.plot import require_matplotlib

        if plot.suffix.lower() != ".png":
            _fail(f"--plot: {plot} must be a .png path")
        try:
            require_matplotlib()
        except ImportError as exc:
            _fail(f"--plot: {exc}")
    params = _parse_policy_params(args.param or [])
    weights = None
    if args.weights is not None:
        from switchpoint.weights import load_weights

        weights = load_weights(args.weights)
    report = evaluate(
        args.records, policies=args.policy, weights=weights,
        fit_split=None if weights is not None else (args.fit_split or "train"),
        test_split=args.test_split, params=params or None, embedder=args.embedder,
        progress=lambda m: print(m, file=sys.stderr))
    if plot is not None:
        from switchpoint.evaluation.plot import plot_curves

        try:
            plot_curves(report, plot)
        except OSError as exc:
            _fail(f"--plot: cannot write {plot}: {exc.strerror or exc}")
        print(f"wrote the cost-quality plot to {plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        print(report.format_table())
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from switchpoint.config import load_settings

    if not 0 <= args.port <= 65535:
        _fail(f"--port: {args.port} is not a port number (0-65535)")
    settings = load_settings(args.config or os.environ.get("SWITCHPOINT_CONFIG") or None,
                             overrides={"weights": args.weights, "data_dir": args.data_dir,
                                        "policy": args.policy})
    from switchpoint.server.runner import serve  # FastAPI and uvicorn load only here

    return serve(settings, args.host, args.port, log_level=args.log_level,
                 access_log=args.access_log, allow_unauthenticated=args.allow_unauthenticated)


def cmd_prune(args: argparse.Namespace) -> int:
    from switchpoint.config import load_settings
    from switchpoint.store.retention import cutoff_for, prune

    settings = load_settings(args.config or os.environ.get("SWITCHPOINT_CONFIG") or None,
                             overrides={"data_dir": args.data_dir})
    days = settings.store.retention_days if args.older_than is None else _parse_float(
        args.older_than, "--older-than")
    if days is None:
        _fail("prune: give --older-than DAYS, or set store.retention_days in the config")
    if days <= 0:
        _fail(f"--older-than: {args.older_than!r} must be a number of days > 0")
    report = prune(settings.db_path, cutoff_for(days), dry_run=args.dry_run)
    verb = "would delete" if report.dry_run else "deleted"
    counts = ", ".join(f"{n} {table}" for table, n in report.deleted.items())
    print(f"{verb} {counts} older than {days:g} days from {settings.db_path}; "
          f"{report.bytes_before} -> {report.bytes_after} bytes"
          + ("" if report.dry_run else f" (vacuum: {report.vacuum})"), file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_dict()))
    return 0


# Parser ----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="switchpoint",
        description="Route each LLM request to the model minimising expected error + λ·cost.",
    )
    from switchpoint._version import __version__

    parser.add_argument("--version", action="version", version=f"switchpoint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("route", help="route one prompt, or a JSONL file of prompts")
    p.add_argument("prompt", nargs="?", help="the prompt to route")
    p.add_argument("--weights", help="weights package directory (default: the bundled one)")
    p.add_argument("--cost-weight", help="λ for this call (0 = quality first)")
    p.add_argument("--cost-weights", help="comma-separated λ sweep for --input, e.g. 0,0.1,1")
    p.add_argument("--models", help="comma-separated models allowed for this call")
    p.add_argument("--json", action="store_true", help="print the whole decision as JSON")
    p.add_argument("--explain", action="store_true", help="print the plain-English explanation")
    p.add_argument("--input", help='JSONL of {"id", "prompt"} or {"id", "embedding"} lines')
    p.add_argument("--output", help="where to write one decision per id and cost weight")
    p.set_defaults(func=cmd_route)

    p = sub.add_parser("fit", help="fit a weights package from routing records")
    p.add_argument("records", help="routing records (JSONL)")
    p.add_argument("--out", required=True, help="directory to write the weights package to")
    p.add_argument("--split", help="use only records of this split (default: train if present)")
    p.add_argument("--policy", default="cluster",
                   choices=["cluster", "knn", "tiers", "tfidf", "fixed", "random"])
    p.add_argument("--n-clusters", type=int, help="clusters for the cluster policy")
    p.add_argument("--k", type=int, help="neighbours for the knn policy")
    p.add_argument("--embedder", help="embedder id, e.g. all-MiniLM-L6-v2/tail-64")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="any other policy parameter (repeatable)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("add-model", help="teach the weights a new model from labelled records")
    p.add_argument("name", help="the new model's name")
    p.add_argument("records", help="routing records that label the model")
    p.add_argument("--weights", required=True, help="weights package to extend")
    p.add_argument("--out", help="write here instead of updating --weights in place")
    p.add_argument("--label", help="the model's name inside the records, if different")
    p.set_defaults(func=cmd_add_model)

    p = sub.add_parser("remove-model", help="remove a model from a weights package")
    p.add_argument("name")
    p.add_argument("--weights", required=True)
    p.add_argument("--out", help="write here instead of updating --weights in place")
    p.set_defaults(func=cmd_remove_model)

    p = sub.add_parser("info", help="describe a weights package")
    p.add_argument("--weights", help="weights package directory (default: the bundled one)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("eval", help="fit policies on one split and measure them on another "
                                    "(AIQ, QNC, per-task breakdown, cost-quality plot)")
    p.add_argument("records", help="routing records (JSONL) with a test split")
    p.add_argument("--weights", help="evaluate this fitted weights package instead of fitting")
    p.add_argument("--fit-split", help="fit on this split (default: train, unless --weights)")
    p.add_argument("--test-split", default="test", help="measure on this split (default: test)")
    p.add_argument("--policy", action="extend", nargs="+", metavar="NAME",
                   help="policies to fit (repeatable; default: cluster knn)")
    p.add_argument("--param", action="append", metavar="POLICY.NAME=VALUE",
                   help="a policy parameter, e.g. cluster.n_clusters=25 (repeatable)")
    p.add_argument("--embedder", help="embedder id for fitting, e.g. all-MiniLM-L6-v2/tail-64")
    p.add_argument("--plot", metavar="PNG", help="write the cost-quality curves to this PNG")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("serve", help="serve the router over HTTP: POST /v1/route, /health, "
                                     "/v1/models, /metrics, /v1/router/* (docs at /docs)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                                                       "127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.add_argument("--weights", help="weights package directory (default: the bundled one)")
    p.add_argument("--config", help="YAML config: catalog, policy, λ, cache, data_dir "
                                    "(default: $SWITCHPOINT_CONFIG, if set)")
    p.add_argument("--data-dir", help="where SQLite state lives (default: ./data or "
                                      "$SWITCHPOINT_DATA_DIR)")
    p.add_argument("--policy", help="bundled policy to load when no --weights is given "
                                    "(default: cluster)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve on a non-loopback address without an admin token (e.g. behind "
                        "an authenticating proxy)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("prune", help="delete log entries older than the retention and give "
                                     "the disk space back")
    p.add_argument("--config", help="YAML config: its data_dir and store.retention_days "
                                    "(default: $SWITCHPOINT_CONFIG, if set)")
    p.add_argument("--data-dir", help="where SQLite state lives (overrides the config)")
    p.add_argument("--older-than", metavar="DAYS",
                   help="delete entries older than this many days (default: "
                        "store.retention_days)")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_prune)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except (CliError, SwitchpointError) as exc:
        print(f"switchpoint: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `switchpoint route ... | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
