"""Every configured budget as one list, in a stable order, and a page of it.

The list holds the gateway's budgets (``budgets.total``) first, then each tenant's, each
model's and each provider's, in the config's order, then the client keys' (a revoked key's
left out), in the order the keys were made (whatever the clock said then), each key's in its
own order. A page ends at a cursor naming its last budget: ``cfg-N`` (the config's N-th) or
``key-S-I`` (the I-th budget of the key made S-th); the next page goes on after it, so a key
made between two pages comes last, and one revoked between them moves no other budget (an
offset would skip or repeat one). Only a config reloaded between two pages may shift its own
part of the list.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from switchpoint._args import INTEGER
from switchpoint._messages import cut, json_quoted
from switchpoint._numbers import is_boolean
from switchpoint.config import Settings
from switchpoint.errors import InvalidInputError
from switchpoint.governance.budgets import Budget, parse_budgets
from switchpoint.governance.keys import KeyStore
from switchpoint.governance.ledger import (
    TOTAL,
    key_account,
    model_account,
    provider_account,
    tenant_account,
)
from switchpoint.store.logs import MAX_PAGE

_CURSOR = re.compile(r"cfg-([1-9][0-9]{0,18})|key-([1-9][0-9]{0,18})-([1-9])")
# Where a list begins: before its first budget.
_START = (0, 0, 0)


class Listed(NamedTuple):
    """One budget of the list: where it stands in it, its account and the budget."""

    position: tuple[int, int, int]  # (0, N, 0) the config's N-th; (1, S, I) key S's I-th
    account: str
    budget: Budget

    @property
    def cursor(self) -> str:
        """The cursor of a page that ends with it."""
        part, number, index = self.position
        return f"cfg-{number}" if part == 0 else f"key-{number}-{index}"


def listed_budgets(settings: Settings, keys: KeyStore | None, tenant: str | None = None, *,
                   after: tuple[int, int, int] = _START,
                   most_keys: int | None = None) -> list[Listed]:
    """The configured budgets (with ``tenant``, the gateway's, the tenant's and its keys'),
    in the list's order: the config's all, then the keys' from the one ``after`` names (or
    the first) on, of at most ``most_keys`` keys (None: all)."""
    config: list[tuple[str, Budget]] = []
    config += [(TOTAL, b) for b in parse_budgets(settings.budgets.total)]
    for name, t in settings.tenants.items():
        if tenant is None or name == tenant:
            config += [(tenant_account(name), b) for b in parse_budgets(t.budgets)]
    if tenant is None:
        for model, given in settings.budgets.models.items():
            config += [(model_account(model), b) for b in parse_budgets(given)]
        for provider, given in settings.budgets.providers.items():
            config += [(provider_account(provider), b) for b in parse_budgets(given)]
    out = [Listed((0, n, 0), account, budget) for n, (account, budget) in enumerate(config, 1)]
    if keys is not None and not keys.missing("read the keys' budgets"):
        since = after[1] if after[0] == 1 else 0
        for seq, record in keys.budgeted(tenant, since=since, limit=most_keys):
            out += [Listed((1, seq, i), key_account(record.id), budget)
                    for i, budget in enumerate(parse_budgets(list(record.budgets), stored=True), 1)]
    return out


def budget_position(cursor: str | None) -> tuple[int, int, int]:
    """Where the page after ``cursor`` (a ``next_cursor``; None: the first page) begins, or an
    :class:`InvalidInputError` naming ``cursor``."""
    if cursor is None:
        return _START
    match = _CURSOR.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None or int(match.group(1) or match.group(2)) >= 2**63:
        from switchpoint._redact import redact

        shown = cut(redact(json_quoted(cursor, 1000)))
        raise InvalidInputError("cursor", f"{shown} is not a cursor of the "
                                          "budget list (cfg-N or key-N-I); pass the "
                                          "next_cursor of the previous page, or none for the "
                                          "first page")
    if match.group(1) is not None:
        return (0, int(match.group(1)), 0)
    return (1, int(match.group(2)), int(match.group(3)))


def check_limit(limit: int | None) -> int | None:
    """``limit`` budgets a page (None: all), or an :class:`InvalidInputError` naming it; a
    whole number of any integer type (a NumPy one, ``np.int64(5)``, too), never a boolean."""
    if limit is None:
        return None
    if is_boolean(limit) or not isinstance(limit, INTEGER) or not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError("limit", f"must be a whole number of budgets from 1 to "
                                         f"{MAX_PAGE}, got {json_quoted(limit)}")
    return int(limit)


def page_of(listed: Sequence[Listed], after: tuple[int, int, int], limit: int | None
            ) -> tuple[list[Listed], str | None]:
    """The budgets of ``listed`` past ``after``, ``limit`` of them at most (None: all), and
    the cursor of the next page (None on the last)."""
    later = [entry for entry in listed if entry.position > after]
    if limit is None or len(later) <= limit:
        return later, None
    return later[:limit], later[limit - 1].cursor


def budget_page(settings: Settings, keys: KeyStore | None, *, limit: int | None = None,
                cursor: str | None = None) -> tuple[list[Listed], str | None]:
    """A page of the configured budgets: ``limit`` of them at most (None: all) after
    ``cursor`` (a ``next_cursor``; None: from the first), and the next page's cursor (None
    on the last). A bad ``limit`` or ``cursor`` is an :class:`InvalidInputError` naming it."""
    limit = check_limit(limit)
    after = budget_position(cursor)
    # (Each key listed has a budget at least: limit + 2 keys fill a page and tell whether
    # another follows, the first of them maybe given whole already.)
    listed = listed_budgets(settings, keys, after=after,
                            most_keys=None if limit is None else limit + 2)
    return page_of(listed, after, limit)
