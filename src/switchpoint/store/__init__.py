"""Persistent state: an append-only log of routing decisions (SQLite by default)."""

from __future__ import annotations

from switchpoint.store.sqlite import DecisionRecord, SQLiteStore, StoreError

__all__ = ["DecisionRecord", "SQLiteStore", "StoreError"]
