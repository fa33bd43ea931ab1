"""``switchpoint feedback``, ``switchpoint learn`` and ``switchpoint experiments``: outcomes from
the command line, the explicit step that folds them into new shared weights, and the
experiments created at run time.

``feedback`` reports how one answer went, named by its decision id or by its prompt's hash
(``--prompt-hash``: the latest decision routed on that prompt). With ``--url`` it posts to a
running service (``POST /v1/feedback``, with ``--api-key`` or ``$SWITCHPOINT_API_KEY`` when the
service uses client keys), which learns at once. Without it, it works on the state in
``data_dir`` (the config's, or ``--data-dir``): it loads the router as the service would,
replays the feedback log, learns the outcome and appends it to the log; a service running on
that ``data_dir`` takes it up before it learns its next outcome (so a repeat sent to it
replaces this one, and says so), or at its next reload (``POST /v1/router/reload``) or restart,
whichever comes first. Every argument is checked first, and a ``data_dir`` that does not exist
is an error, so a refused command creates no file.

``learn --export DIR`` writes a new weights package: the configured weights with one tenant's
outcomes (``--tenant``, default the deployment's own) folded in. The service's weights never
change by themselves; point ``weights:`` at the new package (and reload) to adopt it.

``experiments list`` lists the experiments created at run time that ``data_dir`` keeps,
running and ended (it reads, beside a running service too). ``experiments end NAME`` ends a
running one as ``DELETE /v1/router/experiments/{name}`` does, with no service on ``data_dir``:
it takes the directory's lock while it writes (see :mod:`switchpoint.gateway.owner`), and is
refused while a service holds it, since that service runs the experiment from its memory. A
config that clashes with a run-time experiment keeps the service from starting; this is the
way out that keeps the config.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from switchpoint import _options
from switchpoint._files import within
from switchpoint._json import loads
from switchpoint._messages import (
    cut,
    header_value_problem,
    json_quoted,
    listed_names,
    plural,
    printable,
    quoted_path,
)
from switchpoint._numbers import real_number
from switchpoint.errors import ConfigError, DecisionNotFoundError, InvalidInputError
from switchpoint.governance.cli import DATA_DIR_HELP, _common, existing_state
from switchpoint.learning.comment import check_comment
from switchpoint.learning.events import check_tenant

if TYPE_CHECKING:
    from switchpoint.config import Settings
    from switchpoint.gateway import Gateway


def _settings(args: argparse.Namespace) -> Any:
    from switchpoint.governance.cli import _settings as governance_settings

    return governance_settings(args)


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def _quality(args: argparse.Namespace) -> tuple[float | None, bool | None]:
    given = [args.score is not None, args.success, args.failure]
    if sum(given) != 1:
        raise InvalidInputError("score", "give exactly one of --score X (0..1), --success or "
                                         "--failure")
    if args.score is not None:
        return float(args.score), None
    return None, bool(args.success)


def _cost_words(answer: dict[str, Any]) -> str:
    """`` at $0.000400 (as given)``, `` at 0.000400 in the weights' cost units (as given)``
    (its ``cost_unit``; a service that does not say: US dollars): the cost an outcome taught,
    if any."""
    from switchpoint.catalog import COST_UNITS, unit_cost_text
    cost = answer.get("cost")
    if not isinstance(cost, int | float):
        return ""
    unit = answer.get("cost_unit")
    unit = unit if isinstance(unit, str) and unit in COST_UNITS else "usd"
    source = {"answer": "as the gateway priced the answer", "feedback": "as given"}
    return (f" at {unit_cost_text(cost, unit)} "
            f"({source.get(str(answer.get('cost_from')), 'as given')})")


def _state_gateway(settings: Settings, *, reads_only: bool = False,
                   replays_log: bool = True) -> Gateway:
    """A gateway on the state in ``settings``' data_dir, serving no chat (with
    ``reads_only``, one that writes nothing there; without ``replays_log``, one that takes up
    only the outcomes of the decision it is given feedback on: see :class:`Gateway`), whose
    router loads its embedder only if a prompt is embedded (feedback learns from the vector
    its decision kept, an export from those the log keeps). Read without a config
    (``--data-dir`` alone), the experiments the service there created at run time may name
    tenants, policies or models that only its config has: the error says to give that
    config, not to end them (which would stop them in the service)."""
    from switchpoint.gateway import Gateway
    from switchpoint.gateway.live import RouterFactory

    try:
        return Gateway.from_config(settings, serves_chat=False, reads_only=reads_only,
                                   replays_log=replays_log, loader=RouterFactory(warm=False))
    except ConfigError as exc:
        if settings.source_path is not None or not exc.key.startswith("experiments."):
            raise
        # (what is wrong alone: the config's advice, to use a name it has or to end the
        # experiment, is for the service's operator, and the fix here is its config)
        raise ConfigError(exc.key, (
            f"{exc.problem} (--data-dir alone reads no config: the default one is used), and an "
            f"experiment the service created at run time in "
            f"{quoted_path(Path(settings.data_dir))} names what its config has; give that "
            "config with --config (or $SWITCHPOINT_CONFIG)")) from None


def _named(args: argparse.Namespace) -> tuple[str, str]:
    """The request field that names the decision (``decision_id`` or ``prompt_hash``) and its
    value: exactly one of the decision id and ``--prompt-hash`` is given, else refused naming
    them."""
    if (args.decision_id is None) == (args.prompt_hash is None):
        both = args.decision_id is not None
        raise InvalidInputError(
            "prompt_hash" if both else "decision_id",
            ("give a decision id or --prompt-hash, not both" if both else
             "is needed, or --prompt-hash HASH in its place (exactly one)")
            + ": the decision id is the one the answer carried (x-switchpoint-decision-id), "
            "HASH the SHA-256 of the prompt a decision routed on (its prompt_hash), which "
            "names the latest decision of that prompt")
    if args.prompt_hash is not None:
        return "prompt_hash", str(args.prompt_hash)
    return "decision_id", str(args.decision_id)


def cmd_feedback(args: argparse.Namespace) -> int:
    score, success = _quality(args)
    field, named = _named(args)
    check_comment(args.comment, "--comment")  # (here, not by the service: nothing is sent)
    if args.url is not None:
        return _feedback_over_http(args, score, success, {field: named})
    if args.timeout is not None:
        raise InvalidInputError("--timeout", "applies only with --url (how long the service "
                                             "there may take); leave it out, or give --url")
    from switchpoint.decision import check_id

    # Every argument is checked before the state is opened: a refused command writes nothing.
    cost: float | None = args.cost
    check_id(named, field)
    if args.tenant is not None:
        check_tenant(args.tenant, "--tenant")
    settings = _settings(args)
    existing_state(settings, "no decision to give feedback on; point it at the data_dir "
                                    "of the service that made the decision (or give --url to "
                                    "reach that service)")
    # (it records one outcome: the log's other outcomes are the service's to take up)
    with _state_gateway(settings, replays_log=False) as gateway:
        try:
            result = gateway.report_outcome(
                named if field == "decision_id" else None, score, success, model=args.model,
                comment=args.comment, tenant=args.tenant, cost=cost,
                prompt_hash=named if field == "prompt_hash" else None,
                config_read=settings.source_path is not None)
        except DecisionNotFoundError as exc:
            # Which state was searched is what a user most often got wrong: say it.
            raise InvalidInputError(
                exc.field, f"{str(exc).removeprefix(f'{exc.field}: ')}; searched the "
                f"state in {quoted_path(Path(settings.data_dir).resolve())} (--data-dir, or the "
                "data_dir "
                "of --config): is it the data_dir of the service that made the decision? "
                "(or give --url to reach that service)") from None
        except InvalidInputError as exc:
            if exc.field != "config":
                raise
            # (the gateway knows no flags: which to give is this command's to say)
            raise InvalidInputError("--config", (
                f"{exc.reason.removesuffix('; nothing was kept')} with --config FILE (or "
                "$SWITCHPOINT_CONFIG), the service's, whose data_dir this is; nothing was "
                "kept")) from None
    out = result.to_dict()
    if args.json:
        _print_json(out)
        return 0
    what = "replaced an earlier outcome" if out["replaced"] else "learned"
    print(f"{what}: {out['model']} scored {out['quality']:g}{_cost_words(out)} for decision "
          f"{out['decision_id']} (tenant {out['tenant']}, {out['kind']})")
    if out.get("note"):
        print(out["note"], file=sys.stderr)
    print(f"kept in {printable(str(settings.db_path))}; a service running on it learns it "
          "before its next outcome, or at its next reload or restart", file=sys.stderr)
    return 0


MAX_ANSWER_BYTES = 1 << 20  # the service's answer to feedback is a few hundred bytes
#: The most seconds the service's answer may take to arrive whole, once it has begun (each
#: read also waits at most the request's timeout): a server trickling bytes cannot hold the
#: command for long.
ANSWER_DEADLINE_S = 60.0
SHOWN_CHARS = 500  # of an unexpected answer, in an error message


def _clipped(text: str) -> str:
    """Text the service answered, as this command prints it: cut short, and escaped where a
    terminal would not show a character as itself (the answer of whatever --url names)."""
    return printable(cut(text, SHOWN_CHARS))


def _feedback_over_http(args: argparse.Namespace, score: float | None,
                        success: bool | None, named: dict[str, str]) -> int:
    import httpx

    from switchpoint.errors import ServeError

    body: dict[str, Any] = dict(named)  # (the decision_id, or the prompt_hash)
    if score is not None:
        body["score"] = score
    else:
        body["success"] = success
    if args.model is not None:
        body["model"] = args.model
    if args.comment is not None:
        body["comment"] = args.comment
    cost: float | None = args.cost
    if cost is not None:
        body["cost"] = cost
    if args.tenant is not None:
        raise InvalidInputError("--tenant", "applies only without --url; over HTTP the "
                                            "client key (--api-key) says whose decision it is")
    source = "--api-key" if args.api_key else "$SWITCHPOINT_API_KEY"
    key = (args.api_key or os.environ.get("SWITCHPOINT_API_KEY") or "").strip()
    problem = header_value_problem(key)
    if problem is not None:
        raise InvalidInputError(source, f"the key {problem}: a client key (sp-...) or the admin "
                                        "token is printable ASCII; give it as it was printed")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    url = args.url.rstrip("/") + "/v1/feedback"
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidInputError("--url", f"is not a URL ({exc}); give the service's base URL, "
                                         "e.g. http://127.0.0.1:8080") from None
    userinfo = parsed.userinfo
    if parsed.scheme not in ("http", "https") and not userinfo:
        raise InvalidInputError("--url", "must start with http:// or https://; give the "
                                         "service's base URL, e.g. http://127.0.0.1:8080")
    if userinfo:
        raise InvalidInputError("--url", "holds a user name or password: the service takes a "
                                         "client key, from --api-key or $SWITCHPOINT_API_KEY; "
                                         "give the URL without it")
    timeout: float = FEEDBACK_TIMEOUT_S if args.timeout is None else args.timeout
    try:
        with httpx.stream("POST", url, json=body, headers=headers,
                          timeout=timeout) as response:
            raw = b""
            deadline = time.monotonic() + ANSWER_DEADLINE_S
            for chunk in response.iter_bytes():
                raw += chunk
                if time.monotonic() > deadline:
                    raise ServeError(f"{quoted_path(url)} answered {response.status_code} "
                                     f"but its answer did not arrive whole within "
                                     f"{ANSWER_DEADLINE_S:g} s ({len(raw):,} bytes by then), "
                                     "which the service's never takes; is --url the "
                                     "switchpoint service?")
                if len(raw) > MAX_ANSWER_BYTES:
                    raise ServeError(f"{quoted_path(url)} answered {response.status_code} "
                                     f"with more than {MAX_ANSWER_BYTES:,} bytes, which is not "
                                     "what the service answers; is --url the switchpoint "
                                     "service?")
            status = response.status_code
    except httpx.HTTPError as exc:
        raise ServeError(f"--url: {_unreachable(exc, url, timeout)}") from None
    text = raw.decode("utf-8", "replace")
    try:
        answer = loads(text)
    except ValueError:
        answer = None
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        shown = message if isinstance(message, str) else text
        advice = ("; this command sends the key given with --api-key or in $SWITCHPOINT_API_KEY"
                  if status == 401 and not key else "")
        raise ServeError(f"{quoted_path(url)} answered {status}: {_clipped(shown)}{advice}")
    if not isinstance(answer, dict):
        raise ServeError(f"{quoted_path(url)} answered 200 with "
                         f"{json_quoted(text, SHOWN_CHARS)}, not the service's answer to "
                         "feedback (a JSON object); is --url the switchpoint service?")
    if (problem := _not_a_feedback_answer(answer)) is not None:
        raise ServeError(f"the server at {quoted_path(url)} did not answer as a switchpoint "
                         f"feedback endpoint: {_clipped(problem)}; is --url the switchpoint "
                         "service?")
    if args.json:
        _print_json(answer)
    else:
        what = "replaced an earlier outcome" if answer.get("replaced") else "learned"
        quality = answer.get("quality")
        score_text = f"{quality:g}" if isinstance(quality, (int, float)) else quality
        print(_clipped(f"{what}: {answer.get('model')} scored {score_text}"
                       f"{_cost_words(answer)} for decision {answer.get('decision_id')} "
                       f"(tenant {answer.get('tenant')}, {answer.get('kind')})"))
        if isinstance(note := answer.get("note"), str):
            print(_clipped(note), file=sys.stderr)
    return 0


def _unreachable(exc: Exception, url: str, timeout: float) -> str:
    """Which failure ``exc`` (an ``httpx`` error sending feedback to ``url``, each read
    waiting at most ``timeout`` seconds) was, and what to check, as ``--url: ...`` goes on."""
    import socket
    import ssl

    import httpx

    where = quoted_path(url)
    detail = printable(cut(str(exc) or type(exc).__name__, 200))
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, (socket.gaierror, ssl.SSLError)):
        cause = cause.__cause__ or cause.__context__  # (httpx's, then httpcore's, then the OS's)
    larger = "or give a larger --timeout"
    if isinstance(exc, httpx.ConnectTimeout):
        return (f"no connection to {where} within {timeout:g} s ({detail}); is the host up, "
                "and is the port open to this machine (a firewall may drop the connection)? "
                f"check the address and port, {larger}")
    if isinstance(exc, httpx.ReadTimeout):
        return (f"{where} took the request but sent no answer within {timeout:g} s; is --url "
                "the switchpoint service, and is it overloaded or stopped in a debugger? check "
                f"the address and port (the service's log names them), {larger}")
    if isinstance(exc, httpx.WriteTimeout):
        return (f"sending the request to {where} did not finish within {timeout:g} s; is "
                f"--url the switchpoint service, and is it overloaded? check it, {larger}")
    if isinstance(exc, httpx.TimeoutException):  # (PoolTimeout: no connection to use in time)
        return f"timed out reaching {where} ({detail}); try again, {larger}"
    if isinstance(exc, httpx.ConnectError) and isinstance(cause, socket.gaierror):
        return (f"cannot reach {where}: the host name {json_quoted(httpx.URL(url).host)} does "
                f"not resolve ({detail}); check its spelling and this machine's DNS, or give "
                "the service's address, e.g. http://127.0.0.1:8080")
    if isinstance(exc, httpx.ConnectError) and isinstance(cause, ssl.SSLError):
        return (f"cannot reach {where}: the TLS handshake failed ({detail}); switchpoint "
                "serve serves plain HTTP, so reach it with http://, and a TLS proxy in front "
                "of it with a certificate trusted here and made for that host name")
    if isinstance(exc, httpx.ConnectError):
        return (f"cannot reach {where} ({detail}); is the service running there? start it "
                "(switchpoint serve), or give the address and port it serves on (its log names "
                "them)")
    if isinstance(exc, httpx.ProxyError):
        return (f"the proxy failed reaching {where} ({detail}); check $HTTPS_PROXY, "
                "$HTTP_PROXY and $ALL_PROXY, or name the service's host in $NO_PROXY")
    if isinstance(exc, (httpx.ReadError, httpx.RemoteProtocolError)):
        return (f"{where} took the request but its answer broke off or was not HTTP "
                f"({detail}); is --url the switchpoint service, and its scheme right (https:// "
                "for one that serves TLS, http:// for one that does not)?")
    if isinstance(exc, httpx.WriteError):
        return (f"the connection to {where} broke while the request was sent ({detail}); is "
                "--url the switchpoint service? check it and try again")
    if isinstance(exc, httpx.DecodingError):
        return (f"{where} answered with a body that could not be decoded ({detail}); is --url "
                "the switchpoint service?")
    # (CloseError, LocalProtocolError, UnsupportedProtocol, TooManyRedirects: none of the
    # service's; said as what they are)
    return (f"cannot reach {where} ({type(exc).__name__}: {detail}); check --url, e.g. "
            "http://127.0.0.1:8080")


#: How long, by default and at most, each step of sending feedback to --url waits (to connect,
#: to send, for each read of the answer), in seconds.
FEEDBACK_TIMEOUT_S = 30.0
MAX_FEEDBACK_TIMEOUT_S = 600.0


#: The fields the service's answer to feedback always carries, and what each holds.
_ANSWER_FIELDS: dict[str, tuple[str, Callable[[object], bool]]] = {
    "decision_id": ("a string", lambda v: isinstance(v, str)),
    "tenant": ("a string", lambda v: isinstance(v, str)),
    "model": ("a string", lambda v: isinstance(v, str)),
    "quality": ("a number from 0 to 1",
                lambda v: (q := real_number(v)) is not None and 0.0 <= q <= 1.0),
    "replaced": ("true or false", lambda v: isinstance(v, bool)),
    "kind": ("a string", lambda v: isinstance(v, str)),
}


def _not_a_feedback_answer(answer: dict[str, Any]) -> str | None:
    """What makes ``answer`` (a JSON object) no answer of the service to feedback, or None."""
    missing = [name for name in _ANSWER_FIELDS if name not in answer]
    if missing:
        return f"its answer has no {', '.join(missing)}"
    for name, (what, holds) in _ANSWER_FIELDS.items():
        if not holds(answer[name]):
            return f"its {name} is {cut(json.dumps(answer[name]), 60)}, not {what}"
    return None


def cmd_learn(args: argparse.Namespace) -> int:
    from switchpoint.learning.export import export_weights
    from switchpoint.weights import check_weights_target

    settings = _settings(args)
    _check_export_outside(args.export, settings.data_dir)
    check_weights_target(args.export)  # before the state in data_dir is opened
    # (before --tenant, which is judged by the tenants data_dir's logs name: without them,
    # any tenant only they name would be called unknown)
    existing_state(settings, "no outcomes to fold into the weights; point it at the "
                                    "data_dir of the service that learned them")
    if args.tenant is not None:
        from switchpoint.governance.reports import Reports

        unknown = Reports.from_settings(settings).unknown_tenant(args.tenant, "--tenant")
        if unknown is not None:
            raise InvalidInputError("--tenant", unknown)
    # It only reads data_dir (the package goes to --export): a refusal, like an export,
    # leaves every file there as it was.
    with _state_gateway(settings, reads_only=True) as gateway:
        if (why := gateway.learning.nothing_new(args.tenant)) is not None:
            raise InvalidInputError("tenant", why)
        package = export_weights(gateway.router, args.export, tenant=args.tenant,
                                 through=gateway.learning.log_position())
    learned = package.provenance.get("learned", [{}])[-1]
    if args.json:
        _print_json({"weights_id": package.weights_id, "path": str(package.path), **learned})
        return 0
    print(package.weights_id)
    twice = ("a service on the same data_dir does not learn those outcomes again"
             if "through_seq" in learned else
             "but the feedback log changed while it was read, so a service on the same "
             "data_dir would learn those outcomes again: export again, or serve the new "
             "weights on a fresh data_dir")
    not_folded = learned.get("not_folded")
    left = (f" ({not_folded['outcomes']} of models without a learned profile are not: the "
            "service goes on learning them from its log)"
            if isinstance(not_folded, dict) else "")
    print(f"wrote {package.path}: {learned.get('outcomes')} outcome(s) of tenant "
          f"{learned.get('tenant')} folded into {learned.get('from_weights')}{left}; set weights: "
          f"{_as_config_sees(package.path or Path(args.export), settings.source_path)} in the "
          f"config (then reload) "
          f"to route with them ({twice})", file=sys.stderr)
    return 0


def _check_export_outside(export: str, data_dir: str) -> None:
    """``--export`` must be neither the data_dir nor inside it (through links too): the
    package would be mixed with the service's state, which pruning, moves of the state and a
    later start take for their own."""
    if within(export, data_dir):
        where = ("is the data_dir" if os.path.realpath(export) == os.path.realpath(data_dir)
                 else "is inside the data_dir")
        raise InvalidInputError("--export", f"{quoted_path(export)} {where} "
                                            f"({quoted_path(data_dir)}), where the service "
                                            "keeps its state: the weights would be mixed with "
                                            "it; choose a folder outside the data_dir, e.g. "
                                            "--export ./learned-weights")


def _as_config_sees(path: Path, config: Path | None) -> str:
    """``path`` as a config file names it: a relative path there is taken from the file's own
    folder, not from where the command ran (without a file: the absolute path)."""
    target = path.resolve()
    if config is None:
        return str(target)
    return os.path.relpath(target, config.resolve().parent)


# experiments ------------------------------------------------------------------------------------


def _experiment_name(name: str) -> str:
    """``NAME`` as an experiment's name may be (at most 64 characters, ...), else refused."""
    from switchpoint.learning.config import check_name

    try:
        return check_name(name, "an experiment's name")
    except ValueError as exc:
        raise InvalidInputError("name", f"{exc}; `switchpoint experiments list` lists those "
                                        "created at run time") from None


def _arm_words(arm: str, shown: dict[str, Any]) -> str:
    """An arm as ``experiments list`` prints it: its name, its strategy (or settings) and its
    share of the traffic."""
    settings = shown["settings"]
    what = shown["strategy"] or ", ".join(
        f"{key} {' '.join(map(str, value)) if isinstance(value, list) else value}"
        for key, value in settings.items()) or "configured routing"
    return f"{arm} ({cut(what, 80)}) {shown['share']:.0%}"


def cmd_experiments_list(args: argparse.Namespace) -> int:
    from switchpoint.gateway.ab_tests import kept_experiments, start_clash
    from switchpoint.governance.cli import _table, _when
    from switchpoint.store.learning import LearningReader

    settings = _settings(args)
    existing_state(settings, "no experiment created at run time; point it at the "
                                    "data_dir of the service that made them")
    reader = LearningReader(settings.db_path)
    try:
        # (as a service enforces them: those ended since a backup restored, ended, as the
        # reader reads them)
        listed = kept_experiments(reader)
        # (without a config file, what would start is unknown: nothing to judge)
        clash = None if settings.source_path is None else start_clash(settings, reader)
    finally:
        reader.close()
    if args.json:
        _print_json(listed)
        return 0
    if not listed:
        print("no experiment was created at run time (the config's are under its "
              "experiments:)")
        return 0
    if clash is not None:
        from switchpoint._redact import redact

        print(f"note: a service on {quoted_path(settings.source_path)} would not start: "
              f"{redact(str(clash))}", file=sys.stderr)
    rows = [[printable(e["name"]), e["status"],
             printable(listed_names(e["tenants"], 5, 30)) if e["tenants"] else "(everyone)",
             printable("; ".join(_arm_words(arm, shown) for arm, shown in e["arms"].items())),
             _when(e["created_at"]), _when(e["ended_at"]), e["decisions"]] for e in listed]
    print(_table(["name", "status", "tenants", "arms (strategy, share)", "created (UTC)",
                  "ended (UTC)", "decisions"], rows))
    for e in listed:
        if e["problem"] is not None:
            print(f"note: experiment {printable(json_quoted(e['name'], 100))}: "
                  f"{printable(e['problem'])}", file=sys.stderr)
    return 0


def cmd_experiments_end(args: argparse.Namespace) -> int:
    from switchpoint.gateway.ab_tests import (
        check_endable,
        end_kept,
        experiment_path,
        kept_experiments,
    )
    from switchpoint.gateway.experiments import when
    from switchpoint.gateway.owner import lock_while_stopped
    from switchpoint.store import SQLiteStore
    from switchpoint.store.learning import LearningReader

    name = _experiment_name(args.name)
    settings = _settings(args)
    existing_state(settings, f"no experiment {json_quoted(name)} to end; point it at "
                                    "the data_dir of the service that made it")
    reader = LearningReader(settings.db_path)
    try:  # refused before anything is locked or opened: a refusal changes nothing
        check_endable(reader, settings, name)
    finally:
        reader.close()
    lock = lock_while_stopped(settings.data_dir, (
        f"running experiment {json_quoted(name)} from its memory, where an end written here "
        f"would not reach: end it through the service, DELETE {experiment_path(name)} "
        "(an admin route; Gateway.end_ab_test in a Python program), or stop it and run this "
        "again"))
    try:
        store = SQLiteStore(settings.db_path, synchronous=settings.store.synchronous,
                            logs=False)
        with store.open(serving=True):  # (this process holds the lock, as a service does)
            ended_at = end_kept(store, settings, name)
            reader = LearningReader(store.path, store.gone)
            try:
                ended = next(e for e in kept_experiments(reader) if e["name"] == name)
            finally:
                reader.close()
    finally:
        lock.release()
    if args.json:
        _print_json(ended)
        return 0
    print(f"ended experiment {name} at {when(ended_at)}: the service takes no traffic into it "
          f"when it starts; its {plural(ended['decisions'], 'decision')} and report stay, and "
          "its name stays taken")
    return 0


def add_commands(sub: Any) -> None:
    """Register ``feedback``, ``learn`` and ``experiments`` on the main parser's
    subcommands."""
    from switchpoint.catalog import COST_UNITS_TEXT, MAX_ANSWER_COST

    p = sub.add_parser("feedback", help="report how an answer went (by its decision id, or "
                                        "its prompt's hash): to a running service (--url) or "
                                        "to the state in data_dir")
    decision_id = p.add_argument("decision_id", nargs="?",
                                 help="the x-switchpoint-decision-id the answer carried (or "
                                      "give --prompt-hash)")
    prompt_hash = p.add_argument("--prompt-hash", metavar="HASH",
                                 help="in place of the decision id: the SHA-256 of the prompt "
                                      "a decision routed on (its prompt_hash, 64 hexadecimal "
                                      "digits), naming the latest decision of that prompt")
    group = p.add_mutually_exclusive_group()
    score = group.add_argument("--score", type=_options.SCORE,
                               help="quality of the answer, 0 (worst) to 1 (best)")
    group.add_argument("--success", action="store_true", help="the answer did the job")
    group.add_argument("--failure", action="store_true", help="the answer failed")
    model = p.add_argument("--model", help="the model the feedback is about (default: the one "
                                           "that answered)")
    p.add_argument("--comment", help="a note kept with the outcome")
    cost = p.add_argument("--cost", type=_options.COST,
                          help=f"what the answer cost, from 0 to {MAX_ANSWER_COST:,.0f}, "
                               f"{COST_UNITS_TEXT}: teaches the model's cost on this kind of "
                               "prompt (with catalog prices the gateway's own accounting of the "
                               "answer is used when left out)")
    tenant = p.add_argument("--tenant", help="only a decision of this tenant (without --url)")
    p.add_argument("--url", help="a running service, e.g. http://127.0.0.1:8080 (it learns at "
                                 "once); without it the state in data_dir is updated and a "
                                 "service on it learns it before its next outcome, or at its "
                                 "next reload")
    p.add_argument("--api-key", help="client key, or the admin token, for --url (default: "
                                     "$SWITCHPOINT_API_KEY)")
    p.add_argument("--timeout", metavar="SECONDS", type=_options.number_option(
                       f"a number of seconds more than 0 and at most "
                       f"{MAX_FEEDBACK_TIMEOUT_S:g}", "10", 0.0, MAX_FEEDBACK_TIMEOUT_S,
                       above_low=True),
                   help="how long --url's service may take to connect, to take the request "
                        f"and to send each part of its answer, at most "
                        f"{MAX_FEEDBACK_TIMEOUT_S:g} (default: {FEEDBACK_TIMEOUT_S:g})")
    p.add_argument("--config", type=_options.CONFIG,
                   help="YAML config (default: $SWITCHPOINT_CONFIG)")
    data_dir = p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")
    p.set_defaults(func=cmd_feedback)
    _options.fills(p, model=model, cost=cost, score=score, data_dir=data_dir,
                   decision_id=decision_id, prompt_hash=prompt_hash, tenant=tenant)

    p = sub.add_parser("learn", help="fold what the service learned from outcomes into a new "
                                     "weights package")
    p.add_argument("--export", required=True, metavar="DIR", type=_options.WEIGHTS_OUT,
                   help="directory to write the new weights package to")
    tenant = p.add_argument("--tenant", help="whose outcomes to fold in (default: the "
                                             "deployment's own, default)")
    p.add_argument("--config", type=_options.CONFIG,
                   help="YAML config (default: $SWITCHPOINT_CONFIG)")
    data_dir = p.add_argument("--data-dir", help=DATA_DIR_HELP)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_learn)
    _options.fills(p, tenant=tenant, data_dir=data_dir)

    experiments = sub.add_parser("experiments", help="experiments created at run time: list "
                                                     "them, or end one while the service is "
                                                     "stopped")
    es = experiments.add_subparsers(dest="experiments_command", required=True)
    p = es.add_parser("list", help="each experiment created at run time: running or ended, its "
                                   "tenants, arms, split and decisions logged")
    _common(p, cmd_experiments_list)
    p = es.add_parser("end", help="end an experiment created at run time, with the service "
                                  "stopped (its decisions and report stay)")
    name = p.add_argument("name", metavar="NAME", help="the experiment's name")
    _common(p, cmd_experiments_end)
    _options.fills(p, name=name)
