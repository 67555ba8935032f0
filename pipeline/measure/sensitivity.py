"""Which layer, and which op type, costs accuracy when it is quantized, and what each recovery step wins: the
rankings `sensitivity` writes.

Layers: for each quantizable layer of a backend's `Conversion` of the static recipe, the accuracy drop (points, test
set) when only that layer is int8 and when every layer but that one is int8, and where the backend can tell (eager)
the SQNR of its weights and of its output activations in the full int8 model against FP32; most sensitive first.

Op types: a runtime's quantizer works on op types as well as layers. Each op type whose inputs the static variant
holds in int8 is kept in FP32 in turn (`Backend.with_float_op_type`: `onnxruntime.op_types`,
`openvino.ignored_types`), the variant's own recipe converted again and scored on its runtime; most won back first.

Steps: each recovery step the static variant took (equalization, SmoothQuant, learned rounding, bias correction) is
left out in turn, the rest of its recipe converted again and scored; what it wins is the difference, most first.
"""

from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from pipeline.backends.interface import Calibration, Conversion
from pipeline.backends.mixed_precision import points
from pipeline.backends.recipes import StaticRecipe
from pipeline.backends.registry import backend_of
from pipeline.data.prepared import DataInfo, first
from pipeline.formats.fp32 import Fp32Model
from pipeline.measure.variants import accuracy_of, static_accuracy
from pipeline.models.architectures import accuracy

ACTIVATION_IMAGES = 1000  # enough for a stable SQNR, few enough to stay fast


def layer_sensitivity(recipe: Conversion, images: torch.Tensor, labels: torch.Tensor) -> list[dict]:
    """One row per quantizable layer, most sensitive first (largest drop when only it is int8)."""
    baseline = accuracy(recipe.model, images, labels)
    names = recipe.layers()
    noise = recipe.noise(names, first(images, ACTIVATION_IMAGES))
    rows = [
        {
            "layer": name,
            "drop_only_this_int8": points(baseline, accuracy(recipe.only_int8(name), images, labels)),
            "drop_all_but_this_int8": points(baseline, accuracy(recipe.with_float([name]), images, labels)),
            **noise.get(name, {}),
        }
        for name in tqdm(names, desc="layers", leave=False, disable=None)
    ]
    return sorted(rows, key=lambda row: row["drop_only_this_int8"], reverse=True)


@dataclass(frozen=True)
class StaticVariant:
    """The static variant as `sensitivity` makes it again with one change: its folder and recipe, the FP32 model
    it was made of, the calibration images and prepared data it was made with, and the test images it is scored on."""

    folder: Path
    recipe: StaticRecipe
    fp32: Fp32Model
    calibration: Calibration
    data: DataInfo
    images: torch.Tensor
    labels: torch.Tensor

    def made_again(self, changed: dict[str, StaticRecipe]) -> tuple[float, dict[str, float]]:
        """The variant's accuracy drop from FP32 (points, test set), and that of each changed recipe, made again
        with the variant's backend and scored."""
        reference = accuracy(self.fp32.module, self.images, self.labels)
        int8_drop = points(reference, accuracy_of(self.folder, self.images, self.labels))
        drops = {}
        for name, recipe in tqdm(changed.items(), desc="recipes", leave=False, disable=None):
            made = static_accuracy(
                backend_of(recipe), self.fp32, recipe, self.calibration, self.data, self.images, self.labels
            )
            drops[name] = points(reference, made)
        return int8_drop, drops


def op_type_sensitivity(variant: StaticVariant) -> list[dict]:
    """One row per op type the static variant quantizes, most harmful first: the accuracy drop from FP32 with that
    type kept in FP32 by the quantizer's op-type option (`Backend.with_float_op_type`; all else as the variant),
    and the points that wins back."""
    backend = backend_of(variant.recipe)
    quantized = backend.quantized_op_types(variant.folder, variant.recipe)
    if len(quantized) < 2:  # with its only type kept in FP32, a model is its FP32 self: nothing to rank
        return []
    int8_drop, drops = variant.made_again(
        {kind: backend.with_float_op_type(variant.recipe, kind) for kind in quantized}
    )
    rows = [
        {"op_type": op_type, "drop_with_it_fp32": drop, "won_back": round(int8_drop - drop, 3)}
        for op_type, drop in drops.items()
    ]
    return sorted(rows, key=lambda row: row["won_back"], reverse=True)


def step_sensitivity(variant: StaticVariant) -> list[dict]:
    """One row per recovery step the static variant took, most winning first: the accuracy drop from FP32 with
    that step left out, all else as the variant, and the points the step wins."""
    removals = variant.recipe.step_removals()
    if not removals:
        return []
    int8_drop, drops = variant.made_again(
        {step: replace(variant.recipe, **fields) for step, fields in removals.items()}
    )
    rows = [{"step": step, "drop_without_it": drop, "wins": round(drop - int8_drop, 3)} for step, drop in drops.items()]
    return sorted(rows, key=lambda row: row["wins"], reverse=True)
