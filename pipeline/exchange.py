"""A PyTorch model as an ONNX file, and an ONNX file as OpenVINO's own: the files the runtimes deploy.

Which exporter works depends on the model, as measured with torch 2.14:
- an eager module, FP32 or int8 (torch.ao's static and QAT modules): the TorchScript exporter
  (`dynamo=False`), which writes each quantized op as DequantizeLinear -> op -> QuantizeLinear (a QDQ graph)
  with PyTorch's own int8 weights, scales and zero points. The dynamo exporter fails on eager int8 modules.
- a graph (pt2e int8, or an FP32 model you exported): the dynamo exporter, which writes torchao's
  quantize/dequantize ops as the same QDQ pairs.
- dynamic int8, in either backend: no exporter writes `quantized::linear_dynamic` or torchao's dynamic ops, so
  its ONNX twin is ONNX Runtime's own dynamic quantization of the FP32 graph (`pipeline.runtime_quantize`).
Every file carries the kind, arch and recipe of the model it holds (ONNX metadata, OpenVINO rt_info), as model.pt
does, so that a folder holding only a runtime's files still says what it is.
"""

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.artifacts import atomic_path, first_line
from pipeline.errors import PipelineError
from pipeline.runtimes import SETTINGS_KEY, read_openvino, require

INPUT, OUTPUT = "images", "logits"
OPSET = 17  # the TorchScript exporter's newest; ONNX Runtime 1.32 and OpenVINO 2026.4 read it


def export_onnx(model: nn.Module, example: torch.Tensor, settings: dict, path: Path) -> None:
    """Write `model` as an ONNX graph with a free batch size, its weights inside, `settings` in its metadata."""
    with atomic_path(path) as temporary, warnings.catch_warnings(), torch.inference_mode(False):
        warnings.simplefilter("ignore")  # both exporters warn at length about what they do as intended
        try:
            if isinstance(model, torch.fx.GraphModule):
                program = torch.onnx.export(
                    model,
                    (example,),
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
        label_onnx(temporary, settings)


def label_onnx(path: Path, settings: dict) -> None:
    """Put `settings` into an ONNX file's metadata, in place."""
    onnx = require("onnx")
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {SETTINGS_KEY: json.dumps(settings)})
    onnx.save(graph, str(path))


def save_openvino(model, settings: dict, path: Path) -> None:
    """Write an OpenVINO model as `path` (.xml) and its weights beside it (.bin), `settings` in its rt_info, into
    a variant's temporary folder (`pipeline.artifacts.atomic_dir`): OpenVINO names the .bin after the .xml, so the
    pair is made whole by the folder. Weights are kept at their own widths: OpenVINO would otherwise store FP32
    weights as float16."""
    ov = require("openvino")
    model.set_rt_info(json.dumps(settings), [SETTINGS_KEY])
    ov.save_model(model, str(path), compress_to_fp16=False)


def onnx_to_openvino(onnx_file: Path, settings: dict, path: Path) -> None:
    """OpenVINO's own format of an ONNX file, e.g. a QDQ graph, whose pairs OpenVINO folds into int8 ops."""
    save_openvino(read_openvino(onnx_file), settings, path)


def onnx_floor_bytes(path: Path) -> int:
    """The least an ONNX file could hold, counted as for PyTorch files (`pipeline.checkpoints.floor_bytes`): each
    stored tensor at its own width, leaving out 64-bit integers (shapes, axes, indices). int32 tensors count: they
    are the biases of quantized layers, which PyTorch keeps in float32."""
    onnx = require("onnx")
    graph = onnx.load(str(path)).graph
    tensors = [*graph.initializer, *(a.t for node in graph.node if node.op_type == "Constant" for a in node.attribute)]
    return sum(tensor_bytes(onnx.numpy_helper.to_array(tensor)) for tensor in tensors)


def openvino_floor_bytes(path: Path) -> int:
    """As `onnx_floor_bytes`, for the constants of an OpenVINO model."""
    model = read_openvino(path)
    return sum(tensor_bytes(op.get_data()) for op in model.get_ops() if op.get_type_name() == "Constant")


def tensor_bytes(array) -> int:
    if array.dtype.kind in "iu" and array.dtype.itemsize > 4:
        return 0
    return array.size * array.dtype.itemsize
