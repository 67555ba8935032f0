"""Mixed precision: what each layer costs in int8, and which layers to keep in FP32 so that an int8 model stays
within an accuracy budget (`static.max_accuracy_drop`).

A backend answers the same two questions through its `Conversion` of a static recipe
(`pipeline.backends.interface`): the model in int8 with some layers kept in FP32 (`with_float`), and the model in
FP32 with one layer in int8 (`only_int8`). The sensitivity stage ranks layers with them; the static stage searches
with them.
"""

import torch

from pipeline.backends.interface import Conversion
from pipeline.models.architectures import accuracy


def points(reference: float, value: float) -> float:
    """Accuracy lost from `reference` to `value`, in percentage points."""
    return round((reference - value) * 100, 3)


def fewest_float_layers(recipe: Conversion, labels: torch.Tensor, start: list[str], budget: float) -> list[str]:
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
