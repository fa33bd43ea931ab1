"""Real answers checked against the schemas the service's OpenAPI document publishes for them:
each validates, and each field a schema lists is one the answers need (drop it from the
published schema and some answer no longer validates, as the schema allows no other field)."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import httpx
import schemathesis
from schemathesis.core.failures import Failure, FailureGroup


class Published:
    """The document of a running service, and the answers checked against it (kept, to check
    afterwards that each field of a schema is needed by one of them)."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.api = schemathesis.openapi.from_dict(document)
        self.answers: list[tuple[str, str, httpx.Response]] = []

    def schema_name(self, method: str, path: str, status: int = 200) -> str:
        """The component the answer's schema names (not an empty or open one)."""
        answer = self.document["paths"][path][method.lower()]["responses"][str(status)]
        ref: str = answer["content"]["application/json"]["schema"]["$ref"]
        name = ref.removeprefix("#/components/schemas/")
        assert self.document["components"]["schemas"][name]["additionalProperties"] is False
        return name

    def valid(self, method: str, path: str, response: httpx.Response,
              status: int = 200) -> dict[str, Any]:
        """``response``'s body, once it has validated against ``path``'s published schema."""
        assert response.status_code == status, response.text
        self.api[path][method].validate_response(response)  # raises when it does not
        self.answers.append((method, path, response))
        body: dict[str, Any] = response.json()
        return body

    def each_field_needed(self, components: Iterable[str],
                          optional: Iterable[str] = ()) -> None:
        """Every field of each of ``components`` (but those of ``optional``, COMPONENT.FIELD)
        is one an answer checked so far needs: without it in the published schema, one of
        them fails to validate."""
        skip = set(optional)
        for component in components:
            properties = self.document["components"]["schemas"][component]["properties"]
            assert properties, component
            for field in properties:
                if f"{component}.{field}" in skip:
                    continue
                assert not self._all_valid(self._without(component, field)), (
                    f"no answer needs {component}.{field}")

    def _without(self, component: str, field: str) -> Any:
        document = copy.deepcopy(self.document)
        schema = document["components"]["schemas"][component]
        del schema["properties"][field]
        if field in schema.get("required", []):
            schema["required"].remove(field)
        return schemathesis.openapi.from_dict(document)

    def _all_valid(self, api: Any) -> bool:
        for method, path, response in self.answers:
            try:
                api[path][method].validate_response(response)
            except (Failure, FailureGroup):
                return False
        return True
