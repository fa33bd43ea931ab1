"""Experiments' reports and promotions, the gateway's door to them: how each arm of an
experiment does (of the config, or created at run time, running or ended), every
experiment's report, and all of one's traffic sent to an arm. :class:`ExperimentDoor` is the
:class:`~switchpoint.gateway.engine.Gateway`'s; the gateway's ``experiment_report``,
``experiment_reports`` and ``promote`` answer with it (``create_ab_test`` and ``end_ab_test``
with its :class:`~switchpoint.gateway.ab_tests.RuntimeExperiments`)."""

from __future__ import annotations

import contextlib
from typing import Any, Protocol

from switchpoint._messages import json_quoted
from switchpoint._process import check_process
from switchpoint.config import Settings
from switchpoint.errors import ConflictError
from switchpoint.gateway.ab_tests import RuntimeExperiments
from switchpoint.gateway.experiments import check_promotion, experiment_of
from switchpoint.gateway.kept import turn
from switchpoint.gateway.learning import GatewayLearning


class ExperimentHost(Protocol):
    """What the experiment door reads of its gateway, each time it needs it: the settings in
    force, its learning and run-time experiments, and the process that opened it."""

    learning: GatewayLearning
    ab_tests: RuntimeExperiments
    _pid: int | None

    @property
    def settings(self) -> Settings: ...


class ExperimentDoor:
    """The reports and promotions of one gateway's (``host``'s) experiments."""

    def __init__(self, host: ExperimentHost) -> None:
        self._host = host
        self.learning = host.learning
        self.ab_tests = host.ab_tests

    def report(self, name: str) -> dict[str, Any]:
        """:meth:`Gateway.experiment_report
        <switchpoint.gateway.engine.Gateway.experiment_report>`."""
        check_process(self._host._pid, "this Gateway")
        return self.learning.report_experiment(self._host.settings, name, self.ab_tests.ended)

    def reports(self) -> list[dict[str, Any]]:
        """:meth:`Gateway.experiment_reports
        <switchpoint.gateway.engine.Gateway.experiment_reports>`."""
        check_process(self._host._pid, "this Gateway")
        settings, ended = self._host.settings, self.ab_tests.ended
        names = [*settings.experiments, *(n for n in ended if n not in settings.experiments)]
        return [self.learning.report_experiment(settings, n, ended) for n in names]

    def promote(self, name: str, arm: str | None = None) -> dict[str, Any]:
        """:meth:`Gateway.promote <switchpoint.gateway.engine.Gateway.promote>`."""
        check_process(self._host._pid, "this Gateway")
        # A run-time experiment's arm (any but the config's: one ending may have left the
        # running set while its snapshot is not live yet) is promoted between the run-time
        # experiments' changes, never while it ends; the config's need not wait for them.
        # An experiment there is none of, one ended or disabled, or an arm it does not have,
        # is said before the promotion waits its turn (or is refused as one too many waiting
        # for the store's writer), then checked again in its turn.
        self._check_promotable(self._host.settings, name, arm)
        live = self._host.settings.experiments.get(name) if isinstance(name, str) else None
        configured = live is not None and live.created_at is None
        lock = contextlib.nullcontext() if configured else self.ab_tests.changing
        with turn(self.learning.store, lock, "the promotion", "nothing was promoted"):
            settings = self._host.settings
            self._check_promotable(settings, name, arm)
            return self.learning.promote(settings, name, arm)

    def _check_promotable(self, settings: Settings, name: object, arm: object) -> None:
        """Refuse promoting ``arm`` of experiment ``name`` for the request's own fault: there
        is none of that name in ``settings`` (a 404), it was created at run time and has
        ended (a 409), or :func:`check_promotion` refuses it (disabled, or no such arm)."""
        ended = self.ab_tests.ended
        if isinstance(name, str) and name not in settings.experiments and name in ended:
            raise ConflictError(f"name: experiment {json_quoted(name, 100)}, created at "
                                "run time, has ended, so it takes no traffic to promote "
                                "an arm for; create another", param="name")
        # (naming those it may promote in: not the ended)
        experiment, _ = experiment_of(name, settings)
        assert isinstance(name, str)
        check_promotion(experiment, name, arm)
