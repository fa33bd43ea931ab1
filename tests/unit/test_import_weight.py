"""What starting up imports stays what it needs: every command builds the whole parser and
``switchpoint serve`` is started in many subprocesses, so a heavy import pulled in for a
constant is paid by every command. Each check runs a fresh interpreter and reads its
``sys.modules``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

# What building the parser (--help, and the start of every command) must not import: the
# config and its YAML, the store and SQLite, the labelling run and asyncio, the governance
# settings' and reports' modules, pydantic, NumPy (some 0.1 s; with the router, the policies
# and the weights that compute with it), and everything of the gateway and the server.
NOT_FOR_THE_PARSER = (
    "asyncio", "fastapi", "httpx", "numpy", "onnxruntime", "pydantic", "sqlite3", "uvicorn",
    "yaml", "switchpoint.policies.base", "switchpoint.router", "switchpoint.weights",
    "switchpoint.config", "switchpoint.gateway", "switchpoint.governance.reports",
    "switchpoint.governance.settings", "switchpoint.labelling", "switchpoint.server",
    "switchpoint.store",
)

# What the library's routing (``import switchpoint``: the router, the weights, fitting) must
# not import: the config's pydantic models, the gateway and its HTTP client, the server, the
# store, and the embedder's runtime until an embedder runs.
NOT_FOR_ROUTING = (
    "asyncio", "fastapi", "httpx", "onnxruntime", "pydantic", "sqlite3", "uvicorn", "yaml",
    "switchpoint.config", "switchpoint.gateway", "switchpoint.governance", "switchpoint.server",
    "switchpoint.store",
)

# What the commands that read the state a service keeps in data_dir (models list, experiments
# list) must not import: the gateway's engine, its providers and HTTP client, and asyncio; nor
# NumPy, with the live router's module, the router and the embedder, as they read no vector
# (models list with a config reads which models its weights profile from their manifest).
NOT_FOR_READING_STATE = (
    "asyncio", "fastapi", "httpx", "numpy", "switchpoint.embedding", "switchpoint.gateway.engine",
    "switchpoint.gateway.live", "switchpoint.gateway.providers", "switchpoint.router",
    "switchpoint.server", "uvicorn",
)


def among(loaded: set[str], names: tuple[str, ...]) -> list[str]:
    """The modules of ``loaded`` that are one of ``names`` or inside one of them."""
    return sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in names))


def loaded_after(script: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``script`` (not a name marked
    missing, with None, as a command marks httpx's command line)."""
    done = subprocess.run(
        [sys.executable, "-c", script + "\nimport json, sys\n"
         "print(json.dumps(sorted(k for k, v in sys.modules.items() if v is not None)))"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_parser_imports_nothing_a_command_has_not_asked_for() -> None:
    loaded = loaded_after("from switchpoint.cli import build_parser\n"
                          "build_parser().format_help()")
    assert "switchpoint.governance.cli" in loaded  # its commands are built, as --help shows
    assert among(loaded, NOT_FOR_THE_PARSER) == []


def test_importing_switchpoint_loads_what_routing_needs_alone() -> None:
    loaded = loaded_after("import switchpoint\nswitchpoint.Router, switchpoint.load_router")
    assert "numpy" in loaded  # the router's own
    assert among(loaded, NOT_FOR_ROUTING) == []


def test_loading_a_router_loads_what_routing_needs_alone() -> None:
    # (without its warm-up, which loads the embedder on a thread of its own, as it should, and
    # would race the listing; nor numpy.ma, which np.unique imports: some 15 ms of each start
    # that loads a router)
    loaded = loaded_after("import switchpoint\nswitchpoint.load_router(warm=False)")
    assert "switchpoint.policies.cluster" in loaded  # (the bundled weights' policy, loaded)
    assert among(loaded, (*NOT_FOR_ROUTING, "numpy.ma")) == []


def test_listing_the_models_and_experiments_a_data_dir_keeps_loads_no_engine(
        tmp_path: Path) -> None:
    from switchpoint.store import SQLiteStore

    data = tmp_path / "data"
    data.mkdir()
    SQLiteStore(data / "switchpoint.db").open().close()
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"""models:
  - {{name: good, profile: gpt-4-1106-preview, base_url: "http://127.0.0.1:9/v1",
     input_per_mtok: 10, output_per_mtok: 30}}
  - {{name: new, base_url: "http://127.0.0.1:9/v1", input_per_mtok: 1, output_per_mtok: 2}}
data_dir: {data}
""", encoding="utf-8")
    loaded = loaded_after(
        "import contextlib, io, json\n"
        "from switchpoint.cli import main\n"
        f"assert main(['models', 'list', '--data-dir', {str(data)!r}]) == 0\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        f"    assert main(['models', 'list', '--config', {str(config)!r}, '--json']) == 0\n"
        "assert [(r['name'], r['profiled']) for r in json.loads(out.getvalue())] == [\n"
        "    ('good', True), ('new', False)], out.getvalue()\n"
        f"assert main(['experiments', 'list', '--data-dir', {str(data)!r}]) == 0\n"
        # (nor build the validators of a chat body, which read no chat: they build on first use)
        "from switchpoint.gateway import parsing\n"
        "assert not parsing.ChatRequest.__pydantic_complete__, 'a chat body model was built'")
    assert "switchpoint.gateway.registered_offline" in loaded  # what they read the state by
    assert among(loaded, NOT_FOR_READING_STATE) == []


def test_a_refused_start_refuses_before_the_web_framework_loads(tmp_path: Path) -> None:
    # A port in use, a host this machine cannot serve on, a host that would expose open routes,
    # an admin token the config names but nobody exported: each is refused before FastAPI, the
    # service's schemas and uvicorn load (some 1 s of CPU), and before the router's modules and
    # NumPy; nothing of data_dir is made.
    import socket

    data = tmp_path / "data"
    config = tmp_path / "switchpoint.yaml"
    config.write_text("admin_token_env: SWITCHPOINT_TEST_TOKEN_NEVER_SET\n", encoding="utf-8")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = [(["--port", str(port)], f"cannot serve on 127.0.0.1:{port}"),
                   (["--host", "0.0.0.0"], 'refusing to serve on "0.0.0.0"'),
                   (["--host", "no.such.host.invalid", "--allow-unauthenticated"],
                    "cannot serve on no.such.host.invalid:8080"),
                   (["--config", str(config)], "$SWITCHPOINT_TEST_TOKEN_NEVER_SET is not set")]
        loaded = loaded_after(
            "import contextlib, io\nfrom switchpoint.cli import main\n"
            f"for args, why in {refused!r}:\n"
            "    err = io.StringIO()\n"
            "    with contextlib.redirect_stderr(err):\n"
            f"        code = main(['serve', '--data-dir', {str(data)!r}, *args])\n"
            "    assert code == 2 and why in err.getvalue(), (args, code, err.getvalue())")
    assert "switchpoint.server.runner" in loaded  # (it was refused there)
    assert among(loaded, ("fastapi", "numpy", "uvicorn", "switchpoint.router",
                          "switchpoint.server.app", "switchpoint.server.schemas")) == []
    assert not data.exists()


def test_reading_a_config_its_keys_and_its_cost_report_loads_no_numpy(tmp_path: Path) -> None:
    # The commands that read a config and hold no array (keys list, report cost, a config's
    # check, prune, which reads where the learning checkpoint stands, not its arrays) need
    # neither NumPy nor the router, the policies and the weights it comes with.
    import numpy as np

    from switchpoint.learning.checkpoint import Checkpoint, State, write_checkpoint
    from switchpoint.store import SQLiteStore

    (tmp_path / "data").mkdir()
    SQLiteStore(tmp_path / "data" / "switchpoint.db").open().close()
    write_checkpoint(tmp_path / "data" / "learning.checkpoint", Checkpoint(
        "k", 1, "e1", State({"n": 1}, {"x": np.arange(6.0).reshape(2, 3)})))
    config = tmp_path / "switchpoint.yaml"
    config.write_text(f"""models:
  - {{name: good, profile: gpt-4-1106-preview, base_url: "http://127.0.0.1:9/v1",
     input_per_mtok: 10, output_per_mtok: 30, context_window: 128000}}
data_dir: {tmp_path / 'data'}
tenants:
  acme: {{}}
""", encoding="utf-8")
    loaded = loaded_after("from switchpoint.cli import main\n"
                          f"assert main(['keys', 'list', '--config', {str(config)!r}]) == 0\n"
                          f"assert main(['report', 'cost', '--config', {str(config)!r}]) == 0\n"
                          "assert main(['prune', '--older-than', '30', '--config', "
                          f"{str(config)!r}]) == 0")
    assert {"switchpoint.config", "switchpoint.governance.reports",
            "switchpoint.store.retention"} <= loaded
    assert among(loaded, ("numpy", "switchpoint.policies.base", "switchpoint.router",
                          "switchpoint.weights")) == []


def test_a_commands_httpx_comes_without_its_own_command_line() -> None:
    # httpx imports click, rich and pygments for its command line where they are installed
    # (the test extras bring them): a command's process (label, serve) never runs it.
    loaded = loaded_after("from switchpoint.cli import main\n"
                          "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
                          "import httpx\nhttpx.Client().close()")
    assert "httpx" in loaded
    assert among(loaded, ("click", "pygments", "rich")) == []


@pytest.mark.parametrize(("name", "module"), [
    ("SLAConfig", "switchpoint.governance.settings"),
    ("GovernanceSettings", "switchpoint.governance.settings"),
    ("parse_budgets", "switchpoint.governance.budgets"),
    ("KeyStore", "switchpoint.governance.keys"),
])
def test_the_governance_names_load_on_use(name: str, module: str) -> None:
    import switchpoint.governance as governance

    value = getattr(governance, name)
    assert value.__module__ == module
    assert name in governance.__all__


def test_sla_config_is_the_sla_settings() -> None:
    from switchpoint.governance import SLAConfig, SLASettings

    assert SLAConfig is SLASettings


def test_the_limits_the_help_quotes_are_the_ones_enforced() -> None:
    from switchpoint import _limits, router, training
    from switchpoint.governance import reports, settings
    from switchpoint.labelling import run
    from switchpoint.policies import ClusterPolicy, KnnPolicy
    from switchpoint.store import retention

    assert ClusterPolicy().get_params()["n_clusters"] == _limits.DEFAULT_CLUSTERS == 40
    assert KnnPolicy().get_params()["k"] == _limits.DEFAULT_NEIGHBOURS == 25
    assert router.MAX_BATCH is _limits.MAX_BATCH
    assert training.DEFAULT_EMBEDDER_ID is _limits.DEFAULT_EMBEDDER_ID

    assert (run.DEFAULT_CONCURRENCY, run.MAX_CONCURRENCY) == (4, 256)
    assert retention.MAX_RETENTION_DAYS is _limits.MAX_RETENTION_DAYS
    assert (reports.MAX_REQUESTS_PER_HOUR, reports.MAX_SINCE_HOURS) == (1e9, 24 * 366)
    assert (settings.MAX_RPM, settings.MAX_TPM) == (10_000_000, 10_000_000_000)


def test_the_services_answer_models_build_when_first_used() -> None:
    # A start (the app and its server, loaded once the start passed its checks) builds no
    # validator for the wire models it has not used yet: each builds on its first answer, body
    # or API document (the request bodies the routes document as they load are built then).
    # What they validate and the document they make are the same.
    done = subprocess.run(
        [sys.executable, "-c",
         "import json\nfrom pydantic import BaseModel\n"
         "from switchpoint.server import schemas, serving\n"
         "models = [v for v in vars(schemas).values() if isinstance(v, type)\n"
         "          and issubclass(v, BaseModel) and v.__module__ == schemas.__name__]\n"
         "print(json.dumps([len(models), sorted(m.__name__ for m in models\n"
         "                                      if m.__pydantic_complete__)]))"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    count, built = json.loads(done.stdout.splitlines()[-1])
    assert count > 60
    assert built == ["RouteRequest"]
