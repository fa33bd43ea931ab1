"""Labelling: call each model on each prompt through the gateway, score every answer (a judge,
or the prompt's reference answer) and write routing records with the answers' real costs.

::

    prompts ─► checks (every line, every model, prices, keys, an earlier run's files)
            ─► workers (at most ``concurrency`` upstream calls at once)
                 model (exact call: that model or a failure) ─► reference_score | Judge
            ─► OUT.journal (each answer for the judge as it arrives, each scored answer)
            ─► OUT (each prompt, once every model is scored)

Nothing is called before every check has passed. Costs are the upstream's token usage at the
catalog's prices (the gateway's ``CallInfo.cost_usd``); the judge's cost is counted apart and is
not in the records. A failed call (after the gateway's retries), an answer that is not Unicode
text (it cannot be sent to the judge) or an unreadable judge is a labelling failure: that
prompt gets no record this run and is retried on the next one. An answer for the judge is
journalled with its cost as soon as it arrives, so a run that stops (or whose judge fails)
before it is scored leaves it to the next run, which only judges it (its cost is counted once,
by the run that paid for it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import switchpoint.labelling.journal as jr
from switchpoint import records as _records
from switchpoint._files import LinkError, output_target, path_problem, same_file, within
from switchpoint._json import LONE_SURROGATE, lone_surrogate
from switchpoint._limits import DEFAULT_CONCURRENCY as DEFAULT_CONCURRENCY
from switchpoint._limits import MAX_CONCURRENCY as MAX_CONCURRENCY
from switchpoint._lists import comma_items
from switchpoint._messages import (
    STDIN,
    command,
    got,
    invalid_at,
    json_quoted,
    listed_names,
    people_number,
    plural,
    printable,
    quoted_path,
)
from switchpoint._progress import ProgressFn
from switchpoint.catalog import MAX_TOKENS, catalog_name_problem, usd, usd_text
from switchpoint.config import MAPPING_CONFIG, Settings, load_settings
from switchpoint.errors import (
    ConfigError,
    GatewayError,
    InvalidInputError,
    JudgeReplyError,
    LabellingError,
    SwitchpointError,
)
from switchpoint.labelling.judge import Judge, unreadable_message
from switchpoint.labelling.lock import OutputLock, lock_path
from switchpoint.labelling.prompts import LabelPrompt, as_prompts, read_prompts
from switchpoint.labelling.reference import reference_score
from switchpoint.records import MAX_RECORD_CHARS

if TYPE_CHECKING:
    from switchpoint.gateway import Gateway
    from switchpoint.gateway.results import ChatCompletion

NoteFn = Callable[[str], None]
# Failures the summary spells out one by one (the journal holds them all).
SHOWN_FAILURES = 5

PromptsArg = str | Path | TextIO | Sequence[LabelPrompt | Mapping[str, Any] | str]
ConfigArg = str | Path | Mapping[str, Any] | Settings | None


@dataclass(frozen=True)
class LabelFailure:
    """One answer that could not be scored: ``stage`` is ``answer`` (the model's call failed,
    or its answer is not Unicode text) or ``judge`` (the judge's call failed, or its replies
    could not be read)."""

    id: str
    model: str
    stage: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "model": self.model, "stage": self.stage,
                "message": self.message}


@dataclass
class LabelReport:
    """What one labelling run did. Costs are USD; ``answers_cost_usd`` is what the records'
    ``costs`` add up to for this run's calls, ``judge_cost_usd`` the judge's, apart.
    ``reused``: scored answers an earlier run journalled; ``kept_scored``: answers an earlier
    run journalled but did not score (it stopped while they waited for the judge or were being
    judged, or its judge failed to score them), scored this run without calling their model
    (their cost counted by the run that paid for it);
    ``rescored``: answers an earlier run scored against their prompt's reference, which changed
    since (or was added or removed), scored again this run from the journal, likewise."""

    out: Path
    prompts: int
    models: list[str]
    judge: str | None
    already_labelled: int = 0
    labelled: int = 0
    answer_calls: int = 0
    judge_calls: int = 0
    judge_reminders: int = 0
    by_reference: int = 0
    reused: int = 0
    kept_scored: int = 0
    rescored: int = 0
    answers_cost_usd: float = 0.0
    judge_cost_usd: float = 0.0
    failures: list[LabelFailure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: Each model's scores summed over every record of the output: those already there and
    #: those written this run.
    score_sums: dict[str, float] = field(default_factory=dict, repr=False)

    @property
    def total_cost_usd(self) -> float:
        return self.answers_cost_usd + self.judge_cost_usd

    @property
    def remaining(self) -> int:
        """Prompts still without a record (their answers failed this run)."""
        return self.prompts - self.already_labelled - self.labelled

    @property
    def complete(self) -> bool:
        return self.remaining == 0

    @property
    def records(self) -> int:
        """The records the output holds: those already there and those written this run."""
        return self.already_labelled + self.labelled

    @property
    def mean_scores(self) -> dict[str, float]:
        """Each model's mean score over every record of the output (an earlier, interrupted
        run's too), not only those written this run."""
        if not self.records:
            return {}
        return {m: round(self.score_sums.get(m, 0.0) / self.records, 4) for m in self.models}

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "prompts": self.prompts, "models": self.models,
                "judge": self.judge, "already_labelled": self.already_labelled,
                "labelled": self.labelled, "remaining": self.remaining,
                "answer_calls": self.answer_calls, "judge_calls": self.judge_calls,
                "judge_reminders": self.judge_reminders, "by_reference": self.by_reference,
                "reused_answers": self.reused, "kept_answers_scored": self.kept_scored,
                "rescored_answers": self.rescored,
                "records": self.records,
                "mean_scores": self.mean_scores,
                "cost_usd": {"answers": usd(self.answers_cost_usd),
                             "judge": usd(self.judge_cost_usd),
                             "total": usd(self.total_cost_usd)},
                "failures": [f.to_dict() for f in self.failures]}

    def summary(self) -> str:
        """A few lines for a person: what was labelled, the calls, failures and cost."""
        judge = f" (judge: {self.judge})" if self.judge else ""
        lines = [f"labelled {self.labelled} of {plural(self.prompts, 'prompt')} with "
                 f"{', '.join(self.models)}{judge} into {self.out}"
                 + (f"; {self.already_labelled} "
                    f"{'was' if self.already_labelled == 1 else 'were'} already there"
                    if self.already_labelled else "")]
        calls = f"calls: {plural(self.answer_calls, 'answer')}"
        if self.by_reference:
            calls += f" ({self.by_reference} scored by reference)"
        if self.judge:
            calls += f", {self.judge_calls} to the judge"
            if self.judge_reminders:
                calls += f" ({self.judge_reminders} with a format reminder)"
        if self.reused:
            calls += f"; {plural(self.reused, 'answer')} reused from an interrupted run"
        if self.kept_scored:
            calls += (f"; {plural(self.kept_scored, 'answer')} kept unscored from an earlier "
                      "run scored now (not asked for again)")
        if self.rescored:
            calls += (f"; {plural(self.rescored, 'answer')} kept from an earlier run scored "
                      "again, the prompt's reference having changed since (not asked for "
                      "again)")
        lines.append(calls)
        if self.mean_scores:
            scores = ", ".join(f"{m} {s:.3f}" for m, s in self.mean_scores.items())
            earlier = (f" ({self.already_labelled} from an earlier run)"
                       if self.already_labelled else "")
            lines.append(f"mean score over the output's {plural(self.records, 'record')}"
                         f"{earlier}: {scores}")
        lines.append(f"cost: {usd_text(self.answers_cost_usd)} answers + "
                     f"{usd_text(self.judge_cost_usd)} "
                     f"judge = {usd_text(self.total_cost_usd)}")
        if self.failures:
            lines.append(f"failures: {len(self.failures)}")
            # (ids come from the prompts file and messages from upstreams: as text, never as
            # the terminal's control sequences or line breaks)
            lines += [f"  {printable(f.id)} / {f.model} ({f.stage}): {printable(f.message)}"
                      for f in self.failures[:SHOWN_FAILURES]]
            if len(self.failures) > SHOWN_FAILURES:
                lines.append(f"  ... and {len(self.failures) - SHOWN_FAILURES} more, in "
                             f"{jr.journal_path(self.out)}")
        if self.remaining:
            lines.append(f"{plural(self.remaining, 'prompt')} not labelled yet: run the same "
                         "command again to retry (answers already scored are kept)")
        elif self.records:
            out = str(self.out)
            lines.append(f"next: {command('switchpoint', 'fit', out, '--out', 'DIR')} (weights "
                         "of these models alone), or "
                         f"{command('switchpoint', 'add-model', 'MODEL', out, '--weights', 'DIR')}"
                         " for each model (added to the weights in DIR; --out DIR in place of "
                         "--weights starts from the bundled weights)")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Plan:
    """Everything checked, before anything is called."""

    prompts: list[LabelPrompt]
    models: list[str]
    judge: Judge | None
    settings: Settings
    params: dict[str, Any]
    concurrency: int
    key: jr.RunKey
    idle_judge: str | None = None  # given, but every prompt has a reference


def label(prompts: PromptsArg, models: Sequence[str], out: str | Path, *,
          judge: Judge | str | None = None, config: ConfigArg = None,
          gateway: Gateway | None = None, concurrency: int = DEFAULT_CONCURRENCY,
          max_tokens: int | None = None, resume: bool = True,
          env: Mapping[str, str] | None = None, progress: ProgressFn | None = None,
          notes: NoteFn | None = None) -> LabelReport:
    """:func:`alabel` from synchronous code (not from inside a running event loop)."""
    run = alabel(prompts, models, out, judge=judge, config=config, gateway=gateway,
                 concurrency=concurrency, max_tokens=max_tokens, resume=resume, env=env,
                 progress=progress, notes=notes)
    if gateway is not None:
        return gateway._run(run)  # on the loop its sync methods use
    return asyncio.run(run)


async def alabel(prompts: PromptsArg, models: Sequence[str], out: str | Path, *,
                 judge: Judge | str | None = None, config: ConfigArg = None,
                 gateway: Gateway | None = None, concurrency: int = DEFAULT_CONCURRENCY,
                 max_tokens: int | None = None, resume: bool = True,
                 env: Mapping[str, str] | None = None, progress: ProgressFn | None = None,
                 notes: NoteFn | None = None) -> LabelReport:
    """Label ``prompts`` with ``models`` into the routing records file ``out``.

    ``prompts``: a prompts file (see :mod:`switchpoint.labelling.prompts`), an open text
    stream of its lines (``sys.stdin``: read to its end before anything else) or the prompts
    themselves. ``models``: catalog models to label, each called exactly (retried, never
    replaced by a fallback). ``judge``: the catalog model (or :class:`Judge`) that scores
    answers to prompts without a ``reference``. The catalog and the gateway settings come
    from ``gateway`` (one you own) or ``config`` (a file, a mapping or :class:`Settings`; a
    gateway is then built and closed here, reading API keys from ``env``, default the process
    environment). ``concurrency``: upstream calls at once. ``max_tokens``: passed to each
    model. ``resume``: keep what an earlier run of the same command wrote to ``out`` (else
    start over). ``progress(stage, done, total)`` hears about each scored answer; ``notes``
    gets remarks (what is resumed, a dropped half-written line).

    Raises :class:`~switchpoint.errors.LabellingError`, ``ConfigError`` or
    ``InvalidInputError`` before calling anything when the input cannot be used or another run
    is writing ``out`` (see :mod:`~switchpoint.labelling.lock`), and ``LabellingError`` mid-run
    when an upstream reports no token usage (what was finished stays in ``out``). Failed
    answers do not raise: they are in the report.
    """
    if gateway is not None and config is not None:
        raise InvalidInputError("config", "give either a gateway or a config, not both")
    settings = gateway.settings if gateway is not None else _settings(config)
    path = Path(out)
    problem = path_problem(path)
    if problem is not None:  # (a name too long, a NUL: the system refuses even to look)
        raise LabellingError(f"--out cannot be written there: {problem}; give --out a file "
                             "path the system takes", source=path)
    try:
        path = output_target(path)  # a symbolic link: its records go to the file it leads to
    except LinkError as exc:
        raise LabellingError(f"--out {exc}", source=path) from None
    plan = _check(prompts, models, judge, settings, concurrency, max_tokens,
                  keys=env if env is not None else os.environ if gateway is None else None)
    _check_out_apart(prompts, path)
    _check_out_outside(settings.data_dir, path)
    with OutputLock(path):
        if not resume:
            jr.check_discardable(path)
        state = jr.inspect(path, plan.prompts, plan.key) if resume else jr.fresh(path, plan.key)
        _check_judge(plan, state)
        own = gateway is None
        if gateway is None:
            from switchpoint.gateway import Gateway
            from switchpoint.gateway.live import RouterFactory

            # Every call names its model, so nothing is routed: the embedder is never loaded,
            # and the feedback log is not taken up.
            gateway = Gateway(settings, env=env, loader=RouterFactory(warm=False),
                              replays_log=False)
            gateway.start()
        try:
            return await _Run(plan, gateway, state, progress, notes).go(restart=not resume)
        finally:
            if own:
                await gateway.aclose()


def _settings(config: ConfigArg) -> Settings:
    if isinstance(config, Settings):
        return config
    if isinstance(config, Mapping):
        return load_settings(overrides=dict(config), overrides_from=MAPPING_CONFIG)
    return load_settings(config, path_arg="config")


# Checks ----------------------------------------------------------------------------------------


def _check(prompts: PromptsArg, models: Sequence[str], judge: Judge | str | None,
           settings: Settings, concurrency: int, max_tokens: int | None,
           keys: Mapping[str, str] | None) -> _Plan:
    names = _model_names(models)  # (before the prompts are read)
    items = (as_prompts(prompts) if isinstance(prompts, Sequence)
             and not isinstance(prompts, str) else read_prompts(prompts))
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) \
            or not 1 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidInputError("concurrency", f"must be an integer from 1 to "
                                               f"{MAX_CONCURRENCY}{got(concurrency)}")
    if max_tokens is not None and (isinstance(max_tokens, bool)
                                   or not isinstance(max_tokens, int)
                                   or not 1 <= max_tokens <= MAX_TOKENS):
        raise InvalidInputError("max_tokens", "must be an integer from 1 to "
                                              f"{people_number(MAX_TOKENS)} (what a chat "
                                              "request's output cap may be)"
                                              f"{got(max_tokens)}")
    unjudged = [p for p in items if p.reference is None]
    the_judge = Judge(judge) if isinstance(judge, str) else judge
    idle = None  # (none given where one is needed: refused once the journal is read)
    if not unjudged and the_judge is not None:
        idle, the_judge = the_judge.model, None  # every answer is scored by its reference
    _check_catalog(settings, names, the_judge.model if the_judge else None, keys)
    params = {"max_tokens": max_tokens} if max_tokens is not None else {}
    _check_sizes(items, names, the_judge, settings, params, _source(prompts))
    key = jr.RunKey(models=tuple(names), judge=the_judge.model if the_judge else None,
                    rubric=the_judge.rubric_id if the_judge else None, max_tokens=max_tokens)
    return _Plan(items, names, the_judge, settings, params, concurrency, key, idle)


def _check_judge(plan: _Plan, state: jr.Resume) -> None:
    """A run without a judge scores every answer against its prompt's reference: refused,
    before anything is called, when an answer left to score (none kept scored by an earlier
    run, ``state``) is to a prompt without one, naming ``--judge`` and, for a rerun, the judge
    its journal names. One whose every answer left has a reference goes on, the judge the
    journal names kept there (a rerun that needs one again must give it)."""
    if plan.judge is not None:
        return
    left = [p for p in plan.prompts if p.reference is None and p.id not in state.done
            and any((p.id, m) not in state.scored for m in plan.models)]
    if not left:
        return
    lines = listed_names(str(p.line) for p in left)
    which = (f"the prompt of line {lines} has" if len(left) == 1
             else f"the prompts of lines {lines} have")
    named = state.journal_judge
    give = ("give --judge MODEL (a catalog model; it may be one of --models)" if named is None
            else f"give --judge {json_quoted(named)}, the judge the run it resumes named "
                 f"(its journal {quoted_path(state.journal)} says so), or {jr.RESTART_HINT}")
    raise LabellingError(f'{which} no "reference", so a judge must score the answers; {give}')


def _check_sizes(items: Sequence[LabelPrompt], models: Sequence[str], judge: Judge | None,
                 settings: Settings, params: Mapping[str, Any], source: object) -> None:
    """Each prompt's record, as the output will hold it, is a line that ``fit`` and
    ``add-model`` read (and the records, :data:`~switchpoint.records.MAX_LABEL_PLACES`
    labels' places in all): at most :data:`~switchpoint.records.MAX_RECORD_CHARS` characters,
    whatever the scores and costs (JSON writes a quote, a backslash or a control character of
    the prompt as 2 to 6 characters). And the gateway takes each prompt's calls: the question
    to each model, and the judge's request before the answer is added to it, are within
    ``max_request_bytes``."""
    # (imported here: the gateway's package is heavy, and the command line's parser reads this
    # module's bounds for every command)
    from switchpoint.gateway.body_size import check_body_size

    places = len(items) * len(models)
    if places > _records.MAX_LABEL_PLACES:
        raise LabellingError(f"{len(items):,} prompts labelled by {len(models):,} models make "
                             f"records of {places:,} labels' places, more than the "
                             f"{_records.MAX_LABEL_PLACES:,} a records file may make, so fit "
                             "could not read them; label the prompts in smaller files, or "
                             "fewer models at a time (nothing was called)", source=source)
    chars = jr.record_chars(models)
    longest = max(models, key=len)
    for item in items:
        size = chars(item)
        if size > MAX_RECORD_CHARS:
            raise LabellingError(f"the record of this prompt would be a line of {size:,} "
                                 "characters as the output writes it (JSON escapes each quote, "
                                 "backslash and control character), over the "
                                 f"{MAX_RECORD_CHARS:,} a line of routing records may hold, so "
                                 "fit could not read it; shorten the prompt (nothing was "
                                 "called)", source=source, line=item.line)
        calls = [("its question", longest, [{"role": "user", "content": item.prompt}], params)]
        if judge is not None and item.reference is None:
            calls.append(("the judge's request", judge.model,
                          judge.messages(item.prompt, ""), judge.params))
        for whose, model, messages, extra in calls:
            try:
                check_body_size({"model": model, "messages": messages, **extra},
                                settings.max_request_bytes, "Shorten the prompt")
            except InvalidInputError as exc:
                raise LabellingError(f"{whose} to {json_quoted(model)} would be too large for the "
                                     f"gateway: {exc.reason} (nothing was called)",
                                     source=source, line=item.line) from None


def _source(prompts: PromptsArg) -> object:
    """What errors name as where ``prompts`` came from."""
    if isinstance(prompts, (str, Path)):
        return Path(prompts)
    return "prompts" if isinstance(prompts, Sequence) else STDIN


def _check_out_apart(prompts: PromptsArg, out: Path) -> None:
    """``out``, its journal and its lock must not be the prompts file itself (or the file
    standard input was redirected from): a run appends records there, ``--restart`` deletes
    them, and a run that completes deletes the journal, so any of them being the prompts would
    lose the prompts (their references and the prompts that failed are in no record)."""
    if isinstance(prompts, (str, Path)):
        source: str | Path = Path(prompts)
        which = "the prompts file itself"
    elif isinstance(prompts, Sequence):
        return
    else:
        try:  # (the file a shell redirected standard input from, if any)
            source = f"/dev/fd/{prompts.fileno()}"
        except (OSError, ValueError):  # (a stream of no file: io.StringIO)
            return
        which = "the file the prompts are read from (stdin)"
    for what, path in (("--out", out), ("--out's journal", jr.journal_path(out)),
                       ("--out's mark", jr.done_path(out)), ("--out's lock", lock_path(out))):
        if same_file(source, path):
            raise LabellingError(f"{what} ({quoted_path(path)}) is {which}; a "
                                 "run writes its records there (and --restart discards it), "
                                 "which would lose the prompts: write the records to another "
                                 "--out",
                                 source=_source(prompts))


def _check_out_outside(data_dir: str, out: Path) -> None:
    """``out`` (and so its journal, mark and lock beside it) must not be in ``data_dir``: the
    run's gateway keeps its state there (the request log's database and its journal files,
    sessions.db, keys.db, the lock), created as the run starts, so a record file named as one
    of them would be written into a database (the records lost, the database at risk), and
    the service's pruning and moves of its state would meet files it does not know."""
    if within(out, data_dir):
        raise LabellingError(f"--out is inside data_dir ({quoted_path(data_dir)}), where the "
                             "gateway the run calls through keeps its state (its databases "
                             "and their journals, its lock): write the records outside it, "
                             "e.g. --out records.jsonl", source=out)


def _model_names(models: Sequence[str]) -> list[str]:
    """The models to label, a list or a comma-separated string (read as every list given as
    text is, :func:`~switchpoint._lists.comma_items`: an empty item, ``a,,b``, refused naming
    its place), each a catalog model's name, named once."""
    if isinstance(models, str):
        try:
            models = comma_items(models, "model name", "gpt-4o-mini,gpt-4o", none_ok=True)
        except ValueError as exc:
            raise InvalidInputError("models", str(exc)) from None
    names = list(models)
    if not names:
        raise InvalidInputError("models", "give at least one catalog model to label")
    # (each refusal names the item's place, as every list's does: --models (item 3): ...)
    seen: dict[str, int] = {}
    for place, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise invalid_at("models", f"models[{place}]",
                             f"{json_quoted(name)} is not a model name")
        # (its records' model, which fit makes a weights model: one a catalog can hold)
        if (problem := catalog_name_problem(name)) is not None:
            raise invalid_at("models", f"models[{place}]", f"{problem}; name a catalog model")
        if name in seen:
            raise invalid_at("models", f"models[{place}]",
                             f"{json_quoted(name, 80)} is listed twice (as item "
                             f"{seen[name] + 1} too); name each model once")
        seen[name] = place
    return names


def _check_catalog(settings: Settings, models: list[str], judge: str | None,
                   keys: Mapping[str, str] | None) -> None:
    """Every model (and the judge) is a catalog model with prices, and its key is set."""
    where = (f"the config file {settings.source_path}" if settings.source_path
             else "the config (--config FILE)")
    if settings.models is None:
        raise ConfigError("models", f"{where} has no catalog (models:), so there is no model to "
                                    "call; list the models to label there, each with where it "
                                    "is served and its prices, e.g.\n  models:\n    - {name: "
                                    "my-model, base_url: \"http://127.0.0.1:8000/v1\", "
                                    "api_key_env: MY_KEY, input_per_mtok: 0.2, "
                                    "output_per_mtok: 0.6}")
    index = {m.name: i for i, m in enumerate(settings.models)}
    catalog = listed_names(index, quoted=True)
    for role, names in (("models", models), ("judge", [judge] if judge else [])):
        unknown = [n for n in names if n not in index]
        if unknown:
            shown = listed_names(unknown, quoted=True)
            raise InvalidInputError(role, f"{shown} {'is' if len(unknown) == 1 else 'are'} not "
                                          f"in the catalog of {where} (it has {catalog}); "
                                          "labelling calls catalog models only")
    for name in dict.fromkeys([*models, *([judge] if judge else [])]):
        i = index[name]
        entry = settings.models[i]
        what = "the judge's" if name == judge and name not in models else "its answers'"
        missing = [k for k in ("input_per_mtok", "output_per_mtok") if getattr(entry, k) is None]
        if missing:
            raise ConfigError(f"models[{i}].{missing[0]}",
                              f"{json_quoted(name)} has no {' or '.join(missing)}, so {what} cost "
                              f"is unknown; add both prices (USD per million tokens; 0 for a free "
                              f"model) to it in {where}")
        if keys is not None and entry.api_key_env and not keys.get(entry.api_key_env):
            raise ConfigError(f"models[{i}].api_key_env",
                              f"${entry.api_key_env} (the API key of {json_quoted(name)}) is not "
                              "set; export it before labelling")


# The run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Unit:
    prompt: LabelPrompt
    model: str
    kept: jr.Kept | None = None  # the answer an earlier run got: only judged
    rescore: bool = False  # (its score was made against a reference that changed since)


class _Run:
    def __init__(self, plan: _Plan, gateway: Gateway, state: jr.Resume,
                 progress: ProgressFn | None, notes: NoteFn | None) -> None:
        self.plan = plan
        self.gateway = gateway
        self.state = state
        self.progress = progress
        self.notes = notes
        self.report = LabelReport(out=state.out, prompts=len(plan.prompts),
                                  models=list(plan.models),
                                  judge=plan.judge.model if plan.judge else None,
                                  score_sums=dict(state.score_sums))
        self.scored: dict[str, dict[str, jr.Scored]] = {}
        self.missing: dict[str, int] = {}
        self.done = 0
        self.total = 0
        self.stage = ""
        self.records: jr.LineWriter | None = None
        self.journal: jr.LineWriter | None = None

    def note(self, text: str) -> None:
        self.report.notes.append(text)
        if self.notes is not None:
            self.notes(text)

    async def go(self, *, restart: bool) -> LabelReport:
        plan, state, report = self.plan, self.state, self.report
        if restart:
            for path in (state.out, state.journal, jr.done_path(state.out)):
                path.unlink(missing_ok=True)
        state.apply()
        for text in state.notes:
            self.note(text)
        if plan.idle_judge is not None:
            self.note(f"every prompt has a reference, so the judge {json_quoted(plan.idle_judge)} "
                      "is not called")
        todo = [p for p in plan.prompts if p.id not in state.done]
        report.already_labelled = len(plan.prompts) - len(todo)
        if not todo:
            self.note(f"all {len(plan.prompts)} prompts are already labelled in {state.out} "
                      "(--restart labels them again)")
            self._finish()
            return report
        if report.already_labelled:
            self.note(f"{report.already_labelled} of {len(plan.prompts)} prompts are already "
                      f"labelled in {state.out}; labelling the other {len(todo)}")
        self.records = jr.LineWriter(state.out)
        self.journal = jr.LineWriter(state.journal, own=True)
        # The journal marks the output as this command's now: a finished run's mark would no
        # longer match it.
        jr.done_path(state.out).unlink(missing_ok=True)
        try:
            if state.header_needed:  # (none yet, or the judge it named none of)
                self.journal.append(plan.key.header())
            units = self._units(todo)
            await self._work(units)
        finally:
            self.records.close()
            self.journal.close()
        if report.complete:
            self._finish()
        return report

    def _finish(self) -> None:
        """Every prompt is in the output: mark it as this command's finished output, then
        remove the journal (in that order, so the output is never left without a mark). A
        complete output found without a journal or a mark is someone else's: it gets none."""
        if self.state.out.exists() and jr.written_here(self.state.out):
            jr.mark_done(self.state.out, self.state.key)
        self.state.journal.unlink(missing_ok=True)

    def _units(self, todo: list[LabelPrompt]) -> list[_Unit]:
        """The answers to ask for; prompts already scored for every model are written now."""
        units = []
        for prompt in todo:
            scored = {m: self.state.scored[(prompt.id, m)] for m in self.plan.models
                      if (prompt.id, m) in self.state.scored}
            self.report.reused += len(scored)
            self.scored[prompt.id] = scored
            self.missing[prompt.id] = len(self.plan.models) - len(scored)
            if not self.missing[prompt.id]:
                self._write_record(prompt)
            units += [_Unit(prompt, m, self.state.kept.get((prompt.id, m)),
                            (prompt.id, m) in self.state.rescored)
                      for m in self.plan.models if m not in scored]
        return units

    async def _work(self, units: list[_Unit]) -> None:
        if not units:
            return
        self.total = len(units)
        n = len({u.prompt.id for u in units})
        judge = f", judged by {self.plan.judge.model}" if self.plan.judge else ""
        self.stage = (f"labelling {plural(n, 'prompt')} with "
                      f"{plural(len(self.plan.models), 'model')} "
                      f"({plural(self.total, 'answer')}{judge})")
        if self.progress is not None:
            self.progress(self.stage, 0, self.total)
        queue: asyncio.Queue[_Unit] = asyncio.Queue()
        for unit in units:
            queue.put_nowait(unit)
        workers = [asyncio.create_task(self._worker(queue))
                   for _ in range(min(self.plan.concurrency, len(units)))]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                error = task.exception()
                if error is not None:
                    raise error
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)

    async def _worker(self, queue: asyncio.Queue[_Unit]) -> None:
        while True:
            try:
                unit = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await self._label(unit)
            self.done += 1
            if self.progress is not None:
                self.progress(self.stage, self.done, self.total)

    async def _label(self, unit: _Unit) -> None:
        prompt, model = unit.prompt, unit.model
        if unit.kept is not None:  # paid for by an earlier run: its cost is counted there
            if unit.rescore:
                self.report.rescored += 1
            else:
                self.report.kept_scored += 1
            # (read now, not held from the start: a rerun holds the answers it judges at once)
            answer, cost = self.state.answer((prompt.id, model), unit.kept), unit.kept.cost_usd
        else:
            try:
                reply = await self.gateway.acomplete(
                    [{"role": "user", "content": prompt.prompt}], model=model, exact=True,
                    **self.plan.params)
            except GatewayError as exc:
                self._fail(unit, "answer", _message(exc))
                return
            cost = self._cost(reply, model, "its answers")
            self.report.answer_calls += 1
            self.report.answers_cost_usd += cost
            answer = _content(reply)
        if prompt.reference is not None:
            self.report.by_reference += 1
            # (its answer kept with the score, unless the journal holds it already: a rerun
            # after the reference changes scores it again)
            self._scored(unit, reference_score(answer, prompt.reference), cost, "reference", 0.0,
                         answer=answer if unit.kept is None else None)
            return
        judge = self.plan.judge
        assert judge is not None
        if lone_surrogate(answer):
            self._fail(unit, "answer", f"the answer {LONE_SURROGATE}, so it cannot be sent to "
                                       "the judge")
            return
        # Journalled before it is judged, so that a run stopped before it is scored (or whose
        # judge fails) leaves it to the next, which never pays for it twice.
        if unit.kept is None:
            line = jr.answer_line(prompt, model, answer, cost)
            if line is not None:  # (else too long for a line: a rerun asks for it again)
                self._journal(line)
        errors: list[JudgeReplyError] = []
        judge_cost = 0.0
        messages = judge.messages(prompt.prompt, answer)
        for attempt in range(2):
            if attempt:
                messages = judge.retry_messages(prompt.prompt, answer, errors[-1])
            try:
                verdict = await self.gateway.acomplete(messages, model=judge.model, exact=True,
                                                       **dict(judge.params))
            except (GatewayError, InvalidInputError) as exc:  # (an answer too long to send)
                failed = _message(exc)
                if errors:  # (the reminder's call: the reply that needed it comes first)
                    failed = f"{unreadable_message(errors)}; then the reminder failed: {failed}"
                self._fail(unit, "judge", failed)
                return
            spent = self._cost(verdict, judge.model, "the judge's calls")
            self.report.judge_calls += 1
            self.report.judge_reminders += attempt
            self.report.judge_cost_usd += spent
            judge_cost += spent
            try:
                score = judge.parse(_content(verdict))
            except JudgeReplyError as exc:
                errors.append(exc)
                continue
            self._scored(unit, score, cost, "judge", judge_cost)
            return
        self._fail(unit, "judge", unreadable_message(errors))

    def _cost(self, reply: ChatCompletion, model: str, what: str) -> float:
        cost = reply.switchpoint.cost_usd
        if cost is None:
            raise LabellingError(
                f"{json_quoted(model)} answered without a usable token usage (none, or counts "
                f"that are not whole numbers of tokens >= 0), so {what} cost is unknown and no "
                "record can be written; switchpoint prices each answer from the upstream's usage "
                "(prompt_tokens, completion_tokens) at the catalog's prices, so point "
                "this model's base_url in the catalog at an endpoint that returns usage with "
                f"each answer. What was finished is kept in {self.state.out}; rerun to resume")
        return float(cost)

    def _scored(self, unit: _Unit, score: float, cost: float, by: str,
                judge_cost: float, *, answer: str | None = None) -> None:
        scored = jr.Scored(id=unit.prompt.id, model=unit.model, digest=unit.prompt.digest,
                           score=score, cost_usd=cost, by=by, judge_cost_usd=judge_cost,
                           reference_digest=(unit.prompt.reference_digest if by == "reference"
                                             else None))
        self._journal(jr.scored_line(scored, answer))
        self.scored[unit.prompt.id][unit.model] = scored
        self.missing[unit.prompt.id] -= 1
        if not self.missing[unit.prompt.id]:
            self._write_record(unit.prompt)

    def _fail(self, unit: _Unit, stage: str, message: str) -> None:
        self._journal(jr.failure_line(unit.prompt, unit.model, stage, message))
        self.report.failures.append(LabelFailure(unit.prompt.id, unit.model, stage, message))

    def _journal(self, line: Mapping[str, Any]) -> None:
        assert self.journal is not None
        self.journal.append(line)

    def _write_record(self, prompt: LabelPrompt) -> None:
        assert self.records is not None
        scored = self.scored[prompt.id]
        self.records.append(jr.record_line(prompt, scored, self.plan.models))
        self.report.labelled += 1
        for model, item in scored.items():
            self.report.score_sums[model] = self.report.score_sums.get(model, 0.0) + item.score


def _content(reply: ChatCompletion) -> str:
    """The answer's text ("" when the model gave none)."""
    try:
        content = reply["choices"][0]["message"].get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return ""



def _message(exc: SwitchpointError) -> str:
    return " ".join(str(exc).split())
