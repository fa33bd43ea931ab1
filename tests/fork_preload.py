"""Imported by the fork server of :mod:`tests.fork_server` alone, before it forks any command:
the modules the commands the tests fork import (a start of ``switchpoint serve``: FastAPI,
uvicorn, the service's schemas, NumPy; the commands the kill sweeps run), so that each child
starts where a process that has imported them would be. It starts no thread or event loop, and
reads no setting at import. ONNX Runtime is left out: it starts threads as it is imported, and
switchpoint imports it with its telemetry turned off through the environment (see
switchpoint.embedding.onnx_runtime).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, cast

# As switchpoint's main() does in a process that has not imported httpx: httpx then leaves out
# its own command line's modules.
cast(dict[str, Any], sys.modules).setdefault("httpx._main", None)

PRELOAD = (
    # The commands the kill sweeps run (tests/integration/kill_points.py): numpy.ma too, which
    # numpy imports on a router's first np.unique: each child imported it anew, a seventh of
    # the children's CPU in a profile of the labelling sweeps. The gateway's and governance's
    # packages load their modules on use, so those a command uses are named here (the engine,
    # its providers, the governor, the commands' parsers): without them each child of a
    # labelling sweep imported 42 modules anew, 0.08 s of its 0.19 s of CPU.
    "switchpoint.cli", "switchpoint.labelling.run", "switchpoint.gateway",
    "switchpoint.gateway.engine", "switchpoint.gateway.providers",
    "switchpoint.gateway.providers.openai", "switchpoint.gateway.providers.anthropic",
    "switchpoint.gateway.providers.registry", "switchpoint.governance.governor",
    "switchpoint.governance.cli", "switchpoint.learning.cli", "switchpoint.models_cli",
    "switchpoint.registration", "switchpoint.training", "switchpoint.weights", "httpx",
    "anyio.to_thread", "encodings.idna", "statistics", "numpy", "numpy.ma", "yaml",
    # A start of the service, as far as it serves (its embedder but ONNX Runtime): some 1.3 s
    # of CPU a start spent importing them.
    "switchpoint.server.app", "switchpoint.server.serving", "switchpoint.server.runner",
    "uvicorn", "uvicorn.lifespan.on", "uvicorn.loops.auto", "uvicorn.loops.asyncio",
    "uvicorn.protocols.http.auto", "uvicorn.protocols.http.h11_impl",
    "uvicorn.protocols.websockets.auto", "anyio._backends._asyncio",
    "switchpoint.embedding.minilm_graph", "switchpoint.embedding.onnx_runtime", "tokenizers",
    "urllib.request", "http.cookiejar",
    # The forked commands' own entry.
    "tests.fork_server",
)

for _name in PRELOAD:
    importlib.import_module(_name)
