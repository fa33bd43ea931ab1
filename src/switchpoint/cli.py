"""The ``switchpoint`` command line: route, fit, add-model, remove-model, info, eval, serve,
label, keys, report, prune, feedback, learn, experiments, models.

Bad input prints ``switchpoint: error: ...`` naming what is wrong (with anything shaped like a
secret redacted) and exits with status 2; nothing is written when a command fails. A number
option's value is read by the shared types of :mod:`switchpoint._options`, and one refused is
argparse's error (``switchpoint route: error: argument --cost-weight: "abc" is not ...``), with
status 2 too. ``label``
exits with status 1 when some prompts could not be labelled (running it again retries them).

Results go to stdout (or ``--output``), so they pipe cleanly; progress and notes go to stderr:
bars on a terminal (``--progress`` forces them), one line per stage otherwise, nothing with
``--quiet``. ``route`` reads its prompt from stdin when none is given and stdin is a pipe.
Results that cannot be written to stdout (a full disk, ``> /dev/full``) exit with status 1 and
``switchpoint: error: could not write the output: <why>``; a reader that leaves early (``|
head -1``) ends the command quietly, with status 0, as Unix tools do.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO, cast

from switchpoint import _options
from switchpoint._files import (
    LinkError,
    output_problem,
    output_target,
    path_problem,
    same_file,
    set_aside,
    write_atomically,
    write_problem,
)
from switchpoint._json import DuplicateKeyError, json_kind, loads, unreadable
from switchpoint._lists import comma_items
from switchpoint._log_stderr import printed_to_stderr
from switchpoint._messages import (
    MAX_LISTED,
    MAX_PATH,
    STDIN,
    bounded_repr,
    cut,
    json_quoted,
    one_of,
    people_number,
    plural,
    printable,
    quoted_path,
)
from switchpoint._numbers import (
    TOO_MANY_DIGITS,
    too_small,
    too_small_why,
    whole_number_text,
    whole_too_large,
)
from switchpoint._progress import StderrProgress, stream_is_terminal
from switchpoint.catalog import cost_unit_of
from switchpoint.decision import ROUTE_FIELDS
from switchpoint.errors import InvalidInputError, StoreError, SwitchpointError, WeightsError
from switchpoint.prompt_files import (
    ENCODING_ERRORS,
    MAX_LINE_CHARS,
    PromptFileError,
    bounded_lines,
    not_utf8,
    prompt_lines,
)

if TYPE_CHECKING:
    from switchpoint.store.retention import PruneReport
    from switchpoint.weights import WeightsPackage

EXIT_BAD_INPUT = 2
# Results that could not be written to stdout (a full disk, a device that takes nothing).
EXIT_OUTPUT_LOST = 1
# Prompts routed between two progress reports (and two writes when decisions stream to a pipe).
PROGRESS_CHUNK = 64


class CliError(Exception):
    """Bad input found by the CLI itself."""


def _fail(message: str) -> NoReturn:
    raise CliError(message)


def _parse_models(value: str | None) -> list[str] | None:
    """``--models`` as a list (:func:`~switchpoint._lists.comma_items`: an empty item refused
    naming its place)."""
    if value is None:
        return None
    try:
        return comma_items(value, "model name", "gpt-4o-mini,gpt-4o")
    except ValueError as exc:
        _fail(f"--models: {exc}")


def _parse_params(items: Sequence[str], prefix: str = "") -> dict[str, Any]:
    """``name=value`` pairs; a value is read as JSON (``2.5``, ``true``, ``[1, 2]``), else taken
    as the string it is. A number whose value is whole is read as every whole-number option
    reads one (:func:`~switchpoint._numbers.whole_number_text`): exactly, ``n_clusters=1e3`` as
    ``--n-clusters 1e3`` is a thousand, and one of more than 100 digits refused as too large,
    not taken as a string; one a float holds only as 0 (``1e-400``) is refused as every number
    option refuses it, not taken as the 0 JSON reads. What a parameter takes (a whole number,
    a finite one: ``k=5.5`` is "must be an integer, got 5.5") is the policy's to say. A value
    that starts as JSON text does (``{``, ``[`` or ``"``) but does not read as JSON, a key
    written twice included, is an error naming the parameter."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            _fail(f"--param: {json_quoted(item)} must look like name=value")
        name = key.replace("-", "_")
        if whole_too_large(raw):
            _fail(f"--param {prefix}{key}: {json_quoted(raw)} {TOO_MANY_DIGITS}")
        if too_small(raw):  # (1e-400: JSON reads it as 0, which the user did not write)
            _fail(f"--param {prefix}{key}: {json_quoted(raw)} {too_small_why()}")
        if (whole := whole_number_text(raw)) is not None:
            params[name] = whole
            continue
        try:
            params[name] = loads(raw)
        except json.JSONDecodeError as exc:
            if raw.lstrip()[:1] in ("{", "[", '"'):
                hint = "" if isinstance(exc, DuplicateKeyError) else (
                    "; write the value as JSON (a list as [1, 2], a string in double quotes)")
                _fail(f"--param {prefix}{key}: {unreadable(exc)}{hint}")
            params[name] = raw
    return params


def _feedback(args: argparse.Namespace) -> StderrProgress:
    """Progress and notes on stderr: bars on a terminal (or with --progress), none with --quiet."""
    return StderrProgress(bars=True if getattr(args, "progress", False) else None,
                          quiet=getattr(args, "quiet", False))


def _check_output(path: Path, flag: str, example: str = "out.jsonl") -> Path:
    """Where the output named ``path`` is written, if a file can be written there (checked
    before the work, not after it): ``path``, or the file it leads to when it is a symbolic
    link (one that leads to no file is refused); not a directory, nor a device, pipe or socket
    (the file written is renamed into place, which would put it where that was), nor a file
    this process may not write (a read-only one is refused, as a shell's redirection refuses
    it, not replaced), and its folder one that exists or that this process may make, and make
    files in."""
    problem = path_problem(path)  # first: the system may refuse even to look at it
    shown = quoted_path(path)
    if problem is not None:
        _fail(f"{flag}: cannot write {shown}: {problem}")
    try:
        target = output_target(path)
    except LinkError as exc:
        _fail(f"{flag}: {shown} {exc}")
    if target.is_dir():
        _fail(f"{flag}: {shown} is a directory; give a file path, e.g. "
              f"{quoted_path(path / example)}")
    if target.exists() and not target.is_file():
        _fail(f"{flag}: {shown} is not a regular file (a device, pipe or socket), which the "
              "file written would replace; give the path of a file")
    problem = output_problem(target)
    if problem is not None:
        _fail(f"{flag}: cannot write {shown}: {problem}")
    return target


def _atomic_write(path: Path, data: str, flag: str = "--output") -> None:
    """``data`` into the output ``path``, whole or not at all: a new file readable by its
    owner alone (0600), an existing one keeping its mode."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda fh: fh.write(data.encode("utf-8")), mode=0o600,
                         keep_mode=True)
    except OSError as exc:
        _fail(f"{flag}: cannot write {quoted_path(path)}: {write_problem(path, exc)}")


# Commands --------------------------------------------------------------------------------------


NO_PROMPT = ("route: give a PROMPT: as an argument (switchpoint route \"Summarise this\"), on "
             "stdin (echo \"Summarise this\" | switchpoint route), or many at once with "
             "--input prompts.jsonl (--input - reads them from stdin)")


def _prompt_from_stdin() -> str:
    """The prompt piped on stdin, when no PROMPT argument is given."""
    stdin = sys.stdin
    if stdin is None or stream_is_terminal(stdin):
        _fail(NO_PROMPT)
    try:
        text = stdin.read(MAX_LINE_CHARS + 1)  # past the limit: refused, not held whole
    except UnicodeDecodeError:
        _fail("route: the prompt on stdin is not UTF-8 text")
    except (OSError, ValueError):  # stdin closed or not readable
        _fail(NO_PROMPT)
    if len(text) > MAX_LINE_CHARS:
        _fail(f"route: the prompt on stdin is over {MAX_LINE_CHARS:,} characters; shorten it")
    if not text.strip():
        _fail("route: stdin was empty; pipe the prompt in (echo \"Summarise this\" | "
              "switchpoint route) or give it as an argument")
    return text.rstrip("\r\n")


def cmd_route(args: argparse.Namespace) -> int:
    from switchpoint._bundled import is_bundled
    from switchpoint.embedding import check_prompt, warm_up
    from switchpoint.router import bounded_batch, load_router

    if args.input is not None and args.prompt is not None:
        _fail("route: give either a PROMPT or --input, not both")
    if args.input is None and args.output is not None:
        _fail("route: --output applies to --input; give --input prompts.jsonl")
    if args.input is None and args.cost_weights is not None:
        _fail("route: --cost-weights (a sweep) applies to --input; for one prompt give "
              "--cost-weight")
    if args.cost_weight is not None and args.cost_weights is not None:
        _fail("route: give either --cost-weight or --cost-weights, not both")
    models = _parse_models(args.models)
    weights: list[float] | None = args.cost_weights
    if weights is not None:
        bounded_batch(weights, "--cost-weights", "cost weight")  # each prompt takes them all
    lam: float | None = args.cost_weight
    if args.input is not None:
        output = None if args.output in (None, "-") else _check_output(Path(args.output),
                                                                       "--output")
        if output is not None and args.input != "-" and same_file(args.input, output):
            _fail(f"--output: {quoted_path(args.output)} is the --input file; the decisions would "
                  "replace the prompts they come from: write them to another --output")
        source, rows = _read_route_input(args.input)
        router = load_router(args.weights, warm=False, max_weights_bytes=_weights_cap(args),
                             max_prompt_chars=MAX_LINE_CHARS)  # (a line of the file's)
        with _feedback(args) as feedback:
            return _route_file(router, source, rows, output, models,
                               weights or [lam if lam is not None else router.cost_weight],
                               feedback)
    prompt = check_prompt(args.prompt if args.prompt is not None else _prompt_from_stdin())
    if args.prompt is not None and _names_a_file(prompt):
        print(f"route: routing the text {json_quoted(prompt, MAX_PATH)} as a prompt; it is "
              "also the name of a file: to route the prompts the file holds, give --input "
              f"{printable(prompt)}", file=sys.stderr)
    router = load_router(args.weights, warm=False, max_weights_bytes=_weights_cap(args),
                         max_prompt_chars=MAX_LINE_CHARS)  # (what stdin's prompt may hold)
    router.check_candidates(models)
    if router.policy.requires == "embedding":
        with _feedback(args) as feedback:  # the one-time embedder build, if it is due
            warm_up(router.embedder, feedback)
    decision = router.route(prompt, available_models=models, cost_weight_override=lam)
    unit = cost_unit_of(router.catalog)
    bundled = is_bundled(router.weights.path)  # (what its units are, as info says)
    if args.json:
        # (the unit its costs are in, as info --json and a feedback answer name theirs)
        out = {**decision.to_dict(cost_unit=unit), "cost_unit": unit}
        if args.explain:
            out["explanation"] = decision.explain(cost_unit=unit, bundled_weights=bundled)
        print(json.dumps(out, indent=2, ensure_ascii=False))
    elif args.explain:
        print(decision.explain(cost_unit=unit, bundled_weights=bundled))
    else:
        print(decision.selected_model)
    return 0


def _piped_stdin(given: str, example: str) -> TextIO:
    """stdin, to read prompts from when ``given`` (``--input -``, ``label -``) says so: refused,
    with the ``example`` of a pipe, when it is a terminal; read with
    :data:`~switchpoint.prompt_files.ENCODING_ERRORS`, so a line that is not UTF-8 is named."""
    stdin = sys.stdin
    if stdin is None or stream_is_terminal(stdin):
        _fail(f"{given}: stdin is a terminal; pipe the prompts in, e.g. {example}")
    reconfigure = getattr(stdin, "reconfigure", None)
    if reconfigure is not None:  # (the line that is not UTF-8 is named)
        reconfigure(errors=ENCODING_ERRORS)
    return stdin


@contextmanager
def _input_lines(source: str) -> Iterator[tuple[str, Iterable[str]]]:
    """(the name errors use, the lines) of ``--input``: a file, or ``-`` for stdin."""
    if source == "-":
        yield quoted_path(STDIN), bounded_lines(_piped_stdin(
            "--input -", "cat prompts.jsonl | switchpoint route --input -"))
        return
    path = Path(source)
    problem = path_problem(path)
    if problem is not None:  # (a loop of links, a folder it may not look in: not "not found")
        _fail(f"--input: cannot read {quoted_path(path)}: {problem}; give a file of prompts, "
              "or - for stdin")
    if not path.exists() or path.is_dir():  # (a pipe, such as <(...), reads as a file does)
        _fail(f"--input: {quoted_path(path)} "
              + ("is a directory" if path.is_dir() else "not found")
              + "; give a file of prompts, or - for stdin")
    with path.open(encoding="utf-8", errors=ENCODING_ERRORS) as fh:
        yield quoted_path(path), bounded_lines(fh)


def _read_route_input(source: str) -> tuple[str, list[dict[str, Any]]]:
    """The name errors give ``--input`` (the file, or stdin), and its rows: JSONL objects when
    the first line is one, else one prompt a line.

    JSONL rows are ``{"id", "prompt"}`` or ``{"id", "embedding"}``, the id a string or an
    integer; a plain prompt's id is its line number.
    """
    rows: list[dict[str, Any]] = []
    name = quoted_path(STDIN if source == "-" else source)
    try:
        with _input_lines(source) as (name, lines):
            rows = _parse_route_lines(name, lines)
    except UnicodeDecodeError:
        _fail(f"--input: {name} is not UTF-8 text")
    except PromptFileError as exc:
        _fail(f"{_input_line(name, exc.line)}: {exc}")
    except OSError as exc:
        _fail(f"--input: cannot read {name}: {exc.strerror or exc}")
    if not rows:
        _fail(f"--input: {name} has no lines to route")
    return name, rows


def _input_line(name: str, number: int) -> str:
    """Where an error about ``--input`` points: the option, the file by its quoted ``name``
    (or stdin, named as ``label -`` names it: see :data:`~switchpoint._messages.STDIN`) and
    the line, ``--input: stdin, line 3``."""
    return f"--input: {name}, line {number}"


def _parse_route_lines(name: str, lines: Iterable[str]) -> list[dict[str, Any]]:
    """``--input`` lines as rows; ``name`` (the file, or stdin) is what errors point at."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, raw, jsonl in prompt_lines(lines):
        if not jsonl:
            rows.append({"id": number, "prompt": raw.rstrip("\r\n"), "_line": number})
            continue
        try:
            obj = loads(raw)
        except DuplicateKeyError as exc:
            _fail(f"{_input_line(name, number)}: {unreadable(exc)}")
        except json.JSONDecodeError as exc:
            _fail(f"{_input_line(name, number)}: {unreadable(exc)}; a file whose first "
                  "line is a JSON object is read as JSONL")
        if not isinstance(obj, dict) or "id" not in obj:
            _fail(f'{_input_line(name, number)}: each line must be an object with an "id"')
        has_p, has_e = "prompt" in obj, "embedding" in obj
        if has_p == has_e:
            _fail(f'{_input_line(name, number)}: give exactly one of "prompt" or '
                  '"embedding"')
        if isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int)):
            _fail(f'{_input_line(name, number)}: field "id" must be a string or an '
                  f"integer, got {json_kind(obj['id'])}; each decision is written with its "
                  "prompt's id")
        rid = str(obj["id"])
        if rid in seen:
            _fail(f"{_input_line(name, number)}: duplicate id {json_quoted(rid)}")
        seen.add(rid)
        obj["_line"] = number
        rows.append(obj)
    return rows


def _names_a_file(text: str) -> bool:
    """Whether a PROMPT argument is the name of an existing file (a prompts file given
    without ``--input``): one line, short, naming a regular file."""
    if "\n" in text or "\x00" in text or len(text) > 255:
        return False
    try:
        return Path(text).is_file()
    except (OSError, ValueError):
        return False


def _route_file(router: Any, source: str, rows: list[dict[str, Any]], output: Path | None,
                models: list[str] | None, weights: list[float],
                feedback: StderrProgress) -> int:
    """Route ``rows`` (of ``source``, as errors name it) at every λ in ``weights``; JSONL to
    ``output`` (atomically) or stdout."""
    from switchpoint.embedding import check_embedding, check_prompt, warm_up
    from switchpoint.errors import InvalidInputError
    from switchpoint.router import MAX_BATCH

    # Validate everything before routing anything, so a bad line writes nothing.
    for row in rows:
        try:
            if "prompt" in row:
                check_prompt(row["prompt"])
            else:
                check_embedding(row["embedding"], router.weights.dimension)
        except InvalidInputError as exc:
            _fail(f"{_input_line(source, row['_line'])} (id {json_quoted(row['id'])}): {exc}")
    router.check_candidates(models)
    if router.policy.requires == "embedding" and any("prompt" in row for row in rows):
        warm_up(router.embedder, feedback)  # the one-time embedder build, if it is due
    # Decisions stream to a pipe as they are made; a file (or a terminal) gets them at the end.
    stream = output is None and not stream_is_terminal(sys.stdout)
    lines: list[str] = []
    stage = f"routing {plural(len(rows), 'prompt')}" + (
        f" at {len(weights)} cost weights" if len(weights) > 1 else "")
    feedback(stage, 0, len(rows))
    # A call of the router makes at most MAX_BATCH decisions, one per prompt and cost weight.
    step = max(1, min(PROGRESS_CHUNK, MAX_BATCH // len(weights)))
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
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
        done: list[str] = []
        for lam in weights:
            for row in chunk:
                d = results[(str(row["id"]), lam)]
                done.append(json.dumps({"id": row["id"], "cost_weight": lam,
                                        **d.to_dict(ROUTE_FIELDS)}))
        if stream:
            sys.stdout.writelines(line + "\n" for line in done)
            sys.stdout.flush()
        else:
            lines.extend(done)
        feedback(stage, start + len(chunk), len(rows))
    count = len(rows) * len(weights)
    if output is not None:
        _atomic_write(output, "".join(line + "\n" for line in lines))
    elif not stream:
        sys.stdout.writelines(line + "\n" for line in lines)
        sys.stdout.flush()
    feedback.note(f"wrote {plural(count, 'decision')} ({plural(len(rows), 'prompt')} x "
                  f"{plural(len(weights), 'cost weight')}) to {output or 'stdout'}")
    return 0


def _weights_cap(args: argparse.Namespace) -> int:
    """``--max-weights-bytes``, checked (default: what a load reads by default)."""
    from switchpoint.weights import MAX_WEIGHTS_BYTES, check_max_weights_bytes

    if args.max_weights_bytes is None:
        return MAX_WEIGHTS_BYTES
    try:
        return check_max_weights_bytes(args.max_weights_bytes, "--max-weights-bytes")
    except InvalidInputError as exc:
        _fail(str(exc))


def cmd_fit(args: argparse.Namespace) -> int:
    from switchpoint.training import fit
    from switchpoint.weights import check_weights_target, replacing_note

    params = _parse_params(args.param or [])
    _options.filled(args, "param", {name: f"--param {name}" for name in params})
    for name, flag in (("n_clusters", "--n-clusters"), ("k", "--k")):
        value = getattr(args, name)
        if value is not None:
            if name in params:
                _fail(f"{flag}: {name} is given by --param {name} too; give it once")
            params[name] = value
    out = check_weights_target(args.out)  # before the work, not after it
    with _feedback(args) as feedback:
        package = fit(args.records, policy=args.policy, split=args.split,
                      embedder=args.embedder, progress=feedback, **params)
        replacing = replacing_note(out)
        package.save(out)
        feedback.note(f"wrote {package.weights_id} ({package.policy.name}, "
                      f"{plural(len(package.models), 'model')}) to {out}{replacing}")
    return 0


def _weights_to_edit(args: argparse.Namespace, result: str, edit: str,
                     check: Callable[[WeightsPackage], object] | None = None
                     ) -> tuple[WeightsPackage, Path]:
    """The weights package a command that edits one (``add-model``, ``remove-model``) starts
    from, and where it writes the result (checked before the work): ``--weights``, in place
    unless ``--out``; without ``--weights``, the bundled weights, which need ``--out`` (they are
    never changed in place). ``result`` says what the bundled weights become (``plus the new
    model``), ``edit`` what is done to a package of the user's own (``extend``). ``check``, the
    command's check of what it was asked against the package read, comes before where the
    result goes: what the user asked for is told first when both are wrong. A ``--weights``
    that does not exist is told, besides how to make one with ``fit``, that ``--out`` alone
    starts from the bundled weights."""
    from switchpoint.weights import check_weights_target, load_weights

    if args.weights is None and args.out is None:
        _fail(f"{args.command}: give --out DIR to write the bundled weights {result} there (the "
              f"bundled weights are never changed in place), or --weights DIR to {edit} a "
              "weights package of your own in place")
    try:
        package = load_weights(args.weights, max_weights_bytes=_weights_cap(args))
    except WeightsError as exc:
        given = None if args.weights is None else Path(args.weights)
        if given is None or os.path.lexists(given) or set_aside(given) is not None:
            raise  # (a package a cut-short save set aside is renamed back, not started over)
        _fail(f"{exc}; or leave --weights out and give --out DIR to start from the bundled "
              f"weights: {args.command} writes them {result} to DIR")
    if check is not None:
        check(package)
    return package, check_weights_target(args.out or args.weights)


def cmd_add_model(args: argparse.Namespace) -> int:
    from switchpoint.embedding import embedder_from_id, warm_up
    from switchpoint.training import add_model, check_model_name
    from switchpoint.weights import replacing_note

    check_model_name(args.name)  # before the weights are read
    package, out = _weights_to_edit(args, "plus the new model", "extend")
    with _feedback(args) as feedback:
        embedder = None
        if package.policy.requires == "embedding":
            embedder = embedder_from_id(package.embedder_id)
            warm_up(embedder, feedback)  # the one-time embedder build, if it is due
        package = add_model(package, args.name, args.records, source_model=args.label,
                            embedder=embedder)
        replacing = replacing_note(out) if args.out is not None else ""  # (not the one edited)
        package.save(out)
        feedback.note(f"added {json_quoted(args.name)}; wrote {package.weights_id} to "
                      f"{out}{replacing}")
    return 0


def cmd_remove_model(args: argparse.Namespace) -> int:
    from switchpoint.training import check_removable, remove_model

    package, out = _weights_to_edit(args, "without the model", "remove it from",
                                    lambda package: check_removable(package, args.name))
    package = remove_model(package, args.name)
    package.save(out)
    _feedback(args).note(f"removed {json_quoted(args.name)}; wrote {package.weights_id} to {out}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from switchpoint._bundled import is_bundled
    from switchpoint.catalog import cost_figure, cost_text, weights_units_text
    from switchpoint.weights import load_weights

    package = load_weights(args.weights, max_weights_bytes=_weights_cap(args))
    policy = package.policy
    costs = policy.global_cost()
    info = {
        "weights_id": package.weights_id,
        "path": str(package.path),
        "embedder": {"id": package.embedder_id, "dimension": package.dimension},
        "policy": {"name": policy.name, "params": policy.get_params(),
                   "units": int(getattr(policy, "n_units", 1))},
        # (the weights' own cost units, named as such: a package carries no prices and does
        # not say what units the records it was fitted on gave its costs in)
        "models": {m: {"mean_cost": cost_figure(costs[m], "weights"), "cost_unit": "weights"}
                   for m in package.models},
        "provenance": package.provenance,
    }
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    _say(f"weights   {info['weights_id']}  ({info['path']})")
    _say(f"embedder  {package.embedder_id} ({package.dimension}-d)")
    _say(f"policy    {policy.name} {policy.get_params()}")
    units = weights_units_text(is_bundled(package.path))
    _say(f"models    {len(package.models)}, their mean costs in {units}")
    for m in package.models:
        _say(f"  {m:<40} mean cost {cost_text(costs[m])}")
    prov = {key: _Shown(value) for key, value in package.provenance.items()}
    if prov:
        _say(f"fitted on {prov.get('n_records')} records from {prov.get('records')} "
             f"({_split_words(package.provenance.get('split'))}) at {prov.get('created_at')}")
    for key, line in (("added_models", "added     {model} from {n_records} records{source} "
                                       "at {at}"),
                      ("removed_models", "removed   {model} at {at}"),
                      ("learned", "learned   {outcomes} outcome(s) of tenant {tenant} at {at}")):
        entries = _entries(package.provenance, key)
        earlier = package.provenance.get(f"earlier_{key}")
        if entries and type(earlier) is int and earlier > 0:  # (only the latest are kept)
            _say(f"          {earlier:,} earlier, no longer listed (earlier_{key})")
        for entry in entries[:MAX_LISTED]:
            shown = {k: _Shown(entry.get(k)) for k in ("model", "n_records", "at", "outcomes",
                                                        "tenant")}
            source = f" of {_Shown(entry['records'])}" if "records" in entry else ""
            _say(line.format(source=source, **shown))
        if len(entries) > MAX_LISTED:
            _say(f"          ... {len(entries) - MAX_LISTED:,} more ({key} in --json)")
    return 0


class _Shown:
    """A provenance value as ``info`` prints it: a text as it is, anything else as Python
    shows it, at most :data:`_SHOWN_CHARS` characters either way (whoever made the package
    wrote it, so it may be a megabyte long)."""

    def __init__(self, value: object) -> None:
        self.text = cut(value if isinstance(value, str) else bounded_repr(value), _SHOWN_CHARS)

    def __format__(self, spec: str) -> str:
        return self.text


_SHOWN_CHARS = 200


def _say(line: str) -> None:
    """Print a line of what a weights package holds, with what a terminal would not show as
    itself (from a package's provenance, written by whoever made it) escaped."""
    print(printable(line))


def _entries(provenance: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The list of records ``provenance[key]`` holds, skipping anything else found there."""
    value = provenance.get(key)
    return [e for e in value if isinstance(e, dict)] if isinstance(value, list) else []


def _split_words(split: object) -> str:
    """``split train``, or ``every record`` for a package fitted on records without splits."""
    return "every record" if split is None else f"split {_Shown(split)}"


def _parse_policy_params(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--param cluster.n_clusters=25`` → ``{"cluster": {"n_clusters": 25}}``. The name is
    split from the policy at its last dot: a parameter's name holds none (it is a Python
    identifier), while a registered policy's may (``acme.v2.k=3``: ``k`` of ``acme.v2``)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        policy, dot, name = key.rpartition(".")
        if not sep or not dot or not policy or not name:
            _fail(f"--param: {json_quoted(item)} must look like policy.name=value, "
                  "e.g. cluster.n_clusters=25")
        out.setdefault(policy, {}).update(_parse_params([f"{name}={raw}"], f"{policy}."))
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
            _fail(f"--plot: {quoted_path(plot)} must be a .png path")
        plot = _check_output(plot, "--plot", "curves.png")
        try:
            require_matplotlib()
        except ImportError as exc:
            _fail(f"--plot: {exc}")
    params = _parse_policy_params(args.param or [])
    _options.filled(args, "param", {f"params.{policy}.{name}": f"--param {policy}.{name}"
                                    for policy, given in params.items() for name in given})
    weights = None
    if args.weights is not None:
        from switchpoint.weights import load_weights

        weights = load_weights(args.weights, max_weights_bytes=_weights_cap(args))
    with _feedback(args) as feedback:
        report = evaluate(
            args.records, policies=args.policy, weights=weights,
            fit_split=None if weights is not None else (args.fit_split or "train"),
            test_split=args.test_split, params=params or None, embedder=args.embedder,
            progress=feedback)
        if plot is not None:
            from switchpoint.evaluation.plot import plot_curves

            try:
                plot_curves(report, plot)
            except OSError as exc:
                _fail(f"--plot: cannot write {quoted_path(plot)}: {write_problem(plot, exc)}")
            feedback.note(f"wrote the cost-quality plot to {quoted_path(plot)}")
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False))
    else:
        print(report.format_table())
    return 0


@contextmanager
def _collector_paused() -> Iterator[Callable[[], None]]:
    """Pause the cyclic garbage collector while the service's modules load, and keep what they
    made out of its scans from then on: the ``with`` block's value, called once they are
    loaded, freezes the objects there are (:func:`gc.freeze`; each is still freed when nothing
    refers to it) and lets the collector run again. A start makes some 160,000 long-lived
    containers (modules, classes, FastAPI's routes, pydantic's schemas) and almost no cyclic
    garbage, which the collector scanned over and over (two full passes and twenty partial
    ones before the service was ready), and once more as the process ended. Objects made
    later are collected as usual.

    A start that fails (the block raises) leaves the collector as it was, unfrozen: a caller
    of :func:`main` in its own process goes on with its own. A service that ran and stopped
    leaves the objects frozen: its process is ending, and the collection Python makes as it
    exits skips them."""
    enabled = gc.isenabled()
    frozen = False

    def loaded() -> None:
        nonlocal frozen
        if not frozen and gc.get_freeze_count() == 0:  # (a caller's freeze is its own)
            gc.freeze()
            frozen = True
        if enabled:
            gc.enable()

    gc.disable()
    try:
        yield loaded
    except BaseException:
        if frozen:
            gc.unfreeze()
        raise
    finally:
        if enabled:
            gc.enable()


def cmd_serve(args: argparse.Namespace) -> int:
    with _collector_paused() as loaded:
        return _serve(args, loaded)


def _serve(args: argparse.Namespace, loaded: Callable[[], None]) -> int:
    from switchpoint import _hangup

    _hangup.defer()  # first: a SIGHUP while it starts is taken up once it serves, not fatal
    from switchpoint.config import COMMAND_LINE, load_settings

    port = args.port
    settings = load_settings(args.config or os.environ.get("SWITCHPOINT_CONFIG") or None,
                             overrides={"weights": args.weights, "data_dir": args.data_dir,
                                        "policy": args.policy}, path_arg="--config",
                             overrides_from=COMMAND_LINE)
    if args.policy is not None and settings.weights is not None:
        from switchpoint.weights import policy_of

        served = policy_of(settings.weights)
        if served != args.policy:
            where = "--weights" if args.weights else "the config's weights:"
            what = f" (a {served} package)" if served else ""
            _fail(f"--policy {json_quoted(args.policy)}: {where} "
                  f"{quoted_path(settings.weights)}{what} "
                  "would be served instead, since --policy picks bundled weights only when no "
                  "weights are given; drop one of the two (or list the other weights under "
                  "policies: and swap with POST /v1/router/policy/NAME)")
    # (what refuses a start, its host, port and exposure, needs no web framework: FastAPI and
    # uvicorn load once it has passed, and ``loaded`` is called then)
    from switchpoint.server.runner import serve

    return serve(settings, args.host, port, log_level=args.log_level,
                 access_log=args.access_log, allow_unauthenticated=args.allow_unauthenticated,
                 loaded=loaded)


def _prune_sizes(report: PruneReport) -> str:
    """``587680 -> 262144 bytes with its -wal and -shm (vacuum: none, ...)``: the store's sizes
    before and after a prune, and what changed them (of a dry run, the size alone)."""
    sizes = f"{report.bytes_before} -> {report.bytes_after} bytes with its -wal and -shm"
    if report.dry_run:
        return sizes
    done = f"vacuum: {report.vacuum}"
    if report.vacuum == "none" and not any(report.deleted.values()):
        done += ", as nothing was deleted"
    if report.wal_checkpointed:
        done += (f"; its write-ahead log (-wal, {report.wal_checkpointed} bytes) was "
                 "checkpointed into the file and truncated")
    return f"{sizes} ({done})"


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune what ``data_dir`` holds, each file by the same age: the log (``switchpoint.db``)
    and the ended keys (``keys.db``), or the one of them it holds (keys made with ``keys
    create`` before any service ran there), saying for each what it did; refused only when it
    holds neither."""
    from switchpoint.governance.cli import _settings, existing_state
    from switchpoint.governance.keys import KEYS_FILENAME, prune_keys
    from switchpoint.store.retention import PruneReport, cutoff_for, prune

    settings = _settings(args)
    days = settings.store.retention_days if args.older_than is None else args.older_than
    if days is None:
        _fail("prune: give --older-than DAYS, or set store.retention_days in the config")
    existing_state(settings, "nothing to prune; point it at the data_dir of the service whose "
                             "logs and keys to prune", keys_count=True)
    cutoff = cutoff_for(days)
    verb = "would delete" if args.dry_run else "deleted"
    age = f"{days:g} day{'' if days == 1 else 's'}"
    db_path = Path(settings.db_path)
    keys_path = Path(settings.data_dir) / KEYS_FILENAME
    files = []
    lost: str | None = None  # (why keys.db, missing, had keys to prune)
    # (why keys.db, there, is not the file in use: read before the log is pruned, which may
    # delete the requests that tell)
    wrong = _keys_not_in_use(keys_path, db_path) if keys_path.is_file() else None
    if db_path.is_file():
        # (store.retention_days, unattended as in a cron job, is held back from a clock that
        # jumped ahead, as the service's own retention is; an age given here is done as asked)
        report = prune(db_path, cutoff, dry_run=args.dry_run, hold=args.older_than is None)
        files.append(db_path.name)
        names = {"spend": "spend ledger entries (those budgets still count are kept)",
                 "feedback": "feedback rows (of those the learning checkpoint holds)"}
        counts = ", ".join(f"{n} {names.get(table, table)}"
                           for table, n in report.deleted.items())
        print(f"{verb} {counts} older than {age} from {printable(str(db_path))}; "
              f"{_prune_sizes(report)}", file=sys.stderr)
        if report.feedback_kept is not None:
            print(f"no feedback row {'would go' if report.dry_run else 'went'}: "
                  f"{report.feedback_kept}", file=sys.stderr)
        note = report.clock_note(days)
        if note is not None:
            print(f"warning: {note}", file=sys.stderr)
    else:  # (keys made before any service logged here)
        report = PruneReport(cutoff, {}, 0, 0, args.dry_run, True,
                             "dry-run" if args.dry_run else "none")
        print(f"no log to prune: {printable(str(db_path))} does not exist (no service has "
              "logged there)", file=sys.stderr)
    if wrong is not None:  # (the log's retention is done all the same: see _keys_not_in_use)
        keys = 0
        print(f"warning: {wrong}; no key was pruned from it", file=sys.stderr)
    elif keys_path.is_file():
        # (the keys that ended before the cutoff, and the oldest ended past
        # governance.max_keys)
        keys = prune_keys(settings.data_dir, report.cutoff, settings.governance.max_keys,
                          dry_run=args.dry_run)
        files.append(KEYS_FILENAME)
        print(f"{verb} {keys} revoked or expired key{'' if keys == 1 else 's'} from "
              f"{printable(str(keys_path))} (those that ended more than {age} ago, and the "
              f"oldest past the {settings.governance.max_keys:,} ended keys "
              "governance.max_keys keeps)", file=sys.stderr)
    else:
        keys = 0
        lost = _keys_lost(settings.data_dir, db_path)
        if lost is None:
            print(f"no key to prune: {printable(str(keys_path))} does not exist (no key was "
                  "made there)", file=sys.stderr)
        else:  # (the log's retention is done all the same: see _keys_lost)
            print(f"warning: {lost}", file=sys.stderr)
    if args.json:
        print(json.dumps({**report.to_dict(), "keys_deleted": keys, "files": files,
                          "keys_db_missing": lost is not None,
                          "keys_db_lacks_logged_keys": wrong is not None}))
    return 0


def _keys_lost(data_dir: str | Path, db_path: Path) -> str | None:
    """Why no key is pruned from ``data_dir``'s keys.db, which is not there, when the log
    ``db_path`` names keys made in it (the key store's refusal, see
    :meth:`~switchpoint.governance.keys.KeyStore.missing`); None when it names none (no key
    was made there). A prune warns and goes on rather than refuse: it is often run from cron,
    and a refusal would stop the log's retention too, while the keys' records it could not
    prune are in the missing file, pruned once it is restored."""
    from switchpoint.governance.keys import KeyStore, logged_keys

    try:
        KeyStore.in_dir(data_dir).missing("prune the ended keys", logged_keys(db_path))
    except StoreError as exc:
        return str(exc)
    return None


def _keys_not_in_use(keys_path: Path, db_path: Path) -> str | None:
    """Why no key is pruned from ``keys_path``, a keys.db that lacks keys the log ``db_path``
    names in requests logged since it was last in use (an empty file put in place, an older
    backup restored: the key store's refusal, see
    :meth:`~switchpoint.governance.keys.KeyStore.check_in_use`, which a start, ``keys
    create`` and the reports give); None when it is the file in use. A prune warns and prunes
    the log all the same, as for a missing keys.db (see :func:`_keys_lost`), and leaves the
    file as it is: a prune of it would write its latest time, after which it would pass for
    the file in use and be taken by the next start, every such key getting 401."""
    from functools import partial

    from switchpoint.governance.keys import KeyStore, logged_keys

    try:
        KeyStore(keys_path).check_in_use(partial(logged_keys, db_path), "prune the ended keys")
    except StoreError as exc:
        return str(exc)
    return None


def cmd_label(args: argparse.Namespace) -> int:
    from switchpoint.labelling import Judge, label
    from switchpoint.labelling.judge import MAX_RUBRIC_CHARS

    models = _parse_models(args.models) or []
    config = args.config or os.environ.get("SWITCHPOINT_CONFIG") or None
    if config is None:
        _fail("label: give --config FILE (or set $SWITCHPOINT_CONFIG): the catalog that says "
              "where each model is served and what it costs")
    if args.rubric is not None and args.judge is None:
        _fail("--rubric: give --judge MODEL too; the rubric is what the judge grades by")
    judge: Judge | str | None = args.judge
    if args.rubric is not None:
        try:
            with Path(args.rubric).open(encoding="utf-8", errors=ENCODING_ERRORS) as fh:
                rubric = fh.read(MAX_RUBRIC_CHARS + 1)  # past the limit: refused
            for number, line in enumerate(rubric.split("\n"), 1):
                if (bad := not_utf8(line)) is not None:
                    _fail(f"--rubric: {quoted_path(args.rubric)}, line {number}: {bad}")
            judge = Judge(args.judge, rubric=rubric)
        except OSError as exc:
            _fail(f"--rubric: cannot read {quoted_path(args.rubric)}: {exc.strerror or exc}")
        except ValueError as exc:  # an empty rubric
            _fail(f"--rubric: {quoted_path(args.rubric)} {getattr(exc, 'reason', exc)}")
    from switchpoint.config import load_settings

    # The service's config works as is: the admin token it may name guards HTTP routes alone.
    settings = load_settings(config, path_arg="--config")
    prompts = (_piped_stdin("label -", "cat prompts.jsonl | switchpoint label - --models A,B "
                                       "--out records.jsonl") if args.prompts == "-"
               else args.prompts)
    with _feedback(args) as feedback:
        try:
            report = label(prompts, models, args.out,
                           judge=judge, config=settings, concurrency=args.concurrency,
                           max_tokens=args.max_tokens, resume=not args.restart,
                           progress=feedback, notes=feedback.note)
        except KeyboardInterrupt:
            feedback.note(f"interrupted: what was finished is kept in {args.out}; run the same "
                          "command again to resume")
            raise
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.complete else 1


# Parser ----------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose own errors (an unknown argument, an invalid choice) quote each
    value they repeat as :func:`~switchpoint._messages.quoted` would: cut short and escaped.

    A word that begins with ``-`` and a digit (``-5/day``, ``-1h``, ``-1e3``, ``-.5``), or is
    a negative infinity or NaN as ``float()`` reads one (``-inf``, ``-Infinity``, ``-nan``),
    alone, as a budget's amount (``-inf/day``) or with a duration's unit (``-infh``), is a
    value, never an option: no option's name begins so, and the option before it then takes it
    (``--budget -5/day``), so the option's own check says what is wrong with it (negative, not
    finite), as it says it of ``--budget=-5/day``; argparse reads such a word as an unknown
    option, and said only that the option before it expected an argument. Any other word that
    begins with ``-`` and a letter stays an option: it may be one (``--name --json``, a value
    left out), so a value written so is given with ``=`` (``--tenant=-x``), as the refusal
    says."""

    def _parse_optional(self, arg_string: str) -> Any:
        if _VALUE_WITH_DASH.match(arg_string) and arg_string not in self._option_string_actions:
            return None  # (a value: an argument of the option before it, or a positional one)
        return super()._parse_optional(arg_string)

    def error(self, message: str) -> NoReturn:
        missing = _NO_VALUE.fullmatch(message)
        if missing is not None:
            flag = missing.group(1).split("/")[-1]
            message += (f"; give its value after it ({flag} VALUE), or {flag}=VALUE for one "
                        "that begins with '-'")
        super().error(_LONG_WORD.sub(lambda m: cut(m.group(), 60), printable(message)))


# A run of text an error repeats from the command line that is past what a message quotes.
_LONG_WORD = re.compile(r"\S{61,}")
# A word of the command line that begins with "-" and a digit (or ".", then a digit; any digit
# float() reads), or is -inf, -infinity or -nan (any case) alone, before a budget's "/" or with
# a duration's unit: a value.
_VALUE_WITH_DASH = re.compile(r"-(?:\.?\d|(?:inf(?:inity)?|nan)(?:[smhdw]?\Z|\s*(?:usd)?\s*/))",
                              re.IGNORECASE)
# argparse's refusal of an option that takes a value given none (the word after it an option).
_NO_VALUE = re.compile(r"argument (\S+): expected one argument")


def build_parser() -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = _Parser(
        prog="switchpoint",
        description="Route each LLM request to the model minimising expected error + λ·cost.",
    )
    # The limits come from _limits, not from the modules enforcing them: those import the
    # config, SQLite and asyncio, which every command (--help too) would load for a number.
    from switchpoint._bundled import bundled_policies
    from switchpoint._limits import (
        DEFAULT_CLUSTERS,
        DEFAULT_CONCURRENCY,
        DEFAULT_EMBEDDER_ID,
        DEFAULT_NEIGHBOURS,
        MAX_BATCH,
        MAX_CONCURRENCY,
        MAX_RETENTION_DAYS,
    )
    from switchpoint._version import __version__
    from switchpoint.catalog import MAX_TOKENS
    from switchpoint.decision import DEFAULT_COST_WEIGHT, MAX_COST_WEIGHT
    from switchpoint.governance.cli import DATA_DIR_HELP
    from switchpoint.policies import POLICIES

    parser.add_argument("--version", action="version", version=f"switchpoint {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    # Feedback on stderr for the commands that work for a while; stdout stays the result alone.
    feedback = argparse.ArgumentParser(add_help=False)
    group = feedback.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", action="store_true",
                       help="print nothing on stderr but errors (no progress, no notes)")
    group.add_argument("--progress", action="store_true",
                       help="draw progress bars on stderr even when it is not a terminal "
                            "(default: only on a terminal)")

    # The commands that load a weights package: how much of it they read.
    cap = argparse.ArgumentParser(add_help=False)
    cap.add_argument("--max-weights-bytes", type=_options.COUNT, metavar="N",
                     help="the most the weights' arrays and profiles may hold together "
                          "(default: 8 GiB, 8589934592; at most 1 TiB)")

    p = sub.add_parser("route", parents=[feedback, cap],
                       help="route one prompt (argument or stdin), or a file of prompts")
    p.add_argument("prompt", nargs="?",
                   help="the prompt to route (default: read it from stdin when piped)")
    p.add_argument("--weights", type=_options.WEIGHTS_DIR,
                   help="weights package directory (default: the bundled one)")
    most = people_number(MAX_COST_WEIGHT)
    cost_weight = p.add_argument("--cost-weight", type=_options.COST_WEIGHT,
                                 help=f"λ for this call, from 0 to {most} (0 = quality first; "
                                      f"default: {DEFAULT_COST_WEIGHT:g})")
    cost_weights = p.add_argument("--cost-weights", type=_options.COST_WEIGHTS,
                                  help="comma-separated λ sweep for --input, each from 0 to "
                                       f"{most}, at most {MAX_BATCH:,} of them, e.g. 0,0.1,1")
    models = p.add_argument("--models", help="comma-separated models allowed for this call")
    p.add_argument("--json", action="store_true", help="print the whole decision as JSON")
    p.add_argument("--explain", action="store_true", help="print the plain-English explanation")
    p.add_argument("--input", metavar="FILE",
                   type=_options.path_option("a file of prompts, or - for stdin"),
                   help='JSONL of {"id", "prompt"} or {"id", "embedding"} lines, or plain text '
                        "with one prompt a line (id = line number); - reads stdin")
    p.add_argument("--output", metavar="FILE",
                   type=_options.path_option("a file to write the decisions to, or - for "
                                             "stdout"),
                   help="write one JSONL decision per id and cost weight here; - or no "
                        "--output writes them to stdout")
    p.set_defaults(func=cmd_route)
    _options.fills(p, available_models=models, cost_weight=cost_weight,
                   cost_weights=cost_weights)

    p = sub.add_parser("fit", parents=[feedback],
                       help="fit a weights package from routing records")
    p.add_argument("records", type=_options.RECORDS, help="routing records (JSONL)")
    p.add_argument("--out", required=True, type=_options.WEIGHTS_OUT,
                   help="directory to write the weights package to")
    split = p.add_argument("--split", help="use only records of this split (default: train "
                                           "when the records carry splits, else every record)")
    fit_policy = p.add_argument("--policy", default="cluster", metavar="NAME",
                   help=f"the policy to fit: {one_of(list(POLICIES))}, or one an installed "
                        "package names (default: cluster)")
    n_clusters = p.add_argument("--n-clusters", type=_options.COUNT,
                                help="clusters for the cluster policy, at least 1 (default: "
                                     f"{DEFAULT_CLUSTERS})")
    k = p.add_argument("--k", type=_options.COUNT,
                       help="neighbours for the knn policy, at least 1 (default: "
                            f"{DEFAULT_NEIGHBOURS})")
    embedder = p.add_argument("--embedder", help=f"embedder id (default: "
                                                 f"{DEFAULT_EMBEDDER_ID}), or st:PATH for a "
                                                 "sentence-transformers model")
    p.add_argument("--param", action="append", metavar="NAME=VALUE",
                   help="any other policy parameter (repeatable)")
    p.set_defaults(func=cmd_fit)
    _options.fills(p, n_clusters=n_clusters, k=k, split=split, embedder=embedder,
                   policy=fit_policy)

    p = sub.add_parser("add-model", parents=[feedback, cap],
                       help="teach the weights a new model from labelled records")
    name = p.add_argument("name", metavar="MODEL", help="the new model's name")
    p.add_argument("records", metavar="RECORDS", type=_options.RECORDS,
                   help="routing records that label the model")
    p.add_argument("--weights", type=_options.WEIGHTS_DIR,
                   help="weights package to extend (default: the bundled one, which needs "
                        "--out)")
    p.add_argument("--out", type=_options.WEIGHTS_OUT,
                   help="write here instead of updating --weights in place")
    p.add_argument("--label", help="the model's name inside the records, if different")
    p.set_defaults(func=cmd_add_model)
    _options.fills(p, name=name)

    p = sub.add_parser("remove-model", parents=[feedback, cap],
                       help="remove a model from a weights package")
    name = p.add_argument("name", metavar="MODEL",
                          help="the model to remove (see switchpoint info)")
    p.add_argument("--weights", type=_options.WEIGHTS_DIR,
                   help="weights package to remove it from, in place unless --out (default: "
                        "the bundled one, which needs --out)")
    p.add_argument("--out", type=_options.WEIGHTS_OUT,
                   help="write here instead of updating --weights in place")
    p.set_defaults(func=cmd_remove_model)
    _options.fills(p, name=name)

    p = sub.add_parser("info", parents=[cap], help="describe a weights package")
    p.add_argument("--weights", type=_options.WEIGHTS_DIR,
                   help="weights package directory (default: the bundled one)")
    p.add_argument("--json", action="store_true", help="print the description as JSON")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("eval", parents=[feedback, cap],
                       help="fit policies on one split and measure them on another "
                            "(AIQ, QNC, per-task breakdown, cost-quality plot)")
    p.add_argument("records", type=_options.RECORDS,
                   help="routing records (JSONL) with a test split")
    weights = p.add_argument("--weights", type=_options.WEIGHTS_DIR,
                             help="evaluate this fitted weights package instead of fitting")
    fit_split = p.add_argument("--fit-split",
                               help="fit on this split (default: train, unless --weights)")
    p.add_argument("--test-split", default="test", help="measure on this split (default: test)")
    policy = p.add_argument("--policy", action="extend", nargs="+", metavar="NAME",
                            help="policies to fit (repeatable; default: cluster knn)")
    param = p.add_argument("--param", action="append", metavar="POLICY.NAME=VALUE",
                           help="a policy parameter, e.g. cluster.n_clusters=25 (repeatable; "
                                "split at the last dot: a policy's name may hold dots)")
    embedder = p.add_argument("--embedder", help=f"embedder id for fitting (default: "
                                                 f"{DEFAULT_EMBEDDER_ID}), or st:PATH for a "
                                                 "sentence-transformers model")
    p.add_argument("--plot", metavar="PNG", type=_options.path_option("a .png path"),
                   help="write the cost-quality curves to this PNG")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(func=cmd_eval)
    _options.fills(p, policies=policy, policy=policy, params=param, fit_split=fit_split,
                   embedder=embedder, weights=weights)

    p = sub.add_parser("serve", help="serve the router and the OpenAI-compatible gateway over "
                                     "HTTP: POST /v1/route, POST /v1/chat/completions (with "
                                     "models: in --config), /v1/feedback, /health, /v1/models, "
                                     "/metrics, /v1/router/* (the API document at "
                                     "/openapi.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: "
                                                       "127.0.0.1)")
    p.add_argument("--port", default="8080", type=_options.port_option,
                   help="port (default: 8080); 0 for any free one, or FIRST-LAST for a free one "
                        "of that range: then `switchpoint: listening on URL` on stdout says which")
    weights = p.add_argument("--weights", help="weights package directory (default: "
                                               "$SWITCHPOINT_WEIGHTS, else the config's weights:, "
                                               "else the bundled weights of --policy)")
    p.add_argument("--config", type=_options.CONFIG,
                   help="YAML config: catalog, policy, λ, cache, data_dir (default: "
                        "$SWITCHPOINT_CONFIG, if set)")
    data_dir = p.add_argument("--data-dir", help=DATA_DIR_HELP)
    policy = p.add_argument("--policy", help="the bundled weights of a policy to load when no "
                                             "weights are given (--weights or the config's "
                                             f"weights:): one of {one_of(bundled_policies())}, "
                                             "or a name under "
                                             "the config's policies: (default: "
                                             "$SWITCHPOINT_POLICY, else the config's policy:, "
                                             "else cluster)")
    p.add_argument("--log-level", default="info",
                   choices=["critical", "error", "warning", "info", "debug"],
                   help="least severity logged (default: info)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--allow-unauthenticated", action="store_true",
                   help="serve on a non-loopback address without client keys (auth: keys) "
                        "or without an admin token (e.g. behind an authenticating proxy; "
                        "the config's allow_unauthenticated: true does the same)")
    p.set_defaults(func=cmd_serve)
    _options.fills(p, data_dir=data_dir, policy=policy, weights=weights)

    p = sub.add_parser("label", parents=[feedback],
                       help="label your own models: call them on prompts, score the answers "
                            "(a judge model, or reference answers) and write routing records")
    p.add_argument("prompts", type=_options.path_option("a file of prompts, or - for stdin"),
                   help='JSONL of {"prompt", "id"?, "task"?, "split"?, '
                                   '"reference"?} lines, or plain text with one prompt a line; '
                        "- reads them from stdin")
    models = p.add_argument("--models", required=True, metavar="A,B,...",
                            help="comma-separated catalog models to label")
    judge = p.add_argument("--judge", metavar="MODEL",
                           help="the catalog model that scores answers (needed unless every "
                                "prompt has a reference; it may be one of --models)")
    p.add_argument("--out", required=True, metavar="FILE",
                   type=_options.path_option("a file to write the routing records to"),
                   help="routing records to write (JSONL), one line per prompt as soon as it "
                        "is labelled")
    p.add_argument("--config", metavar="FILE", type=_options.CONFIG,
                   help="YAML config with the catalog: where each model is served, its key "
                        "and prices (default: $SWITCHPOINT_CONFIG)")
    concurrency = p.add_argument("--concurrency", type=_options.COUNT,
                                 default=DEFAULT_CONCURRENCY, metavar="N",
                                 help=f"upstream calls at once, from 1 to {MAX_CONCURRENCY:,} "
                                      f"(default: {DEFAULT_CONCURRENCY})")
    max_tokens = p.add_argument("--max-tokens", type=_options.COUNT, metavar="N",
                                help="max_tokens for each model's answer, from 1 to "
                                     f"{MAX_TOKENS:,} (default: not sent: the model's own "
                                     "limit, or governance.max_output_tokens where a budget "
                                     "applies)")
    p.add_argument("--rubric", metavar="FILE", type=_options.path_option("a text file"),
                   help="the judge's grading criteria (text); the reply format is fixed and "
                        "added to it")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", default=True,
                       help="keep what an interrupted run wrote to --out (the default)")
    group.add_argument("--restart", action="store_true",
                       help="start over: discard --out and its journal (only a file this "
                            "command wrote: a run's part-way output, its journal beside it, "
                            "or a finished one its .done mark matches)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_label)
    _options.fills(p, models=models, judge=judge, concurrency=concurrency, max_tokens=max_tokens)

    p = sub.add_parser("prune", help="delete log entries older than the retention, and the "
                                     "keys that ended (revoked or expired) before it, and give "
                                     "the disk space back")
    p.add_argument("--config", type=_options.CONFIG,
                   help="YAML config: its data_dir and store.retention_days (default: "
                        "$SWITCHPOINT_CONFIG, if set)")
    data_dir = p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--older-than", metavar="DAYS", type=_options.days_option,
                   help="delete entries older than this many days, more than 0 and at most "
                        f"{MAX_RETENTION_DAYS:,} (default: store.retention_days)")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_prune)
    _options.fills(p, data_dir=data_dir)

    from switchpoint.governance.cli import add_commands

    add_commands(sub)  # keys, report
    from switchpoint.learning.cli import add_commands as add_learning_commands

    add_learning_commands(sub)  # feedback, learn, experiments
    from switchpoint.models_cli import add_commands as add_models_commands

    add_models_commands(sub)  # models
    return parser


class _OutputLostError(Exception):
    """A write to stdout failed (``error``, the system's reason): told apart from any other
    ``OSError`` a command may let through."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Output:
    """``sys.stdout`` while a command runs: that stream, whose failed writes raise
    :class:`_OutputLostError`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as exc:
            raise _OutputLostError(exc) from exc

    def writelines(self, lines: Iterable[str]) -> None:
        try:
            self.stream.writelines(lines)
        except OSError as exc:
            raise _OutputLostError(exc) from exc

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            raise _OutputLostError(exc) from exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _without_httpx_command_line() -> None:
    """httpx imports its own command line's modules with itself wherever they are installed
    (click, rich and pygments: the test extras bring the last two), some 50 to 100 ms of each
    command that calls a model (label) and of each start of the service, for a command line
    this process never runs. A command's process that has not imported httpx yet marks that
    module missing, so httpx keeps the stand-in it has for when they are not installed; a
    program that imported httpx before calling :func:`main` is left as it is."""
    if "httpx" not in sys.modules:
        cast(dict[str, Any], sys.modules).setdefault("httpx._main", None)  # (None: its import
        # fails at once, as Python reads a None there)


def main(argv: Sequence[str] | None = None) -> int:
    _without_httpx_command_line()
    stdout = sys.stdout
    if stdout is None:  # (no stdout at all: nothing to write to, nothing to lose)
        return _main(argv)
    sys.stdout = cast(TextIO, _Output(stdout))
    code = 0
    try:
        try:
            code = _main(argv)
        except SystemExit:  # --help, --version, a usage error: what was printed goes out first
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # what is still buffered: a full disk is told now, not lost at exit
        return code
    except _OutputLostError as lost:
        # (a command that failed, one that could not write out a key's new secret say, keeps
        # its status: its reader leaving is no success)
        lost_code = _output_lost(stdout, lost.error)
        return lost_code if code == 0 else code
    finally:
        sys.stdout = stdout


def _output_lost(stdout: TextIO, error: OSError) -> int:
    """The exit status when stdout could not be written: 0, quietly, when its reader left (a
    closed pipe, as of ``| head -1``: enough was read), else :data:`EXIT_OUTPUT_LOST` with one
    line saying why. What stdout still holds is dropped (it would fail again at exit)."""
    if stdout is sys.__stdout__:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
    if isinstance(error, BrokenPipeError):
        return 0
    print(f"switchpoint: error: could not write the output: {error.strerror or error}",
          file=sys.stderr)
    return EXIT_OUTPUT_LOST


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.func is cmd_serve:  # (the service sets up its own log)
            code: int = args.func(args)
            return code
        with printed_to_stderr():
            code = args.func(args)
        return code
    except (CliError, SwitchpointError) as exc:
        # (imported here: the gateway's package is heavy, and only a failure needs it)
        from switchpoint._redact import redact

        # An error may quote a value it refused (a config key's): a secret there is not shown.
        print(f"switchpoint: error: {redact(_options.as_typed(exc, args))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
