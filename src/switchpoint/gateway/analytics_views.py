"""What the gateway's logs say: the cost, SLA and budget reports over them, priced by the
live router's catalog; the decisions by model, policy and cluster with the requests' counts,
tokens and cost (the stats); and routing at a glance (the analytics). :class:`AnalyticsViews`
is the :class:`~switchpoint.gateway.engine.Gateway`'s; the gateway's ``reports``, ``stats``
and ``get_analytics`` answer with it."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from switchpoint._process import check_process
from switchpoint.errors import StoreError
from switchpoint.gateway.learning import GatewayLearning
from switchpoint.gateway.live import RouterState
from switchpoint.governance.governor import Governor
from switchpoint.governance.reports import Reports
from switchpoint.store import SQLiteStore


class AnalyticsHost(Protocol):
    """What the analytics views read of their gateway, each time they need it: its live
    router, request and decision log (None: it keeps none), learning, governor (its ledger
    and keys), the process that opened it, how a read counts itself in as a request, and the
    savings estimate the analytics quote."""

    state: RouterState
    store: SQLiteStore | None
    learning: GatewayLearning
    governor: Governor
    _pid: int | None

    def admitted(self) -> AbstractContextManager[None]: ...
    def savings_estimate(self, comparison_model: str | None = None,
                         period: str = "month", **kwargs: Any) -> dict[str, Any]: ...


class AnalyticsViews:
    """The reports, stats and analytics of one gateway's (``host``'s) logs."""

    def __init__(self, host: AnalyticsHost) -> None:
        self._host = host

    def reports(self) -> Reports:
        """:attr:`Gateway.reports <switchpoint.gateway.engine.Gateway.reports>`."""
        host = self._host
        check_process(host._pid, "this Gateway")
        live = host.state.peek()
        settings = live.settings if live is not None else host.state.settings
        # (no models: no catalog, not the weights' own profiles the router routes over)
        catalog = live.router.catalog if live is not None and settings.models is not None \
            else None
        path = host.store.path if host.store is not None else settings.db_path
        return Reports(path, settings, catalog=catalog, ledger=host.governor.ledger,
                       keys=host.governor.keys,
                       cost_scale=(live.router.cost_scale if live is not None else None),
                       gone=host.store.gone if host.store is not None else None,
                       admitted=host.admitted)

    def stats(self, tenant: str | None = None) -> dict[str, Any]:
        """:meth:`Gateway.stats <switchpoint.gateway.engine.Gateway.stats>`."""
        check_process(self._host._pid, "this Gateway")
        store = self._log_store("stats")
        live = self._host.state.peek()
        weights_id = live.weights_id if live else None
        if tenant is not None:  # a misspelt one is refused listing the known ones
            self.reports().check_tenant(tenant)
        counts = store.decision_stats(weights_id, tenant=tenant)
        requests = store.request_stats(tenant=tenant)
        return {**counts, "weights_id": weights_id, "policy": live.policy if live else None,
                "tenant": tenant, "requests": requests}

    def analytics(self, tenant: str | None = None) -> dict[str, Any]:
        """:meth:`Gateway.get_analytics <switchpoint.gateway.engine.Gateway.get_analytics>`."""
        stats = self.stats(tenant)
        by_model: dict[str, int] = stats["by_model"]
        live = self._host.state.peek()
        catalog = live.router.catalog if live is not None else None
        tiers: dict[str, int] = {}
        for model, n in by_model.items():
            card = catalog[model] if catalog is not None and model in catalog else None
            tier = card.tier if card is not None and card.tier is not None else "none"
            tiers[tier] = tiers.get(tier, 0) + n
        reader = self._host.learning.reader
        quality = reader.quality_by_model(tenant) if reader is not None else {}
        outcomes = [m for models in quality.values() for m in models.values()]
        n = sum(m["n"] for m in outcomes)
        mean = sum(m["n"] * m["mean_quality"] for m in outcomes) / n if n else None
        return {"total_routed": stats["total"], "tier_distribution": tiers,
                "avg_quality": None if mean is None else round(mean, 6),
                "model_usage": by_model,
                "cost_savings": self._host.savings_estimate(tenant=tenant)["savings_usd"],
                "tenant": tenant}

    def _log_store(self, what: str) -> SQLiteStore:
        """The request and decision log that ``what`` reads; a gateway made with
        ``store=False`` keeps none, so it is refused."""
        if self._host.store is None:
            raise StoreError(f"{what}: this gateway keeps no request or decision log "
                             "(store=False); make it with a store to read them")
        return self._host.store
