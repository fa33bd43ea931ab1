"""What a config reload, or a restart with a new config, leaves of the session pins. A pin to a
model the session may no longer use (gone from the catalog, left out of its tenant's models, or
made ``auto: false``) is dropped: the next request is routed afresh among the models it may use
now, says why in its reasoning and its log's pin note, calls no model the config no longer
lets it have, and pins the session to the model that answered. A pin whose model is still
allowed holds across the reload and the restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from switchpoint import Gateway
from switchpoint.gateway.results import ChatCompletion
from tests.fakes.fake_provider import FakeProviderProcess
from tests.integration.gateway_env import FACTORY, KEYS, config_text

GONE = "the session's pinned model is no longer in the catalog"
LEFT_OUT = "the session's pinned model is not among this request's candidates; routed"


def says(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def stored(gateway: Gateway, reply: ChatCompletion) -> str | None:
    """The model the session of ``reply`` is pinned to now (its log entry names the session)."""
    assert gateway.store is not None
    [entry] = [e for e in gateway.store.requests(100, None)[0]
               if e["id"] == reply.switchpoint.request_id]
    pin = gateway.pinner.store.get(entry["session_id"])
    return None if pin is None else pin.model


@pytest.fixture
def config(gw_fake: FakeProviderProcess, tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "switchpoint.yaml"
    path.write_text(config_text(gw_fake, data_dir=str(tmp_path / "data"))
                    + "tenants: {acme: {models: [fresh, cheap, good, other, auto]}}\n",
                    encoding="utf-8")
    yield path


def test_a_reload_drops_each_pin_to_a_model_its_session_may_no_longer_use(
        gw_fake: FakeProviderProcess, config: Path) -> None:
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        pinned = {"gone": "fresh", "left-out": "cheap", "unrouted": "good", "kept": "other"}
        for session, model in pinned.items():
            reply = gateway.complete(says(f"Hello from {session}."), model=model,
                                     session_id=session, tenant="acme")
            assert reply.switchpoint.model == model
        # `fresh` leaves the catalog (`newbie` comes), `cheap` leaves acme's models, and
        # `good` may no longer be chosen by `auto`; `other` stays as it was.
        text = (config_text(gw_fake, data_dir=str(config.parent / "data"))
                .replace("name: fresh,", "name: newbie,")
                .replace("fallbacks: [other]}", "fallbacks: [other], auto: false}"))
        config.write_text(text + "tenants: {acme: {models: [newbie, good, other, auto]}}\n",
                          encoding="utf-8")
        gateway.state.reload()
        called_before = len(gw_fake.requests())

        for session, why in (("gone", GONE), ("left-out", LEFT_OUT), ("unrouted", LEFT_OUT)):
            reply = gateway.complete(says(f"And now, {session}?"), session_id=session,
                                     tenant="acme")
            info = reply.switchpoint
            assert info.pin_state == "evicted_missing_model", session
            assert info.pin["previous_model"] == pinned[session]
            assert info.model in ("newbie", "other"), (session, info.model)
            assert any(line.startswith(why) for line in info.reasoning), info.reasoning
            assert info.pin["note"].startswith(why)
            assert stored(gateway, reply) == info.model  # pinned afresh, where it answered
            again = gateway.complete(says(f"Once more, {session}."), session_id=session,
                                     tenant="acme")
            assert (again.switchpoint.pin_state, again.switchpoint.model) == ("hard", info.model)

        kept = gateway.complete(says("Still there?"), session_id="kept", tenant="acme")
        assert (kept.switchpoint.pin_state, kept.switchpoint.model) == ("hard", "other")
        assert not any(GONE in line or LEFT_OUT in line for line in kept.switchpoint.reasoning)

        called = [r["body"]["model"] for r in gw_fake.requests()[called_before:]]
        assert called and not {"fresh", "cheap", "good"} & set(called), called


def test_pins_kept_in_data_dir_meet_the_new_config_after_a_restart_as_after_a_reload(
        gw_fake: FakeProviderProcess, config: Path) -> None:
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        for session, model in (("gone", "fresh"), ("gone-named", "fresh"), ("kept", "cheap")):
            gateway.complete(says(f"Hello from {session}."), model=model, session_id=session)
    config.write_text(config_text(gw_fake, data_dir=str(config.parent / "data"))
                      .replace("name: fresh,", "name: newbie,"), encoding="utf-8")
    with Gateway.from_config(config, loader=FACTORY, env=KEYS) as gateway:
        called_before = len(gw_fake.requests())
        reply = gateway.complete(says("Back again."), session_id="gone")
        info = reply.switchpoint
        assert (info.pin_state, info.pin["previous_model"]) == ("evicted_missing_model", "fresh")
        assert f"{GONE} (a reload or restart took it out): the pin was dropped; routed" in (
            info.reasoning)
        assert info.model != "fresh" and stored(gateway, reply) == info.model

        named = gateway.complete(says("Back, by name."), model="good", session_id="gone-named")
        assert (named.switchpoint.pin_state, named.switchpoint.model) == (
            "evicted_missing_model", "good")
        assert named.switchpoint.pin["note"] == (
            f"{GONE} (a reload or restart took it out): the pin was dropped; the request goes "
            "to the model it names")
        assert stored(gateway, named) == "good"

        kept = gateway.complete(says("Still there?"), session_id="kept")
        assert (kept.switchpoint.pin_state, kept.switchpoint.model) == ("hard", "cheap")
        assert "fresh" not in [r["body"]["model"] for r in gw_fake.requests()[called_before:]]
