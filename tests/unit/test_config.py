"""The service config: YAML, environment overrides, errors that name the key path, and the
catalog it builds (including a model without a learned profile)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from switchpoint import config
from switchpoint._messages import too_long
from switchpoint.catalog import Catalog, ModelCard
from switchpoint.config import (
    COMMAND_LINE,
    MAX_CONFIG_BYTES,
    GatewaySettings,
    Settings,
    load_settings,
    shared_profile_note,
    shared_profiles,
)
from switchpoint.errors import ConfigError, InvalidInputError, WeightsError
from switchpoint.gateway.live import RouterFactory, checked_package
from switchpoint.weights import default_weights_path

CATALOG_EXAMPLE = """
models:
  - {name: good, profile: gpt-4-1106-preview, base_url: "http://127.0.0.1:9100/v1", api_key_env: GOOD_KEY, input_per_mtok: 10, output_per_mtok: 30, context_window: 128000, capabilities: [tools, vision], fallbacks: [other]}
  - {name: other, provider: mistral, input_per_mtok: 0.2, output_per_mtok: 0.6, tier: simple, upstream_model: mistral-small-latest}
"""  # noqa: E501  (the issue's example line, verbatim)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "switchpoint.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ=env or {})
    return str(info.value)


def test_defaults_without_a_file() -> None:
    s = load_settings(None, environ={})
    assert s.models is None and s.catalog() is None
    assert s.policy == "cluster" and s.cost_weight == 0.5
    assert s.cache.size == 10_000 and s.cache.ttl_seconds == 3600
    assert s.db_path == Path("data") / "switchpoint.db"
    assert s.store.synchronous == "full"


def test_the_issue_catalog_example_loads_and_routes(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, CATALOG_EXAMPLE), environ={})
    catalog = settings.catalog()
    assert catalog is not None and catalog.names == ["good", "other"]
    good = catalog["good"]
    assert good.profile == "gpt-4-1106-preview" and good.api_key_env == "GOOD_KEY"
    assert good.capabilities == ("tools", "vision") and good.fallbacks == ("other",)
    assert good.context_window == 128000 and good.price(1e6, 0) == 10
    assert catalog["other"].upstream_model == "mistral-small-latest"
    router = RouterFactory()(settings)
    assert router.models == ["good", "other"]
    d = router.route(embedding=[0.05] * 384, cost_weight_override=0)
    assert set(d.all_scores) == {"good", "other"}
    cheap = router.route(embedding=[0.05] * 384, cost_weight_override=50)
    assert cheap.selected_model == "other"
    assert any("no learned profile" in line for line in cheap.reasoning)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "cost_weight: 0.3\ncache: {size: 5, ttl_seconds: 9}\n")
    s = load_settings(path, environ={
        "SWITCHPOINT_COST_WEIGHT": "0.9", "SWITCHPOINT_CACHE__SIZE": "0",
        "SWITCHPOINT_POLICY": "knn", "SWITCHPOINT_DATA_DIR": "/tmp/sp-state",
        "SWITCHPOINT_STORE__SYNCHRONOUS": "normal",
        "SWITCHPOINT_DATA": "not a config key", "SWITCHPOINT_CACHE_DIR": "/tmp/sp-cache"})
    assert s.cost_weight == 0.9 and s.policy == "knn"
    assert s.cache.size == 0 and s.cache.ttl_seconds == 9  # the rest of the section stays
    assert s.data_dir == "/tmp/sp-state" and s.store.synchronous == "normal"


def test_a_variable_read_as_yaml_with_a_key_written_twice_is_refused_naming_it() -> None:
    """As in a config file: plain YAML would keep the second tenant of the same name."""
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"SWITCHPOINT_TENANTS": "{acme: {rpm: 5}, acme: {}}"})
    assert info.value.key == "tenants"
    assert "SWITCHPOINT_TENANTS" in str(info.value) and "written twice" in str(info.value)
    s = load_settings(None, environ={"SWITCHPOINT_TENANTS": "{acme: {rpm: 5}}"})
    assert s.tenants["acme"].rpm == 5


def test_command_line_overrides_the_environment() -> None:
    s = load_settings(None, overrides={"policy": "tiers", "weights": None},
                      environ={"SWITCHPOINT_POLICY": "knn"})
    assert s.policy == "tiers" and s.weights is None


@pytest.mark.parametrize(("overrides", "key"), [
    ({"data_dir": b"data"}, "data_dir"),
    ({"tenants": {"acme": {"models": [bytearray(b"strong")]}}}, "tenants.acme.models[0]"),
    ({"models": [{"name": "m", "base_url": b"https://me:hunter2secret@llm.example/v1"}]},
     "models[0].base_url"),
])
def test_bytes_where_a_config_takes_text_are_refused_by_type_never_decoded_nor_shown(
        overrides: dict[str, object], key: str) -> None:
    """(pydantic decoded them as UTF-8: a mapping passed in, or YAML's !!binary, set a key
    the caller had not written as text.)"""
    with pytest.raises(ConfigError) as info:
        load_settings(overrides=overrides)
    kind = "bytearray" if "acme" in key else "bytes"
    assert str(info.value) == (f"{key}: must be a string, got {kind} (not shown); decode them "
                               "to text first (value.decode()) (from overrides)")


@pytest.mark.parametrize(("text", "says"), [
    ("data_dir: 2021-02-28\n", 'data_dir: must be a string, got the date 2021-02-28 (YAML reads '
                              'an unquoted date as a date); quote it: "2021-02-28"'),
    ("models:\n  - name: 2021-02-28\n",
     'models[0].name: must be a string, got the date 2021-02-28 (YAML reads an unquoted date '
     'as a date); quote it: "2021-02-28"'),
    ("data_dir: 2021-02-28 10:11:12\n",
     "data_dir: must be a string, got the date and time 2021-02-28 10:11:12 (YAML reads an "
     'unquoted date and time as a date and time); quote it: "2021-02-28 10:11:12"'),
    ("cache: {ttl_seconds: 2021-02-28}\n", "cache.ttl_seconds: must be a number, got the date "
                                           "2021-02-28 (YAML reads an unquoted date as a date)"),
    ("tenants:\n  2021-02-28: {}\n", "tenants: a key must be a string, got the date 2021-02-28 "
                                     '(YAML reads an unquoted date as a date); quote it: '
                                     '"2021-02-28"'),
])
def test_an_unquoted_date_where_a_config_takes_text_is_refused_as_written_with_its_quotes(
        tmp_path: Path, text: str, says: str) -> None:
    """(It was shown as Python writes it, datetime.date(2021, 2, 28), with no word of why.)"""
    assert says in error_of(tmp_path, text)


@pytest.mark.parametrize(("text", "key"), [
    ("tenants: {KEY: {}}\n", "tenants"),
    ("policies: {KEY: ./p}\n", "policies"),
    ("experiments: {KEY: {arms: {a: {}, b: {cost_weight: 1}}}}\n", "experiments"),
    ("experiments: {e: {arms: {KEY: {}, b: {cost_weight: 1}}}}\n", "experiments.e.arms"),
    ("budgets: {models: {KEY: 5/day}}\n", "budgets.models"),
    ("budgets: {providers: {KEY: 5/day}}\n", "budgets.providers"),
    ("budgets: {models: {KEY: not a budget}}\n", "budgets.models"),  # (the key comes first)
])
def test_every_mapping_keyed_by_names_refuses_a_date_or_a_number_for_a_key_alike(
        tmp_path: Path, text: str, key: str) -> None:
    """(budgets.models and budgets.providers turned such a key into text, 2024-01-01 or 5,
    where the other mappings refused it.)"""
    date = error_of(tmp_path, text.replace("KEY", "2024-01-01"))
    assert date.startswith(f"{key}: a key must be a string, got the date 2024-01-01 (YAML reads "
                           'an unquoted date as a date); quote it: "2024-01-01"'), date
    assert error_of(tmp_path, text.replace("KEY", "5")).startswith(
        f"{key}: a key must be a string, got 5"), key


def test_a_budgeted_model_s_budgets_are_refused_at_its_key_path(tmp_path: Path) -> None:
    message = error_of(tmp_path, "budgets: {models: {\"a\\eb\": [5/day, x]}}\n")
    assert message.startswith('budgets.models.a\\u001bb: "x" is not a budget'), message


@pytest.mark.parametrize(("key", "says"), [
    (b"hunter2secret", "got bytes (not shown); decode them to text first (value.decode())"),
    (5, "got 5"),
])
def test_a_mapping_s_key_that_is_no_text_is_named_as_a_key_of_its_mapping_never_by_its_repr(
        key: object, says: str) -> None:
    """(The path named it as pydantic writes it, tenants.b'hunter2secret'.[key], showing the
    bytes the reason does not.)"""
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"tenants": {key: {}}})
    assert str(info.value) == f"tenants: a key must be a string, {says} (from overrides)"


def test_a_bad_key_of_a_config_mapping_given_in_python_says_it_came_from_that_mapping(
        tmp_path: Path) -> None:
    from switchpoint import Gateway
    from switchpoint.labelling import label

    data_dir = tmp_path / "data"
    with pytest.raises(ConfigError) as info:  # (a program's own overrides: no command line)
        load_settings(overrides={"cost_weight": 0.2, "models": 5})
    assert str(info.value) == "models: must be a list, got 5 (from overrides)"
    with pytest.raises(ConfigError) as info:  # (a command's flags, as its caller says)
        load_settings(overrides={"models": 5}, overrides_from=COMMAND_LINE)
    assert str(info.value) == "models: must be a list, got 5 (from the command line)"
    for call in (lambda: Gateway.from_config({"cost_weight": -1, "data_dir": str(data_dir)}),
                 lambda: label(["Hi"], ["m"], tmp_path / "out.jsonl",
                               config={"cost_weight": -1})):
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value) == ("cost_weight: must be >= 0, got -1 "
                                   "(from the config mapping passed in)")
    assert not data_dir.exists()


def test_relative_paths_in_the_file_are_relative_to_it(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "data_dir: state\n"), environ={})
    assert Path(s.data_dir) == tmp_path / "state"


def test_reloaded_reads_the_file_again(tmp_path: Path) -> None:
    path = write(tmp_path, "cost_weight: 0.3\n")
    s = load_settings(path)
    path.write_text("cost_weight: 2\n", encoding="utf-8")
    assert s.reloaded().cost_weight == 2
    assert Settings().reloaded() == Settings()


def test_a_model_s_numbers_and_names_read_as_yaml_writes_them(tmp_path: Path) -> None:
    """A price or a window is a number as YAML writes one (1 an int, 1.5 a float, 1.0e+3 in
    an exponent), never text; a name at the bounds is taken; the rules refuse only past them."""
    settings = load_settings(write(tmp_path, (
        "models:\n  - {name: a, input_per_mtok: 1, output_per_mtok: 1.5, context_window: 8192,"
        " fallbacks: [b, c], upstream_model: " + "u" * 256 + "}\n"
        "  - {name: b, input_per_mtok: 0, output_per_mtok: 1.0e+3, base_url: "
        "'http://[::1]:8000/v1'}\n  - {name: c}\n")), environ={})
    catalog = settings.catalog()
    assert catalog is not None
    a, b = catalog["a"], catalog["b"]
    assert (a.input_per_mtok, a.output_per_mtok, a.context_window) == (1.0, 1.5, 8192)
    assert (b.input_per_mtok, b.output_per_mtok) == (0.0, 1000.0)
    assert a.fallbacks == ("b", "c") and a.upstream_model == "u" * 256


def test_a_catalog_built_in_python_takes_the_config_s_rules_of_fallbacks_and_base_url() -> None:
    with pytest.raises(InvalidInputError) as twice:
        Catalog([ModelCard(name="a", fallbacks=("b", "b")), ModelCard(name="b")])
    assert twice.value.field == "models.a.fallbacks"
    assert 'names "b" more than once; name each fallback once' in str(twice.value)
    with pytest.raises(InvalidInputError) as hostless:
        Catalog([ModelCard(name="a", base_url="http:///v1")])
    assert hostless.value.field == "models.a.base_url"
    assert 'has no host, got "http:///v1"' in str(hostless.value)


def test_a_model_named_as_another_s_profile_without_its_own_is_found_sharing_it(
        tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, (
        "models:\n  - {name: gpt-4o, profile: gpt-4-1106-preview}\n"
        "  - {name: gpt-4-1106-preview}\n  - {name: grader, profile: gpt-4-1106-preview}\n"
        "  - {name: mini, profile: gpt-3.5-turbo-1106}\n"
        "  - {name: gpt-3.5-turbo-1106, profile: gpt-3.5-turbo-1106}\n")), environ={})
    assert settings.models is not None
    shared = shared_profiles(settings.models)
    # (the one by its name alone, with the first that names it; one that says so is not)
    assert [(m.name, o.name) for m, o in shared] == [("gpt-4-1106-preview", "gpt-4o")]
    assert shared_profile_note(*shared[0]) == (
        'model "gpt-4-1106-preview" has no profile:, so it routes on the weights\' learned '
        'profile of its name, "gpt-4-1106-preview", which model "gpt-4o" uses (its profile:): '
        "it takes that model's learned quality, whatever it is and costs")


@pytest.mark.parametrize(("text", "expected"), [
    ("models:\n  - {name: good, input_per_mtok: -1}\n",
     "models[0].input_per_mtok: must be >= 0, got -1"),
    ("models:\n  - {name: a}\n  - {name: b, output_per_mtok: cheap}\n",
     "models[1].output_per_mtok: must be a number, got \"cheap\""),
    ("models:\n  - {name: a, capabilities: [telepathy]}\n",
     'models[0].capabilities[0]: must be one of "tools", "vision", "code", "json" or '
     '"streaming", got "telepathy"'),
    ("models:\n  - {name: a, tier: godlike}\n", "models[0].tier: must be one of"),
    ("models:\n  - {name: a, base_url: ftp://x}\n", "models[0].base_url: must start with http"),
    ("models:\n  - {name: a, api_key_env: 'not a var'}\n", "models[0].api_key_env: must be"),
    ("models:\n  - {name: a, context_window: 0}\n", "models[0].context_window: must be > 0"),
    ("models:\n  - {profile: x}\n", "models[0].name: is required"),
    ("models:\n  - {name: a, pricee: 1}\n", "models[0].pricee: is not a known key"),
    ("models:\n  - {name: a}\n  - {name: a}\n", 'models[1].name: "a" is defined twice'),
    ("models:\n  - {name: a, fallbacks: [b]}\n", 'models[0].fallbacks[0]: "b" is not a model'),
    ("models:\n  - {name: a, fallbacks: [b, c, b]}\n  - {name: b}\n  - {name: c}\n",
     'models[0].fallbacks: names "b" more than once; name each fallback once: they are tried '
     "in order, each at most once, so a repeat is never tried"),
    ("models:\n  - {name: a, base_url: 'http:///v1'}\n",
     'models[0].base_url: has no host, got "http:///v1": a request needs one to go to; write '
     "it after the scheme's //"),
    ("models:\n  - {name: a, base_url: 'http://:8000/v1'}\n",
     'models[0].base_url: has no host, got "http://:8000/v1"'),
    ("models:\n  - {name: a, upstream_model: " + "u" * 257 + "}\n",
     "models[0].upstream_model: must have at most 256 characters, got 257"),
    ("models:\n  - {name: a, upstream_model: ''}\n",
     "models[0].upstream_model: must not be empty"),
    ("models:\n  - {name: a, capabilities: [tools, vision, tools]}\n",
     'models[0].capabilities: names "tools" more than once; name each capability once'),
    ("models:\n  - {name: a, input_per_mtok: '1', output_per_mtok: 1}\n",
     'models[0].input_per_mtok: must be a number, got "1" (text: write the number without '
     "quotes)"),
    ("models:\n  - {name: a, input_per_mtok: 1, output_per_mtok: .nan}\n",
     "models[0].output_per_mtok: must be a finite number (not NaN or infinity)"),
    ("models:\n  - {name: a, context_window: '8192'}\n",
     'models[0].context_window: must be a number, got "8192" (text'),
    ("models:\n  - {name: a, context_window: .nan}\n",
     "models[0].context_window: must be a finite number"),
    ("models:\n  - {name: auto}\n", 'models[0].name: "auto" is reserved'),
    ("models: []\n", "models: is empty"),
    ("cost_weight: -0.5\n", "cost_weight: must be >= 0, got -0.5"),
    ("cost_weight: .nan\n", "cost_weight: must be a finite number"),
    ("learning: {exploration: .nan}\n", "learning.exploration: must be a finite number"),
    ("gateway: {error_rate_threshold: .nan}\n", "error_rate_threshold: must be a finite number"),
    ("gateway: {error_rate_threshold: 0}\n",
     "gateway.error_rate_threshold: must be > 0 (0 would open a model's circuit at any failure"),
    ("gateway: {error_rate_threshold: 1.5}\n", "gateway.error_rate_threshold: must be <= 1"),
    ("gateway: {cooldown_s: 0}\n", "gateway.cooldown_s: must be > 0"),
    ("gateway: {failure_threshold: 0}\n", "gateway.failure_threshold: must be >= 1"),
    ("gateway: {health_window_s: 0}\n", "gateway.health_window_s: must be > 0, got 0"),
    ("gateway: {health_window_s: 1.0e+9}\n", "gateway.health_window_s: must be <= 86,400"),
    ("gateway: {health_window_s: .nan}\n", "gateway.health_window_s: must be a finite number"),
    ("gateway: {health_window: 0}\n", "gateway.health_window: must be >= 1"),
    ("gateway: {health_window: 10001}\n", "gateway.health_window: must be <= 10,000"),
    ("gateway: {health_min_samples: 0}\n", "gateway.health_min_samples: must be >= 1"),
    ("gateway: {health_min_samples: 2.5}\n", "gateway.health_min_samples: "),
    ("gateway: {health_window: 10, health_min_samples: 11}\n",
     "gateway: health_min_samples (11) must be <= health_window (10): the window never holds "
     "more calls than that, so the error-rate rule could never judge; raise health_window or "
     "lower health_min_samples"),
    ("gateway: {health_min_samples: 60}\n",
     "gateway: health_min_samples (60) must be <= health_window (50)"),
    ("gateway: {backoff_base_s: 1, backoff_cap_s: 0.5}\n",
     "gateway: backoff_cap_s (0.5) must be >= backoff_base_s (1): the cap would hold every "
     "backoff under the base; for retries without a wait set both to 0"),
    ("gateway: {pin_soft_bonus: 1.0e+5}\n", "gateway.pin_soft_bonus: must be <= 10,000"),
    ("gateway: {degraded_latency_ms: 1.0e+12}\n", "gateway.degraded_latency_ms: must be <= "),
    ("models:\n  - {name: a, input_per_mtok: 1.0e+300, output_per_mtok: 1}\n",
     "models[0].input_per_mtok: must be <= 100,000, got 1e+300"),
    ("models:\n  - {name: a, input_per_mtok: 1, output_per_mtok: 100001}\n",
     "models[0].output_per_mtok: must be <= 100,000, got 100001"),
    ("sla: {budget_per_hour_usd: 1.0e+300}\n", "sla.budget_per_hour_usd: must be <= 1,000,000,000"),
    ("sla: {budget_per_hour_usd: 0}\n", "sla.budget_per_hour_usd: must be > 0 (0 would count "
     "every request that costs anything as over budget); leave it out for no hourly budget"),
    ("tenants: {acme: {sla: {budget_per_hour_usd: 0}}}\n",
     "tenants.acme.sla.budget_per_hour_usd: must be > 0"),
    ("cache: {size: -1}\n", "cache.size: must be >= 0, got -1"),
    ("cache: {size: true}\n", "cache.size: must be a number, not a boolean (true/false)"),
    ("models:\n  - {name: a, context_window: true}\n", "models[0].context_window: must be a "
     "number, not a boolean"),
    ("governance: {image_tokens: false}\n", "governance.image_tokens: must be a number, not a"),
    ("learning: {seed: true}\n", "learning.seed: must be a number, not a boolean"),
    ("store: {retention_days: true}\n", "store.retention_days: must be a number, not a "),
    ("server: {backlog: yes}\n", "server.backlog: must be a number, not a boolean"),
    ("tenants: {acme: {budget_curve: [[0.5, true], [1, 1]]}}\n",
     "tenants.acme.budget_curve[0][1]: must be a number, not a boolean"),
    ("cache: {size: 100000000000000000000}\n", "cache.size: must be <= 10,000,000, got 1000"),
    ("cache: {size: 1.0e+20}\n", "cache.size: is too large for an integer, got 1e+20"),
    ("cache: {ttl_seconds: 1.0e+20}\n", "cache.ttl_seconds: must be <= 31,622,400"),
    ("max_request_bytes: 1.0e+14\n", "max_request_bytes: must be <= 1,073,741,824, got 1"),
    ("max_request_bytes: 100000000000000\n", "max_request_bytes: must be <= 1,073,741,824"),
    ("expected_output_tokens: 9223372036854775808\n", "must be <= 100,000,000"),
    ("models:\n  - {name: a, context_window: 10000000000}\n",
     "models[0].context_window: must be <= 100,000,000"),
    ("server: {max_connections: 1000000000000}\n", "server.max_connections: must be <= 1,000,000"),
    ("gateway: {max_response_bytes: 100000000000000}\n", "max_response_bytes: must be <= "),
    ("gateway: {max_sse_line_bytes: 100000000000000}\n", "max_sse_line_bytes: must be <= "),
    ("gateway: {max_upstream_connections: 1000000000}\n", "must be <= 100,000"),
    ("gateway: {max_in_flight_per_tenant: 10000000}\n",
     "gateway.max_in_flight_per_tenant: must be <= 1,000,000"),
    ("gateway: {failure_threshold: 1000000000}\n", "gateway.failure_threshold: must be <= 1,000"),
    ("store: {retention_days: 1.0e+300}\n", "store.retention_days: must be <= 36,525"),
    ("gateway: {max_total_s: 1.0e+308}\n", "gateway.max_total_s: must be <= 86,400"),
    ("gateway: {cooldown_s: 1.0e+9, max_cooldown_s: 2.0e+9}\n", "gateway.cooldown_s: must be"),
    ("gateway: {pin_soft_window_s: 1.0e+12}\n", "gateway.pin_soft_window_s: must be <= "),
    ("server: {header_timeout_s: 1.0e+100}\n", "server.header_timeout_s: must be <= 86,400"),
    ("server: {shutdown_timeout_s: 1.0e+100}\n", "server.shutdown_timeout_s: must be <= 86,400"),
    ("server: {shutdown_timeout_s: -1}\n", "server.shutdown_timeout_s: must be >= 0"),
    ("server: {trusted_proxies: [10.0.0.1, nginx]}\n",
     'server.trusted_proxies[1]: "nginx" is not an IP address or a network: write an address '
     "(10.0.0.5, ::1) or a network in CIDR notation (10.0.0.0/8, fd00::/8), not a host name"),
    ("server: {trusted_proxies: ['*']}\n", 'server.trusted_proxies[0]: "*" would take every '
     "peer for a proxy, so any client could claim any address"),
    ("server: {trusted_proxies: [10.0.0.1/8]}\n", 'server.trusted_proxies[0]: "10.0.0.1/8" has '
     "bits set past its prefix length: write the network as 10.0.0.0/8, or the one address as "
     "10.0.0.1"),
    ("server: {trusted_proxies: ['fe80::1%eth0']}\n", "server.trusted_proxies[0]: "
     '"fe80::1%eth0" has a zone'),
    ("server: {trusted_proxies: [10.0.0.0/33]}\n", 'server.trusted_proxies[0]: "10.0.0.0/33" '
     "is not an IP address or a network"),
    ("server: {trusted_proxies: ['" + "a" * 5000 + "']}\n", '"' + "a" * 57 + '…" is not an '),
    ("server: {trusted_proxies: 10.0.0.1}\n", "server.trusted_proxies: must be a list"),
    ("server: {trusted_proxies: [" + ", ".join(["10.0.0.1"] * 101) + "]}\n",
     "server.trusted_proxies: "),
    ("gateway: {nat64_prefixes: ['2001:db8::/32', 10.0.0.0/8]}\n",
     'gateway.nat64_prefixes[1]: "10.0.0.0/8" is not an IPv6 network in CIDR notation: write '
     "the prefix the translator uses, such as 2001:db8:64::/96 or 2001:db8::/32"),
    ("gateway: {nat64_prefixes: ['2001:db8::/33']}\n", 'gateway.nat64_prefixes[0]: '
     '"2001:db8::/33" is a /33, and a NAT64 prefix is one of /32, /40, /48, /56, /64, /96 '
     "(which says where the IPv4 address sits)"),
    ("gateway: {nat64_prefixes: ['2001:db8::1/96']}\n", 'gateway.nat64_prefixes[0]: '
     '"2001:db8::1/96" has bits set past its prefix length: write the prefix as 2001:db8::/96'),
    ("gateway: {nat64_prefixes: [nat64.internal]}\n", 'gateway.nat64_prefixes[0]: '
     '"nat64.internal" is not an IPv6 network: write the prefix'),
    ("gateway: {nat64_prefixes: [" + ", ".join(["'2001:db8::/96'"] * 17) + "]}\n",
     "gateway.nat64_prefixes: must have at most 16 items, got 17"),
    ("server: {allowed_hosts: [api.internal, 'https://router.example.com:8443/v1']}\n",
     'server.allowed_hosts[1]: "https://router.example.com:8443/v1" is a URL: write '
     "router.example.com alone, as a Host header names it"),
    ("server: {allowed_hosts: [api.internal/v1]}\n",
     'server.allowed_hosts[0]: "api.internal/v1" has a path: write api.internal alone'),
    ("server: {allowed_hosts: ['api.internal:8080']}\n",
     'server.allowed_hosts[0]: "api.internal:8080" has a port: write api.internal alone; '
     "every port of it is allowed"),
    ("server: {allowed_hosts: ['*.example.com']}\n", 'server.allowed_hosts[0]: "*.example.com" '
     "holds a wildcard, which only '*' alone takes (any host, no check): list each name"),
    ("server: {allowed_hosts: ['']}\n", 'server.allowed_hosts[0]: "" is empty: write a host '
     "name (api.internal) or an IP address"),
    ("server: {allowed_hosts: [api internal, -api.internal, 'api..internal']}\n",
     'server.allowed_hosts[0]: "api internal" is not a host name or an IP address: write a '
     "name of letters, digits, hyphens and dots (api.internal, router.example.com), an "
     "address (10.0.0.5, ::1), or '*' for any host"),
    ("server: {allowed_hosts: [" + "a" * 64 + ".example]}\n",
     'server.allowed_hosts[0]: "' + "a" * 57 + '…" is not a host name'),
    ("server: {allowed_hosts: api.internal}\n", "server.allowed_hosts: must be a list"),
    ("server: {allowed_hosts: [" + ", ".join(f"h{n}.internal" for n in range(101)) + "]}\n",
     "server.allowed_hosts: "),
    ("governance: {max_output_tokens: 10000000000}\n", "max_output_tokens: must be <="),
    ("governance: {image_tokens: 10000000000}\n", "image_tokens: must be <= 1,000,000"),
    ("governance: {reservation_grace_s: 0.5}\n", "governance.reservation_grace_s: must be >= 1"),
    ("governance: {reservation_grace_s: 3601}\n",
     "governance.reservation_grace_s: must be <= 3,600, got 3601"),
    ("learning: {seed: 100000000000000000000}\n", "seed: must be <= 9,223,372,036,854,775,807"),
    ("cache: {ttl: 5}\n", "cache.ttl: is not a known key (check its spelling); known keys "
                          "here: \"size\", \"ttl_seconds\""),
    ("policy: nonsense\n", 'policy: "nonsense" has no bundled weights'),
    ("weights: ./nowhere\n", "weights: "),
    ("policies: {mine: ./nowhere}\n", "policies.mine: "),
    ("policies: {'': ./nowhere}\n", 'policies: policy name "" must be 1-64 letters, digits, "_", '
                                   '"." or "-", starting with a letter or digit'),
    ("policies: {a/b: ./nowhere}\n", "policies: policy name \"a/b\" must be 1-64 letters"),
    ("policies: {my policy: ./nowhere}\n", "policies: policy name \"my policy\" must be 1-64"),
    ("policies: {\"mine\\n\": ./nowhere}\n", "policies: policy name \"mine\\n\" must be 1-64"),
    ("policies: {" + "p" * 65 + ": ./nowhere}\n", "policies: policy name \"ppp"),
    ("tenants: {\"acme\\n\": {}}\n", "tenants: tenant name \"acme\\n\" must be 1-64"),
    ("experiments: {\"ab\\n\": {arms: {a: {}, b: {cost_weight: 1}}}}\n",
     "experiments: experiment name \"ab\\n\" must be 1-64"),
    ("max_request_bytes: 10\n", "max_request_bytes: must be >= 1,024, got 10"),
    ("store: {synchronous: sometimes}\n", "store.synchronous: must be one of"),
    ("expected_output_tokens: many\n", "expected_output_tokens: must be an integer"),
    ("cost_weigth: 1\n", "cost_weigth: is not a known key"),
    ("admin_token_env: 'not a var'\n", "admin_token_env: must be the name of the environment"),
    ("admin_token_env: \"SP_TOKEN\\n\"\n", "admin_token_env: must be the name of the environment"),
    ("cors: {allow_origins: [\"https://app.example\\n\"]}\n",
     'cors.allow_origins: "https://app.example\\n" is not an origin'),
    ("cors: {allow_origins: ['https://" + "a" * 5000 + "/']}\n",
     'cors.allow_origins: "https://' + "a" * 49 + '…" is not an origin'),
    ("- just\n- a list\n", "config: "),
    ("models: [\n", "config: "),
])
@pytest.mark.usefixtures("fresh_secrets")  # (values of one letter repeated, quoted and cut)
def test_errors_name_the_key_path(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_the_lists_of_models_policies_tenants_experiments_and_arms_are_bounded(
    tmp_path: Path,
) -> None:
    def mapping(key: str, n: int, value: str) -> str:
        return f"{key}: {{" + ", ".join(f"x{i}: {value}" for i in range(n)) + "}\n"

    for text, expected in (
        ("models: [" + ", ".join(f"{{name: m{i}}}" for i in range(1001)) + "]\n",
         "models: must have at most 1,000 items, got 1,001"),
        (mapping("policies", 101, "./p"), "policies: must have at most 100 entries, got 101"),
        (mapping("tenants", 10_001, "{}"), "tenants: must have at most 10,000 entries, got "
                                           "10,001"),
        (mapping("experiments", 101, "{arms: {a: {}, b: {}}, enabled: false}"),
         "experiments: must have at most 100 entries, got 101"),
        ("experiments: {e: {arms: {" + ", ".join(f"a{i}: {{}}" for i in range(17)) + "}}}\n",
         "experiments.e.arms: must have at most 16 entries, got 17"),
    ):
        assert error_of(tmp_path, text) == expected
    # at the bounds, each is taken
    s = load_settings(write(tmp_path, mapping("tenants", 10_000, "{}") + mapping(
        "experiments", 100, "{arms: {a: {}, b: {}}, enabled: false}")), environ={})
    assert (len(s.tenants), len(s.experiments)) == (10_000, 100)
    s = load_settings(write(tmp_path, "models: [" + ", ".join(
        f"{{name: m{i}, input_per_mtok: 1, output_per_mtok: 1}}" for i in range(1000)) + "]\n"),
        environ={})
    assert s.models is not None and len(s.models) == 1000


def test_every_list_of_names_in_the_config_is_bounded(tmp_path: Path) -> None:
    """Each list of model or tenant names holds at most what the catalog or the tenants could
    (a longer one can only repeat names), and a λ curve at most 100 points: a config file is
    read whole at every reload, and some of these are read by every request."""
    names = "[" + ", ".join(["a"] * 1002) + "]"
    catalog = "models:\n  - {name: a, input_per_mtok: 1, output_per_mtok: 1}\n"
    curve = "[" + ", ".join(f"[{i}, 0.1]" for i in range(101)) + "]"
    for text, expected in (
        ("models:\n  - {name: a, fallbacks: " + names + "}\n",
         "models[0].fallbacks: must have at most 1,000 items, got 1,002"),
        ("models:\n  - {name: a, capabilities: [tools, vision, code, json, streaming, "
         "tools]}\n", "models[0].capabilities: must have at most 5 items, got 6"),
        (catalog + "tenants: {acme: {models: " + names + "}}\n",
         "tenants.acme.models: must have at most 1,001 items, got 1,002"),
        (catalog + "tenants: {acme: {budget_curve: " + curve + "}}\n",
         "tenants.acme.budget_curve: 101 points given; give at most 100"),
        ("budgets: {models: {" + ", ".join(f"m{i}: 1/day" for i in range(1001)) + "}}\n",
         "budgets.models: must have at most 1,000 entries, got 1,001"),
        ("experiments: {e: {arms: {a: {models: " + names + "}, b: {}}}}\n",
         "experiments.e.arms.a.models: must have at most 1,001 items, got 1,002"),
        ("tenants: {acme: {}}\nexperiments: {e: {arms: {a: {}, b: {}}, tenants: ["
         + ", ".join(["acme"] * 10_001) + "]}}\n",
         "experiments.e.tenants: must have at most 10,000 items, got 10,001"),
        # (each copy was kept: a report and every refusal naming the tenants repeated them)
        ("tenants: {acme: {}}\nexperiments: {e: {arms: {a: {}, b: {}}, tenants: ["
         + ", ".join(["acme"] * 2) + "]}}\n",
         'experiments.e.tenants: lists "acme" twice; list each tenant once'),
    ):
        assert error_of(tmp_path, text).startswith(expected), text[:80]


@pytest.mark.parametrize(("text", "expected"), [
    ("allow_unauthenticated: 1\n", "allow_unauthenticated: must be true or false, not the "
                                   "number 1"),
    ("gateway: {prefer_healthy: 1}\n", "gateway.prefer_healthy: must be true or false, not "
                                       "the number 1"),
    ("models:\n  - {name: a, auto: 0}\n", "models[0].auto: must be true or false, not the "
                                          "number 0"),
    ("models:\n  - {name: a, stream_usage: 1.0}\n", "models[0].stream_usage: must be true or "
                                                    "false, not the number 1.0"),
    ("sla: {auto_escalate_on_breach: 0}\n", "sla.auto_escalate_on_breach: must be true or "
                                            "false, not the number 0"),
    ("experiments: {e: {arms: {a: {}, b: {}}, enabled: 1}}\n", "experiments.e.enabled: must "
     "be true or false, not the number 1"),
    ("allow_unauthenticated: 'yes'\n", "allow_unauthenticated: must be true or false, not the "
                                       "string \"yes\""),
])
def test_a_boolean_key_takes_only_true_or_false_in_the_file(tmp_path: Path, text: str,
                                                             expected: str) -> None:
    assert expected in error_of(tmp_path, text)


def test_a_boolean_given_as_a_numpy_scalar_is_taken_or_shown_as_its_value() -> None:
    """A NumPy boolean is a boolean; a NumPy number is refused, shown as the number it holds
    (1.0), never as its repr (np.float64(1.0)), by the one rule for a number in a message."""
    s = load_settings(overrides={"allow_unauthenticated": np.True_,
                                 "gateway": {"prefer_healthy": np.False_}}, environ={})
    assert s.allow_unauthenticated is True and s.gateway.prefer_healthy is False
    for value, shown in ((np.float64(1.0), "the number 1.0"), (np.int64(0), "the number 0"),
                         (np.float64("nan"), "the number NaN")):
        with pytest.raises(ConfigError) as info:
            load_settings(overrides={"allow_unauthenticated": value}, environ={})
        assert f"allow_unauthenticated: must be true or false, not {shown}" in str(info.value)
        assert "np." not in str(info.value)


def test_a_boolean_keys_variable_takes_the_usual_spellings(tmp_path: Path) -> None:
    for raw, taken in (("1", True), ("yes", True), ("TRUE", True), ("on", True), ("0", False),
                       ("no", False), ("False", False), ("off", False)):
        s = load_settings(None, environ={"SWITCHPOINT_ALLOW_UNAUTHENTICATED": raw,
                                         "SWITCHPOINT_GATEWAY__PREFER_HEALTHY": raw,
                                         "SWITCHPOINT_SLA__AUTO_ESCALATE_ON_BREACH": raw})
        assert s.allow_unauthenticated is taken and s.gateway.prefer_healthy is taken
        assert s.sla is not None and s.sla.auto_escalate_on_breach is taken
    # the variable's word overrides the file's boolean
    path = write(tmp_path, "allow_unauthenticated: true\n")
    assert load_settings(path, environ={"SWITCHPOINT_ALLOW_UNAUTHENTICATED": "0"}
                         ).allow_unauthenticated is False
    message = error_of(tmp_path, "", env={"SWITCHPOINT_ALLOW_UNAUTHENTICATED": "2"})
    assert message == ("allow_unauthenticated: must be true or false, not the string \"2\" "
                       "(from SWITCHPOINT_ALLOW_UNAUTHENTICATED)")


@pytest.mark.parametrize("text", [
    "models:\n  - {name: a, api_key_env: sk-proj-Abc123def456ghi789jkl}\n",
    "admin_token_env: 3f9a1c0b7e5d2a4c6e8f0a1b3c5d7e9f\n",
    "admin_token_env: 'correct horse battery staple'\n",
    "admin_token_env: a3f9c0b7e5d2a4c6e8f0a1b3c5d7e9f1\n",
    "models:\n  - {name: a, api_key_env: Zk3q9XbT0pLmN4vR7sW2yH}\n",
])
def test_a_secret_pasted_where_a_variable_name_goes_is_not_repeated(tmp_path: Path,
                                                                    text: str) -> None:
    secret = text.split(": ")[-1].strip("}'\n")
    message = error_of(tmp_path, text)
    assert "must be the name of the environment variable" in message
    assert secret not in message and secret[:12] not in message


def test_edge_values_that_mean_off_are_accepted(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, """gateway: {backoff_base_s: 0, backoff_cap_s: 0,
  max_retry_after_s: 0, pin_hard_window_s: 0, pin_soft_window_s: 0, error_rate_threshold: 1}
cache: {ttl_seconds: 0}
"""), environ={})
    g = s.gateway
    assert (g.backoff_base_s, g.backoff_cap_s, g.pin_soft_window_s, g.error_rate_threshold) == (
        0, 0, 0, 1)
    assert s.cache.ttl_seconds == 0


def test_the_breakers_window_and_minimum_of_calls_come_from_the_file_or_the_environment(
    tmp_path: Path,
) -> None:
    assert (Settings().gateway.health_window, Settings().gateway.health_min_samples) == (50, 5)
    path = write(tmp_path, "gateway: {health_window: 200, health_min_samples: 20}\n")
    g = load_settings(path, environ={}).gateway
    assert (g.health_window, g.health_min_samples) == (200, 20)
    g = load_settings(path, environ={"SWITCHPOINT_GATEWAY__HEALTH_MIN_SAMPLES": "200"}).gateway
    assert (g.health_window, g.health_min_samples) == (200, 200)  # equal: the whole window
    message = error_of(tmp_path, "gateway: {health_window: 200}\n",
                       env={"SWITCHPOINT_GATEWAY__HEALTH_WINDOW": "3"})
    assert "health_min_samples (5) must be <= health_window (3)" in message


def test_a_reload_refuses_an_unbounded_value_too(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "cache: {size: 10}\n"), environ={})
    write(tmp_path, "cache: {size: 10}\nmax_request_bytes: 100000000000000\n")
    with pytest.raises(ConfigError, match="max_request_bytes: must be <= 1,073,741,824"):
        settings.reloaded()


def test_env_errors_say_which_variable(tmp_path: Path) -> None:
    message = error_of(tmp_path, "", {"SWITCHPOINT_CACHE__SIZE": "lots"})
    assert message == "cache.size: must be an integer, got \"lots\" (from SWITCHPOINT_CACHE__SIZE)"


@pytest.mark.parametrize(("env", "expected"), [
    ({"SWITCHPOINT_GATEWAY__NOPE": "1"}, "gateway.nope: is not a known key (check its "
                                         "spelling); known keys here: \"connect_timeout_s\", "),
    ({"SWITCHPOINT_GATEWAY__FIRST_TOKEN_TIMOUT_S": "5"}, "gateway.first_token_timout_s: is not "
     "a known key (check its spelling: did you mean \"first_token_timeout_s\"?); known keys "
     "here: "),
    ({"SWITCHPOINT_CACHE__SIZ": "3"}, "cache.siz: is not a known key (check its spelling: did "
     "you mean \"size\"?); known keys here: \"size\", \"ttl_seconds\" (from "
     "SWITCHPOINT_CACHE__SIZ)"),
    ({"SWITCHPOINT_SLA__MAX_LATENCY": "900"}, "sla.max_latency: is not a known key (check its "
     "spelling: did you mean \"max_latency_ms\"?)"),
    ({"SWITCHPOINT_GATEWAI__HEALTH_WINDOW": "9"}, "gatewai: is not a known key (check its "
     "spelling: did you mean \"gateway\"?)"),
    ({"SWITCHPOINT_COST_WEIGHT__X": "1"}, "cost_weight: holds a value, not keys, so "
     "SWITCHPOINT_COST_WEIGHT__X names no config key; set it whole in SWITCHPOINT_COST_WEIGHT"),
])
def test_a_variable_whose_path_names_no_config_key_is_refused_naming_it(
        tmp_path: Path, env: dict[str, str], expected: str) -> None:
    """A ``__`` path, as a typo in the file is: not silently ignored."""
    message = error_of(tmp_path, "cache: {size: 5}\n", env)
    assert message.startswith(expected), message
    assert next(iter(env)) in message


def test_an_unknown_key_lists_every_key_of_its_section_quoted(tmp_path: Path) -> None:
    """The gateway section has more keys than a message lists of other names (26, past 20):
    each is offered, quoted as JSON writes a name, none of them left as "and 6 more"."""
    message = error_of(tmp_path, "gateway: {nope: 1}\n")
    keys = list(GatewaySettings.model_fields)
    assert len(keys) > 20
    listed = ", ".join(json.dumps(key) for key in keys)
    assert message.startswith(f"gateway.nope: is not a known key (check its spelling); known "
                              f"keys here: {listed}"), message
    assert " more" not in message


def test_variables_that_are_no_config_path_are_left_alone_and_a_section_key_is_read() -> None:
    # (the project's own variables, read elsewhere: the config file, the cache folder, ...)
    own = {name: "x" for name in ("SWITCHPOINT_CONFIG", "SWITCHPOINT_DATA",
                                  "SWITCHPOINT_CACHE_DIR", "SWITCHPOINT_ADMIN_TOKEN",
                                  "SWITCHPOINT_API_KEY", "SWITCHPOINT_TEST_PORTS",
                                  "SWITCHPOINT_BENCH_PORTS", "SWITCHPOINT_BENCH_CACHE")}
    settings = load_settings(None, environ={**own, "SWITCHPOINT_SLA__MAX_LATENCY_MS": "900"})
    assert settings.sla is not None and settings.sla.max_latency_ms == 900
    alone = load_settings(None, environ={"SWITCHPOINT_SLA__MAX_LATENCY_MS": "900"})
    assert settings.model_dump() == alone.model_dump()


def test_admin_token_is_read_from_the_named_variable() -> None:
    assert load_settings(None, environ={}).admin_token is None
    # Unset, the config still loads (only serving HTTP needs the token), saying what is wrong.
    unset = load_settings(None, overrides={"admin_token_env": "SP_UNSET_TOKEN"}, environ={})
    assert unset.admin_token is None
    assert unset.admin_token_problem == ("$SP_UNSET_TOKEN is not set or empty; export the admin "
                                         "token there, or drop admin_token_env to leave "
                                         "/v1/router/* open")
    settings = load_settings(None, overrides={"admin_token_env": "SP_TOKEN"},
                             environ={"SP_TOKEN": " t0ken-long-enough-42\n"})
    assert settings.admin_token == "t0ken-long-enough-42" and settings.admin_token_env == "SP_TOKEN"
    assert "t0ken-long-enough-42" not in repr(settings)  # the secret stays out of reprs and logs


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "absent.yaml", environ={})


def test_a_missing_config_file_is_named_as_the_caller_took_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from switchpoint import Gateway
    from switchpoint.cli import main
    from switchpoint.labelling import label

    absent = tmp_path / "nope.yaml"
    shown = repr(str(absent))
    for call, arg in ((lambda: load_settings(absent, environ={}), "path"),
                      (lambda: Gateway.from_config(absent), "config"),
                      (lambda: label(["Hi"], ["m"], tmp_path / "out.jsonl", config=absent),
                       "config")):
        with pytest.raises(ConfigError) as info:
            call()
        assert str(info.value) == (f"config: {shown} not found; pass an existing YAML file "
                                   f"as {arg}")
    with pytest.raises(ConfigError) as info:
        Gateway.from_config(tmp_path)
    assert str(info.value).endswith(f"is a directory; pass the YAML file itself as config "
                                    f"(e.g. {str(tmp_path / 'switchpoint.yaml')!r})")
    assert main(["keys", "list", "--config", str(absent)]) != 0
    err = capsys.readouterr().err
    assert f"{shown} not found; pass an existing YAML file to --config" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_config_that_is_not_a_regular_file_says_what_it_is(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path, environ={})
    assert info.value.key == "config" and f"{str(tmp_path)!r} is a directory" in str(info.value)
    assert repr(str(tmp_path / "switchpoint.yaml")) in str(info.value)
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # never opened: reading it would wait for a writer forever
    for path in (Path("/dev/null"), fifo):
        with pytest.raises(ConfigError) as info:
            load_settings(path, environ={})
        assert f"{str(path)!r} is not a regular file" in str(info.value)


def test_a_config_file_over_a_mebibyte_is_refused_unparsed(tmp_path: Path) -> None:
    at_limit = tmp_path / "at-limit.yaml"
    at_limit.write_bytes(b"cost_weight: 0.5\n" + b"#" * (MAX_CONFIG_BYTES - 18) + b"\n")
    assert at_limit.stat().st_size == MAX_CONFIG_BYTES
    assert load_settings(at_limit, environ={}).cost_weight == 0.5
    over = tmp_path / "over.yaml"
    over.write_bytes(b"cost_weight: 0.5\n" + b"#" * MAX_CONFIG_BYTES)
    with pytest.raises(ConfigError) as info:
        load_settings(over, environ={})
    assert info.value.key == "config" and "is over 1 MiB" in str(info.value)


def test_profile_missing_from_the_weights_without_prices_names_the_model() -> None:
    settings = Settings.model_validate({"models": [
        {"name": "a", "profile": "gpt-4-1106-preview"}, {"name": "b", "profile": "nope"}]})
    with pytest.raises(ConfigError, match=r'models\[1\].profile: "nope" is not a profile'):
        RouterFactory()(settings)


def test_the_first_load_takes_the_weights_its_start_checked_and_checks_them_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # serve reads and checks the weights before it opens data_dir; its first load takes that
    # package rather than read its files again, checks it against its own settings all the
    # same, and every later load (a reload, a swap) reads the files.
    from switchpoint.gateway import live
    from switchpoint.weights import load_weights as read

    settings = load_settings(None, environ={})
    package = checked_package(settings)
    reads: list[object] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(args)
        return read(*args, **kwargs)

    monkeypatch.setattr(live, "load_weights", counted)
    factory = RouterFactory(warm=False, checked=(settings, package))
    assert factory(settings).weights_id == package.weights_id and reads == []
    assert factory(settings).weights_id == package.weights_id and len(reads) == 1
    unprofiled = Settings.model_validate({"models": [{"name": "b", "profile": "nope"}]})
    factory = RouterFactory(warm=False, checked=(settings, package))
    with pytest.raises(ConfigError, match=r'models\[0\].profile: "nope" is not a profile'):
        factory(unprofiled)
    assert len(reads) == 1
    factory = RouterFactory(warm=False, checked=(settings, package))
    factory(settings, "knn")  # other weights than those the start read: read
    assert len(reads) == 2


def test_a_start_reads_each_package_policies_lists_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # serve reads and checks the packages policies: lists before it opens data_dir; its first
    # load checks them again against its settings without reading them, and a later check
    # (a reload's) reads them anew.
    from switchpoint.gateway import live
    from switchpoint.gateway.live import RouterState
    from switchpoint.server import runner
    from switchpoint.weights import load_weights as read

    mine, other = str(default_weights_path("tiers")), str(default_weights_path("fixed"))
    settings = load_settings(overrides={"policies": {"mine": mine, "other": other}},
                             environ={})
    reads: list[str | None] = []

    def counted(path: str | None = None, *args: Any, **kwargs: Any) -> Any:
        reads.append(path)
        return read(path, *args, **kwargs)

    monkeypatch.setattr(live, "load_weights", counted)
    factory = runner._check_loadable(settings)
    state = RouterState(settings, factory)
    assert state.load().router.weights_id
    assert Counter(reads) == {None: 1, mine: 1, other: 1}  # (None: the bundled default)
    factory.check_policies(settings)
    assert Counter(reads) == {None: 1, mine: 2, other: 2}


def test_the_configuration_page_example_loads_and_routes(tmp_path: Path) -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text(
        encoding="utf-8")
    block = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    settings = load_settings(write(tmp_path, block), environ={})
    assert settings.catalog() is not None
    router = RouterFactory()(settings)
    assert router.models == ["gpt-4o", "gpt-4o-mini", "claude-sonnet", "ministral-3b-latest",
                             "grader"]
    assert router.route(embedding=[0.05] * 384).selected_model in router.models[:4]
    assert "grader" not in router.route(embedding=[0.05] * 384, cost_weight_override=0).all_scores


def test_the_shipped_deployment_configs_load_and_name_the_tenant_their_keys_are_made_for(
        tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    token = {"SWITCHPOINT_ADMIN_TOKEN": "t" * 32}
    shipped = load_settings(root / "deploy" / "switchpoint.yaml", environ=token)
    doc = (root / "docs" / "deployment.md").read_text(encoding="utf-8")
    documented = load_settings(write(tmp_path, doc.split("```yaml\n", 1)[1].split("```", 1)[0]),
                               environ=token)
    assert shipped.auth == documented.auth == "keys"
    # The tenant the docs make keys for is one the shipped config defines.
    texts = (doc, (root / "deploy" / "switchpoint.yaml").read_text(encoding="utf-8"))
    named = {name for text in texts
             for name in re.findall(r"keys create --tenant ([\w-]+)", " ".join(text.split()))}
    assert named and named <= set(shipped.tenants) == set(documented.tenants), named
    # A stop lets a stream as long as a request may be finish, within the grace the docs give
    # the container and the unit before they kill it.
    graces = {int(g) for g in re.findall(r"(?:--stop-timeout |TimeoutStopSec=)(\d+)", doc)}
    for settings in (shipped, documented):
        drain = settings.server.shutdown_timeout_s
        assert settings.gateway.max_total_s <= drain < min(graces), (drain, graces)


def test_every_config_the_deployment_guide_shows_loads(tmp_path: Path) -> None:
    # Each ```yaml block at the start of a line is a switchpoint config (the Prometheus scrape
    # job is indented, inside a list item): a newcomer pastes them into switchpoint.yaml.
    guide = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text(
        encoding="utf-8")
    blocks = re.findall(r"^```yaml\n(.*?)^```", guide, re.M | re.S)
    assert len(blocks) >= 3, blocks
    shown = [load_settings(write(tmp_path, block), environ={"SWITCHPOINT_ADMIN_TOKEN": "t" * 32})
             for block in blocks]
    assert ["router.example.com"] in [s.server.allowed_hosts for s in shown]
    assert ["127.0.0.1"] in [[str(p) for p in s.server.trusted_proxies] for s in shown]


def test_the_image_publishes_to_loopback_and_will_not_serve_open_beyond_it() -> None:
    # The Dockerfile's own example published the port on every address of the host, where
    # the deployment guide binds loopback.
    import json as json_module

    from switchpoint.server.exposure import check_admin_token, exposure_problem

    root = Path(__file__).resolve().parents[2]
    dockerfile = (root / "Dockerfile").read_text(encoding="utf-8")
    guide = (root / "docs" / "deployment.md").read_text(encoding="utf-8")
    for text in (dockerfile, guide):
        published = re.findall(r"\s(?:-p|--publish)[ =]([\d.:]+)", text)
        assert published and set(published) == {"127.0.0.1:8080:8080"}, published
    # What the image runs: serve beyond loopback, with the image's config.
    cmd = json_module.loads(re.findall(r"^CMD (\[.*\])$", dockerfile, re.M)[-1])
    assert cmd[:2] == ["switchpoint", "serve"] and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    assert "--allow-unauthenticated" not in cmd
    assert "SWITCHPOINT_CONFIG=/etc/switchpoint/switchpoint.yaml" in dockerfile
    assert "COPY deploy/switchpoint.yaml /etc/switchpoint/switchpoint.yaml" in dockerfile
    config = root / "deploy" / "switchpoint.yaml"
    with pytest.raises(ConfigError, match=r"\$SWITCHPOINT_ADMIN_TOKEN is not set"):
        check_admin_token(load_settings(config, environ={}))  # no token: no start
    token = {"SWITCHPOINT_ADMIN_TOKEN": "t" * 32}
    assert exposure_problem(load_settings(config, environ=token), "0.0.0.0") is None
    # A config mounted over it that leaves chat open is refused, unless it opts out.
    opened = load_settings(config, environ={**token, "SWITCHPOINT_AUTH": "none"})
    problem = exposure_problem(opened, "0.0.0.0")
    assert problem is not None and "auth: keys" in problem
    opted = load_settings(config, environ={**token, "SWITCHPOINT_AUTH": "none",
                                           "SWITCHPOINT_ALLOW_UNAUTHENTICATED": "true"})
    assert exposure_problem(opted, "0.0.0.0") is None


def test_gateway_settings_from_file_and_environment(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "gateway: {read_timeout_s: 2, pin_soft_bonus: 0}\n"),
                             environ={"SWITCHPOINT_GATEWAY__FIRST_TOKEN_TIMEOUT_S": "0.5"})
    g = settings.gateway
    assert (g.read_timeout_s, g.pin_soft_bonus, g.first_token_timeout_s) == (2, 0, 0.5)
    assert g.connect_timeout_s == 5 and g.prefer_healthy is True
    assert load_settings(None, environ={}).gateway.max_attempts_per_model == 2
    assert load_settings(None, environ={}).gateway.max_in_flight_per_tenant is None
    shared = load_settings(None, environ={"SWITCHPOINT_GATEWAY__MAX_IN_FLIGHT_PER_TENANT": "8"})
    assert shared.gateway.max_in_flight_per_tenant == 8


def test_a_tenant_s_own_share_of_calls_in_flight_is_read_from_file_and_environment(
        tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "tenants: {acme: {max_in_flight: 3}, beta: {}}\n"),
                      environ={})
    assert (s.tenants["acme"].max_in_flight, s.tenants["beta"].max_in_flight) == (3, None)
    s = load_settings(None, environ={"SWITCHPOINT_TENANTS": "{acme: {max_in_flight: 1000000}}"})
    assert s.tenants["acme"].max_in_flight == 1_000_000


@pytest.mark.parametrize(("value", "expected"), [
    ("0", "must be >= 1, got 0"),
    ("-2", "must be >= 1, got -2"),
    ("1000001", "must be <= 1,000,000, got 1000001"),
    ("1.5", "must be a whole number"),
    ("true", "must be a number, not a boolean"),
    ("many", "must be an integer, got \"many\""),
])
def test_a_bad_tenant_share_of_calls_in_flight_names_its_key(
        tmp_path: Path, value: str, expected: str) -> None:
    message = error_of(tmp_path, f"tenants: {{acme: {{max_in_flight: {value}}}}}\n")
    assert message.startswith("tenants.acme.max_in_flight: "), message
    assert expected in message, message


def test_a_misspelt_tenant_share_of_calls_in_flight_is_told_the_key(tmp_path: Path) -> None:
    message = error_of(tmp_path, "tenants: {acme: {max_inflight: 2}}\n")
    assert message.startswith("tenants.acme.max_inflight: is not a known key"), message
    assert "max_in_flight" in message, message


@pytest.mark.parametrize(("text", "expected"), [
    ("gateway: {read_timeout_s: 0}", "gateway.read_timeout_s: must be > 0"),
    ("gateway: {retries: 3}", "gateway.retries: is not a known key"),
    ("gateway: {max_in_flight_per_tenant: 0}", "gateway.max_in_flight_per_tenant: must be >= 1"),
    ("gateway: {pin_hard_window_s: 900, pin_soft_window_s: 60}",
     "pin_soft_window_s (60) must be >= pin_hard_window_s (900)"),
])
def test_bad_gateway_settings_name_the_key(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in error_of(tmp_path, text)


# Providers: a fixed set of names, each with its URL, key variable and stream usage ------------


def test_an_unknown_provider_is_an_error_naming_the_known_ones(tmp_path: Path) -> None:
    message = error_of(tmp_path, "models:\n  - {name: m, provider: mistrall}\n")
    assert message.startswith('models[0].provider: "mistrall" is not a known provider')
    assert 'did you mean "mistral"' in message
    for name in ("openai", "anthropic", "groq", "ollama", "openai-compatible"):
        assert name in message


def test_openai_compatible_needs_a_base_url(tmp_path: Path) -> None:
    message = error_of(tmp_path, "models:\n  - {name: a, base_url: 'http://x:1/v1'}\n"
                                 "  - {name: local, provider: openai-compatible}\n")
    assert message.startswith("models[1].base_url: is required for provider openai-compatible")


def test_the_provider_gives_the_url_key_and_stream_usage_a_model_leaves_out(
        tmp_path: Path) -> None:
    from switchpoint.known_providers import api_key_env_of, base_url_of, stream_usage_of

    settings = load_settings(write(tmp_path, """models:
  - {name: gpt, input_per_mtok: 1, output_per_mtok: 2}
  - {name: mini, provider: Mistral, input_per_mtok: 1, output_per_mtok: 2}
  - {name: llama, provider: groq, stream_usage: false, input_per_mtok: 1, output_per_mtok: 2}
  - {name: here, provider: ollama, input_per_mtok: 0, output_per_mtok: 0}
  - {name: proxy, base_url: "http://10.0.0.9:8080/v1", input_per_mtok: 1, output_per_mtok: 2}
  - {name: ds, base_url: "https://api.deepseek.com/", input_per_mtok: 1, output_per_mtok: 2}
  - {name: claude, provider: anthropic, input_per_mtok: 1, output_per_mtok: 2}
"""), environ={})
    catalog = settings.catalog()
    assert catalog is not None
    got = {c.name: (c.provider, base_url_of(c), api_key_env_of(c), stream_usage_of(c))
           for c in catalog.cards}
    assert got == {
        "gpt": ("openai", "https://api.openai.com/v1", "OPENAI_API_KEY", True),
        "mini": ("mistral", "https://api.mistral.ai/v1", "MISTRAL_API_KEY", False),
        "llama": ("groq", "https://api.groq.com/openai/v1", "GROQ_API_KEY", False),
        "here": ("ollama", "http://localhost:11434/v1", None, True),
        "proxy": ("openai-compatible", "http://10.0.0.9:8080/v1", None, True),
        "ds": ("deepseek", "https://api.deepseek.com/", "DEEPSEEK_API_KEY", True),
        "claude": ("anthropic", "https://api.anthropic.com", "ANTHROPIC_API_KEY", False),
    }


@pytest.mark.parametrize("text, key", [
    ("experiments:\n  e1:\n    arms:\n      a: {cost_weight: 1}\n      b: {}\n"
     "      b: {cost_weight: 3}\n", '"b"'),
    ("tenants:\n  acme: {cost_weight: 1}\n  acme: {cost_weight: 2}\n", '"acme"'),
    ("cost_weight: 0.5\ncost_weight: 2\n", '"cost_weight"'),
])
def test_a_key_written_twice_is_refused_naming_it_and_its_line(tmp_path: Path, text: str,
                                                               key: str) -> None:
    path = tmp_path / "switchpoint.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert f"the key {key} is written twice" in str(info.value) and "at line" in str(info.value)


@pytest.mark.parametrize(("text", "says"), [
    ('"a\\e[31m": 1\n', "a\\u001b[31m: is not a known key"),
    ('gateway: {"x\\e[2J\\x07": 1}\n', "gateway.x\\u001b[2J\\u0007: is not a known key"),
    (CATALOG_EXAMPLE + 'budgets: {models: {"good\\e[0m": 5/day}}\n',
     'budgets.models.good\\u001b[0m: "good\\u001b[0m" is not a model in the catalog'),
    (CATALOG_EXAMPLE + 'budgets: {providers: {"\\e]0;hi\\x07": 5/day}}\n',
     "budgets.providers.\\u001b]0;hi\\u0007: no catalog model has the provider"),
])
def test_a_key_holding_control_characters_is_named_escaped(tmp_path: Path, text: str,
                                                            says: str) -> None:
    # (a key the file wrote reaches the message, and the terminal printing it, escaped)
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    assert str(info.value).startswith(says), str(info.value)
    assert "\x1b" not in str(info.value) and "\x1b" not in info.value.key
    assert str(info.value).startswith(f"{info.value.key}: ")


@pytest.mark.parametrize(("text", "says"), [
    (f'? "{"k" * 100_000}"\n: 1\n', f"{'k' * 99}…: is not a known key"),
    (f'tenants:\n  ? "{"t" * 100_000}"\n  : {{cost_weight: -1}}\n',
     f"tenants.{'t' * 99}….cost_weight: must be >= 0, got -1"),
    (f'gateway:\n  ? "{"x" * 99}\\e{"y" * 100_000}"\n  : 1\n',
     f"gateway.{'x' * 99}…: is not a known key"),
    (f'? "{"k." * 50_000}"\n: 1\n', f"{'k.' * 199}…: is not a known key"),
])
def test_a_long_key_is_named_cut_short_as_a_long_string_is(tmp_path: Path, text: str,
                                                             says: str) -> None:
    """A key of 100 kB the file wrote was named whole, in the message and in the key (the
    param of a refused reload): each part of its path is cut as a long string is, so the
    path keeps the key at fault after it; an escape is never cut in two."""
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), environ={})
    assert str(info.value).startswith(says), str(info.value)[:500]
    assert len(info.value.key) <= 400 and str(info.value).startswith(f"{info.value.key}: ")
    assert len(str(info.value)) < 2_000


@pytest.mark.parametrize(("arms", "says"), [
    ("{a: {}, tiny: {weight: 5e-324}}",
     'experiments.e.arms.tiny.weight: arm "tiny" would get 4.94066e-324 of the experiment\'s '
     "traffic (its weight, 5e-324, over the arms' total of 1), under the 1e-06 an arm needs"),
    ("{a: {weight: 1000000}, b: {weight: 1}}",
     'experiments.e.arms.b.weight: arm "b" would get 9.99999e-07 of the experiment\'s traffic '
     "(its weight, 1, over the arms' total of 1000001), under the 1e-06"),
])
def test_an_arm_too_small_a_share_to_be_served_is_refused_naming_it(arms: str, says: str
                                                                   ) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"experiments": {"e": yaml.safe_load(f"{{arms: {arms}}}")}})
    assert str(info.value).startswith(says), str(info.value)


def test_an_arm_of_a_millionth_of_the_traffic_is_served() -> None:
    s = load_settings(overrides={"experiments": {"e": {"arms": {
        "a": {"weight": 999_999}, "b": {"weight": 1}}}}})
    assert s.experiments["e"].arms["b"].weight == 1


def test_a_list_too_short_says_how_many_it_needs() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides={"experiments": {"e1": {"arms": {"a": {}}}}})
    assert "must have at least 2 items, got 1" in str(info.value)


def test_yaml_merge_keys_still_work_and_a_complex_key_is_a_config_error(tmp_path: Path) -> None:
    merged = tmp_path / "merged.yaml"
    merged.write_text("models:\n  - &d {name: a, input_per_mtok: 1, output_per_mtok: 1}\n"
                      "  - {<<: *d, name: b}\n", encoding="utf-8")
    settings = load_settings(merged)
    assert settings.models is not None and [m.name for m in settings.models] == ["a", "b"]
    complex_key = tmp_path / "complex.yaml"
    complex_key.write_text("? [x]\n: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_settings(complex_key)


@pytest.mark.parametrize(("text", "line", "column", "char"),
                         [("\x00 garbage", 1, 1, "U+0000"),
                          ("policy: cluster\ndata_dir: da\x07ta\n", 2, 13, "U+0007"),
                          ("models: []\n# a note \ufffe\n", 2, 10, "U+FFFE")])
def test_a_character_yaml_forbids_is_named_with_its_line_and_column(
        tmp_path: Path, text: str, line: int, column: int, char: str) -> None:
    config = tmp_path / "control.yaml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    message = str(info.value)
    assert info.value.key == "config"
    assert f"is not valid YAML at line {line}, column {column}: it holds {char}" in message
    assert "remove it" in message
    assert "\n" not in message and "<unicode string>" not in message


def test_a_valid_config_is_parsed_by_libyaml_not_by_the_pure_python_loader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # (five times as fast on a config of a mebibyte; PyYAML here is built with libyaml)
    class Refusing(config._UniqueKeyLoader):
        def __init__(self, stream: str) -> None:
            raise AssertionError("parsed by the pure-Python loader")

    monkeypatch.setattr(config, "_UniqueKeyLoader", Refusing)
    path = write(tmp_path, CATALOG_EXAMPLE + "tenants:\n  acme: {cost_weight: 1}\n")
    settings = load_settings(path, environ={"SWITCHPOINT_CACHE": "{size: 5}"})
    assert settings.models is not None and [m.name for m in settings.models] == ["good", "other"]
    assert settings.tenants["acme"].cost_weight == 1 and settings.cache.size == 5


@pytest.mark.parametrize(("text", "says"), [
    ("a: [1, 2\n", "at line 2, column 1: expected ',' or ']', but got '<stream end>'"),
    ("a: b: c\n", "at line 1, column 5: mapping values are not allowed here"),
    ("a:\n\tb: 1\n", "at line 2, column 1: found character '\\t' that cannot start any token"),
    ("a: *nope\n", "at line 1, column 4: found undefined alias 'nope'"),
    ('"a\\q": 1\n', "at line 1, column 4: found unknown escape character 'q'"),
    ("%YAML 2.0\n---\na: 1\n",
     "at line 1, column 1: found incompatible YAML document (version 1.* is required)"),
    ("data_dir: é\x07\n", "at line 1, column 12: it holds U+0007"),  # (libyaml counts bytes)
])
def test_a_refusal_of_bad_yaml_keeps_the_pure_python_loader_s_wording(
        tmp_path: Path, text: str, says: str) -> None:
    """libyaml, which parses the config, words these otherwise ("did not find expected ','
    or ']'", "mapping values are not allowed in this context", a column off by the bytes
    of a character before): the refusal quotes the pure-Python loader's problem, line and
    column, as it always did."""
    message = error_of(tmp_path, text)
    assert f"is not valid YAML {says}" in message, message


def test_a_directive_libyaml_refuses_and_the_pure_python_loader_lets_by_still_loads(
        tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "%FOO bar\n---\npolicy: knn\n"),
                         environ={}).policy == "knn"


@pytest.fixture(params=["libyaml", "pure Python"])
def yaml_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each YAML parser the config may be read by (libyaml where PyYAML has it)."""
    if request.param == "libyaml":
        assert config._FastUniqueKeyLoader is not None  # (so that its protections are tested)
    else:
        monkeypatch.setattr(config, "_FastUniqueKeyLoader", None)
    return str(request.param)


_LAUGHS = "".join(f"  a{i}: &a{i} [" + ",".join([f"*a{i - 1}" if i else "lol"] * 9) + "]\n"
                  for i in range(10))  # (9**10 strings, were the aliases expanded)


@pytest.mark.parametrize(("text", "says"), [
    ("x:\n" + _LAUGHS + "models: *a9\n",
     "models[0]: must be a mapping of keys to values, got a list"),
    ("x:\n" + _LAUGHS + "cors: {allow_origins: *a9}\n",
     "cors.allow_origins[0]: must be a string, got a list"),
    ("data_dir: !!python/object/apply:os.system ['echo unsafe']\n",
     "at line 1, column 11: could not determine a constructor for the tag "
     "'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("x: !!python/name:os.system\n", "at line 1, column 4: could not determine a constructor "
                                     "for the tag 'tag:yaml.org,2002:python/name:os.system'"),
    ("tenants:\n  acme: {rpm: 5}\n  acme: {}\n",
     'at line 3, column 3: the key "acme" is written twice in one mapping; keep one'),
    ("store: " + "{a: " * 1_500 + "1" + "}" * 1_500 + "\n",
     "is not valid YAML: its values are nested too deeply to read"),
])
def test_each_protection_of_the_config_s_yaml_holds_with_either_parser(
        tmp_path: Path, yaml_parser: str, text: str, says: str) -> None:
    """Aliases are shared, never expanded (a billion laughs is refused by its first value);
    no tag makes a Python object; a key written twice is refused; a nesting deeper than
    the parser reads is refused as such."""
    message = error_of(tmp_path, text)
    assert says in message and len(message) < 1_000, message[:1_000]


@pytest.mark.parametrize(("text", "says"), [
    ("data_dir: 2021-02-30\n", 'at line 1, column 11: "2021-02-30" is read as a date '
                               "(!!timestamp) but is not one; write it in quotes"),
    ("tenants:\n  acme: {cost_weight: !!int x}\n",
     'at line 2, column 23: "x" is read as a whole number (!!int) but is not one'),
    ("cost_weight: !!bool maybe\n",
     'at line 1, column 14: "maybe" is read as true or false (!!bool)'),
    ("cors: !!set [a]\n", "at line 1, column 7: expected a mapping node, but found sequence"),
])
def test_a_value_its_yaml_type_cannot_be_made_of_is_refused_at_its_place(
        tmp_path: Path, yaml_parser: str, text: str, says: str) -> None:
    """(YAML's constructor raised ValueError, KeyError or TypeError, which escaped the start
    as a traceback.)"""
    message = error_of(tmp_path, text)
    assert f"is not valid YAML {says}" in message, message
    variable = {"SWITCHPOINT_COST_WEIGHT": "!!int x"}  # (a variable is read as text instead)
    with pytest.raises(ConfigError, match='must be a number, got "!!int x"'):
        load_settings(environ=variable)


def test_a_variable_with_a_key_written_twice_is_refused_with_either_parser(
        yaml_parser: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"SWITCHPOINT_TENANTS": "{acme: {rpm: 5}, acme: {}}"})
    assert info.value.key == "tenants" and "written twice" in str(info.value)


@pytest.mark.parametrize("text", [
    "policy: knn\t\ncache: {size: 5}\n",  # (a tab an editor left after a value)
    "policy: knn\t# the policy\ncache: {size: 5}\n",
    "policy:\tknn\ncache:\t{size: 5}\n",
    "policy\t: knn\ncache: {size:\t5\t}\n",
    "policy: knn\ncache:\t\n  size: 5\n",
    "policy: knn\ncache: {\n\tsize: 5}\n",
    "---\t# the config\npolicy: knn\ncache: {size: 5}\n",
    "policy: >-\t# the policy\n  knn\ncache: {size: 5}\n",
    "policy: knn\ncache: &c\t{size: 5}\n",
])
def test_a_tab_yaml_takes_as_a_space_is_read_alike_by_either_parser(
        tmp_path: Path, yaml_parser: str, text: str) -> None:
    """YAML takes a tab as white space within a line: the pure-Python loader, which refused
    every one, reads the config libyaml reads."""
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.policy == "knn" and settings.cache.size == 5


@pytest.mark.parametrize(("text", "says"), [
    ("cache:\n\tsize: 5\n", "at line 2, column 1: found character '\\t' that cannot start"),
    ("models:\n-\t{name: a}\n", "at line 2, column 2: found character '\\t' that cannot start"),
    ("data_dir: my\n\tstate\n", "at line 2, column 1: found a tab character that violates "
                                "indentation"),
])
def test_a_tab_where_yaml_reads_indentation_is_refused_by_either_parser(
        tmp_path: Path, yaml_parser: str, text: str, says: str) -> None:
    assert f"is not valid YAML {says}" in error_of(tmp_path, text)


@pytest.mark.parametrize("text", [
    "\ufeffpolicy: knn\ncache: {size: 5}\n",  # (a byte order mark an editor wrote)
    "policy: knn\r\ncache: {size: 5}\r\n",
    "policy: knn\rcache: {size: 5}\r",
    "%YAML 1.1\n---\npolicy: knn\ncache: {size: 5}\n",
    "%YAML 1.2\n---\npolicy: knn\ncache: {size: 5}\n",
    "%YAML 1.3\n---\npolicy: knn\ncache: {size: 5}\n",  # (libyaml refuses it; the pure reads)
    "policy: knn\ncache: {size: 5}\n...\n",
])
def test_a_mark_line_ends_and_a_version_directive_are_read_alike_by_either_parser(
        tmp_path: Path, yaml_parser: str, text: str) -> None:
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.policy == "knn" and settings.cache.size == 5


def test_a_question_mark_in_a_flow_value_is_read_alike_by_either_parser(
        tmp_path: Path, yaml_parser: str) -> None:
    """A URL's query in a model written in flow style, as docs/configuration.md writes models:
    libyaml read it, and the pure-Python loader ended the value at its ? and refused the file."""
    url = "http://127.0.0.1:8080/v1?api-version=2024-06-01"
    text = (f"models:\n  - {{name: azure, provider: openai-compatible, base_url: {url}, "
            "input_per_mtok: 1, output_per_mtok: 1}\n")
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.models is not None and settings.models[0].base_url == url


@pytest.mark.parametrize("text", [
    "policy: knn\n\ufeff# the second file\ncache: {size: 5}\n",  # (libyaml read it)
    "policy: knn\n\ufeffcache: {size: 5}\n",  # (the pure loader read a key "\ufeffcache")
])
def test_a_byte_order_mark_past_the_start_is_refused_by_either_parser(
        tmp_path: Path, yaml_parser: str, text: str) -> None:
    """Two files joined, each saved with a byte order mark: YAML allows one at the start."""
    assert error_of(tmp_path, text).endswith(
        "is not valid YAML at line 2, column 1: it holds U+FEFF, a byte order mark, which YAML "
        "allows only at the start of the file or inside a quoted value (were two files "
        "joined?); remove it")


@pytest.mark.parametrize(("text", "value"), [
    ('a: "x\ufeffy"\nb: \'\ufeff\'\n', {"a": "x\ufeffy", "b": "\ufeff"}),
    ('\ufeffa: ["x\ufeff", 1]\n"\ufeffk": \'x\n  \ufeffy\'\n',
     {"a": ["x\ufeff", 1], "\ufeffk": "x \ufeffy"}),
])
def test_a_byte_order_mark_inside_a_quoted_value_is_read_alike_by_either_parser(
        yaml_parser: str, text: str, value: object) -> None:
    """YAML 1.2 allows any printable character, a byte order mark among them, inside a
    quoted value (JSON's characters): it was refused there as it is elsewhere past the start."""
    assert config._parse_yaml(text) == value


@pytest.mark.parametrize(("text", "column"), [
    ("a: x\ufeffy\n", 5),  # (a plain value)
    ("a: |\n  x\ufeffy\n", 4),  # (a block value)
    ('a: "x"  # \ufeff\n', 11),  # (a comment)
    ('a: ["x",\n\ufeff"y"]\n', 1),  # (between values: libyaml skipped it, the pure loader
])                                # read it as part of the next)
def test_a_byte_order_mark_outside_a_quoted_value_is_refused_by_either_parser(
        tmp_path: Path, yaml_parser: str, text: str, column: int) -> None:
    line = text.count("\n", 0, text.index("\ufeff")) + 1
    assert f"is not valid YAML at line {line}, column {column}: it holds U+FEFF" in error_of(
        tmp_path, text)


@pytest.mark.parametrize(("text", "column"), [
    ("data_dir: >-#my state\n  state\n", 13),
    ("data_dir: |-2#my state\n  state\n", 14),
    ("tenants:\n  acme: {cost_weight: 1}\ndata_dir: >-#\n  state\n", 13),
])
def test_a_comment_glued_to_a_block_scalar_s_header_is_refused_by_either_parser(
        tmp_path: Path, yaml_parser: str, text: str, column: int) -> None:
    """YAML wants white space before a comment; libyaml took ``>#my state`` as a header and
    its comment, so the file was read with libyaml and refused without it."""
    message = error_of(tmp_path, text)
    line = text.count("\n", 0, text.index("#")) + 1
    assert (f"is not valid YAML at line {line}, column {column}: found '#' right after a "
            "block scalar's header (| or >); a comment there needs a space before its #"
            in message), message
    spaced = text.replace("#", " #")  # (the comment the user meant)
    assert load_settings(write(tmp_path, spaced), environ={}).data_dir.endswith("/state")


@pytest.mark.parametrize("text", ["a: [?,:b]\n", "a: {c: [x, ?\t, :b]}\n",
                                  "a: [? # note\n  , :b]\n"])
def test_a_question_mark_then_a_comma_in_a_flow_value_is_refused_by_either_parser(
        yaml_parser: str, text: str) -> None:
    """libyaml read the entry past the comma as the empty key's value ([{null: b}])."""
    with pytest.raises(yaml.YAMLError, match="expected the node content, but found ':'"):
        config._parse_yaml(text)
    assert config._parse_yaml("a: [?, b]\nc: why?, no\n") == {"a": [{None: None}, "b"],
                                                               "c": "why?, no"}


@pytest.mark.parametrize(("text", "found"), [
    ("[?, :b]", True), ("[? \t\n , :b]", True), ("[? # why?\n , :b]", True),
    ("[? # note ? , b\n]", False),  # (a ? inside a comment is the comment's)
    ("[?a, b]", False), ("why ? no, yes", False), ("[? # note\n ?, :b]", True),
])
def test_a_question_mark_then_a_comma_is_found_past_white_space_and_comments(
        text: str, found: bool) -> None:
    assert config._key_then_comma(text) is found
    assert config._key_then_comma("x" * 100 + text + "?" * 100) is found


def test_question_marks_filling_a_config_s_size_are_scanned_in_one_pass() -> None:
    """A config of 1 MB of ?s (after a comment, between brackets) is scanned for a ? then a
    comma in some 10-50 ms of CPU; a loop over each ? took 0.6-0.9 s for each text."""
    texts = ["? " * (MAX_CONFIG_BYTES // 2), "[?" * (MAX_CONFIG_BYTES // 2),
             "# " + "?" * (MAX_CONFIG_BYTES - 3) + "\n"]
    started = time.process_time()
    assert [config._key_then_comma(text) for text in texts] == [False, False, False]
    assert time.process_time() - started < 0.5  # generous for a busy host


@pytest.mark.parametrize(("text", "value"), [
    ("a: !\n", {"a": ""}),  # (YAML 1.2: a value tagged only ! is text)
    ("a: {b: !, c: 1}\n", {"a": {"b": "", "c": 1}}),
    ("a: [!, 1]\n", {"a": ["", 1]}),
    ("a: [!!str, 1]\n", {"a": ["", 1]}),  # (a comma ends a tag in a flow collection)
    ("{a: !}\n", {"a": ""}),  # (and so does the collection's end, as in YAML 1.2)
    ("\ufeff! 5\n", "5"),  # (after a byte order mark, libyaml read the number 5)
    ("a: {b: !}\nc: [!]\nd: [1, !!str]\ne: {f: !<!>}\n",
     {"a": {"b": ""}, "c": [""], "d": [1, ""], "e": {"f": ""}}),
    ("a: !!str\t5\n", {"a": "5"}),
    ("a: ! 5\n", {"a": "5"}),  # (YAML 1.2: a value tagged only ! is text, never a number)
    ("a: ! '5'\nb: ! \"5\"\nc: ! ''\nd: ! null\ne: ! true\n",
     {"a": "5", "b": "5", "c": "", "d": "null", "e": "true"}),
    ("a: [! 5, !\t1.5, ! ~]\n! 5: {b: ! 7}\n", {"a": ["5", "1.5", "~"], "5": {"b": "7"}}),
    ("a: &x ! 5\nb: *x\nc: !<!> 5\nd: ! |\n  5\n", {"a": "5", "b": "5", "c": "5", "d": "5\n"}),
    ("a: ! [1]\nb: ! {c: 1}\nd: Hi! 5\ne: !!int '5'\n",  # (not a value, or not a tag)
     {"a": [1], "b": {"c": 1}, "d": "Hi! 5", "e": 5}),
])
def test_a_tag_is_read_alike_by_either_parser(yaml_parser: str, text: str,
                                              value: object) -> None:
    assert config._parse_yaml(text) == value


def test_an_admin_token_variable_tagged_only_with_an_exclamation_mark_is_refused_as_empty(
        tmp_path: Path, yaml_parser: str) -> None:
    """Without libyaml ``admin_token_env: !`` was read as null, no token, which leaves the
    admin routes open; libyaml read it as the empty name it is, which is refused."""
    for text in ("admin_token_env: !\n", "admin_token_env: ! ''\n"):
        message = error_of(tmp_path, text)
        assert message.startswith("admin_token_env: must be the name of the environment "
                                  "variable"), message
    # (a number so tagged is the text it is written as: a folder named 5)
    assert load_settings(write(tmp_path, "data_dir: ! 5\n"), environ={}).data_dir == str(
        tmp_path / "5")


@pytest.mark.parametrize("deep", ["data_dir: " + "[" * 50_000 + "]" * 50_000,
                                  "store: " + "{a: " * 5_000 + "1" + "}" * 5_000])
def test_a_config_nested_too_deeply_is_a_config_error(tmp_path: Path, deep: str) -> None:
    config = tmp_path / "deep.yaml"
    config.write_text(deep + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={})
    assert info.value.key == "config" and "nested too deeply" in str(info.value)
    variable = {"SWITCHPOINT_COST_WEIGHT": "[" * 20_000 + "]" * 20_000}
    with pytest.raises(ConfigError) as info:  # a variable is read as plain text instead
        load_settings(environ=variable)
    assert info.value.key == "cost_weight" and "SWITCHPOINT_COST_WEIGHT" in str(info.value)


def test_a_catalog_that_leaves_auto_no_model_or_escalates_to_a_model_kept_out_is_refused(
        tmp_path: Path) -> None:
    judge = "  - {name: judge, profile: gpt-4-1106-preview, auto: false}\n"
    other = "  - {name: other, profile: claude-v2}\n"
    assert error_of(tmp_path, "models:\n" + judge).startswith(
        "models: every model has auto: false, so \"auto\" could choose none")
    message = error_of(tmp_path, "models:\n" + judge + other
                       + "escalation: {escalation_model: judge}\n")
    assert message.startswith('escalation.escalation_model: "judge" has auto: false')
    arm = error_of(tmp_path, "models:\n" + judge + other
                   + "experiments: {e: {arms: {a: {}, b: {models: [judge]}}}}\n")
    assert arm.startswith('experiments.e.arms.b.models: "judge": auto: false'), arm
    # Listed beside a model auto may choose, it would be passed over in silence.
    mixed = error_of(tmp_path, "models:\n" + judge + other
                     + "experiments: {e: {arms: {a: {}, b: {models: [other, judge]}}}}\n")
    assert mixed.startswith('experiments.e.arms.b.models[1]: "judge" has auto: false'), mixed
    assert "this arm would pass it over; take it out of the arm" in mixed
    settings = load_settings(write(tmp_path, "models:\n" + judge + other), environ={})
    catalog = settings.catalog()
    assert catalog is not None and catalog.routed == ["other"]
    assert catalog.not_routed(["judge", "other", "nope"]) == ["judge"]


def test_a_list_given_in_an_environment_variable_as_plain_text_is_told_how_to_write_it() -> None:
    """``SWITCHPOINT_SERVER__TRUSTED_PROXIES=10.0.0.1,10.0.0.2`` (the way uvicorn's
    FORWARDED_ALLOW_IPS was written) is refused saying to write a YAML list."""
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"SWITCHPOINT_SERVER__TRUSTED_PROXIES": "10.0.0.1,10.0.0.2"})
    message = str(caught.value)
    assert "SWITCHPOINT_SERVER__TRUSTED_PROXIES" in message
    assert '["10.0.0.1", "10.0.0.2"]' in message, message
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"SWITCHPOINT_SERVER__TRUSTED_PROXIES": "[::1, fd00::/8]"})
    hint = str(caught.value).split("write it as a YAML list: ", 1)[1].split(" (from", 1)[0]
    settings = load_settings(None, environ={"SWITCHPOINT_SERVER__TRUSTED_PROXIES": hint})
    assert settings.server.trusted_proxies == ["::1", "fd00::/8"]


def test_allowed_hosts_are_kept_as_a_host_header_is_compared(tmp_path: Path) -> None:
    """Lowercase, without the root's trailing dot, an IPv6 address without its brackets."""
    settings = load_settings(write(tmp_path, "server:\n  allowed_hosts: [API.Internal., "
                                             "'[::1]', 10.0.0.5, my_service, '*']\n"),
                             environ={})
    assert settings.server.allowed_hosts == ["api.internal", "::1", "10.0.0.5", "my_service",
                                             "*"]
    from_env = load_settings(None, environ={"SWITCHPOINT_SERVER__ALLOWED_HOSTS":
                                            "[router.example.com]"})
    assert from_env.server.allowed_hosts == ["router.example.com"]
    assert load_settings(None, environ={}).server.allowed_hosts == []


def test_an_arm_whose_models_a_tenant_of_its_experiment_may_not_use_is_refused(
        tmp_path: Path) -> None:
    # Such an arm took that tenant's requests, routed them as the configured routing (the
    # arm's models being none it may use) and reported them as the arm's, in silence.
    catalog = ("models:\n  - {name: a, profile: claude-v2}\n  - {name: b, profile: claude-v1}\n"
               "  - {name: c, profile: gpt-4-1106-preview}\n"
               "tenants: {acme: {models: [a, b, auto]}, open: {}}\n")
    arm = error_of(tmp_path, catalog + "experiments: {e: {tenants: [acme, open], "
                                       "arms: {x: {}, y: {models: [c]}}}}\n")
    assert arm.startswith('experiments.e.arms.y.models: tenant "acme" of the experiment may '
                          'use none of "c"'), arm
    # (every tenant, when the experiment names none)
    everyone = error_of(tmp_path, catalog + "experiments: {e: {arms: {x: {}, y: {models: [c]}}}}\n")
    assert everyone.startswith('experiments.e.arms.y.models: tenant "acme"'), everyone
    # One of the arm's models the tenant may use is enough; a tenant out of scope is not asked.
    for fine in ("experiments: {e: {tenants: [acme], arms: {x: {}, y: {models: [b, c]}}}}\n",
                 "experiments: {e: {tenants: [open], arms: {x: {}, y: {models: [c]}}}}\n"):
        assert load_settings(write(tmp_path, catalog + fine), environ={}).experiments


@pytest.mark.parametrize(("text", "key"), [
    ("data_dir: " + "d" * 300 + "\n", "data_dir"),
    ("data_dir: " + "d/" * 3000 + "\n", "data_dir"),
    ("weights: " + "w" * 300 + "\n", "weights"),
    ("weights: " + "w/" * 3000 + "\n", "weights"),
    ("policies: {mine: " + "p/" * 3000 + "}\n", "policies.mine"),
])
def test_a_path_the_system_cannot_take_is_a_config_error_naming_its_key(
    tmp_path: Path, text: str, key: str,
) -> None:
    # A name longer than the file system takes, a path past its limit, a NUL: the system
    # refuses them with errors of its own, which a start or a reload must not meet later.
    message = error_of(tmp_path, text)
    assert message.startswith(f"{key}: ") and "cannot be used" in message, message
    assert len(message) < 600, message  # the path is cut, not repeated whole


@pytest.mark.parametrize(("text", "key", "shown"), [
    ("data_dir: >\n  state\n", "data_dir", "state\\n'"),  # (a folded block scalar's newline)
    ("data_dir: |\n  state\n", "data_dir", "state\\n'"),
    ("data_dir: \"st\\nate\"\n", "data_dir", "st\\nate'"),
    ("data_dir: \"a\\0b\"\n", "data_dir", "a\\x00b'"),
    ("data_dir: \"st\\tate\"\n", "data_dir", "st\\tate'"),
    ("weights: \"./w\\x1b[2J\"\n", "weights", "w\\x1b[2J'"),
    ("weights: \"./w\\x85\"\n", "weights", "w\\x85'"),
    ("policies: {mine: \"./p\\x7f\"}\n", "policies.mine", "p\\x7f'"),
])
def test_a_path_holding_a_control_character_is_refused_naming_its_key(
    tmp_path: Path, text: str, key: str, shown: str,
) -> None:
    message = error_of(tmp_path, text)
    assert message.startswith(f"{key}: ") and f"{shown} holds the control character" in message
    assert "remove it" in message and not any(c in message for c in "\n\0\t\x1b\x85\x7f")
    block = "write the path as a plain or quoted value"
    assert (block in message) == text.startswith(("data_dir: >", "data_dir: |")), message


@pytest.mark.parametrize(("text", "key", "given"), [
    ("data_dir: ./state\n", "data_dir", "state"),
    ("policies: {mine: my-knn}\n", "policies.mine", "my-knn"),
])
def test_a_relative_path_under_a_folder_holding_a_control_character_names_the_folder(
    tmp_path: Path, text: str, key: str, given: str,
) -> None:
    """The file's value holds no control character, its folder's path does: the error says
    so and how to fix it (rename the folder, move the file, or an absolute path), where it
    said to remove the character, as if the value held it."""
    folder = tmp_path / "my\nconfigs"
    folder.mkdir()
    with pytest.raises(ConfigError) as info:
        load_settings(write(folder, text), environ={}, path_arg="--config")
    message, shown = str(info.value), str(folder.resolve()).replace("\n", "\\n")
    assert message == (
        f"{key}: '{given}' is relative to the config file's folder, "
        f"'{shown}', whose path holds the control "
        'character "\\n", which a path is almost surely not meant to hold (a newline in one '
        "would also break the log lines that name it); rename that folder, or move the config "
        "file to a folder whose path holds none and pass it to --config, or give "
        f"{key} as an absolute path (in the file passed to --config)"), message
    # (a value of its own holding one is still the value's to fix)
    with pytest.raises(ConfigError) as info:
        load_settings(write(folder, 'data_dir: "st\\tate"\n'), environ={})
    assert "holds the control character \"\\t\"" in str(info.value)
    assert "remove it" in str(info.value)


def test_a_variable_giving_a_path_holding_a_control_character_is_refused() -> None:
    for var, value, key in [("SWITCHPOINT_DATA_DIR", "state\n", "data_dir"),
                            ("SWITCHPOINT_WEIGHTS", "./w\rx", "weights"),
                            ("SWITCHPOINT_POLICIES", '{mine: "./p\\n"}', "policies.mine")]:
        with pytest.raises(ConfigError) as info:
            load_settings(None, environ={var: value})
        assert info.value.key == key and 'the control character "\\' in str(info.value)
    # (the same folder as a plain value starts)
    assert load_settings(None, environ={"SWITCHPOINT_DATA_DIR": "state"}).data_dir == "state"


def test_a_policy_name_read_from_a_manifest_is_shown_bounded(tmp_path: Path) -> None:
    # The name a package's manifest gives its policy is the file's, not the operator's: a
    # long one (or one with control characters) is shown cut short and escaped.
    package = tmp_path / "odd"
    shutil.copytree(default_weights_path("cluster"), package)
    manifest = json.loads((package / "manifest.json").read_text(encoding="utf-8"))
    manifest["policy"]["name"] = "x\x1b[2J" + "y" * 5000
    (package / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    message = error_of(tmp_path, f"policies: {{knn: '{package}'}}\n")
    assert message.startswith("policies.knn: ") and 'is a "x\\u001b[2Jyyy' in message
    assert "\x1b" not in message and len(message) < 600


@pytest.mark.parametrize("key", ["policies", "tenants", "experiments"])
def test_a_name_too_long_is_shown_cut_short(tmp_path: Path, key: str) -> None:
    # The name is refused whole, but quoted in the message only as far as it shows what is
    # wrong: a 5000-character name is not repeated in every log line and 400 that names it.
    value = {"policies": "./nowhere", "tenants": "{}",
             "experiments": "{arms: {a: {}, b: {}}}"}[key]
    message = error_of(tmp_path, f"{key}:\n  ? {'n' * 5000}\n  : {value}\n")
    # (a tenant's name is bounded by the wording of every length bound, as at every door)
    rule = too_long(64, 5000) if key == "tenants" else "must be 1-64 letters"
    assert message.startswith(f"{key}: ") and rule in message, message[:300]
    assert '"nnn' in message and len(message) < 400, message[:300]


def test_max_weights_bytes_is_what_the_service_loads_weights_with(tmp_path: Path) -> None:
    assert load_settings(environ={}).max_weights_bytes == 8 << 30
    settings = load_settings(environ={"SWITCHPOINT_MAX_WEIGHTS_BYTES": "1000"})
    assert settings.max_weights_bytes == 1000
    with pytest.raises(WeightsError, match="more than the 1,000 a load reads"):
        checked_package(settings)
    for bad in (0, (1 << 40) + 1, "lots"):
        with pytest.raises(ConfigError) as info:
            load_settings(overrides={"max_weights_bytes": bad}, environ={})
        assert str(info.value).startswith("max_weights_bytes: ")


def test_a_refused_path_names_the_variable_flag_or_file_it_came_from(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A path is refused saying where it came from (a variable, the command line, the file
    and what the file was passed as, or the default), so the user knows what to change: the
    same refusal named only the key, which a variable, a flag or the file may each set."""
    (tmp_path / "afile").write_text("hi")
    not_a_folder = f"'{tmp_path / 'afile'}' exists and is not a directory; point data_dir at a "
    not_a_folder += "directory, or move the file away"
    config = write(tmp_path, f"data_dir: {tmp_path / 'afile'}\n")
    sources: list[tuple[dict[str, Any], str]] = [
            ({"environ": {"SWITCHPOINT_DATA_DIR": str(tmp_path / "afile")}},
             "from SWITCHPOINT_DATA_DIR"),
            ({"path": config, "path_arg": "--config"}, "in the file passed to --config"),
            ({"overrides": {"data_dir": str(tmp_path / "afile")}, "overrides_from": COMMAND_LINE},
             "from the command line")]
    for given, where in sources:
        with pytest.raises(ConfigError) as info:
            load_settings(**{"environ": {}, **given})
        assert str(info.value) == f"data_dir: {not_a_folder} ({where})"
    with pytest.raises(ConfigError) as info:
        load_settings(config, environ={"SWITCHPOINT_WEIGHTS": str(tmp_path)})
    assert str(info.value).endswith("no manifest.json there); give the folder `switchpoint fit "
                                    "--out` wrote (from SWITCHPOINT_WEIGHTS)"), str(info.value)
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={"SWITCHPOINT_POLICIES": f"{{mine: '{tmp_path}'}}"})
    assert str(info.value).startswith("policies.mine: ") and str(info.value).endswith(
        "(from SWITCHPOINT_POLICIES)"), str(info.value)
    monkeypatch.chdir(tmp_path)  # (the default data_dir, ./data, is a file here)
    (tmp_path / "data").write_text("hi")
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ={})
    assert str(info.value).endswith("move the file away (the default)"), str(info.value)


@pytest.mark.parametrize("blank", ["", "  "])
def test_an_empty_path_in_a_config_file_is_refused_as_empty_naming_its_key(
        tmp_path: Path, blank: str) -> None:
    """A path the config file leaves empty is refused as empty, naming its key (it was
    resolved to the config file's own folder, and refused as that folder, or, for data_dir,
    taken as it)."""
    config = tmp_path / "switchpoint.yaml"
    package = "give the folder of a weights package (the one `switchpoint fit --out` wrote)"
    for text, key, what in (
            (f"policies: {{mine: {blank!r}}}", "policies.mine", package),
            (f"weights: {blank!r}", "weights", package),
            (f"data_dir: {blank!r}", "data_dir",
             "give a folder for the service's state, or leave data_dir out for the default")):
        config.write_text(text + "\n", encoding="utf-8")
        with pytest.raises(ConfigError) as info:
            load_settings(config, environ={})
        assert str(info.value) == f"{key}: is empty; {what} (in the file passed as path)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["switchpoint.yaml"]


def test_a_policies_or_weights_path_that_is_no_package_says_what_it_is(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("hi")
    os.mkfifo(tmp_path / "apipe")
    (tmp_path / "empty").mkdir()
    for name, said in (("afile", "it is a regular file, not a folder"),
                       ("apipe", "it is a FIFO (named pipe), not a folder"),
                       ("empty", "no manifest.json there"), ("nothing", "no manifest.json there")):
        for key in ("weights", "policies"):
            value: object = str(tmp_path / name)
            if key == "policies":
                value = {"mine": value}
            with pytest.raises(ConfigError) as info:
                load_settings(overrides={key: value, "data_dir": str(tmp_path / "data")},
                              environ={})
            where = "policies.mine" if key == "policies" else "weights"
            assert str(info.value) == (f"{where}: '{tmp_path / name}' is not a weights package "
                                       f"({said}); give the folder `switchpoint fit --out` "
                                       "wrote (from overrides)")
    assert not (tmp_path / "data").exists()


def test_a_plain_value_holding_a_colon_is_text_never_a_base_60_number(
        tmp_path: Path, yaml_parser: str) -> None:
    """(YAML 1.1 read 10:11:12 as 36672 and an IPv6 address as 2895057742028, refused as
    "must be a string, got 36672".)"""
    s = load_settings(write(tmp_path, "data_dir: 10:11:12\n"
                                      "server: {trusted_proxies: [1:2:3:4:5:6:7:8]}\n"),
                      environ={})
    assert s.data_dir.endswith("10:11:12") and s.server.trusted_proxies == ["1:2:3:4:5:6:7:8"]
    assert 'must be a number, got "1:30"' in error_of(tmp_path, "cost_weight: 1:30\n")
