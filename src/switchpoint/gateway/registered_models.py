"""Models registered at run time (:meth:`Gateway.register_model
<switchpoint.gateway.Gateway.register_model>`, ``POST /v1/router/models``), beside the config's
``models:``, kept in the store so that a restart or a reload loses none. With the service
stopped, the command line lists and unregisters them
(:mod:`switchpoint.gateway.registered_offline`).

A registered model is a model as the config's ``models:`` writes it, checked by the config's
own rules (:class:`~switchpoint.config.ModelEntry`, then :func:`~switchpoint.config.check_catalog`
with the others) and those of :mod:`switchpoint.registration`, which the library's
:meth:`Router.register_model <switchpoint.router.Router.register_model>` keeps too. It joins
the catalog by the library's own path (:meth:`Router.join_model
<switchpoint.router.Router.join_model>`, what ``register_model`` does once it has read its
card) in a copy of the live router (:meth:`Router.unlearned_copy
<switchpoint.router.Router.unlearned_copy>`: the weights are not read again), which goes live
with a new snapshot once the store keeps the card: requests under way finish on the old router.
One unregistered leaves it by the library's path too (:meth:`Router.unregister_model
<switchpoint.router.Router.unregister_model>`), in such a copy.
Weights without a profile of it route it by its tier and price until it is labelled (see
:meth:`Live.unprofiled_note <switchpoint.gateway.live.Live.unprofiled_note>`), learning from
its outcomes meanwhile.

The config's models come first, then the registered ones in the order they were registered.
A config that comes to list a model of a registered one's name wins: as it goes live (a reload,
a start), the registered one is dropped, from the store too, with one warning. A config
without ``models:`` routes over the weights' own profiles, and so serves no registered model
(they wait in the store, with a warning, until it lists models again).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from switchpoint import registration
from switchpoint._args import expect
from switchpoint._messages import (
    command,
    json_quoted,
    key_path,
    listed_names,
    named_path,
    reason,
)
from switchpoint.catalog import MAX_CATALOG_MODELS
from switchpoint.config import ModelEntry, Settings, check_catalog, check_experiments
from switchpoint.errors import ConfigError, ConflictError, InvalidInputError, NotFoundError
from switchpoint.gateway.experiments import when
from switchpoint.gateway.kept import turn, written
from switchpoint.governance.reload_check import key_losses, losses_note
from switchpoint.known_providers import api_key_env_of, base_url_of
from switchpoint.registration import (
    MAX_REGISTERED_MODELS,
    METADATA_HOSTS,
    canonical_host,
    card_error,
    check_destination,
    check_free,
    check_own_profile,
    check_room,
    internal_host,
    model_card,
    still_named,
)
from switchpoint.store import SQLiteStore
from switchpoint.store.learning import LearningReader, RuntimeModelRecord, RuntimeModelRemoval
from switchpoint.store.removals import MODEL, Removal

if TYPE_CHECKING:
    from switchpoint.gateway.learning import GatewayLearning
    from switchpoint.gateway.live import Live, RouterState
    from switchpoint.governance.keys import KeyRecord, KeyStore
    from switchpoint.governance.settings import TenantSettings
    from switchpoint.router import Router

log = logging.getLogger("switchpoint.gateway")

# (the rules of a registered model are the core's, :mod:`switchpoint.registration`, which the
# library's Router.register_model keeps too; named here as well, where they always were)


def deletion_path(name: str) -> str:
    """The path of ``DELETE`` that unregisters model ``name``, written as it is sent (see
    :func:`~switchpoint._messages.named_path`)."""
    return named_path("/v1/router/models", name)


def unregister_command(name: str) -> str:
    """The command line that unregisters model ``name`` while the service is stopped, quoted
    for a shell."""
    return command("switchpoint", "models", "unregister", name)


def unregister_hint(name: str) -> str:
    """How model ``name``, registered at run time, is taken out again, for the errors that say
    so: the path and the command line written so that they name it as they are sent."""
    return (f"Gateway.unregister_model or DELETE {deletion_path(name)} while the service "
            f"runs, {unregister_command(name)} while it is stopped")


class RuntimeModels:
    """The models registered at run time (in the order they were registered); how they join
    the config's (:meth:`extend`, one of the router state's ``extends``); registering and
    unregistering one. A gateway's own."""

    def __init__(self, state: RouterState, store: SQLiteStore | None,
                 learning: GatewayLearning, keys: Callable[[], KeyStore]) -> None:
        self.state = state
        self.store = store
        self.learning = learning
        self.keys = keys
        # Replaced whole (never changed in place), under the state's swap lock, as one is
        # registered, unregistered or dropped for a config model of its name.
        self.registered: tuple[ModelEntry, ...] = ()
        # Those the store keeps that do not read as a model (skipped, with a warning): when
        # each was registered. Their names stay taken until the command line unregisters them.
        self.unreadable: Mapping[str, float] = {}
        self._lock = threading.Lock()  # one registration or removal at a time
        self._unserved_warned = False
        # The registered models the settings a start or reload last read leave out (with why),
        # said once those settings go live (see :meth:`_say_held`), not while a later step may
        # still refuse them.
        self._held_unsaid: list[tuple[ModelEntry, str]] = []
        state.extends.append(self.extend)
        state.on_swap(self._drop_shadowed)
        state.on_swap(self._say_held)
        state.on_swap(self._say_unserved)

    def open(self) -> None:
        """Read what the store keeps (it is open). A row that no longer reads as a model (the
        rules changed since) is left out, with a warning naming it, and kept. One naming a
        link-local or metadata host is read as a model, served as the config's
        ``gateway.allow_registered_metadata_hosts`` allows (see :meth:`served`)."""
        reader = self.learning.reader
        if reader is None:
            return
        registered = []
        unreadable: dict[str, float] = {}
        for kept in kept_models(reader, metadata_hosts=True):
            if kept.entry is None:
                unreadable[kept.name] = kept.registered_at
                log.warning("model %s, registered at run time at %s, no longer reads as a "
                            "model (%s) and is not served; unregister it with the service "
                            "stopped (%s) and register it "
                            "again as this switchpoint reads models",
                            json_quoted(kept.name, 100), when(kept.registered_at),
                            kept.problem, unregister_command(kept.name))
                continue
            registered.append(kept.entry)
        self.registered, self.unreadable = tuple(registered), unreadable

    def extend(self, settings: Settings) -> Settings:
        """``settings`` (read from the config, at a start or a reload) with the registered
        models after the config's (see :meth:`merged`); a rule a registered model breaks with
        them is said to be its, with how to take it out (see :func:`registered_fault`). Each
        one the config's ``gateway.allow_registered_metadata_hosts`` no longer allows is
        left out, with a warning naming it (see :meth:`served`)."""
        held = held_out(settings, self.registered)
        listed = {m.name for m in settings.models or [] if m.registered_at is None}
        lost = {entry.name: entry for entry, _ in held if entry.name not in listed}
        for entry in self.registered:
            for i, fallback in enumerate(entry.fallbacks):
                if entry.name not in lost and fallback in lost:
                    raise held_named(
                        f"models.{entry.name}.fallbacks[{i}]", lost[fallback],
                        f"model {json_quoted(entry.name, 100)}, registered at run time, "
                        "falls back to it",
                        f"unregister {json_quoted(entry.name, 100)} first "
                        f"({unregister_hint(entry.name)}) and register it again without that "
                        "fallback")
        try:
            merged = self.merged(settings, self.registered)
        except ConfigError as exc:
            raise registered_fault(exc, self.registered) from None
        self._held_unsaid = held
        return merged

    def _say_held(self, live: Live) -> None:
        """A snapshot went live: warn of each registered model the start or reload that made
        it leaves out (:meth:`extend`), each naming why and the ways out. Said here, not as the
        settings are read: a reload a later step refuses (an experiment's arm naming the
        model, the weights) changed nothing, so it says nothing of the kind; one that still
        holds after such a refusal is said only if the snapshot going live leaves it out."""
        unsaid, self._held_unsaid = self._held_unsaid, []
        if not unsaid:
            return
        held = {entry.name for entry, _ in held_out(live.settings, self.registered)}
        for entry, problem in unsaid:
            if entry.name in held:
                log.warning("model %s, registered at run time at %s, is not served: %s",
                            json_quoted(entry.name, 100), when(entry.registered_at or 0.0),
                            held_out_words(entry.name, problem))

    def held(self, settings: Settings) -> list[ModelEntry]:
        """The models registered at run time that ``settings`` keep from being served (see
        :func:`held_out`)."""
        return [entry for entry, _ in held_out(settings, self.registered)]

    def merged(self, settings: Settings, registered: tuple[ModelEntry, ...]) -> Settings:
        """``settings`` with its registered models replaced by those of ``registered`` it
        serves (see :func:`with_registered`; :func:`held_out`: those naming a link-local or
        metadata host its ``gateway.allow_registered_metadata_hosts`` does not allow are left
        out, kept); a config without ``models:`` serves none of them (see
        :meth:`_say_unserved`)."""
        held = {entry.name for entry, _ in held_out(settings, registered)}
        registered = tuple(m for m in registered if m.name not in held)
        return with_registered(settings, registered)

    def _say_unserved(self, live: Live) -> None:
        """A snapshot went live: when its config lists no models, warn (once) that the models
        registered at run time are not served. Said here, not as the settings are read: a
        reload refused after reading them (a later step, an admin token not exported)
        changed nothing, and serves them still."""
        if live.settings.models is not None or self._unserved_warned:
            return
        held = {entry.name for entry, _ in held_out(live.settings, self.registered)}
        unserved = [m.name for m in self.registered if m.name not in held]
        if unserved:
            self._unserved_warned = True
            log.warning("the config lists no models: (the weights' own profiles are "
                        "routed), so the %d model(s) registered at run time (%s) are not "
                        "served; list models in the config to serve them again",
                        len(unserved), listed_names(unserved, quoted=True))

    def _drop_shadowed(self, live: Live) -> None:
        """A snapshot went live: a registered model whose name its config lists is dropped
        (the config's is served), from the store too, with one warning. Runs under the
        state's swap lock, as every change of :attr:`registered` does."""
        config = {m.name for m in live.settings.models or [] if m.registered_at is None}
        shadowed = [m for m in self.registered if m.name in config]
        if not shadowed:
            return
        self.registered = tuple(m for m in self.registered if m.name not in config)
        for entry in shadowed:
            log.warning("the config lists model %s, which was registered at run time at %s: "
                        "the config's is served, and the registered one is dropped",
                        json_quoted(entry.name, 100), when(entry.registered_at or 0.0))
            if self.store is not None:  # (not waited for: a snapshot is going live)
                self.store.append(RuntimeModelRemoval(entry.name)).add_done_callback(
                    _log_failed_drop)

    def register(self, card: object) -> dict[str, Any]:
        """Register the model ``card`` describes (see :func:`model_card`), checked with the
        others by the config's rules, kept in the store, then live. Nothing changes when it
        is refused. Returns the model as the model list shows it, when it was registered,
        and the catalog models the live weights have no learned profile for (with a note)."""
        gateway = self.state.settings.gateway
        entry = model_card(card, metadata_hosts=gateway.allow_registered_metadata_hosts,
                           nat64=gateway.nat64_networks)
        name = entry.name
        # What refuses the card for its own fault is said before the registration waits its
        # turn (or is refused as one too many waiting for the store's writer), then checked
        # again in its turn.
        self._check_card(self.state.live().settings, entry)  # (503 while the router loads)
        with turn(self.store, self._lock, "the model", "nothing was registered"):
            settings = self.state.live().settings
            self._check_card(settings, entry)
            self.learning.check_writable("the model", "nothing was registered")
            made = entry.registered(time.time())
            record = RuntimeModelRecord(name, made.registered_at or 0.0, json.dumps(
                made.model_dump(mode="json", exclude_none=True), separators=(",", ":")))

            def settings_of(live: Settings) -> Settings:
                # (again, under the swap lock: a reload since may list the name, or no models)
                self._check_free(live, name)
                nonlocal settings
                settings = live
                return self.merged(live, (*self.registered, made))

            def router_of(live: Router, merged: Settings) -> Router:
                # (the card registered by the router's own rules, in a copy of it, first: a
                # card without prices beside a catalog priced throughout is refused naming the
                # card and its prices, not a priced model of the catalog that its missing
                # prices leave uncosted; then the live router's weights, checked against the
                # catalog as a load checks them. The live router's module imported here, as a
                # registration is: a command that reads the models registered loads no router,
                # nor NumPy)
                from switchpoint.gateway.live import check_costed

                router = live.unlearned_copy()
                router.join_model(made.card(), registration.GATEWAY)
                check_costed(merged, live.weights)
                return router

            def keep() -> None:
                written(self.store, record, "the model", "nothing was registered")
                self.registered = (*self.registered, made)

            try:
                _, new, _ = self.state.rebuild(
                    settings_of, keep, router_of=router_of,
                    keeping=f"the registration of model {json_quoted(name, 100)}")
            except (ConfigError, InvalidInputError) as exc:
                raise card_error(exc, new_index(settings), name) from None
        view = next(m for m in new.model_objects(auto=False) if m["id"] == name)
        return {**view, "registered_at": made.registered_at, **new.unprofiled_answer()}

    def _check_card(self, settings: Settings, entry: ModelEntry) -> None:
        """Refuse registering ``entry`` beside ``settings`` for its own fault: its name
        taken, no room, no catalog, or another model's profile taken unsaid."""
        self._check_free(settings, entry.name)
        check_own_profile(entry, settings.models or [])

    def _check_free(self, settings: Settings, name: str) -> None:
        if settings.models is None:
            raise ConflictError("card: the config lists no models: (the weights' own profiles "
                                "are routed, and chat requests have no upstream), so there is "
                                "no catalog to register a model in; list models in the config "
                                "and reload", param="card")
        check_free(name, registered={m.name for m in self.registered},
                   built={m.name for m in settings.models}, where="the config",
                   unregister=unregister_hint(name),
                   change="change that one in the config and reload")
        if name in self.unreadable:
            raise ConflictError(f"name: {self._unreadable_words(name)}; pick another name, or "
                                "unregister that one with the service stopped "
                                f"({unregister_command(name)})", param="name")
        check_room(len(self.registered), unregister=unregister_hint("NAME"),
                   instead="list models in the config")

    def _unreadable_words(self, name: str) -> str:
        return (f"model {json_quoted(name, 100)} was registered at run time at "
                f"{when(self.unreadable[name])} and data_dir keeps it, but it no longer reads "
                "as a model, so it is not served")

    def unregister(self, name: object) -> dict[str, Any]:
        """Take model ``name``, registered at run time, out of the catalog and the store: no
        longer served once the new snapshot is live (requests under way finish on the old
        one). Refused, changing nothing, for a model of the config, one not registered, and
        one still named by a live client key, a run-time experiment's arm or another
        registered model's fallbacks. Returns the deletion as OpenAI's model deletion answers
        it, with the models the live weights do not profile."""
        expect("name", name, str, "the name of a model registered at run time")
        assert isinstance(name, str)
        # A name no model registered here answers to is said before the removal waits its
        # turn (or is refused as one too many waiting for the store's writer), then checked
        # again in its turn.
        self._check_registered(self.state.live().settings, name)
        with turn(self.store, self._lock, "the model's removal", "it is still registered"):
            live = self.state.live()
            self._check_registered(live.settings, name)
            keys = self.keys()
            catalog = live.router.catalog.names
            if any(m.name == name for m, _ in held_out(live.settings, self.registered)):
                # (kept not served, it is served again once the setting is true: a key naming
                # it would lose it then, as it would a served one)
                catalog = [*catalog, name]
            check_no_key_names(name, keys.list(include_revoked=False), live.settings.tenants,
                               catalog, keys.now())
            self.learning.check_writable("the model's removal", "it is still registered")

            def settings_of(settings: Settings) -> Settings:
                # (again, under the swap lock: a reload since may have dropped it for the
                # config's model of its name)
                if not any(m.name == name for m in self.registered):
                    raise not_registered(name, settings, (m.name for m in self.registered))
                return self.merged(settings, tuple(m for m in self.registered
                                                   if m.name != name))

            def router_of(live: Router, merged: Settings) -> Router:
                # (the card taken out by the router's own rules, in a copy of the live router
                # that holds the registered models as such: the weights are not read again)
                router = live.unlearned_copy(registered=[
                    m.name for m in self.registered if m.name in live.catalog])
                if name in live.catalog:  # (a config without models: serves none of them)
                    router.unregister_model(name, registration.GATEWAY)
                return router

            def keep() -> None:
                made = next(m.registered_at for m in self.registered if m.name == name)
                written(self.store, RuntimeModelRemoval(name), "the model's removal",
                        "it is still registered",
                        removal=Removal(MODEL, name, made or 0.0, time.time()))
                self.registered = tuple(m for m in self.registered if m.name != name)

            try:
                _, new, _ = self.state.rebuild(
                    settings_of, keep, router_of=router_of,
                    keeping=f"the removal of model {json_quoted(name, 100)}")
            except (ConfigError, InvalidInputError) as exc:
                raise still_named(name, exc) from None
        return {"id": name, "object": "model", "deleted": True, **new.unprofiled_answer()}


    def _check_registered(self, settings: Settings, name: str) -> None:
        """Refuse unregistering ``name`` when no model registered here answers to it: one
        the store keeps that does not read as a model, the config's, or none."""
        if name in self.unreadable and not any(m.name == name for m in self.registered):
            raise ConflictError(f"name: {self._unreadable_words(name)}, so this service "
                                "cannot unregister it; unregister it with the service "
                                f"stopped ({unregister_command(name)})",
                                param="name")
        if not any(m.name == name for m in self.registered):
            raise not_registered(name, settings, (m.name for m in self.registered))


@dataclass(frozen=True)
class KeptModel:
    """A model the store keeps as registered at run time: its name, when it was registered,
    and the model it reads as under this switchpoint; ``entry`` None (and ``problem`` saying
    why) for a row that no longer reads as a model (the rules changed since), which is not
    served."""

    name: str
    registered_at: float
    entry: ModelEntry | None
    problem: str | None = None


def kept_models(reader: LearningReader, *, metadata_hosts: bool = False,
                nat64: Collection[ipaddress.IPv6Network] = ()) -> list[KeptModel]:
    """The models registered at run time the store ``reader`` reads keeps, in the order they
    were registered, each read by the config's rules for one entry (one that no longer reads
    as a model is listed too, flagged: see :class:`KeptModel`; one naming a link-local or
    metadata host, as written, is one unless ``metadata_hosts``, the config's
    ``gateway.allow_registered_metadata_hosts``, an address under a NAT64 prefix of ``nat64``
    judged by the IPv4 address it carries: no name is looked up again)."""
    out = []
    for row in reader.runtime_models():
        if row.problem is not None:  # (a row that cannot be read at all)
            out.append(KeptModel(row.name, row.created, None, row.problem))
            continue
        try:
            entry = ModelEntry.model_validate(row.card)
            check_destination(entry, allowed=metadata_hosts, nat64=nat64)
        except ValidationError as exc:
            err = exc.errors()[0]
            out.append(KeptModel(row.name, row.created, None,
                                 f"{key_path(tuple(err['loc']), 'card')}: {reason(err)}"))
            continue
        except InvalidInputError as exc:
            out.append(KeptModel(row.name, row.created, None, f"card.{exc.field}: {exc.reason}"))
            continue
        out.append(KeptModel(row.name, row.created, entry.registered(row.created)))
    return out


def held_out(settings: Settings, registered: Iterable[ModelEntry]
             ) -> list[tuple[ModelEntry, str]]:
    """The models of ``registered`` that ``settings`` do not serve, each with why: one naming
    a link-local or cloud metadata host, as written (no name is looked up again), while its
    ``gateway.allow_registered_metadata_hosts`` is false (turned off since it was registered;
    or it was kept by a switchpoint before the rule). Kept in ``data_dir``, served again once
    the setting is true."""
    allowed = settings.gateway.allow_registered_metadata_hosts
    nat64 = settings.gateway.nat64_networks
    out = []
    for entry in registered:
        try:
            check_destination(entry, allowed=allowed, nat64=nat64)
        except InvalidInputError as exc:
            out.append((entry, f"base_url {exc.reason}"))
    return out


def held_named(key: str, entry: ModelEntry, naming: str, way_out: str) -> ConfigError:
    """The refusal of settings (a reload's, a start's) in which ``key``, a run-time change's
    (``naming``: an experiment's arm, a registered model's fallbacks), names ``entry``, a
    model registered at run time that they no longer serve for naming a link-local or
    metadata host (:func:`held_out`): the change would lose it while it runs, unsaid (an
    experiment's arms changed midway, a fallback gone), so what names it is ended or made
    again first (``way_out``), or the setting kept true."""
    what = internal_host(entry.base_url or "") or "a link-local or metadata host"
    return ConfigError(key, (
        f"{json_quoted(entry.name, 100)}, a model registered at run time whose base_url names "
        f"{what}, is no longer served with {registration.ALLOW_METADATA_HOSTS}: false, and "
        f"{naming}; {way_out}, then reload (or start), or keep "
        f"{registration.ALLOW_METADATA_HOSTS}: true"))


def serving_held(settings: Settings) -> Settings:
    """``settings`` as they are once ``gateway.allow_registered_metadata_hosts`` is true: what
    serves the models :func:`held_out` keeps from being served."""
    return settings.model_copy(update={"gateway": settings.gateway.model_copy(
        update={"allow_registered_metadata_hosts": True})})


def held_out_words(name: str, problem: str) -> str:
    """Why model ``name``, registered at run time and one of :func:`held_out`'s (``problem``,
    as it gives it), is not served, and the ways out: what a service warns of at a start or a
    reload, and what ``switchpoint models list`` says of it."""
    return (f"{problem} (data_dir keeps it, served again once the setting is true; or "
            f"unregister it: {unregister_hint(name)})")


def with_registered(settings: Settings, registered: Sequence[ModelEntry], *,
                    check: bool = True) -> Settings:
    """``settings`` with its registered models replaced by ``registered``, after the config's
    (but those of a name the config lists: it wins), the whole checked by the config's rules
    (a :class:`ConfigError` naming the key at fault) unless ``check`` is false. A config
    without ``models:`` serves none of them: ``settings`` as they are. How a gateway joins them
    to its config, and how a command reading a stopped service's ``data_dir`` does."""
    if settings.models is None:
        return settings
    config = [m for m in settings.models if m.registered_at is None]
    names = {m.name for m in config}
    kept = [m for m in registered if m.name not in names]
    if not check:
        return settings.model_copy(update={"models": [*config, *kept]})
    if len(config) + len(kept) > MAX_CATALOG_MODELS:
        raise ConfigError("models", (
            f"the config lists {len(config)} models and {len(kept)} more were registered "
            f"at run time, over the {MAX_CATALOG_MODELS} a catalog may hold: list fewer, "
            f"or unregister some first ({unregister_hint('NAME')})"))
    merged = settings.model_copy(update={"models": [*config, *kept]})
    try:
        check_catalog(merged)
        check_experiments(merged)
    except ConfigError as exc:
        raise _named_by_name(exc, len(config), kept) from None
    for entry in kept:
        _check_key_destination(entry, config)
    return merged


def _origin(url: str | None) -> str | None:
    """Where a URL's requests go, as scheme, host and port (the default port written out), the
    host as all its spellings are one upstream (:func:`~switchpoint.registration.
    canonical_host`: ``0x7f.1`` and ``127.0.0.1.`` are ``127.0.0.1``)."""
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return None
    port = port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    return f"{parts.scheme.lower()}://{canonical_host(parts.hostname or '')}:{port}"


def _check_key_destination(entry: ModelEntry, config: Sequence[ModelEntry]) -> None:
    """Refuse a registered model that would send a key where the config does not send it.

    A model registered at run time names its key by a variable (``api_key_env``), so whoever
    may register one could otherwise have any variable of the service's environment (another
    provider's key, a cloud secret, the admin token's own variable) sent to a host of their
    choosing with its first chat request. So its key goes only where the config already sends
    that key: one of the config's models reads the same variable (explicitly, or as its
    provider's usual one) and goes to the same scheme, host and port. A model that names no
    variable needs nothing more (a provider's usual key goes only to the provider's own URL:
    :func:`~switchpoint.known_providers.api_key_env_of`)."""
    var = entry.api_key_env
    if var is None:
        return
    card = entry.card()
    where = _origin(base_url_of(card))
    allowed = sorted({origin for c in config
                      if api_key_env_of(c.card()) == var
                      and (origin := _origin(base_url_of(c.card()))) is not None})
    if where is not None and where in allowed:
        return
    if allowed:
        sent = (f"the config sends {var} only to {listed_names(allowed, quoted=True)}; give a "
                "base_url there, or a variable a config model sends to this host")
    else:
        sent = (f"no model of the config reads {var}: name a variable a config model sends to "
                "this host, or none")
    raise ConfigError(f"models.{entry.name}.api_key_env", (
        f"a model registered at run time sends its key only where the config already sends "
        f"that key, and {sent}; or list the model in the config itself"))


def _named_by_name(exc: ConfigError, first: int, kept: Sequence[ModelEntry]) -> ConfigError:
    """A rule broken at a registered model, ``models[N]...`` where N is past the config's
    ``first`` models (a place in no file), named by the model's name instead
    (``models.<name>...``, as the catalog names one); any other, as it is."""
    found = re.match(r"models\[(\d+)\]", exc.key)
    if found is None or not first <= int(found[1]) < first + len(kept):
        return exc
    return ConfigError(f"models.{kept[int(found[1]) - first].name}{exc.key[found.end():]}",
                       exc.reason, problem=exc.problem)


def registered_fault(exc: ConfigError, registered: Iterable[ModelEntry]) -> ConfigError:
    """``exc`` (from :func:`with_registered`), when a model of ``registered`` breaks the rule
    (its key ``models.<name>...``), saying that it was registered at run time and how it is
    unregistered, since no config lists it: what to do when a reload or a start is refused
    for a registered model's fallbacks naming a model the config no longer lists, say."""
    for entry in registered:
        prefix = f"models.{entry.name}"
        if exc.key == prefix or exc.key.startswith((prefix + ".", prefix + "[")):
            return ConfigError(exc.key, (
                f"{exc.reason}; model {json_quoted(entry.name, 100)} was registered at run "
                f"time, so no config lists it: unregister it "
                f"({unregister_hint(entry.name)}), or keep in the config what it "
                "names"), problem=exc.problem)
    return exc


def not_registered(name: str, settings: Settings, registered: Iterable[str]
                   ) -> ConflictError | NotFoundError:
    """Why ``name`` names no model registered at run time to unregister: it is the config's
    (``settings``), or none was registered (the error lists those ``registered``; see
    :func:`switchpoint.registration.not_registered`)."""
    return registration.not_registered(
        name, registered, built=any(m.name == name and m.registered_at is None
                                    for m in settings.models or []),
        where="the config", change="take it out of the config's models: and reload")


def check_no_key_names(name: str, keys: Iterable[KeyRecord],
                       tenants: Mapping[str, TenantSettings], catalog: Sequence[str],
                       now: float) -> None:
    """Refuse unregistering ``name`` while a live one of ``keys`` names it (it could use it
    from ``catalog`` and would lose it): a :class:`ConflictError` naming the keys."""
    losses = key_losses(keys, tenants, tenants, catalog, [n for n in catalog if n != name], now)
    if losses:
        raise ConflictError(f"name: model {json_quoted(name, 100)} is named by live client "
                            f"keys: {losses_note(losses)}; reissue those keys without it (or "
                            "revoke them) first", param="name")


def _log_failed_drop(done: Future[Any]) -> None:
    """A registered model dropped for the config's of its name, its row not deleted: said,
    and dropped again at the next start or reload (the config still wins)."""
    exc = done.exception()
    if exc is not None:
        log.warning("a registered model the config now lists could not be dropped from "
                    "data_dir (%s); it is dropped again at the next start or reload", exc)


def new_index(settings: Settings) -> int:
    """Where a model registered now stands in ``settings``'s catalog once merged: after the
    config's models and those registered before (``models[N]`` in the config's rules'
    errors)."""
    return len(settings.models or [])


__all__ = ["MAX_REGISTERED_MODELS", "METADATA_HOSTS", "KeptModel", "RuntimeModels",
           "check_destination", "check_no_key_names", "deletion_path", "held_named",
           "held_out", "held_out_words", "internal_host", "kept_models", "model_card",
           "not_registered", "registered_fault", "serving_held", "still_named",
           "unregister_command", "unregister_hint", "with_registered"]
