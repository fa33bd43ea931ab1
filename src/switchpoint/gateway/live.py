"""The live router, loaded in the background and swapped whole.

A request takes one :class:`Live` snapshot at its start and uses it to the end, so a policy swap
or a reload (which builds the new router off to the side, warms it, then replaces the snapshot
in one assignment) never touches a request in flight and never drops one.

Learning goes along: :attr:`RouterState.prepare` (the gateway's) gives a new snapshot what it
learns with (its feedback log, its experiment arms' routers, its tenants' memories) off to the
side; then, under :attr:`RouterState.guard`, the swap hooks replay the feedback log into it and
it goes live. Feedback is applied under the same guard, so none is lost between the replay and
the swap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from switchpoint._log_limit import SaidOnce
from switchpoint._messages import MAX_LISTED, json_quoted, listed_names
from switchpoint.catalog import uncosted
from switchpoint.config import Settings, check_named_models
from switchpoint.embedding import Embedder, embedder_from_id
from switchpoint.errors import (
    ConfigError,
    InvalidInputError,
    RouterNotReadyError,
    StorageUnavailableError,
    WeightsError,
)
from switchpoint.gateway.parsing import AUTO_MODEL
from switchpoint.governance.reload_check import check_reload
from switchpoint.learning.learner import LearningSettings
from switchpoint.router import Router
from switchpoint.weights import (
    WeightsPackage,
    WeightsSource,
    bundled_policies,
    load_weights,
    weights_source,
)

if TYPE_CHECKING:
    from switchpoint.gateway.live_learning import LiveLearning

log = logging.getLogger("switchpoint.gateway")
# Why the weights' models are the ones a config's names must be among.
NO_CATALOG = "there is no catalog, so those are the models routed"
SwapHook = Callable[["Live"], None]

#: The longest a reload or a policy swap waits for a change made at run time (a model
#: registered or removed, an experiment created or ended) that holds the swap lock while the
#: store's writer keeps it: that write has no bound of its own (a disk that does not finish
#: its fsync), so past this the reload or swap is refused (a 503 naming the change it waited
#: for) rather than left waiting with its caller. A load under way is waited for.
SWAP_WAIT_S = 5.0
# How often a wait past SWAP_WAIT_S looks again at what holds the swap lock.
_LOOK_S = 0.05


@dataclass(frozen=True)
class Live:
    """One loaded router and what it was loaded from; ``learning`` is what it learns with
    (set by the gateway before it goes live)."""

    router: Router
    settings: Settings
    policy: str
    weights_id: str
    loaded_at: float = field(default_factory=time.time)
    learning: LiveLearning | None = None
    # Settings the config file changed that keep their running value until a restart.
    restart_required: tuple[str, ...] = ()
    # The catalog models the weights have no learned profile for (routed by tier and price).
    unprofiled: tuple[str, ...] = ()
    # When this process first served each config model (and ``auto``), in Unix seconds: kept
    # across swaps and reloads (see :func:`first_served`).
    served_since: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def of(cls, router: Router, settings: Settings, policy: str | None) -> Live:
        """Snapshot ``router``; the weights id (a hash of every array) is computed once here."""
        return cls(router, settings, _policy_name(settings, router, policy),
                   router.weights_id, unprofiled=tuple(router.unprofiled_models))

    @functools.cached_property
    def address_checked(self) -> frozenset[str]:
        """The models whose upstream connections have their addresses checked as they are made
        (see :attr:`Timeouts.metadata_hosts
        <switchpoint.gateway.providers.base.Timeouts.metadata_hosts>`): those registered at
        run time, unless the config's ``gateway.allow_registered_metadata_hosts`` lets them
        name a link-local or metadata host. The config's are not checked: its author owns the
        machine. Worked out once a snapshot."""
        if self.settings.gateway.allow_registered_metadata_hosts:
            return frozenset()
        return frozenset(m.name for m in self.settings.models or []
                         if m.registered_at is not None)

    @functools.cached_property
    def nat64_networks(self) -> tuple[ipaddress.IPv6Network, ...]:
        """The config's ``gateway.nat64_prefixes`` as networks, which the models
        :attr:`address_checked` names have the addresses under them judged by the IPv4
        address each carries. Worked out once a snapshot."""
        return self.settings.gateway.nat64_networks

    def model_objects(self, allowed: AbstractSet[str] | None = None, auto: bool = True
                      ) -> list[dict[str, Any]]:
        """The routable models as OpenAI's model objects, ``auto`` first (unless ``auto`` is
        false); ``allowed``: the catalog models a caller may use, by name or through ``auto``
        (None: every one; empty: none). Empty without a catalog (no ``models:``): a chat
        request then answers no name, ``auto`` neither (the weights' own profiles route
        ``/v1/route`` alone)."""
        if self.settings.models is None:
            return []
        data = []
        if auto:
            data.append({"id": AUTO_MODEL, "object": "model", "created": self.created(AUTO_MODEL),
                         "owned_by": "switchpoint"})
        for card in self.router.catalog.cards:
            if allowed is not None and card.name not in allowed:
                continue
            data.append({"id": card.name, "object": "model", "created": self.created(card.name),
                         "owned_by": card.provider})
        return data

    def created(self, name: str) -> int:
        """A model's ``created`` (Unix seconds), which stays put as snapshots replace one
        another: a registered model's registration time, else when this process first served
        the name (see :func:`first_served`)."""
        registered = next((m.registered_at for m in self.settings.models or []
                           if m.name == name and m.registered_at is not None), None)
        if registered is not None:
            return int(registered)
        return int(self.served_since.get(name, self.loaded_at))

    def unprofiled_note(self) -> str | None:
        """What to tell whoever loaded these weights about the catalog models they do not
        profile (the first :data:`MAX_LISTED`, by :func:`listed_names`), or None when they
        profile every one."""
        return unprofiled_note(self.policy, self.weights_id, self.unprofiled)

    def unprofiled_answer(self) -> dict[str, Any]:
        """The unprofiled models as a swap's answer gives them: the first
        :data:`MAX_LISTED`, as its note lists them, how many in all, and the note."""
        return {"unprofiled_models": list(self.unprofiled[:MAX_LISTED]),
                "unprofiled_models_count": len(self.unprofiled),
                "note": self.unprofiled_note()}


class RouterFactory:
    """Builds a warmed :class:`Router` from settings; keeps embedders warm across swaps.

    ``warm=False`` leaves each embedder to load at its first embedding instead: for a gateway
    that only calls the models it is told to (labelling), which then never pays for it.

    ``policy=None`` loads the configured weights: ``weights`` if set, else ``policies[policy]``,
    else the bundled default for ``policy``. A policy name loads ``policies[name]``, else the
    configured ``weights`` when they are of that policy (a swap back to the policy served at
    start returns to them), else the bundled default of that name.

    ``checked`` is the configured weights a start has just read and checked (the settings it
    read them for, and the package): the first load of those same weights checks them again
    against its settings but does not read them anew (their files, checksums and profiles).
    ``policies_checked`` is the same for the packages ``policies:`` lists, as
    :func:`checked_policies` returned them at that start: the first :meth:`check_policies`
    checks them again without reading them. Each is taken once: every later load, swap or
    reload reads the files again.
    """

    def __init__(self, *, warm: bool = True,
                 checked: tuple[Settings, WeightsPackage] | None = None,
                 policies_checked: Mapping[str, tuple[WeightsSource, WeightsPackage]] | None
                 = None) -> None:
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.Lock()
        self._warm = warm
        self._checked = None if checked is None else (weights_source(checked[0]), checked[1])
        self._policies_checked = dict(policies_checked or {})

    def check_policies(self, settings: Settings
                       ) -> dict[str, tuple[WeightsSource, WeightsPackage]]:
        """:func:`checked_policies` for ``settings``, taking the packages a start read and
        checked (``policies_checked``) rather than reading them again: once."""
        with self._lock:
            held, self._policies_checked = self._policies_checked, {}
        return checked_policies(settings, read=held)

    def __call__(self, settings: Settings, policy: str | None = None) -> Router:
        with self._lock:
            held, self._checked = self._checked, None
        read = (held[1] if held is not None and held[0] == weights_source(settings, policy)
                else None)
        return self.of_package(settings, checked_package(settings, policy, read=read))

    def of_package(self, settings: Settings, package: WeightsPackage) -> Router:
        """A warmed router of ``package``, checked for ``settings`` already
        (:func:`checked_package`): what a load makes once it has read the weights, the
        embedder kept warm across swaps."""
        catalog = settings.catalog()
        with self._lock:
            embedder = self._embedders.get(package.embedder_id)
            if embedder is None:
                embedder = embedder_from_id(package.embedder_id)
                self._embedders[package.embedder_id] = embedder
        router = Router(package, catalog=catalog, embedder=embedder,
                        cost_weight=settings.cost_weight, cache_size=settings.cache.size,
                        cache_ttl=settings.cache.ttl_seconds,
                        learning=learning_settings(settings))
        if self._warm:
            router.warm_up()
        return router


def checked_package(settings: Settings, policy: str | None = None, *,
                    read: WeightsPackage | None = None) -> WeightsPackage:
    """The weights :class:`RouterFactory` loads for ``settings`` and ``policy``, checked
    against the catalog and the experiments' arms: what a load refuses without any state of
    ``data_dir`` (a missing or corrupt package, a catalog model without a profile of it, an
    arm narrowed to models it cannot route; without a catalog, a tenant, an escalation or a
    budget naming a model the weights lack). Cheap (no embedder loads), so a start can find
    it before it makes ``data_dir``. Raises the load's own error. ``read``: those weights as
    read a moment ago from the same :func:`weights_source` (checked again, not read again)."""
    path, bundled, max_bytes = weights_source(settings, policy)
    package = read if read is not None else load_weights(path, policy=bundled,
                                                         max_weights_bytes=max_bytes)
    catalog = settings.catalog()
    check_costed(settings, package)
    if catalog is None:  # the weights' own profiles are the models routed
        check_named_models(settings, package.models, f"of the weights {package.weights_id} "
                                                     f"({NO_CATALOG})")
        # an arm routes with these weights: the live ones, or its policy's
        name = policy if policy is not None else (
            package.policy.name if settings.weights is not None else settings.policy)
        routed_here: set[str | None] = {name} if policy is not None else {None, name}
        _check_arm_models(settings, package.models, package.weights_id, routed_here)
    return package


def check_costed(settings: Settings, package: WeightsPackage) -> None:
    """Refuse ``settings``' catalog where the weights ``package`` would leave a model nothing
    costs (:func:`~switchpoint.catalog.uncosted`): a :class:`ConfigError` naming the first
    such model's ``profile``."""
    cards = [m.card() for m in settings.models or []]
    missing = uncosted(cards, package.models)
    if missing:
        i = [c.name for c in cards].index(missing[0])
        profile = cards[i].profile or cards[i].name
        raise ConfigError(
            f"models[{i}].profile",
            f"{json_quoted(profile)} is not a profile of the weights {package.weights_id} "
            f"({listed_names(package.models, quoted=True)}); name one of them, or give every "
            "model input_per_mtok and output_per_mtok so a model without a profile is routed "
            "by tier and price")


def checked_policies(settings: Settings, *,
                     read: Mapping[str, tuple[WeightsSource, WeightsPackage]] | None = None
                     ) -> dict[str, tuple[WeightsSource, WeightsPackage]]:
    """Every package ``policies:`` lists, read and checked as a swap to it would check it (its
    manifest, its files' checksums, the catalog's profiles, the arms that route with it, the
    embedder it names): a bad one is a :class:`ConfigError` naming its key at start and at
    reload, not a failure of the first swap to it. Returns each policy's source and package;
    ``read``: such an answer of a moment ago, whose packages from the same source are checked
    again, not read again."""
    out: dict[str, tuple[WeightsSource, WeightsPackage]] = {}
    for name in settings.policies:
        source = weights_source(settings, name)
        held = (read or {}).get(name)
        try:
            package = checked_package(settings, name,
                                      read=held[1] if held and held[0] == source else None)
            embedder_from_id(package.embedder_id)  # (builds, loads not)
        except (WeightsError, ConfigError, InvalidInputError) as exc:
            raise ConfigError(f"policies.{name}", f"a swap to {json_quoted(name)} would fail: "
                                                  f"{exc}; fix the package or take it out of "
                                                  "policies:"
                              ) from None
        out[name] = (source, package)
    return out


def _check_arm_models(settings: Settings, models: list[str], weights_id: str,
                      policies: set[str | None]) -> None:
    """Without a catalog the routable models are the weights' own: an experiment arm that
    routes with these weights (its ``policy`` is among ``policies``; None: the live one) and
    narrows to other models could never route."""
    for name, experiment in settings.experiments.items():
        for arm_name, arm in experiment.arms.items():
            if arm.policy not in policies:
                continue
            for j, model in enumerate(arm.models or []):
                if model not in models:
                    raise ConfigError(
                        f"experiments.{name}.arms.{arm_name}.models[{j}]",
                        f"{json_quoted(model)} is not a model of the weights {weights_id} "
                        f"({NO_CATALOG}); use one of {listed_names(models, quoted=True)}")


def learning_settings(settings: Settings) -> LearningSettings:
    """The library's learning settings for the service's ``learning:`` section. The tenants
    a service learns for are its config's (and the feedback log's), never a client's choice,
    and its checkpoints and replay hold them all: no bound on those held in memory. Retention
    depends on it: it prunes the feedback log up to the learning checkpoint, and a tenant's
    evidence let go to a bound would be rebuilt from that pruned log, losing what was pruned
    (see ``LearningSettings.max_tenants``)."""
    learning = settings.learning
    return LearningSettings(memory_size=learning.memory_size, exploration=learning.exploration,
                            seed=learning.seed, max_tenants=None)


def policy_choices(settings: Settings) -> list[str]:
    """Policies a swap may name: the bundled defaults and the config's ``policies:``."""
    return sorted(set(bundled_policies()) | set(settings.policies))


Loader = Callable[[Settings, str | None], Router]
# Readies a snapshot before it goes live (given the one it replaces, if any).
Prepare = Callable[["Live", "Live | None"], "Live"]


def _taking_bodies(loader: Loader) -> Loader:
    """``loader``, each router it makes raised to take a prompt as long as ``max_request_bytes``
    (a character is at least a byte of the body that sends it), so the gateway's routing of
    a request its body limit takes never meets a lower bound (a router of a loader of the
    caller's own left with its default among them)."""
    def load(settings: Settings, policy: str | None) -> Router:
        return _taking_body(loader(settings, policy), settings)

    return load


def _taking_body(router: Router, settings: Settings) -> Router:
    """``router`` raised to take a prompt as long as ``settings``' ``max_request_bytes`` (see
    :func:`_taking_bodies`)."""
    if router.max_prompt_chars < settings.max_request_bytes:
        router.max_prompt_chars = settings.max_request_bytes
    return router


#: The sets of unprofiled catalog models a :class:`RouterState` remembers having warned of
#: (see ``RouterState._warn_unprofiled``): past them, the oldest is said again if it comes back.
UNPROFILED_SAID_KEPT = 64


class RouterState:
    """Holds the live router behind an atomic swap; loads the first one on a thread."""

    def __init__(self, settings: Settings, loader: Loader | None = None) -> None:
        self.settings = settings
        self._factory = loader if isinstance(loader, RouterFactory) else None
        self.loader: Loader = _taking_bodies(loader or RouterFactory())
        self.started = time.monotonic()
        self.error: str | None = None
        self.failure: Exception | None = None
        self._live: Live | None = None
        # One load, swap or reload at a time (reentrant: see :meth:`swapping`).
        self._swap = threading.RLock()
        self.on_load_error: Callable[[BaseException], None] | None = None
        self._on_swap: list[SwapHook] = []
        self.prepare: Prepare | None = None
        # Checks re-read settings pass before anything loads (the server's: that the admin
        # token they name is exported, that they keep every route behind a credential on the
        # address it is bound to); each raises ConfigError.
        self.vets: list[Callable[[Settings], None]] = []
        # Add to settings read from the config what was made at run time (the gateway's
        # models registered and experiments created at run time), in turn, at the first load
        # and at every reload; each raises ConfigError when the two do not fit together.
        self.extends: list[Callable[[Settings], Settings]] = []
        # The policy a swap made live (None: the config's), which a rebuild keeps.
        self._swapped: str | None = None
        # The packages of ``policies:`` as the last start or reload read them (a change made
        # at run time checks them against its settings again, and reads none anew).
        self._policies: dict[str, tuple[WeightsSource, WeightsPackage]] = {}
        # Whether the snapshot being readied is made of the live one's routers (a change made
        # at run time, ``router_of``): its experiment arms' routers are then too (see
        # :meth:`arm_router`). Set under the swap lock.
        self._copying = False
        # The experiment arms' routers made since the last start, reload or swap, one per
        # policy (the newest), kept after their arms end: a change made at run time makes an
        # arm's router in a copy of one (see :meth:`arm_router`), and ``_arms_made`` gathers
        # those the snapshot being readied makes. At most one per policy a swap may name.
        self._arm_routers: dict[str, Router] = {}
        self._arms_made: dict[str, Router] = {}
        # The change made at run time that holds the swap lock while the store keeps it
        # (what a rebuild's ``keeping`` names), else None.
        self._keeping: str | None = None
        # Held while a new snapshot is hooked up and goes live (and by whoever must not run
        # between the two, e.g. feedback, which must reach the snapshot that serves next).
        self.guard = threading.RLock()
        # The catalog models the live weights do not profile, as warned of already (policy,
        # weights and models): each is said once, not again at every reload or registration
        # that leaves them so; the newest UNPROFILED_SAID_KEPT are remembered.
        self._unprofiled_said: SaidOnce[tuple[str, str, tuple[str, ...]]] = SaidOnce()

    def on_swap(self, hook: SwapHook) -> None:
        """Call ``hook(live)`` whenever a router goes live (the first load, a policy swap, a
        reload), before any request sees it: settings derived from the config are rebuilt
        there, once, not on every request."""
        self._on_swap.append(hook)
        if self._live is not None:
            hook(self._live)

    def _go_live(self, live: Live, before: Callable[[], None] | None = None) -> Live:
        live = dataclasses.replace(live, served_since=first_served(live, self._live))
        self._arms_made = {}
        if self.prepare is not None:
            live = self.prepare(live, self._live)
        if before is not None:  # (raising, it keeps the snapshot from going live)
            before()
        with self.guard:
            for hook in self._on_swap:
                hook(live)
            self._live = live
        # (a load's arms replace those held: the policies: packages may have changed)
        self._arm_routers = ({**self._arm_routers, **self._arms_made} if self._copying
                             else self._arms_made)
        self._arms_made = {}
        return live

    # Reading -----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._live is not None

    def peek(self) -> Live | None:
        return self._live

    def live(self) -> Live:
        """The current snapshot, or :class:`NotReadyError` (503) while the first load runs."""
        live = self._live
        if live is None:
            waited = time.monotonic() - self.started
            if self.error is not None:
                raise RouterNotReadyError(f"the router failed to load: {self.error}")
            raise RouterNotReadyError(f"the router is still loading its weights ({waited:.1f} s so "
                                "far); retry shortly, GET /health says when it is ready")
        return live

    # Loading and swapping ----------------------------------------------------------------------

    def load(self) -> Live:
        """Load the configured router now, on this thread (the in-process gateway's way)."""
        self._initial_load(report=False)
        return self.live()

    def start(self) -> threading.Thread:
        """Load the configured router on a background thread (the port is already open)."""
        thread = threading.Thread(target=self._initial_load, name="switchpoint-load",
                                  daemon=True)
        thread.start()
        return thread

    def _initial_load(self, report: bool = True) -> None:
        t0 = time.perf_counter()
        try:
            with self._swap:
                if self._live is not None:
                    return
                settings = self._extended(self.settings)
                if self._factory is not None:  # (what a start read, taken, not read again)
                    self._policies = self._factory.check_policies(settings)
                else:
                    self._policies = checked_policies(settings)
                router = self.loader(settings, None)
                self._go_live(Live.of(router, settings, None))
                self.settings = settings
        except Exception as exc:  # reported; `switchpoint serve` then stops
            if not report:
                raise
            self.error = str(exc)
            self.failure = exc
            if self.on_load_error is not None:
                self.on_load_error(exc)
            else:
                log.error("the router failed to load: %s", exc)
            return
        log.info("router ready: %s (%s policy, %d models) in %.2f s", router.weights_id,
                 router.policy.name, len(router.models), time.perf_counter() - t0)

    @contextlib.contextmanager
    def swapping(self, waits: str = "the policy swap") -> Iterator[Live]:
        """Hold off every other load, swap and reload while the block runs, yielding the live
        snapshot: what the block checks of it (a swap's policy name, a reload's keys) still
        holds when a swap the block makes runs (it runs inside, on this thread).
        :class:`RouterNotReadyError` (503) at once while the first load runs; a
        :class:`StorageUnavailableError` (503) naming ``waits`` once it has waited
        :data:`SWAP_WAIT_S` behind a change the store has not kept yet (see
        :meth:`_taken`)."""
        self.live()
        with self._taken(waits):
            yield self.live()

    def swap_policy(self, name: str) -> tuple[Live, Live, float]:
        """Load policy ``name`` and make it live. Returns (old, new, milliseconds)."""
        return self._replace(lambda s: s, name, waits="the policy swap")

    def reload(self) -> tuple[Live, Live, float]:
        """Re-read the config file and the weights, then make the result live (with what
        was made at run time: see :attr:`extends`). A file that holds no settings, or would
        lower the service's protection, is refused (:func:`check_reload`)."""
        def read(running: Settings) -> Settings:
            settings = running.reloaded()
            check_reload(running, settings)
            return self._extended(settings)

        return self._replace(read, None, waits="the reload")

    def rebuild(self, settings_of: Callable[[Settings], Settings],
                before: Callable[[], None] | None = None, *,
                keeping: str = "a change made at run time",
                router_of: Callable[[Router, Settings], Router] | None = None
                ) -> tuple[Live, Live, float]:
        """Make live a new snapshot of the same config, the policy live now and the settings
        ``settings_of`` makes of the live ones (what was made at run time changed), as a
        reload would, calling ``before`` once it is ready to go live: what ``settings_of``,
        ``router_of`` or ``before`` raises, or the load, leaves the live snapshot as it is.
        ``before`` writes the change to the store and waits for it (``keeping`` names the
        change, for a reload or a swap refused meanwhile: see :meth:`_taken`). ``router_of``
        makes the snapshot's router of the live one and the new settings (a model registered
        in a copy of it; :meth:`copied`, an experiment created or ended), instead of a load:
        its experiment arms' routers are then copies too (see :meth:`arm_router`)."""
        kept = None if before is None else self._kept(before, keeping)
        return self._replace(settings_of, self._swapped, before=kept, router_of=router_of)

    def arm_router(self, settings: Settings, policy: str, old: Router | None) -> Router:
        """The router of an experiment arm routed by ``policy`` for a snapshot of ``settings``
        being readied: loaded (its weights read) by a start, a reload or a swap. A change made
        at run time in a copy of the live router (a model registered or unregistered, an
        experiment created or ended) makes it in a copy of ``old`` (the live snapshot's router
        of that arm), else of the router of that policy an arm held since the last start,
        reload or swap, its catalog the new one, checked against its weights as a load checks
        it (the arm routes over the same catalog as the live router): no weights are read or
        hashed anew. A policy no arm held since is made of its ``policies:`` package as the
        last start or reload read it (by the service's own loader; checked, not read again),
        else loaded."""
        held = old if old is not None else self._arm_routers.get(policy)
        if not self._copying:
            router = self.loader(settings, policy)
        elif held is not None:
            checked_package(settings, policy, read=held.weights)
            catalog = settings.catalog()
            router = (held.unlearned_copy(catalog=catalog) if catalog is not None
                      else held.unlearned_copy())
        else:
            router = self._of_policies(settings, policy) or self.loader(settings, policy)
        self._arms_made[policy] = router
        return router

    def _of_policies(self, settings: Settings, policy: str) -> Router | None:
        """A router of ``policy``'s package as the last start or reload read it from
        ``policies:`` (checked against ``settings``, not read again), made by the service's
        own loader; None when that loader is the caller's own (whose routers are its own to
        make) or the package is not held."""
        read = self._policies.get(policy)
        if self._factory is None or read is None or read[0] != weights_source(settings, policy):
            return None
        package = checked_package(settings, policy, read=read[1])
        return _taking_body(self._factory.of_package(settings, package), settings)

    def copied(self, live: Router, settings: Settings) -> Router:
        """The router of a snapshot of ``settings`` whose change made at run time leaves the
        catalog as it is (an experiment created or ended), for :meth:`rebuild`'s
        ``router_of``: a copy of the ``live`` router (:meth:`Router.unlearned_copy
        <switchpoint.router.Router.unlearned_copy>`), its weights checked against
        ``settings`` as a load checks them (an arm narrowed to models they cannot route,
        without a catalog), neither read nor hashed again."""
        checked_package(settings, self._swapped, read=live.weights)
        return live.unlearned_copy()

    def _kept(self, before: Callable[[], None], keeping: str) -> Callable[[], None]:
        def kept() -> None:
            self._keeping = keeping
            try:
                before()
            finally:
                self._keeping = None

        return kept

    @contextlib.contextmanager
    def _taken(self, waits: str) -> Iterator[None]:
        """Hold the swap lock for ``waits`` (a reload, a policy swap), waiting for a load
        under way as long as it takes, but refusing with a
        :class:`StorageUnavailableError` (503, Retry-After) once it has waited
        :data:`SWAP_WAIT_S` and the lock is held by a change made at run time that waits for
        the store's writer to keep it (see :meth:`rebuild`): that write has no bound of its
        own, and the change must go live as one step with it, so it keeps the lock."""
        deadline = time.monotonic() + SWAP_WAIT_S
        while not self._swap.acquire(timeout=max(deadline - time.monotonic(), _LOOK_S)):
            keeping = self._keeping
            if keeping is not None and time.monotonic() >= deadline:
                raise StorageUnavailableError(
                    f"{waits} was not made: it waited {SWAP_WAIT_S:g} s for {keeping}, which "
                    "waits for the store's writer to keep it in data_dir (a disk slow to "
                    "finish its writes, or a lock another process holds) and goes live with "
                    "it; the running router keeps serving: try again once it is kept")
        try:
            yield
        finally:
            self._swap.release()

    def _extended(self, settings: Settings) -> Settings:
        for extend in self.extends:
            settings = extend(settings)
        return settings

    def _replace(self, settings_of: Callable[[Settings], Settings],
                 policy: str | None, *, before: Callable[[], None] | None = None,
                 waits: str | None = None,
                 router_of: Callable[[Router, Settings], Router] | None = None
                 ) -> tuple[Live, Live, float]:
        self.live()  # 503 at once if the first load is still running
        # (a reload or a swap, ``waits``, waits a bounded time behind a change the store has
        # not kept yet; a change made at run time is counted among those, and waits its turn)
        with self._swap if waits is None else self._taken(waits):
            old = self.live()
            t0 = time.perf_counter()
            read = settings_of(old.settings)
            for vet in self.vets:
                vet(read)
            settings = running(read, old.settings)
            if policy is None:  # a reload: what it lists must load, before a swap needs it
                # (a change made in a copy of the live router reads no package anew)
                policies = checked_policies(
                    settings, read=None if router_of is None else self._policies)
            router = (self.loader(settings, policy) if router_of is None
                      else router_of(old.router, settings))
            restart = (old.restart_required if before is not None
                       else tuple(restart_keys(old.settings, read)))
            self._copying = router_of is not None
            try:
                new = self._go_live(dataclasses.replace(Live.of(router, settings, policy),
                                                        restart_required=restart), before)
            finally:
                self._copying = False
            if policy is None:
                self._policies = policies
            self.settings = settings
            self._swapped = policy
            ms = (time.perf_counter() - t0) * 1e3
            log.info("router swapped: %s (%s policy) -> %s (%s policy, %d models) in %.0f ms",
                     old.weights_id, old.policy, new.weights_id, new.policy,
                     len(new.router.models), ms)
            self._warn_unprofiled(new)  # (under the swap lock: said once, whoever swaps)
        return old, new, ms

    def _warn_unprofiled(self, live: Live) -> None:
        """Warn of the catalog models ``live``'s weights do not profile, unless this state
        warned of the same weights and models already (at an earlier reload, swap or
        registration): said once, as an experiment arm's are (the answer names them each
        time)."""
        note = live.unprofiled_note()
        said = (live.policy, live.weights_id, live.unprofiled)
        if note is not None and self._unprofiled_said.new([said], UNPROFILED_SAID_KEPT):
            log.warning("%s", note)


def unprofiled_note(policy: str, weights_id: str, unprofiled: Sequence[str]) -> str | None:
    """What to tell whoever loaded ``policy``'s weights ``weights_id`` about the catalog
    models ``unprofiled`` they do not profile (the first :data:`MAX_LISTED`, by
    :func:`listed_names`), or None when there are none."""
    if not unprofiled:
        return None
    return (f"the {policy} weights {weights_id} have no learned profile for catalog model(s) "
            f"{listed_names(unprofiled, quoted=True)}: they are routed by tier and price "
            "alone; label them (switchpoint label, then add-model) or load weights that "
            "profile them")


def first_served(live: Live, before: Live | None) -> dict[str, float]:
    """When this process first served each of ``live``'s catalog models and ``auto``: as
    ``before`` (the snapshot it replaces) says for the names it served too, else when
    ``live`` was loaded. A model's ``created`` thus stays put across reloads, policy swaps
    and registrations; one a reload drops and a later one lists again is served anew."""
    kept = before.served_since if before is not None else {}
    names = [AUTO_MODEL, *(card.name for card in live.router.catalog.cards)]
    return {name: kept.get(name, live.loaded_at) for name in names}


def _policy_name(settings: Settings, router: Router, policy: str | None) -> str:
    """The name a policy is known by: the one asked for, the configured one, or (for an
    explicit weights package) the package's own policy."""
    if policy is not None:
        return policy
    return router.policy.name if settings.weights is not None else settings.policy


#: Settings that take effect only after a restart (store retention, by contrast, applies at
#: once): a reload reports them when the file changed them, and keeps them as they run.
RESTART_ONLY = ("data_dir", "store.synchronous", "store.spill_max_mb", "cors",
                "gateway.max_upstream_connections", "server")


def restart_keys(old: Settings, new: Settings) -> list[str]:
    """The settings of :data:`RESTART_ONLY` that differ between ``old`` and ``new``."""
    return [name for name in RESTART_ONLY if _value(old, name) != _value(new, name)]


def running(read: Settings, current: Settings) -> Settings:
    """``read`` with the settings of :data:`RESTART_ONLY` kept at ``current``'s values, the
    ones in effect."""
    for name in RESTART_ONLY:
        read = _replaced(read, name.split("."), _value(current, name))
    return read


def _value(settings: Any, name: str) -> Any:
    for part in name.split("."):
        settings = getattr(settings, part)
    return settings


def _replaced(model: Any, path: list[str], value: Any) -> Any:
    """A copy of ``model`` with the field at ``path`` set to ``value``."""
    head, *rest = path
    return model.model_copy(update={
        head: _replaced(getattr(model, head), rest, value) if rest else value})
