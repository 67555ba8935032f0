"""The openvino backend (`quantize.backend: openvino`): NNCF, OpenVINO's quantizer, on the FP32 model's ONNX
file: `compress_weights` for dynamic int8, `quantize` for static. QAT is PyTorch's, exported and then converted
to OpenVINO's format, and layers are ranked through PyTorch's modules (`pipeline.backends.runtime_quantizer`).
"""

import re
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path

from pipeline.backends.interface import Calibration, OneByOne
from pipeline.backends.recipes import DynamicRecipe, Options, StaticRecipe
from pipeline.backends.runtime_quantizer import RuntimeQuantizer
from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.files import ONNX_FILE, OPENVINO_FILE
from pipeline.formats.fp32 import Fp32Model
from pipeline.formats.onnx import onnx_nodes
from pipeline.formats.openvino import converted_onnx, read_openvino, save_openvino
from pipeline.formats.variants import int8_settings, openvino_writer, save_variant
from pipeline.optional import require

# NNCF's range estimators for the observers of the same name: the smallest and largest activation seen, and
# NNCF's port of PyTorch's HistogramObserver. Without one, NNCF takes the mean over calibration images of each
# image's smallest and largest activation (its MEAN_MINMAX), which clips more.
RANGE_ESTIMATORS = {"minmax": "MINMAX", "histogram": "HISTOGRAM"}


@dataclass(frozen=True)
class OpenVinoDynamic(Options):
    """NNCF's weight compression (the `openvino` section): symmetric weights for the performance preset."""

    section = "openvino"
    preset: str


@dataclass(frozen=True)
class OpenVinoStatic(Options):
    """NNCF's post-training quantization (the `openvino` section)."""

    section = "openvino"
    preset: str
    model_type: str  # default | transformer (NNCF's ModelType.TRANSFORMER)
    overflow_fix: str  # which weights take 7 bits (NNCF's OverflowFix)
    ignored_types: tuple[str, ...] | None = None  # op types whose inputs NNCF leaves in FP32


class OpenVino(RuntimeQuantizer):
    name = "openvino"
    requires = ("openvino", "nncf", "onnx")
    options = {"dynamic": OpenVinoDynamic, "static": OpenVinoStatic}
    bias_corrections = ("none", "fast", "full")  # NNCF's FastBiasCorrection (its default) and BiasCorrection
    overrules = "NNCF gives each output channel of a weight its own scale; its preset decides activations' symmetry"

    def label(self) -> str:
        return f"openvino (NNCF {version('nncf')})"

    def weight_range(self, recipe: StaticRecipe) -> tuple[int, int]:
        raise PipelineError(
            "static.weight_bits, static.rounding: NNCF makes 8-bit weights only for the CPU (4 bits are refused by "
            "its hardware config) and gives some layers 7 bits (openvino.overflow_fix), so neither can be asked of "
            "the openvino backend; use quantize.backend: onnxruntime, whose files OpenVINO runs"
        )

    def dynamic_recipe(self, recipe: DynamicRecipe) -> DynamicRecipe:
        # no ONNX file: OpenVINO's own format is the variant's only file
        return replace(super().dynamic_recipe(recipe), per_channel=True)

    def static_recipe(self, recipe: StaticRecipe) -> StaticRecipe:
        if recipe.observer not in RANGE_ESTIMATORS:
            raise PipelineError(
                f"static.observer: {recipe.observer}: NNCF has no range estimator of that definition for the "
                f"activations it sees one image at a time; use {' or '.join(RANGE_ESTIMATORS)}"
            )
        carried = super().static_recipe(recipe)
        return replace(carried, per_channel=True, symmetric_activations=None)

    def dynamic(self, fp32: Fp32Model, recipe: DynamicRecipe, folder: Path, data: DataInfo) -> None:
        """int8 weights (a scale per output channel), activations in FP32: NNCF's weight compression, its weights
        symmetric as the `performance` preset makes them, or asymmetric for `mixed`."""
        nncf = require("nncf")
        symmetric = recipe.options.preset == "performance"
        mode = nncf.CompressWeightsMode.INT8_SYM if symmetric else nncf.CompressWeightsMode.INT8_ASYM

        def write(settings: dict, path: Path) -> None:
            save_openvino(nncf.compress_weights(read_openvino(fp32.onnx_file), mode=mode), settings, path)

        save_variant(folder, data, int8_settings(fp32.arch, recipe), {OPENVINO_FILE: write}, OPENVINO_FILE)

    def static(
        self, fp32: Fp32Model, recipe: StaticRecipe, calibration: Calibration, folder: Path, data: DataInfo
    ) -> None:
        """int8 weights and activations by NNCF's post-training quantization, calibrated on every image given."""
        nncf = require("nncf")
        options = recipe.options
        layers, types = list(recipe.skip_layers), list(options.ignored_types or ())
        # unknown layers and op types are named here, before NNCF's report
        onnx_nodes(fp32.onnx_file, layers, fp32.onnx_file)
        model = converted_onnx(fp32.onnx_file)
        require_op_types(model, types)
        kept = nncf.IgnoredScope(patterns=[f".*/{re.escape(layer)}/.*" for layer in layers], types=types)
        correction = recipe.bias_correction or "fast"

        def write(settings: dict, path: Path) -> None:
            samples = OneByOne(calibration.images, lambda image: image.numpy())
            int8 = nncf.quantize(
                model,
                nncf.Dataset(samples),
                preset=nncf.QuantizationPreset(options.preset),
                model_type=nncf.ModelType.TRANSFORMER if options.model_type == "transformer" else None,
                advanced_parameters=nncf.AdvancedQuantizationParameters(
                    activations_range_estimator_params=getattr(
                        nncf.quantization.range_estimator.RangeEstimatorParametersSet, RANGE_ESTIMATORS[recipe.observer]
                    ),
                    overflow_fix=nncf.OverflowFix(options.overflow_fix),
                    disable_bias_correction=correction == "none",
                ),
                fast_bias_correction=correction == "fast",
                subset_size=len(samples),
                ignored_scope=kept,
            )
            save_openvino(int8, settings, path)

        save_variant(folder, data, int8_settings(fp32.arch, recipe), {OPENVINO_FILE: write}, OPENVINO_FILE)

    def quantized_op_types(self, static_folder: Path, recipe: StaticRecipe) -> list[str]:
        return fake_quantized_types(read_openvino(static_folder / OPENVINO_FILE))

    def with_float_op_type(self, recipe: StaticRecipe, op_type: str) -> StaticRecipe:
        ignored = (*(recipe.options.ignored_types or ()), op_type)
        return replace(recipe, options=replace(recipe.options, ignored_types=ignored))

    qat_writers = {OPENVINO_FILE: openvino_writer(ONNX_FILE)}


def require_op_types(model, types: list[str]) -> None:
    """Refuse, in one line, op types the model has none of (`openvino.ignored_types`)."""
    present = sorted({op.get_type_name() for op in model.get_ops()})
    unknown = [name for name in types if name not in present]
    if unknown:
        raise PipelineError(
            f"openvino.ignored_types: the model has no op of type {', '.join(unknown)}; its op types are "
            f"{', '.join(present)}"
        )


def fake_quantized_types(model) -> list[str]:
    """The op types NNCF quantized the inputs of: those fed by a FakeQuantize, directly or through ops NNCF
    counts as quantization-agnostic (reshapes, transposes, gathers), which only move int8 values along."""
    groups = require("nncf.openvino.graph.metatypes.groups")
    agnostic = {name for metatype in groups.QUANTIZE_AGNOSTIC_OPERATIONS for name in metatype.get_all_aliases()}
    quantizable = {name for metatype in groups.INPUTS_QUANTIZABLE_OPERATIONS for name in metatype.get_all_aliases()}
    found, pending = set(), [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]
    while pending:
        for port in (port for output in pending.pop().outputs() for port in output.get_target_inputs()):
            node = port.get_node()
            if node.get_type_name() in agnostic:
                pending.append(node)
            elif node.get_type_name() in quantizable:
                found.add(node.get_type_name())
    return sorted(found)
