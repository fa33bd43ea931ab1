"""Every error the HTTP API returns has one shape: ``{"error": {"code", "message", "param"}}``.

Bad input is a 400 ``invalid_request`` naming the field (FastAPI's 422 is replaced), a router
still loading is a 503 ``router_not_ready`` with ``Retry-After``, and anything unexpected is a 500
``internal_error`` in the same shape (logged with its traceback), never a bare error page.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from switchpoint._messages import key_path, reason
from switchpoint.config import ConfigError
from switchpoint.errors import InvalidInputError

log = logging.getLogger("switchpoint.gateway")


class ApiError(Exception):
    """An error answer: HTTP status, machine-readable code, message and the field at fault."""

    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers

    @classmethod
    def invalid(cls, param: str, message: str) -> ApiError:
        return cls(400, "invalid_request", message, param)


class NotReadyError(ApiError):
    def __init__(self, message: str) -> None:
        super().__init__(503, "router_not_ready", message, None, {"Retry-After": "1"})


def error_body(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "param": param}}


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.code, exc.message, exc.param), status_code=exc.status,
                        headers=exc.headers)


def from_validation(errors: list[Any], fields: list[str], root: str = "body") -> ApiError:
    """The first pydantic error of a request body as a 400 naming the field."""
    err = errors[0]
    loc = tuple(p for p in err["loc"] if p != "body") if err["loc"][:1] == ("body",) else tuple(
        err["loc"])
    kind = err["type"]
    if kind == "json_invalid":
        detail = (err.get("ctx") or {}).get("error", "")
        if "EOF while parsing a value at line 1 column 0" in detail:
            return ApiError.invalid(root, f"{root}: is empty; send a JSON object such as "
                                          '{"prompt": "..."}')
        return ApiError.invalid(root, f"{root}: is not valid JSON ({detail})")
    whole = not loc or all(isinstance(p, int) for p in loc)
    if whole and kind in ("model_type", "model_attributes_type", "dict_type", "missing"):
        return ApiError.invalid(root, f"{root}: must be a JSON object with the fields "
                                      f"{', '.join(fields)}")
    param = str(loc[0]) if loc else root
    if kind == "extra_forbidden":
        return ApiError.invalid(param, f"{key_path(loc, root)}: is not a field of this request; "
                                       f"the fields are {', '.join(fields)}")
    return ApiError.invalid(param, f"{key_path(loc, root)}: {reason(err)}")


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the one shape."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidInputError)
        return error_response(ApiError.invalid(exc.field, str(exc)))

    async def config_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ConfigError)
        return error_response(ApiError(400, "invalid_config", str(exc), exc.key))

    async def request_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, (RequestValidationError, ValidationError))
        return error_response(from_validation(list(exc.errors()), [], "request"))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        codes = {404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "invalid_request" if exc.status_code < 500
                         else "internal_error")
        message = f"{request.method} {request.url.path}: {exc.detail}"
        if exc.status_code == 404:
            message += "; see GET /docs for the routes"
        return JSONResponse(error_body(code, message), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path,
                      exc_info=exc)
        return JSONResponse(error_body("internal_error", f"{type(exc).__name__}: the server "
                                       "failed on this request; see its log"), status_code=500)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(InvalidInputError, invalid_input)
    app.add_exception_handler(ConfigError, config_error)
    app.add_exception_handler(RequestValidationError, request_validation)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
