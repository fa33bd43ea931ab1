"""What a config reload takes from the keys already issued."""

from __future__ import annotations

from switchpoint.governance.keys import KeyRecord
from switchpoint.governance.reload_check import MAX_NAMED, key_losses, losses_note
from switchpoint.governance.settings import TenantSettings


def key(n: int, tenant: str = "acme", **fields: object) -> KeyRecord:
    return KeyRecord(id=f"k{n}", hash="h", tenant=tenant, created_at=0.0, **fields)  # type: ignore[arg-type]


def test_revoked_and_expired_keys_lose_nothing_and_unlisted_models_are_not_named() -> None:
    old = {"acme": TenantSettings(models=["a", "b", "auto"]), "free": TenantSettings()}
    new = {"acme": TenantSettings(models=["b", "auto"])}
    keys = [key(1), key(2, revoked_at=5.0), key(3, expires_at=50.0), key(4, tenant="free"),
            key(5, models=("b",))]
    losses = key_losses(keys, old, new, ["a", "b"], ["a", "b"], now=100.0)
    assert [(x.key_id, x.tenant_removed, x.models_removed) for x in losses] == [
        ("k1", False, ("a",)), ("k4", True, ())]


def test_a_note_names_at_most_max_named_keys_and_counts_the_rest() -> None:
    old = {"acme": TenantSettings(models=["a"])}
    losses = key_losses([key(n) for n in range(MAX_NAMED + 3)], old, {}, ["a"], [], now=0.0)
    note = losses_note(losses)
    assert note is not None and f"{MAX_NAMED + 3} key(s)" in note and "(and 3 more keys)" in note
    assert note.count("key k") == MAX_NAMED and losses_note([]) is None
