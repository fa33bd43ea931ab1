"""Embedders: text to unit vectors. The default is all-MiniLM-L6-v2 on ONNX Runtime."""

from __future__ import annotations

from switchpoint._messages import json_quoted, one_of
from switchpoint.embedding.base import (
    Embedder,
    check_embedding,
    check_prompt,
    embed_in_steps,
    l2_normalise,
    warm_up,
)
from switchpoint.embedding.cache import CachedEmbedder
from switchpoint.embedding.minilm import MODEL_NAME, TRUNCATIONS, MiniLMEmbedder
from switchpoint.errors import InvalidInputError

__all__ = [
    "MODEL_NAME",
    "TRUNCATIONS",
    "CachedEmbedder",
    "Embedder",
    "MiniLMEmbedder",
    "check_embedding",
    "check_prompt",
    "embed_in_steps",
    "embedder_from_id",
    "l2_normalise",
    "warm_up",
]


def embedder_from_id(embedder_id: str) -> Embedder:
    """Build the embedder a weights manifest names, e.g. ``all-MiniLM-L6-v2/tail-256``.

    A bad id raises :class:`InvalidInputError` (a ``ValueError``) on the field ``embedder``.
    """
    if embedder_id.startswith("st:"):
        from switchpoint.embedding.sentence_transformers import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(embedder_id[3:])
    name, _, setting = embedder_id.partition("/")
    if name != MODEL_NAME:
        raise InvalidInputError(
            "embedder",
            f"unknown embedder {json_quoted(embedder_id)}; use "
            f'"{MODEL_NAME}/<truncation>-<tokens>" '
            'or "st:<sentence-transformers model path>"',
        )
    truncation, _, tokens = setting.rpartition("-") if setting else ("tail", "", "64")
    if truncation not in TRUNCATIONS or not tokens.isdigit():
        raise InvalidInputError(
            "embedder",
            f"bad embedder setting {json_quoted(setting)} in {json_quoted(embedder_id)}; "
            'expected e.g. "tail-256" '
            f"with truncation one of {one_of(TRUNCATIONS)}",
        )
    try:
        return MiniLMEmbedder(truncation=truncation, max_tokens=int(tokens))
    except ValueError as exc:
        raise InvalidInputError("embedder", f"{json_quoted(embedder_id)}: {exc}") from None
