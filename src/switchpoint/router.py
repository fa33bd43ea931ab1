"""The router: embed → estimate → decide, with a decision cache and routing counters.

This is the one path every request takes, whether it comes from Python, the CLI or HTTP.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import numbers
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, fields, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from switchpoint._admitted import admitted_by
from switchpoint._args import INTEGER, NUMBER, PATH, expect
from switchpoint._json import plain_str
from switchpoint._limits import DEFAULT_MAX_REQUEST_BYTES, MAX_BYTES
from switchpoint._limits import MAX_BATCH as MAX_BATCH  # (re-exported: see there)
from switchpoint._limits import MAX_CACHE_ENTRIES as MAX_CACHE_ENTRIES
from switchpoint._limits import MAX_CACHE_TTL_S as MAX_CACHE_TTL_S
from switchpoint._messages import (
    bounded_repr,
    got,
    json_quoted,
    listed_names,
    one_of,
    people_number,
    plural,
)
from switchpoint._numbers import checked_number
from switchpoint._pickling import LOCK, RemadeOnLoad, remade
from switchpoint.catalog import (
    MAX_TOKENS,
    Catalog,
    ModelCard,
    check_token_counts,
    estimate_tokens,
    model_names,
    named_once,
    uncosted,
    usd_text,
)
from switchpoint.decision import (
    DEFAULT_COST_WEIGHT,
    ERROR,
    SCORE,
    WEAKEST_PRIOR,
    RoutingDecision,
    Usage,
    check_cost_weight,
    choose,
    hash_prompt,
    in_range,
    renewed,
    scores_dict,
)
from switchpoint.embedding import (
    MODEL_NAME,
    CachedEmbedder,
    Embedder,
    check_embedding,
    check_prompt,
    embedder_from_id,
)
from switchpoint.errors import (
    ConflictError,
    InvalidInputError,
    NoCandidatesError,
    UnknownModelError,
)
from switchpoint.learning.events import FeedbackLog, check_cost, check_tenant
from switchpoint.learning.learner import (
    BUILD_IN_EACH_PROCESS,
    Learner,
    LearningSettings,
    OutcomeResult,
)
from switchpoint.learning.memory import PendingDecision
from switchpoint.learning.overlay import CardEvidence
from switchpoint.policies import Estimates, Inputs, Policy
from switchpoint.policies.base import TablePolicy

if TYPE_CHECKING:
    from switchpoint.gateway import ChatCompletion, Gateway
    from switchpoint.registration import Door

from switchpoint.weights import (
    DEFAULT_POLICY,
    MAX_WEIGHTS_BYTES,
    WeightsPackage,
    bundled_policies,
    load_weights,
)

_Row = TypeVar("_Row")
_F = TypeVar("_F", bound=Callable[..., Any])


def bounded_batch(values: Iterable[_Row], field_name: str, noun: str,
                  per_row: int = 1) -> list[_Row]:
    """``values`` as a list of at most :data:`MAX_BATCH` // ``per_row`` items (``per_row``:
    the decisions made for each, one per cost weight), else an :class:`InvalidInputError`
    naming ``field_name`` with the count (``noun``: what an item is) and saying to split the
    batch; never more than one item over the bound is read from an iterator."""
    most = MAX_BATCH // max(1, per_row)
    count: int | None
    try:
        count = len(values)  # type: ignore[arg-type]
    except Exception:  # an iterator (or a __len__ that raises): counted as it is read
        count = None
    if count is None or count <= most:
        rows = list(islice(values, most + 1))
        if len(rows) <= most:
            return rows
    held = f"{count:,}" if count is not None else f"more than {most:,}"
    if per_row == 1:
        over = f"over the {MAX_BATCH:,} one call takes"
    else:
        made = f"{count * per_row:,}" if count is not None else f"more than {MAX_BATCH:,}"
        over = (f"which at {per_row:,} cost weights each make {made} decisions, over the "
                f"{MAX_BATCH:,} one call makes")
    raise InvalidInputError(field_name, f"holds {held} {noun}s, {over}; split the batch into "
                                        f"calls of {most:,} {noun}s or fewer")


# A method that changes what the router remembers or learned (or reads its feedback log),
# made, by a router serving in a gateway, as one request inside that gateway (see
# Gateway.admitted): closing waits for one under way, and one made once closing has begun, or
# after, is refused with the gateway's GatewayClosedError, having done nothing. A router alone
# runs it as it is.
_in_its_gateway = admitted_by(
    lambda router: None if router.gateway is None else router.gateway.admitted())


def check_route_input(prompt: object, embedding: object) -> None:
    """A routing request names exactly one of a prompt and a pre-computed embedding."""
    if prompt is None and embedding is None:
        raise InvalidInputError("prompt", "give a prompt or an embedding (there is neither)")
    if prompt is not None and embedding is not None:
        raise InvalidInputError("embedding", "give either a prompt or an embedding, not both")




def check_cache_size(size: object, field_name: str) -> int:
    """A cache's size: a whole number of entries from 0 (0 turns the cache off) to
    :data:`MAX_CACHE_ENTRIES`."""
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or not (
            0 <= int(size) <= MAX_CACHE_ENTRIES):
        raise InvalidInputError(field_name, f"must be a whole number of entries from 0 (0 turns "
                                            f"the cache off) to {MAX_CACHE_ENTRIES:,}, got "
                                            f"{json_quoted(size)}")
    return int(size)


#: The most characters a router's prompts take by default: every prompt the HTTP door's
#: default body limit takes (a character is at least a byte of the JSON that sends it).
DEFAULT_MAX_PROMPT_CHARS = DEFAULT_MAX_REQUEST_BYTES


def check_max_prompt_chars(value: object) -> int:
    """A router's ``max_prompt_chars``: a whole number of characters from 1 to
    :data:`~switchpoint._limits.MAX_BYTES`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not (
            1 <= int(value) <= MAX_BYTES):
        raise InvalidInputError("max_prompt_chars", f"must be a whole number of characters "
                                                    f"from 1 to {MAX_BYTES:,}, got "
                                                    f"{json_quoted(value)}")
    return int(value)


@dataclass
class RoutingStats:
    """Counters since the router was made (or since :meth:`Router.reset_stats`).

    ``avg_expected_error`` and ``avg_cost_score`` are means over every decision counted.
    """

    total_requests: int = 0
    cache_hits: int = 0
    model_selections: Counter[str] = field(default_factory=Counter)
    cluster_distributions: Counter[int] = field(default_factory=Counter)
    avg_expected_error: float = 0.0
    avg_cost_score: float = 0.0

    def __post_init__(self) -> None:
        for name in ("total_requests", "cache_hits"):
            count = getattr(self, name)
            expect(name, count, INTEGER, "a count")
            if count < 0:
                raise InvalidInputError(name, f"must be a count >= 0{got(count)}")
        if self.cache_hits > self.total_requests:
            raise InvalidInputError("cache_hits", f"is {self.cache_hits}, more than "
                                                  f"total_requests ({self.total_requests}); "
                                                  "a cache hit is one of the requests counted")
        for name in ("model_selections", "cluster_distributions"):
            expect(name, getattr(self, name), Counter, "a Counter")
        for name in ("avg_expected_error", "avg_cost_score"):
            expect(name, getattr(self, name), NUMBER, "a number")
        self.avg_expected_error = in_range("avg_expected_error", self.avg_expected_error,
                                           *ERROR)
        self.avg_cost_score = in_range("avg_cost_score", self.avg_cost_score, *SCORE)

    def update(self, decision: RoutingDecision, cache_hit: bool = False) -> None:
        """Count one decision."""
        self.total_requests += 1
        self.cache_hits += int(cache_hit)
        self.model_selections[decision.selected_model] += 1
        self.cluster_distributions[decision.cluster_id] += 1
        n = self.total_requests
        self.avg_expected_error += (decision.expected_error - self.avg_expected_error) / n
        self.avg_cost_score += (decision.cost_adjusted_score - self.avg_cost_score) / n

    def __repr__(self) -> str:
        """Every counter, each bounded as a decision's fields are (:func:`bounded_repr`): a
        knn router's units are its examples, so its ``cluster_distributions`` may count
        thousands; the first 12 of each, and how many more, are shown."""
        shown = ", ".join(f"{f.name}={bounded_repr(getattr(self, f.name))}"
                          for f in fields(self))
        return f"RoutingStats({shown})"

    def copy(self) -> RoutingStats:
        """An independent copy (its counters are not shared)."""
        return RoutingStats(self.total_requests, self.cache_hits, Counter(self.model_selections),
                            Counter(self.cluster_distributions), self.avg_expected_error,
                            self.avg_cost_score)

    def to_dict(self) -> dict[str, Any]:
        """The counters as JSON-ready values (cluster ids as strings, means rounded to 6
        places)."""
        return {
            "total_requests": self.total_requests,
            "cache_hits": self.cache_hits,
            "model_selections": dict(self.model_selections),
            "cluster_distributions": {str(k): v
                                      for k, v in sorted(self.cluster_distributions.items())},
            "avg_expected_error": round(self.avg_expected_error, 6),
            "avg_cost_score": round(self.avg_cost_score, 6),
        }


class DecisionCache(RemadeOnLoad):
    """LRU + TTL cache of decisions keyed on (input, λ, candidate set), each with the evidence
    behind every model's estimate (what exploration aims with). Thread-safe. Pickled, it
    travels empty (its entries are stamped by this process's clock)."""

    _remade = remade(_lock=LOCK, _entries=OrderedDict)

    def __init__(self, size: int = 10_000, ttl_seconds: float = 3600.0) -> None:
        self.size = check_cache_size(size, "cache_size")
        ttl = checked_number("cache_ttl", ttl_seconds)
        if ttl is None or not 0.0 <= ttl <= MAX_CACHE_TTL_S:
            raise InvalidInputError("cache_ttl", f"must be a number of seconds from 0 (0: no "
                                                 f"expiry) to {MAX_CACHE_TTL_S:,} (a year), got "
                                                 f"{json_quoted(ttl_seconds)}")
        self.ttl = ttl
        self._entries: OrderedDict[tuple[Any, ...], tuple[float, RoutingDecision, np.ndarray]] = (
            OrderedDict())
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> tuple[RoutingDecision, np.ndarray] | None:
        if not self.size:
            return None
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(key)
            if hit is None:
                return None
            stamp, decision, support = hit
            if self.ttl and now - stamp > self.ttl:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return decision, support

    def put(self, key: tuple[Any, ...], decision: RoutingDecision, support: np.ndarray) -> None:
        if not self.size:
            return
        with self._lock:
            self._entries[key] = (time.monotonic(), decision, support)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class Router(RemadeOnLoad):
    """Routes prompts (or pre-computed embeddings) to the model that should answer them.

    ``weights`` is a :class:`~switchpoint.WeightsPackage` (:func:`load_router` loads one for
    you). ``catalog`` names the models to route over and their prices (default: the weights' own
    models); ``embedder`` embeds prompts (default: the one the weights name, loaded on first
    use); ``cost_weight`` is the λ a request routes at when it names none (0 to 10,000; 0 is
    quality first); ``allowed_models`` limits every request's candidates (None: all).
    ``cache_size`` decisions (0 to 10,000,000; 0 turns the cache off) are kept for ``cache_ttl``
    seconds (0 to a year; 0: no expiry), and ``embedding_cache_size`` prompts' vectors (0 to
    10,000,000). A prompt may have at most ``max_prompt_chars`` characters (1 to 1,073,741,824;
    by default 1,048,576, what the HTTP door's default body limit takes): a longer one is
    refused naming it. ``learning`` (:class:`~switchpoint.learning.LearningSettings`) sets how
    outcomes teach, and ``feedback_log`` keeps them (see :meth:`report_outcome`). A wrong type,
    a value out of range, an unknown model or one named twice in a list is an
    :class:`~switchpoint.errors.InvalidInputError` (an
    :class:`~switchpoint.errors.UnknownModelError`) naming the argument.

    What it holds, to read (only :attr:`cost_weight`, :attr:`allowed_models` and
    :attr:`max_prompt_chars` are set, each checked): ``weights`` (its own copy of the package),
    ``policy``, ``catalog``, ``models`` (the catalog's names, in the order estimates list them;
    both with the models registered at run time, :meth:`register_model`, which keeps no store),
    ``embedder`` (the given one behind a cache of vectors), ``learner`` (what outcomes taught:
    ``learner.replay(events)`` rebuilds it from a feedback log), ``cache`` (the decision
    cache) and ``gateway`` (the gateway it serves in; None for a router of its own).

    A router pickles (for a ``multiprocessing`` worker) with its weights, catalog, settings,
    counters and what it learned; its locks, its embedder's loaded model and its decision
    cache are made anew in the copy. One serving in a gateway, learning into a feedback log
    or followed by a TenantRouter cannot travel: pickling it is a :class:`TypeError` saying
    so; build the router in each process then.

    A router routes from a package of its own (``weights``): the one given, with a shallow
    copy of its policy (the arrays are shared, not copied) and a copy of its provenance. So
    changing the package given once the router is built (its policy's ``set_params``, say)
    changes neither what the router chooses nor its ``weights_id``, from any thread; build a
    router from the changed package to route with it.

    A router serving in a gateway (``gateway.router``) routes, learns and calls models as that
    gateway's own methods do, each call one request inside it: :meth:`route`,
    :meth:`route_batch` (and :meth:`analyze_routing_distribution`), :meth:`estimates`,
    :meth:`report_outcome` and :meth:`route_and_execute` are waited for by its closing, and
    refused with :class:`~switchpoint.errors.GatewayClosedError` once closing has begun, or
    after, remembering, learning and logging nothing."""

    _remade = remade(_stats_lock=LOCK, _changing=LOCK)

    def _check_picklable(self) -> None:
        if self.gateway is not None:
            raise TypeError("cannot pickle a router serving in a Gateway (its store, providers "
                            f"and event loop stay in this process); {BUILD_IN_EACH_PROCESS}")
        self.learner._check_picklable()

    def __init__(
        self,
        weights: WeightsPackage,
        *,
        catalog: Catalog | None = None,
        embedder: Embedder | None = None,
        cost_weight: float = DEFAULT_COST_WEIGHT,
        allowed_models: Sequence[str] | None = None,
        cache_size: int = 10_000,
        cache_ttl: float = 3600.0,
        embedding_cache_size: int = 4096,
        learning: LearningSettings | None = None,
        feedback_log: FeedbackLog | None = None,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    ) -> None:
        expect("weights", weights, WeightsPackage,
               "a WeightsPackage (what load_weights or fit returns)")
        expect("catalog", catalog, Catalog, "a Catalog", optional=True)
        expect("embedder", embedder, Embedder, "an Embedder", optional=True)
        expect("learning", learning, LearningSettings, "LearningSettings", optional=True)
        expect("feedback_log", feedback_log, FeedbackLog,
               "a FeedbackLog (with append and replay)", optional=True)
        # Its own package: a policy changes by rebinding what it holds (set_params, add_model),
        # so a shallow copy is enough to keep changes to the given one from reaching it.
        self.weights = replace(weights, policy=copy.copy(weights.policy),
                               provenance=copy.deepcopy(weights.provenance))
        self.policy: Policy = self.weights.policy
        inner = embedder or embedder_from_id(weights.embedder_id)
        if inner.dimension != weights.dimension:
            raise InvalidInputError(
                "embedder", f"produces {inner.dimension}-d vectors but the weights expect "
                f"{weights.dimension}-d ({weights.embedder_id})")
        self.embedder = CachedEmbedder(
            inner, check_cache_size(embedding_cache_size, "embedding_cache_size"))
        self._cost_weight = check_cost_weight(cost_weight)
        self._max_prompt_chars = check_max_prompt_chars(max_prompt_chars)
        # What it routes over, replaced whole (never changed in place) as a model is
        # registered or unregistered, one change at a time: each call reads it once.
        self._view = _Catalogued.of(catalog or Catalog.from_profiles(self.policy.models_),
                                    self.policy)
        self._changing = threading.Lock()
        self._allowed_models = self._check_models(allowed_models, "allowed_models")
        self.cache = DecisionCache(cache_size, cache_ttl)
        # A table policy also learns the outcomes of catalog models it has no profile for.
        cards = self._view.map.unprofiled() if isinstance(self.policy, TablePolicy) else []
        self.learner = Learner(self.policy, learning, log=feedback_log,
                               resolve=self._learnable_profile,
                               cards=[c for c in cards if c not in self.policy.models_])
        # The gateway this router serves in, if any (it sets this): see route_and_execute.
        self.gateway: Gateway | None = None
        self._stats = RoutingStats()
        self._stats_lock = threading.Lock()

    @property
    def cost_weight(self) -> float:
        """The λ a request routes at when it names none. Setting it checks it as the
        constructor does: a NaN, negative or non-numeric λ, or one over 10,000, is an
        :class:`InvalidInputError` and the router keeps the λ it had."""
        return self._cost_weight

    @cost_weight.setter
    def cost_weight(self, value: float) -> None:
        self._cost_weight = check_cost_weight(value)

    @property
    def max_prompt_chars(self) -> int:
        """The most characters a prompt routed may have. Setting it checks it as the
        constructor does (a gateway raises it to its ``max_request_bytes``, so it routes every
        prompt its body limit takes)."""
        return self._max_prompt_chars

    @max_prompt_chars.setter
    def max_prompt_chars(self, value: int) -> None:
        self._max_prompt_chars = check_max_prompt_chars(value)

    def _prompt(self, value: object, field: str = "prompt") -> str:
        """``value`` as a prompt to route (:func:`~switchpoint.embedding.check_prompt`),
        refused naming ``field`` when it is over :attr:`max_prompt_chars` characters."""
        if isinstance(value, str):
            value = plain_str(value)  # (its own characters counted, whatever __len__ says)
        if isinstance(value, str) and len(value) > self._max_prompt_chars:
            raise InvalidInputError(field, (
                f"is {len(value):,} characters, over the {self._max_prompt_chars:,} a prompt "
                "may have; send the end of a long prompt (the router reads only its last "
                "part), or raise max_prompt_chars (Router(..., max_prompt_chars=...) or "
                f"load_router(..., max_prompt_chars=...), at most {MAX_BYTES:,})"))
        return check_prompt(value, field)

    @property
    def allowed_models(self) -> list[str] | None:
        """The models routing may choose from (None: every model of the catalog). Setting it
        checks it as the constructor does: an empty list, an unknown model, a model named
        twice or a wrong type is an error naming ``allowed_models``, and the router keeps the
        list it had."""
        return None if self._allowed_models is None else list(self._allowed_models)

    @allowed_models.setter
    def allowed_models(self, value: Sequence[str] | None) -> None:
        # (one change at a time with a model's registration or removal: a model unregistered
        # while the list was checked would be named by it, though no model has its name)
        with self._changing:
            self._allowed_models = self._check_models(value, "allowed_models")

    @functools.cached_property
    def weights_id(self) -> str:
        """The id of the weights this router was built from (a hash of every array, computed
        once: the service logs it with every decision and outcome)."""
        return self.weights.weights_id

    @property
    def unprofiled_models(self) -> list[str]:
        """The catalog models ``auto`` may choose that these weights have no learned profile
        for: routed by their tier and price alone until they are labelled (``switchpoint
        label``, ``add-model``). A model kept out of ``auto`` (a judge) is never routed, so it
        is not one of them."""
        view = self._view
        routed = set(view.catalog.routed)
        return [m for m in view.map.unprofiled() if m in routed]

    @property
    def catalog(self) -> Catalog:
        """The models it routes over, their prices and the rest of their cards: the catalog
        it was built with, and the models registered since (:meth:`register_model`)."""
        return self._view.catalog

    @property
    def models(self) -> list[str]:
        """The catalog's names, in the order estimates list them."""
        return self._view.models

    # Models registered at run time -------------------------------------------------------------

    def register_model(self, card: ModelCard | Mapping[str, Any] | str, /,
                       **keys: Any) -> ModelCard:
        """Add a model to the catalog at run time, without labels for it: ``card`` is a
        :class:`~switchpoint.catalog.ModelCard`, a mapping of a config ``models:`` entry's keys
        (``name``, ``tier``, ``input_per_mtok``, ``output_per_mtok``, ``profile``,
        ``capabilities``, ``auto``, ...), or the model's name with those keys as keyword
        arguments (``router.register_model("newbie", tier="simple", input_per_mtok=0.2,
        output_per_mtok=0.8)``). The card is read by the rules the gateway's
        :meth:`~switchpoint.gateway.Gateway.register_model` reads one by
        (:func:`switchpoint.registration.model_card`), then with the catalog by the
        catalog's.

        Weights without a profile of it route it by its tier and price, as the gateway does:
        its expected error is its tier's profiled models' mean on each prompt (the weakest
        profiled model's, as uncertain as they disagree, without a tier), its cost its price,
        read beside the other models' prices: so such a card joins only a router built with
        a catalog that prices every model (``catalog=``); a router routing over its weights'
        own profiles (``load_router()`` without a catalog) takes a card whose ``profile``
        names one of them.
        A table policy's router (cluster, tiers, tfidf) learns from its outcomes
        (:meth:`report_outcome`), which move that estimate; one whose ``profile`` names a
        weights profile routes on that profile. It joins the catalog after the others, in one
        step: a call under way routes on the catalog it began with, the next one on the new
        catalog (decisions cached before are not served after).

        A router keeps no store: what is registered lives in this router only. A new router
        (a restart) has its own catalog; register the models again before it replays a
        feedback log holding their outcomes (``learner.replay`` refuses an outcome of a model
        it does not know). A router serving in a gateway registers through it
        (``Gateway.register_model``, kept in ``data_dir``).

        Returns the card as it joined the catalog. Refused, with nothing changed: an
        :class:`~switchpoint.errors.InvalidInputError` naming the key at fault (a card
        without prices that would be routed on them, a fallback naming no model, a name
        past the rule of a model's name ...), a :class:`~switchpoint.errors.ConflictError`
        for a name taken (by the catalog, or a model registered), no room left
        (:data:`~switchpoint.registration.MAX_REGISTERED_MODELS` registered at once), a card
        that would take another model's learned profile by its name alone, or a router
        serving in a gateway."""
        # (the config's rules, read with pydantic: loaded by the first registration, not by
        # every program that imports the router)
        from switchpoint.registration import LIBRARY, model_card

        if isinstance(card, str):
            given: object = {"name": card, **keys}
        elif keys:
            raise InvalidInputError("card", "give a card (a ModelCard or a mapping of its keys), "
                                            "or a model's name with its keys as keyword "
                                            f"arguments, not both (got {listed_names(keys)})")
        elif isinstance(card, ModelCard):
            given = {f.name: list(v) if isinstance(v, tuple) else v
                     for f in fields(card) if (v := getattr(card, f.name)) is not None}
        else:
            given = card
        return self.join_model(model_card(given, LIBRARY).card())

    def join_model(self, card: ModelCard, door: Door | None = None) -> ModelCard:
        """Add ``card``, read already by the rules of a card
        (:func:`switchpoint.registration.model_card`), to the catalog: what
        :meth:`register_model` does once it has read its card, by the same rules and with the
        same refusals, spoken in ``door``'s words (the library's by default). A gateway reads
        a card by its own door (its config says which hosts a card may name), then registers
        it here, in a copy of its live router (:meth:`unlearned_copy`) that goes live once
        ``data_dir`` keeps the card."""
        from switchpoint.registration import (
            LIBRARY,
            card_error,
            check_catalog,
            check_free,
            check_own_profile,
            check_room,
        )

        expect("card", card, ModelCard, "a ModelCard")
        door = door or LIBRARY
        new = card
        with self._changing:
            self._check_own_catalog("card", "register the model with Gateway.register_model")
            view = self._view
            check_free(new.name, registered=view.registered,
                       built=set(view.models) - set(view.registered),
                       where="this router's catalog as it was built", unregister=_UNREGISTER,
                       change="build a Router with a catalog of the card you want")
            check_room(len(view.registered), unregister=_UNREGISTER,
                       instead="build a Router with a catalog that lists them")
            check_own_profile(new, view.catalog.cards, door)
            self._check_priced(new, view)
            cards = [*view.catalog.cards, new]
            try:
                check_catalog(cards, door)
                catalog = Catalog(cards, view.catalog.expected_output_tokens)
                changed = _Catalogued.of(catalog, self.policy, (*view.registered, new.name),
                                         view.revision + 1)
            except InvalidInputError as exc:
                raise card_error(exc, len(view.models), new.name) from None
            if isinstance(self.policy, TablePolicy) and new.name in changed.map.unprofiled_index:
                # (learned before it can be chosen, so its first outcome is never refused)
                try:
                    self.learner.add_cards([new.name])
                except InvalidInputError as exc:
                    raise InvalidInputError("card", exc.reason) from None
            self._view = changed
        return new

    def unlearned_copy(self, registered: Sequence[str] = (), *,
                       catalog: Catalog | None = None) -> Router:
        """A router of this one's weights, catalog (a model registered in it is one of the
        catalog it was built with, but those named in ``registered``), embedder (the same
        one, loaded and warm) and settings that has learned, counted and cached nothing and
        serves in no gateway. A gateway makes a change of its catalog in one
        (:meth:`join_model`, or :meth:`unregister_model` of a model it names in
        ``registered``, those of the catalog it registered at run time), beside its live
        router, and puts it live once ``data_dir`` keeps the change, having it take up the
        feedback log first; it reads no weights anew, as a load does. ``catalog``: the copy's
        catalog instead of this one's (an experiment arm's router of the gateway's catalog
        as it changed), checked as a router's is built."""
        expect("catalog", catalog, Catalog, "a Catalog", optional=True)
        copy = type(self)(
            self.weights, catalog=self.catalog if catalog is None else catalog,
            embedder=self.embedder.inner,
            cost_weight=self._cost_weight, allowed_models=self._allowed_models,
            cache_size=self.cache.size, cache_ttl=self.cache.ttl,
            embedding_cache_size=self.embedder.size, learning=self.learner.settings,
            max_prompt_chars=self._max_prompt_chars)
        if "weights_id" in self.__dict__:  # (the same arrays: not hashed again)
            copy.__dict__["weights_id"] = self.weights_id
        # (models of the copy's catalog, each named once, as every list of models is checked)
        held = set(copy._check_models(registered if registered != () else None,
                                      "registered") or ())
        if held:
            copy._view = replace(copy._view, registered=tuple(
                n for n in copy.catalog.names if n in held))
        return copy

    def _check_own_catalog(self, param: str, instead: str) -> None:
        """Refuse a change of the catalog of a router serving in a gateway (a
        :class:`ConflictError` naming ``param``, saying to do ``instead``): the gateway makes
        its router's catalog anew at each reload, with the models registered through it."""
        if self.gateway is not None:
            raise ConflictError(f"{param}: this router serves in a gateway, whose catalog is "
                                f"made anew at each reload; {instead} (kept in data_dir)",
                                param=param)

    def _check_priced(self, card: ModelCard, view: _Catalogued) -> None:
        """Refuse ``card`` where prices would be missing: a catalog priced throughout prices
        every request by its models' prices, which a card without any would end for every
        model; and the card may not be one nothing would cost beside the catalog (the
        catalog's rule, :func:`~switchpoint.catalog.uncosted`, said of the card)."""
        profiles = list(self.policy.models_)
        if not card.priced and view.map.priced:
            raise InvalidInputError("input_per_mtok", (
                f"model {json_quoted(card.name, 100)} has no prices, and the catalog prices "
                "every request by its models' prices; give it input_per_mtok and "
                "output_per_mtok (USD per million tokens; 0 for a free model)"))
        if card.name not in uncosted([*view.catalog.cards, card], profiles):
            return
        if card.priced:
            raise InvalidInputError("card", (
                f"model {json_quoted(card.name, 100)} has no learned profile in these weights "
                "(so it is routed by its price), and this router's catalog does not price "
                "every model (costs come from the weights' profiles); give it a profile among "
                f"{listed_names(profiles, quoted=True)}, or build the Router with a Catalog "
                "that prices every model"))
        raise InvalidInputError("input_per_mtok", (
            f"model {json_quoted(card.name, 100)} has no prices, and no learned profile in "
            "these weights to cost it by; give input_per_mtok and output_per_mtok (USD per "
            "million tokens)"))

    def unregister_model(self, name: str, door: Door | None = None) -> ModelCard:
        """Take model ``name``, registered with :meth:`register_model`, out of the catalog, in
        one step (a call under way routes on the catalog it began with); returns its card.
        What its outcomes taught stays with the router, taken up again if a model of its name
        is registered again (as a gateway replaying its feedback log does). Refused, with
        nothing changed: a model of the catalog the router was built with
        (:class:`~switchpoint.errors.ConflictError`: build a router without it), a name no
        model registered has (:class:`~switchpoint.errors.NotFoundError`, listing those
        registered), a model still named by :attr:`allowed_models` or another model's
        fallbacks, and a router serving in a gateway (:class:`~switchpoint.errors.ConflictError`:
        unregister it through the gateway). The refusals are spoken in ``door``'s words (the
        library's by default), as :meth:`join_model`'s are."""
        from switchpoint.registration import LIBRARY, check_catalog, not_registered, still_named

        expect("name", name, str, "the name of a model registered with register_model")
        door = door or LIBRARY
        with self._changing:
            self._check_own_catalog("name", "unregister the model with "
                                            "Gateway.unregister_model")
            view = self._view
            if name not in view.registered:
                raise not_registered(
                    name, view.registered, built=name in view.catalog,
                    where="this router's catalog as it was built",
                    change="build a Router with a catalog without it (training.remove_model "
                           "takes a model's profile out of the weights)")
            if name in (self._allowed_models or ()):
                raise ConflictError(f"name: model {json_quoted(name, 100)} is named by "
                                    "allowed_models; set router.allowed_models without it "
                                    "first", param="name")
            card = view.catalog[name]
            cards = [c for c in view.catalog.cards if c.name != name]
            try:
                check_catalog(cards, door)
                catalog = Catalog(cards, view.catalog.expected_output_tokens)
                changed = _Catalogued.of(catalog, self.policy,
                                         tuple(n for n in view.registered if n != name),
                                         view.revision + 1)
            except InvalidInputError as exc:
                raise still_named(name, exc, door) from None
            self._view = changed
        return card

    # Public API --------------------------------------------------------------------------------

    @_in_its_gateway
    def route(
        self,
        prompt: str | None = None,
        available_models: Sequence[str] | None = None,
        cost_weight_override: float | None = None,
        *,
        embedding: Sequence[float] | np.ndarray | None = None,
        tenant: str | None = None,
        estimate_tokens: Sequence[int] | None = None,
    ) -> RoutingDecision:
        """Route one prompt, or one pre-computed embedding (then the embedder is skipped).

        ``tenant`` routes with what that tenant's outcomes taught (None: the deployment's own);
        the decision is remembered for :meth:`report_outcome`. ``estimate_tokens`` =
        ``(input_tokens, output_tokens)`` prices the request from those tokens with the
        catalog's prices, as any request is priced (the decision's ``expected_cost``,
        ``expected_costs`` and the costs its scores weigh), instead of from the prompt's
        UTF-8 bytes / 4 and ``expected_output_tokens``; a catalog without prices for every model
        cannot, and is refused."""
        t0 = time.perf_counter()
        check_route_input(prompt, embedding)
        tenant_key = check_tenant(tenant)
        view = self._view  # (read once: a model registered meanwhile joins the next call)
        tokens = self._estimate_tokens(estimate_tokens, view)
        policy, learned, cards = self.learner.view(tenant_key)
        # (a decision cached before router.policy.set_params(...), or before a model was
        # registered or unregistered, is no answer after it)
        revision = (learned, self.policy.params_revision, view.revision)
        lam = self.cost_weight if cost_weight_override is None else check_cost_weight(
            cost_weight_override, "cost_weight_override")
        mask = self._candidates(available_models, view)
        if embedding is not None:
            if self.policy.requires == "text":
                Inputs(embeddings=np.zeros((1, 1), np.float32)).require("text", self.policy.name)
            vector = check_embedding(embedding, self.weights.dimension)
            key: tuple[Any, ...] = ("e", hashlib.sha256(vector.tobytes()).digest(), lam,
                                    mask.tobytes(), tenant_key, revision, tokens)
            text = None
            prompt_hash = ""
        else:
            text = self._prompt(prompt)
            prompt_hash = hash_prompt(text)  # (the cache's key too: the same text, the same hit)
            key = ("p", prompt_hash, lam, mask.tobytes(), tenant_key, revision, tokens)
            vector = None
        hit = self.cache.get(key)
        if hit is not None and self.learner.memory.capacity and self.learner.memory.get(
                hit[0].decision_id) is None:
            hit = None  # its decision is forgotten: one served from it could take no feedback
        if hit is not None:
            cached, support = hit
            decision = renewed(cached, cache_hit=True, decision_id=uuid.uuid4().hex, usage=Usage(
                routing_ms=round((time.perf_counter() - t0) * 1e3, 4), embedding_ms=0.0))
            decision = self._serve(decision, tenant_key, mask, support,
                                   source_id=cached.decision_id, view=view)
            self._count([decision], cache_hit=True)
            return decision
        embedding_ms = 0.0
        if vector is None and self.policy.requires == "embedding":
            t1 = time.perf_counter()
            # The tenant's own cached vectors only: a hit is faster, and would tell this
            # tenant that another had sent the prompt.
            vector = self.embedder.embed([text or ""], scope=tenant_key)
            embedding_ms = (time.perf_counter() - t1) * 1e3
        inputs = Inputs(texts=None if text is None else [text], embeddings=vector)
        est = view.map.estimate(policy.estimate(inputs), inputs.texts, cards, tokens=tokens)
        decision = self._decide(est, 0, mask, lam, view, prompt_hash)
        total_ms = (time.perf_counter() - t0) * 1e3
        decision.usage = Usage(routing_ms=round(total_ms - embedding_ms, 4),
                               embedding_ms=round(embedding_ms, 4))
        self.cache.put(key, decision, est.support[0])
        self._remember(decision, tenant_key, mask, est, 0, vector, text, view)
        decision = self._serve(decision, tenant_key, mask, est.support[0],
                               source_id=decision.decision_id, view=view)
        self._count([decision])
        return decision

    def check_estimate_tokens(self, value: object) -> tuple[int, int] | None:
        """``value`` as :meth:`route`'s ``estimate_tokens`` (None: none given): two whole
        numbers of tokens, and a catalog with prices for every model to price them with."""
        return self._estimate_tokens(value, self._view)

    def _estimate_tokens(self, value: object, view: _Catalogued) -> tuple[int, int] | None:
        if value is None:
            return None
        tokens = check_token_counts(value)
        if not view.map.priced:
            unpriced = [c.name for c in view.catalog.cards if not c.priced]
            raise InvalidInputError(
                "estimate_tokens", f"prices a request with the catalog's prices, and "
                f"{listed_names(unpriced, 5, quoted=True)} "
                f"{'has' if len(unpriced) == 1 else 'have'} none "
                "(costs come from the weights' profiles); give every model input_per_mtok "
                "and output_per_mtok, or leave estimate_tokens out")
        return tokens

    @_in_its_gateway
    def route_batch(
        self,
        prompts: Sequence[str] | None = None,
        available_models: Sequence[str] | None = None,
        cost_weight_override: float | None = None,
        *,
        embeddings: Sequence[Sequence[float]] | np.ndarray | None = None,
        cost_weights: Sequence[float] | None = None,
        tenant: str | None = None,
    ) -> list[RoutingDecision]:
        """Route many prompts, embedding them in one pass.

        With ``cost_weights`` the whole batch is decided once per λ (embedded once) and the result
        is row-major: all prompts for the first λ, then all for the second, and so on.

        One call makes at most :data:`MAX_BATCH` (10,000) decisions, prompts times cost
        weights; a bigger batch is refused, naming ``prompts`` (or ``embeddings``,
        ``cost_weights``) and the count, before anything is embedded: route it in parts.
        """
        t0 = time.perf_counter()
        tenant_key = check_tenant(tenant)
        lams = [self.cost_weight if cost_weight_override is None else check_cost_weight(
            cost_weight_override, "cost_weight_override")]
        if cost_weights is not None:
            if cost_weight_override is not None:  # (it would be ignored)
                raise InvalidInputError(
                    "cost_weights", "give cost_weights (the λ of each pass over the batch) or "
                                    "cost_weight_override (one λ), not both; put that λ among "
                                    "the cost_weights to have it too")
            if isinstance(cost_weights, (str, bytes, bytearray, memoryview, Mapping, Set)) or \
                    not isinstance(cost_weights, Iterable):
                raise InvalidInputError(
                    "cost_weights", "must be a list of numbers >= 0, in the order the results "
                    f"come in, got {type(cost_weights).__name__}")
            lams = [check_cost_weight(v, f"cost_weights[{i}]") for i, v in enumerate(
                bounded_batch(cost_weights, "cost_weights", "cost weight"))]
            if not lams:
                raise InvalidInputError("cost_weights", "is empty; give at least one λ, or omit "
                                                        "it to route at the router's own")
        view = self._view
        mask = self._candidates(available_models, view)
        inputs, embedding_ms = self.prepare(prompts, embeddings, tenant=tenant_key,
                                            per_row=len(lams))
        n = len(inputs)
        if n == 0:
            return []
        est = self._estimates(inputs, tenant_key, view)
        hashes = ([""] * n if inputs.texts is None
                  else [hash_prompt(text) for text in inputs.texts])
        decisions: list[RoutingDecision] = []
        for lam in lams:
            for i in range(n):
                d = self._decide(est, i, mask, lam, view, hashes[i])
                self._remember(d, tenant_key, mask, est, i, inputs.embeddings,
                               None if inputs.texts is None else inputs.texts[i], view)
                decisions.append(self._serve(d, tenant_key, mask, est.support[i],
                                             source_id=d.decision_id, view=view))
        per_ms = ((time.perf_counter() - t0) * 1e3 - embedding_ms) / max(1, len(decisions))
        per_emb = embedding_ms / n
        for d in decisions:
            d.usage = Usage(routing_ms=round(per_ms, 4), embedding_ms=round(per_emb, 4))
        self._count(decisions)
        return decisions

    @_in_its_gateway
    def estimates(
        self,
        prompts: Sequence[str] | None = None,
        *,
        embeddings: Sequence[Sequence[float]] | np.ndarray | None = None,
        tenant: str | None = None,
    ) -> Estimates:
        """What routing decides from, for a batch of prompts (or embeddings): each catalog
        model's expected error, cost, support and standard error (columns in :attr:`models`),
        with what ``tenant``'s outcomes taught. For analysis and evaluation; nothing is
        remembered or counted. At most :data:`MAX_BATCH` (10,000) prompts a call."""
        inputs, _ = self.prepare(prompts, embeddings, tenant=tenant)
        return self._estimates(inputs, check_tenant(tenant), self._view)

    def _estimates(self, inputs: Inputs, tenant: str, view: _Catalogued) -> Estimates:
        policy, _, cards = self.learner.view(tenant)
        return view.map.estimate(policy.estimate(inputs), inputs.texts, cards)

    def prepare(
        self,
        prompts: Sequence[str] | None,
        embeddings: Sequence[Sequence[float]] | np.ndarray | None = None,
        *,
        tenant: str | None = None,
        per_row: int = 1,
    ) -> tuple[Inputs, float]:
        """Validate a batch and embed it (if the policy needs vectors), for ``tenant`` (whose
        cached vectors alone it may reuse; None: the deployment's own). Returns (inputs, ms).
        A batch of more than :data:`MAX_BATCH` // ``per_row`` rows (``per_row``: the decisions
        each will make) is refused before anything is embedded."""
        if prompts is None and embeddings is None:
            raise InvalidInputError("prompts", "give a list of prompts or of embeddings")
        if isinstance(prompts, (str, bytes)):
            raise InvalidInputError("prompts", f"must be a list of strings, got "
                                               f"{type(prompts).__name__}; pass [prompt] for one "
                                               "prompt (or route it with route())")
        if isinstance(prompts, Mapping):
            raise InvalidInputError("prompts", f"must be a list of strings, got "
                                               f"{type(prompts).__name__}, a mapping whose keys "
                                               "would be routed as prompts; pass a list of the "
                                               "prompt texts")
        if isinstance(prompts, Set):
            raise InvalidInputError("prompts", f"must be a list of strings, got "
                                               f"{type(prompts).__name__}, whose order is "
                                               "not kept; pass a list (the decisions come back "
                                               "in the prompts' order)")
        if prompts is not None and not isinstance(prompts, Iterable):
            raise InvalidInputError("prompts", f"must be a list of strings, got "
                                               f"{type(prompts).__name__}")
        if embeddings is not None and (isinstance(embeddings, (str, bytes, Mapping))
                                       or not isinstance(embeddings, Iterable)):
            raise InvalidInputError("embeddings", "must be a list of vectors (lists of numbers) "
                                                  "or a 2-D NumPy array, got "
                                                  f"{type(embeddings).__name__}")
        texts = None if prompts is None else [
            self._prompt(p, f"prompts[{i}]")
            for i, p in enumerate(bounded_batch(prompts, "prompts", "prompt", per_row))]
        vectors = None
        if embeddings is not None:
            rows = [check_embedding(v, self.weights.dimension, f"embeddings[{i}]")
                    for i, v in enumerate(bounded_batch(embeddings, "embeddings", "embedding",
                                                        per_row))]
            vectors = np.vstack(rows) if rows else np.zeros((0, self.weights.dimension),
                                                             np.float32)
            if texts is not None and len(texts) != len(rows):
                raise InvalidInputError("embeddings", "must align with prompts, one per prompt")
        if vectors is None and texts is None:
            raise InvalidInputError("prompts", "give a list of prompts or of embeddings")
        if self.policy.requires == "text" and texts is None:
            Inputs(embeddings=vectors).require("text", self.policy.name)
        ms = 0.0
        if vectors is None and self.policy.requires == "embedding" and texts:
            t1 = time.perf_counter()
            vectors = self.embedder.embed(texts, scope=check_tenant(tenant))
            ms = (time.perf_counter() - t1) * 1e3
        elif vectors is None and self.policy.requires == "embedding":  # no prompts: no rows
            vectors = np.zeros((0, self.weights.dimension), np.float32)
        return Inputs(texts=texts, embeddings=vectors), ms

    @_in_its_gateway
    def report_outcome(
        self,
        decision_id: str,
        quality_score: float | None = None,
        success: bool | None = None,
        *,
        model: str | None = None,
        tenant: str | None = None,
        cost: float | None = None,
    ) -> OutcomeResult:
        """Learn how a decision went: a quality in ``[0, 1]`` or a success flag (exactly one).

        ``model`` is the model that answered (default: the one the decision chose); ``tenant``,
        if given, must be the tenant the decision was routed for. ``cost``, if known, is what
        the answer cost, and it teaches that model's cost on the prompt's units, as its quality
        teaches its error. Without catalog prices it is in the weights' cost units (USD per
        request for the bundled weights). With them it is in the catalog's currency (USD), and
        what it teaches is how much dearer or cheaper than its flat price (the prompt's tokens
        as the decision priced them, and ``expected_output_tokens``) that model's answers run
        on such prompts: the factor the router prices those prompts by. The outcome updates
        that tenant's posterior (the weights themselves change only through an explicit
        export); a second outcome for the same decision replaces the first (``replaced`` says
        so), keeping the cost reported before unless it gives one. With a ``feedback_log`` the
        outcome is appended to it first, and learned only once the log keeps it (an error the
        log raises leaves nothing learned). An unknown or forgotten ``decision_id`` raises
        :class:`DecisionNotFoundError`.

        ``decision_id`` is the decision's id (32 lowercase hexadecimal digits) or its
        ``prompt_hash`` (64: the SHA-256 of the prompt it routed on). A prompt hash names the
        latest remembered decision routed on that prompt (``tenant``'s latest, if given), and
        the outcome is learned and logged exactly as that decision id's
        (:attr:`OutcomeResult.decision_id <switchpoint.learning.learner.OutcomeResult>` says
        which); a hash no remembered decision has raises :class:`DecisionNotFoundError` saying
        so, and a string of neither shape is an :class:`InvalidInputError` naming
        ``decision_id``.
        """
        expect("model", model, str, "a catalog model's name", optional=True)
        if model is not None:
            self._check_models([model], "model")
        measured = check_cost(cost)
        # (an unknown decision, or a value of neither shape, is refused by the learner)
        entry = self.learner.lookup(decision_id, tenant) if isinstance(decision_id, str) else None
        if entry is not None:  # (a prompt hash: the decision it names now, learned as one)
            decision_id = entry.decision_id
        if measured is not None and self._view.map.priced and entry is not None:
            measured = self.learnable_cost(model or entry.chosen, measured, entry.prompt_tokens)
        return self.learner.report(decision_id, quality_score, success, model=model,
                                   tenant=tenant, cost=measured)

    def learnable_cost(self, model: str, cost: float, prompt_tokens: int | None) -> float | None:
        """What catalog model ``model``'s answer costing ``cost`` teaches, in the weights' cost
        units. Without catalog prices ``cost`` already is in them. With prices it is USD, read
        against the flat price of a prompt of ``prompt_tokens`` (as the router estimated them;
        None: a reference size): an answer that cost twice that teaches twice the profile's
        mean cost. None when ``model`` has no profile or no price to read it against;
        :class:`InvalidInputError` when ``cost`` is beyond any answer's (over
        ``MAX_PRICE_RATIO`` times that flat price)."""
        expect("model", model, str, "a catalog model's name")
        measured = check_cost(cost)  # (a number, finite, >= 0, no more than an answer costs)
        if measured is None:
            raise InvalidInputError("cost", "must be a number (what the answer cost), got None")
        expect("prompt_tokens", prompt_tokens, INTEGER, "a count of tokens", optional=True)
        if prompt_tokens is not None and not 0 <= prompt_tokens <= MAX_TOKENS:
            raise InvalidInputError("prompt_tokens", f"must be a count of tokens from 0 to "
                                                     f"{MAX_TOKENS:,}, got "
                                                     f"{json_quoted(prompt_tokens)}")
        view = self._view
        if not view.map.priced:
            return measured
        if model not in view.catalog:  # (unregistered since its decision)
            return None
        return view.map.weights_cost(model, measured, prompt_tokens)

    def rebased_cost(self, profile: str, cost: float, source: Router | None) -> float | None:
        """A cost that ``source`` learned for ``profile`` (in its weights' cost units), in
        this router's. Without catalog prices the weights' units are the same (USD per
        request), so it is ``cost``. With prices both routers read the same USD against the
        same flat price, each times its profile's mean cost, so it scales by the ratio of
        those means. None when that cannot be known: ``source`` is not loaded (weights since
        replaced), or either lacks the profile."""
        expect("profile", profile, str, "a profile's name")
        expect("cost", cost, NUMBER, "a number (a learned cost)")
        expect("source", source, Router, "the Router that learned the cost", optional=True)
        if not self._view.map.priced:
            return cost
        if source is None:
            return None
        mine = self.policy.global_cost().get(profile)
        theirs = source.policy.global_cost().get(profile)
        if mine is None or theirs is None or not theirs > 0 or not np.isfinite(mine):
            return None
        return float(cost * mine / theirs)

    def prompt_tokens(self, text: str | None) -> int:
        """A prompt's tokens as this router prices requests (a reference size without a
        text)."""
        expect("text", text, str, "a prompt's text", optional=True)
        return _CardMap.prompt_tokens(text)

    def cost_scale(self, available_models: Sequence[str] | None = None) -> float:
        """The cost that λ = 1 weighs as one unit of error among ``available_models`` (default:
        every allowed model): the reference cost of the dearest of them (see :mod:`decision`)."""
        view = self._view
        return view.map.cost_scale(self._candidates(available_models, view))

    def cost_scale_of(self, models: Sequence[str]) -> float:
        """The cost scale of ``models`` (as :meth:`cost_scale`: the reference cost of the
        dearest), those a decision weighed, say: a model the catalog no longer holds (one
        unregistered since) is left out, as is one it holds that is not named; 0 when none
        is left."""
        names = model_names(models, "models") or []
        view = self._view
        mask = np.isin(view.models, names)
        return view.map.cost_scale(mask) if mask.any() else 0.0

    def get_best_model_for_cluster(self, cluster_id: int,
                                   available_models: Sequence[str] | None = None,
                                   cost_weight_override: float | None = None) -> str:
        """The model that minimises ``error + λ·cost`` on one cluster (or tier / example),
        among ``available_models`` (default: every allowed model), at ``cost_weight_override``
        (default: the router's λ)."""
        lam = self.cost_weight if cost_weight_override is None else check_cost_weight(
            cost_weight_override, "cost_weight_override")
        unit = self.policy.check_unit(cluster_id, "cluster_id")
        view = self._view
        est = view.map.estimate(self.policy.unit_estimate(unit), None)
        return self._decide(est, 0, self._candidates(available_models, view), lam,
                            view).selected_model

    def route_and_execute(
        self,
        prompt: str,
        messages: Sequence[Mapping[str, Any]] | None = None,
        *,
        gateway: Gateway | None = None,
        available_models: Sequence[str] | None = None,
        cost_weight_override: float | None = None,
        **kwargs: Any,
    ) -> ChatCompletion:
        """Route ``prompt``, then answer ``messages`` (default: ``prompt`` as one user turn)
        with the chosen model through a :class:`~switchpoint.gateway.Gateway`: retried, failed
        over to the next-best candidates, pinned and logged as the HTTP gateway does, as one
        request inside that gateway (closing waits for it; once closing has begun it is refused
        with :class:`~switchpoint.errors.GatewayClosedError`, nothing routed).

        ``gateway`` defaults to the one this router serves in (a router loaded by a gateway
        knows it); a router loaded alone has no upstreams, so pass one
        (``Gateway.from_config("switchpoint.yaml")``). ``kwargs`` are OpenAI parameters
        (temperature, max_tokens, ...). Returns the OpenAI-shaped answer; its
        ``switchpoint.decision`` is this router's decision. A ``prompt`` or ``messages`` over
        the gateway's ``max_request_bytes`` is refused before it is routed, as the HTTP
        gateway refuses it.
        """
        from switchpoint.errors import NoUpstreamError

        expect("prompt", prompt, str, "a prompt's text")
        if messages is not None and (isinstance(messages, (str, bytes, Mapping))
                                     or not isinstance(messages, Sequence)):
            raise InvalidInputError("messages", "must be a list of chat messages ({'role': ..., "
                                                f"'content': ...}}), got {type(messages).__name__}")
        if gateway is not None:
            from switchpoint.gateway import Gateway

            expect("gateway", gateway, Gateway, "a Gateway (Gateway.from_config(...))")
        gateway = gateway or self.gateway
        if gateway is None:
            raise NoUpstreamError(
                "this router has no gateway to call models through; build one with "
                "Gateway.from_config('switchpoint.yaml') (its `models:` say where each model "
                "lives) and pass gateway=, or use gateway.router")
        with gateway.admitted():  # (its route and its call: one request, which closing awaits)
            gateway.check_serves_chat()  # (before anything is routed)
            available_models = model_names(available_models, "available_models")  # (read once)
            # The gateway's bound on a request's size, before anything is routed: the prompt as
            # a routing request's, the messages (when not the prompt) as a chat request's.
            gateway.check_size({"prompt": prompt, "available_models": available_models,
                                "cost_weight_override": cost_weight_override}, route=True)
            if messages is not None:
                gateway.check_size({"messages": list(messages)})
            decision = self.route(prompt, available_models, cost_weight_override)
            turns = messages if messages is not None else [{"role": "user", "content": prompt}]
            return gateway.complete(turns, decision=decision, **kwargs)

    @staticmethod
    def explain(decision: RoutingDecision) -> str:
        """``decision`` in plain English (:meth:`RoutingDecision.explain`): the model chosen and
        the confidence, any escalation, the basis, the reasoning, the estimated cost and
        score, the evidence and the alternatives weighed."""
        expect("decision", decision, RoutingDecision, "a RoutingDecision (what route() "
                                                      "returned)")
        return decision.explain()

    def analyze_routing_distribution(
        self, prompts: Sequence[str], available_models: Sequence[str] | None = None
    ) -> dict[str, int]:
        """How a batch of prompts would be spread over models: ``{model: count}``. At most
        :data:`MAX_BATCH` (10,000) prompts a call, as :meth:`route_batch` routes."""
        counts = Counter(d.selected_model for d in self.route_batch(prompts, available_models))
        return dict(counts.most_common())

    @property
    def stats(self) -> RoutingStats:
        """The routing counters since the router was made or :meth:`reset_stats`: a copy,
        which later routing does not change."""
        with self._stats_lock:
            return self._stats.copy()

    def reset_stats(self) -> None:
        """Zero the routing counters."""
        with self._stats_lock:
            self._stats = RoutingStats()

    def warm_up(self) -> None:
        """Load the embedding model now so the first request does not pay for it."""
        if self.policy.requires == "embedding":
            self.embedder.warm_up()

    # Internals ---------------------------------------------------------------------------------

    def outcome_profile(self, model: str) -> str | None:
        """What an outcome of catalog model ``model`` teaches: its learned profile, or, for a
        model without one, the model itself (a table policy moves its tier prior by its
        outcomes). None when its outcomes cannot be learned."""
        expect("model", model, str, "a catalog model's name")
        catalog = self._view.catalog
        profile = catalog.profile_of(model) if model in catalog else model
        if profile in self.policy.models_:
            return profile
        return model if model in self.learner.cards else None

    def _learnable_profile(self, model: str) -> str:
        """:meth:`outcome_profile`, refusing a model whose outcomes cannot be learned."""
        profile = self.outcome_profile(model)
        if profile is None:
            raise InvalidInputError(
                "model", f"{json_quoted(model)} has no learned profile in these weights, and the "
                f"{json_quoted(self.policy.name)} policy learns only its profiled models' "
                "outcomes; label it with `switchpoint add-model` first")
        return profile

    def _remember(self, decision: RoutingDecision, tenant: str, mask: np.ndarray,
                  est: Estimates, row: int, vectors: np.ndarray | None,
                  text: str | None, view: _Catalogued) -> None:
        """Keep what an outcome for ``decision`` needs: its vector or units, its candidates,
        and (catalog prices) the prompt's tokens as they were priced."""
        if not self.learner.memory.capacity:
            return
        if est.unit_probabilities is not None:
            p = est.unit_probabilities[row]
            top = np.flatnonzero(p >= 1e-4)
            units = tuple((int(u), float(p[u])) for u in top)
        else:
            units = ((int(est.unit_ids[row]), 1.0),)
        self.learner.remember(PendingDecision(
            decision_id=decision.decision_id, tenant=tenant, chosen=decision.selected_model,
            candidates=tuple(m for m, keep in zip(view.models, mask, strict=True) if keep),
            embedding=None if vectors is None else vectors[row],
            units=units, expected_cost=decision.expected_cost,
            prompt_tokens=view.map.prompt_tokens(text) if view.map.priced else None,
            prompt_hash=decision.prompt_hash))

    def _serve(self, decision: RoutingDecision, tenant: str, mask: np.ndarray,
               support: np.ndarray, source_id: str, view: _Catalogued) -> RoutingDecision:
        """The decision as served: now and then explored (drawn from ``tenant``'s own stream)
        to the candidate whose estimate has the least evidence behind it (never when the caller
        named one model), remembered under its own id."""
        candidates = [m for m, keep in zip(view.models, mask, strict=True) if keep]
        explored = self.learner.explorer.pick(candidates, decision.selected_model,
                                              support[mask], tenant=tenant)
        if explored is not None:
            greedy = decision.selected_model
            rest = [m for m in decision.all_scores if m != explored]
            decision = replace(
                decision, selected_model=explored, decision_id=uuid.uuid4().hex,
                expected_error=decision.expected_errors[explored],
                cost_adjusted_score=decision.all_scores[explored],
                expected_cost=decision.expected_costs[explored], fallback_models=rest,
                source="exploration",
                reasoning=[*decision.reasoning, f"Exploring: sent to {explored} instead of "
                           f"{greedy}, the candidate with the least evidence here (a "
                           f"{self.learner.explorer.rate:.0%} share of decisions explores, so "
                           "outcomes also teach about other models)."])
        if decision.decision_id != source_id:
            self.learner.memory.alias(decision.decision_id, source_id, decision.selected_model,
                                      decision.expected_cost)
        return decision

    def _check_models(self, names: Sequence[str] | None, field_name: str,
                      view: _Catalogued | None = None) -> list[str] | None:
        names = model_names(names, field_name)
        if names is None:
            return None
        catalog = (view or self._view).catalog
        unknown = list(dict.fromkeys(n for n in names if n not in catalog))
        if unknown:
            raise UnknownModelError(field_name, unknown, catalog.names)
        if not names:
            raise NoCandidatesError(field_name, "is empty; list at least one model or omit it")
        return named_once(names, field_name)

    def check_candidates(self, available: Sequence[str] | None) -> list[str]:
        """Validate a candidate list; returns the models that remain allowed."""
        view = self._view
        mask = self._candidates(available, view)
        return [m for m, keep in zip(view.models, mask, strict=True) if keep]

    def _candidates(self, available: Sequence[str] | None, view: _Catalogued) -> np.ndarray:
        """The models routing may choose: the allowed ones, narrowed to ``available``, never
        one with ``auto: false`` (a request must name it to be served by it)."""
        mask = view.routed.copy()
        allowed = self._allowed_models
        if allowed is not None:
            mask &= np.isin(view.models, allowed)
        names = self._check_models(available, "available_models", view)
        if names is not None:
            mask &= np.isin(view.models, names)
        if not mask.any():
            field_name = "available_models" if names is not None else "allowed_models"
            listed = names if names is not None else allowed or []
            raise NoCandidatesError(field_name, view.catalog.leaves_no_model(
                listed, allowed or view.catalog.routed,
                "this router's allowed models"))
        return mask

    def _decide(self, est: Estimates, row: int, mask: np.ndarray, lam: float,
                view: _Catalogued, prompt_hash: str = "") -> RoutingDecision:
        err, cost, support = est.error[row], est.cost[row], est.support[row]
        stderr = None if est.stderr is None else est.stderr[row]
        scale = view.map.cost_scale(mask)
        choice = choose(err, cost, mask, lam, scale, support, stderr=stderr,
                        pessimism=est.pessimism)
        j = choice.index
        unit = int(est.unit_ids[row])
        probs = self._unit_distribution(est, row, unit)
        names = view.models
        order = choice.order
        has_units = self.policy.has_units
        reasoning = [
            f"{self.policy.describe_unit(unit).capitalize()} of the "
            f"{json_quoted(self.policy.name)} policy." if has_units else
            f"Estimated by the {json_quoted(self.policy.name)} policy, which divides prompts "
            "into no units (clusters, tiers or examples).",
            f"{names[j]} has the lowest score: expected error {err[j]:.3f} + λ {lam:g} × "
            f"normalised cost {cost[j] / scale if scale else 0:.3f}.",
        ]
        if len(order) > 1:
            k = int(order[1])
            reasoning.append(f"Runner-up {names[k]} scores {choice.scores[k]:.4f} "
                             f"(margin {choice.scores[k] - choice.scores[j]:.4f}).")
        thin = _evidence_charges(choice.scores, err, cost, lam, scale, order)
        if thin:
            reasoning.append("Thin evidence is charged (pessimism "
                             f"{est.pessimism:g} × extra standard error): " + ", ".join(
                                 f"{names[i]} +{c:.4f}" for i, c in thin) + ".")
        prior = view.map.prior_note(j)
        if prior:
            reasoning.append(prior if not support[j] > 0 else
                             f"{prior} Its own outcomes on prompts like this one "
                             f"({support[j]:.3g}) have moved that estimate.")
            evidence = [f"no labelled examples for {names[j]}: routed by tier and price" + (
                f", the tier's estimate moved by {support[j]:.3g} outcomes of it here"
                if support[j] > 0 else "")]
        else:
            evidence = [_evidence(names[j], float(support[j]), None if est.neighbours is None
                                  else int(est.neighbours[row, j]))]
            if support[j] < 5:
                evidence.append("sparse evidence: the estimate leans on the coarser prior")
        evidence.extend(est.notes)
        return RoutingDecision(
            selected_model=names[j],
            cluster_id=unit,
            expected_error=round(float(err[j]), 6),
            cost_adjusted_score=round(float(choice.scores[j]), 6),
            all_scores=scores_dict(names, choice.scores, order),
            expected_cost=float(cost[j]),
            cost_weight=lam,
            confidence=round(choice.confidence, 4),
            fallback_models=[names[int(i)] for i in order[1:]],
            cluster_probabilities=probs,
            reasoning=reasoning,
            evidence=evidence,
            policy=self.policy.name,
            basis=(f"{self.policy.name} policy, {est.unit_kind} {unit}" if has_units
                   else f"{self.policy.name} policy"),
            expected_errors={names[int(i)]: round(float(err[int(i)]), 6) for i in order},
            expected_costs={names[int(i)]: float(cost[int(i)]) for i in order},
            prompt_hash=prompt_hash,
        )

    def _unit_distribution(self, est: Estimates, row: int, unit: int) -> np.ndarray | None:
        """The prompt's distribution over the policy's units (one-hot when assigned hard);
        ``None`` when the policy has no small set of units (a neighbour per example)."""
        if est.unit_probabilities is not None:
            return np.array(est.unit_probabilities[row], dtype=np.float64)
        n_units = int(getattr(self.policy, "n_units", 0))
        if not 0 < n_units <= MAX_ONE_HOT_UNITS or not 0 <= unit < n_units:
            return None
        one_hot = np.zeros(n_units)
        one_hot[unit] = 1.0
        return one_hot

    def _count(self, decisions: list[RoutingDecision], cache_hit: bool = False) -> None:
        with self._stats_lock:
            for d in decisions:
                self._stats.update(d, cache_hit)


# How a model registered at run time is unregistered from a router, as its refusals say.
_UNREGISTER = "Router.unregister_model"

# Policies with more units than this (a neighbour per example) report no unit distribution.
MAX_ONE_HOT_UNITS = 1024


def _evidence(model: str, support: float, neighbours: int | None) -> str:
    """The sentence saying what ``model``'s estimate rests on: the labelled examples behind
    it, or, for a policy that averages the examples nearest the prompt (``neighbours`` not
    None), how many it averaged and what their similarity makes them worth (``support``: an
    identical prompt's label counts 1, a distant one's next to nothing)."""
    if neighbours is None:
        return f"{plural(round(support), 'labelled example')} behind {model}'s estimate"
    if neighbours == 0:
        return f"no labelled examples behind {model}'s estimate: its mean over all prompts"
    return (f"the {plural(neighbours, 'nearest labelled example')} behind {model}'s estimate, "
            f"weighing, by their similarity to the prompt, as much as {support:.2g} labels of "
            "the prompt itself")


def _evidence_charges(scores: np.ndarray, err: np.ndarray, cost: np.ndarray, lam: float,
                      scale: float, order: np.ndarray) -> list[tuple[int, float]]:
    """The candidates (best first, at most three) whose score carries a pessimism charge."""
    plain = err + lam * cost / (scale if scale > 0 else 1.0)
    extra = scores - plain
    return [(int(i), float(extra[i])) for i in order if extra[i] > 5e-5][:3]


# A prompt size used to price requests whose text is unknown (a supplied embedding) and to set
# the λ scale when costs come from catalog prices.
REFERENCE_INPUT_TOKENS = 500
# How many times its flat price (the prompt's tokens and the expected output) an answer may be
# said to have cost: a 200-token estimate against a 100,000-token answer is 500.
MAX_PRICE_RATIO = 1000.0
# A model without a profile learns from its outcomes as a normal mean does: each outcome is
# one draw of variance at most 0.25 (an error in [0, 1]), and its tier prior counts as at most
# this many of them (as many as its own uncertainty says, if fewer).
CARD_PRIOR_OUTCOMES = 10.0
OUTCOME_VARIANCE = 0.25


class _CardMap:
    """Maps a policy's per-profile estimates onto catalog cards.

    - A card with a learned profile takes that profile's expected error and support.
    - A card without one takes its tier's prior on each prompt: the mean error of the profiled
      cards of the same tier or, when none shares its tier, the error of the weakest profiled
      card (the highest mean error; a model nothing vouches for is not taken to be better
      than every measured one); its support is 0 and decisions say so. Without a tier its
      standard error is also widened by how much the profiled models disagree on the prompt,
      so, under a pessimistic policy, it takes the prompts every measured model gets right
      (where a new model most likely does too) but not, on price alone, the ones they split on.
      Its outcomes (:class:`~switchpoint.learning.overlay.CardEvidence`, on the prompt's units
      by the same weights as a profile's) move that prior as a normal mean: with ``n`` of them
      averaging error ``ē`` and the prior's variance ``v0`` (its standard error squared, at
      least ``OUTCOME_VARIANCE / CARD_PRIOR_OUTCOMES``), the estimate is
      ``(e0/v0 + n·ē/0.25) / (1/v0 + n/0.25)`` and its standard error
      ``(1/v0 + n/0.25)^-1/2``, or the prior's own if that is smaller (the floor on ``v0``
      lets outcomes move the estimate; it must not make them widen the uncertainty a
      pessimistic policy charges, so that one success would cost the model its traffic);
      its support is ``n``.
    - Costs: when every card has prices, a request's cost is priced from its estimated tokens
      (prompt UTF-8 bytes / 4, plus ``expected_output_tokens``), scaled per profile by how much
      that profile's measured cost on this prompt's unit differs from its global mean (so a
      cluster of long answers stays dearer). Otherwise the profiles' measured costs are used
      and every card must have a profile.
    """

    def __init__(self, catalog: Catalog, policy: Policy) -> None:
        profiles = list(policy.models_)
        self.catalog = catalog
        self.index = np.array([profiles.index(catalog.profile_of(n))
                               if catalog.profile_of(n) in profiles else -1
                               for n in catalog.names])
        self.priced = catalog.all_priced
        missing = catalog.uncosted(profiles)
        if missing:
            raise InvalidInputError(
                "models", f"{missing} have no learned profile in these weights and the catalog "
                "lacks prices for some models; give every model input_per_mtok and "
                f"output_per_mtok, or a profile among {profiles}")
        g_err = policy.global_error()
        g_cost = policy.global_cost()
        self.global_cost = np.array([g_cost[profiles[i]] if i >= 0 else np.nan
                                     for i in self.index])
        # For a card without a profile: which profiled cards' estimates to average on each
        # request (its tier's if any, else the weakest card's), so its prior follows the
        # prompt's difficulty.
        self.prior_sources: list[list[int]] = [[] for _ in catalog.names]
        self.prior_basis: list[str | None] = [None] * len(catalog.names)
        self.untiered = np.zeros(len(catalog.names), dtype=bool)  # a weakest-model prior
        profiled = [(n, int(i)) for n, i in zip(catalog.names, self.index, strict=True) if i >= 0]
        for j, name in enumerate(catalog.names):
            if self.index[j] >= 0:
                continue
            tier = catalog[name].tier
            same = [i for n, i in profiled if tier and catalog[n].tier == tier]
            weakest = max(profiled, key=lambda p: g_err.get(profiles[p[1]], 0.0), default=None)
            self.prior_sources[j] = same or ([weakest[1]] if weakest is not None else [])
            self.untiered[j] = not same
            self.prior_basis[j] = (
                f"{name} has no learned profile yet: its expected error is "
                + (f"the mean of the profiled models of tier {json_quoted(tier)}" if same else
                   WEAKEST_PRIOR.format(name=weakest[0] if weakest else "none")
                   + ", as uncertain as the profiled models disagree")
                + " on this prompt, and its cost comes from its price; label it "
                "(switchpoint label, add-model) to route it on its own measurements.")
        # The profiles the catalog's models use, each once, in order (by a set: np.unique
        # imports numpy.ma, some 15 ms of every start that loads a router, for this alone).
        self.profiled = np.array(sorted({int(i) for i in self.index if i >= 0}), dtype=np.intp)
        # The catalog models without a profile, by name: their column (what outcomes teach).
        self.unprofiled_index = {n: j for j, n in enumerate(catalog.names) if self.index[j] < 0}
        self.global_error_mean = float(np.mean(list(g_err.values()))) if g_err else 0.5
        self.out_tokens = catalog.expected_output_tokens
        self.reference_price = np.array([
            catalog[n].price(REFERENCE_INPUT_TOKENS, self.out_tokens) for n in catalog.names])

    def unprofiled(self) -> list[str]:
        """The catalog models without a learned profile."""
        return list(self.unprofiled_index)

    def estimate(self, est: Estimates, texts: Sequence[str] | None,
                 outcomes: CardEvidence | None = None, *,
                 tokens: tuple[int, int] | None = None) -> Estimates:
        """The catalog's estimates from the policy's; ``tokens`` = (input, output) prices
        every request at those tokens (catalog prices only)."""
        n = est.error.shape[0]
        k = len(self.index)
        has = self.index >= 0
        src = np.where(has, self.index, 0)
        error = est.error[:, src].copy()
        for j, sources in enumerate(self.prior_sources):
            if not has[j]:
                error[:, j] = (est.error[:, sources].mean(axis=1) if sources
                               else self.global_error_mean)
        support = np.where(has, est.support[:, src], 0.0)
        neighbours = (None if est.neighbours is None
                      else np.where(has, est.neighbours[:, src], 0.0))
        stderr = None
        if est.stderr is not None:
            stderr = est.stderr[:, src].copy()
            # (with no profiled model an untiered one has no source, so no spread to add)
            spread = (est.error[:, self.profiled].std(axis=1)
                      if self.untiered.any() and self.profiled.size else None)
            for j, sources in enumerate(self.prior_sources):
                if not has[j] and sources:  # a tier prior: as uncertain as what it averages
                    stderr[:, j] = est.stderr[:, sources].mean(axis=1)
                    if self.untiered[j] and spread is not None:  # and where it sits among them
                        stderr[:, j] = np.hypot(stderr[:, j], spread)
        if outcomes is not None:
            self._learn_cards(est, outcomes, error, support, stderr)
        if self.priced:
            inputs = np.array([tokens[0]] * n if tokens is not None
                              else [self.prompt_tokens(t) for t in texts] if texts is not None
                              else [REFERENCE_INPUT_TOKENS] * n, dtype=np.float64)
            out = self.out_tokens if tokens is None else tokens[1]
            cards = self.catalog.cards
            price = np.column_stack([
                [c.price(t, out) for t in inputs] for c in cards
            ]) if k else np.zeros((n, 0))
            with np.errstate(invalid="ignore", divide="ignore"):
                relative = np.where(has, est.cost[:, src] / self.global_cost, 1.0)
            relative = np.where(np.isfinite(relative), relative, 1.0)
            cost = price * relative
        else:
            cost = est.cost[:, src]
        return Estimates(models=list(self.catalog.names), error=error, cost=cost,
                         support=support, unit_ids=est.unit_ids, unit_kind=est.unit_kind,
                         unit_probabilities=est.unit_probabilities, notes=est.notes,
                         stderr=stderr, pessimism=est.pessimism, neighbours=neighbours)

    def _learn_cards(self, est: Estimates, cards: CardEvidence, error: np.ndarray,
                     support: np.ndarray, stderr: np.ndarray | None) -> None:
        """Move the priors of the models without a profile by their outcomes on each prompt's
        units (in place; see the class docstring)."""
        if est.unit_probabilities is not None:
            weights = est.unit_probabilities
        else:
            weights = np.zeros((len(est.unit_ids), cards.count.shape[0]))
            inside = est.unit_ids < cards.count.shape[0]
            weights[np.flatnonzero(inside), est.unit_ids[inside]] = 1.0
        units = min(weights.shape[1], cards.count.shape[0])
        count = weights[:, :units] @ cards.count[:units]
        errors = weights[:, :units] @ cards.error[:units]
        floor = OUTCOME_VARIANCE / CARD_PRIOR_OUTCOMES
        for c, name in enumerate(cards.names):
            j = self.unprofiled_index.get(name, -1)
            if j < 0 or not count[:, c].any():
                continue
            prior_var = (np.maximum(stderr[:, j] ** 2, floor) if stderr is not None
                         else np.full(len(count), floor))
            precision = 1.0 / prior_var + count[:, c] / OUTCOME_VARIANCE
            error[:, j] = np.clip((error[:, j] / prior_var + errors[:, c] / OUTCOME_VARIANCE)
                                  / precision, 0.0, 1.0)
            support[:, j] = count[:, c]
            if stderr is not None:  # outcomes never make it less certain than its prior
                stderr[:, j] = np.minimum(stderr[:, j], 1.0 / np.sqrt(precision))

    @staticmethod
    def prompt_tokens(text: str | None) -> int:
        """The prompt's tokens as prices are estimated from (the reference size without a
        text)."""
        return REFERENCE_INPUT_TOKENS if text is None else estimate_tokens(text)

    def weights_cost(self, name: str, dollars: float, tokens: int | None) -> float | None:
        """A measured cost of card ``name``'s answer, in its profile's cost units: how many
        times its flat price (``tokens`` in, the expected output) the answer cost, times the
        profile's mean cost. The router prices a prompt as ``flat price × unit cost / mean
        cost``, so learning this teaches that factor. None for a card without a profile or a
        price."""
        j = self.catalog.names.index(name)
        flat = self.catalog[name].price(REFERENCE_INPUT_TOKENS if tokens is None else tokens,
                                        self.out_tokens)
        if not flat > 0:
            return None
        if dollars > MAX_PRICE_RATIO * flat:
            raise InvalidInputError(
                "cost", f"{usd_text(dollars)} is over {people_number(MAX_PRICE_RATIO)} times "
                f"what {name}'s prices make of this prompt ({usd_text(flat)} with "
                f"{self.out_tokens} output tokens); check the cost, or the catalog's prices "
                "and expected_output_tokens")
        if self.index[j] < 0 or not np.isfinite(self.global_cost[j]):
            return None
        return float(dollars * self.global_cost[j] / flat)

    def cost_scale(self, mask: np.ndarray) -> float:
        ref = self.reference_price if self.priced else self.global_cost
        return float(np.max(ref[mask]))

    def prior_note(self, j: int) -> str | None:
        return self.prior_basis[j]


@dataclass(frozen=True)
class _Catalogued:
    """What a router routes over, read whole by each call: its catalog, the catalog's names,
    which of them ``auto`` may choose, how the policy's estimates map onto them, the models
    registered at run time (:meth:`Router.register_model`) and a revision that changes with
    each registration or removal (a decision cached before one is no answer after it)."""

    catalog: Catalog
    models: list[str]
    routed: np.ndarray
    map: _CardMap
    registered: tuple[str, ...] = ()
    revision: int = 0

    @classmethod
    def of(cls, catalog: Catalog, policy: Policy, registered: tuple[str, ...] = (),
           revision: int = 0) -> _Catalogued:
        names = catalog.names
        # (routing may choose no model with ``auto: false``: one served only when named)
        return cls(catalog, names, np.isin(names, catalog.routed), _CardMap(catalog, policy),
                   registered, revision)


def load_router(
    weights_path: str | Path | None = None,
    cost_weight: float = DEFAULT_COST_WEIGHT,
    allowed_models: Sequence[str] | None = None,
    use_soft_assignment: bool | None = None,
    embedder: Embedder | None = None,
    verbose: bool = False,
    *,
    weights_name: str | None = None,
    embedding_model: str | None = None,
    engine: str = "auto",
    download_if_missing: bool = True,
    policy: str | None = None,
    catalog: Catalog | None = None,
    cache_size: int = 10_000,
    cache_ttl: float = 3600.0,
    warm: bool = True,
    max_weights_bytes: int = MAX_WEIGHTS_BYTES,
    max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
) -> Router:
    """Load a weights package (the bundled default when ``weights_path`` is None) into a Router.

    ``use_soft_assignment``: None keeps the package's own setting (the bundled cluster weights
    are soft: it routed better on a validation split of train for both record sets); True or
    False forces it. ``policy`` picks which bundled default to load (``cluster``, ``knn``,
    ``tiers``, ``tfidf``, ``fixed``, ``random``). Nothing is ever downloaded. With ``warm`` the
    embedding model loads on a background thread, so this returns quickly and the first
    ``route`` waits only for what is left. ``max_weights_bytes``: the most the package's arrays
    and profiles may hold together (see :func:`~switchpoint.weights.load_weights`).
    ``cost_weight``, ``allowed_models``, ``embedder``, ``catalog``, ``cache_size``,
    ``cache_ttl`` and ``max_prompt_chars`` are :class:`Router`'s, checked as it checks them.
    ``verbose`` prints one line to stdout naming the package loaded.

    Raises :class:`~switchpoint.errors.WeightsError` for a package that cannot be loaded (a
    missing directory, no bundled weights of that policy, a damaged file), naming it, and
    :class:`~switchpoint.errors.InvalidInputError` naming the argument for any other bad
    argument.

    Parameters other UniRoute-style loaders take, with their meaning here:

    - ``weights_name``: a bundled package by name: ``"default"`` (the bundled cluster
      weights) or a bundled policy's name, as ``policy``; with ``weights_path`` it is ignored.
    - ``embedding_model``: the model prompts are embedded with. ``"all-MiniLM-L6-v2"`` (or
      ``"sentence-transformers/all-MiniLM-L6-v2"``) is the bundled ONNX default, set up as the
      weights expect; ``"st:<path>"`` a sentence-transformers model (``pip install
      'switchpoint[st]'``). ``embedder`` (an object) wins over it.
    - ``engine``: ``"auto"``, ``"python"`` and ``"go"`` all mean switchpoint's one in-process
      engine (ONNX Runtime, no subprocess); anything else is an error.
    - ``download_if_missing``: accepted for compatibility; switchpoint never downloads, so a
      missing package is an error either way (the message says how to make one).
    """
    expect("weights_path", weights_path, PATH, "the path of a weights package's directory",
           optional=True)
    expect("use_soft_assignment", use_soft_assignment, bool, "True or False", optional=True)
    expect("embedder", embedder, Embedder, "an Embedder", optional=True)
    expect("verbose", verbose, bool, "True or False")
    expect("weights_name", weights_name, str, "a bundled package name", optional=True)
    expect("embedding_model", embedding_model, str, "an embedding model's name",
           optional=True)
    expect("engine", engine, str, f"an engine's name ({one_of(ENGINES)})")
    expect("download_if_missing", download_if_missing, bool, "True or False")
    expect("policy", policy, str, "the name of a bundled policy", optional=True)
    expect("catalog", catalog, Catalog, "a Catalog", optional=True)
    expect("warm", warm, bool, "True or False")
    if engine not in ENGINES:
        raise InvalidInputError("engine", f"unknown engine {json_quoted(engine)}; use one of "
                                          f"{one_of(ENGINES)} (all run "
                                          "switchpoint's in-process ONNX engine)")
    if weights_name is not None and weights_path is None:
        named = DEFAULT_POLICY if weights_name == "default" else weights_name
        if named not in bundled_policies():
            raise InvalidInputError(
                "weights_name", f"no bundled weights named {json_quoted(weights_name)}; "
                "bundled: "
                f"{listed_names(['default', *bundled_policies()], quoted=True)} (switchpoint never "
                "downloads weights: pass weights_path for your own, made with `switchpoint fit`)")
        policy = policy or named
    package = load_weights(weights_path, policy=policy, max_weights_bytes=max_weights_bytes)
    if use_soft_assignment is not None:
        try:
            package.policy.set_params(assignment="soft" if use_soft_assignment else "hard")
        except InvalidInputError as exc:
            raise InvalidInputError("use_soft_assignment", exc.reason) from None
    if embedder is None and embedding_model is not None:
        embedder = _embedder_named(embedding_model, package)
    router = Router(package, catalog=catalog, embedder=embedder, cost_weight=cost_weight,
                    allowed_models=allowed_models, cache_size=cache_size, cache_ttl=cache_ttl,
                    max_prompt_chars=max_prompt_chars)
    if warm:
        # Not a daemon: an interpreter that exits while ONNX Runtime is still creating its
        # session aborts the process (SIGABRT), so an exit waits for the load to finish.
        threading.Thread(target=router.warm_up, name="switchpoint-warm-up", daemon=False).start()
    if verbose:
        print(f"switchpoint: loaded {package.weights_id} ({package.policy.name} policy, "
              f"{len(router.models)} models) from {package.path}")
    return router


# What ``load_router(engine=...)`` accepts: every name means the one in-process engine.
ENGINES = ("auto", "python", "go")
_DEFAULT_MODEL_NAMES = frozenset({MODEL_NAME, f"sentence-transformers/{MODEL_NAME}"})


def _embedder_named(name: str, package: WeightsPackage) -> Embedder:
    """The embedder ``load_router(embedding_model=name)`` asks for."""
    if name in _DEFAULT_MODEL_NAMES:
        if not package.embedder_id.startswith(MODEL_NAME):
            raise InvalidInputError("embedding_model", f"these weights were fitted with "
                                                       f"{json_quoted(package.embedder_id)}, not "
                                                       f"{json_quoted(name)}")
        return embedder_from_id(package.embedder_id)
    if name.startswith("st:"):
        return embedder_from_id(name)
    raise InvalidInputError(
        "embedding_model", f"unknown embedding model {json_quoted(name)}; use "
                           f"{json_quoted(MODEL_NAME)} (the bundled "
        "ONNX default) or 'st:<sentence-transformers model path>'")
