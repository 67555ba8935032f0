"""The eager backend (`quantize.backend: eager`): torch.ao's int8 modules, saved as `model.pt` and deployed as
TorchScript (`model.ts`); its ONNX file is the TorchScript exporter's QDQ graph, or for dynamic int8, which no
exporter writes, ONNX Runtime's dynamic int8 of the FP32 graph.

The runtimes' backends compose it for QAT and for the layer search (`pipeline.backends.runtime_quantizer`): both
fine-tune or convert PyTorch modules.
"""

from pathlib import Path

import torch
from torch import nn

from pipeline.affine import decibels, energies, sqnr_db
from pipeline.backends.eager.modules import (
    convert_qat,
    float_twin,
    float_weight,
    freeze_qat,
    prepare_qat,
    quantizable_layers,
    quantize_dynamic,
    quantize_only,
    quantize_static,
    recipe_qconfig,
    require_modules,
    use_engine,
)
from pipeline.backends.interface import Backend, Calibration, torch_weight_range
from pipeline.backends.onnxruntime_quantizer import OnnxRuntimeDynamic, dynamic_twin
from pipeline.backends.recipes import DynamicRecipe, QatRecipe, StaticRecipe
from pipeline.data.prepared import AnyImages, DataInfo, in_batches
from pipeline.formats.files import ONNX_FILE, TORCHSCRIPT_FILE
from pipeline.formats.fp32 import Fp32Model
from pipeline.formats.variants import eager_writers, int8_settings, onnx_writer, save_variant


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

    def noise(self, names: list[str], images: AnyImages) -> dict[str, dict]:
        """The SQNR of each layer's weights and output in the full int8 model against FP32, the outputs' over
        every image, a batch at a time."""
        full, reference = self.with_float([]), float_twin(self.model, self.fused)
        sums = {name: (0.0, 0.0) for name in names}  # signal and noise energies
        for batch in in_batches(images, description="layer outputs"):
            fp32_out, int8_out = (layer_outputs(model, names, batch) for model in (reference, full))
            for name in names:
                found = energies(fp32_out[name], int8_out[name])
                sums[name] = (sums[name][0] + found[0], sums[name][1] + found[1])
        modules, int8_modules = dict(reference.named_modules()), dict(full.named_modules())
        return {
            name: {
                "weight_sqnr_db": sqnr_db(float_weight(modules[name]), int8_modules[name].weight().dequantize()),
                "activation_sqnr_db": decibels(*sums[name]),
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
    options = {"dynamic": OnnxRuntimeDynamic}  # its dynamic variant's ONNX file is ONNX Runtime's dynamic int8

    def dynamic(self, fp32: Fp32Model, recipe: DynamicRecipe, folder: Path, data: DataInfo) -> None:
        require_modules(fp32.module)
        use_engine(recipe.engine)
        int8 = quantize_dynamic(fp32.module, recipe.per_channel)
        # no exporter writes PyTorch's dynamic int8: its ONNX file is ONNX Runtime's dynamic int8 of FP32's
        self.save(int8, fp32, recipe, folder, data, {ONNX_FILE: dynamic_twin(fp32.onnx_file, recipe)})

    def conversion(self, model: nn.Module, recipe: StaticRecipe, calibration: Calibration) -> EagerConversion:
        use_engine(recipe.engine)
        return EagerConversion(model, recipe, calibration)

    def weight_range(self, recipe: StaticRecipe) -> tuple[int, int]:
        return torch_weight_range(recipe.bits())

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
