"""Experiments created at run time (:meth:`Gateway.create_ab_test
<switchpoint.gateway.Gateway.create_ab_test>`, ``POST /v1/router/experiments``), beside the
config's, kept in the store so that a restart or a reload loses none.

A run-time experiment is an experiment as the config would write it (arms, tenants, min_n),
made of two strategies and B's share of the traffic (arms ``a`` and ``b``), or of arms given as
the config gives them. The whole set is checked by the config's own rules
(:func:`switchpoint.config.check_experiments`), the config's experiments first and those made
at run time after them in the order they were made (the order requests join them in); then the
experiment is kept in the store (``runtime_experiments``) and goes live with a new snapshot,
as after a reload, but made of copies of the live routers (:meth:`RouterState.copied
<switchpoint.gateway.live.RouterState.copied>`, :meth:`~switchpoint.gateway.live.RouterState.
arm_router`): no weights are read, checked from disk or hashed again. Ending one keeps its
row, its decisions and its report.

A reload or a start whose config does not fit a running run-time experiment (it lists one of
the same name, drops a tenant, policy or model the run-time one names, or takes its tenants
first) is refused naming it, and the running config stays: nothing made at run time is dropped
silently. End the run-time one first (while no service runs, ``switchpoint experiments end``
does, see :func:`end_kept`), or change the config.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from switchpoint._args import expect
from switchpoint._messages import (
    command,
    entry_param,
    invalid_at,
    json_quoted,
    key_path,
    listed_names,
    named_path,
    reason,
)
from switchpoint._numbers import checked_number
from switchpoint.config import ModelEntry, Settings, check_experiments
from switchpoint.errors import ConfigError, ConflictError, InvalidInputError, NotFoundError
from switchpoint.gateway.experiments import when
from switchpoint.gateway.kept import turn, written
from switchpoint.gateway.registered_models import (
    held_named,
    kept_models,
    registered_fault,
    with_registered,
)
from switchpoint.learning.config import (
    MAX_EXPERIMENTS,
    ArmConfig,
    ExperimentConfig,
    check_name,
)
from switchpoint.store import SQLiteStore
from switchpoint.store.learning import (
    LearningReader,
    RuntimeExperimentEnd,
    RuntimeExperimentRecord,
    StoredExperiment,
)
from switchpoint.store.migrations import ENDED_KEPT
from switchpoint.store.removals import EXPERIMENT, Removal, make_again

if TYPE_CHECKING:
    from switchpoint.gateway.learning import GatewayLearning
    from switchpoint.gateway.live import RouterState

log = logging.getLogger("switchpoint.gateway")

#: What ``experiments list`` says of a kept run-time experiment whose row cannot be read.
UNREADABLE = "unreadable"
#: The strategies an arm of :meth:`~switchpoint.gateway.Gateway.create_ab_test` may name, as
#: the arm settings each stands for: the configured routing, or quality first (λ 0: the
#: expected error alone decides, whatever a model costs).
STRATEGIES: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "cost_optimized": MappingProxyType({}),
    "quality_first": MappingProxyType({"cost_weight": 0.0})})
#: What a strategy given as a mapping may set (its share of the traffic is ``split``'s).
ARM_SETTINGS = ("policy", "cost_weight", "models")
#: The argument keyed by names the caller chose: an error inside it names the arm's path.
ARMS = frozenset({"arms"})


def end_command(name: str) -> str:
    """The command line that ends run-time experiment ``name`` while the service is stopped,
    quoted for a shell."""
    return command("switchpoint", "experiments", "end", name)


def experiment_path(name: str) -> str:
    """The path of experiment ``name`` (which ``DELETE`` ends, ``GET`` reports), written as it
    is sent (see :func:`~switchpoint._messages.named_path`)."""
    return named_path("/v1/router/experiments", name)


def end_hint(name: str) -> str:
    """How run-time experiment ``name`` is ended, for the errors that say so: by the service
    (or the Python program) that runs it, or from the command line while none runs, each
    written so that it names it as it is sent."""
    return (f"Gateway.end_ab_test or DELETE {experiment_path(name)} while the service runs, "
            f"{end_command(name)} while it is stopped")


@dataclass(frozen=True)
class ABTest:
    """An experiment created at run time: pass it (or its ``name``) as ``ab_test=`` to
    :meth:`Gateway.route <switchpoint.gateway.Gateway.route>`. ``arms`` maps each arm's name
    (``a`` and ``b`` for one made of two strategies) to its settings (weight, policy,
    cost_weight, models); ``split`` is B's share of the traffic (None for one made of arms);
    ``tenants`` who takes part (None: every caller)."""

    name: str
    arms: Mapping[str, ArmConfig] = field(hash=False)
    split: float | None
    tenants: tuple[str, ...] | None
    min_n: int
    created_at: float

    def __reduce__(self) -> tuple[Any, ...]:
        # A mappingproxy does not pickle: the arms travel as a dict, read-only again on arrival.
        return (_ab_test, (self.name, dict(self.arms), self.split, self.tenants, self.min_n,
                           self.created_at))

    @classmethod
    def of(cls, name: str, experiment: ExperimentConfig) -> ABTest:
        assert experiment.created_at is not None
        return cls(name, MappingProxyType(dict(experiment.arms)), experiment.split,
                   None if experiment.tenants is None else tuple(experiment.tenants),
                   experiment.min_n, experiment.created_at)


def _ab_test(name: str, arms: dict[str, ArmConfig], split: float | None,
             tenants: tuple[str, ...] | None, min_n: int, created_at: float) -> ABTest:
    """An :class:`ABTest` as a pickle (or a deep copy) carries it."""
    return ABTest(name, MappingProxyType(arms), split, tenants, min_n, created_at)


def made_experiment(name: object, strategy_a: object = None, strategy_b: object = None,
                    split: object = None, *, arms: object = None, tenants: object = None,
                    min_n: object = None) -> tuple[str, ExperimentConfig, float | None]:
    """The experiment the arguments of ``create_ab_test`` describe, checked alone (the whole
    set is checked as it joins the others): two strategies (``"cost_optimized"``,
    ``"quality_first"`` or a mapping of ``policy``, ``cost_weight`` and ``models``;
    ``cost_optimized`` and ``quality_first`` by default) with B's share of the traffic
    (``split``, 0.5 by default), or ``arms`` as the config gives them. A bad one is an
    :class:`~switchpoint.errors.InvalidInputError` naming the argument. Returns the name, the
    experiment and B's share of the traffic (None: made of arms)."""
    expect("name", name, str, "the experiment's name (a string)")
    assert isinstance(name, str)
    try:
        check_name(name, "an experiment's name")
    except ValueError as exc:
        raise InvalidInputError("name", f"{exc} (requests name it as their ab_test, and the "
                                        "report's path holds it)") from None
    by_strategies = arms is None
    data: dict[str, Any] = {}
    share: float | None = None
    if not by_strategies:
        if strategy_a is not None or strategy_b is not None or split is not None:
            raise InvalidInputError("arms", "give either arms (each with its weight) or "
                                            "strategy_a, strategy_b and split, not both")
        data["arms"] = arms
    else:
        share = 0.5 if split is None else _split(split)
        # (a default for a strategy left out alone: an empty one, {}, is the configured
        # routing, and "" or 0 no strategy at all)
        data["arms"] = {"a": {**_strategy("strategy_a", "cost_optimized" if strategy_a is None
                                          else strategy_a), "weight": 1.0 - share},
                        "b": {**_strategy("strategy_b", "quality_first" if strategy_b is None
                                          else strategy_b), "weight": share}}
    if tenants is not None:
        data["tenants"] = list(tenants) if isinstance(tenants, tuple) else tenants
    if min_n is not None:
        data["min_n"] = min_n
    try:
        experiment = ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise _field_error(exc.errors()[0], by_strategies) from None
    return name, experiment, share


def _strategy(name: str, value: object) -> dict[str, Any]:
    """The arm settings strategy ``value`` (argument ``name``) stands for."""
    if isinstance(value, str):
        if value in STRATEGIES:
            return dict(STRATEGIES[value])
        raise InvalidInputError(name, f"unknown strategy {json_quoted(value)}; use "
                                      "\"cost_optimized\" (the configured routing), "
                                      "\"quality_first\" (λ 0: quality first) or a mapping of "
                                      "an arm's policy, cost_weight and models")
    if isinstance(value, Mapping):
        for key in value:
            if key not in ARM_SETTINGS:
                raise invalid_at(name, f"{name}.{str(key)[:64]}", (
                    "is not an arm setting; a strategy sets policy, cost_weight or models "
                    "(its share of the traffic is split's)"))
        return dict(value)
    raise InvalidInputError(name, "must be \"cost_optimized\", \"quality_first\" or a mapping "
                                  f"of policy, cost_weight and models; got "
                                  f"{type(value).__name__}")


def _split(value: object) -> float:
    """``value`` as B's share of the traffic: a number between 0 and 1, neither included,
    read as the library reads a number (:func:`~switchpoint._numbers.checked_number`: a NumPy
    scalar, a ``Fraction`` or a ``Decimal`` too, never a boolean)."""
    share = checked_number("split", value)
    if share is None:
        raise InvalidInputError("split", "must be a number, B's share of the traffic between "
                                         f"0 and 1 (0.5 splits it evenly); got "
                                         f"{type(value).__name__}")
    if 0.0 < share < 1.0:  # (NaN is not)
        return share
    raise InvalidInputError("split", f"must be between 0 and 1, neither included, got "
                                     f"{json_quoted(value)}: it is B's share of the traffic, "
                                     "and at 0 B would get none (at 1, A none), so nothing "
                                     "would be compared; 0.5 splits it evenly, 0.3 sends 30% "
                                     "to B")


def _field_error(err: Any, by_strategies: bool) -> InvalidInputError:
    """A pydantic error of the experiment made of the arguments, naming the argument."""
    loc = tuple(err["loc"])
    known: Sequence[str] = ()
    if loc[:1] == ("arms",) and len(loc) > 2:
        known = [f for f in ArmConfig.model_fields if not by_strategies or f in ARM_SETTINGS]
        if by_strategies:
            loc = (f"strategy_{loc[1]}", *loc[2:])
    path = key_path(loc, "arms")
    return invalid_at(entry_param(str(loc[0]) if loc else "arms", path, ARMS), path,
                      reason(err, known))


def _request_error(exc: ConfigError, name: str, by_strategies: bool
                   ) -> InvalidInputError | ConfigError:
    """A rule of the experiments broken by the one being made (``exc`` names it as the config
    would: ``experiments.<name>...``), naming the argument instead; any other, as it is."""
    prefix = f"experiments.{name}"
    if exc.key != prefix and not exc.key.startswith(prefix + "."):
        return exc
    path = exc.key[len(prefix) + 1:] or "tenants"  # (the whole of it: whom it takes)
    if by_strategies and path in ("arms.a.weight", "arms.b.weight"):
        path = "split"  # (the arms' weights are what it makes of the split)
    elif by_strategies and path.startswith(("arms.a", "arms.b")):
        path = f"strategy_{path[5]}{path[6:]}"
    return invalid_at(entry_param(path.split(".")[0].split("[")[0], path, ARMS), path,
                      exc.reason)


class RuntimeExperiments:
    """The experiments created at run time: those running (in the order they were made) and
    those ended that the store keeps; how they join the config's (:meth:`extend`, one of the
    router state's ``extends``); creating and ending one. A gateway's own."""

    def __init__(self, state: RouterState, store: SQLiteStore | None,
                 learning: GatewayLearning,
                 held: Callable[[Settings], Sequence[ModelEntry]] = lambda _: ()) -> None:
        self.state = state
        self.store = store
        self.learning = learning
        # The models registered at run time that settings keep from being served (see
        # registered_models.held_out), which a running experiment's arm may not name.
        self.held = held
        # Each replaced whole (never changed in place) as one is made or ends.
        self.running: Mapping[str, ExperimentConfig] = {}
        self.ended: Mapping[str, tuple[ExperimentConfig, float]] = {}
        # Running ones the store keeps that cannot be read (skipped, with a warning): when
        # each was made. Their names stay taken until the command line ends them.
        self.unreadable: Mapping[str, float] = {}
        self._lock = threading.Lock()  # one creation, end or promotion at a time
        state.extends.append(self.extend)

    @property
    def changing(self) -> threading.Lock:
        """Held while the run-time experiments change (one is made or ends, from the check to
        its snapshot gone live) and while a run-time experiment's arm is promoted, so a promotion
        never lands on one ending meanwhile."""
        return self._lock

    def open(self) -> None:
        """Read what the store keeps (it is open, and the promotions read): an experiment
        takes no promotion kept from before it was made (an earlier one's of its name). A
        running one whose row cannot be read at all is skipped, with a warning naming it."""
        reader = self.learning.reader
        if reader is None:
            return
        running: dict[str, ExperimentConfig] = {}
        ended: dict[str, tuple[ExperimentConfig, float]] = {}
        unreadable: dict[str, float] = {}
        for row in reader.runtime_experiments():
            if row.problem is not None:
                if row.ended is None:
                    _warn_unreadable(row)
                    unreadable[row.name] = row.created
                continue
            experiment = _stored(row)
            if row.ended is None:
                running[row.name] = experiment
            else:
                ended[row.name] = (experiment, row.ended)
        promotions = reader.promotions()
        for name, experiment in running.items():
            kept = promotions.get(name)
            if kept is not None and kept[1] < row_created(experiment):
                self.learning.forget_promotion(name)
        self.running, self.ended, self.unreadable = running, ended, unreadable

    def extend(self, settings: Settings) -> Settings:
        """``settings`` (read from the config) with the running run-time experiments after
        the config's (see :meth:`merged`); refused when an arm of one names a registered model
        they no longer serve (see :func:`~switchpoint.gateway.registered_models.held_named`)."""
        listed = {m.name for m in settings.models or []}
        lost = {m.name: m for m in self.held(settings) if m.name not in listed}
        for name, experiment in self.running.items():
            for arm, config in experiment.arms.items():
                for i, model in enumerate(config.models or ()):
                    if model in lost:
                        raise held_named(
                            f"experiments.{name}.arms.{arm}.models[{i}]", lost[model],
                            f"experiment {json_quoted(name, 100)}, created at run time, would "
                            "change its arms midway", f"end it first ({end_hint(name)})")
        return self.merged(settings, self.running)

    @staticmethod
    def merged(settings: Settings, running: Mapping[str, ExperimentConfig],
               making: str | None = None) -> Settings:
        """``settings`` with its own run-time experiments replaced by ``running``, after the
        config's, the whole set checked by the config's rules; a :class:`ConfigError` naming
        the experiment at fault, and for one made at run time before, how to end it
        (``making``: the one being made, whose error is the rule's alone)."""
        config = {n: e for n, e in settings.experiments.items() if e.created_at is None}
        for name, experiment in running.items():
            if name in config:
                raise ConfigError(f"experiments.{name}", (
                    f"an experiment named {json_quoted(name, 100)} was created at run time "
                    f"({when(row_created(experiment))}) and is running, so the config may "
                    "not list one of that name: rename the config's, or end the run-time one "
                    f"first ({end_hint(name)}), then reload (or start)"))
        if len(config) + len(running) > MAX_EXPERIMENTS:
            raise ConfigError("experiments", (
                f"the config lists {len(config)} experiments and {len(running)} more were "
                f"created at run time, over the {MAX_EXPERIMENTS} there may be in all: list "
                f"fewer, or end run-time ones first ({end_hint('NAME')})"))
        merged = settings.model_copy(update={"experiments": {**config, **running}})
        try:
            check_experiments(merged)
        except ConfigError as exc:
            made = max((n for n in running if exc.key == f"experiments.{n}"
                        or exc.key.startswith(f"experiments.{n}.")), key=len, default=None)
            if made is None or made == making:
                raise
            raise ConfigError(exc.key, (
                f"{exc.reason} ({json_quoted(made, 100)} was created at run time: keep in "
                f"the config what it names, or end it first ({end_hint(made)}))"),
                              problem=exc.problem) from None
        return merged

    def create(self, name: object, strategy_a: object = None, strategy_b: object = None,
               split: object = None, *, arms: object = None, tenants: object = None,
               min_n: object = None) -> ABTest:
        """Make an experiment (see :func:`made_experiment`), checked with the others by the
        config's rules, kept in the store, then live. Nothing changes when it is refused."""
        name, experiment, share = made_experiment(name, strategy_a, strategy_b, split,
                                                  arms=arms, tenants=tenants, min_n=min_n)
        by_strategies = arms is None
        # A name taken is said before the creation waits its turn (or is refused as one too
        # many waiting for the store's writer), then checked again in its turn.
        self._check_free(self.state.live().settings, name)  # (503 while the router loads)
        with turn(self.store, self._lock, "the experiment", "nothing was created"):
            settings = self.state.live().settings
            self._check_free(settings, name)
            made = experiment.made_at_run_time(time.time(), share)
            running = {**self.running, name: made}
            try:  # the rules of the whole set, before anything changes
                self.merged(settings, running, name)
            except ConfigError as exc:
                raise _request_error(exc, name, by_strategies) from None
            self.learning.check_writable("the experiment", "nothing was created")
            record = RuntimeExperimentRecord(
                name, row_created(made), json.dumps(made.model_dump(mode="json"),
                                                    separators=(",", ":")), made.split)

            def keep() -> None:
                written(self.store, record, "the experiment", "nothing was created")
                # A promotion of an earlier experiment of this name is not this one's.
                self.learning.forget_promotion(name)
                self.running = running

            try:
                self.state.rebuild(lambda s: self.merged(s, running, name), keep,
                                   keeping=f"the creation of experiment {json_quoted(name, 100)}",
                                   router_of=self.state.copied)
            except ConfigError as exc:
                raise _request_error(exc, name, by_strategies) from None
        return ABTest.of(name, made)

    def _check_free(self, settings: Settings, name: str) -> None:
        shown = json_quoted(name, 100)
        configured = settings.experiments.get(name)
        if configured is not None and configured.created_at is None:
            raise ConflictError(f"name: experiment {shown} is in the config; pick another "
                                "name (or change that one in the config and reload)",
                                param="name")
        if name in self.running:
            raise ConflictError(f"name: experiment {shown} was created at run time already "
                                f"({when(row_created(self.running[name]))}) and is running; "
                                f"pick another name, or end that one first "
                                f"({end_hint(name)})", param="name")
        if name in self.unreadable:
            raise ConflictError(f"name: experiment {shown} was created at run time "
                                f"({when(self.unreadable[name])}) and data_dir keeps it, but "
                                "it cannot be read, so it does not run; pick another name, "
                                f"or end it with the service stopped "
                                f"({end_command(name)})", param="name")
        if name in self.ended:
            raise ConflictError(f"name: experiment {shown}, created at run time, ended at "
                                f"{when(self.ended[name][1])}; its name stays taken while "
                                "the store keeps it (its report reads the decisions logged "
                                "under that name): pick another name", param="name")
        reader = self.learning.reader
        logged = {} if reader is None else reader.experiment(name)
        earlier = sum(int(arm["decisions"]) for arm in logged.values())
        if earlier:
            raise ConflictError(f"name: {earlier} decision{'s' * (earlier != 1)} of an earlier "
                                f"experiment {shown} (one the config listed, or one created "
                                "at run time that the store no longer keeps) are logged under "
                                "that name, and a report reads an experiment's decisions by "
                                "its name: pick another name", param="name")
        if len(settings.experiments) >= MAX_EXPERIMENTS:
            raise ConflictError(f"name: there are {len(settings.experiments)} experiments "
                                "already (the config's and those created at run time), the "
                                f"most there may be; end one created at run time first "
                                f"({end_hint('NAME')})", param="name")

    def end(self, name: object) -> str:
        """End run-time experiment ``name`` (or the one an :class:`ABTest` describes): it
        takes no more traffic, and its row, decisions and report stay. Returns its name."""
        expect("name", name, (str, ABTest), "the name of an experiment created at run time, "
                                            "or the ABTest create_ab_test returned")
        made_at = name.created_at if isinstance(name, ABTest) else None
        name = name.name if isinstance(name, ABTest) else name
        assert isinstance(name, str)
        shown = json_quoted(name, 100)
        # One not running is said before the end waits its turn (or is refused as one too
        # many waiting for the store's writer), then checked again in its turn.
        self._running(name, made_at, shown)
        with turn(self.store, self._lock, "the end of the experiment", "it still runs"):
            experiment = self._running(name, made_at, shown)
            self.learning.check_writable("the end of the experiment", "it still runs")
            running = {n: e for n, e in self.running.items() if n != name}
            ended_at = time.time()
            kept = [*((n, e) for n, e in self.ended.items() if n != name),
                    (name, (experiment, ended_at))]
            kept.sort(key=lambda item: row_created(item[1][0]))

            def keep() -> None:
                written(self.store, RuntimeExperimentEnd(name, ended_at),
                        "the end of the experiment", "it still runs",
                        removal=Removal(EXPERIMENT, name, row_created(experiment),
                                        ended_at))
                self.running = running
                self.ended = dict(kept[-ENDED_KEPT:])  # (as the store keeps them)

            self.state.rebuild(lambda s: self.merged(s, running), keep,
                               keeping=f"the end of experiment {shown}",
                               router_of=self.state.copied)
        return name

    def _running(self, name: str, made_at: float | None, shown: str) -> ExperimentConfig:
        """Run-time experiment ``name`` running (made at ``made_at``, if given), else why
        not (raised: see :meth:`_not_running`)."""
        experiment = self.running.get(name)
        if experiment is None or made_at not in (None, experiment.created_at):
            self._not_running(name, shown)
        assert experiment is not None
        return experiment

    def _not_running(self, name: str, shown: str) -> None:
        """Why ``name`` names no running run-time experiment to end (raised)."""
        if name in self.running:
            raise ConflictError(f"name: the ABTest given is of an earlier experiment {shown}, "
                                "which ended; the one running now under that name was created "
                                f"at {when(row_created(self.running[name]))}: pass its name "
                                "to end it", param="name")
        if name in self.unreadable:
            raise ConflictError(f"name: experiment {shown}, created at run time at "
                                f"{when(self.unreadable[name])}, cannot be read from data_dir, "
                                "so it does not run and this service cannot end it; end it "
                                f"with the service stopped ({end_command(name)})",
                                param="name")
        raise not_running(name, self.state.settings, self.running,
                          {n: at for n, (_, at) in self.ended.items()})

    def current(self, test: ABTest) -> str:
        """The name of the experiment ``test`` describes, while it runs; else an
        :class:`~switchpoint.errors.InvalidInputError` naming ``ab_test``."""
        experiment = self.running.get(test.name)
        if experiment is not None and experiment.created_at == test.created_at:
            return test.name
        shown = json_quoted(test.name, 100)
        ended = self.ended.get(test.name)
        if ended is not None and ended[0].created_at == test.created_at:
            raise InvalidInputError("ab_test", f"experiment {shown} ended at {when(ended[1])}, "
                                               "so it takes no traffic; create another")
        raise InvalidInputError("ab_test", f"the ABTest given is of an experiment {shown} "
                                           f"created at {when(test.created_at)}, which no "
                                           "longer runs; pass the name of a running "
                                           "experiment, or the ABTest create_ab_test returned "
                                           "for it")


def not_running(name: str, settings: Settings, running: Iterable[str],
                ended: Mapping[str, float]) -> ConflictError | NotFoundError:
    """Why ``name`` (no running run-time experiment's) cannot be ended: it is the config's
    (``settings``), it ended (``ended``: when each ended one did), or none was made (the
    error lists those ``running``)."""
    shown = json_quoted(name, 100)
    configured = settings.experiments.get(name)
    if configured is not None and configured.created_at is None:
        return ConflictError(f"name: experiment {shown} is in the config, not created at run "
                             "time; end it there (take it out of experiments:, or set enabled: "
                             "false) and reload", param="name")
    if name in ended:
        return ConflictError(f"name: experiment {shown} ended already, at "
                             f"{when(ended[name])}: there is nothing to end (its decisions and "
                             "report stay)", param="name")
    names = listed_names(running, quoted=True)
    return NotFoundError(f"name: no experiment {shown} was created at run time; check the "
                         "name: " + (f"those running are {names}" if names else
                                     "none is running"), param="name")


def kept_experiments(reader: LearningReader) -> list[dict[str, Any]]:
    """The run-time experiments the store ``reader`` reads keeps, running and ended, in the
    order they were made, as ``switchpoint experiments list`` shows them: name, tenants (None:
    every caller), each arm's strategy (``cost_optimized``, ``quality_first``, or its settings)
    and share of the traffic, B's ``split`` (None: made of arms), ``min_n``, ``created_at``,
    ``ended_at`` (None: running), the decisions logged, per arm and in all, and ``problem``
    (None, or why its row cannot be read at all: its status is then ``unreadable``, and a
    start skips it). Read as kept, so one whose settings no longer read as an experiment is
    listed too (and can be ended)."""
    out: list[dict[str, Any]] = []
    for row in reader.runtime_experiments():
        kept = row.experiment if isinstance(row.experiment, dict) else {}
        arms: dict[str, Any] = kept["arms"] if isinstance(kept.get("arms"), dict) else {}
        logged = {arm: int(tally["decisions"])
                  for arm, tally in reader.experiment(row.name).items()}
        shown: dict[str, dict[str, Any]] = {}
        for arm, settings in arms.items():
            given = settings if isinstance(settings, dict) else {}
            setting = {k: v for k, v in given.items() if k != "weight" and v is not None}
            strategy = next((s for s, v in STRATEGIES.items() if v == setting), None)
            shown[arm] = {"strategy": strategy if row.split is not None else None,
                          "settings": setting, "weight": float(given.get("weight", 1.0)),
                          "decisions": logged.pop(arm, 0)}
        total = sum(a["weight"] for a in shown.values()) or 1.0
        for a in shown.values():
            a["share"] = round(a.pop("weight") / total, 4)
        status = (UNREADABLE if row.problem is not None else
                  "running" if row.ended is None else "ended")
        out.append({"name": row.name, "status": status,
                    "tenants": kept.get("tenants"), "arms": shown, "split": row.split,
                    "min_n": kept.get("min_n"), "created_at": row.created,
                    "ended_at": row.ended,
                    "decisions": sum(int(a["decisions"]) for a in shown.values())
                    + sum(logged.values()),
                    "problem": None if row.problem is None else (
                        f"cannot be read ({row.problem}), so it does not run; end it with "
                        f"the service stopped ({end_command(row.name)})"
                        if row.ended is None else f"cannot be read ({row.problem})")})
    return out


def running_kept(reader: LearningReader) -> dict[str, ExperimentConfig]:
    """The running run-time experiments the store ``reader`` reads keeps, in the order they
    were made; one that no longer reads as an experiment is a :class:`ConfigError` naming
    it (see :func:`_stored`), and one whose row cannot be read at all is left out, as a start
    skips it."""
    return {row.name: _stored(row) for row in reader.runtime_experiments()
            if row.ended is None and row.problem is None}


def started(settings: Settings, registered: Sequence[ModelEntry],
            running: Mapping[str, ExperimentConfig]) -> Settings:
    """``settings`` (read from a config) with what was made at run time joined as a gateway
    starting on them joins it: the models registered (:func:`~switchpoint.gateway.
    registered_models.with_registered`) first, since a run-time experiment's arm may name
    one, then the ``running`` experiments (:meth:`RuntimeExperiments.merged`); a
    :class:`ConfigError` naming what does not fit."""
    try:
        joined = with_registered(settings, registered)
    except ConfigError as exc:
        raise registered_fault(exc, registered) from None
    return RuntimeExperiments.merged(joined, running)


def start_clash(settings: Settings, reader: LearningReader) -> ConfigError | None:
    """Why a gateway on ``settings`` would not start beside the models registered and the
    running experiments created at run time that the store ``reader`` reads keeps (as it is
    refused, naming the one at fault and how to end it), or None."""
    gateway = settings.gateway
    registered = [m.entry for m in kept_models(
        reader, metadata_hosts=gateway.allow_registered_metadata_hosts,
        nat64=gateway.nat64_networks) if m.entry is not None]
    try:
        started(settings, registered, running_kept(reader))
    except ConfigError as exc:
        return exc
    return None


def check_endable(reader: LearningReader, settings: Settings, name: str) -> float:
    """Refuse ending ``name`` from the store ``reader`` reads unless it is a running run-time
    experiment there, as :meth:`RuntimeExperiments.end` refuses it (one of the config, as
    ``settings`` lists it; one ended; none). Returns when the running one was created."""
    rows = reader.runtime_experiments()
    running = {row.name: row.created for row in rows if row.ended is None}
    if name not in running:
        raise not_running(name, settings, running,
                          {row.name: row.ended for row in rows if row.ended is not None})
    return running[name]


def end_kept(store: SQLiteStore, settings: Settings, name: str) -> float:
    """End run-time experiment ``name`` in ``store`` while no gateway runs on it (the caller
    holds ``data_dir``'s lock, see :mod:`switchpoint.gateway.owner`) as
    :meth:`RuntimeExperiments.end` does: the same end written to its row, at this time, its
    decisions and report kept, the oldest ended ones past the newest
    :data:`~switchpoint.store.migrations.ENDED_KEPT` going. Refused as
    :func:`check_endable` refuses it, and then nothing changes. Returns when it ended. The
    end is kept beside the store too (see :mod:`switchpoint.store.removals`, whose removals
    a restored backup lacks are made again first, as a start makes them)."""
    make_again(store)
    reader = LearningReader(store.path, store.gone)
    try:
        created = check_endable(reader, settings, name)
    finally:
        reader.close()
    ended_at = time.time()
    written(store, RuntimeExperimentEnd(name, ended_at), "the end of the experiment",
            "it still runs", removal=Removal(EXPERIMENT, name, created, ended_at))
    return ended_at


def row_created(experiment: ExperimentConfig) -> float:
    """When run-time ``experiment`` was made."""
    assert experiment.created_at is not None
    return experiment.created_at


def _warn_unreadable(row: StoredExperiment) -> None:
    """A running run-time experiment whose kept row cannot be read, skipped at a start: said,
    naming it and how to end it."""
    log.warning("experiment %s, created at run time at %s, cannot be read (%s) and does not "
                "run; end it with the service stopped (%s)",
                json_quoted(row.name, 100), when(row.created), row.problem, end_command(row.name))


def _stored(row: StoredExperiment) -> ExperimentConfig:
    """A kept run-time experiment as it was made; one that no longer reads as an experiment
    (the rules changed since) is a :class:`ConfigError` naming it and what to do."""
    try:
        experiment = ExperimentConfig.model_validate(row.experiment)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"experiments.{row.name}", (
            f"the experiment created at run time at {when(row.created)} and kept in "
            f"data_dir no longer reads as one ({key_path(tuple(err['loc']), 'experiment')}: "
            f"{reason(err)}); run the switchpoint that made it and end it "
            f"({end_hint(row.name)})")) from None
    return experiment.made_at_run_time(row.created, row.split)


__all__ = ["ARM_SETTINGS", "STRATEGIES", "ABTest", "RuntimeExperiments", "check_endable",
           "end_command", "end_hint", "end_kept", "experiment_path", "kept_experiments",
           "made_experiment", "not_running", "running_kept", "start_clash", "started"]
