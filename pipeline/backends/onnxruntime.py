"""The onnxruntime backend (`quantize.backend: onnxruntime`): ONNX Runtime's own `quantize_dynamic` and
`quantize_static` on the FP32 model's ONNX file (`pipeline.backends.onnxruntime_quantizer`). QAT is PyTorch's,
exported, and layers are ranked through PyTorch's modules: both the eager backend's.
"""

from importlib.metadata import version
from pathlib import Path

from pipeline.backends.eager.backend import RuntimeQuantizer
from pipeline.backends.interface import Calibration
from pipeline.backends.onnxruntime_quantizer import CALIBRATIONS, NO_CALIBRATION, dynamic_twin, quantize_static
from pipeline.backends.recipes import DynamicRecipe, StaticRecipe
from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.files import ONNX_FILE
from pipeline.formats.fp32 import Fp32Model
from pipeline.formats.variants import int8_settings, save_variant
from pipeline.optional import require


class OnnxRuntime(RuntimeQuantizer):
    name = "onnxruntime"
    requires = ("onnxruntime", "onnx")
    section = "onnxruntime"

    def label(self) -> str:
        return f"onnxruntime (ONNX Runtime {version('onnxruntime')}'s quantizer)"

    def static_recipe(self, recipe: StaticRecipe) -> StaticRecipe:
        if recipe.observer in NO_CALIBRATION:
            raise PipelineError(
                f"static.observer: {recipe.observer}: {NO_CALIBRATION[recipe.observer]}; use {', '.join(CALIBRATIONS)}"
            )
        registry = require("onnxruntime.quantization.registry")
        quantizable = sorted({*registry.QDQRegistry, *registry.QLinearOpsRegistry})
        unknown = sorted(set(recipe.op_types or ()) - set(quantizable))
        if unknown:
            raise PipelineError(
                f"onnxruntime.op_types: ONNX Runtime quantizes no op type {', '.join(unknown)}; it quantizes "
                f"{', '.join(quantizable)}"
            )
        return super().static_recipe(recipe)

    def dynamic(self, fp32: Fp32Model, recipe: DynamicRecipe, folder: Path, data: DataInfo) -> None:
        writers = {ONNX_FILE: dynamic_twin(fp32.onnx_file, recipe)}
        save_variant(folder, data, int8_settings(fp32.arch, recipe), writers, ONNX_FILE)

    def static(
        self, fp32: Fp32Model, recipe: StaticRecipe, calibration: Calibration, folder: Path, data: DataInfo
    ) -> None:
        writers = {
            ONNX_FILE: lambda settings, path: quantize_static(fp32.onnx_file, recipe, calibration, settings, path)
        }
        save_variant(folder, data, int8_settings(fp32.arch, recipe), writers, ONNX_FILE)
