"""The service's wire models build their validators when first used (``defer_build``), so a
mistake in one (an annotation naming nothing, a validator of a field it lacks) would show at
the first request that uses it, not as the service starts: here every model the server's
modules define is built, so such a mistake fails the suite."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest
from pydantic import BaseModel, PydanticUserError
from pydantic_core import SchemaSerializer, SchemaValidator

import switchpoint.server as server


def _server_modules() -> list[ModuleType]:
    return [importlib.import_module(found.name)
            for found in pkgutil.walk_packages(server.__path__, f"{server.__name__}.")]


def _wire_models(modules: list[ModuleType]) -> list[type[BaseModel]]:
    """Every pydantic model a module of ``modules`` defines (not one it imports)."""
    return [value for module in modules for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, BaseModel)
            and value.__module__ == module.__name__]


def test_every_wire_model_of_the_server_builds_its_validator_and_serializer() -> None:
    models = _wire_models(_server_modules())
    # (the routing answer and body, the errors' shapes, the keys' pages: dozens of them)
    assert len(models) > 50 and {"RouteRequest", "RouteResponse"} <= {m.__name__ for m in models}
    for model in models:
        try:
            model.model_rebuild(force=True)
        except (PydanticUserError, NameError, TypeError) as exc:  # (what a mistake raises)
            pytest.fail(f"{model.__module__}.{model.__qualname__} does not build: {exc}")
        assert isinstance(model.__pydantic_validator__, SchemaValidator), model
        assert isinstance(model.__pydantic_serializer__, SchemaSerializer), model

