"""``Router.register_model`` / ``unregister_model``: a library router takes a model it has no
labels for at run time, by the rules the gateway's registration keeps, routes it by its tier
and price until its outcomes teach it, and lets it go again; a refusal changes nothing, and
routing beside a change reads the catalog all before or all after it."""

from __future__ import annotations

import ipaddress
import pickle
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from switchpoint import registration
from switchpoint.catalog import Catalog, ModelCard
from switchpoint.decision import RoutingDecision
from switchpoint.errors import ConflictError, InvalidInputError, NotFoundError
from switchpoint.learning.tenant_router import TenantRouter
from switchpoint.router import Router
from switchpoint.weights import WeightsPackage
from tests.conftest import FakeEmbedder
from tests.fakes.two_kinds import math_prompt, poem_prompt, two_kinds_package

BUILT = ["strong", "runner", "budget"]


@pytest.fixture(scope="module")
def package() -> WeightsPackage:
    return two_kinds_package(FakeEmbedder())


@pytest.fixture
def router(package: WeightsPackage) -> Router:
    """The two kinds' three profiles priced; ``budget`` routes on the ``cheap`` profile."""
    # (the embedder's class by its importable name, so that a copy pickles: pytest registers
    # each directory's conftest.py as the module "conftest" in turn)
    fake_embedder = FakeEmbedder()
    catalog = Catalog([
        ModelCard("strong", profile="strong", input_per_mtok=10, output_per_mtok=10,
                  tier="complex"),
        ModelCard("runner", profile="runner", input_per_mtok=5, output_per_mtok=5,
                  tier="complex"),
        ModelCard("budget", profile="cheap", input_per_mtok=1, output_per_mtok=1,
                  tier="simple")])
    return Router(package, embedder=fake_embedder, catalog=catalog, cost_weight=0.5)


def test_a_registered_model_is_routed_by_price_taught_by_its_outcomes_and_unregistered(
        router: Router) -> None:
    """``peer``, of strong's tier at a twentieth of its price, wins math on price with its
    tier's estimate; sixty failures (beside evidence learned before it joined) move math back
    to a measured model; unregistered, no call names it, and a decision cached with it is not
    served."""
    first = router.route(math_prompt(1))
    assert first.selected_model == "strong"
    router.report_outcome(first.decision_id, 1.0)  # (evidence held before peer joins)
    card = router.register_model("peer", tier="complex", input_per_mtok=0.5,
                                 output_per_mtok=0.5)
    assert card == ModelCard("peer", input_per_mtok=0.5, output_per_mtok=0.5, tier="complex")
    assert router.models == [*BUILT, "peer"] and router.unprofiled_models == ["peer"]
    chosen = router.route(math_prompt(1))
    assert chosen.selected_model == "peer", chosen.all_scores
    assert chosen.evidence[0] == "no labelled examples for peer: routed by tier and price"
    assert chosen.expected_errors["peer"] == pytest.approx(
        (chosen.expected_errors["strong"] + chosen.expected_errors["runner"]) / 2, abs=1e-6)
    for i in range(60):
        d = router.route(math_prompt(100 + i))
        assert router.report_outcome(d.decision_id, 0.0, model="peer").model == "peer"
    taught = router.route(math_prompt(1))
    assert taught.selected_model != "peer", taught.all_scores
    assert taught.expected_errors["peer"] > chosen.expected_errors["peer"] + 0.3
    # (a copy in another process routes on the same catalog)
    assert pickle.loads(pickle.dumps(router)).models == [*BUILT, "peer"]

    assert router.unregister_model("peer") == card
    assert router.models == BUILT and router.unprofiled_models == []
    for prompt in (math_prompt(1), poem_prompt(1)):  # (math_prompt(1) was cached with peer)
        assert "peer" not in router.route(prompt).all_scores
    assert "peer" not in router.route_batch([math_prompt(2)])[0].all_scores
    router.register_model("twin", tier="complex", input_per_mtok=0.5, output_per_mtok=0.5)
    assert "peer" not in router.route(math_prompt(1)).all_scores  # (cached as four models too)
    router.unregister_model("twin")
    # Registered again, it takes up what its outcomes taught, as a gateway replaying its log.
    router.register_model({"name": "peer", "tier": "complex", "input_per_mtok": 0.5,
                           "output_per_mtok": 0.5})
    assert router.route(math_prompt(1)).expected_errors["peer"] == pytest.approx(
        taught.expected_errors["peer"])


def _card(**more: Any) -> dict[str, Any]:
    return {"name": "newbie", "input_per_mtok": 0.1, "output_per_mtok": 0.1, **more}


#: What the gateway's refusals of a registration speak of, which a library caller has none of.
GATEWAY_WORDS = ("data_dir", "config", "under models:", "profile:", "this request", "reload",
                 "admin token", "DELETE", "Gateway.")


@pytest.mark.parametrize(("card", "keys", "error", "field", "said"), [
    (_card(input_per_mtok=-1), {}, InvalidInputError, "input_per_mtok", "must be >= 0"),
    (_card(colour="red"), {}, InvalidInputError, "colour",
     "colour: is not a key of a model's card; the keys are \"name\", \"profile\""),
    ({"name": "newbie"}, {}, InvalidInputError, "input_per_mtok", "has no prices"),
    (_card(fallbacks=["nowhere"]), {}, InvalidInputError, "fallbacks[0]",
     '"nowhere" is not a model in the catalog; register it first (Router.register_model) or '
     'remove it'),
    (_card(base_url="http://user:pw@example.com/v1"), {}, InvalidInputError, "base_url",
     "carries a credential (a user or password before its host, a key in its query, or text "
     "shaped like a key in its path): the router keeps the card as it is given "
     "(router.catalog, and every copy of the router, a pickled one too), so its secret would "
     "be too"),
    (_card(base_url="http://169.254.169.254/v1"), {}, InvalidInputError, "base_url",
     "a model registered at run time may not name one (registered with a gateway, such a "
     "model would have the service send requests where the machine's credentials are told); "
     "if the model is really meant to be there, build the Router with a Catalog that lists "
     "it"),
    (_card(name="strong"), {}, ConflictError, "name", "is in this router's catalog"),
    (_card(name="cheap"), {}, ConflictError, "name",
     'name: model "cheap" has no profile, so it routes on the weights\' learned profile of '
     'its name, "cheap", which model "budget" uses (its profile): it takes that model\'s '
     'learned quality, whatever it is and costs; to share that profile on purpose, give '
     'profile="cheap" in the card'),
    (_card(), {"tier": "simple"}, InvalidInputError, "card", "not both"),
    (["newbie"], {}, InvalidInputError, "card",
     "card: must be a ModelCard, a mapping of its keys (name, tier, input_per_mtok, ...), or "
     "a model's name with its keys as keyword arguments, got list"),
], ids=["negative price", "unknown key", "no prices", "unknown fallback", "credential in url",
        "metadata host", "name of the catalog", "profile by name alone", "card and keywords",
        "a list"])
def test_a_bad_card_is_refused_naming_what_is_wrong_and_changes_nothing(
        router: Router, card: Any, keys: dict[str, Any], error: type[Exception], field: str,
        said: str) -> None:
    before = router.route(math_prompt(3)).all_scores
    with pytest.raises(error) as info:
        router.register_model(card, **keys)
    value = info.value
    where = value.field if isinstance(value, InvalidInputError) else (
        value.param if isinstance(value, ConflictError) else None)
    assert where == field and said in str(info.value), str(info.value)
    # (in the library's words: the argument, the method to call; not the gateway's)
    assert not [w for w in GATEWAY_WORDS if w in str(info.value)], str(info.value)
    assert router.models == BUILT and router.unprofiled_models == []
    assert router.route(math_prompt(3)).all_scores == before


#: IPv6 addresses that carry a link-local or metadata IPv4 address, which a connection to them
#: reaches through a translator or tunnel on the way, and what a refusal shows of each.
CARRYING_INTERNAL = [
    ("64:ff9b::a9fe:a9fe", "a cloud metadata service's address (169.254.169.254, carried by "
                           "64:ff9b::a9fe:a9fe)"),  # (NAT64's well-known prefix)
    ("64:ff9b::169.254.10.20", "a link-local address (169.254.10.20, carried by "
                               "64:ff9b::a9fe:a14)"),
    ("64:ff9b:1::a9fe:a9fe", "address (169.254.169.254, carried by 64:ff9b:1::a9fe:a9fe)"),
    # (NAT64's local-use prefix, taken as a /48, a /56 and a /64: bits 64-71 stay zero)
    ("64:ff9b:1:a9fe:a9:fe00::", "address (169.254.169.254, carried by "),
    ("64:ff9b:1:a9:fe:a9fe::", "address (169.254.169.254, carried by "),
    ("64:ff9b:1:0:a9:fea9:fe00:0", "address (169.254.169.254, carried by "),
    ("2002:a9fe:a9fe::", "address (169.254.169.254, carried by 2002:a9fe:a9fe::)"),  # (6to4)
    ("2002:a9fe:a14::1", "a link-local address (169.254.10.20, carried by 2002:a9fe:a14::1)"),
    ("::a9fe:a9fe", "address (169.254.169.254, carried by ::a9fe:a9fe)"),  # (IPv4-compatible)
    ("::ffff:0:a9fe:a9fe", "address (169.254.169.254, carried by ::ffff:0:a9fe:a9fe)"),
    # (Teredo: a client address, obfuscated, at 169.254.169.254; a server there)
    ("2001:0:4136:e378:8000:63bf:5601:5601", "address (169.254.169.254, carried by 2001:0:"),
    ("2001:0:a9fe:a9fe::1", "address (169.254.169.254, carried by 2001:0:a9fe:a9fe::1)"),
    # (ISATAP: an interface identifier 0:5efe or, the u bit set, 200:5efe then the IPv4
    # address, under any /64 prefix, a 6to4 one too)
    ("2001:db8:1:2:0:5efe:a9fe:a9fe", "address (169.254.169.254, carried by 2001:db8:1:2:0:"),
    ("2001:db8:1:2:200:5efe:a9fe:a14", "a link-local address (169.254.10.20, carried by "
                                       "2001:db8:1:2:200:5efe:a9fe:a14)"),
    ("2002:c000:221::5efe:a9fe:a9fe", "address (169.254.169.254, carried by 2002:c000:221:"),
]
#: Addresses of those forms that carry an address elsewhere, and are taken.
CARRYING_ELSEWHERE = ["64:ff9b::a01:203", "64:ff9b:1::a01:203", "2002:a01:203::1",
                      "::a01:203", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
                      "2001:db8:1:2:200:5efe:c000:221", "::1", "::"]

#: A network's own NAT64 prefix of each length one may have, and an address under it that
#: carries 169.254.169.254 where that length puts an IPv4 address (bits 64-71 skipped):
#: without the prefix listed, an address like any other of the network.
NAT64_OWN = [("2001:db8::/32", "2001:db8:a9fe:a9fe::"),
             ("2001:db8:100::/40", "2001:db8:1a9:fea9:fe::"),
             ("2001:db8:122::/48", "2001:db8:122:a9fe:a9:fe00::"),
             ("2001:db8:122:300::/56", "2001:db8:122:3a9:fe:a9fe::"),
             ("2001:db8:122:344::/64", "2001:db8:122:344:a9:fea9:fe00:0"),
             ("2001:db8:122:344::/96", "2001:db8:122:344::a9fe:a9fe")]


def test_an_address_carrying_a_link_local_or_metadata_one_is_refused_as_that_one(
        router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    """A NAT64, 6to4, IPv4-compatible or Teredo address is judged by the IPv4 address it
    carries, written in ``base_url`` or resolved from a name at the gateway's door; the same
    forms carrying an address elsewhere are taken."""
    for address, shown in CARRYING_INTERNAL:
        with pytest.raises(InvalidInputError) as info:
            router.register_model(_card(base_url=f"http://[{address}]:8000/v1"))
        assert info.value.field == "base_url" and shown in str(info.value), str(info.value)
    assert router.models == BUILT

    def resolver(host: str, *args: Any, **kwargs: Any) -> Any:
        # (a made-up name for each address: "2002-a9fe-a9fe--.test" resolves to it)
        address = host.removesuffix(".test").replace("-", ":")
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, 0, 0, 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    for address, shown in CARRYING_INTERNAL:
        name = address.replace(":", "-") + ".test"
        said = registration.resolved_internal_host(f"http://{name}/v1")
        assert said is not None and f"({name}) that resolves to " in said and shown in said, \
            said
    for n, address in enumerate(CARRYING_ELSEWHERE):
        assert registration.internal_address(address) is None, address
        assert registration.resolved_internal_host(
            f"http://{address.replace(':', '-')}.test/v1") is None, address
        if address not in ("::1", "::"):
            router.register_model(_card(name=f"m{n}", base_url=f"http://[{address}]:8000/v1"))
    assert len(router.models) == len(BUILT) + len(CARRYING_ELSEWHERE) - 2


def test_an_address_under_a_network_s_own_nat64_prefix_is_judged_by_the_address_it_carries(
        ) -> None:
    """A prefix the config lists (gateway.nat64_prefixes) is read at its own length, as a
    translator reads it, when a card is checked and a name's address is; unlisted, the same
    address is taken, as is an address elsewhere under the prefix."""
    prefixes = [ipaddress.IPv6Network(prefix) for prefix, _ in NAT64_OWN]
    for prefix, address in NAT64_OWN:
        own = [ipaddress.IPv6Network(prefix)]
        said = registration.internal_address(address, own)
        assert said == (f"a cloud metadata service's address (169.254.169.254, carried by "
                        f"{address})"), (prefix, said)
        assert registration.internal_address(address) is None, prefix
        url = f"http://[{address}]:8000/v1"
        with pytest.raises(InvalidInputError) as info:
            registration.model_card(_card(base_url=url), nat64=own)
        assert info.value.field == "base_url" and address in str(info.value), str(info.value)
        assert registration.model_card(_card(base_url=url)).base_url == url
    for elsewhere in ["2001:db8:a01:203::", "2001:db8:122:344::a01:203", "2001:db8::1"]:
        assert registration.internal_address(elsewhere, prefixes) is None, elsewhere


def test_a_card_nothing_would_cost_is_refused_exactly_where_a_catalog_with_it_would_be(
        package: WeightsPackage) -> None:
    """One rule says which models nothing would cost (no learned profile, in a catalog that
    does not price every model): a card is refused for it exactly where a router built with
    the catalog it would join is refused, and a catalog priced throughout takes no card
    without prices (it would end pricing for every model)."""
    embedder = FakeEmbedder()
    unpriced = [ModelCard("strong", profile="strong"), ModelCard("runner", profile="runner")]
    priced = [ModelCard(c.name, profile=c.profile, input_per_mtok=1, output_per_mtok=1)
              for c in unpriced]
    cards = [_card(profile="cheap"), {"name": "newbie", "profile": "cheap"}, _card(),
             {"name": "newbie"}]
    for built in (priced, unpriced):
        for card in cards:
            joined = Catalog([*built, ModelCard(**card)])
            router = Router(package, embedder=embedder, catalog=Catalog(built))
            try:
                router.register_model(card)
                refused = None
            except InvalidInputError as exc:
                refused = exc
            if built is priced and "input_per_mtok" not in card:
                assert refused is not None and "prices every request" in str(refused)
                continue
            try:
                Router(package, embedder=embedder, catalog=joined)
                built_refused = False
            except InvalidInputError as exc:
                built_refused = "newbie" in str(exc)
            assert (refused is not None) == built_refused == ("newbie" in joined.uncosted(
                package.models)), (built, card, refused)
            assert router.models == [*(c.name for c in built), *([] if refused else ["newbie"])]


def test_a_host_name_is_looked_up_within_its_bound_and_only_at_the_gateway_s_door(
        router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    """A resolver that does not answer holds a registration through the gateway at most the
    look-up's bound (the name is then taken as one that does not resolve); the library's
    door, whose caller owns the process as a config's author does, looks no name up."""
    answered = threading.Event()
    looked_up: list[str] = []

    def resolver(host: str, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(host)
        answered.wait(5)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", 0))]

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    t0 = time.perf_counter()
    try:
        assert registration.resolved_internal_host("http://slow.example.test/v1",
                                                   timeout=0.05) is None
        assert time.perf_counter() - t0 < 1.0
    finally:
        answered.set()
    assert registration.resolved_internal_host("http://slow.example.test/v1") == (
        "a host name (slow.example.test) that resolves to a cloud metadata service's address "
        "(169.254.169.254)")
    assert router.register_model(_card(base_url="http://slow.example.test/v1")).name == "newbie"
    assert looked_up == ["slow.example.test", "slow.example.test"]


def test_a_name_is_registered_once_within_the_bound_and_only_a_registered_one_unregistered(
        router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registration, "MAX_REGISTERED_MODELS", 2)
    router.register_model(_card())
    with pytest.raises(ConflictError, match="registered at run time already"):
        router.register_model(_card())
    router.register_model(_card(name="backup", fallbacks=["newbie"]))
    with pytest.raises(ConflictError, match=r"2 models are registered at run time already, "
                                            r"the most there may be \(2\)"):
        router.register_model(_card(name="third"))
    with pytest.raises(NotFoundError, match='no model "nope" was registered at run time; '
                                            'check the name: those registered are "newbie", '
                                            '"backup"'):
        router.unregister_model("nope")
    with pytest.raises(ConflictError, match='model "strong" is in this router\'s catalog as '
                                            'it was built, not registered at run time'):
        router.unregister_model("strong")
    with pytest.raises(ConflictError) as still:
        router.unregister_model("newbie")
    assert str(still.value) == (
        'name: model "newbie" is still named by models.backup.fallbacks[0], the fallbacks of a '
        "model registered with Router.register_model; unregister that model first (it can be "
        "registered again without it)")
    router.allowed_models = ["strong", "backup"]
    with pytest.raises(ConflictError, match="is named by allowed_models"):
        router.unregister_model("backup")
    assert router.models == [*BUILT, "newbie", "backup"]
    router.allowed_models = None
    router.unregister_model("backup")
    router.unregister_model("newbie")
    assert router.models == BUILT


def test_a_router_learns_the_outcomes_of_so_many_models_without_a_profile_in_all(
        router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    """One unregistered keeps its evidence (a column of every tenant's), so names ever
    registered are bounded; registering one of a name it learns again takes no more room."""
    import switchpoint.learning.learner as learner_module

    monkeypatch.setattr(learner_module, "MAX_CATALOG_MODELS", 1)
    router.register_model(_card())
    router.unregister_model("newbie")
    with pytest.raises(InvalidInputError, match="would pass the 1 a router learns in all") as info:
        router.register_model(_card(name="other"))
    assert info.value.field == "card" and router.models == BUILT
    router.register_model(_card())
    assert router.models == [*BUILT, "newbie"]


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Threads switched as often as the interpreter can, so a route meets a change often."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


@pytest.mark.usefixtures("fast_switching")
def test_routes_beside_registrations_each_read_one_catalog(router: Router) -> None:
    """Three threads route (one prompt at a time, in batches, and with a tenant's memory)
    while models come and go:
    every decision weighs the built catalog with or without ``peer``, never a mix, and none
    fails."""
    router.cache.size = 0  # (every call estimates)
    stop = threading.Event()
    seen: list[set[str]] = []
    failures: list[BaseException] = []

    tenants = TenantRouter(router)

    def routing(how: str) -> None:
        i = 0
        try:
            while not stop.is_set():
                i += 1
                decisions = (router.route_batch([math_prompt(i), poem_prompt(i)])
                             if how == "batch" else
                             [tenants.route(math_prompt(i), tenant="t").decision]
                             if how == "tenant" else [router.route(math_prompt(i))])
                seen.extend(set(d.all_scores) for d in decisions)
        except BaseException as exc:  # (reported by the assertion below)
            failures.append(exc)

    threads = [threading.Thread(target=routing, args=(how,))
               for how in ("one", "batch", "tenant")]
    for t in threads:
        t.start()
    try:
        for _ in range(300):
            router.register_model("peer", tier="complex", input_per_mtok=0.5,
                                  output_per_mtok=0.5)
            router.unregister_model("peer")
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures, failures
    assert seen and all(s in ({*BUILT}, {*BUILT, "peer"}) for s in seen)


def test_allowed_models_set_beside_an_unregistration_never_names_a_model_gone(
        router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    """``allowed_models`` is checked and set while ``peer`` is unregistered: one waits for
    the other, so the removal is refused (``peer`` is allowed by then) rather than leave
    ``allowed_models`` naming a model no longer in the catalog."""
    router.register_model("peer", tier="complex", input_per_mtok=0.5, output_per_mtok=0.5)
    checked, go = threading.Event(), threading.Event()
    check = router._check_models

    def held_check(*args: Any, **kwargs: Any) -> Any:
        names = check(*args, **kwargs)
        checked.set()
        go.wait(5)  # (the removal runs now, if nothing holds it off)
        return names

    monkeypatch.setattr(router, "_check_models", held_check)
    setting = threading.Thread(target=setattr, args=(router, "allowed_models", ["peer", "strong"]))
    setting.start()
    assert checked.wait(5)
    refused: list[BaseException] = []

    def unregister() -> None:
        try:
            router.unregister_model("peer")
        except ConflictError as exc:
            refused.append(exc)

    removing = threading.Thread(target=unregister)
    removing.start()
    removing.join(0.2)
    go.set()
    setting.join(5)
    removing.join(5)
    assert router.allowed_models == ["peer", "strong"]
    assert "peer" in router.models and refused, router.models
    assert "named by allowed_models" in str(refused[0])


def test_a_tenant_memory_weighs_costs_on_the_scale_its_decision_had_when_a_dearer_model_joins(
        router: Router, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model registered between the router's decision and the tenant memory's choice, dearer
    than every model the decision weighed, rescaled the memory's costs by its own price: the
    memory weighed the decision's costs on a scale the decision never had."""
    tenants = TenantRouter(router)
    scale = router.cost_scale()
    decide = router.route

    def deciding_then_registering(*args: Any, **kwargs: Any) -> RoutingDecision:
        decision = decide(*args, **kwargs)
        if "dear" not in router.models:
            router.register_model("dear", tier="complex", input_per_mtok=500,
                                  output_per_mtok=500)
        return decision

    weighed: list[dict[str, float]] = []
    suggest = tenants.memory.suggest

    def recording(tenant: str | None, vector: Any, candidates: Any, costs: dict[str, float],
                  *args: Any, **kwargs: Any) -> Any:
        weighed.append(dict(costs))
        return suggest(tenant, vector, candidates, costs, *args, **kwargs)

    monkeypatch.setattr(router, "route", deciding_then_registering)
    monkeypatch.setattr(tenants.memory, "suggest", recording)
    answer = tenants.route(math_prompt(1), tenant="acme")
    assert "dear" in router.models and router.cost_scale() > 10 * scale
    assert weighed == [{m: c / scale for m, c in answer.decision.expected_costs.items()}]


def test_a_copy_holds_as_registered_the_models_it_is_told_and_unregisters_them_alone(
        router: Router) -> None:
    """A gateway's router is built with its registered models in its catalog: a copy told
    which they are lets one go by the library's rules, and a name outside the catalog is
    refused naming the argument; the router copied is left as it was."""
    with pytest.raises(InvalidInputError, match="registered") as refused:
        router.unlearned_copy(registered=["nope"])
    assert refused.value.field == "registered"
    copy = router.unlearned_copy(registered=["budget"])
    with pytest.raises(ConflictError, match="not registered at run time"):
        copy.unregister_model("runner")
    assert copy.unregister_model("budget").name == "budget"
    assert copy.catalog.names == ["strong", "runner"] and router.catalog.names == BUILT
    with pytest.raises(ConflictError, match="not registered at run time"):
        router.unlearned_copy().unregister_model("budget")
