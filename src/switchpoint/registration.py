"""The rules of a model registered at run time, one statement of them for every door: the
library's :meth:`Router.register_model <switchpoint.router.Router.register_model>` and the
gateway's :meth:`Gateway.register_model <switchpoint.gateway.Gateway.register_model>` (``POST
/v1/router/models``) alike.

A card holds the keys of a config ``models:`` entry, read by the config's rules for one entry
(:class:`~switchpoint.config.ModelEntry`), without a credential in its ``base_url`` and without
a link-local or cloud metadata host there (:func:`model_card`). With the catalog it joins, its
name must be free (:func:`check_free`), there must be room (:func:`check_room`), it may not take
another model's learned profile by its name alone (:func:`check_own_profile`), and the catalog
as a whole keeps :func:`~switchpoint.catalog.catalog_problem`'s rules, a fault of the card named
by the card's key (:func:`card_error`). Unregistering names a registered model
(:func:`not_registered` says why a name is none).

Each rule is checked once, here, for both doors; what a refusal tells its caller to do is the
door's (:class:`Door`): the gateway's (:data:`GATEWAY`) speaks of the config, ``data_dir`` and
the request's fields, the library's (:data:`LIBRARY`) of the router's arguments and methods.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import ValidationError

from switchpoint._args import expect
from switchpoint._messages import invalid_from_validation, json_quoted, listed_names
from switchpoint._process import ProcessThreads
from switchpoint._redact import redact_url, url_secrets
from switchpoint.catalog import ModelCard, catalog_problem
from switchpoint.config import ModelEntry, Named, shared_profile_note, shared_profiles
from switchpoint.errors import ConfigError, ConflictError, InvalidInputError, NotFoundError

#: The most models there may be registered at run time at once: far more than a team adds
#: between two edits of its config, and each is weighed by every ``auto`` request (the config's
#: and the registered ones together stay within the catalog's bound too).
MAX_REGISTERED_MODELS = 256

#: Where a cloud machine's metadata service answers (its instance's credentials among what it
#: tells): addresses, as :mod:`ipaddress` writes them, and host names, in lower case. Beside
#: every link-local address (169.254.0.0/16, fe80::/10), which is refused too, these are the
#: hosts a model registered at run time may not name (see :func:`internal_host`).
METADATA_HOSTS = frozenset({
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192",
    "metadata", "metadata.google.internal", "metadata.azure.com", "instance-data",
    "instance-data.ec2.internal",
})

#: The config's setting that lets a model registered at run time name such a host all the
#: same (a model server on a link-local network), as the config writes it.
ALLOW_METADATA_HOSTS = "gateway.allow_registered_metadata_hosts"
#: The config's setting that lists the network's own NAT64 prefixes, whose addresses a
#: model registered at run time reaches through the translator at the IPv4 address each
#: carries (judged by it), as the config writes it.
NAT64_PREFIXES = "gateway.nat64_prefixes"

#: The longest a registration through the gateway waits for its ``base_url``'s host name to be
#: looked up (see :func:`resolved_internal_host`); past it the name is taken as one that does
#: not resolve.
LOOKUP_TIMEOUT_S = 2.0
#: At most this many look-ups at once: one the resolver does not answer holds its thread until
#: the resolver gives up, and others wait their turn within their own timeout.
MAX_LOOKUPS = 4
_LOOKUPS = ProcessThreads(MAX_LOOKUPS, "switchpoint-lookup")


@dataclass(frozen=True)
class Door:
    """The words a door's refusals of a registration speak in, where the gateway's and the
    library's differ: what it tells its caller, never what it checks."""

    #: What the card is given as (a card of the wrong type is told so).
    card: str
    #: What a card's key is called, and of what (an unknown one "is not a key of a card").
    key: tuple[str, str]
    #: Where a registered card is kept as it is given (why a credential may not be in it).
    kept: str
    #: Why a model registered at run time may not name a cloud metadata host.
    destination: str
    #: How a model naming such a host is served all the same.
    listed: str
    #: How a model a fallback names joins the catalog.
    add: str
    #: How the card names the learned profile it routes on (``{name}``: the profile's, quoted).
    profile: str
    #: The card's key of that profile, as the door writes it.
    profile_key: str
    #: What to do about a model to unregister that a catalog's ``{key}`` still names, and
    #: why (``{reason}``).
    still_named: str
    #: Whether a card's ``base_url`` host name is looked up, to refuse one that resolves to a
    #: link-local or metadata address (:func:`resolved_internal_host`).
    looks_up: bool = False


#: The gateway's words: :meth:`Gateway.register_model
#: <switchpoint.gateway.Gateway.register_model>` and ``POST /v1/router/models``.
GATEWAY = Door(
    card="a mapping of a model's keys, as the config's models: entries write them (name, tier, "
         "input_per_mtok, ...)",
    key=("field", "this request"),
    kept="a registered model is kept in data_dir as it is given",
    destination="send its requests to one, which would answer whoever holds the admin token "
                "with what the machine is told",
    listed=f"list it in the config, or set {ALLOW_METADATA_HOSTS}: true there and reload",
    add="define it under models:",
    profile="profile: {name}",
    profile_key="profile:",
    still_named="{key} ({reason}); take it out there first",
    looks_up=True,
)

#: The library's words: :meth:`Router.register_model
#: <switchpoint.router.Router.register_model>` and ``Router.unregister_model``.
LIBRARY = Door(
    card="a ModelCard, a mapping of its keys (name, tier, input_per_mtok, ...), or a model's "
         "name with its keys as keyword arguments",
    key=("key", "a model's card"),
    kept="the router keeps the card as it is given (router.catalog, and every copy of the "
         "router, a pickled one too)",
    destination="name one (registered with a gateway, such a model would have the service "
                "send requests where the machine's credentials are told)",
    listed="build the Router with a Catalog that lists it",
    add="register it first (Router.register_model)",
    profile="profile={name}",
    profile_key="profile",
    still_named="{key}, the fallbacks of a model registered with Router.register_model; "
                "unregister that model first (it can be registered again without it)",
)


def internal_host(url: str, nat64: Collection[ipaddress.IPv6Network] = ()) -> str | None:
    """What ``url``'s host is, when it is a link-local address or a cloud metadata service's
    (:data:`METADATA_HOSTS`), read as written, without looking a name up: an IPv4 address
    written as a resolver reads it too (``2852039166``, ``0xa9.0xfe.0xa9.0xfe``), an IPv6 one
    mapping an IPv4 one as that one, and one carrying an IPv4 one (NAT64, 6to4, Teredo,
    ISATAP, ...) by that one too, under the network's own NAT64 prefixes too (``nat64``, the
    config's ``gateway.nat64_prefixes``); else None."""
    host = _host(url)
    address = host_address(host)
    if address is None:
        return f"a cloud metadata service's host name ({host})" if host in METADATA_HOSTS else None
    return _internal_address(address, nat64)


def _host(url: str) -> str:
    return (urllib.parse.urlsplit(url).hostname or "").rstrip(".")


def host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a URL's host ``host`` (in lower case, without brackets or a trailing dot)
    writes, read as a resolver reads one, without looking a name up: an IPv4 address in any
    form a resolver takes (``2852039166``, ``0xa9.0xfe.0xa9.0xfe``), an IPv6 one without its
    scope (``fe80::1%eth0``); None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        if host and re.fullmatch(r"[0-9a-fx.]+", host):
            with contextlib.suppress(OSError):  # (not an address: a name)
                return ipaddress.IPv4Address(socket.inet_aton(host))
    return None


@functools.lru_cache(maxsize=4096)  # (the hosts of the catalogs' base URLs: a few)
def canonical_host(host: str) -> str:
    """The one spelling of a URL's host ``host`` (without brackets) that all its spellings
    share, so that they are one upstream: in lower case, without a trailing dot, an address as
    :mod:`ipaddress` writes it, read as a resolver reads it (:func:`host_address`: ``0x7f.1``
    and ``2130706433`` are ``127.0.0.1``, ``[0:0::1]`` is ``[::1]``), an IPv6 address mapping
    an IPv4 one as that one (a connection to it goes there). A scoped IPv6 address is left as
    written, and a name is not looked up: ``localhost`` and ``127.0.0.1`` stay two upstreams
    (a name's addresses are the resolver's to give at each connection, and may change)."""
    name = host.lower().rstrip(".")
    address = None if "%" in name else host_address(name)
    if address is None:
        return name
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


#: The host names the system's resolver answers with this machine's loopback from its hosts
#: file, whatever DNS says, in lower case (a name under ``localhost``, ``app.localhost``, is
#: not among them: the resolver may ask DNS for it).
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def loopback_host(host: str) -> bool:
    """Whether a URL's host ``host`` (without brackets) reaches only this machine, however it
    is spelt (:func:`canonical_host`: ``LOCALHOST.``, ``127.1``, ``2130706433``,
    ``[::ffff:127.0.0.1]`` as ``localhost``, ``127.0.0.1``): one of :data:`LOOPBACK_NAMES`, an
    address in 127.0.0.0/8 or ``::1`` (with a scope too). The wildcard addresses (``0.0.0.0``,
    ``::``, ``""``) and any other name (it may resolve anywhere) are not."""
    name = canonical_host(host)
    if name in LOOPBACK_NAMES:
        return True
    address = host_address(name)
    return address is not None and address.is_loopback


def internal_address(text: str, nat64: Collection[ipaddress.IPv6Network] = ()) -> str | None:
    """What the address ``text`` is, as a resolver gives one (an IPv6 one may carry its scope:
    ``fe80::1%eth0``), when it is a link-local address or a cloud metadata service's (an IPv6
    one mapping or carrying an IPv4 one judged by that one, under the network's own NAT64
    prefixes, ``nat64``, too); else None, a text that is no address too. The rule a name's
    addresses are held to, as a model is registered (:func:`resolved_internal_host`) and as
    the gateway connects to one (:func:`rebound_host`)."""
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    return _internal_address(address, nat64)


def rebound_host(host: str, what: str) -> str:
    """Why the gateway connects nowhere for a model registered at run time whose ``base_url``
    host name ``host`` resolves, as a new connection is made, to ``what`` (a link-local or
    metadata address, as :func:`internal_address` says): the name was checked as the model
    was registered (:func:`resolved_internal_host`), but its owner may point it elsewhere
    since (DNS rebinding)."""
    # (what happened and what to do first, in words of a length no host name or address
    # changes: a failover's summary, the client's error, and its log line cut each try's
    # error at 160 characters; the request log keeps the whole text)
    return (f"not sent: host now resolves to a metadata/link-local address; {GATEWAY.listed} "
            f"({host} resolves to {what}; {ALLOW_METADATA_HOSTS} is false, so a model "
            f"registered at run time may not connect there; the name is looked up at each new "
            f"connection, and its owner may have pointed it there since the model was "
            f"registered)")


#: The NAT64 prefixes (a translator on the way turns a connection to an address in one into
#: one to the IPv4 address it carries): the well-known one, a /96 (the address in its last 32
#: bits), and the local-use /48 a network takes its own prefix from, a /48, /56, /64 or /96
#: (the address after the prefix, past bits 64-71, which stay zero). Which length a network
#: chose is not written in the address, so each reading is judged: a network's /96 whose own
#: bits read, as a /48's, as a link-local address is refused with it. A prefix of a network's
#: own (``gateway.nat64_prefixes``) cannot be told from any other address of its network, so
#: it is read only when the config lists it, at the length it gives.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL_USE = ipaddress.IPv6Network("64:ff9b:1::/48")
_NAT64_LOCAL_LENGTHS = (96, 48, 56, 64)
_LOW_32 = 0xFFFF_FFFF
#: An ISATAP address's interface identifier (its low 64 bits) is ``0:5efe`` then an IPv4
#: address, ``200:5efe`` when that address is global (the u bit, which is all that may
#: differ), under any /64 prefix: a host on that ISATAP link reaches it tunnelled to that
#: IPv4 address.
_ISATAP = 0x0000_5EFE
_ISATAP_U = 0x0200_0000


def _nat64_ipv4(value: int, length: int) -> ipaddress.IPv4Address:
    """The IPv4 address an IPv6 address (``value``) under a NAT64 prefix of ``length`` bits
    (32, 40, 48, 56, 64 or 96) carries: right after the prefix, bits 64-71 (the u-octet)
    skipped; in the last 32 bits for a /96."""
    if length == 96:
        return ipaddress.IPv4Address(value & _LOW_32)
    squeezed = (value >> 64) << 56 | (value & ((1 << 56) - 1))  # (bits 64-71 left out)
    return ipaddress.IPv4Address(squeezed >> (88 - length) & _LOW_32)


def _carried(address: ipaddress.IPv6Address, nat64: Collection[ipaddress.IPv6Network] = ()
             ) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a connection to ``address`` may reach, when it carries any: the one
    an IPv4-compatible (``::a.b.c.d``) or IPv4-translated (``::ffff:0:a.b.c.d``) address
    writes, the one a NAT64 translator goes to (each place a local-use prefix may put it; the
    place a prefix of ``nat64``, the network's own, puts it), a 6to4 address's router, both
    of a Teredo address's (its server, and its client as the address un-obfuscates it: a
    relay sends to the client, and no real Teredo address carries a link-local or metadata
    one, so judging it by both refuses none in use), and the one an ISATAP interface
    identifier ends in (under any prefix: a 6to4 one too); none for any other."""
    value = int(address)
    found: list[ipaddress.IPv4Address] = []
    if ((value >> 32 in (0, 0xFFFF_0000) and value > 1)  # (:: and ::1 carry none)
            or address in _NAT64_WELL_KNOWN):
        found.append(ipaddress.IPv4Address(value & _LOW_32))
    elif address in _NAT64_LOCAL_USE:
        found += [_nat64_ipv4(value, length) for length in _NAT64_LOCAL_LENGTHS]
    elif address.sixtofour is not None:
        found.append(address.sixtofour)
    elif address.teredo is not None:
        found += address.teredo
    found += [_nat64_ipv4(value, prefix.prefixlen) for prefix in nat64 if address in prefix]
    if (value >> 32 & _LOW_32) | _ISATAP_U == _ISATAP | _ISATAP_U:
        found.append(ipaddress.IPv4Address(value & _LOW_32))
    return found


def _internal_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address,
                      nat64: Collection[ipaddress.IPv6Network] = ()) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if str(address) in METADATA_HOSTS:
        return f"a cloud metadata service's address ({address})"
    if address.is_link_local:
        return f"a link-local address ({address}), where a cloud's metadata service answers"
    if isinstance(address, ipaddress.IPv6Address):
        # (an IPv6 address that carries an IPv4 one, a translator or tunnel on the way
        # connecting to that one, is judged by it)
        carried = _carried(address, nat64)
        for ipv4 in carried:
            if str(ipv4) in METADATA_HOSTS:
                return f"a cloud metadata service's address ({ipv4}, carried by {address})"
        for ipv4 in carried:
            if ipv4.is_link_local:
                return (f"a link-local address ({ipv4}, carried by {address}), where a "
                        f"cloud's metadata service answers")
    return None


def resolved_internal_host(url: str, timeout: float | None = None,
                           nat64: Collection[ipaddress.IPv6Network] = ()) -> str | None:
    """What ``url``'s host name resolves to, when an address it resolves to is a link-local or
    cloud metadata one (a name such as ``169.254.169.254.nip.io`` points there): looked up
    once, by the system's resolver, within ``timeout`` seconds (:data:`LOOKUP_TIMEOUT_S`).
    None for an address written as one (:func:`internal_host` reads those), a name that does
    not resolve, one not looked up in time, and one that resolves elsewhere. Where the name
    points later (its owner may change it) is the gateway's transport's to check, as it
    connects (:func:`internal_address`, :func:`rebound_host`). ``nat64``: the network's own
    NAT64 prefixes (see :func:`internal_host`)."""
    host = _host(url)
    if not host or internal_host(url, nat64) is not None:
        return None
    with contextlib.suppress(ValueError):
        ipaddress.ip_address(host.split("%", 1)[0])
        return None  # (an address, read as written)
    lookup = _LOOKUPS.get().submit(socket.getaddrinfo, host, None, type=socket.SOCK_STREAM)
    try:
        found = lookup.result(LOOKUP_TIMEOUT_S if timeout is None else timeout)
    except (TimeoutError, OSError, UnicodeError):
        return None
    for *_, where in found:
        what = internal_address(str(where[0]), nat64)
        if what is not None:
            return f"a host name ({host}) that resolves to {what}"
    return None


def check_destination(entry: ModelEntry, door: Door = GATEWAY, *, allowed: bool = False,
                      look_up: bool = False, nat64: Collection[ipaddress.IPv6Network] = ()
                      ) -> None:
    """Refuse a model registered at run time whose ``base_url`` names a link-local address or a
    cloud metadata service (see :func:`internal_host`), or, with ``look_up``, a host name that
    resolves to one (:func:`resolved_internal_host`): an :class:`InvalidInputError` naming
    ``base_url``. Whoever holds the admin token would otherwise have the service send its
    requests there, and an upstream's error text comes back in the answer's headers and the
    log. ``allowed`` (the config's :data:`ALLOW_METADATA_HOSTS`) lets it; ``nat64`` (the
    config's :data:`NAT64_PREFIXES`) names the network's own NAT64 prefixes, whose addresses
    are judged by the IPv4 address they carry. The config may name any host (its author owns
    the machine)."""
    if entry.base_url is None or allowed:
        return
    what = internal_host(entry.base_url, nat64)
    if what is None and look_up:
        what = resolved_internal_host(entry.base_url, nat64=nat64)
    if what is not None:
        raise InvalidInputError("base_url", (
            f"{json_quoted(redact_url(entry.base_url))} names {what}: a model registered at "
            f"run time may not {door.destination}; if the model is really meant to be there, "
            f"{door.listed}"))


def model_card(card: object, door: Door = GATEWAY, *, metadata_hosts: bool = False,
               nat64: Collection[ipaddress.IPv6Network] = ()) -> ModelEntry:
    """``card`` (a mapping of a config ``models:`` entry's keys) as the model it describes,
    checked by the config's rules for one entry; a bad one is an
    :class:`~switchpoint.errors.InvalidInputError` naming its key. A ``base_url`` carrying a
    credential (a user or password before its host, a key in its query, text anywhere in it
    that every view of a URL masks as a secret) is refused: the store keeps the card, and the
    credential belongs in the variable ``api_key_env`` names; so is one naming a link-local
    or cloud metadata host (:func:`check_destination`; the gateway's door looks its name up
    too), unless ``metadata_hosts`` (the config's :data:`ALLOW_METADATA_HOSTS`); ``nat64``:
    the network's own NAT64 prefixes (the config's :data:`NAT64_PREFIXES`). Each refusal
    speaks ``door``'s words."""
    expect("card", card, Mapping, door.card)
    assert isinstance(card, Mapping)
    try:
        entry = ModelEntry.model_validate(dict(card))
    except ValidationError as exc:
        raise invalid_from_validation(list(exc.errors()), list(ModelEntry.model_fields),
                                      root="card", field_of=door.key) from None
    if entry.base_url is not None:
        netloc = entry.base_url.split("//", 1)[-1].split("/", 1)[0]
        shown = redact_url(entry.base_url)
        if "@" in netloc or url_secrets(entry.base_url) or shown != entry.base_url:
            raise InvalidInputError("base_url", (
                f"{json_quoted(shown)} carries a credential (a user or password before its "
                f"host, a key in its query, or text shaped like a key in its path): "
                f"{door.kept}, so its secret would be too; give the URL without it and put "
                "the key in an environment variable named by api_key_env"))
    check_destination(entry, door, allowed=metadata_hosts, look_up=door.looks_up, nat64=nat64)
    return entry


def check_free(name: str, *, registered: Collection[str], built: Collection[str],
               where: str, unregister: str, change: str) -> None:
    """Refuse registering a model named ``name`` when the name is taken: by a model registered
    at run time (``registered``; ``unregister`` says how one is unregistered) or by one of the
    catalog as it was made (``built``, which ``where`` names, ``the config``, and ``change``
    says how one of it is changed): a :class:`ConflictError` naming ``name``."""
    shown = json_quoted(name, 100)
    if name in registered:
        raise ConflictError(f"name: model {shown} was registered at run time already; "
                            "pick another name, or unregister that one first "
                            f"({unregister})", param="name")
    if name in built:
        raise ConflictError(f"name: model {shown} is in {where}; pick another name (or "
                            f"{change})", param="name")


def check_room(count: int, *, unregister: str, instead: str) -> None:
    """Refuse registering one more model when ``count`` are registered at run time already,
    :data:`MAX_REGISTERED_MODELS`: a :class:`ConflictError` naming the card, saying how one
    is unregistered (``unregister``) and what else serves (``instead``)."""
    if count >= MAX_REGISTERED_MODELS:
        raise ConflictError(f"card: {count} models are registered at run "
                            f"time already, the most there may be "
                            f"({MAX_REGISTERED_MODELS}); unregister one first "
                            f"({unregister}), or {instead}", param="card")


_Card = TypeVar("_Card", bound=Named)


def check_own_profile(card: _Card, catalog: Sequence[_Card], door: Door = GATEWAY) -> None:
    """Refuse registering ``card`` when, without ``profile:``, it would route on the learned
    profile another model of ``catalog`` uses (see :func:`~switchpoint.config.shared_profiles`):
    a model registered at price 0 under GPT-4's profile name would take GPT-4's quality. The
    card opts in by naming the profile."""
    for model, owner in shared_profiles([*catalog, card]):
        if model is card:
            named = door.profile.format(name=json_quoted(model.name, 100))
            raise ConflictError(f"name: {shared_profile_note(model, owner, door.profile_key)}"
                                f"; to share that "
                                f"profile on purpose, give {named} in the card, else give the "
                                "profile it should route on, or another name", param="name")


def not_registered(name: str, registered: Iterable[str], *, built: bool, where: str,
                   change: str) -> ConflictError | NotFoundError:
    """Why ``name`` names no model registered at run time to unregister: it is one of the
    catalog as it was made (``built``; ``where`` names that catalog, ``change`` says how a
    model is taken out of it), or none was registered (the error lists those
    ``registered``)."""
    shown = json_quoted(name, 100)
    if built:
        return ConflictError(f"name: model {shown} is in {where}, not registered at run "
                             f"time; {change}", param="name")
    names = listed_names(registered, quoted=True)
    return NotFoundError(f"name: no model {shown} was registered at run time; check the "
                         "name: " + (f"those registered are {names}" if names else
                                     "none is registered"), param="name")


def still_named(name: str, exc: ConfigError | InvalidInputError, door: Door = GATEWAY
                ) -> ConflictError:
    """The refusal to unregister ``name``: what is left without it breaks the rule ``exc``
    states (a run-time experiment's arm, or another registered model's fallbacks, names it)."""
    key = exc.key if isinstance(exc, ConfigError) else exc.field
    said = door.still_named.format(key=key, reason=exc.reason)
    return ConflictError(f"name: model {json_quoted(name, 100)} is still named by {said}",
                         param="name")


def check_catalog(cards: Sequence[ModelCard], door: Door) -> None:
    """Refuse a catalog of ``cards`` (the catalog a card joins, the card last; or one a model
    leaves) that breaks a rule of a catalog (:func:`~switchpoint.catalog.catalog_problem`,
    in ``door``'s words): an :class:`~switchpoint.errors.InvalidInputError` naming the key
    at fault as a :class:`~switchpoint.catalog.Catalog` names it (``models.a.fallbacks[0]``),
    for :func:`card_error` or :func:`still_named` to say whose it is."""
    fault = catalog_problem(cards, add=door.add)
    if fault is not None:
        raise InvalidInputError(fault.by_name(cards), fault.reason)


def card_error(exc: ConfigError | InvalidInputError, index: int, name: str
               ) -> ConfigError | InvalidInputError:
    """A rule of the catalog broken by the model being registered (named as the config would
    name it: ``models[N]...``, or ``models.<name>...`` by the catalog), naming the card's key
    instead; any other, as it is."""
    key = exc.key if isinstance(exc, ConfigError) else exc.field
    for prefix in (f"models[{index}]", f"models.{name}"):
        if key == prefix or key.startswith((prefix + ".", prefix + "[")):
            rest = key[len(prefix):].lstrip(".") or "card"
            return InvalidInputError(rest, exc.reason)
    return exc


__all__ = ["ALLOW_METADATA_HOSTS", "GATEWAY", "LIBRARY", "LOOKUP_TIMEOUT_S", "LOOPBACK_NAMES",
           "MAX_REGISTERED_MODELS", "METADATA_HOSTS", "NAT64_PREFIXES", "Door", "card_error",
           "check_catalog", "check_destination", "check_free", "check_own_profile",
           "check_room", "internal_address", "internal_host", "loopback_host", "model_card",
           "not_registered",
           "rebound_host", "resolved_internal_host", "still_named"]
