"""The eager backend (`quantize.backend: eager`): torch.ao's int8 modules, saved as `model.pt` and deployed as
TorchScript (`model.ts`); its ONNX file is the TorchScript exporter's QDQ graph, or for dynamic int8, which no
exporter writes, ONNX Runtime's dynamic int8 of the FP32 graph.

The runtimes' backends take its QAT and its layer search: both fine-tune or convert PyTorch modules.
"""

from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from pipeline.backends.eager.modules import (
    convert_qat,
    float_twin,
    float_weight,
    freeze_qat,
    has_eager_twin,
    prepare_qat,
    quantizable_layers,
    quantize_dynamic,
    quantize_only,
    quantize_static,
    recipe_qconfig,
    require_modules,
    use_engine,
)
from pipeline.backends.interface import Backend, Calibration
from pipeline.backends.onnxruntime_quantizer import dynamic_twin
from pipeline.backends.recipes import DynamicRecipe, QatRecipe, StaticRecipe
from pipeline.data.prepared import DataInfo
from pipeline.errors import PipelineError
from pipeline.formats.files import ONNX_FILE, TORCHSCRIPT_FILE
from pipeline.formats.fp32 import Fp32Model
from pipeline.formats.variants import eager_writers, int8_settings, onnx_writer, save_variant
from pipeline.measure.accuracy import sqnr_db


class EagerConversion:
    """A static recipe through torch.ao's eager modules, for one FP32 model and its calibration images."""

    def __init__(self, model: nn.Module, recipe: StaticRecipe, calibration: Calibration):
        self.model, self.images, self.batches = model, calibration.images, calibration.batches
        self.qconfig, self.fused = recipe_qconfig(recipe), recipe.fused

    def layers(self) -> list[str]:
        return quantizable_layers(float_twin(self.model, self.fused))

    def with_float(self, kept: list[str]) -> nn.Module:
        return quantize_static(self.model, self.qconfig, self.images, self.batches, self.fused, skip_layers=kept)

    def only_int8(self, name: str) -> nn.Module:
        return quantize_only(self.model, name, self.qconfig, self.images, self.batches, self.fused)

    def noise(self, names: list[str], images: torch.Tensor) -> dict[str, dict]:
        """The SQNR of each layer's weights and output in the full int8 model against FP32."""
        full, reference = self.with_float([]), float_twin(self.model, self.fused)
        fp32_out, int8_out = (layer_outputs(model, names, images) for model in (reference, full))
        modules, int8_modules = dict(reference.named_modules()), dict(full.named_modules())
        return {
            name: {
                "weight_sqnr_db": sqnr_db(float_weight(modules[name]), int8_modules[name].weight().dequantize()),
                "activation_sqnr_db": sqnr_db(fp32_out[name], int8_out[name]),
            }
            for name in names
        }


@torch.no_grad()
def layer_outputs(model: nn.Module, names: list[str], images: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each named module's output (dequantized if int8) for one batch of images."""
    outputs, modules = {}, dict(model.named_modules())
    hooks = [
        modules[name].register_forward_hook(
            lambda _m, _i, out, name=name: outputs.__setitem__(name, out.dequantize() if out.is_quantized else out)
        )
        for name in names
    ]
    model(images)
    for hook in hooks:
        hook.remove()
    return outputs


class Eager(Backend):
    name = "eager"
    uses_engine = True

    def dynamic(self, fp32: Fp32Model, recipe: DynamicRecipe, folder: Path, data: DataInfo) -> None:
        require_modules(fp32.module)
        use_engine(recipe.engine)
        int8 = quantize_dynamic(fp32.module, recipe.per_channel)
        # no exporter writes PyTorch's dynamic int8: its ONNX file is ONNX Runtime's dynamic int8 of FP32's
        self.save(int8, fp32, recipe, folder, data, {ONNX_FILE: dynamic_twin(fp32.onnx_file, recipe)})

    def conversion(self, model: nn.Module, recipe: StaticRecipe, calibration: Calibration) -> EagerConversion:
        use_engine(recipe.engine)
        return EagerConversion(model, recipe, calibration)

    def prepare_qat(self, fp32: Fp32Model, recipe: QatRecipe) -> nn.Module:
        use_engine(recipe.engine)
        return prepare_qat(fp32.module, recipe.engine, recipe.per_channel)

    def freeze_qat(self, prepared: nn.Module) -> None:
        freeze_qat(prepared)

    def converted_qat(self, prepared: nn.Module) -> nn.Module:
        return convert_qat(prepared)

    def fusion_counterpart(self, fp32: nn.Module, recipe: StaticRecipe, calibration: Calibration) -> nn.Module:
        use_engine(recipe.engine)
        qconfig = recipe_qconfig(recipe)
        images, batches = calibration.images, calibration.batches
        return quantize_static(fp32, qconfig, images, batches, not recipe.fused, list(recipe.skip_layers))

    def label(self) -> str:
        return "eager (torch.ao)"

    def kernels(self) -> str:
        return torch.backends.quantized.engine

    def save(self, int8: nn.Module, fp32: Fp32Model, recipe, folder: Path, data: DataInfo, extra=None) -> None:
        """The int8 module's folder: its files, its TorchScript twin, its ONNX export, and any `extra` writers (one
        of an existing file's name writes that file instead)."""
        writers = {**eager_writers(int8, fp32.arch), ONNX_FILE: onnx_writer(int8, fp32.arch), **(extra or {})}
        save_variant(folder, data, int8_settings(fp32.arch, recipe), writers, TORCHSCRIPT_FILE, recipe.engine)


class RuntimeQuantizer(Eager):
    """A runtime's own quantizer on the FP32 model's ONNX file, for dynamic and static int8. Its variants run on
    the runtime's kernels, which fuse layers themselves. QAT and the ranking of layers, which the runtimes'
    quantizers do not do, are PyTorch's: eager's where the model has a quantizable twin, else pt2e's."""

    uses_engine = False  # its QAT variant's TorchScript file still records PyTorch's engine, in its own recipe
    qat_writers: dict = {}  # files its QAT variant holds besides PyTorch's (OpenVINO's own format)

    def pytorch(self, model: nn.Module) -> Backend:
        """PyTorch's backend for `model` (an FP32 model, or one prepared for QAT): pt2e quantizes any graph."""
        if has_eager_twin(model):
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
        return None

    def fusion_counterpart(self, fp32: nn.Module, recipe: StaticRecipe, calibration: Calibration) -> None:
        return None

    def kernels(self) -> str:
        return "none (the runtime's own kernels)"

    def dynamic_recipe(self, recipe: DynamicRecipe) -> DynamicRecipe:
        return replace(recipe, engine=self.name)

    def static_recipe(self, recipe: StaticRecipe) -> StaticRecipe:
        """Converted once, by the runtime: no search for the layers to keep in FP32."""
        if recipe.max_accuracy_drop is not None:
            raise PipelineError(
                f"static.max_accuracy_drop: searched with the eager and pt2e backends only; with {self.name}, name "
                "the layers to keep in FP32 in static.skip_layers (reports/sensitivity.json ranks them)"
            )
        return replace(recipe, engine=self.name, fused=None)
