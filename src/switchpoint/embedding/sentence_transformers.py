"""Any sentence-transformers model as the embedder (the ``[st]`` extra: ``scripts/setup st``).

This pulls in PyTorch, so it is never part of the default install. Weights are loaded from a
local path or the local cache only; switchpoint itself never downloads anything. Only a model
saved as safetensors is loaded (``model.save(path, safe_serialization=True)``, the default of
recent sentence-transformers), and none that needs code of its own: the path comes from a
weights manifest, which may have been handed over by someone else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from switchpoint.embedding.base import Matrix, l2_normalise


class SentenceTransformerEmbedder:
    def __init__(self, model_name_or_path: str, batch_size: int = 32) -> None:
        self.model_name_or_path = model_name_or_path
        self.batch_size = batch_size
        self._model: Any = None

    def _load(self) -> Any:
        if self._model is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:  # pragma: no cover - depends on the extra
                raise ImportError(
                    "the sentence-transformers embedder needs the [st] extra: pip install "
                    "sentence-transformers in switchpoint's environment (in a clone of "
                    "switchpoint: scripts/setup st)"
                ) from exc
            # A weights manifest names this path, so it is read as data, never run: its
            # network's weights from safetensors only (a pickled .bin can run code as it is
            # loaded), and no code of its own.
            self._model = SentenceTransformer(
                self.model_name_or_path, local_files_only=True, trust_remote_code=False,
                model_kwargs={"use_safetensors": True})
        return self._model

    @property
    def id(self) -> str:
        return f"st:{self.model_name_or_path}"

    @property
    def dimension(self) -> int:
        return int(self._load().get_sentence_embedding_dimension())

    def embed(self, texts: Sequence[str]) -> Matrix:
        vectors = self._load().encode(list(texts), batch_size=self.batch_size)
        return l2_normalise(np.asarray(vectors, dtype=np.float32))
