"""ONNX Runtime's quantizer, on the FP32 model's ONNX file: the onnxruntime backend's dynamic and static int8,
and the ONNX file of every dynamic variant, which no exporter writes from PyTorch's dynamic int8 modules.

Static quantization is calibrated on the same images as PyTorch's, and keeps the same layers in FP32: a layer
`features.0` of the PyTorch model is every ONNX node in its scope (`pipeline.formats.onnx.onnx_nodes`).
"""

import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from pipeline.backends.interface import Calibration
from pipeline.backends.recipes import DynamicRecipe, Options, StaticRecipe
from pipeline.data.prepared import AnyImages
from pipeline.formats.onnx import INPUT, label_onnx, onnx_nodes
from pipeline.formats.variants import Writer
from pipeline.optional import require
from pipeline.safe_io import atomic_path


@dataclass(frozen=True)
class OnnxRuntimeDynamic(Options):
    """ONNX Runtime's quantize_dynamic options (the `onnxruntime` section): the onnxruntime backend's dynamic int8,
    and the ONNX file of the PyTorch backends' dynamic variants, which it writes."""

    section = "onnxruntime"
    weight_type: str
    reduce_range: bool


@dataclass(frozen=True)
class OnnxRuntimeStatic(Options):
    """ONNX Runtime's quantize_static options (the `onnxruntime` section)."""

    section = "onnxruntime"
    format: str
    activation_type: str
    weight_type: str
    reduce_range: bool
    op_types: tuple[str, ...] | None = None  # the ONNX op types quantized; None: every one ONNX Runtime can


# ONNX Runtime's calibration for the observers of the same name (pipeline.backends.ranges defines percentile as
# ONNX Runtime's Percentile does), and why it has none for the others.
CALIBRATIONS = {"minmax": "MinMax", "moving_average_minmax": "MinMax", "percentile": "Percentile"}
NO_CALIBRATION = {
    "histogram": "ONNX Runtime has no counterpart of PyTorch's HistogramObserver",
    # quantize_static passes no bin counts to the calibrator, whose defaults (128 bins searched for 128 levels)
    # leave one candidate: the whole range
    "entropy": "ONNX Runtime's Entropy calibration, as quantize_static runs it, searches no range (128 bins for 128 "
    "levels)",
    "mse": "ONNX Runtime has no MSE calibration",
}


def calibration_options(recipe: StaticRecipe) -> dict:
    """quantize_static's extra options for the recipe's observer."""
    if recipe.observer == "moving_average_minmax":
        return {"CalibMovingAverage": True}
    if recipe.observer == "percentile":
        return {"CalibPercentile": recipe.percentile, "CalibTensorRangeSymmetric": recipe.symmetric_activations}
    return {}


def dynamic_twin(fp32_onnx: Path, recipe: DynamicRecipe) -> Writer:
    """Writes ONNX Runtime's dynamic int8 of the FP32 ONNX file: int8 weights, activations quantized per call
    (DynamicQuantizeLinear, MatMulInteger), for the layers PyTorch's dynamic int8 quantizes: Linear (MatMul,
    Gemm). ONNX Runtime would also quantize convolutions, into ConvInteger, which ran the CNN [64, 128] 6.6x
    slower than its FP32 graph (221 ms against 33 ms at batch 256)."""

    options = recipe.options

    def write(settings: dict, path: Path) -> None:
        quantization = require("onnxruntime.quantization")
        with atomic_path(path) as temporary, preprocessed(fp32_onnx) as prepared:
            quantization.quantize_dynamic(
                prepared,
                temporary,
                op_types_to_quantize=["MatMul", "Gemm"],
                per_channel=recipe.per_channel,
                reduce_range=options.reduce_range,
                weight_type=quant_type(quantization, options.weight_type),
            )
            label_onnx(temporary, settings)

    return write


def quantize_static(
    fp32_onnx: Path, recipe: StaticRecipe, calibration: Calibration, settings: dict, path: Path
) -> None:
    """int8 weights and activations, ranges calibrated on the calibration images, in QDQ or QOperator format."""
    quantization = require("onnxruntime.quantization")
    formats = {"qdq": quantization.QuantFormat.QDQ, "qoperator": quantization.QuantFormat.QOperator}
    options = recipe.options
    weights = quantization.QuantType.QInt4 if recipe.bits() == 4 else quant_type(quantization, options.weight_type)
    with atomic_path(path) as temporary, preprocessed(fp32_onnx) as prepared:
        quantization.quantize_static(
            prepared,
            temporary,
            Batches(INPUT, calibration.images, calibration.batches),
            quant_format=formats[options.format],
            per_channel=recipe.per_channel,
            reduce_range=options.reduce_range,
            activation_type=quant_type(quantization, options.activation_type),
            weight_type=weights,
            op_types_to_quantize=list(options.op_types) if options.op_types else None,
            nodes_to_exclude=onnx_nodes(prepared, list(recipe.skip_layers), fp32_onnx),
            calibrate_method=quantization.CalibrationMethod[CALIBRATIONS[recipe.observer]],
            extra_options={"ActivationSymmetric": recipe.symmetric_activations, **calibration_options(recipe)},
        )
        label_onnx(temporary, settings)


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

    def __init__(self, name: str, images: AnyImages, batches: int):
        self.name, self.chunks = name, (images[rows] for rows in torch.arange(len(images)).chunk(batches))

    def get_next(self) -> dict | None:
        chunk = next(self.chunks, None)
        return None if chunk is None else {self.name: chunk.numpy()}


def quant_type(quantization, name: str):
    return {"int8": quantization.QuantType.QInt8, "uint8": quantization.QuantType.QUInt8}[name]
