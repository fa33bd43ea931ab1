"""The reload and the policy swap, the gateway's door to them: the config file and the
weights read again, or another policy loaded, and made live while requests under way finish
on the old router; and what a router going live rebuilds of the gateway (its timeouts, retry
policy, health config, session pins' windows and planner) once, not on every request.
:class:`ReloadDoor` is the :class:`~switchpoint.gateway.engine.Gateway`'s; the gateway's
``reload`` and ``swap_policy`` answer with it (composed by :mod:`switchpoint.gateway.swaps`),
and each router that goes live is taken up with :meth:`ReloadDoor.take_up`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from switchpoint._redact import remember
from switchpoint.config import GatewaySettings, Settings
from switchpoint.gateway.applied_settings import health_config, retry_policy, timeouts_of
from switchpoint.gateway.failover import RetryPolicy
from switchpoint.gateway.health import HealthTracker
from switchpoint.gateway.live import Live, RouterState
from switchpoint.gateway.planning import Planner
from switchpoint.gateway.providers.base import Timeouts
from switchpoint.gateway.sessions import MemoryPinStore, SessionPinner, SQLitePinStore
from switchpoint.gateway.swaps import (
    check_policy,
    config_checked,
    live_keys,
    reload_answer,
    swap_answer,
)
from switchpoint.governance.governor import Governor

if TYPE_CHECKING:
    from switchpoint.gateway.providers import ProviderRegistry


class ReloadHost(Protocol):
    """What the reload door reads of its gateway, each time it needs it, and what a router
    going live rebuilds there: its live router, governor, upstream adapters (None until
    made), health (made again as it is reset), session pins and planner, the timeouts and
    retry policy its chat requests read, the gateway settings they were made from, and the
    warning of what would make chat requests fail."""

    state: RouterState
    governor: Governor
    health: HealthTracker
    pinner: SessionPinner
    planner: Planner
    timeouts: Timeouts
    retry: RetryPolicy
    _applied: GatewaySettings
    _providers: ProviderRegistry | None

    def _warn_misconfigured(self, settings: Settings) -> None: ...


class ReloadDoor:
    """The reloads and policy swaps of one gateway (``host``)."""

    def __init__(self, host: ReloadHost) -> None:
        self._host = host

    def swap_policy(self, name: str) -> dict[str, Any]:
        """:meth:`Gateway.swap_policy <switchpoint.gateway.engine.Gateway.swap_policy>`."""
        state = self._host.state
        with state.swapping() as live:  # (no reload may drop the name once it is checked)
            check_policy(live.settings, name)
            swapped = config_checked(lambda: state.swap_policy(name))
        return swap_answer(*swapped)

    def reload(self) -> dict[str, Any]:
        """:meth:`Gateway.reload <switchpoint.gateway.engine.Gateway.reload>`."""
        keys = self._host.governor.keys
        with self._host.state.swapping("the reload"):  # (no other reload between the read and it)
            held = live_keys(keys)  # (a keys.db that cannot be read: nothing is swapped)
            old, new, ms = config_checked(self._host.state.reload)
        providers = self._host._providers
        if providers is not None and new.nat64_networks != old.nat64_networks:
            # (a pooled connection to an address the new prefixes refuse is not used again)
            providers.pool.close_refused(new.nat64_networks)
        if providers is not None and new.address_checked - old.address_checked:
            # (models checked from now on: no connection made unchecked stays open idle)
            providers.pool.close_unchecked()
        return reload_answer(old, new, ms, keys, held)

    def take_up(self, live: Live) -> None:
        """A router went live (its ``gateway`` already set to the host): rebuild what derives
        from its gateway settings, once."""
        host = self._host
        host._warn_misconfigured(live.settings)
        remember(live.settings.admin_token)
        g = live.settings.gateway
        if g == host._applied:
            return
        host.timeouts = timeouts_of(g)
        host.retry = retry_policy(g)
        host.health.reconfigure(health_config(g))
        host.pinner.hard_window_s = g.pin_hard_window_s
        host.pinner.soft_window_s = g.pin_soft_window_s
        host.pinner.soft_bonus_weight = g.pin_soft_bonus
        store = host.pinner.store
        if isinstance(store, (MemoryPinStore, SQLitePinStore)):
            store.max_entries = g.pin_max_sessions  # (the next commit or purge applies it)
        host.planner.prefer_healthy = g.prefer_healthy
        host._applied = g
