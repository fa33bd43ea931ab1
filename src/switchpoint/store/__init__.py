"""Persistent state: append-only logs of routing decisions and of gateway requests (SQLite)."""

from __future__ import annotations

from switchpoint.store.logs import DecisionRecord, RequestRecord
from switchpoint.store.sqlite import SQLiteStore

__all__ = ["DecisionRecord", "RequestRecord", "SQLiteStore"]
