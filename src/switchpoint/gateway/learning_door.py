"""Learning from outcomes, the gateway's door to it: feedback on an answer (a quality or a
success, about the model that answered or one named), comparisons (up to six models asked the
same thing at once, their answers under blind labels) and their scores, each governed as its
caller's request and returned once what it taught is kept. The
:class:`~switchpoint.gateway.engine.Gateway`'s methods of the same names (``areport_outcome``,
``acompare``, ``ascore``) answer with these."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

import anyio.to_thread

from switchpoint._args import expect
from switchpoint._messages import json_quoted, listed_names
from switchpoint.catalog import model_names
from switchpoint.config import Settings
from switchpoint.errors import (
    InvalidInputError,
    NoUpstreamError,
    PermissionDeniedError,
    StoreError,
    UnknownModelError,
)
from switchpoint.gateway.caller_views import CallerViews
from switchpoint.gateway.capabilities import needs_of
from switchpoint.gateway.failover import none_answered
from switchpoint.gateway.feedback_log import NOTHING_LEARNED
from switchpoint.gateway.feedback_rules import FeedbackResult
from switchpoint.gateway.kept import not_kept
from switchpoint.gateway.learning import GatewayLearning
from switchpoint.gateway.library_args import as_list, no_client_options, stream_flag
from switchpoint.gateway.live import RouterState
from switchpoint.gateway.misconfig import no_upstream_message
from switchpoint.gateway.parsing import check_chat_body
from switchpoint.gateway.planning import ChatCall
from switchpoint.gateway.preferences import (
    MAX_COMPARE_MODELS,
    answer_detail,
    blind_detail,
    shuffled_labels,
)
from switchpoint.gateway.results import ChatCompletion, ChatStream
from switchpoint.gateway.via import check_received
from switchpoint.governance.governor import Governor, Policy, Principal
from switchpoint.learning.events import check_tenant


class LearningHost(Protocol):
    """What the learning door reads of its gateway: its parts, the settings in force, and the
    checks and the chat door a comparison goes through."""

    state: RouterState
    governor: Governor
    learning: GatewayLearning

    @property
    def settings(self) -> Settings: ...

    def check_serves_chat(self) -> None: ...
    def check_size(self, fields: Mapping[str, Any], *, route: bool = False) -> None: ...
    async def chat(self, call: ChatCall) -> ChatCompletion | ChatStream: ...
    def _policy(self, settings: Settings, tenant: str | None,
                key_id: str | None) -> Policy | None: ...


class LearningDoor:
    """Feedback, comparisons and scores for one gateway (``host``), whose ``views`` say what a
    caller may see of its memory."""

    def __init__(self, host: LearningHost, views: CallerViews) -> None:
        self._host = host
        self.state = host.state
        self.governor = host.governor
        self.learning = host.learning
        self._views = views

    async def report_outcome(self, decision_id: str | None, quality_score: float | None,
                             success: bool | None, *, model: str | None, comment: str | None,
                             key: str | None, tenant: str | None, cost: float | None,
                             principal: Principal | None, prompt_hash: str | None,
                             config_read: bool) -> FeedbackResult:
        """:meth:`Gateway.areport_outcome <switchpoint.gateway.engine.Gateway.areport_outcome>`."""
        if principal is None:
            principal = await self.governor.aprincipal(self._host.settings, key=key, tenant=tenant)
        who = principal or Principal()
        teachable = self._govern(who, model)
        result: FeedbackResult = await anyio.to_thread.run_sync(
            lambda: self.learning.report(decision_id, quality_score, success, model=model,
                                         tenant=who.tenant if principal is not None else None,
                                         key_id=who.key_id, comment=comment, cost=cost,
                                         teachable=teachable, prompt_hash=prompt_hash,
                                         config_read=config_read))
        await _kept(result.commits, "the feedback")
        return result

    async def compare(self, messages: Sequence[Mapping[str, Any]] | None = None,
                      models: Iterable[str] | None = None, *, prompt: str | None = None,
                      blind: bool = True, key: str | None = None, tenant: str | None = None,
                      principal: Principal | None = None, measured: bool = False,
                      via: Sequence[str] = (), **params: Any) -> dict[str, Any]:
        """:meth:`Gateway.acompare <switchpoint.gateway.engine.Gateway.acompare>`."""
        from switchpoint.gateway.planning import routing_text

        self._host.check_serves_chat()
        check_received(via)  # (before anything is planned or called)
        expect("blind", blind, bool, "True or False")
        if (prompt is None) == (messages is None):
            raise InvalidInputError("prompt", "give a prompt or messages (exactly one)")
        if messages is not None:  # (measured as the list it is sent as)
            messages = as_list(messages, self._host.settings.max_request_bytes)
        listed = model_names(models, "models")  # (a generator read once, before it is sized)
        if not measured:  # (in process: over HTTP, a body's fields are the request's as sent)
            no_client_options(params)
            # (every field the body would hold: a tenant named in process too)
            self._host.check_size({"messages": messages, "prompt": prompt, "models": listed,
                             "blind": blind, "tenant": tenant, **params})
        if prompt is not None:
            if not isinstance(prompt, str) or not prompt.strip():
                raise InvalidInputError("prompt", "must be a non-empty string")
            messages = [{"role": "user", "content": prompt}]
        if stream_flag(params):
            raise InvalidInputError("stream", "a comparison returns whole answers; leave "
                                              "stream out")
        self.learning.check_writable("the comparison", "no model was called")  # before paying
        live = self.state.live()
        settings = live.settings
        if settings.models is None:
            raise NoUpstreamError(no_upstream_message(settings))
        if principal is None:
            principal = await self.governor.aprincipal(settings, key=key, tenant=tenant)
        who = principal or Principal()
        catalog = live.router.catalog
        policy = self._host._policy(settings, who.tenant, who.key_id)
        if listed is None:  # the models the caller may name (a comparison calls each by
            # name) that auto may choose: a comparison teaches auto, so a model kept out of
            # it (auto: false, a judge say) is compared only when named
            nameable = (self.governor.nameable(policy, catalog) if policy is not None
                        else list(catalog.names))
            if len(nameable) < 2 and policy is not None and policy.models is not None:
                raise PermissionDeniedError(
                    "models: a comparison calls each model by name, and this key may name "
                    f"{len(nameable)} model(s) ({listed_names(nameable, quoted=True) or 'none'})"
                    "; compare with a key that may name at least two", param="models")
            kept_out = catalog.not_routed(nameable)
            allowed = [m for m in nameable if m not in kept_out]
            if len(allowed) < 2:
                unrouted = (f"; {listed_names(kept_out, quoted=True)} "
                            f"{'is' if len(kept_out) == 1 else 'are'} auto: false, compared "
                            "only when named" if kept_out else "")
                raise InvalidInputError(
                    "models", f"auto may choose {len(allowed)} of the models to compare "
                              f"({listed_names(allowed, quoted=True) or 'none'}{unrouted}): "
                              f"name the 2 to {MAX_COMPARE_MODELS} models to compare")
            if len(allowed) > MAX_COMPARE_MODELS:
                raise InvalidInputError("models", f"name the 2 to {MAX_COMPARE_MODELS} models "
                                                  "to compare (of "
                                                  f"{listed_names(allowed, quoted=True)})")
            listed = allowed
        names = listed
        if not 2 <= len(names) <= MAX_COMPARE_MODELS or len(set(names)) != len(names):
            raise InvalidInputError("models", f"give 2 to {MAX_COMPARE_MODELS} different "
                                              f"models, got {json_quoted(names[:10], 200)}")
        if policy is not None:  # (before the catalog: a name a key may not use is a 403,
            for name in names:  # known or not)
                self.governor.check_model(policy, name, catalog, field="models")
        unknown = [m for m in names if m not in catalog]
        if unknown:
            raise self.governor.unknown_model(
                policy, catalog, UnknownModelError("models", unknown, catalog.names), "auto")
        body: dict[str, Any] = {
            "model": names[0], "messages": as_list(messages, self._host.settings.max_request_bytes),
            **params}
        body = check_chat_body(body)
        text = routing_text(body, needs_of(body))
        # A caller of its own, so the comparison's answers pin no conversation of the caller's.
        caller = f"compare:{uuid.uuid4().hex}"
        calls = [self._host.chat(ChatCall(body={**body, "model": name}, caller=caller,
                                    tenant=who.tenant, key_id=who.key_id, exact=True,
                                    purpose="compare", via=tuple(via)))
                 for name in names]
        results = await asyncio.gather(*calls, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
        if all(isinstance(r, Exception) for r in results):
            raise none_answered(names, [r for r in results if isinstance(r, Exception)])
        labels = shuffled_labels(names)
        by_model: dict[str, ChatCompletion | Exception] = {
            m: r if isinstance(r, (ChatCompletion, Exception)) else RuntimeError(r)
            for m, r in zip(names, results, strict=True)}  # (an exact call never streams)
        costs = {m: r.switchpoint.cost_usd for m, r in by_model.items()
                 if isinstance(r, ChatCompletion)}  # the models that answered
        details = {m: answer_detail(r) for m, r in by_model.items()}
        compare, commit = await anyio.to_thread.run_sync(
            lambda: self.learning.new_compare(live, check_tenant(who.tenant), labels, costs,
                                              text, blind=blind, details=details))
        if commit is not None:  # kept before its id is handed out: a restart cannot lose it
            await _kept([commit], "the comparison", "its answers were not kept: run it again")
        answers = []
        for label, name in labels.items():
            result = by_model[name]
            info = content = None
            if isinstance(result, ChatCompletion):
                info = result.switchpoint
                content = ((result.get("choices") or [{}])[0].get("message") or {}).get(
                    "content")
            answer: dict[str, Any] = {"label": label, "model": None if blind else name,
                                      "content": content}
            # blind: a model's name, a cost (the catalog's prices), a latency (a large model
            # answers more slowly), a request id (the log names its model), its upstream's
            # own finish reason or failure would each tell the model behind the label
            answer.update(blind_detail(result) if blind else details[name])
            answer["latency_ms"] = None if blind or info is None else info.latency_ms
            answer["cost_usd"] = None if blind or info is None else info.cost_usd
            answers.append(answer)
        return {"compare_id": compare.compare_id, "tenant": compare.tenant,
                "expires_at": compare.expires, "blind": blind, "answers": answers}

    async def score(self, compare_id: str, scores: Mapping[str, float], *,
                    key: str | None = None, tenant: str | None = None,
                    principal: Principal | None = None) -> dict[str, Any]:
        """:meth:`Gateway.ascore <switchpoint.gateway.engine.Gateway.ascore>`."""
        if principal is None:
            principal = await self.governor.aprincipal(self._host.settings, key=key, tenant=tenant)
        who = principal or Principal()
        name = check_tenant(who.tenant)
        teachable = self._govern(who)
        compare, learned, commits = await anyio.to_thread.run_sync(
            lambda: self.learning.score(compare_id, scores, tenant=name, key_id=who.key_id,
                                        teachable=teachable))
        revealed: dict[str, Any] = {}
        try:
            await _kept(commits, "the scores")
            if compare.blind:  # the answer names the models: no score is blind after it
                await anyio.to_thread.run_sync(lambda: self.learning.reveal(compare))
        finally:
            if compare.blind:
                self.learning.release(compare)
        if compare.blind:
            # ... every label's, with what its answer really was (a failure's full reason)
            revealed["answers"] = [{"label": label, "model": model,
                                    **compare.details.get(model, {})}
                                   for label, model in compare.labels.items()]
        live = self.state.live()
        # The memory of the models the caller may use (a key's, or a tenant's named in
        # trust), as the model list and the learning status show them to it.
        return {"compare_id": compare.compare_id, "tenant": name, "scores": learned,
                **revealed,
                "memory": self._views.memory_status(live, name,
                                                    self._views.usable(live, principal)[1])}

    def _govern(self, who: Principal, model: object = None
                ) -> Callable[[str], None] | None:
        """Feedback and scores count against the caller's request rate like routing does (each
        is a row of the feedback log), and may be about only a model the caller reaches (it
        cannot teach a tenant about one its key may not use): a named ``model`` is checked
        now; the check returned (None: anyone may teach anything) is for the model the
        feedback turns out to be about."""
        policy = self._host._policy(self._host.settings, who.tenant, who.key_id)
        if policy is None:
            return None
        catalog = self.state.live().router.catalog
        if isinstance(model, str):
            unknown = UnknownModelError("model", [model], catalog.names)
            if model not in catalog and self.governor.allowed_names(policy, catalog) is None:
                raise unknown  # (a caller whose routing reaches the whole catalog)
            self.governor.check_reachable(policy, model, catalog)
            if model not in catalog:  # ('auto': reached, but no model to score)
                raise self.governor.unknown_model(policy, catalog, unknown, model)
        self.governor.count_route(policy)  # (what is refused above costs no request)
        if policy.models is None:
            return None
        return lambda name: self.governor.check_teachable(policy, name, catalog)


async def _kept(commits: Sequence[Future[None]], what: str, then: str = NOTHING_LEARNED
                ) -> None:
    """Wait until ``commits`` are in the store; a write the store refused (a full disk, a lock
    held too long) is a 503 saying so, not an internal error."""
    for commit in commits:
        try:
            await asyncio.wrap_future(commit)
        except StoreError as exc:
            raise not_kept(what, exc, then=then) from None
