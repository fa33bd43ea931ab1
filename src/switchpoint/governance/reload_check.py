"""What a config reload may not do, and what it takes from the keys already issued.

A reload never lowers the service's protection and never empties it (:func:`check_reload`):
one that would turn client keys off, or drop the admin token (opening ``/v1/router/*`` and
``/metrics``), or that reads a file holding no settings (an editor's write caught half-way) is
refused, changing nothing; a restart with that config applies it, if it is meant.

A reload that takes a key's tenant, or a model it may use that the new catalog (or its tenant)
no longer offers, is accepted (keys stay; an operator may mean it), and this says which keys
lost what, for the reload's answer and its log.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from switchpoint._messages import MAX_LISTED, json_quoted, listed_names, quoted_path
from switchpoint.errors import ConfigError
from switchpoint.governance.keys import KeyRecord
from switchpoint.governance.settings import TenantSettings

if TYPE_CHECKING:
    from switchpoint.config import Settings

AUTO = "auto"
# Most keys an answer names (a log line stays readable); the count says how many in all.
MAX_NAMED = 50


def check_reload(running: Settings, read: Settings) -> None:
    """Refuse to reload ``read`` (the config file read again) over ``running`` (the settings
    serving) when it holds no settings, or would lower the service's protection: client keys
    turned off (``auth: keys`` to ``none``), or ``admin_token_env`` dropped (the admin routes
    and ``/metrics`` would need no token). Raises :class:`ConfigError` naming what it would
    change and how to apply it if it is meant: a restart with that config, which is the rule
    a start applies (loopback may serve unguarded; any other address may not)."""
    if read.source_empty:
        raise ConfigError("config", f"{quoted_path(read.source_path)} holds no settings (it is "
                                    "empty, or holds only comments: an editor may be writing "
                                    "it); a reload never empties the service, so the running "
                                    "config keeps serving. Write the settings in the file and "
                                    "reload again, or restart the service to run on the "
                                    "defaults")
    lowered: list[tuple[str, str]] = []
    if running.auth == "keys" and read.auth != "keys":
        lowered.append(("auth", f"it turns client keys off (auth: keys to auth: {read.auth}): "
                                "chat completions and routing would take requests without a "
                                "key"))
    if running.admin_token_env is not None and read.admin_token_env is None:
        lowered.append(("admin_token_env", "it drops admin_token_env: the admin routes "
                                           "(/v1/router/*) and /metrics would be open without "
                                           "a token"))
    if lowered:
        raise ConfigError(lowered[0][0], "refusing to reload a config that lowers the "
                                         "service's protection: "
                                         + "; and ".join(what for _, what in lowered)
                                         + ". The running config keeps serving; a reload never "
                                         "lowers protection: if this is meant, restart the "
                                         "service with this config")


@dataclass(frozen=True)
class KeyLoss:
    """One live key and what the new config takes from it."""

    key_id: str
    name: str | None
    tenant: str
    tenant_removed: bool
    models_removed: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """The loss as an answer gives it: the first MAX_LISTED models it lost, as its note
        lists them (:func:`listed_names`), and how many in all."""
        return {"key_id": self.key_id, "name": self.name, "tenant": self.tenant,
                "tenant_removed": self.tenant_removed,
                "models_removed": list(self.models_removed[:MAX_LISTED]),
                "models_removed_count": len(self.models_removed)}

    def describe(self) -> str:
        what = [f"its tenant {json_quoted(self.tenant)} is no longer configured"] if (
            self.tenant_removed) else []
        if self.models_removed:
            what.append("it can no longer use " + listed_names(self.models_removed, quoted=True))
        return f"key {self.key_id}: " + "; ".join(what)


def key_losses(keys: Iterable[KeyRecord], old_tenants: Mapping[str, TenantSettings],
               new_tenants: Mapping[str, TenantSettings], old_models: Sequence[str],
               new_models: Sequence[str], now: float | None = None) -> list[KeyLoss]:
    """The keys (not revoked, not expired) that the reload from the old config to the new
    leaves short of something they had: their tenant, or a model they named (one listed by the
    key or, for a key listing none, by its tenant) that they could use under the old config
    (in its catalog and allowed for their tenant) and cannot under the new. A key already short
    of a model before the reload (one its tenant did not allow, or the catalog did not hold),
    or whose tenant the old config did not hold (its requests were refused), loses nothing; a
    key and tenant that list no models name none: they route over whatever the catalog
    holds."""
    at = time.time() if now is None else now
    old_names, new_names = set(old_models), set(new_models)
    out = []
    for key in keys:
        if key.status(at) != "active":
            continue
        was, now_t = old_tenants.get(key.tenant), new_tenants.get(key.tenant)
        if was is None:
            continue
        tenant_removed = now_t is None
        listed = key.models if key.models is not None else was.models
        before = _usable(listed or (), old_names, was.models)
        # (a tenant dropped is said as such: the models named are those gone besides)
        after = set(_usable(before, new_names, now_t.models if now_t is not None else None))
        lost = tuple(m for m in before if m not in after)
        if tenant_removed or lost:
            out.append(KeyLoss(key.id, key.name, key.tenant, tenant_removed, lost))
    return out


def _usable(models: Iterable[str], catalog: AbstractSet[str],
            allowed: Sequence[str] | None) -> list[str]:
    """Those of ``models`` a key may use by name under a config whose catalog holds
    ``catalog`` and whose tenant allows ``allowed`` (None: any)."""
    return [m for m in models
            if m != AUTO and m in catalog and (allowed is None or m in allowed)]


def named(losses: Sequence[KeyLoss]) -> Sequence[KeyLoss]:
    """The losses an answer names: the first MAX_NAMED (their count says how many in all)."""
    return losses[:MAX_NAMED]


def losses_note(losses: Sequence[KeyLoss]) -> str | None:
    """The losses in words (at most MAX_NAMED keys named), or None when there are none."""
    if not losses:
        return None
    shown = "; ".join(loss.describe() for loss in named(losses))
    more = f" (and {len(losses) - MAX_NAMED} more keys)" if len(losses) > MAX_NAMED else ""
    return (f"the new config leaves {len(losses)} key(s) short of what they used: {shown}{more}."
            " The keys stay; restore the tenant or model, or revoke or reissue the keys")
