"""What a caller may see of a gateway's models and of what its routing learned: the model list
(``GET /v1/models``), one model, and the learning status, each narrowed to the models the
caller's key (or tenant) may use, by name or through ``auto``; trusted code, naming no caller,
sees them all. The :class:`~switchpoint.gateway.engine.Gateway`'s methods of the same names
answer with these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any

from switchpoint._args import expect
from switchpoint._limits import MAX_TENANTS
from switchpoint._messages import json_quoted, listed_names
from switchpoint.config import Settings
from switchpoint.errors import InvalidInputError, ModelNotFoundError, NoUpstreamError
from switchpoint.gateway.learning import STATUS_TAKE_UP_ROWS, GatewayLearning
from switchpoint.gateway.live import Live, RouterState
from switchpoint.gateway.misconfig import no_upstream_message
from switchpoint.gateway.parsing import AUTO_MODEL
from switchpoint.governance.governor import Governor, Policy, Principal
from switchpoint.governance.reports import Reports
from switchpoint.learning.events import DEFAULT_TENANT


class CallerViews:
    """The views of one gateway: its live router (``state``), ``governor`` and ``learning``;
    ``policy`` says what governs a caller (None: nothing governs anyone), ``reports`` gives the
    gateway's reports (which know its tenants)."""

    def __init__(self, state: RouterState, governor: Governor, learning: GatewayLearning,
                 policy: Callable[[Settings, str | None, str | None], Policy | None],
                 reports: Callable[[], Reports]) -> None:
        self.state = state
        self.governor = governor
        self.learning = learning
        self._policy = policy
        self._reports = reports

    def learning_status(self, tenants: Sequence[str] | None = None, *,
                        key: str | None = None, tenant: str | None = None,
                        principal: Principal | None = None) -> dict[str, Any]:
        """:meth:`Gateway.learning_status
        <switchpoint.gateway.engine.Gateway.learning_status>`."""
        live = self.state.live()
        caller = self._reader(live, key, tenant, principal)
        if tenants is not None and (isinstance(tenants, (str, bytes))
                                    or not isinstance(tenants, Sequence)):
            raise InvalidInputError("tenants", "must be a list of tenant names (a single "
                                               "tenant too: [name]) or None")
        if tenants is not None and len(tenants) > MAX_TENANTS:
            raise InvalidInputError("tenants", f"names {len(tenants):,} tenants, more than the "
                                               f"{MAX_TENANTS:,} a deployment may have; name "
                                               f"at most {MAX_TENANTS:,} in one call, or leave "
                                               "tenants out for every tenant's status")
        own = None if caller is None else caller.tenant or DEFAULT_TENANT
        if own is not None and tenants is not None and any(n != own for n in tenants):
            raise InvalidInputError("tenants", f"a caller reads its own tenant's status alone "
                                               f"({json_quoted(own)}): leave tenants out, or "
                                               "name no caller for any tenant's")
        if own is not None:
            tenants = [own]
        if tenants is not None:
            # An unknown tenant (the reports' rule: neither the config nor the request or
            # feedback log names it) is a 404, not a status of nothing learned.
            for name in tenants:
                if not isinstance(name, str):
                    raise InvalidInputError("tenants", f"must be tenant names (strings), got "
                                                       f"{type(name).__name__}")
            tenants = list(dict.fromkeys(tenants))  # (each name once, in the order given)
            reports = self._reports()
            for name in tenants:
                reports.check_tenant(name)
        # What another process (an offline `switchpoint feedback`) logged, taken up first;
        # a large backlog a little at a time, so a status never waits long on it.
        self.learning.caught_up(most=STATUS_TAKE_UP_ROWS)
        live = self.state.live()
        learning = live.learning
        router = live.router
        reader = self.learning.reader
        quality = reader.quality_by_model() if reader is not None else {}
        names = list(tenants) if tenants is not None else sorted(
            set(learning.tenants() if learning is not None else []) | set(live.settings.tenants)
            | set(quality))
        shown = self.usable(live, caller)[1]
        out = {}
        for name in names:
            if caller is None and tenants is not None:
                # A tenant named by trusted code (the admin's ?tenant=) is shown as its own
                # keys see it: narrowed to the models its config lets it use, if it lists any.
                shown = self._tenant_usable(live, name)
            learned: dict[str, int | None] = {"events": router.learner.n_events(name),
                                              "outcomes": router.learner.n_outcomes(name)}
            if shown is not None:
                # Only the outcomes of the models the key may use: the learned router holds
                # them by the profile each model's outcomes teach (which models sharing a
                # profile pool, as what it learns from them does).
                split = router.learner.counts_of(name, {
                    p for p in map(router.outcome_profile, shown) if p is not None})
                learned = (dict.fromkeys(learned) if split is None
                           else dict(zip(learned, split, strict=True)))
            view: dict[str, Any] = {
                "memory": self.memory_status(live, name, shown),
                "learned_router": learned,
                "feedback": _only(quality.get(name, {}), shown)}
            kept = self.learning.log_kept(deployment=False, tenant=name)
            if kept is not None:
                # (what the status's feedback_log says to this tenant's own keys)
                view["feedback_log"] = kept
            if shown is not None:
                view["narrowed_to"] = sorted(shown)
            out[name] = view
        settings = live.settings.learning
        experiments = sorted(
            n for n, e in live.settings.experiments.items()
            if own is None or not e.tenants or own in e.tenants)
        status: dict[str, Any] = {"tenants": out, "exploration": settings.exploration,
                                  "memory_size": settings.memory_size,
                                  "experiments": experiments,
                                  "feedback_log": self.learning.log_kept(
                                      deployment=caller is None, tenant=own)}
        if caller is None:
            status.update(replayed=learning.replayed if learning is not None else 0,
                          from_checkpoint=learning.restored if learning is not None else 0)
        return status

    def models(self, *, key: str | None = None, tenant: str | None = None,
               principal: Principal | None = None) -> list[dict[str, Any]]:
        """:meth:`Gateway.models <switchpoint.gateway.engine.Gateway.models>`."""
        live = self.state.live()
        caller = self._reader(live, key, tenant, principal)
        return live.model_objects(*self._listed(live, caller)[1:])

    def model(self, model_id: str, *, key: str | None = None, tenant: str | None = None,
              principal: Principal | None = None) -> dict[str, Any]:
        """:meth:`Gateway.model <switchpoint.gateway.engine.Gateway.model>`."""
        expect("model_id", model_id, str, "a model's name")
        live = self.state.live()
        caller = self._reader(live, key, tenant, principal)
        if live.settings.models is None:  # answered as a chat request naming it is
            raise NoUpstreamError(no_upstream_message(live.settings))
        policy, allowed, auto = self._listed(live, caller)
        entries = live.model_objects(allowed, auto)
        for entry in entries:
            if entry["id"] == model_id:
                return entry
        whose = "of this gateway" if allowed is None else "this key may use"
        missing = ModelNotFoundError(f"model: {json_quoted(model_id, 200)} is not a model {whose}; "
                                     "use one of "
                                     f"{listed_names((e['id'] for e in entries), quoted=True)}",
                                     param="model")
        if allowed is None or policy is None:
            raise missing
        # Answered as a chat request naming it is: a 403 for a model the key may not use,
        # whether it exists or not, and one it may name that the catalog lacks is a 404
        # naming its models.
        catalog = live.router.catalog
        self.governor.check_model(policy, model_id, catalog)
        raise self.governor.unknown_model(policy, catalog, missing, model_id)

    def _reader(self, live: Live, key: str | None, tenant: str | None,
                principal: Principal | None) -> Principal | None:
        """Who reads what a caller may use: ``principal`` (the HTTP door's, its key checked),
        else the caller ``key`` (verified as a bearer key is) or ``tenant`` (trusted) names,
        as for :meth:`Gateway.complete <switchpoint.gateway.engine.Gateway.complete>` (None:
        neither, trusted code that sees every model)."""
        if principal is not None:
            return principal
        return self.governor.principal(live.settings, key=key, tenant=tenant)

    def usable(self, live: Live, caller: Principal | None
                ) -> tuple[Policy | None, frozenset[str] | None]:
        """What governs ``caller`` and the catalog models it may use, by name or through
        ``auto`` (None: every one): the one set a client's key is told of, in the model list
        (:meth:`models`) and the learning status (:meth:`learning_status`) alike, as chat's
        errors name it (a model its list names that the catalog lacks is in neither)."""
        policy = (None if caller is None
                  else self._policy(live.settings, caller.tenant, caller.key_id))
        if policy is None or policy.models is None:
            return policy, None
        return policy, frozenset(self.governor.visible(policy, live.router.catalog))

    def _tenant_usable(self, live: Live, tenant: str) -> frozenset[str] | None:
        """The catalog models ``tenant`` may use, by name or through ``auto``, as
        :meth:`usable` says for a caller of that tenant without a key of narrower models
        (None: every one, for a tenant whose config lists no models, or none in the
        config)."""
        if tenant not in live.settings.tenants:
            return None
        return self.usable(live, Principal(tenant=tenant))[1]

    def _listed(self, live: Live, caller: Principal | None
                ) -> tuple[Policy | None, frozenset[str] | None, bool]:
        """:meth:`usable`, and whether the model list shows ``auto`` to ``caller``: when a
        chat request for it would not be refused it (a key of ``auto`` whose models the
        catalog no longer has may not route: it is shown no ``auto``; ``auto`` is no model a
        status counts anything of)."""
        policy, usable = self.usable(live, caller)
        if policy is None or policy.models is None:
            return policy, usable, True
        return policy, usable, self.governor.may_ask(policy, AUTO_MODEL, live.router.catalog)

    @staticmethod
    def memory_status(live: Live, tenant: str, shown: AbstractSet[str] | None
                       ) -> dict[str, Any]:
        """A tenant's memory status, its per-model coverage and its examples only of the models
        in ``shown`` (what a client's key may be told about; None: all). ``cold`` stays the
        memory's own state: whether it routes."""
        if live.learning is None:
            return {"enabled": False}
        memory = live.learning.memory_status(tenant)
        if "models" in memory and shown is not None:
            memory["models"] = _only(memory["models"], shown)
            memory["examples"] = sum(memory["models"].values())
            memory["progress"] = round(min(1.0, memory["examples"] / memory["warm_at"]), 4)
        return memory


def _only(by_model: dict[str, Any], shown: AbstractSet[str] | None) -> dict[str, Any]:
    """``by_model`` narrowed to the models in ``shown`` (None: all)."""
    return by_model if shown is None else {m: v for m, v in by_model.items() if m in shown}
