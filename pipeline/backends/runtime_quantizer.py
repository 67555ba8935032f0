"""What the runtimes' backends (onnxruntime, openvino) share: a runtime's own quantizer on the FP32 model's ONNX
file for dynamic and static int8, and PyTorch's backend, composed, for what the runtimes' quantizers do not do.

Their dynamic and static variants run on the runtime's kernels, which fuse layers themselves, so no PyTorch
quantized engine is recorded for them. QAT and the ranking of layers fine-tune or convert PyTorch modules: those
are the eager backend's where the model has a quantizable twin, else pt2e's, and the QAT variant is saved as that
backend saves it, with the runtime's own file beside it where it has one (`qat_writers`).
"""

from dataclasses import replace
from pathlib import Path

from torch import nn

from pipeline.backends.eager.modules import has_eager_twin
from pipeline.backends.interface import Backend, Calibration
from pipeline.backends.recipes import DynamicRecipe, QatRecipe, StaticRecipe
from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.fp32 import Fp32Model


class RuntimeQuantizer(Backend):
    qat_writers: dict = {}  # files its QAT variant holds besides PyTorch's (OpenVINO's own format)

    def pytorch(self, model: nn.Module) -> Backend:
        """PyTorch's backend for `model` (an FP32 model, or one prepared for QAT): pt2e quantizes any graph."""
        if has_eager_twin(model):
            from pipeline.backends.eager.backend import Eager

            return Eager()
        from pipeline.backends.pt2e import Pt2e  # torchao takes seconds to import: only where it is used

        return Pt2e()

    def conversion(self, model: nn.Module, recipe: StaticRecipe, calibration: Calibration):
        return self.pytorch(model).conversion(model, recipe, calibration)

    def prepare_qat(self, fp32: Fp32Model, recipe: QatRecipe) -> nn.Module:
        return self.pytorch(fp32.module).prepare_qat(fp32, recipe)

    def freeze_qat(self, prepared: nn.Module) -> None:
        self.pytorch(prepared).freeze_qat(prepared)

    def save_qat(self, prepared: nn.Module, fp32: Fp32Model, recipe: QatRecipe, folder: Path, data: DataInfo) -> None:
        pytorch = self.pytorch(fp32.module)
        int8 = pytorch.converted_qat(prepared)
        pytorch.save(int8, fp32, pytorch.qat_recipe(recipe), folder, data, self.qat_writers)

    def static_module(self, fp32: Fp32Model, recipe: StaticRecipe, calibration: Calibration) -> None:
        return None  # its static int8 is the runtime's file

    def dynamic_recipe(self, recipe: DynamicRecipe) -> DynamicRecipe:
        return replace(recipe, engine=None)

    def static_recipe(self, recipe: StaticRecipe) -> StaticRecipe:
        """Converted once, by the runtime: no search for the layers to keep in FP32."""
        if recipe.max_accuracy_drop is not None:
            raise PipelineError(
                f"static.max_accuracy_drop: searched with the eager and pt2e backends only; with {self.name}, name "
                "the layers to keep in FP32 in static.skip_layers (reports/sensitivity.json ranks them)"
            )
        return replace(recipe, engine=None, fused=None)
