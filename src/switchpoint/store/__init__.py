"""Persistent state: append-only logs of routing decisions and of gateway requests (SQLite)."""

from __future__ import annotations

from switchpoint.store.sqlite import DecisionRecord, RequestRecord, SQLiteStore

__all__ = ["DecisionRecord", "RequestRecord", "SQLiteStore"]
