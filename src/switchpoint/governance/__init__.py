"""Governance: client keys, tenants, budgets, rate limits, SLAs, escalation, and cost reports.

::

    from switchpoint.governance import KeySpec, KeyStore, Reports
    from switchpoint.config import load_settings

    settings = load_settings("switchpoint.yaml")
    with KeyStore.in_dir(settings.data_dir) as keys:
        issued = keys.create(KeySpec(tenant="acme", budgets=["50/month"], rpm=60)
                             .checked(list(settings.tenants), None))
        print(issued.key)                         # shown once; stored as its SHA-256

    reports = Reports.from_settings(settings)
    reports.cost_report("week"); reports.get_sla_report(since_hours=24)
    reports.forecast_cost(1000, 500, 200); reports.get_cost_optimizations()
    reports.check_budget_alert()

A running :class:`~switchpoint.Gateway` has the same reports as methods (``cost_report``,
``savings_estimate``, ``forecast_cost``, ``get_cost_optimizations``, ``get_sla_report``,
``check_budget_alert``, ``budget_status``) and its :class:`Governor` as ``gateway.governor``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from switchpoint._lazy import names_on_use

if TYPE_CHECKING:
    from switchpoint.governance.budgets import Budget, parse_budget, parse_budgets
    from switchpoint.governance.governor import Governor, Policy, Principal
    from switchpoint.governance.keys import IssuedKey, KeyRecord, KeySpec, KeyStore
    from switchpoint.governance.ledger import Ledger
    from switchpoint.governance.reports import Reports
    from switchpoint.governance.settings import (
        BudgetSettings,
        EscalationSettings,
        GovernanceSettings,
        SLASettings,
        TenantSettings,
    )

    SLAConfig = SLASettings

# Every name loads on use: the command line imports switchpoint.governance.cli for every
# command (--help too), and the settings alone would bring pydantic's models and the learning
# config with them. SLAConfig is SLASettings under the name other routers use
# (max_latency_ms, budget_per_hour_usd, min_quality_score, auto_escalate_on_breach).
_LAZY = {"Budget": "budgets", "parse_budget": "budgets", "parse_budgets": "budgets",
         "BudgetSettings": "settings", "EscalationSettings": "settings",
         "GovernanceSettings": "settings", "SLASettings": "settings",
         "TenantSettings": "settings", "SLAConfig": "settings",
         "Governor": "governor", "Policy": "governor", "Principal": "governor",
         "IssuedKey": "keys", "KeyRecord": "keys", "KeySpec": "keys", "KeyStore": "keys",
         "Ledger": "ledger", "Reports": "reports"}


__getattr__ = names_on_use(__name__, _LAZY, aliases={"SLAConfig": "SLASettings"})


__all__ = [
    "Budget",
    "BudgetSettings",
    "EscalationSettings",
    "GovernanceSettings",
    "Governor",
    "IssuedKey",
    "KeyRecord",
    "KeySpec",
    "KeyStore",
    "Ledger",
    "Policy",
    "Principal",
    "Reports",
    "SLAConfig",
    "SLASettings",
    "TenantSettings",
    "parse_budget",
    "parse_budgets",
]
