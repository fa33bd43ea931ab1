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


def test_a_key_loses_only_what_it_could_use_under_the_old_config() -> None:
    """A model its tenant did not allow, or the catalog did not hold, before the reload is not
    lost by it; nor is anything by a key whose tenant the old config did not hold (its
    requests were refused)."""
    old = {"acme": TenantSettings(models=["a", "b"]), "free": TenantSettings()}
    keys = [key(1, models=("a", "c", "auto")), key(2), key(3, tenant="gone", models=("a",)),
            key(4, tenant="free", models=("a", "b"))]
    # The same config again: nobody loses anything, though key 1 lists c, which acme does not
    # allow, and key 3's tenant is not configured.
    assert key_losses(keys, old, old, ["a", "b", "c"], ["a", "b", "c"], now=0.0) == []
    # acme narrowed to b, and a out of the catalog: key 1 and 2 lose a (once each), key 4
    # loses a; c was never key 1's to lose.
    new = {"acme": TenantSettings(models=["b"]), "free": TenantSettings(),
           "gone": TenantSettings(models=["b"])}
    losses = key_losses(keys, old, new, ["a", "b", "c"], ["b", "c"], now=0.0)
    assert [(x.key_id, x.models_removed) for x in losses] == [
        ("k1", ("a",)), ("k2", ("a",)), ("k4", ("a",))]
    # The narrowed config again: nothing more is lost.
    assert key_losses(keys, new, new, ["b", "c"], ["b", "c"], now=0.0) == []
