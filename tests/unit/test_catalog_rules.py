"""One model's rules hold however its catalog is built: a YAML config, settings built in
Python (what a ``Gateway`` is given), a :class:`Catalog` of :class:`ModelCard` objects (what a
``Router`` is given), and a model registered at run time (its test is beside the other
registrations', in tests/integration/test_registered_models.py). Each way refuses each bad
value with the same reason, naming the field and the model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from switchpoint._messages import reason
from switchpoint.catalog import Catalog, ModelCard, cost_text, usd_text
from switchpoint.config import ModelEntry, Settings, check_catalog, load_settings
from switchpoint.errors import ConfigError, InvalidInputError
from switchpoint.gateway import Gateway

#: (field, bad value, words of the reason): each refused by every way a catalog is built.
BAD: list[tuple[str, Any, str]] = [
    ("name", "", "must not be empty"),
    ("name", "auto", '"auto" is reserved for the router itself; rename the model'),
    ("name", "a\nb", "holds U+000A (character 2)"),
    ("name", "modèle", "(letters, digits, punctuation, spaces between them); give the "
                       "provider's own name as upstream_model"),
    ("base_url", "http://llm.example/v1\x00", "holds U+0000 (character 22)"),
    ("base_url", "http://llm.example/\u202e1v", "holds U+202E (character 20)"),
    ("base_url", "http:///v1", 'has no host, got "http:///v1"'),
    ("base_url", "http://llm.example/" + "v" * 2100, "over the 2,048 a base_url may have"),
    ("base_url", "ftp://llm.example/v1", "must start with http:// or https://"),
    ("fallbacks", ["b", "b"], 'names "b" more than once; name each fallback once'),
    ("fallbacks", {"b"}, "must be a list of model names, got set, whose order is not kept"),
    ("capabilities", ["tools", "tools"], 'names "tools" more than once; name each capability'),
    ("capabilities", None, "must be a list of capabilities, got null"),
    ("capabilities", "tools", 'must be a list of capabilities, got "tools"'),
    ("upstream_model", "", "must not be empty"),
    ("upstream_model", "u" * 257, "must have at most 256 characters, got 257"),
    ("input_per_mtok", "1", 'must be a number, got "1" (text: write the number without quotes)'),
    ("output_per_mtok", math.nan, "must be a finite number (not NaN or infinity)"),
    ("input_per_mtok", -1, "must be >= 0, got -1"),
    ("output_per_mtok", 1e300, "must be <= 100,000, got 1e+300"),
    ("context_window", "8192", 'must be a number, got "8192" (text'),
    ("context_window", math.nan, "must be a finite number (not NaN or infinity)"),
    ("context_window", True, "must be a number, not a boolean"),
    ("context_window", 0, "must be > 0, got 0"),
    ("context_window", 10**10, "must be <= 100,000,000, got 10000000000"),
    ("profile", "", "must not be empty"),
    ("profile", 3, "must be a string, got 3"),
    ("provider", "", "must not be empty"),
    ("provider", 3, "must be a string, got 3"),
    ("provider", "opneai", '"opneai" is not a known provider (did you mean "openai"?); use one '
                           'of "openai", "anthropic"'),
    ("api_key_env", 5, "must be a string, got 5"),
    ("api_key_env", "1KEY", "must be the name of the environment variable that holds the "
                            'secret, such as OPENAI_API_KEY (letters, digits and "_", not '
                            "starting with a digit"),
    ("api_key_env", "sk9f8e7d6c5b4a3f2e1d0c", "looks like a secret itself"),
    ("stream_usage", "yes", 'must be true or false, not the string "yes"'),
    ("stream_usage", 1, "must be true or false, not the number 1"),
    ("auto", 0, "must be true or false, not the number 0"),
    ("auto", "false", 'must be true or false, not the string "false"'),
]
IDS = [f"{field}-{i}" for i, (field, _, _) in enumerate(BAD)]


def models(field: str, value: Any) -> list[dict[str, Any]]:
    """A catalog of two models, the first (``a``) given ``value`` as its ``field``."""
    bad = {"name": "a", "base_url": "https://llm.example/v1", field: value}
    return [bad, {"name": "b", "base_url": "https://llm.example/v1"}]


def card_of(entry: dict[str, Any]) -> ModelCard:
    """The card a program builds for ``entry``, its lists as the card's tuples."""
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                              for k, v in entry.items()}
    return ModelCard(**fields)


def from_yaml(tmp_path: Path, field: str, value: Any) -> ConfigError:
    path = tmp_path / "switchpoint.yaml"
    path.write_text(yaml.safe_dump({"models": models(field, value)}), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    return caught.value


@pytest.mark.parametrize(("field", "value", "words"), BAD, ids=IDS)
def test_each_way_of_building_a_catalog_refuses_a_bad_value_alike(
        tmp_path: Path, field: str, value: Any, words: str) -> None:
    in_yaml = from_yaml(tmp_path, field, value)
    assert in_yaml.key == f"models[0].{field}"
    assert words in in_yaml.reason

    with pytest.raises(ValidationError) as caught:  # settings a program builds for a Gateway
        Settings.model_validate({"models": models(field, value)})
    error = caught.value.errors()[0]
    assert error["loc"][:3] == ("models", 0, field)
    assert reason(error) == in_yaml.reason

    with pytest.raises(InvalidInputError) as in_python:  # a catalog a program builds
        Catalog([card_of(entry) for entry in models(field, value)])
    assert in_python.value.field == ("models[0].name" if field == "name" else f"models.a.{field}")
    assert in_python.value.reason == in_yaml.reason


@pytest.mark.parametrize("item", ["telepathy", 1, None])
def test_each_way_of_building_a_catalog_refuses_an_unknown_capability_alike(
        tmp_path: Path, item: Any) -> None:
    """An unknown capability is named by its place in the list, in the same words."""
    value = ["tools", item]
    in_yaml = from_yaml(tmp_path, "capabilities", value)
    words = ('must be one of "tools", "vision", "code", "json" or "streaming", got '
             f"{json.dumps(item)}")
    assert (in_yaml.key, in_yaml.reason) == ("models[0].capabilities[1]", words)

    with pytest.raises(ValidationError) as caught:  # settings a program builds for a Gateway
        Settings.model_validate({"models": models("capabilities", value)})
    error = caught.value.errors()[0]
    assert (error["loc"], reason(error)) == (("models", 0, "capabilities", 1), words)

    with pytest.raises(InvalidInputError) as in_python:  # a catalog a program builds
        Catalog([card_of(entry) for entry in models("capabilities", value)])
    assert (in_python.value.field, in_python.value.reason) == ("models.a.capabilities[1]",
                                                                words)


def test_a_secret_given_as_a_cards_key_variable_is_not_shown() -> None:
    """A key given where its variable's name belongs is not repeated by the refusal, as
    text or as bytes, however the catalog is built."""
    for value in ("sk9f8e7d6c5b4a3f2e1d0c", b"sk9f8e7d6c5b4a3f2e1d0c"):
        with pytest.raises(InvalidInputError) as in_python:
            Catalog([ModelCard(name="a", api_key_env=value)])  # type: ignore[arg-type]
        with pytest.raises(ValidationError) as in_settings:
            Settings.model_validate({"models": [{"name": "a", "api_key_env": value}]})
        assert in_python.value.field == "models.a.api_key_env"
        assert in_python.value.reason == reason(in_settings.value.errors()[0])
        assert "f2e1d0c" not in str(in_python.value)


def test_a_cards_provider_is_a_known_one_as_the_catalog_spells_it() -> None:
    """A config reads a known provider in another case (``OpenAI``) as its name; a card
    built in Python, read as it is by every part that compares providers (a provider's
    budget, an escalation's preferred provider), gives the name as it is spelt, and is told
    which one it means. None, which a config reads as "infer it from base_url", is no
    provider a card may have."""
    entry = ModelEntry.model_validate({"name": "a", "provider": " Anthropic"})
    assert entry.provider == "anthropic" and Catalog([entry.card()]).cards[0].provider == (
        "anthropic")
    with pytest.raises(InvalidInputError) as caught:
        Catalog([ModelCard(name="a", provider="Anthropic")])
    assert str(caught.value).startswith(
        'models.a.provider: "Anthropic" is not a known provider (did you mean "anthropic"?)')
    for field in ("provider", "auto", "capabilities", "fallbacks"):
        with pytest.raises(InvalidInputError) as caught:
            Catalog([ModelCard(**{"name": "a", field: None})])  # type: ignore[arg-type]
        assert caught.value.field == f"models.a.{field}"
        assert "null" in caught.value.reason


#: (the catalog's models, the key a config names, the key a Catalog names, the reason): each
#: fault of a catalog as a whole, refused alike by every way a catalog is built.
CATALOG_FAULTS: list[tuple[list[dict[str, Any]], str, str, str]] = [
    ([], "models", "models",
     "is empty; list at least one model, or leave it out to route over the weights' own "
     "profiles"),
    ([{"name": "a"}, {"name": "b"}, {"name": "a"}], "models[2].name", "models[2].name",
     '"a" is defined twice (also models[0]); names must be unique'),
    ([{"name": "a", "fallbacks": ["b", "c"]}, {"name": "b"}], "models[0].fallbacks[1]",
     "models.a.fallbacks[1]",
     '"c" is not a model in the catalog; define it under models: or remove it (models: "a", '
     '"b")'),
    ([{"name": "a"}, {"name": "b", "fallbacks": ["a", "b"]}], "models[1].fallbacks[1]",
     "models.b.fallbacks[1]",
     '"b" cannot fall back to itself; remove it from its fallbacks (a model that failed is '
     "not tried again)"),
    ([{"name": "a", "auto": False}, {"name": "b", "auto": False}], "models", "models",
     'every model has auto: false, so "auto" could choose none; let at least one be routed'),
]


@pytest.mark.parametrize(("entries", "config_key", "catalog_key", "words"), CATALOG_FAULTS,
                         ids=["empty", "twice", "unknown-fallback", "own-fallback", "no-auto"])
def test_each_way_of_building_a_catalog_refuses_a_bad_catalog_alike(
        tmp_path: Path, entries: list[dict[str, Any]], config_key: str, catalog_key: str,
        words: str) -> None:
    path = tmp_path / "switchpoint.yaml"
    path.write_text(yaml.safe_dump({"models": entries}), encoding="utf-8")
    with pytest.raises(ConfigError) as in_yaml:
        load_settings(path, environ={})
    assert (in_yaml.value.key, in_yaml.value.reason) == (config_key, words)

    settings = Settings.model_validate({"models": entries})  # what a program gives a Gateway
    with pytest.raises(ConfigError) as in_settings:
        check_catalog(settings)
    assert (in_settings.value.key, in_settings.value.reason) == (config_key, words)

    with pytest.raises(InvalidInputError) as in_python:  # what a program gives a Router
        Catalog([card_of(entry) for entry in entries])
    assert (in_python.value.field, in_python.value.reason) == (catalog_key, words)


def test_a_card_given_another_type_is_refused_naming_the_field() -> None:
    """A program's card may hold any Python value: one of no field's type is refused as the
    config refuses it, not failed on later (a list's name, a price of a dict)."""
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"name": ["a"]}, "models[0].name", "must be a string, got a list"),
        ({"name": "a", "input_per_mtok": {"usd": 1}}, "models.a.input_per_mtok",
         "must be a number, got an object"),
        ({"name": "a", "context_window": 8192.5}, "models.a.context_window",
         "must be a whole number, got 8192.5"),
        ({"name": "a", "capabilities": "tools"}, "models.a.capabilities",
         'must be a list of capabilities, got "tools"'),
        ({"name": "a", "capabilities": ("tools", "telepathy")}, "models.a.capabilities[1]",
         'must be one of "tools", "vision", "code", "json" or "streaming", got "telepathy"'),
        ({"name": "a", "tier": "godlike"}, "models.a.tier", "must be one of"),
    ]
    for given, field, words in cases:
        with pytest.raises(InvalidInputError) as caught:
            Catalog([ModelCard(**given)])
        assert caught.value.field == field, given
        assert caught.value.reason.startswith(words), (given, caught.value.reason)
    with pytest.raises(InvalidInputError, match=r"^models\[1\]: must be a ModelCard, got dict"):
        Catalog([ModelCard(name="a"), {"name": "b"}])  # type: ignore[list-item]


def test_settings_a_program_builds_keep_the_catalog_rules_in_a_gateway(tmp_path: Path) -> None:
    """Settings built in Python, not read by load_settings, are held to what a config's
    catalog is held to when a Gateway is built from them: a model falling back to itself is
    refused as the config refuses it, before anything opens in data_dir."""
    data_dir = tmp_path / "data"
    entries = [ModelEntry(name="a", fallbacks=["a"]), ModelEntry(name="b")]
    settings = Settings(models=entries, data_dir=str(data_dir))
    path = tmp_path / "switchpoint.yaml"
    path.write_text(yaml.safe_dump({"models": [{"name": "a", "fallbacks": ["a"]},
                                               {"name": "b"}]}), encoding="utf-8")
    with pytest.raises(ConfigError) as in_yaml:
        load_settings(path, environ={})
    with pytest.raises(ConfigError) as in_python:
        Gateway(settings)
    assert str(in_python.value) == str(in_yaml.value) == (
        'models[0].fallbacks[0]: "a" cannot fall back to itself; remove it from its fallbacks '
        "(a model that failed is not tried again)")
    assert not data_dir.exists()


def test_the_config_reads_a_good_card_as_before() -> None:
    """YAML's whole numbers read as a price's float, -0.0 as 0.0, and a catalog a program
    builds of the same values is the config's."""
    entry = ModelEntry.model_validate({"name": "a", "input_per_mtok": 1, "output_per_mtok": -0.0,
                                       "context_window": 8192, "capabilities": ["tools"],
                                       "upstream_model": "u" * 256})
    assert entry.input_per_mtok == 1.0 and isinstance(entry.input_per_mtok, float)
    assert entry.output_per_mtok == 0.0 and math.copysign(1, entry.output_per_mtok) == 1
    assert Catalog([entry.card()]).cards == [ModelCard(
        name="a", provider="openai", input_per_mtok=1.0, output_per_mtok=0.0,
        context_window=8192, capabilities=("tools",), upstream_model="u" * 256)]


def test_a_cards_numbers_are_read_as_every_number_of_the_library_door() -> None:
    """A Decimal, a Fraction or a NumPy number is the number it holds, in a card a program
    builds and in a registration's mapping (read by the config's rules), never a boolean; a
    Decimal is kept as the float nearest it, which the price's arithmetic takes."""
    from decimal import Decimal
    from fractions import Fraction

    import numpy as np

    from switchpoint.registration import model_card

    prices: list[Any] = [Decimal("0.25"), Fraction(1, 4), np.float32(0.25), 0.25]
    window: Any = Decimal(8192)  # (numbers outside ModelCard's annotations)
    for price in prices:
        entry = model_card({"name": "m", "input_per_mtok": price, "output_per_mtok": price,
                            "context_window": window})
        assert (entry.input_per_mtok, entry.context_window) == (0.25, 8192), price
        card = Catalog([ModelCard("m", input_per_mtok=price, output_per_mtok=price,
                                  context_window=window)]).cards[0]
        assert card.price(1_000_000, 1_000_000) == 0.5 and card.context_window == 8192, price
    assert type(ModelCard("m", input_per_mtok=prices[0]).input_per_mtok) is float
    refused: list[tuple[Any, str]] = [
        (Decimal("1e-400"), "1E-400 is too small a number to be told from 0"),
        (Decimal("NaN"), "must be a finite number"), (np.bool_(True), "not a boolean")]
    for bad, words in refused:
        with pytest.raises(InvalidInputError, match=words):
            model_card({"name": "m", "input_per_mtok": bad, "output_per_mtok": 1})
        with pytest.raises(InvalidInputError, match=words):
            Catalog([ModelCard("m", input_per_mtok=bad, output_per_mtok=1)])


def test_a_registrations_published_schema_states_the_cards_bounds() -> None:
    """The bounds the card's rules keep are stated in the schema of a registration's body."""
    fields = ModelEntry.model_json_schema()["properties"]
    assert {k: fields["name"][k] for k in ("minLength", "maxLength")} == {
        "minLength": 1, "maxLength": 256}
    assert fields["upstream_model"]["maxLength"] == 256
    assert fields["input_per_mtok"]["minimum"] == fields["output_per_mtok"]["minimum"] == 0
    assert fields["input_per_mtok"]["maximum"] == 100_000
    assert fields["context_window"]["exclusiveMinimum"] == 0
    assert fields["context_window"]["maximum"] == 100_000_000


def test_a_catalog_takes_its_cards_as_a_list_and_refuses_anything_else_naming_models() -> None:
    """A tuple is read as a list; a generator, which the catalog's checks would read up
    before its rule of auto found any card, is refused by its type, as None and a string
    are, not as a catalog of no model left to auto."""
    cards = (ModelCard(name="a"), ModelCard(name="b", auto=False))
    assert Catalog(cards).cards == list(cards)  # type: ignore[arg-type]
    for given, kind in (((card for card in cards), "generator"), (None, "None"), ("ab", "str")):
        with pytest.raises(InvalidInputError) as caught:
            Catalog(given)  # type: ignore[arg-type]
        assert str(caught.value) == f"models: must be a list of ModelCard objects, got {kind}"


def test_a_catalog_holds_as_many_models_as_a_config_may_list() -> None:
    """A config lists at most MAX_CATALOG_MODELS models; a catalog built in Python (or the
    config's with the models registered at run time) is bounded alike, in the same words."""
    from switchpoint.catalog import MAX_CATALOG_MODELS
    assert len(Catalog([ModelCard(name=f"m{i}") for i in range(MAX_CATALOG_MODELS)]).names) \
        == MAX_CATALOG_MODELS
    with pytest.raises(InvalidInputError) as in_python:
        Catalog([ModelCard(name=f"m{i}") for i in range(MAX_CATALOG_MODELS + 1)])
    assert in_python.value.field == "models"
    assert in_python.value.reason.startswith(
        f"must have at most {MAX_CATALOG_MODELS:,} items, got {MAX_CATALOG_MODELS + 1:,}")
    entries = [{"name": f"m{i}"} for i in range(MAX_CATALOG_MODELS + 1)]
    with pytest.raises(ValidationError) as in_settings:
        Settings.model_validate({"models": entries})
    assert f"at most {MAX_CATALOG_MODELS}" in str(in_settings.value).replace(",", "")


@pytest.mark.parametrize(("amount", "shown"), [
    (0.0, "$0.000000"), (1234.5, "$1,234.500000"), (0.000001, "$0.000001"),
    (1e-9, "$0.000000001"), (1.5e-9, "$0.0000000015"), (5e-7, "$0.0000005"),
    (1e-12, "$1.0e-12"), (0.00000145, "$0.00000145"), (1.2345678912, "$1.2345678912"),
    (-0.25, "$-0.250000"), (3.0, "$3.000000")])
def test_an_amount_of_dollars_that_is_not_zero_never_reads_as_zero(
        amount: float, shown: str) -> None:
    # At least six places; never rounded below the ten places dollars are kept to.
    assert usd_text(amount) == shown
    # A cost in units not known to be dollars is shown by the same places, with no $.
    assert cost_text(amount) == shown.replace("$", "")
