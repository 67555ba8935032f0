"""int8 by the runtimes' own quantizers, from the FP32 model's ONNX file (`quantize.backend: onnxruntime |
openvino`): ONNX Runtime's `quantize_dynamic` and `quantize_static`, and NNCF's `compress_weights` and `quantize`
for OpenVINO. Static quantization is calibrated on the same images as PyTorch's, and keeps the same layers in
FP32: a layer `features.0` of the PyTorch model is every ONNX node in its scope, `/features/features.0/Conv`,
which is how the exporter names them.
"""

import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

from pipeline.artifacts import atomic_path
from pipeline.errors import PipelineError
from pipeline.exchange import INPUT, label_onnx, save_openvino
from pipeline.params import OnnxRuntimeParams
from pipeline.runtimes import read_openvino, require

# ONNX Runtime's calibration for PyTorch's observers of the same name; it has none like HistogramObserver's
OBSERVERS = {"minmax": {}, "moving_average_minmax": {"CalibMovingAverage": True}}


def onnx_nodes(graph_file: Path, layers: list[str], source: Path) -> list[str]:
    """The ONNX nodes of `graph_file` (prepared from `source`) that make up the PyTorch layers named, e.g.
    `features.0` -> /features/features.0/Conv."""
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


def onnxruntime_dynamic(
    onnx_file: Path, per_channel: bool, settings: OnnxRuntimeParams, settings_out: dict, path: Path
) -> None:
    """int8 weights, activations quantized per call (DynamicQuantizeLinear, MatMulInteger), for the layers
    PyTorch's dynamic int8 quantizes: Linear (MatMul, Gemm). ONNX Runtime would also quantize convolutions, into
    ConvInteger, which ran the CNN [64, 128] 6.6x slower than its FP32 graph (221 ms against 33 ms at batch 256)."""
    quantization = require("onnxruntime.quantization")
    with atomic_path(path) as temporary, preprocessed(onnx_file) as prepared:
        quantization.quantize_dynamic(
            prepared,
            temporary,
            op_types_to_quantize=["MatMul", "Gemm"],
            per_channel=per_channel,
            reduce_range=settings.reduce_range,
            weight_type=quant_type(quantization, settings.weight_type),
        )
        label_onnx(temporary, settings_out)


@contextmanager
def preprocessed(onnx_file: Path):
    """ONNX Runtime's recommended preparation for its quantizer (shapes inferred, graph optimized, so that more
    nodes can be quantized), as a temporary file."""
    shape_inference = require("onnxruntime.quantization.shape_inference")
    with tempfile.TemporaryDirectory() as workdir:
        prepared = Path(workdir) / "prepared.onnx"
        shape_inference.quant_pre_process(str(onnx_file), str(prepared), skip_symbolic_shape=True)
        yield prepared


class Batches:
    """ONNX Runtime's calibration reader: the calibration images in `batches` batches, as PyTorch is fed."""

    def __init__(self, name: str, images: torch.Tensor, batches: int):
        self.name, self.chunks = name, iter(images.chunk(batches))

    def get_next(self) -> dict | None:
        chunk = next(self.chunks, None)
        return None if chunk is None else {self.name: chunk.numpy()}


def onnxruntime_static(
    onnx_file: Path,
    images: torch.Tensor,
    batches: int,
    per_channel: bool,
    observer: str,
    symmetric: bool,
    skip_layers: list[str],
    settings: OnnxRuntimeParams,
    settings_out: dict,
    path: Path,
) -> None:
    """int8 weights and activations, ranges calibrated on `images`, in QDQ or QOperator format."""
    if observer not in OBSERVERS:
        raise PipelineError(
            f"static.observer: {observer} has no ONNX Runtime counterpart; use {' or '.join(OBSERVERS)}"
        )
    quantization = require("onnxruntime.quantization")
    with atomic_path(path) as temporary, preprocessed(onnx_file) as prepared:
        quantization.quantize_static(
            prepared,
            temporary,
            Batches(INPUT, images, batches),
            quant_format={"qdq": quantization.QuantFormat.QDQ, "qoperator": quantization.QuantFormat.QOperator}[
                settings.format
            ],
            per_channel=per_channel,
            reduce_range=settings.reduce_range,
            activation_type=quant_type(quantization, settings.activation_type),
            weight_type=quant_type(quantization, settings.weight_type),
            nodes_to_exclude=onnx_nodes(prepared, skip_layers, onnx_file),
            extra_options={"ActivationSymmetric": symmetric, **OBSERVERS[observer]},
        )
        label_onnx(temporary, settings_out)


def quant_type(quantization, name: str):
    return {"int8": quantization.QuantType.QInt8, "uint8": quantization.QuantType.QUInt8}[name]


def openvino_dynamic(onnx_file: Path, preset: str, settings_out: dict, path: Path) -> None:
    """int8 weights (a scale per output channel), activations in FP32: NNCF's weight compression, its weights
    symmetric as the `performance` preset makes them, or asymmetric for `mixed`."""
    nncf = require("nncf")
    mode = nncf.CompressWeightsMode.INT8_SYM if preset == "performance" else nncf.CompressWeightsMode.INT8_ASYM
    save_openvino(nncf.compress_weights(read_openvino(onnx_file), mode=mode), settings_out, path)


def openvino_static(
    onnx_file: Path, images: torch.Tensor, preset: str, skip_layers: list[str], settings_out: dict, path: Path
) -> None:
    """int8 weights and activations by NNCF's post-training quantization, calibrated on every image given."""
    nncf = require("nncf")
    onnx_nodes(onnx_file, skip_layers, onnx_file)  # an unknown layer is named here, before NNCF's own report
    samples = [image[None].numpy() for image in images]  # one image per call: NNCF's statistics assume it
    ignored = nncf.IgnoredScope(patterns=[f".*/{re.escape(layer)}/.*" for layer in skip_layers])
    int8 = nncf.quantize(
        read_openvino(onnx_file),
        nncf.Dataset(samples),
        preset=nncf.QuantizationPreset(preset),
        subset_size=len(samples),
        ignored_scope=ignored,
    )
    save_openvino(int8, settings_out, path)
