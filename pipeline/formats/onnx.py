"""A PyTorch model as an ONNX file: the file ONNX Runtime and OpenVINO deploy.

Which exporter works depends on the model, as measured with torch 2.14:
- an eager module, FP32 or int8 (torch.ao's static and QAT modules): the TorchScript exporter
  (`dynamo=False`), which writes each quantized op as DequantizeLinear -> op -> QuantizeLinear (a QDQ graph)
  with PyTorch's own int8 weights, scales and zero points. The dynamo exporter fails on eager int8 modules.
- a graph (pt2e int8, or an FP32 model you exported): the dynamo exporter, which writes torchao's
  quantize/dequantize ops as the same QDQ pairs.
- dynamic int8, in either backend: no exporter writes `quantized::linear_dynamic` or torchao's dynamic ops, so
  its ONNX twin is ONNX Runtime's own dynamic quantization of the FP32 graph
  (`pipeline.backends.onnxruntime_quantizer`).
Every file carries the kind, arch and recipe of the model it holds (ONNX metadata, OpenVINO rt_info), as model.pt
does, so that a folder holding only a runtime's files still says what it is.
"""

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.formats.files import SETTINGS_KEY
from pipeline.optional import require
from pipeline.safe_io import atomic_path, first_line

INPUT, OUTPUT = "images", "logits"
STACK_TRACE = "pkg.torch.onnx.stack_trace"  # node metadata of the dynamo exporter
OPSET = 17  # the TorchScript exporter's newest; ONNX Runtime 1.32 and OpenVINO 2026.4 read it


def export_onnx(model: nn.Module, example: torch.Tensor, settings: dict, path: Path) -> None:
    """Write `model` as an ONNX graph with a free batch size, its weights inside, `settings` in its metadata."""
    with atomic_path(path) as temporary, warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")  # both exporters warn at length about what they do as intended
        try:
            if isinstance(model, torch.fx.GraphModule):
                program = torch.onnx.export(
                    model,
                    # torch.export specializes a dimension of size 1 to that constant: from a batch of one, some
                    # graphs (torchvision's VisionTransformer) came out with their batch fixed at 1.
                    (example[:1].expand(2, *example.shape[1:]),),
                    input_names=[INPUT],
                    output_names=[OUTPUT],
                    dynamo=True,
                    dynamic_shapes=({0: torch.export.Dim("batch")},),
                    verbose=False,
                )
                program.save(str(temporary), external_data=False)
            else:
                torch.onnx.export(
                    model.eval(),
                    (example,),
                    str(temporary),
                    input_names=[INPUT],
                    output_names=[OUTPUT],
                    dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                    opset_version=OPSET,
                    dynamo=False,
                )
        except Exception as error:  # the exporters raise many classes, each with a long report
            raise PipelineError(f"{path}: the model cannot be exported to ONNX ({first_line(error)})") from None
        require_free_batch(label_onnx(temporary, settings), path)


def require_free_batch(graph, named: Path) -> None:
    """Refuse an ONNX graph (a ModelProto) that the checker rejects or whose input has a fixed batch size: ONNX
    Runtime would refuse every other batch size only when evaluation runs it."""
    onnx = require("onnx")
    try:
        onnx.checker.check_model(graph, full_check=True)
    except Exception as error:  # onnx.checker.ValidationError, or an inference error from its shape check
        raise PipelineError(f"{named}: the ONNX exporter wrote an invalid graph ({first_line(error)})") from None
    batch = graph.graph.input[0].type.tensor_type.shape.dim[0]
    if not batch.dim_param:
        raise PipelineError(f"{named}: the ONNX exporter fixed the batch size at {batch.dim_value}; it must be free")


def label_onnx(path: Path, settings: dict):
    """Put `settings` into an ONNX file's metadata, in place, and drop the Python stack trace the dynamo exporter
    writes beside each node: it holds the checkout's path, so every clone wrote other bytes. Returns the graph
    as written."""
    onnx = require("onnx")
    graph = onnx.load(str(path))
    for node in graph.graph.node:
        kept = [entry for entry in node.metadata_props if entry.key != STACK_TRACE]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)
    onnx.helper.set_model_props(graph, {SETTINGS_KEY: json.dumps(settings)})
    onnx.save(graph, str(path))
    return graph


def onnx_floor_bytes(path: Path) -> int:
    """The least an ONNX file could hold, counted as for PyTorch files (`pipeline.measure.sizes.floor_bytes`): each
    stored tensor at its own width, leaving out 64-bit integers (shapes, axes, indices). int32 tensors count: they
    are the biases of quantized layers, which PyTorch keeps in float32."""
    onnx = require("onnx")
    graph = onnx.load(str(path)).graph
    tensors = [*graph.initializer, *(a.t for node in graph.node if node.op_type == "Constant" for a in node.attribute)]
    return sum(tensor_bytes(onnx.numpy_helper.to_array(tensor)) for tensor in tensors)


def tensor_bytes(array) -> int:
    if array.dtype.kind in "iu" and array.dtype.itemsize > 4:
        return 0
    return array.size * array.dtype.itemsize


def holds_qdq_only(path: Path) -> bool:
    """Whether the file's int8 is only QuantizeLinear/DequantizeLinear pairs around float ops (QDQ): no op of its
    own computes in integers (QLinearConv, MatMulInteger, ONNX Runtime's contrib ops), so the file's arithmetic
    can be run as written, in FP32, to check the int8 kernels a runtime fuses it into."""
    graph = require("onnx").load(str(path), load_external_data=False).graph
    ops = [(node.domain, node.op_type) for node in graph.node]
    own = [op for domain, op in ops if domain in ("", "ai.onnx")]
    integer = len(own) < len(ops) or any(op.startswith("QLinear") or op.endswith("Integer") for op in own)
    return not integer and "DequantizeLinear" in own


def onnx_settings(path: Path) -> str | None:
    """The settings an ONNX file carries in its metadata (None: not a file this pipeline wrote)."""
    onnx = require("onnx")
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # onnx raises DecodeError from protobuf for a damaged file
        raise PipelineError(f"{path}: not a readable ONNX file ({first_line(error)})") from None
    return {entry.key: entry.value for entry in graph.metadata_props}.get(SETTINGS_KEY)


def onnx_nodes(graph_file: Path, layers: list[str], source: Path) -> list[str]:
    """The ONNX nodes of `graph_file` (prepared from `source`) that make up the PyTorch layers named, e.g.
    `features.0` -> /features/features.0/Conv, which is how the exporter names them."""
    onnx = require("onnx")
    names = [node.name for node in onnx.load(str(graph_file)).graph.node]
    nodes = []
    for layer in layers:
        found = [name for name in names if layer in name.split("/")[:-1]]
        if not found:
            scopes = sorted({scope for name in names for scope in name.split("/")[1:-1]})
            raise PipelineError(f"static.skip_layers: no node of {source} belongs to '{layer}' (layers: {scopes})")
        nodes += found
    return nodes
