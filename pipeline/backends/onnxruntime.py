"""The onnxruntime backend (`quantize.backend: onnxruntime`): ONNX Runtime's own `quantize_dynamic` and
`quantize_static` on the FP32 model's ONNX file (`pipeline.backends.onnxruntime_quantizer`, which holds its
options). QAT is PyTorch's, exported, and layers are ranked through PyTorch's modules
(`pipeline.backends.runtime_quantizer`).
"""

from dataclasses import replace
from importlib.metadata import version
from pathlib import Path

from pipeline.backends.interface import Calibration
from pipeline.backends.onnxruntime_quantizer import (
    CALIBRATIONS,
    NO_CALIBRATION,
    OnnxRuntimeDynamic,
    OnnxRuntimeStatic,
    dynamic_twin,
    quantize_static,
)
from pipeline.backends.recipes import DynamicRecipe, StaticRecipe
from pipeline.backends.runtime_quantizer import RuntimeQuantizer
from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.files import ONNX_FILE
from pipeline.formats.fp32 import Fp32Model
from pipeline.formats.variants import int8_settings, save_variant
from pipeline.optional import require

QOPERATOR_NAMES = {"QGemm": "Gemm"}


class OnnxRuntime(RuntimeQuantizer):
    name = "onnxruntime"
    requires = ("onnxruntime", "onnx")
    options = {"dynamic": OnnxRuntimeDynamic, "static": OnnxRuntimeStatic}

    def label(self) -> str:
        return f"onnxruntime (ONNX Runtime {version('onnxruntime')}'s quantizer)"

    def static_recipe(self, recipe: StaticRecipe) -> StaticRecipe:
        if recipe.observer in NO_CALIBRATION:
            raise PipelineError(
                f"static.observer: {recipe.observer}: {NO_CALIBRATION[recipe.observer]}; use {', '.join(CALIBRATIONS)}"
            )
        quantizable = quantizable_op_types()
        unknown = sorted(set(recipe.options.op_types or ()) - set(quantizable))
        if unknown:
            raise PipelineError(
                f"onnxruntime.op_types: ONNX Runtime quantizes no op type {', '.join(unknown)}; it quantizes "
                f"{', '.join(quantizable)}"
            )
        options = recipe.options
        if recipe.weight_bits and (options.format, options.weight_type) != ("qdq", "int8"):
            raise PipelineError(
                "static.weight_bits: ONNX Runtime makes 4-bit weights signed (int4) and in QDQ format only; set "
                "onnxruntime.format: qdq and onnxruntime.weight_type: int8"
            )
        return super().static_recipe(recipe)

    def weight_range(self, recipe: StaticRecipe) -> tuple[int, int]:
        """ONNX Runtime's symmetric weights: int8 on [-127, 127] (its narrow range; [-64, 64] for
        reduce_range), int4 on the whole [-8, 7] ([-4, 3])."""
        if recipe.options.weight_type != "int8":
            raise PipelineError(
                "static.rounding: adaround rounds on a grid symmetric around zero, and onnxruntime.weight_type: "
                f"{recipe.options.weight_type} gives weights a zero point; set it to int8"
            )
        if recipe.bits() == 4:
            return (-4, 3) if recipe.options.reduce_range else (-8, 7)
        return (-64, 64) if recipe.options.reduce_range else (-127, 127)

    def quantized_op_types(self, static_folder: Path, recipe: StaticRecipe) -> list[str]:
        onnx = require("onnx")
        nodes = onnx.load(str(static_folder / ONNX_FILE), load_external_data=False).graph.node
        # a QOperator file names its int8 ops QLinear<op> (QGemm for Gemm); a QDQ file keeps each op's own name
        present = {QOPERATOR_NAMES.get(node.op_type, node.op_type.removeprefix("QLinear")) for node in nodes}
        return sorted(present & set(recipe.options.op_types or quantizable_op_types()) - moving_op_types())

    def with_float_op_type(self, recipe: StaticRecipe, op_type: str) -> StaticRecipe:
        # not quantized: its weights stay FP32 and it adds no QDQ, but another quantized op's output it takes
        # still passes through int8 (QDQ quantizes each quantized op's output)
        asked = recipe.options.op_types or quantizable_op_types()
        kept = tuple(name for name in asked if name != op_type)
        return replace(recipe, options=replace(recipe.options, op_types=kept))

    def dynamic(self, fp32: Fp32Model, recipe: DynamicRecipe, folder: Path, data: DataInfo) -> None:
        writers = {ONNX_FILE: dynamic_twin(fp32.onnx_file, recipe)}
        save_variant(folder, data, int8_settings(fp32.arch, recipe), writers, ONNX_FILE)

    def static(
        self, fp32: Fp32Model, recipe: StaticRecipe, calibration: Calibration, folder: Path, data: DataInfo
    ) -> None:
        require_op_types(fp32.onnx_file, recipe.options.op_types)
        writers = {
            ONNX_FILE: lambda settings, path: quantize_static(fp32.onnx_file, recipe, calibration, settings, path)
        }
        save_variant(folder, data, int8_settings(fp32.arch, recipe), writers, ONNX_FILE)


def require_op_types(onnx_file: Path, asked: tuple[str, ...] | None) -> None:
    """Refuse, in one line, op types to quantize that the model has none of: ONNX Runtime would write an "int8"
    file with no int8 op in it."""
    if asked is None:
        return
    onnx = require("onnx")
    present = sorted({node.op_type for node in onnx.load(str(onnx_file), load_external_data=False).graph.node})
    if not set(asked) & set(present):
        raise PipelineError(
            f"onnxruntime.op_types: the model has no op of type {', '.join(asked)}, so nothing would be quantized; "
            f"its op types are {', '.join(present)}"
        )


def quantizable_op_types() -> list[str]:
    """Every op type ONNX Runtime's quantize_static quantizes when asked for none in particular."""
    registry = require("onnxruntime.quantization.registry")
    return sorted({*registry.QDQRegistry, *registry.QLinearOpsRegistry})


def moving_op_types() -> set[str]:
    """The op types ONNX Runtime's quantizer counts as moving int8 values rather than computing with them (its
    Direct8Bit ops: reshapes, transposes, flattens): keeping their inputs in FP32 changes no range."""
    registry = require("onnxruntime.quantization.registry")
    tables = (registry.QDQRegistry, registry.QLinearOpsRegistry)
    return {name for table in tables for name, kind in table.items() if "Direct8Bit" in kind.__name__}
