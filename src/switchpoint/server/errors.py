"""Every error answer of the HTTP service is rendered here, in one of two shapes.

- The routing and admin routes: ``{"error": {"code", "message", "param"}}``.
- The OpenAI-compatible gateway (``/v1/chat/completions``, ``/v1/models`` and any other ``/v1/``
  path that is not ``/v1/route`` or ``/v1/router/...``): OpenAI's ``{"error": {"message",
  "type", "param", "code"}}``, as a JSON body or, once a stream has started, as an SSE
  ``error`` event.

Bad input is a 400 ``invalid_request`` naming the field (FastAPI's 422 is replaced); the
gateway's own errors carry their status and code (404 ``model_not_found``, 503
``router_not_ready`` with ``Retry-After``, ...); an outcome for a decision that is not
remembered (for the caller's tenant) is a 404 ``decision_not_found``; anything unexpected is a 500
``internal_error`` in the same shape, logged with its traceback, never a bare error page.
Every message is redacted (:mod:`switchpoint._redact`) before it goes out.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, get_args

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Match

from switchpoint._messages import cut, invalid_from_validation
from switchpoint._redact import redact
from switchpoint.errors import (
    ConfigError,
    DecisionNotFoundError,
    FailoverError,
    GatewayClosedError,
    GatewayError,
    InvalidInputError,
    ProviderError,
    StoreError,
    SwitchpointError,
    WeightsError,
)
from switchpoint.server.head import sent_method
from switchpoint.server.paths import app_path

log = logging.getLogger("switchpoint.server")

# OpenAI's error ``type`` for a status (what its own API sends).
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "invalid_request_error",
                 405: "invalid_request_error", 409: "invalid_request_error",
                 429: "rate_limit_error", 503: "service_unavailable"}


@dataclass(frozen=True)
class ErrorAnswer:
    """One error answer, before it is given a shape."""

    status: int
    code: str
    message: str
    param: str | None = None
    headers: Mapping[str, str] | None = None
    openai_body: dict[str, Any] | None = None  # an upstream's own envelope, passed through

    def body(self) -> dict[str, Any]:
        """``{"error": {"code", "message", "param"}}``."""
        return {"error": {"code": self.code, "message": self.message, "param": self.param}}

    def openai(self) -> dict[str, Any]:
        """OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""
        if self.openai_body is not None:
            return self.openai_body
        kind = _OPENAI_TYPES.get(self.status, "api_error" if self.status >= 500
                                 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param,
                          "code": self.code}}

    def response(self, *, openai: bool = False,
                 headers: Mapping[str, str] | None = None) -> JSONResponse:
        merged = {**(self.headers or {}), **(headers or {})}
        return JSONResponse(self.openai() if openai else self.body(), status_code=self.status,
                            headers=merged or None)


#: The most characters of an error's message, and of its ``param``, an answer carries.
MAX_MESSAGE = 4096
MAX_PARAM = 200


def answer_for(exc: BaseException) -> ErrorAnswer:
    """The error answer for an exception switchpoint raised on purpose (else a 500), its
    message and ``param`` redacted and cut short: an error may quote what the caller sent (a
    model name, a list of candidates, a field's name, which is any string the client sent),
    and a secret pasted there is not repeated, nor a megabyte of it."""
    return redacted(_answer_for(exc))


def redacted(answer: ErrorAnswer) -> ErrorAnswer:
    """``answer`` with its message and ``param`` redacted and cut short, as every error answer
    goes out (:func:`answer_for`'s, and a guard's refusal of a request's target or headers,
    which quotes what the client sent there: a key pasted in a ``Host`` or an ``Origin``)."""
    param = None if answer.param is None else cut(redact(answer.param), MAX_PARAM)
    return replace(answer, message=cut(redact(answer.message), MAX_MESSAGE), param=param)


def _answer_for(exc: BaseException) -> ErrorAnswer:
    if isinstance(exc, FailoverError):
        return ErrorAnswer(exc.status, exc.code, exc.message, None,
                           _gateway_headers(exc) or None, exc.to_openai_error())
    if isinstance(exc, GatewayError):
        headers = _gateway_headers(exc)
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return ErrorAnswer(exc.status, exc.code, exc.message, exc.param, headers or None)
    if isinstance(exc, InvalidInputError):
        return ErrorAnswer(400, "invalid_request", str(exc), exc.field)
    if isinstance(exc, DecisionNotFoundError):
        return ErrorAnswer(404, "decision_not_found", str(exc), exc.field)
    if isinstance(exc, ConfigError):
        return ErrorAnswer(400, "invalid_config", str(exc), exc.key)
    if isinstance(exc, WeightsError):
        return ErrorAnswer(400, "invalid_config", f"weights: {exc}", "weights")
    if isinstance(exc, GatewayClosedError):  # (nothing failed: the service is stopping)
        return ErrorAnswer(503, "service_closing", "the service is shutting down, so it did "
                           "nothing with this request (nothing was routed, called or kept); "
                           "send it again in a moment: it reaches the service once it is back, "
                           "or the one that takes over", None, {"Retry-After": "1"})
    if isinstance(exc, StoreError) and exc.damaged:  # waiting does not mend it
        return ErrorAnswer(503, "storage_unavailable", f"the service cannot use its state: "
                           f"{exc.reason} (its log names the file and what to do)", None,
                           {"x-should-retry": "false"})  # (the openai clients' retries)
    if isinstance(exc, StoreError):  # (told by the database's words: no path of the server's)
        reason = exc.reason if exc.reason != str(exc) else "its storage failed"
        return ErrorAnswer(503, "storage_unavailable", f"the service could not keep this "
                           f"({reason}); try again shortly (when data_dir's disk is full or "
                           "another process holds its database's lock, free space or stop "
                           "that process first)", None, {"Retry-After": "5"})
    kind = type(exc).__name__
    return ErrorAnswer(500, "internal_error", f"{kind}: the server failed on this request; "
                                              "see its log")


def _gateway_headers(exc: GatewayError) -> dict[str, str]:
    """``Retry-After`` when waiting may help; ``x-should-retry: false`` (which the official
    openai clients obey) when no retry can help until the configuration changes."""
    headers = dict(_retry_after(exc.retry_after) or {})
    if exc.permanent:
        headers["x-should-retry"] = "false"
    return headers


def _retry_after(seconds: float | None) -> dict[str, str] | None:
    if seconds is None:
        return None
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def sse_error(error: ProviderError | BaseException) -> bytes:
    """An SSE ``error`` event the ``openai`` clients raise on (``openai.APIError``)."""
    if isinstance(error, ProviderError):
        payload = error.to_openai_error()
    else:
        payload = {"error": {"message": f"the stream failed: {type(error).__name__}",
                             "type": "stream_broken", "code": "stream_broken", "param": None}}
    return b"event: error\ndata: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def body_fields(request: Request) -> list[str]:
    """The fields of the JSON body the request's route takes (its pydantic model's), so an
    unknown field's error can list the known ones; empty when the route takes no model."""
    field = getattr(request.scope.get("route"), "body_field", None)
    annotation = getattr(getattr(field, "field_info", None), "annotation", None)
    for kind in (annotation, *get_args(annotation)):  # KeyRotate | None: the model in it
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            return list(kind.model_fields)
    return []


def is_openai_path(path: str) -> bool:
    """Paths answered in OpenAI's error shape: the gateway's, not routing's or admin's (nor a
    path below routing's, ``/v1/route/``, which a 404 tells to send to ``/v1/route``)."""
    return (path.startswith("/v1/") and not path.startswith("/v1/router")
            and path != "/v1/route" and not path.startswith("/v1/route/"))


def shown_path(request: Request) -> str:
    """The request's path as an error message or a log line quotes it: a key pasted there
    redacted, at most 200 characters, and control characters (a newline, an ANSI escape: the
    path is percent-decoded) escaped, so a client cannot write lines of its own into the log."""
    path = cut(redact(request.url.path), 200)
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in path)


def log_store_failure(request: Request, exc: BaseException) -> bool:
    """Log a :class:`StoreError` with its file (the client is told only the database's
    words); whether ``exc`` was one."""
    if not isinstance(exc, StoreError):
        return False
    if isinstance(exc, GatewayClosedError):
        return True  # a refusal as the service stops, not a failure of its storage
    log.error("%s %s: %s", sent_method(request), shown_path(request), exc)
    return True


def _without_trailing_slash(request: Request) -> str | None:
    """The route a path with a slash too many meant (``/v1/route/``: ``/v1/route``), if any."""
    path = request.url.path
    if len(path) < 2 or not path.endswith("/"):
        return None
    scope = {**request.scope, "path": path.rstrip("/")}
    for route in request.app.router.routes:
        if route.matches(scope)[0] is not Match.NONE:
            return str(scope["path"])
    return None


# The methods a route of the service may take, in the order an answer names them.
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def allowed_methods(request: Request) -> list[str]:
    """The methods some route takes the request's path with: those of every route of that
    path, not only of the first one the router met (``/v1/router/keys/{id}`` is a GET and a
    DELETE), and HEAD wherever GET is (see :mod:`switchpoint.server.head`)."""
    routes = request.app.router.routes
    methods = [method for method in _METHODS
               if any(route.matches({**request.scope, "method": method})[0] is Match.FULL
                      for route in routes)]
    return [m for method in methods for m in ((method, "HEAD") if method == "GET"
                                              else (method,))]


_INVALID_DOC = ("Invalid request: a path or query parameter (or the body) is not what the "
                "route takes; the error names it (param).")


def error_content(path: str) -> dict[str, Any]:
    """The ``content`` of an error response the API document lists for ``path``: the envelope
    its errors come in (OpenAI's on the OpenAI routes)."""
    return {"application/json": {"schema": {"$ref": "#/components/schemas/" + (
        "ChatErrorResponse" if is_openai_path(path) else "ErrorResponse")}}}


def document_refusal(schema: dict[str, Any], status: int, doc: str,
                     methods: Collection[str] | None = None,
                     operations: Collection[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The OpenAPI document ``schema`` with the answer ``status`` described by ``doc`` (a
    refusal the middleware gives, before any route, or one some routes give) on every
    operation, or on those of ``methods`` (lowercase, as the document names them), or on the
    ``operations`` listed (path and lowercase method), in the shape of that operation's other
    errors; where the operation lists that status already, ``doc`` is added to its
    description."""
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or (methods is not None
                                                   and method not in methods) or (
                    operations is not None and (path, method) not in operations):
                continue
            responses = operation.setdefault("responses", {})
            refused = responses.setdefault(str(status), {"description": "",
                                                         "content": error_content(path)})
            refused["description"] = " Or ".join(filter(None, (refused["description"], doc)))
    return schema


def operations(routes: Iterable[BaseRoute]) -> set[tuple[str, str]]:
    """The operations of ``routes`` (the API routes among them), as :func:`document_refusal`
    takes them: each path as the document writes it, with each method in lowercase."""
    return {(route.path_format, method.lower()) for route in routes
            if isinstance(route, APIRoute) for method in route.methods or ()}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document ``schema`` as the handlers :func:`install` registers answer: bad
    input a 400 in the shape of the operation's other errors (the OpenAI envelope on the OpenAI
    routes), never FastAPI's 422 with its validation detail, which the document lists by
    default (and then its schemas, which nothing else uses). Every error an OpenAI route
    lists is in OpenAI's envelope, as it is answered there."""
    plain = error_content("/v1/route")
    for path, item in schema.get("paths", {}).items():
        shape = error_content(path)
        for operation in item.values():
            responses = operation.get("responses") if isinstance(operation, dict) else None
            if not isinstance(responses, dict):
                continue
            if is_openai_path(path):
                for response in responses.values():
                    if isinstance(response, dict) and response.get("content") == plain:
                        response["content"] = shape
            if "422" not in responses:
                continue
            del responses["422"]
            responses.setdefault("400", {"description": _INVALID_DOC, "content": shape})
    if "#/components/schemas/HTTPValidationError" not in json.dumps(schema.get("paths", {})):
        schemas = schema.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):  # (the second, the first's item)
            schemas.pop(name, None)
    return schema


def install(app: FastAPI) -> None:
    """Register the handlers that give every error its shape."""

    def render(request: Request, answer: ErrorAnswer) -> JSONResponse:
        return answer.response(openai=is_openai_path(app_path(request.scope)))

    async def switchpoint_error(request: Request, exc: Exception) -> JSONResponse:
        answer = answer_for(exc)
        if not log_store_failure(request, exc) and answer.status >= 500 and not isinstance(
                exc, GatewayError):
            log.exception("unexpected error on %s %s", sent_method(request), shown_path(request),
                          exc_info=exc)
        return render(request, answer)

    async def request_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, (RequestValidationError, ValidationError))
        errors = list(exc.errors())
        missing = [str(e["loc"][1]) for e in errors
                   if e["type"] == "missing" and tuple(e["loc"])[:1] == ("query",)
                   and len(e["loc"]) > 1]
        if missing:  # say where it goes: a route's parameters are in its query string
            return render(request, answer_for(InvalidInputError(missing[0], (
                "is required, in the query string: "
                f"{shown_path(request)}?{'&'.join(f'{name}=...' for name in missing)}"))))
        if isinstance(exc, RequestValidationError):  # a query or path parameter is named as is
            errors = [{**e, "loc": tuple(e["loc"])[1:]}
                      if tuple(e["loc"])[:1] in (("query",), ("path",)) else e for e in errors]
        return render(request, answer_for(invalid_from_validation(
            errors, body_fields(request), "request")))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "invalid_request" if exc.status_code < 500
                         else "internal_error")
        path = shown_path(request)
        message = f"{sent_method(request)} {path}: {exc.detail}"
        if exc.status_code == 404:
            meant = _without_trailing_slash(request)
            message += (f"; did you mean {meant}?" if meant is not None
                        else "; GET /openapi.json lists the routes")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            allowed = allowed_methods(request)
            message += f"; this path takes {', '.join(allowed)}"
            headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        answer = ErrorAnswer(exc.status_code, code, message, None, headers)
        return render(request, answer)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", sent_method(request), shown_path(request),
                      exc_info=exc)
        return render(request, answer_for(exc))

    app.add_exception_handler(SwitchpointError, switchpoint_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
