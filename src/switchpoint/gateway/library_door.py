"""The in-process chat door: a chat request made of a Python program's arguments (the
messages, the model, the OpenAI fields as keywords, a session, λ, the models ``auto`` may
choose, a decision to follow, a key or tenant), checked as the HTTP door checks a body, then
planned and called on the same path. :class:`LibraryDoor` is the
:class:`~switchpoint.gateway.engine.Gateway`'s; the gateway's ``acomplete`` and ``astream``
(and through them ``complete`` and ``stream``) answer with it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from switchpoint._args import expect
from switchpoint.catalog import model_names
from switchpoint.config import Settings
from switchpoint.decision import RoutingDecision, check_cost_weight
from switchpoint.errors import InvalidInputError
from switchpoint.gateway.library_args import as_list, no_client_options, stream_flag
from switchpoint.gateway.parsing import check_chat_body, check_model_count
from switchpoint.gateway.planning import ChatCall
from switchpoint.gateway.results import ChatCompletion, ChatStream
from switchpoint.governance.governor import Governor, Principal


class LibraryHost(Protocol):
    """What the in-process chat door reads of its gateway, each time it needs it: the
    settings in force, its governor (who a key or tenant is), whether it serves chat, the
    size check the HTTP door applies to a body, and the chat path itself."""

    governor: Governor

    @property
    def settings(self) -> Settings: ...

    def check_serves_chat(self) -> None: ...
    def check_size(self, fields: Mapping[str, Any], *, route: bool = False) -> None: ...
    async def chat(self, call: ChatCall) -> ChatCompletion | ChatStream: ...


class LibraryDoor:
    """The chat requests a Python program makes of one gateway (``host``)."""

    def __init__(self, host: LibraryHost) -> None:
        self._host = host

    async def answer(self, messages: Sequence[Mapping[str, Any]] | None, model: str, *,
                     stream: bool, session_id: str | None, cost_weight: float | None,
                     models: Sequence[str] | None, decision: RoutingDecision | None,
                     exact: bool, key: str | None, tenant: str | None,
                     params: dict[str, Any]) -> ChatCompletion | ChatStream:
        """The answer to a chat request made of a program's arguments: a
        :class:`ChatCompletion` (:meth:`Gateway.acomplete
        <switchpoint.gateway.engine.Gateway.acomplete>`), or where ``stream`` a
        :class:`ChatStream` (:meth:`Gateway.astream
        <switchpoint.gateway.engine.Gateway.astream>`). The ``stream`` flag among ``params``
        may only agree (a completion asked for with ``stream=True`` is refused, naming
        ``astream``), the openai client's options are refused, and the request is checked and
        made as the HTTP door's would be."""
        host = self._host
        host.check_serves_chat()
        if stream_flag(params) and not stream:
            raise InvalidInputError("stream", "use astream() (or stream()) for a streamed answer")
        no_client_options(params)
        if messages is None:
            messages = params.pop("messages", None)
        body: dict[str, Any] = {
            "model": model, "messages": as_list(messages, host.settings.max_request_bytes),
            **params}
        if stream:
            body["stream"] = True
        host.check_size(body)
        body = check_chat_body(body)
        if cost_weight is not None:
            cost_weight = check_cost_weight(cost_weight, "cost_weight")
        expect("session_id", session_id, str, "a string (the conversation's id)",
               optional=True)
        expect("exact", exact, bool, "True or False")
        expect("decision", decision, RoutingDecision, "a RoutingDecision (what route() "
                                                      "returned)", optional=True)
        names = model_names(models, "models")
        who = (await host.governor.aprincipal(host.settings, key=key, tenant=tenant)
               or Principal())
        return await host.chat(ChatCall(
            body=body, session_id=session_id, caller=who.key_id or "in-process",
            tenant=who.tenant, key_id=who.key_id, cost_weight=cost_weight, decision=decision,
            exact=exact,
            models=check_model_count(names, "models") if names is not None else None))
