"""What will make a gateway's chat requests fail, or be accounted wrong, with its settings: said
as warnings as it starts and reloads (:func:`misconfigurations`), and what a chat request is
told when there are no models to call (:func:`no_upstream_message`)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Collection, Mapping

from switchpoint._redact import url_secrets
from switchpoint.config import Settings, shared_profile_note, shared_profiles
from switchpoint.known_providers import api_key_env_of, api_key_problem
from switchpoint.registration import internal_host, loopback_host


def no_upstream_message(settings: Settings) -> str:
    """What a chat request (a comparison, a model's lookup) is told when no ``models:`` are
    configured: where to list them, and an example."""
    where = (f"the config file {settings.source_path}" if settings.source_path
             else "a config file (switchpoint serve --config switchpoint.yaml)")
    return ("this gateway has no models configured (no `models:` in its config), so it has no "
            "upstream to send chat requests to; POST /v1/route still routes. List the models "
            f"to call, with their provider, under `models:` in {where}, e.g. `models: [{{name: "
            "gpt-4o-mini, provider: openai, profile: gpt-3.5-turbo-1106, input_per_mtok: 0.15, "
            "output_per_mtok: 0.6}]` with OPENAI_API_KEY exported")


def misconfigurations(settings: Settings, env: Mapping[str, str], *,
                      skip: Collection[str] = ()) -> list[tuple[str, str]]:
    """What will make chat requests fail, or be accounted wrong, with these settings, as (key,
    message) pairs: no ``models:`` at all, a model whose key variable is unset (models and
    providers in ``skip`` have adapters of their own and are not checked), a model whose key
    would cross the network over plain http, a model routing on another's learned profile by
    its name alone (:func:`~switchpoint.config.shared_profiles`: it would be routed as that
    model), a model without prices (its answers would be accounted as free), a model of the
    config whose ``base_url`` names a link-local or cloud metadata host, as written
    (:func:`~switchpoint.registration.internal_host`: allowed, the config is trusted, but
    said)."""
    if settings.models is None:
        return [("no-models", "chat is off: no `models:` are configured, so POST "
                              "/v1/chat/completions answers 503 no_upstream_configured until "
                              "the config lists the models to call (POST /v1/route still "
                              "routes over the bundled profiles)")]
    catalog = settings.catalog()
    assert catalog is not None
    found: list[tuple[str, str]] = []
    for card in catalog.cards:
        var = api_key_env_of(card)
        if var is None or card.name in skip or card.provider in skip:
            continue
        key = env.get(var, "").strip()
        problem = "is not set" if not key else api_key_problem(key)
        if problem is None:
            continue
        origin = ("" if card.api_key_env else
                  f" (provider {card.provider}'s default; name another with api_key_env)")
        found.append((f"key\0{card.name}\0{var}",
                      f"model {card.name}: its API key variable {var}{origin} {problem}; "
                      f"calls to it fail with missing_api_key until you export {var}"))
    for card in catalog.cards:
        var = api_key_env_of(card)
        host = _plain_http_host(card.base_url)
        if host is None or card.name in skip:
            continue
        keyed = var is not None and bool(env.get(var))
        secrets = [what for what, there in (
            (f"API key ({var})", keyed),
            ("base_url's secret (its password or credential parameter)",
             bool(url_secrets(card.base_url)))) if there]
        if secrets:
            found.append((f"plain\0{card.name}",
                          f"model {card.name}: its base_url is plain http to {host}, so its "
                          f"{' and its '.join(secrets)} cross"
                          f"{'es' if len(secrets) == 1 else ''} the network unencrypted; use "
                          "https, or a loopback address for a proxy on this machine"))
    # (the config's own: its author owns the machine; a registration that would is refused)
    for entry in settings.models:
        what = (None if entry.registered_at is not None or entry.base_url is None
                else internal_host(entry.base_url))
        if what is not None:
            found.append((f"metadata\0{entry.name}",
                          f"model {entry.name}: its base_url names {what}; the config may "
                          "name any host, but make sure it is meant: the service sends that "
                          "model's requests there, and what it answers comes back in errors "
                          "and the log"))
    # (the config's own: a registration that would is refused unless its card says profile:)
    for model, owner in shared_profiles([m for m in settings.models if m.registered_at is None]):
        found.append((f"profile\0{model.name}\0{owner.name}",
                      f"{shared_profile_note(model, owner)}; give it the profile it should "
                      f"route on (profile:), or profile: {model.name} to share that one on "
                      "purpose"))
    for card in catalog.cards:
        if not card.priced:
            found.append((f"price\0{card.name}",
                          f"model {card.name} has no prices (input_per_mtok, output_per_mtok): "
                          "what its answers cost is unknown (usage.cost null, no "
                          "x-switchpoint-cost, no cost in the request log, counted apart "
                          "in reports) and a request a budget watches may not use it; give "
                          "its prices in USD per million tokens (0 for a free model)"))
    return found


def _plain_http_host(base_url: str | None) -> str | None:
    """The host of ``base_url`` when it is plain ``http://`` to a host other than this
    machine's loopback, however spelt (:func:`~switchpoint.registration.loopback_host`; None
    otherwise)."""
    if not base_url:
        return None
    parts = urllib.parse.urlsplit(base_url)
    host = parts.hostname or ""
    if parts.scheme.lower() != "http" or loopback_host(host):
        return None
    return host
