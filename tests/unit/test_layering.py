"""The layers stay as the folder names say: the core and the gateway's logic know nothing of
the web framework, and no module imports itself in a circle."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
WEB = ("fastapi", "starlette", "uvicorn")


@functools.cache  # the sources do not change under the tests: parsed once, for all three
def module_imports() -> dict[str, frozenset[str]]:
    """Every module's module-level imports (names, as written)."""
    found: dict[str, frozenset[str]] = {}
    for path in (SRC / "switchpoint").rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        names: set[str] = set()
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[name] = frozenset(names)
    return found


def test_only_the_server_imports_the_web_framework() -> None:
    offenders = {module: sorted(n for n in names if n.split(".")[0] in WEB)
                 for module, names in module_imports().items()
                 if not module.startswith("switchpoint.server")}
    assert {m: n for m, n in offenders.items() if n} == {}


def test_the_gateway_and_the_core_never_import_the_server() -> None:
    offenders = [module for module, names in module_imports().items()
                 if not module.startswith("switchpoint.server") and module != "switchpoint.cli"
                 and any(n.startswith("switchpoint.server") for n in names)]
    assert offenders == []


def test_no_import_circles() -> None:
    imports = module_imports()
    graph = {m: {n for n in names if n in imports} for m, names in imports.items()}

    def reachable(start: str) -> set[str]:
        seen: set[str] = set()
        todo = [start]
        while todo:
            for nxt in graph[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    assert [m for m in graph if m in reachable(m)] == []
