"""ONNX Runtime, imported with its telemetry off: the one place switchpoint imports it.

ONNX Runtime 1.32 sends usage telemetry on Linux and macOS too: importing it writes a device
id and an event queue under ``~/.cache/Microsoft/DeveloperTools`` and starts an uploader that
looks up and calls Microsoft's event collector (the process's path, the machine's OS, CPU and
memory among what it sends). switchpoint reaches no network while it serves, so this sets
``ORT_DISABLE_TELEMETRY=1`` before the import, which ONNX Runtime reads once, when it is first
imported: nothing is written, queued or sent. A value the user set for the variable is kept
(``ORT_DISABLE_TELEMETRY=0`` turns the telemetry back on).

The variable is set in this process's environment, so programs it starts inherit it. When the
process imported ONNX Runtime before (a user's own ``import onnxruntime``), the setting comes
too late: its non-essential events are then turned off through its API, and one warning says
to set the variable before that import.
"""

from __future__ import annotations

import logging
import os
import sys
from types import ModuleType

#: The variable ONNX Runtime reads at its import to leave its telemetry off.
TELEMETRY_VARIABLE = "ORT_DISABLE_TELEMETRY"

_log = logging.getLogger(__name__)
_checked = False


def import_onnxruntime() -> ModuleType:
    """The ``onnxruntime`` module, its telemetry off unless the user turned it on."""
    global _checked
    if _checked:
        import onnxruntime
        return onnxruntime
    too_late = "onnxruntime" in sys.modules and TELEMETRY_VARIABLE not in os.environ
    os.environ.setdefault(TELEMETRY_VARIABLE, "1")
    import onnxruntime

    if too_late:
        onnxruntime.disable_telemetry_events()
        _log.warning("onnxruntime was imported before switchpoint loaded its embedder, so its "
                     "telemetry had started (a device id under ~/.cache/Microsoft, uploads to "
                     "Microsoft); set %s=1 in the environment before importing onnxruntime to "
                     "keep it off", TELEMETRY_VARIABLE)
    _checked = True
    return onnxruntime
