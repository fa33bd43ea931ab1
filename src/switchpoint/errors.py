"""Every error switchpoint raises on purpose. Each message says what is wrong and how to fix it.

All of them derive from :class:`SwitchpointError`; the input errors also derive from
``ValueError`` so plain ``except ValueError`` code keeps working.
"""

from __future__ import annotations


class SwitchpointError(Exception):
    """Base class of every error switchpoint raises on purpose."""


class InvalidInputError(SwitchpointError, ValueError):
    """A caller passed something the router cannot use (a bad prompt, λ, embedding, ...).

    ``field`` names the offending argument or request field.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


class UnknownModelError(InvalidInputError):
    """A model name that the loaded weights (or catalog) do not know."""

    def __init__(self, field: str, names: list[str], known: list[str]) -> None:
        shown = ", ".join(sorted(known)[:20])
        more = "" if len(known) <= 20 else f" (and {len(known) - 20} more)"
        super().__init__(
            field,
            f"unknown model(s) {', '.join(repr(n) for n in names)}; "
            f"known models are: {shown}{more}",
        )
        self.names = names


class NoCandidatesError(InvalidInputError):
    """The filters left no model to choose from."""


class WeightsError(SwitchpointError):
    """A weights package is missing, incomplete, corrupt or does not fit the embedder."""

    def __init__(self, path: object, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class RecordsError(SwitchpointError, ValueError):
    """A routing-records file has a line that cannot be used."""

    def __init__(self, source: object, line: int | None, message: str) -> None:
        where = f"{source}" if line is None else f"{source}, line {line}"
        super().__init__(f"{where}: {message}")
        self.source = source
        self.line = line


class NotFittedError(SwitchpointError):
    """A policy was asked to estimate before ``fit`` was called."""


class DecisionNotFoundError(SwitchpointError, LookupError):
    """An outcome names a decision this router does not remember (never made here, made for
    another tenant, or too old: only the most recent decisions are kept)."""

    def __init__(self, decision_id: str, capacity: int) -> None:
        super().__init__(
            f"decision_id: no decision {decision_id!r} is remembered for this tenant; outcomes "
            f"can be reported for the last {capacity} decisions a router made, with the "
            "decision_id it returned (and the same tenant)")
        self.decision_id = decision_id
