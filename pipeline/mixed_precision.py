"""Mixed precision: what each layer costs in int8, and which layers to keep in FP32 so that an int8 model stays
within an accuracy budget (`static.max_accuracy_drop`).

Both backends answer the same two questions through a static recipe: the model in int8 with some layers kept in
FP32 (`with_float`), and the model in FP32 with one layer in int8 (`only_int8`). The sensitivity stage ranks
layers with them; the static stage searches with them.
"""

import torch
from torch import nn

from pipeline.models import accuracy
from pipeline.params import Params
from pipeline.quantize import float_twin, quantizable_layers, quantize_only, quantize_static, recipe_qconfig


class EagerRecipe:
    """params.yaml's static recipe through torch.ao's eager modules."""

    def __init__(self, model: nn.Module, params: Params, images: torch.Tensor):
        self.model, self.images, self.batches = model, images, params.calibration.batches
        self.qconfig, self.fused = recipe_qconfig(params), params.static.fuse

    def layers(self) -> list[str]:
        return quantizable_layers(float_twin(self.model, self.fused))

    def with_float(self, kept: list[str]) -> nn.Module:
        return quantize_static(self.model, self.qconfig, self.images, self.batches, self.fused, skip_layers=kept)

    def only_int8(self, name: str) -> nn.Module:
        return quantize_only(self.model, name, self.qconfig, self.images, self.batches, self.fused)


class Pt2eRecipe:
    """params.yaml's static recipe through torchao on the exported graph. Its int8 graphs are scored as they
    are, quantize/dequantize pairs computed in FP32: the int8 arithmetic of the compiled kernels, without the
    compile that each of dozens of variants would otherwise pay."""

    def __init__(self, model: nn.Module, params: Params, images: torch.Tensor):
        from pipeline import pt2e  # torchao takes seconds to import: only where the backend is used

        self.pt2e, self.model, self.images, self.batches = pt2e, model, images, params.calibration.batches
        self.config = pt2e.static_config(params.static.observer, params.static.symmetric_activations)

    def layers(self) -> list[str]:
        return self.pt2e.quantizable_layers(self.model)

    def with_float(self, kept: list[str]) -> nn.Module:
        return self.pt2e.quantize_static(self.model, self.config, self.images, self.batches, kept)

    def only_int8(self, name: str) -> nn.Module:
        return self.pt2e.quantize_only(self.model, name, self.config, self.images, self.batches)


def static_recipe(model: nn.Module, params: Params, calibration: torch.Tensor) -> EagerRecipe | Pt2eRecipe:
    """The static recipe of params.yaml for `model`, in quantize.backend's terms, calibrated on `calibration`."""
    backend = Pt2eRecipe if params.quantize.backend == "pt2e" else EagerRecipe
    return backend(model, params, calibration)


def points(reference: float, value: float) -> float:
    """Accuracy lost from `reference` to `value`, in percentage points."""
    return round((reference - value) * 100, 3)


def fewest_float_layers(recipe, labels: torch.Tensor, start: list[str], budget: float) -> list[str]:
    """Keep layers in FP32, most harmful in int8 first, until accuracy on the recipe's calibration images is
    within `budget` points of FP32.

    Scored on the calibration images, never the test set, so the choice is not tuned on what evaluates it.
    """
    images = recipe.images
    baseline = accuracy(recipe.model, images, labels)
    candidates = [name for name in recipe.layers() if name not in start]
    only = {name: accuracy(recipe.only_int8(name), images, labels) for name in candidates}
    kept = list(start)
    for name in [None, *sorted(candidates, key=only.get)]:
        if name is not None:
            kept.append(name)
        if points(baseline, accuracy(recipe.with_float(kept), images, labels)) <= budget:
            break
    return kept
