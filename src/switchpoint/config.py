"""The service configuration: a YAML file, overridable by ``SWITCHPOINT_*`` environment variables.

::

    models:                       # the catalog; omit it to route over the weights' own profiles
      - {name: good, profile: gpt-4-1106-preview, base_url: "http://127.0.0.1:9100/v1",
         api_key_env: GOOD_KEY, input_per_mtok: 10, output_per_mtok: 30,
         context_window: 128000, capabilities: [tools, vision], fallbacks: [other]}
      - {name: other, input_per_mtok: 0.5, output_per_mtok: 1.5, tier: simple}
    policy: cluster               # which bundled default weights to load when `weights` is unset
    policies: {mine: ./my-knn}    # extra weights a policy swap may name
    cost_weight: 0.5              # the default λ
    cache: {size: 10000, ttl_seconds: 3600}   # at most 10 million entries, a year
    weights: ./my-weights         # a weights package (default: the bundled one for `policy`)
    data_dir: ./data              # SQLite state lives here
    store: {synchronous: full}    # full: fsync per commit; normal: survives process crashes only
    expected_output_tokens: 200
    max_request_bytes: 1048576    # at most 1 GiB
    max_weights_bytes: 8589934592 # a weights package's arrays and profiles, together (8 GiB)
    admin_token_env: SWITCHPOINT_ADMIN_TOKEN  # optional: /v1/router/* then need this bearer token
                                              # (exported where the service runs)
    auth: keys                    # optional: client keys (switchpoint keys create) on the gateway
    tenants: {acme: {budgets: [100/month], models: [cheap, auto]}}   # see governance.settings:
    budgets: {models: {good: 50/day}}                 # budgets, SLAs, escalation
    learning: {exploration: 0.05}                     # see learning.config: feedback, tenants'
    experiments: {cheaper: {arms: {a: {}, b: {cost_weight: 2}}}}   # memory, experiments
    server:                       # the HTTP server's own limits (see ServerSettings)
      max_connections: 1000
      header_timeout_s: 10
      trusted_proxies: [127.0.0.1]  # proxies whose X-Forwarded-For names the client
      allowed_hosts: [api.internal] # Host names served besides localhost and IP addresses
    gateway:                      # POST /v1/chat/completions: upstream calls, failover, health,
      connect_timeout_s: 5        # session pins (see GatewaySettings for every key)
      read_timeout_s: 60
      first_token_timeout_s: 30

Precedence, lowest first: defaults, the file, environment variables, command-line flags.
An environment variable is ``SWITCHPOINT_`` plus the key in upper case, ``__`` between nested
keys (``SWITCHPOINT_COST_WEIGHT=0.2``, ``SWITCHPOINT_CACHE__SIZE=0``); its value is read as YAML,
so numbers, booleans and lists work. A boolean key is ``true`` or ``false`` in the file (a number
is refused); its variable also takes ``yes``/``no``, ``on``/``off`` and ``1``/``0``. A ``__``
path naming no key is refused as an unknown key of the file is. Relative paths in the file are
relative to the file.

Every error names the key path and the reason, e.g. ``models[0].input_per_mtok: must be >= 0,
got -1``, and is raised as :class:`ConfigError`.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, TypeVar, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from switchpoint._config_numbers import Boolean, Integer, Real, Text
from switchpoint._env_names import env_var_name_problem
from switchpoint._files import path_problem, read_problem, unnameable
from switchpoint._limits import DEFAULT_MAX_REQUEST_BYTES as DEFAULT_MAX_REQUEST_BYTES
from switchpoint._limits import MAX_BYTES as MAX_BYTES
from switchpoint._limits import (
    MAX_CACHE_ENTRIES,
    MAX_CACHE_TTL_S,
    MAX_RETENTION_DAYS,
    MAX_WEIGHTS_BYTES,
    MAX_WEIGHTS_BYTES_LIMIT,
)
from switchpoint._messages import (
    cut,
    header_value_problem,
    json_quoted,
    key_path,
    listed_names,
    one_of,
    quoted_path,
)
from switchpoint._messages import reason as describe
from switchpoint._numbers import boolean_text
from switchpoint._redact import redact_url
from switchpoint.catalog import (
    CARD_RULES,
    DEFAULT_OUTPUT_TOKENS,
    ITEM_RULES,
    MAX_CATALOG_MODELS,
    MAX_MODEL_NAME,
    MAX_PRICE_PER_MTOK,
    MAX_TOKENS,
    Capability,
    Catalog,
    ModelCard,
    Tier,
    catalog_problem,
    list_problem,
    unordered_names,
)
from switchpoint.decision import DEFAULT_COST_WEIGHT, MAX_COST_WEIGHT
from switchpoint.errors import ConfigError
from switchpoint.governance.settings import (
    MAX_IN_FLIGHT,
    BudgetSettings,
    EscalationSettings,
    GovernanceSettings,
    SLASettings,
    TenantSettings,
    check_tenant_names,
)
from switchpoint.known_providers import (
    OPENAI_COMPATIBLE,
    infer_provider,
    provider_spelling,
    userinfo_displaces_key,
)
from switchpoint.learning.config import (
    MAX_EXPERIMENTS,
    MIN_ARM_SHARE,
    ArmConfig,
    ExperimentConfig,
    LearningConfig,
    MemoryConfig,
    check_experiment_names,
    check_name,
)
from switchpoint.learning.events import MAX_TENANTS
from switchpoint.store.spill import MAX_SPILL_BYTES

ENV_PREFIX = "SWITCHPOINT_"
DEFAULT_DATA_DIR = "./data"
DB_FILENAME = "switchpoint.db"
# The largest config file read (1 MiB): a catalog of thousands of models fits many times over.
MAX_CONFIG_BYTES = 1 << 20
# The shortest admin token accepted: anything shorter is guessable.
MIN_ADMIN_TOKEN = 16

# The longest a configured wait (a timeout, a backoff, a cooldown) and a session pin may be.
MAX_WAIT_S = 86_400.0
MAX_PIN_S = 366 * 86_400.0
# The most packages policies: may list: each is read whole and checked at start and at every
# reload, so the count bounds what a reload reads.
MAX_POLICIES = 100
# The most recent calls per model the circuit breaker may be set to weigh.
MAX_HEALTH_WINDOW = 10_000
# Keys whose values are paths, resolved against the config file's folder when given there.
_PATH_KEYS = ("weights", "data_dir")
# A C0 or C1 control character (a newline, a tab, NUL, DEL ...), which no path the config
# gives may hold: one there is almost surely a mistake (a block scalar's closing newline), and
# a newline in a path breaks the log lines that name it.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# Keys whose environment values are taken as they are, not parsed as YAML.
_PLAIN_STRINGS = ("policy", "weights", "data_dir", "store.synchronous", "admin_token_env", "auth")


def _card_rule(value: Any, info: ValidationInfo) -> Any:
    """``value`` of a model's field ``info.field_name``, once :data:`CARD_RULES` take it."""
    problem = None if value is None else CARD_RULES[str(info.field_name)](value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _capability(value: object) -> object:
    """An item of a model's ``capabilities``, once :data:`ITEM_RULES` take it (before its
    type is read, so that a config says what a catalog built in Python says)."""
    problem = ITEM_RULES["capabilities"](value)
    if problem is not None:
        raise ValueError(problem)
    return value


_PRICE_BOUNDS: dict[str, Any] = {"minimum": 0, "maximum": MAX_PRICE_PER_MTOK}


class ModelEntry(BaseModel):
    """One routable model of the catalog (see :class:`switchpoint.catalog.ModelCard`).

    ``provider`` is a name of :data:`~switchpoint.known_providers.KNOWN_PROVIDERS` (omitted:
    ``openai``, or with a ``base_url`` the provider it belongs to, else ``openai-compatible``);
    the provider gives the defaults of ``base_url``, ``api_key_env`` and ``stream_usage``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    # (CARD_RULES check the card's fields; the bounds given as json_schema_extra only state
    # them in the published schema of a registration's body)
    name: Text = Field(json_schema_extra={"minLength": 1, "maxLength": MAX_MODEL_NAME})
    profile: Text | None = Field(None, json_schema_extra={"minLength": 1})
    # omitted: inferred from base_url; a known name in another case is read as it
    provider: Text = Field("openai", json_schema_extra={"minLength": 1})
    base_url: Text | None = None
    api_key_env: Text | None = None
    stream_usage: Boolean | None = None
    input_per_mtok: Real | None = Field(None, json_schema_extra=_PRICE_BOUNDS)
    output_per_mtok: Real | None = Field(None, json_schema_extra=_PRICE_BOUNDS)
    context_window: int | None = Field(None, json_schema_extra={"exclusiveMinimum": 0,
                                                                "maximum": MAX_TOKENS})
    capabilities: list[Annotated[Capability, BeforeValidator(_capability)]] = Field(
        default_factory=list, max_length=len(get_args(Capability)))
    tier: Tier | None = None
    fallbacks: list[Text] = Field(default_factory=list, max_length=MAX_CATALOG_MODELS)
    upstream_model: Text | None = Field(None, json_schema_extra={"minLength": 1,
                                                                  "maxLength": MAX_MODEL_NAME})
    auto: Boolean = True

    # When the model was registered at run time (``Gateway.register_model``, ``POST
    # /v1/router/models``); None for one the config lists. See ``registered_at``.
    _registered_at: float | None = PrivateAttr(default=None)

    @property
    def registered_at(self) -> float | None:
        """When this model was registered at run time; None for one the config lists."""
        return self._registered_at

    def registered(self, at: float) -> ModelEntry:
        """This model, marked as registered at run time at ``at``."""
        made = self.model_copy()
        made._registered_at = at
        return made

    @model_validator(mode="before")
    @classmethod
    def _default_provider(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("provider") is None:
            base_url = data.get("base_url")
            data = {**data, "provider": infer_provider(base_url if isinstance(base_url, str)
                                                       else None)}
        return data

    # The card's own rules (catalog.CARD_RULES), the ones a catalog built in Python keeps: a
    # number's before pydantic reads it (it would read the text "1" as 1), the others' after
    # (a capability pydantic names by its place in the list, a value that is no string);
    # stream_usage and auto are Boolean, read by the rule CARD_RULES give them.
    @field_validator("input_per_mtok", "output_per_mtok", "context_window", mode="before")
    @classmethod
    def _card_number(cls, value: Any, info: ValidationInfo) -> Any:
        return _card_rule(value, info)

    @field_validator("capabilities", mode="before")
    @classmethod
    def _capabilities_listed(cls, value: object) -> object:
        problem = list_problem(value, "capabilities")  # (null too, as a card's)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("fallbacks", mode="before")
    @classmethod
    def _fallbacks_ordered(cls, value: object) -> object:
        unordered = unordered_names(value, "fallbacks")  # (their order is the order tried)
        if unordered is not None:
            raise ValueError(unordered)
        return value

    @field_validator("provider", mode="before")
    @classmethod
    def _provider_spelling(cls, value: object) -> object:
        return provider_spelling(value)

    @field_validator("name", "profile", "provider", "base_url", "api_key_env", "capabilities",
                     "fallbacks", "upstream_model")
    @classmethod
    def _card_value(cls, value: Any, info: ValidationInfo) -> Any:
        return _card_rule(value, info)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # (the settings' repr and str show a base_url's password and credential parameters
        # masked, as every URL switchpoint shows)
        for name, value in super().__repr_args__():
            yield name, (redact_url(value) if name == "base_url" and isinstance(value, str)
                         else value)

    def card(self) -> ModelCard:
        return ModelCard(
            name=self.name, profile=self.profile, provider=self.provider, base_url=self.base_url,
            api_key_env=self.api_key_env, input_per_mtok=self.input_per_mtok,
            output_per_mtok=self.output_per_mtok, context_window=self.context_window,
            capabilities=tuple(self.capabilities), tier=self.tier,
            fallbacks=tuple(self.fallbacks), upstream_model=self.upstream_model,
            stream_usage=self.stream_usage, auto=self.auto,
        )


#: Where a config given to a Python call as a mapping of its keys comes from, as its errors say.
MAPPING_CONFIG = "the config mapping passed in"
#: Where a command's flags come from, as its errors say (a command's ``overrides``).
COMMAND_LINE = "the command line"
#: Where :func:`load_settings`'s ``overrides`` come from when its caller does not say.
OVERRIDES = "overrides"


@dataclass(frozen=True)
class _Source:
    """Where settings came from, so a reload reads the same places again."""

    path: Path | None
    overrides: dict[str, Any]
    environ: Mapping[str, str] | None  # None: the process environment at each load
    overrides_from: str = OVERRIDES
    path_arg: str = "path"
    empty: bool = False  # the file held no settings (empty, or only comments)


class CacheSettings(BaseModel):
    """The decision cache (LRU + TTL): ``size: 0`` turns it off; ``ttl_seconds: 0`` keeps
    entries until the LRU evicts them (no expiry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: Integer = Field(10_000, ge=0, le=MAX_CACHE_ENTRIES)
    ttl_seconds: Real = Field(3600.0, ge=0, le=MAX_CACHE_TTL_S, allow_inf_nan=False)


class CorsSettings(BaseModel):
    """Cross-origin requests from browsers: off (no CORS headers) unless ``allow_origins``
    names the pages' origins (``["*"]`` for any; credentials are then never allowed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_origins: list[Text] = Field(default_factory=list, max_length=100)
    allow_headers: list[Text] = Field(
        default_factory=lambda: ["authorization", "content-type", "x-session-id",
                                 "x-switchpoint-cost-weight", "x-switchpoint-models"],
        max_length=100)
    max_age_s: Integer = Field(600, ge=0, le=86_400)

    @field_validator("allow_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{json_quoted(origin)} is not an origin; write it as "
                                 "scheme://host[:port], e.g. https://app.example.com, or '*'")
        return value


class StoreSettings(BaseModel):
    """The SQLite store in ``data_dir``. ``synchronous``: ``full`` fsyncs every commit (survives
    power loss); ``normal`` survives a crash of the process but not of the machine, and is
    cheaper per request (see benchmarks/RESULTS.md). ``retention_days``: log entries older than
    this are deleted (by the service, hourly, and by ``switchpoint prune``), feedback only once
    the learning checkpoint holds it (see :mod:`switchpoint.store.retention`); unset, the logs
    are kept forever and grow with the traffic (``GET /health`` shows their size).
    ``spill_max_mb``: while the database refuses writes (a full disk, a lock another process
    holds), what it refused waits in a spill file beside it, to be written once it takes
    writes again; past this size, less a reserve for the records of requests in flight then
    (see :func:`~switchpoint.store.spill.spill_reserve`), the gateway turns new requests away
    (503 ``storage_unavailable``) until then, rather than answer what it could not log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    synchronous: Literal["full", "normal"] = "full"
    spill_max_mb: Real = Field(MAX_SPILL_BYTES / 2**20, gt=0, le=1_048_576,
                                allow_inf_nan=False)
    retention_days: Real | None = Field(None, gt=0, le=MAX_RETENTION_DAYS, allow_inf_nan=False)

    @property
    def spill_limit(self) -> int:
        """``spill_max_mb`` in bytes."""
        return max(1, int(self.spill_max_mb * 2**20))


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# The most proxies (addresses or networks) ``server.trusted_proxies`` may list.
MAX_TRUSTED_PROXIES = 100


def proxy_network(entry: str) -> IPNetwork:
    """``entry`` of ``server.trusted_proxies`` (an IP address, or a network in CIDR notation)
    as the network it names (IPv4 mapped into IPv6, ``::ffff:10.0.0.5``, as the IPv4 one: a
    peer's address is read so); ValueError saying how to write it otherwise."""
    text = entry.strip()
    if "%" not in text:
        try:
            network = ipaddress.ip_network(text)
            mapped = (network.network_address.ipv4_mapped
                      if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96
                      else None)
            return (network if mapped is None
                    else ipaddress.IPv4Network((mapped, network.prefixlen - 96)))
        except ValueError as exc:
            if "host bits set" in str(exc):
                network = ipaddress.ip_network(text, strict=False)
                raise ValueError(f"{json_quoted(entry)} has bits set past its prefix length: write "
                                 f"the network as {network}, or the one address as "
                                 f"{text.split('/', 1)[0]}") from None
    if text == "*":
        problem = ("would take every peer for a proxy, so any client could claim any address: "
                   "list the proxies' addresses (0.0.0.0/0 and ::/0 if every peer truly is one)")
    elif "%" in text:
        problem = "has a zone (%...), which a peer's address never carries: leave it out"
    else:
        problem = ("is not an IP address or a network: write an address (10.0.0.5, ::1) or a "
                   "network in CIDR notation (10.0.0.0/8, fd00::/8), not a host name")
    raise ValueError(f"{json_quoted(entry)} {problem}")


def _proxy_entry(entry: str) -> str:
    proxy_network(entry)
    return entry


# The lengths a NAT64 prefix may have, each putting the IPv4 address an address
# under it carries at its own place: right after the prefix, bits 64-71 skipped (a /96: in
# the last 32 bits).
NAT64_PREFIX_LENGTHS = (32, 40, 48, 56, 64, 96)
# The most prefixes ``gateway.nat64_prefixes`` may list: a network runs a translator or two.
MAX_NAT64_PREFIXES = 16


def nat64_network(entry: str) -> ipaddress.IPv6Network:
    """``entry`` of ``gateway.nat64_prefixes`` (an IPv6 network in CIDR notation, of a length
    :data:`NAT64_PREFIX_LENGTHS` lists) as the network it names; ValueError saying how to
    write it otherwise."""
    text = entry.strip()
    example = "write the prefix the translator uses, such as 2001:db8:64::/96 or 2001:db8::/32"
    try:
        network = ipaddress.ip_network(text)
    except ValueError as exc:
        if "host bits set" in str(exc):
            wide = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"{json_quoted(entry)} has bits set past its prefix length: "
                             f"write the prefix as {wide}") from None
        raise ValueError(f"{json_quoted(entry)} is not an IPv6 network: {example}") from None
    if not isinstance(network, ipaddress.IPv6Network) or "/" not in text:
        raise ValueError(f"{json_quoted(entry)} is not an IPv6 network in CIDR notation: "
                         f"{example}")
    if network.prefixlen not in NAT64_PREFIX_LENGTHS:
        lengths = ", ".join(f"/{n}" for n in NAT64_PREFIX_LENGTHS)
        raise ValueError(f"{json_quoted(entry)} is a /{network.prefixlen}, and a NAT64 prefix is "
                         f"one of {lengths} (which says where the IPv4 address sits): {example}")
    return network


def _nat64_entry(entry: str) -> str:
    nat64_network(entry)
    return entry


# The most names ``server.allowed_hosts`` may list.
MAX_ALLOWED_HOSTS = 100
# A host name: labels of letters, digits, hyphens and underscores (not at a label's ends), at
# most 63 characters each, 253 in all (a trailing dot, the root, is dropped before).
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*")


def host_name(text: str) -> str | None:
    """``text`` (a host name, or an IP address: an IPv6 one in brackets or not) as it is
    compared: lowercase, without a trailing dot, an IPv6 address without brackets and written
    as :mod:`ipaddress` writes it; None when it is neither a host name nor an address."""
    name = text.lower()
    if name.startswith("[") and name.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(name[1:-1]))
        except ValueError:
            return None
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    name = name[:-1] if name.endswith(".") else name
    return name if _HOST_NAME.fullmatch(name) else None


def allowed_host(entry: str) -> str:
    """``entry`` of ``server.allowed_hosts`` (a host name or an IP address, or ``*``) as it is
    compared (:func:`host_name`); ValueError saying how to write it otherwise."""
    text = entry.strip()
    if text == "*":
        return text
    name = host_name(text)
    if name is not None:
        return name
    bare = text.split("://", 1)[-1].split("/", 1)[0]  # a URL's host and port
    host, _, port = bare.rpartition(":") if re.fullmatch(r".+:[0-9]*", bare) else (bare, "", "")
    what = cut(host, 60) if host_name(host) is not None else "the host name"
    if "://" in text:
        problem = f"is a URL: write {what} alone, as a Host header names it"
    elif "/" in text:
        problem = f"has a path: write {what} alone"
    elif "*" in text:
        problem = ("holds a wildcard, which only '*' alone takes (any host, no check): list "
                   "each name")
    elif port or bare.endswith(":"):
        problem = f"has a port: write {what} alone; every port of it is allowed"
    elif not text:
        problem = "is empty: write a host name (api.internal) or an IP address"
    else:
        problem = ("is not a host name or an IP address: write a name of letters, digits, "
                   "hyphens and dots (api.internal, router.example.com), an address "
                   "(10.0.0.5, ::1), or '*' for any host")
    raise ValueError(f"{json_quoted(entry)} {problem}")


class ServerSettings(BaseModel):
    """The HTTP server's own limits (``switchpoint serve``), so no client can exhaust it.

    ``max_connections`` bounds the open client connections: past it, the connection idle the
    longest (between requests, or still sending its request) is closed to make room, and when
    every connection is busy the newcomer gets a 503; it is also lowered to fit the process's
    open-file limit. A request's head (request line and headers) must arrive within
    ``header_timeout_s`` of its first byte (of the connection, for a first request) and be at
    most ``max_header_bytes`` (else 431; a chunked body's chunk-size line or trailer over it is
    a 400); its body must arrive within ``body_timeout_s`` of the head (else 408). An idle
    keep-alive connection is closed after ``keep_alive_timeout_s``; a client that reads none
    of its answer for ``write_timeout_s`` is disconnected. The request
    bodies held in memory at once (each read whole, once its route has checked who calls)
    total at most ``max_body_buffer_bytes`` (or one ``max_request_bytes``, if that is more),
    and one client's (its credential, else its address) at most a quarter of it (or one
    ``max_request_bytes``): past either, a request gets a 503 ``server_busy`` with
    ``Retry-After``. ``backlog`` is the listen queue.

    Told to stop (``SIGTERM``, ``SIGINT``), the service takes no new connection and lets the
    requests in flight finish for at most ``shutdown_timeout_s``; then (or at once, on a
    second signal) it ends those still running itself: each is logged, as ended by the stop,
    and its budget hold settled, before the process exits. The default of 5 s leaves what
    follows (ending them, the log's last commit, the learning checkpoint) room within the
    tightest common grace period, Docker's 10 s before it kills (Kubernetes gives 30 s,
    systemd 90 s): raise it to what the orchestrator allows, minus a few seconds.

    ``trusted_proxies`` lists the proxies (IP addresses, or networks in CIDR notation) whose
    ``X-Forwarded-For`` names the client (see :mod:`switchpoint.server.proxies`). Empty (the
    default), the client is the peer of the connection, whatever a request claims: its
    address is what a request without a credential counts against in the body buffer, and
    the owner of its conversations when it sends no session id.

    ``allowed_hosts`` lists the host names (or addresses) a request's ``Host`` header may
    name besides ``localhost`` (and the names under it) and an IP address, which are always
    served: each written as :func:`host_name` writes it, ``*`` for any. A service listening
    on loopback checks every request's ``Host`` against them; one listening beyond it, only
    when the list is given (see :mod:`switchpoint.server.hosts`).
    Every key needs a restart.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_connections: Integer = Field(1000, ge=1, le=1_000_000)
    header_timeout_s: Real = Field(10.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    body_timeout_s: Real = Field(30.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    keep_alive_timeout_s: Real = Field(5.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    write_timeout_s: Real = Field(60.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    max_header_bytes: Integer = Field(16_384, ge=1024, le=1 << 20)
    max_body_buffer_bytes: Integer = Field(64 << 20, ge=1 << 20, le=MAX_BYTES)
    backlog: Integer = Field(128, ge=1, le=65_535)
    shutdown_timeout_s: Real = Field(5.0, ge=0, le=MAX_WAIT_S, allow_inf_nan=False)
    trusted_proxies: list[Annotated[Text, AfterValidator(_proxy_entry)]] = Field(
        default_factory=list, max_length=MAX_TRUSTED_PROXIES)
    allowed_hosts: list[Annotated[Text, AfterValidator(allowed_host)]] = Field(
        default_factory=list, max_length=MAX_ALLOWED_HOSTS)

    @property
    def proxy_networks(self) -> tuple[IPNetwork, ...]:
        """``trusted_proxies`` as networks (an address is a network of one)."""
        return tuple(proxy_network(entry) for entry in self.trusted_proxies)


class GatewaySettings(BaseModel):
    """The OpenAI-compatible gateway (``POST /v1/chat/completions``).

    Timeouts (seconds) bound each upstream call: opening the connection, any silence while
    waiting for bytes, and, for streams, the time to the first content chunk. Retries: up to
    ``max_attempts_per_model`` tries per model with full-jitter backoff from
    ``backoff_base_s`` (capped at ``backoff_cap_s``), or exactly the upstream's ``Retry-After``
    when it is at most ``max_retry_after_s``; a whole request gives up after ``max_total_s``.
    Health: a model's circuit opens after ``failure_threshold`` failures in a row (or an error
    rate of at least ``error_rate_threshold`` over its last ``health_window`` calls made within
    ``health_window_s`` seconds, once they are ``health_min_samples`` or more; 1 switches that
    rule off, leaving the circuit to ``failure_threshold``) for ``cooldown_s`` (doubling up to
    ``max_cooldown_s`` while its probes fail); ``prefer_healthy`` ranks degraded and down
    models last for ``auto`` (a success rate counts toward degraded and down, too, once
    ``health_min_samples`` calls are in the window). Session pins: hard for
    ``pin_hard_window_s`` after a session's last answer, then a score bonus of
    ``pin_soft_bonus`` until ``pin_soft_window_s`` (a window of 0 is off:
    ``pin_soft_window_s: 0`` turns pinning off). ``backoff_base_s: 0`` with
    ``backoff_cap_s: 0`` retries at once; ``max_retry_after_s: 0`` waits out no
    ``Retry-After`` (the next model answers instead).
    ``max_upstream_connections`` caps the connections to each upstream. A reload applies every
    key at once but that one, which needs a restart. ``max_in_flight_per_tenant`` bounds the
    model calls one tenant (all its keys together; a key of no tenant, alone) has in flight,
    from planning to the end of its answer or stream, so no tenant holds every connection to
    an upstream: set, a hard cap; unset, a quarter of ``max_upstream_connections`` (at least
    1), which a tenant may pass while the calls in flight all told leave a quarter free for
    the others. A tenant's own ``max_in_flight`` (``tenants: {acme: {max_in_flight: 16}}``)
    replaces it for that tenant, a hard cap; a key of no tenant keeps this share. Past it a
    request is a 429 ``too_many_in_flight`` with ``Retry-After``, refused before anything is
    routed or charged, and logged as ``refused``. An upstream answer larger than
    ``max_response_bytes``, a plain (not streamed) one larger than ``max_plain_answer_bytes``
    once inflated, or a line of its stream longer than ``max_sse_line_bytes``, is refused as
    ``response_too_large`` (the next model is tried) before it can fill memory or hold the
    event loop while its JSON is read.
    Expired session pins are purged every ``pin_purge_interval_s``; at most
    ``pin_max_sessions`` sessions keep a pin, shared fairly by the tenants (past it the
    tenant holding the most loses its least recently used pin).
    ``allow_registered_metadata_hosts`` lets a model registered at run time (``POST
    /v1/router/models``) name a link-local or cloud metadata host in its ``base_url``, or a
    host name resolving to one (refused by default: see :mod:`switchpoint.registration`);
    the config's own models may name any host. ``nat64_prefixes`` lists the network's own
    NAT64 prefixes (at most 16; each an IPv6 /32, /40, /48, /56, /64 or /96): an address
    under one reaches the IPv4 address it carries through the translator, so a registered
    model's address there is judged by that one (the well-known ``64:ff9b::/96`` and the
    local-use ``64:ff9b:1::/48`` always are).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout_s: Real = Field(5.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    read_timeout_s: Real = Field(60.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    first_token_timeout_s: Real = Field(30.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    max_attempts_per_model: Integer = Field(2, ge=1, le=10)
    backoff_base_s: Real = Field(0.25, ge=0, le=MAX_WAIT_S, allow_inf_nan=False)
    backoff_cap_s: Real = Field(4.0, ge=0, le=MAX_WAIT_S, allow_inf_nan=False)
    max_retry_after_s: Real = Field(10.0, ge=0, le=MAX_WAIT_S, allow_inf_nan=False)
    max_total_s: Real = Field(120.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    prefer_healthy: Boolean = True
    failure_threshold: Integer = Field(5, ge=1, le=1000)
    error_rate_threshold: Real = Field(0.5, ge=0, le=1, allow_inf_nan=False)
    cooldown_s: Real = Field(30.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    max_cooldown_s: Real = Field(300.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    health_window: Integer = Field(50, ge=1, le=MAX_HEALTH_WINDOW)
    health_min_samples: Integer = Field(5, ge=1, le=MAX_HEALTH_WINDOW)
    health_window_s: Real = Field(300.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    degraded_latency_ms: Real | None = Field(None, gt=0, le=MAX_WAIT_S * 1000,
                                              allow_inf_nan=False)
    pin_hard_window_s: Real = Field(300.0, ge=0, le=MAX_PIN_S, allow_inf_nan=False)
    pin_soft_window_s: Real = Field(1800.0, ge=0, le=MAX_PIN_S, allow_inf_nan=False)
    # A score is an expected error (0-1) plus λ times a cost: past 1e4 no bonus means more.
    pin_soft_bonus: Real = Field(0.5, ge=0, le=1e4, allow_inf_nan=False)
    max_upstream_connections: Integer = Field(256, ge=1, le=100_000)
    max_in_flight_per_tenant: Integer | None = Field(None, ge=1, le=MAX_IN_FLIGHT)
    # 32 MiB: a long answer is ~0.5 MB of JSON, and logprobs multiply it by ~50 at most.
    max_response_bytes: Integer = Field(32 << 20, ge=1024, le=MAX_BYTES)
    # 1 MiB: one stream event is a few tokens (a few KB with logprobs).
    max_sse_line_bytes: Integer = Field(1 << 20, ge=1024, le=MAX_BYTES)
    # 4 MiB: a 128k-token answer is ~0.5 MB of JSON, eight times over (n > 1, escaped text,
    # logprobs of a few thousand tokens); its JSON is read at once, holding the event loop
    # (~0.3 s a MiB of the densest JSON), where a stream is read an event at a time.
    max_plain_answer_bytes: Integer = Field(4 << 20, ge=1024, le=MAX_BYTES)
    pin_purge_interval_s: Real = Field(60.0, gt=0, le=MAX_WAIT_S, allow_inf_nan=False)
    # A pin is a row of sessions.db of about 240 bytes (its tenant and index included): 10
    # million is about 2.4 GB.
    pin_max_sessions: Integer = Field(100_000, ge=1, le=10_000_000)
    allow_registered_metadata_hosts: Boolean = False
    nat64_prefixes: list[Annotated[Text, AfterValidator(_nat64_entry)]] = Field(
        default_factory=list, max_length=MAX_NAT64_PREFIXES)

    @property
    def nat64_networks(self) -> tuple[ipaddress.IPv6Network, ...]:
        """``nat64_prefixes`` as networks."""
        return tuple(nat64_network(entry) for entry in self.nat64_prefixes)

    @field_validator("error_rate_threshold")
    @classmethod
    def _error_rate_threshold(cls, value: float) -> float:
        if value == 0:
            raise ValueError("must be > 0 (0 would open a model's circuit at any failure once "
                             "health_min_samples calls are seen, however many succeeded): set "
                             "failure_threshold to 1 to open it at the first failure, or "
                             "error_rate_threshold to 1 to leave it to failure_threshold alone")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> GatewaySettings:
        if self.pin_soft_window_s < self.pin_hard_window_s:
            raise ValueError(f"pin_soft_window_s ({self.pin_soft_window_s:g}) must be >= "
                             f"pin_hard_window_s ({self.pin_hard_window_s:g})")
        if self.max_cooldown_s < self.cooldown_s:
            raise ValueError(f"max_cooldown_s ({self.max_cooldown_s:g}) must be >= cooldown_s "
                             f"({self.cooldown_s:g})")
        if self.health_min_samples > self.health_window:
            raise ValueError(f"health_min_samples ({self.health_min_samples}) must be <= "
                             f"health_window ({self.health_window}): the window never holds "
                             "more calls than that, so the error-rate rule could never judge; "
                             "raise health_window or lower health_min_samples")
        if self.backoff_cap_s < self.backoff_base_s:
            raise ValueError(f"backoff_cap_s ({self.backoff_cap_s:g}) must be >= "
                             f"backoff_base_s ({self.backoff_base_s:g}): the cap would hold "
                             "every backoff under the base; for retries without a wait set "
                             "both to 0")
        return self


class Settings(BaseModel):
    """Everything the service reads at start (and again on ``POST /v1/router/reload``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    models: list[ModelEntry] | None = Field(None, max_length=MAX_CATALOG_MODELS)
    policy: Text = Field("cluster", min_length=1)
    policies: dict[Text, Text] = Field(default_factory=dict, max_length=MAX_POLICIES)
    cost_weight: Real = Field(DEFAULT_COST_WEIGHT, ge=0, le=MAX_COST_WEIGHT,
                              allow_inf_nan=False)
    cache: CacheSettings = CacheSettings()
    weights: Text | None = None
    data_dir: Text = DEFAULT_DATA_DIR
    store: StoreSettings = StoreSettings()
    cors: CorsSettings = CorsSettings()
    expected_output_tokens: Integer = Field(DEFAULT_OUTPUT_TOKENS, ge=0, le=MAX_TOKENS)
    max_request_bytes: Integer = Field(DEFAULT_MAX_REQUEST_BYTES, ge=1024, le=MAX_BYTES)
    max_weights_bytes: Integer = Field(MAX_WEIGHTS_BYTES, ge=1, le=MAX_WEIGHTS_BYTES_LIMIT)
    admin_token_env: Text | None = None
    server: ServerSettings = ServerSettings()
    gateway: GatewaySettings = GatewaySettings()
    auth: Literal["none", "keys"] = "none"
    allow_unauthenticated: Boolean = False
    tenants: dict[Text, TenantSettings] = Field(default_factory=dict, max_length=MAX_TENANTS)
    budgets: BudgetSettings = BudgetSettings()
    sla: SLASettings | None = None
    escalation: EscalationSettings = EscalationSettings()
    governance: GovernanceSettings = GovernanceSettings()
    learning: LearningConfig = LearningConfig()
    experiments: dict[Text, ExperimentConfig] = Field(default_factory=dict,
                                                     max_length=MAX_EXPERIMENTS)

    _source: _Source | None = PrivateAttr(default=None)
    _admin_token: str | None = PrivateAttr(default=None)
    _admin_token_problem: str | None = PrivateAttr(default=None)

    @field_validator("admin_token_env")
    @classmethod
    def _admin_env_name(cls, value: str | None) -> str | None:
        problem = None if value is None else env_var_name_problem(value,
                                                                  "SWITCHPOINT_ADMIN_TOKEN")
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("tenants")
    @classmethod
    def _tenant_names(cls, value: dict[str, TenantSettings]) -> dict[str, TenantSettings]:
        return check_tenant_names(value)

    @field_validator("policies")
    @classmethod
    def _policy_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:  # a swap names it in the URL's path: POST /v1/router/policy/NAME
            check_name(name, "policy name")
        return value

    @field_validator("experiments")
    @classmethod
    def _experiment_names(cls, value: dict[str, ExperimentConfig]
                          ) -> dict[str, ExperimentConfig]:
        return check_experiment_names(value)

    @property
    def source_path(self) -> Path | None:
        """The config file these settings were read from (None: no file)."""
        return self._source.path if self._source is not None else None

    @property
    def source_empty(self) -> bool:
        """The config file these settings were read from held no settings (it was empty, or
        held only whitespace and comments): they are the defaults, with what the environment
        and the command line set."""
        return self._source is not None and self._source.empty

    @property
    def admin_token(self) -> str | None:
        """The bearer token the admin routes require: what the variable ``admin_token_env``
        names held when these settings were read, if it is fit to guard them (None: no
        variable is named, or :attr:`admin_token_problem` says why it holds no such token)."""
        return self._admin_token

    @property
    def admin_token_problem(self) -> str | None:
        """Why ``admin_token_env`` names no token fit to guard the admin routes (unset, empty,
        too short; None: it names one, or no variable is named). Only serving HTTP needs the
        token, so only the server refuses such settings; in process they work as they are."""
        if self.admin_token_env is None or self._admin_token is not None:
            return None
        return self._admin_token_problem or (
            f"${self.admin_token_env} was never read, since these settings were built by hand; "
            "read them with load_settings, which takes the token from the environment")

    @property
    def db_path(self) -> Path:
        return Path(self.data_dir) / DB_FILENAME

    def catalog(self) -> Catalog | None:
        """The configured catalog, or None to route over the weights' own profiles."""
        if self.models is None:
            return None
        return Catalog([m.card() for m in self.models], self.expected_output_tokens)

    def policy_weights(self, name: str) -> str | None:
        """Where the weights of policy ``name`` live (None: the bundled default)."""
        return self.policies.get(name)

    def reloaded(self) -> Settings:
        """Read the same file, environment and flags again (for a live reload)."""
        if self._source is None:
            return self
        source = self._source
        return load_settings(source.path, overrides=source.overrides, environ=source.environ,
                             overrides_from=source.overrides_from, path_arg=source.path_arg)


def load_settings(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides_from: str = OVERRIDES,
    path_arg: str = "path",
) -> Settings:
    """Build :class:`Settings` from a YAML file (optional), the environment and ``overrides``.

    ``overrides`` hold values by top-level key (None values are ignored): a command's flags,
    a config given as a mapping, or a program's own. ``overrides_from`` says where they came
    from, in the error about a bad one (``models: must be a list, got 5 (from overrides)``):
    :data:`COMMAND_LINE` for a command's flags, :data:`MAPPING_CONFIG` for a config mapping.
    ``path_arg`` is what the caller took the file's path as, a Python argument (``config``)
    or a flag (``--config``), which an error about the file tells to fix.
    Raises :class:`ConfigError` naming the key path and the reason.
    """
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    file_empty = False
    origin: dict[str, str] = {}
    file = None if path is None else Path(path)
    # The paths the file gave relative to its folder, by key: that folder is part of each.
    folders: dict[str, Path] = {}
    if file is not None:
        data = _read_yaml(file, path_arg)
        file_empty = not data
        given = [(key, data, key) for key in _PATH_KEYS]
        if isinstance(data.get("policies"), dict):
            data["policies"] = dict(data["policies"])
            given += [(f"policies.{k}", data["policies"], k) for k in data["policies"]]
        for key, holder, name in given:
            value = holder.get(name)
            if isinstance(value, str):
                holder[name] = _resolve_given(file, value)
                if holder[name] != value and not Path(value).expanduser().is_absolute():
                    folders[key] = file.resolve().parent
        origin = {key: f"in {file}" for key in data}
    for key, value, var in _env_values(env):
        if "." in key:
            top, sub = key.split(".", 1)
            section = data.get(top)
            data[top] = {**(section if isinstance(section, dict) else {}), sub: value}
            if top not in Settings.model_fields:  # (refused as the unknown key it is)
                origin[top] = f"from {var}"
        else:
            data[key] = value
        origin[key] = f"from {var}"
    clean = {k: v for k, v in (overrides or {}).items() if v is not None}
    data.update(clean)
    origin.update({k: f"from {overrides_from}" for k in clean})
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, origin) from None
    check_catalog(settings)
    in_file = f"in {file}"
    sources = {key: f"in the file passed {_passed(path_arg)}" if where == in_file else where
               for key, where in origin.items()}
    _check_paths(settings, {key: folder for key, folder in folders.items()
                            if origin.get(key.split(".")[0]) == in_file}, path_arg, sources)
    check_experiments(settings)
    if settings.admin_token_env is not None:
        settings._admin_token, settings._admin_token_problem = _admin_token(
            env, settings.admin_token_env)
    settings._source = _Source(path=file, overrides=dict(overrides or {}), environ=environ,
                               overrides_from=overrides_from, path_arg=path_arg,
                               empty=file_empty)
    return settings


def _admin_token(env: Mapping[str, str], name: str) -> tuple[str | None, str | None]:
    """(the token in ``$name``, None), or (None, why it holds none fit to guard the admin
    routes). Whether that stops anything is the server's to say: nothing else uses it."""
    token = env.get(name, "").strip()
    if not token:
        return None, (f"${name} is not set or empty; export the admin token there, or drop "
                      "admin_token_env to leave /v1/router/* open")
    if len(token) < MIN_ADMIN_TOKEN:
        return None, (f"${name} holds a token of {len(token)} characters; use at least "
                      f"{MIN_ADMIN_TOKEN} (e.g. the output of `openssl rand -hex 24`)")
    problem = header_value_problem(token)
    if problem is not None:
        # (a caller's Authorization header could never match it: no one could use the routes)
        return None, (f"${name} {problem}: the token travels in the Authorization header, so "
                      "it is printable ASCII (e.g. the output of `openssl rand -hex 24`)")
    return token, None


class _DuplicateKey(yaml.constructor.ConstructorError):
    """A key written twice in one YAML mapping."""


#: What a value of each YAML type is, as a refusal of one that is not says.
_YAML_KINDS = {"int": "a whole number", "float": "a number", "bool": "true or false",
               "timestamp": "a date", "null": "null"}


class _UniqueKeys(yaml.constructor.SafeConstructor):
    """YAML's safe constructor, refusing a key written twice in one mapping (plain YAML keeps
    the last silently, so a second arm or tenant of the same name would replace the first),
    and a value its type cannot be made of (a date of no calendar, ``2021-02-30``; ``!!int
    x``) as a YAML error at its line and column, where the constructor's own ValueError (or
    KeyError, IndexError) escaped as a traceback."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, KeyError, IndexError, TypeError, OverflowError):
            short = str(node.tag).removeprefix("tag:yaml.org,2002:")
            node_kind = str(getattr(node, "id", "node"))  # (scalar, sequence or mapping)
            kind = _YAML_KINDS.get(short, f"a {node_kind}")
            value = json_quoted(node.value) if isinstance(node, yaml.ScalarNode) else (
                f"this {node_kind}")
            raise yaml.constructor.ConstructorError(
                None, None, f"{value} is read as {kind} (!!{short}) but is not one; write it "
                            "in quotes (and without a tag) to keep it as text, or correct it",
                node.start_mark) from None

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if not isinstance(node, yaml.MappingNode):  # (!!map on a list: YAML's own refusal)
            return super().construct_mapping(node, deep=deep)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(
                    key_node, yaml.ScalarNode):
                continue  # a merge (<<: *base) may repeat keys; a complex key is YAML's to refuse
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise _DuplicateKey(
                    None, None,
                    f"the key {json_quoted(key)} is written twice in one mapping; keep one",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _no_base_60(resolvers: dict[Any, list[tuple[str, Any]]]) -> dict[Any, list[tuple[str, Any]]]:
    """YAML's implicit resolvers, a plain value holding ``:`` never read as a number: YAML
    1.1 reads ``10:11:12`` as the base-60 number 36672 and the IPv6 address
    ``1:2:3:4:5:6:7:8`` as 2895057742028, which a config means as text (YAML 1.2 reads them
    so); ``!!int 1:30`` still reads as 90."""
    number = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    return {first: [(tag, re.compile(r"(?!.*:)" + pattern.pattern, pattern.flags)
                     if tag in number else pattern) for tag, pattern in listed]
            for first, listed in resolvers.items()}


#: The characters that end a line, or the text, for YAML's scanner; and those or a blank.
_BREAKZ = "\0\r\n\x85\u2028\u2029"
_BLANKZ = _BREAKZ + " \t"


class _Yaml12Scanner(yaml.SafeLoader):
    """The pure-Python safe loader reading what YAML 1.2 and libyaml read and PyYAML's own
    scanner refused, so that a config reads the same with libyaml and without it.

    A tab where YAML 1.2 (and libyaml) take one as white space within a line: after a value
    or before its comment (``policy: knn<TAB># note``), between a key's colon and its value,
    inside a flow collection, between the words of a plain value, after a block scalar's
    header (``|-<TAB>``) and after a tag or an anchor; PyYAML refused every tab outside a
    quoted value. A tab where indentation is read (at the start of a line, after ``- ``) is
    still refused, as YAML and libyaml refuse it. A ``?`` inside a plain value of a flow
    collection (a URL's query); a tag as libyaml ends it; a value tagged only ``!``, as text."""

    def _line_break(self) -> str:
        """The line break read here, as a newline ('' when there is none)."""
        return str(self.scan_line_break())  # type: ignore[no-untyped-call]

    def scan_to_next_token(self) -> None:
        # PyYAML's loop, a tab skipped where no simple key may start, as libyaml's does
        if self.index == 0 and self.peek() == _BOM:
            self.forward()
        while True:
            while self.peek() == " " or (self.peek() == "\t" and (
                    self.flow_level or not self.allow_simple_key)):
                self.forward()
            if self.peek() == "#":
                while self.peek() not in _BREAKZ:
                    self.forward()
            if not self._line_break():
                return
            if not self.flow_level:
                self.allow_simple_key = True

    def scan_plain(self) -> yaml.tokens.ScalarToken:
        # PyYAML's, a ``?`` inside a plain value of a flow collection kept in it, as YAML 1.2
        # and libyaml keep it ({base_url: http://host/v1?api-version=1}); PyYAML ended the
        # value there and refused the text
        chunks: list[str] = []
        start_mark = end_mark = self.get_mark()
        indent = self.indent + 1
        spaces: list[str] | None = []
        while True:
            length = 0
            if self.peek() == "#":
                break
            ends = _BLANKZ + ",[]{}" if self.flow_level else _BLANKZ
            while True:
                ch = self.peek(length)
                if ch in _BLANKZ or (ch == ":" and self.peek(length + 1) in ends) or (
                        self.flow_level and ch in ",[]{}"):
                    break
                length += 1
            if length == 0:
                break
            self.allow_simple_key = False
            chunks.extend(spaces or [])
            chunks.append(self.prefix(length))
            self.forward(length)
            end_mark = self.get_mark()
            spaces = self.scan_plain_spaces(indent, start_mark)
            if not spaces or self.peek() == "#" or (
                    not self.flow_level and self.column < indent):
                break
        return yaml.tokens.ScalarToken("".join(chunks), True, start_mark, end_mark)

    def scan_plain_spaces(self, indent: int, start_mark: yaml.Mark) -> list[str] | None:
        # PyYAML's, a tab taken as a space, and refused in a continuation line's indentation
        chunks: list[str] = []
        length = 0
        while self.peek(length) in " \t":
            length += 1
        whitespaces = self.prefix(length)
        self.forward(length)
        if self.peek() not in _BREAKZ[1:]:
            if whitespaces:
                chunks.append(whitespaces)
            return chunks
        line_break = self._line_break()
        self.allow_simple_key = True
        if self.prefix(3) in ("---", "...") and self.peek(3) in _BLANKZ:
            return None
        breaks = []
        while self.peek() in " \t" + _BREAKZ[1:]:
            if self.peek() == "\t" and self.column < indent:
                raise yaml.scanner.ScannerError(
                    "while scanning a plain scalar", start_mark,
                    "found a tab character that violates indentation", self.get_mark())
            if self.peek() in " \t":
                self.forward()
                continue
            breaks.append(self._line_break())
            if self.prefix(3) in ("---", "...") and self.peek(3) in _BLANKZ:
                return None
        if line_break != "\n":
            chunks.append(line_break)
        elif not breaks:
            chunks.append(" ")
        chunks.extend(breaks)
        return chunks

    def scan_block_scalar_indicators(self, start_mark: yaml.Mark) -> tuple[bool | None,
                                                                           int | None]:
        # PyYAML's, a tab after the indicators as a space; a comment glued to them (``>#``)
        # is refused still, as YAML refuses it (a comment follows white space)
        chomping: bool | None = None
        increment: int | None = None
        for _ in range(2):
            ch = self.peek()
            if ch in "+-" and chomping is None:
                chomping = ch == "+"
            elif ch in "0123456789" and increment is None:
                if ch == "0":
                    raise yaml.scanner.ScannerError(
                        "while scanning a block scalar", start_mark,
                        "expected indentation indicator in the range 1-9, but found 0",
                        self.get_mark())
                increment = int(ch)
            else:
                break
            self.forward()
        ch = self.peek()
        if ch not in _BLANKZ:
            raise yaml.scanner.ScannerError(
                "while scanning a block scalar", start_mark,
                "found '#' right after a block scalar's header (| or >); a comment there needs "
                "a space before its #" if ch == "#" else
                f"expected chomping or indentation indicators, but found {ch!r}",
                self.get_mark())
        return chomping, increment

    def scan_block_scalar_ignored_line(self, start_mark: yaml.Mark) -> None:
        while self.peek() in " \t":
            self.forward()
        super().scan_block_scalar_ignored_line(start_mark)

    def scan_tag(self) -> yaml.tokens.TagToken:
        # PyYAML's, ended as libyaml ends a tag: by a tab as by a space, and in a flow
        # collection by a comma (``[!!str, x]``), which with ``[`` and ``]`` is no part of a
        # tag's name (YAML 1.2); PyYAML read ``!!str,`` as a tag of that name and ``[!, x]``
        # as the tag ``!,``, which libyaml reads as an empty text and x. A flow collection's
        # end ends a tag too, as YAML 1.2 ends it (``{a: !}``, ``[!!str]``: the empty text),
        # which PyYAML and libyaml refused, though ``{a: !, b: 1}`` and ``a: !`` were read
        start_mark = self.get_mark()
        ends = _BLANKZ + (",]}" if self.flow_level else "")
        ch = self.peek(1)
        handle: str | None = None
        if ch == "<":
            self.forward(2)
            suffix = self.scan_tag_uri("tag", start_mark)
            if self.peek() != ">":
                raise yaml.scanner.ScannerError("while parsing a tag", start_mark,
                                                f"expected '>', but found {self.peek()!r}",
                                                self.get_mark())
            self.forward()
        elif ch in ends:
            suffix = "!"
            self.forward()
        else:
            length = 1
            while ch not in ends and ch not in "![]{}":
                length += 1
                ch = self.peek(length)
            if ch == "!":
                handle = str(self.scan_tag_handle(  # type: ignore[no-untyped-call]
                    "tag", start_mark))
            else:
                handle = "!"
                self.forward()
            suffix = self.scan_tag_uri("tag", start_mark, flow_indicators=False)
        if self.peek() not in ends:
            raise yaml.scanner.ScannerError("while scanning a tag", start_mark,
                                            f"expected ' ', but found {self.peek()!r}",
                                            self.get_mark())
        return yaml.tokens.TagToken((handle, suffix), start_mark, self.get_mark())

    def scan_tag_uri(self, name: str, start_mark: yaml.Mark, *,
                     flow_indicators: bool = True) -> str:
        # PyYAML's, a tag's name (not a verbatim !<...> one, nor a %TAG prefix) ended by
        # a flow indicator
        if flow_indicators:
            return str(super().scan_tag_uri(name, start_mark))
        chunks: list[str] = []
        length = 0
        while (self.peek(length).isascii() and self.peek(length).isalnum()) or self.peek(
                length) in "-;/?:@&=+$_.!~*'()%":  # (PyYAML's, less , [ and ])
            if self.peek(length) == "%":
                chunks.append(self.prefix(length))
                self.forward(length)
                length = 0
                chunks.append(self.scan_uri_escapes(name, start_mark))
            else:
                length += 1
        if length:
            chunks.append(self.prefix(length))
            self.forward(length)
        if not chunks:
            raise yaml.scanner.ScannerError(f"while parsing a {name}", start_mark,
                                            f"expected URI, but found {self.peek()!r}",
                                            self.get_mark())
        return "".join(chunks)

    def compose_scalar_node(self, anchor: Any) -> yaml.ScalarNode:
        # A value tagged only ``!`` (the non-specific tag) is text, as YAML 1.2 reads it:
        # ``! 5`` and ``! "5"`` the text "5", ``! ''`` and an empty value the empty text;
        # PyYAML (and libyaml, see _NON_SPECIFIC_TAG) read them as the number 5 and as null
        # (so admin_token_env: ! '' read as no admin token)
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        if event.tag == "!":
            event.implicit = (False, False)
        return super().compose_scalar_node(anchor)


class _UniqueKeyLoader(_Yaml12Scanner, _UniqueKeys):
    """The safe loader in pure Python, refusing a key written twice: whose refusals of a text
    that is not valid YAML the config's errors quote (their problem, line and column). It
    reads what YAML 1.2 and libyaml read (:class:`_Yaml12Scanner`)."""

    yaml_implicit_resolvers = _no_base_60(yaml.SafeLoader.yaml_implicit_resolvers)


# The safe loader on libyaml, refusing a key written twice, when PyYAML was built with it:
# five times as fast on a config of a mebibyte (the constructor, the same, stays in Python).
_FastUniqueKeyLoader: type | None = None
if getattr(yaml, "__with_libyaml__", False):
    class _FastUniqueKeyLoader(yaml.CSafeLoader, _UniqueKeys):  # type: ignore[no-redef]
        """:class:`_UniqueKeyLoader` on libyaml's parser."""

        yaml_implicit_resolvers = _UniqueKeyLoader.yaml_implicit_resolvers

#: The byte order mark, which a YAML text may begin with.
_BOM = "\ufeff"

#: How libyaml says a text is nested deeper than it reads (1,000 levels).
_LIBYAML_TOO_DEEP = "exceeded maximum nesting depth"

#: What libyaml reads that YAML refuses, which a text is read by the pure loader for (the
#: refusal then its): a block scalar's header with a comment glued to it, ``key: >#note``
#: (a comment follows white space; libyaml took ``#note`` as one). A text a pattern matches
#: by chance (``a|#b`` in a value) is only read more slowly, as it is.
_LIBYAML_LENIENT = re.compile(r"[|>][-+0-9]{0,2}#")

#: White space and comments, as YAML's scanner skips them between tokens.
_SPACE_AND_COMMENTS = r"(?>\s|#[^\n\r\x85\u2028\u2029]*+)*+"

#: A ``?`` then white space and a comma, or a comment: what :func:`_key_then_comma` looks
#: for first (a text without one holds no ``?`` then a comma), in one pass.
_KEY_THEN_COMMA_OR_COMMENT = re.compile(r"\?\s*+[,#]")

#: The text up to its first ``?`` then a comma, white space and comments between: text
#: without a ``?``, and each ``?`` with the white space and comments after it but no comma
#: (a ``?`` inside one of those comments is part of it). Every part is possessive, so each
#: character is read once, by one match.
_UP_TO_KEY_THEN_COMMA = re.compile(r"(?:[^?]++|\?" + _SPACE_AND_COMMENTS + r"(?!,))*+")


def _key_then_comma(text: str) -> bool:
    """Whether ``text`` holds a ``?`` then a comma, white space or comments between
    (``[?, :a]``): in a flow collection libyaml took the entry past that comma as the empty
    key's value (``[{null: a}]``), which YAML and the pure loader refuse, so such a text is
    read by the pure loader alone, as one :data:`_LIBYAML_LENIENT` matches. One holding it by
    chance (``why?, no`` in a value) is only read more slowly, as it is. A ``?`` inside the
    comment after an earlier one is part of that comment. The text is read in one or two
    regular-expression passes, each character once (some 10-50 ms of CPU for a config of
    1 MB of ``?``)."""
    if _KEY_THEN_COMMA_OR_COMMENT.search(text) is None:
        return False
    end = _UP_TO_KEY_THEN_COMMA.match(text)
    return end is not None and end.end() != len(text)


#: A value tagged only ``!`` (or ``!<!>``), which YAML 1.2 reads as text and libyaml as a plain
#: value (``! 5`` the number 5, ``! ''`` null): a text holding one is read by the pure loader,
#: which reads it as YAML does (:meth:`_Yaml12Scanner.compose_scalar_node`), also where a flow
#: collection's comma or end follows it (``{a: !}``), or the text's byte order mark precedes it.
#: Sought only in a text holding a ``!`` at all; one a pattern matches by chance (``Hi ! there``
#: in a value) is only read more slowly, as it is.
_NON_SPECIFIC_TAG = re.compile(r"(?<![^\s\[{,:\ufeff])!(?:<!>)?(?=[\s,\]}])")


def _stray_bom(text: str) -> int | None:
    """Where ``text`` holds a byte order mark YAML 1.2 does not allow (None: it holds none):
    one is allowed at the start, and inside a quoted value ('...' or "...", whose characters
    are JSON's, any printable one), nowhere else (not in a plain or block value, a comment,
    nor between tokens). libyaml skipped one at the start of a line and the pure loader read
    it as part of a key or a value, so each read such a text otherwise, and neither as YAML
    does. The quoted values are found by the pure loader's scanner, only in a text holding a
    mark past its start; a text it cannot scan is refused when it is read, the marks before
    that place checked here."""
    stray = text.find(_BOM, 1)
    if stray == -1:
        return None
    starts: list[int] = []  # (the quoted values' places, in order: start, end)
    ends: list[int] = []
    scanner = _UniqueKeyLoader(text)
    try:
        while scanner.check_token():
            token = scanner.get_token()  # type: ignore[no-untyped-call]
            if isinstance(token, yaml.ScalarToken) and token.style in ("'", '"'):
                starts.append(token.start_mark.index)
                ends.append(token.end_mark.index)
    except yaml.YAMLError:
        pass
    finally:
        scanner.dispose()
    while stray != -1:
        inside = bisect.bisect_right(starts, stray) - 1
        if inside < 0 or stray >= ends[inside]:
            return stray
        stray = text.find(_BOM, stray + 1)
    return None


def _parse_yaml(text: str) -> Any:
    """The value of the YAML ``text``, by the safe loader, a key written twice refused: the
    one place the config's YAML (a file's, a variable's) is parsed. libyaml parses it when
    PyYAML has it; a text libyaml refuses is read again by the pure-Python loader, so what
    is refused, and how its refusal is worded, stay the pure loader's (libyaml words its
    problems otherwise, counts a bad character's place in bytes, and refuses a directive the
    pure loader lets by). A nesting deeper than libyaml reads, which the pure loader could
    not read either, is its :class:`RecursionError` at once. A text holding what libyaml
    reads and YAML refuses (:data:`_LIBYAML_LENIENT`, :func:`_key_then_comma`), or reads
    otherwise (a value tagged only ``!``: :data:`_NON_SPECIFIC_TAG`), is read by the pure
    loader alone.

    A byte order mark anywhere but at the start or inside a quoted value (two files joined,
    each saved with one) is refused as a character YAML does not allow there
    (:class:`yaml.reader.ReaderError`, see :func:`_stray_bom`)."""
    stray = _stray_bom(text)
    if stray is not None:
        raise yaml.reader.ReaderError("<unicode string>", stray, ord(_BOM), "utf-8",
                                      "a byte order mark is allowed only at the start, or "
                                      "inside a quoted value")
    if (_FastUniqueKeyLoader is not None and _LIBYAML_LENIENT.search(text) is None
            and ("?" not in text or not _key_then_comma(text))
            and ("!" not in text or _NON_SPECIFIC_TAG.search(text) is None)):
        try:
            return yaml.load(text, Loader=_FastUniqueKeyLoader)
        except yaml.YAMLError as exc:
            if getattr(exc, "problem", None) == _LIBYAML_TOO_DEEP:
                raise RecursionError(_LIBYAML_TOO_DEEP) from None
        except UnicodeEncodeError:  # (a lone surrogate, which libyaml is not given)
            pass
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _passed(path_arg: str) -> str:
    """How a file is passed to ``path_arg``: to a flag (to --config), as an argument (as config)."""
    return f"to {path_arg}" if path_arg.startswith("-") else f"as {path_arg}"


def _read_config_text(file: Path, path_arg: str) -> str:
    """The config file's text: a regular file of at most :data:`MAX_CONFIG_BYTES`, read once
    (a directory, a device or a pipe is refused before anything is read from it). Its errors
    say what to pass as ``path_arg``, the argument or flag that named it."""
    shown, passed = quoted_path(file), _passed(path_arg)
    problem = unnameable(file)  # (the system would not even be asked)
    if problem is not None:
        raise ConfigError("config", f"{shown} cannot be read: {problem}; pass a YAML file "
                                    f"{passed}")
    try:
        mode = file.stat().st_mode
    except FileNotFoundError:
        raise ConfigError("config", f"{shown} not found; pass an existing YAML file "
                                    f"{passed}") from None
    except OSError as exc:
        raise ConfigError("config", f"{shown} cannot be read: {read_problem(file, exc)}; "
                                    f"pass a YAML file you can read {passed}") from None
    if stat.S_ISDIR(mode):
        raise ConfigError("config", f"{shown} is a directory; pass the YAML file itself "
                                    f"{passed} (e.g. {quoted_path(file / 'switchpoint.yaml')})")
    if not stat.S_ISREG(mode):
        raise ConfigError("config", f"{shown} is not a regular file (a device, pipe or socket); "
                                    f"pass a YAML file {passed}")
    try:
        with file.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError("config", f"{shown} cannot be read: {read_problem(file, exc)}; "
                                    f"pass a YAML file you can read {passed}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("config", f"{shown} is over {MAX_CONFIG_BYTES >> 20} MiB, the most a "
                                    "config file may hold; a config names models and settings, "
                                    f"so check that the file passed {passed} is the config")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("config", f"{shown} is not UTF-8 text") from None


def _place(text: str, position: int) -> str:
    """Where character ``position`` of ``text`` is, as an editor counts: " at line L, column C"."""
    line_start = text.rfind("\n", 0, position) + 1
    return f" at line {text.count(chr(10), 0, position) + 1}, column {position - line_start + 1}"


def _character(character: object) -> str:
    """The character a YAML reader refused (its code point, or a byte's), as U+XXXX."""
    code = character if isinstance(character, int) else ord(str(character)[:1] or "\0")
    return f"U+{code:04X}"


def _read_yaml(file: Path, path_arg: str) -> dict[str, Any]:
    text = _read_config_text(file, path_arg)
    shown = quoted_path(file)
    try:
        loaded = _parse_yaml(text)
    except RecursionError:
        raise ConfigError("config", f"{shown} is not valid YAML: its values are nested too "
                                    "deeply to read") from None
    except yaml.reader.ReaderError as exc:  # a character YAML allows nowhere in a file
        bom = _character(exc.character) == _character(_BOM)
        what = ("a byte order mark, which YAML allows only at the start of the file or "
                "inside a quoted value (were two files joined?)" if bom else
                "a character YAML does not allow in a file (a control character, say)")
        raise ConfigError("config", f"{shown} is not valid YAML{_place(text, exc.position)}: "
                                    f"it holds {_character(exc.character)}, {what}; remove "
                                    "it") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError("config", f"{shown} is not valid YAML{where}: {problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("config", f"{shown} must hold a mapping of keys (models:, policy:, "
                                    f"...), not a {type(loaded).__name__}")
    return loaded


def _resolve(file: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else file.resolve().parent / p


def _resolve_given(file: Path, value: str) -> str:
    """A path the config ``file`` gives, resolved against the file's folder; a blank one is
    kept as given, to be refused as empty (resolved, it named the folder itself)."""
    return value if not value.strip() else str(_resolve(file, value))


def _section(annotation: Any) -> type[BaseModel] | None:
    """The model of a config section (``cache``, ``gateway``, an optional ``sla``...), whose
    keys a ``__`` variable reaches; None for a key that holds a value."""
    for kind in (annotation, *get_args(annotation)):
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return kind
    return None


def _env_values(env: Mapping[str, str]) -> list[tuple[str, Any, str]]:
    """(key path, parsed value, variable) for every ``SWITCHPOINT_*`` variable naming a key,
    and for every ``SWITCHPOINT_SECTION__KEY`` variable (a path, by its ``__``), which
    validation then refuses as it refuses a key of the file it does not know.

    Other ``SWITCHPOINT_*`` variables, without ``__`` (``SWITCHPOINT_CONFIG``, the cache
    folder's, the benchmarks' own), are left alone: they are not config paths.
    """
    out: list[tuple[str, Any, str]] = []
    for var, raw in sorted(env.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        top, path, sub = var[len(ENV_PREFIX):].lower().partition("__")
        field = Settings.model_fields.get(top)
        if field is None and not path:
            continue
        if path:
            if field is not None and _section(field.annotation) is None:
                raise ConfigError(top, f"holds a value, not keys, so {var} names no config key; "
                                       f"set it whole in {ENV_PREFIX}{top.upper()} (read as "
                                       "YAML)")
            key = f"{top}.{sub}"
        else:
            key = top
        value: Any = raw
        if _takes_boolean(field, sub):
            # (read as the usual spellings, 1 and 0 among them: YAML would read 1 as a
            # number, which a boolean key refuses)
            taken = boolean_text(raw)
            value = raw if taken is None else taken
        elif key not in _PLAIN_STRINGS:
            try:
                value = _parse_yaml(raw)
            except _DuplicateKey as exc:
                raise ConfigError(key, f"{var} is read as YAML, and {exc.problem}") from None
            except (yaml.YAMLError, RecursionError):
                value = raw
        out.append((key, value, var))
    return out


def _takes_boolean(field: FieldInfo | None, sub: str) -> bool:
    """Whether the key a variable names (``field``, or its section's key ``sub``) is a
    boolean."""
    if field is not None and sub:
        section = _section(field.annotation)
        field = None if section is None else section.model_fields.get(sub)
    return field is not None and field.annotation in (bool, bool | None)


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    if loc[:1] == ("models",) and len(loc) > 2:
        return list(ModelEntry.model_fields)
    if loc[:1] == ("cache",) and len(loc) > 1:
        return list(CacheSettings.model_fields)
    if loc[:1] == ("store",) and len(loc) > 1:
        return list(StoreSettings.model_fields)
    if loc[:1] == ("gateway",) and len(loc) > 1:
        return list(GatewaySettings.model_fields)
    if loc[:1] == ("learning",) and len(loc) > 2 and loc[1] == "memory":
        return list(MemoryConfig.model_fields)
    if loc[:1] == ("experiments",) and len(loc) > 2:
        if len(loc) > 4 and loc[2] == "arms":
            return list(ArmConfig.model_fields)
        return list(ExperimentConfig.model_fields)
    sections: dict[str, type[BaseModel]] = {
        "budgets": BudgetSettings, "sla": SLASettings, "escalation": EscalationSettings,
        "governance": GovernanceSettings, "learning": LearningConfig}
    if loc[:1] and str(loc[0]) in sections and len(loc) > 1:
        return list(sections[str(loc[0])].model_fields)
    if loc[:1] == ("tenants",) and len(loc) > 2:
        if len(loc) > 3 and loc[2] in ("sla", "escalation"):
            return list((SLASettings if loc[2] == "sla" else EscalationSettings).model_fields)
        if len(loc) > 3 and loc[2] == "memory":
            return list(MemoryConfig.model_fields)
        return list(TenantSettings.model_fields)
    if loc[:1] == ("server",) and len(loc) > 1:
        return list(ServerSettings.model_fields)
    return list(Settings.model_fields)


def _config_error(exc: ValidationError, origin: Mapping[str, str]) -> ConfigError:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    key = key_path(loc)
    reason = describe(err, _known_keys(loc))
    if len(loc) > 1 and loc[-1] == "[key]":
        # (a mapping's key that is no text: pydantic names it by its repr, which shows bytes
        # the reason does not and a date as Python writes it; the reason says what it was)
        key, reason = key_path(loc[:-2]), f"a key {reason}"
    where = origin.get(str(loc[0])) if loc else None
    nested = ".".join(str(p) for p in loc[:2]) if len(loc) > 1 else None
    where = origin.get(nested or "", where)
    if where and not where.startswith("in "):
        value = err.get("input")
        if (err["type"] == "list_type" and where.startswith("from SWITCHPOINT_")
                and isinstance(value, str)):
            # (an environment value is read as YAML: a comma-separated list is one string, and
            # so is a list YAML could not read, ::1 unquoted say)
            parts = value.strip().removeprefix("[").removesuffix("]").split(",")
            items = [part.strip(" '\"") for part in parts if part.strip(" '\"")]
            reason += f"; write it as a YAML list: {cut(json.dumps(items))}"
        reason += f" ({where})"
    more = len(exc.errors()) - 1
    if more:
        reason += f" (and {more} more problem{'s' if more > 1 else ''})"
    return ConfigError(key, reason)


def check_catalog(settings: Settings) -> None:
    """The rules of the catalog (``models:``) and of what the governance keys name of it: a
    :class:`ConfigError` naming the first key at fault (``models[2].fallbacks[0]``,
    ``tenants.acme.models[1]``), for a config as it is read and for one the models registered
    at run time join."""
    _check_catalog(settings)
    _check_governance(settings)


def _check_catalog(settings: Settings) -> None:
    if settings.models is None:
        return
    fault = catalog_problem([m.card() for m in settings.models])
    if fault is not None:
        raise ConfigError(fault.by_place(), fault.reason)
    for i, entry in enumerate(settings.models):
        if entry.provider == OPENAI_COMPATIBLE and entry.base_url is None:
            raise ConfigError(f"models[{i}].base_url",
                              f"is required for provider {OPENAI_COMPATIBLE} (model "
                              f"{json_quoted(entry.name)}); give the server's URL, e.g. "
                              "http://localhost:8080/v1, or name a known provider")
        displaced = userinfo_displaces_key(entry.card())
        if displaced is not None:
            raise ConfigError(f"models[{i}].base_url",
                              f"of model {json_quoted(entry.name)} {displaced}")


class Named(Protocol):
    """A catalog model as :func:`shared_profiles` reads it: a config's entry
    (:class:`ModelEntry`) or a library catalog's card (:class:`~switchpoint.catalog.ModelCard`)."""

    @property
    def name(self) -> str: ...

    @property
    def profile(self) -> str | None: ...


_Named = TypeVar("_Named", bound=Named)


def shared_profiles(models: Sequence[_Named]) -> list[tuple[_Named, _Named]]:
    """The models of ``models`` that route on another's learned profile by their name alone,
    each with that other: a model without ``profile:`` routes on the weights' profile of its
    name, so one named as another model's ``profile:`` (``gpt-4-1106-preview`` beside ``gpt-4o``
    with ``profile: gpt-4-1106-preview``) takes that model's learned quality, whatever it is
    and costs. One that gives ``profile:`` shares a profile on purpose, and is not listed."""
    owners: dict[str, _Named] = {}
    for model in models:
        if model.profile is not None:
            owners.setdefault(model.profile, model)
    return [(model, owners[model.name]) for model in models
            if model.profile is None and model.name in owners]


def shared_profile_note(model: Named, owner: Named, key: str = "profile:") -> str:
    """What :func:`shared_profiles` found of ``model`` and ``owner``, said alike by the
    warning a config's model gets and the refusal a registered one gets; ``key`` is the card's
    key as its door writes it (the config's ``profile:``, a Python card's ``profile``)."""
    name = json_quoted(model.name, 100)
    return (f"model {name} has no {key}, so it routes on the weights' learned profile of "
            f"its name, {name}, which model {json_quoted(owner.name, 100)} uses (its "
            f"{key}): it takes that model's learned quality, whatever it is and costs")


def _check_governance(settings: Settings) -> None:
    """Names the governance keys use must exist: tenants' and escalation models, budgeted
    models and providers (when there is a catalog to check them against)."""
    if settings.models is None:
        return
    names = [m.name for m in settings.models]
    providers = sorted({m.provider for m in settings.models})
    check_named_models(settings, names)
    unrouted = {m.name for m in settings.models if not m.auto}
    for key, e in _escalations(settings):
        if e.escalation_model in unrouted:
            raise ConfigError(f"{key}.escalation_model",
                              f"{json_quoted(e.escalation_model)} has auto: false (served only "
                              "when a request names it), so escalation may not choose it; name a "
                              "model \"auto\" may choose")
        if e.prefer_provider is not None and e.prefer_provider not in providers:
            raise ConfigError(f"{key}.prefer_provider", f"no catalog model has the provider "
                                                        f"{json_quoted(e.prefer_provider)} "
                                                        "(providers: "
                                                        f"{listed_names(providers, quoted=True)})")
        if e.min_tier is not None:
            from switchpoint.catalog import TIERS

            floor = TIERS.index(e.min_tier)
            if not any(m.tier is not None and TIERS.index(m.tier) >= floor
                       for m in settings.models):
                raise ConfigError(f"{key}.min_tier", f"no catalog model has a tier of "
                                                     f"{json_quoted(e.min_tier)} or above; give "
                                                     "models a tier: or lower min_tier")
    for name in settings.budgets.providers:
        if name not in providers:
            raise ConfigError(f"budgets.providers.{name}", f"no catalog model has the provider "
                                                           f"{json_quoted(name)} (providers: "
                                                           f"{listed_names(providers, quoted=True)}"
                                                           ")")
    _check_budgets_priced(settings)


def check_named_models(settings: Settings, names: Sequence[str],
                       where: str = "in the catalog") -> None:
    """The models the governance keys name (a tenant's models, ``auto`` aside; the escalation
    models; the budgeted models) must be among ``names``, the models routed (``where`` says
    what holds them: the catalog, or the weights' own profiles when there is none): a
    :class:`ConfigError` naming the first that is not, at start and at every reload, so a
    config never names a model the service no longer has."""
    def model(key: str, name: str | None, allow_auto: bool = False) -> None:
        if name is None or name in names or (allow_auto and name == "auto"):
            return
        extra = ' or "auto"' if allow_auto else ""
        raise ConfigError(key, f"{json_quoted(name)} is not a model {where}; use one of "
                               f"{listed_names(names, quoted=True)}{extra}")

    for tenant, t in settings.tenants.items():
        for i, name in enumerate(t.models or []):
            model(f"tenants.{tenant}.models[{i}]", name, allow_auto=True)
    for key, e in _escalations(settings):
        model(f"{key}.escalation_model", e.escalation_model)
    for name in settings.budgets.models:
        model(f"budgets.models.{name}", name)


def _escalations(settings: Settings) -> list[tuple[str, EscalationSettings]]:
    """The escalation settings and their key paths: the default, then each tenant's own."""
    return [("escalation", settings.escalation),
            *((f"tenants.{tenant}.escalation", t.escalation)
              for tenant, t in settings.tenants.items() if t.escalation is not None)]


def _check_budgets_priced(settings: Settings) -> None:
    """A budget cannot hold what a model without prices costs, so a request a budget watches
    never goes to one (see the governor). A budget that watches only such models (a model's or
    a provider's), or a tenant with budgets that lists one by name, could then never be used
    as written: refused here, naming the model to price."""
    assert settings.models is not None
    unpriced = {m.name: m for m in settings.models
                if m.input_per_mtok is None or m.output_per_mtok is None}
    if not unpriced:
        return
    fix = ("give it input_per_mtok and output_per_mtok (USD per million tokens; 0 for a free "
           "model)")
    for name in settings.budgets.models:
        if name in unpriced:
            raise ConfigError(f"budgets.models.{name}", f"model {json_quoted(name)} has no "
                                                        "prices, so no budget can hold what it "
                                                        f"costs; {fix}")
    for provider in settings.budgets.providers:
        names = [n for n, m in unpriced.items() if m.provider == provider]
        if names:
            raise ConfigError(f"budgets.providers.{provider}",
                              f"the provider's model {json_quoted(names[0])} has no prices, so the "
                              f"provider's budget cannot hold what it costs; {fix}")
    for tenant, t in settings.tenants.items():
        if not t.budgets:
            continue
        for i, name in enumerate(t.models or []):
            if name in unpriced:
                raise ConfigError(f"tenants.{tenant}.models[{i}]",
                                  f"model {json_quoted(name)} has no prices, so tenant "
                                  f"{json_quoted(tenant)}'s budgets cannot hold what it costs and "
                                  f"its requests could never use it; {fix}, or leave it out of "
                                  "the tenant's models")


def check_experiments(settings: Settings) -> None:
    """What the experiments name must exist: their tenants, their arms' policies and models;
    and each enabled one must get traffic (see :func:`_check_experiment_scopes`). The rules of
    the config's experiments and of those created at run time alike (a
    :class:`ConfigError` naming ``experiments.<name>...``)."""
    from switchpoint._bundled import bundled_policies
    from switchpoint.learning.events import DEFAULT_TENANT

    policies = set(bundled_policies()) | set(settings.policies)
    names = None if settings.models is None else [m.name for m in settings.models]
    unrouted = {m.name for m in settings.models or () if not m.auto}
    tenants = [*settings.tenants, DEFAULT_TENANT]
    for name, experiment in settings.experiments.items():
        _check_shares(name, experiment)
        for i, tenant in enumerate(experiment.tenants or []):
            if tenant not in tenants:
                problem = f"{json_quoted(tenant)} is not a tenant of this config"
                raise ConfigError(f"experiments.{name}.tenants[{i}]",
                                  f"{problem}; use one of {listed_names(tenants, quoted=True)} "
                                  f"({json_quoted(DEFAULT_TENANT)}: requests without a tenant)",
                                  problem=problem)
        for arm_name, arm in experiment.arms.items():
            key = f"experiments.{name}.arms.{arm_name}"
            if arm.policy is not None and arm.policy not in policies:
                problem = (f"{json_quoted(arm.policy)} is neither a bundled policy nor under "
                           "policies:")
                raise ConfigError(f"{key}.policy", f"{problem}; use one of "
                                                   f"{listed_names(sorted(policies), quoted=True)}",
                                  problem=problem)
            for j, model in enumerate(arm.models or []):
                if names is not None and model not in names:
                    problem = f"{json_quoted(model)} is not a model in the catalog"
                    raise ConfigError(f"{key}.models[{j}]",
                                      f"{problem}; use one of {listed_names(names, quoted=True)}",
                                      problem=problem)
            if arm.models and set(arm.models) <= unrouted:
                raise ConfigError(f"{key}.models", f"{listed_names(arm.models, quoted=True)}"
                                                   ": auto: false in "
                                                   "the catalog (served only when a request "
                                                   "names it), so this arm could choose none; "
                                                   "list a model \"auto\" may choose")
            # An arm's models are what auto chooses among in it: one kept out of auto would be
            # passed over, silently, and the arm measured without it.
            for j, model in enumerate(arm.models or []):
                if model in unrouted:
                    raise ConfigError(f"{key}.models[{j}]", f"{json_quoted(model)} has auto: "
                                                            "false in the catalog (served only "
                                                            "when a request names it), so this arm "
                                                            "would pass it over; take it out "
                                                            "of the arm, or let auto choose it")
            # A tenant that may use none of them would be routed as the configured routing
            # in this arm, and measured as the arm's.
            for tenant in experiment.tenants or list(settings.tenants):
                allowed = (settings.tenants[tenant].models if tenant in settings.tenants
                           else None)
                if arm.models and allowed is not None and not set(arm.models) & set(allowed):
                    raise ConfigError(f"{key}.models", f"tenant {json_quoted(tenant)} of the "
                                                       "experiment may use none of "
                                                       f"{listed_names(arm.models, quoted=True)}"
                                                       " (its models: "
                                                       f"{listed_names(allowed, quoted=True)}"
                                                       "), so its "
                                                       "requests in this arm would be routed "
                                                       "without the arm's models and counted "
                                                       "as the arm's; list a model it may "
                                                       "use, or leave it out of the "
                                                       "experiment's tenants")
    _check_experiment_scopes(settings, tenants)


def _check_shares(name: str, experiment: ExperimentConfig) -> None:
    """Each arm gets at least :data:`MIN_ARM_SHARE` of the experiment's traffic (its weight
    over the arms' total): one with less would never be served, and its report never fill."""
    total = math.fsum(arm.weight for arm in experiment.arms.values())
    for arm_name, arm in experiment.arms.items():
        share = arm.weight / total
        if share < MIN_ARM_SHARE:
            raise ConfigError(f"experiments.{name}.arms.{arm_name}.weight", (
                f"arm {json_quoted(arm_name)} would get {share:.6g} of the experiment's "
                f"traffic (its weight, {_written(arm.weight)}, over the arms' total of "
                f"{_written(total)}), under the {MIN_ARM_SHARE:g} an arm needs to be served at "
                "all; give it a larger weight, or take the arm out"))


def _written(number: float) -> str:
    """A config's number as it would write it: ``1``, not ``1.0``; ``5e-324`` in full."""
    text = repr(number)
    return text[:-2] if text.endswith(".0") else text


def _check_experiment_scopes(settings: Settings, tenants: list[str]) -> None:
    """A request joins the first enabled experiment (in the config's order) whose tenants hold
    its tenant, so an enabled experiment whose every tenant an earlier one already takes would
    get no traffic at all: refused, naming the experiments that take it."""
    taken: dict[str, str] = {}  # tenant: the enabled experiment that takes its traffic
    for name, experiment in settings.experiments.items():
        if not experiment.enabled:
            continue
        scope = experiment.tenants if experiment.tenants is not None else tenants
        if scope and all(t in taken for t in scope):
            earlier = sorted({taken[t] for t in scope})
            who = ("every tenant already takes" if experiment.tenants is None
                   else f"its tenants ({listed_names(scope, quoted=True)}) already take")
            raise ConfigError(f"experiments.{name}", (
                f"would get no traffic: {who} part in "
                f"{listed_names(earlier, quoted=True)}, listed before it, and a request "
                "joins only the first enabled experiment that holds its tenant; give the "
                "experiments tenants of their own, or set enabled: false on one of them"))
        for tenant in scope:
            taken.setdefault(tenant, name)


def _control_problem(path: str, character: str) -> str:
    """Why ``path``, a path the config gives, holding the control ``character``, is refused,
    the character escaped (``\\n``), and what to write instead."""
    problem = (f"{quoted_path(path)} holds the control character {json_quoted(character)}, "
               "which a path is almost surely not meant to hold (a newline in one would also "
               "break the log lines that name it); remove it")
    if path.endswith("\n"):
        problem += (" (a value written as a folded or literal block scalar, after > or |, "
                    "ends with a newline: write the path as a plain or quoted value)")
    return problem


def _folder_control_problem(key: str, path: str, folder: Path, character: str,
                            path_arg: str) -> str:
    """Why ``path``, the path of ``key`` the config file gave relative to its ``folder``, is
    refused when that folder's path holds the control ``character``: the file's own value is
    not at fault, so the fix is the folder's name, or another place for the file."""
    given = path[len(str(folder)):].lstrip(os.sep) or "."
    return (f"{quoted_path(given)} is relative to the config file's folder, "
            f"{quoted_path(folder)}, whose path holds the control character "
            f"{json_quoted(character)}, which a path is almost surely not meant to hold (a "
            "newline in one would also break the log lines that name it); rename that "
            "folder, or move the config file to a folder whose path holds none and pass it "
            f"{_passed(path_arg)}, or give {key} as an absolute path")


def _sourced(sources: Mapping[str, str], key: str, reason: str) -> ConfigError:
    """The refusal of ``key``'s value for ``reason``, saying where the value came from, by
    ``sources`` (its top key's: ``from SWITCHPOINT_DATA_DIR``, ``in the file passed to
    --config``, ``from the command line``; none: the default), so the user knows what to
    change: a path may come from the file, a variable or a flag."""
    where = sources.get(key.split(".", 1)[0], "the default")
    return ConfigError(key, f"{reason} ({where})")


def _check_paths(settings: Settings, folders: Mapping[str, Path] | None = None,
                 path_arg: str = "path", sources: Mapping[str, str] | None = None) -> None:
    """The paths the settings give (``weights``, ``data_dir``, ``policies``), and the
    ``policy`` they serve, refused as a :class:`ConfigError` naming the first at fault and
    where its value came from (``sources``: see :func:`_sourced`). ``folders`` holds, by key,
    the config file's folder a path the file gave relative to it was resolved against, so an
    error the folder's path causes says so (and ``path_arg``, what the file was passed as)."""
    from switchpoint._bundled import bundled_policies

    sources = sources or {}

    paths = [("weights", settings.weights), ("data_dir", settings.data_dir),
             *((f"policies.{k}", v) for k, v in settings.policies.items())]
    for key, value in paths:
        if value is not None and not str(value).strip():
            what = ("a folder for the service's state, or leave data_dir out for the default"
                    if key == "data_dir" else "the folder of a weights package (the one "
                    "`switchpoint fit --out` wrote)")
            raise _sourced(sources, key, f"is empty; give {what}")
        control = None if value is None else _CONTROL.search(value)
        if value is not None and control is not None:
            folder = (folders or {}).get(key)
            own = None if folder is None else _CONTROL.search(value, len(str(folder)))
            if folder is not None and own is None:  # (the folder's path holds it, not the file)
                raise _sourced(sources, key, _folder_control_problem(
                    key, value, folder, control.group(), path_arg))
            raise _sourced(sources, key, _control_problem(value, (own or control).group()))
        # A path the system refuses (a name too long, a NUL) fails here, not in a later stat.
        problem = None if value is None else path_problem(Path(value))
        if value is not None and problem is not None:
            raise _sourced(sources, key, f"{quoted_path(value)} cannot be used: {problem}")
    for key, value in paths:
        if key == "data_dir" or value is None:
            continue
        # (the weights' module only where the config names a package: every command that
        # reads a config checks it here)
        from switchpoint.weights import Unreadable, manifest_problem

        problem = manifest_problem(value)
        if isinstance(problem, Unreadable):  # (the package may be whole: said what to run)
            raise _sourced(sources, key, f"{quoted_path(value)}: {problem}")
        if problem is not None:
            raise _sourced(sources, key, f"{quoted_path(value)} is not a weights package "
                                         f"({problem}); give the folder `switchpoint fit --out` "
                                         "wrote")
    bundled = bundled_policies()
    for name, value in settings.policies.items():
        # Under a policy's own name, weights of another policy would route while the health,
        # the decision log and the stats named the policy they are listed under.
        from switchpoint.weights import policy_of

        served = policy_of(value)
        if name in bundled and served is not None and served != name:
            # (the manifest's name is the file's, not the operator's: shown cut and escaped)
            known = served in bundled
            raise _sourced(sources, f"policies.{name}", (
                f"{quoted_path(value)} is a {served if known else json_quoted(served)} "
                f"package, not {name} weights; list it under "
                f"{served + ': or ' if known else ''}a name of your own (not one of "
                f"{one_of(bundled)})"))
    if (settings.weights is None and settings.policy not in settings.policies
            and settings.policy not in bundled):
        raise _sourced(sources, "policy", f"{json_quoted(settings.policy)} has no bundled "
                                          f"weights; choose one of {one_of(bundled)}, or add "
                                          "it under policies:")
    data_dir = Path(settings.data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise _sourced(sources, "data_dir", f"{quoted_path(data_dir)} exists and is not a "
                                            "directory; point data_dir at a directory, or move "
                                            "the file away")
    if data_dir.is_symlink() and not data_dir.exists():  # (no folder can be made in its place)
        try:
            where = f" to {quoted_path(os.readlink(data_dir))}"
        except OSError:
            where = ""
        raise _sourced(sources, "data_dir", f"{quoted_path(data_dir)} is a symbolic link{where}, "
                                            "which leads to no directory; create the directory "
                                            "it leads to, or point data_dir at a directory")
